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
//!   only towards a guarded device that knows its own addresses. A `SetLink`
//!   that lets every tag through (`L_VLAN_ALLOW_ALL`) waits for every VLAN
//!   of that device alike. A held `AllowVlan` does not hold the lower
//!   device's other actions: attached without the VID, the lower device
//!   drops the tag (closed, not open).
//! - `Detach` of a device behind a tag waits for that tag's `DisallowVlan`
//!   and for the lower device's own configuration and attach in this pass
//!   (cut off on the lower device first); the ingress `Detach` of a lower
//!   device (every tag passes after it) waits for its VLANs as `AllowVlan`s
//!   do; the `Detach` of a port waits for the link that receives its
//!   traffic now (its bond or bridge) to be configured and attached.
//! - `RemoveLink` waits for the link's `Detach`es (an attached program
//!   without its link entry passes everything).
//! - `Attach` and `MoveToFront` wait for `SetGlobal` and `AddFailsafe` of
//!   this pass: a program never starts without its audit switch and
//!   failsafe ports.
//! - After a failed attach, the state is read back and every tag still open
//!   towards a device without programs in both directions is closed (a
//!   close that failed earlier, then a new device with the same VID: the
//!   plan has no `AllowVlan` to hold back). The next pass opens it again
//!   once the device is attached.
//!
//! Attaches wait for an RCU grace period in the kernel, so `Attach` and
//! `MoveToFront` run in parallel batches; a batch finishes before any action
//! that depends on one of its members, or that must see it done, runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use ipnet::IpNet;

use crate::datapath::Direction;
use crate::links::{LinkKind, Table};
use crate::reconcile::Action;
use crate::select::receiving_link;

pub use crate::datapath::Kernel;

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
    /// Port → the link that receives its traffic (its bond or bridge, or
    /// theirs), for every link received elsewhere.
    pub receivers: BTreeMap<u32, u32>,
}

impl Deps {
    pub fn from_table(table: &Table) -> Deps {
        let mut vlans = BTreeMap::new();
        let mut receivers = BTreeMap::new();
        for x in table.iter() {
            if let Some(r) = receiving_link(table, x.ifindex).filter(|r| *r != x.ifindex) {
                receivers.insert(x.ifindex.get(), r.get());
            }
        }
        for v in table.iter() {
            let LinkKind::Vlan { vid, lower } = v.kind else { continue };
            let Some(p) = receiving_link(table, v.ifindex) else { continue };
            let mut addrs: BTreeSet<IpNet> = v.addrs.iter().map(|a| IpNet::from(a.addr())).collect();
            if let Some(pl) = table.get(p) {
                addrs.extend(pl.addrs.iter().map(|a| IpNet::from(a.addr())));
            }
            vlans.insert((lower.get(), vid.get()), (p.get(), addrs));
        }
        Deps { vlans, receivers }
    }
}

/// The plan's actions by what they concern, and the VLANs by lower device
/// and by place: each action's prerequisites are found without scanning
/// the plan (a storm of a thousand VLANs is a plan of thousands).
struct Index<'a> {
    deps: &'a Deps,
    /// lower → (place, addresses) of each of its VLANs.
    by_lower: BTreeMap<u32, Vec<&'a (u32, BTreeSet<IpNet>)>>,
    /// place → the tags (lower, VID) leading to it.
    behind: BTreeMap<u32, Vec<(u32, u16)>>,
    set_link: BTreeMap<u32, Vec<usize>>,
    allow: BTreeMap<u32, Vec<usize>>,
    /// `Attach` and `MoveToFront`.
    attach: BTreeMap<u32, Vec<usize>>,
    detach: BTreeMap<u32, Vec<usize>>,
    disallow: BTreeMap<(u32, u16), Vec<usize>>,
    add_local: BTreeMap<IpNet, Vec<usize>>,
    /// `SetGlobal` and `AddFailsafe`.
    host_wide: Vec<usize>,
}

