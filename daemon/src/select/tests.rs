//! The selection rules of `select`, one topology each.

use super::topo::*;
use super::*;

type Decisions = BTreeMap<Ifindex, Decision>;

fn sel(t: &Topo, devices: &[&str], exclude: &[&str], bypass: &[u16]) -> Decisions {
    let d = select(&t.t, &cfg(devices, exclude, bypass));
    assert_eq!(d.len(), t.t.len(), "every link gets exactly one decision");
    d
}

fn role(d: &Decisions, i: u32) -> Role {
    d[&ifx(i)].role
}

fn reason(d: &Decisions, i: u32) -> &str {
    &d[&ifx(i)].reason
}

fn warning(d: &Decisions, i: u32) -> &str {
    d[&ifx(i)].warning.as_deref().unwrap_or("")
}

fn roles(d: &Decisions) -> Vec<(u32, Role)> {
    d.iter().map(|(i, d)| (i.get(), d.role)).collect()
}

use Role::{Enforce as E, Ignored as I, VlanGuard as G};

#[test]
fn reference_report_topology_explicit_bond0() {
    let t = Topo::reference();
    let d = sel(&t, &["bond0"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
    assert_eq!(reason(&d, 1), "loopback");
    assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
    assert_eq!(reason(&d, 3), "port of bond0: its controller is the place");
    assert!(reason(&d, 4).starts_with("selected by `bond0` in devices; without host addresses"), "{}", reason(&d, 4));
    assert!(reason(&d, 4).contains("tagged frames pass only for VIDs of its enforced VLAN subinterfaces"));
    assert_eq!(reason(&d, 5), "VLAN 1000 on selected bond0 carries host addresses");
    assert!(d.values().all(|d| d.warning.is_none()), "{d:#?}");
}

#[test]
fn reference_report_topology_auto_attaches_the_lower_bond_as_guard() {
    let t = Topo::reference();
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
    assert!(reason(&d, 5).starts_with("auto: carries a global unicast address"), "{}", reason(&d, 5));
    assert!(reason(&d, 4).starts_with("auto: lower device of bond0.1000"), "{}", reason(&d, 4));
    assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
    assert!(d.values().all(|d| d.warning.is_none()), "{d:#?}");
}

#[test]
fn explicit_vlan_without_its_lower_warns_about_the_gap() {
    let t = Topo::reference();
    let d = sel(&t, &["bond0.1000"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, E)]);
    assert!(reason(&d, 5).starts_with("selected by `bond0.1000` in devices"));
    assert!(warning(&d, 5).contains("lower device is not attached (bond0 is not selected)"), "{}", warning(&d, 5));
    assert!(warning(&d, 5).contains("select bond0 too"));
    assert_eq!(reason(&d, 4), r#"not selected by devices = ["bond0.1000"]"#);
    // auto with the lower excluded: attached VLAN, the same warning.
    let d = sel(&t, &["auto"], &["bond0"], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, E)]);
    assert_eq!(reason(&d, 4), "excluded by `bond0`");
    assert!(warning(&d, 5).contains("bond0 is excluded by `bond0`"), "{}", warning(&d, 5));
}

#[test]
fn vlan_subinterfaces_follow_the_lower_device() {
    let t = Topo::reference();
    // A new VLAN with an address: enforce, without being listed.
    let t2 = t.clone().vlan(6, "bond0.2000", 2000, 4).addr(6, "10.20.0.5/24");
    let d = sel(&t2, &["bond0"], &[], &[]);
    assert_eq!(role(&d, 6), E);
    assert_eq!(reason(&d, 6), "VLAN 2000 on selected bond0 carries host addresses");
    // Without an address: a guard (its traffic to the host is enforced).
    let t3 = t.clone().vlan(6, "bond0.2000", 2000, 4);
    let d = sel(&t3, &["bond0"], &[], &[]);
    assert_eq!(role(&d, 6), G);
    assert!(reason(&d, 6).starts_with("VLAN 2000 on selected bond0; without host addresses"), "{}", reason(&d, 6));
    // Deleted again: gone from the answer.
    let d = sel(&t2.gone(6), &["bond0"], &[], &[]);
    assert!(!d.contains_key(&ifx(6)));
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
}

