//! The rtnetlink reader (`hostfwd::netlink`) against a real kernel: each test
//! makes its own network namespace (removed by the `NetNs` guard) and runs
//! the monitor on a current-thread tokio runtime built on a thread inside
//! it, so its sockets belong to that namespace.
//!
//! Every wait has a deadline; nothing sleeps to let things happen.
//! VLAN and bond are not in this kernel: their parsing is unit-tested with
//! hand-built messages in the module and exercised in the VM tests.

use std::collections::BTreeSet;
use std::future::Future;
use std::process::Command;
use std::time::Duration;

use hostfwd::links::{Change, Ifindex, LinkKind, Table};
use hostfwd::netlink::{Event, Monitor, Netlink};
use hostfwd_tests::netns::run_cmd;
use hostfwd_tests::NetNs;
use ipnet::IpNet;

/// How long any expected event may take.
const T: Duration = Duration::from_secs(5);

fn require_root() {
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root (network namespaces)");
}

/// Runs `f` on a current-thread tokio runtime made on a thread inside `ns`.
fn in_ns<F, Fut, R>(ns: &NetNs, f: F) -> R
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
    .expect("enter the test namespace")
}

fn ip(ns: &NetNs, args: &[&str]) {
    ns.ip(args).unwrap_or_else(|e| panic!("{e}"));
}

fn ifx(ns: &NetNs, name: &str) -> Ifindex {
    Ifindex::new(ns.ifindex(name).expect("ifindex")).expect("nonzero ifindex")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test address")
}

/// Reads events until `pick` returns something; panics after [`T`] with
/// every event seen. Returns the pick and the events before it.
async fn wait_for<R>(mon: &mut Monitor, what: &str, mut pick: impl FnMut(&Event) -> Option<R>) -> (R, Vec<Event>) {
    let deadline = tokio::time::Instant::now() + T;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, mon.next()).await {
            Ok(Ok(ev)) => {
                if let Some(r) = pick(&ev) {
                    return (r, seen);
                }
                seen.push(ev);
            }
            Ok(Err(e)) => panic!("{what}: the monitor failed: {e}"),
            Err(_) => panic!("{what}: not seen within {T:?}; events were {seen:#?}"),
        }
    }
}

async fn wait_change(mon: &mut Monitor, what: &str, want: &Change) -> Vec<Event> {
    wait_for(mon, what, |ev| (ev == &Event::Change(want.clone())).then_some(())).await.1
}

/// Adds `marker` to lo and reads events until its AddrAdded: every event
/// caused before is then among the returned ones (and, for default-route
/// re-reads, queued right behind them).
async fn barrier(ns: &NetNs, mon: &mut Monitor, marker: &str) -> Vec<Event> {
    ip(ns, &["addr", "add", marker, "dev", "lo"]);
    let lo = ifx(ns, "lo");
    let want = Change::AddrAdded(lo, net(marker));
    let mut seen = wait_change(mon, &format!("marker {marker}"), &want).await;
    seen.push(Event::Change(want));
    seen
}

/// Applies events to `table` until it equals a fresh dump.
async fn converge(mon: &mut Monitor, table: &mut Table, before: Vec<Event>) {
    let apply = |table: &mut Table, ev: Event| match ev {
        Event::Change(c) => {
            table.apply(c);
        }
        Event::Resync => panic!("unexpected overrun"),
    };
    for ev in before {
        apply(table, ev);
    }
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let fresh = mon.dump().await.expect("dump");
        if *table == fresh {
            return;
        }
        match tokio::time::timeout_at(deadline, mon.next()).await {
            Ok(Ok(ev)) => apply(table, ev),
            Ok(Err(e)) => panic!("monitor failed: {e}"),
            Err(_) => panic!("table from events never matched a dump:\n{table:#?}\nvs\n{fresh:#?}"),
        }
    }
}

fn veth(ns: &NetNs, a: &str, b: &str) {
    ip(ns, &["link", "add", a, "type", "veth", "peer", "name", b]);
}

