//! `devmapc apply`: puts a build into the kernel, then keeps the kernel
//! matching each new build of the spec, transactionally.
//!
//! # The pin directory
//!
//! ```text
//! DIR/maps/<map>  DIR/progs/<prog>    the serving object's maps and programs
//! DIR/links/<device>                  one XDP link per `ingress.on` device
//! DIR/manifest                        the applied build's manifest, pinned LAST:
//!                                     without it, DIR holds no committed deployment
//! DIR/next/{maps,progs,manifest}      a code upgrade in progress
//! DIR/manifest_next                   a manifest about to replace DIR/manifest
//! DIR/devices, DIR/devices_next       the devices (ifindex, MAC) the last apply wrote
//! DIR/applying/                       present while a data change is being written
//! DIR/owned                           the ids of everything devmapc pinned here
//!                                     (crate::pins): nothing else is touched
//! DIR (flock)                         one apply (or detach) at a time
//! ```
//!
//! # What an apply does
//!
//! 1. Takes the lock, then [repairs](repair) what an apply killed midway left.
//! 2. Resolves every device of the plan in the current network namespace and
//!    checks that redirect targets can take XDP frames. Nothing has changed
//!    yet, so a missing device or a target that cannot receive fails here,
//!    with the old configuration serving untouched.
//! 3. One of:
//!    - **first load** — load, pin the maps and programs, fill them through
//!      the planner (`diff(State::fresh, desired)`), attach, pin the manifest.
//!      On a failure everything pinned so far is removed.
//!    - **data change** (same `code_hash`) — read the kernel's entries back,
//!      [`diff`] them against the new plan and [`execute`] the operations
//!      (keys that leave first, then adds and changes, then the other
//!      removals; refused if a map would overfill; undone on failure), so the map
//!      operations are proportional to the change and a live map is never
//!      cleared. With [`Options::trust_last_apply`], after a finished apply
//!      with the same devices, only the routes that differ are planned
//!      ([`diff_routes`]) and nothing is read back.
//!    - **code change** (or any change under `access = read_only` or
//!      `write_only`, whose maps cannot be rewritten or read back) — load the
//!      new object, fill its fresh maps completely under `DIR/next`, then
//!      swap each link's program with `bpf_link_update`: every packet sees
//!      either the old programs and maps or the new ones. Counters are
//!      carried over, then the new pins replace the old.
//! 4. Reconciles the links: attaches new `ingress.on` devices, detaches
//!    those no longer listed, re-attaches on a mode change or a device that
//!    came back with a new ifindex.
//! 5. Replaces the manifest (pin `manifest_next`, rename: atomic).
//!
//! Because a data change reads the kernel's state rather than trusting the
//! previous manifest, re-applying after an interruption (or after the kernel
//! removed the entries of a vanished device) converges on the spec.

use crate::deploy::{
    self, attach, check, check_privileges, entries, io_error, link_info, open_pin_dir, parse_manifest_doc,
    pin_dir_would_mount, pin_manifest_in, prepare_pin_dir, read_manifest, remove_pins, remove_staged,
    Attachment, DeployError, LinkInfo, MANIFEST_PIN,
};
use crate::fill::Device;
use crate::netdev::{self, Link, NotReady, PeerName};
use crate::pins::{self, DirFd, Entry, Record};
use crate::plan::{check_capacity, desired, diff, diff_routes, execute, read_state, Handles, Plan, State};
use devmapc::ir::{names, Ir, TargetRef};
use devmapc::model::{Access, Binding, XdpMode};
use libbpf_rs::libbpf_sys;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The staging directory of a code upgrade, inside the pin directory.
pub const NEXT: &str = "next";
/// The new manifest's pin before it is renamed over [`MANIFEST_PIN`].
pub const MANIFEST_NEXT: &str = "manifest_next";
/// The devices (ifindex, MAC) the last finished apply wrote into the maps.
pub const DEVICES: &str = "devices";
/// The new device record before it is renamed over [`DEVICES`].
pub const DEVICES_NEXT: &str = "devices_next";
/// A directory present while a data change is being written.
pub const APPLYING: &str = "applying";
/// A symlink a first load makes before its first pin: pins found without
/// it and without a manifest are someone else's, and are never removed.
pub const MARKER: &str = "devmapc";
/// What the marker points to (bpffs holds symlinks, not files).
pub(crate) const MARKER_TARGET: &str = "pin-directory-of-a-devmapc-deployment";
/// A symlink to the network namespace a deployment was first applied in,
/// as /proc names it (`net:[4026531840]`). Devices are looked up by name
/// in the caller's namespace, so an apply from another one would attach to
/// other devices: it is refused, and `status` warns.
pub const NETNS: &str = "netns";

/// Where a symlink points, as text.
fn link_text(path: &Path) -> Option<String> {
    std::fs::read_link(path).ok().map(|p| p.to_string_lossy().into_owned())
}

/// The calling thread's network namespace, as /proc names it.
pub fn current_netns() -> Option<String> {
    link_text(Path::new("/proc/thread-self/ns/net"))
}

/// Where the symlink `name` in `dir` points, read without following
/// anything (neither `dir` nor `name`).
fn record_link(dir: &Path, name: &str) -> Option<String> {
    DirFd::open(dir).ok()?.link_text(name)
}

/// `Some((recorded, current))` when the deployment in `dir` was applied in
/// another network namespace than the calling thread's ([`NETNS`]).
pub fn netns_mismatch(dir: &Path) -> Option<(String, String)> {
    match (record_link(dir, NETNS), current_netns()) {
        (Some(recorded), Some(current)) if recorded != current => Some((recorded, current)),
        _ => None,
    }
}
const DEVICES_MAP_NAME: &str = "devmapc_devs";

/// How to apply.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the deployment is pinned (`/sys/fs/bpf/devmapc/<name>`).
    pub pin_dir: PathBuf,
    /// Turn GRO on for the peer of a veth target that cannot receive.
    pub make_ready: bool,
    /// Apply even when a target cannot receive (its frames are dropped).
    pub allow_not_ready: bool,
    /// Compute and report the plan; change nothing.
    pub dry_run: bool,
    /// For a change of routes only: trust that the kernel holds what the
    /// last apply wrote and plan only the routes that differ, reading
    /// nothing back (O(change) instead of O(table); the typed API's
    /// `set_route` uses it). Ignored after an interrupted apply or when a
    /// device changed. Without it, every entry is read back and any drift
    /// is repaired.
    pub trust_last_apply: bool,
}

impl Options {
    pub fn new(pin_dir: impl Into<PathBuf>) -> Options {
        Options {
            pin_dir: pin_dir.into(),
            make_ready: false,
            allow_not_ready: false,
            dry_run: false,
            trust_last_apply: false,
        }
    }
}

/// What kind of apply it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing was deployed: loaded, filled, attached.
    First,
    /// Same code: map entries changed.
    Data,
    /// New programs swapped in.
    Code,
    /// The kernel already matched the spec.
    Unchanged,
}

/// A change to an XDP link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    Attached { device: String, mode: XdpMode, warning: Option<String> },
    Swapped { device: String },
    Reattached { device: String, mode: XdpMode, why: String },
    Detached { device: String },
}

impl fmt::Display for LinkChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkChange::Attached { device, mode, .. } => {
                write!(f, "attach {device} ({} mode)", mode_name(*mode))
            }
            LinkChange::Swapped { device } => write!(f, "swap the program of {device}"),
            LinkChange::Reattached { device, mode, why } => {
                write!(f, "re-attach {device} ({} mode): {why}", mode_name(*mode))
            }
            LinkChange::Detached { device } => write!(f, "detach {device}"),
        }
    }
}

