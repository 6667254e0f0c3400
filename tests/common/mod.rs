//! Shared scenario harness for the end-to-end tests: a booted container with a stand-in server
//! installed the way install.sh does, and the helper (host-built, bound at /target) run inside.
#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use testbed::stalwart::{self, ServerLayout};
use testbed::{Container, Fault};

pub const HELPER_CONFIG: &str = "/etc/stalwart-upgrade/config.toml";

/// Short timeouts: the stand-in starts in well under a second.
pub const DEFAULT_HELPER_CONFIG: &str = r#"
[timeouts]
stop_secs = 20
start_secs = 30
ready_secs = 20
settle_secs = 1
lock_wait_secs = 2

[webadmin]
credentials_file = "/etc/stalwart-upgrade/webadmin.cred"
"#;

pub struct Scenario {
    pub ct: Container,
    pub helper: String,
}

pub fn release(version: &str, fault: Fault, migrate_ms: u64) -> std::path::PathBuf {
    testbed::standin_release(version, fault, migrate_ms)
}

impl Scenario {
    /// Boots a container, installs `from` and waits until it is ready, with 20 mail records
    /// delivered so the data is not just the seed.
    pub fn new(from: &Path) -> Scenario {
        Self::with(from, ServerLayout::rocksdb(), DEFAULT_HELPER_CONFIG)
    }

    pub fn with(from: &Path, layout: ServerLayout, helper_config: &str) -> Scenario {
        testbed::preflight().expect("testbed preflight");
        let ct = Container::boot().expect("boot container");
        Self::on(ct, from, layout, helper_config)
    }

    /// `with` in a container the caller booted (e.g. with file systems of its own bound in).
    pub fn on(ct: Container, from: &Path, layout: ServerLayout, helper_config: &str) -> Scenario {
        stalwart::install_server(&ct, from, layout).expect("install server");
        stalwart::wait_ready(&ct, Duration::from_secs(30)).expect("server ready");
        ct.write_file(HELPER_CONFIG, helper_config).unwrap();
        ct.write_file(
            "/etc/stalwart-upgrade/webadmin.cred",
            format!("admin:{}", stalwart::DEFAULT_ADMIN_SECRET),
        )
        .unwrap();
        ct.exec_ok(&["chmod", "0600", "/etc/stalwart-upgrade/webadmin.cred"])
            .unwrap();
        let helper = ct
            .target_path(testbed::target_dir().join("debug/stalwart-upgrade"))
            .expect("helper binary under target/");
        let s = Scenario { ct, helper };
        s.deliver(20);
        s
    }

    /// The journal entries with `message_id` (what `journalctl MESSAGE_ID=...` shows an admin),
    /// as JSON objects.
    pub fn entries(&self, message_id: &str) -> Vec<Value> {
        self.ct
            .sh_ok(&format!("journalctl -q -o json MESSAGE_ID={message_id}"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("journalctl -o json"))
            .collect()
    }

    /// Installs the helper at /usr/sbin and the packaged stalwart-upgrade-recover.service,
    /// enabled: what runs at boot before stalwart.service.
    pub fn install_recover_unit(&self) {
        let helper = testbed::target_dir().join("debug/stalwart-upgrade");
        std::fs::copy(&helper, self.ct.path("/usr/sbin/stalwart-upgrade")).unwrap();
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/stalwart-upgrade-recover.service"),
        )
        .unwrap();
        self.ct
            .write_file("/etc/systemd/system/stalwart-upgrade-recover.service", unit)
            .unwrap();
        self.ct.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
        self.ct
            .exec_ok(&[
                "systemctl",
                "enable",
                "--quiet",
                "stalwart-upgrade-recover.service",
            ])
            .unwrap();
    }

    /// Path of a host file under target/ as the container sees it.
    pub fn inside(&self, host: &Path) -> String {
        self.ct.target_path(host).expect("file under target/")
    }

    /// Runs the helper inside the container (outside any unit, like an admin's shell).
    pub fn helper(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut full: Vec<String> = vec!["env".into()];
        for (k, v) in env {
            full.push(format!("{k}={v}"));
        }
        full.push(self.helper.clone());
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(|s| s.as_str()).collect();
        self.ct.exec_timeout(&refs, Duration::from_secs(240))
    }

