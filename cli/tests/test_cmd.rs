//! `devmapc test` as a user runs it: the bundled examples pass, wrong
//! expectations fail with a located, readable diff, the JSON output, no
//! partial run without privileges, and nothing left behind after a failed or
//! interrupted run. Kernel-facing: run as root (`require_privileged!`).

use devmapc_testkit::require_privileged;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_devmapc");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn devmapc(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(root()).env("NO_COLOR", "1").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Tests that make sandboxes run beside each other, but not beside the one
/// that checks no namespace is left referenced: the kernel reuses the inode
/// numbers of freed namespaces at once, so another test's fresh sandbox
/// could carry a number that test is watching.
static SANDBOXES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn sandbox_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SANDBOXES.read().unwrap_or_else(|e| e.into_inner())
}

/// A spec file in a temporary directory.
fn spec(body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.devmap");
    std::fs::write(&path, body).unwrap();
    (dir, path.display().to_string())
}

/// Two ports and a VLAN table; the tests are appended. Line 10 is the first
/// line after this text.
const BASE: &str = r#"table { key = vlan.id, on_miss = drop }
device a { ifname = "a0" }
device b { ifname = "b0", egress = retag(7) }
device c { ifname = "c0" }
egress retag(vid: u16) { vlan.id = vid }
ingress { on = [a] }
route 100 -> b
route 200 -> c
route 300 -> a
"#;

#[test]
fn every_example_passes() {
    require_privileged!();
    let _sandboxes = sandbox_shared();
    let examples: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "devmap"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(examples.len() >= 8);
    let mut args = vec!["test"];
    args.extend(examples.iter().map(String::as_str));
    let out = devmapc(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let last = stdout.lines().last().unwrap();
    let passed: usize = last
        .strip_suffix(" passed, 0 failed")
        .unwrap_or_else(|| panic!("last line: {last:?}"))
        .parse()
        .unwrap();
    assert!(passed >= 60, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("test ") && l.ends_with(" ... ok")).count(), passed);
}

#[test]
fn a_packet_expected_on_the_wrong_device_fails_pointing_at_the_expectation() {
    require_privileged!();
    let _sandboxes = sandbox_shared();
    let (_dir, path) = spec(&format!(
        "{BASE}test \"vlan 100 goes to c\" {{\n    send a eth() / vlan(id = 100) / ipv4()\n    expect c vlan(id = 7)\n}}\n\
         test \"vlan 200 goes to c\" {{\n    send a eth() / vlan(id = 200) / ipv4()\n    expect c vlan(id = 200)\n}}\n"
    ));
    let out = devmapc(&["test", &path]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("test vlan 100 goes to c ... FAILED"), "{stdout}");
    assert!(stdout.contains("test vlan 200 goes to c ... ok"), "{stdout}");
    assert!(stdout.contains("expected a packet to leave c, and none did"), "{stdout}");
    assert!(stdout.contains(&format!("[{path}:12:5]")), "points at the expect line: {stdout}");
    assert!(stdout.contains("seen: left b: eth("), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim() == "vlan.id  7"), "the field compared: {stdout}");
    assert_eq!(stdout.lines().last(), Some("1 passed, 1 failed"));
}

#[test]
fn a_wrong_field_shows_a_field_by_field_diff() {
    require_privileged!();
    let _sandboxes = sandbox_shared();
    let (_dir, path) = spec(&format!("{BASE}test \"retagged\" {{\n    send a eth() / vlan(id = 100) / ipv4() / udp()\n    expect b vlan(id = 8) / udp(dport = 9)\n}}\n"));
    let out = devmapc(&["test", &path]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("the packet that left b does not match the pattern"), "{stdout}");
    assert!(stdout.contains(&format!("[{path}:12:5]")), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim() == "- vlan.id    expected 8, seen 7"), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim() == "udp.dport  9"), "{stdout}");
    assert!(stdout.contains("ingress verdict: XDP_REDIRECT on a"), "{stdout}");
}

#[test]
fn expect_drop_fails_when_the_packet_is_delivered() {
    require_privileged!();
    let _sandboxes = sandbox_shared();
    let (_dir, path) = spec(&format!(
        "{BASE}test \"delivered\" {{\n    send a eth() / vlan(id = 200) / ipv4()\n    expect drop\n}}\n\
         test \"really dropped\" {{\n    send a eth() / vlan(id = 999) / ipv4()\n    expect drop\n}}\n"
    ));
    let out = devmapc(&["test", "--timeout", "50", &path]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("test delivered ... FAILED"), "{stdout}");
    assert!(stdout.contains("test really dropped ... ok"), "{stdout}");
    assert!(stdout.contains("expected the packet to be dropped, but 1 packet came out"), "{stdout}");
    assert!(stdout.contains(&format!("[{path}:12:5]")), "{stdout}");
    assert!(stdout.contains("seen: left c: eth("), "{stdout}");
}

