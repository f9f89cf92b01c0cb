//! [`Ir`] → C: fills `templates/devmap.bpf.c.hbs` (handlebars, strict mode,
//! no escaping).
//!
//! The template holds the fixed shape of the object (parser, maps, ingress
//! and egress programs); this module computes what varies with the spec's
//! *code* part: the key extraction, the maps, and the C statements of egress
//! bodies. Nothing from the data part is read here (see `ir.rs`).
//!
//! **Invariant:** every identifier written into C is either fixed text or a
//! name the checker validated, behind a `devmapc_`/`p_` prefix; no text of
//! the spec other than names and numbers reaches C.

use crate::fields::{Field, Header};
use crate::ir::*;
use crate::model::{Access, Cond, Const, MissAction, Operand, Stmt};
use serde::Serialize;

const TEMPLATE: &str = include_str!("../../templates/devmap.bpf.c.hbs");

/// Capacity of the per-device maps (slots, arguments, group members).
pub const MAX_SLOTS: u32 = 1024;

/// Renders the C source of a spec's object.
pub fn render(ir: &Ir) -> String {
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_template_string("devmap", TEMPLATE).expect("the bundled template parses");
    hb.render("devmap", &context(ir)).expect("the template renders with its own context")
}

#[derive(Serialize)]
struct Context {
    spec: String,
    code_hash: String,
    on_miss: OnMiss,
    max_slots: u32,
    counters: bool,
    key: KeyContext,
    maps: Vec<MapContext>,
    groups: Vec<GroupContext>,
    programs: Vec<ProgramContext>,
    /// Which helper functions the generated code calls: only those are
    /// written (an unused static function is a compiler warning).
    helpers: std::collections::BTreeMap<&'static str, bool>,
    /// Map settings for `numa_node`, for the maps the template declares.
    numa: Vec<String>,
}

const HELPERS: [&str; 10] = [
    "parse",
    "outer_tag",
    "mix",
    "copy",
    "set_mac",
    "mac_eq",
    "bytes16_eq",
    "ttl_sub",
    "vlan_push",
    "vlan_pop",
];

#[derive(Serialize)]
struct OnMiss {
    spec: &'static str,
    c: &'static str,
}

#[derive(Serialize)]
struct KeyContext {
    text: String,
    plan: &'static str,
    parse: bool,
    want_ip: u8,
    want_l4: u8,
    types: Vec<String>,
    locals: Vec<String>,
    lines: Vec<String>,
}

#[derive(Serialize)]
struct MapContext {
    name: String,
    comment: String,
    #[serde(rename = "type")]
    map_type: &'static str,
    key: String,
    value: String,
    max_entries: String,
    extra: Vec<String>,
}

#[derive(Serialize)]
struct GroupContext {
    name: String,
    map: String,
    line: u32,
}

#[derive(Serialize)]
struct ProgramContext {
    name: String,
    /// The section comment's text, dashes and name, as wide as the others.
    banner: String,
    line: u32,
    fields: Vec<String>,
    /// Declarations of the body besides the fixed ones.
    locals: Vec<String>,
    uses_args: bool,
    want_ip: u8,
    want_l4: u8,
    body: Vec<String>,
}

fn context(ir: &Ir) -> Context {
    let code = &ir.code;
    let on_miss = match code.on_miss {
        MissAction::Pass => OnMiss { spec: "pass", c: "XDP_PASS" },
        MissAction::Drop => OnMiss { spec: "drop", c: "XDP_DROP" },
        MissAction::Abort => OnMiss { spec: "abort", c: "XDP_ABORTED" },
    };
    let key = key_context(code);
    let programs: Vec<ProgramContext> = code.programs.iter().map(program_context).collect();
    let generated: Vec<&String> = key.lines.iter().chain(programs.iter().flat_map(|p| &p.body)).collect();
    let calls = |name: &str| generated.iter().any(|l| l.contains(&format!("devmapc_{name}(")));
    let mut helpers: std::collections::BTreeMap<&'static str, bool> =
        HELPERS.iter().map(|h| (*h, calls(h))).collect();
    helpers.insert("parse", key.parse || !programs.is_empty());
    // set_mac is written with copy.
    let copy = helpers["copy"] || helpers["set_mac"];
    helpers.insert("copy", copy);
    Context {
        spec: ir.spec.clone(),
        code_hash: ir.code_hash(),
        on_miss,
        max_slots: MAX_SLOTS,
        counters: code.counters,
        key,
        maps: maps(code),
        groups: code
            .groups
            .iter()
            .map(|g| GroupContext { name: g.name.clone(), map: g.map.clone(), line: g.line })
            .collect(),
        programs,
        helpers,
        numa: numa_extra(code),
    }
}

fn table_flags(code: &CodePlan, base: &[&str]) -> Vec<String> {
    let mut flags: Vec<&str> = base.to_vec();
    match code.access {
        Access::ReadWrite => {}
        Access::ReadOnly => flags.push("BPF_F_RDONLY"),
        Access::WriteOnly => flags.push("BPF_F_WRONLY"),
    }
    if code.numa_node.is_some() {
        flags.push("BPF_F_NUMA_NODE");
    }
    let mut extra = Vec::new();
    if !flags.is_empty() {
        extra.push(format!("__uint(map_flags, {});", flags.join(" | ")));
    }
    if let Some(node) = code.numa_node {
        extra.push(format!("__uint(numa_node, {node});"));
    }
    extra
}

/// Settings of the maps besides the table: only `numa_node` (the spec's
/// `access` is about the table alone).
fn numa_extra(code: &CodePlan) -> Vec<String> {
    match code.numa_node {
        Some(node) => {
            vec!["__uint(map_flags, BPF_F_NUMA_NODE);".into(), format!("__uint(numa_node, {node});")]
        }
        None => Vec::new(),
    }
}

