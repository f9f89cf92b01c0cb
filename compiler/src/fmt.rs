//! AST + source → the canonical text of a spec (`devmapc fmt`).
//!
//! The layout is fixed: four-space indentation; `table`, `egress` and `test`
//! blocks one member per line; `device`, `group` and `ingress` on one line
//! when they fit in 100 columns and hold no comment; `=` aligned within a
//! block of settings; trailing comments aligned within a run of lines; at
//! most one blank line where the source had one, and always one around a
//! multi-line item.
//!
//! Comments are not in the AST. They are read from the source and placed by
//! position: a comment on a line of its own goes before the next line the
//! printer writes; a comment after code on the same line stays at the end of
//! that line. A comment in the middle of a one-line construct (between
//! `route` and its key) moves to its own line, but is never lost.
//!
//! Invariants (tested over the corpus and by property tests): the output
//! parses to an AST equal to the input's; formatting is idempotent.

use crate::ast::*;

/// Width past which a one-line block is written over several lines.
const MAX_WIDTH: usize = 100;
const INDENT: &str = "    ";

/// Parses and formats a spec.
pub fn format_source(source: &str) -> Result<String, Vec<crate::Diagnostic>> {
    let spec = crate::parse::parse(source)?;
    Ok(format(source, &spec))
}

/// Formats a parsed spec; `source` is the text it was parsed from (for its
/// comments and blank lines).
pub fn format(source: &str, spec: &Spec) -> String {
    let mut p = Printer::new(source);
    let mut previous_multiline = false;
    for (i, item) in spec.items.iter().enumerate() {
        let multiline = p.is_multiline(item);
        p.pending_blank = i > 0 && (multiline || previous_multiline);
        p.item(item, multiline);
        previous_multiline = multiline;
    }
    p.leading(source.len());
    p.finish()
}

/// A comment of the source.
#[derive(Debug)]
struct Comment {
    span: Span,
    /// A blank line stands right above the comment's line.
    blank_before: bool,
}

/// One output line.
struct Line {
    indent: usize,
    text: String,
    trailing: Option<String>,
    blank_before: bool,
}

struct Printer<'s> {
    src: &'s str,
    comments: Vec<Comment>,
    /// The first comment not yet printed.
    next: usize,
    lines: Vec<Line>,
    indent: usize,
    /// The next line gets a blank line above it.
    pending_blank: bool,
    /// The next line is the first of a block: no blank line above it.
    block_start: bool,
}

