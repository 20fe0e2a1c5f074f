//! The reconcile *plan*: desired state (a function of the link table, the
//! selection, the VLAN sets and the [`Settings`]) against the actual state
//! read back from the kernel, as a list of typed [`Action`]s. Pure: the
//! executor ([`crate::execute`]) carries the actions out.
//!
//! # Order of the plan (safety)
//!
//! Two rules: a program never runs on a device before that device's
//! configuration (link flags, allowed VIDs) is complete, and no step lets a
//! tag through a lower device towards a device that is not guarded yet —
//! paths are opened last and closed first. The plan is:
//!
//! 0. `SetGlobal` (audit, non-IP, event rate) and `AddFailsafe` — first:
//!    a failsafe port is open before any program could judge its flows.
//! 1. `AddLocal` — before anything is attached, so that traffic to a new
//!    local address or prefix is recognised as host traffic from the first
//!    packet.
//! 2. Every desired link, in [`Desired::attach_order`] — a device that
//!    receives the tags a lower device lets through (a VLAN subinterface, the
//!    bridge of a bridged VLAN) before that lower device — each: its
//!    `AllowVlan` additions, its `SetLink` if the flags differ, then `Attach`
//!    for each direction that is missing or runs another load's program (the
//!    executor updates that one in place: adoption), or `MoveToFront` where
//!    hostfwd is attached but other programs run before it and the attach
//!    mode can move it (tcx: a new link in front of all, then the old one
//!    released — hostfwd never leaves the hook). So a new subinterface is
//!    attached and configured before its VID opens on the lower device, VIDs
//!    are added before a flag change that drops `L_VLAN_ALLOW_ALL`, and a
//!    program never starts on a link whose entries are incomplete.
//! 3. `DisallowVlan` of links that stay — VLAN removals after all additions,
//!    and before the device behind the tag is detached (step 4), so an
//!    excluded subinterface is cut off on its lower device first.
//! 4. `Detach` of every attachment on an ifindex that is not desired.
//! 5. `RemoveLink` of those ifindexes — after the detach: an attached program
//!    without its link entry passes everything.
//! 6. `DisallowVlan` of those ifindexes.
//! 7. `RemoveLocal` — an address is enforced until nothing else is left to
//!    do.
//! 8. `RemoveFailsafe` — last; the datapath judges again the flows that
//!    only a failsafe port admitted.
//!
//! Invariants (property-tested): applying the plan to the actual state gives
//! exactly the desired state, so a second plan is empty; no intermediate
//! state has an attachment on an ifindex without its link entry that was not
//! already there; no intermediate state opens a tag on a guarding lower
//! device towards a device that is not guarded, unless it was open before.
//!
//! The executor ([`crate::execute`]) keeps these promises when a step
//! fails: it holds back every action that relies on a failed one (a failed
//! configuration never leads to an `Attach`, a failed attach or address
//! never to an `AllowVlan` towards that device), and the next plan repairs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use hostfwd_bpf::layout as l;

use crate::links::{Ifindex, LinkKind, Table};
use crate::policy::model::Direction;
use crate::select::{receiving_link, Decision};
use crate::vlan::AllowSet;

/// Global datapath settings (`hf_global`, minus the policy generation which
/// only `Datapath::apply_policy` changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlobalSettings {
    pub audit: bool,
    pub drop_non_ip: bool,
    /// Events per second and CPU; 0 disables events (counters stay exact).
    pub events_per_sec: u32,
    pub events_burst: u32,
}

impl Default for GlobalSettings {
    fn default() -> Self {
        GlobalSettings { audit: true, drop_non_ip: false, events_per_sec: 1000, events_burst: 100 }
    }
}

/// A failsafe port: (direction, IP protocol, destination port).
pub type Failsafe = (Direction, u8, u16);

/// What one attached link's map entries should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// `L_ENFORCE_INGRESS | L_ENFORCE_EGRESS`, plus `L_VLAN_ALLOW_ALL`,
    /// `L_AUDIT`.
    pub flags: u32,
    /// Allowed VIDs (`hf_vlans`), kept even with `L_VLAN_ALLOW_ALL` so that
    /// removing bypass `0` only flips a flag.
    pub vids: BTreeSet<u16>,
}

