//! `devmapc apply`, `status` and `detach`: the runtime, from the command
//! line. Every decision is `devmapc_runtime`'s; this file parses, builds
//! when given a spec, and prints.

use crate::{err, out, render, MessageFormat};
use devmapc::ir::Ir;
use devmapc::scratch::PrivateDir;
use devmapc_runtime::apply::{self, Kind, Options};
use devmapc_runtime::deploy::{self, read_manifest_file};
use devmapc_runtime::status;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// `devmapc apply` arguments.
pub struct ApplyArgs {
    pub spec: PathBuf,
    pub pin_dir: Option<PathBuf>,
    pub dry_run: bool,
    pub make_ready: bool,
    pub allow_not_ready: bool,
    pub watch: bool,
}

/// A build to apply, with the private directory it was built in (removed
/// on drop; the pinned manifest is the lasting record of what was applied).
struct Built {
    object: PathBuf,
    ir: Ir,
    name: String,
    _scratch: Option<PrivateDir>,
}

/// Builds SPEC (a `.devmap`), or reads a build's manifest
/// (`NAME.manifest.json`, with its object beside it).
fn build(spec: &Path) -> Result<Built, String> {
    if spec.to_string_lossy().ends_with(".manifest.json") {
        let (object, ir) = read_manifest_file(spec).map_err(|e| e.to_string())?;
        let name = devmapc::builder::output_name(Path::new(&ir.spec))?;
        return Ok(Built { object, ir, name, _scratch: None });
    }
    // Refused before anything is built.
    let name = devmapc::builder::output_name(spec)?;
    let scratch = PrivateDir::new("apply").map_err(|e| format!("cannot make a private directory: {e}"))?;
    let emit = devmapc::Emit::parse("obj,manifest")?;
    let result = devmapc::Builder::new(spec).out_dir(scratch.path()).emit(emit).build();
    let outputs = match result {
        Ok(outputs) => outputs,
        Err(devmapc::BuildError::Spec { source, diagnostics, .. }) => {
            render::diagnostics(&spec.display().to_string(), &source, &diagnostics, MessageFormat::Human);
            return Err(format!("{} has errors: nothing was applied", spec.display()));
        }
        Err(e) => {
            return Err(format!("building {}: {e}", spec.display()));
        }
    };
    if let Ok(source) = std::fs::read_to_string(spec) {
        render::diagnostics(
            &spec.display().to_string(),
            &source,
            &outputs.spec_warnings,
            MessageFormat::Human,
        );
    }
    let manifest = outputs.manifest.clone().ok_or("the build wrote no manifest")?;
    let (object, ir) = read_manifest_file(&manifest).map_err(|e| e.to_string())?;
    Ok(Built { object, ir, name, _scratch: Some(scratch) })
}

/// Refuses to apply over the deployment of another spec file
/// (`probe-c.devmap` over `probe_c.devmap`, which give the same name and so
/// the same default pin directory): one would silently replace the other.
/// A spec is known by its file name, as the manifest records it.
fn built_name(ir: &Ir) -> String {
    devmapc::builder::output_name(Path::new(&ir.spec)).unwrap_or_else(|_| ir.spec.clone())
}

fn check_same_spec(dir: &Path, ir: &Ir) -> Result<(), String> {
    let Ok(text) = deploy::read_manifest(dir) else {
        // Nothing deployed, or nothing readable: apply itself says.
        return Ok(());
    };
    let Ok(manifest) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    let Some(pinned) = manifest["ir"]["spec"].as_str() else {
        return Ok(());
    };
    if pinned == ir.spec {
        return Ok(());
    }
    Err(format!(
        "{} is the deployment of {}, not of {}: their outputs are both named `{}`. Rename one of \
         them, or detach that deployment first",
        dir.display(),
        pinned,
        ir.spec,
        built_name(ir),
    ))
}

pub fn apply_cmd(args: &ApplyArgs) -> Result<ExitCode, String> {
    let built = build(&args.spec)?;
    // `components` drops a trailing slash: `x/` and `x` are one directory.
    let dir = args
        .pin_dir
        .as_ref()
        .map(|d| d.components().collect())
        .unwrap_or_else(|| deploy::default_pin_dir(&built.name));
    check_same_spec(&dir, &built.ir)?;
    let opts = Options {
        pin_dir: dir.clone(),
        make_ready: args.make_ready,
        allow_not_ready: args.allow_not_ready,
        dry_run: args.dry_run,
        // The command reads the kernel back: re-applying repairs drift.
        trust_last_apply: false,
    };
    let report = apply::apply(&built.object, &built.ir, &opts).map_err(|e| e.to_string())?;
    print_report(&report);
    // Exit codes: 0 applied (or, with --dry-run, would apply); 1 the dry
    // run found that the apply would fail; 2 an error.
    if args.dry_run && !report.would_fail.is_empty() {
        return Ok(ExitCode::from(1));
    }
    if !args.watch || args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    drop(built);
    watch(args, &opts)
}

