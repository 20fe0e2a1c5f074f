//! Tests: real-world policy shapes, every fixture against its compiled
//! image, and the semantics (empty rules, default deny, entities per node,
//! node selector reasons, rule ids, the report).

use super::*;
use super::tests_support::*;
use crate::compile;
use crate::model::Verdict;
use crate::model::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

// --- real-world shapes --------------------------------------------------

#[test]
fn realworld_policies_load_and_compile() {
    let policies = load("policies/realworld.yaml", REALWORLD);
    assert_eq!(
        policies.iter().map(Policy::key).collect::<Vec<_>>(),
        ["host-fw-control-plane", "host-fw-common", "host-fw-deny"]
    );
    assert_eq!(
        policies
            .iter()
            .map(|p| p.rules().count())
            .collect::<Vec<_>>(),
        [3, 6, 4]
    );
    let ctx = EntityContext {
        host_addrs: [ip("10.20.1.11")].into_iter().collect(),
        node_cidrs: vec![net("10.20.1.0/24")],
        cluster_cidrs: vec![net("10.244.0.0/16"), net("10.96.0.0/12")],
        kube_apiserver: vec![],
    };
    let worker = labels(&[("kubernetes.io/os", "linux")]);
    let edge = labels(&[("node-role.example.com/edge", "")]);
    let cp = labels(&[("node-role.kubernetes.io/control-plane", "")]);

    // Ids: policies by name (common=1, control-plane=2, deny=3).
    let (rules, report) = to_rule_set(&policies, &ctx, &worker);
    assert_eq!(
        report
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.ordinal, p.active()))
            .collect::<Vec<_>>(),
        [
            ("host-fw-common", 1, true),
            ("host-fw-control-plane", 2, false),
            ("host-fw-deny", 3, true)
        ]
    );
    assert_eq!(
        report.policy("host-fw-control-plane").expect("listed").summary(),
        "inactive: nodeSelector requires node-role.kubernetes.io/control-plane=\"\"; this node has no label node-role.kubernetes.io/control-plane"
    );
    assert_eq!(
        report.policy("host-fw-common").expect("listed").summary(),
        "active (specs[0] active: nodeSelector is empty: it selects every node; specs[1] inactive: nodeSelector requires label node-role.example.com/edge; this node has no label node-role.example.com/edge)"
    );
    assert_eq!(rules.rules.len(), 5 + 4);
    let image = compile(&rules).expect("compiles");
    let ing = Direction::Ingress;
    let eg = Direction::Egress;
    // ssh from the admin network, not from its excepts.
    assert_eq!(
        image.evaluate(ip("10.20.5.5"), ing, IPPROTO_TCP, 22),
        Verdict::Allow(rule_id(1, 1))
    );
    assert_eq!(
        image.evaluate(ip("10.20.99.5"), ing, IPPROTO_TCP, 22),
        Verdict::NoMatch
    );
    assert_eq!(
        image.evaluate(ip("2001:db8:20::5"), ing, IPPROTO_TCP, 22),
        Verdict::Allow(rule_id(1, 1))
    );
    // Ping from anywhere, v4 and v6; NDP.
    assert_eq!(
        image.evaluate(ip("198.51.100.1"), ing, IPPROTO_ICMP, ECHO),
        Verdict::Allow(rule_id(1, 2))
    );
    assert_eq!(
        image.evaluate(ip("2001:db8:9::1"), ing, IPPROTO_ICMPV6, 135 << 8),
        Verdict::Allow(rule_id(1, 2))
    );
    // Remote nodes reach the kubelet and VXLAN; the host's own address is not a remote node.
    assert_eq!(
        image.evaluate(ip("10.20.1.12"), ing, IPPROTO_UDP, 8472),
        Verdict::Allow(rule_id(1, 3))
    );
    assert_eq!(
        image.evaluate(ip("10.20.1.11"), ing, IPPROTO_UDP, 8472),
        Verdict::NoMatch
    );
    // Edge ports are not open on a worker.
    assert_eq!(
        image.evaluate(ip("198.51.100.1"), ing, IPPROTO_TCP, 443),
        Verdict::NoMatch
    );
    // Deny wins: telnet from outside 10/8, everything from the bad network.
    assert_eq!(
        image.evaluate(ip("10.20.5.5"), ing, IPPROTO_TCP, 23),
        Verdict::NoMatch
    );
    assert_eq!(
        image.evaluate(ip("192.0.2.1"), ing, IPPROTO_TCP, 23),
        Verdict::Deny(rule_id(3, 1))
    );
    assert_eq!(
        image.evaluate(ip("203.0.113.5"), ing, IPPROTO_ICMP, ECHO),
        Verdict::Deny(rule_id(3, 2))
    );
    // Egress: cluster open, world on DNS/NTP/HTTPS, never metadata or SMTP.
    assert_eq!(
        image.evaluate(ip("10.244.3.3"), eg, IPPROTO_TCP, 5432),
        Verdict::Allow(rule_id(1, 4))
    );
    assert_eq!(
        image.evaluate(ip("1.1.1.1"), eg, IPPROTO_UDP, 53),
        Verdict::Allow(rule_id(1, 5))
    );
    assert_eq!(
        image.evaluate(ip("1.1.1.1"), eg, IPPROTO_SCTP, 53),
        Verdict::Allow(rule_id(1, 5))
    );
    assert_eq!(
        image.evaluate(ip("1.1.1.1"), eg, IPPROTO_TCP, 80),
        Verdict::NoMatch
    );
    assert_eq!(
        image.evaluate(ip("169.254.169.254"), eg, IPPROTO_TCP, 80),
        Verdict::Deny(rule_id(3, 3))
    );
    assert_eq!(
        image.evaluate(ip("fd00:ec2::254"), eg, IPPROTO_TCP, 80),
        Verdict::Deny(rule_id(3, 3))
    );
    assert_eq!(
        image.evaluate(ip("1.1.1.1"), eg, IPPROTO_TCP, 25),
        Verdict::Deny(rule_id(3, 4))
    );

    // On an edge node the second spec of host-fw-common is active too.
    let (rules, _) = to_rule_set(&policies, &ctx, &edge);
    let image = compile(&rules).expect("compiles");
    assert_eq!(
        image.evaluate(ip("198.51.100.1"), ing, IPPROTO_UDP, 31000),
        Verdict::Allow(rule_id(1, 6))
    );
    assert_eq!(
        image.evaluate(ip("198.51.100.1"), ing, IPPROTO_UDP, 32768),
        Verdict::NoMatch
    );
    // On a control-plane node, etcd's port range from the cluster.
    let (rules, _) = to_rule_set(&policies, &ctx, &cp);
    let image = compile(&rules).expect("compiles");
    assert_eq!(
        image.evaluate(ip("10.244.0.9"), ing, IPPROTO_TCP, 2380),
        Verdict::Allow(rule_id(2, 2))
    );
    assert_eq!(
        image.evaluate(ip("10.20.99.1"), ing, IPPROTO_TCP, 6443),
        Verdict::NoMatch
    );
    assert_eq!(
        image.evaluate(ip("10.20.98.1"), ing, IPPROTO_TCP, 6443),
        Verdict::Allow(rule_id(2, 3))
    );
}

