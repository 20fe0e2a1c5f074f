//! Message interpretation and socket handling against crafted messages.

use std::io;
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
use rtnetlink::packet_core::NetlinkMessage;

use netlink_packet_route::route::RouteNextHop;

use super::*;
use crate::links::{Change, Ifindex, LinkKind, OperState, Vid};


fn ifx(i: u32) -> Ifindex {
    Ifindex::new(i).unwrap()
}

fn link_msg(index: u32, name: &str, attrs: Vec<LinkAttribute>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.extend(attrs);
    m
}

fn info(kind: InfoKind, data: Option<InfoData>) -> LinkAttribute {
    let mut v = vec![LinkInfo::Kind(kind)];
    v.extend(data.map(LinkInfo::Data));
    LinkAttribute::LinkInfo(v)
}

fn kind_of(attrs: Vec<LinkAttribute>) -> LinkKind {
    parse_link(&link_msg(7, "x", attrs)).unwrap().kind
}

#[test]
fn vlan_takes_vid_and_lower() {
    let l = parse_link(&link_msg(
        7,
        "eth0.1000",
        vec![info(InfoKind::Vlan, Some(InfoData::Vlan(vec![InfoVlan::Id(1000)]))), LinkAttribute::Link(5)],
    ))
    .unwrap();
    assert_eq!(l.kind, LinkKind::Vlan { vid: Vid::new(1000).unwrap(), lower: ifx(5) });
    assert_eq!(l.name, "eth0.1000");
    assert!(l.up);
}

#[test]
fn broken_vlans_are_other() {
    let other = LinkKind::Other { name: "vlan".into() };
    let vlan = |id: u16| info(InfoKind::Vlan, Some(InfoData::Vlan(vec![InfoVlan::Id(id)])));
    assert_eq!(kind_of(vec![vlan(0), LinkAttribute::Link(5)]), other, "VID 0");
    assert_eq!(kind_of(vec![vlan(4095), LinkAttribute::Link(5)]), other, "VID 4095");
    assert_eq!(kind_of(vec![vlan(10)]), other, "no lower");
    assert_eq!(kind_of(vec![vlan(10), LinkAttribute::Link(0)]), other, "lower 0");
    assert_eq!(kind_of(vec![info(InfoKind::Vlan, None), LinkAttribute::Link(5)]), other, "no data");
    assert_eq!(
        kind_of(vec![vlan(10), LinkAttribute::Link(5), LinkAttribute::LinkNetNsId(1)]),
        other,
        "lower in another namespace"
    );
}

#[test]
fn kinds_by_info_kind() {
    assert_eq!(kind_of(vec![]), LinkKind::Physical);
    assert_eq!(kind_of(vec![info(InfoKind::Bond, None)]), LinkKind::Bond);
    assert_eq!(kind_of(vec![info(InfoKind::Bridge, None)]), LinkKind::Bridge);
    assert_eq!(kind_of(vec![info(InfoKind::MacVlan, None)]), LinkKind::Macvlan);
    assert_eq!(kind_of(vec![info(InfoKind::MacVtap, None)]), LinkKind::Macvlan);
    for (k, n) in [
        (InfoKind::Vxlan, "vxlan"),
        (InfoKind::Wireguard, "wireguard"),
        (InfoKind::GreTun, "gre"),
        (InfoKind::GreTap, "gretap"),
        (InfoKind::GreTun6, "ip6gre"),
        (InfoKind::Ip6Tnl, "ip6tnl"),
        (InfoKind::SitTun, "sit"),
        (InfoKind::IpIp, "ipip"),
        (InfoKind::Geneve, "geneve"),
    ] {
        assert_eq!(kind_of(vec![info(k, None)]), LinkKind::Tunnel { name: n.into() });
    }
    assert_eq!(kind_of(vec![info(InfoKind::Dummy, None)]), LinkKind::Other { name: "dummy".into() });
    assert_eq!(kind_of(vec![info(InfoKind::IpVlan, None)]), LinkKind::Other { name: "ipvlan".into() });
    assert_eq!(
        kind_of(vec![info(InfoKind::Other("ovpn".into()), None)]),
        LinkKind::Other { name: "ovpn".into() }
    );
    // Loopback has no kind, only IFF_LOOPBACK.
    let mut lo = link_msg(1, "lo", vec![]);
    lo.header.flags |= LinkFlags::Loopback;
    assert_eq!(parse_link(&lo).unwrap().kind, LinkKind::Loopback);
}

