//! Copies of SQLite databases made before the server is stopped, brought up to date after.
//!
//! SQLite writes its database file in place, so a snapshot must copy it, and a copy inside the
//! downtime grows with the data (measured on 2 cores: about 2.3 s a GiB with the fsync). Here
//! the bulk is copied while the server still runs, recording a fingerprint (xxh3-128) of every
//! block as written; after the stop, `catch_up` reads the live file once, rewrites only the
//! blocks whose fingerprint differs (pages written since, the checkpoint at shutdown) and fixes
//! the length. The snapshot is then exactly the file at the moment of the stop, and what the
//! downtime pays is one read of the file, not a copy and a flush of it. A precopy is used only
//! for the same inode (device, inode); anything else is copied whole at snapshot time.
//!
//! The database belongs to the service user, the copy goes to root's state dir: its length is
//! not trusted. Holes are not read and stay holes in the copy (as do blocks of zeros; the
//! fingerprint of a hole is that of zeros), and the copy refuses a file longer than the space
//! the plan checked for it (its allocated size plus the plan's margin), or one that grows past
//! that while copied; a refused copy is removed at once, and the database is copied at the stop
//! (sparse-aware too, see `fsutil::copy_content`).
//!
//! The copies live in a root-only directory of the snapshot root (`.precopy-<pid>`), so the
//! final rename into the snapshot never crosses a file system. Leftovers of a run that is gone
//! are removed with the partial snapshots.

use crate::os::fsutil::{self, Dir, Meta};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Size of a compared block. Large enough that the per-block work is negligible, small enough
/// that a handful of changed SQLite pages rewrites little.
pub(super) const BLOCK: usize = 1 << 20;

/// Prefix of the directories holding precopies (one per helper process).
pub(super) const PRECOPY_PREFIX: &str = ".precopy-";

/// Why a copy before the stop was refused. The database's length is the service user's to set
/// (`truncate -s 1T` makes a file that costs nothing on its disk), and it grows while the server
/// runs; the copy goes to root's state dir, whose free space the plan checked for the size it
/// counted. So the copy never goes past that size plus a margin.
#[derive(Debug, thiserror::Error)]
pub(super) enum PreCopyError {
    #[error(transparent)]
    Fs(#[from] fsutil::FsError),
    #[error(
        "the SQLite database {path} is {size} bytes long, more than the {limit} bytes the space \
         check allowed for its copy (its allocated size plus a margin; a sparse file?): it is \
         not copied before the stop, the snapshot copies its data at the stop"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error(
        "the SQLite database {path} grew past {limit} bytes (the size the space check counted \
         plus a margin) while it was copied before the stop: that copy was stopped and removed, \
         the snapshot copies the database at the stop"
    )]
    Grew { path: PathBuf, limit: u64 },
}

/// A copy of one file made while the server ran.
#[derive(Debug)]
pub(super) struct PreCopy {
    /// The live file's device and inode when it was copied.
    pub source: (u64, u64),
    /// Where the copy is, its name there, and the copy itself (kept open for the catch-up).
    pub dir: Dir,
    pub name: OsString,
    pub file: std::fs::File,
    /// Fingerprint of each block of the copy, as written (of zeros where it has a hole).
    pub blocks: Vec<u128>,
}

fn fingerprint(b: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(b)
}

/// The fingerprint of `n` zero bytes (a hole, or a block never written): a hole of the source
/// is not read, so the fingerprint of a full one is computed once.
fn zeros_fingerprint(n: usize) -> u128 {
    static FULL: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    if n == BLOCK {
        *FULL.get_or_init(|| fingerprint(&vec![0u8; BLOCK]))
    } else {
        fingerprint(&vec![0u8; n])
    }
}

/// The offset of the first data at or after `off` (`SEEK_DATA`); None when only a hole (or
/// the end) follows. A file system without `SEEK_DATA` says "data here".
fn next_data(f: &std::fs::File, off: u64) -> std::io::Result<Option<u64>> {
    match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(off)) {
        Ok(d) => Ok(Some(d)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(rustix::io::Errno::INVAL) => Ok(Some(off)),
        Err(e) => Err(e.into()),
    }
}

