//! Random configurations and frames for the kernel-against-model fuzzer:
//! well-formed frames from [`crate::packet::Frame`] (tag stacks, IPv4
//! options, IPv6 extension chains, fragments), then byte mutations (header
//! fields, extension-header types and lengths, truncation at every layer,
//! padding). Everything is drawn from one [`Rng`], so a seed replays a run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hostfwd::policy::model::{
    Action, CidrSet, Direction, IcmpFamily, L4Proto, PortMatch, Rule, RuleSet,
};

use super::model::Config;
use super::Rng;
use crate::packet::{Ext6, Frame, IcmpError, Nd, TcpFlags};

/// Candidate host addresses; each batch configures a subset.
const HOSTS: &[&str] = &[
    "10.77.0.1",
    "10.77.0.3",
    "fd77::1",
    "fe80::1",
    "2001:db8:1::1",
];
const REMOTES4: &[&str] = &[
    "10.77.0.2",
    "10.77.0.9",
    "10.1.2.3",
    "192.0.2.9",
    "198.51.100.7",
];
const REMOTES6: &[&str] = &[
    "fd77::2",
    "fd77::1:5",
    "2001:db8::9",
    "fe80::2",
    "2001:db8:1::77",
];
const MULTICAST4: &[&str] = &["224.0.0.1", "239.1.1.1", "255.255.255.255"];
const MULTICAST6: &[&str] = &["ff02::1", "ff02::1:ff00:1", "ff05::fb"];
/// IPv6 spellings of IPv4 and near misses: mapped, compatible, the
/// unspecified and loopback addresses (which are not compatible ones), and
/// addresses one byte away from the mapped block.
const V4_IN_V6: &[&str] = &[
    "::ffff:10.77.0.2",
    "::ffff:192.0.2.9",
    "::ffff:10.77.0.1",
    "::ffff:224.0.0.5",
    "::ffff:255.255.255.255",
    "::10.77.0.2",
    "::0.0.0.2",
    "::",
    "::1",
    "0:0:1::ffff:e000:1",
    "0:0:0:0:1:ffff:a4d:1",
    "::fffe:a4d:2",
];
const PEERS: &[&str] = &[
    "10.77.0.0/24",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "192.0.2.9/32",
    "fd77::/64",
    "::/0",
    "2001:db8::/32",
    "fe80::/10",
    "::ffff:10.77.0.0/120",
];
const DPORTS: &[u16] = &[22, 53, 80, 443, 1000, 1500, 8080];
const VIDS: &[u16] = &[7, 100, 1000, 4094];
/// ICMP(v6) types worth hitting: echo, errors, ND, MLD.
const ICMP4_TYPES: &[u8] = &[0, 3, 8, 11, 13];
const ICMP6_TYPES: &[u8] = &[
    1, 2, 3, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 143, 144,
];
/// Values for an IPv6 next-header field: extension headers (AH included),
/// "no next header", transports, ICMP of both families.
const NEXTHDRS: &[u8] = &[0, 43, 44, 51, 59, 60, 6, 17, 58, 1, 132];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// One batch's configuration: policy, enforcement, audit, VLANs, host
/// addresses, failsafe ports.
pub fn config(rng: &mut Rng) -> Config {
    let host_addrs = HOSTS
        .iter()
        .filter(|_| rng.chance(70))
        .map(|s| ip(s))
        .collect();
    let vlans = VIDS.iter().copied().filter(|_| rng.chance(40)).collect();
    let failsafe_pool = [
        (Direction::Ingress, 6, 22),
        (Direction::Egress, 17, 53),
        (Direction::Ingress, 17, 53),
        (Direction::Ingress, 132, 80),
    ];
    let failsafe = failsafe_pool
        .into_iter()
        .filter(|_| rng.chance(25))
        .collect();
    Config {
        enforce_ingress: rng.chance(80),
        enforce_egress: rng.chance(70),
        audit_global: rng.chance(10),
        audit_link: rng.chance(10),
        drop_non_ip: rng.chance(30),
        vlan_allow_all: rng.chance(10),
        vlans,
        host_addrs,
        failsafe,
        rules: rules(rng),
    }
}

