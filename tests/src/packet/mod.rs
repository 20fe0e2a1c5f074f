//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN` and AF_PACKET injection.
//!
//! ```
//! use hostfwd_tests::packet::{Frame, TcpFlags, Ext6};
//! let src = "10.77.0.2".parse().unwrap();
//! let dst = "10.77.0.1".parse().unwrap();
//! let syn = Frame::tcp(src, dst, 40000, 22, TcpFlags::SYN).vlan(1000).build();
//! let frags = Frame::udp(src, dst, 5000, 53).payload(vec![7; 100]).fragments(48);
//! let v6 = Frame::udp("fd77::2".parse().unwrap(), "fd77::1".parse().unwrap(), 1, 2)
//!     .ipv6_ext(&[Ext6::DestOpts; 20])
//!     .build();
//! ```
//!
//! [`Frame`] is a plain description; [`Frame::build`] serializes it. L4
//! headers and checksums come from etherparse's header types (`TcpHeader`,
//! `UdpHeader`, `Icmpv4Header`, `Icmpv6Header`) and the IPv4 header from
//! `Ipv4Header`; etherparse's `PacketBuilder` is not used because it cannot
//! express fragments, extension chains, SCTP or neighbour discovery, and one
//! code path for all cases is simpler. Ethernet/VLAN bytes, IPv6 extension
//! headers, SCTP (CRC32c) and ND bodies are written by hand.
//!
//! Checksums are correct for every well-formed case (IPv4 header, TCP, UDP,
//! ICMP, ICMPv6 with the pseudo header, SCTP CRC32c); malformed variants
//! ([`Frame::ihl`], truncation, [`garbage`]) are derived from a correct frame.
//!
//! Building panics on impossible input (mixed address families, an IPv6-only
//! option on IPv4, a datagram over 64 KiB): these are bugs in the test.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    icmpv4, icmpv6, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type,
    IpFragOffset, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, TcpHeader, UdpHeader,
};

pub type Mac = [u8; 6];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q C-tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad S-tag (QinQ outer).
pub const ETH_P_8021AD: u16 = 0x88a8;

/// Default MACs when none are set: source `02:00:00:00:00:01`, destination
/// `00:00:00:00:00:00` (or the multicast/broadcast MAC of a multicast or
/// broadcast destination address). The destination is the address of
/// loopback, the device of BPF_PROG_TEST_RUN: the kernel classifies the
/// frame against it (`eth_type_trans`), and a unicast frame to any other MAC
/// is PACKET_OTHERHOST, which the datapath leaves to the kernel to drop.
pub const DEFAULT_SRC_MAC: Mac = [2, 0, 0, 0, 0, 1];
pub const DEFAULT_DST_MAC: Mac = [0; 6];

/// TCP flags, combinable with `|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const SYN_ACK: TcpFlags = TcpFlags(0x12);

    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// ICMP errors; the family follows the addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// v4: destination unreachable / fragmentation needed (3/4) with the
    /// next-hop MTU; v6: packet too big (2/0) with the MTU.
    TooBig { mtu: u32 },
    /// v4: time exceeded / TTL (11/0); v6: time exceeded / hop limit (3/0).
    TimeExceeded,
    /// v4: port unreachable (3/3); v6: destination unreachable / port (1/4).
    PortUnreachable,
}

/// ICMPv6 neighbour discovery messages (hop limit 255, as the kernel
/// requires). Each carries a source (or, for NA, target) link-layer address
/// option with the frame's source MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nd {
    /// Type 133.
    RouterSolicit,
    /// Type 134: hop limit 64, router lifetime 1800 s, no prefix options.
    RouterAdvert,
    /// Type 135.
    NeighborSolicit { target: Ipv6Addr },
    /// Type 136, flags Solicited|Override.
    NeighborAdvert { target: Ipv6Addr },
}

