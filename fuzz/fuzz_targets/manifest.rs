//! Arbitrary bytes (as lossy UTF-8) through the manifest reader the
//! runtime uses: an error or a manifest whose indices, offsets and sizes
//! are in bounds, never a panic. A manifest that passes is put through
//! what the runtime does with one before touching the kernel: the status
//! text of its routes and the argument structs of its devices.
#![no_main]

use devmapc::ir::TargetRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(doc) = devmapc::manifest::parse(&text) else { return };
    let ir = &doc.ir;
    for route in &ir.data.routes {
        match route.target {
            TargetRef::Device(d) => assert!(d < ir.data.devices.len()),
            TargetRef::Group(g) => assert!(g < ir.code.groups.len()),
        }
    }
    for device in &ir.data.devices {
        if let Some(p) = device.program {
            let program = &ir.code.programs[p];
            for param in &program.params {
                assert!(param.offset as u64 + param.ty.size() as u64 <= program.args_size as u64);
            }
        }
    }
    let _ = devmapc::render::map_list(&ir.code);
    let _ = (ir.code_hash(), ir.data_hash());
});
