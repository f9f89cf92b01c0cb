//! The spec corpus, file by file.
//!
//! - `tests/specs/bad/*.devmap`: each file holds one realistic mistake (a
//!   few hold several, to show that every one is reported). Every expected
//!   diagnostic is marked at the end of the line where its primary span
//!   starts: `//~ E014`, or `//~ E005 W001` for several. The test checks
//!   that the diagnostics and the markers agree exactly (no diagnostic
//!   missing, none extra), that a file named `E...` has an error and a file
//!   named `W...` only warnings, that every span is inside the source and on
//!   `char` boundaries, and snapshots the diagnostics as the CLI renders
//!   them (`snapshots/corpus__<file name>.snap`), so that a change of
//!   message, label, help or position shows up in review.
//! - `examples/*.devmap` and `tests/specs/good/*.devmap`: no diagnostic at
//!   all, already in `devmapc fmt` form, and formatting keeps the AST.
//!
//! After changing a message: `INSTA_UPDATE=always cargo test -p devmapc
//! --test corpus`, then read every changed snapshot before committing it.

use devmapc::{check_source, fmt, parse, Code, Diagnostic, Severity};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's root (the parent of `compiler/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("compiler/ has a parent").to_path_buf()
}

/// The `.devmap` files of a directory below the root, sorted; none when
/// the directory does not exist (yet).
fn specs(dir: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "devmap"))
        .collect();
    files.sort();
    files
}

/// A path as written from the root, with `/` on every platform: the name
/// the snapshots show.
fn relative(path: &Path) -> String {
    let rel = path.strip_prefix(root()).expect("corpus files are below the root");
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// A file's text; a file that is not UTF-8 (E033's) decoded as the
/// diagnostics see it.
fn read(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    match devmapc::decode(&bytes) {
        Ok(text) => text.to_string(),
        Err((text, _)) => text,
    }
}

/// `E014` for `devmap::E014`.
fn short(code: Code) -> &'static str {
    code.as_str().trim_start_matches("devmap::")
}

/// The 1-based line of a byte offset, counted here rather than with the
/// library's own line index, which is under test.
fn line_of(source: &str, offset: usize) -> usize {
    source[..offset].matches('\n').count() + 1
}

/// The `//~ CODE ...` markers of a file, as (line, code).
fn markers(file: &str, source: &str) -> Result<BTreeSet<(usize, &'static str)>, String> {
    let mut set = BTreeSet::new();
    for (i, line) in source.split('\n').enumerate() {
        let Some(at) = line.find("//~") else { continue };
        let codes: Vec<&str> = line[at + 3..].split_whitespace().collect();
        if codes.is_empty() {
            return Err(format!("{file}:{}: a `//~` marker names no code", i + 1));
        }
        for code in codes {
            let Some(known) = Code::ALL.iter().copied().find(|c| short(*c) == code) else {
                return Err(format!("{file}:{}: `{code}` in a `//~` marker is not a diagnostic code", i + 1));
            };
            set.insert((i + 1, short(known)));
        }
    }
    Ok(set)
}

/// Every span of every diagnostic is inside the source and on `char`
/// boundaries.
fn spans_ok(file: &str, source: &str, diagnostics: &[Diagnostic]) -> Result<(), String> {
    for d in diagnostics {
        for (what, span) in std::iter::once(("primary", d.primary.span))
            .chain(d.secondary.iter().map(|l| ("secondary", l.span)))
        {
            if span.start > span.end || span.end > source.len() {
                return Err(format!(
                    "{file}: {what} span {span:?} of {} is outside the source ({} bytes)",
                    d.code,
                    source.len()
                ));
            }
            if !source.is_char_boundary(span.start) || !source.is_char_boundary(span.end) {
                return Err(format!("{file}: {what} span {span:?} of {} is not on char boundaries", d.code));
            }
        }
    }
    Ok(())
}

/// The diagnostics as `devmapc check` prints them without colour, at a
/// fixed width, so that the snapshot is the same on every machine.
fn render(file: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    for d in diagnostics {
        let report = miette::Report::new(d.clone())
            .with_source_code(miette::NamedSource::new(file, source.to_string()));
        let mut one = String::new();
        handler.render_report(&mut one, report.as_ref()).expect("rendering into a String cannot fail");
        out.push_str(&one);
        out.push('\n');
    }
    out
}

