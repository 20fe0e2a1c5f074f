//! Kernel messages to link-table changes: what an RTM_NEWLINK, an address,
//! a route or a tc message means for the [`Table`](crate::links::Table)
//! (the tables in the parent module's doc). Pure functions of a message;
//! the sockets are the parent's.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteType,
};
use netlink_packet_route::tc::TcMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use tracing::{debug, warn};
use super::{RT_TABLE_LOCAL, RT_TABLE_MAIN};
use crate::links::{Change, Ifindex, Link, LinkKind, OperState, Vid};

/// What one rtnetlink message means for the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    Change(Change),
    /// A main-table default route or a local-table route of this family
    /// was added, changed or removed: re-read the sets.
    Routes { v6: bool },
    Ignored,
}

pub(super) fn interpret(msg: &RouteNetlinkMessage) -> Note {
    use RouteNetlinkMessage as M;
    let change = |c: Option<Change>| c.map_or(Note::Ignored, Note::Change);
    match msg {
        M::NewLink(m) if m.header.interface_family == AddressFamily::Unspec => {
            change(parse_link(m).map(Change::Link))
        }
        M::DelLink(m) if m.header.interface_family == AddressFamily::Unspec => {
            change(Ifindex::new(m.header.index).map(Change::LinkGone))
        }
        M::NewAddress(m) => change(parse_addr(m).map(|(i, a)| Change::AddrAdded(i, a))),
        M::DelAddress(m) => change(parse_addr(m).map(|(i, a)| Change::AddrRemoved(i, a))),
        M::NewRoute(m) | M::DelRoute(m) => main_default_family(m)
            .or_else(|| local_route(m).map(|(v6, _)| v6))
            .map_or(Note::Ignored, |v6| Note::Routes { v6 }),
        M::NewQueueDiscipline(m)
        | M::DelQueueDiscipline(m)
        | M::NewTrafficFilter(m)
        | M::DelTrafficFilter(m)
        | M::NewTrafficClass(m)
        | M::DelTrafficClass(m)
        | M::NewTrafficChain(m)
        | M::DelTrafficChain(m) => change(tc_ifindex(m).map(Change::Tc)),
        _ => Note::Ignored,
    }
}

/// A link as an RTM_NEWLINK describes it; `None` (with a warning) without an
/// ifindex or a name. See the module docs for the attribute mapping.
pub fn parse_link(msg: &LinkMessage) -> Option<Link> {
    let Some(ifindex) = Ifindex::new(msg.header.index) else {
        warn!("ignoring an RTM_NEWLINK with ifindex 0");
        return None;
    };
    let attrs = LinkAttrs::gather(msg);
    let Some(name) = attrs.name else {
        warn!(%ifindex, "ignoring an RTM_NEWLINK without IFLA_IFNAME");
        return None;
    };
    let kind = link_kind(name, msg.header.flags, &attrs);
    let mut link = Link::new(ifindex, name, kind);
    link.controller = attrs.controller.and_then(Ifindex::new);
    link.up = msg.header.flags.contains(LinkFlags::Up);
    link.oper = attrs.oper.map_or(OperState::Unknown, oper_state);
    link.peer_in_other_netns = link.kind == LinkKind::Veth && attrs.netnsid.is_some();
    Some(link)
}

/// The IFLA_* attributes link parsing uses, gathered in passes: top-level
/// attributes, then inside IFLA_LINKINFO the kind and the kind's data
/// (nispor's habit; the kind functions below read only this).
#[derive(Debug, Default)]
pub(super) struct LinkAttrs<'a> {
    name: Option<&'a str>,
    controller: Option<u32>,
    oper: Option<State>,
    /// IFLA_LINK: a VLAN's lower device, a veth's peer.
    lower: Option<u32>,
    /// IFLA_LINK_NETNSID: IFLA_LINK is in another namespace.
    netnsid: Option<i32>,
    kind: Option<&'a InfoKind>,
    data: Option<&'a InfoData>,
}