/// What an apply did (or, with `dry_run`, would do).
#[derive(Debug)]
pub struct Report {
    pub kind: Kind,
    pub dry_run: bool,
    /// The map operations: the diff for a data change, the fill of the new
    /// maps for a first load or a code change.
    pub plan: Plan,
    /// Programs loaded (first load) or replaced (code change).
    pub programs: Vec<String>,
    pub links: Vec<LinkChange>,
    pub warnings: Vec<String>,
    /// What the apply found left by an interrupted one, and did about it.
    pub repaired: Vec<String>,
    /// Why the apply would fail (`dry_run` only): `devmapc apply --dry-run`
    /// exits 1 when there is any.
    pub would_fail: Vec<String>,
    /// Whether the kernel's entries were read back (a data change without
    /// [`Options::trust_last_apply`], or when it could not be trusted).
    pub read_back: bool,
    /// The pin directory.
    pub dir: PathBuf,
    /// Where a bpffs was mounted (or, in a dry run, would be) because none
    /// was ([`crate::bpffs::prepare_pin_dir`]).
    pub mounted_bpffs: Option<PathBuf>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.dry_run { "would " } else { "" };
        if let Some(at) = &self.mounted_bpffs {
            writeln!(f, "{would}mount a bpffs at {} (none was mounted; pins live there)", at.display())?;
        }
        for r in &self.repaired {
            writeln!(f, "repaired: {r}")?;
        }
        match self.kind {
            Kind::First => writeln!(
                f,
                "first apply: {would}load {} programs and pin them in {}",
                self.programs.len(),
                self.dir.display()
            )?,
            Kind::Code => writeln!(
                f,
                "code change: {would}load new programs ({}) into fresh maps and swap them in \
                 atomically",
                self.programs.join(", ")
            )?,
            Kind::Data => writeln!(f, "data change: {would}update map entries in place")?,
            Kind::Unchanged => writeln!(f, "unchanged: the kernel already matches the spec")?,
        }
        if !self.plan.is_empty() {
            if self.dry_run || self.kind == Kind::Data {
                write!(f, "{}", self.plan)?;
            } else {
                let t = self.plan.totals();
                writeln!(f, "map entries: {} written", t.added + t.changed)?;
            }
        }
        for link in &self.links {
            writeln!(f, "{would}{link}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        for w in &self.would_fail {
            writeln!(f, "the apply would fail: {w}")?;
        }
        Ok(())
    }
}

fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
        XdpMode::Auto => "auto",
    }
}

// ------------------------------------------------------------------- pinned

/// The maps and programs pinned in a directory, opened read-write (a
/// `write_only` key map is opened write-only, so it is never read back).
#[derive(Debug)]
pub struct Pinned {
    maps: BTreeMap<String, OwnedFd>,
    progs: BTreeMap<String, OwnedFd>,
}

impl Pinned {
    /// Opens `dir/maps/*` and `dir/progs/*`, each proven the deployment's
    /// by id ([`crate::pins`]); anything else there is an error.
    pub fn open(dir: &Path) -> Result<Pinned, DeployError> {
        let root = open_pin_dir(dir)?;
        let record = Record::read(&root)?;
        Pinned::open_in(&root, &record, &root)
    }

    /// What is pinned in `dir` (the pin directory or its `next`), with the
    /// pin directory's record, even when pins were removed by hand.
    pub(crate) fn open_partial(root: &DirFd, record: &Record, dir: &DirFd) -> Result<Pinned, DeployError> {
        let open_all = |sub: &str| -> Result<BTreeMap<String, OwnedFd>, DeployError> {
            let mut out = BTreeMap::new();
            let Some(sub) = dir.sub(sub).map_err(|e| sub_error(dir, sub, e))? else {
                return Ok(out);
            };
            for name in sub.names().map_err(|e| io_error("cannot list", sub.path(), e))? {
                if let Some(fd) = pins::get_owned(&sub, &name, record)? {
                    out.insert(name, fd);
                }
            }
            Ok(out)
        };
        if record.is_empty() {
            return Err(unrecorded(root.path()));
        }
        Ok(Pinned { maps: open_all("maps")?, progs: open_all("progs")? })
    }

    /// [`Pinned::open_partial`], refused when no program is pinned.
    pub(crate) fn open_in(root: &DirFd, record: &Record, dir: &DirFd) -> Result<Pinned, DeployError> {
        let pinned = Pinned::open_partial(root, record, dir)?;
        let dir = dir.path();
        if pinned.progs.is_empty() {
            return Err(DeployError::NotDeployed {
                dir: dir.to_path_buf(),
                why: format!("no programs pinned in {}", dir.join("progs").display()),
            });
        }
        Ok(pinned)
    }

    /// The kernel id of a pinned program.
    pub fn prog_id(&self, name: &str) -> Option<u32> {
        self.progs.get(name).and_then(|fd| prog_id(fd.as_fd()).ok())
    }
}

impl Handles for Pinned {
    fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.maps.get(name).map(|fd| fd.as_fd())
    }

    fn prog_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.progs.get(name).map(|fd| fd.as_fd())
    }
}

/// A sub-directory of a pin directory that cannot be opened.
pub(crate) fn sub_error(dir: &DirFd, name: &str, e: io::Error) -> DeployError {
    if e.kind() == io::ErrorKind::InvalidData {
        pins::foreign(&dir.path().join(name), &e.to_string())
    } else {
        io_error("cannot open", &dir.path().join(name), e)
    }
}

/// A deployment without an ownership record: made by an older devmapc.
fn unrecorded(dir: &Path) -> DeployError {
    DeployError::NotDeployed {
        dir: dir.to_path_buf(),
        why: format!(
            "there is no record of the objects devmapc pinned (`{}`): it was deployed by an \
             older devmapc, or not by devmapc. Nothing there is touched: check it, remove it \
             by hand, and apply again",
            pins::OWNED
        ),
    }
}

pub(crate) fn prog_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a zeroed bpf_prog_info of `len` bytes.
    check(unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
    Ok(info.id)
}

/// The map the spec's `access` applies to: the key stage.
pub fn key_map(ir: &Ir) -> &'static str {
    if ir.code.key.uses_slots() {
        names::KEYS
    } else {
        names::ROUTES
    }
}

// --------------------------------------------------------------------- lock

/// An exclusive `flock` on the pin directory, released on drop.
#[derive(Debug)]
pub struct Lock {
    _dir: DirFd,
    /// Whether taking the lock created the directory.
    pub created: bool,
}

impl Lock {
    /// Creates `dir` if needed and locks it, waiting for another apply or
    /// detach to finish.
    pub fn acquire(dir: &Path) -> Result<Lock, DeployError> {
        Lock::take(dir, true)
    }

    /// Locks `dir`, which must exist (for detach).
    pub fn acquire_existing(dir: &Path) -> Result<Lock, DeployError> {
        deploy::deployed_pin_dir_ready(dir)?;
        if !dir.is_dir() {
            return Err(DeployError::NotDeployed { dir: dir.to_path_buf(), why: "no such directory".into() });
        }
        Lock::take(dir, false)
    }

    fn take(dir: &Path, create: bool) -> Result<Lock, DeployError> {
        let existed = dir.is_dir();
        loop {
            if create {
                std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
            }
            // Never a symlink: it could lead to another deployment.
            let file = open_pin_dir(dir)?;
            // SAFETY: a valid fd.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(io_error("cannot lock", dir, io::Error::last_os_error()));
            }
            // A detach may have removed the directory while this waited:
            // then lock the new one.
            use std::os::unix::fs::MetadataExt;
            let held = file.metadata().map_err(|e| io_error("cannot stat", dir, e))?;
            match std::fs::symlink_metadata(dir) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Lock { _dir: file, created: !existed })
                }
                _ if create => continue,
                _ => {
                    return Err(DeployError::NotDeployed {
                        dir: dir.to_path_buf(),
                        why: "it was removed while waiting for its lock".into(),
                    })
                }
            }
        }
    }
}

// ------------------------------------------------------------------- devices

/// Every device of the plan, resolved in the current network namespace; an
/// error names the device and its line in the spec.
pub fn resolve_devices(ir: &Ir) -> Result<Vec<Link>, DeployError> {
    ir.data.devices.iter().map(|d| netdev::resolve_device(d).map_err(DeployError::Device)).collect()
}

