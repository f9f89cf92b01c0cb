//! Puts a built object to work: load it, fill its maps, pin it, attach the
//! ingress program through BPF links, swap programs in place, and take it
//! all down again.
//!
//! The runtime never parses a spec: it takes the object and the build's IR
//! (read from the manifest, see [`read_manifest_file`]).
//!
//! ```text
//! probe()                         what the kernel supports (called by load)
//! load(obj, ir)        -> Loaded  open, BPF_XDP_DEVMAP for egress programs, load
//! Loaded::fill(devices)           write the plan into the maps (fill.rs)
//! Loaded::pin(dir)                dir/maps/<map>, dir/progs/<prog>, dir/manifest
//!                                 (a `.` in a name becomes `_`: see [`pin_name`])
//! Loaded::attach_planned(devices, dir)  every `ingress.on` device, pinned
//! Loaded::attach_ingress(ifindex, mode) / attach(prog, ifindex, mode)
//!                      -> Attachment (a BPF link), Attachment::pin(dir, label)
//!                                 dir/links/<label>
//! swap(link_pin, prog)            bpf_link_update: atomic program replacement
//! detach(dir)                     detach every pinned link, remove every pin
//! ```
//!
//! Kernel facts this module is built on (checked on Linux 6.18):
//! - A pinned BPF link keeps the program attached after the process that
//!   made it exits; `BPF_LINK_DETACH` takes it off at once, whoever else
//!   holds the link.
//! - bpffs only holds BPF objects, directories and symlinks: creating a
//!   regular file there fails with EPERM, and so does a pin whose name has
//!   a `.`. The manifest is therefore kept in the kernel too, as a frozen
//!   one-entry array map pinned at `dir/manifest` ([`read_manifest`] reads
//!   it back), so it lives and dies with the pins and needs no second
//!   directory.
//! - `ip netns exec` mounts a fresh sysfs on /sys, where /sys/fs/bpf is an
//!   empty sysfs directory: see [`crate::bpffs`].
//!
//! Calls that take an ifindex (attach, and [`Loaded::fill`]) resolve it in
//! the calling thread's network namespace.

use crate::fill::{fill, Device, FillError};
use devmapc::ir::{names, Ir};
use devmapc::model::{Binding, XdpMode};
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, Object, ObjectBuilder, PrintCallback, PrintLevel, ProgramAttachType};
use std::cell::RefCell;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::bpffs::{
    deployed_pin_dir_ready, pin_dir_ready, pin_dir_would_mount, prepare_pin_dir, BPF_FS_MAGIC,
};
use crate::pins::{self, DirFd};
/// Where deployments are pinned unless told otherwise: `<root>/<name>/`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/devmapc";
/// The pin of the manifest map inside a pin directory.
pub const MANIFEST_PIN: &str = "manifest";
/// The kernel name of the manifest map (at most 15 bytes).
pub(crate) const MANIFEST_MAP_NAME: &str = "dmc_manifest";
/// Lines of the verifier log quoted in a [`DeployError::Verifier`].
pub const VERIFIER_LOG_TAIL: usize = 20;

/// `/sys/fs/bpf/devmapc/<name>`.
pub fn default_pin_dir(name: &str) -> PathBuf {
    Path::new(DEFAULT_PIN_ROOT).join(name)
}

// -------------------------------------------------------------------- errors

/// Everything that can go wrong while deploying; each variant displays as
/// one message that says what failed and what to do.
#[derive(Debug)]
pub enum DeployError {
    /// The process lacks capabilities (names them).
    Privileges { missing: Vec<&'static str>, doing: String },
    /// The pin directory is not on a bpffs.
    NotBpffs {
        dir: PathBuf,
        /// The path that was checked: `dir` or its nearest existing parent.
        checked: PathBuf,
        fs: String,
        /// It looks like `ip netns exec` (a fresh sysfs where the host's
        /// bpffs would be, or a mount that would not outlive the command):
        /// the message explains that case.
        netns_exec: bool,
    },
    /// Nothing devmapc pinned is in this directory.
    NotDeployed { dir: PathBuf, why: String },
    /// Something is already pinned where a pin was to go.
    AlreadyPinned { path: PathBuf },
    /// The kernel lacks a feature the plan needs.
    Unsupported(String),
    /// The verifier rejected a program; `log_tail` is the end of its log.
    Verifier { object: PathBuf, program: String, error: String, log_tail: String },
    /// Opening or loading the object failed otherwise.
    Load { object: PathBuf, error: String, log_tail: String },
    /// The object, the IR or the devices do not go together.
    Mismatch(String),
    /// Writing the plan into the maps failed.
    Fill(FillError),
    /// Attaching to a device failed.
    Attach {
        ifindex: u32,
        /// The spec's device, with its line, when the caller knows it.
        device: Option<String>,
        mode: XdpMode,
        error: String,
    },
    /// Replacing a link's program failed.
    Swap { link: PathBuf, error: String },
    /// A device of the plan is not in this network namespace.
    Device(crate::NetdevError),
    /// Redirect targets that cannot take XDP frames: one line per reason.
    NotReady(Vec<String>),
    /// `ingress.on` devices that already run an XDP program devmapc did not
    /// attach: one line per device.
    Busy(Vec<String>),
    /// The deployment was applied in another network namespace.
    OtherNetns { dir: PathBuf, applied_in: String, here: String },
    /// A map operation of an apply failed (and was rolled back).
    Apply(crate::ApplyError),
    /// The plan and the devices or maps do not go together.
    Plan(crate::PlanError),
    /// An entry of a pin directory that is not provably the deployment's
    /// own (a symlink, a directory where a pin goes, or an object it did
    /// not pin): never followed, unpinned or detached.
    Foreign { path: PathBuf, what: String },
    /// A file system or BPF call on a path failed.
    Io { what: String, path: PathBuf, error: io::Error },
}

impl fmt::Display for DeployError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployError::Privileges { missing, doing } => write!(
                f,
                "{doing}: missing capabilities {}. devmapc needs CAP_BPF and CAP_NET_ADMIN \
                 (run it as root, or grant them, e.g. `setcap \
                 cap_bpf,cap_net_admin,cap_dac_override+ep`: CAP_DAC_OVERRIDE reaches the pins \
                 under the root-owned /sys/fs/bpf), and CAP_SYS_ADMIN as well to work in \
                 another network namespace (`nsenter --net=/run/netns/NAME`)",
                missing.join(", ")
            ),
            DeployError::NotBpffs { dir, checked, fs, netns_exec: false } => write!(
                f,
                "cannot pin under {}: {} is on {fs}, not on a bpffs, and BPF objects can only be \
                 pinned on a bpffs. Pass `--pin-dir` (or `--pin-root`) a directory on a mounted \
                 bpffs, such as one under /sys/fs/bpf, or mount one there first (`mount -t bpf \
                 bpf DIR`)",
                dir.display(),
                checked.display()
            ),
            DeployError::NotBpffs { dir, checked, fs, .. } => write!(
                f,
                "cannot pin under {}: {} is on {fs}, not on a bpffs, so pins could not be \
                 made there or would not outlive this command. This is what happens under \
                 `ip netns exec`, which mounts a fresh /sys for the namespace: mounting a bpffs \
                 there would die with the command and take the attachment with it. Run \
                 `nsenter --net=/run/netns/NAME devmapc ...` instead (it switches only the \
                 network namespace and keeps the host's /sys/fs/bpf), or pass `--pin-dir` a \
                 directory on a bpffs that outlives the command (`mount -t bpf bpf /sys/fs/bpf` \
                 on the host)",
                dir.display(),
                checked.display()
            ),
            DeployError::NotDeployed { dir, why } => {
                write!(f, "nothing deployed by devmapc at {}: {why}", dir.display())
            }
            DeployError::AlreadyPinned { path } => write!(
                f,
                "{} already exists: another deployment is pinned there; detach it first \
                 (`devmapc detach`), or swap the new programs in",
                path.display()
            ),
            DeployError::Unsupported(what) => f.write_str(what),
            DeployError::Verifier { object, program, error, log_tail } => write!(
                f,
                "the kernel's verifier rejected program `{program}` of {} ({error}); the end of \
                 its log:\n{log_tail}",
                object.display()
            ),
            DeployError::Load { object, error, log_tail } => {
                write!(f, "cannot load {}: {error}", object.display())?;
                if !log_tail.is_empty() {
                    write!(f, "\nlibbpf said:\n{log_tail}")?;
                }
                Ok(())
            }
            DeployError::Mismatch(what) => f.write_str(what),
            DeployError::Fill(e) => write!(f, "{e}"),
            DeployError::Attach { ifindex, device, mode, error } => match device {
                Some(device) => write!(
                    f,
                    "cannot attach the ingress program in {} mode to {device} (ifindex \
                     {ifindex}): {error}",
                    mode_name(*mode)
                ),
                None => write!(
                    f,
                    "cannot attach in {} mode to the device with ifindex {ifindex}: {error}",
                    mode_name(*mode)
                ),
            },
            DeployError::Swap { link, error } => {
                write!(f, "cannot swap the program of link {}: {error}", link.display())
            }
            DeployError::Io { what, path, error } => {
                write!(f, "{what} {}: {error}", path.display())?;
                if error.raw_os_error() == Some(libc::EACCES) {
                    write!(
                        f,
                        " (a bpffs is mounted root-only, mode 0700: run devmapc as root, give it \
                         CAP_DAC_OVERRIDE, or pass --pin-dir a directory on a bpffs you own)"
                    )?;
                }
                Ok(())
            }
            DeployError::Device(e) => write!(f, "{e}"),
            DeployError::NotReady(reasons) => {
                write!(f, "some redirect targets cannot receive XDP frames:")?;
                for reason in reasons {
                    write!(f, "\n  - {reason}")?;
                }
                write!(
                    f,
                    "\n`--make-ready` turns GRO on for the peer of a veth target; \
                     `--allow-not-ready` applies anyway (the frames a target cannot take are dropped)"
                )
            }
            DeployError::Busy(devices) => {
                write!(f, "cannot attach the ingress program: a device takes one XDP program, and")?;
                for d in devices {
                    write!(f, "\n  - {d}")?;
                }
                write!(
                    f,
                    "\nremove it first (`ip link set dev DEV xdp off` or `bpftool net detach`; \
                     `devmapc detach NAME` for another devmapc deployment). Nothing was changed."
                )
            }
            DeployError::OtherNetns { dir, applied_in, here } => write!(
                f,
                "the deployment in {} was applied in network namespace {applied_in}, and this \
                 is {here}: devices are looked up by name in the current namespace, so applying \
                 from here would attach to other devices. Run devmapc in the deployment's \
                 namespace (`nsenter --net=/run/netns/NAME devmapc ...`), or detach it to deploy \
                 here",
                dir.display()
            ),
            DeployError::Apply(e) => write!(f, "{e}"),
            DeployError::Plan(e) => write!(f, "{e}"),
            DeployError::Foreign { path, what } => write!(
                f,
                "{} is not this deployment's: {what}. devmapc never follows a symlink in a pin \
                 directory and never unpins or detaches an object it did not pin; nothing was \
                 changed. Look at what it is, remove it by hand if it does not belong there, and \
                 run the command again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DeployError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeployError::Fill(e) => Some(e),
            DeployError::Device(e) => Some(e),
            DeployError::Apply(e) => Some(e),
            DeployError::Plan(e) => Some(e),
            DeployError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<crate::ApplyError> for DeployError {
    fn from(e: crate::ApplyError) -> Self {
        DeployError::Apply(e)
    }
}

impl From<crate::PlanError> for DeployError {
    fn from(e: crate::PlanError) -> Self {
        DeployError::Plan(e)
    }
}

impl From<FillError> for DeployError {
    fn from(e: FillError) -> Self {
        DeployError::Fill(e)
    }
}

fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
        XdpMode::Auto => "auto",
    }
}

