//! Tests: the reference policy and the golden files (entities, CIDRs,
//! ports, ICMP, sections, selectors), and the YAML features they rely on.

use super::*;
use super::tests_support::*;
use crate::compile;
use crate::model::Verdict;
use crate::model::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

// --- the reference policy -----------------------------------------------

#[test]
fn reference_policy_loads_verbatim() {
    let policies = load("policies/demo-host-policy.yaml", DEMO);
    assert_eq!(policies.len(), 1);
    let p = &policies[0];
    assert_eq!(p.kind, PolicyKind::CiliumClusterwideNetworkPolicy);
    assert_eq!(p.name, "demo-host-policy");
    assert_eq!(p.key(), "demo-host-policy");
    assert_eq!(p.pos, Pos::new(4, 9));
    assert_eq!(p.specs.len(), 1);
    let spec = &p.specs[0];
    assert_eq!(spec.path, "spec");
    assert_eq!(spec.description, "");
    assert_eq!(
        spec.node_selector,
        NodeSelector {
            match_labels: labels(&[("node-access", "ssh")]),
            match_expressions: vec![],
        }
    );
    assert_eq!(
        shapes(p),
        vec![
            ingress("spec.ingress[0]", vec![ent(Entity::Cluster)], vec![]),
            ingress("spec.ingress[1]", vec![ent(Entity::All)], vec![tcp(22)]),
            ingress("spec.ingress[2]", vec![ent(Entity::All)], vec![icmp4(8)]),
        ]
    );
    assert_eq!(spec.rules[1].pos, Pos::new(13, 5));
}

#[test]
fn reference_policy_compiles_to_the_expected_verdicts() {
    let policies = load("policies/demo-host-policy.yaml", DEMO);
    let ctx = EntityContext {
        cluster_cidrs: vec![net("10.0.0.0/8")],
        ..EntityContext::default()
    };
    let (rules, report) = to_rule_set(&policies, &ctx, &labels(&[("node-access", "ssh")]));
    assert_eq!(rules.validate(), Ok(()));
    let image = compile(&rules).expect("compiles");
    let cluster = ip("10.1.2.3");
    let outside = ip("203.0.113.9");
    let ingress = Direction::Ingress;
    let id = |r: u16| rule_id(1, r);

    // Cluster → tcp/80: the L3-only `fromEntities: [cluster]` rule.
    assert_eq!(
        image.evaluate(cluster, ingress, IPPROTO_TCP, 80),
        Verdict::Allow(id(1))
    );
    // Outside the cluster → tcp/80: nothing matches, ingress is enforced.
    assert_eq!(
        image.evaluate(outside, ingress, IPPROTO_TCP, 80),
        Verdict::NoMatch
    );
    assert_eq!(
        image.evaluate(outside, ingress, IPPROTO_UDP, 22),
        Verdict::NoMatch
    );
    // tcp/22 and ICMP echo from anywhere.
    assert_eq!(
        image.evaluate(outside, ingress, IPPROTO_TCP, 22),
        Verdict::Allow(id(2))
    );
    assert_eq!(
        image.evaluate(ip("2001:db8::1"), ingress, IPPROTO_TCP, 22),
        Verdict::Allow(id(2))
    );
    assert_eq!(
        image.evaluate(outside, ingress, IPPROTO_ICMP, ECHO),
        Verdict::Allow(id(3))
    );
    assert_eq!(
        image.evaluate(outside, ingress, IPPROTO_ICMP, 0),
        Verdict::NoMatch
    );
    // The cluster matches both; the smallest id is reported.
    assert_eq!(
        image.evaluate(cluster, ingress, IPPROTO_TCP, 22),
        Verdict::Allow(id(1))
    );
    // Egress is not enforced.
    assert!(!image.enforces(Direction::Egress));
    assert_eq!(
        image.evaluate(outside, Direction::Egress, IPPROTO_TCP, 80),
        Verdict::NotEnforced
    );
    // The model and the image agree.
    for (a, proto, port) in [
        (cluster, IPPROTO_TCP, 80),
        (outside, IPPROTO_TCP, 80),
        (outside, IPPROTO_TCP, 22),
        (outside, IPPROTO_ICMP, ECHO),
    ] {
        assert_eq!(
            image.evaluate(a, ingress, proto, port),
            rules.evaluate(a, ingress, proto, port)
        );
    }

    let status = report.policy("demo-host-policy").expect("listed");
    assert!(status.active());
    assert_eq!(
        status.summary(),
        "active: nodeSelector matches this node (node-access=ssh)"
    );
    let origin = report.rule_origin(id(2)).expect("known id");
    assert_eq!(
        (origin.policy.as_str(), origin.path.as_str()),
        ("demo-host-policy", "spec.ingress[1]")
    );
    assert_eq!(
        origin.to_string(),
        "rule 0x00010002: policy demo-host-policy spec.ingress[1] (policies/demo-host-policy.yaml:13:5)"
    );
}

