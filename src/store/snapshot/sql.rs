//! Logical snapshots through external tools: pg_dump / pg_restore, mariadb-dump / mariadb, and
//! the server's own `--export` / `--import`.
//!
//! Everything these tools are given comes from the server config, which the server's user can
//! edit; the tools run as root's children. So (security model, README "Security"):
//! - every value that reaches a command line is validated first ([`check_value`]: a strict
//!   character set, never a leading `-`), so a database named `--plugin-dir=/tmp/x` or
//!   `--result-file=/etc/passwd` is refused, not passed as an option;
//! - PostgreSQL gets one conninfo string we build and quote ourselves (`--dbname=host='..'
//!   dbname='..'`): libpq would otherwise expand a database name such as `x hostaddr=.. sslkey=..`
//!   into connection options;
//! - the environment is cleared (no PGPASSFILE, PGSERVICEFILE, HOME, MYSQL_HOME of root's), the
//!   option files are pointed at nothing (`--no-defaults`, PGPASSFILE=/dev/null, ...), and the
//!   password travels in the child's environment only (PGPASSWORD, MYSQL_PWD: never on a command
//!   line, which every user can read in /proc);
//! - the clients run as the identity that controls the config (the server's user), not as root:
//!   they can do nothing the server itself could not. Dumps go to their stdout and restores come
//!   from their stdin, so they never open a file of ours;
//! - where the config asks for TLS, the clients verify the database server's certificate and
//!   name ([`Trust`]) before they send the store's password, against the helper's CA file (its
//!   own root-owned config, never the server's) or the system's CAs.

use super::{fsops, SnapshotError};
use crate::os::fsutil::{Dir, Kind};
use crate::server::serverconfig::SqlConn;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The identity a tool runs as: None is the helper itself (root), used only when root controls
/// the config too.
pub(crate) type RunAs = Option<(u32, u32)>;

/// Finds the first of `names` in the usual system directories (root's PATH is not inherited by
/// the cleared environment, and package hooks may run with a minimal one).
pub(crate) fn find_program(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        for d in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
            let p = Path::new(d).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn need_program(store: &str, names: &[&str], package: &str) -> Result<PathBuf, SnapshotError> {
    find_program(names).ok_or_else(|| SnapshotError::ToolMissing {
        store: store.to_string(),
        tool: names.join(" or "),
        package: package.to_string(),
    })
}

/// A value from the server config that goes to a tool (database, user, host): letters, digits
/// and `_ . - $` (hosts also `:` and `/` for sockets), at most 255 bytes, not starting with `-`.
pub(crate) fn check_value(store: &str, what: &str, value: &str) -> Result<(), SnapshotError> {
    let extra: &[char] = match what {
        "host" => &['_', '.', '-', ':', '/', '[', ']'],
        _ => &['_', '.', '-', '$'],
    };
    let ok = !value.is_empty()
        && value.len() <= 255
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::UnsafeValue {
            store: store.to_string(),
            what: what.to_string(),
        })
    }
}

fn check_conn(store: &str, conn: &SqlConn) -> Result<(), SnapshotError> {
    check_value(store, "host", &conn.host)?;
    check_value(store, "database", &conn.database)?;
    if let Some(u) = &conn.user {
        check_value(store, "user", u)?;
    }
    Ok(())
}

/// A command with a cleared environment (PATH and a locale only), run as `run_as`, confined
/// (`crate::os::child::confine`: own session, no terminal, no new privileges).
fn base_command(program: &Path, run_as: RunAs) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", "/nonexistent");
    if let Some((uid, gid)) = run_as {
        use std::os::unix::process::CommandExt;
        c.uid(uid).gid(gid);
    }
    crate::os::child::confine(&mut c);
    c
}

fn tool_err(store: &str, tool: &Path, what: &str, detail: String) -> SnapshotError {
    SnapshotError::Tool {
        store: store.to_string(),
        tool: tool.display().to_string(),
        what: what.to_string(),
        detail,
    }
}

/// The last lines of a tool's stderr, with the password cut out in case it echoes it.
fn stderr_tail(stderr: &[u8], secret: Option<&str>) -> String {
    let mut text = crate::os::child::printable(&String::from_utf8_lossy(stderr));
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(s, "<redacted>");
    }
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let joined = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
    // A single endless line (binary noise) must not become the whole message.
    match joined.char_indices().rev().nth(STDERR_TAIL_CHARS) {
        Some((i, c)) => format!("...{}", &joined[i + c.len_utf8()..]),
        None => joined,
    }
}

/// At most this many characters of a tool's stderr go into a message.
const STDERR_TAIL_CHARS: usize = 4000;

/// Upper bound of one tool run, in seconds: the helper's `[timeouts] tool_secs`
/// (`set_tool_timeout`). Process-wide, like the helper config it comes from: every dump, restore
/// and query below runs under it, and passing it through each of them (and `pgclone`) would add
/// a parameter to every signature for a value that never differs within one run.
static TOOL_SECS: AtomicU64 = AtomicU64::new(crate::config::DEFAULT_TOOL_SECS);

/// Sets the bound of every later tool run (`Snapshots::for_settings` does, from the helper
/// config).
pub(crate) fn set_tool_timeout(secs: u64) {
    TOOL_SECS.store(secs.max(1), Ordering::Relaxed);
}

fn tool_timeout() -> Duration {
    Duration::from_secs(TOOL_SECS.load(Ordering::Relaxed))
}

/// How much of a tool's stderr is kept for the message (its last lines are what matter; a tool
/// that writes without end must not fill the helper's memory).
const STDERR_KEEP: usize = 64 << 10;

/// Why the helper stopped a tool before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Killed {
    /// Writing its output failed: nothing reads its pipe any more.
    Sink,
    /// It ran past the bound.
    Timeout,
}

