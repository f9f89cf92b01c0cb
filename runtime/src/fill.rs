//! Writes the data part of a plan (devices, routes, groups, egress
//! arguments, the default route) into a loaded object's maps.
//!
//! DEVMAP_HASH has no batch operations (KERNEL.md), so this is one `bpf()`
//! call per entry, in an order that never points at something not yet
//! there: slots and group members first, then the keys that lead to them.

use devmapc::ir::{encode_key, names, DataPlan, Ir, KeyPlan, ParamType, ProgramPlan, TargetRef};
use devmapc::model::Const;
use libbpf_rs::{MapCore, MapFlags, Object};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};

/// A device of the plan as found in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// Why filling failed: which entry of which map, and the kernel's answer.
#[derive(Debug)]
pub struct FillError {
    pub map: String,
    pub what: String,
    pub error: libbpf_rs::Error,
}

impl fmt::Display for FillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write {} into map {}: {}", self.what, self.map, self.error)
    }
}

impl std::error::Error for FillError {}

/// An argument that does not fit its parameter (a stale manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError(pub String);

/// Fills every map of a freshly loaded object from `ir`. `devices[i]` is
/// device `i` of the plan.
pub fn fill(obj: &Object, ir: &Ir, devices: &[Device]) -> Result<(), FillError> {
    let data = &ir.data;
    let code = &ir.code;
    let prog_fd = |program: Option<usize>| -> i32 {
        program
            .and_then(|p| code.programs.get(p))
            .and_then(|p| obj.progs().find(|prog| prog.name() == p.section_program.as_str()))
            .map_or(-1, |prog| prog.as_fd().as_raw_fd())
    };
    let devmap_val = |d: usize| {
        let mut v = [0u8; 8];
        v[..4].copy_from_slice(&devices[d].ifindex.to_ne_bytes());
        v[4..].copy_from_slice(&prog_fd(data.devices[d].program).to_ne_bytes());
        v
    };

    // Egress arguments, before any entry can send a packet to the device.
    for (d, device) in data.devices.iter().enumerate() {
        let Some(p) = device.program else { continue };
        let plan = &code.programs[p];
        let bytes = encode_args(plan, &device.args, devices[d].mac).map_err(|e| FillError {
            map: plan.args_map.clone(),
            what: format!("the arguments of device `{}`", device.name),
            error: libbpf_rs::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidData, e.0)),
        })?;
        update(obj, &plan.args_map, &devices[d].ifindex.to_ne_bytes(), &bytes, || format!("the arguments of device `{}`", device.name))?;
    }
    // Device slots and group members.
    for (d, device) in data.devices.iter().enumerate() {
        let slot = TargetRef::Device(d).slot();
        update(obj, names::SLOTS, &slot.to_ne_bytes(), &devmap_val(d), || format!("the slot of device `{}`", device.name))?;
        for &g in &device.groups {
            let group = &code.groups[g];
            update(obj, &group.map, &slot.to_ne_bytes(), &devmap_val(d), || format!("device `{}` in group `{}`", device.name, group.name))?;
        }
    }
    // Routes.
    let ifindex = |d: usize| devices.get(d).map(|dev| dev.ifindex);
    for route in &data.routes {
        let key = encode_key(&code.key, &route.key, &ifindex).map_err(|e| FillError {
            map: key_map(&code.key).into(),
            what: format!("route `{}` (line {})", route.text, route.line),
            error: libbpf_rs::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))),
        })?;
        let what = || format!("route `{}` (line {})", route.text, route.line);
        match (&code.key, route.target) {
            (KeyPlan::Direct { .. }, TargetRef::Device(d)) => {
                update(obj, names::ROUTES, &key, &devmap_val(d), what)?;
                if code.counters {
                    zero_counter(obj, names::KEY_COUNTERS, &key, what)?;
                }
            }
            (KeyPlan::Direct { .. }, target) => update(obj, names::GROUP_KEYS, &key, &target.slot().to_ne_bytes(), what)?,
            (_, target) => update(obj, names::KEYS, &key, &target.slot().to_ne_bytes(), what)?,
        }
    }
    write_default(obj, data)
}

/// The map the key stage stores routes in.
fn key_map(key: &KeyPlan) -> &'static str {
    match key {
        KeyPlan::Direct { .. } => names::ROUTES,
        _ => names::KEYS,
    }
}

fn write_default(obj: &Object, data: &DataPlan) -> Result<(), FillError> {
    let slot = data.default_route.map_or(devmapc::ir::SLOT_NONE, TargetRef::slot);
    update(obj, names::DEFAULT, &0u32.to_ne_bytes(), &slot.to_ne_bytes(), || "the default route".into())
}

fn update(obj: &Object, map: &str, key: &[u8], value: &[u8], what: impl Fn() -> String) -> Result<(), FillError> {
    let fail = |error| FillError { map: map.to_string(), what: what(), error };
    let handle = obj.maps().find(|m| m.name() == map).ok_or_else(|| fail(libbpf_rs::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound))))?;
    handle.update(key, value, MapFlags::ANY).map_err(fail)
}

/// A per-CPU counter entry set to zero on every CPU, so the data path finds
/// it (it only ever adds to existing entries).
fn zero_counter(obj: &Object, map: &str, key: &[u8], what: impl Fn() -> String) -> Result<(), FillError> {
    let fail = |error| FillError { map: map.to_string(), what: what(), error };
    let handle = obj.maps().find(|m| m.name() == map).ok_or_else(|| fail(libbpf_rs::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound))))?;
    let cpus = libbpf_rs::num_possible_cpus().map_err(fail)?;
    let values = vec![vec![0u8; handle.value_size() as usize]; cpus];
    handle.update_percpu(key, &values, MapFlags::ANY).map_err(fail)
}

/// The argument struct of an egress program for one device, laid out as
/// the C struct is (offsets from the plan).
pub fn encode_args(plan: &ProgramPlan, args: &[Const], mac: [u8; 6]) -> Result<Vec<u8>, ArgsError> {
    let mut bytes = vec![0u8; plan.args_size as usize];
    if args.len() != plan.params.len() {
        return Err(ArgsError(format!("`{}` takes {} arguments, the plan gives {}", plan.name, plan.params.len(), args.len())));
    }
    for (param, value) in plan.params.iter().zip(args) {
        let field: Vec<u8> = match (param.ty, value) {
            (ParamType::U8, Const::Uint(n)) if *n <= 0xff => vec![*n as u8],
            (ParamType::U16, Const::Uint(n)) if *n <= 0xffff => (*n as u16).to_ne_bytes().to_vec(),
            (ParamType::U32, Const::Uint(n)) if *n <= 0xffff_ffff => (*n as u32).to_ne_bytes().to_vec(),
            (ParamType::Mac, Const::Mac(m)) => m.to_vec(),
            (ParamType::Ipv4, Const::Ipv4(a)) => a.octets().to_vec(),
            (ParamType::Ipv6, Const::Ipv6(a)) => a.octets().to_vec(),
            (ty, value) => return Err(ArgsError(format!("argument {value:?} does not fit parameter `{}` ({ty:?})", param.name))),
        };
        let at = param.offset as usize;
        bytes[at..at + field.len()].copy_from_slice(&field);
    }
    if let Some(at) = plan.egress_mac_offset {
        bytes[at as usize..at as usize + 6].copy_from_slice(&mac);
    }
    Ok(bytes)
}
