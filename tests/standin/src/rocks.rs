//! RocksDB-like store: a directory laid out like RocksDB's, with the file-level behaviour the
//! upgrade helper's snapshot code has to cope with.
//!
//! * `NNNNNN.sst`: immutable table files, written once (write + fsync) and NEVER modified
//!   afterwards; only deleted, when a migration or an import replaces them.
//!   Layout: `STNDSST1`, u32 LE record count, records (u32 LE len + key, u32 LE len + value),
//!   then the sha256 of everything before it (checked when opening: "Corruption: ...").
//! * `MANIFEST-NNNNNN`: JSON `{"schema":N,"next_file":N,"sst":["000004.sst",...]}` listing the
//!   live table files in order (later files override earlier ones) and the schema number
//!   (upstream keeps the schema in subspace `p`, key `[0]`; here it lives in the manifest).
//!   A new manifest is written for every change, the old one deleted afterwards.
//! * `CURRENT`: names the live manifest; replaced atomically (`NNNNNN.dbtmp` + rename).
//! * `OPTIONS-NNNNNN`, `IDENTITY`: written once when the database is created.
//! * `LOCK`: held with `flock` while a process uses the database; a second process fails.
//! * `NNNNNN.log`: write-ahead log, created at the first write, appended + fsync per write,
//!   replayed at start (a torn tail is ignored), folded into a new `.sst` at clean shutdown.
//!   Nothing is written when nothing changed: a start/stop without writes leaves every file
//!   byte-identical.

use crate::records::{put_bytes, take_record, Records};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const SST_MAGIC: &[u8; 8] = b"STNDSST1";

#[derive(Serialize, Deserialize)]
struct Manifest {
    schema: u32,
    next_file: u64,
    sst: Vec<String>,
}

pub struct Rocks {
    dir: PathBuf,
    _lock: File,
    schema: u32,
    manifest_no: u64,
    ssts: Vec<u64>,
    next_file: u64,
    base: Records,
    delta: Records,
    old_logs: Vec<u64>,
    log: Option<(u64, File)>,
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("IO error: {}: {e}", path.display())
}

fn sst_name(n: u64) -> String {
    format!("{n:06}.sst")
}

fn log_name(n: u64) -> String {
    format!("{n:06}.log")
}

/// File number of a RocksDB-style file name, and whether it is a table/log/manifest/...
fn file_number(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix("MANIFEST-")
        .or_else(|| name.strip_prefix("OPTIONS-"))
        .or_else(|| name.strip_suffix(".sst"))
        .or_else(|| name.strip_suffix(".log"))
        .or_else(|| name.strip_suffix(".dbtmp"))?;
    digits.parse().ok()
}

fn write_new_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn remove_if_exists(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

fn take_lock(dir: &Path) -> Result<File, String> {
    let path = dir.join("LOCK");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "IO error: While lock file: {}: {e} (is another Stalwart process using this database?)",
            path.display()
        ));
    }
    Ok(f)
}

