//! Section 1: the generated ingress program against hand-written C for the
//! same behaviour (compiler/tests/reference), per key kind: the kernel's
//! exact counts (bpf_prog_info), ns per packet (PROG_TEST_RUN, repeat), and
//! Mpps of live-frame redirects into a veth pair.

use crate::rig::{self, Result, Rig};
use crate::stats::{Paired, Spread};
use crate::Config;
use devmapc::ir::{fmix32, names, Ir};
use devmapc_runtime::deploy::{self, Loaded};
use devmapc_testkit::bpf::{self, XDP_PASS, XDP_REDIRECT};
use devmapc_testkit::packet::{Frame, Mac};
use libbpf_rs::{MapCore, MapFlags, Object};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HIT_MAC: Mac = [2, 0, 0, 0, 0, 2];
const MISS_MAC: Mac = [2, 0, 0, 0, 0, 9];

/// How the hand-written program finds its target.
#[derive(Clone, Copy)]
enum RefKey {
    /// `routes`: DEVMAP_HASH keyed by this u32 (native byte order), mixed
    /// with `fmix32` as the references do before their lookup.
    Direct(fn(&Rig) -> u32),
    /// `map`: key bytes → slot (2 = device b), then `slots`.
    Slot(&'static str, fn() -> Vec<u8>),
}

/// One key kind.
struct Case {
    label: &'static str,
    key: &'static str,
    route: &'static str,
    reference: &'static str,
    ref_prog: &'static str,
    ref_key: RefKey,
    hit: fn() -> Vec<u8>,
    miss: fn() -> Vec<u8>,
    /// Where a missing packet arrives (only `ingress.port` cares).
    miss_on_b: bool,
}

fn udp(dst: [u8; 4]) -> Frame {
    Frame::new().ipv4(SRC, Ipv4Addr::from(dst)).udp(1000, 53).pad_to(60)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "ingress.port",
            key: "ingress.port",
            route: "a",
            reference: "port.bpf.c",
            ref_prog: "port_patch",
            ref_key: RefKey::Direct(|rig| rig.iface("a").ifindex),
            hit: || udp([10, 0, 0, 2]).build(),
            miss: || udp([10, 0, 0, 2]).build(),
            miss_on_b: true,
        },
        Case {
            label: "vlan.id",
            key: "vlan.id",
            route: "10",
            reference: "vlan.bpf.c",
            ref_prog: "vlan_switch",
            ref_key: RefKey::Direct(|_| 10),
            hit: || udp([10, 0, 0, 2]).vlan(10, 0).build(),
            miss: || udp([10, 0, 0, 2]).vlan(99, 0).build(),
            miss_on_b: false,
        },
        Case {
            label: "ipv4.dst",
            key: "ipv4.dst",
            route: "10.0.0.2",
            reference: "ipv4.bpf.c",
            ref_prog: "ipv4_router",
            ref_key: RefKey::Direct(|_| u32::from_ne_bytes([10, 0, 0, 2])),
            hit: || udp([10, 0, 0, 2]).build(),
            miss: || udp([10, 0, 0, 9]).build(),
            miss_on_b: false,
        },
        Case {
            label: "eth.dst",
            key: "eth.dst",
            route: "02:00:00:00:00:02",
            reference: "eth.bpf.c",
            ref_prog: "mac_switch",
            ref_key: RefKey::Slot("keys", || HIT_MAC.to_vec()),
            hit: || udp([10, 0, 0, 2]).dst(HIT_MAC).build(),
            miss: || udp([10, 0, 0, 2]).dst(MISS_MAC).build(),
            miss_on_b: false,
        },
        Case {
            label: "lpm(ipv4.dst)",
            key: "lpm(ipv4.dst)",
            route: "10.0.0.0/24",
            reference: "lpm.bpf.c",
            ref_prog: "lpm_router",
            ref_key: RefKey::Slot("prefixes", || {
                let mut k = 24u32.to_ne_bytes().to_vec();
                k.extend([10, 0, 0, 0]);
                k
            }),
            hit: || udp([10, 0, 0, 2]).build(),
            miss: || udp([10, 9, 0, 1]).build(),
            miss_on_b: false,
        },
        Case {
            label: "(vlan.id, eth.dst)",
            key: "(vlan.id, eth.dst)",
            route: "(10, 02:00:00:00:00:02)",
            reference: "vlan_eth.bpf.c",
            ref_prog: "vlan_mac_switch",
            ref_key: RefKey::Slot("keys", || {
                let mut k = 10u16.to_be_bytes().to_vec();
                k.extend(HIT_MAC);
                k
            }),
            hit: || udp([10, 0, 0, 2]).dst(HIT_MAC).vlan(10, 0).build(),
            miss: || udp([10, 0, 0, 2]).dst(MISS_MAC).vlan(10, 0).build(),
            miss_on_b: false,
        },
    ]
}

