//! The transaction journal: one JSON record per line, each fsync'd before the step it announces
//! runs, so that a helper killed at any point leaves a record `recover` can act on.
//!
//! Reading is strict except for the very last line: a kill during a write can only tear the final
//! line (records are appended), so a final line without its newline is dropped; any other
//! malformed line means the file was damaged by something else, and we refuse to guess.
//!
//! Writing never leaves a torn line under a record: `Journal::open` cuts a torn tail off (fsync'd)
//! and records what it cut (`Record::Cut`) before the first append, and `append` cuts its own
//! half-written record back when the write or its fsync fails (a full disk). Otherwise the next
//! record would be glued onto the torn one, and the journal would be damaged in the middle, which
//! no reader may skip.
//!
//! Every journal names its format (`FORMAT`, in the begin record): a journal written by a newer
//! helper (after a downgrade) is refused instead of misread.

use crate::os::clock::MonoStamp;
use crate::server::version::{Class, Version};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path} is damaged at line {line} ({message}); nothing was changed. Read it, restore the server by hand if needed, then move the file aside")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("journal {path} already exists: a transaction is unfinished; run `stalwart-upgrade recover`")]
    Exists { path: PathBuf },
    #[error("journal {path} is in format {format}, newer than the {known} this stalwart-upgrade reads: it was written by a newer stalwart-upgrade; nothing was changed. Install that version again (it finishes or reads the journal), or move the file aside once no transaction of it is unfinished")]
    NewerFormat {
        path: PathBuf,
        format: u32,
        known: u32,
    },
    /// The journal of an unfinished transaction, damaged before its last line: unlike a torn
    /// tail, that is not what a kill leaves, so recovery cannot know which steps ran.
    #[error("journal {path} of an unfinished transaction{began} is damaged at line {line} ({message}), not at its end: what the interrupted run did cannot be known, so nothing was changed. Read it (`cat {path}`: each line says a step was started or done), check what runs (`stalwart-upgrade status`) and put back by hand what those lines say was changed, if the server is not healthy on the version and data it should have (`stalwart-upgrade snapshot list` names the data it saved); then move the journal aside with `mkdir -p {aside} && mv {path} {aside}/` (`stalwart-upgrade history` still shows what could be read of it)")]
    OpenDamaged {
        path: PathBuf,
        line: usize,
        message: String,
        /// " (upgrade 0.15.5 -> 0.15.6 of stalwart.service)" when its begin record reads.
        began: String,
        aside: PathBuf,
    },
}

/// The journal format this helper writes and reads. 0: journals written before the format was
/// recorded (the same records, without `cut`); 1: adds the `cut` record and the `format` field.
pub const FORMAT: u32 = 1;

/// The steps of a transaction, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Copy the new binary into bin.new, check `--version` and the checksum; keep the old release.
    Stage,
    /// Stop the unit over D-Bus.
    Stop,
    /// Snapshot the data.
    Snapshot,
    /// Exchange bin.new and bin.
    Swap,
    /// (rollback transactions) put an earlier data snapshot back.
    Restore,
    /// (0.15 -> 0.16) write config.json from config.toml's data store and point the unit at it.
    #[serde(rename = "generation")]
    Crossing,
    /// (rollback from >= 0.16 to <= 0.15) set config.json and the unit drop-in aside, so the unit
    /// runs config.toml again.
    #[serde(rename = "generation_back")]
    CrossingBack,
    /// (0.15 -> 0.16) start the new binary in upstream's recovery mode, which migrates schema 5.
    Migrate,
    /// (0.15 -> 0.16) create 0.15's accounts, domains, lists, keys and listeners in the
    /// recovery-mode server, stop it, pin the 0.15 admin in stalwart.env (module `carry`).
    Carry,
    /// Start the unit over D-Bus.
    Start,
    /// Unit active, /healthz/ready, no failed migration in the log. Past this point, `recover`
    /// finishes the transaction instead of undoing it.
    Health,
    /// Hash the snapshot (off the downtime path).
    Verify,
    /// Refresh the web admin; reported, never rolled back.
    Webadmin,
}