#[test]
fn reference_policy_is_inactive_without_the_label() {
    let policies = load("policies/demo-host-policy.yaml", DEMO);
    let ctx = context();
    for (node, reason) in [
        (
            labels(&[]),
            "nodeSelector requires node-access=ssh; this node has no label node-access",
        ),
        (
            labels(&[("node-access", "http"), ("zone", "a")]),
            "nodeSelector requires node-access=ssh; this node has node-access=http",
        ),
    ] {
        let (rules, report) = to_rule_set(&policies, &ctx, &node);
        assert!(rules.rules.is_empty());
        let image = compile(&rules).expect("compiles");
        assert_eq!(
            image.evaluate(ip("203.0.113.9"), Direction::Ingress, IPPROTO_TCP, 80),
            Verdict::NotEnforced
        );
        let status = &report.policies[0];
        assert!(!status.active());
        assert_eq!(status.specs[0].reason, reason);
        assert_eq!(status.summary(), format!("inactive: {reason}"));
        // Inactive rules keep their ids and origins.
        assert_eq!(
            status.specs[0].rule_ids,
            vec![rule_id(1, 1), rule_id(1, 2), rule_id(1, 3)]
        );
        assert!(!report.rule_origin(rule_id(1, 2)).expect("known").active);
    }
}

// --- golden files -------------------------------------------------------

#[test]
fn golden_entities() {
    let p = load("golden-entities.yaml", ENTITIES);
    assert_eq!(
        shapes(&p[0]),
        vec![
            ingress(
                "spec.ingress[0]",
                vec![ent(Entity::Host), ent(Entity::RemoteNode)],
                vec![]
            ),
            ingress(
                "spec.ingress[1]",
                vec![
                    ent(Entity::Cluster),
                    ent(Entity::World),
                    ent(Entity::WorldIpv4),
                    ent(Entity::WorldIpv6),
                    ent(Entity::All),
                    ent(Entity::Host),
                ],
                vec![]
            ),
            egress("spec.egress[0]", vec![ent(Entity::World)], vec![tcp(443)]),
        ]
    );
}

#[test]
fn golden_cidrs() {
    let p = load("golden-cidr.yaml", CIDRS);
    assert_eq!(
        shapes(&p[0]),
        vec![
            ingress(
                "spec.ingress[0]",
                vec![
                    cidr("192.0.2.0/24"),
                    cidr("198.51.100.7/32"),
                    cidr("2001:db8::/32"),
                    cidr("2001:db8:1::1/128"),
                    cidr("203.0.113.0/24"),
                ],
                vec![]
            ),
            ingress(
                "spec.ingress[1]",
                vec![
                    ent(Entity::Host),
                    cidr("172.16.0.0/12"),
                    cset("10.0.0.0/8", &["10.96.0.0/12", "10.1.2.3/32"]),
                    cidr("fd00::/8"),
                ],
                vec![]
            ),
            egress("spec.egress[0]", vec![cidr("0.0.0.0/0")], vec![]),
            egress(
                "spec.egress[1]",
                vec![cset("0.0.0.0/0", &["169.254.169.254/32"])],
                vec![]
            ),
        ]
    );
}

