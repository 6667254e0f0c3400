//! Downtime (stop issued -> the new version answers /healthz/ready, from the journal) of patch
//! upgrades, minor upgrades and automatic rollbacks, each as a ratio to a bare
//! `systemctl stop` + `systemctl start` + ready of the same server in the same run, for a
//! RocksDB-like directory and a SQLite file of 1 and 4 GiB (stand-in server, booted container),
//! a PostgreSQL database of 1 and 4 GiB (upstream's real 0.15 server) and a MariaDB one (the real
//! 0.16 server).
//! Plus the helper's peak RSS. `cargo bench --bench downtime` (root; uses the testbed and the
//! release build of the helper). `DOWNTIME_BENCH_GIB=1,4` picks the sizes, `DOWNTIME_BENCH_ROUNDS`
//! the rounds (median reported), `DOWNTIME_BENCH_STORES=rocksdb,sqlite,sqlite+xfs,postgres,pg+clone,mariadb`
//! the stores (`pg+clone`: PostgreSQL whose role may create databases, snapshotted as a clone database;
//! `sqlite+xfs`: the SQLite store and the snapshots on a loop-mounted XFS with reflinks).

use std::time::{Duration, Instant};
use testbed::stalwart::{self, ServerLayout};
use testbed::{Container, Fault};

/// Bare stop + start + ready, polled from inside every 20 ms as the health gate does.
fn bare_restart(ct: &Container) -> Duration {
    let script = "systemctl stop stalwart.service && systemctl start stalwart.service && \
                  until curl -sf -o /dev/null http://127.0.0.1:8080/healthz/ready; do sleep 0.02; done";
    // Like the helper, clear the start-rate counter first (5 restarts in 10 s hit the limit).
    let _ = ct.exec_ok(&["systemctl", "reset-failed", "stalwart.service"]);
    let t = Instant::now();
    let out = ct.sh(script);
    assert!(out.status.success(), "{out:?}");
    t.elapsed()
}

/// The helper's peak RSS (KiB) over every run of it in this bench, measured inside the
/// container by a wrapper that waits for it (ru_maxrss of its waited-for children: the helper
/// and the dump tools it waits for, not the server, which systemd starts).
static PEAK_RSS_KIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

