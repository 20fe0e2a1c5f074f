//! The plan's promises, on topologies and on random tables, with the
//! kernel modelled by `step`; the executor's tests reuse the helpers.

use super::*;
use crate::links::{Change, Link, LinkKind};
use crate::select::topo::*;
use crate::select::{select, SelectConfig};
use crate::vlan::allowed;

pub(crate) const PROGS: (u32, u32) = (41, 42);
const ENF: u32 = l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS;
use Direction::{Egress as Eg, Ingress as In};

/// What the executor does, on a model of the kernel.
fn apply(actual: &Actual, actions: &[Action], prog_ids: (u32, u32)) -> Actual {
    let mut a = actual.clone();
    for act in actions {
        step(&mut a, act, prog_ids);
    }
    a
}

pub(crate) fn step(a: &mut Actual, act: &Action, prog_ids: (u32, u32)) {
    match *act {
        Action::SetGlobal(g) => a.global = g,
        Action::AddFailsafe(f) => {
            a.failsafe.insert(f);
        }
        Action::RemoveFailsafe(f) => {
            a.failsafe.remove(&f);
        }
        Action::AddLocal(n) => {
            a.local.insert(n);
        }
        Action::RemoveLocal(n) => {
            a.local.remove(&n);
        }
        Action::SetLink(i, f) => {
            a.links.insert(i, f);
        }
        Action::RemoveLink(i) => {
            a.links.remove(&i);
        }
        Action::AllowVlan(i, v) => {
            a.vlans.insert((i, v));
        }
        Action::DisallowVlan(i, v) => {
            a.vlans.remove(&(i, v));
        }
        Action::Attach(i, d) => {
            // A fresh attachment is read back afresh; an update in place
            // keeps its place on the hook.
            if a.attachments.insert((i, d), if d == In { prog_ids.0 } else { prog_ids.1 }).is_none() {
                a.ahead.remove(&(i, d));
            }
        }
        Action::MoveToFront(i, d) => {
            a.attachments.insert((i, d), if d == In { prog_ids.0 } else { prog_ids.1 });
            a.ahead.remove(&(i, d));
        }
        Action::Detach(i, d) => {
            a.attachments.remove(&(i, d));
            a.ahead.remove(&(i, d));
        }
    }
}

pub(crate) fn pipeline(t: &Topo, c: &SelectConfig, audit: &[u32]) -> Desired {
    let d = select(&t.t, c);
    let s = allowed(&t.t, &d, &c.vlan_bypass);
    let g = Settings { audit_links: audit.iter().map(|i| ifx(*i)).collect(), to_front: true, ..Settings::default() };
    desired(&t.t, &d, &s, &g, PROGS)
}

pub(crate) fn materialize(d: &Desired) -> Actual {
    let mut a = Actual { local: d.local.clone(), global: d.global, failsafe: d.failsafe.clone(), ..Actual::default() };
    for (i, s) in &d.links {
        a.attachments.insert((*i, In), d.prog_ids.0);
        a.attachments.insert((*i, Eg), d.prog_ids.1);
        a.links.insert(*i, s.flags);
        a.vlans.extend(s.vids.iter().map(|v| (*i, *v)));
    }
    a
}

pub(crate) fn pos(plan: &[Action], a: Action) -> usize {
    plan.iter().position(|x| *x == a).unwrap_or_else(|| panic!("{a} not in plan {plan:?}"))
}

#[test]
fn settings_and_failsafe_ports_come_first_and_their_removal_last() {
    let t = Topo::reference();
    let mut d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
    d.global.audit = false;
    d.failsafe = [(In, 6, 22)].into();
    let mut a = materialize(&d);
    a.global.audit = true;
    a.failsafe = [(In, 6, 2222)].into();
    a.attachments.clear();
    let p = plan(&d, &a);
    assert_eq!(&p[..2], &[Action::SetGlobal(d.global), Action::AddFailsafe((In, 6, 22))]);
    assert_eq!(p.last(), Some(&Action::RemoveFailsafe((In, 6, 2222))));
    assert!(plan(&d, &apply(&a, &p, PROGS)).is_empty());
    // The datapath marks its settings written with a burst of 1 at least.
    let s = Settings { global: GlobalSettings { events_burst: 0, ..GlobalSettings::default() }, ..Settings::default() };
    let (dec, sets) = (select(&t.t, &cfg(&[], &[], &[])), BTreeMap::new());
    assert_eq!(desired(&t.t, &dec, &sets, &s, PROGS).global.events_burst, 1);
}

