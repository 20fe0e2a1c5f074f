//! The daemon's main loop: netlink events update the link table; bursts are
//! coalesced; each reconcile pass computes the desired state from the table
//! and the configuration, reads the actual state back from the kernel, and
//! applies the difference. The reconciler is the only writer to the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::config::Config;
use crate::datapath::{Datapath, EventReader};
use crate::links::{Ifindex, Table};
use crate::netlink::{Event, Monitor};
use crate::policy::cilium::Policy;
use crate::policy::entities::EntityContext;
use crate::policy::files;
use crate::reconcile::{self, Action};
use crate::select::{self, Decision};
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

pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

pub struct Daemon {
    cfg: Config,
    dp: Datapath,
    table: Table,
    decisions: BTreeMap<Ifindex, Decision>,
    /// The permanent policy set, when the policy directory exists (without
    /// one, the policy in the maps is left as it is).
    policies: Option<Vec<Policy>>,
    /// The host addresses the policy in force was resolved with (`host`,
    /// `cluster` and `world` depend on them).
    policy_host_addrs: Option<BTreeSet<IpAddr>>,
}

impl Daemon {
    pub fn new(cfg: Config, dp: Datapath) -> Daemon {
        Daemon { cfg, dp, table: Table::new(), decisions: BTreeMap::new(), policies: None, policy_host_addrs: None }
    }

    /// Reads the policy directory. An invalid set changes nothing: the
    /// policy in force stays, and every error is logged with its position.
    pub fn load_policies(&mut self) {
        let dir = self.cfg.policy_dir.clone();
        if !dir.is_dir() {
            tracing::info!(dir = %dir.display(), "no policy directory: the policy in the maps stays as it is");
            return;
        }
        match files::policy_files(&dir).and_then(|f| files::load(&f)) {
            Ok(p) => {
                tracing::info!(dir = %dir.display(), policies = p.len(), "policies loaded");
                self.policies = Some(p);
                self.policy_host_addrs = None;
            }
            Err(e) => tracing::error!(dir = %dir.display(), "policy set rejected, the policy in force stays:\n{e}"),
        }
    }

    /// Compiles the permanent set for the current host addresses and
    /// installs it (one atomic swap), when it or the addresses changed.
    fn apply_policies(&mut self) {
        let Some(policies) = &self.policies else { return };
        let host_addrs = self.table.host_addrs();
        if self.policy_host_addrs.as_ref() == Some(&host_addrs) {
            return;
        }
        let ctx = EntityContext { host_addrs: host_addrs.clone(), node_cidrs: self.cfg.node_cidrs.clone(), cluster_cidrs: self.cfg.cluster_cidrs.clone() };
        let compiled = match files::compile_for_node(policies, &ctx, &self.cfg.node_labels) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "compiling the policies; the policy in force stays");
                return;
            }
        };
        for p in &compiled.report.policies {
            tracing::info!(policy = %p.name, active = p.active(), "{}", p.summary());
        }
        match self.dp.apply_policy(&compiled.image) {
            Ok(generation) => {
                tracing::info!(generation, identities = compiled.image.identities.len(), rules = compiled.image.rules.len(), "policy applied");
                self.policy_host_addrs = Some(host_addrs);
            }
            Err(e) => tracing::error!(error = %e, "installing the policy; retrying on the next pass"),
        }
    }

    fn select_config(&self) -> select::SelectConfig {
        select::SelectConfig { devices: self.cfg.devices.clone(), exclude: self.cfg.exclude.clone(), vlan_bypass: self.cfg.vlan_bypass.clone() }
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
            }
        }
        let sets = vlan::allowed(&self.table, &decisions, &self.cfg.vlan_bypass);
        let desired = reconcile::desired(&self.table, &decisions, &sets, &reconcile::GlobalInputs::default(), self.dp.prog_ids());
        self.decisions = decisions;
        let actual = match self.dp.actual() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "reading the kernel state");
                return Vec::new();
            }
        };
        let actions = reconcile::plan(&desired, &actual);
        self.execute(&actions);
        self.apply_policies();
        if !actions.is_empty() {
            tracing::debug!(n = actions.len(), ms = t0.elapsed().as_secs_f64() * 1e3, "reconciled");
        }
        actions
    }
}

