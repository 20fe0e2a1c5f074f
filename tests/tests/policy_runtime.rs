//! Runtime vs permanent policy, apply-with-confirm and audit mode across
//! restarts, driven through the real bus (busctl as the client) and
//! checked with real traffic between network namespaces.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hostfwd_tests::bus::{Caller, Daemon, TestBus};
use hostfwd_tests::fuzz::Rng;
use hostfwd_tests::{EchoServer, Topology};

const DEST: &str = "org.hostfwd.Firewall1";
const PATH: &str = "/org/hostfwd/Firewall1";
const MANAGER: &str = "org.hostfwd.Firewall1.Manager";
const LINK: &str = "org.hostfwd.Firewall1.Link";

fn ccnp(name: &str, port: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: {name}\nspec:\n  nodeSelector: {{}}\n  ingress:\n  - fromEntities: [all]\n    toPorts:\n    - ports:\n      - port: \"{port}\"\n        protocol: TCP\n"
    )
}

/// Daemon settings: enforcing, and no failsafe port that would decide the
/// ports the tests use.
const ENV: &[(&str, &str)] = &[("HOSTFWD_AUDIT", "false"), ("HOSTFWD_FAILSAFE__INGRESS", "udp/68")];

struct Env {
    bus: TestBus,
    topo: Topology,
    _web: EchoServer,
    _ssh: EchoServer,
}

impl Env {
    fn new() -> Env {
        let bus = TestBus::start().expect("test bus");
        let topo = Topology::new().expect("topology");
        let web = EchoServer::tcp(&topo.host, "0.0.0.0:80".parse().unwrap()).unwrap();
        let ssh = EchoServer::tcp(&topo.host, "0.0.0.0:22".parse().unwrap()).unwrap();
        Env { bus, topo, _web: web, _ssh: ssh }
    }

    fn start(&self) -> Daemon {
        let d = self.bus.start_daemon(&self.topo.host, "h0", ENV).expect("hostfwd");
        self.wait("h0 enforced", Duration::from_secs(10), || self.link_role() == "enforce");
        d
    }

    fn call(&self, method: &str, sig: &str, args: &[&str]) -> String {
        let mut v = vec!["call", DEST, PATH, MANAGER, method];
        if !sig.is_empty() {
            v.push(sig);
        }
        v.extend_from_slice(args);
        self.bus.busctl(Caller::Root, &v).ok(method)
    }

    fn call_err(&self, method: &str, sig: &str, args: &[&str]) -> String {
        let mut v = vec!["call", DEST, PATH, MANAGER, method];
        if !sig.is_empty() {
            v.push(sig);
        }
        v.extend_from_slice(args);
        self.bus.busctl(Caller::Root, &v).err(method)
    }

    fn prop(&self, path: &str, iface: &str, name: &str) -> String {
        self.bus.busctl(Caller::Root, &["get-property", DEST, path, iface, name]).ok(name).trim().to_string()
    }

    fn manager(&self, name: &str) -> String {
        self.prop(PATH, MANAGER, name)
    }

    /// The object path of h0.
    fn h0(&self) -> String {
        let out = self.call("GetLinkByName", "s", &["h0"]);
        out.split('"').nth(1).unwrap_or_else(|| panic!("no path in {out:?}")).to_string()
    }

    fn link_role(&self) -> String {
        let out = self.bus.busctl(Caller::Root, &["call", DEST, PATH, MANAGER, "GetLinkByName", "s", "h0"]);
        if !out.success {
            return String::new();
        }
        let Some(path) = out.stdout.split('"').nth(1) else { return String::new() };
        let role = self.bus.busctl(Caller::Root, &["get-property", DEST, path, LINK, "Role"]);
        role.stdout.trim().trim_start_matches("s ").trim_matches('"').to_string()
    }

    /// Applies `yaml` as `name`; returns the revision.
    fn apply(&self, name: &str, yaml: &str, persist: bool, confirm_s: u32) -> u64 {
        let (p, c) = (persist.to_string(), confirm_s.to_string());
        let out = self.call("ApplyPolicy", "ssa{sv}", &[name, yaml, "2", "persist", "b", &p, "confirm-timeout-sec", "u", &c]);
        out.trim().trim_start_matches("t ").parse().unwrap_or_else(|_| panic!("revision in {out:?}"))
    }

