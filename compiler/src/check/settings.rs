//! Settings blocks (`name = value` inside `table`, `device`, `ingress`):
//! E008 (unknown setting), E009 (setting given twice), E011 (a value of
//! the wrong kind or not one of the allowed words), E012 (a number out of
//! range).

use super::*;

impl Checker {
    /// Splits a block of settings by name, reporting unknown and repeated
    /// ones.
    pub(super) fn settings<'a>(
        &mut self,
        block: &'a Block<ast::Setting>,
        allowed: &[&str],
        what: &str,
    ) -> HashMap<&'a str, &'a ast::Setting> {
        let mut found: HashMap<&str, &ast::Setting> = HashMap::new();
        for setting in &block.members {
            let name = setting.name.name.as_str();
            if !allowed.contains(&name) {
                let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
                let mut d = Diagnostic::new(
                    Code::UnknownSetting,
                    setting.name.span,
                    format!("{what} has no setting `{name}`"),
                )
                .label("unknown setting");
                d = match suggest(name, allowed.iter().copied()) {
                    Some(near) => d.help(format!("did you mean `{near}`? {what} takes {}", list.join(", "))),
                    None => d.help(format!("{what} takes {}", list.join(", "))),
                };
                self.error(d);
            } else if let Some(previous) = found.get(name) {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateSetting,
                        setting.name.span,
                        format!("`{name}` is set twice"),
                    )
                    .label("set again here")
                    .also(previous.name.span, "first set here")
                    .help("keep one of the two"),
                );
            } else {
                found.insert(name, setting);
            }
        }
        found
    }

    /// An integer setting in `min..=max`.
    pub(super) fn int_setting(&mut self, setting: &ast::Setting, min: u64, max: u64) -> Option<u64> {
        let ValueKind::Int(int) = &setting.value.kind else {
            self.error(
                Diagnostic::new(
                    Code::BadSettingValue,
                    setting.value.span,
                    format!("`{}` takes a number, not {}", setting.name.name, setting.value.kind.describe()),
                )
                .label("expected a number")
                .help(format!("write a number from {min} to {max}")),
            );
            return None;
        };
        if int.value < min || int.value > max {
            self.error(
                Diagnostic::new(
                    Code::OutOfRange,
                    setting.value.span,
                    format!("`{}` is {}, outside {min}..={max}", setting.name.name, int.value),
                )
                .label("out of range")
                .help(format!("`{}` is a number from {min} to {max}", setting.name.name)),
            );
            return None;
        }
        Some(int.value)
    }

    /// A setting that takes one of a few words.
    pub(super) fn word_setting<'a>(&mut self, setting: &ast::Setting, words: &[&'a str]) -> Option<&'a str> {
        let written = match &setting.value.kind {
            ValueKind::Path(p) => p.as_name().map(|n| n.name.as_str()),
            _ => None,
        };
        if let Some(word) = words.iter().find(|w| Some(**w) == written) {
            return Some(word);
        }
        let list: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
        self.error(
            Diagnostic::new(
                Code::BadSettingValue,
                setting.value.span,
                format!("`{}` cannot be `{}`", setting.name.name, value_text(&setting.value)),
            )
            .label("not one of the choices")
            .help(format!("`{}` is one of {}", setting.name.name, list.join(", "))),
        );
        None
    }
}