fn spec(case: &Case, counters: bool, egress: bool) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "table {{ key = {}, counters = {}, on_miss = pass }}",
        case.key,
        if counters { "on" } else { "off" }
    )
    .unwrap();
    writeln!(s, "device a {{ ifname = \"a\" }}").unwrap();
    if egress {
        writeln!(s, "device b {{ ifname = \"b\", egress = stamp() }}").unwrap();
        writeln!(s, "egress stamp() {{\n    eth.src = egress.mac\n}}").unwrap();
    } else {
        writeln!(s, "device b {{ ifname = \"b\" }}").unwrap();
    }
    writeln!(s, "ingress {{ on = [a] }}\nroute {} -> b\nroute default -> b", case.route).unwrap();
    s
}

/// One side of a comparison, loaded and filled.
enum Side {
    Generated(Box<Loaded>),
    Reference { obj: Object, prog: String, _egress: Option<Object> },
}

/// Attaches the side's program natively to an idle veth of its own, and
/// keeps it there. A test run puts its program into the kernel's XDP
/// dispatcher and takes it out again when done, rewriting the dispatcher's
/// image both times (~20 ms of wall clock per run, whole timer ticks); a
/// program that is attached somewhere stays in the dispatcher, so test runs
/// then cost only what they run.
struct Parked {
    side: Side,
    _link: libbpf_rs::Link,
}

impl std::ops::Deref for Parked {
    type Target = Side;
    fn deref(&self) -> &Side {
        &self.side
    }
}

fn park(rig: &Rig, side: Side) -> Result<Parked> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (dev, _) = rig.ns.veth(&format!("s{n}"), &format!("ps{n}"))?;
    let link = rig.ns.enter(|| side.prog().attach_xdp(dev.ifindex as i32))?;
    Ok(Parked { side, _link: link })
}

impl Side {
    fn object(&self) -> &Object {
        match self {
            Side::Generated(l) => l.object(),
            Side::Reference { obj, .. } => obj,
        }
    }

    fn prog_name(&self) -> &str {
        match self {
            Side::Generated(_) => names::INGRESS,
            Side::Reference { prog, .. } => prog,
        }
    }

    fn prog(&self) -> libbpf_rs::ProgramMut<'_> {
        bpf::prog(self.object(), self.prog_name()).expect("the ingress program")
    }

    fn default_map(&self) -> &'static str {
        match self {
            Side::Generated(_) => names::DEFAULT,
            Side::Reference { .. } => "default_slot",
        }
    }

    /// Sets the default route's slot (0: none).
    fn set_default(&self, slot: u32) -> Result<()> {
        let map = bpf::map(self.object(), self.default_map())?;
        map.update(&0u32.to_ne_bytes(), &slot.to_ne_bytes(), MapFlags::ANY)?;
        Ok(())
    }
}

fn load_generated(rig: &Rig, obj: &Path, ir: &Ir) -> Result<Side> {
    let loaded = deploy::load(obj, ir)?;
    let devices = rig.devices(ir);
    rig.ns.enter(|| loaded.fill(&devices))?;
    Ok(Side::Generated(Box::new(loaded)))
}

