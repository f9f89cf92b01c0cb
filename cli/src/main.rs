//! `devmapc`, the command line: argument parsing and terminal output over
//! the `devmapc` library. Nothing here knows the language; every decision
//! is the library's.
//!
//! Exit codes: 0 success, 1 the spec has errors (or a `--check` found work
//! to do), 2 usage or I/O errors. Every line goes through `output`, which
//! keeps them when the reader of a pipe went away.

mod deploy_cmd;
mod output;
mod render;
mod test;

pub use output::{err, out};

use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "devmapc",
    version,
    about = "Compile declarative .devmap specs into XDP forwarding through BPF_MAP_TYPE_DEVMAP_HASH",
    long_about = "devmapc turns a .devmap spec (devices, the key read from each packet, routes from keys to \
                  devices, per-device egress programs) into an XDP data path.\n\n\
                  Start with `devmapc check my.devmap`; the language is described in docs/language.md.",
    after_help = "Exit status: 0 success, 1 the spec has errors (or --check found work to do), 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check specs, reporting every error and warning.
    ///
    /// Exits 0 when no spec has an error (warnings are allowed unless
    /// --deny-warnings), 1 when one has, 2 when a file cannot be read.
    #[command(after_help = "Examples:\n  devmapc check examples/*.devmap\n  devmapc check --deny-warnings --message-format json router.devmap")]
    Check {
        /// The .devmap files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Treat warnings as errors (exit 1 when there is any).
        #[arg(long)]
        deny_warnings: bool,
        /// `human` renders diagnostics with the source underlined (colour
        /// only on a terminal, never with NO_COLOR set); `json` prints one
        /// JSON object per diagnostic on standard output.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Rewrite specs in the one canonical layout, keeping every comment.
    ///
    /// Formatting never changes what a spec means, and formatting twice
    /// changes nothing. A file with syntax errors is reported and left
    /// untouched. `-` formats standard input to standard output. A file is
    /// replaced whole (a new file beside it, renamed over it) keeping its
    /// mode and owner; a spec that is a symlink stays one: the file it
    /// points to is rewritten.
    #[command(after_help = "Examples:\n  devmapc fmt examples/*.devmap\n  devmapc fmt --check specs/   # in CI: exit 1 if a file would change")]
    Fmt {
        /// The .devmap files to format (directories: every .devmap below).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Change nothing; list the files that would change and exit 1 if
        /// there are any.
        #[arg(long)]
        check: bool,
    },
    /// Compile specs to BPF C, objects, Rust skeletons and manifests.
    ///
    /// For SPEC `vlan-switch.devmap` it writes into DIR: `vlan_switch.bpf.c`
    /// (the generated C), `vlan_switch.bpf.o` (the BPF object, with BTF),
    /// `vlan_switch.skel.rs` (a libbpf-rs skeleton) and
    /// `vlan_switch.manifest.json` (maps, key layout, programs, devices,
    /// routes, arguments and the code and data hashes, for the runtime).
    /// Outputs are byte-identical on every build of the same spec. clang is
    /// found via DEVMAPC_CLANG, else `clang`, `clang-19` ... on PATH.
    #[command(after_help = "Examples:\n  devmapc build examples/vlan-switch.devmap -o gen/\n  devmapc build --emit c,manifest specs/*.devmap -o gen/\n  devmapc build --check specs/*.devmap -o gen/   # in CI: exit 1 if gen/ is stale")]
    Build {
        /// The .devmap files to build.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<PathBuf>,
        /// Where to write the outputs.
        #[arg(short = 'o', long = "out-dir", value_name = "DIR", default_value = "target/devmapc")]
        out_dir: PathBuf,
        /// Which outputs to write, comma-separated: c, obj, skel, manifest.
        #[arg(long, value_name = "LIST", default_value = "c,obj,skel,manifest")]
        emit: String,
        /// Write nothing; exit 1 if the files in DIR are missing or differ
        /// from what a build would write (for committed generated files).
        #[arg(long)]
        check: bool,
    },
    /// Put a spec to work: load, fill and attach it, or bring a running
    /// deployment up to date with the spec.
    ///
    /// SPEC is a .devmap (built on the spot) or a build's
    /// NAME.manifest.json (its object beside it). The first apply loads the
    /// programs, fills the maps and attaches the ingress program to every
    /// `ingress.on` device; everything is pinned under
    /// /sys/fs/bpf/devmapc/NAME, so it keeps running after devmapc exits.
    /// A later apply of the same spec with changed routes, devices or
    /// arguments rewrites only the map entries that differ (keys that leave
    /// first, so a full table has room, then adds and changes before the
    /// other removals, never clearing a live map); a changed key, egress
    /// program or map setting loads new programs into fresh maps and swaps
    /// them in atomically (bpf_link_update). Either way, when a step fails
    /// the previous configuration keeps serving. Concurrent applies wait
    /// for each other.
    ///
    /// Before anything changes, every device is looked up in the current
    /// network namespace (netlink, never /sys) and every redirect target is
    /// checked to be able to take XDP frames. To apply inside a namespace,
    /// use `nsenter --net=/run/netns/NAME devmapc apply ...` (not `ip netns
    /// exec`, whose private /sys hides /sys/fs/bpf).
    #[command(after_help = "Examples:\n  devmapc apply examples/vlan-switch.devmap\n  devmapc apply --dry-run examples/vlan-switch.devmap   # print the plan, change nothing\n  nsenter --net=/run/netns/lab devmapc apply --make-ready lab.devmap\n  devmapc apply --watch fabric.devmap   # follow device churn and spec edits")]
    Apply {
        /// The .devmap spec (or a build's NAME.manifest.json).
        #[arg(value_name = "SPEC")]
        spec: PathBuf,
        /// Where the deployment is pinned [default: /sys/fs/bpf/devmapc/NAME].
        /// Must be on a bpffs that outlives the command; on a host where none
        /// is mounted at /sys/fs/bpf, apply mounts it (not under `ip netns
        /// exec`, where it would die with the command).
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// Print what would change (map entries added, changed, removed;
        /// programs replaced; links) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Make veth targets able to receive XDP frames by turning GRO on
        /// for their peers.
        #[arg(long)]
        make_ready: bool,
        /// Apply even when a redirect target cannot receive XDP frames (its
        /// frames are dropped); the reasons are printed as warnings.
        #[arg(long)]
        allow_not_ready: bool,
        /// Keep running: re-apply when a network device appears, disappears
        /// or changes (a re-created device gets its entries back), and when
        /// the spec file changes.
        #[arg(long)]
        watch: bool,
    },
    /// Show deployments: attached devices and modes, routes (key → device
    /// (egress program)) with their counters, per-device counters, and drift
    /// between the kernel's maps and the last apply.
    ///
    /// Exits 1 when the kernel's maps differ from the last apply, when a
    /// device of the spec is gone, or when run from another network
    /// namespace than the deployment's (it warns); 2 on errors.
    #[command(after_help = "Examples:\n  devmapc status                 # every deployment\n  devmapc status vlan_switch --json")]
    Status {
        /// A deployment's NAME (under --pin-root) or its pin directory;
        /// without it, every deployment.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Where deployments are pinned.
        #[arg(long, value_name = "DIR", default_value = devmapc_runtime::deploy::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
    },
    /// Take a deployment down: detach its links, remove its pins; the
    /// kernel then frees its programs and maps.
    #[command(after_help = "Examples:\n  devmapc detach vlan_switch\n  devmapc detach /sys/fs/bpf/lab/fwd")]
    Detach {
        /// A deployment's NAME (under --pin-root) or its pin directory.
        #[arg(value_name = "NAME")]
        name: String,
        /// Where deployments are pinned.
        #[arg(long, value_name = "DIR", default_value = devmapc_runtime::deploy::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
    },
    /// Run the specs' `test` blocks against the real kernel, in throwaway
    /// network namespaces.
    ///
    /// For each spec: builds it, makes a sandbox (one veth pair per device,
    /// named after its `ifname`, with its `ifindex` when the spec fixes
    /// one), deploys the spec there, then sends each test's packets in on
    /// their devices and matches what leaves every device, and what goes up
    /// the stack, against the expectations. Nothing of the host is touched;
    /// the sandbox is gone when the run ends, however it ends. Needs root
    /// (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN). Exits 0 when every test
    /// passes, 1 when one fails (or a spec has errors), 2 when the tests
    /// could not run, 130 when interrupted. See docs/testing.md.
    #[command(after_help = "Examples:\n  sudo devmapc test examples/*.devmap\n  sudo devmapc test --filter vlan --timeout 500 router.devmap\n  sudo devmapc test --message-format json specs/*.devmap   # in CI")]
    Test {
        /// The .devmap files whose tests to run.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<PathBuf>,
        /// Run only the tests whose name contains NAME.
        #[arg(long, value_name = "NAME")]
        filter: Option<String>,
        /// `human`: one line per test, then the failures located in the
        /// spec; `json`: one JSON object per line (suite, test, summary).
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
        /// How long to wait for the packets of each `send`, in
        /// milliseconds (a test that expects `drop` waits this long; others
        /// stop once every expectation is met and no packet came for 20 ms).
        #[arg(long, value_name = "MS", default_value_t = 200)]
        timeout: u64,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let builds = matches!(cli.command, Command::Build { .. } | Command::Apply { .. } | Command::Test { .. });
    let _tmp = match builds.then(private_tmpdir).transpose() {
        Ok(dir) => dir,
        Err(message) => {
            err(&format!("error: {message}"));
            return ExitCode::from(2);
        }
    };
    if let (Some(dir), false) = (&_tmp, matches!(cli.command, Command::Test { .. })) {
        remove_on_signal(dir.path().to_path_buf());
    }
    let result = match cli.command {
        Command::Check { files, deny_warnings, message_format } => check(&files, deny_warnings, message_format),
        Command::Fmt { files, check } => fmt(&files, check),
        Command::Build { specs, out_dir, emit, check } => build(&specs, &out_dir, &emit, check),
        Command::Test { specs, filter, message_format, timeout } => test::run(&specs, filter.as_deref(), message_format, timeout),
        Command::Apply { spec, pin_dir, dry_run, make_ready, allow_not_ready, watch } => {
            deploy_cmd::apply_cmd(&deploy_cmd::ApplyArgs { spec, pin_dir, dry_run, make_ready, allow_not_ready, watch })
        }
        Command::Status { name, json, pin_root } => deploy_cmd::status_cmd(name.as_deref(), &pin_root, json),
        Command::Detach { name, pin_root } => deploy_cmd::detach_cmd(&name, &pin_root),
    };
    let code = match result {
        Ok(code) => code,
        Err(message) => {
            err(&format!("error: {message}"));
            ExitCode::from(2)
        }
    };
    output::exit_code(code)
}

/// A private directory for every temporary file of this process (devmapc's
/// own, and those of libbpf-cargo and clang, which follow `TMPDIR`): one
/// place to remove on exit, and for the next run's sweep after a
/// `kill -9`. Called before any thread is started.
fn private_tmpdir() -> Result<devmapc::scratch::PrivateDir, String> {
    let dir = devmapc::scratch::PrivateDir::new("run").map_err(|e| format!("cannot make a private directory: {e}"))?;
    std::env::set_var("TMPDIR", dir.path());
    Ok(dir)
}

/// On SIGINT or SIGTERM, removes `dir` and then dies of the signal, as
/// without the handler. The signals are blocked in every thread and taken
/// by one that waits for them (children get the default mask back from
/// `std::process::Command`). Called before any other thread is started.
fn remove_on_signal(dir: PathBuf) {
    // SAFETY: plain signal-set manipulation on sets owned here.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: waits on a valid set; then restores the default action
        // and raises the signal in this thread, where it is unblocked.
        unsafe {
            if libc::sigwait(&set, &mut signal) != 0 {
                return;
            }
            let _ = std::fs::remove_dir_all(&dir);
            libc::signal(signal, libc::SIG_DFL);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
    });
}