#[test]
fn pass_hairpin_extra_copies_and_several_sends() {
    require_privileged!();
    let _sandboxes = sandbox_shared();
    let (_dir, path) = spec(&format!(
        "{BASE}test \"untagged goes nowhere\" {{\n    send a eth() / ipv4()\n    expect drop\n}}\n\
         test \"back out of a\" {{\n    send a eth() / vlan(id = 300)\n    expect a vlan(id = 300)\n}}\n\
         test \"two sends, two packets\" {{\n    send a eth() / vlan(id = 100) / ipv4() / tcp(dport = 1)\n    send a eth() / vlan(id = 100) / ipv4() / tcp(dport = 2)\n    expect b tcp(dport = 2)\n    expect b tcp(dport = 1)\n}}\n\
         test \"one expect for two packets\" {{\n    send a eth() / vlan(id = 100)\n    send a eth() / vlan(id = 200)\n    expect b\n}}\n\
         test \"not passed\" {{\n    send a eth() / vlan(id = 200)\n    expect pass\n}}\n"
    ));
    let out = devmapc(&["test", &path]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for ok in ["untagged goes nowhere", "back out of a", "two sends, two packets"] {
        assert!(stdout.contains(&format!("test {ok} ... ok")), "{stdout}");
    }
    assert!(stdout.contains("test one expect for two packets ... FAILED"), "{stdout}");
    assert!(stdout.contains("a packet that no `expect` names left c"), "{stdout}");
    assert!(stdout.contains("test not passed ... FAILED"), "{stdout}");
    assert!(stdout.contains("expected the packet to go up the stack of a, and it did not"), "{stdout}");

    // And a miss that does go up the stack.
    let (_dir, path) = spec(
        &(BASE.replace("on_miss = drop", "on_miss = pass")
            + "test \"up\" {\n    send a eth() / vlan(id = 5) / ipv4()\n    expect pass\n}\n"),
    );
    let out = devmapc(&["test", &path]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

/// A packet sent on a device outside `ingress.on` meets no XDP program:
/// it goes up that device's stack and is not redirected (W006 warns, and
/// `devmapc test` shows the warning); `egress.mac` in a pattern is the
/// leaving device's address, and a wrong one fails.
#[test]
fn a_send_without_ingress_is_not_forwarded_and_egress_mac_is_checked() {
    require_privileged!();
    let _sandboxes = sandbox_shared();
    let base = BASE.replace(
        "egress retag(vid: u16) { vlan.id = vid }",
        "egress retag(vid: u16) {\n    vlan.id = vid\n    eth.src = egress.mac\n}",
    );
    let (_dir, path) = spec(&format!(
        "{base}test \"c meets no program\" {{\n    send c eth() / vlan(id = 100) / ipv4()\n    expect b\n}}\n\
         test \"c passes it up\" {{\n    send c eth() / vlan(id = 100) / ipv4()\n    expect pass\n}}\n\
         test \"b stamps its address\" {{\n    send a eth(src = 02:00:00:00:00:33) / vlan(id = 100) / ipv4()\n    expect b eth(src = egress.mac) / vlan(id = 7)\n}}\n\
         test \"not c's address\" {{\n    send a eth() / vlan(id = 200) / ipv4()\n    expect c eth(src = egress.mac)\n}}\n"
    ));
    let out = devmapc(&["test", "--timeout", "100", &path]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stderr.contains("W006"), "the warning is shown: {stderr}");
    assert!(stdout.contains("test c meets no program ... FAILED"), "{stdout}");
    assert!(stdout.contains("no XDP program on c (not in ingress.on)"), "{stdout}");
    assert!(stdout.contains("test c passes it up ... ok"), "{stdout}");
    assert!(stdout.contains("test b stamps its address ... ok"), "{stdout}");
    // c has no egress program: the frame keeps the sender's address.
    assert!(stdout.contains("test not c's address ... FAILED"), "{stdout}");
    assert!(
        stdout.contains("expected on c: eth(src = egress.mac (") && stdout.contains("- eth.src"),
        "{stdout}"
    );
}

#[test]
fn json_lines_for_ci() {
    require_privileged!();
    let _sandboxes = sandbox_shared();
    let (_dir, path) = spec(&format!("{BASE}test \"bad\" {{\n    send a eth() / vlan(id = 100)\n    expect b vlan(id = 1)\n}}\ntest \"good\" {{\n    send a eth() / vlan(id = 100)\n    expect b vlan(id = 7)\n}}\n"));
    let out = devmapc(&["test", "--message-format", "json", &path]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["type"], "suite");
    assert_eq!(lines[0]["test_count"], 2);
    assert_eq!(lines[1]["name"], "bad");
    assert_eq!(lines[1]["event"], "failed");
    let failure = &lines[1]["failures"][0];
    assert_eq!((failure["line"].as_u64(), failure["column"].as_u64()), (Some(12), Some(5)));
    assert_eq!(failure["seen"][0]["device"], "b");
    assert_eq!(
        failure["seen"][0]["diff"][0],
        serde_json::json!({ "field": "vlan.id", "expected": "1", "seen": "7", "equal": false })
    );
    assert_eq!(lines[2]["event"], "ok");
    assert_eq!(
        lines[3],
        serde_json::json!({ "type": "summary", "passed": 1, "failed": 1, "spec_errors": 0, "errors": 0 })
    );
    // --filter picks tests by name.
    let out = devmapc(&["test", "--filter", "goo", &path]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().last(), Some("1 passed, 0 failed"));
}

#[test]
fn without_privileges_one_message_and_no_run() {
    require_privileged!();
    // As `nobody`, without any capability.
    let out = devmapc_testkit::privileged::as_nobody(
        Command::new(BIN).args(["test", "examples/vlan-switch.devmap"]).current_dir(root()),
    )
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(text(&out.stdout), "", "nothing ran");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing capabilities CAP_BPF, CAP_NET_ADMIN"), "{stderr}");
}

/// The network namespaces `pid` holds open (`net:[inode]`), the one it
/// started in (this process's) excepted.
fn held_namespaces(pid: u32) -> Vec<String> {
    // The namespace both processes started in: the child's own link would
    // not do, as it names the sandbox's while its main thread is inside one
    // (and the descriptor it keeps to come back would then look held).
    let own = std::fs::read_link("/proc/self/ns/net").map(|l| l.display().to_string()).unwrap_or_default();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|l| l.display().to_string())
                .filter(|l| l.starts_with("net:[") && *l != own)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether any process still refers to namespace `ns` (`net:[inode]`): as
/// its own, or through an open descriptor. None does: the kernel frees it.
fn referenced(ns: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = p.path();
        if std::fs::read_link(dir.join("ns/net")).is_ok_and(|l| l.display().to_string() == ns) {
            return true;
        }
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            if fds
                .flatten()
                .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l.display().to_string() == ns))
            {
                return true;
            }
        }
        let _ = pid;
    }
    false
}

