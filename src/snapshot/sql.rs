//! Logical snapshots through external tools: pg_dump / pg_restore, mariadb-dump / mariadb, and
//! the server's own `--export` / `--import`.
//!
//! Everything these tools are given comes from the server config, which the server's user can
//! edit; the tools run as root's children. So (security model, README "Security"):
//! - every value that reaches a command line is validated first ([`check_value`]: a strict
//!   character set, never a leading `-`), so a database named `--plugin-dir=/tmp/x` or
//!   `--result-file=/etc/passwd` is refused, not passed as an option;
//! - PostgreSQL gets one conninfo string we build and quote ourselves (`--dbname=host='..'
//!   dbname='..'`): libpq would otherwise expand a database name such as `x hostaddr=.. sslkey=..`
//!   into connection options;
//! - the environment is cleared (no PGPASSFILE, PGSERVICEFILE, HOME, MYSQL_HOME of root's), the
//!   option files are pointed at nothing (`--no-defaults`, PGPASSFILE=/dev/null, ...), and the
//!   password travels in the child's environment only (PGPASSWORD, MYSQL_PWD: never on a command
//!   line, which every user can read in /proc);
//! - the clients run as the identity that controls the config (the server's user), not as root:
//!   they can do nothing the server itself could not. Dumps go to their stdout and restores come
//!   from their stdin, so they never open a file of ours.

use super::{fsops, SnapshotError};
use crate::fsutil::{Dir, Kind};
use crate::serverconfig::SqlConn;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The identity a tool runs as: None is the helper itself (root), used only when root controls
/// the config too.
pub(crate) type RunAs = Option<(u32, u32)>;

/// Finds the first of `names` in the usual system directories (root's PATH is not inherited by
/// the cleared environment, and package hooks may run with a minimal one).
pub(crate) fn find_program(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        for d in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
            let p = Path::new(d).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn need_program(store: &str, names: &[&str], package: &str) -> Result<PathBuf, SnapshotError> {
    find_program(names).ok_or_else(|| SnapshotError::ToolMissing {
        store: store.to_string(),
        tool: names.join(" or "),
        package: package.to_string(),
    })
}

/// A value from the server config that goes to a tool (database, user, host): letters, digits
/// and `_ . - $` (hosts also `:` and `/` for sockets), at most 255 bytes, not starting with `-`.
pub(crate) fn check_value(store: &str, what: &str, value: &str) -> Result<(), SnapshotError> {
    let extra: &[char] = match what {
        "host" => &['_', '.', '-', ':', '/', '[', ']'],
        _ => &['_', '.', '-', '$'],
    };
    let ok = !value.is_empty()
        && value.len() <= 255
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::UnsafeValue {
            store: store.to_string(),
            what: what.to_string(),
        })
    }
}

fn check_conn(store: &str, conn: &SqlConn) -> Result<(), SnapshotError> {
    check_value(store, "host", &conn.host)?;
    check_value(store, "database", &conn.database)?;
    if let Some(u) = &conn.user {
        check_value(store, "user", u)?;
    }
    Ok(())
}

/// A command with a cleared environment (PATH and a locale only), run as `run_as`, confined
/// (`crate::child::confine`: own session, no terminal, no new privileges).
fn base_command(program: &Path, run_as: RunAs) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", "/nonexistent");
    if let Some((uid, gid)) = run_as {
        use std::os::unix::process::CommandExt;
        c.uid(uid).gid(gid);
    }
    crate::child::confine(&mut c);
    c
}

fn tool_err(store: &str, tool: &Path, what: &str, detail: String) -> SnapshotError {
    SnapshotError::Tool {
        store: store.to_string(),
        tool: tool.display().to_string(),
        what: what.to_string(),
        detail,
    }
}

