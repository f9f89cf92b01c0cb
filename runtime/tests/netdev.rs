//! `netdev` against the real kernel, each test in its own network namespace
//! and run inside it with `Netns::enter` (a `setns` of the thread only, as
//! `nsenter --net=` does: `/sys/class/net` still shows the host's devices
//! there). `ip -j link` and the testkit's own ethtool calls are the oracle.

use devmapc::ir::DeviceData;
use devmapc::model::Binding;
use devmapc_runtime::netdev::{self, Link, NetdevError, NotReady, Peer, PeerName, ETH_MIN_MTU};
use devmapc_testkit::bpf;
use devmapc_testkit::netns::Netns;
use devmapc_testkit::objects;
use devmapc_testkit::packet::Frame;
use devmapc_testkit::{require_privileged, wait_until};
use libbpf_rs::{MapCore, MapFlags, Xdp, XdpFlags};
use std::os::fd::AsFd;
use std::time::Duration;

/// `ip -j link show dev <dev>` inside `ns`, the first (only) entry.
fn ip_link(ns: &Netns, dev: &str) -> serde_json::Value {
    let out = ns.ip(&["-j", "link", "show", "dev", dev]).unwrap();
    let mut all: serde_json::Value = serde_json::from_str(&out).unwrap();
    all[0].take()
}

fn link(ns: &Netns, name: &str) -> Link {
    ns.enter(|| netdev::by_name(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn readiness(ns: &Netns, name: &str, min_mtu: u32) -> Vec<NotReady> {
    ns.enter(|| netdev::readiness(&netdev::by_name(name).unwrap(), min_mtu))
}

/// A namespace with the veth pair `dmctx` (the redirect target) / `dmcrx`,
/// both up, GRO off on `dmcrx` and no XDP program anywhere.
fn target_pair() -> Netns {
    let ns = Netns::new().unwrap();
    ns.veth("dmctx", "dmcrx").unwrap();
    ns.set_gro("dmcrx", false).unwrap();
    ns
}

#[test]
fn by_name_and_by_index_agree_with_ip_link() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let (a, b) = ns.veth("dmca", "dmcb").unwrap();
    ns.ip(&["link", "set", "dev", "dmca", "mtu", "1400"]).unwrap();
    let found = link(&ns, "dmca");
    let json = ip_link(&ns, "dmca");
    assert_eq!(found.ifindex, a.ifindex);
    assert_eq!(found.mac, a.mac);
    assert_eq!(u64::from(found.mtu), json["mtu"].as_u64().unwrap());
    assert_eq!(found.mtu, 1400);
    assert_eq!(found.name, "dmca");
    assert!(found.up && found.lower_up);
    assert_eq!(found.kind.as_deref(), Some("veth"));
    assert_eq!(found.peer, Some(Peer { ifindex: b.ifindex, netnsid: None }));
    assert_eq!(found.xdp_prog_id(), None);
    assert_eq!(ns.enter(|| netdev::by_index(a.ifindex)).unwrap(), found);
    assert_eq!(ns.enter(|| netdev::resolve(&Binding::Ifindex(b.ifindex))).unwrap().name, "dmcb");
    assert_eq!(ns.enter(|| netdev::resolve(&Binding::Ifname("dmcb".into()))).unwrap().mac, b.mac);
    assert_eq!(
        devmapc_runtime::Device::from(&found),
        devmapc_runtime::Device { ifindex: a.ifindex, mac: a.mac }
    );

    // Loopback: no kind, no peer, an all-zero address, and down state read
    // from the flags (`lo` is up in every test namespace).
    let lo = link(&ns, "lo");
    assert_eq!((lo.ifindex, lo.kind, lo.peer, lo.mac), (1, None, None, [0; 6]));
    assert!(lo.up);
}

#[test]
fn missing_devices_give_clear_errors() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    ns.enter(|| {
        let err = netdev::by_name("veth-red").unwrap_err();
        assert!(matches!(err, NetdevError::NoSuchName { .. }), "{err:?}");
        assert_eq!(err.to_string(), "no interface named \"veth-red\" in this network namespace");
        for ifindex in [0, 9999, u32::MAX] {
            let err = netdev::by_index(ifindex).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("no interface with ifindex {ifindex} in this network namespace")
            );
        }
        let err = netdev::by_name("much-too-long-a-name").unwrap_err();
        assert!(matches!(err, NetdevError::BadName { .. }), "{err:?}");
        let err = netdev::gro("veth-red").unwrap_err();
        assert!(matches!(err, NetdevError::NoSuchName { .. }), "{err:?}");

        // A device of the plan: the message names it and its spec line.
        let device = DeviceData {
            name: "red".into(),
            binding: Binding::Ifname("veth-red".into()),
            program: None,
            args: vec![],
            ingress: false,
            groups: vec![],
            line: 7,
        };
        assert_eq!(
            netdev::resolve_device(&device).unwrap_err().to_string(),
            "device `red` (line 7): no interface named \"veth-red\" in this network namespace"
        );
    });
}

