//! One booted systemd per scenario: systemd-nspawn on an overlayfs over the cached rootfs.

use crate::proc::{children_of, mounts_under, pid_alive, read_file_lossy, run_with_timeout, tail};
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Every container name (and cgroup `ct-<name>`, and state dir) starts with this, followed by the
/// pid of the process that booted it: that is how [`cleanup_stale`] tells leftovers of dead
/// processes from containers of a run still in progress.
const NAME_PREFIX: &str = "stwtb-";
const PATH_IN_CT: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Per-container state lives in `TESTBED_TMP`, else `/var/tmp/stalwart-testbed` (on disk, not
/// tmpfs: the overlay upper dir holds everything a scenario writes).
pub fn tmp_root() -> PathBuf {
    std::env::var_os("TESTBED_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/stalwart-testbed"))
}

fn env_secs(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// A host path bound into a container (read-only or not).
#[derive(Debug, Clone)]
pub(crate) struct Bind {
    pub(crate) host: PathBuf,
    pub(crate) ct: String,
    pub(crate) read_only: bool,
}

#[derive(Debug, Clone)]
struct Spec {
    binds: Vec<Bind>,
    bind_target: bool,
    boot_timeout: Duration,
    allow_degraded: bool,
}

/// Configures and boots a [`Container`]: `Container::builder().bind_ro(host, "/srv/repo").boot()`.
#[derive(Debug, Clone)]
pub struct ContainerBuilder {
    spec: Spec,
}

impl ContainerBuilder {
    /// Bind a host path read-only at `ct` inside the container.
    pub fn bind_ro(mut self, host: impl AsRef<Path>, ct: &str) -> Self {
        self.spec.binds.push(Bind {
            host: host.as_ref().to_path_buf(),
            ct: ct.to_string(),
            read_only: true,
        });
        self
    }
    /// Bind a host path read-write at `ct` inside the container.
    pub fn bind(mut self, host: impl AsRef<Path>, ct: &str) -> Self {
        self.spec.binds.push(Bind {
            host: host.as_ref().to_path_buf(),
            ct: ct.to_string(),
            read_only: false,
        });
        self
    }
    /// Don't bind the cargo target dir at /target (bound read-only by default).
    pub fn without_target(mut self) -> Self {
        self.spec.bind_target = false;
        self
    }
    /// How long to wait for `systemctl is-system-running` (default 60 s, env
    /// `TESTBED_BOOT_TIMEOUT`).
    pub fn boot_timeout(mut self, t: Duration) -> Self {
        self.spec.boot_timeout = t;
        self
    }
    /// Accept a `degraded` boot (some unit failed) instead of failing (env
    /// `TESTBED_ALLOW_DEGRADED=1` does the same for every container).
    pub fn allow_degraded(mut self) -> Self {
        self.spec.allow_degraded = true;
        self
    }
    /// Builds the rootfs if needed, mounts a fresh overlay and boots systemd in it.
    pub fn boot(self) -> Result<Container> {
        crate::preflight()?;
        let rootfs = crate::rootfs()?;
        static CLEANUP: Once = Once::new();
        CLEANUP.call_once(|| {
            if let Err(e) = cleanup_stale() {
                eprintln!("testbed: cleaning up leftovers of earlier runs: {e:#}");
            }
        });
        let name = new_name();
        let dir = tmp_root().join(&name);
        Container::start(name, dir, rootfs, self.spec)
    }
}

fn new_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{NAME_PREFIX}{}-{n}-{:04x}",
        std::process::id(),
        nanos & 0xffff
    )
}

/// A booted container. Dropping it always tears it down (clean poweroff with a timeout, then
/// SIGKILL; umount the overlay; remove its cgroups and state dir), also while a test panics.
pub struct Container {
    name: String,
    dir: PathBuf,
    rootfs: PathBuf,
    merged: PathBuf,
    bus_dir: PathBuf,
    console: PathBuf,
    spec: Spec,
    nspawn: Option<Child>,
    leader: i32,
    mounted: bool,
    boot_duration: Duration,
}