fn maps(code: &CodePlan) -> Vec<MapContext> {
    let map = |name: &str,
               comment: String,
               map_type: &'static str,
               key: &str,
               value: &str,
               max_entries: String,
               extra: Vec<String>| MapContext {
        name: name.into(),
        comment,
        map_type,
        key: key.into(),
        value: value.into(),
        max_entries,
        // `numa_node` places every map of the data path on the node, but
        // per-CPU maps, which live on every CPU's node (the kernel refuses
        // BPF_F_NUMA_NODE for them).
        extra: if extra.is_empty() && !map_type.contains("PERCPU") { numa_extra(code) } else { extra },
    };
    let devmap_val = "struct bpf_devmap_val";
    let mut maps = Vec::new();
    match &code.key {
        KeyPlan::Direct { .. } => {
            maps.push(map(
                names::ROUTES,
                "The table: the packet's key → {egress ifindex, egress program}.".into(),
                "BPF_MAP_TYPE_DEVMAP_HASH",
                "__u32",
                devmap_val,
                code.max_entries.to_string(),
                table_flags(code, &[]),
            ));
            if !code.groups.is_empty() {
                maps.push(map(
                    names::GROUP_KEYS,
                    "Keys routed to a group → the group's slot (checked after a miss in devmapc_routes)."
                        .into(),
                    "BPF_MAP_TYPE_HASH",
                    "__u32",
                    "__u32",
                    code.max_entries.to_string(),
                    vec![],
                ));
            }
            if code.counters {
                maps.push(map(
                    names::KEY_COUNTERS,
                    "Packets and bytes per routed key; the runtime adds them up per device.".into(),
                    "BPF_MAP_TYPE_PERCPU_HASH",
                    "__u32",
                    "struct devmapc_counter",
                    code.max_entries.to_string(),
                    vec![],
                ));
            }
        }
        KeyPlan::Hashed { .. } => maps.push(map(
            names::KEYS,
            "The table: the packet's key → the slot of its target.".into(),
            "BPF_MAP_TYPE_HASH",
            "struct devmapc_key",
            "__u32",
            code.max_entries.to_string(),
            table_flags(code, &[]),
        )),
        KeyPlan::Lpm { .. } => maps.push(map(
            names::KEYS,
            "The table: longest prefix of the address → the slot of its target.".into(),
            "BPF_MAP_TYPE_LPM_TRIE",
            "struct devmapc_lpm_key",
            "__u32",
            code.max_entries.to_string(),
            table_flags(code, &["BPF_F_NO_PREALLOC"]),
        )),
    }
    maps.push(map(
        names::SLOTS,
        "Device slots → {egress ifindex, egress program}: targets of lowered keys and of `route default`."
            .into(),
        "BPF_MAP_TYPE_DEVMAP_HASH",
        "__u32",
        devmap_val,
        "DEVMAPC_MAX_SLOTS".into(),
        vec![],
    ));
    maps.push(map(
        names::DEFAULT,
        "The slot of `route default`, or 0 for none (then table.on_miss applies).".into(),
        "BPF_MAP_TYPE_ARRAY",
        "__u32",
        "__u32",
        "1".into(),
        vec![],
    ));
    for g in &code.groups {
        maps.push(map(
            &g.map,
            format!("Group `{}` (line {}): its members, each with its egress program.", g.name, g.line),
            "BPF_MAP_TYPE_DEVMAP_HASH",
            "__u32",
            devmap_val,
            "DEVMAPC_MAX_SLOTS".into(),
            vec![],
        ));
    }
    if code.counters {
        maps.push(map(
            names::COUNTERS,
            "Packets and bytes per slot; slot 0 counts misses.".into(),
            "BPF_MAP_TYPE_PERCPU_ARRAY",
            "__u32",
            "struct devmapc_counter",
            "DEVMAPC_MAX_SLOTS".into(),
            vec![],
        ));
        if !code.groups.is_empty() {
            maps.push(map(
                names::GROUP_COUNTERS,
                "Packets and bytes per group.".into(),
                "BPF_MAP_TYPE_PERCPU_ARRAY",
                "__u32",
                "struct devmapc_counter",
                code.groups.len().to_string(),
                vec![],
            ));
        }
    }
    maps
}

/// The C expression that reads a field, and the condition under which the
/// header it lives in is present (`None`: always).
fn read(field: Field) -> (String, Option<&'static str>) {
    let (expr, guard) = match field {
        Field::IngressPort => ("ctx->ingress_ifindex", None),
        Field::EgressMac => ("args->devmapc_egress_mac", None),
        Field::EthDst => ("p.eth->h_dest", Some("p.eth")),
        Field::EthSrc => ("p.eth->h_source", Some("p.eth")),
        Field::VlanId => ("(bpf_ntohs(p.vlan->tci) & 0x0fff)", Some("p.vlan")),
        Field::VlanPcp => ("(bpf_ntohs(p.vlan->tci) >> 13)", Some("p.vlan")),
        Field::Ipv4Src => ("p.ip4->saddr", Some("p.ip4")),
        Field::Ipv4Dst => ("p.ip4->daddr", Some("p.ip4")),
        Field::Ipv4Ttl => ("p.ip4->ttl", Some("p.ip4")),
        Field::Ipv4Proto => ("p.ip4->protocol", Some("p.ip4")),
        Field::Ipv6Src => ("p.ip6->saddr.in6_u.u6_addr8", Some("p.ip6")),
        Field::Ipv6Dst => ("p.ip6->daddr.in6_u.u6_addr8", Some("p.ip6")),
        Field::Ipv6HopLimit => ("p.ip6->hop_limit", Some("p.ip6")),
        Field::IpProto => ("p.l4proto", Some(HAS_IP)),
        Field::L4Sport => ("bpf_ntohs(p.l4->src)", Some("p.l4")),
        Field::L4Dport => ("bpf_ntohs(p.l4->dst)", Some("p.l4")),
    };
    (expr.to_string(), guard)
}

/// How deep the parser must go for these fields: the IP versions
/// (`DEVMAPC_WANT_IPV4` = 1 | `DEVMAPC_WANT_IPV6` = 2) and whether the L4
/// ports are needed.
fn depth(fields: impl IntoIterator<Item = Field>) -> (u8, bool) {
    let mut want = (0, false);
    for f in fields {
        match f.header() {
            Header::Ipv4 => want.0 |= 1,
            Header::Ipv6 => want.0 |= 2,
            Header::Ip => want.0 |= 3,
            Header::L4 => want = (3, true),
            _ => {}
        }
    }
    want
}

