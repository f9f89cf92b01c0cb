//! Spec file → C, BPF object, Rust skeleton, manifest and typed Rust module
//! on disk.
//!
//! This is the only module that runs an external program: clang, through
//! libbpf-cargo's `SkeletonBuilder`. It is what `devmapc build` runs, and what
//! a build.rs calls:
//!
//! ```no_run
//! // build.rs: `fn main` calls this.
//! devmapc::Builder::new("specs/router.devmap").build().unwrap_or_else(|e| panic!("{e}"));
//! ```
//!
//! In a build script the builder also writes the typed module
//! (`<name>.rs`, see [`crate::typed`]): the spec's devices and key as Rust
//! types and a `Deployment` to apply and change it with.
//!
//! Outputs are deterministic: the same spec gives byte-identical files
//! wherever it is built (paths are relative in debug info, nothing records
//! a time). They are all made in a private directory
//! ([`crate::scratch`]) and moved into the output directory only when every
//! one was made, each through a fresh file renamed over the old one: a
//! failed build leaves the previous outputs, and nothing planted in the
//! output directory is written through. The spec's file name must give an
//! identifier ([`output_name`]).

use crate::diagnostic::render_plain;
use crate::scratch::PrivateDir;
use crate::{ir::Ir, lower, render, typed, Diagnostic};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which outputs to write. (The typed Rust module is chosen apart, with
/// [`Builder::typed`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emit {
    pub c: bool,
    pub obj: bool,
    pub skel: bool,
    pub manifest: bool,
}

impl Emit {
    pub const ALL: Emit = Emit { c: true, obj: true, skel: true, manifest: true };

    /// Parses `c,obj,skel,manifest`.
    pub fn parse(list: &str) -> Result<Emit, String> {
        let mut emit = Emit { c: false, obj: false, skel: false, manifest: false };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "c" => emit.c = true,
                "obj" => emit.obj = true,
                "skel" => emit.skel = true,
                "manifest" => emit.manifest = true,
                other => return Err(format!("unknown output `{other}` (expected c, obj, skel or manifest)")),
            }
        }
        Ok(emit)
    }
}

/// Builds one spec. In a build script, [`Builder::new`] is all it takes:
/// outputs go to `OUT_DIR` and cargo is told to rerun when the spec changes.
#[derive(Clone, Debug)]
pub struct Builder {
    spec: PathBuf,
    out_dir: Option<PathBuf>,
    clang: Option<PathBuf>,
    emit: Emit,
    /// The typed module: `None` means "in a build script, when the object
    /// and the manifest are emitted".
    typed: Option<bool>,
}

/// The files a build wrote.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// The name outputs are derived from (`vlan_switch` for
    /// `vlan-switch.devmap`); also the skeleton's name.
    pub name: String,
    pub c: Option<PathBuf>,
    pub obj: Option<PathBuf>,
    pub skel: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    /// The typed Rust module (`<name>.rs`).
    pub typed: Option<PathBuf>,
    /// Warnings of the spec, rendered.
    pub spec_warnings: Vec<Diagnostic>,
    /// What clang printed (warnings), line by line.
    pub clang_output: Vec<String>,
}

