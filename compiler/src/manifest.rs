//! The build manifest read back (the format [`crate::builder::manifest`]
//! writes). The runtime trusts nothing in it: [`parse`] checks every index,
//! offset and size that later code uses, so that a damaged or hostile
//! manifest is an error here, never a panic or an allocation the size of
//! a number in the file. Nesting deeper than serde_json's recursion limit
//! (128) is an error too.

use crate::fields::{Field, Ty};
use crate::ir::{Ir, KeyPlan, TargetRef};
use crate::model::{Const, KeyValue, PrefixValue};
use serde::Deserialize;
use std::collections::HashSet;

/// The manifest version this devmapc reads and writes.
pub const VERSION: u32 = 1;
/// Bounds a manifest made by `devmapc build` stays far below.
const MAX_ITEMS: usize = 1 << 16;
const MAX_ARGS_SIZE: u32 = 4096;
const MAX_HASHED_KEY: u32 = 256;

/// A manifest, read in one pass.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub devmapc_manifest: u32,
    /// The object's file name, beside the manifest.
    pub object: String,
    pub code_hash: String,
    pub data_hash: String,
    /// [`crate::builder::object_digest`] of the object the manifest was
    /// built with; `None` in manifests of an older devmapc.
    #[serde(default)]
    pub object_sha256: Option<String>,
    /// [`crate::builder::code_binding`] of `object_sha256`, the code part
    /// of `ir` and `code_hash`; `None` in manifests of an older devmapc.
    #[serde(default)]
    pub code_sha256: Option<String>,
    pub ir: Ir,
}

/// Parses and checks a manifest.
pub fn parse(text: &str) -> Result<Manifest, String> {
    let doc: Manifest = serde_json::from_str(text).map_err(|e| {
        if text.contains("\"devmapc_manifest\"") {
            e.to_string()
        } else {
            format!("no `devmapc_manifest: {VERSION}`")
        }
    })?;
    if doc.devmapc_manifest != VERSION {
        return Err(format!("`devmapc_manifest: {}`, this devmapc reads {VERSION}", doc.devmapc_manifest));
    }
    for (field, digest) in [("object_sha256", &doc.object_sha256), ("code_sha256", &doc.code_sha256)] {
        if digest.as_ref().is_some_and(|d| d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(format!("`{field}` is not a SHA-256 in hex"));
        }
    }
    validate(&doc.ir)?;
    Ok(doc)
}

impl Manifest {
    /// Whether `code_sha256` is [`crate::builder::code_binding`] of the
    /// manifest's own `object_sha256`, code part and `code_hash`: `None`
    /// when either digest is absent (an older devmapc's manifest).
    pub fn code_is_bound(&self) -> Option<bool> {
        let (object, expected) = (self.object_sha256.as_deref()?, self.code_sha256.as_deref()?);
        let found = crate::builder::code_binding(object, &self.ir.code, &self.code_hash);
        Some(found.eq_ignore_ascii_case(expected))
    }
}

