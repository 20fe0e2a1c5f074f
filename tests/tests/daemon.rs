//! The daemon process itself on this kernel: real netlink events drive the
//! reconciler in a test namespace (veth only here; bonds and VLANs are in
//! the VM tests).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use hostfwd::datapath::{AttachModeChoice, Direction};
use hostfwd_tests::Topology;

fn start(topo: &Topology, dp: &TestDp, devices: &str) -> Running {
    let child = topo
        .host
        .cmd(hostfwd_bin())
        .arg("run")
        .env("HOSTFWD_BPFFS_ROOT", &dp.root)
        .env("HOSTFWD_DEVICES", devices)
        .env("HOSTFWD_AUDIT", "true")
        .env("HOSTFWD_DBUS", "none")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start hostfwd");
    Running { child }
}

/// (ifindex, direction) of hostfwd's attachments, as the kernel has them.
fn attached(topo: &Topology, dp: &TestDp) -> Vec<(u32, Direction)> {
    let list = topo.host.run(|| dp.attachments().expect("attachments")).expect("netns");
    list.into_iter().map(|a| (a.ifindex, a.dir)).collect()
}

fn both(i: u32) -> Vec<(u32, Direction)> {
    vec![(i, Direction::Ingress), (i, Direction::Egress)]
}

#[test]
fn auto_follows_addresses_and_default_routes() {
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("d-auto", AttachModeChoice::Auto);
    let h = topo.h.ifindex;
    let _d = start(&topo, &dp, "auto");
    // A veth whose peer lives elsewhere and that carries no default route is
    // container plumbing: not selected.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(attached(&topo, &dp), vec![], "veth without default route is plumbing");
    // With a default route through it, it is the uplink.
    topo.host.ip(&["route", "add", "default", "via", "10.77.0.2"]).unwrap();
    wait_until("h0 attached once it carries the default route", Duration::from_secs(30), || attached(&topo, &dp) == both(h));
    wait_until("host addresses in the map", Duration::from_secs(10), || dp.host_addrs().contains(&topo.h.v4.into()));
    // Link down and up: still the uplink, still attached.
    topo.host.ip(&["link", "set", "h0", "down"]).unwrap();
    topo.host.ip(&["link", "set", "h0", "up"]).unwrap();
    topo.host.ip(&["route", "replace", "default", "via", "10.77.0.2"]).unwrap();
    wait_until("h0 attached after down/up", Duration::from_secs(10), || attached(&topo, &dp) == both(h));
    // Address and route gone: no longer selected, detached.
    topo.host.ip(&["route", "del", "default"]).unwrap();
    topo.host.ip(&["addr", "flush", "dev", "h0"]).unwrap();
    wait_until("h0 detached without address and route", Duration::from_secs(10), || attached(&topo, &dp).is_empty());
    wait_until("its addresses left the host-address map", Duration::from_secs(10), || !dp.host_addrs().contains(&topo.h.v4.into()));
    assert!(dp.links().unwrap().is_empty(), "link configuration removed with the attachment");
}

#[test]
fn explicit_globs_follow_renames_and_hotplug() {
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("d-glob", AttachModeChoice::Auto);
    let h = topo.h.ifindex;
    let _d = start(&topo, &dp, "up*");
    std::thread::sleep(Duration::from_millis(500));
    assert!(attached(&topo, &dp).is_empty(), "h0 does not match up*");
    topo.host.ip(&["link", "set", "h0", "down"]).unwrap();
    topo.host.ip(&["link", "set", "h0", "name", "up0"]).unwrap();
    topo.host.ip(&["link", "set", "up0", "up"]).unwrap();
    wait_until("renamed to up0: attached", Duration::from_secs(10), || attached(&topo, &dp) == both(h));
    // Hotplug: a new matching device appears, then goes away.
    topo.host.ip(&["link", "add", "up1", "type", "veth", "peer", "name", "x1"]).unwrap();
    let up1 = topo.host.ifindex("up1").unwrap();
    wait_until("hotplugged up1 attached", Duration::from_secs(10), || attached(&topo, &dp).contains(&(up1, Direction::Ingress)));
    topo.host.ip(&["link", "del", "up1"]).unwrap();
    wait_until("up1 gone: only up0 left", Duration::from_secs(10), || attached(&topo, &dp) == both(h));
    wait_until("up1's configuration removed", Duration::from_secs(10), || !dp.links().unwrap().contains_key(&up1));
    topo.host.ip(&["link", "set", "up0", "down"]).unwrap();
    topo.host.ip(&["link", "set", "up0", "name", "h0"]).unwrap();
    wait_until("renamed back: detached", Duration::from_secs(10), || attached(&topo, &dp).is_empty());
}

