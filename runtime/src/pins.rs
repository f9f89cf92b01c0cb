//! Pin directories walked without following symlinks, and what devmapc
//! pinned there proven by BPF object id.
//!
//! A pin directory may hold things devmapc did not make: a symlink planted
//! at `next` or `links/eth0` that leads into another deployment, or a pin
//! of someone else's map or link. Following either would unpin or detach
//! what is not ours. So:
//! - every directory is opened with `O_NOFOLLOW`, relative to its parent's
//!   fd, one component at a time ([`DirFd`]); an entry is looked at with
//!   `fstatat(AT_SYMLINK_NOFOLLOW)` before it is opened, and removed with
//!   `unlinkat` on the directory's fd;
//! - before devmapc pins a map, program or link, it adds the object's id
//!   to the deployment's ownership record (`DIR/owned`, a frozen map like
//!   the manifest, naming the directory by device and inode so that a
//!   record pinned elsewhere is refused). An object is devmapc's only when
//!   its id, read from the fd actually opened, is in that record
//!   ([`Record::owns`]): whatever a symlink or a race put at a name, the
//!   check is on the object itself;
//! - [`remove`] is the one function that unpins (and detaches a link):
//!   everything that takes pins away goes through it.

use crate::deploy::{check, io_error, read_blob_fd, DeployError};
use libbpf_rs::libbpf_sys;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The ownership record's pin inside a pin directory.
pub const OWNED: &str = "owned";
/// A new record, pinned before it is renamed over [`OWNED`].
pub const OWNED_NEXT: &str = "owned_next";
const OWNED_MAP_NAME: &str = "devmapc_owned";

/// What a name in a pin directory is, looked at without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Dir,
    /// A pinned BPF object (bpffs shows them as regular files).
    Pin,
    Symlink,
    Other,
}

