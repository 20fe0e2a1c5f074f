//! The daemon's main loop: netlink events update the link table; bursts are
//! coalesced; each reconcile pass computes the desired state from the table
//! and the configuration, reads the actual state back from the kernel, and
//! applies the difference. The reconciler is the only writer to the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sd_notify::NotifyState;
use tokio::time::{sleep_until, Instant};

use crate::config::{Config, DatapathConfig as _};
use crate::datapath::{AttachMode, Datapath, Direction};
use crate::execute;
use crate::links::{Ifindex, LinkKind, Table};
use crate::manager::{self, ApplyOptions, Hub, LinkInfo, Notice, Origin, Pending, PolicyInfo, Request, Snapshot, State};
use crate::netlink::{Event, Monitor};
use crate::policy::cilium::PolicyReport;
use crate::policy::files;
use crate::policy_store::{self as store, Source, Sources};
use crate::reconcile::{self, Action, HookProg};
use crate::select::{self, Decision};
use crate::state::{self, Persisted, PolicyRecord};
use crate::tasks;
use crate::vlan;

/// After a quiet period, the first event is acted on this soon: enough to
/// take in the messages of the same operation (NEWLINK, NEWADDR, …).
pub const QUICK: Duration = Duration::from_millis(3);
/// During a burst, passes are at least this far apart (and at least as far
/// apart as the last pass took, so reconciling never takes more than half
/// of the time of a storm).
pub const COALESCE: Duration = Duration::from_millis(25);
/// A full pass even without events, as a safety net.
const PERIODIC: Duration = Duration::from_secs(30);
/// How often, without any other pass, the tcx hooks are checked for a
/// program inserted in front of hostfwd (tcx attaches send no netlink
/// event). One BPF_PROG_QUERY per hook that copies a single id.
pub const ORDER_CHECK: Duration = Duration::from_secs(2);
/// How often the drop counters are checked for a full conntrack map (at
/// most one warning per map per interval).
const FULL_CHECK: Duration = Duration::from_secs(10);
/// The conntrack maps a new flow goes to, by the hook that saw it: flows
/// started from outside (ingress), flows the host started (egress).
const CONNTRACK_MAPS: [(crate::datapath::Direction, [&str; 2]); 2] =
    [(crate::datapath::Direction::Ingress, ["hf_ct4", "hf_ct6"]), (crate::datapath::Direction::Egress, ["hf_ct4_out", "hf_ct6_out"])];

pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// The policy in force and how it came about.
#[derive(Default)]
struct Policies {
    /// The files of the policy directory as last read.
    permanent: Sources,
    /// The sources in force (permanent plus runtime changes); `None` when
    /// the policy directory was invalid at start and nothing has been
    /// applied since: the policy in the maps is then left as it is.
    sources: Option<Sources>,
    /// What the last compile said about each policy.
    report: Option<PolicyReport>,
    /// Increments with every change of the policy in force.
    revision: u64,
    pending: Option<PendingChange>,
    /// The host addresses the installed policy was resolved with (`host`,
    /// `cluster` and `world` depend on them); `None` = install again.
    installed_for: Option<BTreeSet<IpAddr>>,
}

/// A change awaiting confirmation.
struct PendingChange {
    revision: u64,
    deadline: Instant,
    wall: SystemTime,
    /// The sources to go back to.
    previous: Option<Sources>,
    /// Done on confirmation.
    persist: Option<PersistOp>,
}

enum PersistOp {
    Write(Source),
    Remove(Source),
}

pub struct Daemon {
    cfg: Config,
    /// The file the configuration came from (read again on reload).
    cfg_file: Option<PathBuf>,
    dp: Datapath,
    hub: Hub,
    table: Table,
    decisions: BTreeMap<Ifindex, Decision>,
    sets: BTreeMap<Ifindex, vlan::AllowSet>,
    /// Links whose configuration or attachment failed or was held back in
    /// the last pass.
    failed: BTreeSet<u32>,
    /// What the last pass could not do, and why.
    outcome: execute::Outcome,
    /// The configuration's failsafe ports, checked when it was loaded.
    failsafe: BTreeSet<reconcile::Failsafe>,
    /// Why the kernel state could not be read in the last pass.
    kernel_error: Option<String>,
    /// Operations made to fail (the executor tests).
    #[cfg(feature = "testing")]
    faults: Option<crate::datapath::Faults>,
    /// Hooks where other programs still run before hostfwd after the last
    /// pass (legacy tc, or a move to the front that failed).
    ahead: BTreeMap<(u32, Direction), Vec<HookProg>>,
    started: bool,
    saved: Persisted,
    /// Global audit set through the API (runtime or persisted); the
    /// configuration's `audit` otherwise.
    audit_override: Option<bool>,
    /// Per-link audit by link name (runtime, starting from the saved state).
    link_audit: BTreeMap<String, bool>,
    policies: Policies,
    /// Why the last install of the policy in force failed (retried).
    policy_failed: Option<String>,
    /// Why the policy directory was rejected at start or on the last
    /// reload: the policy in force is not the configured one.
    dir_problem: Option<String>,
    /// Set when no good policy was ever installed and the configured one is
    /// invalid: nothing is enforced.
    not_enforcing: Option<String>,
    /// The revision counter and the last good policy set, as in state_dir.
    record: PolicyRecord,
    /// Why the policy record could not be read or written.
    record_error: Option<String>,
    /// The problems last published (each new one goes to the journal).
    problems: Vec<String>,
    /// The last `STATUS=` sent to systemd.
    status: String,
    /// `conntrack-full` drops per CONNTRACK_MAPS row at the last check;
    /// `None` before the first (drops from before the start are no news).
    ct_full_seen: Option<[u64; 2]>,
}

