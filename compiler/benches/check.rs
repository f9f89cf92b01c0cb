//! How long `devmapc check` and `devmapc fmt` take on large specs, and how
//! much memory they need: specs of 1k, 10k, 100k and 1M routes, for three
//! kinds of key.
//!
//!     cargo bench -p devmapc --bench check             # the full table
//!     cargo bench -p devmapc --bench check -- --quick  # 1k and 10k, once (CI)
//!
//! `DEVMAPC_BENCH_QUICK=1` does the same as `--quick`; `--sizes 1000,50000`
//! and `--keys eth.dst` pick what to run. Each (key, size) runs in two child
//! processes (this program again, with `--child check|fmt`), so that the
//! peak memory (VmHWM) of each phase is its own. The method and the figures are in
//! BENCHMARKS.md, "Compiler: check".

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

/// The keys benchmarked: an LPM trie, a direct 32-bit key, and a 48-bit key
/// that goes through a hash map to a slot.
const KEYS: &[&str] = &["lpm(ipv4.dst)", "ipv4.dst", "eth.dst"];
const SIZES: &[usize] = &[1_000, 10_000, 100_000, 1_000_000];
/// Devices the routes are spread over.
const DEVICES: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let phase = match args[1].as_str() {
            "check" => Phase::Check,
            "fmt" => Phase::Fmt,
            other => panic!("unknown phase {other}"),
        };
        child(
            phase,
            &args[2],
            args[3].parse().expect("a size"),
            args[4].parse().expect("a repetition count"),
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("DEVMAPC_BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty());
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> = match option("--sizes") {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().replace('_', "").parse().expect("--sizes takes numbers"))
            .collect(),
        None if quick => vec![1_000, 10_000],
        None => SIZES.to_vec(),
    };
    let keys: Vec<String> = match option("--keys") {
        Some(list) => list.split(';').map(String::from).collect(),
        None => KEYS.iter().map(|k| k.to_string()).collect(),
    };

    let exe = std::env::current_exe().expect("the benchmark's own path");
    let run = |phase: &str, key: &str, size: usize, reps: usize| -> Vec<String> {
        let out = Command::new(&exe)
            .args(["--child", phase, key, &size.to_string(), &reps.to_string()])
            .output()
            .expect("the child runs");
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            panic!("the {phase} child for {key} × {size} failed");
        }
        String::from_utf8_lossy(&out.stdout).trim().split('\t').map(String::from).collect()
    };
    println!(
        "devmapc check/fmt benchmark ({} build, {} CPUs)",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("times: median [min, max] over the repetitions; peak: VmHWM of a fresh process that generated the spec, then ran only that phase");
    println!();
    println!(
        "{:<14} {:>9} {:>8} {:>4}  {:<26} {:<26} {:<26} {:>10}  {:<26} {:>10}",
        "key", "routes", "source", "reps", "parse", "check", "parse+check", "peak", "fmt", "peak"
    );
    for key in &keys {
        for &size in &sizes {
            let reps = if quick { 1 } else { repetitions(size) };
            // [source, parse, check, parse+check, peak] and [fmt, peak]
            let c = run("check", key, size, reps);
            let f = run("fmt", key, size, reps);
            println!(
                "{key:<14} {size:>9} {:>8} {reps:>4}  {:<26} {:<26} {:<26} {:>10}  {:<26} {:>10}",
                c[0], c[1], c[2], c[3], c[4], f[0], f[1]
            );
        }
    }
}

