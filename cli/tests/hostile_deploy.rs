//! `devmapc apply`, `status` and `detach` against careless input, as an
//! operator runs them (`nsenter --net=...` into a namespace of the test's
//! own): a dry run that finds the apply would fail exits 1; `--make-ready`
//! puts GRO back when the apply then fails; pin directories with trailing
//! slashes are the same directories; an empty directory devmapc did not
//! make is never removed; a manifest rebuilt alone never loads the stale
//! object beside it, nor a hand-edited code part; a deployment without its
//! ownership record is left alone.

use devmapc_testkit::netns::Netns;
use devmapc_testkit::pins::PinDir;
use devmapc_testkit::require_privileged;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DEVMAPC: &str = env!("CARGO_BIN_EXE_devmapc");

/// `hda` takes the ingress program; `hdb` is a redirect target whose peer
/// `phdb` has GRO off (the veth default) and no XDP program: not ready.
const SPEC: &str = "table { key = ipv4.dst }
device a { ifname = \"hda\" }
device b { ifname = \"hdb\" }
ingress { on = [a], mode = generic }
route 10.0.0.2 -> b
";

struct Rig {
    ns: Netns,
    pins: PinDir,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        let ns = Netns::new().unwrap();
        ns.veth("hda", "phda").unwrap();
        ns.veth("hdb", "phdb").unwrap();
        Rig { ns, pins: PinDir::new(), dir: tempfile::tempdir().unwrap() }
    }

    fn spec(&self) -> PathBuf {
        let path = self.dir.path().join("hostile.devmap");
        std::fs::write(&path, SPEC).unwrap();
        path
    }

    fn devmapc(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path().display()))
            .arg(DEVMAPC)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("DEVMAPC_FAILPOINT")
            .output()
            .unwrap()
    }

    fn apply(&self, pin_dir: &str, extra: &[&str]) -> Output {
        let spec = self.spec();
        let mut args = vec!["apply", spec.to_str().unwrap(), "--pin-dir", pin_dir];
        args.extend(extra);
        self.devmapc(&args)
    }

    fn apply_file(&self, manifest: &Path, pin_dir: &str) -> Output {
        self.devmapc(&["apply", manifest.to_str().unwrap(), "--pin-dir", pin_dir, "--allow-not-ready"])
    }

    fn gro(&self, dev: &str) -> bool {
        self.ns.enter(|| devmapc_runtime::netdev::gro(dev).unwrap())
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_dry_run_that_finds_the_apply_would_fail_exits_1() {
    require_privileged!();
    let rig = Rig::new();
    let pins = rig.pins.to_str().unwrap().to_string();
    let out = rig.apply(&pins, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the apply would fail"), "{}", text(&out));
    assert!(!rig.pins.exists(), "a dry run changes nothing");
    // What it would fail on is allowed, or `--make-ready` would fix it: 0.
    for extra in ["--allow-not-ready", "--make-ready"] {
        let out = rig.apply(&pins, &["--dry-run", extra]);
        assert_eq!(out.status.code(), Some(0), "{extra}: {}", text(&out));
    }
    assert!(!rig.gro("phdb"), "a dry run with --make-ready changes no device");
}

#[test]
fn make_ready_puts_gro_back_when_the_apply_fails() {
    require_privileged!();
    let rig = Rig::new();
    // Something that is not devmapc's in the pin directory: the first
    // load refuses to pin over it, after `--make-ready` turned GRO on.
    std::fs::create_dir(&*rig.pins).unwrap();
    std::fs::create_dir(rig.pins.join("theirs")).unwrap();
    assert!(!rig.gro("phdb"));
    let out = rig.apply(rig.pins.to_str().unwrap(), &["--make-ready"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("theirs"), "{}", text(&out));
    assert!(!rig.gro("phdb"), "GRO is as it was: the failed apply changed nothing");
    assert!(rig.pins.join("theirs").is_dir(), "left alone");

    // Without the obstacle, the same apply turns GRO on and stays so.
    std::fs::remove_dir(rig.pins.join("theirs")).unwrap();
    let out = rig.apply(rig.pins.to_str().unwrap(), &["--make-ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(rig.gro("phdb"));
}

#[test]
fn trailing_slashes_name_the_same_pin_directory() {
    require_privileged!();
    let rig = Rig::new();
    let with_slash = format!("{}/", rig.pins.display());
    let out = rig.apply(&with_slash, &["--allow-not-ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let root = rig.pins.parent().unwrap().to_str().unwrap().to_string();
    let name = rig.pins.file_name().unwrap().to_str().unwrap().to_string();
    for target in [format!("{name}/"), format!("{name}//"), with_slash.clone()] {
        let out = rig.devmapc(&["status", &target, "--pin-root", &root]);
        assert_eq!(out.status.code(), Some(0), "status {target}: {}", text(&out));
        assert!(!text(&out).contains("ip netns exec"), "{}", text(&out));
    }
    let out = rig.devmapc(&["detach", &format!("{name}/"), "--pin-root", &root]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!Path::new(&*rig.pins).exists());
}

#[test]
fn detach_never_removes_an_empty_directory_devmapc_did_not_make() {
    require_privileged!();
    let rig = Rig::new();
    std::fs::create_dir(&*rig.pins).unwrap();
    let out = rig.devmapc(&["detach", rig.pins.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("left alone"), "{}", text(&out));
    assert!(rig.pins.is_dir());
}

#[test]
fn a_pin_dir_off_bpffs_is_not_blamed_on_ip_netns_exec() {
    require_privileged!();
    let rig = Rig::new();
    let off = rig.dir.path().join("pins");
    let out = rig.apply(off.to_str().unwrap(), &["--allow-not-ready"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not on a bpffs"), "{}", text(&out));
    assert!(!text(&out).contains("ip netns exec"), "{}", text(&out));
    // detach there: nothing of devmapc's can be there, not "cannot pin".
    std::fs::create_dir(&off).unwrap();
    let out = rig.devmapc(&["detach", off.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nothing of devmapc's can be there"), "{}", text(&out));
    assert!(!text(&out).contains("cannot pin"), "{}", text(&out));
    assert!(off.is_dir(), "left in place");
}

/// The command-line flow of a stale object: `build` with `on_miss = pass`,
/// the spec edited to `on_miss = drop`, only the manifest rebuilt. The
/// fresh manifest names the old object: `apply` refuses before loading.
#[test]
fn a_manifest_rebuilt_alone_does_not_load_the_stale_object_beside_it() {
    require_privileged!();
    let rig = Rig::new();
    let spec = rig.dir.path().join("s.devmap");
    let out_dir = rig.dir.path().join("out");
    let out_str = out_dir.to_str().unwrap();
    std::fs::write(&spec, SPEC.replace("ipv4.dst }", "ipv4.dst, on_miss = pass }")).unwrap();
    let out = rig.devmapc(&["build", "-o", out_str, spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let object = std::fs::read(out_dir.join("s.bpf.o")).unwrap();

    std::fs::write(&spec, SPEC.replace("ipv4.dst }", "ipv4.dst, on_miss = drop }")).unwrap();
    let out = rig.devmapc(&["build", "-o", out_str, "--emit", "manifest", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read(out_dir.join("s.bpf.o")).unwrap(), object, "the old object is left as it was");

    let manifest = out_dir.join("s.manifest.json");
    let pins = rig.pins.to_str().unwrap();
    let out = rig.apply_file(&manifest, pins);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("stale"), "{}", text(&out));
    assert!(!rig.pins.exists(), "nothing was loaded or pinned");

    // Both rebuilt: the new program is what gets loaded.
    let out = rig.devmapc(&["build", "-o", out_str, spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = rig.apply_file(&manifest, pins);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = rig.devmapc(&["status", pins, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = devmapc::builder::object_digest(&std::fs::read(out_dir.join("s.bpf.o")).unwrap());
    assert_eq!(status["object_sha256"], digest.as_str(), "status names the object that runs");
}

/// `build`, then the manifest's code part edited by hand (`key.mix`,
/// `on_miss`), its `object_sha256` untouched: `apply` and `apply --dry-run`
/// refuse before loading; nothing is pinned.
#[test]
fn a_hand_edited_code_part_is_refused_by_apply_and_dry_run() {
    require_privileged!();
    let rig = Rig::new();
    let spec = rig.spec();
    let out_dir = rig.dir.path().join("out");
    let out = rig.devmapc(&["build", "-o", out_dir.to_str().unwrap(), spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let manifest = out_dir.join("hostile.manifest.json");
    let built = std::fs::read_to_string(&manifest).unwrap();
    let pins = rig.pins.to_str().unwrap();
    for (pointer, value) in [("/ir/code/key/mix", "none"), ("/ir/code/on_miss", "drop")] {
        let mut doc: serde_json::Value = serde_json::from_str(&built).unwrap();
        let at = doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} in {built}"));
        assert_ne!(*at, value, "{pointer}: an edit");
        *at = value.into();
        std::fs::write(&manifest, doc.to_string()).unwrap();
        for extra in [&[][..], &["--dry-run"][..]] {
            let mut args = vec!["apply", manifest.to_str().unwrap(), "--pin-dir", pins, "--allow-not-ready"];
            args.extend(extra);
            let out = rig.devmapc(&args);
            assert_eq!(out.status.code(), Some(2), "{pointer} {extra:?}: {}", text(&out));
            assert!(text(&out).contains("code part was changed after the build"), "{}", text(&out));
            assert!(!rig.pins.exists(), "nothing was loaded or pinned");
        }
    }
}

/// A map pin removed by hand: `status` reports drift (exit 1), not an
/// error (exit 2); `apply` repairs it.
#[test]
fn a_hand_deleted_map_pin_is_drift_for_status() {
    require_privileged!();
    let rig = Rig::new();
    let pins = rig.pins.to_str().unwrap().to_string();
    let out = rig.apply(&pins, &["--allow-not-ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_file(rig.pins.join("maps/devmapc_routes")).unwrap();
    let out = rig.devmapc(&["status", &pins]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("map devmapc_routes: its pin is gone"), "{}", text(&out));
    let out = rig.apply(&pins, &["--allow-not-ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = rig.devmapc(&["status", &pins]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A deployment without an ownership record (as an older devmapc left it,
/// or with its record removed by hand): neither `apply` nor `detach`
/// guesses which of its pins are devmapc's; both refuse and change nothing.
#[test]
fn a_deployment_without_its_ownership_record_is_left_alone() {
    require_privileged!();
    let rig = Rig::new();
    let pins = rig.pins.to_str().unwrap().to_string();
    let out = rig.apply(&pins, &["--allow-not-ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_file(rig.pins.join("owned")).unwrap();
    let before = entries(&rig.pins);

    let out = rig.devmapc(&["detach", &pins]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(entries(&rig.pins), before, "detach removed nothing");
    let out = rig.apply(&pins, &["--allow-not-ready"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(entries(&rig.pins), before, "apply changed nothing");
}

/// Every path under `dir`, sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            all.push(e.path());
        }
    }
    all.sort();
    all
}

/// A route key written with 70,000 leading zeros is a valid spec; `status`
/// aligns keys in a column of bounded width instead of panicking on it.
#[test]
fn status_of_a_route_written_very_long_does_not_panic() {
    require_privileged!();
    let rig = Rig::new();
    let spec = rig.dir.path().join("long.devmap");
    let long_key = format!("{}20", "0".repeat(70_000));
    std::fs::write(
        &spec,
        format!(
            "table {{ key = vlan.id }}\ndevice a {{ ifname = \"hda\" }}\ndevice b {{ ifname = \"hdb\" }}\n\
             ingress {{ on = [a], mode = generic }}\nroute {long_key} -> b\n"
        ),
    )
    .unwrap();
    let pins = rig.pins.to_str().unwrap();
    let out = rig.devmapc(&["apply", spec.to_str().unwrap(), "--pin-dir", pins, "--allow-not-ready"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = rig.devmapc(&["status", pins]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("20 → b"), "{}", text(&out));
}
