//! Throw-away network namespaces for tests that send real frames.
//!
//! [`Netns::new`] creates a namespace named `dmc-<pid>-<n>` (unique per
//! process, and pids keep parallel test binaries apart); dropping the
//! [`Netns`] deletes it, also while a test unwinds from a panic. Everything a
//! test builds (veth pairs, attached programs, map entries pointing at its
//! devices) lives inside, so the host's interfaces are never touched.
//!
//! Two ways to act inside:
//! - [`Netns::ip`] and [`Netns::command`] run a program in the namespace
//!   (`ip -n`, or a child that calls `setns` before `exec`; unlike
//!   `ip netns exec` that keeps the host's `/sys/fs/bpf`).
//! - [`Netns::enter`] runs a closure with the *current thread* switched into
//!   the namespace, for libbpf calls that resolve ifindexes in the caller's
//!   namespace: map updates, `attach_xdp`, PROG_TEST_RUN with an
//!   `ingress_ifindex`.
//!
//! Device facts are read with `ip -j link` (JSON), never from
//! `/sys/class/net`, which shows the host's devices after a `setns`.
//!
//! Every new namespace gets `lo` up and IPv6 disabled, so the kernel sends no
//! router solicitations or MLD reports that would disturb frame counts.
//!
//! Entering and commands are those of the test engine's namespaces
//! ([`devmapc_spectest::sandbox::Netns`]), which this one holds open: the
//! name is what this type adds, for `ip -n` and for tests that look
//! namespaces up in `/run/netns`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use crate::packet::Mac;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix of every namespace this crate creates.
pub const PREFIX: &str = "dmc-";
/// Longest device name the kernel takes (`IFNAMSIZ - 1`).
pub const MAX_IFNAME: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// `ip netns add` mounts `/run/netns` on first use; concurrent first uses
/// from one process race, so additions are serialised.
static ADD_LOCK: Mutex<()> = Mutex::new(());
static SWEEP: Once = Once::new();

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// The namespace, held open (entered, and commands run in it, through
    /// this).
    handle: devmapc_spectest::sandbox::Netns,
}

/// A device inside a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    pub mac: Mac,
}

/// Interface counters from `ip -s -j link` (`stats64`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

impl Netns {
    /// Create a fresh namespace with `lo` up and IPv6 disabled.
    ///
    /// Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (root). The first call in a
    /// process also deletes `dmc-<pid>-*` namespaces left behind by
    /// processes that no longer exist (a test binary that was killed).
    pub fn new() -> io::Result<Netns> {
        SWEEP.call_once(sweep_stale);
        let pid = std::process::id();
        let name = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{PREFIX}{pid}-{n}");
            if !Path::new(NETNS_DIR).join(&name).exists() {
                break name;
            }
        };
        {
            let _guard = ADD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_checked(Command::new("ip").args(["netns", "add", &name])).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating network namespace {name} (needs root / CAP_SYS_ADMIN): {e}"),
                )
            })?;
        }
        let handle = match devmapc_spectest::sandbox::Netns::open(Path::new(NETNS_DIR).join(&name)) {
            Ok(handle) => handle,
            Err(e) => {
                let _ = run_checked(Command::new("ip").args(["netns", "del", &name]));
                return Err(io::Error::new(e.kind(), format!("opening {NETNS_DIR}/{name}: {e}")));
            }
        };
        // From here on, Drop deletes the namespace if the setup below fails.
        let ns = Netns { name, handle };
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        ns.sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
        ns.sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
        Ok(ns)
    }

    /// The namespace's name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the handle `setns` and `nsenter --net=` take.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Run `ip -n <name> <args>`; returns stdout, or an error with stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A [`Command`] whose child switches into this namespace (network
    /// namespace only: `/sys/fs/bpf` stays the host's) before `exec`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> io::Result<Command> {
        self.handle.command(program)
    }

    /// Run `program args` inside the namespace; returns stdout, or an error
    /// with stderr when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> io::Result<String> {
        run_checked(self.command(program)?.args(args))
    }

    /// Run `f` with the current thread switched into this namespace, and
    /// switch back afterwards (also when `f` panics). Nested calls work.
    ///
    /// Panics if the thread cannot be switched in, and aborts if it cannot
    /// be switched back: a thread left in the wrong namespace would make
    /// every later result meaningless.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        self.handle.enter(f)
    }

    /// Write `value` to `/proc/sys/<key>` inside the namespace
    /// (e.g. `net/ipv6/conf/all/disable_ipv6`).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = Path::new("/proc/sys").join(key);
        self.enter(|| std::fs::write(&path, value))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Create the veth pair `a`/`b` in this namespace and set both up.
    pub fn veth(&self, a: &str, b: &str) -> io::Result<(Iface, Iface)> {
        check_ifname(a)?;
        check_ifname(b)?;
        self.ip(&["link", "add", "name", a, "type", "veth", "peer", "name", b])?;
        self.set_up(a)?;
        self.set_up(b)?;
        Ok((self.iface(a)?, self.iface(b)?))
    }

    /// Create the veth pair `a` (here) / `b` (in `other`) and set both up.
    pub fn veth_to(&self, a: &str, other: &Netns, b: &str) -> io::Result<(Iface, Iface)> {
        check_ifname(a)?;
        check_ifname(b)?;
        self.ip(&["link", "add", "name", a, "type", "veth", "peer", "name", b, "netns", &other.name])?;
        self.set_up(a)?;
        other.set_up(b)?;
        Ok((self.iface(a)?, other.iface(b)?))
    }

    /// `ip link set dev <dev> up`.
    pub fn set_up(&self, dev: &str) -> io::Result<()> {
        self.ip(&["link", "set", "dev", dev, "up"]).map(drop)
    }

    /// `ip link set dev <dev> down`.
    pub fn set_down(&self, dev: &str) -> io::Result<()> {
        self.ip(&["link", "set", "dev", dev, "down"]).map(drop)
    }

    /// `ip link del dev <dev>` (deleting one end of a veth deletes both).
    pub fn delete_link(&self, dev: &str) -> io::Result<()> {
        self.ip(&["link", "del", "dev", dev]).map(drop)
    }

    /// Name, ifindex and MAC of `dev`.
    pub fn iface(&self, dev: &str) -> io::Result<Iface> {
        let link = self.link_json(dev, false)?;
        let ifindex = link["ifindex"].as_u64().ok_or_else(|| bad_json(dev, "ifindex"))? as u32;
        let mac = link["address"]
            .as_str()
            .and_then(crate::packet::parse_mac)
            .ok_or_else(|| bad_json(dev, "address"))?;
        Ok(Iface { name: dev.to_string(), ifindex, mac })
    }

    /// The ifindex of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> io::Result<u32> {
        self.iface(dev).map(|i| i.ifindex)
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> io::Result<Mac> {
        self.iface(dev).map(|i| i.mac)
    }

    /// The counters of `dev`.
    pub fn stats(&self, dev: &str) -> io::Result<LinkStats> {
        let link = self.link_json(dev, true)?;
        let s = &link["stats64"];
        let get = |dir: &str, field: &str| {
            s[dir][field].as_u64().ok_or_else(|| bad_json(dev, &format!("stats64.{dir}.{field}")))
        };
        Ok(LinkStats {
            rx_packets: get("rx", "packets")?,
            rx_bytes: get("rx", "bytes")?,
            rx_dropped: get("rx", "dropped")?,
            tx_packets: get("tx", "packets")?,
            tx_bytes: get("tx", "bytes")?,
            tx_dropped: get("tx", "dropped")?,
        })
    }

    /// Whether generic receive offload is on for `dev` (ETHTOOL_GGRO). On a
    /// veth it decides, with an XDP program on the peer, whether frames
    /// redirected into the peer are accepted.
    pub fn gro(&self, dev: &str) -> io::Result<bool> {
        self.enter(|| ethtool_value(dev, ETHTOOL_GGRO, 0)).map(|v| v != 0)
    }

    /// Turn GRO on or off for `dev` (ETHTOOL_SGRO).
    pub fn set_gro(&self, dev: &str, on: bool) -> io::Result<()> {
        self.enter(|| ethtool_value(dev, ETHTOOL_SGRO, on as u32)).map(drop)
    }

    fn link_json(&self, dev: &str, stats: bool) -> io::Result<serde_json::Value> {
        let mut args = vec!["-j"];
        if stats {
            args.push("-s");
        }
        args.extend(["link", "show", "dev", dev]);
        let out = self.ip(&args)?;
        let mut value: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("ip -j: {e}: {out}")))?;
        match value.get_mut(0) {
            Some(link) => Ok(link.take()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("no device {dev}"))),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_checked(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: could not delete network namespace {}: {e}", self.name);
        }
    }
}

