//! Real traffic through the attached datapath: two network namespaces over a
//! veth pair, hostfwd on the host side (`h0`), the peer as the outside world.
//! Every scenario runs with tcx and with legacy clsact/cls_bpf.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use hostfwd::datapath::{AttachModeChoice, Datapath, Direction, EventReader};
use hostfwd::policy::model::{Action, CidrSet, IcmpFamily, PortMatch, Rule};
use hostfwd_bpf::DropReason;
use hostfwd_tests::{EchoServer, Frame, Session, Topology};

const T: Duration = Duration::from_millis(700);
const TC: AttachModeChoice = AttachModeChoice::Tc { priority: 1, handle: 0x4846 };

struct Setup {
    topo: Topology,
    dp: TestDp,
    web: EchoServer,
    other: EchoServer,
    web6: EchoServer,
    other6: EchoServer,
    udp: EchoServer,
}

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Topology, datapath attached to h0 (both directions), echo servers on the
/// host: TCP 80 and 81 on v4 and v6, UDP 5353.
fn setup(tag: &str, mode: AttachModeChoice) -> Setup {
    let topo = Topology::new().expect("topology");
    let dp = attached_to_host(&topo, tag, mode);
    let h = topo.h.clone();
    let web = EchoServer::tcp(&topo.host, sa(h.v4.into(), 80)).unwrap();
    let other = EchoServer::tcp(&topo.host, sa(h.v4.into(), 81)).unwrap();
    let web6 = EchoServer::tcp(&topo.host, sa(h.v6.into(), 80)).unwrap();
    let other6 = EchoServer::tcp(&topo.host, sa(h.v6.into(), 81)).unwrap();
    let udp = EchoServer::udp(&topo.host, sa(h.v4.into(), 5353)).unwrap();
    Setup { topo, dp, web, other, web6, other6, udp }
}

/// TCP/80 from the peer's /24 (/64), ping from anywhere; ingress only.
fn web_policy(dp: &mut TestDp) {
    dp.apply(vec![
        allow_tcp(10, Direction::Ingress, &["10.77.0.0/24", "fd77::/64"], 80),
        Rule::new(11, Direction::Ingress, Action::Allow, vec![CidrSet::cidr(net("0.0.0.0/0")), CidrSet::cidr(net("::/0"))], vec![
            PortMatch::Icmp { family: IcmpFamily::V4, icmp_type: 8 },
            PortMatch::Icmp { family: IcmpFamily::V6, icmp_type: 128 },
        ]),
    ]);
}

/// Round trips on `sess` every `pause` until `stop`; the number that failed.
fn talk_until(sess: &mut Session, stop: &std::sync::atomic::AtomicBool, pause: Duration) -> usize {
    let mut fails = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if sess.roundtrip(T).is_err() {
            fails += 1;
        }
        std::thread::sleep(pause);
    }
    fails
}

fn connects(s: &Setup, addr: SocketAddr) -> bool {
    match s.topo.peer.tcp_connect(addr, T) {
        Ok(_) => true,
        Err(e) if e.is_timeout() => false,
        Err(e) => panic!("connect {addr}: unexpected {e}"),
    }
}

/// Legacy tc attachments are found by querying devices: in their namespace.
fn attached_here(s: &Setup) -> Vec<(u32, Direction)> {
    let list = s.topo.host.run(|| s.dp.attachments().unwrap()).unwrap();
    list.into_iter().map(|a| (a.ifindex, a.dir)).collect()
}

fn policy_traffic(mode: AttachModeChoice, tag: &str) {
    let mut s = setup(tag, mode);
    assert_eq!(attached_here(&s), vec![(s.topo.h.ifindex, Direction::Ingress), (s.topo.h.ifindex, Direction::Egress)]);
    // No policy: everything flows.
    assert!(connects(&s, s.other.addr()));
    web_policy(&mut s.dp);
    for (ok, bad) in [(s.web.addr(), s.other.addr()), (s.web6.addr(), s.other6.addr())] {
        assert!(connects(&s, ok), "allowed {ok}");
        assert!(!connects(&s, bad), "denied {bad}");
    }
    s.topo.peer.ping(s.topo.h.v4.into(), T).expect("ping v4 allowed");
    s.topo.peer.ping(s.topo.h.v6.into(), T).expect("ping v6 allowed");
    let sock = s.topo.peer.udp_bind(sa(s.topo.p.v4.into(), 0)).unwrap();
    let r = hostfwd_tests::traffic::udp_roundtrip(&sock, s.udp.addr(), b"x", T);
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "udp/5353 is not allowed: {r:?}");
    assert!(s.dp.drops(DropReason::PolicyDenied) >= 3);
}

