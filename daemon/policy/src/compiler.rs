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
mod tests {
    use std::net::IpAddr;
    use std::time::Instant;

    use super::*;
    use crate::image::Verdict;
    use crate::model::{
        CidrSet, IcmpFamily, L4Proto, PortMatch, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP,
        IPPROTO_TCP, IPPROTO_UDP,
    };

    use Action::{Allow, Deny};
    use Direction::{Egress, Ingress};

    fn net(s: &str) -> IpNet {
        s.parse().expect("test literal")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test literal")
    }

    fn cidrs(list: &[&str]) -> Vec<CidrSet> {
        list.iter().map(|s| CidrSet::cidr(net(s))).collect()
    }

    fn rule(
        id: u32,
        direction: Direction,
        action: Action,
        peers: Vec<CidrSet>,
        ports: Vec<PortMatch>,
    ) -> Rule {
        Rule {
            id,
            direction,
            action,
            peers,
            ports,
        }
    }

    fn tcp(first: u16, last: u16) -> PortMatch {
        PortMatch::L4 {
            proto: L4Proto::Tcp,
            first,
            last,
        }
    }

    fn compile_ok(rules: Vec<Rule>) -> (RuleSet, MapImage) {
        let rs = RuleSet::new(rules);
        let image = compile(&rs).expect("valid rule set");
        check_invariants(&image);
        (rs, image)
    }

    fn ident(prefix: &str, identity: u32) -> IdentityEntry {
        IdentityEntry {
            prefix: net(prefix),
            identity,
        }
    }

    fn ent(
        identity: u32,
        direction: Direction,
        proto: Option<u8>,
        port: Option<(u16, u8)>,
        action: Action,
        rule_id: u32,
    ) -> RuleEntry {
        RuleEntry {
            identity,
            direction,
            proto,
            port,
            action,
            rule_id,
        }
    }

