//! The files devmapc makes, against a hostile local user and a careless
//! operator: names planted in a shared `$TMPDIR` by `nobody` (symlinks to a
//! root-owned victim) are never written through, `fmt` neither writes
//! through a planted name nor replaces a symlinked spec, spec file names
//! that give no identifier or collide are refused before anything is
//! built, a failed build leaves the previous outputs, and what a
//! `kill -9` leaves in `$TMPDIR` is swept by the next run, and only that.

use devmapc_testkit::netns::Netns;
use devmapc_testkit::pins::PinDir;
use devmapc_testkit::privileged::as_nobody;
use devmapc_testkit::{require_privileged, wait_until};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const DEVMAPC: &str = env!("CARGO_BIN_EXE_devmapc");
const PRECIOUS: &str = "root's precious file\n";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// A directory like /tmp: everyone may write, the sticky bit set.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// A root-owned file nobody can read, in a directory nobody can enter.
fn victim() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("victim");
    std::fs::write(&path, PRECIOUS).unwrap();
    (dir, path)
}

fn nobody_sh(script: &str, args: &[&Path]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).arg("sh").args(args);
    as_nobody(&mut cmd);
    cmd
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Entries of `dir` whose name starts with `devmapc-`, owned by root.
fn roots_devmapc_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("devmapc-"))
        .filter(|e| e.path().symlink_metadata().is_ok_and(|m| m.uid() == 0))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The names devmapc once used in `$TMPDIR` for a process `pid`, each with
/// every output name inside as a symlink to the victim, planted by
/// `nobody` again and again until `stop` exists.
const PLANTER: &str = r#"
stop="$1"; shared="$2"; victim="$3"; pid="$4"
while [ ! -e "$stop" ]; do
  for d in devmapc-apply-$pid devmapc-check-$pid devmapc-test-$pid-0 devmapc-embed-$pid-0; do
    mkdir "$shared/$d" 2>/dev/null
    for f in vlan_switch.bpf.c vlan_switch.bpf.o vlan_switch.skel.rs vlan_switch.manifest.json; do
      ln -s "$victim" "$shared/$d/$f" 2>/dev/null
    done
  done
  : > "$shared/planted-$pid" 2>/dev/null
done
"#;

/// Runs `program args` with `TMPDIR=shared`, while `nobody` keeps planting
/// the names of the process (its pid is known before it starts: a shell
/// waits for a line on its standard input, then execs the program).
fn run_against_planter(shared: &Path, victim: &Path, program: &str, args: &[&str]) -> Output {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("read go; exec \"$0\" \"$@\"")
        .arg(program)
        .args(args)
        .env("TMPDIR", shared)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let stop = shared.join(format!("stop-{pid}"));
    let mut planter = nobody_sh(PLANTER, &[&stop, shared, victim, Path::new(&pid)]).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || shared.join(format!("planted-{pid}")).exists()));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    std::fs::write(&stop, "").unwrap();
    planter.wait().unwrap();
    out
}

/// `nobody` plants every name devmapc used to build in, as symlinks to a
/// root-owned file, while root's `build --check`, `apply --dry-run` and
/// `test` run with `TMPDIR` at that shared directory: the victim keeps its
/// bytes, and root leaves nothing of its own behind.
#[test]
fn names_planted_in_a_shared_tmpdir_are_never_written_through() {
    require_privileged!();
    let shared = shared_dir();
    let (_keep, victim) = victim();
    let spec = example("vlan-switch.devmap");
    let spec = spec.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();

    let check = run_against_planter(
        shared.path(),
        &victim,
        DEVMAPC,
        &["build", "--check", spec, "-o", out.path().to_str().unwrap()],
    );
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("stale: "), "{}", text(&check));

    let ns = Netns::new().unwrap();
    let pins = PinDir::new();
    let net = format!("--net={}", ns.path().display());
    let dry = run_against_planter(
        shared.path(),
        &victim,
        "nsenter",
        &[&net, DEVMAPC, "apply", "--dry-run", spec, "--pin-dir", pins.to_str().unwrap()],
    );
    // Built, then stopped at the devices this namespace lacks.
    assert_eq!(dry.status.code(), Some(2), "{}", text(&dry));
    assert!(!text(&dry).contains("building"), "{}", text(&dry));
    assert!(!pins.exists());

    let test = run_against_planter(shared.path(), &victim, DEVMAPC, &["test", spec]);
    assert_eq!(test.status.code(), Some(0), "{}", text(&test));

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
    assert_eq!(roots_devmapc_entries(shared.path()), Vec::<String>::new());
}

