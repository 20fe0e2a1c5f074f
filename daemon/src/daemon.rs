//! The daemon's main loop: netlink events update the link table; bursts are
//! coalesced; each reconcile pass computes the desired state from the table
//! and the configuration, reads the actual state back from the kernel, and
//! applies the difference. The reconciler is the only writer to the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::{sleep_until, Instant};

use crate::config::{Config, DatapathConfig as _};
use crate::datapath::{AttachMode, Datapath, Direction};
use crate::execute;
use crate::links::{Ifindex, LinkKind, Table};
use crate::manager::{self, LoopEnd, LinkInfo, Notice, Origin, Pending, PolicyInfo, Request, Snapshot, State};
use crate::netlink::{Event, Monitor};
use crate::reconcile::{self, Action, HookProg};
use crate::select::{self, Decision};
use crate::state::{self, Persisted, PolicyRecord};
use crate::tasks;
use crate::vlan;

mod lifecycle;
use lifecycle::Policies;

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

pub struct Daemon {
    cfg: Config,
    /// The file the configuration came from (read again on reload).
    cfg_file: Option<PathBuf>,
    dp: Datapath,
    api: LoopEnd,
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
    pub fn new(cfg: Config, cfg_file: Option<PathBuf>, dp: Datapath, api: LoopEnd) -> Daemon {
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
            api,
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
                    self.api.notify(Notice::LinkRoleChanged { ifindex: *i, name: name.to_string(), role: d.role.name().to_string(), reason: d.reason.clone() });
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
        self.api.publish(s);
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
    let (handle, api) = manager::channel(Snapshot::starting(dp.mode().name()));
    let mut d = Daemon::new(cfg, cfg_file, dp, api);
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
    tasks::spawn_event_reader(d.dp.paths().clone(), d.api.events.clone());
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
            Some(req) = d.api.requests.recv() => d.handle(req),
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