/// The last lines of a tool's stderr, with the password cut out in case it echoes it.
fn stderr_tail(stderr: &[u8], secret: Option<&str>) -> String {
    let mut text = crate::child::printable(&String::from_utf8_lossy(stderr));
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(s, "<redacted>");
    }
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Runs `cmd` with `input` on its stdin (None: nothing) and its stdout into `output` (None:
/// collected and returned). Pipes are served by threads, so a tool that stops reading or writes
/// a lot of stderr cannot deadlock us.
fn run_piped(
    store: &str,
    mut cmd: Command,
    secret: Option<&str>,
    what: &str,
    input: Option<Box<dyn Read + Send>>,
    output: Option<&mut dyn Write>,
) -> Result<Vec<u8>, SnapshotError> {
    let tool = PathBuf::from(cmd.get_program());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| tool_err(store, &tool, what, format!("cannot run it: {e}")))?;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (collected, fed, err_bytes) = std::thread::scope(|s| {
        let feeder = s.spawn(move || -> std::io::Result<()> {
            if let (Some(mut src), Some(mut sink)) = (input, stdin) {
                std::io::copy(&mut src, &mut sink)?;
            }
            Ok(())
        });
        let err_reader = s.spawn(move || {
            let mut b = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_end(&mut b);
            }
            b
        });
        let mut collected = Vec::new();
        let copied = match (stdout.as_mut(), output) {
            (Some(out), Some(sink)) => {
                std::io::copy(out, &mut crate::progress::Counted(sink)).map(|_| ())
            }
            (Some(out), None) => out.read_to_end(&mut collected).map(|_| ()),
            _ => Ok(()),
        };
        let fed = feeder.join().unwrap_or(Ok(()));
        let err_bytes = err_reader.join().unwrap_or_default();
        (copied.map(|_| collected), fed, err_bytes)
    });
    let status = child
        .wait()
        .map_err(|e| tool_err(store, &tool, what, e.to_string()))?;
    if !status.success() {
        return Err(tool_err(
            store,
            &tool,
            what,
            format!("{status}: {}", stderr_tail(&err_bytes, secret)),
        ));
    }
    let collected = collected.map_err(|e| {
        if fsops::is_no_space(&e) {
            tool_err(
                store,
                &tool,
                what,
                "No space left on device (ENOSPC)".into(),
            )
        } else {
            tool_err(
                store,
                &tool,
                what,
                format!("writing its output failed: {e}"),
            )
        }
    })?;
    fed.map_err(|e| tool_err(store, &tool, what, format!("feeding its input failed: {e}")))?;
    Ok(collected)
}

// ---------------------------------------------------------------- PostgreSQL

