//! Throw-away pin directories on the host's bpffs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// Prefix of every pin directory this crate makes under `/sys/fs/bpf`.
pub const PIN_PREFIX: &str = "devmapc-test-";
static PIN_COUNTER: AtomicU32 = AtomicU32::new(0);
static PIN_SWEEP: Once = Once::new();

/// A unique pin directory `/sys/fs/bpf/devmapc-test-<pid>-<n>` (not
/// created), removed with everything in it on drop, also while a test
/// unwinds. The first one of a process mounts the host's bpffs at
/// /sys/fs/bpf if none is (as `devmapc apply` would, see
/// `devmapc_runtime::bpffs`), and removes the pin directories left by test
/// processes that no longer exist (killed ones).
#[derive(Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new() -> PinDir {
        PIN_SWEEP.call_once(|| {
            let probe = Path::new("/sys/fs/bpf").join(PIN_PREFIX);
            if let Err(e) = devmapc_runtime::bpffs::prepare_pin_dir(&probe) {
                eprintln!("warning: pins of this test run cannot be made: {e}");
            }
            let Ok(read) = std::fs::read_dir("/sys/fs/bpf") else {
                return;
            };
            for entry in read.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name.strip_prefix(PIN_PREFIX).and_then(|r| r.split('-').next());
                if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        });
        let n = PIN_COUNTER.fetch_add(1, Ordering::Relaxed);
        PinDir(PathBuf::from(format!("/sys/fs/bpf/{PIN_PREFIX}{}-{n}", std::process::id())))
    }
}

impl Default for PinDir {
    fn default() -> Self {
        PinDir::new()
    }
}

impl std::ops::Deref for PinDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for PinDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // Links pinned here stay attached until unpinned and detached; the
        // namespace's deletion takes their devices (and them) away anyway.
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                eprintln!("warning: could not remove {}: {e}", self.0.display());
            }
        }
    }
}
