//! Policy by IP protocol for protocols without ports (Cilium's extended
//! protocols: VRRP, IGMP, …), from a Cilium policy through the compiler to
//! the eBPF program: BPF_PROG_TEST_RUN on VRRP- and IGMP-shaped frames, and
//! real IP protocol 112 packets from raw sockets between two namespaces
//! with the datapath attached (tcx and legacy tc). The datapath looks such
//! packets up with port 0 (`bpf/c/lib/parse.h`); nothing in the C is
//! specific to them.

mod common;

use std::net::{IpAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::web::*;
use common::*;
use hostfwd::datapath::{AttachModeChoice, Direction};
use hostfwd::policy::cilium::{self, NodeLabels};
use hostfwd::policy::entities::EntityContext;
use hostfwd::policy::model::Rule;
use hostfwd_bpf::DropReason;
use hostfwd_tests::{Frame, NetNs, TcpFlags, Topology};

const VRRP: u8 = 112;
const IGMP: u8 = 2;
const GRE: u8 = 47;

/// keepalived between the nodes: VRRP (by name, by number for ingress)
/// and IGMP in, VRRP out, each from or to the other nodes only; a deny for
/// one node's VRRP.
const KEEPALIVED: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: keepalived
spec:
  nodeSelector: {}
  ingress:
  - fromEntities: [remote-node]
    toPorts:
    - ports:
      - protocol: "112"
      - protocol: IGMP
  ingressDeny:
  - fromCIDR: [10.77.0.3/32]
    toPorts:
    - ports:
      - protocol: VRRP
  egress:
  - toEntities: [remote-node]
    toPorts:
    - ports:
      - protocol: VRRP
"#;

/// The model rules of [`KEEPALIVED`] on a host with `host` addresses whose
/// nodes are `nodes`.
fn keepalived(host: &[IpAddr], nodes: &[&str]) -> Vec<Rule> {
    let policies = cilium::parse_policies("keepalived.yaml", KEEPALIVED).expect("the policy loads");
    assert!(policies[0].warnings.is_empty(), "{:?}", policies[0].warnings);
    let ctx = EntityContext {
        host_addrs: host.iter().copied().collect(),
        node_cidrs: nodes.iter().map(|n| net(n)).collect(),
        ..EntityContext::default()
    };
    cilium::to_rule_set(&policies, &ctx, &NodeLabels::new()).0.rules
}

/// A VRRPv3 advertisement (RFC 9568): version 3, type 1, VRID 10,
/// priority 100, one address, 1 s interval; the checksum is not checked.
fn vrrp_advert(vip: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x31, 10, 100, 1, 0x00, 0x64, 0, 0];
    p.extend_from_slice(&vip);
    p
}

/// An IGMPv3 membership report without records (RFC 3376).
const IGMP_REPORT: [u8; 8] = [0x22, 0, 0, 0, 0, 0, 0, 0];

#[test]
fn vrrp_and_igmp_by_ip_protocol_with_test_run() {
    let mut dp = setup("xproto");
    let (h4, r4, far4) = addrs(false);
    let (h6, r6, far6) = addrs(true);
    dp.apply(keepalived(&[h4, h6], &["10.77.0.0/24", "fd77::/64"]));
    let vrrp4 = |src| Frame::raw_ip(src, ip("224.0.0.18"), VRRP).ttl(255).payload(vrrp_advert([10, 77, 0, 100])).build();
    let vrrp6 = |src| Frame::raw_ip(src, ip("ff02::12"), VRRP).ttl(255).payload(vrrp_advert([0; 4])).build();
    let igmp = |src| Frame::raw_ip(src, ip("224.0.0.22"), IGMP).ttl(1).payload(IGMP_REPORT).build();

    // In: from the nodes, VRRP (v4 and v6) and IGMP; nothing else.
    assert_eq!(run(&dp, IN, &vrrp4(r4)), PASS, "VRRP from a node");
    assert_eq!(run(&dp, IN, &vrrp4(r4)), PASS, "VRRP again (tracked)");
    assert_eq!(run(&dp, IN, &vrrp6(r6)), PASS, "VRRP v6 from a node");
    assert_eq!(run(&dp, IN, &igmp(r4)), PASS, "IGMP from a node");
    // Unicast VRRP to the host (keepalived's unicast_peer).
    assert_eq!(run(&dp, IN, &Frame::raw_ip(r4, h4, VRRP).payload(vrrp_advert([10, 77, 0, 100])).build()), PASS);
    let denied = dp.drops(DropReason::PolicyDenied);
    assert_eq!(run(&dp, IN, &vrrp4(far4)), DROP, "VRRP from outside the nodes");
    assert_eq!(run(&dp, IN, &vrrp6(far6)), DROP, "VRRP v6 from outside the nodes");
    assert_eq!(run(&dp, IN, &Frame::raw_ip(r4, h4, GRE).build()), DROP, "GRE is not allowed");
    assert_eq!(run(&dp, IN, &Frame::tcp(r4, h4, 4000, 22, TcpFlags::SYN).build()), DROP, "no ports allowed");
    assert_eq!(dp.drops(DropReason::PolicyDenied), denied + 4);
    // The deny rule: one node's VRRP, not its IGMP.
    assert_eq!(run(&dp, IN, &vrrp4(ip("10.77.0.3"))), DROP);
    assert_eq!(dp.drops(DropReason::PolicyDenyRule), 1);
    assert_eq!(run(&dp, IN, &igmp(ip("10.77.0.3"))), PASS);

    // Out: VRRP to the nodes only; IGMP out is not allowed.
    assert_eq!(run(&dp, OUT, &Frame::raw_ip(h4, r4, VRRP).payload(vrrp_advert([10, 77, 0, 100])).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::raw_ip(h6, r6, VRRP).payload(vrrp_advert([0; 4])).build()), PASS);
    assert_eq!(run(&dp, OUT, &Frame::raw_ip(h4, far4, VRRP).build()), DROP);
    assert_eq!(run(&dp, OUT, &Frame::raw_ip(h4, r4, IGMP).payload(IGMP_REPORT).build()), DROP);
}

