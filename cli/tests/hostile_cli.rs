//! The command line against hostile surroundings.
//!
//! - Output to a reader that went away (`devmapc check 2>&1 | head -1`):
//!   never a panic, and the exit code is the command's own (1 for a spec
//!   with errors), not 101 or 141. The tests give the binary a pipe whose
//!   reading end is closed before it starts, so that every write it makes
//!   fails with EPIPE, or run a real `| head -1` in bash.
//! - A spec that is not text: a spec error (exit 1) located at its first
//!   bad byte, not an I/O error.
//! - Many diagnostics on long lines: the terminal output stays bounded (the
//!   first hundred, each clipped around its span); JSON lists them all.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

const BAD: &str = "table { key = vlan.id }\ndevice uplink { ifname = \"eth0\" }\ndevice red { ifname = \"veth-red\" }\ningress { on = [uplink] }\nroute 100 -> red\nroute 10.0.0.1 -> red\n";
const GOOD: &str = "table {\n    key = vlan.id\n}\n\ndevice uplink { ifname = \"eth0\" }\ndevice red { ifname = \"veth-red\" }\n\ningress { on = [uplink] }\n\nroute 100 -> red\n";
const MESSY: &str = "table {key=vlan.id}\ndevice uplink {ifname=\"eth0\"}\ndevice red {ifname=\"veth-red\"}\ningress {on=[uplink]}\nroute 100->red\n";

/// The writing end of a pipe nobody reads.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    // SAFETY: both descriptors were just made and are owned here.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    Stdio::from(writer)
}

/// Which of the standard streams lead to a closed pipe.
#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
    Both,
}

/// Runs devmapc in `dir` with `closed` streams closed; returns its exit
/// code and what it wrote on the stream still open (if one is).
fn run(dir: &Path, args: &[&str], closed: Closed) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_devmapc"));
    command.args(args).current_dir(dir).env("NO_COLOR", "1").stdin(Stdio::null());
    match closed {
        Closed::Stdout => command.stdout(closed_pipe()).stderr(Stdio::piped()),
        Closed::Stderr => command.stdout(Stdio::piped()).stderr(closed_pipe()),
        Closed::Both => command.stdout(closed_pipe()).stderr(closed_pipe()),
    };
    let output = command.output().expect("run devmapc");
    let open = [output.stdout, output.stderr].concat();
    (output.status.code(), String::from_utf8_lossy(&open).into_owned())
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("devmapc-pipe-test").tempdir().expect("a temporary directory");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write a spec");
    }
    dir
}

#[test]
fn check_keeps_its_exit_code_when_nobody_reads() {
    let dir = dir_with(&[("bad.devmap", BAD), ("good.devmap", GOOD)]);
    for closed in [Closed::Stdout, Closed::Stderr, Closed::Both] {
        for format in ["human", "json"] {
            let (code, open) = run(dir.path(), &["check", "--message-format", format, "bad.devmap"], closed);
            assert_eq!(code, Some(1), "check {format} with {closed:?} closed: {open}");
            assert!(!open.contains("panicked"), "{open}");
            let (code, open) = run(dir.path(), &["check", "--message-format", format, "good.devmap"], closed);
            assert_eq!(code, Some(0), "check {format} with {closed:?} closed: {open}");
        }
    }
    // What is still read is still written.
    let (_, stdout) = run(dir.path(), &["check", "--message-format", "json", "bad.devmap"], Closed::Stderr);
    assert!(stdout.contains("devmap::E014"), "{stdout}");
}

#[test]
fn fmt_works_and_keeps_its_exit_code_when_nobody_reads() {
    let dir = dir_with(&[("messy.devmap", MESSY), ("broken.devmap", "route 1 => a\n")]);
    let (code, open) = run(dir.path(), &["fmt", "--check", "messy.devmap"], Closed::Stdout);
    assert_eq!((code, open.as_str()), (Some(1), ""));
    let (code, _) = run(dir.path(), &["fmt", "broken.devmap"], Closed::Both);
    assert_eq!(code, Some(1));
    // The file is formatted though its "formatted messy.devmap" is lost.
    let (code, open) = run(dir.path(), &["fmt", "messy.devmap"], Closed::Stdout);
    assert_eq!((code, open.as_str()), (Some(0), ""));
    assert_ne!(std::fs::read_to_string(dir.path().join("messy.devmap")).unwrap(), MESSY);
    // Standard input to a closed standard output.
    let mut child = Command::new(env!("CARGO_BIN_EXE_devmapc"))
        .args(["fmt", "-"])
        .stdin(Stdio::piped())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), MESSY.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Needs clang, like the other build tests.
#[test]
fn build_works_and_keeps_its_exit_code_when_nobody_reads() {
    let dir = dir_with(&[("good.devmap", GOOD), ("bad.devmap", BAD)]);
    let (code, open) =
        run(dir.path(), &["build", "--emit", "c,manifest", "-o", "out", "good.devmap"], Closed::Stdout);
    assert_eq!(code, Some(0), "{open}");
    assert!(dir.path().join("out/good.manifest.json").exists());
    let (code, _) = run(dir.path(), &["build", "--emit", "c", "-o", "out", "bad.devmap"], Closed::Both);
    assert_eq!(code, Some(1));
}

#[test]
fn help_to_a_closed_pipe_is_no_error() {
    let dir = dir_with(&[]);
    for args in [&["test", "--help"][..], &["--help"], &["status", "--help"]] {
        let (code, open) = run(dir.path(), args, Closed::Stdout);
        assert_eq!(code, Some(0), "{args:?}: {open}");
        assert!(!open.contains("panicked"), "{open}");
    }
}

