//! Runtime allowed VLAN sets (design §4, §5 step 1): which tagged frames an
//! attached link lets through to its VLAN subinterfaces. Pure.
//!
//! Allowed set of an attached link D =
//!   { VID of each VLAN subinterface V on D (`lower == D`) whose traffic is
//!     evaluated by hostfwd: V is attached (enforce *or* vlan-guard), or V is
//!     a port (bridged VLAN) whose controller is attached }
//!   ∪ configured bypass VIDs (1..=4094; `0` sets [`AllowSet::all`]).
//!
//! The design says "whose role is enforce"; vlan-guard subinterfaces count
//! too because a vlan-guard enforces untagged traffic exactly like an enforce
//! link, and without them QinQ (`bond0.100` without addresses, carrying
//! `bond0.100.200` with the host address) would be cut off at `bond0`.
//! Everything else — no subinterface, an excluded one, one whose bridge is
//! not attached — is left out: its tagged frames are dropped on D (fail
//! closed). A tag is allowed as soon as its subinterface is in the table;
//! there is no cap on the number of VIDs (one map entry each).

use std::collections::{BTreeMap, BTreeSet};

use crate::links::{Ifindex, LinkKind, Table, Vid};
use crate::select::{receiving_link, Decision};

/// The tags an attached link lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowSet {
    /// Every tag passes (bypass `0`): `L_VLAN_ALLOW_ALL`.
    pub all: bool,
    pub vids: BTreeSet<Vid>,
}

impl AllowSet {
    pub fn allows(&self, vid: Vid) -> bool {
        self.all || self.vids.contains(&vid)
    }
}

