//! AST → [`Model`]: resolves names, types values, and reports every error
//! and warning of a spec, in source order.
//!
//! Each rule of the language lives in exactly one function here, and emits
//! exactly one kind of diagnostic ([`Code`]). A rule that fails does not
//! stop the others: the checker carries on with what it could make sense of
//! and skips only the checks that depend on the broken part (a route key is
//! not type-checked against a table key that is itself broken), so that one
//! mistake gives one diagnostic, not a cascade.

use crate::ast::{self, Block, CondKind, Ident, Span, StmtKind, TestStmtKind, Value, ValueKind};
use crate::diagnostic::{self, Code, Diagnostic};
use crate::fields::{Field, Header, LayerKind, Ty};
use crate::model::*;
use std::collections::{HashMap, HashSet};

/// The result of checking: the model when there is no error, and every
/// diagnostic (warnings included) in source order.
#[derive(Debug)]
pub struct Checked {
    pub model: Option<Model>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn check(spec: &ast::Spec) -> Checked {
    let mut checker = Checker::default();
    let model = checker.spec(spec);
    let mut diagnostics = checker.diagnostics;
    diagnostic::sort(&mut diagnostics);
    let model = if diagnostics.iter().any(Diagnostic::is_error) { None } else { model };
    Checked { model, diagnostics }
}

/// Longest name a spec may use (LANGUAGE.md, Lexical rules).
pub const MAX_NAME_LEN: usize = 64;

/// Keywords of C (C89 to C23): names reach the generated C.
const C_KEYWORDS: &[&str] = &[
    "alignas", "alignof", "asm", "auto", "bool", "break", "case", "char", "const", "constexpr", "continue", "default", "do",
    "double", "else", "enum", "extern", "false", "float", "for", "goto", "if", "inline", "int", "long", "nullptr",
    "register", "restrict", "return", "short", "signed", "sizeof", "static", "static_assert", "struct", "switch",
    "thread_local", "true", "typedef", "typeof", "typeof_unqual", "union", "unsigned", "void", "volatile", "while",
    "_Alignas", "_Alignof", "_Atomic", "_BitInt", "_Bool", "_Complex", "_Decimal128", "_Decimal32", "_Decimal64",
    "_Generic", "_Imaginary", "_Noreturn", "_Static_assert", "_Thread_local",
];

/// Words of the language itself, which would make a spec ambiguous as
/// names (`expect drop`, a parameter called `vlan`).
const RESERVED_WORDS: &[&str] = &[
    "table", "device", "egress", "group", "ingress", "route", "test", "send", "expect", "has", "lpm", "drop", "pass",
    "abort", "eth", "vlan", "ipv4", "ipv6", "ip", "l4", "udp", "tcp", "payload",
];

#[derive(Default)]
struct Checker {
    diagnostics: Vec<Diagnostic>,
    /// Devices and groups share one namespace: a route target names either.
    targets: HashMap<String, (Target, Span)>,
    programs: HashMap<String, usize>,
    /// For each program, its parameters that end up in a VLAN id (their
    /// arguments must be at most 4095).
    vlan_params: Vec<HashSet<usize>>,
    /// For each program, its parameters whose type is unknown (E028): their
    /// uses are not type-checked, so the one mistake is one error.
    untyped_params: Vec<HashSet<usize>>,
    /// Where `table.key` was written, to point at it from route errors.
    key_span: Option<Span>,
    /// Declared names that are already an error (E003): they still resolve,
    /// so that every use of one is not an error too, but get no warning.
    misnamed: HashSet<String>,
    /// Declared names compared so far for "did you mean" (see `near`).
    near_miss_spent: std::cell::Cell<usize>,
}

/// How many declared names "did you mean" compares against in one spec:
/// thousands of unknown names among thousands of declared ones would take
/// quadratic time. Past it, unknown names get no suggestion.
const NEAR_MISS_BUDGET: usize = 1_000_000;

/// The items of a spec, sorted by kind, in source order.
#[derive(Default)]
struct Items<'a> {
    tables: Vec<&'a ast::Table>,
    devices: Vec<&'a ast::Device>,
    programs: Vec<&'a ast::Egress>,
    groups: Vec<&'a ast::Group>,
    ingress: Vec<&'a ast::Ingress>,
    routes: Vec<&'a ast::Route>,
    tests: Vec<&'a ast::Test>,
}

