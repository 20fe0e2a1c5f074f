//! The eBPF program itself, on crafted packets: BPF_PROG_TEST_RUN against
//! the real kernel verifier and maps. Each test loads its own datapath under
//! its own bpffs root. The program sees the packet on ifindex 1.

mod common;

use std::time::Duration;

use common::web::*;
use common::*;
use hostfwd::datapath::{EventReader, GlobalSettings};
use hostfwd::policy::model::{Action, CidrSet, L4Proto, PortMatch, Rule};
use hostfwd_bpf::layout as l;
use hostfwd_bpf::DropReason;
use hostfwd_tests::packet::{garbage, truncations, DEFAULT_DST_MAC, DEFAULT_SRC_MAC, Ext6, Frame, IcmpError, Nd, TcpFlags};

#[test]
fn unconfigured_link_passes_everything() {
    let mut dp = setup("unconf");
    web_policy(&mut dp);
    dp.remove_link(IF).unwrap();
    let (h, r, _) = addrs(false);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 4000, 9999, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 4000, 1, TcpFlags::SYN).vlan(7).build()), PASS);
}

#[test]
fn policy_allow_deny_and_default_deny() {
    let mut dp = setup("policy");
    web_policy(&mut dp);
    for v6 in [false, true] {
        let (h, r, far) = addrs(v6);
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 4000, 80, TcpFlags::SYN).build()), PASS, "allowed port v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 4001, 81, TcpFlags::SYN).build()), DROP, "other port v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 4002, 80, TcpFlags::SYN).build()), DROP, "outside CIDR v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::udp(r, h, 4003, 80).build()), DROP, "UDP not allowed v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::echo_request(far, h, 77, 1).build()), PASS, "ping from anywhere v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::raw_ip(r, h, 47).build()), DROP, "GRE default-denied v6={v6}");
        // Egress is not enforced by an ingress-only policy.
        assert_eq!(run(&dp, OUT, &Frame::udp(h, far, 5000, 9999).build()), PASS, "egress open v6={v6}");
    }
    assert_eq!(dp.drops(DropReason::PolicyDenied), 8);
    assert_eq!(dp.drops(DropReason::PolicyDenyRule), 0);
}

#[test]
fn deny_rule_beats_allow_and_names_the_rule() {
    let mut dp = setup("denyrule");
    let (h, r, _) = addrs(false);
    dp.apply(vec![
        Rule::new(1, IN, Action::Allow, vec![CidrSet::cidr(net("10.0.0.0/8"))], vec![]),
        Rule::new(2, IN, Action::Deny, vec![CidrSet::cidr(net("10.77.0.2/32"))], vec![PortMatch::l4(L4Proto::Tcp, 8000, Some(8100))]),
    ]);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 8050, TcpFlags::SYN).build()), DROP);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 8101, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(ip("10.1.1.1"), h, 1, 8050, TcpFlags::SYN).build()), PASS);
    assert_eq!(dp.drops(DropReason::PolicyDenyRule), 1);
    let reader = EventReader::open(dp.paths()).unwrap();
    // One more, now with a reader attached, to check the event fields.
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1234, 8000, TcpFlags::SYN).build()), DROP);
    let ev = reader.poll(Duration::from_secs(1)).unwrap();
    let e = ev.iter().find(|e| e.sport == 1234).unwrap_or_else(|| panic!("no event for the drop: {ev:?}"));
    assert_eq!((e.reason.as_str(), e.rule_id, e.dport, e.proto, e.audit), ("policy-deny-rule", 2, 8000, 6, false));
    assert_eq!((e.src, e.dst, e.ifindex), (r, h, IF));
}

