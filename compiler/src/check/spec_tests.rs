//! `test` blocks of a spec (not this crate's unit tests, which are in
//! `tests.rs`): E030 (unnamed, duplicate, no `send`, no `expect`, `expect
//! drop` with another `expect`), E031 (a packet's layers and fields), E027
//! (a field value of the wrong type), W006 (`send` on a device with no
//! ingress program).

use super::values::{describe_ty, ty_words};
use super::*;
use crate::ast::LayerArg;

impl Checker {
    pub(super) fn tests(&mut self, tests: &[&ast::Test], ingress: Option<&IngressDef>) -> Vec<TestDef> {
        let mut names: HashMap<&str, Span> = HashMap::new();
        let mut defs = Vec::new();
        for test in tests {
            if test.name.text.trim().is_empty() {
                self.error(
                    Diagnostic::new(Code::BadTest, test.name.span, "a test needs a name")
                        .label("empty name")
                        .help("say what the test proves: `test \"vlan 100 goes to red\" { ... }`"),
                );
            } else if let Some(&first) = names.get(test.name.text.as_str()) {
                self.error(
                    Diagnostic::new(
                        Code::BadTest,
                        test.name.span,
                        format!("two tests are named \"{}\"", test.name.text),
                    )
                    .label("second test with this name")
                    .also(first, "first one")
                    .help("test names pick tests with `--filter`; make them unique"),
                );
            } else {
                names.insert(&test.name.text, test.name.span);
            }
            let steps: Vec<TestStep> =
                test.body.members.iter().filter_map(|s| self.test_step(s, ingress)).collect();
            let sends =
                test.body.members.iter().filter(|s| matches!(s.kind, TestStmtKind::Send { .. })).count();
            let head = Span::new(test.span.start, test.name.span.end);
            if sends == 0 {
                self.error(
                    Diagnostic::new(
                        Code::BadTest,
                        head,
                        format!("test \"{}\" sends no packet", test.name.text),
                    )
                    .label("no `send`")
                    .help("add `send DEVICE eth() / ...`"),
                );
            }
            if sends == test.body.members.len() {
                self.error(
                    Diagnostic::new(
                        Code::BadTest,
                        head,
                        format!("test \"{}\" expects nothing", test.name.text),
                    )
                    .label("no `expect`")
                    .help("say what must happen: `expect DEVICE`, `expect drop` or `expect pass`"),
                );
            }
            self.drop_alone(test);
            defs.push(TestDef { name: test.name.text.clone(), steps, span: test.span });
        }
        defs
    }

    /// `expect drop` means that nothing of a round's packets is seen
    /// anywhere, so another `expect` of the same round (the `expect`s after
    /// one run of `send`s) contradicts it: the test could never pass.
    fn drop_alone(&mut self, test: &ast::Test) {
        let mut round: Vec<&ast::TestStmt> = Vec::new();
        let mut sending = false;
        let members: Vec<&ast::TestStmt> = test.body.members.iter().collect();
        for (i, stmt) in members.iter().enumerate() {
            let is_send = matches!(stmt.kind, TestStmtKind::Send { .. });
            // A `send` after the `expect`s of a round starts the next one
            // (`expect`s before the first `send` belong to the first round).
            let has_send = round.iter().any(|s| matches!(s.kind, TestStmtKind::Send { .. }));
            if is_send && !sending && has_send {
                self.check_round(&round);
                round.clear();
            }
            sending = is_send;
            round.push(stmt);
            if i + 1 == members.len() {
                self.check_round(&round);
            }
        }
    }

    fn check_round(&mut self, round: &[&ast::TestStmt]) {
        let expects: Vec<&&ast::TestStmt> =
            round.iter().filter(|s| !matches!(s.kind, TestStmtKind::Send { .. })).collect();
        let Some(drop) = expects.iter().find(|s| matches!(s.kind, TestStmtKind::ExpectDrop)) else {
            return;
        };
        let Some(other) = expects.iter().find(|s| !matches!(s.kind, TestStmtKind::ExpectDrop)) else {
            return;
        };
        self.error(
            Diagnostic::new(
                Code::BadTest,
                drop.span,
                "`expect drop` cannot stand with another `expect` of the same packets",
            )
            .label("nothing may be seen anywhere")
            .also(other.span, "but this expects a packet")
            .help(
                "remove one of them, or put a `send` between them: each run of `send`s is checked \
                 against the `expect`s that follow it",
            ),
        );
    }

