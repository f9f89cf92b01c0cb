//! Section 2: the control plane. Filling a table against a bare libbpf
//! update loop over the same entries; an apply that changes one route of a
//! 64k-route table (plan::{read_state, desired, diff, execute}); a code
//! upgrade through bpf_link_update (deploy::swap); apply, status and a
//! one-route re-apply of a deployment of 200k adjacent routes.

use crate::rig::{self, PinDir, Result, Rig};
use crate::stats::{ms, ms_spread, Paired, Sample};
use crate::Config;
use devmapc::ir::{encode_key, names, Ir, TargetRef};
use devmapc::model::XdpMode;
use devmapc_runtime::{deploy, plan, Device};
use devmapc_testkit::bpf;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{MapCore, MapFlags, Object};
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

/// A spec of `n` `ipv4.dst` routes spread over devices b and c, with room
/// for 64k; `moved` sends route `moved` to the other device, `flip` every
/// route; `extra` goes before the routes.
pub fn routes_spec(n: usize, moved: Option<usize>, flip: bool, extra: &str) -> String {
    let mut s = String::with_capacity(n * 32 + 512);
    writeln!(s, "table {{ key = ipv4.dst, max_entries = 65536, counters = off, on_miss = drop }}").unwrap();
    writeln!(
        s,
        "device a {{ ifname = \"a\" }}\ndevice b {{ ifname = \"b\" }}\ndevice c {{ ifname = \"c\" }}"
    )
    .unwrap();
    writeln!(s, "ingress {{ on = [a], mode = native }}\n{extra}").unwrap();
    for i in 0..n {
        let [_, x, y, z] = (i as u32).to_be_bytes();
        let mut target = if i % 2 == 0 { "b" } else { "c" };
        if moved == Some(i) || flip {
            target = if target == "b" { "c" } else { "b" };
        }
        writeln!(s, "route {}.{y}.{z}.{} -> {target}", 11 + x, 1).unwrap();
    }
    s
}

/// A spec of `n` adjacent `ipv4.dst` routes, 10.0.0.0 and up, alternating
/// between devices b and c; `moved` sends that route to the other device.
fn adjacent_spec(n: usize, moved: Option<usize>) -> String {
    let mut s = String::with_capacity(n * 32 + 512);
    writeln!(
        s,
        "table {{ key = ipv4.dst, max_entries = {}, counters = on, on_miss = drop }}",
        n.next_power_of_two()
    )
    .unwrap();
    writeln!(
        s,
        "device a {{ ifname = \"a\" }}\ndevice b {{ ifname = \"b\" }}\ndevice c {{ ifname = \"c\" }}\ningress {{ on = [a], mode = native }}"
    )
    .unwrap();
    for i in 0..n {
        let even = i % 2 == 0;
        let target = if even != (moved == Some(i)) { "b" } else { "c" };
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
        writeln!(s, "route {addr} -> {target}").unwrap();
    }
    s
}

