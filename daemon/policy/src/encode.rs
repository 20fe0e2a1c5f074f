//! The policy → map encoding: how a compiled [`MapImage`] becomes the key
//! and value bytes of the datapath's policy maps (`hf_ident4`, `hf_ident6`,
//! `hf_rules`, `hf_policy_meta`), in the `#[repr(C)]` layouts of
//! `hostfwd_bpf::layout`. Pure: the daemon's `datapath` writes the result
//! into the kernel; this file may not touch a map, and may not change what
//! the image means (the tests hold it to [`MapImage::evaluate`]).

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::net::IpAddr;

use hostfwd_bpf::layout as l;

use crate::image::{prefix_mask, MapImage, MAPPED_BASE};
use crate::model::{Action, Direction};

/// A direction as the datapath's keys hold it (`HF_DIR_*`).
pub fn dir_code(d: Direction) -> u8 {
    match d {
        Direction::Ingress => l::DIR_INGRESS,
        Direction::Egress => l::DIR_EGRESS,
    }
}

/// Room for both generations of rule entries.
#[cfg(test)]
const RULE_CAPACITY: usize = l::RULES_MAX_ENTRIES as usize;

/// Port prefixes of a head may be expanded into longer ones so that a
/// lookup probes fewer lengths, as long as the head's port entries grow by
/// at most this factor (or this many entries, whichever is more).
const EXPANSION_FACTOR: usize = 4;
const EXPANSION_SLACK: usize = 64;

/// (action code, rule id) of a rule entry.
type Hit = (u8, u32);

/// The policy maps' contents for one generation, as the daemon's
/// `Datapath::apply_policy` writes them.
///
/// The image describes two longest-prefix matches ([`MapImage::evaluate`]);
/// the datapath (`policy.h`) does each as exact-match lookups, one per prefix
/// length in use, longest first, so its cost does not grow with the number
/// of entries:
/// - **Identities**, per family. The image's table is one 128-bit space with
///   IPv4 mapped into `::ffff:0:0/96`; for an IPv4 address only entries
///   inside that block can match, plus the entries covering the whole block
///   (such as `::/0`), of which the longest acts as an IPv4 `/0`. For any
///   other address, only entries not inside the block can match. The lengths
///   in use are listed in `meta`, longest first.
/// - **Rules**, per (identity, direction, protocol): a head entry with the
///   port prefix lengths in use below it, the 1024-port blocks they reach,
///   and the result when no port prefix matches (the protocol-wide entry,
///   else the any-protocol one); block entries where probing all lengths
///   would cost more (`block_details`); the port prefixes, possibly
///   expanded into fewer distinct lengths (controlled prefix expansion: a
///   /12 becomes sixteen /16s); the any-protocol entry of (identity,
///   direction) for protocols without a head.
#[derive(Debug, Default, Clone)]
pub struct PolicyMaps {
    pub ident4: Vec<(l::Ident4Key, u32)>,
    pub ident6: Vec<(l::Ident6Key, u32)>,
    pub rules: Vec<(l::RuleKey, l::RuleVal)>,
    pub meta: l::PolicyMeta,
}

/// The rule entries of one (identity, direction, protocol).
#[derive(Debug, Default)]
struct Head {
    proto_wide: Option<Hit>,
    /// (prefix length 1..=16, masked port, hit), in image order.
    ports: Vec<(u8, u16, Hit)>,
}

fn action_code(a: Action) -> u8 {
    match a {
        Action::Allow => l::ACTION_ALLOW,
        Action::Deny => l::ACTION_DENY,
    }
}

impl PolicyMaps {
    /// The maps of `image` as generation `gen`. Port prefix expansion is
    /// dropped if it would take more than half of `capacity` (the other
    /// generation needs room until the next swap).
    pub fn new(image: &MapImage, gen: u8, capacity: usize) -> PolicyMaps {
        let mut maps = PolicyMaps::default();
        maps.meta.flags = (if image.enforce_ingress { l::P_ENFORCE_INGRESS } else { 0 })
            | (if image.enforce_egress { l::P_ENFORCE_EGRESS } else { 0 });
        maps.identities(image, gen);
        maps.rules = rule_entries(image, gen, true);
        if maps.rules.len() > capacity / 2 {
            maps.rules = rule_entries(image, gen, false);
        }
        maps
    }