impl Step {
    pub const ALL: [Step; 13] = [
        Step::Stage,
        Step::Stop,
        Step::Snapshot,
        Step::Swap,
        Step::Restore,
        Step::Crossing,
        Step::CrossingBack,
        Step::Migrate,
        Step::Carry,
        Step::Start,
        Step::Health,
        Step::Verify,
        Step::Webadmin,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Stage => "stage",
            Step::Stop => "stop",
            Step::Snapshot => "snapshot",
            Step::Swap => "swap",
            Step::Restore => "restore",
            Step::Crossing => "generation",
            Step::CrossingBack => "generation_back",
            Step::Migrate => "migrate",
            Step::Carry => "carry",
            Step::Start => "start",
            Step::Health => "health",
            Step::Verify => "verify",
            Step::Webadmin => "webadmin",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The undo actions of a rollback, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Undo {
    /// Stop whatever runs now (the new version may be up, or crash-looping).
    Stop,
    /// Put the old binary back into bin/.
    Binary,
    /// Remove what the crossing step wrote (config.json, the unit drop-in).
    #[serde(rename = "generation")]
    Crossing,
    /// Put back what the crossing-back step set aside.
    #[serde(rename = "generation_back")]
    CrossingBack,
    /// Put the data from before the transaction back.
    Data,
    /// Remove bin.new and a partial snapshot.
    Cleanup,
    /// Put the server config back from the snapshot's copy when it is gone.
    Config,
    /// Start the old version and health-check it.
    Start,
}

impl Undo {
    pub fn as_str(self) -> &'static str {
        match self {
            Undo::Stop => "undo-stop",
            Undo::Binary => "undo-binary",
            Undo::Crossing => "undo-generation",
            Undo::CrossingBack => "undo-generation-back",
            Undo::Data => "undo-data",
            Undo::Cleanup => "undo-cleanup",
            Undo::Config => "undo-config",
            Undo::Start => "undo-start",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Started,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    Upgrade,
    Rollback,
    /// `snapshot restore`: the data put back, the binary unchanged.
    Restore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Committed,
    /// The old version runs healthy again.
    RolledBack,
    /// Neither version could be brought back healthy.
    Failed,
}

/// Everything recovery needs to know, written before anything changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Begin {
    pub txid: String,
    /// Order of this transaction among the state dir's transactions (1, 2, ...): history and
    /// rollback go by it, not by the wall clock, which may have been set back in between.
    /// 0 in journals written before it existed.
    #[serde(default)]
    pub seq: u64,
    pub kind: TxKind,
    pub unit: String,
    pub from: Version,
    pub to: Version,
    pub class: Class,
    /// Start the old version again on rollback only if it was running before.
    pub was_active: bool,
    pub bin_dir: PathBuf,
    pub staged_dir: PathBuf,
    pub old_sha256: String,
    pub new_sha256: String,
    /// Undo must put the data back (the schema may have moved: minor/major, or a rollback that
    /// restored older data).
    pub restore_data: bool,
    /// Rollback transactions: the earlier snapshot restored forward.
    pub restore_from: Option<String>,
    pub server_config: PathBuf,
    /// The unit's listeners before the stop, with their greetings: the old version must answer
    /// on them again after an undo (and the new one after a same-generation upgrade).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<crate::server::listener::Probe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub enum Record {
    Begin {
        at: u64,
        /// `os::clock::MonoStamp`: durations survive the wall clock being set.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::os::clock::lenient_stamp"
        )]
        mono: Option<MonoStamp>,
        /// `FORMAT` when written; 0 (absent) in journals from before it was recorded.
        #[serde(default)]
        format: u32,
        #[serde(flatten)]
        begin: Box<Begin>,
    },
    Step {
        at: u64,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::os::clock::lenient_stamp"
        )]
        mono: Option<MonoStamp>,
        step: Step,
        phase: Phase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<Note>,
    },
    /// Rollback starts; `reason` is what failed.
    Abort { at: u64, reason: String },
    Undo {
        at: u64,
        undo: Undo,
        phase: Phase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<Note>,
    },
    End {
        at: u64,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::os::clock::lenient_stamp"
        )]
        mono: Option<MonoStamp>,
        ending: Ending,
        message: String,
        /// What went wrong without changing the ending (`warning::Warning`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<crate::engine::warning::Warning>,
    },
    /// A torn last record (the helper was killed or the machine lost power while writing it) was
    /// cut off before this journal was written to again: `bytes` long, starting with `tail`
    /// (lossy UTF-8, at most `CUT_TAIL_MAX` bytes of it). It announces nothing: the torn record's
    /// step never ran past it (records are written before the step they announce).
    Cut {
        at: u64,
        bytes: u64,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        tail: String,
    },
}

/// How much of a cut tail its record keeps (a record is rarely longer; enough to see which).
pub const CUT_TAIL_MAX: usize = 256;

