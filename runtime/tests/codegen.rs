//! Generated code against the real kernel: every example and sample builds
//! to an object whose programs all pass the verifier, and the ingress and
//! egress programs do what the spec says, checked with BPF_PROG_TEST_RUN on
//! crafted frames (0, 1 and 2 VLAN tags, truncated frames, non-IP frames).
//!
//! Which route a packet took is read from the counters the generated code
//! keeps (per key for direct keys, per slot for lowered ones, per group):
//! a plain PROG_TEST_RUN does not send anything, it only returns the
//! action. Egress bodies run through their plain-XDP twins, since the
//! kernel refuses to test-run `xdp/devmap` programs (docs/kernel.md).

use devmapc::ir::{encode_key, names, Ir, TargetRef};
use devmapc::model::{Const, KeyValue, PrefixValue};
use devmapc_runtime::Device;
use devmapc_testkit::bpf::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT};
use devmapc_testkit::netns::Netns;
use devmapc_testkit::packet::{parse, Frame};
use devmapc_testkit::require_privileged;
use libbpf_rs::{MapCore, MapFlags, Object, ProgramAttachType};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds a spec file into `dir`; returns the object's path and the plan
/// read back from the manifest (as the runtime reads it).
fn build(spec: &Path, dir: &Path) -> (PathBuf, Ir) {
    let outputs = devmapc::Builder::new(spec)
        .out_dir(dir)
        .build()
        .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
    assert!(
        outputs.clang_output.is_empty(),
        "{}: generated C compiles without a clang warning: {:?}",
        spec.display(),
        outputs.clang_output
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outputs.manifest.unwrap()).unwrap()).unwrap();
    let ir: Ir = serde_json::from_value(manifest["ir"].clone()).expect("the manifest's IR reads back");
    (outputs.obj.unwrap(), ir)
}

/// A spec loaded into the kernel, its maps filled, with a veth pair per
/// device (`<ifname>` in the namespace, peer `p<ifname>`).
struct Rig {
    ns: Netns,
    obj: Object,
    ir: Ir,
    devices: Vec<Device>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(spec: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.devmap");
        std::fs::write(&path, spec).unwrap();
        let (obj_path, ir) = build(&path, dir.path());
        let ns = Netns::new().unwrap();
        let mut devices = Vec::new();
        for device in &ir.data.devices {
            let devmapc::model::Binding::Ifname(name) = &device.binding else {
                panic!("test specs bind by ifname")
            };
            let (iface, _) = ns.veth(name, &format!("p{name}")).unwrap();
            devices.push(Device { ifindex: iface.ifindex, mac: iface.mac });
        }
        let obj = bpf::load(&obj_path).unwrap();
        ns.enter(|| devmapc_runtime::fill(&obj, &ir, &devices)).unwrap();
        Rig { ns, obj, ir, devices, _dir: dir }
    }

    fn device(&self, name: &str) -> usize {
        self.ir.data.devices.iter().position(|d| d.name == name).unwrap_or_else(|| panic!("no device {name}"))
    }

    /// Runs the ingress program on `frame` arriving on device `on`: the
    /// action and the counter that moved.
    fn ingress(&self, frame: &[u8], on: &str) -> (u32, Counted) {
        let before = self.counters();
        let ifindex = self.devices[self.device(on)].ifindex;
        let prog = bpf::prog(&self.obj, names::INGRESS).unwrap();
        let run = self.ns.enter(|| bpf::test_run(&prog, frame, Some(ifindex), 1)).unwrap();
        let after = self.counters();
        let mut moved: Vec<Counted> = after
            .iter()
            .filter(|(c, n)| before.iter().find(|(b, _)| b == c).map_or(0, |(_, m)| *m) != *n)
            .map(|(c, _)| c.clone())
            .collect();
        // A miss that `route default` takes counts as a miss and for its
        // target.
        if moved.len() == 2 && moved[0] == Counted::Miss {
            return (run.retval, Counted::MissTo(Box::new(moved.remove(1))));
        }
        assert!(moved.len() <= 1, "one packet moved several counters: {moved:?}");
        (run.retval, moved.into_iter().next().unwrap_or(Counted::Nothing))
    }

