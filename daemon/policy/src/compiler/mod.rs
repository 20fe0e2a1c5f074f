//! Policy compiler: typed [`RuleSet`] → [`MapImage`]. Pure and deterministic
//! (same rule set, in any order, gives the same image), so it is tested
//! without a kernel against the naive [`RuleSet::evaluate`].
//!
//! Two steps mirror the datapath's two lookups:
//!
//! 1. **Identities.** Every peer CIDR and `except` is a node of a prefix tree.
//!    The rules covering a node are those with a peer set whose CIDR contains
//!    it and none of whose excepts does. Nodes are walked in address order
//!    with a containment stack (parent state plus the node's own events, then
//!    undone when leaving it), so the cost is O(n log n) in the number of
//!    prefixes, never O(n²). Equal rule sets are interned into one identity.
//!    Rules with the same peers (all `toEntities: [world]` rules, say) are
//!    one class for the walk, which tracks sets of classes, so a wide rule
//!    repeated many times does not make every set large.
//!    A node gets an entry only where its set differs from what the LPM would
//!    find above it — this is also how an `except` of an empty set shadows a
//!    covering ancestor (with the identity of the empty set, which has no rule
//!    entries).
//! 2. **Rules per identity and direction**, computed once per distinct
//!    (direction, classes with rules in it) and shared by the identities
//!    that have it. Deny beats allow. An L3-only deny decides alone (one
//!    `proto: None` entry). Otherwise an L3-only allow is one `proto: None`
//!    entry, and per protocol the port intervals are split into elementary
//!    segments, each Deny if any deny covers it, and each run of equal
//!    verdicts is written as aligned port prefixes.
//!
//! IPv4 and the kernel's IPv4-mapped storage: the identity trie is one
//! 128-bit trie, so an IPv6 prefix containing `::ffff:0:0/96` (e.g. `::/0`)
//! would also match IPv4 packets. The compiler shadows it with a `0.0.0.0/0`
//! entry whenever that would happen (see [`super::model`] for the semantics).
//!
//! This module may not know the kernel's map layouts (that is
//! [`crate::encode`]) nor anything of the policy language (`cilium`). Its
//! tests are the `tests_*` files beside it: focused cases, and random rule
//! sets against the reference model.

use std::collections::{BTreeMap, HashMap};

use ipnet::{IpNet, Ipv4Net};

use super::image::{prefix_mask, FastHash, IdentityEntry, MapImage, RuleEntry, MAPPED_BASE};
use super::model::{canonical_net, Action, Direction, Rule, RuleSet, ValidationError};