/// The devices frames can be redirected to: route, group and default
/// targets.
pub fn redirect_targets(ir: &Ir) -> BTreeSet<usize> {
    let data = &ir.data;
    let mut out = BTreeSet::new();
    let mut add = |t: &TargetRef| match *t {
        TargetRef::Device(d) => {
            out.insert(d);
        }
        TargetRef::Group(g) => {
            for (d, device) in data.devices.iter().enumerate() {
                if device.groups.contains(&g) {
                    out.insert(d);
                }
            }
        }
    };
    for route in &data.routes {
        add(&route.target);
    }
    if let Some(t) = &data.default_route {
        add(t);
    }
    out
}

/// The reasons a redirect target of `ir` cannot take frames, once the
/// ingress program is attached (a veth whose peer is one of the spec's own
/// `ingress.on` devices in native mode is ready then). `make_ready` turns
/// GRO on for veth peers first.
pub fn check_targets(ir: &Ir, links: &[Link], make_ready: bool) -> Result<Vec<NotReady>, DeployError> {
    let ingress: Vec<&Link> =
        ir.data.devices.iter().zip(links).filter(|(d, _)| d.ingress).map(|(_, l)| l).collect();
    let min_mtu = ingress.iter().map(|l| l.mtu).max().unwrap_or(netdev::ETH_MIN_MTU);
    let native = ir.data.xdp_mode != XdpMode::Generic;
    let covered = |reason: &NotReady| match reason {
        NotReady::VethPeerNotReady { peer: PeerName::Here(peer), .. } => {
            native && ingress.iter().any(|l| &l.name == peer)
        }
        _ => false,
    };
    let mut reasons = Vec::new();
    for d in redirect_targets(ir) {
        let link = &links[d];
        let mut found: Vec<NotReady> =
            netdev::readiness(link, min_mtu).into_iter().filter(|r| !covered(r)).collect();
        // Only a peer in this namespace can be made ready from here; one
        // elsewhere stays a reason, which says where to fix it.
        if make_ready
            && found.iter().any(|r| matches!(r, NotReady::VethPeerNotReady { peer: PeerName::Here(_), .. }))
        {
            netdev::make_veth_ready(link).map_err(DeployError::Device)?;
            let again = netdev::by_index(link.ifindex).map_err(DeployError::Device)?;
            found = netdev::readiness(&again, min_mtu).into_iter().filter(|r| !covered(r)).collect();
        }
        reasons.extend(found);
    }
    Ok(reasons)
}

/// The label of a device's link pin: its name, or its ifindex when the
/// spec binds it by ifindex.
pub fn link_label(binding: &Binding) -> String {
    match binding {
        Binding::Ifname(name) => name.clone(),
        Binding::Ifindex(ifindex) => ifindex.to_string(),
    }
}

// --------------------------------------------------------------------- apply

/// Applies the build (`object` with its plan `ir`) to the deployment at
/// `opts.pin_dir`, in the current network namespace. See the module docs.
pub fn apply(object: &Path, ir: &Ir, opts: &Options) -> Result<Report, DeployError> {
    check_privileges("cannot apply")?;
    let dir = opts.pin_dir.as_path();
    let mounted_bpffs = if opts.dry_run { pin_dir_would_mount(dir)? } else { prepare_pin_dir(dir)? };
    if opts.dry_run {
        return apply_locked(object, ir, opts, mounted_bpffs);
    }
    let lock = Lock::acquire(dir)?;
    let result = apply_locked(object, ir, opts, mounted_bpffs);
    tidy_after(&lock, dir, &result);
    result
}

/// [`apply`] for a caller that holds the pin directory's lock already, so
/// that what it read of the deployment cannot change before its apply (the
/// typed API's `set_route`: read the routes, change one, apply).
pub fn apply_under_lock(lock: &Lock, object: &Path, ir: &Ir, opts: &Options) -> Result<Report, DeployError> {
    check_privileges("cannot apply")?;
    let result = apply_locked(object, ir, opts, None);
    tidy_after(lock, &opts.pin_dir, &result);
    result
}

/// A first apply that failed leaves nothing behind, not even the directory
/// its lock made (a failed load removes its pins itself).
fn tidy_after(lock: &Lock, dir: &Path, result: &Result<Report, DeployError>) {
    if result.is_err() && lock.created && entries(dir).is_ok_and(|e| e.is_empty()) {
        let _ = std::fs::remove_dir(dir);
    }
}

fn apply_locked(
    object: &Path,
    ir: &Ir,
    opts: &Options,
    mounted_bpffs: Option<PathBuf>,
) -> Result<Report, DeployError> {
    let dir = opts.pin_dir.as_path();
    let mut report = Report {
        kind: Kind::Unchanged,
        dry_run: opts.dry_run,
        plan: Plan::default(),
        programs: Vec::new(),
        links: Vec::new(),
        warnings: Vec::new(),
        repaired: Vec::new(),
        would_fail: Vec::new(),
        read_back: false,
        dir: dir.to_path_buf(),
        mounted_bpffs,
    };
    if let Some((applied_in, here)) = netns_mismatch(dir) {
        return Err(DeployError::OtherNetns { dir: dir.to_path_buf(), applied_in, here });
    }
    if !opts.dry_run {
        report.repaired = repair(dir)?;
        report.repaired.extend(restore_records(dir)?);
    }

    let links = resolve_devices(ir)?;
    let devices: Vec<Device> = links.iter().map(Device::from).collect();
    // Everything that can be checked is checked before `--make-ready`
    // changes a device.
    let texts = |r: Vec<NotReady>| r.iter().map(|r| r.to_string()).collect::<Vec<String>>();
    let reasons = check_targets(ir, &links, false)?;
    let busy = busy_ingress(ir, &links, dir)?;
    if opts.dry_run {
        for r in reasons {
            // What `--make-ready` would fix: a veth peer here without GRO.
            let fixable = matches!(r, NotReady::VethPeerNotReady { peer: PeerName::Here(_), .. });
            if opts.allow_not_ready {
                report.warnings.push(r.to_string());
            } else if opts.make_ready && fixable {
                report.warnings.push(format!("`--make-ready` would turn GRO on: {r}"));
            } else {
                report.would_fail.push(r.to_string());
            }
        }
        report.would_fail.extend(busy);
        return apply_changes(object, ir, opts, &links, &devices, report);
    }
    if !busy.is_empty() {
        return Err(DeployError::Busy(busy));
    }
    let not_ready = texts(reasons);
    let gro_before = (opts.make_ready && !not_ready.is_empty()).then(|| peer_gro(ir, &links));
    let not_ready = match &gro_before {
        Some(_) => texts(check_targets(ir, &links, true)?),
        None => not_ready,
    };
    let result = if !not_ready.is_empty() && !opts.allow_not_ready {
        Err(DeployError::NotReady(not_ready))
    } else {
        report.warnings.extend(not_ready);
        apply_changes(object, ir, opts, &links, &devices, report)
    };
    if let (Err(_), Some(before)) = (&result, gro_before) {
        // The apply changed nothing else: neither does `--make-ready`.
        for (peer, on) in before {
            if netdev::gro(&peer).is_ok_and(|now| now != on) {
                let _ = netdev::set_gro(&peer, on);
            }
        }
    }
    result
}

/// GRO of the veth peers (in this namespace) of the redirect targets, as
/// it is now: what `--make-ready` may change.
fn peer_gro(ir: &Ir, links: &[Link]) -> Vec<(String, bool)> {
    redirect_targets(ir)
        .into_iter()
        .filter_map(|d| {
            let peer = links[d].peer.filter(|p| p.netnsid.is_none())?;
            let name = netdev::by_index(peer.ifindex).ok()?.name;
            let on = netdev::gro(&name).ok()?;
            Some((name, on))
        })
        .collect()
}

