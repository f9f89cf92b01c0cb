//! `apply` against the real kernel: a first apply loads, fills and attaches;
//! a data change is a small diff; a code change swaps programs under live
//! links; a failed apply leaves the previous configuration serving; traffic
//! to unchanged routes loses nothing while routes change and code is
//! upgraded, and while a route of a full table is swapped; entries of a
//! re-created device come back on the next apply;
//! `access` and `numa_node` do what the language says.
//!
//! Each test builds a namespace with veth pairs `dmcX`/`pdmcX` and the test
//! kit's `count` program on every far end (which also makes the targets
//! ready: docs/kernel.md), and pins under `/sys/fs/bpf/devmapc-test-<pid>-<n>`.
//! Frames are real: sent from an AF_PACKET socket into `pdmca`, they arrive
//! on `dmca`, where the deployment's link runs the ingress program.

use devmapc::ir::{names, Ir};
use devmapc_runtime::apply::{self, Kind, Options, Report};
use devmapc_runtime::deploy::{self, DeployError};
use devmapc_runtime::plan::{self, Handles};
use devmapc_runtime::status;
use devmapc_testkit::bpf;
use devmapc_testkit::netns::{send_frames, Iface, Netns};
use devmapc_testkit::packet::Frame;
use devmapc_testkit::pins::PinDir;
use devmapc_testkit::{objects, require_privileged, wait_until};
use libbpf_rs::{Link, Object};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A spec over the rig's devices, with `table` settings and routes.
fn spec(table: &str, routes: &str) -> String {
    format!(
        "table {{ key = ipv4.dst, {table} }}
device a {{ ifname = \"dmca\" }}
device b {{ ifname = \"dmcb\", egress = stamp() }}
device c {{ ifname = \"dmcc\" }}
egress stamp() {{
    eth.src = egress.mac
}}
ingress {{ on = [a], mode = native }}
{routes}
"
    )
}

const ROUTES: &str = "route 10.0.0.2 -> b\nroute 10.0.0.3 -> c";

fn to(dst: [u8; 4]) -> Vec<u8> {
    Frame::new().ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::from(dst)).udp(1000, 53).build()
}

struct Build {
    obj: PathBuf,
    ir: Ir,
    _dir: tempfile::TempDir,
}

fn build(text: &str) -> Build {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fwd.devmap");
    std::fs::write(&path, text).unwrap();
    let outputs = devmapc::Builder::new(&path).out_dir(dir.path()).build().unwrap_or_else(|e| panic!("{e}"));
    let (obj, ir) = deploy::read_manifest_file(&outputs.manifest.unwrap()).unwrap();
    Build { obj, ir, _dir: dir }
}

struct Rig {
    ns: Netns,
    peers: Vec<Iface>,
    counts: Object,
    _counting: Vec<Link>,
    pins: PinDir,
}

impl Rig {
    fn new() -> Rig {
        let ns = Netns::new().unwrap();
        let counts = bpf::load(objects::COUNT).unwrap();
        let (mut peers, mut counting) = (vec![], vec![]);
        for name in ["dmca", "dmcb", "dmcc"] {
            let (_, peer) = ns.veth(name, &format!("p{name}")).unwrap();
            counting.push(Self::count_on(&ns, &counts, peer.ifindex));
            peers.push(peer);
        }
        Rig { ns, peers, counts, _counting: counting, pins: PinDir::new() }
    }

    fn count_on(ns: &Netns, counts: &Object, ifindex: u32) -> Link {
        let counter = bpf::prog(counts, "count").unwrap();
        ns.enter(|| counter.attach_xdp(ifindex as i32)).unwrap()
    }

    fn apply(&self, b: &Build) -> Result<Report, DeployError> {
        self.ns.enter(|| apply::apply(&b.obj, &b.ir, &Options::new(&*self.pins)))
    }

    /// The ifindex of a device of the namespace.
    fn ifindex(&self, dev: &str) -> u32 {
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a valid C string.
        let i = self.ns.enter(|| unsafe { libc::if_nametoindex(name.as_ptr()) });
        assert_ne!(i, 0, "{dev} exists");
        i
    }

    fn peer(&self, dev: &str) -> &Iface {
        self.peers.iter().find(|p| p.name == format!("p{dev}")).unwrap()
    }

    fn received(&self, dev: &str) -> u64 {
        let counts = bpf::map(&self.counts, "counts").unwrap();
        bpf::rx_count(&counts, self.peer(dev).ifindex).unwrap().0
    }

    fn send(&self, dst: [u8; 4], n: u64) {
        let ifindex = self.peer("dmca").ifindex;
        let frame = to(dst);
        self.ns.enter(|| send_frames(ifindex, &frame, n)).unwrap();
    }

    /// Sends `n` frames to `dst` and checks how many each device got.
    fn delivers(&self, dst: [u8; 4], n: u64, expect: &[(&str, u64)]) {
        let before: Vec<u64> = expect.iter().map(|(d, _)| self.received(d)).collect();
        self.send(dst, n);
        for ((dev, want), before) in expect.iter().zip(before) {
            wait_until(Duration::from_secs(3), || self.received(dev) - before >= *want);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(self.received(dev) - before, *want, "frames to {dst:?} counted behind {dev}");
        }
    }

    /// The kernel's entries against the last applied plan.
    fn drift(&self) -> plan::Plan {
        let s = self.ns.enter(|| status::status(&self.pins)).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.drift_unknown.is_none(), "{:?}", s.drift_unknown);
        s.drift
    }

    fn link_ids(&self) -> Vec<(u32, u32)> {
        let link = self.pins.join("links").join("dmca");
        let info = deploy::pinned_link_info(&link).unwrap();
        vec![(info.id, info.prog_id)]
    }
}

#[test]
fn first_apply_loads_and_a_data_change_is_a_diff_of_the_changed_entries() {
    require_privileged!();
    let rig = Rig::new();
    let v1 = build(&spec("on_miss = drop", ROUTES));
    let report = rig.apply(&v1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::First, "{report}");
    assert!(rig.pins.join("manifest").exists());
    assert!(rig.drift().is_empty());
    rig.delivers([10, 0, 0, 2], 10, &[("dmcb", 10), ("dmcc", 0)]);
    rig.delivers([10, 0, 0, 3], 10, &[("dmcb", 0), ("dmcc", 10)]);
    let links = rig.link_ids();

    // The same build again: nothing to do.
    let again = rig.apply(&v1).unwrap();
    assert_eq!(again.kind, Kind::Unchanged, "{again}");
    assert!(again.plan.is_empty());

    // One route retargeted: one map operation, same programs and links.
    let v2 = build(&spec("on_miss = drop", "route 10.0.0.2 -> c\nroute 10.0.0.3 -> c"));
    let report = rig.apply(&v2).unwrap();
    assert_eq!(report.kind, Kind::Data, "{report}");
    assert_eq!(report.plan.len(), 1, "{}", report.plan);
    assert_eq!(rig.link_ids(), links, "a data change keeps the link and program");
    rig.delivers([10, 0, 0, 2], 10, &[("dmcb", 0), ("dmcc", 10)]);
    assert!(rig.drift().is_empty());

    // A route added and one removed.
    let v3 = build(&spec("on_miss = drop", "route 10.0.0.2 -> c\nroute 10.0.0.4 -> b"));
    let report = rig.apply(&v3).unwrap();
    assert_eq!(report.kind, Kind::Data);
    let t = report.plan.totals();
    assert_eq!((t.added, t.changed, t.removed), (2, 0, 2), "{}", report.plan);
    rig.delivers([10, 0, 0, 3], 10, &[("dmcb", 0), ("dmcc", 0)]);
    rig.delivers([10, 0, 0, 4], 10, &[("dmcb", 10), ("dmcc", 0)]);

    let detached = deploy::detach(&rig.pins).unwrap();
    assert_eq!(detached.links.len(), 1);
    assert!(!rig.pins.exists());
    rig.delivers([10, 0, 0, 4], 10, &[("dmcb", 0)]);
}

#[test]
fn a_code_change_swaps_the_programs_under_the_same_link_and_keeps_counters() {
    require_privileged!();
    let rig = Rig::new();
    rig.apply(&build(&spec("on_miss = drop", ROUTES))).unwrap();
    rig.delivers([10, 0, 0, 2], 7, &[("dmcb", 7)]);
    let before = rig.link_ids()[0];

    let v2 = build(&spec("on_miss = pass", ROUTES));
    let report = rig.apply(&v2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::Code, "{report}");
    let after = rig.link_ids()[0];
    assert_eq!(after.0, before.0, "the same link");
    assert_ne!(after.1, before.1, "a new program");
    assert!(!rig.pins.join(apply::NEXT).exists());
    assert!(rig.drift().is_empty());
    rig.delivers([10, 0, 0, 2], 5, &[("dmcb", 5)]);

    // Counters went over to the new maps, and the new program adds to them.
    let s = rig.ns.enter(|| status::status(&rig.pins)).unwrap();
    let b = s.devices.iter().find(|d| d.name == "b").unwrap();
    assert_eq!(b.count.unwrap().packets, 12, "{s}");
    let code = s.code_hash.clone();
    assert_ne!(code, v2.ir.code_hash(), "the manifest keeps the build's code hash");
}

/// The same spec compiled into another object (here by a clang told to use
/// another BPF instruction set; in real life, a newer devmapc whose generated
/// C changed) has the same code hash but another object digest: the next
/// apply loads the new programs instead of keeping the old ones.
#[test]
fn the_same_spec_in_another_object_is_a_code_upgrade() {
    require_privileged!();
    let rig = Rig::new();
    let text = spec("on_miss = drop", ROUTES);
    let v1 = build(&text);
    rig.apply(&v1).unwrap_or_else(|e| panic!("{e}"));
    let before = rig.link_ids()[0];

    let dir = tempfile::tempdir().unwrap();
    let clang = dir.path().join("clang");
    let real = devmapc::builder::find_clang().unwrap();
    std::fs::write(&clang, format!("#!/bin/sh\nexec {} \"$@\" -mcpu=v3\n", real.display())).unwrap();
    std::fs::set_permissions(&clang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = dir.path().join("fwd.devmap");
    std::fs::write(&path, &text).unwrap();
    let outputs = devmapc::Builder::new(&path)
        .out_dir(dir.path())
        .clang(&clang)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (obj, ir) = deploy::read_manifest_file(&outputs.manifest.unwrap()).unwrap();
    assert_eq!(ir.code_hash(), v1.ir.code_hash(), "one spec, one code hash");
    let digest = |p: &Path| devmapc::builder::object_digest(&std::fs::read(p).unwrap());
    assert_ne!(digest(&obj), digest(&v1.obj), "the wrapper changes the object");

    let report = rig.apply(&Build { obj, ir, _dir: dir }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::Code, "{report}");
    let after = rig.link_ids()[0];
    assert_eq!(after.0, before.0, "the same link");
    assert_ne!(after.1, before.1, "the new object's program");
    rig.delivers([10, 0, 0, 2], 3, &[("dmcb", 3)]);
}

#[test]
fn a_failed_apply_leaves_the_previous_configuration_serving() {
    require_privileged!();
    let rig = Rig::new();
    rig.apply(&build(&spec("on_miss = drop", ROUTES))).unwrap();
    let pinned = apply::Pinned::open(&rig.pins).unwrap();
    let v1 = build(&spec("on_miss = drop", ROUTES));
    let before = plan::read_state(&pinned, &v1.ir).unwrap();
    let links = rig.link_ids();
    let code = rig.ns.enter(|| status::status(&rig.pins)).unwrap().code_hash;

    // A device that does not exist: refused before anything changes, with
    // the device and its line named.
    let missing = spec("on_miss = drop", "route 10.0.0.2 -> c\nroute 10.0.0.9 -> d")
        .replace("device c {", "device d { ifname = \"dmcnope\" }\ndevice c {");
    let err = rig.apply(&build(&missing)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("device `d` (line 4)") && text.contains("dmcnope"), "{text}");

    // A code change whose load fails (a NUMA node this machine lacks).
    let bad_code = build(&spec("on_miss = drop, numa_node = 63", ROUTES));
    let err = rig.apply(&bad_code).unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(!rig.pins.join(apply::NEXT).exists(), "nothing staged is left");

    // A code change that also attaches to a device running another tool's
    // XDP program: refused before anything is loaded or swapped, naming
    // the device.
    let foreign = Rig::count_on(&rig.ns, &rig.counts, rig.ifindex("dmcc"));
    let busy = build(&spec("on_miss = pass", ROUTES).replace("on = [a]", "on = [a, c]"));
    let err = rig.apply(&busy).unwrap_err();
    assert!(matches!(err, DeployError::Busy(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("device `c` (line 4, dmcc)") && text.contains("Nothing was changed"), "{text}");
    // A dry run says so too (and `devmapc apply --dry-run` exits 1).
    let dry = rig
        .ns
        .enter(|| {
            let mut o = Options::new(&*rig.pins);
            o.dry_run = true;
            apply::apply(&busy.obj, &busy.ir, &o)
        })
        .unwrap();
    assert!(dry.would_fail.iter().any(|w| w.contains("device `c`")), "{dry}");
    assert!(dry.to_string().contains("the apply would fail"), "{dry}");
    drop(foreign);

    assert!(!rig.pins.join(apply::NEXT).exists());
    assert_eq!(plan::read_state(&pinned, &v1.ir).unwrap(), before);
    assert_eq!(rig.link_ids(), links);
    assert!(rig.drift().is_empty());
    let s = rig.ns.enter(|| status::status(&rig.pins)).unwrap();
    assert_eq!(s.code_hash, code, "the old code serves");
    rig.delivers([10, 0, 0, 2], 10, &[("dmcb", 10)]);
}

/// A first apply that fails leaves nothing behind, not even its directory;
/// pins devmapc did not make are never removed, by apply or by detach.
#[test]
fn a_failed_first_apply_leaves_nothing_and_foreign_pins_are_left_alone() {
    require_privileged!();
    let rig = Rig::new();
    let missing = spec("on_miss = drop", ROUTES).replace("\"dmcc\"", "\"dmcnope\"");
    let err = rig.apply(&build(&missing)).unwrap_err();
    assert!(err.to_string().contains("dmcnope"), "{err}");
    assert!(!rig.pins.exists(), "no empty pin directory is left");

    // Another tool's pin where devmapc is told to pin.
    std::fs::create_dir_all(rig.pins.join("maps")).unwrap();
    let precious = rig.pins.join("maps").join("precious");
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut map =
        libbpf_rs::MapHandle::create(libbpf_rs::MapType::Array, Some("precious"), 4, 4, 1, &opts).unwrap();
    map.pin(&precious).unwrap();
    let err = rig.apply(&build(&spec("on_miss = drop", ROUTES))).unwrap_err();
    assert!(matches!(err, DeployError::AlreadyPinned { .. }), "{err}");
    assert!(precious.exists(), "apply removed a pin it did not make");
    let err = deploy::detach(&rig.pins).unwrap_err();
    assert!(matches!(err, DeployError::NotDeployed { .. }), "{err}");
    assert!(err.to_string().contains("left alone"), "{err}");
    assert!(precious.exists(), "detach removed a pin it did not make");
}

#[test]
fn a_re_created_device_gets_its_entries_back_on_the_next_apply() {
    require_privileged!();
    let rig = Rig::new();
    let v1 = build(&spec("on_miss = drop", ROUTES));
    rig.apply(&v1).unwrap();
    // The kernel removes every entry of a device that goes away
    // (docs/kernel.md, Lifecycle).
    rig.ns.delete_link("dmcc").unwrap();
    let (c, peer) = rig.ns.veth("dmcc", "pdmcc").unwrap();
    let _count = Rig::count_on(&rig.ns, &rig.counts, peer.ifindex);
    let drift = rig.drift();
    assert!(!drift.is_empty(), "the kernel dropped dmcc's entries");
    let report = rig.apply(&v1).unwrap();
    assert_eq!(report.kind, Kind::Data, "{report}");
    assert!(rig.drift().is_empty());
    let s = rig.ns.enter(|| status::status(&rig.pins)).unwrap();
    assert_eq!(s.devices.iter().find(|d| d.name == "c").unwrap().ifindex, Some(c.ifindex));
    let before = bpf::rx_count(&bpf::map(&rig.counts, "counts").unwrap(), peer.ifindex).unwrap().0;
    rig.send([10, 0, 0, 3], 10);
    assert!(wait_until(Duration::from_secs(3), || {
        bpf::rx_count(&bpf::map(&rig.counts, "counts").unwrap(), peer.ifindex).unwrap().0 == before + 10
    }));
}

/// Frames to a route that never changes, in bursts, each waited for so
/// that no veth ring overflows: every frame not counted is one the apply
/// lost.
#[test]
fn traffic_to_unchanged_routes_loses_nothing_through_route_changes_and_code_upgrades() {
    require_privileged!();
    let rig = Arc::new(Rig::new());
    let drop = build(&spec("on_miss = drop", ROUTES));
    let pass = build(&spec("on_miss = pass", ROUTES));
    let moved = build(&spec("on_miss = drop", "route 10.0.0.2 -> b\nroute 10.0.0.3 -> b"));
    rig.apply(&drop).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (rig, stop, sent) = (rig.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let base = rig.received("dmcb");
            while !stop.load(Ordering::Relaxed) {
                rig.send([10, 0, 0, 2], 16);
                let total = sent.fetch_add(16, Ordering::Relaxed) + 16;
                wait_until(Duration::from_millis(200), || rig.received("dmcb") - base >= total);
            }
            base
        })
    };
    let mut kinds = Vec::new();
    for i in 0..100 {
        let b = if i % 2 == 0 { &moved } else { &drop };
        kinds.push(rig.apply(b).unwrap_or_else(|e| panic!("{e}")).kind);
    }
    for i in 0..10 {
        let b = if i % 2 == 0 { &pass } else { &drop };
        kinds.push(rig.apply(b).unwrap_or_else(|e| panic!("{e}")).kind);
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let base = sender.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(3), || rig.received("dmcb") - base >= sent);
    let received = rig.received("dmcb") - base;
    assert_eq!(kinds.iter().filter(|k| **k == Kind::Data).count(), 100);
    assert_eq!(kinds.iter().filter(|k| **k == Kind::Code).count(), 10);
    assert!(sent > 1000, "only {sent} frames sent");
    eprintln!("sent {sent}, received {received} through 100 route changes and 10 code upgrades");
    assert_eq!(received, sent, "frames lost to an unchanged route");
}

#[test]
fn a_full_table_swaps_a_route_in_place_and_unchanged_routes_lose_nothing() {
    require_privileged!();
    let rig = Arc::new(Rig::new());
    // max_entries = 2 and two routes: every key-stage map and the counters
    // are full, so a swap only fits if the key that goes leaves first.
    let full = |third: &str| {
        build(&spec("on_miss = drop, max_entries = 2", &format!("route 10.0.0.2 -> b\nroute {third} -> c")))
    };
    let (v1, v2) = (full("10.0.0.3"), full("10.0.0.4"));
    rig.apply(&v1).unwrap_or_else(|e| panic!("{e}"));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (rig, stop, sent) = (rig.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let base = rig.received("dmcb");
            while !stop.load(Ordering::Relaxed) {
                rig.send([10, 0, 0, 2], 16);
                let total = sent.fetch_add(16, Ordering::Relaxed) + 16;
                wait_until(Duration::from_millis(200), || rig.received("dmcb") - base >= total);
            }
            base
        })
    };
    let trusted = Options { trust_last_apply: true, ..Options::new(&*rig.pins) };
    let dry = Options { dry_run: true, ..Options::new(&*rig.pins) };
    let mut result = Ok(());
    for i in 0..20 {
        let b = if i % 2 == 0 { &v2 } else { &v1 };
        // Both planners: the read-back diff and the routes-only one.
        let opts = if i % 4 < 2 { &trusted } else { &dry };
        let report = if std::ptr::eq(opts, &dry) {
            let planned = rig.ns.enter(|| apply::apply(&b.obj, &b.ir, opts));
            if let Err(e) = planned {
                result = Err(format!("dry run {i}: {e}"));
                break;
            }
            rig.apply(b)
        } else {
            rig.ns.enter(|| apply::apply(&b.obj, &b.ir, opts))
        };
        match report {
            Ok(r) if r.kind == Kind::Data => {}
            Ok(r) => {
                result = Err(format!("apply {i}: {r}"));
                break;
            }
            Err(e) => {
                result = Err(format!("apply {i}: {e}"));
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let base = sender.join().unwrap();
    result.unwrap_or_else(|e| panic!("{e}"));
    let sent = sent.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(3), || rig.received("dmcb") - base >= sent);
    assert!(sent > 100, "only {sent} frames sent");
    assert_eq!(rig.received("dmcb") - base, sent, "frames lost to an unchanged route");

    // The last apply was v1; one more swap: the new route works, the old
    // one is gone, nothing drifted.
    let report = rig.apply(&v2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::Data, "{report}");
    rig.delivers([10, 0, 0, 4], 10, &[("dmcb", 0), ("dmcc", 10)]);
    rig.delivers([10, 0, 0, 3], 10, &[("dmcb", 0), ("dmcc", 0)]);
    rig.delivers([10, 0, 0, 2], 10, &[("dmcb", 10), ("dmcc", 0)]);
    assert!(rig.drift().is_empty());
}

/// The map pinned at `path`, opened read-write.
fn open_pinned(path: &Path) -> OwnedFd {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path; the fd is owned at once.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(fd >= 0, "open {}", path.display());
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The flags of a map, as the kernel reports them.
fn map_flags(fd: &OwnedFd) -> u32 {
    let mut info = libbpf_rs::libbpf_sys::bpf_map_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a zeroed bpf_map_info of `len` bytes.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_obj_get_info_by_fd(fd.as_raw_fd(), &mut info as *mut _ as *mut _, &mut len)
    };
    assert_eq!(rc, 0);
    info.map_flags
}

/// Flags of the map pinned at `path`, and whether a write to it works.
fn map_flags_and_write(path: &Path, key: &[u8], value: &[u8]) -> (u32, std::io::Result<()>) {
    let fd = open_pinned(path);
    let flags = map_flags(&fd);
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_update_elem(
            fd.as_raw_fd(),
            key.as_ptr().cast(),
            value.as_ptr().cast(),
            0,
        )
    };
    let write = if rc < 0 { Err(std::io::Error::from_raw_os_error(-rc)) } else { Ok(()) };
    (flags, write)
}

#[test]
fn read_only_freezes_the_key_map_after_filling_and_changes_reload() {
    require_privileged!();
    let rig = Rig::new();
    let v1 = build(&spec("on_miss = drop, access = read_only", ROUTES));
    rig.apply(&v1).unwrap_or_else(|e| panic!("{e}"));
    rig.delivers([10, 0, 0, 2], 3, &[("dmcb", 3)]);
    let map = rig.pins.join("maps").join(names::ROUTES);
    let ifindex = rig.ns.ifindex("dmcc").unwrap();
    let mut value = ifindex.to_ne_bytes().to_vec();
    value.extend((-1i32).to_ne_bytes());
    let (_, write) = map_flags_and_write(&map, &u32::from_be_bytes([10, 0, 0, 2]).to_ne_bytes(), &value);
    let write = rig.ns.enter(|| write);
    assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EPERM), "a frozen map refuses writes");
    // Even through an fd reopened by id (RDONLY itself belongs to the fd).
    let pinned = apply::Pinned::open(&rig.pins).unwrap();
    let fd = pinned.map_fd(names::ROUTES).unwrap();
    let rc = rig.ns.enter(|| unsafe {
        libbpf_rs::libbpf_sys::bpf_map_delete_elem(fd.as_raw_fd(), [10u8, 0, 0, 2].as_ptr().cast())
    });
    assert_eq!(rc, -libc::EPERM);

    // A route change cannot be written in place: new maps, swapped in.
    let v2 = build(&spec("on_miss = drop, access = read_only", "route 10.0.0.2 -> c\nroute 10.0.0.3 -> c"));
    let report = rig.apply(&v2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::Code, "{report}");
    rig.delivers([10, 0, 0, 2], 3, &[("dmcb", 0), ("dmcc", 3)]);
    assert!(rig.drift().is_empty());
}

#[test]
fn write_only_key_map_is_never_read_back_and_changes_reload() {
    require_privileged!();
    let rig = Rig::new();
    let v1 = build(&spec("on_miss = drop, access = write_only", ROUTES));
    rig.apply(&v1).unwrap_or_else(|e| panic!("{e}"));
    rig.delivers([10, 0, 0, 3], 3, &[("dmcc", 3)]);
    let s = rig.ns.enter(|| status::status(&rig.pins)).unwrap();
    assert!(s.drift_unknown.as_deref().is_some_and(|w| w.contains("write_only")), "{s}");
    let v2 = build(&spec("on_miss = drop, access = write_only", "route 10.0.0.3 -> b"));
    let report = rig.apply(&v2).unwrap();
    assert_eq!(report.kind, Kind::Code, "{report}");
    rig.delivers([10, 0, 0, 3], 3, &[("dmcb", 3), ("dmcc", 0)]);
}

#[test]
fn numa_node_is_set_on_every_map_and_a_missing_node_is_refused() {
    require_privileged!();
    let rig = Rig::new();
    rig.apply(&build(&spec("on_miss = drop, numa_node = 0", ROUTES))).unwrap_or_else(|e| panic!("{e}"));
    // Every map of the data path (the table, slots, default, the egress
    // program's arguments) is placed on the node.
    let mut seen = 0;
    for entry in std::fs::read_dir(rig.pins.join("maps")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        // Per-CPU counters live on every CPU's node (the kernel refuses the
        // flag for them: kernel_facts.rs); `fwd_bss` is libbpf's, for the
        // egress twins' test-only global.
        if name.contains("counters") || !name.starts_with("devmapc_") {
            continue;
        }
        let flags = map_flags(&open_pinned(&path));
        assert_ne!(flags & libbpf_rs::libbpf_sys::BPF_F_NUMA_NODE, 0, "{}: flags {flags:#x}", path.display());
        seen += 1;
    }
    assert_eq!(seen, 4, "routes, slots, default, the arguments of stamp");
    rig.delivers([10, 0, 0, 2], 3, &[("dmcb", 3)]);
    deploy::detach(&rig.pins).unwrap();

    let err = rig.apply(&build(&spec("on_miss = drop, numa_node = 63", ROUTES))).unwrap_err();
    assert!(err.to_string().contains("no NUMA node 63"), "{err}");
    assert!(!rig.pins.join("manifest").exists(), "nothing committed");
    assert!(!rig.pins.join("maps").exists(), "nothing left pinned");
}

#[test]
fn a_dry_run_reports_the_plan_and_changes_nothing() {
    require_privileged!();
    let rig = Rig::new();
    let v1 = build(&spec("on_miss = drop", ROUTES));
    let opts = Options { dry_run: true, ..Options::new(&*rig.pins) };
    let report = rig.ns.enter(|| apply::apply(&v1.obj, &v1.ir, &opts)).unwrap();
    assert_eq!(report.kind, Kind::First);
    assert!(report.dry_run && !report.plan.is_empty());
    assert!(!rig.pins.join("manifest").exists());
    rig.apply(&v1).unwrap();
    let v2 = build(&spec("on_miss = drop", "route 10.0.0.2 -> c\nroute 10.0.0.3 -> c"));
    let report = rig.ns.enter(|| apply::apply(&v2.obj, &v2.ir, &opts)).unwrap();
    assert_eq!(report.kind, Kind::Data);
    assert_eq!(report.plan.len(), 1);
    assert!(report.to_string().contains("route 10.0.0.2 -> c"), "{report}");
    assert!(rig.drift().is_empty(), "still the first spec");
    rig.delivers([10, 0, 0, 2], 3, &[("dmcb", 3)]);
}

#[test]
fn concurrent_applies_are_serialised_by_the_pin_directory_lock() {
    require_privileged!();
    let rig = Arc::new(Rig::new());
    let specs: Vec<Arc<Build>> = [
        spec("on_miss = drop", ROUTES),
        spec("on_miss = drop", "route 10.0.0.2 -> c\nroute 10.0.0.3 -> c"),
        spec("on_miss = pass", ROUTES),
        spec("on_miss = pass", "route 10.0.0.2 -> c"),
    ]
    .iter()
    .map(|s| Arc::new(build(s)))
    .collect();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (rig, b) = (rig.clone(), specs[i % specs.len()].clone());
            std::thread::spawn(move || rig.apply(&b).map(|r| r.kind).map_err(|e| e.to_string()))
        })
        .collect();
    let kinds: Vec<Kind> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == Kind::First).count(), 1, "{kinds:?}");
    // Whatever the order, the last apply's spec serves, completely.
    assert!(rig.drift().is_empty());
    assert!(!rig.pins.join(apply::NEXT).exists());
}

