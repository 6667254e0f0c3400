//! PostgreSQL snapshots as clone databases in the store's own server: `CREATE DATABASE <clone>
//! TEMPLATE <store's db> STRATEGY FILE_COPY` once the server has stopped; restored by cloning
//! the snapshot next to the live database and swapping the two names in one transaction.
//!
//! Why: pg_dump runs inside the downtime and pulls every row through the client (about
//! 130 MB/s on the 2-core machine: 31 s for 4 GiB), while FILE_COPY copies the database's files
//! inside the PostgreSQL server (a checkpoint, then file copies: about 1 GiB/s measured) and
//! needs no space under the snapshot root. The clone is exactly the data at the stop:
//! PostgreSQL refuses to copy a database any session is connected to, so nothing can write
//! between the stop and the copy.
//!
//! When: the store's role may create databases (CREATEDB) and owns the store's database (a
//! role that is not superuser may only copy its own), on PostgreSQL 15 or newer (STRATEGY). The
//! role of a default install has no CREATEDB: its store is dumped as before. A clone that fails
//! (e.g. another client is connected) falls back to the dump.
//!
//! Safety: every name is ours (derived from the snapshot id; the store's database name passed
//! `check_value`) and double-quoted; the statements run as the store's role through psql run as
//! the config's controller, never as root, so they can do nothing the server itself could not.
//! Its OID is recorded: a database made under its name later is never restored.
//!
//! Integrity: the clone belongs to the store's role, which is the server's (its password is in
//! the server config), and the helper has no other role to give it to. An owner can open the
//! clone (`ALTER DATABASE .. ALLOW_CONNECTIONS true`), rewrite it and close it again, so a clone
//! that only exists under its OID proves nothing. What proves it unchanged, at no cost:
//! - it is made closed to connections (`CREATE DATABASE .. ALLOW_CONNECTIONS false`, one
//!   statement: it is never open), and PostgreSQL lets no session into a database whose
//!   `datallowconn` is false, superusers included; the exceptions are single-user mode (root's)
//!   and autovacuum, which brings no SQL of anyone's in (see below);
//! - a database's content changes only through a session connected to it, so opening it is a
//!   must, and every `ALTER DATABASE` (opening it, renaming it, a new owner) writes a new
//!   version of its `pg_database` row, whose `xmin` is the id of the transaction that wrote it:
//!   assigned by the server, never chosen by a client, never the same for two transactions
//!   within 2^32 of each other. (VACUUM's in-place updates of that row, and freezing, keep it.)
//!
//! So the snapshot records the row's transaction id (with its epoch: 64 bits) as the clone is
//! made; `check` finds the same id, the clone still closed and valid, and fewer than 2^32
//! transactions since: nobody has been inside. What that does not cover:
//! - the instant between `CREATE DATABASE` and the read of the row (a few milliseconds, server
//!   stopped): whoever holds the role's password then could as well change the live database
//!   just before the stop, which no snapshot tells apart;
//! - code that was already in the database at the stop: autovacuum (transaction-id wraparound
//!   protection) may vacuum the clone and, doing so, evaluate index expressions, i.e. functions
//!   of the role's that the database held when it was copied. A database the role had already
//!   booby-trapped before the snapshot is no trustworthy snapshot whatever its checks say;
//!   nothing the role does after the snapshot gets into the clone.
//!
//! A checksum of the content was the other way: it reads the whole database, inside the
//! downtime (a dump's cost, which the clone exists to save) or after the restart from the
//! clone, which would have to be opened to the role again first.

use super::{sql, CloneDb, SnapshotError};
use crate::server::serverconfig::SqlConn;
use sha2::{Digest, Sha256};

/// Where the statements that copy, rename and drop databases connect: PostgreSQL refuses them
/// on a database that has sessions, including their own.
const MAINTENANCE_DB: &str = "postgres";

/// What a database of ours holds, as the middle of its name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// A snapshot's copy.
    Snapshot,
    /// A restore's copy being built, not yet swapped in.
    Restore,
    /// The live database a restore swapped out, until it is kept under a name of its own.
    Displaced,
    /// Data a restore replaced, kept as a snapshot of its own.
    Kept,
}

impl Purpose {
    fn word(self) -> &'static str {
        match self {
            Purpose::Snapshot => "snap",
            Purpose::Restore => "restore",
            Purpose::Displaced => "displaced",
            Purpose::Kept => "kept",
        }
    }
}

/// `<db>_su_<purpose>_<12 hex of key>`: recognisable in `\l` as ours, and within PostgreSQL's
/// 63 bytes (it cuts longer identifiers silently, which could make two of ours one).
pub(crate) fn name_for(db: &str, key: &str, purpose: Purpose) -> String {
    let h = Sha256::digest(key.as_bytes());
    let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
    let prefix: String = db.chars().take(36).collect();
    format!("{prefix}_su_{}_{hex}", purpose.word())
}