#[test]
fn cidr_except_punches_a_hole() {
    let mut dp = setup("except");
    let (h, _, _) = addrs(false);
    dp.apply(vec![Rule::new(
        5,
        IN,
        Action::Allow,
        vec![CidrSet::new(net("10.0.0.0/8"), vec![net("10.66.0.0/16")])],
        vec![PortMatch::l4(L4Proto::Tcp, 443, None)],
    )]);
    assert_eq!(run(&dp, IN, &Frame::tcp(ip("10.1.2.3"), h, 1, 443, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(ip("10.66.2.3"), h, 1, 443, TcpFlags::SYN).build()), DROP);
}

#[test]
fn egress_policy_is_enforced_on_egress_only() {
    let mut dp = setup("egress");
    for v6 in [false, true] {
        let (h, r, far) = addrs(v6);
        dp.apply(vec![allow_tcp(3, OUT, &["10.77.0.0/24", "fd77::/64"], 443)]);
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, r, 5555, 443, TcpFlags::SYN).build()), PASS, "v6={v6}");
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 5556, 443, TcpFlags::SYN).build()), DROP, "v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 5557, 443, TcpFlags::SYN).build()), PASS, "ingress open v6={v6}");
    }
}

#[test]
fn replies_to_host_initiated_flows_pass_under_default_deny() {
    let mut dp = setup("replies");
    web_policy(&mut dp);
    for v6 in [false, true] {
        let (h, _, far) = addrs(v6);
        // Unsolicited: dropped.
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 40000, TcpFlags::SYN_ACK).build()), DROP, "v6={v6}");
        // The host connects out, then the reply comes in.
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 40001, 443, TcpFlags::SYN).build()), PASS);
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 40001, TcpFlags::SYN_ACK).build()), PASS, "reply v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 443, 40001, TcpFlags::ACK).build()), PASS, "established v6={v6}");
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 40001, 443, TcpFlags::ACK).build()), PASS, "handshake done v6={v6}");
        // UDP (DNS-like) and ping replies too.
        assert_eq!(run(&dp, OUT, &Frame::udp(h, far, 40002, 5353).build()), PASS);
        assert_eq!(run(&dp, IN, &Frame::udp(far, h, 5353, 40002).build()), PASS, "udp reply v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::udp(far, h, 5353, 40003).build()), DROP, "udp other port v6={v6}");
        assert_eq!(run(&dp, OUT, &Frame::echo_request(h, far, 99, 1).build()), PASS);
        assert_eq!(run(&dp, IN, &Frame::echo_reply(far, h, 99, 1).build()), PASS, "echo reply v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::echo_reply(far, h, 98, 1).build()), DROP, "unsolicited echo reply v6={v6}");
    }
    let ct = dp.conntrack().unwrap();
    let (h, _, far) = addrs(false);
    let e = ct.iter().find(|e| e.src == h && e.dst == far && e.dport == 443).expect("conntrack entry");
    assert_eq!((e.state, e.origin, e.host_started), (l::CT_ESTABLISHED, OUT, true));
}

#[test]
fn established_flow_survives_enabling_a_policy_that_allows_it() {
    let mut dp = setup("survive");
    for v6 in [false, true] {
        let (h, r, _) = addrs(v6);
        // No policy yet: an inbound session to port 80 is set up and tracked.
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 3333, 80, TcpFlags::SYN).build()), PASS);
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, r, 80, 3333, TcpFlags::SYN_ACK).build()), PASS);
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 3333, 80, TcpFlags::ACK).build()), PASS);
    }
    web_policy(&mut dp);
    for v6 in [false, true] {
        let (h, r, _) = addrs(v6);
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 3333, 80, TcpFlags::ACK).build()), PASS, "kept v6={v6}");
        assert_eq!(run(&dp, OUT, &Frame::tcp(h, r, 80, 3333, TcpFlags::ACK).build()), PASS, "replies kept v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 3334, 81, TcpFlags::SYN).build()), DROP, "new v6={v6}");
    }
    assert_eq!(dp.drops(DropReason::PolicyDenied), 2);
}

#[test]
fn tcp_close_then_reuse_is_evaluated_again() {
    let mut dp = setup("close");
    dp.set_failsafe(&[(IN, 6, 9000)]).unwrap();
    let (h, _, far) = addrs(false);
    // Failsafe: the session is admitted however the policy reads.
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 3333, 9000, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::tcp(h, far, 9000, 3333, TcpFlags::SYN_ACK).build()), PASS);
    web_policy(&mut dp);
    // The far side's next sequence number is 1001 (its SYN at 1000).
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 3333, 9000, TcpFlags::RST).seq(1001, 0).build()), PASS);
    let e = dp.conntrack().unwrap().into_iter().find(|e| e.sport == 3333).expect("entry");
    assert_eq!(e.state, l::CT_CLOSING);
    // Same tuple, new SYN after the reset: a new connection, judged again
    // (and without the failsafe port, denied).
    dp.set_failsafe(&[]).unwrap();
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 3333, 9000, TcpFlags::SYN).build()), DROP);
}

