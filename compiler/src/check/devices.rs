//! Devices, groups and the `ingress` block. Devices: E020 (`ifname` and
//! `ifindex`, both or neither), E018 (an interface name Linux refuses),
//! E006 (unknown egress program), E021 and E022 (its arguments' count and
//! types), E019 (two devices on one interface), E034 (too many devices).
//! Groups: E023. Ingress: E024, E010 (no `on`), E011 (an `on` that is not
//! a list of devices).

use super::values::describe_ty;
use super::*;

impl Checker {
    pub(super) fn device(
        &mut self,
        device: &ast::Device,
        asts: &[&ast::Egress],
        programs: &[ProgramDef],
    ) -> Option<DeviceDef> {
        let s = self.settings(
            &device.settings,
            &["ifname", "ifindex", "egress"],
            &format!("device `{}`", device.name.name),
        );
        let binding = match (s.get("ifname"), s.get("ifindex")) {
            (Some(name), Some(index)) => {
                self.error(
                    Diagnostic::new(
                        Code::DeviceBinding,
                        index.span,
                        format!("device `{}` has both `ifname` and `ifindex`", device.name.name),
                    )
                    .label("second binding")
                    .also(name.span, "first binding")
                    .help("a device is found by exactly one of them; keep one"),
                );
                None
            }
            (None, None) => {
                self.error(
                    Diagnostic::new(
                        Code::DeviceBinding,
                        device.name.span,
                        format!("device `{}` has neither `ifname` nor `ifindex`", device.name.name),
                    )
                    .label("not bound to an interface")
                    .help("add `ifname = \"eth0\"` or `ifindex = 2`"),
                );
                None
            }
            (Some(name), None) => self.ifname(name).map(Binding::Ifname),
            (None, Some(index)) => {
                self.int_setting(index, 1, i32::MAX as u64).map(|n| Binding::Ifindex(n as u32))
            }
        };
        let egress = match s.get("egress") {
            Some(setting) => Some(self.egress_use(setting, asts, programs)?),
            None => None,
        };
        Some(DeviceDef { name: device.name.name.clone(), binding: binding?, egress, span: device.span })
    }