/// A libpq conninfo value, single-quoted with `\` and `'` escaped (libpq's own rules).
fn pq_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The whole connection as one conninfo we build: nothing of it can be expanded into other
/// options, whatever the config says.
pub(crate) fn pg_conninfo(conn: &SqlConn) -> String {
    let mut parts = vec![
        format!("host={}", pq_quote(&conn.host)),
        format!("dbname={}", pq_quote(&conn.database)),
    ];
    if let Some(p) = conn.port {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = &conn.user {
        parts.push(format!("user={}", pq_quote(u)));
    }
    if conn.tls {
        parts.push("sslmode=require".into());
    }
    parts.join(" ")
}

fn pg_command(program: &Path, conn: &SqlConn, run_as: RunAs) -> Command {
    let mut c = base_command(program, run_as);
    // No option file of anyone's: only what the config says.
    c.env("PGPASSFILE", "/dev/null")
        .env("PGSERVICEFILE", "/dev/null")
        .env("PGSYSCONFDIR", "/nonexistent")
        .env("PGCONNECT_TIMEOUT", "30");
    if let Some(pw) = &conn.password {
        c.env("PGPASSWORD", &pw.0);
    }
    // -w: never prompt (we may run under dpkg without a terminal).
    c.arg("--no-password");
    c
}

fn secret(conn: &SqlConn) -> Option<&str> {
    conn.password.as_ref().map(|s| s.0.as_str())
}

/// `pg_dump --format=custom --compress=0` to `out`: a consistent dump (one snapshot
/// transaction) that pg_restore can load with `--clean`. Uncompressed: it runs while the server
/// is stopped, and zlib made pg_dump CPU-bound at about 18 MB/s on the 2-core machine (4 GiB of
/// mail took 4 minutes), while Stalwart's blobs are mostly compressed already; the space check
/// counts the database's size either way.
pub(crate) fn pg_dump(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    out: &mut dyn Write,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    let prog = need_program(store, &["pg_dump"], "postgresql-client")?;
    let mut c = pg_command(&prog, conn, run_as);
    c.args(["--format=custom", "--compress=0"])
        .arg(format!("--dbname={}", pg_conninfo(conn)));
    run_piped(store, c, secret(conn), "dump the database", None, Some(out))?;
    Ok(())
}

/// Restore = `pg_restore --clean --if-exists` turned into SQL and run by `psql` in ONE
/// transaction, after a prelude that drops every table the store's user owns: a newer server may
/// have created tables the old one does not know, and `--clean` only drops what is in the dump.
/// Any error (ON_ERROR_STOP) rolls the whole thing back, leaving the database as it was.
pub(crate) fn pg_restore(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    dump: std::fs::File,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    check_pg_magic(store, &dump)?;
    let restore_prog = need_program(store, &["pg_restore"], "postgresql-client")?;
    let psql_prog = need_program(store, &["psql"], "postgresql-client")?;
    // pg_restore turns the dump (on its stdin) into SQL on its stdout, which is psql's stdin.
    let mut gen = base_command(&restore_prog, run_as);
    gen.args(["--clean", "--if-exists", "--file=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut gen_child = gen.spawn().map_err(|e| {
        tool_err(
            store,
            &restore_prog,
            "read the dump",
            format!("cannot run it: {e}"),
        )
    })?;
    let (Some(mut gen_in), Some(sql_out), Some(mut gen_err)) = (
        gen_child.stdin.take(),
        gen_child.stdout.take(),
        gen_child.stderr.take(),
    ) else {
        return Err(tool_err(
            store,
            &restore_prog,
            "read the dump",
            "no pipes".into(),
        ));
    };
    let mut c = pg_command(&psql_prog, conn, run_as);
    c.args(["-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("--dbname={}", pg_conninfo(conn)))
        .args(["-c", PG_DROP_OWNED_TABLES, "-f", "-"])
        .stdin(Stdio::from(sql_out));
    let (res, gen_errs) = std::thread::scope(|s| {
        let mut dump = dump;
        let feeder = s.spawn(move || std::io::copy(&mut dump, &mut gen_in).map(|_| ()));
        let errs = s.spawn(move || {
            let mut b = Vec::new();
            let _ = gen_err.read_to_end(&mut b);
            b
        });
        let res = run_piped(store, c, secret(conn), "restore the database", None, None);
        let _ = feeder.join();
        (res, errs.join().unwrap_or_default())
    });
    let gen_status = gen_child.wait();
    res?;
    match gen_status {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(tool_err(
            store,
            &restore_prog,
            "read the dump",
            format!("{st}: {}", stderr_tail(&gen_errs, None)),
        )),
        Err(e) => Err(tool_err(
            store,
            &restore_prog,
            "read the dump",
            e.to_string(),
        )),
    }
}

/// Runs `statements` with psql on database `dbname` of `conn`'s server (each its own
/// transaction: CREATE and DROP DATABASE may not run inside one), stopping at the first error.
/// Returns what they print, unaligned and without headers.
pub(crate) fn pg_run(
    store: &str,
    conn: &SqlConn,
    dbname: &str,
    run_as: RunAs,
    what: &str,
    statements: &[String],
) -> Result<String, SnapshotError> {
    check_conn(store, conn)?;
    check_value(store, "database", dbname)?;
    let prog = need_program(store, &["psql"], "postgresql-client")?;
    let on = SqlConn {
        database: dbname.to_string(),
        ..conn.clone()
    };
    let mut c = pg_command(&prog, &on, run_as);
    c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("--dbname={}", pg_conninfo(&on)));
    for s in statements {
        c.arg("-c").arg(s);
    }
    let out = run_piped(store, c, secret(conn), what, None, None)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Refuses a dump that is not what pg_dump writes, before the database is touched.
pub(crate) fn check_pg_magic(store: &str, dump: &std::fs::File) -> Result<(), SnapshotError> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 5];
    if dump.read_exact_at(&mut head, 0).is_ok() && &head == b"PGDMP" {
        return Ok(());
    }
    Err(SnapshotError::BadDump {
        store: store.to_string(),
        path: PathBuf::from("dump.pgcustom"),
        message: "it does not start like a pg_dump custom-format file".into(),
    })
}

const PG_DROP_OWNED_TABLES: &str = "DO $$ DECLARE r record; BEGIN \
    FOR r IN SELECT schemaname, tablename FROM pg_tables \
      WHERE tableowner = current_user AND schemaname NOT IN ('pg_catalog','information_schema') \
    LOOP EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE', r.schemaname, r.tablename); \
    END LOOP; END $$;";

pub(crate) fn pg_size(conn: &SqlConn, run_as: RunAs) -> Option<u64> {
    let q = "SELECT pg_database_size(current_database())".to_string();
    pg_run("", conn, &conn.database, run_as, "size", &[q])
        .ok()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- MySQL / MariaDB

fn my_command(program: &Path, conn: &SqlConn, run_as: RunAs) -> Command {
    let mut c = base_command(program, run_as);
    // --no-defaults (it must come first): only what the server's config says, no option file.
    c.arg("--no-defaults");
    if conn.host.starts_with('/') {
        c.arg(format!("--socket={}", conn.host))
            .arg("--protocol=socket");
    } else {
        c.arg(format!("--host={}", conn.host));
        if let Some(p) = conn.port {
            c.arg(format!("--port={p}")).arg("--protocol=tcp");
        }
    }
    if let Some(u) = &conn.user {
        c.arg(format!("--user={u}"));
    }
    if let Some(pw) = &conn.password {
        c.env("MYSQL_PWD", &pw.0);
    }
    if conn.tls {
        let is_mariadb = program
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("mariadb"));
        c.arg(if is_mariadb {
            "--ssl"
        } else {
            "--ssl-mode=REQUIRED"
        });
    }
    c
}

/// `--single-transaction`: a consistent InnoDB snapshot without locking tables.
pub(crate) fn mysql_dump(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    out: &mut dyn Write,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    let prog = need_program(
        store,
        &["mariadb-dump", "mysqldump"],
        "mariadb-client (or mysql-client)",
    )?;
    let mut c = my_command(&prog, conn, run_as);
    c.args([
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--hex-blob",
        "--add-drop-table",
        "--",
    ])
    .arg(&conn.database);
    run_piped(store, c, secret(conn), "dump the database", None, Some(out))?;
    Ok(())
}

/// Pipes the dump into `mariadb`, after dropping every table and view of the database (a newer
/// server may have created tables the old one does not know; the dump only drops its own). The
/// client stops at the first error (no --force). MySQL DDL is not transactional, so the dump is
/// checked to be complete (mariadb-dump's "-- Dump completed" trailer) before anything is dropped.
pub(crate) fn mysql_restore(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    dump: std::fs::File,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    check_mysql_trailer(store, &dump)?;
    let prog = need_program(
        store,
        &["mariadb", "mysql"],
        "mariadb-client (or mysql-client)",
    )?;
    let mut list = my_command(&prog, conn, run_as);
    list.args([
        "-N",
        "-B",
        "-e",
        "SELECT table_type, table_name FROM information_schema.tables \
         WHERE table_schema=DATABASE()",
    ])
    .arg(format!("--database={}", conn.database));
    let listed = run_piped(store, list, secret(conn), "list the tables", None, None)?;
    let mut prelude = String::from("SET FOREIGN_KEY_CHECKS=0;\n");
    for line in String::from_utf8_lossy(&listed).lines() {
        let Some((ty, name)) = line.split_once('\t') else {
            continue;
        };
        let what = if ty == "VIEW" { "VIEW" } else { "TABLE" };
        prelude.push_str(&format!(
            "DROP {what} IF EXISTS `{}`;\n",
            name.replace('`', "``")
        ));
    }
    let mut c = my_command(&prog, conn, run_as);
    c.arg("--binary-mode")
        .arg(format!("--database={}", conn.database));
    let input = std::io::Cursor::new(prelude.into_bytes())
        .chain(dump)
        .chain(std::io::Cursor::new(
            b"\nSET FOREIGN_KEY_CHECKS=1;\n".to_vec(),
        ));
    run_piped(
        store,
        c,
        secret(conn),
        "restore the database",
        Some(Box::new(input)),
        None,
    )?;
    Ok(())
}

pub(crate) fn check_mysql_trailer(store: &str, dump: &std::fs::File) -> Result<(), SnapshotError> {
    use std::os::unix::fs::FileExt;
    let tail = (|| -> std::io::Result<String> {
        let len = dump.metadata()?.len();
        let start = len.saturating_sub(256);
        let mut buf = vec![0u8; (len - start) as usize];
        dump.read_exact_at(&mut buf, start)?;
        Ok(String::from_utf8_lossy(&buf).to_string())
    })();
    match tail {
        Ok(t) if t.contains("-- Dump completed") => Ok(()),
        _ => Err(SnapshotError::BadDump {
            store: store.to_string(),
            path: PathBuf::from("dump.sql"),
            message: "no \"-- Dump completed\" trailer: the dump was truncated".into(),
        }),
    }
}

pub(crate) fn mysql_size(conn: &SqlConn, run_as: RunAs) -> Option<u64> {
    check_conn("", conn).ok()?;
    let prog = find_program(&["mariadb", "mysql"])?;
    let mut c = my_command(&prog, conn, run_as);
    c.args([
        "-N",
        "-B",
        "-e",
        "SELECT COALESCE(SUM(data_length+index_length),0) FROM information_schema.tables \
         WHERE table_schema=DATABASE()",
    ])
    .arg(format!("--database={}", conn.database));
    let out = run_piped("", c, secret(conn), "size", None, None).ok()?;
    String::from_utf8_lossy(&out).trim().parse().ok()
}

// ---------------------------------------------------------------- server export / import

/// Export or import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Export,
    Import,
}

