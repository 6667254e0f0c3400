//! # stalwart-standin: a TEST DOUBLE of the Stalwart mail server
//!
//! **This is not Stalwart.** The project's tests use it for what a real binary cannot do on
//! demand: crash at a chosen moment, never become ready, migrate slowly, fail a migration, answer
//! the web-admin refresh with an error. Everything else is tested against upstream's real
//! binaries too (the real-server tier, `testbed::real`, tests/real_*.rs), and where the two
//! disagree the stand-in is wrong: the facts below were read from upstream's source (tags v0.15.5
//! and v0.16.18) and, where marked "measured", checked against the real 0.15.4/0.15.5 and
//! 0.16.17/0.16.18 binaries.
//!
//! Facts imitated:
//! * Flags of both generations: `-c/--config <path>` (also `--config=<path>`), `-e/--export DIR`,
//!   `-i/--import DIR`, `-V/--version` (bare version, exit 0), `-h/--help`; 0.15 also
//!   `-I/--init DIR`. Env `CONFIG_PATH`, when set, makes the server ignore all arguments. Measured:
//!   no `--config` prints the help on stderr, exit 0; an unknown flag or a flag without its value
//!   is "Unrecognized command 'X', try '--help'.", exit 1; `-e DIR` without `--config` is
//!   "Missing '--config' argument for import/export.", exit 0; 0.16 answers `--init DIR` with
//!   "Missing value for argument 'init', try '--help'.", exit 1.
//! * `--init DIR` (0.15, measured): writes DIR/etc/config.toml (over an existing one) and prints
//!   "✅ Configuration file written to ..." and "🔑 Your administrator account is 'admin' with
//!   password '<PW>'." on stderr, exit 0.
//! * Two configuration generations: <= 0.15 reads `config.toml` (`[server.listener.<id>]`,
//!   `[storage]`, `[store.<id>] type/path`, `[authentication.fallback-admin]`, `%{env:VAR}%`);
//!   0.16 and newer read `config.json`, one DataStore object (`{"@type":"RocksDb","path":...}`).
//!   A missing 0.15 config.toml ends the process at once, silently, exit 0 (measured).
//! * 0.16's modes (measured): no config.json = bootstrap mode (an in-memory store, ready 200, a
//!   temporary administrator printed in a box on stderr unless `STALWART_RECOVERY_ADMIN` is set,
//!   every registry call but Bootstrap forbidden); `STALWART_RECOVERY_MODE=1`/`true` = recovery
//!   mode; the anonymous `/jmap/session` has an absolute `apiUrl` in normal mode and `/jmap/` in
//!   the other two. `STALWART_RECOVERY_ADMIN=user:secret` (trimmed) is an administrator in every
//!   mode. `x:` methods exist only under the `urn:stalwart:jmap` capability.
//! * Database schema numbers: 0.12.0-0.12.4 = 1, 0.12.5 = 2, 0.13 = 3, 0.14 = 4, 0.15 = 5,
//!   0.16 = 6 (patch releases keep the number). Migration runs automatically at start; 0.15
//!   migrations are long and read-only ("No new e-mail can be received").
//! * Nothing listens until the migration and the start-up are done (connection refused), and
//!   until then SIGINT/SIGTERM kill the process outright (upstream's handlers come later).
//! * A binary that finds a HIGHER schema than it knows panics (exit 101; measured: "Unknown
//!   database schema version, expected 5 or below, found 6").
//! * A failed migration exits 0 (not 1).
//! * 0.16 refuses schema 0-4 ("upgrade to 0.15 first") and, without `STALWART_RECOVERY_MODE=1`,
//!   schema 5 ("Upgrading to version 0.16 is a multi-step process"), both as panics "Migration
//!   aborted: ..." (exit 101, measured), and the latter only after writing into the 0.15 database
//!   (measured: the real 0.15.5 then refuses it), so a rollback must restore the data. With
//!   recovery mode it migrates 5 -> 6, which wipes settings (and directory, reports, tasks,
//!   quotas; modelled here as the `settings/` records).
//! * `--export`: one LZ4-framed file per subspace `DIR/subspace_<char>`, starting with marker
//!   byte 123, the subspace byte and a u32 LE schema version; `--import` refuses another schema
//!   version; the server must be stopped; exit 0 ok / 1 error.
//! * Health: `GET /healthz/live` always 200, `GET /healthz/ready` 200 with a data store.
//! * `[server.listener.<id>] protocol = "http"` with `tls.implicit = true` serves HTTPS with the
//!   `[certificate.<id>]` `cert` / `private-key` PEM (`%{file:PATH}%`). (Upstream falls back to
//!   a self-signed certificate when none is configured; the stand-in then serves no TLS.)
//! * Management API reads and writes the 0.16 crossing uses: 0.15 `GET /api/settings/list`
//!   (paged, `{"data":{"total","items":{key:value}}}`; upstream lists config.toml's keys with
//!   their macros unexpanded, the stand-in expanded), `GET /api/principal` (paged by type),
//!   `POST /api/principal` and `PATCH /api/principal/<name>` (`[{"action":"set","field":..,
//!   "value":..}]`; STAND-IN: the directory is kept in memory only); 0.16 `x:<Object>/set` creating/updating registry objects and
//!   `x:<Object>/get` (STAND-IN: kept in memory only, and its listeners are not bound from them).
//! * Web admin refresh: 0.15 `GET /api/update/webadmin` (200 `{"data":null}`; measured: a 401
//!   without any `WWW-Authenticate` header under /api, 403, 500 as `application/problem+json`);
//!   0.16 JMAP `x:Action/set` creating `{"@type":"UpdateApps"}` (measured: reported as created
//!   even when the bundle is lost, `/admin/` then 404).
//! * The systemd unit stops the server with SIGINT (`KillSignal=SIGINT`); SIGTERM works too; both
//!   exit 0 after a fixed 1 s sleep (measured: 1.02-1.08 s).
//!
//! 1.x, for which no released binary can be had here (real-stalwart has upstream's v1.0.0 branch
//! as of 2026-08-22, whose behaviour the real tier tests); each an assumption with its source:
//! * runs as 0.16 does: config.json, its modes, JMAP management, the web UI as Applications
//!   (facts: stalwart-1x.md "Layout and runtime as 0.16", seen in docs and third-party images);
//! * a 1.x started on a 0.x store writes into it, then panics (exit 101) and the 0.x release can
//!   no longer open it (measured with the v1.0.0 branch build); the message is the released
//!   1.0's as upstream documents it ("The data store was created by a Stalwart version prior to
//!   1.0 (schema version N) and cannot be opened by this version."), its exit code unknown;
//! * 1.x minor releases migrate the store in place at start (inferred: upstream publishes no rule
//!   for 1.x -> 1.y; facts: "treat a 1.x minor as schema-moving"): schema 7 + MINOR
//!   (`stalwart_standin::schema_for`), so a 1.0 panics on a 1.1 store like 0.15 on 0.16's.
//!
//! Stand-in inventions (NOT upstream, for tests only):
//! * A *release* is this binary with a trailer (see `stalwart_standin::release`): version,
//!   injected fault, migration time. An unstamped binary refuses to run (except `--help`).
//! * The store formats (RocksDB-like directory, SQLite tables, `fs` blobs) imitate the file-level
//!   behaviour that matters for snapshots, not upstream's real encodings. Schema extrapolation
//!   beyond 0.16 is documented at `stalwart_standin::schema_for`.
//! * `[standin] unprivileged-users` (0.15 config.toml) and env `STANDIN_UNPRIVILEGED_USERS`
//!   (0.16): users who authenticate but lack the WebadminUpdate permission.
//! * 0.16 administrator, when `STALWART_RECOVERY_ADMIN` is unset, from env
//!   `STALWART_ADMIN_USER`/`STALWART_ADMIN_SECRET`, default admin/admin (standing in for an
//!   account upstream keeps in its database).
//! * Logs go to stderr (the journal) in every mode. Upstream 0.15 logs to its `[tracer.*]` files
//!   and 0.16 in normal mode only to /var/log/stalwart (measured: stderr stays empty). The
//!   helper's gate reads those files too (unit-tested in its health module); no end-to-end
//!   test drives a failure line into them yet.
//! * Only HTTP listeners: no SMTP/IMAP/POP3 greeting (upstream 0.16 binds seven listeners).
//! * 0.16 listens on 127.0.0.1:8080; every listener is bound on 127.0.0.1 whatever its address;
//!   env `STANDIN_HTTP_PORT` overrides the port of both generations.
//! * The fallback admin secret: `$6$` sha512-crypt hashes are verified (what upstream's
//!   `--init` writes), any other value is compared as a plain secret (upstream also accepts
//!   other hash schemes).
//! * Endpoints `POST /standin/deliver?n=K` (appends K mail records, 503 while read-only) and
//!   `GET /standin/digest` (`{"version","schema","records","sha256","blobs"}`; sha256 over the
//!   sorted keys and payloads WITHOUT the schema tag, so a migration that keeps the data keeps
//!   the digest, while `schema` tells which schema the files are in).
//! * A fresh data store is seeded with 50 deterministic records (45 `mail/`, 5 `settings/`).