/// `fmt` in a shared directory and in a directory of `nobody`'s: the
/// temporary names it once used are planted as symlinks to a root-owned
/// file. The victim is untouched, the spec is formatted in place and keeps
/// its mode and owner.
#[test]
fn fmt_never_writes_through_a_planted_name() {
    require_privileged!();
    let (_keep, victim) = victim();
    let shared = shared_dir();
    let users = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(users.path(), Some(65534), Some(65534)).unwrap();
    for dir in [shared.path(), users.path()] {
        let spec = dir.join("s.devmap");
        std::fs::write(&spec, MESSY).unwrap();
        std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&spec, Some(65534), Some(65534)).unwrap();
        let planted = dir.join("s.devmap.fmt-tmp");
        let plant = nobody_sh("ln -s \"$1\" \"$2\"", &[&victim, &planted]).status().unwrap();
        assert!(plant.success());

        let run = Command::new(DEVMAPC).arg("fmt").arg(&spec).output().unwrap();
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
        let meta = spec.symlink_metadata().unwrap();
        assert!(meta.is_file());
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o640, 65534, 65534));
        assert_eq!(std::fs::read_to_string(&spec).unwrap(), FORMATTED);
        // Nothing else was left beside it, and the plant is as it was.
        assert_eq!(std::fs::read_link(&planted).unwrap(), victim);
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 2);
    }
}

/// Blocks until a file open for reading only is closed at `path` (the
/// reader has read it), at most 30 s.
fn wait_for_read(path: &Path, start: impl FnOnce()) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: inotify on a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    assert!(unsafe { libc::inotify_add_watch(fd, c_path.as_ptr(), libc::IN_CLOSE_NOWRITE) } >= 0);
    start();
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut poll, 1, 30_000) } == 1;
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    ready
}

