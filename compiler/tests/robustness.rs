//! Robustness of the front end, as properties over many inputs:
//!
//! - `check_source` and `fmt::format_source` never panic, whatever the
//!   text (arbitrary strings, arbitrary bytes read as lossy UTF-8, token
//!   soup, mutated corpus files, generated specs);
//! - every diagnostic's spans (primary and secondary) lie inside the input
//!   and on `char` boundaries;
//! - for every input that parses, the formatted text parses to an equal AST
//!   (spans never take part in equality) and formatting it again gives the
//!   same text.
//!
//! Case counts are fixed (see `CASES`) so that `cargo test` stays fast; a
//! failure is a real bug: fix it and add the input to the regressions at the
//! end of this file. The fuzz targets in `fuzz/` check the same properties
//! for longer (docs/fuzzing.md).

use devmapc::{check_source, fmt, parse, Diagnostic};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use std::path::Path;

/// Cases per property. Each case parses, checks and formats an input of at
/// most a few kilobytes, so a property runs in well under a second in a
/// debug build.
const CASES: u32 = 512;

fn config() -> Config {
    // `PROPTEST_CASES=100000 cargo test --release --test robustness` runs a
    // longer search. Failures become regression tests by hand (end of this
    // file); nothing is persisted next to the sources.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(CASES);
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ------------------------------------------------------------ the properties

/// Every span of every diagnostic lies inside `src`, on char boundaries.
fn spans_ok(src: &str, diagnostics: &[Diagnostic]) -> Result<(), TestCaseError> {
    for d in diagnostics {
        for (what, span) in std::iter::once(("primary", d.primary.span))
            .chain(d.secondary.iter().map(|l| ("secondary", l.span)))
        {
            prop_assert!(
                span.start <= span.end && span.end <= src.len(),
                "{what} span {span:?} of {d:?} is outside the input ({} bytes): {src:?}",
                src.len()
            );
            prop_assert!(
                src.is_char_boundary(span.start) && src.is_char_boundary(span.end),
                "{what} span {span:?} of {d:?} is not on char boundaries: {src:?}"
            );
        }
    }
    Ok(())
}

/// The whole contract for one input: no panic, spans inside the input, and
/// (when it parses) a formatting that round-trips and is idempotent.
fn holds(src: &str) -> Result<(), TestCaseError> {
    let checked = check_source(src);
    spans_ok(src, &checked.diagnostics)?;
    prop_assert!(
        checked.model.is_none() || checked.diagnostics.iter().all(|d| !d.is_error()),
        "a model despite errors: {src:?}"
    );
    match parse(src) {
        Ok(spec) => {
            let formatted = fmt::format(src, &spec);
            let again = match parse(&formatted) {
                Ok(again) => again,
                Err(errors) => {
                    return Err(TestCaseError::fail(format!("the formatted text does not parse: {errors:?}\ninput: {src:?}\nformatted: {formatted:?}")));
                }
            };
            prop_assert_eq!(
                &again,
                &spec,
                "formatting changed the AST\ninput: {:?}\nformatted: {:?}",
                src,
                formatted
            );
            let twice = fmt::format(&formatted, &again);
            prop_assert_eq!(&twice, &formatted, "formatting is not idempotent\ninput: {:?}", src);
            let direct = fmt::format_source(src).ok();
            prop_assert_eq!(direct.as_ref(), Some(&formatted));
        }
        Err(errors) => {
            prop_assert!(!errors.is_empty(), "a parse error without diagnostics: {src:?}");
            spans_ok(src, &errors)?;
            prop_assert!(fmt::format_source(src).is_err());
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ inputs

/// Specs of our own, so that the mutation tests have material even when
/// examples/ and tests/specs/ are empty. Together they use every item,
/// every kind of key and literal, and comments in awkward places.
const EMBEDDED: &[&str] = &[
    r#"// vlan-switch: every item of the language.
table {
    key         = vlan.id   // the outer tag
    max_entries = 1024
    on_miss     = drop
    numa_node   = 0, access = read_only
    counters    = off
}

device uplink { ifname = "eth0" }
device red    { ifname = "veth-red", egress = retag(10) }
device blue   { ifindex = 12, egress = own_mac }

/* a block comment
   over two lines */
egress retag(vid: u16) {
    vlan.id = vid
}

egress own_mac {
    eth.src = egress.mac
    if ipv4.ttl <= 1 || !has(ipv4) && (vlan.id == 0x10 || vlan.pcp > 3) { drop }
    else if has(ipv6) { ipv6.hop_limit -= 1 } else {
        vlan.push(7), vlan.pop()
        pass
    }
    ipv4.ttl -= 1
}

group flood { red, blue
    uplink }

ingress { on = [uplink, red], mode = native }

route 100 -> red
route 200 -> blue   // trailing
route 4095 -> flood
route default -> uplink

test "vlan 100 leaves red retagged as 10" {
    send uplink eth(dst = 02:00:00:00:00:02, type = 0x8100) / vlan(id = 100, pcp = 1) / ipv4(dst = 10.0.0.2, ttl = 64) / udp(dport = 53) / payload("hi")
    expect red vlan(id = 10)
}

test "flood" { send uplink eth() / vlan(id = 4095), expect red, blue eth() }
test "unknown vlan goes up the stack" {
    send red eth() / vlan(id = 7) / ipv6(src = fe80::1, hop_limit = 3) / tcp(sport = 1)
    expect pass
}
"#,
    r#"table { key = lpm(ipv6.dst), max_entries = 16 }
device a { ifname = "a0" }
device b { ifname = "b0", egress = mark(02:00:00:00:00:01, 10.1.2.3, ::ffff:10.0.0.1) }
egress mark(m: mac, v4: ipv4, v6: ipv6) {
    eth.dst = m
    if ipv4.dst == v4 || ipv6.src != v6 { drop }
}
ingress { on = a }
route ::/0 -> a
route 2001:db8::/32 -> b
route fe80::1 -> b
route 2001:db8:0:0:0:0:0:1/128 -> a
"#,
    r#"table { key = lpm(ipv4.dst) }
device a { ifname = "a0" }
device b { ifindex = 3 }
ingress { on = [a, b], mode = auto }
route 0.0.0.0/0 -> a
route 10.0.0.0/8 -> b
route 10.1.0.0/16 -> a
route 192.168.1.1 -> b
route 10.0.0.1/8 -> a
"#,
    r#"table {
    key = (vlan.id, eth.dst, ipv4.src)
    max_entries = 2
}
device a { ifname = "a0" }
device b { ifname = "b0" }
group g { a, b }
ingress { on = [a], mode = generic }
route (1, 02:00:00:00:00:01, 10.0.0.1) -> a
route (2, 0a:0B:0c:0d:0e:0f, 10.0.0.2) -> g
route (3, 02:00:00:00:00:01, 10.0.0.3) -> b
route (1, 02:00:00:00:00:01, 10.0.0.1) -> b
"#,
    r#"table { key = ingress.port }
device a { ifname = "a0" }
device b { ifname = "b0" }
ingress { on = [a, b] }
route a -> b
route b -> a
"#,
    r#"table { key = l4.dport }
device web { ifname = "web0" }
ingress { on = [web] }
route 80 -> web
route 443 -> web
route 65536 -> web
"#,
];

/// The tokens the mutators and the token soup insert.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "->",
    "/",
    "=",
    "-=",
    "==",
    "!=",
    "<=",
    ">=",
    "<",
    ">",
    "!",
    "&&",
    "||",
    ":",
    "::",
    ".",
    "\"",
    "/*",
    "*/",
    "//",
    "\n",
    "\r",
    "\r\n",
    "\t",
    " ",
    "0x",
    "0",
    "1",
    "4095",
    "4096",
    "65536",
    "18446744073709551616",
    "02:00:00:00:00:01",
    "10.0.0.1",
    "10.0.0.0/8",
    "256.1.1.1",
    "::",
    "::/0",
    "fe80::1",
    "2001:db8::/32",
    "1::2::3",
    "/129",
    "/33",
    "route",
    "table",
    "device",
    "egress",
    "group",
    "ingress",
    "test",
    "default",
    "if",
    "else",
    "has",
    "drop",
    "pass",
    "send",
    "expect",
    "key",
    "max_entries",
    "on_miss",
    "ifname",
    "ifindex",
    "on",
    "mode",
    "lpm",
    "vlan.id",
    "eth.dst",
    "ipv4.dst",
    "ipv6.dst",
    "ipv4.ttl",
    "egress.mac",
    "vlan.push",
    "vlan.pop",
    "eth",
    "vlan",
    "ipv4",
    "ipv6",
    "udp",
    "tcp",
    "payload",
    "a",
    "b",
    "x",
    "é",
    "\u{0}",
    "\u{feff}",
    "𝕏",
];

/// The `.devmap` files of the repository (examples and test specs), read
/// once at test time, plus the embedded specs.
fn corpus() -> &'static [String] {
    static CORPUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(read_corpus)
}

fn read_corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["examples", "tests/specs"] {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    let mut texts: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter(|t| t.len() <= 64 * 1024)
        .collect();
    texts.extend(EMBEDDED.iter().map(|s| s.to_string()));
    texts
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "devmap") {
            out.push(path);
        }
    }
}

