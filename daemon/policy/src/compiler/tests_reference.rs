//! The compiler against the reference model: random rule sets (nested and
//! overlapping CIDRs and excepts, port ranges, ICMP, both actions) and
//! packets aimed at them; the image must answer what
//! [`RuleSet::evaluate`](crate::model::RuleSet::evaluate) answers, and not
//! depend on the order of rules and peers.

use std::time::Instant;

use super::tests_support::*;
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
