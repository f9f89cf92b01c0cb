use super::*;

/// A spec around `body`: a table keyed by VLAN id, an uplink that
/// receives traffic and a device `red` that VLAN 100 reaches.
const BASE: &str = "table { key = vlan.id }\ndevice uplink { ifname = \"eth0\" }\ndevice red { ifname = \"veth-red\" }\ningress { on = [uplink] }\nroute 100 -> red\n";

fn codes(src: &str) -> Vec<&'static str> {
    let checked = crate::check_source(src);
    checked.diagnostics.iter().map(|d| d.code.as_str().trim_start_matches("devmap::")).collect()
}

#[test]
fn a_deployment_holds_1023_devices() {
    // Each device in group `all`, so that none is unreached.
    let spec = |n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        let devices: String = names.iter().map(|d| format!("device {d} {{ ifname = \"{d}\" }}\n")).collect();
        format!("table {{ key = vlan.id }}\n{devices}group all {{ {} }}\ningress {{ on = [d0] }}\nroute 1 -> all\n", names.join(", "))
    };
    assert_eq!(codes(&spec(1023)), Vec::<&str>::new());
    let src = spec(1024);
    let checked = crate::check_source(&src);
    assert_eq!(codes(&src), ["E034"]);
    let d = &checked.diagnostics[0];
    assert_eq!(&src[d.primary.span.start..d.primary.span.end], "d1023");
}

fn messages(src: &str) -> Vec<String> {
    crate::check_source(src).diagnostics.iter().map(|d| d.message.clone()).collect()
}

#[test]
fn a_bad_name_is_one_error_not_one_per_use() {
    let src = format!("{BASE}device switch {{ ifname = \"sw0\", egress = volatile }}\negress volatile {{ drop }}\nroute 200 -> switch\n");
    assert_eq!(codes(&src), ["E003", "E003"]);
    assert!(messages(&src)[1].contains("cannot name an egress program"), "{:?}", messages(&src));
}

#[test]
fn a_misnamed_device_gets_no_warning() {
    let src = format!("{BASE}device __spare {{ ifname = \"eth9\" }}\n");
    assert_eq!(codes(&src), ["E003"]);
}

#[test]
fn a_duplicate_declaration_is_one_error() {
    // The group named like a device is not also an unused group.
    let src = format!("{BASE}group red {{ red, uplink }}\n");
    assert_eq!(codes(&src), ["E004"]);
    // The second parameter of one name is not also unused.
    let src = format!("{BASE}device blue {{ ifname = \"b\", egress = p(1, 2) }}\negress p(a: u8, a: u8) {{ if ipv4.ttl < a {{ drop }} }}\nroute 200 -> blue\n");
    assert_eq!(codes(&src), ["E004"]);
}

#[test]
fn a_typo_does_not_make_what_it_meant_unused() {
    // `retagg` for `retag`: no "no device uses `retag`".
    let src = format!("{BASE}device blue {{ ifname = \"b\", egress = retagg(10) }}\negress retag(vid: u16) {{ vlan.id = vid }}\nroute 200 -> blue\n");
    assert_eq!(codes(&src), ["E006"]);
    // `bleu` for `blue`: no "no route reaches `blue`", and the swap of
    // two letters is found as a typo.
    let src = format!("{BASE}device blue {{ ifname = \"b\" }}\nroute 200 -> bleu\n");
    assert_eq!(codes(&src), ["E005"]);
    assert_eq!(crate::check_source(&src).diagnostics[0].help.as_deref(), Some("did you mean `blue`?"));
}

#[test]
fn no_unreached_warning_when_the_ingress_devices_are_unknown() {
    let without = |ingress: &str| {
        format!("table {{ key = vlan.id }}\ndevice uplink {{ ifname = \"eth0\" }}\ndevice red {{ ifname = \"r\" }}\n{ingress}route 100 -> red\n")
    };
    assert_eq!(codes(&without("")), ["E024"]);
    assert_eq!(codes(&without("ingress { mode = native }\n")), ["E010"]);
    assert_eq!(codes(&without("ingress { on = [] }\n")), ["E024"]);
}

#[test]
fn members_of_an_unrouted_group_are_not_each_unreached() {
    let src = format!("{BASE}device blue {{ ifname = \"b\" }}\ngroup flood {{ red, blue }}\n");
    assert_eq!(codes(&src), ["W003"]);
}