/// One edit of a file's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index, usize),
    Insert(Index, &'static str),
    InsertByte(Index, u8),
    Duplicate(Index, usize),
    Swap(Index, Index, usize),
    Replace(Index, usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let token = prop::sample::select(TOKENS);
    prop_oneof![
        (any::<Index>(), 1..24usize).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<Index>(), token.clone()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::InsertByte(at, b)),
        (any::<Index>(), 1..64usize).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        (any::<Index>(), any::<Index>(), 1..32usize).prop_map(|(a, b, len)| Mutation::Swap(a, b, len)),
        (any::<Index>(), 1..8usize, token).prop_map(|(at, len, t)| Mutation::Replace(at, len, t)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    let at = |i: &Index| if n == 0 { 0 } else { i.index(n + 1) };
    match m {
        Mutation::Delete(i, len) => {
            let s = at(i).min(n);
            bytes.drain(s..(s + len).min(n));
        }
        Mutation::Insert(i, t) => {
            let s = at(i);
            bytes.splice(s..s, t.bytes());
        }
        Mutation::InsertByte(i, b) => bytes.insert(at(i), *b),
        Mutation::Duplicate(i, len) => {
            let s = at(i).min(n);
            let piece: Vec<u8> = bytes[s..(s + len).min(n)].to_vec();
            bytes.splice(s..s, piece);
        }
        Mutation::Swap(a, b, len) => {
            let (mut a, mut b) = (at(a).min(n), at(b).min(n));
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            let len = (*len).min(b - a).min(n - b);
            if len > 0 {
                let (left, right) = bytes.split_at_mut(b);
                left[a..a + len].swap_with_slice(&mut right[..len]);
            }
        }
        Mutation::Replace(i, len, t) => {
            let s = at(i).min(n);
            bytes.splice(s..(s + len).min(n), t.bytes());
        }
    }
}

/// Language tokens in random order, with random separators.
fn token_soup() -> impl Strategy<Value = String> {
    let sep = prop::sample::select(&[" ", " ", " ", "\n", "", ", ", "\n\n", " // c\n", " /* c */ "][..]);
    prop::collection::vec((prop::sample::select(TOKENS), sep), 0..80)
        .prop_map(|parts| parts.into_iter().flat_map(|(t, s)| [t, s]).collect())
}

// --------------------------------------------- generated (mostly valid) specs
//
// A generator of specs that follow the grammar, so that the formatter's
// round trip is exercised far more often than random text would. Values,
// spacing and comments are random; some literals are deliberately out of
// range (octets above 255, prefixes too long) to reach the literal errors.

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9_]{0,5}",
        1 => "_[A-Za-z0-9_]{0,3}",
        1 => prop::sample::select(&["a", "b", "red", "uplink", "flood", "retag", "vid", "drop", "else", "if", "has", "default", "send", "expect", "table", "vlan", "int", "devmapc_x", "__x"][..]).prop_map(String::from),
        1 => "[a-z]{60,70}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&["vlan.id", "vlan.pcp", "eth.dst", "eth.src", "ipv4.dst", "ipv4.src", "ipv4.ttl", "ipv6.dst", "ipv6.hop_limit", "ip.proto", "l4.dport", "egress.mac", "ingress.port", "vlan.push", "vlan.pop"][..]).prop_map(String::from),
        2 => name(),
        1 => prop::collection::vec(name(), 1..4).prop_map(|v| v.join(".")),
    ]
}

