//! Hostile pin directories: symlinks planted inside a deployment's pin
//! directory (`next`, `links/<dev>`, `maps`, `progs`, `links`, the marker)
//! that lead into another, real deployment; another's objects pinned into
//! it; a stale object under a fresh manifest, or a hand-edited code part;
//! a link detached behind devmapc's back; and the rough edges of
//! interrupted or damaged deployments. Whatever apply, status or detach does to the deployment
//! under attack, the other one keeps every pin and stays attached.
//!
//! Each deployment lives in a namespace of its own with veths `hpa`/`phpa`
//! and `hpb`/`phpb`, in generic mode, pinned under
//! `/sys/fs/bpf/devmapc-test-<pid>-<n>`.

use devmapc::ir::{names, Ir};
use devmapc_runtime::apply::{self, Kind, Options, Report};
use devmapc_runtime::deploy::{self, DeployError};
use devmapc_runtime::pins::{obj_id, DirFd, Entry};
use devmapc_runtime::status;
use devmapc_testkit::netns::Netns;
use devmapc_testkit::pins::PinDir;
use devmapc_testkit::require_privileged;
use libbpf_rs::libbpf_sys;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn spec(on_miss: &str, routes: &str) -> String {
    format!(
        "table {{ key = ipv4.dst, on_miss = {on_miss} }}
device a {{ ifname = \"hpa\" }}
device b {{ ifname = \"hpb\" }}
ingress {{ on = [a], mode = generic }}
{routes}
"
    )
}

struct Build {
    obj: PathBuf,
    ir: Ir,
    dir: tempfile::TempDir,
}

fn build(text: &str) -> Build {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.devmap");
    std::fs::write(&path, text).unwrap();
    let outputs = devmapc::Builder::new(&path).out_dir(dir.path()).build().unwrap_or_else(|e| panic!("{e}"));
    let (obj, ir) = deploy::read_manifest_file(&outputs.manifest.unwrap()).unwrap_or_else(|e| panic!("{e}"));
    Build { obj, ir, dir }
}

/// A namespace with the spec's devices and a deployment applied in it.
struct Deployment {
    ns: Netns,
    pins: PinDir,
    build: Build,
}

impl Deployment {
    fn new() -> Deployment {
        Deployment::with(&spec("pass", "route 10.0.0.2 -> b"))
    }

    fn with(text: &str) -> Deployment {
        let ns = Netns::new().unwrap();
        ns.veth("hpa", "phpa").unwrap();
        ns.veth("hpb", "phpb").unwrap();
        let d = Deployment { ns, pins: PinDir::new(), build: build(text) };
        let report = d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.kind, Kind::First, "{report}");
        d
    }

    fn apply(&self, b: &Build) -> Result<Report, DeployError> {
        self.apply_to(&self.pins, b)
    }

    fn apply_to(&self, dir: &Path, b: &Build) -> Result<Report, DeployError> {
        let mut opts = Options::new(dir);
        // The far ends run nothing: frames to them would be dropped, which
        // these tests do not look at.
        opts.allow_not_ready = true;
        self.ns.enter(|| apply::apply(&b.obj, &b.ir, &opts))
    }

    fn status(&self) -> Result<status::Status, DeployError> {
        self.ns.enter(|| status::status(&self.pins))
    }

    /// The XDP program the kernel runs on `hpa`, in generic mode.
    fn xdp_prog(&self) -> Option<u32> {
        self.ns.enter(|| devmapc_runtime::netdev::by_index(ifindex(&self.ns, "hpa")).unwrap().xdp.generic)
    }

    /// Everything pinned, by path, with the object ids: what must not
    /// change when another deployment is attacked.
    fn snapshot(&self) -> Vec<(String, Option<u32>)> {
        let mut out = Vec::new();
        walk(&DirFd::open(&self.pins).unwrap(), "", &mut out);
        assert!(out.iter().any(|(p, _)| p == "links/hpa"), "{out:?}");
        out
    }

    /// Every pin as it was, the link attached, its program running, status
    /// clean.
    fn assert_intact(&self, before: &[(String, Option<u32>)]) {
        assert_eq!(self.snapshot(), before, "the other deployment's pins");
        let s = self.status().unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.needs_attention(), "{s}");
        let link = s.links[0].link.expect("the link is readable");
        assert_ne!(link.ifindex, 0, "still attached: {s}");
        assert_eq!(self.xdp_prog(), Some(link.prog_id), "the device runs it");
    }

    fn pin_path(&self, rel: &str) -> PathBuf {
        self.pins.join(rel)
    }
}

fn ifindex(ns: &Netns, dev: &str) -> u32 {
    let name = CString::new(dev).unwrap();
    // SAFETY: a valid C string.
    ns.enter(|| unsafe { libc::if_nametoindex(name.as_ptr()) })
}

fn walk(dir: &DirFd, prefix: &str, out: &mut Vec<(String, Option<u32>)>) {
    for name in dir.names().unwrap() {
        let rel = format!("{prefix}{name}");
        match dir.entry(&name) {
            Entry::Dir => walk(&dir.sub(&name).unwrap().unwrap(), &format!("{rel}/"), out),
            Entry::Pin => {
                let id = dir.get(&name).ok().map(|fd| obj_id(fd.as_fd()).unwrap().id);
                out.push((rel, id));
            }
            _ => out.push((rel, None)),
        }
    }
}

fn open_pin(path: &Path) -> OwnedFd {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; the fd is ours.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) };
    assert!(fd >= 0, "bpf_obj_get {}: {}", path.display(), -fd);
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Pins the object pinned at `from` at `to` as well, as `bpftool map pin
/// id N` would.
fn pin_again(from: &Path, to: &Path) {
    let fd = open_pin(from);
    let c = CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid fd and C string.
    let rc = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    assert_eq!(rc, 0, "pin {}", to.display());
}

fn symlink(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// A change of code: the apply must stage under `next/`.
fn code_change() -> Build {
    build(&spec("drop", "route 10.0.0.2 -> b"))
}

/// A change of routes only: a data change.
fn data_change() -> Build {
    build(&spec("pass", "route 10.0.0.2 -> b\nroute 10.0.0.3 -> b"))
}

#[test]
fn a_next_symlink_into_another_deployment_is_never_followed() {
    require_privileged!();
    let victim = Deployment::new();
    let before = victim.snapshot();
    let target = Deployment::new();
    symlink(&victim.pins, &target.pin_path(apply::NEXT));

    let err = target.apply(&code_change()).unwrap_err();
    assert!(matches!(err, DeployError::Foreign { .. }), "{err}");
    assert!(err.to_string().contains("/next"), "{err}");
    victim.assert_intact(&before);

    let err = target.ns.enter(|| deploy::detach(&target.pins)).unwrap_err();
    assert!(err.to_string().contains("next"), "{err}");
    victim.assert_intact(&before);
    assert_eq!(
        DirFd::open(&target.pins).unwrap().entry(apply::NEXT),
        Entry::Symlink,
        "the planted symlink is left for its owner"
    );

    // Once it is gone, the deployment under attack detaches as usual.
    std::fs::remove_file(target.pin_path(apply::NEXT)).unwrap();
    target.ns.enter(|| deploy::detach(&target.pins)).unwrap_or_else(|e| panic!("{e}"));
    victim.assert_intact(&before);
}

#[test]
fn a_link_symlink_into_another_deployment_is_neither_shown_nor_detached() {
    require_privileged!();
    let victim = Deployment::new();
    let before = victim.snapshot();
    let target = Deployment::new();
    // `hpb` is not in `ingress.on`: an apply would detach a link found
    // there as no longer wanted.
    symlink(&victim.pin_path("links/hpa"), &target.pin_path("links/hpb"));

    let err = target.status().unwrap_err();
    assert!(err.to_string().contains("links/hpb"), "status shows no foreign link: {err}");
    let err = target.apply(&data_change()).unwrap_err();
    assert!(err.to_string().contains("links/hpb"), "{err}");
    victim.assert_intact(&before);
    let err = target.ns.enter(|| deploy::detach(&target.pins)).unwrap_err();
    assert!(err.to_string().contains("links/hpb"), "{err}");
    victim.assert_intact(&before);
    // Its own link was detached all the same.
    assert_eq!(target.xdp_prog(), None);
}

#[test]
fn planted_maps_progs_links_and_marker_symlinks_are_never_followed() {
    require_privileged!();
    let victim = Deployment::new();
    let before = victim.snapshot();
    let other = Deployment::new();
    // A directory that looks like an interrupted first apply: the marker,
    // and every sub-directory a symlink into the victim.
    let planted = PinDir::new();
    std::fs::create_dir(&*planted).unwrap();
    symlink(Path::new("pin-directory-of-a-devmapc-deployment"), &planted.join(apply::MARKER));
    for sub in ["maps", "progs", "links"] {
        symlink(&victim.pin_path(sub), &planted.join(sub));
    }
    let err = other.ns.enter(|| deploy::detach(&planted)).unwrap_err();
    assert!(matches!(err, DeployError::NotDeployed { .. }), "{err}");
    assert!(err.to_string().contains("nothing was removed"), "{err}");
    victim.assert_intact(&before);
    let err = other.apply_to(&planted, &other.build).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    victim.assert_intact(&before);
    for sub in ["maps", "progs", "links"] {
        assert_eq!(DirFd::open(&planted).unwrap().entry(sub), Entry::Symlink, "{sub} left");
    }

    // The pin directory itself a symlink to the victim: refused.
    let link_dir = PinDir::new();
    symlink(&victim.pins, &link_dir);
    let err = other.ns.enter(|| deploy::detach(&link_dir)).unwrap_err();
    assert!(matches!(err, DeployError::Foreign { .. }), "{err}");
    let err = other.apply_to(&link_dir, &other.build).unwrap_err();
    assert!(matches!(err, DeployError::Foreign { .. }), "{err}");
    victim.assert_intact(&before);
    std::fs::remove_file(&*link_dir).unwrap();

    // A marker that is a symlink to the victim does not make a directory
    // devmapc's: it is read, never followed.
    let marked = PinDir::new();
    std::fs::create_dir(&*marked).unwrap();
    symlink(&victim.pins, &marked.join(apply::MARKER));
    pin_again(&victim.pin_path("links/hpa"), &marked.join("hpa"));
    let err = other.ns.enter(|| deploy::detach(&marked)).unwrap_err();
    assert!(matches!(err, DeployError::NotDeployed { .. }), "{err}");
    victim.assert_intact(&before);
    assert!(marked.join("hpa").exists());
}

#[test]
fn objects_of_another_deployment_pinned_inside_are_left_and_never_detached() {
    require_privileged!();
    let victim = Deployment::new();
    let before = victim.snapshot();
    let target = Deployment::new();
    // Hard pins, as `bpftool link pin id N` and `bpftool map pin id N`
    // make them: the very objects, not symlinks.
    pin_again(&victim.pin_path("links/hpa"), &target.pin_path("links/hpb"));
    let routes = deploy::pin_name(std::ffi::OsStr::new(names::ROUTES));
    pin_again(&victim.pin_path(&format!("maps/{routes}")), &target.pin_path("maps/extra"));
    let victim_routes = victim.snapshot();

    let err = target.apply(&data_change()).unwrap_err();
    assert!(matches!(err, DeployError::Foreign { .. }), "{err}");
    victim.assert_intact(&victim_routes);
    let err = target.ns.enter(|| deploy::detach(&target.pins)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("links/hpb") && text.contains("maps/extra"), "{text}");
    victim.assert_intact(&before);
    assert!(target.pin_path("links/hpb").exists() && target.pin_path("maps/extra").exists());
}

#[test]
fn a_stale_object_under_a_fresh_manifest_is_refused_before_loading() {
    require_privileged!();
    let old = build(&spec("pass", "route 10.0.0.2 -> b"));
    let new = build(&spec("drop", "route 10.0.0.2 -> b"));
    let manifest = new.dir.path().join("hostile.manifest.json");
    std::fs::copy(&old.obj, &new.obj).unwrap();

    let err = deploy::read_manifest_file(&manifest).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&new.obj.display().to_string()) && text.contains(&manifest.display().to_string()),
        "names both files: {text}"
    );
    assert!(text.contains("stale"), "{text}");
    // Loading through the library: the manifest beside the object is
    // checked against the bytes loaded.
    let err = deploy::load(&new.obj, &new.ir).unwrap_err();
    assert!(err.to_string().contains("is not the object"), "{err}");

    // A manifest without a digest (an older devmapc's): refused, with a
    // rebuild asked for.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc.as_object_mut().unwrap().remove("object_sha256");
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let err = deploy::read_manifest_file(&manifest).unwrap_err();
    assert!(err.to_string().contains("rebuild"), "{err}");

    // The object a manifest names is a file beside it, never a path.
    doc["object"] = "../../etc/passwd".into();
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let err = deploy::read_manifest_file(&manifest).unwrap_err();
    assert!(err.to_string().contains("beside it"), "{err}");

    // The status of a deployment names the object it runs.
    let d = Deployment::new();
    let s = d.status().unwrap();
    let digest = devmapc::builder::object_digest(&std::fs::read(&d.build.obj).unwrap());
    assert_eq!(s.object_sha256.as_deref(), Some(digest.as_str()));
}

