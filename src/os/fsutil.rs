//! File operations that stay safe where someone else can write.
//!
//! The helper runs as root, and the `stalwart` user (the server, or whoever took it over) can write
//! the server's config, data and log directories (in an install.sh layout, all of /opt/stalwart).
//! A path-based operation there (`chmod(path)`, `open(path)`, `read_dir(path)`) can be turned
//! against root between the check and the use: a name swapped for a symlink to /etc makes root
//! chmod, read or delete something else. So below such a directory every operation goes through
//! directory file descriptors:
//! - a directory is opened once with `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`: no
//!   component of its path may be a symlink, whoever wrote it;
//! - entries are reached relative to that descriptor, never by a path again (`openat` with
//!   `O_NOFOLLOW`, `fstatat(AT_SYMLINK_NOFOLLOW)`, `mkdirat`, `linkat` without
//!   `AT_SYMLINK_FOLLOW`, `renameat2`, `unlinkat`);
//! - owner, mode and times are set on the open descriptor (`fchown`, `fchmod`, `futimens`), and
//!   owner and mode of a file are taken from `fstat` of the descriptor that is read, never from a
//!   separate `stat` of its name.
//!
//! The system calls come from `rustix`; this module only composes them.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Stat, CWD};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A failed file operation: what was done, on which path, and the system's answer.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {source}")]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Replaces the file at `path` (a path the caller trusts: root's own directories, reached by
/// name) by `bytes` with `mode`, durably: written to a temporary file beside it, fsync'd,
/// renamed over it, the directory fsync'd. For directories someone else can write, use
/// [`Dir::write_atomic`] instead.
pub fn write_atomic_path(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| FsError::new("create a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| FsError::new("write", path, e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| FsError::new("chmod", path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FsError::new("fsync", path, e))?;
    tmp.persist(path)
        .map_err(|e| FsError::new("rename over", path, e.error))?;
    fsync_dir_path(dir).map_err(|e| FsError::new("fsync", dir, e))
}

/// fsync of a directory reached by name (a rename or unlink inside it becomes durable).
pub fn fsync_dir_path(dir: &Path) -> io::Result<()> {
    trace::note("fsync", dir);
    std::fs::File::open(dir)?.sync_all()
}

impl FsError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        FsError {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
    /// ENOSPC / EDQUOT: the file system is full.
    pub fn is_no_space(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

/// Test builds record, per thread, the durability-relevant operations (fsync, syncfs, rename,
/// remove) in the order they ran, so a test can check that the fsyncs making data durable come
/// before the rename or delete that ends a step. Power loss itself cannot be observed without
/// dropping a device's page cache; the order can.
#[cfg(test)]
pub(crate) mod trace {
    use std::cell::RefCell;
    use std::path::Path;

    thread_local! {
        static LOG: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    /// Starts recording on this thread (dropping what was recorded before).
    pub(crate) fn start() {
        LOG.with(|l| *l.borrow_mut() = Some(Vec::new()));
    }

    /// Stops recording; returns the operations as `"<op> <path>"`.
    pub(crate) fn take() -> Vec<String> {
        LOG.with(|l| l.borrow_mut().take().unwrap_or_default())
    }

    pub(crate) fn note(op: &str, path: &Path) {
        LOG.with(|l| {
            if let Some(v) = l.borrow_mut().as_mut() {
                v.push(format!("{op} {}", path.display()));
            }
        });
    }

    /// The index of the first recorded operation equal to `what`; panics with the log if none.
    pub(crate) fn position(log: &[String], what: &str) -> usize {
        log.iter()
            .position(|l| l == what)
            .unwrap_or_else(|| panic!("{what:?} not in {log:#?}"))
    }
}

#[cfg(not(test))]
pub(crate) mod trace {
    #[inline(always)]
    pub(crate) fn note(_op: &str, _path: &std::path::Path) {}
}

/// `fsync` of an open file (its data and metadata on disk), recorded in test builds.
pub fn sync_file(f: &File, path: &Path) -> Result<()> {
    trace::note("fsync", path);
    f.sync_all().map_err(|e| FsError::new("fsync", path, e))
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// The identity of an inode: what a recorded path must still lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

impl Identity {
    pub fn of(st: &Stat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// What `fstat` says about an entry, in the terms the callers need.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Bytes actually allocated (a sparse file has fewer than its size).
    pub allocated: u64,
    pub nlink: u64,
    pub id: Identity,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Socket, FIFO, device: never read, never copied.
    Special,
}

impl Meta {
    pub fn of(st: &Stat) -> Meta {
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Special,
        };
        Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            allocated: st.st_blocks as u64 * 512,
            nlink: st.st_nlink,
            id: Identity::of(st),
            atime: (st.st_atime, st.st_atime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        }
    }
    /// Writable by group or others (a directory with the sticky bit only by its owner's rules).
    pub fn writable_by_others(&self) -> bool {
        let sticky_dir = self.kind == Kind::Dir && self.mode & 0o1000 != 0;
        self.mode & 0o022 != 0 && !sticky_dir
    }
}

/// An open directory; every operation on an entry is relative to it. `path` is where it was
/// opened, for messages only: it is never used to reach the directory again.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

impl Dir {
    /// Opens the directory at the absolute `path`; refused when any component of it is a symlink
    /// (`RESOLVE_NO_SYMLINKS`), since whoever could write a directory on the way could have made
    /// it one.
    pub fn open(path: &Path) -> Result<Dir> {
        if !path.is_absolute() {
            return Err(FsError::new(
                "open",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not an absolute path"),
            ));
        }
        let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = match rustix::fs::openat2(CWD, path, DIR_FLAGS, Mode::empty(), resolve) {
            Ok(fd) => fd,
            // Kernels before 5.6 have no openat2: the same rule, one component at a time.
            Err(Errno::NOSYS) => Self::open_by_components(path)?,
            Err(e)
                if e == Errno::LOOP
                    || (e == Errno::NOTDIR
                        && std::fs::symlink_metadata(path)
                            .is_ok_and(|m| m.file_type().is_symlink())) =>
            {
                return Err(FsError::new(
                    "open",
                    path,
                    io::Error::other(
                        "a component of this path is a symbolic link, which is not followed \
                         (anyone who can write a directory on the way could have put it there); \
                         use the real path",
                    ),
                ))
            }
            Err(e) => return Err(FsError::new("open", path, errno(e))),
        };
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    fn open_by_components(path: &Path) -> Result<OwnedFd> {
        let mut fd = rustix::fs::openat(CWD, "/", DIR_FLAGS, Mode::empty())
            .map_err(|e| FsError::new("open", "/", errno(e)))?;
        for c in path.components() {
            match c {
                std::path::Component::RootDir | std::path::Component::CurDir => continue,
                std::path::Component::Normal(name) => {
                    fd = rustix::fs::openat(&fd, name, DIR_FLAGS, Mode::empty())
                        .map_err(|e| FsError::new("open", path, errno(e)))?;
                }
                _ => {
                    return Err(FsError::new(
                        "open",
                        path,
                        io::Error::new(io::ErrorKind::InvalidInput, "`..` in the path"),
                    ))
                }
            }
        }
        Ok(fd)
    }

    /// The directory holding `path` and the last component's name.
    pub fn open_parent(path: &Path) -> Result<(Dir, OsString)> {
        let name = path.file_name().ok_or_else(|| {
            FsError::new(
                "open the directory of",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
            )
        })?;
        let parent = path.parent().unwrap_or(Path::new("/"));
        Ok((Dir::open(parent)?, name.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Refuses names that would leave this directory.
    fn check_name<'a>(&self, name: &'a OsStr) -> Result<&'a OsStr> {
        let b = name.as_bytes();
        if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
            return Err(FsError::new(
                "use",
                self.child(name),
                io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
            ));
        }
        Ok(name)
    }

    pub fn meta(&self) -> Result<Meta> {
        rustix::fs::fstat(&self.fd)
            .map(|st| Meta::of(&st))
            .map_err(|e| FsError::new("inspect", &self.path, errno(e)))
    }

    /// `fstatat(name, AT_SYMLINK_NOFOLLOW)`; None when there is no such entry.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> Result<Option<Meta>> {
        let name = self.check_name(name.as_ref())?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(FsError::new("inspect", self.child(name), errno(e))),
        }
    }

    /// Opens the subdirectory `name` (not a symlink).
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> Result<Dir> {
        let name = self.check_name(name.as_ref())?;
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| FsError::new("open", self.child(name), errno(e)))?;
        Ok(Dir {
            fd,
            path: self.child(name),
        })
    }

    /// Creates the subdirectory `name` with `mode` (exactly: the umask does not apply) and
    /// opens it; it must then be ours (a directory someone else slipped in is refused).
    pub fn create_dir(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<Dir> {
        let name = self.check_name(name.as_ref())?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700))
            .map_err(|e| FsError::new("create directory", self.child(name), errno(e)))?;
        let d = self.open_dir(name)?;
        let m = d.meta()?;
        if m.uid != rustix::process::geteuid().as_raw() {
            return Err(FsError::new(
                "create directory",
                d.path.clone(),
                io::Error::other("someone else replaced it while it was created"),
            ));
        }
        d.set_mode(mode)?;
        Ok(d)
    }

    /// Opens the regular file `name` for reading: never a symlink (O_NOFOLLOW), never a FIFO or
    /// device (O_NONBLOCK for the open, then `fstat` of the descriptor itself).
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> Result<(File, Meta)> {
        let name = self.check_name(name.as_ref())?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::new("open", self.child(name), errno(e)))?;
        let st = rustix::fs::fstat(&fd)
            .map_err(|e| FsError::new("inspect", self.child(name), errno(e)))?;
        let meta = Meta::of(&st);
        if meta.kind != Kind::File {
            return Err(FsError::new(
                "open",
                self.child(name),
                io::Error::other("not a regular file"),
            ));
        }
        Ok((File::from(fd), meta))
    }

    /// Creates the new file `name` (O_EXCL: never an existing name, never through a symlink).
    pub fn create_file(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        let name = self.check_name(name.as_ref())?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode & 0o777),
        )
        .map_err(|e| FsError::new("create", self.child(name), errno(e)))?;
        Ok(File::from(fd))
    }

    /// Replaces `name` atomically with `data`: a temporary file in this directory, owner and mode
    /// set on its descriptor, fsync'd, renamed over `name`, directory fsync'd. At every instant
    /// `name` is the old or the new file, and nothing is ever done through a name afterwards.
    pub fn write_atomic(
        &self,
        name: impl AsRef<OsStr>,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let name = self.check_name(name.as_ref())?;
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{}.tmp", std::process::id()));
        self.remove_file(&tmp)?;
        let path = self.child(name);
        let result = (|| -> Result<()> {
            let mut f = self.create_file(&tmp, 0o600)?;
            f.write_all(data)
                .map_err(|e| FsError::new("write", path.clone(), e))?;
            if let Some((uid, gid)) = owner {
                set_owner(&f, &path, uid, gid)?;
            }
            set_mode(&f, &path, mode)?;
            f.sync_all()
                .map_err(|e| FsError::new("fsync", path.clone(), e))?;
            self.rename(&tmp, self, name)?;
            self.fsync()
        })();
        if result.is_err() {
            let _ = self.remove_file(&tmp);
        }
        result
    }

    /// Reads the regular file `name` (at most `limit` bytes).
    pub fn read_file(&self, name: impl AsRef<OsStr>, limit: u64) -> Result<Vec<u8>> {
        let name = name.as_ref();
        let (f, _) = self.open_file(name)?;
        let mut bytes = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| FsError::new("read", self.child(name), e))?;
        if bytes.len() as u64 > limit {
            return Err(FsError::new(
                "read",
                self.child(name),
                io::Error::other(format!("larger than {limit} bytes")),
            ));
        }
        Ok(bytes)
    }

    /// Entry names, sorted, without `.` and `..`.
    pub fn entries(&self) -> Result<Vec<OsString>> {
        let mut d = rustix::fs::Dir::read_from(&self.fd)
            .map_err(|e| FsError::new("list", &self.path, errno(e)))?;
        let mut out = Vec::new();
        while let Some(e) = d.read() {
            let e = e.map_err(|e| FsError::new("list", &self.path, errno(e)))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// `renameat2(self/from, to_dir/to)`: replaces `to`.
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &Dir,
        to: impl AsRef<OsStr>,
    ) -> Result<()> {
        self.rename_with(from.as_ref(), to_dir, to.as_ref(), RenameFlags::empty())
    }

    /// `renameat2(.., RENAME_NOREPLACE)`: fails when `to` exists.
    pub fn rename_noreplace(
        &self,
        from: impl AsRef<OsStr>,
        to_dir: &Dir,
        to: impl AsRef<OsStr>,
    ) -> Result<()> {
        self.rename_with(from.as_ref(), to_dir, to.as_ref(), RenameFlags::NOREPLACE)
    }

    fn rename_with(
        &self,
        from: &OsStr,
        to_dir: &Dir,
        to: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        let (from, to) = (self.check_name(from)?, to_dir.check_name(to)?);
        trace::note("rename", &self.child(from));
        rustix::fs::renameat_with(&self.fd, from, &to_dir.fd, to, flags)
            .map_err(|e| FsError::new("rename", to_dir.child(to), errno(e)))
    }

    /// Exchanges `a` here with `b` in `other` atomically (RENAME_EXCHANGE). Ok(false) where the
    /// file system cannot.
    pub fn exchange(
        &self,
        a: impl AsRef<OsStr>,
        other: &Dir,
        b: impl AsRef<OsStr>,
    ) -> Result<bool> {
        let (a, b) = (self.check_name(a.as_ref())?, other.check_name(b.as_ref())?);
        trace::note("rename", &self.child(a));
        match rustix::fs::renameat_with(&self.fd, a, &other.fd, b, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            Err(Errno::INVAL) | Err(Errno::NOSYS) => Ok(false),
            Err(e) => Err(FsError::new("exchange", self.child(a), errno(e))),
        }
    }

    /// Removes the file or symlink `name`; a missing one is fine.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = self.check_name(name.as_ref())?;
        trace::note("remove", &self.child(name));
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(FsError::new("remove", self.child(name), errno(e))),
        }
    }

    /// Removes `name` and everything below it, through descriptors (a directory swapped for a
    /// symlink meanwhile is removed as the symlink, its target untouched); a missing one is fine.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = self.check_name(name.as_ref())?;
        match self.stat(name)? {
            None => Ok(()),
            Some(m) if m.kind == Kind::Dir => {
                let sub = match self.open_dir(name) {
                    Ok(d) => d,
                    // Replaced by a non-directory in between: remove that instead.
                    Err(e)
                        if e.source.raw_os_error() == Some(libc::ENOTDIR)
                            || e.source.raw_os_error() == Some(libc::ELOOP) =>
                    {
                        return self.remove_file(name)
                    }
                    Err(e) => return Err(e),
                };
                for e in sub.entries()? {
                    sub.remove_tree(&e)?;
                }
                trace::note("remove", &self.child(name));
                match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(FsError::new("remove", self.child(name), errno(e))),
                }
            }
            Some(_) => self.remove_file(name),
        }
    }

    pub fn read_link(&self, name: impl AsRef<OsStr>) -> Result<PathBuf> {
        let name = self.check_name(name.as_ref())?;
        rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .map(|c| PathBuf::from(OsStr::from_bytes(c.as_bytes())))
            .map_err(|e| FsError::new("read link", self.child(name), errno(e)))
    }

    pub fn symlink(&self, target: &Path, name: impl AsRef<OsStr>) -> Result<()> {
        let name = self.check_name(name.as_ref())?;
        rustix::fs::symlinkat(target, &self.fd, name)
            .map_err(|e| FsError::new("create symlink", self.child(name), errno(e)))
    }

    /// A hard link of `name` here as `to_dir/to`, of the entry itself (never a symlink's target).
    pub fn hard_link(
        &self,
        name: impl AsRef<OsStr>,
        to_dir: &Dir,
        to: impl AsRef<OsStr>,
    ) -> Result<()> {
        let (name, to) = (
            self.check_name(name.as_ref())?,
            to_dir.check_name(to.as_ref())?,
        );
        rustix::fs::linkat(&self.fd, name, &to_dir.fd, to, AtFlags::empty())
            .map_err(|e| FsError::new("hard-link", to_dir.child(to), errno(e)))
    }

    /// Owner of the entry `name` itself (a symlink is not followed). For entries of a
    /// directory nobody else can write (one we created).
    pub fn chown_entry(&self, name: impl AsRef<OsStr>, uid: u32, gid: u32) -> Result<()> {
        let name = self.check_name(name.as_ref())?;
        rustix::fs::chownat(
            &self.fd,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| FsError::new("chown", self.child(name), errno(e)))
    }

    pub fn set_owner(&self, uid: u32, gid: u32) -> Result<()> {
        set_owner(&self.fd, &self.path, uid, gid)
    }
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        set_mode(&self.fd, &self.path, mode)
    }
    pub fn set_times(&self, m: &Meta) -> Result<()> {
        set_times(&self.fd, &self.path, m)
    }
    pub fn fsync(&self) -> Result<()> {
        trace::note("fsync", &self.path);
        rustix::fs::fsync(&self.fd).map_err(|e| FsError::new("fsync", &self.path, errno(e)))
    }
    /// Flushes the whole file system holding this directory (one call for many files).
    pub fn syncfs(&self) -> Result<()> {
        trace::note("syncfs", &self.path);
        rustix::fs::syncfs(&self.fd)
            .map_err(|e| FsError::new("sync the file system of", &self.path, errno(e)))
    }
    /// Bytes available to unprivileged users on this directory's file system.
    pub fn bytes_free(&self) -> Result<u64> {
        let st = rustix::fs::fstatvfs(&self.fd)
            .map_err(|e| FsError::new("statvfs", &self.path, errno(e)))?;
        Ok(st.f_bavail * st.f_frsize)
    }
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| FsError::new("duplicate", &self.path, e))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub fn set_owner(fd: impl AsFd, path: &Path, uid: u32, gid: u32) -> Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| FsError::new("chown", path, errno(e)))
}