fn print_report(report: &apply::Report) {
    for line in report.to_string().lines() {
        out(line);
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `--watch`: re-applies when a device appears, goes or changes (rtnetlink)
/// or when the spec file changes. A failed re-apply is reported and leaves
/// the last good configuration serving; the watch goes on.
fn watch(args: &ApplyArgs, opts: &Options) -> Result<ExitCode, String> {
    let events = devmapc_runtime::watch::LinkEvents::open()
        .map_err(|e| format!("cannot listen to link events: {e}"))?;
    let mut stamp = modified(&args.spec);
    err(&format!(
        "watching {} and the network devices (Ctrl-C stops; the deployment stays)",
        args.spec.display()
    ));
    loop {
        let link_change = events.wait(Duration::from_millis(500)).map_err(|e| format!("link events: {e}"))?;
        let now = modified(&args.spec);
        let spec_change = now != stamp;
        if !link_change && !spec_change {
            continue;
        }
        // Let a burst of changes (a device re-created and set up) settle.
        std::thread::sleep(Duration::from_millis(100));
        while events.wait(Duration::from_millis(50)).unwrap_or(false) {}
        stamp = now;
        let why = if spec_change { "the spec changed" } else { "network devices changed" };
        match build(&args.spec).and_then(|b| apply::apply(&b.object, &b.ir, opts).map_err(|e| e.to_string()))
        {
            Ok(report) if report.kind == Kind::Unchanged && report.repaired.is_empty() => {}
            Ok(report) => {
                out(&format!("{why}: re-applied"));
                print_report(&report);
            }
            Err(e) => err(&format!("error: {why}, re-apply failed (the previous configuration stays): {e}")),
        }
    }
}

/// A NAME under the pin root, or a directory. Trailing slashes do not
/// count: `fwd/` is the NAME `fwd`, `/sys/fs/bpf/x/` the directory.
fn pin_dir(target: &str, root: &Path) -> PathBuf {
    let trimmed = target.trim_end_matches('/');
    if trimmed.is_empty() {
        PathBuf::from(target)
    } else if trimmed.contains('/') {
        PathBuf::from(trimmed)
    } else {
        root.join(trimmed)
    }
}

pub fn status_cmd(target: Option<&str>, root: &Path, json: bool) -> Result<ExitCode, String> {
    deploy::check_privileges("cannot read deployments").map_err(|e| e.to_string())?;
    // Under `ip netns exec`, /sys/fs/bpf is an empty sysfs directory: say
    // why nothing can be seen rather than "nothing deployed". On a host
    // without a bpffs there is nothing to see.
    let looked_at = target.map_or_else(|| root.to_path_buf(), |t| pin_dir(t, root));
    match deploy::pin_dir_would_mount(&looked_at) {
        Ok(None) => {}
        Ok(Some(at)) if target.is_some() => {
            return Err(format!(
                "nothing deployed at {}: no bpffs is mounted at {}",
                looked_at.display(),
                at.display()
            ))
        }
        Ok(Some(at)) => {
            out(&if json {
                "[]".to_string()
            } else {
                format!("nothing deployed: no bpffs is mounted at {}", at.display())
            });
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.to_string()),
    }
    let dirs = match target {
        Some(t) => vec![pin_dir(t, root)],
        None => {
            let all = status::list(root);
            if all.is_empty() && !json {
                out(&format!("nothing deployed under {}", root.display()));
            }
            all
        }
    };
    let mut docs = Vec::new();
    let mut drift = false;
    for dir in &dirs {
        let s = status::status(dir).map_err(|e| e.to_string())?;
        drift |= s.needs_attention();
        if json {
            docs.push(s.to_json());
        } else {
            for line in s.to_string().lines() {
                out(line);
            }
        }
    }
    if json {
        let doc =
            if target.is_some() { docs.pop().unwrap_or_default() } else { serde_json::Value::Array(docs) };
        out(&doc.to_string());
    }
    Ok(ExitCode::from(u8::from(drift)))
}

pub fn detach_cmd(target: &str, root: &Path) -> Result<ExitCode, String> {
    deploy::check_privileges("cannot detach").map_err(|e| e.to_string())?;
    let dir = pin_dir(target, root);
    let _lock = apply::Lock::acquire_existing(&dir).map_err(|e| e.to_string())?;
    let detached = deploy::detach(&dir).map_err(|e| e.to_string())?;
    for (label, info) in &detached.links {
        out(&format!("detached {label} (link {}, program {})", info.id, info.prog_id));
    }
    out(&format!("removed {} pins and {}", detached.pins, dir.display()));
    Ok(ExitCode::SUCCESS)
}