/// Runs `cmd` with `input` on its stdin (None: nothing) and its stdout into `output` (None:
/// collected and returned), for at most the configured tool timeout (`[timeouts] tool_secs`).
///
/// Every pipe is served concurrently (stdin and stderr by threads, stdout here), so a tool that
/// stops reading or writes a lot of stderr cannot deadlock us. A supervisor thread owns the child:
/// it kills the tool's whole process group (SIGKILL) when the output cannot be written (a full
/// disk under the dump: the tool would otherwise block on a full stdout pipe while we wait for its
/// stderr, with the server stopped and the lock held) or when the timeout passes, and always
/// reaps it. Nothing the tool started outlives the call.
///
/// The process group: `crate::os::child::confine` (every tool command is built through it) puts the
/// child in a session of its own with `setsid`, which also makes it the leader of a new process
/// group (pgid = its pid). So a terminal's Ctrl-C (SIGINT to the terminal's foreground group) or
/// an SSH hang-up (SIGHUP to the session of that terminal) never reaches a tool in the middle of
/// an undo, and the group is what a kill here must name. (`CommandExt::process_group(0)` must not
/// be added: it makes the child a group leader before `setsid`, which then fails with EPERM.)
fn run_piped(
    store: &str,
    cmd: Command,
    secret: Option<&str>,
    what: &str,
    input: Option<Box<dyn Read + Send>>,
    output: Option<&mut dyn Write>,
) -> Result<Vec<u8>, SnapshotError> {
    run_piped_within(store, cmd, secret, what, input, output, tool_timeout())
}