fn key_context(code: &CodePlan) -> KeyContext {
    let fields = code.key.fields();
    let parse = fields.iter().any(|f| f.header() != Header::Meta);
    let (want_ip, want_l4) = depth(fields.iter().copied());
    let text = match &code.key {
        KeyPlan::Lpm { field, .. } => format!("lpm({field})"),
        _ if fields.len() == 1 => fields[0].to_string(),
        _ => format!("({})", fields.iter().map(|f| f.path()).collect::<Vec<_>>().join(", ")),
    };
    // A key on Ethernet and the outer tag only (`vlan.id`, `eth.dst`,
    // `(vlan.id, eth.dst)`) needs no parser: one bounds check finds the
    // headers, as a hand-written program would.
    let shallow = fields.iter().all(|f| matches!(f.header(), Header::Eth | Header::Vlan));
    let tagged = fields.iter().any(|f| f.header() == Header::Vlan);
    let mut guards: Vec<&str> = fields.iter().filter_map(|f| read(*f).1).collect();
    guards.sort_unstable_by_key(|g| *g != "p.vlan");
    guards.dedup();
    if shallow {
        // Found below with a bounds check of its own (for a tag, the tag's
        // covers the Ethernet header in front of it).
        guards.retain(|g| *g != "p.eth");
    }
    let mut lines: Vec<String> = guards.iter().map(|g| format!("if (!{g})\n\t\tgoto miss;")).collect();
    let mut types = Vec::new();
    let mut locals = Vec::new();
    let plan = match &code.key {
        KeyPlan::Direct { fields, mix } => {
            locals.push("__u32 key;".to_string());
            locals.push("long action;".to_string());
            let parts: Vec<String> = fields
                .iter()
                .map(|f| match f.shift {
                    0 => read(f.field).0,
                    s => format!("((__u32){} << {s})", read(f.field).0),
                })
                .collect();
            let packed = match parts.as_slice() {
                // One field: without the parentheses `read` puts around an
                // operator (the call has its own).
                [one] => unwrap_parens(one).to_string(),
                _ => parts.join(" | "),
            };
            // The same function as `KeyMix::apply`, which the runtime uses
            // for every key it writes or looks up.
            lines.push(match mix {
                KeyMix::None => format!("key = {packed};"),
                KeyMix::Fmix32 => format!("key = devmapc_mix({packed});"),
            });
            lines.push("action = bpf_redirect_map(&devmapc_routes, key, DEVMAPC_ON_MISS);".into());
            if code.counters {
                lines.push("if (action == XDP_REDIRECT) {\n\t\tdevmapc_count(&devmapc_key_counters, key, bytes);\n\t\treturn action;\n\t}".into());
            } else {
                lines.push("if (action == XDP_REDIRECT)\n\t\treturn action;".into());
            }
            if !code.groups.is_empty() {
                locals.push("__u32 *slot;".to_string());
                lines.push("/* Not a device route: a group route, or a miss. */".into());
                lines.push("slot = bpf_map_lookup_elem(&devmapc_group_keys, &key);".into());
                lines.push("if (slot)\n\t\treturn devmapc_to_slot(*slot, bytes);".into());
            }
            lines.push("miss:\n\treturn devmapc_miss(bytes);".into());
            "direct: the key is the DEVMAP_HASH key"
        }
        KeyPlan::Hashed { fields, size } => {
            // Aligned as far as the size allows (sizeof is unchanged), so
            // that fields at aligned offsets are stored in one instruction.
            let align = key_align(*size);
            types.push(format!("/* {text}, each field in network byte order. */\nstruct devmapc_key {{\n\t__u8 bytes[{size}];\n}} __attribute__((aligned({align})));"));
            locals.push("struct devmapc_key key;".into());
            locals.push("__u32 *slot;".into());
            for f in fields {
                lines.push(put_field(f.field, &format!("key.bytes + {}", f.offset), f.size));
            }
            lines.extend(slot_lookup());
            "hashed: a BPF_MAP_TYPE_HASH gives the slot"
        }
        KeyPlan::Lpm { field, address_bytes } => {
            types.push(format!(
                "struct devmapc_lpm_key {{\n\t__u32 prefixlen;\n\t__u8 addr[{address_bytes}];\n}};"
            ));
            locals.push("struct devmapc_lpm_key key;".into());
            locals.push("__u32 *slot;".into());
            lines.push(format!("key.prefixlen = {};", address_bytes * 8));
            lines.push(put_field(*field, "key.addr", *address_bytes));
            lines.extend(slot_lookup());
            "lpm: a BPF_MAP_TYPE_LPM_TRIE gives the slot"
        }
    };
    if shallow {
        locals.insert(0, "struct devmapc_pkt p;".into());
        let mut found = Vec::new();
        if tagged {
            found.push("p.vlan = devmapc_outer_tag(data, data_end);");
            if fields.iter().any(|f| f.header() == Header::Eth) {
                found.push("p.eth = data;");
            }
        } else {
            // Not a helper returning NULL: clang would keep a NULL test of
            // `data` itself after the bounds check.
            found.push("if (data + sizeof(struct ethhdr) > data_end)\n\t\tgoto miss;");
            found.push("p.eth = data;");
        }
        lines.splice(0..0, found.into_iter().map(String::from));
    }
    let parse = parse && !shallow;
    // Without a `goto miss` (a key that every packet has), no label.
    if !lines.iter().any(|l| l.contains("goto miss")) {
        for line in &mut lines {
            if let Some(rest) = line.strip_prefix("miss:\n\t") {
                *line = rest.to_string();
            }
        }
    }
    // One tab in, as the statements of the function; a label at column 0.
    let lines =
        lines.into_iter().map(|l| if l.starts_with("miss:") { l } else { format!("\t{l}") }).collect();
    KeyContext { text, plan, parse, want_ip, want_l4: want_l4.into(), types, locals, lines }
}

/// `expr` without one pair of parentheses that encloses all of it.
fn unwrap_parens(expr: &str) -> &str {
    let Some(inner) = expr.strip_prefix('(').and_then(|e| e.strip_suffix(')')) else {
        return expr;
    };
    let mut depth = 0i32;
    for c in inner.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            return expr; // `(a) | (b)`: the first ')' closes the first '('
        }
    }
    inner
}

fn slot_lookup() -> Vec<String> {
    vec![
        "slot = bpf_map_lookup_elem(&devmapc_keys, &key);".into(),
        "if (!slot)\n\t\tgoto miss;".into(),
        "return devmapc_to_slot(*slot, bytes);".into(),
        "miss:\n\treturn devmapc_miss(bytes);".into(),
    ]
}

/// The alignment of a hashed key of `size` bytes: the largest power of two
/// that divides it, at most 8 (so that `sizeof` stays `size`).
fn key_align(size: u32) -> u32 {
    1 << size.trailing_zeros().min(3)
}

/// Writes a field into key bytes at `at`, in network byte order. Packet
/// data is copied with `__builtin_memcpy`, which clang turns into loads and
/// stores as wide as both sides' alignment allows (the byte-by-byte
/// `devmapc_copy` is for read-only data only, see the template); the
/// Ethernet header is packed, so a MAC is copied byte by byte either way.
fn put_field(field: Field, at: &str, size: u32) -> String {
    match field {
        Field::EthDst | Field::EthSrc => {
            format!("devmapc_copy({at}, {}, {size});", read(field).0)
        }
        Field::Ipv6Src | Field::Ipv6Dst | Field::Ipv4Src | Field::Ipv4Dst => {
            format!("__builtin_memcpy({at}, &{}, {size});", wire(field))
        }
        _ if size == 1 => format!("*({at}) = {};", read(field).0),
        _ => format!(
            "{{\n\t\t__be{bits} v = {};\n\n\t\t__builtin_memcpy({at}, &v, {size});\n\t}}",
            wire(field),
            bits = size * 8
        ),
    }
}

