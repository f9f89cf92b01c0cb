//! Section 1b: the generated ingress program beside tables of realistic
//! shape and size. For every kind of direct key, a table of 4k, 64k and 1M
//! *adjacent* keys (consecutive addresses, ports, VLANs, packed values),
//! against the same program with a table of one route: ns per packet of a
//! hit (a key in the middle of the table) and of a miss (the key just past
//! its end), each pair measured back to back. The kernel does not hash
//! DEVMAP_HASH keys (docs/kernel.md), so without devmapc's key mix such a
//! table is one long bucket; one row builds the same program without the
//! mix, to show what the comparison catches.

use crate::rig::{self, Result, Rig};
use crate::stats::{Paired, Spread};
use crate::Config;
use devmapc::ir::{encode_key, names, Ir, KeyMix, KeyPlan};
use devmapc::model::{Const, KeyValue};
use devmapc_testkit::bpf::{self, XDP_PASS, XDP_REDIRECT};
use devmapc_testkit::packet::Frame;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{Link, Object};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A miss beside the table may cost at most this many times a miss beside
/// one route (the target).
const MISS_TARGET: f64 = 2.0;

/// One kind of direct key: `key(i)` is the i-th of a run of adjacent keys,
/// `frame(i)` a packet carrying it; at most `limit` keys fit in the field
/// (with one left for the miss).
struct Kind {
    key: &'static str,
    limit: usize,
    what: &'static str,
    value: fn(usize) -> KeyValue,
    frame: fn(usize) -> Vec<u8>,
}

fn uint(n: usize) -> KeyValue {
    KeyValue::Const(Const::Uint(n as u64))
}

fn pair(a: usize, b: usize) -> KeyValue {
    KeyValue::Composite(vec![uint(a), uint(b)])
}

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const BASE: u32 = 0x0a00_0000; // 10.0.0.0

fn udp(sport: usize, dport: usize) -> Frame {
    Frame::new().ipv4(SRC, DST).udp(sport as u16, dport as u16)
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            key: "ipv4.dst",
            limit: 1 << 24,
            what: "addresses from 10.0.0.0 up",
            value: |i| KeyValue::Const(Const::Ipv4(Ipv4Addr::from(BASE + i as u32))),
            frame: |i| {
                Frame::new().ipv4(SRC, Ipv4Addr::from(BASE + i as u32)).udp(1000, 53).pad_to(60).build()
            },
        },
        Kind {
            key: "ipv4.src",
            limit: 1 << 24,
            what: "addresses from 10.0.0.0 up",
            value: |i| KeyValue::Const(Const::Ipv4(Ipv4Addr::from(BASE + i as u32))),
            frame: |i| {
                Frame::new().ipv4(Ipv4Addr::from(BASE + i as u32), DST).udp(1000, 53).pad_to(60).build()
            },
        },
        Kind {
            key: "l4.dport",
            limit: 65_535,
            what: "ports from 0 up",
            value: uint,
            frame: |i| udp(1000, i).pad_to(60).build(),
        },
        Kind {
            key: "l4.sport",
            limit: 65_535,
            what: "ports from 0 up",
            value: uint,
            frame: |i| udp(i, 53).pad_to(60).build(),
        },
        Kind {
            key: "ip.proto",
            limit: 255,
            what: "protocols from 0 up",
            value: uint,
            frame: |i| Frame::new().ipv4(SRC, DST).proto(i as u8).pad_to(60).build(),
        },
        Kind {
            key: "vlan.id",
            limit: 4_094,
            what: "VLANs from 1 up",
            value: |i| uint(1 + i),
            frame: |i| udp(1000, 53).vlan(1 + i as u16, 0).pad_to(60).build(),
        },
        Kind {
            key: "(vlan.id, ip.proto)",
            limit: 4_094 * 256,
            what: "VLAN 1 protocol 0 up: every protocol of each VLAN",
            value: |i| pair(1 + (i >> 8), i & 0xff),
            frame: |i| {
                Frame::new()
                    .ipv4(SRC, DST)
                    .proto((i & 0xff) as u8)
                    .vlan(1 + (i >> 8) as u16, 0)
                    .pad_to(60)
                    .build()
            },
        },
        Kind {
            key: "(vlan.id, l4.dport)",
            limit: 4_094 << 16,
            what: "VLAN 1 port 0 up: every port of each VLAN",
            value: |i| pair(1 + (i >> 16), i & 0xffff),
            frame: |i| udp(1000, i & 0xffff).vlan(1 + (i >> 16) as u16, 0).pad_to(60).build(),
        },
        Kind {
            key: "(ip.proto, l4.dport)",
            // Ports are read from TCP and UDP only: every port of each.
            limit: (2 << 16) - 1,
            what: "TCP ports from 0 up, then UDP ports from 0 up",
            value: |i| pair(if i >> 16 == 0 { 6 } else { 17 }, i & 0xffff),
            frame: |i| match i >> 16 {
                0 => Frame::new().ipv4(SRC, DST).tcp(1000, i as u16).pad_to(60).build(),
                _ => udp(1000, i & 0xffff).pad_to(60).build(),
            },
        },
        Kind {
            key: "(l4.sport, l4.dport)",
            limit: (65_535 - 1024) << 16,
            what: "source port 1024 destination 0 up",
            value: |i| pair(1024 + (i >> 16), i & 0xffff),
            frame: |i| udp(1024 + (i >> 16), i & 0xffff).pad_to(60).build(),
        },
    ]
}