#[test]
fn a_parameter_of_unknown_type_is_not_type_checked() {
    let src = format!("{BASE}device blue {{ ifname = \"b\", egress = only(10.0.0.1) }}\negress only(peer: ip) {{ if ipv4.src != peer {{ drop }} }}\nroute 200 -> blue\n");
    assert_eq!(codes(&src), ["E028"]);
    let src = format!("{BASE}device blue {{ ifname = \"b\", egress = retag(10) }}\negress retag(vid: u12) {{ vlan.id = vid }}\nroute 200 -> blue\n");
    let checked = crate::check_source(&src);
    assert_eq!(codes(&src), ["E028"]);
    assert!(checked.diagnostics[0].help.as_deref().unwrap().starts_with("did you mean `u16`?"));
}

#[test]
fn one_misplaced_layer_is_one_error() {
    let test = |packet: &str| format!("{BASE}test \"t\" {{\n    send uplink {packet}\n    expect pass\n}}\n");
    // Three tags: the third is out of place, the `ipv4` after it is not.
    assert_eq!(codes(&test("eth() / vlan(id = 1) / vlan(id = 2) / vlan(id = 3) / ipv4()")), ["E031"]);
    // Two layers swapped: one mistake.
    assert_eq!(codes(&test("eth() / udp() / ipv4()")), ["E031"]);
    assert_eq!(codes(&test("eth() / vlan(id = 1) / vlan(id = 2) / ipv4() / udp()")), Vec::<&str>::new());
    // Many tags: still one error, which counts them.
    let tags = vec!["vlan(id = 1)"; 4000].join(" / ");
    let src = test(&format!("eth() / {tags} / ipv4()"));
    assert_eq!(codes(&src), ["E031"]);
    assert_eq!(messages(&src), ["this packet has 4000 VLAN layers, at most two tags fit in a frame"]);
}

#[test]
fn a_duplicate_interface_points_at_the_binding() {
    let src = format!("{BASE}device blue {{ ifname = \"veth-red\" }}\nroute 200 -> blue\n");
    let checked = crate::check_source(&src);
    let d = &checked.diagnostics[0];
    assert_eq!(d.code, Code::DuplicateInterface);
    assert_eq!(&src[d.primary.span.start..d.primary.span.end], "ifname = \"veth-red\"");
    assert_eq!(&src[d.secondary[0].span.start..d.secondary[0].span.end], "ifname = \"veth-red\"");
}

#[test]
fn messages_read_well() {
    let one_entry = "table { key = vlan.id, max_entries = 1 }\ndevice uplink { ifname = \"eth0\" }\ningress { on = [uplink] }\nroute 1 -> uplink\nroute 2 -> uplink\n";
    assert_eq!(messages(one_entry), ["2 routes do not fit in a table of 1 entry"]);
    let order = format!("{BASE}device blue {{ ifname = \"b\", egress = f }}\negress f {{ if eth.src < 02:00:00:00:00:10 {{ drop }} }}\nroute 200 -> blue\n");
    assert_eq!(messages(&order), ["`<` cannot order MAC addresses"]);
    let ty = format!("{BASE}device blue {{ ifname = \"b\", egress = f }}\negress f {{ eth.src = 10.0.0.1 }}\nroute 200 -> blue\n");
    assert_eq!(messages(&ty), ["`eth.src` holds a MAC address, not an IPv4 address"]);
    let arg = format!("{BASE}device blue {{ ifname = \"b\", egress = f(10.0.0.1) }}\negress f(gw: mac) {{ eth.dst = gw }}\nroute 200 -> blue\n");
    assert_eq!(
        messages(&arg),
        ["parameter `gw` of `f` has type `mac`, but this argument is an IPv4 address"]
    );
    let space = format!("{BASE}device blue {{ ifname = \"veth blue\" }}\nroute 200 -> blue\n");
    assert_eq!(messages(&space), ["interface name \"veth blue\" contains a space"]);
    let prefix = "table { key = ipv4.dst }\ndevice uplink { ifname = \"eth0\" }\ningress { on = [uplink] }\nroute 10.0.0.0/8 -> uplink\n";
    let checked = crate::check_source(prefix);
    assert_eq!(
        checked.diagnostics[0].help.as_deref(),
        Some("to route prefixes, key the table by longest-prefix match: `key = lpm(ipv4.dst)`")
    );
}

#[test]
fn edit_distance_counts_a_swap_as_one() {
    assert_eq!(edit_distance("bleu", "blue"), 1);
    assert_eq!(edit_distance("donwlink", "downlink"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(suggest("retagg", ["retag", "own_mac"].into_iter()), Some("retag"));
}