    /// Every counter: per route key, per slot (0 = misses), per group.
    fn counters(&self) -> Vec<(Counted, u64)> {
        let mut all = Vec::new();
        let packets = |map: &str, key: &[u8]| -> u64 {
            let map = bpf::map(&self.obj, map).unwrap();
            map.lookup_percpu(key, MapFlags::ANY)
                .unwrap()
                .map_or(0, |cpus| cpus.iter().map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap())).sum())
        };
        if !self.ir.code.key.uses_slots() {
            let ifindex = |d: usize| self.devices.get(d).map(|dev| dev.ifindex);
            for route in self.ir.data.routes.iter().filter(|r| matches!(r.target, TargetRef::Device(_))) {
                let key = encode_key(&self.ir.code.key, &route.key, &ifindex).unwrap();
                all.push((Counted::Route(route.text.clone()), packets(names::KEY_COUNTERS, &key)));
            }
        }
        for slot in 0..=self.devices.len() as u32 {
            let what = if slot == 0 {
                Counted::Miss
            } else {
                Counted::Device(self.ir.data.devices[slot as usize - 1].name.clone())
            };
            all.push((what, packets(names::COUNTERS, &slot.to_ne_bytes())));
        }
        for (g, group) in self.ir.code.groups.iter().enumerate() {
            all.push((
                Counted::Group(group.name.clone()),
                packets(names::GROUP_COUNTERS, &(g as u32).to_ne_bytes()),
            ));
        }
        all
    }

    /// Runs the plain-XDP twin of `program` as if for device `device`.
    fn egress(&self, program: &str, device: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let ifindex = self.devices[self.device(device)].ifindex;
        let bss = self
            .obj
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(".bss"))
            .expect("the twins' global");
        bss.update(&0u32.to_ne_bytes(), &ifindex.to_ne_bytes(), MapFlags::ANY).unwrap();
        let prog = bpf::prog(&self.obj, &format!("devmapc_twin_{program}")).unwrap();
        let run = bpf::test_run(&prog, frame, None, 1).unwrap();
        (run.retval, run.data)
    }
}

/// What a packet was counted as.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Counted {
    /// A direct key's route, by its key text.
    Route(String),
    /// A slot: a lowered key's target or the default route's device.
    Device(String),
    Group(String),
    Miss,
    /// A miss, then `route default` to this target.
    MissTo(Box<Counted>),
    Nothing,
}

fn route(text: &str) -> Counted {
    Counted::Route(text.into())
}

fn device(name: &str) -> Counted {
    Counted::Device(name.into())
}

fn default_to(name: &str) -> Counted {
    Counted::MissTo(Box::new(device(name)))
}

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn v4(dst: [u8; 4]) -> Frame {
    Frame::new().ipv4(A, Ipv4Addr::from(dst)).udp(1000, 53)
}

fn arp() -> Frame {
    Frame::new().ethertype(0x0806).payload(&[0u8; 28])
}

// ----------------------------------------------------------------- verifier

#[test]
fn every_example_and_sample_loads_and_passes_the_verifier() {
    require_privileged!();
    let mut specs = Vec::new();
    for dir in ["examples", "tests/specs/good", "tests/specs/language"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "devmap"))
            .collect();
        found.sort();
        specs.extend(found);
    }
    assert!(specs.len() >= 9, "the corpus is there: {specs:?}");
    println!("{:<40} {:<32} {:>8} {:>7} {:>6}", "spec", "program", "verified", "xlated", "jited");
    for spec in &specs {
        let dir = tempfile::tempdir().unwrap();
        let (obj_path, ir) = build(spec, dir.path());
        let obj = bpf::load(&obj_path).unwrap_or_else(|e| panic!("{}: {e:#}", spec.display()));
        let progs: Vec<_> = obj.progs().collect();
        assert_eq!(
            progs.len(),
            1 + 2 * ir.code.programs.len(),
            "{}: ingress, and each egress program with its twin",
            spec.display()
        );
        for prog in &progs {
            let name = prog.name().to_string_lossy().into_owned();
            let expected = if name.starts_with("devmapc_egress_") {
                ProgramAttachType::XdpDevmap
            } else {
                ProgramAttachType::Xdp
            };
            assert_eq!(
                format!("{:?}", prog.attach_type()),
                format!("{expected:?}"),
                "{name} in {}",
                spec.display()
            );
            let stats = bpf::prog_stats(prog).unwrap();
            assert!(stats.verified_insns > 0 && stats.xlated_len > 0);
            println!(
                "{:<40} {:<32} {:>8} {:>7} {:>6}",
                spec.file_name().unwrap().to_string_lossy(),
                name,
                stats.verified_insns,
                stats.xlated_len,
                stats.jited_len
            );
        }
    }
}

