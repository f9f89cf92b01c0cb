//! For every input that parses: the formatted text parses to an equal AST
//! (spans never take part in equality), and formatting it again changes
//! nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let Ok(spec) = devmapc::parse(&src) else { return };
    let formatted = devmapc::fmt::format(&src, &spec);
    let again = match devmapc::parse(&formatted) {
        Ok(again) => again,
        Err(errors) => panic!("the formatted text does not parse: {errors:?}\nformatted: {formatted:?}"),
    };
    assert_eq!(again, spec, "formatting changed the AST\nformatted: {formatted:?}");
    let twice = devmapc::fmt::format(&formatted, &again);
    assert_eq!(twice, formatted, "formatting is not idempotent");
});