    fn identities(&mut self, image: &MapImage, gen: u8) {
        // Later duplicates win, as later updates of one key do.
        let mut v4: BTreeMap<(u8, u32), u32> = BTreeMap::new();
        let mut v6: BTreeMap<(u8, u128), u32> = BTreeMap::new();
        // The longest entry covering all of ::ffff:0:0/96 from outside it.
        let mut cover: Option<(u8, u32)> = None;
        for e in &image.identities {
            let (addr, len) = e.mapped();
            let addr = u128::from(addr) & prefix_mask(len, 128);
            if len >= 96 && addr & prefix_mask(96, 128) == MAPPED_BASE {
                v4.insert((len - 96, addr as u32), e.identity);
            } else {
                v6.insert((len, addr), e.identity);
                if len < 96 && MAPPED_BASE & prefix_mask(len, 128) == addr && cover.is_none_or(|(l, _)| len >= l) {
                    cover = Some((len, e.identity));
                }
            }
        }
        if let Some((_, identity)) = cover {
            v4.entry((0, 0)).or_insert(identity);
        }

        let mut lens4: Vec<u8> = v4.keys().map(|&(len, _)| len).collect();
        let mut lens6: Vec<u8> = v6.keys().map(|&(len, _)| len).collect();
        for lens in [&mut lens4, &mut lens6] {
            lens.sort_unstable_by(|a, b| b.cmp(a));
            lens.dedup();
        }
        self.meta.ident4_nlens = lens4.len() as u8;
        self.meta.ident4_lens.0[..lens4.len()].copy_from_slice(&lens4);
        self.meta.ident6_nlens = lens6.len() as u8;
        self.meta.ident6_lens.0[..lens6.len()].copy_from_slice(&lens6);

        self.ident4 = v4
            .into_iter()
            .map(|((plen, addr), id)| (l::Ident4Key { gen, plen, pad: [0; 2], addr: addr.to_be_bytes() }, id))
            .collect();
        self.ident6 = v6
            .into_iter()
            .map(|((plen, addr), id)| (l::Ident6Key { gen, plen, pad: [0; 2], addr: addr.to_be_bytes() }, id))
            .collect();
    }
}

/// Every rule-map entry of `image` as generation `gen`.
fn rule_entries(image: &MapImage, gen: u8, expand: bool) -> Vec<(l::RuleKey, l::RuleVal)> {
    let mut heads: BTreeMap<(u32, u8, u8), Head> = BTreeMap::new();
    let mut any: BTreeMap<(u32, u8), Hit> = BTreeMap::new();
    for r in &image.rules {
        let dir = dir_code(r.direction);
        let hit = (action_code(r.action), r.rule_id);
        match (r.proto, r.port) {
            (None, _) => {
                any.insert((r.identity, dir), hit);
            }
            // A zero-length port prefix is the whole protocol.
            (Some(proto), None) | (Some(proto), Some((_, 0))) => {
                heads.entry((r.identity, dir, proto)).or_default().proto_wide = Some(hit);
            }
            (Some(proto), Some((port, plen))) => {
                let plen = plen.min(16);
                heads.entry((r.identity, dir, proto)).or_default().ports.push((plen, port & (prefix_mask(plen, 16) as u16), hit));
            }
        }
    }

    let key = |identity, dir, proto, kind, port| l::RuleKey { identity, gen, dir, proto, kind, port, pad: [0; 2] };
    let mut out = Vec::new();
    for ((identity, dir), &(action, rule_id)) in &any {
        out.push((key(*identity, *dir, 0, l::RK_ANY, 0), l::RuleVal { rule_id, action, ..l::RuleVal::default() }));
    }
    for (&(identity, dir, proto), head) in &heads {
        let (action, rule_id) = head.proto_wide.or_else(|| any.get(&(identity, dir)).copied()).unwrap_or((0, 0));
        let ports = expand_ports(&head.ports, expand);
        let port_lens = ports.keys().fold(0u16, |bits, &(len, _)| bits | 1 << (len - 1));
        let port_blocks = ports.keys().fold(0u64, |bits, &(len, port)| bits | port_blocks(len, port));
        let details = block_details(&ports, port_lens);
        let port_detail = details.keys().fold(0u64, |bits, &block| bits | 1 << block);
        let head = l::RuleVal { rule_id, action, port_lens, port_blocks, port_detail, ..l::RuleVal::default() };
        out.push((key(identity, dir, proto, l::RK_PROTO, 0), head));
        for (block, (port_lens, port_blocks)) in details {
            let v = l::RuleVal { port_lens, port_blocks, ..l::RuleVal::default() };
            out.push((key(identity, dir, proto, l::RK_BLOCK, block), v));
        }
        for ((len, port), (action, rule_id)) in ports {
            out.push((key(identity, dir, proto, len, port), l::RuleVal { rule_id, action, ..l::RuleVal::default() }));
        }
    }
    out
}