/// A spec file's bytes.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn check(files: &[PathBuf], deny_warnings: bool, format: MessageFormat) -> Result<ExitCode, String> {
    let mut failed = false;
    let mut io_error = false;
    for path in files {
        let bytes = match read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                err(&format!("error: {e}"));
                io_error = true;
                continue;
            }
        };
        let (source, checked) = devmapc::check_bytes(&bytes);
        let name = path.display().to_string();
        render::diagnostics(&name, &source, &checked.diagnostics, format);
        let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = checked.diagnostics.len() - errors;
        if errors > 0 || (deny_warnings && warnings > 0) {
            failed = true;
        }
        if format == MessageFormat::Human {
            render::summary(&name, errors, warnings, deny_warnings);
        }
    }
    Ok(ExitCode::from(if io_error { 2 } else if failed { 1 } else { 0 }))
}

fn fmt(files: &[PathBuf], check_only: bool) -> Result<ExitCode, String> {
    if files.len() == 1 && files[0] == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(|e| format!("cannot read standard input: {e}"))?;
        let (source, formatted) = format_bytes(&bytes);
        return Ok(match formatted {
            Ok(out_text) => {
                out(out_text.trim_end_matches('\n'));
                ExitCode::SUCCESS
            }
            Err(diagnostics) => {
                render::diagnostics("<stdin>", &source, &diagnostics, MessageFormat::Human);
                ExitCode::from(1)
            }
        });
    }
    let mut paths = Vec::new();
    for path in files {
        collect_specs(path, &mut paths)?;
    }
    let (mut changed, mut broken) = (0, 0);
    for path in &paths {
        let real = fmt_target(path)?;
        let bytes = read(&real)?;
        let (source, formatted) = format_bytes(&bytes);
        let formatted = match formatted {
            Ok(out) => out,
            Err(diagnostics) => {
                render::diagnostics(&path.display().to_string(), &source, &diagnostics, MessageFormat::Human);
                err(&format!("error: {} was not formatted: it does not parse", path.display()));
                broken += 1;
                continue;
            }
        };
        if formatted == source {
            continue;
        }
        changed += 1;
        if check_only {
            out(&format!("would reformat {}", path.display()));
        } else {
            write_atomically(&real, &formatted)?;
            out(&format!("formatted {}", path.display()));
        }
    }
    let failed = broken > 0 || (check_only && changed > 0);
    Ok(ExitCode::from(u8::from(failed)))
}

