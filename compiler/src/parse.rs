//! Text → AST. The only module that sees pest pairs.
//!
//! A syntax error cannot be recovered from inside pest, so after the first
//! one the parser restarts at the next line that begins an item and goes on,
//! to report every broken item of a file in one run. Literals are validated
//! here (an octet above 255 is found while reading it), each with its own
//! diagnostic; meaning is left to `check`.

use crate::ast::*;
use crate::diagnostic::{Code, Diagnostic};
use pest::iterators::Pair;
use pest::Parser as _;
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/devmap.pest"]
struct DevmapParser;

/// Parses a whole spec. On any error the AST is `None` and the diagnostics
/// say why; a spec that parses may still be meaningless (see `check`).
pub fn parse(source: &str) -> Result<Spec, Vec<Diagnostic>> {
    // pest and every later stage recurse once per level of nesting: a text
    // nested deeper than any spec needs is refused before it can overflow
    // the stack.
    if let Some(too_deep) = too_deep(source) {
        return Err(vec![too_deep]);
    }
    match DevmapParser::parse(Rule::file, source) {
        Ok(mut pairs) => {
            let mut builder = Builder { diagnostics: Vec::new() };
            let file = pairs.next().expect("the file rule always yields one pair");
            let spec = builder.file(file);
            if builder.diagnostics.is_empty() {
                Ok(spec)
            } else {
                Err(builder.diagnostics)
            }
        }
        Err(_) => {
            // Parse again, tracking the tokens tried at the furthest point:
            // without them an error names only the rules that failed, often
            // a token too early (`route 200 => b` would blame `200`, not
            // `=>`). Tracking slows every parse down by half, so it is off
            // until the first error; then it stays on (pest's switch is
            // global: turning it off again could race with another thread's
            // error and change its message).
            pest::set_error_detail(true);
            let error =
                DevmapParser::parse(Rule::file, source).expect_err("a text that failed to parse fails again");
            Err(recover(source, error))
        }
    }
}

/// How deep a spec may nest: `{ }`, `( )` and `[ ]` inside each other, and
/// the branches of an `else if` chain (each is one level deeper in the
/// syntax tree). At this depth the parser, the checker, the formatter, the
/// code generator and the C compiler (whose own limit is 256 brackets; a
/// level of the spec is at most two in C) all stay well inside a 2 MiB
/// thread stack. docs/language.md documents it.
pub const MAX_NESTING: usize = 100;

/// The first point where the text nests deeper than [`MAX_NESTING`], as an
/// E032 diagnostic; `None` for a text within the limit. A scan of the bytes,
/// without recursion: brackets in strings and comments do not count, and a
/// bracket without its partner is left for the parser to report.
fn too_deep(source: &str) -> Option<Diagnostic> {
    let bytes = source.as_bytes();
    // One frame per open bracket (the first is the file): the `else if`
    // levels of the chain being read at that level.
    let mut frames: Vec<usize> = vec![0];
    let mut depth = 0;
    // The last word was `else` (white space and comments may follow).
    let mut after_else = false;
    // A `}` just closed a block: unless `else` comes next, the chain of
    // the level it returned to has ended.
    let mut block_closed = false;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        match bytes[i] {
            b'/' if rest.starts_with(b"//") => {
                i += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                continue;
            }
            b'/' if rest.starts_with(b"/*") => {
                i += rest[2..].windows(2).position(|w| w == b"*/").map_or(rest.len(), |n| n + 4);
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len =
            rest.iter().position(|b| !(b.is_ascii_alphanumeric() || *b == b'_')).unwrap_or(rest.len()).max(1);
        let word = &rest[..len];
        let chain = frames.last_mut().expect("the file's frame is never popped");
        if block_closed && word != b"else" {
            depth -= *chain;
            *chain = 0;
        }
        block_closed = false;
        match bytes[i] {
            b'"' => {
                // A string runs to its closing quote or the end of the line.
                i += rest[1..].iter().position(|&b| b == b'"' || b == b'\n').map_or(rest.len(), |n| n + 2);
                after_else = false;
                continue;
            }
            b'{' | b'(' | b'[' => {
                frames.push(0);
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(nesting_error(i, 1, "bracket"));
                }
            }
            b'}' | b')' | b']' => {
                if frames.len() > 1 {
                    depth -= 1 + frames.pop().unwrap_or(0);
                }
                block_closed = bytes[i] == b'}';
            }
            _ if word == b"if" && after_else => {
                *chain += 1;
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(nesting_error(i, len, "`else if`"));
                }
            }
            _ => {}
        }
        after_else = word == b"else";
        i += len;
    }
    None
}

