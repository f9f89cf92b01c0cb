//! Diagnostics on the terminal (miette) or as JSON lines.

use crate::MessageFormat;
use devmapc::Diagnostic;
use std::io::IsTerminal;

/// Colour only on a terminal, and never when NO_COLOR is set to anything.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints a file's diagnostics: human ones on standard error, JSON ones
/// (one object per line) on standard output.
pub fn diagnostics(file: &str, source: &str, diagnostics: &[Diagnostic], format: MessageFormat) {
    match format {
        MessageFormat::Json => {
            for d in diagnostics {
                crate::out(&d.to_json(file, source).to_string());
            }
        }
        MessageFormat::Human => {
            let theme = if colour() { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
            let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
            let source = miette::NamedSource::new(file, source.to_string());
            for d in diagnostics {
                let report = miette::Report::new(d.clone()).with_source_code(source.clone());
                let mut out = String::new();
                match handler.render_report(&mut out, report.as_ref()) {
                    Ok(()) => crate::err(&out),
                    Err(_) => crate::err(&format!("{}: {}: {}", file, d.code, d.message)),
                }
            }
        }
    }
}

/// One closing line per file, like a compiler's.
pub fn summary(file: &str, errors: usize, warnings: usize, deny_warnings: bool) {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => crate::err(&format!("{file}: ok")),
        (0, w) if !deny_warnings => crate::err(&format!("{file}: ok, {}", plural(w, "warning"))),
        (e, w) => crate::err(&format!("{file}: failed, {}, {}", plural(e, "error"), plural(w, "warning"))),
    }
}