    fn test_step(&mut self, stmt: &ast::TestStmt, ingress: Option<&IngressDef>) -> Option<TestStep> {
        let span = stmt.span;
        match &stmt.kind {
            TestStmtKind::Send { device, packet } => {
                let d = self.device_ref(device, "`send`", Code::BadTest);
                let p = self.packet(packet, true);
                let d = d?;
                if let Some(ingress) = ingress {
                    if !ingress.on.contains(&d) {
                        self.error(
                            Diagnostic::new(
                                Code::SendWithoutIngress,
                                device.span,
                                format!(
                                    "`{}` has no ingress program, so this packet meets no XDP program",
                                    device.name
                                ),
                            )
                            .label("not in `ingress.on`")
                            .help(
                                "send on a device listed in `ingress { on = [...] }`, or add this one there",
                            ),
                        );
                    }
                }
                Some(TestStep::Send { device: d, packet: p?, span })
            }
            TestStmtKind::ExpectDrop => Some(TestStep::ExpectDrop { span }),
            TestStmtKind::ExpectPass => Some(TestStep::ExpectPass { span }),
            TestStmtKind::ExpectOut { devices, pattern } => {
                let ds: Vec<Option<usize>> =
                    devices.iter().map(|d| self.device_ref(d, "`expect`", Code::BadTest)).collect();
                let pattern = match pattern {
                    Some(p) => self.packet(p, false),
                    None => Some(Vec::new()),
                };
                Some(TestStep::ExpectOut {
                    devices: ds.into_iter().collect::<Option<Vec<_>>>()?,
                    pattern: pattern?,
                    span,
                })
            }
        }
    }

    /// A packet to send (`strict`: its layers must make a frame) or a
    /// pattern to match (any layers, in order).
    fn packet(&mut self, packet: &ast::Packet, strict: bool) -> Option<PacketDef> {
        let mut layers = Vec::new();
        let mut previous: Option<LayerKind> = None;
        let mut vlans = 0;
        let mut ok = true;
        // After one layer out of place the order of the rest says little
        // (`udp() / ipv4()` is one mistake, not two): report the first.
        let mut order_reported = false;
        // Every tag past the second is the same mistake: one error, with
        // the count, however many layers the packet has.
        let tags = packet
            .layers
            .iter()
            .filter(|l| LayerKind::from_name(&l.name.name) == Some(LayerKind::Vlan))
            .count();
        for layer in &packet.layers {
            let Some(kind) = LayerKind::from_name(&layer.name.name) else {
                let names: Vec<&str> = LayerKind::ALL.iter().map(|l| l.name()).collect();
                let mut d = Diagnostic::new(
                    Code::BadPacket,
                    layer.name.span,
                    format!("unknown layer `{}`", layer.name.name),
                )
                .label("not a layer");
                d = match suggest(&layer.name.name, names.iter().copied()) {
                    Some(near) => d.help(format!("did you mean `{near}`? layers: {}", names.join(", "))),
                    None => d.help(format!("layers: {}", names.join(", "))),
                };
                self.error(d);
                ok = false;
                continue;
            };
            if kind == LayerKind::Vlan {
                vlans += 1;
            }
            // A pattern names some of the layers, in order (the others are
            // free): each must be able to come later in a frame than the one
            // before, or the pattern could never match.
            let misplaced = if strict {
                !kind.may_follow(previous) || (kind == LayerKind::Vlan && vlans > 2)
            } else {
                previous.is_some_and(|p| !kind.may_come_after(p)) || (kind == LayerKind::Vlan && vlans > 2)
            };
            if misplaced && !order_reported {
                order_reported = true;
                let too_many = kind == LayerKind::Vlan && vlans > 2;
                let why = match (previous, kind) {
                    (None, _) => "a packet starts with `eth(...)`".to_string(),
                    (_, LayerKind::Vlan) if too_many => "the third tag".to_string(),
                    (Some(LayerKind::Payload), _) => "`payload` is the last layer".to_string(),
                    (Some(p), k) => format!("`{}` cannot follow `{}`", k.name(), p.name()),
                };
                let message = if too_many {
                    format!("this packet has {tags} VLAN layers, at most two tags fit in a frame")
                } else {
                    format!("layer `{}` is out of place", kind.name())
                };
                self.error(Diagnostic::new(Code::BadPacket, layer.span, message).label(why).help(
                    "layers go outermost first: eth / vlan (up to two) / ipv4 or ipv6 / udp or tcp / payload",
                ));
                ok = false;
            }
            previous = Some(kind);
            match self.layer(layer, kind, strict) {
                Some(def) => layers.push(def),
                None => ok = false,
            }
        }
        if ok && strict {
            ok = self.consistent(packet, &layers);
        }
        ok.then_some(layers)
    }

