//! The repository documents itself: nothing in it points at notes kept
//! outside it, and docs/kernel.md names only tests that exist.
//!
//! Both read the files git tracks (`git ls-files`), or, where there is no
//! git, every file below the workspace root but `target/` and `.git/`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's files, relative to its root.
fn files() -> Vec<PathBuf> {
    let root = root();
    let listed = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output()
        .ok()
        .filter(|out| out.status.success());
    if let Some(out) = listed {
        return out
            .stdout
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            // Listed but deleted in the work tree: nothing to read.
            .filter(|path| root.join(path).is_file())
            .collect();
    }
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir)).unwrap().flatten() {
            let path = dir.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                if entry.file_name() != "target" && entry.file_name() != ".git" {
                    dirs.push(path);
                }
            } else if kind.is_file() {
                found.push(path);
            }
        }
    }
    found
}

/// The file's text, or `None` for a binary file (not UTF-8).
fn text(path: &Path) -> Option<String> {
    String::from_utf8(std::fs::read(root().join(path)).ok()?).ok()
}

/// What would cite the notes outside the repository. Built from pieces so
/// that this file does not cite them itself.
fn needles() -> Vec<String> {
    let mut needles: Vec<String> =
        ["KERNEL", "LANGUAGE", "TOOLCHAIN", "STYLE"].iter().map(|name| format!("{name}.{}", "md")).collect();
    needles.push(["shared", "design"].join("/"));
    needles.push(["design", "brief"].join(" "));
    needles
}

#[test]
fn nothing_cites_notes_kept_outside_the_repository() {
    let needles = needles();
    let files = files();
    assert!(
        files.iter().any(|f| f.ends_with("docs/kernel.md")),
        "the file list is the repository's: {} files",
        files.len()
    );
    let mut found = Vec::new();
    for path in &files {
        let Some(text) = text(path) else { continue };
        for (i, line) in text.lines().enumerate() {
            for needle in &needles {
                // The two-word needle in any case; the file names as written.
                let hit = if needle.contains(' ') {
                    line.to_lowercase().contains(needle.as_str())
                } else {
                    line.contains(needle.as_str())
                };
                if hit {
                    found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "these lines point at notes outside the repository; say it in the repo's own \
         docs (docs/kernel.md, docs/language.md, ...) and point there:\n{}",
        found.join("\n")
    );
}

/// The test names a bullet of docs/kernel.md cites after `*Pinned by*` or
/// `*And by*`: the backticked names before the first `:` or `.` that ends a
/// clause (outside backticks). Backticked paths (`runtime/tests/x.rs`) and
/// words without an underscore (`lo`) are not test names.
fn cited_tests(bullet: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = bullet.char_indices().peekable();
    let mut quoted: Option<usize> = None;
    while let Some((i, c)) = chars.next() {
        match (c, quoted) {
            ('`', None) => quoted = Some(i + 1),
            ('`', Some(start)) => {
                let word = &bullet[start..i];
                if word.contains('_') && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    names.push(word.to_string());
                }
                quoted = None;
            }
            (':' | '.', None) if chars.peek().is_none_or(|&(_, next)| next.is_whitespace()) => break,
            _ => {}
        }
    }
    names
}

/// Every `fn` of the repository's Rust files that has `#[test]` among its
/// attributes.
fn test_fns() -> std::collections::BTreeSet<String> {
    let mut tests = std::collections::BTreeSet::new();
    for path in files() {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let Some(text) = text(&path) else { continue };
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.trim_start().strip_prefix("fn ") else {
                continue;
            };
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let is_test = lines[..i]
                .iter()
                .rev()
                .map(|l| l.trim())
                .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
                .any(|l| l.starts_with("#[test]"));
            if is_test {
                tests.insert(name);
            }
        }
    }
    tests
}

#[test]
fn every_test_docs_kernel_md_cites_exists() {
    let doc = text(Path::new("docs/kernel.md")).expect("docs/kernel.md");
    // Bullets: a line "- ..." and the indented lines that continue it.
    let mut bullets: Vec<String> = Vec::new();
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("- ") {
            bullets.push(rest.to_string());
        } else if line.starts_with("  ") && !line.trim().is_empty() {
            if let Some(last) = bullets.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            bullets.push(String::new()); // ends the bullet before
        }
    }
    let tests = test_fns();
    let mut cited = 0;
    let mut problems = Vec::new();
    for bullet in &bullets {
        let Some(rest) = bullet.strip_prefix("*Pinned by*").or_else(|| bullet.strip_prefix("*And by*"))
        else {
            continue;
        };
        let names = cited_tests(rest);
        if names.is_empty() {
            problems.push(format!("names no test: {bullet}"));
        }
        for name in names {
            cited += 1;
            if !tests.contains(&name) {
                problems.push(format!("`{name}` is no #[test] fn of the repository"));
            }
        }
    }
    assert!(problems.is_empty(), "docs/kernel.md cites tests that do not exist:\n{}", problems.join("\n"));
    assert!(cited >= 40, "only {cited} tests cited: is docs/kernel.md still parsed right?");
}

#[test]
fn cited_tests_are_read_up_to_the_end_of_the_clause() {
    assert_eq!(cited_tests(" `a_b` and `c_d`: then `e_f`"), ["a_b", "c_d"]);
    assert_eq!(cited_tests(" `a_b`\n (`runtime/tests/x.rs`). Not `c_d`"), ["a_b"]);
    assert_eq!(cited_tests(" `a_b` (same file) for `lo`, `x_y`."), ["a_b", "x_y"]);
    assert_eq!(cited_tests(" `a_b`, whose key is e.g. `c_d`"), ["a_b"]);
}
