//! Snapshot benchmark (harness = false; prints figures). Run as root:
//!   cargo bench --bench snapshot
//! Env: SU_BENCH_DIR (default /var/tmp), SU_BENCH_ROCKS_MB (2048), SU_BENCH_FILES (1000),
//! SU_BENCH_SQLITE_MB (1024). E.g. SU_BENCH_ROCKS_MB=200 SU_BENCH_SQLITE_MB=100 for a quick run.
//!
//! Compares our snapshot (which includes making it durable: one syncfs) with `cp -a` of the same
//! data, reported both without and with a following `sync` (cp alone is not durable). The page
//! cache is flushed (`sync`) before every timed run so each measures only its own writes.

use stalwart_upgrade::server::serverconfig::ServerConfig;
use stalwart_upgrade::store::snapshot::{Manifest, SnapshotMeta, Snapshots};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// Incompressible-looking data, different per file (xorshift).
fn fill(path: &Path, bytes: u64, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

fn cp(args: &[&str], src: &Path, dst: &Path) -> (f64, f64) {
    sync();
    let (_, t_cp) = timed(|| {
        let st = Command::new("cp")
            .args(args)
            .arg(src)
            .arg(dst)
            .status()
            .unwrap();
        assert!(st.success());
    });
    let (_, t_sync) = timed(sync);
    (t_cp, t_cp + t_sync)
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let base = PathBuf::from(std::env::var("SU_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()));
    let rocks_mb = env_u64("SU_BENCH_ROCKS_MB", 2048);
    let files = env_u64("SU_BENCH_FILES", 1000).max(5);
    let sqlite_mb = env_u64("SU_BENCH_SQLITE_MB", 1024);
    let tmp = tempfile::Builder::new()
        .prefix("su-bench-")
        .tempdir_in(&base)
        .unwrap();
    let dir = tmp.path();
    println!(
        "snapshot bench in {} ({} MiB RocksDB-like in {} files, {} MiB SQLite-like)",
        dir.display(),
        rocks_mb,
        files,
        sqlite_mb
    );

    // RocksDB-like: immutable .sst files plus a few mutable ones (manifest, WAL, options...).
    let rocks = dir.join("rocksdb");
    std::fs::create_dir(&rocks).unwrap();
    let mutable: [(&str, u64); 5] = [
        ("MANIFEST-000001", 256 << 10),
        ("CURRENT", 16),
        ("OPTIONS-000005", 8 << 10),
        ("000003.log", 8 << 20),
        ("IDENTITY", 36),
    ];
    let mutable_bytes: u64 = mutable.iter().map(|(_, s)| s).sum();
    let ssts = files - mutable.len() as u64;
    let sst_size = ((rocks_mb << 20).saturating_sub(mutable_bytes) / ssts).max(1);
    let (_, t_gen) = timed(|| {
        for i in 0..ssts {
            fill(&rocks.join(format!("{:06}.sst", i + 10)), sst_size, i + 1);
        }
        for (i, (name, size)) in mutable.iter().enumerate() {
            fill(&rocks.join(name), *size, 10_000 + i as u64);
        }
    });
    let rocks_bytes = ssts * sst_size + mutable_bytes;

    // SQLite-like: one big db file and a small WAL.
    let sq_dir = dir.join("sqlite");
    std::fs::create_dir(&sq_dir).unwrap();
    let db = sq_dir.join("stalwart.db");
    fill(&db, sqlite_mb << 20, 777);
    fill(&sq_dir.join("stalwart.db-wal"), 4 << 20, 778);
    let sqlite_bytes = (sqlite_mb << 20) + (4 << 20);
    sync();
    println!("generated in {t_gen:.1} s");

    let cfg_rocks = ServerConfig::parse_toml(
        &dir.join("config.toml"),
        &format!(
            "storage.data = \"rocksdb\"\nstore.rocksdb.type = \"rocksdb\"\nstore.rocksdb.path = \"{}\"\n",
            rocks.display()
        ),
    )
    .unwrap();
    let cfg_sqlite = ServerConfig::parse_toml(
        &dir.join("config.toml"),
        &format!(
            "storage.data = \"sq\"\nstore.sq.type = \"sqlite\"\nstore.sq.path = \"{}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let meta = SnapshotMeta {
        server_version: "0.15.5".parse().unwrap(),
        target_version: None,
        class: None,
        server_binary: PathBuf::from("/nonexistent"),
    };
    let snaps = Snapshots::new(&dir.join("snapshots"));

    // Each side runs twice, alternating, and the faster run counts: the machine is shared and
    // the first run after the data was written pays for the journal catching up.
    let rounds = env_u64("SU_BENCH_ROUNDS", 2).max(1);

    // --- RocksDB dir
    let (mut t_ours, mut t_cp, mut t_cp_sync) = (f64::MAX, f64::MAX, f64::MAX);
    let mut m_rocks: Option<Manifest> = None;
    for _ in 0..rounds {
        if let Some(m) = m_rocks.take() {
            snaps.remove(&m.id).unwrap();
        }
        let _ = std::fs::remove_dir_all(dir.join("rocksdb.cp"));
        sync();
        let (m, t) = timed(|| snaps.create(&cfg_rocks, &meta).unwrap());
        m_rocks = Some(m);
        t_ours = t_ours.min(t);
        let (a, b) = cp(&["-a"], &rocks, &dir.join("rocksdb.cp"));
        t_cp = t_cp.min(a);
        t_cp_sync = t_cp_sync.min(b);
    }
    let m_rocks = m_rocks.unwrap();
    println!(
        "\n== RocksDB-like dir: {:.2} GiB, {} files (best of {rounds})",
        gib(rocks_bytes),
        files
    );
    println!("  our snapshot (links + copies + syncfs): {:8.3} s", t_ours);
    println!(
        "  cp -a:                                  {:8.3} s   ratio {:6.1}x",
        t_cp,
        t_cp / t_ours
    );
    println!(
        "  cp -a + sync:                           {:8.3} s   ratio {:6.1}x",
        t_cp_sync,
        t_cp_sync / t_ours
    );

    // --- SQLite file
    let (mut t_ours_sq, mut t_cp_sq, mut t_cp_sq_sync) = (f64::MAX, f64::MAX, f64::MAX);
    let mut m_sq: Option<Manifest> = None;
    for round in 0..rounds {
        if let Some(m) = m_sq.take() {
            snaps.remove(&m.id).unwrap();
        }
        let _ = std::fs::remove_dir_all(dir.join("sqlite.cp"));
        let cp_first = round % 2 == 1;
        let mut round_cp = (0.0, 0.0);
        if cp_first {
            let (a, b) = cp(&["-a"], &sq_dir, &dir.join("sqlite.cp"));
            t_cp_sq = t_cp_sq.min(a);
            t_cp_sq_sync = t_cp_sq_sync.min(b);
            round_cp = (a, b);
        }
        sync();
        let (m, t) = timed(|| snaps.create(&cfg_sqlite, &meta).unwrap());
        m_sq = Some(m);
        t_ours_sq = t_ours_sq.min(t);
        if !cp_first {
            let (a, b) = cp(&["-a"], &sq_dir, &dir.join("sqlite.cp"));
            t_cp_sq = t_cp_sq.min(a);
            t_cp_sq_sync = t_cp_sq_sync.min(b);
            round_cp = (a, b);
        }
        eprintln!(
            "  (sqlite round {round}: ours {t:.3} s, cp -a {:.3} s, cp -a + sync {:.3} s)",
            round_cp.0, round_cp.1
        );
    }
    let m_sq = m_sq.unwrap();
    let how = m_sq.stores[0].files[0].how;
    println!(
        "\n== SQLite-like file: {:.2} GiB (copied with {:?}, best of {rounds})",
        gib(sqlite_bytes),
        how
    );
    println!(
        "  our snapshot (copy + syncfs):           {:8.3} s",
        t_ours_sq
    );
    println!(
        "  cp -a:                                  {:8.3} s   ratio {:6.2}x",
        t_cp_sq,
        t_cp_sq / t_ours_sq
    );
    println!(
        "  cp -a + sync:                           {:8.3} s   ratio {:6.2}x",
        t_cp_sq_sync,
        t_cp_sq_sync / t_ours_sq
    );

    // --- hashing (after the server is back up), page cache warm as right after create.
    let cpu0 = cpu_seconds();
    let (_, t_hash) = timed(|| snaps.hash(&m_rocks.id).unwrap());
    let cpu_hash = cpu_seconds() - cpu0;
    let cpu0 = cpu_seconds();
    let (_, t_hash_sq) = timed(|| snaps.hash(&m_sq.id).unwrap());
    let cpu_hash_sq = cpu_seconds() - cpu0;
    println!(
        "\n== hash (sha256, {} threads)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "  RocksDB-like snapshot: {:.2} GiB in {:.3} s = {:.2} GB/s",
        gib(rocks_bytes),
        t_hash,
        rocks_bytes as f64 / t_hash / 1e9
    );
    println!(
        "  SQLite-like snapshot:  {:.2} GiB in {:.3} s = {:.2} GB/s",
        gib(sqlite_bytes),
        t_hash_sq,
        sqlite_bytes as f64 / t_hash_sq / 1e9
    );
    println!(
        "  per CPU-second (independent of other load on the machine): RocksDB-like {:.2} GB/s, \
         SQLite-like {:.2} GB/s; load average now {}",
        rocks_bytes as f64 / cpu_hash / 1e9,
        sqlite_bytes as f64 / cpu_hash_sq / 1e9,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let (r, t_verify) = timed(|| snaps.verify(&m_rocks.id).unwrap());
    assert!(r.ok());
    println!(
        "  verify RocksDB-like (warm cache): {:.3} s = {:.2} GB/s",
        t_verify,
        r.bytes_checked as f64 / t_verify / 1e9
    );
    // Cold: evict only our own files from the page cache (and the live files they link to).
    evict(&snaps.root);
    evict(&rocks);
    let (r, t_cold) = timed(|| snaps.verify(&m_rocks.id).unwrap());
    assert!(r.ok());
    println!(
        "  verify RocksDB-like (cold cache): {:.3} s = {:.2} GB/s",
        t_cold,
        r.bytes_checked as f64 / t_cold / 1e9
    );
    println!("\nremoving {}", dir.display());
}

/// POSIX_FADV_DONTNEED on every file below `dir` (clean pages only: sync first).
fn evict(dir: &Path) {
    sync();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = p.symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let f = std::fs::File::open(&p).unwrap();
                // SAFETY: valid descriptor; advice only.
                unsafe {
                    libc::posix_fadvise(
                        std::os::unix::io::AsRawFd::as_raw_fd(&f),
                        0,
                        0,
                        libc::POSIX_FADV_DONTNEED,
                    );
                }
            }
        }
    }
}

/// User + system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}
