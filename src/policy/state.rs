//! STATE_DIR/policy.json: approvals, the held line, whether holds are on (root, 0600, written
//! atomically with fsync).

use super::*;
use crate::config::Settings;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One approval of a release line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub line: String,
    /// Seconds since the epoch.
    pub approved_at: u64,
}

/// STATE_DIR/policy.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredPolicy {
    pub format: u32,
    /// False after `unhold` until the next `hold`.
    pub holds_enabled: bool,
    pub hold_line: Option<String>,
    pub approvals: Vec<Approval>,
}

impl Default for StoredPolicy {
    fn default() -> Self {
        StoredPolicy {
            format: 1,
            holds_enabled: true,
            hold_line: None,
            approvals: Vec::new(),
        }
    }
}

pub fn state_path(settings: &Settings) -> PathBuf {
    settings.state_dir.join(STATE_FILE)
}

/// Reads policy.json; a missing file is the default state.
pub fn load(settings: &Settings) -> Result<StoredPolicy, PolicyError> {
    let path = state_path(settings);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoredPolicy::default()),
        Err(e) => return Err(io("read", &path)(e)),
    };
    serde_json::from_str(&text).map_err(|e| PolicyError::StateCorrupt {
        path: path.clone(),
        message: e.to_string(),
    })
}

pub(crate) fn save(settings: &Settings, p: &StoredPolicy) -> Result<(), PolicyError> {
    let dir = &settings.state_dir;
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
    }
    let mut text = serde_json::to_string_pretty(p)
        .map_err(|e| PolicyError::Other(format!("cannot encode the policy state: {e}")))?;
    text.push('\n');
    write_atomic(&state_path(settings), text.as_bytes(), 0o600)
}

/// Writes `path` via a temporary file in the same directory: write, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), PolicyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A leading dot keeps apt from reading a half-written fragment (it ignores such names).
    let tmp = dir.join(format!(".{name}.stalwart-upgrade.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    // The mode given to open() is masked by the umask: set it explicitly.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), PolicyError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}