/// A spec's bytes formatted, or the diagnostics that stop it, with the text
/// they point into.
fn format_bytes(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, Result<String, Vec<devmapc::Diagnostic>>) {
    match devmapc::decode(bytes) {
        Ok(source) => (source.into(), devmapc::fmt::format_source(source)),
        Err((source, diagnostic)) => (source.into(), Err(vec![*diagnostic])),
    }
}

/// A file as given, or every `.devmap` file below a directory, sorted.
fn collect_specs(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list {}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() || entry.extension().is_some_and(|e| e == "devmap") {
            collect_specs(&entry, out)?;
        }
    }
    Ok(())
}

/// The file `fmt` rewrites for `path`: the file itself, or, when `path` is
/// a symlink, the file it points to (the link stays as it is).
fn fmt_target(path: &Path) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !std::fs::metadata(&real).is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok(real)
}

/// Replaces `real` (a resolved path, see [`fmt_target`]) so that a crash
/// leaves the old or the new text, never half of one. The text goes to a
/// fresh file created exclusively (random name) in the same directory,
/// gets the old file's mode (and owner, when root), is synced, then
/// renamed over the old one: no name anyone planted is written through.
fn write_atomically(real: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", real.display());
    let meta = std::fs::symlink_metadata(real).map_err(|e| fail("read", e))?;
    let dir = real.parent().expect("a resolved file has a directory");
    let name = real.file_name().expect("a resolved file has a name").to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".fmt")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    tmp.write_all(text.as_bytes()).map_err(|e| fail("write", e))?;
    let file = tmp.as_file();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid())).map_err(|e| fail("keep the owner of", e))?;
    }
    // After the owner: chown clears set-id bits.
    file.set_permissions(meta.permissions()).map_err(|e| fail("keep the mode of", e))?;
    file.sync_all().map_err(|e| fail("write", e))?;
    tmp.persist(real).map_err(|e| fail("replace", e.error))?;
    Ok(())
}

