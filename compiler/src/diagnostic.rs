//! Diagnostics: errors and warnings as data, rendered only at the edge.
//!
//! Every diagnostic has a stable [`Code`], a message, a primary span in the
//! spec (labelled), optional secondary spans ("first declared here"), and a
//! help line. The library never prints; the CLI renders them with miette or
//! as JSON, and build.rs users get them through `Builder`.

use crate::ast::Span;
use std::fmt;

/// Stable diagnostic codes. Never renumber: users grep for them, and
/// docs/diagnostics.md explains each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The text does not follow the grammar.
    Syntax,
    /// A literal that is malformed or does not fit its kind (an octet above
    /// 255, an invalid IPv6 address, an integer above 2^64).
    BadLiteral,
    /// A name that is too long, a C keyword, a reserved word, or starts with
    /// `devmapc_` or `__`.
    BadName,
    /// Two declarations with the same name.
    DuplicateName,
    /// A device or group that is not declared.
    UnknownDevice,
    /// An egress program that is not declared.
    UnknownProgram,
    /// No `table`, or more than one.
    TableCount,
    /// A setting that this block does not have.
    UnknownSetting,
    /// The same setting twice in one block.
    DuplicateSetting,
    /// A required setting is missing.
    MissingSetting,
    /// A setting given the wrong kind of value.
    BadSettingValue,
    /// A number outside the range its place allows.
    OutOfRange,
    /// A key expression the table cannot use.
    BadKey,
    /// A route key that does not match `table.key`.
    RouteKeyType,
    /// A VLAN id above 4095.
    VlanIdRange,
    /// Two routes with the same key.
    DuplicateRoute,
    /// More routes than `max_entries`.
    TooManyRoutes,
    /// An `ifname` that Linux cannot have.
    BadIfname,
    /// Two devices bound to the same interface.
    DuplicateInterface,
    /// A device with both or neither of `ifname` and `ifindex`.
    DeviceBinding,
    /// Wrong number of arguments for an egress program.
    ArgCount,
    /// An argument of the wrong type for its parameter.
    ArgType,
    /// A group member that is a group, is listed twice, or an empty group.
    BadGroup,
    /// No `ingress` block, more than one, or one that attaches nowhere.
    BadIngress,
    /// A statement on a field that does not exist or cannot be written.
    BadStatement,
    /// A condition that cannot be evaluated.
    BadCondition,
    /// A value whose type does not fit the field or parameter.
    TypeMismatch,
    /// A parameter with an unknown type.
    BadParam,
    /// A prefix longer than its address, or with host bits set.
    BadPrefix,
    /// A test that cannot run: no `send`, no `expect`, a duplicate name.
    BadTest,
    /// A packet layer or field that does not exist, or is misplaced.
    BadPacket,
    /// Brackets or `else if` branches nested deeper than the language
    /// allows.
    TooDeep,
    /// Text that is not UTF-8.
    NotUtf8,
    /// More devices than a deployment has slots for.
    TooManyDevices,
    /// An egress program with more statements and tests than one BPF
    /// function can hold.
    ProgramTooLarge,

    /// A device that no route reaches and that receives no traffic.
    UnreachedDevice,
    /// An egress program that no device uses.
    UnusedProgram,
    /// A group that no route targets.
    UnusedGroup,
    /// A parameter the program never reads.
    UnusedParam,
    /// `on_miss` set next to `route default`, which replaces it.
    OnMissOverridden,
    /// A test sends on a device that has no ingress program.
    SendWithoutIngress,
    /// A route on `ingress.port` for a device the ingress program is not
    /// attached to: no packet can ever take it.
    DeadRoute,
}

