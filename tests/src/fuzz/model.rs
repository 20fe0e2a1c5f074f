//! The reference model of the datapath's verdict for one frame: what
//! `bpf/c/hostfwd.bpf.c` must decide, written as plainly as possible from the
//! frame's bytes and the configuration, with the policy step taken from the
//! rule set's own reference evaluator ([`RuleSet::evaluate`]).
//!
//! The order: (1) VLAN admission over up to four in-band tags, priority tags
//! skipped; (2) non-IP; (3) the fixed IP header up to the addresses, whose
//! errors are everybody's; (4) only the host's own packets go on, and for
//! them alone the rest of the parse (header lengths, options, extension
//! chain of at most eight headers, L4 header, all inside the IP packet) can
//! make them malformed, or a tiny first fragment; (5) IPv4-mapped and
//! -compatible remote IPv6 addresses; (6) later fragments follow their
//! first or pass on to reassembly; (7) ND/MLD as the RFCs send them; (8)
//! failsafe ports, enforcement, policy. Audit turns every drop into a pass.
//!
//! Conntrack is assumed empty (the harness flushes it before every case); it
//! changes no verdict within a case anyway: a repeated first fragment meets
//! the entry its first copy made, which admits exactly what the policy would
//! admit again. The fragment table is modelled ([`State`]), so that a
//! datagram's fragments can be fed in any order.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hostfwd::policy::model::{Direction, RuleSet};
use hostfwd::policy::Verdict;
use hostfwd_bpf::DropReason;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const MAX_TAGS: usize = 4;
const MAX_EXTHDRS: usize = 8;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const NEXTHDR_NONE: u8 = 59;

/// The configuration of ifindex 1 and of the datapath as a whole.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Link flags `L_ENFORCE_INGRESS` / `L_ENFORCE_EGRESS`.
    pub enforce_ingress: bool,
    pub enforce_egress: bool,
    /// Global audit mode, and the link's `L_AUDIT`.
    pub audit_global: bool,
    pub audit_link: bool,
    pub drop_non_ip: bool,
    /// `L_VLAN_ALLOW_ALL`.
    pub vlan_allow_all: bool,
    /// The VLAN allow set of the link.
    pub vlans: Vec<u16>,
    pub host_addrs: Vec<IpAddr>,
    /// (direction, protocol, destination port).
    pub failsafe: Vec<(Direction, u8, u16)>,
    pub rules: RuleSet,
}

impl Config {
    fn audit(&self) -> bool {
        self.audit_global || self.audit_link
    }

    fn link_enforces(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.enforce_ingress,
            Direction::Egress => self.enforce_egress,
        }
    }
}

/// What the datapath does with a frame, and what it counts and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the frame is dropped (never in audit mode).
    pub dropped: bool,
    /// The drop (or, in audit mode, would-be drop) reason; `None`: it passes.
    pub reason: Option<DropReason>,
    /// The deciding rule of a `policy-deny-rule` (or of a fragment following
    /// one); 0 otherwise.
    pub rule_id: u32,
    /// Whether the drop is counted and reported as audited.
    pub audit: bool,
}

impl Outcome {
    fn pass() -> Outcome {
        Outcome {
            dropped: false,
            reason: None,
            rule_id: 0,
            audit: false,
        }
    }

    fn drop(cfg: &Config, reason: DropReason, rule_id: u32) -> Outcome {
        let audit = cfg.audit();
        Outcome {
            dropped: !audit,
            reason: Some(reason),
            rule_id,
            audit,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            None => write!(f, "pass"),
            Some(r) => write!(
                f,
                "{} {}{}{}",
                if self.dropped { "drop" } else { "pass" },
                r.name(),
                if self.rule_id != 0 {
                    format!(" rule {}", self.rule_id)
                } else {
                    String::new()
                },
                if self.audit { " (audit)" } else { "" }
            ),
        }
    }
}

/// `hf_frag_key`: source, destination, identification, protocol.
type FragKey = ([u8; 16], [u8; 16], u32, u8);

/// The per-flow state of a case: `hf_frags`, (source, destination,
/// identification, protocol) of a first fragment -> its verdict (reason,
/// rule id), which later fragments follow; and whether the datapath may
/// have written conntrack or fragment entries (only frames that reach the
/// policy steps do), so that the harness need not flush after every case.
#[derive(Debug, Clone, Default)]
pub struct State {
    frags: HashMap<FragKey, (Option<DropReason>, u32)>,
    pub touched: bool,
    /// The step that let the last frame pass, for the harness's tally of
    /// what the frames exercised.
    pub passed_by: &'static str,
}