    fn connects(&self, port: u16) -> bool {
        self.connects_within(port, Duration::from_millis(600))
    }

    /// Whether a TCP connection from the peer to `port` is accepted; a drop
    /// is a timeout after `wait` (the peer is one veth away).
    fn connects_within(&self, port: u16, wait: Duration) -> bool {
        let addr: SocketAddr = format!("10.77.0.1:{port}").parse().unwrap();
        match self.topo.peer.tcp_connect(addr, wait) {
            Ok(_) => true,
            Err(e) if e.is_timeout() => false,
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }

    fn wait(&self, what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + within;
        while !f() {
            assert!(Instant::now() < end, "timed out after {within:?} waiting for: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn revision(e: &Env) -> u64 {
    e.manager("PolicyRevision").trim_start_matches("t ").parse().unwrap()
}

#[test]
fn unconfirmed_change_rolls_back_and_traffic_follows() {
    let e = Env::new();
    let d = e.start();
    // The permanent policy: web (tcp/80) only.
    let r1 = e.apply("web", &ccnp("web", 80), true, 0);
    let file = d.policy_dir().join("web.yaml");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), ccnp("web", 80), "persisted atomically as web.yaml");
    assert!(e.connects(80) && !e.connects(22), "web allowed, ssh denied");

    // A mistaken change, with a 3 s window: ssh only.
    let r2 = e.apply("web", &ccnp("ssh", 22), false, 3);
    assert_eq!(r2, r1 + 1);
    assert!(!e.connects(80) && e.connects(22), "the change is in force during the window");
    let pending = e.manager("PendingConfirm");
    assert!(pending.starts_with(&format!("(tt) {r2} ")), "{pending}");
    let busy = e.call_err("ApplyPolicy", "ssa{sv}", &["other", &ccnp("other", 443), "0"]);
    assert!(busy.contains("awaits confirmation"), "a second change waits: {busy}");

    // Not confirmed: the previous policy comes back by itself.
    e.wait("rollback after the timeout", Duration::from_secs(10), || e.connects(80));
    assert!(!e.connects(22), "ssh denied again");
    assert_eq!(e.manager("PendingConfirm"), "(tt) 0 0");
    assert_eq!(revision(&e), r2 + 1, "the rollback is a new revision");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), ccnp("web", 80), "the permanent file is untouched");