mod blob;
mod cli;
mod config;
mod crypt;
mod http;
mod log;
mod records;
mod rocks;
mod sqlite;
mod store;

use cli::Command;
use config::StoreSpec;
use records::Records;
use stalwart_standin::release::{read_trailer, schema_for, uses_json_config};
use stalwart_standin::{Fault, Release};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;

/// Marker byte that starts every export file (upstream).
const EXPORT_MARKER: u8 = 123;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = run(&args);
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn run(args: &[String]) -> i32 {
    let cmd = match cli::parse(args, std::env::var("CONFIG_PATH").ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if cmd == Command::Help {
        // Upstream prints its help on stderr, exit 0.
        eprint!("{}", cli::HELP);
        return 0;
    }
    if cmd == Command::MissingConfig {
        eprintln!("Missing '--config' argument for import/export.");
        return 0;
    }
    let Some(release) = read_trailer(Path::new("/proc/self/exe")) else {
        eprintln!(
            "stalwart-standin: this binary is not stamped. It is a test double and must be \
             stamped into a release first (stalwart_standin::release::stamp, trailer \
             STNDREL1) before it can run."
        );
        return 1;
    };
    if cmd == Command::Version {
        println!("{}", release.version);
        return 0;
    }
    let (Some(own), Some(json)) = (
        schema_for(&release.version),
        uses_json_config(&release.version),
    ) else {
        eprintln!(
            "stalwart-standin: the stamped version {:?} has no known schema",
            release.version
        );
        return 1;
    };
    match cmd {
        Command::Help | Command::Version | Command::MissingConfig => 0,
        Command::Console => {
            eprintln!("error: the database console is not implemented by the stand-in");
            1
        }
        Command::Init { .. } if json => {
            // 0.16 has no --init: its parser then wants a value for an unknown argument.
            eprintln!("Missing value for argument 'init', try '--help'.");
            1
        }
        Command::Init { dir } => init(&dir),
        Command::Serve { config } => serve(&release, own, json, &config),
        Command::Export { config, dir } => {
            report(export(&release, own, json, &config, &dir), "export")
        }
        Command::Import { config, dir } => {
            report(import(&release, own, json, &config, &dir), "import")
        }
    }
}

fn report(r: Result<(), String>, what: &str) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            error!("Failed to {what} database: {e}");
            1
        }
    }
}

