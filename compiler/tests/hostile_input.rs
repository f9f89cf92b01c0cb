//! Hostile input to the compiler: nesting far beyond what any spec needs,
//! bytes that are not text, a byte order mark, and many diagnostics on very
//! long lines.
//!
//! Every stage recurses once per level of nesting, so a spec nests at most
//! `MAX_NESTING` levels (E032, found by a scan before the parser runs).
//! These tests run the whole front end (parse, check, fmt, lower, render,
//! and dropping the trees) at the limit on a thread with a 2 MiB stack, the
//! smallest a caller is likely to give it (a test thread's), and show that
//! inputs nested 100,000 to 1,000,000 deep get a located E032 instead of
//! overflowing the stack.

use devmapc::parse::MAX_NESTING;
use devmapc::{check_source, Code};

const HEAD: &str =
    "table { key = vlan.id }\ndevice a { ifname = \"a\", egress = e }\ningress { on = [a] }\nroute 1 -> a\n";

/// Runs `f` on a thread with a 2 MiB stack; a stack overflow aborts the
/// whole test binary, which fails the run.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn a thread")
        .join()
        .expect("the thread did not panic")
}

/// Every stage on `src`: what `check` reported, and (for a spec without
/// errors) the formatted text and the C, all dropped on the small stack.
fn whole_pipeline(src: String) -> Vec<Code> {
    on_small_stack(move || {
        let checked = check_source(&src);
        if let Ok(spec) = devmapc::parse(&src) {
            let formatted = devmapc::fmt::format(&src, &spec);
            assert_eq!(devmapc::parse(&formatted).expect("the formatted text parses"), spec);
        }
        if let Some(model) = &checked.model {
            let ir = devmapc::lower::lower(model, "deep.devmap", &src);
            let c = devmapc::render::render(&ir);
            assert!(c.contains("devmapc_ingress"));
            let _ = (ir.code_hash(), ir.data_hash());
        }
        checked.diagnostics.iter().map(|d| d.code).collect()
    })
}

/// `depth` levels of each kind of nesting the grammar has, as a spec that
/// is valid at any depth within the limit. Each counts the egress block (or
/// the setting's braces) as its first level.
fn nested(kind: &str, depth: usize) -> String {
    let inner = depth - 1;
    let body = match kind {
        // `if` inside `if`: each block one level.
        "if" => {
            format!("egress e {{\n{}drop\n{}}}\n", "if vlan.id == 1 {\n".repeat(inner), "}\n".repeat(inner))
        }
        // An `else if` chain: each branch one level, the last block one more.
        "else-if" => {
            let branches: String =
                (1..inner).map(|i| format!(" else if vlan.id == {i} {{ drop }}")).collect();
            format!("egress e {{\nif vlan.id == 0 {{ drop }}{branches}\n}}\n")
        }
        // Parenthesised conditions.
        "parens" => {
            format!("egress e {{\nif {}vlan.id == 1{} {{ drop }}\n}}\n", "(".repeat(inner), ")".repeat(inner))
        }
        // `!(` nested: one negation per level.
        "not-parens" => format!(
            "egress e {{\nif {}vlan.id == 1{} {{ drop }}\n}}\n",
            "!(".repeat(inner),
            ")".repeat(inner)
        ),
        // `!( ... )` alternating with `&&` and `||`: the deepest condition
        // tree a level can make (three nodes each), the most stack-hungry
        // input for the checker and the formatter.
        "mixed" => {
            let cond = (0..inner).fold("vlan.id == 1".to_string(), |c, i| {
                format!("vlan.id == {i} {} !({c})", if i % 2 == 1 { "&&" } else { "||" })
            });
            format!("egress e {{\nif {cond} {{ drop }}\n}}\n")
        }
        _ => unreachable!("{kind}"),
    };
    format!("{HEAD}{body}")
}

const KINDS: [&str; 5] = ["if", "else-if", "parens", "not-parens", "mixed"];

#[test]
fn the_limit_is_reached_safely_by_every_kind_of_nesting() {
    for kind in KINDS {
        let codes = whole_pipeline(nested(kind, MAX_NESTING));
        assert!(codes.is_empty(), "{kind} nested {MAX_NESTING} deep: {codes:?}");
        let codes = whole_pipeline(nested(kind, MAX_NESTING + 1));
        assert_eq!(codes, [Code::TooDeep], "{kind} nested {} deep", MAX_NESTING + 1);
    }
}