#[test]
fn golden_ports() {
    let p = load("golden-ports.yaml", PORTS);
    assert_eq!(
        shapes(&p[0]),
        vec![
            ingress(
                "spec.ingress[0]",
                vec![ent(Entity::All)],
                vec![
                    tcp(22),
                    udp(53),
                    l4(L4Proto::Tcp, 9000, 9100),
                    l4(L4Proto::Sctp, 3868, 3868),
                    l4(L4Proto::Any, 8080, 8080),
                    PortMatch::all_ports(L4Proto::Udp),
                    l4(L4Proto::Any, 443, 443),
                ]
            ),
            ingress(
                "spec.ingress[1]",
                vec![ent(Entity::Cluster)],
                vec![PortMatch::all_ports(L4Proto::Any)]
            ),
        ]
    );
}

#[test]
fn golden_icmp() {
    let p = load("golden-icmp.yaml", ICMP);
    assert_eq!(
        shapes(&p[0]),
        vec![
            ingress(
                "spec.ingress[0]",
                vec![ent(Entity::All)],
                vec![
                    icmp4(8),
                    icmp4(0),
                    icmp4(3),
                    icmp6(128),
                    icmp6(135),
                    icmp6(255)
                ]
            ),
            egress("spec.egress[0]", vec![ent(Entity::World)], vec![icmp4(11)]),
        ]
    );
}

#[test]
fn golden_sections_and_default_deny() {
    let p = load("golden-sections.yaml", SECTIONS);
    assert_eq!(p.len(), 2);
    assert_eq!(
        shapes(&p[0]),
        vec![
            ingress("spec.ingress[0]", vec![], vec![]),
            ingress_deny("spec.ingressDeny[0]", vec![cidr("198.51.100.0/24")], vec![]),
            ingress_deny(
                "spec.ingressDeny[1]",
                vec![ent(Entity::World)],
                vec![tcp(23)]
            ),
            egress_deny("spec.egressDeny[0]", vec![ent(Entity::All)], vec![tcp(25)]),
        ]
    );
    assert_eq!(
        shapes(&p[1]),
        vec![egress("spec.enableDefaultDeny.egress", vec![], vec![])]
    );
    assert_eq!(p[1].specs[0].rules[0].pos, Pos::new(33, 13));
}

#[test]
fn golden_selectors_specs_and_metadata() {
    let p = load("golden-selectors.yaml", SELECTORS);
    assert_eq!(p.len(), 2);
    let s = &p[0];
    assert_eq!(s.labels, labels(&[("team", "infra")]));
    assert_eq!(
        s.annotations,
        labels(&[("example.com/owner", "ops"), ("note", "1")])
    );
    assert_eq!(
        s.specs.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        ["spec", "specs[0]", "specs[1]"]
    );
    assert_eq!(s.specs[0].description, "k8s: and any: prefixes are dropped");
    assert_eq!(s.specs[1].description, "second spec");
    assert_eq!(
        s.specs[0].node_selector,
        NodeSelector {
            match_labels: labels(&[("node-role.kubernetes.io/worker", ""), ("zone", "a")]),
            match_expressions: vec![
                LabelRequirement {
                    key: "env".into(),
                    operator: SelectorOp::In,
                    values: vec!["prod".into(), "staging".into()]
                },
                LabelRequirement {
                    key: "tier".into(),
                    operator: SelectorOp::NotIn,
                    values: vec!["db".into()]
                },
                LabelRequirement {
                    key: "gpu".into(),
                    operator: SelectorOp::Exists,
                    values: vec![]
                },
                LabelRequirement {
                    key: "maintenance".into(),
                    operator: SelectorOp::DoesNotExist,
                    values: vec![]
                },
            ],
        }
    );
    assert!(s.specs[1].node_selector.is_empty());
    assert_eq!(
        s.specs[2].node_selector.match_labels,
        labels(&[("role", "edge")])
    );
    assert_eq!(
        shapes(s),
        vec![
            ingress("spec.ingress[0]", vec![ent(Entity::Cluster)], vec![]),
            egress("specs[0].egress[0]", vec![ent(Entity::All)], vec![]),
            ingress(
                "specs[1].ingress[0]",
                vec![ent(Entity::World)],
                vec![tcp(80)]
            ),
        ]
    );
    let n = &p[1];
    assert_eq!(n.kind, PolicyKind::CiliumNetworkPolicy);
    assert_eq!(n.key(), "kube-system/namespaced");
    assert_eq!(
        shapes(n),
        vec![ingress("spec.ingress[0]", vec![ent(Entity::Host)], vec![])]
    );
}

