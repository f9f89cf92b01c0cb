//! A throwaway network topology for `devmapc test`: every device of a plan
//! becomes one end of a veth pair, so that frames sent out of it can be
//! watched at the other end.
//!
//! Two *anonymous* network namespaces (made with `unshare(CLONE_NEWNET)`,
//! held only by a file descriptor of this process, never named under
//! `/run/netns`):
//!
//! - the **device side** holds one veth per device of the plan, named after
//!   its `ifname` (a device bound by `ifindex` gets that ifindex, and its
//!   spec name as its name when that is a valid interface name, else
//!   `dev<ifindex>`). The spec is deployed here.
//! - the **wire side** holds the peers, each with the same name as its
//!   device, up, with GRO on: a veth accepts redirected XDP frames only when
//!   its peer has a native XDP program or GRO on (docs/kernel.md).
//!
//! Both have IPv6 disabled (before any device exists) and no addresses, so
//! the kernel sends nothing on its own: no router solicitations, no DAD, no
//! MLD, no ARP. Whatever appears on a peer was sent out of its device.
//!
//! Nothing of the host is touched, and nothing can be left behind: the
//! namespaces die with their last file descriptor, that is when the
//! [`Sandbox`] is dropped, or when the process ends in any way (even
//! `SIGKILL`); the devices, the attached programs and every map entry
//! pointing at them go with them.

