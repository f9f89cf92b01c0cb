//! Planning a change of data: the map entries a plan needs, the operations
//! that take the kernel from one set of entries to another in an order that
//! is safe while packets flow, and their execution with rollback.
//!
//! ```text
//! State::fresh(ir)                 the maps of a freshly loaded object
//! desired(ir, devices) -> State    every entry the data plan needs (what fill writes)
//! read_state(handles, ir) -> State what the kernel holds, read back
//! diff(old, new) -> Plan           the operations, ordered; Display for --dry-run
//! check_capacity(old, &plan)       no step overfills a map (else E2BIG midway)
//! execute(handles, &plan)          one bpf() call per operation, undone on failure
//! ```
//!
//! Filling a freshly loaded object is `execute(diff(State::fresh(ir),
//! desired(ir, devices)))`; a data change is `execute(diff(old, new))`, where
//! `old` is best [`read_state`] (the kernel's truth, labelled with
//! [`State::relabel`] from the previous plan's [`desired`]).
//!
//! # The model
//!
//! A [`State`] is, per map, the entries by key bytes. Values are what the
//! kernel stores, kept symbolic where the bytes are only known at execution
//! or are not part of the plan ([`Value`]): a devmap value names its egress
//! program (the fd exists only once loaded; a lookup returns the program's
//! id), a key-stage value is a slot, a per-CPU counter is only present. Each
//! entry carries a `why`, the spec item it comes from; like spans in the
//! compiler, `why` never takes part in equality.
//!
//! # Ordering
//!
//! The kernel offers no transaction and DEVMAP_HASH no batch operation
//! (docs/kernel.md), so a change is a sequence of single-entry updates, each
//! visible to packets at once. Entries refer to each other:
//!
//! - a key-stage entry (`devmapc_keys`, `devmapc_group_keys`,
//!   `devmapc_default`) holds a slot: a device slot in `devmapc_slots`, or
//!   a group (its whole `devmapc_group_<name>` map);
//! - a devmap value (`devmapc_routes`, `devmapc_slots`, group members) with
//!   an egress program makes that program read the argument entry of the
//!   egress ifindex in its `devmapc_args_<program>`;
//! - a `devmapc_routes` entry is counted in `devmapc_key_counters` under the
//!   same key (the data path only adds to existing counter entries).
//!
//! [`diff`] orders the operations by stages (the order `fill` writes in):
//!
//! | stage | operations |
//! |---|---|
//! | 0 | keys that leave the table removed, with their counters (rule 4) |
//! | 1 | argument entries added or changed |
//! | 2 | key counters added |
//! | 3 | device slots and group members added or changed |
//! | 4 | key-stage entries (routes) added or changed |
//! | 5 | the default route changed |
//! | 6 | key-stage entries removed |
//! | 7 | key counters removed |
//! | 8 | device slots and group members removed |
//! | 9 | argument entries removed |
//!
//! and within a stage by map and key, except where four rules over
//! references and capacity demand otherwise (a topological sort, stages as
//! tie-break):
//!
//! 1. **An entry is written before anything is made to lead to it**, so no
//!    packet ever finds a reference to something missing, and a new route
//!    reaches its device only once the device has its new configuration.
//! 2. **An entry that is about to change or go is only changed or removed
//!    once every entry that leads to it and will stop doing so has moved
//!    away.** Removed entries are then never pointed at. A slot that
//!    changes device (devices are slots `1 + index`, so removing a device
//!    from the middle of the list renumbers the ones after it) is taken
//!    over only once the routes that followed the old device have moved.
//!    Entries that keep leading to a changed entry follow it in one step.
//! 3. **A direct key that moves between `devmapc_routes` and
//!    `devmapc_group_keys` is written in its new map before it leaves its
//!    old one** (the data path reads `devmapc_routes` first, so the key
//!    switches at one of the two operations and is never missing).
//!
//! 4. **A key that leaves the table is removed before anything is added**
//!    (a key in no key-stage map of the new state, and its counter after
//!    it): a table filled to `max_entries` then has room for the keys that
//!    arrive, and no map ever holds more than the larger of the two tables
//!    (the checker keeps each within `max_entries`). Nothing leads to a
//!    key-stage entry, so the removal touches no other key; the key itself
//!    already leads where it will (nothing). Only a change of the default
//!    route runs before it (a key that misses takes the default route),
//!    unless that change waits for the key to leave (rule 2). A key that
//!    stays, or moves between `devmapc_routes` and `devmapc_group_keys`, is
//!    not concerned: the first changes in place, the second follows rule 3
//!    (its new map holds only keys of the new table by then).
//!
//! Other maps can fill up too: devices that all move to new interfaces
//! need old and new argument entries (keyed by ifindex) side by side. So an
//! add into a map that is full at that point in the order waits for the
//! next removal from that map that the rules allow (a device's new
//! arguments, its slot, then its old arguments, one device at a time);
//! [`check_capacity`] refuses a plan that overfills a map all the same.
//!
//! "Leads to" is transitive: a route leads to its slot and to the argument
//! entry of the slot's device. So a route that goes is removed *before* the
//! arguments of its device change, not after: otherwise it would briefly
//! send packets out with a configuration of neither spec (the VLAN tag of
//! another tenant). Rule 1 looks into groups (a group's members and their
//! arguments are in place before a key leads to it); rule 2 does not,
//! because a group changes one member at a time whatever the order: while
//! members change (or are renumbered) a broadcast may reach one device
//! twice or miss one.
//!
//! Together: at every step every key leads either to exactly what it led to
//! before (device, egress program, arguments) or to exactly what it leads
//! to after (nothing, for a key added or removed), and nothing points at a
//! missing entry; a key that stays is changed in place (one `Replace`) and
//! never disappears. Removals of keys that leave come first (rule 4);
//! other removals come after all adds and changes unless an add or a change
//! waits for one (rule 2).
//!
//! The rules contradict each other only in a cycle: two devices trade slots
//! (reordered in the spec) or interfaces, or two routes trade devices whose
//! arguments change in the same apply. No order of single-entry updates
//! then keeps every key exact; the plan changes the earliest entry of the
//! cycle anyway (still never pointing at anything missing) and says so in
//! [`Plan::warnings`]: for the moment between two operations, some routes
//! reach the other device or configuration.
//!
//! Counter entries are added for new keys and removed with their keys; a
//! kept key's counter is never touched ([`Value::Counter`] values are all
//! equal).
//!
//! # Execution
//!
//! [`execute`] makes one `bpf()` call per operation: an add with
//! `BPF_NOEXIST` (an array entry always exists: `BPF_ANY`), so it never
//! silently overwrites an entry the plan did not know about; a change with
//! `BPF_EXIST` (which on a DEVMAP_HASH inserts a missing key instead of
//! failing: docs/kernel.md); a removal with
//! `BPF_MAP_DELETE_ELEM`. On the first failure it undoes what it did, in
//! reverse (an add by a removal, a change by writing the old value back, a
//! removal by putting the entry back; a removed counter comes back with the
//! counts it had), and the error names the operation, the map and the
//! kernel's errno.

use crate::fill::{encode_args, Device};
use devmapc::ir::{encode_key, names, Ir, KeyPlan, TargetRef, SLOT_GROUP_BIT, SLOT_NONE};
use devmapc::render::MAX_SLOTS;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, Object};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

// ------------------------------------------------------------------- values

/// A devmap value (`struct bpf_devmap_val`) as planned: the egress device
/// and the egress program by name. The program's fd is only known in the
/// loaded object, and a lookup returns its id: [`execute`] renders the fd,
/// [`read_state`] turns the id back into the name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevmapVal {
    pub ifindex: u32,
    /// The `SEC("xdp/devmap")` program (`devmapc_egress_<name>`), if any.
    /// Read back, a program that is none of the object's is `id:<N>`.
    pub program: Option<String>,
}

/// A map value, as the kernel stores it or symbolically where the bytes
/// are only known at execution.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// Bytes as stored: an egress program's argument struct.
    Bytes(Vec<u8>),
    /// A slot (`__u32` in host order): the key stage's and the default
    /// route's values. 0 is none, a group has [`SLOT_GROUP_BIT`].
    Slot(u32),
    /// A devmap value: routes of a direct key, device slots, group members.
    Devmap(DevmapVal),
    /// A per-CPU `{packets, bytes}` counter: written as zeros, otherwise
    /// only its presence is planned, so a kept key's counts are never reset.
    Counter,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bytes(b) => write!(f, "bytes {}", hex(b)),
            Value::Slot(SLOT_NONE) => f.write_str("no target"),
            Value::Slot(s) if s & SLOT_GROUP_BIT != 0 => {
                write!(f, "group #{}", s & !SLOT_GROUP_BIT)
            }
            Value::Slot(s) => write!(f, "slot {s}"),
            Value::Devmap(DevmapVal { ifindex, program: None }) => write!(f, "ifindex {ifindex}"),
            Value::Devmap(DevmapVal { ifindex, program: Some(p) }) => {
                write!(f, "ifindex {ifindex} + egress {}", p.strip_prefix("devmapc_egress_").unwrap_or(p))
            }
            Value::Counter => f.write_str("counter"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key found in a key-stage map: a direct key un-mixed, so that it reads
/// as the packet's value (an IPv4 address's bytes, a VLAN id...), not as
/// the mixed number the map stores.
fn read_back_key(plan: &KeyPlan, stored: &[u8]) -> String {
    match plan.packed_of_stored(stored) {
        Some(packed) if packed.to_ne_bytes() != stored => {
            format!("key {} (read back, stored as {})", hex(&packed.to_ne_bytes()), hex(stored))
        }
        _ => format!("key {} (read back)", hex(stored)),
    }
}

// -------------------------------------------------------------------- state

/// What a map is to the plan: decides what its values refer to and when
/// its operations run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// `devmapc_args_<name>`: egress ifindex → argument struct of the
    /// egress program `program` (its section program's name).
    Args { program: String },
    /// `devmapc_key_counters`: a direct key → its counter.
    Counters,
    /// `devmapc_slots`: device slot → devmap value.
    Slots,
    /// `devmapc_group_<name>`: member slot → devmap value; `slot` is the
    /// group's own slot (with [`SLOT_GROUP_BIT`]).
    Group { slot: u32 },
    /// The key stage: `devmapc_routes` (devmap values), `devmapc_group_keys`
    /// and `devmapc_keys` (slots).
    Keys,
    /// `devmapc_default`, an array whose one entry always exists.
    Default,
}

/// One entry: its value and the spec item it comes from.
#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Value,
    /// "route 100 -> red (line 52)", "device red: slot", ...
    pub why: String,
}

/// Entries are equal when the kernel would hold the same thing: `why` is an
/// explanation, not content.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// One map of a [`State`].
#[derive(Clone, Debug)]
pub struct MapState {
    pub role: Role,
    /// The map's capacity (only checked by [`desired`]).
    pub max_entries: u32,
    pub entries: BTreeMap<Vec<u8>, Entry>,
}

/// Two maps are equal when they have the same role and entries.
impl PartialEq for MapState {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role && self.entries == other.entries
    }
}

/// The entries of every map the data plan writes, by map name and key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub maps: BTreeMap<String, MapState>,
}

/// A reference from one entry to another (`key: None`: a whole group map).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Ref {
    map: String,
    key: Option<Vec<u8>>,
}

/// Where a state's references lead, by role.
#[derive(Default)]
struct Index<'a> {
    slots: Option<&'a str>,
    counters: Option<&'a str>,
    args: HashMap<&'a str, &'a str>,
    groups: HashMap<u32, &'a str>,
}

impl State {
    /// The maps of a freshly loaded object for `ir`: all empty but
    /// `devmapc_default`, an array, whose entry holds slot 0.
    pub fn fresh(ir: &Ir) -> State {
        let code = &ir.code;
        let mut maps = BTreeMap::new();
        let mut add = |name: &str, role: Role, max_entries: u32| {
            maps.insert(name.to_string(), MapState { role, max_entries, entries: BTreeMap::new() });
        };
        for p in &code.programs {
            add(&p.args_map, Role::Args { program: p.section_program.clone() }, MAX_SLOTS);
        }
        match code.key {
            KeyPlan::Direct { .. } => {
                add(names::ROUTES, Role::Keys, code.max_entries);
                if !code.groups.is_empty() {
                    add(names::GROUP_KEYS, Role::Keys, code.max_entries);
                }
                if code.counters {
                    add(names::KEY_COUNTERS, Role::Counters, code.max_entries);
                }
            }
            _ => add(names::KEYS, Role::Keys, code.max_entries),
        }
        add(names::SLOTS, Role::Slots, MAX_SLOTS);
        add(names::DEFAULT, Role::Default, 1);
        for (g, group) in code.groups.iter().enumerate() {
            add(&group.map, Role::Group { slot: TargetRef::Group(g).slot() }, MAX_SLOTS);
        }
        let mut state = State { maps };
        let default = state.maps.get_mut(names::DEFAULT).expect("just added");
        default.entries.insert(
            0u32.to_ne_bytes().to_vec(),
            Entry { value: Value::Slot(SLOT_NONE), why: "default route: none".into() },
        );
        state
    }