    pub fn upgrade(&self, to: &Path, env: &[(&str, &str)]) -> Output {
        let p = self.inside(to);
        self.helper(&["upgrade", "--to", &p, "--yes"], env)
    }

    /// Runs an upgrade that stops itself (SIGSTOP) once the journal has `pause_at`
    /// (`step:started|done`), runs `meanwhile` (a shell script) while it is stopped, then lets it
    /// go on: a change to the world past every preflight check, at a known step.
    pub fn upgrade_pausing(&self, to: &Path, pause_at: &str, meanwhile: &str) -> Output {
        self.upgrade_pausing_with(to, &[], pause_at, meanwhile)
    }

    /// `upgrade_pausing` with more environment for the helper.
    pub fn upgrade_pausing_with(
        &self,
        to: &Path,
        env: &[(&str, &str)],
        pause_at: &str,
        meanwhile: &str,
    ) -> Output {
        let env: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
        let script = format!(
            r#"{env}STALWART_UPGRADE_TEST_PAUSE_AT={pause_at} {helper} upgrade --to {to} --yes >/root/paused.out 2>&1 &
pid=$!
state=
for _ in $(seq 1 600); do
  state=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
  [ "$state" = T ] && break
  [ -z "$state" ] && break
  sleep 0.05
done
if [ "$state" != T ]; then echo "the helper never paused at {pause_at} (state '$state')"; cat /root/paused.out; exit 99; fi
( {meanwhile} ) >&2
kill -CONT $pid
wait $pid
rc=$?
cat /root/paused.out
exit $rc
"#,
            helper = self.helper,
            to = self.inside(to),
        );
        self.ct.sh(&script)
    }

    /// The admin's approval of a minor/major line (the policy refuses them otherwise).
    pub fn allow(&self, line: &str) {
        let out = self.helper(&["allow", line], &[]);
        assert!(out.status.success(), "allow {line}: {}", text(&out));
    }

    pub fn deliver(&self, n: u32) {
        let out = self.ct.exec(&[
            "curl",
            "-sS",
            "-f",
            "-X",
            "POST",
            &format!("{}/standin/deliver?n={n}", stalwart::HTTP),
        ]);
        assert!(out.status.success(), "deliver failed: {}", text(&out));
    }

    /// The stand-in's digest of its data: version, schema, record count, content hash.
    pub fn digest(&self) -> Value {
        let d = stalwart::digest(&self.ct).expect("digest");
        serde_json::from_str(&d).expect("digest is JSON")
    }

    pub fn ready(&self) {
        stalwart::wait_ready(&self.ct, Duration::from_secs(30)).expect("server ready");
    }

    /// What bin/stalwart reports.
    pub fn binary_version(&self) -> String {
        self.ct
            .exec_ok(&[stalwart::BINARY, "--version"])
            .expect("--version")
            .trim()
            .to_string()
    }

    /// The server's main PID as systemd sees it (unchanged = the server was not restarted).
    pub fn main_pid(&self) -> String {
        self.ct
            .exec_ok(&["systemctl", "show", "-P", "MainPID", "stalwart.service"])
            .expect("systemctl show")
    }

    pub fn status_code(&self) -> i32 {
        self.helper(&["status"], &[]).status.code().unwrap_or(-1)
    }

    /// Ready, running `version` (the binary says so), on the same data as `before`.
    #[track_caller]
    pub fn serves(&self, version: &str, before: &Value) {
        self.ready();
        assert_eq!(self.binary_version(), version);
        assert_eq!(data_of(&self.digest()), data_of(before), "data differs");
    }

    /// The last transaction of the history and the names of its finished steps.
    pub fn last_steps(&self) -> (Value, Vec<String>) {
        let h = self.history_json();
        let last = h
            .as_array()
            .and_then(|a| a.last())
            .cloned()
            .unwrap_or_else(|| panic!("no transaction in the history: {h}"));
        let steps = last["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|x| x["step"].as_str().expect("step name").to_string())
            .collect();
        (last, steps)
    }

    pub fn history_json(&self) -> Value {
        let out = self.helper(&["history", "--json"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("history json")
    }
}

/// The part of a digest that must not change across a same-schema upgrade or a rollback.
pub fn data_of(d: &Value) -> (Value, Value, Value) {
    (
        d["schema"].clone(),
        d["records"].clone(),
        d["sha256"].clone(),
    )
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}
