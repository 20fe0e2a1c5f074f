//! Tests: every error the parser reports — unsupported fields, bad
//! values, wrong types, documents, duplicate names — with its position and
//! field path, and that all errors of a file are reported.

use super::*;
use super::tests_support::*;

// --- errors: unsupported fields -----------------------------------------

#[test]
fn error_l7_rules() {
    assert_error(
        "  ingress:\n  - fromEntities: [world]\n  - toPorts:\n    - ports:\n      - port: \"80\"\n        protocol: TCP\n      rules:\n        http:\n        - method: GET\n",
        "t.yaml:13:7: spec.ingress[1].toPorts[0].rules: L7 rules cannot be enforced by a host firewall (hostfwd enforces L3/L4 only)",
    );
}

#[test]
fn error_unsupported_rule_fields() {
    let cases = [
        (
            "ingress",
            "fromGroups: [{aws: {}}]",
            "cloud-provider groups cannot be enforced",
        ),
        (
            "egress",
            "toGroups: [{aws: {}}]",
            "cloud-provider groups cannot be enforced",
        ),
        (
            "ingress",
            "fromNodes: [{}]",
            "node selectors on peers cannot be enforced",
        ),
        (
            "egress",
            "toNodes: [{}]",
            "node selectors on peers cannot be enforced",
        ),
        (
            "egress",
            "toFQDNs: [{matchName: example.com}]",
            "DNS names cannot be enforced",
        ),
        (
            "egressDeny",
            "toServices: [{k8sService: {serviceName: x}}]",
            "toServices in a deny rule cannot be enforced",
        ),
        (
            "ingress",
            "authentication: {mode: required}",
            "mutual authentication cannot be enforced",
        ),
        (
            "egress",
            "authentication: {mode: required}",
            "mutual authentication cannot be enforced",
        ),
        (
            "ingressDeny",
            "fromNodes: [{}]",
            "node selectors on peers cannot be enforced until fleet mode",
        ),
        (
            "egressDeny",
            "toFQDNs: [{matchName: x}]",
            "DNS names cannot be enforced",
        ),
    ];
    for (section, field, why) in cases {
        let key = field.split(':').next().expect("key");
        let errors = errors_of(&doc(&format!("  {section}:\n  - {field}\n")));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let prefix = format!("t.yaml:8:5: spec.{section}[0].{key}: {why}");
        assert!(
            errors[0].starts_with(&prefix),
            "{} does not start with {prefix}",
            errors[0]
        );
    }
}

#[test]
fn error_unsupported_port_rule_fields() {
    for (field, why) in [
        (
            "listener: {envoyConfig: {kind: CiliumEnvoyConfig, name: x}, name: y}",
            "Envoy listeners cannot be enforced",
        ),
        (
            "serverNames: [example.com]",
            "TLS server names cannot be enforced",
        ),
        (
            "originatingTLS: {secret: {name: x}}",
            "TLS interception cannot be enforced",
        ),
        (
            "terminatingTLS: {secret: {name: x}}",
            "TLS interception cannot be enforced",
        ),
    ] {
        let key = field.split(':').next().expect("key");
        let body = format!("  egress:\n  - toPorts:\n    - ports: [{{port: \"443\", protocol: TCP}}]\n      {field}\n");
        let errors = errors_of(&doc(&body));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let prefix = format!("t.yaml:10:7: spec.egress[0].toPorts[0].{key}: {why}");
        assert!(
            errors[0].starts_with(&prefix),
            "{} does not start with {prefix}",
            errors[0]
        );
    }
}