/// The state the kernel should be in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every ifindex that gets programs (both directions).
    pub links: BTreeMap<u32, LinkState>,
    /// What the kernel delivers to the host itself ([`local_set`]).
    pub local: BTreeSet<IpNet>,
    /// This load's (ingress, egress) program ids.
    pub prog_ids: (u32, u32),
    /// The order in which links are attached: a device that receives the
    /// tagged traffic a lower device lets through comes before that lower
    /// device. Links missing here are attached after, in ifindex order.
    pub attach_order: Vec<u32>,
    /// hostfwd must run first on its hooks and can be moved there (tcx).
    /// Legacy tc cannot move in front of a filter without deleting it, and
    /// hostfwd never deletes anyone else's filter: there it is reported only.
    pub to_front: bool,
    /// `hf_global`'s settings.
    pub global: GlobalSettings,
    /// `hf_failsafe`.
    pub failsafe: BTreeSet<Failsafe>,
}

impl Desired {
    fn prog(&self, dir: Direction) -> u32 {
        match dir {
            Direction::Ingress => self.prog_ids.0,
            Direction::Egress => self.prog_ids.1,
        }
    }
}

/// A program that runs on one of hostfwd's hooks before hostfwd's own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct HookProg {
    /// Program id (0 for a legacy filter that is not cls_bpf).
    pub id: u32,
    /// The program's name (or the legacy filter's kind).
    pub name: String,
    /// Where it sits: `tcx`, or `tc prio 1 handle 0x1`.
    pub at: String,
}

impl fmt::Display for HookProg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (id {}, {})", self.name, self.id, self.at)
    }
}

/// `a (id 1, tcx), b (id 2, tcx)`.
pub fn hook_progs_text(progs: &[HookProg]) -> String {
    progs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// The state the kernel is in, as read back by the datapath.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    /// (ifindex, direction) → id of the attached program.
    pub attachments: BTreeMap<(u32, Direction), u32>,
    /// Hooks where hostfwd is attached but other programs run first, with
    /// those programs in the order they run. Absent when hostfwd is first.
    pub ahead: BTreeMap<(u32, Direction), Vec<HookProg>>,
    /// `hf_links`: ifindex → flags.
    pub links: BTreeMap<u32, u32>,
    /// `hf_vlans`: allowed (ifindex, VID).
    pub vlans: BTreeSet<(u32, u16)>,
    /// `hf_host_addrs` (as host prefixes) and `hf_local_nets`.
    pub local: BTreeSet<IpNet>,
    /// `hf_global`'s settings.
    pub global: GlobalSettings,
    /// `hf_failsafe`.
    pub failsafe: BTreeSet<Failsafe>,
}

/// One change to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// `hf_global`'s settings (the policy generation stays).
    SetGlobal(GlobalSettings),
    /// A failsafe port into or out of `hf_failsafe`.
    AddFailsafe(Failsafe),
    RemoveFailsafe(Failsafe),
    /// A local address (host prefix) or prefix: `hf_host_addrs` or
    /// `hf_local_nets`.
    AddLocal(IpNet),
    RemoveLocal(IpNet),
    /// `hf_links[ifindex] = flags`.
    SetLink(u32, u32),
    RemoveLink(u32),
    AllowVlan(u32, u16),
    DisallowVlan(u32, u16),
    /// Attach this load's program, or update an attachment running another
    /// program in place.
    Attach(u32, Direction),
    /// hostfwd is attached but others run first: attach this load's program
    /// in front of all, then release the old attachment.
    MoveToFront(u32, Direction),
    Detach(u32, Direction),
}

impl Action {
    /// The ifindex the action concerns (none for host-wide settings and
    /// addresses).
    pub fn ifindex(&self) -> Option<u32> {
        match *self {
            Action::SetGlobal(_) | Action::AddFailsafe(_) | Action::RemoveFailsafe(_) => None,
            Action::AddLocal(_) | Action::RemoveLocal(_) => None,
            Action::SetLink(i, _) | Action::RemoveLink(i) | Action::AllowVlan(i, _) | Action::DisallowVlan(i, _) => Some(i),
            Action::Attach(i, _) | Action::MoveToFront(i, _) | Action::Detach(i, _) => Some(i),
        }
    }
}