/// The server's own logical export (facts: `--export DIR`, server stopped, exit 0 ok / 1
/// error), run by descriptor (`crate::child::Program`) with a cleared environment (CONFIG_PATH
/// would make the server ignore its arguments, facts) as `run_as`, which never is root unless
/// root controls the binary, the config and the data alike.
///
/// That user cannot enter our 0700 snapshot root, so it works in a staging directory under
/// /var/tmp: a root-owned 0711 directory holding one `data` directory of theirs. Export: they
/// fill it, then root copies it into the snapshot through descriptors (root-owned copies; a
/// symlink they planted stays a symlink, nothing outside is read). Import: root builds `data`
/// from the snapshot with their ownership, then they import it.
pub(crate) fn server_export_import(
    store: &str,
    program: &crate::child::Program,
    config: &Path,
    direction: Direction,
    snapshot: (&Dir, &OsStr),
    export_types: Option<&str>,
    run_as: RunAs,
) -> Result<(), SnapshotError> {
    let what = match direction {
        Direction::Export => "export the data (server --export)",
        Direction::Import => "import the data (server --import)",
    };
    let staging = tempfile::Builder::new()
        .prefix(".stalwart-upgrade-export-")
        .tempdir_in("/var/tmp")
        .map_err(|e| fsops::io_err("create a staging directory in", Path::new("/var/tmp"), e))?;
    let staging_dir = Dir::open(staging.path())?;
    staging_dir.set_mode(if run_as.is_some() { 0o711 } else { 0o700 })?;
    let (parent, name) = snapshot;
    match direction {
        Direction::Export => {
            let work = staging_dir.create_dir("data", 0o700)?;
            if let Some((uid, gid)) = run_as {
                work.set_owner(uid, gid)?;
            }
        }
        Direction::Import => {
            let src = parent.open_dir(name)?;
            let how = fsops::TreeCopy {
                link: &|_| false,
                owner: run_as,
                hash_links: None,
            };
            let mut warnings = Vec::new();
            fsops::copy_tree(&src, &staging_dir, OsStr::new("data"), &how, &mut warnings)?;
        }
    }
    let flag = match direction {
        Direction::Export => "--export",
        Direction::Import => "--import",
    };
    let mut c = program.command(run_as);
    c.arg(OsString::from(format!("--config={}", config.display())))
        .arg(flag)
        .arg(staging.path().join("data"));
    if let Some(t) = export_types {
        c.env("EXPORT_TYPES", t);
    }
    run_piped(store, c, None, what, None, None)?;
    if direction == Direction::Export {
        let work = staging_dir.open_dir("data")?;
        if work.meta()?.kind != Kind::Dir {
            return Err(tool_err(
                store,
                program.path(),
                what,
                "its output directory was replaced".into(),
            ));
        }
        let how = fsops::TreeCopy {
            link: &|_| false,
            owner: Some((0, 0)),
            hash_links: None,
        };
        let mut warnings = Vec::new();
        let (_, dst) = fsops::copy_tree(&work, parent, name, &how, &mut warnings)?;
        dst.set_mode(0o700)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_could_be_options_are_refused() {
        for bad in [
            "--plugin-dir=/opt/stalwart/data/p",
            "--result-file=/etc/passwd",
            "-e",
            "x y",
            "a'b",
            "host=evil",
            "",
            "db;drop",
        ] {
            assert!(check_value("s", "database", bad).is_err(), "{bad}");
        }
        for good in ["stalwart", "mail_db", "my-db", "db.v2", "a$b"] {
            check_value("s", "database", good).unwrap();
        }
        check_value("s", "host", "/run/postgresql").unwrap();
        check_value("s", "host", "[::1]").unwrap();
        assert!(check_value("s", "host", "-oProxyCommand=x").is_err());
        let e = check_value("pg", "database", "--x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg") && e.contains("database"), "{e}");
    }

    #[test]
    fn conninfo_is_quoted_and_complete() {
        let c = SqlConn {
            host: "db.example".into(),
            port: Some(5433),
            database: "x' host='evil".into(),
            user: Some("u".into()),
            password: None,
            tls: true,
        };
        let ci = pg_conninfo(&c);
        assert_eq!(
            ci,
            "host='db.example' dbname='x\\' host=\\'evil' port=5433 user='u' sslmode=require"
        );
    }
}
