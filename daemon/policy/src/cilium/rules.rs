//! The schema of one rule: its peers (entities, CIDRs, CIDR sets), ports
//! (`toPorts`, protocols, ranges) and ICMP fields (`icmps`), with every
//! check and error message of those. A rule becomes a [`PolicyRule`];
//! entities stay unresolved (that is `resolve`).

use std::net::IpAddr;

use ipnet::IpNet;

use super::errors::Checker;
use super::protocols::{parse_protocol, Protocol};
use super::schema::*;
use super::selector::selector_is_empty;
use super::types::{Peer, PolicyRule};
use super::walk::*;
use super::yaml::{Node, Typed, Value};
use crate::entities::Entity;
use crate::model::{Action, CidrSet, Direction, IcmpFamily, L4Proto, PortMatch};

pub(super) fn parse_rule(
    cx: &mut Checker,
    node: &Node,
    path: String,
    direction: Direction,
    action: Action,
) -> Option<PolicyRule> {
    let (schema, entities_key, cidr_key, cidr_set_key) = match direction {
        Direction::Ingress => (&INGRESS, "fromEntities", "fromCIDR", "fromCIDRSet"),
        Direction::Egress => (&EGRESS, "toEntities", "toCIDR", "toCIDRSet"),
    };
    cx.clean(|cx| {
        let obj = object(cx, node, &path, schema)?;
        let mut peers: Vec<Peer> = Vec::new();
        let mut inert: Vec<String> = Vec::new();
        // An inert peer field is a peer field: without it the rule's ports
        // would apply to every peer.
        let has_peer_field = [entities_key, cidr_key, cidr_set_key]
            .iter()
            .chain(INERT_PEERS.iter().map(|(k, _)| k))
            .any(|k| obj.get(k).is_some());

        if let Some((items, lpath)) = peer_list(cx, &obj, entities_key) {
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = string_at(cx, item, || index(&lpath, i)) {
                    match (Entity::parse(&s), Entity::inert(&s)) {
                        (Ok(e), _) => peers.push(Peer::Entity(e)),
                        (Err(_), Some(why)) => {
                            cx.warn(item.pos, &index(&lpath, i), inert_warning(why));
                            inert.push(format!("entity {s}: {why}"));
                        }
                        (Err(msg), None) => cx.error(item.pos, &index(&lpath, i), msg),
                    }
                }
            }
        }
        for (key, why) in INERT_PEERS {
            if obj.get(key).is_none() {
                continue; // absent, or a field of the other direction (rejected)
            }
            let kpos = obj.key_pos(key).unwrap_or(obj.pos);
            if action == Action::Deny && *key == "toServices" {
                cx.error(kpos, &obj.path(key), WHY_DENY_SERVICES);
                continue;
            }
            let Some((items, lpath)) = peer_list(cx, &obj, key) else {
                continue;
            };
            if key.ends_with("Endpoints") && !endpoint_selectors_inert(cx, items, &lpath) {
                continue;
            }
            cx.warn(kpos, &lpath, inert_warning(why));
            inert.push(format!("{key}: {why}"));
        }
        if let Some((items, lpath)) = peer_list(cx, &obj, cidr_key) {
            for (i, item) in items.iter().enumerate() {
                if !cx.count_cidr(item.pos, &index(&lpath, i)) {
                    break;
                }
                if let Some(s) = string_at(cx, item, || index(&lpath, i)) {
                    match parse_cidr(&s, true) {
                        Ok(net) => peers.push(Peer::Cidr(CidrSet::cidr(net))),
                        Err(msg) => cx.error(item.pos, &index(&lpath, i), msg),
                    }
                }
            }
        }
        if let Some((items, lpath)) = peer_list(cx, &obj, cidr_set_key) {
            for (i, item) in items.iter().enumerate() {
                peers.extend(parse_cidr_set(cx, item, &index(&lpath, i)));
            }
        }

        let mut ports: Vec<PortMatch> = Vec::new();
        let to_ports = obj.get("toPorts");
        let icmps = obj.get("icmps");
        if let Some(tp) = to_ports {
            let tpath = obj.path("toPorts");
            for (i, item) in list(cx, tp, &tpath).unwrap_or_default().iter().enumerate() {
                ports.extend(parse_port_rule(cx, item, &index(&tpath, i)));
            }
        }
        if let Some(ic) = icmps {
            let ipath = obj.path("icmps");
            let items = list(cx, ic, &ipath).unwrap_or_default();
            let non_empty = |n: Option<&Node>| {
                n.is_some_and(|n| matches!(&n.value, Value::Seq(s) if !s.is_empty()))
            };
            if non_empty(to_ports) && non_empty(Some(ic)) {
                cx.error(
                    obj.key_pos("icmps").unwrap_or(ic.pos),
                    &ipath,
                    "icmps and toPorts cannot be combined in one rule (Cilium rejects it): write them as two rules",
                );
            }
            for (i, item) in items.iter().enumerate() {
                ports.extend(parse_icmp_rule(cx, item, &index(&ipath, i)));
            }
        }
        dedup_in_order(&mut ports);

        // No L3 selector but ports: every peer (Cilium's wildcard selector).
        if !has_peer_field && !ports.is_empty() {
            peers.push(Peer::Entity(Entity::All));
        }
        dedup_in_order(&mut peers);

        Some(PolicyRule {
            path: path.clone(),
            pos: node.pos,
            direction,
            action,
            peers,
            ports,
            inert,
        })
    })
}

