//! `devmapc test`: runs the `test` blocks of specs in throwaway network
//! namespaces (the work is `devmapc_spectest`'s; this is the
//! terminal and JSON output, and the exit code).

use crate::{out, MessageFormat};
use devmapc::diagnostic::LineIndex;
use devmapc_spectest::sandbox::Sandbox;
use devmapc_spectest::{self as spectest, Failure, Options, TestOutcome, Watch};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT / SIGTERM; the run stops at the next step and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // A second signal: leave now. The namespaces go with the process.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

fn catch_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only touches an atomic (or exits).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Everything `devmapc test` needs, checked before anything is done, so that
/// a run without privileges is one message and never a partial run:
/// CAP_SYS_ADMIN for the namespaces, CAP_BPF (or CAP_SYS_ADMIN) for the
/// programs, CAP_NET_ADMIN for the devices and links, CAP_NET_RAW for the
/// packet sockets that send and watch.
fn check_privileges() -> Result<(), String> {
    let Some(caps) = devmapc_runtime::deploy::effective_caps() else {
        // Unknown: the kernel decides, and says so if it refuses.
        return Ok(());
    };
    missing_for_test(caps).map_or(Ok(()), Err)
}

/// The message for capabilities `caps` (a `CapEff` mask) lacks, if any.
fn missing_for_test(caps: u64) -> Option<String> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN");
    }
    (!missing.is_empty()).then(|| {
        format!(
            "devmapc test builds network namespaces, loads BPF programs and watches packets: \
             missing capabilities {}; run it as root (`sudo devmapc test ...`)",
            missing.join(", ")
        )
    })
}

fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Why a spec's tests could not run at all.
enum SpecError {
    /// The spec has errors (rendered already): exit 1.
    Spec,
    /// The machine could not run them: exit 2.
    Environment(String),
    Interrupted,
}

#[derive(Default)]
struct Totals {
    passed: usize,
    failed: usize,
}

pub fn run(
    specs: &[PathBuf],
    filter: Option<&str>,
    format: MessageFormat,
    timeout_ms: u64,
) -> Result<ExitCode, String> {
    if let Err(message) = check_privileges() {
        if format == MessageFormat::Json {
            out(&json!({ "type": "error", "message": message }).to_string());
        }
        return Err(message);
    }
    catch_signals();
    let options = Options { timeout: Duration::from_millis(timeout_ms.max(1)) };
    let mut totals = Totals::default();
    let (mut spec_errors, mut env_errors) = (0, 0);
    for spec in specs {
        match run_spec(spec, filter, format, &options, &mut totals) {
            Ok(()) => {}
            Err(SpecError::Spec) => spec_errors += 1,
            Err(SpecError::Environment(message)) => {
                env_errors += 1;
                match format {
                    MessageFormat::Human => crate::err(&format!("error: {}: {message}", spec.display())),
                    MessageFormat::Json => out(
                        &json!({ "type": "error", "spec": spec.display().to_string(), "message": message })
                            .to_string(),
                    ),
                }
            }
            Err(SpecError::Interrupted) => {
                crate::err("interrupted: the sandbox is gone, nothing is left behind");
                return Ok(ExitCode::from(130));
            }
        }
    }
    match format {
        MessageFormat::Human => out(&format!("{} passed, {} failed", totals.passed, totals.failed)),
        MessageFormat::Json => out(&json!({ "type": "summary", "passed": totals.passed, "failed": totals.failed, "spec_errors": spec_errors, "errors": env_errors }).to_string()),
    }
    Ok(ExitCode::from(if env_errors > 0 {
        2
    } else if totals.failed > 0 || spec_errors > 0 {
        1
    } else {
        0
    }))
}

fn interrupted() -> Result<(), SpecError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(SpecError::Interrupted)
    } else {
        Ok(())
    }
}