impl Daemon {
    pub fn new(cfg: Config, cfg_file: Option<PathBuf>, dp: Datapath, hub: Hub) -> Daemon {
        let saved = match state::load(&cfg.state_dir) {
            Ok(s) => s,
            Err(e) => {
                // Starting is more important than the saved modes; the
                // configuration's audit default is the safe side.
                tracing::error!(error = %e, "ignoring the saved state; the configuration applies");
                Persisted::default()
            }
        };
        Daemon {
            audit_override: saved.audit,
            link_audit: saved.link_audit.clone(),
            saved,
            cfg,
            cfg_file,
            dp,
            hub,
            table: Table::new(),
            decisions: BTreeMap::new(),
            sets: BTreeMap::new(),
            failed: BTreeSet::new(),
            outcome: execute::Outcome::default(),
            failsafe: BTreeSet::new(),
            kernel_error: None,
            #[cfg(feature = "testing")]
            faults: None,
            ahead: BTreeMap::new(),
            started: false,
            policies: Policies::default(),
            policy_failed: None,
            dir_problem: None,
            not_enforcing: None,
            record: PolicyRecord::default(),
            record_error: None,
            problems: Vec::new(),
            status: String::new(),
            ct_full_seen: None,
        }
    }

    fn audit(&self) -> bool {
        self.audit_override.unwrap_or(self.cfg.audit)
    }

    fn settings(&self) -> crate::datapath::GlobalSettings {
        crate::datapath::GlobalSettings { audit: self.audit(), ..self.cfg.settings() }
    }

