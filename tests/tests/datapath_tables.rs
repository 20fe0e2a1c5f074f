//! The datapath's tables against their references, through the program in
//! the kernel (BPF_PROG_TEST_RUN):
//! - the policy lookups: random map images installed by the daemon's
//!   writer, random packets, and every verdict compared with
//!   `MapImage::evaluate` — allow, deny (with its rule id) or no match. The
//!   images are random, not compiled: nested and overlapping prefixes, IPv6
//!   prefixes covering the IPv4-mapped block, identity 0, rules of every
//!   shape (the compiler's own tests check images against rule sets);
//! - a head's port blocks at their edges, against fixed verdicts;
//! - the link table: a configured link is enforced and an unconfigured one
//!   passed, on both sides of the array/hash split by ifindex.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::*;
use hostfwd::datapath::{AttachModeChoice, Direction, EventReader};
use hostfwd_bpf::layout as l;
use hostfwd_tests::fuzz::Rng;
use hostfwd_tests::NetNs;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::MapCore;
use hostfwd::policy::image::{IdentityEntry, MapImage, RuleEntry, Verdict};
use hostfwd::policy::model::Action;
use hostfwd_bpf::DropReason;
use hostfwd_tests::packet::{Frame, TcpFlags};

const HOST4: &str = "10.250.0.1";
const HOST6: &str = "fd00:250::1";

const MAPPED: u128 = 0xffff << 32;

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn port_mask(len: u8) -> u16 {
    if len == 0 {
        0
    } else {
        u16::MAX << (16 - u32::from(len))
    }
}

fn random_net(rng: &mut Rng) -> ipnet::IpNet {
    let raw = u128::from(rng.next()) << 64 | u128::from(rng.next());
    let net = match rng.below(6) {
        0..=2 => ipnet::IpNet::new(IpAddr::V4(Ipv4Addr::from(raw as u32 & 0x0a0f_ffff)), rng.below(33) as u8),
        // Covering ::ffff:0:0/96 (::/0, ::/80, ::fffe:0:0/95) or beside it.
        3 => {
            let base = if rng.below(4) == 0 { raw & MAPPED } else { MAPPED };
            ipnet::IpNet::new(IpAddr::V6(Ipv6Addr::from(base)), rng.pick(&[0, 16, 80, 95, 96]))
        }
        // Inside the IPv4-mapped block, written as IPv6.
        4 => ipnet::IpNet::new(IpAddr::V6(Ipv6Addr::from(MAPPED | (raw & 0x0a0f_ffff))), 96 + rng.below(33) as u8),
        _ => ipnet::IpNet::new(IpAddr::V6(Ipv6Addr::from(raw & (u128::MAX >> 16) | 0x2001 << 112)), rng.below(129) as u8),
    };
    net.expect("prefix length").trunc()
}

/// An address inside one of `nets` (IPv4 mostly as IPv4, sometimes as an
/// IPv4-mapped IPv6 source), or anywhere. Never a host address.
fn random_remote(rng: &mut Rng, nets: &[ipnet::IpNet]) -> IpAddr {
    let raw = u128::from(rng.next()) << 64 | u128::from(rng.next());
    let addr = if !nets.is_empty() && rng.below(5) != 0 {
        let (a, len) = IdentityEntry { prefix: nets[rng.below(nets.len() as u64) as usize], identity: 1 }.mapped();
        let a = Ipv6Addr::from(u128::from(a) & mask128(len) | raw & !mask128(len));
        match a.to_ipv4_mapped() {
            Some(v4) if rng.below(6) != 0 => IpAddr::V4(v4),
            _ => IpAddr::V6(a),
        }
    } else if rng.below(3) == 0 {
        IpAddr::V4(Ipv4Addr::from(raw as u32))
    } else if rng.below(2) == 0 {
        // Next to the IPv4-mapped block: one bit of its first 96 flipped.
        IpAddr::V6(Ipv6Addr::from((MAPPED | raw & 0xffff_ffff) ^ 1 << (32 + rng.below(96))))
    } else {
        IpAddr::V6(Ipv6Addr::from(raw))
    };
    if addr == ip(HOST4) || addr == ip(HOST6) {
        return random_remote(rng, &[]);
    }
    addr
}