/// IPv6 extension headers, in chain order (see [`Frame::ipv6_ext`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext6 {
    /// Hop-by-hop options (8 bytes, one PadN option).
    HopByHop,
    /// Destination options (8 bytes, one PadN option).
    DestOpts,
    /// Routing header, 8 bytes, type 253 (experimental), segments left 0:
    /// receivers skip it.
    Routing,
    /// Fragment header as given (offset in 8-byte units). [`Frame::fragments`]
    /// adds its own; this is for hand-made fragments.
    Fragment { offset: u16, more: bool, id: u32 },
}

impl Ext6 {
    /// IP protocol number of this header.
    pub fn proto(self) -> u8 {
        match self {
            Ext6::HopByHop => 0,
            Ext6::Routing => 43,
            Ext6::Fragment { .. } => 44,
            Ext6::DestOpts => 60,
        }
    }

    fn bytes(self, next: u8) -> [u8; 8] {
        match self {
            Ext6::HopByHop | Ext6::DestOpts => [next, 0, 1, 4, 0, 0, 0, 0],
            Ext6::Routing => [next, 0, 253, 0, 0, 0, 0, 0],
            Ext6::Fragment { offset, more, id } => {
                let f = (offset << 3) | u16::from(more);
                let [f0, f1] = f.to_be_bytes();
                let [i0, i1, i2, i3] = id.to_be_bytes();
                [next, 0, f0, f1, i0, i1, i2, i3]
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
        vtag: u32,
    },
    Echo {
        reply: bool,
        id: u16,
        seq: u16,
    },
    Error {
        err: IcmpError,
        quoted: Vec<u8>,
    },
    Nd(Nd),
    Raw {
        proto: u8,
    },
}

/// Byte offsets of the layers in a built frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// Start of the IP header (after MACs, tags and EtherType).
    pub l3: usize,
    /// Start of the L4 header (after IPv4 options / IPv6 extension headers).
    pub l4: usize,
    /// Frame length.
    pub len: usize,
}

/// Description of one Ethernet frame carrying an IPv4 or IPv6 packet.
/// Constructors pick the L4 content; chained methods adjust the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    src_mac: Mac,
    dst_mac: Option<Mac>,
    /// (TPID, TCI), outermost first.
    tags: Vec<(u16, u16)>,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ident: u32,
    dont_frag: bool,
    v4_options: Vec<u8>,
    v6_exts: Vec<Ext6>,
    ihl: Option<u8>,
    l4: L4,
    payload: Vec<u8>,
}

