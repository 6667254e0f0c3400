//! Snapshots of SQL stores against REAL PostgreSQL and MariaDB servers started by the tests
//! themselves (throw-away instances in temp dirs, unix sockets only, stopped on drop, also when
//! a test panics). Needs root (to run the servers as their system users).
//!
//! If a server is not installed the test FAILS (it does not skip): .ci/run must install the apt
//! packages `postgresql postgresql-client mariadb-server mariadb-client`.

use stalwart_upgrade::server::serverconfig::ServerConfig;
use stalwart_upgrade::server::serverenv::ServerEnv;
use stalwart_upgrade::store::snapshot::{SnapshotError, SnapshotMeta, Snapshots, StoreMethod};

/// What a restore does with the data it replaces: kept as a snapshot (the helper's default).
fn keep() -> stalwart_upgrade::store::snapshot::Displaced {
    stalwart_upgrade::store::snapshot::Displaced::Keep {
        origin: "replaced by a test restore".into(),
        version: "0.15.6".parse().unwrap(),
    }
}
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const PACKAGES: &str = "postgresql postgresql-client mariadb-server mariadb-client";

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        server_version: "0.15.5".parse().unwrap(),
        target_version: Some("0.16.18".parse().unwrap()),
        class: None,
        server_binary: PathBuf::from("/nonexistent/stalwart"),
    }
}

fn must(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A temp dir that the database's system user can enter.
fn shared_tempdir() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("su-sql-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

fn chown_to(path: &Path, user: &str) {
    must(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:{user}"))
            .arg(path),
    );
}

// ------------------------------------------------------------------ PostgreSQL

struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    _tmp: tempfile::TempDir,
}

impl Postgres {
    fn start() -> Postgres {
        Postgres::start_with(|_| String::new())
    }

    /// `options` gives more server options (`-c name=value ...`), from the instance's directory
    /// (files put there go to the postgres user with it).
    fn start_with(options: impl FnOnce(&Path) -> String) -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|rd| {
                let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
                v.sort();
                v.into_iter().rev().find(|b| b.join("initdb").is_file())
            })
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
                     .ci/run must `apt-get install -y {PACKAGES}`"
                )
            });
        assert!(
            which("pg_dump").is_some() && which("psql").is_some(),
            "pg_dump/psql missing: .ci/run must `apt-get install -y {PACKAGES}`"
        );
        let tmp = shared_tempdir();
        let data = tmp.path().join("pgdata");
        let sock = tmp.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        let pwfile = tmp.path().join("pw");
        std::fs::write(&pwfile, "super-pw\n").unwrap();
        let extra = options(tmp.path());
        chown_to(tmp.path(), "postgres");
        must(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .current_dir(tmp.path()),
        );
        let port = if extra.contains("listen_addresses") {
            // It listens on TCP: a port nobody else has (the default names only a socket file).
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port()
        } else {
            40000 + (std::process::id() % 20000) as u16
        };
        must(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(tmp.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-k {} -p {port} -c listen_addresses='' {extra}",
                    sock.display()
                ))
                .args(["-w", "start"])
                .current_dir(tmp.path()),
        );
        Postgres {
            bin,
            data,
            sock,
            port,
            _tmp: tmp,
        }
    }

    fn psql(&self, user: &str, pw: &str, db: &str, sql: &str) -> String {
        must(
            Command::new("psql")
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .arg(format!("--host={}", self.sock.display()))
                .arg(format!("--port={}", self.port))
                .arg(format!("--username={user}"))
                .arg(format!("--dbname={db}"))
                .args(["-c", sql])
                .env("PGPASSWORD", pw),
        )
        .trim()
        .to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn postgresql_dump_and_restore_with_a_real_server() {
    let pg = Postgres::start();
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE ROLE stalwart LOGIN PASSWORD 'pg-Secret-42'",
    );
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE DATABASE mail OWNER stalwart",
    );
    let st = |sql: &str| pg.psql("stalwart", "pg-Secret-42", "mail", sql);
    st("CREATE TABLE messages (id int PRIMARY KEY, body bytea NOT NULL)");
    st("INSERT INTO messages SELECT g, convert_to('message ' || g, 'UTF8') FROM generate_series(1, 500) g");
    let before = st("SELECT count(*), md5(string_agg(body::text, ',' ORDER BY id)) FROM messages");

    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("config.toml");
    // The password comes from the server unit's environment (Environment=), as systemd
    // reports it: never from the helper's own.
    let unit_env =
        |pw: &str| ServerEnv::from_unit(&[format!("SU_TEST_PG_PASSWORD={pw}")], &[], &[]);
    std::fs::write(
        &cfg_path,
        format!(
            "[storage]\ndata = \"pg\"\n[store.pg]\ntype = \"postgresql\"\nhost = \"{}\"\nport = {}\n\
             database = \"mail\"\nuser = \"stalwart\"\npassword = \"%{{env:SU_TEST_PG_PASSWORD}}%\"\n",
            pg.sock.display(),
            pg.port
        ),
    )
    .unwrap();
    let cfg = ServerConfig::load_with_env(&cfg_path, &unit_env("pg-Secret-42")).unwrap();
    let snaps =
        Snapshots::new(&tmp.path().join("snapshots")).with_server_env(unit_env("pg-Secret-42"));
    let plan = snaps.plan(&cfg).unwrap();
    assert_eq!(plan.stores[0].method, StoreMethod::PgDump);
    assert!(plan.stores[0].bytes_needed.unwrap_or(0) > 0, "{plan:?}");

    let m = snaps.create(&cfg, &meta()).unwrap();
    let manifest = std::fs::read_to_string(snaps.root.join(&m.id).join("manifest.json")).unwrap();
    assert!(
        !manifest.contains("pg-Secret-42"),
        "password leaked into the manifest"
    );
    assert!(m.stores[0].files.iter().any(|f| f.path == "dump.pgcustom"));
    snaps.hash(&m.id).unwrap();
    assert!(snaps.verify(&m.id).unwrap().ok());

    // The "newer server" migrates: rows gone and changed, a new table, a new column.
    st("DELETE FROM messages WHERE id > 100");
    st("UPDATE messages SET body = 'x'");
    st("ALTER TABLE messages ADD COLUMN schema6 int");
    st("CREATE TABLE only_in_016 (k int)");
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(
        st("SELECT count(*), md5(string_agg(body::text, ',' ORDER BY id)) FROM messages"),
        before
    );
    assert_eq!(
        st("SELECT count(*) FROM information_schema.columns WHERE table_name='messages' AND column_name='schema6'"),
        "0"
    );
    assert_eq!(st("SELECT to_regclass('only_in_016') IS NULL"), "t");

    // Wrong password: a typed error that does not contain it.
    let bad = ServerConfig::load_with_env(&cfg_path, &unit_env("wrong-Pw-77")).unwrap();
    let err = snaps.create(&bad, &meta()).unwrap_err();
    assert!(matches!(err, SnapshotError::Tool { .. }), "{err}");
    assert!(!err.to_string().contains("wrong-Pw-77"), "{err}");
    // The snapshot, and the database as the "newer server" left it, kept by the restore.
    let all = snaps.list().unwrap();
    assert_eq!(all.len(), 2, "failed create left a snapshot: {all:?}");
    let kept = all
        .iter()
        .find(|x| x.origin.is_some())
        .expect("the replaced data is kept");
    assert!(kept.stores[0]
        .files
        .iter()
        .any(|f| f.path == "dump.pgcustom" && f.size > 0));
}