#[test]
fn excluded_vlan_with_host_addresses_is_a_loud_fail_closed_warning() {
    let t = Topo::reference();
    let d = sel(&t, &["bond0"], &["bond0.1000"], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, I)]);
    assert_eq!(reason(&d, 5), "excluded by `bond0.1000`: tag 1000 is dropped on bond0");
    let w = warning(&d, 4);
    assert!(w.contains("bond0.1000 (VLAN 1000) carries host addresses but is excluded by `bond0.1000`"), "{w}");
    assert!(w.contains("would reach host addresses without enforcement"), "{w}");
    assert!(w.contains("VID 1000 is not allowed and is dropped on bond0 (fail closed)"), "{w}");
    assert_eq!(warning(&d, 5), w, "the VLAN carries the warning too");
    // Bypassing the tag on purpose: allowed, but said loudly.
    let d = sel(&t, &["bond0"], &["bond0.1000"], &[1000]);
    assert_eq!(reason(&d, 5), "excluded by `bond0.1000`: tag 1000 passes bond0 unevaluated (vlan_bypass)");
    assert!(warning(&d, 4).contains("VID 1000 is in vlan_bypass: its tagged traffic passes bond0 and reaches host addresses without evaluation"));
    // An excluded VLAN without addresses: dropped, said in its reason only.
    let t2 = t.vlan(6, "bond0.2000", 2000, 4);
    let d = sel(&t2, &["bond0"], &["bond0.2000"], &[]);
    assert_eq!(role(&d, 6), I);
    assert_eq!(reason(&d, 6), "excluded by `bond0.2000`: tag 2000 is dropped on bond0");
    assert_eq!(warning(&d, 4), "");
}

#[test]
fn bypass_zero_warns_on_lower_devices() {
    let t = Topo::reference();
    let d = sel(&t, &["bond0"], &[], &[0]);
    assert!(warning(&d, 4).contains("bypass 0: every tag passes unevaluated"), "{}", warning(&d, 4));
    assert_eq!(warning(&d, 5), "", "bond0.1000 has addresses and no VLANs of its own");
    // A plain VID does not warn: its subinterface is enforced.
    let d = sel(&t, &["bond0"], &[], &[5]);
    assert_eq!(warning(&d, 4), "");
    // An enforced device with VLANs on it is a lower device too.
    let t2 = Topo::new().phys(2, "eth0").addr(2, "192.0.2.1/24").vlan(3, "eth0.7", 7, 2);
    let d = sel(&t2, &["eth0"], &[], &[0]);
    assert_eq!(roles(&d), vec![(2, E), (3, G)]);
    assert!(warning(&d, 2).contains("bypass 0"));
    assert!(warning(&d, 3).contains("bypass 0"), "a guard without VLANs still admits tags");
}

#[test]
fn explicitly_listed_port_selects_its_controller_and_warns() {
    let t = Topo::reference();
    let d = sel(&t, &["eth0"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
    assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
    assert!(warning(&d, 2).contains("`eth0` in devices matches eth0, a port of bond0: programs are never attached to ports; bond0 is selected in its place"), "{}", warning(&d, 2));
    assert!(reason(&d, 4).starts_with("selected in place of its port eth0"), "{}", reason(&d, 4));
    // Globs over ports: each port warns, nothing is attached to them.
    let d = sel(&t, &["eth*"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E)]);
    assert!(warning(&d, 3).contains("`eth*` in devices matches eth1"));
    // The controller excluded: nothing attached, said so.
    let d = sel(&t, &["eth0"], &["bond0"], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, I)]);
    assert!(warning(&d, 2).contains("nothing is attached in its place (bond0 is excluded by `bond0`)"), "{}", warning(&d, 2));
    // The port excluded itself: no promotion.
    let d = sel(&t, &["eth0"], &["eth0"], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, I)]);
}

#[test]
fn loopback_is_never_attached() {
    let t = Topo::new().lo().phys(2, "eth0").addr(2, "192.0.2.1/24");
    let d = sel(&t, &["lo", "eth0"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, E)]);
    assert_eq!(reason(&d, 1), "loopback");
    assert!(warning(&d, 1).contains("loopback is never attached"));
    let d = sel(&t, &["*"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, E)]);
}