#[test]
fn resolution_happens_in_the_current_namespace() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let (only_here, _) = ns.veth("dmconly0", "dmconly1").unwrap();
    ns.enter(|| {
        let found = netdev::by_name("dmconly0").unwrap();
        assert_eq!(found.ifindex, only_here.ifindex);
        // /sys/class/net is still the host's after a thread's setns: going
        // through it would not have found the device.
        assert!(!std::path::Path::new("/sys/class/net/dmconly0").exists());
    });
    let err = netdev::by_name("dmconly0").unwrap_err();
    assert!(matches!(err, NetdevError::NoSuchName { .. }), "found from the host: {err:?}");
}

#[test]
fn all_lists_the_namespace_devices() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let (a, b) = ns.veth("dmca", "dmcb").unwrap();
    ns.ip(&["link", "add", "dmcbr", "type", "bridge"]).unwrap();
    let links = ns.enter(netdev::all).unwrap();
    let mut sorted: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    sorted.sort_unstable();
    assert_eq!(sorted, ["dmca", "dmcb", "dmcbr", "lo"], "exactly the namespace's devices");
    assert!(links.windows(2).all(|w| w[0].ifindex < w[1].ifindex), "ordered by ifindex");
    for l in &links {
        assert_eq!(*l, link(&ns, &l.name), "all() and by_name() agree on {}", l.name);
    }
    let a_link = links.iter().find(|l| l.name == "dmca").unwrap();
    assert_eq!((a_link.ifindex, a_link.mac), (a.ifindex, a.mac));
    assert_eq!(links.iter().find(|l| l.name == "dmcbr").unwrap().kind.as_deref(), Some("bridge"));
    assert_eq!(links.iter().find(|l| l.name == "dmcb").unwrap().mac, b.mac);
}

#[test]
fn gro_reads_and_writes_what_ethtool_sees() {
    require_privileged!();
    let ns = target_pair();
    assert!(!ns.enter(|| netdev::gro("dmcrx")).unwrap());
    ns.enter(|| netdev::set_gro("dmcrx", true)).unwrap();
    assert!(ns.gro("dmcrx").unwrap(), "the testkit's own ETHTOOL_GGRO agrees");
    assert!(ns.enter(|| netdev::gro("dmcrx")).unwrap());
    ns.enter(|| netdev::set_gro("dmcrx", false)).unwrap();
    assert!(!ns.gro("dmcrx").unwrap());
}

#[test]
fn a_down_target_reports_down() {
    require_privileged!();
    let ns = target_pair();
    ns.set_gro("dmcrx", true).unwrap();
    assert_eq!(readiness(&ns, "dmctx", ETH_MIN_MTU), []);
    ns.set_down("dmctx").unwrap();
    let down = link(&ns, "dmctx");
    assert!(!down.up && !down.lower_up);
    assert_eq!(readiness(&ns, "dmctx", ETH_MIN_MTU), [NotReady::Down { name: "dmctx".into() }]);
    assert!(readiness(&ns, "dmctx", ETH_MIN_MTU)[0].to_string().contains("ip link set dev dmctx up"));
    ns.set_up("dmctx").unwrap();
    assert_eq!(readiness(&ns, "dmctx", ETH_MIN_MTU), []);
}

