//! The package tests' scenarios (tests/packages_*.rs): a booted container with a local package
//! repository bound at /srv/repo, built and signed on the host by `packaging/repo` (apt suite in
//! apt/, dnf repository in rpm/), used inside with signature checks on; the packaged helper on
//! PATH.

use super::pkgbuild::{base_provides_rpm, publish_signed, signing_key};
use super::{text, Builder, HelperAt, Pm, Scenario, PACKAGES_HELPER_CONFIG};
use crate::{Container, Halted};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Output;

/// apt options of every run: keep a modified conffile (our test config), never prompt.
pub const APT: &str =
    "DEBIAN_FRONTEND=noninteractive apt-get -y -o Dpkg::Options::=--force-confold";

impl Builder {
    /// The package scenario: a local repository at /srv/repo (set up for `pm`), the helper's
    /// config for the package tests, the packaged helper (on PATH) once installed, no server
    /// (apt or dnf installs it); upstream's real binaries at /real when `real_bins`.
    pub fn machine(pm: Option<Pm>, real_bins: bool) -> Builder {
        let mut b = Builder::default()
            .repo()
            .helper_config(PACKAGES_HELPER_CONFIG)
            .helper_at(HelperAt::Path)
            .helper_timeout(None)
            .pause_timeout(None);
        if let Some(pm) = pm {
            b = b.packages(pm);
        }
        if real_bins {
            b = b.real_bins();
        }
        b
    }
}

/// A [`Scenario`] with a local package repository, as the package tests drive it.
pub struct Machine {
    inner: Scenario,
    pub repo: PathBuf,
}

impl Deref for Machine {
    type Target = Scenario;
    fn deref(&self) -> &Scenario {
        &self.inner
    }
}

impl Machine {
    /// A container with the (empty, signed) repository bound at /srv/repo, no package manager
    /// set up for it.
    pub fn boot() -> Machine {
        Self::from_scenario(Builder::machine(None, false).boot())
    }

    /// A container with the flat apt repository /srv/repo as its only source, and
    /// unattended-upgrades set up for it.
    pub fn apt() -> Machine {
        Self::from_scenario(Builder::machine(Some(Pm::Apt), false).boot())
    }

    /// `apt`, with upstream's real binaries bound at /real.
    pub fn apt_real() -> Machine {
        Self::from_scenario(Builder::machine(Some(Pm::Apt), true).boot())
    }

    /// A container whose rpm database knows what dpkg installed (a metadata-only package
    /// providing every requirement of our packages), with /srv/repo as the only dnf repository.
    pub fn dnf() -> Machine {
        Self::dnf_with(&[])
    }

    /// `dnf`, with the rpm database also providing what the `extra` packages require.
    pub fn dnf_with(extra: &[PathBuf]) -> Machine {
        let pm = Pm::Dnf {
            extra: extra.to_vec(),
        };
        Self::from_scenario(Builder::machine(Some(pm), false).boot())
    }

    /// A scenario the caller made (`Builder::machine(..)...boot()`): it must have a repository.
    pub fn from_scenario(inner: Scenario) -> Machine {
        let repo = inner
            .repo
            .clone()
            .expect("a scenario with a package repository (Builder::repo)");
        Machine { inner, repo }
    }

    pub fn into_inner(self) -> Scenario {
        self.inner
    }

    /// Runs the packaged helper (`stalwart-upgrade` on PATH).
    pub fn helper(&self, args: &[&str]) -> Output {
        self.inner.run_helper(args, &[])
    }

    /// Power loss (no shutdown), then `boot` boots the halted container again.
    pub fn crash_then(self, boot: impl FnOnce(Halted) -> Container) -> Machine {
        let Machine { inner, repo } = self;
        Machine {
            inner: inner.crash_then(boot),
            repo,
        }
    }

    /// Power loss (no shutdown), then a boot on the same disk.
    pub fn crash_and_boot(self) -> Machine {
        self.crash_then(|h| h.boot_again().expect("boot again"))
    }
}

impl Scenario {
    fn repo_dir(&self) -> &Path {
        self.repo
            .as_deref()
            .expect("a scenario with a package repository (Builder::repo)")
    }