fn hex_case(s: String, upper: bool) -> String {
    if upper {
        s.to_uppercase()
    } else {
        s
    }
}

fn ipv6_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
        (any::<[u16; 8]>(), any::<bool>()).prop_map(|(g, upper)| hex_case(
            g.iter().map(|x| format!("{x:x}")).collect::<Vec<_>>().join(":"),
            upper
        )),
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| format!("{a:x}::{b:x}")),
        any::<[u8; 4]>().prop_map(|o| format!("::ffff:{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        Just("::".to_string()),
        Just("1::2::3".to_string()),
    ]
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..5000).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => (any::<u64>(), any::<bool>()).prop_map(|(n, upper)| format!("0x{}", hex_case(format!("{n:x}"), upper))),
        1 => Just("18446744073709551616".to_string()),
        1 => Just("007".to_string()),
        1 => (any::<[u8; 6]>(), any::<bool>()).prop_map(|(m, upper)| hex_case(m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"), upper)),
        2 => prop::array::uniform4(0u16..300).prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        2 => (prop::array::uniform4(0u16..260), 0u8..40).prop_map(|(o, l)| format!("{}.{}.{}.{}/{l}", o[0], o[1], o[2], o[3])),
        2 => ipv6_text(),
        2 => (ipv6_text(), 0u16..140).prop_map(|(a, l)| format!("{a}/{l}")),
        1 => "\"[ -!#-~é]{0,18}\"",
    ]
}

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![3 => literal(), 2 => path()];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|v| format!("({})", v.join(", "))),
            (prop::collection::vec(inner.clone(), 0..4), any::<bool>()).prop_map(|(v, trailing)| format!(
                "[{}{}]",
                v.join(", "),
                if trailing && !v.is_empty() { "," } else { "" }
            )),
            (path(), prop::collection::vec(inner, 0..3)).prop_map(|(p, v)| format!("{p}({})", v.join(", "))),
        ]
    })
}

