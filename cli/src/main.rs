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
use rustix::fs::{Mode, OFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
    #[command(
        after_help = "Examples:\n  devmapc check examples/*.devmap\n  devmapc check --deny-warnings --message-format json router.devmap"
    )]
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
    /// replaced whole (a new file beside it, renamed over it, in the
    /// directory it was read from) keeping its mode and owner. In a
    /// directory no symlink is followed (each is listed as skipped); a
    /// symlink anywhere on a path named here (a directory on the way or the
    /// spec) is followed only when the caller or root owns the link (then
    /// the file it points to is rewritten).
    #[command(
        after_help = "Examples:\n  devmapc fmt examples/*.devmap\n  devmapc fmt --check specs/   # in CI: exit 1 if a file would change"
    )]
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
    #[command(
        after_help = "Examples:\n  devmapc build examples/vlan-switch.devmap -o gen/\n  devmapc build --emit c,manifest specs/*.devmap -o gen/\n  devmapc build --check specs/*.devmap -o gen/   # in CI: exit 1 if gen/ is stale"
    )]
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
    #[command(
        after_help = "Examples:\n  devmapc apply examples/vlan-switch.devmap\n  devmapc apply --dry-run examples/vlan-switch.devmap   # print the plan, change nothing\n  nsenter --net=/run/netns/lab devmapc apply --make-ready lab.devmap\n  devmapc apply --watch fabric.devmap   # follow device churn and spec edits"
    )]
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
    #[command(
        after_help = "Examples:\n  devmapc status                 # every deployment\n  devmapc status vlan_switch --json"
    )]
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
    #[command(
        after_help = "Examples:\n  sudo devmapc test examples/*.devmap\n  sudo devmapc test --filter vlan --timeout 500 router.devmap\n  sudo devmapc test --message-format json specs/*.devmap   # in CI"
    )]
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
        Command::Check { files, deny_warnings, message_format } => {
            check(&files, deny_warnings, message_format)
        }
        Command::Fmt { files, check } => fmt(&files, check),
        Command::Build { specs, out_dir, emit, check } => build(&specs, &out_dir, &emit, check),
        Command::Test { specs, filter, message_format, timeout } => {
            test::run(&specs, filter.as_deref(), message_format, timeout)
        }
        Command::Apply { spec, pin_dir, dry_run, make_ready, allow_not_ready, watch } => {
            deploy_cmd::apply_cmd(&deploy_cmd::ApplyArgs {
                spec,
                pin_dir,
                dry_run,
                make_ready,
                allow_not_ready,
                watch,
            })
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
    let dir = devmapc::scratch::PrivateDir::new("run")
        .map_err(|e| format!("cannot make a private directory: {e}"))?;
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
    Ok(ExitCode::from(if io_error {
        2
    } else if failed {
        1
    } else {
        0
    }))
}

fn fmt(files: &[PathBuf], check_only: bool) -> Result<ExitCode, String> {
    if files.len() == 1 && files[0] == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
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
    let mut run = FmtRun { check_only, changed: 0, broken: 0 };
    for path in files {
        match open_named(path)? {
            Named::File(dir, name) => run.file(dir.as_fd(), &name, path)?,
            Named::Dir(dir) => run.walk(&dir, path)?,
        }
    }
    let failed = run.broken > 0 || (check_only && run.changed > 0);
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

/// A spec named on the command line, opened: a regular file (its
/// directory and its name in it) or a directory to walk.
enum Named {
    File(OwnedFd, std::ffi::OsString),
    Dir(OwnedFd),
}

/// How many symlinks a name on the command line may go through.
const MAX_LINKS: usize = 16;

/// Opens what `path` names, one component at a time from `/` (or the
/// current directory), each looked up in the directory opened before it
/// without following a symlink. A symlink anywhere on the path, a directory
/// as well as the last name, is followed (its target resolved the same way)
/// only when the caller or root owns it: anyone else's link, e.g. planted
/// in a shared directory, is refused, like the kernel's protected_symlinks
/// does in sticky directories.
fn open_named(path: &Path) -> Result<Named, String> {
    use rustix::fs::{AtFlags, FileType};
    use std::collections::VecDeque;
    use std::path::Component;
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let cannot = |shown: &Path, e: rustix::io::Errno| {
        format!("cannot read {}: {}", shown.display(), std::io::Error::from(e))
    };
    let open_root =
        |shown: &Path| rustix::fs::open("/", dir_flags, Mode::empty()).map_err(|e| cannot(shown, e));
    let mut pending: VecDeque<std::ffi::OsString> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<_>, p: &Path| {
        for c in p.components().rev() {
            pending.push_front(c.as_os_str().to_os_string());
        }
    };
    push_front(&mut pending, path);
    let mut dir = if path.is_absolute() {
        open_root(path)?
    } else {
        rustix::fs::open(".", dir_flags, Mode::empty()).map_err(|e| cannot(Path::new("."), e))?
    };
    // The path walked so far, for messages.
    let mut shown = PathBuf::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        let last = pending.is_empty();
        match Path::new(&part).components().next() {
            Some(Component::RootDir) => {
                dir = open_root(path)?;
                shown = PathBuf::from("/");
                continue;
            }
            Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                shown.push("..");
                dir = rustix::fs::openat(&dir, "..", dir_flags, Mode::empty())
                    .map_err(|e| cannot(&shown, e))?;
                continue;
            }
            Some(_) => {}
        }
        let here = shown.join(&part);
        let st = rustix::fs::statat(&dir, &part, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| cannot(&here, e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let me = rustix::process::geteuid().as_raw();
                if st.st_uid != 0 && st.st_uid != me {
                    return Err(format!(
                        "{} is a symlink owned by another user (uid {}): fmt follows only symlinks of its caller or root; \
                         name the file it points to if you trust it",
                        here.display(),
                        st.st_uid
                    ));
                }
                hops += 1;
                if hops > MAX_LINKS {
                    return Err(format!(
                        "cannot read {}: more than {MAX_LINKS} symlinks on the way",
                        path.display()
                    ));
                }
                let target = rustix::fs::readlinkat(&dir, &part, Vec::new()).map_err(|e| cannot(&here, e))?;
                push_front(&mut pending, Path::new(std::ffi::OsStr::from_bytes(target.as_bytes())));
            }
            FileType::Directory => {
                dir = rustix::fs::openat(&dir, &part, dir_flags, Mode::empty())
                    .map_err(|e| cannot(&here, e))?;
                shown = here;
            }
            FileType::RegularFile if last => return Ok(Named::File(dir, part)),
            FileType::RegularFile => return Err(format!("cannot read {}: not a directory", here.display())),
            // Never opened: opening a device can do something.
            _ => return Err(format!("{} is not a regular file", here.display())),
        }
    }
    Ok(Named::Dir(dir))
}

