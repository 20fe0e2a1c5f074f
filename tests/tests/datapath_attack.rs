//! The datapath tried as an attacker would, on crafted packets
//! (BPF_PROG_TEST_RUN, the real verifier and maps): flows that a policy
//! change must reach, VLAN tag stacks, conntrack that outside traffic cannot
//! establish, tear down or flood away, addresses posing as another family,
//! and odd but valid packets that must not be mistaken for attacks.

mod common;

use std::time::Duration;

use common::web::*;
use common::*;
use hostfwd::datapath::{EventReader, MapSize};
use hostfwd::policy::model::{Action, CidrSet, IcmpFamily, L4Proto, PortMatch, Rule};
use hostfwd_bpf::layout as l;
use hostfwd_bpf::DropReason;
use hostfwd_tests::packet::{Frame, Nd, TcpFlags};
use libbpf_rs::MapCore;

/// The reported bug: a session to a denied port opened in audit mode kept
/// going after audit was switched off, because the host's replies (egress,
/// not enforced) re-admitted it.
#[test]
fn audit_then_enforce_cuts_denied_sessions() {
    let mut dp = setup("audit2enf");
    web_policy(&mut dp);
    dp.audit(true);
    for v6 in [false, true] {
        let (h, r, _) = addrs(v6);
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 5000, 81, TcpFlags::SYN).build()), PASS, "audited v6={v6}");
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, r, 81, 5000, TcpFlags::SYN_ACK).build()), PASS);
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 5000, 81, TcpFlags::ACK).build()), PASS);
        // Traffic both ways never promotes an audit-only flow.
        let e = dp.conntrack().unwrap().into_iter().find(|e| e.sport == 5000 && e.src == r).expect("tracked");
        assert_ne!(e.flags & l::CT_DENIED, 0, "v6={v6}");
    }
    dp.audit(false);
    for v6 in [false, true] {
        let (h, r, _) = addrs(v6);
        // The host's reply is judged as part of the inbound flow, not as a
        // flow of its own through the open egress.
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, r, 81, 5000, TcpFlags::ACK).build()), DROP, "reply v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 5000, 81, TcpFlags::ACK).build()), DROP, "data v6={v6}");
    }
    let enforced: u64 = dp.counters().unwrap().iter().filter(|c| !c.audit && c.reason == Some(DropReason::PolicyDenied)).map(|c| c.packets).sum();
    assert_eq!(enforced, 4);
}

/// After a policy swap every tracked flow is judged again on its next
/// packet: what the new policy denies is cut (with the deciding rule),
/// what it allows goes on, failsafe flows are never cut, and the replies of
/// flows the host started pass while egress is not enforced.
#[test]
fn policy_changes_reach_tracked_flows() {
    let mut dp = setup("rejudge");
    dp.set_failsafe(&[(IN, 6, 22)]).unwrap();
    let (h, r, far) = addrs(false);
    let open = |dp: &TestDp, sport: u16, dport: u16| {
        assert_eq!(run(dp, IN, &Frame::tcp(r, h, sport, dport, TcpFlags::SYN).build()), PASS);
        assert_eq!(run(dp, OUT, &Frame::tcp(h, r, dport, sport, TcpFlags::SYN_ACK).build()), PASS);
        assert_eq!(run(dp, IN, &Frame::tcp(r, h, sport, dport, TcpFlags::ACK).build()), PASS);
    };
    open(&dp, 6000, 80);
    open(&dp, 6001, 8080);
    open(&dp, 6002, 22);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 45000, 443, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 45000, TcpFlags::SYN_ACK).build()), PASS);

    // TCP/80 allowed, TCP/8080 explicitly denied, everything else default deny.
    dp.apply(vec![
        allow_tcp(10, IN, &["10.77.0.0/24"], 80),
        Rule::new(12, IN, Action::Deny, vec![CidrSet::cidr(net("10.77.0.0/24"))], vec![PortMatch::l4(L4Proto::Tcp, 8080, None)]),
        Rule::new(13, IN, Action::Deny, vec![CidrSet::cidr(net("0.0.0.0/0"))], vec![PortMatch::l4(L4Proto::Tcp, 22, None)]),
    ]);
    let reader = EventReader::open(dp.paths()).unwrap();
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 6000, 80, TcpFlags::ACK).build()), PASS, "allowed flow goes on");
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, r, 80, 6000, TcpFlags::ACK).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 6001, 8080, TcpFlags::ACK).build()), DROP, "denied flow cut");
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, r, 8080, 6001, TcpFlags::ACK).build()), DROP, "and its replies");
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 6002, 22, TcpFlags::ACK).build()), PASS, "failsafe never cut");
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 45000, TcpFlags::ACK).build()), PASS, "host's flow, egress open");
    let ev = reader.poll(Duration::from_secs(1)).unwrap();
    let cut: Vec<_> = ev.iter().filter(|e| e.sport == 6001 || e.dport == 6001).map(|e| (e.reason.as_str(), e.rule_id)).collect();
    assert_eq!(cut, vec![("policy-deny-rule", 12), ("policy-deny-rule", 12)]);
    let ct = dp.conntrack().unwrap();
    let flags = |sport: u16| ct.iter().find(|e| e.sport == sport && e.src == r).expect("entry").flags;
    assert_eq!(flags(6000) & l::CT_DENIED, 0);
    assert_ne!(flags(6001) & l::CT_DENIED, 0);

    // Egress enforced now, without the host's flow: its replies are cut too.
    dp.apply(vec![allow_tcp(10, IN, &["10.77.0.0/24"], 80), allow_tcp(20, OUT, &["10.77.0.0/24"], 80)]);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 45000, TcpFlags::ACK).build()), DROP, "host's flow, egress closed");
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 6000, 80, TcpFlags::ACK).build()), PASS);
    // Removing a failsafe port reaches its flows as well.
    dp.set_failsafe(&[]).unwrap();
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 6002, 22, TcpFlags::ACK).build()), DROP, "failsafe removed");
}

