//! The typed modules of every example spec and of `tests/specs/*.devmap`
//! (built by build.rs into `OUT_DIR/typed/`) compile against the runtime,
//! and their keys say what the specs' routes say.

#[allow(dead_code)]
mod all {
    include!(concat!(env!("OUT_DIR"), "/typed/all.rs"));
}

use all::*;
use devmapc_runtime::embed::{self, KeyPart, KeyValue, Options};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The routes of a build's manifest, through the engine (which touches
/// nothing in the kernel until it applies).
fn routes(object: &[u8], manifest: &str) -> Vec<embed::RouteData> {
    let engine = embed::Deployment::new(object, manifest, Options::new("/nonexistent")).unwrap();
    engine.routes().to_vec()
}

/// Every route key of the manifest reads back as `K` and converts back to
/// the same `KeyValue`; returns them as the spec writes them.
fn typed_keys<K: KeyPart + std::fmt::Display>(object: &[u8], manifest: &str) -> Vec<String> {
    routes(object, manifest)
        .iter()
        .map(|r| {
            let key =
                K::from_key_value(&r.key).unwrap_or_else(|| panic!("route {} has no typed key", r.text));
            assert_eq!(key.to_key_value(), r.key);
            key.to_string()
        })
        .collect()
}

#[test]
fn every_route_key_of_every_spec_has_its_typed_form() {
    assert_eq!(
        typed_keys::<vlan_switch::Key>(vlan_switch::OBJECT, vlan_switch::MANIFEST),
        ["100", "200", "300", "999", "10", "20"]
    );
    assert_eq!(
        typed_keys::<ipv4_router::Key>(ipv4_router::OBJECT, ipv4_router::MANIFEST),
        ["0.0.0.0/0", "10.0.0.0/8", "10.20.0.0/16", "10.20.99.0/24", "192.0.2.0/24", "198.51.100.7/32"]
    );
    assert_eq!(typed_keys::<ipv6_router::Key>(ipv6_router::OBJECT, ipv6_router::MANIFEST)[0], "2000::/3");
    assert_eq!(
        typed_keys::<l2_forwarding::Key>(l2_forwarding::OBJECT, l2_forwarding::MANIFEST)[5],
        "ff:ff:ff:ff:ff:ff"
    );
    assert_eq!(typed_keys::<patch_panel::Key>(patch_panel::OBJECT, patch_panel::MANIFEST)[0], "port_a");
    assert_eq!(
        typed_keys::<service_steering::Key>(service_steering::OBJECT, service_steering::MANIFEST)[0],
        "(17, 53)"
    );
    assert_eq!(typed_keys::<tap_fanout::Key>(tap_fanout::OBJECT, tap_fanout::MANIFEST), ["10", "20"]);
    assert_eq!(
        typed_keys::<tenant_fabric::Key>(tenant_fabric::OBJECT, tenant_fabric::MANIFEST)[0],
        "(100, 02:00:00:00:a0:01)"
    );
    assert_eq!(typed_keys::<ipv4_host::Key>(ipv4_host::OBJECT, ipv4_host::MANIFEST), ["10.0.0.2"]);
    assert_eq!(
        typed_keys::<port_vlan::Key>(port_vlan::OBJECT, port_vlan::MANIFEST),
        ["(trunk, 10)", "(port_1, 10)"]
    );
    assert_eq!(
        typed_keys::<ipv6_flow::Key>(ipv6_flow::OBJECT, ipv6_flow::MANIFEST),
        ["(2001:db8::1, 53)", "(2001:db8::2, 53)"]
    );
}

#[test]
fn typed_keys_are_what_the_spec_would_write() {
    use port_vlan::{Device, Key, VlanId};
    let key = Key { ingress_port: Device::Trunk, vlan_id: VlanId::new(10).unwrap() };
    assert_eq!(key.to_key_value(), routes(port_vlan::OBJECT, port_vlan::MANIFEST)[0].key);
    assert_eq!(key.to_string(), "(trunk, 10)");
    assert_eq!(Device::Port1_.name(), "port1");
    assert_eq!(Device::from_name("port_1"), Some(Device::Port1));
    assert_eq!(Device::ALL.map(Device::index), [0, 1, 2]);
    assert_eq!(VlanId::new(4096), None);

    let prefix = ipv4_router::Ipv4Prefix::new(Ipv4Addr::new(10, 20, 0, 0), 16).unwrap();
    assert_eq!(prefix.to_key_value(), routes(ipv4_router::OBJECT, ipv4_router::MANIFEST)[2].key);
    assert_eq!(ipv4_router::Ipv4Prefix::new(Ipv4Addr::new(10, 20, 0, 1), 16), None);

    let flow = ipv6_flow::Key { ipv6_src: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), l4_sport: 53 };
    assert_eq!(flow.to_key_value(), routes(ipv6_flow::OBJECT, ipv6_flow::MANIFEST)[1].key);

    let mac: l2_forwarding::Mac = "02:00:00:00:01:01".parse().unwrap();
    assert_eq!(mac.to_key_value(), routes(l2_forwarding::OBJECT, l2_forwarding::MANIFEST)[0].key);

    let steering = service_steering::Key { ip_proto: 6, l4_dport: 443 };
    assert!(matches!(steering.to_key_value(), KeyValue::Composite(ref p) if p.len() == 2));
}

#[test]
fn targets_are_devices_or_groups() {
    use vlan_switch::{Device, Group, Target};
    assert_eq!(Target::from(Device::Red), Target::Device(Device::Red));
    assert_eq!(Target::from(Group::Notices).to_string(), "group notices");
    assert_eq!(Device::ALL.map(Device::name), ["uplink", "red", "blue", "mgmt"]);
    assert_eq!([vlan_switch::COUNTERS, ipv6_router::COUNTERS], [true, false]);
}

#[test]
fn opening_where_nothing_is_deployed_is_an_error() {
    let dir = std::env::temp_dir().join(format!("devmapc-embed-nothing-{}", std::process::id()));
    let err = vlan_switch::Deployment::open(Some(&dir)).unwrap_err();
    assert!(!err.to_string().is_empty());
}