/// Whether `BPF_PROG_TEST_RUN` refuses to build an skb from the frame (so
/// the program never sees it): shorter than an Ethernet header, or an IP
/// EtherType without a whole IP header behind it.
pub fn test_run_refuses(frame: &[u8]) -> bool {
    if frame.len() < ETH_HLEN {
        return true;
    }
    match be16(frame, 12) {
        ETH_P_IP => frame.len() < ETH_HLEN + 20,
        ETH_P_IPV6 => frame.len() < ETH_HLEN + 40,
        _ => false,
    }
}

/// The verdict for one frame on ifindex 1 in direction `dir`, which may
/// change `state` (a first fragment records its verdict).
pub fn judge(frame: &[u8], dir: Direction, cfg: &Config, state: &mut State) -> Outcome {
    state.passed_by = "";
    let malformed = || Outcome::drop(cfg, DropReason::Malformed, 0);
    // 1. VLAN admission: in-band tags, priority tags (VID 0) skipped, the
    //    first tag with a VID decides.
    if frame.len() < ETH_HLEN {
        return malformed();
    }
    let mut ethertype = be16(frame, 12);
    let mut off = ETH_HLEN;
    let mut tags = 0;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        if tags == MAX_TAGS || frame.len() < off + 4 {
            return malformed();
        }
        let vid = be16(frame, off) & 0x0fff;
        if vid != 0 {
            if cfg.vlan_allow_all || cfg.vlans.contains(&vid) {
                state.passed_by = "allowed VID";
                return Outcome::pass();
            }
            return Outcome::drop(cfg, DropReason::VlanFiltered, 0);
        }
        ethertype = be16(frame, off + 2);
        off += 4;
        tags += 1;
    }
    // 2./3. Non-IP; the fixed IP header, up to the addresses.
    let parsed = match ethertype {
        ETH_P_IP => parse_ipv4(frame, off),
        ETH_P_IPV6 => parse_ipv6(frame, off),
        _ if cfg.drop_non_ip => return Outcome::drop(cfg, DropReason::NonIp, 0),
        _ => {
            state.passed_by = "non-IP";
            return Outcome::pass();
        }
    };
    let Some(p) = parsed else {
        return malformed();
    };
    // 4. Only the host's own traffic; the rest of the parse (header
    //    lengths, options, extension chain, L4) judges only it.
    let (local, remote) = match dir {
        Direction::Ingress => (p.daddr, p.saddr),
        Direction::Egress => (p.saddr, p.daddr),
    };
    if !is_local(frame, dir, &local, cfg) {
        state.passed_by = "not local";
        return Outcome::pass();
    }
    let l4 = match p.rest {
        Err(L4Error::Malformed) => return malformed(),
        // RFC 1858's tiny fragment: the rest of the datagram could decide
        // the ports.
        Err(L4Error::TinyFirstFragment) => return Outcome::drop(cfg, DropReason::Fragment, 0),
        Ok(l4) => l4,
    };
    // 5. IPv4 addresses in IPv6 clothes, from the other side.
    if p.family == 6 && is_v4_in_v6(&remote) {
        return Outcome::drop(cfg, DropReason::MappedAddress, 0);
    }
    // 6. Fragments: a later one follows its first, or goes on to the
    //    kernel's reassembly, which cannot complete without the first.
    let key = (p.saddr, p.daddr, p.frag_id, p.proto);
    if p.frag == Frag::Later {
        return match state.frags.get(&key) {
            Some((Some(reason), rule_id)) => Outcome::drop(cfg, *reason, *rule_id),
            Some((None, _)) => {
                state.passed_by = "later fragment of a passed one";
                Outcome::pass()
            }
            None => {
                state.passed_by = "later fragment to reassembly";
                Outcome::pass()
            }
        };
    }
    state.touched = true;
    let (reason, rule_id, passed_by) = decide(&p, &l4, remote, dir, cfg);
    state.passed_by = passed_by;
    if p.frag == Frag::First {
        state.frags.insert(key, (reason, rule_id));
    }
    match reason {
        None => Outcome::pass(),
        Some(r) => Outcome::drop(cfg, r, rule_id),
    }
}