    /// In a packet to send, a type or protocol the spec sets must name the
    /// layer that follows (`ipv4(proto = 6) / udp()` cannot be sent).
    fn consistent(&mut self, packet: &ast::Packet, layers: &[LayerDef]) -> bool {
        for (i, pair) in layers.windows(2).enumerate() {
            let (field, wanted): (&str, &[u64]) = match (pair[0].kind, pair[1].kind) {
                (LayerKind::Eth | LayerKind::Vlan, LayerKind::Vlan) => ("type", &[0x8100, 0x88a8]),
                (LayerKind::Eth | LayerKind::Vlan, LayerKind::Ipv4) => ("type", &[0x0800]),
                (LayerKind::Eth | LayerKind::Vlan, LayerKind::Ipv6) => ("type", &[0x86dd]),
                (LayerKind::Ipv4, LayerKind::Udp) => ("proto", &[17]),
                (LayerKind::Ipv4, LayerKind::Tcp) => ("proto", &[6]),
                _ => continue,
            };
            let Some(&(_, Const::Uint(set))) = pair[0].fields.iter().find(|(name, _)| *name == field) else {
                continue;
            };
            if wanted.contains(&set) {
                continue;
            }
            let arg =
                packet.layers[i].args.iter().find(|a| a.field.as_ref().is_some_and(|f| f.name == field));
            let span = arg.map_or(packet.layers[i].span, |a| a.span);
            let list: Vec<String> = wanted.iter().map(|w| format!("{w:#06x}")).collect();
            let want = if field == "proto" {
                wanted.iter().map(u64::to_string).collect::<Vec<_>>().join(" or ")
            } else {
                list.join(" or ")
            };
            self.error(
                Diagnostic::new(
                    Code::BadPacket,
                    span,
                    format!("`{field} = {set}` contradicts the `{}` layer that follows", pair[1].kind.name()),
                )
                .label(format!("`{}` needs {want}", pair[1].kind.name()))
                .help(format!("leave `{field}` out (it follows the next layer) or set it to {want}")),
            );
            return false;
        }
        true
    }

