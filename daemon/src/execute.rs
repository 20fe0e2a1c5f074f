//! The executor: carries out a reconcile plan ([`crate::reconcile::plan`])
//! against the kernel and keeps the plan's promises when a step fails.
//!
//! The plan orders its actions so that every intermediate state is safe; a
//! step that fails breaks that argument for the steps that rely on it. So
//! each action's prerequisites are derived from the plan and the link table
//! ([`Deps`]), and an action whose prerequisite failed (or was itself held
//! back) in this pass is held back too. The next pass plans again from the
//! kernel state and repairs. The rules:
//!
//! - Once a link's configuration (`SetLink`, `AllowVlan`) fails, its later
//!   actions are held back: a program must not run on incomplete entries.
//! - `AllowVlan(lower, vid)` waits for the place of that VLAN (the
//!   subinterface, or its bridge) to be configured and attached in both
//!   directions (`SetLink`, `Attach`, `MoveToFront`) and for the local
//!   addresses of the subinterface and its place (`AddLocal`): a tag opens
//!   only towards a guarded device that knows its own addresses. A held
//!   `AllowVlan` does not hold the lower device's other actions: attached
//!   without the VID, the lower device drops the tag (closed, not open).
//! - `Detach` of a device behind a tag waits for that tag's `DisallowVlan`
//!   (cut off on the lower device first); `RemoveLink` waits for the
//!   link's `Detach`es (an attached program without its link entry passes
//!   everything).
//!
//! Attaches wait for an RCU grace period in the kernel, so `Attach` and
//! `MoveToFront` run in parallel batches; a batch finishes before any action
//! that depends on one of its members, or that must see it done, runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use ipnet::IpNet;

use crate::datapath::{self, Datapath};
use crate::links::{LinkKind, Table};
use crate::reconcile::{Action, Actual};
use crate::select::place;

/// The kernel calls the executor needs: the seam where tests inject faults
/// (`datapath::FaultyKernel`, feature `testing`).
pub trait Kernel: Sync {
    fn actual(&self) -> datapath::Result<Actual>;
    fn execute(&self, action: &Action) -> datapath::Result<()>;
}

impl Kernel for Datapath {
    fn actual(&self) -> datapath::Result<Actual> {
        Datapath::actual(self)
    }

    fn execute(&self, action: &Action) -> datapath::Result<()> {
        Datapath::execute(self, action)
    }
}

/// Attaches that may run at once: each tcx/tc attach waits for an RCU grace
/// period in the kernel (~10–20 ms), so a storm of new devices is attached
/// in parallel batches instead of one grace period after another.
pub const PARALLEL_ATTACH: usize = 32;

/// What the link table tells about VLANs, beyond the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deps {
    /// (lower, VID) → the place of that VLAN subinterface (itself, or the
    /// bridge it is a port of) and the host addresses of both.
    pub vlans: BTreeMap<(u32, u16), (u32, BTreeSet<IpNet>)>,
}

impl Deps {
    pub fn from_table(table: &Table) -> Deps {
        let mut vlans = BTreeMap::new();
        for v in table.iter() {
            let LinkKind::Vlan { vid, lower } = v.kind else { continue };
            let Some(p) = place(table, v.ifindex) else { continue };
            let mut addrs: BTreeSet<IpNet> = v.addrs.iter().map(|a| IpNet::from(a.addr())).collect();
            if let Some(pl) = table.get(p) {
                addrs.extend(pl.addrs.iter().map(|a| IpNet::from(a.addr())));
            }
            vlans.insert((lower.get(), vid.get()), (p.get(), addrs));
        }
        Deps { vlans }
    }

    /// Indexes of the earlier actions `actions[k]` relies on, and whether
    /// one of them merely held back (not failed) holds it back too.
    fn of(&self, actions: &[Action], k: usize) -> Vec<(usize, bool)> {
        let before = &actions[..k];
        let find = |pred: &dyn Fn(&Action) -> bool, held_too: bool| -> Vec<(usize, bool)> {
            before.iter().enumerate().filter(|(_, a)| pred(a)).map(|(j, _)| (j, held_too)).collect()
        };
        match actions[k] {
            Action::SetLink(i, _) => find(&|a| matches!(*a, Action::AllowVlan(x, _) if x == i), false),
            Action::Attach(i, _) | Action::MoveToFront(i, _) => {
                let mut v = find(&|a| matches!(*a, Action::SetLink(x, _) if x == i), true);
                v.extend(find(&|a| matches!(*a, Action::AllowVlan(x, _) if x == i), false));
                v
            }
            Action::AllowVlan(lower, vid) => match self.vlans.get(&(lower, vid)) {
                Some((p, addrs)) => {
                    let p = *p;
                    find(
                        &|a| match *a {
                            Action::SetLink(x, _) | Action::Attach(x, _) | Action::MoveToFront(x, _) => x == p,
                            Action::AddLocal(n) => addrs.contains(&n),
                            _ => false,
                        },
                        true,
                    )
                }
                None => Vec::new(),
            },
            Action::Detach(i, _) => {
                let behind: BTreeSet<(u32, u16)> = self.vlans.iter().filter(|(_, (p, _))| *p == i).map(|(k, _)| *k).collect();
                find(&|a| matches!(*a, Action::DisallowVlan(lo, v) if behind.contains(&(lo, v))), true)
            }
            Action::RemoveLink(i) => find(&|a| matches!(*a, Action::Detach(x, _) if x == i), true),
            Action::AddLocal(_) | Action::RemoveLocal(_) | Action::DisallowVlan(..) => Vec::new(),
        }
    }
}