const RSS_WRAPPER: &str = r#"import resource, subprocess, sys
r = subprocess.call(sys.argv[1:])
sys.stderr.write("\nbench-maxrss-kib=%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r)
"#;

/// Runs the helper with `args` through the RSS wrapper; records its peak.
fn helper_run(ct: &Container, helper: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    ct.write_file("/usr/local/share/bench-rss.py", RSS_WRAPPER)?;
    let mut full = vec!["python3", "/usr/local/share/bench-rss.py", helper];
    full.extend(args);
    let out = ct.exec_timeout(&full, Duration::from_secs(1800));
    let err = String::from_utf8_lossy(&out.stderr);
    if let Some(kib) = err
        .lines()
        .filter_map(|l| l.strip_prefix("bench-maxrss-kib="))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .next_back()
    {
        PEAK_RSS_KIB.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(out)
}

/// Fills the (stopped) server's store with about `gib` GiB of mail-like records, as its user.
fn fill(ct: &Container, sqlite: bool, gib: u64) -> anyhow::Result<()> {
    let script = match sqlite {
        true => format!(
            r#"import os, sqlite3, base64
db = sqlite3.connect("/opt/stalwart/data/index.sqlite3")
db.execute("PRAGMA journal_mode=WAL")
blob = base64.b64encode(os.urandom(786432)).decode()  # 1 MiB of text
schema = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()[0]
for i in range({n}):
    db.execute("INSERT OR REPLACE INTO records VALUES (?, ?)", ("mail/bench%08d" % i, "s%d:%08d%s" % (schema, i, blob)))
    if i % 64 == 63: db.commit()
db.commit(); db.execute("PRAGMA wal_checkpoint(TRUNCATE)"); db.close()
"#,
            n = gib * 1024
        ),
        false => format!(
            r#"import os, json, hashlib, struct, base64
d = "/opt/stalwart/data"
cur = open(d + "/CURRENT").read().strip()
m = json.load(open(d + "/" + cur))
blob = base64.b64encode(os.urandom(786432))  # 1 MiB
schema = m["schema"]
for t in range({tables}):
    name = "%06d.sst" % m["next_file"]; m["next_file"] += 1
    body = b"STNDSST1" + struct.pack("<I", 64)
    for i in range(64):
        k = ("mail/bench%08d" % (t * 64 + i)).encode(); v = b"s%d:%08d" % (schema, t * 64 + i) + blob
        body += struct.pack("<I", len(k)) + k + struct.pack("<I", len(v)) + v
    body += hashlib.sha256(body).digest()
    with open(d + "/" + name, "wb") as f: f.write(body); f.flush(); os.fsync(f.fileno())
    m["sst"].append(name)
new = "MANIFEST-%06d" % m["next_file"]; m["next_file"] += 1
json.dump(m, open(d + "/" + new, "w")); open(d + "/CURRENT.tmp", "w").write(new + "\n")
os.rename(d + "/CURRENT.tmp", d + "/CURRENT"); os.remove(d + "/" + cur)
"#,
            tables = gib * 16
        ),
    };
    ct.write_file("/usr/local/share/fill.py", script)?;
    ct.exec_ok(&["chmod", "0644", "/usr/local/share/fill.py"])?;
    ct.sh_ok("systemctl stop stalwart.service && runuser -u stalwart -- python3 /usr/local/share/fill.py && systemctl start stalwart.service")?;
    stalwart::wait_ready(ct, Duration::from_secs(600))?;
    Ok(())
}

/// The last transaction's record in `history --json`.
fn last(ct: &Container, helper: &str) -> anyhow::Result<serde_json::Value> {
    let h = ct.exec_ok(&[helper, "history", "--json"])?;
    let h: serde_json::Value = serde_json::from_str(&h)?;
    Ok(h.as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default())
}

/// The last transaction's journal records.
fn journal(ct: &Container, helper: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let txid = last(ct, helper)?["txid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let j = ct.exec_ok(&[
        "cat",
        &format!("/var/lib/stalwart-upgrade/history/{txid}.jsonl"),
    ])?;
    j.lines()
        .map(|l| serde_json::from_str(l).map_err(Into::into))
        .collect()
}

/// When the journal says `rec`/`key`=`name` reached `phase`.
fn at(records: &[serde_json::Value], rec: &str, key: &str, name: &str, phase: &str) -> Option<u64> {
    records
        .iter()
        .find(|r| r["rec"] == rec && r[key] == name && r["phase"] == phase)
        .and_then(|r| r["at"].as_u64())
}

/// An upgrade to `rel`: its downtime from the journal (stop started -> ready), and the part of
/// it that is the new server's own start -> ready (a migration runs there).
fn upgrade(
    ct: &Container,
    helper: &str,
    rel: &std::path::Path,
) -> anyhow::Result<(Duration, Duration)> {
    let p = ct
        .target_path(rel)
        .ok_or_else(|| anyhow::anyhow!("release not under target/"))?;
    upgrade_path(ct, helper, &p)
}

/// `upgrade`, to the binary at `p` inside the container.
fn upgrade_path(ct: &Container, helper: &str, p: &str) -> anyhow::Result<(Duration, Duration)> {
    let out = helper_run(ct, helper, &["upgrade", "--to", p, "--yes"])?;
    anyhow::ensure!(out.status.success(), "upgrade to {}: {out:?}", p);
    let l = last(ct, helper)?;
    let ms = l["downtime_ms"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no downtime in {l}"))?;
    let j = journal(ct, helper)?;
    let server = match (
        at(&j, "step", "step", "start", "started"),
        at(&j, "step", "step", "health", "done"),
    ) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => anyhow::bail!("no start/health records in {j:?}"),
    };
    Ok((Duration::from_millis(ms), Duration::from_millis(server)))
}

/// An upgrade to a release that fails at start, rolled back automatically: the time from the
/// failure seen (the abort record) to the old version healthy again (undo-start done).
fn rollback(ct: &Container, helper: &str, rel: &std::path::Path) -> anyhow::Result<Duration> {
    let p = ct
        .target_path(rel)
        .ok_or_else(|| anyhow::anyhow!("release not under target/"))?;
    let out = helper_run(ct, helper, &["upgrade", "--to", &p, "--yes", "--retry"])?;
    anyhow::ensure!(out.status.code() == Some(5), "expected a rollback: {out:?}");
    let j = journal(ct, helper)?;
    let abort = j
        .iter()
        .find(|r| r["rec"] == "abort")
        .and_then(|r| r["at"].as_u64());
    match (abort, at(&j, "undo", "undo", "start", "done")) {
        (Some(a), Some(b)) => Ok(Duration::from_millis(b.saturating_sub(a))),
        _ => anyhow::bail!("no abort/undo-start in {j:?}"),
    }
}

/// `snapshot restore` of the newest snapshot an upgrade took, with the server stopped (what a
/// rollback of a minor upgrade does inside its downtime), and that snapshot's method.
fn restore_newest(ct: &Container, helper: &str) -> anyhow::Result<(Duration, String)> {
    let out = helper_run(ct, helper, &["snapshot", "list", "--json"])?;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let newest = list
        .as_array()
        .and_then(|a| a.iter().rfind(|m| m["origin"].is_null()))
        .ok_or_else(|| anyhow::anyhow!("no snapshot in {list}"))?;
    let id = newest["id"].as_str().unwrap_or_default().to_string();
    let method = newest["stores"][0]["method"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ct.exec_ok(&["systemctl", "stop", "stalwart.service"])?;
    let t0 = Instant::now();
    let out = helper_run(ct, helper, &["snapshot", "restore", &id, "--yes"])?;
    let took = t0.elapsed();
    anyhow::ensure!(out.status.success(), "restore of {id}: {out:?}");
    ct.exec_ok(&["systemctl", "start", "stalwart.service"])?;
    Ok((took, method))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    store: &'static str,
    gib: u64,
    bare: Duration,
    patch: Duration,
    patch_server: Duration,
    /// The minor upgrade's downtime and the new server's own start -> ready within it.
    minor: Option<(Duration, Duration)>,
    rollback: Duration,
    /// PostgreSQL: `snapshot restore` of the upgrade's snapshot (server stopped), and the
    /// snapshot's method.
    restore: Option<(Duration, String)>,
}

fn run(
    kind: &'static str,
    gib: u64,
    rounds: u32,
    helper_host: &std::path::Path,
) -> anyhow::Result<Row> {
    // `sqlite+xfs`: the store and the snapshots on a file system that shares extents.
    let xfs = if kind == "sqlite+xfs" {
        Some(Xfs::mount(gib)?)
    } else {
        None
    };
    let ct = match &xfs {
        Some(x) => Container::builder()
            .bind(x.dir.join("data"), "/opt/stalwart/data")
            .bind(x.dir.join("snapshots"), "/srv/snapshots")
            .boot()?,
        None => Container::boot()?,
    };
    let sqlite = kind.starts_with("sqlite");
    let layout = if sqlite {
        ServerLayout::sqlite()
    } else {
        ServerLayout::rocksdb()
    };
    // A minor upgrade is measured from 0.14.3 -> 0.15.5 (the stand-in's migration rewrites every
    // record, as a real minor migration may); patch upgrades and the rollback on 0.15.x.
    stalwart::install_server(
        &ct,
        &testbed::standin_release("0.14.3", Fault::None, 0),
        layout,
    )?;
    stalwart::wait_ready(&ct, Duration::from_secs(30))?;
    let settings = match &xfs {
        Some(_) => format!("{BENCH_CONFIG}dir = \"/srv/snapshots\"\n"),
        None => BENCH_CONFIG.to_string(),
    };
    ct.write_file("/etc/stalwart-upgrade/config.toml", &settings)?;
    let helper = ct
        .target_path(helper_host)
        .ok_or_else(|| anyhow::anyhow!("helper not under target/"))?;
    fill(&ct, sqlite, gib)?;
    let _ = ct.exec_ok(&[&helper, "allow", "0.15"])?;
    let minor = upgrade(
        &ct,
        &helper,
        &testbed::standin_release("0.15.5", Fault::None, 0),
    )?;
    let mut bare = Vec::new();
    let mut patch = Vec::new();
    let mut patch_server = Vec::new();
    for i in 0..rounds {
        bare.push(bare_restart(&ct));
        let v = format!("0.15.{}", 6 + i);
        let (d, server) = upgrade(&ct, &helper, &testbed::standin_release(&v, Fault::None, 0))?;
        patch.push(d);
        patch_server.push(server);
    }
    // The rollback: a broken patch release that exits at start (the gate sees the unit fail).
    let rb = rollback(
        &ct,
        &helper,
        &testbed::standin_release("0.15.99", Fault::CrashAtStart, 0),
    )?;
    Ok(Row {
        store: kind,
        gib,
        bare: median(&mut bare),
        patch: median(&mut patch),
        patch_server: median(&mut patch_server),
        minor: Some(minor),
        rollback: rb,
        restore: None,
    })
}

/// A loop-mounted XFS with reflinks (`mkfs.xfs -m reflink=1`, xfsprogs), unmounted and deleted
/// on drop: the `sqlite+xfs` row's data and snapshots, as on a btrfs or XFS data volume.
struct Xfs {
    dir: std::path::PathBuf,
    img: std::path::PathBuf,
}

impl Xfs {
    fn mount(gib: u64) -> anyhow::Result<Xfs> {
        use std::process::Command;
        let dir = std::path::PathBuf::from("/var/tmp/stalwart-bench-xfs");
        let img = dir.with_extension("img");
        let _ = Command::new("umount")
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status();
        std::fs::create_dir_all(&dir)?;
        // Sparse: the host pays for what is written (the live file, its WAL, and what the
        // minor upgrade's migration un-shares from the snapshot).
        std::fs::File::create(&img)?.set_len((gib * 6 + 4) << 30)?;
        let ok = |c: &mut Command| -> anyhow::Result<()> {
            let st = c.status()?;
            anyhow::ensure!(
                st.success(),
                "{c:?}: {st} (needs root, xfsprogs, a loop device)"
            );
            Ok(())
        };
        ok(Command::new("mkfs.xfs")
            .args(["-q", "-f", "-m", "reflink=1"])
            .arg(&img))?;
        ok(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir))?;
        for (d, mode) in [("data", 0o755), ("snapshots", 0o700)] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p)?;
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        Ok(Xfs { dir, img })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_file(&self.img);
    }
}