    /// A layer of a packet to send (`strict`) or of a pattern.
    fn layer(&mut self, layer: &ast::Layer, kind: LayerKind, strict: bool) -> Option<LayerDef> {
        let mut def = LayerDef { kind, fields: Vec::new(), egress_mac: Vec::new(), payload: None };
        let mut ok = true;
        if kind == LayerKind::Payload {
            match layer.args.as_slice() {
                [LayerArg { field: None, value: Value { kind: ValueKind::Str(text), .. }, .. }] => {
                    def.payload = Some(text.clone())
                }
                _ => {
                    self.error(
                        Diagnostic::new(Code::BadPacket, layer.span, "`payload` takes one string")
                            .label("expected `payload(\"text\")`")
                            .help("e.g. `payload(\"hello\")`"),
                    );
                    return None;
                }
            }
            return Some(def);
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for arg in &layer.args {
            let Some(field) = &arg.field else {
                self.error(
                    Diagnostic::new(
                        Code::BadPacket,
                        arg.span,
                        format!("a `{}` field needs a name", kind.name()),
                    )
                    .label("expected `field = value`")
                    .help(format!("`{}` has {}", kind.name(), field_names(kind))),
                );
                ok = false;
                continue;
            };
            let Some(&(name, ty)) = kind.fields().iter().find(|(n, _)| *n == field.name) else {
                let mut d = Diagnostic::new(
                    Code::BadPacket,
                    field.span,
                    format!("`{}` has no field `{}`", kind.name(), field.name),
                )
                .label("unknown field");
                d = match suggest(&field.name, kind.fields().iter().map(|(n, _)| *n)) {
                    Some(near) => {
                        d.help(format!("did you mean `{near}`? `{}` has {}", kind.name(), field_names(kind)))
                    }
                    None => d.help(format!("`{}` has {}", kind.name(), field_names(kind))),
                };
                self.error(d);
                ok = false;
                continue;
            };
            if let Some(&first) = seen.get(name) {
                self.error(
                    Diagnostic::new(Code::BadPacket, field.span, format!("`{}` is set twice", field.name))
                        .label("set again")
                        .also(first, "first set here")
                        .help("set each field once"),
                );
                ok = false;
                continue;
            }
            seen.insert(name, field.span);
            // `egress.mac` in a pattern: the address of the device the
            // packet leaves by (what `eth.src = egress.mac` writes).
            if matches!(&arg.value.kind, ValueKind::Path(p) if p.dotted() == "egress.mac") {
                let place = format!("`{}.{}`", kind.name(), name);
                if ty != Ty::Mac {
                    self.error(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            arg.value.span,
                            format!("{place} holds {}, not a MAC address", ty_words(ty)),
                        )
                        .label(format!("expected {}", ty_words(ty)))
                        .help(format!("give {place} {}", ty_words(ty))),
                    );
                    ok = false;
                } else if strict {
                    self.error(
                        Diagnostic::new(
                            Code::BadPacket,
                            arg.value.span,
                            "`egress.mac` names the address of the device a packet leaves by",
                        )
                        .label("no such device for a packet to send")
                        .help(format!(
                            "give {place} a MAC address; `egress.mac` fits in an `expect` pattern: \
                             `expect red eth(src = egress.mac)`"
                        )),
                    );
                    ok = false;
                } else {
                    def.egress_mac.push(name);
                }
                continue;
            }
            let Some(value) = self.constant(&arg.value) else {
                ok = false;
                continue;
            };
            let as_field =
                if kind == LayerKind::Vlan && name == "id" { Field::VlanId } else { Field::EgressMac };
            let place = || format!("`{}.{}`", kind.name(), name);
            match (value.ty(), ty) {
                (Ty::Uint { .. }, Ty::Uint { .. })
                | (Ty::Mac, Ty::Mac)
                | (Ty::Ipv4, Ty::Ipv4)
                | (Ty::Ipv6, Ty::Ipv6) => {
                    if self.fits(&arg.value, value.ty(), ty, as_field, place).is_none() {
                        ok = false;
                        continue;
                    }
                }
                _ => {
                    self.error(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            arg.value.span,
                            format!(
                                "{} holds {}, not {}",
                                place(),
                                ty_words(ty),
                                describe_ty(&arg.value, value.ty())
                            ),
                        )
                        .label(format!("expected {}", ty_words(ty)))
                        .help(format!("give {} {}", place(), ty_words(ty))),
                    );
                    ok = false;
                    continue;
                }
            }
            def.fields.push((name, value));
        }
        ok.then_some(def)
    }
}

fn field_names(kind: LayerKind) -> String {
    let names: Vec<String> = kind.fields().iter().map(|(n, _)| format!("`{n}`")).collect();
    names.join(", ")
}
