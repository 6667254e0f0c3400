//! The health gate after a start. Healthy means, for a mail server:
//! - the unit is active and stays active, with the same main process, and that process runs the
//!   binary the transaction installed (not one another agent started before the swap);
//! - `/healthz/ready` answers 200 (429 is retried), from a socket a process of the unit holds
//!   (not a listener of the service user's standing in for a server that failed);
//! - on >= 0.16, the server runs in normal mode: `/healthz/ready` is 200 in bootstrap and recovery
//!   mode too (measured), but only in normal mode is the anonymous JMAP session's `apiUrl`
//!   absolute (measured with the real 0.16.17/0.16.18);
//! - every listener the unit had before the stop answers again with the same kind of greeting
//!   (SMTP 220, IMAP `* OK`, POP3 `+OK`, ...), recorded before the downtime (`listener::Probe`);
//! - nothing the server's main process wrote to the journal for this start, nor an ERROR line
//!   its log files got since this start (0.15's file tracer, 0.16's /var/log/stalwart), says a
//!   migration failed or aborted or the process panicked.
//!
//! Why all of it: upstream exits 0 after a failed migration (so `Restart=on-failure` does nothing
//! and an exit code proves nothing), a Type=simple unit is "active" the moment the process is
//! forked, and in normal mode upstream logs to files, not the journal.

use crate::config::Settings;
use crate::os::systemd::{Systemd, SystemdError};
use crate::server::serverconfig::ServerConfig;
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
    #[error("{unit} answers {url} in recovery or bootstrap mode, not in normal mode (only its HTTP port, no mail){hint}; see `journalctl -u {unit}`")]
    NotNormalMode {
        unit: String,
        url: String,
        hint: String,
    },
    #[error("{unit} is up but these listeners it had before do not answer as they did: {missing}; see `journalctl -u {unit}` and the server's log")]
    ListenersMissing { unit: String, missing: String },
    #[error("{url} answers, but no process of {unit} holds that socket: something else listens there; see `ss -ltnp` and `journalctl -u {unit}`")]
    NotTheServer { unit: String, url: String },
    #[error("{unit}'s main process (pid {pid}) does not run {binary} ({detail}): it was not started from the binary this transaction installed; see `systemctl cat {unit}` and `journalctl -u {unit}`")]
    NotTheBinary {
        unit: String,
        pid: u32,
        binary: String,
        detail: String,
    },
    #[error("interrupted by {signal} while waiting for {unit} to be healthy")]
    Interrupted { unit: String, signal: String },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

/// What a start must bring up.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The crossing's migrating start: upstream's recovery mode (no mode check, no listeners).
    pub recovery: bool,
    /// The listeners that must answer again (recorded before the stop).
    pub listeners: Vec<crate::server::listener::Probe>,
    /// Log files of the server to search (0.15 tracer; 0.16 `[health] log_dir`).
    pub log_files: Vec<crate::server::serverconfig::LogFiles>,
    /// >= 0.16: check the mode over JMAP.
    pub json_config: bool,
    /// Why a non-normal mode may be (the env file sets recovery mode, config.json is missing).
    pub mode_hint: String,
    /// Where to probe instead of the server config's listener (recovery mode listens on its
    /// own port only).
    pub base: Option<String>,
    /// What the main process must be running, if anything is asked.
    pub runs: Option<Runs>,
}

/// What a started main process must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    /// The inode this path names (bin/stalwart after a swap): a process some other agent
    /// started before the swap runs the old inode, and a pass on it would commit bytes that
    /// never ran.
    Installed(std::path::PathBuf),
    /// Bytes of this sha256 (the undo: the old release's, in bin/ or a copy an ExecStart
    /// runs), so an outside start of the new binary during the undo is not reported as the old
    /// version back.
    Bytes(String),
}

impl Runs {
    /// Ok, or (what was expected, what process `pid` runs instead).
    fn check(&self, pid: u32) -> Result<(), (String, String)> {
        use std::os::unix::fs::MetadataExt;
        // /proc/PID/exe is a magic link to the mapped inode, whatever names it has now (root
        // may follow it; the O_NOFOLLOW opens of `swap` refuse it with ELOOP).
        let exe = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
        match self {
            Runs::Installed(binary) => {
                let expected = binary.display().to_string();
                let want = std::fs::metadata(binary)
                    .map_err(|e| (expected.clone(), format!("{expected}: {e}")))?;
                let got = std::fs::metadata(&exe)
                    .map_err(|e| (expected.clone(), format!("{}: {e}", exe.display())))?;
                if (got.dev(), got.ino()) == (want.dev(), want.ino()) {
                    return Ok(());
                }
                let name = std::fs::read_link(&exe)
                    .map(|p| crate::os::child::printable(&p.display().to_string()))
                    .unwrap_or_else(|_| "an unknown file".into());
                Err((expected, format!("it runs {name}")))
            }
            Runs::Bytes(want) => {
                let expected = format!("bytes of sha256 {want}");
                let got = std::fs::File::open(&exe)
                    .map_err(|e| format!("{}: {e}", exe.display()))
                    .and_then(|f| crate::os::fsutil::sha256_of(&f, &exe).map_err(|e| e.to_string()))
                    .map_err(|e| (expected.clone(), e))?;
                if got == *want {
                    Ok(())
                } else {
                    Err((expected, format!("it runs bytes of sha256 {got}")))
                }
            }
        }
    }
}