#[test]
fn dump_sees_links_addresses_and_default_routes() {
    require_root();
    let ns = NetNs::new().expect("netns");
    let other = NetNs::new().expect("netns");
    veth(&ns, "v0", "v1");
    ip(&ns, &["addr", "add", "192.0.2.1/24", "dev", "v0"]);
    ip(&ns, &["addr", "add", "2001:db8::1/64", "dev", "v0", "nodad"]);
    ip(&ns, &["link", "set", "v0", "up"]);
    ip(&ns, &["link", "set", "v1", "up"]);
    ip(&ns, &["route", "add", "default", "via", "192.0.2.254", "dev", "v0"]);
    ip(&ns, &["-6", "route", "add", "default", "via", "2001:db8::fe", "dev", "v0"]);
    ip(&ns, &["link", "add", "x0", "type", "veth", "peer", "name", "x1", "netns", other.name()]);
    ip(&ns, &["link", "add", "br0", "type", "bridge"]);
    veth(&ns, "p0", "p1");
    ip(&ns, &["link", "set", "p0", "master", "br0"]);
    ip(&ns, &["link", "add", "mv0", "link", "v1", "type", "macvlan"]);
    ip(&ns, &["link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789"]);
    ip(&ns, &["link", "add", "ifb0", "type", "ifb"]);

    let table = in_ns(&ns, || async { Netlink::connect().expect("connect").dump().await.expect("dump") });

    let get = |name: &str| table.by_name(name).unwrap_or_else(|| panic!("{name} missing: {table:#?}"));
    let lo = get("lo");
    assert_eq!(lo.kind, LinkKind::Loopback);
    assert!(lo.up);
    assert!(lo.addrs.contains(&net("127.0.0.1/8")), "{lo:?}");
    let v0 = get("v0");
    assert_eq!(v0.ifindex, ifx(&ns, "v0"));
    assert_eq!(v0.kind, LinkKind::Veth);
    assert!(v0.up && !v0.peer_in_other_netns);
    assert!(v0.addrs.contains(&net("192.0.2.1/24")) && v0.addrs.contains(&net("2001:db8::1/64")), "{v0:?}");
    assert!(v0.has_global_unicast());
    assert!(v0.default_route);
    let v1 = get("v1");
    assert_eq!(v1.kind, LinkKind::Veth);
    assert!(!v1.default_route);
    assert!(!v1.has_global_unicast(), "only link-local: {v1:?}");
    assert!(get("x0").peer_in_other_netns);
    assert_eq!(get("br0").kind, LinkKind::Bridge);
    assert_eq!(get("p0").controller, Some(get("br0").ifindex));
    assert_eq!(get("p0").kind, LinkKind::Veth);
    assert_eq!(get("p1").controller, None);
    assert_eq!(get("mv0").kind, LinkKind::Macvlan);
    assert_eq!(get("vx0").kind, LinkKind::Tunnel { name: "vxlan".into() });
    assert_eq!(get("ifb0").kind, LinkKind::Other { name: "ifb".into() });
    let listed = ns.ip(&["-o", "link", "show"]).expect("ip link").lines().count();
    assert_eq!(table.len(), listed, "{table:#?}");
}

#[test]
fn link_added_renamed_and_deleted() {
    require_root();
    let ns = NetNs::new().expect("netns");
    in_ns(&ns, || async {
        let mut mon = Monitor::open().await.expect("monitor");
        veth(&ns, "e0", "e1");
        let (e0, _) = wait_for(&mut mon, "e0 added", |ev| match ev {
            Event::Change(Change::Link(l)) if l.name == "e0" => Some(l.clone()),
            _ => None,
        })
        .await;
        assert_eq!(e0.ifindex, ifx(&ns, "e0"));
        assert_eq!(e0.kind, LinkKind::Veth);
        assert!(!e0.up);
        let e1 = ifx(&ns, "e1");

        ip(&ns, &["link", "set", "e0", "name", "lan0"]);
        wait_for(&mut mon, "rename", |ev| match ev {
            Event::Change(Change::Link(l)) if l.ifindex == e0.ifindex && l.name == "lan0" => Some(()),
            _ => None,
        })
        .await;
        ip(&ns, &["link", "set", "lan0", "up"]);
        wait_for(&mut mon, "up", |ev| match ev {
            Event::Change(Change::Link(l)) if l.ifindex == e0.ifindex && l.up => Some(()),
            _ => None,
        })
        .await;

        ip(&ns, &["link", "del", "lan0"]);
        let (gone, _) = wait_for(&mut mon, "both ends gone", {
            let mut gone = BTreeSet::new();
            move |ev| {
                if let Event::Change(Change::LinkGone(i)) = ev {
                    gone.insert(*i);
                }
                (gone.len() == 2).then(|| gone.clone())
            }
        })
        .await;
        assert_eq!(gone, [e0.ifindex, e1].into());
    });
}