/// Up to 6 rules (rarely none), ids unique by construction.
fn rules(rng: &mut Rng) -> RuleSet {
    let n = if rng.chance(10) {
        0
    } else {
        1 + rng.below(6) as u32
    };
    let rules = (0..n)
        .map(|i| {
            let peers = (0..1 + rng.below(2))
                .map(|_| {
                    let cidr: ipnet::IpNet = rng.pick(PEERS).parse().expect("peer literal");
                    let except = match cidr.to_string().as_str() {
                        "10.77.0.0/24" if rng.chance(30) => {
                            vec!["10.77.0.9/32".parse().expect("literal")]
                        }
                        "fd77::/64" if rng.chance(30) => {
                            vec!["fd77::2/128".parse().expect("literal")]
                        }
                        _ => vec![],
                    };
                    CidrSet::new(cidr, except)
                })
                .collect();
            let ports = if rng.chance(25) {
                vec![]
            } else {
                (0..1 + rng.below(2)).map(|_| port_match(rng)).collect()
            };
            Rule {
                id: 1 + i * 10 + rng.below(5) as u32,
                direction: rng.pick(&Direction::ALL),
                action: if rng.chance(45) {
                    Action::Deny
                } else {
                    Action::Allow
                },
                peers,
                ports,
            }
        })
        .collect();
    RuleSet::new(rules)
}

fn port_match(rng: &mut Rng) -> PortMatch {
    match rng.below(6) {
        // A protocol without ports (Cilium's extended protocols), as the
        // random frames carry them.
        5 => PortMatch::Proto { proto: rng.pick(&[2, 47, 50, 103, 112]) },
        0 => PortMatch::Icmp {
            family: IcmpFamily::V4,
            icmp_type: rng.pick(ICMP4_TYPES),
        },
        1 => PortMatch::Icmp {
            family: IcmpFamily::V6,
            icmp_type: rng.pick(ICMP6_TYPES),
        },
        _ => {
            let proto = rng.pick(&[L4Proto::Tcp, L4Proto::Udp, L4Proto::Sctp, L4Proto::Any]);
            let port: u16 = rng.pick(&[0, 22, 53, 80, 443, 1000]);
            let end = rng
                .chance(30)
                .then(|| port.saturating_add(rng.below(2000) as u16));
            PortMatch::l4(proto, port, end)
        }
    }
}

/// A datagram's frames for one direction: one frame, or fragments in any
/// order (some missing, some twice).
#[derive(Debug, Clone)]
pub struct Case {
    pub dir: Direction,
    pub frames: Vec<Vec<u8>>,
}

pub fn case(rng: &mut Rng, cfg: &Config) -> Case {
    let dir = rng.pick(&Direction::ALL);
    let frames = match rng.below(100) {
        0..=3 => vec![non_ip(rng, cfg)],
        4..=6 => vec![garbage_ip(rng)],
        _ => ip_frames(rng, cfg, dir),
    };
    Case { dir, frames }
}

fn ip_frames(rng: &mut Rng, cfg: &Config, dir: Direction) -> Vec<Vec<u8>> {
    let v6 = rng.chance(50);
    let (local, remote) = (local_addr(rng, v6), remote_addr(rng, v6));
    let (src, dst) = match dir {
        Direction::Ingress => (remote, local),
        Direction::Egress => (local, remote),
    };
    let mut f = base(rng, src, dst);
    let any = rng.next() as u8;
    f = f.ttl(rng.pick(&[1, 1, 64, 255, 255, any]));
    f = f.ident(rng.next() as u32);
    if !v6 && rng.chance(10) {
        f = f.dont_fragment();
    }
    let ntags = if rng.chance(75) {
        0
    } else {
        1 + rng.below(5) as usize
    };
    for _ in 0..ntags {
        f = f.tag(rng.pick(&[0x8100, 0x88a8]), tci(rng, cfg));
    }
    if !v6 && rng.chance(20) {
        let opts: Vec<u8> = (0..1 + rng.below(40)).map(|_| rng.next() as u8).collect();
        f = f.ipv4_options(&opts);
    }
    if v6 && rng.chance(30) {
        let chain: Vec<Ext6> = (0..1 + rng.below(10)).map(|_| ext6(rng)).collect();
        f = f.ipv6_ext(&chain);
    }
    let o = f.offsets();
    let shape = Shape {
        l3: o.l3,
        l4: o.l4,
        v6,
    };
    let mut frames = vec![];
    let body = o.len - o.l4;
    let size = rng.pick(&[8, 16, 32, 48]);
    if rng.chance(20) && body > size {
        let mut pieces = f.fragments(size);
        rng.shuffle(&mut pieces);
        if rng.chance(30) {
            pieces.truncate(1);
        } else if rng.chance(30) {
            pieces.remove(rng.index(pieces.len()));
        }
        if rng.chance(20) && !pieces.is_empty() {
            let again = pieces[rng.index(pieces.len())].clone();
            pieces.push(again);
        }
        // The fragment header sits between the chain and L4.
        let shape = Shape {
            l4: shape.l4 + if v6 { 8 } else { 0 },
            ..shape
        };
        frames.extend(pieces.into_iter().take(8).map(|p| mutate(rng, p, shape)));
    } else {
        frames.push(mutate(rng, f.build(), shape));
    }
    frames
}