/// `run_piped` with an explicit bound.
fn run_piped_within(
    store: &str,
    mut cmd: Command,
    secret: Option<&str>,
    what: &str,
    input: Option<Box<dyn Read + Send>>,
    output: Option<&mut dyn Write>,
    timeout: Duration,
) -> Result<Vec<u8>, SnapshotError> {
    let tool = PathBuf::from(cmd.get_program());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let deadline = Instant::now() + timeout;
    let mut child = cmd
        .spawn()
        .map_err(|e| tool_err(store, &tool, what, format!("cannot run it: {e}")))?;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (abort, aborted) = std::sync::mpsc::channel::<()>();
    let (collected, fed, err_bytes, (status, killed)) = std::thread::scope(|s| {
        let supervisor = s.spawn(move || supervise(child, deadline, aborted));
        let feeder = s.spawn(move || -> std::io::Result<()> {
            if let (Some(mut src), Some(mut sink)) = (input, stdin) {
                std::io::copy(&mut src, &mut sink)?;
            }
            Ok(())
        });
        let err_reader = s.spawn(move || {
            let mut kept = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let mut buf = [0u8; 8192];
                loop {
                    match e.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            kept.extend_from_slice(&buf[..n]);
                            if kept.len() > 2 * STDERR_KEEP {
                                kept.drain(..kept.len() - STDERR_KEEP);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            kept
        });
        let mut collected = Vec::new();
        let copied = match (stdout.as_mut(), output) {
            (Some(out), Some(sink)) => {
                std::io::copy(out, &mut crate::os::progress::Counted(sink)).map(|_| ())
            }
            (Some(out), None) => out.read_to_end(&mut collected).map(|_| ()),
            _ => Ok(()),
        };
        if copied.is_err() {
            // The tool would block on its full stdout pipe from here on: the supervisor kills
            // it, which ends the stderr reader and the feeder too.
            let _ = abort.send(());
        }
        // Our end of stdout goes now: should the kill be late, the tool gets EPIPE, not a pipe
        // nobody empties.
        drop(stdout);
        drop(abort);
        let fed = feeder.join().unwrap_or(Ok(()));
        let err_bytes = err_reader.join().unwrap_or_default();
        let done = supervisor.join().unwrap_or_else(|_| {
            (
                Err(std::io::Error::other("the supervising thread panicked")),
                None,
            )
        });
        (copied.map(|_| collected), fed, err_bytes, done)
    });
    if killed == Some(Killed::Timeout) {
        return Err(SnapshotError::ToolTimeout {
            store: store.to_string(),
            tool: tool.display().to_string(),
            what: what.to_string(),
            secs: timeout.as_secs(),
        });
    }
    // The sink's error says more than the exit status of the tool we killed because of it.
    let collected = collected.map_err(|e| {
        if fsops::is_no_space(&e) {
            tool_err(
                store,
                &tool,
                what,
                "writing its output failed: No space left on device (ENOSPC); the tool was \
                 stopped"
                    .into(),
            )
        } else {
            tool_err(
                store,
                &tool,
                what,
                format!("writing its output failed: {e}; the tool was stopped"),
            )
        }
    })?;
    let status = status.map_err(|e| tool_err(store, &tool, what, e.to_string()))?;
    if !status.success() {
        return Err(tool_err(
            store,
            &tool,
            what,
            format!("{status}: {}", stderr_tail(&err_bytes, secret)),
        ));
    }
    fed.map_err(|e| tool_err(store, &tool, what, format!("feeding its input failed: {e}")))?;
    Ok(collected)
}

/// Owns a running tool until it is reaped: kills its process group when `abort` says so or at
/// `deadline`, and once the tool has exited, whatever it left running in its group (which could
/// hold our pipes open). The group is only ever signalled while the tool is not yet reaped: its
/// pid, which is the group's id, cannot have been given to another process then.
fn supervise(
    mut child: std::process::Child,
    deadline: Instant,
    abort: std::sync::mpsc::Receiver<()>,
) -> (std::io::Result<std::process::ExitStatus>, Option<Killed>) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    use std::sync::mpsc::RecvTimeoutError;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut killed = None;
    let mut listening = true;
    // Short first: most tool runs (psql queries) end within milliseconds.
    let mut poll = Duration::from_millis(1);
    loop {
        // WNOWAIT: tells that it exited without reaping it, so the group id stays ours.
        match waitid(
            Id::Pid(pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return (Err(e.into()), killed),
        }
        let now = Instant::now();
        if killed.is_none() && now >= deadline {
            kill_group(pid);
            killed = Some(Killed::Timeout);
            continue;
        }
        let wait = if killed.is_some() {
            poll
        } else {
            poll.min(deadline.saturating_duration_since(now))
        };
        poll = (poll * 2).min(Duration::from_millis(50));
        if killed.is_none() && listening {
            match abort.recv_timeout(wait) {
                Ok(()) => {
                    kill_group(pid);
                    killed = Some(Killed::Sink);
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The caller is done with the pipes; the tool may still be finishing.
                Err(RecvTimeoutError::Disconnected) => listening = false,
            }
        } else {
            std::thread::sleep(wait.max(Duration::from_millis(1)));
        }
    }
    kill_group(pid);
    (child.wait(), killed)
}

/// SIGKILL to the process group `pgid` (the tool and whatever it started). ESRCH (nobody left)
/// is the normal case after the tool exited.
fn kill_group(pgid: nix::unistd::Pid) {
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
}

// ---------------------------------------------------------------- TLS

/// What a client checks of the database server before it sends the store's password.
/// `sslmode=require` / `--ssl` alone encrypt but accept any certificate: whoever answers at the
/// configured address (a spoofed DNS answer, a hijacked route) would get the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The config asks for no TLS.
    Plain,
    /// TLS over a unix socket: a local file the config names, nothing crosses a network, so
    /// nothing to authenticate (libpq ignores sslmode there; MariaDB encrypts as asked).
    Local,
    /// The certificate must chain to this CA file (the helper's `database_ca_file`) and name the
    /// host.
    CaFile(PathBuf),
    /// The certificate must chain to the system's CAs and name the host.
    System,
}

impl Trust {
    fn describe(&self) -> String {
        match self {
            Trust::CaFile(p) => format!("the CA file {}", p.display()),
            Trust::System => "the system's CA certificates".into(),
            Trust::Plain | Trust::Local => "nothing".into(),
        }
    }
}

fn is_socket(conn: &SqlConn) -> bool {
    conn.host.starts_with('/')
}

fn ca_err(store: &str, reason: String) -> SnapshotError {
    SnapshotError::DatabaseCa {
        store: store.to_string(),
        reason,
    }
}

/// The helper's CA file, checked to be a file the tools can read: they run as `run_as`, and a
/// libpq that cannot read it fails with a message that does not say which setting to fix.
fn check_ca_file(store: &str, ca: &Path, run_as: RunAs) -> Result<(), SnapshotError> {
    match std::fs::metadata(ca) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(ca_err(
                store,
                format!("the CA file {} is not a regular file", ca.display()),
            ))
        }
        Err(e) => {
            return Err(ca_err(
                store,
                format!("the CA file {} cannot be read: {e}", ca.display()),
            ))
        }
    }
    let (Some((uid, gid)), Some(test)) = (run_as, find_program(&["test"])) else {
        return Ok(());
    };
    // access(2) as the tools' user, ACLs included: exactly what the tool will find.
    let readable = base_command(&test, Some((uid, gid)))
        .arg("-r")
        .arg(ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if readable {
        Ok(())
    } else {
        Err(ca_err(
            store,
            format!(
                "the CA file {} is not readable by uid {uid}, which the database tools run as \
                 (a CA certificate is public: `chmod 0644` it and its directories 0755)",
                ca.display()
            ),
        ))
    }
}

/// The major version of a PostgreSQL client program (`pg_dump (PostgreSQL) 15.18 (Debian ..)`).
fn pg_client_major(client: &Path, run_as: RunAs) -> Option<u32> {
    // (`confine` made stdout /dev/null: piped here, the one stream read.)
    let out = base_command(client, run_as)
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_pg_major(&String::from_utf8_lossy(&out.stdout))
}

fn parse_pg_major(version: &str) -> Option<u32> {
    let rest = version.split_once("(PostgreSQL) ")?.1;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// What every client does alike: no TLS asked for, a unix socket (nothing crosses a network),
/// or the helper's CA file. None: it depends on the client.
fn settled_trust(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
) -> Result<Option<Trust>, SnapshotError> {
    if !conn.tls {
        return Ok(Some(Trust::Plain));
    }
    if is_socket(conn) {
        return Ok(Some(Trust::Local));
    }
    if let Some(ca) = &conn.ca_file {
        check_ca_file(store, ca, run_as)?;
        return Ok(Some(Trust::CaFile(ca.clone())));
    }
    Ok(None)
}

/// How `client` (pg_dump, psql) verifies the server of `conn`. Without a CA file: the system's
/// CAs, which libpq knows as `sslrootcert=system` from version 16 on; before that its only
/// default is ~/.postgresql/root.crt, and HOME is /nonexistent for the tools (and the server's
/// user's home is theirs to write). A client from PostgreSQL 16 on comes with a libpq as new
/// (its packages depend on it); a libpq older than its client fails closed ("root certificate
/// file "system" does not exist"), which [`unverified`] turns into the same advice.
pub(crate) fn pg_trust(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    client: &Path,
) -> Result<Trust, SnapshotError> {
    if let Some(t) = settled_trust(store, conn, run_as)? {
        return Ok(t);
    }
    match pg_client_major(client, run_as) {
        Some(v) if v >= 16 => Ok(Trust::System),
        v => Err(ca_err(
            store,
            format!(
                "{} {} cannot use the system's CA certificates (libpq's sslrootcert=system \
                 needs PostgreSQL 16 or later) and no CA file is configured",
                client.display(),
                v.map_or("of unknown version".to_string(), |v| format!("{v}"))
            ),
        )),
    }
}

/// How a MySQL/MariaDB client verifies the server of `conn`: MariaDB's client falls back to the
/// system's CAs (Connector/C loads OpenSSL's default paths when it is given no CA); MySQL's
/// needs a CA file for `--ssl-mode=VERIFY_IDENTITY`.
pub(crate) fn my_trust(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    client: &Path,
) -> Result<Trust, SnapshotError> {
    if let Some(t) = settled_trust(store, conn, run_as)? {
        return Ok(t);
    }
    if is_mariadb(client) {
        Ok(Trust::System)
    } else {
        Err(ca_err(
            store,
            format!(
                "{} (MySQL's client) verifies a server only against a CA file it is given, and \
                 none is configured",
                client.display()
            ),
        ))
    }
}

/// MariaDB's clients take `--ssl` / `--ssl-verify-server-cert`, MySQL's `--ssl-mode`. Debian
/// installs MariaDB's under MySQL's names as symlinks (mysqldump -> mariadb-dump): the name of
/// the file they lead to decides.
fn is_mariadb(program: &Path) -> bool {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_owned());
    real.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("mariadb"))
}

