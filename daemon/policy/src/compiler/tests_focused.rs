//! Tests of the compiler on focused cases: port prefixes, excepts, deny
//! inside allow and back, L3 against port rules, protocols, ICMP, identity
//! sharing, rule ids, directions, address families, normalisation and
//! order independence.

use super::tests_support::*;
use crate::test_rng::Rng;

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
    let (_, image) = compile_ok(vec![Rule::new(1, Egress, Allow, vec![], vec![])]);
    assert!(!image.enforce_ingress && image.enforce_egress);
    assert!(image.identities.is_empty() && image.rules.is_empty());
    assert_eq!(
        image.evaluate(ip("10.0.0.1"), Egress, IPPROTO_TCP, 22),
        Verdict::NoMatch
    );
}

#[test]
fn except_punches_hole() {
    let (rs, image) = compile_ok(vec![Rule::new(
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
        Rule::new(
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
        Rule::new(
            2,
            Ingress,
            Deny,
            vec![CidrSet::new(net("10.1.0.0/16"), vec![net("10.1.2.0/24")])],
            vec![tcp(22, 22)],
        ),
        // And one more inside that hole.
        Rule::new(
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
    let (rs, image) = compile_ok(vec![Rule::new(
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
        Rule::new(1, Ingress, Allow, cidrs(&["0.0.0.0/0"]), vec![]),
        Rule::new(
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
        Rule::new(
            1,
            Ingress,
            Allow,
            cidrs(&["0.0.0.0/0"]),
            vec![tcp(1000, 2000)],
        ),
        Rule::new(
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
        Rule::new(
            1,
            Ingress,
            Deny,
            cidrs(&["0.0.0.0/0"]),
            vec![tcp(1000, 2000)],
        ),
        Rule::new(
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
        Rule::new(1, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![tcp(80, 80)]),
        Rule::new(2, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![tcp(22, 22)]),
        Rule::new(9, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![]),
        Rule::new(3, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![]),
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
        Rule::new(5, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![]),
        // Redundant with the L3 allow (larger id): no entry.
        Rule::new(7, Ingress, Allow, cidrs(&["10.0.0.0/8"]), vec![tcp(80, 80)]),
        // Smaller id: reported, so it needs its entry.
        Rule::new(
            2,
            Ingress,
            Allow,
            cidrs(&["10.0.0.0/8"]),
            vec![tcp(443, 443)],
        ),
        Rule::new(6, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![tcp(22, 22)]),
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
    let (_, image) = compile_ok(vec![Rule::new(
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
    let (_, image) = compile_ok(vec![Rule::new(
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
    let (rs, image) = compile_ok(vec![Rule::new(
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
        Rule::new(
            1,
            Ingress,
            Allow,
            cidrs(&["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]),
            vec![tcp(22, 22)],
        ),
        Rule::new(
            2,
            Egress,
            Allow,
            cidrs(&["192.168.0.0/16", "10.0.0.0/8", "fd00::/8"]),
            vec![],
        ),
        Rule::new(3, Ingress, Allow, cidrs(&["172.16.0.0/12"]), vec![]),
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
        Rule::new(
            30,
            Ingress,
            Allow,
            cidrs(&["10.0.0.0/8"]),
            vec![tcp(0, 100)],
        ),
        Rule::new(
            10,
            Ingress,
            Allow,
            cidrs(&["10.0.0.0/8"]),
            vec![tcp(50, 150)],
        ),
        Rule::new(20, Ingress, Deny, cidrs(&["10.0.0.0/8"]), vec![tcp(60, 70)]),
        Rule::new(
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
    let (rs, image) = compile_ok(vec![Rule::new(1, Ingress, Allow, cidrs(&["0.0.0.0/0"]), vec![])]);
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
            .chain([Rule::new(2, Egress, Deny, cidrs(&["10.0.0.0/8"]), vec![])])
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
        let (rs, image) = compile_ok(vec![Rule::new(1, Ingress, Allow, cidrs(&[six]), vec![])]);
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
    let (_, image) = compile_ok(vec![Rule::new(
        1,
        Ingress,
        Allow,
        cidrs(&["::ffff:0:0/96"]),
        vec![],
    )]);
    assert_eq!(image.identities, vec![ident("0.0.0.0/0", 1)]);
    // `::/0` alone: 0.0.0.0/0 gets the empty identity.
    let (_, image) = compile_ok(vec![Rule::new(1, Ingress, Allow, cidrs(&["::/0"]), vec![])]);
    assert_eq!(
        image.identities,
        vec![ident("0.0.0.0/0", 1), ident("::/0", 2)]
    );
    assert_eq!(image.rules, vec![ent(2, Ingress, None, None, Allow, 1)]);
    // Both families present: no extra entry needed beyond their own.
    let (_, image) = compile_ok(vec![Rule::new(
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
        Rule::new(
            1,
            Ingress,
            Allow,
            vec![CidrSet::new(
                net("::ffff:10.0.0.0/104"),
                vec![net("::ffff:10.1.0.0/112")],
            )],
            vec![],
        ),
        Rule::new(
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
    let (_, a) = compile_ok(vec![Rule::new(
        1,
        Ingress,
        Allow,
        vec![CidrSet {
            cidr: net("10.9.9.9/8"),
            except: vec![net("10.1.2.3/16")],
        }],
        vec![],
    )]);
    let (_, b) = compile_ok(vec![Rule::new(
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
    let rs = RuleSet::new(vec![Rule::new(3, Ingress, Allow, vec![], vec![tcp(2, 1)])]);
    assert!(matches!(
        compile(&rs),
        Err(ValidationError::PortRange { rule: 3, .. })
    ));
}
