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

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
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
    /// lowercase letters). Sweeps the leftovers of killed runs first (once
    /// per process), and refuses a `$TMPDIR` that others could rename
    /// things in (writable by others without the sticky bit, or owned by
    /// another user).
    pub fn new(purpose: &str) -> io::Result<PrivateDir> {
        let parent = std::env::temp_dir();
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| sweep(&parent));
        PrivateDir::new_in(&parent, purpose)
    }

    /// A private directory in `parent` for `purpose`.
    pub fn new_in(parent: &Path, purpose: &str) -> io::Result<PrivateDir> {
        assert!(!purpose.is_empty() && purpose.bytes().all(|b| b.is_ascii_lowercase()), "purpose {purpose:?}");
        check_parent(parent)?;
        let prefix = format!("{PREFIX}{purpose}.");
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(RANDOM_LEN)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)?;
        let lock = open_new(&dir.path().join(LOCK), 0o600)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::last_os_error());
        }
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
    OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path)
}

/// A directory others could rename our directory in (so swap it for
/// theirs) is no place for private files: one owned by another user (not
/// root), or writable by others without the sticky bit.
fn check_parent(parent: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(parent)?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode();
    let shared = mode & 0o022 != 0 && mode & 0o1000 == 0;
    if (meta.uid() != 0 && meta.uid() != me) || shared {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a safe place for private files: it is {} (point TMPDIR at a directory \
                 only you can write, or a sticky one like /tmp)",
                parent.display(),
                if shared { "writable by others without the sticky bit" } else { "owned by another user" }
            ),
        ));
    }
    Ok(())
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
    use std::os::unix::ffi::OsStrExt;
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
    // SAFETY: geteuid cannot fail.
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        return false;
    }
    let lock_name = std::ffi::CString::new(std::ffi::OsStr::new(LOCK).as_bytes()).expect("no NUL");
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(dir_file.as_raw_fd(), lock_name.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    };
    if fd < 0 {
        let missing = io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT);
        let old = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).is_some_and(|age| age > LOCKLESS_GRACE);
        return missing && old;
    }
    // SAFETY: fd was just opened and is owned here.
    let lock = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let Ok(lock_meta) = lock.metadata() else {
        return false;
    };
    if !lock_meta.is_file() || lock_meta.uid() != meta.uid() {
        return false;
    }
    // SAFETY: flock on a descriptor we own; it is released when `lock` closes.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
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
}
