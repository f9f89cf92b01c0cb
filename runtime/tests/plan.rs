//! Plans against the real kernel: what the kernel holds after `fill` is what
//! `desired` plans; a data change is applied as a diff and leaves exactly the
//! new plan's entries; a failing operation (a device the kernel refuses, an
//! entry that vanished behind the plan's back) leaves every map as it was,
//! counter counts included.
//!
//! Every device lives in a namespace the test creates (a veth pair per
//! device, `<ifname>` with peer `p<ifname>`).

use devmapc::ir::{names, Ir};
use devmapc_runtime::deploy;
use devmapc_runtime::plan::{self, Op, State, Value};
use devmapc_runtime::Device;
use devmapc_testkit::bpf::{self, XDP_REDIRECT};
use devmapc_testkit::netns::Netns;
use devmapc_testkit::packet::Frame;
use devmapc_testkit::require_privileged;
use libbpf_rs::{MapCore, MapFlags, Object};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Builds `spec` into `dir`: the object and the plan read back from the
/// manifest (as the runtime reads it), and the manifest's code hash.
fn build(spec: &str, dir: &Path) -> (PathBuf, Ir, String) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("fwd.devmap");
    std::fs::write(&path, spec).unwrap();
    let outputs = devmapc::Builder::new(&path).out_dir(dir).build().unwrap_or_else(|e| panic!("{e}"));
    let manifest = outputs.manifest.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let (obj, ir) = deploy::read_manifest_file(&manifest).unwrap();
    (obj, ir, json["code_hash"].as_str().unwrap().to_string())
}

/// A namespace with a veth pair per interface name.
struct Rig {
    ns: Netns,
    ifaces: Vec<(String, Device)>,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Rig {
    fn new(ifnames: &[&str]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let ns = Netns::new().unwrap();
        let ifaces = ifnames
            .iter()
            .map(|name| {
                let (iface, _) = ns.veth(name, &format!("p{name}")).unwrap();
                (name.to_string(), Device { ifindex: iface.ifindex, mac: iface.mac })
            })
            .collect();
        let path = dir.path().to_path_buf();
        Rig { ns, ifaces, _dir: dir, dir: path }
    }

    /// The devices of `ir`, by interface name; unknown names get `missing`.
    fn devices(&self, ir: &Ir, missing: Device) -> Vec<Device> {
        ir.data
            .devices
            .iter()
            .map(|d| match &d.binding {
                devmapc::model::Binding::Ifname(name) => {
                    self.ifaces.iter().find(|(n, _)| n == name).map_or(missing, |(_, dev)| *dev)
                }
                other => panic!("test specs bind by ifname, not {other:?}"),
            })
            .collect()
    }

    fn build(&self, name: &str, spec: &str) -> (PathBuf, Ir, String) {
        build(spec, &self.dir.join(name))
    }

    /// Loads an object and fills it with `fill` (fill.rs).
    fn load_filled(&self, obj: &Path, ir: &Ir) -> Object {
        let obj = bpf::load(obj).unwrap();
        let devices = self.devices(ir, NOWHERE);
        self.ns.enter(|| devmapc_runtime::fill(&obj, ir, &devices)).unwrap_or_else(|e| panic!("{e}"));
        obj
    }

    /// Runs the ingress program once on a frame tagged `vid` arriving on
    /// device `on`.
    fn send(&self, obj: &Object, vid: u16, on: &str) -> u32 {
        let ifindex = self.ifaces.iter().find(|(n, _)| n == on).unwrap().1.ifindex;
        let frame = Frame::new()
            .ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2))
            .udp(1, 2)
            .vlan(vid, 0)
            .build();
        let prog = bpf::prog(obj, names::INGRESS).unwrap();
        self.ns.enter(|| bpf::test_run(&prog, &frame, Some(ifindex), 1)).unwrap().retval
    }
}

/// A device the namespace does not have.
const NOWHERE: Device = Device { ifindex: 999_999, mac: [2, 0, 0, 0, 0, 0x99] };

