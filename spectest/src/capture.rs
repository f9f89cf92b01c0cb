//! Watching frames with `AF_PACKET` sockets, for `devmapc test`.
//!
//! A [`Capture`] sees every frame a device of the calling thread's network
//! namespace receives (one device, or all of them). The kernel moves the
//! outer VLAN tag of a received frame out of its data before packet sockets
//! see it; the tag comes back as `PACKET_AUXDATA` and is put back in place,
//! so a captured frame has the bytes that were on the wire.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_OUTGOING: u8 = 4;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// `struct tpacket_auxdata` (linux/if_packet.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AuxData {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

/// A frame a device received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The receiving device, in the socket's namespace.
    pub ifindex: u32,
    /// The bytes, the outer VLAN tag put back.
    pub frame: Vec<u8>,
}

/// An `AF_PACKET` socket for every protocol, non-blocking.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Frames received by the device `ifindex` (0: by every device) of the
    /// calling thread's network namespace. Needs CAP_NET_RAW.
    pub fn open(ifindex: u32) -> io::Result<Capture> {
        let protocol = ETH_P_ALL.to_be();
        // SAFETY: plain syscalls; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                protocol as i32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option.
        if unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_AUXDATA,
                (&on as *const libc::c_int).cast(),
                4,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: a valid address of the right length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Capture { fd })
    }

    /// Throws away every frame queued so far.
    pub fn drain(&self) -> io::Result<()> {
        while self.try_recv()?.is_some() {}
        Ok(())
    }

    /// The next received frame if one is queued (frames the device sent are
    /// skipped).
    pub fn try_recv(&self) -> io::Result<Option<Captured>> {
        loop {
            let mut buf = vec![0u8; 65536 + 4];
            // SAFETY: plain data, filled by the kernel.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut control = [0u64; 16];
            let mut iov = libc::iovec { iov_base: buf[4..].as_mut_ptr().cast(), iov_len: buf.len() - 4 };
            // SAFETY: msghdr is plain data; every pointer set below is valid
            // for the length given, for the duration of the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if addr.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            let mut aux = None;
            // SAFETY: walking the control messages the kernel wrote, with
            // the libc macros, within msg_controllen.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == PACKET_AUXDATA {
                        aux = Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<AuxData>()));
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            let n = n as usize;
            let frame = match aux {
                Some(aux) if aux.status & TP_STATUS_VLAN_VALID != 0 && n >= 12 => {
                    let tpid =
                        if aux.status & TP_STATUS_VLAN_TPID_VALID != 0 { aux.vlan_tpid } else { 0x8100 };
                    // Move the addresses 4 bytes forward and put the tag
                    // between them and the rest.
                    buf.copy_within(4..16, 0);
                    buf[12..14].copy_from_slice(&tpid.to_be_bytes());
                    buf[14..16].copy_from_slice(&aux.vlan_tci.to_be_bytes());
                    buf.truncate(n + 4);
                    buf
                }
                _ => {
                    buf.truncate(n + 4);
                    buf.split_off(4)
                }
            };
            return Ok(Some(Captured { ifindex: addr.sll_ifindex as u32, frame }));
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `captures` has a frame queued, or `timeout` passes
/// (EINTR counts as the timeout passing: the caller looks at its clock and
/// at whether it was interrupted).
pub fn wait_any(captures: &[&Capture], timeout: Duration) -> io::Result<()> {
    let mut fds: Vec<libc::pollfd> =
        captures.iter().map(|c| libc::pollfd { fd: c.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: a valid array of pollfd of the given length.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