impl<'a> Index<'a> {
    fn new(deps: &'a Deps, actions: &[Action]) -> Index<'a> {
        let mut ix = Index {
            deps,
            by_lower: BTreeMap::new(),
            behind: BTreeMap::new(),
            set_link: BTreeMap::new(),
            allow: BTreeMap::new(),
            attach: BTreeMap::new(),
            detach: BTreeMap::new(),
            disallow: BTreeMap::new(),
            add_local: BTreeMap::new(),
            host_wide: Vec::new(),
        };
        for (&(lower, vid), g) in &deps.vlans {
            ix.by_lower.entry(lower).or_default().push(g);
            ix.behind.entry(g.0).or_default().push((lower, vid));
        }
        for (k, a) in actions.iter().enumerate() {
            match *a {
                Action::SetLink(i, _) => ix.set_link.entry(i).or_default().push(k),
                Action::AllowVlan(i, _) => ix.allow.entry(i).or_default().push(k),
                Action::Attach(i, _) | Action::MoveToFront(i, _) => ix.attach.entry(i).or_default().push(k),
                Action::Detach(i, _) => ix.detach.entry(i).or_default().push(k),
                Action::DisallowVlan(i, v) => ix.disallow.entry((i, v)).or_default().push(k),
                Action::AddLocal(n) => ix.add_local.entry(n).or_default().push(k),
                Action::SetGlobal(_) | Action::AddFailsafe(_) => ix.host_wide.push(k),
                Action::RemoveLink(_) | Action::RemoveLocal(_) | Action::RemoveFailsafe(_) => {}
            }
        }
        ix
    }

    /// Indexes of the earlier actions `actions[k]` relies on, and whether
    /// one of them merely held back (not failed) holds it back too.
    fn prerequisites(&self, actions: &[Action], k: usize) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        let mut add = |list: Option<&Vec<usize>>, held_too: bool| out.extend(list.into_iter().flatten().filter(|j| **j < k).map(|j| (*j, held_too)));
        // What a tag towards a place waits for: the place configured and
        // attached, the addresses of the VLAN and its place known.
        let guarded = |add: &mut dyn FnMut(Option<&Vec<usize>>, bool), (place, addrs): &(u32, BTreeSet<IpNet>)| {
            add(self.set_link.get(place), true);
            add(self.attach.get(place), true);
            for n in addrs {
                add(self.add_local.get(n), true);
            }
        };
        let vlans_of = |lower: u32| self.by_lower.get(&lower).into_iter().flatten();
        match actions[k] {
            Action::SetLink(i, flags) => {
                add(self.allow.get(&i), false);
                // Every tag passes: as an AllowVlan of each.
                if flags & hostfwd_bpf::layout::L_VLAN_ALLOW_ALL != 0 {
                    vlans_of(i).for_each(|g| guarded(&mut add, g));
                }
            }
            Action::Attach(i, _) | Action::MoveToFront(i, _) => {
                // A program starts with its audit switch and failsafe ports
                // in place (an unwritten hf_global would mean enforcing).
                add(Some(&self.host_wide), false);
                add(self.set_link.get(&i), true);
                add(self.allow.get(&i), false);
            }
            Action::AllowVlan(lower, vid) => {
                if let Some(g) = self.deps.vlans.get(&(lower, vid)) {
                    guarded(&mut add, g);
                }
            }
            Action::Detach(i, dir) => {
                // The tags towards i are closed first: on lower devices
                // configured and attached in this pass, if they are.
                for &(lower, vid) in self.behind.get(&i).into_iter().flatten() {
                    add(self.disallow.get(&(lower, vid)), true);
                    add(self.set_link.get(&lower), true);
                    add(self.attach.get(&lower), true);
                }
                // A port newly enslaved: its receiving link takes over
                // first (as the plan orders it).
                if let Some(r) = self.deps.receivers.get(&i) {
                    add(self.set_link.get(r), true);
                    add(self.attach.get(r), true);
                }
                // Without its ingress program a lower device lets every tag
                // through: as an AllowVlan of each.
                if dir == Direction::Ingress {
                    vlans_of(i).for_each(|g| guarded(&mut add, g));
                }
            }
            Action::RemoveLink(i) => add(self.detach.get(&i), true),
            Action::AddLocal(_) | Action::RemoveLocal(_) | Action::DisallowVlan(..) => {}
            Action::SetGlobal(_) | Action::AddFailsafe(_) | Action::RemoveFailsafe(_) => {}
        }
        out
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
    /// Tags closed after the pass because the device behind them is not
    /// attached (`action` the `DisallowVlan`, `because` the failed attach).
    pub closed: Vec<Held>,
}

impl Outcome {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.held.is_empty() && self.closed.is_empty()
    }

