//! Loading BPF objects and running their programs, on libbpf-rs 0.27.
//!
//! - [`load`] / [`load_with`]: open a `.bpf.o` by path and load it; the hook
//!   of `load_with` runs between open and load (set an attach type with
//!   [`set_attach_type`], resize maps, ...).
//! - [`prog`] / [`map`]: find by name, with an error that lists what exists.
//! - [`test_run`]: `BPF_PROG_TEST_RUN` once or `repeat` times, optionally
//!   with an `xdp_md` context naming the ingress device.
//! - [`test_run_live`]: the same with `BPF_F_TEST_XDP_LIVE_FRAMES`, where
//!   XDP_TX and XDP_REDIRECT really send the frames: the traffic generator
//!   of end-to-end tests.
//! - [`prog_stats`]: the verifier's and JIT's numbers from `bpf_prog_info`.
//!
//! Calls that resolve an ifindex (map updates with devices, `attach_xdp`,
//! test runs with an `ingress_ifindex`) use the calling thread's network
//! namespace: run them inside [`crate::netns::Netns::enter`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use libbpf_rs::libbpf_sys;
use libbpf_rs::{
    Map, MapCore, Object, ObjectBuilder, OpenObject, Program, ProgramAttachType, ProgramInput, ProgramMut,
};

/// Open and load the object at `path`.
pub fn load(path: impl AsRef<Path>) -> libbpf_rs::Result<Object> {
    load_with(path, |_| Ok(()))
}

/// Open the object at `path`, let `before_load` adjust it, then load it.
pub fn load_with(
    path: impl AsRef<Path>,
    before_load: impl FnOnce(&mut OpenObject) -> libbpf_rs::Result<()>,
) -> libbpf_rs::Result<Object> {
    let path = path.as_ref();
    let mut open = ObjectBuilder::default()
        .open_file(path)
        .map_err(|e| context(e, format!("opening {}", path.display())))?;
    before_load(&mut open)?;
    open.load().map_err(|e| context(e, format!("loading {}", path.display())))
}

/// In a [`load_with`] hook: set the expected attach type of program `name`
/// (e.g. [`ProgramAttachType::XdpDevmap`] for a devmap egress program whose
/// section does not say so).
pub fn set_attach_type(
    open: &mut OpenObject,
    name: &str,
    attach_type: ProgramAttachType,
) -> libbpf_rs::Result<()> {
    let names: Vec<String> = open.progs().map(|p| p.name().to_string_lossy().into_owned()).collect();
    let mut prog =
        open.progs_mut().find(|p| p.name() == name).ok_or_else(|| not_found("program", name, &names))?;
    prog.set_attach_type(attach_type);
    Ok(())
}

/// The program called `name` (the C function's name). `ProgramMut` is what
/// libbpf-rs runs and attaches (`test_run`, `attach_xdp`); it derefs to
/// `Program`.
pub fn prog<'obj>(obj: &'obj Object, name: &str) -> libbpf_rs::Result<ProgramMut<'obj>> {
    obj.progs_mut().find(|p| p.name() == name).ok_or_else(|| {
        let names: Vec<String> = obj.progs().map(|p| p.name().to_string_lossy().into_owned()).collect();
        not_found("program", name, &names)
    })
}

/// The map called `name`.
pub fn map<'obj>(obj: &'obj Object, name: &str) -> libbpf_rs::Result<Map<'obj>> {
    obj.maps().find(|m| m.name() == name).ok_or_else(|| {
        let names: Vec<String> = obj.maps().map(|m| m.name().to_string_lossy().into_owned()).collect();
        not_found("map", name, &names)
    })
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (an `XDP_*` action for XDP).
    pub retval: u32,
    /// The packet after the program.
    pub data: Vec<u8>,
    /// Average time per repetition, as the kernel measured it.
    pub duration_ns: u64,
}

