//! Leniency where it changes nothing here (issue 13): unknown fields
//! outside `spec`, peers that select nothing on a host without Cilium,
//! extended protocols, `kube-apiserver` from the configuration, and strict
//! mode turning every warning back into an error.

use super::*;
use super::tests_support::*;
use crate::compile;
use crate::image::Verdict;
use crate::model::IPPROTO_TCP;

#[test]
fn inert_peers_match_nothing_and_the_rest_of_the_rule_applies() {
    let text = doc(concat!(
        "  ingress:\n",
        "  - fromEndpoints: [{matchLabels: {k8s-app: kube-dns}}]\n",
        "    toPorts: [{ports: [{port: \"53\", protocol: UDP}]}]\n",
        "  - fromEntities: [health, remote-node]\n",
        "    toPorts: [{ports: [{port: \"4240\", protocol: TCP}]}]\n",
        "  - fromRequires: [{matchLabels: {env: prod}}]\n",
        "  egress:\n",
        "  - toServices: [{k8sService: {serviceName: api, namespace: default}}]\n",
        "  - toEndpoints: [{matchLabels: {app: db}}]\n",
        "    toRequires: [{matchLabels: {env: prod}}]\n",
    ));
    let policies = load("t.yaml", &text);
    let warnings: Vec<String> = policies[0].warnings.iter().map(ToString::to_string).collect();
    let paths: Vec<&str> = policies[0].warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.ingress[0].fromEndpoints",
            "spec.ingress[1].fromEntities[0]",
            "spec.ingress[2].fromRequires",
            "spec.egress[0].toServices",
            "spec.egress[1].toEndpoints",
            "spec.egress[1].toRequires",
        ],
        "{warnings:#?}"
    );
    assert!(warnings.iter().all(|w| w.contains("warning: inert here: ")), "{warnings:#?}");
    assert_eq!(
        shapes(&policies[0]),
        vec![
            ingress("spec.ingress[0]", vec![], vec![udp(53)]),
            ingress("spec.ingress[1]", vec![ent(Entity::RemoteNode)], vec![tcp(4240)]),
            ingress("spec.ingress[2]", vec![], vec![]),
            egress("spec.egress[0]", vec![], vec![]),
            egress("spec.egress[1]", vec![], vec![]),
        ]
    );

    let (rules, report) = to_rule_set(&policies, &context(), &NodeLabels::new());
    let image = compile(&rules).expect("compiles");
    let node = ip("192.168.1.7");
    // The health entity is gone, remote-node stays; kube-dns pods select nothing.
    assert_eq!(image.evaluate(node, Direction::Ingress, IPPROTO_TCP, 4240), Verdict::Allow(rule_id(1, 2)));
    assert_eq!(image.evaluate(node, Direction::Ingress, 17, 53), Verdict::NoMatch);
    assert_eq!(rules.evaluate(node, Direction::Ingress, 17, 53), Verdict::NoMatch);
    let summary = report.policies[0].summary();
    assert!(summary.contains("\nspec.ingress[0]: inert here: fromEndpoints: "), "{summary}");
    assert!(summary.contains("\nspec.ingress[1]: partly inert here (its other peers apply): entity health: "), "{summary}");
    // Every egress rule is inert: the policy denies all egress.
    assert_eq!(report.policies[0].inert_directions, vec![Direction::Egress]);
    assert!(summary.ends_with("\nevery egress rule is inert here: this policy allows no egress traffic but puts egress into default deny"), "{summary}");
    assert_eq!(image.evaluate(node, Direction::Egress, IPPROTO_TCP, 443), Verdict::NoMatch);

    // Strict mode: each warning is an error, and nothing loads.
    let errors = parse_policies_with("t.yaml", &text, true).expect_err("strict refuses");
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert!(errors.iter().all(|e| e.message.ends_with("(refused: strict_policies = true)")), "{errors:#?}");
}

#[test]
fn endpoint_selectors_that_select_more_than_pods_stay_errors() {
    assert_error(
        "  ingress:\n  - fromEndpoints: [{}]\n",
        "t.yaml:8:21: spec.ingress[0].fromEndpoints[0]: an empty endpoint selector selects every endpoint, the host and the world included, in a clusterwide policy: write fromEntities/toEntities [all] or the entities you mean",
    );
    assert_error(
        "  egress:\n  - toEndpoints: [{matchLabels: {\"reserved:host\": \"\"}}]\n",
        "t.yaml:8:19: spec.egress[0].toEndpoints[0]: a selector on reserved: labels selects Cilium's reserved identities (host, world, …), not pods: write the entities with fromEntities/toEntities",
    );
    assert_error(
        "  egressDeny:\n  - toServices: [{k8sService: {serviceName: x}}]\n",
        "t.yaml:8:5: spec.egressDeny[0].toServices: toServices in a deny rule cannot be enforced: hostfwd does not know the services' backends, so it would allow what the rule denies (deny their CIDRs with toCIDR/toCIDRSet)",
    );
}