/// Why a build failed.
#[derive(Debug)]
pub enum BuildError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The spec has errors; the message shows them all, located. `source`
    /// is the text they point into (a spec that is not UTF-8 decoded
    /// lossily).
    Spec {
        file: String,
        source: String,
        rendered: String,
        diagnostics: Vec<Diagnostic>,
    },
    /// No clang to compile with.
    NoClang {
        tried: Vec<String>,
    },
    /// clang or the skeleton generator failed.
    Compile {
        message: String,
    },
    /// The spec's file name gives no name for the outputs.
    Name {
        spec: PathBuf,
        why: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            BuildError::Spec { file, rendered, diagnostics, .. } => {
                let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                write!(f, "{file} has {errors} error{}:\n\n{rendered}", if errors == 1 { "" } else { "s" })
            }
            BuildError::NoClang { tried } => write!(
                f,
                "no clang found to compile BPF C (tried {}).\n\
                 Install one (Debian/Ubuntu: `apt-get install clang`, or clang-19), \
                 or point DEVMAPC_CLANG at a clang binary.",
                tried.join(", ")
            ),
            BuildError::Compile { message } => write!(f, "{message}"),
            BuildError::Name { why, .. } => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl Builder {
    pub fn new(spec: impl Into<PathBuf>) -> Builder {
        Builder { spec: spec.into(), out_dir: None, clang: None, emit: Emit::ALL, typed: None }
    }

    /// Where outputs go (default: `OUT_DIR`, as in a build script).
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// The clang to use (default: `DEVMAPC_CLANG`, else the first of
    /// `clang`, `clang-19` ... `clang-14` on PATH).
    pub fn clang(mut self, clang: impl Into<PathBuf>) -> Builder {
        self.clang = Some(clang.into());
        self
    }

    pub fn emit(mut self, emit: Emit) -> Builder {
        self.emit = emit;
        self
    }

    /// Whether to write the typed Rust module `<name>.rs` (see
    /// [`crate::typed`]). By default it is written in a build script when
    /// the object and the manifest are (it embeds both), and not otherwise
    /// (`devmapc build`). `true` writes the object and the manifest too.
    pub fn typed(mut self, typed: bool) -> Builder {
        self.typed = Some(typed);
        self
    }

    /// Checks, lowers, renders and compiles the spec.
    pub fn build(&self) -> Result<Outputs, BuildError> {
        let in_build_script =
            std::env::var_os("OUT_DIR").is_some() && std::env::var_os("CARGO_MANIFEST_DIR").is_some();
        if in_build_script {
            println!("cargo:rerun-if-changed={}", self.spec.display());
            println!("cargo:rerun-if-env-changed=DEVMAPC_CLANG");
        }
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR").map(PathBuf::from).ok_or_else(|| BuildError::Io {
                path: self.spec.clone(),
                error: std::io::Error::other(
                    "no output directory: call .out_dir(...) (OUT_DIR is only set in build scripts)",
                ),
            })?,
        };
        let bytes =
            std::fs::read(&self.spec).map_err(|error| BuildError::Io { path: self.spec.clone(), error })?;
        let file_name = self.spec.file_name().and_then(|n| n.to_str()).unwrap_or("spec.devmap").to_string();
        let (source, checked) = crate::check_bytes(&bytes);
        let Some(model) = checked.model else {
            let file = self.spec.display().to_string();
            let rendered = render_plain(&file, &source, &checked.diagnostics);
            return Err(BuildError::Spec {
                file,
                source: source.into_owned(),
                rendered,
                diagnostics: checked.diagnostics,
            });
        };
        if in_build_script {
            for line in render_plain(&self.spec.display().to_string(), &source, &checked.diagnostics)
                .lines()
                .filter(|l| !l.is_empty())
            {
                println!("cargo:warning={line}");
            }
        }
        let ir = lower::lower(&model, &file_name, &source);
        let name =
            output_name(&self.spec).map_err(|why| BuildError::Name { spec: self.spec.clone(), why })?;
        let mut outputs =
            Outputs { name: name.clone(), spec_warnings: checked.diagnostics, ..Outputs::default() };
        let mut emit = self.emit;
        let typed = self.typed.unwrap_or(in_build_script && emit.obj && emit.manifest);
        if typed {
            emit.obj = true;
            emit.manifest = true;
        }

        // Everything is made in a private directory first and moved into
        // place only when all of it was made: a failed build leaves the
        // previous outputs as they were, and no half-written file.
        let stage =
            PrivateDir::new("build").map_err(|error| BuildError::Io { path: std::env::temp_dir(), error })?;
        let staged = |file: &str| stage.path().join(file);
        let write = |file: &str, bytes: &[u8]| {
            stage.create(file, bytes).map_err(|error| BuildError::Io { path: staged(file), error })
        };
        let c_file = format!("{name}.bpf.c");
        let (obj_file, skel_file) = (format!("{name}.bpf.o"), format!("{name}.skel.rs"));
        let (manifest_file, typed_file) = (format!("{name}.manifest.json"), format!("{name}.rs"));
        // The C is written even when not emitted: clang compiles the file.
        write(&c_file, render::render(&ir).as_bytes())?;
        let mut publish = Vec::new();
        if emit.c {
            publish.push((c_file.clone(), &mut outputs.c));
        }
        let mut clang_output = Vec::new();
        // The manifest binds its object by digest, so a manifest is never
        // written without compiling the object it names. Emitted alone, the
        // object stays in the private directory: an object already in the
        // output directory is left as it is (the runtime refuses it if stale).
        let mut object_sha256 = None;
        if emit.obj || emit.skel || emit.manifest {
            let clang = match &self.clang {
                Some(c) => c.clone(),
                None => find_clang()?,
            };
            clang_output = compile(
                &clang,
                &staged(&c_file),
                &staged(&obj_file),
                emit.skel.then(|| staged(&skel_file)).as_deref(),
            )?;
            let object = std::fs::read(staged(&obj_file))
                .map_err(|error| BuildError::Io { path: staged(&obj_file), error })?;
            object_sha256 = Some(object_digest(&object));
            if in_build_script {
                for line in &clang_output {
                    println!("cargo:warning={line}");
                }
            }
        }
        if emit.obj {
            publish.push((obj_file, &mut outputs.obj));
        }
        if emit.skel {
            publish.push((skel_file, &mut outputs.skel));
        }
        if emit.manifest {
            write(&manifest_file, manifest(&ir, &name, object_sha256.as_deref()).as_bytes())?;
            publish.push((manifest_file, &mut outputs.manifest));
        }
        if typed {
            write(&typed_file, typed::generate(&ir, &name).as_bytes())?;
            publish.push((typed_file, &mut outputs.typed));
        }
        std::fs::create_dir_all(&out_dir).map_err(|error| BuildError::Io { path: out_dir.clone(), error })?;
        // Every output goes into this one directory, whatever is renamed
        // on the way to it meanwhile.
        let out_fd = crate::scratch::open_dir(&out_dir)
            .map_err(|error| BuildError::Io { path: out_dir.clone(), error })?;
        for (file, slot) in publish {
            *slot =
                Some(publish_file(&staged(&file), std::os::fd::AsFd::as_fd(&out_fd), &out_dir.join(&file))?);
        }
        outputs.clang_output = clang_output;
        Ok(outputs)
    }
}