impl Code {
    /// Every code, in order, for documentation and tests.
    pub const ALL: &'static [Code] = &[
        Code::Syntax,
        Code::BadLiteral,
        Code::BadName,
        Code::DuplicateName,
        Code::UnknownDevice,
        Code::UnknownProgram,
        Code::TableCount,
        Code::UnknownSetting,
        Code::DuplicateSetting,
        Code::MissingSetting,
        Code::BadSettingValue,
        Code::OutOfRange,
        Code::BadKey,
        Code::RouteKeyType,
        Code::VlanIdRange,
        Code::DuplicateRoute,
        Code::TooManyRoutes,
        Code::BadIfname,
        Code::DuplicateInterface,
        Code::DeviceBinding,
        Code::ArgCount,
        Code::ArgType,
        Code::BadGroup,
        Code::BadIngress,
        Code::BadStatement,
        Code::BadCondition,
        Code::TypeMismatch,
        Code::BadParam,
        Code::BadPrefix,
        Code::BadTest,
        Code::BadPacket,
        Code::TooDeep,
        Code::NotUtf8,
        Code::TooManyDevices,
        Code::ProgramTooLarge,
        Code::UnreachedDevice,
        Code::UnusedProgram,
        Code::UnusedGroup,
        Code::UnusedParam,
        Code::OnMissOverridden,
        Code::SendWithoutIngress,
        Code::DeadRoute,
    ];

    /// `devmap::E001`, `devmap::W001`, ...
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Syntax => "devmap::E001",
            BadLiteral => "devmap::E002",
            BadName => "devmap::E003",
            DuplicateName => "devmap::E004",
            UnknownDevice => "devmap::E005",
            UnknownProgram => "devmap::E006",
            TableCount => "devmap::E007",
            UnknownSetting => "devmap::E008",
            DuplicateSetting => "devmap::E009",
            MissingSetting => "devmap::E010",
            BadSettingValue => "devmap::E011",
            OutOfRange => "devmap::E012",
            BadKey => "devmap::E013",
            RouteKeyType => "devmap::E014",
            VlanIdRange => "devmap::E015",
            DuplicateRoute => "devmap::E016",
            TooManyRoutes => "devmap::E017",
            BadIfname => "devmap::E018",
            DuplicateInterface => "devmap::E019",
            DeviceBinding => "devmap::E020",
            ArgCount => "devmap::E021",
            ArgType => "devmap::E022",
            BadGroup => "devmap::E023",
            BadIngress => "devmap::E024",
            BadStatement => "devmap::E025",
            BadCondition => "devmap::E026",
            TypeMismatch => "devmap::E027",
            BadParam => "devmap::E028",
            BadPrefix => "devmap::E029",
            BadTest => "devmap::E030",
            BadPacket => "devmap::E031",
            TooDeep => "devmap::E032",
            NotUtf8 => "devmap::E033",
            TooManyDevices => "devmap::E034",
            ProgramTooLarge => "devmap::E035",
            UnreachedDevice => "devmap::W001",
            UnusedProgram => "devmap::W002",
            UnusedGroup => "devmap::W003",
            UnusedParam => "devmap::W004",
            OnMissOverridden => "devmap::W005",
            SendWithoutIngress => "devmap::W006",
            DeadRoute => "devmap::W007",
        }
    }

    pub fn severity(self) -> Severity {
        if self.as_str().starts_with("devmap::W") {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A span with the text that labels it.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One error or warning about a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// The offending text; always inside the source.
    pub primary: Label,
    /// Other places that explain the error ("first declared here").
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: Label { span, text: String::new() },
            secondary: Vec::new(),
            help: None,
        }
    }

    /// The text under the primary span's underline.
    pub fn label(mut self, text: impl Into<String>) -> Diagnostic {
        self.primary.text = text.into();
        self
    }

    /// Points at another place that explains this one.
    pub fn also(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label { span, text: text.into() });
        self
    }

    pub fn help(mut self, text: impl Into<String>) -> Diagnostic {
        self.help = Some(text.into());
        self
    }

    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    /// The diagnostic as one JSON object, the fields cargo users expect:
    /// `file`, `line`, `column`, `end_line`, `end_column` (1-based, columns
    /// in characters), `code`, `severity`, `message`, `help`, and `labels`.
    pub fn to_json(&self, file: &str, source: &str) -> serde_json::Value {
        self.to_json_indexed(file, source, &LineIndex::new(source))
    }

    /// [`Diagnostic::to_json`] with the source's line index made once, for
    /// the many diagnostics of one file (each index costs a pass over it).
    pub fn to_json_indexed(&self, file: &str, source: &str, index: &LineIndex) -> serde_json::Value {
        let (line, column) = index.line_col(source, self.primary.span.start);
        let (end_line, end_column) = index.line_col(source, self.primary.span.end);
        let label = |l: &Label| {
            let (line, column) = index.line_col(source, l.span.start);
            serde_json::json!({ "line": line, "column": column, "text": l.text })
        };
        serde_json::json!({
            "file": file,
            "line": line,
            "column": column,
            "end_line": end_line,
            "end_column": end_column,
            "code": self.code.as_str(),
            "severity": self.severity().as_str(),
            "message": self.message,
            "label": self.primary.text,
            "help": self.help,
            "related": self.secondary.iter().map(label).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity() {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let label = |l: &Label, primary: bool| {
            let text = (!l.text.is_empty()).then(|| l.text.clone());
            if primary {
                miette::LabeledSpan::new_primary_with_span(text, l.span)
            } else {
                miette::LabeledSpan::new_with_span(text, l.span)
            }
        };
        let primary = std::iter::once(label(&self.primary, true));
        Some(Box::new(primary.chain(self.secondary.iter().map(move |l| label(l, false)))))
    }
}

/// Byte offset → 1-based line and column (in characters).
pub struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(source: &str) -> LineIndex {
        let newlines = source.match_indices('\n').map(|(i, _)| i + 1);
        LineIndex { line_starts: std::iter::once(0).chain(newlines).collect() }
    }

    /// The 0-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset) - 1
    }

    /// Where a 0-based line starts; `None` past the last line.
    pub fn line_start(&self, line: usize) -> Option<usize> {
        self.line_starts.get(line).copied()
    }

    pub fn line_col(&self, source: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(source.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let mut start = self.line_starts[line];
        // A byte order mark is no column: editors do not show it.
        if line == 0 && source.starts_with('\u{feff}') && offset >= 3 {
            start = 3;
        }
        let column = source.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

/// Sorts diagnostics by position, errors before warnings at one place, so
/// that a file's diagnostics always come out in reading order.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| (d.primary.span.start, d.severity() == Severity::Warning, d.code));
}

/// How many diagnostics of one file are drawn for a reader (the CLI's
/// terminal output, [`render_plain`]); the rest are counted. Past this a
/// reader fixes the first ones and runs again.
pub const SHOWN: usize = 100;

/// Characters of a source line shown on each side of a span's start in
/// [`render_plain`]: a line can be megabytes long.
const PLAIN_CONTEXT: usize = 100;

/// Renders diagnostics as plain text in the rustc style, with the source
/// line and a caret underline: what build.rs users see in a failed build.
/// (The CLI renders with miette's graphical handler instead.) At most
/// [`SHOWN`] diagnostics, then a count of the rest; a long line is clipped
/// around the span, so each diagnostic costs its context, not its line.
pub fn render_plain(file: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let index = LineIndex::new(source);
    let mut out = String::new();
    for d in diagnostics.iter().take(SHOWN) {
        let start = d.primary.span.start.min(source.len());
        let (line, column) = index.line_col(source, start);
        let mut line_start = index.line_start(line - 1).unwrap_or(0);
        if line == 1 && source.starts_with('\u{feff}') {
            line_start = 3; // not shown, and no column
        }
        let mut line_end = index.line_start(line).map_or(source.len(), |next| next - 1);
        if source[line_start..line_end].ends_with('\r') {
            line_end -= 1;
        }
        let start = start.clamp(line_start, line_end);
        let from = source[line_start..start]
            .char_indices()
            .rev()
            .take(PLAIN_CONTEXT)
            .last()
            .map_or(start, |(i, _)| line_start + i);
        let to = source[start..line_end]
            .char_indices()
            .nth(2 * PLAIN_CONTEXT)
            .map_or(line_end, |(i, _)| start + i);
        let (before, after) =
            (if from > line_start { "…" } else { "" }, if to < line_end { "…" } else { "" });
        let text = format!("{before}{}{after}", &source[from..to]);
        let indent = before.chars().count() + source[from..start].chars().count();
        let width = source[start..d.primary.span.end.clamp(start, to)].chars().count().max(1);
        let gutter = " ".repeat(line.to_string().len());
        out.push_str(&format!("{}[{}]: {}\n", d.severity().as_str(), d.code, d.message));
        out.push_str(&format!("{gutter}--> {file}:{line}:{column}\n"));
        out.push_str(&format!("{gutter} |\n{line} | {text}\n"));
        out.push_str(&format!("{gutter} | {}{} {}\n", " ".repeat(indent), "^".repeat(width), d.primary.text));
        for l in &d.secondary {
            let (sl, sc) = index.line_col(source, l.span.start);
            out.push_str(&format!("{gutter} = note: {file}:{sl}:{sc}: {}\n", l.text));
        }
        if let Some(help) = &d.help {
            out.push_str(&format!("{gutter} = help: {help}\n"));
        }
        out.push('\n');
    }
    if let Some(hidden) = diagnostics.get(SHOWN..).filter(|h| !h.is_empty()) {
        let errors = hidden.iter().filter(|d| d.is_error()).count();
        out.push_str(&format!(
            "... and {} more ({errors} errors, {} warnings)\n",
            hidden.len(),
            hidden.len() - errors
        ));
    }
    out
}