impl Checker {
    fn error(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn spec(&mut self, spec: &ast::Spec) -> Option<Model> {
        let mut items = Items::default();
        for item in &spec.items {
            match item {
                ast::Item::Table(t) => items.tables.push(t),
                ast::Item::Device(d) => items.devices.push(d),
                ast::Item::Egress(e) => items.programs.push(e),
                ast::Item::Group(g) => items.groups.push(g),
                ast::Item::Ingress(i) => items.ingress.push(i),
                ast::Item::Route(r) => items.routes.push(r),
                ast::Item::Test(t) => items.tests.push(t),
            }
        }
        self.declare(&items);

        let table = self.table(&items.tables);
        let programs: Vec<ProgramDef> = items.programs.iter().map(|p| self.program(p)).collect();
        let devices: Vec<Option<DeviceDef>> = items.devices.iter().map(|d| self.device(d, &items.programs, &programs)).collect();
        self.distinct_interfaces(&devices, &items.devices);
        self.device_count(&items.devices);
        let groups: Vec<GroupDef> = items.groups.iter().map(|g| self.group(g)).collect();
        let ingress = self.ingress(&items.ingress);
        let (routes, default_route) = self.routes(&items.routes, table.as_ref());
        self.dead_routes(&routes, ingress.as_ref());
        let tests = self.tests(&items.tests, ingress.as_ref());
        self.warnings(&items, &routes, default_route, &groups);

        Some(Model {
            table: table?,
            devices: devices.into_iter().collect::<Option<Vec<_>>>()?,
            programs,
            groups,
            ingress: ingress?,
            routes,
            default_route,
            tests,
        })
    }

    // ------------------------------------------------------------ names

    /// Registers every declared name, reporting bad and duplicate names.
    /// A name that is not allowed (E003) is still declared: the one error
    /// is enough, its uses must not each be "unknown device" as well.
    fn declare(&mut self, items: &Items) {
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
    fn name_ok(&mut self, ident: &Ident, what: &str) -> bool {
        let name = ident.name.as_str();
        let a_what = if what.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {what}") } else { format!("a {what}") };
        let problem = if name.len() > MAX_NAME_LEN {
            Some((format!("the {what} name `{name}` is {} characters long", name.len()), format!("names are at most {MAX_NAME_LEN} characters")))
        } else if C_KEYWORDS.contains(&name) {
            Some((format!("`{name}` is a C keyword and cannot name {a_what}"), "names reach the generated C, where a keyword cannot be a name".into()))
        } else if name.starts_with("devmapc_") || name.starts_with("__") {
            Some((format!("the {what} name `{name}` uses a reserved prefix"), "names starting with `devmapc_` or `__` are reserved for generated code".into()))
        } else if RESERVED_WORDS.contains(&name) {
            Some((format!("`{name}` is a word of the devmap language and cannot name {a_what}"), "pick another name, e.g. `{name}0` or `my_{name}`".replace("{name}", name)))
        } else {
            None
        };
        match problem {
            Some((message, help)) => {
                self.error(Diagnostic::new(Code::BadName, ident.span, message).label("not allowed as a name").help(help));
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
                    Diagnostic::new(Code::DuplicateName, ident.span, format!("`{}` is declared twice", ident.name))
                        .label("declared again here")
                        .also(span, "first declared here")
                        .help("devices, groups and egress programs each need a unique name; rename or remove one"),
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
    fn near<'a>(&self, name: &str, candidates: impl ExactSizeIterator<Item = &'a str>) -> Option<&'a str> {
        let spent = self.near_miss_spent.get().saturating_add(candidates.len());
        self.near_miss_spent.set(spent);
        if spent > NEAR_MISS_BUDGET {
            return None;
        }
        suggest(name, candidates)
    }

    /// A declared device or group, or an E005 that suggests the nearest
    /// name.
    fn target(&mut self, ident: &Ident, context: &str) -> Option<Target> {
        if let Some((target, _)) = self.targets.get(&ident.name) {
            return Some(*target);
        }
        let mut d = Diagnostic::new(Code::UnknownDevice, ident.span, format!("unknown device or group `{}` in {context}", ident.name))
            .label("not declared");
        d = match self.near(&ident.name, self.targets.keys().map(String::as_str)) {
            Some(near) => d.help(format!("did you mean `{near}`?")),
            None => d.help(format!("declare it: `device {} {{ ifname = \"...\" }}`", ident.name)),
        };
        self.error(d);
        None
    }

    /// Like [`Checker::target`], but only a device will do.
    fn device_ref(&mut self, ident: &Ident, context: &str, code: Code) -> Option<usize> {
        match self.target(ident, context)? {
            Target::Device(i) => Some(i),
            Target::Group(_) => {
                self.error(
                    Diagnostic::new(code, ident.span, format!("`{}` is a group, but {context} takes a device", ident.name))
                        .label("a group")
                        .help("name the group's member devices one by one"),
                );
                None
            }
        }
    }

    // --------------------------------------------------------- settings

    /// Splits a block of settings by name, reporting unknown and repeated
    /// ones.
    fn settings<'a>(&mut self, block: &'a Block<ast::Setting>, allowed: &[&str], what: &str) -> HashMap<&'a str, &'a ast::Setting> {
        let mut found: HashMap<&str, &ast::Setting> = HashMap::new();
        for setting in &block.members {
            let name = setting.name.name.as_str();
            if !allowed.contains(&name) {
                let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
                let mut d = Diagnostic::new(Code::UnknownSetting, setting.name.span, format!("{what} has no setting `{name}`")).label("unknown setting");
                d = match suggest(name, allowed.iter().copied()) {
                    Some(near) => d.help(format!("did you mean `{near}`? {what} takes {}", list.join(", "))),
                    None => d.help(format!("{what} takes {}", list.join(", "))),
                };
                self.error(d);
            } else if let Some(previous) = found.get(name) {
                self.error(
                    Diagnostic::new(Code::DuplicateSetting, setting.name.span, format!("`{name}` is set twice"))
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
    fn int_setting(&mut self, setting: &ast::Setting, min: u64, max: u64) -> Option<u64> {
        let ValueKind::Int(int) = &setting.value.kind else {
            self.error(
                Diagnostic::new(Code::BadSettingValue, setting.value.span, format!("`{}` takes a number, not {}", setting.name.name, setting.value.kind.describe()))
                    .label("expected a number")
                    .help(format!("write a number from {min} to {max}")),
            );
            return None;
        };
        if int.value < min || int.value > max {
            self.error(
                Diagnostic::new(Code::OutOfRange, setting.value.span, format!("`{}` is {}, outside {min}..={max}", setting.name.name, int.value))
                    .label("out of range")
                    .help(format!("`{}` is a number from {min} to {max}", setting.name.name)),
            );
            return None;
        }
        Some(int.value)
    }

    /// A setting that takes one of a few words.
    fn word_setting<'a>(&mut self, setting: &ast::Setting, words: &[&'a str]) -> Option<&'a str> {
        let written = match &setting.value.kind {
            ValueKind::Path(p) => p.as_name().map(|n| n.name.as_str()),
            _ => None,
        };
        if let Some(word) = words.iter().find(|w| Some(**w) == written) {
            return Some(word);
        }
        let list: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
        self.error(
            Diagnostic::new(Code::BadSettingValue, setting.value.span, format!("`{}` cannot be `{}`", setting.name.name, value_text(&setting.value)))
                .label("not one of the choices")
                .help(format!("`{}` is one of {}", setting.name.name, list.join(", "))),
        );
        None
    }

    // ------------------------------------------------------------ table

    fn table(&mut self, tables: &[&ast::Table]) -> Option<TableConfig> {
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
                Diagnostic::new(Code::TableCount, Span::new(other.span.start, other.span.start + 5), "a spec has exactly one `table`")
                    .label("second table")
                    .also(Span::new(table.span.start, table.span.start + 5), "first table")
                    .help("merge the two tables' settings into one"),
            );
        }
        let s = self.settings(&table.settings, &["key", "max_entries", "on_miss", "numa_node", "access", "counters"], "`table`");
        let key = match s.get("key") {
            Some(setting) => {
                self.key_span = Some(setting.value.span);
                self.key_expr(&setting.value)
            }
            None => {
                self.error(
                    Diagnostic::new(Code::MissingSetting, Span::new(table.span.start, table.span.start + 5), "the table has no `key`")
                        .label("needs `key = ...`")
                        .help(format!("say what each packet is looked up by, e.g. `key = vlan.id`; keys: {}", Field::list(|f| f.key_bits().is_some()))),
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
            Some(setting) => self.word_setting(setting, &["read_write", "read_only", "write_only"]).map(|w| match w {
                "read_only" => Access::ReadOnly,
                "write_only" => Access::WriteOnly,
                _ => Access::ReadWrite,
            }),
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
                        Diagnostic::new(Code::BadKey, value.span, "a composite key needs at least two fields")
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
                            self.error(Diagnostic::new(Code::BadKey, part.span, format!("`{f}` appears twice in the key")).label("repeated").help("list each field once"));
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
                        Diagnostic::new(Code::BadKey, value.span, format!("`lpm` takes one address field, not {}", call.args.len()))
                            .label("expected `lpm(field)`")
                            .help(format!("e.g. `key = lpm(ipv4.dst)`; address fields: {}", Field::list(|f| f.is_address() && f.key_bits().is_some()))),
                    );
                    return None;
                };
                let field = self.key_field(arg)?;
                if !field.is_address() {
                    self.error(
                        Diagnostic::new(Code::BadKey, arg.span, format!("`lpm` needs an address field; `{field}` is not one"))
                            .label("not an address")
                            .help(format!("longest-prefix match works on {}; key on `{field}` directly", Field::list(|f| f.is_address() && f.key_bits().is_some()))),
                    );
                    return None;
                }
                Some(Key::Lpm(field))
            }
            _ => {
                self.error(
                    Diagnostic::new(Code::BadKey, value.span, format!("{} cannot be a table key", value.kind.describe()))
                        .label("not a key expression")
                        .help(format!("a key is a field ({}), a tuple of fields, or `lpm(field)`", Field::list(|f| f.key_bits().is_some()))),
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
                Diagnostic::new(Code::BadKey, value.span, format!("{} cannot be part of a key", value.kind.describe()))
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
                    Some(near) if found.is_none() => d.help(format!("did you mean `{near}`? key fields: {keys}")),
                    _ => d.help(format!("key fields: {keys}")),
                };
                self.error(d);
                None
            }
        }
    }

    // --------------------------------------------------------- programs