    /// The entry of `map` at `key`.
    pub fn get(&self, map: &str, key: &[u8]) -> Option<&Entry> {
        self.maps.get(map)?.entries.get(key)
    }

    /// Entries in all maps.
    pub fn len(&self) -> usize {
        self.maps.values().map(|m| m.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the `why` of every entry that `labels` has at the same map and
    /// key: a state read back from the kernel, labelled by the plan it was
    /// written from.
    pub fn relabel(&mut self, labels: &State) {
        for (name, map) in &mut self.maps {
            let Some(theirs) = labels.maps.get(name) else {
                continue;
            };
            for (key, entry) in &mut map.entries {
                if let Some(label) = theirs.entries.get(key) {
                    entry.why.clone_from(&label.why);
                }
            }
        }
    }

    /// Every reference that leads nowhere, described: empty for a state the
    /// data path can run on. (A plan's every step is such a state.)
    pub fn dangling(&self) -> Vec<String> {
        let index = self.index();
        let mut found = Vec::new();
        for (name, map) in &self.maps {
            for (key, entry) in &map.entries {
                for r in self.refs(&index, name, key, &entry.value) {
                    let there = match &r.key {
                        Some(k) => self.get(&r.map, k).is_some(),
                        None => self.maps.contains_key(&r.map),
                    };
                    if !there {
                        found.push(format!(
                            "{name}: `{}` ({}) points at {}{}, which is missing",
                            entry.why,
                            entry.value,
                            r.map,
                            r.key.as_deref().map(|k| format!(" key {}", hex(k))).unwrap_or_default()
                        ));
                    }
                }
            }
        }
        // A value whose target map is not even planned.
        for (name, map) in &self.maps {
            for entry in map.entries.values() {
                match &entry.value {
                    Value::Devmap(DevmapVal { program: Some(p), .. })
                        if !index.args.contains_key(p.as_str()) =>
                    {
                        found.push(format!(
                            "{name}: `{}` names egress program {p}, which has no argument map",
                            entry.why
                        ));
                    }
                    Value::Slot(s) if *s & SLOT_GROUP_BIT != 0 && !index.groups.contains_key(s) => {
                        found.push(format!(
                            "{name}: `{}` names group slot {s:#x}, which is no group",
                            entry.why
                        ));
                    }
                    _ => {}
                }
            }
        }
        found
    }

    /// Applies one operation to the model, as [`execute`] does to the
    /// kernel, and as strictly: an add of a present key, an add to a full
    /// map (the kernel's E2BIG), or a change or removal whose old value is
    /// not the present one, is refused.
    pub fn apply_op(&mut self, op: &MapOp) -> Result<(), String> {
        let map = self.maps.get_mut(&op.map).ok_or_else(|| format!("no map {}", op.map))?;
        let present = map.entries.get(&op.key).map(|e| &e.value);
        match &op.op {
            Op::Insert(value) => {
                if present.is_some() {
                    return Err(format!("{op}: the key is present"));
                }
                if map.entries.len() >= map.max_entries as usize {
                    return Err(format!("{op}: the map is full ({} entries)", map.max_entries));
                }
                map.entries.insert(op.key.clone(), Entry { value: value.clone(), why: op.why.clone() });
            }
            Op::Replace { old, new } => {
                if present != Some(old) {
                    return Err(format!("{op}: holds {present:?}, not {old:?}"));
                }
                map.entries.insert(op.key.clone(), Entry { value: new.clone(), why: op.why.clone() });
            }
            Op::Delete { old } => {
                if present != Some(old) {
                    return Err(format!("{op}: holds {present:?}, not {old:?}"));
                }
                map.entries.remove(&op.key);
            }
        }
        Ok(())
    }

    fn index(&self) -> Index<'_> {
        let mut index = Index::default();
        for (name, map) in &self.maps {
            match &map.role {
                Role::Slots => index.slots = Some(name),
                Role::Counters => index.counters = Some(name),
                Role::Args { program } => {
                    index.args.insert(program, name);
                }
                Role::Group { slot } => {
                    index.groups.insert(*slot, name);
                }
                Role::Keys | Role::Default => {}
            }
        }
        index
    }

    /// What the entry `map[key] = value` points at in this state.
    fn refs(&self, index: &Index<'_>, map: &str, key: &[u8], value: &Value) -> Vec<Ref> {
        let mut refs = Vec::new();
        match value {
            Value::Devmap(d) => {
                if let Some(args) = d.program.as_deref().and_then(|p| index.args.get(p)) {
                    refs.push(Ref { map: args.to_string(), key: Some(d.ifindex.to_ne_bytes().to_vec()) });
                }
                let in_key_stage = self.maps.get(map).is_some_and(|m| m.role == Role::Keys);
                if let (true, Some(counters)) = (in_key_stage, index.counters) {
                    refs.push(Ref { map: counters.to_string(), key: Some(key.to_vec()) });
                }
            }
            Value::Slot(SLOT_NONE) => {}
            Value::Slot(s) if s & SLOT_GROUP_BIT != 0 => {
                if let Some(group) = index.groups.get(s) {
                    refs.push(Ref { map: group.to_string(), key: None });
                }
            }
            Value::Slot(s) => {
                if let Some(slots) = index.slots {
                    refs.push(Ref { map: slots.to_string(), key: Some(s.to_ne_bytes().to_vec()) });
                }
            }
            Value::Bytes(_) | Value::Counter => {}
        }
        refs
    }

    /// Everything the entry `map[key] = value` leads to in this state,
    /// transitively (a route to a slot, the slot's argument entry; a route
    /// to a group, the group's map and, `through_groups`, its members and
    /// their arguments).
    fn closure(
        &self,
        index: &Index<'_>,
        map: &str,
        key: &[u8],
        value: &Value,
        through_groups: bool,
    ) -> Vec<Ref> {
        let mut out: Vec<Ref> = Vec::new();
        let mut todo = self.refs(index, map, key, value);
        while let Some(r) = todo.pop() {
            if out.contains(&r) {
                continue;
            }
            match &r.key {
                Some(k) => {
                    if let Some(e) = self.get(&r.map, k) {
                        todo.extend(self.refs(index, &r.map, k, &e.value));
                    }
                }
                None if !through_groups => {}
                None => {
                    if let Some(m) = self.maps.get(&r.map) {
                        todo.extend(
                            m.entries.keys().map(|k| Ref { map: r.map.clone(), key: Some(k.clone()) }),
                        );
                    }
                }
            }
            out.push(r);
        }
        out
    }

    /// Adds an entry of `desired`; the same value twice is one entry, two
    /// values for one key are a conflict.
    fn put(&mut self, map: &str, key: Vec<u8>, value: Value, why: String) -> Result<(), PlanError> {
        let m = self.maps.get_mut(map).ok_or_else(|| {
            PlanError::Mismatch(format!("the plan writes map {map}, which its code part does not have"))
        })?;
        match m.entries.get(&key) {
            Some(first) if first.value != value => {
                Err(PlanError::Conflict { map: map.into(), key, first: first.why.clone(), second: why })
            }
            Some(_) => Ok(()),
            None => {
                m.entries.insert(key, Entry { value, why });
                Ok(())
            }
        }
    }
}

// ------------------------------------------------------------------ desired

/// Why the entries of a plan cannot be computed or read.
#[derive(Debug)]
pub enum PlanError {
    /// The plan, the devices or the object do not go together.
    Mismatch(String),
    /// A route key cannot be encoded.
    Key { why: String, error: String },
    /// A device's egress arguments do not fit its program.
    Args { why: String, error: String },
    /// Two items of the plan write different values under one key (two
    /// devices resolved to the same ifindex with different arguments, ...).
    Conflict { map: String, key: Vec<u8>, first: String, second: String },
    /// More entries than the map holds.
    Full { map: String, entries: usize, max_entries: u32 },
    /// Reading a map back failed.
    Read { map: String, error: io::Error },
    /// Writing an entry failed ([`write_fresh`]).
    Write { map: String, what: String, error: io::Error },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Mismatch(what) => f.write_str(what),
            PlanError::Key { why, error } => write!(f, "cannot encode the key of {why}: {error}"),
            PlanError::Args { why, error } => write!(f, "cannot lay out the {why}: {error}"),
            PlanError::Conflict { map, key, first, second } => {
                write!(
                    f,
                    "{first} and {second} both write key {} of map {map}, with different values",
                    hex(key)
                )
            }
            PlanError::Full { map, entries, max_entries } => {
                write!(f, "map {map} holds {max_entries} entries, the plan needs {entries}")
            }
            PlanError::Read { map, error } => write!(f, "cannot read map {map} back: {error}"),
            PlanError::Write { map, what, error } => {
                write!(f, "cannot write {what} into map {map}: {error}")
            }
        }
    }
}

impl std::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlanError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Every entry the data part of `ir` needs, with `devices[i]` the kernel's
/// device `i` of the plan: what [`crate::fill()`] writes into a fresh object,
/// by executing `diff(State::fresh(ir), desired(..))`.
pub fn desired(ir: &Ir, devices: &[Device]) -> Result<State, PlanError> {
    let mut state = State::fresh(ir);
    emit(ir, devices, &mut |map, key, value, why| {
        if map == names::DEFAULT {
            // An array: its one entry always exists; the plan sets it.
            let default = state.maps.get_mut(names::DEFAULT).expect("State::fresh has it");
            default.entries.insert(key, Entry { value, why: why() });
            return Ok(());
        }
        state.put(map, key, value, why())
    })?;
    for (name, map) in &state.maps {
        if map.entries.len() > map.max_entries as usize {
            return Err(PlanError::Full {
                map: name.clone(),
                entries: map.entries.len(),
                max_entries: map.max_entries,
            });
        }
    }
    Ok(state)
}

/// Where [`emit`] hands entries: `(map, key, value, why)`, `why` formatting
/// the explanation on demand.
pub type Sink<'a> = dyn FnMut(&str, Vec<u8>, Value, &dyn Fn() -> String) -> Result<(), PlanError> + 'a;

/// Every entry of [`desired`], handed to `put(map, key, value, why)` one at
/// a time (`why` formats the explanation on demand), in an order that is
/// safe for filling a fresh object: arguments before the slot or group
/// member that uses them, every device before any route, a key's counter
/// before the key, the default route last. [`crate::fill()`] writes them
/// straight into the kernel; [`desired`] collects them.
pub fn emit(ir: &Ir, devices: &[Device], put: &mut Sink<'_>) -> Result<(), PlanError> {
    let (code, data) = (&ir.code, &ir.data);
    if devices.len() != data.devices.len() {
        let names: Vec<&str> = data.devices.iter().map(|d| d.name.as_str()).collect();
        return Err(PlanError::Mismatch(format!(
            "the plan has {} devices ({}), {} were resolved",
            data.devices.len(),
            names.join(", "),
            devices.len()
        )));
    }
    let program = |d: usize| -> Result<Option<&devmapc::ir::ProgramPlan>, PlanError> {
        match data.devices[d].program {
            None => Ok(None),
            Some(p) => code.programs.get(p).map(Some).ok_or_else(|| {
                PlanError::Mismatch(format!(
                    "device {} uses egress program #{p}, which the plan does not have",
                    data.devices[d].name
                ))
            }),
        }
    };
    let devmap = |d: usize| -> Result<Value, PlanError> {
        Ok(Value::Devmap(DevmapVal {
            ifindex: devices[d].ifindex,
            program: program(d)?.map(|p| p.section_program.clone()),
        }))
    };
    let target_name = |t: TargetRef| -> Result<&str, PlanError> {
        match t {
            TargetRef::Device(d) => data.devices.get(d).map(|d| d.name.as_str()),
            TargetRef::Group(g) => code.groups.get(g).map(|g| g.name.as_str()),
        }
        .ok_or_else(|| PlanError::Mismatch(format!("the plan routes to {t:?}, which it does not declare")))
    };

    for (d, device) in data.devices.iter().enumerate() {
        let ifindex = devices[d].ifindex.to_ne_bytes().to_vec();
        if let Some(plan) = program(d)? {
            let why = || format!("arguments of device {}", device.name);
            let bytes = encode_args(plan, &device.args, devices[d].mac)
                .map_err(|e| PlanError::Args { why: why(), error: e.0 })?;
            put(&plan.args_map, ifindex, Value::Bytes(bytes), &why)?;
        }
        let slot = TargetRef::Device(d).slot().to_ne_bytes().to_vec();
        put(names::SLOTS, slot.clone(), devmap(d)?, &|| format!("device {}: slot", device.name))?;
        for &g in &device.groups {
            let group = code.groups.get(g).ok_or_else(|| {
                PlanError::Mismatch(format!(
                    "device {} is in group #{g}, which the plan does not have",
                    device.name
                ))
            })?;
            put(&group.map, slot.clone(), devmap(d)?, &|| {
                format!("group {}: member {}", group.name, device.name)
            })?;
        }
    }

    let ifindex = |d: usize| devices.get(d).map(|dev| dev.ifindex);
    for route in &data.routes {
        let target = target_name(route.target)?;
        let why = || format!("route {} -> {target} (line {})", route.text, route.line);
        let key = encode_key(&code.key, &route.key, &ifindex)
            .map_err(|e| PlanError::Key { why: why(), error: format!("{e:?}") })?;
        match (&code.key, route.target) {
            (KeyPlan::Direct { .. }, TargetRef::Device(d)) => {
                if code.counters {
                    put(names::KEY_COUNTERS, key.clone(), Value::Counter, &|| format!("{}: counter", why()))?;
                }
                put(names::ROUTES, key, devmap(d)?, &why)?;
            }
            (KeyPlan::Direct { .. }, target) => {
                put(names::GROUP_KEYS, key, Value::Slot(target.slot()), &why)?
            }
            (_, target) => put(names::KEYS, key, Value::Slot(target.slot()), &why)?,
        }
    }

    let (slot, target) = match data.default_route {
        Some(t) => (t.slot(), Some(target_name(t)?)),
        None => (SLOT_NONE, None),
    };
    put(names::DEFAULT, 0u32.to_ne_bytes().to_vec(), Value::Slot(slot), &|| match target {
        Some(t) => format!("default route -> {t}"),
        None => "default route: none".to_string(),
    })
}

