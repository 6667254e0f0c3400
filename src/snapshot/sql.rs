//! Logical snapshots through external tools: pg_dump / pg_restore, mariadb-dump / mariadb, and
//! the server's own `--export` / `--import`.
//!
//! Passwords go to the child only, in its environment (PGPASSWORD, MYSQL_PWD): never on a
//! command line (visible in /proc/*/cmdline to every user), never in our logs or errors.

use super::{fsops, SnapshotError};
use crate::serverconfig::SqlConn;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Finds the first of `names` in PATH (and the usual system dirs, as hooks may run with a
/// minimal PATH).
pub(crate) fn find_program(names: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    for name in names {
        for d in &dirs {
            let p = d.join(name);
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

/// Runs a prepared command; on failure the error carries the last lines of its stderr, with
/// the password (if any) cut out in case a tool echoes it.
fn run(
    store: &str,
    mut cmd: Command,
    secret: Option<&str>,
    what: &str,
) -> Result<Vec<u8>, SnapshotError> {
    let tool = cmd.get_program().to_string_lossy().to_string();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().map_err(|e| SnapshotError::Tool {
        store: store.to_string(),
        tool: tool.clone(),
        what: what.to_string(),
        detail: format!("cannot run it: {e}"),
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        stderr = stderr.replace(s, "<redacted>");
    }
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(SnapshotError::Tool {
        store: store.to_string(),
        tool,
        what: what.to_string(),
        detail: format!("{}: {}", out.status, tail.join(" | ")),
    })
}

// ---------------------------------------------------------------- PostgreSQL

fn pg_command(program: &Path, conn: &SqlConn) -> Command {
    let mut c = Command::new(program);
    c.env_remove("PGPASSWORD");
    c.arg(format!("--host={}", conn.host));
    if let Some(p) = conn.port {
        c.arg(format!("--port={p}"));
    }
    if let Some(u) = &conn.user {
        c.arg(format!("--username={u}"));
    }
    // -w: never prompt (we may run under dpkg without a terminal).
    c.arg("--no-password");
    if let Some(pw) = &conn.password {
        c.env("PGPASSWORD", &pw.0);
    }
    if conn.tls {
        c.env("PGSSLMODE", "require");
    }
    c
}

/// `pg_dump --format=custom`: a consistent dump (one snapshot transaction), compressed, that
/// pg_restore can load selectively and with `--clean`.
pub(crate) fn pg_dump(store: &str, conn: &SqlConn, out: &Path) -> Result<(), SnapshotError> {
    let prog = need_program(store, &["pg_dump"], "postgresql-client")?;
    let mut c = pg_command(&prog, conn);
    c.arg("--format=custom")
        .arg(OsString::from(format!("--file={}", out.display())))
        .arg(format!("--dbname={}", conn.database));
    run(
        store,
        c,
        conn.password.as_ref().map(|s| s.0.as_str()),
        "dump the database",
    )?;
    Ok(())
}

/// Restore = `pg_restore --clean --if-exists` turned into SQL and run by `psql` in ONE
/// transaction, after a prelude that drops every table the store's user owns: a newer server may
/// have created tables the old one does not know, and `--clean` only drops what is in the dump.
/// Any error (ON_ERROR_STOP) rolls the whole thing back, leaving the database as it was.
pub(crate) fn pg_restore(store: &str, conn: &SqlConn, dump: &Path) -> Result<(), SnapshotError> {
    check_magic(store, dump, b"PGDMP")?;
    let restore_prog = need_program(store, &["pg_restore"], "postgresql-client")?;
    let psql_prog = need_program(store, &["psql"], "postgresql-client")?;
    let mut gen = Command::new(&restore_prog);
    gen.args(["--clean", "--if-exists", "--file=-"]).arg(dump);
    gen.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut gen_child = gen.spawn().map_err(|e| SnapshotError::Tool {
        store: store.to_string(),
        tool: restore_prog.display().to_string(),
        what: "read the dump".into(),
        detail: format!("cannot run it: {e}"),
    })?;
    let Some(sql_out) = gen_child.stdout.take() else {
        return Err(SnapshotError::Other("pg_restore: no stdout".into()));
    };
    let mut c = pg_command(&psql_prog, conn);
    c.args(["-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("--dbname={}", conn.database))
        .args(["-c", PG_DROP_OWNED_TABLES, "-f", "-"])
        .stdin(Stdio::from(sql_out));
    let res = run(
        store,
        c,
        conn.password.as_ref().map(|s| s.0.as_str()),
        "restore the database",
    );
    let gen_out = gen_child.wait_with_output();
    res?;
    match gen_out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(SnapshotError::Tool {
            store: store.to_string(),
            tool: restore_prog.display().to_string(),
            what: "read the dump".into(),
            detail: format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }),
        Err(e) => Err(SnapshotError::Tool {
            store: store.to_string(),
            tool: restore_prog.display().to_string(),
            what: "read the dump".into(),
            detail: e.to_string(),
        }),
    }
}

const PG_DROP_OWNED_TABLES: &str = "DO $$ DECLARE r record; BEGIN \
    FOR r IN SELECT schemaname, tablename FROM pg_tables \
      WHERE tableowner = current_user AND schemaname NOT IN ('pg_catalog','information_schema') \
    LOOP EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE', r.schemaname, r.tablename); \
    END LOOP; END $$;";

/// Refuses a dump that is not what the tool writes, before the database is touched.
fn check_magic(store: &str, dump: &Path, magic: &[u8]) -> Result<(), SnapshotError> {
    use std::io::Read;
    let mut head = vec![0u8; magic.len()];
    let ok = fs_err::File::open(dump)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == magic;
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::BadDump {
            store: store.to_string(),
            path: dump.to_owned(),
            message: "it does not start like a pg_dump custom-format file".into(),
        })
    }
}

pub(crate) fn pg_size(conn: &SqlConn) -> Option<u64> {
    let prog = find_program(&["psql"])?;
    let mut c = pg_command(&prog, conn);
    c.args([
        "-X",
        "-A",
        "-t",
        "-c",
        "SELECT pg_database_size(current_database())",
    ])
    .arg(format!("--dbname={}", conn.database));
    let out = run("", c, None, "size").ok()?;
    String::from_utf8_lossy(&out).trim().parse().ok()
}

// ---------------------------------------------------------------- MySQL / MariaDB

fn my_command(program: &Path, conn: &SqlConn) -> Command {
    let mut c = Command::new(program);
    c.env_remove("MYSQL_PWD");
    // --no-defaults: only what the server's config says, not root's ~/.my.cnf.
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
pub(crate) fn mysql_dump(store: &str, conn: &SqlConn, out: &Path) -> Result<(), SnapshotError> {
    let prog = need_program(
        store,
        &["mariadb-dump", "mysqldump"],
        "mariadb-client (or mysql-client)",
    )?;
    let mut c = my_command(&prog, conn);
    c.args([
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--hex-blob",
        "--add-drop-table",
    ])
    .arg(OsString::from(format!("--result-file={}", out.display())))
    .arg(&conn.database);
    run(
        store,
        c,
        conn.password.as_ref().map(|s| s.0.as_str()),
        "dump the database",
    )?;
    Ok(())
}

/// Pipes the dump into `mariadb`, after dropping every table and view of the database (a newer
/// server may have created tables the old one does not know; the dump only drops its own). The
/// client stops at the first error (no --force). MySQL DDL is not transactional, so the dump is
/// checked to be complete (mariadb-dump's "-- Dump completed" trailer) before anything is dropped.
pub(crate) fn mysql_restore(store: &str, conn: &SqlConn, dump: &Path) -> Result<(), SnapshotError> {
    check_mysql_trailer(store, dump)?;
    let prog = need_program(
        store,
        &["mariadb", "mysql"],
        "mariadb-client (or mysql-client)",
    )?;
    let secret = conn.password.as_ref().map(|s| s.0.as_str());

    let mut list = my_command(&prog, conn);
    list.args([
        "-N",
        "-B",
        "-e",
        "SELECT table_type, table_name FROM information_schema.tables \
         WHERE table_schema=DATABASE()",
    ])
    .arg(&conn.database);
    let listed = run(store, list, secret, "list the tables")?;
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

    let mut c = my_command(&prog, conn);
    c.arg("--binary-mode")
        .arg(format!("--database={}", conn.database));
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let tool = prog.display().to_string();
    let tool_err = |detail: String| SnapshotError::Tool {
        store: store.to_string(),
        tool: tool.clone(),
        what: "restore the database".into(),
        detail,
    };
    let mut child = c
        .spawn()
        .map_err(|e| tool_err(format!("cannot run it: {e}")))?;
    let Some(mut stdin) = child.stdin.take() else {
        return Err(tool_err("no stdin".into()));
    };
    let dump_path = dump.to_owned();
    // Written from a thread so a client that stops reading (error) cannot deadlock us.
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        use std::io::Write;
        stdin.write_all(prelude.as_bytes())?;
        let mut f = fs_err::File::open(&dump_path)?;
        std::io::copy(&mut f, &mut stdin)?;
        stdin.write_all(b"\nSET FOREIGN_KEY_CHECKS=1;\n")?;
        Ok(())
    });
    let out = child
        .wait_with_output()
        .map_err(|e| tool_err(e.to_string()))?;
    let written = writer.join();
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(s) = secret.filter(|s| !s.is_empty()) {
            stderr = stderr.replace(s, "<redacted>");
        }
        return Err(tool_err(format!("{}: {stderr}", out.status)));
    }
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(tool_err(format!("feeding the dump failed: {e}"))),
        Err(_) => Err(tool_err("feeding the dump failed".into())),
    }
}

fn check_mysql_trailer(store: &str, dump: &Path) -> Result<(), SnapshotError> {
    use std::io::{Read, Seek, SeekFrom};
    let tail = (|| -> std::io::Result<String> {
        let mut f = fs_err::File::open(dump)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(256)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).to_string())
    })();
    match tail {
        Ok(t) if t.contains("-- Dump completed") => Ok(()),
        _ => Err(SnapshotError::BadDump {
            store: store.to_string(),
            path: dump.to_owned(),
            message: "no \"-- Dump completed\" trailer: the dump was truncated".into(),
        }),
    }
}

