//! devmapc: a compiler for `.devmap` specs.
//!
//! The stages, each a module with one entry point:
//! [`parse()`] text → [`ast::Spec`]; [`check()`] AST → [`model::Model`] and
//! diagnostics; [`fmt::format`] AST + text → canonical text.
#![doc = include_str!("../../ARCHITECTURE.md")]

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

/// Parses and checks a spec's text: every diagnostic of the file, and the
/// model when there is no error.
pub fn check_source(source: &str) -> Checked {
    match parse(source) {
        Ok(spec) => check(&spec),
        Err(diagnostics) => Checked { model: None, diagnostics },
    }
}
