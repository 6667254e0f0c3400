//! An upgrade, as one short list of steps (`steps`), plus the plan/preflight that decides whether it
//! may run at all — everything that can refuse happens here, before the server is stopped.

use crate::engine::ending::{Outcome, Report};
use crate::engine::journal::{Begin, Step, TxKind};
use crate::engine::resources::Resources;
use crate::engine::transaction::{self, Transaction};
use crate::flows::plan::{Change, Current};
use crate::os::systemd::ActiveState;
use crate::policy::{self, Admission, Verdict};
use crate::server::serverconfig::ServerConfig;
use crate::server::version::{classify, Class, Version};
use crate::store::snapshot::PreHash;
use crate::store::state::StateDir;
use crate::{
    flows::crossing, flows::steps, server::health, store::swap, Context, Error, UpgradeRequest,
};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What an upgrade would do; `plan` prints it, `run` executes it.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    #[serde(flatten)]
    pub current: Current,
    pub to: Version,
    pub class: Class,
    pub verdict: Verdict,
    pub target: PathBuf,
    pub target_sha256: String,
    /// 0.15 -> 0.16: what the crossing writes and carries.
    pub crossing: Option<Crossing>,
    /// The web UI bundle the package carries beside the target (`server::webui`).
    pub webui: Option<PathBuf>,
    pub health_url: String,
    /// Everything that stops this upgrade before any downtime, the policy first (`gate`).
    pub blockers: Vec<Blocker>,
}

/// What a crossing of the 0.16 line carries: 0.15's directory and settings as read before the
/// stop, as 0.16 objects (module `carry`), and config.json (config.toml's data store).
#[derive(Debug, Clone, Serialize)]
pub struct Crossing {
    /// Where config.json goes.
    pub config_json: PathBuf,
    pub json: String,
    /// 0.15's listing as read (password hashes and keys: kept in the state dir, not printed).
    #[serde(skip)]
    pub dump: crate::flows::carry::Dump,
    pub carried: crate::flows::carry::Carried,
}

/// One reason an upgrade cannot run yet, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "blocker", content = "message", rename_all = "snake_case")]
pub enum Blocker {
    /// The policy's verdict (the plan's `policy:` line shows it already): refused, exit 3.
    Policy(String),
    /// Something the helper will not do: exit 3.
    Refused(String),
    /// A check before any downtime failed: exit 4.
    Preflight(String),
}

impl Blocker {
    pub fn message(&self) -> &str {
        match self {
            Blocker::Policy(m) | Blocker::Refused(m) | Blocker::Preflight(m) => m,
        }
    }

    /// The exit code it has alone.
    pub fn exit_code(&self) -> i32 {
        match self {
            Blocker::Policy(_) | Blocker::Refused(_) => crate::exit::REFUSED,
            Blocker::Preflight(_) => crate::exit::PREFLIGHT,
        }
    }
}

impl From<Error> for Blocker {
    fn from(e: Error) -> Blocker {
        let e = e.before_downtime();
        if e.exit_code() == crate::exit::REFUSED {
            Blocker::Refused(e.to_string())
        } else {
            Blocker::Preflight(e.to_string())
        }
    }
}

/// The refusal for `blockers` (none: Ok). One is refused as it is; several are listed in one
/// message, in the order found (the policy first), each with its command, so the admin fixes
/// them in one go instead of learning them one run at a time. The exit code is the first's.
pub(crate) fn refusal(blockers: &[Blocker]) -> Result<(), Error> {
    let Some(first) = blockers.first() else {
        return Ok(());
    };
    let message = if blockers.len() == 1 {
        first.message().to_string()
    } else {
        let list: Vec<String> = blockers
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  {}. {}", i + 1, b.message()))
            .collect();
        format!(
            "{} things stop this upgrade before any downtime (nothing was stopped or changed); fix each, then run it again:\n{}",
            blockers.len(),
            list.join("\n")
        )
    };
    Err(if first.exit_code() == crate::exit::REFUSED {
        Error::Refused(message)
    } else {
        Error::Preflight(message)
    })
}

