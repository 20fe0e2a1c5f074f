//! "To the host" is what the kernel delivers locally: the daemon follows the
//! `local` routing table (directed broadcasts, `ip route add local`, …) and
//! the datapath judges by packet type, while traffic the host forwards
//! passes unjudged. Real traffic between network namespaces, the daemon
//! process on the host side (`h0`), policy from a file: UDP 7001 is allowed
//! in, everything else denied.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use hostfwd::datapath::{AttachModeChoice, Direction};
use hostfwd_tests::traffic::udp_recv;
use hostfwd_tests::{Frame, NetNs, Topology};

/// How long a datagram may take; also how long "nothing arrived" waits.
const T: Duration = Duration::from_millis(700);
/// Any wait for the daemon to act.
const SETTLE: Duration = Duration::from_secs(30);
const ALLOWED: u16 = 7001;
const DENIED: u16 = 7002;

const POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: local-delivery
spec:
  nodeSelector: {}
  ingress:
  - fromEntities: [all]
    toPorts:
    - ports:
      - port: \"7001\"
        protocol: UDP
";

/// The daemon, killed on drop.
struct Running {
    child: Child,
    _policies: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the daemon in `ns` on `devices`, enforcing [`POLICY`], sharing the
/// bpffs root (and so the maps) of `dp`; returns once it enforces: its
/// programs are on every device and a denied datagram to `probe` no longer
/// from `peer` reaches a listener.
fn start(ns: &NetNs, dp: &TestDp, devices: &[(&str, u32)], peer: &NetNs, probe: IpAddr) -> Running {
    let policies = tempfile::tempdir().expect("tempdir");
    std::fs::write(policies.path().join("local.yaml"), POLICY).expect("policy file");
    let names: Vec<&str> = devices.iter().map(|d| d.0).collect();
    let child = ns
        .cmd(hostfwd_bin())
        .arg("run")
        .env("HOSTFWD_BPFFS_ROOT", &dp.root)
        .env("HOSTFWD_POLICY_DIR", policies.path())
        .env("HOSTFWD_STATE_DIR", policies.path().join("state"))
        .env("HOSTFWD_DEVICES", names.join(","))
        .env("HOSTFWD_AUDIT", "false")
        .env("HOSTFWD_DBUS", "none")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hostfwd");
    let running = Running { child, _policies: policies };
    let want: Vec<(u32, Direction)> = devices.iter().flat_map(|d| Direction::ALL.map(|dir| (d.1, dir))).collect();
    wait_until("the daemon attached", SETTLE, || {
        let mut got: Vec<(u32, Direction)> =
            ns.run(|| dp.attachments().expect("attachments")).expect("netns").into_iter().map(|a| (a.ifindex, a.dir)).collect();
        got.sort_by_key(|(i, d)| (*i, *d as u8));
        got == want
    });
    let listener = ns.udp_bind(SocketAddr::new(probe, DENIED)).expect("probe listener");
    wait_until("the daemon's policy enforced", SETTLE, || !delivered(peer, &listener, SocketAddr::new(probe, DENIED)));
    running
}

/// Sends one datagram from `from` to `dst` and reports whether `listener`
/// got it. A new socket each time: a new flow, which conntrack has not
/// admitted before (a flow that passed before the policy would stay
/// admitted).
fn delivered(from: &NetNs, listener: &UdpSocket, dst: SocketAddr) -> bool {
    let sender = from.udp_bind(any(0)).expect("sender");
    sender.set_broadcast(true).expect("SO_BROADCAST");
    let tag = format!("hf-local-{dst}-{:?}", std::time::Instant::now());
    sender.send_to(tag.as_bytes(), dst).unwrap_or_else(|e| panic!("send to {dst}: {e}"));
    arrived(listener, &tag)
}

/// Whether a datagram carrying `tag` reaches `listener` within [`T`]
/// (others are skipped).
fn arrived(listener: &UdpSocket, tag: &str) -> bool {
    let end = std::time::Instant::now() + T;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match udp_recv(listener, left) {
            Ok((data, _)) if data == tag.as_bytes() => return true,
            Ok(_) => {}
            Err(e) if e.is_timeout() => return false,
            Err(e) => panic!("udp recv: {e}"),
        }
    }
}

fn any(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port)
}

/// The subnet's directed broadcast, sent as a broadcast (PACKET_BROADCAST
/// at h0) and routed to as a unicast frame to h0's MAC (PACKET_HOST, the
/// local table's broadcast route): judged both ways.
#[test]
fn directed_broadcast_is_judged() {
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("ld-bcast", AttachModeChoice::Auto);
    let _d = start(&topo.host, &dp, &[("h0", topo.h.ifindex)], &topo.peer, topo.h.v4.into());
    wait_until("the broadcast route in the local set", SETTLE, || dp.local_nets().contains(&net("10.77.0.255/32")));
    let bcast: IpAddr = ip("10.77.0.255");
    let allowed = topo.host.udp_bind(any(ALLOWED)).unwrap();
    let denied = topo.host.udp_bind(any(DENIED)).unwrap();
    assert!(!delivered(&topo.peer, &denied, SocketAddr::new(bcast, DENIED)), "broadcast to a denied port reached the host");
    assert!(delivered(&topo.peer, &allowed, SocketAddr::new(bcast, ALLOWED)), "broadcast to the allowed port");

    let (h, p) = (&topo.h, &topo.p);
    let unicast = |port: u16, tag: &str| {
        Frame::udp(p.v4.into(), bcast, 40000, port).macs(p.mac, h.mac).payload(tag.as_bytes().to_vec()).build()
    };
    topo.peer.send_frame(p.ifindex, &unicast(DENIED, "hf-unicast-denied")).unwrap();
    assert!(!arrived(&denied, "hf-unicast-denied"), "routed directed broadcast to a denied port reached the host");
    topo.peer.send_frame(p.ifindex, &unicast(ALLOWED, "hf-unicast-allowed")).unwrap();
    assert!(arrived(&allowed, "hf-unicast-allowed"), "routed directed broadcast to the allowed port");
}

