//! Egress statements after `vlan.push`, `vlan.pop` and `vlan.id =` see
//! the frame as it now is, whatever number of tags it then carries: the
//! generated programs run in the kernel (their plain-XDP twins, through
//! BPF_PROG_TEST_RUN) on frames arriving with 0 to 4 tags, and what they
//! send is compared with a model of the rule in docs/language.md (7.2):
//! IP and L4 are found behind at most two of the frame's own tags; the
//! tags a program pushes do not count.
//!
//! Frames of three and more tags are made by splicing tags into a built
//! frame (the frame builder stops at two, as `devmapc test` packets do).

use devmapc::ir::{names, Ir};
use devmapc_runtime::Device;
use devmapc_testkit::bpf::{self, XDP_DROP, XDP_PASS, XDP_REDIRECT};
use devmapc_testkit::netns::Netns;
use devmapc_testkit::packet::{parse, Frame, Parsed};
use devmapc_testkit::require_privileged;
use libbpf_rs::{MapCore, MapFlags, Object};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A spec built and loaded, its maps filled, one veth per device.
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
        let outputs =
            devmapc::Builder::new(&path).out_dir(dir.path()).build().unwrap_or_else(|e| panic!("{e}"));
        assert!(outputs.clang_output.is_empty(), "no clang warning: {:?}", outputs.clang_output);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(outputs.manifest.unwrap()).unwrap()).unwrap();
        let ir: Ir = serde_json::from_value(manifest["ir"].clone()).unwrap();
        let ns = Netns::new().unwrap();
        let mut devices = Vec::new();
        for device in &ir.data.devices {
            let devmapc::model::Binding::Ifname(name) = &device.binding else {
                panic!("test specs bind by ifname")
            };
            let (iface, _) = ns.veth(name, &format!("p{name}")).unwrap();
            devices.push(Device { ifindex: iface.ifindex, mac: iface.mac });
        }
        let obj = bpf::load(outputs.obj.unwrap()).unwrap_or_else(|e| panic!("{e:#}"));
        ns.enter(|| devmapc_runtime::fill(&obj, &ir, &devices)).unwrap();
        Rig { ns, obj, ir, devices, _dir: dir }
    }

    fn ifindex(&self, device: &str) -> u32 {
        let at = self
            .ir
            .data
            .devices
            .iter()
            .position(|d| d.name == device)
            .unwrap_or_else(|| panic!("no device {device}"));
        self.devices[at].ifindex
    }

    /// Runs the twin of the program of `device` (the device's name is the
    /// program's) on `frame`.
    fn egress(&self, device: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let bss = self
            .obj
            .maps()
            .find(|m| m.name().to_string_lossy().ends_with(".bss"))
            .expect("the twins' global");
        bss.update(&0u32.to_ne_bytes(), &self.ifindex(device).to_ne_bytes(), MapFlags::ANY).unwrap();
        let prog = bpf::prog(&self.obj, &format!("devmapc_twin_{device}")).unwrap();
        let run = bpf::test_run(&prog, frame, None, 1).unwrap();
        (run.retval, run.data)
    }

    fn ingress(&self, frame: &[u8], on: &str) -> u32 {
        let prog = bpf::prog(&self.obj, names::INGRESS).unwrap();
        self.ns.enter(|| bpf::test_run(&prog, frame, Some(self.ifindex(on)), 1)).unwrap().retval
    }
}

// ------------------------------------------------------------------ model

/// What an egress program does, step by step, as the spec says it.
#[derive(Clone, Copy, Debug)]
enum Op {
    Push(u16),
    Pop,
    Retag(u16),
    /// `if ipv4.ttl <= 1 { drop }` then `ipv4.ttl -= 1`, and the same for
    /// `ipv6.hop_limit`.
    Hops,
    /// `if l4.dport == 53 { drop }`
    DropDns,
    /// `if ipv4.ttl > 10 || ipv6.hop_limit > 10 { vlan.push(id) }`
    PushIfYoung(u16),
}

/// The frame as the model sees it: its tags, outer first, each with its
/// TPID and marked as pushed by the program or not, and its IP hop count.
struct Model {
    tags: Vec<(u16, u16, bool)>,
    hops: u8,
    dport: u16,
}

impl Model {
    /// IP and L4 are found behind at most two of the frame's own tags.
    fn sees_ip(&self) -> bool {
        self.tags.iter().filter(|(_, _, pushed)| !pushed).count() <= 2
    }

