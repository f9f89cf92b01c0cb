//! The namespace helpers themselves: cleanup even after a panic, devices
//! that stay inside, and a thread that comes back to its own namespace.

use std::panic::{catch_unwind, AssertUnwindSafe};

use devmapc_testkit::netns::{self, Netns};
use devmapc_testkit::require_privileged;

fn current_netns() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

fn host_has(dev: &str) -> bool {
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

fn ip_netns_list() -> String {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn netns_is_deleted_when_the_test_body_panics() {
    require_privileged!();
    let mut name = String::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new().unwrap();
        name = ns.name().to_string();
        ns.veth("dmcpanic0", "dmcpanic1").unwrap();
        assert!(netns::exists(&name));
        panic!("test body fails while the namespace is alive");
    }));
    assert!(result.is_err());
    assert!(name.starts_with("dmc-"), "{name}");
    assert!(!netns::exists(&name), "{name} left behind");
    assert!(!ip_netns_list().contains(&name), "{name} still listed:\n{}", ip_netns_list());
    assert!(!host_has("dmcpanic0") && !host_has("dmcpanic1"));
}

#[test]
fn netns_names_are_unique_and_short() {
    require_privileged!();
    let a = Netns::new().unwrap();
    let b = Netns::new().unwrap();
    assert_ne!(a.name(), b.name());
    for ns in [&a, &b] {
        assert!(ns.name().starts_with(&format!("dmc-{}-", std::process::id())));
        assert!(ns.name().len() <= 15, "{}", ns.name());
        assert!(netns::ours().contains(&ns.name().to_string()));
    }
}

#[test]
fn veth_pairs_stay_inside_their_namespaces() {
    require_privileged!();
    let a = Netns::new().unwrap();
    let b = Netns::new().unwrap();
    let (a0, a1) = a.veth("dmcin0", "dmcin1").unwrap();
    let (x, y) = a.veth_to("dmcx", &b, "dmcy").unwrap();

    // Never on the host.
    for dev in ["dmcin0", "dmcin1", "dmcx", "dmcy"] {
        assert!(!host_has(dev), "{dev} appeared on the host");
    }
    // ifindex and MAC from `ip -j` agree with what the kernel says inside.
    for (ns, iface) in [(&a, &a0), (&a, &a1), (&a, &x), (&b, &y)] {
        let name = std::ffi::CString::new(iface.name.as_str()).unwrap();
        let index = ns.enter(|| unsafe { libc::if_nametoindex(name.as_ptr()) });
        assert_eq!(index, iface.ifindex, "{}", iface.name);
        assert_eq!(ns.mac(&iface.name).unwrap(), iface.mac);
        assert_eq!(ns.iface(&iface.name).unwrap(), *iface);
    }
    assert!(a.iface("dmcy").is_err(), "dmcy is in the other namespace");
    assert_ne!(a0.mac, a1.mac);

    // Commands run inside see only the namespace's devices.
    let links = a.run("ip", &["-o", "link"]).unwrap();
    assert!(links.contains("dmcin0") && links.contains("dmcx") && !links.contains("dmcy"));
    assert_eq!(links.lines().count(), 4, "lo + 3 devices:\n{links}");
    let stats = a.stats("dmcin0").unwrap();
    assert_eq!(stats.rx_packets, 0, "IPv6 is off: no solicitations on a fresh link");

    a.set_down("dmcin1").unwrap();
    a.delete_link("dmcin0").unwrap();
    assert!(a.iface("dmcin1").is_err(), "deleting one veth end deletes both");
}

#[test]
fn enter_returns_to_the_original_namespace_even_after_a_panic() {
    require_privileged!();
    let before = current_netns();
    let ns = Netns::new().unwrap();
    let inside = ns.enter(current_netns);
    assert_ne!(inside, before);
    let other = Netns::new().unwrap();
    let nested = ns.enter(|| {
        let n = other.enter(current_netns);
        assert_eq!(current_netns(), inside);
        n
    });
    assert_ne!(nested, inside);
    let result = catch_unwind(AssertUnwindSafe(|| ns.enter(|| panic!("inside"))));
    assert!(result.is_err());
    assert_eq!(current_netns(), before);
}

#[test]
fn gro_can_be_read_and_toggled() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    ns.veth("dmcg0", "dmcg1").unwrap();
    ns.set_gro("dmcg1", true).unwrap();
    assert!(ns.gro("dmcg1").unwrap());
    ns.set_gro("dmcg1", false).unwrap();
    assert!(!ns.gro("dmcg1").unwrap());
    assert!(ns.gro("nonexistent").is_err());
}