    // Confirmed in time: the change stays.
    let r3 = e.apply("web", &ccnp("ssh", 22), false, 3);
    let wrong = e.call_err("ConfirmPolicy", "t", &[&(r3 + 7).to_string()]);
    assert!(wrong.contains("revision"), "{wrong}");
    e.call("ConfirmPolicy", "t", &[&r3.to_string()]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(!e.connects(80) && e.connects(22), "a confirmed change is not rolled back");
    assert_eq!(revision(&e), r3);
    assert!(e.call_err("RollbackPolicy", "", &[]).contains("confirmation"), "nothing to roll back");

    // An explicit rollback.
    let r4 = e.apply("web", &ccnp("web", 80), false, 60);
    assert!(e.connects(80));
    e.call("RollbackPolicy", "", &[]);
    assert!(!e.connects(80) && e.connects(22), "rolled back to the confirmed ssh-only policy");
    assert_eq!(revision(&e), r4 + 1);
    drop(d);
}

#[test]
fn restart_during_the_window_comes_up_with_the_permanent_policy() {
    let e = Env::new();
    let mut d = e.start();
    e.apply("web", &ccnp("web", 80), true, 0);
    assert!(e.connects(80));
    // Asked to persist, but only once confirmed.
    e.apply("web", &ccnp("ssh", 22), true, 60);
    assert!(!e.connects(80));
    d.kill_and_restart(&e.bus, &e.topo.host, "h0", ENV).expect("restart");
    e.wait("h0 enforced after restart", Duration::from_secs(10), || e.link_role() == "enforce");
    e.wait("the permanent policy after restart", Duration::from_secs(10), || e.connects(80));
    assert!(!e.connects(22));
    assert_eq!(e.manager("PendingConfirm"), "(tt) 0 0");
    assert_eq!(std::fs::read_to_string(d.policy_dir().join("web.yaml")).unwrap(), ccnp("web", 80));
    // An invalid change is refused and changes nothing.
    let before = revision(&e);
    let err = e.call_err("ApplyPolicy", "ssa{sv}", &["web", &ccnp("web", 80).replace("toPorts", "toFQDNs"), "0"]);
    assert!(err.contains("web:") && err.contains("toFQDNs"), "the error names the source, line and field: {err}");
    assert_eq!(revision(&e), before);
    assert!(e.connects(80));
}

#[test]
fn audit_mode_persists_across_restarts_globally_and_per_link() {
    let e = Env::new();
    let mut d = e.start();
    e.apply("ssh", &ccnp("ssh", 22), false, 0);
    assert!(!e.connects(80), "enforcing: web denied");
    assert_eq!(e.manager("AuditMode"), "b false");
    assert_eq!(e.manager("State"), "s \"enforcing\"");

    // Global audit, persisted: survives a restart although the
    // configuration says audit = false.
    e.call("SetAuditMode", "bb", &["true", "true"]);
    assert_eq!(e.manager("AuditMode"), "b true");
    assert_eq!(e.manager("State"), "s \"audit\"");
    assert!(e.connects(80), "audit: nothing dropped");
    let state = std::fs::read_to_string(d.state_dir().join("state.json")).unwrap();
    assert!(state.contains("\"audit\": true"), "{state}");
    d.kill_and_restart(&e.bus, &e.topo.host, "h0", ENV).expect("restart");
    e.wait("h0 enforced after restart", Duration::from_secs(10), || e.link_role() == "enforce");
    assert_eq!(e.manager("AuditMode"), "b true", "global audit restored");
    // (The runtime policy is gone after the restart; the permanent set is empty.)
    e.apply("ssh", &ccnp("ssh", 22), false, 0);
    assert!(e.connects(80), "still auditing after the restart");

    // Runtime only: lost on restart.
    e.call("SetAuditMode", "bb", &["false", "false"]);
    e.wait("enforcing again", Duration::from_secs(5), || !e.connects(80));
    d.kill_and_restart(&e.bus, &e.topo.host, "h0", ENV).expect("restart");
    e.wait("h0 enforced after restart", Duration::from_secs(10), || e.link_role() == "enforce");
    assert_eq!(e.manager("AuditMode"), "b true", "a runtime change does not persist");

    // Per link, persisted: global enforcing, h0 auditing.
    e.call("SetAuditMode", "bb", &["false", "true"]);
    e.apply("ssh", &ccnp("ssh", 22), false, 0);
    assert!(!e.connects(80));
    let h0 = e.h0();
    e.bus.busctl(Caller::Root, &["call", DEST, &h0, LINK, "SetAuditMode", "bb", "true", "true"]).ok("link SetAuditMode");
    assert_eq!(e.prop(&h0, LINK, "AuditMode"), "b true");
    assert!(e.connects(80), "h0 audits");
    d.kill_and_restart(&e.bus, &e.topo.host, "h0", ENV).expect("restart");
    e.wait("h0 enforced after restart", Duration::from_secs(10), || e.link_role() == "enforce");
    assert_eq!(e.manager("AuditMode"), "b false");
    let h0 = e.h0();
    assert_eq!(e.prop(&h0, LINK, "AuditMode"), "b true", "link audit restored by name");
    e.apply("ssh", &ccnp("ssh", 22), false, 0);
    assert!(e.connects(80), "h0 still audits after the restart");
}

fn policy_names(e: &Env) -> String {
    e.call("ListPolicies", "", &[])
}

/// A permanent `web.yml` (not `.yaml`) overridden at runtime: persisting or
/// removing with persist acts on `web.yml` itself. Before, both went to
/// `web.yaml`: a persisted change left two files of one name (the next
/// start refuses them), and `remove --persist` left `web.yml` in place, to
/// come back with the next reload.
#[test]
fn persist_and_remove_of_a_runtime_override_act_on_the_permanent_yml_file() {
    let e = Env::new();
    let d = e.start();
    let yml = d.policy_dir().join("web.yml");
    let yaml = d.policy_dir().join("web.yaml");
    std::fs::write(&yml, ccnp("web", 80)).unwrap();
    e.call("Reload", "", &[]);
    assert!(policy_names(&e).contains("\"web\""), "{}", policy_names(&e));
    assert!(e.connects(80) && !e.connects(22));

    // Runtime overrides, then one persisted.
    e.apply("web", &ccnp("ssh", 22), false, 0);
    e.apply("web", &ccnp("ssh", 22), false, 0);
    e.apply("web", &ccnp("ssh2", 22), true, 0);
    assert_eq!(std::fs::read_to_string(&yml).unwrap(), ccnp("ssh2", 22), "the permanent file is web.yml");
    assert!(!yaml.exists(), "no second file of the same name");

    // A runtime override again, removed with persist: web.yml goes.
    e.apply("web", &ccnp("web", 80), false, 0);
    e.call("RemovePolicy", "sa{sv}", &["web", "1", "persist", "b", "true"]);
    assert!(!yml.exists() && !yaml.exists(), "web.yml removed");
    e.call("Reload", "", &[]);
    assert!(!policy_names(&e).contains("\"web\""), "web does not come back with a reload: {}", policy_names(&e));
    assert!(e.connects(80) && e.connects(22), "no policy: nothing denied");
}

/// A policy file a cold start cannot load: `toFQDNs` on line 9.
fn invalid() -> String {
    ccnp("bad", 22).replace("toPorts", "toFQDNs")
}

impl Env {
    /// `hostfwdctl status` on the test bus: (exit status, stdout).
    fn status(&self) -> (i32, String) {
        let out = std::process::Command::new(hostfwd_tests::hostfwdctl_bin())
            .args(["--address", self.bus.address(), "status"])
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .output()
            .expect("running hostfwdctl");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What a reboot does: the daemon dies, the pins (maps, programs) are
    /// gone, the policy and state directories stay; `between` runs while no
    /// daemon runs. Returns once h0 is enforced again.
    fn cold_start(&self, d: &mut Daemon, between: impl FnOnce(&Daemon)) {
        d.kill(&self.bus).expect("kill");
        d.remove_pins().expect("remove pins");
        between(d);
        d.restart(&self.bus, &self.topo.host, "h0", ENV).expect("cold start");
        self.wait("h0 enforced after the cold start", Duration::from_secs(10), || self.link_role() == "enforce");
    }
}

/// Issue 11, item 3: a cold start with an invalid file in the policy
/// directory used to install nothing (ssh open) while State said
/// enforcing. The last good policy set, kept in state_dir, is enforced
/// instead, and every channel says degraded and why.
#[test]
fn cold_start_with_an_invalid_file_keeps_the_last_good_policy_and_says_degraded() {
    let e = Env::new();
    let mut d = e.start();
    e.apply("web", &ccnp("web", 80), true, 0);
    assert!(e.connects(80) && !e.connects(22), "web allowed, ssh denied");
    assert_eq!(e.status().0, 0, "enforcing: status succeeds");

    e.cold_start(&mut d, |d| std::fs::write(d.policy_dir().join("bad.yaml"), invalid()).unwrap());
    assert!(!e.connects(22), "ssh stays denied after the cold start: the last good policy is enforced");
    assert!(e.connects(80), "web still allowed");
    assert_eq!(e.manager("State"), "s \"degraded\"");
    let problems = e.manager("Problems");
    assert!(problems.contains("bad.yaml:9:") && problems.contains("toFQDNs"), "Problems names the file, line and field: {problems}");
    let (code, out) = e.status();
    assert_eq!(code, 6, "status fails while degraded:\n{out}");
    assert!(out.contains("degraded") && out.contains("bad.yaml:9:"), "{out}");
    assert!(d.log().contains("bad.yaml:9:"), "the journal has the error");

    // Fixed and reloaded: enforcing again, nothing to report.
    std::fs::remove_file(d.policy_dir().join("bad.yaml")).unwrap();
    e.call("Reload", "", &[]);
    assert_eq!(e.manager("State"), "s \"enforcing\"");
    assert_eq!(e.manager("Problems"), "as 0");
    assert_eq!(e.status().0, 0);
    assert!(e.connects(80) && !e.connects(22));
}

/// Issue 11, item 3: with no good policy ever, the daemon says plainly
/// that it enforces nothing (it used to say enforcing).
#[test]
fn first_start_with_an_invalid_file_says_not_enforcing() {
    let e = Env::new();
    let mut d = e.start();
    // As a fresh install: no pins, no state, only the invalid file.
    e.cold_start(&mut d, |d| {
        std::fs::remove_dir_all(d.state_dir()).unwrap();
        std::fs::create_dir(d.state_dir()).unwrap();
        std::fs::write(d.policy_dir().join("bad.yaml"), invalid()).unwrap();
    });
    assert_eq!(e.manager("State"), "s \"not-enforcing\"");
    let problems = e.manager("Problems");
    assert!(problems.contains("not enforcing") && problems.contains("bad.yaml:9:"), "{problems}");
    assert!(e.connects(22) && e.connects(80), "indeed nothing is enforced");
    let (code, out) = e.status();
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("not-enforcing") && !out.contains(" enforcing\n"), "{out}");