#[test]
fn reference_topology_from_scratch() {
    let t = Topo::reference();
    let d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
    assert_eq!(d.links.keys().copied().collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(d.links[&4], LinkState { flags: ENF, vids: [1000].into() });
    assert_eq!(d.links[&5], LinkState { flags: ENF, vids: BTreeSet::new() });
    assert_eq!(d.attach_order, vec![5, 4], "bond0.1000 is guarded before bond0 lets tag 1000 through");
    assert_eq!(d.local.len(), 4, "every address of every link, any scope, but 127.0.0.0/8");
    let p = plan(&d, &Actual::default());
    let n = |s: &str| -> IpNet { s.parse().unwrap() };
    assert_eq!(&p[..4], &d.local.iter().map(|a| Action::AddLocal(*a)).collect::<Vec<_>>()[..]);
    assert!(d.local.contains(&n("192.168.1.201/32")));
    assert!(d.local.contains(&n("::1/128")));
    assert!(!d.local.contains(&n("127.0.0.1/32")), "the datapath's own");
    assert_eq!(
        &p[4..],
        &[
            Action::SetLink(5, ENF),
            Action::Attach(5, In),
            Action::Attach(5, Eg),
            Action::AllowVlan(4, 1000),
            Action::SetLink(4, ENF),
            Action::Attach(4, In),
            Action::Attach(4, Eg),
        ]
    );
    let a = apply(&Actual::default(), &p, PROGS);
    assert_eq!(a, materialize(&d));
    assert!(plan(&d, &a).is_empty());
}

#[test]
fn local_routes_join_the_addresses() {
    let n = |s: &str| -> IpNet { s.parse().unwrap() };
    let mut t = Topo::new().lo().phys(2, "eth0").addr(2, "192.0.2.1/24");
    let routes = |nets: &[&str]| Change::LocalRoutes { v6: false, nets: nets.iter().map(|s| n(s)).collect() };
    t.t.apply(routes(&["127.0.0.0/8", "127.0.0.1/32", "127.255.255.255/32", "192.0.2.1/32", "192.0.2.255/32", "10.9.0.0/24"]));
    t.t.apply(Change::LocalRoutes { v6: true, nets: [n("::1/128"), n("2001:db8::/64")].into() });
    let d = pipeline(&t, &cfg(&["eth0"], &[], &[]), &[]);
    let want: BTreeSet<IpNet> =
        ["192.0.2.1/32", "192.0.2.255/32", "10.9.0.0/24", "::1/128", "2001:db8::/64"].iter().map(|s| n(s)).collect();
    assert_eq!(d.local, want, "routes and addresses, without 127.0.0.0/8");
    let a = apply(&Actual::default(), &plan(&d, &Actual::default()), PROGS);
    // `ip route del local 10.9.0.0/24 dev lo`: removed last.
    t.t.apply(routes(&["127.0.0.0/8", "192.0.2.1/32", "192.0.2.255/32"]));
    let d2 = pipeline(&t, &cfg(&["eth0"], &[], &[]), &[]);
    assert_eq!(plan(&d2, &a), vec![Action::RemoveLocal(n("10.9.0.0/24"))]);
    // A route to 0.0.0.0/0 covers 127.0.0.0/8 but is not inside it.
    t.t.apply(routes(&["0.0.0.0/0"]));
    assert!(local_set(&t.t).contains(&n("0.0.0.0/0")));
}

#[test]
fn flags_for_bypass_zero_and_audit() {
    let t = Topo::reference();
    let d = pipeline(&t, &cfg(&["bond0"], &[], &[0]), &[5]);
    assert_eq!(d.links[&4].flags, ENF | l::L_VLAN_ALLOW_ALL);
    assert_eq!(d.links[&4].vids, [1000].into(), "VIDs kept with allow-all");
    assert_eq!(d.links[&5].flags, ENF | l::L_VLAN_ALLOW_ALL | l::L_AUDIT);
    let d5 = pipeline(&t, &cfg(&["bond0"], &[], &[5]), &[]);
    assert_eq!(d5.links[&4], LinkState { flags: ENF, vids: [5, 1000].into() });
    assert_eq!(d5.links[&5], LinkState { flags: ENF, vids: [5].into() });
    // Dropping bypass 0 later: VIDs in place before the flag goes.
    let mut a = materialize(&d);
    a.vlans.remove(&(4, 1000));
    let p = plan(&d5, &a);
    assert!(pos(&p, Action::AllowVlan(4, 5)) < pos(&p, Action::SetLink(4, ENF)));
    assert!(pos(&p, Action::AllowVlan(4, 1000)) < pos(&p, Action::SetLink(4, ENF)));
}

#[test]
fn new_vlan_is_guarded_before_its_tag_opens() {
    let t = Topo::reference();
    let before = materialize(&pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]));
    let t2 = t.clone().vlan(6, "bond0.2000", 2000, 4).addr(6, "10.20.0.5/24");
    let d = pipeline(&t2, &cfg(&["bond0"], &[], &[]), &[]);
    let p = plan(&d, &before);
    assert_eq!(
        p,
        vec![
            Action::AddLocal("10.20.0.5/32".parse().unwrap()),
            Action::SetLink(6, ENF),
            Action::Attach(6, In),
            Action::Attach(6, Eg),
            Action::AllowVlan(4, 2000),
        ]
    );
    // ... and deleted again: the tag closes; its attachments went with
    // the device, a stale pin would be detached.
    let now = apply(&before, &p, PROGS);
    let d = pipeline(&t2.clone().gone(6), &cfg(&["bond0"], &[], &[]), &[]);
    let p = plan(&d, &now);
    assert_eq!(
        p,
        vec![
            Action::DisallowVlan(4, 2000),
            Action::Detach(6, In),
            Action::Detach(6, Eg),
            Action::RemoveLink(6),
            Action::RemoveLocal("10.20.0.5/32".parse().unwrap()),
        ]
    );
}