/// `-I/--init DIR` (0.15): writes DIR/etc/config.toml (over an existing one, as upstream does)
/// and creates DIR/data and DIR/logs; both lines go to stderr (measured with the real 0.15.5).
fn init(dir: &Path) -> i32 {
    let etc = dir.join("etc");
    let cfg = etc.join("config.toml");
    let res = (|| -> std::io::Result<String> {
        for d in [&etc, &dir.join("data"), &dir.join("logs")] {
            std::fs::create_dir_all(d)?;
        }
        let seed = format!("{}{:?}", std::process::id(), std::time::SystemTime::now());
        let random = records::hex(&sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(seed.as_bytes()),
        ));
        let (password, salt) = (
            std::env::var("STALWART_ADMIN_PASSWORD").unwrap_or_else(|_| random[..10].to_string()),
            &random[16..32],
        );
        // Like upstream, the config holds a sha512-crypt hash; the password is printed once.
        let hash =
            crypt::sha512_crypt(password.as_bytes(), &format!("$6${salt}")).unwrap_or_default();
        std::fs::write(&cfg, config::default_toml(dir, &hash))?;
        Ok(password)
    })();
    match res {
        Ok(secret) => {
            eprintln!("✅ Configuration file written to {}", cfg.display());
            eprintln!("🔑 Your administrator account is 'admin' with password '{secret}'.");
            0
        }
        Err(e) => {
            eprintln!("Failed to create directory: {e}");
            1
        }
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT/SIGTERM in every thread (inherited by threads spawned later) so the main thread
/// can `sigwait` for them; with fault ignore-stop they are ignored instead.
fn setup_signals(ignore: bool) {
    let set = signal_set();
    // SAFETY: plain libc signal-mask / disposition calls with valid arguments.
    unsafe {
        if ignore {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        } else {
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }
}

fn wait_for_stop(ignore: bool) -> i32 {
    if ignore {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let set = signal_set();
    let mut sig: libc::c_int = 0;
    // SAFETY: set is a valid, initialised sigset_t; sig is a valid out pointer.
    while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
    sig
}

fn serve(release: &Release, own: u32, json: bool, config_path: &Path) -> i32 {
    // Measured with the real 0.15.5: a missing or unreadable config.toml ends the process
    // silently with exit 0.
    if !json && std::fs::File::open(config_path).is_err() {
        return 0;
    }
    info!("Stalwart Server v{} starting", release.version);
    let mut cfg = match config::load(config_path, json) {
        Ok(c) => c,
        Err(e) => {
            error!("Failed to load configuration: {e}");
            return 1;
        }
    };
    if release.fault == Fault::CrashAtStart {
        error!("Stalwart Server crashed during start-up (stand-in fault crash-at-start)");
        return 1;
    }
    let ignore_stop = release.fault == Fault::IgnoreStop;
    // Until start-up is done SIGINT/SIGTERM keep their default action, as upstream (its handlers
    // come later): a stop during a migration kills the process outright.
    if ignore_stop {
        setup_signals(true);
    }

    let mut store = None;
    let mut migration = None;
    if let Some(spec) = &cfg.data {
        let (s, created) = match Store::open(spec, Some((own, records::seed(own)))) {
            Ok(x) => x,
            Err(e) => {
                error!("Failed to open data store: {e}");
                return 1;
            }
        };
        if created {
            info!(
                "Initialised a new database (schema {own}, {} records)",
                records::SEED_RECORDS
            );
            if let Some(dir) = &cfg.blob_dir {
                if let Err(e) = seed_blobs(dir, &s) {
                    error!("Failed to initialise blob store: {e}");
                    return 1;
                }
            }
        }
        let stored = s.schema();
        if stored > own {
            // Upstream panics here (exit 101), with this text (measured with the real 0.15.5).
            panic!("Unknown database schema version, expected {own} or below, found {stored}");
        }
        if stored < own {
            let mut wipe_settings = false;
            if json && stored < 5 {
                // Upstream: a panic ("Migration aborted: ..."), exit 101.
                panic!("Migration aborted: Stalwart v{} cannot migrate a database of schema {stored}: upgrade to 0.15 first, then to this version", release.version);
            }
            if own >= 7 && stored < 7 {
                // A 1.x on a 0.x store (measured with upstream's v1.0.0 branch on a real 0.16.18
                // RocksDB store): it adds its column families, then panics (exit 101), and the
                // 0.x release no longer opens that store. The released 1.0's text (facts:
                // stalwart-1x.md, upstream's docs) is used here; its exit code is unknown.
                let mark = vec![(
                    format!("{}v1-column-families", records::SETTINGS_PREFIX),
                    records::encode(stored, "sy sq sd gc created by 1.x"),
                )];
                let mut s = s;
                if let Err(e) = s.put_batch(&mark).and_then(|()| s.flush()) {
                    error!("Failed to open the 1.x subspaces: {e}");
                }
                panic!("The data store was created by a Stalwart version prior to 1.0 (schema version {stored}) and cannot be opened by this version.");
            }
            if json && stored == 5 {
                if std::env::var("STALWART_RECOVERY_MODE").as_deref() != Ok("1") {
                    // Upstream writes into the old database before it refuses (its node-id
                    // lease, default settings objects: measured, the real 0.15.5 then reports
                    // "Data corruption detected"), so a rollback must restore the snapshot.
                    let lease = vec![(
                        format!("{}node-lease-016", records::SETTINGS_PREFIX),
                        records::encode(stored, "node 0 leased by 0.16"),
                    )];
                    let mut s = s;
                    if let Err(e) = s.put_batch(&lease).and_then(|()| s.flush()) {
                        error!("Failed to lease a node id: {e}");
                    }
                    panic!("Migration aborted: Upgrading to version 0.16 is a multi-step process, please read https://github.com/stalwartlabs/stalwart/blob/main/UPGRADING/v0_16.md");
                }
                wipe_settings = true;
            }
            migration = Some((stored, wipe_settings));
        }
        store = Some(s);
    }

    if cfg.mode == config::Mode::Bootstrap {
        bootstrap_notice(&mut cfg);
    }
    let app = Arc::new(http::App {
        release: release.clone(),
        json_generation: json,
        mode: cfg.mode,
        store: Mutex::new(store),
        read_only: AtomicBool::new(true),
        ready: AtomicBool::new(false),
        blob_dir: cfg.blob_dir.clone(),
        admin: cfg.admin.clone(),
        unprivileged: cfg.unprivileged.clone(),
        state_counter: AtomicU64::new(0),
        webui: AtomicBool::new(true),
        settings: cfg.settings.clone(),
        registry: Mutex::new(Vec::new()),
        principals: Mutex::new(Vec::new()),
    });
    if let Some((from, wipe_settings)) = migration {
        info!("Migrating database from schema {from} to {own}");
        info!("The database is read-only during the migration: no new e-mail can be received");
        if wipe_settings {
            warn!(
                "Recovery mode: settings records ({}*) will be wiped",
                records::SETTINGS_PREFIX
            );
        }
        if release.fault == Fault::MigrationFails {
            std::thread::sleep(Duration::from_millis(release.migrate_ms / 2));
            error!(
                "Failed to migrate database: stand-in fault migration-fails (database left at \
                 schema {from})"
            );
            return 0;
        }
        std::thread::sleep(Duration::from_millis(release.migrate_ms));
        if let Err(e) = migrate(&app, own, wipe_settings) {
            // Upstream exits 0 after a failed migration.
            error!("Failed to migrate database: {e}");
            return 0;
        }
        info!("Migration completed");
    }

    // Upstream listens only once the migration and the start-up are done: connection refused
    // until then (facts: "Sockets listen only after the migration").
    setup_signals(ignore_stop);
    if let Err(e) = http::serve(
        app.clone(),
        &cfg.http_ports,
        &cfg.https_ports,
        cfg.certificate.as_ref(),
    ) {
        error!("{e}");
        return 1;
    }
    let has_store = app.store.lock().map(|s| s.is_some()).unwrap_or(false);
    app.read_only.store(false, Ordering::SeqCst);
    if cfg.mode == config::Mode::Bootstrap {
        // Upstream's bootstrap mode runs on an in-memory store and is ready (measured).
        app.ready.store(true, Ordering::SeqCst);
    } else if !has_store {
        warn!("No data store configured: /healthz/ready answers 503");
    } else if release.fault == Fault::NeverReady {
        warn!("Stand-in fault never-ready: /healthz/ready answers 503");
    } else {
        app.ready.store(true, Ordering::SeqCst);
    }
    info!("Stalwart Server v{} started", release.version);
    if release.fault == Fault::CrashLater {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(15));
            error!("Stalwart Server crashed (stand-in fault crash-later)");
            std::process::exit(1);
        });
    }

    let sig = wait_for_stop(ignore_stop);
    info!(
        "Received {}, shutting down Stalwart Server v{}",
        if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        },
        release.version
    );
    app.ready.store(false, Ordering::SeqCst);
    app.read_only.store(true, Ordering::SeqCst);
    // Upstream sleeps a fixed second before it exits (measured: stops take 1.02-1.08 s).
    std::thread::sleep(Duration::from_secs(1));
    let mut guard = match app.store.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(s) = guard.as_mut() {
        if let Err(e) = s.flush() {
            error!("Failed to flush database: {e}");
            return 1;
        }
    }
    info!("Stalwart Server stopped");
    0
}