pub(crate) fn io_error(what: impl Into<String>, path: &Path, error: io::Error) -> DeployError {
    DeployError::Io { what: what.into(), path: path.to_path_buf(), error }
}

/// A libbpf return value (negative errno) as a `Result`.
pub(crate) fn check(rc: i32) -> Result<i32, io::Error> {
    if rc < 0 {
        Err(io::Error::from_raw_os_error(-rc))
    } else {
        Ok(rc)
    }
}

pub(crate) fn cstring(path: &Path) -> Result<CString, DeployError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_error("bad path", path, io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
    })
}

// ---------------------------------------------------------------- privileges

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Checks that the calling thread may load BPF and attach XDP: CAP_BPF (or
/// CAP_SYS_ADMIN, which implies it) and CAP_NET_ADMIN, read from its
/// effective set. When the set cannot be read, the kernel decides later.
pub fn check_privileges(doing: &str) -> Result<(), DeployError> {
    let Some(caps) = effective_caps() else {
        return Ok(());
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DeployError::Privileges { missing, doing: doing.to_string() })
    }
}

/// The calling thread's effective capabilities (they are per thread).
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// An EPERM from the kernel: name what is missing, or say that something
/// else (lockdown, an LSM) refused although the capabilities are there.
pub(crate) fn permission_error(doing: &str, error: &io::Error) -> Option<DeployError> {
    if error.raw_os_error() != Some(libc::EPERM) {
        return None;
    }
    check_privileges(doing).err()
}

// ------------------------------------------------------------------- probing

/// What the running kernel supports of what devmapc uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Support {
    /// `uname -r`.
    pub kernel: String,
    /// BPF_MAP_TYPE_DEVMAP_HASH exists (Linux 5.4).
    pub devmap_hash: bool,
    /// Devmap values of 8 bytes (`struct bpf_devmap_val`: ifindex and an
    /// egress program; Linux 5.8). Without, values are the ifindex only.
    pub egress_programs: bool,
    /// `bpf_redirect_map` takes `BPF_F_BROADCAST` (Linux 5.15): groups.
    pub broadcast: bool,
}

/// Probes the kernel: creates a tiny DEVMAP_HASH with 8-byte, then 4-byte
/// values, and test-runs a four-instruction XDP program that redirects
/// with `BPF_F_BROADCAST | XDP_PASS` on an empty devmap: a kernel that
/// knows the flag returns XDP_REDIRECT, an older one XDP_ABORTED (unknown
/// flag bits). Everything it creates is freed on return.
pub fn probe() -> Result<Support, DeployError> {
    const DOING: &str = "cannot probe the kernel";
    check_privileges(DOING)?;
    let kernel = kernel_release();
    let create = |kind, value_size| -> Result<Option<OwnedFd>, DeployError> {
        match create_map(kind, "dmc_probe", 4, value_size, 1, 0) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(permission_error(DOING, &e).unwrap_or_else(|| {
                DeployError::Unsupported(format!("{DOING}: creating a devmap failed: {e} (kernel {kernel})"))
            })),
        }
    };
    let hash = libbpf_sys::BPF_MAP_TYPE_DEVMAP_HASH;
    let (devmap_hash, egress_programs, map) = match create(hash, 8)? {
        Some(map) => (true, true, map),
        None => match create(hash, 4)? {
            Some(map) => (true, false, map),
            None => match create(libbpf_sys::BPF_MAP_TYPE_DEVMAP, 4)? {
                Some(map) => (false, false, map),
                None => {
                    return Err(DeployError::Unsupported(format!(
                        "kernel {kernel} has no devmap at all (Linux 4.14 or later needed)"
                    )))
                }
            },
        },
    };
    let broadcast = probe_broadcast(map.as_fd()).map_err(|e| {
        permission_error(DOING, &e).unwrap_or_else(|| {
            DeployError::Unsupported(format!(
                "{DOING}: the broadcast probe program failed: {e} (kernel {kernel})"
            ))
        })
    })?;
    Ok(Support { kernel, devmap_hash, egress_programs, broadcast })
}