/// The rest of [`apply`] once the devices are resolved and checked: the
/// first load, data change or code change.
fn apply_changes(
    object: &Path,
    ir: &Ir,
    opts: &Options,
    links: &[Link],
    devices: &[Device],
    mut report: Report,
) -> Result<Report, DeployError> {
    let dir = opts.pin_dir.as_path();
    let (links, devices) = (links.to_vec(), devices.to_vec());
    let (manifest, hashes) = manifest_and_hashes(object, ir);
    let previous = match read_manifest(dir) {
        Ok(text) => {
            let doc = parse_manifest_doc(&text).map_err(|e| {
                DeployError::Mismatch(format!(
                    "{} holds a manifest devmapc cannot read ({e}): detach it first",
                    dir.join(MANIFEST_PIN).display()
                ))
            })?;
            let code = code_identity(&doc.code_hash, doc.object_sha256.as_deref());
            Some((doc.ir, (code, doc.data_hash)))
        }
        Err(DeployError::NotDeployed { .. }) => None,
        Err(e) => return Err(e),
    };
    let programs = || ir.code.program_names();
    match previous {
        None => {
            report.kind = Kind::First;
            report.programs = programs();
            report.plan = diff(&State::fresh(ir), &desired(ir, &devices)?);
            if opts.dry_run {
                report.links = planned_links(ir, &links, None);
                return Ok(report);
            }
            first_load(object, ir, &links, dir, &mut report)?;
        }
        Some((old, before))
            if needs_reload(&before, &hashes, ir.code.access) || {
                let missing = missing_maps(dir, &old);
                if !missing.is_empty() {
                    report.repaired.push(format!(
                        "the pin of map {} was gone: the programs are loaded again with fresh \
                         maps, filled completely",
                        missing.join(", ")
                    ));
                }
                let gone = missing_progs(dir, &old);
                if !gone.is_empty() {
                    report.repaired.push(format!(
                        "the pin of program {} was gone: the programs are loaded again with fresh \
                         maps, filled completely",
                        gone.join(", ")
                    ));
                }
                !missing.is_empty() || !gone.is_empty()
            } =>
        {
            report.kind = Kind::Code;
            report.programs = programs();
            report.plan = diff(&State::fresh(ir), &desired(ir, &devices)?);
            if opts.dry_run {
                report.links = planned_links(ir, &links, Some(dir));
                return Ok(report);
            }
            upgrade(object, ir, &old, &manifest, &links, dir, &mut report)?;
        }
        Some((old, _)) => {
            let pinned = Pinned::open(dir)?;
            // Asked to trust the last apply, when it finished and the
            // devices are those it wrote: only the routes that differ are
            // planned, and nothing is read back. Otherwise the kernel's
            // entries are read and every difference (drift) is repaired.
            let trusted = opts.trust_last_apply
                && DirFd::open(dir).is_ok_and(|d| d.entry(APPLYING) == Entry::Missing)
                && read_devices(dir).as_deref() == Some(&devices[..]);
            let fast = if trusted { diff_routes(&old, ir, &devices)? } else { None };
            let mut current = None;
            report.plan = match fast {
                Some(plan) => plan,
                None => {
                    let (plan, state) = full_diff(&pinned, &old, ir, &devices)?;
                    current = Some(state);
                    report.read_back = true;
                    plan
                }
            };
            if opts.dry_run {
                report.kind = if report.plan.is_empty() { Kind::Unchanged } else { Kind::Data };
                report.links = planned_links(ir, &links, Some(dir));
                if !report.links.is_empty() && report.kind == Kind::Unchanged {
                    report.kind = Kind::Data;
                }
                return Ok(report);
            }
            let marked = !report.plan.is_empty();
            if marked {
                mark_applying(dir)?;
            }
            if let Err(e) = execute(&pinned, &report.plan) {
                if current.is_some() {
                    return Err(e.into());
                }
                // The kernel did not hold what the last apply wrote (an
                // entry changed behind devmapc's back): plan from the
                // kernel's entries instead.
                let (plan, state) = full_diff(&pinned, &old, ir, &devices)?;
                report.plan = plan;
                report.read_back = true;
                current = Some(state);
                execute(&pinned, &report.plan)?;
            }
            match reconcile_links(ir, &links, dir, &pinned) {
                Ok(changes) => report.links = changes,
                Err(e) => {
                    // Put the entries back as they were.
                    let undo = Plan {
                        ops: report.plan.ops.iter().rev().map(|op| op.inverse()).collect(),
                        warnings: Vec::new(),
                    };
                    let _ = execute(&pinned, &undo);
                    return Err(e);
                }
            }
            let _ = current;
            if old != *ir {
                replace_manifest(dir, &manifest)?;
            }
            record_devices(dir, &devices)?;
            if marked {
                let _ = std::fs::remove_dir(dir.join(APPLYING));
            }
            report.kind =
                if report.plan.is_empty() && report.links.is_empty() { Kind::Unchanged } else { Kind::Data };
        }
    }
    for change in &report.links {
        if let LinkChange::Attached { warning: Some(w), .. } = change {
            report.warnings.push(w.clone());
        }
    }
    Ok(report)
}

/// The plan from the kernel's entries (read back) to `new`'s, and those
/// entries: what repairs any drift.
fn full_diff(pinned: &Pinned, old: &Ir, new: &Ir, devices: &[Device]) -> Result<(Plan, State), DeployError> {
    let wanted = desired(new, devices)?;
    let mut current = read_state(pinned, new)?;
    // Name entries by the spec items they came from: the old plan's for
    // what goes, the new plan's for what stays.
    if let Some(before) = resolve_devices(old)
        .ok()
        .and_then(|l| desired(old, &l.iter().map(Device::from).collect::<Vec<_>>()).ok())
    {
        current.relabel(&before);
    }
    current.relabel(&wanted);
    let plan = diff(&current, &wanted);
    // Refused before any change, and by --dry-run: an add into a full map
    // would fail midway.
    check_capacity(&current, &plan)?;
    Ok((plan, current))
}

/// The maps of `ir`'s object that are not pinned in `dir` (removed by
/// hand): a data change cannot write them, a reload can.
pub(crate) fn missing_maps(dir: &Path, ir: &Ir) -> Vec<String> {
    let maps = devmapc::render::map_list(&ir.code);
    unpinned(dir, "maps", maps.iter().filter_map(|m| m["name"].as_str()).map(str::to_string))
}

/// The programs of `ir`'s object (ingress and egress) that are not pinned
/// in `dir` (removed by hand): the links still run them, but a data change
/// cannot name them, so a reload replaces them.
pub(crate) fn missing_progs(dir: &Path, ir: &Ir) -> Vec<String> {
    unpinned(dir, "progs", ir.code.program_names().into_iter())
}

/// The objects of `names` with no pin in `dir/sub`. The whole `sub` gone
/// (by hand, or moved by a code upgrade that was interrupted) is every one
/// missing; a `dir` or `sub` that cannot be read says nothing is.
fn unpinned(dir: &Path, sub: &str, names: impl Iterator<Item = String>) -> Vec<String> {
    let Ok(root) = DirFd::open(dir) else {
        return Vec::new();
    };
    let Ok(pins) = root.sub(sub) else {
        return Vec::new();
    };
    names
        .filter(|name| {
            pins.as_ref().is_none_or(|pins| {
                pins.entry(&deploy::pin_name(std::ffi::OsStr::new(name))) == Entry::Missing
            })
        })
        .collect()
}

/// devmapc's records of a committed deployment ([`MARKER`], [`NETNS`],
/// [`DEVICES`]) that are gone (removed by hand).
pub fn missing_records(dir: &Path) -> Vec<&'static str> {
    let Ok(root) = DirFd::open(dir) else {
        return Vec::new();
    };
    if root.entry(MANIFEST_PIN) == Entry::Missing {
        return Vec::new();
    }
    [MARKER, NETNS, DEVICES].into_iter().filter(|name| root.entry(name) == Entry::Missing).collect()
}