fn spec(key: &str, max_entries: usize, mix_note: &str) -> String {
    format!(
        "// {mix_note}\ntable {{ key = {key}, max_entries = {max_entries}, counters = off, on_miss = pass }}\n\
         device a {{ ifname = \"a\" }}\ndevice b {{ ifname = \"b\" }}\ningress {{ on = [a] }}\n"
    )
}

/// Builds the spec as devmapc does, or, with `unmixed`, the same program
/// with the key mix taken out of its plan (what devmapc generated before
/// keys were mixed).
fn build(dir: &Path, key: &str, max_entries: usize, unmixed: bool) -> Result<(PathBuf, Ir)> {
    let text = spec(key, max_entries, if unmixed { "unmixed" } else { "as built" });
    let (obj, mut ir) = rig::build(dir, "table", &text)?;
    if !unmixed {
        return Ok((obj, ir));
    }
    let KeyPlan::Direct { mix, .. } = &mut ir.code.key else {
        return Err(format!("{key} is not a direct key").into());
    };
    *mix = KeyMix::None;
    let c = dir.join("unmixed.bpf.c");
    std::fs::write(&c, devmapc::render::render(&ir))?;
    let obj = dir.join("unmixed.bpf.o");
    let warnings = devmapc::builder::compile_bpf_c(&c, &obj)?;
    if !warnings.is_empty() {
        return Err(format!("clang warned on the unmixed {key}: {warnings:?}").into());
    }
    Ok((obj, ir))
}

/// A loaded program whose table holds `keys` (all routed to `b`), attached
/// natively to an idle veth of its own: a program that is attached stays in
/// the kernel's XDP dispatcher, so test runs cost only what they run (see
/// datapath.rs).
struct Table {
    _link: Link,
    obj: Object,
}

impl Table {
    fn load(rig: &Rig, path: &Path, keys: &[Vec<u8>], n: usize) -> Result<Table> {
        let obj = bpf::load(path)?;
        let b = rig.iface("b").ifindex;
        let value = bpf::devmap_val(b, None);
        let fd = bpf::map(&obj, names::ROUTES)?.as_fd().as_raw_fd();
        rig.ns.enter(|| -> Result<()> {
            for key in keys {
                // SAFETY: a DEVMAP_HASH fd, a 4-byte key, an 8-byte value.
                let rc = unsafe {
                    libbpf_sys::bpf_map_update_elem(
                        fd,
                        key.as_ptr().cast(),
                        value.as_ptr().cast(),
                        libbpf_sys::BPF_NOEXIST as u64,
                    )
                };
                if rc < 0 {
                    return Err(
                        format!("{} keys: {}", keys.len(), std::io::Error::from_raw_os_error(-rc)).into()
                    );
                }
            }
            Ok(())
        })?;
        let (dev, _) = rig.ns.veth(&format!("t{n}"), &format!("pt{n}"))?;
        let link = rig.ns.enter(|| bpf::prog(&obj, names::INGRESS)?.attach_xdp(dev.ifindex as i32))?;
        Ok(Table { _link: link, obj })
    }

