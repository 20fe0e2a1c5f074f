//! Cilium's entities (`host`, `remote-node`, `cluster`, `world`, `all`, …)
//! resolved to peer CIDRs, as a pure function of what the daemon knows about
//! the host and its cluster ([`EntityContext`]).
//!
//! | entity        | resolves to                                                     |
//! |---------------|-----------------------------------------------------------------|
//! | `host`        | each of the host's addresses as a /32 or /128                   |
//! | `remote-node` | the node CIDRs, except the host's own addresses inside them     |
//! | `cluster`     | cluster CIDRs ∪ node CIDRs ∪ host addresses                     |
//! | `world`       | `0.0.0.0/0` and `::/0`, each except the `cluster` prefixes       |
//! | `world-ipv4`  | the IPv4 half of `world`                                        |
//! | `world-ipv6`  | the IPv6 half of `world`                                        |
//! | `all`         | `0.0.0.0/0` and `::/0`                                          |
//! | `kube-apiserver` | the configured API server addresses (`[entities] kube_apiserver`); an error without them |
//!
//! `health`, `init`, `ingress`, `unmanaged` and `none` name Cilium-managed
//! endpoints (or nothing): on a host without Cilium they select nothing, so
//! a peer naming them is inert ([`Entity::inert`]).
//!
//! As in Cilium, the host's own addresses have the `host` identity, never
//! `remote-node` (so a node CIDR that contains the host excepts the host), and
//! `world` is everything that has no cluster identity. Prefixes are
//! canonicalised (IPv4-mapped IPv6 becomes IPv4, see
//! [`super::model::canonical_net`]), truncated and aggregated, so the result
//! does not depend on how the configuration spells them.
//!
//! It may use only the model's CIDR types: not the parser, not the compiler.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::model::{canonical_net, CidrSet};

/// A Cilium entity that hostfwd can resolve to addresses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    Host,
    RemoteNode,
    Cluster,
    World,
    #[serde(rename = "world-ipv4")]
    WorldIpv4,
    #[serde(rename = "world-ipv6")]
    WorldIpv6,
    All,
    KubeApiserver,
}

impl Entity {
    /// Every supported entity, in the order of the error messages.
    pub const SUPPORTED: [Entity; 8] = [
        Entity::Host,
        Entity::RemoteNode,
        Entity::Cluster,
        Entity::World,
        Entity::WorldIpv4,
        Entity::WorldIpv6,
        Entity::All,
        Entity::KubeApiserver,
    ];

    /// The name used in policies.
    pub fn name(self) -> &'static str {
        match self {
            Entity::Host => "host",
            Entity::RemoteNode => "remote-node",
            Entity::Cluster => "cluster",
            Entity::World => "world",
            Entity::WorldIpv4 => "world-ipv4",
            Entity::WorldIpv6 => "world-ipv6",
            Entity::All => "all",
            Entity::KubeApiserver => "kube-apiserver",
        }
    }

    /// Parses an entity name (exact, as Cilium). The error says why a name
    /// Cilium knows cannot be used on a host firewall, or that it is unknown.
    pub fn parse(name: &str) -> Result<Entity, String> {
        if let Some(e) = Entity::SUPPORTED.iter().find(|e| e.name() == name) {
            return Ok(*e);
        }
        let supported = Entity::SUPPORTED.map(Entity::name).join(", ");
        let inert = INERT.map(|(n, _)| n).join(", ");
        Err(format!(
            "unknown entity {name:?} (entities are {supported}; {inert} select nothing here)"
        ))
    }

    /// Why a Cilium entity that selects nothing on a host without Cilium
    /// does so, or `None` if `name` is not one of them.
    pub fn inert(name: &str) -> Option<&'static str> {
        INERT.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
    }
}

/// Cilium's entities that select nothing on a host without Cilium, and why.
const INERT: [(&str, &str); 5] = [
    ("health", "the health entity names Cilium's health-check endpoints, and a host without Cilium has none"),
    ("init", "the init entity names Cilium endpoints whose identity is not yet known, and a host without Cilium has none"),
    ("ingress", "the ingress entity names Cilium's Envoy ingress proxy, and a host without Cilium has none"),
    ("unmanaged", "the unmanaged entity names pods Cilium does not manage, and a host without Cilium manages none"),
    ("none", "the none entity selects nothing, in Cilium too"),
];

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What entities are resolved from: the host's own addresses, the CIDRs of
/// the cluster's nodes and the cluster's other CIDRs (pods, services, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntityContext {
    pub host_addrs: BTreeSet<IpAddr>,
    pub node_cidrs: Vec<IpNet>,
    pub cluster_cidrs: Vec<IpNet>,
    /// The API server's addresses (`[entities] kube_apiserver`); empty
    /// means not configured, and a policy naming the entity is refused.
    #[serde(default)]
    pub kube_apiserver: Vec<IpNet>,
}