/// Puts back the marker and the namespace record of a committed deployment
/// when they were removed (the device record is written by every apply).
/// The namespace is recorded again only when every attached link of the
/// deployment holds a device of this namespace, by the name it was attached
/// by, that runs the link's program: otherwise this may not be the namespace the deployment runs in, and
/// the apply is refused.
fn restore_records(dir: &Path) -> Result<Vec<String>, DeployError> {
    let missing = missing_records(dir);
    let mut done = Vec::new();
    if missing.is_empty() {
        return Ok(done);
    }
    let root = open_pin_dir(dir)?;
    if missing.contains(&NETNS) {
        let here = current_netns().unwrap_or_else(|| "(unknown)".to_string());
        let attached: Vec<(String, LinkInfo)> = owned_links(dir)?
            .into_iter()
            .filter_map(|(label, (_, info))| info.filter(|i| i.ifindex != 0).map(|i| (label, i)))
            .collect();
        let here_too = current_netns().is_some()
            && !attached.is_empty()
            && attached.iter().all(|(label, link)| {
                netdev::by_index(link.ifindex).is_ok_and(|d| {
                    (d.name == *label || link.ifindex.to_string() == *label)
                        && [d.xdp.driver, d.xdp.generic].contains(&Some(link.prog_id))
                })
            });
        if !here_too {
            return Err(DeployError::Mismatch(format!(
                "the record of the network namespace the deployment was applied in ({}) is \
                 gone, and its links are not attached to devices of this namespace ({here}): \
                 apply from the namespace the deployment runs in (`nsenter --net=/run/netns/NAME \
                 devmapc apply …`), or `devmapc detach` it",
                dir.join(NETNS).display()
            )));
        }
        root.symlink(&here, NETNS).map_err(|e| io_error("cannot create", &dir.join(NETNS), e))?;
        done.push(format!("recorded the network namespace again ({here}): its record was gone"));
    }
    if missing.contains(&MARKER) {
        root.symlink(MARKER_TARGET, MARKER).map_err(|e| io_error("cannot create", &dir.join(MARKER), e))?;
        done.push("put back the marker of devmapc's pin directory: it was gone".to_string());
    }
    if missing.contains(&DEVICES) {
        done.push("the record of the devices was gone: written again".to_string());
    }
    Ok(done)
}

/// Marks a data change in progress (`DIR/applying`): if it is interrupted,
/// the next apply reads the kernel back instead of trusting the last apply.
fn mark_applying(dir: &Path) -> Result<(), DeployError> {
    let path = dir.join(APPLYING);
    match std::fs::create_dir(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error("cannot create", &path, e)),
    }
}

/// Records the devices an apply wrote into the maps (`DIR/devices`: their
/// ifindexes and MACs, a frozen map like the manifest), replacing the
/// record atomically.
fn record_devices(dir: &Path, devices: &[Device]) -> Result<(), DeployError> {
    let mut bytes = Vec::with_capacity(devices.len() * 12);
    for d in devices {
        bytes.extend(d.ifindex.to_ne_bytes());
        bytes.extend(d.mac);
        bytes.extend([0, 0]);
    }
    let root = open_pin_dir(dir)?;
    replace_record(&root, DEVICES_MAP_NAME, &bytes, DEVICES_NEXT, DEVICES)
}

/// Pins a record map at `next` in `root`, then renames it over `name`.
fn replace_record(
    root: &DirFd,
    map_name: &str,
    bytes: &[u8],
    next: &str,
    name: &str,
) -> Result<(), DeployError> {
    let record = Record::read(root)?;
    if let pins::Removed::Left(what) = pins::remove(root, next, &record, false)? {
        return Err(pins::foreign(&root.path().join(next), &what));
    }
    deploy::pin_blob_in(root, root, map_name, bytes, next)?;
    let target = root.path().join(name);
    root.rename(next, root, name).map_err(|e| io_error("cannot replace", &target, e))
}

/// The devices the last finished apply wrote; `None` when unknown.
pub(crate) fn read_devices(dir: &Path) -> Option<Vec<Device>> {
    let root = DirFd::open(dir).ok()?;
    let fd = pins::get_owned(&root, DEVICES, &Record::read(&root).ok()?).ok()??;
    let bytes = deploy::read_blob_fd(DEVICES_MAP_NAME, fd.as_fd()).ok()?;
    if bytes.len() % 12 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(12)
            .map(|c| Device {
                ifindex: u32::from_ne_bytes(c[..4].try_into().unwrap()),
                mac: c[4..10].try_into().unwrap(),
            })
            .collect(),
    )
}

/// A code change needs new programs and maps; so does any data change when
/// the key map is frozen (`read_only`) or cannot be read back
/// (`write_only`).
/// What decides whether the programs are loaded again: the spec's code
/// hash and the object's digest. The digest changes when the same spec is
/// compiled by another devmapc (a fix in the generated C), which the code
/// hash, a hash of the spec's meaning, cannot see.
fn code_identity(code_hash: &str, object_sha256: Option<&str>) -> String {
    format!("{code_hash}/{}", object_sha256.unwrap_or("-"))
}

fn needs_reload(old: &(String, String), new: &(String, String), access: Access) -> bool {
    old.0 != new.0 || (access != Access::ReadWrite && old.1 != new.1)
}

/// The manifest to pin: the build's own file next to the object when it
/// holds this plan. When only the data differs (a program changed routes
/// through [`crate::embed`]), one is made from `ir` with the build's
/// `code_hash` kept: the code hash covers egress bodies, which a manifest's
/// IR leaves out, so it cannot be recomputed.
pub fn manifest_text(object: &Path, ir: &Ir) -> String {
    manifest_and_hashes(object, ir).0
}

/// [`manifest_text`] with its `(code_hash, data_hash)`.
fn manifest_and_hashes(object: &Path, ir: &Ir) -> (String, (String, String)) {
    let file = object.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let name = file.split('.').next().unwrap_or("devmapc").to_string();
    let sibling = std::fs::read_to_string(object.with_file_name(format!("{name}.manifest.json"))).ok();
    let doc = sibling.as_deref().and_then(|text| parse_manifest_doc(text).ok());
    match (sibling, doc) {
        (Some(text), Some(doc)) if doc.ir == *ir => {
            let code = code_identity(&doc.code_hash, doc.object_sha256.as_deref());
            (text, (code, doc.data_hash))
        }
        (_, Some(doc)) if doc.ir.code == ir.code => {
            let text = devmapc::builder::manifest_with_code_hash(
                ir,
                &name,
                &doc.code_hash,
                doc.object_sha256.as_deref(),
            );
            let code = code_identity(&doc.code_hash, doc.object_sha256.as_deref());
            (text, (code, ir.data_hash()))
        }
        _ => {
            let digest = std::fs::read(object).ok().map(|b| devmapc::builder::object_digest(&b));
            let text = devmapc::builder::manifest(ir, &name, digest.as_deref());
            (text, (code_identity(&ir.code_hash(), digest.as_deref()), ir.data_hash()))
        }
    }
}

fn first_load(
    object: &Path,
    ir: &Ir,
    links: &[Link],
    dir: &Path,
    report: &mut Report,
) -> Result<(), DeployError> {
    let loaded = deploy::load(object, ir)?;
    let root = open_pin_dir(dir)?;
    if let Some(name) = root.names().map_err(|e| io_error("cannot list", dir, e))?.first() {
        return Err(DeployError::AlreadyPinned { path: dir.join(name) });
    }
    let result = (|| {
        root.symlink(MARKER_TARGET, MARKER).map_err(|e| io_error("cannot create", &dir.join(MARKER), e))?;
        if let Some(netns) = current_netns() {
            root.symlink(&netns, NETNS).map_err(|e| io_error("cannot create", &dir.join(NETNS), e))?;
        }
        loaded.pin_objects(&root, &root)?;
        let pinned = Pinned::open(dir)?;
        execute(&pinned, &report.plan)?;
        freeze_if_read_only(&pinned, ir)?;
        failpoint("first-before-attach");
        report.links = reconcile_links(ir, links, dir, &pinned)?;
        record_devices(dir, &links.iter().map(Device::from).collect::<Vec<_>>())?;
        failpoint("first-before-commit");
        pin_manifest_in(&root, &root, loaded.manifest(), MANIFEST_PIN)
    })();
    if let Err(e) = result {
        discard(dir);
        return Err(e);
    }
    Ok(())
}