#[test]
fn excluding_a_vlan_closes_the_tag_before_detaching() {
    let t = Topo::reference();
    let before = materialize(&pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]));
    let d = pipeline(&t, &cfg(&["bond0"], &["bond0.1000"], &[]), &[]);
    let p = plan(&d, &before);
    assert_eq!(p, vec![Action::DisallowVlan(4, 1000), Action::Detach(5, In), Action::Detach(5, Eg), Action::RemoveLink(5)]);
}

#[test]
fn bond_recreated_with_a_new_ifindex() {
    let t = Topo::reference();
    let before = materialize(&pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]));
    // NetworkManager deletes bond0 (its VLAN goes with it) and creates
    // both again; the kernel dropped the old attachments with the
    // devices, the map entries remain.
    let mut stale = before.clone();
    stale.attachments.clear();
    let t2 = t
        .gone(5)
        .gone(4)
        .release(2)
        .release(3)
        .bond(14, "bond0")
        .enslave(2, 14)
        .enslave(3, 14)
        .vlan(15, "bond0.1000", 1000, 14)
        .addr(15, "192.168.1.201/24");
    let d = pipeline(&t2, &cfg(&["bond0"], &[], &[]), &[]);
    assert_eq!(d.attach_order, vec![15, 14]);
    let p = plan(&d, &stale);
    assert_eq!(
        p,
        vec![
            Action::SetLink(15, ENF),
            Action::Attach(15, In),
            Action::Attach(15, Eg),
            Action::AllowVlan(14, 1000),
            Action::SetLink(14, ENF),
            Action::Attach(14, In),
            Action::Attach(14, Eg),
            Action::RemoveLink(4),
            Action::RemoveLink(5),
            Action::DisallowVlan(4, 1000),
            Action::RemoveLocal("fe80::1/128".parse().unwrap()),
            Action::RemoveLocal("fe80::2/128".parse().unwrap()),
        ]
    );
    assert!(plan(&d, &apply(&stale, &p, PROGS)).is_empty());
}

#[test]
fn adoption_updates_foreign_programs_in_place() {
    let t = Topo::reference();
    let d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
    let mut a = materialize(&d);
    a.attachments.insert((4, In), 7);
    a.attachments.insert((5, Eg), 8);
    assert_eq!(plan(&d, &a), vec![Action::Attach(5, Eg), Action::Attach(4, In)]);
    // A stray attachment (ifindex no longer desired) is detached, its
    // link entry removed after.
    a.attachments.insert((9, In), 41);
    a.links.insert(9, ENF);
    a.vlans.insert((9, 5));
    let p = plan(&d, &a);
    assert_eq!(&p[2..], &[Action::Detach(9, In), Action::RemoveLink(9), Action::DisallowVlan(9, 5)]);
}