/// What separates members of a `{ }` block.
fn sep() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["\n", "\n", ", ", ",", "\n\n", " // note\n", "\r\n", " /* c */\n", ",\n"][..])
}

/// Space between two tokens on one line.
fn gap() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&[" ", " ", " ", " ", "  ", "\t", " /* c */ ", ""][..])
}

fn block_of(members: Vec<(String, &'static str)>, open: &'static str) -> String {
    let mut out = format!("{{{open}");
    for (m, s) in members {
        out.push_str(&m);
        out.push_str(s);
    }
    out.push('}');
    out
}

fn settings() -> impl Strategy<Value = String> {
    let setting = (
        prop::sample::select(
            &[
                "key",
                "max_entries",
                "on_miss",
                "ifname",
                "ifindex",
                "egress",
                "on",
                "mode",
                "numa_node",
                "access",
                "counters",
                "typo",
            ][..],
        ),
        gap(),
        value(),
    )
        .prop_map(|(n, g, v)| format!("{n}{g}={g}{v}"));
    (prop::collection::vec((setting, sep()), 0..5), prop::sample::select(&["", " ", "\n", "\n\n"][..]))
        .prop_map(|(m, open)| block_of(m, open))
}

fn cond() -> impl Strategy<Value = String> {
    let op = prop::sample::select(&["==", "!=", "<", "<=", ">", ">="][..]);
    let operand = prop_oneof![2 => path(), 1 => literal()];
    let leaf = prop_oneof![
        1 => name().prop_map(|n| format!("has({n})")),
        3 => (operand.clone(), op, operand).prop_map(|(l, o, r)| format!("{l} {o} {r}")),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| format!("!({c})")),
            inner.clone().prop_map(|c| format!("!{c}")),
            inner.clone().prop_map(|c| format!("({c})")),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| v.join(" && ")),
            prop::collection::vec(inner, 2..4).prop_map(|v| v.join(" ||\n ")),
        ]
    })
}

