//! The map image: the compiled policy as plain data, exactly what the map
//! writer puts into the kernel (identity LPM trie, rule LPM trie, enforcement
//! flags). Keeping it plain data makes the compiler testable without a kernel
//! and lets [`MapImage::evaluate`] state the datapath's lookups precisely.
//! How it becomes the maps' key/value bytes is `encode`; this file may not
//! know the kernel's layouts.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

// The image depends on the model (its verdicts and types), never the
// other way round.
pub use super::model::Verdict;
use super::model::{Action, Direction};

/// The compiled policy for one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapImage {
    /// True iff any rule (allow or deny) has direction Ingress.
    pub enforce_ingress: bool,
    pub enforce_egress: bool,
    /// LPM trie: remote address prefix → identity. Sorted by prefix (IPv4
    /// first), prefixes unique.
    pub identities: Vec<IdentityEntry>,
    /// LPM trie on (identity, direction, proto, port prefix). Sorted by
    /// (identity, direction, proto, port), keys unique.
    pub rules: Vec<RuleEntry>,
}

/// Remote address prefix → identity (a number standing for a set of rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityEntry {
    /// Truncated; IPv4 prefixes are stored IPv4-mapped by the writer.
    pub prefix: IpNet,
    /// >= 1. 0 is what the datapath uses on a lookup miss and has no rules.
    pub identity: u32,
}

/// One entry of the rule trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    pub identity: u32,
    pub direction: Direction,
    /// None = any protocol (L3-only): wildcards protocol and port.
    pub proto: Option<u8>,
    /// (value, prefix length 0..=16) of the 16-bit port; None = every port of
    /// `proto`. Never `Some((_, 0))`: a whole range is written as None.
    pub port: Option<(u16, u8)>,
    pub action: Action,
    pub rule_id: u32,
}

/// A fast non-cryptographic hasher (FxHash's mixing step) for the compiler's
/// interner and the lookup tables: they hash millions of small integer keys
/// derived from the local configuration, where SipHash's flooding resistance
/// buys nothing and costs a large share of the time.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits depending only on low input bits;
        // hashbrown indexes buckets by the low bits (rustc-hash 2 does the same).
        self.0.rotate_left(26)
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub(crate) type FastHash = BuildHasherDefault<FxHasher>;

/// Bit width of the rule trie key data this module simulates: identity (32),
/// direction (8), proto (8), port (16). The C key also carries the policy
/// generation between identity and direction; it is full-match, like the
/// identity, so it changes no prefix relation and is left out here.
pub const RULE_KEY_BITS: u8 = 64;
/// Prefix length of an L3-only (`proto: None`) entry.
pub const RULE_L3_BITS: u8 = 40;
/// Prefix length of a whole-protocol (`port: None`) entry.
pub const RULE_PROTO_BITS: u8 = 48;

/// `::ffff:0:0/96`, where IPv4 lives in the image's address space.
pub const MAPPED_BASE: u128 = 0xffff << 32;

/// The first `len` of a `bits`-bit value set (`len` clamped to `bits`), as
/// a u128 to be cast to the value's width: the prefix mask of addresses,
/// rule keys and ports alike.
pub fn prefix_mask(len: u8, bits: u32) -> u128 {
    if len == 0 {
        return 0;
    }
    (u128::MAX << (128 - u32::from(len).min(bits))) >> (128 - bits)
}