/// The generated ingress program is no larger than hand-written C with the
/// same behaviour (compiler/tests/reference), for every key kind the
/// benchmarks compare (BENCHMARKS.md, section 1).
#[test]
fn generated_ingress_is_no_larger_than_hand_written() {
    require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("vlan", "table { key = vlan.id, counters = off }", "vlan_switch"),
        ("ipv4", "table { key = ipv4.dst, counters = off }", "ipv4_router"),
        ("port", "table { key = ingress.port, counters = off }", "port_patch"),
        ("eth", "table { key = eth.dst, counters = off }", "mac_switch"),
        ("lpm", "table { key = lpm(ipv4.dst), counters = off }", "lpm_router"),
        ("vlan_eth", "table { key = (vlan.id, eth.dst), counters = off }", "vlan_mac_switch"),
    ];
    println!(
        "{:<8} {:>22} {:>22} {:>18}",
        "key", "verified insns gen/ref", "xlated bytes gen/ref", "jited bytes gen/ref"
    );
    for (name, table, reference_prog) in cases {
        let spec = dir.path().join(format!("{name}.devmap"));
        std::fs::write(&spec, format!("{table}\ndevice a {{ ifname = \"a\" }}\ndevice b {{ ifname = \"b\" }}\ningress {{ on = [a] }}\nroute default -> b\n")).unwrap();
        let (obj_path, _) = build(&spec, dir.path());
        let generated = bpf::load(&obj_path).unwrap();
        let generated = bpf::prog_stats(&bpf::prog(&generated, names::INGRESS).unwrap()).unwrap();
        let source = root().join(format!("compiler/tests/reference/{name}.bpf.c"));
        let reference_obj = dir.path().join(format!("reference_{name}.bpf.o"));
        devmapc::builder::compile_bpf_c(&source, &reference_obj).unwrap();
        let reference = bpf::load(&reference_obj).unwrap();
        let reference = bpf::prog_stats(&bpf::prog(&reference, reference_prog).unwrap()).unwrap();
        println!(
            "{name:<8} {:>22} {:>22} {:>18}",
            format!("{}/{}", generated.verified_insns, reference.verified_insns),
            format!("{}/{}", generated.xlated_len, reference.xlated_len),
            format!("{}/{}", generated.jited_len, reference.jited_len)
        );
        assert!(
            generated.xlated_len <= reference.xlated_len,
            "{name}: generated {generated:?}, hand-written {reference:?}"
        );
        assert!(
            generated.verified_insns <= reference.verified_insns,
            "{name}: generated {generated:?}, hand-written {reference:?}"
        );
    }
}

// ------------------------------------------------------------------ ingress

#[test]
fn a_vlan_key_reads_the_outer_tag_of_up_to_two() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = vlan.id, on_miss = drop }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         device c { ifname = \"c\" }
         group g { b, c }
         ingress { on = [a] }
         route 10 -> b
         route 20 -> c
         route 30 -> g",
    );
    let ip = || Frame::new().ipv4(A, A).udp(1, 2);
    assert_eq!(
        rig.ingress(&ip().build(), "a"),
        (XDP_DROP, Counted::Miss),
        "untagged: a miss, which on_miss drops"
    );
    assert_eq!(rig.ingress(&ip().vlan(10, 0).build(), "a"), (XDP_REDIRECT, route("10")));
    assert_eq!(
        rig.ingress(&ip().vlan(20, 5).vlan(99, 0).build(), "a"),
        (XDP_REDIRECT, route("20")),
        "two tags: the outer one counts"
    );
    assert_eq!(
        rig.ingress(&ip().vlan_ad(20, 0).vlan(99, 0).build(), "a"),
        (XDP_REDIRECT, route("20")),
        "802.1ad outer tag"
    );
    assert_eq!(
        rig.ingress(&ip().vlan(99, 0).vlan(10, 0).build(), "a"),
        (XDP_DROP, Counted::Miss),
        "the inner tag is not the key"
    );
    assert_eq!(rig.ingress(&ip().vlan(30, 0).build(), "a"), (XDP_REDIRECT, Counted::Group("g".into())));
    assert_eq!(
        rig.ingress(&arp().vlan(10, 0).build(), "a"),
        (XDP_REDIRECT, route("10")),
        "not IP: the tag is enough"
    );
    let tagged = ip().vlan(10, 0).build();
    assert_eq!(rig.ingress(&tagged[..16], "a"), (XDP_DROP, Counted::Miss), "truncated inside the tag");
}

#[test]
fn an_ipv4_key_looks_behind_tags_and_misses_go_to_the_default_route() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = ipv4.dst }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         device c { ifname = \"c\" }
         ingress { on = [a] }
         route 10.0.0.1 -> b
         route default -> c",
    );
    let hit = || v4([10, 0, 0, 1]);
    assert_eq!(rig.ingress(&hit().build(), "a"), (XDP_REDIRECT, route("10.0.0.1")));
    assert_eq!(rig.ingress(&hit().vlan(7, 0).build(), "a"), (XDP_REDIRECT, route("10.0.0.1")), "one tag");
    assert_eq!(
        rig.ingress(&hit().vlan_ad(7, 0).vlan(8, 0).build(), "a"),
        (XDP_REDIRECT, route("10.0.0.1")),
        "two tags"
    );
    assert_eq!(
        rig.ingress(&v4([10, 0, 0, 2]).build(), "a"),
        (XDP_REDIRECT, default_to("c")),
        "a miss takes route default"
    );
    let v6 = Frame::new().ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST).udp(1, 2).build();
    assert_eq!(rig.ingress(&v6, "a"), (XDP_REDIRECT, default_to("c")), "no IPv4 header: a miss");
    assert_eq!(rig.ingress(&arp().build(), "a"), (XDP_REDIRECT, default_to("c")), "not IP: a miss");
    assert_eq!(
        rig.ingress(&hit().build()[..30], "a"),
        (XDP_REDIRECT, default_to("c")),
        "truncated IPv4 header: a miss"
    );
}

