//! File-level primitives of the snapshots: hard links, reflinks, copy_file_range, plain copies,
//! a tree copy that never follows symlinks, atomic writes, syncfs and statvfs.

use super::{FileEntry, FileKind, How, SnapshotError};
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

/// The errno behind an io::Error, also when fs_err wrapped it (fs_err keeps the original error
/// as the `source` of its own, so `raw_os_error()` of the outer error is None).
pub(crate) fn errno_of(e: &io::Error) -> Option<i32> {
    if let Some(n) = e.raw_os_error() {
        return Some(n);
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().map(|r| r as &(dyn std::error::Error + 'static));
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        cur = err.source();
    }
    None
}

pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(errno_of(e), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> SnapshotError {
    SnapshotError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn last_os_error() -> io::Error {
    io::Error::last_os_error()
}

/// Tries the FICLONE ioctl: the destination shares the source's extents copy-on-write, so the
/// copy is instant and later writes to either file never reach the other (btrfs, XFS with
/// reflink=1, bcachefs). Returns false where the file system cannot (ext4: EOPNOTSUPP).
fn reflink(src: &std::fs::File, dst: &std::fs::File) -> io::Result<bool> {
    // SAFETY: both descriptors are open files owned by the caller for the whole call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        return Ok(true);
    }
    let e = last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP)
        | Some(libc::EXDEV)
        | Some(libc::EINVAL)
        | Some(libc::ENOTTY)
        | Some(libc::EPERM)
        | Some(libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// copy_file_range(2) loop: the kernel copies (server-side on NFS, no round trip through user
/// space). Returns Ok(false) when the kernel/file system refuses before anything was copied.
fn copy_range(src: &std::fs::File, dst: &std::fs::File, len: u64) -> io::Result<bool> {
    let mut done: u64 = 0;
    while done < len {
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: valid descriptors; null offsets mean "use and advance the file offsets".
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = last_os_error();
            if done == 0
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::ENOSYS)
                        | Some(libc::EOPNOTSUPP)
                        | Some(libc::EINVAL)
                        | Some(libc::EPERM)
                )
            {
                return Ok(false);
            }
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            // The file shrank under us: the server is supposed to be stopped.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was copied (is the server really stopped?)",
            ));
        }
        done += n as u64;
    }
    Ok(true)
}

fn plain_copy(src: &mut std::fs::File, dst: &mut std::fs::File) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
    }
}

/// Copies one regular file: reflink, else copy_file_range, else read/write. Preserves mode,
/// owner and mtime. Never follows a symlink (O_NOFOLLOW) and never overwrites (O_EXCL).
pub(crate) fn copy_file(
    src: &Path,
    dst: &Path,
    meta: &std::fs::Metadata,
) -> Result<How, SnapshotError> {
    let mut s = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(src)
        .map_err(|e| io_err("open", src, e))?
        .into_parts()
        .0;
    let mut d = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dst)
        .map_err(|e| io_err("create", dst, e))?
        .into_parts()
        .0;
    let len = meta.len();
    // Like cp: tell the kernel we read front to back (larger read-ahead on a cold cache).
    // SAFETY: valid descriptor; advice only.
    unsafe {
        libc::posix_fadvise(s.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
    let how = if len > 0 && reflink(&s, &d).map_err(|e| io_err("clone (FICLONE)", dst, e))? {
        How::Reflink
    } else if len > 0 && copy_range(&s, &d, len).map_err(|e| io_err("copy_file_range", dst, e))? {
        How::CopyFileRange
    } else {
        plain_copy(&mut s, &mut d).map_err(|e| io_err("copy", dst, e))?;
        How::Copy
    };
    set_attrs_fd(&d, dst, meta)?;
    Ok(how)
}

/// Owner first, then mode (chown clears set-id bits), then mtime.
fn set_attrs_fd(
    f: &std::fs::File,
    path: &Path,
    meta: &std::fs::Metadata,
) -> Result<(), SnapshotError> {
    let fd = f.as_raw_fd();
    // SAFETY: fd is open for the duration of these calls.
    unsafe {
        if libc::fchown(fd, meta.uid(), meta.gid()) != 0 {
            return Err(io_err("chown", path, last_os_error()));
        }
        if libc::fchmod(fd, meta.mode() & 0o7777) != 0 {
            return Err(io_err("chmod", path, last_os_error()));
        }
        let times = times_of(meta);
        if libc::futimens(fd, times.as_ptr()) != 0 {
            return Err(io_err("set times of", path, last_os_error()));
        }
    }
    Ok(())
}

/// Access and modification times of `meta`, as futimens/utimensat take them.
fn times_of(meta: &std::fs::Metadata) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: meta.atime() as libc::time_t,
            tv_nsec: meta.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: meta.mtime() as libc::time_t,
            tv_nsec: meta.mtime_nsec() as _,
        },
    ]
}

