//! The meaning of a spec, once checked: every name resolved to an index,
//! every value typed, every default filled in.
//!
//! This is what later stages (lowering to the IR, `devmapc test`) consume;
//! they never look at the AST or re-check anything. Spans survive only where
//! a later stage must point back at the spec (a device that is missing at
//! load time, a failed test expectation).

use crate::ast::Span;
use crate::fields::{Field, Header, LayerKind, Ty};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A checked spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub table: TableConfig,
    pub devices: Vec<DeviceDef>,
    pub programs: Vec<ProgramDef>,
    pub groups: Vec<GroupDef>,
    pub ingress: IngressDef,
    pub routes: Vec<RouteDef>,
    /// `route default -> ...`, which replaces `on_miss`.
    pub default_route: Option<Target>,
    pub tests: Vec<TestDef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableConfig {
    pub key: Key,
    pub max_entries: u32,
    pub on_miss: MissAction,
    pub numa_node: Option<u32>,
    pub access: Access,
    pub counters: bool,
}

/// What the ingress program reads from each packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// One field.
    Field(Field),
    /// `(f1, f2, ...)`, at least two fields.
    Composite(Vec<Field>),
    /// `lpm(field)` over an address field.
    Lpm(Field),
}

impl Key {
    /// The fields, in order.
    pub fn fields(&self) -> Vec<Field> {
        match self {
            Key::Field(f) | Key::Lpm(f) => vec![*f],
            Key::Composite(fs) => fs.clone(),
        }
    }

    /// Bits the key takes (for an LPM key, the full address).
    pub fn bits(&self) -> u32 {
        self.fields().iter().map(|f| f.key_bits().unwrap_or(0)).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissAction {
    Pass,
    Drop,
    Abort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    ReadWrite,
    ReadOnly,
    WriteOnly,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceDef {
    pub name: String,
    pub binding: Binding,
    pub egress: Option<EgressUse>,
    pub span: Span,
}

/// How a device is found at load time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    Ifname(String),
    Ifindex(u32),
}

/// `egress = program(args)` on a device.
#[derive(Clone, Debug, PartialEq)]
pub struct EgressUse {
    pub program: usize,
    pub args: Vec<Const>,
}

/// A constant value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Const {
    Uint(u64),
    Mac([u8; 6]),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl Const {
    pub fn ty(self) -> Ty {
        match self {
            Const::Uint(n) => Ty::Uint { max: n },
            Const::Mac(_) => Ty::Mac,
            Const::Ipv4(_) => Ty::Ipv4,
            Const::Ipv6(_) => Ty::Ipv6,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProgramDef {
    pub name: String,
    pub params: Vec<ParamDef>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamDef {
    pub name: String,
    pub ty: Ty,
}

/// A statement of an egress program.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Assign { field: Field, value: Operand },
    Decrement { field: Field, amount: u8 },
    VlanPush(Operand),
    VlanPop,
    Drop,
    Pass,
    If { cond: Cond, then: Vec<Stmt>, otherwise: Vec<Stmt> },
}

/// What a statement or condition reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Const(Const),
    /// The program's parameter with this index.
    Param(usize),
    Field(Field),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
    Has(Header),
    Compare { left: Operand, op: crate::ast::CmpOp, right: Operand },
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupDef {
    pub name: String,
    pub span: Span,
    /// Indices into `Model::devices`.
    pub members: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IngressDef {
    /// Indices into `Model::devices`.
    pub on: Vec<usize>,
    pub mode: XdpMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    Native,
    Generic,
    /// Native, falling back to generic with a warning.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Device(usize),
    Group(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteDef {
    pub key: KeyValue,
    pub target: Target,
    pub span: Span,
}

/// A route's key, normalised so that equal keys compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyValue {
    Const(Const),
    Device(usize),
    Prefix(PrefixValue),
    Composite(Vec<KeyValue>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixValue {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TestDef {
    pub name: String,
    pub steps: Vec<TestStep>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TestStep {
    Send { device: usize, packet: PacketDef, span: Span },
    ExpectDrop { span: Span },
    ExpectPass { span: Span },
    ExpectOut { devices: Vec<usize>, pattern: Vec<LayerDef>, span: Span },
}

/// A packet to send: its layers with the fields the spec sets.
pub type PacketDef = Vec<LayerDef>;

#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    pub kind: LayerKind,
    /// `(field name, value)` for named fields, in the order written.
    pub fields: Vec<(&'static str, Const)>,
    /// Fields of an `expect` pattern given as `egress.mac`: they must equal
    /// the address of the device the packet leaves by.
    pub egress_mac: Vec<&'static str>,
    /// The text of `payload("...")`.
    pub payload: Option<String>,
}