/// A tmpfs of `size` mounted at `dir` (root-only, like a snapshot root must be), unmounted on
/// drop, also when the test panics.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        must(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0700"))
                .arg("su-test-small")
                .arg(dir),
        );
        SmallFs(dir.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// The processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

/// The `mail` database of role `stalwart` with about 3 MB of messages (text that does not
/// compress away), and a config naming it as the data store.
fn pg_mail_store(pg: &Postgres) -> (tempfile::TempDir, ServerConfig) {
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE ROLE stalwart LOGIN PASSWORD 'pg-Secret-42'",
    );
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE DATABASE mail OWNER stalwart",
    );
    let st = |sql: &str| pg.psql("stalwart", "pg-Secret-42", "mail", sql);
    st("CREATE TABLE messages (id int PRIMARY KEY, body text NOT NULL)");
    st(
        "INSERT INTO messages SELECT g, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) \
        || md5((g+3)::text) FROM generate_series(1, 20000) g",
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("config.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[storage]\ndata = \"pg\"\n[store.pg]\ntype = \"postgresql\"\nhost = \"{}\"\nport = {}\n\
             database = \"mail\"\nuser = \"stalwart\"\npassword = \"pg-Secret-42\"\n",
            pg.sock.display(),
            pg.port
        ),
    )
    .unwrap();
    let cfg = ServerConfig::load_with_env(&cfg_path, &ServerEnv::default()).unwrap();
    (tmp, cfg)
}

/// Issue #24: a pg_dump into a snapshot directory whose file system fills up. The helper used to
/// wait for pg_dump's stderr while pg_dump blocked on its full stdout pipe: forever, with the
/// server stopped and the lock held. Now the dump is killed, the partial snapshot removed, and
/// the error says the disk is full, within a bound.
#[test]
fn a_postgresql_dump_into_a_full_file_system_fails_within_a_bound() {
    let pg = Postgres::start();
    let (tmp, cfg) = pg_mail_store(&pg);
    dump_into_a_full_fs_fails_within_a_bound(
        cfg,
        &tmp.path().join("snapshots"),
        StoreMethod::PgDump,
        &pg.sock.display().to_string(),
        "pg_dump",
    );
}

/// Snapshots `cfg` (one SQL store, about 3 MB) into a 256 KiB file system at `root`: the create
/// must fail as NoSpace within a bound, with no `tool` left running against `sock` and nothing
/// left in the root.
fn dump_into_a_full_fs_fails_within_a_bound(
    cfg: ServerConfig,
    root: &Path,
    method: StoreMethod,
    sock: &str,
    tool: &str,
) {
    let _small = SmallFs::mount(root, "256k");
    let snaps = Snapshots::new(root);
    assert_eq!(snaps.plan(&cfg).unwrap().stores[0].method, method);

    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(snaps.create(&cfg, &meta()));
    });
    let res = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the snapshot hung on the full file system");
    let err = res.expect_err("3 MB cannot fit in 256 KiB");
    assert!(
        matches!(err, SnapshotError::NoSpace { .. }),
        "a full disk is named as such: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // No dump of this database is left, and nothing that looks like a snapshot.
    let running = || -> Vec<String> {
        processes_naming(sock)
            .into_iter()
            .filter(|p| p.contains(tool))
            .collect()
    };
    let t0 = Instant::now();
    while !running().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        running().is_empty(),
        "{tool} still running: {:?}",
        running()
    );
    let entries: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(entries.is_empty(), "left in the snapshot root: {entries:?}");
    assert!(Snapshots::new(root).list().unwrap().is_empty());
}

// ------------------------------------------------------------------ MariaDB