impl Plan {
    /// The journal's first record of the upgrade. Its undo restores the data snapshot in every
    /// class once the new version ran: upstream patch releases have migrated data before
    /// (#2584), a 0.16 writes into its store before its schema check, and a release can change
    /// the store and then fail (measured: a 1.x build on a 0.16 store adds column families,
    /// exits 101, and 0.16 no longer opens it). Only the snapshot gives the old version data
    /// it can read; what the new one wrote is set aside, never deleted.
    pub(crate) fn begin(&self, ctx: &Context) -> Begin {
        self.current.begin(
            ctx,
            Change {
                kind: TxKind::Upgrade,
                to: &self.to,
                class: self.class,
                new_sha256: &self.target_sha256,
                restore_data: true,
                restore_from: None,
            },
        )
    }

    /// What the health gate after the start expects: the new version in normal mode, with every
    /// listener of the old one again (across the 0.16 line too: the carry step recreates them).
    pub fn expect(&self, settings: &crate::config::Settings) -> health::Expect {
        let c = &self.current;
        c.expect(settings, &c.server_config, &self.to, c.listeners.clone())
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "unit:          {} ({})",
            self.current.unit,
            if self.current.unit_active {
                "active"
            } else {
                "not active"
            }
        )?;
        writeln!(
            f,
            "upgrade:       {} -> {} ({} release)",
            self.current.from, self.to, self.class
        )?;
        writeln!(
            f,
            "binary:        {} (sha256 {})",
            self.target.display(),
            self.target_sha256
        )?;
        writeln!(
            f,
            "server config: {} ({:?} generation)",
            self.current.server_config.path.display(),
            self.current.server_config.format
        )?;
        for st in &self.current.server_config.stores {
            writeln!(
                f,
                "store:         {} {:?} roles {}",
                st.id,
                kind_name(&st.kind),
                st.roles.join(",")
            )?;
        }
        for st in &self.current.snapshot.stores {
            writeln!(
                f,
                "snapshot:      {} by {} ({})",
                st.id,
                st.method.describe(),
                st.note
            )?;
        }
        writeln!(
            f,
            "space:         {} MiB needed, {} MiB free in {}",
            self.current.snapshot.bytes_needed >> 20,
            self.current.snapshot.bytes_free >> 20,
            self.current.snapshot.root.display()
        )?;
        if let Some(w) = self.current.snapshot.pinned_warning() {
            writeln!(f, "WARNING:       {w}")?;
        }
        if let Some(c) = &self.crossing {
            writeln!(
                f,
                "0.16 line:     writes {} from the data store, points the unit at it (drop-in), and starts {} once in recovery mode: upstream's migration of schema 5 -> 6 wipes settings, directory, reports, tasks and quotas (e-mail is kept), then the accounts, domains, lists, DKIM keys, certificates and listeners read from 0.15 are created again (below); config.toml is left as it is for a rollback",
                c.config_json.display(),
                self.to
            )?;
            for line in crate::flows::carry::describe(&c.carried) {
                writeln!(f, "{line}")?;
            }
        }
        if let Some(node) = &self.current.server_config.cluster {
            writeln!(
                f,
                "cluster:       a cluster node ({node}): every other node must be stopped first (upstream); needs --cluster-stopped"
            )?;
        }
        if let Some(w) = &self.current.unit_warning {
            writeln!(f, "warning:       {w}")?;
        }
        if crate::server::lines::is_json(&self.to) {
            match &self.webui {
                Some(b) => writeln!(
                    f,
                    "web UI:        the package's bundle {} (for {}), its automatic update off",
                    b.display(),
                    self.to
                )?,
                None => writeln!(
                    f,
                    "web UI:        none in the package: {} fetches upstream's latest web UI release, which may be made for another server version",
                    self.to
                )?,
            }
        }
        writeln!(f, "health:        {}/healthz/ready", self.health_url)?;
        if !self.current.listeners.is_empty() {
            let l: Vec<String> = self
                .current
                .listeners
                .iter()
                .map(|p| p.to_string())
                .collect();
            writeln!(
                f,
                "listeners:     {} (each must answer again)",
                l.join(", ")
            )?;
        }
        writeln!(
            f,
            "on failure:    roll back to {}{}",
            self.current.from,
            if self.class.schema_may_move() {
                " and restore the data snapshot (the schema may move)"
            } else {
                " and, once the new version ran, restore the data snapshot (patch releases have migrated data before); what it wrote is set aside"
            }
        )?;
        match &self.verdict {
            Verdict::Allowed => writeln!(f, "policy:        allowed"),
            Verdict::NeedsApproval { message, .. } => {
                writeln!(f, "policy:        NEEDS APPROVAL: {message}")
            }
            Verdict::Refused { message } => writeln!(f, "policy:        REFUSED: {message}"),
        }?;
        // The policy's own line says it; the rest are listed here.
        for b in &self.blockers {
            if !matches!(b, Blocker::Policy(_)) {
                writeln!(f, "blocked:       {}", b.message())?;
            }
        }
        Ok(())
    }
}