/// The kernel's test_xdp_redirect_multi scenario through a deployment: a
/// route to a group sends one copy to every member but the device the
/// frame came in on, each through its own egress program.
#[test]
fn a_group_route_reaches_every_member_but_the_ingress_device() {
    require_privileged!();
    let rig = Rig::new();
    let text = spec("on_miss = drop", "group all { a, b, c }\nroute 10.0.0.9 -> all")
        .replace("ingress { on = [a]", "ingress { on = [a, b, c]");
    let report = rig.apply(&build(&text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.links.len(), 3, "{report}");
    rig.delivers([10, 0, 0, 9], 5, &[("dmca", 0), ("dmcb", 5), ("dmcc", 5)]);
    // b's egress program stamps its own MAC as the source.
    let counts = bpf::map(&rig.counts, "counts").unwrap();
    let (_, last_src) = bpf::rx_count(&counts, rig.peer("dmcb").ifindex).unwrap();
    assert_eq!(last_src, Some(rig.ns.mac("dmcb").unwrap()));
    // From b: a and c get a copy, b does not.
    let before: Vec<u64> = ["dmca", "dmcb", "dmcc"].iter().map(|d| rig.received(d)).collect();
    let frame = to([10, 0, 0, 9]);
    let from_b = rig.peer("dmcb").ifindex;
    rig.ns.enter(|| send_frames(from_b, &frame, 5)).unwrap();
    assert!(wait_until(Duration::from_secs(3), || rig.received("dmca") - before[0] == 5
        && rig.received("dmcc") - before[2] == 5));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(rig.received("dmcb"), before[1], "no copy back to the ingress device");
}

/// Every bundled example, applied through `apply` to a veth per device
/// (targets made ready with `make_ready`): committed with no drift, a
/// second apply has nothing to do, and detach leaves no program attached.
/// (`devmapc test examples/*.devmap` sends each example's own packets.)
#[test]
fn every_example_applies_reapplies_unchanged_and_detaches() {
    require_privileged!();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "devmap"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 8);
    for path in specs {
        let b = build(&std::fs::read_to_string(&path).unwrap());
        let ns = Netns::new().unwrap();
        let pins = PinDir::new();
        let mut names = Vec::new();
        for (i, device) in b.ir.data.devices.iter().enumerate() {
            let devmapc::model::Binding::Ifname(name) = &device.binding else {
                panic!("{}: bound by ifindex", path.display())
            };
            ns.veth(name, &format!("dmcp{i}")).unwrap();
            names.push(name.clone());
        }
        let opts = Options { make_ready: true, ..Options::new(&*pins) };
        let name = path.display();
        let report =
            ns.enter(|| apply::apply(&b.obj, &b.ir, &opts)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.kind, Kind::First, "{name}: {report}");
        let s = ns.enter(|| status::status(&pins)).unwrap();
        assert_eq!(s.routes.len(), b.ir.data.routes.len(), "{name}");
        assert!(s.drift.is_empty(), "{name}: {s}");
        let ingress = b.ir.data.devices.iter().filter(|d| d.ingress).count();
        assert_eq!(s.links.len(), ingress, "{name}: {s}");
        let again = ns.enter(|| apply::apply(&b.obj, &b.ir, &opts)).unwrap();
        assert_eq!(again.kind, Kind::Unchanged, "{name}: {again}");
        deploy::detach(&pins).unwrap();
        for dev in &names {
            let link = ns.enter(|| devmapc_runtime::netdev::by_name(dev)).unwrap();
            assert_eq!(link.xdp_prog_id(), None, "{name}: {dev} still has a program");
        }
    }
}