/// An address as the datapath sees it: IPv4 as IPv4-mapped IPv6.
pub fn mapped_addr(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

impl IdentityEntry {
    /// The key as stored in the datapath's 128-bit address trie: address
    /// (IPv4-mapped for IPv4) and prefix length in that space (IPv4 + 96).
    pub fn mapped(&self) -> (Ipv6Addr, u8) {
        match self.prefix.trunc() {
            IpNet::V4(n) => (n.addr().to_ipv6_mapped(), n.prefix_len() + 96),
            IpNet::V6(n) => (n.addr(), n.prefix_len()),
        }
    }
}

impl RuleEntry {
    /// The key as 64 bits of LPM data (identity, direction, proto, port, most
    /// significant first) and its prefix length.
    pub fn key_bits(&self) -> (u64, u8) {
        let mut data = u64::from(self.identity) << 32 | u64::from(self.direction as u8) << 24;
        let len = match (self.proto, self.port) {
            (None, _) => RULE_L3_BITS,
            (Some(p), None) => {
                data |= u64::from(p) << 16;
                RULE_PROTO_BITS
            }
            (Some(p), Some((value, plen))) => {
                let plen = plen.min(16);
                data |= u64::from(p) << 16 | u64::from(value);
                RULE_PROTO_BITS + plen
            }
        };
        (data & (prefix_mask(len, 64) as u64), len)
    }

    /// Sort key: (identity, direction, proto, port), None first.
    pub(crate) fn sort_key(&self) -> (u32, Direction, Option<u8>, Option<(u16, u8)>) {
        (self.identity, self.direction, self.proto, self.port)
    }
}

impl MapImage {
    pub fn enforces(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.enforce_ingress,
            Direction::Egress => self.enforce_egress,
        }
    }

    /// Reference semantics of the datapath's policy lookups (see
    /// [`ImageLookup::evaluate`]). Builds the lookup tables on every call;
    /// use [`MapImage::lookup`] for many packets.
    pub fn evaluate(&self, remote: IpAddr, direction: Direction, proto: u8, port: u16) -> Verdict {
        self.lookup().evaluate(remote, direction, proto, port)
    }

    /// Hash tables per prefix length that answer longest-prefix-match queries
    /// exactly like the kernel's LPM tries, for evaluating many packets.
    pub fn lookup(&self) -> ImageLookup {
        let mut idents =
            HashMap::with_capacity_and_hasher(self.identities.len(), FastHash::default());
        let mut ident_lens = Vec::new();
        for e in &self.identities {
            let (addr, len) = e.mapped();
            idents.insert((u128::from(addr) & prefix_mask(len, 128), len), e.identity);
            ident_lens.push(len);
        }
        let mut rules = HashMap::with_capacity_and_hasher(self.rules.len(), FastHash::default());
        let mut rule_lens = Vec::new();
        for e in &self.rules {
            let key = e.key_bits();
            rules.insert(key, (e.action, e.rule_id));
            rule_lens.push(key.1);
        }
        for lens in [&mut ident_lens, &mut rule_lens] {
            lens.sort_unstable_by(|a, b| b.cmp(a));
            lens.dedup();
        }
        ImageLookup {
            enforce: [self.enforce_ingress, self.enforce_egress],
            idents,
            ident_lens,
            rules,
            rule_lens,
        }
    }
}

/// A [`MapImage`] indexed for lookups.
#[derive(Debug, Clone)]
pub struct ImageLookup {
    enforce: [bool; 2],
    idents: HashMap<(u128, u8), u32, FastHash>,
    ident_lens: Vec<u8>,
    rules: HashMap<(u64, u8), (Action, u32), FastHash>,
    rule_lens: Vec<u8>,
}

impl ImageLookup {
    /// The identity LPM lookup: the remote address, IPv4-mapped, against
    /// the 128-bit address trie; a miss is identity 0.
    pub fn identity(&self, remote: IpAddr) -> u32 {
        let addr = u128::from(mapped_addr(remote));
        self.ident_lens
            .iter()
            .find_map(|&len| self.idents.get(&(addr & prefix_mask(len, 128), len)).copied())
            .unwrap_or(0)
    }

