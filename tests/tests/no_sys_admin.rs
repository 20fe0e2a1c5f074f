//! The daemon without CAP_SYS_ADMIN (the systemd unit does not grant it),
//! in legacy tc and in tcx mode: started under `setpriv` with the
//! capability removed from its bounding and inheritable sets, in a test
//! namespace with a veth pair. It attaches once, a later pass (caused by a
//! second device) finds its own attachments and touches nothing of them,
//! and the policy holds for real packets. A query the kernel refuses is an
//! error naming the capability.
//!
//! Nothing sleeps to let things happen: every wait has a deadline, and "no
//! re-attach" is read from the kernel's tc notifications up to a marker.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use hostfwd::datapath::order::{self, TcFilter};
use hostfwd::datapath::{AttachModeChoice, Direction};
use hostfwd::links::{Change, Ifindex};
use hostfwd::netlink::{Event, Monitor};
use hostfwd_tests::{EchoServer, NetNs, Topology};

const T: Duration = Duration::from_secs(10);
const TC_PRIORITY: u16 = 1;
const TC_HANDLE: u32 = 0x4846;
/// CAP_SYS_ADMIN's bit in /proc/PID/status.
const CAP_SYS_ADMIN: u32 = 21;

/// The reference policy (cluster → tcp/80, world → tcp/22 and ping) in
/// enforcing mode on `devices`, started without CAP_SYS_ADMIN.
fn start(topo: &Topology, dp: &TestDp, dir: &Path, mode: &str, devices: &str) -> Running {
    which_setpriv();
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/tests/policies/demo-host-policy.yaml");
    std::fs::copy(&reference, policies.join("demo.yaml")).unwrap();
    let cfg = dir.join("hostfwd.toml");
    std::fs::write(
        &cfg,
        format!(
            "audit = false\ndevices = [{devices}]\npolicy_dir = \"{}\"\nstate_dir = \"{}\"\ncluster_cidrs = [\"10.77.0.0/24\"]\nbpffs_root = \"{}\"\nattach_mode = \"{mode}\"\ntc_priority = {TC_PRIORITY}\ntc_handle = {TC_HANDLE}\n[node_labels]\nnode-access = \"ssh\"\n",
            policies.display(),
            dir.join("state").display(),
            dp.root.display()
        ),
    )
    .unwrap();
    let child = topo
        .host
        .cmd("setpriv")
        .args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"])
        .arg(hostfwd_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("HOSTFWD_DBUS", "none")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hostfwd under setpriv");
    let d = Running { child };
    // The test means nothing if the daemon kept the capability. (nsenter
    // and setpriv exec in turn: read the status once it is hostfwd.)
    let pid = d.child.id();
    wait_until("hostfwd executed", T, || std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "hostfwd"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|v| u64::from_str_radix(v.trim(), 16).expect("CapEff"));
    assert_eq!(eff.map(|e| e & (1 << CAP_SYS_ADMIN)), Some(0), "the daemon runs without CAP_SYS_ADMIN:\n{status}");
    d
}

fn which_setpriv() {
    let ok = std::process::Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "setpriv (util-linux, scripts/deps.sh installs it) is needed to drop CAP_SYS_ADMIN");
}

fn attached(topo: &Topology, dp: &TestDp) -> Vec<(u32, Direction)> {
    let list = topo.host.run(|| dp.attachments().expect("attachments")).expect("netns");
    list.into_iter().map(|a| (a.ifindex, a.dir)).collect()
}

fn filters(ns: &NetNs, ifindex: u32, dir: Direction) -> Vec<TcFilter> {
    ns.run(|| order::tc_filters(ifindex, dir).expect("dump the clsact filters")).expect("netns")
}

/// Cluster → tcp/80 allowed, world → tcp/80 dropped, world → tcp/22 allowed.
fn check_policy(topo: &Topology, when: &str) {
    let connects = |ip: &str, port: u16| {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        match topo.peer.tcp_connect(addr, Duration::from_millis(700)) {
            Ok(_) => true,
            Err(e) if e.is_timeout() => false,
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    assert!(connects("10.77.0.1", 80), "{when}: cluster → tcp/80 allowed");
    assert!(!connects("192.0.2.1", 80), "{when}: world → tcp/80 dropped");
    assert!(connects("192.0.2.1", 22), "{when}: world → tcp/22 allowed");
}

fn world_addrs(topo: &Topology) {
    topo.host.ip(&["addr", "add", "192.0.2.1/24", "dev", "h0"]).unwrap();
    topo.peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "p0"]).unwrap();
}