#[test]
fn addresses_added_and_removed() {
    require_root();
    let ns = NetNs::new().expect("netns");
    veth(&ns, "a0", "a1");
    let a0 = ifx(&ns, "a0");
    in_ns(&ns, || async {
        let mut mon = Monitor::open().await.expect("monitor");
        let mut table = mon.dump().await.expect("dump");
        ip(&ns, &["addr", "add", "198.51.100.7/24", "dev", "a0"]);
        wait_change(&mut mon, "v4 added", &Change::AddrAdded(a0, net("198.51.100.7/24"))).await;
        ip(&ns, &["addr", "add", "2001:db8:5::7/64", "dev", "a0", "nodad"]);
        wait_change(&mut mon, "v6 added", &Change::AddrAdded(a0, net("2001:db8:5::7/64"))).await;
        ip(&ns, &["addr", "del", "198.51.100.7/24", "dev", "a0"]);
        wait_change(&mut mon, "v4 removed", &Change::AddrRemoved(a0, net("198.51.100.7/24"))).await;
        ip(&ns, &["addr", "del", "2001:db8:5::7/64", "dev", "a0"]);
        wait_change(&mut mon, "v6 removed", &Change::AddrRemoved(a0, net("2001:db8:5::7/64"))).await;
        // Nothing of it is left: the table the events built matches a dump.
        table.apply(Change::AddrAdded(a0, net("198.51.100.9/24")));
        table.apply(Change::AddrRemoved(a0, net("198.51.100.9/24")));
        let seen = barrier(&ns, &mut mon, "127.0.0.9/8").await;
        converge(&mut mon, &mut table, seen).await;
    });
}

#[test]
fn default_routes_follow_routes_and_link_state() {
    require_root();
    let ns = NetNs::new().expect("netns");
    veth(&ns, "r0", "r1");
    ip(&ns, &["addr", "add", "192.0.2.1/24", "dev", "r0"]);
    ip(&ns, &["addr", "add", "2001:db8::1/64", "dev", "r0", "nodad"]);
    ip(&ns, &["link", "set", "r0", "up"]);
    ip(&ns, &["link", "set", "r1", "up"]);
    let r0 = ifx(&ns, "r0");
    let v4 = |via: &[Ifindex]| Change::DefaultRoutes { v6: false, via: via.iter().copied().collect() };
    let v6 = |via: &[Ifindex]| Change::DefaultRoutes { v6: true, via: via.iter().copied().collect() };
    in_ns(&ns, || async {
        let mut mon = Monitor::open().await.expect("monitor");
        let mut table = mon.dump().await.expect("dump");
        assert!(!table.get(r0).expect("r0").default_route);

        ip(&ns, &["route", "add", "default", "via", "192.0.2.254", "dev", "r0"]);
        let mut seen = wait_change(&mut mon, "v4 default added", &v4(&[r0])).await;
        ip(&ns, &["-6", "route", "add", "default", "via", "2001:db8::fe", "dev", "r0"]);
        seen.extend(wait_change(&mut mon, "v6 default added", &v6(&[r0])).await);
        assert_eq!(mon.default_routes(false), &[r0].into());
        // A route elsewhere than the main table is not a default route here.
        ip(&ns, &["route", "add", "default", "via", "192.0.2.253", "dev", "r0", "table", "100"]);
        ip(&ns, &["route", "del", "default", "via", "192.0.2.254", "dev", "r0"]);
        seen.extend(wait_change(&mut mon, "v4 default removed", &v4(&[])).await);
        ip(&ns, &["route", "add", "default", "via", "192.0.2.254", "dev", "r0"]);
        seen.extend(wait_change(&mut mon, "v4 default back", &v4(&[r0])).await);

        // Down: the kernel flushes the IPv4 routes without RTM_DELROUTE.
        ip(&ns, &["link", "set", "r0", "down"]);
        seen.extend(wait_change(&mut mon, "v4 default gone with the link down", &v4(&[])).await);
        seen.extend(barrier(&ns, &mut mon, "127.0.0.9/8").await);
        converge(&mut mon, &mut table, seen).await;
        assert!(!table.get(r0).expect("r0").default_route);
        assert_eq!(mon.default_routes(true), &BTreeSet::new(), "IPv6 default gone too");
    });
}