    // A good policy through the API is enforced; the directory is still
    // invalid, which a cold start would meet: degraded, not enforcing.
    e.apply("web", &ccnp("web", 80), false, 0);
    assert!(e.connects(80) && !e.connects(22));
    assert_eq!(e.manager("State"), "s \"degraded\"");
}

/// Issue 11, item 5: the revision is persisted; restarts (warm and cold)
/// never hand out a revision again (it used to restart at 1).
#[test]
fn the_revision_survives_restarts_and_never_goes_backwards() {
    let e = Env::new();
    let mut d = e.start();
    let mut last = revision(&e);
    for port in [80, 22, 80] {
        let r = e.apply("web", &ccnp("web", port), true, 0);
        assert!(r > last, "{r} after {last}");
        last = r;
    }
    d.kill_and_restart(&e.bus, &e.topo.host, "h0", ENV).expect("restart");
    e.wait("h0 enforced after restart", Duration::from_secs(10), || e.link_role() == "enforce");
    let r = revision(&e);
    assert!(r > last, "after a restart: {r}, before: {last}");
    e.cold_start(&mut d, |_| {});
    let r2 = revision(&e);
    assert!(r2 > r, "after a cold start: {r2}, before: {r}");
    assert!(e.connects(80) && !e.connects(22), "the permanent policy after the cold start");
}

/// Every file under `root`, relative to it, sorted.
fn tree(root: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The operations the crash loop interrupts.
#[derive(Debug, Clone, Copy)]
enum Op {
    ApplyPersist,
    ApplyConfirm,
    ApplyRollback,
    Reload,
    ApplyRuntime,
}

/// Issue 11, item 5: SIGKILL at random moments of apply, persist, confirm,
/// rollback and reload. After each restart the policy in force is exactly
/// the old or the new one (by real traffic), the files are whole, the
/// revision has not gone backwards, and the pins and attachments are those
/// of one daemon. `HOSTFWD_CRASH_KILLS` (default 100) and
/// `HOSTFWD_CRASH_SEED` vary the run.
#[test]
fn sigkill_at_random_moments_leaves_the_old_or_the_new_policy() {
    let kills: u64 = std::env::var("HOSTFWD_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let seed: u64 = std::env::var("HOSTFWD_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0011);
    eprintln!("crash loop: {kills} kills, HOSTFWD_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let e = Env::new();
    let mut d = e.start();
    let variants = [ccnp("web", 80), ccnp("web", 22)];
    let file = d.policy_dir().join("web.yaml");
    e.apply("web", &variants[0], true, 0);
    let pins = tree(&d.bpffs_root);
    let tcx = e.manager("AttachMode") == "s \"tcx\"";
    let h0 = e.topo.h.ifindex;
    let mut max_rev = revision(&e);
    let fast = Duration::from_millis(200);
    // (operation, the new text in force afterwards): both outcomes must
    // occur, or the kills missed the windows.
    let mut outcomes: std::collections::BTreeMap<(String, bool), u32> = Default::default();

    for i in 0..kills {
        let old = std::fs::read_to_string(&file).unwrap();
        let old_i = variants.iter().position(|v| *v == old).expect("a known variant");
        let new = variants[1 - old_i].clone();
        let op = [Op::ApplyPersist, Op::ApplyConfirm, Op::ApplyRollback, Op::Reload, Op::ApplyRuntime][rng.below(5) as usize];
        // Two calls (apply, then confirm or rollback) take about twice as long.
        let window = if matches!(op, Op::ApplyConfirm | Op::ApplyRollback) { 90_000 } else { 40_000 };
        let delay = Duration::from_micros(rng.below(window));
        // The files the permanent set may hold afterwards.
        let allowed: Vec<&String> = match op {
            Op::ApplyPersist | Op::ApplyConfirm => vec![&old, &new],
            Op::ApplyRollback | Op::ApplyRuntime => vec![&old],
            Op::Reload => vec![&new],
        };
        if let Op::Reload = op {
            // An administrator's edit, whole (as an editor saves), then a reload.
            let tmp = d.policy_dir().join("web.yaml.edit");
            std::fs::write(&tmp, &new).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        }
        let replies: Vec<u64> = std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let bus = |args: &[&str]| e.bus.busctl(Caller::Root, args);
                let apply = |persist: &str, confirm: &str| {
                    let out = bus(&["call", DEST, PATH, MANAGER, "ApplyPolicy", "ssa{sv}", "web", &new, "2", "persist", "b", persist, "confirm-timeout-sec", "u", confirm]);
                    out.success.then(|| out.stdout.trim().trim_start_matches("t ").parse::<u64>().ok()).flatten()
                };
                let mut revs = Vec::new();
                match op {
                    Op::ApplyPersist => revs.extend(apply("true", "0")),
                    Op::ApplyRuntime => revs.extend(apply("false", "0")),
                    Op::ApplyConfirm | Op::ApplyRollback => {
                        if let Some(r) = apply("true", "60") {
                            revs.push(r);
                            if let Op::ApplyConfirm = op {
                                bus(&["call", DEST, PATH, MANAGER, "ConfirmPolicy", "t", &r.to_string()]);
                            } else {
                                let out = bus(&["call", DEST, PATH, MANAGER, "RollbackPolicy"]);
                                revs.extend(out.stdout.trim().trim_start_matches("t ").parse::<u64>().ok());
                            }
                        }
                    }
                    Op::Reload => {
                        bus(&["call", DEST, PATH, MANAGER, "Reload"]);
                    }
                }
                revs
            });
            std::thread::sleep(delay);
            d.kill(&e.bus).expect("kill");
            worker.join().expect("the operation's thread")
        });
        let what = format!("kill {i}: {op:?} after {delay:?}");
        for r in replies {
            assert!(r > max_rev, "{what}: revision {r} handed out after {max_rev}");
            max_rev = r;
        }