/// The plan for a change of routes alone, without reading the kernel or
/// planning the routes that stay: when `old` and `new` have the same code
/// and the same devices (bindings, egress programs and arguments, groups),
/// resolved to the same `devices` on both sides, only routes and the default
/// route can differ, and `diff(desired(old), desired(new))` has operations
/// for those routes only. This computes exactly that plan from the routes
/// that differ (a key added, removed, or pointed elsewhere), in time
/// proportional to the table for the comparison and to the change for the
/// planning. `None` when anything but routes differs.
///
/// It trusts that the kernel holds `old`'s entries: [`crate::apply`] uses it
/// only after an apply that finished, with devices that did not change.
pub fn diff_routes(old: &Ir, new: &Ir, devices: &[Device]) -> Result<Option<Plan>, PlanError> {
    if old.code != new.code || old.data.devices != new.data.devices {
        return Ok(None);
    }
    // Routes equal at the same place at the start and at the end of both
    // lists are unchanged (a key appears once in a spec): an edit of a large
    // table then only hashes the few routes around it.
    let (o, n) = (&old.data.routes[..], &new.data.routes[..]);
    let same =
        |a: &devmapc::ir::RouteData, b: &devmapc::ir::RouteData| a.key == b.key && a.target == b.target;
    let start = o.iter().zip(n).take_while(|(a, b)| same(a, b)).count();
    let end = o[start..].iter().rev().zip(n[start..].iter().rev()).take_while(|(a, b)| same(a, b)).count();
    let (o, n) = (&o[start..o.len() - end], &n[start..n.len() - end]);
    let before: HashMap<&devmapc::model::KeyValue, TargetRef> =
        o.iter().map(|r| (&r.key, r.target)).collect();
    let after: HashMap<&devmapc::model::KeyValue, TargetRef> = n.iter().map(|r| (&r.key, r.target)).collect();
    let only = |ir: &Ir,
                routes: &[devmapc::ir::RouteData],
                other: &HashMap<&devmapc::model::KeyValue, TargetRef>| Ir {
        spec: ir.spec.clone(),
        code: ir.code.clone(),
        data: devmapc::ir::DataPlan {
            xdp_mode: ir.data.xdp_mode,
            devices: ir.data.devices.clone(),
            routes: routes.iter().filter(|r| other.get(&r.key) != Some(&r.target)).cloned().collect(),
            default_route: ir.data.default_route,
        },
    };
    let (old_changed, new_changed) = (only(old, o, &after), only(new, n, &before));
    // (The checker keeps a spec's routes within `max_entries`, and keys
    // that leave are removed first, so no map holds more than the larger
    // of the two tables at any step: no capacity to check here.)
    Ok(Some(diff(&desired(&old_changed, devices)?, &desired(&new_changed, devices)?)))
}

// --------------------------------------------------------------------- diff

/// What one operation does to its entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Insert(Value),
    Replace { old: Value, new: Value },
    Delete { old: Value },
}

impl Op {
    /// The value the entry holds afterwards.
    pub fn new_value(&self) -> Option<&Value> {
        match self {
            Op::Insert(v) | Op::Replace { new: v, .. } => Some(v),
            Op::Delete { .. } => None,
        }
    }

    /// The value the entry held before.
    pub fn old_value(&self) -> Option<&Value> {
        match self {
            Op::Replace { old: v, .. } | Op::Delete { old: v } => Some(v),
            Op::Insert(_) => None,
        }
    }
}

/// One entry to add, change or remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapOp {
    pub map: String,
    pub key: Vec<u8>,
    pub op: Op,
    /// The spec item: the new one for an add or a change, the old one for
    /// a removal.
    pub why: String,
}

impl MapOp {
    /// The operation that undoes this one.
    pub fn inverse(&self) -> MapOp {
        let op = match &self.op {
            Op::Insert(v) => Op::Delete { old: v.clone() },
            Op::Replace { old, new } => Op::Replace { old: new.clone(), new: old.clone() },
            Op::Delete { old } => Op::Insert(old.clone()),
        };
        MapOp { op, ..self.clone() }
    }

    /// "add", "change" or "remove".
    pub fn verb(&self) -> &'static str {
        match self.op {
            Op::Insert(_) => "add",
            Op::Replace { .. } => "change",
            Op::Delete { .. } => "remove",
        }
    }
}

impl fmt::Display for MapOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Insert(v) => write!(f, "+ {}  {}  [{v}]", self.map, self.why),
            Op::Replace { old, new } => write!(f, "~ {}  {}  [{old} => {new}]", self.map, self.why),
            Op::Delete { old } => write!(f, "- {}  {}  [{old}]", self.map, self.why),
        }
    }
}

/// The operations that take the maps from one state to another, in the
/// order they must run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<MapOp>,
    /// Moments where the plan cannot keep every route on its old or new
    /// target (devices trading slots or interfaces), said in words.
    pub warnings: Vec<String>,
}

/// How many entries a plan adds, changes and removes in one map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Counts per map, by map name.
    pub fn summary(&self) -> BTreeMap<String, Counts> {
        let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
        for op in &self.ops {
            let c = counts.entry(op.map.clone()).or_default();
            match op.op {
                Op::Insert(_) => c.added += 1,
                Op::Replace { .. } => c.changed += 1,
                Op::Delete { .. } => c.removed += 1,
            }
        }
        counts
    }

    /// Counts over all maps.
    pub fn totals(&self) -> Counts {
        self.summary().values().fold(Counts::default(), |t, c| Counts {
            added: t.added + c.added,
            changed: t.changed + c.changed,
            removed: t.removed + c.removed,
        })
    }
}