#[test]
fn every_fixture_yields_a_valid_rule_set_that_agrees_with_its_image() {
    let ctx = context();
    for (file, text) in [
        ("demo", DEMO),
        ("entities", ENTITIES),
        ("cidrs", CIDRS),
        ("ports", PORTS),
        ("icmp", ICMP),
        ("sections", SECTIONS),
        ("selectors", SELECTORS),
        ("realworld", REALWORLD),
    ] {
        let policies = load(file, text);
        for node in [
            labels(&[]),
            labels(&[("node-access", "ssh"), ("role", "edge")]),
        ] {
            let (rules, report) = to_rule_set(&policies, &ctx, &node);
            assert_eq!(rules.validate(), Ok(()), "{file}");
            let image = compile(&rules).expect("compiles");
            for r in &rules.rules {
                let origin = report.rule_origin(r.id).expect("every id has an origin");
                assert!(origin.active, "{file}: {origin}");
            }
            for a in [
                "10.1.1.1",
                "192.168.1.201",
                "192.168.1.7",
                "198.51.100.7",
                "169.254.169.254",
                "fd00::1",
                "2001:db8:1::1",
            ] {
                for d in Direction::ALL {
                    for (proto, port) in [
                        (IPPROTO_TCP, 22),
                        (IPPROTO_UDP, 53),
                        (IPPROTO_TCP, 23),
                        (IPPROTO_ICMP, ECHO),
                        (IPPROTO_ICMPV6, 128 << 8),
                    ] {
                        assert_eq!(
                            image.evaluate(ip(a), d, proto, port),
                            rules.evaluate(ip(a), d, proto, port),
                            "{file} {a} {d:?} {proto}/{port}"
                        );
                    }
                }
            }
        }
    }
}