#[test]
fn failsafe_ports_pass_before_policy() {
    let mut dp = setup("failsafe");
    dp.set_failsafe(&[(IN, 6, 22), (OUT, 17, 53)]).unwrap();
    dp.apply(vec![
        allow_tcp(1, IN, &["10.77.0.0/24"], 80),
        allow_tcp(2, OUT, &["10.77.0.0/24"], 80),
        // Even an explicit deny does not close a failsafe port.
        Rule::new(3, IN, Action::Deny, vec![CidrSet::cidr(net("0.0.0.0/0"))], vec![PortMatch::l4(L4Proto::Tcp, 22, None)]),
    ]);
    for v6 in [false, true] {
        let (h, _, far) = addrs(v6);
        assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 1000, 22, TcpFlags::SYN).build()), PASS, "ssh v6={v6}");
        assert_eq!(run(&dp, OUT, &Frame::udp(h, far, 1000, 53).build()), PASS, "dns v6={v6}");
        assert_eq!(run(&dp, IN, &Frame::udp(far, h, 1000, 22).build()), DROP, "udp/22 is not failsafe v6={v6}");
    }
    assert_eq!(dp.failsafe(), vec![(IN, 6, 22), (OUT, 17, 53)]);
    dp.set_failsafe(&[]).unwrap();
    let (h, _, far) = addrs(false);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 1001, 22, TcpFlags::SYN).build()), DROP, "failsafe removed");
}

#[test]
fn forwarded_traffic_is_not_the_hosts_business() {
    let mut dp = setup("forward");
    web_policy(&mut dp);
    let (_, r, far) = addrs(false);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, r, 1, 9999, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::tcp(far, r, 1, 9999, TcpFlags::SYN).build()), PASS);
    // Broadcast and multicast reach the host: subject to policy.
    assert_eq!(run(&dp, IN, &Frame::udp(r, ip("255.255.255.255"), 1, 9999).build()), DROP);
    assert_eq!(run(&dp, IN, &Frame::udp(r, ip("239.1.1.1"), 1, 9999).build()), DROP);
    assert_eq!(run(&dp, IN, &Frame::udp(ip("fd77::2"), ip("ff02::fb"), 1, 5353).build()), DROP);
}

#[test]
fn neighbour_discovery_passes_under_default_deny() {
    let mut dp = setup("nd");
    dp.apply(vec![allow_tcp(1, IN, &["fd77::/64"], 80), allow_tcp(2, OUT, &["fd77::/64"], 80)]);
    let h: std::net::Ipv6Addr = "fd77::1".parse().unwrap();
    let r: std::net::Ipv6Addr = "fd77::2".parse().unwrap();
    let sn = hostfwd_tests::packet::solicited_node(h);
    for (dir, f) in [
        (IN, Frame::nd(r, sn, Nd::NeighborSolicit { target: h })),
        (IN, Frame::nd(r, h, Nd::NeighborAdvert { target: r })),
        (IN, Frame::nd(r, "ff02::1".parse().unwrap(), Nd::RouterAdvert)),
        (OUT, Frame::nd(h, "ff02::2".parse().unwrap(), Nd::RouterSolicit)),
        (OUT, Frame::nd(h, r, Nd::NeighborAdvert { target: h })),
    ] {
        assert_eq!(run(&dp, dir, &f.build()), PASS, "{f:?}");
    }
    // Not every ICMPv6 passes: an echo request is policy.
    assert_eq!(run(&dp, IN, &Frame::echo_request(r.into(), h.into(), 1, 1).build()), DROP);
}