impl Frame {
    fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Frame {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "mixed address families: {src} -> {dst}"
        );
        Frame {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: None,
            tags: Vec::new(),
            src,
            dst,
            ttl: 64,
            ident: 0x4242,
            dont_frag: false,
            v4_options: Vec::new(),
            v6_exts: Vec::new(),
            ihl: None,
            l4,
            payload: Vec::new(),
        }
    }

    /// TCP segment; seq 1000, and ack 2000 when `ACK` is set (see [`Frame::seq`]).
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: TcpFlags) -> Frame {
        let ack = if flags.contains(TcpFlags::ACK) {
            2000
        } else {
            0
        };
        Frame::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
                seq: 1000,
                ack,
            },
        )
    }

    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Frame {
        Frame::new(src, dst, L4::Udp { sport, dport })
    }

    /// SCTP common header only (12 bytes, verification tag 0x01020304,
    /// CRC32c over header and payload); add chunks with [`Frame::payload`].
    pub fn sctp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Frame {
        Frame::new(
            src,
            dst,
            L4::Sctp {
                sport,
                dport,
                vtag: 0x0102_0304,
            },
        )
    }

    /// ICMP / ICMPv6 echo request.
    pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Frame {
        Frame::new(
            src,
            dst,
            L4::Echo {
                reply: false,
                id,
                seq,
            },
        )
    }

    /// ICMP / ICMPv6 echo reply.
    pub fn echo_reply(src: IpAddr, dst: IpAddr, id: u16, seq: u16) -> Frame {
        Frame::new(
            src,
            dst,
            L4::Echo {
                reply: true,
                id,
                seq,
            },
        )
    }

    /// ICMP error from `src` to `dst` quoting `original`: its IP header
    /// (with options / extension headers) and the first 8 bytes of its L4
    /// header. E.g. a router `src` answering `original` (sent by `dst`).
    pub fn icmp_error(src: IpAddr, dst: IpAddr, err: IcmpError, original: &Frame) -> Frame {
        assert_eq!(
            src.is_ipv4(),
            original.src.is_ipv4(),
            "ICMP error family differs from the quoted packet"
        );
        let o = original.offsets();
        let mut quoted = original.ip_packet();
        quoted.truncate(o.l4 - o.l3 + 8);
        Frame::new(src, dst, L4::Error { err, quoted })
    }

    /// ICMPv6 neighbour discovery. Hop limit 255. For an NS to a
    /// solicited-node address use [`solicited_node`]; multicast destinations
    /// get the matching `33:33:..` MAC unless [`Frame::macs`] says otherwise.
    pub fn nd(src: Ipv6Addr, dst: Ipv6Addr, kind: Nd) -> Frame {
        let mut f = Frame::new(src.into(), dst.into(), L4::Nd(kind));
        f.ttl = 255;
        f
    }

    /// IP packet with protocol `proto` and the payload as L4 (no header).
    pub fn raw_ip(src: IpAddr, dst: IpAddr, proto: u8) -> Frame {
        Frame::new(src, dst, L4::Raw { proto })
    }

    /// Source and destination MAC.
    pub fn macs(mut self, src: Mac, dst: Mac) -> Frame {
        self.src_mac = src;
        self.dst_mac = Some(dst);
        self
    }

    /// Add an 802.1Q tag (TPID 0x8100) with `vid` (PCP 0). Tags are added
    /// from the outside in: `.vlan(10).vlan(20)` is outer 10, inner 20.
    pub fn vlan(self, vid: u16) -> Frame {
        self.tag(ETH_P_8021Q, vid & 0x0fff)
    }

    /// QinQ: an 802.1ad S-tag (0x88a8) with `outer`, then an 802.1Q C-tag
    /// with `inner`.
    pub fn qinq(self, outer: u16, inner: u16) -> Frame {
        self.tag(ETH_P_8021AD, outer & 0x0fff)
            .tag(ETH_P_8021Q, inner & 0x0fff)
    }

    /// 802.1Q priority tag: VID 0, PCP `pcp` (0..=7).
    pub fn priority_tag(self, pcp: u8) -> Frame {
        self.tag(ETH_P_8021Q, u16::from(pcp & 7) << 13)
    }

    /// Any tag: TPID and the full TCI (PCP << 13 | DEI << 12 | VID).
    pub fn tag(mut self, tpid: u16, tci: u16) -> Frame {
        self.tags.push((tpid, tci));
        self
    }

    /// L4 payload (after the L4 header; for [`Frame::raw_ip`] the whole L4).
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Frame {
        self.payload = payload.into();
        self
    }

    /// TTL / hop limit.
    pub fn ttl(mut self, ttl: u8) -> Frame {
        self.ttl = ttl;
        self
    }

    /// TCP sequence and acknowledgment numbers.
    pub fn seq(mut self, seq: u32, ack: u32) -> Frame {
        if let L4::Tcp { seq: s, ack: a, .. } = &mut self.l4 {
            *s = seq;
            *a = ack;
        }
        self
    }

    /// IPv4 identification (low 16 bits) / IPv6 fragment identification.
    pub fn ident(mut self, id: u32) -> Frame {
        self.ident = id;
        self
    }

    /// Set the IPv4 DF bit.
    pub fn dont_fragment(mut self) -> Frame {
        self.dont_frag = true;
        self
    }

    /// IPv4 options (IHL > 5), padded with zeros (EOL) to a multiple of 4;
    /// at most 40 bytes. E.g. `[1, 1, 1, 1]` (four NOPs) or a router alert
    /// `[148, 4, 0, 0]`.
    pub fn ipv4_options(mut self, options: &[u8]) -> Frame {
        assert!(self.src.is_ipv4(), "IPv4 options on an IPv6 frame");
        let mut o = options.to_vec();
        o.resize(options.len().div_ceil(4) * 4, 0);
        assert!(o.len() <= 40, "IPv4 options longer than 40 bytes");
        self.v4_options = o;
        self
    }

    /// Override the IPv4 IHL nibble after building (e.g. 4 or 0: invalid,
    /// or larger than the real header). The header checksum stays the one of
    /// the real header, the header bytes are unchanged.
    pub fn ihl(mut self, ihl: u8) -> Frame {
        assert!(self.src.is_ipv4(), "IHL on an IPv6 frame");
        self.ihl = Some(ihl & 0x0f);
        self
    }

    /// IPv6 extension headers between the IPv6 header and L4, in order
    /// (e.g. `&[Ext6::HopByHop, Ext6::Routing, Ext6::DestOpts]`, or
    /// `&[Ext6::DestOpts; 20]` for a pathological chain).
    pub fn ipv6_ext(mut self, exts: &[Ext6]) -> Frame {
        assert!(
            self.src.is_ipv6(),
            "IPv6 extension headers on an IPv4 frame"
        );
        self.v6_exts = exts.to_vec();
        self
    }

    /// The serialized frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = self.l2();
        f.extend(self.ip_packet());
        f
    }

    /// The IP packet alone (no Ethernet header), e.g. for a raw IP socket.
    pub fn ip_packet(&self) -> Vec<u8> {
        self.ip(&self.l4_bytes(), None, &self.v6_exts)
    }

    /// Where the layers start in [`Frame::build`]'s output.
    pub fn offsets(&self) -> Offsets {
        let l3 = 14 + 4 * self.tags.len();
        let ip_hdr = if self.src.is_ipv4() {
            20 + self.v4_options.len()
        } else {
            40 + 8 * self.v6_exts.len()
        };
        Offsets {
            l3,
            l4: l3 + ip_hdr,
            len: l3 + self.ip_packet().len(),
        }
    }

    /// The same datagram split into fragments of at most `size` L4 bytes
    /// each (rounded down to a multiple of 8, at least 8), as full frames in
    /// order: the first has the L4 header and MF set, later ones have
    /// offset > 0, all share the identification ([`Frame::ident`]). The L4
    /// checksum is the one of the whole datagram. IPv6: the fragment header
    /// goes after any [`Frame::ipv6_ext`] headers. Panics if the datagram
    /// fits in one fragment (add payload).
    pub fn fragments(&self, size: usize) -> Vec<Vec<u8>> {
        let size = (size / 8 * 8).max(8);
        let body = self.l4_bytes();
        assert!(
            body.len() > size,
            "datagram of {} L4 bytes fits one {size}-byte fragment",
            body.len()
        );
        let n = body.len().div_ceil(size);
        body.chunks(size)
            .enumerate()
            .map(|(i, piece)| {
                let frag = ((i * size / 8) as u16, i + 1 < n);
                let mut exts = self.v6_exts.clone();
                if self.src.is_ipv6() {
                    exts.push(Ext6::Fragment {
                        offset: frag.0,
                        more: frag.1,
                        id: self.ident,
                    });
                }
                let mut f = self.l2();
                f.extend(self.ip(piece, Some(frag), &exts));
                f
            })
            .collect()
    }

    fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Sctp { .. } => 132,
            L4::Echo { .. } | L4::Error { .. } | L4::Nd(_) => {
                if self.src.is_ipv4() {
                    1
                } else {
                    58
                }
            }
            L4::Raw { proto } => *proto,
        }
    }

    fn l2(&self) -> Vec<u8> {
        let dst = self.dst_mac.unwrap_or_else(|| default_dst_mac(self.dst));
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&self.src_mac);
        for (tpid, tci) in &self.tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let ethertype = if self.src.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// IP header(s) + `body`; `frag` = (offset in 8-byte units, more).
    fn ip(&self, body: &[u8], frag: Option<(u16, bool)>, exts: &[Ext6]) -> Vec<u8> {
        let proto = self.proto();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(0, self.ttl, IpNumber(proto), s.octets(), d.octets())
                    .expect("zero payload length");
                h.identification = self.ident as u16;
                h.dont_fragment = self.dont_frag;
                if let Some((off, more)) = frag {
                    h.fragment_offset =
                        IpFragOffset::try_new(off).expect("fragment offset over 13 bits");
                    h.more_fragments = more;
                }
                h.options = etherparse::Ipv4Options::try_from(&self.v4_options[..])
                    .expect("IPv4 options: multiple of 4, at most 40");
                h.set_payload_len(body.len())
                    .expect("IPv4 payload over 64 KiB");
                h.header_checksum = h.calc_header_checksum();
                let mut p = h.to_bytes().to_vec();
                if let Some(ihl) = self.ihl {
                    p[0] = 0x40 | ihl;
                }
                p.extend_from_slice(body);
                p
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut chain = Vec::with_capacity(8 * exts.len() + body.len());
                for (i, e) in exts.iter().enumerate() {
                    let next = exts.get(i + 1).map_or(proto, |n| n.proto());
                    chain.extend_from_slice(&e.bytes(next));
                }
                chain.extend_from_slice(body);
                let mut h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: 0,
                    next_header: IpNumber(exts.first().map_or(proto, |e| e.proto())),
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                };
                h.set_payload_length(chain.len())
                    .expect("IPv6 payload over 64 KiB");
                let mut p = h.to_bytes().to_vec();
                p.extend(chain);
                p
            }
            _ => unreachable!("families checked in Frame::new"),
        }
    }

    /// L4 header + payload with the checksum over the whole datagram.
    fn l4_bytes(&self) -> Vec<u8> {
        let pl = &self.payload;
        let mut out = Vec::with_capacity(64 + pl.len());
        match (&self.l4, self.src, self.dst) {
            (
                L4::Tcp {
                    sport,
                    dport,
                    flags,
                    seq,
                    ack,
                },
                src,
                dst,
            ) => {
                let mut h = TcpHeader::new(*sport, *dport, *seq, 64240);
                h.acknowledgment_number = *ack;
                h.fin = flags.contains(TcpFlags::FIN);
                h.syn = flags.contains(TcpFlags::SYN);
                h.rst = flags.contains(TcpFlags::RST);
                h.psh = flags.contains(TcpFlags::PSH);
                h.ack = flags.contains(TcpFlags::ACK);
                h.urg = flags.contains(TcpFlags::URG);
                h.checksum = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        h.calc_checksum_ipv4_raw(s.octets(), d.octets(), pl)
                    }
                    (s, d) => h.calc_checksum_ipv6_raw(v6(s), v6(d), pl),
                }
                .expect("TCP segment over 64 KiB");
                out.extend_from_slice(&h.to_bytes());
            }
            (L4::Udp { sport, dport }, src, dst) => {
                let len = u16::try_from(8 + pl.len()).expect("UDP datagram over 64 KiB");
                let mut h = UdpHeader {
                    source_port: *sport,
                    destination_port: *dport,
                    length: len,
                    checksum: 0,
                };
                h.checksum = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        h.calc_checksum_ipv4_raw(s.octets(), d.octets(), pl)
                    }
                    (s, d) => h.calc_checksum_ipv6_raw(v6(s), v6(d), pl),
                }
                .expect("UDP datagram over 64 KiB");
                out.extend_from_slice(&h.to_bytes());
            }
            (L4::Sctp { sport, dport, vtag }, _, _) => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&vtag.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(pl);
                // Linux stores the CRC32c little-endian (sctp_compute_cksum).
                let crc = crc32c(&out);
                out[8..12].copy_from_slice(&crc.to_le_bytes());
                return out;
            }
            (L4::Raw { .. }, _, _) => return pl.clone(),
            (l4, IpAddr::V4(_), _) => {
                let (t, body) = match l4 {
                    L4::Echo { reply, id, seq } => {
                        let e = IcmpEchoHeader { id: *id, seq: *seq };
                        (
                            if *reply {
                                Icmpv4Type::EchoReply(e)
                            } else {
                                Icmpv4Type::EchoRequest(e)
                            },
                            Vec::new(),
                        )
                    }
                    L4::Error { err, quoted } => (
                        match err {
                            IcmpError::TooBig { mtu } => Icmpv4Type::DestinationUnreachable(
                                icmpv4::DestUnreachableHeader::FragmentationNeeded {
                                    next_hop_mtu: *mtu as u16,
                                },
                            ),
                            IcmpError::TimeExceeded => Icmpv4Type::TimeExceeded(
                                icmpv4::TimeExceededCode::TtlExceededInTransit,
                            ),
                            IcmpError::PortUnreachable => Icmpv4Type::DestinationUnreachable(
                                icmpv4::DestUnreachableHeader::Port,
                            ),
                        },
                        quoted.clone(),
                    ),
                    _ => panic!("neighbour discovery is IPv6 only"),
                };
                let mut body = body;
                body.extend_from_slice(pl);
                out.extend_from_slice(&Icmpv4Header::with_checksum(t, &body).to_bytes());
                out.extend(body);
                return out;
            }
            (l4, src, dst) => {
                let mac = self.src_mac;
                let (t, mut body) = match l4 {
                    L4::Echo { reply, id, seq } => {
                        let e = IcmpEchoHeader { id: *id, seq: *seq };
                        (
                            if *reply {
                                Icmpv6Type::EchoReply(e)
                            } else {
                                Icmpv6Type::EchoRequest(e)
                            },
                            Vec::new(),
                        )
                    }
                    L4::Error { err, quoted } => (
                        match err {
                            IcmpError::TooBig { mtu } => Icmpv6Type::PacketTooBig { mtu: *mtu },
                            IcmpError::TimeExceeded => {
                                Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded)
                            }
                            IcmpError::PortUnreachable => Icmpv6Type::DestinationUnreachable(
                                icmpv6::DestUnreachableCode::Port,
                            ),
                        },
                        quoted.clone(),
                    ),
                    L4::Nd(nd) => nd_body(*nd, mac),
                    _ => unreachable!("handled above"),
                };
                body.extend_from_slice(pl);
                let h = Icmpv6Header::with_checksum(t, v6(src), v6(dst), &body)
                    .expect("ICMPv6 over 64 KiB");
                out.extend_from_slice(&h.to_bytes());
                out.extend(body);
                return out;
            }
        }
        out.extend_from_slice(pl);
        out
    }
}