/// The bits of a head's `port_blocks` that the port prefix `port/len`
/// (1..=16, `port` masked) reaches: one per block of `1 << PORT_BLOCK_SHIFT`
/// ports it intersects, every block it spans when shorter than a block.
fn port_blocks(len: u8, port: u16) -> u64 {
    let last = port | (0xffffu32 >> len) as u16;
    let (first, last) = (port >> l::PORT_BLOCK_SHIFT, last >> l::PORT_BLOCK_SHIFT);
    // Bits first..=last; last is at most 63.
    (u64::MAX >> (63 - last)) & (u64::MAX << first)
}

/// The block entries of a head whose (expanded) port prefixes have the
/// lengths `head_lens`: block → (lengths reaching into it, its 16-port
/// granules they reach). A port in a block with an entry costs one lookup
/// more when a prefix matches, and one lookup instead of a probe per length
/// when none does; so there are entries only where a head has 2 lengths or
/// more, and not for a block whose only length is the head's longest (a
/// match there takes one probe without the entry).
fn block_details(ports: &BTreeMap<(u8, u16), Hit>, head_lens: u16) -> BTreeMap<u16, (u16, u64)> {
    let mut out: BTreeMap<u16, (u16, u64)> = BTreeMap::new();
    if head_lens.count_ones() < 2 {
        return out;
    }
    let (block, granule) = (l::PORT_BLOCK_SHIFT, l::PORT_GRANULE_SHIFT);
    for &(len, port) in ports.keys() {
        let last = port | (0xffffu32 >> len) as u16;
        for b in port >> block..=last >> block {
            let (lo, hi) = (port.max(b << block), last.min(b << block | ((1 << block) - 1)));
            let (g0, g1) = ((lo >> granule) & 63, (hi >> granule) & 63);
            let e = out.entry(b).or_default();
            e.0 |= 1 << (len - 1);
            e.1 |= (u64::MAX >> (63 - g1)) & (u64::MAX << g0);
        }
    }
    let longest = 1u16 << (15 - head_lens.leading_zeros());
    out.retain(|_, &mut (lens, _)| lens != longest);
    out
}

