//! SHA-256 of snapshot files, in parallel on all cores.
//!
//! sha2 0.10 picks the SHA-NI instructions at run time (cpufeatures) on x86_64 without any
//! feature flag, and the ARMv8 SHA2 extensions on aarch64: no `asm` feature needed.

use fs_err::os::unix::fs::OpenOptionsExt;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub(crate) fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = fs_err::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // Sequential read-ahead: after the restart the files are usually not in the page cache.
    // SAFETY: valid descriptor; advice only.
    unsafe {
        libc::posix_fadvise(
            std::os::unix::io::AsRawFd::as_raw_fd(f.file()),
            0,
            0,
            libc::POSIX_FADV_SEQUENTIAL,
        );
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        h.update(&buf[..n]);
        crate::os::progress::advance(n as u64);
    }
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok((hex, total))
}

/// Hashes every path; result i belongs to paths[i]. Biggest files first so the threads finish
/// together.
pub(crate) fn hash_files(paths: &[(PathBuf, u64)]) -> Vec<std::io::Result<(String, u64)>> {
    let _progress = crate::os::progress::bytes("hashing", paths.iter().map(|p| p.1).sum());
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(paths[i].1));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(paths.len().max(1));
    let next = AtomicUsize::new(0);
    type Slot = Option<std::io::Result<(String, u64)>>;
    let results: Mutex<Vec<Slot>> = Mutex::new((0..paths.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(k) else { break };
                let r = hash_file(&paths[i].0);
                if let Ok(mut res) = results.lock() {
                    res[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("hashing thread failed"))))
        .collect()
}
