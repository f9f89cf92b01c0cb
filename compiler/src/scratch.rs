//! Private scratch directories, and files created exclusively: the only way
//! devmapc writes a file where someone else might have put something first.
//!
//! devmapc runs as root next to other users, and `$TMPDIR` is theirs too. A
//! [`PrivateDir`] is made by `tempfile` (a random name, created exclusively,
//! mode 0700), never an existing directory; every file in it is created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` ([`create_new`]), so no name planted
//! before, symlink or not, is ever written through.
//!
//! A killed devmapc cannot remove its directory, so each one holds an
//! `flock` on a `.lock` file inside for as long as it lives, and the first
//! [`PrivateDir`] a process makes sweeps `$TMPDIR` ([`sweep`]): it removes
//! the directories named like its own whose owner is this user, that are
//! no symlink, and whose lock it can take (their process died).
//!
//! `$TMPDIR` is resolved once and every directory of the resolved path is
//! checked ([`check_parent`]): the private directory is made in that path,
//! which nobody else can rename anything in. Files replaced in a directory
//! that is not private ([`replace_at`]) are created and renamed relative
//! to one descriptor of that directory, never by a path that could be
//! repointed in between.

use rustix::fs::{AtFlags, Mode, OFlags, Stat};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Every private directory is `devmapc-<purpose>.<random>`.
const PREFIX: &str = "devmapc-";
const RANDOM_LEN: usize = 10;
/// The file a living directory holds locked.
const LOCK: &str = ".lock";
/// A directory without its lock file is its maker's for this long (it may
/// be between `mkdir` and creating the lock).
const LOCKLESS_GRACE: Duration = Duration::from_secs(60);

/// A fresh directory only this user can enter, removed when dropped (and by
/// the next devmapc's sweep when its process is killed).
#[derive(Debug)]
pub struct PrivateDir {
    dir: tempfile::TempDir,
    /// Held locked for the directory's lifetime.
    _lock: File,
}

impl PrivateDir {
    /// A private directory in `$TMPDIR` for `purpose` (`apply`, `test`, ...:
    /// lowercase letters), made in its resolved path. Refuses a `$TMPDIR`
    /// any directory of which others could rename things in (see
    /// [`check_parent`]), then sweeps the leftovers of killed runs (once
    /// per process).
    pub fn new(purpose: &str) -> io::Result<PrivateDir> {
        let parent = check_parent(&std::env::temp_dir())?;
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| sweep(&parent));
        PrivateDir::new_in(&parent, purpose)
    }

    /// A private directory for `purpose` in `parent`, resolved and checked
    /// by [`check_parent`]: [`path`](Self::path) has no symlink in it.
    pub fn new_in(parent: &Path, purpose: &str) -> io::Result<PrivateDir> {
        assert!(
            !purpose.is_empty() && purpose.bytes().all(|b| b.is_ascii_lowercase()),
            "purpose {purpose:?}"
        );
        let parent = check_parent(parent)?;
        let parent = parent.as_path();
        let prefix = format!("{PREFIX}{purpose}.");
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(RANDOM_LEN)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)?;
        let lock = open_new(&dir.path().join(LOCK), 0o600)?;
        // SAFETY: flock on a descriptor we own.
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(PrivateDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `name` in the directory with `bytes` (mode 0600); an
    /// existing `name` is an error.
    pub fn create(&self, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.dir.path().join(name);
        create_new(&path, bytes, 0o600)?;
        Ok(path)
    }

    /// Replaces `name` by a file with `bytes`: created exclusively under a
    /// fresh name, then renamed over it.
    pub fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.dir.path().join(name);
        let mut file = tempfile::Builder::new().prefix(".new-").tempfile_in(self.dir.path())?;
        file.write_all(bytes)?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }
}

/// Creates `path` with `bytes`, never through what is already there: the
/// open fails when `path` exists, a symlink included. `mode` is before the
/// umask.
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = open_new(path, mode)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `parent` resolved (once), if it is a safe place for private files:
/// every directory of the resolved path, from `/` down, is owned by root
/// or this user and not writable by others unless sticky. Anywhere else
/// someone could rename a directory on the way and put theirs instead.
fn check_parent(parent: &Path) -> io::Result<PathBuf> {
    let resolved = std::fs::canonicalize(parent)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", parent.display())))?;
    let me = rustix::process::geteuid().as_raw();
    let mut dirs: Vec<&Path> = resolved.ancestors().collect();
    dirs.reverse();
    for dir in dirs {
        let meta = std::fs::symlink_metadata(dir)?;
        let mode = meta.mode();
        let why = if !meta.is_dir() {
            // Resolved a moment ago: someone is swapping it.
            "no longer a directory"
        } else if meta.uid() != 0 && meta.uid() != me {
            "owned by another user"
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            "writable by others without the sticky bit"
        } else {
            continue;
        };
        let on_the_way =
            if dir == resolved { String::new() } else { format!(" (on the way to {})", resolved.display()) };
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a safe place for private files: {}{on_the_way} is {why} (point TMPDIR at a \
                 directory only you and root can write all the way from /, or a sticky one like /tmp)",
                parent.display(),
                dir.display(),
            ),
        ));
    }
    Ok(resolved)
}

