//! The data-path plan: what the generated C does (the *code* part) and what
//! the runtime writes into maps (the *data* part), with no spans.
//!
//! **Invariant:** the code part determines the generated C completely, and
//! nothing in the data part reaches C. Routes, device bindings and egress
//! arguments are data: changing them changes map entries, never the C. Each
//! part has a stable hash, so the runtime can tell a data-only change (apply
//! a diff of map operations) from a code change (load new programs and swap
//! them in).
//!
//! The IR is serialised as the build manifest; the runtime loads it without
//! ever seeing the spec.

use crate::fields::{Field, Ty};
use crate::model::{Access, Binding, Const, KeyValue, MissAction, PrefixValue, Stmt, XdpMode};
use serde::{Deserialize, Serialize};

/// The whole plan for one spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ir {
    /// The spec's file name (never a path: output must not depend on where
    /// the repo is checked out).
    pub spec: String,
    pub code: CodePlan,
    pub data: DataPlan,
}

/// Everything that shapes the generated C.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodePlan {
    pub key: KeyPlan,
    /// Entries of the key stage: the DEVMAP_HASH for a direct key, the hash
    /// or LPM trie for a lowered one.
    pub max_entries: u32,
    pub on_miss: MissAction,
    pub numa_node: Option<u32>,
    pub access: Access,
    pub counters: bool,
    pub groups: Vec<GroupPlan>,
    pub programs: Vec<ProgramPlan>,
}

impl CodePlan {
    /// The object's programs the runtime loads and pins: the ingress
    /// program, then each egress program (its devmap section).
    pub fn program_names(&self) -> Vec<String> {
        std::iter::once(names::INGRESS.to_string())
            .chain(self.programs.iter().map(|p| p.section_program.clone()))
            .collect()
    }
}

/// How the ingress program turns a packet into a lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyPlan {
    /// At most 32 bits: the value is the DEVMAP_HASH key itself. Fields are
    /// packed first field highest: `key = f1 << shift1 | f2 << shift2 ...`,
    /// each in host byte order, except IPv4 addresses, which keep their
    /// wire byte order (the four address bytes, loaded as a `__u32`); then
    /// the packed value goes through `mix` (see [`KeyMix`]).
    Direct {
        fields: Vec<DirectField>,
        /// Absent in manifests of builds that did not mix (their objects
        /// store the packed value as it is), and left out of the JSON then,
        /// so that their code hash reads back unchanged.
        #[serde(default, skip_serializing_if = "KeyMix::is_none")]
        mix: KeyMix,
    },
    /// Wider: a `BPF_MAP_TYPE_HASH` from the key bytes to a slot. Every
    /// field is stored in network byte order at its offset.
    Hashed { fields: Vec<HashedField>, size: u32 },
    /// `lpm(field)`: a `BPF_MAP_TYPE_LPM_TRIE` from `{prefixlen, address}`
    /// to a slot.
    Lpm { field: Field, address_bytes: u32 },
}

/// What a direct key goes through before it is the DEVMAP_HASH key.
///
/// The kernel does not hash DEVMAP_HASH keys: the bucket is
/// `key & (n_buckets - 1)`. Packed as they are, realistic tables would share
/// buckets (an IPv4 address in wire order has its *first* octets in the low
/// bits, so a /16 is one bucket; `(vlan.id, ip.proto)` has the protocol
/// there), and a lookup walks its bucket's list: a miss beside 64k adjacent
/// routes would cost microseconds. A bijective mix keeps keys exact and 4
/// bytes wide, so nothing else changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMix {
    /// The packed value is the key (objects built before keys were mixed).
    #[default]
    None,
    /// murmur3's 32-bit finaliser, [`fmix32`]: every input bit flips each
    /// output bit, the low ones included, with a probability near one half.
    Fmix32,
}

impl KeyMix {
    pub fn is_none(&self) -> bool {
        *self == KeyMix::None
    }

    /// The stored key of a packed value.
    pub fn apply(self, packed: u32) -> u32 {
        match self {
            KeyMix::None => packed,
            KeyMix::Fmix32 => fmix32(packed),
        }
    }

    /// The packed value of a stored key (for showing keys read back).
    pub fn invert(self, stored: u32) -> u32 {
        match self {
            KeyMix::None => stored,
            KeyMix::Fmix32 => fmix32_inverse(stored),
        }
    }
}