        d.restart(&e.bus, &e.topo.host, "h0", ENV).unwrap_or_else(|err| panic!("{what}: restart: {err}"));
        e.wait(&format!("{what}: h0 enforced"), Duration::from_secs(10), || e.link_role() == "enforce");

        // Files whole: the permanent file is one of the two texts, and no
        // temp file is left in either directory.
        let now = std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("{what}: web.yaml: {err}"));
        assert!(allowed.contains(&&now), "{what}: web.yaml is neither the old nor the new text:\n{now}");
        assert_eq!(tree(&d.policy_dir()), ["web.yaml"], "{what}: policy_dir");
        let state = tree(&d.state_dir());
        assert!(state.iter().all(|f| f == "policy.json" || f == "state.json"), "{what}: state_dir holds {state:?}");

        // The policy in force is the permanent one, whole, by real traffic.
        assert_eq!(e.manager("State"), "s \"enforcing\"", "{what}: {}", e.manager("Problems"));
        *outcomes.entry((format!("{op:?}"), now == new)).or_default() += 1;
        let (open, shut) = if now == variants[0] { (80, 22) } else { (22, 80) };
        assert!(e.connects_within(open, Duration::from_secs(2)), "{what}: port {open} must be open");
        assert!(!e.connects_within(shut, fast), "{what}: port {shut} must be dropped");

        // The revision went forward, and it is the one persisted.
        let r = revision(&e);
        assert!(r > max_rev, "{what}: revision {r} after {max_rev}");
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(d.state_dir().join("policy.json")).unwrap()).unwrap_or_else(|err| panic!("{what}: policy.json: {err}"));
        assert_eq!(record["revision"].as_u64(), Some(r), "{what}: persisted {record}");
        max_rev = r;

        // One daemon's pins and attachments: none left over or duplicated.
        assert_eq!(tree(&d.bpffs_root), pins, "{what}: pins");
        if tcx {
            for dir in [hostfwd::datapath::Direction::Ingress, hostfwd::datapath::Direction::Egress] {
                let progs = e.topo.host.run(|| hostfwd::datapath::Datapath::tcx_progs(h0, dir)).expect("netns").expect("tcx query");
                assert_eq!(progs.len(), 1, "{what}: {dir:?} programs on h0: {progs:?}");
            }
        }
    }
    eprintln!("crash loop outcomes (operation, new text in force): {outcomes:?}");
}