/// Opens the directory `path` (following symlinks, once), for
/// [`replace_at`] and `*at` lookups that must all happen in that one
/// directory whatever is renamed meanwhile.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Replaces `name` in the directory `dir` by a file with `bytes`, relative
/// to that descriptor only: a fresh name (random) is created exclusively
/// (`O_EXCL | O_NOFOLLOW`), written, given `like`'s mode (and owner, when
/// root; without `like`: 0666 less the umask), synced, and renamed over
/// `name`. Whatever `name` was, a symlink included, is replaced, never
/// written through; a reader sees the old file or the new one. On failure
/// the fresh file is removed and `name` is as it was.
pub fn replace_at(dir: BorrowedFd<'_>, name: &OsStr, bytes: &[u8], like: Option<&Stat>) -> io::Result<()> {
    let (tmp_name, file) = create_fresh_at(dir, name, if like.is_some() { 0o600 } else { 0o666 })?;
    let written = (|| -> io::Result<()> {
        let mut file = File::from(file);
        file.write_all(bytes)?;
        if let Some(st) = like {
            if rustix::process::geteuid().is_root() {
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                )?;
            }
            // After the owner: chown clears set-id bits.
            rustix::fs::fchmod(&file, Mode::from_raw_mode(st.st_mode & 0o7777))?;
        }
        file.sync_all()?;
        rustix::fs::renameat(dir, &tmp_name, dir, name)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp_name, AtFlags::empty());
    }
    written
}

/// A new file `.<name>.<random>.tmp` in `dir`, created exclusively.
fn create_fresh_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<(OsString, OwnedFd)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for _ in 0..16 {
        let mut random = [0u8; 8];
        rustix::rand::getrandom(&mut random[..], rustix::rand::GetRandomFlags::empty())?;
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{:016x}.tmp", u64::from_ne_bytes(random)));
        match rustix::fs::openat(dir, &tmp_name, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => return Ok((tmp_name, fd)),
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "cannot find a fresh name for a temporary file"))
}