#[test]
fn clusterwide_policy_drops_namespace() {
    let text = doc("  ingress:\n  - fromEntities: [host]\n")
        .replace("  name: t\n", "  name: t\n  namespace: ns\n");
    assert_eq!(load("t.yaml", &text)[0].key(), "t");
}

#[test]
fn yaml_features_anchors_flow_tags_and_empty_documents() {
    let text = "---\n---\n# comment only\n---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: anchors}\nspec:\n  nodeSelector: {}\n  ingress:\n  - toPorts: &ssh\n    - ports: [{port: !!str 22, protocol: TCP}]\n    fromEntities: [cluster]\n  egress:\n  - toPorts: *ssh\n...\n";
    let p = load("t.yaml", text);
    assert_eq!(
        shapes(&p[0]),
        vec![
            ingress("spec.ingress[0]", vec![ent(Entity::Cluster)], vec![tcp(22)]),
            egress("spec.egress[0]", vec![ent(Entity::All)], vec![tcp(22)]),
        ]
    );
}

#[test]
fn yaml_alias_expansion_is_bounded() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..8 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("document too large"), "{errors:?}");
}

#[test]
fn syntax_errors_on_directive_lines_are_placed_in_characters() {
    // Found by the fuzz target: saphyr counts a directive's name in
    // bytes, so the NUL (the 6th character) was reported at column 10,
    // past the end of the line.
    let e = parse_policies("t.yaml", "%\u{e9}\u{e9}\u{e9}\u{e9}\0").expect_err("NUL");
    assert_eq!((e[0].line, e[0].column), (1, 6), "{e:?}");
    let e = parse_policies(
        "t.yaml",
        "a: b\r\n...\r%\u{e9}\u{e9}\u{e9}\u{e9} p\u{e9}\u{e9} \0",
    )
    .expect_err("NUL");
    assert_eq!((e[0].line, e[0].column), (3, 11), "{e:?}");
    assert_eq!(line_text("a\rb\r\nc\nd", 3), Some("c"));
    assert_eq!(line_text("a\n", 2), Some(""));
    assert_eq!(line_text("a", 2), None);
}

#[test]
fn yaml_scalar_typing() {
    let node = |s: &str| parse_yaml(&format!("v: {s}\n")).expect("yaml")[0].clone();
    let typed = |s: &str| {
        let n = node(s);
        let Value::Map(e) = &n.value else {
            panic!("map")
        };
        format!("{:?}", e[0].1.typed().expect("scalar"))
    };
    assert_eq!(typed("22"), "Int(22)");
    assert_eq!(typed("-3"), "Int(-3)");
    assert_eq!(typed("0x10"), "Int(16)");
    assert_eq!(typed("0o10"), "Int(8)");
    assert_eq!(typed("\"22\""), "Str(\"22\")");
    assert_eq!(typed("'22'"), "Str(\"22\")");
    assert_eq!(typed("!!str 22"), "Str(\"22\")");
    assert_eq!(typed("true"), "Bool(true)");
    assert_eq!(typed("~"), "Null");
    assert_eq!(typed(""), "Null");
    assert_eq!(typed("1.5"), "Float");
    assert_eq!(typed("1e3"), "Float");
    assert_eq!(typed(".inf"), "Float");
    assert_eq!(typed("22/tcp"), "Str(\"22/tcp\")");
    assert_eq!(typed("yes"), "Str(\"yes\")");
    assert_eq!(typed("1.2.3"), "Str(\"1.2.3\")");
}