    /// ns per packet of `frame` arriving on `on`, which must end as
    /// `expect`: the fastest of 3 test runs (noise only adds time), each
    /// of about `budget` seconds (the repeat count is found with a short
    /// first run).
    fn ns(&self, rig: &Rig, frame: &[u8], on: u32, expect: u32, budget: f64) -> f64 {
        let prog = bpf::prog(&self.obj, names::INGRESS).expect("the ingress program");
        rig.ns.enter(|| {
            let run = |repeat: u32| {
                let t = Instant::now();
                let r = bpf::test_run(&prog, frame, Some(on), repeat).expect("test run");
                assert_eq!(r.retval, expect, "the packet's action");
                t.elapsed().as_secs_f64() * 1e9 / repeat as f64
            };
            let probe = run(200);
            let repeat = ((budget * 1e9 / probe) as u32).clamp(200, 5_000_000);
            (0..3).map(|_| run(repeat)).fold(f64::INFINITY, f64::min)
        })
    }
}

/// The stored keys of the adjacent keys `range` of `kind`, encoded as the
/// runtime encodes route keys.
fn stored_keys(plan: &KeyPlan, kind: &Kind, range: std::ops::Range<usize>) -> Result<Vec<Vec<u8>>> {
    range
        .map(|i| {
            encode_key(plan, &(kind.value)(i), &|_| None).map_err(|e| format!("{}: {e:?}", kind.key).into())
        })
        .collect()
}

