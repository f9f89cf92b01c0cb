//! Compiles the hand-written BPF programs in `bpf/*.bpf.c` into
//! `$OUT_DIR/<name>.bpf.o`, which `devmapc_testkit::objects` names.
//!
//! clang is found through `DEVMAPC_CLANG`, else `clang`, else `clang-19` down
//! to `clang-14` on PATH. Kernel UAPI headers come from
//! `/usr/include/<multiarch triple>` derived from the target; `/usr/include`
//! itself is never added, because the system's old `bpf/*.h` would shadow the
//! newer ones libbpf-cargo supplies. clang's warnings become cargo warnings.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::util::CargoWarningFormatter;
use libbpf_cargo::SkeletonBuilder;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

fn main() {
    // libbpf-cargo logs clang's stdout/stderr as tracing events with the
    // targets `compiler-stdout` / `compiler-stderr`; without a subscriber
    // they vanish. Print them as `cargo:warning=` lines.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(CargoWarningFormatter)
                .with_writer(std::io::stdout)
                .with_filter(filter_fn(|meta| meta.target().starts_with("compiler-"))),
        )
        .init();

    println!("cargo:rerun-if-env-changed=DEVMAPC_CLANG");
    println!("cargo:rerun-if-changed=bpf");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let clang = find_clang();
    let include = multiarch_include();

    let mut sources: Vec<PathBuf> = std::fs::read_dir("bpf")
        .expect("testkit/bpf is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();

    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
        let file = source.file_name().unwrap().to_string_lossy();
        let stem = file.trim_end_matches(".bpf.c");
        let obj = out_dir.join(format!("{stem}.bpf.o"));
        let result = SkeletonBuilder::new()
            .source(source)
            .obj(&obj)
            .clang(&clang)
            .clang_args([
                format!("-I{}", include.display()),
                "-Wall".to_string(),
                "-Wextra".to_string(),
                "-Wno-unused-parameter".to_string(),
            ])
            .build();
        if let Err(err) = result {
            panic!("compiling {}: {err:#}", source.display());
        }
    }
}

/// `DEVMAPC_CLANG`, else the first of `clang`, `clang-19` ... `clang-14`
/// that runs.
fn find_clang() -> PathBuf {
    if let Some(clang) = env::var_os("DEVMAPC_CLANG") {
        let clang = PathBuf::from(clang);
        if runs(&clang) {
            return clang;
        }
        panic!("DEVMAPC_CLANG={} does not run (`{} --version` failed)", clang.display(), clang.display());
    }
    let candidates =
        std::iter::once("clang".to_string()).chain((14..=19).rev().map(|v| format!("clang-{v}")));
    for name in candidates {
        if runs(Path::new(&name)) {
            return PathBuf::from(name);
        }
    }
    panic!(
        "no clang found to compile the BPF programs in testkit/bpf: install the Debian package \
         `clang-19` (or `clang`), or set DEVMAPC_CLANG=/path/to/clang"
    );
}

fn runs(clang: &Path) -> bool {
    Command::new(clang).arg("--version").output().map(|out| out.status.success()).unwrap_or(false)
}

/// `/usr/include/<multiarch triple>` for the target, where Debian keeps
/// `asm/types.h` (needed by `linux/bpf.h` under `-target bpf`).
fn multiarch_include() -> PathBuf {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let abi = env::var("CARGO_CFG_TARGET_ABI").unwrap_or_default();
    let triple = match arch.as_str() {
        "x86" => "i386-linux-gnu".to_string(),
        "arm" => {
            if abi.contains("hf") || env::var("TARGET").unwrap_or_default().ends_with("hf") {
                "arm-linux-gnueabihf".to_string()
            } else {
                "arm-linux-gnueabi".to_string()
            }
        }
        "powerpc64" if env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() == Ok("little") => {
            "powerpc64le-linux-gnu".to_string()
        }
        "mips64" if env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() == Ok("little") => {
            "mips64el-linux-gnuabi64".to_string()
        }
        other => format!("{other}-linux-gnu"),
    };
    let dir = Path::new("/usr/include").join(&triple);
    if !dir.join("asm/types.h").exists() {
        panic!(
            "{}/asm/types.h not found (target arch `{arch}`, env `{target_env}`): install the \
             Debian package `linux-libc-dev` for this architecture",
            dir.display()
        );
    }
    dir
}