/// Refuses a plan this kernel cannot run, saying what is missing. Nothing
/// degrades silently: the generated object always uses 8-byte devmap
/// values, so an older kernel cannot load it even without egress programs.
pub fn check_support(support: &Support, ir: &Ir) -> Result<(), DeployError> {
    let kernel = &support.kernel;
    if !support.devmap_hash {
        return Err(DeployError::Unsupported(format!(
            "kernel {kernel} has no BPF_MAP_TYPE_DEVMAP_HASH: devmapc needs Linux 5.8 or later"
        )));
    }
    if !support.egress_programs {
        return Err(DeployError::Unsupported(format!(
            "kernel {kernel} takes only 4-byte devmap values (no egress programs): devmapc's \
             objects use 8-byte values and need Linux 5.8 or later"
        )));
    }
    if !support.broadcast && !ir.code.groups.is_empty() {
        let groups: Vec<&str> = ir.code.groups.iter().map(|g| g.name.as_str()).collect();
        return Err(DeployError::Unsupported(format!(
            "kernel {kernel} cannot broadcast (BPF_F_BROADCAST, Linux 5.15), which groups \
             need: the spec declares {}; remove them or upgrade the kernel",
            groups.join(", ")
        )));
    }
    if let (Some(node), Some(online)) = (ir.code.numa_node, online_numa_nodes()) {
        if !online.contains(&node) {
            let list: Vec<String> = online.iter().map(u32::to_string).collect();
            return Err(DeployError::Unsupported(format!(
                "`numa_node = {node}`: this machine has no NUMA node {node} (online: {}); the \
                 kernel would refuse to create the maps there",
                list.join(", ")
            )));
        }
    }
    Ok(())
}

/// The online NUMA nodes (`/sys/devices/system/node/online`, e.g. `0-1,3`);
/// `None` when the kernel does not say.
fn online_numa_nodes() -> Option<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/node/online").ok()?;
    let mut nodes = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        nodes.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?);
    }
    Some(nodes)
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct with NUL-terminated strings.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "(unknown)".into();
    }
    let bytes: Vec<u8> = uts.release.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn create_map(
    kind: libbpf_sys::bpf_map_type,
    name: &str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let name = CString::new(name).expect("static map names have no NUL");
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: flags,
        ..Default::default()
    };
    // SAFETY: valid name and options; the returned fd is ours.
    let fd = check(unsafe {
        libbpf_sys::bpf_map_create(kind, name.as_ptr(), key_size, value_size, max_entries, &opts)
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> libbpf_sys::bpf_insn {
    let mut insn = libbpf_sys::bpf_insn { code, off, imm, ..Default::default() };
    insn.set_dst_reg(dst);
    insn.set_src_reg(src);
    insn
}

/// Loads `r0 = bpf_redirect_map(map, 0, BPF_F_BROADCAST | XDP_PASS)` and
/// test-runs it once.
fn probe_broadcast(map: BorrowedFd<'_>) -> io::Result<bool> {
    const XDP_REDIRECT: u32 = 4;
    let flags = libbpf_sys::BPF_F_BROADCAST as i32 | 2; // XDP_PASS on a miss
    let insns = [
        // r1 = map (ld_imm64 with a map fd: two instructions)
        insn(0x18, 1, libbpf_sys::BPF_PSEUDO_MAP_FD as u8, 0, map.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
        insn(0xb7, 2, 0, 0, 0),     // r2 = 0
        insn(0xb7, 3, 0, 0, flags), // r3 = flags
        insn(0x85, 0, 0, 0, libbpf_sys::BPF_FUNC_redirect_map as i32),
        insn(0x95, 0, 0, 0, 0), // exit
    ];
    let name = CString::new("dmc_probe").unwrap();
    let license = CString::new("GPL").unwrap();
    // SAFETY: the instructions outlive the call; default options.
    let fd = check(unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            std::ptr::null_mut(),
        )
    })?;
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    let packet = [0u8; 64];
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: packet.as_ptr().cast(),
        data_size_in: packet.len() as u32,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: the input outlives the call; no output buffers.
    check(unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) })?;
    Ok(opts.retval == XDP_REDIRECT)
}

// ------------------------------------------------------------------- loading

/// A loaded object with its plan: programs verified, maps created (and,
/// after [`Loaded::fill`], filled). Dropping it releases everything that is
/// not pinned or attached.
#[derive(Debug)]
pub struct Loaded {
    obj: Object,
    ir: Ir,
    name: String,
    manifest: String,
    path: PathBuf,
}

/// Loads the object at `obj_path` for the plan `ir`: probes the kernel
/// ([`probe`], [`check_support`]), opens the object, makes sure every
/// `devmapc_egress_*` program is loaded as `BPF_XDP_DEVMAP`, and loads it.
///
/// libbpf's messages are captured during the load (and not printed): when
/// the verifier rejects a program, the error names it and quotes the last
/// [`VERIFIER_LOG_TAIL`] lines of its log.
///
/// The manifest kept with the pins is `<name>.manifest.json` next to the
/// object, verbatim, when it holds this plan; else one is rebuilt from
/// `ir`. (A rebuilt `code_hash` is the build's only when `ir` came from the
/// compiler: egress bodies, which the hash covers, are not in manifests.)
pub fn load(obj_path: &Path, ir: &Ir) -> Result<Loaded, DeployError> {
    check_privileges("cannot load BPF programs")?;
    check_support(&probe()?, ir)?;
    let name = object_name(obj_path);
    // Read once: the bytes checked against the manifest are the bytes loaded.
    let bytes = std::fs::read(obj_path).map_err(|e| DeployError::Load {
        object: obj_path.to_path_buf(),
        error: e.to_string(),
        log_tail: String::new(),
    })?;
    let digest = devmapc::builder::object_digest(&bytes);
    let manifest = match sibling_manifest(obj_path, &name, ir, &digest)? {
        Some(text) => text,
        None => devmapc::builder::manifest(ir, &name, Some(&digest)),
    };
    let (result, log) = with_libbpf_log(|| -> Result<Object, (String, bool)> {
        let mut builder = ObjectBuilder::default();
        builder.name(&name).map_err(|e| (format!("{e:#}"), false))?;
        let mut open = builder.open_memory(&bytes).map_err(|e| (format!("{e:#}"), false))?;
        for mut prog in open.progs_mut() {
            if prog.name().as_bytes().starts_with(b"devmapc_egress_") {
                prog.set_attach_type(ProgramAttachType::XdpDevmap);
            }
        }
        open.load().map_err(|e| (format!("{e:#}"), true))
    });
    let obj = match result {
        Ok(obj) => obj,
        Err((error, loading)) => {
            if let Some((program, log_tail)) = verifier_log(&log) {
                return Err(DeployError::Verifier {
                    object: obj_path.to_path_buf(),
                    program,
                    error,
                    log_tail,
                });
            }
            if loading && error.contains("(os error 1)") {
                check_privileges("cannot load BPF programs")?;
            }
            return Err(DeployError::Load {
                object: obj_path.to_path_buf(),
                error,
                log_tail: tail(&log, VERIFIER_LOG_TAIL),
            });
        }
    };
    let loaded = Loaded { obj, ir: ir.clone(), name, manifest, path: obj_path.to_path_buf() };
    loaded.check_matches()?;
    Ok(loaded)
}

