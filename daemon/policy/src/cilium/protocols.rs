//! The `protocol:` of a `toPorts` port: the L4 protocols with ports (TCP,
//! UDP, SCTP, ANY) and Cilium's extended IP protocols, which have no ports
//! (Cilium 1.17+, `--enable-extended-ip-protocols`), by name or by number.
//! A table and one lookup; the checks around it are in `rules`.

use crate::model::L4Proto;

/// Cilium's extended protocols (`pkg/policy/api`: VRRP, IGMP, GRE, IPIP,
/// IPv6, ESP, AH) by name, with their IP protocol numbers.
pub(super) const EXTENDED: &[(&str, u8)] = &[
    ("IGMP", 2),
    ("IPIP", 4),
    ("IPV6", 41),
    ("GRE", 47),
    ("ESP", 50),
    ("AH", 51),
    ("VRRP", 112),
];

/// What a `protocol:` value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// Has ports: `port` is required.
    L4(L4Proto),
    /// An IP protocol without ports: `port` must be absent or 0.
    Extended(u8),
}

/// The protocol a `protocol:` value names (case-insensitive, as Cilium), or
/// why it cannot be used.
pub(super) fn parse_protocol(s: &str) -> Result<Protocol, String> {
    let upper = s.to_ascii_uppercase();
    let number = match upper.as_str() {
        "TCP" => return Ok(Protocol::L4(L4Proto::Tcp)),
        "UDP" => return Ok(Protocol::L4(L4Proto::Udp)),
        "SCTP" => return Ok(Protocol::L4(L4Proto::Sctp)),
        "ANY" => return Ok(Protocol::L4(L4Proto::Any)),
        "ICMP" | "ICMPV6" => 1,
        name => match EXTENDED.iter().find(|(n, _)| *n == name) {
            Some((_, n)) => *n,
            None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u8>().map_err(|_| format!("protocol number {s} is out of range (0-255)"))?
            }
            None => {
                let names: Vec<&str> = EXTENDED.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown protocol {s:?} (expected TCP, UDP, SCTP, ANY, one of Cilium's extended protocols {} or an IP protocol number)",
                    names.join(", ")
                ));
            }
        },
    };
    match number {
        6 => Ok(Protocol::L4(L4Proto::Tcp)),
        17 => Ok(Protocol::L4(L4Proto::Udp)),
        132 => Ok(Protocol::L4(L4Proto::Sctp)),
        1 | 58 => Err(format!("protocol {s:?} is not matched with toPorts: use icmps (with family IPv4 or IPv6)")),
        // The datapath walks these as IPv6 extension headers and judges the
        // protocol after them: a rule on them would match IPv4 only.
        0 | 43 | 44 | 51 | 59 | 60 => Err(format!(
            "protocol {s:?} cannot be enforced: on IPv6 hostfwd walks it as an extension header and judges the protocol that follows, so it would match IPv4 only"
        )),
        n => Ok(Protocol::Extended(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_protocol("vrrp"), Ok(Protocol::Extended(112)));
        assert_eq!(parse_protocol("VRRP"), Ok(Protocol::Extended(112)));
        assert_eq!(parse_protocol("112"), Ok(Protocol::Extended(112)));
        assert_eq!(parse_protocol("IGMP"), Ok(Protocol::Extended(2)));
        assert_eq!(parse_protocol("2"), Ok(Protocol::Extended(2)));
        assert_eq!(parse_protocol("89"), Ok(Protocol::Extended(89)));
        assert_eq!(parse_protocol("6"), Ok(Protocol::L4(L4Proto::Tcp)));
        assert_eq!(parse_protocol("tcp"), Ok(Protocol::L4(L4Proto::Tcp)));
        for bad in ["AH", "51", "44", "ICMP", "58", "256", "OSPF", ""] {
            assert!(parse_protocol(bad).is_err(), "{bad}");
        }
        for (name, n) in EXTENDED.iter().filter(|(n, _)| *n != "AH") {
            assert_eq!(parse_protocol(name), Ok(Protocol::Extended(*n)), "{name}");
        }
    }
}