#[test]
fn tcx_policy_on_real_traffic() {
    policy_traffic(AttachModeChoice::Tcx, "ns-tcx-pol");
}

#[test]
fn tc_policy_on_real_traffic() {
    policy_traffic(TC, "ns-tc-pol");
}

fn host_initiated(mode: AttachModeChoice, tag: &str) {
    let mut s = setup(tag, mode);
    web_policy(&mut s.dp);
    // A server on the peer; the host connects out: replies pass although
    // ingress is default-deny and the peer's port is not allowed inbound.
    let srv = EchoServer::tcp(&s.topo.peer, sa(s.topo.p.v4.into(), 9000)).unwrap();
    let srv6 = EchoServer::tcp(&s.topo.peer, sa(s.topo.p.v6.into(), 9000)).unwrap();
    for addr in [srv.addr(), srv6.addr()] {
        let mut sess = Session::connect(&s.topo.host, addr, T).expect("host connects out");
        sess.roundtrip(T).expect("replies flow");
    }
    s.topo.host.ping(s.topo.p.v4.into(), T).expect("ping reply v4");
    s.topo.host.ping(s.topo.p.v6.into(), T).expect("ping reply v6");
    let udp = EchoServer::udp(&s.topo.peer, sa(s.topo.p.v4.into(), 53)).unwrap();
    let sock = s.topo.host.udp_bind(sa(s.topo.h.v4.into(), 0)).unwrap();
    hostfwd_tests::traffic::udp_roundtrip(&sock, udp.addr(), b"q", T).expect("udp reply");
}

#[test]
fn tcx_replies_to_host_connections() {
    host_initiated(AttachModeChoice::Tcx, "ns-tcx-rep");
}

#[test]
fn tc_replies_to_host_connections() {
    host_initiated(TC, "ns-tc-rep");
}

/// A policy change reaches the sessions that are running: one the new
/// policy allows keeps flowing, one it denies is cut at its next packet
/// (including the host's replies, whose egress nothing enforces).
fn survives_policy(mode: AttachModeChoice, tag: &str) {
    let mut s = setup(tag, mode);
    let mut allowed = Session::connect(&s.topo.peer, s.web.addr(), T).unwrap();
    let mut denied = Session::connect(&s.topo.peer, s.other.addr(), T).unwrap();
    allowed.roundtrip(T).unwrap();
    denied.roundtrip(T).unwrap();
    web_policy(&mut s.dp);
    for _ in 0..5 {
        allowed.roundtrip(T).expect("an allowed session keeps flowing under the new policy");
    }
    assert!(denied.roundtrip(T).is_err(), "a session the new policy denies is cut");
    assert!(!connects(&s, s.other.addr()), "and new connections to 81 are denied");
}

#[test]
fn tcx_policy_change_reaches_running_sessions() {
    survives_policy(AttachModeChoice::Tcx, "ns-tcx-est");
}

#[test]
fn tc_policy_change_reaches_running_sessions() {
    survives_policy(TC, "ns-tc-est");
}

fn tagged_frames(mode: AttachModeChoice, tag: &str) {
    let s = setup(tag, mode);
    let (h, p) = (&s.topo.h, &s.topo.p);
    s.dp.allow_vlan(h.ifindex, 1000).unwrap();
    let frame = |vid| Frame::udp(p.v4.into(), h.v4.into(), 1, 9).macs(p.mac, h.mac).vlan(vid).build();
    let before = s.dp.drops(DropReason::VlanFiltered);
    for _ in 0..3 {
        s.topo.peer.send_frame(p.ifindex, &frame(1000)).unwrap();
        s.topo.peer.send_frame(p.ifindex, &frame(2000)).unwrap();
    }
    let reader = EventReader::open(s.dp.paths()).unwrap();
    s.topo.peer.send_frame(p.ifindex, &frame(2001)).unwrap();
    wait_until("4 vlan-filtered drops", Duration::from_secs(5), || s.dp.drops(DropReason::VlanFiltered) == before + 4);
    let ev = reader.poll(Duration::from_secs(1)).unwrap();
    assert!(ev.iter().any(|e| e.reason == "vlan-filtered" && e.vlan == 2001 && e.ifindex == h.ifindex), "{ev:?}");
    assert!(!ev.iter().any(|e| e.vlan == 1000), "VID 1000 is allowed: {ev:?}");
}