/// A field as it is on the wire (network byte order), for key bytes.
fn wire(field: Field) -> String {
    match field {
        Field::VlanId => "(p.vlan->tci & bpf_htons(0x0fff))".into(),
        Field::VlanPcp => "(__u8)(bpf_ntohs(p.vlan->tci) >> 13)".into(),
        Field::Ipv4Src => "p.ip4->saddr".into(),
        Field::Ipv4Dst => "p.ip4->daddr".into(),
        Field::Ipv6Src => "p.ip6->saddr".into(),
        Field::Ipv6Dst => "p.ip6->daddr".into(),
        Field::L4Sport => "p.l4->src".into(),
        Field::L4Dport => "p.l4->dst".into(),
        Field::IngressPort => "bpf_htonl(ctx->ingress_ifindex)".into(),
        other => read(other).0,
    }
}

fn program_context(p: &ProgramPlan) -> ProgramContext {
    let mut fields: Vec<String> = p
        .params
        .iter()
        .map(|param| match param.ty {
            ParamType::U8 => format!("__u8 p_{}", param.name),
            ParamType::U16 => format!("__u16 p_{}", param.name),
            ParamType::U32 => format!("__u32 p_{}", param.name),
            ParamType::Ipv4 => format!("__be32 p_{}", param.name),
            ParamType::Mac => format!("__u8 p_{}[6]", param.name),
            ParamType::Ipv6 => format!("__u8 p_{}[16]", param.name),
        })
        .collect();
    if p.uses_egress_mac {
        fields.push("__u8 devmapc_egress_mac[6]".into());
    }
    let uses_args = !fields.is_empty();
    if !uses_args {
        fields.push("__u8 devmapc_unused".into());
    }
    let want = body_depth(&p.body);
    let pushes = pushes(&p.body, false);
    let mut locals = Vec::new();
    if pushes {
        locals.push("/* Tags this program pushed, in front of the frame's own. */".to_string());
        locals.push("__u32 pushed = 0;".to_string());
    }
    // One tab in, as the statements of the function.
    let mut printer =
        Body { params: &p.params, lines: Vec::new(), depth: 1, want, pushes, known: Vec::new() };
    printer.stmts(&p.body, false);
    let title = format!(" egress program `{}`", p.name);
    let banner = format!("{}{title}", "-".repeat(BANNER_WIDTH.saturating_sub(title.len()).max(3)));
    ProgramContext {
        name: p.name.clone(),
        banner,
        line: p.line,
        fields,
        locals,
        uses_args,
        want_ip: want.0,
        want_l4: want.1.into(),
        body: printer.lines,
    }
}

/// The width of a section comment's text between `/* ` and ` */`, as in
/// the template's fixed ones (`---- maps`).
const BANNER_WIDTH: usize = 71;

/// Whether an egress body has a `vlan.push` that a later statement needs
/// counted: one followed by a statement that reads the headers (`after`:
/// whether something after `body` does).
fn pushes(body: &[Stmt], after: bool) -> bool {
    body.iter().enumerate().any(|(i, s)| {
        let later = after || body[i + 1..].iter().any(reads);
        match s {
            Stmt::VlanPush(_) => later,
            Stmt::If { then, otherwise, .. } => pushes(then, later) || pushes(otherwise, later),
            _ => false,
        }
    })
}

/// Whether a statement reads a header of the frame (through `p`), so that
/// the headers must be found again after the frame moved in front of it.
fn reads(stmt: &Stmt) -> bool {
    fn operand(o: &Operand) -> bool {
        matches!(o, Operand::Field(f) if read(*f).1.is_some())
    }
    fn cond(c: &Cond) -> bool {
        match c {
            Cond::Or(cs) | Cond::And(cs) => cs.iter().any(cond),
            Cond::Not(c) => cond(c),
            Cond::Has(_) => true,
            Cond::Compare { left, right, .. } => operand(left) || operand(right),
        }
    }
    match stmt {
        Stmt::Drop | Stmt::Pass => false,
        Stmt::Assign { .. } | Stmt::Decrement { .. } | Stmt::VlanPop => true,
        Stmt::VlanPush(o) => operand(o),
        Stmt::If { cond: c, then, otherwise } => {
            cond(c) || then.iter().any(reads) || otherwise.iter().any(reads)
        }
    }
}

/// Whether statements move the frame (push or pop a tag) anywhere.
fn moves(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::VlanPush(_) | Stmt::VlanPop => true,
        Stmt::If { then, otherwise, .. } => moves(then) || moves(otherwise),
        _ => false,
    })
}

/// How deep an egress body needs the parser to go: every field it touches.
fn body_depth(body: &[Stmt]) -> (u8, bool) {
    fn operand(o: &Operand, out: &mut Vec<Field>) {
        if let Operand::Field(f) = o {
            out.push(*f);
        }
    }
    fn cond(c: &Cond, out: &mut Vec<Field>) {
        match c {
            Cond::Or(cs) | Cond::And(cs) => cs.iter().for_each(|c| cond(c, out)),
            Cond::Not(c) => cond(c, out),
            Cond::Has(Header::Ipv4) => out.push(Field::Ipv4Ttl),
            Cond::Has(Header::Ipv6) => out.push(Field::Ipv6HopLimit),
            Cond::Has(Header::Ip) => out.push(Field::IpProto),
            Cond::Has(Header::L4) => out.push(Field::L4Dport),
            Cond::Has(_) => {}
            Cond::Compare { left, right, .. } => {
                operand(left, out);
                operand(right, out);
            }
        }
    }
    fn stmts(body: &[Stmt], out: &mut Vec<Field>) {
        for s in body {
            match s {
                Stmt::Assign { field, value } => {
                    out.push(*field);
                    operand(value, out);
                }
                Stmt::Decrement { field, .. } => out.push(*field),
                Stmt::VlanPush(o) => operand(o, out),
                Stmt::If { cond: c, then, otherwise } => {
                    cond(c, out);
                    stmts(then, out);
                    stmts(otherwise, out);
                }
                Stmt::VlanPop | Stmt::Drop | Stmt::Pass => {}
            }
        }
    }
    let mut fields = Vec::new();
    stmts(body, &mut fields);
    depth(fields)
}

/// Prints egress statements as C lines (indented relative to the body).
struct Body<'a> {
    params: &'a [ParamPlan],
    lines: Vec<String>,
    depth: usize,
    want: (u8, bool),
    /// The body pushes tags that a later statement needs counted: it counts
    /// them in `pushed`, which the parser skips (the limit of two tags is on
    /// the frame's own).
    pushes: bool,
    /// Headers known present where the next statement runs: tested by an
    /// enclosing `if`, and not moved since. A statement guarded by one of
    /// them does not test it again.
    known: Vec<&'static str>,
}