/// A container that no longer runs, with its overlay upper dir kept: returned by
/// [`Container::crash`] and [`Container::stop`]. [`Halted::boot_again`] boots a new container on the
/// same upper dir (the same "disk"); dropping it removes the state dir.
pub struct Halted {
    dir: Option<PathBuf>,
    rootfs: PathBuf,
    spec: Spec,
    stop_duration: Duration,
    console: PathBuf,
}

impl Halted {
    /// Boots a NEW container (new name, new bus) on the same overlay upper dir: what a reboot of
    /// the same machine looks like, e.g. to test boot-time recovery after [`Container::crash`].
    pub fn boot_again(mut self) -> Result<Container> {
        let dir = self
            .dir
            .take()
            .ok_or_else(|| anyhow!("this container's state dir is gone"))?;
        Container::start(new_name(), dir, self.rootfs.clone(), self.spec.clone())
    }
    /// `boot_again`, accepting a boot where a unit failed (a test that makes one fail).
    pub fn boot_again_degraded(mut self) -> Result<Container> {
        self.spec.allow_degraded = true;
        self.boot_again()
    }
    /// The overlay upper dir: everything the container wrote, on the host.
    pub fn upper(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join("upper"))
    }
    /// How long the poweroff (or the kill) took.
    pub fn stop_duration(&self) -> Duration {
        self.stop_duration
    }
    /// The console log of the boot that just ended.
    pub fn console_log(&self) -> String {
        read_file_lossy(&self.console)
    }
}

impl Drop for Halted {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            remove_state_dir(&dir);
        }
    }
}

impl Container {
    /// `Container::builder().bind_ro(..).bind(..).boot()`.
    pub fn builder() -> ContainerBuilder {
        ContainerBuilder {
            spec: Spec {
                binds: Vec::new(),
                bind_target: true,
                boot_timeout: env_secs("TESTBED_BOOT_TIMEOUT", 60),
                allow_degraded: std::env::var_os("TESTBED_ALLOW_DEGRADED")
                    .is_some_and(|v| v == "1"),
            },
        }
    }

    /// Boots a container with the default settings.
    pub fn boot() -> Result<Container> {
        Container::builder().boot()
    }

    /// Same as [`Halted::boot_again`].
    pub fn boot_again(halted: Halted) -> Result<Container> {
        halted.boot_again()
    }

    fn start(name: String, dir: PathBuf, rootfs: PathBuf, spec: Spec) -> Result<Container> {
        let merged = dir.join("merged");
        let bus_dir = dir.join(format!("bus-{name}"));
        let console = dir.join(format!("console-{name}.log"));
        for d in [
            dir.join("upper"),
            dir.join("work"),
            merged.clone(),
            bus_dir.clone(),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut c = Container {
            name,
            dir,
            rootfs,
            merged,
            bus_dir,
            console,
            spec,
            nspawn: None,
            leader: 0,
            mounted: false,
            boot_duration: Duration::ZERO,
        };
        // On any error below, Drop tears down what was set up.
        c.mount()?;
        c.launch()?;
        Ok(c)
    }

    fn mount(&mut self) -> Result<()> {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.rootfs.display(),
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &self.merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .with_context(|| {
            format!(
                "mount -t overlay overlay -o {opts} {}",
                self.merged.display()
            )
        })?;
        self.mounted = true;
        Ok(())
    }

    fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
        // cgroup v1 hybrid (name=systemd + unified) or pure v2.
        let base = Path::new("/sys/fs/cgroup");
        let mut v = Vec::new();
        for h in ["systemd", "unified"] {
            if base.join(h).join("cgroup.procs").exists() {
                v.push(base.join(h).join(format!("ct-{name}")));
            }
        }
        if v.is_empty() && base.join("cgroup.procs").exists() {
            v.push(base.join(format!("ct-{name}")));
        }
        v
    }