#[test]
fn veth_peer_namespace_controller_and_state() {
    let same = parse_link(&link_msg(8, "v0", vec![info(InfoKind::Veth, None), LinkAttribute::Link(9)])).unwrap();
    assert_eq!(same.kind, LinkKind::Veth);
    assert!(!same.peer_in_other_netns);
    let other = parse_link(&link_msg(
        8,
        "v0",
        vec![
            info(InfoKind::Veth, None),
            LinkAttribute::Link(2),
            LinkAttribute::LinkNetNsId(0),
            LinkAttribute::Controller(3),
            LinkAttribute::OperState(State::LowerLayerDown),
        ],
    ))
    .unwrap();
    assert!(other.peer_in_other_netns);
    assert_eq!(other.controller, Some(ifx(3)));
    assert_eq!(other.oper, OperState::LowerLayerDown);
    // Only veths have a peer: a netnsid elsewhere means nothing here.
    let mv = parse_link(&link_msg(8, "mv0", vec![info(InfoKind::MacVlan, None), LinkAttribute::LinkNetNsId(0)]))
        .unwrap();
    assert!(!mv.peer_in_other_netns);
    let mut down = link_msg(8, "v0", vec![LinkAttribute::OperState(State::Other(42))]);
    down.header.flags = LinkFlags::Broadcast;
    let down = parse_link(&down).unwrap();
    assert!(!down.up);
    assert_eq!(down.oper, OperState::Unknown);
    assert_eq!(down.controller, None);
}

#[test]
fn links_without_index_or_name_are_ignored() {
    assert!(parse_link(&link_msg(0, "x", vec![])).is_none());
    let mut nameless = LinkMessage::default();
    nameless.header.index = 4;
    assert!(parse_link(&nameless).is_none());
}

#[test]
fn bridge_port_messages_are_not_links() {
    let mut m = link_msg(8, "v0", vec![LinkAttribute::Controller(3)]);
    m.header.interface_family = AddressFamily::Bridge;
    assert_eq!(interpret(&RouteNetlinkMessage::NewLink(m.clone())), Note::Ignored);
    assert_eq!(interpret(&RouteNetlinkMessage::DelLink(m.clone())), Note::Ignored);
    m.header.interface_family = AddressFamily::Unspec;
    assert_eq!(interpret(&RouteNetlinkMessage::DelLink(m)), Note::Change(Change::LinkGone(ifx(8))));
}

fn addr_msg(index: u32, prefix: u8, attrs: Vec<AddressAttribute>) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = prefix;
    m.attributes = attrs;
    m
}

#[test]
fn addresses_prefer_local_and_keep_the_prefix() {
    let local: IpAddr = "10.0.0.1".parse().unwrap();
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    let m = addr_msg(3, 24, vec![AddressAttribute::Address(peer), AddressAttribute::Local(local)]);
    assert_eq!(parse_addr(&m), Some((ifx(3), "10.0.0.1/24".parse().unwrap())));
    let v6 = addr_msg(3, 64, vec![AddressAttribute::Address("2001:db8::1".parse().unwrap())]);
    assert_eq!(
        interpret(&RouteNetlinkMessage::DelAddress(v6)),
        Note::Change(Change::AddrRemoved(ifx(3), "2001:db8::1/64".parse().unwrap()))
    );
    assert_eq!(parse_addr(&addr_msg(3, 33, vec![AddressAttribute::Local(local)])), None, "bad prefix");
    assert_eq!(parse_addr(&addr_msg(0, 24, vec![AddressAttribute::Local(local)])), None, "no ifindex");
    assert_eq!(parse_addr(&addr_msg(3, 24, vec![])), None, "no address");
}

fn route(v6: bool, dst_len: u8, table: u8, attrs: Vec<RouteAttribute>) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    m.header.destination_prefix_length = dst_len;
    m.header.table = table;
    m.header.kind = RouteType::Unicast;
    m.attributes = attrs;
    m
}

fn hop(ifindex: u32, flags: RouteNextHopFlags) -> RouteNextHop {
    let mut h = RouteNextHop::default();
    h.interface_index = ifindex;
    h.flags = flags;
    h
}