    fn program(&mut self, program: &ast::Egress) -> ProgramDef {
        let mut params = Vec::new();
        let mut first = HashMap::new();
        // A parameter declared again is already an error; that its second
        // declaration is never read goes without saying.
        let mut repeated = vec![false; program.params.len()];
        let mut untyped = HashSet::new();
        for (i, param) in program.params.iter().enumerate() {
            self.name_ok(&param.name, "parameter");
            if let Some(&span) = first.get(param.name.name.as_str()) {
                repeated[i] = true;
                self.error(
                    Diagnostic::new(Code::DuplicateName, param.name.span, format!("parameter `{}` is declared twice", param.name.name))
                        .label("declared again here")
                        .also(span, "first declared here")
                        .help("each parameter of a program needs its own name"),
                );
            }
            first.insert(param.name.name.as_str(), param.name.span);
            let ty = Ty::from_param_type(&param.ty.name).unwrap_or_else(|| {
                untyped.insert(i);
                self.error(
                    Diagnostic::new(Code::BadParam, param.ty.span, format!("unknown parameter type `{}`", param.ty.name))
                        .label("not a type")
                        .help(match suggest(&param.ty.name, ["u8", "u16", "u32", "mac", "ipv4", "ipv6"].into_iter()) {
                            Some(near) => format!("did you mean `{near}`? a parameter is {}", Ty::PARAM_TYPES),
                            None => format!("a parameter is {}", Ty::PARAM_TYPES),
                        }),
                );
                Ty::U32
            });
            params.push(ParamDef { name: param.name.name.clone(), ty });
        }
        let mut scope = Scope { params: &params, used: vec![false; params.len()], vlan: HashSet::new(), untyped };
        self.program_size(program);
        let body = self.stmts(&program.body, &mut scope);
        for (i, used) in scope.used.iter().enumerate() {
            if !used && !repeated[i] {
                let p = &program.params[i];
                self.error(
                    Diagnostic::new(Code::UnusedParam, p.name.span, format!("parameter `{}` is never used", p.name.name))
                        .label("unused")
                        .help("use it in the program's body or remove it (and its argument from every device)"),
                );
            }
        }
        self.vlan_params.push(scope.vlan);
        self.untyped_params.push(scope.untyped);
        ProgramDef { name: program.name.name.clone(), params, body, span: program.span }
    }

    /// An egress program is one BPF function: past [`MAX_PROGRAM_SIZE`]
    /// statements and tests, clang takes minutes over it (or crashes, on a
    /// condition of 50,000 terms) and the verifier would refuse it.
    fn program_size(&mut self, program: &ast::Egress) {
        // Statements and the tests of conditions, in source order, without
        // recursion: the first beyond the limit is the one to point at.
        let mut todo: Vec<Either<'_>> = program.body.members.iter().rev().map(Either::Stmt).collect();
        let mut size = 0;
        while let Some(next) = todo.pop() {
            let span = match next {
                Either::Stmt(stmt) => {
                    if let StmtKind::If(if_) = &stmt.kind {
                        match &if_.otherwise {
                            Some(ast::Else::Block(b)) => todo.extend(b.members.iter().rev().map(Either::Stmt)),
                            Some(ast::Else::If(s)) => todo.push(Either::Stmt(s)),
                            None => {}
                        }
                        todo.extend(if_.then.members.iter().rev().map(Either::Stmt));
                        todo.push(Either::Cond(&if_.cond));
                        continue;
                    }
                    stmt.span
                }
                Either::Cond(cond) => match &cond.kind {
                    CondKind::Or(parts) | CondKind::And(parts) => {
                        todo.extend(parts.iter().rev().map(Either::Cond));
                        continue;
                    }
                    CondKind::Not(inner) => {
                        todo.push(Either::Cond(inner));
                        continue;
                    }
                    _ => cond.span,
                },
            };
            size += 1;
            if size > MAX_PROGRAM_SIZE {
                self.error(
                    Diagnostic::new(Code::ProgramTooLarge, span, format!("egress program `{}` has more than {MAX_PROGRAM_SIZE} statements and tests", program.name.name))
                        .label(format!("statement or test {}", MAX_PROGRAM_SIZE + 1))
                        .help("an egress program is compiled into one BPF function; decide by routes (a key and a table) rather than by a long program"),
                );
                return;
            }
        }
    }

    fn stmts(&mut self, block: &Block<ast::Stmt>, scope: &mut Scope) -> Vec<Stmt> {
        block.members.iter().filter_map(|s| self.stmt(s, scope)).collect()
    }

    fn stmt(&mut self, stmt: &ast::Stmt, scope: &mut Scope) -> Option<Stmt> {
        match &stmt.kind {
            StmtKind::If(if_) => self.if_stmt(if_, scope),
            _ => self.simple_stmt(stmt, scope),
        }
    }

    /// Every statement but `if`, out of the recursion: in a debug build a
    /// frame holds the locals of every arm, and each level of a nested `if`
    /// must not pay for them (docs/language.md, nesting limit).
    #[inline(never)]
    fn simple_stmt(&mut self, stmt: &ast::Stmt, scope: &mut Scope) -> Option<Stmt> {
        match &stmt.kind {
            StmtKind::Drop => Some(Stmt::Drop),
            StmtKind::Pass => Some(Stmt::Pass),
            StmtKind::Assign { field, value } => {
                let target = self.written_field(field, Field::assignable, "=")?;
                let value = self.operand(value, scope, Some(target))?;
                Some(Stmt::Assign { field: target, value })
            }
            StmtKind::Decrement { field, amount } => {
                let target = self.written_field(field, Field::decrementable, "-=")?;
                let ValueKind::Int(int) = amount.kind else {
                    self.error(
                        Diagnostic::new(Code::TypeMismatch, amount.span, format!("`-=` takes a number, not {}", amount.kind.describe()))
                            .label("expected a number")
                            .help(format!("e.g. `{target} -= 1`")),
                    );
                    return None;
                };
                if !(1..=255).contains(&int.value) {
                    self.error(
                        Diagnostic::new(Code::OutOfRange, amount.span, format!("cannot subtract {} from `{target}`", int.value))
                            .label("out of range")
                            .help("subtract 1 to 255; the field stops at 0"),
                    );
                    return None;
                }
                Some(Stmt::Decrement { field: target, amount: int.value as u8 })
            }
            StmtKind::Call(call) => {
                let name = call.callee.dotted();
                let (arity, help) = match name.as_str() {
                    "vlan.push" => (1, "`vlan.push(id)` adds an outer 802.1Q tag"),
                    "vlan.pop" => (0, "`vlan.pop()` removes the outer tag"),
                    _ => {
                        self.error(
                            Diagnostic::new(Code::BadStatement, call.callee.span, format!("unknown operation `{name}`"))
                                .label("not an operation")
                                .help("the operations are `vlan.push(id)` and `vlan.pop()`"),
                        );
                        return None;
                    }
                };
                if call.args.len() != arity {
                    self.error(
                        Diagnostic::new(Code::ArgCount, stmt.span, format!("`{name}` takes {arity} argument{}, not {}", if arity == 1 { "" } else { "s" }, call.args.len()))
                            .label("wrong number of arguments")
                            .help(help),
                    );
                    return None;
                }
                match call.args.first() {
                    Some(arg) => Some(Stmt::VlanPush(self.operand(arg, scope, Some(Field::VlanId))?)),
                    None => Some(Stmt::VlanPop),
                }
            }
            StmtKind::If(_) => unreachable!("`stmt` checks `if`"),
        }
    }