#[test]
fn tcx_tagged_frames_via_af_packet() {
    tagged_frames(AttachModeChoice::Tcx, "ns-tcx-vlan");
}

#[test]
fn tc_tagged_frames_via_af_packet() {
    tagged_frames(TC, "ns-tc-vlan");
}

fn audit_mode(mode: AttachModeChoice, tag: &str) {
    let mut s = setup(tag, mode);
    web_policy(&mut s.dp);
    s.dp.audit(true);
    let reader = EventReader::open(s.dp.paths()).unwrap();
    assert!(connects(&s, s.other.addr()), "audit mode drops nothing");
    assert!(connects(&s, s.other6.addr()), "audit mode drops nothing (v6)");
    let ev = reader.poll(Duration::from_secs(1)).unwrap();
    let hit = |port: u16, v6: bool| {
        ev.iter().any(|e| e.dport == port && e.audit && e.reason == "policy-denied" && e.dst.is_ipv6() == v6 && e.src == s.topo.p.ip(v6))
    };
    assert!(hit(81, false) && hit(81, true), "audited would-be drops reported: {ev:?}");
    s.dp.audit(false);
    assert!(!connects(&s, s.other.addr()), "enforcing again");
}

#[test]
fn tcx_audit_mode_reports() {
    audit_mode(AttachModeChoice::Tcx, "ns-tcx-audit");
}

#[test]
fn tc_audit_mode_reports() {
    audit_mode(TC, "ns-tc-audit");
}