/// Checks that the plan's parts refer to each other within bounds: what
/// the runtime indexes, offsets and allocates from it.
pub fn validate(ir: &Ir) -> Result<(), String> {
    let (code, data) = (&ir.code, &ir.data);
    let many = |what: &str, n: usize| {
        if n > MAX_ITEMS {
            Err(format!("{n} {what}: at most {MAX_ITEMS}"))
        } else {
            Ok(())
        }
    };
    many("devices", data.devices.len())?;
    many("groups", code.groups.len())?;
    many("egress programs", code.programs.len())?;
    let target = |t: &TargetRef, what: &str| match *t {
        TargetRef::Device(d) if d >= data.devices.len() => {
            Err(format!("{what} targets device {d}, the plan has {}", data.devices.len()))
        }
        TargetRef::Group(g) if g >= code.groups.len() => {
            Err(format!("{what} targets group {g}, the plan has {}", code.groups.len()))
        }
        _ => Ok(()),
    };
    for (i, route) in data.routes.iter().enumerate() {
        target(&route.target, &format!("route {i}"))?;
    }
    if let Some(t) = &data.default_route {
        target(t, "the default route")?;
    }
    for d in &data.devices {
        if let Some(p) = d.program {
            let Some(program) = code.programs.get(p) else {
                return Err(format!(
                    "device `{}` runs egress program {p}, the plan has {}",
                    d.name,
                    code.programs.len()
                ));
            };
            if d.args.len() != program.params.len() {
                return Err(format!(
                    "device `{}` gives {} arguments to `{}`, which takes {}",
                    d.name,
                    d.args.len(),
                    program.name,
                    program.params.len()
                ));
            }
        }
        if let Some(g) = d.groups.iter().find(|g| **g >= code.groups.len()) {
            return Err(format!("device `{}` is in group {g}, the plan has {}", d.name, code.groups.len()));
        }
    }
    for p in &code.programs {
        if p.args_size > MAX_ARGS_SIZE {
            return Err(format!(
                "egress program `{}` has {} bytes of arguments: at most {MAX_ARGS_SIZE}",
                p.name, p.args_size
            ));
        }
        let fits = |offset: u32, size: u32| offset.checked_add(size).is_some_and(|end| end <= p.args_size);
        if let Some(param) = p.params.iter().find(|q| !fits(q.offset, q.ty.size())) {
            return Err(format!(
                "parameter `{}` of `{}` lies outside its {} bytes of arguments",
                param.name, p.name, p.args_size
            ));
        }
        if p.egress_mac_offset.is_some_and(|at| !fits(at, 6)) {
            return Err(format!("the egress MAC of `{}` lies outside its arguments", p.name));
        }
    }
    names(ir)?;
    routes(ir)?;
    match &code.key {
        KeyPlan::Direct { fields, .. } => {
            if fields.is_empty() || fields.len() > 32 {
                return Err(format!("a direct key of {} fields", fields.len()));
            }
            for f in fields {
                if f.bits == 0 || f.bits > 32 || f.shift.checked_add(f.bits).is_none_or(|end| end > 32) {
                    return Err(format!(
                        "a direct key field of {} bits at bit {}: outside 32 bits",
                        f.bits, f.shift
                    ));
                }
            }
        }
        KeyPlan::Hashed { fields, size } => {
            if *size == 0 || *size > MAX_HASHED_KEY || fields.is_empty() || fields.len() > 64 {
                return Err(format!("a hashed key of {size} bytes and {} fields", fields.len()));
            }
            if fields
                .iter()
                .any(|f| f.size == 0 || f.offset.checked_add(f.size).is_none_or(|end| end > *size))
            {
                return Err(format!("a hashed key field outside the key's {size} bytes"));
            }
        }
        KeyPlan::Lpm { address_bytes, .. } => {
            if ![4, 16].contains(address_bytes) {
                return Err(format!("an LPM key of {address_bytes} address bytes"));
            }
        }
    }
    Ok(())
}

/// Names as a spec could give them (the checker's rule), each declared
/// once, devices bound to distinct interfaces and in a group at most once:
/// a manifest that breaks one was not built from a spec.
fn names(ir: &Ir) -> Result<(), String> {
    let (code, data) = (&ir.code, &ir.data);
    let valid = |name: &str, what: &str| match crate::check::name_problem(name, what) {
        Some((message, _)) => Err(message),
        None => Ok(()),
    };
    // Devices and groups share one namespace, as in a spec.
    let mut targets = HashSet::new();
    for (name, what) in
        data.devices.iter().map(|d| (&d.name, "device")).chain(code.groups.iter().map(|g| (&g.name, "group")))
    {
        valid(name, what)?;
        if !targets.insert(name.as_str()) {
            return Err(format!("the name `{name}` is declared twice"));
        }
    }
    let mut programs = HashSet::new();
    for p in &code.programs {
        valid(&p.name, "egress program")?;
        if !programs.insert(p.name.as_str()) {
            return Err(format!("two egress programs are named `{}`", p.name));
        }
    }
    let mut bindings = HashSet::new();
    for d in &data.devices {
        if !bindings.insert(&d.binding) {
            return Err(format!("device `{}` is bound to {:?}, like another device", d.name, d.binding));
        }
        let mut groups = HashSet::new();
        if let Some(g) = d.groups.iter().find(|g| !groups.insert(**g)) {
            return Err(format!("device `{}` is in group {g} twice", d.name));
        }
    }
    Ok(())
}