// --- real packets between namespaces ------------------------------------

const T: Duration = Duration::from_millis(500);
const TC: AttachModeChoice = AttachModeChoice::Tc { priority: 1, handle: 0x4846 };

/// An IPv4 raw socket of IP protocol `proto` in `ns`: it sends packets of
/// that protocol and receives a copy of every one delivered to `ns`.
fn raw_socket(ns: &NetNs, proto: u8) -> OwnedFd {
    ns.run(move || {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "raw socket for protocol {proto}: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval { tv_sec: 0, tv_usec: T.as_micros() as libc::suseconds_t };
        // SAFETY: a valid timeval of the right size for SO_RCVTIMEO.
        let rc = unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>() as libc::socklen_t)
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        fd
    })
    .expect("in the namespace")
}

fn send_to(fd: &OwnedFd, dst: std::net::Ipv4Addr, payload: &[u8]) {
    let sa = nix::sys::socket::SockaddrIn::from(SocketAddrV4::new(dst, 0));
    nix::sys::socket::sendto(fd.as_raw_fd(), payload, &sa, nix::sys::socket::MsgFlags::empty()).expect("sendto");
}

/// Whether a packet whose payload is `payload` arrives within [`T`]
/// (a raw IPv4 socket receives the IP header too).
fn arrives(fd: &OwnedFd, payload: &[u8]) -> bool {
    let mut buf = [0u8; 1500];
    loop {
        match nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty()) {
            Ok(n) if buf[..n].ends_with(payload) => return true,
            Ok(_) => continue, // another packet of the protocol
            Err(nix::errno::Errno::EAGAIN) => return false,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn vrrp_between_namespaces(mode: AttachModeChoice, tag: &str) {
    let topo = Topology::new().expect("topology");
    let mut dp = attached_to_host(&topo, tag, mode);
    let h = topo.h.clone();
    // The peer is the other node.
    let peer_net = format!("{}/32", topo.p.v4);
    dp.apply(keepalived(&[h.v4.into(), h.v6.into()], &[&peer_net]));

    let (host_vrrp, peer_vrrp) = (raw_socket(&topo.host, VRRP), raw_socket(&topo.peer, VRRP));
    let (host_gre, peer_gre) = (raw_socket(&topo.host, GRE), raw_socket(&topo.peer, GRE));
    let advert = vrrp_advert([10, 77, 0, 100]);
    send_to(&peer_vrrp, h.v4, &advert);
    assert!(arrives(&host_vrrp, &advert), "VRRP from the other node reaches the host");
    send_to(&host_vrrp, topo.p.v4, &advert);
    assert!(arrives(&peer_vrrp, &advert), "the host's VRRP reaches the other node");
    let denied = dp.drops(DropReason::PolicyDenied);
    send_to(&peer_gre, h.v4, b"gre-in");
    assert!(!arrives(&host_gre, b"gre-in"), "GRE in is not allowed");
    send_to(&host_gre, topo.p.v4, b"gre-out");
    assert!(!arrives(&peer_gre, b"gre-out"), "GRE out is not allowed");
    assert_eq!(dp.drops(DropReason::PolicyDenied), denied + 2);

    // A policy without VRRP: the same packets are dropped, running flow or not.
    let nodes_ssh = vec![allow_tcp(1, Direction::Ingress, &[&peer_net], 22), allow_tcp(2, Direction::Egress, &[&peer_net], 22)];
    dp.apply(nodes_ssh);
    send_to(&peer_vrrp, h.v4, &advert);
    assert!(!arrives(&host_vrrp, &advert), "VRRP in is no longer allowed");
    send_to(&host_vrrp, topo.p.v4, &advert);
    assert!(!arrives(&peer_vrrp, &advert), "VRRP out is no longer allowed");
    assert_eq!(dp.drops(DropReason::PolicyDenied), denied + 4);
}

#[test]
fn tcx_vrrp_between_namespaces() {
    vrrp_between_namespaces(AttachModeChoice::Tcx, "ns-tcx-vrrp");
}

#[test]
fn tc_vrrp_between_namespaces() {
    vrrp_between_namespaces(TC, "ns-tc-vrrp");
}
