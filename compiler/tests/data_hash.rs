//! The data hash says what the maps hold: comments, blank lines, the
//! order of routes and how a key is written leave it alone; any change of
//! a route, a device or an argument moves it.

use devmapc::ir::Ir;

fn ir(src: &str) -> Ir {
    let checked = devmapc::check_source(src);
    let model = checked.model.unwrap_or_else(|| panic!("{src}\n{:#?}", checked.diagnostics));
    devmapc::lower::lower(&model, "t.devmap", src)
}

const SPEC: &str = r#"table { key = vlan.id }
device uplink { ifname = "eth0" }
device red { ifname = "veth-red", egress = tag(10) }
device blue { ifindex = 12, egress = tag(20) }
egress tag(v: u16) { vlan.id = v }
group both { red, blue }
ingress { on = [uplink] }
route 10 -> red
route 20 -> blue
route 30 -> both
route default -> uplink
"#;

#[test]
fn layout_and_comments_keep_the_data_hash() {
    let base = ir(SPEC);
    let same_meaning = [
        // A comment and blank lines above everything: every line moves.
        format!("// the lab\n\n\n{SPEC}"),
        // Comments inside and after items.
        SPEC.replace("route 20 -> blue", "route 20 /* the blue tenant */ -> blue  // moved in May"),
        // Routes in another order.
        SPEC.replace("route 10 -> red\nroute 20 -> blue\n", "route 20 -> blue\n\nroute 10 -> red\n"),
        // A key written in hex.
        SPEC.replace("route 30 -> both", "route 0x1e -> both"),
        // The formatted spec.
        devmapc::fmt::format_source(SPEC).unwrap(),
    ];
    for src in &same_meaning {
        let other = ir(src);
        assert_eq!(other.data_hash(), base.data_hash(), "{src}");
        assert_eq!(other.code_hash(), base.code_hash(), "{src}");
    }
    // It is not a hash of nothing: the texts and lines did differ.
    assert_ne!(ir(&same_meaning[0]).data, base.data);
}

#[test]
fn every_change_of_meaning_moves_the_data_hash() {
    let base = ir(SPEC).data_hash();
    let changes = [
        ("a route's key", SPEC.replace("route 10 -> red", "route 11 -> red")),
        ("a route's target", SPEC.replace("route 10 -> red", "route 10 -> blue")),
        ("a route to a group", SPEC.replace("route 30 -> both", "route 30 -> red")),
        ("a route more", SPEC.replace("route 30 -> both", "route 30 -> both\nroute 40 -> red")),
        ("a route less", SPEC.replace("route 30 -> both\n", "")),
        ("the default route", SPEC.replace("route default -> uplink", "route default -> red")),
        ("an ifname", SPEC.replace("\"veth-red\"", "\"veth-r\"")),
        ("an ifindex", SPEC.replace("ifindex = 12", "ifindex = 13")),
        ("an argument", SPEC.replace("tag(20)", "tag(21)")),
        ("a group member", SPEC.replace("group both { red, blue }", "group both { red, blue, uplink }")),
        ("the ingress devices", SPEC.replace("on = [uplink]", "on = [uplink, red]")),
        ("the XDP mode", SPEC.replace("on = [uplink]", "on = [uplink], mode = generic")),
        // Device i is slot 1 + i: swapping two devices swaps their slots.
        ("the order of devices", SPEC.replace("device red { ifname = \"veth-red\", egress = tag(10) }\ndevice blue { ifindex = 12, egress = tag(20) }", "device blue { ifindex = 12, egress = tag(20) }\ndevice red { ifname = \"veth-red\", egress = tag(10) }")),
    ];
    for (what, src) in &changes {
        assert_ne!(src, SPEC, "{what}: the replacement did not apply");
        assert_ne!(ir(src).data_hash(), base, "{what}");
    }
}