#[test]
fn a_veth_whose_peer_is_down_is_not_ready() {
    require_privileged!();
    let ns = target_pair();
    ns.set_gro("dmcrx", true).unwrap();
    ns.set_down("dmcrx").unwrap();
    let tx = link(&ns, "dmctx");
    assert!(tx.up && !tx.lower_up, "a veth loses its carrier with its peer");
    let reasons = readiness(&ns, "dmctx", ETH_MIN_MTU);
    assert_eq!(
        reasons,
        [NotReady::VethPeerDown { name: "dmctx".into(), peer: PeerName::Here("dmcrx".into()) }]
    );
    assert!(reasons[0].to_string().contains("ip link set dev dmcrx up"), "{}", reasons[0]);
}

#[test]
fn mtu_below_the_minimum_is_reported_for_the_target_and_its_peer() {
    require_privileged!();
    let ns = target_pair();
    ns.set_gro("dmcrx", true).unwrap();
    ns.ip(&["link", "set", "dev", "dmctx", "mtu", "1280"]).unwrap();
    assert_eq!(readiness(&ns, "dmctx", 1280), []);
    assert_eq!(
        readiness(&ns, "dmctx", 1500),
        [NotReady::MtuTooSmall { name: "dmctx".into(), mtu: 1280, min: 1500 }]
    );
    ns.ip(&["link", "set", "dev", "dmctx", "mtu", "1500"]).unwrap();
    ns.ip(&["link", "set", "dev", "dmcrx", "mtu", "1000"]).unwrap();
    assert_eq!(
        readiness(&ns, "dmctx", 1500),
        [NotReady::VethPeerMtuTooSmall { name: "dmctx".into(), peer: "dmcrx".into(), mtu: 1000, min: 1500 }]
    );
    assert_eq!(readiness(&ns, "dmctx", ETH_MIN_MTU), []);
}

#[test]
fn a_veth_whose_peer_has_no_xdp_and_no_gro_is_not_ready_until_made_ready() {
    require_privileged!();
    let ns = target_pair();
    let tx = link(&ns, "dmctx");
    assert_eq!(tx.xdp_xmit(), Some(false), "the kernel agrees: no ndo-xmit in the veth's XDP features");
    let reasons = ns.enter(|| netdev::readiness(&tx, ETH_MIN_MTU));
    assert_eq!(
        reasons,
        [NotReady::VethPeerNotReady {
            name: "dmctx".into(),
            peer: PeerName::Here("dmcrx".into()),
            generic_xdp: false
        }]
    );
    let text = reasons[0].to_string();
    assert!(text.contains("dropped silently") && text.contains("ethtool -K dmcrx gro on"), "{text}");

    ns.enter(|| netdev::make_veth_ready(&tx)).unwrap();
    assert!(ns.gro("dmcrx").unwrap(), "GRO is on for the peer");
    let tx = link(&ns, "dmctx");
    assert_eq!(tx.xdp_xmit(), Some(true), "and the kernel now lists ndo-xmit for the veth");
    assert_eq!(ns.enter(|| netdev::readiness(&tx, ETH_MIN_MTU)), []);
    ns.enter(|| netdev::make_veth_ready(&tx)).unwrap(); // idempotent

    // Only veths can be made ready that way.
    let lo = link(&ns, "lo");
    let err = ns.enter(|| netdev::make_veth_ready(&lo)).unwrap_err();
    assert!(matches!(err, NetdevError::NotVeth { .. }), "{err:?}");
}

