//! Where pins can live: checking that a pin directory is on a bpffs, and
//! mounting the host's bpffs at /sys/fs/bpf when none is mounted.
//!
//! Pins outlive devmapc only on a bpffs that outlives it. Two cases look
//! alike (/sys/fs/bpf is a plain sysfs directory) and need opposite
//! answers:
//! - a host where nothing mounted a bpffs yet (no systemd, a minimal VM):
//!   this process shares the mount namespace of its ancestors up to PID 1,
//!   so a bpffs mounted now stays, as systemd's at boot would. [`prepare_pin_dir`] mounts it,
//!   as bpftool does when asked to pin.
//! - `ip netns exec`, which runs the command in a mount namespace of its
//!   own with a fresh sysfs on /sys: a bpffs mounted there dies with the
//!   command and takes the attachment with it. Refused, with what to do
//!   instead ([`DeployError::NotBpffs`]).

use crate::deploy::{io_error, DeployError};
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `statfs(2)`'s `f_type` for a bpffs.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where the host's bpffs is mounted by convention (systemd, iproute2,
/// bpftool).
pub const HOST_BPFFS: &str = "/sys/fs/bpf";
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// [`pin_dir_ready`] for a directory that is to hold a deployment already
/// (detach): one not on a bpffs holds nothing of devmapc's, and the error
/// says so rather than that pins cannot be made there.
pub fn deployed_pin_dir_ready(dir: &Path) -> Result<(), DeployError> {
    match pin_dir_ready(dir) {
        Err(DeployError::NotBpffs { checked, fs, netns_exec, .. }) => Err(DeployError::NotDeployed {
            dir: dir.to_path_buf(),
            why: if netns_exec {
                format!(
                    "{} is on {fs}, not on a bpffs: this is what `ip netns exec` shows (it \
                     mounts a fresh /sys, which hides the host's /sys/fs/bpf). Run `nsenter \
                     --net=/run/netns/NAME devmapc ...` instead; nothing was changed",
                    checked.display()
                )
            } else {
                format!(
                    "{} is on {fs}, not on a bpffs, and BPF objects are only ever pinned on a \
                     bpffs: nothing of devmapc's can be there; nothing was changed",
                    checked.display()
                )
            },
        }),
        other => other,
    }
}

/// Checks that pins can be made under `dir`: `dir`, or its nearest
/// existing parent when it does not exist yet, is on a bpffs.
///
/// Under `ip netns exec`, /sys is a fresh sysfs and /sys/fs/bpf an empty
/// directory of it: the error then explains the two ways out
/// (`nsenter --net=...`, or `--pin-dir` on a lasting bpffs).
pub fn pin_dir_ready(dir: &Path) -> Result<(), DeployError> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| io_error("cannot resolve", dir, e))?.join(dir)
    };
    for checked in absolute.ancestors() {
        match statfs_type(checked) {
            Ok(BPF_FS_MAGIC) => return Ok(()),
            Ok(fs) => {
                return Err(DeployError::NotBpffs {
                    dir: dir.to_path_buf(),
                    checked: checked.to_path_buf(),
                    fs: fs_name(fs),
                    // `ip netns exec` leaves a sysfs where the bpffs was.
                    netns_exec: fs == SYSFS_MAGIC,
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io_error("cannot check the file system of", checked, e)),
        }
    }
    Err(io_error("no existing parent of", dir, io::Error::from(io::ErrorKind::NotFound)))
}

/// Like [`pin_dir_ready`], for a command that is about to make pins: when
/// `dir` is below /sys/fs/bpf, no bpffs is mounted there, and this process
/// is in the host's mount namespace (where a mount outlives the command:
/// [`in_host_mount_namespace`]), mounts one there and returns its path. Anywhere else it
/// refuses as [`pin_dir_ready`] does.
pub fn prepare_pin_dir(dir: &Path) -> Result<Option<PathBuf>, DeployError> {
    prepare_pin_dir_at(dir, Path::new(HOST_BPFFS), in_host_mount_namespace(), true)
}

/// What [`prepare_pin_dir`] would do, doing nothing: `Some(mount point)`
/// when it would mount the host's bpffs (then nothing is pinned yet).
pub fn pin_dir_would_mount(dir: &Path) -> Result<Option<PathBuf>, DeployError> {
    prepare_pin_dir_at(dir, Path::new(HOST_BPFFS), in_host_mount_namespace(), false)
}

/// [`prepare_pin_dir`] with the mount point and the verdict on the mount
/// namespace given (so that tests can run it in a namespace of their own);
/// with `mount` false, only says whether it would mount.
#[doc(hidden)]
pub fn prepare_pin_dir_at(
    dir: &Path,
    mount_point: &Path,
    mount_outlives_us: bool,
    mount: bool,
) -> Result<Option<PathBuf>, DeployError> {
    match pin_dir_ready(dir) {
        Ok(()) => Ok(None),
        Err(DeployError::NotBpffs { checked, .. }) if checked == mount_point && mount_outlives_us => {
            if !mount {
                return Ok(Some(mount_point.to_path_buf()));
            }
            // False when another process mounted it meanwhile.
            let mounted = mount_bpffs(mount_point)?;
            pin_dir_ready(dir)?;
            Ok(mounted.then(|| mount_point.to_path_buf()))
        }
        // Where the host's bpffs belongs, in a mount namespace that dies
        // with the command: what `ip netns exec` does.
        Err(DeployError::NotBpffs { dir, checked, fs, .. }) if checked == mount_point => {
            Err(DeployError::NotBpffs { dir, checked, fs, netns_exec: true })
        }
        Err(e) => Err(e),
    }
}

/// Whether a mount made now outlives this command: this process shares
/// the mount namespace of every ancestor it can look at, up to PID 1.
/// `ip netns exec` makes a namespace of its own for the command it runs
/// (and for a shell started that way, which the shell's parent does not
/// share), so there the answer is no. Ancestors whose namespace cannot be
/// read (PID 1 can be closed even to root, as on this project's VMs) are
/// passed over; our own unreadable is a no.
pub fn in_host_mount_namespace() -> bool {
    let ns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| (m.dev(), m.ino())).ok();
    let Some(mine) = ns("self") else {
        return false;
    };
    let mut pid = std::process::id();
    // Bounded: a pid chain is finite, but a /proc read racing with exits
    // should not loop.
    for _ in 0..4096 {
        let Some(parent) = parent_pid(pid) else {
            return true;
        };
        if parent == 0 {
            return true;
        }
        if ns(&parent.to_string()).is_some_and(|theirs| theirs != mine) {
            return false;
        }
        pid = parent;
    }
    false
}