#[test]
fn tc_leaves_foreign_filters_alone() {
    let s = setup("ns-tc-foreign", TC);
    let h = &s.topo.h;
    // Someone else's filter on the same clsact qdisc (this kernel has no
    // classifier but cls_bpf, so the foreign filter is a bpf one too).
    let obj = std::env::temp_dir().join(format!("hf-foreign-{}.o", std::process::id()));
    std::fs::write(&obj, hostfwd_bpf::EMPTY_OBJECT).unwrap();
    let out = s.topo.host.cmd("tc").args(["filter", "add", "dev", "h0", "ingress", "prio", "7", "bpf", "obj"]).arg(&obj).args(["sec", "tcx/ingress", "da"]).output().unwrap();
    let _ = std::fs::remove_file(&obj);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.topo.host.run(|| s.dp.detach(h.ifindex, Direction::Ingress).unwrap()).unwrap();
    let show = s.topo.host.cmd("tc").args(["filter", "show", "dev", "h0", "ingress"]).output().unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("hf_empty"), "foreign filter kept: {show}");
    assert!(!show.contains("hf_ingress"), "ours removed: {show}");
    let q = s.topo.host.cmd("tc").args(["qdisc", "show", "dev", "h0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&q.stdout).contains("clsact"), "qdisc kept");
}

// --- The loader killed and restarted ---------------------------------------

/// `web_policy` as a Cilium policy file: the daemon manages the policy.
const WEB_CCNP: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: web
spec:
  nodeSelector: {}
  ingress:
  - fromCIDR: [10.77.0.0/24, fd77::/64]
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
  - fromEntities: [all]
    icmps:
    - fields:
      - {type: 8, family: IPv4}
      - {type: 128, family: IPv6}
";

fn daemon(s: &Setup, root: &std::path::Path, policies: &std::path::Path, mode: &str) -> Child {
    daemon_cmd(s, root, policies, mode).spawn().expect("start hostfwd")
}

/// The daemon on h0 in the host namespace, logging warnings to stderr.
fn daemon_cmd(s: &Setup, root: &std::path::Path, policies: &std::path::Path, mode: &str) -> std::process::Command {
    let mut cmd = s.topo.host.cmd(hostfwd_bin());
    cmd
        .env("HOSTFWD_BPFFS_ROOT", root)
        .env("HOSTFWD_POLICY_DIR", policies)
        .env("HOSTFWD_DEVICES", "h0")
        .env("HOSTFWD_AUDIT", "false")
        .env("HOSTFWD_DBUS", "none")
        .env("HOSTFWD_ATTACH_MODE", mode)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    cmd
}

/// hostfwd's own programs on h0's hooks as the kernel lists them.
fn kernel_view(s: &Setup, mode: &str) -> Vec<String> {
    let h = s.topo.h.ifindex;
    let mut out = Vec::new();
    for d in Direction::ALL {
        if mode == "tcx" {
            let ids = s.topo.host.run(|| Datapath::tcx_progs(h, d).unwrap()).unwrap();
            out.extend(ids.iter().map(|id| format!("{d:?}:{id}")));
        } else {
            let dir = if d == Direction::Ingress { "ingress" } else { "egress" };
            let show = s.topo.host.cmd("tc").args(["filter", "show", "dev", "h0", dir]).output().unwrap();
            out.extend(String::from_utf8_lossy(&show.stdout).lines().filter(|l| l.contains(" id ")).map(|l| format!("{d:?}:{l}")));
        }
    }
    out
}

fn sigkill_and_adopt(mode: &str, choice: AttachModeChoice) {
    // The test's datapath shares the daemon's bpffs root: it adopts the
    // pinned maps, which is how it installs the policy.
    let s = setup(&format!("ns-{mode}-kill"), choice);
    let h = s.topo.h.ifindex;
    for d in Direction::ALL {
        s.topo.host.run(|| s.dp.detach(h, d).unwrap()).unwrap();
    }
    let root = s.dp.root.clone();
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("web.yaml"), WEB_CCNP).unwrap();
    let mut first = daemon(&s, &root, policies.path(), mode);
    wait_until("daemon attached both directions", Duration::from_secs(30), || kernel_view(&s, mode).len() == 2);
    wait_until("the daemon's policy enforced", Duration::from_secs(5), || !connects(&s, s.other.addr()));
    let mut sess = Session::connect(&s.topo.peer, s.web.addr(), T).unwrap();
    sess.roundtrip(T).unwrap();
    let before = kernel_view(&s, mode);

    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(kernel_view(&s, mode), before, "SIGKILL leaves the programs attached");
    sess.roundtrip(T).expect("session flows with the daemon dead");
    assert!(!connects(&s, s.other.addr()), "policy still enforced with the daemon dead");

    // Restart while the session keeps talking: no gap, no duplicate.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures = std::thread::scope(|sc| {
        let talker = sc.spawn(|| talk_until(&mut sess, &stop, Duration::from_millis(20)));
        let mut second = daemon(&s, &root, policies.path(), mode);
        wait_until("the new daemon's programs replace the old ones", Duration::from_secs(30), || kernel_view(&s, mode) != before);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let fails = talker.join().unwrap();
        let after = kernel_view(&s, mode);
        assert_eq!(after.len(), 2, "exactly one program per direction: {after:?}");
        assert!(!connects(&s, s.other.addr()), "policy enforced after adoption");
        assert!(connects(&s, s.web.addr()), "allowed after adoption");
        second.kill().unwrap();
        second.wait().unwrap();
        fails
    });
    assert_eq!(failures, 0, "the established session saw no gap");
}

#[test]
fn tcx_sigkill_and_adopt() {
    sigkill_and_adopt("tcx", AttachModeChoice::Tcx);
}

#[test]
fn tc_sigkill_and_adopt() {
    sigkill_and_adopt("tc", TC);
}


// --- First on the hook ------------------------------------------------------
//
// Whoever runs first on a hook decides: a program that returns "pass" in
// front of hostfwd made the policy irrelevant. Each test has a foreign
// program that passes everything (bpf/c/pass.bpf.c) on h0's ingress.