fn encode_sst(records: &Records) -> Vec<u8> {
    let mut out = SST_MAGIC.to_vec();
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (k, v) in records {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn decode_sst(bytes: &[u8], path: &Path) -> Result<Records, String> {
    let corrupt = |why: &str| format!("Corruption: {why} in {}", path.display());
    if bytes.len() < 12 + 32 || &bytes[..8] != SST_MAGIC {
        return Err(corrupt("bad table magic"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err(corrupt("block checksum mismatch"));
    }
    let mut pos = 12;
    let mut out = Records::new();
    while pos < body.len() {
        match take_record(body, &mut pos) {
            Some(Ok((k, v))) => {
                out.insert(k, v);
            }
            _ => return Err(corrupt("truncated record")),
        }
    }
    Ok(out)
}

impl Rocks {
    /// Opens the database in `dir`, taking its LOCK. With `create = Some((schema, records))`
    /// a missing/empty directory becomes a new database holding `records`; returns whether
    /// the database was created.
    pub fn open(dir: &Path, create: Option<(u32, Records)>) -> Result<(Self, bool), String> {
        let current = dir.join("CURRENT");
        if !current.exists() {
            let Some((schema, records)) = create else {
                return Err(format!(
                    "IO error: No database in {} (CURRENT missing)",
                    dir.display()
                ));
            };
            if let Ok(rd) = fs::read_dir(dir) {
                for e in rd.filter_map(Result::ok) {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.ends_with(".sst") || n.starts_with("MANIFEST-") {
                        return Err(format!(
                            "Corruption: CURRENT file missing in {} but {n} exists",
                            dir.display()
                        ));
                    }
                }
            }
            fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            let lock = take_lock(dir)?;
            return Ok((Self::create(dir, lock, schema, records)?, true));
        }
        let lock = take_lock(dir)?;
        let name = fs::read_to_string(&current).map_err(|e| io(&current, e))?;
        let mpath = dir.join(name.trim());
        let manifest_no = file_number(name.trim())
            .filter(|_| name.trim().starts_with("MANIFEST-"))
            .ok_or_else(|| format!("Corruption: CURRENT names {:?}", name.trim()))?;
        let mtext = fs::read_to_string(&mpath).map_err(|e| io(&mpath, e))?;
        let manifest: Manifest = serde_json::from_str(&mtext)
            .map_err(|e| format!("Corruption: {}: {e}", mpath.display()))?;
        let mut base = Records::new();
        let mut ssts = Vec::new();
        for s in &manifest.sst {
            let p = dir.join(s);
            let n = file_number(s)
                .filter(|_| s.ends_with(".sst"))
                .ok_or_else(|| format!("Corruption: manifest lists {s:?}"))?;
            let bytes = fs::read(&p).map_err(|e| {
                format!(
                    "Corruption: table file {} listed in {}: {e}",
                    p.display(),
                    mpath.display()
                )
            })?;
            base.extend(decode_sst(&bytes, &p)?);
            ssts.push(n);
        }
        let mut next_file = manifest.next_file;
        let mut logs = Vec::new();
        for e in fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(Result::ok)
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(no) = file_number(&n) {
                next_file = next_file.max(no + 1);
                if n.ends_with(".log") {
                    logs.push(no);
                }
            }
        }
        logs.sort_unstable();
        let mut delta = Records::new();
        for no in &logs {
            let p = dir.join(log_name(*no));
            let bytes = fs::read(&p).map_err(|e| io(&p, e))?;
            let mut pos = 0;
            while let Some(r) = take_record(&bytes, &mut pos) {
                let (k, v) = r.map_err(|e| format!("Corruption: {}: {e}", p.display()))?;
                delta.insert(k, v);
            }
            if pos < bytes.len() {
                crate::warn!(
                    "Ignoring torn tail of {} ({} bytes)",
                    p.display(),
                    bytes.len() - pos
                );
            }
        }
        if !delta.is_empty() {
            crate::info!("Recovered {} records from the write-ahead log", delta.len());
        }
        Ok((
            Rocks {
                dir: dir.to_path_buf(),
                _lock: lock,
                schema: manifest.schema,
                manifest_no,
                ssts,
                next_file,
                base,
                delta,
                old_logs: logs,
                log: None,
            },
            false,
        ))
    }

    fn create(dir: &Path, lock: File, schema: u32, records: Records) -> Result<Self, String> {
        let mut db = Rocks {
            dir: dir.to_path_buf(),
            _lock: lock,
            schema,
            manifest_no: 0,
            ssts: Vec::new(),
            next_file: 1,
            base: Records::new(),
            delta: Records::new(),
            old_logs: Vec::new(),
            log: None,
        };
        let identity = format!(
            "{:08x}-{:016x}\n",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        );
        let _ = fs::remove_file(dir.join("IDENTITY"));
        write_new_synced(&dir.join("IDENTITY"), identity.as_bytes())?;
        let opt = db.alloc();
        write_new_synced(
            &dir.join(format!("OPTIONS-{opt:06}")),
            b"# stand-in RocksDB options\n[DBOptions]\n  create_if_missing=true\n[CFOptions \"default\"]\n  compression=kLZ4Compression\n",
        )?;
        db.rewrite_all(records, schema)?;
        Ok(db)
    }

    fn alloc(&mut self) -> u64 {
        let n = self.next_file;
        self.next_file += 1;
        n
    }

    fn write_sst(&mut self, records: &Records) -> Result<u64, String> {
        let n = self.alloc();
        write_new_synced(&self.dir.join(sst_name(n)), &encode_sst(records))?;
        Ok(n)
    }

    /// Writes a new MANIFEST, switches CURRENT to it atomically, deletes the old manifest.
    fn install_manifest(&mut self, schema: u32, ssts: Vec<u64>) -> Result<(), String> {
        let no = self.alloc();
        let m = Manifest {
            schema,
            next_file: self.next_file,
            sst: ssts.iter().map(|n| sst_name(*n)).collect(),
        };
        let mut text = serde_json::to_vec(&m).map_err(|e| e.to_string())?;
        text.push(b'\n');
        write_new_synced(&self.dir.join(format!("MANIFEST-{no:06}")), &text)?;
        let tmp = self.dir.join(format!("{no:06}.dbtmp"));
        remove_if_exists(&tmp)?;
        write_new_synced(&tmp, format!("MANIFEST-{no:06}\n").as_bytes())?;
        let current = self.dir.join("CURRENT");
        fs::rename(&tmp, &current).map_err(|e| io(&current, e))?;
        sync_dir(&self.dir)?;
        if self.manifest_no != 0 {
            remove_if_exists(&self.dir.join(format!("MANIFEST-{:06}", self.manifest_no)))?;
        }
        self.manifest_no = no;
        self.schema = schema;
        self.ssts = ssts;
        Ok(())
    }

    fn delete_logs(&mut self) -> Result<(), String> {
        let mut logs = std::mem::take(&mut self.old_logs);
        if let Some((n, _)) = self.log.take() {
            logs.push(n);
        }
        for n in logs {
            remove_if_exists(&self.dir.join(log_name(n)))?;
        }
        Ok(())
    }

    pub fn schema(&self) -> u32 {
        self.schema
    }

    pub fn records(&self) -> Records {
        let mut r = self.base.clone();
        r.extend(self.delta.iter().map(|(k, v)| (k.clone(), v.clone())));
        r
    }

    /// Appends a batch to the write-ahead log (one write + fsync) and to the memtable.
    pub fn put_batch(&mut self, batch: &[(String, String)]) -> Result<(), String> {
        if self.log.is_none() {
            let n = self.alloc();
            let p = self.dir.join(log_name(n));
            let f = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&p)
                .map_err(|e| io(&p, e))?;
            sync_dir(&self.dir)?;
            self.log = Some((n, f));
        }
        let mut entry = Vec::new();
        for (key, value) in batch {
            put_bytes(&mut entry, key.as_bytes());
            put_bytes(&mut entry, value.as_bytes());
        }
        if let Some((n, f)) = self.log.as_mut() {
            let p = self.dir.join(log_name(*n));
            f.write_all(&entry).map_err(|e| io(&p, e))?;
            f.sync_data().map_err(|e| io(&p, e))?;
        }
        self.delta.extend(batch.iter().cloned());
        Ok(())
    }

    /// Clean shutdown: folds the log into a new table file. No-op when nothing was written.
    pub fn flush(&mut self) -> Result<(), String> {
        if self.log.is_none() && self.old_logs.is_empty() && self.delta.is_empty() {
            return Ok(());
        }
        if !self.delta.is_empty() {
            let delta = std::mem::take(&mut self.delta);
            let n = self.write_sst(&delta)?;
            let mut ssts = self.ssts.clone();
            ssts.push(n);
            self.install_manifest(self.schema, ssts)?;
            self.base.extend(delta);
        }
        self.delete_logs()?;
        sync_dir(&self.dir)
    }

    /// Replaces the whole content (migration, import): new table file, new manifest, CURRENT
    /// switched, then the old table files and logs are deleted.
    pub fn rewrite_all(&mut self, records: Records, schema: u32) -> Result<(), String> {
        let n = self.write_sst(&records)?;
        let old = std::mem::take(&mut self.ssts);
        self.install_manifest(schema, vec![n])?;
        for o in old {
            remove_if_exists(&self.dir.join(sst_name(o)))?;
        }
        self.delete_logs()?;
        sync_dir(&self.dir)?;
        self.base = records;
        self.delta.clear();
        Ok(())
    }
}