/// A head's port prefixes as entries keyed (length, masked port), expanded
/// into fewer distinct lengths where the budget allows. Longest match is
/// preserved: within a group of lengths expanded to the same target,
/// longer (then later) prefixes overwrite shorter ones, and the datapath
/// probes longer targets first.
fn expand_ports(ports: &[(u8, u16, Hit)], expand: bool) -> BTreeMap<(u8, u16), Hit> {
    let mut count: BTreeMap<u8, usize> = BTreeMap::new();
    for &(len, _, _) in ports {
        *count.entry(len).or_default() += 1;
    }
    let budget = if expand { (ports.len() * EXPANSION_FACTOR).max(ports.len() + EXPANSION_SLACK) } else { 0 };
    let target = expansion_targets(&count, budget);

    let mut sorted: Vec<&(u8, u16, Hit)> = ports.iter().collect();
    sorted.sort_by_key(|&&(len, _, _)| len); // stable: image order within a length
    let mut out = BTreeMap::new();
    for &&(len, port, hit) in &sorted {
        let t = target[&len];
        for suffix in 0..1u32 << (t - len) {
            let p = port | (suffix << (16 - t)) as u16;
            out.insert((t, p), hit);
        }
    }
    out
}

/// For each prefix length (with its number of entries), the length it is
/// expanded to. The sorted lengths are cut into runs, each expanded to its
/// longest length: the fewest runs (probes) whose total entry count stays
/// within `budget`, cheapest first; one run per length if nothing fits.
fn expansion_targets(count: &BTreeMap<u8, usize>, budget: usize) -> BTreeMap<u8, u8> {
    let lens: Vec<u8> = count.keys().copied().collect();
    let n = lens.len();
    if n == 0 {
        return BTreeMap::new();
    }
    // cost[i][j]: entries of lengths i..=j expanded to lens[j].
    let cost = |i: usize, j: usize| -> usize {
        (i..=j).map(|m| count[&lens[m]].saturating_mul(1usize << (lens[j] - lens[m]))).fold(0, usize::saturating_add)
    };
    // best[g][j]: cheapest split of lengths 0..=j into g runs, with the start
    // of its last run.
    let mut best = vec![vec![(usize::MAX, 0usize); n]; n + 1];
    for (j, b) in best[1].iter_mut().enumerate() {
        *b = (cost(0, j), 0);
    }
    for g in 2..=n {
        for j in g - 1..n {
            for i in g - 1..=j {
                let prev = best[g - 1][i - 1].0;
                let c = prev.saturating_add(cost(i, j));
                if c < best[g][j].0 {
                    best[g][j] = (c, i);
                }
            }
        }
    }
    let mut out: BTreeMap<u8, u8> = lens.iter().map(|&len| (len, len)).collect();
    let Some(groups) = (1..=n).find(|&g| best[g][n - 1].0 <= budget) else { return out };
    let (mut j, mut g) = (n - 1, groups);
    loop {
        let start = best[g][j].1;
        for m in start..=j {
            out.insert(lens[m], lens[j]);
        }
        if g == 1 {
            break;
        }
        j = start - 1;
        g -= 1;
    }
    out
}

