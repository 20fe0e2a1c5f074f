//! IPv4 fragments with real traffic: hostfwd (tcx) on the host side of a
//! veth pair, fragments crafted and sent from the peer with AF_PACKET, UDP
//! sockets on the host counting what the kernel delivers after reassembly.
//!
//! The claim under test: a later fragment that arrives before its first
//! goes on to the kernel's reassembly, and no fragment can put an L4 header
//! in front of the socket that hostfwd did not judge — the ports live in the
//! offset-0 fragment, which hostfwd judges, and Linux discards a datagram
//! whose fragments overlap.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use hostfwd::datapath::{AttachModeChoice, Direction};
use hostfwd::policy::model::{Action, CidrSet, L4Proto, PortMatch, Rule};
use hostfwd_bpf::DropReason;
use hostfwd_tests::{Frame, Topology};

struct Setup {
    topo: Topology,
    dp: TestDp,
    allowed: UdpSocket,
    denied: UdpSocket,
}

/// UDP/80 allowed from the peer, UDP/81 not (default deny on ingress).
fn setup(tag: &str) -> Setup {
    let topo = Topology::new().expect("topology");
    let mut dp = TestDp::load(tag, AttachModeChoice::Auto);
    let h = topo.h.clone();
    dp.enforce(h.ifindex);
    dp.add_host_addr(h.v4.into()).unwrap();
    dp.apply(vec![Rule::new(1, Direction::Ingress, Action::Allow, vec![CidrSet::cidr(net("10.77.0.0/24"))], vec![
        PortMatch::l4(L4Proto::Udp, 80, None),
    ])]);
    topo.host
        .run(|| {
            for d in Direction::ALL {
                dp.attach(h.ifindex, d).expect("attach");
            }
        })
        .unwrap();
    let bind = |port: u16| {
        let addr = SocketAddr::new(h.v4.into(), port);
        let s = topo.host.run(move || UdpSocket::bind(addr)).unwrap().expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        s
    };
    let (allowed, denied) = (bind(80), bind(81));
    Setup { topo, dp, allowed, denied }
}

impl Setup {
    /// The fragments (24-byte pieces) of a UDP datagram to `port`.
    fn fragments(&self, port: u16, ident: u32, fill: u8) -> Vec<Vec<u8>> {
        let (h, p) = (&self.topo.h, &self.topo.p);
        Frame::udp(p.v4.into(), h.v4.into(), 4000, port).macs(p.mac, h.mac).payload(vec![fill; 64]).ident(ident).fragments(24)
    }

    fn send(&self, frames: &[&Vec<u8>]) {
        for f in frames {
            self.topo.peer.send_frame(self.topo.p.ifindex, f).expect("send");
        }
    }
}

/// Datagrams waiting on `s` (each read waits up to 100 ms).
fn received(s: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    std::iter::from_fn(|| s.recv(&mut buf).ok()).count()
}

/// Rewrites the fragment offset (in 8-byte units) and MF bit of an IPv4
/// frame, with its header checksum: the kernel checks it.
fn refragment(frame: &[u8], offset8: u16, more: bool) -> Vec<u8> {
    let mut f = frame.to_vec();
    let v = offset8 | if more { 0x2000 } else { 0 };
    f[20..22].copy_from_slice(&v.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = f[14..34].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f
}

#[test]
fn later_fragments_first_reach_reassembly_and_only_judged_headers_get_through() {
    let s = setup("frag-real");
    // In order: delivered.
    let a = s.fragments(80, 0x1001, 1);
    assert!(a.len() >= 3);
    s.send(&a.iter().collect::<Vec<_>>());
    assert_eq!(received(&s.allowed), 1, "in-order datagram to the allowed port");

    // Reversed (balance-rr bonds reorder): the later fragments wait in
    // reassembly for the first, which hostfwd judges.
    let b = s.fragments(80, 0x1002, 2);
    s.send(&b.iter().rev().collect::<Vec<_>>());
    assert_eq!(received(&s.allowed), 1, "reversed datagram to the allowed port");
    let c = s.fragments(81, 0x1003, 3);
    s.send(&c.iter().rev().collect::<Vec<_>>());
    assert_eq!(received(&s.denied), 0, "reversed datagram to the denied port");
    assert_eq!(s.dp.drops(DropReason::PolicyDenied), 1, "its first fragment was judged and dropped");

    // Two first fragments for one datagram: the denied header is dropped
    // by hostfwd, the allowed one completes the datagram.
    let good = s.fragments(80, 0x1004, 4);
    let evil = s.fragments(81, 0x1004, 4);
    let mut order = vec![&good[1], &evil[0], &good[0]];
    order.extend(&good[2..]);
    s.send(&order);
    assert_eq!(received(&s.denied), 0, "a second first fragment with another port");
    assert_eq!(received(&s.allowed), 1);

    // Overlap: a later fragment reaching back over the judged first one
    // (offset 8 bytes instead of 24) would rewrite bytes behind the UDP
    // header; Linux discards the whole datagram.
    let d = s.fragments(80, 0x1005, 5);
    let overlap = refragment(&d[1], 1, true);
    let mut order = vec![&d[0], &overlap, &d[1]];
    order.extend(&d[2..]);
    s.send(&order);
    assert_eq!(received(&s.allowed) + received(&s.denied), 0, "an overlapping datagram is discarded");
    // The same shape after the first fragment was denied: nothing either.
    let e = s.fragments(81, 0x1006, 6);
    let reach = refragment(&e[1], 0, true);
    let mut order = vec![&e[0], &reach, &e[1]];
    order.extend(&e[2..]);
    s.send(&order);
    assert_eq!(received(&s.allowed) + received(&s.denied), 0, "an offset-0 rewrite of a denied datagram");
}