    /// Reads the policy directory at start (a missing one is an empty
    /// set) and the policy record. An invalid set is not installed: the
    /// last good set of the record takes its place (the pinned maps hold it
    /// too after a restart, a cold start has empty maps); without one, the
    /// pinned maps stay as they are, and empty maps are said to enforce
    /// nothing. `adopted`: the maps were pinned before this start.
    pub fn load_policies(&mut self, adopted: bool) {
        // Writes a crash interrupted leave temp files; their targets are
        // whole (the old or the new content).
        for d in [self.cfg.policy_dir.clone(), self.cfg.state_dir.clone()] {
            match state::remove_stale_temps(&d) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(dir = %d.display(), n, "removed temp files of interrupted writes"),
                Err(e) => tracing::warn!(dir = %d.display(), error = %e, "removing temp files of interrupted writes"),
            }
        }
        match state::load_policy(&self.cfg.state_dir) {
            Ok(r) => self.record = r,
            Err(e) => {
                tracing::error!(error = %e, "ignoring the policy record: the revision starts afresh, no last good policy");
                self.record_error = Some(e.to_string());
            }
        }
        self.policies.revision = self.record.revision;
        let dir = self.cfg.policy_dir.clone();
        match store::read_dir(&dir).and_then(|p| Ok((store::parse(&p, self.cfg.strict_policies)?, p))) {
            Ok((parsed, p)) => {
                tracing::info!(dir = %dir.display(), policies = parsed.len(), "policies loaded");
                self.policies.permanent = p.clone();
                self.policies.sources = Some(p);
                self.policies.installed_for = None;
            }
            Err(e) => {
                let problem = format!("policy directory {} rejected:\n{e}", dir.display());
                match self.record.last_good.clone() {
                    Some(saved) => {
                        let sources: Sources = saved.into_iter().map(|s| (s.name.clone(), Source::from_saved(s))).collect();
                        tracing::error!("{problem}\nthe last good policy set ({} sources) stays in force", sources.len());
                        self.policies.permanent = sources.iter().filter(|(_, s)| s.origin == Origin::Permanent).map(|(n, s)| (n.clone(), s.clone())).collect();
                        self.policies.sources = Some(sources);
                        self.policies.installed_for = None;
                    }
                    None if adopted => tracing::error!("{problem}\nno last good policy set is recorded: the policy in the pinned maps stays"),
                    None => {
                        tracing::error!("{problem}\nno good policy was ever installed: NOT ENFORCING any policy");
                        self.not_enforcing = Some(format!("not enforcing: no good policy was ever installed and the policy directory {} is invalid", dir.display()));
                    }
                }
                self.dir_problem = Some(problem);
            }
        }
    }

    /// The policy set last installed and not awaiting confirmation.
    fn confirmed(&self) -> Option<Sources> {
        match &self.policies.pending {
            Some(p) => p.previous.clone(),
            None => self.policies.sources.clone().filter(|_| self.policies.installed_for.is_some()),
        }
    }

    /// Writes the revision and the last good set to state_dir: before a
    /// change is answered, so a restart never hands out a revision again.
    fn save_record(&mut self) {
        let mut r = PolicyRecord { revision: self.policies.revision, last_good: self.record.last_good.clone() };
        if let Some(good) = self.confirmed() {
            r.last_good = Some(good.values().map(Source::saved).collect());
        }
        if r == self.record {
            return;
        }
        match state::save_policy(&self.cfg.state_dir, &r) {
            Ok(()) => {
                self.record = r;
                self.record_error = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "saving the policy record");
                self.record_error = Some(e.to_string());
            }
        }
    }

    /// Compiles `sources` for this node and installs them (one atomic
    /// swap). Nothing changes on error.
    fn install(&mut self, sources: &Sources) -> Result<(), manager::Error> {
        let parsed = store::parse(sources, self.cfg.strict_policies).map_err(|e| manager::Error::InvalidPolicy(e.to_string()))?;
        let ctx = self.cfg.entities(self.table.host_addrs());
        let host_addrs = ctx.host_addrs.clone();
        let compiled = files::compile_for_node(&parsed, &ctx, &self.cfg.node_labels).map_err(|e| manager::Error::InvalidPolicy(e.to_string()))?;
        let generation = self.dp.apply_policy(&compiled.image).map_err(|e| manager::Error::Failed(format!("installing the policy: {e}")))?;
        for p in &compiled.report.policies {
            tracing::info!(policy = %p.name, active = p.active(), "{}", p.summary());
            p.warnings.iter().for_each(|w| tracing::warn!(policy = %p.name, "{w}"));
        }
        tracing::info!(generation, identities = compiled.image.identities.len(), rules = compiled.image.rules.len(), "policy installed");
        self.policies.report = Some(compiled.report);
        self.policies.installed_for = Some(host_addrs);
        self.policy_failed = None;
        self.not_enforcing = None;
        Ok(())
    }

    /// Installs the policy in force again when the host addresses changed
    /// (or the last install failed).
    fn refresh_policy(&mut self) {
        let Some(sources) = self.policies.sources.clone() else { return };
        if self.policies.installed_for.as_ref() == Some(&self.table.host_addrs()) {
            return;
        }
        match self.install(&sources) {
            // The first install of a set (at start, after a failure) makes
            // it the last good one.
            Ok(()) => self.save_record(),
            Err(e) => {
                tracing::error!(error = %e, "installing the policy; retrying on the next pass");
                self.policy_failed = Some(format!("installing the policy: {e}"));
            }
        }
    }

    fn select_config(&self) -> select::SelectConfig {
        select::SelectConfig { devices: self.cfg.devices.clone(), exclude: self.cfg.exclude.clone(), vlan_bypass: self.cfg.vlan_bypass.clone() }
    }

    fn audit_links(&self) -> BTreeSet<Ifindex> {
        self.table.iter().filter(|l| self.link_audit.get(&l.name) == Some(&true)).map(|l| l.ifindex).collect()
    }

    /// One pass: desired (from the table) vs actual (from the kernel).
    /// Returns the actions taken; errors of single actions are logged and
    /// retried on the next pass.
    pub fn reconcile(&mut self) -> Vec<Action> {
        let t0 = std::time::Instant::now();
        let scfg = self.select_config();
        let decisions = select::select(&self.table, &scfg);
        for (i, d) in &decisions {
            if self.decisions.get(i) != Some(d) {
                let name = self.table.get(*i).map(|l| l.name.as_str()).unwrap_or("?");
                tracing::info!(link = name, ifindex = i.get(), role = %d.role, reason = %d.reason, "link role");
                if let Some(w) = &d.warning {
                    tracing::warn!(link = name, ifindex = i.get(), "{w}");
                }
                if self.decisions.get(i).map(|o| (o.role, &o.reason)) != Some((d.role, &d.reason)) {
                    self.hub.notify(Notice::LinkRoleChanged { ifindex: *i, name: name.to_string(), role: d.role.name().to_string(), reason: d.reason.clone() });
                }
            }
        }
        let sets = vlan::allowed(&self.table, &decisions, &self.cfg.vlan_bypass);
        let settings = reconcile::Settings {
            audit_links: self.audit_links(),
            to_front: self.dp.mode() == AttachMode::Tcx,
            global: self.settings(),
            failsafe: self.failsafe.clone(),
        };
        let desired = reconcile::desired(&self.table, &decisions, &sets, &settings, self.dp.prog_ids());
        self.decisions = decisions;
        self.sets = sets;
        let actual = match self.dp.actual() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "reading the kernel state");
                self.failed = desired.links.keys().copied().collect();
                self.kernel_error = Some(e.to_string());
                self.publish();
                return Vec::new();
            }
        };
        let actions = reconcile::plan(&desired, &actual);
        for a in &actions {
            if let Action::MoveToFront(i, dir) = *a {
                let progs = actual.ahead.get(&(i, dir)).map(|p| reconcile::hook_progs_text(p)).unwrap_or_default();
                tracing::warn!(link = self.link_name(i), ifindex = i, direction = crate::datapath::dir_name(dir), ahead = %progs, "other programs were inserted in front of hostfwd; moving hostfwd back to the front");
            }
        }
        self.kernel_error = None;
        self.outcome = self.execute(&actions);
        self.failed = self.outcome.links();
        self.note_ahead(&desired, actual.ahead);
        self.refresh_policy();
        if !actions.is_empty() {
            tracing::debug!(n = actions.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "reconciled");
        }
        self.started = true;
        self.publish();
        actions
    }

    /// Why the last pass did not write the host-wide settings (audit,
    /// failsafe ports), if it did not: the reading failed, or a write.
    fn global_problem(&self) -> Option<String> {
        if let Some(e) = &self.kernel_error {
            return Some(format!("reading the kernel state: {e}"));
        }
        let failed = self.outcome.failed.iter().find(|f| matches!(f.action, Action::SetGlobal(_) | Action::AddFailsafe(_) | Action::RemoveFailsafe(_)));
        failed.map(|f| format!("{}: {}", f.action, f.error))
    }

    /// Every reason the state is not what the configuration asks for.
    fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = [&self.not_enforcing, &self.dir_problem, &self.policy_failed].into_iter().flatten().cloned().collect();
        if let Some(e) = &self.record_error {
            v.push(format!("policy record: {e}"));
        }
        if let Some(e) = &self.kernel_error {
            v.push(format!("reading the kernel state failed: {e}; no link was configured in this pass; retrying"));
        }
        v.extend(self.outcome.problems(|i| self.link_name(i)));
        v
    }

    fn link_name(&self, ifindex: u32) -> String {
        Ifindex::new(ifindex).and_then(|i| self.table.get(i)).map(|l| l.name.clone()).unwrap_or_else(|| format!("#{ifindex}"))
    }

    /// Keeps the hooks where others still run first after this pass (all
    /// of them on legacy tc; where the move failed on tcx) and warns once
    /// per change.
    fn note_ahead(&mut self, desired: &reconcile::Desired, ahead: BTreeMap<(u32, Direction), Vec<HookProg>>) {
        let left: BTreeMap<_, _> = ahead
            .into_iter()
            .filter(|((i, _), _)| desired.links.contains_key(i) && (!desired.to_front || self.failed.contains(i)))
            .collect();
        let why = if desired.to_front {
            "moving hostfwd to the front failed; retrying on the next pass"
        } else {
            "legacy tc cannot put hostfwd in front of them without deleting them, which hostfwd never does"
        };
        for ((i, dir), progs) in &left {
            if self.ahead.get(&(*i, *dir)) != Some(progs) {
                tracing::warn!(
                    link = self.link_name(*i),
                    ifindex = i,
                    direction = crate::datapath::dir_name(*dir),
                    ahead = %reconcile::hook_progs_text(progs),
                    "other programs run before hostfwd and decide first; {why}"
                );
            }
        }
        self.ahead = left;
    }

    /// What is wrong with a link's hooks, for the API (empty when nothing).
    fn problem(&self, ifindex: u32) -> String {
        let ahead = self.ahead.iter().filter(|((i, _), _)| *i == ifindex);
        let ahead = ahead.map(|((_, dir), progs)| format!("{}: runs after {}", crate::datapath::dir_name(*dir), reconcile::hook_progs_text(progs)));
        ahead.chain(self.outcome.link_problems(ifindex, |i| self.link_name(i))).collect::<Vec<_>>().join("; ")
    }

    /// The hooks the periodic order check looks at: both directions of
    /// every link attached in the last pass.
    fn hooks(&self) -> Vec<(u32, Direction)> {
        self.decisions
            .iter()
            .filter(|(i, d)| d.role.is_attached() && !self.failed.contains(&i.get()))
            .flat_map(|(i, _)| Direction::ALL.map(|d| (i.get(), d)))
            .collect()
    }

    fn state(&self) -> State {
        if !self.started {
            State::Starting
        } else if self.not_enforcing.is_some() {
            State::NotEnforcing
        } else if !self.problems().is_empty() {
            State::Degraded
        } else if self.audit() {
            State::Audit
        } else {
            State::Enforcing
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mode = self.dp.mode().name();
        let audit = self.audit();
        let links = self
            .table
            .iter()
            .map(|l| {
                let d = self.decisions.get(&l.ifindex);
                let attached = d.is_some_and(|d| d.role.is_attached()) && !self.failed.contains(&l.ifindex.get());
                let link_audit = self.link_audit.get(&l.name) == Some(&true);
                let info = LinkInfo {
                    ifindex: l.ifindex,
                    name: l.name.clone(),
                    kind: l.kind.name().to_string(),
                    role: d.map(|d| d.role.name()).unwrap_or("ignored").to_string(),
                    reason: d.map(|d| d.reason.clone()).unwrap_or_default(),
                    lower: match l.kind {
                        LinkKind::Vlan { lower, .. } => lower.get(),
                        _ => 0,
                    },
                    controller: l.controller.map(|c| c.get()).unwrap_or(0),
                    addresses: l.addrs.iter().map(ToString::to_string).collect(),
                    allowed_vlans: self.sets.get(&l.ifindex).map(|s| s.vids.iter().map(|v| v.get()).collect()).unwrap_or_default(),
                    attach_mode: if attached { mode.to_string() } else { String::new() },
                    audit: audit || link_audit,
                    link_audit,
                    problem: self.problem(l.ifindex.get()),
                };
                (l.ifindex, info)
            })
            .collect();
        let report = self.policies.report.as_ref();
        let policies = self
            .policies
            .sources
            .iter()
            .flat_map(|s| s.values())
            .map(|src| {
                let label = src.label();
                let mine: Vec<_> = report.map(|r| r.policies.iter().filter(|p| p.file == label).collect()).unwrap_or_default();
                PolicyInfo {
                    name: src.name.clone(),
                    origin: src.origin.clone(),
                    source: match src.origin {
                        Origin::Permanent => src.path.display().to_string(),
                        Origin::Runtime => "runtime".to_string(),
                    },
                    reason: if mine.is_empty() { "no policy documents".to_string() } else { mine.iter().map(|p| format!("{}: {}", p.name, p.summary())).collect::<Vec<_>>().join("\n") },
                    active: mine.iter().any(|p| p.active()),
                    yaml: src.text.clone(),
                }
            })
            .collect();
        Snapshot {
            version: manager::VERSION,
            state: self.state(),
            problems: if self.started { self.problems() } else { Vec::new() },
            audit,
            policy_revision: self.policies.revision,
            pending_confirm: self.policies.pending.as_ref().map(|p| Pending { revision: p.revision, deadline: p.wall }),
            attach_mode: mode,
            strict_policies: self.cfg.strict_policies,
            links,
            policies,
        }
    }

    fn publish(&mut self) {
        let s = self.snapshot();
        for p in s.problems.iter().filter(|p| !self.problems.contains(p)) {
            tracing::error!(state = s.state.name(), "{p}");
        }
        self.problems = s.problems.clone();
        let status = format!(
            "{}: {} enforced, {} guarded, policy revision {}{}{}",
            s.state.name(),
            s.links.values().filter(|l| l.role == "enforce").count(),
            s.links.values().filter(|l| l.role == "vlan-guard").count(),
            s.policy_revision,
            if s.pending_confirm.is_some() { " (awaiting confirmation)" } else { "" },
            // One line: a newline would end the notification's field.
            s.problems.iter().map(|p| format!("; {}", p.replace('\n', " "))).collect::<String>()
        );
        if status != self.status {
            let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
            self.status = status;
        }
        self.hub.publish(s);
    }
}