/// Attaches that may run at once: each tcx/tc attach waits for an RCU grace
/// period in the kernel (~10–20 ms), so a storm of new devices is attached
/// in parallel batches instead of one grace period after another.
const PARALLEL_ATTACH: usize = 32;

impl Daemon {
    /// Carries out a plan in its order, except that attaches are collected
    /// and run in parallel until the next action that must see them done
    /// (a VLAN tag opened or closed on a lower device, a detach, a removal).
    /// Setting a link's configuration and adding host addresses need no
    /// attach to have happened, so they do not wait.
    fn execute(&self, actions: &[Action]) {
        // A link whose configuration could not be written must not get a
        // program (it would pass everything): skip its remaining actions.
        let mut broken = std::collections::BTreeSet::new();
        let mut batch: Vec<&Action> = Vec::new();
        for a in actions {
            if a.ifindex().is_some_and(|i| broken.contains(&i)) {
                continue;
            }
            match a {
                Action::Attach(..) => {
                    batch.push(a);
                    continue;
                }
                Action::SetLink(..) | Action::AddHostAddr(..) => {}
                _ => self.run_parallel(std::mem::take(&mut batch)),
            }
            if let Err(e) = self.dp.execute(a) {
                tracing::warn!(action = %a, error = %e, "reconcile action failed; retrying on the next pass");
                if let Action::SetLink(i, _) | Action::AllowVlan(i, _) = a {
                    broken.insert(*i);
                }
            }
        }
        self.run_parallel(batch);
    }

    fn run_parallel(&self, batch: Vec<&Action>) {
        for chunk in batch.chunks(PARALLEL_ATTACH) {
            std::thread::scope(|s| {
                for a in chunk {
                    s.spawn(move || {
                        if let Err(e) = self.dp.execute(a) {
                            tracing::warn!(action = %a, error = %e, "reconcile action failed; retrying on the next pass");
                        }
                    });
                }
            });
        }
    }
}

/// Logs drop events from the ring buffer (its own thread: the reader polls).
fn spawn_event_logger(paths: crate::datapath::Paths) {
    std::thread::spawn(move || {
        let reader = match EventReader::open(&paths) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "event reader");
                return;
            }
        };
        loop {
            match reader.poll(Duration::from_millis(500)) {
                Ok(events) => {
                    for e in events {
                        tracing::info!(target: "hostfwd::event", event = %serde_json::to_string(&e).unwrap_or_default(), "drop");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "event reader");
                    return;
                }
            }
        }
    });
}

pub async fn run(cfg: Config) -> Result<(), AnyError> {
    let dp = Datapath::load(&cfg.datapath()?)?;
    dp.set_global(cfg.settings())?;
    dp.set_failsafe(&cfg.failsafe_entries()?)?;
    let detach_on_exit = cfg.detach_on_exit;
    let mut d = Daemon::new(cfg, dp);

    let mut mon = Monitor::open().await?;
    d.table = mon.dump().await?;
    for p in select::unmatched_patterns(&d.table, &d.select_config()) {
        tracing::warn!(pattern = %p, "configured device matches no link (yet)");
    }
    d.load_policies();
    d.reconcile();
    spawn_event_logger(d.dp.paths().clone());
    tracing::info!(mode = d.dp.mode().name(), audit = d.cfg.audit, links = d.table.len(), "hostfwd running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut pending: Option<Instant> = None;
    let mut periodic = Instant::now() + PERIODIC;
    // End and duration of the last pass: when the next one may start.
    let mut last_pass = (Instant::now(), Duration::ZERO);
    let next_pass = |last: (Instant, Duration)| {
        let quick = Instant::now() + QUICK;
        quick.max(last.0 + COALESCE.max(last.1))
    };
    loop {
        let deadline = pending.unwrap_or(periodic).min(periodic);
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
            }
            _ = hup.recv() => {
                tracing::info!("reload");
                d.load_policies();
                d.apply_policies();
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    if detach_on_exit {
        for e in d.dp.teardown() {
            tracing::warn!(error = %e, "teardown");
        }
        tracing::info!("detached everything; exiting");
    } else {
        tracing::info!("exiting; programs stay attached (pinned)");
    }
    Ok(())
}