#[test]
fn error_cidr_groups() {
    for key in [
        "cidrGroupRef: my-group",
        "cidrGroupSelector: {matchLabels: {a: b}}",
    ] {
        let errors = errors_of(&doc(&format!(
            "  ingress:\n  - fromCIDRSet:\n    - {key}\n"
        )));
        let name = key.split(':').next().expect("key");
        assert_eq!(
            errors,
            vec![
                format!("t.yaml:9:7: spec.ingress[0].fromCIDRSet[0].{name}: CiliumCIDRGroup references cannot be resolved: hostfwd has no CIDR groups (write the CIDRs in cidr/except)"),
                format!("t.yaml:9:7: spec.ingress[0].fromCIDRSet[0].cidr: missing: a CIDR set needs a cidr"),
            ]
        );
    }
}

#[test]
fn error_endpoint_selector() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: t\nspec:\n  endpointSelector:\n    matchLabels:\n      app: web\n  ingress:\n  - fromEntities: [world]\n";
    assert_eq!(
        errors_of(text),
        vec!["t.yaml:6:3: spec.endpointSelector: endpointSelector selects pods; hostfwd enforces host policies only (select nodes with nodeSelector)"]
    );
    let text = text.replace("\n    matchLabels:\n      app: web", " {}");
    assert_eq!(
        errors_of(&text),
        vec!["t.yaml:6:3: spec.endpointSelector: an endpointSelector selects pods, not hosts: a host policy selects nodes with nodeSelector (nodeSelector: {} selects every node)"]
    );
    // An empty endpointSelector beside a nodeSelector is harmless.
    assert_eq!(load("t.yaml", &doc("  endpointSelector: {}\n")).len(), 1);
    // Neither.
    let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: t\nspec:\n  ingress: []\n";
    assert_eq!(
        errors_of(text),
        vec!["t.yaml:6:3: spec.nodeSelector: missing: a host policy selects nodes with nodeSelector (nodeSelector: {} selects every node)"]
    );
}

#[test]
fn error_log_and_unknown_fields() {
    assert_error(
        "  log: {value: x}\n",
        "t.yaml:7:3: spec.log: policy logging is not supported by hostfwd (drops are reported with their rule id)",
    );
    assert_error(
        "  ingress:\n  - fromCidr: [10.0.0.0/8]\n",
        "t.yaml:8:5: spec.ingress[0].fromCidr: unknown field in an ingress rule; did you mean \"fromCIDR\"?",
    );
    assert_error(
        "  ingress:\n  - toEntities: [world]\n",
        "t.yaml:8:5: spec.ingress[0].toEntities: not a field of an ingress rule: ingress rules select peers with fromEntities",
    );
    assert_error(
        "  egress:\n  - fromCIDR: [10.0.0.0/8]\n",
        "t.yaml:8:5: spec.egress[0].fromCIDR: not a field of an egress rule: egress rules select peers with toCIDR",
    );
    assert_error(
        "  ingress:\n  - toPorts:\n    - ports:\n      - port: \"22\"\n        proto: TCP\n",
        "t.yaml:11:9: spec.ingress[0].toPorts[0].ports[0].proto: unknown field in a port; did you mean \"protocol\"?",
    );
    assert_error(
        "  frobnicate: 1\n",
        "t.yaml:7:3: spec.frobnicate: unknown field in a policy spec (known fields: description, nodeSelector, endpointSelector, ingress, ingressDeny, egress, egressDeny, enableDefaultDeny, labels)",
    );
    assert_error(
        "  ingress:\n  - icmps:\n    - fields:\n      - type: 8\n        code: 0\n",
        "t.yaml:11:9: spec.ingress[0].icmps[0].fields[0].code: unknown field in an ICMP field (known fields: type, family)",
    );
    // Outside spec, unknown fields are warnings (Kubernetes prunes them).
    let text = doc("").replace("spec:\n", "extra: true\nspec:\n");
    assert_eq!(
        warnings_of(&text),
        vec!["t.yaml:5:1: extra: warning: unknown field in a policy document ignored (as Kubernetes prunes it)"]
    );
    let text = doc("").replace("  name: t\n", "  name: t\n  nmae: u\n");
    assert_eq!(
        warnings_of(&text),
        vec!["t.yaml:5:3: metadata.nmae: warning: unknown field in metadata ignored (as Kubernetes prunes it)"]
    );
    assert_error(
        "  nodeSelector: {}\n",
        "t.yaml:7:3: spec.nodeSelector: duplicate field (first at 6:3)",
    );
    let text = doc("").replace(
        "  nodeSelector: {}\n",
        "  nodeSelector: {matchLabel: {a: b}}\n",
    );
    assert_eq!(
        errors_of(&text),
        vec!["t.yaml:6:18: spec.nodeSelector.matchLabel: unknown field in a label selector; did you mean \"matchLabels\"?"]
    );
    // Kubernetes bookkeeping is accepted.
    let text = doc("").replace(
        "  name: t\n",
        "  name: t\n  uid: 1234\n  resourceVersion: \"5\"\n",
    ) + "status:\n  ok: true\n";
    assert_eq!(load("t.yaml", &text).len(), 1);
}