/// The clone of store `store` in snapshot `snapshot_id`: two stores of one snapshot may use the
/// same database, and each gets a clone of its own.
pub(crate) fn snapshot_name(db: &str, snapshot_id: &str, store: &str) -> String {
    name_for(db, &format!("{snapshot_id}/{store}"), Purpose::Snapshot)
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn run(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    what: &str,
    statements: &[String],
) -> Result<String, SnapshotError> {
    sql::pg_run(store, conn, MAINTENANCE_DB, run_as, what, statements)
}

/// May the store's role clone its database here? Any doubt (no answer, an old server) is a no:
/// the store is then dumped.
pub(crate) fn possible(store: &str, conn: &SqlConn, run_as: sql::RunAs) -> bool {
    let q = "SELECT (r.rolsuper OR (r.rolcreatedb AND d.datdba = r.oid)) \
             AND current_setting('server_version_num')::int >= 150000 \
             FROM pg_roles r, pg_database d \
             WHERE r.rolname = current_user AND d.datname = current_database()";
    let on = conn.database.clone();
    matches!(
        sql::pg_run(
            store,
            conn,
            &on,
            run_as,
            "check the right to clone",
            &[q.into()]
        )
        .as_deref(),
        Ok("t")
    )
}

/// Runs `query` about database `name` (checked to be a plain name first).
fn look_up(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    name: &str,
    query: String,
) -> Result<String, SnapshotError> {
    sql::check_value(store, "database", name)?;
    run(store, conn, run_as, "look up a database", &[query])
}

/// The OID of database `name`, None when there is none.
pub(crate) fn oid_of(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    name: &str,
) -> Result<Option<u32>, SnapshotError> {
    Ok(look_up(store, conn, run_as, name, oid_query(name))?
        .parse()
        .ok())
}

fn oid_query(name: &str) -> String {
    format!(
        "SELECT oid FROM pg_database WHERE datname = {}",
        literal(name)
    )
}

/// A database's `pg_database` row, as far as a clone's integrity goes (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    oid: u32,
    /// The transaction that wrote this version of the row (32 bits, as PostgreSQL shows it).
    xmin: u32,
    allow_conn: bool,
    /// -2: an interrupted DROP DATABASE left it invalid (part of its files may be gone).
    conn_limit: i32,
    /// A 64-bit transaction id no older than the row: the next one to be assigned, or this
    /// transaction's own when it has one (a row written by this transaction may be newer than
    /// its snapshot's horizon).
    now: u64,
}

impl Row {
    /// `xmin` with its epoch: the newest id at or before `now` whose low 32 bits are `xmin`.
    fn full_xmin(&self) -> u64 {
        self.now
            .saturating_sub(u64::from((self.now as u32).wrapping_sub(self.xmin)))
    }
}

fn row_query(name: &str) -> String {
    format!(
        "SELECT oid, xmin, datallowconn, datconnlimit, \
         greatest(pg_snapshot_xmax(pg_current_snapshot()), pg_current_xact_id_if_assigned()) \
         FROM pg_database WHERE datname = {}",
        literal(name)
    )
}

/// `oid|xmin|t|-1|now` as psql -A -t prints a [`row_query`]; the last line of `out` (the
/// statements before it print nothing).
fn parse_row(out: &str) -> Option<Row> {
    let f: Vec<&str> = out.lines().last()?.split('|').collect();
    match f[..] {
        [oid, xmin, allow, limit, now] => Some(Row {
            oid: oid.parse().ok()?,
            xmin: xmin.parse().ok()?,
            allow_conn: allow == "t",
            conn_limit: limit.parse().ok()?,
            now: now.parse().ok()?,
        }),
        _ => None,
    }
}

/// The row of database `name`, None when there is none.
fn row_of(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    name: &str,
) -> Result<Option<Row>, SnapshotError> {
    let out = look_up(store, conn, run_as, name, row_query(name))?;
    if out.is_empty() {
        return Ok(None);
    }
    parse_row(&out).map(Some).ok_or_else(|| no_row(store, name))
}

fn no_row(store: &str, name: &str) -> SnapshotError {
    SnapshotError::Other(format!(
        "store \"{store}\": PostgreSQL did not report the OID and transaction id of the \
         database {name}"
    ))
}

/// The database `name` as a snapshot records it, from the output of statements that end with
/// its [`row_query`] and left it closed to connections.
fn recorded(store: &str, name: &str, out: &str) -> Result<CloneDb, SnapshotError> {
    match parse_row(out) {
        Some(r) if !r.allow_conn => Ok(CloneDb {
            name: name.to_string(),
            oid: r.oid,
            xid: Some(r.full_xmin()),
        }),
        _ => Err(no_row(store, name)),
    }
}