/// An IPv6 address in the IPv4-mapped block, or IPv4-compatible (`::a.b.c.d`
/// but `::` and `::1`).
fn poses_as_ipv4(a: IpAddr) -> bool {
    match a {
        IpAddr::V6(a) => a.to_ipv4_mapped().is_some() || (u128::from(a) >> 32 == 0 && u128::from(a) > 1),
        IpAddr::V4(_) => false,
    }
}

fn random_image(rng: &mut Rng) -> MapImage {
    let identities = (0..rng.below(30)).map(|_| IdentityEntry { prefix: random_net(rng), identity: 1 + rng.below(5) as u32 }).collect();
    let rules = (0..rng.below(80))
        .map(|_| RuleEntry {
            identity: rng.below(6) as u32,
            direction: if rng.below(2) == 0 { Direction::Ingress } else { Direction::Egress },
            proto: if rng.below(6) == 0 { None } else { Some(rng.pick(&[6u8, 17, 132, 1, 58, 47])) },
            port: if rng.below(4) == 0 {
                None
            } else {
                let plen = 1 + rng.below(16) as u8;
                let port = (rng.below(16) as u16) << 12 | rng.below(1 << 12) as u16;
                Some((port & port_mask(plen), plen))
            },
            action: if rng.below(3) == 0 { Action::Deny } else { Action::Allow },
            rule_id: 1 + rng.below(10_000) as u32,
        })
        .collect();
    MapImage { enforce_ingress: true, enforce_egress: true, identities, rules }
}

/// A frame carrying (proto, port) between the host and `remote`, and the
/// port the policy sees (ICMP: type << 8 | code). None for combinations the
/// policy step never sees (ICMP errors, neighbour discovery).
fn frame(rng: &mut Rng, remote: IpAddr, dir: Direction, proto: u8, port: u16) -> Option<(Vec<u8>, u16)> {
    let host = if remote.is_ipv4() { ip(HOST4) } else { ip(HOST6) };
    let (src, dst) = if dir == Direction::Ingress { (remote, host) } else { (host, remote) };
    let sport = 1024 + rng.below(60_000) as u16;
    let f = match proto {
        6 => Frame::tcp(src, dst, sport, port, TcpFlags::SYN),
        17 => Frame::udp(src, dst, sport, port),
        132 => Frame::sctp(src, dst, sport, port),
        1 | 58 => {
            let (icmp, ty) = (if remote.is_ipv4() { 1 } else { 58 }, (port >> 8) as u8);
            let special = if icmp == 1 { matches!(ty, 3 | 4 | 11 | 12) } else { matches!(ty, 1..=4 | 130..=137 | 143) };
            if special {
                return None;
            }
            let [t, c] = port.to_be_bytes();
            return Some((Frame::raw_ip(src, dst, icmp).payload(vec![t, c, 0, 0, 0x12, 0x34, 0, 1]).build(), port));
        }
        p => return Some((Frame::raw_ip(src, dst, p).payload(vec![0; 8]).build(), 0)),
    };
    Some((f.build(), port))
}

