//! Snapshots of the server's data, per store. OWNER: snapshot helper.
//! Interface used by the engine — keep these signatures (add to them freely).

use crate::serverconfig::ServerConfig;
use crate::version::{Class, Version};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Other(String),
}

/// What the caller knows about the snapshot it asks for (recorded in the manifest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub server_version: Version,
    pub target_version: Option<Version>,
    pub class: Option<Class>,
    /// The server binary, for the `--export` fallback.
    pub server_binary: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
}

pub struct Snapshots {
    pub root: PathBuf,
}

impl Snapshots {
    pub fn new(root: &Path) -> Snapshots {
        Snapshots { root: root.to_owned() }
    }
    /// Server stopped. Fast: no hashing (see `hash`).
    pub fn create(&self, _cfg: &ServerConfig, _meta: &SnapshotMeta) -> Result<Manifest, SnapshotError> {
        Err(SnapshotError::Other("not implemented yet".into()))
    }
    /// Server may be running: fills in sha256 of every file.
    pub fn hash(&self, _id: &str) -> Result<Manifest, SnapshotError> {
        Err(SnapshotError::Other("not implemented yet".into()))
    }
    /// Server stopped. Restores into a fresh dir next to each store's data, then renames it in.
    pub fn restore(&self, _id: &str, _cfg: &ServerConfig) -> Result<(), SnapshotError> {
        Err(SnapshotError::Other("not implemented yet".into()))
    }
    pub fn remove(&self, _id: &str) -> Result<(), SnapshotError> {
        Err(SnapshotError::Other("not implemented yet".into()))
    }
}