impl Expect {
    /// A normal start of `version`, configured by `cfg` (settings give 0.16's log dir).
    pub fn normal(
        settings: &Settings,
        cfg: Option<&ServerConfig>,
        version: &crate::server::version::Version,
        listeners: Vec<crate::server::listener::Probe>,
    ) -> Expect {
        let json = crate::server::lines::is_json(version);
        let mut log_files = cfg.map(|c| c.log_files.clone()).unwrap_or_default();
        if json {
            log_files.push(crate::server::serverconfig::LogFiles {
                dir: settings.health.log_dir.clone(),
                prefix: "stalwart.log".into(),
            });
        }
        let mode_hint = match cfg {
            Some(c) if json && !c.path.exists() => format!(
                " ({} is missing: upstream starts in bootstrap mode then)",
                c.path.display()
            ),
            _ => format!(
                " (is STALWART_RECOVERY_MODE set in the server's environment, e.g. {}?)",
                settings.server_env.display()
            ),
        };
        Expect {
            recovery: false,
            listeners,
            log_files,
            json_config: json,
            mode_hint,
            base: None,
            runs: None,
        }
    }

    /// The same, also requiring the main process to run `binary`.
    pub fn running(mut self, binary: std::path::PathBuf) -> Expect {
        self.runs = Some(Runs::Installed(binary));
        self
    }

    /// The same, also requiring the main process to run bytes of this sha256.
    pub fn running_bytes(mut self, sha256: &str) -> Expect {
        self.runs = Some(Runs::Bytes(sha256.to_string()));
        self
    }

