//! Sending frames through a loaded XDP program with `BPF_PROG_TEST_RUN`.
//!
//! - [`test_run_live`]: with `BPF_F_TEST_XDP_LIVE_FRAMES` the kernel really
//!   acts on the program's verdict: redirected frames go out through the
//!   devmap (and its egress programs), `XDP_PASS` frames enter the stack of
//!   the ingress device. The traffic generator of `devmapc test`.
//! - [`verdict`]: one plain test run, which sends nothing and returns the
//!   XDP action (with the packet as the program left it).
//!
//! Both resolve `ingress_ifindex` in the calling thread's network namespace
//! and block SIGCHLD in the calling thread during the run ([`SigchldBlocked`]).

use libbpf_rs::libbpf_sys;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// `XDP_PASS` for 2, and so on; `"action N"` for anything else.
pub fn action_name(action: u32) -> String {
    match action {
        XDP_ABORTED => "XDP_ABORTED".into(),
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        n => format!("action {n}"),
    }
}

/// The `xdp_md` context the kernel takes for a test run of `len` bytes:
/// `data_end` must equal the length, the rest is 0 but `ingress_ifindex`.
pub fn xdp_md(len: usize, ingress_ifindex: u32) -> Vec<u8> {
    let md = libbpf_sys::xdp_md {
        data: 0,
        data_end: len as u32,
        data_meta: 0,
        ingress_ifindex,
        rx_queue_index: 0,
        egress_ifindex: 0,
    };
    // SAFETY: xdp_md is plain old data of six u32s, without padding.
    unsafe { std::slice::from_raw_parts((&md as *const libbpf_sys::xdp_md).cast::<u8>(), size_of_val(&md)) }
        .to_vec()
}

/// Blocks SIGCHLD in the calling thread while alive.
///
/// The kernel aborts a repeated test run with EINTR when a signal is pending
/// for the thread. SIGCHLD is normally discarded on arrival, but when the
/// thread that spawned the child has signals blocked at that moment (glibc's
/// `posix_spawn` blocks them all around the clone), it is queued for the
/// whole process and may land on the thread inside `BPF_PROG_TEST_RUN`.
pub struct SigchldBlocked(libc::sigset_t);

impl SigchldBlocked {
    #[allow(clippy::new_without_default)]
    pub fn new() -> SigchldBlocked {
        // SAFETY: sigset_t is plain data initialised by sigemptyset; the
        // old mask is saved and restored on drop.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SigchldBlocked(old)
        }
    }
}

impl Drop for SigchldBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in new().
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// Runs `prog` on `repeat` copies of `packet` (0 counts as 1) with
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program redirects or transmits
/// are really sent, at the end of each batch of `batch_size` (0: the
/// kernel's default, 64); `XDP_PASS` frames enter the stack of the ingress
/// device. `ingress_ifindex` names the device the frames "arrive" on, in the
/// calling thread's network namespace. Returns the average time per frame
/// in nanoseconds, as the kernel measured it.
///
/// The kernel reports no action in this mode: see [`verdict`].
pub fn test_run_live(
    prog: BorrowedFd<'_>,
    packet: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> io::Result<u64> {
    let ctx = xdp_md(packet.len(), ingress_ifindex);
    // SAFETY: zeroed bpf_test_run_opts is its documented default.
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of_val(&opts) as _;
    opts.data_in = packet.as_ptr().cast();
    opts.data_size_in = packet.len() as u32;
    opts.ctx_in = ctx.as_ptr().cast();
    opts.ctx_size_in = ctx.len() as u32;
    opts.repeat = repeat.max(1) as _;
    opts.flags = libbpf_sys::BPF_F_TEST_XDP_LIVE_FRAMES;
    opts.batch_size = batch_size;
    // SAFETY: the fd is a loaded program; input buffers outlive the call and
    // no output buffers are given (live mode forbids them).
    let rc = {
        let _sigchld = SigchldBlocked::new();
        unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) }
    };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(opts.duration as u64)
}

/// Runs `prog` once on `packet`, without sending anything: the XDP action
/// it returns and the packet as it left it. With `BPF_F_TEST_XDP_LIVE_FRAMES`
/// off, `bpf_redirect_map` only looks the key up (`XDP_REDIRECT` means a hit).
pub fn verdict(prog: BorrowedFd<'_>, packet: &[u8], ingress_ifindex: u32) -> io::Result<(u32, Vec<u8>)> {
    let ctx = xdp_md(packet.len(), ingress_ifindex);
    // Room for programs that grow the packet (adjust_head/tail).
    let mut out = vec![0u8; packet.len() + 4096];
    // SAFETY: zeroed bpf_test_run_opts is its documented default.
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of_val(&opts) as _;
    opts.data_in = packet.as_ptr().cast();
    opts.data_size_in = packet.len() as u32;
    opts.data_out = out.as_mut_ptr().cast();
    opts.data_size_out = out.len() as u32;
    opts.ctx_in = ctx.as_ptr().cast();
    opts.ctx_size_in = ctx.len() as u32;
    opts.repeat = 1;
    // SAFETY: the fd is a loaded program; the buffers outlive the call and
    // their sizes are given.
    let rc = {
        let _sigchld = SigchldBlocked::new();
        unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) }
    };
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    out.truncate(opts.data_size_out as usize);
    Ok((opts.retval, out))
}

/// Sends `frame` `n` times out of device `ifindex` of the calling thread's
/// network namespace with a packet socket, as a host on that wire would:
/// on a veth, each arrives at the other end the ordinary way (through its
/// XDP program if it has one, else up its stack). Needs CAP_NET_RAW.
pub fn send_on_wire(frame: &[u8], ifindex: u32, n: u64) -> io::Result<()> {
    // SAFETY: plain syscalls; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    // The frame's own EtherType (already in network order).
    addr.sll_protocol = frame.get(12..14).map_or(0, |t| u16::from_ne_bytes([t[0], t[1]]));
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    for _ in 0..n {
        // SAFETY: a valid socket, buffer and address of the right length.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