/// The shell's view: `devmapc check ... 2>&1 | head -1` and the status of
/// devmapc in PIPESTATUS, with more output than a pipe buffers.
#[test]
fn check_into_head_reports_the_errors_exit_code() {
    let dir = dir_with(&[("bad.devmap", BAD)]);
    // 64 KiB of diagnostics at least: the writes go on after head exits.
    let many = format!(
        "{BAD}{}",
        (0..2000).map(|i| format!("route 10.0.{}.{} -> red\n", i / 250, i % 250)).collect::<String>()
    );
    std::fs::write(dir.path().join("many.devmap"), many).unwrap();
    let script = format!(
        "'{}' check many.devmap 2>&1 | head -1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_devmapc")
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("bash");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_spec_that_is_not_utf8_is_a_located_spec_error() {
    let dir = dir_with(&[]);
    let mut latin1 = BAD.replace("route 10.0.0.1 -> red\n", "").into_bytes();
    latin1.extend_from_slice(b"route 101 -> red  // Caf\xe9\n");
    std::fs::write(dir.path().join("latin1.devmap"), &latin1).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_devmapc"))
        .args(["check", "--message-format", "json", "latin1.devmap"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON diagnostic");
    assert_eq!(json["code"], "devmap::E033");
    assert_eq!((json["line"].as_u64(), json["column"].as_u64()), (Some(6), Some(25)));
    for args in [
        &["check", "latin1.devmap"][..],
        &["fmt", "latin1.devmap"],
        &["build", "--emit", "c", "-o", "out", "latin1.devmap"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_devmapc"))
            .args(args)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("devmap::E033") && stderr.contains("latin1.devmap:6:25"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read(dir.path().join("latin1.devmap")).unwrap(), latin1, "fmt leaves it alone");
    assert!(!dir.path().join("out").exists(), "build wrote nothing");
}

/// Runs `devmapc check` on one spec; returns the exit code, stdout, stderr.
fn check(dir: &Path, spec: &str, args: &[&str]) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    std::fs::write(dir.join("spec.devmap"), spec).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_devmapc"))
        .arg("check")
        .args(args)
        .arg("spec.devmap")
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (output.status.code(), output.stdout, output.stderr)
}

/// 20,000 errors on 20 KB lines: printed whole, that was 400 MB and minutes.
/// The terminal shows the first hundred, each in a few lines clipped around
/// its span, and counts the rest; JSON lists every one, one line each.
#[test]
fn many_errors_on_long_lines_print_a_bounded_report() {
    let dir = dir_with(&[]);
    let head = "table { key = vlan.id }\ndevice uplink { ifname = \"eth0\" }\ndevice red { ifname = \"veth-red\" }\ningress { on = [uplink] }\nroute 100 -> red\n";
    // Every `vlan(type = 1)` is an error (`vlan` has no field `type`).
    let layers = vec!["vlan(type = 1)"; 1340].join(" / ");
    let tests: String = (0..15)
        .map(|i| format!("test \"t{i}\" {{\n    send uplink eth() / {layers} / ipv4()\n    expect red\n}}\n"))
        .collect();
    let spec = format!("{head}{tests}");
    assert!(layers.len() > 20_000);

    let (code, stdout, _) = check(dir.path(), &spec, &["--message-format", "json"]);
    assert_eq!(code, Some(1));
    let all = String::from_utf8(stdout).unwrap().lines().count();
    assert!(all > 20_000, "JSON lists every diagnostic: {all}");

    let (code, _, stderr) = check(dir.path(), &spec, &[]);
    assert_eq!(code, Some(1));
    let text = String::from_utf8_lossy(&stderr);
    assert_eq!(text.matches("devmap::E031").count(), 100, "the first hundred are shown");
    let more =
        format!("... and {} more errors (devmapc check --message-format json lists them all)", all - 100);
    assert!(text.contains(&more), "{}", &text[text.len().saturating_sub(500)..]);
    assert!(text.contains(&format!("spec.devmap: failed, {all} errors")));
    // A few KB per diagnostic shown, however long the lines and many the errors.
    assert!(stderr.len() < 100 * 4096, "{} bytes on stderr", stderr.len());
}

/// Diagnostics at both ends of a 1 MB line (of two-byte characters), and
/// one whose message quotes a 1 MB name: each line is shown clipped around
/// the span, on character boundaries, and the message is cut short.
#[test]
fn diagnostics_on_a_very_long_line_show_it_clipped() {
    let dir = dir_with(&[]);
    let long = "ü".repeat(500_000);
    let spec = format!("{BAD}device blue {{ note = \"{long}\", ifindex = \"2\" }}\ndevice green {{ ifname = \"{long}\" }}\nroute 200 -> blue\nroute 300 -> green\n");
    let (code, _, stderr) = check(dir.path(), &spec, &[]);
    assert_eq!(code, Some(1));
    let text = String::from_utf8(stderr).expect("clipped on character boundaries");
    for wanted in [
        "devmap::E008",
        "spec.devmap:7:15]",
        "devmap::E011",
        "spec.devmap:7:1000036]",
        "devmap::E018",
        "spec.devmap:8:",
    ] {
        assert!(text.contains(wanted), "{wanted}: {text}");
    }
    assert!(text.contains('…'), "{text}");
    assert!(text.len() < 16 * 1024, "{} bytes on stderr", text.len());
}
