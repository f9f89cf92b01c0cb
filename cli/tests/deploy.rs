//! `devmapc apply`, `status` and `detach` as a user runs them, inside a
//! namespace entered with `nsenter --net=...`: `kill -9` at each step of an
//! apply leaves a state the next apply repairs; `--watch` brings a deleted
//! and re-created target back; `status --json` and `detach` say what the
//! kernel holds.
//!
//! The devmapc process is stopped at a known step by `DEVMAPC_FAILPOINT`
//! (it announces the step on stderr and waits), then really killed with
//! SIGKILL: nothing of its own cleanup runs.

use devmapc_testkit::bpf;
use devmapc_testkit::netns::{send_frames, Netns};
use devmapc_testkit::packet::Frame;
use devmapc_testkit::pins::PinDir;
use devmapc_testkit::{objects, require_privileged, wait_until};
use libbpf_rs::{Link, Object};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const DEVMAPC: &str = env!("CARGO_BIN_EXE_devmapc");

fn spec(table: &str, routes: &str) -> String {
    format!(
        "table {{ key = ipv4.dst, {table} }}
device a {{ ifname = \"dmca\" }}
device b {{ ifname = \"dmcb\" }}
device c {{ ifname = \"dmcc\" }}
ingress {{ on = [a, b], mode = native }}
{routes}
"
    )
}

const ROUTES: &str = "route 10.0.0.2 -> b\nroute 10.0.0.3 -> c";

struct Rig {
    ns: Netns,
    counts: Object,
    counting: Vec<Link>,
    pins: PinDir,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let ns = Netns::new().unwrap();
        let counts = bpf::load(objects::COUNT).unwrap();
        let mut rig =
            Rig { ns, counts, counting: vec![], pins: PinDir::new(), dir: tempfile::tempdir().unwrap() };
        for name in ["dmca", "dmcb", "dmcc"] {
            rig.pair(name);
        }
        rig
    }

    /// A veth pair `name`/`pNAME` with the counter on `pNAME`.
    fn pair(&mut self, name: &str) -> u32 {
        let (_, peer) = self.ns.veth(name, &format!("p{name}")).unwrap();
        let counter = bpf::prog(&self.counts, "count").unwrap();
        self.counting.push(self.ns.enter(|| counter.attach_xdp(peer.ifindex as i32)).unwrap());
        peer.ifindex
    }

    fn write(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("fwd.devmap");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn devmapc(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path().display()))
            .arg(DEVMAPC)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("DEVMAPC_FAILPOINT");
        cmd
    }

    fn apply(&self, spec: &Path, extra: &[&str]) -> Output {
        let pins = self.pins.to_str().unwrap();
        let mut args = vec!["apply", spec.to_str().unwrap(), "--pin-dir", pins];
        args.extend(extra);
        self.devmapc(&args).output().unwrap()
    }

    /// Runs an apply that stops at `point`, then kills it with SIGKILL.
    fn apply_killed_at(&self, spec: &Path, point: &str) {
        let pins = self.pins.to_str().unwrap();
        let mut child = self
            .devmapc(&["apply", spec.to_str().unwrap(), "--pin-dir", pins])
            .env("DEVMAPC_FAILPOINT", point)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stderr.take().unwrap());
        let reached = wait_for(&lines, Duration::from_secs(60), |l| l.contains("failpoint"));
        assert!(reached.is_some(), "the apply never reached {point}");
        kill9(&mut child);
    }

    fn status(&self) -> serde_json::Value {
        let out = self.devmapc(&["status", self.pins.to_str().unwrap(), "--json"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("status: {e}\nstdout: {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
        })
    }

    fn received(&self, dev: &str) -> u64 {
        let ifindex = self.ns.ifindex(&format!("p{dev}")).unwrap();
        bpf::rx_count(&bpf::map(&self.counts, "counts").unwrap(), ifindex).unwrap().0
    }

    fn send(&self, dst: [u8; 4], n: u64) {
        let frame = Frame::new().ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::from(dst)).udp(1000, 53).build();
        let ifindex = self.ns.ifindex("pdmca").unwrap();
        self.ns.enter(|| send_frames(ifindex, &frame, n)).unwrap();
    }

    /// `n` frames to `dst` arrive behind `dev`.
    fn delivers(&self, dst: [u8; 4], dev: &str, n: u64) -> bool {
        let before = self.received(dev);
        self.send(dst, n);
        wait_until(Duration::from_secs(5), || self.received(dev) - before >= n)
    }

    /// Every link runs the same program, and the maps match the manifest.
    fn assert_consistent(&self) {
        let s = self.status();
        let links = s["links"].as_array().unwrap();
        assert_eq!(links.len(), 2, "{s:#}");
        assert_eq!(links[0]["prog_id"], links[1]["prog_id"], "{s:#}");
        assert_eq!(s["drift"]["known"], true, "{s:#}");
        assert_eq!(s["link_drift"].as_array().unwrap().len(), 0, "{s:#}");
        assert_eq!(s["drift"]["operations"].as_array().unwrap().len(), 0, "{s:#}");
        let leftovers: Vec<_> =
            std::fs::read_dir(&*self.pins).unwrap().flatten().map(|e| e.file_name()).collect();
        let mut names: Vec<String> = leftovers.iter().map(|n| n.to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["devices", "devmapc", "links", "manifest", "maps", "netns", "owned", "progs"]);
    }
}

/// The writing end of a pipe whose reader is gone: every write fails with
/// EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just made and are owned here.
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    };
    drop(reader);
    Stdio::from(writer)
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &mpsc::Receiver<String>, timeout: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
    let end = std::time::Instant::now() + timeout;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if f(&line) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn kill9(child: &mut Child) {
    // nsenter execs devmapc: the child *is* devmapc.
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}

#[test]
fn kill_9_during_a_first_apply_is_repaired_by_the_next() {
    require_privileged!();
    let rig = Rig::new();
    let v1 = rig.write(&spec("on_miss = drop", ROUTES));
    for point in ["first-before-attach", "first-before-commit"] {
        rig.apply_killed_at(&v1, point);
        assert!(!rig.pins.join("manifest").exists(), "{point}: nothing committed");
        let out = ok(&rig.apply(&v1, &[]));
        assert!(out.contains("repaired: removed a first load"), "{point}: {out}");
        assert!(out.contains("first apply"), "{out}");
        rig.assert_consistent();
        assert!(rig.delivers([10, 0, 0, 3], "dmcc", 10));
        ok(&rig.devmapc(&["detach", rig.pins.to_str().unwrap()]).output().unwrap());
    }
}

#[test]
fn kill_9_during_a_code_upgrade_leaves_old_or_new_serving_and_the_next_apply_repairs() {
    require_privileged!();
    let rig = Rig::new();
    let v1 = spec("on_miss = drop", ROUTES);
    let v2 = spec("on_miss = pass", ROUTES);
    let path = rig.write(&v1);
    ok(&rig.apply(&path, &[]));
    for (point, forward) in [("upgrade-before-swap", false), ("upgrade-mid-swap", true), ("promote", true)] {
        let old = rig.status()["code_hash"].clone();
        rig.write(&v2);
        rig.apply_killed_at(&path, point);
        // Status names the interrupted upgrade (exit 1, JSON still
        // printed), also when `maps/` was already moved away (`promote`).
        let out = rig.devmapc(&["status", rig.pins.to_str().unwrap(), "--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{point}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(rig.status()["interrupted_upgrade"], true, "{point}");
        // Frames still flow, whichever program serves.
        assert!(rig.delivers([10, 0, 0, 3], "dmcc", 10), "{point}: delivery after the kill");
        // Re-apply what was being applied: repaired, then up to date.
        let out = ok(&rig.apply(&path, &[]));
        assert!(out.contains("repaired:"), "{point}: {out}");
        if forward {
            assert!(out.contains("finished a code upgrade"), "{point}: {out}");
        } else {
            assert!(out.contains("removed the staged programs"), "{point}: {out}");
        }
        rig.assert_consistent();
        assert_ne!(rig.status()["code_hash"], old, "{point}: the new code serves");
        assert!(rig.delivers([10, 0, 0, 2], "dmcb", 10));
        // Back to v1 for the next round.
        rig.write(&v1);
        ok(&rig.apply(&path, &[]));
    }
}

#[test]
fn kill_9_between_two_map_operations_is_repaired_by_the_next_apply() {
    require_privileged!();
    let rig = Rig::new();
    let path = rig.write(&spec("on_miss = drop", ROUTES));
    ok(&rig.apply(&path, &[]));
    rig.write(&spec("on_miss = drop", "route 10.0.0.2 -> c\nroute 10.0.0.4 -> b\nroute 10.0.0.5 -> b"));
    rig.apply_killed_at(&path, "data-mid-plan");
    let s = rig.status();
    assert!(!s["drift"]["operations"].as_array().unwrap().is_empty(), "half applied: {s:#}");
    // Every entry is one of the two specs': the first operation removed
    // 10.0.0.3, which leaves the table (keys that leave go first), and
    // 10.0.0.2 still goes to b (its move to c comes later).
    assert!(rig.delivers([10, 0, 0, 2], "dmcb", 5));
    assert!(!rig.delivers([10, 0, 0, 3], "dmcc", 5));
    let out = ok(&rig.apply(&path, &[]));
    assert!(out.contains("data change"), "{out}");
    rig.assert_consistent();
    assert!(rig.delivers([10, 0, 0, 5], "dmcb", 5));
    assert!(rig.delivers([10, 0, 0, 2], "dmcc", 5));
}

#[test]
fn watch_reinstalls_a_re_created_device_and_follows_spec_edits() {
    require_privileged!();
    let mut rig = Rig::new();
    let path = rig.write(&spec("on_miss = drop", ROUTES));
    let pins = rig.pins.to_str().unwrap().to_string();
    let mut watch = rig
        .devmapc(&["apply", path.to_str().unwrap(), "--pin-dir", &pins, "--watch", "--make-ready"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines_of(watch.stdout.take().unwrap());
    let err = lines_of(watch.stderr.take().unwrap());
    assert!(wait_for(&err, Duration::from_secs(60), |l| l.contains("watching")).is_some());
    assert!(rig.delivers([10, 0, 0, 3], "dmcc", 10));

    // The target goes away (the kernel drops its entries) and comes back
    // with a new ifindex.
    rig.ns.delete_link("dmcc").unwrap();
    rig.pair("dmcc");
    let reapplied = wait_for(&out, Duration::from_secs(10), |l| l.contains("re-applied"));
    assert!(reapplied.is_some(), "no re-apply after the device came back");
    assert!(
        wait_until(Duration::from_secs(5), || rig.status()["drift"]["operations"] == serde_json::json!([]))
    );
    assert!(rig.delivers([10, 0, 0, 3], "dmcc", 10), "delivery restored");

    // The spec changes: 10.0.0.3 now goes to b.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime
    rig.write(&spec("on_miss = drop", "route 10.0.0.2 -> b\nroute 10.0.0.3 -> b"));
    assert!(wait_for(&out, Duration::from_secs(10), |l| l.contains("the spec changed")).is_some());
    assert!(rig.delivers([10, 0, 0, 3], "dmcb", 10));

    kill9(&mut watch);
    // The deployment outlives the watcher.
    assert!(rig.delivers([10, 0, 0, 2], "dmcb", 10));
    ok(&rig.devmapc(&["detach", &pins]).output().unwrap());
    assert!(!rig.pins.exists());
}

#[test]
fn status_shows_routes_counters_and_drift_and_detach_leaves_nothing() {
    require_privileged!();
    let rig = Rig::new();
    let path = rig.write(&spec("on_miss = drop", ROUTES));
    let out = ok(&rig.apply(&path, &["--dry-run"]));
    assert!(out.contains("first apply: would load"), "{out}");
    assert!(!rig.pins.join("manifest").exists());
    ok(&rig.apply(&path, &[]));
    assert!(rig.delivers([10, 0, 0, 2], "dmcb", 4));
    let s = rig.status();
    let route = s["routes"].as_array().unwrap().iter().find(|r| r["key"] == "10.0.0.2").unwrap().clone();
    assert_eq!(route["target"], "b");
    assert_eq!(route["count"]["packets"], 4, "{s:#}");
    let human = ok(&rig.devmapc(&["status", rig.pins.to_str().unwrap()]).output().unwrap());
    assert!(human.contains("10.0.0.2 → b") && human.contains("drift: none"), "{human}");

    // Drift: an entry removed behind devmapc's back.
    let map = rig.pins.join("maps").join("devmapc_routes");
    // An IPv4 direct key is the address's four bytes, mixed (docs/build.md).
    let key = devmapc::ir::fmix32(u32::from_ne_bytes([10, 0, 0, 3])).to_ne_bytes();
    let status = Command::new("bpftool")
        .args(["map", "delete", "pinned", map.to_str().unwrap(), "key"])
        .args(key.iter().map(|b| b.to_string()))
        .status()
        .unwrap();
    assert!(status.success());
    let out = rig.devmapc(&["status", rig.pins.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "drift exits 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DRIFT"));
    // `status | head`: the drift code stands when the reader went away.
    for json in [&[][..], &["--json"]] {
        let code = rig
            .devmapc(&[&["status", rig.pins.to_str().unwrap()][..], json].concat())
            .stdout(closed_pipe())
            .stderr(closed_pipe())
            .status()
            .unwrap();
        assert_eq!(code.code(), Some(1), "drift exits 1 with nobody reading ({json:?})");
    }
    let repaired = ok(&rig.apply(&path, &[]));
    assert!(repaired.contains("1 added"), "{repaired}");

    // A target deleted: the kernel dropped its entries, so status exits 1
    // although it cannot compute the drift; the next apply (with the
    // device back) repairs it.
    rig.ns.delete_link("dmcc").unwrap();
    let out = rig.devmapc(&["status", rig.pins.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a missing device exits 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("drift: unknown: device `c`"));
    let mut rig = rig;
    rig.pair("dmcc");
    ok(&rig.apply(&path, &[]));

    // From another network namespace: status warns and exits 1, apply
    // refuses (it would look the devices up in the wrong namespace).
    let other = Netns::new().unwrap();
    let in_other = |args: &[&str]| {
        Command::new("nsenter")
            .arg(format!("--net={}", other.path().display()))
            .arg(DEVMAPC)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = in_other(&["status", rig.pins.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("WARNING: applied in network namespace"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = in_other(&["apply", path.to_str().unwrap(), "--pin-dir", rig.pins.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was applied in network namespace net:["), "{err}");
    assert!(rig.delivers([10, 0, 0, 2], "dmcb", 1), "still serving");

    // Under `ip netns exec` (a private /sys), status says why it sees
    // nothing instead of "nothing deployed".
    let out = Command::new("ip")
        .args(["netns", "exec", rig.ns.name(), DEVMAPC, "status"])
        .arg(&*rig.pins)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ip netns exec") && err.contains("nsenter"), "{err}");

    let out = ok(&rig.devmapc(&["detach", rig.pins.to_str().unwrap()]).output().unwrap());
    assert!(out.contains("detached dmca") && out.contains("detached dmcb"), "{out}");
    assert!(!rig.pins.exists());
    let xdp = rig.ns.ip(&["-j", "link", "show", "dev", "dmca"]).unwrap();
    assert!(!xdp.contains("\"xdp\""), "no XDP program left on dmca: {xdp}");
    let again = rig.devmapc(&["detach", rig.pins.to_str().unwrap()]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing deployed"));
}

#[test]
fn a_missing_device_is_named_with_its_line_and_nothing_is_applied() {
    require_privileged!();
    let rig = Rig::new();
    let path = rig.write(&spec("on_miss = drop", ROUTES).replace("dmcc", "dmcgone"));
    let out = rig.apply(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("device `c` (line 4)") && err.contains("dmcgone"), "{err}");
    assert!(!rig.pins.exists(), "not even an empty pin directory is left");
}

/// `apply`, `status` and `detach` as a user without capabilities: one line
/// that names what is missing, exit 2, nothing done.
#[test]
fn without_privileges_each_command_names_the_missing_capabilities() {
    require_privileged!();
    use devmapc_testkit::privileged::as_nobody;
    let rig = Rig::new();
    let path = rig.write(&spec("on_miss = drop", ROUTES));
    let pins = rig.pins.to_str().unwrap();
    for args in [
        vec!["apply", path.to_str().unwrap(), "--pin-dir", pins],
        vec!["status"],
        vec!["status", pins],
        vec!["detach", pins],
    ] {
        let out = as_nobody(Command::new(DEVMAPC).args(&args)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("missing capabilities CAP_BPF, CAP_NET_ADMIN"), "{args:?}: {stderr}");
    }
    assert!(!rig.pins.exists(), "nothing was pinned");
}