#[test]
fn icmp_errors_for_tracked_flows_pass() {
    let mut dp = setup("icmperr");
    web_policy(&mut dp);
    for v6 in [false, true] {
        let (h, _, far) = addrs(v6);
        let router = if v6 { ip("fd99::1") } else { ip("198.51.100.1") };
        let out = Frame::tcp(h, far, 40500, 443, TcpFlags::SYN).dont_fragment();
        // Before the flow exists, an error quoting it is just unsolicited ICMP.
        let err = Frame::icmp_error(router, h, IcmpError::TooBig { mtu: 1400 }, &out);
        assert_eq!(run(&dp, IN, &err.build()), DROP, "unrelated error v6={v6}");
        assert_eq!(run(&dp, OUT, &out.build()), PASS);
        assert_eq!(run(&dp, IN, &err.build()), PASS, "PMTU error for a tracked flow v6={v6}");
        let ttl = Frame::icmp_error(router, h, IcmpError::TimeExceeded, &out);
        assert_eq!(run(&dp, IN, &ttl.build()), PASS, "time exceeded v6={v6}");
        let other = Frame::tcp(h, far, 40501, 443, TcpFlags::SYN);
        let err2 = Frame::icmp_error(router, h, IcmpError::PortUnreachable, &other);
        assert_eq!(run(&dp, IN, &err2.build()), DROP, "error quoting an unknown flow v6={v6}");
    }
}

#[test]
fn vlan_tags_in_band() {
    let mut dp = setup("vlan");
    web_policy(&mut dp);
    let (h, r, _) = addrs(false);
    let syn = Frame::tcp(r, h, 1, 80, TcpFlags::SYN);
    assert_eq!(run(&dp, IN, &syn.clone().vlan(1000).build()), DROP, "unknown VID");
    assert_eq!(dp.drops(DropReason::VlanFiltered), 1);
    dp.allow_vlan(IF, 1000).unwrap();
    assert_eq!(run(&dp, IN, &syn.clone().vlan(1000).build()), PASS, "allowed VID");
    // Tagged frames with an allowed VID pass unevaluated here (the
    // subinterface enforces): a denied port passes the lower device.
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 9999, TcpFlags::SYN).vlan(1000).build()), PASS);
    assert_eq!(run(&dp, OUT, &syn.clone().vlan(2000).build()), DROP, "egress unknown VID");
    // QinQ: the outer (S-)tag decides.
    assert_eq!(run(&dp, IN, &syn.clone().qinq(1000, 5).build()), PASS);
    assert_eq!(run(&dp, IN, &syn.clone().qinq(5, 1000).build()), DROP);
    // Priority tag (VID 0): untagged traffic of this device, policy applies.
    assert_eq!(run(&dp, IN, &syn.clone().priority_tag(5).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 81, TcpFlags::SYN).priority_tag(5).build()), DROP);
    assert_eq!(dp.drops(DropReason::PolicyDenied), 1);
    // Any number of VIDs, one map entry each.
    for vid in 1..=4094u16 {
        dp.allow_vlan(IF, vid).unwrap();
    }
    assert_eq!(dp.vlans().len(), 4094);
    assert_eq!(run(&dp, IN, &syn.clone().vlan(4094).build()), PASS);
    dp.disallow_vlan(IF, 4094).unwrap();
    assert_eq!(run(&dp, IN, &syn.clone().vlan(4094).build()), DROP);
    // Bypass 0: every tag allowed.
    dp.set_link(IF, l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS | l::L_VLAN_ALLOW_ALL).unwrap();
    assert_eq!(run(&dp, IN, &syn.vlan(4094).build()), PASS);
}

#[test]
fn non_ip_passes_unless_configured() {
    let mut dp = setup("nonip");
    web_policy(&mut dp);
    let mut arp = vec![0xff; 6];
    arp.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend([0u8; 28]);
    assert_eq!(run(&dp, IN, &arp), PASS);
    dp.set_global(GlobalSettings { audit: false, drop_non_ip: true, events_per_sec: 100, events_burst: 100 }).unwrap();
    assert_eq!(run(&dp, IN, &arp), DROP);
    assert_eq!(dp.drops(DropReason::NonIp), 1);
}