/// PCP, DEI and a VID: half of them priority tags (VID 0), then allowed
/// VIDs, then any.
fn tci(rng: &mut Rng, cfg: &Config) -> u16 {
    let vid = match rng.below(4) {
        0 | 1 => 0,
        2 if !cfg.vlans.is_empty() => rng.pick(&cfg.vlans),
        _ => 1 + rng.below(4095) as u16,
    };
    (rng.below(8) as u16) << 13 | (rng.below(2) as u16) << 12 | vid
}

fn ext6(rng: &mut Rng) -> Ext6 {
    match rng.below(6) {
        0 => Ext6::HopByHop,
        1 | 2 => Ext6::DestOpts,
        3 => Ext6::Routing,
        4 => Ext6::Fragment {
            offset: 0,
            more: false,
            id: rng.next() as u32,
        },
        _ => Ext6::Fragment {
            offset: rng.below(3) as u16,
            more: rng.chance(50),
            id: rng.next() as u32,
        },
    }
}

/// The host side: host addresses (configured or not), multicast, someone
/// else's address (forwarded), IPv4 in IPv6 clothes, anything.
fn local_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    let hosts: Vec<&str> = HOSTS
        .iter()
        .copied()
        .filter(|h| h.contains(':') == v6)
        .collect();
    let (remotes, multicast) = if v6 {
        (REMOTES6, MULTICAST6)
    } else {
        (REMOTES4, MULTICAST4)
    };
    match rng.below(10) {
        0..=4 => ip(rng.pick(&hosts)),
        5 | 6 => ip(rng.pick(multicast)),
        7 => ip(rng.pick(remotes)),
        8 if v6 => ip(rng.pick(V4_IN_V6)),
        _ => random_addr(rng, v6),
    }
}

/// The other side: peers in and out of the rules' CIDRs, link-local,
/// IPv4 in IPv6 clothes, anything.
fn remote_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    let (remotes, multicast) = if v6 {
        (REMOTES6, MULTICAST6)
    } else {
        (REMOTES4, MULTICAST4)
    };
    match rng.below(10) {
        0..=5 => ip(rng.pick(remotes)),
        6 if v6 => ip(rng.pick(V4_IN_V6)),
        7 if v6 => ip(rng.pick(V4_IN_V6)),
        8 => ip(rng.pick(multicast)),
        _ => random_addr(rng, v6),
    }
}

fn random_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(
            u128::from(rng.next()) << 64 | u128::from(rng.next()),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(rng.next() as u32))
    }
}