/// `ip route add local 10.9.0.0/24 dev lo` after the daemon started: the
/// whole prefix is the host's, judged, and forgotten with the route.
#[test]
fn local_route_prefix_is_judged() {
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("ld-route", AttachModeChoice::Auto);
    let _d = start(&topo.host, &dp, &[("h0", topo.h.ifindex)], &topo.peer, topo.h.v4.into());
    assert!(!dp.local_nets_in_use().unwrap(), "no local prefix yet: the trie is not consulted");
    topo.peer.ip(&["route", "add", "10.9.0.0/24", "via", "10.77.0.1"]).unwrap();
    topo.host.ip(&["route", "add", "local", "10.9.0.0/24", "dev", "lo"]).unwrap();
    wait_until("the local route in the trie", SETTLE, || {
        dp.local_nets().contains(&net("10.9.0.0/24")) && dp.local_nets_in_use().unwrap()
    });
    let addr: IpAddr = ip("10.9.0.7");
    let allowed = topo.host.udp_bind(SocketAddr::new(addr, ALLOWED)).unwrap();
    let denied = topo.host.udp_bind(SocketAddr::new(addr, DENIED)).unwrap();
    assert!(!delivered(&topo.peer, &denied, denied.local_addr().unwrap()), "a denied port of a local prefix reached the host");
    assert!(delivered(&topo.peer, &allowed, allowed.local_addr().unwrap()), "the allowed port of a local prefix");

    topo.host.ip(&["route", "del", "local", "10.9.0.0/24", "dev", "lo"]).unwrap();
    wait_until("the route left the trie, and the trie the path", SETTLE, || {
        !dp.local_nets().contains(&net("10.9.0.0/24")) && !dp.local_nets_in_use().unwrap()
    });
}

/// The host as a router between `peer` (10.77.0.0/24, h0) and `far`
/// (10.78.0.0/24, h1), hostfwd on both: forwarded traffic passes unjudged
/// both ways, while the host's own address on the far side and the far
/// subnet's directed broadcast, routed to the host, are judged.
#[test]
fn forwarded_traffic_passes_unjudged() {
    let topo = Topology::new().unwrap();
    let far = NetNs::new().unwrap();
    topo.host.ip(&["link", "add", "h1", "type", "veth", "peer", "name", "f0", "netns", far.name()]).unwrap();
    topo.host.ip(&["addr", "add", "10.78.0.1/24", "dev", "h1"]).unwrap();
    topo.host.ip(&["link", "set", "h1", "up"]).unwrap();
    far.ip(&["addr", "add", "10.78.0.2/24", "dev", "f0"]).unwrap();
    far.ip(&["link", "set", "f0", "up"]).unwrap();
    far.ip(&["route", "add", "default", "via", "10.78.0.1"]).unwrap();
    topo.peer.ip(&["route", "add", "10.78.0.0/24", "via", "10.77.0.1"]).unwrap();
    topo.host.sysctl("net.ipv4.ip_forward", "1").unwrap();
    topo.host.wait_up("h1", Duration::from_secs(5)).unwrap();
    far.wait_up("f0", Duration::from_secs(5)).unwrap();
    let h1 = topo.host.ifindex("h1").unwrap();

    let dp = TestDp::load("ld-fwd", AttachModeChoice::Auto);
    let _d = start(&topo.host, &dp, &[("h0", topo.h.ifindex), ("h1", h1)], &topo.peer, topo.h.v4.into());
    wait_until("the far subnet's broadcast route in the local set", SETTLE, || {
        dp.local_nets().contains(&net("10.78.0.255/32"))
    });

    // Through the host: judged nowhere (7002 is denied to the host).
    let far_rx = far.udp_bind(any(DENIED)).unwrap();
    assert!(delivered(&topo.peer, &far_rx, SocketAddr::new(ip("10.78.0.2"), DENIED)), "forwarded datagram");
    let peer_rx = topo.peer.udp_bind(any(DENIED)).unwrap();
    assert!(delivered(&far, &peer_rx, SocketAddr::new(topo.p.v4.into(), DENIED)), "forwarded the other way");
    let srv = hostfwd_tests::EchoServer::tcp(&far, SocketAddr::new(ip("10.78.0.2"), 9000)).unwrap();
    let mut sess = hostfwd_tests::Session::connect(&topo.peer, srv.addr(), T).expect("TCP through the host");
    sess.roundtrip(T).expect("forwarded session");

    // To the host itself: its far-side address and the far subnet's
    // directed broadcast, both reached through h0.
    let host_rx = topo.host.udp_bind(any(DENIED)).unwrap();
    let host_ok = topo.host.udp_bind(any(ALLOWED)).unwrap();
    assert!(!delivered(&topo.peer, &host_rx, SocketAddr::new(ip("10.78.0.1"), DENIED)), "the host's far-side address");
    assert!(!delivered(&topo.peer, &host_rx, SocketAddr::new(ip("10.78.0.255"), DENIED)), "routed directed broadcast of the far subnet");
    assert!(delivered(&topo.peer, &host_ok, SocketAddr::new(ip("10.78.0.255"), ALLOWED)), "the allowed port of it");
}
