//! The demo behind `scripts/demo`, the main job end to end: build the packages (the helper, and
//! the `stalwart` package around three stand-in server releases), boot a throw-away systemd
//! container with a local apt repository, `apt-get install stalwart`, then `apt-get upgrade` to a
//! patch release (the maintainer scripts run the transaction) and to a broken release (rolled back
//! automatically, apt left clean), and show what an admin would look at.

#[path = "../tests/packages_common/mod.rs"]
mod packages_common;

use packages_common::{helper_packages, server_packages, text, Machine};
use std::time::Instant;
use testbed::Fault;

fn step(title: &str) {
    println!("\n== {title}");
}

fn show(cmd: &str, out: &str) {
    println!("\n$ {cmd}");
    print!("{out}");
}

fn main() {
    if let Err(e) = testbed::preflight() {
        eprintln!("demo: {e:#}");
        std::process::exit(1);
    }
    let t0 = Instant::now();
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

    step(&format!(
        "done in {:.0} s; tearing the container down",
        t0.elapsed().as_secs_f64()
    ));
}