/// `apply`, `status` and a re-apply with one route changed, through the
/// library calls behind the commands, on a pinned deployment of adjacent
/// `ipv4.dst` routes (one /14 and then some: before direct keys were mixed,
/// they shared a handful of buckets and `status` took over a minute).
fn adjacent_routes(cfg: &Config, rig: &Rig, reps: usize) -> Result<(String, Vec<String>)> {
    let n = if cfg.quick { 20_000 } else { 200_000 };
    let reps = if cfg.quick { 1 } else { reps.min(3) };
    eprintln!("  control: apply, status, re-apply at {n} adjacent routes");
    let dir = rig.dir.path().join("adjacent");
    let t = Instant::now();
    let (v1_path, v1_ir) = rig::build(&dir.join("v1"), "adjacent", &adjacent_spec(n, None))?;
    let build_time = t.elapsed().as_secs_f64();
    let (v2_path, v2_ir) = rig::build(&dir.join("v2"), "adjacent", &adjacent_spec(n, Some(n / 2 + 1)))?;
    let pins = PinDir::new("adjacent");
    let opts = devmapc_runtime::apply::Options {
        allow_not_ready: true,
        ..devmapc_runtime::apply::Options::new(&pins.0)
    };
    let timed = |path: &std::path::Path, ir: &Ir| -> Result<(f64, devmapc_runtime::apply::Report)> {
        rig.ns.enter(|| {
            let t = Instant::now();
            let report = devmapc_runtime::apply::apply(path, ir, &opts)?;
            Ok((t.elapsed().as_secs_f64(), report))
        })
    };
    let (first, report) = timed(&v1_path, &v1_ir)?;
    if report.plan.len() < n {
        return Err(format!("the first apply of {n} routes: {report}").into());
    }
    let (mut status_t, mut reapply_t) = (Sample::default(), Sample::default());
    let builds = [(&v2_path, &v2_ir), (&v1_path, &v1_ir)];
    for i in 0..reps * 2 {
        // `status` once per version: at this size it is the slow step.
        if i < 2 {
            let t = Instant::now();
            let status = rig.ns.enter(|| devmapc_runtime::status::status(&pins.0))?;
            status_t.push(t.elapsed().as_secs_f64());
            if !status.drift.is_empty() || status.routes.len() != n {
                return Err(format!(
                    "status at {n} routes: {} routes, drift {:?}",
                    status.routes.len(),
                    status.drift
                )
                .into());
            }
        }
        let (path, ir) = builds[i % 2];
        let (t, report) = timed(path, ir)?;
        // A route moved: its entry replaced (its counter stays).
        if !report.read_back || report.plan.len() != 1 {
            return Err(format!("re-apply of 1 changed route in {n}: {report}").into());
        }
        reapply_t.push(t);
    }
    rig.ns.enter(|| devmapc_runtime::deploy::detach(&pins.0))?;
    let mut md = String::new();
    let mut missed = Vec::new();
    writeln!(
        md,
        "### {n} adjacent `ipv4.dst` routes: apply, status, re-apply
"
    )
    .unwrap();
    writeln!(
        md,
        "Routes 10.0.0.0 and up, one per address, alternating between two devices, counters on; the library calls behind `devmapc apply` and `devmapc status` on a pinned deployment (the CLI adds the build). The re-apply reads every entry back (drift repair) and changes one route; {} re-applies, alternating between the two versions; `status` (routes, counters, drift) before the first two. Target: seconds, not minutes.\n",
        reps * 2
    )
    .unwrap();
    writeln!(md, "| step | time |\n|---|---|").unwrap();
    writeln!(md, "| build (check, lower, render, clang) | {} |", ms(build_time)).unwrap();
    writeln!(md, "| first apply (load, {n} map writes, attach) | {} |", ms(first)).unwrap();
    writeln!(md, "| **status** | **{}** |", ms_spread(&status_t)).unwrap();
    writeln!(
        md,
        "| **re-apply, 1 route changed** (read back, diff, 1 map operation) | **{}** |\n",
        ms_spread(&reapply_t)
    )
    .unwrap();
    for (what, sample) in [("status", &status_t), ("a one-route re-apply", &reapply_t)] {
        if sample.median() >= 10.0 {
            missed.push(format!("{what} at {n} adjacent routes: {} (target: seconds)", ms(sample.median())));
        }
    }
    Ok((md, missed))
}

/// Every route and slot entry of `ir` as (map fd, key, value), encoded
/// beforehand, for the bare loop.
/// One map write: the map's fd, the key, the value.
type Entry = (i32, Vec<u8>, [u8; 8]);