#[test]
fn error_entities() {
    assert_error(
        "  ingress:\n  - fromEntities:\n    - clutser\n",
        "t.yaml:9:7: spec.ingress[0].fromEntities[0]: unknown entity \"clutser\" (entities are host, remote-node, cluster, world, world-ipv4, world-ipv6, all, kube-apiserver; health, init, ingress, unmanaged, none select nothing here)",
    );
    assert_error(
        "  ingress:\n  - fromEntities: []\n    toPorts: [{ports: [{port: \"22\"}]}]\n",
        "t.yaml:8:5: spec.ingress[0].fromEntities: an empty peer list is ambiguous (Cilium reads an empty entity list as \"nothing\" but an empty CIDR list as \"absent\"): remove the field or list peers",
    );
}

// --- errors: bad values -------------------------------------------------

#[test]
fn error_bad_cidrs() {
    let cases = [
        ("fromCIDR: [10.0.0.0/33]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"10.0.0.0/33\": prefix length 33 is too long for IPv4 (at most 32)"),
        ("fromCIDR: [\"2001:db8::/129\"]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"2001:db8::/129\": prefix length 129 is too long for IPv6 (at most 128)"),
        ("fromCIDR: [10.0.0.256]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"10.0.0.256\": \"10.0.0.256\" is not an IP address"),
        ("fromCIDR: [10.0.0.0/x]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"10.0.0.0/x\": prefix length \"x\" is not a number"),
        ("fromCIDR: [example.com]", "t.yaml:8:16: spec.ingress[0].fromCIDR[0]: invalid CIDR \"example.com\": \"example.com\" is not an IP address"),
        ("fromCIDR: [10.0.0.1, 8]", "t.yaml:8:26: spec.ingress[0].fromCIDR[1]: expected a string, found an integer (8) (quote it: \"8\")"),
        ("fromCIDRSet: [{cidr: 10.1.2.3}]", "t.yaml:8:26: spec.ingress[0].fromCIDRSet[0].cidr: invalid CIDR \"10.1.2.3\": a prefix length is required here (e.g. 10.1.2.3/32)"),
        ("fromCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}]", "t.yaml:8:47: spec.ingress[0].fromCIDRSet[0].except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8"),
        ("fromCIDRSet: [{cidr: 10.0.0.0/8, except: [\"fd00::/8\"]}]", "t.yaml:8:47: spec.ingress[0].fromCIDRSet[0].except[0]: fd00::/8 is not of the same address family as cidr 10.0.0.0/8"),
        ("fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0]}]", "t.yaml:8:47: spec.ingress[0].fromCIDRSet[0].except[0]: invalid CIDR \"10.1.0.0\": a prefix length is required here (e.g. 10.1.0.0/32)"),
        ("fromCIDR: 10.0.0.0/8", "t.yaml:8:15: spec.ingress[0].fromCIDR: expected a list, found a string (\"10.0.0.0/8\")"),
    ];
    for (rule, expected) in cases {
        assert_error(&format!("  ingress:\n  - {rule}\n"), expected);
    }
}