#[test]
fn auto_skips_plumbing_with_reasons() {
    let t = Topo::new()
        .lo()
        .phys(2, "eth0")
        .addr(2, "192.0.2.10/24")
        .addr(2, "fe80::1/64")
        .phys(3, "eth1")
        .addr(3, "fe80::2/64")
        .bridge(4, "docker0")
        .addr(4, "172.17.0.1/16")
        .link(5, "veth12ab", LinkKind::Veth)
        .enslave(5, 4)
        .link(6, "lxc1234", LinkKind::Veth)
        .addr(6, "10.0.0.1/32")
        .peer_elsewhere(6)
        .link(7, "flannel.1", LinkKind::Tunnel { name: "vxlan".into() })
        .addr(7, "10.244.0.0/32")
        .bridge(8, "br-0123456789ab")
        .addr(8, "172.18.0.1/16")
        .bridge(9, "cni0")
        .addr(9, "10.244.0.1/24")
        .link(10, "wg0", LinkKind::Tunnel { name: "wireguard".into() })
        .addr(10, "10.99.0.1/24")
        .link(11, "tun0", LinkKind::Other { name: "tun".into() })
        .addr(11, "10.8.0.1/24")
        .link(12, "uplink", LinkKind::Veth)
        .addr(12, "198.51.100.7/24")
        .peer_elsewhere(12)
        .default_v4(&[12])
        .bridge(13, "br-lan")
        .addr(13, "192.0.2.200/24")
        .default_v4(&[12]);
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(
        roles(&d),
        vec![(1, I), (2, E), (3, I), (4, I), (5, I), (6, I), (7, I), (8, I), (9, I), (10, I), (11, I), (12, E), (13, E)]
    );
    assert_eq!(reason(&d, 3), r#"not selected by devices = ["auto"]: no global unicast address or default route"#);
    assert_eq!(reason(&d, 4), "container/virtual plumbing (name starts with `docker`): auto does not select container or virtual plumbing");
    assert_eq!(reason(&d, 5), "port of docker0: its controller is the place");
    assert_eq!(
        reason(&d, 6),
        "veth without a default route (container plumbing, peer in another network namespace): auto does not select container or virtual plumbing"
    );
    assert!(reason(&d, 7).starts_with("tunnel (vxlan)"));
    assert!(reason(&d, 8).starts_with("container/virtual plumbing (a Docker network bridge)"));
    assert!(reason(&d, 9).contains("`cni`"));
    assert!(reason(&d, 10).starts_with("tunnel (wireguard)"));
    assert!(reason(&d, 11).starts_with("tun device"));
    assert!(reason(&d, 12).starts_with("auto: carries a global unicast address"), "the netns uplink veth: {}", reason(&d, 12));
    // Listed explicitly, plumbing is selected.
    let d = sel(&t, &["auto", "wg0", "docker0"], &[], &[]);
    assert_eq!(role(&d, 10), E);
    assert_eq!(role(&d, 4), E);
    assert_eq!(role(&d, 5), I, "docker0's ports stay ignored");
}

#[test]
fn auto_default_route_without_address_is_a_guard() {
    let t = Topo::new().phys(2, "ppp-ish").addr(2, "fe80::5/64").default_v4(&[2]);
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(role(&d, 2), G);
    assert!(reason(&d, 2).starts_with("auto: has a default route; without host addresses"));
}

#[test]
fn auto_picks_the_bond_for_its_slaves_and_itself() {
    // A slave still holding an address (before NetworkManager moved it):
    // the bond is picked, never the slave.
    let t = Topo::new().phys(2, "eth0").phys(3, "eth1").bond(4, "bond0").enslave(2, 4).enslave(3, 4).addr(2, "192.0.2.1/24");
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(roles(&d), vec![(2, I), (3, I), (4, G)]);
    assert!(reason(&d, 4).starts_with("auto: controller of eth0, which carries a global unicast address"), "{}", reason(&d, 4));
    // The bond with its own address.
    let t = t.unaddr(2, "192.0.2.1/24").addr(4, "192.0.2.1/24");
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(roles(&d), vec![(2, I), (3, I), (4, E)]);
    assert!(reason(&d, 4).starts_with("auto: carries a global unicast address"));
}

#[test]
fn explicit_device_without_addresses_or_vlans_is_a_guard() {
    let t = Topo::new().phys(2, "eth0").addr(2, "192.0.2.1/24").phys(3, "eth1");
    let d = sel(&t, &["eth*"], &["eth9*"], &[]);
    assert_eq!(roles(&d), vec![(2, E), (3, G)]);
    assert!(reason(&d, 2).starts_with("selected by `eth*` in devices; carries host addresses"));
    assert!(reason(&d, 3).contains("without host addresses: untagged frames are enforced here"));
    let t = t.phys(9, "eth9");
    let d = sel(&t, &["eth*"], &["eth9*"], &[]);
    assert_eq!(reason(&d, 9), "excluded by `eth9*`");
}

#[test]
fn vlan_glob_selects_subinterfaces() {
    let t = Topo::reference().vlan(6, "bond0.2000", 2000, 4).addr(6, "10.20.0.5/24");
    let d = sel(&t, &["bond0.*"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, I), (5, E), (6, E)]);
    assert!(warning(&d, 5).contains("select bond0 too"));
}