struct Mariadb {
    child: Child,
    sock: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mariadb {
    fn start() -> Mariadb {
        let server = ["mariadbd", "mysqld"]
            .iter()
            .find_map(|n| which(n).or_else(|| Some(Path::new("/usr/sbin").join(n)).filter(|p| p.is_file())))
            .unwrap_or_else(|| {
                panic!("MariaDB is not installed (no mariadbd): .ci/run must `apt-get install -y {PACKAGES}`")
            });
        let install = which("mariadb-install-db")
            .or_else(|| which("mysql_install_db"))
            .unwrap_or_else(|| {
                panic!("mariadb-install-db missing: .ci/run must `apt-get install -y {PACKAGES}`")
            });
        assert!(
            which("mariadb-dump")
                .or_else(|| which("mysqldump"))
                .is_some(),
            "mariadb-dump missing: .ci/run must `apt-get install -y {PACKAGES}`"
        );
        let tmp = shared_tempdir();
        let data = tmp.path().join("data");
        let sock = tmp.path().join("mysqld.sock");
        std::fs::create_dir(&data).unwrap();
        chown_to(tmp.path(), "mysql");
        // One bootstrap at a time: parallel mariadb-install-db runs failed now and then under
        // load ("Installation of system tables failed").
        static BOOTSTRAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = BOOTSTRAP.lock().unwrap_or_else(|e| e.into_inner());
        must(
            Command::new(install)
                .arg("--no-defaults")
                .arg("--user=mysql")
                .arg(format!("--datadir={}", data.display()))
                .arg("--auth-root-authentication-method=socket")
                .arg("--skip-test-db"),
        );
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", tmp.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                tmp.path().join("err.log").display()
            ))
            .arg("--skip-networking")
            .spawn()
            .unwrap();
        let db = Mariadb {
            child,
            sock,
            _tmp: tmp,
        };
        let t0 = Instant::now();
        while db.try_root("SELECT 1").is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "mariadbd did not come up"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        db
    }

    fn try_root(&self, sql: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.sock.display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn root(&self, sql: &str) -> String {
        self.try_root(sql)
            .unwrap_or_else(|| panic!("root query failed: {sql}"))
    }

    fn user(&self, sql: &str) -> String {
        must(
            Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", self.sock.display()))
                .args(["-ustalwart", "-N", "-B", "mail", "-e", sql])
                .env("MYSQL_PWD", "my-Secret-42"),
        )
        .trim()
        .to_string()
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        // SIGTERM is mariadbd's clean shutdown.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mariadb_dump_and_restore_with_a_real_server() {
    let db = Mariadb::start();
    db.root("CREATE DATABASE mail");
    db.root("CREATE USER 'stalwart'@'localhost' IDENTIFIED BY 'my-Secret-42'");
    db.root("GRANT ALL ON mail.* TO 'stalwart'@'localhost'");
    db.user("CREATE TABLE messages (id INT PRIMARY KEY, body BLOB NOT NULL) ENGINE=InnoDB");
    let mut values = Vec::new();
    for i in 1..=500 {
        values.push(format!(
            "({i}, CONCAT('message ', {i}, CHAR(0), CHAR(255)))"
        ));
    }
    db.user(&format!("INSERT INTO messages VALUES {}", values.join(",")));
    let checksum = "SELECT COUNT(*), MD5(GROUP_CONCAT(HEX(body) ORDER BY id)) FROM messages";
    let before = db.user(checksum);

    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("config.toml");
    let pwfile = tmp.path().join("db-password");
    std::fs::write(&pwfile, "my-Secret-42\n").unwrap();
    std::fs::write(
        &cfg_path,
        format!(
            "[storage]\ndata = \"my\"\nblob = \"my\"\n[store.my]\ntype = \"mysql\"\nhost = \"{}\"\n\
             database = \"mail\"\nuser = \"stalwart\"\npassword = \"%{{file:{}}}%\"\n",
            db.sock.display(),
            pwfile.display()
        ),
    )
    .unwrap();
    let cfg = ServerConfig::load(&cfg_path).unwrap();
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let plan = snaps.plan(&cfg).unwrap();
    assert_eq!(plan.stores[0].method, StoreMethod::MysqlDump);
    assert!(plan.stores[0].bytes_needed.unwrap_or(0) > 0, "{plan:?}");
    // The plan says why this dump is inside the downtime (issue #24).
    assert!(
        plan.stores[0].note.contains("inside the downtime")
            && plan.stores[0].note.contains("binary log"),
        "{plan:?}"
    );

    let m = snaps.create(&cfg, &meta()).unwrap();
    let manifest = std::fs::read_to_string(snaps.root.join(&m.id).join("manifest.json")).unwrap();
    assert!(
        !manifest.contains("my-Secret-42"),
        "password leaked into the manifest"
    );
    // `verify` checks what a restore would: the dump is complete (mariadb-dump's trailer).
    let v = snaps.verify(&m.id).unwrap();
    assert!(v.unrestorable.is_empty(), "{v:?}");
    let dump = snaps.root.join(&m.id).join("my/dump.sql");
    assert!(!std::fs::read_to_string(&dump)
        .unwrap()
        .contains("my-Secret-42"));

    db.user("DELETE FROM messages WHERE id > 10");
    db.user("ALTER TABLE messages ADD COLUMN schema6 INT");
    db.user("CREATE TABLE only_in_016 (k INT)");
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(db.user(checksum), before);
    assert_eq!(
        db.user("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema='mail' AND column_name='schema6'"),
        "0"
    );
    assert_eq!(
        db.user("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='mail' AND table_name='only_in_016'"),
        "0"
    );

    // A truncated dump is refused before the database is touched: once caught by the size
    // check against the manifest, once (same size, trailer gone) by the dump's own trailer.
    let full = std::fs::read(&dump).unwrap();
    db.user("DELETE FROM messages WHERE id = 1");
    std::fs::write(&dump, &full[..full.len() / 2]).unwrap();
    let err = snaps.restore(&m.id, Some(&cfg), &keep()).unwrap_err();
    assert!(matches!(err, SnapshotError::Incomplete { .. }), "{err}");
    let mut wiped = full.clone();
    let n = wiped.len();
    wiped[n - 200..].fill(b' ');
    std::fs::write(&dump, &wiped).unwrap();
    let err = snaps.restore(&m.id, Some(&cfg), &keep()).unwrap_err();
    assert!(matches!(err, SnapshotError::BadDump { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(db.user("SELECT COUNT(*) FROM messages"), "499");
    // A dump cut short (its trailer gone) is one the restore would refuse: verify says so.
    let len = std::fs::metadata(&dump).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dump)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let v = snaps.verify(&m.id).unwrap();
    assert!(
        !v.ok() && v.unrestorable.iter().any(|u| u.starts_with("my/dump.sql")),
        "{v:?}"
    );
}

// ------------------------------------------------------------------ the server's user as attacker
//
// The server config is the service user's to write. What it says about a SQL store must not make
// root's tools do anything the server itself could not (README "Security", findings 2 and 3).

/// A config owned by an unprivileged uid (the service user), in a directory of theirs.
/// The `mail` database of user `stalwart` with about 3 MB of messages, and a config naming it
/// as the data store.
fn maria_mail_store(db: &Mariadb) -> (tempfile::TempDir, ServerConfig) {
    db.root("CREATE DATABASE mail");
    db.root("CREATE USER 'stalwart'@'localhost' IDENTIFIED BY 'my-Secret-42'");
    db.root("GRANT ALL ON mail.* TO 'stalwart'@'localhost'");
    db.user("CREATE TABLE messages (id INT PRIMARY KEY, body TEXT NOT NULL) ENGINE=InnoDB");
    db.user(
        "INSERT INTO messages SELECT seq, CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2), \
         MD5(seq + 3)) FROM seq_1_to_20000",
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("config.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[storage]\ndata = \"my\"\n[store.my]\ntype = \"mysql\"\nhost = \"{}\"\n\
             database = \"mail\"\nuser = \"stalwart\"\npassword = \"my-Secret-42\"\n",
            db.sock.display()
        ),
    )
    .unwrap();
    let cfg = ServerConfig::load(&cfg_path).unwrap();
    (tmp, cfg)
}

/// The same full file system under a mariadb-dump (issue #24).
#[test]
fn a_mariadb_dump_into_a_full_file_system_fails_within_a_bound() {
    let db = Mariadb::start();
    let (tmp, cfg) = maria_mail_store(&db);
    dump_into_a_full_fs_fails_within_a_bound(
        cfg,
        &tmp.path().join("snapshots"),
        StoreMethod::MysqlDump,
        &db.sock.display().to_string(),
        "mariadb-dump",
    );
}

fn hostile_config(tmp: &Path, text: &str) -> ServerConfig {
    let dir = tmp.join("etc");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    for q in [&dir, &p] {
        std::os::unix::fs::chown(q, Some(4242), Some(4242)).unwrap();
    }
    ServerConfig::load(&p).unwrap()
}

#[test]
fn a_database_name_that_is_an_option_never_reaches_mariadb_dump() {
    let db = Mariadb::start();
    let tmp = shared_tempdir();
    // Reproduced with Debian 12's client before the fix: a second --result-file truncated any
    // file as root; --plugin-dir made the client load a shared object of the attacker's.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    for database in [
        format!("--result-file={}", victim.display()),
        "--plugin-dir=/opt/stalwart/data/p".to_string(),
        "mail --execute=DROP".to_string(),
    ] {
        let cfg = hostile_config(
            tmp.path(),
            &format!(
                "[storage]\ndata = \"my\"\n[store.my]\ntype = \"mysql\"\nhost = \"{}\"\ndatabase = \"{}\"\nuser = \"stalwart\"\n",
                db.sock.display(),
                database
            ),
        );
        let snaps = Snapshots::new(&tmp.path().join("snapshots"));
        // preflight: the size query must not run either
        let plan = snaps.plan(&cfg).unwrap();
        assert_eq!(plan.stores[0].data_bytes, None, "{database}");
        let err = snaps.create(&cfg, &meta()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::UnsafeValue { .. }),
            "{database}: {err}"
        );
        assert!(
            err.to_string().contains("not passed to the database tools"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n");
        assert!(snaps.list().unwrap().is_empty());
    }
}

#[test]
fn mariadb_tools_run_as_the_servers_user_not_as_root() {
    // root@localhost authenticates by the OS user over the socket (Debian's default): a config
    // naming user "root" must get the server's user's rights, not root's.
    let db = Mariadb::start();
    db.root("CREATE DATABASE secrets");
    db.root("CREATE TABLE secrets.t (k INT)");
    let tmp = shared_tempdir();
    let cfg = hostile_config(
        tmp.path(),
        &format!(
            "[storage]\ndata = \"my\"\n[store.my]\ntype = \"mysql\"\nhost = \"{}\"\ndatabase = \"secrets\"\nuser = \"root\"\n",
            db.sock.display()
        ),
    );
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let err = snaps.create(&cfg, &meta()).unwrap_err();
    assert!(matches!(err, SnapshotError::Tool { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("access denied"),
        "{err}"
    );
    assert!(snaps.list().unwrap().is_empty());
}

#[test]
fn postgresql_conninfo_and_root_password_files_are_not_used() {
    let pg = Postgres::start();
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE ROLE stalwart LOGIN PASSWORD 'pg-Secret-42'",
    );
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE DATABASE mail OWNER stalwart",
    );
    let tmp = shared_tempdir();
    // A password file of root's (PGPASSFILE in root's environment, as ~/.pgpass would be): it
    // knows the superuser's password. A config that names no password must not borrow it.
    let passfile = tmp.path().join("root.pgpass");
    std::fs::write(
        &passfile,
        "*:*:*:postgres:super-pw\n*:*:*:stalwart:pg-Secret-42\n",
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::env::set_var("PGPASSFILE", &passfile);
    let cfg = hostile_config(
        tmp.path(),
        &format!(
            "[storage]\ndata = \"pg\"\n[store.pg]\ntype = \"postgresql\"\nhost = \"{}\"\nport = {}\ndatabase = \"mail\"\nuser = \"postgres\"\n",
            pg.sock.display(),
            pg.port
        ),
    );
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let err = snaps.create(&cfg, &meta()).unwrap_err();
    std::env::remove_var("PGPASSFILE");
    assert!(matches!(err, SnapshotError::Tool { .. }), "{err}");
    assert!(!err.to_string().contains("super-pw"), "{err}");
    // libpq would expand a database name with `=` into connection options (another host, a
    // password file, a client key): such a name is refused before any tool runs.
    for database in [
        "mail host=/tmp passfile=/root/.pgpass".to_string(),
        "postgresql://postgres@localhost/mail".to_string(),
        "mail sslkey=/etc/shadow".to_string(),
    ] {
        let cfg = hostile_config(
            tmp.path(),
            &format!(
                "[storage]\ndata = \"pg\"\n[store.pg]\ntype = \"postgresql\"\nhost = \"{}\"\nport = {}\ndatabase = \"{database}\"\nuser = \"stalwart\"\npassword = \"pg-Secret-42\"\n",
                pg.sock.display(),
                pg.port
            ),
        );
        let err = snaps.create(&cfg, &meta()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::UnsafeValue { .. }),
            "{database}: {err}"
        );
    }
    // With its own password the server's user gets its own database, as the server would.
    let cfg = hostile_config(
        tmp.path(),
        &format!(
            "[storage]\ndata = \"pg\"\n[store.pg]\ntype = \"postgresql\"\nhost = \"{}\"\nport = {}\ndatabase = \"mail\"\nuser = \"stalwart\"\npassword = \"pg-Secret-42\"\n",
            pg.sock.display(),
            pg.port
        ),
    );
    snaps.create(&cfg, &meta()).unwrap();
}

// ------------------------------------------------------------------ PostgreSQL clone databases

impl Postgres {
    /// A server with role `stalwart` that may create databases and owns database `mail`.
    fn with_clone_role() -> Postgres {
        let pg = Postgres::start();
        let su = |sql: &str| pg.psql("postgres", "super-pw", "postgres", sql);
        su("CREATE ROLE stalwart LOGIN CREATEDB PASSWORD 'pg-Secret-42'");
        su("CREATE DATABASE mail OWNER stalwart");
        pg
    }
}

/// A config of the service user's whose stores `ids` (the first the data store, the second the
/// blob store) all use database `mail` as role `stalwart`.
fn mail_config(pg: &Postgres, tmp: &Path, ids: &[&str]) -> ServerConfig {
    let mut text = format!("[storage]\ndata = \"{}\"\n", ids[0]);
    if let Some(blob) = ids.get(1) {
        text.push_str(&format!("blob = \"{blob}\"\n"));
    }
    for id in ids {
        text.push_str(&format!(
            "[store.{id}]\ntype = \"postgresql\"\nhost = \"{}\"\nport = {}\ndatabase = \"mail\"\nuser = \"stalwart\"\npassword = \"pg-Secret-42\"\n",
            pg.sock.display(),
            pg.port
        ));
    }
    hostile_config(tmp, &text)
}

/// A store whose role may create databases is snapshotted as a clone database inside the
/// server (no dump through a client during the downtime); a restore builds a copy of the clone
/// and swaps it in by renaming, keeps the replaced database as a snapshot of its own, and leaves
/// the snapshot usable for another restore. Removing a snapshot drops its database; a database
/// made under a snapshot's name afterwards is never restored from.
#[test]
fn postgresql_clone_database_snapshot_and_restore_by_rename() {
    let pg = Postgres::with_clone_role();
    let su = |sql: &str| pg.psql("postgres", "super-pw", "postgres", sql);
    let st = |sql: &str| pg.psql("stalwart", "pg-Secret-42", "mail", sql);
    let content = "SELECT count(*), md5(string_agg(body::text, ',' ORDER BY id)) FROM messages";
    st("CREATE TABLE messages (id int PRIMARY KEY, body bytea NOT NULL)");
    st("INSERT INTO messages SELECT g, convert_to('message ' || g, 'UTF8') FROM generate_series(1, 500) g");
    let at_stop = st(content);

    let tmp = shared_tempdir();
    let cfg = mail_config(&pg, tmp.path(), &["pg"]);
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let plan = snaps.plan(&cfg).unwrap();
    assert_eq!(plan.stores[0].method, StoreMethod::PgClone, "{plan:?}");
    assert_eq!(plan.stores[0].bytes_needed, Some(0), "{plan:?}");

    let m = snaps.create(&cfg, &meta()).unwrap();
    assert_eq!(m.stores[0].method, StoreMethod::PgClone, "{m:?}");
    let clone = m.stores[0].clone_db.clone().expect("the clone is named");
    let db_row = |name: &str| {
        su(&format!(
            "SELECT datallowconn, pg_get_userbyid(datdba), oid FROM pg_database WHERE datname = '{name}'"
        ))
    };
    assert_eq!(
        db_row(&clone.name),
        format!("f|stalwart|{}", clone.oid),
        "the clone is closed to connections and the store's role's"
    );
    // Its data is the data at the stop.
    // Read through a copy: opening a snapshot's database, even to read, voids it (see
    // a_clone_the_stores_role_opened_and_changed_is_never_restored).
    let peek = |name: &str| {
        su(&format!("CREATE DATABASE su_peek TEMPLATE \"{name}\""));
        let got = pg.psql("postgres", "super-pw", "su_peek", content);
        su("DROP DATABASE su_peek");
        got
    };
    assert_eq!(peek(&clone.name), at_stop);

    // The "newer server" migrates and receives mail.
    st("DELETE FROM messages WHERE id > 100");
    st("UPDATE messages SET body = 'x'");
    st("ALTER TABLE messages ADD COLUMN schema6 int");
    st("CREATE TABLE only_in_016 (k int)");
    let newer = st(content);
    let r = snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(
        st(content),
        at_stop,
        "the live database is the snapshot's data again"
    );
    assert_eq!(st("SELECT to_regclass('only_in_016') IS NULL"), "t");
    assert_eq!(db_row("mail").split('|').next(), Some("t"));
    // What the newer server wrote is kept, as a snapshot of its own that can be restored.
    let kept_id = r.kept.clone().expect("the replaced database is kept");
    let kept = snaps.get(&kept_id).unwrap();
    assert_eq!(kept.stores[0].method, StoreMethod::PgClone);
    let kept_db = kept.stores[0].clone_db.clone().unwrap();
    assert_ne!(kept_db.name, clone.name);
    assert_eq!(peek(&kept_db.name), newer);
    // The snapshot is still whole: a second restore works and keeps the first one's result.
    st("INSERT INTO messages VALUES (9999, 'after the rollback')");
    let r2 = snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(st(content), at_stop);
    assert!(r2.kept.is_some());
    snaps.restore(&kept_id, Some(&cfg), &keep()).unwrap();
    assert_eq!(
        st(content),
        newer,
        "the kept snapshot restores what the newer server had"
    );

    // Removing a snapshot drops its database, and only its.
    snaps.remove(&m.id).unwrap();
    assert_eq!(db_row(&clone.name), "", "the snapshot's database is gone");
    assert!(
        !db_row(&kept_db.name).is_empty(),
        "another snapshot's database stays"
    );

    // A database made later under a snapshot's name (the role may create databases) is not
    // the snapshot's: the restore refuses, and the live database is left as it is.
    let m2 = snaps.create(&cfg, &meta()).unwrap();
    let c2 = m2.stores[0].clone_db.clone().unwrap();
    assert!(snaps.verify(&m2.id).unwrap().ok());
    su(&format!("DROP DATABASE \"{}\"", c2.name));
    st(&format!("CREATE DATABASE \"{}\"", c2.name));
    let r = snaps.verify(&m2.id).unwrap();
    assert!(!r.ok() && r.missing[0].contains(&c2.name), "{r:?}");
    let before = st(content);
    let err = snaps.restore(&m2.id, Some(&cfg), &keep()).unwrap_err();
    assert!(err.to_string().contains("OID"), "{err}");
    assert_eq!(st(content), before);

    // A create killed after PostgreSQL made the clone, before the manifest: what is left is a
    // partial snapshot naming the clone. Clean-ups without a connection keep it; the next
    // snapshot drops the database and the partial.
    let m3 = snaps.create(&cfg, &meta()).unwrap();
    let c3 = m3.stores[0].clone_db.clone().unwrap();
    let partial = snaps.root.join(format!(".partial-{}", m3.id));
    std::fs::rename(snaps.root.join(&m3.id), &partial).unwrap();
    std::fs::remove_file(partial.join("manifest.json")).unwrap();
    snaps.remove_partials().unwrap();
    assert!(
        partial.exists(),
        "the only record of the clone database was removed"
    );
    let m4 = snaps.create(&cfg, &meta()).unwrap();
    assert!(!partial.exists());
    assert!(
        !su(&format!(
            "SELECT count(*) FROM pg_database WHERE oid = {}",
            c3.oid
        ))
        .starts_with('1'),
        "the interrupted snapshot's database was dropped"
    );
    assert!(!db_row(&m4.stores[0].clone_db.clone().unwrap().name).is_empty());
}

/// Another client connected to the store's database: PostgreSQL refuses the clone, and the
/// snapshot is a dump instead, with a warning that says why.
#[test]
fn postgresql_clone_falls_back_to_a_dump_while_another_client_is_connected() {
    let pg = Postgres::with_clone_role();
    let su = |sql: &str| pg.psql("postgres", "super-pw", "postgres", sql);
    pg.psql("stalwart", "pg-Secret-42", "mail", "CREATE TABLE t (k int)");
    let mut other = Command::new("psql")
        .args(["-X", "-c", "SELECT pg_sleep(60)"])
        .arg(format!("--host={}", pg.sock.display()))
        .arg(format!("--port={}", pg.port))
        .args(["--username=stalwart", "--dbname=mail"])
        .env("PGPASSWORD", "pg-Secret-42")
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while su("SELECT count(*) FROM pg_stat_activity WHERE datname = 'mail'") == "0" {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the other client never connected"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tmp = shared_tempdir();
    let cfg = mail_config(&pg, tmp.path(), &["pg"]);
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let m = snaps.create(&cfg, &meta());
    let _ = other.kill();
    let _ = other.wait();
    let m = m.unwrap();
    assert_eq!(m.stores[0].method, StoreMethod::PgDump, "{m:?}");
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("being accessed by other users")),
        "{:?}",
        m.warnings
    );
    assert_eq!(
        su("SELECT count(*) FROM pg_database WHERE datname LIKE 'mail_su_%'"),
        "0",
        "no half-made clone is left"
    );
}

/// Two stores of one config on the same database (here the data and the blob store): each gets
/// a clone of its own, both verify, and a restore of the snapshot brings the data back.
#[test]
fn two_postgresql_stores_on_one_database_get_a_clone_each() {
    let pg = Postgres::with_clone_role();
    let st = |sql: &str| pg.psql("stalwart", "pg-Secret-42", "mail", sql);
    st("CREATE TABLE t (k int PRIMARY KEY)");
    st("INSERT INTO t SELECT generate_series(1, 10)");
    let tmp = shared_tempdir();
    let cfg = mail_config(&pg, tmp.path(), &["pg", "pgblob"]);
    assert_eq!(cfg.stores.len(), 2, "{:?}", cfg.stores);
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let m = snaps.create(&cfg, &meta()).unwrap();
    let names: Vec<String> = m
        .stores
        .iter()
        .map(|s| s.clone_db.clone().expect("a clone per store").name)
        .collect();
    assert_ne!(names[0], names[1], "{names:?}");
    assert!(snaps.verify(&m.id).unwrap().ok());
    st("DELETE FROM t");
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(st("SELECT count(*) FROM t"), "10");
}

// ------------------------------------------------------------------ TLS to the database
//
// Finding 6 of #23: `sslmode=require` encrypted but took any certificate, so whoever answered at
// the configured address got the store's password. The tools now verify the server against the
// helper's `[snapshots] database_ca_file` (or the system's CAs where the client can).

/// A CA (`<name>.pem`, `<name>.key`) in `dir`; with `signs`, a server certificate for localhost
/// and 127.0.0.1 signed by it (`server.pem`, `server.key`).
fn make_ca(dir: &Path, name: &str, signs: bool) {
    let d = |f: &str| dir.join(f).display().to_string();
    must(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=stalwart-upgrade test {name}"),
        "-keyout",
        &d(&format!("{name}.key")),
        "-out",
        &d(&format!("{name}.pem")),
    ]));
    if signs {
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        must(Command::new("openssl").args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &d("server.key"),
            "-out",
            &d("server.csr"),
        ]));
        must(Command::new("openssl").args([
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &d("server.csr"),
            "-CA",
            &d(&format!("{name}.pem")),
            "-CAkey",
            &d(&format!("{name}.key")),
            "-CAcreateserial",
            "-extfile",
            &d("server.ext"),
            "-out",
            &d("server.pem"),
        ]));
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    std::fs::set_permissions(
        dir.join(format!("{name}.pem")),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

/// A PostgreSQL server that answers on 127.0.0.1 with TLS, its certificate signed by
/// `ca-right.pem`; `ca-wrong.pem` is another CA. Both CAs in a directory of their own that the
/// tools' user can read.
fn postgres_with_tls() -> (Postgres, tempfile::TempDir) {
    let cas = shared_tempdir();
    make_ca(cas.path(), "ca-right", true);
    make_ca(cas.path(), "ca-wrong", false);
    let pg = Postgres::start_with(|dir| {
        for f in ["server.pem", "server.key"] {
            std::fs::copy(cas.path().join(f), dir.join(f)).unwrap();
        }
        format!(
            "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={d}/server.pem \
             -c ssl_key_file={d}/server.key -c log_connections=on",
            d = dir.display()
        )
    });
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE ROLE stalwart LOGIN PASSWORD 'pg-Secret-42'",
    );
    pg.psql(
        "postgres",
        "super-pw",
        "postgres",
        "CREATE DATABASE mail OWNER stalwart",
    );
    pg.psql(
        "stalwart",
        "pg-Secret-42",
        "mail",
        "CREATE TABLE t AS SELECT generate_series(1, 10) AS k",
    );
    (pg, cas)
}