#[test]
fn enslaving_a_nic_moves_the_attachment_to_the_bond() {
    let t = Topo::new().lo().phys(2, "eth0").addr(2, "192.0.2.1/24");
    let before = materialize(&pipeline(&t, &cfg(&["eth0"], &[], &[]), &[]));
    assert_eq!(before.links.keys().copied().collect::<Vec<_>>(), vec![2]);
    let t2 = t.bond(4, "bond0").enslave(2, 4).unaddr(2, "192.0.2.1/24").addr(4, "192.0.2.1/24");
    let d = pipeline(&t2, &cfg(&["eth0"], &[], &[]), &[]);
    let p = plan(&d, &before);
    assert_eq!(p, vec![Action::SetLink(4, ENF), Action::Attach(4, In), Action::Attach(4, Eg), Action::Detach(2, In), Action::Detach(2, Eg), Action::RemoveLink(2)]);
}

#[test]
fn a_thousand_vlans() {
    let mut t = Topo::reference();
    for v in 1..=1000u16 {
        let i = 100 + v as u32;
        t = t.vlan(i, &format!("bond0.{}", 2000 + v), 2000 + v, 4).addr(i, &format!("10.{}.{}.1/24", v / 256, v % 256));
    }
    let d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
    assert_eq!(d.links[&4].vids.len(), 1001);
    assert_eq!(d.attach_order.last(), Some(&4), "the bond opens its tags last");
    let p = plan(&d, &Actual::default());
    let first_allow = pos(&p, Action::AllowVlan(4, 1000));
    assert!(p[..first_allow].iter().filter(|a| matches!(a, Action::Attach(_, _))).count() == 2002);
    let a = apply(&Actual::default(), &p, PROGS);
    assert!(plan(&d, &a).is_empty());
    assert_eq!(a.vlans.len(), 1001);
}

fn foreign(id: u32) -> HookProg {
    HookProg { id, name: format!("foreign{id}"), at: "tcx".into() }
}

#[test]
fn a_program_in_front_moves_hostfwd_back() {
    let t = Topo::reference();
    let d = pipeline(&t, &cfg(&["bond0"], &[], &[]), &[]);
    let mut a = materialize(&d);
    a.ahead.insert((4, In), vec![foreign(90)]);
    assert_eq!(plan(&d, &a), vec![Action::MoveToFront(4, In)]);
    // Running another load's program as well: the move attaches this
    // load's program, no separate update in place.
    a.attachments.insert((5, Eg), 7);
    a.ahead.insert((5, Eg), vec![foreign(91), foreign(92)]);
    let p = plan(&d, &a);
    assert_eq!(p, vec![Action::MoveToFront(5, Eg), Action::MoveToFront(4, In)], "in attach order: uppers first");
    let end = apply(&a, &p, PROGS);
    assert_eq!(end, materialize(&d));
    assert!(plan(&d, &end).is_empty());
    // Legacy tc cannot move: nothing to do but report.
    let tc = Desired { to_front: false, ..d.clone() };
    a.attachments.insert((5, Eg), PROGS.1);
    assert!(plan(&tc, &a).is_empty());
    // A device no longer desired is detached, not moved.
    a.attachments.insert((9, In), 41);
    a.ahead.insert((9, In), vec![foreign(93)]);
    assert!(plan(&d, &a).contains(&Action::Detach(9, In)));
    assert!(!plan(&d, &a).contains(&Action::MoveToFront(9, In)));
}

#[test]
fn display_and_ifindex() {
    assert_eq!(Action::AllowVlan(4, 1000).to_string(), "allow VLAN 1000 on link 4");
    assert_eq!(Action::Attach(4, Eg).to_string(), "attach egress on link 4");
    assert_eq!(Action::MoveToFront(4, In).to_string(), "move ingress on link 4 to the front");
    assert_eq!(Action::MoveToFront(4, In).ifindex(), Some(4));
    assert_eq!(foreign(3).to_string(), "foreign3 (id 3, tcx)");
    assert_eq!(Action::SetLink(4, 3).to_string(), "set link 4 flags 0x3");
    assert_eq!(Action::Detach(9, In).ifindex(), Some(9));
    assert_eq!(Action::AddLocal("::1/128".parse().unwrap()).ifindex(), None);
    assert_eq!(Action::AddLocal("10.9.0.0/24".parse().unwrap()).to_string(), "add local prefix 10.9.0.0/24");
    assert_eq!(Action::RemoveLocal("10.77.0.255/32".parse().unwrap()).to_string(), "remove local address 10.77.0.255");
}