/// Waits for a `LocalRoutes` of the family whose set satisfies `pick`;
/// returns every event up to and including it.
async fn wait_local(mon: &mut Monitor, what: &str, v6: bool, pick: impl Fn(&BTreeSet<IpNet>) -> bool) -> Vec<Event> {
    let (ev, mut seen) = wait_for(mon, what, |ev| match ev {
        Event::Change(Change::LocalRoutes { v6: f, nets }) if *f == v6 && pick(nets) => Some(ev.clone()),
        _ => None,
    })
    .await;
    seen.push(ev);
    seen
}

#[test]
fn local_routes_follow_the_local_table() {
    require_root();
    let ns = NetNs::new().expect("netns");
    veth(&ns, "l0", "l1");
    ip(&ns, &["addr", "add", "192.0.2.1/24", "dev", "l0"]);
    ip(&ns, &["addr", "add", "2001:db8::1/64", "dev", "l0", "nodad"]);
    ip(&ns, &["link", "set", "l0", "up"]);
    ip(&ns, &["link", "set", "l1", "up"]);
    in_ns(&ns, || async {
        let mut mon = Monitor::open().await.expect("monitor");
        let mut table = mon.dump().await.expect("dump");
        for n in ["192.0.2.1/32", "192.0.2.255/32", "127.0.0.0/8", "2001:db8::1/128"] {
            assert!(table.local_nets().contains(&net(n)), "{n} in the dump: {:?}", table.local_nets());
        }
        assert!(!table.local_nets().contains(&net("192.0.2.0/24")), "the subnet is not local");
        assert!(!table.local_nets().iter().any(|n| n.addr().is_multicast()), "multicast routes are not local routes");

        ip(&ns, &["route", "add", "local", "10.9.0.0/24", "dev", "lo"]);
        let mut seen = wait_local(&mut mon, "local route added", false, |n| n.contains(&net("10.9.0.0/24"))).await;
        assert!(mon.local_routes(false).contains(&net("10.9.0.0/24")));
        ip(&ns, &["-6", "route", "add", "local", "fd09::/64", "dev", "lo"]);
        seen.extend(wait_local(&mut mon, "IPv6 local route added", true, |n| n.contains(&net("fd09::/64"))).await);
        // Not the local table: not a local route.
        ip(&ns, &["route", "add", "local", "10.10.0.0/24", "dev", "lo", "table", "100"]);
        ip(&ns, &["route", "del", "local", "10.9.0.0/24", "dev", "lo"]);
        seen.extend(wait_local(&mut mon, "local route removed", false, |n| !n.contains(&net("10.9.0.0/24"))).await);
        assert!(!mon.local_routes(false).contains(&net("10.10.0.0/24")), "table 100");

        // An address going away takes its local and broadcast routes along.
        ip(&ns, &["addr", "del", "192.0.2.1/24", "dev", "l0"]);
        seen.extend(
            wait_local(&mut mon, "address routes gone", false, |n| {
                !n.contains(&net("192.0.2.1/32")) && !n.contains(&net("192.0.2.255/32"))
            })
            .await,
        );
        seen.extend(barrier(&ns, &mut mon, "127.0.0.9/8").await);
        converge(&mut mon, &mut table, seen).await;
        assert!(table.local_nets().contains(&net("fd09::/64")));
    });
}

