//! A test seam (feature `testing`, never in the release daemon): the real
//! datapath, except that chosen operations fail with the error the kernel
//! would give (a full map, a busy hook) instead of reaching the kernel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::reconcile::{Action, Actual};

use super::{dir_name, Datapath, Error, Kernel, Result};

/// Which operations fail. Every rule that matches fails the call.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Actions of these kinds (`"attach"`, `"set-link"`, … see [`kind`]).
    pub kinds: Vec<&'static str>,
    /// Any action on these ifindexes.
    pub ifindexes: Vec<u32>,
    /// These actions exactly.
    pub actions: Vec<Action>,
    /// The n-th call to `execute` (0-based, counted over the wrapper's life).
    pub nth: Vec<usize>,
    /// Each call fails with this probability in percent, drawn from a
    /// generator seeded with `seed`.
    pub percent: u32,
    pub seed: u64,
}

/// The kind of an action, as [`Faults::kinds`] names it.
pub fn kind(a: &Action) -> &'static str {
    match a {
        Action::SetGlobal(_) => "set-global",
        Action::AddFailsafe(_) => "add-failsafe",
        Action::RemoveFailsafe(_) => "remove-failsafe",
        Action::AddLocal(_) => "add-local",
        Action::RemoveLocal(_) => "remove-local",
        Action::SetLink(..) => "set-link",
        Action::RemoveLink(_) => "remove-link",
        Action::AllowVlan(..) => "allow-vlan",
        Action::DisallowVlan(..) => "disallow-vlan",
        Action::Attach(..) => "attach",
        Action::MoveToFront(..) => "move-to-front",
        Action::Detach(..) => "detach",
    }
}

/// [`Datapath`] with injected failures.
pub struct FaultyKernel<'a> {
    dp: &'a Datapath,
    faults: Faults,
    calls: AtomicUsize,
    rng: Mutex<u64>,
    injected: Mutex<Vec<Action>>,
}

impl<'a> FaultyKernel<'a> {
    pub fn new(dp: &'a Datapath, faults: Faults) -> FaultyKernel<'a> {
        let seed = faults.seed;
        FaultyKernel { dp, faults, calls: AtomicUsize::new(0), rng: Mutex::new(seed | 1), injected: Mutex::new(Vec::new()) }
    }

    /// The actions failed so far, in call order.
    pub fn injected(&self) -> Vec<Action> {
        self.injected.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn roll(&self) -> bool {
        if self.faults.percent == 0 {
            return false;
        }
        // xorshift64: reproducible from the seed (calls of a parallel
        // batch draw in the order they arrive).
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s % 100) < u64::from(self.faults.percent)
    }

    fn fails(&self, a: &Action, n: usize) -> bool {
        let f = &self.faults;
        let by_rule = f.kinds.contains(&kind(a)) || a.ifindex().is_some_and(|i| f.ifindexes.contains(&i)) || f.actions.contains(a) || f.nth.contains(&n);
        by_rule || self.roll()
    }
}

/// The error the datapath gives for this action: a full map for a map
/// write, EBUSY for a hook.
fn injected_error(dp: &Datapath, a: &Action) -> Error {
    let e = |code| libbpf_rs::Error::from_raw_os_error(code);
    match *a {
        Action::SetGlobal(_) => Error::MapUpdate { map: "hf_global", source: e(libc::EBUSY) },
        Action::AddFailsafe(_) | Action::RemoveFailsafe(_) => Error::MapUpdate { map: "hf_failsafe", source: e(libc::ENOSPC) },
        Action::AddLocal(net) => {
            let map = if net.prefix_len() == net.max_prefix_len() { "hf_host_addrs" } else { "hf_local_nets" };
            Error::LocalFull { map, net, max_entries: dp.map_fill(map).map(|f| f.1).unwrap_or(0) }
        }
        Action::RemoveLocal(net) => Error::LocalUpdate { map: "hf_host_addrs", net, source: e(libc::EBUSY) },
        Action::SetLink(..) | Action::RemoveLink(_) => Error::MapUpdate { map: "hf_links", source: e(libc::ENOSPC) },
        Action::AllowVlan(..) | Action::DisallowVlan(..) => Error::MapUpdate { map: "hf_vlans", source: e(libc::ENOSPC) },
        Action::Attach(i, d) | Action::MoveToFront(i, d) => Error::Attach { ifindex: i, dir: dir_name(d), mode: super::AttachMode::Tcx, source: e(libc::EBUSY) },
        Action::Detach(i, d) => Error::Detach { ifindex: i, dir: dir_name(d), mode: super::AttachMode::Tcx, source: e(libc::EBUSY) },
    }
}

impl Kernel for FaultyKernel<'_> {
    fn actual(&self) -> Result<Actual> {
        self.dp.actual()
    }

    fn execute(&self, action: &Action) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fails(action, n) {
            self.injected.lock().unwrap_or_else(|p| p.into_inner()).push(*action);
            return Err(injected_error(self.dp, action));
        }
        self.dp.execute(action)
    }
}