#[test]
fn default_routes_of_the_main_table() {
    let r = route(false, 0, 254, vec![RouteAttribute::Oif(4)]);
    assert_eq!(main_default_family(&r), Some(false));
    assert_eq!(default_route_oifs(&r), [ifx(4)].into());
    assert_eq!(interpret(&RouteNetlinkMessage::DelRoute(r)), Note::Routes { v6: false });
    // Not default, other table, table by attribute.
    assert_eq!(main_default_family(&route(false, 24, 254, vec![])), None);
    assert_eq!(main_default_family(&route(true, 0, 100, vec![])), None);
    assert_eq!(main_default_family(&route(true, 0, 252, vec![RouteAttribute::Table(1000)])), None);
    assert_eq!(main_default_family(&route(true, 0, 0, vec![RouteAttribute::Table(254)])), Some(true));
    // Multipath without dead nexthops.
    let mp = route(
        true,
        0,
        254,
        vec![RouteAttribute::MultiPath(vec![
            hop(4, RouteNextHopFlags::empty()),
            hop(6, RouteNextHopFlags::Dead | RouteNextHopFlags::Linkdown),
            hop(7, RouteNextHopFlags::Linkdown),
        ])],
    );
    assert_eq!(default_route_oifs(&mp), [ifx(4), ifx(7)].into());
    // Dead single path, unreachable default.
    let mut dead = route(false, 0, 254, vec![RouteAttribute::Oif(4)]);
    dead.header.flags = RouteFlags::Dead;
    assert!(default_route_oifs(&dead).is_empty());
    let mut unreachable = route(false, 0, 254, vec![RouteAttribute::Oif(1)]);
    unreachable.header.kind = RouteType::Unreachable;
    assert!(default_route_oifs(&unreachable).is_empty());
}

