//! A build embedded in a program: the engine behind the typed module that
//! `devmapc::Builder` generates in a build script (`devmapc::typed`).
//!
//! The program carries the build's object and manifest as bytes. A
//! [`Deployment`] writes them to a private temporary directory (the object
//! as `<name>.bpf.o` with `<name>.manifest.json` beside it, as a build
//! leaves them) and drives [`crate::apply`] with them: the first apply
//! loads, fills and attaches; [`Deployment::set_route`] and
//! [`Deployment::remove_route`] edit the plan's routes and apply again, a
//! data change that writes only the entries that differ. Counters are read
//! from the pinned maps.
//!
//! Keys and targets are untyped here ([`KeyValue`], [`TargetRef`]); the
//! generated module wraps them in the spec's own types. The value types it
//! uses for key fields ([`VlanId`], [`Mac`], [`Ipv4Prefix`],
//! [`Ipv6Prefix`]) and their conversions ([`KeyPart`]) live here.

use crate::apply;
use crate::deploy::{self, io_error, manifest_hashes, parse_manifest, read_manifest};
use devmapc::fields::Ty;
use devmapc::ir::{encode_key, names, Ir, KeyPlan};
use devmapc::scratch::PrivateDir;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

pub use crate::apply::{Options, Report};
pub use crate::deploy::{default_pin_dir, DeployError, Detached};
pub use crate::status::{Count, Status};
pub use devmapc::ir::{RouteData, TargetRef};
pub use devmapc::model::{Const, KeyValue, PrefixValue};

// ------------------------------------------------------------- deployment

/// A build, embedded as bytes, and where it is (to be) deployed.
#[derive(Debug)]
pub struct Deployment {
    files: Files,
    /// The build's name (`vlan_switch`).
    name: String,
    /// The build's `code_hash`, as its manifest says.
    code_hash: String,
    /// The plan as built.
    built: Ir,
    /// The plan as last applied or read back from the pinned manifest.
    ir: Ir,
    opts: Options,
    report: Option<Report>,
}

