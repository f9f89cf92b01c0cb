//! Deploying against the real kernel: load, fill, pin, attach through BPF
//! links in generic and native mode, forward live and real frames, keep a
//! deployment alive with nothing of the process left, swap the program of
//! a link in place, take everything down again, and refuse with clear
//! messages (no bpffs, verifier rejection, missing capabilities).
//!
//! Every device lives in a namespace the test creates; pins live under
//! `/sys/fs/bpf/devmapc-test-<pid>-<n>`, removed when the test ends, also
//! when it fails. Delivery is counted by the test kit's `count` program on
//! the far end of each target's veth pair (a veth takes redirected frames
//! only when its peer has an XDP program: docs/kernel.md).

use devmapc::ir::{names, Ir};
use devmapc::model::XdpMode;
use devmapc_runtime::deploy::{self, DeployError, Loaded};
use devmapc_runtime::Device;
use devmapc_testkit::bpf;
use devmapc_testkit::netns::{send_frames, Iface, Netns};
use devmapc_testkit::packet::Frame;
use devmapc_testkit::pins::PinDir;
use devmapc_testkit::{objects, require_privileged, wait_until};
use libbpf_rs::{Link, MapCore, Object};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Three devices; `b` rewrites the source MAC to its own on the way out.
const SPEC: &str = "
table { key = ipv4.dst, on_miss = drop }
device a { ifname = \"dmca\" }
device b { ifname = \"dmcb\", egress = stamp() }
device c { ifname = \"dmcc\" }
egress stamp() {
    eth.src = egress.mac
}
ingress { on = [a], mode = auto }
route 10.0.0.2 -> b
route 10.0.0.3 -> c
";

/// The same devices; other code (`on_miss`) and 10.0.0.2 goes to `c`.
const SPEC_V2: &str = "
table { key = ipv4.dst, on_miss = pass }
device a { ifname = \"dmca\" }
device b { ifname = \"dmcb\", egress = stamp() }
device c { ifname = \"dmcc\" }
egress stamp() {
    eth.src = egress.mac
}
ingress { on = [a], mode = auto }
route 10.0.0.2 -> c
route 10.0.0.3 -> c
";

const LIVE_FRAMES: u32 = 10_000;
const REAL_FRAMES: u64 = 100;

fn to(dst: [u8; 4]) -> Vec<u8> {
    Frame::new().ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::from(dst)).udp(1000, 53).build()
}

/// Builds `spec` into `dir`; the object and the plan read back from the
/// manifest, as the runtime reads it.
fn build(spec: &str, dir: &Path) -> (PathBuf, Ir) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("fwd.devmap");
    std::fs::write(&path, spec).unwrap();
    let outputs = devmapc::Builder::new(&path).out_dir(dir).build().unwrap();
    deploy::read_manifest_file(&outputs.manifest.unwrap()).unwrap()
}

// --------------------------------------------------------------------- rig

/// A namespace with a veth pair per device of `SPEC` (`dmca`/`pdmca`, ...),
/// the test kit's counter on every far end, and the spec built.
struct Rig {
    ns: Netns,
    ifaces: Vec<Iface>,
    peers: Vec<Iface>,
    devices: Vec<Device>,
    obj: PathBuf,
    ir: Ir,
    counts: Object,
    _counting: Vec<Link>,
    build_dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let build_dir = tempfile::tempdir().unwrap();
        let (obj, ir) = build(SPEC, build_dir.path());
        let ns = Netns::new().unwrap();
        let counts = bpf::load(objects::COUNT).unwrap();
        let (mut ifaces, mut peers, mut devices, mut counting) = (vec![], vec![], vec![], vec![]);
        for name in ["dmca", "dmcb", "dmcc"] {
            let (iface, peer) = ns.veth(name, &format!("p{name}")).unwrap();
            let counter = bpf::prog(&counts, "count").unwrap();
            counting.push(ns.enter(|| counter.attach_xdp(peer.ifindex as i32)).unwrap());
            devices.push(Device { ifindex: iface.ifindex, mac: iface.mac });
            ifaces.push(iface);
            peers.push(peer);
        }
        Rig { ns, ifaces, peers, devices, obj, ir, counts, _counting: counting, build_dir }
    }

    fn index(&self, dev: &str) -> usize {
        self.ifaces.iter().position(|i| i.name == dev).unwrap()
    }

    /// Loads and fills the spec built in `dir` (or the rig's own).
    fn load(&self, obj: &Path, ir: &Ir) -> Loaded {
        let loaded = deploy::load(obj, ir).unwrap_or_else(|e| panic!("{e}"));
        self.ns.enter(|| loaded.fill(&self.devices)).unwrap_or_else(|e| panic!("{e}"));
        loaded
    }

    /// Frames counted on the far end of `dev`, and the last one's source MAC.
    fn received(&self, dev: &str) -> (u64, Option<[u8; 6]>) {
        let counts = bpf::map(&self.counts, "counts").unwrap();
        bpf::rx_count(&counts, self.peers[self.index(dev)].ifindex).unwrap()
    }

    /// Waits until `dev`'s far end has counted `n` frames, then a little
    /// longer to see that no more arrive.
    fn expect(&self, dev: &str, n: u64) {
        wait_until(Duration::from_secs(3), || self.received(dev).0 >= n);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(self.received(dev).0, n, "frames counted behind {dev}");
    }

    /// Sends `n` real frames into the far end of `dev` (an AF_PACKET
    /// socket): they arrive on `dev`, where the ingress program is attached.
    fn send(&self, dev: &str, frame: &[u8], n: u64) {
        let ifindex = self.peers[self.index(dev)].ifindex;
        self.ns.enter(|| send_frames(ifindex, frame, n)).unwrap();
    }

    /// `(mode, prog id)` of the XDP program on `dev` per `ip -j link`
    /// (mode 1: native, 2: generic), or None.
    fn xdp(&self, dev: &str) -> Option<(u64, u64)> {
        let out = self.ns.ip(&["-j", "link", "show", "dev", dev]).unwrap();
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let xdp = &json[0]["xdp"];
        Some((xdp["mode"].as_u64()?, xdp["prog"]["id"].as_u64()?))
    }
}

fn prog_id(fd: impl AsFd) -> u64 {
    bpf::prog_id(&fd).unwrap() as u64
}

/// `bpftool -j <args>`: its JSON, or None when it fails (no such object).
fn bpftool(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("bpftool").arg("-j").args(args).output().unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn egress_prog(loaded: &Loaded) -> libbpf_rs::Program<'_> {
    loaded.object().progs().find(|p| p.name() == "devmapc_egress_stamp").unwrap()
}

// ------------------------------------------------------------------- bpffs

#[test]
fn a_pin_dir_not_on_a_bpffs_is_refused_with_what_to_do() {
    require_privileged!();
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let dir = scratch.path().join("devmapc/fwd");
    let err = deploy::pin_dir_ready(&dir).unwrap_err();
    let message = err.to_string();
    println!("{message}");
    assert!(matches!(err, DeployError::NotBpffs { .. }), "{err:?}");
    for part in ["not on a bpffs", "--pin-dir", "mount -t bpf"] {
        assert!(message.contains(part), "{part:?} in: {message}");
    }
    // Not the `ip netns exec` story: that is for a sysfs where the host's
    // bpffs belongs (tests below).
    assert!(!message.contains("ip netns exec"), "{message}");
    assert!(message.contains(&scratch.path().display().to_string()), "names the parent checked: {message}");

    // Pinning a loaded object there fails the same way and leaves nothing.
    let build_dir = tempfile::tempdir().unwrap();
    let (obj, ir) = build(SPEC, build_dir.path());
    let loaded = deploy::load(&obj, &ir).unwrap();
    assert!(matches!(loaded.pin(&dir), Err(DeployError::NotBpffs { .. })));
    assert!(!scratch.path().join("devmapc").exists());

    // Below a bpffs, a directory that does not exist yet is fine.
    let pins = PinDir::new();
    deploy::pin_dir_ready(&pins.join("not/yet")).unwrap();
    let err = deploy::pin_dir_ready(Path::new("/proc/self")).unwrap_err();
    assert!(err.to_string().contains("procfs"), "{err}");
}

/// Run by the test below in a child process (`ip netns exec` / `nsenter`):
/// prints the verdict of `prepare_pin_dir` (what `apply` calls: it mounts
/// the host's bpffs when none is, but only in the host's mount namespace)
/// on the directory in the environment. Does nothing in a normal test run.
#[test]
fn child_checks_pin_dir() {
    require_privileged!();
    let Some(dir) = std::env::var_os("DEVMAPC_TEST_CHILD_PIN_DIR") else {
        return;
    };
    match deploy::prepare_pin_dir(Path::new(&dir)) {
        Ok(_) => println!("PIN-DIR-READY"),
        Err(e) => println!("PIN-DIR-REFUSED: {e}"),
    }
}

#[test]
fn under_ip_netns_exec_pins_are_refused_and_under_nsenter_they_are_not() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    let pins = PinDir::new();
    let me = std::env::current_exe().unwrap();
    let child = |wrapper: &[&str]| -> String {
        let out = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(&me)
            .args(["--exact", "child_checks_pin_dir", "--nocapture", "--test-threads=1"])
            .env("DEVMAPC_TEST_CHILD_PIN_DIR", pins.join("fwd"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let netns_exec = child(&["ip", "netns", "exec", ns.name()]);
    assert!(netns_exec.contains("PIN-DIR-REFUSED"), "{netns_exec}");
    assert!(netns_exec.contains("sysfs"), "/sys/fs/bpf is sysfs there: {netns_exec}");
    assert!(netns_exec.contains("nsenter --net=/run/netns/NAME"), "{netns_exec}");
    // From a shell started by `ip netns exec` (the shell shares the
    // command's mount namespace, its own parent does not): refused too, and
    // no bpffs is mounted in that short-lived namespace.
    let netns_shell = child(&[
        "ip",
        "netns",
        "exec",
        ns.name(),
        "sh",
        "-c",
        "\"$0\" \"$@\"; stat -f -c 'FS-%T' /sys/fs/bpf",
    ]);
    assert!(netns_shell.contains("PIN-DIR-REFUSED"), "{netns_shell}");
    assert!(netns_shell.contains("FS-sysfs"), "{netns_shell}");
    let net = format!("--net={}", ns.path().display());
    let nsenter = child(&["nsenter", &net]);
    assert!(nsenter.contains("PIN-DIR-READY"), "{nsenter}");
}

/// A mount that is taken off again when the test ends, also on failure.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // Several stacked mounts (the bug the test guards against): all go.
        while unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {}
    }
}

/// How many mounts sit exactly at `path` (/proc/self/mountinfo, field 5).
fn mounts_at(path: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
        .count()
}

/// Where no bpffs is mounted at all (a host without systemd), a command
/// that pins mounts one, once, even when several race for it (a second
/// mount on top would hide the first one's pins); it does so only where
/// the mount outlives the command, and a dry run only says it would. Run
/// on a scratch mount point standing in for /sys/fs/bpf, so the host's
/// bpffs is never touched.
#[test]
fn a_missing_host_bpffs_is_mounted_once_and_only_where_it_lasts() {
    require_privileged!();
    use devmapc_runtime::bpffs::{prepare_pin_dir_at, BPF_FS_MAGIC};
    let scratch = tempfile::tempdir().unwrap();
    let point = scratch.path().join("bpf");
    std::fs::create_dir(&point).unwrap();
    let _unmount = Unmount(point.clone());
    let dir = point.join("devmapc/fwd");
    let is_bpffs = || {
        let c = std::ffi::CString::new(point.to_str().unwrap()).unwrap();
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
        st.f_type as i64 == BPF_FS_MAGIC
    };

    // In a mount namespace that dies with the command: refused, untouched.
    let err = prepare_pin_dir_at(&dir, &point, false, true).unwrap_err();
    assert!(matches!(err, DeployError::NotBpffs { .. }), "{err:?}");
    assert!(err.to_string().contains("nsenter --net="), "{err}");
    // A dry run says it would mount, and does not.
    assert_eq!(prepare_pin_dir_at(&dir, &point, true, false).unwrap(), Some(point.clone()));
    assert!(!is_bpffs());
    assert_eq!(mounts_at(&point), 0);
    // A pin directory elsewhere on the same file system is never a reason
    // to mount anything.
    let elsewhere = scratch.path().join("pins/fwd");
    assert!(prepare_pin_dir_at(&elsewhere, &point, true, true).is_err());

    // Eight racing callers: one mount.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..8).map(|_| s.spawn(|| prepare_pin_dir_at(&dir, &point, true, true))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert!(is_bpffs());
    assert_eq!(mounts_at(&point), 1, "bpffs mounts must never stack");
    // Once mounted there is nothing to do, and pins can be made.
    assert_eq!(prepare_pin_dir_at(&dir, &point, true, true).unwrap(), None);
    std::fs::create_dir_all(&dir).unwrap();
    deploy::pin_dir_ready(&dir).unwrap();
}

// ------------------------------------------------- load, fill, attach, send

/// Loads, fills and attaches the ingress program to `dmca` in `mode`, then
/// sends live frames through the program and real frames through the
/// attachment; counts what arrives behind `dmcb` (with the egress
/// program's MAC) and that misses are dropped.
fn forward(mode: XdpMode, expect_mode: u64) {
    let rig = Rig::new();
    let loaded = rig.load(&rig.obj, &rig.ir);
    let a = rig.ifaces[0].ifindex;
    let attachment = rig.ns.enter(|| loaded.attach_ingress(a, mode)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(attachment.warning, None);
    let ingress_id = prog_id(loaded.ingress());
    assert_eq!(rig.xdp("dmca"), Some((expect_mode, ingress_id)), "ip -j link shows the program in its mode");
    let info = attachment.info().unwrap();
    assert_eq!((info.prog_id as u64, info.ifindex), (ingress_id, a));

    // Live frames through the ingress program, "arriving" on dmca.
    let run = rig
        .ns
        .enter(|| bpf::test_run_live(&loaded.ingress(), &to([10, 0, 0, 2]), a, LIVE_FRAMES, 0))
        .unwrap();
    rig.expect("dmcb", LIVE_FRAMES as u64);
    assert_eq!(rig.received("dmcb").1, Some(rig.ifaces[1].mac), "the egress program stamped dmcb's MAC");
    println!(
        "{mode:?}: {} live frames sent, {} received behind dmcb ({} ns/frame)",
        run.frames,
        rig.received("dmcb").0,
        run.duration_ns
    );

    // Real frames, through the attachment.
    rig.send("dmca", &to([10, 0, 0, 3]), REAL_FRAMES);
    rig.expect("dmcc", REAL_FRAMES);
    rig.send("dmca", &to([10, 0, 0, 9]), REAL_FRAMES);
    let counters = bpf::map(loaded.object(), names::COUNTERS).unwrap();
    let misses = || -> u64 {
        let per_cpu = counters.lookup_percpu(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY);
        per_cpu.unwrap().unwrap().iter().map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap())).sum()
    };
    wait_until(Duration::from_secs(3), || misses() >= REAL_FRAMES);
    let misses = misses();
    assert_eq!(misses, REAL_FRAMES, "unrouted frames counted as misses (and dropped)");
    rig.expect("dmcb", LIVE_FRAMES as u64);
    rig.expect("dmcc", REAL_FRAMES);
    println!(
        "{mode:?}: {REAL_FRAMES} real frames sent to dmcc, {} received; \
         {REAL_FRAMES} unrouted, {misses} counted as misses",
        rig.received("dmcc").0
    );

    drop(attachment);
    assert_eq!(rig.xdp("dmca"), None, "dropping an unpinned link detaches");
}

#[test]
fn loads_fills_attaches_and_forwards_in_generic_mode() {
    require_privileged!();
    forward(XdpMode::Generic, 2);
}

#[test]
fn loads_fills_attaches_and_forwards_in_native_mode() {
    require_privileged!();
    forward(XdpMode::Native, 1);
}

#[test]
fn auto_mode_falls_back_to_generic_with_a_warning() {
    require_privileged!();
    let rig = Rig::new();
    let loaded = rig.load(&rig.obj, &rig.ir);
    // A veth does native XDP: auto takes it, without a warning.
    let veth = rig.ns.enter(|| loaded.attach_ingress(rig.ifaces[0].ifindex, XdpMode::Auto)).unwrap();
    assert_eq!((veth.mode, veth.warning.as_deref()), (XdpMode::Native, None));
    // Loopback has no native XDP: native is refused, auto falls back.
    let lo = rig.ns.ip(&["-j", "link", "show", "dev", "lo"]).unwrap();
    let lo = serde_json::from_str::<serde_json::Value>(&lo).unwrap()[0]["ifindex"].as_u64().unwrap() as u32;
    let err = rig.ns.enter(|| loaded.attach_ingress(lo, XdpMode::Native)).unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("no native XDP"), "{err}");
    let auto = rig.ns.enter(|| loaded.attach_ingress(lo, XdpMode::Auto)).unwrap();
    println!("{}", auto.warning.as_deref().unwrap_or(""));
    assert_eq!(auto.mode, XdpMode::Generic);
    assert!(auto.warning.as_deref().is_some_and(|w| w.contains("generic mode")), "{auto:?}");
    assert_eq!(rig.xdp("lo"), Some((2, prog_id(loaded.ingress()))));
    // A second program on a device that has one: a clear refusal.
    let err = rig.ns.enter(|| loaded.attach_ingress(rig.ifaces[0].ifindex, XdpMode::Generic)).unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("already has an XDP program"), "{err}");
    // Wrong number of devices for the plan: an error, not a panic.
    let err = rig.ns.enter(|| loaded.fill(&rig.devices[..2])).unwrap_err();
    assert!(err.to_string().contains("the plan has 3 devices (a, b, c), 2 were resolved"), "{err}");
}