// --- semantics ----------------------------------------------------------

#[test]
fn empty_rule_allows_nothing_but_enforces_its_direction() {
    let p = load("t.yaml", &doc("  ingress:\n  - {}\n"));
    let (rules, _) = to_rule_set(&p, &context(), &labels(&[]));
    assert_eq!(rules.rules[0].peers, vec![]);
    let image = compile(&rules).expect("compiles");
    assert_eq!(
        image.evaluate(ip("10.0.0.1"), Direction::Ingress, IPPROTO_TCP, 22),
        Verdict::NoMatch
    );
    assert_eq!(
        image.evaluate(ip("10.0.0.1"), Direction::Egress, IPPROTO_TCP, 22),
        Verdict::NotEnforced
    );
}

#[test]
fn default_deny_rule_enforces_egress() {
    let p = load("golden-sections.yaml", SECTIONS);
    let (rules, report) = to_rule_set(&p[1..], &context(), &labels(&[]));
    let image = compile(&rules).expect("compiles");
    assert!(image.enforces(Direction::Egress));
    assert!(!image.enforces(Direction::Ingress));
    assert_eq!(
        image.evaluate(ip("1.1.1.1"), Direction::Egress, IPPROTO_TCP, 443),
        Verdict::NoMatch
    );
    assert_eq!(
        report.rule_origin(rule_id(1, 1)).map(|o| o.path.as_str()),
        Some("spec.enableDefaultDeny.egress")
    );
}

#[test]
fn entities_resolve_per_node_context() {
    let p = load("golden-entities.yaml", ENTITIES);
    let (rules, report) = to_rule_set(&p, &context(), &labels(&[]));
    let ctx = context();
    let mut expected = ctx.resolve(Entity::Host);
    expected.extend(ctx.resolve(Entity::RemoteNode));
    assert_eq!(rules.rules[0].peers, expected);
    // world ∪ world-ipv4 ∪ world-ipv6 ∪ host duplicates are removed.
    let all = &rules.rules[1].peers;
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
    assert_eq!(report.policies[0].specs[0].notes, Vec::<String>::new());

    let image = compile(&rules).expect("compiles");
    // world on egress 443: outside the cluster only.
    assert_eq!(
        image.evaluate(ip("1.1.1.1"), Direction::Egress, IPPROTO_TCP, 443),
        Verdict::Allow(rule_id(1, 3))
    );
    assert_eq!(
        image.evaluate(ip("10.0.0.1"), Direction::Egress, IPPROTO_TCP, 443),
        Verdict::NoMatch
    );
    assert_eq!(
        image.evaluate(ip("192.168.1.201"), Direction::Egress, IPPROTO_TCP, 443),
        Verdict::NoMatch
    );

    // Without node CIDRs, remote-node is empty and the report says so.
    let bare = EntityContext {
        node_cidrs: vec![],
        ..context()
    };
    let (_, report) = to_rule_set(&p, &bare, &labels(&[]));
    assert_eq!(
        report.policies[0].specs[0].notes,
        vec!["spec.ingress[0]: entity remote-node resolves to no addresses (no node CIDRs are configured)"]
    );
}