/// A tool's failure while it verified the server, as such: the generic "check that the database
/// is reachable" would send the admin after the credentials.
fn unverified(store: &str, conn: &SqlConn, trust: &Trust, e: SnapshotError) -> SnapshotError {
    let SnapshotError::Tool { detail, .. } = &e else {
        return e;
    };
    let lower = detail.to_lowercase();
    let about_tls = ["certificate", "ssl error", "tls/ssl error", "x509"]
        .iter()
        .any(|m| lower.contains(m));
    if !about_tls || !matches!(trust, Trust::CaFile(_) | Trust::System) {
        return e;
    }
    SnapshotError::DatabaseUnverified {
        store: store.to_string(),
        trusted: trust.describe(),
        detail: format!("at {}: {detail}", conn.host),
    }
}

/// Refuses a TLS connection the tools could not verify (no CA to verify it with, a CA file they
/// cannot read) before anything is stopped or changed. A missing client is left to the tool run
/// itself, which names its package.
pub(crate) fn check_trust(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    postgres: bool,
) -> Result<(), SnapshotError> {
    if !conn.tls {
        return Ok(());
    }
    if postgres {
        match find_program(&["pg_dump"]) {
            Some(p) => pg_trust(store, conn, run_as, &p).map(|_| ()),
            None => Ok(()),
        }
    } else {
        match find_program(&["mariadb-dump", "mysqldump"]) {
            Some(p) => my_trust(store, conn, run_as, &p).map(|_| ()),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// A libpq conninfo value, single-quoted with `\` and `'` escaped (libpq's own rules).
fn pq_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The whole connection as one conninfo we build: nothing of it can be expanded into other
/// options, whatever the config says. `verify-full`: the certificate must chain to `trust` and
/// name the host, before libpq sends the password.
pub(crate) fn pg_conninfo(conn: &SqlConn, trust: &Trust) -> String {
    let mut parts = vec![
        format!("host={}", pq_quote(&conn.host)),
        format!("dbname={}", pq_quote(&conn.database)),
    ];
    if let Some(p) = conn.port {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = &conn.user {
        parts.push(format!("user={}", pq_quote(u)));
    }
    match trust {
        Trust::Plain | Trust::Local => {}
        Trust::CaFile(ca) => {
            parts.push("sslmode=verify-full".into());
            parts.push(format!("sslrootcert={}", pq_quote(&ca.to_string_lossy())));
        }
        Trust::System => parts.push("sslmode=verify-full sslrootcert=system".into()),
    }
    parts.join(" ")
}

fn pg_command(program: &Path, conn: &SqlConn, run_as: RunAs) -> Command {
    let mut c = base_command(program, run_as);
    // No option file of anyone's: only what the config says.
    c.env("PGPASSFILE", "/dev/null")
        .env("PGSERVICEFILE", "/dev/null")
        .env("PGSYSCONFDIR", "/nonexistent")
        .env("PGCONNECT_TIMEOUT", "30");
    if let Some(pw) = &conn.password {
        c.env("PGPASSWORD", &pw.0);
    }
    // -w: never prompt (we may run under dpkg without a terminal).
    c.arg("--no-password");
    c
}

fn secret(conn: &SqlConn) -> Option<&str> {
    conn.password.as_ref().map(|s| s.0.as_str())
}

/// `pg_dump --format=custom --compress=0` to `out`: a consistent dump (one snapshot
/// transaction) that pg_restore can load with `--clean`. Uncompressed: it runs while the server
/// is stopped, and zlib made pg_dump CPU-bound at about 18 MB/s on the 2-core machine (4 GiB of
/// mail took 4 minutes), while Stalwart's blobs are mostly compressed already; the space check
/// counts the database's size either way.
pub(crate) fn pg_dump(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    out: &mut dyn Write,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    let prog = need_program(store, &["pg_dump"], "postgresql-client")?;
    let trust = pg_trust(store, conn, run_as, &prog)?;
    let mut c = pg_command(&prog, conn, run_as);
    c.args(["--format=custom", "--compress=0"])
        .arg(format!("--dbname={}", pg_conninfo(conn, &trust)));
    run_piped(store, c, secret(conn), "dump the database", None, Some(out))
        .map_err(|e| unverified(store, conn, &trust, e))?;
    Ok(())
}

/// Restore = `pg_restore --clean --if-exists` turned into SQL and run by `psql` in ONE
/// transaction, after a prelude that drops every table the store's user owns: a newer server may
/// have created tables the old one does not know, and `--clean` only drops what is in the dump.
/// Any error (ON_ERROR_STOP) rolls the whole thing back, leaving the database as it was.
pub(crate) fn pg_restore(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    dump: std::fs::File,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    check_pg_magic(store, &dump)?;
    let restore_prog = need_program(store, &["pg_restore"], "postgresql-client")?;
    let psql_prog = need_program(store, &["psql"], "postgresql-client")?;
    let trust = pg_trust(store, conn, run_as, &psql_prog)?;
    // pg_restore turns the dump (on its stdin) into SQL on its stdout, which is psql's stdin.
    let mut gen = base_command(&restore_prog, run_as);
    gen.args(["--clean", "--if-exists", "--file=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut gen_child = gen.spawn().map_err(|e| {
        tool_err(
            store,
            &restore_prog,
            "read the dump",
            format!("cannot run it: {e}"),
        )
    })?;
    let (Some(mut gen_in), Some(sql_out), Some(mut gen_err)) = (
        gen_child.stdin.take(),
        gen_child.stdout.take(),
        gen_child.stderr.take(),
    ) else {
        return Err(tool_err(
            store,
            &restore_prog,
            "read the dump",
            "no pipes".into(),
        ));
    };
    let mut c = pg_command(&psql_prog, conn, run_as);
    c.args(["-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("--dbname={}", pg_conninfo(conn, &trust)))
        .args(["-c", PG_DROP_OWNED_TABLES, "-f", "-"])
        .stdin(Stdio::from(sql_out));
    let (res, gen_errs) = std::thread::scope(|s| {
        let mut dump = dump;
        let feeder = s.spawn(move || std::io::copy(&mut dump, &mut gen_in).map(|_| ()));
        let errs = s.spawn(move || {
            let mut b = Vec::new();
            let _ = gen_err.read_to_end(&mut b);
            b
        });
        let res = run_piped(store, c, secret(conn), "restore the database", None, None);
        if res.is_err() {
            // psql was stopped or failed: pg_restore, which feeds it, goes too (not reaped yet,
            // so its group id is still its own), instead of being waited for without a bound.
            kill_group(nix::unistd::Pid::from_raw(gen_child.id() as i32));
        }
        let _ = feeder.join();
        (res, errs.join().unwrap_or_default())
    });
    let gen_status = gen_child.wait();
    res.map_err(|e| unverified(store, conn, &trust, e))?;
    match gen_status {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(tool_err(
            store,
            &restore_prog,
            "read the dump",
            format!("{st}: {}", stderr_tail(&gen_errs, None)),
        )),
        Err(e) => Err(tool_err(
            store,
            &restore_prog,
            "read the dump",
            e.to_string(),
        )),
    }
}

/// Runs `statements` with psql on database `dbname` of `conn`'s server (each its own
/// transaction: CREATE and DROP DATABASE may not run inside one), stopping at the first error.
/// Returns what they print, unaligned and without headers.
pub(crate) fn pg_run(
    store: &str,
    conn: &SqlConn,
    dbname: &str,
    run_as: RunAs,
    what: &str,
    statements: &[String],
) -> Result<String, SnapshotError> {
    check_conn(store, conn)?;
    check_value(store, "database", dbname)?;
    let prog = need_program(store, &["psql"], "postgresql-client")?;
    let on = SqlConn {
        database: dbname.to_string(),
        ..conn.clone()
    };
    let trust = pg_trust(store, &on, run_as, &prog)?;
    let mut c = pg_command(&prog, &on, run_as);
    c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("--dbname={}", pg_conninfo(&on, &trust)));
    for s in statements {
        c.arg("-c").arg(s);
    }
    let out = run_piped(store, c, secret(conn), what, None, None)
        .map_err(|e| unverified(store, conn, &trust, e))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Refuses a dump that is not what pg_dump writes, before the database is touched.
pub(crate) fn check_pg_magic(store: &str, dump: &std::fs::File) -> Result<(), SnapshotError> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 5];
    if dump.read_exact_at(&mut head, 0).is_ok() && &head == b"PGDMP" {
        return Ok(());
    }
    Err(SnapshotError::BadDump {
        store: store.to_string(),
        path: PathBuf::from("dump.pgcustom"),
        message: "it does not start like a pg_dump custom-format file".into(),
    })
}

const PG_DROP_OWNED_TABLES: &str = "DO $$ DECLARE r record; BEGIN \
    FOR r IN SELECT schemaname, tablename FROM pg_tables \
      WHERE tableowner = current_user AND schemaname NOT IN ('pg_catalog','information_schema') \
    LOOP EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE', r.schemaname, r.tablename); \
    END LOOP; END $$;";

pub(crate) fn pg_size(conn: &SqlConn, run_as: RunAs) -> Option<u64> {
    let q = "SELECT pg_database_size(current_database())".to_string();
    pg_run("", conn, &conn.database, run_as, "size", &[q])
        .ok()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- MySQL / MariaDB

fn my_command(program: &Path, conn: &SqlConn, trust: &Trust, run_as: RunAs) -> Command {
    let mut c = base_command(program, run_as);
    // --no-defaults (it must come first): only what the server's config says, no option file.
    c.arg("--no-defaults");
    if conn.host.starts_with('/') {
        c.arg(format!("--socket={}", conn.host))
            .arg("--protocol=socket");
    } else {
        c.arg(format!("--host={}", conn.host));
        if let Some(p) = conn.port {
            c.arg(format!("--port={p}")).arg("--protocol=tcp");
        }
    }
    if let Some(u) = &conn.user {
        c.arg(format!("--user={u}"));
    }
    if let Some(pw) = &conn.password {
        c.env("MYSQL_PWD", &pw.0);
    }
    let mariadb = is_mariadb(program);
    match (trust, mariadb) {
        (Trust::Plain, _) => {}
        (Trust::Local, true) => {
            c.arg("--ssl");
        }
        (Trust::Local, false) => {
            c.arg("--ssl-mode=REQUIRED");
        }
        // --ssl-verify-server-cert checks the chain and that the certificate names the host.
        (Trust::CaFile(_) | Trust::System, true) => {
            c.args(["--ssl", "--ssl-verify-server-cert"]);
        }
        (Trust::CaFile(_) | Trust::System, false) => {
            c.arg("--ssl-mode=VERIFY_IDENTITY");
        }
    }
    if let Trust::CaFile(ca) = trust {
        let mut arg = OsString::from("--ssl-ca=");
        arg.push(ca);
        c.arg(arg);
    }
    c
}

/// `--single-transaction`: a consistent InnoDB snapshot without locking tables.
pub(crate) fn mysql_dump(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    out: &mut dyn Write,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    let prog = need_program(
        store,
        &["mariadb-dump", "mysqldump"],
        "mariadb-client (or mysql-client)",
    )?;
    let trust = my_trust(store, conn, run_as, &prog)?;
    let mut c = my_command(&prog, conn, &trust, run_as);
    c.args([
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--hex-blob",
        "--add-drop-table",
        "--",
    ])
    .arg(&conn.database);
    run_piped(store, c, secret(conn), "dump the database", None, Some(out))
        .map_err(|e| unverified(store, conn, &trust, e))?;
    Ok(())
}

/// Pipes the dump into `mariadb`, after dropping every table and view of the database (a newer
/// server may have created tables the old one does not know; the dump only drops its own). The
/// client stops at the first error (no --force). MySQL DDL is not transactional, so the dump is
/// checked to be complete (mariadb-dump's "-- Dump completed" trailer) before anything is dropped.
pub(crate) fn mysql_restore(
    store: &str,
    conn: &SqlConn,
    run_as: RunAs,
    dump: std::fs::File,
) -> Result<(), SnapshotError> {
    check_conn(store, conn)?;
    check_mysql_trailer(store, &dump)?;
    let prog = need_program(
        store,
        &["mariadb", "mysql"],
        "mariadb-client (or mysql-client)",
    )?;
    let trust = my_trust(store, conn, run_as, &prog)?;
    let mut list = my_command(&prog, conn, &trust, run_as);
    list.args([
        "-N",
        "-B",
        "-e",
        "SELECT table_type, table_name FROM information_schema.tables \
         WHERE table_schema=DATABASE()",
    ])
    .arg(format!("--database={}", conn.database));
    let listed = run_piped(store, list, secret(conn), "list the tables", None, None)
        .map_err(|e| unverified(store, conn, &trust, e))?;
    let mut prelude = String::from("SET FOREIGN_KEY_CHECKS=0;\n");
    for line in String::from_utf8_lossy(&listed).lines() {
        let Some((ty, name)) = line.split_once('\t') else {
            continue;
        };
        let what = if ty == "VIEW" { "VIEW" } else { "TABLE" };
        prelude.push_str(&format!(
            "DROP {what} IF EXISTS `{}`;\n",
            name.replace('`', "``")
        ));
    }
    let mut c = my_command(&prog, conn, &trust, run_as);
    c.arg("--binary-mode")
        .arg(format!("--database={}", conn.database));
    let input = std::io::Cursor::new(prelude.into_bytes())
        .chain(dump)
        .chain(std::io::Cursor::new(
            b"\nSET FOREIGN_KEY_CHECKS=1;\n".to_vec(),
        ));
    run_piped(
        store,
        c,
        secret(conn),
        "restore the database",
        Some(Box::new(input)),
        None,
    )?;
    Ok(())
}

pub(crate) fn check_mysql_trailer(store: &str, dump: &std::fs::File) -> Result<(), SnapshotError> {
    use std::os::unix::fs::FileExt;
    let tail = (|| -> std::io::Result<String> {
        let len = dump.metadata()?.len();
        let start = len.saturating_sub(256);
        let mut buf = vec![0u8; (len - start) as usize];
        dump.read_exact_at(&mut buf, start)?;
        Ok(String::from_utf8_lossy(&buf).to_string())
    })();
    match tail {
        Ok(t) if t.contains("-- Dump completed") => Ok(()),
        _ => Err(SnapshotError::BadDump {
            store: store.to_string(),
            path: PathBuf::from("dump.sql"),
            message: "no \"-- Dump completed\" trailer: the dump was truncated".into(),
        }),
    }
}

pub(crate) fn mysql_size(conn: &SqlConn, run_as: RunAs) -> Option<u64> {
    check_conn("", conn).ok()?;
    let prog = find_program(&["mariadb", "mysql"])?;
    let trust = my_trust("", conn, run_as, &prog).ok()?;
    let mut c = my_command(&prog, conn, &trust, run_as);
    c.args([
        "-N",
        "-B",
        "-e",
        "SELECT COALESCE(SUM(data_length+index_length),0) FROM information_schema.tables \
         WHERE table_schema=DATABASE()",
    ])
    .arg(format!("--database={}", conn.database));
    let out = run_piped("", c, secret(conn), "size", None, None).ok()?;
    String::from_utf8_lossy(&out).trim().parse().ok()
}

// ---------------------------------------------------------------- server export / import

/// Export or import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Export,
    Import,
}

/// The server's own logical export (facts: `--export DIR`, server stopped, exit 0 ok / 1
/// error), run by descriptor (`crate::os::child::Program`) with a cleared environment (CONFIG_PATH
/// would make the server ignore its arguments, facts) as `run_as`, which never is root unless
/// root controls the binary, the config and the data alike.
///
/// That user cannot enter our 0700 snapshot root, so it works in a staging directory under
/// /var/tmp: a root-owned 0711 directory holding one `data` directory of theirs. Export: they
/// fill it, then root copies it into the snapshot through descriptors (root-owned copies; a
/// symlink they planted stays a symlink, nothing outside is read). Import: root builds `data`
/// from the snapshot with their ownership, then they import it.
pub(crate) fn server_export_import(
    store: &str,
    program: &crate::os::child::Program,
    config: &Path,
    direction: Direction,
    snapshot: (&Dir, &OsStr),
    export_types: Option<&str>,
    run_as: RunAs,
) -> Result<(), SnapshotError> {
    let what = match direction {
        Direction::Export => "export the data (server --export)",
        Direction::Import => "import the data (server --import)",
    };
    let staging = tempfile::Builder::new()
        .prefix(".stalwart-upgrade-export-")
        .tempdir_in("/var/tmp")
        .map_err(|e| fsops::io_err("create a staging directory in", Path::new("/var/tmp"), e))?;
    let staging_dir = Dir::open(staging.path())?;
    staging_dir.set_mode(if run_as.is_some() { 0o711 } else { 0o700 })?;
    let (parent, name) = snapshot;
    match direction {
        Direction::Export => {
            let work = staging_dir.create_dir("data", 0o700)?;
            if let Some((uid, gid)) = run_as {
                work.set_owner(uid, gid)?;
            }
        }
        Direction::Import => {
            let src = parent.open_dir(name)?;
            let how = fsops::TreeCopy {
                link: &|_| false,
                owner: run_as,
                hash_links: None,
            };
            let mut warnings = Vec::new();
            fsops::copy_tree(&src, &staging_dir, OsStr::new("data"), &how, &mut warnings)?;
        }
    }
    let flag = match direction {
        Direction::Export => "--export",
        Direction::Import => "--import",
    };
    let mut c = program.command(run_as);
    c.arg(OsString::from(format!("--config={}", config.display())))
        .arg(flag)
        .arg(staging.path().join("data"));
    if let Some(t) = export_types {
        c.env("EXPORT_TYPES", t);
    }
    run_piped(store, c, None, what, None, None)?;
    if direction == Direction::Export {
        let work = staging_dir.open_dir("data")?;
        if work.meta()?.kind != Kind::Dir {
            return Err(tool_err(
                store,
                program.path(),
                what,
                "its output directory was replaced".into(),
            ));
        }
        let how = fsops::TreeCopy {
            link: &|_| false,
            owner: Some((0, 0)),
            hash_links: None,
        };
        let mut warnings = Vec::new();
        let (_, dst) = fsops::copy_tree(&work, parent, name, &how, &mut warnings)?;
        dst.set_mode(0o700)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_could_be_options_are_refused() {
        for bad in [
            "--plugin-dir=/opt/stalwart/data/p",
            "--result-file=/etc/passwd",
            "-e",
            "x y",
            "a'b",
            "host=evil",
            "",
            "db;drop",
        ] {
            assert!(check_value("s", "database", bad).is_err(), "{bad}");
        }
        for good in ["stalwart", "mail_db", "my-db", "db.v2", "a$b"] {
            check_value("s", "database", good).unwrap();
        }
        check_value("s", "host", "/run/postgresql").unwrap();
        check_value("s", "host", "[::1]").unwrap();
        assert!(check_value("s", "host", "-oProxyCommand=x").is_err());
        let e = check_value("pg", "database", "--x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pg") && e.contains("database"), "{e}");
    }

    fn tls_conn(host: &str, ca_file: Option<PathBuf>) -> SqlConn {
        SqlConn {
            host: host.into(),
            port: Some(5433),
            database: "x' host='evil".into(),
            user: Some("u".into()),
            password: None,
            tls: true,
            ca_file,
        }
    }

    #[test]
    fn conninfo_is_quoted_and_complete() {
        let c = tls_conn("db.example", None);
        let base = "host='db.example' dbname='x\\' host=\\'evil' port=5433 user='u'";
        assert_eq!(pg_conninfo(&c, &Trust::Plain), base);
        assert_eq!(
            pg_conninfo(&c, &Trust::CaFile("/etc/db ca/it's.pem".into())),
            format!("{base} sslmode=verify-full sslrootcert='/etc/db ca/it\\'s.pem'")
        );
        assert_eq!(
            pg_conninfo(&c, &Trust::System),
            format!("{base} sslmode=verify-full sslrootcert=system")
        );
    }

    /// A stand-in client that answers `--version` like the real ones.
    fn fake_client(dir: &Path, name: &str, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho '{version}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn tls_with_a_ca_file_verifies_the_server_against_it() {
        let t = tempfile::tempdir().unwrap();
        let ca = t.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let pg15 = fake_client(t.path(), "pg_dump", "pg_dump (PostgreSQL) 15.18 (Debian)");
        let c = tls_conn("db.example", Some(ca.clone()));
        let trust = pg_trust("pg", &c, None, &pg15).unwrap();
        assert_eq!(trust, Trust::CaFile(ca.clone()));
        let ci = pg_conninfo(&c, &trust);
        assert!(
            ci.ends_with(&format!(
                "sslmode=verify-full sslrootcert='{}'",
                ca.display()
            )),
            "{ci}"
        );
        // No TLS asked for, or a unix socket: nothing to verify.
        let plain = SqlConn {
            tls: false,
            ..c.clone()
        };
        assert_eq!(pg_trust("pg", &plain, None, &pg15).unwrap(), Trust::Plain);
        let socket = tls_conn("/run/postgresql", None);
        assert_eq!(pg_trust("pg", &socket, None, &pg15).unwrap(), Trust::Local);
        assert!(!pg_conninfo(&socket, &Trust::Local).contains("ssl"));
        // A CA file that is not there is named, with the setting.
        let gone = tls_conn("db.example", Some(t.path().join("nope.pem")));
        let e = pg_trust("pg", &gone, None, &pg15).unwrap_err();
        assert!(matches!(e, SnapshotError::DatabaseCa { .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
    }

    #[test]
    fn tls_without_a_ca_file_needs_libpq_16_or_is_refused_naming_the_setting() {
        let t = tempfile::tempdir().unwrap();
        let c = tls_conn("db.example", None);
        let pg16 = fake_client(t.path(), "psql16", "psql (PostgreSQL) 16.4");
        assert_eq!(pg_trust("pg", &c, None, &pg16).unwrap(), Trust::System);
        let pg15 = fake_client(
            t.path(),
            "psql15",
            "psql (PostgreSQL) 15.18 (Debian 15.18-0)",
        );
        let e = pg_trust("pg", &c, None, &pg15).unwrap_err();
        assert!(matches!(e, SnapshotError::DatabaseCa { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("database_ca_file") && msg.contains("[snapshots]"),
            "{msg}"
        );
        assert!(msg.contains("15"), "{msg}");
        assert_eq!(parse_pg_major("pg_dump (PostgreSQL) 17.2"), Some(17));
        assert_eq!(parse_pg_major("something else"), None);
    }

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn mysql_clients_verify_the_server_certificate_and_name() {
        let t = tempfile::tempdir().unwrap();
        let ca = t.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let mariadb = fake_client(t.path(), "mariadb-dump", "mariadb-dump Ver 10.19");
        let mysql = fake_client(t.path(), "mysqldump.real", "mysqldump Ver 8.0");
        // MariaDB's client installed under MySQL's name is still MariaDB's.
        let alias = t.path().join("mysqldump");
        std::os::unix::fs::symlink(&mariadb, &alias).unwrap();
        let ca_arg = format!("--ssl-ca={}", ca.display());

        let with_ca = tls_conn("db.example", Some(ca.clone()));
        let trust = my_trust("my", &with_ca, None, &mariadb).unwrap();
        let a = args(&my_command(&mariadb, &with_ca, &trust, None));
        assert_eq!(a[0], "--no-defaults");
        for want in ["--ssl", "--ssl-verify-server-cert", ca_arg.as_str()] {
            assert!(a.iter().any(|x| x == want), "{want} missing: {a:?}");
        }
        let a = args(&my_command(&alias, &with_ca, &trust, None));
        assert!(a.iter().any(|x| x == "--ssl-verify-server-cert"), "{a:?}");
        let trust = my_trust("my", &with_ca, None, &mysql).unwrap();
        let a = args(&my_command(&mysql, &with_ca, &trust, None));
        assert!(a.iter().any(|x| x == "--ssl-mode=VERIFY_IDENTITY"), "{a:?}");
        assert!(a.contains(&ca_arg), "{a:?}");

        // No CA file: MariaDB's client verifies against the system's CAs; MySQL's cannot.
        let no_ca = tls_conn("db.example", None);
        let trust = my_trust("my", &no_ca, None, &mariadb).unwrap();
        assert_eq!(trust, Trust::System);
        let a = args(&my_command(&mariadb, &no_ca, &trust, None));
        assert!(a.iter().any(|x| x == "--ssl-verify-server-cert"), "{a:?}");
        assert!(!a.iter().any(|x| x.starts_with("--ssl-ca")), "{a:?}");
        let e = my_trust("my", &no_ca, None, &mysql).unwrap_err();
        assert!(e.to_string().contains("database_ca_file"), "{e}");

        // A unix socket: encrypted as asked, nothing to verify.
        let socket = tls_conn("/run/mysqld/mysqld.sock", None);
        let trust = my_trust("my", &socket, None, &mariadb).unwrap();
        let a = args(&my_command(&mariadb, &socket, &trust, None));
        assert!(a.iter().any(|x| x == "--ssl"), "{a:?}");
        assert!(!a.iter().any(|x| x == "--ssl-verify-server-cert"), "{a:?}");
    }

    #[test]
    fn a_certificate_failure_is_reported_as_such() {
        let c = tls_conn("db.example", None);
        let tool = || {
            tool_err(
                "pg",
                Path::new("/usr/bin/pg_dump"),
                "dump the database",
                "exit status: 1: connection to server failed: SSL error: certificate verify failed"
                    .into(),
            )
        };
        let e = unverified("pg", &c, &Trust::CaFile("/etc/ca.pem".into()), tool());
        assert!(matches!(e, SnapshotError::DatabaseUnverified { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/ca.pem") && msg.contains("db.example"),
            "{msg}"
        );
        // Without verification asked for, a tool's failure stays what it is.
        let e = unverified("pg", &c, &Trust::Plain, tool());
        assert!(matches!(e, SnapshotError::Tool { .. }), "{e}");
    }

    /// A dump's destination that takes `left` bytes, then fails like a full file system.
    struct FullAfter {
        left: usize,
    }

    impl Write for FullAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A confined `sh -c script` (by `sh`, not a script file: another test thread forking while
    /// a file is written would make its exec fail with ETXTBSY).
    fn shell(script: &str) -> Command {
        let mut c = base_command(Path::new("/bin/sh"), None);
        c.arg("-c").arg(script);
        c
    }

    /// Gone: no such process, or a zombie waiting for init (SIGKILLed, its parent gone too).
    fn gone(pid: &str) -> bool {
        let t0 = Instant::now();
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(") ").next().map(|r| r.chars().next()));
            if matches!(state, None | Some(Some('Z'))) {
                return true;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `f` on a thread and fails the test when it has not returned within `bound` (the
    /// deadlock this guards against would otherwise hang the test run instead of failing it).
    fn within<T: Send + 'static>(bound: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(bound)
            .unwrap_or_else(|_| panic!("still running after {bound:?}: the helper would hang"))
    }

    fn pids_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    /// Issue #24: a dump whose file system fills up. Before, the helper waited for the tool's
    /// stderr while the tool blocked on its full stdout pipe: forever, with the server stopped.
    /// Now the tool's whole group (here: a shell and the `yes` it started) is killed and reaped,
    /// and the error names the full disk.
    #[test]
    fn a_sink_that_fails_stops_the_tool_and_everything_it_started() {
        let t = tempfile::tempdir().unwrap();
        let pids = t.path().join("pids");
        let script = format!(
            "yes 'a line of a large database dump' & echo $$ $! > {p}; echo dumping >&2; wait",
            p = pids.display()
        );
        let started = Instant::now();
        let res = within(Duration::from_secs(60), move || {
            let mut sink = FullAfter { left: 1 << 20 };
            run_piped_within(
                "pg",
                shell(&script),
                None,
                "dump the database",
                None,
                Some(&mut sink),
                Duration::from_secs(600),
            )
        });
        let e = res.expect_err("the dump cannot have succeeded");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(e, SnapshotError::Tool { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("ENOSPC") && msg.contains("dump the database"),
            "{msg}"
        );
        let pids = pids_in(&pids);
        assert_eq!(pids.len(), 2, "{pids:?}");
        for pid in &pids {
            assert!(gone(pid), "process {pid} of the tool is still running");
        }
    }

    /// A tool that hangs (a lock it waits for, a database that stopped answering) is killed at
    /// the bound, with what it started, and the error names the setting. The tool leads its own
    /// process group and session (`confine`), so a terminal's Ctrl-C or hang-up never reaches it.
    #[test]
    fn a_tool_past_its_bound_is_killed_with_its_group() {
        let t = tempfile::tempdir().unwrap();
        let pids = t.path().join("pids");
        let script = format!(
            "sleep 1000 & echo $$ $! $(cut -d' ' -f5,6 /proc/$$/stat) > {p}; wait",
            p = pids.display()
        );
        let started = Instant::now();
        let res = within(Duration::from_secs(60), move || {
            run_piped_within(
                "my",
                shell(&script),
                None,
                "restore the database",
                None,
                None,
                Duration::from_secs(1),
            )
        });
        let elapsed = started.elapsed();
        let e = res.expect_err("killed");
        assert!(
            matches!(e, SnapshotError::ToolTimeout { secs: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("tool_secs"), "{e}");
        assert!(
            elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(20),
            "{elapsed:?}"
        );
        let pids = pids_in(&pids);
        assert_eq!(pids.len(), 4, "{pids:?}");
        // pid, child pid, process group, session: the tool leads both of its own.
        assert_eq!(pids[2], pids[0], "own process group: {pids:?}");
        assert_eq!(pids[3], pids[0], "own session: {pids:?}");
        for pid in &pids[..2] {
            assert!(gone(pid), "process {pid} of the tool is still running");
        }
    }

    /// Much output on both streams at once, and input fed at the same time: nothing blocks, all
    /// of stdout arrives, and a failure's message has the end of stderr.
    #[test]
    fn large_stdout_and_stderr_together_do_not_deadlock() {
        let res = within(Duration::from_secs(60), || {
            let input: Box<dyn Read + Send> = Box::new(std::io::repeat(b'x').take(4 << 20));
            run_piped_within(
                "s",
                shell("head -c 3000000 /dev/zero | tr '\\0' e >&2 & cat | wc -c; wait"),
                None,
                "list",
                Some(input),
                None,
                Duration::from_secs(60),
            )
        });
        assert_eq!(String::from_utf8_lossy(&res.unwrap()).trim(), "4194304");
        let e = within(Duration::from_secs(60), || {
            run_piped_within(
                "s",
                shell("head -c 3000000 /dev/zero >&2; echo the-last-words >&2; exit 3"),
                None,
                "list",
                None,
                None,
                Duration::from_secs(60),
            )
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("the-last-words") && e.contains("exit status: 3"),
            "{e}"
        );
        assert!(e.len() < 8192, "the message is a tail, not all of stderr");
    }
}