    /// Signature checks on, as an admin adds the repository: the key in /etc/apt/keyrings,
    /// named by signed-by (no trusted=yes); unattended-upgrades for its origin.
    pub(super) fn set_up_apt(&self) {
        self.publish(&[]);
        self.sh_ok("install -D -m 0644 /srv/repo/stalwart-archive-keyring.gpg /etc/apt/keyrings/stalwart-archive-keyring.gpg");
        self.ct
            .write_file(
                "/etc/apt/sources.list.d/local.list",
                "deb [signed-by=/etc/apt/keyrings/stalwart-archive-keyring.gpg] file:/srv/repo/apt ./\n",
            )
            .expect("sources");
        self.ct
            .write_file(
                "/etc/apt/apt.conf.d/51stalwart-test",
                r#"Dpkg::Options { "--force-confold"; };
Unattended-Upgrade::Origins-Pattern { "origin=stalwart-test,codename=ci"; };
Unattended-Upgrade::Package-Blacklist { };
APT::Periodic::Update-Package-Lists "always";
APT::Periodic::Unattended-Upgrade "always";
APT::Periodic::RandomSleep "0";
"#,
            )
            .expect("apt.conf");
    }

    /// The key as an admin installs it, from a copy they checked, not from the repository
    /// (whoever can change the repository could change a key it serves); the rpm database
    /// told what dpkg installed (and what `extra` requires).
    pub(super) fn set_up_dnf(&self, extra: &[PathBuf]) {
        self.publish(&[]);
        self.sh_ok("install -D -m 0644 /srv/repo/RPM-GPG-KEY-stalwart /etc/pki/rpm-gpg/RPM-GPG-KEY-stalwart");
        self.ct
            .write_file(
                "/etc/yum.repos.d/local.repo",
                "[local]\nname=local\nbaseurl=file:///srv/repo/rpm\nenabled=1\nmetadata_expire=0\n\
                 gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-stalwart\n",
            )
            .expect("repo file");
        let base = base_provides_rpm(extra);
        let inside = self.ct.target_path(&base).expect("base rpm under target/");
        self.sh_ok(&format!("rpm -i --justdb --nodeps --force-debian {inside}"));
    }

    /// Adds packages to the signed repository /srv/repo (host `packaging/repo`): the apt
    /// suite in /srv/repo/apt, the dnf repository in /srv/repo/rpm.
    pub fn publish(&self, files: &[&Path]) {
        let (home, key) = signing_key();
        let o = publish_signed(self.repo_dir(), home, key, files);
        assert!(o.status.success(), "packaging/repo: {}", text(&o));
    }

    /// Adds the .debs to the signed apt repository (Packages, Release, InRelease regenerated).
    pub fn publish_debs(&self, debs: &[&Path]) {
        self.publish(debs);
    }

    pub fn apt_get(&self, args: &str) -> Output {
        self.sh(&format!("{APT} {args} 2>&1"))
    }

    pub fn apt_ok(&self, args: &str) -> String {
        let o = self.apt_get(args);
        assert!(o.status.success(), "apt-get {args}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `dpkg-query` status and version of a package, e.g. "install ok installed 0.15.6-1".
    pub fn dpkg_status(&self, pkg: &str) -> String {
        self.sh_ok(&format!(
            "dpkg-query -W -f '${{Status}} ${{Version}}' {pkg} 2>/dev/null || true"
        ))
    }

    /// `dpkg --audit`: empty when no package is half-installed or half-configured.
    pub fn dpkg_audit(&self) -> String {
        self.sh_ok("dpkg --audit")
    }

    /// Adds the .rpms to the signed dnf repository (each package signed, repomd.xml signed).
    pub fn publish_rpms(&self, rpms: &[&Path]) {
        self.publish(rpms);
    }

    pub fn dnf_run(&self, args: &str) -> Output {
        self.sh(&format!(
            "dnf -y --releasever=12 --setopt=install_weak_deps=False {args} 2>&1"
        ))
    }

    pub fn rpm_q(&self, pkg: &str) -> String {
        self.sh_ok(&format!("rpm -q {pkg} || true"))
            .trim()
            .to_string()
    }
}