/// Runs `f` with a tokio runtime on a thread inside `ns`.
fn in_ns<R: Send>(ns: &NetNs, f: impl std::future::Future<Output = R> + Send) -> R {
    ns.run(move || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(f)).expect("netns")
}

/// Reads `mon` until `marker` (added to lo now) arrives: everything the
/// kernel announced before is among the returned changes.
async fn until_marker(ns: &NetNs, mon: &mut Monitor, marker: &str) -> Vec<Change> {
    ns.ip(&["addr", "add", marker, "dev", "lo"]).unwrap();
    let lo = Ifindex::new(ns.ifindex("lo").unwrap()).unwrap();
    let want = Change::AddrAdded(lo, marker.parse().unwrap());
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, mon.next()).await {
            Ok(Ok(Event::Change(c))) if c == want => return seen,
            Ok(Ok(Event::Change(c))) => seen.push(c),
            Ok(Ok(Event::Resync)) => panic!("the test monitor overran"),
            Ok(Err(e)) => panic!("the test monitor failed: {e}"),
            Err(_) => panic!("marker {marker} not seen within {T:?}; saw {seen:?}"),
        }
    }
}

#[test]
fn legacy_tc_own_filters_are_found_without_cap_sys_admin() {
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("nsa-tc", AttachModeChoice::Tc { priority: TC_PRIORITY, handle: TC_HANDLE });
    world_addrs(&topo);
    let _web = EchoServer::tcp(&topo.host, "0.0.0.0:80".parse().unwrap()).unwrap();
    let _ssh = EchoServer::tcp(&topo.host, "0.0.0.0:22".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h0 = topo.h.ifindex;
    let _d = start(&topo, &dp, dir.path(), "tc", "\"h0\", \"h1\"");
    wait_until("h0 attached", T, || attached(&topo, &dp) == vec![(h0, Direction::Ingress), (h0, Direction::Egress)]);
    wait_until("the policy is in the maps", T, || dp.policy_entries(dp.policy_generation().unwrap()).0 > 0);

    // Once attached, a pass must find hostfwd's filters and leave them be.
    // A second device brings a pass (it attaches h1); the kernel announces
    // every filter change, so one on h0 means it was attached again (the
    // old code, unable to name the program without CAP_SYS_ADMIN, did so
    // on every pass, and each re-attach's own notification made the next
    // pass).
    let tc_changes = in_ns(&topo.host, async {
        let mut mon = Monitor::open().await.expect("monitor");
        let _ = until_marker(&topo.host, &mut mon, "127.0.0.70/8").await;
        topo.host.ip(&["link", "add", "h1", "type", "veth", "peer", "name", "x1"]).unwrap();
        topo.host.ip(&["link", "set", "h1", "up"]).unwrap();
        let h1 = topo.host.ifindex("h1").unwrap();
        wait_until("h1 attached", T, || dp.attachments().expect("attachments").iter().filter(|a| a.ifindex == h1).count() == 2);
        until_marker(&topo.host, &mut mon, "127.0.0.71/8").await
    });
    let h0x = Ifindex::new(h0).unwrap();
    assert!(!tc_changes.contains(&Change::Tc(h0x)), "h0's filters were attached again by a later pass: {tc_changes:?}");
    for dir in [Direction::Ingress, Direction::Egress] {
        let own: Vec<_> = filters(&topo.host, h0, dir).into_iter().filter(|f| f.priority == TC_PRIORITY && f.handle == TC_HANDLE).collect();
        assert_eq!(own.len(), 1, "one hostfwd filter on h0 {dir:?}: {own:?}");
        assert!(own[0].prog_name().is_some_and(|n| n.starts_with("hf_")), "named by libbpf after hostfwd's program: {own:?}");
    }
    check_policy(&topo, "tc without CAP_SYS_ADMIN");
}

#[test]
fn tcx_links_are_kept_without_cap_sys_admin() {
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("nsa-tcx", AttachModeChoice::Tcx);
    world_addrs(&topo);
    let _web = EchoServer::tcp(&topo.host, "0.0.0.0:80".parse().unwrap()).unwrap();
    let _ssh = EchoServer::tcp(&topo.host, "0.0.0.0:22".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let h0 = topo.h.ifindex;
    let _d = start(&topo, &dp, dir.path(), "tcx", "\"h0\", \"h1\"");
    wait_until("h0 attached", T, || attached(&topo, &dp) == vec![(h0, Direction::Ingress), (h0, Direction::Egress)]);
    wait_until("the policy is in the maps", T, || dp.policy_entries(dp.policy_generation().unwrap()).0 > 0);
    let chain = |ifindex: u32, dir| topo.host.run(|| order::tcx_chain(ifindex, dir).expect("tcx query")).expect("netns");
    let before = [chain(h0, Direction::Ingress), chain(h0, Direction::Egress)];
    assert!(before.iter().all(|c| c.len() == 1), "one link per hook: {before:?}");

    // A later pass (attaching h1) keeps h0's links: the same link ids.
    topo.host.ip(&["link", "add", "h1", "type", "veth", "peer", "name", "x1"]).unwrap();
    topo.host.ip(&["link", "set", "h1", "up"]).unwrap();
    let h1 = topo.host.ifindex("h1").unwrap();
    wait_until("h1 attached", T, || attached(&topo, &dp).iter().filter(|(i, _)| *i == h1).count() == 2);
    assert_eq!([chain(h0, Direction::Ingress), chain(h0, Direction::Egress)], before, "h0's links untouched by a later pass");

    // Someone else in front: moved back to the front without the capability
    // (the order check runs every couple of seconds).
    let foreign = ForeignPass::load();
    let _link = foreign.attach_tcx(&topo.host, h0, Direction::Ingress, true);
    let own_prog = before[0][0].prog_id;
    wait_until("hostfwd back in front on h0 ingress", T, || chain(h0, Direction::Ingress).first().is_some_and(|e| e.prog_id != foreign.prog_id(Direction::Ingress)));
    let after = chain(h0, Direction::Ingress);
    assert_eq!(after.len(), 2, "hostfwd and the foreign program, once each: {after:?}");
    assert_eq!(after[1].prog_id, foreign.prog_id(Direction::Ingress));
    assert!(own_prog != 0);
    check_policy(&topo, "tcx without CAP_SYS_ADMIN");
}

/// Removes `caps` from the calling thread's effective set (capabilities
/// belong to a thread: the rest of the test process keeps them).
fn drop_effective(caps: &[u32]) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut h = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: a version-3 header and two data structs, as capget(2) wants.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    for &c in caps {
        d[(c / 32) as usize].effective &= !(1 << (c % 32));
    }
    // SAFETY: as above; only the effective set shrinks.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// A read of the hooks that the kernel refuses is an error naming the
/// capability, never "nothing attached" (the old code read the tcx chain
/// in front of a legacy filter as empty on any error).
#[test]
fn refused_hook_queries_fail_loudly() {
    const CAP_NET_ADMIN: u32 = 12;
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("nsa-loud", AttachModeChoice::Tc { priority: TC_PRIORITY, handle: TC_HANDLE });
    let h0 = topo.h.ifindex;
    topo.host.run(|| dp.attach(h0, Direction::Ingress)).expect("netns").expect("attach");
    assert_eq!(attached(&topo, &dp), vec![(h0, Direction::Ingress)]);
    // BPF_PROG_QUERY takes CAP_NET_ADMIN or CAP_SYS_ADMIN.
    let read = topo
        .host
        .run(|| {
            drop_effective(&[CAP_NET_ADMIN, CAP_SYS_ADMIN]);
            dp.attachments()
        })
        .expect("netns");
    match read {
        Err(e) => assert!(e.to_string().contains("needs CAP_NET_ADMIN") && e.to_string().contains("BPF_PROG_QUERY"), "{e}"),
        Ok(list) => panic!("a refused query read as a result: {list:?}"),
    }
}
