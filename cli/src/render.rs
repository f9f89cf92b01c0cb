//! Diagnostics on the terminal (miette) or as JSON lines.

use crate::MessageFormat;
use devmapc::ast::Span;
use devmapc::diagnostic::{LineIndex, SHOWN};
use devmapc::Diagnostic;
use miette::{MietteError, MietteSpanContents, SourceSpan, SpanContents};
use std::io::IsTerminal;

/// Colour only on a terminal, and never when NO_COLOR is set to anything.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A line longer than this (in bytes) is shown clipped around its labels.
const LONG_LINE: usize = 200;

/// Characters kept on each side of a label on a clipped line.
const CONTEXT: usize = 100;

/// Characters of a message, label or help line shown.
const LONG_TEXT: usize = 400;

/// Lines between two labels' snippets that are still shown, as one snippet.
const NEAR: usize = 8;

/// Prints a file's diagnostics: human ones on standard error (the first
/// [`SHOWN`], then a count of the rest), JSON ones (one object per line,
/// all of them) on standard output.
pub fn diagnostics(file: &str, source: &str, diagnostics: &[Diagnostic], format: MessageFormat) {
    let index = LineIndex::new(source);
    match format {
        MessageFormat::Json => {
            for d in diagnostics {
                crate::out(&d.to_json_indexed(file, source, &index).to_string());
            }
        }
        MessageFormat::Human => {
            let theme = if colour() {
                miette::GraphicalTheme::unicode()
            } else {
                miette::GraphicalTheme::unicode_nocolor()
            };
            let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
            let (shown, hidden) = diagnostics.split_at(diagnostics.len().min(SHOWN));
            for d in shown {
                let (excerpt, moved) = Excerpt::new(source, &index, d);
                let report =
                    miette::Report::new(moved).with_source_code(miette::NamedSource::new(file, excerpt));
                let mut out = String::new();
                match handler.render_report(&mut out, report.as_ref()) {
                    Ok(()) => crate::err(&out),
                    Err(_) => crate::err(&format!("{}: {}: {}", file, d.code, d.message)),
                }
            }
            if !hidden.is_empty() {
                crate::err(&format!(
                    "... and {} (devmapc check --message-format json lists them all)\n",
                    more(hidden)
                ));
            }
        }
    }
}

/// "3 more errors", "1 more warning", "3 more errors and 1 more warning".
fn more(hidden: &[Diagnostic]) -> String {
    let errors = hidden.iter().filter(|d| d.is_error()).count();
    let warnings = hidden.len() - errors;
    let plural = |n: usize, what: &str| format!("{n} more {what}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (e, 0) => plural(e, "error"),
        (0, w) => plural(w, "warning"),
        (e, w) => format!("{} and {}", plural(e, "error"), plural(w, "warning")),
    }
}

/// The lines one diagnostic shows, for miette, which reads a span's lines
/// from the start of the text it is given and prints them whole: for many
/// diagnostics in a long file, or on a very long line, that is quadratic.
/// An excerpt holds only the lines around the diagnostic's labels (a line
/// longer than [`LONG_LINE`] cut down to [`CONTEXT`] characters on each
/// side of each label end, an ellipsis for each part left out), so one
/// diagnostic costs its labels and their context, not its lines. The diagnostic's spans are moved into the excerpt; line
/// numbers and columns are given back as the whole text has them.
pub(crate) struct Excerpt {
    text: String,
    /// Runs of consecutive lines of the source, in order.
    runs: Vec<Run>,
    /// Every line kept, in order.
    kept: Vec<Kept>,
}

struct Run {
    /// Where the run starts and ends in the excerpt.
    at: usize,
    end: usize,
    /// Its first line in the source (0-based).
    first_line: usize,
}

struct Kept {
    /// Where the line starts in the excerpt.
    at: usize,
    /// The line (0-based) and where it starts in the source.
    line: usize,
    line_start: usize,
    /// The parts of the line kept: where each starts in the source and in
    /// the excerpt (an ellipsis stands for each part left out).
    parts: Vec<(usize, usize)>,
}

impl Excerpt {
    fn new(source: &str, index: &LineIndex, d: &Diagnostic) -> (Excerpt, Diagnostic) {
        let spans: Vec<Span> =
            std::iter::once(d.primary.span).chain(d.secondary.iter().map(|l| l.span)).collect();
        let (excerpt, spans) = Excerpt::around(source, index, &spans);
        let mut moved = d.clone();
        moved.message = shorten(&d.message);
        moved.help = d.help.as_deref().map(shorten);
        moved.primary.span = spans[0];
        moved.primary.text = shorten(&d.primary.text);
        for (label, &span) in moved.secondary.iter_mut().zip(&spans[1..]) {
            label.span = span;
            label.text = shorten(&label.text);
        }
        (excerpt, moved)
    }