    fn if_stmt(&mut self, if_: &ast::If, scope: &mut Scope) -> Option<Stmt> {
        let cond = self.cond(&if_.cond, scope);
        let then = self.stmts(&if_.then, scope);
        let otherwise = match &if_.otherwise {
            None => Vec::new(),
            Some(ast::Else::Block(block)) => self.stmts(block, scope),
            Some(ast::Else::If(stmt)) => self.stmt(stmt, scope).into_iter().collect(),
        };
        Some(Stmt::If { cond: cond?, then, otherwise })
    }

    /// The field written by `=` or `-=`, if that is allowed.
    fn written_field(&mut self, path: &ast::Path, allowed: fn(Field) -> bool, op: &str) -> Option<Field> {
        let dotted = path.dotted();
        let writable = Field::list(allowed);
        match Field::from_path(&dotted) {
            Some(field) if allowed(field) => Some(field),
            Some(field) => {
                self.error(
                    Diagnostic::new(Code::BadStatement, path.span, format!("`{field}` cannot be changed with `{op}`"))
                        .label("not writable this way")
                        .help(format!("`{op}` works on {writable}")),
                );
                None
            }
            None => {
                let mut d = Diagnostic::new(Code::BadStatement, path.span, format!("unknown field `{dotted}`")).label("no such field");
                d = match suggest(&dotted, writable.split(", ").map(|k| k.trim_matches('`'))) {
                    Some(near) => d.help(format!("did you mean `{near}`? `{op}` works on {writable}")),
                    None => d.help(format!("`{op}` works on {writable}")),
                };
                self.error(d);
                None
            }
        }
    }

    /// A value read by a statement or a condition. With `into`, the value
    /// is stored into that field and must fit it.
    fn operand(&mut self, value: &Value, scope: &mut Scope, into: Option<Field>) -> Option<Operand> {
        let (operand, ty) = match &value.kind {
            ValueKind::Path(path) => {
                if let Some(name) = path.as_name() {
                    match scope.params.iter().position(|p| p.name == name.name) {
                        Some(i) => {
                            scope.used[i] = true;
                            if into == Some(Field::VlanId) {
                                scope.vlan.insert(i);
                            }
                            if scope.untyped.contains(&i) {
                                return Some(Operand::Param(i));
                            }
                            (Operand::Param(i), scope.params[i].ty)
                        }
                        None => {
                            let names: Vec<&str> = scope.params.iter().map(|p| p.name.as_str()).collect();
                            let mut d = Diagnostic::new(Code::BadCondition, name.span, format!("unknown parameter `{}`", name.name)).label("not a parameter of this program");
                            d = match suggest(&name.name, names.iter().copied()) {
                                Some(near) => d.help(format!("did you mean `{near}`?")),
                                None => d.help("declare it in the program's parameters: `egress name(param: u16) { ... }`"),
                            };
                            self.error(d.with_code(if into.is_some() { Code::BadStatement } else { Code::BadCondition }));
                            return None;
                        }
                    }
                } else {
                    let dotted = path.dotted();
                    match Field::from_path(&dotted) {
                        Some(field) if field.readable() => (Operand::Field(field), field.ty()),
                        _ => {
                            let readable = Field::list(Field::readable);
                            let mut d = Diagnostic::new(Code::BadCondition, path.span, format!("`{dotted}` cannot be read in an egress program")).label("not a readable field");
                            d = match suggest(&dotted, readable.split(", ").map(|k| k.trim_matches('`'))) {
                                Some(near) => d.help(format!("did you mean `{near}`? readable fields: {readable}")),
                                None => d.help(format!("readable fields: {readable}")),
                            };
                            self.error(d.with_code(if into.is_some() { Code::BadStatement } else { Code::BadCondition }));
                            return None;
                        }
                    }
                }
            }
            _ => {
                let constant = self.constant(value)?;
                (Operand::Const(constant), constant.ty())
            }
        };
        if let Some(field) = into {
            self.fits(value, ty, field.ty(), field, || format!("`{field}`"))?;
            // A field's value is only known per packet: storing it in a
            // narrower field would silently cut it.
            if let (Operand::Field(from), Ty::Uint { max: have }, Ty::Uint { max: room }) = (operand, ty, field.ty()) {
                if have > room {
                    self.error(
                        Diagnostic::new(Code::TypeMismatch, value.span, format!("`{from}` can be up to {have}, which does not fit in `{field}` (at most {room})"))
                            .label("may not fit")
                            .help(format!("store a value of at most {room}: a number, or a parameter whose arguments are checked")),
                    );
                    return None;
                }
            }
        }
        Some(operand)
    }

    /// Reports a value of type `ty` that cannot go where `expected` is
    /// wanted. `field` picks the VLAN-specific code; `place` names the
    /// destination.
    fn fits(&mut self, value: &Value, ty: Ty, expected: Ty, field: Field, place: impl Fn() -> String) -> Option<()> {
        match (ty, expected) {
            (Ty::Uint { max: n }, Ty::Uint { max }) if matches!(value.kind, ValueKind::Int(_)) && n > max => {
                let (code, help) = if field == Field::VlanId {
                    (Code::VlanIdRange, "a VLAN id is 0 to 4095 (12 bits)".to_string())
                } else {
                    (Code::OutOfRange, format!("{} is at most {max}", place()))
                };
                self.error(Diagnostic::new(code, value.span, format!("{n} does not fit in {}", place())).label(format!("above {max}")).help(help));
                None
            }
            _ if ty.fits_in(expected) => Some(()),
            _ => {
                self.error(
                    Diagnostic::new(Code::TypeMismatch, value.span, format!("{} holds {}, not {}", place(), ty_words(expected), describe_ty(value, ty)))
                        .label(format!("expected {}", ty_words(expected)))
                        .help(format!("give {} {}", place(), ty_words(expected))),
                );
                None
            }
        }
    }

    /// A literal as a constant.
    fn constant(&mut self, value: &Value) -> Option<Const> {
        Some(match &value.kind {
            ValueKind::Int(int) => Const::Uint(int.value),
            ValueKind::Mac(mac) => Const::Mac(*mac),
            ValueKind::Ipv4(a) => Const::Ipv4(*a),
            ValueKind::Ipv6(a) => Const::Ipv6(*a),
            other => {
                self.error(
                    Diagnostic::new(Code::TypeMismatch, value.span, format!("expected a number or an address, found {}", other.describe()))
                        .label("not a constant")
                        .help("write a number, a MAC, an IPv4 or an IPv6 address"),
                );
                return None;
            }
        })
    }

    fn cond(&mut self, cond: &ast::Cond, scope: &mut Scope) -> Option<Cond> {
        match &cond.kind {
            CondKind::Or(parts) | CondKind::And(parts) => {
                let parts: Vec<Option<Cond>> = parts.iter().map(|c| self.cond(c, scope)).collect();
                let parts = parts.into_iter().collect::<Option<Vec<_>>>()?;
                Some(if matches!(cond.kind, CondKind::Or(_)) { Cond::Or(parts) } else { Cond::And(parts) })
            }
            CondKind::Not(inner) => Some(Cond::Not(Box::new(self.cond(inner, scope)?))),
            CondKind::Has(_) | CondKind::Compare { .. } => self.leaf_cond(cond, scope),
        }
    }

