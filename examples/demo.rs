//! The demo behind `scripts/demo`, the main job end to end: build the packages (the helper, and
//! the `stalwart` package around three server releases), boot a throw-away systemd container with
//! a local apt repository, `apt-get install stalwart`, then `apt-get upgrade` to a patch release
//! (the maintainer scripts run the transaction) and to a broken release (rolled back
//! automatically, apt left clean), and show what an admin would look at.
//!
//! With upstream's real binaries (`STALWART_REAL_BINS` or ../shared/real-stalwart: 0.16.17,
//! 0.16.18 and a 1.x build) the releases are real: an account is made and mail delivered over
//! SMTP before, and read over JMAP after, each step; the broken release is upstream's 1.x store
//! code labelled 0.16.19-rc1, which changes a 0.16 store and then panics (so only the data
//! snapshot gives 0.16.18 a store it can open). Without them, the stand-in releases, and the demo
//! says so.

#[path = "../tests/packages_common/mod.rs"]
mod packages_common;

use packages_common::{
    helper_packages, real_server_packages, relabelled_real_packages, server_packages, text, Machine,
};
use std::time::{Duration, Instant};
use testbed::real::RealRelease;
use testbed::real_server::{alice, RealServer, HTTP};
use testbed::Fault;

fn step(title: &str) {
    println!("\n== {title}");
}

fn show(cmd: &str, out: &str) {
    println!("\n$ {cmd}");
    print!("{out}");
}

/// The real releases the demo needs, or why it uses the stand-in.
fn real_releases() -> Result<[&'static RealRelease; 3], String> {
    let all = testbed::real::releases()?;
    let find = |v: &str| {
        all.iter()
            .find(|r| r.version == v)
            .ok_or_else(|| format!("the real-server binaries have no {v}"))
    };
    let onex = all
        .iter()
        .find(|r| r.version == "1.0.0-pre.1" && r.rocksdb)
        .ok_or("the real-server binaries have no 1.0.0-pre.1 with RocksDB")?;
    Ok([find("0.16.17")?, find("0.16.18")?, onex])
}

fn main() {
    if let Err(e) = testbed::preflight() {
        eprintln!("demo: {e:#}");
        std::process::exit(1);
    }
    let t0 = Instant::now();
    match real_releases() {
        Ok(rels) => {
            println!("demo: upstream's real Stalwart binaries ({}): real releases 0.16.17 -> 0.16.18, and a broken one",
                testbed::real::source_dir().map(|d| d.display().to_string()).unwrap_or_default());
            real(rels);
        }
        Err(why) => {
            println!(
                "demo: the stand-in server releases ({why}; see README, \"The real-server tier\")"
            );
            standin();
        }
    }
    step(&format!(
        "done in {:.0} s; tearing the container down",
        t0.elapsed().as_secs_f64()
    ));
}

/// After the broken release: apt clean, both packages, and what status and history say.
fn what_the_admin_sees(m: &Machine) {
    show(
        "dpkg --audit (empty: nothing half-configured)",
        &m.dpkg_audit(),
    );
    show(
        "dpkg-query -W stalwart stalwart-upgrade",
        &m.sh_ok("dpkg-query -W stalwart stalwart-upgrade"),
    );
    show(
        "stalwart-upgrade status   (exits 8: the last upgrade failed)",
        &text(&m.helper(&["status"])),
    );
    show("stalwart-upgrade history", &text(&m.helper(&["history"])));
}

/// The helper's settings for a real server (its start takes seconds).
const REAL_CONFIG: &str = "[timeouts]\nstop_secs = 30\nstart_secs = 30\nready_secs = 60\nsettle_secs = 1\nlock_wait_secs = 10\n";