/// Compiles a rule set into the map image. Fails only on an invalid rule set
/// ([`RuleSet::validate`]).
///
/// Size: rule entries are per identity (the rule key starts with it), so a
/// port rule on a wide prefix such as `world` is repeated in every identity
/// below it — identities × entries of the wide rules. L3-only denies collapse
/// to one entry and allows already decided by an L3-only allow are left out.
pub fn compile(rule_set: &RuleSet) -> Result<MapImage, ValidationError> {
    rule_set.validate()?;

    // Rules in id order: set members are rule indices, so sets (and thus the
    // image) do not depend on the order of the input, and the first member of
    // a kind is the one with the smallest id.
    let mut order: Vec<&Rule> = rule_set.rules.iter().collect();
    order.sort_by_key(|r| r.id);
    let flat: Vec<FlatRule> = order.iter().map(|r| FlatRule::new(r)).collect();

    // Rules with the same peers are covered by the same addresses, so the
    // prefix walk works on classes of them: every `toEntities: [world]`
    // rule, say, is one class. Sets of classes stay small however many rules
    // share their peers, and so do the walk's events.
    let mut class_of: HashMap<Vec<(IpNet, Vec<IpNet>)>, u32, FastHash> = HashMap::default();
    let mut class_peers: Vec<Vec<(IpNet, Vec<IpNet>)>> = Vec::new();
    let mut class_rules: Vec<Vec<u32>> = Vec::new();
    for (ri, rule) in order.iter().enumerate() {
        let mut peers: Vec<(IpNet, Vec<IpNet>)> = rule
            .peers
            .iter()
            .map(|p| {
                let cidr = canonical_net(p.cidr);
                // An IPv4-mapped except of an IPv6 CIDR removes addresses
                // the CIDR never matches (they are IPv4 to the datapath):
                // drop it.
                let mut except: Vec<IpNet> = p
                    .except
                    .iter()
                    .map(|e| canonical_net(*e))
                    .filter(|e| same_family(cidr, *e))
                    .collect();
                except.sort_unstable();
                except.dedup();
                (cidr, except)
            })
            .collect();
        peers.sort_unstable();
        peers.dedup();
        let class = match class_of.get(&peers) {
            Some(&c) => c,
            None => {
                let c = class_rules.len() as u32;
                class_of.insert(peers.clone(), c);
                class_peers.push(peers);
                class_rules.push(Vec::new());
                c
            }
        };
        class_rules[class as usize].push(ri as u32);
    }

    // Peer sets become events on prefix-tree nodes, one list per family.
    let mut set_class: Vec<u32> = Vec::new();
    let mut ev4: Vec<Event> = Vec::new();
    let mut ev6: Vec<Event> = Vec::new();
    for (class, peers) in class_peers.iter().enumerate() {
        for (cidr, except) in peers {
            let set = set_class.len() as u32;
            set_class.push(class as u32);
            let push = |net: IpNet, kind: u8, ev4: &mut Vec<Event>, ev6: &mut Vec<Event>| {
                let e = Event::new(net, kind, set);
                match net {
                    IpNet::V4(_) => ev4.push(e),
                    IpNet::V6(_) => ev6.push(e),
                }
            };
            push(*cidr, ACTIVATE, &mut ev4, &mut ev6);
            for e in except {
                push(*e, DEACTIVATE, &mut ev4, &mut ev6);
            }
        }
    }

    let mut walker = Walker::new(&set_class, class_rules.len());
    let mut out6 = Vec::new();
    ev6.sort_unstable();
    walker.walk(&ev6, EMPTY, &mut out6);

    // An IPv4 address that matches no IPv4 entry falls through to IPv6
    // entries containing ::ffff:0:0/96. If one exists with a non-empty set,
    // 0.0.0.0/0 gets an entry of its own: a sentinel "inherited" set that
    // equals no real set forces it out, so IPv4 lookups never depend on
    // IPv6 entries (even where the sets happen to be equal).
    let v6_fallback = out6
        .iter()
        .filter(|n| n.len <= 96 && MAPPED_BASE & prefix_mask(n.len, 128) == n.addr)
        .max_by_key(|n| n.len)
        .map_or(EMPTY, |n| n.set);
    let v4_top = if v6_fallback == EMPTY {
        EMPTY
    } else {
        ev4.push(Event::new(IpNet::V4(Ipv4Net::default()), TOUCH, u32::MAX));
        FORCE
    };
    let mut out4 = Vec::new();
    ev4.sort_unstable();
    walker.walk(&ev4, v4_top, &mut out4);

    // Identities dense from 1, in order of first appearance in the sorted
    // identity list.
    let mut identity_of = vec![0u32; walker.interner.sets.len()];
    let mut set_of_identity: Vec<u32> = vec![EMPTY]; // index 0: identity 0, unused
    let mut identities = Vec::with_capacity(out4.len() + out6.len());
    for node in out4.iter().chain(out6.iter()) {
        let slot = &mut identity_of[node.set as usize];
        if *slot == 0 {
            *slot = set_of_identity.len() as u32;
            set_of_identity.push(node.set);
        }
        identities.push(IdentityEntry {
            prefix: node.net,
            identity: *slot,
        });
    }

    // An identity's entries in one direction depend only on its classes
    // with rules in that direction, and many identities share those: every
    // prefix outside the cluster has the `world` rules and differs from its
    // neighbours only by its own ingress rule. Each distinct (direction,
    // classes) is compiled once.
    let class_dirs: Vec<[bool; 2]> = class_rules
        .iter()
        .map(|rules| {
            let mut d = [false; 2];
            for &r in rules {
                d[dir_index(flat[r as usize].direction)] = true;
            }
            d
        })
        .collect();
    let mut rules = Vec::new();
    let mut done: HashMap<(usize, Vec<u32>), Vec<DirEntry>, FastHash> = HashMap::default();
    let mut members: Vec<u32> = Vec::new();
    for (identity, &set) in set_of_identity.iter().enumerate().skip(1) {
        let classes = &walker.interner.sets[set as usize];
        for direction in Direction::ALL {
            let d = dir_index(direction);
            let key = (
                d,
                classes
                    .iter()
                    .copied()
                    .filter(|&c| class_dirs[c as usize][d])
                    .collect::<Vec<u32>>(),
            );
            if key.1.is_empty() {
                continue;
            }
            if !done.contains_key(&key) {
                // The rules of these classes in this direction, in id order.
                members.clear();
                for &c in &key.1 {
                    members.extend(
                        class_rules[c as usize]
                            .iter()
                            .copied()
                            .filter(|&r| flat[r as usize].direction == direction),
                    );
                }
                members.sort_unstable();
                let entries = direction_entries(&members, &flat);
                done.insert(key.clone(), entries);
            }
            rules.extend(
                done[&key]
                    .iter()
                    .map(|&(proto, port, action, rule_id)| RuleEntry {
                        identity: identity as u32,
                        direction,
                        proto,
                        port,
                        action,
                        rule_id,
                    }),
            );
        }
    }
    debug_assert!(identities.windows(2).all(|w| w[0].prefix < w[1].prefix));
    debug_assert!(rules.windows(2).all(|w| w[0].sort_key() < w[1].sort_key()));

    Ok(MapImage {
        enforce_ingress: rule_set.enforces(Direction::Ingress),
        enforce_egress: rule_set.enforces(Direction::Egress),
        identities,
        rules,
    })
}