/// The L4 content.
fn base(rng: &mut Rng, src: IpAddr, dst: IpAddr) -> Frame {
    let v6 = src.is_ipv6();
    let sport = rng.next() as u16;
    let dport = if rng.chance(85) {
        rng.pick(DPORTS)
    } else {
        rng.next() as u16
    };
    let payload: Vec<u8> = if rng.chance(40) {
        (0..rng.below(120)).map(|_| rng.next() as u8).collect()
    } else {
        vec![]
    };
    let f = match rng.below(13) {
        0..=2 => {
            let flags = if rng.chance(50) {
                rng.pick(&[
                    TcpFlags::SYN,
                    TcpFlags::SYN_ACK,
                    TcpFlags::ACK,
                    TcpFlags::RST,
                    TcpFlags::FIN | TcpFlags::ACK,
                ])
            } else {
                TcpFlags(rng.next() as u8)
            };
            Frame::tcp(src, dst, sport, dport, flags)
        }
        3 | 4 => Frame::udp(src, dst, sport, dport),
        5 => Frame::sctp(src, dst, sport, dport),
        6 if rng.chance(50) => Frame::echo_request(src, dst, sport, 1),
        6 => Frame::echo_reply(src, dst, sport, 1),
        7 => {
            let err = rng.pick(&[
                IcmpError::TooBig { mtu: 1280 },
                IcmpError::TimeExceeded,
                IcmpError::PortUnreachable,
            ]);
            Frame::icmp_error(
                src,
                dst,
                err,
                &Frame::tcp(dst, src, dport, sport, TcpFlags::SYN),
            )
        }
        8 => match (src, dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let kind = rng.pick(&[
                    Nd::RouterSolicit,
                    Nd::RouterAdvert,
                    Nd::NeighborSolicit { target: d },
                    Nd::NeighborAdvert { target: s },
                ]);
                Frame::nd(s, d, kind)
            }
            _ => Frame::echo_request(src, dst, sport, 2),
        },
        9 | 10 => {
            // Any ICMP(v6) type by hand: MLD and ND types with any hop
            // limit, and types nothing knows.
            let t = if rng.chance(80) {
                rng.pick(if v6 { ICMP6_TYPES } else { ICMP4_TYPES })
            } else {
                rng.next() as u8
            };
            let mut body = vec![t, rng.below(3) as u8, 0, 0, 0, 0, 0, 0];
            body.extend(&payload);
            return Frame::raw_ip(src, dst, if v6 { 58 } else { 1 }).payload(body);
        }
        11 => {
            // ICMP of the other family.
            let body: Vec<u8> = (0..8 + rng.below(8)).map(|_| rng.next() as u8).collect();
            return Frame::raw_ip(src, dst, if v6 { 1 } else { 58 }).payload(body);
        }
        _ => {
            let proto = if rng.chance(70) {
                rng.pick(&[47, 50, 59, 0, 43, 44, 51, 60, 103])
            } else {
                rng.next() as u8
            };
            let body: Vec<u8> = (0..rng.below(48)).map(|_| rng.next() as u8).collect();
            return Frame::raw_ip(src, dst, proto).payload(body);
        }
    };
    f.payload(payload)
}

/// Where the layers start in a frame before mutation.
#[derive(Debug, Clone, Copy)]
struct Shape {
    l3: usize,
    l4: usize,
    v6: bool,
}

/// Zero to a few byte mutations, then maybe padding or a truncation.
fn mutate(rng: &mut Rng, mut f: Vec<u8>, s: Shape) -> Vec<u8> {
    if rng.chance(55) {
        return f;
    }
    for _ in 0..1 + rng.below(3) {
        let l3 = s.l3;
        match rng.below(9) {
            0 if !s.v6 => {
                // tot_len: 0 (to the end), random, or off by a little.
                let len = f.len() - l3;
                let v = match rng.below(3) {
                    0 => 0,
                    1 => rng.next() as usize & 0xffff,
                    _ => (len + rng.below(9) as usize).saturating_sub(4),
                };
                set16(&mut f, l3 + 2, v as u16);
            }
            0 => {
                let len = f.len() - l3 - 40;
                let v = match rng.below(3) {
                    0 => 0,
                    1 => rng.next() as usize & 0xffff,
                    _ => (len + rng.below(9) as usize).saturating_sub(4),
                };
                set16(&mut f, l3 + 4, v as u16);
            }
            1 => {
                // Version and IHL nibbles.
                let b = if rng.chance(50) {
                    rng.next() as u8
                } else {
                    f[l3] & 0xf0 | rng.below(16) as u8
                };
                set8(&mut f, l3, b);
            }
            2 if !s.v6 => {
                // Fragment offset and flags.
                let v = match rng.below(3) {
                    0 => 0x2000,
                    1 => rng.below(4) as u16,
                    _ => rng.next() as u16,
                };
                set16(&mut f, l3 + 6, v);
            }
            2 => {
                // A next-header field of the chain, or an extension length.
                let fields = chain6(&f, l3);
                if let Some(&(at, is_ext)) = fields.get(rng.index(fields.len())) {
                    let any = rng.next() as u8;
                    if is_ext && rng.chance(50) {
                        set8(&mut f, at + 1, rng.pick(&[0, 1, 2, 255, any]));
                    } else {
                        let v = if rng.chance(80) {
                            rng.pick(NEXTHDRS)
                        } else {
                            any
                        };
                        set8(&mut f, at, v);
                    }
                }
            }
            3 if !s.v6 => {
                let any = rng.next() as u8;
                set8(&mut f, l3 + 9, rng.pick(&[1, 6, 17, 58, 132, any]));
            }
            3 => set8(&mut f, l3 + 7, rng.pick(&[0, 1, 254, 255])),
            4 => set8(&mut f, s.l4 + 12, (rng.below(16) as u8) << 4), // TCP data offset
            5 => set8(
                &mut f,
                s.l4,
                rng.pick(if s.v6 { ICMP6_TYPES } else { ICMP4_TYPES }),
            ),
            6 => {
                let at = l3 + rng.index(f.len().saturating_sub(l3).max(1));
                set8(&mut f, at, rng.next() as u8);
            }
            7 => {
                // The EtherType (or TPID) in front of the IP header.
                let any = rng.next() as u16;
                let v = rng.pick(&[0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, any]);
                set16(&mut f, l3 - 2, v);
            }
            _ => {}
        }
    }
    if rng.chance(25) {
        // Ethernet padding behind the IP packet.
        f.extend((0..1 + rng.below(24)).map(|_| rng.next() as u8));
    } else if rng.chance(60) {
        // A cut at (or near) a layer boundary, or anywhere.
        let marks = [
            s.l3 - 4,
            s.l3,
            s.l3 + 20,
            s.l3 + 40,
            s.l4,
            s.l4 + 4,
            s.l4 + 8,
            s.l4 + 20,
        ];
        let at = if rng.chance(70) {
            (rng.pick(&marks) + rng.below(7) as usize).saturating_sub(3)
        } else {
            rng.index(f.len())
        };
        f.truncate(at.max(14));
    }
    f
}