/// Removes what devmapc pinned in `dir` (links detached first); errors are
/// ignored: this cleans up after a failure that is reported instead.
fn discard(dir: &Path) {
    let _ = remove_pins(dir);
}

fn freeze_if_read_only(pinned: &Pinned, ir: &Ir) -> Result<(), DeployError> {
    if ir.code.access != Access::ReadOnly {
        return Ok(());
    }
    let name = key_map(ir);
    let fd = pinned
        .map_fd(name)
        .ok_or_else(|| DeployError::Mismatch(format!("the staged object has no map {name} pinned")))?;
    // SAFETY: a valid map fd.
    check(unsafe { libbpf_sys::bpf_map_freeze(fd.as_raw_fd()) })
        .map(drop)
        .map_err(|e| io_error(format!("cannot freeze map {name} (access = read_only)"), Path::new(name), e))
}

/// Replaces `dir/manifest` atomically: pin the new one beside it, rename.
fn replace_manifest(dir: &Path, manifest: &str) -> Result<(), DeployError> {
    let root = open_pin_dir(dir)?;
    replace_record(&root, deploy::MANIFEST_MAP_NAME, manifest.as_bytes(), MANIFEST_NEXT, MANIFEST_PIN)
}

// -------------------------------------------------------------------- links

/// A planned link: device label, ifindex, and the device as the spec
/// names it (for messages).
struct WantedLink {
    label: String,
    ifindex: u32,
    device: String,
}

fn wanted_links(ir: &Ir, links: &[Link]) -> Vec<WantedLink> {
    ir.data
        .devices
        .iter()
        .zip(links)
        .filter(|(d, _)| d.ingress)
        .map(|(d, l)| WantedLink {
            label: link_label(&d.binding),
            ifindex: l.ifindex,
            device: format!("device `{}` (line {}, {})", d.name, d.line, l.name),
        })
        .collect()
}