/// More repetitions where they are cheap.
fn repetitions(size: usize) -> usize {
    match size {
        0..=10_000 => 11,
        10_001..=100_000 => 7,
        _ => 5,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// `devmapc::parse`, then `devmapc::check`, timed apart.
    Check,
    /// `devmapc::fmt::format` of a parsed spec.
    Fmt,
}

/// One phase for one (key, size), in a process of its own: generates the
/// spec, then times the phase `reps` times. Prints tab-separated fields.
fn child(phase: Phase, key: &str, size: usize, reps: usize) {
    let src = spec(key, size);
    if phase == Phase::Check {
        // The spec is valid and every route made it into the model.
        let checked = devmapc::check_source(&src);
        if let Some(e) = checked.diagnostics.iter().find(|d| d.is_error()) {
            panic!("the generated spec has an error: {e:?}");
        }
        assert_eq!(checked.model.as_ref().map(|m| m.routes.len()), Some(size));
        drop(checked);
        // Memory freed by the check above stays mapped (malloc keeps it),
        // so this peak is at worst the larger of the two runs: one run.
        reset_peak();
        let (mut parse, mut check, mut both) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let start = Instant::now();
            let ast = devmapc::parse(&src).expect("the spec parses");
            let parsed = Instant::now();
            let checked = devmapc::check(&ast);
            let done = Instant::now();
            assert!(checked.model.is_some());
            parse.push(parsed - start);
            check.push(done - parsed);
            both.push(done - start);
            drop(checked);
            drop(ast);
        }
        let peak = peak_kib();
        println!(
            "{}\t{}\t{}\t{}\t{}",
            bytes(src.len()),
            stats(&mut parse),
            stats(&mut check),
            stats(&mut both),
            kib(peak)
        );
    } else {
        let ast = devmapc::parse(&src).expect("the spec parses");
        // The peak of formatting, not of the parse before it.
        reset_peak();
        let mut fmt = Vec::new();
        for _ in 0..reps {
            let start = Instant::now();
            let text = devmapc::fmt::format(&src, &ast);
            fmt.push(start.elapsed());
            assert!(text.len() > size);
        }
        println!("{}\t{}", stats(&mut fmt), kib(peak_kib()));
    }
}

/// A valid spec with `size` distinct routes over a few devices.
fn spec(key: &str, size: usize) -> String {
    let mut s = String::with_capacity(size * 32 + 1024);
    writeln!(s, "// {size} routes keyed by {key}, generated by compiler/benches/check.rs").unwrap();
    writeln!(
        s,
        "table {{\n    key         = {key}\n    max_entries = {}\n    on_miss     = drop\n}}\n",
        size.max(1)
    )
    .unwrap();
    for d in 0..DEVICES {
        let egress = if d % 2 == 1 { format!(", egress = retag({})", 100 + d) } else { String::new() };
        writeln!(s, "device port{d} {{ ifname = \"eth{d}\"{egress} }}").unwrap();
    }
    writeln!(s, "\negress retag(vid: u16) {{\n    vlan.id = vid\n    if has(ipv4) && ipv4.ttl <= 1 {{ drop }}\n    ipv4.ttl -= 1\n}}\n").unwrap();
    writeln!(s, "ingress {{ on = [port0], mode = native }}\n").unwrap();
    for i in 0..size {
        let target = 1 + i % (DEVICES - 1);
        let n = i as u32;
        let [a, b, c, d] = n.to_be_bytes();
        match key {
            // Half /24 prefixes (10.0.0.0/24, 10.0.1.0/24, ...), half bare
            // addresses (/32s: 100.0.0.1, 100.0.1.1, ...).
            "lpm(ipv4.dst)" => {
                let [_, x, y, z] = (n / 2).to_be_bytes();
                if i % 2 == 0 {
                    writeln!(s, "route {}.{y}.{z}.0/24 -> port{target}", 10 + x).unwrap()
                } else {
                    writeln!(s, "route {}.{y}.{z}.1 -> port{target}", 100 + x).unwrap()
                }
            }
            "ipv4.dst" => writeln!(s, "route {}.{}.{}.{} -> port{target}", 10 + a, b, c, d).unwrap(),
            "eth.dst" => writeln!(s, "route 02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x} -> port{target}").unwrap(),
            other => panic!("no route generator for key `{other}`"),
        }
    }
    s
}

/// Resets the peak resident set size of this process to its current size
/// (Linux ≥ 4.0; does nothing elsewhere).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// VmHWM of this process, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn stats(times: &mut [Duration]) -> String {
    times.sort();
    let (min, max, median) = (times[0], times[times.len() - 1], times[times.len() / 2]);
    if times.len() == 1 {
        ms(median)
    } else {
        format!("{} [{}, {}]", ms(median), ms(min), ms(max))
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

fn kib(k: u64) -> String {
    if k >= 10 * 1024 {
        format!("{} MiB", k / 1024)
    } else {
        format!("{k} KiB")
    }
}

fn bytes(n: usize) -> String {
    if n >= 10 << 20 {
        format!("{} MiB", n >> 20)
    } else if n >= 10 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}