/// An action the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub action: Action,
    pub error: String,
}

/// An action not tried because a step it relies on failed in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub action: Action,
    /// The failed action at the root of it.
    pub because: Action,
}

/// What a pass did not do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub failed: Vec<Failed>,
    pub held: Vec<Held>,
}

impl Outcome {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.held.is_empty()
    }

    /// Links with a failed or held-back action: not as configured.
    pub fn links(&self) -> BTreeSet<u32> {
        let failed = self.failed.iter().map(|f| f.action);
        failed.chain(self.held.iter().map(|h| h.action)).filter_map(|a| a.ifindex()).collect()
    }

    /// Failed local-set writes: traffic to those addresses passes unjudged.
    pub fn local_failed(&self) -> usize {
        self.failed.iter().filter(|f| f.action.ifindex().is_none()).count()
    }

    /// One line per failed or held-back action, naming the link (`name`
    /// maps an ifindex to its name), the action and the error.
    pub fn problems(&self, name: impl Fn(u32) -> String) -> Vec<String> {
        let link = |a: &Action| a.ifindex().map(|i| format!("link {} (ifindex {i}): ", name(i))).unwrap_or_default();
        let mut out = Vec::new();
        for f in &self.failed {
            let unjudged = if f.action.ifindex().is_none() { " (traffic to it passes unjudged)" } else { "" };
            out.push(format!("{}{} failed{unjudged}: {}; retrying", link(&f.action), f.action, f.error));
        }
        for h in &self.held {
            out.push(format!("{}{} held back: {}{} failed; retrying", link(&h.action), h.action, link(&h.because), h.because));
        }
        out
    }
}

#[derive(Clone, Copy)]
enum Status {
    Done,
    Failed,
    /// Held back; the index of the failed action at the root.
    Held(usize),
}

/// Carries out `actions` (a plan, in its order) on `kernel`, holding back
/// every action whose prerequisite failed (see the module documentation).
pub fn execute<K: Kernel + ?Sized>(kernel: &K, actions: &[Action], deps: &Deps) -> Outcome {
    let mut status: Vec<Option<Status>> = vec![None; actions.len()];
    let errors: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());
    // A link whose configuration failed gets nothing more this pass.
    let mut broken: BTreeMap<u32, usize> = BTreeMap::new();
    let mut batch: Vec<usize> = Vec::new();
    for k in 0..actions.len() {
        let a = &actions[k];
        let pre = deps.of(actions, k);
        let flush = !matches!(a, Action::Attach(..) | Action::MoveToFront(..) | Action::SetLink(..) | Action::AddLocal(..))
            || pre.iter().any(|(j, _)| batch.contains(j));
        if flush {
            run_batch(kernel, actions, std::mem::take(&mut batch), &mut status, &errors);
        }
        let root = a.ifindex().and_then(|i| broken.get(&i).copied()).or_else(|| {
            pre.iter().find_map(|&(j, held_too)| match status[j] {
                Some(Status::Failed) => Some(j),
                Some(Status::Held(r)) if held_too => Some(r),
                _ => None,
            })
        });
        if let Some(r) = root {
            tracing::warn!(action = %a, because = %actions[r], "reconcile action held back; retrying on the next pass");
            status[k] = Some(Status::Held(r));
            continue;
        }
        if let Action::Attach(..) | Action::MoveToFront(..) = a {
            batch.push(k);
            continue;
        }
        status[k] = Some(run_one(kernel, actions, k, &errors));
        if let (Some(Status::Failed), Action::SetLink(i, _) | Action::AllowVlan(i, _)) = (status[k], a) {
            broken.entry(*i).or_insert(k);
        }
    }
    run_batch(kernel, actions, batch, &mut status, &errors);
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Outcome::default();
    for (k, s) in status.iter().enumerate() {
        match s {
            Some(Status::Failed) => out.failed.push(Failed { action: actions[k], error: errors.remove(&k).unwrap_or_default() }),
            Some(Status::Held(r)) => out.held.push(Held { action: actions[k], because: actions[*r] }),
            Some(Status::Done) | None => {}
        }
    }
    out
}

fn run_one<K: Kernel + ?Sized>(kernel: &K, actions: &[Action], k: usize, errors: &Mutex<BTreeMap<usize, String>>) -> Status {
    let a = &actions[k];
    match kernel.execute(a) {
        Ok(()) => Status::Done,
        Err(e) => {
            // A local address the datapath does not know is one whose
            // traffic passes unjudged: louder than a link's retry.
            if a.ifindex().is_none() {
                tracing::error!(action = %a, error = %e, "reconcile action failed; retrying on the next pass");
            } else {
                tracing::warn!(action = %a, error = %e, "reconcile action failed; retrying on the next pass");
            }
            errors.lock().unwrap_or_else(|p| p.into_inner()).insert(k, e.to_string());
            Status::Failed
        }
    }
}

fn run_batch<K: Kernel + ?Sized>(kernel: &K, actions: &[Action], batch: Vec<usize>, status: &mut [Option<Status>], errors: &Mutex<BTreeMap<usize, String>>) {
    for chunk in batch.chunks(PARALLEL_ATTACH) {
        let results: Vec<(usize, Status)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|&k| (k, s.spawn(move || run_one(kernel, actions, k, errors)))).collect();
            // A panicking kernel call counts as failed.
            handles.into_iter().map(|(k, h)| (k, h.join().unwrap_or(Status::Failed))).collect()
        });
        for (k, st) in results {
            status[k] = Some(st);
        }
    }
}