/// Copies database `from` as `name`, closed to connections from its first instant. A leftover
/// of ours under that name goes first; a copy that fails half way is dropped.
fn copy_db(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    from: &str,
    name: &str,
) -> Result<CloneDb, SnapshotError> {
    sql::check_value(store, "database", name)?;
    drop_db(store, conn, run_as, name)?;
    let made = run(
        store,
        conn,
        run_as,
        "clone the database",
        &[
            format!(
                "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY ALLOW_CONNECTIONS false",
                ident(name),
                ident(from)
            ),
            row_query(name),
        ],
    )
    .and_then(|out| recorded(store, name, &out));
    if made.is_err() {
        let _ = drop_db(store, conn, run_as, name);
    }
    made
}

/// Server stopped: the snapshot's clone of the store's database, as `name`
/// ([`snapshot_name`]).
pub(crate) fn create(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    name: &str,
) -> Result<CloneDb, SnapshotError> {
    copy_db(store, conn, run_as, &conn.database, name)
}

/// Drops database `name` if it is there.
pub(crate) fn drop_db(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    name: &str,
) -> Result<(), SnapshotError> {
    sql::check_value(store, "database", name)?;
    run(
        store,
        conn,
        run_as,
        "drop a snapshot database",
        &[format!("DROP DATABASE IF EXISTS {}", ident(name))],
    )?;
    Ok(())
}

/// Is `clone` still the database the snapshot made, with the data it had then? Gone or
/// another database: `BadDump`; the same database, possibly changed: `CloneChanged` (see the
/// module comment for why an unchanged row proves unchanged data).
pub(crate) fn check(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    clone: &CloneDb,
) -> Result<(), SnapshotError> {
    let row = match row_of(store, conn, run_as, &clone.name)? {
        Some(r) if r.oid == clone.oid => r,
        found => {
            return Err(SnapshotError::BadDump {
                store: store.to_string(),
                path: clone.name.clone().into(),
                message: match found {
                    None => "the snapshot's clone database is gone".into(),
                    Some(_) => "a database of that name was made after the snapshot (its OID \
                                differs): it is not the snapshot's"
                        .into(),
                },
            })
        }
    };
    match changed(clone, &row) {
        None => Ok(()),
        Some(reason) => Err(SnapshotError::CloneChanged {
            store: store.to_string(),
            database: clone.name.clone(),
            reason: reason.into(),
        }),
    }
}

/// Why the clone's row does not prove it unchanged since the snapshot; None: it does.
fn changed(clone: &CloneDb, row: &Row) -> Option<&'static str> {
    let Some(xid) = clone.xid else {
        return Some(
            "the snapshot recorded no transaction id for it (an earlier stalwart-upgrade made \
             it), so nothing proves it unchanged",
        );
    };
    if row.allow_conn {
        Some("it accepts connections")
    } else if row.conn_limit == -2 {
        Some("it is invalid: a DROP DATABASE of it was interrupted")
    } else if row.xmin != xid as u32 {
        Some(
            "its pg_database row was written since (ALTER DATABASE: opened to connections, \
             renamed, given to another owner, ...)",
        )
    } else if row.now.saturating_sub(xid) >= 1 << 32 {
        Some(
            "more than 2^32 transactions ran since the snapshot, so its transaction id no \
             longer tells",
        )
    } else {
        None
    }
}

/// Server stopped. Makes the store's database the snapshot's data again: a fresh copy of the
/// clone is built next to it (the live database is untouched until then), then one transaction
/// swaps the names. The snapshot stays as it was, for another restore. Returns the databases
/// the restore replaced (this run's and an interrupted run's), each under a name of its own.
///
/// Resumable: an unfinished copy of an interrupted run is dropped and built again; a database
/// an interrupted run swapped out is renamed to its kept name first.
///
/// The caller has made sure `clone` is the snapshot's ([`check`]), for every store before any
/// is changed.
pub(crate) fn restore(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    snapshot_id: &str,
    clone: &CloneDb,
) -> Result<Vec<CloneDb>, SnapshotError> {
    let live = &conn.database;
    let key = format!("{snapshot_id}/{store}");
    let staging = name_for(live, &key, Purpose::Restore);
    let displaced = name_for(live, &key, Purpose::Displaced);
    let mut kept = Vec::new();
    kept.extend(keep_displaced(store, conn, run_as, &displaced)?);
    copy_db(store, conn, run_as, &clone.name, &staging)?;
    // The clone unchanged now proves the copy was made from the snapshot's data: whoever
    // opened it in between (its owner may) has rewritten its row for good.
    if let Err(e) = check(store, conn, run_as, clone) {
        let _ = drop_db(store, conn, run_as, &staging);
        return Err(e);
    }
    let swap = if oid_of(store, conn, run_as, live)?.is_some() {
        vec![
            "BEGIN".to_string(),
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(live),
                ident(&displaced)
            ),
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(&staging),
                ident(live)
            ),
            format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", ident(live)),
            "COMMIT".to_string(),
        ]
    } else {
        vec![
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(&staging),
                ident(live)
            ),
            format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", ident(live)),
        ]
    };
    // psql sends each -c on its own; BEGIN/COMMIT as separate commands make one transaction.
    if let Err(e) = run(store, conn, run_as, "swap the restored database in", &swap) {
        let _ = drop_db(store, conn, run_as, &staging);
        return Err(e);
    }
    kept.extend(keep_displaced(store, conn, run_as, &displaced)?);
    Ok(kept)
}