/// Namespaces named under /run/netns that could be ours (other test
/// binaries make `dmc-*` ones meanwhile).
fn named_namespaces() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("devmapc"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nothing_is_left_after_an_interrupted_or_failed_run() {
    require_privileged!();
    let _alone = SANDBOXES.write().unwrap_or_else(|e| e.into_inner());
    let before = named_namespaces();
    // Many drop tests with a long timeout: the run takes seconds.
    let mut body = BASE.to_string();
    for i in 0..20 {
        body += &format!(
            "test \"drop {i}\" {{\n    send a eth() / vlan(id = {})\n    expect drop\n}}\n",
            1000 + i
        );
    }
    body += "test \"fails\" {\n    send a eth() / vlan(id = 100)\n    expect c\n}\n";
    let (_dir, path) = spec(&body);
    let mut child = Command::new(BIN)
        .args(["test", "--timeout", "400", &path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until it works in its sandbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let held = held_namespaces(pid);
        if held.len() >= 2 || Instant::now() > deadline {
            break held;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(held.len(), 2, "the sandbox's two namespaces");
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "stops promptly");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!stdout.contains("test fails"), "stopped mid-run: {stdout}");
    for ns in &held {
        assert!(!referenced(ns), "{ns} is still referenced");
    }
    assert_eq!(named_namespaces(), before, "no namespace in /run/netns");

    // A failed run leaves nothing either.
    let out =
        Command::new(BIN).args(["test", "--timeout", "10", "--filter", "fails", &path]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(named_namespaces(), before);
    for ns in &held {
        assert!(!referenced(ns));
    }
}