// ------------------------------------------------ pins, persistence, detach

#[test]
fn a_pinned_deployment_outlives_the_process_handles_and_detach_removes_it_all() {
    require_privileged!();
    let rig = Rig::new();
    let pins = PinDir::new();
    let loaded = rig.load(&rig.obj, &rig.ir);
    loaded.pin(&pins).unwrap_or_else(|e| panic!("{e}"));
    // `ingress { on = [a], mode = auto }`: a link on dmca, native on a veth.
    let attachments =
        rig.ns.enter(|| loaded.attach_planned(&rig.devices, &pins)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(attachments.len(), 1);
    let (label, attachment) = &attachments[0];
    assert_eq!((label.as_str(), attachment.mode, &attachment.warning), ("dmca", XdpMode::Native, &None));
    let link_pin = pins.join("links/dmca");
    assert!(
        matches!(loaded.pin(&pins), Err(DeployError::AlreadyPinned { .. })),
        "a second deployment in the same place"
    );

    let ingress_id = prog_id(loaded.ingress());
    let mut prog_ids: Vec<u64> = loaded.object().progs().map(|p| prog_id(p.as_fd())).collect();
    let mut map_ids = Vec::new();
    let mut pinned = 0;
    for sub in ["maps", "progs"] {
        for entry in std::fs::read_dir(pins.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let kind = if sub == "maps" { "map" } else { "prog" };
            let shown = bpftool(&[kind, "show", "pinned", path.to_str().unwrap()])
                .unwrap_or_else(|| panic!("bpftool finds {}", path.display()));
            let id = shown["id"].as_u64().unwrap();
            if sub == "maps" {
                map_ids.push(id)
            } else {
                assert!(prog_ids.contains(&id))
            }
            pinned += 1;
        }
    }
    let manifest_map = bpftool(&["map", "show", "pinned", pins.join("manifest").to_str().unwrap()]).unwrap();
    map_ids.push(manifest_map["id"].as_u64().unwrap());
    assert_eq!(pinned, loaded.object().maps().count() + loaded.object().progs().count());
    let manifest = loaded.manifest().to_string();
    assert_eq!(
        manifest,
        std::fs::read_to_string(rig.build_dir.path().join("fwd.manifest.json")).unwrap(),
        "the build's manifest, verbatim"
    );

    // Nothing of the deployment is held by this process any more.
    drop(attachments);
    drop(loaded);
    assert_eq!(rig.xdp("dmca"), Some((1, ingress_id)), "the pinned link keeps the program attached");
    let link = bpftool(&["link", "show", "pinned", link_pin.to_str().unwrap()])
        .expect("another process finds the link");
    assert_eq!((link["prog_id"].as_u64(), link["type"].as_str()), (Some(ingress_id), Some("xdp")));
    assert_eq!(deploy::read_manifest(&pins).unwrap(), manifest, "the manifest is read back from the pins");
    rig.send("dmca", &to([10, 0, 0, 2]), REAL_FRAMES);
    rig.expect("dmcb", REAL_FRAMES);
    assert_eq!(rig.received("dmcb").1, Some(rig.ifaces[1].mac));
    println!("pinned only: {REAL_FRAMES} real frames sent, {} received behind dmcb", rig.received("dmcb").0);

    let detached = deploy::detach(&pins).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(detached.links.len(), 1);
    assert_eq!((detached.links[0].0.as_str(), detached.links[0].1.prog_id as u64), ("dmca", ingress_id));
    assert_eq!(detached.pins, pinned + 2, "maps, programs, the link and the manifest");
    assert_eq!(rig.xdp("dmca"), None, "detached");
    assert!(!pins.exists(), "the pin directory is gone");
    prog_ids.sort();
    map_ids.sort();
    let gone = |kind: &str, ids: &[u64]| {
        ids.iter().all(|id| bpftool(&[kind, "show", "id", &id.to_string()]).is_none())
    };
    assert!(wait_until(Duration::from_secs(10), || gone("prog", &prog_ids)), "programs {prog_ids:?} freed");
    assert!(wait_until(Duration::from_secs(10), || gone("map", &map_ids)), "maps {map_ids:?} freed");
    println!("freed: programs {prog_ids:?}, maps {map_ids:?}");

    let err = deploy::detach(&pins).unwrap_err();
    assert!(matches!(err, DeployError::NotDeployed { .. }), "{err}");
    rig.send("dmca", &to([10, 0, 0, 2]), REAL_FRAMES);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rig.received("dmcb").0, REAL_FRAMES, "nothing forwards any more");
}