#[test]
fn bridge_port_gets_a_controller_and_stays_a_veth() {
    require_root();
    let ns = NetNs::new().expect("netns");
    ip(&ns, &["link", "add", "br0", "type", "bridge"]);
    veth(&ns, "b0", "b1");
    let (br0, b0) = (ifx(&ns, "br0"), ifx(&ns, "b0"));
    in_ns(&ns, || async {
        let mut mon = Monitor::open().await.expect("monitor");
        ip(&ns, &["link", "set", "b0", "master", "br0"]);
        let (_, mut seen) = wait_for(&mut mon, "b0 enslaved", |ev| match ev {
            Event::Change(Change::Link(l)) if l.ifindex == b0 && l.controller == Some(br0) => Some(()),
            _ => None,
        })
        .await;
        ip(&ns, &["link", "set", "b0", "nomaster"]);
        let (_, more) = wait_for(&mut mon, "b0 released", |ev| match ev {
            Event::Change(Change::Link(l)) if l.ifindex == b0 && l.controller.is_none() => Some(()),
            _ => None,
        })
        .await;
        seen.extend(more);
        // The bridge's AF_BRIDGE port messages (no kind; DELLINK when the
        // port leaves) must not show up as a kind change or a deletion.
        seen.extend(barrier(&ns, &mut mon, "127.0.0.9/8").await);
        for ev in &seen {
            match ev {
                Event::Change(Change::LinkGone(i)) => assert_ne!(*i, b0, "{seen:#?}"),
                Event::Change(Change::Link(l)) if l.ifindex == b0 => assert_eq!(l.kind, LinkKind::Veth, "{seen:#?}"),
                _ => {}
            }
        }
    });
}

#[test]
fn clsact_added_and_removed_are_tc_events() {
    require_root();
    let ns = NetNs::new().expect("netns");
    veth(&ns, "t0", "t1");
    let t0 = ifx(&ns, "t0");
    let tc = |args: &[&str]| {
        run_cmd(ns.cmd("tc").args(args)).unwrap_or_else(|e| panic!("{e}"));
    };
    in_ns(&ns, || async {
        let mut mon = Monitor::open().await.expect("monitor");
        tc(&["qdisc", "add", "dev", "t0", "clsact"]);
        wait_change(&mut mon, "clsact added", &Change::Tc(t0)).await;
        tc(&["qdisc", "del", "dev", "t0", "clsact"]);
        wait_change(&mut mon, "clsact removed", &Change::Tc(t0)).await;
    });
}

#[test]
fn overrun_asks_for_a_resync_and_events_resume() {
    require_root();
    let ns = NetNs::new().expect("netns");
    const PAIRS: usize = 40;
    let batch = tempfile::NamedTempFile::new().expect("tempfile");
    let cmds: String = (0..PAIRS).map(|i| format!("link add o{i} type veth peer name q{i}\n")).collect();
    std::fs::write(batch.path(), cmds).expect("write batch");
    let path = batch.path().to_str().expect("utf-8 path").to_string();
    in_ns(&ns, || async {
        // The smallest buffer the kernel allows; nobody reads while the
        // burst arrives.
        let mut mon = Monitor::open_with_rx_buffer(1).await.expect("monitor");
        assert!(mon.rx_buffer() < 16 * 1024, "buffer {}", mon.rx_buffer());
        run_cmd(Command::new("ip").args(["-n", ns.name(), "-batch", &path])).unwrap_or_else(|e| panic!("{e}"));
        let (_, before) = wait_for(&mut mon, "resync", |ev| (ev == &Event::Resync).then_some(())).await;
        assert!(before.is_empty(), "events queued before the loss are dropped with it: {before:#?}");
        // The consumer re-dumps: everything is there.
        let mut table = mon.dump().await.expect("dump after resync");
        assert_eq!(table.len(), 1 + 2 * PAIRS, "{table:#?}");
        // Events flow again, and applying them keeps the table right.
        ip(&ns, &["addr", "add", "198.51.100.1/24", "dev", "o0"]);
        let o0 = ifx(&ns, "o0");
        let seen = wait_change(&mut mon, "address after resync", &Change::AddrAdded(o0, net("198.51.100.1/24"))).await;
        let mut seen = seen;
        seen.push(Event::Change(Change::AddrAdded(o0, net("198.51.100.1/24"))));
        converge(&mut mon, &mut table, seen).await;
    });
}
