//! Arbitrary bytes (as lossy UTF-8) through `check_source` and the
//! formatter: no panic, and every diagnostic's spans inside the input and on
//! char boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let checked = devmapc::check_source(&src);
    assert_spans(&src, &checked.diagnostics);
    assert!(checked.model.is_none() || checked.diagnostics.iter().all(|d| !d.is_error()), "a model despite errors");
    if let Err(errors) = devmapc::fmt::format_source(&src) {
        assert!(!errors.is_empty(), "a parse error without diagnostics");
        assert_spans(&src, &errors);
    }
});

fn assert_spans(src: &str, diagnostics: &[devmapc::Diagnostic]) {
    for d in diagnostics {
        for span in std::iter::once(d.primary.span).chain(d.secondary.iter().map(|l| l.span)) {
            assert!(span.start <= span.end && span.end <= src.len(), "span {span:?} outside the input ({} bytes): {d:?}", src.len());
            assert!(src.is_char_boundary(span.start) && src.is_char_boundary(span.end), "span {span:?} not on char boundaries: {d:?}");
        }
    }
}