#[test]
fn malformed_packets_are_dropped_with_their_reason() {
    let mut dp = setup("malformed");
    web_policy(&mut dp);
    for v6 in [false, true] {
        let (h, r, _) = addrs(v6);
        let good = Frame::tcp(r, h, 1, 80, TcpFlags::SYN).build();
        assert_eq!(run(&dp, IN, &good), PASS);
        // Cut anywhere inside the IP or TCP header.
        let off = Frame::tcp(r, h, 1, 80, TcpFlags::SYN).offsets();
        for (n, t) in truncations(&good).enumerate().skip(15) {
            if n < off.l4 + 20 {
                // The kernel itself refuses to build a test skb without a
                // whole IP header; from there on, the program must drop.
                let fixed = if v6 { 40 } else { 20 };
                match dp.test_run(IN, t, 1) {
                    Ok(res) => {
                        assert!(n >= off.l3 + fixed, "kernel accepted a {n}-byte frame");
                        assert_eq!(res.retval, DROP, "truncated at {n} v6={v6}");
                    }
                    Err(e) => assert!(n < off.l3 + fixed, "truncated at {n} v6={v6}: {e}"),
                }
            }
        }
    }
    let (h, r, _) = addrs(false);
    let before = dp.drops(DropReason::Malformed);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 80, TcpFlags::SYN).ihl(4).build()), DROP, "IHL < 5");
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 80, TcpFlags::SYN).ihl(0).build()), DROP, "IHL 0");
    // IPv4 options are fine.
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 80, TcpFlags::SYN).ipv4_options(&[1, 1, 1, 0]).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 81, TcpFlags::SYN).ipv4_options(&[1, 1, 1, 0]).build()), DROP);
    // Garbage after an IPv4/IPv6 ethertype, addressed to the host: dropped.
    // The same garbage to another address is forwarded traffic, which is
    // not the host's to judge, malformed or not.
    for seed in 1..50u64 {
        // To the test-run device's MAC: a frame for another MAC is
        // PACKET_OTHERHOST, not the host's.
        let mut f = [&DEFAULT_DST_MAC[..], &DEFAULT_SRC_MAC[..], &[0x08, 0x00]].concat();
        f.extend(garbage(60, seed));
        f[14] = 0x40 | (f[14] & 0x0f).min(4); // version 4, IHL < 5
        f[30..34].copy_from_slice(&[10, 77, 0, 1]);
        assert_eq!(run(&dp, IN, &f), DROP, "garbage seed {seed}");
        f[30..34].copy_from_slice(&[10, 77, 0, 99]);
        assert_eq!(run(&dp, IN, &f), PASS, "forwarded garbage seed {seed}");
    }
    assert_eq!(dp.drops(DropReason::Malformed) - before, 2 + 49);
}

#[test]
fn ipv6_extension_headers() {
    let mut dp = setup("ext6");
    web_policy(&mut dp);
    let (h, r, _) = addrs(true);
    let chain = [Ext6::HopByHop, Ext6::Routing, Ext6::DestOpts];
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 80, TcpFlags::SYN).ipv6_ext(&chain).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 81, TcpFlags::SYN).ipv6_ext(&chain).build()), DROP);
    assert_eq!(dp.drops(DropReason::PolicyDenied), 1);
    // A chain longer than the walk's bound is malformed, not a bypass.
    let looping = [Ext6::DestOpts; 20];
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 80, TcpFlags::SYN).ipv6_ext(&looping).build()), DROP);
    assert_eq!(dp.drops(DropReason::Malformed), 1);
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut dp = setup("frags");
    dp.apply(vec![Rule::new(
        1,
        IN,
        Action::Allow,
        vec![CidrSet::cidr(net("10.77.0.0/24")), CidrSet::cidr(net("fd77::/64"))],
        vec![PortMatch::l4(L4Proto::Udp, 53, None)],
    )]);
    for v6 in [false, true] {
        let (h, r, _) = addrs(v6);
        let allowed = Frame::udp(r, h, 1000, 53).payload(vec![1; 200]).ident(0x1111).fragments(64);
        let denied = Frame::udp(r, h, 1000, 54).payload(vec![1; 200]).ident(0x2222).fragments(64);
        let late = Frame::udp(r, h, 1000, 53).payload(vec![1; 200]).ident(0x3333).fragments(64);
        assert!(allowed.len() >= 3);
        for (i, f) in allowed.iter().enumerate() {
            assert_eq!(run(&dp, IN, f), PASS, "allowed fragment {i} v6={v6}");
        }
        for (i, f) in denied.iter().enumerate() {
            assert_eq!(run(&dp, IN, f), DROP, "denied fragment {i} v6={v6}");
        }
        // Out of order: a later fragment before its first goes on to the
        // kernel's reassembly, which cannot finish without the first.
        assert_eq!(run(&dp, IN, &late[1]), PASS, "later fragment first v6={v6}");
        assert_eq!(run(&dp, IN, &late[0]), PASS);
        assert_eq!(run(&dp, IN, &late[2]), PASS, "after the first arrived v6={v6}");
        // The denied datagram's later fragments, out of order too, carry
        // its verdict once its first fragment was seen.
        let denied2 = Frame::udp(r, h, 1000, 54).payload(vec![1; 200]).ident(0x4444).fragments(64);
        assert_eq!(run(&dp, IN, &denied2[2]), PASS, "before its first v6={v6}");
        assert_eq!(run(&dp, IN, &denied2[0]), DROP);
        assert_eq!(run(&dp, IN, &denied2[1]), DROP, "after its first v6={v6}");
    }
    assert_eq!(dp.drops(DropReason::Fragment), 0);
    // The later fragments of the denied datagram carry its reason.
    assert!(dp.drops(DropReason::PolicyDenied) >= 8);
}