/// Kills or stops the helper at `point` when a test asks for it (`KILL_AT_ENV`, `PAUSE_AT_ENV`);
/// nothing in a build without the `fault-injection` feature. Journal records are points
/// (`step:phase`), and so is `prehash:done` (the work before the stop is finished).
pub fn test_point(point: &str) {
    #[cfg(feature = "fault-injection")]
    {
        use nix::sys::signal::{raise, Signal};
        if std::env::var(KILL_AT_ENV).is_ok_and(|want| want == point) {
            tracing::warn!("test fault injection: killing myself at {point}");
            let _ = raise(Signal::SIGKILL);
        }
        if std::env::var(PAUSE_AT_ENV).is_ok_and(|want| want == point) {
            tracing::warn!("test fault injection: stopping myself at {point}");
            let _ = raise(Signal::SIGSTOP);
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}

/// The fault-injection settings of this run, for a helper it starts as a unit (the crash tests
/// reach the probation watcher's own points that way); empty in a build without the feature.
pub fn test_env() -> Vec<(&'static str, String)> {
    #[cfg(feature = "fault-injection")]
    if let Ok(point) = std::env::var(KILL_AT_ENV) {
        return vec![(KILL_AT_ENV, point)];
    }
    Vec::new()
}

/// Test fault injection (only in a build with the `fault-injection` feature, which scripts/test
/// enables and the packages never do): `STALWART_UPGRADE_TEST_KILL_AT=<step>:<started|done>` (steps as in
/// `Step::as_str`/`Undo::as_str`) makes the helper SIGKILL itself right after that record is on
/// disk. The crash tests use it to stop the helper at every step deterministically.
pub const KILL_AT_ENV: &str = "STALWART_UPGRADE_TEST_KILL_AT";
/// Test fault injection: `STALWART_UPGRADE_TEST_PAUSE_AT=<step>:<started|done>` makes the
/// helper SIGSTOP itself there, so that a test can change the world under it (fill a disk) and
/// let it go on with SIGCONT.
pub const PAUSE_AT_ENV: &str = "STALWART_UPGRADE_TEST_PAUSE_AT";

#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
fn kill_point(rec: &Record) -> Option<String> {
    let (name, phase) = match rec {
        Record::Step { step, phase, .. } => (step.as_str(), *phase),
        Record::Undo { undo, phase, .. } => (undo.as_str(), *phase),
        Record::Begin { .. } => ("begin", Phase::Done),
        Record::Abort { .. } => ("abort", Phase::Done),
        Record::End { .. } | Record::Cut { .. } => return None,
    };
    let phase = match phase {
        Phase::Started => "started",
        Phase::Done => "done",
    };
    Some(format!("{name}:{phase}"))
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Bytes of whole records on disk: where a failed append is cut back to.
    len: u64,
    /// An append failed and its partial record could not be cut off yet: nothing more may be
    /// appended before it is (it would be glued onto the partial record).
    torn: bool,
}

/// What `Journal::open` cut off the end of a journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub bytes: u64,
    pub tail: String,
}

/// Room set aside behind the journal's end (allocated, not part of its length) when it is
/// created or reopened, so the records to come (health:done, the undo's, the end) are still
/// written when the state directory's file system fills up meanwhile: a full disk must neither
/// roll back a healthy upgrade nor stop an undo from recording what it did (issue #25).
const RESERVE: u64 = 1 << 20;

impl Journal {
    /// Allocates [`RESERVE`] bytes past the end (FALLOC_FL_KEEP_SIZE: readers see no change).
    /// A file system without fallocate gets none; the journal works as before.
    fn reserve(&self) {
        if let Err(e) = rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::KEEP_SIZE,
            self.len,
            RESERVE,
        ) {
            tracing::debug!("no room reserved behind {}: {e}", self.path.display());
        }
    }

    /// Gives the reserve back (a closed journal only grows no more): its length, no more.
    pub fn release_reserve(&self) {
        if let Err(e) = self.file.set_len(self.len) {
            tracing::debug!("{}: {e}", self.path.display());
        }
    }

    /// Starts a new journal; refuses when one exists (an unfinished transaction must be
    /// recovered first).
    pub fn create(path: &Path, begin: Begin) -> Result<Journal, JournalError> {
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => JournalError::Exists {
                    path: path.to_owned(),
                },
                _ => JournalError::Io {
                    path: path.to_owned(),
                    source: e,
                },
            })?;
        let mut j = Journal {
            path: path.to_owned(),
            file,
            len: 0,
            torn: false,
        };
        if let Some(dir) = path.parent() {
            crate::store::state::fsync_dir(dir).map_err(|e| j.io(e))?;
        }
        j.reserve();
        j.append(Record::Begin {
            at: crate::os::clock::now_ms(),
            mono: MonoStamp::now(),
            format: FORMAT,
            begin: Box::new(begin),
        })?;
        Ok(j)
    }

    /// Reopens an existing journal to append (recovery continues the same record). A torn last
    /// record is cut off first (fsync'd) and a `Record::Cut` says what was cut, so the next
    /// record starts on a line of its own.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Ok(Self::open_cutting(path)?.0)
    }

    /// `open`, also saying what it cut.
    pub fn open_cutting(path: &Path) -> Result<(Journal, Option<Cut>), JournalError> {
        use std::io::Read;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|source| JournalError::Io {
                path: path.to_owned(),
                source,
            })?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| JournalError::Io {
                path: path.to_owned(),
                source,
            })?;
        let whole = whole_len(&bytes);
        let mut j = Journal {
            path: path.to_owned(),
            file,
            len: whole as u64,
            torn: whole < bytes.len(),
        };
        if whole == 0 && !bytes.is_empty() {
            // Only a torn begin record: a cut record cannot be the first line. The caller
            // (`recover`) removes such a journal instead: nothing was changed yet.
            return Err(JournalError::Corrupt {
                path: path.to_owned(),
                line: 1,
                message: "it holds no complete record (its begin record was torn while written); nothing was changed yet, so it can be removed".into(),
            });
        }
        if !j.torn {
            j.reserve();
            return Ok((j, None));
        }
        let torn = &bytes[whole..];
        let cut = Cut {
            bytes: torn.len() as u64,
            tail: String::from_utf8_lossy(&torn[..torn.len().min(CUT_TAIL_MAX)]).into_owned(),
        };
        j.cut_back()?;
        j.reserve();
        tracing::warn!(
            "journal {}: cut off a torn last record ({} bytes) left by a helper killed while writing it",
            path.display(),
            cut.bytes
        );
        j.append(Record::Cut {
            at: crate::os::clock::now_ms(),
            bytes: cut.bytes,
            tail: cut.tail.clone(),
        })?;
        Ok((j, Some(cut)))
    }

    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Cuts the file back to its whole records, durably.
    fn cut_back(&mut self) -> Result<(), JournalError> {
        self.torn = true;
        self.file
            .set_len(self.len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.io(e))?;
        self.torn = false;
        Ok(())
    }

    /// Appends one record and makes it durable before returning. When that fails, what was
    /// written of it is cut off again: the record is not in the journal, as the error says.
    pub fn append(&mut self, rec: Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(&rec).map_err(|e| JournalError::Corrupt {
            path: self.path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        line.push(b'\n');
        if self.torn {
            self.cut_back()?;
        }
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A short write (ENOSPC, EFBIG, EIO) leaves the start of this record at the end of
            // the file; the undo that follows a failed step appends next, and must not be glued
            // onto it. A failed fsync may have lost any of it: cut back all the same.
            if let Err(cut) = self.cut_back() {
                tracing::warn!("{cut}; it is cut off before the next record");
            }
            return Err(self.io(e));
        }
        self.len += line.len() as u64;
        #[cfg(feature = "fault-injection")]
        if let Some(point) = kill_point(&rec) {
            test_point(&point);
        }
        Ok(())
    }

    pub fn step(
        &mut self,
        step: Step,
        phase: Phase,
        note: Option<Note>,
    ) -> Result<(), JournalError> {
        self.append(Record::Step {
            at: crate::os::clock::now_ms(),
            mono: MonoStamp::now(),
            step,
            phase,
            note,
        })
    }

    pub fn undo(
        &mut self,
        undo: Undo,
        phase: Phase,
        note: Option<Note>,
    ) -> Result<(), JournalError> {
        self.append(Record::Undo {
            at: crate::os::clock::now_ms(),
            undo,
            phase,
            note,
        })
    }

    /// Reads a journal; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Vec<Record>>, JournalError> {
        match read_bytes(path)? {
            Some(bytes) => parse(path, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the journal of an unfinished transaction: as `read`, but damage before its last
    /// line is `JournalError::OpenDamaged`, whose message says what to do, `aside` being where to
    /// move it.
    pub fn read_open(path: &Path, aside: &Path) -> Result<Option<Vec<Record>>, JournalError> {
        let Some(bytes) = read_bytes(path)? else {
            return Ok(None);
        };
        parse(path, &bytes).map(Some).map_err(|e| match e {
            JournalError::Corrupt {
                path,
                line,
                message,
            } => {
                let began = salvage(&path, &bytes)
                    .ok()
                    .and_then(|s| {
                        s.records.into_iter().find_map(|r| match r {
                            Record::Begin { begin, .. } => Some(begin),
                            _ => None,
                        })
                    })
                    .map(|b| {
                        let kind = match b.kind {
                            TxKind::Upgrade => "upgrade",
                            TxKind::Rollback => "rollback",
                            TxKind::Restore => "snapshot restore",
                        };
                        format!(" ({kind} {} -> {} of {})", b.from, b.to, b.unit)
                    })
                    .unwrap_or_default();
                JournalError::OpenDamaged {
                    path,
                    line,
                    message,
                    began,
                    aside: aside.to_owned(),
                }
            }
            e => e,
        })
    }
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JournalError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Length of the whole ('\n'-terminated) lines at the start of `bytes`: what follows is a torn
/// last record.
pub fn whole_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The format a journal's first line names, when that line is a begin record: read before the
/// records themselves, which a newer format may have changed.
fn format_of(first_line: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Probe {
        rec: String,
        #[serde(default)]
        format: u32,
    }
    serde_json::from_slice::<Probe>(first_line)
        .ok()
        .filter(|p| p.rec == "begin")
        .map(|p| p.format)
}

/// Parses journal bytes: every complete line must be a record and the first a Begin; an
/// incomplete final line (torn write) is dropped. A journal of a newer format is refused.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Record>, JournalError> {
    let corrupt = |line: usize, message: String| JournalError::Corrupt {
        path: path.to_owned(),
        line,
        message,
    };
    let complete = &bytes[..whole_len(bytes)];
    let mut out = Vec::new();
    let body = complete.strip_suffix(b"\n").unwrap_or(complete);
    if body.is_empty() {
        // Nothing complete yet (killed while writing the begin record): nothing was changed.
        return Ok(out);
    }
    check_format(path, body)?;
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let rec: Record =
            serde_json::from_slice(line).map_err(|e| corrupt(i + 1, e.to_string()))?;
        if (i == 0) != matches!(rec, Record::Begin { .. }) {
            return Err(corrupt(
                i + 1,
                "a journal starts with exactly one begin record".into(),
            ));
        }
        out.push(rec);
    }
    Ok(out)
}

fn check_format(path: &Path, body: &[u8]) -> Result<(), JournalError> {
    let first = body.split(|&b| b == b'\n').next().unwrap_or_default();
    match format_of(first) {
        Some(format) if format > FORMAT => Err(JournalError::NewerFormat {
            path: path.to_owned(),
            format,
            known: FORMAT,
        }),
        _ => Ok(()),
    }
}

/// What could be read of a damaged journal (`salvage`).
#[derive(Debug, Clone, Default)]
pub struct Salvaged {
    pub records: Vec<Record>,
    /// The lines that did not read (1-based), with why; empty for an undamaged journal.
    pub damaged: Vec<(usize, String)>,
}

/// Reads what it can of a damaged journal, for history only (never for recovery, which must not
/// guess): each line that reads as a record is kept, a damaged one is skipped, except that a
/// whole record glued onto a torn one (what a helper before `FORMAT` 1 left: it appended to a
/// torn tail) is found at its `{"rec":` and kept. Records before the first begin, and later
/// begins, are skipped as damage. A torn last line is dropped as `parse` does. A newer format is
/// refused all the same.
pub fn salvage(path: &Path, bytes: &[u8]) -> Result<Salvaged, JournalError> {
    let complete = &bytes[..whole_len(bytes)];
    let body = complete.strip_suffix(b"\n").unwrap_or(complete);
    let mut out = Salvaged::default();
    if body.is_empty() {
        return Ok(out);
    }
    check_format(path, body)?;
    const TAG: &[u8] = br#"{"rec":"#;
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let rec = match serde_json::from_slice::<Record>(line) {
            Ok(r) => Ok(r),
            // Inside a record, `{"rec":` only starts it (quotes in strings are escaped), so
            // each later one starts a glued record; a few tries bound the work on garbage.
            Err(e) => (1..line.len())
                .filter(|&k| line[k..].starts_with(TAG))
                .take(4)
                .find_map(|k| serde_json::from_slice::<Record>(&line[k..]).ok())
                .ok_or_else(|| e.to_string()),
        };
        match rec {
            Ok(r) if matches!(r, Record::Begin { .. }) == out.records.is_empty() => {
                out.records.push(r)
            }
            Ok(_) => out.damaged.push((
                i + 1,
                "a journal starts with exactly one begin record".into(),
            )),
            Err(why) => out.damaged.push((i + 1, why)),
        }
    }
    Ok(out)
}