/// For `--dry-run`: the counts per map, then each operation in the order it
/// runs, then the warnings. Deterministic: the same states give the same
/// text.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ops.is_empty() {
            return f.write_str("no map entry to change\n");
        }
        let t = self.totals();
        let summary = self.summary();
        let ops = |n: usize| if n == 1 { "operation" } else { "operations" };
        writeln!(
            f,
            "{} map {} ({} added, {} changed, {} removed):",
            self.ops.len(),
            ops(self.ops.len()),
            t.added,
            t.changed,
            t.removed
        )?;
        let width = summary.keys().map(String::len).max().unwrap_or(0);
        for (map, c) in &summary {
            writeln!(
                f,
                "  {map:<width$}  {:>6} added {:>6} changed {:>6} removed",
                c.added, c.changed, c.removed
            )?;
        }
        writeln!(f, "in order:")?;
        let digits = self.ops.len().to_string().len();
        for (i, op) in self.ops.iter().enumerate() {
            let sign = match op.op {
                Op::Insert(_) => '+',
                Op::Replace { .. } => '~',
                Op::Delete { .. } => '-',
            };
            let values = match &op.op {
                Op::Insert(v) | Op::Delete { old: v } => v.to_string(),
                Op::Replace { old, new } => format!("{old} => {new}"),
            };
            writeln!(f, "  {:>digits$}. {sign} {:<width$}  {}  [{values}]", i + 1, op.map, op.why)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// When an operation runs, before the references are considered (the
/// table in the module's documentation; stage 0, keys that leave, is
/// decided by [`order`]).
fn stage(role: &Role, op: &Op) -> u8 {
    let write = !matches!(op, Op::Delete { .. });
    match (role, write) {
        (Role::Args { .. }, true) => 1,
        (Role::Counters, true) => 2,
        (Role::Slots | Role::Group { .. }, true) => 3,
        (Role::Keys, true) => 4,
        (Role::Default, true) => 5,
        (Role::Keys | Role::Default, false) => 6,
        (Role::Counters, false) => 7,
        (Role::Slots | Role::Group { .. }, false) => 8,
        (Role::Args { .. }, false) => 9,
    }
}

/// The operations that take the maps from `old` to `new`, ordered (see the
/// module's documentation). Both describe the maps of one object (the same
/// code part); a map missing on one side counts as empty there. Its size is
/// the number of entries that differ: `diff(s, s)` is empty, and changing
/// one route of a large table is one operation (two with its counter).
pub fn diff(old: &State, new: &State) -> Plan {
    let mut ops = Vec::new();
    let names: BTreeSet<&String> = old.maps.keys().chain(new.maps.keys()).collect();
    let none = BTreeMap::new();
    for name in names {
        let o = old.maps.get(name).map_or(&none, |m| &m.entries);
        let n = new.maps.get(name).map_or(&none, |m| &m.entries);
        let (mut o, mut n) = (o.iter().peekable(), n.iter().peekable());
        loop {
            let op = match (o.peek(), n.peek()) {
                (None, None) => break,
                (Some((ko, eo)), Some((kn, en))) if ko == kn => {
                    let op = (eo.value != en.value).then(|| {
                        (
                            (*kn).clone(),
                            Op::Replace { old: eo.value.clone(), new: en.value.clone() },
                            en.why.clone(),
                        )
                    });
                    o.next();
                    n.next();
                    op
                }
                (Some((ko, eo)), Some((kn, _))) if ko < kn => {
                    let op = Some(((*ko).clone(), Op::Delete { old: eo.value.clone() }, eo.why.clone()));
                    o.next();
                    op
                }
                (Some((ko, eo)), None) => {
                    let op = Some(((*ko).clone(), Op::Delete { old: eo.value.clone() }, eo.why.clone()));
                    o.next();
                    op
                }
                (_, Some((kn, en))) => {
                    let op = Some(((*kn).clone(), Op::Insert(en.value.clone()), en.why.clone()));
                    n.next();
                    op
                }
            };
            if let Some((key, op, why)) = op {
                ops.push(MapOp { map: name.clone(), key, op, why });
            }
        }
    }
    order(ops, old, new)
}

/// Checks that `plan`, run from `old`, never needs more entries in a map
/// than it holds: every add into a map that is full at that moment would
/// fail with E2BIG midway. `Full` names the map and the most entries it
/// would need. (Counts only: cheap for a large table.)
pub fn check_capacity(old: &State, plan: &Plan) -> Result<(), PlanError> {
    let mut sizes: HashMap<&str, (usize, usize)> =
        old.maps.iter().map(|(name, m)| (name.as_str(), (m.entries.len(), m.entries.len()))).collect();
    for op in &plan.ops {
        let Some((now, peak)) = sizes.get_mut(op.map.as_str()) else {
            continue;
        };
        match op.op {
            Op::Insert(_) => *now += 1,
            Op::Delete { .. } => *now = now.saturating_sub(1),
            Op::Replace { .. } => {}
        }
        *peak = (*peak).max(*now);
    }
    for (name, m) in &old.maps {
        let (_, peak) = sizes[name.as_str()];
        if m.role != Role::Default && peak > m.max_entries as usize {
            return Err(PlanError::Full { map: name.clone(), entries: peak, max_entries: m.max_entries });
        }
    }
    Ok(())
}

/// Orders operations: a topological sort over the two reference rules,
/// with (stage, map, key) as the tie-break; a cycle is broken at its
/// earliest change, with a warning.
fn order(ops: Vec<MapOp>, old: &State, new: &State) -> Plan {
    let n = ops.len();
    let (old_index, new_index) = (old.index(), new.index());
    let role = |op: &MapOp| {
        new.maps.get(&op.map).or_else(|| old.maps.get(&op.map)).map_or(Role::Keys, |m| m.role.clone())
    };

    // Nothing leaves anything (every operation writes, and what it
    // overwrites leads nowhere: filling a fresh object): rules 2 and 3 have
    // nothing to hold back, and every rule-1 edge goes from a lower stage to
    // a higher one, so the topological order is the tie-break order itself.
    // Sorting directly keeps filling a large table cheap.
    let leaves_nothing = ops.iter().all(|op| match &op.op {
        Op::Insert(_) => true,
        Op::Replace { old: v, .. } => old.closure(&old_index, &op.map, &op.key, v, false).is_empty(),
        Op::Delete { .. } => false,
    });
    if leaves_nothing {
        let roles: HashMap<&str, &Role> =
            old.maps.iter().chain(new.maps.iter()).map(|(name, m)| (name.as_str(), &m.role)).collect();
        let mut staged: Vec<(u8, MapOp)> = ops
            .into_iter()
            .map(|op| {
                let role = roles.get(op.map.as_str()).copied().unwrap_or(&Role::Keys);
                (stage(role, &op.op), op)
            })
            .collect();
        staged.sort_by(|(sa, a), (sb, b)| (sa, &a.map, &a.key).cmp(&(sb, &b.map, &b.key)));
        return Plan { ops: staged.into_iter().map(|(_, op)| op).collect(), warnings: Vec::new() };
    }

    let mut at: HashMap<(&str, &[u8]), usize> = HashMap::with_capacity(n);
    let mut by_map: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        at.insert((op.map.as_str(), op.key.as_slice()), i);
        by_map.entry(op.map.as_str()).or_default().push(i);
    }
    let targets = |r: &Ref| -> Vec<usize> {
        match &r.key {
            Some(k) => at.get(&(r.map.as_str(), k.as_slice())).copied().into_iter().collect(),
            None => by_map.get(r.map.as_str()).cloned().unwrap_or_default(),
        }
    };

    // succ[i]: (j, rule 2?) — i must run before j.
    let mut succ: Vec<Vec<(usize, bool)>> = vec![Vec::new(); n];
    let mut pending_writes = vec![0usize; n]; // rule 1 edges not yet satisfied
    let mut pending_leavers = vec![0usize; n]; // rule 2 edges not yet satisfied
    for (i, op) in ops.iter().enumerate() {
        // Rule 1 looks into groups (members are complete before a key
        // leads to the group); rule 2 does not, and does not hold a group's
        // members back for the keys that leave it: a group changes member
        // by member whatever the order, and such edges only make cycles.
        let new_refs =
            op.op.new_value().map(|v| new.closure(&new_index, &op.map, &op.key, v, true)).unwrap_or_default();
        let old_refs = op
            .op
            .old_value()
            .map(|v| old.closure(&old_index, &op.map, &op.key, v, false))
            .unwrap_or_default();
        for r in &new_refs {
            for j in targets(r) {
                if j != i && ops[j].op.new_value().is_some() {
                    succ[j].push((i, false));
                    pending_writes[i] += 1;
                }
            }
        }
        for r in old_refs.iter().filter(|r| r.key.is_some() && !new_refs.contains(r)) {
            for j in targets(r) {
                if j != i && ops[j].op.old_value().is_some() {
                    succ[i].push((j, true));
                    pending_leavers[j] += 1;
                }
            }
        }
    }

    // Rule 3: a direct key that moves between `devmapc_routes` and
    // `devmapc_group_keys` is written in its new map before it leaves its
    // old one (the data path reads `devmapc_routes` first, so it switches
    // at one of the two operations, and is never missing).
    let key_maps: BTreeSet<&str> = old
        .maps
        .iter()
        .chain(&new.maps)
        .filter(|(_, m)| m.role == Role::Keys)
        .map(|(name, _)| name.as_str())
        .collect();
    for (i, op) in ops.iter().enumerate() {
        if !matches!(op.op, Op::Delete { .. }) || !key_maps.contains(op.map.as_str()) {
            continue;
        }
        for other in key_maps.iter().filter(|m| **m != op.map) {
            if let Some(&j) = at.get(&(*other, op.key.as_slice())) {
                if ops[j].op.new_value().is_some() {
                    succ[j].push((i, false));
                    pending_writes[i] += 1;
                }
            }
        }
    }

    // Rule 4: keys that leave the table (in no key-stage map of `new`) and
    // their counters are removed before anything else: a table filled to
    // `max_entries` then has room for the keys that arrive. Nothing leads
    // to a key-stage entry, and a counter is only led to by its own key
    // (removed just before it, rule 2), so no reference dangles; a key
    // that leaves already leads where it will (nothing), and no other key
    // is touched.
    let departing: Vec<bool> = ops
        .iter()
        .map(|op| {
            matches!(op.op, Op::Delete { .. })
                && matches!(role(op), Role::Keys | Role::Counters)
                && !key_maps.iter().any(|m| new.get(m, &op.key).is_some())
        })
        .collect();
    // ... but after a change of the default route (as before this rule: a
    // key that misses takes the default route, so it reaches the new
    // default, not the old one), unless the default route itself waits
    // for that key to leave (rule 2 through a slot): no new cycle.
    if let Some(d) = (0..n).find(|&d| role(&ops[d]) == Role::Default) {
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, next) in succ.iter().enumerate() {
            for &(j, _) in next {
                preds[j].push(i);
            }
        }
        let mut before_d = vec![false; n];
        let mut todo = vec![d];
        while let Some(j) = todo.pop() {
            for &i in &preds[j] {
                if !before_d[i] {
                    before_d[i] = true;
                    todo.push(i);
                }
            }
        }
        for i in (0..n).filter(|&i| departing[i] && !before_d[i]) {
            succ[d].push((i, false));
            pending_writes[i] += 1;
        }
    }
    let mut by_rank: Vec<usize> = (0..n).collect();
    let stages: Vec<u8> = ops
        .iter()
        .zip(&departing)
        .map(|(op, &departs)| if departs { 0 } else { stage(&role(op), &op.op) })
        .collect();
    by_rank
        .sort_by(|&a, &b| (stages[a], &ops[a].map, &ops[a].key).cmp(&(stages[b], &ops[b].map, &ops[b].key)));
    let mut rank = vec![0usize; n];
    for (r, &i) in by_rank.iter().enumerate() {
        rank[i] = r;
    }

    // Removals that no add or change waits for, even indirectly, wait for
    // all of them: removals come last unless a reference needs one early,
    // or their key leaves the table.
    let mut early = vec![false; n];
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, next) in succ.iter().enumerate() {
        for &(j, _) in next {
            preds[j].push(i);
        }
    }
    let mut todo: Vec<usize> = (0..n).filter(|&i| ops[i].op.new_value().is_some() || departing[i]).collect();
    while let Some(i) = todo.pop() {
        if !early[i] {
            early[i] = true;
            todo.extend(preds[i].iter().copied());
        }
    }

    let mut heap: BinaryHeap<Reverse<usize>> = BinaryHeap::new();
    let mut later: BinaryHeap<Reverse<usize>> = BinaryHeap::new();
    let ready = |i: usize, heap: &mut BinaryHeap<Reverse<usize>>, later: &mut BinaryHeap<Reverse<usize>>| {
        if early[i] {
            heap.push(Reverse(rank[i]))
        } else {
            later.push(Reverse(rank[i]))
        }
    };
    for i in (0..n).filter(|&i| pending_writes[i] == 0 && pending_leavers[i] == 0) {
        ready(i, &mut heap, &mut later);
    }
    // Capacity: an add into a map that is full at that point waits for a
    // removal from it (one that is ready, or becomes so: a device's new
    // arguments, its slot, then its old arguments, one device at a time).
    // If none comes, the add runs anyway and `check_capacity` refuses it.
    let mut room: HashMap<&str, (usize, usize)> = old
        .maps
        .iter()
        .filter(|(_, m)| m.role != Role::Default)
        .map(|(name, m)| (name.as_str(), (m.entries.len(), m.max_entries as usize)))
        .collect();
    let mut blocked: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut overfull = false;
    let mut done = vec![false; n];
    let mut out: Vec<usize> = Vec::with_capacity(n);
    let mut warnings = Vec::new();
    loop {
        while let Some(Reverse(r)) = heap.pop().or_else(|| later.pop()) {
            let i = by_rank[r];
            if done[i] {
                continue;
            }
            if let Some((now, max)) = room.get_mut(ops[i].map.as_str()) {
                match ops[i].op {
                    Op::Insert(_) if *now >= *max && !overfull => {
                        blocked.entry(ops[i].map.as_str()).or_default().push(r);
                        continue;
                    }
                    Op::Insert(_) => *now += 1,
                    Op::Delete { .. } => {
                        *now = now.saturating_sub(1);
                        for r in blocked.remove(ops[i].map.as_str()).unwrap_or_default() {
                            heap.push(Reverse(r));
                        }
                    }
                    Op::Replace { .. } => {}
                }
            }
            done[i] = true;
            out.push(i);
            for &(j, leaver) in &succ[i] {
                if done[j] {
                    continue;
                }
                if leaver {
                    pending_leavers[j] -= 1;
                } else {
                    pending_writes[j] -= 1;
                }
                if pending_writes[j] == 0 && pending_leavers[j] == 0 {
                    ready(j, &mut heap, &mut later);
                }
            }
        }
        if out.len() == n {
            break;
        }
        if !blocked.is_empty() {
            // Adds that no removal makes room for: the plan overfills a map.
            overfull = true;
            for (_, rs) in blocked.drain() {
                heap.extend(rs.into_iter().map(Reverse));
            }
            continue;
        }
        // A cycle: change the earliest entry that only waits for entries
        // to move away from it (one always exists: see the module docs).
        let stuck = |i: &usize| !done[*i];
        let forced = (0..n)
            .filter(stuck)
            .filter(|&i| pending_writes[i] == 0 && matches!(ops[i].op, Op::Replace { .. }))
            .min_by_key(|&i| rank[i])
            .or_else(|| (0..n).filter(stuck).min_by_key(|&i| rank[i]))
            .expect("operations remain");
        let leavers: Vec<&str> = (0..n)
            .filter(stuck)
            .filter(|&i| succ[i].iter().any(|&(j, l)| l && j == forced))
            .map(|i| ops[i].why.as_str())
            .collect();
        let more = if leavers.len() > 2 { format!(" and {} more", leavers.len() - 2) } else { String::new() };
        let cause = match role(&ops[forced]) {
            Role::Slots => "devices trade places in the spec (slots are numbered in device order; keep the order of devices to avoid it)",
            _ => "routes trade devices whose egress arguments change too, or devices trade interfaces (apply the two changes one after the other to avoid it)",
        };
        warnings.push(format!(
            "`{}` ({}) changes while {}{more} still lead{} to it and will move elsewhere: until they have, they reach its new content. \
             This happens when {cause}",
            ops[forced].why,
            ops[forced].map,
            leavers.iter().take(2).map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", "),
            if leavers.len() == 1 { "s" } else { "" },
        ));
        pending_writes[forced] = 0;
        pending_leavers[forced] = 0;
        heap.push(Reverse(rank[forced]));
    }

    let mut slots: Vec<Option<MapOp>> = ops.into_iter().map(Some).collect();
    Plan { ops: out.into_iter().map(|i| slots[i].take().expect("each once")).collect(), warnings }
}

// ------------------------------------------------------------------- kernel

/// The maps and programs of a loaded object, by name: a
/// [`libbpf_rs::Object`], a [`crate::deploy::Loaded`], or (later) the pins
/// of a deployment.
pub trait Handles {
    fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>>;
    fn prog_fd(&self, name: &str) -> Option<BorrowedFd<'_>>;
}

impl Handles for Object {
    fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        // SAFETY: the fd belongs to the object, which outlives the borrow.
        self.maps()
            .find(|m| m.name() == name)
            .map(|m| unsafe { BorrowedFd::borrow_raw(m.as_fd().as_raw_fd()) })
    }

    fn prog_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        // SAFETY: as above.
        self.progs()
            .find(|p| p.name() == name)
            .map(|p| unsafe { BorrowedFd::borrow_raw(p.as_fd().as_raw_fd()) })
    }
}

impl Handles for crate::deploy::Loaded {
    fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.object().map_fd(name)
    }

    fn prog_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.object().prog_fd(name)
    }
}

/// A libbpf return value (negative errno) as a `Result`.
fn check(rc: i32) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::from_raw_os_error(-rc))
    } else {
        Ok(())
    }
}

/// A map as [`execute`] writes it.
struct Target<'h> {
    fd: BorrowedFd<'h>,
    kind: u32,
    key_size: u32,
    value_size: u32,
}

