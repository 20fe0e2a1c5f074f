//! The typed rule set: what a policy means once files are parsed and entities
//! (`host`, `world`, `cluster`, …) are resolved to CIDRs. The compiler only
//! ever sees this, so the language front end and the datapath back end can
//! change independently.
//!
//! [`RuleSet::evaluate`] is the *meaning* of a rule set, written as plainly as
//! possible; the compiled map image must agree with it for every packet.
//!
//! Address families: the datapath stores IPv4 as IPv4-mapped IPv6, so an IPv6
//! packet whose address is `::ffff:a.b.c.d` is indistinguishable from an IPv4
//! packet from `a.b.c.d`. The model therefore treats IPv4-mapped IPv6
//! addresses and prefixes (`::ffff:0:0/96` and longer) as the IPv4 ones they
//! map to ([`canonical_net`]); an IPv6 CIDR such as `::/0` never matches IPv4.
//!
//! The bottom of the crate: it may not import any other module of it.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// Outcome of the policy step for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// An allow entry matched (the rule id it carries).
    Allow(u32),
    /// A deny entry matched: drop with reason `policy-deny-rule`.
    Deny(u32),
    /// Direction enforced and nothing matched: drop `policy-denied`.
    NoMatch,
    /// No rule has this direction: the policy step passes everything.
    NotEnforced,
}

/// IP protocol numbers used by the datapath's rule key.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// Traffic direction as seen from the host. Values are the C `HF_DIR_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];
}

/// What a rule does with matching traffic. Values are the C `HF_ACTION_*`, so
/// the map writer can store them as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow = 1,
    Deny = 2,
}

/// Layer-4 protocol of a `toPorts` entry. `Any` is Cilium's `ANY`: TCP, UDP
/// and SCTP (not ICMP, which has its own `icmps` match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum L4Proto {
    Tcp,
    Udp,
    Sctp,
    Any,
}

impl L4Proto {
    /// The IP protocol numbers this matches, in ascending order.
    pub fn protocols(self) -> &'static [u8] {
        match self {
            L4Proto::Tcp => &[IPPROTO_TCP],
            L4Proto::Udp => &[IPPROTO_UDP],
            L4Proto::Sctp => &[IPPROTO_SCTP],
            L4Proto::Any => &[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP],
        }
    }
}

/// Family of an `icmps` match: ICMP for IPv4, ICMPv6 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpFamily {
    V4,
    V6,
}

impl IcmpFamily {
    pub fn protocol(self) -> u8 {
        match self {
            IcmpFamily::V4 => IPPROTO_ICMP,
            IcmpFamily::V6 => IPPROTO_ICMPV6,
        }
    }
}

/// One protocol/port match of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "match")]
pub enum PortMatch {
    /// Destination ports `first..=last` of `proto` (0..=65535 = every port).
    L4 {
        proto: L4Proto,
        first: u16,
        last: u16,
    },
    /// One ICMP/ICMPv6 type, any code.
    Icmp { family: IcmpFamily, icmp_type: u8 },
    /// Every packet of an IP protocol without ports (Cilium's extended
    /// protocols: VRRP, IGMP, …). The datapath looks such packets up with
    /// port 0; the whole port range makes it one protocol entry.
    Proto { proto: u8 },
}

impl PortMatch {
    /// Cilium's `port`/`endPort`: port 0 means every port; without `endPort`
    /// the range is the single port. The result is not validated (an
    /// `endPort` below `port` is reported by [`RuleSet::validate`]).
    pub fn l4(proto: L4Proto, port: u16, end_port: Option<u16>) -> PortMatch {
        if port == 0 {
            return PortMatch::all_ports(proto);
        }
        PortMatch::L4 {
            proto,
            first: port,
            last: end_port.unwrap_or(port),
        }
    }

    /// Every port of `proto`.
    pub fn all_ports(proto: L4Proto) -> PortMatch {
        PortMatch::L4 {
            proto,
            first: 0,
            last: u16::MAX,
        }
    }