fn real([old, new, onex]: [&'static RealRelease; 3]) {
    let broken_label = "0.16.19-rc1";
    step("building the packages with packaging/build (helper + stalwart 0.16.17 and 0.16.18 around upstream's binaries, and 0.16.19-rc1: upstream's 1.x store code under a 0.16 label)");
    let helper = helper_packages();
    let a = real_server_packages(old);
    let b = real_server_packages(new);
    let broken = relabelled_real_packages(onex, broken_label);
    for p in [&helper.deb, &a.deb, &b.deb, &broken.deb] {
        println!("   {}", p.display());
    }

    step("booting a Debian bookworm container with systemd and a local apt repository");
    let m = Machine::apt_real();
    m.ct.write_file("/etc/stalwart-upgrade/config.toml", REAL_CONFIG)
        .expect("helper config");
    m.publish_debs(&[&helper.deb, &a.deb]);
    m.apt_ok("update");
    show("apt-get install stalwart", &m.apt_ok("install stalwart"));
    let password = m
        .sh_ok("sed -n 's/^STALWART_RECOVERY_ADMIN=admin://p' /etc/stalwart-upgrade/stalwart.env")
        .trim()
        .to_string();
    let ready = || {
        m.ct.in_netns(|| testbed::mail::wait_ready(HTTP, Duration::from_secs(90)))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", m.ct.journal("stalwart.service")))
    };
    ready();
    let admin = testbed::mail::Jmap016::new(HTTP, "admin", &password);
    m.ct.in_netns(|| admin.disable_pyzor()).expect("admin");
    RealServer::populate_as(&m.ct, true, "admin", &password).expect("accounts");
    RealServer::deliver(&m.ct, true, &alice(), "mail-under-0.16.17").expect("mail");
    println!(
        "   account {} made through 0.16's JMAP API; a mail delivered over SMTP",
        alice().address()
    );
    show("stalwart-upgrade status", &text(&m.helper(&["status"])));

    let reads = |what: &str, subjects: &[&str]| {
        RealServer::sees(&m.ct, true, &alice(), subjects)
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        println!("   {what}: alice logs in over JMAP and reads {subjects:?}");
    };
    let runs = |r: &RealRelease| {
        ready();
        let sha = RealServer::running_sha256(&m.ct).expect("running binary");
        assert_eq!(sha, r.sha256, "not running the bytes of {}", r.version);
        println!(
            "   the server runs upstream's {} (sha256 {})",
            r.version,
            &sha[..16]
        );
    };

    step("upstream's 0.16.18 is published: `apt-get upgrade` runs the transaction");
    m.publish_debs(&[&b.deb]);
    m.apt_ok("update");
    show("apt-get upgrade", &m.apt_ok("upgrade"));
    runs(new);
    reads("after the upgrade", &["mail-under-0.16.17"]);
    RealServer::deliver(&m.ct, true, &alice(), "mail-under-0.16.18").expect("mail");

    step("a broken release (0.16.19-rc1 changes the store, then panics) is published: rolled back with the data, apt left clean");
    m.publish_debs(&[&broken.deb]);
    m.apt_ok("update");
    show("apt-get upgrade", &text(&m.apt_get("upgrade")));
    runs(new);
    reads(
        "after the rollback",
        &["mail-under-0.16.17", "mail-under-0.16.18"],
    );
    what_the_admin_sees(&m);
}

fn standin() {
    step("building the packages with packaging/build (helper + stalwart 0.15.5, 0.15.6, and a broken 0.15.7)");
    let helper = helper_packages();
    let a = server_packages("0.15.5", Fault::None, 0);
    let b = server_packages("0.15.6", Fault::None, 0);
    let broken = server_packages("0.15.7", Fault::CrashAtStart, 0);
    for p in [&helper.deb, &a.deb, &b.deb, &broken.deb] {
        println!("   {}", p.display());
    }

    step("booting a Debian bookworm container with systemd and a local apt repository");
    let m = Machine::apt();
    m.publish_debs(&[&helper.deb, &a.deb]);
    m.apt_ok("update");
    show("apt-get install stalwart", &m.apt_ok("install stalwart"));
    m.ready();
    m.deliver(20);
    println!("   data digest: {}", m.digest());
    show("stalwart-upgrade status", &text(&m.helper(&["status"])));

    step("a patch release is published: `apt-get upgrade` runs the transaction");
    m.publish_debs(&[&b.deb]);
    m.apt_ok("update");
    show("apt-get upgrade", &m.apt_ok("upgrade"));
    m.ready();
    println!(
        "   running {}; data digest: {}",
        m.running_binary(),
        m.digest()
    );

    step("a broken release (0.15.7 crashes at start) is published: rolled back, apt left clean");
    m.publish_debs(&[&broken.deb]);
    m.apt_ok("update");
    show("apt-get upgrade", &text(&m.apt_get("upgrade")));
    m.ready();
    println!(
        "   running {}; data digest: {}",
        m.running_binary(),
        m.digest()
    );
    what_the_admin_sees(&m);
}