    /// The crossing's recovery-mode start.
    pub fn recovery() -> Expect {
        Expect {
            recovery: true,
            base: Some(format!(
                "http://127.0.0.1:{}",
                crate::server::lines::RECOVERY_PORT
            )),
            ..Expect::default()
        }
    }
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

/// Probes `/healthz/ready` once: Ok(status) or Err(transport error text).
pub fn probe_ready(base: &str) -> Result<u16, String> {
    // No redirects: the answer of the server itself counts, not wherever it points.
    let mut agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(3))
        .redirects(0);
    if base.starts_with("https://") && crate::os::tls::is_loopback(base) {
        agent = agent.tls_config(crate::os::tls::loopback_config().map_err(|e| e.to_string())?);
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
    expect: &Expect,
) -> Result<HealthReport, HealthError> {
    let unit = settings.unit.as_str();
    let base = expect
        .base
        .clone()
        .unwrap_or_else(|| base_url(settings, server));
    let url = format!("{base}/healthz/ready");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(settings.timeouts.ready_secs);
    let mut last;
    let state = loop {
        let state = sys.state(unit)?;
        // "activating (auto-restart)" is a process that already exited and waits for
        // Restart=on-failure: the start failed, even if systemd will try again.
        if !state.active_state.is_up() || state.sub_state.is_auto_restart() {
            return Err(exited(unit, &state, settings, expect));
        }
        if let Some(sig) = crate::os::signals::received() {
            return Err(HealthError::Interrupted {
                unit: unit.into(),
                signal: sig.to_string(),
            });
        }
        // 429 (upstream's anonymous rate limit) is retried like any other answer but 200.
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
    // The server's own socket answered, not a listener someone else put on that port (only for
    // the address from the server's config or the default; a URL root set is root's business).
    if settings.health.url.is_none() && tls_or_plain_loopback(&base) {
        let pids = sys.unit_pids(unit);
        if let Some(addr) = base_addr(&base) {
            let inodes = crate::server::listener::listening_inodes(addr);
            if !crate::server::listener::held_by(&inodes, &pids) {
                return Err(HealthError::NotTheServer {
                    unit: unit.into(),
                    url,
                });
            }
        }
    }
    if expect.json_config
        && !expect.recovery
        && server_mode(&base) == Some(Mode::RecoveryOrBootstrap)
    {
        // What the unit's environment says now names the cause exactly when it is the env.
        let hint = match crate::server::serverenv::ServerEnv::of(sys, unit) {
            Ok(env) if env.recovery_mode() => format!(
                " (STALWART_RECOVERY_MODE is set in {}: remove it there, then `systemctl restart {unit}`)",
                env.origin("STALWART_RECOVERY_MODE").unwrap_or("the unit's environment")
            ),
            _ => expect.mode_hint.clone(),
        };
        return Err(HealthError::NotNormalMode {
            unit: unit.into(),
            url: format!("{base}/jmap/session"),
            hint,
        });
    }
    wait_listeners(unit, &expect.listeners, deadline)?;
    std::thread::sleep(Duration::from_secs(settings.timeouts.settle_secs));
    let after = sys.state(unit)?;
    if after.active_state != crate::os::systemd::ActiveState::Active {
        return Err(exited(unit, &after, settings, expect));
    }
    if after.main_pid != state.main_pid {
        return Err(HealthError::Restarted {
            unit: unit.into(),
            before: state.main_pid,
            after: after.main_pid,
        });
    }
    if let Some(runs) = &expect.runs {
        runs.check(after.main_pid)
            .map_err(|(binary, detail)| HealthError::NotTheBinary {
                unit: unit.into(),
                pid: after.main_pid,
                binary,
                detail,
            })?;
    }
    if let Some(line) = failure_in_log(&after, settings)
        .or_else(|| failure_in_files(&expect.log_files, after.exec_main_start_secs(), settings))
    {
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

fn tls_or_plain_loopback(base: &str) -> bool {
    crate::os::tls::is_loopback(base)
}

/// The socket address of an `http(s)://IP:PORT` base URL.
fn base_addr(base: &str) -> Option<std::net::SocketAddr> {
    base.strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))?
        .parse()
        .ok()
}

/// Every expected listener answers with its greeting, polled until `deadline`.
fn wait_listeners(
    unit: &str,
    want: &[crate::server::listener::Probe],
    deadline: Instant,
) -> Result<(), HealthError> {
    loop {
        let missing: Vec<String> = crate::server::listener::unanswered(want)
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HealthError::ListenersMissing {
                unit: unit.into(),
                missing: missing.join(", "),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the anonymous JMAP session says about 0.16's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Recovery and bootstrap mode (bootstrap is recovery mode on an in-memory store).
    RecoveryOrBootstrap,
}

/// 0.16's mode, told without credentials (measured with the real 0.16.17/0.16.18): in normal
/// mode the anonymous `/jmap/session` has an absolute `apiUrl` (`https://<hostname>/jmap/`); in
/// recovery and bootstrap mode it is relative (`/jmap/`). None when the session cannot be read.
pub fn server_mode(base: &str) -> Option<Mode> {
    let mut agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .redirects(0);
    if base.starts_with("https://") && crate::os::tls::is_loopback(base) {
        agent = agent.tls_config(crate::os::tls::loopback_config().ok()?);
    }
    use std::io::Read;
    // A session object is a few KiB; the server (the service user's) does not get to make us
    // read more (a longer answer fails to parse: no mode).
    let body = agent
        .build()
        .get(&format!("{base}/jmap/session"))
        .call()
        .ok()?
        .into_reader()
        .take(1 << 20);
    let v: serde_json::Value = serde_json::from_reader(body).ok()?;
    let api = v.get("apiUrl")?.as_str()?;
    Some(if api.starts_with('/') {
        Mode::RecoveryOrBootstrap
    } else {
        Mode::Normal
    })
}

fn exited(
    unit: &str,
    state: &crate::os::systemd::UnitState,
    settings: &Settings,
    expect: &Expect,
) -> HealthError {
    // journald reads the server's stdout asynchronously: the last lines of a process that just
    // exited (upstream logs "failed to migrate" and exits 0) can reach the journal a moment
    // after systemd reports the unit inactive. Looked for a little longer before the failure is
    // reported without the reason.
    let mut found = None;
    for _ in 0..12 {
        found = failure_in_log(state, settings).or_else(|| {
            failure_in_files(&expect.log_files, state.exec_main_start_secs(), settings)
        });
        if found.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = found
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
pub fn failure_in_log(
    state: &crate::os::systemd::UnitState,
    settings: &Settings,
) -> Option<String> {
    if state.invocation_id.is_empty() || state.exec_main_pid == 0 {
        return None;
    }
    let mut c = Command::new("journalctl");
    crate::os::child::clear_env(&mut c);
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

/// The server's log files of `sources` written since `since` (Unix seconds): the first ERROR
/// line (upstream's format: `<RFC 3339 time> ERROR <event> (<id>) ...`) with a failure pattern,
/// timestamped at or after the start. Read through descriptors: the directory is the server's
/// user's. Only the last 4 MiB of each file are read.
pub fn failure_in_files(
    sources: &[crate::server::serverconfig::LogFiles],
    since: Option<u64>,
    settings: &Settings,
) -> Option<String> {
    let since = since?;
    for src in sources {
        let Ok(dir) = crate::os::fsutil::Dir::open(&src.dir) else {
            continue;
        };
        for name in dir.entries().unwrap_or_default() {
            if !name.to_string_lossy().starts_with(&src.prefix) {
                continue;
            }
            let Ok((f, m)) = dir.open_file(&name) else {
                continue;
            };
            if (m.mtime.0 as u64) + 1 < since {
                continue;
            }
            use std::io::{Read, Seek};
            let mut f = f;
            let _ = f.seek(std::io::SeekFrom::Start(m.size.saturating_sub(4 << 20)));
            let mut text = String::new();
            if (&f).take(4 << 20).read_to_string(&mut text).is_err() {
                continue;
            }
            let fresh: String = text
                .lines()
                .filter(|l| {
                    let mut it = l.split_whitespace();
                    let ts = it.next().and_then(crate::os::clock::parse_rfc3339);
                    let level = it.next();
                    ts.is_some_and(|t| t + 1 >= since) && level == Some("ERROR")
                })
                .map(|l| format!("{l}\n"))
                .collect();
            if let Some(line) = find_failure(&fresh, &settings.health.failure_patterns) {
                return Some(line);
            }
        }
    }
    None
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
    fn log_files_count_error_lines_of_this_start_only() {
        let t = tempfile::tempdir().unwrap();
        let s = Settings::default();
        std::fs::write(
            t.path().join("stalwart.log.2026-12-01"),
            "2026-12-01T09:00:00Z ERROR Server startup error (server.startup-error) details = \"Failed to migrate database, aborting startup.\"\n\
             2026-12-01T10:00:05Z INFO Failed to migrate database is not an error line here\n\
             2026-12-01T10:00:06Z ERROR Resource error (resource.error) details = \"Webadmin bundle not found\"\n",
        )
        .unwrap();
        let src = vec![crate::server::serverconfig::LogFiles {
            dir: t.path().to_owned(),
            prefix: "stalwart.log".into(),
        }];
        let start_10 = crate::os::clock::parse_rfc3339("2026-12-01T10:00:00Z").unwrap();
        let start_9 = crate::os::clock::parse_rfc3339("2026-12-01T08:59:00Z").unwrap();
        // Touch the file so its mtime is after both starts.
        assert_eq!(
            failure_in_files(&src, Some(start_10), &s),
            None,
            "an older start's line"
        );
        let found = failure_in_files(&src, Some(start_9), &s).unwrap();
        assert!(found.contains("Failed to migrate database"), "{found}");
        assert_eq!(
            crate::os::clock::parse_rfc3339("1970-01-01T00:00:00Z"),
            Some(0)
        );
        assert_eq!(
            crate::os::clock::parse_rfc3339("2026-11-28T12:00:00.123Z"),
            Some(1_795_867_200)
        );
    }

    #[test]
    fn base_url_prefers_setting_then_listener_then_8080() {
        let mut s = Settings::default();
        assert_eq!(base_url(&s, None), "http://127.0.0.1:8080");
        let cfg = ServerConfig {
            path: "/x".into(),
            format: crate::server::serverconfig::ConfigFormat::Toml,
            stores: vec![],
            http: Some("127.0.0.1:9090".parse().unwrap()),
            https: Some("127.0.0.1:9443".parse().unwrap()),
            cluster: None,
            log_files: vec![],
            listeners: vec![],
            reader: crate::os::readas::Reader::Helper,
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

    /// A listener that answers one request with `head` (status line and headers).
    fn answer_once(head: &'static str) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b).unwrap();
            let reply = format!("{head}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            s.write_all(reply.as_bytes()).unwrap();
        });
        (addr, h)
    }

    #[test]
    fn probe_reports_status_codes_and_transport_errors() {
        let (addr, h) = answer_once("HTTP/1.1 503 Service Unavailable");
        assert_eq!(probe_ready(&format!("http://{addr}")), Ok(503));
        h.join().unwrap();
        // A redirect is the answer, not followed (to wherever the server's user points it).
        let (addr, h) = answer_once("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/");
        assert_eq!(probe_ready(&format!("http://{addr}")), Ok(302));
        h.join().unwrap();
        assert!(probe_ready(&format!("http://{addr}")).is_err());
    }
}
