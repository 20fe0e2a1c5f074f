//! The daemon's main loop: netlink events update the link table; bursts are
//! coalesced; each reconcile pass computes the desired state from the table
//! and the configuration, reads the actual state back from the kernel, and
//! applies the difference. The reconciler is the only writer to the kernel.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::config::Config;
use crate::datapath::{Datapath, EventReader};
use crate::links::{Ifindex, Table};
use crate::netlink::{Event, Monitor};
use crate::reconcile::{self, Action};
use crate::select::{self, Decision};
use crate::vlan;

/// How long a burst of link events is collected before one reconcile pass.
pub const COALESCE: Duration = Duration::from_millis(25);
/// A full pass even without events, as a safety net.
const PERIODIC: Duration = Duration::from_secs(30);

pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

pub struct Daemon {
    cfg: Config,
    dp: Datapath,
    table: Table,
    decisions: BTreeMap<Ifindex, Decision>,
}

impl Daemon {
    pub fn new(cfg: Config, dp: Datapath) -> Daemon {
        Daemon { cfg, dp, table: Table::new(), decisions: BTreeMap::new() }
    }

    pub fn datapath(&self) -> &Datapath {
        &self.dp
    }

    fn select_config(&self) -> select::SelectConfig {
        select::SelectConfig { devices: self.cfg.devices.clone(), exclude: self.cfg.exclude.clone(), vlan_bypass: self.cfg.vlan_bypass.clone() }
    }

    /// One pass: desired (from the table) vs actual (from the kernel).
    /// Returns the actions taken; errors of single actions are logged and
    /// retried on the next pass.
    pub fn reconcile(&mut self) -> Vec<Action> {
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
        // A link whose configuration could not be written must not get a
        // program (it would pass everything): skip its remaining actions.
        let mut broken = std::collections::BTreeSet::new();
        for a in &actions {
            if a.ifindex().is_some_and(|i| broken.contains(&i)) {
                continue;
            }
            if let Err(e) = self.dp.execute(a) {
                tracing::warn!(action = %a, error = %e, "reconcile action failed; retrying on the next pass");
                if let Action::SetLink(i, _) | Action::AllowVlan(i, _) = a {
                    broken.insert(*i);
                }
            }
        }
        if !actions.is_empty() {
            tracing::debug!(n = actions.len(), "reconciled");
        }
        actions
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
    d.reconcile();
    spawn_event_logger(d.dp.paths().clone());
    tracing::info!(mode = d.dp.mode().name(), audit = d.cfg.audit, links = d.table.len(), "hostfwd running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut pending: Option<Instant> = None;
    let mut periodic = Instant::now() + PERIODIC;
    loop {
        let deadline = pending.unwrap_or(periodic).min(periodic);
        tokio::select! {
            ev = mon.next() => match ev {
                Ok(Event::Change(c)) => {
                    if d.table.apply(c) && pending.is_none() {
                        pending = Some(Instant::now() + COALESCE);
                    }
                }
                Ok(Event::Resync) => {
                    tracing::warn!("netlink overrun: dumping again");
                    let t = mon.dump().await?;
                    d.table.replace(t);
                    pending.get_or_insert(Instant::now() + COALESCE);
                }
                // The stream cannot be trusted any more: start over with a
                // new subscription and a full dump.
                Err(e) => {
                    tracing::error!(error = %e, "netlink monitor failed; reopening");
                    mon = Monitor::open().await?;
                    let t = mon.dump().await?;
                    d.table.replace(t);
                    pending.get_or_insert(Instant::now() + COALESCE);
                }
            },
            _ = sleep_until(deadline) => {
                pending = None;
                periodic = Instant::now() + PERIODIC;
                d.reconcile();
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