/// Reads a build manifest (`<name>.manifest.json`): the object's path (next
/// to the manifest) and the plan. The object must be the one the manifest
/// was built with (its `object_sha256`, see [`check_object_digest`]);
/// [`load`] checks the bytes it loads again.
pub fn read_manifest_file(path: &Path) -> Result<(PathBuf, Ir), DeployError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error("cannot read", path, e))?;
    let doc = parse_manifest_doc(&text)
        .map_err(|e| DeployError::Mismatch(format!("{} is not a devmapc manifest: {e}", path.display())))?;
    // The object is a file name beside the manifest, never a path.
    let object_file = Path::new(&doc.object);
    if doc.object.is_empty() || object_file.components().count() != 1 || object_file.file_name().is_none() {
        return Err(DeployError::Mismatch(format!(
            "{} is not a devmapc manifest: `object` must name a file beside it, not {:?}",
            path.display(),
            doc.object
        )));
    }
    let object = path.with_file_name(&doc.object);
    let bytes = std::fs::read(&object).map_err(|e| io_error("cannot read", &object, e))?;
    let digest = devmapc::builder::object_digest(&bytes);
    check_manifest(path, &doc, &object, &digest)?;
    Ok((object, doc.ir))
}

/// Refuses an object that is not the one the manifest at `manifest` was
/// built with (`found`: [`devmapc::builder::object_digest`] of its
/// bytes). A manifest without a digest (written by a devmapc before
/// manifests were bound to their objects) is refused too: nothing would
/// show that the object is not a stale one, so it asks for a rebuild.
pub fn check_object_digest(
    manifest: &Path,
    expected: Option<&str>,
    object: &Path,
    found: &str,
) -> Result<(), DeployError> {
    match expected {
        Some(expected) if expected == found => Ok(()),
        Some(expected) => Err(DeployError::Mismatch(format!(
            "{} is not the object {} was built with (its SHA-256 is {found}, the manifest's \
             `object_sha256` is {expected}): the object or the manifest is stale. Rebuild both \
             with one `devmapc build` (`--emit obj,manifest`); nothing was loaded",
            object.display(),
            manifest.display()
        ))),
        None => Err(DeployError::Mismatch(format!(
            "{} has no `object_sha256` (an older devmapc wrote it), so nothing shows that {} \
             is the object it was built with: rebuild with `devmapc build`; nothing was loaded",
            manifest.display(),
            object.display()
        ))),
    }
}

/// [`check_object_digest`], then refuses a manifest whose code part (the
/// plan's `code`, `code_hash`) is not the one built with that object: its
/// `code_sha256` ([`devmapc::builder::code_binding`]) does not match, or is
/// missing.
pub(crate) fn check_manifest(
    manifest: &Path,
    doc: &ManifestDoc,
    object: &Path,
    found: &str,
) -> Result<(), DeployError> {
    check_object_digest(manifest, doc.object_sha256.as_deref(), object, found)?;
    match doc.code_is_bound() {
        Some(true) => Ok(()),
        Some(false) => Err(DeployError::Mismatch(format!(
            "the manifest's code part was changed after the build: {}'s `code_sha256` does not \
             match its `ir.code` and `code_hash`, so it does not describe {}. Rebuild with \
             `devmapc build`; nothing was loaded",
            manifest.display(),
            object.display()
        ))),
        None => Err(DeployError::Mismatch(format!(
            "{} has no `code_sha256` (an older devmapc wrote it), so nothing shows that its \
             code part is the one {} was built with: rebuild with `devmapc build`; nothing was \
             loaded",
            manifest.display(),
            object.display()
        ))),
    }
}

/// A manifest's `code_hash` and `data_hash`, as the build wrote them (the
/// code hash covers egress program bodies, which the manifest's IR leaves
/// out, so it cannot be recomputed from the IR).
pub fn manifest_hashes(text: &str) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Hashes {
        code_hash: String,
        data_hash: String,
    }
    let h: Hashes = serde_json::from_str(text).ok()?;
    Some((h.code_hash, h.data_hash))
}

/// A manifest, read in one pass and checked ([`devmapc::manifest`]).
pub(crate) type ManifestDoc = devmapc::manifest::Manifest;

pub(crate) fn parse_manifest_doc(text: &str) -> Result<ManifestDoc, String> {
    devmapc::manifest::parse(text)
}

pub(crate) fn parse_manifest(text: &str) -> Result<(String, Ir), String> {
    parse_manifest_doc(text).map(|d| (d.object, d.ir))
}

/// `vlan_switch.bpf.o` → `vlan_switch`.
fn object_name(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    file.split('.').next().unwrap_or("devmapc").to_string()
}