    fn launch(&mut self) -> Result<()> {
        let started = Instant::now();
        let cgroups = Self::cgroup_dirs(&self.name);
        let mut procs_files = Vec::new();
        for cg in &cgroups {
            std::fs::create_dir_all(cg).with_context(|| format!("mkdir {}", cg.display()))?;
            procs_files.push(
                CString::new(cg.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .context("cgroup path")?,
            );
        }
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args([
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            "--private-network",
        ]);
        cmd.arg("-D").arg(&self.merged);
        cmd.arg("-M").arg(&self.name);
        cmd.arg(format!("--hostname={}", self.name));
        cmd.arg(format!("--bind={}:/run/dbus", self.bus_dir.display()));
        if self.spec.bind_target {
            let t = crate::target_dir();
            if t.is_dir() {
                cmd.arg(format!(
                    "--bind-ro={}:{}",
                    t.display(),
                    crate::TARGET_IN_CONTAINER
                ));
            }
        }
        for b in &self.spec.binds {
            if !b.host.exists() {
                bail!(
                    "container {}: bind source {} does not exist",
                    self.name,
                    b.host.display()
                );
            }
            let flag = if b.read_only { "--bind-ro" } else { "--bind" };
            cmd.arg(format!("{flag}={}:{}", b.host.display(), b.ct));
        }
        cmd.arg("-b");
        let log = std::fs::File::create(&self.console)
            .with_context(|| format!("creating {}", self.console.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Plain console log (no colours), and no host sockets leaking in.
            .env("TERM", "dumb")
            .env("SYSTEMD_COLORS", "0")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID");
        // SAFETY: between fork and exec we only call async-signal-safe functions (open, write,
        // close, setsid) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for f in &procs_files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let r = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if r < 0 {
                        return Err(err);
                    }
                }
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting systemd-nspawn for {}", self.name))?;
        let nspawn_pid = child.id() as i32;
        self.nspawn = Some(child);

        // 1. the container's dbus-daemon is up ...
        let deadline = started + self.spec.boot_timeout;
        let socket = self.bus_dir.join("system_bus_socket");
        while !socket.exists() {
            if let Some(status) = self
                .nspawn
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "container {}: systemd-nspawn exited ({status}) before D-Bus came up; console:\n{}",
                    self.name,
                    tail(&self.console_log(), 40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "container {}: no {} after {} s; console:\n{}",
                    self.name,
                    socket.display(),
                    self.spec.boot_timeout.as_secs(),
                    tail(&self.console_log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // 2. ... only now read the leader: right after the fork nspawn has a short-lived
        // intermediate child that must not be mistaken for the container's PID 1.
        let kids = children_of(nspawn_pid);
        let leader = match kids.as_slice() {
            [(pid, _)] => *pid,
            _ => kids
                .iter()
                .find(|(_, comm)| comm == "systemd")
                .map(|(p, _)| *p)
                .ok_or_else(|| {
                    anyhow!(
                        "container {}: cannot tell the leader among nspawn's children {kids:?}",
                        self.name
                    )
                })?,
        };
        self.leader = leader;

        // 3. wait for the boot to finish.
        let left = deadline.saturating_duration_since(Instant::now());
        let out = run_with_timeout(
            &mut self.cmd(&["systemctl", "is-system-running", "--wait"]),
            left.max(Duration::from_secs(1)),
        )
        .context("nsenter systemctl is-system-running")?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.boot_duration = started.elapsed();
        match state.as_str() {
            "running" => Ok(()),
            "degraded" => {
                let failed = self.failed_units();
                if self.spec.allow_degraded {
                    eprintln!(
                        "testbed: container {} booted degraded; failed units:\n{failed}",
                        self.name
                    );
                    Ok(())
                } else {
                    bail!(
                        "container {} booted degraded; failed units:\n{failed}\nconsole:\n{}\n\
                         (allow_degraded() or TESTBED_ALLOW_DEGRADED=1 accepts this)",
                        self.name,
                        tail(&self.console_log(), 30)
                    )
                }
            }
            other => bail!(
                "container {}: systemctl is-system-running said {other:?} ({}; stderr {}); console:\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                tail(&self.console_log(), 40)
            ),
        }
    }

    fn failed_units(&self) -> String {
        let out = self.exec(&[
            "systemctl",
            "list-units",
            "--failed",
            "--plain",
            "--no-legend",
        ]);
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        for unit in s
            .clone()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            let j = self.exec(&["journalctl", "-b", "-u", unit, "--no-pager", "-n", "15"]);
            s.push_str(&format!(
                "--- journalctl -u {unit}:\n{}\n",
                String::from_utf8_lossy(&j.stdout)
            ));
        }
        s
    }

    /// The container's name (also its hostname).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// PID (on the host) of the container's systemd.
    pub fn leader(&self) -> i32 {
        self.leader
    }
    /// `unix:path=<bus dir>/system_bus_socket`: the container's system bus, from the host.
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path={}",
            self.bus_dir.join("system_bus_socket").display()
        )
    }
    /// Runs `f` on a thread of its own that has entered the container's network namespace:
    /// sockets it opens reach the container's loopback (its servers on 127.0.0.1), so test
    /// clients speak HTTP, SMTP and IMAP to them from the host, without a process inside.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = format!("/proc/{}/ns/net", self.leader);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&ns)
                    .unwrap_or_else(|e| panic!("container {}: open {ns}: {e}", self.name));
                // SAFETY: setns on a descriptor we own; it changes this thread's network
                // namespace only (the thread ends with `f`).
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                };
                assert_eq!(
                    rc,
                    0,
                    "container {}: setns({ns}): {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// From launching nspawn to `running`.
    pub fn boot_duration(&self) -> Duration {
        self.boot_duration
    }
    /// The host path of `ct_path` inside the container (in the overlay's merged dir): write files
    /// here directly. Not for paths under tmpfs mounts inside (/tmp, /run).
    pub fn path(&self, ct_path: impl AsRef<Path>) -> PathBuf {
        let p = ct_path.as_ref();
        // Under a bind mount the file is the host's bound directory's, not the overlay's.
        for b in &self.spec.binds {
            if let Ok(rest) = p.strip_prefix(&b.ct) {
                return b.host.join(rest);
            }
        }
        self.merged.join(p.strip_prefix("/").unwrap_or(p))
    }
    /// The path under /target inside the container of a file in the host's cargo target dir.
    pub fn target_path(&self, host: impl AsRef<Path>) -> Option<String> {
        let rel = host.as_ref().strip_prefix(crate::target_dir()).ok()?;
        Some(format!("{}/{}", crate::TARGET_IN_CONTAINER, rel.display()))
    }
    /// The container's journal for `unit` (this boot), for failure messages.
    pub fn journal(&self, unit: &str) -> String {
        let out = self.exec(&[
            "journalctl",
            "-b",
            "--no-pager",
            "-o",
            "short-monotonic",
            "-u",
            unit,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What systemd and the kernel printed on the console so far.
    pub fn console_log(&self) -> String {
        read_file_lossy(&self.console)
    }
    /// The host path of the console log.
    pub fn console_log_path(&self) -> &Path {
        &self.console
    }

    /// `nsenter -t LEADER -a ARGS...` with a clean environment (PATH, HOME=/root, LANG=C.UTF-8),
    /// stdin from /dev/null: add env, stdin, etc., then run it yourself.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.env_clear()
            .env("PATH", PATH_IN_CT)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .arg("-t")
            .arg(self.leader.to_string())
            .arg("-a")
            .arg("--")
            .args(args);
        c
    }

    /// Runs ARGS inside the container, outside any unit (like a root shell), and returns its
    /// output. Killed after `TESTBED_EXEC_TIMEOUT` s (default 300). Panics only if nsenter cannot
    /// be started at all.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_timeout(args, env_secs("TESTBED_EXEC_TIMEOUT", 300))
    }

    /// [`Container::exec`] with an explicit timeout (on expiry: SIGKILL, status "signal 9").
    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        run_with_timeout(&mut self.cmd(args), timeout)
            .unwrap_or_else(|e| panic!("container {}: cannot run nsenter {args:?}: {e}", self.name))
    }

    /// [`Container::exec`], failing (with stdout and stderr in the error) on a non-zero exit.
    /// Returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args);
        check(&self.name, args, out)
    }