fn kind_name(k: &crate::server::serverconfig::StoreKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str().map(String::from)))
        .unwrap_or_else(|| "?".into())
}

/// Plan without changing anything (takes the lock so it sees a settled state).
pub fn preflight(ctx: &Context, req: &UpgradeRequest) -> Result<Plan, Error> {
    let state = StateDir::open(&ctx.settings.state_dir)?;
    let _lock = state.lock(Duration::from_secs(ctx.settings.timeouts.lock_wait_secs))?;
    let m = Resources::new(ctx, &state);
    crate::flows::probation::recovered(&m, transaction::recover_locked(&m)?);
    let plan = plan(&m, req).map_err(Error::before_downtime)?;
    gate(&plan).map_err(Error::before_downtime)?;
    Ok(plan)
}

/// The whole upgrade: lock, recover, plan, then the transaction.
pub fn run(ctx: &Context, req: &UpgradeRequest) -> Result<Report, Error> {
    crate::flows::after_recovery(ctx, |m| run_recovered(m, req))
}

fn run_recovered(m: &Resources, req: &UpgradeRequest) -> Result<Report, Error> {
    let ctx = m.ctx;
    let plan = plan(m, req).map_err(Error::before_downtime)?;
    gate(&plan).map_err(Error::before_downtime)?;
    if plan.class == Class::Same {
        return Ok(nothing_to_do(&plan));
    }
    if let Some(w) = &plan.current.unit_warning {
        tracing::warn!(unit = %plan.current.unit, "{w}");
    }
    // Before the stop: the files the snapshot will link are hashed while the server runs.
    let known = m
        .snapshots()
        .prehash(&plan.current.server_config, &plan.current.snapshot);
    crate::engine::journal::test_point("prehash:done");
    let declared = match plan.crossing {
        Some(_) => CROSSING_STEPS,
        None => STEPS,
    };
    let mut tx =
        Transaction::begin(m, plan.begin(ctx), declared).map_err(Error::before_downtime)?;
    match steps(&mut tx, &plan, &known) {
        Ok(()) => tx
            .commit()
            .map(|r| crate::flows::probation::after_commit(m, r)),
        Err(e) => tx.abort(&e),
    }
}

/// The upgrade's steps (then the commit's, `engine::commit::STEPS`). A server the admin had
/// stopped ends after the swap.
pub const STEPS: &[Step] = &[
    Step::Stage,
    Step::Stop,
    Step::Snapshot,
    Step::Swap,
    Step::Start,
    Step::Health,
];

/// The steps of an upgrade that crosses the 0.16 line: the crossing's files, the recovery-mode
/// start that migrates the schema, the carry of 0.15's directory, between swap and start.
pub const CROSSING_STEPS: &[Step] = &[
    Step::Stage,
    Step::Stop,
    Step::Snapshot,
    Step::Swap,
    Step::Crossing,
    Step::Migrate,
    Step::Carry,
    Step::Start,
    Step::Health,
];

