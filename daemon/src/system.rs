//! Snapshot of the host's interfaces and addresses (getifaddrs, in the
//! caller's network namespace).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::select::Iface;

/// Every interface with its addresses.
pub fn interfaces() -> Result<Vec<Iface>, nix::Error> {
    let mut by_name: BTreeMap<String, Iface> = BTreeMap::new();
    for ni in nix::net::if_::if_nameindex()?.iter() {
        let name = ni.name().to_string_lossy().into_owned();
        by_name.insert(name.clone(), Iface { ifindex: ni.index(), name, loopback: false, addrs: Vec::new() });
    }
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(iface) = by_name.get_mut(&ifa.interface_name) else { continue };
        iface.loopback |= ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK);
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        iface.addrs.push(ip);
    }
    Ok(by_name.into_values().collect())
}