impl Target<'_> {
    fn percpu(&self) -> bool {
        matches!(
            self.kind,
            libbpf_sys::BPF_MAP_TYPE_PERCPU_HASH
                | libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY
                | libbpf_sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
        )
    }

    fn array(&self) -> bool {
        matches!(self.kind, libbpf_sys::BPF_MAP_TYPE_ARRAY | libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY)
    }

    fn devmap(&self) -> bool {
        matches!(self.kind, libbpf_sys::BPF_MAP_TYPE_DEVMAP_HASH | libbpf_sys::BPF_MAP_TYPE_DEVMAP)
    }

    /// Bytes of a value buffer: per-CPU values are 8-byte aligned, one per
    /// possible CPU.
    fn buffer_size(&self) -> io::Result<usize> {
        if !self.percpu() {
            return Ok(self.value_size as usize);
        }
        let cpus = libbpf_rs::num_possible_cpus().map_err(|e| io::Error::other(e.to_string()))?;
        Ok((self.value_size as usize).next_multiple_of(8) * cpus)
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u32) -> io::Result<()> {
        // SAFETY: key and value have the map's sizes (checked by the callers).
        check(unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                u64::from(flags),
            )
        })
    }

    fn delete(&self, key: &[u8]) -> io::Result<()> {
        // SAFETY: the key has the map's key size.
        check(unsafe { libbpf_sys::bpf_map_delete_elem(self.fd.as_raw_fd(), key.as_ptr().cast()) })
    }

    /// The value at `key`, `None` when absent.
    fn lookup(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut value = vec![0u8; self.buffer_size()?];
        // SAFETY: the buffer holds a (per-CPU) value of the map.
        match check(unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_mut_ptr().cast(),
            )
        }) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every key, in the kernel's order.
    fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let mut next = vec![0u8; self.key_size as usize];
        loop {
            let prev: *const libc::c_void =
                keys.last().map_or(std::ptr::null(), |k: &Vec<u8>| k.as_ptr().cast());
            // SAFETY: prev is NULL or a key of the map's size; next holds one.
            match check(unsafe {
                libbpf_sys::bpf_map_get_next_key(self.fd.as_raw_fd(), prev, next.as_mut_ptr().cast())
            }) {
                Ok(()) => keys.push(next.clone()),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(e),
            }
            if keys.len() > (1 << 31) {
                return Err(io::Error::other("the map's keys do not end"));
            }
        }
    }
}

fn target<'h, H: Handles + ?Sized>(handles: &'h H, name: &str) -> io::Result<Target<'h>> {
    let fd = handles
        .map_fd(name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("the object has no map {name}")))?;
    let mut info = libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a zeroed bpf_map_info of `len` bytes.
    check(unsafe { libbpf_sys::bpf_map_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
    Ok(Target { fd, kind: info.type_, key_size: info.key_size, value_size: info.value_size })
}

/// The bytes of `value` for the map `t` (program fds from `handles`).
fn render<H: Handles + ?Sized>(handles: &H, t: &Target<'_>, value: &Value) -> io::Result<Vec<u8>> {
    render_with(&|p| handles.prog_fd(p).map(|fd| fd.as_raw_fd()), t, value)
}

/// [`render`] with the program fds from `prog_fd`.
fn render_with(prog_fd: &dyn Fn(&str) -> Option<i32>, t: &Target<'_>, value: &Value) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    render_into(prog_fd, t, value, &mut bytes)?;
    Ok(bytes)
}

/// [`render_with`] into `bytes` (cleared first), so a loop reuses one buffer.
fn render_into(
    prog_fd: &dyn Fn(&str) -> Option<i32>,
    t: &Target<'_>,
    value: &Value,
    bytes: &mut Vec<u8>,
) -> io::Result<()> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    bytes.clear();
    match value {
        Value::Bytes(b) => bytes.extend_from_slice(b),
        Value::Slot(s) => bytes.extend_from_slice(&s.to_ne_bytes()),
        Value::Devmap(d) => {
            let fd = match &d.program {
                None => -1,
                Some(p) => prog_fd(p).ok_or_else(|| bad(format!("the object has no program {p}")))?,
            };
            bytes.extend_from_slice(&d.ifindex.to_ne_bytes());
            if t.value_size == 8 {
                bytes.extend_from_slice(&fd.to_ne_bytes());
            } else if d.program.is_some() {
                return Err(bad(
                    "the map's values have no room for an egress program (4 bytes: a kernel before 5.8)"
                        .into(),
                ));
            }
        }
        Value::Counter => {
            bytes.resize(t.buffer_size()?, 0);
            return Ok(());
        }
    }
    if bytes.len() != t.value_size as usize {
        return Err(bad(format!(
            "a value of {} bytes for a map whose values have {}: the plan and the object do not go together",
            bytes.len(),
            t.value_size
        )));
    }
    Ok(())
}

/// How to undo one done operation.
enum Undo {
    Delete,
    /// Write these bytes back (`BPF_ANY`).
    Write(Vec<u8>),
}

fn run<H: Handles + ?Sized>(handles: &H, t: &Target<'_>, op: &MapOp) -> io::Result<Undo> {
    if op.key.len() != t.key_size as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a key of {} bytes for a map whose keys have {}: the plan and the object do not go together",
                op.key.len(),
                t.key_size
            ),
        ));
    }
    match &op.op {
        Op::Insert(value) => {
            let bytes = render(handles, t, value)?;
            if t.array() {
                // An array entry always exists: put back what it held.
                let before = t.lookup(&op.key)?.ok_or_else(|| io::Error::from_raw_os_error(libc::E2BIG))?;
                t.update(&op.key, &bytes, libbpf_sys::BPF_ANY)?;
                Ok(Undo::Write(before))
            } else {
                t.update(&op.key, &bytes, libbpf_sys::BPF_NOEXIST)?;
                Ok(Undo::Delete)
            }
        }
        Op::Replace { old, new } => {
            let before = if t.percpu() {
                t.lookup(&op.key)?.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?
            } else {
                render(handles, t, old)?
            };
            let bytes = render(handles, t, new)?;
            t.update(&op.key, &bytes, libbpf_sys::BPF_EXIST)?;
            Ok(Undo::Write(before))
        }
        Op::Delete { old } => {
            // Per-CPU counts are not in the plan: keep them to put back.
            let before = if t.percpu() {
                t.lookup(&op.key)?.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?
            } else {
                render(handles, t, old)?
            };
            t.delete(&op.key)?;
            Ok(Undo::Write(before))
        }
    }
}

/// Why [`execute`] stopped: the operation that failed, the kernel's answer,
/// and how the rollback went.
#[derive(Debug)]
pub struct ApplyError {
    /// 1-based position of the failed operation in the plan.
    pub step: usize,
    pub total: usize,
    /// The operation that failed (boxed: errors stay small).
    pub op: Box<MapOp>,
    pub error: io::Error,
    /// Operations done before the failure and undone.
    pub undone: usize,
    /// Undo steps that failed, described: when not empty, the maps hold
    /// neither configuration.
    pub rollback_errors: Vec<String>,
}

impl ApplyError {
    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        self.error.raw_os_error()
    }

    /// What an errno means for this operation.
    fn hint(&self) -> Option<String> {
        let devmap = matches!(self.op.op.new_value(), Some(Value::Devmap(_)));
        Some(match (self.errno()?, &self.op.op) {
            (libc::EINVAL, Op::Insert(Value::Devmap(d)) | Op::Replace { new: Value::Devmap(d), .. }) => format!(
                "the kernel refused the device or its egress program: there is no device with ifindex {} in this network namespace{}",
                d.ifindex,
                d.program.as_deref().map(|p| format!(", or {p} is not an `xdp/devmap` program")).unwrap_or_default()
            ),
            (libc::E2BIG, _) => "the map is full (its max_entries)".into(),
            (libc::EEXIST, Op::Insert(_)) => "the entry is already in the map: the maps are not in the state the plan started from; plan again from what the kernel holds (read_state)".into(),
            (libc::ENOENT, _) => "the entry is not in the map: the maps are not in the state the plan started from; plan again from what the kernel holds (read_state)".into(),
            (libc::EPERM, _) if !devmap => "the map refuses writes from system calls (`access = read_only` in the table, or a frozen map), or CAP_BPF is missing".into(),
            (libc::EPERM, _) => "CAP_BPF and CAP_NET_ADMIN are needed".into(),
            _ => return None,
        })
    }
}

/// The symbolic name of an errno devmapc meets.
fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        524 => "ENOTSUPP",
        _ => return None,
    })
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = &self.op;
        let prep = match op.op {
            Op::Insert(_) => "to",
            Op::Replace { .. } => "in",
            Op::Delete { .. } => "from",
        };
        write!(
            f,
            "cannot {} {} {prep} map {} (operation {} of {}): {}",
            op.verb(),
            op.why,
            op.map,
            self.step,
            self.total,
            self.error
        )?;
        if let Some(name) = self.errno().and_then(errno_name) {
            write!(f, " [{name}]")?;
        }
        if let Some(hint) = self.hint() {
            write!(f, ": {hint}")?;
        }
        if self.rollback_errors.is_empty() {
            match self.undone {
                0 => write!(f, ". Nothing had been changed: the previous configuration is in place"),
                n => write!(
                    f,
                    ". The {n} operation{} done before were undone: the previous configuration is in place",
                    if n == 1 { "" } else { "s" }
                ),
            }
        } else {
            write!(
                f,
                ". Undoing failed for {} of the {} operations done before ({}): the maps hold neither configuration; read them back and apply again",
                self.rollback_errors.len(),
                self.undone + self.rollback_errors.len(),
                self.rollback_errors.join("; ")
            )
        }
    }
}

impl std::error::Error for ApplyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Runs `plan` against the maps of `handles`, one `bpf()` call per
/// operation, in order. On the first failure, undoes the operations done
/// so far in reverse and returns which one failed and why; the maps are
/// then as they were (unless [`ApplyError::rollback_errors`] says
/// otherwise). Calls that take an ifindex resolve it in the calling
/// thread's network namespace.
pub fn execute<H: Handles + ?Sized>(handles: &H, plan: &Plan) -> Result<(), ApplyError> {
    let mut targets: HashMap<&str, Target<'_>> = HashMap::new();
    let mut done: Vec<(usize, Undo)> = Vec::with_capacity(plan.ops.len());
    for (i, op) in plan.ops.iter().enumerate() {
        if !targets.contains_key(op.map.as_str()) {
            match target(handles, &op.map) {
                Ok(t) => {
                    targets.insert(op.map.as_str(), t);
                }
                Err(error) => return Err(rollback(plan, &targets, done, i, error)),
            }
        }
        match run(handles, &targets[op.map.as_str()], op) {
            Ok(undo) => {
                done.push((i, undo));
                if i == 0 && plan.ops.len() > 1 {
                    crate::apply::failpoint("data-mid-plan");
                }
            }
            Err(error) => return Err(rollback(plan, &targets, done, i, error)),
        }
    }
    Ok(())
}

fn rollback(
    plan: &Plan,
    targets: &HashMap<&str, Target<'_>>,
    done: Vec<(usize, Undo)>,
    failed: usize,
    error: io::Error,
) -> ApplyError {
    let mut rollback_errors = Vec::new();
    let mut undone = 0;
    for (i, undo) in done.into_iter().rev() {
        let op = &plan.ops[i];
        let t = &targets[op.map.as_str()];
        let result = match &undo {
            Undo::Delete => t.delete(&op.key),
            Undo::Write(bytes) => t.update(&op.key, bytes, libbpf_sys::BPF_ANY),
        };
        match result {
            Ok(()) => undone += 1,
            Err(e) => rollback_errors.push(format!("{} {} in {}: {e}", op.inverse().verb(), op.why, op.map)),
        }
    }
    ApplyError {
        step: failed + 1,
        total: plan.ops.len(),
        op: Box::new(plan.ops[failed].clone()),
        error,
        undone,
        rollback_errors,
    }
}

/// Writes the entries of a plan straight into a freshly loaded object as
/// [`emit`] hands them over: what [`crate::fill()`] does. No state is
/// built, nothing is read back or ordered (emit's order is safe for a fresh
/// object) and nothing is undone: a fill that fails leaves a fresh object
/// to throw away. Maps and program fds are looked up once.
pub fn write_fresh<H: Handles + ?Sized>(handles: &H, ir: &Ir, devices: &[Device]) -> Result<(), PlanError> {
    // A handful of maps: a short list beats hashing each entry's map name.
    let mut targets: Vec<(String, Target<'_>)> = Vec::new();
    let progs: Vec<(&str, Option<i32>)> = ir
        .code
        .programs
        .iter()
        .map(|p| {
            let fd = handles.prog_fd(&p.section_program).map(|fd| fd.as_raw_fd());
            (p.section_program.as_str(), fd)
        })
        .collect();
    let prog_fd = |p: &str| progs.iter().find(|(name, _)| *name == p).and_then(|(_, fd)| *fd);
    let mut bytes = Vec::with_capacity(64);
    emit(ir, devices, &mut |map, key, value, why| {
        let fail = |error: io::Error| PlanError::Write { map: map.to_string(), what: why(), error };
        let i = match targets.iter().position(|(name, _)| *name == map) {
            Some(i) => i,
            None => {
                targets.push((map.to_string(), target(handles, map).map_err(fail)?));
                targets.len() - 1
            }
        };
        let t = &targets[i].1;
        if key.len() != t.key_size as usize {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a key of {} bytes for a map whose keys have {}", key.len(), t.key_size),
            )));
        }
        render_into(&prog_fd, t, &value, &mut bytes).map_err(fail)?;
        let flags = if t.array() { libbpf_sys::BPF_ANY } else { libbpf_sys::BPF_NOEXIST };
        t.update(&key, &bytes, flags).map_err(fail)
    })
}