use devmapc::ir::DeviceData;
use devmapc::model::Binding;
use devmapc_runtime::netdev;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A network namespace held by a file descriptor (anonymous, unless
/// [`Netns::open`]ed by a path), alive while this value is.
#[derive(Debug)]
pub struct Netns {
    file: File,
}

impl Netns {
    /// A fresh namespace with `lo` down and IPv6 disabled. Needs
    /// CAP_SYS_ADMIN.
    pub fn new() -> io::Result<Netns> {
        // unshare() moves the calling thread; a short-lived thread keeps the
        // caller where it is.
        let file = std::thread::spawn(|| -> io::Result<File> {
            // SAFETY: plain syscall; only this thread changes namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            File::open("/proc/thread-self/ns/net")
        })
        .join()
        .map_err(|_| io::Error::other("the thread creating a network namespace panicked"))??;
        let ns = Netns { file };
        for key in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
            // A kernel without IPv6 has no such file, and nothing to disable.
            match ns.enter(|| std::fs::write(&path, "1")) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(e.kind(), format!("{path}: {e}")))
                }
                _ => {}
            }
        }
        Ok(ns)
    }

    /// An existing namespace (one that `ip netns add` named under
    /// `/run/netns`, say), held open while this value is. Changes nothing
    /// in it.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Netns> {
        Ok(Netns { file: File::open(path)? })
    }

    /// A [`Command`] whose child switches into this namespace (the network
    /// namespace only) before `exec`. The command holds a descriptor of the
    /// namespace of its own until it is dropped.
    pub fn command(&self, program: impl AsRef<OsStr>) -> io::Result<Command> {
        let handle = self.file.try_clone()?;
        let mut command = Command::new(program);
        Self::enter_before_exec(&mut command, handle.as_raw_fd());
        // The closure below keeps `handle` open as long as the command.
        // SAFETY: no code runs in the child; the closure only owns the file.
        unsafe {
            command.pre_exec(move || {
                let _ = &handle;
                Ok(())
            });
        }
        Ok(command)
    }

    /// Makes `command`'s child switch into the namespace open at `fd`
    /// before `exec`; `fd` must stay open until the child is spawned.
    fn enter_before_exec(command: &mut Command, fd: std::os::fd::RawFd) {
        // SAFETY: only the async-signal-safe setns(2) runs in the child.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Runs `f` with the calling thread switched into this namespace, and
    /// switches back afterwards (also when `f` panics).
    ///
    /// Aborts the process if the thread cannot be switched back: code that
    /// ran on in the wrong namespace could touch the host's devices.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let original = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("opening /proc/thread-self/ns/net: {e}"));
        setns(&self.file).unwrap_or_else(|e| panic!("cannot enter the sandbox's network namespace: {e}"));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        if let Err(e) = setns(&original) {
            // Not eprintln!, which panics when standard error is a closed
            // pipe: the abort must be reached.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("FATAL: cannot switch the thread back from the sandbox's network namespace: {e}\n")
                    .as_bytes(),
            );
            std::process::abort();
        }
        match result {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A path that names this namespace for other processes while it lives
    /// (`/proc/<pid>/fd/<fd>`; `ip ... netns PATH` takes it).
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }

    /// Runs `ip -batch -` inside this namespace with `commands`, one a line.
    pub fn ip_batch(&self, commands: &[String]) -> io::Result<()> {
        // Through this namespace's own descriptor, open as long as `self`
        // (no copy: the sandbox holds exactly its two namespaces).
        let mut command = Command::new("ip");
        Self::enter_before_exec(&mut command, self.file.as_raw_fd());
        command.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip` (iproute2): {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let text = commands.join("\n") + "\n";
        let written = stdin.write_all(text.as_bytes());
        drop(stdin);
        let out = child.wait_with_output()?;
        written?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "`ip -batch` failed ({}): {}\ncommands:\n{text}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid, open namespace file descriptor.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A device of the plan, made in the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxDevice {
    /// The device's name in the spec.
    pub name: String,
    /// Its interface name on the device side (also its peer's name on the
    /// wire side).
    pub ifname: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The peer's ifindex on the wire side.
    pub peer_ifindex: u32,
}

/// The two namespaces and the devices of one plan.
#[derive(Debug)]
pub struct Sandbox {
    /// Where the spec is deployed.
    pub devices_ns: Netns,
    /// Where the peers are.
    pub wire_ns: Netns,
    /// `devices[i]` is device `i` of the plan.
    pub devices: Vec<SandboxDevice>,
}

/// Why a sandbox could not be built.
#[derive(Debug)]
pub enum SandboxError {
    /// A binding the sandbox cannot reproduce (`ifindex = 1` is the
    /// loopback device of a fresh namespace).
    Binding {
        device: String,
        line: u32,
        why: String,
    },
    Io {
        what: String,
        error: io::Error,
    },
    Netdev {
        what: String,
        error: netdev::NetdevError,
    },
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxError::Binding { device, line, why } => {
                write!(f, "device `{device}` (line {line}): {why}")
            }
            SandboxError::Io { what, error } => write!(f, "{what}: {error}"),
            SandboxError::Netdev { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for SandboxError {}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    move |error| SandboxError::Io { what, error }
}

/// Whether the kernel would take `name` as an interface name.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

/// The interface name of each device of the plan in the sandbox: its
/// `ifname`; for one bound by `ifindex`, its spec name when that is free and
/// valid, else `devN`, `devN_1`... whichever no other device takes. Two
/// devices share a veth only when their bindings are the same.
fn ifnames(devices: &[DeviceData]) -> Result<Vec<String>, SandboxError> {
    let mut owner: HashMap<String, &Binding> = devices
        .iter()
        .filter_map(|d| match &d.binding {
            Binding::Ifname(n) => Some((n.clone(), &d.binding)),
            Binding::Ifindex(_) => None,
        })
        .collect();
    let mut names = Vec::with_capacity(devices.len());
    for d in devices {
        let free =
            |name: &str, owner: &HashMap<String, &Binding>| owner.get(name).is_none_or(|b| **b == d.binding);
        let name = match &d.binding {
            Binding::Ifname(n) => n.clone(),
            Binding::Ifindex(1) => {
                return Err(SandboxError::Binding {
                    device: d.name.clone(),
                    line: d.line,
                    why: "ifindex 1 is the loopback device of a fresh network namespace; the test sandbox cannot make it a veth \
                          (bind the device by `ifname`, or by another ifindex)"
                        .into(),
                })
            }
            Binding::Ifindex(_) if valid_ifname(&d.name) && d.name != "lo" && free(&d.name, &owner) => d.name.clone(),
            Binding::Ifindex(i) => {
                let base = format!("dev{i}");
                let mut name = base.clone();
                let mut n = 0;
                while !free(&name, &owner) {
                    n += 1;
                    name = format!("{base}_{n}");
                }
                name
            }
        };
        if !valid_ifname(&name) || name == "lo" {
            return Err(SandboxError::Binding {
                device: d.name.clone(),
                line: d.line,
                why: format!("{name:?} cannot be an interface name in the test sandbox"),
            });
        }
        owner.entry(name.clone()).or_insert(&d.binding);
        names.push(name);
    }
    Ok(names)
}

impl Sandbox {
    /// Builds the sandbox for the devices of a plan (see the module's
    /// documentation). Two devices with the same binding share one veth.
    pub fn new(devices: &[DeviceData]) -> Result<Sandbox, SandboxError> {
        let names = ifnames(devices)?;
        let devices_ns = Netns::new().map_err(io_err("cannot create a network namespace"))?;
        let wire_ns = Netns::new().map_err(io_err("cannot create a network namespace"))?;
        // Fixed ifindexes first, so that no automatic one takes them.
        let mut order: Vec<usize> = (0..devices.len()).collect();
        order.sort_by_key(|&i| !matches!(devices[i].binding, Binding::Ifindex(_)));
        let mut made = HashSet::new();
        let mut here = vec!["link set dev lo up".to_string()];
        let mut there = vec!["link set dev lo up".to_string()];
        for i in order {
            let name = &names[i];
            if !made.insert(name.clone()) {
                continue;
            }
            let index = match devices[i].binding {
                Binding::Ifindex(n) => format!(" index {n}"),
                Binding::Ifname(_) => String::new(),
            };
            here.push(format!(
                "link add name {name}{index} type veth peer name {name} netns {}",
                wire_ns.path()
            ));
            here.push(format!("link set dev {name} up"));
            there.push(format!("link set dev {name} up"));
        }
        devices_ns.ip_batch(&here).map_err(io_err("cannot create the sandbox's veth pairs"))?;
        wire_ns.ip_batch(&there).map_err(io_err("cannot set the sandbox's veth peers up"))?;
        for name in &made {
            wire_ns
                .enter(|| netdev::set_gro(name, true))
                .map_err(|error| SandboxError::Netdev { what: format!("peer {name}"), error })?;
        }
        let mut out = Vec::with_capacity(devices.len());
        for (d, name) in devices.iter().zip(&names) {
            let link = devices_ns
                .enter(|| netdev::by_name(name))
                .map_err(|error| SandboxError::Netdev { what: format!("device `{}`", d.name), error })?;
            let peer = link.peer.ok_or_else(|| SandboxError::Io {
                what: format!("device `{}`", d.name),
                error: io::Error::other("the kernel reports no peer for the sandbox's veth"),
            })?;
            out.push(SandboxDevice {
                name: d.name.clone(),
                ifname: name.clone(),
                ifindex: link.ifindex,
                mac: link.mac,
                peer_ifindex: peer.ifindex,
            });
        }
        Ok(Sandbox { devices_ns, wire_ns, devices: out })
    }

    /// The plan's devices as found on the device side, for
    /// [`devmapc_runtime::Loaded::fill`].
    pub fn resolved(&self) -> Vec<devmapc_runtime::Device> {
        self.devices.iter().map(|d| devmapc_runtime::Device { ifindex: d.ifindex, mac: d.mac }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, binding: Binding) -> DeviceData {
        DeviceData {
            name: name.into(),
            binding,
            program: None,
            args: vec![],
            ingress: false,
            groups: vec![],
            line: 1,
        }
    }

    #[test]
    fn names_devices() {
        let devices = [
            device("uplink", Binding::Ifname("eth0".into())),
            device("red", Binding::Ifindex(12)),
            device("eth0", Binding::Ifindex(13)),
            device("a_very_long_device_name", Binding::Ifindex(14)),
        ];
        assert_eq!(ifnames(&devices).unwrap(), ["eth0", "red", "dev13", "dev14"]);
        // A fallback name another device has taken is not shared.
        let devices = [
            device("a", Binding::Ifname("dev13".into())),
            device("a_very_long_device_name", Binding::Ifindex(13)),
            device("b", Binding::Ifindex(13)),
            device("dev13_1", Binding::Ifname("dev13_1".into())),
        ];
        assert_eq!(ifnames(&devices).unwrap(), ["dev13", "dev13_2", "b", "dev13_1"]);
        assert!(matches!(ifnames(&[device("lo", Binding::Ifindex(1))]), Err(SandboxError::Binding { .. })));
    }
}
