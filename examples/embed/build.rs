//! Compiles the bundled VLAN-switch spec at build time: the generated C,
//! BPF object, skeleton and manifest land in OUT_DIR, and a spec error fails
//! the build with the spec's own line underlined.

fn main() {
    if let Err(e) = devmapc::Builder::new("../vlan-switch.devmap").build() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
