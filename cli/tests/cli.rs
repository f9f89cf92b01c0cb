//! Tests of the `devmapc` binary as a user runs it: exit codes, what goes
//! to standard output and standard error, JSON diagnostics, colour, and what
//! `fmt` does to files. Each test works in its own temporary directory (in
//! the style of ripgrep's tests/tests.rs) and runs the binary Cargo built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A clean spec: no error, no warning, in `devmapc fmt` form.
const CLEAN: &str = r#"// A clean spec.
table {
    key = vlan.id
}

device uplink { ifname = "eth0" }
device red { ifname = "veth-red" }

ingress { on = [uplink] }

route 100 -> red
"#;

/// A spec with one error: an IPv4 route key in a VLAN table, on line 9,
/// columns 7 to 15 (`10.0.0.1`).
const BAD: &str = r#"table { key = vlan.id }

device uplink { ifname = "eth0" }
device red { ifname = "veth-red" }

ingress { on = [uplink] }

route 100 -> red
route 10.0.0.1 -> red
"#;

/// A spec with warnings only: `blue` is never reached.
const WARNS: &str = r#"table { key = vlan.id }

device uplink { ifname = "eth0" }
device red { ifname = "veth-red" }
device blue { ifname = "veth-blue" }

ingress { on = [uplink] }

route 100 -> red
"#;

/// A spec that means the same as [`CLEAN`], laid out carelessly.
const MESSY: &str = "// A clean spec.\ntable {key=vlan.id}\n\n\n\ndevice   uplink {ifname=\"eth0\"}\ndevice red {\n  ifname = \"veth-red\"\n}\ningress {on=[ uplink ]}\nroute 100->red   // the only route\n";

/// A spec with a syntax error (`=>` for `->`).
const BROKEN: &str =
    "table {key=vlan.id}\ndevice   uplink {ifname=\"eth0\"}\ningress {on=[uplink]}\nroute 100 => uplink\n";

/// A temporary directory for one test, removed when the test ends.
struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            tmp: tempfile::Builder::new()
                .prefix("devmapc-cli-test")
                .tempdir()
                .expect("a temporary directory"),
        }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Writes a file in the directory and returns its path.
    fn create(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).expect("read a test file")
    }

    /// `devmapc ARGS...` run in the directory, colour off, no terminal.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_devmapc"));
        cmd.args(args)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("FORCE_COLOR")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run devmapc")
    }

    /// Runs with `input` on standard input.
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run devmapc");
        child.stdin.take().unwrap().write_all(input.as_bytes()).expect("write standard input");
        child.wait_with_output().expect("wait for devmapc")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("standard output is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("standard error is UTF-8")
}

/// Asserts the exit code, showing both outputs when it is wrong.
#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "wrong exit status\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The repository's root (the parent of `cli/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The JSON objects printed by `check --message-format json`, one a line.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line:?}"))
        })
        .collect()
}

/// The text between 1-based (line, column) and (end_line, end_column),
/// columns counted in characters, as the JSON fields are documented.
fn text_at(source: &str, d: &serde_json::Value) -> String {
    let n = |key: &str| d[key].as_u64().unwrap_or_else(|| panic!("`{key}` is not a number in {d}")) as usize;
    let offset = |line: usize, column: usize| {
        let start: usize = source.split_inclusive('\n').take(line - 1).map(str::len).sum();
        start + source[start..].chars().take(column - 1).map(char::len_utf8).sum::<usize>()
    };
    source[offset(n("line"), n("column"))..offset(n("end_line"), n("end_column"))].to_string()
}

// ------------------------------------------------------------------ check