    /// `has(...)` and comparisons, out of the recursion of `cond` (see
    /// `simple_stmt`).
    #[inline(never)]
    fn leaf_cond(&mut self, cond: &ast::Cond, scope: &mut Scope) -> Option<Cond> {
        match &cond.kind {
            CondKind::Or(_) | CondKind::And(_) | CondKind::Not(_) => unreachable!("`cond` checks these"),
            CondKind::Has(header) => match Header::from_has(&header.name) {
                Some(h) => Some(Cond::Has(h)),
                None => {
                    self.error(
                        Diagnostic::new(Code::BadCondition, header.span, format!("`has` does not know the header `{}`", header.name))
                            .label("not a header")
                            .help("`has` takes `eth`, `vlan`, `ipv4`, `ipv6`, `ip` or `l4`"),
                    );
                    None
                }
            },
            CondKind::Compare { left, op, right } => {
                let l = self.operand(left, scope, None);
                let r = self.operand(right, scope, None);
                let (l, r) = (l?, r?);
                let field = match (l, r) {
                    (Operand::Field(f), _) | (_, Operand::Field(f)) => f,
                    _ => {
                        self.error(
                            Diagnostic::new(Code::BadCondition, cond.span, "a comparison needs a header field on one side")
                                .label("compares two values known in advance")
                                .help("compare a field with a value, e.g. `ipv4.ttl <= 1`"),
                        );
                        return None;
                    }
                };
                let ty_of = |o: Operand| match o {
                    Operand::Const(c) => c.ty(),
                    Operand::Param(i) => scope.params[i].ty,
                    Operand::Field(f) => f.ty(),
                };
                let (lt, rt) = (ty_of(l), ty_of(r));
                let (other, other_value, other_ty) = if matches!(l, Operand::Field(_)) { (r, right, rt) } else { (l, left, lt) };
                if !matches!(other, Operand::Param(i) if scope.untyped.contains(&i)) {
                    self.fits(other_value, other_ty, field.ty(), field, || format!("`{field}`"))?;
                }
                let ordered = matches!(op, ast::CmpOp::Lt | ast::CmpOp::Le | ast::CmpOp::Gt | ast::CmpOp::Ge);
                if ordered && !matches!(field.ty(), Ty::Uint { .. }) {
                    self.error(
                        Diagnostic::new(Code::BadCondition, cond.span, format!("`{}` cannot order {}", op.as_str(), match field.ty() {
                            Ty::Mac => "MAC addresses",
                            Ty::Ipv4 => "IPv4 addresses",
                            Ty::Ipv6 => "IPv6 addresses",
                            _ => "these values",
                        }))
                            .label("addresses have no order")
                            .help("compare addresses with `==` or `!=`; for ranges of addresses, route with `lpm(...)`"),
                    );
                    return None;
                }
                Some(Cond::Compare { left: l, op: *op, right: r })
            }
        }
    }

    // ---------------------------------------------------------- devices