fn local(v6: bool, kind: RouteType, dst: Option<&str>, len: u8, attrs: Vec<RouteAttribute>) -> RouteMessage {
    let mut m = route(v6, len, 255, attrs);
    m.header.kind = kind;
    if let Some(d) = dst {
        m.attributes.push(RouteAttribute::Destination(match d.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
    }
    m
}

#[test]
fn local_routes_of_the_local_table() {
    let n = |s: &str| -> IpNet { s.parse().unwrap() };
    // What `ip route show table local` lists for an address, its
    // directed broadcast, a local route and IPv6 anycast.
    let addr = local(false, RouteType::Local, Some("10.77.0.1"), 32, vec![RouteAttribute::Oif(3)]);
    assert_eq!(local_route(&addr), Some((false, n("10.77.0.1/32"))));
    assert_eq!(route_oif(&addr), Some(ifx(3)));
    assert_eq!(interpret(&RouteNetlinkMessage::NewRoute(addr)), Note::Routes { v6: false });
    let brd = local(false, RouteType::Broadcast, Some("10.77.0.255"), 32, vec![]);
    assert_eq!(local_route(&brd), Some((false, n("10.77.0.255/32"))));
    let net = local(false, RouteType::Local, Some("10.9.0.0"), 24, vec![]);
    assert_eq!(local_route(&net), Some((false, n("10.9.0.0/24"))));
    let any6 = local(true, RouteType::Anycast, Some("fd77::"), 128, vec![]);
    assert_eq!(local_route(&any6), Some((true, n("fd77::/128"))));
    assert_eq!(interpret(&RouteNetlinkMessage::DelRoute(any6)), Note::Routes { v6: true });
    // Host bits are cleared; no RTA_DST is the whole family.
    assert_eq!(local_route(&local(false, RouteType::Local, Some("10.9.0.7"), 24, vec![])), Some((false, n("10.9.0.0/24"))));
    assert_eq!(local_route(&local(true, RouteType::Local, None, 0, vec![])), Some((true, n("::/0"))));
    // The table by attribute (header 0 or RT_TABLE_COMPAT).
    let mut by_attr = local(false, RouteType::Local, Some("10.9.0.0"), 24, vec![RouteAttribute::Table(255)]);
    by_attr.header.table = 252;
    assert_eq!(local_route(&by_attr), Some((false, n("10.9.0.0/24"))));
    // Not local: other tables, other types, dead routes, bad lengths.
    let main = {
        let mut m = local(false, RouteType::Local, Some("10.9.0.0"), 24, vec![]);
        m.header.table = 254;
        m
    };
    assert_eq!(local_route(&main), None, "main table");
    assert_eq!(interpret(&RouteNetlinkMessage::NewRoute(main)), Note::Ignored);
    let custom = local(false, RouteType::Local, Some("0.0.0.0"), 0, vec![RouteAttribute::Table(100)]);
    assert_eq!(local_route(&custom), None, "a TPROXY-style local route in table 100");
    for kind in [RouteType::Unicast, RouteType::Multicast, RouteType::Unreachable, RouteType::Nat] {
        assert_eq!(local_route(&local(true, kind, Some("ff00::"), 8, vec![])), None, "{kind:?}");
    }
    let mut dead = local(false, RouteType::Local, Some("10.77.0.1"), 32, vec![]);
    dead.header.flags = RouteFlags::Dead;
    assert_eq!(local_route(&dead), None, "dead");
    assert_eq!(local_route(&local(false, RouteType::Local, Some("10.77.0.1"), 33, vec![])), None, "/33");
    assert_eq!(local_route(&local(true, RouteType::Local, Some("10.77.0.1"), 128, vec![])), None, "v4 destination");
}

#[test]
fn tc_messages_name_their_device() {
    let mut m = TcMessage::default();
    m.header.index = 5;
    for msg in [
        RouteNetlinkMessage::NewQueueDiscipline(m.clone()),
        RouteNetlinkMessage::DelQueueDiscipline(m.clone()),
        RouteNetlinkMessage::NewTrafficFilter(m.clone()),
        RouteNetlinkMessage::DelTrafficFilter(m.clone()),
    ] {
        assert_eq!(interpret(&msg), Note::Change(Change::Tc(ifx(5))));
    }
    m.header.index = -1; // TCM_IFINDEX_MAGIC_BLOCK
    assert_eq!(interpret(&RouteNetlinkMessage::NewTrafficFilter(m)), Note::Ignored);
}

#[test]
fn enobufs_is_an_overrun() {
    assert_eq!(classify_recv_error(&io::Error::from_raw_os_error(libc::ENOBUFS)), RecvFailure::Overrun);
    assert_eq!(classify_recv_error(&io::Error::from_raw_os_error(libc::EAGAIN)), RecvFailure::Retry);
    assert_eq!(classify_recv_error(&io::Error::from_raw_os_error(libc::EINTR)), RecvFailure::Retry);
    assert_eq!(classify_recv_error(&io::Error::from_raw_os_error(libc::EBADF)), RecvFailure::Fatal);
}

fn serialized(msg: RouteNetlinkMessage) -> Vec<u8> {
    let mut m = NetlinkMessage::from(msg);
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

#[test]
fn datagrams_with_several_messages_and_garbage() {
    let mut buf = serialized(RouteNetlinkMessage::NewLink(link_msg(3, "eth0", vec![])));
    while buf.len() & 3 != 0 {
        buf.push(0);
    }
    buf.extend(serialized(RouteNetlinkMessage::DelLink(link_msg(3, "eth0", vec![]))));
    let msgs = parse_datagram(&buf);
    assert_eq!(msgs.len(), 2);
    assert!(msgs.iter().all(|m| m.is_ok()));
    // Truncated: the first message decodes, the rest is reported.
    let cut = parse_datagram(&buf[..buf.len() - 3]);
    assert_eq!(cut.len(), 2);
    assert!(cut[0].is_ok() && cut[1].is_err());
    assert!(parse_datagram(&[1, 2, 3]).iter().all(|m| m.is_err()));
    assert!(parse_datagram(&[]).is_empty());
}

/// The daemon may drive the monitor from a spawned task on a
/// multi-thread runtime.
#[allow(dead_code)]
fn futures_are_send(mon: &mut Monitor, nl: &Netlink) {
    fn send<T: Send>(_: T) {}
    send(mon.next());
    send(nl.dump());
    send(Monitor::open());
}

#[test]
fn needs_a_runtime() {
    assert!(matches!(Netlink::connect(), Err(Error::NoRuntime)));
    assert!(matches!(subscribe(DEFAULT_RX_BUFFER), Err(Error::NoRuntime)));
}