/// The VID that decides is the one the kernel delivers through: priority
/// tags (VID 0) are skipped whatever their TPID, and a stack deeper than
/// the program reads is malformed.
#[test]
fn vlan_tag_stacks() {
    let mut dp = setup("vlanstack");
    web_policy(&mut dp);
    dp.allow_vlan(IF, 1000).unwrap();
    let (h, r, _) = addrs(false);
    let syn = || Frame::tcp(r, h, 1, 80, TcpFlags::SYN);
    let (q, ad) = (0x8100, 0x88a8);
    // VID 3000 is not allowed, however it hides behind priority tags.
    for (what, f) in [
        ("3000", syn().tag(q, 3000)),
        ("0 3000", syn().tag(q, 0).tag(q, 3000)),
        ("0 0 3000", syn().tag(q, 0).tag(q, 0).tag(q, 3000)),
        ("ad0 q3000", syn().tag(ad, 0).tag(q, 3000)),
        ("ad0 ad0 0 3000", syn().tag(ad, 0).tag(ad, 0).tag(q, 0).tag(q, 3000)),
        ("ad3000 q1000", syn().tag(ad, 3000).tag(q, 1000)),
        ("pcp7 0 3000", syn().tag(q, 7 << 13).tag(q, 0).tag(q, 3000)),
    ] {
        assert_eq!(run(&dp, IN, &f.build()), DROP, "{what}");
    }
    assert_eq!(dp.drops(DropReason::VlanFiltered), 7);
    // The allowed VID passes to its subinterface, also behind priority tags
    // and with inner tags of its own (judged there).
    for (what, f) in [
        ("0 0 1000", syn().tag(q, 0).tag(q, 0).tag(q, 1000)),
        ("ad1000 q3000", syn().tag(ad, 1000).tag(q, 3000)),
        ("ad0 1000 3000 5", syn().tag(ad, 0).tag(q, 1000).tag(q, 3000).tag(q, 5)),
    ] {
        assert_eq!(run(&dp, IN, &f.build()), PASS, "{what}");
    }
    // Priority tags only: the device's own untagged traffic, judged here.
    let prio4 = |f: Frame| f.tag(q, 0).tag(ad, 0).tag(q, 0).tag(q, 0);
    assert_eq!(run(&dp, IN, &prio4(syn()).build()), PASS, "four priority tags, allowed port");
    assert_eq!(run(&dp, IN, &prio4(Frame::tcp(r, h, 1, 81, TcpFlags::SYN)).build()), DROP, "denied port");
    assert_eq!(dp.drops(DropReason::PolicyDenied), 1);
    // Deeper than the program reads: malformed, even with an allowed VID below.
    assert_eq!(run(&dp, IN, &prio4(syn()).tag(q, 0).build()), DROP, "five priority tags");
    assert_eq!(run(&dp, IN, &prio4(syn()).tag(q, 1000).build()), DROP, "allowed VID too deep");
    assert_eq!(run(&dp, OUT, &prio4(syn()).tag(q, 3000).build()), DROP, "egress too");
    assert_eq!(dp.drops(DropReason::Malformed), 3);
}