fn entries(obj: &Object, ir: &Ir, devices: &[Device]) -> Result<Vec<Entry>> {
    let routes = bpf::map(obj, names::ROUTES)?.as_fd().as_raw_fd();
    let slots = bpf::map(obj, names::SLOTS)?.as_fd().as_raw_fd();
    let ifindex = |d: usize| devices.get(d).map(|dev| dev.ifindex);
    let mut out = Vec::with_capacity(ir.data.routes.len() + devices.len());
    for (i, d) in devices.iter().enumerate() {
        out.push((slots, (1 + i as u32).to_ne_bytes().to_vec(), bpf::devmap_val(d.ifindex, None)));
    }
    for route in &ir.data.routes {
        let TargetRef::Device(d) = route.target else {
            return Err("bench routes go to devices".into());
        };
        let key = encode_key(&ir.code.key, &route.key, &ifindex).map_err(|e| format!("{e:?}"))?;
        out.push((routes, key, bpf::devmap_val(devices[d].ifindex, None)));
    }
    Ok(out)
}

fn bare_loop(entries: &[(i32, Vec<u8>, [u8; 8])]) -> Result<()> {
    for (fd, key, value) in entries {
        // SAFETY: valid map fd, key and value buffers of the map's sizes.
        let rc = unsafe {
            libbpf_sys::bpf_map_update_elem(
                *fd,
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                libbpf_sys::BPF_ANY as u64,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::from_raw_os_error(-rc).into());
        }
    }
    Ok(())
}

/// `3`, or `1–3` when the counts differ.
fn count_text(counts: &[usize]) -> String {
    let (mn, mx) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
    if mn == mx {
        format!("{mn}")
    } else {
        format!("{mn}–{mx}")
    }
}