    /// An interface name Linux accepts (`dev_valid_name` in net/core/dev.c).
    fn ifname(&mut self, setting: &ast::Setting) -> Option<String> {
        let ValueKind::Str(name) = &setting.value.kind else {
            self.error(
                Diagnostic::new(
                    Code::BadSettingValue,
                    setting.value.span,
                    format!("`ifname` takes a string, not {}", setting.value.kind.describe()),
                )
                .label("expected a quoted name")
                .help("write the interface name in quotes: `ifname = \"eth0\"`"),
            );
            return None;
        };
        let problem = if name.is_empty() {
            Some("is empty".to_string())
        } else if name.len() > 15 {
            Some(format!("is {} bytes long; Linux allows at most 15", name.len()))
        } else if name == "." || name == ".." {
            Some("is `.` or `..`".to_string())
        } else {
            name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || *c == '\0').map(
                |c| match c {
                    ' ' => "contains a space".to_string(),
                    '\0' => "contains a NUL byte".to_string(),
                    c if c.is_whitespace() => format!("contains white space ({c:?})"),
                    c => format!("contains `{c}`"),
                },
            )
        };
        match problem {
            Some(problem) => {
                self.error(
                    Diagnostic::new(
                        Code::BadIfname,
                        setting.value.span,
                        format!("interface name \"{name}\" {problem}"),
                    )
                    .label("not a valid interface name")
                    .help("Linux interface names are 1 to 15 bytes, without `/`, `:` or white space"),
                );
                None
            }
            None => Some(name.clone()),
        }
    }

    /// `egress = program` or `egress = program(args)` on a device.
    fn egress_use(
        &mut self,
        setting: &ast::Setting,
        asts: &[&ast::Egress],
        programs: &[ProgramDef],
    ) -> Option<EgressUse> {
        let (name, args): (&Ident, &[Value]) = match &setting.value.kind {
            ValueKind::Path(p) if p.as_name().is_some() => (p.as_name().unwrap(), &[]),
            ValueKind::Call(c) if c.callee.as_name().is_some() => (c.callee.as_name().unwrap(), &c.args),
            other => {
                self.error(
                    Diagnostic::new(
                        Code::BadSettingValue,
                        setting.value.span,
                        format!("`egress` takes a program, not {}", other.describe()),
                    )
                    .label("expected a program name")
                    .help("write `egress = name` or `egress = name(args)`"),
                );
                return None;
            }
        };
        let Some(&index) = self.programs.get(&name.name) else {
            let mut d = Diagnostic::new(
                Code::UnknownProgram,
                name.span,
                format!("unknown egress program `{}`", name.name),
            )
            .label("not declared");
            d = match self.near(&name.name, self.programs.keys().map(String::as_str)) {
                Some(near) => d.help(format!("did you mean `{near}`?")),
                None => d.help(format!("declare it: `egress {} {{ ... }}`", name.name)),
            };
            self.error(d);
            return None;
        };
        let program = &programs[index];
        if args.len() != program.params.len() {
            let params: Vec<String> =
                program.params.iter().map(|p| format!("{}: {}", p.name, p.ty)).collect();
            self.error(
                Diagnostic::new(
                    Code::ArgCount,
                    setting.value.span,
                    format!(
                        "`{}` takes {} argument{}, but {} {} given",
                        program.name,
                        params.len(),
                        if params.len() == 1 { "" } else { "s" },
                        args.len(),
                        if args.len() == 1 { "is" } else { "are" }
                    ),
                )
                .label("wrong number of arguments")
                .also(Span::new(asts[index].name.span.start, asts[index].name.span.end), "declared here")
                .help(format!(
                    "`{}` is declared as `{}({})`",
                    program.name,
                    program.name,
                    params.join(", ")
                )),
            );
            return None;
        }
        let mut values = Vec::new();
        for (i, (arg, param)) in args.iter().zip(&program.params).enumerate() {
            let constant = self.constant(arg)?;
            if self.untyped_params[index].contains(&i) {
                values.push(constant);
                continue;
            }
            let into = if self.vlan_params[index].contains(&i) { Ty::VLAN_ID } else { param.ty };
            let field = if into == Ty::VLAN_ID { Field::VlanId } else { Field::EgressMac };
            match (constant.ty(), param.ty) {
                (Ty::Uint { .. }, Ty::Uint { .. })
                | (Ty::Mac, Ty::Mac)
                | (Ty::Ipv4, Ty::Ipv4)
                | (Ty::Ipv6, Ty::Ipv6) => {}
                _ => {
                    self.error(
                        Diagnostic::new(
                            Code::ArgType,
                            arg.span,
                            format!(
                                "parameter `{}` of `{}` has type `{}`, but this argument is {}",
                                param.name,
                                program.name,
                                param.ty,
                                describe_ty(arg, constant.ty())
                            ),
                        )
                        .label(format!("expected `{}`", param.ty))
                        .also(asts[index].params[i].span, "parameter declared here")
                        .help(format!("pass a value of type `{}` for `{}`", param.ty, param.name)),
                    );
                    return None;
                }
            }
            let place = || format!("parameter `{}` of `{}`", param.name, program.name);
            let ty = constant.ty();
            self.fits(arg, ty, into.min_uint(param.ty), field, place)?;
            values.push(constant);
        }
        Some(EgressUse { program: index, args: values })
    }

    /// Two devices on one interface would make one of them a lie.
    pub(super) fn distinct_interfaces(&mut self, devices: &[Option<DeviceDef>], asts: &[&ast::Device]) {
        let mut seen: HashMap<&Binding, Span> = HashMap::new();
        for (device, ast) in devices.iter().zip(asts).filter_map(|(d, a)| Some((d.as_ref()?, a))) {
            // Point at the `ifname = ...` or `ifindex = ...` that clashes.
            let span = ast
                .settings
                .members
                .iter()
                .find(|s| s.name.name == "ifname" || s.name.name == "ifindex")
                .map_or(device.span, |s| s.span);
            if let Some(&first) = seen.get(&device.binding) {
                let what = match &device.binding {
                    Binding::Ifname(n) => format!("interface \"{n}\""),
                    Binding::Ifindex(i) => format!("ifindex {i}"),
                };
                self.error(
                    Diagnostic::new(
                        Code::DuplicateInterface,
                        span,
                        format!("device `{}` is bound to {what}, like another device", device.name),
                    )
                    .label("second device on this interface")
                    .also(first, "first device on it")
                    .help("each interface is one device; give both names' routes to one of them"),
                );
            } else {
                seen.insert(&device.binding, span);
            }
        }
    }

    /// Device `i` is slot `1 + i` of the deployment, and the slot maps
    /// (and the per-slot counters, whose index 0 counts misses) hold
    /// `MAX_SLOTS` entries: one device more would fail at apply.
    pub(super) fn device_count(&mut self, devices: &[&ast::Device]) {
        let max = crate::render::MAX_SLOTS as usize - 1;
        if let Some(over) = devices.get(max) {
            self.error(
                Diagnostic::new(
                    Code::TooManyDevices,
                    over.name.span,
                    format!("{} devices: a deployment holds at most {max}", devices.len()),
                )
                .label(format!("device {} of {}", max + 1, devices.len()))
                .help(format!("a spec declares at most {max} devices; split the network over several specs")),
            );
        }
    }

    pub(super) fn group(&mut self, group: &ast::Group) -> GroupDef {
        let context = format!("group `{}`", group.name.name);
        let mut members: Vec<usize> = Vec::new();
        let mut spans: HashMap<usize, Span> = HashMap::new();
        for member in &group.members.members {
            let Some(i) = self.device_ref(member, &context, Code::BadGroup) else { continue };
            if let Some(&first) = spans.get(&i) {
                self.error(
                    Diagnostic::new(
                        Code::BadGroup,
                        member.span,
                        format!("`{}` is listed twice in {context}", member.name),
                    )
                    .label("listed again")
                    .also(first, "first listed here")
                    .help("a device gets one copy of each packet; list it once"),
                );
            } else {
                spans.insert(i, member.span);
                members.push(i);
            }
        }
        if group.members.members.is_empty() {
            self.error(
                Diagnostic::new(Code::BadGroup, group.members.span, format!("{context} has no members"))
                    .label("empty")
                    .help("list the devices that get a copy: `group flood { a, b }`"),
            );
        }
        GroupDef { name: group.name.name.clone(), span: group.span, members }
    }

    pub(super) fn ingress(&mut self, blocks: &[&ast::Ingress]) -> Option<IngressDef> {
        let Some((ingress, extra)) = blocks.split_first() else {
            self.error(
                Diagnostic::new(Code::BadIngress, Span::new(0, 0), "the spec has no `ingress` block")
                    .label("expected `ingress { on = [...] }` in this file")
                    .help("say where the ingress program is attached: `ingress { on = [uplink] }`"),
            );
            return None;
        };
        for other in extra {
            self.error(
                Diagnostic::new(
                    Code::BadIngress,
                    Span::new(other.span.start, other.span.start + 7),
                    "a spec has exactly one `ingress` block",
                )
                .label("second ingress block")
                .also(Span::new(ingress.span.start, ingress.span.start + 7), "first one")
                .help("list every device in the `on` of one block"),
            );
        }
        let s = self.settings(&ingress.settings, &["on", "mode"], "`ingress`");
        let mode = match s.get("mode") {
            Some(setting) => self.word_setting(setting, &["native", "generic", "auto"]).map(|w| match w {
                "native" => XdpMode::Native,
                "generic" => XdpMode::Generic,
                _ => XdpMode::Auto,
            }),
            None => Some(XdpMode::Auto),
        };
        let Some(on) = s.get("on") else {
            self.error(
                Diagnostic::new(
                    Code::MissingSetting,
                    Span::new(ingress.span.start, ingress.span.start + 7),
                    "`ingress` has no `on`",
                )
                .label("needs `on = [...]`")
                .help("list the devices the ingress program is attached to: `on = [uplink]`"),
            );
            return None;
        };
        let names: Vec<&Value> = match &on.value.kind {
            ValueKind::List(items) => items.iter().collect(),
            ValueKind::Path(p) if p.as_name().is_some() => vec![&on.value],
            other => {
                self.error(
                    Diagnostic::new(
                        Code::BadSettingValue,
                        on.value.span,
                        format!("`on` takes a list of devices, not {}", other.describe()),
                    )
                    .label("expected `[dev, ...]`")
                    .help("e.g. `on = [uplink, downlink]`"),
                );
                return None;
            }
        };
        if names.is_empty() {
            self.error(
                Diagnostic::new(Code::BadIngress, on.value.span, "`on` lists no device")
                    .label("empty")
                    .help("name at least one device: the ingress program has to run somewhere"),
            );
            return None;
        }
        let mut devices: Vec<usize> = Vec::new();
        let mut ok = true;
        for value in names {
            let ValueKind::Path(path) = &value.kind else {
                self.error(
                    Diagnostic::new(
                        Code::BadSettingValue,
                        value.span,
                        format!("expected a device name, found {}", value.kind.describe()),
                    )
                    .label("not a device")
                    .help("list device names: `on = [uplink]`"),
                );
                ok = false;
                continue;
            };
            let Some(name) = path.as_name() else {
                self.error(
                    Diagnostic::new(
                        Code::BadSettingValue,
                        value.span,
                        format!("expected a device name, found `{}`", path.dotted()),
                    )
                    .label("not a device")
                    .help("list device names: `on = [uplink]`"),
                );
                ok = false;
                continue;
            };
            match self.device_ref(name, "`ingress.on`", Code::BadIngress) {
                Some(i) if devices.contains(&i) => {
                    self.error(
                        Diagnostic::new(
                            Code::BadIngress,
                            name.span,
                            format!("`{}` is listed twice in `on`", name.name),
                        )
                        .label("listed again")
                        .help("list each device once"),
                    );
                }
                Some(i) => devices.push(i),
                None => ok = false,
            }
        }
        Some(IngressDef { on: devices, mode: mode? }).filter(|_| ok)
    }
}

impl Ty {
    /// For an argument that flows into a VLAN id: the narrower of the two.
    fn min_uint(self, param: Ty) -> Ty {
        match (self, param) {
            (Ty::Uint { max: a }, Ty::Uint { max: b }) => Ty::Uint { max: a.min(b) },
            _ => param,
        }
    }
}