/// The build's manifest beside the object, verbatim, when it holds this
/// plan. A manifest there that is bound to another object is an error: the
/// object is stale (or the manifest is).
fn sibling_manifest(
    obj_path: &Path,
    name: &str,
    ir: &Ir,
    digest: &str,
) -> Result<Option<String>, DeployError> {
    let path = obj_path.with_file_name(format!("{name}.manifest.json"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(doc) = parse_manifest_doc(&text) else {
        return Ok(None);
    };
    check_manifest(&path, &doc, obj_path, digest)?;
    Ok((doc.ir == *ir).then_some(text))
}

static LOAD_LOCK: Mutex<()> = Mutex::new(());
static PREVIOUS_PRINT: Mutex<Option<(PrintLevel, PrintCallback)>> = Mutex::new(None);
thread_local! {
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// libbpf's print callback while [`with_libbpf_log`] runs: the loading
/// thread's messages go to its buffer, other threads' to the callback that
/// was installed before.
fn capture_print(level: PrintLevel, msg: String) {
    let msg = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(buffer) => {
            buffer.push_str(&msg);
            None
        }
        None => Some(msg),
    });
    if let Some(msg) = msg {
        let previous = *PREVIOUS_PRINT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((min, callback)) = previous {
            if level <= min {
                callback(level, msg);
            }
        }
    }
}

/// Runs `f` with libbpf's messages of this thread collected; returns them.
fn with_libbpf_log<R>(f: impl FnOnce() -> R) -> (R, String) {
    let _serial = LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    CAPTURED.with(|c| *c.borrow_mut() = Some(String::new()));
    let previous = libbpf_rs::set_print(Some((PrintLevel::Info, capture_print as PrintCallback)));
    *PREVIOUS_PRINT.lock().unwrap_or_else(|e| e.into_inner()) = previous;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    libbpf_rs::set_print(previous);
    let log = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    match result {
        Ok(r) => (r, log),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The program and the end of the verifier log libbpf printed as
/// `prog 'NAME': -- BEGIN PROG LOAD LOG --\n...-- END PROG LOAD LOG --`.
fn verifier_log(log: &str) -> Option<(String, String)> {
    const BEGIN: &str = "-- BEGIN PROG LOAD LOG --";
    const END: &str = "-- END PROG LOAD LOG --";
    let begin = log.rfind(BEGIN)?;
    let line = &log[log[..begin].rfind('\n').map_or(0, |i| i + 1)..begin];
    let program = line.split('\'').nth(1).unwrap_or("?").to_string();
    let body = &log[begin + BEGIN.len()..];
    let body = &body[..body.find(END).unwrap_or(body.len())];
    Some((program, tail(body, VERIFIER_LOG_TAIL)))
}

/// The last `n` non-empty lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

impl Loaded {
    /// The object: maps and programs by name.
    pub fn object(&self) -> &Object {
        &self.obj
    }

    pub fn ir(&self) -> &Ir {
        &self.ir
    }

    /// The build's name (`vlan_switch`): the default pin directory's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest text kept with the pins.
    pub fn manifest(&self) -> &str {
        &self.manifest
    }

    /// The ingress program's fd.
    pub fn ingress(&self) -> BorrowedFd<'_> {
        self.prog_fd(names::INGRESS).expect("checked at load")
    }

    fn prog_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.obj.progs().find(|p| p.name() == name).map(|p| {
            // SAFETY: the fd belongs to the object, which outlives the borrow.
            unsafe { BorrowedFd::borrow_raw(p.as_fd().as_raw_fd()) }
        })
    }

    /// Every program and map the plan names is in the object.
    fn check_matches(&self) -> Result<(), DeployError> {
        let code = &self.ir.code;
        let progs = code.program_names();
        let mut maps = vec![names::SLOTS.to_string(), names::DEFAULT.to_string()];
        maps.extend(code.groups.iter().map(|g| g.map.clone()));
        maps.extend(code.programs.iter().map(|p| p.args_map.clone()));
        let missing: Vec<String> = progs
            .iter()
            .filter(|p| self.prog_fd(p).is_none())
            .chain(maps.iter().filter(|m| !self.obj.maps().any(|map| map.name() == m.as_str())))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(DeployError::Mismatch(format!(
            "{} does not hold what the manifest plans ({} missing): rebuild the spec, object \
             and manifest together",
            self.path.display(),
            missing.join(", ")
        )))
    }

    /// Writes the plan into the maps; `devices[i]` is device `i` of the
    /// plan, resolved in the calling thread's network namespace.
    pub fn fill(&self, devices: &[Device]) -> Result<(), DeployError> {
        let planned = &self.ir.data.devices;
        if devices.len() != planned.len() {
            let names: Vec<&str> = planned.iter().map(|d| d.name.as_str()).collect();
            return Err(DeployError::Mismatch(format!(
                "the plan has {} devices ({}), {} were resolved",
                planned.len(),
                names.join(", "),
                devices.len()
            )));
        }
        fill(&self.obj, &self.ir, devices)?;
        Ok(())
    }

    /// Pins every map (`dir/maps/<name>`), every program
    /// (`dir/progs/<name>`) and the manifest (`dir/manifest`, see
    /// [`read_manifest`]). `dir` must be on a bpffs and hold no deployment;
    /// on failure, whatever was pinned is removed again.
    pub fn pin(&self, dir: &Path) -> Result<(), DeployError> {
        prepare_pin_dir(dir)?;
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let root = open_pin_dir(dir)?;
        if let Some(name) = root.names().map_err(|e| io_error("cannot list", dir, e))?.first() {
            return Err(DeployError::AlreadyPinned { path: dir.join(name) });
        }
        let result = self.pin_all(&root);
        if result.is_err() {
            let _ = remove_pins(dir);
            if created {
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }

    fn pin_all(&self, root: &DirFd) -> Result<(), DeployError> {
        self.pin_objects(root, root)?;
        pin_manifest_in(root, root, &self.manifest, MANIFEST_PIN)
    }

    /// Pins every map (`into/maps/<name>`) and program
    /// (`into/progs/<name>`), without the manifest: [`crate::apply`] pins
    /// that last, as the mark of a complete deployment. Their ids go into
    /// `root`'s ownership record first ([`crate::pins`]).
    pub(crate) fn pin_objects(&self, root: &DirFd, into: &DirFd) -> Result<(), DeployError> {
        let fds: Vec<BorrowedFd<'_>> = self
            .obj
            .maps()
            .map(|m| unsafe { BorrowedFd::borrow_raw(m.as_fd().as_raw_fd()) })
            .chain(self.obj.progs().map(|p| unsafe { BorrowedFd::borrow_raw(p.as_fd().as_raw_fd()) }))
            .collect();
        pins::own(root, &fds)?;
        let make =
            |sub: &str| into.make_sub(sub).map_err(|e| io_error("cannot create", &into.path().join(sub), e));
        let (maps, progs) = (make("maps")?, make("progs")?);
        for map in self.obj.maps() {
            maps.pin(map.as_fd(), &pin_name(map.name()))?;
        }
        for prog in self.obj.progs() {
            progs.pin(prog.as_fd(), &pin_name(prog.name()))?;
        }
        Ok(())
    }

    /// Attaches the ingress program to the device `ifindex` (see [`attach`]).
    pub fn attach_ingress(&self, ifindex: u32, mode: XdpMode) -> Result<Attachment, DeployError> {
        attach(self.ingress(), ifindex, mode)
    }

    /// Attaches the ingress program to every device of the plan with
    /// `ingress` (the spec's `ingress.on`), in the plan's mode, and pins
    /// each link at `dir/links/<ifname>` (`<ifindex>` for a device bound
    /// by ifindex). `devices[i]` is device `i` of the plan. All or nothing:
    /// on a failure, the links made so far are unpinned and detached.
    /// Returns each link's name with its attachment (see
    /// [`Attachment::warning`] for `auto` falling back to generic).
    pub fn attach_planned(
        &self,
        devices: &[Device],
        dir: &Path,
    ) -> Result<Vec<(String, Attachment)>, DeployError> {
        let planned = &self.ir.data.devices;
        if devices.len() != planned.len() {
            return Err(DeployError::Mismatch(format!(
                "the plan has {} devices, {} were resolved",
                planned.len(),
                devices.len()
            )));
        }
        let mut done: Vec<(String, Attachment)> = Vec::new();
        for (device, resolved) in planned.iter().zip(devices).filter(|(d, _)| d.ingress) {
            let label = match &device.binding {
                Binding::Ifname(name) => name.clone(),
                Binding::Ifindex(ifindex) => ifindex.to_string(),
            };
            let attached = attach(self.ingress(), resolved.ifindex, self.ir.data.xdp_mode)
                .and_then(|a| a.pin(dir, &label).map(|_| a));
            match attached {
                Ok(a) => done.push((label, a)),
                Err(e) => {
                    // Unpinned; dropping `done` detaches them.
                    unpin_links(dir, done.iter().map(|(label, _)| label.as_str()), false);
                    return Err(e);
                }
            }
        }
        Ok(done)
    }
}

/// The pin name of a map or program: bpffs refuses names with a `.`
/// (EPERM), which libbpf's internal maps have (`vlan_swi.bss`): they are
/// pinned as `vlan_swi_bss`. Generated names have no `.`; should one ever
/// equal a rewritten name, pinning fails with [`DeployError::AlreadyPinned`].
pub fn pin_name(name: &std::ffi::OsStr) -> String {
    name.to_string_lossy().replace('.', "_")
}

/// Pins `fd` at `at`; errors name `path` (`at` may be a name relative to a
/// directory fd, `/proc/self/fd/N/name`).
pub(crate) fn pin_fd_at(fd: BorrowedFd<'_>, at: &Path, path: &Path) -> Result<(), DeployError> {
    let c = cstring(at)?;
    // SAFETY: valid fd and C string.
    check(unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) }).map(drop).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EEXIST) => DeployError::AlreadyPinned { path: path.to_path_buf() },
            _ => permission_error("cannot pin", &e).unwrap_or_else(|| io_error("cannot pin", path, e)),
        }
    })
}