/// The `ingress.on` devices that run an XDP program devmapc did not attach
/// (another tool's, or another deployment's): attaching would fail there,
/// so an apply refuses before changing anything.
fn busy_ingress(ir: &Ir, links: &[Link], dir: &Path) -> Result<Vec<String>, DeployError> {
    // A link pinned here that is not the deployment's is an error, not a
    // reason to call the device busy.
    let existing = match pinned_links(dir) {
        Ok(existing) => existing,
        Err(DeployError::NotDeployed { .. }) => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    let mut busy = Vec::new();
    for w in wanted_links(ir, links) {
        let Some(link) = links.iter().find(|l| l.ifindex == w.ifindex) else {
            continue;
        };
        // Our own link's program, when it still holds this device.
        let ours =
            existing.get(&w.label).copied().flatten().filter(|i| i.ifindex == w.ifindex).map(|i| i.prog_id);
        for (mode, id) in
            [("native", link.xdp.driver), ("generic", link.xdp.generic), ("offloaded", link.xdp.offload)]
        {
            if let Some(id) = id.filter(|id| Some(*id) != ours) {
                busy.push(format!(
                    "{} already runs XDP program id {id} in {mode} mode, not attached by \
                     this deployment",
                    w.device
                ));
            }
        }
    }
    Ok(busy)
}

/// Attaches `prog` to a wanted link's device and pins the link.
fn attach_pinned(
    prog: BorrowedFd<'_>,
    w: &WantedLink,
    mode: XdpMode,
    dir: &Path,
) -> Result<Attachment, DeployError> {
    let a = attach(prog, w.ifindex, mode).map_err(|e| e.on_device(|| w.device.clone()))?;
    a.pin(dir, &w.label)?;
    Ok(a)
}

/// Detaches and unpins links made by a step that is being undone.
fn undo_links(dir: &Path, made: &[String]) {
    deploy::unpin_links(dir, made.iter().map(String::as_str), true);
}

/// The links pinned in `dir`, by label, with their fds and what the kernel
/// says of them (`None`: the link cannot be read). Each is proven the
/// deployment's by id; anything else in `links/` is an error.
pub(crate) fn owned_links(dir: &Path) -> Result<BTreeMap<String, (OwnedFd, Option<LinkInfo>)>, DeployError> {
    let mut out = BTreeMap::new();
    let root = open_pin_dir(dir)?;
    let record = Record::read(&root)?;
    let Some(links) = root.sub("links").map_err(|e| sub_error(&root, "links", e))? else {
        return Ok(out);
    };
    for label in links.names().map_err(|e| io_error("cannot list", links.path(), e))? {
        if let Some(fd) = pins::get_owned(&links, &label, &record)? {
            let info = link_info(fd.as_fd()).ok();
            out.insert(label, (fd, info));
        }
    }
    Ok(out)
}

/// [`owned_links`] without the fds.
fn pinned_links(dir: &Path) -> Result<BTreeMap<String, Option<LinkInfo>>, DeployError> {
    Ok(owned_links(dir)?.into_iter().map(|(label, (_, info))| (label, info)).collect())
}

/// Detaches and unpins the deployment's link `label`.
fn remove_link(dir: &Path, label: &str) -> Result<(), DeployError> {
    let root = open_pin_dir(dir)?;
    let record = Record::read(&root)?;
    let Some(links) = root.sub("links").map_err(|e| sub_error(&root, "links", e))? else {
        return Ok(());
    };
    match pins::remove(&links, label, &record, true)? {
        pins::Removed::Left(what) => Err(pins::foreign(&links.path().join(label), &what)),
        _ => Ok(()),
    }
}

/// Why an existing link must be re-made, if it must.
fn stale_link(info: Option<LinkInfo>, wanted: &WantedLink, mode: XdpMode) -> Option<String> {
    let Some(info) = info else {
        return Some("its link cannot be read".into());
    };
    if info.ifindex == 0 {
        return Some(
            "its link no longer holds the device (the link was detached, or the device went \
             away and came back)"
                .into(),
        );
    }
    if info.ifindex != wanted.ifindex {
        return Some(format!("the device is now ifindex {} (was {})", wanted.ifindex, info.ifindex));
    }
    let actual = netdev::by_index(info.ifindex).ok().map(|l| {
        if l.xdp.driver == Some(info.prog_id) {
            XdpMode::Native
        } else {
            XdpMode::Generic
        }
    });
    match (mode, actual) {
        (XdpMode::Native, Some(XdpMode::Generic)) => Some("the spec now asks for native mode".into()),
        (XdpMode::Generic, Some(XdpMode::Native)) => Some("the spec now asks for generic mode".into()),
        _ => None,
    }
}

/// What [`reconcile_links`] would do, for `--dry-run`.
fn planned_links(ir: &Ir, links: &[Link], dir: Option<&Path>) -> Vec<LinkChange> {
    let mode = ir.data.xdp_mode;
    let existing = dir.and_then(|d| pinned_links(d).ok()).unwrap_or_default();
    let wanted = wanted_links(ir, links);
    let mut out = Vec::new();
    for w in &wanted {
        match existing.get(&w.label) {
            None => out.push(LinkChange::Attached { device: w.label.clone(), mode, warning: None }),
            Some(info) => {
                if let Some(why) = stale_link(*info, w, mode) {
                    out.push(LinkChange::Reattached { device: w.label.clone(), mode, why });
                }
            }
        }
    }
    for label in existing.keys() {
        if !wanted.iter().any(|w| &w.label == label) {
            out.push(LinkChange::Detached { device: label.clone() });
        }
    }
    out
}

/// Makes the pinned links match the plan: every `ingress.on` device has a
/// link running `handles`' ingress program in the plan's mode, and no other
/// link is pinned. New links are made first; on a failure they are removed
/// again and the old ones are left as they were.
fn reconcile_links<H: Handles>(
    ir: &Ir,
    links: &[Link],
    dir: &Path,
    handles: &H,
) -> Result<Vec<LinkChange>, DeployError> {
    let prog = handles
        .prog_fd(names::INGRESS)
        .ok_or_else(|| DeployError::Mismatch(format!("no program {}", names::INGRESS)))?;
    let prog_id = prog_id(prog).map_err(|e| io_error("cannot read program", dir, e))?;
    let mode = ir.data.xdp_mode;
    let owned = owned_links(dir)?;
    let existing: BTreeMap<String, Option<LinkInfo>> =
        owned.iter().map(|(label, (_, info))| (label.clone(), *info)).collect();
    let wanted = wanted_links(ir, links);
    let links_dir = dir.join("links");
    let mut changes = Vec::new();
    let mut made: Vec<String> = Vec::new();
    let attach_new = |w: &WantedLink| attach_pinned(prog, w, mode, dir);
    for w in &wanted {
        match existing.get(&w.label) {
            None => match attach_new(w) {
                Ok(a) => {
                    made.push(w.label.clone());
                    changes.push(LinkChange::Attached {
                        device: w.label.clone(),
                        mode: a.mode,
                        warning: a.warning.clone(),
                    });
                }
                Err(e) => {
                    undo_links(dir, &made);
                    return Err(e);
                }
            },
            Some(info) => {
                if let Some(why) = stale_link(*info, w, mode) {
                    // The old link goes first: a device takes one XDP link.
                    remove_link(dir, &w.label)?;
                    match attach_new(w) {
                        Ok(a) => changes.push(LinkChange::Reattached {
                            device: w.label.clone(),
                            mode: a.mode,
                            why,
                        }),
                        Err(e) => {
                            undo_links(dir, &made);
                            return Err(e);
                        }
                    }
                } else if info.is_some_and(|i| i.prog_id != prog_id) {
                    let (fd, _) = &owned[&w.label];
                    deploy::swap_fd(fd.as_fd(), &links_dir.join(&w.label), prog)?;
                    changes.push(LinkChange::Swapped { device: w.label.clone() });
                }
            }
        }
    }
    for label in existing.keys() {
        if wanted.iter().any(|w| &w.label == label) {
            continue;
        }
        remove_link(dir, label)?;
        changes.push(LinkChange::Detached { device: label.clone() });
    }
    Ok(changes)
}

// ------------------------------------------------------------------ upgrade

fn upgrade(
    object: &Path,
    ir: &Ir,
    old: &Ir,
    manifest: &str,
    links: &[Link],
    dir: &Path,
    report: &mut Report,
) -> Result<(), DeployError> {
    let loaded = deploy::load(object, ir)?;
    let root = open_pin_dir(dir)?;
    let record = Record::read(&root)?;
    // Partial: a program pin removed by hand is what this reload repairs.
    let old_pins = Pinned::open_partial(&root, &record, &root)?;
    let old_ingress = old_pins.prog_fd(names::INGRESS);
    // Stage the new object, complete, under DIR/next.
    let staged = (|| {
        let next = root.make_sub(NEXT).map_err(|e| sub_error(&root, NEXT, e))?;
        loaded.pin_objects(&root, &next)?;
        let pinned = Pinned::open_in(&root, &Record::read(&root)?, &next)?;
        execute(&pinned, &report.plan)?;
        freeze_if_read_only(&pinned, ir)?;
        pin_manifest_in(&root, &next, manifest, MANIFEST_PIN)?;
        Ok::<_, DeployError>(pinned)
    })();
    let new_pins = match staged {
        Ok(p) => p,
        Err(e) => {
            let _ = remove_staged(dir);
            return Err(e);
        }
    };
    failpoint("upgrade-before-swap");
    // Swap every link that stays; undo the swaps on a failure.
    let new_ingress = new_pins.prog_fd(names::INGRESS).expect("pinned above");
    let wanted_labels: BTreeSet<String> = wanted_links(ir, links).into_iter().map(|w| w.label).collect();
    // Devices new to `ingress.on` get their link first, with the new
    // program: the step that can fail for reasons outside devmapc (another
    // program on the device) fails while the old code still serves.
    let existing = owned_links(dir)?;
    let mut made: Vec<String> = Vec::new();
    for w in wanted_links(ir, links) {
        if existing.contains_key(&w.label) {
            continue;
        }
        match attach_pinned(new_ingress, &w, ir.data.xdp_mode, dir) {
            Ok(a) => {
                made.push(w.label.clone());
                report.links.push(LinkChange::Attached {
                    device: w.label.clone(),
                    mode: a.mode,
                    warning: a.warning.clone(),
                });
            }
            Err(e) => {
                undo_links(dir, &made);
                let _ = remove_staged(dir);
                return Err(e);
            }
        }
    }
    let mut swapped: Vec<(&OwnedFd, PathBuf)> = Vec::new();
    for (label, (fd, _)) in &existing {
        if !wanted_labels.contains(label) {
            continue;
        }
        let path = dir.join("links").join(label);
        if let Err(e) = deploy::swap_fd(fd.as_fd(), &path, new_ingress) {
            if let Some(old_ingress) = old_ingress {
                for (done, path) in &swapped {
                    let _ = deploy::swap_fd(done.as_fd(), path, old_ingress);
                }
            }
            undo_links(dir, &made);
            let _ = remove_staged(dir);
            return Err(e);
        }
        swapped.push((fd, path));
        report.links.push(LinkChange::Swapped { device: label.clone() });
        failpoint("upgrade-mid-swap");
    }
    // From here the new programs serve: finish forward, whatever happens.
    promote(dir)?;
    record_devices(dir, &links.iter().map(Device::from).collect::<Vec<_>>())?;
    let promoted = Pinned::open(dir)?;
    // Left: links of devices that came back with a new ifindex, and of
    // devices no longer in `ingress.on`. The new code serves already.
    let rest = reconcile_links(ir, links, dir, &promoted).map_err(|e| {
        DeployError::Mismatch(format!(
            "the new programs serve every attached device, but a link could not be brought \
             up to date: {e}. Fix that and apply again"
        ))
    })?;
    report.links.extend(rest);
    if let Err(e) = migrate_counters(old, &old_pins, ir, &promoted) {
        report.warnings.push(format!("counters were not carried over: {e}"));
    }
    Ok(())
}

/// Moves the staged object of `DIR/next` into place. Idempotent: run again
/// after an interruption, it finishes the move. Only the deployment's own
/// pins are unpinned, and nothing is followed.
fn promote(dir: &Path) -> Result<(), DeployError> {
    let root = open_pin_dir(dir)?;
    let record = Record::read(&root)?;
    let Some(next) = root.sub(NEXT).map_err(|e| sub_error(&root, NEXT, e))? else {
        return Ok(());
    };
    for sub in ["maps", "progs"] {
        if next.sub(sub).map_err(|e| sub_error(&next, sub, e))?.is_none() {
            continue;
        }
        if let Some(live) = root.sub(sub).map_err(|e| sub_error(&root, sub, e))? {
            for name in live.names().map_err(|e| io_error("cannot list", live.path(), e))? {
                if let pins::Removed::Left(what) = pins::remove(&live, &name, &record, false)? {
                    return Err(pins::foreign(&live.path().join(&name), &what));
                }
            }
            root.rmdir(sub).map_err(|e| io_error("cannot remove", live.path(), e))?;
        }
        failpoint("promote");
        next.rename(sub, &root, sub).map_err(|e| io_error("cannot move", &next.path().join(sub), e))?;
    }
    if next.entry(MANIFEST_PIN) == Entry::Pin && pins::get_owned(&next, MANIFEST_PIN, &record)?.is_some() {
        next.rename(MANIFEST_PIN, &root, MANIFEST_PIN)
            .map_err(|e| io_error("cannot move", &next.path().join(MANIFEST_PIN), e))?;
    }
    root.rmdir(NEXT).map_err(|e| io_error("cannot remove", next.path(), e))
}

/// Adds the old maps' counters into the new ones: per device by name, per
/// group by name, per direct key by key.
fn migrate_counters(old: &Ir, from: &Pinned, new: &Ir, to: &Pinned) -> io::Result<()> {
    if !old.code.counters || !new.code.counters {
        return Ok(());
    }
    let slot_of = |ir: &Ir, name: &str| {
        ir.data.devices.iter().position(|d| d.name == name).map(|d| TargetRef::Device(d).slot())
    };
    // Slot 0 (misses) stays slot 0.
    let mut pairs: Vec<(u32, u32)> = vec![(0, 0)];
    for d in &old.data.devices {
        if let (Some(a), Some(b)) = (slot_of(old, &d.name), slot_of(new, &d.name)) {
            pairs.push((a, b));
        }
    }
    add_counters(
        from,
        to,
        names::COUNTERS,
        pairs.iter().map(|(a, b)| (a.to_ne_bytes().to_vec(), b.to_ne_bytes().to_vec())),
    )?;
    let group_pairs = old.code.groups.iter().enumerate().filter_map(|(a, g)| {
        let b = new.code.groups.iter().position(|h| h.name == g.name)?;
        Some(((a as u32).to_ne_bytes().to_vec(), (b as u32).to_ne_bytes().to_vec()))
    });
    add_counters(from, to, names::GROUP_COUNTERS, group_pairs)?;
    if old.code.key == new.code.key {
        if let Some(fd) = from.map_fd(names::KEY_COUNTERS) {
            let keys = map_keys(fd, 4)?;
            add_counters(from, to, names::KEY_COUNTERS, keys.into_iter().map(|k| (k.clone(), k)))?;
        }
    }
    Ok(())
}

/// Per-CPU `{packets, bytes}` of `map` in `from` at each first key, added
/// into `to` at the second key (when that entry exists there).
fn add_counters(
    from: &Pinned,
    to: &Pinned,
    map: &str,
    pairs: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
) -> io::Result<()> {
    let (Some(src), Some(dst)) = (from.map_fd(map), to.map_fd(map)) else {
        return Ok(());
    };
    // SAFETY: a plain libbpf query.
    let cpus = unsafe { libbpf_sys::libbpf_num_possible_cpus() };
    let cpus = usize::try_from(cpus).map_err(|_| io::Error::from_raw_os_error(-cpus))?;
    let len = 16 * cpus;
    for (a, b) in pairs {
        let mut old = vec![0u8; len];
        let mut new = vec![0u8; len];
        if lookup(src, &a, &mut old).is_err() || lookup(dst, &b, &mut new).is_err() {
            continue;
        }
        for (n, o) in new.chunks_exact_mut(8).zip(old.chunks_exact(8)) {
            let sum = u64::from_ne_bytes(n.try_into().unwrap())
                .wrapping_add(u64::from_ne_bytes(o.try_into().unwrap()));
            n.copy_from_slice(&sum.to_ne_bytes());
        }
        // SAFETY: key and value buffers of the map's sizes.
        check(unsafe {
            libbpf_sys::bpf_map_update_elem(
                dst.as_raw_fd(),
                b.as_ptr().cast(),
                new.as_ptr().cast(),
                libbpf_sys::BPF_EXIST as u64,
            )
        })?;
    }
    Ok(())
}

fn lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    // SAFETY: buffers of the map's key and (per-CPU) value sizes.
    check(unsafe {
        libbpf_sys::bpf_map_lookup_elem(fd.as_raw_fd(), key.as_ptr().cast(), value.as_mut_ptr().cast())
    })
    .map(drop)
}