pub(crate) fn mysql_size(conn: &SqlConn) -> Option<u64> {
    let prog = find_program(&["mariadb", "mysql"])?;
    let mut c = my_command(&prog, conn);
    c.args([
        "-N",
        "-B",
        "-e",
        "SELECT COALESCE(SUM(data_length+index_length),0) FROM information_schema.tables \
         WHERE table_schema=DATABASE()",
    ])
    .arg(&conn.database);
    let out = run("", c, None, "size").ok()?;
    String::from_utf8_lossy(&out).trim().parse().ok()
}

// ---------------------------------------------------------------- server export / import

/// The server's own logical export (facts: `--export DIR`, server stopped, exit 0 ok / 1
/// error). CONFIG_PATH is removed from the child's environment because the server ignores its
/// arguments when it is set (facts).
///
/// The child runs as the owner of the config (the server's user, when that is not root), so files
/// the store libraries create next to the data (logs, new tables on import) are not left owned by
/// root where the server could not open them. That user cannot enter our 0700 snapshot root, so
/// it works in a private 0700 staging dir of its own under /var/tmp, which we move into the
/// snapshot (export) or fill from it (import).
pub(crate) fn server_export_import(
    store: &str,
    binary: &Path,
    config: &Path,
    flag: &str,
    dir: &Path,
    export_types: Option<&str>,
) -> Result<(), SnapshotError> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    let run_as = if unsafe { libc::geteuid() } == 0 {
        std::fs::metadata(config)
            .ok()
            .filter(|m| m.uid() != 0)
            .map(|m| (m.uid(), m.gid()))
    } else {
        None
    };
    let export = flag == "--export";
    let what = if export {
        "export the data (server --export)"
    } else {
        "import the data (server --import)"
    };
    let command = |target: &Path| {
        let mut c = Command::new(binary);
        c.env_remove("CONFIG_PATH")
            .arg(OsString::from(format!("--config={}", config.display())))
            .arg(flag)
            .arg(target);
        if let Some(t) = export_types {
            c.env("EXPORT_TYPES", t);
        }
        if let Some((uid, gid)) = run_as {
            c.uid(uid).gid(gid);
        }
        c
    };
    let Some((uid, gid)) = run_as else {
        run(store, command(dir), None, what)?;
        return Ok(());
    };

    let staging = tempfile::Builder::new()
        .prefix(".stalwart-upgrade-export-")
        .tempdir_in("/var/tmp")
        .map_err(|e| fsops::io_err("create a staging directory in", Path::new("/var/tmp"), e))?;
    let work = staging.path().join("data");
    if export {
        fsops::ensure_private_dir(&work)?;
    } else {
        let mut warnings = Vec::new();
        fsops::copy_tree(dir, &work, &|_| false, &mut warnings)?;
    }
    chown_tree(staging.path(), uid, gid)?;
    run(store, command(&work), None, what)?;
    if export {
        chown_tree(&work, 0, 0)?;
        // `dir` is the empty store directory create() made: replace it with the export.
        fsops::remove_tree(dir)?;
        if std::fs::rename(&work, dir).is_err() {
            let mut warnings = Vec::new();
            fsops::copy_tree(&work, dir, &|_| false, &mut warnings)?;
        }
        fs_err::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| fsops::io_err("chmod", dir, e))?;
    }
    Ok(())
}

/// lchown of every entry below (and including) `path`.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), SnapshotError> {
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .map_err(|e| fsops::io_err("chown", &p, e))?;
        let is_dir = std::fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .map_err(|e| fsops::io_err("inspect", &p, e))?;
        if is_dir {
            for e in fs_err::read_dir(&p).map_err(|e| fsops::io_err("list", &p, e))? {
                let e = e.map_err(|e| fsops::io_err("list", &p, e))?;
                stack.push(e.path());
            }
        }
    }
    Ok(())
}