pub(crate) fn open_pin(path: &Path) -> Result<OwnedFd, io::Error> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string; the returned fd is ours.
    let fd = check(unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A frozen one-entry array named `name` holding `bytes` (bpffs takes no
/// regular files).
pub(crate) fn blob_map(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let map = create_map(
        libbpf_sys::BPF_MAP_TYPE_ARRAY,
        name,
        4,
        bytes.len().max(1) as u32,
        1,
        libbpf_sys::BPF_F_RDONLY_PROG,
    )?;
    let mut value = bytes.to_vec();
    value.resize(bytes.len().max(1), 0);
    let key = 0u32;
    // SAFETY: key and value have the map's sizes.
    check(unsafe {
        libbpf_sys::bpf_map_update_elem(
            map.as_raw_fd(),
            (&key as *const u32).cast(),
            value.as_ptr().cast(),
            0,
        )
    })?;
    check(unsafe { libbpf_sys::bpf_map_freeze(map.as_raw_fd()) })?;
    Ok(map)
}

/// The bytes of a record map made by [`blob_map`] with this `name`. An
/// error of kind `InvalidData` when the map is something else.
pub(crate) fn read_blob_fd(name: &str, map: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut info = libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a zeroed bpf_map_info of `len` bytes.
    check(unsafe {
        libbpf_sys::bpf_obj_get_info_by_fd(
            map.as_raw_fd(),
            (&mut info as *mut libbpf_sys::bpf_map_info).cast(),
            &mut len,
        )
    })?;
    let found: Vec<u8> = info.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    if info.type_ != libbpf_sys::BPF_MAP_TYPE_ARRAY || found != name.as_bytes() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a devmapc record"));
    }
    let mut value = vec![0u8; info.value_size as usize];
    let key = 0u32;
    // SAFETY: the buffer has the map's value size.
    check(unsafe {
        libbpf_sys::bpf_map_lookup_elem(
            map.as_raw_fd(),
            (&key as *const u32).cast(),
            value.as_mut_ptr().cast(),
        )
    })?;
    Ok(value)
}

/// Opens the pin directory `dir` without following it (see
/// [`crate::pins`]); a symlink there is refused.
pub(crate) fn open_pin_dir(dir: &Path) -> Result<DirFd, DeployError> {
    DirFd::open(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
            pins::foreign(dir, "the pin directory is a symlink or not a directory, and is not followed")
        }
        Some(libc::ENOENT) => {
            DeployError::NotDeployed { dir: dir.to_path_buf(), why: "no such directory".into() }
        }
        _ => permission_error("cannot open the deployment", &e)
            .unwrap_or_else(|| io_error("cannot open", dir, e)),
    })
}

/// Pins `bytes` as a frozen record map named `map_name` at `name` in
/// `root`, its id recorded as the deployment's first.
pub(crate) fn pin_blob_in(
    root: &DirFd,
    into: &DirFd,
    map_name: &str,
    bytes: &[u8],
    name: &str,
) -> Result<(), DeployError> {
    let path = into.path().join(name);
    let map = blob_map(map_name, bytes).map_err(|e| {
        permission_error("cannot store a record of the deployment", &e)
            .unwrap_or_else(|| io_error("cannot store", &path, e))
    })?;
    pins::own(root, &[map.as_fd()])?;
    into.pin(map.as_fd(), name)
}

/// Pins `manifest` at `name` in `root` (see [`read_manifest`]).
pub(crate) fn pin_manifest_in(
    root: &DirFd,
    into: &DirFd,
    manifest: &str,
    name: &str,
) -> Result<(), DeployError> {
    pin_blob_in(root, into, MANIFEST_MAP_NAME, manifest.as_bytes(), name)
}

/// Unpins (and with `detach`, detaches) the links `labels` of `dir`, when
/// they are the deployment's; errors are ignored: this undoes a step that
/// failed, whose error is reported instead.
pub(crate) fn unpin_links<'a>(dir: &Path, labels: impl Iterator<Item = &'a str>, detach: bool) {
    let Ok(root) = DirFd::open(dir) else { return };
    let (Ok(record), Ok(Some(links))) = (pins::Record::read(&root), root.sub("links")) else {
        return;
    };
    for label in labels {
        let _ = pins::remove(&links, label, &record, detach);
    }
}

/// The manifest pinned in `dir` by [`Loaded::pin`] or an apply.
pub fn read_manifest(dir: &Path) -> Result<String, DeployError> {
    let path = dir.join(MANIFEST_PIN);
    let not_deployed = |why: String| DeployError::NotDeployed { dir: dir.to_path_buf(), why };
    let root = match DirFd::open(dir) {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_deployed("no such directory".into()))
        }
        Err(_) => open_pin_dir(dir).map(drop).and(Err(not_deployed("not a directory".into())))?,
    };
    let record = pins::Record::read(&root)?;
    let map = match root.get(MANIFEST_PIN) {
        Ok(map) if record.is_empty() || record.owns(map.as_fd()) => Ok(map),
        Ok(_) => return Err(pins::foreign(&path, "a map this deployment did not pin")),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(pins::foreign(&path, &e.to_string())),
        Err(e) => Err(e),
    };
    let bytes = map.and_then(|m| read_blob_fd(MANIFEST_MAP_NAME, m.as_fd())).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => not_deployed(format!("no {}", path.display())),
        io::ErrorKind::InvalidData => not_deployed(format!("{} is not a devmapc manifest", path.display())),
        _ => permission_error("cannot read the manifest", &e)
            .unwrap_or_else(|| io_error("cannot read", &path, e)),
    })?;
    String::from_utf8(bytes).map_err(|_| not_deployed(format!("{} is not UTF-8", path.display())))
}

// ----------------------------------------------------------------- attaching

/// An XDP program attached to a device through a BPF link. Dropping it
/// detaches the program, unless the link is pinned ([`Attachment::pin`]).
#[derive(Debug)]
pub struct Attachment {
    link: OwnedFd,
    /// The device.
    pub ifindex: u32,
    /// The mode in effect: [`XdpMode::Native`] or [`XdpMode::Generic`].
    pub mode: XdpMode,
    /// Set when `auto` fell back to generic mode, saying why.
    pub warning: Option<String>,
}

/// A BPF link as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// The device (0 once the device is gone).
    pub ifindex: u32,
}

/// Attaches the XDP program `prog` to the device `ifindex` (in the calling
/// thread's network namespace) through a BPF link (`bpf_link_create` with
/// `BPF_XDP` and `XDP_FLAGS_DRV_MODE` or `XDP_FLAGS_SKB_MODE`). `Auto`
/// tries native mode, then generic mode, and then sets
/// [`Attachment::warning`].
pub fn attach(prog: BorrowedFd<'_>, ifindex: u32, mode: XdpMode) -> Result<Attachment, DeployError> {
    let attached = |link, mode, warning| Attachment { link, ifindex, mode, warning };
    match mode {
        XdpMode::Native | XdpMode::Generic => link_create(prog, ifindex, mode)
            .map(|link| attached(link, mode, None))
            .map_err(|e| attach_error(ifindex, mode, e)),
        XdpMode::Auto => match link_create(prog, ifindex, XdpMode::Native) {
            Ok(link) => Ok(attached(link, XdpMode::Native, None)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::ENODEV | libc::EBUSY | libc::EEXIST)
                ) =>
            {
                Err(attach_error(ifindex, mode, e))
            }
            Err(native) => {
                let link = link_create(prog, ifindex, XdpMode::Generic)
                    .map_err(|e| attach_error(ifindex, mode, e))?;
                let warning = format!(
                    "the device with ifindex {ifindex} refused native XDP ({native}): attached \
                     in generic mode, which is slower"
                );
                Ok(attached(link, XdpMode::Generic, Some(warning)))
            }
        },
    }
}