/// A manifest whose code part was edited by hand after the build (the key
/// no longer mixed, the miss action changed), `object_sha256` untouched:
/// the object does not do what it says. Refused before anything is loaded.
#[test]
fn a_hand_edited_code_part_is_refused_before_loading() {
    require_privileged!();
    let b = build(&spec("pass", "route 10.0.0.2 -> b"));
    let manifest = b.dir.path().join("hostile.manifest.json");
    let built = std::fs::read_to_string(&manifest).unwrap();
    let edits: [(&str, &str, serde_json::Value); 2] =
        [("key", "mix", "none".into()), ("on_miss", "", "drop".into())];
    for (field, sub, value) in edits {
        let mut doc: serde_json::Value = serde_json::from_str(&built).unwrap();
        let at = &mut doc["ir"]["code"][field];
        if sub.is_empty() {
            *at = value
        } else {
            at[sub] = value
        }
        std::fs::write(&manifest, doc.to_string()).unwrap();
        let err = deploy::read_manifest_file(&manifest).unwrap_err();
        assert!(err.to_string().contains("code part was changed after the build"), "{field}: {err}");
        let edited: Ir = serde_json::from_value(doc["ir"].clone()).unwrap();
        let err = deploy::load(&b.obj, &edited).unwrap_err();
        assert!(err.to_string().contains("code part was changed"), "{field}: {err}");
    }
    // A manifest without the binding (an older devmapc's): refused too.
    let mut doc: serde_json::Value = serde_json::from_str(&built).unwrap();
    doc.as_object_mut().unwrap().remove("code_sha256");
    std::fs::write(&manifest, doc.to_string()).unwrap();
    let err = deploy::read_manifest_file(&manifest).unwrap_err();
    assert!(err.to_string().contains("no `code_sha256`"), "{err}");

    // The manifests the runtime makes itself (routes changed in memory,
    // not in the build's file) carry a correct binding.
    let d = Deployment::new();
    let mut moved = d.build.ir.clone();
    moved.data.routes.truncate(0);
    let changed = Build { obj: d.build.obj.clone(), ir: moved, dir: tempfile::tempdir().unwrap() };
    d.apply(&changed).unwrap_or_else(|e| panic!("{e}"));
    let pinned = devmapc::manifest::parse(&deploy::read_manifest(&d.pins).unwrap()).unwrap();
    assert!(pinned.ir.data.routes.is_empty(), "the re-made manifest is pinned");
    assert_eq!(pinned.code_is_bound(), Some(true));
}

