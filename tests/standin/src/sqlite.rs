//! SQLite store (upstream `type = "sqlite"` / `"@type": "Sqlite"`): a real SQLite database in
//! WAL mode with a `records` table and the schema number in `meta`.
//!
//! While a process uses the database it holds an exclusive `flock` on the database file (the
//! stand-in's equivalent of RocksDB's LOCK; on Linux flock does not interfere with SQLite's
//! own POSIX locks).

use crate::records::Records;
use rusqlite::{params, Connection, OptionalExtension};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

pub struct Sqlite {
    // Field order matters: the connection is dropped before the lock's descriptor is closed.
    conn: Connection,
    _lock: File,
    path: PathBuf,
    schema: u32,
}

impl Sqlite {
    pub fn open(path: &Path, create: Option<(u32, Records)>) -> Result<(Self, bool), String> {
        let err = |e: rusqlite::Error| format!("SQLite error on {}: {e}", path.display());
        if !path.exists() && create.is_none() {
            return Err(format!("No database at {}", path.display()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("IO error: {}: {e}", parent.display()))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        let lock = File::open(path).map_err(|e| format!("IO error: {}: {e}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "Database {} is locked: {} (is another Stalwart process using it?)",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(err)?;
        let schema: Option<u32> = conn
            .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        let mut db = Sqlite {
            conn,
            _lock: lock,
            path: path.to_path_buf(),
            schema: schema.unwrap_or(0),
        };
        match (schema, create) {
            (Some(_), _) => Ok((db, false)),
            (None, Some((schema, records))) => {
                db.rewrite_all(records, schema)?;
                Ok((db, true))
            }
            (None, None) => Err(format!("Database {} has no schema version", path.display())),
        }
    }

    fn err(&self, e: rusqlite::Error) -> String {
        format!("SQLite error on {}: {e}", self.path.display())
    }

    pub fn schema(&self) -> u32 {
        self.schema
    }

    pub fn records(&self) -> Result<Records, String> {
        let mut st = self
            .conn
            .prepare("SELECT k, v FROM records")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Records, _>>()
            .map_err(|e| self.err(e))
    }

    pub fn put_batch(&mut self, batch: &[(String, String)]) -> Result<(), String> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| format!("SQLite error on {}: {e}", path.display());
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut st = tx
                .prepare("INSERT OR REPLACE INTO records (k, v) VALUES (?1, ?2)")
                .map_err(err)?;
            for (k, v) in batch {
                st.execute(params![k, v]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub fn rewrite_all(&mut self, records: Records, schema: u32) -> Result<(), String> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| format!("SQLite error on {}: {e}", path.display());
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM records", []).map_err(err)?;
        {
            let mut st = tx
                .prepare("INSERT INTO records (k, v) VALUES (?1, ?2)")
                .map_err(err)?;
            for (k, v) in &records {
                st.execute(params![k, v]).map_err(err)?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('schema', ?1)",
            params![schema],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.schema = schema;
        Ok(())
    }

    /// Clean shutdown: checkpoint the WAL into the main file.
    pub fn flush(&mut self) -> Result<(), String> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }
}