/// Everything wrong with one bad file, or nothing.
fn check_bad_file(path: &Path) -> Result<(String, String), String> {
    let file = relative(path);
    let name = path.file_stem().unwrap().to_string_lossy().into_owned();
    let source = read(path);
    if !source.starts_with("//") {
        return Err(format!("{file}: the first line must be a `//` comment saying what the file checks"));
    }
    let expected = markers(&file, &source)?;
    let bytes = std::fs::read(path).expect("read above");
    let (_, checked) = devmapc::check_bytes(&bytes);
    let diagnostics = &checked.diagnostics;
    spans_ok(&file, &source, diagnostics)?;

    let found: BTreeSet<(usize, &'static str)> =
        diagnostics.iter().map(|d| (line_of(&source, d.primary.span.start), short(d.code))).collect();
    if found != expected {
        let list = |set: &BTreeSet<(usize, &str)>| {
            set.iter().map(|(l, c)| format!("{c} on line {l}")).collect::<Vec<_>>().join(", ")
        };
        let missing: BTreeSet<_> = expected.difference(&found).copied().collect();
        let extra: BTreeSet<_> = found.difference(&expected).copied().collect();
        let messages: Vec<String> = diagnostics
            .iter()
            .map(|d| format!("  line {}: {}: {}", line_of(&source, d.primary.span.start), d.code, d.message))
            .collect();
        return Err(format!(
            "{file}: the diagnostics do not match the `//~` markers\n  marked but not reported: [{}]\n  reported but not marked: [{}]\n{}",
            list(&missing),
            list(&extra),
            messages.join("\n")
        ));
    }

    let errors = diagnostics.iter().filter(|d| d.severity() == Severity::Error).count();
    if name.starts_with('W') {
        if errors > 0 {
            return Err(format!(
                "{file}: a file named W... holds warnings only, but it has {errors} error(s)"
            ));
        }
    } else if errors == 0 {
        return Err(format!("{file}: a file not named W... must have at least one error"));
    }
    if checked.model.is_some() == (errors > 0) {
        return Err(format!("{file}: a model must be built exactly when there is no error"));
    }
    // The file is named after a code it guards: that code is reported.
    let named = name.split('_').next().unwrap_or_default();
    if !diagnostics.iter().any(|d| short(d.code) == named) {
        return Err(format!("{file}: named after {named}, but no {named} is reported"));
    }
    Ok((name, render(&file, &source, diagnostics)))
}

#[test]
fn bad_specs_report_exactly_their_markers() {
    let files = specs("tests/specs/bad");
    assert!(files.len() >= 45, "tests/specs/bad has {} specs; it should have at least 45", files.len());
    let mut failures = Vec::new();
    for path in &files {
        match check_bad_file(path) {
            Ok((name, rendered)) => {
                // One assertion per file; a failure is collected, so that a
                // run shows every changed snapshot, not just the first.
                let snapshot = std::panic::catch_unwind(|| {
                    insta::with_settings!({ description => relative(path), omit_expression => true }, {
                        insta::assert_snapshot!(name.as_str(), rendered);
                    });
                });
                if snapshot.is_err() {
                    failures.push(format!(
                        "{}: the rendered diagnostics differ from the snapshot (see above)",
                        relative(path)
                    ));
                }
            }
            Err(message) => failures.push(message),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad specs failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn bad_specs_cover_every_code() {
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    for path in specs("tests/specs/bad") {
        let source = read(&path);
        seen.extend(markers(&relative(&path), &source).unwrap().into_iter().map(|(_, code)| code));
    }
    let missing: Vec<&str> = Code::ALL.iter().map(|c| short(*c)).filter(|c| !seen.contains(c)).collect();
    assert!(missing.is_empty(), "no spec in tests/specs/bad is marked with {missing:?}");
}

/// Every code has a file named after it, so that each can be found by
/// name (`ls tests/specs/bad/E014*`).
#[test]
fn every_code_has_a_file_named_after_it() {
    let names: Vec<String> = specs("tests/specs/bad")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| short(*c))
        .filter(|c| !names.iter().any(|n| n.starts_with(&format!("{c}_"))))
        .collect();
    assert!(missing.is_empty(), "no file in tests/specs/bad is named after {missing:?}");
}

/// A snapshot whose spec was removed or renamed would linger unnoticed
/// (insta only compares the snapshots a run asserts).
#[test]
fn every_snapshot_has_its_spec() {
    let Ok(entries) = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")) else {
        return;
    };
    let specs: BTreeSet<String> = specs("tests/specs/bad")
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let orphans: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|name| Some(name.strip_prefix("corpus__")?.strip_suffix(".snap")?.to_string()))
        .filter(|stem| !specs.contains(stem))
        .collect();
    assert!(orphans.is_empty(), "snapshots without a spec in tests/specs/bad (delete them): {orphans:?}");
}

/// Formatting a bad spec that parses keeps what it says, and a second
/// formatting changes nothing.
#[test]
fn bad_specs_that_parse_format_to_the_same_ast() {
    for path in specs("tests/specs/bad") {
        let file = relative(&path);
        let source = read(&path);
        let Ok(ast) = parse(&source) else { continue };
        let formatted = fmt::format_source(&source)
            .unwrap_or_else(|d| panic!("{file} parses, but its formatting does not: {d:?}"));
        let again = parse(&formatted)
            .unwrap_or_else(|d| panic!("{file}: the formatted text does not parse: {d:?}\n{formatted}"));
        assert_eq!(again, ast, "{file}: formatting changed the AST\n{formatted}");
        assert_eq!(
            fmt::format_source(&formatted).unwrap(),
            formatted,
            "{file}: formatting twice changes the text"
        );
    }
}

/// A good spec: no diagnostic, canonical layout, and an AST that survives
/// formatting.
fn check_good_file(path: &Path) -> Result<(), String> {
    let file = relative(path);
    let source = read(path);
    let checked = check_source(&source);
    if !checked.diagnostics.is_empty() {
        let list: Vec<String> = checked
            .diagnostics
            .iter()
            .map(|d| format!("  line {}: {}: {}", line_of(&source, d.primary.span.start), d.code, d.message))
            .collect();
        return Err(format!("{file} should have no diagnostic, but has:\n{}", list.join("\n")));
    }
    if checked.model.is_none() {
        return Err(format!("{file}: no diagnostic, but no model either"));
    }
    let ast = parse(&source).map_err(|d| format!("{file} checks but does not parse: {d:?}"))?;
    let formatted =
        fmt::format_source(&source).map_err(|d| format!("{file} parses but does not format: {d:?}"))?;
    let again = parse(&formatted)
        .map_err(|d| format!("{file}: the formatted text does not parse: {d:?}\n{formatted}"))?;
    if again != ast {
        return Err(format!("{file}: formatting changed the AST; formatted text:\n{formatted}"));
    }
    if formatted != source {
        let first = source
            .lines()
            .zip(formatted.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| source.lines().count().min(formatted.lines().count()) + 1, |i| i + 1);
        return Err(format!(
            "{file} is not in `devmapc fmt` form (first difference on line {first}); run `devmapc fmt {file}`\n  have: {:?}\n  want: {:?}",
            source.lines().nth(first - 1).unwrap_or_default(),
            formatted.lines().nth(first - 1).unwrap_or_default()
        ));
    }
    Ok(())
}

#[test]
fn good_specs_and_examples_are_clean_and_formatted() {
    let files: Vec<PathBuf> = specs("examples").into_iter().chain(specs("tests/specs/good")).collect();
    assert!(!specs("tests/specs/good").is_empty(), "tests/specs/good has no spec");
    let failures: Vec<String> = files.iter().filter_map(|p| check_good_file(p).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} good specs failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// The markers are read the way the test means them.
#[test]
fn markers_are_parsed() {
    let src = "// a\nroute 1 -> x  //~ E005 W001\nroute 2 -> y //~E016\n";
    let set = markers("t", src).unwrap();
    assert_eq!(set.into_iter().collect::<Vec<_>>(), [(2, "E005"), (2, "W001"), (3, "E016")]);
    assert!(markers("t", "x //~ E999\n").is_err());
    assert!(markers("t", "x //~\n").is_err());
}

/// The first spec of the language reference (docs/language.md, 1 A first
/// spec), kept in tests/specs/language/ as a person would write it, with
/// hand-aligned columns rather than in `devmapc fmt`'s layout: it is the
/// spec a reader meets first, so it must check without a single diagnostic
/// exactly as written (not only once formatted), and formatting it must
/// keep its meaning.
#[test]
fn language_reference_examples_check_clean_as_written() {
    let files = specs("tests/specs/language");
    assert!(!files.is_empty(), "tests/specs/language holds the language reference's examples");
    for path in files {
        let source = read(&path);
        let checked = devmapc::check_source(&source);
        assert!(checked.diagnostics.is_empty(), "{}: {:#?}", relative(&path), checked.diagnostics);
        assert!(checked.model.is_some());
        let formatted = devmapc::fmt::format_source(&source).expect("it parses");
        assert_eq!(
            devmapc::parse(&formatted).unwrap(),
            devmapc::parse(&source).unwrap(),
            "{}",
            relative(&path)
        );
    }
}