impl EntityContext {
    /// The peer sets `entity` stands for (see the module docs). May be empty
    /// (e.g. `remote-node` without node CIDRs): a rule whose peers resolve to
    /// nothing matches nothing.
    pub fn resolve(&self, entity: Entity) -> Vec<CidrSet> {
        match entity {
            Entity::Host => self.host_nets().into_iter().map(CidrSet::cidr).collect(),
            Entity::RemoteNode => {
                let host = self.host_nets();
                aggregate(self.node_cidrs.iter().copied())
                    .into_iter()
                    .filter(|n| !host.contains(n))
                    .map(|n| {
                        let except = host.iter().copied().filter(|h| n.contains(h)).collect();
                        CidrSet::new(n, except)
                    })
                    .collect()
            }
            Entity::Cluster => self.cluster_nets().into_iter().map(CidrSet::cidr).collect(),
            Entity::World => self.world(true, true),
            Entity::WorldIpv4 => self.world(true, false),
            Entity::WorldIpv6 => self.world(false, true),
            Entity::All => vec![CidrSet::cidr(all_v4()), CidrSet::cidr(all_v6())],
            Entity::KubeApiserver => {
                aggregate(self.kube_apiserver.iter().copied()).into_iter().map(CidrSet::cidr).collect()
            }
        }
    }

    /// A note when `entity` resolves to nothing or to less than its name
    /// suggests, because the context lacks something.
    pub fn caveat(&self, entity: Entity) -> Option<String> {
        match entity {
            Entity::Host if self.host_addrs.is_empty() => {
                Some("entity host resolves to no addresses (the host has none)".into())
            }
            Entity::RemoteNode if self.resolve(Entity::RemoteNode).is_empty() => Some(
                "entity remote-node resolves to no addresses (no node CIDRs are configured)".into(),
            ),
            Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6
                if self.cluster_cidrs.is_empty() && self.node_cidrs.is_empty() =>
            {
                Some(format!(
                    "entity {entity} excludes only the host's addresses (no cluster or node CIDRs are configured)"
                ))
            }
            Entity::Cluster if self.cluster_cidrs.is_empty() && self.node_cidrs.is_empty() => {
                Some(
                    "entity cluster resolves to the host's addresses only (no cluster or node CIDRs are configured)"
                        .into(),
                )
            }
            _ => None,
        }
    }