/// `ingress` or `egress`, as users read them.
pub fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::SetGlobal(g) => write!(
                f,
                "set global settings (audit {}, drop non-IP {}, {} events/s burst {})",
                g.audit, g.drop_non_ip, g.events_per_sec, g.events_burst
            ),
            Action::AddFailsafe((d, proto, port)) => write!(f, "add failsafe {} {proto}/{port}", dir_name(d)),
            Action::RemoveFailsafe((d, proto, port)) => write!(f, "remove failsafe {} {proto}/{port}", dir_name(d)),
            Action::AddLocal(net) => write!(f, "add local {}", Local(net)),
            Action::RemoveLocal(net) => write!(f, "remove local {}", Local(net)),
            Action::SetLink(i, flags) => write!(f, "set link {i} flags {flags:#x}"),
            Action::RemoveLink(i) => write!(f, "remove link {i}"),
            Action::AllowVlan(i, v) => write!(f, "allow VLAN {v} on link {i}"),
            Action::DisallowVlan(i, v) => write!(f, "disallow VLAN {v} on link {i}"),
            Action::Attach(i, d) => write!(f, "attach {} on link {i}", dir_name(d)),
            Action::MoveToFront(i, d) => write!(f, "move {} on link {i} to the front", dir_name(d)),
            Action::Detach(i, d) => write!(f, "detach {} from link {i}", dir_name(d)),
        }
    }
}

/// A local net as users know it: an address alone, a prefix with its length.
struct Local(IpNet);

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "address {}", self.0.addr())
        } else {
            write!(f, "prefix {}", self.0)
        }
    }
}

/// 127.0.0.0/8: the datapath counts it as local without a map entry (every
/// local table has it), so the LPM trie stays unused on ordinary hosts.
const LOOPBACK_NET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8) {
    Ok(n) => n,
    Err(_) => panic!("127.0.0.0/8"),
};

/// The local set the maps should hold: the table's local routes and
/// interface addresses ([`Table::local_nets`]), less what lies inside
/// 127.0.0.0/8.
pub fn local_set(table: &Table) -> BTreeSet<IpNet> {
    let mut out = table.local_nets();
    out.retain(|n| !matches!(n, IpNet::V4(v4) if LOOPBACK_NET.contains(v4)));
    out
}

/// What the configuration and the API add to the table and the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Links in per-link audit mode (`L_AUDIT`).
    pub audit_links: BTreeSet<Ifindex>,
    /// The attach mode can put hostfwd in front of other programs (tcx).
    pub to_front: bool,
    /// Global audit, non-IP handling and the event rate (`hf_global`).
    pub global: GlobalSettings,
    /// Failsafe ports (`hf_failsafe`).
    pub failsafe: BTreeSet<Failsafe>,
}

/// The desired state: every attached link (role enforce or vlan-guard) with
/// its flags and VIDs, and every address of the host.
pub fn desired(
    table: &Table,
    decisions: &BTreeMap<Ifindex, Decision>,
    sets: &BTreeMap<Ifindex, AllowSet>,
    settings: &Settings,
    prog_ids: (u32, u32),
) -> Desired {
    let mut links = BTreeMap::new();
    for (i, d) in decisions {
        if !d.role.is_attached() {
            continue;
        }
        let empty = AllowSet::default();
        let set = sets.get(i).unwrap_or(&empty);
        let mut flags = l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS;
        if set.all {
            flags |= l::L_VLAN_ALLOW_ALL;
        }
        if settings.audit_links.contains(i) {
            flags |= l::L_AUDIT;
        }
        links.insert(i.get(), LinkState { flags, vids: set.vids.iter().map(|v| v.get()).collect() });
    }
    let attach_order = attach_order(table, &links);
    // The datapath marks its settings written with a burst of at least 1.
    let global = GlobalSettings { events_burst: settings.global.events_burst.max(1), ..settings.global };
    Desired { links, local: local_set(table), prog_ids, attach_order, to_front: settings.to_front, global, failsafe: settings.failsafe.clone() }
}