impl<'s> Printer<'s> {
    fn new(src: &'s str) -> Printer<'s> {
        let comments = scan_comments(src)
            .into_iter()
            .map(|span| Comment { span, blank_before: blank_above(src, span.start) })
            .collect();
        Printer {
            src,
            comments,
            next: 0,
            lines: Vec::new(),
            indent: 0,
            pending_blank: false,
            block_start: true,
        }
    }

    fn push(&mut self, text: String, blank_before: bool) {
        let blank = (blank_before || self.pending_blank) && !self.block_start;
        self.lines.push(Line { indent: self.indent, text, trailing: None, blank_before: blank });
        self.pending_blank = false;
        self.block_start = false;
    }

    /// Prints, each on its own line, the comments that start before `pos`.
    fn leading(&mut self, pos: usize) {
        while let Some(c) = self.comments.get(self.next).filter(|c| c.span.start < pos) {
            let (text, blank) = (self.src[c.span.start..c.span.end].to_string(), c.blank_before);
            self.next += 1;
            self.push(text, blank);
        }
    }

    /// Attaches to the last line the comments that follow `end` on the same
    /// source line, with nothing but white space and commas before them (a
    /// comment after a `}` on that line belongs to the `}`, not to the
    /// member before it).
    fn trailing(&mut self, mut end: usize) {
        while let Some(c) = self.comments.get(self.next) {
            let between = self.src.get(end..c.span.start).unwrap_or("\n");
            if c.span.start < end || !between.chars().all(|ch| matches!(ch, ' ' | '\t' | '\r' | ',')) {
                break;
            }
            let text = self.src[c.span.start..c.span.end].to_string();
            self.next += 1;
            end = c.span.end;
            let line = self.lines.last_mut().expect("a trailing comment follows a line");
            line.trailing = Some(match line.trailing.take() {
                Some(t) => format!("{t} {text}"),
                None => text,
            });
        }
    }

    /// Writes the line for a construct at `span`: comments before it, the
    /// line, and the comment after it.
    fn line(&mut self, span: Span, text: String) {
        self.leading(span.start);
        let blank = blank_above(self.src, span.start);
        self.push(text, blank);
        self.trailing(self.code_end(span));
    }

    /// Where the code of a construct ends. The span of a rule that ends in
    /// an optional or repeated part (`expect a` without a pattern, a packet,
    /// an `if` without `else`) takes in the white space and comments that
    /// follow it; they are not part of its line.
    fn code_end(&self, span: Span) -> usize {
        let mut end = span.end;
        loop {
            end = span.start + self.src[span.start..end].trim_end_matches([' ', '\t', '\r']).len();
            match self.comments.binary_search_by_key(&end, |c| c.span.end) {
                Ok(i) if self.comments[i].span.start >= span.start => end = self.comments[i].span.start,
                _ => return end,
            }
        }
    }

    /// Opens a block whose header starts at `start` and whose `{` ends at
    /// `open_end`.
    fn open(&mut self, start: usize, open_end: usize, header: String) {
        self.leading(start);
        let blank = blank_above(self.src, start);
        self.push(header, blank);
        self.trailing(open_end);
        self.indent += 1;
        self.block_start = true;
    }

    /// Closes a block whose `}` ends at `end`; `suffix` continues the line
    /// (`} else {`).
    fn close(&mut self, end: usize, suffix: &str) {
        self.leading(end.saturating_sub(1));
        self.indent -= 1;
        self.block_start = false;
        self.push(format!("}}{suffix}"), false);
    }

    fn has_comment_in(&self, span: Span) -> bool {
        self.comments[self.next..].iter().any(|c| c.span.start >= span.start && c.span.start < span.end)
    }

    fn is_multiline(&self, item: &Item) -> bool {
        match item {
            Item::Table(_) | Item::Egress(_) | Item::Test(_) => true,
            Item::Route(_) => false,
            Item::Device(_) | Item::Group(_) | Item::Ingress(_) => {
                self.has_comment_in(item.span()) || one_line(item).is_none_or(|l| l.len() > MAX_WIDTH)
            }
        }
    }

    fn item(&mut self, item: &Item, multiline: bool) {
        if !multiline {
            let text = one_line(item).expect("a one-line item");
            self.line(item.span(), text);
            return;
        }
        match item {
            Item::Table(t) => self.settings_block(t.span.start, "table".into(), &t.settings),
            Item::Device(d) => {
                self.settings_block(d.span.start, format!("device {}", d.name.name), &d.settings)
            }
            Item::Ingress(i) => self.settings_block(i.span.start, "ingress".into(), &i.settings),
            Item::Group(g) => {
                self.open(g.span.start, g.members.span.start + 1, format!("group {} {{", g.name.name));
                for m in &g.members.members {
                    self.line(m.span, m.name.clone());
                }
                self.close(g.members.span.end, "");
                self.trailing(g.span.end);
            }
            Item::Egress(e) => {
                let params: Vec<String> =
                    e.params.iter().map(|p| format!("{}: {}", p.name.name, p.ty.name)).collect();
                let params =
                    if params.is_empty() { String::new() } else { format!("({})", params.join(", ")) };
                self.open(e.span.start, e.body.span.start + 1, format!("egress {}{params} {{", e.name.name));
                self.stmts(&e.body);
                self.close(e.body.span.end, "");
                self.trailing(e.span.end);
            }
            Item::Test(t) => {
                let open = self.src[t.body.span.start..]
                    .find('{')
                    .map_or(t.body.span.start, |i| t.body.span.start + i + 1);
                self.open(t.span.start, open, format!("test {} {{", string(&t.name.text)));
                for s in &t.body.members {
                    self.line(s.span, test_stmt(s));
                }
                self.close(t.body.span.end, "");
                self.trailing(t.span.end);
            }
            Item::Route(_) => unreachable!("routes are one line"),
        }
    }

    fn settings_block(&mut self, start: usize, header: String, block: &Block<Setting>) {
        self.open(start, block.span.start + 1, format!("{header} {{"));
        let width = block.members.iter().map(|s| s.name.name.len()).max().unwrap_or(0);
        for s in &block.members {
            self.line(s.span, format!("{:width$} = {}", s.name.name, value(&s.value)));
        }
        self.close(block.span.end, "");
        self.trailing(block.span.end);
    }

    fn stmts(&mut self, block: &Block<Stmt>) {
        for s in &block.members {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, stmt: &Stmt) {
        let StmtKind::If(if_) = &stmt.kind else {
            self.line(stmt.span, simple_stmt(&stmt.kind));
            return;
        };
        self.open(stmt.span.start, if_.then.span.start + 1, format!("if {} {{", cond(&if_.cond, 0)));
        self.if_rest(if_);
        self.trailing(self.code_end(stmt.span));
    }

    /// The body of an `if` and its `else` chain, after the opening line.
    fn if_rest(&mut self, if_: &If) {
        self.stmts(&if_.then);
        match &if_.otherwise {
            None => self.close(if_.then.span.end, ""),
            Some(Else::Block(block)) => {
                self.close(if_.then.span.end, " else {");
                self.trailing(block.span.start + 1);
                self.indent += 1;
                self.block_start = true;
                self.stmts(block);
                self.close(block.span.end, "");
            }
            Some(Else::If(nested)) => {
                let StmtKind::If(inner) = &nested.kind else { unreachable!("else-if holds an if") };
                self.close(if_.then.span.end, &format!(" else if {} {{", cond(&inner.cond, 0)));
                self.trailing(inner.then.span.start + 1);
                self.indent += 1;
                self.block_start = true;
                self.if_rest(inner);
            }
        }
    }

    fn finish(mut self) -> String {
        align_trailing(&mut self.lines);
        let mut out = String::new();
        for line in &self.lines {
            if line.blank_before {
                out.push('\n');
            }
            for _ in 0..line.indent {
                out.push_str(INDENT);
            }
            out.push_str(&line.text);
            if let Some(t) = &line.trailing {
                out.push_str(t);
            }
            out.push('\n');
        }
        out
    }
}

/// Pads the code of consecutive lines that carry trailing comments so the
/// comments start in one column (two spaces after the longest line).
fn align_trailing(lines: &mut [Line]) {
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trailing.is_none() {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < lines.len()
            && lines[j].trailing.is_some()
            && !lines[j].blank_before
            && !lines[j - 1].text.contains('\n')
        {
            j += 1;
        }
        let width =
            lines[i..j].iter().map(|l| l.indent * INDENT.len() + l.text.chars().count()).max().unwrap_or(0);
        for line in &mut lines[i..j] {
            let pad = width - line.indent * INDENT.len() - line.text.chars().count() + 2;
            let comment = line.trailing.take().unwrap();
            line.trailing = Some(format!("{}{comment}", " ".repeat(pad)));
        }
        i = j;
    }
}

/// The one-line form of a device, group, ingress or route.
fn one_line(item: &Item) -> Option<String> {
    let settings = |b: &Block<Setting>| {
        if b.members.is_empty() {
            return "{}".to_string();
        }
        let s: Vec<String> =
            b.members.iter().map(|s| format!("{} = {}", s.name.name, value(&s.value))).collect();
        format!("{{ {} }}", s.join(", "))
    };
    Some(match item {
        Item::Device(d) => format!("device {} {}", d.name.name, settings(&d.settings)),
        Item::Ingress(i) => format!("ingress {}", settings(&i.settings)),
        Item::Group(g) if g.members.members.is_empty() => format!("group {} {{}}", g.name.name),
        Item::Group(g) => {
            let names: Vec<&str> = g.members.members.iter().map(|m| m.name.as_str()).collect();
            format!("group {} {{ {} }}", g.name.name, names.join(", "))
        }
        Item::Route(r) => {
            let key = match &r.key {
                RouteKey::Default(_) => "default".to_string(),
                RouteKey::Value(v) => value(v),
            };
            format!("route {key} -> {}", r.target.name)
        }
        _ => return None,
    })
}

fn simple_stmt(kind: &StmtKind) -> String {
    match kind {
        StmtKind::Assign { field, value: v } => format!("{} = {}", field.dotted(), value(v)),
        StmtKind::Decrement { field, amount } => format!("{} -= {}", field.dotted(), value(amount)),
        StmtKind::Call(c) => call(c),
        StmtKind::Drop => "drop".into(),
        StmtKind::Pass => "pass".into(),
        StmtKind::If(_) => unreachable!("`if` spans lines"),
    }
}

/// A condition; `parent` is the binding strength of the context: 0 at the
/// top, 1 inside `||`, 2 inside `&&`, 3 under `!`.
fn cond(c: &Cond, parent: u8) -> String {
    let (text, strength) = match &c.kind {
        CondKind::Or(parts) => (parts.iter().map(|p| cond(p, 2)).collect::<Vec<_>>().join(" || "), 1),
        CondKind::And(parts) => (parts.iter().map(|p| cond(p, 3)).collect::<Vec<_>>().join(" && "), 2),
        // `!(ipv4.ttl == 1)`, not `!ipv4.ttl == 1`, which reads wrongly.
        CondKind::Not(inner) => (format!("!{}", cond(inner, 4)), 4),
        CondKind::Has(h) => (format!("has({})", h.name), 5),
        CondKind::Compare { left, op, right } => {
            (format!("{} {} {}", value(left), op.as_str(), value(right)), 3)
        }
    };
    if strength < parent {
        format!("({text})")
    } else {
        text
    }
}

fn test_stmt(s: &TestStmt) -> String {
    match &s.kind {
        TestStmtKind::Send { device, packet: p } => format!("send {} {}", device.name, packet(p)),
        TestStmtKind::ExpectDrop => "expect drop".into(),
        TestStmtKind::ExpectPass => "expect pass".into(),
        TestStmtKind::ExpectOut { devices, pattern } => {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            match pattern {
                Some(p) => format!("expect {} {}", names.join(", "), packet(p)),
                None => format!("expect {}", names.join(", ")),
            }
        }
    }
}

fn packet(p: &Packet) -> String {
    let layers: Vec<String> = p
        .layers
        .iter()
        .map(|l| {
            let args: Vec<String> = l
                .args
                .iter()
                .map(|a| match &a.field {
                    Some(f) => format!("{} = {}", f.name, value(&a.value)),
                    None => value(&a.value),
                })
                .collect();
            format!("{}({})", l.name.name, args.join(", "))
        })
        .collect();
    layers.join(" / ")
}

fn call(c: &Call) -> String {
    let args: Vec<String> = c.args.iter().map(value).collect();
    format!("{}({})", c.callee.dotted(), args.join(", "))
}

fn string(text: &str) -> String {
    format!("\"{text}\"")
}

/// A value in canonical form: lower-case hex, compressed IPv6.
pub fn value(v: &Value) -> String {
    match &v.kind {
        ValueKind::Int(Int { value, hex_digits: 0 }) => value.to_string(),
        ValueKind::Int(Int { value, hex_digits }) => {
            format!("0x{value:0width$x}", width = *hex_digits as usize)
        }
        ValueKind::Mac(m) => m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        ValueKind::Ipv4(a) => a.to_string(),
        ValueKind::Ipv6(a) => a.to_string(),
        ValueKind::Ipv4Prefix(a, l) => format!("{a}/{l}"),
        ValueKind::Ipv6Prefix(a, l) => format!("{a}/{l}"),
        ValueKind::Str(s) => string(s),
        ValueKind::Path(p) => p.dotted(),
        ValueKind::Call(c) => call(c),
        ValueKind::Tuple(parts) => format!("({})", parts.iter().map(value).collect::<Vec<_>>().join(", ")),
        ValueKind::List(parts) => format!("[{}]", parts.iter().map(value).collect::<Vec<_>>().join(", ")),
    }
}

/// Whether the line above the one holding `pos` is blank.
fn blank_above(src: &str, pos: usize) -> bool {
    let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
    if line_start == 0 {
        return false;
    }
    let above_start = src[..line_start - 1].rfind('\n').map_or(0, |i| i + 1);
    src[above_start..line_start - 1].trim().is_empty()
}

/// The spans of every comment, found as the grammar finds them: outside
/// strings, `//` to the end of the line, `/*` to the first `*/`.
fn scan_comments(src: &str) -> Vec<Span> {
    let bytes = src.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                // The grammar ends a line comment at any NEWLINE, a lone
                // `\r` included (after which the line goes on as code).
                let end = src[i..].find(['\n', '\r']).map_or(src.len(), |n| i + n);
                spans.push(Span::new(i, end));
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].find("*/").map_or(src.len(), |n| i + 2 + n + 2);
                spans.push(Span::new(i, end));
                i = end;
            }
            _ => i += 1,
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(src: &str) -> String {
        format_source(src).unwrap_or_else(|e| panic!("{src}: {e:?}"))
    }