fn nesting_error(at: usize, width: usize, what: &str) -> Diagnostic {
    Diagnostic::new(Code::TooDeep, Span::new(at, at + width), format!("the spec nests deeper than {MAX_NESTING} levels"))
        .label(format!("this {what} is level {}", MAX_NESTING + 1))
        .help(format!(
            "a spec nests at most {MAX_NESTING} levels of `{{ }}`, `( )`, `[ ]` and `else if` branches; split the condition or the chain (several `if`s, or a key and routes)"
        ))
}

/// Collects the syntax errors of every broken item: the first from the
/// whole-file parse, then one per later item that fails on its own.
fn recover(source: &str, first: pest::error::Error<Rule>) -> Vec<Diagnostic> {
    let first = syntax_error(source, 0, &first);
    let mut diagnostics = vec![first];
    // Resume at the first item start after the error's line.
    let mut resume = line_end(source, diagnostics[0].primary.span.start);
    while let Some(start) = next_item_start(source, resume) {
        let end = next_item_start(source, line_end(source, start)).unwrap_or(source.len());
        let chunk = &source[start..end];
        match DevmapParser::parse(Rule::file, chunk) {
            Ok(_) => resume = end,
            Err(error) => {
                let d = syntax_error(chunk, start, &error);
                resume = line_end(source, d.primary.span.start).max(line_end(source, start));
                diagnostics.push(d);
            }
        }
    }
    diagnostics
}

fn line_end(source: &str, offset: usize) -> usize {
    source[offset.min(source.len())..].find('\n').map_or(source.len(), |i| offset + i + 1)
}

/// The offset of the next line at or after `from` that starts (at column
/// 0) with an item keyword, skipping lines inside block comments.
fn next_item_start(source: &str, from: usize) -> Option<usize> {
    const KEYWORDS: [&str; 7] = ["table", "device", "egress", "group", "ingress", "route", "test"];
    let mut offset = from;
    while offset < source.len() {
        let line = &source[offset..line_end(source, offset)];
        let word: String = line.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if KEYWORDS.contains(&word.as_str()) {
            return Some(offset);
        }
        offset = line_end(source, offset);
    }
    None
}

/// A pest error as a located E001 diagnostic that names what was expected
/// in the spec's own terms.
fn syntax_error(chunk: &str, base: usize, error: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let mut pos = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let attempts = error.parse_attempts();
    // The rules that failed are reported where they started; the tokens
    // tried may have got further (past a literal, into a string). The
    // furthest point is where the text stopped making sense.
    let further = attempts
        .as_ref()
        .filter(|a| a.max_position > pos && a.max_position <= chunk.len())
        .map(|a| a.max_position);
    let mut expected: Vec<String> = match (&error.variant, further) {
        (ErrorVariant::ParsingError { positives, .. }, None) => {
            positives.iter().filter_map(|r| describe_rule(*r)).map(String::from).collect()
        }
        (ErrorVariant::CustomError { message }, None) => vec![message.clone()],
        (_, Some(_)) => Vec::new(),
    };
    pos = further.unwrap_or(pos);
    let line_start = chunk[..pos].rfind('\n').map_or(0, |i| i + 1);
    if let Some(open) = open_string(&chunk[line_start..pos]).map(|i| line_start + i) {
        // Inside a string that never closes: point at its opening quote.
        return Diagnostic::new(
            Code::Syntax,
            Span::new(base + open, base + open + 1),
            "this string is not closed",
        )
        .label("the string starts here and runs to the end of the line")
        .help("close it with `\"` on the same line; strings cannot span lines");
    }
    if let Some(c) = chunk[pos..].chars().next().filter(|c| c.is_alphabetic() && !c.is_ascii()) {
        return Diagnostic::new(
            Code::Syntax,
            Span::new(base + pos, base + pos + c.len_utf8()),
            format!("`{c}` cannot be part of a name"),
        )
        .label("not an ASCII letter")
        .help("names are made of ASCII letters, digits and `_` (they reach the generated C)");
    }
    // Right after a name, the letters that could continue it are no help.
    let after_word = chunk[..pos].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let mut end_of_line = false;
    if let Some(attempts) = &attempts {
        for token in attempts.expected_tokens() {
            // Literal tokens print as themselves, character ranges as `a..z`.
            match token.to_string().as_str() {
                "\n" | "\r\n" => end_of_line = true,
                // The byte order mark is only skipped, never asked for.
                "" | " " | "\t" | "\r" | "//" | "/*" | "\u{feff}" => {}
                "A..Z" | "a..z" | "_" if !after_word => expected.push("a name".into()),
                "0..9" if !after_word => expected.push("a number".into()),
                t if t.len() == 4 && &t[1..3] == ".." || t == "_" => {}
                t => expected.push(format!("`{t}`")),
            }
        }
    }
    // Where a whole value may stand, the characters that start one are
    // noise next to "a value".
    if expected.iter().any(|e| e == "a value" || e.starts_with("a layer field")) {
        expected.retain(|e| {
            !matches!(e.as_str(), "`\"`" | "`(`" | "`0x`" | "`0X`" | "`:`" | "`[`" | "a name" | "a number")
        });
    }
    if expected.is_empty() && end_of_line {
        expected.push("the end of the line".into());
    }
    let found = describe_found(&chunk[pos..]);
    expected.sort();
    expected.dedup();
    let message = match expected.len() {
        0 => format!("unexpected {found}"),
        1 => format!("expected {}, found {found}", expected[0]),
        _ => {
            let (last, rest) = expected.split_last().unwrap();
            format!("expected {} or {last}, found {found}", rest.join(", "))
        }
    };
    let width = chunk[pos..].chars().next().filter(|c| *c != '\n').map_or(0, |c| {
        let word = chunk[pos..].find(|c: char| c.is_whitespace()).unwrap_or(chunk.len() - pos);
        if c.is_ascii_alphanumeric() || c == '_' {
            word
        } else {
            c.len_utf8()
        }
    });
    let span = Span::new(base + pos, base + pos + width);
    Diagnostic::new(Code::Syntax, span, message)
        .label("here")
        .help("see docs/language.md for the syntax of each item")
}