/// Desired links, uppers first: for a VLAN subinterface V on lower D whose
/// VID D lets through, the place of V (V, or its bridge) comes before D.
fn attach_order(table: &Table, links: &BTreeMap<u32, LinkState>) -> Vec<u32> {
    // (upper, lower): upper must be attached before lower.
    let mut edges = Vec::new();
    for v in table.iter() {
        let LinkKind::Vlan { vid, lower } = v.kind else { continue };
        let Some(state) = links.get(&lower.get()) else { continue };
        if !state.vids.contains(&vid.get()) {
            continue;
        }
        if let Some(p) = receiving_link(table, v.ifindex).filter(|p| *p != lower && links.contains_key(&p.get())) {
            edges.push((p.get(), lower.get()));
        }
    }
    let mut rank: BTreeMap<u32, usize> = links.keys().map(|i| (*i, 0)).collect();
    // Longest path from a top; a (kernel-impossible) cycle stops after
    // `len` rounds instead of looping.
    for _ in 0..links.len() {
        let mut changed = false;
        for (up, low) in &edges {
            let want = rank[up] + 1;
            if rank[low] < want {
                rank.insert(*low, want);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut order: Vec<u32> = links.keys().copied().collect();
    order.sort_by_key(|i| (rank[i], *i));
    order
}

/// The actions that bring `actual` to `desired`, in a safe order (see the
/// module documentation). Empty when nothing differs.
pub fn plan(desired: &Desired, actual: &Actual) -> Vec<Action> {
    let mut out = Vec::new();
    // 0.
    if desired.global != actual.global {
        out.push(Action::SetGlobal(desired.global));
    }
    out.extend(desired.failsafe.difference(&actual.failsafe).map(|f| Action::AddFailsafe(*f)));
    // 1.
    out.extend(desired.local.difference(&actual.local).map(|n| Action::AddLocal(*n)));

    // 2.
    let mut order: Vec<u32> = desired.attach_order.iter().copied().filter(|i| desired.links.contains_key(i)).collect();
    let listed: BTreeSet<u32> = order.iter().copied().collect();
    order.extend(desired.links.keys().copied().filter(|i| !listed.contains(i)));
    let mut seen = BTreeSet::new();
    for i in order {
        if !seen.insert(i) {
            continue;
        }
        let s = &desired.links[&i];
        out.extend(s.vids.iter().filter(|v| !actual.vlans.contains(&(i, **v))).map(|v| Action::AllowVlan(i, *v)));
        if actual.links.get(&i) != Some(&s.flags) {
            out.push(Action::SetLink(i, s.flags));
        }
        for dir in Direction::ALL {
            let attached = actual.attachments.get(&(i, dir));
            let behind = actual.ahead.get(&(i, dir)).is_some_and(|a| !a.is_empty());
            if attached.is_some() && behind && desired.to_front {
                out.push(Action::MoveToFront(i, dir));
            } else if attached != Some(&desired.prog(dir)) {
                out.push(Action::Attach(i, dir));
            }
        }
    }

    // 3.
    for &(i, v) in &actual.vlans {
        if desired.links.get(&i).is_some_and(|s| !s.vids.contains(&v)) {
            out.push(Action::DisallowVlan(i, v));
        }
    }

    // 4.–6.
    for &(i, dir) in actual.attachments.keys() {
        if !desired.links.contains_key(&i) {
            out.push(Action::Detach(i, dir));
        }
    }
    for i in actual.links.keys() {
        if !desired.links.contains_key(i) {
            out.push(Action::RemoveLink(*i));
        }
    }
    for &(i, v) in &actual.vlans {
        if !desired.links.contains_key(&i) {
            out.push(Action::DisallowVlan(i, v));
        }
    }

    // 7.
    out.extend(actual.local.difference(&desired.local).map(|n| Action::RemoveLocal(*n)));
    // 8.
    out.extend(actual.failsafe.difference(&desired.failsafe).map(|f| Action::RemoveFailsafe(*f)));
    out
}

#[cfg(test)]
pub(crate) mod tests;