fn cstr(path: &Path) -> Result<CString, SnapshotError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_err(
            "use",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })
}

/// Owner, mode and times of a directory or (owner only) a symlink, without following links.
pub(crate) fn set_attrs_path(
    path: &Path,
    meta: &std::fs::Metadata,
    symlink: bool,
) -> Result<(), SnapshotError> {
    let c = cstr(path)?;
    // SAFETY: c is a valid NUL-terminated path.
    unsafe {
        if libc::lchown(c.as_ptr(), meta.uid(), meta.gid()) != 0 {
            return Err(io_err("chown", path, last_os_error()));
        }
        if symlink {
            return Ok(());
        }
        if libc::chmod(c.as_ptr(), meta.mode() & 0o7777) != 0 {
            return Err(io_err("chmod", path, last_os_error()));
        }
        let times = times_of(meta);
        if libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return Err(io_err("set times of", path, last_os_error()));
        }
    }
    Ok(())
}

/// Does a symlink at `rel` (relative to the tree root) with target `target` stay inside the
/// tree? Decided lexically: we never resolve it, so nothing outside is ever read.
pub fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.parent().map_or(0, |p| p.components().count() as i64);
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Copies the tree `src` to the new directory `dst`. `link(rel)` says whether a regular file may
/// be hard-linked instead of copied (only immutable files, and only on the same file system).
/// Symlinks are recreated as symlinks, never followed; those pointing out of the tree are
/// recorded in `warnings`. Other special files are skipped with a warning.
pub(crate) fn copy_tree(
    src: &Path,
    dst: &Path,
    link: &dyn Fn(&str) -> bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<FileEntry>, SnapshotError> {
    let root_meta = fs::symlink_metadata(src).map_err(|e| io_err("inspect", src, e))?;
    if !root_meta.is_dir() {
        return Err(io_err(
            "snapshot",
            src,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory (a symlink to the data directory is not followed: point the \
                 config at the real directory)",
            ),
        ));
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dst)
        .map_err(|e| io_err("create directory", dst, e))?;
    let mut entries = vec![entry(".", FileKind::Dir, &root_meta, None, None)];
    // Directories get their final mode/owner/times after their content is in place.
    let mut dirs: Vec<(PathBuf, std::fs::Metadata)> = vec![(dst.to_owned(), root_meta)];
    let mut stack: Vec<String> = vec![String::new()];
    while let Some(rel_dir) = stack.pop() {
        let sdir = if rel_dir.is_empty() {
            src.to_owned()
        } else {
            src.join(&rel_dir)
        };
        let mut names: Vec<_> = fs::read_dir(&sdir)
            .map_err(|e| io_err("list", &sdir, e))?
            .map(|r| r.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| io_err("list", &sdir, e))?;
        names.sort();
        for name in names {
            let Some(name) = name.to_str().map(str::to_string) else {
                return Err(io_err(
                    "snapshot",
                    &sdir.join(&name),
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "file name is not UTF-8; rename it",
                    ),
                ));
            };
            let rel = if rel_dir.is_empty() {
                name.clone()
            } else {
                format!("{rel_dir}/{name}")
            };
            let s = src.join(&rel);
            let d = dst.join(&rel);
            let meta = fs::symlink_metadata(&s).map_err(|e| io_err("inspect", &s, e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| io_err("create directory", &d, e))?;
                entries.push(entry(&rel, FileKind::Dir, &meta, None, None));
                dirs.push((d, meta));
                stack.push(rel);
            } else if ft.is_symlink() {
                let target = fs::read_link(&s).map_err(|e| io_err("read link", &s, e))?;
                if !link_stays_inside(Path::new(&rel), &target) {
                    warnings.push(format!(
                        "{} is a symlink to {}, outside the data directory: recorded as a \
                         symlink, its target is NOT in the snapshot",
                        s.display(),
                        target.display()
                    ));
                }
                std::os::unix::fs::symlink(&target, &d)
                    .map_err(|e| io_err("create symlink", &d, e))?;
                set_attrs_path(&d, &meta, true)?;
                entries.push(entry(&rel, FileKind::Symlink, &meta, Some(target), None));
            } else if ft.is_file() {
                let how = if link(&rel) {
                    // linkat without AT_SYMLINK_FOLLOW: links the entry itself, never a target.
                    match std::fs::hard_link(&s, &d) {
                        Ok(()) => How::HardLink,
                        Err(e)
                            if matches!(
                                errno_of(&e),
                                Some(libc::EXDEV) | Some(libc::EMLINK) | Some(libc::EPERM)
                            ) =>
                        {
                            copy_file(&s, &d, &meta)?
                        }
                        Err(e) => return Err(io_err("hard-link", &d, e)),
                    }
                } else {
                    copy_file(&s, &d, &meta)?
                };
                entries.push(entry(&rel, FileKind::File, &meta, None, Some(how)));
            } else {
                warnings.push(format!(
                    "{} is not a regular file, directory or symlink (socket/fifo/device): skipped",
                    s.display()
                ));
            }
        }
    }
    for (d, meta) in dirs.iter().rev() {
        set_attrs_path(d, meta, false)?;
    }
    Ok(entries)
}

