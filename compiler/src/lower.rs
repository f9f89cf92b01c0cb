//! [`Model`] → [`Ir`]: decides the data-path plan.
//!
//! A key of at most 32 bits is the DEVMAP_HASH key itself; a wider or
//! composite key goes through a hash to a slot, `lpm(...)` through an LPM
//! trie to a slot (docs/kernel.md: the DEVMAP_HASH key is exactly 4 bytes).
//! Everything here is a pure function of the model: no I/O, no kernel.

use crate::diagnostic::LineIndex;
use crate::fields::Field;
use crate::ir::*;
use crate::model::{Model, Target};

/// Lowers a checked model. `spec` names the spec in generated output (a file
/// name, not a path); `source` is its text, for line numbers.
pub fn lower(model: &Model, spec: &str, source: &str) -> Ir {
    let lines = LineIndex::new(source);
    let line = |offset: usize| lines.line_col(source, offset).0 as u32;

    let programs = model
        .programs
        .iter()
        .map(|p| {
            let uses_egress_mac = p.body.iter().any(reads_egress_mac);
            let mut offset: u32 = 0;
            let mut align_max: u32 = 1;
            let params = p
                .params
                .iter()
                .map(|param| {
                    let ty = ParamType::from_ty(param.ty);
                    offset = offset.next_multiple_of(ty.align());
                    align_max = align_max.max(ty.align());
                    let plan = ParamPlan { name: param.name.clone(), ty, offset };
                    offset += ty.size();
                    plan
                })
                .collect();
            let egress_mac_offset = uses_egress_mac.then_some(offset);
            if uses_egress_mac {
                offset += 6;
            }
            ProgramPlan {
                name: p.name.clone(),
                section_program: format!("devmapc_egress_{}", p.name),
                twin_program: format!("devmapc_twin_{}", p.name),
                args_map: format!("devmapc_args_{}", p.name),
                params,
                uses_egress_mac,
                egress_mac_offset,
                // An empty struct is not valid C: keep one byte.
                args_size: offset.max(1).next_multiple_of(align_max),
                body: p.body.clone(),
                line: line(p.span.start),
            }
        })
        .collect();

    let groups = model
        .groups
        .iter()
        .map(|g| GroupPlan {
            name: g.name.clone(),
            line: line(g.span.start),
            map: format!("devmapc_group_{}", g.name),
        })
        .collect();

    let code = CodePlan {
        key: key_plan(&model.table.key),
        max_entries: model.table.max_entries,
        on_miss: model.table.on_miss,
        numa_node: model.table.numa_node,
        access: model.table.access,
        counters: model.table.counters,
        groups,
        programs,
    };

    let target = |t: Target| match t {
        Target::Device(d) => TargetRef::Device(d),
        Target::Group(g) => TargetRef::Group(g),
    };
    let devices = model
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| DeviceData {
            name: d.name.clone(),
            binding: d.binding.clone(),
            program: d.egress.as_ref().map(|e| e.program),
            args: d.egress.as_ref().map(|e| e.args.clone()).unwrap_or_default(),
            ingress: model.ingress.on.contains(&i),
            groups: model
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.members.contains(&i))
                .map(|(gi, _)| gi)
                .collect(),
            line: line(d.span.start),
        })
        .collect();
    let routes = model
        .routes
        .iter()
        .map(|r| RouteData {
            key: r.key.clone(),
            text: source
                .get(r.span.start..r.span.end)
                .and_then(|s| s.strip_prefix("route"))
                .and_then(|s| s.split("->").next())
                .unwrap_or("")
                .trim()
                .to_string(),
            target: target(r.target),
            line: line(r.span.start),
        })
        .collect();
    let data = DataPlan {
        xdp_mode: model.ingress.mode,
        devices,
        routes,
        default_route: model.default_route.map(target),
    };

    Ir { spec: spec.to_string(), code, data }
}

/// Bytes a field takes in a hashed key.
fn hashed_size(field: Field) -> u32 {
    match field.key_bits().unwrap_or(0) {
        12 => 2,
        bits => bits / 8,
    }
}

fn key_plan(key: &crate::model::Key) -> KeyPlan {
    use crate::model::Key;
    match key {
        Key::Lpm(field) => KeyPlan::Lpm { field: *field, address_bytes: field.key_bits().unwrap_or(32) / 8 },
        _ if key.bits() <= 32 => {
            let mut shift = key.bits();
            let fields = key
                .fields()
                .into_iter()
                .map(|field| {
                    let bits = field.key_bits().unwrap_or(0);
                    shift -= bits;
                    DirectField { field, shift, bits }
                })
                .collect();
            // Every direct key is mixed, whatever its width: the table, not
            // the field, decides whether the low bits vary (VLANs 0, 64,
            // 128... share a bucket of a 64-entry map as surely as a /16).
            KeyPlan::Direct { fields, mix: KeyMix::Fmix32 }
        }
        _ => {
            let mut offset: u32 = 0;
            let fields = key
                .fields()
                .into_iter()
                .map(|field| {
                    let size = hashed_size(field);
                    let f = HashedField { field, offset, size };
                    offset += size;
                    f
                })
                .collect();
            KeyPlan::Hashed { fields, size: offset }
        }
    }
}

