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
//! The copies live in a root-only directory of the snapshot root (`.precopy-<pid>`), so the
//! final rename into the snapshot never crosses a file system. Leftovers of a run that is gone
//! are removed with the partial snapshots.

use crate::fsutil::{self, Dir, Meta};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Size of a compared block. Large enough that the per-block work is negligible, small enough
/// that a handful of changed SQLite pages rewrites little.
pub(super) const BLOCK: usize = 1 << 20;

/// Prefix of the directories holding precopies (one per helper process).
pub(super) const PRECOPY_PREFIX: &str = ".precopy-";

/// A copy of one file made while the server ran.
#[derive(Debug)]
pub(super) struct PreCopy {
    /// The live file's device and inode when it was copied.
    pub source: (u64, u64),
    /// Where the copy is, its name there, and the copy itself (kept open for the catch-up).
    pub dir: Dir,
    pub name: OsString,
    pub file: std::fs::File,
    /// Fingerprint of each block as written.
    pub blocks: Vec<u128>,
}

fn fingerprint(b: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(b)
}

/// Copies the open `src` (described by `m`) into `dir/name` (created 0600), block by block,
/// recording each block's fingerprint; fsync'd, so the downtime does not flush it.
pub(super) fn copy(
    src: &std::fs::File,
    m: &Meta,
    dir: Dir,
    name: &OsStr,
) -> Result<PreCopy, fsutil::FsError> {
    let path = dir.path().join(name);
    let dst = dir.create_file(name, 0o600)?;
    let _progress = crate::progress::bytes("pre-copy", m.size);
    let mut buf = vec![0u8; BLOCK];
    let mut blocks = Vec::with_capacity((m.size as usize).div_ceil(BLOCK));
    let mut off = 0u64;
    loop {
        let n =
            read_block(src, &mut buf, off).map_err(|e| fsutil::FsError::new("read", &path, e))?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off)
            .map_err(|e| fsutil::FsError::new("write", &path, e))?;
        blocks.push(fingerprint(&buf[..n]));
        off += n as u64;
        crate::progress::advance(n as u64);
    }
    dst.sync_all()
        .map_err(|e| fsutil::FsError::new("fsync", &path, e))?;
    Ok(PreCopy {
        source: (m.id.dev, m.id.ino),
        dir,
        name: name.to_owned(),
        file: dst,
        blocks,
    })
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
/// `dst/dst_name`.
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
    let results: Vec<Result<u64, fsutil::FsError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (path, rewritten) = (&path, &rewritten);
                s.spawn(move || {
                    catch_up_range(
                        pre,
                        src,
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
    let mut off = 0u64;
    for r in results {
        off += r?;
    }
    if off != len {
        // The file changed size under us: the server is not really stopped.
        return Err(fsutil::FsError::new(
            "read",
            &path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("read {off} bytes of a {len}-byte file (is the server really stopped?)"),
            ),
        ));
    }
    let done = CaughtUp {
        blocks: total,
        rewritten: rewritten.into_inner(),
    };
    rustix::fs::ftruncate(copy, off)
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

/// Compares and rewrites blocks `range` of `src` into `copy`; the bytes read.
fn catch_up_range(
    pre: &PreCopy,
    src: &std::fs::File,
    copy: &std::fs::File,
    path: &Path,
    range: std::ops::Range<usize>,
    rewritten: &std::sync::atomic::AtomicUsize,
) -> Result<u64, fsutil::FsError> {
    let mut buf = vec![0u8; BLOCK];
    let mut read = 0u64;
    for i in range {
        let off = (i * BLOCK) as u64;
        let n =
            read_block(src, &mut buf, off).map_err(|e| fsutil::FsError::new("read", path, e))?;
        if pre.blocks.get(i) != Some(&fingerprint(&buf[..n])) {
            copy.write_all_at(&buf[..n], off)
                .map_err(|e| fsutil::FsError::new("write", path, e))?;
            rewritten.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        read += n as u64;
        if n < BLOCK {
            break;
        }
    }
    Ok(read)
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
        let pre = copy(&f, &m, Dir::open(&store).unwrap(), OsStr::new("db")).unwrap();
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
        let pre = copy(&f, &m, Dir::open(&store).unwrap(), OsStr::new("db2")).unwrap();
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
