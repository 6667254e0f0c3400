//! Issue #23 through the package managers: the service user of an install.sh installation plants
//! a set-user-ID program as its server binary, then the admin installs the packages, which adopt
//! the installation (apt-get install, dnf install). Nothing may run with euid 0, and the
//! installation ends with the package's verified binary, root-owned, no set-id bit anywhere.

mod packages_common;
use packages_common::*;
use testbed::Fault;

/// Appends a line to /var/tmp/pwned whenever it runs with euid 0, then runs the real server
/// binary (saved by the service user at /var/tmp/stalwart.real) with its arguments.
const PLANTED: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (geteuid() == 0) {
        int fd = open("/var/tmp/pwned", O_WRONLY | O_CREAT | O_APPEND, 0644);
        dprintf(fd, "euid 0, uid %d, argv1 %s\n", getuid(), argc > 1 ? argv[1] : "");
        close(fd);
    }
    execv("/var/tmp/stalwart.real", argv);
    return 127;
}
"#;

/// An install.sh installation of 0.15.5 whose service user planted PLANTED, set-user-ID, as
/// bin/stalwart. Checks first that the plant works: run by nobody as a root-owned set-uid
/// file, it records euid 0 (what the old adoption made of it).
fn planted_installation(m: &Machine) {
    let old = testbed::standin_release("0.15.5", Fault::None, 0);
    testbed::stalwart::install_server(&m.ct, &old, testbed::stalwart::ServerLayout::rocksdb())
        .expect("install.sh-style install");
    m.ready();
    let planted = testbed::c_program("planted", PLANTED).expect("cc");
    let planted = m.ct.target_path(&planted).expect("under target/");
    m.sh_ok(&format!(
        "cp {planted} /var/tmp/check && chmod 4755 /var/tmp/check && \
         runuser -u nobody -- /var/tmp/check --version >/dev/null 2>&1; \
         grep -q 'euid 0' /var/tmp/pwned && rm /var/tmp/pwned /var/tmp/check"
    ));
    let o = m.ct.exec(&[
        "runuser",
        "-u",
        "stalwart",
        "--",
        "sh",
        "-c",
        &format!(
            "cp /opt/stalwart/bin/stalwart /var/tmp/stalwart.real && \
             cp {planted} /opt/stalwart/bin/.p && chmod 4755 /opt/stalwart/bin/.p && \
             mv /opt/stalwart/bin/.p /opt/stalwart/bin/stalwart"
        ),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        m.sh_ok("stat -c '%U %a' /opt/stalwart/bin/stalwart").trim(),
        "stalwart 4755"
    );
    // The server runs through the plant, as the admin's own restart would make it.
    m.sh_ok("systemctl restart stalwart.service");
    m.ready();
}

/// What must hold after the adoption: nothing ran as root, the package's binary in bin/,
/// root's, and no set-id bit below the prefix.
fn nothing_ran_as_root(m: &Machine, out: &str) {
    assert!(out.contains("adopting the existing installation"), "{out}");
    assert!(out.contains("set-id bit dropped"), "{out}");
    assert_eq!(
        m.sh_ok("cat /var/tmp/pwned 2>/dev/null || true"),
        "",
        "the planted program ran with euid 0: {out}"
    );
    assert_eq!(
        m.sh_ok("find /opt/stalwart -perm /6000 | sort"),
        "",
        "a set-id bit is left below /opt/stalwart"
    );
    assert_eq!(
        m.sh_ok("stat -c '%U %G %a' /opt/stalwart/bin/stalwart")
            .trim(),
        "root root 755"
    );
    assert_eq!(
        m.sh_ok("sha256sum < /opt/stalwart/bin/stalwart"),
        m.sh_ok("sha256sum < /usr/lib/stalwart/stalwart"),
        "bin/ holds the package's verified binary"
    );
    assert_eq!(m.running_binary(), "0.15.6");
}

#[test]
fn apt_adoption_of_a_planted_set_id_binary_runs_nothing_as_root() {
    if testbed::skip_requested("apt_adoption_of_a_planted_set_id_binary_runs_nothing_as_root") {
        return;
    }
    let m = Machine::apt();
    planted_installation(&m);
    let helper = helper_packages();
    let server = server_packages("0.15.6", Fault::None, 0);
    m.publish_debs(&[&helper.deb, &server.deb]);
    m.apt_ok("update");
    let out = m.apt_ok("install stalwart-upgrade stalwart");
    m.ready();
    nothing_ran_as_root(&m, &out);
    assert_eq!(m.dpkg_audit(), "");
}

#[test]
fn dnf_adoption_of_a_planted_set_id_binary_runs_nothing_as_root() {
    if testbed::skip_requested("dnf_adoption_of_a_planted_set_id_binary_runs_nothing_as_root") {
        return;
    }
    let m = Machine::dnf();
    planted_installation(&m);
    let helper = helper_packages();
    let server = server_packages("0.15.6", Fault::None, 0);
    m.publish_rpms(&[&helper.rpm, &server.rpm]);
    let out = m.dnf_run("install stalwart-upgrade stalwart");
    let out = text(&out);
    m.ready();
    nothing_ran_as_root(&m, &out);
}