/// `fmt` of a spec in a directory of `nobody`'s: once root's fmt has read
/// the spec (and formats it, slowly: a big file), `nobody` renames the
/// spec's directory away and puts a symlink to a root-only directory in
/// its place, where a file of the same name lives. The write goes to the
/// directory fmt read from, never to root's file.
#[test]
fn fmt_writes_where_it_read_even_if_the_directory_is_swapped_meanwhile() {
    require_privileged!();
    let (_keep, victim) = victim();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let d = home.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    let spec = d.join("victim");
    let mut big = MESSY
        .replace("key=vlan.id", "key=ipv4.dst")
        .lines()
        .filter(|l| !l.starts_with("route"))
        .collect::<Vec<_>>()
        .join("\n");
    for i in 0..50_000u32 {
        big.push_str(&format!("\nroute 10.{}.{}.{}->uplink", i >> 16, (i >> 8) & 255, i & 255));
    }
    std::fs::write(&spec, &big).unwrap();
    std::os::unix::fs::chown(&spec, Some(65534), Some(65534)).unwrap();

    let mut fmt = None;
    let read = wait_for_read(&spec, || {
        fmt = Some(
            Command::new(DEVMAPC)
                .arg("fmt")
                .arg(&spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    });
    assert!(read, "fmt did not read the spec");
    let old = home.path().join("d.old");
    let swap = nobody_sh("mv \"$1\" \"$2\" && ln -s \"$3\" \"$1\"", &[&d, &old, victim.parent().unwrap()])
        .status()
        .unwrap();
    assert!(swap.success());
    let run = fmt.unwrap().wait_with_output().unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS, "{}", text(&run));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let formatted = std::fs::read_to_string(old.join("victim")).unwrap();
    assert!(
        formatted.starts_with("table {\n    key = ipv4.dst\n}\n")
            && formatted.contains("\nroute 10.0.0.1 -> uplink\n"),
        "{}",
        &formatted[..200]
    );
    assert_eq!(std::fs::read_dir(&old).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(victim.parent().unwrap()).unwrap().count(), 1);
}

/// `fmt DIR` follows no symlink below DIR: in a shared directory `nobody`
/// links a root-only directory, a root-owned spec and the directory
/// itself (a loop). Root's `fmt` of the shared directory formats the
/// real spec there, lists the links as skipped and leaves root's files.
#[test]
fn fmt_of_a_directory_follows_no_symlink_in_it() {
    require_privileged!();
    let shared = shared_dir();
    let roots = tempfile::tempdir().unwrap();
    let roots_spec = roots.path().join("prod.devmap");
    std::fs::write(&roots_spec, MESSY).unwrap();
    let plain = shared.path().join("plain.devmap");
    std::fs::write(&plain, MESSY).unwrap();
    let plant = nobody_sh(
        "ln -s \"$1\" \"$4/sub\" && ln -s \"$2\" \"$4/s.devmap\" && ln -s . \"$4/loop\"",
        &[roots.path(), &roots_spec, Path::new("unused"), shared.path()],
    )
    .status()
    .unwrap();
    assert!(plant.success());
    for check in [true, false] {
        let mut cmd = Command::new(DEVMAPC);
        cmd.arg("fmt");
        if check {
            cmd.arg("--check");
        }
        let run = cmd.arg(shared.path()).output().unwrap();
        let said = text(&run);
        assert_eq!(run.status.code(), Some(u8::from(check).into()), "{said}");
        for link in ["loop", "s.devmap", "sub"] {
            assert!(
                said.contains(&format!("skipped {}: a symlink", shared.path().join(link).display())),
                "{said}"
            );
        }
        assert_eq!(said.matches("reformat").count() + said.matches("formatted").count(), 1, "{said}");
    }
    assert_eq!(std::fs::read_to_string(&roots_spec).unwrap(), MESSY);
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), FORMATTED);
}

/// A FIFO planted under a `.devmap` name in a shared directory is skipped,
/// never opened (it would block), and the other specs are still formatted.
#[test]
fn fmt_of_a_directory_skips_a_planted_fifo_and_formats_the_rest() {
    require_privileged!();
    let shared = shared_dir();
    let after = shared.path().join("z.devmap");
    std::fs::write(&after, MESSY).unwrap();
    let plant = nobody_sh("mkfifo \"$1/a.devmap\"", &[shared.path()]).status().unwrap();
    assert!(plant.success());
    let run = Command::new(DEVMAPC).arg("fmt").arg(shared.path()).output().unwrap();
    let said = text(&run);
    assert_eq!(run.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("skipped {}: not a regular file", shared.path().join("a.devmap").display())),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&after).unwrap(), FORMATTED);
}

/// A spec named on the command line that is `nobody`'s symlink (to a
/// root-owned spec) is refused: it is not root's to point anywhere.
#[test]
fn fmt_refuses_a_named_symlink_of_another_user() {
    require_privileged!();
    let shared = shared_dir();
    let roots = tempfile::tempdir().unwrap();
    let roots_spec = roots.path().join("prod.devmap");
    std::fs::write(&roots_spec, MESSY).unwrap();
    let link = shared.path().join("s.devmap");
    let plant = nobody_sh("ln -s \"$1\" \"$2\"", &[&roots_spec, &link]).status().unwrap();
    assert!(plant.success());
    let run = Command::new(DEVMAPC).arg("fmt").arg(&link).output().unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(text(&run).contains("is a symlink owned by another user (uid 65534)"), "{}", text(&run));
    assert_eq!(std::fs::read_to_string(&roots_spec).unwrap(), MESSY);
}