fn stmt() -> impl Strategy<Value = String> {
    let simple = prop_oneof![
        (path(), value()).prop_map(|(p, v)| format!("{p} = {v}")),
        (path(), value()).prop_map(|(p, v)| format!("{p} -= {v}")),
        (path(), prop::collection::vec(value(), 0..2)).prop_map(|(p, v)| format!("{p}({})", v.join(", "))),
        Just("drop".to_string()),
        Just("pass".to_string()),
    ];
    simple.prop_recursive(3, 12, 3, |inner| {
        let block = (prop::collection::vec((inner, sep()), 0..3), prop::sample::select(&["", " ", "\n"][..]))
            .prop_map(|(m, open)| block_of(m, open))
            .boxed();
        (
            cond(),
            block.clone(),
            prop::option::of((
                prop::sample::select(&[" ", "\n", " // c\n"][..]),
                prop_oneof![block.clone().prop_map(|b| (b, false)), block.prop_map(|b| (b, true))],
            )),
        )
            .prop_map(|(c, then, otherwise)| match otherwise {
                None => format!("if {c} {then}"),
                Some((ws, (b, false))) => format!("if {c} {then}{ws}else {b}"),
                Some((ws, (b, true))) => format!("if {c} {then}{ws}else if has(vlan) {b}"),
            })
    })
}

fn packet() -> impl Strategy<Value = String> {
    let arg = prop_oneof![
        3 => (prop::sample::select(&["dst", "src", "id", "pcp", "ttl", "type", "dport", "sport", "hop_limit", "proto", "nope"][..]), value()).prop_map(|(f, v)| format!("{f} = {v}")),
        1 => value(),
    ];
    let layer = (
        prop::sample::select(&["eth", "vlan", "ipv4", "ipv6", "udp", "tcp", "payload", "bogus"][..]),
        prop::collection::vec(arg, 0..3),
    )
        .prop_map(|(l, a)| format!("{l}({})", a.join(", ")));
    prop::collection::vec(layer, 1..5).prop_map(|v| v.join(" / "))
}

fn test_stmt() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (name(), packet()).prop_map(|(d, p)| format!("send {d} {p}")),
        1 => Just("expect drop".to_string()),
        1 => Just("expect pass".to_string()),
        2 => (prop::collection::vec(name(), 1..3), prop::option::of(packet())).prop_map(|(d, p)| match p {
            Some(p) => format!("expect {} {p}", d.join(", ")),
            None => format!("expect {}", d.join(", ")),
        }),
    ]
}

fn item() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => settings().prop_map(|s| format!("table {s}")),
        3 => (name(), settings()).prop_map(|(n, s)| format!("device {n} {s}")),
        1 => settings().prop_map(|s| format!("ingress {s}")),
        1 => (name(), prop::collection::vec((name(), sep()), 0..4)).prop_map(|(n, m)| format!("group {n} {}", block_of(m, " "))),
        4 => (prop_oneof![4 => value(), 1 => Just("default".to_string())], gap(), name()).prop_map(|(k, g, t)| format!("route {k}{g}->{g}{t}")),
        2 => (name(), prop::option::of(prop::collection::vec((name(), prop::sample::select(&["u8", "u16", "u32", "mac", "ipv4", "ipv6", "u64"][..])), 0..3)), prop::collection::vec((stmt(), sep()), 0..4))
            .prop_map(|(n, params, body)| {
                let params = params.map(|p| format!("({})", p.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>().join(", "))).unwrap_or_default();
                format!("egress {n}{params} {}", block_of(body, "\n"))
            }),
        1 => ("[ -!#-~]{0,12}", prop::collection::vec((test_stmt(), sep()), 0..4)).prop_map(|(n, body)| format!("test \"{n}\" {}", block_of(body, "\n"))),
    ]
}

/// Something between two items: newlines, and maybe comments.
fn between() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "\n",
            "\n",
            "\n\n",
            "\n// a comment\n",
            "  // trailing\n",
            "\n/* block */\n\n",
            "\r\n",
            "\n\n\n",
            " /* a\n b */\n",
        ][..],
    )
}

fn spec() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["", "// head\n", "\n\n", "/* head */\n"][..]),
        prop::collection::vec((item(), between()), 0..10),
    )
        .prop_map(|(head, items)| {
            items.into_iter().fold(head.to_string(), |mut out, (i, b)| {
                out.push_str(&i);
                out.push_str(b);
                out
            })
        })
}

// ---------------------------------------------------------------- the tests