    fn host_nets(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self
            .host_addrs
            .iter()
            .map(|a| IpNet::from(a.to_canonical()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn cluster_nets(&self) -> Vec<IpNet> {
        aggregate(
            self.cluster_cidrs
                .iter()
                .chain(self.node_cidrs.iter())
                .copied()
                .chain(self.host_nets()),
        )
    }

    fn world(&self, v4: bool, v6: bool) -> Vec<CidrSet> {
        let cluster = self.cluster_nets();
        let mut out = Vec::new();
        for (want, all) in [(v4, all_v4()), (v6, all_v6())] {
            if !want {
                continue;
            }
            let except: Vec<IpNet> = cluster
                .iter()
                .copied()
                .filter(|n| all.contains(n))
                .collect();
            if except.contains(&all) {
                continue; // the cluster is the whole family: no world left
            }
            out.push(CidrSet::new(all, except));
        }
        out
    }
}

fn all_v4() -> IpNet {
    IpNet::V4(Ipv4Net::default())
}

fn all_v6() -> IpNet {
    IpNet::V6(Ipv6Net::default())
}

/// Canonical, truncated, merged and sorted (IPv4 first).
fn aggregate(nets: impl Iterator<Item = IpNet>) -> Vec<IpNet> {
    let nets: Vec<IpNet> = nets.map(canonical_net).collect();
    IpNet::aggregate(&nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test literal")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test literal")
    }

    fn ctx() -> EntityContext {
        EntityContext {
            host_addrs: [
                ip("192.168.1.201"),
                ip("2001:db8:1::201"),
                ip("::ffff:10.9.9.9"),
            ]
            .into_iter()
            .collect(),
            node_cidrs: vec![net("192.168.1.0/24"), net("2001:db8:1::/64")],
            cluster_cidrs: vec![net("10.0.0.0/9"), net("10.128.0.0/9"), net("fd00::/8")],
            kube_apiserver: vec![],
        }
    }

    #[test]
    fn parse_names_and_errors() {
        for e in Entity::SUPPORTED {
            assert_eq!(Entity::parse(e.name()), Ok(e));
        }
        for name in ["health", "init", "ingress", "unmanaged", "none"] {
            assert!(Entity::parse(name).is_err(), "{name}");
            assert!(Entity::inert(name).is_some(), "{name}");
        }
        assert_eq!(Entity::inert("host"), None);
        let err = Entity::parse("World").expect_err("case matters");
        assert_eq!(
            err,
            "unknown entity \"World\" (entities are host, remote-node, cluster, world, world-ipv4, world-ipv6, all, kube-apiserver; health, init, ingress, unmanaged, none select nothing here)"
        );
    }

    #[test]
    fn host_is_canonical_host_prefixes() {
        assert_eq!(
            ctx().resolve(Entity::Host),
            vec![
                CidrSet::cidr(net("10.9.9.9/32")),
                CidrSet::cidr(net("192.168.1.201/32")),
                CidrSet::cidr(net("2001:db8:1::201/128")),
            ]
        );
    }

    #[test]
    fn remote_node_excepts_the_host() {
        assert_eq!(
            ctx().resolve(Entity::RemoteNode),
            vec![
                CidrSet::new(net("192.168.1.0/24"), vec![net("192.168.1.201/32")]),
                CidrSet::new(net("2001:db8:1::/64"), vec![net("2001:db8:1::201/128")]),
            ]
        );
        // A node CIDR that is exactly the host disappears.
        let c = EntityContext {
            host_addrs: [ip("192.168.1.201")].into_iter().collect(),
            node_cidrs: vec![net("192.168.1.201/32")],
            cluster_cidrs: vec![],
            kube_apiserver: vec![],
        };
        assert_eq!(c.resolve(Entity::RemoteNode), vec![]);
        assert!(c.caveat(Entity::RemoteNode).is_some());
    }

    #[test]
    fn cluster_is_aggregated_union() {
        assert_eq!(
            ctx().resolve(Entity::Cluster),
            vec![
                CidrSet::cidr(net("10.0.0.0/8")),
                CidrSet::cidr(net("192.168.1.0/24")),
                CidrSet::cidr(net("2001:db8:1::/64")),
                CidrSet::cidr(net("fd00::/8")),
            ]
        );
    }

    #[test]
    fn world_excepts_cluster_per_family() {
        assert_eq!(
            ctx().resolve(Entity::World),
            vec![
                CidrSet::new(
                    net("0.0.0.0/0"),
                    vec![net("10.0.0.0/8"), net("192.168.1.0/24")]
                ),
                CidrSet::new(net("::/0"), vec![net("2001:db8:1::/64"), net("fd00::/8")]),
            ]
        );
        assert_eq!(ctx().resolve(Entity::WorldIpv4).len(), 1);
        assert_eq!(ctx().resolve(Entity::WorldIpv6)[0].cidr, net("::/0"));
        let everything = EntityContext {
            cluster_cidrs: vec![net("0.0.0.0/0")],
            ..EntityContext::default()
        };
        assert_eq!(
            everything.resolve(Entity::World),
            vec![CidrSet::cidr(net("::/0"))]
        );
    }

    #[test]
    fn world_and_cluster_partition_the_address_space() {
        let c = ctx();
        let in_any = |e: Entity, a: IpAddr| c.resolve(e).iter().any(|s| s.contains(a));
        for a in [
            "10.1.2.3",
            "192.168.1.7",
            "192.168.1.201",
            "192.168.2.1",
            "8.8.8.8",
            "2001:db8:1::5",
            "2001:db8:2::5",
            "fd12::1",
            "::ffff:10.1.1.1",
            "::1",
        ] {
            let a = ip(a);
            assert_ne!(in_any(Entity::World, a), in_any(Entity::Cluster, a), "{a}");
            assert!(in_any(Entity::All, a), "{a}");
        }
        assert!(in_any(Entity::Host, ip("192.168.1.201")));
        assert!(!in_any(Entity::RemoteNode, ip("192.168.1.201")));
        assert!(in_any(Entity::RemoteNode, ip("192.168.1.202")));
    }

    #[test]
    fn empty_context() {
        let c = EntityContext::default();
        assert_eq!(c.resolve(Entity::Host), vec![]);
        assert_eq!(c.resolve(Entity::Cluster), vec![]);
        assert_eq!(
            c.resolve(Entity::World),
            vec![CidrSet::cidr(net("0.0.0.0/0")), CidrSet::cidr(net("::/0"))]
        );
        assert!(c.caveat(Entity::Host).is_some());
        assert!(c.caveat(Entity::Cluster).is_some());
        assert!(c.caveat(Entity::World).is_some());
        assert!(ctx().caveat(Entity::World).is_none());
        assert!(ctx().caveat(Entity::All).is_none());
    }
}