/// What the kernel holds in the maps of `ir`'s object: every entry, read
/// with `get_next_key` and lookups. Devmap values come back with program
/// ids, which are turned into the names of the object's programs (see
/// [`DevmapVal::program`]); counters are only noted as present. `why`s say
/// where an entry was found; [`State::relabel`] puts the plan's back.
pub fn read_state<H: Handles + ?Sized>(handles: &H, ir: &Ir) -> Result<State, PlanError> {
    let mut ids: HashMap<u32, String> = HashMap::new();
    for p in &ir.code.programs {
        let Some(fd) = handles.prog_fd(&p.section_program) else {
            continue;
        };
        let mut info = libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: info is a zeroed bpf_prog_info of `len` bytes.
        check(unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })
            .map_err(|error| PlanError::Read { map: format!("(program {})", p.section_program), error })?;
        ids.insert(info.id, p.section_program.clone());
    }
    let mut state = State::fresh(ir);
    for (name, map) in &mut state.maps {
        let fail = |error: io::Error| PlanError::Read { map: name.clone(), error };
        let t = target(handles, name).map_err(fail)?;
        map.entries.clear();
        for key in t.keys().map_err(fail)? {
            let value = if map.role == Role::Counters {
                Value::Counter
            } else {
                // Gone since get_next_key: not there any more.
                let Some(bytes) = t.lookup(&key).map_err(fail)? else {
                    continue;
                };
                let u32_at = |at: usize| {
                    bytes.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
                };
                match &map.role {
                    _ if t.devmap() => {
                        let program = u32_at(4)
                            .filter(|id| *id != 0)
                            .map(|id| ids.get(&id).cloned().unwrap_or_else(|| format!("id:{id}")));
                        Value::Devmap(DevmapVal { ifindex: u32_at(0).unwrap_or(0), program })
                    }
                    Role::Keys | Role::Default if bytes.len() == 4 => {
                        Value::Slot(u32_at(0).expect("4 bytes"))
                    }
                    _ => Value::Bytes(bytes),
                }
            };
            let why = match &map.role {
                Role::Args { .. } => format!(
                    "arguments for ifindex {} (read back)",
                    u32::from_ne_bytes(key[..4].try_into().unwrap_or_default())
                ),
                Role::Slots => format!(
                    "slot {} (read back)",
                    u32::from_ne_bytes(key[..4].try_into().unwrap_or_default())
                ),
                Role::Group { .. } => format!(
                    "member slot {} (read back)",
                    u32::from_ne_bytes(key[..4].try_into().unwrap_or_default())
                ),
                Role::Default => "default route (read back)".into(),
                Role::Keys | Role::Counters => read_back_key(&ir.code.key, &key),
            };
            map.entries.insert(key, Entry { value, why });
        }
    }
    Ok(state)
}