fn inert_warning(why: &str) -> String {
    format!("inert here: {why}; this peer matches nothing, the rest of the rule applies")
}

/// Whether every endpoint selector of `items` selects only pods (so
/// nothing here); the ones that select more are errors.
fn endpoint_selectors_inert(cx: &mut Checker, items: &[Node], lpath: &str) -> bool {
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let why = if selector_is_empty(item) {
            WHY_WILDCARD_ENDPOINTS
        } else if mentions_reserved(item) {
            WHY_RESERVED_LABEL
        } else {
            continue;
        };
        cx.error(item.pos, &index(lpath, i), why);
        ok = false;
    }
    ok
}

/// Whether a selector names a `reserved:` label anywhere (a key of
/// matchLabels or of a requirement).
fn mentions_reserved(node: &Node) -> bool {
    let reserved = |n: &Node| matches!(&n.value, Value::Scalar { text, .. } if text.starts_with("reserved:") || text.starts_with("any:reserved:"));
    match &node.value {
        Value::Scalar { .. } => reserved(node),
        Value::Seq(items) => items.iter().any(mentions_reserved),
        Value::Map(entries) => entries.iter().any(|(k, v)| reserved(k) || mentions_reserved(v)),
    }
}

/// Drops repeated elements, keeping the first of each: by linear search in
/// the usual short list, with a hash set in a long one.
pub(super) fn dedup_in_order<T: Clone + Eq + std::hash::Hash>(v: &mut Vec<T>) {
    if v.len() <= SEEN_LINEAR {
        let mut i = 0;
        while i < v.len() {
            if v[..i].contains(&v[i]) {
                v.remove(i);
            } else {
                i += 1;
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(v.len());
        v.retain(|p| seen.insert(p.clone()));
    }
}

/// A peer list field, unless absent or invalid. Present and empty is
/// ambiguous in Cilium (an empty entity list selects nothing, an empty CIDR
/// list is as if absent), so it is rejected.
pub(super) fn peer_list<'n>(cx: &mut Checker, obj: &Obj<'n>, key: &str) -> Option<(&'n [Node], String)> {
    let v = obj.get(key)?;
    let lpath = obj.path(key);
    let items = list(cx, v, &lpath)?;
    if items.is_empty() {
        cx.error(
            obj.key_pos(key).unwrap_or(v.pos),
            &lpath,
            "an empty peer list is ambiguous (Cilium reads an empty entity list as \"nothing\" but an empty CIDR list as \"absent\"): remove the field or list peers",
        );
        return None;
    }
    Some((items, lpath))
}

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or, if `bare_ok`, a bare address
/// (a /32 or /128). The prefix is kept as written (the model truncates).
pub(super) fn parse_cidr(s: &str, bare_ok: bool) -> Result<IpNet, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid CIDR {s:?}: {addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None if bare_ok => max,
        None => {
            return Err(format!(
                "invalid CIDR {s:?}: a prefix length is required here (e.g. {s}/{max})"
            ))
        }
        Some(l) => {
            let n: u8 = l
                .parse()
                .ok()
                .filter(|_| l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("invalid CIDR {s:?}: prefix length {l:?} is not a number")
                })?;
            if n > max {
                let fam = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(format!(
                    "invalid CIDR {s:?}: prefix length {n} is too long for {fam} (at most {max})"
                ));
            }
            n
        }
    };
    IpNet::new(ip, len).map_err(|e| format!("invalid CIDR {s:?}: {e}"))
}