pub fn run(cfg: &Config) -> Result<(String, Vec<String>)> {
    let rig = Rig::new(&["a", "b", "c"])?;
    let dir = rig.dir.path().to_path_buf();
    let mut md = String::new();
    let mut missed = Vec::new();
    let sizes: &[usize] = if cfg.quick { &[1_000, 10_000] } else { &[1_000, 10_000, 65_536] };
    let reps = if cfg.quick { 3 } else { 7 };

    // ---- fill
    writeln!(md, "### Filling a table (DEVMAP_HASH has no batch operations)\n").unwrap();
    writeln!(
        md,
        "`ipv4.dst` routes over two devices (counters off), into a freshly loaded object each time: devmapc's `fill` (encodes each route's key and writes it, then the slots and default) against a bare loop of `bpf_map_update_elem` over the same, already encoded entries. {reps} pairs, alternating; ratio = bare time ÷ devmapc time, per pair (target ≥ 0.9×).\n"
    )
    .unwrap();
    writeln!(md, "*hoisted*: the same steps as `fill` (encode each key, libbpf-rs `update`) with the map handle and the devmap values looked up once instead of per route, against the bare loop again (its own {reps} pairs).\n").unwrap();
    writeln!(
        md,
        "| routes | devmapc fill | bare loop | ratio | devmapc per entry | ratio, hoisted |\n|---:|---|---|---:|---:|---:|"
    )
    .unwrap();
    for &n in sizes {
        eprintln!("  control: fill {n}");
        let (obj_path, ir) =
            rig::build(&dir.join(format!("fill{n}")), "fill", &routes_spec(n, None, false, ""))?;
        let devices = rig.devices(&ir);
        let time_fill = || -> f64 {
            let obj = bpf::load(&obj_path).expect("load");
            rig.ns.enter(|| {
                let t = Instant::now();
                devmapc_runtime::fill(&obj, &ir, &devices).expect("fill");
                t.elapsed().as_secs_f64()
            })
        };
        let time_bare = || -> f64 {
            let obj = bpf::load(&obj_path).expect("load");
            let entries = entries(&obj, &ir, &devices).expect("entries");
            rig.ns.enter(|| {
                let t = Instant::now();
                bare_loop(&entries).expect("bare loop");
                t.elapsed().as_secs_f64()
            })
        };
        // What fill does per route (encode the key, libbpf-rs update), with
        // the map handle and the values found once instead of per route:
        // where the difference to the bare loop comes from.
        let time_hoisted = || -> f64 {
            let obj = bpf::load(&obj_path).expect("load");
            rig.ns.enter(|| {
                let t = Instant::now();
                let routes = bpf::map(&obj, names::ROUTES).expect("routes");
                let values: Vec<[u8; 8]> = devices.iter().map(|d| bpf::devmap_val(d.ifindex, None)).collect();
                let ifindex = |d: usize| devices.get(d).map(|dev| dev.ifindex);
                for route in &ir.data.routes {
                    let TargetRef::Device(d) = route.target else { panic!("bench routes go to devices") };
                    let key = encode_key(&ir.code.key, &route.key, &ifindex).expect("key");
                    routes.update(&key, &values[d], MapFlags::ANY).expect("update");
                }
                let slots = bpf::map(&obj, names::SLOTS).expect("slots");
                for (i, v) in values.iter().enumerate() {
                    slots.update(&(1 + i as u32).to_ne_bytes(), v, MapFlags::ANY).expect("update");
                }
                t.elapsed().as_secs_f64()
            })
        };
        let p = Paired::measure(reps, time_bare, time_fill);
        let h = Paired::measure(reps, time_bare, time_hoisted);
        if p.ratio.median() < 0.9 {
            missed
                .push(format!("fill of {n} routes: {:.3}× of a bare loop (target ≥ 0.9×)", p.ratio.median()));
        }
        writeln!(
            md,
            "| {n} | {} | {} | **{}** | {:.2} µs | {} |",
            ms_spread(&p.b),
            ms_spread(&p.a),
            p.ratio_text(),
            p.b.median() * 1e6 / n as f64,
            h.ratio_text()
        )
        .unwrap();
    }
    writeln!(md).unwrap();

    // ---- one route changed in 64k
    let n = if cfg.quick { 10_000 } else { 65_536 };
    eprintln!("  control: apply 1 of {n}");
    let moved = n / 2 + 1;
    let (old_path, old_ir) = rig::build(&dir.join("apply-old"), "apply", &routes_spec(n, None, false, ""))?;
    let (new_path, new_ir) =
        rig::build(&dir.join("apply-new"), "apply", &routes_spec(n, Some(moved), false, ""))?;
    if old_ir.code_hash() != new_ir.code_hash() {
        return Err("moving a route changed the code hash".into());
    }
    let devices = rig.devices(&old_ir);
    let obj = bpf::load(&old_path)?;
    rig.ns.enter(|| devmapc_runtime::fill(&obj, &old_ir, &devices))?;
    let (mut read, mut want, mut diff, mut exec, mut total, mut from_plan) = Default::default();
    let mut ops = Vec::new();
    let mut trusted_ops = Vec::new();
    let irs = [&old_ir, &new_ir];
    for i in 0..reps * 2 {
        let (cur, next) = (irs[i % 2], irs[(i + 1) % 2]);
        // As an apply against the kernel does: read the maps back, plan, diff, execute.
        let (t, count) = rig.ns.enter(|| -> Result<([f64; 4], usize)> {
            let t0 = Instant::now();
            let state = plan::read_state(&obj, cur)?;
            let t1 = Instant::now();
            let desired = plan::desired(next, &devices)?;
            let t2 = Instant::now();
            let p = plan::diff(&state, &desired);
            let t3 = Instant::now();
            plan::execute(&obj, &p)?;
            let t4 = Instant::now();
            Ok((
                [
                    (t1 - t0).as_secs_f64(),
                    (t2 - t1).as_secs_f64(),
                    (t3 - t2).as_secs_f64(),
                    (t4 - t3).as_secs_f64(),
                ],
                p.len(),
            ))
        })?;
        ops.push(count);
        Sample::push(&mut read, t[0]);
        Sample::push(&mut want, t[1]);
        Sample::push(&mut diff, t[2]);
        Sample::push(&mut exec, t[3]);
        Sample::push(&mut total, t.iter().sum());
        // The same change as an apply that trusts the last one plans it
        // (`Options::trust_last_apply`, the typed `set_route`): the routes
        // that differ, nothing read back. Back again, then forward untimed
        // so that the next round starts at `next`.
        let back = rig.ns.enter(|| -> Result<f64> {
            let t0 = Instant::now();
            let p = plan::diff_routes(next, cur, &devices)?.ok_or("not a change of routes alone")?;
            plan::execute(&obj, &p)?;
            let el = t0.elapsed().as_secs_f64();
            trusted_ops.push(p.len());
            let p = plan::diff_routes(cur, next, &devices)?.ok_or("not a change of routes alone")?;
            plan::execute(&obj, &p)?;
            Ok(el)
        })?;
        Sample::push(&mut from_plan, back);
    }
    let ops_text = count_text(&ops);
    if ops.iter().any(|&o| o != 1) {
        missed.push(format!("apply of 1 changed route in {n}: {ops_text} map operations (target: O(1))"));
    }
    if from_plan.median() >= 0.010 || trusted_ops.iter().any(|&o| o != 1) {
        missed.push(format!(
            "apply of 1 changed route in {n} routes, trusting the last apply: {} (target < 10 ms, 1 operation)",
            ms(from_plan.median())
        ));
    }
    writeln!(md, "### Changing 1 route of {n}\n").unwrap();
    writeln!(
        md,
        "Two ways to plan the same change, {} applies each, alternating between the two versions (target: O(1) map operations, under 10 ms). **Trusting the last apply** (`Options::trust_last_apply`, what the typed `set_route` does): `plan::diff_routes` compares the two route lists and plans only the routes that differ; nothing is read back. **Reading back** (what `devmapc apply` does, so that a re-apply repairs drift): the kernel's maps read back (`read_state`), the new plan's entries (`desired`), `diff`, `execute`.\n",
        reps * 2
    )
    .unwrap();
    writeln!(md, "| step | time |\n|---|---|").unwrap();
    writeln!(
        md,
        "| **trusting the last apply**: diff_routes + execute (map operations: **{}**) | **{}** |",
        count_text(&trusted_ops),
        ms_spread(&from_plan)
    )
    .unwrap();
    writeln!(
        md,
        "| reading back: read_state ({n} routes, `get_next_key` + lookup each) | {} |",
        ms_spread(&read)
    )
    .unwrap();
    writeln!(md, "| reading back: desired | {} |", ms_spread(&want)).unwrap();
    writeln!(md, "| reading back: diff | {} |", ms_spread(&diff)).unwrap();
    writeln!(md, "| reading back: execute | {} |", ms_spread(&exec)).unwrap();
    writeln!(md, "| reading back: total (map operations: {ops_text}) | {} |\n", ms_spread(&total)).unwrap();

    // ---- the same through apply::apply, end to end, on a pinned deployment
    let e2e = {
        let pins = PinDir::new("apply");
        let opts = devmapc_runtime::apply::Options {
            allow_not_ready: true,
            trust_last_apply: true,
            ..devmapc_runtime::apply::Options::new(&pins.0)
        };
        rig.ns.enter(|| devmapc_runtime::apply::apply(&old_path, &old_ir, &opts))?;
        let builds = [(&new_path, &new_ir), (&old_path, &old_ir)];
        let mut times = Sample::default();
        for i in 0..reps * 2 {
            let (path, ir) = builds[i % 2];
            let report = rig.ns.enter(|| -> Result<(f64, devmapc_runtime::apply::Report)> {
                let t0 = Instant::now();
                let r = devmapc_runtime::apply::apply(path, ir, &opts)?;
                Ok((t0.elapsed().as_secs_f64(), r))
            })?;
            if report.1.read_back || report.1.plan.len() != 1 {
                return Err(format!("end-to-end apply: {}", report.1).into());
            }
            Sample::push(&mut times, report.0);
        }
        rig.ns.enter(|| devmapc_runtime::deploy::detach(&pins.0))?;
        times
    };
    writeln!(
        md,
        "End to end, `apply::apply` with `trust_last_apply` on a pinned deployment of {n} routes (the library call behind `set_route`; it also reads the pinned manifest and the build's, both JSON with every route, checks the devices and reconciles the links): **{}**, 1 map operation each.\n",
        ms_spread(&e2e)
    )
    .unwrap();
    if e2e.median() >= 0.010 {
        missed.push(format!(
            "apply::apply of 1 changed route in {n} routes, end to end: {} (target < 10 ms)",
            ms(e2e.median())
        ));
    }

    // ---- apply, status and a one-route re-apply at 200k adjacent routes
    let (table_md, table_missed) = adjacent_routes(cfg, &rig, reps)?;
    md.push_str(&table_md);
    missed.extend(table_missed);

    // ---- code upgrade through bpf_link_update
    eprintln!("  control: code upgrade");
    let pins = PinDir::new("control");
    let (v1_path, v1_ir) = rig::build(&dir.join("up1"), "up", &routes_spec(100, None, false, ""))?;
    let (v2_path, v2_ir) = rig::build(
        &dir.join("up2"),
        "up",
        &routes_spec(100, None, false, "").replace("on_miss = drop", "on_miss = pass"),
    )?;
    if v1_ir.code_hash() == v2_ir.code_hash() {
        return Err("the two versions have the same code".into());
    }
    let devices = rig.devices(&v1_ir);
    let load = |path: &std::path::Path, ir: &Ir| -> Result<(deploy::Loaded, f64, f64)> {
        let t = Instant::now();
        let l = deploy::load(path, ir)?;
        let loaded = t.elapsed().as_secs_f64();
        let t = Instant::now();
        rig.ns.enter(|| l.fill(&devices))?;
        Ok((l, loaded, t.elapsed().as_secs_f64()))
    };
    let (v1, _, _) = load(&v1_path, &v1_ir)?;
    let a = rig.iface("a").ifindex;
    let attachment = rig.ns.enter(|| v1.attach_ingress(a, XdpMode::Native))?;
    let link = attachment.pin(&pins.0, "a")?;
    drop(attachment);
    let (mut loads, mut fills, mut swaps) = (Sample::default(), Sample::default(), Sample::default());
    let mut keep = vec![v1];
    for i in 0..reps * 2 {
        let (path, ir) = if i % 2 == 0 { (&v2_path, &v2_ir) } else { (&v1_path, &v1_ir) };
        let (next, l, f) = load(path, ir)?;
        let t = Instant::now();
        let info = deploy::swap(&link, next.ingress())?;
        swaps.push(t.elapsed().as_secs_f64());
        if info.prog_id != bpf::prog_id(&next.ingress())? {
            return Err("the link does not run the new program after the swap".into());
        }
        loads.push(l);
        fills.push(f);
        keep.push(next);
        keep.remove(0);
    }
    writeln!(md, "### Code upgrade\n").unwrap();
    writeln!(
        md,
        "A change of code (`on_miss`) on a 100-route spec, attached natively to a veth through a pinned BPF link; each upgrade loads the new object, fills it, and swaps it in with `bpf_link_update` (`deploy::swap`); {} upgrades, alternating versions.\n",
        reps * 2
    )
    .unwrap();
    writeln!(md, "| step | time |\n|---|---|").unwrap();
    writeln!(md, "| load (verifier included) | {} |", ms_spread(&loads)).unwrap();
    writeln!(md, "| fill (100 routes) | {} |", ms_spread(&fills)).unwrap();
    writeln!(md, "| **swap** (`bpf_link_update`) | **{}** |\n", ms_spread(&swaps)).unwrap();
    drop(keep);
    Ok((md, missed))
}