// Requests from the API.
impl Daemon {
    fn handle(&mut self, req: Request) {
        match req {
            Request::ApplyPolicy { name, yaml, options, reply } => {
                let r = self.apply_policy(name, yaml, options);
                self.answer(reply, r);
            }
            Request::RemovePolicy { name, persist, reply } => {
                let r = self.remove_policy(&name, persist);
                self.answer(reply, r);
            }
            Request::Confirm { revision, reply } => {
                let r = self.confirm(revision);
                self.answer(reply, r);
            }
            Request::Rollback { reply } => {
                let r = self.rollback("rolled back on request");
                self.answer(reply, r);
            }
            Request::SetAudit { link, enabled, persist, reply } => {
                let r = self.set_audit(link, enabled, persist);
                self.answer(reply, r);
            }
            Request::Reload { reply } => {
                let r = self.reload();
                self.answer(reply, r);
            }
        }
    }

    /// Publishes, then replies: a client that reads the properties after
    /// the reply sees its change (the reply used to go first).
    fn answer<T>(&mut self, reply: manager::Reply<T>, r: Result<T, manager::Error>) {
        self.publish();
        let _ = reply.send(r);
    }

    fn busy(&self) -> Result<(), manager::Error> {
        match &self.policies.pending {
            Some(p) => Err(manager::Error::Busy(format!("policy revision {} awaits confirmation: confirm or roll it back first", p.revision))),
            None => Ok(()),
        }
    }