#[test]
fn node_selector_reasons() {
    let p = load("golden-selectors.yaml", SELECTORS);
    let sel = &p[0].specs[0].node_selector;
    let all_ok = labels(&[
        ("node-role.kubernetes.io/worker", ""),
        ("zone", "a"),
        ("env", "prod"),
        ("gpu", "nvidia"),
    ]);
    assert_eq!(
        sel.select(&all_ok),
        Selection {
            active: true,
            reason: "nodeSelector matches this node (node-role.kubernetes.io/worker=\"\", zone=a, env in (prod, staging), tier not in (db), label gpu, no label maintenance)".into()
        }
    );
    let mut bad = all_ok.clone();
    bad.insert("env".into(), "dev".into());
    bad.insert("tier".into(), "db".into());
    bad.remove("gpu");
    bad.insert("maintenance".into(), "yes".into());
    assert_eq!(
        sel.select(&bad).reason,
        "nodeSelector requires env in (prod, staging); this node has env=dev; and nodeSelector requires tier not in (db); this node has tier=db; and nodeSelector requires label gpu; this node has no label gpu; and nodeSelector requires no label maintenance; this node has maintenance=yes"
    );
    assert!(!sel.select(&bad).active);
    assert_eq!(
        NodeSelector::default().select(&labels(&[])),
        Selection {
            active: true,
            reason: "nodeSelector is empty: it selects every node".into()
        }
    );
}

#[test]
fn rule_ids_are_stable_and_map_back() {
    let a = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: a\nspec:\n  nodeSelector: {matchLabels: {x: y}}\n  egress:\n  - toEntities: [world]\n  ingress:\n  - fromEntities: [host]\nspecs:\n- nodeSelector: {}\n  ingressDeny:\n  - fromCIDR: [192.0.2.0/24]\n";
    let b = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: b\nspec:\n  nodeSelector: {}\n  ingress:\n  - fromEntities: [cluster]\n";
    // File order does not matter; names do.
    let policies = load_sources([("b.yaml", b), ("a.yaml", a)]).expect("loads");
    let (rules, report) = to_rule_set(&policies, &context(), &labels(&[]));
    let origin = |id| {
        let o = report.rule_origin(id).expect("known id");
        (
            o.policy.as_str(),
            o.path.as_str(),
            o.file.as_str(),
            o.active,
        )
    };
    assert_eq!(
        origin(0x0001_0001),
        ("a", "spec.ingress[0]", "a.yaml", false)
    );
    assert_eq!(
        origin(0x0001_0002),
        ("a", "spec.egress[0]", "a.yaml", false)
    );
    assert_eq!(
        origin(0x0001_0003),
        ("a", "specs[0].ingressDeny[0]", "a.yaml", true)
    );
    assert_eq!(
        origin(0x0002_0001),
        ("b", "spec.ingress[0]", "b.yaml", true)
    );
    assert_eq!(report.rule_origin(0x0002_0002), None);
    assert_eq!(report.origins.len(), 4);
    assert_eq!(
        rules.rules.iter().map(|r| r.id).collect::<Vec<_>>(),
        [0x0001_0003, 0x0002_0001]
    );
    assert_eq!(split_rule_id(0x0001_0003), (1, 3));
    assert_eq!(
        rule_origins(&policies).keys().copied().collect::<Vec<_>>(),
        report.origins.keys().copied().collect::<Vec<_>>()
    );

    // Node labels never renumber; another policy's edits do not either.
    let (_, on) = to_rule_set(&policies, &context(), &labels(&[("x", "y")]));
    assert_eq!(
        on.origins.keys().collect::<Vec<_>>(),
        report.origins.keys().collect::<Vec<_>>()
    );
    let a2 = a.replace(
        "  - fromEntities: [host]\n",
        "  - fromEntities: [host]\n  - fromEntities: [world]\n",
    );
    let policies = load_sources([("a.yaml", a2.as_str()), ("b.yaml", b)]).expect("loads");
    let (_, report) = to_rule_set(&policies, &context(), &labels(&[]));
    assert_eq!(
        report.rule_origin(0x0002_0001).map(|o| o.policy.as_str()),
        Some("b")
    );
    assert_eq!(
        report.rule_origin(0x0001_0002).map(|o| o.path.as_str()),
        Some("spec.ingress[1]")
    );
}

#[test]
fn report_serializes() {
    let p = load("policies/demo-host-policy.yaml", DEMO);
    let (_, report) = to_rule_set(&p, &context(), &labels(&[]));
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["policies"][0]["name"], "demo-host-policy");
    assert_eq!(json["policies"][0]["specs"][0]["active"], false);
    let p = serde_json::to_value(&p[0]).expect("serializes");
    assert_eq!(p["specs"][0]["rules"][0]["peers"][0]["entity"], "cluster");
}