/// The upgrade, step by step (spec: "Upgrade transaction" 2-6). Each step is journaled; a failure
/// makes `run` undo what the journal says was started.
fn steps(tx: &mut Transaction, plan: &Plan, known: &PreHash) -> Result<(), Error> {
    tx.step(Step::Stage, |m, b| steps::stage(m, b, &plan.target))?;
    let crossing = last_dump(tx.machine(), plan)?;
    crate::engine::journal::test_point("last-dump:done");
    tx.step(Step::Stop, steps::stop)?;
    tx.step(Step::Snapshot, |m, b| {
        steps::snapshot(m, b, &plan.current.server_config, known)
    })?;
    tx.step(Step::Swap, steps::exchange)?;
    if let Some(Crossing {
        dump,
        carried,
        json,
        ..
    }) = &crossing
    {
        let admin = crate::flows::carry::one_time_admin()?;
        tx.step(Step::Crossing, |m, b| {
            steps::cross(m, b, &plan.current.server_config, dump, carried, json)
        })?;
        tx.step(Step::Migrate, |m, b| {
            steps::migrate(m, b, &plan.current.server_config, &admin)
        })?;
        tx.step(Step::Carry, |m, b| steps::carry(m, b, carried, &admin))?;
    }
    // A server the admin had stopped stays stopped (issue #24): the binary is swapped and the
    // data snapshotted, its first start is the admin's (`status` says it is not running).
    // The crossing never gets here with a stopped server (its plan refuses one).
    if !plan.current.unit_active {
        let m = tx.machine();
        m.sys()?.release(&m.settings().unit)?;
        return Ok(());
    }
    tx.step(Step::Start, steps::start)?;
    let expect = plan.expect(tx.machine().settings());
    tx.step(Step::Health, |m, _| {
        steps::healthy(m, &plan.current.server_config, &expect)
    })?;
    Ok(())
}

/// bin.new is a full copy of bin/ with the new binary, on the same file system as bin/ (the
/// exchange is a rename): a disk that cannot hold it is found here, before anything is stopped.
fn check_staging_space(s: &crate::config::Settings, target: &std::path::Path) -> Result<(), Error> {
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let others: u64 = crate::os::fsutil::Dir::open(&s.bin_dir())
        .and_then(|d| {
            let mut sum = 0;
            for n in d.entries()? {
                if n != "stalwart" {
                    sum += d
                        .stat(&n)?
                        .filter(|m| m.kind == crate::os::fsutil::Kind::File)
                        .map_or(0, |m| m.size);
                }
            }
            Ok(sum)
        })
        .unwrap_or(0);
    let margin = 16 << 20;
    let need = size(target) + others + margin;
    let st = nix::sys::statvfs::statvfs(&s.prefix).map_err(|e| {
        Error::Preflight(format!(
            "cannot read the free space of {}: {e}",
            s.prefix.display()
        ))
    })?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < need {
        return Err(Error::Preflight(format!(
            "not enough space in {} to stage the new binary as {}: {} MiB needed (including a 16 MiB margin), {} MiB free; free some space there and run the upgrade again; nothing was stopped",
            s.prefix.display(),
            s.staged_dir().display(),
            need >> 20,
            free >> 20
        )));
    }
    Ok(())
}