/// 0.16 bootstrap mode (no config.json): upstream prints a temporary administrator in a box on
/// stderr unless STALWART_RECOVERY_ADMIN is set (measured with the real 0.16.18).
fn bootstrap_notice(cfg: &mut config::ServerConfig) {
    warn!("Server started in bootstrap mode (server.bootstrap-mode) details = \"No configuration file was found. Port 8080 is open for initial setup.\"");
    if cfg.admin.is_some() {
        return;
    }
    let seed = format!("{}{:?}", std::process::id(), std::time::SystemTime::now());
    let random = records::hex(&sha2::Digest::finalize(
        <sha2::Sha256 as sha2::Digest>::new_with_prefix(seed.as_bytes()),
    ));
    let password = random[..16].to_string();
    eprintln!("🔑 Stalwart bootstrap mode - temporary administrator account\n   username: admin\n   password: {password}");
    cfg.admin = Some(("admin".into(), password));
}

fn seed_blobs(dir: &Path, store: &Store) -> Result<(), String> {
    for (k, v) in store.records()? {
        if k.starts_with(records::MAIL_PREFIX) {
            blob::put(dir, records::decode(&v).as_bytes())?;
        }
    }
    Ok(())
}

/// Rewrites every record with the new schema tag into new files (and drops settings records in
/// 0.16 recovery mode), then stores the new schema number.
fn migrate(app: &http::App, to: u32, wipe_settings: bool) -> Result<(), String> {
    let mut guard = app
        .store
        .lock()
        .map_err(|_| "store lock poisoned".to_string())?;
    let Some(store) = guard.as_mut() else {
        return Ok(());
    };
    let old = store.records()?;
    let before = old.len();
    let new: Records = old
        .iter()
        .filter(|(k, _)| !(wipe_settings && k.starts_with(records::SETTINGS_PREFIX)))
        .map(|(k, v)| (k.clone(), records::encode(to, records::decode(v))))
        .collect();
    if wipe_settings {
        info!(
            "Recovery mode: wiped {} settings records",
            before - new.len()
        );
    }
    info!("Rewriting {} records with schema {to}", new.len());
    store.rewrite_all(new, to)
}

