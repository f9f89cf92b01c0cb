//! The language's vocabulary: header fields, their types, and where each
//! may be used (as a key, read in an egress program, written, in a test
//! packet). Adding a field is one entry here; `check` and the code
//! generator both read this table.

use std::fmt;

/// The type of a field, a parameter or a literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// An unsigned integer from 0 to `max`.
    Uint {
        max: u64,
    },
    Mac,
    Ipv4,
    Ipv6,
    /// A declared device (the `ingress.port` key).
    Device,
}

impl Ty {
    pub const U8: Ty = Ty::Uint { max: u8::MAX as u64 };
    pub const U16: Ty = Ty::Uint { max: u16::MAX as u64 };
    pub const U32: Ty = Ty::Uint { max: u32::MAX as u64 };
    pub const VLAN_ID: Ty = Ty::Uint { max: 4095 };
    pub const PCP: Ty = Ty::Uint { max: 7 };

    /// A parameter type by its name in a spec.
    pub fn from_param_type(name: &str) -> Option<Ty> {
        Some(match name {
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "mac" => Ty::Mac,
            "ipv4" => Ty::Ipv4,
            "ipv6" => Ty::Ipv6,
            _ => return None,
        })
    }

    pub const PARAM_TYPES: &'static str = "`u8`, `u16`, `u32`, `mac`, `ipv4` or `ipv6`";

    /// Whether a value of type `self` can be stored where `into` is expected.
    /// Integers fit when their whole range does; a narrower check of the
    /// actual value happens where the value is known.
    pub fn fits_in(self, into: Ty) -> bool {
        match (self, into) {
            (Ty::Uint { .. }, Ty::Uint { .. }) => true,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Uint { max: 255 } => f.write_str("u8"),
            Ty::Uint { max: 65535 } => f.write_str("u16"),
            Ty::Uint { max: 4294967295 } => f.write_str("u32"),
            Ty::Uint { max } => write!(f, "an integer 0..={max}"),
            Ty::Mac => f.write_str("mac"),
            Ty::Ipv4 => f.write_str("ipv4"),
            Ty::Ipv6 => f.write_str("ipv6"),
            Ty::Device => f.write_str("a device name"),
        }
    }
}

/// The headers a packet may carry, in the order they are parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Header {
    Eth,
    Vlan,
    Ipv4,
    Ipv6,
    /// Either IP version (`ip.proto`).
    Ip,
    /// TCP or UDP (`l4.dport`).
    L4,
    /// Not a header: metadata (`ingress.port`, `egress.mac`).
    Meta,
}

impl Header {
    /// The headers `has(...)` accepts.
    pub fn from_has(name: &str) -> Option<Header> {
        Some(match name {
            "eth" => Header::Eth,
            "vlan" => Header::Vlan,
            "ipv4" => Header::Ipv4,
            "ipv6" => Header::Ipv6,
            "ip" => Header::Ip,
            "l4" => Header::L4,
            _ => return None,
        })
    }
}

/// A field a spec can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    IngressPort,
    EgressMac,
    EthDst,
    EthSrc,
    VlanId,
    VlanPcp,
    Ipv4Src,
    Ipv4Dst,
    Ipv4Ttl,
    Ipv4Proto,
    Ipv6Src,
    Ipv6Dst,
    Ipv6HopLimit,
    IpProto,
    L4Sport,
    L4Dport,
}

/// One row of the field table.
struct FieldInfo {
    field: Field,
    path: &'static str,
    ty: Ty,
    header: Header,
    /// Bits it takes in a key, when it can be a key.
    key_bits: Option<u32>,
    /// Readable in an egress program's conditions.
    readable: bool,
    /// Writable with `=` in an egress program.
    assignable: bool,
    /// Writable with `-=` in an egress program.
    decrementable: bool,
}

macro_rules! fields {
    ($($field:ident $path:literal $ty:expr, $header:ident, key $key:expr, read $r:literal, assign $a:literal, dec $d:literal;)*) => {
        const FIELDS: &[FieldInfo] = &[$(FieldInfo {
            field: Field::$field, path: $path, ty: $ty, header: Header::$header,
            key_bits: $key, readable: $r, assignable: $a, decrementable: $d,
        },)*];
    };
}

fields! {
    IngressPort  "ingress.port"    Ty::Device,  Meta, key Some(32),  read false, assign false, dec false;
    EgressMac    "egress.mac"      Ty::Mac,     Meta, key None,      read true,  assign false, dec false;
    EthDst       "eth.dst"         Ty::Mac,     Eth,  key Some(48),  read true,  assign true,  dec false;
    EthSrc       "eth.src"         Ty::Mac,     Eth,  key Some(48),  read true,  assign true,  dec false;
    VlanId       "vlan.id"         Ty::VLAN_ID, Vlan, key Some(12),  read true,  assign true,  dec false;
    VlanPcp      "vlan.pcp"        Ty::PCP,     Vlan, key None,      read true,  assign false, dec false;
    Ipv4Src      "ipv4.src"        Ty::Ipv4,    Ipv4, key Some(32),  read true,  assign false, dec false;
    Ipv4Dst      "ipv4.dst"        Ty::Ipv4,    Ipv4, key Some(32),  read true,  assign false, dec false;
    Ipv4Ttl      "ipv4.ttl"        Ty::U8,      Ipv4, key None,      read true,  assign false, dec true;
    Ipv4Proto    "ipv4.proto"      Ty::U8,      Ipv4, key None,      read true,  assign false, dec false;
    Ipv6Src      "ipv6.src"        Ty::Ipv6,    Ipv6, key Some(128), read true,  assign false, dec false;
    Ipv6Dst      "ipv6.dst"        Ty::Ipv6,    Ipv6, key Some(128), read true,  assign false, dec false;
    Ipv6HopLimit "ipv6.hop_limit"  Ty::U8,      Ipv6, key None,      read true,  assign false, dec true;
    IpProto      "ip.proto"        Ty::U8,      Ip,   key Some(8),   read true,  assign false, dec false;
    L4Sport      "l4.sport"        Ty::U16,     L4,   key Some(16),  read true,  assign false, dec false;
    L4Dport      "l4.dport"        Ty::U16,     L4,   key Some(16),  read true,  assign false, dec false;
}

