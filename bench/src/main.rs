//! devmapc's benchmark harness: the tables of BENCHMARKS.md.
//!
//!     cargo run --release -p devmapc-bench -- --write BENCHMARKS.md   # all, ~15 min
//!     cargo run --release -p devmapc-bench -- --quick                 # smoke run (CI), < 2 min
//!
//! Sections (`--only datapath,tables,control,zeroloss,compiler` picks some):
//!
//! 1. data path: generated ingress programs against hand-written C
//!    (compiler/tests/reference) per key kind: verifier and JIT counts,
//!    ns/packet (PROG_TEST_RUN), Mpps of live-frame redirects; and
//!    (section 1b, `tables`) per direct key kind, ns/packet of a hit and a
//!    miss beside 4k, 64k and 1M adjacent keys against a table of one route;
//! 2. control plane: filling 1k–64k routes against a bare update loop, a
//!    one-route apply in a 64k-route table, a code upgrade (bpf_link_update),
//!    apply, status and a one-route re-apply at 200k adjacent routes;
//! 3. zero loss: live traffic while routes are re-applied and code upgraded;
//! 4. compiler: check and build of 1k–1M-route specs, devmapc and clang
//!    apart, with peak memory.
//!
//! Every comparison is a ratio of pairs measured back to back in the same
//! run, alternating which side goes first (stats.rs). Kernel sections need
//! root; they build everything in throw-away network namespaces.
//!
//! `--write FILE` replaces the part of FILE between `<!-- bench:begin -->`
//! and `<!-- bench:end -->` with the report; without it, the report goes to
//! stdout. The exit status is 0 even when targets are missed (they are
//! listed in the report); it is 1 when a measurement could not be made.

mod compiler;
mod control;
mod datapath;
mod rig;
mod stats;
mod tables;
mod zeroloss;

use std::fmt::Write as _;
use std::time::Instant;

pub struct Config {
    pub quick: bool,
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";
const SECTIONS: &[&str] = &["datapath", "tables", "control", "zeroloss", "compiler"];

fn main() {
    // Run through `cargo run`, OUT_DIR may be set; devmapc's Builder would
    // then act as in a build script and print cargo directives.
    std::env::remove_var("OUT_DIR");
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        compiler::child(&args[1..]);
        return;
    }
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: devmapc-bench [--quick] [--only datapath,tables,control,zeroloss,compiler] [--write BENCHMARKS.md]");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("DEVMAPC_BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty());
    let only: Vec<String> = match option("--only") {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        None => SECTIONS.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        eprintln!("devmapc-bench: unknown section {bad:?} (sections: {})", SECTIONS.join(", "));
        std::process::exit(2);
    }
    let kernel = only.iter().any(|s| s != "compiler");
    if kernel && !devmapc_testkit::privileged::can_create_netns() {
        eprintln!(
            "devmapc-bench: the kernel sections need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root or pass --only compiler"
        );
        std::process::exit(2);
    }
    let cfg = Config { quick };
    let started = Instant::now();

    let mut report = String::new();
    let mut missed: Vec<String> = Vec::new();
    let mut failed = false;
    writeln!(report, "{}", machine(quick)).unwrap();
    let titles = [
        ("datapath", "## 1. Data path: generated against hand-written C"),
        ("tables", "## 1b. Data path: tables of adjacent keys"),
        ("control", "## 2. Control plane"),
        ("zeroloss", "## 3. Zero loss under change"),
        ("compiler", "## 4. Compiler: check and build"),
    ];
    for (section, title) in titles {
        if !only.iter().any(|s| s == section) {
            continue;
        }
        eprintln!("== {section}");
        let t = Instant::now();
        let result = match section {
            "datapath" => datapath::run(&cfg).map(|r| (r.markdown, r.missed)),
            "tables" => tables::run(&cfg),
            "control" => control::run(&cfg),
            "zeroloss" => zeroloss::run(&cfg),
            "compiler" => compiler::run(&cfg),
            _ => unreachable!(),
        };
        writeln!(report, "{title}\n").unwrap();
        match result {
            Ok((md, miss)) => {
                report.push_str(&md);
                missed.extend(miss);
            }
            Err(e) => {
                failed = true;
                eprintln!("devmapc-bench: {section}: {e}");
                writeln!(report, "**Not measured**: {e}\n").unwrap();
            }
        }
        eprintln!("   {section}: {:.0} s", t.elapsed().as_secs_f64());
    }
    writeln!(report, "## Targets missed in this run\n").unwrap();
    if missed.is_empty() {
        writeln!(report, "None.\n").unwrap();
    } else {
        for m in &missed {
            writeln!(report, "- {m}").unwrap();
        }
        writeln!(report).unwrap();
    }
    writeln!(report, "The whole run took {:.0} s.", started.elapsed().as_secs_f64()).unwrap();

    match option("--write") {
        Some(path) => {
            if let Err(e) = write_between_markers(&path, &report) {
                eprintln!("devmapc-bench: {path}: {e}");
                std::process::exit(1);
            }
            eprintln!("wrote the report into {path}");
        }
        None => print!("{report}"),
    }
    if failed {
        std::process::exit(1);
    }
}

/// Replaces what lies between the markers (appends both when absent).
fn write_between_markers(path: &str, report: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n\n{report}\n{END}");
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &text[..b], &text[e + END.len()..]),
        _ => format!("{text}\n{block}\n"),
    };
    std::fs::write(path, new)
}

/// The machine, as a paragraph.
fn machine(quick: bool) -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0))
        })
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let clang = devmapc::builder::find_clang()
        .ok()
        .and_then(|c| std::process::Command::new(c).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_else(|| "no clang".into());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc".into());
    format!(
        "Machine: {cpus} vCPU ({cpu}), {:.0} GiB, Linux {kernel}, {clang}, libbpf 1.7 (libbpf-sys, vendored), {rustc}, release build.{}\n",
        mem as f64 / (1024.0 * 1024.0),
        if quick {
            " **Quick (smoke) run: few repetitions, small sizes; figures are indicative only.**"
        } else {
            ""
        }
    )
}