fn build(specs: &[PathBuf], out_dir: &Path, emit: &str, check_only: bool) -> Result<ExitCode, String> {
    let emit = devmapc::Emit::parse(emit)?;
    // Names are settled before anything is built: a file name that names no
    // output, or two specs that would write the same files, is a usage
    // error.
    let mut names: std::collections::BTreeMap<String, &PathBuf> = Default::default();
    for spec in specs {
        let name = devmapc::builder::output_name(spec)?;
        if let Some(other) = names.insert(name.clone(), spec) {
            return Err(format!(
                "{} and {} would both build as `{name}` (the same output files and pin directory); rename one",
                other.display(),
                spec.display()
            ));
        }
    }
    if !check_only && out_dir.exists() && !out_dir.is_dir() {
        return Err(format!("the output directory {} is not a directory", out_dir.display()));
    }
    let scratch = if check_only {
        Some(devmapc::scratch::PrivateDir::new("check").map_err(|e| format!("cannot make a private directory: {e}"))?)
    } else {
        None
    };
    let target = scratch.as_ref().map_or(out_dir, |s| s.path());
    let (mut failed, mut io_error) = (false, false);
    let mut stale = Vec::new();
    for spec in specs {
        match devmapc::Builder::new(spec).out_dir(target).emit(emit).build() {
            Ok(outputs) => {
                if let Ok(source) = std::fs::read_to_string(spec) {
                    render::diagnostics(&spec.display().to_string(), &source, &outputs.spec_warnings, MessageFormat::Human);
                }
                for line in &outputs.clang_output {
                    err(&format!("clang: {line}"));
                }
                let written = [&outputs.c, &outputs.obj, &outputs.skel, &outputs.manifest];
                for path in written.into_iter().flatten() {
                    let name = path.file_name().expect("outputs are files");
                    if check_only {
                        let committed = out_dir.join(name);
                        if std::fs::read(&committed).ok() != std::fs::read(path).ok() {
                            stale.push(committed);
                        }
                    } else {
                        out(&format!("wrote {}", path.display()));
                    }
                }
            }
            Err(devmapc::BuildError::Spec { source, diagnostics, .. }) => {
                render::diagnostics(&spec.display().to_string(), &source, &diagnostics, MessageFormat::Human);
                err(&format!("error: {} was not built: it has errors", spec.display()));
                failed = true;
            }
            Err(e) => {
                err(&format!("error: building {}: {e}", spec.display()));
                // Files that cannot be read or written, or no clang: the
                // spec is not at fault.
                io_error |= matches!(e, devmapc::BuildError::Io { .. } | devmapc::BuildError::NoClang { .. });
                failed = true;
            }
        }
    }
    drop(scratch);
    if check_only {
        for path in &stale {
            out(&format!("stale: {} (run `devmapc build` to update it)", path.display()));
        }
        failed |= !stale.is_empty();
    }
    Ok(ExitCode::from(if io_error { 2 } else { u8::from(failed) }))
}