#[test]
fn an_lpm_key_takes_the_longest_prefix() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = lpm(ipv4.dst), on_miss = drop }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         device c { ifname = \"c\" }
         ingress { on = [a] }
         route 10.0.0.0/8 -> b
         route 10.1.0.0/16 -> c
         route 10.1.2.3 -> a",
    );
    assert_eq!(rig.ingress(&v4([10, 9, 9, 9]).build(), "a"), (XDP_REDIRECT, device("b")));
    assert_eq!(rig.ingress(&v4([10, 1, 9, 9]).vlan(5, 0).build(), "a"), (XDP_REDIRECT, device("c")));
    assert_eq!(
        rig.ingress(&v4([10, 1, 2, 3]).build(), "a"),
        (XDP_REDIRECT, device("a")),
        "a bare address is a /32"
    );
    assert_eq!(rig.ingress(&v4([11, 0, 0, 1]).build(), "a"), (XDP_DROP, Counted::Miss));
}

#[test]
fn a_wide_composite_key_goes_through_a_hash_to_a_slot() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = (vlan.id, eth.dst) }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         device c { ifname = \"c\" }
         ingress { on = [a] }
         route (10, 02:00:00:00:00:0b) -> b
         route (20, 02:00:00:00:00:0b) -> c",
    );
    let to_b = || v4([1, 2, 3, 4]).dst([2, 0, 0, 0, 0, 0x0b]);
    assert_eq!(rig.ingress(&to_b().vlan(10, 0).build(), "a"), (XDP_REDIRECT, device("b")));
    assert_eq!(
        rig.ingress(&to_b().vlan(20, 0).build(), "a"),
        (XDP_REDIRECT, device("c")),
        "same MAC, other VLAN"
    );
    assert_eq!(rig.ingress(&to_b().vlan(30, 0).build(), "a"), (XDP_PASS, Counted::Miss));
    assert_eq!(rig.ingress(&to_b().build(), "a"), (XDP_PASS, Counted::Miss), "untagged: no VLAN id");
}

#[test]
fn protocol_and_port_keys_need_the_first_fragment() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = (ip.proto, l4.dport), on_miss = drop }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         ingress { on = [a] }
         route (17, 53) -> b",
    );
    assert_eq!(rig.ingress(&v4([1, 1, 1, 1]).build(), "a"), (XDP_REDIRECT, route("(17, 53)")));
    let v6 = Frame::new().ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST).udp(9, 53).vlan(3, 0).build();
    assert_eq!(rig.ingress(&v6, "a"), (XDP_REDIRECT, route("(17, 53)")), "IPv6 behind a tag");
    let tcp = Frame::new().ipv4(A, A).tcp(9, 53).build();
    assert_eq!(rig.ingress(&tcp, "a"), (XDP_DROP, Counted::Miss), "TCP is another key");
    let mut fragment = v4([1, 1, 1, 1]).build();
    fragment[20..22].copy_from_slice(&0x0001u16.to_be_bytes()); // fragment offset 8 bytes
    assert_eq!(rig.ingress(&fragment, "a"), (XDP_DROP, Counted::Miss), "a later fragment has no ports");
}