pub(super) fn parse_cidr_set(cx: &mut Checker, node: &Node, path: &str) -> Option<Peer> {
    cx.clean(|cx| {
        let obj = object(cx, node, path, &CIDR_RULE)?;
        let c = required(cx, &obj, "cidr", "a CIDR set needs a cidr")?;
        let cpath = obj.path("cidr");
        if !cx.count_cidr(c.pos, &cpath) {
            return None;
        }
        let cidr = string(cx, c, &cpath).and_then(|s| match parse_cidr(&s, false) {
            Ok(n) => Some(n),
            Err(m) => {
                cx.error(c.pos, &cpath, m);
                None
            }
        });
        let mut except = Vec::new();
        if let Some(e) = obj.get("except") {
            let epath = obj.path("except");
            for (i, item) in list(cx, e, &epath).unwrap_or_default().iter().enumerate() {
                let ipath = || index(&epath, i);
                if !cx.count_cidr(item.pos, &ipath()) {
                    break;
                }
                let Some(s) = string_at(cx, item, ipath) else {
                    continue;
                };
                let ex = match parse_cidr(&s, false) {
                    Ok(n) => n,
                    Err(m) => {
                        cx.error(item.pos, &ipath(), m);
                        continue;
                    }
                };
                if let Some(cidr) = cidr {
                    let same_family = matches!(
                        (cidr, ex),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    );
                    if !same_family {
                        cx.error(
                            item.pos,
                            &ipath(),
                            format!("{s} is not of the same address family as cidr {cidr}"),
                        );
                        continue;
                    }
                    if !cidr.trunc().contains(&ex.trunc()) {
                        cx.error(item.pos, &ipath(), format!("{s} is not inside cidr {cidr}"));
                        continue;
                    }
                }
                except.push(ex);
            }
        }
        Some(Peer::Cidr(CidrSet::new(cidr?, except)))
    })
}

pub(super) fn parse_port_rule(cx: &mut Checker, node: &Node, path: &str) -> Vec<PortMatch> {
    let mut out = Vec::new();
    let Some(obj) = object(cx, node, path, &PORT_RULE) else {
        return out;
    };
    let items = match obj.get("ports") {
        Some(p) => list(cx, p, &obj.path("ports")).unwrap_or_default(),
        None => &[],
    };
    if items.is_empty() {
        // An entry with only rejected fields (e.g. L7 `rules`) has its error.
        if obj.rejected == 0 {
            cx.error(
                obj.key_pos("ports").unwrap_or(obj.pos),
                &obj.path("ports"),
                "no ports: Cilium matches nothing for a toPorts entry without ports, so the whole rule would allow nothing (use port: \"0\" for every port)",
            );
        }
    }
    let ppath = obj.path("ports");
    for (i, item) in items.iter().enumerate() {
        out.extend(parse_port(cx, item, &index(&ppath, i)));
    }
    out
}