/// Sets the mode of what `fd` holds. Never a set-user-ID or set-group-ID bit on anything but a
/// directory: the helper copies, restores and takes over files the service user made (their
/// modes included), and such a bit on a file root then owns, or that an exec of root's reaches,
/// hands root to whoever wrote the file. On a directory set-group-ID only means group
/// inheritance and is kept.
pub fn set_mode(fd: impl AsFd, path: &Path, mode: u32) -> Result<()> {
    let st = rustix::fs::fstat(&fd).map_err(|e| FsError::new("inspect", path, errno(e)))?;
    let mode = if Meta::of(&st).kind == Kind::Dir {
        mode & 0o7777
    } else {
        mode & NO_SET_ID
    };
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
        .map_err(|e| FsError::new("chmod", path, errno(e)))
}

/// The mode bits the helper ever gives a file: no set-user-ID, set-group-ID or sticky bit.
pub const NO_SET_ID: u32 = 0o777;

pub fn set_times(fd: impl AsFd, path: &Path, m: &Meta) -> Result<()> {
    let ts = |(s, ns): (i64, i64)| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(m.atime),
        last_modification: ts(m.mtime),
    };
    rustix::fs::futimens(fd, &times).map_err(|e| FsError::new("set times of", path, errno(e)))
}

/// Who other than root could change what `path` names: the first entry from `path` up to `/`
/// that is owned by someone else (their uid and gid), or writable by a group (nobody with that
/// group) or by everyone (nobody). A directory with the sticky bit lets others add entries but
/// not replace ours. None when only root can. Read with `lstat`: a symlink on the way counts
/// as its owner's.
pub fn writer_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut p = Some(path);
    while let Some(at) = p {
        if let Ok(m) = std::fs::symlink_metadata(at) {
            let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
            if m.uid() != 0 {
                return Some((m.uid(), m.gid()));
            }
            if !sticky_dir && m.mode() & 0o020 != 0 && m.gid() != 0 {
                return Some((crate::NOBODY, m.gid()));
            }
            if !sticky_dir && m.mode() & 0o002 != 0 {
                return Some((crate::NOBODY, crate::NOBODY));
            }
        }
        p = at.parent().filter(|q| !q.as_os_str().is_empty());
    }
    None
}