/// Segments from outside establish nothing by themselves.
#[test]
fn bare_segments_never_establish() {
    let dp = setup("bare");
    dp.set_failsafe(&[(IN, 6, 22)]).unwrap();
    let (h, _, far) = addrs(false);
    for (sport, flags) in [(100, TcpFlags::ACK), (101, TcpFlags::FIN | TcpFlags::ACK), (102, TcpFlags::PSH | TcpFlags::ACK)] {
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, sport, 22, flags).build()), PASS);
    }
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 103, 22, TcpFlags::RST).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 104, 22, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 22, 104, TcpFlags::SYN_ACK).build()), PASS);
    let ct = dp.conntrack().unwrap();
    let state = |sport: u16| ct.iter().find(|e| e.sport == sport).map(|e| (e.state, e.flags & l::CT_SEEN_REPLY));
    for sport in [100, 101, 102] {
        assert_eq!(state(sport), Some((l::CT_PICKUP, 0)), "picked up, unreplied: {sport}");
    }
    assert_eq!(state(103), None, "an RST starts nothing");
    assert_eq!(state(104), Some((l::CT_SYN_RECV, l::CT_SEEN_REPLY)), "half open until the final ACK");
    assert!(ct.iter().all(|e| !e.host_started), "all from outside: {ct:?}");
    // The handshake completes; a picked-up flow is answered.
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 104, 22, TcpFlags::ACK).seq(1001, 2001).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 22, 100, TcpFlags::ACK).build()), PASS);
    let ct = dp.conntrack().unwrap();
    let state = |sport: u16| ct.iter().find(|e| e.sport == sport).map(|e| e.state);
    assert_eq!(state(104), Some(l::CT_ESTABLISHED));
    assert_eq!(state(100), Some(l::CT_ESTABLISHED));
}

/// An off-path sender knows neither sequence number: its RST closes nothing
/// and the session keeps working; the real one (exact sequence) closes.
#[test]
fn rst_and_fin_must_fit_the_tracked_window() {
    let mut dp = setup("rst");
    web_policy(&mut dp);
    let (h, _, far) = addrs(false);
    // A session the host started: its SYN at 1000, the far side's at 5000.
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 42000, 443, TcpFlags::SYN).seq(1000, 0).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 42000, TcpFlags::SYN_ACK).seq(5000, 1001).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 42000, 443, TcpFlags::ACK).seq(1001, 5001).build()), PASS);
    let state = |dp: &TestDp| dp.conntrack().unwrap().into_iter().find(|e| e.sport == 42000).map(|e| e.state);
    for seq in [0, 5000, 5002, 0x8000_0000, 5001 + (1 << 20)] {
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 42000, TcpFlags::RST).seq(seq, 0).build()), PASS);
        assert_eq!(state(&dp), Some(l::CT_ESTABLISHED), "RST at {seq} closed the flow");
    }
    // A FIN far outside the window does not count either.
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 42000, TcpFlags::FIN | TcpFlags::ACK).seq(0x9000_0000, 1001).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 42000, 443, TcpFlags::FIN | TcpFlags::ACK).seq(1001, 5001).build()), PASS);
    assert_eq!(state(&dp), Some(l::CT_ESTABLISHED), "a blind FIN half-closed the flow");
    // The session still receives under ingress default deny.
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 42000, TcpFlags::PSH | TcpFlags::ACK).seq(5001, 1002).payload(vec![7; 100]).build()), PASS);
    // The real RST: exactly the next sequence number (5001 + 100 bytes).
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 42000, TcpFlags::RST).seq(5101, 0).build()), PASS);
    assert_eq!(state(&dp), Some(l::CT_CLOSING));
}

