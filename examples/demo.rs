//! The demo behind `scripts/demo`: a throw-away systemd container, a (stand-in) Stalwart server
//! installed the way upstream's install.sh does, and stalwart-upgrade doing its job in it.

use std::process::Output;
use std::time::{Duration, Instant};
use testbed::stalwart::{self, ServerLayout};
use testbed::{Container, Fault};

fn show(title: &str, out: &Output) {
    println!("\n$ {title}   (exit {})", out.status.code().unwrap_or(-1));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        print!("{err}");
    }
}

fn main() -> anyhow::Result<()> {
    testbed::preflight()?;
    testbed::cleanup_stale()?;
    let t0 = Instant::now();
    println!(
        "== booting a Debian bookworm container with systemd (rootfs cached after the first run)"
    );
    let ct = Container::boot()?;
    println!(
        "   booted {} in {:.2} s",
        ct.name(),
        ct.boot_duration().as_secs_f64()
    );
    let helper = ct
        .target_path(testbed::target_dir().join("debug/stalwart-upgrade"))
        .ok_or_else(|| anyhow::anyhow!("helper binary not under target/"))?;
    let run = |args: &[&str]| {
        let mut full = vec![helper.as_str()];
        full.extend_from_slice(args);
        ct.exec_timeout(&full, Duration::from_secs(300))
    };

    println!("== installing the (stand-in) Stalwart 0.15.5 server the way install.sh does");
    stalwart::install_server(
        &ct,
        &testbed::standin_release("0.15.5", Fault::None, 0),
        ServerLayout::rocksdb(),
    )?;
    stalwart::wait_ready(&ct, Duration::from_secs(30))?;
    ct.write_file(
        "/etc/stalwart-upgrade/webadmin.cred",
        format!("admin:{}", stalwart::DEFAULT_ADMIN_SECRET),
    )?;
    ct.write_file(
        "/etc/stalwart-upgrade/config.toml",
        "[webadmin]\ncredentials_file = \"/etc/stalwart-upgrade/webadmin.cred\"\n[timeouts]\nready_secs = 15\n",
    )?;
    ct.exec_ok(&["chmod", "0600", "/etc/stalwart-upgrade/webadmin.cred"])?;
    println!("   data digest: {}", stalwart::digest(&ct)?);
    show("stalwart-upgrade status", &run(&["status"]));

    let inside = |p: std::path::PathBuf| ct.target_path(p).unwrap_or_default();
    let good = inside(testbed::standin_release("0.15.6", Fault::None, 0));
    show(
        &format!("stalwart-upgrade plan --to {good}"),
        &run(&["plan", "--to", &good]),
    );
    println!("\n== a patch upgrade 0.15.5 -> 0.15.6");
    show(
        "stalwart-upgrade upgrade --to ... --yes",
        &run(&["upgrade", "--to", &good, "--yes"]),
    );
    println!("   data digest: {}", stalwart::digest(&ct)?);

    println!("\n== a broken release (0.15.7 crashes at start): rolled back automatically");
    let bad = inside(testbed::standin_release("0.15.7", Fault::CrashAtStart, 0));
    show(
        "stalwart-upgrade upgrade --to ... --yes",
        &run(&["upgrade", "--to", &bad, "--yes"]),
    );
    println!("   data digest: {}", stalwart::digest(&ct)?);
    show("stalwart-upgrade status", &run(&["status"]));
    show("stalwart-upgrade history", &run(&["history"]));

    println!(
        "\n== done in {:.1} s; tearing the container down",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