    /// The datapath's policy step, as specified for the C side:
    /// 1. identity = LPM(remote address) or 0 (`remote` is the source on
    ///    ingress, the destination on egress);
    /// 2. one LPM lookup of (identity, direction, proto, port) in the rule
    ///    trie, where `port` is the destination port for TCP/UDP/SCTP and
    ///    `type << 8 | code` for ICMP/ICMPv6;
    /// 3. the single longest match decides; no match drops if the direction
    ///    is enforced.
    pub fn evaluate(&self, remote: IpAddr, direction: Direction, proto: u8, port: u16) -> Verdict {
        let identity = self.identity(remote);
        let data = u64::from(identity) << 32
            | u64::from(direction as u8) << 24
            | u64::from(proto) << 16
            | u64::from(port);
        let hit = self
            .rule_lens
            .iter()
            .find_map(|&len| self.rules.get(&(data & (prefix_mask(len, 64) as u64), len)).copied());
        match hit {
            Some((Action::Allow, id)) => Verdict::Allow(id),
            Some((Action::Deny, id)) => Verdict::Deny(id),
            None if self.enforce[direction as usize] => Verdict::NoMatch,
            None => Verdict::NotEnforced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        identity: u32,
        proto: Option<u8>,
        port: Option<(u16, u8)>,
        action: Action,
        rule_id: u32,
    ) -> RuleEntry {
        RuleEntry {
            identity,
            direction: Direction::Ingress,
            proto,
            port,
            action,
            rule_id,
        }
    }

    #[test]
    fn prefix_masks_of_every_width() {
        assert_eq!(prefix_mask(0, 128), 0);
        assert_eq!(prefix_mask(96, 128) & MAPPED_BASE, MAPPED_BASE);
        assert_eq!(prefix_mask(128, 128), u128::MAX);
        assert_eq!(prefix_mask(40, 64) as u64, 0xffff_ffff_ff00_0000);
        assert_eq!(prefix_mask(24, 32) as u32, 0xffff_ff00);
        assert_eq!(prefix_mask(8, 16) as u16, 0xff00);
        assert_eq!(prefix_mask(200, 16), 0xffff, "clamped to the width");
    }

    #[test]
    fn key_bits_layout() {
        assert_eq!(
            entry(1, None, None, Action::Allow, 1).key_bits(),
            (1 << 32, 40)
        );
        assert_eq!(
            entry(2, Some(6), None, Action::Allow, 1).key_bits(),
            (2 << 32 | 6 << 16, 48)
        );
        assert_eq!(
            entry(2, Some(17), Some((0x0400, 6)), Action::Allow, 1).key_bits(),
            (2 << 32 | 17 << 16 | 0x0400, 54)
        );
        let mut e = entry(3, Some(6), Some((22, 16)), Action::Deny, 1);
        e.direction = Direction::Egress;
        assert_eq!(e.key_bits(), (3 << 32 | 1 << 24 | 6 << 16 | 22, 64));
    }

    #[test]
    fn identity_mapped_key() {
        let e = IdentityEntry {
            prefix: "10.0.0.0/8".parse().expect("net"),
            identity: 1,
        };
        assert_eq!(e.mapped(), ("::ffff:10.0.0.0".parse().expect("ip"), 104));
    }

    #[test]
    fn lookup_longest_match_wins() {
        let image = MapImage {
            enforce_ingress: true,
            enforce_egress: false,
            identities: vec![
                IdentityEntry {
                    prefix: "10.0.0.0/8".parse().expect("net"),
                    identity: 1,
                },
                IdentityEntry {
                    prefix: "10.1.0.0/16".parse().expect("net"),
                    identity: 2,
                },
                IdentityEntry {
                    prefix: "::/0".parse().expect("net"),
                    identity: 3,
                },
            ],
            rules: vec![
                entry(1, None, None, Action::Allow, 10),
                entry(1, Some(6), Some((22, 16)), Action::Deny, 11),
                entry(2, Some(6), None, Action::Allow, 12),
                entry(3, None, None, Action::Deny, 13),
            ],
        };
        let l = image.lookup();
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        assert_eq!(l.identity(ip("10.2.0.1")), 1);
        assert_eq!(l.identity(ip("10.1.0.1")), 2);
        assert_eq!(l.identity(ip("2001:db8::1")), 3);
        // Like the kernel: IPv4 falls back to an IPv6 prefix covering
        // ::ffff:0:0/96 — the compiler must shadow that (see compiler tests).
        assert_eq!(l.identity(ip("11.0.0.1")), 3);
        assert_eq!(
            l.evaluate(ip("10.2.0.1"), Direction::Ingress, 6, 22),
            Verdict::Deny(11)
        );
        assert_eq!(
            l.evaluate(ip("10.2.0.1"), Direction::Ingress, 6, 23),
            Verdict::Allow(10)
        );
        assert_eq!(
            l.evaluate(ip("10.1.0.1"), Direction::Ingress, 6, 22),
            Verdict::Allow(12)
        );
        assert_eq!(
            l.evaluate(ip("10.1.0.1"), Direction::Ingress, 17, 22),
            Verdict::NoMatch
        );
        assert_eq!(
            l.evaluate(ip("10.1.0.1"), Direction::Egress, 6, 22),
            Verdict::NotEnforced
        );
        assert_eq!(
            image.evaluate(ip("2001:db8::1"), Direction::Ingress, 58, 0x8000),
            Verdict::Deny(13)
        );
    }
}