/// A symlink on the way to the spec is held to the same rule as the spec's
/// own name: `nobody`'s link to a root-only directory is refused, root's
/// own link to the same directory is followed.
#[test]
fn fmt_refuses_another_users_symlink_to_a_directory_on_the_path() {
    require_privileged!();
    let shared = shared_dir();
    let roots = tempfile::tempdir().unwrap();
    std::fs::set_permissions(roots.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let roots_spec = roots.path().join("victim.devmap");
    std::fs::write(&roots_spec, MESSY).unwrap();
    let link = shared.path().join("lnk");
    let plant = nobody_sh("ln -s \"$1\" \"$2\"", &[roots.path(), &link]).status().unwrap();
    assert!(plant.success());
    let run = Command::new(DEVMAPC).arg("fmt").arg(link.join("victim.devmap")).output().unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    let said = text(&run);
    assert!(
        said.contains(&format!("{} is a symlink owned by another user (uid 65534)", link.display())),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&roots_spec).unwrap(), MESSY);

    let own = shared.path().join("own");
    std::os::unix::fs::symlink(roots.path(), &own).unwrap();
    let run = Command::new(DEVMAPC).arg("fmt").arg(own.join("victim.devmap")).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert_eq!(std::fs::read_to_string(&roots_spec).unwrap(), FORMATTED);
}

/// A spec that is a symlink stays one: `fmt` rewrites the file it points
/// to (keeping that file's mode and owner), never replaces the link with a
/// root-owned copy. Here the link is the caller's own.
#[test]
fn fmt_of_a_symlinked_spec_rewrites_the_file_it_points_to() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let real = dir.path().join("real/s.devmap");
    std::fs::write(&real, MESSY).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o604)).unwrap();
    let link = dir.path().join("link.devmap");
    std::os::unix::fs::symlink("real/s.devmap", &link).unwrap();

    let run = Command::new(DEVMAPC).arg("fmt").arg(&link).output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("real/s.devmap"));
    assert_eq!(std::fs::read_to_string(&real).unwrap(), FORMATTED);
    assert_eq!(real.symlink_metadata().unwrap().mode() & 0o7777, 0o604);
    assert_eq!(std::fs::read_dir(dir.path().join("real")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

const MESSY: &str =
    "table {key=vlan.id}\ndevice   uplink {ifname=\"eth0\"}\ningress {on=[ uplink ]}\nroute 100->uplink\n";
const FORMATTED: &str = "table {\n    key = vlan.id\n}\n\ndevice uplink { ifname = \"eth0\" }\ningress { on = [uplink] }\nroute 100 -> uplink\n";

/// A spec file with `CLEAN`'s text under `name` in a fresh directory.
fn spec_named(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, FORMATTED).unwrap();
    (dir, path)
}

/// Names whose stem is no identifier once reached libbpf-cargo's skeleton
/// generator, which panicked (exit 101) and left a half-written output
/// directory. They are refused, located by the file name, before anything
/// is written, by `build` and by `apply`.
#[test]
fn spec_file_names_that_give_no_identifier_are_refused_before_anything_is_built() {
    for name in ["x_.devmap", "x*.devmap", "probé.devmap", ".devmap", "-x.devmap", "a--b.devmap", "fn.devmap"]
    {
        let (dir, spec) = spec_named(name);
        let out = dir.path().join("out");
        let run = Command::new(DEVMAPC).arg("build").arg(&spec).arg("-o").arg(&out).output().unwrap();
        assert_eq!(run.status.code(), Some(2), "{name}: {}", text(&run));
        let said = text(&run);
        assert!(
            said.contains(&format!("cannot name the outputs of `{name}`"))
                && said.contains("rename the file"),
            "{said}"
        );
        assert!(!said.contains("panicked"), "{said}");
        assert!(!out.exists(), "{name}: the output directory was made");

        let run = Command::new(DEVMAPC).arg("apply").arg("--dry-run").arg(&spec).output().unwrap();
        assert_eq!(run.status.code(), Some(2), "{name}: {}", text(&run));
        assert!(text(&run).contains("rename the file"), "{}", text(&run));
    }
    // A name that normalises to an identifier still builds.
    let (dir, spec) = spec_named("Edge-Router.devmap");
    let run = Command::new(DEVMAPC)
        .args(["build", "--emit", "c,manifest"])
        .arg(&spec)
        .arg("-o")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert!(dir.path().join("edge_router.manifest.json").is_file());
}

/// `probe-c.devmap` and `probe_c.devmap` (or `Probe.devmap` and
/// `probe.devmap`) would write the same files: one `build` of both is
/// refused and writes nothing.
#[test]
fn two_specs_with_one_output_name_are_refused() {
    for (a, b) in [("probe-c.devmap", "probe_c.devmap"), ("Probe.devmap", "probe.devmap")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join(a), FORMATTED).unwrap();
        // Different text: the second would silently replace the first.
        std::fs::write(dir.path().join("x").join(b), FORMATTED.replace("route 100", "route 200")).unwrap();
        let out = dir.path().join("out");
        let run = Command::new(DEVMAPC)
            .args(["build", "--emit", "c,manifest"])
            .arg(dir.path().join(a))
            .arg(dir.path().join("x").join(b))
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2), "{}", text(&run));
        assert!(text(&run).contains("would both build as"), "{}", text(&run));
        assert!(!out.exists());
    }
}