    /// The match as `(protocol, first, last)` intervals of the datapath's
    /// 16-bit "port" field, where ICMP's port is `type << 8 | code`. This is
    /// the one place that knows how matches map onto the rule key.
    pub fn intervals(&self) -> impl Iterator<Item = (u8, u16, u16)> + '_ {
        let (protos, first, last): (&[u8], u16, u16) = match *self {
            PortMatch::L4 { proto, first, last } => (proto.protocols(), first, last),
            PortMatch::Icmp { family, icmp_type } => {
                let protos: &[u8] = match family {
                    IcmpFamily::V4 => &[IPPROTO_ICMP],
                    IcmpFamily::V6 => &[IPPROTO_ICMPV6],
                };
                let base = u16::from(icmp_type) << 8;
                (protos, base, base | 0xff)
            }
            PortMatch::Proto { ref proto } => (std::slice::from_ref(proto), 0, u16::MAX),
        };
        protos.iter().map(move |&p| (p, first, last))
    }

    /// Whether a packet of IP protocol `proto` with datapath port `port`
    /// matches (reference semantics).
    pub fn matches(&self, proto: u8, port: u16) -> bool {
        self.intervals()
            .any(|(p, first, last)| p == proto && first <= port && port <= last)
    }
}

/// A peer CIDR with holes (Cilium's `fromCIDRSet`/`toCIDRSet`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrSet {
    pub cidr: IpNet,
    #[serde(default)]
    pub except: Vec<IpNet>,
}

impl CidrSet {
    /// A set with every prefix truncated to its network address, so that
    /// `10.1.2.3/8` and `10.0.0.0/8` are the same peer.
    pub fn new(cidr: IpNet, except: Vec<IpNet>) -> CidrSet {
        CidrSet {
            cidr: cidr.trunc(),
            except: except.into_iter().map(|e| e.trunc()).collect(),
        }
    }

    /// A plain CIDR without holes.
    pub fn cidr(cidr: IpNet) -> CidrSet {
        CidrSet::new(cidr, Vec::new())
    }

    /// Whether `addr` is in the set (reference semantics, see module docs).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        canonical_net(self.cidr).contains(&addr)
            && !self
                .except
                .iter()
                .any(|e| canonical_net(*e).contains(&addr))
    }
}

/// `net` truncated, with IPv4-mapped IPv6 prefixes (`::ffff:0:0/96` and
/// longer) turned into the IPv4 prefix they stand for — the datapath cannot
/// tell them apart, so neither does the model.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => match Ipv4Net::new(v4, v6.prefix_len() - 96) {
                Ok(n) => IpNet::V4(n),
                Err(_) => IpNet::V6(v6),
            },
            None => IpNet::V6(v6),
        },
        other => other,
    }
}

/// One rule: traffic in `direction` from/to any of `peers`, on any of `ports`.
/// Empty `ports` means every protocol and port (an "L3-only" rule); empty
/// `peers` matches nothing (but still makes its direction default-deny).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Reported in drop events and verdicts; unique within a rule set.
    pub id: u32,
    pub direction: Direction,
    pub action: Action,
    pub peers: Vec<CidrSet>,
    pub ports: Vec<PortMatch>,
}

impl Rule {
    pub fn new(id: u32, direction: Direction, action: Action, peers: Vec<CidrSet>, ports: Vec<PortMatch>) -> Rule {
        Rule { id, direction, action, peers, ports }
    }

    /// Whether the rule matches the packet (reference semantics).
    pub fn matches(&self, remote: IpAddr, direction: Direction, proto: u8, port: u16) -> bool {
        self.direction == direction
            && self.peers.iter().any(|p| p.contains(remote))
            && (self.ports.is_empty() || self.ports.iter().any(|m| m.matches(proto, port)))
    }
}

/// A validation error, naming the rule id and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("rule {rule}: ports[{index}]: first port {first} is greater than last port {last}")]
    PortRange {
        rule: u32,
        index: usize,
        first: u16,
        last: u16,
    },
    #[error("rule {rule}: peers[{peer}].except[{index}]: {except} is not inside {cidr}")]
    ExceptOutside {
        rule: u32,
        peer: usize,
        index: usize,
        cidr: IpNet,
        except: IpNet,
    },
    #[error(
        "rule {rule}: peers[{peer}].except[{index}]: {except} is not of the same address family as {cidr}"
    )]
    FamilyMismatch {
        rule: u32,
        peer: usize,
        index: usize,
        cidr: IpNet,
        except: IpNet,
    },
    #[error("rule {rule}: id: duplicate rule id (rules[{first}] and rules[{second}])")]
    DuplicateRuleId {
        rule: u32,
        first: usize,
        second: usize,
    },
}