/// A directory opened with `O_NOFOLLOW` (`path` is for messages only).
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad name {name:?}")));
    }
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl DirFd {
    /// Opens `path`, whose last component must not be a symlink (the parents
    /// are the operator's choice).
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid C string; the returned fd is ours.
        let fd = unsafe {
            libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirFd { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        let dup = self.fd.try_clone()?;
        std::fs::File::from(dup).metadata()
    }

    /// The sub-directory `name`; `None` when it does not exist. A symlink
    /// or anything else that is not a directory is an error.
    pub fn sub(&self, name: &str) -> io::Result<Option<DirFd>> {
        let c = c_name(name)?;
        // SAFETY: a valid fd and C string; the returned fd is ours.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a directory devmapc made (a symlink, or another kind of file): \
                         it is not followed",
                        self.path.join(name).display()
                    ),
                )),
                _ => Err(e),
            };
        }
        Ok(Some(DirFd { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: self.path.join(name) }))
    }

    /// Makes the sub-directory `name` (mode 0700) unless it exists, and
    /// opens it.
    pub fn make_sub(&self, name: &str) -> io::Result<DirFd> {
        let c = c_name(name)?;
        // SAFETY: a valid fd and C string.
        if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        self.sub(name)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// What `name` is, not following it.
    pub fn entry(&self, name: &str) -> Entry {
        let Ok(c) = c_name(name) else {
            return Entry::Missing;
        };
        // SAFETY: stat is written by the kernel; valid fd and C string.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::fstatat(self.fd.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if rc != 0 {
            return Entry::Missing;
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Entry::Dir,
            libc::S_IFREG => Entry::Pin,
            libc::S_IFLNK => Entry::Symlink,
            _ => Entry::Other,
        }
    }

    /// The names in the directory, sorted.
    pub fn names(&self) -> io::Result<Vec<String>> {
        // SAFETY: a duplicate of our fd, handed to fdopendir, which owns it
        // from then on (closedir closes it).
        let dup = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        let dirp = unsafe { libc::fdopendir(dup) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            unsafe { libc::close(dup) };
            return Err(e);
        }
        // The duplicate shares the offset of every earlier listing.
        unsafe { libc::rewinddir(dirp) };
        let mut names = Vec::new();
        loop {
            // SAFETY: dirp is a valid DIR*; the entry lives until the next call.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                break;
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let name = name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        unsafe { libc::closedir(dirp) };
        names.sort();
        Ok(names)
    }

    /// Opens the BPF object pinned at `name`; a symlink is never followed.
    pub fn get(&self, name: &str) -> io::Result<OwnedFd> {
        match self.entry(name) {
            Entry::Pin => {}
            Entry::Missing => return Err(io::Error::from(io::ErrorKind::NotFound)),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a pin (a symlink or a directory)", self.path.join(name).display()),
                ))
            }
        }
        // The name through our directory's fd: the parents are not looked
        // up again. (Should `name` become a symlink after the check above,
        // the ownership check on the opened object still holds.)
        let path = format!("/proc/self/fd/{}/{}", self.fd.as_raw_fd(), c_name(name)?.to_string_lossy());
        let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid C string; the returned fd is ours.
        let fd = check(unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) })?;
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Pins `fd` at `name`.
    pub fn pin(&self, fd: BorrowedFd<'_>, name: &str) -> Result<(), DeployError> {
        let path = format!(
            "/proc/self/fd/{}/{}",
            self.fd.as_raw_fd(),
            c_name(name).map_err(|e| io_error("cannot pin", &self.path.join(name), e))?.to_string_lossy()
        );
        crate::deploy::pin_fd_at(fd, Path::new(&path), &self.path.join(name))
    }

    /// Where the symlink `name` points, read without following it.
    pub fn link_text(&self, name: &str) -> Option<String> {
        let c = c_name(name).ok()?;
        let mut buf = [0u8; 256];
        // SAFETY: a buffer of `buf.len()` bytes.
        let n =
            unsafe { libc::readlinkat(self.fd.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 || n as usize >= buf.len() {
            return None;
        }
        Some(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
    }

    /// Makes the symlink `name` -> `target`.
    pub fn symlink(&self, target: &str, name: &str) -> io::Result<()> {
        let (t, c) =
            (CString::new(target).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?, c_name(name)?);
        // SAFETY: valid C strings and fd.
        if unsafe { libc::symlinkat(t.as_ptr(), self.fd.as_raw_fd(), c.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes the entry `name` itself (a pin, or a symlink: never what it
    /// points to), or with `dir`, the empty directory `name`.
    fn unlink(&self, name: &str, dir: bool) -> io::Result<()> {
        let c = c_name(name)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid fd and C string.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes the ownership record (the last of a deployment's pins).
    /// `owned_next` too, left by a replacement that was interrupted, when
    /// it is a record.
    pub fn unlink_record(&self, name: &str) -> io::Result<()> {
        let is_record = || self.get(name).and_then(|fd| read_blob_fd(OWNED_MAP_NAME, fd.as_fd())).is_ok();
        if ![OWNED, OWNED_NEXT].contains(&name) || self.entry(name) != Entry::Pin || !is_record() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.unlink(name, false)
    }

    /// Removes the empty sub-directory `name` (a symlink is not removed).
    pub fn rmdir(&self, name: &str) -> io::Result<()> {
        if self.entry(name) != Entry::Dir {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        self.unlink(name, true)
    }

    /// Removes a symlink devmapc made, after checking where it points.
    pub fn remove_symlink(&self, name: &str, made: impl Fn(&str) -> bool) -> io::Result<bool> {
        if self.entry(name) != Entry::Symlink || !self.link_text(name).is_some_and(|t| made(&t)) {
            return Ok(false);
        }
        self.unlink(name, false).map(|()| true)
    }

    /// Renames `from` in this directory to `to` in `into`, entries
    /// themselves (nothing is followed).
    pub fn rename(&self, from: &str, into: &DirFd, to: &str) -> io::Result<()> {
        let (f, t) = (c_name(from)?, c_name(to)?);
        // SAFETY: valid fds and C strings.
        if unsafe { libc::renameat(self.fd.as_raw_fd(), f.as_ptr(), into.fd.as_raw_fd(), t.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Device and inode: what the ownership record is bound to.
    fn identity(&self) -> io::Result<(u64, u64)> {
        // SAFETY: fstat writes into the zeroed struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.st_dev as u64, st.st_ino as u64))
    }
}

// ------------------------------------------------------------------ record

/// The kind of a BPF object: ids are numbered per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Map = 1,
    Prog = 2,
    Link = 3,
}

/// A BPF object's kind and id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjId {
    pub kind: Kind,
    pub id: u32,
}

/// The kind and id of the BPF object behind `fd` (the kind from the fd's
/// anon inode, the id from `BPF_OBJ_GET_INFO_BY_FD`, whose answer starts
/// with `type, id` for maps, programs and links alike).
pub fn obj_id(fd: BorrowedFd<'_>) -> io::Result<ObjId> {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let kind = match target.to_string_lossy().as_ref() {
        "anon_inode:bpf-map" => Kind::Map,
        "anon_inode:bpf-prog" => Kind::Prog,
        "anon_inode:bpf_link" | "anon_inode:bpf-link" => Kind::Link,
        other => {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not a BPF object ({other})")))
        }
    };
    let mut info = [0u32; 2];
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: `len` bytes; the kernel writes at most that many.
    check(unsafe { libbpf_sys::bpf_obj_get_info_by_fd(fd.as_raw_fd(), info.as_mut_ptr().cast(), &mut len) })?;
    Ok(ObjId { kind, id: info[1] })
}

/// The ids of what devmapc pinned in one pin directory.
#[derive(Clone, Debug, Default)]
pub struct Record {
    ids: BTreeSet<ObjId>,
}

impl Record {
    /// The record of `dir`: empty when there is none; an error when the pin
    /// named `owned` is not a record made for this very directory.
    pub fn read(dir: &DirFd) -> Result<Record, DeployError> {
        let path = dir.path().join(OWNED);
        let fd = match dir.get(OWNED) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(io_error("cannot read the ownership record", &path, e)),
        };
        let foreign = |why: &str| DeployError::NotDeployed {
            dir: dir.path().to_path_buf(),
            why: format!(
                "{} is not devmapc's ownership record of this directory ({why}): nothing in it \
                 is touched",
                path.display()
            ),
        };
        let bytes = read_blob_fd(OWNED_MAP_NAME, fd.as_fd()).map_err(|e| foreign(&e.to_string()))?;
        let (dev, ino) = dir.identity().map_err(|e| io_error("cannot stat", dir.path(), e))?;
        if bytes.len() < 16 || (bytes.len() - 16) % 8 != 0 {
            return Err(foreign("bad length"));
        }
        let word = |i: usize| u64::from_ne_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if (word(0), word(8)) != (dev, ino) {
            return Err(foreign("it was made for another directory"));
        }
        let mut ids = BTreeSet::new();
        for pair in bytes[16..].chunks_exact(8) {
            let kind = match u32::from_ne_bytes(pair[..4].try_into().expect("4 bytes")) {
                1 => Kind::Map,
                2 => Kind::Prog,
                3 => Kind::Link,
                _ => return Err(foreign("unknown object kind")),
            };
            ids.insert(ObjId { kind, id: u32::from_ne_bytes(pair[4..].try_into().expect("4 bytes")) });
        }
        Ok(Record { ids })
    }

    /// Whether the object behind `fd` is one devmapc pinned here.
    pub fn owns(&self, fd: BorrowedFd<'_>) -> bool {
        obj_id(fd).is_ok_and(|id| self.ids.contains(&id))
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Adds the objects behind `fds` to `dir`'s ownership record, before they
/// are pinned there. Ids of objects no longer pinned anywhere in `dir` are
/// dropped; the record is replaced atomically (pin beside it, rename).
pub fn own(dir: &DirFd, fds: &[BorrowedFd<'_>]) -> Result<(), DeployError> {
    let old = Record::read(dir)?;
    let mut ids = BTreeSet::new();
    if !old.is_empty() {
        collect_pinned(dir, &old, 0, &mut ids);
    }
    for fd in fds {
        ids.insert(obj_id(*fd).map_err(|e| io_error("cannot identify an object to pin in", dir.path(), e))?);
    }
    let (dev, ino) = dir.identity().map_err(|e| io_error("cannot stat", dir.path(), e))?;
    let mut bytes = Vec::with_capacity(16 + 8 * ids.len());
    bytes.extend(dev.to_ne_bytes());
    bytes.extend(ino.to_ne_bytes());
    for id in &ids {
        bytes.extend((id.kind as u32).to_ne_bytes());
        bytes.extend(id.id.to_ne_bytes());
    }
    // A left-over `owned_next` is a record of ours or nothing of value.
    if dir.entry(OWNED_NEXT) == Entry::Pin {
        dir.unlink(OWNED_NEXT, false)
            .map_err(|e| io_error("cannot unpin", &dir.path().join(OWNED_NEXT), e))?;
    }
    let next = dir.path().join(OWNED_NEXT);
    let map =
        crate::deploy::blob_map(OWNED_MAP_NAME, &bytes).map_err(|e| io_error("cannot store", &next, e))?;
    dir.pin(map.as_fd(), OWNED_NEXT)?;
    dir.rename(OWNED_NEXT, dir, OWNED).map_err(|e| io_error("cannot replace", &dir.path().join(OWNED), e))
}

/// The ids in `record` of the objects pinned in `dir` (and below, in the
/// sub-directories devmapc makes), without following anything.
fn collect_pinned(dir: &DirFd, record: &Record, depth: u32, into: &mut BTreeSet<ObjId>) {
    let Ok(names) = dir.names() else { return };
    for name in names {
        match dir.entry(&name) {
            Entry::Pin => {
                if let Ok(id) = dir.get(&name).and_then(|fd| obj_id(fd.as_fd())) {
                    if record.ids.contains(&id) {
                        into.insert(id);
                    }
                }
            }
            Entry::Dir if depth < 2 => {
                if let Ok(Some(sub)) = dir.sub(&name) {
                    collect_pinned(&sub, record, depth + 1, into);
                }
            }
            _ => {}
        }
    }
}

/// What [`remove`] did with a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// Nothing was there.
    Missing,
    /// Ours: unpinned (and, for a link, detached first).
    Unpinned(ObjId),
    /// Not provably ours: left in place; says what it is.
    Left(String),
}

/// Unpins `name` in `dir` if, and only if, the object pinned there is in
/// `record`; a link is detached first when `detach` is set. A symlink, a
/// directory or an object devmapc did not pin is left as it is. The one
/// function through which devmapc takes pins away.
pub fn remove(dir: &DirFd, name: &str, record: &Record, detach: bool) -> Result<Removed, DeployError> {
    let path = dir.path().join(name);
    match dir.entry(name) {
        Entry::Missing => return Ok(Removed::Missing),
        Entry::Pin => {}
        Entry::Symlink => {
            return Ok(Removed::Left(format!("{} (a symlink devmapc did not make)", path.display())))
        }
        Entry::Dir | Entry::Other => return Ok(Removed::Left(format!("{} (not a pin)", path.display()))),
    }
    let fd = match dir.get(name) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removed::Missing),
        Err(e) => {
            return Err(crate::deploy::permission_error("cannot unpin", &e)
                .unwrap_or_else(|| io_error("cannot open", &path, e)))
        }
    };
    let id = match obj_id(fd.as_fd()) {
        Ok(id) if record.ids.contains(&id) => id,
        Ok(id) => {
            return Ok(Removed::Left(format!(
                "{} ({:?} id {}, not pinned by this deployment)",
                path.display(),
                id.kind,
                id.id
            )))
        }
        Err(e) => return Ok(Removed::Left(format!("{} ({e})", path.display()))),
    };
    if detach && id.kind == Kind::Link {
        // SAFETY: a valid link fd, the very object checked above. A link
        // whose device is gone is detached already.
        let rc = unsafe { libbpf_sys::bpf_link_detach(fd.as_raw_fd()) };
        if let Err(e) = check(rc) {
            if !matches!(e.raw_os_error(), Some(libc::ENOLINK | libc::ENODEV | libc::EINVAL)) {
                return Err(crate::deploy::permission_error("cannot detach", &e)
                    .unwrap_or_else(|| io_error("cannot detach link", &path, e)));
            }
        }
    }
    match dir.unlink(name, false) {
        Ok(()) => Ok(Removed::Unpinned(id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Removed::Missing),
        Err(e) => Err(io_error("cannot unpin", &path, e)),
    }
}

/// Opens the object pinned at `name` in `dir` when it is in `record`;
/// `Ok(None)` when nothing is pinned there; an error naming the entry when
/// it is not provably this deployment's.
pub fn get_owned(dir: &DirFd, name: &str, record: &Record) -> Result<Option<OwnedFd>, DeployError> {
    let path = dir.path().join(name);
    let fd = match dir.get(name) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(foreign(&path, &e.to_string())),
        Err(e) => {
            return Err(crate::deploy::permission_error("cannot open the deployment", &e)
                .unwrap_or_else(|| io_error("cannot open", &path, e)))
        }
    };
    if !record.owns(fd.as_fd()) {
        let what =
            obj_id(fd.as_fd()).map_or_else(|e| e.to_string(), |id| format!("{:?} id {}", id.kind, id.id));
        return Err(foreign(&path, &format!("{what}, which this deployment did not pin")));
    }
    Ok(Some(fd))
}

/// An entry of a pin directory that is not the deployment's own.
pub fn foreign(path: &Path, what: &str) -> DeployError {
    DeployError::Foreign { path: path.to_path_buf(), what: what.to_string() }
}