pub fn run(cfg: &Config) -> Result<(String, Vec<String>)> {
    let rig = Rig::new(&["a", "b"])?;
    let dir = rig.dir.path().to_path_buf();
    let a = rig.iface("a").ifindex;
    let b = rig.iface("b").ifindex;
    let (sizes, reps, budget): (&[usize], usize, f64) =
        if cfg.quick { (&[4_096], 3, 0.002) } else { (&[4_096, 65_536, 1_048_576], 7, 0.02) };
    let mut rows = String::new();
    let mut missed = Vec::new();
    // Each loaded program gets a veth of its own to be attached to.
    let mut parked = 0;
    let mut park = || {
        parked += 1;
        parked
    };

    for (k, kind) in kinds().iter().enumerate() {
        eprintln!("  tables: {}", kind.key);
        // One route: the hit key alone.
        let (path, ir) = build(&dir.join(format!("k{k}-1")), kind.key, 256, false)?;
        for &size in sizes {
            let n = size.min(kind.limit);
            let (hit_i, miss_i) = (n / 2, n);
            let single =
                Table::load(&rig, &path, &stored_keys(&ir.code.key, kind, hit_i..hit_i + 1)?, park())?;
            let (big_path, big_ir) = build(&dir.join(format!("k{k}-{n}")), kind.key, n, false)?;
            let table = Table::load(&rig, &big_path, &stored_keys(&big_ir.code.key, kind, 0..n)?, park())?;
            let (hit, miss) = ((kind.frame)(hit_i), (kind.frame)(miss_i));
            let hit_p = Paired::measure(
                reps,
                || table.ns(&rig, &hit, a, XDP_REDIRECT, budget),
                || single.ns(&rig, &hit, a, XDP_REDIRECT, budget),
            );
            let miss_p = Paired::measure(
                reps,
                || table.ns(&rig, &miss, a, XDP_PASS, budget),
                || single.ns(&rig, &miss, a, XDP_PASS, budget),
            );
            if miss_p.ratio.median() > MISS_TARGET {
                missed.push(format!(
                    "`{}`: a miss beside {n} adjacent keys costs {:.2}× a miss beside one route (target ≤ {MISS_TARGET}×)",
                    kind.key,
                    miss_p.ratio.median()
                ));
            }
            row(&mut rows, &format!("`{}`", kind.key), n, kind.what, &hit_p, &miss_p);
            if n < size {
                break; // the field has no more keys
            }
        }
    }

    // `ingress.port`: the ifindex is the key, and only a and b exist.
    // The table: a (the route), then n - 1 ifindexes right above b; the
    // miss arrives on b, the key just below them.
    eprintln!("  tables: ingress.port");
    let port_value = |i: usize| KeyValue::Device(i);
    let (path, ir) = build(&dir.join("port-1"), "ingress.port", 256, false)?;
    let frame = udp(1000, 53).pad_to(60).build();
    for &size in sizes {
        let keys_of = |ir: &Ir, n: usize| -> Result<Vec<Vec<u8>>> {
            (0..n)
                .map(|i| {
                    let ifindex = if i == 0 { a } else { b + i as u32 };
                    encode_key(&ir.code.key, &port_value(i), &|_| Some(ifindex))
                        .map_err(|e| format!("ingress.port: {e:?}").into())
                })
                .collect()
        };
        let single = Table::load(&rig, &path, &keys_of(&ir, 1)?, park())?;
        let (big_path, big_ir) = build(&dir.join(format!("port-{size}")), "ingress.port", size, false)?;
        let table = Table::load(&rig, &big_path, &keys_of(&big_ir, size)?, park())?;
        let hit_p = Paired::measure(
            reps,
            || table.ns(&rig, &frame, a, XDP_REDIRECT, budget),
            || single.ns(&rig, &frame, a, XDP_REDIRECT, budget),
        );
        let miss_p = Paired::measure(
            reps,
            || table.ns(&rig, &frame, b, XDP_PASS, budget),
            || single.ns(&rig, &frame, b, XDP_PASS, budget),
        );
        if miss_p.ratio.median() > MISS_TARGET {
            missed.push(format!(
                "`ingress.port`: a miss beside {size} adjacent keys costs {:.2}× a miss beside one route (target ≤ {MISS_TARGET}×)",
                miss_p.ratio.median()
            ));
        }
        row(
            &mut rows,
            "`ingress.port`",
            size,
            "ifindexes: the route's, then those right above the missing one",
            &hit_p,
            &miss_p,
        );
    }

    // The same comparison for a program without the mix (as devmapc built
    // it before): 4,096 adjacent `ipv4.dst` keys share one bucket.
    eprintln!("  tables: ipv4.dst unmixed");
    let kind = &kinds()[0];
    let n = 4_096;
    let (path, ir) = build(&dir.join("unmixed-1"), kind.key, 256, true)?;
    let (big_path, big_ir) = build(&dir.join("unmixed-n"), kind.key, n, true)?;
    let single = Table::load(&rig, &path, &stored_keys(&ir.code.key, kind, n / 2..n / 2 + 1)?, park())?;
    let table = Table::load(&rig, &big_path, &stored_keys(&big_ir.code.key, kind, 0..n)?, park())?;
    let (hit, miss) = ((kind.frame)(n / 2), (kind.frame)(n));
    let reps_unmixed = reps.min(3);
    let hit_p = Paired::measure(
        reps_unmixed,
        || table.ns(&rig, &hit, a, XDP_REDIRECT, budget),
        || single.ns(&rig, &hit, a, XDP_REDIRECT, budget),
    );
    let miss_p = Paired::measure(
        reps_unmixed,
        || table.ns(&rig, &miss, a, XDP_PASS, budget),
        || single.ns(&rig, &miss, a, XDP_PASS, budget),
    );
    row(
        &mut rows,
        "`ipv4.dst` **without the key mix** (for comparison; not what devmapc builds)",
        n,
        kind.what,
        &hit_p,
        &miss_p,
    );

    let mut md = String::new();
    writeln!(
        md,
        "For each kind of direct key, the generated program with a table of n *adjacent* keys (consecutive values of the field, or of the packed composite, all routed to `b`) against the same program with a table of one route, measured as pairs in the same run. The hit is the key in the middle of the table; the miss is the key just past its end (`on_miss = pass`, no `route default`). Each side of a pair is the fastest of 3 `BPF_PROG_TEST_RUN`s (wall clock ÷ repeats, about {} ms each); median of {reps} pairs, ratio: median [min, max] of the per-pair ratios. Target: a miss beside the table costs at most {MISS_TARGET}× a miss beside one route. Fields with fewer values than a size (`vlan.id`, `ip.proto`, ports) stop at their whole range, one value left for the miss. The ratios compare sides of one run: other builds sharing the machine move both sides' absolute figures, not their ratio.\n",
        budget * 1e3
    )
    .unwrap();
    writeln!(
        md,
        "| key | adjacent keys | which | hit ns table / 1 route | hit ratio | miss ns table / 1 route | **miss ratio** |\n|---|---:|---|---:|---:|---:|---:|\n{rows}"
    )
    .unwrap();
    Ok((md, missed))
}

fn row(out: &mut String, key: &str, n: usize, what: &str, hit: &Paired, miss: &Paired) {
    writeln!(
        out,
        "| {key} | {n} | {what} | {:.1} / {:.1} | {} | {:.1} / {:.1} | **{}** |",
        hit.a.median(),
        hit.b.median(),
        Spread(&hit.ratio, 2),
        miss.a.median(),
        miss.b.median(),
        Spread(&miss.ratio, 2)
    )
    .unwrap();
}