#[test]
fn a_link_detached_behind_devmapcs_back_is_drift_and_apply_reattaches() {
    require_privileged!();
    let d = Deployment::new();
    // What `bpftool link detach id N` does.
    let link = open_pin(&d.pin_path("links/hpa"));
    // SAFETY: a valid link fd.
    assert_eq!(unsafe { libbpf_sys::bpf_link_detach(link.as_raw_fd()) }, 0);
    drop(link);
    assert_eq!(d.xdp_prog(), None);

    let s = d.status().unwrap();
    assert!(s.needs_attention(), "{s}");
    let text = s.to_string();
    assert!(text.contains("still there"), "not `the device went away`: {text}");
    assert!(!text.contains("drift: none"), "{text}");
    assert!(!s.link_drift.is_empty());

    let report = d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.links.iter().any(|l| matches!(l, apply::LinkChange::Reattached { .. })), "{report}");
    let s = d.status().unwrap();
    assert!(!s.needs_attention(), "{s}");
    assert_eq!(d.xdp_prog(), s.links[0].link.map(|l| l.prog_id));
}

/// The link detached, then another program attached to the device by hand
/// (`ip link set dev hpa xdpgeneric pinned ...`): status names it and says
/// apply refuses until it is removed, not that apply repairs it.
#[test]
fn a_foreign_program_on_a_detached_device_is_named_by_status() {
    require_privileged!();
    let d = Deployment::new();
    let other = Deployment::new();
    let link = open_pin(&d.pin_path("links/hpa"));
    // SAFETY: a valid link fd.
    assert_eq!(unsafe { libbpf_sys::bpf_link_detach(link.as_raw_fd()) }, 0);
    let prog = open_pin(&other.pin_path(&format!("progs/{}", names::INGRESS)));
    let hpa = ifindex(&d.ns, "hpa") as i32;
    // SAFETY: a valid program fd; no options.
    let rc = d.ns.enter(|| unsafe {
        libbpf_sys::bpf_xdp_attach(hpa, prog.as_raw_fd(), libbpf_sys::XDP_FLAGS_SKB_MODE, std::ptr::null())
    });
    assert_eq!(rc, 0, "attach the foreign program");
    let foreign_id = d.xdp_prog().expect("the foreign program runs");

    let s = d.status().unwrap_or_else(|e| panic!("{e}"));
    assert!(s.needs_attention(), "{s}");
    let text = s.to_string();
    assert!(
        text.contains(&format!("another XDP program is attached to hpa (program id {foreign_id}")),
        "{text}"
    );
    assert!(text.contains("refuses until it is removed"), "{text}");
    let hpa_line = text.lines().find(|l| l.trim_start().starts_with("hpa ")).expect("the link's line");
    assert!(!hpa_line.contains("repairs it"), "{hpa_line}");
    assert_eq!(s.foreign_xdp.len(), 1, "{s}");
    // And apply does refuse.
    let err = d.apply(&d.build).unwrap_err();
    assert!(err.to_string().contains(&format!("program id {foreign_id}")), "{err}");
}