    fn apply_policy(&mut self, name: String, yaml: String, options: ApplyOptions) -> Result<u64, manager::Error> {
        self.busy()?;
        store::check_name(&name).map_err(|e| manager::Error::InvalidPolicy(e.to_string()))?;
        let dir = self.cfg.policy_dir.clone();
        let mut next = self.policies.sources.clone().unwrap_or_default();
        let path = store::file_for(&dir, &name, self.policies.permanent.get(&name));
        let immediate = options.persist && options.confirm_timeout.is_none();
        let source = Source { name: name.clone(), origin: if immediate { Origin::Permanent } else { Origin::Runtime }, path, text: yaml };
        next.insert(name, source.clone());
        let persist = options.persist.then(|| PersistOp::Write(Source { origin: Origin::Permanent, ..source }));
        self.change(next, persist, options.confirm_timeout)
    }

    fn remove_policy(&mut self, name: &str, persist: bool) -> Result<u64, manager::Error> {
        self.busy()?;
        let mut next = self.policies.sources.clone().unwrap_or_default();
        let Some(old) = next.remove(name) else { return Err(manager::Error::NoSuchPolicy(name.to_string())) };
        let persist = persist.then(|| PersistOp::Remove(Source { path: store::file_for(&self.cfg.policy_dir, name, self.policies.permanent.get(name)), ..old }));
        self.change(next, persist, None)
    }

