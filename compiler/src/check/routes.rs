//! Routes: keys typed against the table's key and targets resolved. E014
//! (a key that does not match the table's), E029 (prefix bits set after
//! the length), E016 (a key or `route default` given twice), E017 (more
//! routes than the table holds), W007 (a route that can never match).

use super::*;

impl Checker {
    pub(super) fn routes(
        &mut self,
        routes: &[&ast::Route],
        table: Option<&TableConfig>,
    ) -> (Vec<RouteDef>, Option<Target>) {
        let mut defs = Vec::with_capacity(routes.len());
        let mut default: Option<(Target, Span)> = None;
        let mut default_span: Option<Span> = None;
        let mut seen: HashMap<KeyValue, Span> = HashMap::with_capacity(routes.len());
        for route in routes {
            let target = self.target(&route.target, "this route");
            match &route.key {
                ast::RouteKey::Default(span) => {
                    if let Some(first) = default_span {
                        self.error(
                            Diagnostic::new(
                                Code::DuplicateRoute,
                                route.span,
                                "`route default` is given twice",
                            )
                            .label("second default route")
                            .also(first, "first default route")
                            .help("misses go to one target; keep one of the two"),
                        );
                        continue;
                    }
                    default_span = Some(route.span);
                    let _ = span;
                    if let Some(t) = target {
                        default = Some((t, route.span));
                    }
                }
                ast::RouteKey::Value(value) => {
                    let Some(table) = table else { continue };
                    let Some(key) = self.key_value(value, &table.key) else { continue };
                    // One probe of the map, not two (a lookup, then an
                    // insert): with a million routes each probe is a cache
                    // miss.
                    let first = match seen.entry(key.clone()) {
                        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(route.span);
                            None
                        }
                    };
                    if let Some(first) = first {
                        self.error(
                            Diagnostic::new(
                                Code::DuplicateRoute,
                                route.span,
                                format!("the key `{}` is routed twice", value_text(value)),
                            )
                            .label("second route for this key")
                            .also(first, "first route for it")
                            .help("each key goes to one target (use a `group` to send copies to several)"),
                        );
                        continue;
                    }
                    if let Some(target) = target {
                        defs.push(RouteDef { key, target, span: route.span });
                    }
                }
            }
        }
        if let Some(table) = table {
            if seen.len() > table.max_entries as usize {
                // Point at the first route that does not fit.
                let mut spans: Vec<Span> = seen.values().copied().collect();
                spans.sort_by_key(|s| s.start);
                let over = spans[table.max_entries as usize];
                let d = Diagnostic::new(
                    Code::TooManyRoutes,
                    over,
                    format!(
                        "{} routes do not fit in a table of {} {}",
                        seen.len(),
                        table.max_entries,
                        if table.max_entries == 1 { "entry" } else { "entries" }
                    ),
                )
                .label(format!("route {} of {}", table.max_entries as usize + 1, seen.len()))
                .help(format!("raise `max_entries` to at least {} in the table", seen.len()));
                self.error(d);
            }
        }
        (defs, default.map(|(t, _)| t))
    }

    /// Routes keyed on a port that has no ingress program never match.
    pub(super) fn dead_routes(&mut self, routes: &[RouteDef], ingress: Option<&IngressDef>) {
        let Some(ingress) = ingress else { return };
        for route in routes {
            let parts: Vec<&KeyValue> = match &route.key {
                KeyValue::Composite(parts) => parts.iter().collect(),
                single => vec![single],
            };
            for part in parts {
                let KeyValue::Device(d) = part else { continue };
                if ingress.on.contains(d) {
                    continue;
                }
                let name = self
                    .targets
                    .iter()
                    .find(|(_, (t, _))| *t == Target::Device(*d))
                    .map_or(String::new(), |(n, _)| n.clone());
                self.error(
                    Diagnostic::new(
                        Code::DeadRoute,
                        route.span,
                        format!("this route never matches: `{name}` has no ingress program"),
                    )
                    .label(format!("packets arriving on `{name}` are never looked up"))
                    .help(format!("add `{name}` to `ingress {{ on = [...] }}`, or remove the route")),
                );
            }
        }
    }

    /// A route key, typed against the table's key.
    fn key_value(&mut self, value: &Value, key: &Key) -> Option<KeyValue> {
        match key {
            Key::Field(field) => self.key_part(value, *field, key),
            Key::Lpm(field) => self.prefix(value, *field, key),
            Key::Composite(fields) => {
                let ValueKind::Tuple(parts) = &value.kind else {
                    return self.key_mismatch(value, key, format!("a tuple of {} values", fields.len()));
                };
                if parts.len() != fields.len() {
                    return self.key_mismatch(value, key, format!("a tuple of {} values", fields.len()));
                }
                let parts: Vec<Option<KeyValue>> =
                    parts.iter().zip(fields).map(|(p, f)| self.key_part(p, *f, key)).collect();
                Some(KeyValue::Composite(parts.into_iter().collect::<Option<Vec<_>>>()?))
            }
        }
    }

    fn key_part(&mut self, value: &Value, field: Field, key: &Key) -> Option<KeyValue> {
        match (field.ty(), &value.kind) {
            (Ty::Device, ValueKind::Path(p)) if p.as_name().is_some() => {
                let name = p.as_name().unwrap();
                self.device_ref(name, "a route key", Code::RouteKeyType).map(KeyValue::Device)
            }
            (Ty::Mac, ValueKind::Mac(m)) => Some(KeyValue::Const(Const::Mac(*m))),
            (Ty::Ipv4, ValueKind::Ipv4(a)) => Some(KeyValue::Const(Const::Ipv4(*a))),
            (Ty::Ipv6, ValueKind::Ipv6(a)) => Some(KeyValue::Const(Const::Ipv6(*a))),
            (Ty::Uint { .. }, ValueKind::Int(int)) => {
                self.fits(value, Ty::Uint { max: int.value }, field.ty(), field, || format!("`{field}`"))?;
                Some(KeyValue::Const(Const::Uint(int.value)))
            }
            _ => {
                let expected = match field.ty() {
                    Ty::Device => "a device name".to_string(),
                    Ty::Mac => "a MAC address".to_string(),
                    Ty::Ipv4 => "an IPv4 address".to_string(),
                    Ty::Ipv6 => "an IPv6 address".to_string(),
                    Ty::Uint { max } => format!("a number 0..={max}"),
                };
                self.key_mismatch(value, key, expected)
            }
        }
    }

    fn prefix(&mut self, value: &Value, field: Field, key: &Key) -> Option<KeyValue> {
        let v4 = field.ty() == Ty::Ipv4;
        let (addr, len, bits): (u128, u8, u8) = match (&value.kind, v4) {
            (ValueKind::Ipv4(a), true) => (u32::from(*a) as u128, 32, 32),
            (ValueKind::Ipv4Prefix(a, l), true) => (u32::from(*a) as u128, *l, 32),
            (ValueKind::Ipv6(a), false) => (u128::from(*a), 128, 128),
            (ValueKind::Ipv6Prefix(a, l), false) => (u128::from(*a), *l, 128),
            _ => {
                return self.key_mismatch(
                    value,
                    key,
                    format!("an {} prefix", if v4 { "IPv4" } else { "IPv6" }),
                )
            }
        };
        // `u128::MAX >> (128 - host bits)`, not `(1 << host bits) - 1`, which
        // overflows for `::/0` (128 host bits).
        let host_mask: u128 = if len >= bits { 0 } else { u128::MAX >> (128 - u32::from(bits - len)) };
        if addr & host_mask != 0 {
            let network = addr & !host_mask;
            let fixed = if v4 {
                format!("{}/{len}", std::net::Ipv4Addr::from(network as u32))
            } else {
                format!("{}/{len}", std::net::Ipv6Addr::from(network))
            };
            self.error(
                Diagnostic::new(
                    Code::BadPrefix,
                    value.span,
                    format!("`{}` has bits set after its prefix length", value_text(value)),
                )
                .label("host bits set")
                .help(format!("did you mean `{fixed}`?")),
            );
            return None;
        }
        Some(KeyValue::Prefix(if v4 {
            PrefixValue::V4((addr as u32).into(), len)
        } else {
            PrefixValue::V6(addr.into(), len)
        }))
    }

    fn key_mismatch(&mut self, value: &Value, key: &Key, expected: String) -> Option<KeyValue> {
        let mut d = Diagnostic::new(
            Code::RouteKeyType,
            value.span,
            format!(
                "route key `{}` is {}, but the table is keyed by `{}`",
                value_text(value),
                value.kind.describe(),
                key_text(key)
            ),
        )
        .label(format!("expected {expected}"))
        .help(match (key, &value.kind) {
            (Key::Field(field), ValueKind::Ipv4Prefix(..) | ValueKind::Ipv6Prefix(..))
                if field.is_address() =>
            {
                format!("to route prefixes, key the table by longest-prefix match: `key = lpm({field})`")
            }
            _ => format!("with `key = {}`, each route key is {expected}", key_text(key)),
        });
        if let Some(span) = self.key_span {
            d = d.also(span, "the table's key");
        }
        self.error(d);
        None
    }
}

fn key_text(key: &Key) -> String {
    match key {
        Key::Field(f) => f.path().to_string(),
        Key::Lpm(f) => format!("lpm({f})"),
        Key::Composite(fs) => format!("({})", fs.iter().map(|f| f.path()).collect::<Vec<_>>().join(", ")),
    }
}