/// Loads a reference and writes what the generated program's maps hold for
/// the same spec: the route, slots 1 (a) and 2 (b), the default slot 2;
/// counters' entries for the route; the egress program and b's MAC.
fn load_reference(
    rig: &Rig,
    case: &Case,
    obj: &Path,
    prog: &str,
    counters: bool,
    egress: Option<&Path>,
) -> Result<Side> {
    let ref_obj = bpf::load(obj)?;
    let egress_obj = match egress {
        Some(path) => Some(bpf::load(path)?),
        None => None,
    };
    let (a, b) = (rig.device("a"), rig.device("b"));
    let egress_fd: Option<BorrowedFd<'_>> = match &egress_obj {
        Some(e) => {
            let macs = bpf::map(e, "egress_macs")?;
            macs.update(&b.ifindex.to_ne_bytes(), &b.mac, MapFlags::ANY)?;
            // SAFETY: the fd lives as long as egress_obj, which outlives
            // every use below.
            Some(unsafe { BorrowedFd::borrow_raw(bpf::prog(e, "stamp")?.as_fd().as_raw_fd()) })
        }
        None => None,
    };
    rig.ns.enter(|| -> Result<()> {
        let slots = bpf::map(&ref_obj, "slots")?;
        slots.update(&1u32.to_ne_bytes(), &bpf::devmap_val(a.ifindex, None), MapFlags::ANY)?;
        slots.update(&2u32.to_ne_bytes(), &bpf::devmap_val(b.ifindex, egress_fd), MapFlags::ANY)?;
        match case.ref_key {
            RefKey::Direct(key) => {
                let key = fmix32(key(rig));
                let routes = bpf::map(&ref_obj, "routes")?;
                routes.update(&key.to_ne_bytes(), &bpf::devmap_val(b.ifindex, egress_fd), MapFlags::ANY)?;
                if counters {
                    let cpus = libbpf_rs::num_possible_cpus()?;
                    let zero = vec![vec![0u8; 16]; cpus];
                    bpf::map(&ref_obj, "key_counters")?.update_percpu(
                        &key.to_ne_bytes(),
                        &zero,
                        MapFlags::ANY,
                    )?;
                }
            }
            RefKey::Slot(map, key) => {
                bpf::map(&ref_obj, map)?.update(&key(), &2u32.to_ne_bytes(), MapFlags::ANY)?;
            }
        }
        bpf::map(&ref_obj, "default_slot")?.update(
            &0u32.to_ne_bytes(),
            &2u32.to_ne_bytes(),
            MapFlags::ANY,
        )?;
        Ok(())
    })?;
    Ok(Side::Reference { obj: ref_obj, prog: prog.to_string(), _egress: egress_obj })
}

/// The two sides decide alike: without a default route the hit frame is
/// redirected and the miss frame passed; with it, both are redirected.
fn sanity(rig: &Rig, case: &Case, side: &Side) -> Result<()> {
    let (a, b) = (rig.iface("a").ifindex, rig.iface("b").ifindex);
    let miss_on = if case.miss_on_b { b } else { a };
    let prog = side.prog();
    let run =
        |frame: &[u8], on: u32| rig.ns.enter(|| bpf::test_run(&prog, frame, Some(on), 1)).map(|r| r.retval);
    side.set_default(0)?;
    let without = (run(&(case.hit)(), a)?, run(&(case.miss)(), miss_on)?);
    side.set_default(2)?;
    let with = (run(&(case.hit)(), a)?, run(&(case.miss)(), miss_on)?);
    if without != (XDP_REDIRECT, XDP_PASS) || with != (XDP_REDIRECT, XDP_REDIRECT) {
        return Err(format!(
            "{} ({}): hit/miss returned {without:?} without a default route and {with:?} with one",
            case.label,
            side.prog_name()
        )
        .into());
    }
    Ok(())
}

/// Test runs per ns/packet measurement; the fastest counts. On a shared
/// VM, noise (preemption, a neighbour's load) only ever adds time, so the
/// minimum of a few short runs is the program's own cost.
const NS_SUB_RUNS: u32 = 5;

/// ns per packet: the fastest of [`NS_SUB_RUNS`] PROG_TEST_RUNs sharing
/// `repeat` runs, wall clock (the kernel's own figure is a whole number of
/// ns, too coarse for ratios).
fn ns_per_packet(rig: &Rig, side: &Side, frame: &[u8], on: u32, repeat: u32) -> f64 {
    let prog = side.prog();
    let per_run = (repeat / NS_SUB_RUNS).max(1);
    // Timed inside the namespace: setns itself waits for RCU (ms).
    rig.ns.enter(|| {
        (0..NS_SUB_RUNS)
            .map(|_| {
                let start = Instant::now();
                let run = bpf::test_run(&prog, frame, Some(on), per_run).expect("test run");
                let elapsed = start.elapsed();
                assert_eq!(run.retval, XDP_REDIRECT);
                if std::env::var_os("DEVMAPC_BENCH_DEBUG").is_some() {
                    eprintln!("kernel {} ns, wall {elapsed:?} for {per_run}", run.duration_ns);
                }
                elapsed.as_secs_f64() * 1e9 / per_run as f64
            })
            .fold(f64::INFINITY, f64::min)
    })
}