#[test]
fn kernel_lookups_agree_with_the_image() {
    let mut dp = TestDp::load("lookup", AttachModeChoice::Auto);
    dp.enforce(1);
    dp.add_host_addr(ip(HOST4)).unwrap();
    dp.add_host_addr(ip(HOST6)).unwrap();
    let events = EventReader::open(dp.paths()).unwrap();
    let mut rng = Rng(0x00c0_ffee);
    let (mut allowed, mut denied, mut unmatched, mut mapped) = (0, 0, 0, 0);
    for round in 0..24 {
        let image = random_image(&mut rng);
        dp.apply_policy(&image).unwrap();
        let reference = image.lookup();
        for _ in 0..150 {
            // Mostly aimed at a rule: its identity's addresses, direction,
            // protocol and the neighbourhood of its port.
            let mut remote = random_remote(&mut rng, &[]);
            let mut dir = if rng.below(2) == 0 { Direction::Ingress } else { Direction::Egress };
            let mut proto = rng.pick(&[6u8, 17, 132, 1, 47]);
            let mut port = rng.next() as u16;
            if let Some(r) = image.rules.get(rng.below(image.rules.len() as u64 + 1) as usize) {
                let own: Vec<_> = image.identities.iter().filter(|e| e.identity == r.identity).map(|e| e.prefix).collect();
                remote = random_remote(&mut rng, &own);
                dir = r.direction;
                proto = r.proto.filter(|_| rng.below(5) != 0).unwrap_or(proto);
                if let Some((p, plen)) = r.port {
                    let wider = plen.saturating_sub(rng.below(3) as u8);
                    port = p & port_mask(wider) | (rng.next() as u16 & !port_mask(wider));
                }
            }
            if proto == 1 && !remote.is_ipv4() {
                proto = 58;
            }
            if proto == 58 && remote.is_ipv4() {
                proto = 1;
            }
            let Some((f, port)) = frame(&mut rng, remote, dir, proto, port) else { continue };
            if poses_as_ipv4(remote) {
                // An IPv6 packet that would read as IPv4 never reaches the
                // policy: dropped by name before it.
                dp.flush_flows().unwrap();
                let before = dp.drops(DropReason::MappedAddress);
                assert_eq!(dp.test_run(dir, &f, 1).unwrap().retval, DROP, "round {round}: {remote}");
                assert_eq!(dp.drops(DropReason::MappedAddress), before + 1, "round {round}: {remote}");
                let _ = events.poll(Duration::from_millis(100));
                mapped += 1;
                continue;
            }
            let want = reference.evaluate(remote, dir, proto, port);

            dp.flush_flows().unwrap();
            let before = (dp.drops(DropReason::PolicyDenyRule), dp.drops(DropReason::PolicyDenied));
            let ret = dp.test_run(dir, &f, 1).unwrap().retval;
            let after = (dp.drops(DropReason::PolicyDenyRule), dp.drops(DropReason::PolicyDenied));
            let what = format!("round {round}: {remote} {dir:?} proto {proto} port {port}: expected {want:?}");
            match want {
                Verdict::Allow(_) => {
                    assert_eq!((ret, after), (PASS, before), "{what}");
                    allowed += 1;
                }
                Verdict::Deny(id) => {
                    assert_eq!((ret, after), (DROP, (before.0 + 1, before.1)), "{what}");
                    let ev = events.poll(Duration::from_millis(100)).unwrap();
                    let rule_ids: Vec<u32> = ev.iter().map(|e| e.rule_id).collect();
                    assert_eq!(rule_ids, vec![id], "{what}");
                    denied += 1;
                }
                Verdict::NoMatch | Verdict::NotEnforced => {
                    assert_eq!((ret, after), (DROP, (before.0, before.1 + 1)), "{what}");
                    let ev = events.poll(Duration::from_millis(100)).unwrap();
                    assert_eq!(ev.len(), 1, "{what}");
                    unmatched += 1;
                }
            }
        }
    }
    // The packets reached every outcome, many times.
    assert!(
        allowed > 300 && denied > 150 && unmatched > 300 && mapped > 20,
        "allowed {allowed}, denied {denied}, no match {unmatched}, mapped {mapped}"
    );
}

