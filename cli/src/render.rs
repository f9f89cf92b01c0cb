//! Diagnostics on the terminal (miette) or as JSON lines.

use crate::MessageFormat;
use devmapc::diagnostic::LineIndex;
use devmapc::Diagnostic;
use miette::{MietteError, MietteSpanContents, SourceSpan, SpanContents};
use std::sync::Arc;
use std::io::IsTerminal;

/// Colour only on a terminal, and never when NO_COLOR is set to anything.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints a file's diagnostics: human ones on standard error, JSON ones
/// (one object per line) on standard output.
pub fn diagnostics(file: &str, source: &str, diagnostics: &[Diagnostic], format: MessageFormat) {
    let index = LineIndex::new(source);
    match format {
        MessageFormat::Json => {
            for d in diagnostics {
                crate::out(&d.to_json_indexed(file, source, &index).to_string());
            }
        }
        MessageFormat::Human => {
            let theme = if colour() { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
            let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
            let source = miette::NamedSource::new(file, Lines { text: Arc::new(source.to_string()), index: Arc::new(index) });
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

/// A spec's text for miette, which finds a span's lines by reading the
/// text from its start: for many diagnostics in a long file that is
/// quadratic. This hands it only the lines around the span, found in the
/// line index, and puts the offsets and line numbers back.
#[derive(Clone)]
struct Lines {
    text: Arc<String>,
    index: Arc<LineIndex>,
}

impl miette::SourceCode for Lines {
    fn read_span<'a>(&'a self, span: &SourceSpan, before: usize, after: usize) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let (start, end) = (span.offset(), span.offset() + span.len());
        if end > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        let first = self.index.line_of(start).saturating_sub(before);
        let last = self.index.line_of(end.saturating_sub(1).max(start)) + after + 1;
        let from = self.index.line_start(first).unwrap_or(0);
        let to = self.index.line_start(last + 1).unwrap_or(self.text.len());
        let inner = self.text[from..to].read_span(&SourceSpan::new((start - from).into(), span.len()), before, after)?;
        Ok(Box::new(MietteSpanContents::new(
            inner.data(),
            SourceSpan::new((inner.span().offset() + from).into(), inner.span().len()),
            inner.line() + first,
            inner.column(),
            inner.line_count() + first,
        )))
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