pub(crate) fn entry(
    rel: &str,
    kind: FileKind,
    meta: &std::fs::Metadata,
    link_target: Option<PathBuf>,
    how: Option<How>,
) -> FileEntry {
    FileEntry {
        path: rel.to_string(),
        kind,
        size: if kind == FileKind::File {
            meta.len()
        } else {
            0
        },
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        link_target,
        how,
        sha256: None,
    }
}

/// Flushes every dirty page and inode of the file system holding `path`: one call instead of
/// an fsync per copied file, same durability (since Linux 5.8 it reports writeback errors).
pub(crate) fn syncfs(path: &Path) -> Result<(), SnapshotError> {
    let f = fs::File::open(path).map_err(|e| io_err("open", path, e))?;
    // SAFETY: valid descriptor.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io_err("sync the file system of", path, last_os_error()));
    }
    Ok(())
}

pub(crate) fn fsync_dir(path: &Path) -> Result<(), SnapshotError> {
    let f = fs::File::open(path).map_err(|e| io_err("open", path, e))?;
    f.sync_all().map_err(|e| io_err("fsync", path, e))
}

/// Writes `path` atomically: temp file in the same directory, fsync, rename, fsync directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SnapshotError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(data).map_err(|e| io_err("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_err("rename into place", path, e))?;
    fsync_dir(dir)
}

/// Bytes available on the file system of `path` (f_bavail: without the root reserve, the
/// conservative figure).
pub(crate) fn bytes_free(path: &Path) -> Result<u64, SnapshotError> {
    // The root may not exist yet: ask about the nearest existing ancestor.
    let mut p = path.to_owned();
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent.to_owned(),
            None => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(&p)
        .map_err(|e| io_err("statvfs", &p, io::Error::from_raw_os_error(e as i32)))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The device of the file system holding `path` (or its nearest existing ancestor).
pub(crate) fn device_of(path: &Path) -> Option<u64> {
    let mut p = path.to_owned();
    loop {
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            return Some(m.dev());
        }
        p = p.parent()?.to_owned();
    }
}

/// Removes a tree we created; a missing tree is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspect", path, e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| io_err("remove", path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| io_err("remove", path, e)),
    }
}

