//! The command line (spec: "The helper's command line"). Each command maps to one library call;
//! this module only parses, asks for confirmation on a terminal, prints, and picks the exit code.

use crate::engine::ending::{Outcome, Report};
use crate::engine::transaction::RecoverReport;
use crate::store::state::StateDir;
use crate::{engine::history, exit, Context, Error, UpgradeRequest};
use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "stalwart-upgrade",
    version,
    about = "Upgrade a packaged Stalwart mail server as a transaction that rolls itself back",
    long_about = "Stops the server over D-Bus, snapshots its data, swaps /opt/stalwart/bin atomically, starts it, checks its health and refreshes the web admin; any failure rolls everything back. A crash-safe journal lets `recover` finish or undo a run that was killed.\n\nExit codes: 0 ok; 1 error; 2 usage; 3 refused by policy or an earlier failure (nothing changed); 4 a check before downtime failed (nothing changed); 5 upgrade failed and was rolled back (old version healthy); 6 neither version healthy (act now); 7 another run holds the lock; 8 status: attention needed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Write the man page into DIR (packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    pub generate_man: Option<PathBuf>,
    /// Write bash, zsh and fish completions into DIR (packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    pub generate_completions: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Running version, unit state, last transaction, holds and snapshots; exits 8 when the last
    /// upgrade failed or a transaction is unfinished (usable as a monitoring check)
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Dry run: what an upgrade to that binary would do; changes nothing
    Plan {
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
        /// SHA256SUMS file that must list the binary
        #[arg(long, value_name = "FILE")]
        sha256sums: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Upgrade to the server binary at PATH (its version read with `PATH --version`)
    Upgrade {
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
        #[arg(long, value_name = "FILE")]
        sha256sums: Option<PathBuf>,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        /// Try again a version whose upgrade failed before
        #[arg(long)]
        retry: bool,
        /// This server is a cluster node and every other node is stopped (upstream requires it)
        #[arg(long)]
        cluster_stopped: bool,
    },
    /// Back to the previous (or a kept) release, with the data snapshot when the schema may have moved
    Rollback {
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Only the binary (safe for patch releases only)
        #[arg(long)]
        binary_only: bool,
        /// This server is a cluster node and every other node is stopped (upstream requires it)
        #[arg(long)]
        cluster_stopped: bool,
        #[arg(long, short)]
        yes: bool,
    },
    /// Finish or undo an interrupted transaction; idempotent, safe at every boot
    Recover {
        /// Boot-time mode (ordered before the server's unit): never start or stop units
        #[arg(long)]
        boot: bool,
        /// Run again in 5 minutes when it cannot finish (what a failed boot recovery schedules)
        #[arg(long, hide = true)]
        retry_later: bool,
    },
    /// The probation watcher after a commit (run by the helper as a transient unit)
    #[command(hide = true)]
    Probation,
    /// May the server start now? The packaged unit's ExecCondition: exits 1 (systemd then skips
    /// the start) while an interrupted transaction nobody works on is open
    #[command(hide = true)]
    StartCheck,
    /// The data snapshots on their own
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCmd,
    },
    /// Hold the package at the running release line (apt preferences, dnf versionlock)
    Hold {
        /// A line like 0.15 (default: the running version's)
        line: Option<String>,
    },
    /// Remove the hold files
    Unhold,
    /// Approve upgrades to a minor/major line (e.g. `allow 0.16`); moves the hold
    Allow { version: String },
    /// Show the policy: unattended classes, approvals, holds
    Policy {
        #[arg(long)]
        json: bool,
    },
    /// The web admin
    Webadmin {
        #[command(subcommand)]
        action: WebadminCmd,
    },
    /// Past transactions with timings and outcomes
    History {
        #[arg(long)]
        json: bool,
    },
    /// Maintainer-script entry points (the scripts in debian/ and rpm/ are one-liners)
    Hook {
        #[command(subcommand)]
        kind: HookCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Take a snapshot now (stops the server for the copy when --stop is given)
    Create {
        #[arg(long)]
        stop: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-hash a snapshot against its manifest (hashing first what was never hashed, e.g. a
    /// snapshot committed at boot)
    Verify { id: String },
    /// Put a snapshot's data back (the server must be stopped, or give --stop)
    Restore {
        id: String,
        #[arg(long)]
        stop: bool,
        #[arg(long, short)]
        yes: bool,
    },
    /// Delete a snapshot (e.g. data a rollback set aside, once it is not needed)
    Remove {
        id: String,
        #[arg(long, short)]
        yes: bool,
    },
    /// Apply the retention policy
    Prune {
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebadminCmd {
    /// Refresh the web admin (0.15: REST; 0.16: JMAP)
    Refresh,
}

#[derive(Debug, Subcommand)]
pub enum HookCmd {
    /// dpkg: `hook deb preinst|postinst|prerm|postrm ARGS...`
    Deb {
        script: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// rpm: `hook rpm pre|post|preun|postun|posttrans ARG`
    Rpm {
        scriptlet: String,
        #[arg(default_value = "")]
        arg: String,
    },
}

pub fn command() -> clap::Command {
    Cli::command()
}

/// Entry point used by main: returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Some(dir) = &cli.generate_man {
        return report_err(generate_man(dir));
    }
    if let Some(dir) = &cli.generate_completions {
        return report_err(generate_completions(dir));
    }
    let Some(cmd) = cli.command else {
        let _ = command().print_help();
        return exit::USAGE;
    };
    // apt runs maintainer scripts on a pty: colours would end up in apt's output and term.log.
    let plain = matches!(cmd, Command::Hook { .. }) || std::env::var_os("NO_COLOR").is_some();
    init_logging(!plain && std::io::stderr().is_terminal());
    // Bars only for an admin at a terminal: never in hooks (apt's terminal, dpkg's log).
    if !matches!(cmd, Command::Hook { .. }) && std::io::stderr().is_terminal() {
        crate::os::progress::enable();
    }
    match run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "stalwart-upgrade: error: {}",
                crate::os::child::printable(&e.to_string())
            );
            e.exit_code()
        }
    }
}

