//! Topology builders shared by the tests of `select`, `vlan` and
//! `reconcile`: link tables built from a few lines.

use crate::links::{Change, Ifindex, Link, LinkKind, Table, Vid};

pub fn ifx(i: u32) -> Ifindex {
    Ifindex::new(i).expect("test ifindex")
}

pub fn vid(v: u16) -> Vid {
    Vid::new(v).expect("test vid")
}

/// A table under construction.
#[derive(Default, Clone)]
pub struct Topo {
    pub t: Table,
}

impl Topo {
    pub fn new() -> Topo {
        Topo::default()
    }

    pub fn link(mut self, i: u32, name: &str, kind: LinkKind) -> Topo {
        self.t.apply(Change::Link(Link::new(ifx(i), name, kind)));
        self
    }

    pub fn lo(self) -> Topo {
        self.link(1, "lo", LinkKind::Loopback).addr(1, "127.0.0.1/8").addr(1, "::1/128")
    }

    pub fn phys(self, i: u32, name: &str) -> Topo {
        self.link(i, name, LinkKind::Physical)
    }

    pub fn bond(self, i: u32, name: &str) -> Topo {
        self.link(i, name, LinkKind::Bond)
    }

    pub fn bridge(self, i: u32, name: &str) -> Topo {
        self.link(i, name, LinkKind::Bridge)
    }

    pub fn vlan(self, i: u32, name: &str, v: u16, lower: u32) -> Topo {
        self.link(i, name, LinkKind::Vlan { vid: vid(v), lower: ifx(lower) })
    }

    /// Sets `i`'s controller (a NEWLINK with IFLA_MASTER).
    pub fn enslave(mut self, i: u32, controller: u32) -> Topo {
        let mut l = self.t.get(ifx(i)).expect("link").clone();
        l.controller = Some(ifx(controller));
        self.t.apply(Change::Link(l));
        self
    }

    pub fn release(mut self, i: u32) -> Topo {
        let mut l = self.t.get(ifx(i)).expect("link").clone();
        l.controller = None;
        self.t.apply(Change::Link(l));
        self
    }

    pub fn rename(mut self, i: u32, name: &str) -> Topo {
        let mut l = self.t.get(ifx(i)).expect("link").clone();
        l.name = name.into();
        self.t.apply(Change::Link(l));
        self
    }

    pub fn peer_elsewhere(mut self, i: u32) -> Topo {
        let mut l = self.t.get(ifx(i)).expect("link").clone();
        l.peer_in_other_netns = true;
        self.t.apply(Change::Link(l));
        self
    }

    pub fn addr(mut self, i: u32, a: &str) -> Topo {
        self.t.apply(Change::AddrAdded(ifx(i), a.parse().expect("test address")));
        self
    }

    pub fn unaddr(mut self, i: u32, a: &str) -> Topo {
        self.t.apply(Change::AddrRemoved(ifx(i), a.parse().expect("test address")));
        self
    }

    pub fn gone(mut self, i: u32) -> Topo {
        self.t.apply(Change::LinkGone(ifx(i)));
        self
    }

    /// The IPv4 default route leaves through `via`.
    pub fn default_v4(mut self, via: &[u32]) -> Topo {
        self.t.apply(Change::DefaultRoutes { v6: false, via: via.iter().map(|i| ifx(*i)).collect() });
        self
    }

    /// The reference report's topology: bond0 (no address) over eth0 and
    /// eth1; bond0.1000 with the host address and the default route.
    pub fn reference() -> Topo {
        Topo::new()
            .lo()
            .phys(2, "eth0")
            .phys(3, "eth1")
            .bond(4, "bond0")
            .enslave(2, 4)
            .enslave(3, 4)
            .addr(4, "fe80::1/64")
            .vlan(5, "bond0.1000", 1000, 4)
            .addr(5, "192.168.1.201/24")
            .addr(5, "fe80::2/64")
            .default_v4(&[5])
    }
}

pub fn cfg(devices: &[&str], exclude: &[&str], bypass: &[u16]) -> super::SelectConfig {
    super::SelectConfig {
        devices: devices.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        vlan_bypass: bypass.to_vec(),
    }
}
