//! Device selection from a snapshot of the host's interfaces (pure).
//!
//! `auto` picks devices that carry a global unicast address and skips
//! loopback and container/virtual plumbing; explicit entries are names or
//! globs; `exclude` always wins.

use std::net::IpAddr;

/// What selection needs to know about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub ifindex: u32,
    pub name: String,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
}

/// Name prefixes of container and virtual plumbing that `auto` never picks.
const PLUMBING: &[&str] = &["docker", "cni", "lxc", "cilium_", "virbr", "veth", "flannel", "cali", "vxlan", "tun", "tap"];

/// A global unicast address: not loopback, link-local, multicast or
/// unspecified.
pub fn is_global_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified() || v4.is_broadcast()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_multicast() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    glob::Pattern::new(pattern).map(|p| p.matches(name)).unwrap_or(pattern == name)
}

/// The interfaces to attach to, in ifindex order.
pub fn select<'a>(ifaces: &'a [Iface], devices: &[String], exclude: &[String]) -> Vec<&'a Iface> {
    let mut out: Vec<&Iface> = ifaces
        .iter()
        .filter(|i| !exclude.iter().any(|p| matches(p, &i.name)))
        .filter(|i| {
            devices.iter().any(|d| {
                if d == "auto" {
                    !i.loopback && !PLUMBING.iter().any(|p| i.name.starts_with(p)) && i.addrs.iter().any(is_global_unicast)
                } else {
                    matches(d, &i.name)
                }
            })
        })
        .collect();
    out.sort_by_key(|i| i.ifindex);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(ifindex: u32, name: &str, addrs: &[&str]) -> Iface {
        Iface { ifindex, name: name.into(), loopback: name == "lo", addrs: addrs.iter().map(|a| a.parse().unwrap()).collect() }
    }

    fn names(v: Vec<&Iface>) -> Vec<String> {
        v.into_iter().map(|i| i.name.clone()).collect()
    }

    #[test]
    fn auto_picks_global_unicast_and_skips_plumbing() {
        let ifs = vec![
            iface(1, "lo", &["127.0.0.1", "::1"]),
            iface(2, "eth0", &["192.0.2.10", "fe80::1"]),
            iface(3, "eth1", &["fe80::2"]),
            iface(4, "docker0", &["172.17.0.1"]),
            iface(5, "veth12", &["10.0.0.1"]),
            iface(6, "bond0.1000", &["2001:db8::5"]),
        ];
        assert_eq!(names(select(&ifs, &["auto".into()], &[])), vec!["eth0", "bond0.1000"]);
        assert_eq!(names(select(&ifs, &["auto".into()], &["bond0.*".into()])), vec!["eth0"]);
    }

    #[test]
    fn explicit_names_and_globs() {
        let ifs = vec![iface(2, "eth0", &[]), iface(3, "eth1", &[]), iface(4, "bond0", &[]), iface(5, "veth1", &["10.0.0.1"])];
        assert_eq!(names(select(&ifs, &["eth*".into()], &["eth1".into()])), vec!["eth0"]);
        assert_eq!(names(select(&ifs, &["bond0".into(), "veth1".into()], &[])), vec!["bond0", "veth1"]);
        assert!(select(&ifs, &[], &[]).is_empty());
    }
}
