//! Stop and start the server's unit over D-Bus (org.freedesktop.systemd1), waiting for the result of
//! our own job.
//!
//! How a stop or start is done (each step matters, see testbed.md and systemd's D-Bus API):
//! 1. `Manager.Subscribe` (once per connection), otherwise systemd emits no job signals to us;
//! 2. subscribe to `JobRemoved` BEFORE calling `StopUnit`/`StartUnit(unit, "replace")`, so a job
//!    that finishes at once is not missed;
//! 3. match the signal on the job object path that call returned (other jobs run concurrently);
//! 4. the job's result: done / skipped are success, canceled / timeout / failed / dependency /
//!    anything else a [`SystemdError::JobFailed`]; the whole wait is bounded by the caller's timeout;
//! 5. after a stop, also wait until `MainPID` is 0 and `ActiveState` is inactive or failed: with
//!    `KillMode=process` (the unit install.sh writes) the job ends when the main process is gone,
//!    but we check rather than trust that.
//!
//! Object paths of units always come from `LoadUnit`/the job, never built by hand (unit names
//! with `-`, `@`, `\x2d`... are escaped by systemd in its own way).
//!
//! The blocking calls run the async zbus API under `zbus::block_on`, with an `async-io` timer
//! racing the signal stream: no helper thread is left behind when a wait times out.

mod bus;
mod state;

pub use state::{ActiveState, JobResult, LoadState, ServiceState};

use futures_lite::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";
/// Bound on every single D-Bus call (dbus's own default): a wedged systemd makes a call fail,
/// never hang. Waiting for a job is bounded separately, by the caller's timeout.
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot reach systemd over D-Bus ({address}): {message}\n  is systemd PID 1 and dbus running? nothing was stopped")]
    Bus { address: String, message: String },
    #[error("{unit}: {message}; check `systemctl status {unit}`")]
    Call { unit: String, message: String },
    #[error("{unit} is not loaded ({load_state}); check `systemctl status {unit}`{hint}", hint = not_loaded_hint(unit, load_state))]
    NotLoaded { unit: String, load_state: LoadState },
    #[error("{op} job for {unit} ended with result '{result}'{hint}; see `journalctl -u {unit}` and `systemctl status {unit}`", hint = job_result_hint(result))]
    JobFailed {
        unit: String,
        op: &'static str,
        result: JobResult,
    },
    #[error("{op} of {unit} did not finish within {secs} s (the job may still be running); see `systemctl status {unit}` and `systemctl list-jobs`")]
    Timeout {
        unit: String,
        op: &'static str,
        secs: u64,
    },
}

fn not_loaded_hint(unit: &str, load_state: &LoadState) -> String {
    match load_state {
        LoadState::Masked => format!(" (it is masked: `systemctl unmask {unit}`)"),
        LoadState::NotFound => " (no unit file: is the server installed?)".to_string(),
        _ => String::new(),
    }
}

fn job_result_hint(result: &JobResult) -> &'static str {
    match result {
        JobResult::ConditionFailed => " (a Condition*= of the unit did not hold)",
        _ => "",
    }
}

/// Where systemd reads runtime unit files and drop-ins (tmpfs: gone at the next boot).
const RUNTIME_UNITS: &str = "/run/systemd/system";

/// The runtime drop-in of `Systemd::hold`.
pub fn hold_path(unit: &str) -> std::path::PathBuf {
    Path::new(RUNTIME_UNITS)
        .join(format!("{unit}.d"))
        .join("40-stalwart-upgrade-hold.conf")
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub load_state: LoadState,
    pub active_state: ActiveState,
    pub sub_state: ServiceState,
    pub main_pid: u32,
    pub fragment_path: String,
    /// Hex of the unit's InvocationID (journal field _SYSTEMD_INVOCATION_ID).
    pub invocation_id: String,
    pub unit_file_state: String,
    pub exec_main_status: i32,
    /// The main process of the last start (also after it exited).
    pub exec_main_pid: u32,
    /// When that process started (µs since the epoch, realtime; 0 if never).
    pub exec_main_start_us: u64,
    /// Restarts by `Restart=` since the unit was last started on request (systemd's
    /// NRestarts; our own starts reset it with `reset-failed`): above 0, the server crashed.
    pub n_restarts: u32,
}