fn parent_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok())
}

/// Mounts a bpffs at `mount_point` (mode 0700, nosuid, nodev, noexec: as
/// systemd does), unless one is there already. Concurrent callers (parallel
/// applies, tests) are serialised by a lock on the mount point itself, and
/// each looks again once it holds it, so bpffs mounts never stack (a second
/// one would hide the pins made in the first). False when one was there.
fn mount_bpffs(mount_point: &Path) -> Result<bool, DeployError> {
    let dir = std::fs::File::open(mount_point).map_err(|e| io_error("cannot open", mount_point, e))?;
    // SAFETY: flock on a file descriptor we own; released when `dir` closes.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io_error("cannot lock", mount_point, e));
    }
    if statfs_type(mount_point).ok() == Some(BPF_FS_MAGIC) {
        return Ok(false);
    }
    let target = CString::new(mount_point.as_os_str().as_bytes())
        .map_err(|_| io_error("bad path", mount_point, io::ErrorKind::InvalidInput.into()))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), flags, c"mode=0700".as_ptr().cast())
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io_error("cannot mount a bpffs at", mount_point, e));
    }
    Ok(true)
}

pub(crate) fn statfs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs writes into the zeroed struct; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

fn fs_name(magic: i64) -> String {
    let name = match magic {
        0x6265_6572 => "sysfs",
        0x0102_1994 => "tmpfs",
        0xef53 => "ext2/3/4",
        0x794c_7630 => "overlayfs",
        0x9fa0 => "procfs",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x2fc1_2fc1 => "zfs",
        _ => return format!("a file system of type {magic:#x}"),
    };
    format!("{name} ({magic:#x})")
}