/// Copies the open `src` (`src_path`, described by `m`) into `dir/name` (created 0600), block by
/// block, recording each block's fingerprint; fsync'd, so the downtime does not flush it. Holes
/// are not read and stay holes in the copy, and so do blocks of zeros. Refused when the file is,
/// or grows while copied, longer than `limit` (the space the plan checked for it); then nothing
/// is left behind.
pub(super) fn copy(
    src: &std::fs::File,
    src_path: &Path,
    m: &Meta,
    dir: Dir,
    name: &OsStr,
    limit: u64,
) -> Result<PreCopy, PreCopyError> {
    if m.size > limit {
        return Err(PreCopyError::TooLarge {
            path: src_path.to_owned(),
            size: m.size,
            limit,
        });
    }
    let dst = dir.create_file(name, 0o600)?;
    match copy_blocks(src, src_path, m.size, &dst, &dir.path().join(name), limit) {
        Ok(blocks) => Ok(PreCopy {
            source: (m.id.dev, m.id.ino),
            dir,
            name: name.to_owned(),
            file: dst,
            blocks,
        }),
        Err(e) => {
            // A refused or failed copy is of no use to the snapshot: it goes now, not with the
            // leftovers of the next run (it may be most of the free space).
            drop(dst);
            if let Err(r) = dir.remove_file(name).and_then(|()| dir.fsync()) {
                tracing::warn!("the partial copy could not be removed: {r}");
            }
            Err(e)
        }
    }
}

/// The loop of `copy`: the fingerprints of the blocks written to `dst` (`path`).
fn copy_blocks(
    src: &std::fs::File,
    src_path: &Path,
    size: u64,
    dst: &std::fs::File,
    path: &Path,
    limit: u64,
) -> Result<Vec<u128>, PreCopyError> {
    let _progress = crate::os::progress::bytes("pre-copy", size);
    let grew = || PreCopyError::Grew {
        path: src_path.to_owned(),
        limit,
    };
    let read_err = |e| fsutil::FsError::new("read", src_path, e);
    let mut buf = vec![0u8; BLOCK];
    let mut blocks = Vec::with_capacity((size as usize).div_ceil(BLOCK));
    let mut off = 0u64;
    // The first data at or after `off` as last seen (the file is live: a block taken for a
    // hole that got data meanwhile is zeros in the copy, its fingerprint says so, and the
    // catch-up rewrites it).
    let mut data: Option<u64> = None;
    loop {
        if !matches!(data, Some(d) if d >= off) {
            data = next_data(src, off).map_err(read_err)?;
        }
        let Some(d) = data else {
            // Only a hole to the end (or the end itself): as zeros up to the length now.
            let end = fsutil::meta_of(src, src_path)?.size;
            if end > limit {
                return Err(grew());
            }
            while off < end {
                let n = (end - off).min(BLOCK as u64);
                blocks.push(zeros_fingerprint(n as usize));
                off += n;
                crate::os::progress::advance(n);
            }
            break;
        };
        if d >= off + BLOCK as u64 {
            // A whole block of hole: not read, not written.
            blocks.push(zeros_fingerprint(BLOCK));
            off += BLOCK as u64;
            crate::os::progress::advance(BLOCK as u64);
            if off > limit {
                return Err(grew());
            }
            continue;
        }
        let n = read_block(src, &mut buf, off).map_err(read_err)?;
        if n == 0 {
            break;
        }
        if off + n as u64 > limit {
            return Err(grew());
        }
        write_data(dst, &buf[..n], off).map_err(|e| fsutil::FsError::new("write", path, e))?;
        blocks.push(fingerprint(&buf[..n]));
        off += n as u64;
        crate::os::progress::advance(n as u64);
        if n < BLOCK {
            break;
        }
    }
    // Its length, also where it ends in a hole or zeros that were not written.
    rustix::fs::ftruncate(dst, off)
        .map_err(|e| fsutil::FsError::new("truncate", path, std::io::Error::from(e)))?;
    dst.sync_all()
        .map_err(|e| fsutil::FsError::new("fsync", path, e))?;
    Ok(blocks)
}