impl UnitState {
    /// When the main process of the last start started (Unix seconds), if it did.
    pub fn exec_main_start_secs(&self) -> Option<u64> {
        (self.exec_main_start_us > 0).then_some(self.exec_main_start_us / 1_000_000)
    }

    /// install.sh writes its unit to /etc/systemd/system, which overrides the one a package ships
    /// in /lib/systemd/system: the packaged unit's hardening and settings are then silently
    /// ignored. Some(warning) when that is the case.
    pub fn override_warning(&self, unit: &str) -> Option<String> {
        let fragment = &self.fragment_path;
        if !fragment.starts_with("/etc/systemd/system/") {
            return None;
        }
        let shipped = ["/lib/systemd/system", "/usr/lib/systemd/system"]
            .iter()
            .map(|d| std::path::Path::new(d).join(unit))
            .find(|p| p.exists())?;
        Some(format!(
            "{fragment} overrides the packaged {} (install.sh writes its own unit there); the packaged unit's settings are not in effect. If nothing in it is yours, remove it and run `systemctl daemon-reload`",
            shipped.display()
        ))
    }
}

/// A connection to systemd's manager.
pub struct Systemd {
    conn: Connection,
    address: String,
}

/// How a stop/start job ended, as systemd's `JobRemoved` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Stop,
    Start,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Stop => "stop",
            Op::Start => "start",
        }
    }
}