fn report_err(r: std::io::Result<()>) -> i32 {
    match r {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("stalwart-upgrade: {e}");
            exit::ERROR
        }
    }
}

fn generate_man(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut buf = Vec::new();
    clap_mangen::Man::new(command())
        .section("8")
        .render(&mut buf)?;
    std::fs::write(dir.join("stalwart-upgrade.8"), buf)
}

fn generate_completions(dir: &std::path::Path) -> std::io::Result<()> {
    use clap_complete::{generate_to, Shell};
    std::fs::create_dir_all(dir)?;
    for sh in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        generate_to(sh, &mut command(), "stalwart-upgrade", dir)?;
    }
    Ok(())
}

/// Plain lines on stderr, and structured records (unit, from, to, step, outcome) to the journal
/// when journald is there.
fn init_logging(ansi: bool) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("STALWART_UPGRADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(ansi)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() != crate::engine::announce::TARGET
        }));
    let journald = std::path::Path::new("/run/systemd/journal/socket")
        .exists()
        .then(|| {
            tracing_journald::layer().ok().map(|l| {
                l.with_syslog_identifier("stalwart-upgrade".into())
                    .with_field_prefix(None)
            })
        })
        .flatten();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(journald)
        .try_init();
}

/// The transient unit (and timer) that retries a recovery a boot could not finish.
const RECOVER_RETRY_UNIT: &str = "stalwart-upgrade-recover-retry";

fn context(unattended: bool) -> Result<Context, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let settings = crate::config::Settings::load()?;
    let mut ctx = Context::new(settings);
    ctx.unattended = unattended || !std::io::stdin().is_terminal();
    // The environment is read here, once, and passed down.
    ctx.allow = match std::env::var(crate::policy::ENV_ALLOW) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Error::Usage(format!(
                "{} is not UTF-8",
                crate::policy::ENV_ALLOW
            )))
        }
    };
    Ok(ctx)
}

/// Is this hook part of removing the package (prerm/postrm remove or purge, rpm %preun/%postun
/// of the last instance)?
fn hook_removes(kind: &HookCmd) -> bool {
    use crate::hooks::Action;
    let action = match kind {
        HookCmd::Deb { script, args } => crate::hooks::deb_action(script, args),
        HookCmd::Rpm { scriptlet, arg } => crate::hooks::rpm_action(scriptlet, arg, None),
    };
    matches!(
        action,
        Action::Stop | Action::Removed { .. } | Action::Purge
    )
}