impl Body<'_> {
    fn line(&mut self, text: String) {
        for l in text.lines() {
            // A blank line stays blank, with no indentation.
            self.lines.push(if l.is_empty() {
                String::new()
            } else {
                format!("{}{l}", "\t".repeat(self.depth))
            });
        }
    }

    /// `after`: whether a statement after `body` reads the headers.
    fn stmts(&mut self, body: &[Stmt], after: bool) {
        for (i, s) in body.iter().enumerate() {
            let later = after || body[i + 1..].iter().any(reads);
            self.stmt(s, later);
        }
    }

    /// Re-reads the headers after the frame moved (VLAN push or pop): the
    /// verifier forgets packet pointers across bpf_xdp_adjust_head, and the
    /// headers are now elsewhere. Every header the frame had is found again,
    /// however many tags the program pushed in front of it. Nothing when no
    /// later statement reads a header.
    fn reparse(&self, later: bool) -> String {
        if !later {
            return String::new();
        }
        let (ip, l4) = (self.want.0, u8::from(self.want.1));
        let parse = if self.pushes {
            format!("devmapc_parse_pushed(data, data_end, &p, {ip}, {l4}, pushed);")
        } else {
            format!("devmapc_parse(data, data_end, &p, {ip}, {l4});")
        };
        format!("data = (void *)(long)ctx->data;\ndata_end = (void *)(long)ctx->data_end;\n{parse}")
    }

    /// `text` under `guards` (C conditions joined with `&&`), leaving out
    /// those already known: the bare statement when none is left, else an
    /// `if`, with braces when `text` is more than one statement.
    fn guarded(&mut self, guards: &[&'static str], text: &str, block: bool) {
        let left: Vec<&str> = guards.iter().copied().filter(|g| !self.known.contains(g)).collect();
        if left.is_empty() {
            self.line(text.to_string());
        } else if block {
            self.line(format!("if ({}) {{\n{}\n}}", left.join(" && "), indent(text)));
        } else {
            self.line(format!("if ({})\n{}", left.join(" && "), indent(text)));
        }
    }

    /// A push or pop (`call`) under `guards`, dropping the frame when it
    /// fails, and `then` after it: the headers move, nothing is known of
    /// them any more.
    fn moved(&mut self, guards: &[&'static str], call: &str, then: &str) {
        let check = format!("if ({call} < 0)\n\treturn XDP_DROP;");
        if then.is_empty() {
            let left: Vec<&str> = guards.iter().copied().filter(|g| !self.known.contains(g)).collect();
            let test =
                left.into_iter().chain([format!("{call} < 0").as_str()]).collect::<Vec<_>>().join(" && ");
            self.line(format!("if ({test})\n\treturn XDP_DROP;"));
        } else {
            self.guarded(guards, &format!("{check}\n{then}"), true);
        }
        self.known.clear();
    }

    fn stmt(&mut self, stmt: &Stmt, later: bool) {
        match stmt {
            Stmt::Drop => self.line("return XDP_DROP;".into()),
            Stmt::Pass => self.line("return XDP_PASS;".into()),
            Stmt::Assign { field: Field::VlanId, value } => {
                let (v, guard) = self.operand(value);
                let guards: Vec<&'static str> =
                    ["p.vlan"].into_iter().chain(guard.filter(|g| *g != "p.vlan")).collect();
                let v = if simple(&v) || unwrap_parens(&v) != v { v } else { format!("({v})") };
                self.guarded(
                    &guards,
                    &format!("p.vlan->tci = bpf_htons((bpf_ntohs(p.vlan->tci) & 0xf000) | ({v} & 0x0fff));"),
                    false,
                );
            }
            Stmt::Assign { field, value } => {
                let (to, _) = read(*field);
                let (from, guard) = self.operand(value);
                let guards: Vec<&'static str> =
                    ["p.eth"].into_iter().chain(guard.filter(|g| *g != "p.eth")).collect();
                if matches!(value, Operand::Field(Field::EthSrc | Field::EthDst)) {
                    // A block of its own for the copy, even with no guard.
                    let block = format!("{{\n\t__u8 mac[ETH_ALEN];\n\n\tdevmapc_set_mac(mac, {from});\n\tdevmapc_set_mac({to}, mac);\n}}");
                    let left: Vec<&str> =
                        guards.iter().copied().filter(|g| !self.known.contains(g)).collect();
                    match left.as_slice() {
                        [] => self.line(block),
                        gs => self.line(format!("if ({}) {block}", gs.join(" && "))),
                    }
                } else {
                    self.guarded(&guards, &format!("devmapc_set_mac({to}, {from});"), false);
                }
            }
            Stmt::Decrement { field: Field::Ipv4Ttl, amount } => {
                self.guarded(&["p.ip4"], &format!("devmapc_ttl_sub(p.ip4, {amount});"), false)
            }
            Stmt::Decrement { amount, .. } => self.guarded(
                &["p.ip6"],
                &format!("p.ip6->hop_limit = p.ip6->hop_limit > {amount} ? p.ip6->hop_limit - {amount} : 0;"),
                false,
            ),
            Stmt::VlanPush(value) => {
                let (v, guard) = self.operand(value);
                let count = if self.pushes && later { "pushed++;\n" } else { "" };
                let then = format!("{count}{}", self.reparse(later));
                self.moved(
                    &guard.into_iter().collect::<Vec<_>>(),
                    &format!("devmapc_vlan_push(ctx, {v})"),
                    &then,
                );
            }
            Stmt::VlanPop => {
                // The outer tag goes: one of ours while there are any.
                let ours = if self.pushes && later { "if (pushed)\n\tpushed--;\n" } else { "" };
                let then = format!("{ours}{}", self.reparse(later));
                self.moved(&["p.vlan"], "devmapc_vlan_pop(ctx)", &then);
            }
            Stmt::If { .. } => self.chain(stmt, later),
        }
    }

    /// An `if` and the `else if`s of its `else` branches: without braces
    /// when every branch is one line, with braces on every branch if not.
    fn chain(&mut self, stmt: &Stmt, later: bool) {
        // The links: (condition, statements), the last maybe without one.
        let mut links: Vec<(Option<&Cond>, &[Stmt])> = Vec::new();
        let mut at = stmt;
        loop {
            let Stmt::If { cond, then, otherwise } = at else { unreachable!("only an if starts a chain") };
            links.push((Some(cond), then));
            match otherwise.as_slice() {
                [] => break,
                [next @ Stmt::If { .. }] => at = next,
                rest => {
                    links.push((None, rest));
                    break;
                }
            }
        }
        let outer = self.known.clone();
        // What the conditions of the links before this one, all false, show.
        let mut previous: Vec<&'static str> = Vec::new();
        let mut moved = false;
        let mut printed: Vec<(Option<String>, Vec<String>)> = Vec::new();
        for (cond, body) in &links {
            // In a branch: what was known, what the conditions before it
            // show by being false, and what its own shows by being true.
            self.known = outer.clone();
            self.known.extend(previous.iter().copied());
            // A lone `has()` needs no parentheses of its own in `if (...)`.
            let c = cond.map(|c| match c {
                Cond::Has(h) => has_test(*h).to_string(),
                _ => self.cond(c),
            });
            if let Some(c) = cond {
                facts(c, &mut self.known);
                false_facts(c, &mut previous);
            }
            let lines = std::mem::take(&mut self.lines);
            self.depth += 1;
            self.stmts(body, later);
            self.depth -= 1;
            let inner = std::mem::replace(&mut self.lines, lines);
            moved |= moves(body);
            printed.push((c, inner));
        }
        let braces = printed.iter().any(|(_, inner)| inner.len() != 1);
        for (i, (c, inner)) in printed.into_iter().enumerate() {
            let head = match (i, c) {
                (0, Some(c)) => format!("if ({c})"),
                (_, Some(c)) => format!("else if ({c})"),
                (_, None) => "else".to_string(),
            };
            if braces {
                let head = if i == 0 { format!("{head} {{") } else { format!("}} {head} {{") };
                self.line(head);
            } else {
                self.line(head);
            }
            self.lines.extend(inner);
        }
        if braces {
            self.line("}".into());
        }
        // After the chain: what was known before it, unless a branch moved
        // the frame.
        self.known = if moved { Vec::new() } else { outer };
    }

    /// A value as C, and the guard under which it can be read.
    fn operand(&self, o: &Operand) -> (String, Option<&'static str>) {
        match o {
            Operand::Const(c) => (constant(*c), None),
            Operand::Param(i) => (format!("args->p_{}", self.params[*i].name), None),
            Operand::Field(f) => read(*f),
        }
    }

    fn cond(&self, c: &Cond) -> String {
        // Parentheses around an operand of `||` whose outer operator is
        // `&&` (clang warns without them), and around an `||` in an `&&`.
        let join = |cs: &[Cond], op: &str, wrap: &dyn Fn(&Cond, &str) -> bool| {
            cs.iter()
                .map(|c| {
                    let text = self.cond(c);
                    if wrap(c, &text) {
                        format!("({text})")
                    } else {
                        text
                    }
                })
                .collect::<Vec<_>>()
                .join(op)
        };
        match c {
            Cond::Or(cs) => join(cs, " || ", &|c, text| {
                matches!(c, Cond::And(_)) || (matches!(c, Cond::Compare { .. }) && text.contains(" && "))
            }),
            Cond::And(cs) => join(cs, " && ", &|c, _| matches!(c, Cond::Or(_))),
            Cond::Not(c) => {
                let text = self.cond(c);
                if simple(&text) || matches!(**c, Cond::Has(_)) {
                    format!("!{text}")
                } else {
                    format!("!({text})")
                }
            }
            Cond::Has(h) => format!("({})", has_test(*h)),
            Cond::Compare { left, op, right } => {
                let (l, lg) = self.operand(left);
                let (r, rg) = self.operand(right);
                let field = [left, right].into_iter().find_map(|o| match o {
                    Operand::Field(f) => Some(*f),
                    _ => None,
                });
                let bytes =
                    matches!(field.map(|f| f.ty()), Some(crate::fields::Ty::Mac | crate::fields::Ty::Ipv6));
                let test = if bytes {
                    let eq = if field.map(|f| f.ty()) == Some(crate::fields::Ty::Mac) {
                        "devmapc_mac_eq"
                    } else {
                        "devmapc_bytes16_eq"
                    };
                    let call = format!("{eq}({l}, {r})");
                    if *op == crate::ast::CmpOp::Ne {
                        format!("!{call}")
                    } else {
                        call
                    }
                } else {
                    format!("{l} {} {r}", op.as_str())
                };
                // A comparison on a header the packet lacks is false.
                let mut guards: Vec<&str> = Vec::new();
                for g in [lg, rg].into_iter().flatten() {
                    if !guards.contains(&g) && !self.known.contains(&g) {
                        guards.push(g);
                    }
                }
                match guards.as_slice() {
                    [] => test,
                    gs => format!("{} && {test}", gs.join(" && ")),
                }
            }
        }
    }
}

/// The guard of a read of an IP field (`ip.proto`): IPv4 or IPv6 present.
const HAS_IP: &str = "(p.has & DEVMAPC_HAS_IP)";

/// The guard a read of a header's fields needs, as `read` gives it: what a
/// true `has(h)` makes known.
fn present(h: Header) -> &'static str {
    match h {
        Header::Eth => "p.eth",
        Header::Vlan => "p.vlan",
        Header::Ipv4 => "p.ip4",
        Header::Ipv6 => "p.ip6",
        Header::Ip => HAS_IP,
        Header::L4 | Header::Meta => "p.l4",
    }
}