/// Pure decision: is this `JobRemoved` result a success for `op`?
fn job_result_ok(op: Op, result: &JobResult) -> bool {
    match result {
        JobResult::Done => true,
        // Skipped: the job did not apply to the unit's state (e.g. nothing to do): for a stop,
        // the unit is not running, which is what we want; for a start it means nothing started.
        JobResult::Skipped => op == Op::Stop,
        _ => false,
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Systemd {
    /// The system bus: `DBUS_SYSTEM_BUS_ADDRESS` if set, else /run/dbus/system_bus_socket.
    pub fn connect() -> Result<Systemd, SystemdError> {
        let address = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .unwrap_or_else(|_| DEFAULT_SYSTEM_BUS.to_string());
        let conn = zbus::block_on(async {
            zbus::connection::Builder::system()?
                .method_timeout(METHOD_TIMEOUT)
                .build()
                .await
        })
        .map_err(|e| SystemdError::Bus {
            address: address.clone(),
            message: e.to_string(),
        })?;
        Self::with_connection(conn, address)
    }

    /// An explicit bus address, e.g. `unix:path=/some/dir/system_bus_socket` (a container's bus).
    pub fn connect_address(address: &str) -> Result<Systemd, SystemdError> {
        let conn = zbus::block_on(async {
            zbus::connection::Builder::address(address)?
                .method_timeout(METHOD_TIMEOUT)
                .build()
                .await
        })
        .map_err(|e| SystemdError::Bus {
            address: address.to_string(),
            message: e.to_string(),
        })?;
        Self::with_connection(conn, address.to_string())
    }

    fn with_connection(conn: Connection, address: String) -> Result<Systemd, SystemdError> {
        let sys = Systemd { conn, address };
        // Without Subscribe, systemd sends no JobRemoved to this client.
        let r = zbus::block_on(async { sys.manager().await?.subscribe().await });
        match r {
            Ok(()) => Ok(sys),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" =>
            {
                Ok(sys)
            }
            Err(e) => Err(SystemdError::Bus {
                address: sys.address.clone(),
                message: format!("Manager.Subscribe: {e}"),
            }),
        }
    }

    async fn manager(&self) -> zbus::Result<bus::ManagerProxy<'_>> {
        bus::ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    /// The bus address this connection uses (for messages).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Stops `unit` and waits (at most `timeout`) for our stop job's result, then for the main
    /// process to be gone (MainPID 0, ActiveState inactive or failed), then for its cgroup to be
    /// empty: with `KillMode=process` (install.sh's unit) other processes of the service user
    /// survive the stop and could still write the data we snapshot or restore, so whatever is
    /// left is killed (SIGKILL, logged).
    pub fn stop(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        let deadline = Instant::now() + timeout;
        self.run_job(Op::Stop, unit, timeout, deadline)?;
        // The job is done; confirm the process is gone (bounded by the same deadline).
        let mut killed = false;
        loop {
            let st = self.state_of(unit)?;
            if st.main_pid == 0 && st.active_state.is_down() {
                let left = self.unit_processes(unit)?;
                if left.is_empty() {
                    return Ok(());
                }
                if !killed {
                    tracing::warn!(
                        unit,
                        "{unit} is stopped but processes of it are left ({}): killing them, so that nothing writes the data while it is snapshotted or restored",
                        left.iter().map(|(pid, cmd)| format!("{pid} {cmd}")).collect::<Vec<_>>().join(", ")
                    );
                    self.kill_all(unit, libc::SIGKILL)?;
                    killed = true;
                }
            }
            if Instant::now() >= deadline {
                return Err(SystemdError::Timeout {
                    unit: unit.to_string(),
                    op: Op::Stop.name(),
                    secs: ceil_secs(timeout),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `unit` and waits (at most `timeout`) for our start job's result. Whether the server
    /// then becomes healthy is the health gate's business. A start skipped because a `Condition*=`
    /// did not hold (systemd reports the job as done) is reported as result `condition-failed`.
    /// Starts the unit after clearing its failed state and start-rate counter: our own
    /// stop/start pairs (and a crash-looping release being replaced) count against
    /// StartLimitBurst, and a rate-limited unit would refuse the very start that brings the
    /// server back.
    pub fn start_fresh(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        self.release(unit)?;
        if let Err(e) = self.reset_failed(unit) {
            tracing::debug!("reset-failed {unit}: {e}");
        }
        self.start(unit, timeout)
    }

    /// Holds `unit` stopped for the helper (issue #24): a runtime drop-in with
    /// `RefuseManualStart=yes`, so a start that monit, Puppet/Ansible "ensure running" or an
    /// admin asks for while the helper has the server stopped is refused by systemd instead of
    /// cancelling the stop job or starting the server on data being snapshotted or restored.
    /// In /run: a reboot lifts it by itself (the boot recovery decides then); the helper's own
    /// start (`start_fresh`) lifts it first. Its own StopUnit/StartUnit calls are the only
    /// ones that matter meanwhile.
    pub fn hold(&self, unit: &str) -> Result<(), SystemdError> {
        let path = hold_path(unit);
        let err = |e: std::io::Error| SystemdError::Call {
            unit: unit.to_string(),
            message: format!("cannot write {}: {e}", path.display()),
        };
        // /run/systemd/system exists whenever systemd is PID 1 (sd_booted(3)); never create it.
        let dir = path.parent().unwrap_or(Path::new("/run/systemd/system"));
        if !Path::new(RUNTIME_UNITS).is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(err)?;
        crate::os::fsutil::write_atomic_path(
            &path,
            b"# stalwart-upgrade holds the server stopped during an upgrade; removed when it starts it
              [Unit]
RefuseManualStart=yes
",
            0o644,
        )
        .map_err(|e| SystemdError::Call {
            unit: unit.to_string(),
            message: e.to_string(),
        })?;
        self.daemon_reload()
    }

    /// Lifts `hold`; Ok(true) when there was one.
    pub fn release(&self, unit: &str) -> Result<bool, SystemdError> {
        let path = hold_path(unit);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.daemon_reload()?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SystemdError::Call {
                unit: unit.to_string(),
                message: format!("cannot remove {}: {e}", path.display()),
            }),
        }
    }

    /// The pids of the unit's processes (none when systemd cannot say).
    pub fn unit_pids(&self, unit: &str) -> Vec<u32> {
        self.unit_processes(unit)
            .map(|v| v.into_iter().map(|(pid, _)| pid).collect())
            .unwrap_or_default()
    }

    pub fn start(&self, unit: &str, timeout: Duration) -> Result<(), SystemdError> {
        let deadline = Instant::now() + timeout;
        self.run_job(Op::Start, unit, timeout, deadline)?;
        let skipped = zbus::block_on(async {
            let u = self.unit_proxy(unit).await?;
            Ok::<_, SystemdError>(
                !u.condition_result()
                    .await
                    .map_err(|e| self.call_error(unit, e))?
                    && state::parse::<ActiveState>(
                        &u.active_state()
                            .await
                            .map_err(|e| self.call_error(unit, e))?,
                    ) == ActiveState::Inactive,
            )
        })?;
        if skipped {
            return Err(SystemdError::JobFailed {
                unit: unit.to_string(),
                op: Op::Start.name(),
                result: JobResult::ConditionFailed,
            });
        }
        Ok(())
    }

    /// The unit's state (loads the unit first). A unit that is masked, has no unit file or one
    /// that does not parse is [`SystemdError::NotLoaded`].
    pub fn state(&self, unit: &str) -> Result<UnitState, SystemdError> {
        let st = self.state_of(unit)?;
        if st.load_state != LoadState::Loaded {
            return Err(SystemdError::NotLoaded {
                unit: unit.to_string(),
                load_state: st.load_state,
            });
        }
        Ok(st)
    }

    /// The unit's state, loaded or not.
    fn state_of(&self, unit: &str) -> Result<UnitState, SystemdError> {
        let e = |e| self.call_error(unit, e);
        zbus::block_on(async {
            // One LoadUnit for both of the unit object's interfaces.
            let path = self.unit_path(unit).await?;
            let u: bus::UnitProxy<'_> = self.object_at(unit, path.clone()).await?;
            let mut st = UnitState {
                load_state: state::parse(&u.load_state().await.map_err(e)?),
                active_state: state::parse(&u.active_state().await.map_err(e)?),
                sub_state: state::parse(&u.sub_state().await.map_err(e)?),
                fragment_path: u.fragment_path().await.map_err(e)?,
                invocation_id: hex(&u.invocation_id().await.map_err(e)?),
                unit_file_state: u.unit_file_state().await.map_err(e)?,
                ..UnitState::default()
            };
            // Only services have a main process.
            if unit.ends_with(".service") && st.load_state == LoadState::Loaded {
                let s: bus::ServiceProxy<'_> = self.object_at(unit, path).await?;
                st.main_pid = s.main_pid().await.map_err(e)?;
                st.exec_main_status = s.exec_main_status().await.map_err(e)?;
                st.exec_main_pid = s.exec_main_pid().await.map_err(e)?;
                st.exec_main_start_us = s.exec_main_start_timestamp().await.map_err(e)?;
                st.n_restarts = s.n_restarts().await.map_err(e)?;
            }
            Ok(st)
        })
    }

    /// What the unit gives its main process as environment (`Environment=`, `EnvironmentFile=`,
    /// `UnsetEnvironment=`), as systemd reports it; `server::serverenv` reads it.
    pub fn environment(&self, unit: &str) -> Result<UnitEnvironment, SystemdError> {
        let e = |e| self.call_error(unit, e);
        zbus::block_on(async {
            let s = self.service_proxy(unit).await?;
            Ok(UnitEnvironment {
                environment: s.environment().await.map_err(e)?,
                files: s
                    .environment_files()
                    .await
                    .map_err(e)?
                    .into_iter()
                    .map(|(path, optional)| (std::path::PathBuf::from(path), optional))
                    .collect(),
                unset: s.unset_environment().await.map_err(e)?,
            })
        })
    }

    /// The processes in the unit's cgroup: (pid, command line).
    pub fn unit_processes(&self, unit: &str) -> Result<Vec<(u32, String)>, SystemdError> {
        let r = zbus::block_on(async { self.manager().await?.get_unit_processes(unit).await });
        match r {
            Ok(procs) => Ok(procs.into_iter().map(|(_, pid, cmd)| (pid, cmd)).collect()),
            // An inactive unit that was garbage-collected has no cgroup and no processes.
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(self.call_error(unit, e)),
        }
    }

    /// `systemctl kill --kill-whom=all --signal=SIG UNIT`.
    pub fn kill_all(&self, unit: &str, signal: i32) -> Result<(), SystemdError> {
        zbus::block_on(async { self.manager().await?.kill_unit(unit, "all", signal).await })
            .map_err(|e| self.call_error(unit, e))
    }

    /// `systemctl daemon-reload`: returns when the manager has reloaded.
    pub fn daemon_reload(&self) -> Result<(), SystemdError> {
        zbus::block_on(async { self.manager().await?.reload().await })
            .map_err(|e| self.call_error("daemon-reload", e))
    }

    /// `systemctl reset-failed UNIT`: clears the failed state and the start rate limit.
    pub fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        zbus::block_on(async { self.manager().await?.reset_failed_unit(unit).await })
            .map_err(|e| self.call_error(unit, e))
    }

    fn call_error(&self, unit: &str, e: zbus::Error) -> SystemdError {
        match e {
            zbus::Error::MethodError(name, desc, _) => {
                let desc = desc.unwrap_or_default();
                match name.as_str() {
                    "org.freedesktop.systemd1.NoSuchUnit" => SystemdError::NotLoaded {
                        unit: unit.to_string(),
                        load_state: LoadState::NotFound,
                    },
                    "org.freedesktop.systemd1.UnitMasked" => SystemdError::NotLoaded {
                        unit: unit.to_string(),
                        load_state: LoadState::Masked,
                    },
                    _ => SystemdError::Call {
                        unit: unit.to_string(),
                        message: format!("{name}: {desc}"),
                    },
                }
            }
            zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                SystemdError::Call {
                    unit: unit.to_string(),
                    message: format!(
                        "systemd did not answer within {} s (is it reloading or wedged?)",
                        METHOD_TIMEOUT.as_secs()
                    ),
                }
            }
            other => SystemdError::Bus {
                address: self.address.clone(),
                message: other.to_string(),
            },
        }
    }

    /// Queues `op` for `unit` (mode "replace") and waits for our job's JobRemoved.
    fn run_job(
        &self,
        op: Op,
        unit: &str,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(), SystemdError> {
        let timed_out = || SystemdError::Timeout {
            unit: unit.to_string(),
            op: op.name(),
            secs: ceil_secs(timeout),
        };
        let e = |e| self.call_error(unit, e);
        let result = zbus::block_on(async {
            let manager = self.manager().await.map_err(e)?;
            // Subscribe to the signal BEFORE queueing the job.
            let mut removed = manager.receive_job_removed().await.map_err(e)?;
            let job = match op {
                Op::Stop => manager.stop_unit(unit, "replace").await,
                Op::Start => manager.start_unit(unit, "replace").await,
            }
            .map_err(e)?;
            let wait = async {
                while let Some(signal) = removed.next().await {
                    let Ok(args) = signal.args() else {
                        continue;
                    };
                    if *args.job() == *job {
                        return Ok(state::parse::<JobResult>(args.result()));
                    }
                }
                Err(SystemdError::Bus {
                    address: self.address.clone(),
                    message: format!(
                        "the bus connection closed while waiting for the {} job of {unit}",
                        op.name()
                    ),
                })
            };
            let left = deadline.saturating_duration_since(Instant::now());
            futures_lite::future::or(wait, async {
                async_io::Timer::after(left).await;
                Err(timed_out())
            })
            .await
        })?;
        if job_result_ok(op, &result) {
            Ok(())
        } else {
            Err(SystemdError::JobFailed {
                unit: unit.to_string(),
                op: op.name(),
                result,
            })
        }
    }

    /// The unit's object, from `LoadUnit` (never a path built by hand).
    async fn unit_path(&self, unit: &str) -> Result<OwnedObjectPath, SystemdError> {
        let m = self.manager().await.map_err(|e| self.call_error(unit, e))?;
        m.load_unit(unit)
            .await
            .map_err(|e| self.call_error(unit, e))
    }

    async fn unit_proxy(&self, unit: &str) -> Result<bus::UnitProxy<'_>, SystemdError> {
        self.object_proxy(unit).await
    }

    async fn service_proxy(&self, unit: &str) -> Result<bus::ServiceProxy<'_>, SystemdError> {
        self.object_proxy(unit).await
    }

    async fn object_proxy<'s, T>(&'s self, unit: &str) -> Result<T, SystemdError>
    where
        T: zbus::proxy::Defaults + From<zbus::Proxy<'s>>,
    {
        let path = self.unit_path(unit).await?;
        self.object_at(unit, path).await
    }

    /// A proxy of one of the interfaces of the unit object at `path` (from `unit_path`).
    /// Uncached: every read asks systemd, so a state is never one a signal has not updated yet.
    async fn object_at<'s, T>(
        &'s self,
        unit: &str,
        path: OwnedObjectPath,
    ) -> Result<T, SystemdError>
    where
        T: zbus::proxy::Defaults + From<zbus::Proxy<'s>>,
    {
        zbus::proxy::Builder::<T>::new(&self.conn)
            .path(path)
            .map(|b| b.cache_properties(CacheProperties::No))
            .map_err(|e| self.call_error(unit, e))?
            .build()
            .await
            .map_err(|e| self.call_error(unit, e))
    }
}