pub(super) fn parse_port(cx: &mut Checker, node: &Node, path: &str) -> Option<PortMatch> {
    cx.clean(|cx| {
        let obj = object(cx, node, path, &PORT)?;
        let proto = match obj.get("protocol") {
            None => Some(Protocol::L4(L4Proto::Any)),
            Some(p) => {
                let ppath = || obj.path("protocol");
                let text = match p.typed() {
                    Some(Typed::Int(n)) => Some(n.to_string()),
                    _ => string_at(cx, p, ppath),
                };
                text.and_then(|s| match parse_protocol(&s) {
                    Ok(proto) => Some(proto),
                    Err(m) => {
                        cx.error(p.pos, &ppath(), m);
                        None
                    }
                })
            }
        };
        if let Some(Protocol::Extended(number)) = proto {
            return extended_port(cx, &obj, number);
        }
        // A bad protocol is the error; whether it needed a port is moot.
        let port = match (proto, obj.get("port")) {
            (None, None) => None,
            _ => required(cx, &obj, "port", "a port needs port (\"0\" for every port)")
                .and_then(|p| port_number(cx, p, || obj.path("port"))),
        };
        let epath = || obj.path("endPort");
        let end_port = obj.get("endPort").and_then(|e| {
            match e.typed() {
                Some(Typed::Int(n)) if (0..=65535).contains(&n) => Some(n as u16),
                Some(Typed::Int(n)) => {
                    cx.error(e.pos, &epath(), format!("endPort {n} is out of range (0-65535)"));
                    None
                }
                _ => {
                    cx.error(
                        e.pos,
                        &epath(),
                        format!("expected a port number, found {}", e.describe()),
                    );
                    None
                }
            }
        });
        let proto = match proto? {
            Protocol::L4(p) => p,
            Protocol::Extended(_) => return None, // handled above
        };
        let port = port?;
        if let Some(end) = end_port {
            let epos = obj.get("endPort").map_or(obj.pos, |e| e.pos);
            if port == 0 {
                cx.error(
                    epos,
                    &epath(),
                    "endPort needs a non-zero port (port 0 already means every port)",
                );
                return None;
            }
            if end < port {
                cx.error(epos, &epath(), format!("endPort {end} is below port {port}"));
                return None;
            }
        }
        Some(PortMatch::l4(proto, port, end_port))
    })
}

/// A port of an extended protocol: every packet of the protocol. Like
/// Cilium, `port` may only be absent or 0 and there is no `endPort`.
fn extended_port(cx: &mut Checker, obj: &Obj, number: u8) -> Option<PortMatch> {
    if let Some(p) = obj.get("port") {
        let port = port_number(cx, p, || obj.path("port"))?;
        if port != 0 {
            cx.error(
                p.pos,
                &obj.path("port"),
                format!("IP protocol {number} has no ports: port must be absent or 0"),
            );
            return None;
        }
    }
    if let Some(e) = obj.get("endPort") {
        cx.error(e.pos, &obj.path("endPort"), format!("IP protocol {number} has no ports: remove endPort"));
        return None;
    }
    Some(PortMatch::Proto { proto: number })
}