impl Field {
    fn info(self) -> &'static FieldInfo {
        FIELDS.iter().find(|f| f.field == self).expect("every field has a row")
    }

    pub fn from_path(path: &str) -> Option<Field> {
        FIELDS.iter().find(|f| f.path == path).map(|f| f.field)
    }

    pub fn path(self) -> &'static str {
        self.info().path
    }

    pub fn ty(self) -> Ty {
        self.info().ty
    }

    pub fn header(self) -> Header {
        self.info().header
    }

    pub fn key_bits(self) -> Option<u32> {
        self.info().key_bits
    }

    pub fn readable(self) -> bool {
        self.info().readable
    }

    pub fn assignable(self) -> bool {
        self.info().assignable
    }

    pub fn decrementable(self) -> bool {
        self.info().decrementable
    }

    /// Whether this is an address field, usable with `lpm(...)`.
    pub fn is_address(self) -> bool {
        matches!(self.ty(), Ty::Ipv4 | Ty::Ipv6)
    }

    /// The fields that can be used in a given way, as "`a`, `b`", for help
    /// lines.
    pub fn list(filter: impl Fn(Field) -> bool) -> String {
        let names: Vec<String> =
            FIELDS.iter().filter(|f| filter(f.field)).map(|f| format!("`{}`", f.path)).collect();
        names.join(", ")
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// A layer of a test packet, and its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Eth,
    Vlan,
    Ipv4,
    Ipv6,
    Udp,
    Tcp,
    Payload,
}

impl LayerKind {
    pub const ALL: [LayerKind; 7] = [
        LayerKind::Eth,
        LayerKind::Vlan,
        LayerKind::Ipv4,
        LayerKind::Ipv6,
        LayerKind::Udp,
        LayerKind::Tcp,
        LayerKind::Payload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Eth => "eth",
            LayerKind::Vlan => "vlan",
            LayerKind::Ipv4 => "ipv4",
            LayerKind::Ipv6 => "ipv6",
            LayerKind::Udp => "udp",
            LayerKind::Tcp => "tcp",
            LayerKind::Payload => "payload",
        }
    }

    pub fn from_name(name: &str) -> Option<LayerKind> {
        LayerKind::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The named fields of the layer and their types. `payload` has none: it
    /// takes one string.
    pub fn fields(self) -> &'static [(&'static str, Ty)] {
        match self {
            LayerKind::Eth => &[("dst", Ty::Mac), ("src", Ty::Mac), ("type", Ty::U16)],
            LayerKind::Vlan => &[("id", Ty::VLAN_ID), ("pcp", Ty::PCP)],
            LayerKind::Ipv4 => &[("src", Ty::Ipv4), ("dst", Ty::Ipv4), ("ttl", Ty::U8), ("proto", Ty::U8)],
            LayerKind::Ipv6 => &[("src", Ty::Ipv6), ("dst", Ty::Ipv6), ("hop_limit", Ty::U8)],
            LayerKind::Udp | LayerKind::Tcp => &[("sport", Ty::U16), ("dport", Ty::U16)],
            LayerKind::Payload => &[],
        }
    }

    /// Where the layer sits in a frame, outermost first.
    fn rank(self) -> u8 {
        match self {
            LayerKind::Eth => 0,
            LayerKind::Vlan => 1,
            LayerKind::Ipv4 | LayerKind::Ipv6 => 2,
            LayerKind::Udp | LayerKind::Tcp => 3,
            LayerKind::Payload => 4,
        }
    }

    /// Whether this layer can appear somewhere after `earlier` in one frame
    /// (VLAN tags may follow each other; other layers appear once).
    pub fn may_come_after(self, earlier: LayerKind) -> bool {
        self.rank() > earlier.rank() || (self == LayerKind::Vlan && earlier == LayerKind::Vlan)
    }

    /// The layers that may come right after this one in a packet that is
    /// sent (a frame must make sense on the wire).
    pub fn may_follow(self, previous: Option<LayerKind>) -> bool {
        use LayerKind::*;
        match (previous, self) {
            (None, Eth) => true,
            (None, _) => false,
            (Some(Eth), Vlan | Ipv4 | Ipv6 | Payload) => true,
            (Some(Vlan), Vlan | Ipv4 | Ipv6 | Payload) => true,
            (Some(Ipv4 | Ipv6), Udp | Tcp | Payload) => true,
            (Some(Udp | Tcp), Payload) => true,
            _ => false,
        }
    }
}

/// Fields are written as in a spec (`"vlan.id"`) in the manifest.
impl serde::Serialize for Field {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.path())
    }
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        let path = <String as serde::Deserialize>::deserialize(d)?;
        Field::from_path(&path).ok_or_else(|| serde::de::Error::custom(format!("unknown field `{path}`")))
    }
}