/// Positions of the IPv6 next-header fields in the frame: (offset, whether
/// it is inside an extension header, whose length byte follows).
fn chain6(f: &[u8], l3: usize) -> Vec<(usize, bool)> {
    let mut out = vec![(l3 + 6, false)];
    let (mut next, mut at) = (f.get(l3 + 6).copied().unwrap_or(59), l3 + 40);
    while matches!(next, 0 | 43 | 44 | 51 | 60) && at + 2 <= f.len() && out.len() < 12 {
        out.push((at, true));
        let len = match next {
            44 => 8,
            51 => (usize::from(f[at + 1]) + 2) * 4,
            _ => (usize::from(f[at + 1]) + 1) * 8,
        };
        next = f[at];
        at += len;
    }
    out
}

fn set8(f: &mut [u8], at: usize, v: u8) {
    if let Some(b) = f.get_mut(at) {
        *b = v;
    }
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    set8(f, at, (v >> 8) as u8);
    set8(f, at + 1, v as u8);
}

/// A frame of another EtherType (ARP, LLDP, an 802.3 length, anything),
/// maybe behind tags.
fn non_ip(rng: &mut Rng, cfg: &Config) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for _ in 0..rng.below(3) {
        f.extend(rng.pick(&[0x8100u16, 0x88a8]).to_be_bytes());
        f.extend(tci(rng, cfg).to_be_bytes());
    }
    let any = rng.next() as u16;
    f.extend(
        rng.pick(&[0x0806u16, 0x88cc, 0x8035, 0x0042, any])
            .to_be_bytes(),
    );
    f.extend((0..rng.below(60)).map(|_| rng.next() as u8));
    f
}

/// An IP EtherType followed by anything.
fn garbage_ip(rng: &mut Rng) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend(rng.pick(&[0x0800u16, 0x86dd]).to_be_bytes());
    let n = 20 + rng.below(60);
    f.extend((0..n).map(|_| rng.next() as u8));
    if rng.chance(70) {
        // Mostly with the right version, so that the parse gets further.
        f[14] = if f[13] == 0x00 {
            0x40 | (f[14] & 0x0f)
        } else {
            0x60 | (f[14] & 0x0f)
        };
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_varied() {
        let run = |seed| {
            let mut rng = Rng(seed);
            let cfg = config(&mut rng);
            (0..200)
                .map(|_| case(&mut rng, &cfg).frames)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let frames: Vec<Vec<u8>> = run(9).into_iter().flatten().collect();
        assert!(frames.iter().any(|f| f[12..14] == [0x88, 0xa8]), "S-tags");
        assert!(frames.iter().any(|f| f.len() < 40), "truncations");
        assert!(frames.iter().any(|f| f.len() > 100), "long frames");
    }
}