/// The allow set of every attached link (role enforce or vlan-guard) in
/// `decisions`. `bypass` values above 4094 are ignored (the configuration
/// rejects them).
pub fn allowed(table: &Table, decisions: &BTreeMap<Ifindex, Decision>, bypass: &[u16]) -> BTreeMap<Ifindex, AllowSet> {
    let attached = |i: Ifindex| decisions.get(&i).is_some_and(|d| d.role.is_attached());
    let base = AllowSet { all: bypass.contains(&0), vids: bypass.iter().filter_map(|&v| Vid::new(v)).collect() };
    let mut out: BTreeMap<Ifindex, AllowSet> =
        decisions.iter().filter(|(_, d)| d.role.is_attached()).map(|(i, _)| (*i, base.clone())).collect();
    for link in table.iter() {
        let LinkKind::Vlan { vid, lower } = link.kind else { continue };
        let Some(set) = out.get_mut(&lower) else { continue };
        if receiving_link(table, link.ifindex).is_some_and(attached) {
            set.vids.insert(vid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::topo::*;
    use crate::select::{select, Role};
    use crate::links::LinkKind;

    fn sets(t: &Topo, devices: &[&str], exclude: &[&str], bypass: &[u16]) -> BTreeMap<u32, (bool, Vec<u16>)> {
        let d = select(&t.t, &cfg(devices, exclude, bypass));
        allowed(&t.t, &d, bypass).into_iter().map(|(i, s)| (i.get(), (s.all, s.vids.iter().map(|v| v.get()).collect()))).collect()
    }

    fn set(entries: &[(u32, bool, &[u16])]) -> BTreeMap<u32, (bool, Vec<u16>)> {
        entries.iter().map(|(i, all, v)| (*i, (*all, v.to_vec()))).collect()
    }

    #[test]
    fn reference_topology_allows_its_vlan_on_the_bond() {
        let t = Topo::reference();
        assert_eq!(sets(&t, &["bond0"], &[], &[]), set(&[(4, false, &[1000]), (5, false, &[])]));
        assert_eq!(sets(&t, &["auto"], &[], &[]), set(&[(4, false, &[1000]), (5, false, &[])]));
        // Only the VLAN listed: nothing on bond0 to fill.
        assert_eq!(sets(&t, &["bond0.1000"], &[], &[]), set(&[(5, false, &[])]));
    }

    #[test]
    fn vids_follow_subinterfaces() {
        let t = Topo::reference().vlan(6, "bond0.2000", 2000, 4).addr(6, "10.20.0.5/24");
        assert_eq!(sets(&t, &["bond0"], &[], &[]), set(&[(4, false, &[1000, 2000]), (5, false, &[]), (6, false, &[])]));
        let t = t.gone(6);
        assert_eq!(sets(&t, &["bond0"], &[], &[]), set(&[(4, false, &[1000]), (5, false, &[])]));
        // bond0 re-created with a new ifindex, its VLAN too: the new ones.
        let t = t.gone(5).gone(4).bond(14, "bond0").enslave(2, 14).enslave(3, 14).vlan(15, "bond0.1000", 1000, 14).addr(15, "192.168.1.201/24");
        assert_eq!(sets(&t, &["bond0"], &[], &[]), set(&[(14, false, &[1000]), (15, false, &[])]));
    }

    #[test]
    fn excluded_vlan_is_not_allowed_unless_bypassed() {
        let t = Topo::reference();
        assert_eq!(sets(&t, &["bond0"], &["bond0.1000"], &[]), set(&[(4, false, &[])]));
        assert_eq!(sets(&t, &["bond0"], &["bond0.1000"], &[1000]), set(&[(4, false, &[1000])]));
    }

    #[test]
    fn bypass_zero_and_bypass_five() {
        let t = Topo::reference();
        assert_eq!(sets(&t, &["bond0"], &[], &[0]), set(&[(4, true, &[1000]), (5, true, &[])]));
        assert_eq!(sets(&t, &["bond0"], &[], &[5]), set(&[(4, false, &[5, 1000]), (5, false, &[5])]));
        // Out-of-range values are ignored, not wrapped or trusted.
        assert_eq!(sets(&t, &["bond0"], &[], &[4095, 5000, 65535]), set(&[(4, false, &[1000]), (5, false, &[])]));
        let s = AllowSet { all: true, vids: BTreeSet::new() };
        assert!(s.allows(vid(7)));
        assert!(!AllowSet::default().allows(vid(7)));
    }

    #[test]
    fn qinq_and_bridged_vlans() {
        let t = Topo::new()
            .phys(2, "eth0")
            .vlan(3, "eth0.100", 100, 2)
            .vlan(4, "eth0.100.200", 200, 3)
            .addr(4, "192.0.2.9/24")
            .vlan(6, "eth0.300", 300, 2)
            .bridge(7, "br300")
            .enslave(6, 7)
            .vlan(8, "eth0.400", 400, 2)
            .bridge(9, "br400")
            .enslave(8, 9);
        assert_eq!(
            sets(&t, &["eth0"], &["br400"], &[]),
            set(&[(2, false, &[100, 300]), (3, false, &[200]), (4, false, &[]), (7, false, &[])])
        );
    }

    #[test]
    fn a_thousand_vlans_no_cap() {
        let mut t = Topo::reference();
        for v in 1..=1000u16 {
            let i = 100 + v as u32;
            t = t.vlan(i, &format!("bond0.{}", 2000 + v), 2000 + v, 4).addr(i, &format!("10.{}.{}.1/24", v / 256, v % 256));
        }
        let s = sets(&t, &["bond0"], &[], &[]);
        assert_eq!(s[&4].1.len(), 1001);
        assert_eq!(s.len(), 1002);
    }

    #[test]
    fn decisions_decide_not_the_table() {
        // A VLAN whose decision is missing or ignored is not allowed; a link
        // without a decision gets no set.
        let t = Topo::reference().link(9, "dummy0", LinkKind::Other { name: "dummy".into() });
        let mut d = select(&t.t, &cfg(&["bond0"], &[], &[]));
        d.remove(&ifx(5));
        let s = allowed(&t.t, &d, &[]);
        assert_eq!(s.keys().map(|i| i.get()).collect::<Vec<_>>(), vec![4]);
        assert!(s[&ifx(4)].vids.is_empty());
        let mut d = select(&t.t, &cfg(&["bond0"], &[], &[]));
        if let Some(x) = d.get_mut(&ifx(5)) {
            x.role = Role::Ignored;
        }
        assert!(allowed(&t.t, &d, &[])[&ifx(4)].vids.is_empty());
    }
}