/// Moves a staged output to `target` (in the directory `dir`), unless
/// `target` is a regular file with the same bytes already (its time stays,
/// so cargo rebuilds nothing). [`replace_at`](crate::scratch::replace_at)
/// does it relative to `dir`: whatever `target` was (a symlink included)
/// is replaced, never written through, and a reader sees the old file or
/// the new one.
fn publish_file(
    staged: &Path,
    dir: std::os::fd::BorrowedFd<'_>,
    target: &Path,
) -> Result<PathBuf, BuildError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| BuildError::Io { path, error }
    };
    let bytes = std::fs::read(staged).map_err(io(staged))?;
    let name = target.file_name().expect("an output file");
    let flags = rustix::fs::OFlags::RDONLY
        | rustix::fs::OFlags::NOFOLLOW
        | rustix::fs::OFlags::NONBLOCK
        | rustix::fs::OFlags::CLOEXEC;
    let same = rustix::fs::openat(dir, name, flags, rustix::fs::Mode::empty())
        .ok()
        .map(std::fs::File::from)
        .is_some_and(|mut old| {
            let mut old_bytes = Vec::new();
            old.metadata().is_ok_and(|m| m.is_file())
                && std::io::Read::read_to_end(&mut old, &mut old_bytes).is_ok()
                && old_bytes == bytes
        });
    if same {
        return Ok(target.to_path_buf());
    }
    crate::scratch::replace_at(dir, name, &bytes, None).map_err(io(target))?;
    Ok(target.to_path_buf())
}