/// Packets counted under direct key `key` (the VLAN id; the map stores it
/// mixed, as every direct key), all CPUs.
fn key_packets(obj: &Object, key: u32) -> Option<u64> {
    let map = bpf::map(obj, names::KEY_COUNTERS).unwrap();
    map.lookup_percpu(&devmapc::ir::fmix32(key).to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .map(|cpus| cpus.iter().map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap())).sum())
}

/// Every per-CPU counter of `devmapc_key_counters`, raw.
fn raw_counters(obj: &Object) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let map = bpf::map(obj, names::KEY_COUNTERS).unwrap();
    let mut all: Vec<_> =
        map.keys().map(|k| (k.clone(), map.lookup_percpu(&k, MapFlags::ANY).unwrap().unwrap())).collect();
    all.sort();
    all
}

/// A VLAN switch: direct keys, counters, an egress program with an
/// argument, a group, a default route.
const V1: &str = "table { key = vlan.id }
device a { ifname = \"a\" }
device b { ifname = \"b\", egress = tag(10) }
device c { ifname = \"c\" }
egress tag(v: u16) { vlan.id = v }
group g { b, c }
ingress { on = [a] }
route 100 -> b
route 200 -> c
route 300 -> g
route default -> c
";

/// The same code; other data: b's argument, the group's members, routes
/// changed, moved to and from the group, added and removed, the default.
const V2: &str = "table { key = vlan.id }
device a { ifname = \"a\" }
device b { ifname = \"b\", egress = tag(20) }
device c { ifname = \"c\" }
egress tag(v: u16) { vlan.id = v }
group g { a, c }
ingress { on = [a] }
route 100 -> c
route 200 -> g
route 300 -> b
route 400 -> b
route default -> b
";

/// V2 and a device `d` the namespace does not have.
const V3: &str = "table { key = vlan.id }
device a { ifname = \"a\" }
device b { ifname = \"b\", egress = tag(30) }
device c { ifname = \"c\" }
device d { ifname = \"d\" }
egress tag(v: u16) { vlan.id = v }
group g { a, c }
ingress { on = [a] }
route 100 -> c
route 200 -> g
route 300 -> b
route 400 -> b
route 500 -> d
route default -> b
";

#[test]
fn what_fill_writes_reads_back_as_desired_and_a_plan_from_fresh_writes_the_same() {
    require_privileged!();
    let rig = Rig::new(&["a", "b", "c"]);
    let lpm = "table { key = lpm(ipv4.dst) }
device a { ifname = \"a\" }
device b { ifname = \"b\", egress = tag(10) }
device c { ifname = \"c\" }
egress tag(v: u16) { vlan.id = v }
group g { b, c }
ingress { on = [a] }
route 10.0.0.0/8 -> b
route 10.1.0.0/16 -> g
route 10.1.2.3 -> c
route default -> g
";
    for (name, spec) in [("vlan", V1), ("lpm", lpm)] {
        let (obj_path, ir, _) = rig.build(name, spec);
        let desired = plan::desired(&ir, &rig.devices(&ir, NOWHERE)).unwrap();

        let filled = rig.load_filled(&obj_path, &ir);
        let read = plan::read_state(&filled, &ir).unwrap();
        assert_eq!(
            read, desired,
            "{name}: what fill wrote is what desired plans (program ids read back as the object's programs)"
        );
        assert!(plan::diff(&read, &desired).is_empty());
        let egress = read.maps[names::SLOTS].entries.values().filter(|e| matches!(&e.value, Value::Devmap(d) if d.program.as_deref() == Some("devmapc_egress_tag"))).count();
        assert_eq!(egress, 1, "{name}: b's slot names its egress program");

        let planned = bpf::load(&obj_path).unwrap();
        let from_fresh = plan::diff(&State::fresh(&ir), &desired);
        rig.ns.enter(|| plan::execute(&planned, &from_fresh)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            plan::read_state(&planned, &ir).unwrap(),
            desired,
            "{name}: executing the plan from a fresh object writes what fill writes"
        );
        println!(
            "{name}: {} entries, written by fill and by a plan of {} operations alike",
            desired.len(),
            from_fresh.len()
        );
    }
}

#[test]
fn a_data_change_is_applied_as_a_diff_of_map_operations() {
    require_privileged!();
    let rig = Rig::new(&["a", "b", "c"]);
    let (obj_path, v1, code1) = rig.build("v1", V1);
    let (_, v2, code2) = rig.build("v2", V2);
    assert_eq!(code1, code2, "a data-only change: the same programs and maps");
    let obj = rig.load_filled(&obj_path, &v1);
    assert_eq!(rig.send(&obj, 100, "a"), XDP_REDIRECT);
    assert_eq!(key_packets(&obj, 100), Some(1));

    let mut old = plan::read_state(&obj, &v1).unwrap();
    old.relabel(&plan::desired(&v1, &rig.devices(&v1, NOWHERE)).unwrap());
    let new = plan::desired(&v2, &rig.devices(&v2, NOWHERE)).unwrap();
    let plan = plan::diff(&old, &new);
    println!("{plan}");
    assert!(plan.warnings.is_empty());
    let summary = plan.summary();
    assert_eq!(summary[names::ROUTES].changed, 1, "route 100 changes target in place");
    assert_eq!(
        summary[names::KEY_COUNTERS].added + summary[names::KEY_COUNTERS].removed,
        3,
        "counters of 300, 400 added, of 200 removed; 100's kept"
    );

    rig.ns.enter(|| plan::execute(&obj, &plan)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan::read_state(&obj, &v2).unwrap(), new, "the maps hold exactly the new plan");
    assert_eq!(key_packets(&obj, 100), Some(1), "a kept key keeps its counts");
    assert_eq!(key_packets(&obj, 200), None, "a key moved to a group counts there");
    assert_eq!(key_packets(&obj, 400), Some(0));
    assert_eq!(rig.send(&obj, 400, "a"), XDP_REDIRECT, "the new route forwards");
    assert_eq!(key_packets(&obj, 400), Some(1));
    assert!(plan::diff(&plan::read_state(&obj, &v2).unwrap(), &new).is_empty(), "nothing left to do");
}

#[test]
fn a_lowered_key_change_replaces_prefixes_and_the_default_in_place() {
    require_privileged!();
    let spec = |routes: &str, g: &str| {
        format!(
            "table {{ key = lpm(ipv4.dst) }}
device a {{ ifname = \"a\" }}
device b {{ ifname = \"b\", egress = tag(10) }}
device c {{ ifname = \"c\" }}
egress tag(v: u16) {{ vlan.id = v }}
group g {{ {g} }}
ingress {{ on = [a] }}
{routes}"
        )
    };
    let rig = Rig::new(&["a", "b", "c"]);
    let (obj_path, v1, code1) =
        rig.build("v1", &spec("route 10.0.0.0/8 -> b\nroute 10.1.2.3 -> c\nroute default -> g\n", "b, c"));
    let (_, v2, code2) =
        rig.build("v2", &spec("route 10.0.0.0/8 -> c\nroute 10.9.0.0/16 -> b\nroute default -> b\n", "c"));
    assert_eq!(code1, code2);
    let obj = rig.load_filled(&obj_path, &v1);
    let old = plan::read_state(&obj, &v1).unwrap();
    let new = plan::desired(&v2, &rig.devices(&v2, NOWHERE)).unwrap();
    let plan = plan::diff(&old, &new);
    println!("{plan}");
    let kinds: Vec<(&str, &str)> = plan.ops.iter().map(|op| (op.map.as_str(), op.verb())).collect();
    assert_eq!(
        kinds,
        [
            (names::KEYS, "change"),
            (names::KEYS, "add"),
            (names::DEFAULT, "change"),
            (names::KEYS, "remove"),
            ("devmapc_group_g", "remove"),
        ]
    );
    rig.ns.enter(|| plan::execute(&obj, &plan)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan::read_state(&obj, &v2).unwrap(), new);
}

#[test]
fn a_device_the_kernel_refuses_midway_leaves_every_map_as_it_was() {
    require_privileged!();
    let rig = Rig::new(&["a", "b", "c"]);
    let (obj_path, v2, _) = rig.build("v2", V2);
    let (_, v3, _) = rig.build("v3", V3);
    let obj = rig.load_filled(&obj_path, &v2);
    assert_eq!(rig.send(&obj, 100, "a"), XDP_REDIRECT);
    let before = plan::read_state(&obj, &v2).unwrap();
    let counters = raw_counters(&obj);

    // d has no device in the namespace: its slot is refused (EINVAL) after
    // b's new argument and the counter of route 500 are written.
    let new = plan::desired(&v3, &rig.devices(&v3, NOWHERE)).unwrap();
    let plan = plan::diff(&before, &new);
    println!("{plan}");
    let err = rig.ns.enter(|| plan::execute(&obj, &plan)).unwrap_err();
    println!("{err}");
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!((err.op.map.as_str(), err.op.why.as_str()), (names::SLOTS, "device d: slot"));
    assert!(err.step > 1 && err.undone == err.step - 1 && err.rollback_errors.is_empty(), "{err:?}");
    let text = err.to_string();
    for part in [
        "cannot add device d: slot to map devmapc_slots",
        "[EINVAL]",
        "no device with ifindex 999999",
        "undone: the previous configuration is in place",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    let done: Vec<&Op> = plan.ops[..err.step - 1].iter().map(|op| &op.op).collect();
    assert!(
        done.iter().any(|op| matches!(op, Op::Replace { .. }))
            && done.iter().any(|op| matches!(op, Op::Insert(_))),
        "changes and adds were undone: {done:?}"
    );

    let after = plan::read_state(&obj, &v2).unwrap();
    assert_eq!(after, before, "every map as it was");
    assert_eq!(raw_counters(&obj), counters, "counters and their counts as they were");
}

#[test]
fn a_failure_after_removals_puts_entries_back_with_their_counts() {
    require_privileged!();
    let spec = |c: &str| {
        format!("table {{ key = vlan.id }}\ndevice a {{ ifname = \"a\" }}\ndevice b {{ ifname = \"b\" }}\n{c}ingress {{ on = [a] }}\nroute 100 -> b\n")
    };
    let rig = Rig::new(&["a", "b", "c"]);
    let (obj_path, v1, _) = rig.build("v1", &spec("device c { ifname = \"c\" }\nroute 200 -> c\n"));
    let (_, v2, _) = rig.build("v2", &spec(""));
    let obj = rig.load_filled(&obj_path, &v1);
    for _ in 0..3 {
        assert_eq!(rig.send(&obj, 200, "a"), XDP_REDIRECT);
    }
    assert_eq!(key_packets(&obj, 200), Some(3));

    // The plan comes from the previous plan, but c's slot has gone behind
    // its back: the removal of route 200 and its counter succeed, the
    // slot's fails (ENOENT), and both come back, the counter with its 3.
    let old = plan::desired(&v1, &rig.devices(&v1, NOWHERE)).unwrap();
    let new = plan::desired(&v2, &rig.devices(&v2, NOWHERE)).unwrap();
    let plan = plan::diff(&old, &new);
    let ops: Vec<String> = plan.ops.iter().map(|op| format!("{} {} {}", op.verb(), op.map, op.why)).collect();
    assert_eq!(
        ops,
        [
            "remove devmapc_routes route 200 -> c (line 5)",
            "remove devmapc_key_counters route 200 -> c (line 5): counter",
            "remove devmapc_slots device c: slot",
        ]
    );
    bpf::map(&obj, names::SLOTS).unwrap().delete(&3u32.to_ne_bytes()).unwrap();
    let drifted = plan::read_state(&obj, &v1).unwrap();
    let counters = raw_counters(&obj);

    let err = rig.ns.enter(|| plan::execute(&obj, &plan)).unwrap_err();
    println!("{err}");
    assert_eq!((err.errno(), err.step, err.undone), (Some(libc::ENOENT), 3, 2));
    assert!(err.to_string().contains("plan again from what the kernel holds"), "{err}");
    assert_eq!(plan::read_state(&obj, &v1).unwrap(), drifted, "every map as it was");
    assert_eq!(raw_counters(&obj), counters);
    assert_eq!(key_packets(&obj, 200), Some(3), "the removed counter came back with its counts");

    // Planned from what the kernel holds, the same change goes through.
    let plan = plan::diff(&plan::read_state(&obj, &v1).unwrap(), &new);
    assert_eq!(plan.len(), 2);
    rig.ns.enter(|| plan::execute(&obj, &plan)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan::read_state(&obj, &v2).unwrap(), new);
}