/// All rules of the active policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        RuleSet { rules }
    }

    /// Checks what the types cannot: port ranges, excepts inside their CIDR
    /// and of its family (as written, so a mistake is reported rather than
    /// silently canonicalised away), unique rule ids. Reports the first error.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut seen: HashMap<u32, usize> = HashMap::with_capacity(self.rules.len());
        for (ri, rule) in self.rules.iter().enumerate() {
            if let Some(&first) = seen.get(&rule.id) {
                return Err(ValidationError::DuplicateRuleId {
                    rule: rule.id,
                    first,
                    second: ri,
                });
            }
            seen.insert(rule.id, ri);
            for (index, m) in rule.ports.iter().enumerate() {
                if let PortMatch::L4 { first, last, .. } = *m {
                    if first > last {
                        return Err(ValidationError::PortRange {
                            rule: rule.id,
                            index,
                            first,
                            last,
                        });
                    }
                }
            }
            for (peer, set) in rule.peers.iter().enumerate() {
                let cidr = set.cidr.trunc();
                for (index, except) in set.except.iter().enumerate() {
                    let except = except.trunc();
                    let same_family = matches!(
                        (cidr, except),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    );
                    if !same_family {
                        return Err(ValidationError::FamilyMismatch {
                            rule: rule.id,
                            peer,
                            index,
                            cidr,
                            except,
                        });
                    }
                    if !cidr.contains(&except) {
                        return Err(ValidationError::ExceptOutside {
                            rule: rule.id,
                            peer,
                            index,
                            cidr,
                            except,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Cilium semantics: a direction with any rule (allow or deny) is
    /// default-deny.
    pub fn enforces(&self, direction: Direction) -> bool {
        self.rules.iter().any(|r| r.direction == direction)
    }

    /// The reference verdict for a packet, computed naively from the rules.
    /// The compiled image must agree for every packet
    /// ([`super::image::MapImage::evaluate`]).
    ///
    /// `remote` is the source address on ingress and the destination on
    /// egress; `port` is the destination port for TCP/UDP/SCTP and
    /// `type << 8 | code` for ICMP/ICMPv6. Deny beats allow. The reported id
    /// is the smallest id among the deciding rules: the matching L3-only
    /// denies if any (they decide alone, whatever the port), else all matching
    /// denies, else all matching allows.
    pub fn evaluate(&self, remote: IpAddr, direction: Direction, proto: u8, port: u16) -> Verdict {
        let mut l3_deny: Option<u32> = None;
        let mut deny: Option<u32> = None;
        let mut allow: Option<u32> = None;
        for r in self
            .rules
            .iter()
            .filter(|r| r.matches(remote, direction, proto, port))
        {
            let slot = match (r.action, r.ports.is_empty()) {
                (Action::Deny, true) => &mut l3_deny,
                (Action::Deny, false) => &mut deny,
                (Action::Allow, _) => &mut allow,
            };
            *slot = Some(slot.map_or(r.id, |id| id.min(r.id)));
        }
        match (l3_deny.or(deny), allow) {
            (Some(id), _) => Verdict::Deny(id),
            (None, Some(id)) => Verdict::Allow(id),
            (None, None) if self.enforces(direction) => Verdict::NoMatch,
            (None, None) => Verdict::NotEnforced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test literal")
    }

    fn rule(id: u32, peers: Vec<CidrSet>, ports: Vec<PortMatch>) -> Rule {
        Rule {
            id,
            direction: Direction::Ingress,
            action: Action::Allow,
            peers,
            ports,
        }
    }

    #[test]
    fn cidr_set_new_truncates() {
        let s = CidrSet::new(net("10.1.2.3/8"), vec![net("10.1.2.3/16")]);
        assert_eq!(s.cidr, net("10.0.0.0/8"));
        assert_eq!(s.except, vec![net("10.1.0.0/16")]);
    }

    #[test]
    fn canonical_net_maps_v4_mapped_prefixes() {
        assert_eq!(canonical_net(net("::ffff:10.1.2.3/104")), net("10.0.0.0/8"));
        assert_eq!(canonical_net(net("::ffff:0:0/96")), net("0.0.0.0/0"));
        assert_eq!(canonical_net(net("::ffff:0:0/95")), net("::fffe:0:0/95"));
        assert_eq!(canonical_net(net("2001:db8::1/32")), net("2001:db8::/32"));
    }

    #[test]
    fn v6_cidr_does_not_match_v4_or_v4_mapped() {
        let all6 = CidrSet::cidr(net("::/0"));
        assert!(!all6.contains("10.0.0.1".parse().expect("ip")));
        assert!(!all6.contains("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(all6.contains("2001:db8::1".parse().expect("ip")));
        let v4 = CidrSet::cidr(net("10.0.0.0/8"));
        assert!(v4.contains("::ffff:10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn port_match_l4_cilium_semantics() {
        assert_eq!(
            PortMatch::l4(L4Proto::Tcp, 0, None),
            PortMatch::all_ports(L4Proto::Tcp)
        );
        assert_eq!(
            PortMatch::l4(L4Proto::Tcp, 22, None),
            PortMatch::L4 {
                proto: L4Proto::Tcp,
                first: 22,
                last: 22
            }
        );
        assert_eq!(
            PortMatch::l4(L4Proto::Udp, 1000, Some(2000)),
            PortMatch::L4 {
                proto: L4Proto::Udp,
                first: 1000,
                last: 2000
            }
        );
    }

    #[test]
    fn icmp_match_is_type_interval() {
        let m = PortMatch::Icmp {
            family: IcmpFamily::V6,
            icmp_type: 128,
        };
        assert_eq!(
            m.intervals().collect::<Vec<_>>(),
            vec![(58, 0x8000, 0x80ff)]
        );
        assert!(m.matches(58, 128 << 8 | 3));
        assert!(!m.matches(1, 128 << 8));
        assert!(!m.matches(58, 129 << 8));
    }

    #[test]
    fn validate_rejects_port_range() {
        let rs = RuleSet::new(vec![rule(
            7,
            vec![],
            vec![
                PortMatch::all_ports(L4Proto::Tcp),
                PortMatch::l4(L4Proto::Tcp, 80, Some(79)),
            ],
        )]);
        let err = rs.validate().expect_err("invalid");
        assert_eq!(
            err,
            ValidationError::PortRange {
                rule: 7,
                index: 1,
                first: 80,
                last: 79
            }
        );
        assert_eq!(
            err.to_string(),
            "rule 7: ports[1]: first port 80 is greater than last port 79"
        );
    }

    #[test]
    fn validate_rejects_except_outside() {
        let rs = RuleSet::new(vec![rule(
            3,
            vec![
                CidrSet::cidr(net("0.0.0.0/0")),
                CidrSet::new(net("10.0.0.0/8"), vec![net("11.0.0.0/16")]),
            ],
            vec![],
        )]);
        let err = rs.validate().expect_err("invalid");
        assert!(matches!(
            err,
            ValidationError::ExceptOutside {
                rule: 3,
                peer: 1,
                index: 0,
                ..
            }
        ));
        assert!(
            err.to_string().starts_with("rule 3: peers[1].except[0]:"),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_family_mismatch() {
        let rs = RuleSet::new(vec![rule(
            4,
            vec![CidrSet::new(
                net("::/0"),
                vec![net("2001:db8::/32"), net("10.0.0.0/8")],
            )],
            vec![],
        )]);
        let err = rs.validate().expect_err("invalid");
        assert!(matches!(
            err,
            ValidationError::FamilyMismatch {
                rule: 4,
                peer: 0,
                index: 1,
                ..
            }
        ));
    }

    #[test]
    fn validate_rejects_duplicate_id() {
        let rs = RuleSet::new(vec![
            rule(1, vec![], vec![]),
            rule(2, vec![], vec![]),
            rule(1, vec![], vec![]),
        ]);
        assert_eq!(
            rs.validate(),
            Err(ValidationError::DuplicateRuleId {
                rule: 1,
                first: 0,
                second: 2
            })
        );
    }

    #[test]
    fn validate_accepts_except_equal_to_cidr_and_untruncated() {
        let rs = RuleSet::new(vec![rule(
            1,
            vec![CidrSet {
                cidr: net("10.1.2.3/8"),
                except: vec![net("10.0.0.0/8"), net("10.9.9.9/16")],
            }],
            vec![],
        )]);
        assert_eq!(rs.validate(), Ok(()));
    }

    #[test]
    fn reference_l3_deny_reports_l3_id() {
        let all = vec![CidrSet::cidr(net("0.0.0.0/0"))];
        let mut deny_port = rule(1, all.clone(), vec![PortMatch::l4(L4Proto::Tcp, 22, None)]);
        deny_port.action = Action::Deny;
        let mut deny_l3 = rule(5, all.clone(), vec![]);
        deny_l3.action = Action::Deny;
        let rs = RuleSet::new(vec![deny_port, deny_l3, rule(0, all, vec![])]);
        let a: IpAddr = "1.2.3.4".parse().expect("ip");
        assert_eq!(
            rs.evaluate(a, Direction::Ingress, IPPROTO_TCP, 22),
            Verdict::Deny(5)
        );
        assert_eq!(
            rs.evaluate(a, Direction::Egress, IPPROTO_TCP, 22),
            Verdict::NotEnforced
        );
    }
}