/// Direct keys are stored mixed: the runtime's encoder (`encode_key`) and
/// the generated C (`devmapc_mix`) must compute the same key, for every
/// kind of direct key. Each spec routes one key; the matching frame must
/// hit that route (its per-key counter, found through the encoder, moves)
/// and a frame one value away must miss.
#[test]
fn every_direct_key_kind_hits_the_key_the_runtime_stored() {
    require_privileged!();
    let b = Ipv4Addr::new(198, 51, 100, 7);
    let udp = |sport: u16, dport: u16| Frame::new().ipv4(A, Ipv4Addr::new(10, 1, 0, 1)).udp(sport, dport);
    let tcp = |sport: u16, dport: u16| Frame::new().ipv4(A, Ipv4Addr::new(10, 1, 0, 1)).tcp(sport, dport);
    let cases: Vec<(&str, &str, Frame, Frame)> = vec![
        ("vlan.id", "100", udp(1000, 53).vlan(100, 0), udp(1000, 53).vlan(101, 0)),
        (
            "ipv4.dst",
            "10.1.0.1",
            udp(1000, 53),
            Frame::new().ipv4(A, Ipv4Addr::new(10, 1, 0, 2)).udp(1000, 53),
        ),
        (
            "ipv4.src",
            "192.0.2.1",
            udp(1000, 53),
            Frame::new().ipv4(b, Ipv4Addr::new(10, 1, 0, 1)).udp(1000, 53),
        ),
        ("ip.proto", "17", udp(1000, 53), tcp(1000, 53)),
        ("l4.sport", "1000", udp(1000, 53), udp(1001, 53)),
        ("l4.dport", "53", udp(1000, 53), udp(1000, 54)),
        ("(vlan.id, ip.proto)", "(100, 17)", udp(1000, 53).vlan(100, 0), tcp(1000, 53).vlan(100, 0)),
        ("(vlan.id, l4.dport)", "(100, 53)", udp(1000, 53).vlan(100, 0), udp(1000, 53).vlan(4, 0)),
        ("(ip.proto, l4.dport)", "(6, 443)", tcp(1000, 443), udp(1000, 443)),
        ("(l4.sport, l4.dport)", "(1000, 53)", udp(1000, 53), udp(53, 1000)),
    ];
    for (key, route_key, hit, miss) in cases {
        let rig = Rig::new(&format!(
            "table {{ key = {key}, on_miss = drop }}
             device a {{ ifname = \"a\" }}
             device b {{ ifname = \"b\" }}
             ingress {{ on = [a] }}
             route {route_key} -> b"
        ));
        assert!(
            matches!(rig.ir.code.key, devmapc::ir::KeyPlan::Direct { mix: devmapc::ir::KeyMix::Fmix32, .. }),
            "{key}: {:?}",
            rig.ir.code.key
        );
        assert_eq!(rig.ingress(&hit.build(), "a"), (XDP_REDIRECT, route(route_key)), "{key}: the routed key");
        assert_eq!(rig.ingress(&miss.build(), "a"), (XDP_DROP, Counted::Miss), "{key}: another key");
    }
    // ingress.port: the ifindex, resolved at load, mixed like the others.
    let rig = Rig::new(
        "table { key = ingress.port, on_miss = drop }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         ingress { on = [a, b] }
         route a -> b",
    );
    assert_eq!(rig.ingress(&udp(1000, 53).build(), "a"), (XDP_REDIRECT, route("a")));
    assert_eq!(rig.ingress(&udp(1000, 53).build(), "b"), (XDP_DROP, Counted::Miss));
}

#[test]
fn an_ingress_port_key_needs_no_packet_byte() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = ingress.port }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         ingress { on = [a, b] }
         route a -> b
         route b -> a",
    );
    let garbage = [0xffu8; 14];
    assert_eq!(rig.ingress(&garbage, "a"), (XDP_REDIRECT, route("a")));
    assert_eq!(rig.ingress(&garbage, "b"), (XDP_REDIRECT, route("b")));
}

#[test]
fn an_ipv6_key_is_lowered_through_a_hash() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = ipv6.dst }
         device a { ifname = \"a\" }
         device b { ifname = \"b\" }
         ingress { on = [a] }
         route 2001:db8::1 -> b",
    );
    let to = |dst: Ipv6Addr| Frame::new().ipv6(Ipv6Addr::LOCALHOST, dst).udp(1, 2).vlan(4, 0).build();
    assert_eq!(rig.ingress(&to("2001:db8::1".parse().unwrap()), "a"), (XDP_REDIRECT, device("b")));
    assert_eq!(rig.ingress(&to("2001:db8::2".parse().unwrap()), "a"), (XDP_PASS, Counted::Miss));
}

// ------------------------------------------------------------------- egress