    /// Links not running as configured: a failed or held-back action. A
    /// lower device whose `AllowVlan` alone waits is not one of them: it
    /// is attached and configured, only that tag stays closed (its problem
    /// says why).
    pub fn links(&self) -> BTreeSet<u32> {
        let failed = self.failed.iter().map(|f| f.action);
        let held = self.held.iter().map(|h| h.action).filter(|a| !matches!(a, Action::AllowVlan(..)));
        failed.chain(held).filter_map(|a| a.ifindex()).collect()
    }

    /// Failed local-set writes: traffic to those addresses passes unjudged.
    pub fn local_failed(&self) -> usize {
        self.failed.iter().filter(|f| matches!(f.action, Action::AddLocal(_))).count()
    }

    /// One line per failed or held-back action, naming the link (`name`
    /// maps an ifindex to its name), the action and the error.
    pub fn problems(&self, name: impl Fn(u32) -> String) -> Vec<String> {
        let link = |a: &Action| a.ifindex().map(|i| format!("link {} (ifindex {i}): ", name(i))).unwrap_or_default();
        self.lines(|_| true, |a| format!("{}{a}", link(a)), link)
    }

    /// The problems of one link, without its name (for that link's own
    /// report); `name` names the links of the failed steps.
    pub fn link_problems(&self, ifindex: u32, name: impl Fn(u32) -> String) -> Vec<String> {
        let link = |a: &Action| a.ifindex().map(|i| format!("link {} (ifindex {i}): ", name(i))).unwrap_or_default();
        self.lines(|a| a.ifindex() == Some(ifindex), |a| a.to_string(), link)
    }