#[test]
fn swap_replaces_the_attached_program_without_detaching() {
    require_privileged!();
    let rig = Rig::new();
    let pins = PinDir::new();
    let v1 = rig.load(&rig.obj, &rig.ir);
    v1.pin(&pins).unwrap();
    let attachment = rig.ns.enter(|| v1.attach_ingress(rig.ifaces[0].ifindex, XdpMode::Native)).unwrap();
    let link_pin = attachment.pin(&pins, "dmca").unwrap();
    drop(attachment);
    let before = deploy::pinned_link_info(&link_pin).unwrap();
    assert_eq!(before.prog_id as u64, prog_id(v1.ingress()));
    rig.send("dmca", &to([10, 0, 0, 2]), REAL_FRAMES);
    rig.expect("dmcb", REAL_FRAMES);

    let (obj, ir) = build(SPEC_V2, &rig.build_dir.path().join("v2"));
    assert_ne!(ir.code_hash(), rig.ir.code_hash(), "a change of code");
    let v2 = rig.load(&obj, &ir);
    let after = deploy::swap(&link_pin, v2.ingress()).unwrap_or_else(|e| panic!("{e}"));
    let v2_id = prog_id(v2.ingress());
    assert_eq!(
        (after.id, after.prog_id as u64, after.ifindex),
        (before.id, v2_id, before.ifindex),
        "same link, new program"
    );
    assert_eq!(rig.xdp("dmca"), Some((1, v2_id)));
    rig.send("dmca", &to([10, 0, 0, 2]), REAL_FRAMES);
    rig.expect("dmcc", REAL_FRAMES);
    rig.expect("dmcb", REAL_FRAMES);
    println!(
        "swap: link {} kept, program {} -> {}; {REAL_FRAMES} frames before went to dmcb, \
         {REAL_FRAMES} after to dmcc",
        before.id, before.prog_id, after.prog_id
    );

    // An egress program cannot be swapped in: a clear refusal, nothing changes.
    let err = deploy::swap(&link_pin, egress_prog(&v2).as_fd()).unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("not an `xdp/devmap` egress program"), "{err}");
    assert_eq!(rig.xdp("dmca"), Some((1, v2_id)));
    deploy::detach(&pins).unwrap();
    assert_eq!(rig.xdp("dmca"), None);
}