    /// Installs `next`, then persists (unless waiting for confirmation).
    /// Nothing changes on error: a failed write puts the old policy back.
    fn change(&mut self, next: Sources, persist: Option<PersistOp>, confirm: Option<Duration>) -> Result<u64, manager::Error> {
        // The deadlines before anything changes: a timeout past what the
        // clocks hold is refused, not a panic after the install.
        let deadlines = match confirm {
            None => None,
            Some(t) => {
                let too_long = || manager::Error::InvalidArgs(format!("confirm timeout {t:?} is too long (at most {}s)", hostfwd_dbus::options::MAX_CONFIRM_TIMEOUT_SEC));
                if t.as_secs() > hostfwd_dbus::options::MAX_CONFIRM_TIMEOUT_SEC {
                    return Err(too_long());
                }
                let now = Instant::now().checked_add(t).ok_or_else(too_long)?;
                Some((t, now, SystemTime::now().checked_add(t).ok_or_else(too_long)?))
            }
        };
        let previous = self.policies.sources.clone();
        self.install(&next)?;
        let persist = match (persist, confirm) {
            (Some(op), None) => {
                if let Err(e) = self.persist(op) {
                    if let Err(e2) = self.install(&previous.clone().unwrap_or_default()) {
                        tracing::error!(error = %e2, "putting the previous policy back");
                        self.policy_failed = Some(format!("putting the previous policy back: {e2}"));
                        self.policies.installed_for = None;
                    }
                    return Err(e);
                }
                None
            }
            (op, _) => op,
        };
        self.policies.sources = Some(next);
        self.policies.revision += 1;
        let revision = self.policies.revision;
        if let Some((t, deadline, wall)) = deadlines {
            self.policies.pending = Some(PendingChange { revision, deadline, wall, previous, persist });
            tracing::info!(revision, timeout_s = t.as_secs_f64(), "policy applied; rolls back unless confirmed");
        } else {
            tracing::info!(revision, "policy applied");
        }
        self.save_record();
        self.hub.notify(Notice::PolicyApplied { revision });
        Ok(revision)
    }

    fn persist(&mut self, op: PersistOp) -> Result<(), manager::Error> {
        let dir = self.cfg.policy_dir.clone();
        let failed = |e: store::Error| manager::Error::Failed(e.to_string());
        let permanent = &mut self.policies.permanent;
        match op {
            PersistOp::Write(src) => {
                store::persist(&dir, &src).map_err(failed)?;
                permanent.insert(src.name.clone(), src.clone());
                if let Some(s) = self.policies.sources.as_mut().and_then(|s| s.get_mut(&src.name)) {
                    *s = src;
                }
            }
            PersistOp::Remove(src) => {
                store::unpersist(&src).map_err(failed)?;
                permanent.remove(&src.name);
            }
        }
        Ok(())
    }

    fn confirm(&mut self, revision: u64) -> Result<(), manager::Error> {
        let p = match self.policies.pending.take_if(|p| p.revision == revision) {
            Some(p) => p,
            None => {
                let other = self.policies.pending.as_ref().map(|p| format!(" with revision {revision} (revision {} does)", p.revision));
                return Err(manager::Error::NoPendingConfirm(other.unwrap_or_default()));
            }
        };
        tracing::info!(revision, "policy confirmed");
        let r = match p.persist {
            Some(op) => self.persist(op).map_err(|e| manager::Error::Failed(format!("confirmed, but not persisted: {e}"))),
            None => Ok(()),
        };
        self.save_record();
        r
    }

    /// Puts back the policy of before the change awaiting confirmation.
    fn rollback(&mut self, reason: &str) -> Result<u64, manager::Error> {
        let Some(p) = self.policies.pending.take() else { return Err(manager::Error::NoPendingConfirm(String::new())) };
        let previous = p.previous.clone().unwrap_or_default();
        if let Err(e) = self.install(&previous) {
            // The previous set was in force a moment ago; keep retrying it.
            tracing::error!(error = %e, "putting the previous policy back; retrying on the next pass");
            self.policy_failed = Some(format!("putting the previous policy back: {e}"));
            self.policies.installed_for = None;
        }
        self.policies.sources = p.previous;
        self.policies.revision += 1;
        self.save_record();
        tracing::warn!(revision = p.revision, restored = self.policies.revision, reason, "policy rolled back");
        self.hub.notify(Notice::PolicyRolledBack { revision: p.revision, reason: reason.to_string() });
        Ok(self.policies.revision)
    }

    fn set_audit(&mut self, link: Option<Ifindex>, enabled: bool, persist: bool) -> Result<(), manager::Error> {
        let mut saved = self.saved.clone();
        match link {
            None => {
                let before = self.audit_override;
                self.audit_override = Some(enabled);
                self.reconcile();
                if let Some(why) = self.global_problem() {
                    self.audit_override = before;
                    return Err(manager::Error::Failed(format!("setting audit mode: {why}")));
                }
                saved.audit = Some(enabled);
                tracing::info!(enabled, persist, "global audit mode");
            }
            Some(i) => {
                let name = self.table.get(i).map(|l| l.name.clone()).ok_or_else(|| manager::Error::NoSuchLink(format!("with ifindex {i}")))?;
                self.link_audit.insert(name.clone(), enabled);
                saved.link_audit.insert(name.clone(), enabled);
                self.reconcile();
                if self.failed.contains(&i.get()) {
                    return Err(manager::Error::Failed(format!("configuring link {name}; retrying on the next pass")));
                }
                tracing::info!(link = %name, enabled, persist, "link audit mode");
            }
        }
        if persist && saved != self.saved {
            state::save(&self.cfg.state_dir, &saved).map_err(|e| manager::Error::Failed(format!("set at runtime, but not persisted: {e}")))?;
            self.saved = saved;
        }
        Ok(())
    }