    /// Structural promises of the image, independent of the rules.
    fn check_invariants(image: &MapImage) {
        assert!(
            image
                .identities
                .windows(2)
                .all(|w| w[0].prefix < w[1].prefix),
            "identities sorted, unique"
        );
        let max = image
            .identities
            .iter()
            .map(|e| e.identity)
            .max()
            .unwrap_or(0);
        let mut seen = vec![false; max as usize + 1];
        for e in &image.identities {
            assert_eq!(e.prefix, e.prefix.trunc(), "prefix truncated");
            assert!(e.identity >= 1);
            seen[e.identity as usize] = true;
        }
        assert!(seen.iter().skip(1).all(|&s| s), "identities dense from 1");
        assert!(
            image
                .rules
                .windows(2)
                .all(|w| w[0].sort_key() < w[1].sort_key()),
            "rules sorted, unique"
        );
        let mut keys: Vec<(u64, u8)> = image.rules.iter().map(|e| e.key_bits()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), image.rules.len(), "rule keys unique");
        for e in &image.rules {
            assert!(
                e.identity >= 1 && e.identity <= max,
                "rule entry for a known identity"
            );
            if let Some((value, plen)) = e.port {
                assert!(e.proto.is_some());
                assert!((1..=16).contains(&plen), "{e:?}");
                assert_eq!(
                    u32::from(value) & !(u32::MAX << (16 - plen)) & 0xffff,
                    0,
                    "aligned {e:?}"
                );
            }
        }
    }

    fn check_packets(rs: &RuleSet, image: &MapImage, packets: &[(IpAddr, Direction, u8, u16)]) {
        let lookup = image.lookup();
        for &(a, d, p, port) in packets {
            assert_eq!(
                lookup.evaluate(a, d, p, port),
                rs.evaluate(a, d, p, port),
                "{a} {d:?} proto {p} port {port}"
            );
        }
    }

    // ---- port prefixes ----

    #[test]
    fn port_prefixes_examples() {
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(22, 22), vec![(22, 16)]);
        assert_eq!(
            port_prefixes(1024, 65535),
            vec![
                (1024, 6),
                (2048, 5),
                (4096, 4),
                (8192, 3),
                (16384, 2),
                (32768, 1)
            ]
        );
        assert_eq!(port_prefixes(0, 1023), vec![(0, 6)]);
        assert_eq!(port_prefixes(65535, 65535), vec![(65535, 16)]);
        assert_eq!(port_prefixes(0, 0), vec![(0, 16)]);
        assert_eq!(port_prefixes(80, 81), vec![(80, 15)]);
        assert_eq!(port_prefixes(79, 80), vec![(79, 16), (80, 16)]);
        assert_eq!(port_prefixes(1, 65534).len(), 30);
        assert_eq!(port_prefixes(5, 4), vec![]);
    }

    #[test]
    fn port_prefixes_exact_and_minimal_exhaustive_sample() {
        let mut rng = Rng(7);
        for _ in 0..3000 {
            let a = rng.below(65536) as u16;
            let b = rng.below(65536) as u16;
            let (first, last) = (a.min(b), a.max(b));
            let blocks = port_prefixes(first, last);
            // Exact cover, ascending, disjoint.
            let mut cur = u32::from(first);
            for &(value, plen) in &blocks {
                assert_eq!(u32::from(value), cur);
                let size = 1u32 << (16 - plen);
                assert_eq!(u32::from(value) % size, 0, "aligned");
                cur += size;
            }
            assert_eq!(cur, u32::from(last) + 1);
            // Minimal: no two neighbours are the halves of one block.
            for w in blocks.windows(2) {
                let (v, l) = w[0];
                assert!(
                    !(w[1].1 == l && v % (1 << (17 - u32::from(l))) == 0 && l > 0),
                    "{w:?} mergeable"
                );
            }
        }
    }

    // ---- focused tests ----

    #[test]
    fn empty_ruleset_enforces_nothing() {
        let (rs, image) = compile_ok(vec![]);
        assert_eq!(image, MapImage::default());
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Ingress, IPPROTO_TCP, 22),
            Verdict::NotEnforced
        );
        assert_eq!(
            rs.evaluate(ip("10.0.0.1"), Egress, IPPROTO_TCP, 22),
            Verdict::NotEnforced
        );
    }

    #[test]
    fn rule_without_peers_enforces_its_direction() {
        let (_, image) = compile_ok(vec![rule(1, Egress, Allow, vec![], vec![])]);
        assert!(!image.enforce_ingress && image.enforce_egress);
        assert!(image.identities.is_empty() && image.rules.is_empty());
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Egress, IPPROTO_TCP, 22),
            Verdict::NoMatch
        );
    }

    #[test]
    fn except_punches_hole() {
        let (rs, image) = compile_ok(vec![rule(
            1,
            Ingress,
            Allow,
            vec![CidrSet::new(net("10.0.0.0/8"), vec![net("10.1.0.0/16")])],
            vec![],
        )]);
        assert_eq!(
            image.identities,
            vec![ident("10.0.0.0/8", 1), ident("10.1.0.0/16", 2)]
        );
        assert_eq!(image.rules, vec![ent(1, Ingress, None, None, Allow, 1)]);
        assert_eq!(
            image.evaluate(ip("10.2.3.4"), Ingress, IPPROTO_UDP, 53),
            Verdict::Allow(1)
        );
        assert_eq!(
            image.evaluate(ip("10.1.3.4"), Ingress, IPPROTO_UDP, 53),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("11.0.0.1"), Ingress, IPPROTO_UDP, 53),
            Verdict::NoMatch
        );
        check_packets(
            &rs,
            &image,
            &[
                (ip("10.1.255.255"), Ingress, 6, 1),
                (ip("10.2.0.0"), Ingress, 6, 1),
            ],
        );
    }

    #[test]
    fn nested_excepts() {
        let (rs, image) = compile_ok(vec![
            // Nested excepts of one set: the inner one changes nothing.
            rule(
                1,
                Ingress,
                Allow,
                vec![CidrSet::new(
                    net("10.0.0.0/8"),
                    vec![net("10.1.0.0/16"), net("10.1.1.0/24")],
                )],
                vec![],
            ),
            // Another rule re-covers part of the hole, with its own hole.
            rule(
                2,
                Ingress,
                Deny,
                vec![CidrSet::new(net("10.1.0.0/16"), vec![net("10.1.2.0/24")])],
                vec![tcp(22, 22)],
            ),
            // And one more inside that hole.
            rule(
                3,
                Ingress,
                Allow,
                cidrs(&["10.1.2.128/25"]),
                vec![tcp(0, 65535)],
            ),
        ]);
        let cases = [
            ("10.9.0.1", 22, Verdict::Allow(1)),
            ("10.1.1.1", 22, Verdict::Deny(2)),
            ("10.1.1.1", 80, Verdict::NoMatch),
            ("10.1.3.1", 22, Verdict::Deny(2)),
            ("10.1.2.1", 22, Verdict::NoMatch),
            ("10.1.2.129", 22, Verdict::Allow(3)),
            ("10.1.2.129", 23, Verdict::Allow(3)),
        ];
        for (a, port, want) in cases {
            assert_eq!(
                image.evaluate(ip(a), Ingress, IPPROTO_TCP, port),
                want,
                "{a}:{port}"
            );
            assert_eq!(
                rs.evaluate(ip(a), Ingress, IPPROTO_TCP, port),
                want,
                "reference {a}:{port}"
            );
        }
        // 10.1.1.0/24 has the same set as 10.1.0.0/16 (only rule 2): no entry.
        assert!(!image
            .identities
            .iter()
            .any(|e| e.prefix == net("10.1.1.0/24")));
    }

    #[test]
    fn except_of_one_peer_does_not_hide_another_peer() {
        let (rs, image) = compile_ok(vec![rule(
            5,
            Egress,
            Allow,
            vec![
                CidrSet::new(net("10.0.0.0/8"), vec![net("10.1.0.0/16")]),
                CidrSet::cidr(net("10.1.1.0/24")),
            ],
            vec![],
        )]);
        for (a, want) in [
            ("10.1.1.1", Verdict::Allow(5)),
            ("10.1.2.1", Verdict::NoMatch),
            ("10.3.0.0", Verdict::Allow(5)),
        ] {
            assert_eq!(image.evaluate(ip(a), Egress, IPPROTO_TCP, 1), want, "{a}");
            assert_eq!(rs.evaluate(ip(a), Egress, IPPROTO_TCP, 1), want, "{a}");
        }
        assert_eq!(
            image.identities,
            vec![
                ident("10.0.0.0/8", 1),
                ident("10.1.0.0/16", 2),
                ident("10.1.1.0/24", 1)
            ]
        );
    }

    #[test]
    fn except_equal_to_cidr_covers_nothing() {
        let (_, image) = compile_ok(vec![
            rule(1, Ingress, Allow, cidrs(&["0.0.0.0/0"]), vec![]),
            rule(
                2,
                Ingress,
                Deny,
                vec![CidrSet::new(net("10.0.0.0/8"), vec![net("10.0.0.0/8")])],
                vec![],
            ),
        ]);
        assert_eq!(image.identities, vec![ident("0.0.0.0/0", 1)]);
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Ingress, 6, 1),
            Verdict::Allow(1)
        );
    }

    #[test]
    fn deny_inside_allow_range() {
        let (rs, image) = compile_ok(vec![
            rule(
                1,
                Ingress,
                Allow,
                cidrs(&["0.0.0.0/0"]),
                vec![tcp(1000, 2000)],
            ),
            rule(
                2,
                Ingress,
                Deny,
                cidrs(&["0.0.0.0/0"]),
                vec![tcp(1500, 1500)],
            ),
        ]);
        for (port, want) in [
            (999, Verdict::NoMatch),
            (1000, Verdict::Allow(1)),
            (1499, Verdict::Allow(1)),
            (1500, Verdict::Deny(2)),
            (1501, Verdict::Allow(1)),
            (2000, Verdict::Allow(1)),
            (2001, Verdict::NoMatch),
        ] {
            assert_eq!(
                image.evaluate(ip("1.2.3.4"), Ingress, IPPROTO_TCP, port),
                want,
                "{port}"
            );
        }
        assert_eq!(
            image.evaluate(ip("1.2.3.4"), Ingress, IPPROTO_UDP, 1500),
            Verdict::NoMatch
        );
        let denies: Vec<_> = image.rules.iter().filter(|e| e.action == Deny).collect();
        assert_eq!(
            denies,
            vec![&ent(1, Ingress, Some(6), Some((1500, 16)), Deny, 2)]
        );
        let allowed: u32 = image
            .rules
            .iter()
            .filter_map(|e| e.port.filter(|_| e.action == Allow))
            .map(|(_, l)| 1 << (16 - l))
            .sum();
        assert_eq!(allowed, 1000);
        check_packets(&rs, &image, &[(ip("1.2.3.4"), Ingress, 6, 1750)]);
    }

    #[test]
    fn allow_inside_deny_range() {
        let (_, image) = compile_ok(vec![
            rule(
                1,
                Ingress,
                Deny,
                cidrs(&["0.0.0.0/0"]),
                vec![tcp(1000, 2000)],
            ),
            rule(
                2,
                Ingress,
                Allow,
                cidrs(&["0.0.0.0/0"]),
                vec![tcp(1500, 1500), tcp(3000, 3000)],
            ),
        ]);
        assert_eq!(
            image.evaluate(ip("1.2.3.4"), Ingress, IPPROTO_TCP, 1500),
            Verdict::Deny(1)
        );
        assert_eq!(
            image.evaluate(ip("1.2.3.4"), Ingress, IPPROTO_TCP, 3000),
            Verdict::Allow(2)
        );
        assert!(image
            .rules
            .iter()
            .all(|e| e.action == Deny || e.port == Some((3000, 16))));
    }

    #[test]
    fn l3_deny_overrides_ports() {
        let (rs, image) = compile_ok(vec![
            rule(1, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![tcp(80, 80)]),
            rule(2, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![tcp(22, 22)]),
            rule(9, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![]),
            rule(3, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![]),
        ]);
        assert_eq!(image.rules, vec![ent(1, Ingress, None, None, Deny, 9)]);
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Ingress, IPPROTO_TCP, 80),
            Verdict::Deny(9)
        );
        assert_eq!(
            rs.evaluate(ip("10.0.0.1"), Ingress, IPPROTO_TCP, 22),
            Verdict::Deny(9)
        );
    }

    #[test]
    fn l3_allow_with_port_rules() {
        let (rs, image) = compile_ok(vec![
            rule(5, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![]),
            // Redundant with the L3 allow (larger id): no entry.
            rule(7, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![tcp(80, 80)]),
            // Smaller id: reported, so it needs its entry.
            rule(
                2,
                Ingress,
                Allow,
                cidrs(&["10.0.0.0/8"]),
                vec![tcp(443, 443)],
            ),
            rule(6, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![tcp(22, 22)]),
        ]);
        assert_eq!(
            image.rules,
            vec![
                ent(1, Ingress, None, None, Allow, 5),
                ent(1, Ingress, Some(6), Some((22, 16)), Deny, 6),
                ent(1, Ingress, Some(6), Some((443, 16)), Allow, 2),
            ]
        );
        let a = ip("10.0.0.1");
        let pk = [
            (a, Ingress, 6, 80),
            (a, Ingress, 6, 443),
            (a, Ingress, 6, 22),
            (a, Ingress, 17, 22),
        ];
        check_packets(&rs, &image, &pk);
    }

    #[test]
    fn any_expands_to_tcp_udp_sctp() {
        let (_, image) = compile_ok(vec![rule(
            1,
            Ingress,
            Allow,
            cidrs(&["::/0"]),
            vec![
                PortMatch::l4(L4Proto::Any, 53, None),
                PortMatch::all_ports(L4Proto::Udp),
            ],
        )]);
        let id = image
            .identities
            .iter()
            .find(|e| e.prefix == net("::/0"))
            .map(|e| e.identity);
        assert_eq!(id, Some(2));
        assert_eq!(
            image.rules,
            vec![
                ent(2, Ingress, Some(IPPROTO_TCP), Some((53, 16)), Allow, 1),
                ent(2, Ingress, Some(IPPROTO_UDP), None, Allow, 1),
                ent(2, Ingress, Some(IPPROTO_SCTP), Some((53, 16)), Allow, 1),
            ]
        );
        assert_eq!(
            image.evaluate(ip("2001:db8::1"), Ingress, IPPROTO_ICMPV6, 53),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("2001:db8::1"), Ingress, IPPROTO_SCTP, 53),
            Verdict::Allow(1)
        );
    }

    #[test]
    fn whole_range_is_proto_entry_and_adjacent_runs_merge() {
        let (_, image) = compile_ok(vec![rule(
            1,
            Egress,
            Allow,
            cidrs(&["192.168.0.0/16"]),
            vec![
                tcp(0, 65535),
                PortMatch::l4(L4Proto::Udp, 80, Some(89)),
                PortMatch::l4(L4Proto::Udp, 90, Some(95)),
            ],
        )]);
        // 80..=89 and 90..=95 merge into one aligned block 80/12.
        assert_eq!(
            image.rules,
            vec![
                ent(1, Egress, Some(6), None, Allow, 1),
                ent(1, Egress, Some(17), Some((80, 12)), Allow, 1)
            ]
        );
    }

    #[test]
    fn icmp_type_entries() {
        let (rs, image) = compile_ok(vec![rule(
            4,
            Ingress,
            Allow,
            cidrs(&["0.0.0.0/0", "::/0"]),
            vec![
                PortMatch::Icmp {
                    family: IcmpFamily::V4,
                    icmp_type: 8,
                },
                PortMatch::Icmp {
                    family: IcmpFamily::V6,
                    icmp_type: 128,
                },
            ],
        )]);
        assert_eq!(
            image.identities,
            vec![ident("0.0.0.0/0", 1), ident("::/0", 1)]
        );
        assert_eq!(
            image.rules,
            vec![
                ent(1, Ingress, Some(IPPROTO_ICMP), Some((8 << 8, 8)), Allow, 4),
                ent(
                    1,
                    Ingress,
                    Some(IPPROTO_ICMPV6),
                    Some((128 << 8, 8)),
                    Allow,
                    4
                ),
            ]
        );
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), Ingress, IPPROTO_ICMP, 8 << 8 | 3),
            Verdict::Allow(4)
        );
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), Ingress, IPPROTO_ICMP, 0),
            Verdict::NoMatch
        );
        assert_eq!(
            image.evaluate(ip("fe80::1"), Ingress, IPPROTO_ICMPV6, 128 << 8),
            Verdict::Allow(4)
        );
        check_packets(
            &rs,
            &image,
            &[(ip("fe80::1"), Ingress, IPPROTO_ICMP, 8 << 8)],
        );
    }

    #[test]
    fn identity_sharing() {
        let (_, image) = compile_ok(vec![
            rule(
                1,
                Ingress,
                Allow,
                cidrs(&["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]),
                vec![tcp(22, 22)],
            ),
            rule(
                2,
                Egress,
                Allow,
                cidrs(&["192.168.0.0/16", "10.0.0.0/8", "fd00::/8"]),
                vec![],
            ),
            rule(3, Ingress, Allow, cidrs(&["172.16.0.0/12"]), vec![]),
        ]);
        assert_eq!(
            image.identities,
            vec![
                ident("10.0.0.0/8", 1),
                ident("172.16.0.0/12", 2),
                ident("192.168.0.0/16", 1),
                ident("fd00::/8", 1)
            ]
        );
        assert_eq!(
            image.rules,
            vec![
                ent(1, Ingress, Some(6), Some((22, 16)), Allow, 1),
                ent(1, Egress, None, None, Allow, 2),
                ent(2, Ingress, None, None, Allow, 3),
            ]
        );
    }

    #[test]
    fn smallest_rule_id_wins_among_equal_actions() {
        let (rs, image) = compile_ok(vec![
            rule(
                30,
                Ingress,
                Allow,
                cidrs(&["10.0.0.0/8"]),
                vec![tcp(0, 100)],
            ),
            rule(
                10,
                Ingress,
                Allow,
                cidrs(&["10.0.0.0/8"]),
                vec![tcp(50, 150)],
            ),
            rule(20, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![tcp(60, 70)]),
            rule(
                15,
                Ingress,
                Deny,
                cidrs(&["10.1.0.0/16"]),
                vec![tcp(65, 200)],
            ),
        ]);
        let mut packets = Vec::new();
        for a in ["10.0.0.1", "10.1.0.1"] {
            for port in [
                0, 49, 50, 59, 60, 64, 65, 70, 71, 100, 101, 150, 151, 200, 201,
            ] {
                packets.push((ip(a), Ingress, IPPROTO_TCP, port));
            }
        }
        check_packets(&rs, &image, &packets);
        assert_eq!(
            image.evaluate(ip("10.1.0.1"), Ingress, 6, 66),
            Verdict::Deny(15)
        );
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Ingress, 6, 66),
            Verdict::Deny(20)
        );
        assert_eq!(
            image.evaluate(ip("10.0.0.1"), Ingress, 6, 55),
            Verdict::Allow(10)
        );
    }

    #[test]
    fn direction_isolation() {
        let (rs, image) = compile_ok(vec![rule(1, Ingress, Allow, cidrs(&["0.0.0.0/0"]), vec![])]);
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), Ingress, 6, 1),
            Verdict::Allow(1)
        );
        assert_eq!(
            image.evaluate(ip("1.1.1.1"), Egress, 6, 1),
            Verdict::NotEnforced
        );
        let (rs2, image2) = compile_ok(
            rs.rules
                .iter()
                .cloned()
                .chain([rule(2, Egress, Deny, cidrs(&["10.0.0.0/8"]), vec![])])
                .collect(),
        );
        assert_eq!(
            image2.evaluate(ip("1.1.1.1"), Egress, 6, 1),
            Verdict::NoMatch
        );
        assert_eq!(
            image2.evaluate(ip("10.1.1.1"), Egress, 6, 1),
            Verdict::Deny(2)
        );
        assert_eq!(
            image2.evaluate(ip("10.1.1.1"), Ingress, 6, 1),
            Verdict::Allow(1)
        );
        check_packets(
            &rs2,
            &image2,
            &[
                (ip("10.1.1.1"), Ingress, 6, 1),
                (ip("10.1.1.1"), Egress, 6, 1),
            ],
        );
    }

    #[test]
    fn v6_prefix_covering_mapped_range_does_not_match_v4() {
        for six in ["::/0", "::fffe:0:0/95"] {
            let (rs, image) = compile_ok(vec![rule(1, Ingress, Allow, cidrs(&[six]), vec![])]);
            for a in ["10.0.0.1", "::ffff:10.0.0.1", "::fffe:0:1", "2001:db8::1"] {
                let want = rs.evaluate(ip(a), Ingress, 6, 80);
                assert_eq!(image.evaluate(ip(a), Ingress, 6, 80), want, "{six} {a}");
            }
            assert_eq!(
                image.evaluate(ip("10.0.0.1"), Ingress, 6, 80),
                Verdict::NoMatch,
                "{six}"
            );
        }
        // `::ffff:0:0/96` is IPv4 0.0.0.0/0.
        let (_, image) = compile_ok(vec![rule(
            1,
            Ingress,
            Allow,
            cidrs(&["::ffff:0:0/96"]),
            vec![],
        )]);
        assert_eq!(image.identities, vec![ident("0.0.0.0/0", 1)]);
        // `::/0` alone: 0.0.0.0/0 gets the empty identity.
        let (_, image) = compile_ok(vec![rule(1, Ingress, Allow, cidrs(&["::/0"]), vec![])]);
        assert_eq!(
            image.identities,
            vec![ident("0.0.0.0/0", 1), ident("::/0", 2)]
        );
        assert_eq!(image.rules, vec![ent(2, Ingress, None, None, Allow, 1)]);
        // Both families present: no extra entry needed beyond their own.
        let (_, image) = compile_ok(vec![rule(
            1,
            Ingress,
            Allow,
            cidrs(&["::/0", "0.0.0.0/0"]),
            vec![],
        )]);
        assert_eq!(
            image.identities,
            vec![ident("0.0.0.0/0", 1), ident("::/0", 1)]
        );
    }

    #[test]
    fn v4_mapped_cidr_and_except_are_v4() {
        let (rs, image) = compile_ok(vec![
            rule(
                1,
                Ingress,
                Allow,
                vec![CidrSet::new(
                    net("::ffff:10.0.0.0/104"),
                    vec![net("::ffff:10.1.0.0/112")],
                )],
                vec![],
            ),
            rule(
                2,
                Ingress,
                Deny,
                vec![CidrSet::new(net("::/0"), vec![net("::ffff:10.0.0.0/104")])],
                vec![],
            ),
        ]);
        // ::/0 (rule 2) would also catch IPv4: 0.0.0.0/0 shadows it with the
        // empty identity, which the hole in rule 1 shares. Rule 2's except is
        // IPv4 space, which an IPv6 CIDR never matches anyway.
        assert_eq!(
            image.identities,
            vec![
                ident("0.0.0.0/0", 1),
                ident("10.0.0.0/8", 2),
                ident("10.1.0.0/16", 1),
                ident("::/0", 3)
            ]
        );
        assert_eq!(
            image.rules,
            vec![
                ent(2, Ingress, None, None, Allow, 1),
                ent(3, Ingress, None, None, Deny, 2)
            ]
        );
        let pk: Vec<_> = [
            "10.0.0.1",
            "10.1.0.1",
            "::ffff:10.0.0.1",
            "11.0.0.1",
            "2001::1",
        ]
        .iter()
        .map(|a| (ip(a), Ingress, 6, 1))
        .collect();
        check_packets(&rs, &image, &pk);
    }

    #[test]
    fn untruncated_input_is_normalised() {
        let (_, a) = compile_ok(vec![rule(
            1,
            Ingress,
            Allow,
            vec![CidrSet {
                cidr: net("10.9.9.9/8"),
                except: vec![net("10.1.2.3/16")],
            }],
            vec![],
        )]);
        let (_, b) = compile_ok(vec![rule(
            1,
            Ingress,
            Allow,
            vec![CidrSet::new(net("10.0.0.0/8"), vec![net("10.1.0.0/16")])],
            vec![],
        )]);
        assert_eq!(a, b);
    }

    #[test]
    fn invalid_rule_set_is_an_error() {
        let rs = RuleSet::new(vec![rule(3, Ingress, Allow, vec![], vec![tcp(2, 1)])]);
        assert!(matches!(
            compile(&rs),
            Err(ValidationError::PortRange { rule: 3, .. })
        ));
    }

    #[test]
    fn output_independent_of_rule_and_peer_order() {
        let mut rng = Rng(99);
        for _ in 0..50 {
            let rs = random_rule_set(&mut rng, 25);
            let image = compile(&rs).expect("valid");
            let mut shuffled = rs.clone();
            rng.shuffle(&mut shuffled.rules);
            for r in &mut shuffled.rules {
                rng.shuffle(&mut r.peers);
                rng.shuffle(&mut r.ports);
                for p in &mut r.peers {
                    rng.shuffle(&mut p.except);
                }
            }
            assert_eq!(compile(&shuffled).expect("valid"), image);
        }
    }

    // ---- randomized differential test against the reference semantics ----

    use crate::test_rng::Rng;

    const V4_BASES: [u32; 5] = [
        0x0a00_0000,
        0x0a01_0000,
        0x0a01_0100,
        0xc0a8_0100,
        0x0100_0000,
    ];
    const V6_BASES: [u128; 5] = [
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        0x2001_0db8_0001_0000_0000_0000_0000_0000,
        0xfd00_0000_0000_0000_0000_0000_0000_0000,
        0x0000_0000_0000_0000_0000_ffff_0a00_0000, // ::ffff:10.0.0.0, IPv4-mapped
        0,
    ];

    /// A random address near the base pools, so prefixes overlap and nest.
    fn random_addr(rng: &mut Rng) -> IpAddr {
        if rng.chance(55) {
            let base = rng.pick(&V4_BASES);
            let noise = (rng.next() as u32) >> rng.pick(&[0u32, 8, 16, 20, 24, 28, 31]);
            IpAddr::V4((base ^ noise).into())
        } else {
            let base = rng.pick(&V6_BASES);
            let noise = (u128::from(rng.next()) << 64 | u128::from(rng.next()))
                >> rng.pick(&[0u32, 16, 64, 100, 120]);
            IpAddr::V6((base ^ noise).into())
        }
    }

    fn random_net(rng: &mut Rng) -> IpNet {
        let (addr, max) = match random_addr(rng) {
            a @ IpAddr::V4(_) => (a, 32u8),
            a @ IpAddr::V6(_) => (a, 128u8),
        };
        let len = if rng.chance(10) {
            rng.below(u64::from(max) + 1) as u8
        } else if max == 32 {
            rng.pick(&[0u8, 8, 12, 16, 20, 23, 24, 25, 28, 31, 32])
        } else {
            rng.pick(&[0u8, 16, 32, 48, 64, 95, 96, 100, 104, 112, 120, 127, 128])
        };
        IpNet::new(addr, len).expect("len within family").trunc()
    }

    /// A random prefix inside `cidr` (possibly equal to it).
    fn random_inside(rng: &mut Rng, cidr: IpNet) -> IpNet {
        let max = cidr.max_prefix_len();
        let len = cidr.prefix_len() + rng.below(u64::from(max - cidr.prefix_len()) + 1) as u8;
        let addr = match cidr {
            IpNet::V4(n) => {
                let host = (rng.next() as u32) & !u32::from(n.netmask());
                IpAddr::V4((u32::from(n.network()) | host).into())
            }
            IpNet::V6(n) => {
                let host = (u128::from(rng.next()) << 64 | u128::from(rng.next()))
                    & !u128::from(n.netmask());
                IpAddr::V6((u128::from(n.network()) | host).into())
            }
        };
        IpNet::new(addr, len).expect("len within family").trunc()
    }

    fn random_ports(rng: &mut Rng) -> Vec<PortMatch> {
        if rng.chance(30) {
            return Vec::new();
        }
        let interesting = [
            0u16, 1, 21, 22, 23, 53, 79, 80, 81, 443, 1023, 1024, 8080, 32768, 65534, 65535,
        ];
        (0..1 + rng.below(3))
            .map(|_| {
                if rng.chance(15) {
                    let family = if rng.chance(50) {
                        IcmpFamily::V4
                    } else {
                        IcmpFamily::V6
                    };
                    PortMatch::Icmp {
                        family,
                        icmp_type: rng.pick(&[0u8, 3, 8, 128, 129, 135]),
                    }
                } else {
                    let proto = rng.pick(&[
                        L4Proto::Tcp,
                        L4Proto::Tcp,
                        L4Proto::Udp,
                        L4Proto::Sctp,
                        L4Proto::Any,
                    ]);
                    let a = if rng.chance(70) {
                        rng.pick(&interesting)
                    } else {
                        rng.next() as u16
                    };
                    let b = match rng.below(4) {
                        0 => a,
                        1 => rng.pick(&interesting),
                        2 => u16::MAX,
                        _ => a.saturating_add(rng.below(200) as u16),
                    };
                    PortMatch::L4 {
                        proto,
                        first: a.min(b),
                        last: a.max(b),
                    }
                }
            })
            .collect()
    }

    fn random_rule_set(rng: &mut Rng, max_rules: u64) -> RuleSet {
        let n = rng.below(max_rules + 1);
        let mut ids: Vec<u32> = (1..=(n as u32 * 3 + 1)).collect();
        rng.shuffle(&mut ids);
        let rules = (0..n as usize)
            .map(|i| {
                let peers = (0..rng.below(4))
                    .map(|_| {
                        let cidr = random_net(rng);
                        let except = if rng.chance(35) {
                            (0..1 + rng.below(3))
                                .map(|_| random_inside(rng, cidr))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        CidrSet::new(cidr, except)
                    })
                    .collect();
                Rule {
                    id: ids[i],
                    direction: if rng.chance(65) { Ingress } else { Egress },
                    action: if rng.chance(65) { Allow } else { Deny },
                    peers,
                    ports: random_ports(rng),
                }
            })
            .collect();
        RuleSet::new(rules)
    }

    /// Packets aimed at the rules' prefixes and ports, plus random ones.
    fn random_packet(rng: &mut Rng, rs: &RuleSet) -> (IpAddr, Direction, u8, u16) {
        let prefixes: Vec<IpNet> = rs
            .rules
            .iter()
            .flat_map(|r| r.peers.iter())
            .flat_map(|p| std::iter::once(p.cidr).chain(p.except.iter().copied()))
            .collect();
        let addr = if !prefixes.is_empty() && rng.chance(80) {
            let p = prefixes[rng.below(prefixes.len() as u64) as usize];
            let inner = random_inside(rng, p);
            // Sometimes the IPv6 spelling of an IPv4 address.
            match inner.addr() {
                IpAddr::V4(v4) if rng.chance(10) => IpAddr::V6(v4.to_ipv6_mapped()),
                a => a,
            }
        } else {
            random_addr(rng)
        };
        let direction = if rng.chance(50) { Ingress } else { Egress };
        let proto = rng.pick(&[
            IPPROTO_TCP,
            IPPROTO_TCP,
            IPPROTO_UDP,
            IPPROTO_SCTP,
            IPPROTO_ICMP,
            IPPROTO_ICMPV6,
            47,
        ]);
        let ports: Vec<(u16, u16)> = rs
            .rules
            .iter()
            .flat_map(|r| r.ports.iter())
            .flat_map(|m| m.intervals())
            .map(|(_, f, l)| (f, l))
            .collect();
        let port = if !ports.is_empty() && rng.chance(70) {
            let (f, l) = ports[rng.below(ports.len() as u64) as usize];
            match rng.below(4) {
                0 => f,
                1 => l,
                2 => f.wrapping_sub(1),
                _ => l.wrapping_add(1),
            }
        } else {
            rng.next() as u16
        };
        (addr, direction, proto, port)
    }

    #[test]
    fn differential_random_rule_sets() {
        let mut rng = Rng(0x5eed_0001);
        let mut checked = 0u64;
        let mut decided = [0u64; 4];
        for case in 0..600 {
            let rs = random_rule_set(&mut rng, if case % 10 == 0 { 60 } else { 12 });
            let image = compile(&rs).unwrap_or_else(|e| panic!("case {case}: {e}"));
            check_invariants(&image);
            let lookup = image.lookup();
            for _ in 0..150 {
                let (a, d, p, port) = random_packet(&mut rng, &rs);
                let want = rs.evaluate(a, d, p, port);
                let got = lookup.evaluate(a, d, p, port);
                assert_eq!(got, want, "case {case}: {a} {d:?} proto {p} port {port}\nrules: {rs:#?}\nimage: {image:#?}");
                checked += 1;
                decided[match want {
                    Verdict::Allow(_) => 0,
                    Verdict::Deny(_) => 1,
                    Verdict::NoMatch => 2,
                    Verdict::NotEnforced => 3,
                }] += 1;
            }
        }
        // The generator must exercise every outcome, or the test proves little.
        assert!(
            decided.iter().all(|&n| n > checked / 50),
            "outcomes allow/deny/nomatch/notenforced: {decided:?}"
        );
    }

    #[test]
    fn large_rule_set_sampled() {
        let mut rng = Rng(0xb16);
        let mut rules = Vec::with_capacity(100_100);
        for id in 1..=100_000u32 {
            let cidr = if rng.chance(70) {
                let a = 0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff);
                IpNet::new(
                    IpAddr::V4(a.into()),
                    rng.pick(&[16u8, 20, 24, 24, 28, 32, 32]),
                )
                .expect("len")
                .trunc()
            } else {
                let a = 0x2001_0db8_u128 << 96 | (u128::from(rng.next()) << 32);
                IpNet::new(IpAddr::V6(a.into()), rng.pick(&[48u8, 56, 64, 64, 96, 128]))
                    .expect("len")
                    .trunc()
            };
            let except = if rng.chance(10) {
                vec![random_inside(&mut rng, cidr)]
            } else {
                Vec::new()
            };
            let ports = if rng.chance(20) {
                vec![tcp(rng.pick(&[22u16, 80, 443]), rng.pick(&[443u16, 8080]))]
            } else {
                vec![]
            };
            rules.push(Rule {
                id,
                direction: if rng.chance(70) { Ingress } else { Egress },
                action: if rng.chance(80) { Allow } else { Deny },
                peers: vec![CidrSet::new(cidr, except)],
                ports,
            });
        }
        // Port ranges on prefixes from the whole space down to a /48: every
        // identity below one of them carries its entries (the cross product
        // of the single rule lookup), so the wide ones dominate the output.
        let broad = [
            "0.0.0.0/0",
            "10.128.0.0/12",
            "10.200.0.0/16",
            "10.1.2.0/24",
            "192.168.0.0/16",
            "::/0",
            "2001:db8:8000::/36",
            "2001:db8:1::/48",
        ];
        for id in 100_001..=100_100u32 {
            let a = rng.next() as u16;
            let b = a.saturating_add(rng.pick(&[0u16, 10, 100, 1000, 5000]));
            let proto = rng.pick(&[L4Proto::Tcp, L4Proto::Udp, L4Proto::Any]);
            rules.push(Rule {
                id,
                direction: if rng.chance(50) { Ingress } else { Egress },
                action: if rng.chance(70) { Allow } else { Deny },
                peers: cidrs(&[rng.pick(&broad)]),
                ports: vec![PortMatch::L4 {
                    proto,
                    first: a,
                    last: b,
                }],
            });
        }
        let rs = RuleSet::new(rules);
        let start = Instant::now();
        let image = compile(&rs).expect("valid");
        let elapsed = start.elapsed();
        eprintln!(
            "large_rule_set_sampled: compiled {} rules into {} identity entries, {} rule entries in {:?}",
            rs.rules.len(),
            image.identities.len(),
            image.rules.len(),
            elapsed
        );
        check_invariants(&image);
        let lookup = image.lookup();
        // The naive reference over 100k rules per packet is slow in debug
        // builds, so narrow it per address first (same semantics).
        for _ in 0..200 {
            let r = &rs.rules[rng.below(100_000) as usize];
            let addr = random_inside(&mut rng, r.peers[0].cidr).addr();
            let local = RuleSet::new(
                rs.rules
                    .iter()
                    .filter(|r| r.peers.iter().any(|p| p.contains(addr)))
                    .cloned()
                    .collect(),
            );
            for _ in 0..10 {
                let d = if rng.chance(50) { Ingress } else { Egress };
                let p = rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
                let random_port = rng.next() as u16;
                let port = rng.pick(&[22u16, 80, 443, 8080, random_port]);
                let want = match local.evaluate(addr, d, p, port) {
                    Verdict::NotEnforced if rs.enforces(d) => Verdict::NoMatch,
                    v => v,
                };
                assert_eq!(
                    lookup.evaluate(addr, d, p, port),
                    want,
                    "{addr} {d:?} {p} {port}"
                );
            }
        }
    }
}