fn map_keys(fd: BorrowedFd<'_>, key_size: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut next = vec![0u8; key_size];
    let mut prev: Option<Vec<u8>> = None;
    loop {
        let prev_ptr = prev.as_ref().map_or(std::ptr::null(), |p| p.as_ptr().cast());
        // SAFETY: key buffers of the map's key size.
        let rc =
            unsafe { libbpf_sys::bpf_map_get_next_key(fd.as_raw_fd(), prev_ptr, next.as_mut_ptr().cast()) };
        if rc < 0 {
            if -rc == libc::ENOENT {
                return Ok(keys);
            }
            return Err(io::Error::from_raw_os_error(-rc));
        }
        keys.push(next.clone());
        prev = Some(next.clone());
    }
}

// ------------------------------------------------------------------- repair

/// Finishes or undoes what an interrupted apply left in `dir`; returns what
/// it did, in words.
///
/// - `DIR/next` without its manifest: staging was not complete, no link
///   was swapped: removed.
/// - `DIR/next` complete, no link running its ingress program: removed.
/// - `DIR/next` complete and some link running it: the swap was under way:
///   every link is swapped to it and it is promoted (roll forward).
/// - pins but no `DIR/manifest`: a first load that never committed:
///   everything is detached and removed.
/// - `DIR/manifest_next`: a manifest replacement that did not happen: the
///   next apply writes it again; removed.
pub fn repair(dir: &Path) -> Result<Vec<String>, DeployError> {
    let mut done = Vec::new();
    let root = open_pin_dir(dir)?;
    let record = Record::read(&root)?;
    if let Some(next) = root.sub(NEXT).map_err(|e| sub_error(&root, NEXT, e))? {
        let complete = next.entry(MANIFEST_PIN) == Entry::Pin;
        let staged_progs = next.sub("progs").map_err(|e| sub_error(&next, "progs", e))?;
        let forward = complete
            && match &staged_progs {
                Some(progs) if progs.entry(names::INGRESS) != Entry::Missing => {
                    let id = pins::get_owned(progs, names::INGRESS, &record)?
                        .and_then(|fd| prog_id(fd.as_fd()).ok());
                    pinned_links(dir)?.values().any(|i| i.is_some() && i.map(|i| i.prog_id) == id)
                }
                // The programs were already moved into place.
                _ => true,
            };
        if forward {
            let pinned = if staged_progs.is_some() {
                Pinned::open_in(&root, &record, &next)?
            } else {
                Pinned::open_in(&root, &record, &root)?
            };
            let prog = pinned
                .prog_fd(names::INGRESS)
                .ok_or_else(|| DeployError::Mismatch(format!("no program {} pinned", names::INGRESS)))?;
            for (label, (fd, _)) in owned_links(dir)? {
                let _ = deploy::swap_fd(fd.as_fd(), &dir.join("links").join(label), prog);
            }
            promote(dir)?;
            done.push("finished a code upgrade that was interrupted after its first swap".into());
        } else {
            remove_staged(dir)?;
            done.push(
                "removed the staged programs of a code upgrade that was interrupted before any swap".into(),
            );
        }
    }
    for name in [MANIFEST_NEXT, DEVICES_NEXT] {
        if let pins::Removed::Left(what) = pins::remove(&root, name, &record, false)? {
            return Err(pins::foreign(&dir.join(name), &what));
        }
    }
    // Pins without a manifest: a first load that was interrupted, if it
    // marked the directory as devmapc's; anything else is someone else's,
    // left alone (the first load then refuses to pin over it).
    if root.entry(MANIFEST_PIN) == Entry::Missing && is_ours(dir) {
        remove_pins(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        done.push("removed a first load that was interrupted before it committed".into());
    }
    Ok(done)
}

/// Whether `dir` holds devmapc's marker ([`MARKER`]), read without
/// following it.
pub fn is_ours(dir: &Path) -> bool {
    record_link(dir, MARKER).is_some_and(|t| t == MARKER_TARGET)
}

// --------------------------------------------------------------- failpoints

/// For the failure-injection tests: when `DEVMAPC_FAILPOINT` names this
/// point, the process announces it on stderr and stops there until it is
/// killed (`kill -9`), so a test can interrupt an apply at a known step.
pub(crate) fn failpoint(name: &str) {
    if std::env::var("DEVMAPC_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("devmapc: failpoint {name} reached, waiting to be killed");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