/// A unit's environment settings as systemd reports them.
#[derive(Debug, Clone, Default)]
pub struct UnitEnvironment {
    /// `Environment=` assignments.
    pub environment: Vec<String>,
    /// `EnvironmentFile=` paths, each with whether it is optional (`-`).
    pub files: Vec<(std::path::PathBuf, bool)>,
    /// `UnsetEnvironment=` names.
    pub unset: Vec<String>,
}

/// Runs this helper with `args` as the transient service `unit` (`systemd-run`: nothing to
/// install, and it outlives this process, the package manager's run and the terminal), now or,
/// with `delay`, from a transient timer, with `env` added to its environment. A unit of that
/// name that already runs is left as it is.
pub fn run_helper_transient(
    unit: &str,
    description: &str,
    delay: Option<Duration>,
    args: &[&str],
    env: &[(&str, String)],
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("the helper's own path: {e}"))?;
    let mut cmd = std::process::Command::new("/usr/bin/systemd-run");
    cmd.args(["--unit", unit, "--collect", "--quiet", "--no-block"])
        .arg(format!("--description={description}"));
    if let Some(d) = delay {
        cmd.arg(format!("--on-active={}", d.as_secs().max(1)));
    }
    for (k, v) in env {
        cmd.arg(format!("--setenv={k}={v}"));
    }
    // The helper reads its settings from their default place (a STALWART_UPGRADE_CONFIG of
    // this run is not passed on).
    cmd.arg(exe).args(args).stderr(std::process::Stdio::piped());
    crate::os::child::confine(&mut cmd);
    let out = cmd.output().map_err(|e| format!("systemd-run: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || err.contains("already") {
        Ok(())
    } else {
        Err(format!(
            "systemd-run: {}",
            crate::os::child::printable(err.trim())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_results() {
        let r = state::parse::<JobResult>;
        assert!(job_result_ok(Op::Stop, &r("done")));
        assert!(job_result_ok(Op::Start, &r("done")));
        assert!(job_result_ok(Op::Stop, &r("skipped")));
        assert!(!job_result_ok(Op::Start, &r("skipped")));
        for bad in [
            "canceled",
            "timeout",
            "failed",
            "dependency",
            "invalid",
            "assert",
        ] {
            assert!(!job_result_ok(Op::Stop, &r(bad)), "{bad}");
            assert!(!job_result_ok(Op::Start, &r(bad)), "{bad}");
        }
    }

    #[test]
    fn secs_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(500)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn messages_name_unit_and_next_step() {
        let e = SystemdError::NotLoaded {
            unit: "stalwart.service".into(),
            load_state: LoadState::Masked,
        };
        assert!(e.to_string().contains("systemctl unmask stalwart.service"));
        let e = SystemdError::Timeout {
            unit: "stalwart.service".into(),
            op: "stop",
            secs: 3,
        };
        assert!(e.to_string().contains("systemctl status stalwart.service"));
    }

    #[test]
    fn connect_to_nothing_is_a_bus_error() {
        let e = Systemd::connect_address("unix:path=/nonexistent/testbed/bus").err();
        assert!(matches!(e, Some(SystemdError::Bus { .. })), "{e:?}");
    }
}
