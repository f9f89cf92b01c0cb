//! Egress programs: parameters and body. E004 (a parameter declared
//! twice), E028 (unknown parameter type), W004 (unused parameter), E035
//! (program too large), E025 (bad statement), E026 (bad condition), E021
//! (wrong number of arguments to an operation), E027 and E012 (a value
//! that does not fit where it is stored).

use super::*;

impl Checker {
    pub(super) fn program(&mut self, program: &ast::Egress) -> ProgramDef {
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
                    Diagnostic::new(
                        Code::DuplicateName,
                        param.name.span,
                        format!("parameter `{}` is declared twice", param.name.name),
                    )
                    .label("declared again here")
                    .also(span, "first declared here")
                    .help("each parameter of a program needs its own name"),
                );
            }
            first.insert(param.name.name.as_str(), param.name.span);
            let ty = Ty::from_param_type(&param.ty.name).unwrap_or_else(|| {
                untyped.insert(i);
                self.error(
                    Diagnostic::new(
                        Code::BadParam,
                        param.ty.span,
                        format!("unknown parameter type `{}`", param.ty.name),
                    )
                    .label("not a type")
                    .help(
                        match suggest(&param.ty.name, ["u8", "u16", "u32", "mac", "ipv4", "ipv6"].into_iter())
                        {
                            Some(near) => {
                                format!("did you mean `{near}`? a parameter is {}", Ty::PARAM_TYPES)
                            }
                            None => format!("a parameter is {}", Ty::PARAM_TYPES),
                        },
                    ),
                );
                Ty::U32
            });
            params.push(ParamDef { name: param.name.name.clone(), ty });
        }
        let mut scope =
            Scope { params: &params, used: vec![false; params.len()], vlan: HashSet::new(), untyped };
        self.program_size(program);
        let body = self.stmts(&program.body, &mut scope);
        for (i, used) in scope.used.iter().enumerate() {
            if !used && !repeated[i] {
                let p = &program.params[i];
                self.error(
                    Diagnostic::new(
                        Code::UnusedParam,
                        p.name.span,
                        format!("parameter `{}` is never used", p.name.name),
                    )
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
                            Some(ast::Else::Block(b)) => {
                                todo.extend(b.members.iter().rev().map(Either::Stmt))
                            }
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
                        Diagnostic::new(
                            Code::TypeMismatch,
                            amount.span,
                            format!("`-=` takes a number, not {}", amount.kind.describe()),
                        )
                        .label("expected a number")
                        .help(format!("e.g. `{target} -= 1`")),
                    );
                    return None;
                };
                if !(1..=255).contains(&int.value) {
                    self.error(
                        Diagnostic::new(
                            Code::OutOfRange,
                            amount.span,
                            format!("cannot subtract {} from `{target}`", int.value),
                        )
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
                            Diagnostic::new(
                                Code::BadStatement,
                                call.callee.span,
                                format!("unknown operation `{name}`"),
                            )
                            .label("not an operation")
                            .help("the operations are `vlan.push(id)` and `vlan.pop()`"),
                        );
                        return None;
                    }
                };
                if call.args.len() != arity {
                    self.error(
                        Diagnostic::new(
                            Code::ArgCount,
                            stmt.span,
                            format!(
                                "`{name}` takes {arity} argument{}, not {}",
                                if arity == 1 { "" } else { "s" },
                                call.args.len()
                            ),
                        )
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
                    Diagnostic::new(
                        Code::BadStatement,
                        path.span,
                        format!("`{field}` cannot be changed with `{op}`"),
                    )
                    .label("not writable this way")
                    .help(format!("`{op}` works on {writable}")),
                );
                None
            }
            None => {
                let mut d =
                    Diagnostic::new(Code::BadStatement, path.span, format!("unknown field `{dotted}`"))
                        .label("no such field");
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
                            let mut d = Diagnostic::new(
                                Code::BadCondition,
                                name.span,
                                format!("unknown parameter `{}`", name.name),
                            )
                            .label("not a parameter of this program");
                            d = match suggest(&name.name, names.iter().copied()) {
                                Some(near) => d.help(format!("did you mean `{near}`?")),
                                None => d.help("declare it in the program's parameters: `egress name(param: u16) { ... }`"),
                            };
                            self.error(d.with_code(if into.is_some() {
                                Code::BadStatement
                            } else {
                                Code::BadCondition
                            }));
                            return None;
                        }
                    }
                } else {
                    let dotted = path.dotted();
                    match Field::from_path(&dotted) {
                        Some(field) if field.readable() => (Operand::Field(field), field.ty()),
                        _ => {
                            let readable = Field::list(Field::readable);
                            let mut d = Diagnostic::new(
                                Code::BadCondition,
                                path.span,
                                format!("`{dotted}` cannot be read in an egress program"),
                            )
                            .label("not a readable field");
                            d = match suggest(&dotted, readable.split(", ").map(|k| k.trim_matches('`'))) {
                                Some(near) => {
                                    d.help(format!("did you mean `{near}`? readable fields: {readable}"))
                                }
                                None => d.help(format!("readable fields: {readable}")),
                            };
                            self.error(d.with_code(if into.is_some() {
                                Code::BadStatement
                            } else {
                                Code::BadCondition
                            }));
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
            if let (Operand::Field(from), Ty::Uint { max: have }, Ty::Uint { max: room }) =
                (operand, ty, field.ty())
            {
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
                        Diagnostic::new(
                            Code::BadCondition,
                            header.span,
                            format!("`has` does not know the header `{}`", header.name),
                        )
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
                            Diagnostic::new(
                                Code::BadCondition,
                                cond.span,
                                "a comparison needs a header field on one side",
                            )
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
                let (other, other_value, other_ty) =
                    if matches!(l, Operand::Field(_)) { (r, right, rt) } else { (l, left, lt) };
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

impl Diagnostic {
    fn with_code(mut self, code: Code) -> Diagnostic {
        self.code = code;
        self
    }
}

/// How many statements and condition tests (comparisons, `has`) an egress
/// program may hold (docs/language.md).
pub const MAX_PROGRAM_SIZE: usize = 1024;

/// A node of a program's body, for walking it without recursion.
enum Either<'a> {
    Stmt(&'a ast::Stmt),
    Cond(&'a ast::Cond),
}