impl Deployment {
    /// Prepares `object` and `manifest` (a build's files, as bytes) for the
    /// deployment at `opts.pin_dir`. Touches nothing in the kernel.
    pub fn new(object: &[u8], manifest: &str, opts: Options) -> Result<Deployment, DeployError> {
        let bad = |why: String| DeployError::Mismatch(format!("the embedded manifest is unusable: {why}"));
        let (object_file, built) = parse_manifest(manifest).map_err(bad)?;
        let (code_hash, _) = manifest_hashes(manifest).ok_or_else(|| bad("it has no code_hash".into()))?;
        let name = object_file.strip_suffix(".bpf.o").unwrap_or_default().to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(format!("its object is named {object_file:?}, not NAME.bpf.o")));
        }
        let files = Files::write(&name, object, manifest)?;
        Ok(Deployment { files, name, code_hash, ir: built.clone(), built, opts, report: None })
    }

    /// Applies the build as built, in the current network namespace: a
    /// first load, or, on an existing deployment, whatever makes the kernel
    /// match the build again (routes set since are undone).
    pub fn apply(object: &[u8], manifest: &str, opts: Options) -> Result<Deployment, DeployError> {
        let mut deployment = Deployment::new(object, manifest, opts)?;
        let report = deployment.run(deployment.built.clone())?;
        deployment.report = Some(report);
        Ok(deployment)
    }

    /// The deployment of this build already pinned at `opts.pin_dir`, with
    /// the routes it has now. Changes nothing.
    pub fn open(object: &[u8], manifest: &str, opts: Options) -> Result<Deployment, DeployError> {
        let mut deployment = Deployment::new(object, manifest, opts)?;
        if !deployment.refresh()? {
            return Err(DeployError::NotDeployed {
                dir: deployment.opts.pin_dir.clone(),
                why: "no manifest pinned there".into(),
            });
        }
        Ok(deployment)
    }

    /// Routes `key` to `target`: replaces the route of `key` (keeping its
    /// spec line) or adds one, then applies. The plan is first read back
    /// from the pinned manifest, so routes changed by another process are
    /// kept; a deployment of another build is an error.
    pub fn set_route(&mut self, key: KeyValue, target: TargetRef) -> Result<Report, DeployError> {
        check_key(&self.built, &key).map_err(|why| self.bad_key(&key, why))?;
        let valid = match target {
            TargetRef::Device(d) => d < self.built.data.devices.len(),
            TargetRef::Group(g) => g < self.built.code.groups.len(),
        };
        if !valid {
            return Err(DeployError::Mismatch(format!("{} has no route target {target:?}", self.built.spec)));
        }
        let lock = self.lock()?;
        self.refresh()?;
        let mut ir = self.ir.clone();
        match ir.data.routes.iter_mut().find(|r| r.key == key) {
            Some(route) => route.target = target,
            None => {
                let text = key_text(&ir, &key);
                ir.data.routes.push(RouteData { key, text, target, line: 0 });
            }
        }
        self.run_routes(lock.as_ref(), ir)
    }

    /// Removes the route of `key`, if there is one, then applies.
    pub fn remove_route(&mut self, key: &KeyValue) -> Result<Report, DeployError> {
        check_key(&self.built, key).map_err(|why| self.bad_key(key, why))?;
        let lock = self.lock()?;
        self.refresh()?;
        let mut ir = self.ir.clone();
        ir.data.routes.retain(|r| r.key != *key);
        self.run_routes(lock.as_ref(), ir)
    }

    /// The pin directory's lock, held from reading the routes back to
    /// applying the changed ones, so that two processes changing routes at
    /// once do not undo each other's change. None for a dry run, which
    /// changes nothing.
    fn lock(&self) -> Result<Option<apply::Lock>, DeployError> {
        if self.opts.dry_run {
            return Ok(None);
        }
        deploy::prepare_pin_dir(&self.opts.pin_dir)?;
        apply::Lock::acquire(&self.opts.pin_dir).map(Some)
    }

    /// The routes as last applied or read back.
    pub fn routes(&self) -> &[RouteData] {
        &self.ir.data.routes
    }

    /// The plan as last applied or read back.
    pub fn ir(&self) -> &Ir {
        &self.ir
    }

    /// What the apply of [`Deployment::apply`] did.
    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    pub fn pin_dir(&self) -> &Path {
        &self.opts.pin_dir
    }

    /// The build's name (`vlan_switch`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything `devmapc status` shows: links, routes, counters, drift.
    pub fn status(&self) -> Result<Status, DeployError> {
        crate::status::status(&self.opts.pin_dir)
    }

    /// Frames and bytes redirected to device `device` (its index).
    pub fn counters(&self, device: usize) -> Result<Count, DeployError> {
        if device >= self.built.data.devices.len() {
            return Err(DeployError::Mismatch(format!("{} has no device #{device}", self.built.spec)));
        }
        let mut total = self.count(names::COUNTERS, TargetRef::Device(device).slot())?;
        // A direct key counts under its key, not its device's slot.
        if matches!(self.built.code.key, KeyPlan::Direct { .. }) {
            let devices = crate::apply::read_devices(&self.opts.pin_dir).unwrap_or_default();
            let ifindex = |d: usize| devices.get(d).map(|dev| dev.ifindex);
            for route in &self.ir.data.routes {
                if route.target != TargetRef::Device(device) {
                    continue;
                }
                let Ok(key) = encode_key(&self.ir.code.key, &route.key, &ifindex) else {
                    continue;
                };
                let c = self.count_at(names::KEY_COUNTERS, &key)?;
                total.packets += c.packets;
                total.bytes += c.bytes;
            }
        }
        Ok(total)
    }

    /// Frames and bytes flooded to group `group` (its index).
    pub fn group_counters(&self, group: usize) -> Result<Count, DeployError> {
        if group >= self.built.code.groups.len() {
            return Err(DeployError::Mismatch(format!("{} has no group #{group}", self.built.spec)));
        }
        self.count(names::GROUP_COUNTERS, group as u32)
    }

    /// Frames and bytes no route matched.
    pub fn misses(&self) -> Result<Count, DeployError> {
        self.count(names::COUNTERS, 0)
    }

    /// The private directory holding the object and manifest on disk
    /// (removed with the value).
    #[doc(hidden)]
    pub fn scratch_dir(&self) -> &Path {
        self.files.dir.path()
    }

    /// Detaches the deployment and removes its pins.
    pub fn detach(self) -> Result<Detached, DeployError> {
        let _lock = apply::Lock::acquire_existing(&self.opts.pin_dir)?;
        deploy::detach(&self.opts.pin_dir)
    }

    /// Applies `ir` and makes it the current plan. The manifest beside the
    /// object is rewritten to hold `ir` first (with the build's code hash),
    /// so that whatever the apply pins, a first load included, names this
    /// build's code.
    fn run(&mut self, ir: Ir) -> Result<Report, DeployError> {
        self.run_holding(None, ir)
    }

    /// [`Deployment::run`], under `lock` when the caller holds it.
    fn run_holding(&mut self, lock: Option<&apply::Lock>, ir: Ir) -> Result<Report, DeployError> {
        let text = apply::manifest_text(&self.files.object, &ir);
        Files::write_manifest(&self.files.dir, &self.name, &text)?;
        let report = match lock {
            Some(lock) => apply::apply_under_lock(lock, &self.files.object, &ir, &self.opts)?,
            None => apply::apply(&self.files.object, &ir, &self.opts)?,
        };
        if !self.opts.dry_run {
            self.ir = ir;
        }
        Ok(report)
    }

    /// [`Deployment::run`] for a change of routes alone: trusts the last
    /// apply, so only the changed routes are planned and written.
    fn run_routes(&mut self, lock: Option<&apply::Lock>, ir: Ir) -> Result<Report, DeployError> {
        let trust = std::mem::replace(&mut self.opts.trust_last_apply, true);
        let result = self.run_holding(lock, ir);
        self.opts.trust_last_apply = trust;
        result
    }

    /// Reads the plan back from the pinned manifest; `false` when nothing
    /// is deployed.
    fn refresh(&mut self) -> Result<bool, DeployError> {
        let dir = &self.opts.pin_dir;
        let text = match read_manifest(dir) {
            Ok(text) => text,
            Err(DeployError::NotDeployed { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let unreadable = |why: String| {
            DeployError::Mismatch(format!("{} holds a manifest devmapc cannot read: {why}", dir.display()))
        };
        let (_, ir) = parse_manifest(&text).map_err(unreadable)?;
        let (code_hash, _) = manifest_hashes(&text).ok_or_else(|| unreadable("no code_hash".into()))?;
        let other = |what: &str| {
            DeployError::Mismatch(format!(
                "{} runs another build than this program's {} ({what}): apply this build first, \
                 or detach the other one",
                dir.display(),
                self.name
            ))
        };
        if code_hash != self.code_hash {
            return Err(other(&format!("code {code_hash}, this program's {}", self.code_hash)));
        }
        let device_names = |ir: &Ir| ir.data.devices.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
        if device_names(&ir) != device_names(&self.built) {
            return Err(other(&format!("devices {}", device_names(&ir).join(", "))));
        }
        self.ir = ir;
        Ok(true)
    }

    fn bad_key(&self, key: &KeyValue, why: String) -> DeployError {
        DeployError::Mismatch(format!(
            "key `{}` does not fit the key of {}: {why}",
            key_text(&self.built, key),
            self.built.spec
        ))
    }

    /// The per-CPU `{packets, bytes}` of `map` at `key`, summed.
    fn count(&self, map: &str, key: u32) -> Result<Count, DeployError> {
        self.count_at(map, &key.to_ne_bytes())
    }

    /// The per-CPU `{packets, bytes}` at `key` of the pinned counter map
    /// `map`, summed; zero when the entry is missing.
    fn count_at(&self, map: &str, key: &[u8]) -> Result<Count, DeployError> {
        if !self.built.code.counters {
            return Err(DeployError::Mismatch(format!(
                "{} does not count (`counters = off` in its table)",
                self.built.spec
            )));
        }
        // Read through the pin directory without following anything, and
        // only from a map the deployment pinned (crate::pins).
        let dir = &self.opts.pin_dir;
        let path = dir.join("maps").join(map);
        let root = deploy::open_pin_dir(dir)?;
        let record = crate::pins::Record::read(&root)?;
        let maps = root.sub("maps").map_err(|e| crate::apply::sub_error(&root, "maps", e))?;
        let found = match maps {
            Some(maps) => crate::pins::get_owned(&maps, map, &record)?,
            None => None,
        };
        let fd = found.ok_or_else(|| DeployError::NotDeployed {
            dir: dir.clone(),
            why: format!("no {}", path.display()),
        })?;
        Ok(crate::status::percpu_count(fd.as_fd(), key).unwrap_or_default())
    }
}

/// The object and manifest on disk, in a private directory that goes with
/// the value.
#[derive(Debug)]
struct Files {
    dir: PrivateDir,
    object: PathBuf,
}

impl Files {
    fn write(name: &str, object: &[u8], manifest: &str) -> Result<Files, DeployError> {
        let dir = PrivateDir::new("embed")
            .map_err(|e| io_error("cannot make a private directory in", &std::env::temp_dir(), e))?;
        let object_name = format!("{name}.bpf.o");
        let object = dir
            .create(&object_name, object)
            .map_err(|e| io_error("cannot write", &dir.path().join(&object_name), e))?;
        Files::write_manifest(&dir, name, manifest)?;
        Ok(Files { dir, object })
    }

    /// (Re)writes the manifest beside the object: a fresh file renamed
    /// over the old one.
    fn write_manifest(dir: &PrivateDir, name: &str, text: &str) -> Result<PathBuf, DeployError> {
        let file = format!("{name}.manifest.json");
        dir.replace(&file, text.as_bytes()).map_err(|e| io_error("cannot write", &dir.path().join(&file), e))
    }
}

// ------------------------------------------------------------------- keys

/// Whether `key` has the shape and range of the plan's key.
fn check_key(ir: &Ir, key: &KeyValue) -> Result<(), String> {
    let fields = ir.code.key.fields();
    let parts: Vec<&KeyValue> = match key {
        KeyValue::Composite(parts) => parts.iter().collect(),
        single => vec![single],
    };
    if parts.len() != fields.len() {
        return Err(format!("{} parts, not {}", parts.len(), fields.len()));
    }
    if let KeyPlan::Lpm { .. } = ir.code.key {
        let ok = match parts[0] {
            KeyValue::Prefix(PrefixValue::V4(a, l)) if fields[0].ty() == Ty::Ipv4 => {
                Ipv4Prefix::new(*a, *l).is_some()
            }
            KeyValue::Prefix(PrefixValue::V6(a, l)) if fields[0].ty() == Ty::Ipv6 => {
                Ipv6Prefix::new(*a, *l).is_some()
            }
            _ => return Err(format!("`{}` takes a prefix of its address family", fields[0])),
        };
        return if ok {
            Ok(())
        } else {
            Err("a prefix longer than its address or with bits set after it".into())
        };
    }
    for (field, part) in fields.iter().zip(parts) {
        let ok = match (field.ty(), part) {
            (Ty::Device, KeyValue::Device(d)) => *d < ir.data.devices.len(),
            (Ty::Uint { max }, KeyValue::Const(Const::Uint(n))) => n <= &max,
            (Ty::Mac, KeyValue::Const(Const::Mac(_))) => true,
            (Ty::Ipv4, KeyValue::Const(Const::Ipv4(_))) => true,
            (Ty::Ipv6, KeyValue::Const(Const::Ipv6(_))) => true,
            _ => false,
        };
        if !ok {
            return Err(format!("`{field}` takes {}", field.ty()));
        }
    }
    Ok(())
}

/// A key as a spec writes it.
pub fn key_text(ir: &Ir, key: &KeyValue) -> String {
    match key {
        KeyValue::Const(Const::Uint(n)) => n.to_string(),
        KeyValue::Const(Const::Mac(m)) => Mac(*m).to_string(),
        KeyValue::Const(Const::Ipv4(a)) => a.to_string(),
        KeyValue::Const(Const::Ipv6(a)) => a.to_string(),
        KeyValue::Device(d) => {
            ir.data.devices.get(*d).map_or_else(|| format!("device #{d}"), |d| d.name.clone())
        }
        KeyValue::Prefix(PrefixValue::V4(a, l)) => format!("{a}/{l}"),
        KeyValue::Prefix(PrefixValue::V6(a, l)) => format!("{a}/{l}"),
        KeyValue::Composite(parts) => {
            let parts: Vec<String> = parts.iter().map(|p| key_text(ir, p)).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// A Rust value that is (part of) a route key.
pub trait KeyPart: Sized {
    fn to_key_value(&self) -> KeyValue;
    /// `None` when `value` is not one of these.
    fn from_key_value(value: &KeyValue) -> Option<Self>;
}

fn uint(value: &KeyValue) -> Option<u64> {
    match value {
        KeyValue::Const(Const::Uint(n)) => Some(*n),
        _ => None,
    }
}

macro_rules! uint_key_part {
    ($($t:ty),*) => {$(
        impl KeyPart for $t {
            fn to_key_value(&self) -> KeyValue {
                KeyValue::Const(Const::Uint(u64::from(*self)))
            }

            fn from_key_value(value: &KeyValue) -> Option<$t> {
                uint(value).and_then(|n| <$t>::try_from(n).ok())
            }
        }
    )*};
}

uint_key_part!(u8, u16, u32);

/// A VLAN id, 0 to 4095 (`vlan.id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanId(u16);

impl VlanId {
    pub const MAX: u16 = 4095;

    /// `None` above [`VlanId::MAX`].
    pub const fn new(id: u16) -> Option<VlanId> {
        if id <= VlanId::MAX {
            Some(VlanId(id))
        } else {
            None
        }
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl KeyPart for VlanId {
    fn to_key_value(&self) -> KeyValue {
        self.0.to_key_value()
    }

    fn from_key_value(value: &KeyValue) -> Option<VlanId> {
        u16::from_key_value(value).and_then(VlanId::new)
    }
}

/// A MAC address (`eth.dst`, `eth.src`); displays and parses as
/// `02:00:00:00:00:01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl From<[u8; 6]> for Mac {
    fn from(bytes: [u8; 6]) -> Mac {
        Mac(bytes)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a text is not a MAC address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadMac(pub String);

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a MAC address (six hex bytes: 02:00:00:00:00:01)", self.0)
    }
}

impl std::error::Error for BadMac {}

impl std::str::FromStr for Mac {
    type Err = BadMac;

    fn from_str(text: &str) -> Result<Mac, BadMac> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for b in &mut bytes {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(|| BadMac(text.into()))?;
            *b = u8::from_str_radix(part, 16).map_err(|_| BadMac(text.into()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(text.into()));
        }
        Ok(Mac(bytes))
    }
}

impl KeyPart for Mac {
    fn to_key_value(&self) -> KeyValue {
        KeyValue::Const(Const::Mac(self.0))
    }

    fn from_key_value(value: &KeyValue) -> Option<Mac> {
        match value {
            KeyValue::Const(Const::Mac(m)) => Some(Mac(*m)),
            _ => None,
        }
    }
}

impl KeyPart for Ipv4Addr {
    fn to_key_value(&self) -> KeyValue {
        KeyValue::Const(Const::Ipv4(*self))
    }

    fn from_key_value(value: &KeyValue) -> Option<Ipv4Addr> {
        match value {
            KeyValue::Const(Const::Ipv4(a)) => Some(*a),
            _ => None,
        }
    }
}

impl KeyPart for Ipv6Addr {
    fn to_key_value(&self) -> KeyValue {
        KeyValue::Const(Const::Ipv6(*self))
    }

    fn from_key_value(value: &KeyValue) -> Option<Ipv6Addr> {
        match value {
            KeyValue::Const(Const::Ipv6(a)) => Some(*a),
            _ => None,
        }
    }
}

macro_rules! prefix {
    ($name:ident, $addr:ty, $int:ty, $bits:literal, $variant:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            addr: $addr,
            len: u8,
        }

        impl $name {
            /// `None` when `len` is longer than the address or `addr` has
            /// bits set after it (as the spec's checker refuses them).
            pub fn new(addr: $addr, len: u8) -> Option<$name> {
                let bits = <$int>::from(addr);
                let host = if len >= $bits { 0 } else { <$int>::MAX >> len };
                (len <= $bits && bits & host == 0).then_some($name { addr, len })
            }

            pub fn addr(self) -> $addr {
                self.addr
            }

            pub fn prefix_len(self) -> u8 {
                self.len
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.addr, self.len)
            }
        }

        impl KeyPart for $name {
            fn to_key_value(&self) -> KeyValue {
                KeyValue::Prefix(PrefixValue::$variant(self.addr, self.len))
            }

            fn from_key_value(value: &KeyValue) -> Option<$name> {
                match value {
                    KeyValue::Prefix(PrefixValue::$variant(a, l)) => $name::new(*a, *l),
                    _ => None,
                }
            }
        }
    };
}

prefix!(Ipv4Prefix, Ipv4Addr, u32, 32, V4, "An IPv4 prefix (`lpm(ipv4.dst)`), `10.0.0.0/8`.");
prefix!(Ipv6Prefix, Ipv6Addr, u128, 128, V6, "An IPv6 prefix (`lpm(ipv6.dst)`), `2001:db8::/32`.");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_types_check_their_ranges() {
        assert_eq!(VlanId::new(4095).map(VlanId::get), Some(4095));
        assert_eq!(VlanId::new(4096), None);
        assert_eq!(VlanId::from_key_value(&KeyValue::Const(Const::Uint(5000))), None);
        assert_eq!(u8::from_key_value(&KeyValue::Const(Const::Uint(256))), None);
        let p = Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert_eq!(Ipv4Prefix::from_key_value(&p.to_key_value()), Some(p));
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 8), None);
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 33), None);
        assert!(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 32).is_some());
        assert!(Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0).is_some());
        assert!(Ipv6Prefix::new("2001:db8::".parse().unwrap(), 32).is_some());
        assert_eq!(Ipv6Prefix::new("2001:db8::1".parse().unwrap(), 64), None);
        let mac: Mac = "02:00:00:00:0a:FF".parse().unwrap();
        assert_eq!(mac, Mac([2, 0, 0, 0, 10, 255]));
        assert_eq!(mac.to_string(), "02:00:00:00:0a:ff");
        assert!("02:00:00:00:0a".parse::<Mac>().is_err());
        assert!("02:00:00:00:0a:ff:00".parse::<Mac>().is_err());
        assert!("2:00:00:00:0a:ff".parse::<Mac>().is_err());
    }

    fn ir(spec: &str) -> Ir {
        let model = devmapc::check_source(spec).model.expect("a valid spec");
        devmapc::lower::lower(&model, "t.devmap", spec)
    }

    #[test]
    fn keys_are_checked_against_the_plan_and_written_as_a_spec_would() {
        let composite = ir("table { key = (ingress.port, vlan.id) }\n\
             device a { ifname = \"a\" }\ndevice b { ifname = \"b\" }\n\
             ingress { on = [a] }\nroute (a, 10) -> b\n");
        let key = KeyValue::Composite(vec![KeyValue::Device(1), KeyValue::Const(Const::Uint(4095))]);
        assert_eq!(check_key(&composite, &key), Ok(()));
        assert_eq!(key_text(&composite, &key), "(b, 4095)");
        let too_big = KeyValue::Composite(vec![KeyValue::Device(1), KeyValue::Const(Const::Uint(4096))]);
        assert_eq!(check_key(&composite, &too_big), Err("`vlan.id` takes an integer 0..=4095".into()));
        let no_device = KeyValue::Composite(vec![KeyValue::Device(2), KeyValue::Const(Const::Uint(1))]);
        assert!(check_key(&composite, &no_device).is_err());
        assert!(check_key(&composite, &KeyValue::Const(Const::Uint(1))).is_err());

        let lpm = ir("table { key = lpm(ipv4.dst) }\ndevice a { ifname = \"a\" }\n\
             ingress { on = [a] }\nroute 10.0.0.0/8 -> a\n");
        let prefix = |a: [u8; 4], l| KeyValue::Prefix(PrefixValue::V4(a.into(), l));
        assert_eq!(check_key(&lpm, &prefix([10, 1, 0, 0], 16)), Ok(()));
        assert_eq!(key_text(&lpm, &prefix([10, 1, 0, 0], 16)), "10.1.0.0/16");
        assert!(check_key(&lpm, &prefix([10, 1, 0, 1], 16)).is_err());
        assert!(check_key(&lpm, &KeyValue::Const(Const::Ipv4([10, 0, 0, 1].into()))).is_err());
    }
}