proptest! {
    #![proptest_config(config())]

    /// (a) Arbitrary Unicode text.
    #[test]
    fn arbitrary_strings(src in any::<String>()) {
        holds(&src)?;
    }

    /// (a) Arbitrary bytes, read as lossy UTF-8.
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        holds(&String::from_utf8_lossy(&bytes))?;
    }

    /// (a) Language tokens in random order.
    #[test]
    fn token_soups(src in token_soup()) {
        holds(&src)?;
    }

    /// (b) Corpus files, mutated byte-wise and with inserted tokens.
    #[test]
    fn mutated_corpus(file in any::<Index>(), mutations in prop::collection::vec(mutation(), 1..8)) {
        let corpus = corpus();
        let mut bytes = corpus[file.index(corpus.len())].as_bytes().to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        holds(&String::from_utf8_lossy(&bytes))?;
    }

    /// (c) Generated specs that follow the grammar: the formatter's round
    /// trip and idempotence, on inputs that mostly parse.
    #[test]
    fn generated_specs(src in spec()) {
        holds(&src)?;
    }
}

/// (c) on the corpus as it is: every file that parses round-trips.
#[test]
fn corpus_round_trips() {
    let corpus = corpus();
    assert!(corpus.len() >= EMBEDDED.len());
    for src in corpus {
        if let Err(e) = holds(src) {
            panic!("{e}");
        }
    }
    for src in EMBEDDED {
        assert!(parse(src).is_ok(), "an embedded spec does not parse: {:?}", parse(src).unwrap_err());
    }
}

/// The generator is worth its time only if most of what it writes parses.
#[test]
fn the_generator_mostly_writes_valid_syntax() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = spec();
    let total = 200;
    let parsed =
        (0..total).filter(|_| parse(&strategy.new_tree(&mut runner).unwrap().current()).is_ok()).count();
    assert!(parsed * 3 >= total, "only {parsed} of {total} generated specs parse");
}

// -------------------------------------------------------------- regressions
//
// Inputs the properties above (or the fuzz targets) once failed on.

fn regression(src: &str) {
    if let Err(e) = holds(src) {
        panic!("{e}");
    }
}

/// `::/0` has 128 host bits: the host-bit mask overflowed a shift.
#[test]
fn ipv6_default_prefix_does_not_overflow() {
    let src = "table { key = lpm(ipv6.dst) }\ndevice a { ifname = \"a0\" }\ningress { on = [a] }\nroute ::/0 -> a\nroute ::1/0 -> a\n";
    regression(src);
    let checked = check_source(src);
    let codes: Vec<&str> = checked.diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["devmap::E029"], "{:?}", checked.diagnostics);
}

/// A comment after the `}` that closes a block belongs to the `}`: put on
/// the last member's line, the next run moved it again.
#[test]
fn a_comment_after_a_closing_brace_stays_with_it() {
    regression("egress a {\nif has(a) {vlan.id = (::)\n}, }  // trailing\n");
    regression("test \"\" {\nexpect a, }  // trailing\n");
    regression("table { key = vlan.id, max_entries = 5 } // c\n");
    let out = fmt::format_source("test \"t\" {\nsend a eth() }  // trailing\n").unwrap();
    assert!(out.ends_with("}  // trailing\n"), "{out}");
}

/// pest counts the comment after `expect a` (a rule that ends in an
/// optional part) into its span; the comment still trails the line.
#[test]
fn a_comment_after_an_optional_part_trails_its_line() {
    let src = "test \"t\" {\n    send a eth() / ipv4()  // one\n    expect a               // two\n}\n";
    regression(src);
    assert_eq!(fmt::format_source(src).unwrap(), src);
    let src = "egress e {\n    if has(vlan) {\n        drop\n    }  // no else\n    pass\n}\n";
    regression(src);
    assert_eq!(fmt::format_source(src).unwrap(), src);
}

/// A lone `\r` ends a `//` comment for the grammar, and what follows on the
/// line is code; the formatter took it all for the comment.
#[test]
fn a_lone_carriage_return_ends_a_line_comment() {
    regression("table { key = vlan.id // c\r, max_entries = 5 }\n");
    regression("route 1 -> a // c\r\r\nroute 2 -> b\n");
}