/// `-o` naming a regular file is a usage error (exit 2), and the file is
/// left as it was.
#[test]
fn build_into_a_regular_file_is_a_usage_error() {
    let (dir, spec) = spec_named("s.devmap");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "keep").unwrap();
    let run = Command::new(DEVMAPC).arg("build").arg(&spec).arg("-o").arg(&file).output().unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(text(&run).contains("is not a directory"), "{}", text(&run));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}

fn real_clang() -> String {
    devmapc::builder::find_clang().unwrap().display().to_string()
}

/// A clang that fails: `--version` answers (so it is found), compiling
/// fails after the C was written.
fn failing_clang(dir: &Path) -> PathBuf {
    let path = dir.join("clang");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exec {} --version\necho 'error: no' >&2\nexit 1\n",
            real_clang()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Everything in `dir`: name → (bytes, modification time).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

/// A build whose compile fails leaves the previous outputs byte for byte
/// (and their times), writes no new or half file into the output
/// directory, and leaves nothing in `$TMPDIR`.
#[test]
fn a_failed_build_leaves_the_previous_outputs_and_no_partial_file() {
    let (dir, spec) = spec_named("s.devmap");
    let out = dir.path().join("out");
    let tmp = tempfile::tempdir().unwrap();
    let ok = Command::new(DEVMAPC)
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&out)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let before = snapshot(&out);
    assert_eq!(before.len(), 4);

    // A change of code (not only of routes): the C differs.
    std::fs::write(&spec, FORMATTED.replace("key = vlan.id", "key = vlan.id\n    on_miss = pass")).unwrap();
    let bad = Command::new(DEVMAPC)
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&out)
        .env("TMPDIR", tmp.path())
        .env("DEVMAPC_CLANG", failing_clang(dir.path()))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("error: building"), "{}", text(&bad));
    assert_eq!(snapshot(&out), before);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    // Into a directory that did not exist: it still does not.
    let fresh = dir.path().join("fresh");
    let bad = Command::new(DEVMAPC)
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(&fresh)
        .env("DEVMAPC_CLANG", failing_clang(dir.path()))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(!fresh.exists());
}

