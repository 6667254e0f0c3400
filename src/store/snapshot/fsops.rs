//! File-level work of the snapshots, on directory descriptors (`crate::os::fsutil`): the tree copy
//! that links immutable files and copies the rest, the swap of a restored tree into place, and
//! the checks of the snapshot root.
//!
//! The data directories belong to the server's user, who may still have processes around (see
//! `systemd::Systemd::unit_processes`) or may have planted symlinks and FIFOs: nothing here
//! reaches an entry of theirs by a path. A directory is opened once (no symlink anywhere on its
//! path), every entry relative to it with `O_NOFOLLOW`, and owner, mode and size come from
//! `fstat` of the very descriptor that is read.

use super::{FileEntry, FileKind, How, SnapshotError};
use crate::os::fsutil::{self, CopyHow, Dir, FsError, Kind, Meta};
use std::ffi::OsStr;
use std::io;
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

impl From<FsError> for SnapshotError {
    fn from(e: FsError) -> Self {
        SnapshotError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl From<CopyHow> for How {
    fn from(h: CopyHow) -> Self {
        match h {
            CopyHow::Reflink => How::Reflink,
            CopyHow::CopyFileRange => How::CopyFileRange,
            CopyHow::Copy => How::Copy,
        }
    }
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

/// Copies the open regular file `src` (its `fstat` is `meta`) to the new `name` in `dst`, with
/// owner (or `owner`), mode and times of the source. Returns how.
pub(crate) fn copy_file_into(
    src: &std::fs::File,
    meta: &Meta,
    dst: &Dir,
    name: &OsStr,
    owner: Option<(u32, u32)>,
) -> Result<How, SnapshotError> {
    let path = dst.path().join(name);
    let d = dst.create_file(name, 0o600)?;
    let how = fsutil::copy_content(src, &d, meta.size, &path)?;
    let (uid, gid) = owner.unwrap_or((meta.uid, meta.gid));
    // Owner first, then mode (chown clears set-id bits), then times.
    fsutil::set_owner(&d, &path, uid, gid)?;
    fsutil::set_mode(&d, &path, meta.mode)?;
    fsutil::set_times(&d, &path, meta)?;
    Ok(how.into())
}

/// How `copy_tree` treats what it copies.
pub(crate) struct TreeCopy<'a> {
    /// May this regular file (relative path) be hard-linked instead of copied? Only immutable
    /// files, and only on the same file system.
    pub link: &'a dyn Fn(&str) -> bool,
    /// Give every copied entry this owner instead of the source's (a staging tree for a tool
    /// that runs as another user).
    pub owner: Option<(u32, u32)>,
    /// Hash every hard-linked file now (reusing these hashes of unchanged inodes): a linked
    /// inode stays writable through the live name, so its hash must describe it as linked
    /// (`prehash`). None: no hashing (a restore links files the snapshot already hashed).
    pub hash_links: Option<&'a super::prehash::PreHash>,
}

/// Copies the tree of the open directory `src` into the new directory `dst_name` of `dst_parent`
/// (created 0700, given the source's attributes when complete). Symlinks are recreated as
/// symlinks, never followed (those pointing out of the tree are named in `warnings`); sockets,
/// FIFOs and devices are skipped with a warning. Returns the entries and the new directory.
pub(crate) fn copy_tree(
    src: &Dir,
    dst_parent: &Dir,
    dst_name: &OsStr,
    how: &TreeCopy,
    warnings: &mut Vec<String>,
) -> Result<(Vec<FileEntry>, Dir), SnapshotError> {
    let root_meta = src.meta()?;
    let dst = dst_parent.create_dir(dst_name, 0o700)?;
    let mut entries = vec![entry(".", FileKind::Dir, &root_meta, None, None)];
    copy_dir(src, &dst, "", &root_meta, how, warnings, &mut entries)?;
    Ok((entries, dst))
}

fn copy_dir(
    src: &Dir,
    dst: &Dir,
    rel_dir: &str,
    src_meta: &Meta,
    how: &TreeCopy,
    warnings: &mut Vec<String>,
    entries: &mut Vec<FileEntry>,
) -> Result<(), SnapshotError> {
    let same_fs = dst.meta()?.id.dev == src_meta.id.dev;
    for name in src.entries()? {
        let Some(name_str) = name.to_str().map(str::to_string) else {
            return Err(io_err(
                "snapshot",
                &src.path().join(&name),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "file name is not UTF-8; rename it",
                ),
            ));
        };
        let rel = if rel_dir.is_empty() {
            name_str.clone()
        } else {
            format!("{rel_dir}/{name_str}")
        };
        let Some(m) = src.stat(&name)? else {
            continue; // gone meanwhile
        };
        match m.kind {
            Kind::Dir => {
                let sub = src.open_dir(&name)?;
                let sm = sub.meta()?;
                let dsub = dst.create_dir(&name, 0o700)?;
                entries.push(entry(&rel, FileKind::Dir, &sm, None, None));
                copy_dir(&sub, &dsub, &rel, &sm, how, warnings, entries)?;
            }
            Kind::Symlink => {
                let target = src.read_link(&name)?;
                if !link_stays_inside(Path::new(&rel), &target) {
                    warnings.push(format!(
                        "{} is a symlink to {}, outside the data directory: recorded as a \
                         symlink, its target is NOT in the snapshot",
                        src.path().join(&name).display(),
                        target.display()
                    ));
                }
                dst.symlink(&target, &name)?;
                let (uid, gid) = how.owner.unwrap_or((m.uid, m.gid));
                dst.chown_entry(&name, uid, gid)?;
                entries.push(entry(&rel, FileKind::Symlink, &m, Some(target), None));
            }
            Kind::File => {
                let (f, fm) = src.open_file(&name)?;
                let linked = same_fs && how.owner.is_none() && (how.link)(&rel) && {
                    match src.hard_link(&name, dst, &name) {
                        // The name may have been swapped between our open and the link: the link
                        // must be of the inode we opened, or it is dropped and copied instead.
                        Ok(()) => match dst.stat(&name)? {
                            Some(lm) if lm.kind == Kind::File && lm.id == fm.id => true,
                            _ => {
                                dst.remove_file(&name)?;
                                false
                            }
                        },
                        Err(e)
                            if matches!(
                                e.source.raw_os_error(),
                                Some(libc::EXDEV) | Some(libc::EMLINK) | Some(libc::EPERM)
                            ) =>
                        {
                            false
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                let h = if linked {
                    How::HardLink
                } else {
                    copy_file_into(&f, &fm, dst, &name, how.owner)?
                };
                let mut e = entry(&rel, FileKind::File, &fm, None, Some(h));
                if let (true, Some(known)) = (linked, how.hash_links) {
                    e.sha256 = Some(match known.lookup(&fm) {
                        Some(sha) => sha.to_string(),
                        None => fsutil::sha256_of(&f, &src.path().join(&name))?,
                    });
                }
                entries.push(e);
            }
            Kind::Special => warnings.push(format!(
                "{} is not a regular file, directory or symlink (socket/fifo/device): skipped",
                src.path().join(&name).display()
            )),
        }
    }
    // A directory gets its final owner, mode and times once its content is in place.
    let (uid, gid) = how.owner.unwrap_or((src_meta.uid, src_meta.gid));
    dst.set_owner(uid, gid)?;
    dst.set_mode(src_meta.mode)?;
    dst.set_times(src_meta)?;
    Ok(())
}

pub(crate) fn entry(
    rel: &str,
    kind: FileKind,
    meta: &Meta,
    link_target: Option<PathBuf>,
    how: Option<How>,
) -> FileEntry {
    FileEntry {
        path: rel.to_string(),
        kind,
        size: if kind == FileKind::File { meta.size } else { 0 },
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime: meta.mtime.0,
        link_target,
        how,
        sha256: None,
    }
}

/// Walks the tree of `dir` for its entries only (metadata, nothing copied): the manifest of a
/// tree that was moved into the snapshot root whole.
pub(crate) fn list_tree(dir: &Dir) -> Result<Vec<FileEntry>, SnapshotError> {
    fn walk(d: &Dir, rel_dir: &str, out: &mut Vec<FileEntry>) -> Result<(), SnapshotError> {
        for name in d.entries()? {
            let n = name.to_string_lossy().to_string();
            let rel = if rel_dir.is_empty() {
                n
            } else {
                format!("{rel_dir}/{n}")
            };
            let Some(m) = d.stat(&name)? else { continue };
            match m.kind {
                Kind::Dir => {
                    out.push(entry(&rel, FileKind::Dir, &m, None, None));
                    walk(&d.open_dir(&name)?, &rel, out)?;
                }
                Kind::File => out.push(entry(&rel, FileKind::File, &m, None, None)),
                Kind::Symlink => {
                    let t = d.read_link(&name)?;
                    out.push(entry(&rel, FileKind::Symlink, &m, Some(t), None));
                }
                Kind::Special => {}
            }
        }
        Ok(())
    }
    let mut out = vec![entry(".", FileKind::Dir, &dir.meta()?, None, None)];
    walk(dir, "", &mut out)?;
    Ok(out)
}

/// Puts `fresh` (an entry of `parent`) at `live` (another entry of `parent`), keeping the old
/// `live` at `displaced`. With RENAME_EXCHANGE there is no instant without a complete `live`;
/// without it, `live` is renamed away first (a crash in between leaves `live` missing and both
/// trees intact, which `recover` -> restore again repairs).
pub(crate) fn swap_in(
    parent: &Dir,
    fresh: &OsStr,
    live: &OsStr,
    displaced: &OsStr,
) -> Result<(), SnapshotError> {
    if parent.stat(live)?.is_some() {
        if parent.exchange(fresh, parent, live)? {
            // `fresh` now names the old tree.
            parent.rename_noreplace(fresh, parent, displaced)?;
        } else {
            parent.rename_noreplace(live, parent, displaced)?;
            parent.rename_noreplace(fresh, parent, live)?;
        }
    } else {
        parent.rename_noreplace(fresh, parent, live)?;
    }
    parent.fsync()?;
    Ok(())
}

/// For a `live` directory that is a mount point: moves its entries (except `fresh` and
/// `displaced`, both inside it) into `displaced`, then the entries of `fresh` into `live`, then
/// gives `live` the attributes of `fresh`. Not atomic as a whole; each step is a rename on one
/// file system, and an interrupted run is repaired by restoring again.
pub(crate) fn swap_contents(
    live: &Dir,
    fresh: &OsStr,
    displaced: &OsStr,
) -> Result<(), SnapshotError> {
    let fresh_dir = live.open_dir(fresh)?;
    // Read before the renames below change the directory's times.
    let meta = fresh_dir.meta()?;
    let away = live.create_dir(displaced, 0o700)?;
    for n in live.entries()? {
        if n == fresh || n == displaced {
            continue;
        }
        live.rename_noreplace(&n, &away, &n)?;
    }
    for n in fresh_dir.entries()? {
        fresh_dir.rename_noreplace(&n, live, &n)?;
    }
    live.set_owner(meta.uid, meta.gid)?;
    live.set_mode(meta.mode)?;
    live.set_times(&meta)?;
    // Power loss must not lose the entries renamed into `displaced` and `live` (the old and the
    // restored data) once `fresh`, where the restored ones came from, is gone.
    away.fsync()?;
    live.fsync()?;
    live.remove_tree(fresh)?;
    live.fsync()?;
    Ok(())
}

/// Creates `root` (0700, ours) if missing and refuses one that others could write to or that
/// belongs to another user: a snapshot there could be swapped for data an attacker chose.
pub(crate) fn ensure_private_dir(root: &Path) -> Result<(), SnapshotError> {
    if std::fs::symlink_metadata(root).is_err() {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| io_err("create directory", root, e))?;
        // DirBuilder applies the umask: set the mode explicitly.
        fs_err::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("chmod", root, e))?;
    }
    check_private_dir(root)
}

/// Opens the private directory `root` (see [`ensure_private_dir`]).
pub(crate) fn open_private_dir(root: &Path) -> Result<Dir, SnapshotError> {
    ensure_private_dir(root)?;
    let d = Dir::open(root)?;
    check_private(&d)?;
    Ok(d)
}

pub(crate) fn check_private_dir(dir: &Path) -> Result<(), SnapshotError> {
    check_private(&Dir::open(dir)?)
}

fn check_private(d: &Dir) -> Result<(), SnapshotError> {
    let m = d.meta()?;
    let euid = rustix::process::geteuid().as_raw();
    if m.kind != Kind::Dir || m.mode & 0o022 != 0 || m.uid != euid {
        return Err(SnapshotError::InsecureDir {
            path: d.path().to_owned(),
            mode: m.mode,
            uid: m.uid,
            euid,
        });
    }
    Ok(())
}

/// Bytes available on the file system of `path` (f_bavail: without the root reserve, the
/// conservative figure); the nearest existing ancestor when `path` does not exist yet.
pub(crate) fn bytes_free(path: &Path) -> Result<u64, SnapshotError> {
    let mut p = path.to_owned();
    while std::fs::symlink_metadata(&p).is_err() {
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
    use std::os::unix::fs::MetadataExt;
    let mut p = path.to_owned();
    loop {
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            return Some(m.dev());
        }
        p = p.parent()?.to_owned();
    }
}

/// Removes a tree we created in a root-only place; a missing tree is fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    match Dir::open_parent(path) {
        Ok((parent, name)) => Ok(parent.remove_tree(name)?),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fsutil::trace;

    #[test]
    fn a_swap_inside_a_mount_point_is_durable_before_the_staging_directory_goes() {
        let t = tempfile::tempdir().unwrap();
        let live_path = t.path().join("data");
        std::fs::create_dir(&live_path).unwrap();
        std::fs::write(live_path.join("old"), b"old data").unwrap();
        std::fs::create_dir(live_path.join(".fresh")).unwrap();
        std::fs::write(live_path.join(".fresh/new"), b"restored").unwrap();
        let live = Dir::open(&live_path).unwrap();
        trace::start();
        swap_contents(&live, OsStr::new(".fresh"), OsStr::new(".away")).unwrap();
        let log = trace::take();
        assert_eq!(std::fs::read(live_path.join("new")).unwrap(), b"restored");
        assert_eq!(
            std::fs::read(live_path.join(".away/old")).unwrap(),
            b"old data"
        );
        let gone = trace::position(
            &log,
            &format!("remove {}", live_path.join(".fresh").display()),
        );
        let away = trace::position(
            &log,
            &format!("fsync {}", live_path.join(".away").display()),
        );
        let live_synced = trace::position(&log, &format!("fsync {}", live_path.display()));
        assert!(away < gone && live_synced < gone, "{log:#?}");
    }
}
