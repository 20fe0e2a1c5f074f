//! Runtime vs permanent policy, apply-with-confirm and audit mode across
//! restarts, driven through the real bus (busctl as the client) and
//! checked with real traffic between network namespaces.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hostfwd_tests::bus::{Caller, Daemon, TestBus};
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
        let addr: SocketAddr = format!("10.77.0.1:{port}").parse().unwrap();
        match self.topo.peer.tcp_connect(addr, Duration::from_millis(600)) {
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