/// Steps 7 and 8: link infrastructure, failsafe ports, policy.
fn decide(
    p: &Packet,
    l4: &L4,
    remote: [u8; 16],
    dir: Direction,
    cfg: &Config,
) -> (Option<DropReason>, u32, &'static str) {
    if p.family == 6 && p.proto == ICMPV6 {
        let infra = match l4.icmp_type {
            133..=137 => p.hop_limit == 255,
            // From a link-local or the unspecified address.
            130..=132 | 143 => {
                p.hop_limit == 1
                    && ((p.saddr[0] == 0xfe && p.saddr[1] & 0xc0 == 0x80) || p.saddr == [0; 16])
            }
            _ => false,
        };
        if infra {
            return (None, 0, "ND/MLD");
        }
    }
    if matches!(p.proto, TCP | UDP | SCTP) && cfg.failsafe.contains(&(dir, p.proto, l4.port)) {
        return (None, 0, "failsafe");
    }
    if !cfg.link_enforces(dir) {
        return (None, 0, "link not enforcing");
    }
    let remote = if p.family == 4 {
        IpAddr::V4(Ipv4Addr::new(
            remote[12], remote[13], remote[14], remote[15],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(remote))
    };
    match cfg.rules.evaluate(remote, dir, p.proto, l4.port) {
        Verdict::Allow(_) => (None, 0, "policy allow"),
        Verdict::NotEnforced => (None, 0, "policy not enforcing"),
        Verdict::Deny(id) => (Some(DropReason::PolicyDenyRule), id, ""),
        Verdict::NoMatch => (Some(DropReason::PolicyDenied), 0, ""),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frag {
    None,
    First,
    Later,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4Error {
    Malformed,
    /// A first fragment whose L4 header is malformed (too short).
    TinyFirstFragment,
}

/// What policy sees of the L4 header.
#[derive(Debug, Clone, Copy)]
struct L4 {
    /// Destination port, ICMP `type << 8 | code`, or 0.
    port: u16,
    icmp_type: u8,
}

/// An IP packet whose header was readable up to the addresses.
#[derive(Debug, Clone)]
struct Packet {
    family: u8,
    /// IPv4-mapped for IPv4, as the datapath keeps them.
    saddr: [u8; 16],
    daddr: [u8; 16],
    proto: u8,
    hop_limit: u8,
    frag: Frag,
    frag_id: u32,
    /// The rest of the parse (options, extension chain, L4 header).
    rest: Result<L4, L4Error>,
}

/// The IPv4 header at `off`; `None` if it is malformed before the
/// addresses are known (too short, not version 4).
fn parse_ipv4(f: &[u8], off: usize) -> Option<Packet> {
    if f.len() < off + 20 || f[off] >> 4 != 4 {
        return None;
    }
    let mut p = Packet {
        family: 4,
        saddr: mapped(&f[off + 12..off + 16]),
        daddr: mapped(&f[off + 16..off + 20]),
        proto: f[off + 9],
        hop_limit: f[off + 8],
        frag: Frag::None,
        frag_id: u32::from(be16(f, off + 4)),
        rest: Err(L4Error::Malformed),
    };
    let ihl = usize::from(f[off] & 0x0f) * 4;
    let tot_len = usize::from(be16(f, off + 2));
    // tot_len 0: to the end of the packet (BIG TCP, GSO).
    let end = if tot_len == 0 { f.len() } else { off + tot_len };
    if ihl < 20 || end < off + ihl || f.len() < end {
        return Some(p);
    }
    let frag = be16(f, off + 6);
    if frag & 0x1fff != 0 {
        p.frag = Frag::Later;
        p.rest = Ok(L4 {
            port: 0,
            icmp_type: 0,
        });
        return Some(p);
    }
    if frag & 0x2000 != 0 {
        p.frag = Frag::First;
    }
    p.rest = parse_l4(&f[..end], off + ihl, p.proto, 4, p.frag == Frag::First);
    Some(p)
}

/// The IPv6 header at `off`; `None` if it is malformed before the
/// addresses are known (too short, not version 6).
fn parse_ipv6(f: &[u8], off: usize) -> Option<Packet> {
    if f.len() < off + 40 || f[off] >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| -> [u8; 16] { f[at..at + 16].try_into().unwrap_or([0; 16]) };
    let mut p = Packet {
        family: 6,
        saddr: addr(off + 8),
        daddr: addr(off + 24),
        proto: f[off + 6],
        hop_limit: f[off + 7],
        frag: Frag::None,
        frag_id: 0,
        rest: Err(L4Error::Malformed),
    };
    // Payload length 0: a jumbogram or BIG TCP packet, to the end.
    let end = match usize::from(be16(f, off + 4)) {
        0 => f.len(),
        n => off + 40 + n,
    };
    if f.len() < end {
        return Some(p);
    }
    // Headers must lie inside the IP packet, not in what follows it.
    let f = &f[..end];
    let mut next = f[off + 6];
    let mut at = off + 40;
    let mut first = false;
    let mut seen = 0;
    loop {
        // Every extension header takes 8 bytes at least, inside the packet.
        let len = match next {
            0 | 43 | 60 | 51 | 44 if f.len() < at + 8 => None,
            0 | 43 | 60 => Some((usize::from(f[at + 1]) + 1) * 8),
            51 => Some((usize::from(f[at + 1]) + 2) * 4),
            44 => Some(8),
            _ => break,
        };
        if seen == MAX_EXTHDRS {
            // More headers than the walk's bound: malformed (or hostile).
            return Some(p);
        }
        let Some(len) = len else {
            return Some(p);
        };
        seen += 1;
        let this = next;
        next = f[at];
        if this == 44 {
            let fo = be16(f, at + 2);
            p.frag_id = u32::from_be_bytes([f[at + 4], f[at + 5], f[at + 6], f[at + 7]]);
            if fo & 0xfff8 != 0 {
                p.frag = Frag::Later;
                p.proto = next;
                p.rest = Ok(L4 {
                    port: 0,
                    icmp_type: 0,
                });
                return Some(p);
            }
            // M=0 at offset 0: an atomic fragment, a whole packet.
            first |= fo & 1 != 0;
        }
        at += len;
    }
    if first {
        p.frag = Frag::First;
    }
    p.proto = next;
    p.rest = if next == NEXTHDR_NONE {
        Ok(L4 {
            port: 0,
            icmp_type: 0,
        })
    } else {
        parse_l4(f, at, next, 6, first)
    };
    Some(p)
}

/// The L4 header at `off` of the IP packet `f` (cut at its end). Any error
/// in a first fragment is a tiny fragment.
fn parse_l4(
    f: &[u8],
    off: usize,
    proto: u8,
    family: u8,
    first_fragment: bool,
) -> Result<L4, L4Error> {
    let l4 = parse_l4_hdr(f, off, proto, family);
    match l4 {
        Err(_) if first_fragment => Err(L4Error::TinyFirstFragment),
        other => other,
    }
}

fn parse_l4_hdr(f: &[u8], off: usize, proto: u8, family: u8) -> Result<L4, L4Error> {
    let avail = f.len().saturating_sub(off);
    let whole = match proto {
        TCP => 20,
        UDP => 8,
        SCTP => 12,
        // ICMP must match the IP family it travels in.
        ICMP | ICMPV6 if (proto == ICMP) != (family == 4) => return Err(L4Error::Malformed),
        ICMP | ICMPV6 => 8,
        _ => {
            return Ok(L4 {
                port: 0,
                icmp_type: 0,
            })
        }
    };
    if avail < whole {
        return Err(L4Error::Malformed);
    }
    match proto {
        // Data offset: at least the header, at most the segment.
        TCP if f[off + 12] >> 4 < 5 || avail < usize::from(f[off + 12] >> 4) * 4 => {
            Err(L4Error::Malformed)
        }
        ICMP | ICMPV6 => Ok(L4 {
            port: be16(f, off),
            icmp_type: f[off],
        }),
        _ => Ok(L4 {
            port: be16(f, off + 2),
            icmp_type: 0,
        }),
    }
}

/// Traffic of the host itself. On ingress the packet type first, as the
/// test run's `eth_type_trans` sets it: a broadcast or multicast MAC is the
/// host's. Then the address: one of the host's, multicast, the
/// IPv4 broadcast or 127.0.0.0/8. IPv4-mapped addresses are the IPv4 ones
/// (the datapath keeps IPv4 mapped, so it cannot tell them apart).
fn is_local(frame: &[u8], dir: Direction, addr: &[u8; 16], cfg: &Config) -> bool {
    if dir == Direction::Ingress {
        if frame[0] & 1 != 0 {
            return true;
        }
    }
    if is_mapped(addr) {
        if addr[12] & 0xf0 == 0xe0 || addr[12..] == [0xff; 4] || addr[12] == 127 {
            return true;
        }
    } else if addr[0] == 0xff {
        return true;
    }
    cfg.host_addrs.iter().any(|h| addr16(*h) == *addr)
}

/// `::ffff:0:0/96`.
fn is_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff
}

/// IPv4-mapped, or IPv4-compatible (`::/96` but `::` and `::1`).
fn is_v4_in_v6(a: &[u8; 16]) -> bool {
    let compat =
        a[..12].iter().all(|&b| b == 0) && a[12..] != [0, 0, 0, 0] && a[12..] != [0, 0, 0, 1];
    is_mapped(a) || compat
}

fn mapped(v4: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(v4);
    a
}

/// The datapath's 16-byte form of an address (IPv4 mapped).
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Ext6, Frame, TcpFlags};
    use hostfwd::policy::model::{Action, CidrSet, L4Proto, PortMatch, Rule};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test literal")
    }

    /// Ingress TCP/80 allowed from 10.77.0.0/24 and fd77::/64, TCP/81 denied
    /// by rule 9; host 10.77.0.1 and fd77::1.
    fn cfg() -> Config {
        let peers = vec![
            CidrSet::cidr("10.77.0.0/24".parse().expect("net")),
            CidrSet::cidr("fd77::/64".parse().expect("net")),
        ];
        Config {
            enforce_ingress: true,
            enforce_egress: true,
            host_addrs: vec![ip("10.77.0.1"), ip("fd77::1")],
            vlans: vec![7],
            rules: RuleSet::new(vec![
                Rule {
                    id: 3,
                    direction: Direction::Ingress,
                    action: Action::Allow,
                    peers: peers.clone(),
                    ports: vec![PortMatch::l4(L4Proto::Tcp, 80, None)],
                },
                Rule {
                    id: 9,
                    direction: Direction::Ingress,
                    action: Action::Deny,
                    peers,
                    ports: vec![PortMatch::l4(L4Proto::Tcp, 81, None)],
                },
            ]),
            ..Config::default()
        }
    }

    fn verdict(f: &[u8]) -> (Option<&'static str>, u32) {
        let o = judge(f, Direction::Ingress, &cfg(), &mut State::default());
        (o.reason.map(|r| r.name()), o.rule_id)
    }

    #[test]
    fn policy_steps() {
        for (r, h) in [("10.77.0.2", "10.77.0.1"), ("fd77::2", "fd77::1")] {
            let syn = |dport| Frame::tcp(ip(r), ip(h), 1, dport, TcpFlags::SYN);
            assert_eq!(verdict(&syn(80).build()), (None, 0));
            assert_eq!(verdict(&syn(81).build()), (Some("policy-deny-rule"), 9));
            assert_eq!(verdict(&syn(82).build()), (Some("policy-denied"), 0));
            assert_eq!(
                verdict(&Frame::tcp(ip(h), ip(r), 1, 82, TcpFlags::SYN).build()),
                (None, 0),
                "forwarded"
            );
        }
    }

    #[test]
    fn tag_stacks() {
        let syn = Frame::tcp(ip("10.77.0.2"), ip("10.77.0.1"), 1, 82, TcpFlags::SYN);
        assert_eq!(verdict(&syn.clone().vlan(7).build()), (None, 0));
        assert_eq!(
            verdict(&syn.clone().vlan(8).build()),
            (Some("vlan-filtered"), 0)
        );
        let prio = syn.clone().priority_tag(1).tag(0x88a8, 0).priority_tag(3);
        assert_eq!(
            verdict(&prio.clone().vlan(8).build()),
            (Some("vlan-filtered"), 0)
        );
        assert_eq!(verdict(&prio.clone().build()), (Some("policy-denied"), 0));
        assert_eq!(
            verdict(&prio.clone().priority_tag(0).build()),
            (Some("policy-denied"), 0)
        );
        assert_eq!(
            verdict(&prio.clone().priority_tag(0).vlan(7).build()),
            (Some("malformed"), 0)
        );
        let cut = syn.vlan(7).build();
        assert_eq!(verdict(&cut[..17]), (Some("malformed"), 0));
    }

    #[test]
    fn malformed_only_for_the_host() {
        let (h, r, far) = (ip("10.77.0.1"), ip("10.77.0.2"), ip("192.0.2.9"));
        let cut = |f: Frame| {
            let mut b = f.build();
            b.truncate(b.len() - 1);
            b[16..18].copy_from_slice(&0u16.to_be_bytes()); // tot_len 0
            b
        };
        assert_eq!(
            verdict(&cut(Frame::tcp(r, h, 1, 80, TcpFlags::SYN))),
            (Some("malformed"), 0)
        );
        assert_eq!(
            verdict(&cut(Frame::tcp(r, far, 1, 80, TcpFlags::SYN))),
            (None, 0)
        );
        let chain = |n| {
            Frame::tcp(ip("fd77::2"), ip("fd77::1"), 1, 80, TcpFlags::SYN)
                .ipv6_ext(&vec![Ext6::DestOpts; n])
                .build()
        };
        assert_eq!(verdict(&chain(8)), (None, 0));
        assert_eq!(verdict(&chain(9)), (Some("malformed"), 0));
    }

    #[test]
    fn mapped_remote_and_fragments() {
        let f = Frame::udp(ip("::ffff:10.77.0.2"), ip("fd77::1"), 1, 80).build();
        assert_eq!(verdict(&f), (Some("mapped-address"), 0));
        let f = Frame::udp(ip("::1"), ip("fd77::1"), 1, 80).build();
        assert_eq!(verdict(&f), (Some("policy-denied"), 0));
        for (r, h) in [("10.77.0.2", "10.77.0.1"), ("fd77::2", "fd77::1")] {
            let frags = Frame::tcp(ip(r), ip(h), 1, 81, TcpFlags::SYN)
                .payload(vec![0; 40])
                .fragments(24);
            let mut t = State::default();
            let c = cfg();
            let j = |f: &Vec<u8>, t: &mut State| {
                judge(f, Direction::Ingress, &c, t).reason.map(|r| r.name())
            };
            assert_eq!(
                j(&frags[1], &mut t),
                None,
                "later fragment before the first"
            );
            assert_eq!(j(&frags[0], &mut t), Some("policy-deny-rule"));
            assert_eq!(j(&frags[2], &mut t), Some("policy-deny-rule"));
            // A first fragment with 2 bytes of UDP (IP length fixed up).
            let short = Frame::udp(ip(r), ip(h), 1, 81)
                .payload(vec![0; 40])
                .fragments(8);
            let mut first = short[0].clone();
            first.truncate(first.len() - 6);
            let len = first.len() - 14;
            let (at, len) = if r.contains(':') {
                (18, len - 40)
            } else {
                (16, len)
            };
            first[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
            assert_eq!(j(&first, &mut t), Some("fragment"));
        }
    }

    #[test]
    fn header_errors_after_the_addresses_concern_the_host_only() {
        let (h, r, far) = (ip("10.77.0.1"), ip("10.77.0.2"), ip("192.0.2.9"));
        let with = |dst, at: usize, v: u8| {
            let mut b = Frame::tcp(r, dst, 1, 80, TcpFlags::SYN).build();
            b[at] = v;
            b
        };
        // IHL 4, a total length below the header: the host's, or not.
        assert_eq!(verdict(&with(h, 14, 0x44)), (Some("malformed"), 0));
        assert_eq!(verdict(&with(far, 14, 0x44)), (None, 0));
        assert_eq!(verdict(&with(h, 17, 19)), (Some("malformed"), 0));
        assert_eq!(verdict(&with(far, 17, 19)), (None, 0));
        // Not IPv4 at all: nobody's addresses.
        assert_eq!(verdict(&with(far, 14, 0x55)), (Some("malformed"), 0));
        // Total length 0: to the end of the packet.
        assert_eq!(verdict(&with(h, 17, 0)), (None, 0));
        // ICMP cut by the total length, the rest of it in the padding.
        let mut b = Frame::echo_request(r, h, 7, 1).build();
        b[16..18].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(verdict(&b), (Some("malformed"), 0));
    }

    #[test]
    fn nd_and_mld_pass_only_as_the_rfcs_send_them() {
        let icmp6 = |src: &str, t: u8, hop: u8| {
            Frame::raw_ip(ip(src), ip("fd77::1"), 58)
                .payload(vec![t, 0, 0, 0, 0, 0, 0, 0])
                .ttl(hop)
                .build()
        };
        assert_eq!(verdict(&icmp6("fd77::2", 135, 255)), (None, 0));
        assert_eq!(
            verdict(&icmp6("fd77::2", 135, 254)),
            (Some("policy-denied"), 0)
        );
        assert_eq!(verdict(&icmp6("fe80::2", 143, 1)), (None, 0));
        assert_eq!(verdict(&icmp6("::", 131, 1)), (None, 0));
        assert_eq!(
            verdict(&icmp6("fd77::2", 143, 1)),
            (Some("policy-denied"), 0)
        );
        assert_eq!(
            verdict(&icmp6("fe80::2", 143, 2)),
            (Some("policy-denied"), 0)
        );
    }
}