/// The minimal list of aligned port prefixes `(value, prefix length)` whose
/// union is exactly `first..=last`, ascending (empty if `first > last`).
/// `0..=65535` is `[(0, 0)]`.
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let end = u32::from(last);
    let mut cur = u32::from(first);
    while cur <= end {
        // The largest block aligned at `cur` that does not pass `end`.
        let mut size: u32 = if cur == 0 {
            1 << 16
        } else {
            1 << cur.trailing_zeros()
        };
        while cur + size - 1 > end {
            size >>= 1;
        }
        out.push((cur as u16, 16 - size.trailing_zeros() as u8));
        cur += size;
    }
    out
}

/// A rule reduced to what the entry step needs.
struct FlatRule {
    id: u32,
    direction: Direction,
    action: Action,
    /// No ports: every protocol and port.
    l3: bool,
    /// (proto, first, last) in the datapath's port space, sorted, deduplicated.
    intervals: Vec<(u8, u16, u16)>,
}

impl FlatRule {
    fn new(rule: &Rule) -> FlatRule {
        let mut intervals: Vec<(u8, u16, u16)> =
            rule.ports.iter().flat_map(|m| m.intervals()).collect();
        intervals.sort_unstable();
        intervals.dedup();
        FlatRule {
            id: rule.id,
            direction: rule.direction,
            action: rule.action,
            l3: rule.ports.is_empty(),
            intervals,
        }
    }
}

const ACTIVATE: u8 = 0;
const DEACTIVATE: u8 = 1;
/// Makes a node exist without changing any peer set.
const TOUCH: u8 = 2;
/// Interned id of the empty rule set.
const EMPTY: u32 = 0;
/// Not a set: as the inherited set of a walk, forces an entry for its first
/// node.
const FORCE: u32 = u32::MAX;

/// A peer-set change at a prefix. `addr` is left-aligned in 128 bits (IPv4
/// in the top 32) so both families share the containment arithmetic; the
/// derived order (address, then length) visits ancestors before descendants,
/// and a set's activation before its deactivation at the same prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    addr: u128,
    len: u8,
    kind: u8,
    set: u32,
    net: IpNet,
}

impl Event {
    fn new(net: IpNet, kind: u8, set: u32) -> Event {
        let (addr, len) = match net {
            IpNet::V4(n) => (u128::from(u32::from(n.network())) << 96, n.prefix_len()),
            IpNet::V6(n) => (u128::from(n.network()), n.prefix_len()),
        };
        Event {
            addr,
            len,
            kind,
            set,
            net: net.trunc(),
        }
    }
}

/// A prefix that gets an identity entry.
struct Node {
    addr: u128,
    len: u8,
    net: IpNet,
    set: u32,
}