/// An apply killed with SIGKILL while it builds leaves its private
/// directories in `$TMPDIR`; the next devmapc that makes one removes them.
/// Lookalikes are left alone: `nobody`'s directories (even with a lock file
/// nobody holds) and a root-owned symlink named like one.
#[test]
fn what_a_killed_apply_leaves_in_tmpdir_is_swept_by_the_next_run_and_nothing_else() {
    require_privileged!();
    let shared = shared_dir();
    let tools = tempfile::tempdir().unwrap();
    let started = tools.path().join("started");
    // A clang that says where it is, then takes its time.
    let clang = tools.path().join("clang");
    std::fs::write(
        &clang,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exec {} --version\necho $$ > {}\nexec sleep 60\n",
            real_clang(),
            started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&clang, std::fs::Permissions::from_mode(0o755)).unwrap();

    let theirs = ["devmapc-apply.AAAAAAAAAA", "devmapc-build.BBBBBBBBBB"];
    for name in theirs {
        let path = shared.path().join(name);
        let made = nobody_sh("mkdir \"$1\" && : > \"$1/.lock\"", &[&path]).status().unwrap();
        assert!(made.success());
    }
    let (_keep, victim) = victim();
    let lookalike = shared.path().join("devmapc-check.CCCCCCCCCC");
    std::os::unix::fs::symlink(victim.parent().unwrap(), &lookalike).unwrap();

    let spec = example("vlan-switch.devmap");
    let mut apply = Command::new(DEVMAPC)
        .arg("apply")
        .arg("--dry-run")
        .arg(&spec)
        .env("TMPDIR", shared.path())
        .env("DEVMAPC_CLANG", &clang)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || std::fs::read_to_string(&started)
        .is_ok_and(|s| s.ends_with('\n'))));
    apply.kill().unwrap();
    apply.wait().unwrap();
    let sleeper: i32 = std::fs::read_to_string(&started).unwrap().trim().parse().unwrap();
    // SAFETY: a signal to the sleeping clang stand-in this test started.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };

    // The process's private directory, with the apply's and the build's
    // inside.
    let left: Vec<_> = roots_devmapc_entries(shared.path())
        .into_iter()
        .filter(|n| n != "devmapc-check.CCCCCCCCCC")
        .collect();
    assert!(left.len() == 1 && left[0].starts_with("devmapc-run."), "{left:?}");
    let inside: Vec<_> = std::fs::read_dir(shared.path().join(&left[0]))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        inside.iter().any(|n| n.starts_with("devmapc-apply."))
            && inside.iter().any(|n| n.starts_with("devmapc-build.")),
        "{inside:?}"
    );

    let next = Command::new(DEVMAPC)
        .args(["build", "--emit", "c", "--check"])
        .arg(&spec)
        .arg("-o")
        .arg(tools.path())
        .env("TMPDIR", shared.path())
        .output()
        .unwrap();
    assert_eq!(next.status.code(), Some(1), "{}", text(&next));
    // Only the symlink lookalike (root's, but a symlink) is root's now.
    assert_eq!(roots_devmapc_entries(shared.path()), vec!["devmapc-check.CCCCCCCCCC".to_string()]);
    for name in theirs {
        assert!(shared.path().join(name).join(".lock").is_file(), "{name} was removed");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), PRECIOUS);
}