// The XDP actions, the `xdp_md` context and the SIGCHLD guard are the test
// engine's (devmapc-spectest), which `devmapc test` drives the same way.
use devmapc_spectest::inject::{xdp_md, SigchldBlocked};
pub use devmapc_spectest::inject::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

/// Run `prog` on `packet` `repeat` times (0 counts as 1). With
/// `ingress_ifindex`, the program sees that device as `ctx->ingress_ifindex`
/// (which must exist in the calling thread's namespace); without, the
/// namespace's loopback device.
///
/// Nothing is sent: an XDP_REDIRECT result only says the lookup hit.
/// SIGCHLD is blocked in the calling thread during the run (see
/// `SigchldBlocked`: otherwise a child exiting elsewhere in the process can
/// abort a repeated run with EINTR).
pub fn test_run(
    prog: &ProgramMut<'_>,
    packet: &[u8],
    ingress_ifindex: Option<u32>,
    repeat: u32,
) -> libbpf_rs::Result<TestRun> {
    let mut ctx = ingress_ifindex.map(|ifindex| xdp_md(packet.len(), ifindex));
    // Room for programs that grow the packet (adjust_head/tail).
    let mut out = vec![0u8; packet.len() + 4096];
    let input = ProgramInput {
        data_in: Some(packet),
        data_out: Some(&mut out),
        context_in: ctx.as_deref_mut(),
        repeat,
        ..Default::default()
    };
    let output = {
        let _sigchld = SigchldBlocked::new();
        prog.test_run(input)?
    };
    let retval = output.return_value;
    let duration_ns = output.duration.as_nanos() as u64;
    let len = output.data.map_or(0, |d| d.len());
    out.truncate(len);
    Ok(TestRun { retval, data: out, duration_ns })
}

/// What a live-frames test run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveRun {
    /// Frames run through the program.
    pub frames: u32,
    /// Average time per frame, as the kernel measured it.
    pub duration_ns: u64,
}

/// Run `prog` on `repeat` copies of `packet` with
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program redirects or transmits
/// are really sent, at the end of each batch of `batch_size` (0: the
/// kernel's default, 64); XDP_PASS frames enter the stack of the ingress
/// device. `ingress_ifindex` names the device the frames "arrive" on, in the
/// calling thread's namespace.
///
/// The kernel reports no action in this mode (its `retval` stays 0): count
/// what arrives instead. SIGCHLD is blocked in the calling thread during the
/// run, as for [`test_run`].
pub fn test_run_live(
    prog: &impl AsFd,
    packet: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> libbpf_rs::Result<LiveRun> {
    let duration_ns =
        devmapc_spectest::inject::test_run_live(prog.as_fd(), packet, ingress_ifindex, repeat, batch_size)
            .map_err(libbpf_rs::Error::from)?;
    Ok(LiveRun { frames: repeat.max(1), duration_ns })
}

/// The verifier's and JIT's view of a loaded program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgStats {
    /// Instructions the verifier processed (its complexity budget is 1M).
    pub verified_insns: u32,
    /// Bytes of the program after the kernel's rewrites (8 per insn).
    pub xlated_len: u32,
    /// Bytes of JITed machine code (0 without JIT).
    pub jited_len: u32,
}

/// Read [`ProgStats`] from `bpf_prog_info`.
pub fn prog_stats(prog: &impl AsFd) -> libbpf_rs::Result<ProgStats> {
    // SAFETY: zeroed bpf_prog_info asks for no arrays; the kernel fills the
    // scalars up to `len`.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = size_of_val(&info) as u32;
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_fd().as_raw_fd(), &mut info, &mut len) };
    if rc < 0 {
        return Err(libbpf_rs::Error::from_raw_os_error(-rc));
    }
    Ok(ProgStats {
        verified_insns: info.verified_insns,
        xlated_len: info.xlated_prog_len,
        jited_len: info.jited_prog_len,
    })
}