/// What a step or undo record notes. Typed; journals written before that carry plain text,
/// which still reads (`Text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Note {
    Typed(Noted),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Noted {
    /// stage: the sha256 of the staged binary.
    Staged { sha256: String },
    /// snapshot: its id (what undo and rollback restore).
    Snapshot { id: String },
    /// health: the new version answered ready this long after the step began.
    Ready { after_ms: u64 },
    /// carry: objects created in 0.16.
    Carried { objects: usize },
    /// undo-binary: what state bin/ was found in.
    Binary { found: crate::store::swap::Ensured },
    /// restore, undo-data: the snapshot put back.
    Restored { snapshot: String },
    /// generation_back: where config.json and the drop-in were set aside.
    Aside { dir: std::path::PathBuf },
}

impl From<Noted> for Note {
    fn from(n: Noted) -> Note {
        Note::Typed(n)
    }
}

/// What a journal says happened, for recovery and history.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub begin: Option<Begin>,
    pub started: Vec<Step>,
    pub done: Vec<Step>,
    pub notes: Vec<(Step, Note)>,
    pub abort: Option<String>,
    pub undone: Vec<Undo>,
    pub end: Option<(Ending, String)>,
    /// The end record's warnings (for a journal written before they were records, the text
    /// its message carried).
    pub end_warnings: Vec<crate::engine::warning::Warning>,
    pub first_at: u64,
    pub last_at: u64,
    /// Begin and End (or the last record) as stamps, for the duration.
    pub first: Stamp,
    pub last: Stamp,
    /// Each finished step: started, done.
    pub step_times: Vec<(Step, Stamp, Stamp)>,
}