/// keep = 1: older snapshots are pruned at each commit (outside the downtime), so a 4 GiB row
/// needs room for the data and about two snapshots, not one per round.
const BENCH_CONFIG: &str = "[timeouts]\nsettle_secs = 0\nready_secs = 600\n[webadmin]\nenabled = false\n[snapshots]\nkeep = 1\n";

/// A PostgreSQL store needs a real server (the stand-in has none): upstream's 0.15.4 -> 0.15.5
/// with its data in the container's PostgreSQL, grown by `gib` GiB of 1 MiB rows (random, so no
/// compression helps) in a table of the store's database. A patch upgrade (one round: there are
/// two real 0.15 releases) and the automatic rollback from a release that fails at start; no
/// minor upgrade (the real minor from 0.15 is the crossing to 0.16, which its own tests cover).
///
/// `clone`: the store's role gets CREATEDB, so the snapshot is a clone database made inside
/// PostgreSQL (row `pg+clone`); without it (a default install's role, row `postgres`) a pg_dump.
fn run_pg(
    gib: u64,
    rounds: u32,
    helper_host: &std::path::Path,
    clone: bool,
) -> anyhow::Result<Option<Row>> {
    let (Some(old), Some(new)) = (
        testbed::real::release("0.15.4"),
        testbed::real::release("0.15.5"),
    ) else {
        eprintln!("postgres: skipped, the real 0.15.4 and 0.15.5 binaries are not in the cache");
        return Ok(None);
    };
    let ct = Container::builder()
        .bind_ro(testbed::real::cache_dir(), testbed::real::IN_CONTAINER)
        .boot()?;
    testbed::real_server::RealServer::install(&ct, old, testbed::real::Backend::Postgres)?;
    if clone {
        ct.sh_ok("runuser -u postgres -- psql -q -c 'ALTER ROLE stalwart CREATEDB'")?;
    }
    ct.write_file("/etc/stalwart-upgrade/config.toml", BENCH_CONFIG)?;
    let helper = ct
        .target_path(helper_host)
        .ok_or_else(|| anyhow::anyhow!("helper not under target/"))?;
    let psql = format!(
        "PGPASSWORD='{}' psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U stalwart stalwart",
        testbed::real_server::PG_SECRET
    );
    // 1 MiB of random bytes (32768 md5s), stored once per row with the row number appended.
    ct.sh_ok(&format!(
        "{psql} -c \"CREATE TABLE bench_fill (k int PRIMARY KEY, v bytea); \
         ALTER TABLE bench_fill ALTER COLUMN v SET STORAGE EXTERNAL; \
         CREATE TEMP TABLE seed AS SELECT decode(string_agg(md5(random()::text) || md5(random()::text), ''), 'hex') AS v FROM generate_series(1, 32768); \
         INSERT INTO bench_fill SELECT g, (SELECT v FROM seed) || int4send(g) FROM generate_series(1, {n}) g;\" && \
         {psql} -c 'VACUUM ANALYZE bench_fill' && {psql} -At -c \"SELECT pg_size_pretty(pg_database_size('stalwart'))\"",
        n = gib * 1024
    ))?;
    let (bare, (patch, patch_server), rb) =
        patch_and_rollback(&ct, &helper, new, "0.15.99", rounds)?;
    // The dump's restore at 4 GiB (a dump of the live database kept, then pg_restore with its
    // WAL) needs about 40 GB of disk: measured at 1 GiB only.
    let restore = if clone || gib <= 1 {
        let r = restore_newest(&ct, &helper)?;
        anyhow::ensure!(
            (r.1 == "pg-clone") == clone,
            "the snapshot was made by {}, not what this row measures",
            r.1
        );
        Some(r)
    } else {
        None
    };
    Ok(Some(Row {
        restore,
        store: if clone { "pg+clone" } else { "postgres" },
        gib,
        bare,
        patch,
        patch_server,
        minor: None,
        rollback: rb,
    }))
}

