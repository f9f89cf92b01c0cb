//! The spanned syntax tree of a `.devmap` spec, exactly as written.
//!
//! The AST keeps the spec's order and every span the diagnostics need, but
//! decides nothing: settings and values stay generic here, and `check`
//! gives them meaning. Parentheses that only group leave no trace, so a
//! reformatted spec has the same AST as the original.
//!
//! **Invariant:** spans never take part in equality. Two ASTs are equal when
//! they say the same thing, wherever it was written; `fmt` relies on it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A byte range in the spec's source text.
#[derive(Clone, Copy, Default, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn len(self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// Spans are location, not meaning: every span equals every other.
impl PartialEq for Span {
    fn eq(&self, _: &Span) -> bool {
        true
    }
}

/// Consistent with equality: all spans hash alike.
impl std::hash::Hash for Span {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(span: Span) -> Self {
        (span.start, span.len()).into()
    }
}

/// A name as written, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole spec: its items in source order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Spec {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Table(Table),
    Device(Device),
    Egress(Egress),
    Group(Group),
    Ingress(Ingress),
    Route(Route),
    Test(Test),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Table(t) => t.span,
            Item::Device(d) => d.span,
            Item::Egress(e) => e.span,
            Item::Group(g) => g.span,
            Item::Ingress(i) => i.span,
            Item::Route(r) => r.span,
            Item::Test(t) => t.span,
        }
    }
}

/// `table { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub settings: Block<Setting>,
    pub span: Span,
}

/// `device NAME { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    pub name: Ident,
    pub settings: Block<Setting>,
    pub span: Span,
}

/// `ingress { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Ingress {
    pub settings: Block<Setting>,
    pub span: Span,
}

/// `group NAME { dev, ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: Ident,
    pub members: Block<Ident>,
    pub span: Span,
}

/// `route KEY -> TARGET`
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub key: RouteKey,
    pub target: Ident,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RouteKey {
    /// `route default -> ...`
    Default(Span),
    Value(Value),
}

impl RouteKey {
    pub fn span(&self) -> Span {
        match self {
            RouteKey::Default(span) => *span,
            RouteKey::Value(value) => value.span,
        }
    }
}

/// The members of a `{ }` block, with the span of the whole block (its
/// braces included), which `fmt` needs to place comments.
#[derive(Clone, Debug, PartialEq)]
pub struct Block<T> {
    pub members: Vec<T>,
    pub span: Span,
}

/// `name = value`
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub name: Ident,
    pub value: Value,
    pub span: Span,
}

/// A value as written; its meaning depends on where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    Int(Int),
    Mac([u8; 6]),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Ipv4Prefix(Ipv4Addr, u8),
    Ipv6Prefix(Ipv6Addr, u8),
    Str(String),
    /// `a` or `a.b`: a name, a header field, `egress.mac`.
    Path(Path),
    /// `f(args)`: `lpm(ipv4.dst)`, `retag(10)`.
    Call(Call),
    /// `(a, b)`
    Tuple(Vec<Value>),
    /// `[a, b]`
    List(Vec<Value>),
}

impl ValueKind {
    /// What kind of value this is, in words, for diagnostics.
    pub fn describe(&self) -> &'static str {
        match self {
            ValueKind::Int(_) => "an integer",
            ValueKind::Mac(_) => "a MAC address",
            ValueKind::Ipv4(_) => "an IPv4 address",
            ValueKind::Ipv6(_) => "an IPv6 address",
            ValueKind::Ipv4Prefix(..) => "an IPv4 prefix",
            ValueKind::Ipv6Prefix(..) => "an IPv6 prefix",
            ValueKind::Str(_) => "a string",
            ValueKind::Path(p) if p.segments.len() == 1 => "a name",
            ValueKind::Path(_) => "a field",
            ValueKind::Call(_) => "a call",
            ValueKind::Tuple(_) => "a tuple",
            ValueKind::List(_) => "a list",
        }
    }
}

/// An integer literal. `hex_digits` remembers how it was written (0 for
/// decimal), so that `fmt` gives `0x0800` back as `0x0800`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Int {
    pub value: u64,
    pub hex_digits: u8,
}

/// A dotted name.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub segments: Vec<Ident>,
    pub span: Span,
}

impl Path {
    /// The path as written, `vlan.id`.
    pub fn dotted(&self) -> String {
        let names: Vec<&str> = self.segments.iter().map(|s| s.name.as_str()).collect();
        names.join(".")
    }

    /// The single name of a one-segment path.
    pub fn as_name(&self) -> Option<&Ident> {
        match self.segments.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }
}

/// `callee(args)`
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub callee: Path,
    pub args: Vec<Value>,
}

/// `egress NAME(params) { statements }`
#[derive(Clone, Debug, PartialEq)]
pub struct Egress {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Block<Stmt>,
    pub span: Span,
}

/// `name: type`
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Ident,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `field = value`
    Assign {
        field: Path,
        value: Value,
    },
    /// `field -= amount`
    Decrement {
        field: Path,
        amount: Value,
    },
    /// `vlan.push(x)`, `vlan.pop()`
    Call(Call),
    Drop,
    Pass,
    If(If),
}

/// `if cond { then } else { otherwise }`. An `else if` is an `If` alone in
/// the `otherwise` block.
#[derive(Clone, Debug, PartialEq)]
pub struct If {
    pub cond: Cond,
    pub then: Block<Stmt>,
    pub otherwise: Option<Else>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Else {
    Block(Block<Stmt>),
    /// `else if ...`: the nested statement, kept apart so that `fmt` can
    /// print the chain as it was written.
    If(Box<Stmt>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    pub kind: CondKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CondKind {
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
    /// `has(vlan)`
    Has(Ident),
    Compare {
        left: Value,
        op: CmpOp,
        right: Value,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// `test "name" { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub name: StrLit,
    pub body: Block<TestStmt>,
    pub span: Span,
}

/// A string literal: its text without the quotes.
#[derive(Clone, Debug, PartialEq)]
pub struct StrLit {
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TestStmt {
    pub kind: TestStmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TestStmtKind {
    /// `send DEV PACKET`
    Send { device: Ident, packet: Packet },
    /// `expect drop`
    ExpectDrop,
    /// `expect pass`
    ExpectPass,
    /// `expect DEV, DEV [PATTERN]`
    ExpectOut { devices: Vec<Ident>, pattern: Option<Packet> },
}

/// Layers joined by `/`.
#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    pub layers: Vec<Layer>,
    pub span: Span,
}

/// `eth(dst = 02:00:00:00:00:01)`, `payload("text")`
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: Ident,
    pub args: Vec<LayerArg>,
    pub span: Span,
}

/// `field = value`, or a value alone (`payload("text")`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerArg {
    pub field: Option<Ident>,
    pub value: Value,
    pub span: Span,
}