/// ICMP echo is a flow keyed by its identifier; no other ICMP message is.
#[test]
fn only_icmp_echo_is_a_flow() {
    let mut dp = setup("icmpflow");
    let (h, r, _) = addrs(false);
    // Echo and timestamp (13) allowed from the remote; nothing else.
    dp.apply(vec![Rule::new(1, IN, Action::Allow, vec![CidrSet::cidr(net("10.77.0.0/24"))], vec![
        PortMatch::Icmp { family: IcmpFamily::V4, icmp_type: 8 },
        PortMatch::Icmp { family: IcmpFamily::V4, icmp_type: 13 },
    ])]);
    let icmp = |ty: u8| Frame::raw_ip(r, h, 1).payload(vec![ty, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(run(&dp, IN, &icmp(13).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::echo_request(r, h, 0, 1).build()), PASS);
    assert!(dp.conntrack().unwrap().iter().all(|e| e.sport == 0 && e.dport == 0 && e.proto == 1), "only the echo flow");
    assert_eq!(dp.conntrack().unwrap().len(), 1);
    // The echo flow with identifier 0 vouches for nothing but itself.
    for ty in [5, 9, 10, 17, 42] {
        assert_eq!(run(&dp, IN, &icmp(ty).build()), DROP, "type {ty}");
    }
    assert_eq!(run(&dp, OUT, &Frame::echo_reply(h, r, 0, 1).build()), PASS, "echo reply");
}

/// An IPv6 packet whose remote address reads as IPv4 (mapped or
/// compatible) could pose as an IPv4 peer in the policy: dropped by name.
#[test]
fn ipv6_sources_posing_as_ipv4_are_dropped() {
    let mut dp = setup("mapped");
    // Everything from 10.77.0.0/24 is allowed: the bait.
    dp.apply(vec![allow_tcp(1, IN, &["10.77.0.0/24"], 0), allow_tcp(2, IN, &["fd77::/64"], 80)]);
    let h6 = ip("fd77::1");
    for src in ["::ffff:10.77.0.2", "::10.77.0.2"] {
        assert_eq!(run(&dp, IN, &Frame::tcp(ip(src), h6, 1, 80, TcpFlags::SYN).build()), DROP, "{src}");
        assert_eq!(run(&dp, OUT, &Frame::tcp(h6, ip(src), 80, 1, TcpFlags::SYN).build()), DROP, "to {src}");
    }
    assert_eq!(dp.drops(DropReason::MappedAddress), 4);
    // The loopback and unspecified addresses are not IPv4-compatible ones.
    assert_eq!(run(&dp, IN, &Frame::tcp(ip("fd77::2"), h6, 1, 80, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(ip("::1"), h6, 1, 81, TcpFlags::SYN).build()), DROP);
    assert_eq!(dp.drops(DropReason::PolicyDenied), 1);
    assert_eq!(dp.drops(DropReason::MappedAddress), 4);
}

/// Neighbour discovery and MLD pass unjudged only as the RFCs send them;
/// the same types from beyond the link are ordinary ICMPv6.
#[test]
fn neighbour_discovery_needs_its_hop_limit() {
    let mut dp = setup("ndhop");
    dp.apply(vec![allow_tcp(1, IN, &["fd77::/64"], 80)]);
    let h: std::net::Ipv6Addr = "fd77::1".parse().unwrap();
    let r: std::net::Ipv6Addr = "fd77::2".parse().unwrap();
    let na = || Frame::nd(r, h, Nd::NeighborAdvert { target: r });
    assert_eq!(run(&dp, IN, &na().build()), PASS, "hop limit 255");
    assert_eq!(run(&dp, IN, &na().ttl(254).build()), DROP, "routed ND");
    assert_eq!(run(&dp, IN, &Frame::nd(r, h, Nd::RouterAdvert).ttl(64).build()), DROP, "routed RA");
    let mld = |src: &str, hop: u8| Frame::raw_ip(ip(src), ip("ff02::16"), 58).payload(vec![143, 0, 0, 0, 0, 0, 0, 0]).ttl(hop);
    assert_eq!(run(&dp, IN, &mld("fe80::2", 1).build()), PASS, "MLD report");
    assert_eq!(run(&dp, IN, &mld("::", 1).build()), PASS, "MLD report before DAD");
    assert_eq!(run(&dp, IN, &mld("fe80::2", 2).build()), DROP, "MLD hop limit 2");
    assert_eq!(run(&dp, IN, &mld("fd77::2", 1).build()), DROP, "MLD from a global address");
    assert_eq!(dp.drops(DropReason::PolicyDenied), 4);
}

/// Valid packets that look odd: an IPv4 GSO (BIG TCP) packet has total
/// length 0; judged like any other, not malformed.
#[test]
fn ipv4_total_length_zero_is_big_tcp() {
    let mut dp = setup("bigtcp");
    web_policy(&mut dp);
    let (h, r, _) = addrs(false);
    let zero_len = |dport: u16| {
        let mut f = Frame::tcp(r, h, 1, dport, TcpFlags::SYN).payload(vec![0; 64]).build();
        f[16] = 0; // tot_len, after 14 bytes of Ethernet
        f[17] = 0;
        f
    };
    assert_eq!(run(&dp, IN, &zero_len(80)), PASS);
    assert_eq!(run(&dp, IN, &zero_len(81)), DROP);
    assert_eq!((dp.drops(DropReason::PolicyDenied), dp.drops(DropReason::Malformed)), (1, 0));
}

/// A first fragment too short for its ports cannot be judged (RFC 1858's
/// tiny fragment): dropped as `fragment`.
#[test]
fn tiny_first_fragments_are_dropped() {
    let mut dp = setup("tinyfrag");
    web_policy(&mut dp);
    let (h, r, _) = addrs(false);
    let mut f = Frame::udp(r, h, 1000, 80).build();
    f.truncate(14 + 20 + 2); // two bytes of the UDP header
    f[16..18].copy_from_slice(&22u16.to_be_bytes()); // tot_len
    f[20] = 0x20; // MF, offset 0
    assert_eq!(run(&dp, IN, &f), DROP);
    assert_eq!(dp.drops(DropReason::Fragment), 1);
}

/// Flows the host started live apart from those started outside: with a
/// small inbound table (as `maps.conntrack_in_v4` would make it), a flood
/// of twice its size in SYNs and bare ACKs from many sources to the
/// failsafe port evicts none of them, and leaves no established entry.
#[test]
fn inbound_floods_cannot_evict_the_hosts_flows() {
    let small = MapSize { map: "hf_ct4", key: "maps.conntrack_in_v4", entries: 4096 };
    let mut dp = setup_sized("flood", vec![small]);
    web_policy(&mut dp);
    dp.set_failsafe(&[(IN, 6, 22)]).unwrap();
    let (h, _, far) = addrs(false);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 43000, 443, TcpFlags::SYN).seq(1000, 0).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 43000, TcpFlags::SYN_ACK).seq(9000, 1001).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 43000, 443, TcpFlags::ACK).seq(1001, 9001).build()), PASS);

    let ct4 = libbpf_rs::MapHandle::from_pinned_path(dp.paths().map("hf_ct4")).expect("hf_ct4 pin");
    let capacity = ct4.max_entries();
    assert_eq!(capacity, 4096);
    let mut template = Frame::tcp(ip("10.0.0.1"), h, 1, 22, TcpFlags::SYN).build();
    for i in 0..2 * capacity {
        // Source 11.x.y.z and port vary; every other one a bare ACK.
        template[26..30].copy_from_slice(&(0x0b00_0000 | i).to_be_bytes());
        template[34..36].copy_from_slice(&(1024 + (i % 60000) as u16).to_be_bytes());
        template[47] = if i % 2 == 0 { 0x02 } else { 0x10 };
        assert_eq!(run(&dp, IN, &template), PASS, "failsafe port, packet {i}");
    }
    // The host's session idled through the flood; now it only receives.
    for seq in [9001u32, 9101, 9201] {
        let data = Frame::tcp(far, h, 443, 43000, TcpFlags::PSH | TcpFlags::ACK).seq(seq, 1001).payload(vec![1; 100]);
        assert_eq!(run(&dp, IN, &data.build()), PASS, "data at {seq}");
    }
    let ct = dp.conntrack().unwrap();
    assert!(ct.len() as u32 <= capacity + 1 + ct.iter().filter(|e| e.host_started).count() as u32);
    let established: Vec<_> = ct.iter().filter(|e| e.state == l::CT_ESTABLISHED).collect();
    assert_eq!(established.len(), 1, "only the host's session: {:?}", &established[..established.len().min(3)]);
    assert!(established[0].host_started && established[0].sport == 43000);
}