pub(super) fn port_number(cx: &mut Checker, node: &Node, path: impl FnOnce() -> String) -> Option<u16> {
    let n = match node.typed() {
        Some(Typed::Int(n)) => n,
        Some(Typed::Str(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i128>().unwrap_or(i128::MAX)
        }
        Some(Typed::Str(s)) if s.bytes().any(|b| b.is_ascii_alphabetic()) => {
            cx.error(
                node.pos,
                &path(),
                format!("named port {s:?} cannot be enforced: hostfwd has no pods whose ports it could name (use the port number)"),
            );
            return None;
        }
        _ => {
            cx.error(
                node.pos,
                &path(),
                format!("expected a port number, found {}", node.describe()),
            );
            return None;
        }
    };
    match u16::try_from(n) {
        Ok(p) => Some(p),
        Err(_) => {
            cx.error(
                node.pos,
                &path(),
                format!("port {n} is out of range (0-65535)"),
            );
            None
        }
    }
}

pub(super) fn parse_icmp_rule(cx: &mut Checker, node: &Node, path: &str) -> Vec<PortMatch> {
    let mut out = Vec::new();
    let Some(obj) = object(cx, node, path, &ICMP_RULE) else {
        return out;
    };
    let items = match obj.get("fields") {
        Some(f) => list(cx, f, &obj.path("fields")).unwrap_or_default(),
        None => &[],
    };
    if items.is_empty() {
        cx.error(
            obj.key_pos("fields").unwrap_or(obj.pos),
            &obj.path("fields"),
            "no fields: Cilium matches nothing for an icmps entry without fields, so the whole rule would allow nothing",
        );
    }
    let fpath = obj.path("fields");
    for (i, item) in items.iter().enumerate() {
        out.extend(parse_icmp_field(cx, item, &index(&fpath, i)));
    }
    out
}

pub(super) fn parse_icmp_field(cx: &mut Checker, node: &Node, path: &str) -> Option<PortMatch> {
    cx.clean(|cx| {
        let obj = object(cx, node, path, &ICMP_FIELD)?;
        let family = match obj.get("family") {
            None => Some(IcmpFamily::V4),
            Some(f) => {
                let fpath = obj.path("family");
                string(cx, f, &fpath).and_then(|s| match s.as_str() {
                    "IPv4" => Some(IcmpFamily::V4),
                    "IPv6" => Some(IcmpFamily::V6),
                    _ => {
                        cx.error(
                            f.pos,
                            &fpath,
                            format!("unknown family {s:?} (expected IPv4 or IPv6)"),
                        );
                        None
                    }
                })
            }
        };
        let t = required(cx, &obj, "type", "an ICMP field needs a type (number or name)")?;
        let tpath = obj.path("type");
        let family = family?;
        let fam_name = match family {
            IcmpFamily::V4 => "IPv4",
            IcmpFamily::V6 => "IPv6",
        };
        let icmp_type = match t.typed() {
            Some(Typed::Int(n)) => u8::try_from(n).map_err(|_| format!("ICMP type {n} is out of range (0-255)")),
            Some(Typed::Str(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse::<u8>()
                .map_err(|_| format!("ICMP type {s} is out of range (0-255)")),
            Some(Typed::Str(s)) => icmp_type_by_name(family, s).ok_or_else(|| {
                let other = match family {
                    IcmpFamily::V4 => IcmpFamily::V6,
                    IcmpFamily::V6 => IcmpFamily::V4,
                };
                let known = match family {
                    IcmpFamily::V4 => ICMP_V4_NAMES,
                    IcmpFamily::V6 => ICMP_V6_NAMES,
                };
                if icmp_type_by_name(other, s).is_some() {
                    let other_name = if fam_name == "IPv4" { "IPv6" } else { "IPv4" };
                    format!("ICMP type {s:?} is not an {fam_name} type name (it is one of {other_name}: set family: {other_name})")
                } else {
                    format!(
                        "unknown {fam_name} ICMP type name {s:?} (known: {})",
                        known.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    )
                }
            }),
            _ => Err(format!(
                "expected an ICMP type (0-255 or a name such as EchoRequest), found {}",
                t.describe()
            )),
        };
        match icmp_type {
            Ok(icmp_type) => Some(PortMatch::Icmp { family, icmp_type }),
            Err(m) => {
                cx.error(t.pos, &tpath, m);
                None
            }
        }
    })
}