impl<'a> LinkAttrs<'a> {
    fn gather(msg: &'a LinkMessage) -> LinkAttrs<'a> {
        let mut a = LinkAttrs::default();
        let mut info: &[LinkInfo] = &[];
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => a.name = Some(n),
                LinkAttribute::Controller(c) => a.controller = Some(*c),
                LinkAttribute::OperState(s) => a.oper = Some(*s),
                LinkAttribute::Link(l) => a.lower = Some(*l),
                LinkAttribute::LinkNetNsId(n) => a.netnsid = Some(*n),
                LinkAttribute::LinkInfo(i) => info = i,
                _ => {}
            }
        }
        for i in info {
            if let LinkInfo::Kind(k) = i {
                a.kind = Some(k);
            }
        }
        for i in info {
            if let LinkInfo::Data(d) = i {
                a.data = Some(d);
            }
        }
        a
    }
}

/// The kind of a link from IFLA_INFO_KIND (and its data). Unknown kinds
/// are `Other`, logged at debug, never an error.
pub(super) fn link_kind(name: &str, flags: LinkFlags, a: &LinkAttrs<'_>) -> LinkKind {
    let Some(kind) = a.kind else {
        return physical(flags);
    };
    match kind {
        InfoKind::Bond => LinkKind::Bond,
        InfoKind::Vlan => vlan(name, a),
        InfoKind::Veth => LinkKind::Veth,
        InfoKind::Bridge => LinkKind::Bridge,
        InfoKind::MacVlan | InfoKind::MacVtap => LinkKind::Macvlan,
        k if is_tunnel(k) => LinkKind::Tunnel { name: k.to_string() },
        other => {
            debug!(link = name, kind = %other, "link kind kept as other");
            LinkKind::Other { name: other.to_string() }
        }
    }
}

/// No IFLA_INFO_KIND: a real device (or one whose driver has no
/// rtnl_link_ops), loopback by IFF_LOOPBACK.
pub(super) fn physical(flags: LinkFlags) -> LinkKind {
    if flags.contains(LinkFlags::Loopback) {
        LinkKind::Loopback
    } else {
        LinkKind::Physical
    }
}

/// Encapsulating devices. ipvlan/ipvtap are not among them (L2/L3
/// sub-devices of a lower NIC, like macvlan; `LinkKind` has no variant for
/// them, so they are `Other`).
pub(super) fn is_tunnel(k: &InfoKind) -> bool {
    use InfoKind as K;
    matches!(
        k,
        K::IpIp
            | K::GreTun
            | K::GreTap
            | K::GreTun6
            | K::GreTap6
            | K::Ip6Tnl
            | K::SitTun
            | K::Vti
            | K::Vti6
            | K::Vxlan
            | K::Geneve
            | K::Wireguard
            | K::ErSpan
            | K::Ip6ErSpan
            | K::BareUdp
            | K::Gtp
            | K::Xfrm
            | K::Amt
            | K::Pfcp
    )
}

/// `Vlan { vid: IFLA_VLAN_ID, lower: IFLA_LINK }`; a VLAN without a valid
/// VID (1..=4094) or a lower device in this namespace is `Other("vlan")`,
/// with a warning.
pub(super) fn vlan(name: &str, a: &LinkAttrs<'_>) -> LinkKind {
    let other = || LinkKind::Other { name: "vlan".into() };
    let id = match a.data {
        Some(InfoData::Vlan(v)) => v.iter().find_map(|x| match x {
            InfoVlan::Id(id) => Some(*id),
            _ => None,
        }),
        _ => None,
    };
    let Some(id) = id else {
        warn!(link = name, "VLAN without IFLA_VLAN_ID; kept as kind other");
        return other();
    };
    let Some(vid) = Vid::new(id) else {
        warn!(link = name, vid = id, "VLAN id outside 1..=4094; kept as kind other");
        return other();
    };
    if let Some(nsid) = a.netnsid {
        warn!(link = name, nsid, "VLAN whose lower device is in another network namespace; kept as kind other");
        return other();
    }
    let Some(lower) = a.lower.and_then(Ifindex::new) else {
        warn!(link = name, "VLAN without a lower device (IFLA_LINK); kept as kind other");
        return other();
    };
    LinkKind::Vlan { vid, lower }
}