/// A head's 1024-port blocks in the kernel: ports on both sides of a block
/// edge (1023/1024), 0 and 65535, a /5 (two blocks) with a clear block on
/// each side, and 16-port granules of a block entry (block 6, 6144..7167:
/// 6200/16 sets granule 3, 6656/7 granules 32..63); a port
/// in a clear block or granule gets the head's own answer without a probe,
/// which is no match, or the protocol-wide deny once there is one.
#[test]
fn port_blocks_decide_like_the_probes() {
    let mut dp = TestDp::load("blocks", AttachModeChoice::Auto);
    dp.enforce(1);
    dp.add_host_addr(ip(HOST4)).unwrap();
    let events = EventReader::open(dp.paths()).unwrap();
    let remote = ip("192.0.2.7");
    let tcp = |port: Option<(u16, u8)>, action, rule_id| RuleEntry {
        identity: 0,
        direction: Direction::Ingress,
        proto: Some(6),
        port,
        action,
        rule_id,
    };
    let mut image = MapImage {
        enforce_ingress: true,
        enforce_egress: true,
        identities: Vec::new(),
        rules: vec![
            tcp(Some((0, 16)), Action::Allow, 1),
            tcp(Some((1023, 16)), Action::Allow, 2),
            tcp(Some((8192, 5)), Action::Deny, 3), // 8192..=10239
            tcp(Some((65535, 16)), Action::Allow, 4),
            tcp(Some((6656, 7)), Action::Deny, 6), // 6656..=7167
            tcp(Some((6200, 16)), Action::Allow, 7),
        ],
    };
    let ports = [
        0u16, 1, 1023, 1024, 2047, 6143, 6144, 6191, 6192, 6199, 6200, 6201, 6207, 6208, 6655, 6656, 7167, 7168, 8191, 8192, 10239,
        10240, 64511, 64512, 65534, 65535,
    ];
    for proto_wide in [false, true] {
        if proto_wide {
            image.rules.push(tcp(None, Action::Deny, 5));
        }
        dp.apply_policy(&image).unwrap();
        for port in ports {
            let want = match port {
                0 => Verdict::Allow(1),
                1023 => Verdict::Allow(2),
                8192..=10239 => Verdict::Deny(3),
                65535 => Verdict::Allow(4),
                6656..=7167 => Verdict::Deny(6),
                6200 => Verdict::Allow(7),
                _ if proto_wide => Verdict::Deny(5),
                _ => Verdict::NoMatch,
            };
            assert_eq!(image.evaluate(remote, Direction::Ingress, 6, port), want, "reference, port {port}");
            let f = Frame::tcp(remote, ip(HOST4), 40000, port, TcpFlags::SYN).build();
            dp.flush_flows().unwrap();
            let before = (dp.drops(DropReason::PolicyDenyRule), dp.drops(DropReason::PolicyDenied));
            let ret = dp.test_run(Direction::Ingress, &f, 1).unwrap().retval;
            let after = (dp.drops(DropReason::PolicyDenyRule), dp.drops(DropReason::PolicyDenied));
            let what = format!("port {port}, protocol-wide deny {proto_wide}: expected {want:?}");
            match want {
                Verdict::Allow(_) => assert_eq!((ret, after), (PASS, before), "{what}"),
                Verdict::Deny(id) => {
                    assert_eq!((ret, after), (DROP, (before.0 + 1, before.1)), "{what}");
                    let ev = events.poll(Duration::from_millis(100)).unwrap();
                    assert_eq!(ev.iter().map(|e| e.rule_id).collect::<Vec<_>>(), vec![id], "{what}");
                }
                _ => {
                    assert_eq!((ret, after), (DROP, (before.0, before.1 + 1)), "{what}");
                    assert_eq!(events.poll(Duration::from_millis(100)).unwrap().len(), 1, "{what}");
                }
            }
        }
    }
}

