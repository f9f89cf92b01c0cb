//! The generated C of every example and good spec, as golden snapshots
//! (`snapshots/generated_c__<dir>__<file stem>.snap`): a change of the
//! template (templates/devmap.bpf.c.hbs) or of render.rs shows up in review
//! as a change of the C each spec compiles to.
//!
//! The C is made as `devmapc build` makes it (the banner names the spec's
//! file name). After an intended change: `INSTA_UPDATE=always cargo test -p
//! devmapc --test generated_c`, then read every changed snapshot before
//! committing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the specs are, below the repository's root; each directory's last
/// component names its snapshots.
const DIRS: [&str; 3] = ["examples", "tests/specs/good", "tests/specs/language"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("compiler/ has a parent").to_path_buf()
}

/// The snapshot name of every spec, with its path, sorted.
fn specs() -> Vec<(String, PathBuf)> {
    let mut all = Vec::new();
    for dir in DIRS {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else { continue };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "devmap"))
            .collect();
        files.sort();
        let prefix = dir.rsplit('/').next().expect("a directory has a name");
        all.extend(
            files.into_iter().map(|p| (format!("{prefix}__{}", p.file_stem().unwrap().to_string_lossy()), p)),
        );
    }
    all
}

/// The C of a spec, as the builder renders it.
fn generated_c(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (source, checked) = devmapc::check_bytes(&bytes);
    let model = checked.model.unwrap_or_else(|| panic!("{}: {:#?}", path.display(), checked.diagnostics));
    let file_name = path.file_name().unwrap().to_string_lossy();
    devmapc::render::render(&devmapc::lower::lower(&model, &file_name, &source))
}

#[test]
fn every_spec_renders_its_snapshot() {
    let specs = specs();
    assert!(specs.len() >= 9, "the examples are there: {specs:?}");
    let mut failures = Vec::new();
    for (name, path) in &specs {
        let c = generated_c(path);
        // One assertion per spec, failures collected: a run shows every
        // changed snapshot, not just the first.
        let description = path.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let snapshot = std::panic::catch_unwind(|| {
            insta::with_settings!({ description => description, omit_expression => true }, {
                insta::assert_snapshot!(name.as_str(), c);
            });
        });
        if snapshot.is_err() {
            failures.push(name.clone());
        }
    }
    assert!(failures.is_empty(), "the generated C differs from its snapshot for {failures:?} (see above)");
}

/// Kernel style, checked on every spec's C: an SPDX line first that says
/// what the `license` section tells the kernel, no run of blank lines, no
/// trailing white space, labels at column 0, NULL for null pointers.
#[test]
fn the_generated_c_is_tidy() {
    for (name, path) in specs() {
        let c = generated_c(&path);
        assert!(c.starts_with("/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */\n"), "{name}");
        assert!(
            c.contains("char LICENSE[] SEC(\"license\") = \"Dual MIT/GPL\";"),
            "{name}: the SPDX line says what the kernel is told"
        );
        assert!(!c.contains("\n\n\n"), "{name}: a run of blank lines");
        for line in c.lines() {
            assert_eq!(line, line.trim_end(), "{name}: trailing white space");
            let code = line.trim_start();
            if code.ends_with(':') && !code.contains(' ') {
                assert_eq!(line, code, "{name}: a label not at column 0");
            }
            for pointer in ["eth", "vlan", "ip4", "ip6", "l4"] {
                assert!(!code.starts_with(&format!("p->{pointer} = 0;")), "{name}: 0 for NULL in {line:?}");
                assert!(
                    !code.contains(&format!("p.{pointer} != 0")),
                    "{name}: a pointer compared with 0 in {line:?}"
                );
            }
        }
    }
}

/// A snapshot whose spec was removed or renamed would linger unnoticed
/// (insta only compares the snapshots a run asserts).
#[test]
fn every_snapshot_has_its_spec() {
    let Ok(entries) = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")) else {
        return;
    };
    let names: BTreeSet<String> = specs().into_iter().map(|(name, _)| name).collect();
    let orphans: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|file| Some(file.strip_prefix("generated_c__")?.strip_suffix(".snap")?.to_string()))
        .filter(|name| !names.contains(name))
        .collect();
    assert!(orphans.is_empty(), "snapshots without a spec: {orphans:?}");
}