// ----------------------------------------------------------------- refusals

#[test]
fn a_program_the_verifier_rejects_is_named_with_the_end_of_its_log() {
    require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let (_, ir) = build(SPEC, dir.path());
    let c = std::fs::read_to_string(dir.path().join("fwd.bpf.c")).unwrap();
    let entry = "int devmapc_ingress(struct xdp_md *ctx)\n{\n";
    assert!(c.contains(entry));
    // A packet read with no bounds check.
    let read = "\tif (((volatile unsigned char *)(long)ctx->data)[100] == 0x42)\n\t\treturn XDP_DROP;\n";
    let bad = c.replace(entry, &format!("{entry}{read}"));
    let bad_dir = dir.path().join("bad");
    std::fs::create_dir(&bad_dir).unwrap();
    std::fs::write(bad_dir.join("fwd.bpf.c"), bad).unwrap();
    devmapc::builder::compile_bpf_c(&bad_dir.join("fwd.bpf.c"), &bad_dir.join("fwd.bpf.o")).unwrap();
    let err = deploy::load(&bad_dir.join("fwd.bpf.o"), &ir).unwrap_err();
    println!("{err}");
    let DeployError::Verifier { program, log_tail, .. } = &err else { panic!("a verifier error: {err:?}") };
    assert_eq!(program, "devmapc_ingress");
    assert!(log_tail.contains("invalid access to packet"), "{log_tail}");
    assert!(log_tail.lines().count() <= deploy::VERIFIER_LOG_TAIL);
    assert!(err.to_string().contains("verifier rejected program `devmapc_ingress`"), "{err}");

    // Not an object at all: another clear error.
    let missing = dir.path().join("missing.bpf.o");
    let err = deploy::load(&missing, &ir).unwrap_err();
    println!("{err}");
    assert!(matches!(err, DeployError::Load { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("cannot load {}", missing.display())), "{err}");
}

#[test]
fn the_probe_finds_egress_programs_and_broadcast_and_refusals_say_what_is_missing() {
    require_privileged!();
    let support = deploy::probe().unwrap();
    println!("{support:?}");
    assert!(support.devmap_hash && support.egress_programs && support.broadcast, "{support:?}");

    let dir = tempfile::tempdir().unwrap();
    let (_, ir) = build(SPEC, dir.path());
    let grouped = "table { key = vlan.id }
        device a { ifname = \"a\" }
        device b { ifname = \"b\" }
        group all { a, b }
        ingress { on = [a] }
        route 1 -> all";
    let (_, with_group) = build(grouped, &dir.path().join("g"));
    let old = |egress_programs, broadcast| deploy::Support {
        kernel: "5.10.0-old".into(),
        devmap_hash: true,
        egress_programs,
        broadcast,
    };
    deploy::check_support(&support, &with_group).unwrap();
    deploy::check_support(&old(true, false), &ir).unwrap();
    let err = deploy::check_support(&old(true, false), &with_group).unwrap_err().to_string();
    assert!(err.contains("BPF_F_BROADCAST") && err.contains("all") && err.contains("5.10.0-old"), "{err}");
    let err = deploy::check_support(&old(false, false), &ir).unwrap_err().to_string();
    assert!(err.contains("5.8"), "{err}");
}

/// Drops `caps` from the calling thread's effective set (capabilities are
/// per thread: only this thread loses them).
fn drop_effective_caps(caps: &[u32]) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a version-3 header and two data words.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()), 0);
        for cap in caps {
            data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        }
        assert_eq!(libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()), 0);
    }
}

#[test]
fn missing_capabilities_are_named() {
    require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let (obj, ir) = build(SPEC, dir.path());
    let (probe, load) = std::thread::spawn(move || {
        drop_effective_caps(&[12, 21, 39]); // CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF
        (deploy::probe().map(drop), deploy::load(&obj, &ir).map(drop))
    })
    .join()
    .unwrap();
    for err in [probe.unwrap_err(), load.unwrap_err()] {
        let message = err.to_string();
        println!("{message}");
        assert!(matches!(err, DeployError::Privileges { .. }), "{err:?}");
        for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"] {
            assert!(message.contains(cap), "{cap} in: {message}");
        }
    }
}
