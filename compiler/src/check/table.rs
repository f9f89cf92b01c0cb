//! The `table`: E007 (none, or more than one), E010 (no `key`), E013 (a
//! key that is not a key field, a tuple of them, or `lpm(address)`); its
//! other settings through `settings`.

use super::*;

impl Checker {
    pub(super) fn table(&mut self, tables: &[&ast::Table]) -> Option<TableConfig> {
        let Some((table, extra)) = tables.split_first() else {
            self.error(
                Diagnostic::new(Code::TableCount, Span::new(0, 0), "the spec has no `table`")
                    .label("expected a table in this file")
                    .help("add one, e.g. `table { key = vlan.id }`"),
            );
            return None;
        };
        for other in extra {
            self.error(
                Diagnostic::new(
                    Code::TableCount,
                    Span::new(other.span.start, other.span.start + 5),
                    "a spec has exactly one `table`",
                )
                .label("second table")
                .also(Span::new(table.span.start, table.span.start + 5), "first table")
                .help("merge the two tables' settings into one"),
            );
        }
        let s = self.settings(
            &table.settings,
            &["key", "max_entries", "on_miss", "numa_node", "access", "counters"],
            "`table`",
        );
        let key = match s.get("key") {
            Some(setting) => {
                self.key_span = Some(setting.value.span);
                self.key_expr(&setting.value)
            }
            None => {
                self.error(
                    Diagnostic::new(
                        Code::MissingSetting,
                        Span::new(table.span.start, table.span.start + 5),
                        "the table has no `key`",
                    )
                    .label("needs `key = ...`")
                    .help(format!(
                        "say what each packet is looked up by, e.g. `key = vlan.id`; keys: {}",
                        Field::list(|f| f.key_bits().is_some())
                    )),
                );
                None
            }
        };
        let max_entries = match s.get("max_entries") {
            Some(setting) => self.int_setting(setting, 1, 1 << 31).map(|n| n as u32),
            None => Some(256),
        };
        let on_miss = match s.get("on_miss") {
            Some(setting) => self.word_setting(setting, &["pass", "drop", "abort"]).map(|w| match w {
                "pass" => MissAction::Pass,
                "drop" => MissAction::Drop,
                _ => MissAction::Abort,
            }),
            None => Some(MissAction::Pass),
        };
        let numa_node = match s.get("numa_node") {
            // MAX_NUMNODES is at most 1 << 10 on every kernel configuration.
            Some(setting) => self.int_setting(setting, 0, 1023).map(|n| Some(n as u32)),
            None => Some(None),
        };
        let access = match s.get("access") {
            Some(setting) => {
                self.word_setting(setting, &["read_write", "read_only", "write_only"]).map(|w| match w {
                    "read_only" => Access::ReadOnly,
                    "write_only" => Access::WriteOnly,
                    _ => Access::ReadWrite,
                })
            }
            None => Some(Access::ReadWrite),
        };
        let counters = match s.get("counters") {
            Some(setting) => self.word_setting(setting, &["on", "off"]).map(|w| w == "on"),
            None => Some(true),
        };
        Some(TableConfig {
            key: key?,
            max_entries: max_entries?,
            on_miss: on_miss?,
            numa_node: numa_node?,
            access: access?,
            counters: counters?,
        })
    }

    /// `key = ...`
    fn key_expr(&mut self, value: &Value) -> Option<Key> {
        match &value.kind {
            ValueKind::Path(_) => self.key_field(value).map(Key::Field),
            ValueKind::Tuple(parts) => {
                if parts.len() < 2 {
                    self.error(
                        Diagnostic::new(
                            Code::BadKey,
                            value.span,
                            "a composite key needs at least two fields",
                        )
                        .label("one field in parentheses")
                        .help("write the field without parentheses, e.g. `key = vlan.id`"),
                    );
                    return None;
                }
                let mut fields: Vec<Field> = Vec::new();
                let mut ok = true;
                for part in parts {
                    match self.key_field(part) {
                        Some(f) if fields.contains(&f) => {
                            self.error(
                                Diagnostic::new(
                                    Code::BadKey,
                                    part.span,
                                    format!("`{f}` appears twice in the key"),
                                )
                                .label("repeated")
                                .help("list each field once"),
                            );
                            ok = false;
                        }
                        Some(f) => fields.push(f),
                        None => ok = false,
                    }
                }
                ok.then_some(Key::Composite(fields))
            }
            ValueKind::Call(call) if call.callee.dotted() == "lpm" => {
                let [arg] = call.args.as_slice() else {
                    self.error(
                        Diagnostic::new(
                            Code::BadKey,
                            value.span,
                            format!("`lpm` takes one address field, not {}", call.args.len()),
                        )
                        .label("expected `lpm(field)`")
                        .help(format!(
                            "e.g. `key = lpm(ipv4.dst)`; address fields: {}",
                            Field::list(|f| f.is_address() && f.key_bits().is_some())
                        )),
                    );
                    return None;
                };
                let field = self.key_field(arg)?;
                if !field.is_address() {
                    self.error(
                        Diagnostic::new(
                            Code::BadKey,
                            arg.span,
                            format!("`lpm` needs an address field; `{field}` is not one"),
                        )
                        .label("not an address")
                        .help(format!(
                            "longest-prefix match works on {}; key on `{field}` directly",
                            Field::list(|f| f.is_address() && f.key_bits().is_some())
                        )),
                    );
                    return None;
                }
                Some(Key::Lpm(field))
            }
            _ => {
                self.error(
                    Diagnostic::new(
                        Code::BadKey,
                        value.span,
                        format!("{} cannot be a table key", value.kind.describe()),
                    )
                    .label("not a key expression")
                    .help(format!(
                        "a key is a field ({}), a tuple of fields, or `lpm(field)`",
                        Field::list(|f| f.key_bits().is_some())
                    )),
                );
                None
            }
        }
    }

    /// One field of a key.
    fn key_field(&mut self, value: &Value) -> Option<Field> {
        let keys = Field::list(|f| f.key_bits().is_some());
        let ValueKind::Path(path) = &value.kind else {
            self.error(
                Diagnostic::new(
                    Code::BadKey,
                    value.span,
                    format!("{} cannot be part of a key", value.kind.describe()),
                )
                .label("expected a field")
                .help(format!("key fields: {keys}")),
            );
            return None;
        };
        let dotted = path.dotted();
        match Field::from_path(&dotted) {
            Some(field) if field.key_bits().is_some() => Some(field),
            found => {
                let message = match found {
                    Some(_) => format!("`{dotted}` cannot be a key"),
                    None => format!("unknown field `{dotted}`"),
                };
                let mut d = Diagnostic::new(Code::BadKey, value.span, message).label("not a key field");
                d = match suggest(&dotted, keys.split(", ").map(|k| k.trim_matches('`'))) {
                    Some(near) if found.is_none() => {
                        d.help(format!("did you mean `{near}`? key fields: {keys}"))
                    }
                    _ => d.help(format!("key fields: {keys}")),
                };
                self.error(d);
                None
            }
        }
    }
}