/// Asks on a terminal only; never under dpkg or with --yes.
fn confirm(question: &str, yes: bool) -> bool {
    if yes || !std::io::stdin().is_terminal() {
        return true;
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes")
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Usage(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn print_report(r: &Report) -> i32 {
    match &r.outcome {
        Outcome::Committed | Outcome::NothingToDo => {
            println!("{}", crate::os::child::printable(&r.message))
        }
        Outcome::RolledBack { .. } | Outcome::Failed { .. } => {
            eprintln!(
                "\n*** stalwart-upgrade: {}\n",
                crate::os::child::printable(&r.message).replace('\n', "\n*** ")
            );
        }
    }
    for w in &r.warnings {
        eprintln!(
            "stalwart-upgrade: warning: {}",
            crate::os::child::printable(&w.to_string())
        );
    }
    r.exit_code()
}

fn run(cmd: Command) -> Result<i32, Error> {
    match cmd {
        Command::Status { json } => crate::flows::status::run(&context(false)?, json),
        Command::History { json } => {
            let ctx = context(false)?;
            let state = StateDir::open(&ctx.settings.state_dir)?;
            let history::Listing {
                entries: list,
                warnings,
                ..
            } = history::listing(&state)?;
            for w in &warnings {
                eprintln!(
                    "stalwart-upgrade: warning: {}",
                    crate::os::child::printable(w)
                );
            }
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no transactions yet");
            } else {
                for e in &list {
                    println!("{e}");
                }
            }
            if !json {
                // What past rollbacks and undos set aside stays until removed by name: said
                // where the admin looks for what happened to their mail.
                let aside = crate::store::snapshot::Snapshots::new(&ctx.settings.snapshot_dir())
                    .set_aside()
                    .unwrap_or_default();
                let running = crate::server::version::of_binary(&ctx.settings.server_binary()).ok();
                for a in &aside {
                    println!("set aside: {}", a.describe(running.as_ref()));
                }
            }
            Ok(exit::OK)
        }
        Command::Plan {
            to,
            sha256sums,
            json,
        } => {
            let ctx = context(false)?;
            let req = UpgradeRequest {
                target: to,
                sha256sums,
                retry: true,
                cluster_stopped: false,
            };
            let state = StateDir::open(&ctx.settings.state_dir)?;
            let m = crate::engine::resources::Resources::new(&ctx, &state);
            let plan = crate::flows::upgrade::plan(&m, &req)?;
            if json {
                print_json(&plan)?;
            } else {
                print!("{plan}");
            }
            Ok(exit::OK)
        }
        Command::Upgrade {
            to,
            sha256sums,
            yes,
            retry,
            cluster_stopped,
        } => {
            let ctx = context(false)?;
            let req = UpgradeRequest {
                target: to,
                sha256sums,
                retry,
                cluster_stopped,
            };
            if !yes && std::io::stdin().is_terminal() {
                let plan = crate::flows::upgrade::preflight(&ctx, &req)?;
                print!("{plan}");
                if !confirm("Proceed with the upgrade?", yes) {
                    return Ok(exit::OK);
                }
            }
            let r = crate::flows::upgrade::run(&ctx, &req)?;
            Ok(print_report(&r))
        }
        Command::Rollback {
            to,
            binary_only,
            cluster_stopped,
            yes,
        } => {
            let ctx = context(false)?;
            let req = crate::flows::rollback::RollbackRequest {
                to,
                binary_only,
                cluster_stopped,
                start: false,
            };
            print!("{}", crate::flows::rollback::preview(&ctx, &req)?);
            if !confirm("Roll back the server?", yes) {
                return Ok(exit::OK);
            }
            let r = crate::flows::rollback::run(&ctx, &req)?;
            Ok(print_report(&r))
        }
        Command::StartCheck => {
            // No root check, no lock wait: systemd runs it before every start of the unit. A
            // helper config that does not parse must not keep the mail server down: the
            // default state directory is checked then.
            let settings = crate::config::Settings::load().unwrap_or_else(|e| {
                eprintln!("stalwart-upgrade: {e}; checking the default state directory");
                crate::config::Settings::default()
            });
            match crate::engine::transaction::start_check(&settings) {
                Ok(()) => Ok(exit::OK),
                Err(why) => {
                    eprintln!("stalwart-upgrade: {}", crate::os::child::printable(&why));
                    Ok(1)
                }
            }
        }
        Command::Probation => {
            let ctx = context(true)?;
            crate::flows::watcher::watch(&ctx)?;
            Ok(exit::OK)
        }
        Command::Recover { boot, retry_later } => {
            let mut ctx = context(true)?;
            ctx.boot = boot;
            let r = crate::flows::probation::recover(&ctx);
            // A recovery at boot that cannot finish leaves the server stopped (its unit's
            // start-check) and tries again every 5 minutes, so a cause that goes away (a disk
            // mounted late, a database server back) ends the outage without an admin.
            let unfinished = !matches!(
                &r,
                Ok(RecoverReport::Nothing
                    | RecoverReport::Finished { .. }
                    | RecoverReport::RolledBack { .. })
            );
            if unfinished && (boot || retry_later) {
                let retry = match crate::os::systemd::run_helper_transient(
                    RECOVER_RETRY_UNIT,
                    "Stalwart upgrade: retry an unfinished recovery",
                    Some(std::time::Duration::from_secs(300)),
                    &["recover", "--retry-later"],
                    &[],
                ) {
                    Ok(()) => {
                        eprintln!("stalwart-upgrade: `recover` runs again in 5 minutes ({RECOVER_RETRY_UNIT}); the server stays stopped until it finishes");
                        true
                    }
                    Err(e) => {
                        eprintln!("stalwart-upgrade: could not schedule a retry of `recover` ({e}); run it yourself");
                        false
                    }
                };
                let why = match &r {
                    Ok(RecoverReport::Failed { report }) => report.message.clone(),
                    Ok(_) => String::new(),
                    Err(e) => e.to_string(),
                };
                crate::engine::announce::recovery_unfinished(&ctx.settings.unit, &why, retry);
            }
            let r = r?;
            match &r {
                RecoverReport::Nothing => println!("no unfinished transaction"),
                RecoverReport::Finished { report }
                | RecoverReport::RolledBack { report }
                | RecoverReport::Failed { report } => {
                    print_report(report);
                }
            }
            Ok(r.exit_code())
        }
        Command::Webadmin {
            action: WebadminCmd::Refresh,
        } => {
            let ctx = context(false)?;
            let running = crate::server::version::of_binary(&ctx.settings.server_binary())?;
            let path = crate::server::lines::server_config_path(&ctx.settings, &running);
            let sys = crate::os::systemd::Systemd::connect()?;
            let cfg = crate::server::serverconfig::ServerConfig::load_with_env(
                &path,
                &crate::server::serverenv::ServerEnv::of(&sys, &ctx.settings.unit)?,
            )?;
            let base = crate::server::webadmin::refresh_unit(&ctx.settings, &sys, &cfg)?;
            println!("web admin refreshed at {base}");
            Ok(exit::OK)
        }
        Command::Hook { kind } => {
            let ctx = match context(true) {
                Ok(ctx) => ctx,
                // A broken helper config must not make the package impossible to remove: the
                // removal steps fall back to the defaults (and say so); everything else stops.
                Err(Error::Config(e)) if hook_removes(&kind) => {
                    eprintln!(
                        "stalwart-upgrade: warning: {e}
stalwart-upgrade: removing with the default settings instead"
                    );
                    let mut ctx = Context::new(crate::config::Settings::default());
                    ctx.unattended = true;
                    ctx
                }
                Err(e) => return Err(e),
            };
            Ok(match kind {
                HookCmd::Deb { script, args } => crate::hooks::deb(&ctx, &script, &args),
                HookCmd::Rpm { scriptlet, arg } => crate::hooks::rpm(&ctx, &scriptlet, &arg),
            })
        }
        Command::Snapshot { action } => snapshot_cmd(&context(false)?, action),
        Command::Hold { line } => {
            let ctx = context(false)?;
            let line = match line {
                Some(l) => l,
                None => crate::server::version::of_binary(&ctx.settings.server_binary())?.line(),
            };
            println!("{}", crate::policy::hold(&ctx.settings, Some(&line))?);
            Ok(exit::OK)
        }
        Command::Unhold => {
            let ctx = context(false)?;
            println!("{}", crate::policy::unhold(&ctx.settings)?);
            Ok(exit::OK)
        }
        Command::Allow { version } => {
            let ctx = context(false)?;
            println!("{}", crate::policy::allow(&ctx.settings, &version)?);
            Ok(exit::OK)
        }
        Command::Policy { json } => {
            let ctx = context(false)?;
            let st = crate::policy::state(&ctx.settings, ctx.allow.as_deref())?;
            if json {
                print_json(&st)?;
            } else {
                println!("{st}");
            }
            Ok(exit::OK)
        }
    }
}

/// The server config at `path`, its macros expanded from the unit's environment.
fn server_config(
    s: &crate::config::Settings,
    path: &std::path::Path,
) -> Result<crate::server::serverconfig::ServerConfig, Error> {
    Ok(crate::server::serverconfig::ServerConfig::load_with_env(
        path,
        &crate::server::serverenv::ServerEnv::of_unit(&s.unit),
    )?)
}

/// Stops the unit for the duration of `f` when it runs and `stop` allows it; refuses otherwise:
/// a RocksDB or SQLite copy of a running server is not consistent.
fn with_server_stopped<T>(
    ctx: &Context,
    stop: bool,
    what: &str,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    let s = &ctx.settings;
    let sys = crate::os::systemd::Systemd::connect()?;
    let active = sys.state(&s.unit)?.active_state == crate::os::systemd::ActiveState::Active;
    if active && !stop {
        return Err(Error::Refused(format!(
            "{} is running; {what} needs it stopped for a consistent copy. Add --stop: it is stopped for the copy and started again",
            s.unit
        )));
    }
    let listeners = if active {
        let running = crate::server::version::of_binary(&s.server_binary())?;
        let declared = server_config(s, &crate::server::lines::server_config_path(s, &running))
            .map(|c| c.listeners)
            .unwrap_or_default();
        crate::server::listener::probe_all(&sys.unit_pids(&s.unit), &declared)
    } else {
        Vec::new()
    };
    if active {
        sys.stop(&s.unit, s.stop_timeout())?;
    }
    let r = f();
    if active {
        sys.start(&s.unit, s.start_timeout())?;
        let running = crate::server::version::of_binary(&s.server_binary())?;
        let path = crate::server::lines::server_config_path(s, &running);
        let cfg = server_config(s, &path).ok();
        let expect = crate::server::health::Expect::normal(s, cfg.as_ref(), &running, listeners);
        crate::server::health::gate(&sys, s, cfg.as_ref(), &expect)?;
    }
    r
}

fn snapshot_cmd(ctx: &Context, action: SnapshotCmd) -> Result<i32, Error> {
    let s = &ctx.settings;
    let state = StateDir::open(&s.state_dir)?;
    let snaps = crate::store::snapshot::Snapshots::for_settings(s);
    // Removing, verifying and restoring a snapshot of a SQL store reach its database with the
    // connection of the snapshot's config copy, whose macros need the unit's environment.
    let with_env = || {
        crate::store::snapshot::Snapshots::for_settings(s)
            .with_server_env(crate::server::serverenv::ServerEnv::of_unit(&s.unit))
    };
    match action {
        SnapshotCmd::List { json } => {
            let list = snaps.list()?;
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no snapshots in {}", s.snapshot_dir().display());
            }
            if !json {
                for m in &list {
                    let methods: Vec<String> = m
                        .stores
                        .iter()
                        .map(|st| format!("{}:{}", st.id, st.method.describe()))
                        .collect();
                    println!(
                        "{}  server {}  {} MiB  {}  {}{}",
                        m.id,
                        m.server_version,
                        m.bytes() >> 20,
                        if m.hashed() { "hashed" } else { "not hashed" },
                        methods.join(", "),
                        match &m.origin {
                            Some(o) => format!("  SET ASIDE (never pruned): {o}"),
                            None => String::new(),
                        }
                    );
                }
            }
            Ok(exit::OK)
        }
        SnapshotCmd::Remove { id, yes } => {
            let _lock = state.lock(std::time::Duration::from_secs(s.timeouts.lock_wait_secs))?;
            let m = snaps.get(&id)?;
            let question = match &m.origin {
                Some(o) => format!(
                    "Delete snapshot {id} ({} MiB, {o})? It is set-aside data: no other snapshot holds it",
                    m.bytes() >> 20
                ),
                None => format!(
                    "Delete snapshot {id} ({} MiB, taken before an upgrade)?",
                    m.bytes() >> 20
                ),
            };
            if !confirm(&question, yes) {
                return Ok(exit::USAGE);
            }
            with_env().remove(&id)?;
            println!("removed snapshot {id}");
            Ok(exit::OK)
        }
        SnapshotCmd::Verify { id } => {
            let _lock = state.lock(std::time::Duration::from_secs(s.timeouts.lock_wait_secs))?;
            let snaps = with_env();
            // A boot-time commit leaves its snapshot unhashed (the server's start does not wait
            // for it): the copies nobody else can reach are hashed now, then all are checked.
            snaps.hash(&id)?;
            let r = snaps.verify(&id)?;
            print_json(&r)?;
            Ok(if r.ok() { exit::OK } else { exit::ERROR })
        }
        SnapshotCmd::Prune { dry_run } => {
            let _lock = state.lock(std::time::Duration::from_secs(s.timeouts.lock_wait_secs))?;
            // Never the snapshot a rollback of the running release would restore.
            let running = crate::server::version::of_binary(&s.server_binary())?;
            let protect = history::protected_snapshots(&state, &running, None)?;
            let pruned = with_env().prune(s.snapshots.keep, &protect, dry_run)?;
            for m in &pruned.gone {
                println!(
                    "{} {} ({} MiB)",
                    if dry_run { "would remove" } else { "removed" },
                    m.id,
                    m.bytes() >> 20
                );
            }
            for (id, why) in &pruned.failed {
                eprintln!(
                    "could not remove snapshot {id}: {}",
                    crate::os::child::printable(why)
                );
            }
            if pruned.gone.is_empty() && pruned.failed.is_empty() {
                println!("nothing to prune (keep = {})", s.snapshots.keep);
            }
            Ok(if pruned.failed.is_empty() {
                exit::OK
            } else {
                exit::ERROR
            })
        }
        SnapshotCmd::Create { stop } => {
            let _lock = state.lock(std::time::Duration::from_secs(s.timeouts.lock_wait_secs))?;
            let cfg = server_config(s, &crate::server::lines::installed_config(s))?;
            crate::store::snapshot::check_store_paths(s, &cfg)
                .map_err(|e| Error::Preflight(e.to_string()))?;
            let plan = snaps.plan(&cfg)?;
            if !plan.fits() {
                return Err(Error::Preflight(snaps.space_advice(&plan, &[])));
            }
            let meta = crate::store::snapshot::SnapshotMeta {
                server_version: crate::server::version::of_binary(&s.server_binary())?,
                target_version: None,
                class: None,
                server_binary: s.server_binary(),
            };
            let m =
                with_server_stopped(ctx, stop, "a snapshot", || Ok(snaps.create(&cfg, &meta)?))?;
            snaps.hash(&m.id)?;
            println!("snapshot {} created ({} MiB)", m.id, m.bytes() >> 20);
            Ok(exit::OK)
        }
        SnapshotCmd::Restore { id, stop, yes } => {
            // What is restored, and from what, is shown before the question.
            let m = snaps.get(&id)?;
            println!(
                "restore:       snapshot {id} (taken {}, while {} ran) replaces the live data of {}; the live data is first kept in a new snapshot, not deleted",
                m.created_at, m.server_version, s.unit
            );
            if !confirm(&format!("Replace the live data with snapshot {id}?"), yes) {
                return Ok(exit::OK);
            }
            let r = crate::flows::restore::run(
                ctx,
                &crate::flows::restore::RestoreRequest { id, stop },
            )?;
            Ok(print_report(&r))
        }
    }
}