// -------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;
    use devmapc::model::Binding;

    #[test]
    fn direct_keys_read_back_as_the_packet_value() {
        use devmapc::fields::Field;
        use devmapc::ir::{fmix32, DirectField, KeyMix};
        let fields = vec![DirectField { field: Field::Ipv4Dst, shift: 0, bits: 32 }];
        let addr = u32::from_ne_bytes([10, 1, 0, 1]);
        let mixed = KeyPlan::Direct { fields: fields.clone(), mix: KeyMix::Fmix32 };
        assert_eq!(
            read_back_key(&mixed, &fmix32(addr).to_ne_bytes()),
            format!("key 0a010001 (read back, stored as {})", hex(&fmix32(addr).to_ne_bytes()))
        );
        let unmixed = KeyPlan::Direct { fields, mix: KeyMix::None };
        assert_eq!(read_back_key(&unmixed, &addr.to_ne_bytes()), "key 0a010001 (read back)");
    }
    use std::time::Instant;

    /// Lowers a spec's text (no clang, no kernel).
    fn ir(text: &str) -> Ir {
        let checked = devmapc::check_source(text);
        let model = checked.model.unwrap_or_else(|| panic!("{text}\n{:#?}", checked.diagnostics));
        devmapc::lower::lower(&model, "t.devmap", text)
    }

    /// Devices resolved by interface name: `a` is ifindex 100, `b` 101, ...
    /// (a device keeps its ifindex across specs, as in the kernel).
    fn devices(ir: &Ir) -> Vec<Device> {
        ir.data
            .devices
            .iter()
            .map(|d| match &d.binding {
                Binding::Ifname(name) => {
                    let n = name.as_bytes()[0] - b'a';
                    Device { ifindex: 100 + u32::from(n), mac: [2, 0, 0, 0, 0, n] }
                }
                Binding::Ifindex(i) => Device { ifindex: *i, mac: [2, 0, 0, 0, 1, *i as u8] },
            })
            .collect()
    }

    fn state(text: &str) -> State {
        let ir = ir(text);
        let state = desired(&ir, &devices(&ir)).unwrap();
        assert_eq!(state.dangling(), Vec::<String>::new(), "a desired state is consistent");
        state
    }

    /// Where a key of the key stage (or the default route) leads, as the
    /// data path reads it: a device with its program and arguments, or a
    /// group (by slot: groups change member by member), or nothing.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Meaning {
        Device(u32, Option<String>, Option<Vec<u8>>),
        Group(u32),
        Nothing,
    }

    fn device_meaning(s: &State, d: &DevmapVal) -> Meaning {
        let index = s.index();
        let args = d
            .program
            .as_deref()
            .and_then(|p| index.args.get(p))
            .and_then(|m| s.get(m, &d.ifindex.to_ne_bytes()))
            .map(|e| match &e.value {
                Value::Bytes(b) => b.clone(),
                other => panic!("arguments hold {other:?}"),
            });
        Meaning::Device(d.ifindex, d.program.clone(), args)
    }

    fn slot_meaning(s: &State, slot: u32) -> Meaning {
        if slot == SLOT_NONE {
            Meaning::Nothing
        } else if slot & SLOT_GROUP_BIT != 0 {
            Meaning::Group(slot)
        } else {
            match s.get(names::SLOTS, &slot.to_ne_bytes()).map(|e| &e.value) {
                Some(Value::Devmap(d)) => device_meaning(s, d),
                other => panic!("slot {slot} holds {other:?}"),
            }
        }
    }

    /// The data path's lookup: `devmapc_routes`, then `devmapc_group_keys`
    /// (direct keys); `devmapc_keys` (lowered ones); `devmapc_default`.
    fn meaning(s: &State, map: &str, key: &[u8]) -> Meaning {
        let value = |m: &str| s.get(m, key).map(|e| e.value.clone());
        match map {
            names::ROUTES | names::GROUP_KEYS => match (value(names::ROUTES), value(names::GROUP_KEYS)) {
                (Some(Value::Devmap(d)), _) => device_meaning(s, &d),
                (None, Some(Value::Slot(slot))) => slot_meaning(s, slot),
                (None, None) => Meaning::Nothing,
                other => panic!("{other:?}"),
            },
            _ => match value(map) {
                Some(Value::Slot(slot)) => slot_meaning(s, slot),
                None => Meaning::Nothing,
                other => panic!("{other:?}"),
            },
        }
    }

    /// Runs `diff(old, new)` on the model one operation at a time and checks
    /// at every step that nothing points at anything missing and that,
    /// unless the plan warned, every key leads to its old or its new target;
    /// then that the end is `new`, and that undoing in reverse gives `old`.
    fn walk(old: &State, new: &State) -> Plan {
        let plan = diff(old, new);
        let mut keys: BTreeSet<(String, Vec<u8>)> = BTreeSet::new();
        for s in [old, new] {
            for (name, map) in &s.maps {
                if matches!(map.role, Role::Keys | Role::Default) {
                    keys.extend(map.entries.keys().map(|k| (name.clone(), k.clone())));
                }
            }
        }
        let ends: Vec<(Meaning, Meaning)> =
            keys.iter().map(|(m, k)| (meaning(old, m, k), meaning(new, m, k))).collect();
        let mut s = old.clone();
        for (i, op) in plan.ops.iter().enumerate() {
            s.apply_op(op).unwrap_or_else(|e| panic!("step {}: {e}\n{plan}", i + 1));
            let dangling = s.dangling();
            assert!(dangling.is_empty(), "after step {} ({op}): {dangling:#?}\n{plan}", i + 1);
            if plan.warnings.is_empty() {
                for ((m, k), (before, after)) in keys.iter().zip(&ends) {
                    let now = meaning(&s, m, k);
                    assert!(now == *before || now == *after, "after step {} ({op}), {m} key {} leads to {now:?}, neither {before:?} nor {after:?}\n{plan}", i + 1, hex(k));
                }
            }
        }
        assert_eq!(s, *new, "the plan ends at the new state\n{plan}");
        for op in plan.ops.iter().rev() {
            s.apply_op(&op.inverse()).unwrap();
            assert!(s.dangling().is_empty());
        }
        assert_eq!(s, *old, "undoing the plan gives the old state back");
        plan
    }

    fn ops(plan: &Plan) -> Vec<String> {
        plan.ops.iter().map(|op| format!("{} {} {}", &op.to_string()[..1], op.map, op.why)).collect()
    }

    const LPM: &str = "table { key = lpm(ipv4.dst) }
        device a { ifname = \"a\" }
        device b { ifname = \"b\", egress = tag(10) }
        device c { ifname = \"c\", egress = tag(20) }
        device d { ifname = \"d\" }
        egress tag(v: u16) { vlan.id = v }
        ingress { on = [a] }
        route 10.0.0.0/8 -> b
        route 10.1.0.0/16 -> c
        route 10.2.0.0/16 -> d
        route 10.3.0.0/16 -> b
        route default -> c";

    #[test]
    fn desired_holds_what_fill_writes() {
        let ir = ir("table { key = vlan.id }
            device a { ifname = \"a\" }
            device b { ifname = \"b\", egress = tag(10) }
            device c { ifname = \"c\" }
            egress tag(v: u16) { vlan.id = v }
            group g { b, c }
            ingress { on = [a] }
            route 100 -> b
            route 200 -> g
            route default -> c");
        let s = desired(&ir, &devices(&ir)).unwrap();
        let at = |map: &str, key: &[u8]| s.get(map, key).map(|e| (e.value.clone(), e.why.clone()));
        let k = |n: u32| n.to_ne_bytes().to_vec();
        // Direct keys are stored mixed; slots and ifindexes are not.
        let mixed = |n: u32| devmapc::ir::fmix32(n).to_ne_bytes().to_vec();
        let b = DevmapVal { ifindex: 101, program: Some("devmapc_egress_tag".into()) };
        assert_eq!(
            at("devmapc_args_tag", &k(101)),
            Some((Value::Bytes(10u16.to_ne_bytes().to_vec()), "arguments of device b".into()))
        );
        assert_eq!(at(names::SLOTS, &k(2)), Some((Value::Devmap(b.clone()), "device b: slot".into())));
        assert_eq!(
            at(names::SLOTS, &k(3)).unwrap().0,
            Value::Devmap(DevmapVal { ifindex: 102, program: None })
        );
        assert_eq!(
            at("devmapc_group_g", &k(2)),
            Some((Value::Devmap(b.clone()), "group g: member b".into()))
        );
        assert_eq!(
            at(names::ROUTES, &mixed(100)),
            Some((Value::Devmap(b), "route 100 -> b (line 8)".into()))
        );
        assert_eq!(
            at(names::KEY_COUNTERS, &mixed(100)),
            Some((Value::Counter, "route 100 -> b (line 8): counter".into()))
        );
        assert_eq!(
            at(names::GROUP_KEYS, &mixed(200)),
            Some((Value::Slot(SLOT_GROUP_BIT), "route 200 -> g (line 9)".into()))
        );
        assert_eq!(at(names::KEY_COUNTERS, &mixed(200)), None, "a group route counts under its group");
        assert_eq!(at(names::DEFAULT, &k(0)), Some((Value::Slot(3), "default route -> c".into())));
        assert_eq!(s.len(), 1 + 3 + 2 + 1 + 1 + 1 + 1);
        assert!(desired(&ir, &devices(&ir)[..2]).is_err(), "every device must be resolved");
    }

    #[test]
    fn a_state_against_itself_is_no_plan() {
        let s = state(LPM);
        assert!(diff(&s, &s).is_empty());
        assert_eq!(diff(&s, &s).to_string(), "no map entry to change\n");
        let mut relabelled = s.clone();
        for map in relabelled.maps.values_mut() {
            map.entries.values_mut().for_each(|e| e.why = "read back".into());
        }
        assert_eq!(relabelled, s, "why is not content");
        assert!(diff(&relabelled, &s).is_empty());
    }

    #[test]
    fn a_route_that_changes_target_is_one_replace() {
        let old = state(LPM);
        let new = state(&LPM.replace("route 10.1.0.0/16 -> c", "route 10.1.0.0/16 -> d"));
        let plan = walk(&old, &new);
        assert_eq!(ops(&plan), ["~ devmapc_keys route 10.1.0.0/16 -> d (line 9)"]);
        assert_eq!(plan.ops[0].op, Op::Replace { old: Value::Slot(3), new: Value::Slot(4) });
    }

    #[test]
    fn routes_that_go_leave_before_what_changes_under_them_after_the_default_route() {
        let old = state(LPM);
        let new = state(
            "table { key = lpm(ipv4.dst) }
            device a { ifname = \"a\" }
            device b { ifname = \"b\", egress = tag(11) }
            device c { ifname = \"c\", egress = tag(20) }
            device d { ifname = \"d\", egress = tag(30) }
            device e { ifname = \"e\" }
            egress tag(v: u16) { vlan.id = v }
            ingress { on = [a] }
            route 10.0.0.0/8 -> b
            route 10.1.0.0/16 -> e
            route 10.4.0.0/16 -> e
            route default -> e",
        );
        // b's arguments change and d gains an egress program while routes
        // to b and d are removed: those routes go before b's arguments and
        // d's slot change, or they would briefly send packets out with a
        // configuration of neither spec (a VLAN tag that isolates tenants).
        let plan = walk(&old, &new);
        assert_eq!(
            ops(&plan),
            [
                "+ devmapc_args_tag arguments of device d",
                "+ devmapc_slots device e: slot",
                "~ devmapc_keys route 10.1.0.0/16 -> e (line 10)",
                "+ devmapc_keys route 10.4.0.0/16 -> e (line 11)",
                "~ devmapc_default default route -> e",
                "- devmapc_keys route 10.2.0.0/16 -> d (line 10)",
                "- devmapc_keys route 10.3.0.0/16 -> b (line 11)",
                "~ devmapc_args_tag arguments of device b",
                "~ devmapc_slots device d: slot",
            ]
        );
        assert!(plan.warnings.is_empty());
        assert_eq!(plan.totals(), Counts { added: 3, changed: 4, removed: 2 });
    }

    #[test]
    fn removing_a_device_from_the_middle_moves_routes_before_their_slot_changes_hands() {
        // Slots are 1 + the device's index: without b, c takes slot 2 and d
        // slot 3. Routes to b must be gone, and routes to c on slot 2,
        // before slot 2 becomes c; and so on down the list.
        let old = state(LPM);
        let new = state(
            "table { key = lpm(ipv4.dst) }
            device a { ifname = \"a\" }
            device c { ifname = \"c\", egress = tag(20) }
            device d { ifname = \"d\" }
            egress tag(v: u16) { vlan.id = v }
            ingress { on = [a] }
            route 10.1.0.0/16 -> c
            route 10.2.0.0/16 -> d
            route 10.3.0.0/16 -> a
            route default -> c",
        );
        let plan = walk(&old, &new);
        assert!(plan.warnings.is_empty(), "{plan}");
        let order = ops(&plan);
        let pos = |s: &str| order.iter().position(|o| o == s).unwrap_or_else(|| panic!("{s} in {order:#?}"));
        assert!(
            pos("- devmapc_keys route 10.0.0.0/8 -> b (line 8)") < pos("~ devmapc_slots device c: slot"),
            "b's routes leave slot 2 first: {order:#?}"
        );
        assert!(
            pos("~ devmapc_keys route 10.3.0.0/16 -> a (line 9)") < pos("~ devmapc_slots device c: slot")
        );
        assert!(
            pos("~ devmapc_slots device c: slot") < pos("~ devmapc_keys route 10.1.0.0/16 -> c (line 7)")
        );
        assert!(
            pos("~ devmapc_keys route 10.1.0.0/16 -> c (line 7)") < pos("~ devmapc_slots device d: slot"),
            "c's routes leave slot 3 before d takes it"
        );
        assert!(pos("~ devmapc_default default route -> c") < pos("~ devmapc_slots device d: slot"));
        assert!(
            pos("- devmapc_slots device d: slot") == order.len() - 2
                && pos("- devmapc_args_tag arguments of device b") == order.len() - 1
        );
    }

    #[test]
    fn devices_trading_places_is_a_cycle_the_plan_breaks_and_names() {
        let old = state(LPM);
        let swapped = LPM.replace(
            "device c { ifname = \"c\", egress = tag(20) }\n        device d { ifname = \"d\" }",
            "device d { ifname = \"d\" }\n        device c { ifname = \"c\", egress = tag(20) }",
        );
        assert_ne!(swapped, LPM);
        let new = state(&swapped);
        let plan = walk(&old, &new);
        assert_eq!(plan.warnings.len(), 1, "{plan}");
        assert!(plan.warnings[0].contains("trade places"), "{}", plan.warnings[0]);
    }

    #[test]
    fn a_route_that_leaves_a_group_for_a_member_with_new_arguments_is_no_cycle() {
        // Route 300 goes from g to b, b leaves g and b's argument changes:
        // b leaves g before its argument changes (rule 2), 300 reaches b
        // only with the new argument (rule 1), and is in devmapc_routes
        // before it leaves devmapc_group_keys (rule 3). Holding g's members
        // back until 300 has left g would close a cycle: rule 2 does not
        // look into groups.
        let spec = |b: &str, g: &str, route: &str| {
            format!(
                "table {{ key = vlan.id }}
                device a {{ ifname = \"a\" }}
                device b {{ ifname = \"b\", egress = tag({b}) }}
                device c {{ ifname = \"c\" }}
                egress tag(v: u16) {{ vlan.id = v }}
                group g {{ {g} }}
                ingress {{ on = [a] }}
                route 300 -> {route}"
            )
        };
        let plan = walk(&state(&spec("10", "b, c", "g")), &state(&spec("20", "a, c", "b")));
        assert!(plan.warnings.is_empty(), "{plan}");
        assert_eq!(
            ops(&plan),
            [
                "+ devmapc_key_counters route 300 -> b (line 8): counter",
                "+ devmapc_group_g group g: member a",
                "- devmapc_group_g group g: member b",
                "~ devmapc_args_tag arguments of device b",
                "+ devmapc_routes route 300 -> b (line 8)",
                "- devmapc_group_keys route 300 -> g (line 8)",
            ]
        );
    }

    #[test]
    fn routes_trading_devices_whose_arguments_change_is_a_cycle_the_plan_names() {
        let spec = |b: u16, c: u16, x: &str, y: &str| {
            format!(
                "table {{ key = lpm(ipv4.dst) }}
                device a {{ ifname = \"a\" }}
                device b {{ ifname = \"b\", egress = tag({b}) }}
                device c {{ ifname = \"c\", egress = tag({c}) }}
                egress tag(v: u16) {{ vlan.id = v }}
                ingress {{ on = [a] }}
                route 10.1.0.0/16 -> {x}
                route 10.2.0.0/16 -> {y}"
            )
        };
        // Either change alone is exact.
        assert!(walk(&state(&spec(1, 2, "b", "c")), &state(&spec(1, 2, "c", "b"))).warnings.is_empty());
        assert!(walk(&state(&spec(1, 2, "b", "c")), &state(&spec(3, 4, "b", "c"))).warnings.is_empty());
        // Both at once: 10.1 must reach c with its new argument and leave b
        // before b's argument changes; 10.2 the other way round.
        let plan = walk(&state(&spec(1, 2, "b", "c")), &state(&spec(3, 4, "c", "b")));
        assert_eq!(plan.warnings.len(), 1, "{plan}");
        assert!(
            plan.warnings[0].contains("routes trade devices whose egress arguments change too"),
            "{}",
            plan.warnings[0]
        );
    }

    #[test]
    fn direct_keys_move_between_devices_and_groups_without_a_gap() {
        let spec = |routes: &str| {
            format!(
                "table {{ key = ipv4.dst }}
                device a {{ ifname = \"a\" }}
                device b {{ ifname = \"b\", egress = tag(10) }}
                device c {{ ifname = \"c\" }}
                egress tag(v: u16) {{ vlan.id = v }}
                group g {{ b, c }}
                ingress {{ on = [a] }}
                {routes}"
            )
        };
        let old = state(&spec("route 10.0.0.1 -> b\n route 10.0.0.2 -> g\n route 10.0.0.3 -> c"));
        let new = state(&spec("route 10.0.0.1 -> g\n route 10.0.0.2 -> b\n route 10.0.0.4 -> c"));
        let plan = walk(&old, &new);
        assert_eq!(
            ops(&plan),
            [
                // 10.0.0.3 leaves the table: first, making room.
                "- devmapc_routes route 10.0.0.3 -> c (line 10)",
                "- devmapc_key_counters route 10.0.0.3 -> c (line 10): counter",
                "+ devmapc_key_counters route 10.0.0.4 -> c (line 10): counter",
                "+ devmapc_key_counters route 10.0.0.2 -> b (line 9): counter",
                "+ devmapc_group_keys route 10.0.0.1 -> g (line 8)",
                "+ devmapc_routes route 10.0.0.4 -> c (line 10)",
                "+ devmapc_routes route 10.0.0.2 -> b (line 9)",
                "- devmapc_group_keys route 10.0.0.2 -> g (line 9)",
                "- devmapc_routes route 10.0.0.1 -> b (line 8)",
                "- devmapc_key_counters route 10.0.0.1 -> b (line 8): counter",
            ]
        );
    }

    /// A table of `max_entries = 2`, full before and after, keyed `key`
    /// with `routes` (a route's key text is `k(n)`).
    fn full_table(key: &str, k: &dyn Fn(u32) -> String, routes: &[(u32, &str)]) -> State {
        let routes: String = routes.iter().map(|(n, t)| format!("route {} -> {t}\n", k(*n))).collect();
        state(&format!(
            "table {{ key = {key}, max_entries = 2 }}
            device a {{ ifname = \"a\" }}
            device b {{ ifname = \"b\", egress = tag(10) }}
            device c {{ ifname = \"c\" }}
            egress tag(v: u16) {{ vlan.id = v }}
            group g {{ b, c }}
            ingress {{ on = [a] }}
            {routes}"
        ))
    }

    #[test]
    fn a_full_table_changes_in_place_keys_that_leave_go_first() {
        let direct = |n: u32| format!("10.0.0.{n}");
        let hashed = |n: u32| format!("({n}, 02:00:00:00:00:0{n})");
        let lpm = |n: u32| format!("10.{n}.0.0/16");
        let kinds: [(&str, &dyn Fn(u32) -> String); 3] =
            [("ipv4.dst", &direct), ("(vlan.id, eth.dst)", &hashed), ("lpm(ipv4.dst)", &lpm)];
        type Routes<'a> = &'a [(u32, &'a str)];
        let changes: [(&str, Routes, Routes); 5] = [
            ("replace one key", &[(1, "b"), (2, "b")], &[(1, "b"), (3, "b")]),
            ("replace all keys", &[(1, "b"), (2, "c")], &[(3, "c"), (4, "b")]),
            ("keys trade device and group", &[(1, "b"), (2, "g")], &[(1, "g"), (2, "c")]),
            ("one moves, one is replaced", &[(1, "b"), (2, "c")], &[(1, "g"), (3, "b")]),
            ("a group key is replaced", &[(1, "g"), (2, "g")], &[(1, "g"), (3, "b")]),
        ];
        for (key, k) in kinds {
            for (what, before, after) in changes {
                let (old, new) = (full_table(key, k, before), full_table(key, k, after));
                // walk() runs the plan on a model that refuses an add into a
                // full map, as the kernel does.
                let plan = walk(&old, &new);
                check_capacity(&old, &plan).unwrap_or_else(|e| panic!("{key}, {what}: {e}\n{plan}"));
                // Every removal of a key that leaves precedes every add.
                let leaving = |op: &MapOp| {
                    matches!(op.op, Op::Delete { .. })
                        && [names::ROUTES, names::GROUP_KEYS, names::KEYS]
                            .iter()
                            .all(|m| new.get(m, &op.key).is_none())
                };
                let first_add = plan.ops.iter().position(|op| matches!(op.op, Op::Insert(_)));
                let last_leave = plan.ops.iter().rposition(leaving);
                if let (Some(add), Some(leave)) = (first_add, last_leave) {
                    assert!(leave < add, "{key}, {what}: a key leaves after an add\n{plan}");
                }
            }
        }
    }

    #[test]
    fn devices_that_all_move_interface_change_their_arguments_one_at_a_time() {
        // 1023 devices (the most a spec may have) with egress arguments, all
        // on new interfaces: old and new arguments together (2046) do not
        // fit the argument map (1024). Each device's new arguments, its slot
        // and its old arguments go in turn once the map is full.
        let spec = |base: u32| {
            let mut text = String::from(
                "table { key = ipv4.dst }
                egress tag(v: u16) { vlan.id = v }
                ingress { on = [d0] }
                route 10.0.0.1 -> d1\n",
            );
            for d in 0..1023 {
                text += &format!("device d{d} {{ ifindex = {}, egress = tag(1) }}\n", base + d);
            }
            text
        };
        let (old, new) = (state(&spec(1)), state(&spec(5001)));
        let plan = walk(&old, &new);
        check_capacity(&old, &plan).unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn a_plan_that_overfills_a_map_is_refused_before_any_change() {
        let k = |n: u32| format!("10.0.0.{n}");
        let old = full_table("ipv4.dst", &k, &[(1, "b"), (2, "b")]);
        let new = full_table("ipv4.dst", &k, &[(1, "b"), (3, "b")]);
        // The order of old: the add before the removal.
        let mut plan = diff(&old, &new);
        plan.ops.sort_by_key(|op| matches!(op.op, Op::Delete { .. }));
        match check_capacity(&old, &plan) {
            Err(PlanError::Full { map, entries: 3, max_entries: 2 }) => assert_eq!(map, names::KEY_COUNTERS),
            other => panic!("{other:?}\n{plan}"),
        }
        assert!(check_capacity(&old, &diff(&old, &new)).is_ok());
    }

    #[test]
    fn a_device_that_changes_program_gets_its_new_arguments_first() {
        let spec = |b: &str| {
            format!(
                "table {{ key = (vlan.id, eth.dst) }}
                device a {{ ifname = \"a\" }}
                device b {{ ifname = \"b\"{b} }}
                egress tag(v: u16) {{ vlan.id = v }}
                egress pop {{ vlan.pop() }}
                ingress {{ on = [a] }}
                route (1, 02:00:00:00:00:01) -> b"
            )
        };
        let none = state(&spec(""));
        let tag = state(&spec(", egress = tag(5)"));
        let pop = state(&spec(", egress = pop"));
        assert_eq!(
            ops(&walk(&none, &tag)),
            ["+ devmapc_args_tag arguments of device b", "~ devmapc_slots device b: slot"]
        );
        assert_eq!(
            ops(&walk(&tag, &pop)),
            [
                "+ devmapc_args_pop arguments of device b",
                "~ devmapc_slots device b: slot",
                "- devmapc_args_tag arguments of device b"
            ]
        );
        assert_eq!(
            ops(&walk(&pop, &none)),
            ["~ devmapc_slots device b: slot", "- devmapc_args_pop arguments of device b"]
        );
    }

    #[test]
    fn a_device_on_a_new_interface_moves_its_routes_and_arguments() {
        let spec = |ifname: &str| {
            format!(
                "table {{ key = ingress.port }}
                device a {{ ifname = \"a\" }}
                device b {{ ifname = \"{ifname}\", egress = tag(7) }}
                egress tag(v: u16) {{ vlan.id = v }}
                ingress {{ on = [a, b] }}
                route a -> b
                route b -> a"
            )
        };
        // b moves from interface b (101) to e (104): the route keyed by b's
        // ifindex changes key, and the route to b changes value.
        let plan = walk(&state(&spec("b")), &state(&spec("e")));
        assert_eq!(
            ops(&plan),
            [
                // The old interface's key leaves the table: first.
                "- devmapc_routes route b -> a (line 7)",
                "- devmapc_key_counters route b -> a (line 7): counter",
                "+ devmapc_args_tag arguments of device b",
                "+ devmapc_key_counters route b -> a (line 7): counter",
                "~ devmapc_slots device b: slot",
                "+ devmapc_routes route b -> a (line 7)",
                "~ devmapc_routes route a -> b (line 6)",
                "- devmapc_args_tag arguments of device b",
            ]
        );
    }

    #[test]
    fn fill_and_teardown_are_plans_from_and_to_a_fresh_object() {
        let ir = ir(LPM);
        let fresh = State::fresh(&ir);
        let full = desired(&ir, &devices(&ir)).unwrap();
        let fill = walk(&fresh, &full);
        assert_eq!(fill.totals(), Counts { added: 2 + 4 + 4, changed: 1, removed: 0 });
        assert_eq!(fill.ops.last().unwrap().why, "default route -> c", "the default route last");
        let teardown = walk(&full, &fresh);
        assert_eq!(teardown.totals(), Counts { added: 0, changed: 1, removed: 10 });
        assert_eq!(teardown.ops[0].why, "default route: none", "the default route first");
    }

    #[test]
    fn the_dry_run_text_is_counts_then_operations_in_order() {
        let old = state(LPM);
        let new = state(
            &LPM.replace("route 10.3.0.0/16 -> b", "route 10.9.0.0/16 -> a").replace("tag(20)", "tag(21)"),
        );
        let text = walk(&old, &new).to_string();
        let expected = "\
3 map operations (1 added, 1 changed, 1 removed):
  devmapc_args_tag       0 added      1 changed      0 removed
  devmapc_keys           1 added      0 changed      1 removed
in order:
  1. - devmapc_keys      route 10.3.0.0/16 -> b (line 11)  [slot 2]
  2. ~ devmapc_args_tag  arguments of device c  [bytes 1400 => bytes 1500]
  3. + devmapc_keys      route 10.9.0.0/16 -> a (line 11)  [slot 1]
";
        assert_eq!(text, expected);
        assert_eq!(text, walk(&old, &new).to_string(), "deterministic");
        println!("{text}");
    }

    /// A 64k-route table: a change of one route is O(1) operations, and
    /// planning it takes a fraction of a second.
    #[test]
    fn one_route_in_a_64k_table_is_one_or_two_operations() {
        const N: u32 = 65_536;
        let mut text = String::from(
            "table { key = ipv4.dst, max_entries = 70000 }
            device a { ifname = \"a\" }
            device b { ifname = \"b\" }
            device c { ifname = \"c\" }
            ingress { on = [a] }\n",
        );
        for i in 0..N {
            text.push_str(&format!("route 10.{}.{}.1 -> {}\n", i >> 8, i & 0xff, ["b", "c"][i as usize % 2]));
        }
        let started = Instant::now();
        let old = state(&text);
        let built = started.elapsed();
        assert_eq!(old.maps[names::ROUTES].entries.len(), N as usize);

        let started = Instant::now();
        assert!(diff(&old, &old).is_empty());
        let same = started.elapsed();

        let retarget = state(&text.replace("route 10.0.0.1 -> b", "route 10.0.0.1 -> c"));
        let started = Instant::now();
        let plan = diff(&old, &retarget);
        let one = started.elapsed();
        assert_eq!(ops(&plan), ["~ devmapc_routes route 10.0.0.1 -> c (line 6)"]);

        let added = state(&format!("{text}route 192.0.2.1 -> b\n"));
        let plan = diff(&old, &added);
        assert_eq!(plan.totals(), Counts { added: 2, changed: 0, removed: 0 }, "the route and its counter");
        assert_eq!(plan.ops[0].map, names::KEY_COUNTERS, "the counter before the route");
        let plan = diff(&added, &old);
        assert_eq!(plan.totals(), Counts { added: 0, changed: 0, removed: 2 });
        assert_eq!(plan.ops[0].map, names::ROUTES, "the route before its counter");

        let ir = ir(&text);
        let started = Instant::now();
        let fill = diff(&State::fresh(&ir), &old);
        let full = started.elapsed();
        assert_eq!(
            fill.len(),
            2 * N as usize + 3,
            "routes, counters, slots (no default route: slot 0 is there)"
        );
        println!(
            "64k routes: parse, check, lower and desired {built:?}; diff(s, s) {same:?} (0 operations); one route retargeted {one:?} (1 operation); \
             from a fresh object {full:?} ({} operations)",
            fill.len()
        );
    }

    /// Random pairs of specs over one code part (same key, programs,
    /// groups): every plan keeps the maps consistent at every step and ends
    /// at the new state; unless it warned, no route ever leads anywhere but
    /// its old or new target.
    #[test]
    fn random_changes_are_safe_at_every_step() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let spec = |key: &str, rand: &mut dyn FnMut(u64) -> u64| {
            let mut names: Vec<char> = "abcdef".chars().collect();
            let keep = 2 + rand(5) as usize;
            for i in (1..names.len()).rev() {
                names.swap(i, rand(i as u64 + 1) as usize);
            }
            names.truncate(keep);
            let mut text = format!("table {{ key = {key} }}\n");
            for n in &names {
                let egress = match rand(3) {
                    0 => String::new(),
                    1 => format!(", egress = tag({})", 1 + rand(3)),
                    _ => ", egress = pop".into(),
                };
                text.push_str(&format!("device {n} {{ ifname = \"{n}\"{egress} }}\n"));
            }
            text.push_str("egress tag(v: u16) { vlan.id = v }\negress pop { vlan.pop() }\n");
            let mut targets: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            for g in ["g", "h"] {
                let members: Vec<String> =
                    names.iter().filter(|_| rand(2) == 0).map(|n| n.to_string()).collect();
                let members = if members.is_empty() { vec![names[0].to_string()] } else { members };
                text.push_str(&format!("group {g} {{ {} }}\n", members.join(", ")));
                targets.push(g.into());
            }
            text.push_str(&format!("ingress {{ on = [{}] }}\n", names[0]));
            for k in 0..10 {
                if rand(3) > 0 {
                    let key =
                        if key.starts_with("lpm") { format!("10.{k}.0.0/16") } else { format!("10.0.0.{k}") };
                    text.push_str(&format!(
                        "route {key} -> {}\n",
                        targets[rand(targets.len() as u64) as usize]
                    ));
                }
            }
            if rand(2) == 0 {
                text.push_str(&format!(
                    "route default -> {}\n",
                    targets[rand(targets.len() as u64) as usize]
                ));
            }
            text
        };
        let (mut plans, mut warned, mut operations) = (0, 0, 0);
        let mut causes: BTreeMap<&str, usize> = BTreeMap::new();
        for key in ["lpm(ipv4.dst)", "ipv4.dst"] {
            for _ in 0..150 {
                let (a, b) = (spec(key, &mut rand), spec(key, &mut rand));
                let (ia, ib) = (ir(&a), ir(&b));
                assert_eq!(ia.code_hash(), ib.code_hash(), "a data-only change");
                let (sa, sb) = (desired(&ia, &devices(&ia)).unwrap(), desired(&ib, &devices(&ib)).unwrap());
                let plan = walk(&sa, &sb);
                plans += 1;
                for w in &plan.warnings {
                    *causes
                        .entry(if w.contains("trade places") {
                            "devices reordered"
                        } else {
                            "routes trading devices with new arguments"
                        })
                        .or_insert(0) += 1;
                }
                warned += usize::from(!plan.warnings.is_empty());
                operations += plan.len();
                assert!(diff(&sb, &sb).is_empty());
            }
        }
        println!("{plans} random plans, {operations} operations, {warned} with a warning: {causes:?}");
        assert!(warned < plans / 2);
    }

    #[test]
    fn conflicting_entries_are_an_error() {
        let ir = ir("table { key = vlan.id }
            device a { ifname = \"a\", egress = tag(1) }
            device b { ifname = \"b\", egress = tag(2) }
            egress tag(v: u16) { vlan.id = v }
            ingress { on = [a] }
            route 1 -> b");
        let mut devs = devices(&ir);
        devs[1].ifindex = devs[0].ifindex;
        let e = desired(&ir, &devs).unwrap_err();
        assert_eq!(e.to_string(), "arguments of device a and arguments of device b both write key 64000000 of map devmapc_args_tag, with different values");
    }

    /// `diff_routes` is `diff(desired(old), desired(new))` whenever only
    /// routes change, for every kind of key and target, and declines
    /// anything else.
    #[test]
    fn diff_routes_is_the_full_diff_when_only_routes_change() {
        let specs = [
            ("vlan.id", "1", "2", "3"),
            ("ipv4.dst", "10.0.0.1", "10.0.0.2", "10.0.0.3"),
            ("lpm(ipv4.dst)", "10.0.0.0/8", "10.1.0.0/16", "0.0.0.0/0"),
            (
                "(vlan.id, eth.dst)",
                "(1, 02:00:00:00:00:01)",
                "(2, 02:00:00:00:00:01)",
                "(1, 02:00:00:00:00:02)",
            ),
            ("ingress.port", "a", "b", "c"),
        ];
        for (key, k1, k2, k3) in specs {
            let head = format!(
                "table {{ key = {key} }}
                device a {{ ifname = \"a\", egress = tag(1) }}
                device b {{ ifname = \"b\" }}
                device c {{ ifname = \"c\" }}
                egress tag(v: u16) {{ vlan.id = v }}
                group g {{ a, b, c }}
                ingress {{ on = [a, b, c] }}
"
            );
            let versions = [
                format!("{head}route {k1} -> a\nroute {k2} -> b"),
                format!("{head}route {k1} -> c\nroute {k2} -> b"),
                format!("{head}route {k1} -> g\nroute {k3} -> b\nroute default -> c"),
                format!("{head}route {k2} -> g\nroute {k3} -> a\nroute default -> g"),
                format!("{head}route {k3} -> a"),
            ];
            for old in &versions {
                for new in &versions {
                    let (old, new) = (ir(old), ir(new));
                    let devs = devices(&old);
                    let full = diff(&desired(&old, &devs).unwrap(), &desired(&new, &devs).unwrap());
                    let fast = diff_routes(&old, &new, &devs).unwrap().expect("only routes differ");
                    assert_eq!(
                        fast.ops,
                        full.ops,
                        "{key}: {}\n=> {}",
                        old.data.routes.len(),
                        new.data.routes.len()
                    );
                }
            }
            // A device's arguments change: not a change of routes alone.
            let other = ir(&versions[0].replace("tag(1)", "tag(7)"));
            let first = ir(&versions[0]);
            assert!(diff_routes(&first, &other, &devices(&first)).unwrap().is_none(), "{key}");
        }
    }
}