/// Values nest too (lists, tuples, calls): at the limit they are only
/// meaningless, never a crash.
#[test]
fn values_nested_to_the_limit_are_checked_not_crashed() {
    for (open, close) in [("[", "]"), ("(", ")"), ("f(", ")")] {
        let src = format!(
            "{HEAD}egress e {{ drop }}\nroute {}1{} -> a\n",
            open.repeat(MAX_NESTING),
            close.repeat(MAX_NESTING)
        );
        let codes = whole_pipeline(src);
        assert!(!codes.is_empty() && !codes.contains(&Code::TooDeep), "{open}: {codes:?}");
    }
}

/// The E032 points at the first bracket (or `if` of an `else if`) beyond
/// the limit, however deep the input goes.
#[test]
fn far_beyond_the_limit_is_a_located_error() {
    for n in [100_000, 1_000_000] {
        let cases = [
            (
                "ifs",
                format!(
                    "{HEAD}egress e {{\n{}drop\n{}}}\n",
                    "if vlan.id == 1 {\n".repeat(n),
                    "}\n".repeat(n)
                ),
            ),
            (
                "else-ifs",
                format!(
                    "{HEAD}egress e {{\nif vlan.id == 0 {{ drop }}{}\n}}\n",
                    " else if vlan.id == 1 { drop }".repeat(n)
                ),
            ),
            (
                "parens",
                format!(
                    "{HEAD}egress e {{\nif {}vlan.id == 1{} {{ drop }}\n}}\n",
                    "(".repeat(n),
                    ")".repeat(n)
                ),
            ),
            (
                "lists",
                format!("{HEAD}device b {{ ifname = \"b\", x = {}{} }}\n", "[".repeat(n), "]".repeat(n)),
            ),
            ("calls", format!("{HEAD}route {}1{} -> a\n", "f(".repeat(n), ")".repeat(n))),
            (
                "layers",
                format!(
                    "{HEAD}egress e {{ drop }}\ntest \"t\" {{\nsend a eth(type = {}1{})\nexpect drop\n}}\n",
                    "(".repeat(n),
                    ")".repeat(n)
                ),
            ),
            // Unclosed: the scan does not wait for the partners.
            ("unclosed", format!("{HEAD}route {}", "[".repeat(n))),
        ];
        for (what, src) in cases {
            let diagnostics = on_small_stack(move || {
                let d = check_source(&src).diagnostics;
                d.into_iter()
                    .map(|d| {
                        (
                            d.code,
                            src[d.primary.span.start..d.primary.span.end].to_string(),
                            src[..d.primary.span.start].to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                diagnostics.len(),
                1,
                "{what} x{n}: {:?}",
                diagnostics.iter().map(|d| d.0).collect::<Vec<_>>()
            );
            let (code, text, before) = &diagnostics[0];
            assert_eq!(*code, Code::TooDeep, "{what} x{n}");
            assert!(
                text == "(" || text == "[" || text == "{" || text == "if",
                "{what} x{n}: points at {text:?}"
            );
            // Exactly MAX_NESTING levels are open before it.
            let opened = before.matches(['(', '[', '{']).count() - before.matches([')', ']', '}']).count()
                + before.matches("else if").count();
            assert_eq!(opened, MAX_NESTING, "{what} x{n}");
        }
    }
}

/// Flat repetition is no nesting: a run of 20,000 `!` is one negation or
/// none, and long `&&` / `||` chains, packet layer stacks and comments
/// are lists, not depth.
#[test]
fn long_flat_input_works() {
    // Linear, but every stage runs twice: 20,000 keeps a debug run short.
    let n = 20_000;
    let nots = format!("{HEAD}egress e {{\nif {}(vlan.id == 1) {{ drop }}\n}}\n", "!".repeat(20_000));
    assert_eq!(whole_pipeline(nots.clone()), []);
    let odd = nots.replacen('!', "", 1);
    assert_eq!(whole_pipeline(odd.clone()), []);
    // An even run says the condition itself, an odd one its negation.
    let formatted = devmapc::fmt::format_source(&nots).unwrap();
    assert!(formatted.contains("if vlan.id == 1 {"), "{formatted}");
    let formatted = devmapc::fmt::format_source(&odd).unwrap();
    assert!(formatted.contains("if !(vlan.id == 1) {"), "{formatted}");

    // Long conditions parse, format and check; past 1024 tests a program
    // is too large for one BPF function (E035, before clang would crash).
    let ands = |n| format!("{HEAD}egress e {{\nif {} {{ drop }}\n}}\n", vec!["vlan.id == 1"; n].join(" && "));
    assert_eq!(whole_pipeline(ands(n)), [Code::ProgramTooLarge]);
    assert_eq!(whole_pipeline(ands(1023)), []);
    assert_eq!(whole_pipeline(ands(1024)), [Code::ProgramTooLarge], "1024 tests and the `drop`");
    let ors = format!("{HEAD}egress e {{\nif {} {{ drop }}\n}}\n", vec!["!(vlan.id == 1)"; n].join(" ||\n"));
    assert_eq!(whole_pipeline(ors), [Code::ProgramTooLarge]);
    let comments =
        format!("{HEAD}egress e {{ drop }}\n{}{}", "/* ( [ { */\n".repeat(n), "// ( [ {\n".repeat(n));
    assert_eq!(whole_pipeline(comments), []);
    let strings = format!(
        "{HEAD}egress e {{ drop }}\ngroup g {{ a }}\ndevice b {{ ifname = \"{}\" }}\n",
        "(".repeat(n)
    );
    let codes = whole_pipeline(strings);
    assert!(!codes.contains(&Code::TooDeep), "brackets in a string do not nest: {codes:?}");
    // Many short `else if` chains one after the other are not one long one.
    let chains = format!(
        "{HEAD}egress e {{\n{}}}\n",
        "if vlan.id == 1 { drop } else if vlan.id == 2 { drop }\n".repeat(250)
    );
    assert_eq!(whole_pipeline(chains), []);
    let layers = format!(
        "{HEAD}egress e {{ drop }}\ntest \"t\" {{\nsend a {}\nexpect drop\n}}\n",
        vec!["eth()"; n].join(" / ")
    );
    let codes = whole_pipeline(layers);
    assert!(!codes.contains(&Code::TooDeep), "{codes:?}");
}

/// A spec that is not UTF-8 is an error at its first bad byte, with the
/// line and column of that byte.
#[test]
fn bytes_that_are_not_utf8_are_located() {
    let mut bytes = HEAD.as_bytes().to_vec();
    bytes.extend_from_slice(b"device gr\xfcn { ifname = \"g\" }\n");
    let (text, diagnostic) = devmapc::decode(&bytes).unwrap_err();
    assert_eq!(diagnostic.code, Code::NotUtf8);
    let json = diagnostic.to_json("x.devmap", &text);
    assert_eq!((json["line"].as_u64(), json["column"].as_u64()), (Some(5), Some(10)));
    assert!(diagnostic.primary.text.contains("0xfc"), "{:?}", diagnostic.primary.text);
    assert_eq!(&text[diagnostic.primary.span.start..diagnostic.primary.span.end], "\u{fffd}");
    let (_, checked) = devmapc::check_bytes(&bytes);
    assert!(checked.model.is_none());
    assert_eq!(checked.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::NotUtf8]);
    // A truncated character at the very end, and UTF-8 text, too.
    let (_, d) = devmapc::decode("route 1 -> a // é".as_bytes().split_last().unwrap().1).unwrap_err();
    assert_eq!(d.primary.span.start, "route 1 -> a // ".len());
    assert_eq!(devmapc::decode("// é\n".as_bytes()).ok(), Some("// é\n"));
}

/// "Did you mean" compares an unknown name with every declared one: with
/// thousands of each that is quadratic, so it stops suggesting after a
/// fixed amount of work (the errors are all still reported).
#[test]
fn near_miss_suggestions_are_bounded() {
    let devices: String = (0..1000).map(|i| format!("device dev{i} {{ ifname = \"dev{i}\" }}\n")).collect();
    let routes: String = (0..3000).map(|i| format!("route {} -> dex{}\n", i + 2, i % 1000)).collect();
    let src = format!("table {{ key = vlan.id, max_entries = 4096 }}\n{devices}ingress {{ on = [dev0] }}\nroute 1 -> dev1\n{routes}");
    let diagnostics = on_small_stack(move || check_source(&src).diagnostics);
    let unknown: Vec<_> = diagnostics.iter().filter(|d| d.code == Code::UnknownDevice).collect();
    assert_eq!(unknown.len(), 3000);
    let suggests = |d: &devmapc::Diagnostic| d.help.as_deref().is_some_and(|h| h.starts_with("did you mean"));
    assert!(suggests(unknown[0]), "{:?}", unknown[0].help);
    assert!(!suggests(unknown[2999]), "{:?}", unknown[2999].help);
}

/// The plain rendering (what a failed build.rs build prints) of many
/// diagnostics on a very long line: the first hundred, each with the line
/// clipped around its span (on character boundaries), then a count.
#[test]
fn plain_rendering_of_many_errors_on_a_long_line_is_bounded() {
    // 150 unknown settings on one line of about 1 MB of two-byte characters.
    let settings: Vec<String> = (0..150).map(|i| format!("s{i} = \"{}\"", "ü".repeat(3000))).collect();
    let src = format!(
        "{HEAD}egress e {{ drop }}\ndevice b {{ ifname = \"b\", {} }}\nroute 2 -> b\n",
        settings.join(", ")
    );
    let checked = check_source(&src);
    assert_eq!(
        checked.diagnostics.len(),
        150,
        "{:?}",
        checked.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>()
    );
    let text = devmapc::diagnostic::render_plain("x.devmap", &src, &checked.diagnostics);
    assert_eq!(text.matches("error[devmap::E008]").count(), 100);
    assert!(text.ends_with("... and 50 more (50 errors, 0 warnings)\n"), "{}", &text[text.len() - 200..]);
    assert!(text.contains("| …üü"), "clipped before the span");
    assert!(text.len() < 100 * 2048, "{} bytes", text.len());
}

/// A UTF-8 byte order mark at the start is skipped, without moving the
/// spans (offsets into the text as read) or counting as a column; anywhere
/// else it is a syntax error. `fmt` drops it.
#[test]
fn a_byte_order_mark_is_skipped_at_the_start_only() {
    let plain = format!("{HEAD}egress e {{ drop }}\nroute 10.0.0.1 -> a\n");
    let with_bom = format!("\u{feff}{plain}");
    let (a, b) = (check_source(&plain).diagnostics, check_source(&with_bom).diagnostics);
    assert_eq!(a.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::RouteKeyType]);
    assert_eq!(b.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::RouteKeyType]);
    assert_eq!(&with_bom[b[0].primary.span.start..b[0].primary.span.end], "10.0.0.1");
    assert_eq!(b[0].primary.span.start, a[0].primary.span.start + 3);
    // Same lines and columns with and without it, the table's key on line 1 too.
    let json = |src: &str, d: &devmapc::Diagnostic| d.to_json("x.devmap", src);
    assert_eq!(json(&plain, &a[0]), json(&with_bom, &b[0]));
    assert_eq!(json(&with_bom, &b[0])["related"][0]["column"], 15);
    let rendered = devmapc::diagnostic::render_plain("x.devmap", &with_bom, &b);
    assert_eq!(rendered, devmapc::diagnostic::render_plain("x.devmap", &plain, &a));

    for elsewhere in [
        format!(" \u{feff}{plain}"),
        format!("\u{feff}\u{feff}{plain}"),
        format!("{HEAD}\u{feff}egress e {{ drop }}\n"),
    ] {
        let codes: Vec<Code> = check_source(&elsewhere).diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::Syntax], "{elsewhere:?}");
    }
    // Skipped where it may stand, it is never listed as something expected.
    let message = check_source("x\n").diagnostics[0].message.clone();
    assert!(message.starts_with("expected `device`") && !message.contains('\u{feff}'), "{message:?}");

    let good = format!("\u{feff}{HEAD}egress e {{ drop }}\n");
    let spec = devmapc::parse(&good).expect("a leading byte order mark parses");
    let formatted = devmapc::fmt::format(&good, &spec);
    assert!(!formatted.starts_with('\u{feff}'), "{formatted:?}");
    assert_eq!(devmapc::parse(&formatted).expect("the formatted text parses"), spec);
}