pub fn meta_of(f: &File, path: &Path) -> Result<Meta> {
    rustix::fs::fstat(f)
        .map(|st| Meta::of(&st))
        .map_err(|e| FsError::new("inspect", path, errno(e)))
}

/// How a file's content was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyHow {
    /// FICLONE: shared extents, copy-on-write (btrfs, XFS reflink=1).
    Reflink,
    /// copy_file_range of the data extents only (holes stay holes).
    CopyFileRange,
    /// read/write (blocks of zeros left as holes).
    Copy,
}

/// Copies the content of `src` (`len` bytes) into the empty `dst`: a reflink where the file
/// system shares extents, else the data extents with copy_file_range (SEEK_DATA/SEEK_HOLE, so a
/// sparse file stays sparse and costs no more than it holds), else read/write.
pub fn copy_content(src: &File, dst: &File, len: u64, path: &Path) -> Result<CopyHow> {
    if len == 0 {
        return Ok(CopyHow::Copy);
    }
    match rustix::fs::ioctl_ficlone(dst, src) {
        Ok(()) => {
            crate::os::progress::advance(len);
            return Ok(CopyHow::Reflink);
        }
        Err(Errno::OPNOTSUPP)
        | Err(Errno::XDEV)
        | Err(Errno::INVAL)
        | Err(Errno::NOTTY)
        | Err(Errno::PERM)
        | Err(Errno::NOSYS) => {}
        Err(e) => return Err(FsError::new("clone (FICLONE)", path, errno(e))),
    }
    // Like cp: we read front to back.
    let _ = rustix::fs::fadvise(src, 0, None, rustix::fs::Advice::Sequential);
    let how = match copy_extents(src, dst, len) {
        Ok(true) => CopyHow::CopyFileRange,
        Ok(false) => {
            plain_copy(src, dst, len).map_err(|e| FsError::new("copy", path, e))?;
            CopyHow::Copy
        }
        Err(e) => return Err(FsError::new("copy_file_range", path, e)),
    };
    // Holes at the end: the size must be the source's.
    rustix::fs::ftruncate(dst, len).map_err(|e| FsError::new("truncate", path, errno(e)))?;
    Ok(how)
}