/// Another deployment's ownership record pinned as this one's: status
/// says the record belongs to another directory and nothing is touched, as
/// apply and detach do, never that an interrupted apply is to be repaired.
#[test]
fn a_foreign_ownership_record_is_not_called_an_interrupted_apply() {
    require_privileged!();
    let d = Deployment::new();
    let other = Deployment::new();
    let before = other.snapshot();
    std::fs::remove_file(d.pin_path(devmapc_runtime::pins::OWNED)).unwrap();
    pin_again(&other.pin_path(devmapc_runtime::pins::OWNED), &d.pin_path(devmapc_runtime::pins::OWNED));

    let err = d.status().unwrap_err().to_string();
    assert!(err.contains("made for another directory") && err.contains("nothing in it is touched"), "{err}");
    assert!(!err.contains("interrupted") && !err.contains("repairs"), "{err}");
    let err = d.apply(&d.build).unwrap_err().to_string();
    assert!(err.contains("made for another directory"), "{err}");
    let err = d.ns.enter(|| deploy::detach(&d.pins)).unwrap_err().to_string();
    assert!(err.contains("made for another directory"), "{err}");
    other.assert_intact(&before);
}

#[test]
fn a_link_that_runs_another_program_is_drift() {
    require_privileged!();
    let d = Deployment::new();
    let other = Deployment::new();
    // The link's program swapped for another deployment's, by hand.
    let prog = open_pin(&other.pin_path(&format!("progs/{}", names::INGRESS)));
    deploy::swap(&d.pin_path("links/hpa"), prog.as_fd()).unwrap();
    let s = d.status().unwrap();
    assert!(s.needs_attention(), "{s}");
    assert!(s.to_string().contains("not this deployment's ingress program"), "{s}");
    d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
    assert!(!d.status().unwrap().needs_attention());
}