/// A store on a read-only file system can be neither migrated by the new version nor restored
/// by a rollback: refused before anything is stopped.
fn check_stores_writable(cfg: &ServerConfig) -> Result<(), Error> {
    for st in &cfg.stores {
        let Some(path) = st.kind.path() else { continue };
        let probe = if path.exists() {
            path
        } else {
            path.parent().unwrap_or(path)
        };
        if let Ok(v) = nix::sys::statvfs::statvfs(probe) {
            if v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
                return Err(Error::Preflight(format!(
                    "the store `{}` at {} is on a read-only file system: the new version could not migrate it and a rollback could not restore it; remount it read-write (and check why it went read-only), then run the upgrade again; nothing was stopped",
                    st.id,
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// 0.15 -> 0.16 (facts: stalwart.md): only from the last 0.15 schema (the policy already refuses
/// older jumps), only for data stores whose carry-over is plain, and never over a config.json the
/// admin already has.
/// Does this upgrade cross the 0.16 line (and is it not refused anyway)?
fn crosses_the_line(from: &Version, to: &Version, verdict: &Verdict) -> bool {
    crossing::crosses(from, to) && !matches!(verdict, Verdict::Refused { .. })
}

fn crossing_json(
    s: &crate::config::Settings,
    cfg: &ServerConfig,
    dump: &crate::flows::carry::Dump,
) -> Result<(PathBuf, String), Error> {
    let existing = crate::store::crossing::paths(s).config_json;
    if existing.exists() {
        return Err(Error::Preflight(format!(
            "{} already exists: the 0.16 config would replace it; move it aside (0.15 does not read it) and run the upgrade again; nothing was changed",
            existing.display()
        )));
    }
    crossing::data_store_json(cfg, Some(&dump.settings)).map(|json| (existing, json))
}

/// Reads 0.15's directory from the running server with the admin's credentials and converts it
/// (before any downtime: 0.16's migration wipes what is not read now).
fn carry_plan(
    m: &Resources,
    cfg: &ServerConfig,
    unit_state: &crate::os::systemd::UnitState,
) -> Result<(crate::flows::carry::Dump, crate::flows::carry::Carried), Error> {
    let s = m.settings();
    if unit_state.active_state != ActiveState::Active {
        return Err(Error::Preflight(format!(
            "{} is not running: the 0.15 -> 0.16 crossing reads 0.15's accounts and settings through its management API before the stop (0.16's migration wipes them); start it (`systemctl start {}`), then run the upgrade again; nothing was changed",
            s.unit, s.unit
        )));
    }
    read_directory(m, cfg)
}

/// 0.15's directory and settings read through its management API and converted.
fn read_directory(
    m: &Resources,
    cfg: &ServerConfig,
) -> Result<(crate::flows::carry::Dump, crate::flows::carry::Carried), Error> {
    let s = m.settings();
    let pids = m.sys()?.unit_pids(&s.unit);
    let endpoint = crate::server::webadmin::Endpoint::of(s, Some(cfg), pids);
    let api = crate::server::webadmin::Api::connect(
        s,
        &endpoint,
        crate::server::webadmin::Login::Configured(None),
    )
    .map_err(|e| crate::flows::carry::CarryError::Dump(e.into()))?;
    Ok(crate::flows::carry::prepare(
        &api,
        &crate::flows::carry::machine(),
    )?)
}

/// The crossing's dump taken last, immediately before the stop (issue 26): `plan` read 0.15's
/// directory minutes earlier (the pre-hash, the SQLite pre-copy and the staging run after it),
/// and an account, password or alias changed in between would otherwise not be carried. The
/// same listing again, compared with the plan's: unchanged, the plan's objects go over;
/// changed, the new dump is converted and checked as the plan's was (anything 0.16 would now
/// refuse, or that no longer converts, fails here, before the stop). What changes between this
/// and the stop (one D-Bus call) is the same race any backup taken at a stop has.
fn last_dump(m: &Resources, plan: &Plan) -> Result<Option<Crossing>, Error> {
    let Some(planned) = &plan.crossing else {
        return Ok(None);
    };
    let (d, c) = read_directory(m, &plan.current.server_config)?;
    if d == planned.dump {
        return Ok(Some(planned.clone()));
    }
    let (principals, settings) = planned.dump.differences(&d);
    tracing::info!(
        principals,
        settings,
        "0.15's directory changed since the plan ({principals} principals, {settings} settings): the crossing carries it as read now, just before the stop"
    );
    let refused: Vec<Blocker> = c
        .refused
        .iter()
        .map(|r| Blocker::Preflight(format!("{r}; nothing was changed")))
        .collect();
    refusal(&refused)?;
    let json = crossing::data_store_json(&plan.current.server_config, Some(&d.settings))?;
    Ok(Some(Crossing {
        config_json: planned.config_json.clone(),
        json,
        dump: d,
        carried: c,
    }))
}

/// Everything `plan` found that stops the upgrade, as one refusal (module comment of `refusal`).
fn gate(plan: &Plan) -> Result<(), Error> {
    refusal(&plan.blockers)
}

/// Upstream: every node of a cluster must be stopped before an upgrade (in 0.16 one node left on
/// 0.15 corrupts data), and a minor release migrates the shared store under the other nodes'
/// feet. This helper stops only its own node, so it goes on only when the admin says the others
/// are stopped; unattended runs (package hooks) never can.
pub(crate) fn cluster_gate(
    cfg: &ServerConfig,
    to: &Version,
    others_stopped: bool,
) -> Result<(), Error> {
    match &cfg.cluster {
        Some(node) if !others_stopped => Err(Error::Refused(format!(
            "this server is a node of a cluster ({node} in {}): upstream requires every node stopped before an upgrade, and this helper stops only this one. Stop the other nodes, then run `stalwart-upgrade upgrade --to PATH --cluster-stopped` (or `rollback --cluster-stopped`) here, then on each other node. Nothing was changed: the server does not run {to}",
            cfg.path.display()
        ))),
        _ => Ok(()),
    }
}

fn nothing_to_do(plan: &Plan) -> Report {
    Report {
        txid: String::new(),
        kind: TxKind::Upgrade,
        from: plan.current.from.clone(),
        to: plan.to.clone(),
        class: plan.class,
        outcome: Outcome::NothingToDo,
        downtime_ms: None,
        snapshot: None,
        warnings: Vec::new(),
        message: format!(
            "{} already runs {}; nothing to do",
            plan.current.unit, plan.to
        ),
        was_active: plan.current.unit_active,
    }
}

/// Everything that can refuse, before any downtime: versions, checksum, policy, an earlier failure
/// of the same version, the server config, the unit.
pub fn plan(m: &Resources, req: &UpgradeRequest) -> Result<Plan, Error> {
    let s = m.settings();
    if !req.target.is_file() {
        return Err(Error::Preflight(format!(
            "{} does not exist or is not a file; nothing was changed",
            req.target.display()
        )));
    }
    let current = s.server_binary();
    if !current.is_file() {
        return Err(Error::Preflight(format!(
            "no server binary at {}: nothing to upgrade (a first install is done by the `stalwart` package)",
            current.display()
        )));
    }
    let from = crate::server::version::of_binary(&current)?;
    let to = crate::server::version::of_binary(&req.target)?;
    let class = classify(&from, &to);
    let target_sha256 = swap::sha256_file(&req.target)?;
    if let Some(sums) = &req.sha256sums {
        swap::verify_sha256sums(&req.target, sums, &target_sha256)?;
        // The web UI bundle the package carries beside the binary is checked the same way.
        if let Some(b) = req.target.parent().and_then(crate::server::webui::bundled) {
            swap::verify_sha256sums(&b, sums, &swap::sha256_file(&b)?)?;
        }
    }
    let ask = (m.ctx.unattended, m.ctx.allow.as_deref());
    let verdict = match policy::admit(s, m.state, &from, &to, req.retry, ask)? {
        Admission::PreviouslyFailed(f) => {
            return Err(Error::PreviouslyFailed {
                version: f.version,
                txid: f.txid,
                reason: f.reason,
            })
        }
        Admission::Decided(v) => v,
    };
    // From here on every check that fails is collected, not returned: a refusal lists them
    // all, the policy's first (`refusal`).
    let mut blockers: Vec<Blocker> = Vec::new();
    match &verdict {
        Verdict::Allowed => {}
        Verdict::NeedsApproval { message, .. } | Verdict::Refused { message } => {
            blockers.push(Blocker::Policy(message.clone()))
        }
    }
    let mut check = |r: Result<(), Error>| {
        if let Err(e) = r {
            blockers.push(e.into());
        }
    };
    check(check_staging_space(s, &req.target));
    let server_config = m.server_config(&crate::server::lines::server_config_path(s, &from))?;
    check(check_stores_writable(&server_config));
    check(
        crate::store::snapshot::check_store_paths(s, &server_config)
            .map_err(|e| Error::Preflight(e.to_string())),
    );
    let snapshots = m.snapshots();
    let snapshot = snapshots.plan(&server_config)?;
    if let Some(w) = snapshot.pinned_warning() {
        tracing::warn!("{w}");
    }
    if let Some(why) = snapshot.unrestorable(&from) {
        check(Err(Error::Preflight(why)));
    }
    if let Some(advice) = snapshots.space_refusal(&snapshot, &[]) {
        check(Err(Error::Preflight(format!(
            "{advice}; nothing was stopped"
        ))));
    }
    let unit_state = m.sys()?.state(&s.unit)?;
    let health_url = health::base_url(s, Some(&server_config));
    check(crate::flows::plan::check_env(m));
    let carry = match crosses_the_line(&from, &to, &verdict) {
        true => match carry_plan(m, &server_config, &unit_state) {
            Ok(c) => Some(c),
            Err(e) => {
                check(Err(e));
                None
            }
        },
        false => None,
    };
    let crossing = match carry {
        Some((dump, carried)) => {
            for r in &carried.refused {
                check(Err(Error::Preflight(format!("{r}; nothing was changed"))));
            }
            match crossing_json(s, &server_config, &dump) {
                Ok((config_json, json)) => Some(Crossing {
                    config_json,
                    json,
                    dump,
                    carried,
                }),
                Err(e) => {
                    check(Err(e));
                    None
                }
            }
        }
        None => None,
    };
    if unit_state.active_state == ActiveState::Active {
        check(health::check_running(&health_url, Duration::from_secs(10)).map_err(|why| {
            Error::Preflight(format!(
                "the running server does not answer {health_url}/healthz/ready ({why}), so the health check after the upgrade could not pass either; nothing was stopped. If the server is starting or migrating, wait and retry; if it answers HTTP elsewhere, set `[health] url` in /etc/stalwart-upgrade/config.toml"
            ))
        }));
    }
    check(cluster_gate(&server_config, &to, req.cluster_stopped));
    let current = Current::read(
        m,
        from,
        server_config.clone(),
        snapshot,
        &unit_state,
        &server_config,
    )?;
    Ok(Plan {
        current,
        health_url,
        to,
        class,
        verdict,
        target: req.target.clone(),
        target_sha256,
        crossing,
        webui: req.target.parent().and_then(crate::server::webui::bundled),
        blockers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unapproved crossing on a machine without web-admin credentials: the admin learns
    /// both at once, the policy (and its `allow` command) first, each with what to run.
    #[test]
    fn a_refusal_lists_every_blocker_the_policy_first() {
        let policy = Blocker::Policy(
            "0.15.5 -> 0.16.18 is a minor upgrade: run `stalwart-upgrade allow 0.16`".into(),
        );
        let credentials: Blocker = Error::Carry(crate::flows::carry::CarryError::Dump(
            crate::flows::carry::dump::DumpError::Api(
                crate::server::webadmin::WebadminError::NoCredentials,
            ),
        ))
        .into();
        let hostname: Blocker =
            Error::Preflight("0.15's server.hostname = \"mailhost\": 0.16 refuses it".into())
                .into();
        assert_eq!(credentials.exit_code(), crate::exit::PREFLIGHT);
        let e = refusal(&[policy.clone(), credentials.clone(), hostname.clone()]).unwrap_err();
        assert_eq!(
            e.exit_code(),
            crate::exit::REFUSED,
            "the policy's code: {e}"
        );
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("3 things stop this upgrade"), "{text}");
        assert!(
            lines[1].starts_with("  1. ") && lines[1].contains("stalwart-upgrade allow 0.16"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("  2. ")
                && lines[2].contains("[webadmin] credentials_file")
                && lines[2].contains("nothing was stopped or changed"),
            "{text}"
        );
        assert!(lines[3].starts_with("  3. ") && lines[3].contains("server.hostname"));
        // Alone, each is refused as it always was, with its own exit code.
        let e = refusal(&[credentials]).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::PREFLIGHT);
        assert!(
            e.to_string().starts_with("the 0.15 -> 0.16 crossing reads"),
            "{e}"
        );
        assert!(refusal(&[]).is_ok());
        let e = refusal(&[policy]).unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e:?}");
    }
}
