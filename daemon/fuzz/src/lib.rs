//! What the `policy_parse` fuzz target checks, as a plain function so that
//! the stable corpus test (`tests/tests/policy_corpus.rs`, which includes
//! this file) runs exactly the same checks on the seed corpus.
//!
//! For any input (bytes, read as UTF-8 with invalid sequences replaced):
//!
//! 1. `parse_policies` returns (no panic, no hang: libFuzzer's `-timeout`);
//! 2. every error names the file it was given, has a non-empty message and
//!    a position inside the input: 1 ≤ line ≤ lines + 1 and
//!    1 ≤ column ≤ that line's length in characters + 1 (lines end at
//!    `\n`, `\r\n` or a lone `\r`, as in YAML);
//!
//! and for input that parses, with a fixed node context (below):
//!
//! 3. `to_rule_set` returns a rule set that validates (its documented
//!    promise), every rule id of which the report maps back to an active
//!    origin;
//! 4. `compile` succeeds;
//! 5. the compiled image gives the same verdict as the rule set's reference
//!    evaluator for probe packets at the edges of every peer prefix and
//!    port range (both directions).
//!
//! A violated invariant panics with the reason, which libFuzzer reports as
//! a crash.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hostfwd::policy::cilium::{self, EntityContext, NodeLabels};
use hostfwd::policy::compile;
use hostfwd::policy::model::{Direction, RuleSet};
use ipnet::IpNet;

/// The file name errors must carry.
pub const FILE: &str = "fuzz.yaml";

/// Most probe addresses and (protocol, port) pairs per input: enough for the
/// edges of a few dozen prefixes and ranges, few enough to keep thousands
/// of executions per second.
const MAX_ADDR_PROBES: usize = 48;
const MAX_PORT_PROBES: usize = 48;

/// The node the rule set is resolved for: a worker of a small dual-stack
/// cluster, labelled as in the reference policy.
pub fn node() -> (EntityContext, NodeLabels) {
    let net = |s: &str| -> IpNet { s.parse().expect("literal") };
    let ctx = EntityContext {
        host_addrs: ["10.20.1.11", "192.168.1.201", "fd00:20::11"]
            .iter()
            .map(|a| a.parse().expect("literal"))
            .collect(),
        node_cidrs: vec![
            net("10.20.1.0/24"),
            net("192.168.1.0/24"),
            net("fd00:20::/64"),
        ],
        cluster_cidrs: vec![
            net("10.244.0.0/16"),
            net("10.96.0.0/12"),
            net("fd00:244::/56"),
        ],
        // So that policies naming the kube-apiserver entity compile too.
        kube_apiserver: vec![net("10.96.0.1/32")],
    };
    let labels: NodeLabels = BTreeMap::from([
        ("node-access".to_string(), "ssh".to_string()),
        ("kubernetes.io/hostname".to_string(), "node1".to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("node-role.kubernetes.io/worker".to_string(), String::new()),
        ("zone".to_string(), "a".to_string()),
    ]);
    (ctx, labels)
}

/// Runs every invariant on one input; panics on a violation.
pub fn check_policy_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (ctx, labels) = node();
    check_text(&text, &ctx, &labels);
}

/// [`check_policy_input`] on text, with a given node.
pub fn check_text(text: &str, ctx: &EntityContext, labels: &NodeLabels) {
    let policies = match cilium::parse_policies(FILE, text) {
        Ok(p) => p,
        Err(errors) => {
            check_errors(text, &errors);
            return;
        }
    };
    let (rules, report) = cilium::to_rule_set(&policies, ctx, labels);
    if let Err(e) = rules.validate() {
        panic!("to_rule_set produced an invalid rule set: {e}");
    }
    for r in &rules.rules {
        match report.rule_origin(r.id) {
            Some(o) if o.active => {}
            other => panic!(
                "rule {:#010x} has no active origin in the report: {other:?}",
                r.id
            ),
        }
    }
    let image = match compile(&rules) {
        Ok(i) => i,
        Err(e) => panic!("a parsed policy does not compile: {e}"),
    };
    let lookup = image.lookup();
    let addrs = probe_addrs(&rules, ctx);
    let ports = probe_ports(&rules);
    for &addr in &addrs {
        for &(proto, port) in &ports {
            for dir in [Direction::Ingress, Direction::Egress] {
                let want = rules.evaluate(addr, dir, proto, port);
                let got = lookup.evaluate(addr, dir, proto, port);
                assert_eq!(
                    got, want,
                    "image and rule set disagree: {addr} {dir:?} proto {proto} port {port}"
                );
            }
        }
    }
}

/// Invariant 2.
pub fn check_errors(text: &str, errors: &[cilium::PolicyError]) {
    assert!(!errors.is_empty(), "parse_policies failed without an error");
    let lines = line_lengths(text);
    for e in errors {
        let shown = e.to_string();
        assert_eq!(e.file, FILE, "error names another file: {shown}");
        assert!(!e.message.is_empty(), "error without a message: {shown}");
        assert!(
            e.line >= 1 && e.line <= lines.len() + 1,
            "error line outside the input ({} lines): {shown}",
            lines.len()
        );
        let width = lines.get(e.line - 1).copied().unwrap_or(0);
        assert!(
            e.column >= 1 && e.column <= width + 1,
            "error column outside line {} ({width} characters): {shown}",
            e.line
        );
    }
}

/// The length in characters of each line; lines end at `\n`, `\r\n` or a
/// lone `\r`. Text without a final break still has its last line; text
/// ending in a break has an empty line after it.
pub fn line_lengths(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut len = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(len);
                len = 0;
            }
            '\n' => {
                out.push(len);
                len = 0;
            }
            _ => len += 1,
        }
    }
    out.push(len);
    out
}

fn probe_addrs(rules: &RuleSet, ctx: &EntityContext) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![
        IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        IpAddr::V6("2001:db8::1".parse().expect("literal")),
    ];
    out.extend(ctx.host_addrs.iter().copied());
    let mut edges = |net: IpNet| {
        let (first, last) = (net.network(), net.broadcast());
        for a in [first, last, step(first, false), step(last, true)] {
            out.push(a);
        }
    };
    for r in &rules.rules {
        for p in &r.peers {
            edges(p.cidr);
            for e in &p.except {
                edges(*e);
            }
        }
    }
    out.sort();
    out.dedup();
    out.truncate(MAX_ADDR_PROBES);
    out
}

/// The address after (`up`) or before `a`, wrapping.
fn step(a: IpAddr, up: bool) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let n = u32::from(v);
            IpAddr::V4(Ipv4Addr::from(if up {
                n.wrapping_add(1)
            } else {
                n.wrapping_sub(1)
            }))
        }
        IpAddr::V6(v) => {
            let n = u128::from(v);
            IpAddr::V6(Ipv6Addr::from(if up {
                n.wrapping_add(1)
            } else {
                n.wrapping_sub(1)
            }))
        }
    }
}

fn probe_ports(rules: &RuleSet) -> Vec<(u8, u16)> {
    // TCP/22, UDP/53, SCTP, ICMP echo, ICMPv6 echo, GRE (no ports).
    let mut out: Vec<(u8, u16)> = vec![
        (6, 22),
        (17, 53),
        (132, 9),
        (1, 8 << 8),
        (58, 128 << 8),
        (47, 0),
    ];
    for r in &rules.rules {
        for m in &r.ports {
            for (proto, first, last) in m.intervals() {
                for port in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
                    out.push((proto, port));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out.truncate(MAX_PORT_PROBES);
    out
}