#[test]
fn an_interrupted_first_apply_is_described_by_status_and_repaired_by_apply() {
    require_privileged!();
    let d = Deployment::new();
    // What a first apply killed before it committed leaves: pins, no
    // manifest.
    std::fs::remove_file(d.pin_path(deploy::MANIFEST_PIN)).unwrap();
    let err = d.status().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("interrupted") && text.contains("links"), "{text}");
    assert!(text.contains("`devmapc apply` repairs") && text.contains("`devmapc detach`"), "{text}");
    let listed = text.split_once("pins are there (").and_then(|(_, rest)| rest.split_once(')')).unwrap().0;
    assert!(!listed.split(", ").any(|name| name == deploy::MANIFEST_PIN), "{text}");
    let report = d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::First, "{report}");
    assert!(!report.repaired.is_empty(), "{report}");
    assert!(!d.status().unwrap().needs_attention());
}

#[test]
fn a_hand_deleted_map_pin_is_drift_and_repaired_by_the_next_apply() {
    require_privileged!();
    let d = Deployment::new();
    let routes = deploy::pin_name(std::ffi::OsStr::new(names::ROUTES));
    std::fs::remove_file(d.pin_path(&format!("maps/{routes}"))).unwrap();
    // Status reports it as drift (exit 1), not as an error.
    let s = d.status().unwrap_or_else(|e| panic!("status: {e}"));
    assert!(s.needs_attention(), "{s}");
    assert_eq!(s.missing_maps, [names::ROUTES], "{s}");
    let text = s.to_string();
    assert!(text.contains("its pin is gone") && text.contains("`devmapc apply` repairs it"), "{text}");
    assert!(!text.contains("drift: none"), "{text}");
    let report = d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::Code, "{report}");
    assert!(report.repaired.iter().any(|r| r.contains(names::ROUTES)), "{report}");
    assert!(d.pin_path(&format!("maps/{routes}")).exists());
    let s = d.status().unwrap();
    assert!(!s.needs_attention(), "{s}");
}