/// Whether a namespace of that name exists in `/run/netns`.
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Names of this process's namespaces that still exist (`dmc-<pid>-*`).
pub fn ours() -> Vec<String> {
    let prefix = format!("{PREFIX}{}-", std::process::id());
    list().into_iter().filter(|n| n.starts_with(&prefix)).collect()
}

fn list() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// Delete `dmc-<pid>-<n>` namespaces whose process is gone.
fn sweep_stale() {
    for name in list() {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u32>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = run_checked(Command::new("ip").args(["netns", "del", &name]));
        }
    }
}

fn run_checked(command: &mut Command) -> io::Result<String> {
    let out = command
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {:?}: {e}", command.get_program())))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            command,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_ifname(name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad device name {name:?}: 1..=15 bytes, no '/' or space"),
        ));
    }
    Ok(())
}

fn bad_json(dev: &str, field: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ip -j link: no {field} for {dev}"))
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _rest_of_union: [u8; 24 - std::mem::size_of::<usize>()],
}

/// One ETHTOOL_[GS]* ioctl with a `struct ethtool_value`, in the calling
/// thread's namespace; returns the value's data.
fn ethtool_value(dev: &str, cmd: u32, data: u32) -> io::Result<u32> {
    check_ifname(dev)?;
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&mut value as *mut EthtoolValue).cast(),
        _rest_of_union: [0; 24 - std::mem::size_of::<usize>()],
    };
    for (dst, src) in req.name.iter_mut().zip(dev.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a datagram socket used for one ioctl whose argument points at
    // live, correctly laid out structs; the socket is closed right after.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::ioctl(sock, SIOCETHTOOL as _, &mut req as *mut IfreqData);
        let err = io::Error::last_os_error();
        libc::close(sock);
        if rc != 0 {
            return Err(io::Error::new(err.kind(), format!("SIOCETHTOOL {cmd:#x} on {dev}: {err}")));
        }
    }
    Ok(value.data)
}

/// Sends `frame` `n` times out of the device `ifindex` of the calling
/// thread's namespace from an AF_PACKET socket: on a veth, each arrives on
/// the peer as a real received frame (through its XDP program, if any).
pub fn send_frames(ifindex: u32, frame: &[u8], n: u64) -> io::Result<()> {
    devmapc_spectest::inject::send_on_wire(frame, ifindex, n)
}
