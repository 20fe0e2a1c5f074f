//! Fixtures and helpers of the parser's tests: the policy files under
//! `daemon/tests/policies`, loaders that fail with every error, and short
//! constructors for peers, ports and rule shapes. No test lives here.

use super::*;
pub(super) use std::net::IpAddr;

pub(super) use ipnet::IpNet;

pub(super) use crate::model::{Action, CidrSet, Direction, IcmpFamily, L4Proto, PortMatch};

// --- fixtures and helpers ------------------------------------------------

pub(super) const DEMO: &str = include_str!("../../../tests/policies/demo-host-policy.yaml");
pub(super) const ENTITIES: &str = include_str!("../../../tests/policies/golden-entities.yaml");
pub(super) const CIDRS: &str = include_str!("../../../tests/policies/golden-cidr.yaml");
pub(super) const PORTS: &str = include_str!("../../../tests/policies/golden-ports.yaml");
pub(super) const ICMP: &str = include_str!("../../../tests/policies/golden-icmp.yaml");
pub(super) const SECTIONS: &str = include_str!("../../../tests/policies/golden-sections.yaml");
pub(super) const SELECTORS: &str = include_str!("../../../tests/policies/golden-selectors.yaml");
pub(super) const REALWORLD: &str = include_str!("../../../tests/policies/realworld.yaml");
pub(super) const INVALID_MANY: &str = include_str!("../../../tests/policies/invalid-many.yaml");

pub(super) fn load(file: &str, text: &str) -> Vec<Policy> {
    match parse_policies(file, text) {
        Ok(p) => p,
        Err(errors) => panic!(
            "{file} should load:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

pub(super) fn errors_of(text: &str) -> Vec<String> {
    parse_policies("t.yaml", text)
        .expect_err("the policy should be rejected")
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The warnings of a text that loads.
pub(super) fn warnings_of(text: &str) -> Vec<String> {
    load("t.yaml", text)
        .iter()
        .flat_map(|p| &p.warnings)
        .map(ToString::to_string)
        .collect()
}

/// A clusterwide policy whose body starts on line 7 (after
/// `nodeSelector: {}` on line 6).
pub(super) fn doc(body: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: t\nspec:\n  nodeSelector: {{}}\n{body}"
    )
}

/// The body yields exactly this one error.
#[track_caller]
pub(super) fn assert_error(body: &str, expected: &str) {
    assert_eq!(
        errors_of(&doc(body)),
        vec![expected.to_string()],
        "body:\n{body}"
    );
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().expect("test literal")
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test literal")
}

pub(super) fn ent(e: Entity) -> Peer {
    Peer::Entity(e)
}

pub(super) fn cidr(s: &str) -> Peer {
    Peer::Cidr(CidrSet::cidr(net(s)))
}

pub(super) fn cset(s: &str, except: &[&str]) -> Peer {
    Peer::Cidr(CidrSet::new(
        net(s),
        except.iter().map(|e| net(e)).collect(),
    ))
}

pub(super) fn l4(proto: L4Proto, first: u16, last: u16) -> PortMatch {
    PortMatch::L4 { proto, first, last }
}

pub(super) fn tcp(p: u16) -> PortMatch {
    l4(L4Proto::Tcp, p, p)
}

pub(super) fn udp(p: u16) -> PortMatch {
    l4(L4Proto::Udp, p, p)
}

pub(super) fn icmp4(t: u8) -> PortMatch {
    PortMatch::Icmp {
        family: IcmpFamily::V4,
        icmp_type: t,
    }
}

pub(super) fn icmp6(t: u8) -> PortMatch {
    PortMatch::Icmp {
        family: IcmpFamily::V6,
        icmp_type: t,
    }
}

pub(super) type Shape = (String, Direction, Action, Vec<Peer>, Vec<PortMatch>);

pub(super) fn shape(
    path: &str,
    d: Direction,
    a: Action,
    peers: Vec<Peer>,
    ports: Vec<PortMatch>,
) -> Shape {
    (path.to_string(), d, a, peers, ports)
}

pub(super) fn ingress(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
    shape(path, Direction::Ingress, Action::Allow, peers, ports)
}

pub(super) fn ingress_deny(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
    shape(path, Direction::Ingress, Action::Deny, peers, ports)
}

pub(super) fn egress(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
    shape(path, Direction::Egress, Action::Allow, peers, ports)
}

pub(super) fn egress_deny(path: &str, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Shape {
    shape(path, Direction::Egress, Action::Deny, peers, ports)
}

pub(super) fn shapes(p: &Policy) -> Vec<Shape> {
    p.rules()
        .map(|(_, r)| {
            (
                r.path.clone(),
                r.direction,
                r.action,
                r.peers.clone(),
                r.ports.clone(),
            )
        })
        .collect()
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> NodeLabels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// cluster 10.0.0.0/8, nodes 192.168.1.0/24, this host 192.168.1.201.
pub(super) fn context() -> EntityContext {
    EntityContext {
        host_addrs: [ip("192.168.1.201"), ip("fd00:1::201")]
            .into_iter()
            .collect(),
        node_cidrs: vec![net("192.168.1.0/24")],
        cluster_cidrs: vec![net("10.0.0.0/8"), net("fd00::/8")],
        kube_apiserver: vec![],
    }
}

pub(super) const ECHO: u16 = 8 << 8;