/// The id of the program or other BPF object behind `fd`, as map lookups of
/// devmap entries report it.
pub fn prog_id(prog: &impl AsFd) -> libbpf_rs::Result<u32> {
    Program::id_from_fd(prog.as_fd())
}

/// A DEVMAP / DEVMAP_HASH value (`struct bpf_devmap_val`): the ifindex, then
/// the egress program's fd (-1: none).
pub fn devmap_val(ifindex: u32, egress: Option<BorrowedFd<'_>>) -> [u8; 8] {
    let fd: i32 = egress.map_or(-1, |fd| fd.as_raw_fd());
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&ifindex.to_ne_bytes());
    value[4..].copy_from_slice(&fd.to_ne_bytes());
    value
}

/// Split a looked-up `struct bpf_devmap_val` into ifindex and program id
/// (0: no program). The kernel reports the id, never the fd.
pub fn parse_devmap_val(value: &[u8]) -> (u32, u32) {
    let ifindex = u32::from_ne_bytes(value[..4].try_into().unwrap());
    let id = value.get(4..8).map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
    (ifindex, id)
}

/// The value of `redirect.bpf.c`'s `cfg` array (see
/// [`crate::objects::REDIRECT`]): the key to redirect with (or the ingress
/// ifindex) and the flags of `bpf_redirect_map`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedirectCfg {
    pub key: u32,
    pub key_from_ingress: bool,
    pub flags: u64,
}

impl RedirectCfg {
    /// The 16 bytes of `struct redirect_cfg`.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.key.to_ne_bytes());
        b[4..8].copy_from_slice(&(self.key_from_ingress as u32).to_ne_bytes());
        b[8..].copy_from_slice(&self.flags.to_ne_bytes());
        b
    }
}

/// Read `count.bpf.c`'s entry for `ifindex`: frames counted and the last
/// frame's source MAC, or `(0, None)` when nothing arrived.
pub fn rx_count(counts: &Map<'_>, ifindex: u32) -> libbpf_rs::Result<(u64, Option<crate::packet::Mac>)> {
    Ok(match counts.lookup(&ifindex.to_ne_bytes(), libbpf_rs::MapFlags::ANY)? {
        Some(v) => (u64::from_ne_bytes(v[..8].try_into().unwrap()), Some(v[8..14].try_into().unwrap())),
        None => (0, None),
    })
}

/// The errno of a failed libbpf-rs call, when it came from the kernel.
///
/// libbpf-rs keeps the `io::Error` private, but its message ends in
/// `(os error N)` — the standard library's format for OS errors.
pub fn errno(err: &libbpf_rs::Error) -> Option<i32> {
    let text = format!("{err:#}");
    let start = text.rfind("(os error ")? + "(os error ".len();
    let end = start + text[start..].find(')')?;
    text[start..end].parse().ok()
}

fn context(err: libbpf_rs::Error, what: String) -> libbpf_rs::Error {
    use libbpf_rs::ErrorExt as _;
    err.context(what)
}

fn not_found(kind: &str, name: &str, names: &[String]) -> libbpf_rs::Error {
    libbpf_rs::Error::from(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no {kind} named {name:?}; the object has {names:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_reads_kernel_errors_through_context() {
        let err = libbpf_rs::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(errno(&err), Some(libc::EINVAL));
        let err = context(libbpf_rs::Error::from_raw_os_error(524), "map update".into());
        assert_eq!(errno(&err), Some(524));
        let err = not_found("map", "x", &[]);
        assert_eq!(errno(&err), None);
    }

    #[test]
    fn devmap_values() {
        let v = devmap_val(7, None);
        assert_eq!(parse_devmap_val(&v), (7, u32::MAX));
        assert_eq!(parse_devmap_val(&7u32.to_ne_bytes()), (7, 0));
        let cfg = RedirectCfg { key: 3, key_from_ingress: true, flags: 2 }.to_bytes();
        assert_eq!(u32::from_ne_bytes(cfg[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_ne_bytes(cfg[8..].try_into().unwrap()), 2);
    }
}