const EGRESS_SPEC: &str = "table { key = vlan.id }
    device a { ifname = \"a\" }
    device b { ifname = \"b\", egress = retag(10) }
    device c { ifname = \"c\", egress = own_mac }
    device d { ifname = \"d\", egress = push(200) }
    device e { ifname = \"e\", egress = pop }
    egress retag(vid: u16) { vlan.id = vid }
    egress own_mac {
        eth.src = egress.mac
        if ipv4.ttl <= 1 { drop }
        ipv4.ttl -= 1
    }
    egress push(v: u16) { vlan.push(v) }
    egress pop { vlan.pop() }
    ingress { on = [a] }
    route 1 -> b
    route 2 -> c
    route 3 -> d
    route 4 -> e";

#[test]
fn egress_programs_rewrite_tags_through_their_twins() {
    require_privileged!();
    let rig = Rig::new(EGRESS_SPEC);
    let ip = || Frame::new().ipv4(A, A).udp(1, 2).payload(b"data");

    let (action, out) = rig.egress("retag", "b", &ip().vlan(100, 5).build());
    let out = parse(&out).unwrap();
    assert_eq!(
        (action, out.vlan_ids(), out.tags[0].pcp),
        (XDP_PASS, vec![10], 5),
        "the id changes, the priority stays"
    );
    let (action, out) = rig.egress("retag", "b", &ip().build());
    assert_eq!((action, parse(&out).unwrap().vlan_ids()), (XDP_PASS, vec![]), "untagged stays untagged");

    let (_, out) = rig.egress("push", "d", &ip().build());
    let out = parse(&out).unwrap();
    assert_eq!((out.vlan_ids(), out.ipv4.map(|h| h.dst)), (vec![200], Some(A)));
    let (_, out) = rig.egress("push", "d", &ip().vlan(5, 0).build());
    assert_eq!(parse(&out).unwrap().vlan_ids(), vec![200, 5], "pushed in front of the existing tag");

    let (_, out) = rig.egress("pop", "e", &ip().vlan(7, 0).vlan(8, 0).build());
    let out = parse(&out).unwrap();
    assert_eq!((out.vlan_ids(), out.payload.as_slice()), (vec![8], b"data".as_slice()));
    let untagged = ip().build();
    assert_eq!(rig.egress("pop", "e", &untagged), (XDP_PASS, untagged.clone()), "nothing to pop");
}

#[test]
fn egress_programs_set_the_device_mac_and_keep_the_ipv4_checksum_right() {
    require_privileged!();
    let rig = Rig::new(EGRESS_SPEC);
    let mac = rig.devices[rig.device("c")].mac;
    let (action, out) =
        rig.egress("own_mac", "c", &Frame::new().ipv4(A, A).ttl(64).udp(1, 2).vlan(9, 0).build());
    let out = parse(&out).unwrap();
    let ip = out.ipv4.unwrap();
    assert_eq!((action, out.src, ip.ttl, ip.checksum_valid), (XDP_PASS, mac, 63, true));
    let (action, _) = rig.egress("own_mac", "c", &Frame::new().ipv4(A, A).ttl(1).udp(1, 2).build());
    assert_eq!(action, XDP_DROP, "TTL 1 is dropped");
    let (action, out) = rig.egress("own_mac", "c", &Frame::new().ipv4(A, A).ttl(0).udp(1, 2).build());
    assert_eq!(action, XDP_DROP, "so is TTL 0: {out:?}");
    let (action, out) = rig.egress("own_mac", "c", &arp().build());
    assert_eq!((action, parse(&out).unwrap().src), (XDP_PASS, mac), "ARP: the MAC changes, no TTL check");
}

#[test]
fn keys_encode_as_the_generated_code_reads_them() {
    // A direct IPv4 key is loaded in wire order, then mixed (a manifest of
    // a build before keys were mixed has no `mix`: its keys stay as they
    // were); an LPM key leads with its length.
    let fields =
        vec![devmapc::ir::DirectField { field: devmapc::fields::Field::Ipv4Dst, shift: 0, bits: 32 }];
    let plan = devmapc::ir::KeyPlan::Direct { fields: fields.clone(), mix: devmapc::ir::KeyMix::Fmix32 };
    let key = KeyValue::Const(Const::Ipv4(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(
        encode_key(&plan, &key, &|_| None).unwrap(),
        devmapc::ir::fmix32(u32::from_ne_bytes([10, 0, 0, 1])).to_ne_bytes()
    );
    let old: devmapc::ir::KeyPlan = serde_json::from_str(
        r#"{ "kind": "direct", "fields": [ { "field": "ipv4.dst", "shift": 0, "bits": 32 } ] }"#,
    )
    .unwrap();
    assert_eq!(old, devmapc::ir::KeyPlan::Direct { fields, mix: devmapc::ir::KeyMix::None });
    assert_eq!(encode_key(&old, &key, &|_| None).unwrap(), [10, 0, 0, 1]);
    assert!(
        !serde_json::to_string(&old).unwrap().contains("mix"),
        "an old plan serialises as it was: same code hash"
    );
    assert!(serde_json::to_string(&plan).unwrap().contains(r#""mix":"fmix32""#));
    let lpm = devmapc::ir::KeyPlan::Lpm { field: devmapc::fields::Field::Ipv4Dst, address_bytes: 4 };
    let prefix = KeyValue::Prefix(PrefixValue::V4(Ipv4Addr::new(10, 0, 0, 0), 8));
    assert_eq!(encode_key(&lpm, &prefix, &|_| None).unwrap()[4..], [10, 0, 0, 0]);
}

// ------------------------------------------------------------- conditions

/// A condition of the spec language, written out and evaluated here.
#[derive(Clone)]
enum C {
    Has(&'static str),
    TtlOver(u8),
    HopLimitOver(u8),
    Dport(u16),
    Proto(u8),
    VlanId(u16),
    /// `ipv4.src == 192.0.2.1`, `ipv6.dst == ::1`: what the test frames carry.
    Ipv4Src,
    Ipv6Dst,
    Not(Box<C>),
    And(Vec<C>),
    Or(Vec<C>),
}

fn has(h: &'static str) -> C {
    C::Has(h)
}
fn not(c: C) -> C {
    C::Not(Box::new(c))
}
fn or(cs: &[C]) -> C {
    C::Or(cs.to_vec())
}
fn and(cs: &[C]) -> C {
    C::And(cs.to_vec())
}

/// The headers (and fields) a frame shows an egress condition.
struct Seen {
    vlan: Option<u16>,
    proto: Option<u8>,
    ttl: Option<u8>,
    hop_limit: Option<u8>,
    dport: Option<u16>,
}

impl C {
    fn text(&self) -> String {
        match self {
            C::Has(h) => format!("has({h})"),
            C::TtlOver(n) => format!("ipv4.ttl > {n}"),
            C::HopLimitOver(n) => format!("ipv6.hop_limit > {n}"),
            C::Dport(n) => format!("l4.dport == {n}"),
            C::Proto(n) => format!("ip.proto == {n}"),
            C::VlanId(n) => format!("vlan.id == {n}"),
            C::Ipv4Src => format!("ipv4.src == {A}"),
            C::Ipv6Dst => "ipv6.dst == ::1".into(),
            C::Not(c) => format!("!({})", c.text()),
            C::And(cs) => cs.iter().map(|c| format!("({})", c.text())).collect::<Vec<_>>().join(" && "),
            C::Or(cs) => cs.iter().map(|c| format!("({})", c.text())).collect::<Vec<_>>().join(" || "),
        }
    }

    /// A comparison on a header the frame lacks is false.
    fn eval(&self, s: &Seen) -> bool {
        match self {
            C::Has("eth") => true,
            C::Has("vlan") => s.vlan.is_some(),
            C::Has("ipv4") => s.ttl.is_some(),
            C::Has("ipv6") => s.hop_limit.is_some(),
            C::Has("ip") => s.ttl.is_some() || s.hop_limit.is_some(),
            C::Has("l4") => s.dport.is_some(),
            C::Has(h) => panic!("no header {h}"),
            C::TtlOver(n) => s.ttl.is_some_and(|t| t > *n),
            C::HopLimitOver(n) => s.hop_limit.is_some_and(|t| t > *n),
            C::Dport(n) => s.dport == Some(*n),
            C::Proto(n) => s.proto == Some(*n),
            C::VlanId(n) => s.vlan == Some(*n),
            C::Ipv4Src => s.ttl.is_some(),
            C::Ipv6Dst => s.hop_limit.is_some(),
            C::Not(c) => !c.eval(s),
            C::And(cs) => cs.iter().all(|c| c.eval(s)),
            C::Or(cs) => cs.iter().any(|c| c.eval(s)),
        }
    }
}

/// has() of every header under `||`, `&&`, `!` and nesting, alone and
/// with comparisons: clang must not fold two header tests into one test
/// of OR-ed pointers, which the verifier refuses.
fn conditions() -> Vec<C> {
    let headers = ["vlan", "ipv4", "ipv6", "ip", "l4"];
    let mut out = Vec::new();
    for (i, a) in headers.iter().enumerate() {
        for b in &headers[i + 1..] {
            out.push(or(&[has(a), has(b)]));
            out.push(not(or(&[has(a), has(b)])));
            out.push(and(&[not(has(a)), not(has(b))]));
            out.push(or(&[not(has(a)), not(has(b))]));
        }
    }
    out.extend([
        and(&[has("eth"), or(&[has("ipv4"), has("ipv6")])]),
        or(&[and(&[has("ipv4"), has("l4")]), has("ipv6")]),
        or(&[has("ipv4"), has("ipv6"), has("vlan")]),
        or(&[not(or(&[has("ipv6"), has("vlan")])), has("l4")]),
        or(&[C::TtlOver(3), has("ipv6")]),
        or(&[C::TtlOver(3), C::HopLimitOver(3)]),
        not(or(&[C::TtlOver(3), C::HopLimitOver(3)])),
        or(&[C::Dport(53), has("ipv6")]),
        or(&[and(&[C::TtlOver(3), has("l4")]), and(&[has("ipv6"), not(C::Dport(80))])]),
        or(&[C::Proto(17), has("vlan")]),
        or(&[C::Proto(6), C::VlanId(3), C::TtlOver(3)]),
        and(&[not(C::VlanId(4)), or(&[has("l4"), C::Proto(1)])]),
        or(&[C::VlanId(7), C::HopLimitOver(3)]),
        or(&[C::Ipv4Src, C::Ipv6Dst]),
        not(or(&[C::Ipv6Dst, and(&[C::Ipv4Src, has("l4")])])),
    ]);
    out
}

/// How the condition is reached: alone, after a tag edit, as an `else if`,
/// after writes under `has()` (ttl 64 is then 63, a tag's id 5), after
/// an `else` of `!has()`.
const SHAPES: [(&str, &str); 6] = [
    ("plain", "if COND { drop }"),
    ("push", "vlan.push(7)\n    if COND { drop }"),
    ("pop", "vlan.pop()\n    if COND { drop }"),
    ("elif", "vlan.push(7)\n    if has(ipv4) && ipv4.ttl == 0 { drop } else if COND { drop }"),
    ("writes", "if has(ipv4) { ipv4.ttl -= 1 }\n    if has(vlan) { vlan.id = 5 }\n    if COND { drop }"),
    ("else", "if !has(vlan) { vlan.push(5) } else { vlan.id = 5 }\n    if COND { drop }"),
];

#[test]
fn every_shape_of_header_test_passes_the_verifier_and_decides_right() {
    require_privileged!();
    let conds = conditions();
    let mut spec = String::from(
        "table { key = vlan.id }\ndevice a { ifname = \"a\" }\ningress { on = [a] }\nroute 1 -> a\n",
    );
    for (i, c) in conds.iter().enumerate() {
        for (s, (shape, body)) in SHAPES.iter().enumerate() {
            spec += &format!("egress c{i}_{shape} {{\n    {}\n}}\n", body.replace("COND", &c.text()));
            spec += &format!("device d{i}x{s} {{ ifname = \"d{i}x{s}\", egress = c{i}_{shape} }}\n");
        }
    }
    let rig = Rig::new(&spec);
    let ip4 = || Frame::new().ipv4(A, A);
    let ip6 = || Frame::new().ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
    // (frame, its tags outermost first, what it shows: ttl, hop limit,
    // protocol, dport)
    type Shown = (Vec<u8>, Vec<u16>, Option<u8>, Option<u8>, Option<u8>, Option<u16>);
    let frames: Vec<Shown> = vec![
        (arp().build(), vec![], None, None, None, None),
        (arp().vlan(3, 0).build(), vec![3], None, None, None, None),
        (ip4().udp(1, 53).build(), vec![], Some(64), None, Some(17), Some(53)),
        (ip4().udp(1, 80).vlan(3, 0).build(), vec![3], Some(64), None, Some(17), Some(80)),
        (ip4().ttl(2).proto(1).payload(&[0; 8]).build(), vec![], Some(2), None, Some(1), None),
        (ip6().tcp(1, 80).build(), vec![], None, Some(64), Some(6), Some(80)),
        (
            ip6().hop_limit(2).udp(1, 53).vlan(3, 0).vlan(4, 0).build(),
            vec![3, 4],
            None,
            Some(2),
            Some(17),
            Some(53),
        ),
        (ip6().proto(59).build(), vec![], None, Some(64), Some(59), None),
    ];
    for (i, c) in conds.iter().enumerate() {
        for (s, (shape, _)) in SHAPES.iter().enumerate() {
            for (f, (frame, tags, ttl, hop_limit, proto, dport)) in frames.iter().enumerate() {
                let vlan = match *shape {
                    "push" | "elif" => Some(7),
                    "pop" => tags.get(1).copied(),
                    "writes" => tags.first().map(|_| 5),
                    "else" => Some(5),
                    _ => tags.first().copied(),
                };
                let ttl = if *shape == "writes" { ttl.map(|t| t - 1) } else { *ttl };
                let seen = Seen { vlan, proto: *proto, ttl, hop_limit: *hop_limit, dport: *dport };
                let want = if c.eval(&seen) { XDP_DROP } else { XDP_PASS };
                let (action, out) = rig.egress(&format!("c{i}_{shape}"), &format!("d{i}x{s}"), frame);
                assert_eq!(action, want, "`{}` ({shape}) on frame {f}", c.text());
                if action == XDP_PASS {
                    let out = parse(&out).unwrap();
                    assert_eq!(
                        (out.ipv4.as_ref().map(|h| h.ttl), out.vlan_ids().first().copied()),
                        (ttl, vlan),
                        "`{}` ({shape}) on frame {f}",
                        c.text()
                    );
                }
            }
        }
    }
}