/// The offset of the quote that opens a string still open at the end of
/// `line` (quotes inside comments do not count).
fn open_string(line: &str) -> Option<usize> {
    let mut open = None;
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        if open.is_none() && rest.starts_with("//") {
            break;
        }
        if open.is_none() && rest.starts_with("/*") {
            match rest.find("*/") {
                Some(end) => i += end + 2,
                None => break,
            }
            continue;
        }
        if rest.starts_with('"') {
            open = if open.is_none() { Some(i) } else { None };
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    open
}

/// What the parser met where it failed, in words.
fn describe_found(rest: &str) -> String {
    match rest.chars().next() {
        None => "the end of the file".into(),
        Some('\n') | Some('\r') => "the end of the line".into(),
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':' || *c == '.')
                .collect();
            format!("`{word}`")
        }
        // A character that shows as nothing would read "found ``".
        Some('\u{feff}') => "U+FEFF, a byte order mark (allowed only at the very start of the file)".into(),
        Some(c)
            if c.is_control()
                || c.is_whitespace()
                || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}') =>
        {
            format!("the invisible character U+{:04X}", c as u32)
        }
        Some(c) => format!("`{c}`"),
    }
}

/// The name of a grammar rule as a user would say it; `None` for rules too
/// internal to mention.
fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::kw_table => "`table`",
        Rule::kw_device => "`device`",
        Rule::kw_egress => "`egress`",
        Rule::kw_group => "`group`",
        Rule::kw_ingress => "`ingress`",
        Rule::kw_route => "`route`",
        Rule::kw_test => "`test`",
        Rule::kw_default => "`default`",
        Rule::kw_if => "`if`",
        Rule::kw_else => "`else`",
        Rule::kw_has => "`has`",
        Rule::kw_drop => "`drop`",
        Rule::kw_pass => "`pass`",
        Rule::kw_send => "`send`",
        Rule::kw_expect => "`expect`",
        Rule::setting => "a setting (`name = value`)",
        Rule::value => "a value",
        Rule::name => "a name",
        Rule::path => "a name or field",
        Rule::int | Rule::prefix_len => "a number",
        Rule::string => "a string",
        Rule::param => "a parameter (`name: type`)",
        Rule::params => "parameters",
        Rule::settings | Rule::members => "`{`",
        Rule::cond | Rule::cond_and | Rule::cond_not | Rule::compare => "a condition",
        Rule::packet | Rule::layer => "a packet layer (`eth(...)`)",
        Rule::layer_arg => "a layer field (`name = value`)",
        Rule::if_stmt
        | Rule::drop_stmt
        | Rule::pass_stmt
        | Rule::call_stmt
        | Rule::decrement
        | Rule::assign => "a statement",
        Rule::expect_out => "a device",
        Rule::args => "`(`",
        _ => return None,
    })
}