/// The reference report's policy, verbatim, from the policy directory: the
/// cluster reaches tcp/80, the world only tcp/22 and ping. An invalid file
/// on reload changes nothing.
#[test]
fn reference_policy_on_real_traffic() {
    use hostfwd_tests::EchoServer;
    use std::net::SocketAddr;
    let topo = Topology::new().unwrap();
    let dp = TestDp::load("d-refpol", AttachModeChoice::Auto);
    // The peer is also "the world": 192.0.2.2, outside cluster_cidrs.
    topo.host.ip(&["addr", "add", "192.0.2.1/24", "dev", "h0"]).unwrap();
    topo.peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "p0"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/tests/policies/demo-host-policy.yaml");
    std::fs::copy(&reference, policies.join("demo.yaml")).unwrap();
    let cfg = dir.path().join("hostfwd.toml");
    std::fs::write(
        &cfg,
        format!(
            "audit = false\ndevices = [\"h0\"]\npolicy_dir = \"{}\"\ncluster_cidrs = [\"10.77.0.0/24\"]\nbpffs_root = \"{}\"\n[node_labels]\nnode-access = \"ssh\"\n[failsafe]\ningress = [\"udp/68\"]\negress = []\n",
            policies.display(),
            dp.root.display()
        ),
    )
    .unwrap();
    let web = EchoServer::tcp(&topo.host, "0.0.0.0:80".parse().unwrap()).unwrap();
    let ssh = EchoServer::tcp(&topo.host, "0.0.0.0:22".parse().unwrap()).unwrap();
    let child = topo.host.cmd(hostfwd_bin()).arg("--config").arg(&cfg).arg("run").env("HOSTFWD_DBUS", "none").env("RUST_LOG", "warn").stdout(Stdio::null()).spawn().unwrap();
    let d = Running { child };
    wait_until("h0 attached", Duration::from_secs(10), || attached(&topo, &dp) == both(topo.h.ifindex));
    wait_until("the policy enforces ingress", Duration::from_secs(10), || dp.policy_entries(dp.policy_generation().unwrap()).0 > 0);
    let t = Duration::from_millis(700);
    let connects = |ip: &str, port: u16| {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        match topo.peer.tcp_connect(addr, t) {
            Ok(_) => true,
            Err(e) if e.is_timeout() => false,
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    let check = |when: &str| {
        assert!(connects("10.77.0.1", 80), "{when}: cluster → tcp/80 allowed");
        assert!(!connects("192.0.2.1", 80), "{when}: world → tcp/80 dropped");
        assert!(connects("192.0.2.1", 22), "{when}: world → tcp/22 allowed");
        topo.peer.ping("192.0.2.1".parse().unwrap(), t).unwrap_or_else(|e| panic!("{when}: ping from the world: {e}"));
    };
    check("loaded");
    let _ = (&web, &ssh);
    // An invalid file joins the directory; a reload keeps the policy in force.
    std::fs::write(policies.join("zz-bad.yaml"), "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: bad\nspec:\n  ingress:\n  - toFQDNs: [{matchName: x}]\n").unwrap();
    let gen = dp.policy_generation().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dp.policy_generation().unwrap(), gen, "an invalid policy set is not applied");
    check("after a rejected reload");
}
