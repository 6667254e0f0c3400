//! The data store, whichever kind the configuration names.

use crate::config::StoreSpec;
use crate::records::Records;
use crate::rocks::Rocks;
use crate::sqlite::Sqlite;

pub enum Store {
    Rocks(Rocks),
    Sqlite(Sqlite),
}

impl Store {
    /// Opens (and locks) the store; see [`Rocks::open`] for `create`.
    pub fn open(spec: &StoreSpec, create: Option<(u32, Records)>) -> Result<(Self, bool), String> {
        Ok(match spec {
            StoreSpec::Rocks(dir) => {
                let (s, c) = Rocks::open(dir, create)?;
                (Store::Rocks(s), c)
            }
            StoreSpec::Sqlite(path) => {
                let (s, c) = Sqlite::open(path, create)?;
                (Store::Sqlite(s), c)
            }
        })
    }

    pub fn schema(&self) -> u32 {
        match self {
            Store::Rocks(s) => s.schema(),
            Store::Sqlite(s) => s.schema(),
        }
    }

    pub fn records(&self) -> Result<Records, String> {
        match self {
            Store::Rocks(s) => Ok(s.records()),
            Store::Sqlite(s) => s.records(),
        }
    }

    /// Writes a batch durably (one fsync'd log append / one SQLite transaction).
    pub fn put_batch(&mut self, batch: &[(String, String)]) -> Result<(), String> {
        match self {
            Store::Rocks(s) => s.put_batch(batch),
            Store::Sqlite(s) => s.put_batch(batch),
        }
    }

    pub fn rewrite_all(&mut self, records: Records, schema: u32) -> Result<(), String> {
        match self {
            Store::Rocks(s) => s.rewrite_all(records, schema),
            Store::Sqlite(s) => s.rewrite_all(records, schema),
        }
    }

    pub fn flush(&mut self) -> Result<(), String> {
        match self {
            Store::Rocks(s) => s.flush(),
            Store::Sqlite(s) => s.flush(),
        }
    }
}