fn reads_egress_mac(stmt: &crate::model::Stmt) -> bool {
    use crate::model::{Cond, Operand, Stmt};
    fn operand(o: &Operand) -> bool {
        matches!(o, Operand::Field(Field::EgressMac))
    }
    fn cond(c: &Cond) -> bool {
        match c {
            Cond::Or(cs) | Cond::And(cs) => cs.iter().any(cond),
            Cond::Not(c) => cond(c),
            Cond::Has(_) => false,
            Cond::Compare { left, right, .. } => operand(left) || operand(right),
        }
    }
    match stmt {
        Stmt::Assign { value, .. } | Stmt::VlanPush(value) => operand(value),
        Stmt::If { cond: c, then, otherwise } => {
            cond(c) || then.iter().chain(otherwise).any(reads_egress_mac)
        }
        Stmt::Decrement { .. } | Stmt::VlanPop | Stmt::Drop | Stmt::Pass => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Const, KeyValue};

    fn ir(src: &str) -> Ir {
        let checked = crate::check_source(src);
        let model = checked.model.unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
        lower(&model, "t.devmap", src)
    }

    const BASE: &str = "device a { ifname = \"a\" }\ndevice b { ifname = \"b\" }\ningress { on = [a] }\n";

    #[test]
    fn narrow_composites_stay_direct_and_pack_first_field_high() {
        let ir = ir(&format!("table {{ key = (vlan.id, ip.proto) }}\n{BASE}route (100, 6) -> b\n"));
        let KeyPlan::Direct { fields, mix } = &ir.code.key else { panic!("{:?}", ir.code.key) };
        assert_eq!((fields[0].shift, fields[1].shift, *mix), (8, 0, KeyMix::Fmix32));
        let bytes = encode_key(&ir.code.key, &ir.data.routes[0].key, &|_| None).unwrap();
        assert_eq!(bytes, fmix32((100u32 << 8) | 6).to_ne_bytes());
        assert_eq!(ir.code.key.packed_of_stored(&bytes), Some((100u32 << 8) | 6));
    }

    #[test]
    fn wide_keys_are_hashed_in_network_order() {
        let ir =
            ir(&format!("table {{ key = (vlan.id, eth.dst) }}\n{BASE}route (100, 02:00:00:00:00:01) -> b\n"));
        assert!(matches!(ir.code.key, KeyPlan::Hashed { size: 8, .. }));
        let bytes = encode_key(&ir.code.key, &ir.data.routes[0].key, &|_| None).unwrap();
        assert_eq!(bytes, [0, 100, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn ipv4_direct_keys_mix_their_wire_order_and_ports_resolve_at_load() {
        let v4 = ir(&format!("table {{ key = ipv4.dst }}\n{BASE}route 10.0.0.1 -> b\n"));
        let wire = u32::from_ne_bytes([10, 0, 0, 1]);
        assert_eq!(
            encode_key(&v4.code.key, &v4.data.routes[0].key, &|_| None).unwrap(),
            fmix32(wire).to_ne_bytes()
        );
        let port = ir(&format!("table {{ key = ingress.port }}\n{BASE}route a -> b\n"));
        assert_eq!(port.data.routes[0].key, KeyValue::Device(0));
        assert_eq!(
            encode_key(&port.code.key, &port.data.routes[0].key, &|_| None),
            Err(EncodeError::UnresolvedDevice(0))
        );
        assert_eq!(
            encode_key(&port.code.key, &port.data.routes[0].key, &|_| Some(7)).unwrap(),
            fmix32(7).to_ne_bytes()
        );
    }

    #[test]
    fn lpm_keys_lead_with_the_prefix_length() {
        let ir = ir(&format!(
            "table {{ key = lpm(ipv4.dst) }}\n{BASE}route 10.0.0.0/8 -> b\nroute 10.1.2.3 -> a\n"
        ));
        let bytes = encode_key(&ir.code.key, &ir.data.routes[1].key, &|_| None).unwrap();
        assert_eq!(bytes, [32u32.to_ne_bytes().as_slice(), &[10, 1, 2, 3]].concat());
        assert_eq!(ir.data.routes[0].text, "10.0.0.0/8");
    }

    #[test]
    fn data_changes_leave_the_code_hash_alone() {
        let prog = "egress tag(v: u16) { vlan.id = v }\ndevice c { ifname = \"c\", egress = tag(5) }\n";
        let one = ir(&format!("table {{ key = vlan.id }}\n{BASE}{prog}route 1 -> b\nroute 2 -> c\n"));
        let two = ir(&format!(
            "table {{ key = vlan.id }}\n{BASE}{}route 1 -> a\nroute 3 -> c\n",
            prog.replace("tag(5)", "tag(6)")
        ));
        assert_eq!(one.code_hash(), two.code_hash());
        assert_ne!(one.data_hash(), two.data_hash());
        assert_eq!(two.data.devices[2].args, vec![Const::Uint(6)]);
        let three = ir(&format!(
            "table {{ key = vlan.id, counters = off }}\n{BASE}{prog}route 1 -> b\nroute 2 -> c\n"
        ));
        assert_ne!(one.code_hash(), three.code_hash());
    }
}
