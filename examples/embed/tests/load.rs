//! The example as its docs run it: `--load` in a namespace with the
//! spec's devices applies the spec, moves VLAN 300 to `red` by typed key,
//! reads counters and detaches; in one without them it only loads.

use devmapc_testkit::netns::Netns;
use devmapc_testkit::require_privileged;

fn run(ns: &Netns, pin_dir: &str) -> String {
    let out = ns
        .command(env!("CARGO_BIN_EXE_devmapc-example-embed"))
        .unwrap()
        .args(["--load", "--make-ready", "--pin-dir", pin_dir])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn load_applies_changes_a_route_by_typed_key_and_detaches() {
    require_privileged!();
    let pin_dir = format!("/sys/fs/bpf/devmapc-test-{}-example", std::process::id());
    let ns = Netns::new().unwrap();
    for dev in ["eth0", "veth-red", "veth-blue", "veth-mgmt"] {
        ns.veth(dev, &format!("{dev}-p")).unwrap();
    }
    let out = run(&ns, &pin_dir);
    let _ = std::fs::remove_dir_all(&pin_dir);
    assert!(out.contains("key devmapc_runtime::embed::VlanId"), "{out}");
    assert!(out.contains("first apply: load"), "{out}");
    assert!(out.contains("route 300 was Some(Device(Mgmt))"), "{out}");
    assert!(out.contains("route 300 is Some(Device(Red))"), "{out}");
    assert!(out.contains("misses: 0 packets, 0 bytes"), "{out}");
    assert!(out.contains("detached: 3 links"), "{out}");
    assert!(!std::path::Path::new(&pin_dir).exists());

    // Without the devices: loaded (verified), not applied.
    let empty = Netns::new().unwrap();
    let out = run(&empty, &pin_dir);
    assert!(out.contains("programs passed the verifier"), "{out}");
    assert!(out.contains("not applied here"), "{out}");
}
