//! Helpers of the compiler's tests: short constructors for nets, rules and
//! image entries, the image's invariants, and the check that the image and
//! the reference model agree on given packets. No test lives here.

pub(super) use std::net::IpAddr;

pub(super) use super::*;
pub(super) use crate::model::Verdict;
pub(super) use crate::model::{
    CidrSet, IcmpFamily, L4Proto, PortMatch, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
};

pub(super) use Action::{Allow, Deny};
pub(super) use Direction::{Egress, Ingress};

pub(super) fn net(s: &str) -> IpNet {
    s.parse().expect("test literal")
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

pub(super) fn cidrs(list: &[&str]) -> Vec<CidrSet> {
    list.iter().map(|s| CidrSet::cidr(net(s))).collect()
}

pub(super) fn tcp(first: u16, last: u16) -> PortMatch {
    PortMatch::L4 {
        proto: L4Proto::Tcp,
        first,
        last,
    }
}

pub(super) fn compile_ok(rules: Vec<Rule>) -> (RuleSet, MapImage) {
    let rs = RuleSet::new(rules);
    let image = compile(&rs).expect("valid rule set");
    check_invariants(&image);
    (rs, image)
}

pub(super) fn ident(prefix: &str, identity: u32) -> IdentityEntry {
    IdentityEntry {
        prefix: net(prefix),
        identity,
    }
}

pub(super) fn ent(
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
pub(super) fn check_invariants(image: &MapImage) {
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

pub(super) fn check_packets(rs: &RuleSet, image: &MapImage, packets: &[(IpAddr, Direction, u8, u16)]) {
    let lookup = image.lookup();
    for &(a, d, p, port) in packets {
        assert_eq!(
            lookup.evaluate(a, d, p, port),
            rs.evaluate(a, d, p, port),
            "{a} {d:?} proto {p} port {port}"
        );
    }
}