/// The manifest: everything the runtime needs to load and fill the object
/// without the spec. `object_sha256` ([`object_digest`] of the object it
/// was built with) binds it to that object: the runtime refuses to load
/// any other. `code_sha256` ([`code_binding`]) binds the code part of the
/// plan to that object in turn: the runtime refuses a manifest whose code
/// part was edited after the build.
pub fn manifest(ir: &Ir, name: &str, object_sha256: Option<&str>) -> String {
    manifest_with_code_hash(ir, name, &ir.code_hash(), object_sha256)
}

/// [`manifest`] with the code hash given: the runtime re-makes the manifest
/// of a build whose routes changed, from an IR without the egress bodies the
/// build's code hash covers.
pub fn manifest_with_code_hash(ir: &Ir, name: &str, code_hash: &str, object_sha256: Option<&str>) -> String {
    let mut value = serde_json::json!({
        "devmapc_manifest": 1,
        "name": name,
        "object": format!("{name}.bpf.o"),
        "code_hash": code_hash,
        "data_hash": ir.data_hash(),
        "maps": render::map_list(&ir.code),
        "ir": ir,
    });
    if let Some(digest) = object_sha256 {
        value["object_sha256"] = digest.into();
        value["code_sha256"] = code_binding(digest, &ir.code, code_hash).into();
    }
    let mut text = serde_json::to_string_pretty(&value).expect("the manifest serialises");
    text.push('\n');
    text
}

/// The SHA-256 of an object's bytes, in lowercase hex: the manifest's
/// `object_sha256`.
pub fn object_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The manifest's `code_sha256`: the SHA-256, in lowercase hex, of
/// `object_sha256`, a newline, `ir.code` as compact JSON, a newline and
/// `code_hash`. The runtime recomputes it from the manifest alone (from the
/// code part as it reads it back), so a code part edited or damaged after
/// the build no longer matches. It is a check against mistakes, not a
/// signature: whoever can rewrite the manifest can rewrite this too.
pub fn code_binding(object_sha256: &str, code: &crate::ir::CodePlan, code_hash: &str) -> String {
    use sha2::Digest;
    let code = serde_json::to_string(code).expect("the IR serialises");
    let mut hasher = sha2::Sha256::new();
    for part in [object_sha256, "\n", &code, "\n", code_hash] {
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `vlan-switch.devmap` → `vlan_switch`: the name of a build's files, of
/// its skeleton and typed module (Rust identifiers) and of its default pin
/// directory. It is the file name up to its first `.`, lowercased, `-` made
/// `_`, and `spec_` before a leading digit. A file name that gives no such
/// name is refused, never guessed at: only ASCII letters, digits, `-` and
/// `_`, a separator only between letters or digits, at most 64
/// characters, not a Rust keyword.
pub fn output_name(spec: &Path) -> Result<String, String> {
    let Some(file) = spec.file_name().and_then(|n| n.to_str()) else {
        return Err(format!("`{}` has no UTF-8 file name", spec.display()));
    };
    let refuse = |why: String| Err(format!("cannot name the outputs of `{file}`: {why}; rename the file"));
    let stem = file.split('.').next().unwrap_or_default();
    if stem.is_empty() {
        return refuse("it has no name before its first `.`".into());
    }
    if let Some(c) = stem.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '-' && *c != '_') {
        return refuse(format!("`{c}` is not an ASCII letter, digit, `-` or `_`"));
    }
    let mut name: String =
        stem.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_lowercase() }).collect();
    if name.starts_with('_') || name.ends_with('_') || name.contains("__") {
        return refuse(format!("`{stem}` has a `-` or `_` that is not between two letters or digits"));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "spec_");
    }
    if name.len() > MAX_NAME {
        return refuse(format!("`{stem}` is longer than {MAX_NAME} characters"));
    }
    if RUST_KEYWORDS.contains(&name.as_str()) {
        return refuse(format!("`{name}` is a Rust keyword"));
    }
    Ok(name)
}

const MAX_NAME: usize = 64;

const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn",
    "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop",
    "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "self", "static",
    "struct", "super", "trait", "true", "try", "type", "typeof", "union", "unsafe", "unsized", "use",
    "virtual", "where", "while", "yield",
];