/// Writes the pages of `b` that are not all zeros at `off` of the new file `dst`: what is not
/// written reads as zeros, and costs nothing (a block holding a few bytes of a sparse file
/// takes a page of the copy, not the block).
fn write_data(dst: &std::fs::File, b: &[u8], off: u64) -> std::io::Result<()> {
    const PAGE: usize = 4096;
    let mut run: Option<usize> = None;
    for start in (0..b.len()).step_by(PAGE) {
        let page = &b[start..(start + PAGE).min(b.len())];
        match (page.iter().any(|&x| x != 0), run) {
            (true, None) => run = Some(start),
            (false, Some(r)) => {
                dst.write_all_at(&b[r..start], off + r as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(r) = run {
        dst.write_all_at(&b[r..], off + r as u64)?;
    }
    Ok(())
}

/// Do `src` and `dir` share extents (FICLONE works: btrfs, XFS with reflink, bcachefs)? Then
/// no copy is made before the stop: the snapshot's reflink at the stop is already exact and
/// costs metadata, not data, whatever the size. Probed with a clone that is removed again.
pub(super) fn reflinks(src: &std::fs::File, dir: &Dir) -> bool {
    let probe = OsStr::new(".reflink-probe");
    let _ = dir.remove_file(probe);
    let Ok(f) = dir.create_file(probe, 0o600) else {
        return false;
    };
    let ok = rustix::fs::ioctl_ficlone(&f, src).is_ok();
    drop(f);
    let _ = dir.remove_file(probe);
    ok
}

/// Reads up to one block at `off` (short only at the end of the file).
fn read_block(f: &std::fs::File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What `catch_up` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CaughtUp {
    pub blocks: usize,
    pub rewritten: usize,
}

/// Server stopped: makes the precopy equal to `src` (its `m` now), rewriting only the blocks
/// whose fingerprint differs, then gives it `m`'s owner, mode and times and moves it into
/// `dst/dst_name`. Holes of `src` are not read; a block that is a hole or zeros now and was
/// not before becomes a hole in the copy, so a file made sparse (or longer by a hole) since the
/// precopy costs the copy nothing.
pub(super) fn catch_up(
    pre: &PreCopy,
    src: &std::fs::File,
    m: &Meta,
    dst: &Dir,
    dst_name: &OsStr,
) -> Result<CaughtUp, fsutil::FsError> {
    let path = pre.dir.path().join(&pre.name);
    let copy = &pre.file;
    let _ = rustix::fs::fadvise(src, 0, None, rustix::fs::Advice::Sequential);
    // This runs inside the downtime and reads the whole file: one contiguous range of blocks
    // per core (reading from the page cache is what costs, not the fingerprints).
    let len = m.size;
    let total = len.div_ceil(BLOCK as u64) as usize;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, total.max(1));
    let per = total.div_ceil(threads);
    let rewritten = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(), fsutil::FsError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (path, rewritten) = (&path, &rewritten);
                s.spawn(move || {
                    catch_up_range(
                        pre,
                        src,
                        len,
                        copy,
                        path,
                        t * per..((t + 1) * per).min(total),
                        rewritten,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(fsutil::FsError::new(
                        "compare",
                        &path,
                        std::io::Error::other("catch-up thread failed"),
                    ))
                })
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let now = fsutil::meta_of(src, &path)?.size;
    if now != len {
        // The file changed size under us: the server is not really stopped.
        return Err(fsutil::FsError::new(
            "read",
            &path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file was {len} bytes long and is {now} now (is the server really \
                     stopped?)"
                ),
            ),
        ));
    }
    let done = CaughtUp {
        blocks: total,
        rewritten: rewritten.into_inner(),
    };
    rustix::fs::ftruncate(copy, len)
        .map_err(|e| fsutil::FsError::new("truncate", &path, std::io::Error::from(e)))?;
    copy.sync_all()
        .map_err(|e| fsutil::FsError::new("fsync", &path, e))?;
    // Owner first, then mode (chown clears set-id bits), then times: as a plain copy has them.
    fsutil::set_owner(copy, &path, m.uid, m.gid)?;
    fsutil::set_mode(copy, &path, m.mode)?;
    fsutil::set_times(copy, &path, m)?;
    pre.dir.rename(&pre.name, dst, dst_name)?;
    dst.fsync()?;
    Ok(done)
}

/// Compares and rewrites blocks `range` of `src` (`len` bytes long) into `copy`.
fn catch_up_range(
    pre: &PreCopy,
    src: &std::fs::File,
    len: u64,
    copy: &std::fs::File,
    path: &Path,
    range: std::ops::Range<usize>,
    rewritten: &std::sync::atomic::AtomicUsize,
) -> Result<(), fsutil::FsError> {
    let mut buf = vec![0u8; BLOCK];
    let mut data: Option<u64> = None;
    for i in range {
        let off = (i * BLOCK) as u64;
        let n = (len - off).min(BLOCK as u64) as usize;
        // What the copy holds there: the block as copied, zeros past the copy's end (the final
        // truncate extends it with a hole).
        let held = pre
            .blocks
            .get(i)
            .copied()
            .unwrap_or_else(|| zeros_fingerprint(n));
        if !matches!(data, Some(d) if d >= off) {
            data = next_data(src, off).map_err(|e| fsutil::FsError::new("read", path, e))?;
        }
        let hole = match data {
            None => true,
            Some(d) => d >= off + n as u64,
        };
        let zeros = if hole {
            true
        } else {
            let got = read_block(src, &mut buf[..n], off)
                .map_err(|e| fsutil::FsError::new("read", path, e))?;
            if got < n {
                return Err(fsutil::FsError::new(
                    "read",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file got shorter than {len} bytes while it was read (is the \
                             server really stopped?)"
                        ),
                    ),
                ));
            }
            if held == fingerprint(&buf[..n]) {
                continue;
            }
            buf[..n].iter().all(|&b| b == 0)
        };
        if zeros {
            if held != zeros_fingerprint(n) {
                punch(copy, off, n as u64)
                    .map_err(|e| fsutil::FsError::new("punch a hole in", path, e))?;
                rewritten.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        } else {
            copy.write_all_at(&buf[..n], off)
                .map_err(|e| fsutil::FsError::new("write", path, e))?;
            rewritten.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Makes `len` bytes at `off` of `f` zeros, as a hole where the file system can
/// (`FALLOC_FL_PUNCH_HOLE`; ext4, XFS, btrfs, tmpfs), else by writing zeros.
fn punch(f: &std::fs::File, off: u64, len: u64) -> std::io::Result<()> {
    use rustix::fs::FallocateFlags;
    match rustix::fs::fallocate(
        f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        off,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
            f.write_all_at(&vec![0u8; len as usize], off)
        }
        Err(e) => Err(e.into()),
    }
}

/// The directory for this process's precopies in the snapshot root (created 0700).
pub(super) fn dir_in(root: &Dir) -> Result<Dir, fsutil::FsError> {
    let name = format!("{PRECOPY_PREFIX}{}", std::process::id());
    match root.open_dir(&name) {
        Ok(d) => Ok(d),
        Err(_) => root.create_dir(&name, 0o700),
    }
}

/// Is this entry of the snapshot root a precopy dir of a process that is gone (or of ours)?
pub(super) fn is_leftover(name: &str) -> bool {
    let Some(pid) = name.strip_prefix(PRECOPY_PREFIX) else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(p) if p == std::process::id() => false,
        Ok(p) => !Path::new("/proc").join(p.to_string()).exists(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const NO_LIMIT: u64 = u64::MAX;

    /// (live dir, snapshot store dir, output dir) in a fresh temporary directory.
    fn dirs() -> (tempfile::TempDir, Dir, Dir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let mk = |n: &str| {
            std::fs::create_dir(t.path().join(n)).unwrap();
            Dir::open(&t.path().join(n)).unwrap()
        };
        let (l, s, o) = (mk("live"), mk("store"), mk("out"));
        (t, l, s, o)
    }

    /// A 64 MiB file holding a few KiB: 4 KiB at 5 MiB, 4 KiB at the last 4 KiB.
    fn sparse(path: &Path) -> Vec<(u64, Vec<u8>)> {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(64 << 20).unwrap();
        let parts = vec![
            (5 << 20, vec![0x5a; 4096]),
            ((64 << 20) - 4096, vec![0xa5; 4096]),
        ];
        for (off, b) in &parts {
            f.write_all_at(b, *off).unwrap();
        }
        f.sync_all().unwrap();
        parts
    }

    /// Allocated bytes (st_blocks) of a file.
    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_sparse_file_is_copied_sparse_and_equal() {
        let (t, live, store, out) = dirs();
        let db = t.path().join("live/db");
        sparse(&db);
        // The file system must keep the holes for the test to mean anything.
        assert!(allocated(&db) < 1 << 20, "{}", allocated(&db));
        let (f, m) = live.open_file("db").unwrap();
        // What the plan counts (allocated) plus its margin; the apparent size fits it.
        let limit = m.allocated + (64 << 20);
        let pre = copy(&f, &db, &m, store, OsStr::new("db"), limit).unwrap();
        assert_eq!(pre.blocks.len(), 64);
        let copy_path = t.path().join("store/db");
        assert!(
            allocated(&copy_path) <= 64 << 10,
            "the copy holds {} bytes",
            allocated(&copy_path)
        );
        assert_eq!(
            std::fs::read(&copy_path).unwrap(),
            std::fs::read(&db).unwrap()
        );
        // Nothing changed: the catch-up rewrites nothing and the result is still sparse.
        let done = catch_up(&pre, &f, &m, &out, OsStr::new("db")).unwrap();
        assert_eq!(
            done,
            CaughtUp {
                blocks: 64,
                rewritten: 0
            }
        );
        let snap = t.path().join("out/db");
        assert!(allocated(&snap) <= 64 << 10, "{}", allocated(&snap));
        assert_eq!(std::fs::read(&snap).unwrap(), std::fs::read(&db).unwrap());
    }

    #[test]
    fn the_catch_up_keeps_holes_made_or_added_after_the_precopy() {
        let (t, live, store, out) = dirs();
        let db = t.path().join("live/db");
        let data: Vec<u8> = (0..(4 * BLOCK)).map(|i| (i % 253) as u8 + 1).collect();
        std::fs::write(&db, &data).unwrap();
        let (f, m) = live.open_file("db").unwrap();
        let pre = copy(&f, &db, &m, store, OsStr::new("db"), NO_LIMIT).unwrap();
        // Before the stop: block 1 is punched out, block 2 zeroed by writes, and the file is
        // made 64 MiB long by a hole.
        let w = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        punch(&w, BLOCK as u64, BLOCK as u64).unwrap();
        w.write_all_at(&vec![0u8; BLOCK], 2 * BLOCK as u64).unwrap();
        w.set_len(64 << 20).unwrap();
        drop(w);
        let (f, m) = live.open_file("db").unwrap();
        let done = catch_up(&pre, &f, &m, &out, OsStr::new("db")).unwrap();
        assert_eq!(
            done,
            CaughtUp {
                blocks: 64,
                rewritten: 2
            }
        );
        let snap = t.path().join("out/db");
        assert_eq!(std::fs::metadata(&snap).unwrap().len(), 64 << 20);
        // Blocks 0 and 3 of data, nothing else.
        assert!(
            allocated(&snap) <= 2 * BLOCK as u64 + 65536,
            "{}",
            allocated(&snap)
        );
        let got = std::fs::read(&snap).unwrap();
        assert_eq!(&got[..BLOCK], &data[..BLOCK]);
        assert!(got[BLOCK..3 * BLOCK].iter().all(|&b| b == 0));
        assert_eq!(&got[3 * BLOCK..4 * BLOCK], &data[3 * BLOCK..]);
        assert!(got[4 * BLOCK..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_file_longer_than_the_space_checked_is_not_copied() {
        let (t, live, store, _out) = dirs();
        let db = t.path().join("live/db");
        sparse(&db);
        let (f, m) = live.open_file("db").unwrap();
        // The plan counted its few allocated KiB; its length is 64 MiB.
        let limit = m.allocated + (1 << 20);
        let e = copy(&f, &db, &m, store, OsStr::new("db"), limit).unwrap_err();
        assert!(
            matches!(&e, PreCopyError::TooLarge { path, size, limit: l }
                if path == &db && *size == 64 << 20 && *l == limit),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&db.display().to_string()) && msg.contains(&limit.to_string()),
            "{msg}"
        );
        assert!(std::fs::read_dir(t.path().join("store"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn a_file_that_grows_past_the_bound_while_copied_is_refused_and_removed() {
        for hole in [false, true] {
            let (t, live, store, _out) = dirs();
            let db = t.path().join("live/db");
            std::fs::write(&db, vec![1u8; 2 * BLOCK]).unwrap();
            // The size as the copy was told it (fstat before the server wrote more).
            let (f, m) = live.open_file("db").unwrap();
            let limit = 3 * BLOCK as u64;
            let w = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
            if hole {
                // Grown by a hole far past the bound, then data at its end.
                w.write_all_at(b"x", 1 << 30).unwrap();
            } else {
                w.write_all_at(&vec![2u8; 2 * BLOCK], 2 * BLOCK as u64)
                    .unwrap();
            }
            drop(w);
            let e = copy(&f, &db, &m, store, OsStr::new("db"), limit).unwrap_err();
            assert!(
                matches!(&e, PreCopyError::Grew { path, limit: l } if path == &db && *l == limit),
                "{e:?}"
            );
            assert!(e.to_string().contains(&limit.to_string()), "{e}");
            // No partial copy is left behind.
            let left: Vec<_> = std::fs::read_dir(t.path().join("store")).unwrap().collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn only_changed_blocks_are_rewritten_and_the_copy_equals_the_source_at_the_stop() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        let store = t.path().join("store");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&store).unwrap();
        let mut data: Vec<u8> = (0..(3 * BLOCK + 1234)).map(|i| (i % 251) as u8).collect();
        std::fs::write(live.join("db"), &data).unwrap();
        let ldir = Dir::open(&live).unwrap();
        let (f, m) = ldir.open_file("db").unwrap();
        let pre = copy(
            &f,
            &live.join("db"),
            &m,
            Dir::open(&store).unwrap(),
            OsStr::new("db"),
            NO_LIMIT,
        )
        .unwrap();
        assert_eq!(pre.blocks.len(), 4);
        // Written after the precopy: one page in block 1, and the file grows by a block.
        data[BLOCK + 4096] ^= 0xff;
        data.extend(std::iter::repeat(7u8).take(BLOCK));
        std::fs::write(live.join("db"), &data).unwrap();
        let (f, m) = ldir.open_file("db").unwrap();
        let out = t.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let odir = Dir::open(&out).unwrap();
        let done = catch_up(&pre, &f, &m, &odir, OsStr::new("db")).unwrap();
        // Block 1 changed, block 3 (the old short tail) and block 4 are new content.
        assert_eq!(
            done,
            CaughtUp {
                blocks: 5,
                rewritten: 3
            }
        );
        assert_eq!(std::fs::read(out.join("db")).unwrap(), data);
        // Shrinking is caught up too.
        let pre = copy(
            &f,
            &live.join("db"),
            &m,
            Dir::open(&store).unwrap(),
            OsStr::new("db2"),
            NO_LIMIT,
        )
        .unwrap();
        data.truncate(BLOCK / 2);
        std::fs::write(live.join("db"), &data).unwrap();
        let (f, m) = ldir.open_file("db").unwrap();
        catch_up(&pre, &f, &m, &odir, OsStr::new("db2")).unwrap();
        assert_eq!(std::fs::read(out.join("db2")).unwrap(), data);
    }

    #[test]
    fn leftovers_are_those_of_gone_processes() {
        assert!(!is_leftover(&format!(
            "{PRECOPY_PREFIX}{}",
            std::process::id()
        )));
        assert!(is_leftover(&format!("{PRECOPY_PREFIX}4000000000")));
        assert!(!is_leftover(".partial-x"));
    }
}