fn link_create(prog: BorrowedFd<'_>, ifindex: u32, mode: XdpMode) -> io::Result<OwnedFd> {
    let flags = match mode {
        XdpMode::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        _ => libbpf_sys::XDP_FLAGS_DRV_MODE,
    };
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        flags,
        ..Default::default()
    };
    // SAFETY: valid fd and options; the returned fd is ours.
    let fd = check(unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), ifindex as i32, libbpf_sys::BPF_XDP, &opts)
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn attach_error(ifindex: u32, mode: XdpMode, e: io::Error) -> DeployError {
    let doing = format!("cannot attach to the device with ifindex {ifindex}");
    if let Some(e) = permission_error(&doing, &e) {
        return e;
    }
    let error = match e.raw_os_error() {
        Some(libc::ENODEV) => format!("{e}: no such device in this network namespace"),
        Some(libc::EOPNOTSUPP) => {
            format!("{e}: its driver has no native XDP; use `mode = generic` or `mode = auto`")
        }
        Some(libc::EBUSY | libc::EEXIST) => format!(
            "{e}: the device already has an XDP program; remove it first (`devmapc detach`, or \
             `ip link set dev DEV xdp off` for one attached by another tool)"
        ),
        Some(libc::EINVAL) => format!(
            "{e}: the kernel refused the program for this device (it must be a plain XDP \
             program, not an `xdp/devmap` egress program; in native mode the MTU must fit one \
             XDP buffer)"
        ),
        Some(libc::ERANGE) => format!(
            "{e}: the MTU is too large for native XDP (a frame must fit one page; for a veth, \
             the peer's MTU counts too): lower the MTU, or use `mode = generic`"
        ),
        _ => e.to_string(),
    };
    DeployError::Attach { ifindex, device: None, mode, error }
}

impl DeployError {
    /// Names the spec's device in an attach error (the kernel only knows
    /// the ifindex).
    pub fn on_device(mut self, name: impl FnOnce() -> String) -> DeployError {
        if let DeployError::Attach { device: device @ None, .. } = &mut self {
            *device = Some(name());
        }
        self
    }
}

impl Attachment {
    /// The link's fd.
    pub fn link(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    pub fn info(&self) -> Result<LinkInfo, DeployError> {
        link_info(self.link.as_fd()).map_err(|e| io_error("cannot read link", Path::new("(fd)"), e))
    }

    /// Pins the link at `dir/links/<label>` (label: the device's name, or
    /// its ifindex): the program then stays attached after this process
    /// exits, until [`detach`]. Returns the pin's path.
    pub fn pin(&self, dir: &Path, label: &str) -> Result<PathBuf, DeployError> {
        if label.is_empty() || label == "." || label == ".." || label.contains(['/', '\0']) {
            return Err(DeployError::Mismatch(format!(
                "bad link name {label:?}: give the device's name or ifindex"
            )));
        }
        prepare_pin_dir(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let root = open_pin_dir(dir)?;
        let links = root.make_sub("links").map_err(|e| io_error("cannot create", &dir.join("links"), e))?;
        pins::own(&root, &[self.link.as_fd()])?;
        links.pin(self.link.as_fd(), label)?;
        Ok(dir.join("links").join(label))
    }
}

pub(crate) fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // SAFETY: zeroed bpf_link_info of `len` bytes; the kernel fills it.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as u32;
    check(unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
    if info.type_ != libbpf_sys::BPF_LINK_TYPE_XDP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an XDP link (link type {})", info.type_),
        ));
    }
    Ok(LinkInfo {
        id: info.id,
        prog_id: info.prog_id,
        // SAFETY: the XDP member of the union, for an XDP link.
        ifindex: unsafe { info.__bindgen_anon_1.xdp.ifindex },
    })
}

/// The XDP link pinned at `path`.
pub fn pinned_link_info(path: &Path) -> Result<LinkInfo, DeployError> {
    let fd = open_pin(path).map_err(|e| io_error("cannot open link", path, e))?;
    link_info(fd.as_fd()).map_err(|e| io_error("cannot read link", path, e))
}

/// Replaces the program of the XDP link pinned at `link_pin` with
/// `new_prog`, atomically (`bpf_link_update`): the device never goes
/// without a program. Returns the link as it is afterwards.
pub fn swap(link_pin: &Path, new_prog: BorrowedFd<'_>) -> Result<LinkInfo, DeployError> {
    let fail = |error: String| DeployError::Swap { link: link_pin.to_path_buf(), error };
    let link = open_pin(link_pin)
        .map_err(|e| permission_error("cannot swap programs", &e).unwrap_or_else(|| fail(e.to_string())))?;
    swap_fd(link.as_fd(), link_pin, new_prog)
}

/// [`swap`] of a link already open (and proven the deployment's).
pub(crate) fn swap_fd(
    link: BorrowedFd<'_>,
    link_pin: &Path,
    new_prog: BorrowedFd<'_>,
) -> Result<LinkInfo, DeployError> {
    let fail = |error: String| DeployError::Swap { link: link_pin.to_path_buf(), error };
    link_info(link.as_fd()).map_err(|e| fail(e.to_string()))?;
    // SAFETY: valid fds; no options.
    check(unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), new_prog.as_raw_fd(), std::ptr::null()) })
        .map_err(|e| {
        permission_error("cannot swap programs", &e).unwrap_or_else(|| {
            fail(match e.raw_os_error() {
                Some(libc::EINVAL) => format!(
                    "{e}: the new program must be a plain XDP program (not an \
                         `xdp/devmap` egress program)"
                ),
                Some(libc::ENOLINK) => format!("{e}: the link's device is gone"),
                _ => e.to_string(),
            })
        })
    })?;
    link_info(link.as_fd()).map_err(|e| fail(e.to_string()))
}

// ----------------------------------------------------------------- detaching

/// What [`detach`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detached {
    /// The links, by pin name, as they were before detaching.
    pub links: Vec<(String, LinkInfo)>,
    /// Pins removed (links, maps, programs, manifest).
    pub pins: usize,
}

/// Takes down the deployment pinned in `dir`: detaches every pinned link
/// (`BPF_LINK_DETACH`, effective even while another process holds the
/// link), removes every pin and the directory. Once no process holds an fd
/// of them any more, the kernel frees the programs and maps.
///
/// Only what devmapc pinned is removed: a link, map or program whose id is
/// in the deployment's ownership record, and the records and symlinks it
/// makes. Nothing is followed; anything else in `dir` (a planted symlink,
/// another's pin) is left in place, and the error names it.
pub fn detach(dir: &Path) -> Result<Detached, DeployError> {
    deployed_pin_dir_ready(dir)?;
    let root = open_pin_dir(dir)?;
    let record = pins::Record::read(&root)?;
    let marked = crate::apply::is_ours(dir);
    if record.is_empty() && !marked {
        let names = root.names().map_err(|e| io_error("cannot list", dir, e))?;
        return Err(DeployError::NotDeployed {
            dir: dir.to_path_buf(),
            why: if names.is_empty() {
                "it is empty, and devmapc's marker is not in it: it is left alone".into()
            } else if root.entry(MANIFEST_PIN) != pins::Entry::Missing {
                format!(
                    "no record of the objects devmapc pinned (`{}`) and no `{}` marker: a \
                     deployment made by an older devmapc, or not by devmapc; nothing was \
                     removed. Check what it is and remove it by hand (`rm -r`)",
                    pins::OWNED,
                    crate::apply::MARKER
                )
            } else {
                format!(
                    "no {MANIFEST_PIN}, no `{}` marker and no record of what devmapc pinned: \
                     what is pinned there was not made by devmapc, and is left alone",
                    crate::apply::MARKER
                )
            },
        });
    }
    if record.is_empty() {
        // Marked, but nothing pinned yet (a first apply stopped right
        // after its marker), or pinned by a devmapc that kept no record:
        // only the former is removed.
        let names = root.names().map_err(|e| io_error("cannot list", dir, e))?;
        let made = |n: &String| {
            root.entry(n) == pins::Entry::Symlink
                && [crate::apply::MARKER, crate::apply::NETNS].contains(&n.as_str())
        };
        if !names.iter().all(made) {
            return Err(DeployError::NotDeployed {
                dir: dir.to_path_buf(),
                why: format!(
                    "there is no record of the objects devmapc pinned (`{}`): a deployment \
                     made by an older devmapc, or not by devmapc; nothing was removed. Check \
                     what it is and remove it by hand",
                    pins::OWNED
                ),
            });
        }
    }
    let mut detached = Detached::default();
    if let Some(links) = root.sub("links").map_err(|e| foreign_dir(dir, "links", e))? {
        for name in links.names().map_err(|e| io_error("cannot list", links.path(), e))? {
            let info = pins::get_owned(&links, &name, &record)
                .ok()
                .flatten()
                .and_then(|fd| link_info(fd.as_fd()).ok());
            if let pins::Removed::Unpinned(_) = pins::remove(&links, &name, &record, true)? {
                detached.pins += 1;
                if let Some(info) = info {
                    detached.links.push((name, info));
                }
            }
        }
    }
    detached.pins += remove_pins(dir)?;
    Ok(detached)
}