/// murmur3's `fmix32`, a bijection on `u32`. The generated C has the same
/// function (`devmapc_mix` in the template); the two must stay identical.
pub const fn fmix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^= x >> 16;
    x
}

/// The inverse of [`fmix32`]: each step undone in reverse order.
pub const fn fmix32_inverse(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(odd_inverse(0xc2b2_ae35));
    x ^= (x >> 13) ^ (x >> 26);
    x = x.wrapping_mul(odd_inverse(0x85eb_ca6b));
    x ^= x >> 16;
    x
}

/// The multiplicative inverse of an odd number modulo 2^32 (Newton's
/// iteration doubles the correct low bits each step: 3, 6, 12, 24, 48).
const fn odd_inverse(a: u32) -> u32 {
    let mut x = a;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u32.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectField {
    pub field: Field,
    pub shift: u32,
    pub bits: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedField {
    pub field: Field,
    pub offset: u32,
    pub size: u32,
}

impl KeyPlan {
    pub fn fields(&self) -> Vec<Field> {
        match self {
            KeyPlan::Direct { fields, .. } => fields.iter().map(|f| f.field).collect(),
            KeyPlan::Hashed { fields, .. } => fields.iter().map(|f| f.field).collect(),
            KeyPlan::Lpm { field, .. } => vec![*field],
        }
    }

    /// Whether lookups go through a slot (a hash or trie in front of the
    /// DEVMAP_HASH).
    pub fn uses_slots(&self) -> bool {
        !matches!(self, KeyPlan::Direct { .. })
    }

    /// A direct key as read back from a map, un-mixed: the packed value the
    /// ingress program computed from the packet (`None` for other plans or
    /// a key that is not 4 bytes).
    pub fn packed_of_stored(&self, stored: &[u8]) -> Option<u32> {
        match self {
            KeyPlan::Direct { mix, .. } => Some(mix.invert(u32::from_ne_bytes(stored.try_into().ok()?))),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlan {
    pub name: String,
    /// The spec line the group is declared on.
    pub line: u32,
    /// The name of its DEVMAP_HASH in the object.
    pub map: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramPlan {
    pub name: String,
    /// The `SEC("xdp/devmap")` program in the object.
    pub section_program: String,
    /// Its plain-XDP twin, for PROG_TEST_RUN.
    pub twin_program: String,
    /// The per-device argument map (HASH from egress ifindex to the
    /// argument struct).
    pub args_map: String,
    pub params: Vec<ParamPlan>,
    /// Whether the program reads `egress.mac` (stored with the arguments).
    pub uses_egress_mac: bool,
    /// Where the runtime writes the egress device's MAC in the argument
    /// struct, when the program reads it.
    pub egress_mac_offset: Option<u32>,
    /// Byte layout of the argument struct, as the runtime must write it.
    pub args_size: u32,
    #[serde(skip)]
    pub body: Vec<Stmt>,
    /// The spec line the program is declared on.
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamPlan {
    pub name: String,
    pub ty: ParamType,
    /// Offset in the argument struct.
    pub offset: u32,
}

/// A parameter type, as stored in the argument struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    U8,
    U16,
    U32,
    Mac,
    Ipv4,
    Ipv6,
}

impl ParamType {
    pub fn from_ty(ty: Ty) -> ParamType {
        match ty {
            Ty::Uint { max } if max <= 0xff => ParamType::U8,
            Ty::Uint { max } if max <= 0xffff => ParamType::U16,
            Ty::Uint { .. } => ParamType::U32,
            Ty::Mac => ParamType::Mac,
            Ty::Ipv4 => ParamType::Ipv4,
            Ty::Ipv6 | Ty::Device => ParamType::Ipv6,
        }
    }

    pub fn size(self) -> u32 {
        match self {
            ParamType::U8 => 1,
            ParamType::U16 => 2,
            ParamType::U32 | ParamType::Ipv4 => 4,
            ParamType::Mac => 6,
            ParamType::Ipv6 => 16,
        }
    }

    /// C alignment, so that the runtime's layout matches the struct's.
    pub fn align(self) -> u32 {
        match self {
            ParamType::U8 | ParamType::Mac | ParamType::Ipv6 => 1,
            ParamType::U16 => 2,
            ParamType::U32 | ParamType::Ipv4 => 4,
        }
    }
}

/// What the runtime writes into maps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataPlan {
    /// How the ingress program is attached (not code: no C depends on it).
    pub xdp_mode: XdpMode,
    pub devices: Vec<DeviceData>,
    pub routes: Vec<RouteData>,
    pub default_route: Option<TargetRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceData {
    pub name: String,
    pub binding: Binding,
    /// Index into `CodePlan::programs`.
    pub program: Option<usize>,
    pub args: Vec<Const>,
    /// Whether the ingress program is attached to it.
    pub ingress: bool,
    /// Indices into `CodePlan::groups` of the groups it is a member of.
    pub groups: Vec<usize>,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteData {
    /// The key, typed; [`encode_key`] gives the bytes the map stores.
    pub key: KeyValue,
    /// The key as the spec wrote it, for `status` and error messages.
    pub text: String,
    pub target: TargetRef,
    pub line: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum TargetRef {
    /// Index into `DataPlan::devices`.
    Device(usize),
    /// Index into `CodePlan::groups`.
    Group(usize),
}

/// Names of the maps and programs in every generated object (per-group and
/// per-program names are in [`GroupPlan`] and [`ProgramPlan`]).
pub mod names {
    /// Direct keys: the DEVMAP_HASH from the packet's key.
    pub const ROUTES: &str = "devmapc_routes";
    /// Direct keys with groups: keys routed to a group → the group's slot.
    pub const GROUP_KEYS: &str = "devmapc_group_keys";
    /// Direct keys with counters: per-key packet and byte counters.
    pub const KEY_COUNTERS: &str = "devmapc_key_counters";
    /// Lowered keys: the hash or LPM trie from the key to a slot.
    pub const KEYS: &str = "devmapc_keys";
    /// Device slots → `{ifindex, egress program}`.
    pub const SLOTS: &str = "devmapc_slots";
    /// The slot of `route default` (index 0), or 0.
    pub const DEFAULT: &str = "devmapc_default";
    /// Per-slot counters; slot 0 counts misses.
    pub const COUNTERS: &str = "devmapc_counters";
    /// Per-group counters.
    pub const GROUP_COUNTERS: &str = "devmapc_group_counters";
    /// The ingress program.
    pub const INGRESS: &str = "devmapc_ingress";
    /// The global that tells plain-XDP twins which egress ifindex they act
    /// for.
    pub const TWIN_IFINDEX: &str = "devmapc_twin_ifindex";
}

/// Slot values, as stored by the key stage and in the default-route map:
/// `0` means "no target", a device is `1 + its index`, a group has the high
/// bit set.
///
/// Slots are DEVMAP_HASH keys (`devmapc_slots`, the group maps) but are not
/// mixed like direct keys: the runtime numbers devices 1, 2, 3... and a
/// spec has fewer than `MAX_SLOTS` (1024) of them, the maps' size, so
/// `slot & 1023` already gives every slot a bucket of its own.
pub const SLOT_NONE: u32 = 0;
pub const SLOT_GROUP_BIT: u32 = 0x8000_0000;

impl TargetRef {
    pub fn slot(self) -> u32 {
        match self {
            TargetRef::Device(i) => 1 + i as u32,
            TargetRef::Group(g) => SLOT_GROUP_BIT | g as u32,
        }
    }
}

/// FNV-1a, 64 bits: a stable hash that does not depend on the platform or
/// the Rust version (unlike `DefaultHasher`).
pub fn stable_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

impl Ir {
    /// The hash of the code part: equal hashes mean the same programs and
    /// maps. Spec line numbers are left out: they only appear in comments
    /// of the C, and adding a route above a program must not make the
    /// runtime reload code.
    pub fn code_hash(&self) -> String {
        let mut code = self.code.clone();
        code.programs.iter_mut().for_each(|p| p.line = 0);
        code.groups.iter_mut().for_each(|g| g.line = 0);
        let mut json = serde_json::to_vec(&code).expect("the IR serialises");
        // Bodies are not serialised in the manifest; hash their structure.
        for p in &self.code.programs {
            json.extend(format!("{:?}", p.body).bytes());
        }
        stable_hash(&json)
    }

    /// The hash of the data part: what the maps hold, and nothing of how
    /// the spec says it. Lines, the text a key was written as (`0x10` or
    /// `16`), and the order of the routes leave it alone, so comments and
    /// layout do not count; every key, target, device binding, argument,
    /// group membership, ingress device and the XDP mode do. (The order of
    /// devices counts: device `i` is slot `1 + i`.)
    pub fn data_hash(&self) -> String {
        let mut data = self.data.clone();
        data.devices.iter_mut().for_each(|d| d.line = 0);
        for r in &mut data.routes {
            r.line = 0;
            r.text.clear();
        }
        let mut routes: Vec<Vec<u8>> =
            data.routes.iter().map(|r| serde_json::to_vec(r).expect("the IR serialises")).collect();
        routes.sort();
        data.routes.clear();
        let mut bytes = serde_json::to_vec(&data).expect("the IR serialises");
        for r in routes {
            bytes.push(b'\n');
            bytes.extend(r);
        }
        stable_hash(&bytes)
    }
}

/// Why a route key cannot be encoded at load time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The key names a device whose ifindex is not known.
    UnresolvedDevice(usize),
    /// The key does not have the shape of the plan (a bug or a stale
    /// manifest).
    Shape,
}

/// The bytes a route key is stored as in the key stage's map. `ifindex`
/// resolves a device (for `ingress.port` keys) at load time.
pub fn encode_key(
    plan: &KeyPlan,
    key: &KeyValue,
    ifindex: &dyn Fn(usize) -> Option<u32>,
) -> Result<Vec<u8>, EncodeError> {
    let parts: Vec<&KeyValue> = match key {
        KeyValue::Composite(parts) => parts.iter().collect(),
        single => vec![single],
    };
    match plan {
        KeyPlan::Direct { fields, mix } => {
            if fields.len() != parts.len() {
                return Err(EncodeError::Shape);
            }
            Ok(mix.apply(pack_direct(fields, &parts, ifindex)?).to_ne_bytes().to_vec())
        }
        KeyPlan::Hashed { fields, size } => {
            if fields.len() != parts.len() {
                return Err(EncodeError::Shape);
            }
            let mut bytes = vec![0u8; *size as usize];
            for (f, part) in fields.iter().zip(parts) {
                let at = f.offset as usize;
                let field_bytes: Vec<u8> = match part {
                    KeyValue::Const(Const::Mac(m)) => m.to_vec(),
                    KeyValue::Const(Const::Ipv4(a)) => a.octets().to_vec(),
                    KeyValue::Const(Const::Ipv6(a)) => a.octets().to_vec(),
                    other => {
                        let v = scalar(other, ifindex)?;
                        v.to_be_bytes()[8 - f.size as usize..].to_vec()
                    }
                };
                if field_bytes.len() != f.size as usize {
                    return Err(EncodeError::Shape);
                }
                bytes[at..at + field_bytes.len()].copy_from_slice(&field_bytes);
            }
            Ok(bytes)
        }
        KeyPlan::Lpm { address_bytes, .. } => {
            let (len, addr): (u8, Vec<u8>) = match parts.as_slice() {
                [KeyValue::Prefix(PrefixValue::V4(a, l))] if *address_bytes == 4 => (*l, a.octets().to_vec()),
                [KeyValue::Prefix(PrefixValue::V6(a, l))] if *address_bytes == 16 => {
                    (*l, a.octets().to_vec())
                }
                _ => return Err(EncodeError::Shape),
            };
            let mut bytes = u32::from(len).to_ne_bytes().to_vec();
            bytes.extend(addr);
            Ok(bytes)
        }
    }
}

/// A direct key's fields packed into the `__u32` the ingress program
/// computes before the mix.
fn pack_direct(
    fields: &[DirectField],
    parts: &[&KeyValue],
    ifindex: &dyn Fn(usize) -> Option<u32>,
) -> Result<u32, EncodeError> {
    if let ([f], [KeyValue::Const(Const::Ipv4(addr))]) = (fields, parts) {
        debug_assert!(f.field.key_bits() == Some(32));
        // Loaded straight from the packet: wire byte order.
        return Ok(u32::from_ne_bytes(addr.octets()));
    }
    let mut value: u32 = 0;
    for (f, part) in fields.iter().zip(parts) {
        let v = scalar(part, ifindex)? as u32;
        value |= v.checked_shl(f.shift).unwrap_or(0);
    }
    Ok(value)
}

/// An integer key part: a number, or a device's ifindex.
fn scalar(part: &KeyValue, ifindex: &dyn Fn(usize) -> Option<u32>) -> Result<u64, EncodeError> {
    match part {
        KeyValue::Const(Const::Uint(n)) => Ok(*n),
        KeyValue::Device(d) => ifindex(*d).map(u64::from).ok_or(EncodeError::UnresolvedDevice(*d)),
        _ => Err(EncodeError::Shape),
    }
}