/// The real-server rows' measurements: the median bare restart, the patch upgrade to `new`
/// (downtime, the new server's own start -> ready) and the automatic rollback from a stand-in
/// `broken` release that fails at start.
fn patch_and_rollback(
    ct: &Container,
    helper: &str,
    new: &testbed::real::RealRelease,
    broken: &str,
    rounds: u32,
) -> anyhow::Result<(Duration, (Duration, Duration), Duration)> {
    let mut bare = Vec::new();
    for _ in 0..rounds {
        bare.push(bare_restart(ct));
    }
    let patch = upgrade_path(ct, helper, &new.in_container())?;
    let rb = rollback(
        ct,
        helper,
        &testbed::standin_release(broken, Fault::CrashAtStart, 0),
    )?;
    Ok((median(&mut bare), patch, rb))
}

/// A MariaDB store, on upstream's real 0.16.17 -> 0.16.18 (the 0.16 builds have the MySQL store;
/// the 0.15 ones do not), the store's database grown by `gib` GiB of 1 MiB rows in a table of its
/// own. One patch round and the automatic rollback from a release that fails at start: its undo
/// restores the dump inside the downtime, which is what MariaDB costs (see the plan's note on why
/// the dump cannot be taken before the stop). The restore at 1 GiB only, as for `postgres`.
fn run_maria(gib: u64, rounds: u32, helper_host: &std::path::Path) -> anyhow::Result<Option<Row>> {
    let (Some(old), Some(new)) = (
        testbed::real::release("0.16.17"),
        testbed::real::release("0.16.18"),
    ) else {
        eprintln!("mariadb: skipped, the real 0.16.17 and 0.16.18 binaries are not in the cache");
        return Ok(None);
    };
    let ct = Container::builder()
        .bind_ro(testbed::real::cache_dir(), testbed::real::IN_CONTAINER)
        .boot()?;
    testbed::real_server::RealServer::install(&ct, old, testbed::real::Backend::MariaDb)?;
    ct.write_file("/etc/stalwart-upgrade/config.toml", BENCH_CONFIG)?;
    let helper = ct
        .target_path(helper_host)
        .ok_or_else(|| anyhow::anyhow!("helper not under target/"))?;
    ct.sh_ok(&format!(
        "mariadb stalwart -e \"CREATE TABLE bench_fill (k INT PRIMARY KEY, v LONGBLOB); \
         INSERT INTO bench_fill SELECT seq, REPEAT(MD5(RAND()), 32768) FROM seq_1_to_{n}\" && \
         mariadb -N -e \"SELECT ROUND(SUM(data_length + index_length) / 1048576) FROM information_schema.tables WHERE table_schema = 'stalwart'\"",
        n = gib * 1024
    ))?;
    let (bare, (patch, patch_server), rb) =
        patch_and_rollback(&ct, &helper, new, "0.16.99", rounds)?;
    let restore = if gib <= 1 {
        Some(restore_newest(&ct, &helper)?)
    } else {
        None
    };
    Ok(Some(Row {
        restore,
        store: "mariadb",
        gib,
        bare,
        patch,
        patch_server,
        minor: None,
        rollback: rb,
    }))
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    testbed::preflight()?;
    let sizes: Vec<u64> = std::env::var("DOWNTIME_BENCH_GIB")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds: u32 = std::env::var("DOWNTIME_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let stores = std::env::var("DOWNTIME_BENCH_STORES")
        .unwrap_or_else(|_| "rocksdb,sqlite,sqlite+xfs,postgres,pg+clone,mariadb".into());
    // The packaged helper is a release build: measure that one.
    let helper = ["release", "debug"]
        .iter()
        .map(|p| testbed::target_dir().join(p).join("stalwart-upgrade"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("no helper binary under target/"))?;
    // Each row is printed as soon as it is measured: a later row that fails (a full disk)
    // does not take the others with it.
    print_header(rounds, &helper);
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for kind in stores.split(',').map(str::trim) {
        for &gib in &sizes {
            eprintln!("measuring {kind} {gib} GiB ...");
            let row = match kind {
                "rocksdb" => run("rocksdb", gib, rounds, &helper).map(Some),
                "sqlite" => run("sqlite", gib, rounds, &helper).map(Some),
                "sqlite+xfs" => run("sqlite+xfs", gib, rounds, &helper).map(Some),
                "postgres" | "pg+clone" => run_pg(gib, rounds, &helper, kind == "pg+clone"),
                "mariadb" => run_maria(gib, rounds, &helper),
                other => anyhow::bail!("unknown store {other:?} in DOWNTIME_BENCH_STORES"),
            };
            match row {
                Ok(Some(r)) => {
                    print_row(&r);
                    rows.push(r);
                }
                Ok(None) => {}
                Err(e) => {
                    println!("{kind:<10} {gib:>2} GiB  FAILED: {e:#}");
                    failed.push(format!("{kind} {gib} GiB"));
                }
            }
        }
    }
    print_growth(&rows);
    println!(
        "peak RSS of the helper (with the dump tools it waits for): {:.1} MiB",
        PEAK_RSS_KIB.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    );
    anyhow::ensure!(failed.is_empty(), "rows that failed: {}", failed.join(", "));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_header(rounds: u32, helper: &std::path::Path) {
    println!(
        "downtime, median of {rounds} (stand-in server; postgres: real 0.15, one patch round), helper {}:",
        helper.display()
    );
    println!(
        "store      size   bare ms  patch ms ratio  minor ms ratio (server's start->ready ms)  rollback ms ratio"
    );
}

fn print_row(r: &Row) {
    let ratio = |d: Duration| d.as_secs_f64() / r.bare.as_secs_f64();
    let minor = r
        .minor
        .map(|(m, server)| format!("{:>9.0} {:>5.2} ({:>8.0})", ms(m), ratio(m), ms(server)))
        .unwrap_or_else(|| format!("{:>9} {:>5} ({:>8})", "-", "-", "-"));
    println!(
        "{:<10} {:>2} GiB {:>8.0} {:>9.0} {:>5.2} {minor}                {:>11.0} {:>5.2}",
        r.store,
        r.gib,
        ms(r.bare),
        ms(r.patch),
        ratio(r.patch),
        ms(r.rollback),
        ratio(r.rollback)
    );
    if let Some((d, method)) = &r.restore {
        println!(
            "         snapshot restore, server stopped ({method}): {:.0} ms = {:.2} bare restarts",
            ms(*d),
            ratio(*d)
        );
    }
    // The minor upgrade without the new server's own start -> ready (where the stand-in's
    // migration rewrites every record), next to the same share of the patch upgrade.
    if let Some((m, server)) = r.minor {
        println!(
            "         stop -> new server started: minor {:.0} ms, patch {:.0} ms",
            ms(m.saturating_sub(server)),
            ms(r.patch.saturating_sub(r.patch_server))
        );
    }
}

fn print_growth(rows: &[Row]) {
    let by = |store: &str, gib: u64| rows.iter().find(|r| r.store == store && r.gib == gib);
    for store in [
        "rocksdb",
        "sqlite",
        "sqlite+xfs",
        "postgres",
        "pg+clone",
        "mariadb",
    ] {
        if let (Some(a), Some(b)) = (by(store, 1), by(store, 4)) {
            let g = |r: &Row| r.patch.as_secs_f64() / r.bare.as_secs_f64();
            println!(
                "{store}: patch ratio at 4 GiB / at 1 GiB = {:.2}",
                g(b) / g(a)
            );
        }
    }
}