fn foreign_dir(dir: &Path, name: &str, e: io::Error) -> DeployError {
    if e.kind() == io::ErrorKind::InvalidData {
        pins::foreign(&dir.join(name), &e.to_string())
    } else {
        io_error("cannot open", &dir.join(name), e)
    }
}

/// `(name, path)` of the entries of `dir`, sorted; none when it is missing.
/// The directory itself is not followed when it is a symlink.
pub(crate) fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, DeployError> {
    let handle = match DirFd::open(dir) {
        Ok(handle) => handle,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            return Err(pins::foreign(dir, "a symlink or not a directory, not followed"))
        }
        Err(e) => return Err(io_error("cannot list", dir, e)),
    };
    let names = handle.names().map_err(|e| io_error("cannot list", dir, e))?;
    Ok(names.into_iter().map(|n| (n.clone(), dir.join(n))).collect())
}

/// Unlinks devmapc's pins in `dir` and the directories it makes; returns
/// how many pins went. Everything goes through [`pins::remove`]: only
/// objects in the ownership record are unpinned (links are detached
/// first), and only the symlinks devmapc makes, after reading where they
/// point. Whatever else is found is left, and named in the error.
pub(crate) fn remove_pins(dir: &Path) -> Result<usize, DeployError> {
    let root = match DirFd::open(dir) {
        Ok(root) => root,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(_) => return open_pin_dir(dir).map(|_| 0),
    };
    let record = pins::Record::read(&root)?;
    let mut left = Vec::new();
    let removed = remove_in(&root, &record, 0, &mut left)?;
    if !left.is_empty() {
        return Err(DeployError::Io {
            what: format!(
                "left in place what devmapc did not make ({}); devmapc's own pins are gone from",
                left.join(", ")
            ),
            path: dir.to_path_buf(),
            error: io::Error::other("not made by devmapc"),
        });
    }
    // The record goes last, with the directory.
    if root.entry(pins::OWNED) == pins::Entry::Pin {
        root.unlink_record(pins::OWNED).map_err(|e| io_error("cannot unpin", &dir.join(pins::OWNED), e))?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(removed),
        Err(e) => Err(io_error("cannot remove", dir, e)),
    }
}

/// Removes the staged upgrade `dir/next` the way [`remove_pins`] removes
/// a deployment (the ownership record is the pin directory's).
pub(crate) fn remove_staged(dir: &Path) -> Result<usize, DeployError> {
    let root = open_pin_dir(dir)?;
    let record = pins::Record::read(&root)?;
    let Some(next) = root.sub(crate::apply::NEXT).map_err(|e| foreign_dir(dir, crate::apply::NEXT, e))?
    else {
        return Ok(0);
    };
    let mut left = Vec::new();
    let removed = remove_in(&next, &record, 1, &mut left)?;
    if !left.is_empty() {
        return Err(pins::foreign(
            next.path(),
            &format!("it holds what devmapc did not make: {}", left.join(", ")),
        ));
    }
    root.rmdir(crate::apply::NEXT).map_err(|e| io_error("cannot remove", next.path(), e))?;
    Ok(removed)
}

/// [`remove_pins`] of one directory (`depth` 0: the pin directory; 1: its
/// `next`, `links`, `maps`, `progs`, `applying`; 2: those of `next`).
fn remove_in(
    dir: &DirFd,
    record: &pins::Record,
    depth: u32,
    left: &mut Vec<String>,
) -> Result<usize, DeployError> {
    use crate::apply::{MARKER, MARKER_TARGET, NETNS};
    let mut removed = 0;
    for name in dir.names().map_err(|e| io_error("cannot list", dir.path(), e))? {
        let path = dir.path().join(&name);
        if depth == 0 && name == pins::OWNED {
            continue;
        }
        if depth == 0 && name == pins::OWNED_NEXT && dir.unlink_record(&name).is_ok() {
            continue;
        }
        match dir.entry(&name) {
            pins::Entry::Dir => {
                let known = match depth {
                    0 => ["links", "maps", "progs", crate::apply::NEXT, crate::apply::APPLYING]
                        .contains(&name.as_str()),
                    1 => {
                        dir.path().file_name().is_some_and(|n| n == crate::apply::NEXT)
                            && ["maps", "progs"].contains(&name.as_str())
                    }
                    _ => false,
                };
                if !known {
                    left.push(format!("{} (a directory devmapc does not make)", path.display()));
                    continue;
                }
                let sub = dir.sub(&name).map_err(|e| foreign_dir(dir.path(), &name, e))?;
                let Some(sub) = sub else { continue };
                removed += remove_in(&sub, record, depth + 1, left)?;
                if sub.names().is_ok_and(|n| n.is_empty()) {
                    dir.rmdir(&name).map_err(|e| io_error("cannot remove", &path, e))?;
                }
            }
            pins::Entry::Symlink if depth == 0 && name == MARKER => {
                if !dir.remove_symlink(&name, |t| t == MARKER_TARGET).unwrap_or(false) {
                    left.push(format!("{} (a symlink devmapc did not make)", path.display()));
                }
            }
            pins::Entry::Symlink if depth == 0 && name == NETNS => {
                if !dir.remove_symlink(&name, |t| t.starts_with("net:[")).unwrap_or(false) {
                    left.push(format!("{} (a symlink devmapc did not make)", path.display()));
                }
            }
            _ => match pins::remove(dir, &name, record, true)? {
                pins::Removed::Unpinned(_) => removed += 1,
                pins::Removed::Missing => {}
                pins::Removed::Left(what) => left.push(what),
            },
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_log_names_the_program_and_keeps_the_tail() {
        let mut log = String::from(
            "libbpf: prog 'devmapc_ingress': BPF program load failed: Permission denied\n\
             libbpf: prog 'devmapc_ingress': -- BEGIN PROG LOAD LOG --\n",
        );
        for i in 0..30 {
            log.push_str(&format!("{i}: insn\n"));
        }
        log.push_str("invalid access to packet, off=100 size=1\n-- END PROG LOAD LOG --\n");
        log.push_str("libbpf: failed to load object\n");
        let (program, tail) = verifier_log(&log).unwrap();
        assert_eq!(program, "devmapc_ingress");
        assert_eq!(tail.lines().count(), VERIFIER_LOG_TAIL);
        assert!(tail.ends_with("  invalid access to packet, off=100 size=1"), "{tail}");
        assert!(!tail.contains("END PROG"));
        assert_eq!(verifier_log("libbpf: failed to open\n"), None);
    }

    #[test]
    fn object_names() {
        assert_eq!(object_name(Path::new("/x/vlan_switch.bpf.o")), "vlan_switch");
        assert_eq!(default_pin_dir("fwd"), Path::new("/sys/fs/bpf/devmapc/fwd"));
    }
}