/// When a record was written: wall clock (`at`, for display) and, when recorded, the monotonic
/// stamp (for durations: the wall clock may have been set in between).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stamp {
    pub at: u64,
    pub mono: Option<MonoStamp>,
}

impl Stamp {
    fn new(at: u64, mono: &Option<MonoStamp>) -> Stamp {
        Stamp {
            at,
            mono: mono.clone(),
        }
    }

    /// Milliseconds from `self` to `later`: monotonic when both stamps are from the same boot,
    /// else by the wall clock (never negative).
    pub fn ms_until(&self, later: &Stamp) -> u64 {
        match (&self.mono, &later.mono) {
            (Some(a), Some(b)) => b.ms_since(a),
            _ => None,
        }
        .unwrap_or_else(|| later.at.saturating_sub(self.at))
    }
}

impl Summary {
    pub fn of(records: &[Record]) -> Summary {
        let mut s = Summary::default();
        let mut open: Vec<(Step, Stamp)> = Vec::new();
        for r in records {
            match r {
                Record::Begin {
                    at, mono, begin, ..
                } => {
                    s.begin = Some((**begin).clone());
                    s.first_at = *at;
                    s.last_at = *at;
                    s.first = Stamp::new(*at, mono);
                    s.last = s.first.clone();
                }
                Record::Step {
                    at,
                    mono,
                    step,
                    phase,
                    note,
                } => {
                    s.last_at = *at;
                    let stamp = Stamp::new(*at, mono);
                    s.last = stamp.clone();
                    match phase {
                        Phase::Started => {
                            s.started.push(*step);
                            open.push((*step, stamp));
                        }
                        Phase::Done => {
                            s.done.push(*step);
                            if let Some(pos) = open.iter().position(|(st, _)| st == step) {
                                let (_, t0) = open.remove(pos);
                                s.step_times.push((*step, t0, stamp));
                            }
                        }
                    }
                    if let Some(n) = note {
                        s.notes.push((*step, n.clone()));
                    }
                }
                Record::Abort { at, reason } => {
                    s.last_at = *at;
                    s.last = Stamp::new(*at, &None);
                    s.abort.get_or_insert_with(|| reason.clone());
                }
                Record::Undo {
                    at, undo, phase, ..
                } => {
                    s.last_at = *at;
                    s.last = Stamp::new(*at, &None);
                    if *phase == Phase::Done {
                        s.undone.push(*undo);
                    }
                }
                Record::End {
                    at,
                    mono,
                    ending,
                    message,
                    warnings,
                } => {
                    s.last_at = *at;
                    s.last = Stamp::new(*at, mono);
                    s.end = Some((*ending, message.clone()));
                    s.end_warnings = crate::engine::warning::of_end(message, warnings);
                }
                // What was cut was never a record: nothing to summarise.
                Record::Cut { .. } => {}
            }
        }
        s
    }
    pub fn started(&self, step: Step) -> bool {
        self.started.contains(&step)
    }
    pub fn done(&self, step: Step) -> bool {
        self.done.contains(&step)
    }
    pub fn note(&self, step: Step) -> Option<&Note> {
        self.notes
            .iter()
            .rev()
            .find(|(s, _)| *s == step)
            .map(|(_, n)| n)
    }
    /// The id of the snapshot this transaction finished taking.
    pub fn snapshot_id(&self) -> Option<&str> {
        if !self.done(Step::Snapshot) {
            return None;
        }
        match self.note(Step::Snapshot)? {
            Note::Typed(Noted::Snapshot { id }) => Some(id),
            // Journals before typed notes wrote the bare id.
            Note::Text(id) => Some(id),
            Note::Typed(_) => None,
        }
    }
    /// When the new version answered ready, counted from the health step's start (ms).
    pub fn ready_after_ms(&self) -> Option<u64> {
        match self.note(Step::Health)? {
            Note::Typed(Noted::Ready { after_ms }) => Some(*after_ms),
            Note::Text(t) => t
                .strip_prefix("ready after ")?
                .strip_suffix(" ms")?
                .parse()
                .ok(),
            Note::Typed(_) => None,
        }
    }
    /// Stop issued -> the new version answered ready (health's note), in ms.
    pub fn downtime_ms(&self) -> Option<u64> {
        let t = |s: Step| self.step_times.iter().find(|(x, _, _)| *x == s);
        let (_, stop, _) = t(Step::Stop)?;
        let (_, health, health_done) = t(Step::Health)?;
        Some(match self.ready_after_ms() {
            Some(ready_ms) => stop.ms_until(health).saturating_add(ready_ms),
            None => stop.ms_until(health_done),
        })
    }