#[test]
fn unknown_fields_outside_spec_warn_and_strict_refuses_them() {
    let text = format!("description: locks the node down\n{}", doc("  ingress:\n  - fromEntities: [cluster]\n"));
    let policies = load("t.yaml", &text);
    assert_eq!(
        warnings_of(&text),
        vec!["t.yaml:1:1: description: warning: unknown field in a policy document ignored (as Kubernetes prunes it)"]
    );
    assert_eq!(policies[0].specs[0].rules.len(), 1);
    let errors = parse_policies_with("t.yaml", &text, true).expect_err("strict");
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["t.yaml:1:1: description: unknown field in a policy document ignored (as Kubernetes prunes it) (refused: strict_policies = true)"]
    );
}

#[test]
fn extended_protocols_by_name_and_number_match_their_ip_protocol() {
    let text = doc(concat!(
        "  ingress:\n",
        "  - fromEntities: [world]\n",
        "    toPorts:\n",
        "    - ports:\n",
        "      - protocol: VRRP\n",
        "      - protocol: igmp\n",
        "        port: \"0\"\n",
        "      - protocol: \"89\"\n",
    ));
    let policies = load("t.yaml", &text);
    assert_eq!(
        shapes(&policies[0])[0].4,
        vec![
            PortMatch::Proto { proto: 112 },
            PortMatch::Proto { proto: 2 },
            PortMatch::Proto { proto: 89 },
        ]
    );
    let (rules, _) = to_rule_set(&policies, &EntityContext::default(), &NodeLabels::new());
    let image = compile(&rules).expect("compiles");
    let peer = ip("198.51.100.1");
    for proto in [112, 2, 89] {
        assert_eq!(image.evaluate(peer, Direction::Ingress, proto, 0), Verdict::Allow(rule_id(1, 1)), "{proto}");
        assert_eq!(rules.evaluate(peer, Direction::Ingress, proto, 0), Verdict::Allow(rule_id(1, 1)), "{proto}");
    }
    for proto in [IPPROTO_TCP, 47, 103] {
        assert_eq!(image.evaluate(peer, Direction::Ingress, proto, 0), Verdict::NoMatch, "{proto}");
    }
}

#[test]
fn kube_apiserver_resolves_from_the_configuration_or_is_an_error() {
    let text = doc("  egress:\n  - toEntities: [kube-apiserver]\n    toPorts: [{ports: [{port: \"6443\", protocol: TCP}]}]\n");
    let policies = load("t.yaml", &text);
    let errors = unresolvable_entities(&policies, &EntityContext::default());
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["t.yaml:8:5: spec.egress[0]: entity kube-apiserver needs the API server's addresses: set kube_apiserver in the [entities] section of the configuration"]
    );
    let ctx = EntityContext { kube_apiserver: vec![net("10.96.0.1/32"), net("192.168.1.10/32")], ..EntityContext::default() };
    assert!(unresolvable_entities(&policies, &ctx).is_empty());
    let (rules, _) = to_rule_set(&policies, &ctx, &NodeLabels::new());
    let image = compile(&rules).expect("compiles");
    assert_eq!(image.evaluate(ip("10.96.0.1"), Direction::Egress, IPPROTO_TCP, 6443), Verdict::Allow(rule_id(1, 1)));
    assert_eq!(image.evaluate(ip("10.96.0.2"), Direction::Egress, IPPROTO_TCP, 6443), Verdict::NoMatch);
}

#[test]
fn many_inert_rules_are_reported_within_bounds() {
    let rule = "  - fromEndpoints: [{matchLabels: {app: x}}]\n";
    let text = doc(&format!("  ingress:\n{}", rule.repeat(150)));
    let policies = load("t.yaml", &text);
    let w = &policies[0].warnings;
    assert_eq!(w.len(), 101, "the first 100 and a count");
    assert_eq!(w[100].message, "50 more warnings not shown (at most 100 are reported)");
    let (_, report) = to_rule_set(&policies, &context(), &NodeLabels::new());
    let summary = report.policies[0].summary();
    assert_eq!(summary.lines().filter(|l| l.contains(": inert here: ")).count(), 20, "{summary}");
    assert!(summary.contains("\n130 more rules inert here\n"), "{summary}");
    assert!(summary.ends_with("every ingress rule is inert here: this policy allows no ingress traffic but puts ingress into default deny"), "{summary}");
    // Strict: refused, with the errors bounded as ever.
    let errors = parse_policies_with("t.yaml", &text, true).expect_err("strict");
    assert_eq!(errors.len(), 101, "{errors:#?}");
}