/// `trust_last_apply`: after a finished apply with the same devices, a
/// route change is planned from the routes alone and nothing is read back;
/// drift elsewhere then stays until an apply that reads back. An apply
/// left unfinished (the `applying` mark) is never trusted.
#[test]
fn trusting_the_last_apply_plans_the_changed_routes_only() {
    require_privileged!();
    let rig = Rig::new();
    let trusted = Options { trust_last_apply: true, ..Options::new(&*rig.pins) };
    let apply_trusted = |b: &Build| rig.ns.enter(|| apply::apply(&b.obj, &b.ir, &trusted)).unwrap();
    let v1 = build(&spec("on_miss = drop", ROUTES));
    rig.apply(&v1).unwrap();
    let v2 = build(&spec("on_miss = drop", "route 10.0.0.2 -> c\nroute 10.0.0.3 -> c"));
    let report = apply_trusted(&v2);
    assert!(!report.read_back, "{report}");
    assert_eq!(report.plan.len(), 1, "{}", report.plan);
    rig.delivers([10, 0, 0, 2], 4, &[("dmcb", 0), ("dmcc", 4)]);
    assert!(rig.drift().is_empty());

    // An entry removed behind devmapc's back (10.0.0.3) is not seen by a
    // trusted apply that changes another route...
    let pinned = apply::Pinned::open(&rig.pins).unwrap();
    let routes = pinned.map_fd(names::ROUTES).unwrap();
    // Direct keys are stored mixed (docs/build.md).
    let stored = devmapc::ir::fmix32(u32::from_ne_bytes([10, 0, 0, 3])).to_ne_bytes();
    let rc = rig.ns.enter(|| unsafe {
        libbpf_rs::libbpf_sys::bpf_map_delete_elem(routes.as_raw_fd(), stored.as_ptr().cast())
    });
    assert_eq!(rc, 0);
    let v3 = build(&spec("on_miss = drop", "route 10.0.0.2 -> b\nroute 10.0.0.3 -> c"));
    let report = apply_trusted(&v3);
    assert!(!report.read_back && report.plan.len() == 1, "{report}");
    assert_eq!(rig.drift().len(), 1, "the entry is still missing");
    // ...but by one that reads back.
    let report = rig.apply(&v3).unwrap();
    assert!(report.read_back);
    assert!(rig.drift().is_empty());
    rig.delivers([10, 0, 0, 3], 4, &[("dmcc", 4)]);

    // An unfinished apply is never trusted.
    std::fs::create_dir(rig.pins.join(apply::APPLYING)).unwrap();
    let report = apply_trusted(&v2);
    assert!(report.read_back, "{report}");
    assert!(!rig.pins.join(apply::APPLYING).exists());
    assert!(rig.drift().is_empty());
}

/// `--make-ready` turns GRO on for veth peers it can reach; a target whose
/// peer lives in another namespace stays a reason (saying where to fix
/// it) instead of failing the apply with an error about the option.
#[test]
fn make_ready_leaves_a_peer_in_another_namespace_as_a_reason() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let far = Netns::new().unwrap();
    let counts = bpf::load(objects::COUNT).unwrap();
    let (_, pa) = ns.veth("dmca", "pdmca").unwrap();
    let _count = Rig::count_on(&ns, &counts, pa.ifindex);
    ns.veth_to("dmcb", &far, "pdmcb").unwrap();
    let b = build(
        "table { key = ipv4.dst }
device a { ifname = \"dmca\" }
device b { ifname = \"dmcb\" }
ingress { on = [a], mode = native }
route 10.0.0.2 -> b
",
    );
    let pins = PinDir::new();
    let opts = Options { make_ready: true, ..Options::new(&*pins) };
    let err = ns.enter(|| apply::apply(&b.obj, &b.ir, &opts)).unwrap_err();
    assert!(matches!(err, DeployError::NotReady(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("dmcb"), "{text}");
    assert!(text.contains("another network namespace"), "says where the peer is: {text}");
    assert!(!pins.exists(), "nothing applied");
}