    fn lines(&self, pick: impl Fn(&Action) -> bool, what: impl Fn(&Action) -> String, link: impl Fn(&Action) -> String) -> Vec<String> {
        let mut out = Vec::new();
        for f in self.failed.iter().filter(|f| pick(&f.action)) {
            let unjudged = if matches!(f.action, Action::AddLocal(_)) { " (traffic to it passes unjudged)" } else { "" };
            out.push(format!("{} failed{unjudged}: {}; retrying", what(&f.action), f.error));
        }
        for h in self.held.iter().filter(|h| pick(&h.action)) {
            out.push(format!("{} held back: {}{} failed; retrying", what(&h.action), link(&h.because), h.because));
        }
        for h in self.closed.iter().filter(|h| pick(&h.action)) {
            out.push(format!("{} done, the tag was open towards a device that is not attached ({}{} failed); retrying", what(&h.action), link(&h.because), h.because));
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
    let ix = Index::new(deps, actions);
    let mut batch: Vec<usize> = Vec::new();
    let mut in_batch = vec![false; actions.len()];
    for k in 0..actions.len() {
        let a = &actions[k];
        let pre = ix.prerequisites(actions, k);
        let flush = !matches!(a, Action::Attach(..) | Action::MoveToFront(..) | Action::SetLink(..) | Action::AddLocal(..))
            || pre.iter().any(|(j, _)| in_batch[*j]);
        if flush {
            batch.iter().for_each(|j| in_batch[*j] = false);
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
            in_batch[k] = true;
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
    close_unguarded(kernel, deps, &mut out);
    out
}

/// After a failed attach: a tag that was already open (the plan had no
/// `AllowVlan` to hold back, e.g. its earlier close failed and a new device
/// took the VID) must not stay open towards a device without programs.
/// Read back, and close every such tag; the next pass opens it again once
/// the device is attached.
fn close_unguarded<K: Kernel + ?Sized>(kernel: &K, deps: &Deps, out: &mut Outcome) {
    let attaches: Vec<Action> = out.failed.iter().map(|f| f.action).filter(|a| matches!(a, Action::Attach(..) | Action::MoveToFront(..))).collect();
    let Some(&first) = attaches.first() else { return };
    let actual = match kernel.actual() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "reading the kernel state after a failed attach");
            return;
        }
    };
    for (&(lower, vid), (place, _)) in &deps.vlans {
        let unguarded = Direction::ALL.iter().any(|d| !actual.attachments.contains_key(&(*place, *d)));
        if !actual.vlans.contains(&(lower, vid)) || !unguarded {
            continue;
        }
        let close = Action::DisallowVlan(lower, vid);
        let because = attaches.iter().copied().find(|a| a.ifindex() == Some(*place)).unwrap_or(first);
        match kernel.execute(&close) {
            Ok(()) => {
                tracing::warn!(action = %close, because = %because, "closed a tag open towards a device that is not attached");
                out.closed.push(Held { action: close, because });
            }
            Err(e) => {
                tracing::error!(action = %close, error = %e, "closing a tag open towards a device that is not attached");
                out.failed.push(Failed { action: close, error: e.to_string() });
            }
        }
    }
}

fn run_one<K: Kernel + ?Sized>(kernel: &K, actions: &[Action], k: usize, errors: &Mutex<BTreeMap<usize, String>>) -> Status {
    let a = &actions[k];
    match kernel.execute(a) {
        Ok(()) => Status::Done,
        Err(e) => {
            // A local address the datapath does not know is one whose
            // traffic passes unjudged, and a host-wide setting concerns
            // every link: louder than a link's retry.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath;
    use crate::reconcile::Actual;
    use crate::datapath::Direction::{Egress as Eg, Ingress as In};
    use crate::reconcile::tests::{materialize, mutate, open_paths, pipeline, pos, random_cfg, random_topo, step, unconfigured, PROGS};
    use crate::reconcile::plan;
    use crate::select::topo::*;
    use hostfwd_policy::test_rng::Rng;

    /// The kernel as the plan's model has it; `fail` are refused.
    struct Model {
        state: Mutex<Actual>,
        fail: BTreeSet<Action>,
        calls: Mutex<Vec<Action>>,
    }

    impl Model {
        fn new(state: Actual, fail: impl IntoIterator<Item = Action>) -> Model {
            Model { state: Mutex::new(state), fail: fail.into_iter().collect(), calls: Mutex::new(Vec::new()) }
        }
        fn state(&self) -> Actual {
            self.state.lock().unwrap().clone()
        }
    }

    impl Kernel for Model {
        fn actual(&self) -> datapath::Result<Actual> {
            Ok(self.state())
        }
        fn execute(&self, a: &Action) -> datapath::Result<()> {
            self.calls.lock().unwrap().push(*a);
            if self.fail.contains(a) {
                return Err(datapath::Error::MapUpdate { map: "hf_links", source: libbpf_rs::Error::from_raw_os_error(libc::ENOSPC) });
            }
            step(&mut self.state.lock().unwrap(), a, PROGS);
            Ok(())
        }
    }

    const ENF: u32 = hostfwd_bpf::layout::L_ENFORCE_INGRESS | hostfwd_bpf::layout::L_ENFORCE_EGRESS;

    #[test]
    fn a_failed_attach_in_the_batch_keeps_the_tag_closed() {
        let t = Topo::reference();
        let c = cfg(&["bond0"], &[], &[]);
        let d = pipeline(&t, &c, &[]);
        let p = plan(&d, &Actual::default());
        let k = Model::new(Actual::default(), [Action::Attach(5, Eg)]);
        let out = execute(&k, &p, &Deps::from_table(&t.t));
        assert_eq!(out.failed.iter().map(|f| f.action).collect::<Vec<_>>(), vec![Action::Attach(5, Eg)]);
        assert_eq!(out.held, vec![Held { action: Action::AllowVlan(4, 1000), because: Action::Attach(5, Eg) }]);
        // The lower device is attached without the tag: closed, not open.
        let s = k.state();
        assert!(!s.vlans.contains(&(4, 1000)));
        assert_eq!((s.links.get(&4), s.attachments.get(&(4, In))), (Some(&ENF), Some(&PROGS.0)));
        let calls = k.calls.lock().unwrap().clone();
        assert!(!calls.contains(&Action::AllowVlan(4, 1000)));
        assert_eq!(out.links(), [5].into(), "bond0 runs as configured but for the tag");
        let problems = out.problems(|i| format!("if{i}"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].starts_with("link if4 (ifindex 4): allow VLAN 1000 on link 4 held back: link if5 (ifindex 5): attach egress on link 5 failed"), "{problems:?}");
        // The next pass repairs.
        let out = execute(&Model::new(s.clone(), []), &plan(&d, &s), &Deps::from_table(&t.t));
        assert!(out.is_clean());
    }

    #[test]
    fn a_tag_already_open_towards_a_device_whose_attach_fails_is_closed() {
        // bond0.1000 (5) lost its programs while VID 1000 stayed open on
        // bond0 (4): a close that failed, then a new device with the VID.
        let t = Topo::reference();
        let d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
        let mut a = materialize(&d);
        a.attachments.retain(|(i, _), _| *i != 5);
        let p = plan(&d, &a);
        assert!(!p.iter().any(|x| matches!(x, Action::AllowVlan(..))), "nothing to hold back: {p:?}");
        let k = Model::new(a, [Action::Attach(5, Eg)]);
        let out = execute(&k, &p, &Deps::from_table(&t.t));
        assert_eq!(out.closed, vec![Held { action: Action::DisallowVlan(4, 1000), because: Action::Attach(5, Eg) }]);
        assert!(!k.state().vlans.contains(&(4, 1000)));
        assert!(out.problems(|i| format!("if{i}")).iter().any(|l| l.contains("disallow VLAN 1000 on link 4 done")), "{out:?}");
        // Attached on the next pass, the tag opens again.
        let s = k.state();
        let p = plan(&d, &s);
        assert!(pos(&p, Action::Attach(5, Eg)) < pos(&p, Action::AllowVlan(4, 1000)));
        assert!(execute(&Model::new(s, []), &p, &Deps::from_table(&t.t)).is_clean());
    }

    #[test]
    fn no_program_starts_without_its_global_settings_and_failsafe_ports() {
        let t = Topo::reference();
        let mut d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
        d.global.audit = false;
        d.failsafe = [(In, 6, 22)].into();
        let p = plan(&d, &Actual::default());
        for fail in [Action::SetGlobal(d.global), Action::AddFailsafe((In, 6, 22))] {
            let k = Model::new(Actual::default(), [fail]);
            let out = execute(&k, &p, &Deps::from_table(&t.t));
            assert!(k.state().attachments.is_empty(), "{fail}: {out:?}");
            assert!(out.held.iter().filter(|h| matches!(h.action, Action::Attach(..))).all(|h| h.because == fail));
            assert_eq!(out.held.iter().filter(|h| matches!(h.action, Action::Attach(..))).count(), 4, "{fail}: {out:?}");
            let s = k.state();
            assert!(execute(&Model::new(s.clone(), []), &plan(&d, &s), &Deps::from_table(&t.t)).is_clean());
        }
    }

    #[test]
    fn a_failed_configuration_holds_its_link_and_a_failed_detach_its_entry() {
        let t = Topo::reference();
        let d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
        let p = plan(&d, &Actual::default());
        let k = Model::new(Actual::default(), [Action::SetLink(5, ENF)]);
        let out = execute(&k, &p, &Deps::from_table(&t.t));
        let held: Vec<Action> = out.held.iter().map(|h| h.action).collect();
        assert_eq!(held, vec![Action::Attach(5, In), Action::Attach(5, Eg), Action::AllowVlan(4, 1000)]);
        assert!(out.held.iter().all(|h| h.because == Action::SetLink(5, ENF)));
        assert!(unconfigured(&k.state()).is_empty());

        // Excluding bond0.1000: its tag closes first; a failed close keeps
        // it attached, a failed detach keeps its entry.
        let full = materialize(&d);
        let d2 = pipeline(&t, &cfg(&["bond0"], &["bond0.1000"], &[]), &[]);
        let p2 = plan(&d2, &full);
        for fail in [Action::DisallowVlan(4, 1000), Action::Detach(5, In)] {
            let k = Model::new(full.clone(), [fail]);
            let out = execute(&k, &p2, &Deps::from_table(&t.t));
            let s = k.state();
            assert!(unconfigured(&s).is_empty(), "{fail}: {s:?}");
            assert!(open_paths(&t.t, &s).is_empty(), "{fail}: {s:?}");
            assert!(out.held.iter().any(|h| h.action == Action::RemoveLink(5)), "{fail}: {out:?}");
        }
    }

    #[test]
    fn an_address_not_written_keeps_its_tag_closed() {
        let t = Topo::reference();
        let before = materialize(&pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]));
        let t2 = t.vlan(6, "bond0.2000", 2000, 4).addr(6, "10.20.0.5/24");
        let d = pipeline(&t2, &cfg(&["bond0"], &[], &[]), &[]);
        let addr = Action::AddLocal("10.20.0.5/32".parse().unwrap());
        let k = Model::new(before.clone(), [addr]);
        let out = execute(&k, &plan(&d, &before), &Deps::from_table(&t2.t));
        assert_eq!(out.held, vec![Held { action: Action::AllowVlan(4, 2000), because: addr }]);
        assert_eq!(out.local_failed(), 1);
        assert!(out.problems(|i| i.to_string())[0].contains("traffic to it passes unjudged"));
        // Attached and configured all the same: only the tag waits.
        assert_eq!(k.state().links.get(&6), Some(&ENF));
    }

    /// The plan's property test, with failures: whatever fails, no state
    /// after a pass has an attachment without its entry or a path open
    /// that neither end of the plan has, a tag opened in the pass leads to
    /// a device whose addresses are known, and the next pass converges.
    #[test]
    fn property_failures_keep_the_promises() {
        let mut rng = Rng(0xe8ec_fa11_5eed);
        for round in 0..1500 {
            let old = random_topo(&mut rng);
            let old_cfg = random_cfg(&mut rng);
            let new = (0..1 + rng.index(3)).fold(old.clone(), |t, _| mutate(&mut rng, t));
            let new_cfg = if rng.chance(50) { old_cfg.clone() } else { random_cfg(&mut rng) };
            let start = materialize(&pipeline(&old, &old_cfg, &[]));
            let d = pipeline(&new, &new_cfg, &[]);
            let p = plan(&d, &start);
            let pct = rng.pick(&[5u64, 20, 50]);
            let fail: Vec<Action> = p.iter().copied().filter(|_| rng.chance(pct)).collect();
            let k = Model::new(start.clone(), fail.clone());
            let deps = Deps::from_table(&new.t);
            let out = execute(&k, &p, &deps);
            let s = k.state();
            for a in &fail {
                let failed = out.failed.iter().any(|f| f.action == *a);
                assert!(failed || out.held.iter().any(|h| h.action == *a), "round {round}: {a} neither failed nor held: {out:?}");
            }
            assert!(unconfigured(&s).is_subset(&unconfigured(&start)), "round {round}: attachment without entry after {fail:?}");
            let open0: BTreeSet<_> = open_paths(&new.t, &start).union(&open_paths(&new.t, &materialize(&d))).copied().collect();
            let open = open_paths(&new.t, &s);
            assert!(open.is_subset(&open0), "round {round}: {:?} opened with {fail:?} failing\nplan {p:?}", open.difference(&open0).collect::<Vec<_>>());
            for (key, (_, addrs)) in &deps.vlans {
                if s.vlans.contains(key) && !start.vlans.contains(key) {
                    assert!(addrs.is_subset(&s.local), "round {round}: {key:?} opened before its addresses");
                }
            }
            let again = execute(&Model::new(s.clone(), []), &plan(&d, &s), &deps);
            assert!(again.is_clean(), "round {round}");
        }
    }
}
