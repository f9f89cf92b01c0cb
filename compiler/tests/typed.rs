//! The typed Rust module (`<name>.rs`) a build script gets: deterministic,
//! formatted as rustfmt formats it, with the key types each key field
//! calls for. (That every one of them compiles against the runtime is
//! tested by `examples/embed/tests/typed.rs`, whose build script builds
//! them all.)

use devmapc::builder::output_name;
use std::path::{Path, PathBuf};

fn specs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for dir in ["examples", "examples/embed/tests/specs"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "devmap") {
                found.push(path);
            }
        }
    }
    found.sort();
    assert!(found.len() >= 10, "{found:?}");
    found
}

fn generate(spec: &Path) -> String {
    let source = std::fs::read_to_string(spec).unwrap();
    let model =
        devmapc::check_source(&source).model.unwrap_or_else(|| panic!("{} has errors", spec.display()));
    let file = spec.file_name().unwrap().to_str().unwrap();
    let ir = devmapc::lower::lower(&model, file, &source);
    devmapc::typed::generate(&ir, &output_name(spec).unwrap())
}

#[test]
fn the_builder_writes_the_same_module_wherever_it_builds() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vlan-switch.devmap");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (dir_a.path(), dir_b.path());
    let emit = devmapc::Emit { c: false, obj: false, skel: false, manifest: false };
    let built_a = devmapc::Builder::new(&spec).out_dir(a).emit(emit).typed(true).build().unwrap();
    let built_b = devmapc::Builder::new(&spec).out_dir(b).emit(emit).typed(true).build().unwrap();
    // The module embeds the object and the manifest: both are written.
    assert!(built_a.obj.is_some() && built_a.manifest.is_some());
    let text_a = std::fs::read(built_a.typed.unwrap()).unwrap();
    let text_b = std::fs::read(built_b.typed.unwrap()).unwrap();
    assert_eq!(text_a, text_b);
    assert_eq!(String::from_utf8(text_a).unwrap(), generate(&spec));
    // Outside a build script, the module is only written when asked for.
    let plain = devmapc::Builder::new(&spec)
        .out_dir(a)
        .emit(devmapc::Emit::parse("manifest").unwrap())
        .build()
        .unwrap();
    assert_eq!(plain.typed, None);
}

#[test]
fn generation_is_deterministic() {
    for spec in specs() {
        assert_eq!(generate(&spec), generate(&spec), "{}", spec.display());
    }
}

#[test]
fn the_vlan_switch_module() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vlan-switch.devmap");
    insta::assert_snapshot!(generate(&spec));
}

#[test]
fn generated_modules_are_as_rustfmt_formats_them() {
    if std::process::Command::new("rustfmt").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no rustfmt");
        return;
    }
    // rustfmt's default layout, as in a user's crate: not this repo's
    // rustfmt.toml, which rustfmt would find above the working directory.
    let defaults = tempfile::tempdir().unwrap();
    let config = defaults.path().join("rustfmt.toml");
    std::fs::write(&config, "").unwrap();
    for spec in specs() {
        let text = generate(&spec);
        let mut child = std::process::Command::new("rustfmt")
            .args(["--edition", "2021", "--emit", "stdout", "--config-path"])
            .arg(&config)
            .current_dir(defaults.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}: rustfmt failed", spec.display());
        let formatted = String::from_utf8(out.stdout).unwrap();
        if formatted != text {
            let first = text.lines().zip(formatted.lines()).position(|(a, b)| a != b);
            panic!("{}: rustfmt changes line {:?} of:\n{text}", spec.display(), first.map(|l| l + 1));
        }
    }
}

/// The key type of each kind of key, and what depends on the spec.
#[test]
fn keys_devices_groups_and_counters_have_their_types() {
    let module = |name: &str| {
        let spec = specs().into_iter().find(|s| output_name(s).as_deref() == Ok(name)).unwrap();
        generate(&spec)
    };
    let has = |text: &str, what: &str| assert!(text.contains(what), "no `{what}` in:\n{text}");
    let lacks = |text: &str, what: &str| assert!(!text.contains(what), "`{what}` in:\n{text}");

    let vlan = module("vlan_switch");
    has(&vlan, "pub type Key = VlanId;");
    has(&vlan, "pub use ::devmapc_runtime::embed::{Count, DeployError, Options, Report, VlanId};");
    has(&vlan, "pub const OBJECT: &[u8] = include_bytes!(\"vlan_switch.bpf.o\");");
    has(&vlan, "pub const MANIFEST: &str = include_str!(\"vlan_switch.manifest.json\");");
    has(&vlan, "pub enum Device {\n    /// `uplink` (ifname \"eth0\"), line 32.\n    Uplink,");
    has(&vlan, "pub enum Group {");
    has(&vlan, "pub fn group_counters(&self, group: Group)");

    let port_vlan = module("port_vlan");
    has(&port_vlan, "pub struct Key {\n    /// `ingress.port`\n    pub ingress_port: Device,\n    /// `vlan.id`\n    pub vlan_id: VlanId,\n}");
    has(&port_vlan, "impl embed::KeyPart for Device {");
    // `port_1` and `port1` are both `Port1` in CamelCase.
    has(&port_vlan, "#[allow(non_camel_case_types)]\n#[allow(dead_code)]\npub enum Device {");
    has(&port_vlan, "    Port1_,\n");
    // No groups, no counters.
    has(&port_vlan, "pub enum Target {\n    Device(Device),\n}");
    lacks(&port_vlan, "enum Group");
    lacks(&port_vlan, "fn counters");
    has(&port_vlan, "pub const COUNTERS: bool = false;");

    has(&module("ipv4_host"), "pub type Key = ::std::net::Ipv4Addr;");
    has(&module("ipv4_router"), "pub type Key = Ipv4Prefix;");
    has(&module("ipv6_router"), "pub type Key = Ipv6Prefix;");
    has(&module("l2_forwarding"), "pub type Key = Mac;");
    has(&module("patch_panel"), "pub type Key = Device;");
    has(&module("patch_panel"), "The table is `access = read_only`");
    has(&module("service_steering"), "pub struct Key {\n    /// `ip.proto`\n    pub ip_proto: u8,\n    /// `l4.dport`\n    pub l4_dport: u16,\n}");
    has(&module("tenant_fabric"), "    pub vlan_id: VlanId,\n    /// `eth.dst`\n    pub eth_dst: Mac,\n");
    has(
        &module("ipv6_flow"),
        "    pub ipv6_src: ::std::net::Ipv6Addr,\n    /// `l4.sport`\n    pub l4_sport: u16,\n",
    );
}