/// Exchanges two paths atomically (renameat2 RENAME_EXCHANGE): at every instant each name
/// holds a complete tree. Returns false where the file system does not support it.
pub(crate) fn exchange(a: &Path, b: &Path) -> Result<bool, SnapshotError> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => Ok(false),
        Err(e) => Err(io_err(
            "exchange",
            a,
            io::Error::other(format!("with {}: {e}", b.display())),
        )),
    }
}

/// Moves `fresh` to `live`, keeping the old `live` at `displaced` until the caller removes it.
/// With RENAME_EXCHANGE there is no instant without a complete `live`; without it, `live` is
/// renamed away first (a crash in between leaves `live` missing and both trees intact, which
/// `recover` -> restore again repairs).
pub(crate) fn swap_in(fresh: &Path, live: &Path, displaced: &Path) -> Result<(), SnapshotError> {
    let live_exists = std::fs::symlink_metadata(live).is_ok();
    if live_exists {
        if exchange(fresh, live)? {
            // `fresh` now names the old tree.
            fs::rename(fresh, displaced).map_err(|e| io_err("rename", fresh, e))?;
        } else {
            fs::rename(live, displaced).map_err(|e| io_err("rename away", live, e))?;
            fs::rename(fresh, live).map_err(|e| io_err("rename into place", live, e))?;
        }
    } else {
        fs::rename(fresh, live).map_err(|e| io_err("rename into place", live, e))?;
    }
    if let Some(parent) = live.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// For a `live` directory that is a mount point: moves its entries (except `fresh` and
/// `displaced`, both inside it) into `displaced`, then the entries of `fresh` into `live`, then
/// gives `live` the attributes of `fresh`. Not atomic as a whole; each step is a rename on one
/// file system, and an interrupted run is repaired by restoring again (the displaced entries are
/// the data being rolled back, never needed again).
pub(crate) fn swap_contents(
    fresh: &Path,
    live: &Path,
    displaced: &Path,
) -> Result<(), SnapshotError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(displaced)
        .map_err(|e| io_err("create directory", displaced, e))?;
    let names = |dir: &Path| -> Result<Vec<std::ffi::OsString>, SnapshotError> {
        let mut v = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
            v.push(e.map_err(|e| io_err("list", dir, e))?.file_name());
        }
        Ok(v)
    };
    // Read before the renames below change the directory's times.
    let meta = fs::symlink_metadata(fresh).map_err(|e| io_err("inspect", fresh, e))?;
    let skip = [fresh.file_name(), displaced.file_name()];
    for n in names(live)? {
        if skip.contains(&Some(n.as_os_str())) {
            continue;
        }
        fs::rename(live.join(&n), displaced.join(&n))
            .map_err(|e| io_err("move away", &live.join(&n), e))?;
    }
    for n in names(fresh)? {
        fs::rename(fresh.join(&n), live.join(&n))
            .map_err(|e| io_err("move into place", &live.join(&n), e))?;
    }
    set_attrs_path(live, &meta, false)?;
    fs::remove_dir(fresh).map_err(|e| io_err("remove", fresh, e))?;
    fsync_dir(live)
}

/// Creates `root` (0700, ours) if missing and refuses one that others could write to or that
/// belongs to another user: a snapshot there could be swapped for data an attacker chose.
pub(crate) fn ensure_private_dir(root: &Path) -> Result<(), SnapshotError> {
    if std::fs::symlink_metadata(root).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| io_err("create directory", root, e))?;
        // DirBuilder applies the umask: set the mode explicitly.
        fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("chmod", root, e))?;
    }
    check_private_dir(root)
}

pub(crate) fn check_private_dir(dir: &Path) -> Result<(), SnapshotError> {
    let m = fs::symlink_metadata(dir).map_err(|e| io_err("inspect", dir, e))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !m.is_dir() || m.mode() & 0o022 != 0 || m.uid() != euid {
        return Err(SnapshotError::InsecureDir {
            path: dir.to_owned(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            euid,
        });
    }
    Ok(())
}