#[test]
fn a_hand_deleted_maps_directory_is_drift_and_repaired_by_the_next_apply() {
    require_privileged!();
    let d = Deployment::new();
    std::fs::remove_dir_all(d.pin_path("maps")).unwrap();
    // Every map is missing: drift (exit 1), not a failed read-back.
    let s = d.status().unwrap_or_else(|e| panic!("status: {e}"));
    assert!(s.needs_attention(), "{s}");
    assert!(s.missing_maps.iter().any(|m| m == names::ROUTES), "{s}");
    assert!(s.to_string().contains("`devmapc apply` repairs it"), "{s}");
    let report = d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.kind, Kind::Code, "{report}");
    let routes = deploy::pin_name(std::ffi::OsStr::new(names::ROUTES));
    assert!(d.pin_path(&format!("maps/{routes}")).exists());
    let s = d.status().unwrap();
    assert!(!s.needs_attention(), "{s}");
    assert_eq!(d.xdp_prog(), s.links[0].link.map(|l| l.prog_id), "the new program runs");
}

/// A deployment of `hostile_pins`' devices where `b` has an egress program.
fn with_egress() -> Deployment {
    Deployment::with(
        "table { key = ipv4.dst, on_miss = pass }
device a { ifname = \"hpa\" }
device b { ifname = \"hpb\", egress = stamp() }
egress stamp() {
    eth.src = egress.mac
}
ingress { on = [a], mode = generic }
route 10.0.0.2 -> b
",
    )
}

/// Removes the pin `rel` by hand, then: status reports the program pin
/// gone (exit 1) and no route as map drift; apply reloads the programs,
/// after which status is clean and the device runs the new ingress program.
fn program_pin_removed_is_repaired(d: &Deployment, rel: &str, gone: &str) {
    let path = d.pin_path(rel);
    if path.is_dir() {
        std::fs::remove_dir_all(&path).unwrap();
    } else {
        std::fs::remove_file(&path).unwrap();
    }
    let s = d.status().unwrap_or_else(|e| panic!("status after removing {rel}: {e}"));
    assert!(s.needs_attention(), "{s}");
    assert!(s.missing_progs.iter().any(|p| p == gone), "{rel}: {s}");
    assert!(s.routes.iter().all(|r| !r.drift), "{rel}: no map drift: {s}");
    let text = s.to_string();
    assert!(text.contains(&format!("program {gone}: its pin is gone")), "{text}");
    let report = d.apply(&d.build).unwrap_or_else(|e| panic!("apply after removing {rel}: {e}"));
    assert_eq!(report.kind, Kind::Code, "{report}");
    assert!(report.repaired.iter().any(|r| r.contains(gone)), "{report}");
    let s = d.status().unwrap();
    assert!(!s.needs_attention(), "{s}");
    assert_eq!(d.xdp_prog(), s.links[0].link.map(|l| l.prog_id), "the reloaded program runs");
}

#[test]
fn a_hand_deleted_ingress_program_pin_is_repaired_by_the_next_apply() {
    require_privileged!();
    let d = Deployment::new();
    program_pin_removed_is_repaired(&d, &format!("progs/{}", names::INGRESS), names::INGRESS);
}

#[test]
fn a_hand_deleted_egress_program_pin_is_not_map_drift_and_is_repaired() {
    require_privileged!();
    let d = with_egress();
    let egress = d.build.ir.code.programs[0].section_program.clone();
    program_pin_removed_is_repaired(&d, &format!("progs/{egress}"), &egress);
}

#[test]
fn a_hand_deleted_progs_directory_is_repaired_while_the_program_still_runs() {
    require_privileged!();
    let d = with_egress();
    program_pin_removed_is_repaired(&d, "progs", names::INGRESS);
}

#[test]
fn hand_deleted_records_are_reported_and_restored_by_the_next_apply() {
    require_privileged!();
    let d = Deployment::new();
    let netns = std::fs::read_link(d.pin_path(apply::NETNS)).unwrap();
    for record in [apply::DEVICES, apply::NETNS, apply::MARKER] {
        std::fs::remove_file(d.pin_path(record)).unwrap();
    }
    let s = d.status().unwrap_or_else(|e| panic!("status: {e}"));
    assert!(s.needs_attention(), "{s}");
    assert_eq!(s.missing_records, [apply::MARKER, apply::NETNS, apply::DEVICES], "{s}");
    assert!(s.to_string().contains("`devmapc apply` restores it"), "{s}");
    let report = d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.repaired.len(), 3, "{report}");
    assert_eq!(std::fs::read_link(d.pin_path(apply::NETNS)).unwrap(), netns);
    assert!(apply::is_ours(&d.pins));
    assert!(d.pin_path(apply::DEVICES).exists());
    let s = d.status().unwrap();
    assert!(!s.needs_attention(), "{s}");
}

#[test]
fn a_deleted_namespace_record_is_not_re_recorded_from_another_namespace() {
    require_privileged!();
    let d = Deployment::new();
    std::fs::remove_file(d.pin_path(apply::NETNS)).unwrap();
    // Another namespace with devices of the same names (and, both being
    // fresh, the same ifindexes), which run no XDP program.
    let other = Netns::new().unwrap();
    other.veth("hpa", "phpa").unwrap();
    other.veth("hpb", "phpb").unwrap();
    let mut opts = Options::new(&*d.pins);
    opts.allow_not_ready = true;
    let err = other.enter(|| apply::apply(&d.build.obj, &d.build.ir, &opts)).unwrap_err().to_string();
    assert!(err.contains("network namespace") && err.contains("is gone"), "{err}");
    assert!(!d.pin_path(apply::NETNS).exists(), "nothing recorded");
    // From its own namespace, it is restored.
    d.apply(&d.build).unwrap_or_else(|e| panic!("{e}"));
    assert!(!d.status().unwrap().needs_attention());
}

#[test]
fn detach_leaves_an_empty_directory_devmapc_did_not_make() {
    require_privileged!();
    let dir = PinDir::new();
    std::fs::create_dir(&*dir).unwrap();
    let err = deploy::detach(&dir).unwrap_err();
    assert!(matches!(err, DeployError::NotDeployed { .. }), "{err}");
    assert!(dir.is_dir(), "left in place");
}

#[test]
fn a_pin_dir_off_bpffs_gets_the_right_explanation() {
    require_privileged!();
    let tmp = tempfile::tempdir().unwrap();
    let err = deploy::pin_dir_ready(&tmp.path().join("x")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DeployError::NotBpffs { .. }), "{err}");
    assert!(!text.contains("ip netns exec"), "{text}");
    assert!(text.contains("mount -t bpf"), "{text}");
}