fn same_family(a: IpNet, b: IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

/// Interned sets of rule classes (sorted class indices). Index 0 is the
/// empty set.
struct Interner {
    sets: Vec<Vec<u32>>,
    ids: HashMap<Vec<u32>, u32, FastHash>,
    /// (parent set, added ++ [MAX] ++ removed) → set: the same change under
    /// the same parent (e.g. many blocklist prefixes under one `world` rule)
    /// costs one lookup instead of a set copy.
    memo: HashMap<(u32, Vec<u32>), u32, FastHash>,
}

impl Interner {
    fn new() -> Interner {
        let mut ids = HashMap::default();
        ids.insert(Vec::new(), EMPTY);
        Interner {
            sets: vec![Vec::new()],
            ids,
            memo: HashMap::default(),
        }
    }

    /// The set `parent - removed + added` (both sorted; `removed` ⊆ parent,
    /// `added` disjoint from it).
    fn child(&mut self, parent: u32, added: &[u32], removed: &[u32]) -> u32 {
        let mut delta = Vec::with_capacity(added.len() + removed.len() + 1);
        delta.extend_from_slice(added);
        delta.push(u32::MAX);
        delta.extend_from_slice(removed);
        let key = (parent, delta);
        if let Some(&id) = self.memo.get(&key) {
            return id;
        }
        let base = &self.sets[parent as usize];
        let mut merged = Vec::with_capacity(base.len() + added.len());
        let mut add = added.iter().copied().peekable();
        for &r in base {
            if removed.binary_search(&r).is_ok() {
                continue;
            }
            while let Some(a) = add.next_if(|&a| a < r) {
                merged.push(a);
            }
            merged.push(r);
        }
        merged.extend(add);
        let id = match self.ids.get(&merged) {
            Some(&id) => id,
            None => {
                let id = self.sets.len() as u32;
                self.sets.push(merged.clone());
                self.ids.insert(merged, id);
                id
            }
        };
        self.memo.insert(key, id);
        id
    }
}

struct Frame {
    addr: u128,
    len: u8,
    /// Rule set covering this node.
    set: u32,
    /// Rule set the LPM finds at this node (of the deepest entry above or at it).
    eff: u32,
    /// Undo log length before this node's changes.
    undo: usize,
}

/// The prefix-tree walk with its mutable coverage state.
struct Walker<'a> {
    /// Per peer set: its class.
    set_class: &'a [u32],
    /// Per peer set: CIDR entered and no except of it entered.
    active: Vec<bool>,
    /// Per class: number of active peer sets.
    covered: Vec<u32>,
    /// Peer sets flipped, in order, to restore the parent state.
    undo: Vec<u32>,
    /// Per class: last node that touched it, to collect each class once.
    stamp: Vec<u64>,
    node: u64,
    interner: Interner,
}