/// The C test of `has(h)`, without parentheses: a flag the parser sets,
/// never the header's pointer, since clang folds `p.ip4 || p.ip6` (and
/// `&&`, `!` of such tests) into arithmetic on the pointers, which the
/// verifier refuses.
fn has_test(h: Header) -> &'static str {
    match h {
        Header::Eth => "p.has & DEVMAPC_HAS_ETH",
        Header::Vlan => "p.has & DEVMAPC_HAS_VLAN",
        Header::Ipv4 => "p.has & DEVMAPC_HAS_IPV4",
        Header::Ipv6 => "p.has & DEVMAPC_HAS_IPV6",
        Header::Ip => "p.has & DEVMAPC_HAS_IP",
        Header::L4 | Header::Meta => "p.has & DEVMAPC_HAS_L4",
    }
}

/// The headers a condition, when true, shows present.
fn facts(c: &Cond, out: &mut Vec<&'static str>) {
    match c {
        Cond::And(cs) => cs.iter().for_each(|c| facts(c, out)),
        Cond::Has(h) => out.push(present(*h)),
        Cond::Compare { left, right, .. } => {
            for o in [left, right] {
                if let Operand::Field(f) = o {
                    out.extend(read(*f).1);
                }
            }
        }
        Cond::Or(_) | Cond::Not(_) => {}
    }
}

/// The headers a condition, when false, shows present: `!has(vlan)`
/// false is `has(vlan)` true.
fn false_facts(c: &Cond, out: &mut Vec<&'static str>) {
    match c {
        Cond::Not(c) => facts(c, out),
        Cond::Or(cs) => cs.iter().for_each(|c| false_facts(c, out)),
        Cond::And(_) | Cond::Has(_) | Cond::Compare { .. } => {}
    }
}