/// The clang to use: `DEVMAPC_CLANG`, else the first that runs of `clang`,
/// `clang-19` ... `clang-14`.
pub fn find_clang() -> Result<PathBuf, BuildError> {
    let mut tried = Vec::new();
    if let Some(c) = std::env::var_os("DEVMAPC_CLANG") {
        let path = PathBuf::from(&c);
        if runs(&path) {
            return Ok(path);
        }
        tried.push(format!("DEVMAPC_CLANG={}", path.display()));
    }
    for name in ["clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14"] {
        if runs(Path::new(name)) {
            return Ok(PathBuf::from(name));
        }
        tried.push(name.to_string());
    }
    Err(BuildError::NoClang { tried })
}

fn runs(clang: &Path) -> bool {
    std::process::Command::new(clang).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Debian's multiarch include directory for the target, for `asm/types.h`
/// under `-target bpf`. Never `/usr/include` itself: its old `bpf/*.h`
/// would shadow the ones libbpf-cargo provides.
fn multiarch_include() -> Option<PathBuf> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.to_string());
    let triple = match arch.as_str() {
        "x86" => "i386-linux-gnu".to_string(),
        "arm" => "arm-linux-gnueabihf".to_string(),
        "powerpc64" => "powerpc64le-linux-gnu".to_string(),
        other => format!("{other}-linux-gnu"),
    };
    let dir = PathBuf::from("/usr/include").join(triple);
    dir.is_dir().then_some(dir)
}

/// Compiles any BPF C file to an object with the same clang and flags as
/// generated code (the hand-written references use it). Returns what clang
/// printed.
pub fn compile_bpf_c(c: &Path, obj: &Path) -> Result<Vec<String>, BuildError> {
    compile(&find_clang()?, c, obj, None)
}

/// Compiles C → object (and skeleton) with libbpf-cargo, returning what
/// clang printed. Debug info names the source relative to its directory, so
/// that it records no absolute path.
fn compile(clang: &Path, c: &Path, obj: &Path, skel: Option<&Path>) -> Result<Vec<String>, BuildError> {
    let absolute = |p: &Path| -> Result<PathBuf, BuildError> {
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let dir = dir.canonicalize().map_err(|error| BuildError::Io { path: dir.to_path_buf(), error })?;
        Ok(dir.join(p.file_name().expect("a file")))
    };
    let (c, obj) = (absolute(c)?, absolute(obj)?);
    let mut args: Vec<OsString> = vec!["-Wall".into(), "-Wno-unused-parameter".into()];
    if let Some(inc) = multiarch_include() {
        args.push("-I".into());
        args.push(inc.into_os_string());
    }
    // The linker keeps BTF but no DWARF; BTF line info names the source
    // file, which must not depend on where the output directory is.
    args.push(format!("-ffile-prefix-map={}=.", c.parent().expect("absolute").display()).into());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collector = ClangOutput { lines: lines.clone() };
    // A panic of the generator is a failed build, not a crash.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tracing::subscriber::with_default(collector, || {
            let mut builder = libbpf_cargo::SkeletonBuilder::new();
            builder.source(&c).obj(&obj).clang(clang).clang_args(&args);
            // No rustfmt of libbpf-cargo's choosing: it would follow the
            // rustfmt.toml of whatever directory devmapc runs in, and the
            // skeleton would differ from place to place. A path that does
            // not exist makes it skip formatting; [`format_skeleton`] does
            // it the same way everywhere.
            builder.rustfmt("/nonexistent/devmapc-formats-the-skeleton-itself");
            match skel {
                Some(skel) => builder.build_and_generate(skel),
                None => builder.build(),
            }
            .map_err(|e| format!("{e:#}"))
        })
    }))
    .unwrap_or_else(|_| Err("the skeleton generator panicked".into()));
    let output = std::mem::take(&mut *lines.lock().expect("no panic while collecting"));
    result.map_err(|message| BuildError::Compile { message })?;
    if let Some(skel) = skel {
        format_skeleton(skel)?;
    }
    Ok(output)
}