/// `detach` of a directory off bpffs: nothing of devmapc's can be there,
/// and the error says so, not that pins cannot be made there.
#[test]
fn detach_off_bpffs_says_nothing_can_be_deployed_there() {
    require_privileged!();
    let tmp = tempfile::tempdir().unwrap();
    for dir in [tmp.path().to_path_buf(), tmp.path().join("absent")] {
        for err in [deploy::detach(&dir).unwrap_err(), apply::Lock::acquire_existing(&dir).unwrap_err()] {
            let text = err.to_string();
            assert!(matches!(err, DeployError::NotDeployed { .. }), "{err}");
            assert!(!text.contains("cannot pin"), "{text}");
            assert!(
                text.contains("not on a bpffs") && text.contains("nothing of devmapc's can be there"),
                "{text}"
            );
        }
    }
    assert!(tmp.path().is_dir(), "left in place");
}

#[test]
fn a_record_replacement_cut_short_does_not_block_detach() {
    require_privileged!();
    let d = Deployment::new();
    // What a kill between pinning a new ownership record and renaming it
    // over the old one leaves.
    let next = d.pin_path(devmapc_runtime::pins::OWNED_NEXT);
    let out = std::process::Command::new("bpftool")
        .args(["map", "create", next.to_str().unwrap(), "type", "array"])
        .args(["key", "4", "value", "24", "entries", "1", "name", "devmapc_owned"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let detached = d.ns.enter(|| deploy::detach(&d.pins)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(detached.links.len(), 1);
    assert!(!d.pins.exists());
}