/// Removes the private directories in `parent` whose process died: named
/// `devmapc-<purpose>.<random>`, not a symlink, owned by this user, and
/// their `.lock` a regular file of this user that can be locked (or, when
/// there is no lock file, older than a minute). Everything else, other
/// users' entries above all, is left alone. Best effort: errors are
/// ignored.
pub fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if is_private_name(&name.to_string_lossy()) && is_dead(&entry.path()) {
            // remove_dir_all follows no symlink inside.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn is_private_name(name: &str) -> bool {
    let Some((purpose, random)) = name.strip_prefix(PREFIX).and_then(|rest| rest.split_once('.')) else {
        return false;
    };
    !purpose.is_empty()
        && purpose.bytes().all(|b| b.is_ascii_lowercase())
        && random.len() == RANDOM_LEN
        && random.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `dir` is one of this user's private directories and its maker
/// is gone. Opened without following symlinks, checked through the
/// descriptors.
fn is_dead(dir: &Path) -> bool {
    let Ok(dir_file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
    else {
        return false;
    };
    let Ok(meta) = dir_file.metadata() else {
        return false;
    };
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        return false;
    }
    let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
    let lock = match rustix::fs::openat(&dir_file, LOCK, flags, rustix::fs::Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > LOCKLESS_GRACE);
            return e == rustix::io::Errno::NOENT && old;
        }
    };
    let Ok(lock_meta) = lock.metadata() else {
        return false;
    };
    if !lock_meta.is_file() || lock_meta.uid() != meta.uid() {
        return false;
    }
    // Released when `lock` closes.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_fresh_private_and_locked() {
        let parent = tempfile::tempdir().unwrap();
        let dir = PrivateDir::new_in(parent.path(), "unit").unwrap();
        let name = dir.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_private_name(&name), "{name}");
        assert_eq!(std::fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o700);
        // Alive: the sweep leaves it.
        sweep(parent.path());
        assert!(dir.path().join(LOCK).is_file());
        let path = dir.create("a", b"1").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"1");
        assert_eq!(dir.create("a", b"2").unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        dir.replace("a", b"3").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"3");
        let kept = dir.path().to_path_buf();
        drop(dir);
        assert!(!kept.exists());
    }

    #[test]
    fn create_new_never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let planted = dir.path().join("out");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_new(&planted, b"generated", 0o644).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn the_sweep_removes_only_unlocked_dirs_of_ours() {
        let parent = tempfile::tempdir().unwrap();
        let alive = PrivateDir::new_in(parent.path(), "unit").unwrap();
        // A dead one: its lock is released when the value is forgotten
        // without cleanup (as a killed process leaves it).
        let dead = PrivateDir::new_in(parent.path(), "unit").unwrap();
        let dead_path = dead.path().to_path_buf();
        let PrivateDir { dir, _lock } = dead;
        let _ = dir.keep();
        drop(_lock);
        // Not ours by name, or a symlink to a dead one: left alone.
        let other = parent.path().join("devmapc-unit-notours");
        std::fs::create_dir(&other).unwrap();
        let link = parent.path().join("devmapc-unit.AAAAAAAAAA");
        std::os::unix::fs::symlink(&dead_path, &link).unwrap();
        // A fresh one without a lock file yet: its maker may be about to
        // create it.
        let fresh = parent.path().join("devmapc-unit.BBBBBBBBBB");
        std::fs::create_dir(&fresh).unwrap();
        sweep(parent.path());
        assert!(alive.path().is_dir());
        assert!(!dead_path.exists());
        assert!(other.is_dir());
        assert!(link.symlink_metadata().is_ok());
        assert!(fresh.is_dir());
    }

    #[test]
    fn a_shared_parent_without_the_sticky_bit_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = PrivateDir::new_in(parent.path(), "unit").unwrap_err();
        assert!(err.to_string().contains("without the sticky bit"), "{err}");
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        PrivateDir::new_in(parent.path(), "unit").unwrap();
    }

    #[test]
    fn every_directory_on_the_way_is_checked_and_the_path_resolved() {
        let top = tempfile::tempdir().unwrap();
        // A shared directory (no sticky bit) above a private one: whoever
        // can write it can rename `private` away and put theirs instead.
        let shared = top.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let private = shared.join("private");
        std::fs::create_dir(&private).unwrap();
        let err = PrivateDir::new_in(&private, "unit").unwrap_err();
        assert!(err.to_string().contains(&format!("{} (on the way to", shared.display())), "{err}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Through a symlink: made in the resolved path.
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let dir = PrivateDir::new_in(&link, "unit").unwrap();
        assert_eq!(dir.path().parent().unwrap(), std::fs::canonicalize(&private).unwrap());
    }

    #[test]
    fn replace_at_stays_in_the_directory_it_opened() {
        let top = tempfile::tempdir().unwrap();
        let (first, second) = (top.path().join("first"), top.path().join("second"));
        std::fs::create_dir(&first).unwrap();
        std::fs::create_dir(&second).unwrap();
        std::fs::write(first.join("f"), "old").unwrap();
        std::fs::write(second.join("f"), "other").unwrap();
        std::fs::set_permissions(first.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let dir = open_dir(&first).unwrap();
        let like = rustix::fs::statat(&dir, "f", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        // The path is repointed after the open: the descriptor is not.
        std::fs::rename(&first, top.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&second, &first).unwrap();
        replace_at(std::os::fd::AsFd::as_fd(&dir), OsStr::new("f"), b"new", Some(&like)).unwrap();
        assert_eq!(std::fs::read_to_string(second.join("f")).unwrap(), "other");
        let moved = top.path().join("moved/f");
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "new");
        assert_eq!(std::fs::metadata(&moved).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(top.path().join("moved")).unwrap().count(), 1);
        // A symlink in place of the name is replaced, not written through.
        std::fs::remove_file(&moved).unwrap();
        std::os::unix::fs::symlink(second.join("f"), &moved).unwrap();
        replace_at(std::os::fd::AsFd::as_fd(&dir), OsStr::new("f"), b"newer", None).unwrap();
        assert_eq!(std::fs::read_to_string(second.join("f")).unwrap(), "other");
        assert!(std::fs::symlink_metadata(&moved).unwrap().is_file());
    }
}