/// Mpps of `frames` live frames redirected from `a` to `b` (wall clock of
/// the test run); adds the frames not counted behind `b` to `lost.0`, and
/// what the veth pair itself reports dropped (a full queue) to `lost.1`.
fn live_mpps(rig: &Rig, side: &Side, frame: &[u8], frames: u32, lost: &mut (u64, u64)) -> f64 {
    let prog = side.prog();
    let a = rig.iface("a").ifindex;
    let dropped = || {
        let b = rig.ns.stats("b").map_or(0, |s| s.tx_dropped + s.rx_dropped);
        let pb = rig.ns.stats("pb").map_or(0, |s| s.tx_dropped + s.rx_dropped);
        b + pb
    };
    let (before, dropped_before) = (rig.received("b"), dropped());
    let elapsed = rig.ns.enter(|| {
        let start = Instant::now();
        bpf::test_run_live(&prog, frame, a, frames, 0).expect("live test run");
        start.elapsed()
    });
    let got = rig.settled("b", Duration::from_secs(2)) - before;
    lost.0 += (frames as u64).saturating_sub(got);
    lost.1 += dropped() - dropped_before;
    frames as f64 / elapsed.as_secs_f64() / 1e6
}

pub struct Results {
    pub markdown: String,
    pub missed: Vec<String>,
}