    /// The action; the model is left as the frame is sent.
    fn run(&mut self, ops: &[Op]) -> u32 {
        for op in ops {
            match *op {
                Op::Push(id) => self.tags.insert(0, (id, 0x8100, true)),
                Op::Pop => {
                    if !self.tags.is_empty() {
                        self.tags.remove(0);
                    }
                }
                Op::Retag(id) => {
                    if let Some(outer) = self.tags.first_mut() {
                        outer.0 = id;
                    }
                }
                Op::Hops if self.sees_ip() => {
                    if self.hops <= 1 {
                        return XDP_DROP;
                    }
                    self.hops -= 1;
                }
                Op::DropDns if self.sees_ip() && self.dport == 53 => return XDP_DROP,
                Op::PushIfYoung(id) if self.sees_ip() && self.hops > 10 => {
                    self.tags.insert(0, (id, 0x8100, true))
                }
                Op::Hops | Op::DropDns | Op::PushIfYoung(_) => {}
            }
        }
        XDP_PASS
    }
}

// ------------------------------------------------------------- programs

const HOPS: &str = "if ipv4.ttl <= 1 { drop }\n        ipv4.ttl -= 1\n        if ipv6.hop_limit <= 1 { drop }\n        ipv6.hop_limit -= 1";

/// Each program: its name (also its device's), its statements, and the
/// model of them. Arguments are `a = 100`, `b = 200`.
fn programs() -> Vec<(&'static str, String, Vec<Op>)> {
    use Op::*;
    vec![
        ("keep", HOPS.into(), vec![Hops]),
        ("retag", format!("vlan.id = a\n        {HOPS}"), vec![Retag(100), Hops]),
        ("push", format!("vlan.push(a)\n        {HOPS}"), vec![Push(100), Hops]),
        ("pop", format!("vlan.pop()\n        {HOPS}"), vec![Pop, Hops]),
        ("push_push", format!("vlan.push(a)\n        vlan.push(b)\n        {HOPS}"), vec![Push(100), Push(200), Hops]),
        ("pop_push", format!("vlan.pop()\n        vlan.push(a)\n        {HOPS}"), vec![Pop, Push(100), Hops]),
        ("push_pop", format!("vlan.push(a)\n        vlan.pop()\n        {HOPS}"), vec![Push(100), Pop, Hops]),
        ("push_retag", format!("vlan.push(a)\n        vlan.id = b\n        {HOPS}"), vec![Push(100), Retag(200), Hops]),
        // Checks between the edits, each after its own.
        ("step", format!("{HOPS}\n        vlan.push(a)\n        {HOPS}\n        vlan.push(b)\n        {HOPS}\n        vlan.pop()\n        {HOPS}"), vec![Hops, Push(100), Hops, Push(200), Hops, Pop, Hops]),
        // A push on one branch only: the count of pushed tags is known at
        // run time alone after the `if`.
        ("maybe", format!("if ipv4.ttl > 10 || ipv6.hop_limit > 10 {{ vlan.push(a) }}\n        vlan.push(b)\n        {HOPS}"), vec![PushIfYoung(100), Push(200), Hops]),
        ("ports", "vlan.push(a)\n        vlan.push(b)\n        if l4.dport == 53 { drop }".into(), vec![Push(100), Push(200), DropDns]),
        ("pop_ports", "vlan.pop()\n        if l4.dport == 53 { drop }".into(), vec![Pop, DropDns]),
    ]
}

fn spec() -> String {
    let mut text =
        String::from("table { key = vlan.id }\ndevice in { ifname = \"in\" }\ningress { on = [in] }\n");
    for (n, (name, body, _)) in programs().iter().enumerate() {
        // Every program takes both arguments (one may go unused: a warning).
        text += &format!("egress {name}(a: u16, b: u16) {{\n        {body}\n    }}\n");
        text += &format!("device {name} {{ ifname = \"{name}\", egress = {name}(100, 200) }}\n");
        text += &format!("route {} -> {name}\n", n + 1);
    }
    text
}

// --------------------------------------------------------------- frames

const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// Inserts 802.1Q tags with these ids (outer first) in front of a frame's
/// own: how frames of more than two tags are made.
fn with_outer_tags(mut frame: Vec<u8>, ids: &[u16]) -> Vec<u8> {
    let tags: Vec<u8> = ids.iter().flat_map(|id| [0x81, 0x00, (id >> 8) as u8, *id as u8]).collect();
    frame.splice(12..12, tags);
    frame
}

