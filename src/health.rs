//! The health gate after a start: the unit is active and stays active, `/healthz/ready` answers 200,
//! and the server's log for this start shows no failed migration.
//!
//! Why all three: upstream exits 0 after a failed migration (so `Restart=on-failure` does nothing
//! and an exit code proves nothing), `/healthz/ready` is 503 while a migration runs, and a
//! Type=simple unit is "active" the moment the process is forked.

use crate::config::Settings;
use crate::serverconfig::ServerConfig;
use crate::systemd::{Systemd, SystemdError};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{unit} stopped during start ({state}, exit status {status}){log}; see `journalctl -u {unit}`")]
    Exited {
        unit: String,
        state: String,
        status: i32,
        log: String,
    },
    #[error("{unit}: {url} did not answer 200 within {secs} s (last: {last}); see `journalctl -u {unit}`")]
    NotReady {
        unit: String,
        url: String,
        secs: u64,
        last: String,
    },
    #[error("{unit} logged a failed start: {line:?}; see `journalctl -u {unit}`")]
    LogFailure { unit: String, line: String },
    #[error("{unit} restarted while we watched it (pid {before} -> {after}); see `journalctl -u {unit}`")]
    Restarted {
        unit: String,
        before: u32,
        after: u32,
    },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

/// Base URL of the plain-HTTP listener: configured, else from the server config, else the port
/// upstream's own container health check falls back to (http://127.0.0.1:8080).
pub fn base_url(settings: &Settings, server: Option<&ServerConfig>) -> String {
    if let Some(u) = &settings.health.url {
        return u.trim_end_matches('/').to_string();
    }
    // Plain HTTP first; an HTTPS-only server on its first TLS listener (as upstream's container
    // health check does, https://127.0.0.1:443), reached on loopback (see `tls`).
    match (server.and_then(|s| s.http), server.and_then(|s| s.https)) {
        (Some(addr), _) => format!("http://{addr}"),
        (None, Some(addr)) => format!("https://{addr}"),
        (None, None) => "http://127.0.0.1:8080".into(),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    pub ready_after_ms: u64,
    pub main_pid: u32,
}

/// The health step's journal note; downtime is measured up to this moment, not the settle period.
pub fn ready_note(ms: u64) -> String {
    format!("ready after {ms} ms")
}

pub fn parse_ready_note(note: &str) -> Option<u64> {
    note.strip_prefix("ready after ")?
        .strip_suffix(" ms")?
        .parse()
        .ok()
}

/// Probes `/healthz/ready` once: Ok(status) or Err(transport error text).
pub fn probe_ready(base: &str) -> Result<u16, String> {
    // No redirects: the answer of the server itself counts, not wherever it points.
    let mut agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(3))
        .redirects(0);
    if base.starts_with("https://") && crate::tls::is_loopback(base) {
        agent = agent.tls_config(crate::tls::loopback_config().map_err(|e| e.to_string())?);
    }
    let agent = agent.build();
    match agent.get(&format!("{base}/healthz/ready")).call() {
        Ok(r) => Ok(r.status()),
        Err(ureq::Error::Status(code, _)) => Ok(code),
        Err(e) => Err(e.to_string()),
    }
}