    /// The last step that was started, for messages.
    pub fn last_started(&self) -> Option<Step> {
        self.started.last().copied()
    }
}

/// A begin record for unit tests (a 0.15.5 -> 0.15.6 patch upgrade).
#[cfg(test)]
pub(crate) fn sample_begin(txid: &str, seq: u64) -> Begin {
    Begin {
        txid: txid.into(),
        seq,
        kind: TxKind::Upgrade,
        unit: "stalwart.service".into(),
        from: "0.15.5".parse().unwrap(),
        to: "0.15.6".parse().unwrap(),
        class: crate::server::version::Class::Patch,
        was_active: true,
        bin_dir: "/opt/stalwart/bin".into(),
        staged_dir: "/opt/stalwart/bin.new".into(),
        old_sha256: "a".into(),
        new_sha256: "b".into(),
        restore_data: false,
        restore_from: None,
        server_config: "/opt/stalwart/etc/config.toml".into(),
        listeners: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin() -> Begin {
        sample_begin("tx1", 0)
    }

    /// A stamp that does not read (a damaged or hand-edited journal) is no stamp: the record
    /// still reads, and durations fall back to the wall clock.
    #[test]
    fn a_mono_stamp_that_does_not_read_is_no_stamp() {
        for bad in ["garbage", "x:y", ":5", ""] {
            let line = format!(
                r#"{{"rec":"step","at":7,"mono":"{bad}","step":"stop","phase":"started"}}"#
            );
            let r: Record = serde_json::from_str(&line).unwrap();
            assert!(
                matches!(
                    r,
                    Record::Step {
                        mono: None,
                        at: 7,
                        ..
                    }
                ),
                "{bad}: {r:?}"
            );
        }
        let good = r#"{"rec":"step","at":7,"mono":"abcd1234:99","step":"stop","phase":"started"}"#;
        let r: Record = serde_json::from_str(good).unwrap();
        let Record::Step { mono: Some(m), .. } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(m.to_string(), "abcd1234:99");
        assert_eq!(serde_json::to_string(&r).unwrap(), good);
    }

    #[test]
    fn records_round_trip_and_summarise() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        let mut j = Journal::create(&p, begin()).unwrap();
        j.step(Step::Stage, Phase::Started, None).unwrap();
        j.step(
            Step::Stage,
            Phase::Done,
            Some(
                Noted::Staged {
                    sha256: "sha".into(),
                }
                .into(),
            ),
        )
        .unwrap();
        j.step(Step::Stop, Phase::Started, None).unwrap();
        let recs = Journal::read(&p).unwrap().unwrap();
        assert_eq!(recs.len(), 4);
        let s = Summary::of(&recs);
        assert_eq!(s.begin.clone().unwrap(), begin());
        assert!(s.done(Step::Stage) && s.started(Step::Stop) && !s.done(Step::Stop));
        assert_eq!(
            s.note(Step::Stage),
            Some(&Note::Typed(Noted::Staged {
                sha256: "sha".into()
            }))
        );
        assert_eq!(s.last_started(), Some(Step::Stop));
    }

    #[test]
    fn typed_notes_and_the_text_notes_of_older_journals_both_read() {
        let text = concat!(
            r#"{"rec":"step","at":1,"step":"snapshot","phase":"done","note":"20261128T1-old"}"#,
            "\n",
            r#"{"rec":"step","at":2,"step":"health","phase":"done","note":"ready after 1200 ms"}"#,
            "\n",
        );
        let typed = concat!(
            r#"{"rec":"step","at":1,"step":"snapshot","phase":"done","note":{"kind":"snapshot","id":"20261128T1-new"}}"#,
            "\n",
            r#"{"rec":"step","at":2,"step":"health","phase":"done","note":{"kind":"ready","after_ms":900}}"#,
            "\n",
        );
        for (lines, id, ms) in [
            (text, "20261128T1-old", 1200),
            (typed, "20261128T1-new", 900),
        ] {
            let recs: Vec<Record> = lines
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let s = Summary::of(&recs);
            assert_eq!(s.snapshot_id(), Some(id));
            assert_eq!(s.ready_after_ms(), Some(ms));
        }
        // What is written now is typed.
        let r = Record::Step {
            at: 0,
            mono: None,
            step: Step::Health,
            phase: Phase::Done,
            note: Some(Noted::Ready { after_ms: 5 }.into()),
        };
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains(r#""note":{"kind":"ready","after_ms":5}"#));
    }

    #[test]
    fn second_create_refuses() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        let _j = Journal::create(&p, begin()).unwrap();
        let e = Journal::create(&p, begin()).err().unwrap();
        assert!(matches!(e, JournalError::Exists { .. }));
        assert!(e.to_string().contains("stalwart-upgrade recover"));
    }

    #[test]
    fn torn_last_line_is_dropped_but_damage_elsewhere_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        let mut j = Journal::create(&p, begin()).unwrap();
        j.step(Step::Stage, Phase::Started, None).unwrap();
        let good = std::fs::read(&p).unwrap();

        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"rec":"step","at":1,"st"#);
        let recs = parse(&p, &torn).unwrap();
        assert_eq!(recs.len(), 2);

        let mut damaged = good.clone();
        damaged[0] = b'#';
        let e = parse(&p, &damaged).unwrap_err();
        assert!(matches!(e, JournalError::Corrupt { line: 1, .. }), "{e}");

        let no_begin = b"{\"rec\":\"abort\",\"at\":1,\"reason\":\"x\"}\n";
        assert!(parse(&p, no_begin).is_err());
        assert!(parse(&p, b"").unwrap().is_empty());
        assert!(parse(&p, b"{\"rec\":\"be").unwrap().is_empty());
    }

    /// What `recover` does with a journal: read it as the open one, reopen it, append.
    fn reopen_and_append(p: &Path) -> (Journal, Option<Cut>) {
        Journal::read_open(p, Path::new("/aside")).unwrap().unwrap();
        let (mut j, cut) = Journal::open_cutting(p).unwrap();
        j.append(Record::Abort {
            at: 9,
            reason: "interrupted".into(),
        })
        .unwrap();
        (j, cut)
    }

    #[test]
    fn a_torn_tail_is_cut_and_recorded_before_the_next_append() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        let mut j = Journal::create(&p, begin()).unwrap();
        j.step(Step::Stage, Phase::Started, None).unwrap();
        drop(j);
        let torn = br#"{"rec":"step","at":1,"st"#;
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(torn);
        std::fs::write(&p, &bytes).unwrap();

        let (_j, cut) = reopen_and_append(&p);
        let cut = cut.expect("something was cut");
        assert_eq!(cut.bytes, torn.len() as u64);
        assert_eq!(cut.tail.as_bytes(), torn);
        let recs = parse(&p, &std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(recs.len(), 4, "{recs:?}");
        assert!(
            matches!(&recs[2], Record::Cut { bytes, tail, .. } if *bytes == torn.len() as u64 && tail.as_bytes() == torn),
            "{:?}",
            recs[2]
        );
        assert!(matches!(recs[3], Record::Abort { .. }));
        // The cut announces nothing: the summary is that of the records around it.
        let s = Summary::of(&recs);
        assert!(s.started(Step::Stage) && s.abort.is_some() && s.last_at == 9);

        // A whole journal is opened without a cut record.
        let before = std::fs::read(&p).unwrap();
        let (_j, cut) = Journal::open_cutting(&p).unwrap();
        assert_eq!(cut, None);
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn a_long_torn_tail_keeps_only_its_start_in_the_cut_record() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        drop(Journal::create(&p, begin()).unwrap());
        // Zeros: what a file system can show after a power loss in place of unwritten data.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend(std::iter::repeat(0u8).take(5000));
        std::fs::write(&p, &bytes).unwrap();
        let (_j, cut) = reopen_and_append(&p);
        let cut = cut.unwrap();
        assert_eq!(cut.bytes, 5000);
        assert_eq!(cut.tail.len(), CUT_TAIL_MAX);
        let recs = Journal::read(&p).unwrap().unwrap();
        assert!(matches!(recs[1], Record::Cut { bytes: 5000, .. }));
    }

    #[test]
    fn only_a_torn_begin_is_not_reopened() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        std::fs::write(&p, br#"{"rec":"begin","at":1,"tx"#).unwrap();
        assert_eq!(Journal::read_open(&p, t.path()).unwrap(), Some(vec![]));
        let e = Journal::open(&p).err().unwrap();
        assert!(matches!(e, JournalError::Corrupt { line: 1, .. }), "{e}");
        assert!(e.to_string().contains("can be removed"), "{e}");
    }

    #[test]
    fn the_format_is_written_older_journals_read_and_newer_ones_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        drop(Journal::create(&p, begin()).unwrap());
        let line = std::fs::read_to_string(&p).unwrap();
        assert!(line.contains(&format!(r#""format":{FORMAT}"#)), "{line}");
        match &Journal::read(&p).unwrap().unwrap()[0] {
            Record::Begin { format, .. } => assert_eq!(*format, FORMAT),
            r => panic!("{r:?}"),
        }
        // Without the field (journals before it): format 0, read as before.
        let old = line.replace(&format!(r#""format":{FORMAT},"#), "");
        assert_ne!(old, line);
        let recs = parse(&p, old.as_bytes()).unwrap();
        assert!(matches!(recs[0], Record::Begin { format: 0, .. }));
        // Newer: refused naming the file, also when its later records are unknown here, and
        // also when only history wants to read what it can.
        let newer = format!(
            "{}{}\n",
            line.replace(&format!(r#""format":{FORMAT}"#), r#""format":7"#),
            r#"{"rec":"teleport","at":2}"#
        );
        for e in [
            parse(&p, newer.as_bytes()).unwrap_err(),
            salvage(&p, newer.as_bytes()).unwrap_err(),
        ] {
            assert!(
                matches!(
                    e,
                    JournalError::NewerFormat {
                        format: 7,
                        known: FORMAT,
                        ..
                    }
                ),
                "{e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(&p.display().to_string()), "{msg}");
            assert!(msg.contains("newer stalwart-upgrade"), "{msg}");
        }
    }

    /// What a helper before format 1 left (the bug this format fixes): a record appended onto a
    /// torn one, in the middle of the file.
    fn glued(p: &Path) -> Vec<u8> {
        let mut j = Journal::create(p, begin()).unwrap();
        j.step(Step::Stage, Phase::Started, None).unwrap();
        drop(j);
        let mut bytes = std::fs::read(p).unwrap();
        bytes.extend_from_slice(br#"{"rec":"step","at":3,"step":"sta"#);
        for r in [
            Record::Abort {
                at: 4,
                reason: "interrupted".into(),
            },
            Record::End {
                at: 5,
                mono: None,
                ending: Ending::RolledBack,
                message: "rolled back".into(),
                warnings: Vec::new(),
            },
        ] {
            bytes.extend(serde_json::to_vec(&r).unwrap());
            bytes.push(b'\n');
        }
        bytes
    }

    #[test]
    fn a_record_glued_onto_a_torn_one_is_refused_but_salvaged_for_history() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        let bytes = glued(&p);
        let e = parse(&p, &bytes).unwrap_err();
        assert!(matches!(e, JournalError::Corrupt { line: 3, .. }), "{e}");
        let s = salvage(&p, &bytes).unwrap();
        assert_eq!(s.damaged, vec![]);
        assert_eq!(s.records.len(), 4);
        let sum = Summary::of(&s.records);
        assert_eq!(sum.end.unwrap().0, Ending::RolledBack);
        // Garbage in the middle is skipped and said; a second begin is damage too.
        let mut bad = std::fs::read(&p).unwrap();
        bad.extend_from_slice(b"%%%\n");
        bad.extend(std::fs::read(&p).unwrap());
        let s = salvage(&p, &bad).unwrap();
        assert_eq!(
            s.damaged.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(s.records.len(), 3);
        // Undamaged: what parse reads.
        let whole = std::fs::read(&p).unwrap();
        let s = salvage(&p, &whole).unwrap();
        assert!(s.damaged.is_empty());
        assert_eq!(s.records, parse(&p, &whole).unwrap());
    }

    #[test]
    fn an_open_journal_damaged_in_the_middle_says_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("journal.jsonl");
        let aside = t.path().join("history/damaged");
        std::fs::write(&p, glued(&p)).unwrap();
        let e = Journal::read_open(&p, &aside).unwrap_err();
        assert!(
            matches!(e, JournalError::OpenDamaged { line: 3, .. }),
            "{e}"
        );
        let msg = e.to_string();
        for want in [
            format!("journal {} of an unfinished transaction (upgrade 0.15.5 -> 0.15.6 of stalwart.service) is damaged at line 3", p.display()),
            "nothing was changed".into(),
            "stalwart-upgrade status".into(),
            format!("mkdir -p {} && mv {} {}/", aside.display(), p.display(), aside.display()),
        ] {
            assert!(msg.contains(&want), "{want:?} not in {msg}");
        }
        // The damaged begin record: no description, the same instructions.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[0] = b'#';
        std::fs::write(&p, &bytes).unwrap();
        let msg = Journal::read_open(&p, &aside).unwrap_err().to_string();
        assert!(
            msg.contains("unfinished transaction is damaged at line 1"),
            "{msg}"
        );
    }

    #[test]
    fn a_failed_append_is_cut_back_so_the_next_one_starts_a_line() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("j");
        let mut j = Journal::create(&p, begin()).unwrap();
        let good = std::fs::read(&p).unwrap();
        // A half-written record left by a failed write (the write itself is forced to fail in
        // tests/journal_torn.rs): the journal knows its whole length and cuts back to it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(br#"{"rec":"step","at":1,"st"#)
            .unwrap();
        j.torn = true;
        j.step(Step::Stage, Phase::Started, None).unwrap();
        let now = std::fs::read(&p).unwrap();
        assert!(now.starts_with(&good));
        let recs = parse(&p, &now).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(matches!(
            recs[1],
            Record::Step {
                step: Step::Stage,
                ..
            }
        ));
    }
}
