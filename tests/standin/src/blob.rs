//! `fs` blob store (0.15 `[store.<id>] type = "fs"` used as `storage.blob`).
//!
//! Each blob is a WRITE-ONCE file named by the lowercase hex sha256 of its content, directly
//! under the store directory. A blob file is created by writing a temporary file, fsync and
//! rename, and is NEVER modified afterwards (an existing blob is simply reused). The helper's
//! snapshot code relies on this: a hard link or a copy of an existing blob never goes stale.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Stores `data`, returns its hex sha256.
pub fn put(dir: &Path, data: &[u8]) -> Result<String, String> {
    let hash = crate::records::hex(&Sha256::digest(data));
    let path = dir.join(&hash);
    if path.exists() {
        return Ok(hash);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("blob store {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{hash}-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("blob store {}: {e}", path.display())
    })?;
    Ok(hash)
}

/// Number of blobs in the store (0 if it does not exist).
pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}