#[cfg(test)]
impl PolicyMaps {
    /// The datapath's two lookups (`hf_policy_eval` in policy.h) over these
    /// entries, step by step: (action code, rule id) of the entry found.
    fn lookup(&self, remote: IpAddr, dir: u8, proto: u8, port: u16) -> Option<Hit> {
        let addr = u128::from(crate::image::mapped_addr(remote));
        let identity = if addr & prefix_mask(96, 128) == MAPPED_BASE {
            let v4: HashMap<_, _> = self.ident4.iter().map(|(k, v)| ((k.gen, k.plen, k.addr), *v)).collect();
            let lens = &self.meta.ident4_lens.0[..self.meta.ident4_nlens as usize];
            let gen = self.ident4.first().map_or(0, |(k, _)| k.gen);
            lens.iter().find_map(|&len| v4.get(&(gen, len, (addr as u32 & (prefix_mask(len, 32) as u32)).to_be_bytes())).copied())
        } else {
            let v6: HashMap<_, _> = self.ident6.iter().map(|(k, v)| ((k.gen, k.plen, k.addr), *v)).collect();
            let lens = &self.meta.ident6_lens.0[..self.meta.ident6_nlens as usize];
            let gen = self.ident6.first().map_or(0, |(k, _)| k.gen);
            lens.iter().find_map(|&len| v6.get(&(gen, len, (addr & prefix_mask(len, 128)).to_be_bytes())).copied())
        }
        .unwrap_or(0);

        let rules: HashMap<_, _> = self.rules.iter().map(|(k, v)| ((k.identity, k.dir, k.proto, k.kind, k.port), *v)).collect();
        match rules.get(&(identity, dir, proto, l::RK_PROTO, 0)) {
            Some(head) => {
                let block = port >> l::PORT_BLOCK_SHIFT;
                let mut lens = if head.port_blocks & 1 << block != 0 { head.port_lens } else { 0 };
                if lens != 0 && head.port_detail & 1 << block != 0 {
                    lens = match rules.get(&(identity, dir, proto, l::RK_BLOCK, block)) {
                        Some(b) if b.port_blocks & 1 << ((port >> l::PORT_GRANULE_SHIFT) & 63) != 0 => b.port_lens,
                        _ => 0,
                    };
                }
                (1..=16u8)
                    .rev()
                    .filter(|&n| lens & 1 << (n - 1) != 0)
                    .find_map(|n| rules.get(&(identity, dir, proto, n, port & (prefix_mask(n, 16) as u16))))
                    .or((head.action != 0).then_some(head))
                    .map(|v| (v.action, v.rule_id))
            }
            None => rules.get(&(identity, dir, 0, l::RK_ANY, 0)).map(|v| (v.action, v.rule_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ipnet::IpNet;

    use super::*;
    use crate::image::{IdentityEntry, RuleEntry};
    use crate::model::Verdict;
    use crate::test_rng::Rng;

    /// An address near the interesting places: inside one of `nets`, in
    /// the IPv4-mapped block, or anywhere.
    fn random_addr(rng: &mut Rng, nets: &[IpNet]) -> IpAddr {
        let raw = u128::from(rng.next()) << 64 | u128::from(rng.next());
        if !nets.is_empty() && rng.below(4) != 0 {
            let net = nets[rng.below(nets.len() as u64) as usize];
            let (addr, len) = IdentityEntry { prefix: net, identity: 1 }.mapped();
            let a = u128::from(addr) & prefix_mask(len, 128) | raw & !prefix_mask(len, 128);
            let v6 = Ipv6Addr::from(a);
            // IPv4 as IPv4, with an occasional IPv4-mapped IPv6 twin.
            return match v6.to_ipv4_mapped() {
                Some(v4) if rng.below(8) != 0 => IpAddr::V4(v4),
                _ => IpAddr::V6(v6),
            };
        }
        match rng.below(3) {
            0 => IpAddr::V4(Ipv4Addr::from(raw as u32)),
            1 => IpAddr::V6(Ipv6Addr::from(MAPPED_BASE | (raw & 0xffff_ffff))),
            _ => IpAddr::V6(Ipv6Addr::from(raw)),
        }
    }

    fn random_net(rng: &mut Rng) -> IpNet {
        let raw = u128::from(rng.next()) << 64 | u128::from(rng.next());
        let net = match rng.below(6) {
            0..=2 => IpNet::new(IpAddr::V4(Ipv4Addr::from(raw as u32 & 0x0a0f_ffff)), rng.below(33) as u8),
            // Short IPv6 prefixes, most covering ::ffff:0:0/96 (::/0, ::/80,
            // ::fffe:0:0/95, ...), some beside it.
            3 => {
                let base = if rng.below(4) == 0 { raw & MAPPED_BASE } else { MAPPED_BASE };
                IpNet::new(IpAddr::V6(Ipv6Addr::from(base)), rng.pick(&[0, 1, 16, 64, 80, 94, 95, 96]))
            }
            // Inside the IPv4-mapped block, written as IPv6.
            4 => IpNet::new(IpAddr::V6(Ipv6Addr::from(MAPPED_BASE | (raw & 0x0a0f_ffff))), 96 + rng.below(33) as u8),
            _ => IpNet::new(IpAddr::V6(Ipv6Addr::from(raw & !(u128::MAX >> 16) | 0x2001 << 112)), rng.below(129) as u8),
        };
        net.expect("prefix length in range").trunc()
    }

    fn random_image(rng: &mut Rng) -> MapImage {
        let identities: Vec<IdentityEntry> =
            (0..rng.below(40)).map(|_| IdentityEntry { prefix: random_net(rng), identity: 1 + rng.below(6) as u32 }).collect();
        let protos = [1u8, 6, 17, 58, 132, 47];
        let rules = (0..rng.below(120))
            .map(|_| {
                let proto = if rng.below(6) == 0 { None } else { Some(rng.pick(&protos)) };
                let port = match rng.below(4) {
                    0 => None,
                    _ => {
                        let plen = 1 + rng.below(16) as u8;
                        // Ports clustered so that prefixes nest and overlap.
                        Some(((rng.below(64) as u16) << 10 | rng.below(1 << 10) as u16, plen))
                    }
                };
                RuleEntry {
                    identity: rng.below(7) as u32,
                    direction: if rng.below(2) == 0 { Direction::Ingress } else { Direction::Egress },
                    proto,
                    port,
                    action: if rng.below(3) == 0 { Action::Deny } else { Action::Allow },
                    rule_id: rng.below(1000) as u32,
                }
            })
            .collect();
        MapImage { enforce_ingress: true, enforce_egress: true, identities, rules }
    }

    fn expected(v: Verdict) -> Option<Hit> {
        match v {
            Verdict::Allow(id) => Some((l::ACTION_ALLOW, id)),
            Verdict::Deny(id) => Some((l::ACTION_DENY, id)),
            Verdict::NoMatch | Verdict::NotEnforced => None,
        }
    }

    /// The hashes answer exactly what the image's longest-prefix matches
    /// answer, on random images (overlapping and nested prefixes, IPv6
    /// prefixes covering the IPv4-mapped block, duplicate keys) and packets
    /// aimed at their prefixes and ports.
    #[test]
    fn hashes_agree_with_the_image() {
        let mut rng = Rng(0x6f6f_7061);
        for round in 0..400 {
            let image = random_image(&mut rng);
            let expand = round % 2 == 0;
            let maps = PolicyMaps::new(&image, (round % 2) as u8, if expand { RULE_CAPACITY } else { 0 });
            let reference = image.lookup();
            let nets: Vec<IpNet> = image.identities.iter().map(|e| e.prefix).collect();
            for _ in 0..300 {
                let mut remote = random_addr(&mut rng, &nets);
                let mut dir = if rng.below(2) == 0 { Direction::Ingress } else { Direction::Egress };
                let mut proto = rng.pick(&[1u8, 6, 17, 58, 132, 47, 0]);
                let mut port = rng.next() as u16;
                // Mostly aimed at a rule: its identity's addresses, its
                // direction, protocol and (a neighbourhood of) its port.
                if let Some(r) = image.rules.get(rng.below(image.rules.len() as u64 + 1) as usize) {
                    let own: Vec<IpNet> = image.identities.iter().filter(|e| e.identity == r.identity).map(|e| e.prefix).collect();
                    remote = random_addr(&mut rng, &own);
                    dir = r.direction;
                    proto = r.proto.filter(|_| rng.below(5) != 0).unwrap_or(proto);
                    if let Some((p, plen)) = r.port {
                        let wider = plen.saturating_sub(rng.below(3) as u8);
                        port = p & (prefix_mask(wider, 16) as u16) | (rng.next() as u16 & !(prefix_mask(wider, 16) as u16));
                    }
                }
                let want = expected(reference.evaluate(remote, dir, proto, port));
                let got = maps.lookup(remote, dir_code(dir), proto, port);
                assert_eq!(got, want, "round {round}: {remote} {dir:?} proto {proto} port {port}\n{image:#?}");
            }
        }
    }

    #[test]
    fn expansion_fewest_probes_within_budget() {
        let count = |v: &[(u8, usize)]| v.iter().copied().collect::<BTreeMap<u8, usize>>();
        // One /16 and one /12: sixteen /16s plus one, within 4x of two.
        let t = expansion_targets(&count(&[(12, 1), (16, 1)]), 64);
        assert_eq!((t[&12], t[&16]), (16, 16));
        // A /1 next to a /16 would cost 32768 entries: two probes instead.
        let t = expansion_targets(&count(&[(1, 1), (2, 1), (16, 1)]), 66);
        assert_eq!((t[&1], t[&2], t[&16]), (2, 2, 16));
        // No budget: every length stays.
        let t = expansion_targets(&count(&[(3, 2), (9, 1)]), 0);
        assert_eq!((t[&3], t[&9]), (3, 9));
    }

    #[test]
    fn expansion_keeps_the_longest_match() {
        let allow = (l::ACTION_ALLOW, 1);
        let deny = (l::ACTION_DENY, 2);
        // 8000/13 allow (8000..=8007) with 8004/15 deny (8004, 8005) inside.
        let out = expand_ports(&[(15, 8004, deny), (13, 8000, allow)], true);
        let at = |p: u16| out.get(&(15, p)).copied();
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!((at(8000), at(8002), at(8004), at(8006)), (Some(allow), Some(allow), Some(deny), Some(allow)));
    }

    /// The head's block bits at the edges: the last port of a block and
    /// the first of the next, ports 0 and 65535, a prefix wider than a
    /// block (/5: two blocks) and one of exactly a block (/6); a port in a
    /// clear block gets the head's own answer, as after every probe missed.
    #[test]
    fn port_blocks_at_the_edges() {
        assert_eq!(port_blocks(16, 0), 1);
        assert_eq!(port_blocks(16, 1023), 1);
        assert_eq!(port_blocks(16, 1024), 1 << 1);
        assert_eq!(port_blocks(16, 65535), 1 << 63);
        assert_eq!(port_blocks(6, 1024), 1 << 1);
        assert_eq!(port_blocks(5, 8192), 0b11 << 8);
        assert_eq!(port_blocks(1, 0x8000), u64::MAX << 32);
        assert_eq!(port_blocks(1, 0), u64::MAX >> 32);

        let tcp = |port: Option<(u16, u8)>, action, rule_id| RuleEntry {
            identity: 0,
            direction: Direction::Ingress,
            proto: Some(6),
            port,
            action,
            rule_id,
        };
        let mut image = MapImage {
            enforce_ingress: true,
            enforce_egress: true,
            identities: Vec::new(),
            rules: vec![
                tcp(Some((0, 16)), Action::Allow, 1),
                tcp(Some((1023, 16)), Action::Allow, 2),
                tcp(Some((8192, 5)), Action::Deny, 3), // 8192..=10239
                tcp(Some((65535, 16)), Action::Allow, 4),
            ],
        };
        let ports = [0, 1, 1022, 1023, 1024, 2047, 8191, 8192, 9216, 10239, 10240, 64511, 64512, 65534, 65535];
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        for proto_wide in [None, Some(Action::Deny)] {
            if let Some(action) = proto_wide {
                image.rules.push(tcp(None, action, 5));
            }
            let reference = image.lookup();
            for expand in [true, false] {
                let maps = PolicyMaps::new(&image, 1, if expand { RULE_CAPACITY } else { 0 });
                let head = maps.rules.iter().find(|(k, _)| k.kind == l::RK_PROTO).map(|(_, v)| *v).unwrap();
                assert_eq!(head.port_blocks, 1 | 1 << 8 | 1 << 9 | 1 << 63, "expand {expand}");
                for port in ports {
                    let want = expected(reference.evaluate(remote, Direction::Ingress, 6, port));
                    let hit = |action, id| Some((action, id));
                    let own = match port {
                        0 => hit(l::ACTION_ALLOW, 1),
                        1023 => hit(l::ACTION_ALLOW, 2),
                        8192..=10239 => hit(l::ACTION_DENY, 3),
                        65535 => hit(l::ACTION_ALLOW, 4),
                        _ => proto_wide.map(|_| (l::ACTION_DENY, 5)),
                    };
                    assert_eq!(want, own, "reference, port {port}");
                    assert_eq!(maps.lookup(remote, l::DIR_INGRESS, 6, port), want, "port {port}, expand {expand}");
                }
            }
        }
    }

    /// Block entries: the bench's shape (TCP/443 and 100 ranges of 58
    /// ports, 2000..=11957, six prefix lengths) gets one for every block
    /// the ranges reach, none for block 0 (only 443/16, the longest
    /// length); a port between two ranges falls in a clear granule; every
    /// port gets the image's verdict.
    #[test]
    fn block_entries_narrow_the_probes() {
        let tcp = |port: (u16, u8), rule_id| RuleEntry {
            identity: 0,
            direction: Direction::Ingress,
            proto: Some(6),
            port: Some(port),
            action: if rule_id % 10 == 9 { Action::Deny } else { Action::Allow },
            rule_id,
        };
        let mut rules = vec![tcp((443, 16), 1)];
        for r in 0..100u16 {
            let first = 2000 + r * 100;
            rules.extend(crate::compiler::port_prefixes(first, first + 57).into_iter().map(|p| tcp(p, 100 + u32::from(r))));
        }
        let image = MapImage { enforce_ingress: true, enforce_egress: true, identities: Vec::new(), rules };
        let reference = image.lookup();
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        for expand in [true, false] {
            let maps = PolicyMaps::new(&image, 0, if expand { RULE_CAPACITY } else { 0 });
            let entry = |kind, port| maps.rules.iter().find(|(k, _)| k.kind == kind && k.port == port).map(|(_, v)| *v);
            let head = entry(l::RK_PROTO, 0).unwrap();
            assert!(head.port_lens.count_ones() >= 2, "expand {expand}: {:#x}", head.port_lens);
            assert_eq!(head.port_blocks, 1 | (0x7ff << 1), "expand {expand}");
            assert_eq!(head.port_detail, 0x7ff << 1, "expand {expand}");
            let block9 = entry(l::RK_BLOCK, 9).unwrap();
            assert_eq!(block9.port_blocks & 1 << ((9999 >> 4) & 63), 0, "expand {expand}");
            assert_ne!(block9.port_blocks & 1 << ((9950 >> 4) & 63), 0, "expand {expand}");
            for port in 0..=u16::MAX {
                let want = expected(reference.evaluate(remote, Direction::Ingress, 6, port));
                assert_eq!(maps.lookup(remote, l::DIR_INGRESS, 6, port), want, "port {port}, expand {expand}");
            }
        }
    }

    /// Where the datapath has a bound, the writer stays inside it.
    #[test]
    fn meta_lists_fit() {
        let image = MapImage {
            identities: (0..=32u8)
                .map(|len| IdentityEntry { prefix: IpNet::new("10.0.0.0".parse().unwrap(), len).unwrap().trunc(), identity: 1 })
                .chain((0..=128u8).map(|len| IdentityEntry {
                    prefix: IpNet::new("2001:db8::".parse().unwrap(), len).unwrap().trunc(),
                    identity: 2,
                }))
                .collect(),
            ..MapImage::default()
        };
        let maps = PolicyMaps::new(&image, 0, RULE_CAPACITY);
        assert_eq!(maps.meta.ident4_nlens as usize, l::IDENT4_LENS);
        // /0 to /96 of 2001:db8:: are not inside ::ffff:0:0/96; /0 covers it.
        assert_eq!(maps.meta.ident6_nlens as usize, l::IDENT6_LENS);
        assert_eq!(maps.meta.ident4_lens.0[0], 32);
        assert_eq!(maps.meta.ident6_lens.0[l::IDENT6_LENS - 1], 0);
    }
}