/// The counts of one `fmt` run.
struct FmtRun {
    check_only: bool,
    changed: usize,
    broken: usize,
}

impl FmtRun {
    /// Every `.devmap` file below the directory `dir` (shown as `shown`),
    /// in name order, each directory opened from its parent without
    /// following symlinks. Symlinks are skipped and listed as skipped:
    /// anyone who can write in the tree could point one anywhere.
    fn walk(&mut self, dir: &OwnedFd, shown: &Path) -> Result<(), String> {
        use rustix::fs::{AtFlags, FileType};
        let list_error =
            |e: rustix::io::Errno| format!("cannot list {}: {}", shown.display(), std::io::Error::from(e));
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir).map_err(list_error)? {
            let name = entry.map_err(list_error)?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsString::from_vec(name));
            }
        }
        names.sort();
        for name in names {
            let path = shown.join(&name);
            let Ok(st) = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) else {
                // Gone since it was listed.
                continue;
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => err(&format!(
                    "skipped {}: a symlink (fmt follows none inside a directory)",
                    path.display()
                )),
                FileType::Directory => {
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let sub = rustix::fs::openat(dir, &name, flags, Mode::empty()).map_err(|e| {
                        format!("cannot list {}: {}", path.display(), std::io::Error::from(e))
                    })?;
                    self.walk(&sub, &path)?;
                }
                _ if Path::new(&name).extension().is_none_or(|e| e != "devmap") => {}
                FileType::RegularFile => self.file(dir.as_fd(), &name, &path)?,
                _ => {
                    err(&format!("skipped {}: not a regular file (a FIFO, socket or device)", path.display()))
                }
            }
        }
        Ok(())
    }

    /// Formats the file `name` in `dir` (shown as `shown`). Read, checked
    /// and replaced through `dir` only: opened without following a
    /// symlink, its mode and owner taken from that descriptor, the new
    /// text put beside it and renamed over it by
    /// [`devmapc::scratch::replace_at`], so a crash leaves the old or the
    /// new text, and nothing renamed meanwhile redirects the write.
    fn file(&mut self, dir: BorrowedFd<'_>, name: &std::ffi::OsStr, shown: &Path) -> Result<(), String> {
        // Checked a moment ago, checked again on the descriptor: NONBLOCK
        // and NOCTTY keep a fifo or a terminal swapped in meanwhile from
        // blocking or becoming ours.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let cannot = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", shown.display());
        let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| cannot("read", e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| cannot("read", e.into()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(format!("{} is not a regular file", shown.display()));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)
            .map_err(|e| cannot("read", e))?;
        let (source, formatted) = format_bytes(&bytes);
        let formatted = match formatted {
            Ok(out) => out,
            Err(diagnostics) => {
                render::diagnostics(
                    &shown.display().to_string(),
                    &source,
                    &diagnostics,
                    MessageFormat::Human,
                );
                err(&format!("error: {} was not formatted: it does not parse", shown.display()));
                self.broken += 1;
                return Ok(());
            }
        };
        if formatted == source {
            return Ok(());
        }
        self.changed += 1;
        if self.check_only {
            out(&format!("would reformat {}", shown.display()));
        } else {
            devmapc::scratch::replace_at(dir, name, formatted.as_bytes(), Some(&st))
                .map_err(|e| cannot("replace", e))?;
            out(&format!("formatted {}", shown.display()));
        }
        Ok(())
    }
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
        Some(
            devmapc::scratch::PrivateDir::new("check")
                .map_err(|e| format!("cannot make a private directory: {e}"))?,
        )
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
                    render::diagnostics(
                        &spec.display().to_string(),
                        &source,
                        &outputs.spec_warnings,
                        MessageFormat::Human,
                    );
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