pub(super) fn oper_state(s: State) -> OperState {
    match s {
        State::Unknown => OperState::Unknown,
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        _ => OperState::Unknown,
    }
}

/// An address of RTM_NEWADDR/RTM_DELADDR: IFA_LOCAL (the address itself on
/// point-to-point links, where IFA_ADDRESS is the peer), else IFA_ADDRESS,
/// with `ifa_prefixlen`.
pub fn parse_addr(msg: &AddressMessage) -> Option<(Ifindex, IpNet)> {
    let ifindex = Ifindex::new(msg.header.index)?;
    let (mut local, mut address): (Option<IpAddr>, Option<IpAddr>) = (None, None);
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    match IpNet::new(ip, msg.header.prefix_len) {
        Ok(net) => Some((ifindex, net)),
        Err(_) => {
            warn!(%ifindex, %ip, prefix = msg.header.prefix_len, "ignoring an address with an invalid prefix length");
            None
        }
    }
}

/// `Some(v6)` for a route of the main table with destination prefix length
/// 0 (any type), `None` for any other route.
pub(super) fn main_default_family(msg: &RouteMessage) -> Option<bool> {
    let v6 = match msg.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    (msg.header.destination_prefix_length == 0 && route_table(msg) == RT_TABLE_MAIN).then_some(v6)
}

/// RTA_TABLE, else `rtm_table` (which holds only tables below 256).
pub(super) fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

/// `(v6, destination)` of a local-table route of type local, broadcast or
/// anycast that is not dead; `None` for any other route. A route without
/// RTA_DST covers the whole family.
pub fn local_route(msg: &RouteMessage) -> Option<(bool, IpNet)> {
    let v6 = match msg.header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    if route_table(msg) != RT_TABLE_LOCAL
        || !matches!(msg.header.kind, RouteType::Local | RouteType::Broadcast | RouteType::Anycast)
        || msg.header.flags.contains(RouteFlags::Dead)
    {
        return None;
    }
    let dst = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    });
    let dst: IpAddr = match dst {
        None if v6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        None => std::net::Ipv4Addr::UNSPECIFIED.into(),
        Some(RouteAddress::Inet(ip)) if !v6 => (*ip).into(),
        Some(RouteAddress::Inet6(ip)) if v6 => (*ip).into(),
        Some(other) => {
            warn!(?other, v6, "ignoring a local route whose destination is of another family");
            return None;
        }
    };
    match IpNet::new(dst, msg.header.destination_prefix_length) {
        Ok(net) => Some((v6, net.trunc())),
        Err(_) => {
            warn!(%dst, prefix = msg.header.destination_prefix_length, "ignoring a local route with an invalid prefix length");
            None
        }
    }
}

/// RTA_OIF of a route.
pub(super) fn route_oif(msg: &RouteMessage) -> Option<Ifindex> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Ifindex::new(*i),
        _ => None,
    })
}

/// The output interfaces of a unicast route: RTA_OIF and the RTA_MULTIPATH
/// nexthops, without dead ones.
pub(super) fn default_route_oifs(msg: &RouteMessage) -> BTreeSet<Ifindex> {
    let mut out = BTreeSet::new();
    if msg.header.kind != RouteType::Unicast {
        return out;
    }
    for a in &msg.attributes {
        match a {
            RouteAttribute::Oif(i) if !msg.header.flags.contains(RouteFlags::Dead) => out.extend(Ifindex::new(*i)),
            RouteAttribute::MultiPath(hops) => out.extend(
                hops.iter()
                    .filter(|h| !h.flags.contains(RouteNextHopFlags::Dead))
                    .filter_map(|h| Ifindex::new(h.interface_index)),
            ),
            _ => {}
        }
    }
    out
}

/// The device of a tc message; `None` for shared blocks
/// (`TCM_IFINDEX_MAGIC_BLOCK`) and index 0.
pub(super) fn tc_ifindex(msg: &TcMessage) -> Option<Ifindex> {
    u32::try_from(msg.header.index).ok().and_then(Ifindex::new)
}