#[test]
fn qinq_follows_the_lower_chain() {
    let t = Topo::new()
        .phys(2, "eth0")
        .vlan(3, "eth0.100", 100, 2)
        .vlan(4, "eth0.100.200", 200, 3)
        .addr(4, "192.0.2.9/24")
        .vlan(5, "eth0.100.300", 300, 3);
    let d = sel(&t, &["eth0"], &[], &[]);
    assert_eq!(roles(&d), vec![(2, G), (3, G), (4, E), (5, G)]);
    assert_eq!(reason(&d, 4), "VLAN 200 on selected eth0.100 carries host addresses");
    // auto climbs the chain from the addressed inner VLAN.
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(roles(&d), vec![(2, G), (3, G), (4, E), (5, G)]);
    assert!(reason(&d, 3).starts_with("auto: lower device of eth0.100.200"));
    assert!(reason(&d, 2).starts_with("auto: lower device of eth0.100"));
    // The middle excluded: the inner one is cut off (fail closed).
    let d = sel(&t, &["eth0"], &["eth0.100"], &[]);
    assert_eq!(roles(&d), vec![(2, G), (3, I), (4, I), (5, I)]);
    assert_eq!(reason(&d, 4), r#"not selected by devices = ["eth0"]"#);
    assert!(warning(&d, 2).contains("eth0.100 (VLAN 100) leads to host addresses on eth0.100.200 but is excluded by `eth0.100`"), "{}", warning(&d, 2));
}

#[test]
fn bridged_vlan_attaches_its_bridge_instead() {
    // Hypervisor: bond0.2000 is a port of br-vm (VMs, no host address);
    // bond0.3000 is a port of br-mgmt, which carries the host address.
    let t = Topo::reference()
        .vlan(6, "bond0.2000", 2000, 4)
        .bridge(7, "br-vm")
        .enslave(6, 7)
        .link(8, "vnet0", LinkKind::Other { name: "tun".into() })
        .enslave(8, 7)
        .vlan(9, "bond0.3000", 3000, 4)
        .bridge(10, "br-mgmt")
        .enslave(9, 10)
        .addr(10, "10.30.0.2/24");
    let d = sel(&t, &["bond0"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (3, I), (4, G), (5, E), (6, I), (7, G), (8, I), (9, I), (10, E)]);
    assert_eq!(reason(&d, 6), "port of br-vm: its controller is the place");
    assert!(reason(&d, 7).starts_with("controller of bond0.2000 (VLAN 2000 on selected bond0)"), "{}", reason(&d, 7));
    assert!(reason(&d, 10).starts_with("controller of bond0.3000 (VLAN 3000 on selected bond0); carries host addresses"));
    // The management bridge excluded: loud warning, fail closed.
    let d = sel(&t, &["bond0"], &["br-mgmt"], &[]);
    assert_eq!(role(&d, 10), I);
    assert!(
        warning(&d, 4).contains("bond0.3000 (VLAN 3000) leads to host addresses on br-mgmt but its traffic goes to a link that is not attached (br-mgmt is excluded by `br-mgmt`)"),
        "{}",
        warning(&d, 4)
    );
    assert!(warning(&d, 4).contains("VID 3000 is not allowed and is dropped on bond0 (fail closed)"));
}

#[test]
fn vrf_ports_keep_their_own_role() {
    let t = Topo::new().link(2, "vrf-blue", LinkKind::Other { name: "vrf".into() }).phys(3, "eth0").addr(3, "192.0.2.1/24").enslave(3, 2);
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(roles(&d), vec![(2, I), (3, E)]);
    assert_eq!(receiving_link(&t.t, ifx(3)), Some(ifx(3)));
}

#[test]
fn transitions_follow_the_table() {
    let devices = ["eth0"];
    // eth0 with the address.
    let t = Topo::new().lo().phys(2, "eth0").addr(2, "192.0.2.1/24").default_v4(&[2]);
    assert_eq!(roles(&sel(&t, &devices, &[], &[])), vec![(1, I), (2, E)]);
    // NetworkManager creates bond0, enslaves eth0, moves the address.
    let t = t.bond(4, "bond0").enslave(2, 4).unaddr(2, "192.0.2.1/24").addr(4, "192.0.2.1/24").default_v4(&[4]);
    let d = sel(&t, &devices, &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (4, E)]);
    assert!(warning(&d, 2).contains("bond0 is selected in its place"));
    let d = sel(&t, &["auto"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (4, E)]);
    // bond0 deleted and re-created with a new ifindex.
    let t = t.gone(4).release(2).bond(14, "bond0").enslave(2, 14).addr(14, "192.0.2.1/24");
    let d = sel(&t, &["bond0"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, I), (14, E)]);
    assert_eq!(reason(&d, 2), "port of bond0: its controller is the place");
    // Released again: eth0 is its own place.
    let t = t.release(2).addr(2, "198.51.100.1/24");
    let d = sel(&t, &["eth0"], &[], &[]);
    assert_eq!(roles(&d), vec![(1, I), (2, E), (14, I)]);
    // Renamed: a name-based selection follows the name.
    let t = t.rename(2, "lan0");
    let d = sel(&t, &["eth0"], &[], &[]);
    assert_eq!(role(&d, 2), I);
    assert_eq!(unmatched_patterns(&t.t, &cfg(&["eth0", "auto", "bond*"], &[], &[])), vec!["eth0".to_string()]);
    let d = sel(&t, &["lan*"], &[], &[]);
    assert_eq!(role(&d, 2), E);
    // Address removed: the selected link becomes a guard.
    let t = t.unaddr(2, "198.51.100.1/24");
    assert_eq!(role(&sel(&t, &["lan*"], &[], &[]), 2), G);
    // ... and auto no longer picks it.
    assert_eq!(role(&sel(&t, &["auto"], &[], &[]), 2), I);
    // A port whose controller the table has not seen yet.
    let t = t.enslave(2, 99);
    let d = sel(&t, &["lan0"], &[], &[]);
    assert_eq!(reason(&d, 2), "port of ifindex 99 (not seen yet): its controller is the place");
    assert!(warning(&d, 2).contains("nothing is attached in its place (ifindex 99 is not in the link table)"), "{}", warning(&d, 2));
}