// ---- property tests over random topologies ---------------------------

use hostfwd_policy::test_rng::Rng;

fn random_addr(rng: &mut Rng, t: Topo, i: u32) -> Topo {
    match rng.index(5) {
        0 => t.addr(i, &format!("10.{}.{}.1/24", i % 250, rng.index(250))),
        1 => t.addr(i, &format!("2001:db8:{i:x}::{:x}/64", rng.index(500) + 1)),
        2 => t.addr(i, &format!("fe80::{i:x}/64")),
        _ => t,
    }
}

pub(crate) fn random_topo(rng: &mut Rng) -> Topo {
    let mut t = Topo::new();
    if rng.chance(80) {
        t = t.lo();
    }
    let mut next = 2u32;
    let mut lowers: Vec<(u32, String)> = Vec::new();
    let mut phys = Vec::new();
    for k in 0..1 + rng.index(4) {
        let name = format!("eth{k}");
        t = t.phys(next, &name);
        phys.push(next);
        lowers.push((next, name));
        next += 1;
    }
    for b in 0..rng.index(3) {
        let name = format!("bond{b}");
        let bi = next;
        t = t.bond(bi, &name);
        next += 1;
        for p in &phys {
            if rng.chance(40) && t.t.get(ifx(*p)).is_some_and(|l| l.controller.is_none()) {
                t = t.enslave(*p, bi);
            }
        }
        lowers.push((bi, name));
    }
    let vids = [5u16, 100, 1000, 2000, 3000];
    for _ in 0..rng.index(7) {
        let (lower, lname) = rng.pick(&lowers);
        let v = rng.pick(&vids);
        let taken = t.t.iter().any(|l| matches!(l.kind, LinkKind::Vlan { vid, lower: lo } if vid.get() == v && lo.get() == lower));
        if taken {
            continue;
        }
        let name = format!("{lname}.{v}");
        t = t.vlan(next, &name, v, lower);
        let vi = next;
        next += 1;
        lowers.push((vi, name.clone()));
        if rng.chance(20) {
            t = t.bridge(next, &format!("br{vi}")).enslave(vi, next);
            t = random_addr(rng, t, next);
            next += 1;
        }
    }
    if rng.chance(30) {
        t = t.bridge(next, "docker0").addr(next, "172.17.0.1/16");
        let br = next;
        next += 1;
        t = t.link(next, &format!("veth{next}"), LinkKind::Veth).enslave(next, br).peer_elsewhere(next);
        next += 1;
    }
    if rng.chance(20) {
        t = t.link(next, "vrf-x", LinkKind::Other { name: "vrf".into() });
    }
    let all: Vec<u32> = t.t.iter().map(|l| l.ifindex.get()).filter(|i| *i != 1).collect();
    for i in &all {
        t = random_addr(rng, t, *i);
    }
    if rng.chance(60) {
        t = t.default_v4(&[rng.pick(&all)]);
    }
    t
}

pub(crate) fn random_cfg(rng: &mut Rng) -> SelectConfig {
    let devices: &[&[&str]] =
        &[&["auto"], &["bond0"], &["eth*"], &["bond0.*"], &["eth0", "bond1"], &[], &["auto", "docker0"], &["*"], &["eth0.100"]];
    let excludes: &[&[&str]] = &[&[], &[], &["bond0.1000"], &["eth1*"], &["*.100"], &["br*"]];
    let bypass: &[&[u16]] = &[&[], &[], &[0], &[5], &[1000, 4095]];
    let (dv, ex, by) = (rng.pick(devices), rng.pick(excludes), rng.pick(bypass));
    cfg(dv, ex, by)
}