#[test]
fn postgresql_over_tls_is_verified_against_the_helpers_ca_file() {
    let (pg, cas) = postgres_with_tls();
    let tmp = shared_tempdir();
    let cfg = hostile_config(
        tmp.path(),
        &format!(
            "[storage]\ndata = \"pg\"\n[store.pg]\ntype = \"postgresql\"\nhost = \"localhost\"\nport = {}\n\
             database = \"mail\"\nuser = \"stalwart\"\npassword = \"pg-Secret-42\"\ntls.enable = true\n",
            pg.port
        ),
    );
    let root = tmp.path().join("snapshots");
    let log = || std::fs::read_to_string(pg._tmp.path().join("log")).unwrap_or_default();
    let authorized = || {
        log()
            .matches("connection authorized: user=stalwart")
            .count()
    };

    // A server whose certificate the configured CA did not sign is refused, naming the CA, and
    // never gets as far as the password.
    let wrong = cas.path().join("ca-wrong.pem");
    let snaps = Snapshots::new(&root).with_database_ca(Some(wrong.clone()));
    let before = authorized();
    let err = snaps.create(&cfg, &meta()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::DatabaseUnverified { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&wrong.display().to_string()) && msg.contains("certificate"),
        "{msg}"
    );
    assert_eq!(authorized(), before, "a session was opened: {}", log());
    assert!(snaps.list().unwrap().is_empty());

    // No CA file: libpq before 16 has nothing to verify with and is refused before the stop
    // (the plan), naming the setting; a newer one tries the system's CAs, which did not sign it.
    let snaps = Snapshots::new(&root);
    match snaps.plan(&cfg) {
        Err(e @ SnapshotError::DatabaseCa { .. }) => {
            assert!(e.to_string().contains("database_ca_file"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => {
            let err = snaps.create(&cfg, &meta()).unwrap_err();
            assert!(
                matches!(err, SnapshotError::DatabaseUnverified { .. }),
                "{err}"
            );
        }
    }

    // A CA file the tools (the server's user) cannot read: refused before the stop, saying so.
    let private = tmp.path().join("private-ca.pem");
    std::fs::copy(cas.path().join("ca-right.pem"), &private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Snapshots::new(&root)
        .with_database_ca(Some(private))
        .plan(&cfg)
        .unwrap_err();
    assert!(matches!(err, SnapshotError::DatabaseCa { .. }), "{err}");
    assert!(
        err.to_string().contains("not readable by uid 4242"),
        "{err}"
    );

    // The CA that signed it: the snapshot is taken, over TLS.
    let snaps = Snapshots::new(&root).with_database_ca(Some(cas.path().join("ca-right.pem")));
    let m = snaps.create(&cfg, &meta()).unwrap();
    assert_eq!(m.stores[0].method, StoreMethod::PgDump);
    assert!(
        log().lines().any(
            |l| l.contains("connection authorized: user=stalwart database=mail")
                && l.contains("SSL enabled")
        ),
        "the dump did not use TLS: {}",
        log()
    );
    pg.psql("stalwart", "pg-Secret-42", "mail", "DELETE FROM t");
    snaps.restore(&m.id, Some(&cfg), &keep()).unwrap();
    assert_eq!(
        pg.psql("stalwart", "pg-Secret-42", "mail", "SELECT count(*) FROM t"),
        "10"
    );
}

// ------------------------------------------------------------------ a clone its owner changed
//
// Finding 8 of #23: the clone belongs to the store's role (the server's credentials), which may
// open it, change it and close it again. A rollback must never restore such data, and `snapshot
// verify` must not call it intact.

#[test]
fn a_clone_the_stores_role_opened_and_changed_is_never_restored() {
    let pg = Postgres::with_clone_role();
    let su = |sql: &str| pg.psql("postgres", "super-pw", "postgres", sql);
    let st = |sql: &str| pg.psql("stalwart", "pg-Secret-42", "mail", sql);
    let content = "SELECT count(*), md5(string_agg(body::text, ',' ORDER BY id)) FROM messages";
    st("CREATE TABLE messages (id int PRIMARY KEY, body bytea NOT NULL)");
    st("INSERT INTO messages SELECT g, convert_to('message ' || g, 'UTF8') FROM generate_series(1, 50) g");
    let tmp = shared_tempdir();
    let cfg = mail_config(&pg, tmp.path(), &["pg"]);
    let snaps = Snapshots::new(&tmp.path().join("snapshots"));
    let m = snaps.create(&cfg, &meta()).unwrap();
    let clone = m.stores[0].clone_db.clone().expect("a clone");
    assert!(clone.xid.is_some(), "{clone:?}");
    assert!(snaps.verify(&m.id).unwrap().ok());

    // As the store's role, with nothing but the server's credentials: open the clone, forge a
    // message, close it again. Name, OID and datallowconn are as the snapshot left them.
    let row = format!(
        "SELECT oid, datallowconn, pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{}'",
        clone.name
    );
    let as_made = su(&row);
    let role = |db: &str, sql: &str| pg.psql("stalwart", "pg-Secret-42", db, sql);
    role(
        "postgres",
        &format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", clone.name),
    );
    role(
        &clone.name,
        "UPDATE messages SET body = 'forged' WHERE id = 1",
    );
    role(
        "postgres",
        &format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", clone.name),
    );
    assert_eq!(su(&row), as_made, "the tampering shows in none of these");

    let r = snaps.verify(&m.id).unwrap();
    assert!(!r.ok(), "{r:?}");
    assert!(
        r.mismatched.iter().any(|x| x.contains(&clone.name)),
        "{r:?}"
    );

    // The "newer server" ran on; the rollback refuses and leaves the live database as it is.
    st("INSERT INTO messages VALUES (9999, 'after the upgrade')");
    let live = st(content);
    let err = snaps.restore(&m.id, Some(&cfg), &keep()).unwrap_err();
    assert!(matches!(err, SnapshotError::CloneChanged { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&clone.name) && msg.contains("changed") && msg.contains("snapshot list"),
        "{msg}"
    );
    assert_eq!(st(content), live);
    assert_eq!(
        su("SELECT count(*) FROM pg_database WHERE datname LIKE 'mail_su_restore_%'"),
        "0",
        "no restore copy is left"
    );
    assert_eq!(
        snaps.list().unwrap().len(),
        1,
        "nothing was kept: nothing was replaced"
    );
}

/// Issue #24, the undo's side: a restore first dumps the live data it is about to replace (the
/// mail the failed version took). When that dump hits a full file system, the restore must fail
/// as NoSpace within a bound, before it touches the live data, with no tool left running and no
/// partial snapshot; once there is room (the file system grown, as an admin would free space),
/// the same restore goes through and the snapshot's records are back.
fn undo_dump_into_a_full_fs_keeps_the_live_data(
    cfg: ServerConfig,
    root: &Path,
    sock: &str,
    tool: &str,
    count: &dyn Fn() -> u64,
    add_mail: &dyn Fn(),
) {
    let _small = SmallFs::mount(root, "5m");
    let snaps = Snapshots::new(root);
    let s = snaps.create(&cfg, &meta()).expect("the first dump fits");
    let at_snapshot = count();
    add_mail();
    let live = count();
    assert!(live > at_snapshot);
    // Leave less room than the dump of the live data needs.
    let free = nix::sys::statvfs::statvfs(root).unwrap();
    let free = free.blocks_available() * free.fragment_size();
    let filler = free.saturating_sub(512 << 10);
    std::fs::write(root.join("filler"), vec![1u8; filler as usize]).unwrap();

    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let cfg = cfg.clone();
        let id = s.id.clone();
        let snaps = Snapshots::new(root);
        std::thread::spawn(move || {
            let _ = tx.send(snaps.restore(&id, Some(&cfg), &keep()));
        });
    }
    let res = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the restore hung on the full file system");
    let err = res.expect_err("the live data's dump cannot fit");
    assert!(
        matches!(err, SnapshotError::KeepNoSpace { .. })
            && err.to_string().contains("live data was NOT changed"),
        "a full disk is named as such: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        count(),
        live,
        "the live data was touched by a restore that could not keep it"
    );
    let t0 = Instant::now();
    let running = || -> Vec<String> {
        processes_naming(sock)
            .into_iter()
            .filter(|p| p.contains(tool))
            .collect()
    };
    while !running().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        running().is_empty(),
        "{tool} still running: {:?}",
        running()
    );
    let ids: Vec<String> = snaps.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![s.id.clone()], "no partial snapshot counts as one");

    // Room again: the same restore goes through, and the live data is kept besides.
    std::fs::remove_file(root.join("filler")).unwrap();
    must(
        Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(root),
    );
    let r = snaps
        .restore(&s.id, Some(&cfg), &keep())
        .expect("restore with room");
    assert_eq!(count(), at_snapshot, "the snapshot's records are back");
    assert!(r.kept.is_some(), "the replaced live data is kept: {r:?}");
}

#[test]
fn a_postgresql_restore_whose_dump_of_the_live_data_fills_the_disk_keeps_the_live_data() {
    let pg = Postgres::start();
    let (tmp, cfg) = pg_mail_store(&pg);
    let st = |sql: &str| pg.psql("stalwart", "pg-Secret-42", "mail", sql);
    let count = || -> u64 { st("SELECT count(*) FROM messages").trim().parse().unwrap() };
    let add = || {
        st("INSERT INTO messages SELECT g, md5(g::text) FROM generate_series(20001, 21000) g");
    };
    undo_dump_into_a_full_fs_keeps_the_live_data(
        cfg,
        &tmp.path().join("snapshots"),
        &pg.sock.display().to_string(),
        "pg_dump",
        &count,
        &add,
    );
}

#[test]
fn a_mariadb_restore_whose_dump_of_the_live_data_fills_the_disk_keeps_the_live_data() {
    let db = Mariadb::start();
    let (tmp, cfg) = maria_mail_store(&db);
    let count = || -> u64 { db.user("SELECT COUNT(*) FROM messages").parse().unwrap() };
    let add = || {
        db.user("INSERT INTO messages SELECT seq, MD5(seq) FROM seq_20001_to_21000");
    };
    undo_dump_into_a_full_fs_keeps_the_live_data(
        cfg,
        &tmp.path().join("snapshots"),
        &db.sock.display().to_string(),
        "mariadb-dump",
        &count,
        &add,
    );
}