/// Before any downtime: the running server must answer `base`/healthz/ready with 200 within
/// `within`. Otherwise the gate after the upgrade could not tell a healthy new version either, and
/// a health URL that points nowhere would turn every upgrade into an outage and a rollback.
/// Err says what the last probe got.
pub fn check_running(base: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let last = match probe_ready(base) {
            Ok(200) => return Ok(()),
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn gate(
    sys: &Systemd,
    settings: &Settings,
    server: Option<&ServerConfig>,
) -> Result<HealthReport, HealthError> {
    let unit = settings.unit.as_str();
    let base = base_url(settings, server);
    let url = format!("{base}/healthz/ready");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(settings.timeouts.ready_secs);
    let mut last;
    let state = loop {
        let state = sys.state(unit)?;
        // "activating (auto-restart)" is a process that already exited and waits for
        // Restart=on-failure: the start failed, even if systemd will try again.
        let running = matches!(
            state.active_state.as_str(),
            "active" | "activating" | "reloading"
        );
        if !running || state.sub_state == "auto-restart" {
            return Err(exited(unit, &state, settings));
        }
        match probe_ready(&base) {
            Ok(200) => break state,
            Ok(code) => last = format!("HTTP {code}"),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(HealthError::NotReady {
                unit: unit.into(),
                url,
                secs: settings.timeouts.ready_secs,
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ready_after_ms = started.elapsed().as_millis() as u64;
    std::thread::sleep(Duration::from_secs(settings.timeouts.settle_secs));
    let after = sys.state(unit)?;
    if after.active_state != "active" {
        return Err(exited(unit, &after, settings));
    }
    if after.main_pid != state.main_pid {
        return Err(HealthError::Restarted {
            unit: unit.into(),
            before: state.main_pid,
            after: after.main_pid,
        });
    }
    if let Some(line) = failure_in_log(&after, settings) {
        return Err(HealthError::LogFailure {
            unit: unit.into(),
            line,
        });
    }
    Ok(HealthReport {
        ready_after_ms,
        main_pid: after.main_pid,
    })
}

fn exited(unit: &str, state: &crate::systemd::UnitState, settings: &Settings) -> HealthError {
    let log = failure_in_log(state, settings)
        .map(|l| format!("; it logged {l:?}"))
        .unwrap_or_default();
    HealthError::Exited {
        unit: unit.into(),
        state: format!("{}/{}", state.active_state, state.sub_state),
        status: state.exec_main_status,
        log,
    }
}

/// The log lines of exactly this start (journal field _SYSTEMD_INVOCATION_ID) written by the
/// server's own main process (_PID): another process of the unit (an ExecStartPost, a child the
/// service user started) must not be able to veto an upgrade and blacklist a release. Searched
/// for the configured failure patterns; no journalctl (or no invocation id) means no verdict.
pub fn failure_in_log(state: &crate::systemd::UnitState, settings: &Settings) -> Option<String> {
    if state.invocation_id.is_empty() || state.exec_main_pid == 0 {
        return None;
    }
    let mut c = Command::new("journalctl");
    crate::child::clear_env(&mut c);
    let out = c
        .args(["--no-pager", "-q", "-o", "cat"])
        .arg(format!("_SYSTEMD_INVOCATION_ID={}", state.invocation_id))
        .arg(format!("_PID={}", state.exec_main_pid))
        .output()
        .ok()?;
    find_failure(
        &String::from_utf8_lossy(&out.stdout),
        &settings.health.failure_patterns,
    )
}

pub fn find_failure(log: &str, patterns: &[String]) -> Option<String> {
    log.lines()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            patterns.iter().any(|p| l.contains(&p.to_ascii_lowercase()))
        })
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_patterns_are_case_insensitive_and_return_the_line() {
        let pats = Settings::default().health.failure_patterns;
        let log = "Stalwart Server v0.15.6 starting\nERROR Failed to migrate database: boom\n";
        assert_eq!(
            find_failure(log, &pats).as_deref(),
            Some("ERROR Failed to migrate database: boom")
        );
        assert_eq!(find_failure("all good\n", &pats), None);
    }

    #[test]
    fn base_url_prefers_setting_then_listener_then_8080() {
        let mut s = Settings::default();
        assert_eq!(base_url(&s, None), "http://127.0.0.1:8080");
        let cfg = ServerConfig {
            path: "/x".into(),
            generation: crate::serverconfig::Generation::Toml,
            stores: vec![],
            http: Some("127.0.0.1:9090".parse().unwrap()),
            https: Some("127.0.0.1:9443".parse().unwrap()),
            cluster: None,
        };
        assert_eq!(base_url(&s, Some(&cfg)), "http://127.0.0.1:9090");
        let https_only = ServerConfig {
            http: None,
            ..cfg.clone()
        };
        assert_eq!(base_url(&s, Some(&https_only)), "https://127.0.0.1:9443");
        s.health.url = Some("http://[::1]:1/".into());
        assert_eq!(base_url(&s, Some(&cfg)), "http://[::1]:1");
    }

    #[test]
    fn probe_reports_status_codes_and_transport_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        });
        assert_eq!(probe_ready(&format!("http://{addr}")), Ok(503));
        h.join().unwrap();
        // A redirect is the answer, not followed (to wherever the server's user points it).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        });
        assert_eq!(probe_ready(&format!("http://{addr}")), Ok(302));
        h.join().unwrap();
        assert!(probe_ready(&format!("http://{addr}")).is_err());
    }
}
