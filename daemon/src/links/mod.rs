//! The link table: every network device of the host as hostfwd sees it,
//! kept current from rtnetlink (see `crate::netlink`). Pure: the table only
//! applies [`Change`]s; it never talks to the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// A kernel interface index (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Ifindex(u32);

impl Ifindex {
    pub fn new(i: u32) -> Option<Ifindex> {
        (i != 0).then_some(Ifindex(i))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Ifindex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An 802.1Q VLAN id, 1..=4094 (0 is "priority tag", 4095 reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Vid(u16);

impl Vid {
    pub fn new(v: u16) -> Option<Vid> {
        (1..=4094).contains(&v).then_some(Vid(v))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Vid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What kind of device a link is (from IFLA_LINKINFO's kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LinkKind {
    /// No IFLA_INFO_KIND: a real NIC (or a virtual one without a kind).
    Physical,
    Loopback,
    Bond,
    /// A VLAN subinterface: `vid` on top of `lower` (IFLA_LINK).
    Vlan { vid: Vid, lower: Ifindex },
    Veth,
    Bridge,
    Macvlan,
    /// ipip, gre, vxlan, geneve, wireguard, … (the kind string).
    Tunnel { name: String },
    /// Any other kind, kept by name and logged, never an error.
    Other { name: String },
}

impl LinkKind {
    /// The short name shown to users (`physical`, `vlan`, …).
    pub fn name(&self) -> &str {
        match self {
            LinkKind::Physical => "physical",
            LinkKind::Loopback => "loopback",
            LinkKind::Bond => "bond",
            LinkKind::Vlan { .. } => "vlan",
            LinkKind::Veth => "veth",
            LinkKind::Bridge => "bridge",
            LinkKind::Macvlan => "macvlan",
            LinkKind::Tunnel { name } | LinkKind::Other { name } => name,
        }
    }
}

/// RFC 2863 operational state (IFLA_OPERSTATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

/// One device, as the kernel last described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub ifindex: Ifindex,
    pub name: String,
    pub kind: LinkKind,
    /// IFLA_MASTER: the bond or bridge this link is a port of.
    pub controller: Option<Ifindex>,
    /// IFF_UP (administratively up).
    pub up: bool,
    pub oper: OperState,
    /// Addresses with their prefix length, any scope.
    pub addrs: BTreeSet<IpNet>,
    /// A default route (v4 or v6) leaves through this link.
    pub default_route: bool,
    /// The other end of a veth lives in another network namespace.
    pub peer_in_other_netns: bool,
}

impl Link {
    /// A link as an RTM_NEWLINK describes it, before addresses and routes.
    pub fn new(ifindex: Ifindex, name: impl Into<String>, kind: LinkKind) -> Link {
        Link {
            ifindex,
            name: name.into(),
            kind,
            controller: None,
            up: false,
            oper: OperState::Unknown,
            addrs: BTreeSet::new(),
            default_route: false,
            peer_in_other_netns: false,
        }
    }

    /// A global unicast address: not loopback, link-local, multicast or
    /// unspecified.
    pub fn has_global_unicast(&self) -> bool {
        self.addrs.iter().any(|a| is_global_unicast(&a.addr()))
    }
}

/// Whether an address is global unicast (what `auto` selection looks for).
pub fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_multicast() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80),
    }
}

/// A fact from the kernel, already typed. The netlink module produces them
/// from the initial dump and from multicast events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// RTM_NEWLINK: a new link or a changed one (addresses and routes of an
    /// existing link are kept).
    Link(Link),
    /// RTM_DELLINK.
    LinkGone(Ifindex),
    AddrAdded(Ifindex, IpNet),
    AddrRemoved(Ifindex, IpNet),
    /// The set of links that carry a default route, for one family, replaced.
    DefaultRoutes { v6: bool, via: BTreeSet<Ifindex> },
    /// The destinations of the `local` routing table's routes of type local,
    /// broadcast and anycast, for one family, replaced: what the kernel
    /// delivers to the host itself.
    LocalRoutes { v6: bool, nets: BTreeSet<IpNet> },
    /// A qdisc or filter changed on this link (someone may have removed
    /// hostfwd's clsact): only triggers a reconcile.
    Tc(Ifindex),
}