/// Whether a C expression is one name, member access or number, which
/// needs no parentheses as an operand.
fn simple(expr: &str) -> bool {
    !expr.is_empty() && expr.chars().all(|c| c.is_ascii_alphanumeric() || "_.->".contains(c))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("\t{l}")).collect::<Vec<_>>().join("\n")
}

/// A constant as a C expression of the type the field reads as.
fn constant(c: Const) -> String {
    match c {
        Const::Uint(n) => n.to_string(),
        Const::Mac(m) => format!(
            "(const __u8[ETH_ALEN]){{{}}}",
            m.iter().map(|b| format!("0x{b:02x}")).collect::<Vec<_>>().join(", ")
        ),
        Const::Ipv4(a) => format!("bpf_htonl(0x{:08x}) /* {a} */", u32::from(a)),
        Const::Ipv6(a) => format!(
            "(const __u8[16]){{{}}} /* {a} */",
            a.octets().iter().map(|b| format!("0x{b:02x}")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The maps of the object, for the manifest: name, type, key and value
/// types, capacity.
pub fn map_list(code: &CodePlan) -> Vec<serde_json::Value> {
    let mut list: Vec<serde_json::Value> = maps(code)
        .into_iter()
        .map(|m| {
            let max_entries = if m.max_entries == "DEVMAPC_MAX_SLOTS" { MAX_SLOTS.to_string() } else { m.max_entries };
            serde_json::json!({ "name": m.name, "type": m.map_type, "key": m.key, "value": m.value, "max_entries": max_entries.parse::<u64>().unwrap_or(0) })
        })
        .collect();
    for p in &code.programs {
        list.push(serde_json::json!({ "name": p.args_map, "type": "BPF_MAP_TYPE_HASH", "key": "__u32", "value": format!("struct devmapc_args_{}", p.name), "max_entries": MAX_SLOTS }));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(src: &str) -> String {
        let checked = crate::check_source(src);
        let model = checked.model.unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
        render(&crate::lower::lower(&model, "t.devmap", src))
    }

    const PROGRAMS: &str = "egress tag(v: u16) { vlan.id = v }\negress mac(m: mac) { eth.src = m }\n";

    #[test]
    fn a_direct_key_is_mixed_once_and_the_helper_written_once() {
        let table = |key: &str| {
            c(&format!("table {{ key = {key} }}\ndevice a {{ ifname = \"a\" }}\ningress {{ on = [a] }}\n"))
        };
        let vlan = table("vlan.id");
        assert!(vlan.contains("key = devmapc_mix(bpf_ntohs(p.vlan->tci) & 0x0fff);"), "{vlan}");
        assert_eq!(vlan.matches("static __always_inline __u32 devmapc_mix(").count(), 1);
        let pair = table("(vlan.id, ip.proto)");
        assert!(
            pair.contains("key = devmapc_mix(((__u32)(bpf_ntohs(p.vlan->tci) & 0x0fff) << 8) | p.l4proto);"),
            "{pair}"
        );
        assert!(!table("eth.dst").contains("devmapc_mix"), "lowered keys go through a hash map");
        assert_eq!(unwrap_parens("(a) | (b)"), "(a) | (b)");
        assert_eq!(unwrap_parens("((a) | (b))"), "(a) | (b)");
    }

    /// The same spec with other routes, bindings, arguments, members and
    /// default route, on the same lines: the C is byte-identical.
    #[test]
    fn routes_devices_and_arguments_never_change_the_c() {
        let spec = |a: &str, b: &str, c: &str, args: (&str, &str), routes: &str| {
            format!(
                "table {{ key = vlan.id }}\n{PROGRAMS}device a {{ {a} }}\ndevice b {{ {b}, egress = tag({}) }}\ndevice c {{ {c}, egress = mac({}) }}\ngroup g {{ b, c }}\ningress {{ on = [a] }}\n{routes}\n",
                args.0, args.1
            )
        };
        let one = c(&spec(
            "ifname = \"a\"",
            "ifname = \"b\"",
            "ifindex = 3",
            ("5", "02:00:00:00:00:01"),
            "route 1 -> b\nroute 2 -> g",
        ));
        let two = c(&spec(
            "ifname = \"eth9\"",
            "ifindex = 7",
            "ifname = \"x\"",
            ("4000", "02:00:00:00:00:02"),
            "route 7 -> c\nroute default -> a",
        ));
        assert_eq!(one, two);
    }

    /// Moving declarations to other lines changes only the line numbers in
    /// comments, and not the code hash, so the runtime reloads nothing.
    #[test]
    fn moved_lines_change_only_comments() {
        let base = format!("table {{ key = vlan.id }}\n{PROGRAMS}device a {{ ifname = \"a\" }}\ndevice b {{ ifname = \"b\", egress = tag(1) }}\ndevice c {{ ifname = \"c\", egress = mac(02:00:00:00:00:01) }}\ngroup g {{ b, c }}\ningress {{ on = [a] }}\nroute 1 -> g\n");
        let moved = format!("route 2 -> b\n\n{base}");
        let ir = |src: &str| crate::lower::lower(&crate::check_source(src).model.unwrap(), "t.devmap", src);
        assert_eq!(ir(&base).code_hash(), ir(&moved).code_hash());
        let (one, two) = (c(&base), c(&moved));
        assert_eq!(one.lines().count(), two.lines().count());
        for (x, y) in one.lines().zip(two.lines()) {
            assert!(x == y || (x.contains("line ") && y.contains("line ")), "{x:?} vs {y:?}");
        }
    }

    /// After a push the parser skips the pushed tags (the limit of two is on
    /// the frame's own); only programs that push count them.
    #[test]
    fn only_programs_that_push_count_their_tags() {
        let text = c("table { key = vlan.id }\negress p(v: u16) { if ipv4.ttl > 9 { vlan.push(v) }, vlan.pop(), ipv4.ttl -= 1 }\negress q { vlan.pop(), ipv4.ttl -= 1 }\ndevice a { ifname = \"a\", egress = p(1) }\ndevice b { ifname = \"b\", egress = q }\ningress { on = [a] }\nroute 1 -> b\n");
        let body = |name: &str| {
            text.split(&format!("devmapc_body_{name}("))
                .nth(1)
                .unwrap()
                .split("\n}\n")
                .next()
                .unwrap()
                .to_string()
        };
        let (p, q) = (body("p"), body("q"));
        assert_eq!(p.matches("pushed++;").count(), 1, "{p}");
        assert!(p.contains("if (pushed)\n\t\t\tpushed--;"), "a pop takes one of ours first: {p}");
        assert_eq!(
            p.matches("devmapc_parse_pushed(data, data_end, &p, 1, 0, pushed);").count(),
            2,
            "after the push and the pop: {p}"
        );
        assert!(!q.contains("pushed"), "{q}");
        assert!(q.contains("devmapc_parse(data, data_end, &p, 1, 0);"), "{q}");
    }

    /// The body of egress program `name` in the C of `text`.
    fn body(text: &str, name: &str) -> String {
        text.split(&format!("devmapc_body_{name}("))
            .nth(1)
            .unwrap()
            .split("\n}\n")
            .next()
            .unwrap()
            .to_string()
    }

    /// A header tested once is not tested again until the frame moves; an
    /// `else` knows what a false `!has(...)` shows; `else if` chains.
    #[test]
    fn guards_are_tested_once_and_else_if_chains() {
        let text = c("table { key = vlan.id }\negress p(v: u16, w: u16) {\n    if has(vlan) {\n        vlan.id = v\n        vlan.pop()\n        vlan.id = w\n    }\n    if !has(vlan) { vlan.push(v) } else { vlan.id = w }\n    if vlan.id == v { vlan.id = w } else if vlan.id == w { vlan.id = v } else { drop }\n}\ndevice a { ifname = \"a\", egress = p(1, 2) }\ningress { on = [a] }\nroute 1 -> a\n");
        let p = body(&text, "p");
        // Under `if (p.has & DEVMAPC_HAS_VLAN)`, the first write is bare;
        // after the pop, the outer tag may be gone: the second is guarded again.
        assert!(p.contains("\tif (p.has & DEVMAPC_HAS_VLAN) {\n\t\tp.vlan->tci = bpf_htons((bpf_ntohs(p.vlan->tci) & 0xf000) | (args->p_v & 0x0fff));\n\t\tif (devmapc_vlan_pop(ctx) < 0)"), "{p}");
        assert!(p.contains("\t\tif (p.vlan)\n\t\t\tp.vlan->tci = bpf_htons((bpf_ntohs(p.vlan->tci) & 0xf000) | (args->p_w & 0x0fff));\n\t}"), "{p}");
        assert!(p.contains("} else {\n\t\tp.vlan->tci = bpf_htons((bpf_ntohs(p.vlan->tci) & 0xf000) | (args->p_w & 0x0fff));\n\t}"), "{p}");
        assert!(
            p.contains("\tif (p.vlan && (bpf_ntohs(p.vlan->tci) & 0x0fff) == args->p_v)\n\t\tp.vlan->tci = "),
            "{p}"
        );
        assert!(
            p.contains(
                "\n\telse if (p.vlan && (bpf_ntohs(p.vlan->tci) & 0x0fff) == args->p_w)\n\t\tp.vlan->tci = "
            ),
            "{p}"
        );
        assert!(p.contains("\n\telse\n\t\treturn XDP_DROP;"), "{p}");
        assert!(!p.contains("else {\n\t\tif"), "{p}");
    }

    /// The headers are found again after a push or pop only when a later
    /// statement reads one; then the pushed tags are counted.
    #[test]
    fn a_move_is_followed_by_a_reparse_only_when_something_reads_the_headers() {
        let text = c("table { key = vlan.id }\negress last { ipv4.ttl -= 1, vlan.pop() }\negress push_last(v: u16) { vlan.push(v) }\negress then_read(v: u16) { vlan.push(v), if has(ipv4) { drop } }\ndevice a { ifname = \"a\", egress = last }\ndevice b { ifname = \"b\", egress = push_last(1) }\ndevice c { ifname = \"c\", egress = then_read(1) }\ningress { on = [a] }\nroute 1 -> a\n");
        let last = body(&text, "last");
        assert!(
            last.contains(
                "\tif (p.vlan && devmapc_vlan_pop(ctx) < 0)\n\t\treturn XDP_DROP;\n\treturn XDP_PASS;"
            ),
            "{last}"
        );
        assert_eq!(last.matches("devmapc_parse(").count(), 1, "{last}");
        let push_last = body(&text, "push_last");
        assert!(
            !push_last.contains("pushed") && push_last.matches("devmapc_parse").count() == 1,
            "{push_last}"
        );
        let then_read = body(&text, "then_read");
        assert!(
            then_read.contains("\t__u32 pushed = 0;\n\tconst struct devmapc_args_then_read *args"),
            "declared with the locals: {then_read}"
        );
        assert!(then_read.contains("pushed++;\n\tdata = (void *)(long)ctx->data;\n\tdata_end = (void *)(long)ctx->data_end;\n\tdevmapc_parse_pushed(data, data_end, &p, 1, 0, pushed);\n\tif (p.has & DEVMAPC_HAS_IPV4)\n\t\treturn XDP_DROP;"), "{then_read}");
    }

    /// `has()` tests the parser's flags, never the headers' pointers (which
    /// clang would OR together); parentheses only where C needs them (clang
    /// warns on `a && b || c`); blank lines are blank.
    #[test]
    fn conditions_read_as_c_and_blank_lines_are_blank() {
        let text = c("table { key = vlan.id }\negress p(m: mac) {\n    if !has(ipv4) || ipv4.ttl > 3 && has(ipv6) { drop }\n    if !(has(ipv4) || has(ipv6)) { drop }\n    if has(ipv4) { eth.src = eth.dst }\n}\ndevice a { ifname = \"a\", egress = p(02:00:00:00:00:01) }\ningress { on = [a] }\nroute 1 -> a\n");
        let p = body(&text, "p");
        assert!(p.contains("\tif (!(p.has & DEVMAPC_HAS_IPV4) || (p.ip4 && p.ip4->ttl > 3 && (p.has & DEVMAPC_HAS_IPV6)))\n"), "{p}");
        assert!(p.contains("\tif (!((p.has & DEVMAPC_HAS_IPV4) || (p.has & DEVMAPC_HAS_IPV6)))\n"), "{p}");
        assert!(p.contains("\tif (p.has & DEVMAPC_HAS_IPV4) {\n"), "{p}");
        assert!(
            p.contains(
                "\t\tif (p.eth) {\n\t\t\t__u8 mac[ETH_ALEN];\n\n\t\t\tdevmapc_set_mac(mac, p.eth->h_dest);"
            ),
            "{p}"
        );
    }

    #[test]
    fn the_c_says_where_it_came_from_and_is_stable() {
        let src = "table { key = ipv4.dst }\ndevice a { ifname = \"a\" }\ningress { on = [a] }\nroute 10.0.0.1 -> a\n";
        let text = c(src);
        // The SPDX line first (kernel style), then where the C came from.
        assert!(text.starts_with("/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */\n/* Generated by devmapc from t.devmap — do not edit."));
        assert_eq!(text, c(src));
        // The ingress program parses IPv4 only: no IPv6 and no L4 for this key.
        assert!(text.contains("devmapc_parse(data, data_end, &p, 1, 0);"), "{text}");
    }
}
