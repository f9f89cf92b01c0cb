//! Writes the data part of a plan (devices, routes, groups, egress
//! arguments, the default route) into a loaded object's maps.
//!
//! What goes where is planned by `plan.rs` ([`desired`], ordered by
//! [`diff`]); DEVMAP_HASH has no batch operations (docs/kernel.md), so
//! filling is one `bpf()` call per entry, never pointing at something not
//! yet there.

use crate::plan::{write_fresh, PlanError};
use devmapc::ir::{Ir, ParamType, ProgramPlan};
use devmapc::model::Const;
use libbpf_rs::Object;
use std::fmt;

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
/// device `i` of the plan. The entries are the planner's ([`emit`](crate::plan::emit), what
/// [`crate::plan::desired`] collects): one source of truth for what the
/// maps hold, whether an object is filled here or by `apply`; they are
/// written as they come ([`write_fresh`](crate::plan::write_fresh)), one `bpf()` call each.
pub fn fill(obj: &Object, ir: &Ir, devices: &[Device]) -> Result<(), FillError> {
    write_fresh(obj, ir, devices).map_err(|e| match e {
        PlanError::Write { map, what, error } => {
            FillError { map, what, error: libbpf_rs::Error::from(error) }
        }
        e => FillError {
            map: String::new(),
            what: e.to_string(),
            error: libbpf_rs::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            )),
        },
    })
}

/// The argument struct of an egress program for one device, laid out as
/// the C struct is (offsets from the plan).
pub fn encode_args(plan: &ProgramPlan, args: &[Const], mac: [u8; 6]) -> Result<Vec<u8>, ArgsError> {
    let mut bytes = vec![0u8; plan.args_size as usize];
    if args.len() != plan.params.len() {
        return Err(ArgsError(format!(
            "`{}` takes {} arguments, the plan gives {}",
            plan.name,
            plan.params.len(),
            args.len()
        )));
    }
    for (param, value) in plan.params.iter().zip(args) {
        let field: Vec<u8> = match (param.ty, value) {
            (ParamType::U8, Const::Uint(n)) if *n <= 0xff => vec![*n as u8],
            (ParamType::U16, Const::Uint(n)) if *n <= 0xffff => (*n as u16).to_ne_bytes().to_vec(),
            (ParamType::U32, Const::Uint(n)) if *n <= 0xffff_ffff => (*n as u32).to_ne_bytes().to_vec(),
            (ParamType::Mac, Const::Mac(m)) => m.to_vec(),
            (ParamType::Ipv4, Const::Ipv4(a)) => a.octets().to_vec(),
            (ParamType::Ipv6, Const::Ipv6(a)) => a.octets().to_vec(),
            (ty, value) => {
                return Err(ArgsError(format!(
                    "argument {value:?} does not fit parameter `{}` ({ty:?})",
                    param.name
                )))
            }
        };
        let at = param.offset as usize;
        bytes[at..at + field.len()].copy_from_slice(&field);
    }
    if let Some(at) = plan.egress_mac_offset {
        bytes[at as usize..at as usize + 6].copy_from_slice(&mac);
    }
    Ok(bytes)
}