fn data_spec(json: bool, config_path: &Path) -> Result<StoreSpec, String> {
    config::load(config_path, json)?
        .data
        .ok_or_else(|| "no data store configured".to_string())
}

fn subspace_char(key: &str) -> Result<u8, String> {
    match key.bytes().next() {
        Some(b) if b.is_ascii_alphanumeric() => Ok(b),
        _ => Err(format!("record key {key:?} has no valid subspace")),
    }
}

/// `--export DIR`: one LZ4-framed file per subspace.
fn export(
    release: &Release,
    own: u32,
    json: bool,
    config: &Path,
    dir: &Path,
) -> Result<(), String> {
    let spec = data_spec(json, config)?;
    let (store, _) = Store::open(&spec, None)?;
    let stored = store.schema();
    if stored != own {
        return Err(format!(
            "the database has schema {stored} but Stalwart v{} uses schema {own}; start the \
             matching version to export it",
            release.version
        ));
    }
    let recs = store.records()?;
    let mut by_subspace: std::collections::BTreeMap<u8, Vec<u8>> = Default::default();
    for (k, v) in &recs {
        let sub = subspace_char(k)?;
        let buf = by_subspace.entry(sub).or_insert_with(|| {
            let mut b = vec![EXPORT_MARKER, sub];
            b.extend_from_slice(&own.to_le_bytes());
            b
        });
        records::put_bytes(buf, k.as_bytes());
        records::put_bytes(buf, v.as_bytes());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (sub, buf) in &by_subspace {
        let path = dir.join(format!("subspace_{}", *sub as char));
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut enc = lz4_flex::frame::FrameEncoder::new(file);
        enc.write_all(buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let file = enc
            .finish()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        file.sync_all()
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    info!(
        "Exported {} records ({} subspaces, schema {own}) to {}",
        recs.len(),
        by_subspace.len(),
        dir.display()
    );
    Ok(())
}

/// `--import DIR`: replaces the store content with the export in DIR (same schema only).
fn import(
    release: &Release,
    own: u32,
    json: bool,
    config: &Path,
    dir: &Path,
) -> Result<(), String> {
    let spec = data_spec(json, config)?;
    let mut files: Vec<(u8, std::path::PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(c) = name.strip_prefix("subspace_") {
            if let [b] = c.as_bytes() {
                files.push((*b, e.path()));
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no subspace_* files in {}", dir.display()));
    }
    let mut recs = Records::new();
    for (sub, path) in &files {
        let p = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("{p}: {e}"))?;
        let mut buf = Vec::new();
        lz4_flex::frame::FrameDecoder::new(file)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{p}: not a valid LZ4 frame: {e}"))?;
        if buf.len() < 6 || buf[0] != EXPORT_MARKER || buf[1] != *sub {
            return Err(format!("{p}: not a Stalwart export file (bad header)"));
        }
        let version = u32::from_le_bytes([buf[2], buf[3], buf[4], buf[5]]);
        if version != own {
            return Err(format!(
                "{p} was exported with schema version {version}, but Stalwart v{} uses schema \
                 {own}: import refused",
                release.version
            ));
        }
        let mut pos = 6;
        while pos < buf.len() {
            match records::take_record(&buf, &mut pos) {
                Some(Ok((k, v))) if k.as_bytes().first() == Some(sub) => {
                    recs.insert(k, v);
                }
                Some(Ok((k, _))) => return Err(format!("{p}: key {k:?} outside the subspace")),
                Some(Err(e)) => return Err(format!("{p}: {e}")),
                None => return Err(format!("{p}: truncated")),
            }
        }
    }
    let (mut store, _) = Store::open(&spec, Some((own, Records::new())))?;
    let n = recs.len();
    store.rewrite_all(recs, own)?;
    store.flush()?;
    info!("Imported {n} records (schema {own}) from {}", dir.display());
    Ok(())
}