    /// Reads the configuration file and the policy directory again. The
    /// policy in force becomes the permanent set (runtime changes end, as
    /// with firewalld). Nothing changes on error.
    fn reload(&mut self) -> Result<(), manager::Error> {
        let cfg = Config::load(self.cfg_file.as_deref()).map_err(|e| manager::Error::Failed(e.to_string()))?;
        for (key, changed) in [
            ("bpffs_root", cfg.bpffs_root != self.cfg.bpffs_root),
            ("attach_mode", cfg.attach_mode != self.cfg.attach_mode || cfg.tc_priority != self.cfg.tc_priority || cfg.tc_handle != self.cfg.tc_handle),
            ("dbus", cfg.dbus != self.cfg.dbus),
            ("state_dir", cfg.state_dir != self.cfg.state_dir),
            ("maps", cfg.maps != self.cfg.maps),
        ] {
            if changed {
                tracing::warn!(key, "changed in the configuration; takes effect on restart");
            }
        }
        let failsafe = cfg.failsafe_entries().map_err(|e| manager::Error::Failed(e.to_string()))?;
        // An invalid directory changes nothing in force, but a cold start
        // would not load it: degraded until a reload succeeds.
        let invalid = |e: String| format!("policy directory {} rejected:\n{e}", cfg.policy_dir.display());
        let permanent = store::read_dir(&cfg.policy_dir).map_err(|e| {
            self.dir_problem = Some(invalid(e.to_string()));
            manager::Error::InvalidPolicy(e.to_string())
        })?;
        store::parse(&permanent, cfg.strict_policies).map_err(|e| {
            self.dir_problem = Some(invalid(e.to_string()));
            manager::Error::InvalidPolicy(e.to_string())
        })?;
        let old = std::mem::replace(&mut self.cfg, cfg);
        let old_failsafe = std::mem::replace(&mut self.failsafe, failsafe.into_iter().collect());
        // The new failsafe ports and settings first (a pass), then the policy.
        self.reconcile();
        let applied = match self.global_problem() {
            Some(why) => Err(manager::Error::Failed(format!("setting failsafe ports and global settings: {why}"))),
            None => self.install(&permanent),
        };
        if let Err(e) = applied {
            self.cfg = old;
            self.failsafe = old_failsafe;
            self.reconcile();
            return Err(e);
        }
        if let Some(p) = self.policies.pending.take() {
            self.hub.notify(Notice::PolicyRolledBack { revision: p.revision, reason: "reload: the permanent policy set is in force".into() });
        }
        self.policies.sources = Some(permanent.clone());
        self.policies.permanent = permanent;
        self.policies.revision += 1;
        self.dir_problem = None;
        self.save_record();
        self.hub.notify(Notice::PolicyApplied { revision: self.policies.revision });
        tracing::info!(revision = self.policies.revision, "reloaded");
        self.reconcile();
        Ok(())
    }

    /// Warns when flows were dropped because a conntrack map was full,
    /// naming the maps of that direction, their fill and the key to raise.
    fn check_full_maps(&mut self) {
        let counters = match self.dp.counters() {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "reading drop counters"),
        };
        let full = Some(hostfwd_bpf::DropReason::ConntrackFull);
        let now = CONNTRACK_MAPS.map(|(dir, _)| counters.iter().filter(|c| c.reason == full && c.dir == dir).map(|c| c.packets).sum::<u64>());
        if let Some(seen) = self.ct_full_seen {
            for (i, (dir, maps)) in CONNTRACK_MAPS.iter().enumerate() {
                // Counters may have been reset: only growth is news.
                let grew = now[i].saturating_sub(seen[i]);
                if grew == 0 {
                    continue;
                }
                for map in maps {
                    let (used, max) = self.dp.map_fill(map).unwrap_or((0, 0));
                    tracing::warn!(
                        map,
                        entries = used,
                        max_entries = max,
                        key = crate::config::map_size_key(map).unwrap_or("-"),
                        dropped = grew,
                        direction = crate::datapath::dir_name(*dir),
                        "new flows dropped: no conntrack entry could be made (conntrack-full); if this map is near max_entries, raise its key in the configuration"
                    );
                }
            }
        }
        self.ct_full_seen = Some(now);
    }
}

impl Daemon {
    /// Carries out a plan (see [`execute`]), through the fault-injecting
    /// kernel when a test asked for one.
    fn execute(&self, actions: &[Action]) -> execute::Outcome {
        let deps = execute::Deps::from_table(&self.table);
        #[cfg(feature = "testing")]
        if let Some(f) = &self.faults {
            return execute::execute(&crate::datapath::FaultyKernel::new(&self.dp, f.clone()), actions, &deps);
        }
        execute::execute(&self.dp, actions, &deps)
    }
}