#[test]
fn audit_mode_drops_nothing_and_reports_everything() {
    let mut dp = setup("audit");
    web_policy(&mut dp);
    dp.audit(true);
    let reader = EventReader::open(dp.paths()).unwrap();
    let (h, r, far) = addrs(false);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 7000, 81, TcpFlags::SYN).build()), PASS, "policy drop audited");
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 7001, 80, TcpFlags::SYN).vlan(3000).build()), PASS, "VLAN drop audited");
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 7002, 80, TcpFlags::SYN).ihl(3).build()), PASS, "malformed audited");
    let ev = reader.poll(Duration::from_secs(1)).unwrap();
    let reasons: Vec<(&str, bool)> = ev.iter().map(|e| (e.reason.as_str(), e.audit)).collect();
    assert_eq!(reasons, vec![("policy-denied", true), ("vlan-filtered", true), ("malformed", true)]);
    let c = dp.counters().unwrap();
    assert!(c.iter().all(|c| c.audit), "{c:?}");
    assert_eq!(c.iter().map(|c| c.packets).sum::<u64>(), 3);
    // The audited flow is tracked but marked: leaving audit mode does not
    // let it through as "established".
    let ct = dp.conntrack().unwrap();
    let e = ct.iter().find(|e| e.sport == 7000).expect("audited flow tracked");
    assert_ne!(e.flags & l::CT_DENIED, 0);
    dp.audit(false);
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 7000, 81, TcpFlags::ACK).build()), DROP);
    // Per-link audit works as the global switch does.
    dp.set_link(IF, l::L_ENFORCE_INGRESS | l::L_AUDIT).unwrap();
    assert_eq!(run(&dp, IN, &Frame::tcp(far, h, 7003, 81, TcpFlags::SYN).build()), PASS);
}

#[test]
fn events_are_rate_limited_counters_are_exact() {
    let mut dp = setup("ratelimit");
    web_policy(&mut dp);
    dp.set_global(GlobalSettings { audit: false, drop_non_ip: false, events_per_sec: 1, events_burst: 3 }).unwrap();
    let reader = EventReader::open(dp.paths()).unwrap();
    let (h, _, far) = addrs(false);
    let f = Frame::tcp(far, h, 1, 81, TcpFlags::SYN).build();
    assert_eq!(dp.test_run(IN, &f, 500).unwrap().retval, DROP);
    let ev = reader.poll(Duration::from_millis(500)).unwrap();
    // The bucket starts full on every CPU the runs landed on.
    assert!((3..=3 * 64).contains(&ev.len()), "events: {}", ev.len());
    assert_eq!(dp.drops(DropReason::PolicyDenied), 500, "counters are exact");
    assert_eq!(dp.events_suppressed().unwrap() + ev.len() as u64, 500);
}