/// ND message: type with bytes 5..8 (as etherparse's `Unknown`) and body.
fn nd_body(nd: Nd, mac: Mac) -> (Icmpv6Type, Vec<u8>) {
    let unknown = |type_u8, bytes5to8| Icmpv6Type::Unknown {
        type_u8,
        code_u8: 0,
        bytes5to8,
    };
    let lla = |kind: u8| [&[kind, 1][..], &mac[..]].concat();
    match nd {
        Nd::RouterSolicit => (unknown(133, [0; 4]), lla(1)),
        // cur hop limit 64, no M/O flags, router lifetime 1800 s; then
        // reachable time and retrans timer 0.
        Nd::RouterAdvert => (
            unknown(134, [64, 0, 0x07, 0x08]),
            [&[0u8; 8][..], &lla(1)].concat(),
        ),
        Nd::NeighborSolicit { target } => (
            unknown(135, [0; 4]),
            [&target.octets()[..], &lla(1)].concat(),
        ),
        Nd::NeighborAdvert { target } => (
            unknown(136, [0x60, 0, 0, 0]),
            [&target.octets()[..], &lla(2)].concat(),
        ),
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

fn default_dst_mac(dst: IpAddr) -> Mac {
    match dst {
        IpAddr::V4(a) if a == Ipv4Addr::BROADCAST => [0xff; 6],
        IpAddr::V4(a) if a.is_multicast() => {
            let o = a.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        IpAddr::V6(a) if a.is_multicast() => {
            let o = a.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
        _ => DEFAULT_DST_MAC,
    }
}

/// Solicited-node multicast address `ff02::1:ffXX:XXXX` of `addr`.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// `len` pseudo-random bytes (xorshift, deterministic per `seed`).
pub fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every prefix of `frame` shorter than it: `frame[..0]` .. `frame[..len-1]`.
pub fn truncations(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    (0..frame.len()).map(move |n| &frame[..n])
}

/// CRC32c (Castagnoli), as SCTP uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