    /// `sh -c SCRIPT` inside, outside any unit.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// `sh -c SCRIPT` inside, failing on a non-zero exit; returns stdout.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        self.exec_ok(&["sh", "-c", script])
    }

    /// Runs ARGS as a transient service (`systemd-run --quiet --pipe --wait --collect
    /// --service-type=exec`), the way a timer-started unit like apt-daily-upgrade.service runs;
    /// the exit code comes back.
    pub fn run_unit(&self, args: &[&str]) -> Output {
        self.run_unit_with(&[], args)
    }

    /// [`Container::run_unit`] with extra systemd-run options, e.g. `["-p", "Environment=A=b"]`
    /// or `["--unit=apt-test"]`.
    pub fn run_unit_with(&self, options: &[&str], args: &[&str]) -> Output {
        let mut full = vec![
            "systemd-run",
            "--quiet",
            "--pipe",
            "--wait",
            "--collect",
            "--service-type=exec",
        ];
        full.extend_from_slice(options);
        full.push("--");
        full.extend_from_slice(args);
        self.exec(&full)
    }

    /// [`Container::run_unit`], failing with the output on a non-zero exit; returns stdout.
    pub fn run_unit_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run_unit(args);
        check(&self.name, args, out)
    }

    /// Writes a file inside the container (through the overlay, from the host), creating parent
    /// directories. Not for tmpfs paths inside (/tmp, /run).
    pub fn write_file(&self, ct_path: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let p = self.path(ct_path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("mkdir {}", parent.display()))?;
        }
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))
    }

    /// Power loss: SIGKILL the container's init and nspawn, no shutdown; the overlay upper dir
    /// is kept for [`Halted::boot_again`]. (The page cache is the host's, so data written but not
    /// fsync'd survives: this tests process death, not a lost disk cache.)
    pub fn crash(mut self) -> Halted {
        let started = Instant::now();
        self.kill_all();
        self.teardown_runtime();
        self.into_halted(started.elapsed())
    }

    /// Clean poweroff (SIGTERM to nspawn), waiting up to `TESTBED_STOP_TIMEOUT` s (default 30),
    /// then SIGKILL. The upper dir is kept in the returned [`Halted`] (drop it to remove it).
    pub fn stop(mut self) -> Result<Halted> {
        let started = Instant::now();
        let clean = self.poweroff(env_secs("TESTBED_STOP_TIMEOUT", 30));
        self.teardown_runtime();
        let halted = self.into_halted(started.elapsed());
        if clean {
            Ok(halted)
        } else {
            bail!(
                "container did not power off within the timeout and was killed; console:\n{}",
                tail(&halted.console_log(), 30)
            )
        }
    }

    fn into_halted(mut self, stop_duration: Duration) -> Halted {
        let dir = std::mem::take(&mut self.dir);
        Halted {
            dir: Some(dir),
            rootfs: self.rootfs.clone(),
            spec: self.spec.clone(),
            stop_duration,
            console: self.console.clone(),
        }
        // `self` drops here with an empty `dir` and no nspawn: nothing left to do.
    }

    /// SIGTERM nspawn and wait; true if it exited in time. Kills everything otherwise.
    fn poweroff(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.nspawn.as_mut() else {
            return true;
        };
        if child.try_wait().ok().flatten().is_some() {
            self.nspawn = None;
            return true;
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                self.nspawn = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "testbed: container {} did not power off within {} s: killing it",
            self.name,
            timeout.as_secs()
        );
        self.kill_all();
        false
    }

    fn kill_all(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if self.leader > 0 {
            // SIGKILL to the init of a pid namespace kills the whole namespace.
            let _ = kill(Pid::from_raw(self.leader), Signal::SIGKILL);
        }
        if let Some(mut child) = self.nspawn.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for cg in Self::cgroup_dirs(&self.name) {
            kill_cgroup(&cg);
        }
    }

    /// Everything but the state dir: processes, the overlay mount, cgroups, nspawn's runtime dirs.
    fn teardown_runtime(&mut self) {
        if self.nspawn.is_some() {
            self.kill_all();
        }
        if self.mounted {
            if umount(&self.merged) {
                self.mounted = false;
            } else {
                eprintln!(
                    "testbed: could not unmount {} (left for cleanup_stale)",
                    self.merged.display()
                );
            }
        }
        for cg in Self::cgroup_dirs(&self.name) {
            remove_cgroup(&cg);
        }
        for d in [
            "/run/systemd/nspawn/propagate",
            "/run/systemd/nspawn/unix-export",
        ] {
            let _ = std::fs::remove_dir(Path::new(d).join(&self.name));
        }
        let _ = std::fs::remove_dir_all(&self.bus_dir);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.nspawn.is_some() {
            // A clean poweroff if it is quick; nobody checks it here (maybe a test panicked).
            self.poweroff(env_secs("TESTBED_DROP_STOP_TIMEOUT", 10));
        }
        self.teardown_runtime();
        if !self.dir.as_os_str().is_empty() && !self.mounted {
            remove_state_dir(&self.dir);
        }
    }
}