#[test]
fn a_veth_whose_peer_has_a_native_xdp_program_is_ready() {
    require_privileged!();
    let ns = target_pair();
    let rx = link(&ns, "dmcrx");
    let obj = bpf::load(objects::PASS).unwrap();
    let prog = bpf::prog(&obj, "xdp_pass").unwrap();
    let _attached = ns.enter(|| prog.attach_xdp(rx.ifindex as i32)).unwrap();
    let rx = link(&ns, "dmcrx");
    assert_eq!(
        rx.xdp.driver,
        Some(bpf::prog_id(&prog).unwrap()),
        "a BPF link attaches in native mode on a veth"
    );
    assert_eq!(rx.xdp_prog_id(), rx.xdp.driver);
    assert!(!ns.gro("dmcrx").unwrap());
    assert_eq!(link(&ns, "dmctx").xdp_xmit(), Some(true));
    assert_eq!(readiness(&ns, "dmctx", ETH_MIN_MTU), []);
}

#[test]
fn a_generic_xdp_program_on_the_peer_does_not_make_a_veth_ready() {
    require_privileged!();
    let ns = target_pair();
    let rx = link(&ns, "dmcrx");
    let obj = bpf::load(objects::PASS).unwrap();
    let prog = bpf::prog(&obj, "xdp_pass").unwrap();
    // Attached through netlink, it stays until the namespace (and with it
    // the veth) is deleted.
    ns.enter(|| Xdp::new(prog.as_fd()).attach(rx.ifindex as i32, XdpFlags::SKB_MODE)).unwrap();
    let rx = link(&ns, "dmcrx");
    assert_eq!((rx.xdp.driver, rx.xdp.generic), (None, Some(bpf::prog_id(&prog).unwrap())));
    assert_eq!(link(&ns, "dmctx").xdp_xmit(), Some(false), "the kernel does not count it either");
    assert_eq!(
        readiness(&ns, "dmctx", ETH_MIN_MTU),
        [NotReady::VethPeerNotReady {
            name: "dmctx".into(),
            peer: PeerName::Here("dmcrx".into()),
            generic_xdp: true
        }]
    );
}

#[test]
fn a_veth_whose_peer_is_in_another_namespace() {
    require_privileged!();
    let here = Netns::new().unwrap();
    let there = Netns::new().unwrap();
    let (_, rx) = here.veth_to("dmctx", &there, "dmcrx").unwrap();
    there.set_gro("dmcrx", false).unwrap();
    let tx = link(&here, "dmctx");
    let peer = tx.peer.expect("a veth has a peer");
    assert_eq!(peer.ifindex, rx.ifindex);
    let netnsid = peer.netnsid.expect("the peer's namespace has an id");

    // GRO over there cannot be read from here, but the kernel's XDP features
    // of this end say whether the peer takes frames.
    assert_eq!(
        here.enter(|| netdev::readiness(&tx, ETH_MIN_MTU)),
        [NotReady::VethPeerNotReady {
            name: "dmctx".into(),
            peer: PeerName::Elsewhere { ifindex: rx.ifindex, netnsid },
            generic_xdp: false
        }]
    );
    let err = here.enter(|| netdev::make_veth_ready(&tx)).unwrap_err();
    assert!(matches!(err, NetdevError::PeerElsewhere { .. }), "{err:?}");
    assert!(err.to_string().contains("another network namespace"), "{err}");

    there.set_gro("dmcrx", true).unwrap();
    assert_eq!(readiness(&here, "dmctx", ETH_MIN_MTU), []);

    // Without the kernel's word it says so rather than guessing.
    let blind = Link { xdp_features: None, ..link(&here, "dmctx") };
    assert_eq!(
        here.enter(|| netdev::readiness(&blind, ETH_MIN_MTU)),
        [NotReady::VethPeerUninspectable { name: "dmctx".into(), peer }]
    );

    there.set_down("dmcrx").unwrap();
    assert_eq!(
        readiness(&here, "dmctx", ETH_MIN_MTU),
        [NotReady::VethPeerDown {
            name: "dmctx".into(),
            peer: PeerName::Elsewhere { ifindex: rx.ifindex, netnsid }
        }]
    );
}