    fn device(&mut self, device: &ast::Device, asts: &[&ast::Egress], programs: &[ProgramDef]) -> Option<DeviceDef> {
        let s = self.settings(&device.settings, &["ifname", "ifindex", "egress"], &format!("device `{}`", device.name.name));
        let binding = match (s.get("ifname"), s.get("ifindex")) {
            (Some(name), Some(index)) => {
                self.error(
                    Diagnostic::new(Code::DeviceBinding, index.span, format!("device `{}` has both `ifname` and `ifindex`", device.name.name))
                        .label("second binding")
                        .also(name.span, "first binding")
                        .help("a device is found by exactly one of them; keep one"),
                );
                None
            }
            (None, None) => {
                self.error(
                    Diagnostic::new(Code::DeviceBinding, device.name.span, format!("device `{}` has neither `ifname` nor `ifindex`", device.name.name))
                        .label("not bound to an interface")
                        .help("add `ifname = \"eth0\"` or `ifindex = 2`"),
                );
                None
            }
            (Some(name), None) => self.ifname(name).map(Binding::Ifname),
            (None, Some(index)) => self.int_setting(index, 1, i32::MAX as u64).map(|n| Binding::Ifindex(n as u32)),
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
                Diagnostic::new(Code::BadSettingValue, setting.value.span, format!("`ifname` takes a string, not {}", setting.value.kind.describe()))
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
            name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || *c == '\0').map(|c| match c {
                ' ' => "contains a space".to_string(),
                '\0' => "contains a NUL byte".to_string(),
                c if c.is_whitespace() => format!("contains white space ({c:?})"),
                c => format!("contains `{c}`"),
            })
        };
        match problem {
            Some(problem) => {
                self.error(
                    Diagnostic::new(Code::BadIfname, setting.value.span, format!("interface name \"{name}\" {problem}"))
                        .label("not a valid interface name")
                        .help("Linux interface names are 1 to 15 bytes, without `/`, `:` or white space"),
                );
                None
            }
            None => Some(name.clone()),
        }
    }

    /// `egress = program` or `egress = program(args)` on a device.
    fn egress_use(&mut self, setting: &ast::Setting, asts: &[&ast::Egress], programs: &[ProgramDef]) -> Option<EgressUse> {
        let (name, args): (&Ident, &[Value]) = match &setting.value.kind {
            ValueKind::Path(p) if p.as_name().is_some() => (p.as_name().unwrap(), &[]),
            ValueKind::Call(c) if c.callee.as_name().is_some() => (c.callee.as_name().unwrap(), &c.args),
            other => {
                self.error(
                    Diagnostic::new(Code::BadSettingValue, setting.value.span, format!("`egress` takes a program, not {}", other.describe()))
                        .label("expected a program name")
                        .help("write `egress = name` or `egress = name(args)`"),
                );
                return None;
            }
        };
        let Some(&index) = self.programs.get(&name.name) else {
            let mut d = Diagnostic::new(Code::UnknownProgram, name.span, format!("unknown egress program `{}`", name.name)).label("not declared");
            d = match self.near(&name.name, self.programs.keys().map(String::as_str)) {
                Some(near) => d.help(format!("did you mean `{near}`?")),
                None => d.help(format!("declare it: `egress {} {{ ... }}`", name.name)),
            };
            self.error(d);
            return None;
        };
        let program = &programs[index];
        if args.len() != program.params.len() {
            let params: Vec<String> = program.params.iter().map(|p| format!("{}: {}", p.name, p.ty)).collect();
            self.error(
                Diagnostic::new(Code::ArgCount, setting.value.span, format!("`{}` takes {} argument{}, but {} {} given", program.name, params.len(), if params.len() == 1 { "" } else { "s" }, args.len(), if args.len() == 1 { "is" } else { "are" }))
                    .label("wrong number of arguments")
                    .also(Span::new(asts[index].name.span.start, asts[index].name.span.end), "declared here")
                    .help(format!("`{}` is declared as `{}({})`", program.name, program.name, params.join(", "))),
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
                (Ty::Uint { .. }, Ty::Uint { .. }) | (Ty::Mac, Ty::Mac) | (Ty::Ipv4, Ty::Ipv4) | (Ty::Ipv6, Ty::Ipv6) => {}
                _ => {
                    self.error(
                        Diagnostic::new(
                            Code::ArgType,
                            arg.span,
                            format!("parameter `{}` of `{}` has type `{}`, but this argument is {}", param.name, program.name, param.ty, describe_ty(arg, constant.ty())),
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
    fn distinct_interfaces(&mut self, devices: &[Option<DeviceDef>], asts: &[&ast::Device]) {
        let mut seen: HashMap<&Binding, Span> = HashMap::new();
        for (device, ast) in devices.iter().zip(asts).filter_map(|(d, a)| Some((d.as_ref()?, a))) {
            // Point at the `ifname = ...` or `ifindex = ...` that clashes.
            let span = ast.settings.members.iter().find(|s| s.name.name == "ifname" || s.name.name == "ifindex").map_or(device.span, |s| s.span);
            if let Some(&first) = seen.get(&device.binding) {
                let what = match &device.binding {
                    Binding::Ifname(n) => format!("interface \"{n}\""),
                    Binding::Ifindex(i) => format!("ifindex {i}"),
                };
                self.error(
                    Diagnostic::new(Code::DuplicateInterface, span, format!("device `{}` is bound to {what}, like another device", device.name))
                        .label("second device on this interface")
                        .also(first, "first device on it")
                        .help("each interface is one device; give both names' routes to one of them"),
                );
            } else {
                seen.insert(&device.binding, span);
            }
        }
    }

    // ----------------------------------------------------------- groups

    fn group(&mut self, group: &ast::Group) -> GroupDef {
        let context = format!("group `{}`", group.name.name);
        let mut members: Vec<usize> = Vec::new();
        let mut spans: HashMap<usize, Span> = HashMap::new();
        for member in &group.members.members {
            let Some(i) = self.device_ref(member, &context, Code::BadGroup) else { continue };
            if let Some(&first) = spans.get(&i) {
                self.error(
                    Diagnostic::new(Code::BadGroup, member.span, format!("`{}` is listed twice in {context}", member.name))
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

    // ---------------------------------------------------------- ingress

    fn ingress(&mut self, blocks: &[&ast::Ingress]) -> Option<IngressDef> {
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
                Diagnostic::new(Code::BadIngress, Span::new(other.span.start, other.span.start + 7), "a spec has exactly one `ingress` block")
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
                Diagnostic::new(Code::MissingSetting, Span::new(ingress.span.start, ingress.span.start + 7), "`ingress` has no `on`")
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
                    Diagnostic::new(Code::BadSettingValue, on.value.span, format!("`on` takes a list of devices, not {}", other.describe()))
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
                self.error(Diagnostic::new(Code::BadSettingValue, value.span, format!("expected a device name, found {}", value.kind.describe())).label("not a device").help("list device names: `on = [uplink]`"));
                ok = false;
                continue;
            };
            let Some(name) = path.as_name() else {
                self.error(Diagnostic::new(Code::BadSettingValue, value.span, format!("expected a device name, found `{}`", path.dotted())).label("not a device").help("list device names: `on = [uplink]`"));
                ok = false;
                continue;
            };
            match self.device_ref(name, "`ingress.on`", Code::BadIngress) {
                Some(i) if devices.contains(&i) => {
                    self.error(Diagnostic::new(Code::BadIngress, name.span, format!("`{}` is listed twice in `on`", name.name)).label("listed again").help("list each device once"));
                }
                Some(i) => devices.push(i),
                None => ok = false,
            }
        }
        Some(IngressDef { on: devices, mode: mode? }).filter(|_| ok)
    }

    // ----------------------------------------------------------- routes

    fn routes(&mut self, routes: &[&ast::Route], table: Option<&TableConfig>) -> (Vec<RouteDef>, Option<Target>) {
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
                            Diagnostic::new(Code::DuplicateRoute, route.span, "`route default` is given twice")
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
                            Diagnostic::new(Code::DuplicateRoute, route.span, format!("the key `{}` is routed twice", value_text(value)))
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
                let d = Diagnostic::new(Code::TooManyRoutes, over, format!("{} routes do not fit in a table of {} {}", seen.len(), table.max_entries, if table.max_entries == 1 { "entry" } else { "entries" }))
                    .label(format!("route {} of {}", table.max_entries as usize + 1, seen.len()))
                    .help(format!("raise `max_entries` to at least {} in the table", seen.len()));
                self.error(d);
            }
        }
        (defs, default.map(|(t, _)| t))
    }

    /// Device `i` is slot `1 + i` of the deployment, and the slot maps
    /// (and the per-slot counters, whose index 0 counts misses) hold
    /// `MAX_SLOTS` entries: one device more would fail at apply.
    fn device_count(&mut self, devices: &[&ast::Device]) {
        let max = crate::render::MAX_SLOTS as usize - 1;
        if let Some(over) = devices.get(max) {
            self.error(
                Diagnostic::new(Code::TooManyDevices, over.name.span, format!("{} devices: a deployment holds at most {max}", devices.len()))
                    .label(format!("device {} of {}", max + 1, devices.len()))
                    .help(format!("a spec declares at most {max} devices; split the network over several specs")),
            );
        }
    }

    /// Routes keyed on a port that has no ingress program never match.
    fn dead_routes(&mut self, routes: &[RouteDef], ingress: Option<&IngressDef>) {
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
                let name = self.targets.iter().find(|(_, (t, _))| *t == Target::Device(*d)).map_or(String::new(), |(n, _)| n.clone());
                self.error(
                    Diagnostic::new(Code::DeadRoute, route.span, format!("this route never matches: `{name}` has no ingress program"))
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
                let parts: Vec<Option<KeyValue>> = parts.iter().zip(fields).map(|(p, f)| self.key_part(p, *f, key)).collect();
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
            _ => return self.key_mismatch(value, key, format!("an {} prefix", if v4 { "IPv4" } else { "IPv6" })),
        };
        // `u128::MAX >> (128 - host bits)`, not `(1 << host bits) - 1`, which
        // overflows for `::/0` (128 host bits).
        let host_mask: u128 = if len >= bits { 0 } else { u128::MAX >> (128 - u32::from(bits - len)) };
        if addr & host_mask != 0 {
            let network = addr & !host_mask;
            let fixed = if v4 { format!("{}/{len}", std::net::Ipv4Addr::from(network as u32)) } else { format!("{}/{len}", std::net::Ipv6Addr::from(network)) };
            self.error(
                Diagnostic::new(Code::BadPrefix, value.span, format!("`{}` has bits set after its prefix length", value_text(value)))
                    .label("host bits set")
                    .help(format!("did you mean `{fixed}`?")),
            );
            return None;
        }
        Some(KeyValue::Prefix(if v4 { PrefixValue::V4((addr as u32).into(), len) } else { PrefixValue::V6(addr.into(), len) }))
    }

    fn key_mismatch(&mut self, value: &Value, key: &Key, expected: String) -> Option<KeyValue> {
        let mut d = Diagnostic::new(Code::RouteKeyType, value.span, format!("route key `{}` is {}, but the table is keyed by `{}`", value_text(value), value.kind.describe(), key_text(key)))
            .label(format!("expected {expected}"))
            .help(match (key, &value.kind) {
                (Key::Field(field), ValueKind::Ipv4Prefix(..) | ValueKind::Ipv6Prefix(..)) if field.is_address() => {
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

    // ------------------------------------------------------------ tests

    fn tests(&mut self, tests: &[&ast::Test], ingress: Option<&IngressDef>) -> Vec<TestDef> {
        let mut names: HashMap<&str, Span> = HashMap::new();
        let mut defs = Vec::new();
        for test in tests {
            if test.name.text.trim().is_empty() {
                self.error(Diagnostic::new(Code::BadTest, test.name.span, "a test needs a name").label("empty name").help("say what the test proves: `test \"vlan 100 goes to red\" { ... }`"));
            } else if let Some(&first) = names.get(test.name.text.as_str()) {
                self.error(
                    Diagnostic::new(Code::BadTest, test.name.span, format!("two tests are named \"{}\"", test.name.text))
                        .label("second test with this name")
                        .also(first, "first one")
                        .help("test names pick tests with `--filter`; make them unique"),
                );
            } else {
                names.insert(&test.name.text, test.name.span);
            }
            let steps: Vec<TestStep> = test.body.members.iter().filter_map(|s| self.test_step(s, ingress)).collect();
            let sends = test.body.members.iter().filter(|s| matches!(s.kind, TestStmtKind::Send { .. })).count();
            let head = Span::new(test.span.start, test.name.span.end);
            if sends == 0 {
                self.error(Diagnostic::new(Code::BadTest, head, format!("test \"{}\" sends no packet", test.name.text)).label("no `send`").help("add `send DEVICE eth() / ...`"));
            }
            if sends == test.body.members.len() {
                self.error(
                    Diagnostic::new(Code::BadTest, head, format!("test \"{}\" expects nothing", test.name.text))
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
            let has_send = round
                .iter()
                .any(|s| matches!(s.kind, TestStmtKind::Send { .. }));
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
        let expects: Vec<&&ast::TestStmt> = round
            .iter()
            .filter(|s| !matches!(s.kind, TestStmtKind::Send { .. }))
            .collect();
        let Some(drop) = expects
            .iter()
            .find(|s| matches!(s.kind, TestStmtKind::ExpectDrop))
        else {
            return;
        };
        let Some(other) = expects
            .iter()
            .find(|s| !matches!(s.kind, TestStmtKind::ExpectDrop))
        else {
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
                            Diagnostic::new(Code::SendWithoutIngress, device.span, format!("`{}` has no ingress program, so this packet meets no XDP program", device.name))
                                .label("not in `ingress.on`")
                                .help("send on a device listed in `ingress { on = [...] }`, or add this one there"),
                        );
                    }
                }
                Some(TestStep::Send { device: d, packet: p?, span })
            }
            TestStmtKind::ExpectDrop => Some(TestStep::ExpectDrop { span }),
            TestStmtKind::ExpectPass => Some(TestStep::ExpectPass { span }),
            TestStmtKind::ExpectOut { devices, pattern } => {
                let ds: Vec<Option<usize>> = devices.iter().map(|d| self.device_ref(d, "`expect`", Code::BadTest)).collect();
                let pattern = match pattern {
                    Some(p) => self.packet(p, false),
                    None => Some(Vec::new()),
                };
                Some(TestStep::ExpectOut { devices: ds.into_iter().collect::<Option<Vec<_>>>()?, pattern: pattern?, span })
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
        for layer in &packet.layers {
            let Some(kind) = LayerKind::from_name(&layer.name.name) else {
                let names: Vec<&str> = LayerKind::ALL.iter().map(|l| l.name()).collect();
                let mut d = Diagnostic::new(Code::BadPacket, layer.name.span, format!("unknown layer `{}`", layer.name.name)).label("not a layer");
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
                let why = match (previous, kind) {
                    (None, _) => "a packet starts with `eth(...)`".to_string(),
                    (_, LayerKind::Vlan) if vlans > 2 => "a frame carries at most two VLAN tags".to_string(),
                    (Some(LayerKind::Payload), _) => "`payload` is the last layer".to_string(),
                    (Some(p), k) => format!("`{}` cannot follow `{}`", k.name(), p.name()),
                };
                self.error(
                    Diagnostic::new(Code::BadPacket, layer.span, format!("layer `{}` is out of place", kind.name()))
                        .label(why)
                        .help("layers go outermost first: eth / vlan (up to two) / ipv4 or ipv6 / udp or tcp / payload"),
                );
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
            let Some(&(_, Const::Uint(set))) = pair[0].fields.iter().find(|(name, _)| *name == field) else { continue };
            if wanted.contains(&set) {
                continue;
            }
            let arg = packet.layers[i].args.iter().find(|a| a.field.as_ref().is_some_and(|f| f.name == field));
            let span = arg.map_or(packet.layers[i].span, |a| a.span);
            let list: Vec<String> = wanted.iter().map(|w| format!("{w:#06x}")).collect();
            let want = if field == "proto" { wanted.iter().map(u64::to_string).collect::<Vec<_>>().join(" or ") } else { list.join(" or ") };
            self.error(
                Diagnostic::new(Code::BadPacket, span, format!("`{field} = {set}` contradicts the `{}` layer that follows", pair[1].kind.name()))
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
                [LayerArg { field: None, value: Value { kind: ValueKind::Str(text), .. }, .. }] => def.payload = Some(text.clone()),
                _ => {
                    self.error(Diagnostic::new(Code::BadPacket, layer.span, "`payload` takes one string").label("expected `payload(\"text\")`").help("e.g. `payload(\"hello\")`"));
                    return None;
                }
            }
            return Some(def);
        }
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for arg in &layer.args {
            let Some(field) = &arg.field else {
                self.error(
                    Diagnostic::new(Code::BadPacket, arg.span, format!("a `{}` field needs a name", kind.name()))
                        .label("expected `field = value`")
                        .help(format!("`{}` has {}", kind.name(), field_names(kind))),
                );
                ok = false;
                continue;
            };
            let Some(&(name, ty)) = kind.fields().iter().find(|(n, _)| *n == field.name) else {
                let mut d = Diagnostic::new(Code::BadPacket, field.span, format!("`{}` has no field `{}`", kind.name(), field.name)).label("unknown field");
                d = match suggest(&field.name, kind.fields().iter().map(|(n, _)| *n)) {
                    Some(near) => d.help(format!("did you mean `{near}`? `{}` has {}", kind.name(), field_names(kind))),
                    None => d.help(format!("`{}` has {}", kind.name(), field_names(kind))),
                };
                self.error(d);
                ok = false;
                continue;
            };
            if let Some(&first) = seen.get(name) {
                self.error(Diagnostic::new(Code::BadPacket, field.span, format!("`{}` is set twice", field.name)).label("set again").also(first, "first set here").help("set each field once"));
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
            let as_field = if kind == LayerKind::Vlan && name == "id" { Field::VlanId } else { Field::EgressMac };
            let place = || format!("`{}.{}`", kind.name(), name);
            match (value.ty(), ty) {
                (Ty::Uint { .. }, Ty::Uint { .. }) | (Ty::Mac, Ty::Mac) | (Ty::Ipv4, Ty::Ipv4) | (Ty::Ipv6, Ty::Ipv6) => {
                    if self.fits(&arg.value, value.ty(), ty, as_field, place).is_none() {
                        ok = false;
                        continue;
                    }
                }
                _ => {
                    self.error(
                        Diagnostic::new(Code::TypeMismatch, arg.value.span, format!("{} holds {}, not {}", place(), ty_words(ty), describe_ty(&arg.value, value.ty())))
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

    // --------------------------------------------------------- warnings

    fn warnings(&mut self, items: &Items, routes: &[RouteDef], default: Option<Target>, groups: &[GroupDef]) {
        let mut reached_devices: HashSet<usize> = HashSet::new();
        let mut reached_groups: HashSet<usize> = HashSet::new();
        for target in routes.iter().map(|r| r.target).chain(default) {
            match target {
                Target::Device(d) => {
                    reached_devices.insert(d);
                }
                Target::Group(g) => {
                    reached_groups.insert(g);
                    reached_devices.extend(groups.get(g).map(|g| g.members.clone()).unwrap_or_default());
                }
            }
        }
        // A device in a group is spoken for: if no route targets the group,
        // the group's own warning (W003) says so, once.
        for group in groups {
            reached_devices.extend(group.members.iter().copied());
        }
        // A name that failed to resolve but is a near miss of a declared one
        // (`donwlink`) counts as a use of that one: the typo is the error,
        // and what it meant is not also unused.
        let resolve = |name: &str| {
            let near = || self.near(name, self.targets.keys().map(String::as_str)).and_then(|n| self.targets.get(n));
            self.targets.get(name).or_else(near).map(|(t, _)| *t)
        };
        // Routes whose key or target is an error still count: no warning on
        // top of the error.
        for route in &items.routes {
            match resolve(&route.target.name) {
                Some(Target::Device(d)) => {
                    reached_devices.insert(d);
                }
                Some(Target::Group(g)) => {
                    reached_groups.insert(g);
                    reached_devices.extend(groups.get(g).map(|g| g.members.clone()).unwrap_or_default());
                }
                None => {}
            }
        }
        // Every device named in an `on` list, even one whose block had an
        // error: a broken ingress block must not also cause warnings.
        let ingress_on: HashSet<usize> = items
            .ingress
            .iter()
            .flat_map(|i| i.settings.members.iter())
            .filter(|s| s.name.name == "on")
            .flat_map(|s| match &s.value.kind {
                ValueKind::List(items) => items.iter().collect(),
                _ => vec![&s.value],
            })
            .filter_map(|v| match &v.kind {
                ValueKind::Path(p) => p.as_name().and_then(|n| resolve(&n.name)),
                _ => None,
            })
            .filter_map(|t| match t {
                Target::Device(d) => Some(d),
                Target::Group(_) => None,
            })
            .collect();
        // Without an ingress block, or with one that has no `on`, which
        // devices receive traffic is unknown (and already an error).
        let ingress_known = !items.ingress.is_empty()
            && items.ingress.iter().all(|i| {
                i.settings.members.iter().any(|s| match &s.value.kind {
                    ValueKind::List(devices) => s.name.name == "on" && !devices.is_empty(),
                    ValueKind::Path(_) => s.name.name == "on",
                    _ => false,
                })
            });
        for (i, device) in items.devices.iter().enumerate() {
            let declared = self.targets.get(&device.name.name).is_some_and(|(t, _)| *t == Target::Device(i)) && !self.misnamed.contains(&device.name.name);
            if declared && ingress_known && !reached_devices.contains(&i) && !ingress_on.contains(&i) {
                self.error(
                    Diagnostic::new(Code::UnreachedDevice, device.name.span, format!("no route reaches device `{}`", device.name.name))
                        .label("never a target, never an ingress")
                        .help("route some keys to it, add it to a group or to `ingress.on`, or remove it"),
                );
            }
        }
        for (i, group) in items.groups.iter().enumerate() {
            let declared = self.targets.get(&group.name.name).is_some_and(|(t, _)| *t == Target::Group(i)) && !self.misnamed.contains(&group.name.name);
            if declared && !reached_groups.contains(&i) {
                self.error(
                    Diagnostic::new(Code::UnusedGroup, group.name.span, format!("no route targets group `{}`", group.name.name))
                        .label("unused group")
                        .help(format!("route some keys to it (`route KEY -> {}`) or remove it", group.name.name)),
                );
            }
        }
        let used: HashSet<String> = items
            .devices
            .iter()
            .flat_map(|d| d.settings.members.iter())
            .filter(|s| s.name.name == "egress")
            .filter_map(|s| match &s.value.kind {
                ValueKind::Path(p) => p.as_name().map(|n| n.name.as_str()),
                ValueKind::Call(c) => c.callee.as_name().map(|n| n.name.as_str()),
                _ => None,
            })
            .map(|name| match self.programs.contains_key(name) {
                true => name.to_string(),
                false => self.near(name, self.programs.keys().map(String::as_str)).unwrap_or(name).to_string(),
            })
            .collect();
        for (i, program) in items.programs.iter().enumerate() {
            let declared = self.programs.get(&program.name.name) == Some(&i) && !self.misnamed.contains(&program.name.name);
            if declared && !used.contains(&program.name.name) {
                self.error(
                    Diagnostic::new(Code::UnusedProgram, program.name.span, format!("no device uses egress program `{}`", program.name.name))
                        .label("unused program")
                        .help(format!("attach it to a device with `egress = {}` or remove it", program.name.name)),
                );
            }
        }
        if let (Some(default_route), Some(table)) = (items.routes.iter().find(|r| matches!(r.key, ast::RouteKey::Default(_))), items.tables.first()) {
            if let Some(on_miss) = table.settings.members.iter().find(|s| s.name.name == "on_miss") {
                self.error(
                    Diagnostic::new(Code::OnMissOverridden, on_miss.span, "`on_miss` has no effect: `route default` takes every miss")
                        .label("ignored")
                        .also(default_route.span, "the default route")
                        .help("remove `on_miss`, or remove `route default` to use it"),
                );
            }
        }
    }
}

/// Parameters in scope while checking a program body, and what the body
/// does with them.
struct Scope<'a> {
    params: &'a [ParamDef],
    used: Vec<bool>,
    vlan: HashSet<usize>,
    /// Parameters of an unknown type.
    untyped: HashSet<usize>,
}

use crate::ast::LayerArg;

impl Diagnostic {
    fn with_code(mut self, code: Code) -> Diagnostic {
        self.code = code;
        self
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

fn field_names(kind: LayerKind) -> String {
    let names: Vec<String> = kind.fields().iter().map(|(n, _)| format!("`{n}`")).collect();
    names.join(", ")
}

/// A type as met in a diagnostic: literals by their kind, others by type.
/// A type in words, for messages: "an IPv4 address", "a number 0..=4095".
fn ty_words(ty: Ty) -> String {
    match ty {
        Ty::Uint { max } => format!("a number 0..={max}"),
        Ty::Mac => "a MAC address".into(),
        Ty::Ipv4 => "an IPv4 address".into(),
        Ty::Ipv6 => "an IPv6 address".into(),
        Ty::Device => "a device name".into(),
    }
}

fn describe_ty(value: &Value, ty: Ty) -> String {
    match (&value.kind, ty) {
        (ValueKind::Path(p), ty) => format!("`{}` ({ty})", p.dotted()),
        (kind, _) => kind.describe().to_string(),
    }
}

/// A value as the user would write it, for messages.
pub fn value_text(value: &Value) -> String {
    crate::fmt::value(value)
}

fn key_text(key: &Key) -> String {
    match key {
        Key::Field(f) => f.path().to_string(),
        Key::Lpm(f) => format!("lpm({f})"),
        Key::Composite(fs) => format!("({})", fs.iter().map(|f| f.path()).collect::<Vec<_>>().join(", ")),
    }
}

/// The candidate closest to `name`, if it is close enough to be a typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates.map(|c| (edit_distance(name, c), c)).filter(|(d, _)| *d <= limit).min().map(|(_, c)| c)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to
/// `b`: a swap is one typo (`bleu` for `blue`), not two.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]));
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// How many statements and condition tests (comparisons, `has`) an egress
/// program may hold (docs/language.md).
pub const MAX_PROGRAM_SIZE: usize = 1024;

/// A node of a program's body, for walking it without recursion.
enum Either<'a> {
    Stmt(&'a ast::Stmt),
    Cond(&'a ast::Cond),
}

#[cfg(test)]
mod tests;
