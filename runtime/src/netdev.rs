//! Network devices as the calling thread's network namespace sees them: the
//! ifindex and MAC of each device of a plan, and whether a redirect target
//! can take XDP frames at all.
//!
//! The second question matters because the kernel sends redirected frames
//! later, at flush, and a target that cannot take them drops them silently
//! although the program returned `XDP_REDIRECT` (docs/kernel.md). [`readiness`]
//! says why a target cannot, and what to do about it.
//!
//! Everything asks the kernel through sockets opened for the call, so it
//! always sees the *current thread's* network namespace: a small rtnetlink
//! client (`RTM_GETLINK`), one generic-netlink query (the `netdev` family's
//! XDP features) and the `SIOCETHTOOL` ioctl for GRO. Nothing reads
//! `/sys/class/net`, which after `nsenter --net=...` (or a `setns`) still
//! lists the host's devices; it works the same under `ip netns exec`.

use crate::fill::Device;
use devmapc::ir::DeviceData;
use devmapc::model::Binding;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The smallest MTU of an Ethernet device (`ETH_MIN_MTU`, the least an IPv4
/// packet needs). Give it to [`readiness`] to flag only targets that cannot
/// carry any IP packet.
pub const ETH_MIN_MTU: u32 = 68;

/// A network device of the current namespace, as `RTM_GETLINK` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// The hardware address; all zeros when the device has no 6-byte one
    /// (loopback, tunnels).
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Administratively up (`IFF_UP`, `ip link set NAME up`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`); a veth has it when both ends are up.
    pub lower_up: bool,
    /// The link kind (`IFLA_INFO_KIND`: "veth", "bridge", ...); `None` for
    /// devices without one (loopback, physical NICs).
    pub kind: Option<String>,
    /// The other end, for a veth.
    pub peer: Option<Peer>,
    /// XDP programs attached, by mode.
    pub xdp: XdpProgs,
    /// The kernel's `xdp-features` of the device (`NETDEV_XDP_ACT_*` bits,
    /// from the `netdev` generic-netlink family); `None` when the kernel does
    /// not report them (before Linux 6.3) or the query failed.
    pub xdp_features: Option<u64>,
}

/// The other end of a veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its ifindex, in *its* namespace.
    pub ifindex: u32,
    /// Set when the peer is in another network namespace: that namespace's
    /// id as seen from this one (`IFLA_LINK_NETNSID`).
    pub netnsid: Option<i32>,
}

/// Ids of the XDP programs attached to a device, per attach mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpProgs {
    /// Native (driver) mode: `ip link set dev NAME xdp ...`, or a BPF link.
    pub driver: Option<u32>,
    /// Generic (skb) mode: `xdpgeneric`.
    pub generic: Option<u32>,
    /// Offloaded to the NIC.
    pub offload: Option<u32>,
}

/// `NETDEV_XDP_ACT_NDO_XMIT`: the device can transmit redirected XDP frames.
/// The devmap checks exactly this bit before queueing a frame
/// (`__xdp_enqueue`, kernel/bpf/devmap.c); a veth sets it when its peer has
/// a native XDP program or GRO on.
pub const XDP_ACT_NDO_XMIT: u64 = 1 << 2;

impl Link {
    /// The id of an attached XDP program, any mode.
    pub fn xdp_prog_id(&self) -> Option<u32> {
        self.xdp.driver.or(self.xdp.generic).or(self.xdp.offload)
    }

    /// Whether the kernel says the device transmits redirected XDP frames
    /// ([`XDP_ACT_NDO_XMIT`]); `None` when it does not say.
    pub fn xdp_xmit(&self) -> Option<bool> {
        self.xdp_features.map(|f| f & XDP_ACT_NDO_XMIT != 0)
    }

    fn is(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }
}

impl From<&Link> for Device {
    fn from(link: &Link) -> Device {
        Device { ifindex: link.ifindex, mac: link.mac }
    }
}

/// Why a device could not be found or inspected or changed.
#[derive(Debug)]
pub enum NetdevError {
    /// No device of that name in the current namespace.
    NoSuchName { name: String },
    /// No device with that ifindex in the current namespace.
    NoSuchIndex { ifindex: u32 },
    /// Not something the kernel accepts as a device name.
    BadName { name: String },
    /// A system call failed; `what` says which request.
    Os { what: String, error: io::Error },
    /// The kernel's reply did not parse (it never should).
    Malformed { what: String },
    /// [`make_veth_ready`] on a device that is not a veth.
    NotVeth { name: String, kind: Option<String> },
    /// [`make_veth_ready`] on a veth whose peer is in another namespace.
    PeerElsewhere { name: String, peer: Peer },
    /// A device of the spec: its name and line, and what went wrong.
    Device { device: String, line: u32, error: Box<NetdevError> },
}

impl NetdevError {
    /// The errno, when the kernel refused something.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetdevError::Os { error, .. } => error.raw_os_error(),
            NetdevError::Device { error, .. } => error.errno(),
            _ => None,
        }
    }
}

impl fmt::Display for NetdevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetdevError::NoSuchName { name } => write!(f, "no interface named {name:?} in this network namespace"),
            NetdevError::NoSuchIndex { ifindex } => write!(f, "no interface with ifindex {ifindex} in this network namespace"),
            NetdevError::BadName { name } => {
                write!(f, "{name:?} cannot be an interface name (1 to 15 bytes, no '/', ':' or whitespace)")
            }
            NetdevError::Os { what, error } => write!(f, "{what}: {error}"),
            NetdevError::Malformed { what } => write!(f, "malformed netlink reply from the kernel: {what}"),
            NetdevError::NotVeth { name, kind } => write!(
                f,
                "{name} is not a veth ({}): only a veth target is made ready by enabling GRO on its peer",
                kind.as_deref().map_or("it has no link kind".to_string(), |k| format!("it is a {k}"))
            ),
            NetdevError::PeerElsewhere { name, peer } => write!(
                f,
                "the peer of veth {name} (ifindex {}) is in another network namespace (nsid {}), where this process \
                 cannot change it: inside that namespace, run `ethtool -K <peer> gro on` or attach an XDP program to the peer",
                peer.ifindex,
                peer.netnsid.unwrap_or(-1)
            ),
            NetdevError::Device { device, line, error } => write!(f, "device `{device}` (line {line}): {error}"),
        }
    }
}

impl std::error::Error for NetdevError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetdevError::Os { error, .. } => Some(error),
            NetdevError::Device { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------ lookups

/// The device named `name` in the current network namespace.
pub fn by_name(name: &str) -> Result<Link, NetdevError> {
    check_name(name)?;
    let mut body = ifinfomsg(0);
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    put_attr(&mut body, IFLA_IFNAME, &ifname);
    get_one(body, || NetdevError::NoSuchName { name: name.to_string() }, &format!("RTM_GETLINK for {name:?}"))
}

/// The device with index `ifindex` in the current network namespace.
pub fn by_index(ifindex: u32) -> Result<Link, NetdevError> {
    let missing = || NetdevError::NoSuchIndex { ifindex };
    let index = i32::try_from(ifindex).ok().filter(|&i| i > 0).ok_or_else(missing)?;
    get_one(ifinfomsg(index), missing, &format!("RTM_GETLINK for ifindex {ifindex}"))
}

/// Every device of the current network namespace, by ifindex.
pub fn all() -> Result<Vec<Link>, NetdevError> {
    let what = "RTM_GETLINK dump";
    let mut attempts = 0;
    let replies = loop {
        // A device added or removed during the dump makes the kernel flag it
        // inconsistent (NLM_F_DUMP_INTR): ask again.
        match Socket::open(libc::NETLINK_ROUTE)
            .and_then(|mut s| s.request(RTM_GETLINK, NLM_F_DUMP, &ifinfomsg(0)))
        {
            Err(NlError::Interrupted) if attempts < 5 => attempts += 1,
            other => break other.map_err(|e| e.into_netdev(what))?,
        }
    };
    let features = xdp_features(None).unwrap_or_default();
    let mut links = Vec::with_capacity(replies.len());
    for reply in replies {
        let mut link = parse_link(&reply).map_err(|what| NetdevError::Malformed { what })?;
        link.xdp_features = features.get(&link.ifindex).copied();
        links.push(link);
    }
    links.sort_by_key(|l| l.ifindex);
    Ok(links)
}

/// The device a plan's binding names.
pub fn resolve(binding: &Binding) -> Result<Link, NetdevError> {
    match binding {
        Binding::Ifname(name) => by_name(name),
        Binding::Ifindex(ifindex) => by_index(*ifindex),
    }
}

/// [`resolve`] for a device of the plan; an error names the device and its
/// line in the spec.
pub fn resolve_device(device: &DeviceData) -> Result<Link, NetdevError> {
    resolve(&device.binding).map_err(|error| NetdevError::Device {
        device: device.name.clone(),
        line: device.line,
        error: Box::new(error),
    })
}

fn get_one(body: Vec<u8>, missing: impl Fn() -> NetdevError, what: &str) -> Result<Link, NetdevError> {
    let replies = Socket::open(libc::NETLINK_ROUTE)
        .and_then(|mut s| s.request(RTM_GETLINK, 0, &body))
        .map_err(|e| match e {
            NlError::Os(error) if error.raw_os_error() == Some(libc::ENODEV) => missing(),
            e => e.into_netdev(what),
        })?;
    let reply =
        replies.first().ok_or_else(|| NetdevError::Malformed { what: format!("no answer to {what}") })?;
    let mut link = parse_link(reply).map_err(|what| NetdevError::Malformed { what })?;
    link.xdp_features = xdp_features(Some(link.ifindex)).ok().and_then(|f| f.get(&link.ifindex).copied());
    Ok(link)
}

/// Refuses what `dev_valid_name` (net/core/dev.c) refuses, so a bad name is
/// reported as such rather than as a missing device.
fn check_name(name: &str) -> Result<(), NetdevError> {
    let bad = name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name == "."
        || name == ".."
        || name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(NetdevError::BadName { name: name.to_string() });
    }
    Ok(())
}

// --------------------------------------------------------------------- GRO

/// Whether generic receive offload is on for `name` (`ETHTOOL_GGRO`).
pub fn gro(name: &str) -> Result<bool, NetdevError> {
    ethtool(name, ETHTOOL_GGRO, 0, "get GRO of").map(|v| v != 0)
}

/// Turns GRO on or off for `name` (`ETHTOOL_SGRO`; needs CAP_NET_ADMIN).
pub fn set_gro(name: &str, on: bool) -> Result<(), NetdevError> {
    ethtool(name, ETHTOOL_SGRO, on.into(), if on { "turn GRO on for" } else { "turn GRO off for" }).map(drop)
}

const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

/// `struct ethtool_value` (linux/ethtool.h).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// One `SIOCETHTOOL` ioctl with a `struct ethtool_value`; returns its data.
fn ethtool(name: &str, cmd: u32, data: u32, action: &str) -> Result<u32, NetdevError> {
    check_name(name)?;
    let os = |error: io::Error| match error.raw_os_error() {
        Some(libc::ENODEV) => NetdevError::NoSuchName { name: name.to_string() },
        _ => NetdevError::Os { what: format!("cannot {action} {name:?} (ethtool ioctl)"), error },
    };
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: `ifreq` is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: plain socket(2); the fd is owned (closed on drop) right away.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(os(io::Error::last_os_error()));
    }
    // SAFETY: `sock` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: the argument points at a live `ifreq` whose data pointer points
    // at a live `ethtool_value`, both outliving the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req as *mut libc::ifreq) };
    if rc != 0 {
        return Err(os(io::Error::last_os_error()));
    }
    Ok(value.data)
}

// --------------------------------------------------------------- readiness

/// One reason why a device cannot take redirected XDP frames. Its
/// `Display` says what happens to the frames and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The device is down: `xdp_ok_fwd_dev` refuses the frames.
    Down { name: String },
    /// Up but without carrier.
    NoCarrier { name: String },
    /// The MTU is below the minimum asked for.
    MtuTooSmall { name: String, mtu: u32, min: u32 },
    /// A bridge has no XDP transmit at all.
    Bridge { name: String },
    /// The kernel says the device does not transmit XDP frames (its
    /// `xdp-features` lack `ndo-xmit`): loopback, a driver without XDP,
    /// or a veth for a reason not covered by the variants below.
    NoXdpXmit { name: String, kind: Option<String> },
    /// A veth whose peer is down.
    VethPeerDown { name: String, peer: PeerName },
    /// A veth whose peer's MTU is below the minimum (the veth checks the
    /// frame against the *peer's* MTU too).
    VethPeerMtuTooSmall { name: String, peer: String, mtu: u32, min: u32 },
    /// A veth whose peer has neither a native XDP program nor GRO on: the
    /// frames are dropped silently. `generic_xdp`: the peer has a
    /// generic-mode program, which does not count.
    VethPeerNotReady { name: String, peer: PeerName, generic_xdp: bool },
    /// A veth whose peer is in another namespace, where it cannot be
    /// inspected from here, and the kernel gave no XDP features to decide.
    VethPeerUninspectable { name: String, peer: Peer },
    /// Checking failed (the peer vanished, an ioctl was refused).
    Unknown { name: String, error: String },
}

/// How a message names a veth peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerName {
    /// In this namespace, by name.
    Here(String),
    /// In another namespace, known only by ifindex and namespace id.
    Elsewhere { ifindex: u32, netnsid: i32 },
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerName::Here(name) => f.write_str(name),
            PeerName::Elsewhere { ifindex, netnsid } => {
                write!(f, "(ifindex {ifindex} in another network namespace, nsid {netnsid})")
            }
        }
    }
}

impl PeerName {
    /// The device to name in a shell command, and where to run it.
    fn command_target(&self) -> (String, &'static str) {
        match self {
            PeerName::Here(name) => (name.clone(), ""),
            PeerName::Elsewhere { .. } => ("<peer>".into(), ", inside the peer's namespace"),
        }
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DROPPED: &str = "frames redirected to it are dropped silently";
        match self {
            NotReady::Down { name } => write!(f, "{name} is down: {DROPPED}; fix: `ip link set dev {name} up`"),
            NotReady::NoCarrier { name } => {
                write!(f, "{name} is up but has no carrier: {DROPPED} until its link comes up")
            }
            NotReady::MtuTooSmall { name, mtu, min } => write!(
                f,
                "{name} has MTU {mtu}, below {min}: frames longer than MTU + 18 bytes redirected to it are dropped \
                 silently; fix: `ip link set dev {name} mtu {min}`"
            ),
            NotReady::Bridge { name } => write!(
                f,
                "{name} is a bridge, and a bridge cannot transmit XDP frames: {DROPPED}; redirect to the bridge's ports instead"
            ),
            NotReady::NoXdpXmit { name, kind } => write!(
                f,
                "{name}{} cannot transmit XDP frames (the kernel does not list `ndo-xmit` in its XDP features): \
                 {DROPPED}; choose another target",
                kind.as_deref().map_or(String::new(), |k| format!(" ({k})"))
            ),
            NotReady::VethPeerDown { name, peer } => {
                let (target, place) = peer.command_target();
                write!(f, "{name} is a veth whose peer {peer} is down: {DROPPED}; fix: `ip link set dev {target} up`{place}")
            }
            NotReady::VethPeerMtuTooSmall { name, peer, mtu, min } => write!(
                f,
                "{name} is a veth whose peer {peer} has MTU {mtu}, below {min}: longer frames redirected to {name} are \
                 dropped silently; fix: `ip link set dev {peer} mtu {min}`"
            ),
            NotReady::VethPeerNotReady { name, peer, generic_xdp } => {
                let (target, place) = peer.command_target();
                write!(f, "{name} is a veth whose peer {peer} has neither a native XDP program nor GRO on")?;
                if *generic_xdp {
                    write!(f, " (its generic-mode XDP program does not count)")?;
                }
                write!(
                    f,
                    ": {DROPPED}; fix{place}: attach an XDP program to {target} in native mode, or turn GRO on with \
                     `ethtool -K {target} gro on`"
                )?;
                match peer {
                    PeerName::Here(_) => write!(f, " (`devmapc apply --make-ready` does that)"),
                    PeerName::Elsewhere { .. } => {
                        write!(f, " (`--make-ready` cannot reach a peer in another namespace)")
                    }
                }
            }
            NotReady::VethPeerUninspectable { name, peer } => write!(
                f,
                "{name} is a veth whose peer (ifindex {} in another network namespace, nsid {}) cannot be inspected \
                 from here: frames reach {name} only if that peer is up and has a native XDP program or GRO on; check \
                 it inside its namespace (`ethtool -k <peer>`)",
                peer.ifindex,
                peer.netnsid.unwrap_or(-1)
            ),
            NotReady::Unknown { name, error } => write!(f, "cannot tell whether {name} takes XDP frames: {error}"),
        }
    }
}

/// Every reason why `link` cannot take redirected XDP frames; empty when
/// it can. Inspects a veth's peer (and its GRO) in the current namespace.
///
/// `min_mtu`: the kernel drops a redirected frame longer than the target's
/// MTU + 18 bytes (Ethernet header and one VLAN tag, `xdp_ok_fwd_dev`), and
/// a veth checks its peer's MTU the same way. A frame that arrived on a
/// device with MTU `m` fits any target whose MTU is at least `m`, so pass
/// the largest MTU of the ingress devices to be sure every frame fits, or
/// [`ETH_MIN_MTU`] to flag only targets that cannot carry any IP packet.
/// A parameter rather than a fixed threshold because only the caller knows
/// where frames come from (1500 would wrongly flag a deliberate 1400-byte
/// path fed by 1400-byte ingresses).
pub fn readiness(link: &Link, min_mtu: u32) -> Vec<NotReady> {
    let name = || link.name.clone();
    let mut out = Vec::new();
    if !link.up {
        out.push(NotReady::Down { name: name() });
    }
    if link.is("bridge") {
        // Nothing else could make it take frames.
        out.push(NotReady::Bridge { name: name() });
        return out;
    }
    if link.mtu < min_mtu {
        out.push(NotReady::MtuTooSmall { name: name(), mtu: link.mtu, min: min_mtu });
    }
    if link.is("veth") {
        veth_readiness(link, min_mtu, &mut out);
    } else {
        if link.up && !link.lower_up {
            out.push(NotReady::NoCarrier { name: name() });
        }
        if link.xdp_xmit() == Some(false) {
            out.push(NotReady::NoXdpXmit { name: name(), kind: link.kind.clone() });
        }
    }
    out
}

/// A veth takes redirected frames when its peer is up and has a native XDP
/// program or GRO on (`veth_xdp_xmit` needs the peer's NAPI, which only
/// those enable). The kernel's `xdp-features` of the veth say the same
/// (without the "up" part); they settle the case of a peer in another
/// namespace, whose GRO no ioctl from here can read.
fn veth_readiness(link: &Link, min_mtu: u32, out: &mut Vec<NotReady>) {
    let name = || link.name.clone();
    let Some(peer) = link.peer else {
        out.push(NotReady::Unknown {
            name: name(),
            error: "the kernel reports no peer for this veth".into(),
        });
        return;
    };
    // A veth has carrier exactly when both ends are up.
    let peer_down = link.up && !link.lower_up;
    if let Some(netnsid) = peer.netnsid {
        let peer_name = PeerName::Elsewhere { ifindex: peer.ifindex, netnsid };
        if peer_down {
            out.push(NotReady::VethPeerDown { name: name(), peer: peer_name.clone() });
        }
        match link.xdp_xmit() {
            Some(true) => {}
            Some(false) => {
                out.push(NotReady::VethPeerNotReady { name: name(), peer: peer_name, generic_xdp: false })
            }
            None => out.push(NotReady::VethPeerUninspectable { name: name(), peer }),
        }
        return;
    }
    let p = match by_index(peer.ifindex) {
        Ok(p) => p,
        Err(e) => return out.push(NotReady::Unknown { name: name(), error: format!("its peer: {e}") }),
    };
    if !p.up || peer_down {
        out.push(NotReady::VethPeerDown { name: name(), peer: PeerName::Here(p.name.clone()) });
    }
    if p.mtu < min_mtu {
        out.push(NotReady::VethPeerMtuTooSmall {
            name: name(),
            peer: p.name.clone(),
            mtu: p.mtu,
            min: min_mtu,
        });
    }
    let takes = p.xdp.driver.is_some()
        || match gro(&p.name) {
            Ok(on) => on,
            Err(e) => return out.push(NotReady::Unknown { name: name(), error: format!("its peer: {e}") }),
        };
    if !takes {
        out.push(NotReady::VethPeerNotReady {
            name: name(),
            peer: PeerName::Here(p.name),
            generic_xdp: p.xdp.generic.is_some(),
        });
    } else if link.xdp_xmit() == Some(false) {
        // The kernel disagrees for a reason of its own (veth_set_xdp_features
        // also wants the peer's TX queues to fit this end's RX queues).
        out.push(NotReady::NoXdpXmit { name: name(), kind: link.kind.clone() });
    }
}

/// Makes a veth target take redirected frames by turning GRO on for its
/// peer (the other way is an XDP program on the peer). Idempotent. The peer
/// must be in the current namespace; a peer in another one is an error
/// ([`NetdevError::PeerElsewhere`]), as is a device that is not a veth. A
/// peer that is down still has to be set up.
pub fn make_veth_ready(link: &Link) -> Result<(), NetdevError> {
    if !link.is("veth") {
        return Err(NetdevError::NotVeth { name: link.name.clone(), kind: link.kind.clone() });
    }
    let peer = link
        .peer
        .ok_or_else(|| NetdevError::Malformed { what: format!("veth {} has no peer", link.name) })?;
    if peer.netnsid.is_some() {
        return Err(NetdevError::PeerElsewhere { name: link.name.clone(), peer });
    }
    let p = by_index(peer.ifindex)?;
    set_gro(&p.name, true)
}

// ---------------------------------------------------------------- netlink
//
// Constants from linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
// linux/genetlink.h and linux/netdev.h (stable kernel ABI).

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// The attribute type without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

const RTM_GETLINK: u16 = 18;
const IFINFOMSG_LEN: usize = 16;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
/// `RTEXT_FILTER_SKIP_STATS`: replies without the counters.
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

const GENL_ID_CTRL: u16 = 0x10;
const GENL_HDRLEN: usize = 4;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// A failed netlink conversation, before it gets its context.
#[derive(Debug)]
enum NlError {
    Os(io::Error),
    Malformed(String),
    /// The kernel flagged a dump inconsistent (`NLM_F_DUMP_INTR`).
    Interrupted,
}

impl From<io::Error> for NlError {
    fn from(e: io::Error) -> NlError {
        NlError::Os(e)
    }
}

impl NlError {
    fn into_netdev(self, what: &str) -> NetdevError {
        match self {
            NlError::Os(error) => NetdevError::Os { what: what.to_string(), error },
            NlError::Malformed(m) => NetdevError::Malformed { what: format!("{what}: {m}") },
            NlError::Interrupted => NetdevError::Os {
                what: what.to_string(),
                error: io::Error::other("the device list kept changing during the dump"),
            },
        }
    }
}

/// A netlink socket of one protocol, opened in the current thread's network
/// namespace (a socket stays in the namespace it was created in, so one is
/// opened per call rather than kept).
struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open(protocol: libc::c_int) -> Result<Socket, NlError> {
        // SAFETY: plain socket(2); the fd is owned (closed on drop) right away.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The kernel answers synchronously; the timeout only guards against
        // waiting forever on a reply that is never coming.
        let timeout = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: the option value is a live `timeval` of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(Socket { fd, seq: 0 })
    }

    /// Sends one request (`NLM_F_REQUEST | flags`) and returns the payloads
    /// of the answers: one message, or with `NLM_F_DUMP` every message up to
    /// `NLMSG_DONE`. An error message becomes `NlError::Os` with its errno.
    fn request(&mut self, ty: u16, flags: u16, body: &[u8]) -> Result<Vec<Vec<u8>>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = u32::try_from(NLMSG_HDRLEN + body.len())
            .map_err(|_| NlError::Malformed("request too long".into()))?;
        let mut msg = Vec::with_capacity(len as usize);
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        msg.extend_from_slice(body);
        // SAFETY: all-zero `sockaddr_nl` is valid (nl_pid 0 = the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buffer and address are live and their lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let buf = self.recv()?;
            for m in messages(&buf).map_err(NlError::Malformed)? {
                if m.seq != seq {
                    continue; // not an answer to this request
                }
                match m.ty {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR => {
                        let code = read_i32(m.payload, 0)
                            .ok_or_else(|| NlError::Malformed("short error message".into()))?;
                        return match code {
                            0 => Ok(out), // an acknowledgement
                            code => Err(io::Error::from_raw_os_error(code.saturating_neg()).into()),
                        };
                    }
                    NLMSG_DONE => {
                        // A dump that failed half-way puts the error here.
                        if let Some(code) = read_i32(m.payload, 0).filter(|&c| c < 0) {
                            return Err(io::Error::from_raw_os_error(code.saturating_neg()).into());
                        }
                        return if interrupted { Err(NlError::Interrupted) } else { Ok(out) };
                    }
                    NLMSG_OVERRUN => return Err(NlError::Malformed("the kernel reports an overrun".into())),
                    _ => {
                        interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                        out.push(m.payload.to_vec());
                        if !dump {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// One datagram, whatever its size (peeked first, so never truncated).
    fn recv(&self) -> Result<Vec<u8>, NlError> {
        let fd = self.fd.as_raw_fd();
        let check = |n: isize| -> Result<usize, Option<NlError>> {
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => Err(None),
                io::ErrorKind::WouldBlock => Err(Some(
                    io::Error::new(io::ErrorKind::TimedOut, "no answer from the kernel within 5 s").into(),
                )),
                _ => Err(Some(e.into())),
            }
        };
        loop {
            // SAFETY: a zero-length peek writes nothing; MSG_TRUNC makes it
            // return the datagram's real length.
            let size = match check(unsafe {
                libc::recv(fd, std::ptr::null_mut(), 0, libc::MSG_PEEK | libc::MSG_TRUNC)
            }) {
                Ok(n) => n,
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            };
            let mut buf = vec![0u8; size];
            // SAFETY: `buf` is live and `size` bytes long.
            match check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), size, 0) }) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
    }
}

/// A netlink message: header fields and payload.
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of one datagram (`struct nlmsghdr`: u32 length including
/// the 16-byte header, u16 type, u16 flags, u32 sequence, u32 port id, then
/// the payload, padded to 4 bytes). Every length is checked.
fn messages(mut buf: &[u8]) -> Result<Vec<Msg<'_>>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let header =
            |at| read_u32(buf, at).ok_or_else(|| format!("message header truncated ({} bytes)", buf.len()));
        let len = header(0)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(format!("message length {len} with {} bytes left", buf.len()));
        }
        let word = header(4)?;
        out.push(Msg {
            ty: (word & 0xffff) as u16,
            flags: (word >> 16) as u16,
            seq: header(8)?,
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The attributes of `buf` in order, as (type, payload) (`struct nlattr`:
/// u16 length including the 4-byte header, u16 type, payload, padding to 4
/// bytes). The type comes without the `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER`
/// bits. A truncated or overlong attribute is an error, never a panic.
fn attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (Some(len), Some(ty)) = (read_u16(buf, 0), read_u16(buf, 2)) else {
            return Err(format!("attribute header truncated ({} bytes)", buf.len()));
        };
        let len = len as usize;
        if len < 4 || len > buf.len() {
            return Err(format!(
                "attribute {} has length {len} with {} bytes left",
                ty & NLA_TYPE_MASK,
                buf.len()
            ));
        }
        out.push((ty & NLA_TYPE_MASK, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// The payload of a fixed-size attribute, which must have exactly `N` bytes.
fn fixed<const N: usize>(payload: &[u8], what: &str) -> Result<[u8; N], String> {
    payload.try_into().map_err(|_| format!("{what}: {} bytes where {N} were expected", payload.len()))
}

/// A string attribute, up to its NUL.
fn string(payload: &[u8]) -> String {
    let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// An `RTM_NEWLINK` payload: `struct ifinfomsg` (family, pad, type, index,
/// flags, change) and the link's attributes.
fn parse_link(payload: &[u8]) -> Result<Link, String> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(format!("link message of {} bytes, shorter than struct ifinfomsg", payload.len()));
    }
    let index = read_i32(payload, 4).ok_or("ifinfomsg truncated")?;
    let flags = read_u32(payload, 8).ok_or("ifinfomsg truncated")?;
    let ifindex = u32::try_from(index).map_err(|_| format!("negative ifindex {index}"))?;
    let mut link = Link {
        ifindex,
        name: String::new(),
        mac: [0; 6],
        mtu: 0,
        up: flags & IFF_UP != 0,
        lower_up: flags & IFF_LOWER_UP != 0,
        kind: None,
        peer: None,
        xdp: XdpProgs::default(),
        xdp_features: None,
    };
    let mut iflink = None;
    let mut netnsid = None;
    for (ty, p) in attrs(&payload[IFINFOMSG_LEN..])? {
        match ty {
            IFLA_IFNAME => link.name = string(p),
            IFLA_ADDRESS => link.mac = p.try_into().unwrap_or([0; 6]),
            IFLA_MTU => link.mtu = u32::from_ne_bytes(fixed(p, "IFLA_MTU")?),
            IFLA_LINK => iflink = Some(u32::from_ne_bytes(fixed(p, "IFLA_LINK")?)),
            IFLA_LINK_NETNSID => netnsid = Some(i32::from_ne_bytes(fixed(p, "IFLA_LINK_NETNSID")?)),
            IFLA_LINKINFO => {
                for (ty, p) in attrs(p)? {
                    if ty == IFLA_INFO_KIND {
                        link.kind = Some(string(p));
                    }
                }
            }
            IFLA_XDP => link.xdp = parse_xdp(p)?,
            _ => {}
        }
    }
    if link.name.is_empty() {
        return Err(format!("link {ifindex} has no IFLA_IFNAME"));
    }
    if link.kind.as_deref() == Some("veth") {
        link.peer = iflink.filter(|&i| i != 0).map(|ifindex| Peer { ifindex, netnsid });
    }
    Ok(link)
}

/// `IFLA_XDP`: the per-mode program ids, or for kernels that only give
/// `IFLA_XDP_ATTACHED` + `IFLA_XDP_PROG_ID`, the one program in its mode.
fn parse_xdp(payload: &[u8]) -> Result<XdpProgs, String> {
    let mut progs = XdpProgs::default();
    let mut attached = 0u8;
    let mut single = None;
    let id = |p: &[u8], what| fixed(p, what).map(u32::from_ne_bytes).map(|id| Some(id).filter(|&id| id != 0));
    for (ty, p) in attrs(payload)? {
        match ty {
            IFLA_XDP_ATTACHED => attached = u8::from_ne_bytes(fixed(p, "IFLA_XDP_ATTACHED")?),
            IFLA_XDP_PROG_ID => single = id(p, "IFLA_XDP_PROG_ID")?,
            IFLA_XDP_DRV_PROG_ID => progs.driver = id(p, "IFLA_XDP_DRV_PROG_ID")?,
            IFLA_XDP_SKB_PROG_ID => progs.generic = id(p, "IFLA_XDP_SKB_PROG_ID")?,
            IFLA_XDP_HW_PROG_ID => progs.offload = id(p, "IFLA_XDP_HW_PROG_ID")?,
            _ => {}
        }
    }
    if progs == XdpProgs::default() {
        match attached {
            XDP_ATTACHED_DRV => progs.driver = single,
            XDP_ATTACHED_SKB => progs.generic = single,
            XDP_ATTACHED_HW => progs.offload = single,
            _ => {}
        }
    }
    Ok(progs)
}

/// An `RTM_GETLINK` body: `struct ifinfomsg` for `index` (0: by name, or
/// all), and a mask that leaves the counters out of the answer.
fn ifinfomsg(index: i32) -> Vec<u8> {
    let mut body = vec![0u8; IFINFOMSG_LEN];
    body[0] = libc::AF_UNSPEC as u8;
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    put_attr(&mut body, IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    body
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = (4 + payload.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// `xdp-features` by ifindex, from the `netdev` generic-netlink family: of
/// one device, or of all. Errors when the family does not exist (before
/// Linux 6.3).
fn xdp_features(ifindex: Option<u32>) -> Result<HashMap<u32, u64>, NlError> {
    let mut sock = Socket::open(libc::NETLINK_GENERIC)?;
    let mut body = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
    put_attr(&mut body, CTRL_ATTR_FAMILY_NAME, b"netdev\0");
    let reply = sock.request(GENL_ID_CTRL, 0, &body)?;
    let family = reply
        .first()
        .and_then(|r| r.get(GENL_HDRLEN..))
        .map(attrs)
        .transpose()
        .map_err(NlError::Malformed)?
        .and_then(|a| a.into_iter().find(|(ty, _)| *ty == CTRL_ATTR_FAMILY_ID))
        .map(|(_, p)| fixed(p, "CTRL_ATTR_FAMILY_ID").map(u16::from_ne_bytes))
        .transpose()
        .map_err(NlError::Malformed)?
        .ok_or_else(|| NlError::Malformed("no id for the netdev family".into()))?;
    let mut body = vec![NETDEV_CMD_DEV_GET, 1, 0, 0];
    if let Some(ifindex) = ifindex {
        put_attr(&mut body, NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes());
    }
    let flags = if ifindex.is_some() { 0 } else { NLM_F_DUMP };
    let mut features = HashMap::new();
    for reply in sock.request(family, flags, &body)? {
        let (mut index, mut value) = (None, None);
        for (ty, p) in attrs(reply.get(GENL_HDRLEN..).unwrap_or_default()).map_err(NlError::Malformed)? {
            match ty {
                NETDEV_A_DEV_IFINDEX => {
                    index = Some(u32::from_ne_bytes(
                        fixed(p, "NETDEV_A_DEV_IFINDEX").map_err(NlError::Malformed)?,
                    ))
                }
                NETDEV_A_DEV_XDP_FEATURES => {
                    value = Some(u64::from_ne_bytes(
                        fixed(p, "NETDEV_A_DEV_XDP_FEATURES").map_err(NlError::Malformed)?,
                    ))
                }
                _ => {}
            }
        }
        if let (Some(index), Some(value)) = (index, value) {
            features.insert(index, value);
        }
    }
    Ok(features)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    read_u32(buf, at).map(|v| v as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        put_attr(&mut buf, ty, payload);
        buf
    }

    /// An `RTM_NEWLINK` payload as the kernel sends it for an up veth
    /// `veth0` (ifindex 7, MTU 1500) whose peer is ifindex 8 in nsid 3, with
    /// a native XDP program 42 attached.
    fn veth_payload() -> Vec<u8> {
        let mut buf = vec![0u8; IFINFOMSG_LEN];
        buf[4..8].copy_from_slice(&7i32.to_ne_bytes());
        buf[8..12].copy_from_slice(&(IFF_UP | IFF_LOWER_UP).to_ne_bytes());
        buf.extend(attr(IFLA_IFNAME, b"veth0\0"));
        buf.extend(attr(IFLA_ADDRESS, &[0x02, 0, 0, 0, 0, 0x07]));
        buf.extend(attr(IFLA_MTU, &1500u32.to_ne_bytes()));
        buf.extend(attr(IFLA_LINK, &8u32.to_ne_bytes()));
        buf.extend(attr(IFLA_LINK_NETNSID, &3i32.to_ne_bytes()));
        buf.extend(attr(IFLA_LINKINFO | 0x8000, &attr(IFLA_INFO_KIND, b"veth\0")));
        let mut xdp = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_DRV]);
        xdp.extend(attr(IFLA_XDP_DRV_PROG_ID, &42u32.to_ne_bytes()));
        xdp.extend(attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes()));
        buf.extend(attr(IFLA_XDP | 0x8000, &xdp));
        buf.extend(attr(999, b"an attribute this parser does not know"));
        buf
    }

    #[test]
    fn attributes_are_split_padded_and_unflagged() {
        let mut buf = attr(3, b"eth0\0"); // 9 bytes + 3 padding
        buf.extend(attr(4 | 0x8000, &attr(1, b"ab"))); // nested, flagged
        buf.extend(attr(5, &[])); // empty payload
        let parsed = attrs(&buf).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], (3, &b"eth0\0"[..]));
        assert_eq!(parsed[1].0, 4, "NLA_F_NESTED is masked off");
        assert_eq!(attrs(parsed[1].1).unwrap(), vec![(1, &b"ab"[..])]);
        assert_eq!(parsed[2], (5, &[][..]));
        // The last attribute may come without its padding.
        assert_eq!(attrs(&attr(3, b"x")[..5]).unwrap(), vec![(3, &b"x"[..])]);
    }

    #[test]
    fn truncated_attributes_are_errors() {
        let good = attr(3, b"eth0\0");
        assert!(attrs(&good[..3]).unwrap_err().contains("header truncated"));
        assert!(attrs(&good[..8]).unwrap_err().contains("length 9"), "length beyond the buffer");
        assert!(attrs(&[2, 0, 3, 0]).is_err(), "length below the header's 4 bytes");
        assert!(attrs(&[0, 0, 3, 0, 0, 0, 0, 0]).is_err(), "length 0 would loop forever");
        assert_eq!(fixed::<4>(&[1, 2], "IFLA_MTU").unwrap_err(), "IFLA_MTU: 2 bytes where 4 were expected");
    }

    #[test]
    fn parses_a_link_message() {
        let link = parse_link(&veth_payload()).unwrap();
        assert_eq!(
            link,
            Link {
                ifindex: 7,
                name: "veth0".into(),
                mac: [0x02, 0, 0, 0, 0, 0x07],
                mtu: 1500,
                up: true,
                lower_up: true,
                kind: Some("veth".into()),
                peer: Some(Peer { ifindex: 8, netnsid: Some(3) }),
                xdp: XdpProgs { driver: Some(42), generic: None, offload: None },
                xdp_features: None,
            }
        );
        assert_eq!(link.xdp_prog_id(), Some(42));
    }

    #[test]
    fn older_kernels_give_only_the_attached_mode() {
        let mut xdp = attr(IFLA_XDP_ATTACHED, &[XDP_ATTACHED_SKB]);
        xdp.extend(attr(IFLA_XDP_PROG_ID, &9u32.to_ne_bytes()));
        assert_eq!(parse_xdp(&xdp).unwrap(), XdpProgs { generic: Some(9), ..XdpProgs::default() });
        assert_eq!(parse_xdp(&attr(IFLA_XDP_ATTACHED, &[0])).unwrap(), XdpProgs::default());
    }

    #[test]
    fn every_truncation_of_a_link_message_is_an_error_not_a_panic() {
        let full = veth_payload();
        for len in 0..full.len() {
            // Cutting at an attribute boundary leaves a valid, shorter message.
            if let Err(e) = parse_link(&full[..len]) {
                assert!(!e.is_empty());
            }
        }
        assert!(parse_link(&full[..10]).unwrap_err().contains("ifinfomsg"));
        assert!(parse_link(&full[..IFINFOMSG_LEN]).unwrap_err().contains("IFLA_IFNAME"));
        // And garbage never panics either.
        let mut state = 0x2545_f491_u32;
        for round in 0..2000 {
            let mut buf = full.clone();
            for _ in 0..(round % 7 + 1) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = state as usize % buf.len();
                buf[at] = (state >> 8) as u8;
            }
            let _ = parse_link(&buf);
            let _ = messages(&buf);
        }
    }

    #[test]
    fn a_wrong_sized_fixed_attribute_is_an_error() {
        let mut buf = veth_payload();
        buf.extend(attr(IFLA_MTU, &[1, 2]));
        assert!(parse_link(&buf).unwrap_err().contains("IFLA_MTU"));
        let mut buf = vec![0u8; IFINFOMSG_LEN];
        buf[4..8].copy_from_slice(&(-1i32).to_ne_bytes());
        assert!(parse_link(&buf).unwrap_err().contains("negative"));
    }

    #[test]
    fn splits_messages_and_checks_their_lengths() {
        let mut buf = Vec::new();
        for (seq, payload) in [(1u32, &b"abc"[..]), (2, &b""[..])] {
            buf.extend(((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
            buf.extend(NLMSG_DONE.to_ne_bytes());
            buf.extend(NLM_F_DUMP_INTR.to_ne_bytes());
            buf.extend(seq.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend(payload);
            buf.resize(align4(buf.len()), 0);
        }
        let msgs = messages(&buf).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            (msgs[0].ty, msgs[0].flags, msgs[0].seq, msgs[0].payload),
            (NLMSG_DONE, NLM_F_DUMP_INTR, 1, &b"abc"[..])
        );
        assert_eq!((msgs[1].seq, msgs[1].payload), (2, &b""[..]));
        assert!(messages(&buf[..10]).is_err());
        let mut short = buf.clone();
        short[0] = 8; // shorter than a header
        assert!(messages(&short).is_err());
        let mut long = buf;
        long[0] = 200; // longer than the datagram
        assert!(messages(&long).is_err());
    }

    #[test]
    fn names_the_kernel_refuses_are_bad_names() {
        for name in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-bytes-xx"] {
            assert!(matches!(check_name(name), Err(NetdevError::BadName { .. })), "{name:?}");
        }
        for name in ["lo", "veth-red", "fifteen-bytes-x"] {
            assert!(check_name(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn messages_say_what_is_wrong_and_what_to_do() {
        assert_eq!(
            NetdevError::NoSuchName { name: "veth-red".into() }.to_string(),
            "no interface named \"veth-red\" in this network namespace"
        );
        let in_spec = NetdevError::Device {
            device: "red".into(),
            line: 4,
            error: Box::new(NetdevError::NoSuchIndex { ifindex: 99 }),
        };
        assert_eq!(
            in_spec.to_string(),
            "device `red` (line 4): no interface with ifindex 99 in this network namespace"
        );
        assert_eq!(
            NotReady::Down { name: "tx0".into() }.to_string(),
            "tx0 is down: frames redirected to it are dropped silently; fix: `ip link set dev tx0 up`"
        );
        let peer = NotReady::VethPeerNotReady {
            name: "tx0".into(),
            peer: PeerName::Here("rx0".into()),
            generic_xdp: true,
        };
        let text = peer.to_string();
        assert!(text.contains("peer rx0 has neither a native XDP program nor GRO on"), "{text}");
        assert!(text.contains("generic-mode XDP program does not count"), "{text}");
        assert!(text.contains("`ethtool -K rx0 gro on`"), "{text}");
        let elsewhere = NotReady::VethPeerNotReady {
            name: "tx0".into(),
            peer: PeerName::Elsewhere { ifindex: 2, netnsid: 0 },
            generic_xdp: false,
        };
        let text = elsewhere.to_string();
        assert!(text.contains("(ifindex 2 in another network namespace, nsid 0)"), "{text}");
        assert!(text.contains("inside the peer's namespace"), "{text}");
    }
}