/// Route keys a built map can hold, each once. Their text is the spec's own
/// (any length, a comment or a line break inside a key included): it is
/// only ever shown, and `status` escapes control characters.
fn routes(ir: &Ir) -> Result<(), String> {
    let mut keys = HashSet::new();
    for (i, route) in ir.data.routes.iter().enumerate() {
        let text = &route.text;
        key_fits(&ir.code.key, &route.key, ir.data.devices.len())
            .map_err(|why| format!("route {i} ({text}): {why}"))?;
        if !keys.insert(&route.key) {
            return Err(format!("route {i} ({text}): its key is routed twice"));
        }
    }
    Ok(())
}

/// Whether `key` has the plan's shape and each number fits its field.
fn key_fits(plan: &KeyPlan, key: &KeyValue, devices: usize) -> Result<(), String> {
    let parts: Vec<&KeyValue> = match key {
        KeyValue::Composite(parts) => parts.iter().collect(),
        single => vec![single],
    };
    // The part's kind is the field's, and a number fits its bits.
    let fits = |part: &KeyValue, bits: u32, field: Field| {
        let path = field.path();
        match (part, field.ty()) {
            (KeyValue::Const(Const::Uint(n)), Ty::Uint { .. }) if bits < 64 && n >> bits != 0 => {
                Err(format!("{n} does not fit the {bits} bits of `{path}`"))
            }
            (KeyValue::Device(d), Ty::Device) if *d >= devices => {
                Err(format!("`{path}` is device {d}, the plan has {devices}"))
            }
            (KeyValue::Const(Const::Uint(_)), Ty::Uint { .. })
            | (KeyValue::Device(_), Ty::Device)
            | (KeyValue::Const(Const::Mac(_)), Ty::Mac)
            | (KeyValue::Const(Const::Ipv4(_)), Ty::Ipv4)
            | (KeyValue::Const(Const::Ipv6(_)), Ty::Ipv6) => Ok(()),
            _ => Err(format!("the key's part for `{path}` is of another kind")),
        }
    };
    let wrong_shape = || Err("the key does not have the table's shape".to_string());
    match plan {
        KeyPlan::Direct { fields, .. } => {
            if fields.len() != parts.len() {
                return wrong_shape();
            }
            for (f, part) in fields.iter().zip(parts) {
                let bits = f.field.key_bits().map_or(f.bits, |b| b.min(f.bits));
                fits(part, bits, f.field)?;
            }
        }
        KeyPlan::Hashed { fields, .. } => {
            if fields.len() != parts.len() {
                return wrong_shape();
            }
            for (f, part) in fields.iter().zip(parts) {
                let bits = f.field.key_bits().map_or(f.size * 8, |b| b.min(f.size.saturating_mul(8)));
                fits(part, bits, f.field)?;
            }
        }
        KeyPlan::Lpm { .. } => match parts.as_slice() {
            [KeyValue::Prefix(PrefixValue::V4(_, len))] if *len > 32 => {
                return Err(format!("a /{len} IPv4 prefix"))
            }
            [KeyValue::Prefix(PrefixValue::V6(_, len))] if *len > 128 => {
                return Err(format!("a /{len} IPv6 prefix"));
            }
            [KeyValue::Prefix(_)] => {}
            _ => return wrong_shape(),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built() -> String {
        built_from(
            "table { key = ipv4.dst }\ndevice a { ifname = \"a\", egress = tag(7) }\ndevice b { ifname = \"b\" }\n\
             egress tag(v: u16) { vlan.push(v) }\ningress { on = [a] }\nroute 10.0.0.1 -> a\nroute 10.0.0.2 -> b\n",
        )
    }

    fn built_from(src: &str) -> String {
        let checked = crate::check_source(src);
        let model = checked.model.unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
        let ir = crate::lower::lower(&model, "t.devmap", src);
        crate::builder::manifest(&ir, "t", Some(&"0".repeat(64)))
    }

    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest, String> {
        let mut doc: serde_json::Value = serde_json::from_str(&built()).unwrap();
        edit(&mut doc);
        parse(&doc.to_string())
    }

    #[test]
    fn a_built_manifest_reads_back() {
        let doc = parse(&built()).unwrap();
        assert_eq!(doc.object, "t.bpf.o");
        assert_eq!(doc.ir.data.devices.len(), 2);
    }

    /// A change made to a manifest's JSON.
    type Edit = dyn FnOnce(&mut serde_json::Value);

    #[test]
    fn the_code_part_is_bound_to_the_object() {
        assert_eq!(parse(&built()).unwrap().code_is_bound(), Some(true));
        let edits: Vec<Box<Edit>> = vec![
            Box::new(|d| d["ir"]["code"]["key"]["mix"] = "none".into()),
            Box::new(|d| d["ir"]["code"]["on_miss"] = "drop".into()),
            Box::new(|d| d["code_hash"] = "0".into()),
            Box::new(|d| d["object_sha256"] = "1".repeat(64).into()),
        ];
        for edit in edits {
            assert_eq!(edited(edit).unwrap().code_is_bound(), Some(false));
        }
        // A data change leaves it bound; a manifest without it is unbound.
        let doc = edited(|d| d["ir"]["data"]["routes"] = serde_json::json!([])).unwrap();
        assert_eq!(doc.code_is_bound(), Some(true));
        let doc = edited(|d| drop(d.as_object_mut().unwrap().remove("code_sha256"))).unwrap();
        assert_eq!(doc.code_is_bound(), None);
    }

    #[test]
    fn hostile_manifests_are_errors() {
        let cases: Vec<(&str, Box<Edit>)> = vec![
            ("targets device", Box::new(|d| d["ir"]["data"]["routes"][0]["target"]["index"] = 99.into())),
            (
                "targets group",
                Box::new(|d| {
                    d["ir"]["data"]["routes"][0]["target"] = serde_json::json!({"kind": "group", "index": 0})
                }),
            ),
            ("egress program 5", Box::new(|d| d["ir"]["data"]["devices"][0]["program"] = 5.into())),
            ("arguments", Box::new(|d| d["ir"]["data"]["devices"][0]["args"] = serde_json::json!([]))),
            (
                "bytes of arguments",
                Box::new(|d| d["ir"]["code"]["programs"][0]["args_size"] = u32::MAX.into()),
            ),
            (
                "outside its",
                Box::new(|d| d["ir"]["code"]["programs"][0]["params"][0]["offset"] = u32::MAX.into()),
            ),
            ("outside 32 bits", Box::new(|d| d["ir"]["code"]["key"]["fields"][0]["shift"] = 40.into())),
            ("in group", Box::new(|d| d["ir"]["data"]["devices"][1]["groups"] = serde_json::json!([3]))),
            ("SHA-256", Box::new(|d| d["object_sha256"] = "zz".into())),
            ("`code_sha256` is not", Box::new(|d| d["code_sha256"] = "zz".into())),
            ("reads 1", Box::new(|d| d["devmapc_manifest"] = 2.into())),
            ("invalid type", Box::new(|d| d["ir"]["data"]["devices"] = serde_json::json!({"a": 1}))),
            (
                "invalid type: floating point",
                Box::new(|d| d["ir"]["code"]["max_entries"] = serde_json::json!(1e300)),
            ),
            ("invalid value", Box::new(|d| d["ir"]["code"]["max_entries"] = serde_json::json!(-1))),
            ("`a` is declared twice", Box::new(|d| d["ir"]["data"]["devices"][1]["name"] = "a".into())),
            (
                "like another device",
                Box::new(|d| {
                    d["ir"]["data"]["devices"][1]["binding"] =
                        d["ir"]["data"]["devices"][0]["binding"].clone()
                }),
            ),
            ("is not a name", Box::new(|d| d["ir"]["data"]["devices"][0]["name"] = "../../etc".into())),
            ("is not a name", Box::new(|d| d["ir"]["data"]["devices"][0]["name"] = "".into())),
            ("C keyword", Box::new(|d| d["ir"]["code"]["programs"][0]["name"] = "int".into())),
            ("reserved prefix", Box::new(|d| d["ir"]["data"]["devices"][1]["name"] = "devmapc_x".into())),
            (
                "routed twice",
                Box::new(|d| {
                    d["ir"]["data"]["routes"][1]["key"] = d["ir"]["data"]["routes"][0]["key"].clone()
                }),
            ),
            (
                "of another kind",
                Box::new(|d| d["ir"]["data"]["routes"][0]["key"] = serde_json::json!({"device": 0})),
            ),
            (
                "the table's shape",
                Box::new(|d| {
                    d["ir"]["data"]["routes"][0]["key"] =
                        serde_json::json!({"composite": [{"const": {"uint": 1}}, {"const": {"uint": 2}}]})
                }),
            ),
        ];
        for (expect, edit) in cases {
            let err = edited(edit).expect_err(expect);
            assert!(err.contains(expect), "{expect}: {err}");
        }
    }

    /// The new checks refuse nothing a spec builds: every example's
    /// manifest reads back.
    #[test]
    fn every_examples_manifest_reads_back() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "devmap") {
                let text = built_from(&std::fs::read_to_string(&path).unwrap());
                parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                read += 1;
            }
        }
        assert!(read >= 8, "{read} examples");
    }

    /// Keys out of their field's range, and group members listed twice:
    /// no spec builds them.
    #[test]
    fn keys_out_of_range_and_repeated_members_are_errors() {
        let text = built_from(
            "table { key = (vlan.id, l4.dport) }\ndevice a { ifname = \"a\" }\ndevice b { ifname = \"b\" }\n\
             group g { a, b }\ningress { on = [a] }\nroute (10, 80) -> b\nroute (11, 443) -> g\n",
        );
        parse(&text).unwrap();
        let key =
            |route: usize, part: usize| format!("/ir/data/routes/{route}/key/composite/{part}/const/uint");
        let cases: Vec<(&str, String, serde_json::Value)> = vec![
            ("4096 does not fit the 12 bits of `vlan.id`", key(0, 0), 4096.into()),
            ("does not fit the 12 bits", key(1, 0), (1u64 << 40).into()),
            ("65536 does not fit the 16 bits of `l4.dport`", key(0, 1), 65536.into()),
            ("in group 0 twice", "/ir/data/devices/0/groups".into(), serde_json::json!([0, 0])),
        ];
        for (expect, at, value) in cases {
            let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            *doc.pointer_mut(&at).unwrap_or_else(|| panic!("{at} in {text}")) = value;
            let err = parse(&doc.to_string()).expect_err(expect);
            assert!(err.contains(expect), "{expect}: {err}");
        }
    }

    /// Numbers of a built manifest replaced at random (indices, offsets,
    /// sizes, hashes, as digits): an error or an accepted manifest whose
    /// indices hold, never a panic.
    #[test]
    fn mutated_numbers_never_panic() {
        use proptest::prelude::*;
        let text = built();
        let digits: Vec<usize> =
            text.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(proptest::collection::vec((0..digits.len(), "[0-9]{1,12}|-1|1e99|null|\\[\\]"), 1..6)),
                |edits| {
                    let mut t = text.clone();
                    for (at, with) in edits.iter().rev() {
                        let i = digits[*at].min(t.len().saturating_sub(1));
                        if t.is_char_boundary(i) && t.is_char_boundary(i + 1) {
                            t.replace_range(i..i + 1, with);
                        }
                    }
                    if let Ok(doc) = parse(&t) {
                        for d in &doc.ir.data.devices {
                            if let Some(p) = d.program {
                                prop_assert!(p < doc.ir.code.programs.len());
                            }
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn deep_nesting_and_garbage_are_errors() {
        // Unknown fields are skipped without recursion; nesting where a
        // value is read stops at serde_json's recursion limit: an error,
        // never a stack overflow.
        let deep = |at: &str| {
            format!("{{\"devmapc_manifest\": 1, \"{at}\": {}1{}}}", "[".repeat(100_000), "]".repeat(100_000))
        };
        assert!(parse(&deep("x")).is_err());
        let nested = format!("{{\"devmapc_manifest\": 1, \"object\": \"o\", \"code_hash\": \"\", \"data_hash\": \"\", \"ir\": {}}}", deep("ir"));
        assert!(parse(&nested).is_err());
        let in_ir = built().replacen("\"routes\": [", &format!("\"routes\": [{}", "[".repeat(100_000)), 1);
        assert!(parse(&in_ir).is_err());
        assert!(parse("").is_err());
        assert!(parse("{\"devmapc_manifest\": 1}").is_err());
        assert_eq!(parse("[]").unwrap_err(), "no `devmapc_manifest: 1`");
    }
}