#[test]
fn a_thousand_vlans_on_one_bond() {
    let mut t = Topo::reference();
    for v in 1..=1000u16 {
        let i = 100 + v as u32;
        t = t.vlan(i, &format!("bond0.{}", 2000 + v), 2000 + v, 4).addr(i, &format!("10.{}.{}.1/24", v / 256, v % 256));
    }
    let d = sel(&t, &["bond0"], &[], &[]);
    assert_eq!(d.values().filter(|d| d.role == E).count(), 1001);
    assert_eq!(role(&d, 4), G);
    assert_eq!(reason(&d, 1100), "VLAN 3000 on selected bond0 carries host addresses");
}

#[test]
fn empty_devices_select_nothing_and_unmatched_patterns_are_reported() {
    let t = Topo::reference();
    let d = sel(&t, &[], &[], &[]);
    assert!(d.values().all(|d| d.role == I));
    assert_eq!(reason(&d, 4), "not selected by devices = []");
    assert_eq!(
        unmatched_patterns(&t.t, &cfg(&["auto", "bond0", "eth9", "bond1.*", "eth?"], &[], &[])),
        vec!["eth9".to_string(), "bond1.*".to_string()]
    );
}

#[test]
fn role_names_and_receiving_links() {
    assert_eq!(Role::VlanGuard.to_string(), "vlan-guard");
    assert_eq!(serde_json::to_string(&Role::VlanGuard).unwrap_or_default(), "\"vlan-guard\"");
    assert!(Role::Enforce.is_attached() && Role::VlanGuard.is_attached() && !Role::Ignored.is_attached());
    let t = Topo::new().phys(2, "eth0").bond(3, "bond0").bridge(4, "br0").enslave(2, 3).enslave(3, 4);
    assert_eq!(receiving_link(&t.t, ifx(2)), Some(ifx(4)));
    assert_eq!(receiving_link(&t.t, ifx(7)), None);
    // A controller loop (never from a real kernel) does not hang.
    let t = t.enslave(4, 2);
    assert_eq!(receiving_link(&t.t, ifx(2)), None);
    let d = sel(&t, &["eth0"], &[], &[]);
    assert!(d.values().all(|d| d.role == I));
    assert!(warning(&d, 2).contains("loop"));
    // Nested controllers: a listed slave selects the top.
    let t = Topo::new().phys(2, "eth0").bond(3, "bond0").bridge(4, "br0").enslave(2, 3).enslave(3, 4).addr(4, "192.0.2.1/24");
    let d = sel(&t, &["eth0"], &[], &[]);
    assert_eq!(roles(&d), vec![(2, I), (3, I), (4, E)]);
    assert_eq!(reason(&d, 3), "port of br0: its controller is the place");
}