/// Every link of the host, by ifindex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Table {
    links: BTreeMap<Ifindex, Link>,
    #[serde(skip)]
    default_v4: BTreeSet<Ifindex>,
    #[serde(skip)]
    default_v6: BTreeSet<Ifindex>,
    #[serde(skip)]
    local_v4: BTreeSet<IpNet>,
    #[serde(skip)]
    local_v6: BTreeSet<IpNet>,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    pub fn get(&self, i: Ifindex) -> Option<&Link> {
        self.links.get(&i)
    }

    pub fn by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Every address of the host (all links, all scopes).
    pub fn host_addrs(&self) -> BTreeSet<IpAddr> {
        self.links.values().flat_map(|l| l.addrs.iter().map(|a| a.addr())).collect()
    }

    /// Everything the kernel delivers to the host itself by address: the
    /// local-table routes and, as host prefixes, every address of every
    /// link (so that an address counts before its local route is read, and
    /// while a route dump is missing).
    pub fn local_nets(&self) -> BTreeSet<IpNet> {
        let mut out: BTreeSet<IpNet> = self.local_v4.union(&self.local_v6).copied().collect();
        out.extend(self.host_addrs().into_iter().map(IpNet::from));
        out
    }

    /// Applies one change; returns whether anything changed. Messages about
    /// links that no longer exist (late addresses of a deleted link) are
    /// ignored.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Link(mut link) => {
                if let Some(old) = self.links.get(&link.ifindex) {
                    link.addrs = old.addrs.clone();
                }
                link.default_route = self.default_v4.contains(&link.ifindex) || self.default_v6.contains(&link.ifindex);
                let changed = self.links.get(&link.ifindex) != Some(&link);
                self.links.insert(link.ifindex, link);
                changed
            }
            Change::LinkGone(i) => {
                self.default_v4.remove(&i);
                self.default_v6.remove(&i);
                self.links.remove(&i).is_some()
            }
            Change::AddrAdded(i, a) => self.links.get_mut(&i).is_some_and(|l| l.addrs.insert(a)),
            Change::AddrRemoved(i, a) => self.links.get_mut(&i).is_some_and(|l| l.addrs.remove(&a)),
            Change::DefaultRoutes { v6, via } => {
                let set = if v6 { &mut self.default_v6 } else { &mut self.default_v4 };
                if *set == via {
                    return false;
                }
                *set = via;
                for (i, l) in self.links.iter_mut() {
                    l.default_route = self.default_v4.contains(i) || self.default_v6.contains(i);
                }
                true
            }
            Change::LocalRoutes { v6, nets } => {
                let set = if v6 { &mut self.local_v6 } else { &mut self.local_v4 };
                let changed = *set != nets;
                *set = nets;
                changed
            }
            Change::Tc(i) => self.links.contains_key(&i),
        }
    }

    /// Replaces the whole table with a fresh dump (after a netlink overrun);
    /// returns whether anything differs.
    pub fn replace(&mut self, fresh: Table) -> bool {
        let changed = *self != fresh;
        *self = fresh;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifx(i: u32) -> Ifindex {
        Ifindex::new(i).unwrap()
    }

    #[test]
    fn newtypes_reject_invalid_values() {
        assert!(Ifindex::new(0).is_none());
        assert!(Vid::new(0).is_none());
        assert!(Vid::new(4095).is_none());
        assert_eq!(Vid::new(4094).map(Vid::get), Some(4094));
    }

    #[test]
    fn addresses_survive_link_updates_and_late_messages_are_ignored() {
        let mut t = Table::new();
        assert!(t.apply(Change::Link(Link::new(ifx(3), "eth0", LinkKind::Physical))));
        assert!(t.apply(Change::AddrAdded(ifx(3), "192.0.2.1/24".parse().unwrap())));
        let mut renamed = Link::new(ifx(3), "lan0", LinkKind::Physical);
        renamed.up = true;
        assert!(t.apply(Change::Link(renamed)));
        assert_eq!(t.get(ifx(3)).unwrap().addrs.len(), 1, "addresses kept across NEWLINK");
        assert!(t.get(ifx(3)).unwrap().has_global_unicast());
        assert!(t.apply(Change::LinkGone(ifx(3))));
        assert!(!t.apply(Change::AddrAdded(ifx(3), "192.0.2.2/24".parse().unwrap())), "late message ignored");
        assert!(t.is_empty());
    }

    #[test]
    fn local_nets_are_routes_and_addresses() {
        let mut t = Table::new();
        t.apply(Change::Link(Link::new(ifx(2), "eth0", LinkKind::Physical)));
        t.apply(Change::AddrAdded(ifx(2), "192.0.2.1/24".parse().unwrap()));
        let nets = |s: &[&str]| -> BTreeSet<IpNet> { s.iter().map(|n| n.parse().unwrap()).collect() };
        assert_eq!(t.local_nets(), nets(&["192.0.2.1/32"]), "an address before its route");
        assert!(t.apply(Change::LocalRoutes { v6: false, nets: nets(&["192.0.2.1/32", "192.0.2.255/32", "10.9.0.0/24"]) }));
        assert!(!t.apply(Change::LocalRoutes { v6: false, nets: nets(&["192.0.2.1/32", "192.0.2.255/32", "10.9.0.0/24"]) }));
        t.apply(Change::LocalRoutes { v6: true, nets: nets(&["2001:db8::/64"]) });
        assert_eq!(t.local_nets(), nets(&["192.0.2.1/32", "192.0.2.255/32", "10.9.0.0/24", "2001:db8::/64"]));
        assert_eq!(t.host_addrs().len(), 1, "the host entity keeps to interface addresses");
        t.apply(Change::LocalRoutes { v6: false, nets: BTreeSet::new() });
        assert_eq!(t.local_nets(), nets(&["192.0.2.1/32", "2001:db8::/64"]));
    }

    #[test]
    fn default_routes_mark_links() {
        let mut t = Table::new();
        t.apply(Change::Link(Link::new(ifx(2), "eth0", LinkKind::Physical)));
        t.apply(Change::Link(Link::new(ifx(4), "eth1", LinkKind::Physical)));
        assert!(t.apply(Change::DefaultRoutes { v6: false, via: [ifx(2)].into() }));
        assert!(t.get(ifx(2)).unwrap().default_route);
        assert!(!t.apply(Change::DefaultRoutes { v6: false, via: [ifx(2)].into() }), "no change");
        t.apply(Change::DefaultRoutes { v6: true, via: [ifx(4)].into() });
        t.apply(Change::DefaultRoutes { v6: false, via: BTreeSet::new() });
        assert!(!t.get(ifx(2)).unwrap().default_route);
        assert!(t.get(ifx(4)).unwrap().default_route);
        // A re-created link inherits the route state the kernel reported.
        t.apply(Change::Link(Link::new(ifx(4), "eth1", LinkKind::Physical)));
        assert!(t.get(ifx(4)).unwrap().default_route);
    }
}