#[test]
fn policy_swap_is_generational() {
    let mut dp = setup("swap");
    let (h, r, _) = addrs(false);
    let g0 = dp.policy_generation().unwrap();
    dp.apply(vec![allow_tcp(1, IN, &["10.77.0.0/24"], 80)]);
    let g1 = dp.policy_generation().unwrap();
    assert_ne!(g0, g1);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 1, 80, TcpFlags::SYN).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 2, 443, TcpFlags::SYN).build()), DROP);
    dp.apply(vec![allow_tcp(2, IN, &["10.77.0.0/24"], 443)]);
    assert_eq!(dp.policy_generation().unwrap(), g0);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 3, 80, TcpFlags::SYN).build()), DROP);
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 4, 443, TcpFlags::SYN).build()), PASS);
    // The old generation stays intact until the next swap reuses it.
    assert!(dp.policy_entries(g1).0 > 0);
    dp.apply(vec![]);
    assert_eq!(dp.policy_generation().unwrap(), g1);
    assert_eq!(dp.policy_entries(g1), (0, 0), "an empty policy has no entries");
    assert!(dp.policy_entries(g0).1 > 0, "the previous generation is left for packets in flight");
    assert_eq!(run(&dp, IN, &Frame::tcp(r, h, 5, 9999, TcpFlags::SYN).build()), PASS, "nothing enforced");
}

#[test]
fn sctp_ports_are_policy() {
    let mut dp = setup("sctp");
    dp.apply(vec![Rule::new(1, IN, Action::Allow, vec![CidrSet::cidr(net("0.0.0.0/0"))], vec![PortMatch::l4(L4Proto::Sctp, 3868, None)])]);
    let (h, r, _) = addrs(false);
    assert_eq!(run(&dp, IN, &Frame::sctp(r, h, 1, 3868).build()), PASS);
    assert_eq!(run(&dp, IN, &Frame::sctp(r, h, 1, 3869).build()), DROP);
}