/// A change NetworkManager (or an operator) could make.
pub(crate) fn mutate(rng: &mut Rng, t: Topo) -> Topo {
    let ids: Vec<u32> = t.t.iter().map(|l| l.ifindex.get()).collect();
    if ids.is_empty() {
        return t.phys(2, "eth0");
    }
    let i = rng.pick(&ids);
    match rng.index(6) {
        0 => t.gone(i),
        1 => {
            let addrs: Vec<String> = t.t.get(ifx(i)).map(|l| l.addrs.iter().map(|a| a.to_string()).collect()).unwrap_or_default();
            addrs.iter().fold(t, |t, a| t.unaddr(i, a))
        }
        2 => random_addr(rng, t, i),
        3 => t.rename(i, &format!("x{i}")),
        4 => {
            let j = rng.pick(&ids);
            // The kernel refuses to make a device an upper of its own
            // upper: j must not be below i (a lower or port, transitively).
            let mut below = BTreeSet::new();
            let mut todo = vec![i];
            while let Some(x) = todo.pop() {
                if !below.insert(x) {
                    continue;
                }
                if let Some(LinkKind::Vlan { lower, .. }) = t.t.get(ifx(x)).map(|l| l.kind.clone()) {
                    todo.push(lower.get());
                }
                todo.extend(t.t.iter().filter(|l| l.controller == Some(ifx(x))).map(|l| l.ifindex.get()));
            }
            if !below.contains(&j) && t.t.get(ifx(j)).is_some_and(|l| matches!(l.kind, LinkKind::Bond | LinkKind::Bridge)) {
                t.enslave(i, j)
            } else {
                t.release(i)
            }
        }
        _ if i != 200 => t.vlan(200, "late.7", 7, i).addr(200, "192.0.2.77/24"),
        _ => t,
    }
}

fn random_noise(rng: &mut Rng, mut a: Actual, ids: &[u32]) -> Actual {
    for _ in 0..rng.index(6) {
        let i = if rng.chance(50) && !ids.is_empty() { rng.pick(ids) } else { 50 + rng.index(5) as u32 };
        match rng.index(5) {
            0 => {
                a.attachments.insert((i, rng.pick(&Direction::ALL)), rng.pick(&[41, 42, 7]));
            }
            1 => {
                a.links.insert(i, rng.pick(&[ENF, 0, ENF | l::L_AUDIT]));
            }
            2 => {
                a.vlans.insert((i, rng.pick(&[5u16, 1000, 77])));
            }
            3 => {
                a.local.insert(format!("203.0.113.{}/{}", rng.index(3), rng.pick(&[24u8, 32])).parse::<IpNet>().unwrap().trunc());
            }
            _ => {
                a.links.remove(&i);
            }
        }
    }
    a
}

/// Ifindexes with an attachment but no link entry.
pub(crate) fn unconfigured(a: &Actual) -> BTreeSet<u32> {
    a.attachments.keys().map(|(i, _)| *i).filter(|i| !a.links.contains_key(i)).collect()
}

/// (lower, vid, place): tagged frames arriving on `lower` with `vid`
/// pass it (nothing filters there, or the VID or every tag is allowed)
/// towards the place of that VLAN, which does not enforce ingress.
pub(crate) fn open_paths(t: &Table, a: &Actual) -> BTreeSet<(u32, u16, u32)> {
    let ingress = |i: u32| a.attachments.contains_key(&(i, In));
    let mut out = BTreeSet::new();
    for v in t.iter() {
        let LinkKind::Vlan { vid, lower } = v.kind else { continue };
        let (lo, vid) = (lower.get(), vid.get());
        let passes = match a.links.get(&lo) {
            Some(f) if ingress(lo) => f & l::L_VLAN_ALLOW_ALL != 0 || a.vlans.contains(&(lo, vid)),
            _ => true,
        };
        let p = receiving_link(t, v.ifindex).map(|p| p.get()).unwrap_or(0);
        let guarded = ingress(p) && a.links.get(&p).is_some_and(|f| f & l::L_ENFORCE_INGRESS != 0);
        if passes && !guarded {
            out.insert((lo, vid, p));
        }
    }
    out
}