/// How many of `n` datagrams to the denied UDP/5353 were echoed, from a
/// fresh socket (a port that already talked has a conntrack entry from the
/// echo hostfwd saw leaving).
fn udp_echoes(s: &Setup, n: usize) -> usize {
    let sock = s.topo.peer.udp_bind(sa(s.topo.p.v4.into(), 0)).unwrap();
    for k in 0..n {
        sock.send_to(&[k as u8], s.udp.addr()).unwrap();
    }
    let mut got = 0;
    while hostfwd_tests::traffic::udp_recv(&sock, T).is_ok() {
        got += 1;
    }
    got
}

fn tcx_chain(s: &Setup, dir: Direction) -> Vec<u32> {
    s.topo.host.run(|| Datapath::tcx_progs(s.topo.h.ifindex, dir).unwrap()).unwrap()
}

/// The programs hostfwd reports in front of it on h0's ingress.
fn ahead_on_ingress(s: &Setup) -> Vec<String> {
    let list = s.topo.host.run(|| s.dp.attachments().unwrap()).unwrap();
    let a = list.into_iter().find(|a| a.ifindex == s.topo.h.ifindex && a.dir == Direction::Ingress).expect("ingress attached");
    a.ahead.iter().map(ToString::to_string).collect()
}

#[test]
fn tcx_attaches_in_front_of_a_foreign_pass_program() {
    let mut s = setup("ns-tcx-front", AttachModeChoice::Tcx);
    let h = s.topo.h.ifindex;
    for d in Direction::ALL {
        s.topo.host.run(|| s.dp.detach(h, d).unwrap()).unwrap();
    }
    web_policy(&mut s.dp);
    let foreign = ForeignPass::load();
    let fid = foreign.prog_id(Direction::Ingress);
    // Attached before hostfwd, at the end of the chain (no flags).
    let _first = foreign.attach_tcx(&s.topo.host, h, Direction::Ingress, false);
    assert_eq!(udp_echoes(&s, 20), 20, "alone, the foreign program passes everything");

    s.topo.host.run(|| Direction::ALL.map(|d| s.dp.attach(h, d).expect("attach"))).unwrap();
    let own = s.dp.prog_id(Direction::Ingress);
    assert_eq!(tcx_chain(&s, Direction::Ingress), vec![own, fid], "hostfwd attaches in front");
    assert!(ahead_on_ingress(&s).is_empty());
    assert_eq!(udp_echoes(&s, 20), 0, "denied UDP is dropped although a program passing everything was there first");
    assert!(connects(&s, s.web.addr()), "allowed traffic goes on through the foreign program (hostfwd passes with TCX_NEXT)");

    // Someone inserts the program in front again: reported by name, and
    // the move puts hostfwd back first with one link, on the same pin.
    // (A program runs once per hook: a second load.)
    let other = ForeignPass::load();
    let oid = other.prog_id(Direction::Ingress);
    let _second = other.attach_tcx(&s.topo.host, h, Direction::Ingress, true);
    assert_eq!(tcx_chain(&s, Direction::Ingress), vec![oid, own, fid]);
    assert_eq!(ahead_on_ingress(&s), vec![format!("{} (id {oid}, tcx)", ForeignPass::INGRESS)]);
    assert_eq!(udp_echoes(&s, 20), 20, "in front, the foreign program decides");
    let pin = s.dp.paths().tcx_link(h, Direction::Ingress);
    let link_id = |p: &std::path::Path| libbpf_rs::Link::open(p).and_then(|l| l.info()).map(|i| i.id).unwrap();
    let before = link_id(&pin);
    s.topo.host.run(|| s.dp.move_to_front(h, Direction::Ingress).expect("move to front")).unwrap();
    assert_eq!(tcx_chain(&s, Direction::Ingress), vec![own, oid, fid], "hostfwd first, its old link released");
    assert_ne!(link_id(&pin), before, "the pin holds the new link");
    assert!(!s.dp.paths().tcx_link_tmp(h, Direction::Ingress).exists(), "no temporary pin left");
    assert!(ahead_on_ingress(&s).is_empty());
    assert_eq!(udp_echoes(&s, 20), 0, "hostfwd decides again");
}