/// The swapped-out database under `displaced` gets the name it is kept under (unique by its
/// OID), so the next restore of the same snapshot finds `displaced` free.
fn keep_displaced(
    store: &str,
    conn: &SqlConn,
    run_as: sql::RunAs,
    displaced: &str,
) -> Result<Option<CloneDb>, SnapshotError> {
    let Some(oid) = oid_of(store, conn, run_as, displaced)? else {
        return Ok(None);
    };
    let name = name_for(&conn.database, &format!("{displaced}:{oid}"), Purpose::Kept);
    // One transaction, the row read inside it: the kept database is closed when its new name
    // appears, and the transaction id recorded is the one that closed it.
    let out = run(
        store,
        conn,
        run_as,
        "keep the replaced database",
        &[
            "BEGIN".to_string(),
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(displaced),
                ident(&name)
            ),
            format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", ident(&name)),
            row_query(&name),
            "COMMIT".to_string(),
        ],
    )?;
    recorded(store, &name, &out).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_ours_distinct_and_fit_postgresql_identifiers() {
        let long = "d".repeat(200);
        let a = name_for(&long, "20261201T101010Z-0.15.4", Purpose::Snapshot);
        let b = name_for(&long, "20261201T101010Z-0.15.4-2", Purpose::Snapshot);
        assert!(a.len() <= 63, "{a}");
        assert_ne!(a, b);
        assert!(a.contains("_su_snap_"), "{a}");
        assert_ne!(
            name_for("mail", "x", Purpose::Restore),
            name_for("mail", "x", Purpose::Displaced)
        );
        assert!(sql::check_value("s", "database", &a).is_ok());
    }

    fn row(xmin: u32, now: u64) -> Row {
        Row {
            oid: 16389,
            xmin,
            allow_conn: false,
            conn_limit: -1,
            now,
        }
    }

    #[test]
    fn the_row_parses_and_its_xmin_gets_its_epoch() {
        assert_eq!(parse_row("16389|729|f|-1|730"), Some(row(729, 730)));
        assert_eq!(parse_row("\n16389|729|f|-1|730\n"), Some(row(729, 730)));
        assert_eq!(parse_row("16389|729|f|-1"), None);
        assert_eq!(parse_row(""), None);
        assert_eq!(row(729, 730).full_xmin(), 729);
        // Inside the transaction that wrote it, `now` is that transaction's own id.
        assert_eq!(row(737, 737).full_xmin(), 737);
        // Across an epoch: xmin 4294967290 in epoch 2, read at epoch 3's id 5.
        let now = (3u64 << 32) + 5;
        assert_eq!(
            row(4_294_967_290, now).full_xmin(),
            (2u64 << 32) + 4_294_967_290
        );
    }

    #[test]
    fn only_the_recorded_row_of_a_closed_valid_clone_proves_it_unchanged() {
        let clone = CloneDb {
            name: "mail_su_snap_0".into(),
            oid: 16389,
            xid: Some(729),
        };
        assert_eq!(changed(&clone, &row(729, 800)), None);
        // Opened, changed and closed again: a new row version.
        assert!(changed(&clone, &row(732, 800)).is_some_and(|r| r.contains("ALTER")));
        let open = Row {
            allow_conn: true,
            ..row(729, 800)
        };
        assert!(changed(&clone, &open).is_some());
        let invalid = Row {
            conn_limit: -2,
            ..row(729, 800)
        };
        assert!(changed(&clone, &invalid).is_some());
        // The same 32 bits one epoch later are another transaction's.
        assert!(changed(&clone, &row(729, 729 + (1 << 32))).is_some());
        let unrecorded = CloneDb { xid: None, ..clone };
        assert!(changed(&unrecorded, &row(729, 800)).is_some());
    }

    #[test]
    fn quoting_doubles_the_quote_characters() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("a'b"), "'a''b'");
    }
}
