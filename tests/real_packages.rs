//! The real-server tier through the packages: a first `apt-get install stalwart` of a package
//! around upstream's real binary, as a new user would do it.

mod packages_common;
use packages_common::*;
use std::time::Duration;

/// The admin gets a working password: upstream's `--init` prints it on stderr (measured with the
/// real 0.15.5; the helper kept only stdout and lost it), the hook shows it, and it logs in.
#[test]
fn a_first_install_of_a_real_0_15_package_shows_a_working_admin_password() {
    let test = "a_first_install_of_a_real_0_15_package_shows_a_working_admin_password";
    let Some(rel) = testbed::real::newest("0.15") else {
        testbed::real::skip(test, "no 0.15 release in the real-server tier");
        return;
    };
    let m = Machine::apt();
    let helper = helper_packages();
    let server = real_server_packages(rel);
    m.publish_debs(&[&helper.deb, &server.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart");
    let password = out
        .split("with password '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("apt shows no administrator password: {out}"))
        .to_string();
    assert!(password.len() >= 8, "{out}");
    if !rel.rocksdb {
        // The config `--init` writes uses RocksDB, which this build of upstream's source lacks
        // (official release builds have it): upstream exits 0 at once, nothing listens, and
        // the hook says the server did not come up. An admin of such a build switches the store
        // to SQLite; then the same password works.
        assert!(out.contains("did not come up healthy"), "{out}");
        m.sh_ok(
            "sed -i 's/^type = \"rocksdb\"/type = \"sqlite\"/; s#^path = \"/opt/stalwart/data\"$#path = \"/opt/stalwart/data/index.sqlite3\"#' /opt/stalwart/etc/config.toml && \
             systemctl restart stalwart.service",
        );
    }
    m.ct.in_netns(|| testbed::mail::wait_ready("http://127.0.0.1:8080", Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", m.ct.journal("stalwart.service")));
    let api = testbed::mail::Rest015::new("http://127.0.0.1:8080", "admin", &password);
    let count = m
        .ct
        .in_netns(|| api.get("/api/principal?count=true"))
        .unwrap_or_else(|e| panic!("the admin cannot log in with the password apt showed: {e:#}"));
    assert!(count["total"].is_number(), "{count}");
    let wrong = testbed::mail::Rest015::new("http://127.0.0.1:8080", "admin", "not-the-password");
    assert!(m
        .ct
        .in_netns(|| wrong.get("/api/principal?count=true"))
        .is_err());
}