fn run_spec(
    spec: &Path,
    filter: Option<&str>,
    format: MessageFormat,
    options: &Options,
    totals: &mut Totals,
) -> Result<(), SpecError> {
    let name = spec.display().to_string();
    let bytes = crate::read(spec).map_err(SpecError::Environment)?;
    let (source, checked) = devmapc::check_bytes(&bytes);
    // Warnings too: a test may not mean what it says (W006: a packet sent
    // where no XDP program sees it).
    diagnostics(&name, &source, &checked.diagnostics, format);
    let Some(model) = checked.model else {
        if format == MessageFormat::Human {
            crate::err(&format!("error: {name}: not tested: the spec has errors"));
        }
        return Err(SpecError::Spec);
    };
    let selected: Vec<_> = model.tests.iter().filter(|t| filter.is_none_or(|f| t.name.contains(f))).collect();
    let filtered_out = model.tests.len() - selected.len();
    match format {
        MessageFormat::Human => out(&format!("\nrunning {} test{} from {name}", selected.len(), if selected.len() == 1 { "" } else { "s" })),
        MessageFormat::Json => out(&json!({ "type": "suite", "event": "started", "spec": name, "test_count": selected.len(), "filtered_out": filtered_out }).to_string()),
    }
    if selected.is_empty() {
        if format == MessageFormat::Human {
            out(&format!(
                "\ntest result: ok. 0 passed, 0 failed, {filtered_out} filtered out; finished in 0.00s"
            ));
        }
        return Ok(());
    }
    let started = Instant::now();

    // Build into a private directory of our own (removed however the run
    // ends; after a kill -9, by the next devmapc's sweep).
    let dir = devmapc::scratch::PrivateDir::new("test")
        .map_err(|e| SpecError::Environment(format!("cannot make a private directory: {e}")))?;
    let emit = devmapc::Emit { c: false, obj: true, skel: false, manifest: false };
    let outputs = devmapc::Builder::new(spec).out_dir(dir.path()).emit(emit).build();
    interrupted()?;
    let obj = match outputs {
        Ok(o) => o.obj.expect("emitted"),
        Err(e) => return Err(SpecError::Environment(format!("cannot build it: {e}"))),
    };
    let file_name = spec.file_name().and_then(|n| n.to_str()).unwrap_or("spec.devmap");
    let ir = devmapc::lower::lower(&model, file_name, &source);
    // One index for every outcome and failure of the file (each is a pass).
    let index = LineIndex::new(&source);

    // The sandbox, the spec deployed in it, and the sockets watching it.
    let sandbox = Sandbox::new(&ir.data.devices)
        .map_err(|e| SpecError::Environment(format!("cannot build the test sandbox: {e}")))?;
    interrupted()?;
    let deployed = spectest::deploy(&sandbox, &obj, &ir)
        .map_err(|e| SpecError::Environment(format!("cannot deploy it in the test sandbox: {e}")))?;
    let watch = Watch::new(&sandbox).map_err(|e| {
        SpecError::Environment(format!("cannot open packet sockets in the test sandbox: {e}"))
    })?;

    let mut failed: Vec<TestOutcome> = Vec::new();
    let (mut passed, mut failures) = (0, 0);
    for test in selected {
        interrupted()?;
        let outcome = spectest::run_test(&model, test, &sandbox, &deployed, &watch, options, &INTERRUPTED);
        if outcome.error.as_deref() == Some("interrupted") {
            return Err(SpecError::Interrupted);
        }
        if outcome.passed() {
            passed += 1;
        } else {
            failures += 1;
        }
        match format {
            MessageFormat::Human => {
                out(&format!("test {} ... {}", outcome.name, if outcome.passed() { "ok" } else { "FAILED" }))
            }
            MessageFormat::Json => out(&outcome_json(&name, &source, &index, &outcome).to_string()),
        }
        if !outcome.passed() {
            failed.push(outcome);
        }
    }
    drop(watch);
    drop(deployed);
    drop(sandbox);
    totals.passed += passed;
    totals.failed += failures;
    if format == MessageFormat::Human {
        if !failed.is_empty() {
            out("\nfailures:");
            for outcome in &failed {
                out(&format!("\n---- {} ----", outcome.name));
                if let Some(error) = &outcome.error {
                    out(&format!("error: {error}"));
                }
                for f in &outcome.failures {
                    out(&render_failure(&name, &source, &index, f));
                }
            }
            out("\nfailures:");
            for outcome in &failed {
                out(&format!("    {}", outcome.name));
            }
        }
        let verdict = if failures == 0 { "ok" } else { "FAILED" };
        let filtered =
            if filtered_out > 0 { format!(", {filtered_out} filtered out") } else { String::new() };
        out(&format!(
            "\ntest result: {verdict}. {passed} passed, {failures} failed{filtered}; finished in {:.2}s",
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// A spec's diagnostics: rendered on stderr, or one JSON line each on
/// stdout with `"type": "diagnostic"`, like the other events of the stream.
fn diagnostics(file: &str, source: &str, diagnostics: &[devmapc::Diagnostic], format: MessageFormat) {
    match format {
        MessageFormat::Human => crate::render::diagnostics(file, source, diagnostics, format),
        MessageFormat::Json => {
            let index = LineIndex::new(source);
            for d in diagnostics {
                let mut line = d.to_json_indexed(file, source, &index);
                if let Some(object) = line.as_object_mut() {
                    object.insert("type".into(), json!("diagnostic"));
                }
                out(&line.to_string());
            }
        }
    }
}

/// The failure located in the spec (miette, from an excerpt of the lines
/// around it: see `render::Excerpt`), then what was seen, field by field.
fn render_failure(file: &str, source: &str, index: &LineIndex, f: &Failure) -> String {
    let theme =
        if colour() { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let (excerpt, spans) = crate::render::Excerpt::around(source, index, &[f.span]);
    let diagnostic = miette::MietteDiagnostic::new(crate::render::shorten(&f.message)).with_labels([
        miette::LabeledSpan::at(spans[0].start..spans[0].end, crate::render::shorten(&f.label)),
    ]);
    let report = miette::Report::new(diagnostic).with_source_code(miette::NamedSource::new(file, excerpt));
    let mut text = String::new();
    if handler.render_report(&mut text, report.as_ref()).is_err() {
        let (line, column) = index.line_col(source, f.span.start);
        text = format!("{file}:{line}:{column}: {}\n", f.message);
    }
    let details: String = spectest::describe(f).lines().map(|l| format!("  {l}\n")).collect();
    format!("{}{details}", text.trim_end_matches('\n').to_string() + "\n")
}

fn outcome_json(file: &str, source: &str, index: &LineIndex, outcome: &TestOutcome) -> serde_json::Value {
    let (line, _) = index.line_col(source, outcome.span.start);
    let failures: Vec<serde_json::Value> = outcome
        .failures
        .iter()
        .map(|f| {
            let (line, column) = index.line_col(source, f.span.start);
            let (end_line, end_column) = index.line_col(source, f.span.end);
            let seen: Vec<serde_json::Value> = f
                .seen
                .iter()
                .map(|(s, diffs)| {
                    let (place, device) = match s.place {
                        spectest::Place::Out(_) => ("out", &s.device),
                        spectest::Place::Stack(_) => ("stack", &s.device),
                    };
                    json!({
                        "place": place,
                        "device": device,
                        "packet": spectest::format_seen(&s.layers),
                        "bytes": s.frame.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                        "diff": diffs.iter().map(|d| json!({ "field": d.field, "expected": d.expected, "seen": d.seen, "equal": d.equal })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "line": line, "column": column, "end_line": end_line, "end_column": end_column,
                "message": f.message, "label": f.label, "expected": f.expected, "seen": seen, "verdicts": f.verdicts,
            })
        })
        .collect();
    json!({
        "type": "test",
        "event": if outcome.passed() { "ok" } else { "failed" },
        "spec": file,
        "name": outcome.name,
        "line": line,
        "duration_ms": outcome.duration.as_secs_f64() * 1000.0,
        "failures": failures,
        "error": outcome.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_capability() {
        assert_eq!(missing_for_test(u64::MAX), None);
        let root_without_raw = !(1u64 << CAP_NET_RAW);
        let message = missing_for_test(root_without_raw).unwrap();
        assert!(message.contains("missing capabilities CAP_NET_RAW;"), "{message}");
        let message = missing_for_test(0).unwrap();
        assert!(message.contains("CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN"), "{message}");
    }
}