/// Formats a generated skeleton with rustfmt's default layout, whatever
/// rustfmt.toml lies around the directory devmapc runs in: rustfmt runs in
/// the skeleton's (private) directory, told to read an empty configuration
/// there. Without rustfmt the skeleton stays as generated.
fn format_skeleton(skel: &Path) -> Result<(), BuildError> {
    use std::io::Write as _;
    let io = |error| BuildError::Io { path: skel.to_path_buf(), error };
    let dir = skel.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let config = dir.join("rustfmt.toml");
    std::fs::write(&config, "").map_err(io)?;
    let text = std::fs::read(skel).map_err(io)?;
    let child = std::process::Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--config-path"])
        .arg(&config)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let result = match child {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
        Ok(mut child) => {
            child.stdin.take().expect("piped").write_all(&text).map_err(io)?;
            let out = child.wait_with_output().map_err(io)?;
            if !out.status.success() {
                let message =
                    format!("rustfmt failed on the skeleton: {}", String::from_utf8_lossy(&out.stderr));
                return Err(BuildError::Compile { message });
            }
            std::fs::write(skel, out.stdout).map_err(io)
        }
    };
    let _ = std::fs::remove_file(&config);
    result
}

/// Collects what libbpf-cargo reports of clang's output (tracing events
/// with a `compiler-*` target) instead of printing it.
struct ClangOutput {
    lines: Arc<Mutex<Vec<String>>>,
}

impl tracing::Subscriber for ClangOutput {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target().starts_with("compiler-")
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        let mut text = String::new();
        event.record(&mut Message(&mut text));
        self.lines.lock().expect("no panic while collecting").push(text);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_error_is_a_readable_build_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let spec = dir.join("bad.devmap");
        std::fs::write(&spec, "table { key = vlan.id }\ndevice a { ifname = \"a\" }\ningress { on = [a] }\nroute 10.0.0.1 -> a\n").unwrap();
        let err = Builder::new(&spec).out_dir(&dir).build().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BuildError::Spec { .. }));
        assert!(text.contains("has 1 error"), "{text}");
        assert!(text.contains("error[devmap::E014]: route key `10.0.0.1` is an IPv4 address"), "{text}");
        assert!(text.contains("bad.devmap:4:7"), "{text}");
        assert!(
            text.contains("4 | route 10.0.0.1 -> a\n  |       ^^^^^^^^ expected a number 0..=4095"),
            "{text}"
        );
        assert!(text.contains("= help: "), "{text}");
    }

    #[test]
    fn output_names_are_identifiers() {
        let name = |file: &str| output_name(Path::new(file));
        assert_eq!(name("x/vlan-switch.devmap").unwrap(), "vlan_switch");
        assert_eq!(name("9lives.devmap").unwrap(), "spec_9lives");
        assert_eq!(name("Edge.Router.devmap").unwrap(), "edge");
        assert_eq!(name("a_b-c.devmap").unwrap(), "a_b_c");
    }

    /// Each of these once reached the skeleton generator, which panics on a
    /// name with an empty `_` part; the others are not identifiers.
    #[test]
    fn file_names_that_give_no_identifier_are_refused() {
        for (file, why) in [
            ("x_.devmap", "not between two letters or digits"),
            ("_x.devmap", "not between two letters or digits"),
            ("a--b.devmap", "not between two letters or digits"),
            ("x*.devmap", "`*` is not an ASCII letter"),
            ("probé.devmap", "`é` is not an ASCII letter"),
            ("a b.devmap", "` ` is not an ASCII letter"),
            (".devmap", "no name before its first `.`"),
            ("type.devmap", "`type` is a Rust keyword"),
        ] {
            let err = output_name(Path::new(file)).unwrap_err();
            assert!(err.contains(why) && err.contains(file), "{file}: {err}");
        }
        assert!(output_name(Path::new(&format!("{}.devmap", "a".repeat(65)))).is_err());
        assert!(output_name(Path::new(&format!("{}.devmap", "a".repeat(64)))).is_ok());
    }
}