#[test]
fn error_bad_ports() {
    let port_rule =
        |port: &str| format!("  ingress:\n  - toPorts:\n    - ports:\n      - {port}\n");
    let cases = [
        ("port: \"70000\"", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: port 70000 is out of range (0-65535)"),
        ("port: 65536", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: port 65536 is out of range (0-65535)"),
        ("port: -1", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: port -1 is out of range (0-65535)"),
        ("port: http", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: named port \"http\" cannot be enforced: hostfwd has no pods whose ports it could name (use the port number)"),
        ("port: 22.5", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: expected a port number, found a floating-point number (22.5)"),
        ("port: true", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: expected a port number, found a boolean (true)"),
        ("port: [22]", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: expected a port number, found a list"),
        ("port: \"22\"\n        endPort: 21", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: endPort 21 is below port 22"),
        ("port: \"0\"\n        endPort: 100", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: endPort needs a non-zero port (port 0 already means every port)"),
        ("port: \"1\"\n        endPort: \"100\"", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: expected a port number, found a string (\"100\")"),
        ("port: \"1\"\n        endPort: 65536", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: endPort 65536 is out of range (0-65535)"),
        ("port: \"22\"\n        protocol: FOO", "t.yaml:11:19: spec.ingress[0].toPorts[0].ports[0].protocol: unknown protocol \"FOO\" (expected TCP, UDP, SCTP, ANY, one of Cilium's extended protocols IGMP, IPIP, IPV6, GRE, ESP, AH, VRRP or an IP protocol number)"),
        ("port: \"22\"\n        protocol: ICMP", "t.yaml:11:19: spec.ingress[0].toPorts[0].ports[0].protocol: protocol \"ICMP\" is not matched with toPorts: use icmps (with family IPv4 or IPv6)"),
        ("port: \"22\"\n        protocol: 300", "t.yaml:11:19: spec.ingress[0].toPorts[0].ports[0].protocol: protocol number 300 is out of range (0-255)"),
        ("port: \"22\"\n        protocol: VRRP", "t.yaml:10:15: spec.ingress[0].toPorts[0].ports[0].port: IP protocol 112 has no ports: port must be absent or 0"),
        ("protocol: IGMP\n        endPort: 2", "t.yaml:11:18: spec.ingress[0].toPorts[0].ports[0].endPort: IP protocol 2 has no ports: remove endPort"),
        ("protocol: AH", "t.yaml:10:19: spec.ingress[0].toPorts[0].ports[0].protocol: protocol \"AH\" cannot be enforced: on IPv6 hostfwd walks it as an extension header and judges the protocol that follows, so it would match IPv4 only"),
        ("protocol: TCP", "t.yaml:10:9: spec.ingress[0].toPorts[0].ports[0].port: missing: a port needs port (\"0\" for every port)"),
    ];
    for (port, expected) in cases {
        assert_error(&port_rule(port), expected);
    }
    assert_error(
        "  ingress:\n  - toPorts:\n    - {}\n",
        "t.yaml:9:7: spec.ingress[0].toPorts[0].ports: no ports: Cilium matches nothing for a toPorts entry without ports, so the whole rule would allow nothing (use port: \"0\" for every port)",
    );
    assert_error(
        "  ingress:\n  - toPorts:\n    - ports: []\n",
        "t.yaml:9:7: spec.ingress[0].toPorts[0].ports: no ports: Cilium matches nothing for a toPorts entry without ports, so the whole rule would allow nothing (use port: \"0\" for every port)",
    );
}

#[test]
fn error_bad_icmp() {
    let field = |f: &str| format!("  ingress:\n  - icmps:\n    - fields:\n      - {f}\n");
    let cases = [
        ("type: Bogus", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: unknown IPv4 ICMP type name \"Bogus\" (known: EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)"),
        ("type: NeighborSolicitation", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type \"NeighborSolicitation\" is not an IPv4 type name (it is one of IPv6: set family: IPv6)"),
        ("type: Redirect\n        family: IPv6", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type \"Redirect\" is not an IPv6 type name (it is one of IPv4: set family: IPv4)"),
        ("type: 256", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type 256 is out of range (0-255)"),
        ("type: \"300\"", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: ICMP type 300 is out of range (0-255)"),
        ("type: [8]", "t.yaml:10:15: spec.ingress[0].icmps[0].fields[0].type: expected an ICMP type (0-255 or a name such as EchoRequest), found a list"),
        ("type: 8\n        family: ipv4", "t.yaml:11:17: spec.ingress[0].icmps[0].fields[0].family: unknown family \"ipv4\" (expected IPv4 or IPv6)"),
        ("family: IPv4", "t.yaml:10:9: spec.ingress[0].icmps[0].fields[0].type: missing: an ICMP field needs a type (number or name)"),
    ];
    for (f, expected) in cases {
        assert_error(&field(f), expected);
    }
    assert_error(
        "  ingress:\n  - icmps:\n    - fields: []\n",
        "t.yaml:9:7: spec.ingress[0].icmps[0].fields: no fields: Cilium matches nothing for an icmps entry without fields, so the whole rule would allow nothing",
    );
    assert_error(
        "  ingress:\n  - toPorts: [{ports: [{port: \"22\"}]}]\n    icmps: [{fields: [{type: 8}]}]\n",
        "t.yaml:9:5: spec.ingress[0].icmps: icmps and toPorts cannot be combined in one rule (Cilium rejects it): write them as two rules",
    );
}

#[test]
fn error_wrong_types() {
    let cases = [
        ("  ingress:\n    fromEntities: [world]\n", "t.yaml:8:5: spec.ingress: expected a list, found a mapping"),
        ("  ingress:\n  - world\n", "t.yaml:8:5: spec.ingress[0]: expected an ingress rule (a mapping), found a string (\"world\")"),
        ("  egress: [~]\n", "t.yaml:7:12: spec.egress[0]: expected an egress rule (a mapping), found null"),
        ("  ingress:\n  - fromEntities: world\n", "t.yaml:8:19: spec.ingress[0].fromEntities: expected a list, found a string (\"world\")"),
        ("  description: 42\n", "t.yaml:7:16: spec.description: expected a string, found an integer (42) (quote it: \"42\")"),
        ("  enableDefaultDeny: {ingress: yes}\n", "t.yaml:7:32: spec.enableDefaultDeny.ingress: expected true or false, found a string (\"yes\")"),
        ("  labels: {a: b}\n", "t.yaml:7:11: spec.labels: expected a list, found a mapping"),
    ];
    for (body, expected) in cases {
        assert_error(body, expected);
    }
    let with_selector =
        |sel: &str| doc("").replace("  nodeSelector: {}\n", &format!("  nodeSelector:\n{sel}"));
    assert_eq!(
        errors_of(&with_selector("    matchLabels:\n      enabled: true\n")),
        vec!["t.yaml:8:16: spec.nodeSelector.matchLabels.enabled: expected a string, found a boolean (true) (quote it: \"true\")"]
    );
    assert_eq!(
        errors_of(&with_selector("    - a\n")),
        vec!["t.yaml:7:5: spec.nodeSelector: expected a label selector (a mapping), found a list"]
    );
    assert_eq!(
        errors_of(&with_selector("    matchExpressions:\n    - {key: a, operator: Equals, values: [b]}\n")),
        vec!["t.yaml:8:26: spec.nodeSelector.matchExpressions[0].operator: unknown operator \"Equals\" (expected In, NotIn, Exists or DoesNotExist)"]
    );
    assert_eq!(
        errors_of(&with_selector("    matchExpressions:\n    - {key: a, operator: In}\n")),
        vec!["t.yaml:8:7: spec.nodeSelector.matchExpressions[0].values: operator In needs at least one value"]
    );
    assert_eq!(
        errors_of(&with_selector("    matchExpressions:\n    - {key: a, operator: Exists, values: [b]}\n")),
        vec!["t.yaml:8:34: spec.nodeSelector.matchExpressions[0].values: operator Exists takes no values"]
    );
    assert_eq!(
        errors_of(&with_selector("    matchLabels:\n      k8s:a: x\n      a: y\n")),
        vec!["t.yaml:8:7: spec.nodeSelector.matchLabels: label a is given twice (with and without a source prefix)"]
    );
    assert_eq!(
        errors_of(&with_selector("    matchExpressions:\n    - {operator: Exists}\n")),
        vec!["t.yaml:8:7: spec.nodeSelector.matchExpressions[0].key: missing: a requirement needs a label key"]
    );
}

#[test]
fn error_documents() {
    let d = doc("");
    let cases = [
        (d.replace("cilium.io/v2", "cilium.io/v1"), "t.yaml:1:13: apiVersion: unsupported apiVersion \"cilium.io/v1\" (expected cilium.io/v2)"),
        (d.replace("CiliumClusterwideNetworkPolicy", "NetworkPolicy"), "t.yaml:2:7: kind: unsupported kind \"NetworkPolicy\" (expected CiliumClusterwideNetworkPolicy or CiliumNetworkPolicy)"),
        (d.replace("kind: CiliumClusterwideNetworkPolicy\n", ""), "t.yaml:1:1: kind: missing: every policy needs kind: CiliumClusterwideNetworkPolicy"),
        (d.replace("  name: t\n", "  name: Bad_Name\n"), "t.yaml:4:9: metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits, '-' and '.', at most 253 characters)"),
        (d.replace("  name: t\n", "  name: 7\n"), "t.yaml:4:9: metadata.name: expected a string, found an integer (7) (quote it: \"7\")"),
        (d.replace("  name: t\n", "  labels: {a: b}\n"), "t.yaml:4:3: metadata.name: missing: every policy needs a name"),
        (d.replace("spec:\n  nodeSelector: {}\n", ""), "t.yaml:1:1: spec: missing: a policy needs spec (or specs, a list of them)"),
        ("- a\n- b\n".to_string(), "t.yaml:1:1: expected a policy document (a mapping), found a list"),
        (d.replace("spec:\n  nodeSelector: {}\n", "specs:\n  nodeSelector: {}\n"), "t.yaml:6:3: specs: expected a list, found a mapping"),
        ("a: [1, 2\n".to_string(), "t.yaml:2:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'"),
        (d.replace("spec:\n", "spec: !custom\n"), "t.yaml:5:7: unsupported YAML tag !custom"),
    ];
    for (text, expected) in cases {
        assert_eq!(errors_of(&text), vec![expected.to_string()], "{text}");
    }
}

#[test]
fn error_default_deny_false_with_rules() {
    assert_error(
        "  ingress:\n  - fromEntities: [world]\n  enableDefaultDeny:\n    ingress: false\n",
        "t.yaml:10:14: spec.enableDefaultDeny.ingress: enableDefaultDeny.ingress: false cannot be enforced: hostfwd puts every direction that has rules into default-deny (remove it, or move these rules to a policy that should enforce)",
    );
}

#[test]
fn error_duplicate_policy_names() {
    let one = doc("");
    let two = format!("{one}---\n{one}");
    assert_eq!(
        errors_of(&two),
        vec!["t.yaml:11:9: metadata.name: policy \"t\" is already defined at t.yaml:4:9"]
    );
    let errors = load_sources([("a.yaml", one.as_str()), ("b.yaml", one.as_str())])
        .expect_err("duplicate");
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["b.yaml:4:9: metadata.name: policy \"t\" is already defined at a.yaml:4:9"]
    );
    // Same name in two namespaces is fine for CiliumNetworkPolicy.
    let cnp = |ns: &str| {
        one.replace("CiliumClusterwideNetworkPolicy", "CiliumNetworkPolicy")
            .replace("  name: t\n", &format!("  name: t\n  namespace: {ns}\n"))
    };
    let (a, b) = (cnp("a"), cnp("b"));
    assert_eq!(
        load_sources([("a.yaml", a.as_str()), ("b.yaml", b.as_str())])
            .expect("loads")
            .len(),
        2
    );
}

#[test]
fn load_sources_reports_every_file() {
    let good = doc("");
    let bad1 = doc("  ingress: [{fromEntities: [nowhere]}]\n").replace("name: t", "name: u");
    let bad2 = doc("  egress: [{toFQDNs: []}]\n").replace("name: t", "name: v");
    let errors: Vec<String> = load_sources([
        ("good.yaml", good.as_str()),
        ("bad1.yaml", bad1.as_str()),
        ("bad2.yaml", bad2.as_str()),
    ])
    .expect_err("invalid")
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        errors,
        vec![
            "bad1.yaml:7:29: spec.ingress[0].fromEntities[0]: unknown entity \"nowhere\" (entities are host, remote-node, cluster, world, world-ipv4, world-ipv6, all, kube-apiserver; health, init, ingress, unmanaged, none select nothing here)".to_string(),
            format!("bad2.yaml:7:13: spec.egress[0].toFQDNs: {WHY_FQDNS}"),
        ]
    );
}

#[test]
fn all_errors_of_a_file_are_reported() {
    let errors: Vec<String> = parse_policies("policies/invalid-many.yaml", INVALID_MANY)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
    let f = "policies/invalid-many.yaml";
    let expected = [
        format!("{f}:4:9: metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits, '-' and '.', at most 253 characters)"),
        format!("{f}:10:5: spec.ingress[0].fromGroups: {WHY_GROUPS}"),
        format!("{f}:17:7: spec.ingress[1].toPorts[0].rules: {WHY_L7}"),
        format!("{f}:20:16: spec.ingress[2].fromCIDR[0]: invalid CIDR \"10.0.0.0/33\": prefix length 33 is too long for IPv4 (at most 32)"),
        format!("{f}:23:15: spec.ingress[2].toPorts[0].ports[0].port: port 70000 is out of range (0-65535)"),
        format!("{f}:24:15: spec.ingress[2].toPorts[0].ports[1].port: named port \"http\" cannot be enforced: hostfwd has no pods whose ports it could name (use the port number)"),
        format!("{f}:26:18: spec.ingress[2].toPorts[0].ports[2].endPort: endPort 99 is below port 100"),
        format!("{f}:28:19: spec.ingress[2].toPorts[0].ports[3].protocol: protocol \"ICMP\" is not matched with toPorts: use icmps (with family IPv4 or IPv6)"),
        format!("{f}:30:5: spec.egress[0].toFQDNs: {WHY_FQDNS}"),
        format!("{f}:35:15: spec.egress[1].icmps[0].fields[0].type: unknown IPv4 ICMP type name \"Bogus\" (known: EchoReply, DestinationUnreachable, Redirect, Echo, EchoRequest, RouterAdvertisement, RouterSelection, TimeExceeded, ParameterProblem, Timestamp, TimestampReply, Photuris, ExtendedEchoRequest, ExtendedEchoReply)"),
        format!("{f}:42:3: spec.endpointSelector: endpointSelector selects pods; hostfwd enforces host policies only (select nodes with nodeSelector)"),
        format!("{f}:48:16: spec.ingress[0].fromCIDRSet[0].except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8"),
        format!("{f}:53:7: spec.ingress[0].toPorts[0].serverNames: {WHY_SNI}"),
        format!("{f}:54:3: spec.unknownField: unknown field in a policy spec (known fields: description, nodeSelector, endpointSelector, ingress, ingressDeny, egress, egressDeny, enableDefaultDeny, labels)"),
    ];
    assert_eq!(errors, expected);
}
