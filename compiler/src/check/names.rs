//! Names: declaring devices, groups and egress programs, and resolving a
//! use of one. E003 (a name that may not reach generated C), E004 (a name
//! declared twice), E005 (an unknown device or group, with a "did you
//! mean"); a device wanted where a group is named gets the caller's code.

use super::*;

/// Longest name a spec may use (docs/language.md, 2.5 Names).
pub const MAX_NAME_LEN: usize = 64;

/// Keywords of C (C89 to C23): names reach the generated C.
const C_KEYWORDS: &[&str] = &[
    "alignas",
    "alignof",
    "asm",
    "auto",
    "bool",
    "break",
    "case",
    "char",
    "const",
    "constexpr",
    "continue",
    "default",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "false",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "nullptr",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "static_assert",
    "struct",
    "switch",
    "thread_local",
    "true",
    "typedef",
    "typeof",
    "typeof_unqual",
    "union",
    "unsigned",
    "void",
    "volatile",
    "while",
    "_Alignas",
    "_Alignof",
    "_Atomic",
    "_BitInt",
    "_Bool",
    "_Complex",
    "_Decimal128",
    "_Decimal32",
    "_Decimal64",
    "_Generic",
    "_Imaginary",
    "_Noreturn",
    "_Static_assert",
    "_Thread_local",
];

/// Words of the language itself, which would make a spec ambiguous as
/// names (`expect drop`, a parameter called `vlan`).
const RESERVED_WORDS: &[&str] = &[
    "table", "device", "egress", "group", "ingress", "route", "test", "send", "expect", "has", "lpm", "drop",
    "pass", "abort", "eth", "vlan", "ipv4", "ipv6", "ip", "l4", "udp", "tcp", "payload",
];

/// How many declared names "did you mean" compares against in one spec:
/// thousands of unknown names among thousands of declared ones would take
/// quadratic time. Past it, unknown names get no suggestion.
const NEAR_MISS_BUDGET: usize = 1_000_000;

impl Checker {
    /// Registers every declared name, reporting bad and duplicate names.
    /// A name that is not allowed (E003) is still declared: the one error
    /// is enough, its uses must not each be "unknown device" as well.
    pub(super) fn declare(&mut self, items: &Items) {
        let mut first: HashMap<String, Span> = HashMap::new();
        for (i, d) in items.devices.iter().enumerate() {
            self.name_ok(&d.name, "device");
            if self.unique(&mut first, &d.name) {
                self.targets.insert(d.name.name.clone(), (Target::Device(i), d.name.span));
            }
        }
        for (i, g) in items.groups.iter().enumerate() {
            self.name_ok(&g.name, "group");
            if self.unique(&mut first, &g.name) {
                self.targets.insert(g.name.name.clone(), (Target::Group(i), g.name.span));
            }
        }
        let mut first = HashMap::new();
        for (i, p) in items.programs.iter().enumerate() {
            self.name_ok(&p.name, "egress program");
            if self.unique(&mut first, &p.name) {
                self.programs.insert(p.name.name.clone(), i);
            }
        }
    }

    /// Reports a name that may not reach generated C. Returns whether it is
    /// acceptable.
    pub(super) fn name_ok(&mut self, ident: &Ident, what: &str) -> bool {
        let problem = name_problem(&ident.name, what);
        match problem {
            Some((message, help)) => {
                self.error(
                    Diagnostic::new(Code::BadName, ident.span, message)
                        .label("not allowed as a name")
                        .help(help),
                );
                self.misnamed.insert(ident.name.clone());
                false
            }
            None => true,
        }
    }

    /// Reports a second declaration of a name. Returns whether it is new.
    fn unique(&mut self, first: &mut HashMap<String, Span>, ident: &Ident) -> bool {
        match first.get(&ident.name) {
            Some(&span) => {
                self.error(
                    Diagnostic::new(
                        Code::DuplicateName,
                        ident.span,
                        format!("`{}` is declared twice", ident.name),
                    )
                    .label("declared again here")
                    .also(span, "first declared here")
                    .help(
                        "devices, groups and egress programs each need a unique name; rename or remove one",
                    ),
                );
                false
            }
            None => {
                first.insert(ident.name.clone(), ident.span);
                true
            }
        }
    }

    /// [`suggest`] among declared names, while the budget lasts.
    pub(super) fn near<'a>(
        &self,
        name: &str,
        candidates: impl ExactSizeIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        let spent = self.near_miss_spent.get().saturating_add(candidates.len());
        self.near_miss_spent.set(spent);
        if spent > NEAR_MISS_BUDGET {
            return None;
        }
        suggest(name, candidates)
    }

    /// A declared device or group, or an E005 that suggests the nearest
    /// name.
    pub(super) fn target(&mut self, ident: &Ident, context: &str) -> Option<Target> {
        if let Some((target, _)) = self.targets.get(&ident.name) {
            return Some(*target);
        }
        let mut d = Diagnostic::new(
            Code::UnknownDevice,
            ident.span,
            format!("unknown device or group `{}` in {context}", ident.name),
        )
        .label("not declared");
        d = match self.near(&ident.name, self.targets.keys().map(String::as_str)) {
            Some(near) => d.help(format!("did you mean `{near}`?")),
            None => d.help(format!("declare it: `device {} {{ ifname = \"...\" }}`", ident.name)),
        };
        self.error(d);
        None
    }

    /// Like [`Checker::target`], but only a device will do.
    pub(super) fn device_ref(&mut self, ident: &Ident, context: &str, code: Code) -> Option<usize> {
        match self.target(ident, context)? {
            Target::Device(i) => Some(i),
            Target::Group(_) => {
                self.error(
                    Diagnostic::new(
                        code,
                        ident.span,
                        format!("`{}` is a group, but {context} takes a device", ident.name),
                    )
                    .label("a group")
                    .help("name the group's member devices one by one"),
                );
                None
            }
        }
    }
}

/// Why `name` may not name a `what` (a device, a group...) that reaches
/// generated C: a message and a help, or `None` when it may. The grammar
/// already gives a name its shape; the manifest reader, which reads names
/// no parser saw, checks the shape here too.
pub(crate) fn name_problem(name: &str, what: &str) -> Option<(String, String)> {
    let a_what =
        if what.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {what}") } else { format!("a {what}") };
    let shaped = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if name.len() > MAX_NAME_LEN {
        Some((
            format!("the {what} name `{name}` is {} characters long", name.len()),
            format!("names are at most {MAX_NAME_LEN} characters"),
        ))
    } else if !shaped {
        Some((
            format!("the {what} name {name:?} is not a name"),
            "a name is ASCII letters, digits and `_`, not starting with a digit".into(),
        ))
    } else if C_KEYWORDS.contains(&name) {
        Some((
            format!("`{name}` is a C keyword and cannot name {a_what}"),
            "names reach the generated C, where a keyword cannot be a name".into(),
        ))
    } else if name.starts_with("devmapc_") || name.starts_with("__") {
        Some((
            format!("the {what} name `{name}` uses a reserved prefix"),
            "names starting with `devmapc_` or `__` are reserved for generated code".into(),
        ))
    } else if RESERVED_WORDS.contains(&name) {
        Some((
            format!("`{name}` is a word of the devmap language and cannot name {a_what}"),
            "pick another name, e.g. `{name}0` or `my_{name}`".replace("{name}", name),
        ))
    } else {
        None
    }
}