impl<'a> Walker<'a> {
    fn new(set_class: &'a [u32], classes: usize) -> Walker<'a> {
        Walker {
            set_class,
            active: vec![false; set_class.len()],
            covered: vec![0; classes],
            undo: Vec::new(),
            stamp: vec![0; classes],
            node: 0,
            interner: Interner::new(),
        }
    }

    fn flip(&mut self, set: u32) {
        let s = set as usize;
        let r = self.set_class[s] as usize;
        self.active[s] = !self.active[s];
        if self.active[s] {
            self.covered[r] += 1;
        } else {
            self.covered[r] -= 1;
        }
    }

    fn undo_to(&mut self, mark: usize) {
        while self.undo.len() > mark {
            if let Some(set) = self.undo.pop() {
                self.flip(set);
            }
        }
    }

    /// Walks sorted `events` (one family), appending a node for every prefix
    /// whose rule set differs from what the LPM finds above it. `top` is what
    /// the LPM finds when no prefix of this family matches.
    fn walk(&mut self, events: &[Event], top: u32, out: &mut Vec<Node>) {
        let mut stack: Vec<Frame> = Vec::new();
        let mut touched: Vec<(u32, bool)> = Vec::new();
        let mut added: Vec<u32> = Vec::new();
        let mut removed: Vec<u32> = Vec::new();
        let mut i = 0;
        while i < events.len() {
            let (addr, len, net) = (events[i].addr, events[i].len, events[i].net);
            let mut j = i;
            while j < events.len() && events[j].addr == addr && events[j].len == len {
                j += 1;
            }
            while let Some(f) = stack.last() {
                if f.len <= len && addr & prefix_mask(f.len, 128) == f.addr {
                    break;
                }
                let mark = f.undo;
                stack.pop();
                self.undo_to(mark);
            }
            let (parent_set, parent_eff) = stack.last().map_or((EMPTY, top), |f| (f.set, f.eff));
            let undo = self.undo.len();
            self.node += 1;
            touched.clear();
            for ev in &events[i..j] {
                let wanted = match ev.kind {
                    ACTIVATE => true,
                    DEACTIVATE => false,
                    _ => continue,
                };
                if self.active[ev.set as usize] == wanted {
                    continue;
                }
                let r = self.set_class[ev.set as usize];
                if self.stamp[r as usize] != self.node {
                    self.stamp[r as usize] = self.node;
                    touched.push((r, self.covered[r as usize] > 0));
                }
                self.flip(ev.set);
                self.undo.push(ev.set);
            }
            added.clear();
            removed.clear();
            for &(r, was) in &touched {
                match (was, self.covered[r as usize] > 0) {
                    (false, true) => added.push(r),
                    (true, false) => removed.push(r),
                    _ => {}
                }
            }
            let set = if added.is_empty() && removed.is_empty() {
                parent_set
            } else {
                added.sort_unstable();
                removed.sort_unstable();
                self.interner.child(parent_set, &added, &removed)
            };
            let eff = if set != parent_eff {
                out.push(Node {
                    addr,
                    len,
                    net,
                    set,
                });
                set
            } else {
                parent_eff
            };
            stack.push(Frame {
                addr,
                len,
                set,
                eff,
                undo,
            });
            i = j;
        }
        self.undo_to(0);
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// A rule entry without its identity and direction: (proto, port prefix,
/// action, rule id).
type DirEntry = (Option<u8>, Option<(u16, u8)>, Action, u32);

/// The rule entries of an identity in one direction, from its members in
/// that direction (`members`: rule indices, sorted by id, all of that
/// direction), in entry order.
fn direction_entries(members: &[u32], flat: &[FlatRule]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut l3_deny = None;
    let mut l3_allow = None;
    let mut intervals: Vec<(u8, u16, u16, Action, u32)> = Vec::new();
    for r in members.iter().map(|&m| &flat[m as usize]) {
        match (r.l3, r.action) {
            (true, Action::Deny) => {
                l3_deny.get_or_insert(r.id);
            }
            (true, Action::Allow) => {
                l3_allow.get_or_insert(r.id);
            }
            (false, action) => {
                intervals.extend(r.intervals.iter().map(|&(p, f, l)| (p, f, l, action, r.id)));
            }
        }
    }
    if let Some(id) = l3_deny {
        out.push((None, None, Action::Deny, id));
        return out;
    }
    if let Some(id) = l3_allow {
        out.push((None, None, Action::Allow, id));
    }
    intervals.sort_unstable_by_key(|iv| iv.0);
    for group in intervals.chunk_by(|a, b| a.0 == b.0) {
        let proto = group[0].0;
        for (first, last, action, id) in segments(group, l3_allow) {
            if first == 0 && last == u16::MAX {
                out.push((Some(proto), None, action, id));
            } else {
                for (value, plen) in port_prefixes(first, last) {
                    out.push((Some(proto), Some((value, plen)), action, id));
                }
            }
        }
    }
    out
}

/// Splits one protocol's port intervals into maximal runs of equal verdict:
/// Deny with the smallest covering deny id if any deny covers, else Allow
/// with the smallest covering allow id (counting the L3-only allow, which
/// covers everything). Runs the L3-only allow entry already decides
/// identically are left out. Sweep over interval ends, O(k log k).
fn segments(
    group: &[(u8, u16, u16, Action, u32)],
    l3_allow: Option<u32>,
) -> Vec<(u16, u16, Action, u32)> {
    // (position, is_end, action, id); position up to 65536.
    let mut points: Vec<(u32, bool, Action, u32)> = Vec::with_capacity(group.len() * 2);
    for &(_, first, last, action, id) in group {
        points.push((u32::from(first), false, action, id));
        points.push((u32::from(last) + 1, true, action, id));
    }
    points.sort_unstable_by_key(|p| p.0);
    let mut active: [BTreeMap<u32, u32>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let mut runs: Vec<(u16, u16, Action, u32)> = Vec::new();
    let mut k = 0;
    while k < points.len() {
        let pos = points[k].0;
        while k < points.len() && points[k].0 == pos {
            let (_, is_end, action, id) = points[k];
            let counts = &mut active[usize::from(action == Action::Deny)];
            if is_end {
                if let Some(c) = counts.get_mut(&id) {
                    *c -= 1;
                    if *c == 0 {
                        counts.remove(&id);
                    }
                }
            } else {
                *counts.entry(id).or_insert(0) += 1;
            }
            k += 1;
        }
        let Some(&(next, ..)) = points.get(k) else {
            break;
        };
        let verdict = match (active[1].keys().next(), active[0].keys().next(), l3_allow) {
            (Some(&deny), _, _) => Some((Action::Deny, deny)),
            (None, Some(&allow), Some(l3)) if l3 <= allow => None,
            (None, Some(&allow), _) => Some((Action::Allow, allow)),
            (None, None, _) => None,
        };
        let Some((action, id)) = verdict else {
            continue;
        };
        // pos < next <= 65536, so both ends fit in u16.
        let (first, last) = (pos as u16, (next - 1) as u16);
        match runs.last_mut() {
            Some(run) if u32::from(run.1) + 1 == pos && run.2 == action && run.3 == id => {
                run.1 = last
            }
            _ => runs.push((first, last, action, id)),
        }
    }
    runs
}

#[cfg(test)]
mod tests_focused;
#[cfg(test)]
mod tests_reference;
#[cfg(test)]
mod tests_support;