fn check(name: &str, args: &[&str], out: Output) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        bail!(
            "container {name}: {args:?} failed ({}):\n--- stdout:\n{}\n--- stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )
    }
}

fn umount(p: &Path) -> bool {
    for _ in 0..50 {
        match nix::mount::umount2(p, nix::mount::MntFlags::empty()) {
            Ok(()) => return true,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return true,
            Err(nix::errno::Errno::EBUSY) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break,
        }
    }
    nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH).is_ok()
}

/// SIGKILL every process in a cgroup subtree.
fn kill_cgroup(cg: &Path) {
    for dir in walk_dirs(cg) {
        for pid in read_file_lossy(&dir.join("cgroup.procs"))
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// rmdir a cgroup subtree, deepest first, retrying while its processes finish dying.
fn remove_cgroup(cg: &Path) {
    if !cg.exists() {
        return;
    }
    for attempt in 0..50 {
        let mut dirs = walk_dirs(cg);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        let mut ok = true;
        for d in &dirs {
            if std::fs::remove_dir(d).is_err() && d.exists() {
                ok = false;
            }
        }
        if ok {
            return;
        }
        if attempt == 10 {
            kill_cgroup(cg);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("testbed: could not remove cgroup {}", cg.display());
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
            out.push(d);
        }
    }
    out
}

fn remove_state_dir(dir: &Path) {
    // Never delete through a mounted overlay.
    if !mounts_under(dir).is_empty() {
        eprintln!(
            "testbed: {} still has mounts; left for cleanup_stale",
            dir.display()
        );
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if dir.exists() {
            eprintln!("testbed: removing {}: {e}", dir.display());
        }
    }
}

/// The pid embedded in a testbed name (`stwtb-<pid>-...`), if `s` is one.
fn owner_pid(s: &str) -> Option<i32> {
    s.strip_prefix(NAME_PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes what killed earlier runs left behind: their containers' processes (by cgroup
/// `ct-stwtb-<pid>-*`), overlay mounts under the testbed's temp root, cgroup dirs and state dirs.
/// Only leftovers of processes that no longer exist are touched, so parallel test processes are
/// safe. Called automatically once per process before the first boot.
pub fn cleanup_stale() -> Result<()> {
    let me = std::process::id() as i32;
    let stale = |s: &str| owner_pid(s).is_some_and(|p| p != me && !pid_alive(p));
    // 1. processes and cgroups, in every hierarchy.
    let base = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![base.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(base) {
        hierarchies.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let mut cgroups = Vec::new();
    for h in hierarchies {
        if let Ok(rd) = std::fs::read_dir(&h) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.strip_prefix("ct-").is_some_and(&stale) {
                    cgroups.push(e.path());
                }
            }
        }
    }
    for cg in &cgroups {
        kill_cgroup(cg);
    }
    for cg in &cgroups {
        remove_cgroup(cg);
    }
    // 2. mounts and state dirs.
    let root = tmp_root();
    for m in mounts_under(&root) {
        let owner = m
            .strip_prefix(&root)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        if owner.as_deref().is_some_and(&stale) {
            umount(&m);
        }
    }
    if let Ok(rd) = std::fs::read_dir(&root) {
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(&stale) {
                remove_state_dir(&e.path());
            }
        }
    }
    for d in [
        "/run/systemd/nspawn/propagate",
        "/run/systemd/nspawn/unix-export",
    ] {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(&stale) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_pid_parses_names() {
        assert_eq!(super::owner_pid("stwtb-123-0-abcd"), Some(123));
        assert_eq!(super::owner_pid("other-123"), None);
    }
}