/// A UDP frame with `tags` tags (ids 11, 12, 13, ...; the first two from
/// the builder, 802.1ad outside 802.1Q as on a QinQ trunk), IPv4 or IPv6,
/// with this TTL or hop limit.
fn frame(tags: usize, v6: bool, hops: u8, dport: u16) -> Vec<u8> {
    let ip = if v6 {
        Frame::new()
            .ipv6("2001:db8::1".parse::<Ipv6Addr>().unwrap(), "2001:db8::2".parse().unwrap())
            .hop_limit(hops)
    } else {
        Frame::new().ipv4(A4, B4).ttl(hops)
    };
    let mut f = ip.udp(4000, dport).payload(b"payload");
    let ids: Vec<u16> = (0..tags as u16).map(|i| 11 + i).collect();
    let own = tags.min(2);
    let (extra, built) = ids.split_at(tags - own);
    f = match built {
        [] => f,
        [one] => f.vlan(*one, 3),
        [outer, inner] => f.vlan_ad(*outer, 3).vlan(*inner, 0),
        _ => unreachable!(),
    };
    with_outer_tags(f.build(), extra)
}

fn hops_of(p: &Parsed) -> Option<u8> {
    p.ipv4.as_ref().map(|h| h.ttl).or(p.ipv6.as_ref().map(|h| h.hop_limit))
}

// ----------------------------------------------------------------- tests