    #[test]
    fn comments_survive_and_align() {
        let src = "// header\ntable {\n  key = vlan.id // the key\n  max_entries=10 // size\n}\n";
        assert_eq!(fmt(src), "// header\ntable {\n    key         = vlan.id  // the key\n    max_entries = 10       // size\n}\n");
    }

    #[test]
    fn short_blocks_stay_on_one_line() {
        let src = "device red {\n ifname = \"r\"\n egress = retag(10)\n}\n";
        assert_eq!(fmt(src), "device red { ifname = \"r\", egress = retag(10) }\n");
    }

    #[test]
    fn conditions_keep_their_meaning() {
        let src = "egress e { if !(ipv4.ttl == 1) || (has(vlan) && vlan.id == 1) { drop } else if has(ipv6) { pass } else { drop } }\n";
        let out = fmt(src);
        assert_eq!(
            out,
            "egress e {\n    if !(ipv4.ttl == 1) || has(vlan) && vlan.id == 1 {\n        drop\n    } else if has(ipv6) {\n        pass\n    } else {\n        drop\n    }\n}\n"
        );
        assert_eq!(crate::parse::parse(&out).unwrap(), crate::parse::parse(src).unwrap());
    }

    /// docs/language.md, 13: hex integers keep the number of digits they
    /// were written with, in lower case.
    #[test]
    fn hex_integers_keep_their_width() {
        let src = "route (0x0800, 0X8100, 0xABCD, 0x1, 2048) -> a\n";
        assert_eq!(fmt(src), "route (0x0800, 0x8100, 0xabcd, 0x1, 2048) -> a\n");
    }

    #[test]
    fn negations_that_cancel_are_dropped() {
        let src = "egress e { if !!has(vlan) && !!!(vlan.id == 1) || !(!(has(ipv4))) { drop } }\n";
        assert_eq!(
            fmt(src),
            "egress e {\n    if has(vlan) && !(vlan.id == 1) || has(ipv4) {\n        drop\n    }\n}\n"
        );
    }

    #[test]
    fn a_comment_inside_a_line_is_kept() {
        let src = "route /* why */ 1 -> a\nroute 2 -> b\n";
        let out = fmt(src);
        assert!(out.contains("/* why */"), "{out}");
        assert_eq!(fmt(&out), out);
    }
}