/// copy_file_range over the data extents of `src`. Ok(false) when the kernel refuses before
/// anything was copied (then a plain copy is used).
fn copy_extents(src: &File, dst: &File, len: u64) -> io::Result<bool> {
    use rustix::fs::SeekFrom;
    let mut pos: u64 = 0;
    let mut first = true;
    while pos < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,         // only a hole is left
            Err(Errno::INVAL) if first => pos, // no SEEK_DATA support: copy everything
            Err(e) => return Err(errno(e)),
        };
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(_) => len,
        };
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            // 64 MiB at a time: progress moves, and the syscall count stays negligible.
            let chunk = ((hole - off_in).min(64 << 20)) as usize;
            match rustix::fs::copy_file_range(
                src,
                Some(&mut off_in),
                dst,
                Some(&mut off_out),
                chunk,
            ) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file got shorter while it was copied (is the server really stopped?)",
                    ))
                }
                Ok(n) => {
                    first = false;
                    crate::os::progress::advance(n as u64);
                }
                Err(Errno::INTR) => {}
                Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL | Errno::PERM)
                    if first =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(errno(e)),
            }
        }
        pos = hole;
    }
    Ok(true)
}

/// Reads and writes the first `len` bytes (the length the caller took from `fstat`: a file that
/// grows meanwhile is not followed). `dst` is new, so a block of zeros is not written: it stays
/// a hole, and a sparse source does not become a full copy.
fn plain_copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let want = (len - off).min(buf.len() as u64) as usize;
        let n = match src.read_at(&mut buf[..want], off) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], off)?;
        }
        off += n as u64;
        crate::os::progress::advance(n as u64);
    }
    Ok(())
}