/// Builds the AST from pairs, collecting literal errors as it goes.
struct Builder {
    diagnostics: Vec<Diagnostic>,
}

fn span_of(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

fn ident(pair: Pair<Rule>) -> Ident {
    debug_assert_eq!(pair.as_rule(), Rule::name);
    Ident { name: pair.as_str().to_string(), span: span_of(&pair) }
}

/// The pairs of a node without its keyword tokens.
fn children(pair: Pair<Rule>) -> impl Iterator<Item = Pair<Rule>> {
    pair.into_inner().filter(|p| {
        !matches!(
            p.as_rule(),
            Rule::kw_table
                | Rule::kw_device
                | Rule::kw_egress
                | Rule::kw_group
                | Rule::kw_ingress
                | Rule::kw_route
                | Rule::kw_test
                | Rule::kw_if
                | Rule::kw_else
                | Rule::kw_has
                | Rule::kw_send
                | Rule::kw_expect
        )
    })
}

impl Builder {
    fn file(&mut self, pair: Pair<Rule>) -> Spec {
        let items = pair.into_inner().filter(|p| p.as_rule() != Rule::EOI).map(|p| self.item(p)).collect();
        Spec { items }
    }

    fn item(&mut self, pair: Pair<Rule>) -> Item {
        let span = span_of(&pair);
        match pair.as_rule() {
            Rule::table => {
                let settings = self.settings(children(pair).next().unwrap());
                Item::Table(Table { settings, span })
            }
            Rule::ingress => {
                let settings = self.settings(children(pair).next().unwrap());
                Item::Ingress(Ingress { settings, span })
            }
            Rule::device => {
                let mut inner = children(pair);
                let name = ident(inner.next().unwrap());
                let settings = self.settings(inner.next().unwrap());
                Item::Device(Device { name, settings, span })
            }
            Rule::group => {
                let mut inner = children(pair);
                let name = ident(inner.next().unwrap());
                let block = inner.next().unwrap();
                let members =
                    Block { span: span_of(&block), members: block.into_inner().map(ident).collect() };
                Item::Group(Group { name, members, span })
            }
            Rule::route => {
                let mut inner = children(pair);
                let key = inner.next().unwrap();
                let key = match key.as_rule() {
                    Rule::kw_default => RouteKey::Default(span_of(&key)),
                    _ => RouteKey::Value(self.value(key)),
                };
                let target = ident(inner.next().unwrap());
                Item::Route(Route { key, target, span })
            }
            Rule::egress => {
                let mut name = None;
                let mut params = Vec::new();
                let mut body = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::name => name = Some(ident(p)),
                        Rule::params => params = p.into_inner().map(|p| self.param(p)).collect(),
                        Rule::block => body = Some(self.block(p)),
                        r => unreachable!("egress child {r:?}"),
                    }
                }
                Item::Egress(Egress { name: name.unwrap(), params, body: body.unwrap(), span })
            }
            Rule::test => {
                let mut inner = children(pair);
                let name = self.string(inner.next().unwrap());
                let body_start = name.span.end;
                let members: Vec<TestStmt> = inner.map(|p| self.test_stmt(p)).collect();
                // The grammar has no separate rule for the test's braces: the
                // block runs from after the name to the end of the item.
                let body = Block { members, span: Span::new(body_start, span.end) };
                Item::Test(Test { name, body, span })
            }
            r => unreachable!("item {r:?}"),
        }
    }

    fn settings(&mut self, pair: Pair<Rule>) -> Block<Setting> {
        let span = span_of(&pair);
        let members = pair
            .into_inner()
            .map(|p| {
                let span = span_of(&p);
                let mut inner = p.into_inner();
                let name = ident(inner.next().unwrap());
                let value = self.value(inner.next().unwrap());
                Setting { name, value, span }
            })
            .collect();
        Block { members, span }
    }

    fn param(&mut self, pair: Pair<Rule>) -> Param {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        Param { name: ident(inner.next().unwrap()), ty: ident(inner.next().unwrap()), span }
    }

    fn block(&mut self, pair: Pair<Rule>) -> Block<Stmt> {
        let span = span_of(&pair);
        let members = pair.into_inner().map(|p| self.stmt(p)).collect();
        Block { members, span }
    }

    fn stmt(&mut self, pair: Pair<Rule>) -> Stmt {
        let span = span_of(&pair);
        let kind = match pair.as_rule() {
            Rule::drop_stmt => StmtKind::Drop,
            Rule::pass_stmt => StmtKind::Pass,
            Rule::call_stmt => StmtKind::Call(self.call(pair.into_inner().next().unwrap())),
            Rule::assign | Rule::decrement => {
                let rule = pair.as_rule();
                let mut inner = pair.into_inner();
                let field = self.path(inner.next().unwrap());
                let value = self.value(inner.next().unwrap());
                if rule == Rule::assign {
                    StmtKind::Assign { field, value }
                } else {
                    StmtKind::Decrement { field, amount: value }
                }
            }
            Rule::if_stmt => {
                let mut inner = children(pair);
                let cond = self.cond(inner.next().unwrap());
                let then = self.block(inner.next().unwrap());
                let otherwise = inner.next().map(|p| match p.as_rule() {
                    Rule::block => Else::Block(self.block(p)),
                    _ => Else::If(Box::new(self.stmt(p))),
                });
                StmtKind::If(If { cond, then, otherwise })
            }
            r => unreachable!("statement {r:?}"),
        };
        Stmt { kind, span }
    }

    fn cond(&mut self, pair: Pair<Rule>) -> Cond {
        let span = span_of(&pair);
        match pair.as_rule() {
            Rule::cond | Rule::cond_and => {
                let rule = pair.as_rule();
                let mut parts: Vec<Cond> = pair.into_inner().map(|p| self.cond(p)).collect();
                if parts.len() == 1 {
                    return parts.pop().unwrap();
                }
                let kind = if rule == Rule::cond { CondKind::Or(parts) } else { CondKind::And(parts) };
                Cond { kind, span }
            }
            Rule::cond_not => {
                let inner: Vec<Pair<Rule>> = pair.into_inner().collect();
                let (nots, atom) = inner.split_at(inner.len() - 1);
                let cond = self.cond(atom[0].clone());
                // `!!c` and `!(!c)` say `c`: a negation never holds another
                // one, so that 20,000 `!` are not 20,000 levels of the tree
                // (and `fmt`, which writes `!!c` for them, keeps the tree).
                if nots.len() % 2 == 0 {
                    return cond;
                }
                match cond.kind {
                    CondKind::Not(inner) => *inner,
                    kind => {
                        let span = Span::new(nots[0].as_span().start(), cond.span.end);
                        Cond { kind: CondKind::Not(Box::new(Cond { kind, span: cond.span })), span }
                    }
                }
            }
            Rule::has => Cond { kind: CondKind::Has(ident(children(pair).next().unwrap())), span },
            Rule::compare => {
                let mut inner = pair.into_inner();
                let left = self.value_of(inner.next().unwrap());
                let op = match inner.next().unwrap().as_str() {
                    "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    ">=" => CmpOp::Ge,
                    other => unreachable!("comparison {other}"),
                };
                let right = self.value_of(inner.next().unwrap());
                Cond { kind: CondKind::Compare { left, op, right }, span }
            }
            r => unreachable!("condition {r:?}"),
        }
    }

    fn test_stmt(&mut self, pair: Pair<Rule>) -> TestStmt {
        let span = span_of(&pair);
        let kind = match pair.as_rule() {
            Rule::send => {
                let mut inner = children(pair);
                let device = ident(inner.next().unwrap());
                let packet = self.packet(inner.next().unwrap());
                TestStmtKind::Send { device, packet }
            }
            Rule::expect => {
                let what = children(pair).next().unwrap();
                match what.as_rule() {
                    Rule::kw_drop => TestStmtKind::ExpectDrop,
                    Rule::kw_pass => TestStmtKind::ExpectPass,
                    Rule::expect_out => {
                        let mut devices = Vec::new();
                        let mut pattern = None;
                        for p in what.into_inner() {
                            match p.as_rule() {
                                Rule::name => devices.push(ident(p)),
                                Rule::packet => pattern = Some(self.packet(p)),
                                r => unreachable!("expect child {r:?}"),
                            }
                        }
                        TestStmtKind::ExpectOut { devices, pattern }
                    }
                    r => unreachable!("expect {r:?}"),
                }
            }
            r => unreachable!("test statement {r:?}"),
        };
        TestStmt { kind, span }
    }

    fn packet(&mut self, pair: Pair<Rule>) -> Packet {
        let span = span_of(&pair);
        let layers = pair
            .into_inner()
            .map(|layer| {
                let span = span_of(&layer);
                let mut inner = layer.into_inner();
                let name = ident(inner.next().unwrap());
                let args = inner
                    .map(|arg| {
                        let span = span_of(&arg);
                        let mut field = None;
                        let mut value = None;
                        for p in arg.into_inner() {
                            match p.as_rule() {
                                Rule::name => field = Some(ident(p)),
                                _ => value = Some(self.value(p)),
                            }
                        }
                        LayerArg { field, value: value.unwrap(), span }
                    })
                    .collect();
                Layer { name, args, span }
            })
            .collect();
        Packet { layers, span }
    }

    fn string(&mut self, pair: Pair<Rule>) -> StrLit {
        StrLit { span: span_of(&pair), text: pair.into_inner().next().unwrap().as_str().to_string() }
    }

    fn path(&mut self, pair: Pair<Rule>) -> Path {
        Path { span: span_of(&pair), segments: pair.into_inner().map(ident).collect() }
    }

    fn call(&mut self, pair: Pair<Rule>) -> Call {
        let mut inner = pair.into_inner();
        let callee = self.path(inner.next().unwrap());
        let args = inner.next().unwrap().into_inner().map(|p| self.value(p)).collect();
        Call { callee, args }
    }

    /// A `value` pair (which wraps exactly one alternative).
    fn value(&mut self, pair: Pair<Rule>) -> Value {
        debug_assert_eq!(pair.as_rule(), Rule::value);
        self.value_of(pair.into_inner().next().unwrap())
    }

    /// The alternative inside a `value`, or an operand of a comparison.
    fn value_of(&mut self, pair: Pair<Rule>) -> Value {
        let span = span_of(&pair);
        let text = pair.as_str();
        let kind = match pair.as_rule() {
            Rule::list => ValueKind::List(pair.into_inner().map(|p| self.value(p)).collect()),
            Rule::tuple => ValueKind::Tuple(pair.into_inner().map(|p| self.value(p)).collect()),
            Rule::call => ValueKind::Call(self.call(pair)),
            Rule::path => ValueKind::Path(self.path(pair)),
            Rule::string => ValueKind::Str(self.string(pair).text),
            Rule::int => ValueKind::Int(self.int(text, span)),
            Rule::mac => {
                let mut bytes = [0u8; 6];
                for (byte, part) in bytes.iter_mut().zip(text.split(':')) {
                    *byte = u8::from_str_radix(part, 16).expect("the grammar admits only hex pairs");
                }
                ValueKind::Mac(bytes)
            }
            Rule::ipv4 => ValueKind::Ipv4(self.ipv4(text, span)),
            Rule::ipv6 => ValueKind::Ipv6(self.ipv6(text, span)),
            Rule::ipv4_prefix | Rule::ipv6_prefix => {
                let v4 = pair.as_rule() == Rule::ipv4_prefix;
                let mut inner = pair.into_inner();
                let addr = inner.next().unwrap();
                let addr_span = span_of(&addr);
                let len_pair = inner.next().unwrap();
                let max = if v4 { 32 } else { 128 };
                let len = match len_pair.as_str().parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => {
                        self.diagnostics.push(
                            Diagnostic::new(
                                Code::BadPrefix,
                                span_of(&len_pair),
                                format!("prefix length {} is longer than the address", len_pair.as_str()),
                            )
                            .label(format!("at most {max}"))
                            .help(format!(
                                "an {} prefix is 0 to {max} bits long",
                                if v4 { "IPv4" } else { "IPv6" }
                            )),
                        );
                        0
                    }
                };
                if v4 {
                    ValueKind::Ipv4Prefix(self.ipv4(addr.as_str(), addr_span), len)
                } else {
                    ValueKind::Ipv6Prefix(self.ipv6(addr.as_str(), addr_span), len)
                }
            }
            r => unreachable!("value {r:?}"),
        };
        Value { kind, span }
    }

    fn int(&mut self, text: &str, span: Span) -> Int {
        let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => (hex, 16),
            None => (text, 10),
        };
        // Leading zeros beyond 16 digits carry no meaning; keep the width
        // (for `fmt`) within what a u64 can show.
        let hex_digits = if radix == 16 { digits.len().min(16) as u8 } else { 0 };
        match u64::from_str_radix(digits, radix) {
            Ok(value) => Int { value, hex_digits },
            Err(_) => {
                self.diagnostics.push(
                    Diagnostic::new(Code::BadLiteral, span, format!("the number {text} is too large"))
                        .label("does not fit in 64 bits")
                        .help("numbers in a spec are at most 18446744073709551615 (0xffffffffffffffff)"),
                );
                Int { value: 0, hex_digits }
            }
        }
    }

    fn ipv4(&mut self, text: &str, span: Span) -> Ipv4Addr {
        let mut octets = [0u8; 4];
        for (i, part) in text.split('.').enumerate() {
            let start = span.start + text.split('.').take(i).map(|p| p.len() + 1).sum::<usize>();
            // `010` is 10 to some tools and 8 (octal) to others: say which.
            if part.len() > 1 && part.starts_with('0') {
                let decimal = part.trim_start_matches('0');
                let decimal = if decimal.is_empty() { "0" } else { decimal };
                self.diagnostics.push(
                    Diagnostic::new(Code::BadLiteral, Span::new(start, start + part.len()), format!("`{text}` has an octet with a leading zero"))
                        .label("ambiguous: decimal or octal?")
                        .help(format!("write the octet without leading zeros (`{decimal}`); tools disagree on whether `{part}` is decimal or octal")),
                );
                return Ipv4Addr::UNSPECIFIED;
            }
            match part.parse::<u8>() {
                Ok(n) => octets[i] = n,
                Err(_) => {
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::BadLiteral,
                            Span::new(start, start + part.len()),
                            format!("`{text}` is not an IPv4 address"),
                        )
                        .label(format!("octet {part} is above 255"))
                        .help("each of the four parts of an IPv4 address is 0 to 255"),
                    );
                    return Ipv4Addr::UNSPECIFIED;
                }
            }
        }
        Ipv4Addr::from(octets)
    }

    fn ipv6(&mut self, text: &str, span: Span) -> Ipv6Addr {
        text.parse().unwrap_or_else(|_| {
            // Five to seven short groups without `::` is a MAC with a typo,
            // not an IPv6 address.
            let mac_like = !text.contains("::") && (5..=7).contains(&text.split(':').count()) && text.split(':').all(|g| (1..=3).contains(&g.len()));
            let d = if mac_like {
                Diagnostic::new(Code::BadLiteral, span, format!("`{text}` is not a MAC address"))
                    .label("not six pairs of hex digits")
                    .help("write a MAC address as six pairs of hex digits: `02:00:00:00:00:01`")
            } else {
                Diagnostic::new(Code::BadLiteral, span, format!("`{text}` is not an IPv6 address"))
                    .label("not a valid IPv6 address")
                    .help("write eight groups of up to four hex digits, `::` at most once for a run of zeros: `fe80::1`, `2001:db8::10`")
            };
            self.diagnostics.push(d);
            Ipv6Addr::UNSPECIFIED
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_told_apart() {
        let spec =
            parse("route (02:00:00:00:00:01, fe80::1, 10.0.0.1, 10.0.0.0/8, 2001:db8::/32, 0x10, 7) -> x\n")
                .unwrap();
        let Item::Route(route) = &spec.items[0] else { panic!("not a route") };
        let RouteKey::Value(Value { kind: ValueKind::Tuple(parts), .. }) = &route.key else {
            panic!("not a tuple")
        };
        let kinds: Vec<&str> = parts.iter().map(|v| v.kind.describe()).collect();
        assert_eq!(
            kinds,
            [
                "a MAC address",
                "an IPv6 address",
                "an IPv4 address",
                "an IPv4 prefix",
                "an IPv6 prefix",
                "an integer",
                "an integer"
            ]
        );
    }

    #[test]
    fn keywords_need_a_boundary() {
        let errors = parse("deviceuplink { ifname = \"eth0\" }\n").unwrap_err();
        assert_eq!(errors[0].code, Code::Syntax);
    }

    #[test]
    fn every_broken_item_is_reported() {
        let src = "route 1 -> \nroute 2 -> b\ndevice { }\nroute 3 -> c\n";
        let errors = parse(src).unwrap_err();
        let lines: Vec<usize> =
            errors.iter().map(|d| src[..d.primary.span.start].matches('\n').count() + 1).collect();
        assert_eq!(lines, [1, 3]);
    }

    /// The text under a diagnostic's primary span.
    fn spanned<'a>(src: &'a str, d: &Diagnostic) -> &'a str {
        &src[d.primary.span.start..d.primary.span.end]
    }

    #[test]
    fn a_syntax_error_points_where_the_text_stops_making_sense() {
        // Not at `200`, which is a fine key, but at `=>`.
        let src = "route 200 => blue\n";
        let errors = parse(src).unwrap_err();
        assert_eq!(errors[0].message, "expected `->`, found `=`");
        assert_eq!(errors[0].primary.span.start, 10);
        // A YAML habit: the `:` is the problem, not `ifname`.
        let src = "device uplink { ifname: \"eth0\" }\n";
        let errors = parse(src).unwrap_err();
        assert_eq!(errors[0].message, "expected `=`, found `:`");
        assert_eq!(spanned(src, &errors[0]), ":");
        // Something after a complete item.
        let errors = parse("route 1 -> a route 2 -> b\n").unwrap_err();
        assert_eq!(errors[0].message, "expected the end of the line, found `route`");
        // White space and comments are never "expected".
        let errors = parse("ingress { on = [a b] }\n").unwrap_err();
        assert_eq!(errors[0].message, "expected `(`, `,` or `]`, found `b`");
        let errors = parse("table { max_entries = }\n").unwrap_err();
        assert_eq!(errors[0].message, "expected a value, found `}`");
        // Characters that show as nothing are named by their code point.
        let errors = parse("route 1 -> a\n\u{feff}route 2 -> b\n").unwrap_err();
        assert!(
            errors[0]
                .message
                .ends_with("found U+FEFF, a byte order mark (allowed only at the very start of the file)"),
            "{}",
            errors[0].message
        );
        let errors = parse("route 1 ->\u{200b} a\n").unwrap_err();
        assert!(errors[0].message.ends_with("found the invisible character U+200B"), "{}", errors[0].message);
    }

    #[test]
    fn an_unclosed_string_is_named() {
        let src = "device uplink { ifname = \"eth0 }\nroute 1 -> a\n";
        let errors = parse(src).unwrap_err();
        assert_eq!(errors[0].message, "this string is not closed");
        assert_eq!(errors[0].primary.span.start, src.find('"').unwrap());
    }

    #[test]
    fn a_quote_in_a_comment_is_not_a_string() {
        for src in [
            "route 1 -> // the \"red one\n",
            "route 1 -> /* \"x */\n",
            "device a { ifname = \"x\" } /* \" */ y\n",
        ] {
            let errors = parse(src).unwrap_err();
            assert_ne!(errors[0].message, "this string is not closed", "{src:?}");
        }
        assert_eq!(open_string("a = \"x\" /* \" */ b = \"y"), Some(20));
    }

    #[test]
    fn a_non_ascii_letter_in_a_name_is_named() {
        let src = "device grün { ifname = \"g\" }\n";
        let errors = parse(src).unwrap_err();
        assert_eq!(errors[0].message, "`ü` cannot be part of a name");
        assert_eq!(spanned(src, &errors[0]), "ü");
    }

    #[test]
    fn malformed_addresses_are_literal_errors() {
        // A group of five hex digits is a bad IPv6 address, not a syntax error.
        let src = "route 2001:db8::12345 -> a\n";
        let errors = parse(src).unwrap_err();
        assert_eq!((errors[0].code, spanned(src, &errors[0])), (Code::BadLiteral, "2001:db8::12345"));
        // A MAC with a digit too many or a group too few reads as a MAC typo.
        for mac in ["02:00:00:00:00:001", "02:00:00:00:01"] {
            let src = format!("route {mac} -> a\n");
            let errors = parse(&src).unwrap_err();
            assert_eq!(errors[0].code, Code::BadLiteral);
            assert_eq!(errors[0].message, format!("`{mac}` is not a MAC address"));
        }
        // Embedded IPv4 and `::` forms still parse.
        assert!(parse("route (::ffff:10.0.0.1, ::, fe80::1) -> a\n").is_ok());
    }

    #[test]
    fn bad_literals_are_located() {
        let src = "route 10.0.300.1 -> a\nroute 1:2::3::4 -> b\n";
        let errors = parse(src).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(&src[errors[0].primary.span.start..errors[0].primary.span.end], "300");
        assert_eq!(&src[errors[1].primary.span.start..errors[1].primary.span.end], "1:2::3::4");
    }
}