/// `TMPDIR` is `nobody`'s symlink to a root-owned directory: devmapc makes
/// its private directory in the resolved path and hands that path on, so
/// clang (a stand-in that records its `TMPDIR`) never works through a link
/// `nobody` could repoint.
#[test]
fn a_symlinked_tmpdir_is_used_by_its_resolved_path() {
    require_privileged!();
    let shared = shared_dir();
    let real = tempfile::tempdir().unwrap();
    let link = shared.path().join("lnk");
    let plant = nobody_sh("ln -s \"$1\" \"$2\"", &[real.path(), &link]).status().unwrap();
    assert!(plant.success());
    let tools = tempfile::tempdir().unwrap();
    let seen = tools.path().join("seen");
    let clang = tools.path().join("clang");
    std::fs::write(
        &clang,
        format!("#!/bin/sh\necho \"$TMPDIR\" >> {}\nexec {} \"$@\"\n", seen.display(), real_clang()),
    )
    .unwrap();
    std::fs::set_permissions(&clang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (dir, spec) = spec_named("s.devmap");
    let run = Command::new(DEVMAPC)
        .arg("build")
        .arg(&spec)
        .arg("-o")
        .arg(dir.path().join("out"))
        .env("TMPDIR", &link)
        .env("DEVMAPC_CLANG", &clang)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let seen = std::fs::read_to_string(&seen).unwrap();
    let resolved = std::fs::canonicalize(real.path()).unwrap();
    assert!(!seen.is_empty());
    for line in seen.lines() {
        assert!(Path::new(line).starts_with(&resolved) && !line.contains("lnk"), "{line}");
    }
}

/// `TMPDIR` is a root-owned directory inside one of `nobody`'s, who could
/// rename it away and put a symlink to their own in its place: refused,
/// naming the directory on the way.
#[test]
fn a_tmpdir_below_another_users_directory_is_refused() {
    require_privileged!();
    let top = tempfile::tempdir().unwrap();
    let home = top.path().join("nobody");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let rt = home.join("rt");
    std::fs::create_dir(&rt).unwrap();
    let (dir, spec) = spec_named("s.devmap");
    let run = Command::new(DEVMAPC)
        .args(["build", "--emit", "c"])
        .arg(&spec)
        .arg("-o")
        .arg(dir.path())
        .env("TMPDIR", &rt)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    let said = text(&run);
    assert!(
        said.contains("is not a safe place for private files")
            && said.contains(&format!("{} (on the way to", home.display())),
        "{said}"
    );
    assert!(said.contains("owned by another user"), "{said}");
    assert!(!dir.path().join("s.bpf.c").exists());
    assert_eq!(std::fs::read_dir(&rt).unwrap().count(), 0);
}

/// `probe-c.devmap` and `probe_c.devmap` are both named `probe_c`: applying
/// the second where the first is deployed is refused, and the first keeps
/// running.
#[test]
fn a_spec_is_not_applied_over_the_deployment_of_another_spec_of_the_same_name() {
    require_privileged!();
    let ns = Netns::new().unwrap();
    for (a, b) in [("hfa", "phfa"), ("hfb", "phfb")] {
        ns.veth(a, b).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let text_of = |vid: u32| {
        format!("table {{ key = vlan.id }}\ndevice a {{ ifname = \"hfa\" }}\ndevice b {{ ifname = \"hfb\" }}\ningress {{ on = [a] }}\nroute {vid} -> b\n")
    };
    let (first, second) = (dir.path().join("probe-c.devmap"), dir.path().join("probe_c.devmap"));
    std::fs::write(&first, text_of(100)).unwrap();
    std::fs::write(&second, text_of(200)).unwrap();
    let pins = PinDir::new();
    let apply = |spec: &Path| {
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .arg(DEVMAPC)
            .arg("apply")
            .arg("--allow-not-ready")
            .arg(spec)
            .arg("--pin-dir")
            .arg(&*pins)
            .output()
            .unwrap()
    };
    let ok = apply(&first);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let refused = apply(&second);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("is the deployment of probe-c.devmap, not of probe_c.devmap"),
        "{}",
        text(&refused)
    );
    // The same spec again is an ordinary re-apply.
    let again = apply(&first);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let detach = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(DEVMAPC)
        .arg("detach")
        .arg(&*pins)
        .output()
        .unwrap();
    assert_eq!(detach.status.code(), Some(0), "{}", text(&detach));
}

/// SIGINT or SIGTERM during a build: devmapc removes its private directory
/// (with libbpf-cargo's and clang's temporary files in it), then dies of
/// the signal as before.
#[test]
fn an_interrupted_build_removes_its_temporary_files() {
    use std::os::unix::process::ExitStatusExt;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let tools = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let started = tools.path().join("started");
        let clang = tools.path().join("clang");
        std::fs::write(
            &clang,
            format!(
                "#!/bin/sh\n[ \"$1\" = --version ] && exec {} --version\necho $$ > {}\nexec sleep 60\n",
                real_clang(),
                started.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&clang, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut apply = Command::new(DEVMAPC)
            .arg("apply")
            .arg("--dry-run")
            .arg(example("vlan-switch.devmap"))
            .env("TMPDIR", tmp.path())
            .env("DEVMAPC_CLANG", &clang)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_until(Duration::from_secs(30), || std::fs::read_to_string(&started)
            .is_ok_and(|s| s.ends_with('\n'))));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // SAFETY: a signal to the devmapc this test started.
        unsafe { libc::kill(apply.id() as i32, signal) };
        let status = apply.wait().unwrap();
        let sleeper: i32 = std::fs::read_to_string(&started).unwrap().trim().parse().unwrap();
        // SAFETY: a signal to the sleeping clang stand-in this test started.
        unsafe { libc::kill(sleeper, libc::SIGKILL) };
        assert_eq!(status.signal(), Some(signal));
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