/// What the kernel delivers to the host: by packet type on ingress, then by
/// the local set (interface addresses, directed broadcasts, local routes in
/// the hf_local_nets trie). Everything else is forwarded and passes.
#[test]
fn local_delivery_by_packet_type_and_local_routes() {
    let mut dp = setup("local");
    dp.apply(vec![
        allow_tcp(10, IN, &["10.77.0.0/24", "fd77::/64"], 80),
        allow_tcp(11, OUT, &["10.77.0.0/24", "fd77::/64"], 443),
    ]);
    let (h, r, far) = addrs(false);
    let bcast = ip("10.77.0.255");
    let other_mac = [2, 0, 0, 0, 0, 2];
    let mut sport = 1000;
    let mut udp_in = |dst: std::net::IpAddr, mac: Option<[u8; 6]>| {
        sport += 1;
        let f = Frame::udp(if dst.is_ipv6() { ip("fd77::2") } else { r }, dst, sport, 9999);
        run(&dp, IN, &mac.map_or(f.clone(), |m| f.macs([2, 0, 0, 0, 0, 1], m)).build())
    };
    // A directed broadcast sent as one (broadcast MAC) reaches the host.
    assert_eq!(udp_in(bcast, Some([0xff; 6])), DROP, "PACKET_BROADCAST is judged");
    assert_eq!(udp_in(ip("10.77.0.200"), Some([0x01, 0, 0x5e, 0, 0, 1])), DROP, "PACKET_MULTICAST is judged");
    // Routed to it (unicast MAC): the local table decides.
    assert_eq!(udp_in(bcast, None), PASS, "not local yet");
    dp.add_local(net("10.77.0.255/32")).unwrap();
    assert_eq!(udp_in(bcast, None), DROP, "the broadcast route");
    assert_eq!(udp_in(ip("127.0.0.5"), None), DROP, "127.0.0.0/8 without a map entry");
    // Only the whole ::ffff:0:0/96 is IPv4: this is neither 224.0.0.1 nor 127.0.0.1.
    assert_eq!(udp_in(ip("0:0:1::ffff:e000:1"), None), PASS, "IPv6 that looks like mapped multicast");
    assert_eq!(udp_in(ip("0:0:1::ffff:7f00:1"), None), PASS, "IPv6 that looks like mapped loopback");
    // A frame for another MAC is judged by its address all the same: a
    // macvlan on the device takes frames to its own MAC and delivers them.
    assert_eq!(udp_in(h, Some(other_mac)), DROP, "PACKET_OTHERHOST to a host address");
    assert_eq!(udp_in(h, None), DROP, "the same packet to our MAC");

    // `ip route add local 10.9.0.0/24 dev lo` (and an IPv6 one): the trie,
    // consulted only while one exists.
    assert!(!dp.local_nets_in_use().unwrap());
    assert_eq!(udp_in(ip("10.9.0.7"), None), PASS, "forwarded");
    dp.add_local(net("10.9.0.0/24")).unwrap();
    dp.add_local(net("fd09::/64")).unwrap();
    assert!(dp.local_nets_in_use().unwrap());
    assert_eq!(udp_in(ip("10.9.0.7"), None), DROP, "inside a local route");
    assert_eq!(udp_in(ip("10.9.1.7"), None), PASS, "outside it");
    assert_eq!(udp_in(ip("fd09::7"), None), DROP, "inside the IPv6 local route");
    // Egress judges the source the same way, whatever the packet type.
    let out = |src, port| run(&dp, OUT, &Frame::tcp(src, far, port, 443, TcpFlags::SYN).macs([2, 0, 0, 0, 0, 1], other_mac).build());
    assert_eq!(out(ip("10.9.0.7"), 2001), DROP, "egress from a local prefix");
    assert_eq!(out(ip("10.9.1.7"), 2002), PASS, "egress of forwarded traffic");
    let local = dp.local_nets();
    for n in ["10.77.0.1/32", "10.77.0.255/32", "10.9.0.0/24", "fd09::/64"] {
        assert!(local.contains(&net(n)), "{n} in {local:?}");
    }

    let gen = dp.host_gen().unwrap();
    dp.remove_local(net("10.9.0.0/24")).unwrap();
    assert!(dp.host_gen().unwrap() != gen, "a removal starts a new generation of host addresses");
    assert_eq!(udp_in(ip("10.9.0.7"), None), PASS, "route removed");
    assert!(dp.local_nets_in_use().unwrap(), "the IPv6 one is left");
    dp.remove_local(net("fd09::/64")).unwrap();
    assert!(!dp.local_nets_in_use().unwrap(), "the trie is out of the path again");
    assert_eq!(udp_in(ip("fd09::7"), None), PASS);
    // Settings written afterwards keep the flag to the trie's content.
    dp.add_local(net("10.9.0.0/24")).unwrap();
    dp.audit(true);
    dp.audit(false);
    assert!(dp.local_nets_in_use().unwrap(), "set_global keeps G_LOCAL_NETS");
}

/// A full local map is an error that names the map and the address: an
/// address left out would pass unjudged.
#[test]
fn a_full_local_map_is_an_error() {
    let dp = setup("localfull");
    // The hash already holds the two host addresses of `setup`.
    let n16 = |i: u32| std::net::Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(i));
    for i in 0..l::HOST_ADDRS_MAX_ENTRIES - 2 {
        dp.add_local(ipnet::IpNet::from(std::net::IpAddr::V6(n16(i)))).expect("room in hf_host_addrs");
    }
    let extra = ipnet::IpNet::from(ip("10.77.0.9"));
    let e = dp.add_local(extra).unwrap_err();
    assert!(matches!(e, hostfwd::datapath::Error::LocalFull { map: "hf_host_addrs", net, .. } if net == extra), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("hf_host_addrs") && msg.contains("10.77.0.9/32"), "{msg}");
    // An update of an address already there is no new entry.
    dp.add_local(ipnet::IpNet::from(ip("10.77.0.1"))).expect("rewriting an entry of a full map");

    for i in 0..l::LOCAL_NETS_MAX_ENTRIES {
        dp.add_local(net(&format!("10.{}.{}.0/24", 100 + i / 256, i % 256))).expect("room in hf_local_nets");
    }
    let extra = net("192.0.2.0/24");
    let e = dp.add_local(extra).unwrap_err();
    assert!(matches!(e, hostfwd::datapath::Error::LocalFull { map: "hf_local_nets", net, .. } if net == extra), "{e:?}");
    assert!(e.to_string().contains("192.0.2.0/24"), "{e}");
}