pub fn run(cfg: &Config) -> Result<Results> {
    let rig = Rig::new(&["a", "b"])?;
    let dir = rig.dir.path().to_path_buf();
    // Pairs for Mpps, pairs for ns/packet (each side the fastest of
    // NS_SUB_RUNS runs: cheap, so many more pairs), repeat, live frames.
    let (reps, ns_reps, repeat, frames) =
        if cfg.quick { (3, 3, 100_000, 200_000) } else { (11, 31, 2_000_000, 2_000_000) };
    let a = rig.iface("a").ifindex;
    let b = rig.iface("b").ifindex;
    let mut md = String::new();
    let mut missed = Vec::new();

    let mut counts = String::new();
    let mut timing = String::new();
    let mut live = String::new();
    let egress_ref = rig::compile_reference("egress.bpf.c", &dir)?;

    for (n, case) in cases().iter().enumerate() {
        eprintln!("  data path: {}", case.label);
        let (obj, ir) = rig::build(&dir.join(format!("k{n}")), "bench", &spec(case, false, false))?;
        let generated = park(&rig, load_generated(&rig, &obj, &ir)?)?;
        let ref_obj = rig::compile_reference(case.reference, &dir)?;
        let reference = park(&rig, load_reference(&rig, case, &ref_obj, case.ref_prog, false, None)?)?;
        sanity(&rig, case, &generated)?;
        sanity(&rig, case, &reference)?;

        let g = bpf::prog_stats(&generated.prog())?;
        let r = bpf::prog_stats(&reference.prog())?;
        let ratio = g.verified_insns as f64 / r.verified_insns as f64;
        if ratio > 1.0 {
            missed.push(format!(
                "{}: verified instructions {}/{} = {ratio:.3}× (target ≤ 1.00×)",
                case.label, g.verified_insns, r.verified_insns
            ));
        }
        writeln!(
            counts,
            "| `{}` | `{}` | {} / {} | **{:.2}×** | {} / {} | {} / {} |",
            case.label,
            case.reference,
            g.verified_insns,
            r.verified_insns,
            ratio,
            g.xlated_len,
            r.xlated_len,
            g.jited_len,
            r.jited_len
        )
        .unwrap();

        let miss_on = if case.miss_on_b { b } else { a };
        let (hit, miss) = ((case.hit)(), (case.miss)());
        let hit_p = Paired::measure(
            ns_reps,
            || ns_per_packet(&rig, &generated, &hit, a, repeat),
            || ns_per_packet(&rig, &reference, &hit, a, repeat),
        );
        let miss_p = Paired::measure(
            ns_reps,
            || ns_per_packet(&rig, &generated, &miss, miss_on, repeat),
            || ns_per_packet(&rig, &reference, &miss, miss_on, repeat),
        );
        for (what, p) in [("hit", &hit_p), ("miss", &miss_p)] {
            if p.ratio.median() > 1.03 {
                missed.push(format!(
                    "{} ({what}): ns/packet {:.3}× (target ≤ 1.03×)",
                    case.label,
                    p.ratio.median()
                ));
            }
        }
        writeln!(
            timing,
            "| `{}` | {:.1} / {:.1} | {} | {:.1} / {:.1} | {} |",
            case.label,
            hit_p.a.median(),
            hit_p.b.median(),
            hit_p.ratio_text(),
            miss_p.a.median(),
            miss_p.b.median(),
            miss_p.ratio_text()
        )
        .unwrap();

        let (mut lost_g, mut lost_r) = ((0, 0), (0, 0));
        let p = Paired::measure(
            reps,
            || live_mpps(&rig, &generated, &hit, frames, &mut lost_g),
            || live_mpps(&rig, &reference, &hit, frames, &mut lost_r),
        );
        live_row(
            &mut live,
            &mut missed,
            &format!("`{}`", case.label),
            "none",
            "off",
            &p,
            lost_g,
            lost_r,
            reps as u64 * frames as u64,
        );
    }

    // ipv4.dst with an egress program and/or counters, against the
    // references with the same (ipv4_counters.bpf.c, egress.bpf.c); then
    // what counters cost the generated program.
    let cases = cases();
    let case = cases.iter().find(|c| c.label == "ipv4.dst").expect("ipv4.dst");
    let hit = (case.hit)();
    let mut cost = String::new();
    let mut variants: Vec<(bool, bool, Parked, Parked)> = Vec::new();
    for (counters, egress) in [(false, true), (true, false), (true, true)] {
        let (obj, ir) =
            rig::build(&dir.join(format!("v{counters}{egress}")), "bench", &spec(case, counters, egress))?;
        let generated = park(&rig, load_generated(&rig, &obj, &ir)?)?;
        let (file, prog) = if counters {
            ("ipv4_counters.bpf.c", "ipv4_router_counted")
        } else {
            ("ipv4.bpf.c", "ipv4_router")
        };
        let ref_obj = rig::compile_reference(file, &dir)?;
        let reference = park(
            &rig,
            load_reference(&rig, case, &ref_obj, prog, counters, egress.then_some(egress_ref.as_path()))?,
        )?;
        sanity(&rig, case, &generated)?;
        sanity(&rig, case, &reference)?;
        variants.push((counters, egress, generated, reference));
    }
    for (counters, egress, generated, reference) in &variants {
        eprintln!("  data path: ipv4.dst, counters {counters}, egress {egress}");
        let (mut lost_g, mut lost_r) = ((0, 0), (0, 0));
        let p = Paired::measure(
            reps,
            || live_mpps(&rig, generated, &hit, frames, &mut lost_g),
            || live_mpps(&rig, reference, &hit, frames, &mut lost_r),
        );
        live_row(
            &mut live,
            &mut missed,
            "`ipv4.dst`",
            if *egress { "`eth.src = egress.mac`" } else { "none" },
            if *counters { "on" } else { "off" },
            &p,
            lost_g,
            lost_r,
            reps as u64 * frames as u64,
        );
        if *counters {
            let tns = Paired::measure(
                ns_reps,
                || ns_per_packet(&rig, generated, &hit, a, repeat),
                || ns_per_packet(&rig, reference, &hit, a, repeat),
            );
            writeln!(
                timing,
                "| `ipv4.dst`, counters on{} | {:.1} / {:.1} | {} | | |",
                if *egress { ", egress program in the route (not run by a plain test run)" } else { "" },
                tns.a.median(),
                tns.b.median(),
                tns.ratio_text()
            )
            .unwrap();
        }
    }
    // Counters' cost: generated with counters against generated without,
    // for `ipv4.dst` (a direct key: counted per key in a PERCPU_HASH) with
    // and without the egress program, and for `lpm(ipv4.dst)` (a lowered
    // key: counted per slot in a PERCPU_ARRAY).
    let cost_dir = dir.join("cost");
    for (label, egress) in [("ipv4.dst", false), ("ipv4.dst", true), ("lpm(ipv4.dst)", false)] {
        let case = cases.iter().find(|c| c.label == label).expect("a benchmarked key");
        let hit = (case.hit)();
        let load = |counters: bool| -> Result<Parked> {
            let (obj, ir) = rig::build(
                &cost_dir.join(format!("{}-{egress}-{counters}", case.reference)),
                "bench",
                &spec(case, counters, egress),
            )?;
            park(&rig, load_generated(&rig, &obj, &ir)?)
        };
        let with = load(true)?;
        let without = load(false)?;
        let (mut l1, mut l2) = ((0, 0), (0, 0));
        let p = Paired::measure(
            reps,
            || live_mpps(&rig, &with, &hit, frames, &mut l1),
            || live_mpps(&rig, &without, &hit, frames, &mut l2),
        );
        let tns = Paired::measure(
            ns_reps,
            || ns_per_packet(&rig, &with, &hit, a, repeat),
            || ns_per_packet(&rig, &without, &hit, a, repeat),
        );
        // Cost: how much slower with counters (1 - Mpps ratio).
        let mpps_cost = 1.0 - p.ratio.median();
        let egress_text = if egress { "`eth.src = egress.mac`" } else { "none" };
        if mpps_cost >= 0.05 {
            missed.push(format!(
                "counters cost {:.1} % of Mpps for `{label}`{} (target < 5 %)",
                mpps_cost * 100.0,
                if egress { " with an egress program" } else { "" }
            ));
        }
        writeln!(
            cost,
            "| `{label}` | {egress_text} | {:.2} / {:.2} | {} | **{:.1} %** | {:.1} / {:.1} ns, {} |",
            p.a.median(),
            p.b.median(),
            p.ratio_text(),
            mpps_cost * 100.0,
            tns.a.median(),
            tns.b.median(),
            tns.ratio_text()
        )
        .unwrap();
    }

    writeln!(md, "### Verifier and JIT: exact counts from `bpf_prog_info`\n").unwrap();
    writeln!(md, "Generated / hand-written; the ratio is of verified instructions (target ≤ 1.00×). Counters off, no egress program, `route default` present.\n").unwrap();
    writeln!(
        md,
        "| key | reference | verified insns | ratio | xlated bytes | JIT bytes |\n|---|---|---:|---:|---:|---:|\n{counts}"
    )
    .unwrap();
    writeln!(md, "### ns per packet: `BPF_PROG_TEST_RUN`\n").unwrap();
    writeln!(
        md,
        "Generated / hand-written, median of {ns_reps} pairs; each side of a pair is the fastest of {NS_SUB_RUNS} test runs of {} repeats (wall clock of a run ÷ its repeats: noise only adds time); ratio: median [min, max] of the per-pair ratios (target ≤ 1.03×). A miss takes `route default` (one more lookup and redirect).\n", repeat / NS_SUB_RUNS
    )
    .unwrap();
    writeln!(
        md,
        "| key | hit ns gen / ref | hit ratio | miss ns gen / ref | miss ratio |\n|---|---:|---:|---:|---:|\n{timing}"
    )
    .unwrap();
    writeln!(md, "### Mpps: live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`) redirected into a veth pair\n")
        .unwrap();
    writeln!(
        md,
        "{frames} 60-byte UDP frames per run arriving on `a`, redirected to `b`, counted by an XDP program on `b`'s peer; Mpps from the wall clock of the run; median of {reps} pairs, ratio per pair (target ≥ 0.97×). *lost (veth drops)*: frames sent but not counted behind `b`, over all runs of that side, and in brackets the drops the veth pair reports itself (`ip -s link`: its queue was full, the receiver's NAPI fell behind — not a decision of the program).\n"
    )
    .unwrap();
    writeln!(
        md,
        "| key | egress program | counters | Mpps gen / ref | ratio | lost (veth drops) gen / ref |\n|---|---|---|---:|---:|---:|\n{live}"
    )
    .unwrap();
    writeln!(md, "### What counters cost (generated programs)\n").unwrap();
    writeln!(md, "With counters / without, same run, alternating (target: cost < 5 %, i.e. ratio > 0.95).\n")
        .unwrap();
    writeln!(
        md,
        "| key | egress program | Mpps with / without | ratio | cost | ns/packet with / without, ratio |\n|---|---|---:|---:|---:|---|\n{cost}"
    )
    .unwrap();
    Ok(Results { markdown: md, missed })
}

#[allow(clippy::too_many_arguments)]
fn live_row(
    out: &mut String,
    missed: &mut Vec<String>,
    key: &str,
    egress: &str,
    counters: &str,
    p: &Paired,
    lost_g: (u64, u64),
    lost_r: (u64, u64),
    sent: u64,
) {
    if p.ratio.median() < 0.97 {
        missed.push(format!(
            "{key}, egress {egress}, counters {counters}: Mpps {:.3}× (target ≥ 0.97×)",
            p.ratio.median()
        ));
    }
    writeln!(
        out,
        "| {key} | {egress} | {counters} | {:.2} / {:.2} | {} | {} ({}) / {} ({}) of {sent} |",
        p.a.median(),
        p.b.median(),
        Spread(&p.ratio, 3),
        lost_g.0,
        lost_g.1,
        lost_r.0,
        lost_r.1
    )
    .unwrap();
}