/// Every program × 0 to 4 arriving tags × IPv4 and IPv6 × a live and an
/// expiring hop count × DNS or not: the action, the tags sent, the hop
/// count, the IPv4 checksum and the rest of the frame are what the model
/// says.
#[test]
fn statements_after_a_tag_edit_find_every_header_the_frame_still_has() {
    require_privileged!();
    let rig = Rig::new(&spec());
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, _, ops) in programs() {
        for tags in 0..=4 {
            for v6 in [false, true] {
                for hops in [64u8, 1] {
                    for dport in [53u16, 80] {
                        let input = frame(tags, v6, hops, dport);
                        let sent = parse(&input).unwrap();
                        let mut model = Model {
                            tags: sent.tags.iter().map(|t| (t.id, t.tpid, false)).collect(),
                            hops,
                            dport,
                        };
                        let want = model.run(&ops);
                        let (action, out) = rig.egress(name, &input);
                        let case = format!(
                            "{name}: {tags} tags, {}, hops {hops}, dport {dport}",
                            if v6 { "IPv6" } else { "IPv4" }
                        );
                        checked += 1;
                        if action != want {
                            failures.push(format!("{case}: action {action}, expected {want}"));
                            continue;
                        }
                        if action != XDP_PASS {
                            continue;
                        }
                        let got = parse(&out).unwrap_or_else(|e| panic!("{case}: {e:?}"));
                        let tags: Vec<(u16, u16)> =
                            model.tags.iter().map(|(id, tpid, _)| (*id, *tpid)).collect();
                        let got_tags: Vec<(u16, u16)> = got.tags.iter().map(|t| (t.id, t.tpid)).collect();
                        let mut wrong = Vec::new();
                        if got_tags != tags {
                            wrong.push(format!("tags (id, tpid) {got_tags:x?}, expected {tags:x?}"));
                        }
                        if hops_of(&got) != Some(model.hops) {
                            wrong.push(format!("hops {:?}, expected {}", hops_of(&got), model.hops));
                        }
                        if let Some(h) = &got.ipv4 {
                            if !h.checksum_valid {
                                wrong.push("bad IPv4 checksum".into());
                            }
                        }
                        let l4 = got.udp.as_ref().map(|u| (u.sport, u.dport));
                        if l4 != Some((4000, dport))
                            || !got.udp.as_ref().is_some_and(|u| u.checksum_valid)
                            || got.payload != b"payload"
                            || (got.src, got.dst) != (sent.src, sent.dst)
                        {
                            wrong.push(format!("the rest of the frame changed: {got:?}"));
                        }
                        if !wrong.is_empty() {
                            failures.push(format!("{case}: {}", wrong.join("; ")));
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, programs().len() * 5 * 2 * 2 * 2);
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ from the rule:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The case as it was reported: a push onto a two-tag frame, then the hop
/// limit (IPv6) or TTL (IPv4) alone, each program parsing one family only.
#[test]
fn a_push_onto_two_tags_still_decrements_and_drops_expired_packets() {
    require_privileged!();
    let rig = Rig::new(
        "table { key = vlan.id }
         device in { ifname = \"in\" }
         device e6 { ifname = \"e6\", egress = e6(7) }
         device e4 { ifname = \"e4\", egress = e4(7) }
         egress e6(vid: u16) { vlan.push(vid), if ipv6.hop_limit <= 1 { drop }, ipv6.hop_limit -= 1 }
         egress e4(vid: u16) { vlan.push(vid), if ipv4.ttl <= 1 { drop }, ipv4.ttl -= 1 }
         ingress { on = [in] }
         route 1 -> e6
         route 2 -> e4",
    );
    for (program, v6) in [("e6", true), ("e4", false)] {
        let (action, out) = rig.egress(program, &frame(2, v6, 64, 80));
        let out = parse(&out).unwrap();
        assert_eq!(
            (action, out.vlan_ids(), hops_of(&out)),
            (XDP_PASS, vec![7, 11, 12], Some(63)),
            "{program}"
        );
        assert!(out.ipv4.is_none_or(|h| h.checksum_valid), "{program}");
        assert_eq!(
            rig.egress(program, &frame(2, v6, 1, 80)).0,
            XDP_DROP,
            "{program}: an expired packet is dropped"
        );
    }
}

/// A frame of three tags or more: ingress keys on IP miss, as egress
/// statements on IP do nothing (the same limit of two tags on both sides);
/// a key on the outer tag finds it.
#[test]
fn ingress_keys_read_ip_behind_two_tags_at_most() {
    require_privileged!();
    let by_ip = Rig::new(
        "table { key = ipv4.dst, on_miss = drop }
         device in { ifname = \"in\" }
         device out { ifname = \"out\" }
         ingress { on = [in] }
         route 198.51.100.7 -> out",
    );
    for tags in 0..=2 {
        assert_eq!(by_ip.ingress(&frame(tags, false, 64, 80), "in"), XDP_REDIRECT, "{tags} tags");
    }
    assert_eq!(by_ip.ingress(&frame(3, false, 64, 80), "in"), XDP_DROP, "three tags: no IPv4 header, a miss");
    let by_tag = Rig::new(
        "table { key = vlan.id, on_miss = drop }
         device in { ifname = \"in\" }
         device out { ifname = \"out\" }
         ingress { on = [in] }
         route 11 -> out",
    );
    assert_eq!(by_tag.ingress(&frame(3, false, 64, 80), "in"), XDP_REDIRECT, "the outer of three tags");
    assert_eq!(
        by_tag.ingress(&with_outer_tags(frame(3, false, 64, 80), &[11]), "in"),
        XDP_REDIRECT,
        "the outer of four tags"
    );
}

/// The parser's count of pushed tags differs between the paths of a
/// program with pushes under conditions, and the verifier walks what
/// follows once per count: its work grows with the square of such pushes.
/// 24 of them (more than a frame's headroom usually allows, at four bytes
/// each) stay far under the kernel's limit of a million instructions.
#[test]
fn many_pushes_under_conditions_pass_the_verifier() {
    require_privileged!();
    let n = 24;
    let body: String = (1..=n)
        .map(|i| {
            format!(
                "        if ipv4.ttl > {} {{ vlan.push({i}) }}\n        if l4.dport == {i} {{ drop }}\n",
                i * 2
            )
        })
        .collect();
    let rig = Rig::new(&format!(
        "table {{ key = vlan.id }}\ndevice in {{ ifname = \"in\" }}\ndevice many {{ ifname = \"many\", egress = many }}\n\
         egress many {{\n{body}        ipv4.ttl -= 1\n    }}\ningress {{ on = [in] }}\nroute 1 -> many\n"
    ));
    let stats = bpf::prog_stats(&bpf::prog(&rig.obj, "devmapc_egress_many").unwrap()).unwrap();
    assert!(stats.verified_insns < 250_000, "{stats:?}");
    // TTL 30 takes the first 14 pushes (30 > 2, 4, ..., 28); the packet
    // still has its header behind them, and port 80 is none of the drops.
    let (action, out) = rig.egress("many", &frame(2, false, 30, 80));
    let out = parse(&out).unwrap();
    let pushed: Vec<u16> = (1..=14).rev().collect();
    assert_eq!(
        (action, out.vlan_ids()[..14].to_vec(), out.vlan_ids().len(), hops_of(&out)),
        (XDP_PASS, pushed, 16, Some(29))
    );
}