/// sha256 of an open file's content, read from its start.
pub fn sha256_of(f: &File, path: &Path) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    loop {
        let n = match f.read_at(&mut buf, off) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FsError::new("read", path, e)),
        };
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        (t, d)
    }

    /// Issue #23 finding 9: not only the owner of the file counts; whoever can write a
    /// directory above it can replace it.
    #[test]
    fn the_writer_of_a_path_is_found_above_it_too() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("a/b"));
        std::fs::create_dir_all(&b).unwrap();
        let f = b.join("config.toml");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(writer_of(&f), None, "root's all the way up");
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o775)).unwrap();
        std::os::unix::fs::chown(&b, None, Some(4242)).unwrap();
        assert_eq!(
            writer_of(&f),
            Some((crate::NOBODY, 4242)),
            "group-writable dir"
        );
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&a, Some(4243), Some(4244)).unwrap();
        assert_eq!(
            writer_of(&f),
            Some((4243, 4244)),
            "owner of a directory above"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o646)).unwrap();
        assert_eq!(
            writer_of(&f),
            Some((crate::NOBODY, crate::NOBODY)),
            "world-writable"
        );
    }

    #[test]
    fn a_symlink_anywhere_in_the_path_is_refused() {
        let (t, _) = tmp();
        std::fs::create_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
        let e = Dir::open(&t.path().join("link")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::create_dir(t.path().join("real/sub")).unwrap();
        assert!(Dir::open(&t.path().join("link/sub")).is_err());
        assert!(Dir::open(&t.path().join("real/sub")).is_ok());
        assert!(Dir::open(Path::new("relative")).is_err());
        assert!(Dir::open_by_components(&t.path().join("link/sub")).is_err());
        assert!(Dir::open_by_components(&t.path().join("real/sub")).is_ok());
    }

    #[test]
    fn entries_are_never_reached_through_symlinks() {
        let (t, d) = tmp();
        let victim = t.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("name")).unwrap();
        assert!(d.open_file("name").is_err());
        assert!(d.create_file("name", 0o600).is_err());
        assert!(d.open_dir("name").is_err());
        assert!(d.stat("name").unwrap().unwrap().kind == Kind::Symlink);
        // write_atomic replaces the symlink itself; the target keeps its content and mode.
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        d.write_atomic("name", b"new", 0o644, None).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("name")).unwrap(),
            "new"
        );
        for bad in ["..", ".", "a/b", ""] {
            assert!(d.stat(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn special_files_are_not_opened() {
        let (t, d) = tmp();
        nix::unistd::mkfifo(
            &t.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = d.open_file("fifo").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dev = Dir::open(Path::new("/dev")).unwrap();
        assert!(dev.open_file("zero").is_err());
    }

    #[test]
    fn remove_tree_does_not_follow_a_symlink() {
        let (t, d) = tmp();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let sub = d.create_dir("tree", 0o700).unwrap();
        sub.create_dir("deeper", 0o700).unwrap();
        sub.symlink(outside.path(), "escape").unwrap();
        d.remove_tree("tree").unwrap();
        assert!(!t.path().join("tree").exists());
        assert!(outside.path().join("keep").exists());
        d.remove_tree("tree").unwrap();
    }

    #[test]
    fn sparse_files_stay_sparse() {
        let (t, d) = tmp();
        let p = t.path().join("sparse");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let (src, m) = d.open_file("sparse").unwrap();
        assert!(m.allocated < m.size / 4, "{m:?}");
        let dst = d.create_file("copy", 0o600).unwrap();
        copy_content(&src, &dst, m.size, &p).unwrap();
        let cm = meta_of(&dst, &p).unwrap();
        assert_eq!(cm.size, m.size);
        assert!(cm.allocated < 8 << 20, "the copy filled the holes: {cm:?}");
        drop(dst);
        let (copy, _) = d.open_file("copy").unwrap();
        assert_eq!(sha256_of(&src, &p).unwrap(), sha256_of(&copy, &p).unwrap());
    }

    /// The read/write fallback (no copy_file_range): holes stay holes, and a file that grew
    /// after its length was taken is copied to that length only.
    #[test]
    fn the_plain_copy_keeps_holes_and_stops_at_the_length() {
        let (t, d) = tmp();
        let p = t.path().join("sparse");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        let (src, m) = d.open_file("sparse").unwrap();
        // Grows after the fstat.
        f.write_all_at(b"later", 80 << 20).unwrap();
        drop(f);
        let dst = d.create_file("copy", 0o600).unwrap();
        plain_copy(&src, &dst, m.size).unwrap();
        let cm = meta_of(&dst, &p).unwrap();
        assert_eq!(cm.size, m.size);
        assert!(cm.allocated < 8 << 20, "the copy filled the holes: {cm:?}");
        drop(dst);
        let got = std::fs::read(t.path().join("copy")).unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[got.len() - 4..], b"tail");
        assert!(got[4..got.len() - 4].iter().all(|&b| b == 0));
    }
}