#[test]
fn property_plans_converge_safely() {
    let mut rng = Rng(0x5eed_f405_7f3d);
    // Foreign programs in front come from their own stream, so the
    // topologies and plans above stay the ones already explored.
    let mut front_rng = Rng(0xf0e1_9000);
    for round in 0..600 {
        let old = random_topo(&mut rng);
        let old_cfg = random_cfg(&mut rng);
        let new = (0..1 + rng.index(3)).fold(old.clone(), |t, _| mutate(&mut rng, t));
        let new_cfg = if rng.chance(50) { old_cfg.clone() } else { random_cfg(&mut rng) };

        // Selection invariants on the new table.
        let dec = select(&new.t, &new_cfg);
        assert_eq!(dec.len(), new.t.len());
        for (i, d) in &dec {
            let link: &Link = new.t.get(*i).unwrap();
            if d.role.is_attached() {
                assert!(link.kind != LinkKind::Loopback, "round {round}: loopback attached");
                assert!(link.controller.is_none() || new.t.get(link.controller.unwrap()).is_some_and(|c| c.kind == LinkKind::Other { name: "vrf".into() }), "round {round}: port {} attached: {d:?}", link.name);
                assert_eq!(d.role == crate::select::Role::Enforce, link.has_global_unicast());
                // Every non-excluded VLAN on an attached link is attached
                // (itself or through its controller).
                for v in new.t.iter() {
                    if let LinkKind::Vlan { lower, .. } = v.kind {
                        let excluded = new_cfg.exclude.iter().any(|p| glob::Pattern::new(p).map(|g| g.matches(&v.name)).unwrap_or(false));
                        if lower == *i && !excluded && v.controller.is_none() {
                            assert!(dec[&v.ifindex].role.is_attached(), "round {round}: {} on attached {} not attached", v.name, link.name);
                        }
                    }
                }
            }
        }
        let sets = allowed(&new.t, &dec, &new_cfg.vlan_bypass);
        for (i, s) in &sets {
            assert!(dec[i].role.is_attached());
            for v in &s.vids {
                let from_bypass = new_cfg.vlan_bypass.contains(&v.get());
                let to_attached = new.t.iter().any(|x| {
                    matches!(x.kind, LinkKind::Vlan { vid, lower } if vid == *v && lower == *i)
                        && receiving_link(&new.t, x.ifindex).is_some_and(|p| dec.get(&p).is_some_and(|d| d.role.is_attached()))
                });
                assert!(from_bypass || to_attached, "round {round}: VID {v} on {i} leads nowhere guarded");
            }
        }

        // Start: the old desired state applied, perhaps with debris.
        let d_old = pipeline(&old, &old_cfg, &[]);
        let mut start = apply(&Actual::default(), &plan(&d_old, &Actual::default()), PROGS);
        if rng.chance(40) {
            let ids: Vec<u32> = new.t.iter().map(|l| l.ifindex.get()).collect();
            start = random_noise(&mut rng, start, &ids);
        }
        // The kernel drops attachments of deleted devices.
        if rng.chance(70) {
            start.attachments.retain(|(i, _), _| *i >= 50 || new.t.get(ifx(*i)).is_some());
        }
        for k in start.attachments.keys() {
            if front_rng.chance(15) {
                start.ahead.insert(*k, vec![foreign(front_rng.index(3) as u32 + 1)]);
            }
        }
        let audit: Vec<u32> = dec.keys().map(|i| i.get()).filter(|_| rng.chance(10)).collect();
        let d = pipeline(&new, &new_cfg, &audit);
        let p = plan(&d, &start);

        // Nothing in between may be more open than both ends.
        let bad0 = unconfigured(&start);
        let end = materialize(&d);
        let open0: BTreeSet<_> = open_paths(&new.t, &start).union(&open_paths(&new.t, &end)).copied().collect();
        let mut s = start.clone();
        for (k, act) in p.iter().enumerate() {
            let before = s.clone();
            step(&mut s, act, PROGS);
            assert_ne!(s, before, "round {round}: action {k} ({act}) changes nothing: {p:?}");
            assert!(unconfigured(&s).is_subset(&bad0), "round {round}: after {act}: attachment without link entry");
            let open = open_paths(&new.t, &s);
            assert!(open.is_subset(&open0), "round {round}: after {act}: opened {:?}\nplan {p:?}", open.difference(&open0).collect::<Vec<_>>());
        }
        for act in &p {
            if let Action::MoveToFront(i, d) = *act {
                assert!(start.ahead.contains_key(&(i, d)) && start.attachments.contains_key(&(i, d)), "round {round}: {act} where nothing is in front");
            }
        }
        assert_eq!(s, end, "round {round}: plan does not reach the desired state");
        assert!(plan(&d, &s).is_empty(), "round {round}: not idempotent");
        assert!(unconfigured(&s).is_empty());
        // At the end an attached lower opens tags only towards enforced
        // places, or because the configuration bypasses them.
        for (lo, vid, p) in open_paths(&new.t, &s) {
            let bypassed = new_cfg.vlan_bypass.iter().any(|b| *b == 0 || *b == vid);
            assert!(!d.links.contains_key(&lo) || bypassed, "round {round}: {lo} lets {vid} through to unguarded {p}");
        }
    }
}