/// The program as loaded by the daemon, run on a frame that arrives on
/// device `ifindex` of the calling thread's network namespace: a second
/// instance of the object on the datapath's pinned maps (the daemon's own
/// test runs always use the loopback device).
fn run_on_device(dp: &TestDp, ifindex: u32, frame: &[u8]) -> i32 {
    let storage = Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
    let mut open = hostfwd_bpf::skel::HostfwdSkelBuilder::default().open(storage).expect("open object");
    for mut map in open.open_object_mut().maps_mut() {
        let pin = dp.paths().map(&map.name().to_string_lossy());
        if pin.exists() {
            map.reuse_pinned_map(&pin).expect("reuse pinned map");
        }
    }
    let skel = open.load().expect("load");
    // struct __sk_buff up to and including ifindex (offset 40).
    let mut ctx = [0u8; 44];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let input = libbpf_rs::ProgramInput { data_in: Some(frame), context_in: Some(&mut ctx), ..Default::default() };
    skel.progs.hf_ingress.test_run(input).expect("test run").return_value as i32
}

#[test]
fn links_below_and_above_the_slot_array() {
    let mut dp = TestDp::load("links", AttachModeChoice::Auto);
    dp.add_host_addr(ip(HOST4)).unwrap();
    dp.apply(vec![allow_tcp(1, Direction::Ingress, &["10.77.0.0/24"], 80)]);
    let ns = NetNs::new().unwrap();
    let (small, big) = (300u32, l::LINK_SLOTS + 3000);
    for (name, index) in [("hfsmall", small), ("hfbig", big)] {
        let peer = format!("{name}p");
        ns.ip(&["link", "add", name, "index", &index.to_string(), "type", "veth", "peer", "name", &peer]).unwrap();
        ns.ip(&["link", "set", name, "up"]).unwrap();
    }
    for (name, ifindex) in [("hfsmall", small), ("hfbig", big)] {
        // To the device's MAC: the test run classifies the frame against
        // it, and a frame for another MAC is not the host's (OTHERHOST).
        let denied = Frame::tcp(ip("10.77.0.2"), ip(HOST4), 1000, 9999, TcpFlags::SYN)
            .macs(hostfwd_tests::packet::DEFAULT_SRC_MAC, ns.mac(name).unwrap())
            .build();
        let run = |dp: &TestDp| ns.run(|| run_on_device(dp, ifindex, &denied)).unwrap();
        assert_eq!(run(&dp), PASS, "ifindex {ifindex}: not configured, passed untouched");
        dp.set_link(ifindex, l::L_ENFORCE_INGRESS).unwrap();
        assert_eq!(run(&dp), DROP, "ifindex {ifindex}: enforced");
        dp.set_link(ifindex, l::L_ENFORCE_INGRESS | l::L_AUDIT).unwrap();
        assert_eq!(run(&dp), PASS, "ifindex {ifindex}: audited");
        assert_eq!(dp.links().unwrap().get(&ifindex), Some(&(l::L_ENFORCE_INGRESS | l::L_AUDIT)));
        dp.remove_link(ifindex).unwrap();
        assert_eq!(run(&dp), PASS, "ifindex {ifindex}: removed");
        assert_eq!(dp.links().unwrap().get(&ifindex), None);
    }
}

/// What `links()` reports is what the datapath reads: a link listed in
/// `hf_links` whose slot is empty (pinned maps of an older datapath, or an
/// interrupted write) is reported missing, so that reconciling sets it again.
#[test]
fn links_reports_the_slot_the_datapath_reads() {
    let dp = TestDp::load("linkslots", AttachModeChoice::Auto);
    dp.set_link(7, l::L_ENFORCE_INGRESS).unwrap();
    let slots = libbpf_rs::MapHandle::from_pinned_path(dp.paths().map("hf_link_slots")).unwrap();
    slots.update(&7u32.to_ne_bytes(), &0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY).unwrap();
    assert_eq!(dp.links().unwrap().get(&7), None);
    dp.set_link(7, l::L_ENFORCE_INGRESS).unwrap();
    assert_eq!(dp.links().unwrap().get(&7), Some(&l::L_ENFORCE_INGRESS));
}
