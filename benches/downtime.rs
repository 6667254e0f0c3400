//! Downtime of a patch upgrade (stop issued -> new version answers /healthz/ready), against a
//! bare `systemctl stop` + `systemctl start` + wait-for-ready of the same unit, in a booted
//! container. Prints both and the ratio. `cargo bench --bench downtime` (root; uses the testbed).

use std::time::{Duration, Instant};
use testbed::stalwart::{self, ServerLayout};
use testbed::{Container, Fault};

const ROUNDS: u32 = 5;

fn ready_loop(ct: &Container) -> Duration {
    // Poll from inside, as the health gate does, every 20 ms.
    let script = "systemctl stop stalwart.service && systemctl start stalwart.service && \
                  until curl -sf -o /dev/null http://127.0.0.1:8080/healthz/ready; do sleep 0.02; done";
    // Like the helper, clear the start-rate counter first (5 restarts in 10 s hit the limit).
    ct.exec_ok(&["systemctl", "reset-failed", "stalwart.service"])
        .unwrap_or_default();
    let t = Instant::now();
    let out = ct.sh(script);
    assert!(out.status.success(), "{out:?}");
    t.elapsed()
}

/// ru_maxrss (KiB) over terminated, waited-for descendants: includes the helper run through
/// nsenter, which waits for it.
fn children_maxrss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    testbed::preflight()?;
    let ct = Container::boot()?;
    stalwart::install_server(
        &ct,
        &testbed::standin_release("0.15.5", Fault::None, 0),
        ServerLayout::rocksdb(),
    )?;
    stalwart::wait_ready(&ct, Duration::from_secs(30))?;
    ct.write_file(
        "/etc/stalwart-upgrade/config.toml",
        "[timeouts]\nsettle_secs = 0\n[webadmin]\nenabled = false\n",
    )?;
    let helper = ct
        .target_path(testbed::target_dir().join("debug/stalwart-upgrade"))
        .ok_or_else(|| anyhow::anyhow!("helper not under target/"))?;

    // Peak RSS of the waited-for descendants so far (curl, systemctl, nsenter): the baseline that
    // the helper's own peak must exceed to show up below.
    let before_rss = children_maxrss_kib();
    let mut bare = Vec::new();
    let mut upgrade = Vec::new();
    let mut whole = Vec::new();
    for i in 0..ROUNDS {
        bare.push(ready_loop(&ct));
        let v = format!("0.15.{}", 6 + i);
        let rel = ct
            .target_path(testbed::standin_release(&v, Fault::None, 0))
            .ok_or_else(|| anyhow::anyhow!("release not under target/"))?;
        let t = Instant::now();
        let out = ct.exec(&[&helper, "upgrade", "--to", &rel, "--yes"]);
        whole.push(t.elapsed());
        anyhow::ensure!(out.status.success(), "upgrade to {v}: {out:?}");
        // Downtime from the journal: stop started -> health done (settle_secs = 0).
        let h = ct.exec_ok(&[&helper, "history", "--json"])?;
        let h: serde_json::Value = serde_json::from_str(&h)?;
        let last = h
            .as_array()
            .and_then(|a| a.last())
            .cloned()
            .unwrap_or_default();
        let ms = last["downtime_ms"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no downtime in {last}"))?;
        upgrade.push(Duration::from_millis(ms));
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (b, u, w) = (med(&mut bare), med(&mut upgrade), med(&mut whole));
    println!("patch upgrade downtime, median of {ROUNDS} (stand-in server, RocksDB-like store):");
    println!(
        "  bare stop + start + ready:        {:>7.1} ms",
        b.as_secs_f64() * 1e3
    );
    println!(
        "  stalwart-upgrade stop -> ready:   {:>7.1} ms",
        u.as_secs_f64() * 1e3
    );
    println!(
        "  ratio upgrade / bare:             {:>7.2}",
        u.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "  whole `upgrade` command:          {:>7.1} ms (stage, snapshot hashing, commit included)",
        w.as_secs_f64() * 1e3
    );
    let after_rss = children_maxrss_kib();
    if after_rss > before_rss {
        println!(
            "  peak RSS of the helper:           {:>7.1} MiB (getrusage of waited-for descendants)",
            after_rss as f64 / 1024.0
        );
    } else {
        println!(
            "  peak RSS of the helper:        <= {:>7.1} MiB (no larger than the other tools run)",
            before_rss as f64 / 1024.0
        );
    }
    Ok(())
}