#[test]
fn tcx_daemon_moves_back_to_the_front() {
    let s = setup("ns-tcx-move", AttachModeChoice::Tcx);
    let h = s.topo.h.ifindex;
    for d in Direction::ALL {
        s.topo.host.run(|| s.dp.detach(h, d).unwrap()).unwrap();
    }
    let root = s.dp.root.clone();
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("web.yaml"), WEB_CCNP).unwrap();
    let mut child = daemon_cmd(&s, &root, policies.path(), "tcx").stderr(Stdio::piped()).spawn().expect("start hostfwd");
    wait_until("daemon attached both directions", Duration::from_secs(30), || kernel_view(&s, "tcx").len() == 2);
    wait_until("the daemon's policy enforced", Duration::from_secs(5), || !connects(&s, s.other.addr()));
    assert_eq!(udp_echoes(&s, 20), 0);
    let own = tcx_chain(&s, Direction::Ingress)[0];

    let foreign = ForeignPass::load();
    let fid = foreign.prog_id(Direction::Ingress);
    let mut sess = Session::connect(&s.topo.peer, s.web.addr(), T).unwrap();
    sess.roundtrip(T).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (fails, _link) = std::thread::scope(|sc| {
        // An allowed flow all through the insertion and the move.
        let talker = sc.spawn(|| talk_until(&mut sess, &stop, Duration::from_millis(5)));
        let link = foreign.attach_tcx(&s.topo.host, h, Direction::Ingress, true);
        // No netlink event announces a tcx attach: the periodic order check
        // has to find it.
        wait_until("hostfwd first again", Duration::from_secs(15), || tcx_chain(&s, Direction::Ingress) == vec![own, fid]);
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (talker.join().unwrap(), link)
    });
    assert_eq!(fails, 0, "the allowed session never stalled");
    assert_eq!(tcx_chain(&s, Direction::Egress).len(), 1, "egress untouched");
    assert_eq!(udp_echoes(&s, 20), 0, "denied UDP dropped again");
    assert!(connects(&s, s.web.addr()), "allowed after the move");

    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let named = format!("{} (id {fid}, tcx)", ForeignPass::INGRESS);
    assert!(log.lines().any(|l| l.contains("WARN") && l.contains(&named) && l.contains("h0")), "warning names the program and the device:\n{log}");
}

#[test]
fn tc_foreign_filters_run_after_hostfwd_or_are_reported() {
    let mut s = setup("ns-tc-order", TC);
    web_policy(&mut s.dp);
    let obj = std::env::temp_dir().join(format!("hf-pass-{}.o", std::process::id()));
    std::fs::write(&obj, hostfwd_bpf::PASS_OBJECT).unwrap();
    let add = |prio: &str, handle: &str| {
        let out = s
            .topo
            .host
            .cmd("tc")
            .args(["filter", "add", "dev", "h0", "ingress", "protocol", "all", "prio", prio, "handle", handle, "bpf", "obj"])
            .arg(&obj)
            .args(["sec", "tcx/ingress", "da"])
            .output()
            .unwrap();
        assert!(out.status.success(), "tc filter add prio {prio}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // A higher priority number runs after hostfwd's priority 1.
    add("7", "0x7");
    assert!(ahead_on_ingress(&s).is_empty(), "{:?}", ahead_on_ingress(&s));
    assert_eq!(udp_echoes(&s, 20), 0, "hostfwd decides before the foreign filter");
    assert!(connects(&s, s.web.addr()), "allowed traffic goes on to the foreign filter and in");

    // Priority 1 as well, added after hostfwd's: cls_bpf runs the newest
    // filter of a priority first, so it decides, and it is reported.
    add("1", "0x1");
    let _ = std::fs::remove_file(&obj);
    let ahead = ahead_on_ingress(&s);
    assert_eq!(ahead.len(), 1, "{ahead:?}");
    // Named from the filter dump, as iproute2 named it (object file and
    // section): hostfwd does not open other programs by id.
    let named = format!("hf-pass-{}.o:[tcx/ingress] (id ", std::process::id());
    assert!(ahead[0].starts_with(&named) && ahead[0].ends_with("tc prio 1 handle 0x1)"), "{ahead:?}");
    assert_eq!(udp_echoes(&s, 20), 20, "in front, the foreign filter decides");
}
