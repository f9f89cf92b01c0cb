//! Link events for `devmapc apply --watch`.
//!
//! When a device goes away the kernel deletes its DEVMAP_HASH entries and
//! its XDP link (docs/kernel.md). When one with the same name comes back it has
//! a new ifindex: the next apply resolves it again, finds the entries
//! missing and re-adds them. This module only says *when* to look: it
//! listens to rtnetlink's link group (`RTMGRP_LINK`) of the current network
//! namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const RTMGRP_LINK: u32 = 1;

/// A subscription to the link changes of the current network namespace.
#[derive(Debug)]
pub struct LinkEvents {
    fd: OwnedFd,
}

impl LinkEvents {
    pub fn open() -> io::Result<LinkEvents> {
        // SAFETY: plain socket calls; the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl with the family and groups set.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkEvents { fd })
    }

    /// Waits up to `timeout` for link changes; true when some arrived. All
    /// pending messages are consumed (what changed is read from the kernel
    /// afterwards, so their contents do not matter; an overflow of the
    /// socket's buffer also counts as a change).
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
        }
        if rc == 0 {
            return Ok(false);
        }
        let mut buf = [0u8; 16384];
        loop {
            // SAFETY: reading into a buffer of its size.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(true),
                    Some(libc::ENOBUFS) => continue,
                    _ => return Err(e),
                }
            }
        }
    }
}