/// Test hooks: a daemon driven without netlink or a bus.
#[cfg(feature = "testing")]
impl Daemon {
    /// Replaces the link table (normally kept by the netlink monitor).
    pub fn set_table(&mut self, table: Table) {
        self.table = table;
    }

    /// Makes the chosen kernel operations of every following pass fail.
    pub fn inject_faults(&mut self, faults: Option<crate::datapath::Faults>) {
        self.faults = faults;
    }
}

pub async fn run(cfg: Config, cfg_file: Option<PathBuf>) -> Result<(), AnyError> {
    let dp = Datapath::load(&cfg.datapath()?)?;
    let adopted = dp.adopted();
    let bus = cfg.bus()?;
    let (handle, hub) = manager::channel(Snapshot::starting(dp.mode().name()));
    let mut d = Daemon::new(cfg, cfg_file, dp, hub);
    d.failsafe = d.cfg.failsafe_entries()?.into_iter().collect();

    let mut mon = Monitor::open().await?;
    d.table = mon.dump().await?;
    for p in select::unmatched_patterns(&d.table, &d.select_config()) {
        tracing::warn!(pattern = %p, "configured device matches no link (yet)");
    }
    d.load_policies(adopted);
    // The set loaded is a new revision: one past every revision handed out
    // before (persisted, so a restart never goes backwards).
    if d.policies.sources.is_some() {
        d.policies.revision += 1;
    }
    d.reconcile();
    d.save_record();
    d.publish();
    tasks::spawn_event_reader(d.dp.paths().clone(), d.hub.events.clone());
    tasks::spawn_api(handle.clone(), bus, d.dp.paths().clone());
    tracing::info!(mode = d.dp.mode().name(), audit = d.audit(), links = d.table.len(), "hostfwd running");
    let _ = sd_notify::notify(&[NotifyState::Ready]);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut watchdog = tokio::time::interval(tasks::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let mut full_check = tokio::time::interval(FULL_CHECK);
    let mut pending: Option<Instant> = None;
    let mut periodic = Instant::now() + PERIODIC;
    // Reset by every pass: the check only runs when nothing else did.
    let mut order_check = Instant::now() + ORDER_CHECK;
    // End and duration of the last pass: when the next one may start.
    let mut last_pass = (Instant::now(), Duration::ZERO);
    let next_pass = |last: (Instant, Duration)| {
        let quick = Instant::now() + QUICK;
        quick.max(last.0 + COALESCE.max(last.1))
    };
    loop {
        let deadline = pending.unwrap_or(periodic).min(periodic);
        let confirm_deadline = d.policies.pending.as_ref().map(|p| p.deadline);
        tokio::select! {
            ev = mon.next() => match ev {
                Ok(Event::Change(c)) => {
                    if d.table.apply(c) && pending.is_none() {
                        pending = Some(next_pass(last_pass));
                    }
                }
                Ok(Event::Resync) => {
                    tracing::warn!("netlink overrun: dumping again");
                    let t = mon.dump().await?;
                    d.table.replace(t);
                    pending.get_or_insert(next_pass(last_pass));
                }
                // The stream cannot be trusted any more: start over with a
                // new subscription and a full dump.
                Err(e) => {
                    tracing::error!(error = %e, "netlink monitor failed; reopening");
                    mon = Monitor::open().await?;
                    let t = mon.dump().await?;
                    d.table.replace(t);
                    pending.get_or_insert(next_pass(last_pass));
                }
            },
            _ = sleep_until(deadline) => {
                pending = None;
                let start = Instant::now();
                d.reconcile();
                last_pass = (Instant::now(), start.elapsed());
                periodic = Instant::now() + PERIODIC;
                order_check = Instant::now() + ORDER_CHECK;
            }
            _ = sleep_until(order_check) => {
                if !d.dp.first_on_hooks(d.hooks()) {
                    let start = Instant::now();
                    d.reconcile();
                    last_pass = (Instant::now(), start.elapsed());
                }
                order_check = Instant::now() + ORDER_CHECK;
            }
            Some(req) = d.hub.requests.recv() => d.handle(req),
            _ = sleep_until(confirm_deadline.unwrap_or(periodic)), if confirm_deadline.is_some() => {
                if let Err(e) = d.rollback("not confirmed in time") {
                    tracing::error!(error = %e, "rolling back");
                }
                d.publish();
            }
            _ = hup.recv() => {
                tracing::info!("reload (SIGHUP)");
                let _ = sd_notify::notify(&[NotifyState::Reloading]);
                if let Err(e) = d.reload() {
                    tracing::error!("reload failed, nothing changed:\n{e}");
                }
                d.publish();
                let _ = sd_notify::notify(&[NotifyState::Ready]);
            }
            _ = watchdog.tick() => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
            _ = full_check.tick() => d.check_full_maps(),
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    if d.cfg.detach_on_exit {
        for e in d.dp.teardown() {
            tracing::warn!(error = %e, "teardown");
        }
        tracing::info!("detached everything; exiting");
    } else {
        tracing::info!("exiting; programs stay attached (pinned)");
    }
    Ok(())
}