#[test]
fn bridges_and_loopback_cannot_take_xdp_frames() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    ns.ip(&["link", "add", "dmcbr", "type", "bridge"]).unwrap();
    ns.set_up("dmcbr").unwrap();
    assert_eq!(readiness(&ns, "dmcbr", ETH_MIN_MTU), [NotReady::Bridge { name: "dmcbr".into() }]);
    assert_eq!(link(&ns, "dmcbr").xdp_xmit(), Some(false));
    assert_eq!(readiness(&ns, "lo", ETH_MIN_MTU), [NotReady::NoXdpXmit { name: "lo".into(), kind: None }]);
}

/// The promise itself: for each target set-up, frames redirected through a
/// DEVMAP_HASH (live-frames test runs of the testkit's redirect program)
/// arrive exactly when `readiness` finds nothing wrong.
#[test]
fn readiness_predicts_delivery() {
    require_privileged!();
    const FRAMES: u32 = 64;
    let ns = target_pair();
    let (ingress, _) = ns.veth("dmcin", "dmcinp").unwrap();
    let tx = link(&ns, "dmctx");
    let redirect = bpf::load(objects::REDIRECT).unwrap();
    let cfg = bpf::RedirectCfg { key: 7, ..Default::default() };
    bpf::map(&redirect, "cfg").unwrap().update(&0u32.to_ne_bytes(), &cfg.to_bytes(), MapFlags::ANY).unwrap();
    let tx_ports = bpf::map(&redirect, "tx_ports").unwrap();
    ns.enter(|| tx_ports.update(&7u32.to_ne_bytes(), &bpf::devmap_val(tx.ifindex, None), MapFlags::ANY))
        .unwrap();
    let prog = bpf::prog(&redirect, "redirect").unwrap();
    // 14 + 20 + 8 + 200 = 242 bytes: needs an MTU of at least 224.
    let frame = Frame::new().udp(1000, 2000).payload(&[0xab; 200]).build();
    let min_mtu = frame.len() as u32 - 18;

    let pass = bpf::load(objects::PASS).unwrap();
    let pass = bpf::prog(&pass, "xdp_pass").unwrap();
    let rx = link(&ns, "dmcrx").ifindex as i32;
    let check = |setup: &str| {
        let ready = readiness(&ns, "dmctx", min_mtu);
        let before = ns.stats("dmcrx").unwrap().rx_packets;
        ns.enter(|| bpf::test_run_live(&prog, &frame, ingress.ifindex, FRAMES, 0)).unwrap();
        let arrived = || ns.stats("dmcrx").unwrap().rx_packets - before;
        let delivered = wait_until(Duration::from_millis(if ready.is_empty() { 2000 } else { 100 }), || {
            arrived() >= u64::from(FRAMES)
        });
        assert_eq!(
            delivered,
            ready.is_empty(),
            "{setup}: readiness {ready:?}, {} of {FRAMES} frames arrived",
            arrived()
        );
    };
    check("no XDP program, GRO off on the peer");
    ns.enter(|| Xdp::new(pass.as_fd()).attach(rx, XdpFlags::SKB_MODE)).unwrap();
    check("a generic-mode XDP program on the peer");
    ns.enter(|| Xdp::new(pass.as_fd()).detach(rx, XdpFlags::SKB_MODE)).unwrap();
    {
        let _native = ns.enter(|| pass.attach_xdp(rx)).unwrap();
        check("a native XDP program on the peer");
    }
    ns.enter(|| netdev::make_veth_ready(&tx)).unwrap();
    check("GRO on for the peer");
    ns.ip(&["link", "set", "dev", "dmctx", "mtu", &(min_mtu - 1).to_string()]).unwrap();
    check("a target MTU one byte too small");
    ns.ip(&["link", "set", "dev", "dmctx", "mtu", &min_mtu.to_string()]).unwrap();
    check("a target MTU just large enough");
    ns.set_down("dmctx").unwrap();
    check("the target down");
    ns.set_up("dmctx").unwrap();
    ns.set_down("dmcrx").unwrap();
    check("the peer down");
}
