//! The policy lifecycle the main loop drives: the sources in force
//! (permanent files plus runtime changes), compiling and installing them,
//! apply and remove with persistence, the pending confirm and its
//! rollback, reload, and the revision counter and last good set kept under
//! `state_dir`. It writes the policy maps only through
//! [`Datapath::apply_policy`](crate::datapath::Datapath::apply_policy);
//! link and host-wide state are the reconciler's.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::Config;
use crate::manager::{self, ApplyOptions, Notice, Origin};
use crate::policy::cilium::PolicyReport;
use crate::policy::files;
use crate::policy_store::{self as store, Source, Sources};
use crate::state::{self, PolicyRecord};

use super::Daemon;

/// The policy in force and how it came about.
#[derive(Default)]
pub(super) struct Policies {
    /// The files of the policy directory as last read.
    pub(super) permanent: Sources,
    /// The sources in force (permanent plus runtime changes); `None` when
    /// the policy directory was invalid at start and nothing has been
    /// applied since: the policy in the maps is then left as it is.
    pub(super) sources: Option<Sources>,
    /// What the last compile said about each policy.
    pub(super) report: Option<PolicyReport>,
    /// Increments with every change of the policy in force.
    pub(super) revision: u64,
    pub(super) pending: Option<PendingChange>,
    /// The host addresses the installed policy was resolved with (`host`,
    /// `cluster` and `world` depend on them); `None` = install again.
    pub(super) installed_for: Option<BTreeSet<IpAddr>>,
}

/// A change awaiting confirmation.
pub(super) struct PendingChange {
    pub(super) revision: u64,
    pub(super) deadline: Instant,
    pub(super) wall: SystemTime,
    /// The sources to go back to.
    pub(super) previous: Option<Sources>,
    /// Done on confirmation.
    pub(super) persist: Option<PersistOp>,
}

pub(super) enum PersistOp {
    Write(Source),
    Remove(Source),
}

impl Daemon {
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
    pub(super) fn confirmed(&self) -> Option<Sources> {
        match &self.policies.pending {
            Some(p) => p.previous.clone(),
            None => self.policies.sources.clone().filter(|_| self.policies.installed_for.is_some()),
        }
    }

    /// Writes the revision and the last good set to state_dir: before a
    /// change is answered, so a restart never hands out a revision again.
    pub(super) fn save_record(&mut self) {
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
    pub(super) fn install(&mut self, sources: &Sources) -> Result<(), manager::Error> {
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
    pub(super) fn refresh_policy(&mut self) {
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

    pub(super) fn apply_policy(&mut self, name: String, yaml: String, options: ApplyOptions) -> Result<u64, manager::Error> {
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

    pub(super) fn remove_policy(&mut self, name: &str, persist: bool) -> Result<u64, manager::Error> {
        self.busy()?;
        let mut next = self.policies.sources.clone().unwrap_or_default();
        let Some(old) = next.remove(name) else { return Err(manager::Error::NoSuchPolicy(name.to_string())) };
        let persist = persist.then(|| PersistOp::Remove(Source { path: store::file_for(&self.cfg.policy_dir, name, self.policies.permanent.get(name)), ..old }));
        self.change(next, persist, None)
    }

    /// Installs `next`, then persists (unless waiting for confirmation).
    /// Nothing changes on error: a failed write puts the old policy back.
    pub(super) fn change(&mut self, next: Sources, persist: Option<PersistOp>, confirm: Option<Duration>) -> Result<u64, manager::Error> {
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
        self.api.notify(Notice::PolicyApplied { revision });
        Ok(revision)
    }

    pub(super) fn persist(&mut self, op: PersistOp) -> Result<(), manager::Error> {
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

    pub(super) fn confirm(&mut self, revision: u64) -> Result<(), manager::Error> {
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
    pub(super) fn rollback(&mut self, reason: &str) -> Result<u64, manager::Error> {
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
        self.api.notify(Notice::PolicyRolledBack { revision: p.revision, reason: reason.to_string() });
        Ok(self.policies.revision)
    }

    /// Reads the configuration file and the policy directory again. The
    /// policy in force becomes the permanent set (runtime changes end, as
    /// with firewalld). Nothing changes on error.
    pub(super) fn reload(&mut self) -> Result<(), manager::Error> {
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
            self.api.notify(Notice::PolicyRolledBack { revision: p.revision, reason: "reload: the permanent policy set is in force".into() });
        }
        self.policies.sources = Some(permanent.clone());
        self.policies.permanent = permanent;
        self.policies.revision += 1;
        self.dir_problem = None;
        self.save_record();
        self.api.notify(Notice::PolicyApplied { revision: self.policies.revision });
        tracing::info!(revision = self.policies.revision, "reloaded");
        Ok(())
    }
}
