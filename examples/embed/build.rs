//! Compiles the bundled VLAN-switch spec at build time: the generated C,
//! BPF object, skeleton, manifest and typed module (`vlan_switch.rs`) land
//! in OUT_DIR, and a spec error fails the build with the spec's own line
//! underlined.
//!
//! For the tests (`tests/typed.rs`), it also builds the typed module of
//! every example spec and of `tests/specs/*.devmap` into `OUT_DIR/typed/`,
//! with `OUT_DIR/typed/all.rs` including each, so that all of them are
//! type-checked against the runtime.

use std::path::{Path, PathBuf};

fn build(builder: devmapc::Builder) -> devmapc::builder::Outputs {
    builder.build().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    })
}

fn specs(dir: &str) -> Vec<PathBuf> {
    println!("cargo:rerun-if-changed={dir}");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "devmap"))
        .collect();
    found.sort();
    found
}

fn main() {
    build(devmapc::Builder::new("../vlan-switch.devmap"));

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("run by cargo"));
    let typed = out.join("typed");
    let emit = devmapc::Emit { c: false, obj: true, skel: false, manifest: true };
    let mut all = String::from("// Every typed module built for the tests.\n");
    for spec in specs("..").into_iter().chain(specs("tests/specs")) {
        let outputs = build(devmapc::Builder::new(&spec).out_dir(&typed).emit(emit).typed(true));
        let name = outputs.name;
        all.push_str(&format!("pub mod {name} {{\n    include!(\"{name}.rs\");\n}}\n"));
    }
    let path = Path::new(&typed).join("all.rs");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(all.as_str()) {
        std::fs::write(&path, all).expect("OUT_DIR is writable");
    }
}
