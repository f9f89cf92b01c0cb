//! A build embedded as bytes, driven through `embed::Deployment` against
//! the real kernel: applied in a namespace of its own, one route changed
//! (exactly that entry changes in the kernel), one added and removed,
//! counters read, re-opened by another value, detached with nothing left.

use devmapc::ir::names;
use devmapc_runtime::apply::{Kind, Pinned};
use devmapc_runtime::embed::{self, Const, DeployError, KeyValue, Options, TargetRef};
use devmapc_runtime::plan::{self, Op, State};
use devmapc_testkit::netns::Netns;
use devmapc_testkit::require_privileged;
use std::path::{Path, PathBuf};

const SPEC: &str = "
table { key = vlan.id, on_miss = drop }
device a { ifname = \"emba\" }
device b { ifname = \"embb\" }
device c { ifname = \"embc\" }
ingress { on = [a], mode = generic }
route 10 -> b
route 20 -> c
";

/// The build's object and manifest, as a program embeds them.
fn build(dir: &Path) -> (Vec<u8>, String) {
    let spec = dir.join("emb.devmap");
    std::fs::write(&spec, SPEC).unwrap();
    let out = devmapc::Builder::new(&spec)
        .out_dir(dir)
        .emit(devmapc::Emit::parse("obj,manifest").unwrap())
        .build()
        .unwrap();
    let object = std::fs::read(out.obj.unwrap()).unwrap();
    let manifest = std::fs::read_to_string(out.manifest.unwrap()).unwrap();
    (object, manifest)
}

/// A pin directory of its own, removed on drop.
struct PinDir(PathBuf);

/// The build as bytes, a namespace with the spec's three devices, a pin
/// directory `devmapc-test-PID-LABEL` and options to apply there.
struct Setup {
    object: Vec<u8>,
    manifest: String,
    ns: Netns,
    pins: PinDir,
    options: Options,
}

fn setup(label: &str) -> Setup {
    let build_dir = tempfile::tempdir().unwrap();
    let (object, manifest) = build(build_dir.path());
    drop(build_dir);
    let ns = Netns::new().unwrap();
    for dev in ["emba", "embb", "embc"] {
        ns.veth(dev, &format!("p{dev}")).unwrap();
    }
    let pins = PinDir(PathBuf::from(format!("/sys/fs/bpf/devmapc-test-{}-{label}", std::process::id())));
    let mut options = Options::new(&pins.0);
    options.make_ready = true;
    Setup { object, manifest, ns, pins, options }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tests of this file run one at a time: one of them checks that
/// deployments leave no temporary directory of this process behind.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn kernel_state(dir: &Path, engine: &embed::Deployment) -> State {
    plan::read_state(&Pinned::open(dir).unwrap(), engine.ir()).unwrap()
}

fn vlan(n: u64) -> KeyValue {
    KeyValue::Const(Const::Uint(n))
}

#[test]
fn set_route_changes_exactly_that_entry_and_detach_leaves_nothing() {
    require_privileged!();
    let _serial = serial();
    let Setup { object, manifest, ns, pins, options } = setup("embed");
    let dir = pins.0.clone();
    // The private directories the values kept their files in.
    let mut scratch = Vec::new();

    ns.enter(|| {
        let mut engine = embed::Deployment::apply(&object, &manifest, options.clone()).unwrap();
        scratch.push(engine.scratch_dir().to_path_buf());
        assert_eq!(engine.report().unwrap().kind, Kind::First);
        assert!(dir.join("manifest").exists());
        let before = kernel_state(&dir, &engine);

        // 10 -> c: one entry of devmapc_routes changes, nothing else.
        let report = engine.set_route(vlan(10), TargetRef::Device(2)).unwrap();
        assert_eq!(report.kind, Kind::Data, "{report}");
        assert_eq!(report.plan.ops.len(), 1, "{report}");
        let after = kernel_state(&dir, &engine);
        let changed = plan::diff(&before, &after);
        assert_eq!(changed.ops.len(), 1, "{changed:?}");
        let op = &changed.ops[0];
        assert_eq!(op.map, names::ROUTES);
        assert_eq!(op.key, devmapc::ir::fmix32(10).to_ne_bytes(), "VLAN 10, mixed");
        assert!(matches!(op.op, Op::Replace { .. }), "{op:?}");
        // The pinned manifest holds the change, with the build's code hash.
        let status = engine.status().unwrap();
        let route = status.routes.iter().find(|r| r.key == "10").unwrap();
        assert_eq!(route.target, "c");
        assert!(status.drift.is_empty(), "{:?}", status.drift);
        assert_eq!(status.code_hash, devmapc_runtime::deploy::manifest_hashes(&manifest).unwrap().0);

        // A new route and its removal: the key and its counter each time.
        let report = engine.set_route(vlan(30), TargetRef::Device(1)).unwrap();
        assert_eq!(report.plan.ops.len(), 2, "{report}");
        assert!(engine.routes().iter().any(|r| r.text == "30" && r.line == 0));
        let report = engine.remove_route(&vlan(30)).unwrap();
        assert_eq!(report.plan.ops.len(), 2, "{report}");
        assert_eq!(plan::diff(&after, &kernel_state(&dir, &engine)).ops.len(), 0);

        // Keys and targets that do not fit are errors, and change nothing.
        let err = engine.set_route(vlan(4096), TargetRef::Device(1)).unwrap_err();
        assert!(matches!(err, DeployError::Mismatch(_)), "{err}");
        assert!(err.to_string().contains("key `4096`"), "{err}");
        let err = engine.set_route(vlan(1), TargetRef::Device(3)).unwrap_err();
        assert!(matches!(err, DeployError::Mismatch(_)), "{err}");
        let err = engine.set_route(vlan(1), TargetRef::Group(0)).unwrap_err();
        assert!(matches!(err, DeployError::Mismatch(_)), "{err}");
        assert_eq!(plan::diff(&after, &kernel_state(&dir, &engine)).ops.len(), 0);

        // Counters, read from the pinned maps.
        assert_eq!(engine.counters(1).unwrap(), embed::Count::default());
        assert_eq!(engine.misses().unwrap(), embed::Count::default());
        assert!(engine.counters(3).is_err());

        // Another value opens the deployment with its routes as they are.
        let other = embed::Deployment::open(&object, &manifest, Options::new(&dir)).unwrap();
        assert!(other.report().is_none());
        assert_eq!(other.routes(), engine.routes());
        scratch.push(other.scratch_dir().to_path_buf());
        drop(other);

        // Applying the build again puts its routes back.
        let again = embed::Deployment::apply(&object, &manifest, options.clone()).unwrap();
        assert_eq!(again.report().unwrap().kind, Kind::Data);
        assert_eq!(plan::diff(&before, &kernel_state(&dir, &again)).ops.len(), 0);
        scratch.push(again.scratch_dir().to_path_buf());
        drop(again);

        let detached = engine.detach().unwrap();
        assert_eq!(detached.links.len(), 1);
        assert!(!dir.exists());
        assert!(matches!(
            embed::Deployment::open(&object, &manifest, Options::new(&dir)),
            Err(DeployError::NotDeployed { .. })
        ));
        let xdp = ns.ip(&["-j", "-d", "link", "show", "emba"]).unwrap();
        assert!(!xdp.contains("\"xdp\""), "{xdp}");
    });
    assert_eq!(scratch.len(), 3);
    assert!(scratch.iter().all(|d| !d.exists()), "{scratch:?}");
}

#[test]
fn a_manifest_that_is_not_one_is_an_error() {
    let err = embed::Deployment::new(b"", "{}", Options::new("/nonexistent")).unwrap_err();
    assert!(err.to_string().contains("embedded manifest is unusable"), "{err}");
    let err = embed::Deployment::new(b"", "not json", Options::new("/nonexistent")).unwrap_err();
    assert!(matches!(err, DeployError::Mismatch(_)), "{err}");
}

/// Two processes' worth of `Deployment`s changing routes at the same time:
/// each reads the routes back, changes one and applies under the pin
/// directory's lock, so neither undoes the other's changes.
#[test]
fn concurrent_set_routes_keep_every_change() {
    require_privileged!();
    let _serial = serial();
    let Setup { object, manifest, ns, pins: _pins, options } = setup("embed-race");
    ns.enter(|| embed::Deployment::apply(&object, &manifest, options.clone()).unwrap());
    std::thread::scope(|s| {
        for (first, target) in [(100, 1), (200, 2)] {
            let (ns, object, manifest, options) = (&ns, &object, &manifest, &options);
            s.spawn(move || {
                ns.enter(|| {
                    let mut engine = embed::Deployment::open(object, manifest, options.clone()).unwrap();
                    for vid in first..first + 20 {
                        engine
                            .set_route(vlan(vid), TargetRef::Device(target))
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            });
        }
    });
    let engine = ns.enter(|| embed::Deployment::open(&object, &manifest, options.clone())).unwrap();
    let keys: Vec<&KeyValue> = engine.routes().iter().map(|r| &r.key).collect();
    for vid in (100..120).chain(200..220) {
        assert!(keys.contains(&&vlan(vid)), "route {vid} was lost");
    }
    assert_eq!(keys.len(), 42, "2 routes of the spec and 40 set");
    let status = ns.enter(|| engine.status()).unwrap();
    assert!(status.drift.is_empty(), "{}", status);
    ns.enter(|| engine.detach()).unwrap();
}
