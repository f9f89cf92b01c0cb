//! `devmapc test` on egress programs that push a tag onto a frame that
//! already has two: the packets go through the real `xdp/devmap` programs
//! between veths, and statements after the push still find the IP header
//! behind the three tags (runtime/tests/hostile_vlan.rs covers every
//! combination of edits and tag counts through the programs' twins).

use devmapc_testkit::require_privileged;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_devmapc");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

const SPEC: &str = r#"table { key = vlan.id, on_miss = drop }
device a { ifname = "a0" }
device b { ifname = "b0", egress = e6(7) }
device c { ifname = "c0", egress = e4(7) }
egress e6(vid: u16) {
    vlan.push(vid)
    if ipv6.hop_limit <= 1 { drop }
    ipv6.hop_limit -= 1
}
egress e4(vid: u16) {
    vlan.push(vid)
    if ipv4.ttl <= 1 { drop }
    ipv4.ttl -= 1
}
ingress { on = [a] }
route 100 -> b
route 200 -> c

test "ipv6: pushed onto two tags, the hop limit is decremented" {
    send a eth(type = 0x88a8) / vlan(id = 100) / vlan(id = 5) / ipv6(hop_limit = 64) / udp(dport = 53)
    expect b vlan(id = 7) / vlan(id = 5) / ipv6(hop_limit = 63) / udp(dport = 53)
}

test "ipv6: pushed onto two tags, an expiring packet is dropped" {
    send a eth(type = 0x88a8) / vlan(id = 100) / vlan(id = 5) / ipv6(hop_limit = 1) / udp(dport = 53)
    expect drop
}

test "ipv4: pushed onto two tags, the ttl is decremented" {
    send a eth(type = 0x88a8) / vlan(id = 200) / vlan(id = 5) / ipv4(ttl = 64) / udp(dport = 53)
    expect c vlan(id = 7) / vlan(id = 5) / ipv4(ttl = 63) / udp(dport = 53)
}

test "ipv4: pushed onto two tags, an expiring packet is dropped" {
    send a eth(type = 0x88a8) / vlan(id = 200) / vlan(id = 5) / ipv4(ttl = 1) / udp(dport = 53)
    expect drop
}
"#;

#[test]
fn a_push_onto_two_tags_keeps_the_ip_header_in_reach() {
    require_privileged!();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("push.devmap");
    std::fs::write(&path, SPEC).unwrap();
    let out =
        Command::new(BIN).arg("test").arg(&path).current_dir(root()).env("NO_COLOR", "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}\n{stderr}");
}
