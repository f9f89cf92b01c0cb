//! Section 3: zero loss. Live frames flow through the attached ingress
//! program while (a) the routes are re-applied 100 times and (b) the code
//! is upgraded 10 times; every frame for the unchanged route must arrive.
//!
//! The traffic: the test kit's `redirect` program, run with live frames on
//! a generator device `g`, redirects every frame into `pa`, so it arrives
//! on `a`, where devmapc's ingress program is attached (natively, through
//! a pinned BPF link). That program sends it to `b` (route 10.0.0.2, never
//! changed), whose peer counts it. Unlike a test run of the ingress program
//! itself, this goes through whatever program the link holds at the time.

use crate::control::routes_spec;
use crate::rig::{self, PinDir, Result, Rig};
use crate::stats::{ms_spread, Sample};
use crate::Config;
use devmapc::ir::Ir;
use devmapc::model::XdpMode;
use devmapc_runtime::{deploy, plan};
use devmapc_testkit::bpf::{self, RedirectCfg};
use devmapc_testkit::objects;
use devmapc_testkit::packet::Frame;
use libbpf_rs::{MapCore, MapFlags};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Frames per live test run of the generator.
const CHUNK: u32 = 50_000;

pub fn run(cfg: &Config) -> Result<(String, Vec<String>)> {
    let rig = Rig::new(&["a", "b", "c", "g"])?;
    let dir = rig.dir.path().to_path_buf();
    let pins = PinDir::new("zeroloss");
    let mut md = String::new();
    let mut missed = Vec::new();
    let (applies, upgrades) = if cfg.quick { (10, 3) } else { (100, 10) };
    let others = 1_000;

    // The traffic's route first (index 0 → 10.0.0.2 is added by `extra`),
    // then `others` routes that the re-applies move between b and c.
    let traffic = "route 10.0.0.2 -> b";
    let spec = |moved_all: bool, code_v2: bool| {
        let mut s = routes_spec(others, None, moved_all, traffic);
        if code_v2 {
            s = s.replace("on_miss = drop", "on_miss = pass");
        }
        s
    };
    let (obj_a, ir_a) = rig::build(&dir.join("a"), "zl", &spec(false, false))?;
    let (_, ir_b) = rig::build(&dir.join("b"), "zl", &spec(true, false))?;
    let (obj_v2, ir_v2) = rig::build(&dir.join("v2"), "zl", &spec(false, true))?;
    let devices = rig.devices(&ir_a);

    let first = deploy::load(&obj_a, &ir_a)?;
    rig.ns.enter(|| first.fill(&devices))?;
    let a = rig.iface("a").ifindex;
    let attachment = rig.ns.enter(|| first.attach_ingress(a, XdpMode::Native))?;
    let link = attachment.pin(&pins.0, "a")?;
    drop(attachment);

    // The generator: every frame into pa.
    let gen = bpf::load(objects::REDIRECT)?;
    let pa = rig.peer("a").ifindex;
    rig.ns.enter(|| -> Result<()> {
        bpf::map(&gen, "tx_ports")?.update(&1u32.to_ne_bytes(), &bpf::devmap_val(pa, None), MapFlags::ANY)?;
        bpf::map(&gen, "cfg")?.update(
            &0u32.to_ne_bytes(),
            &RedirectCfg { key: 1, key_from_ingress: false, flags: 0 }.to_bytes(),
            MapFlags::ANY,
        )?;
        Ok(())
    })?;
    let gen_prog = bpf::prog(&gen, "redirect")?;
    let g = rig.iface("g").ifindex;
    let frame = Frame::new()
        .ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(10, 0, 0, 2))
        .udp(1000, 53)
        .pad_to(60)
        .build();

    // Traffic alone first: that the path delivers everything.
    let baseline = {
        let before = rig.received("b");
        rig.ns.enter(|| bpf::test_run_live(&gen_prog, &frame, g, CHUNK, 0))?;
        rig.settled("b", Duration::from_secs(2)) - before
    };
    if baseline != CHUNK as u64 {
        return Err(
            format!("the traffic path delivers {baseline} of {CHUNK} frames with nothing changing").into()
        );
    }

    struct Outcome {
        sent: u64,
        received: u64,
        elsewhere: u64,
        seconds: f64,
        times: Sample,
        ops: Vec<usize>,
    }
    // Runs `change` while the generator sends, then counts.
    let with_traffic = |change: &mut dyn FnMut() -> Result<(Sample, Vec<usize>)>| -> Result<Outcome> {
        let stop = AtomicBool::new(false);
        let sent = AtomicU64::new(0);
        let (b0, c0) = (rig.received("b"), rig.received("c"));
        let start = Instant::now();
        let ns = &rig.ns;
        let gen_fd = gen_prog.as_fd().as_raw_fd();
        let frame = &frame;
        let result = std::thread::scope(|s| {
            let sender = s.spawn(|| {
                // SAFETY: the program outlives the scope.
                let prog = unsafe { BorrowedFd::borrow_raw(gen_fd) };
                ns.enter(|| {
                    while !stop.load(Ordering::Relaxed) {
                        bpf::test_run_live(&prog, frame, g, CHUNK, 0).expect("generator");
                        sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
                    }
                })
            });
            // Let the traffic start.
            std::thread::sleep(Duration::from_millis(20));
            let result = change();
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::Relaxed);
            sender.join().expect("the sender");
            result
        });
        let seconds = start.elapsed().as_secs_f64();
        let (times, ops) = result?;
        let received = rig.settled("b", Duration::from_secs(3)) - b0;
        Ok(Outcome {
            sent: sent.load(Ordering::Relaxed),
            received,
            elsewhere: rig.received("c") - c0,
            seconds,
            times,
            ops,
        })
    };

    // (a) re-applies against the kernel's maps, alternating versions.
    eprintln!("  zero loss: {applies} re-applies");
    let irs: [&Ir; 2] = [&ir_a, &ir_b];
    let reapply = with_traffic(&mut || {
        let mut times = Sample::default();
        let mut ops = Vec::new();
        for i in 0..applies {
            let (cur, next) = (irs[i % 2], irs[(i + 1) % 2]);
            let t = Instant::now();
            let p = rig.ns.enter(|| -> Result<plan::Plan> {
                let p = plan::diff(&plan::read_state(&first, cur)?, &plan::desired(next, &devices)?);
                plan::execute(&first, &p)?;
                Ok(p)
            })?;
            times.push(t.elapsed().as_secs_f64());
            ops.push(p.len());
        }
        Ok((times, ops))
    })?;
    // Back to version a if an odd number of applies left it at b.
    if applies % 2 == 1 {
        rig.ns.enter(|| {
            plan::execute(
                &first,
                &plan::diff(&plan::read_state(&first, &ir_b)?, &plan::desired(&ir_a, &devices)?),
            )
            .map_err(rig::Error::from)
        })?;
    }

    // (b) code upgrades: load, fill, swap; alternating versions.
    eprintln!("  zero loss: {upgrades} code upgrades");
    let mut keep = vec![first];
    let upgrade = with_traffic(&mut || {
        let mut times = Sample::default();
        for i in 0..upgrades {
            let (path, ir) = if i % 2 == 0 { (&obj_v2, &ir_v2) } else { (&obj_a, &ir_a) };
            let t = Instant::now();
            let next = deploy::load(path, ir)?;
            rig.ns.enter(|| next.fill(&devices))?;
            deploy::swap(&link, next.ingress())?;
            times.push(t.elapsed().as_secs_f64());
            keep.push(next);
            // The previous program stays loaded a moment (frames in
            // flight hold no reference, but a real deployment keeps the
            // old object until the swap returns): drop the one before it.
            if keep.len() > 2 {
                keep.remove(0);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((times, vec![]))
    })?;

    writeln!(md, "Live frames sent through the attached program (generator → `pa` → `a`, ingress program → `b`, counted on `b`'s peer) while the change runs; the route of the traffic (10.0.0.2 → b) is never changed. A baseline of {CHUNK} frames without a change was delivered in full first.\n").unwrap();
    writeln!(md, "| change | count | time per change | map ops per change | traffic time | frames sent | received | lost | to another device |\n|---|---:|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for (label, n, o) in [
        (
            format!(
                "(a) re-apply of {others} other routes moving between b and c, read back from the kernel"
            ),
            applies,
            &reapply,
        ),
        ("(b) code upgrade: load + fill + `bpf_link_update`".to_string(), upgrades, &upgrade),
    ] {
        let lost = o.sent as i64 - o.received as i64;
        if lost != 0 {
            missed.push(format!("zero loss {}: {lost} of {} frames lost", label, o.sent));
        }
        let ops = if o.ops.is_empty() {
            "—".to_string()
        } else {
            let (mn, mx) = (o.ops.iter().min().unwrap(), o.ops.iter().max().unwrap());
            if mn == mx {
                mn.to_string()
            } else {
                format!("{mn}–{mx}")
            }
        };
        writeln!(
            md,
            "| {label} | {n} | {} | {ops} | {:.2} s | {} | {} | **{lost}** | {} |",
            ms_spread(&o.times),
            o.seconds,
            o.sent,
            o.received,
            o.elsewhere
        )
        .unwrap();
    }
    writeln!(md).unwrap();
    drop(keep);
    Ok((md, missed))
}
