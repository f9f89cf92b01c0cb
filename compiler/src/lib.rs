//! devmapc: a compiler for `.devmap` specs.
//!
//! The stages, each a module with one entry point:
//! [`parse()`] text → [`ast::Spec`]; [`check()`] AST → [`model::Model`] and
//! diagnostics; [`fmt::format`] AST + text → canonical text.
#![doc = include_str!("../../ARCHITECTURE.md")]
#![forbid(unsafe_code)]

pub mod ast;
pub mod builder;
pub mod check;
pub mod diagnostic;
pub mod fields;
pub mod fmt;
pub mod ir;
pub mod lower;
pub mod manifest;
pub mod model;
pub mod parse;
pub mod render;
pub mod scratch;
pub mod typed;

pub use builder::{BuildError, Builder, Emit};
pub use check::{check, Checked};
pub use diagnostic::{Code, Diagnostic, Severity};
pub use parse::parse;

/// A spec's bytes as text. A spec must be UTF-8: other bytes are an error
/// (E033) at the first byte that is not, and the text given back with it is
/// the bytes decoded lossily, for rendering. Everything before that byte is
/// unchanged, so the diagnostic's span is the `U+FFFD` that stands for it.
pub fn decode(bytes: &[u8]) -> Result<&str, (String, Box<Diagnostic>)> {
    let error = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(error) => error,
    };
    let at = error.valid_up_to();
    let text = String::from_utf8_lossy(bytes).into_owned();
    let bad: Vec<String> = bytes[at..]
        .iter()
        .take(error.error_len().unwrap_or(bytes.len() - at))
        .map(|b| format!("0x{b:02x}"))
        .collect();
    let diagnostic = Diagnostic::new(
        Code::NotUtf8,
        ast::Span::new(at, at + char::REPLACEMENT_CHARACTER.len_utf8()),
        "the spec is not UTF-8 text",
    )
    .label(format!("byte {} is not UTF-8", bad.join(" ")))
    .help("save the spec as UTF-8 (names are ASCII; strings and comments may hold any UTF-8 text)");
    Err((text, Box::new(diagnostic)))
}

/// [`decode`], then [`check_source`]: the text the diagnostics point into
/// and what the check found.
pub fn check_bytes(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, Checked) {
    match decode(bytes) {
        Ok(text) => (text.into(), check_source(text)),
        Err((text, diagnostic)) => (text.into(), Checked { model: None, diagnostics: vec![*diagnostic] }),
    }
}

/// Parses and checks a spec's text: every diagnostic of the file, and the
/// model when there is no error.
pub fn check_source(source: &str) -> Checked {
    match parse(source) {
        Ok(spec) => check(&spec),
        Err(diagnostics) => Checked { model: None, diagnostics },
    }
}