#[test]
fn check_clean_spec_exits_0() {
    let dir = Dir::new();
    dir.create("clean.devmap", CLEAN);
    let out = dir.run(&["check", "clean.devmap"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("clean.devmap: ok"), "{}", stderr(&out));
}

#[test]
fn check_bad_spec_exits_1_and_names_the_error() {
    let dir = Dir::new();
    dir.create("bad.devmap", BAD);
    let out = dir.run(&["check", "bad.devmap"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("devmap::E014"), "{err}");
    assert!(err.contains("bad.devmap:9:7"), "the report names the file, line and column: {err}");
    assert!(err.contains("bad.devmap: failed, 1 error, 0 warnings"), "{err}");
}

#[test]
fn check_reports_every_file_and_fails_if_any_fails() {
    let dir = Dir::new();
    dir.create("clean.devmap", CLEAN);
    dir.create("bad.devmap", BAD);
    let out = dir.run(&["check", "clean.devmap", "bad.devmap"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("clean.devmap: ok") && err.contains("bad.devmap: failed"), "{err}");
}

#[test]
fn check_warnings_exit_0_unless_denied() {
    let dir = Dir::new();
    dir.create("warns.devmap", WARNS);
    let out = dir.run(&["check", "warns.devmap"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("devmap::W001"), "{}", stderr(&out));
    let out = dir.run(&["check", "--deny-warnings", "warns.devmap"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("devmap::W001"), "{}", stderr(&out));
}

#[test]
fn check_missing_file_exits_2() {
    let dir = Dir::new();
    let out = dir.run(&["check", "nope.devmap"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("nope.devmap"), "the error names the file: {}", stderr(&out));
    // Even next to a clean file, and the clean file is still checked.
    dir.create("clean.devmap", CLEAN);
    let out = dir.run(&["check", "nope.devmap", "clean.devmap"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("clean.devmap: ok"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let dir = Dir::new();
    dir.create("clean.devmap", CLEAN);
    for args in [
        &[][..],
        &["check"][..],
        &["fmt"][..],
        &["frobnicate", "clean.devmap"][..],
        &["check", "--message-format", "xml", "clean.devmap"][..],
        &["check", "--no-such-flag", "clean.devmap"][..],
    ] {
        let out = dir.run(args);
        assert_eq!(out.status.code(), Some(2), "devmapc {args:?} should be a usage error\n{}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "devmapc {args:?} says why on standard error");
    }
}

#[test]
fn check_json_is_one_object_per_diagnostic_pointing_at_the_text() {
    let dir = Dir::new();
    // Two errors and a warning, on known text.
    let source = "table { key = vlan.id }\n\ndevice uplink { ifname = \"eth0\" }\ndevice red { ifname = \"veth-red\" }\ndevice blue { ifname = \"veth-blue\" }\n\ningress { on = [uplink] }\n\nroute 100 -> red\nroute 10.0.0.1 -> red\nroute 4096 -> rde\n";
    dir.create("spec.devmap", source);
    let out = dir.run(&["check", "--message-format", "json", "spec.devmap"]);
    assert_exit(&out, 1);
    let diagnostics = json_lines(&out);
    assert_eq!(diagnostics.len(), 4, "{}", stdout(&out));
    for d in &diagnostics {
        for key in ["file", "line", "column", "end_line", "end_column", "code", "severity", "message", "help"]
        {
            assert!(d.get(key).is_some(), "`{key}` missing from {d}");
        }
        assert_eq!(d["file"], "spec.devmap");
        assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "{d}");
        assert!(d["help"].as_str().is_some_and(|m| !m.is_empty()), "every diagnostic has a help line: {d}");
    }
    let found: Vec<(String, u64, u64, String, String)> = diagnostics
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
                d["severity"].as_str().unwrap().to_string(),
                text_at(source, d),
            )
        })
        .collect();
    let expected = [
        ("devmap::W001", 5, 8, "warning", "blue"),
        ("devmap::E014", 10, 7, "error", "10.0.0.1"),
        ("devmap::E015", 11, 7, "error", "4096"),
        ("devmap::E005", 11, 15, "error", "rde"),
    ];
    let expected: Vec<(String, u64, u64, String, String)> = expected
        .iter()
        .map(|(c, l, col, s, t)| (c.to_string(), *l, *col, s.to_string(), t.to_string()))
        .collect();
    assert_eq!(found, expected);
    // Human output goes to standard error; JSON alone is on standard output.
    assert!(!stdout(&out).contains("failed"), "{}", stdout(&out));
}

#[test]
fn check_json_columns_count_characters() {
    let dir = Dir::new();
    // A comment with multi-byte characters before the error on its line.
    let source = "/* übersetzt → */ table { key = vlan.id }\ndevice uplink { ifname = \"eth0\" }\ningress { on = [uplink] }\nroute 300.0.0.1 -> uplink\n";
    dir.create("utf8.devmap", source);
    let out = dir.run(&["check", "--message-format", "json", "utf8.devmap"]);
    assert_exit(&out, 1);
    let diagnostics = json_lines(&out);
    assert_eq!(diagnostics.len(), 1, "{}", stdout(&out));
    assert_eq!(diagnostics[0]["code"], "devmap::E002");
    assert_eq!(text_at(source, &diagnostics[0]), "300");
    let source = "table { key = vlan.id } /* → */ route\n";
    dir.create("utf8b.devmap", source);
    let out = dir.run(&["check", "--message-format", "json", "utf8b.devmap"]);
    let diagnostics = json_lines(&out);
    assert_eq!(diagnostics[0]["code"], "devmap::E001");
    // `route` is the 33rd character of the line (the 35th byte).
    assert_eq!(diagnostics[0]["column"], 33, "column in characters, not bytes: {}", diagnostics[0]);
}

#[test]
fn check_json_of_a_clean_spec_prints_nothing() {
    let dir = Dir::new();
    dir.create("clean.devmap", CLEAN);
    let out = dir.run(&["check", "--message-format", "json", "clean.devmap"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "");
}

#[test]
fn no_colour_with_no_color_set_and_no_terminal() {
    let dir = Dir::new();
    dir.create("bad.devmap", BAD);
    dir.create("warns.devmap", WARNS);
    dir.create("broken.devmap", BROKEN);
    for args in [
        &["check", "bad.devmap", "warns.devmap"][..],
        &["check", "--message-format", "json", "bad.devmap"][..],
        &["fmt", "--check", "broken.devmap"][..],
    ] {
        let out = dir.run(args);
        for (what, text) in [("stdout", stdout(&out)), ("stderr", stderr(&out))] {
            assert!(!text.contains('\x1b'), "devmapc {args:?} wrote an escape sequence on {what}: {text:?}");
        }
    }
    // Not a terminal is enough on its own: no NO_COLOR, still no colour.
    let out = dir.command(&["check", "bad.devmap"]).env_remove("NO_COLOR").output().unwrap();
    assert!(!stderr(&out).contains('\x1b'), "{:?}", stderr(&out));
}

/// Every bad spec of the corpus fails `check`; the warnings-only ones (named
/// `W...`) pass unless `--deny-warnings`.
#[test]
fn check_every_bad_corpus_file() {
    let dir = root().join("tests/specs/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/specs/bad")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "devmap"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_devmapc")).args(args).env("NO_COLOR", "1").output().unwrap()
    };
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let file = path.to_str().unwrap();
        let warnings_only = name.starts_with('W');
        let plain = run(&["check", file]).status.code();
        if plain != Some(if warnings_only { 0 } else { 1 }) {
            failures.push(format!("check {name}: exit {plain:?}"));
        }
        let denied = run(&["check", "--deny-warnings", file]).status.code();
        if denied != Some(1) {
            failures.push(format!("check --deny-warnings {name}: exit {denied:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// -------------------------------------------------------------------- fmt

#[test]
fn fmt_check_names_the_file_and_changes_nothing() {
    let dir = Dir::new();
    dir.create("messy.devmap", MESSY);
    dir.create("clean.devmap", CLEAN);
    let out = dir.run(&["fmt", "--check", "messy.devmap", "clean.devmap"]);
    assert_exit(&out, 1);
    let listed = stdout(&out);
    assert!(listed.contains("messy.devmap"), "{listed}");
    assert!(!listed.contains("clean.devmap"), "only the file that would change is listed: {listed}");
    assert_eq!(dir.read("messy.devmap"), MESSY, "--check must not write");
    assert_eq!(dir.read("clean.devmap"), CLEAN);
}

#[test]
fn fmt_rewrites_to_canonical_form_then_check_passes() {
    let dir = Dir::new();
    dir.create("messy.devmap", MESSY);
    let out = dir.run(&["fmt", "messy.devmap"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("messy.devmap"), "{}", stdout(&out));
    let formatted = dir.read("messy.devmap");
    assert_eq!(formatted, devmapc::fmt::format_source(MESSY).unwrap());
    assert!(formatted.contains("// the only route"), "comments survive: {formatted}");
    assert_eq!(
        devmapc::parse(&formatted).unwrap(),
        devmapc::parse(MESSY).unwrap(),
        "formatting keeps the meaning"
    );
    let out = dir.run(&["fmt", "--check", "messy.devmap"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "");
    // A second `fmt` has nothing to do.
    let out = dir.run(&["fmt", "messy.devmap"]);
    assert_exit(&out, 0);
    assert_eq!(dir.read("messy.devmap"), formatted);
}

/// A spec saved with a UTF-8 byte order mark (as some Windows editors do):
/// `check` accepts it at the columns the editor shows, `fmt` drops the mark.
#[test]
fn a_byte_order_mark_is_accepted_and_fmt_drops_it() {
    let dir = Dir::new();
    dir.create("bom.devmap", &format!("\u{feff}{CLEAN}"));
    dir.create("bad.devmap", &format!("\u{feff}{BAD}"));
    assert_exit(&dir.run(&["check", "bom.devmap"]), 0);
    let out = dir.run(&["check", "--message-format", "json", "bad.devmap"]);
    assert_exit(&out, 1);
    let json = json_lines(&out);
    assert_eq!((json[0]["line"].as_u64(), json[0]["column"].as_u64()), (Some(9), Some(7)));
    assert_eq!(
        (json[0]["related"][0]["line"].as_u64(), json[0]["related"][0]["column"].as_u64()),
        (Some(1), Some(15))
    );
    let out = dir.run(&["check", "bad.devmap"]);
    assert!(
        stderr(&out).contains("bad.devmap:1:15]") && stderr(&out).contains("bad.devmap:9:7]"),
        "{}",
        stderr(&out)
    );
    let out = dir.run(&["fmt", "--check", "bom.devmap"]);
    assert_exit(&out, 1);
    assert_exit(&dir.run(&["fmt", "bom.devmap"]), 0);
    assert_eq!(dir.read("bom.devmap"), CLEAN);
}

#[test]
fn fmt_a_directory_formats_every_spec_below_it() {
    let dir = Dir::new();
    std::fs::create_dir_all(dir.path().join("specs/more")).unwrap();
    dir.create("specs/a.devmap", MESSY);
    dir.create("specs/more/b.devmap", MESSY);
    dir.create("specs/notes.txt", "route   not a spec\n");
    let out = dir.run(&["fmt", "--check", "specs"]);
    assert_exit(&out, 1);
    let listed = stdout(&out);
    assert!(
        listed.contains("a.devmap") && listed.contains("b.devmap") && !listed.contains("notes.txt"),
        "{listed}"
    );
    assert_exit(&dir.run(&["fmt", "specs"]), 0);
    assert_exit(&dir.run(&["fmt", "--check", "specs"]), 0);
    assert_eq!(dir.read("specs/notes.txt"), "route   not a spec\n");
}

#[test]
fn fmt_leaves_a_file_with_a_syntax_error_untouched() {
    let dir = Dir::new();
    dir.create("broken.devmap", BROKEN);
    let out = dir.run(&["fmt", "broken.devmap"]);
    assert_exit(&out, 1);
    assert_eq!(dir.read("broken.devmap").as_bytes(), BROKEN.as_bytes(), "the file must stay byte-identical");
    let err = stderr(&out);
    assert!(err.contains("devmap::E001") && err.contains("broken.devmap"), "{err}");
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["broken.devmap"]);
    // `--check` says the same and exits the same.
    let out = dir.run(&["fmt", "--check", "broken.devmap"]);
    assert_exit(&out, 1);
    assert_eq!(dir.read("broken.devmap"), BROKEN);
}

#[test]
fn fmt_missing_file_exits_2() {
    let dir = Dir::new();
    let out = dir.run(&["fmt", "nope.devmap"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("nope.devmap"), "{}", stderr(&out));
}

#[test]
fn fmt_stdin_to_stdout() {
    let dir = Dir::new();
    let out = dir.run_with_stdin(&["fmt", "-"], MESSY);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), devmapc::fmt::format_source(MESSY).unwrap());
    // Nothing is written to disk.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Broken input: the error on standard error, nothing on standard output.
    let out = dir.run_with_stdin(&["fmt", "-"], BROKEN);
    assert_exit(&out, 1);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("devmap::E001"), "{}", stderr(&out));
}

// ------------------------------------------------------------------- help

#[test]
fn help_of_each_subcommand_mentions_its_options() {
    let dir = Dir::new();
    for (args, options) in [
        (&["check", "--help"][..], &["--deny-warnings", "--message-format", "json", "human", "FILE"][..]),
        (&["fmt", "--help"][..], &["--check", "FILE", "-"][..]),
        (&["--help"][..], &["check", "fmt"][..]),
        (&["help", "check"][..], &["--deny-warnings", "--message-format"][..]),
    ] {
        let out = dir.run(args);
        assert_exit(&out, 0);
        let help = stdout(&out);
        for option in options {
            assert!(
                help.contains(option),
                "`devmapc {}` does not mention `{option}`:\n{help}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn version_is_printed() {
    let out = Dir::new().run(&["--version"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("devmapc "), "{}", stdout(&out));
}

/// `devmapc build` twice, from different directories into different
/// directories, writes byte-identical C, objects, skeletons and manifests;
/// `build --check` accepts them and notices a changed file. Needs clang.
#[test]
fn build_is_deterministic_and_check_finds_stale_outputs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = root.join("examples/vlan-switch.devmap");
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    for (cwd, out) in [(root.as_path(), first.path()), (second.path(), &second.path().join("nested"))] {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_devmapc"))
            .current_dir(cwd)
            .arg("build")
            .arg(&spec)
            .arg("-o")
            .arg(out)
            .status()
            .unwrap();
        assert!(status.success());
    }
    for file in ["vlan_switch.bpf.c", "vlan_switch.bpf.o", "vlan_switch.skel.rs", "vlan_switch.manifest.json"]
    {
        let a = std::fs::read(first.path().join(file)).unwrap();
        let b = std::fs::read(second.path().join("nested").join(file)).unwrap();
        assert!(a == b, "{file} differs between two builds");
    }
    let check = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_devmapc"))
            .arg("build")
            .arg("--check")
            .arg(&spec)
            .arg("-o")
            .arg(dir)
            .output()
            .unwrap()
    };
    assert!(check(first.path()).status.success());
    std::fs::write(first.path().join("vlan_switch.bpf.c"), "/* edited */").unwrap();
    let stale = check(first.path());
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stdout).contains("stale:"), "{stale:?}");
}

/// Without clang, `build` says which package to install; the spec is not
/// at fault, so it is an environment error (exit 2).
#[test]
fn build_without_clang_names_the_package() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_devmapc"))
        .env("PATH", out.path())
        .env("DEVMAPC_CLANG", "/nonexistent/clang")
        .arg("build")
        .arg(root.join("examples/vlan-switch.devmap"))
        .arg("-o")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no clang found"), "{stderr}");
    assert!(stderr.contains("apt-get install clang"), "{stderr}");
    assert!(stderr.contains("DEVMAPC_CLANG"), "{stderr}");
}