    /// The excerpt around `spans` (at least one), and the spans moved into it.
    pub(crate) fn around(source: &str, index: &LineIndex, spans: &[Span]) -> (Excerpt, Vec<Span>) {
        let len = source.len();
        let clamp = |s: &Span| Span::new(s.start.min(len), s.end.min(len).max(s.start.min(len)));
        let spans: Vec<Span> = spans.iter().map(clamp).collect();
        let last_line = index.line_of(len);
        // The lines each label needs, with one line of context (miette's).
        let mut ranges: Vec<(usize, usize)> = spans
            .iter()
            .map(|s| (index.line_of(s.start).saturating_sub(1), (index.line_of(s.end) + 1).min(last_line)))
            .collect();
        ranges.sort();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (first, last) in ranges {
            match merged.last_mut() {
                // Labels a few lines apart read best with the lines
                // between (miette then shows them in one snippet).
                Some(run) if first <= run.1 + 1 + NEAR => run.1 = run.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        let mut points: Vec<(usize, usize)> = spans
            .iter()
            .flat_map(|s| [(index.line_of(s.start), s.start), (index.line_of(s.end), s.end)])
            .collect();
        points.sort();
        let mut excerpt = Excerpt { text: String::new(), runs: Vec::new(), kept: Vec::new() };
        for (first, last) in merged {
            let at = excerpt.text.len();
            // A line without a label is shown around the column of the
            // run's first label, so that the lines shown line up.
            let column = points
                .iter()
                .find(|p| (first..=last).contains(&p.0))
                .map_or(0, |p| p.1 - index.line_start(p.0).unwrap_or(0));
            for line in first..=last {
                let on_line: Vec<usize> = points.iter().filter(|p| p.0 == line).map(|p| p.1).collect();
                excerpt.keep(source, index, line, &on_line, column);
            }
            excerpt.runs.push(Run { at, end: excerpt.text.len(), first_line: first });
        }
        let moved = spans.iter().map(|&s| excerpt.map(index, s)).collect();
        (excerpt, moved)
    }

    /// Adds a line of the source: whole if it is short, else the parts
    /// around `points` (the label ends on it, sorted), or around `column`
    /// (in bytes) when it has none.
    fn keep(&mut self, source: &str, index: &LineIndex, line: usize, points: &[usize], column: usize) {
        let line_start = index.line_start(line).unwrap_or(source.len());
        let full_end = index.line_start(line + 1).unwrap_or(source.len());
        let mut content_end = full_end;
        if content_end > line_start && source[..content_end].ends_with('\n') {
            content_end -= 1;
            if content_end > line_start && source[..content_end].ends_with('\r') {
                content_end -= 1;
            }
        }
        let back = |p: usize| {
            source[line_start..p].char_indices().rev().take(CONTEXT).last().map_or(p, |(i, _)| line_start + i)
        };
        let ahead = |p: usize, n: usize| {
            if p >= content_end {
                return full_end;
            }
            source[p..content_end].char_indices().nth(n).map_or(content_end, |(i, _)| p + i)
        };
        let mut windows: Vec<(usize, usize)> = Vec::new();
        if content_end - line_start <= LONG_LINE {
            windows.push((line_start, full_end));
        } else if points.is_empty() {
            // From where a label at `column` is shown from (on ASCII text).
            let mut from = (line_start + column.saturating_sub(CONTEXT)).min(content_end);
            while !source.is_char_boundary(from) {
                from -= 1;
            }
            windows.push((from, ahead(from, 2 * CONTEXT)));
        } else {
            for &p in points {
                let (from, to) = (back(p), ahead(p, CONTEXT));
                match windows.last_mut() {
                    Some(last) if from <= last.1 => last.1 = last.1.max(to),
                    _ => windows.push((from, to)),
                }
            }
        }
        let at = self.text.len();
        let mut parts = Vec::new();
        let mut done = line_start;
        for (from, to) in windows {
            if from > done {
                self.text.push('…');
            }
            parts.push((from, self.text.len()));
            self.text.push_str(&source[from..to]);
            done = to;
        }
        if done <= content_end {
            if done < content_end {
                self.text.push('…');
            }
            self.text.push_str(&source[content_end..full_end]);
        }
        // A byte order mark is no column (see `LineIndex::line_col`).
        let line_start = if line == 0 && source.starts_with('\u{feff}') { 3 } else { line_start };
        self.kept.push(Kept { at, line, line_start, parts });
    }

    /// A span of the source as a span of the excerpt.
    fn map(&self, index: &LineIndex, span: Span) -> Span {
        let place = |offset: usize| {
            let line = index.line_of(offset);
            let Some(kept) = self.kept.get(self.kept.partition_point(|k| k.line < line)) else {
                return self.text.len();
            };
            let part = kept.parts[kept.parts.partition_point(|p| p.0 <= offset).saturating_sub(1)];
            part.1 + offset.saturating_sub(part.0)
        };
        Span::new(place(span.start), place(span.end))
    }
}

/// A message, label or help line cut to [`LONG_TEXT`] characters: they
/// may quote the spec (a name, a string), which can be as long as a line.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(LONG_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

impl miette::SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let (start, end) = (span.offset(), span.offset() + span.len());
        let run = self.runs.iter().find(|r| r.at <= start && end <= r.end).ok_or(MietteError::OutOfBounds)?;
        let inner = self.text[run.at..run.end].read_span(
            &SourceSpan::new((start - run.at).into(), span.len()),
            before,
            after,
        )?;
        // miette's column: bytes from the line's start, for a span read
        // without context (the one it prints in the header).
        let column = if before == 0 {
            let kept = &self.kept[self.kept.partition_point(|k| k.at <= start).saturating_sub(1)];
            let part = kept.parts[kept.parts.partition_point(|p| p.1 <= start).saturating_sub(1)];
            (part.0 + start.saturating_sub(part.1)).saturating_sub(kept.line_start)
        } else {
            0
        };
        Ok(Box::new(MietteSpanContents::new(
            inner.data(),
            SourceSpan::new((inner.span().offset() + run.at).into(), inner.span().len()),
            inner.line() + run.first_line,
            column,
            inner.line_count() + run.first_line,
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
