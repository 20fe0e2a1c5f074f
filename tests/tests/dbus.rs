//! The D-Bus API against the real thing: a private system bus with the
//! shipped bus policy, polkitd with the shipped actions and example rule,
//! the daemon in a test network namespace, and real clients (busctl, gdbus
//! for error names, a zbus client where busctl cannot do it: signals and
//! the monitor's file descriptor). See `hostfwd_tests::bus`.
//!
//! Needs root; `dbus-daemon`, `busctl`, `gdbus`, polkitd, `setpriv`.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hostfwd_dbus::{link_path, BUS_NAME, LINK_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH};
use hostfwd_tests::bus::{Caller, Daemon, Output, TestBus, WEB_ONLY};
use hostfwd_tests::Topology;
use serde_json::Value as Json;
use zbus::zvariant::Value;

const ALL: [Caller; 3] = [Caller::Root, Caller::Nobody, Caller::Member];


/// Something else to apply (a different name, a different rule).
const DNS_ONLY: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: dns-only
spec:
  nodeSelector: {}
  ingress:
  - fromEntities:
    - all
    toPorts:
    - ports:
      - port: \"53\"
        protocol: UDP
";

/// Invalid: an unknown field on line 6.
const BAD: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: bad
spec:
  nodeSelectr: {}
";

struct Setup {
    // Drop order: daemon, then topology, then bus.
    daemon: Daemon,
    topo: Topology,
    bus: TestBus,
}

fn setup(env: &[(&str, &str)]) -> Setup {
    let bus = TestBus::start().expect("test bus");
    let topo = Topology::new().expect("topology");
    let daemon = bus.start_daemon(&topo.host, "h0", env).expect("daemon");
    Setup { daemon, topo, bus }
}

impl Setup {
    fn h0_path(&self) -> String {
        link_path(self.topo.h.ifindex)
    }

    /// busctl with JSON output; the `data` of a successful call.
    fn json(&self, caller: Caller, args: &[&str]) -> Json {
        let mut a = vec!["--json=short"];
        a.extend_from_slice(args);
        let out = self.bus.busctl(caller, &a);
        let text = out.clone().ok(&format!("busctl {args:?} as {caller:?} (daemon log:\n{})", self.daemon.log()));
        let v: Json = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("busctl {args:?}: not JSON ({e}): {text}"));
        v["data"].clone()
    }

    fn manager_call(&self, caller: Caller, method: &str, sig_args: &[&str]) -> Output {
        let mut a = vec!["call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, method];
        a.extend_from_slice(sig_args);
        self.bus.busctl(caller, &a)
    }

    fn manager_json(&self, caller: Caller, method: &str, sig_args: &[&str]) -> Json {
        let mut a = vec!["call", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, method];
        a.extend_from_slice(sig_args);
        self.json(caller, &a)
    }

    fn manager_prop(&self, caller: Caller, prop: &str) -> Json {
        self.json(caller, &["get-property", BUS_NAME, MANAGER_PATH, MANAGER_INTERFACE, prop])
    }

    fn link_prop(&self, caller: Caller, path: &str, prop: &str) -> Json {
        self.json(caller, &["get-property", BUS_NAME, path, LINK_INTERFACE, prop])
    }

    fn revision(&self) -> u64 {
        self.manager_prop(Caller::Root, "PolicyRevision").as_u64().expect("PolicyRevision is t")
    }

    /// The error name of a call made with gdbus (which prints it).
    fn error_name(&self, caller: Caller, path: &str, method: &str, args: &[&str], interactive: bool) -> String {
        let out = self.bus.gdbus_call(caller, path, method, args, interactive);
        let err = out.err(&format!("gdbus {method} {args:?} as {caller:?}"));
        error_name_of(&err)
    }

    fn apply(&self, caller: Caller, name: &str, yaml: &str, options: &[&str]) -> Output {
        let n = (options.len() / 3).to_string();
        let mut a = vec![name, yaml];
        a.push(&n);
        a.extend_from_slice(options);
        let mut args = vec!["ssa{sv}"];
        args.extend(a);
        self.manager_call(caller, "ApplyPolicy", &args)
    }

    fn policy_names(&self) -> Vec<String> {
        let list = self.manager_json(Caller::Root, "ListPolicies", &[]);
        list[0].as_array().expect("a(sssb)").iter().map(|p| p[0].as_str().unwrap_or_default().to_string()).collect()
    }
}

/// `GDBus.Error:org.x.Y: message` → `org.x.Y`.
fn error_name_of(gdbus_stderr: &str) -> String {
    gdbus_stderr
        .split("GDBus.Error:")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no error name in {gdbus_stderr:?}"))
        .trim()
        .to_string()
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Every signal the daemon emits, collected by a zbus client on its own
/// thread from the moment `watch` returns.
struct Signals {
    rx: mpsc::Receiver<zbus::Message>,
    /// Received but not yet taken by a `wait` (signals of one change may
    /// come in any order).
    seen: std::cell::RefCell<Vec<zbus::Message>>,
}

impl Signals {
    fn watch(address: &str) -> Signals {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let address = address.to_string();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let conn = zbus::connection::Builder::address(address.as_str()).expect("address").build().await.expect("connect");
                let rule = zbus::MatchRule::builder().msg_type(zbus::message::Type::Signal).sender(BUS_NAME).expect("sender").build();
                let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, Some(4096)).await.expect("match rule");
                let _ = ready_tx.send(());
                while let Some(Ok(m)) = stream.next().await {
                    if tx.send(m).is_err() {
                        break;
                    }
                }
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("signal watch subscribed");
        Signals { rx, seen: Default::default() }
    }

    /// Takes the first signal not taken yet for which `f` holds, waiting
    /// for it up to `within`.
    fn wait(&self, what: &str, within: Duration, mut f: impl FnMut(&zbus::Message) -> bool) -> zbus::Message {
        let mut seen = self.seen.borrow_mut();
        if let Some(i) = seen.iter().position(&mut f) {
            return seen.remove(i);
        }
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if f(&m) => return m,
                Ok(m) => seen.push(m),
                Err(_) => {
                    let got: Vec<String> = seen.iter().map(|m| format!("{} {}", path_of(m), member(m))).collect();
                    panic!("timed out waiting for the signal: {what}; got {got:?}")
                }
            }
        }
    }
}

fn member(m: &zbus::Message) -> String {
    m.header().member().map(|s| s.to_string()).unwrap_or_default()
}

fn path_of(m: &zbus::Message) -> String {
    m.header().path().map(|s| s.to_string()).unwrap_or_default()
}

/// (interface, changed property names) of a PropertiesChanged signal.
fn changed(m: &zbus::Message) -> Option<(String, BTreeSet<String>)> {
    if member(m) != "PropertiesChanged" {
        return None;
    }
    let (iface, props, _): (String, HashMap<String, zbus::zvariant::OwnedValue>, Vec<String>) = m.body().deserialize().ok()?;
    Some((iface, props.into_keys().collect()))
}

// ---------------------------------------------------------------- contract

/// One canonical line per member of interface `name` in introspection XML,
/// sorted: comments, whitespace, attribute order and member order do not
/// matter; argument order, names, types, directions and annotations do.
fn interface_members(xml: &str, name: &str) -> Vec<String> {
    // Drop comments.
    let mut text = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        text.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map(|j| &rest[i + j + 3..]).unwrap_or("");
    }
    text.push_str(rest);

    let mut members = Vec::new();
    let mut inside = false;
    let mut found = false;
    let mut cur: Option<Member> = None;
    for tag in text.split('<').skip(1).filter_map(|t| t.split('>').next()) {
        let tag = tag.trim();
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let closing = tag.starts_with('/');
        let self_closing = tag.ends_with('/');
        let body = tag.trim_start_matches('/').trim_end_matches('/');
        let elem = body.split_whitespace().next().unwrap_or("");
        let attrs = attributes(body);
        let attr = |k: &str| attrs.get(k).cloned().unwrap_or_default();
        match (elem, closing) {
            ("interface", false) => {
                inside = attr("name") == name;
                found |= inside;
            }
            ("interface", true) => inside = false,
            _ if !inside => {}
            ("method" | "signal" | "property", false) => {
                let extra = if elem == "property" { format!(" {} {}", attr("type"), attr("access")) } else { String::new() };
                cur = Some(Member { kind: elem.to_string(), name: attr("name"), args: vec![], annotations: vec![], extra });
                if self_closing {
                    members.push(render(cur.take()));
                }
            }
            ("method" | "signal" | "property", true) => members.push(render(cur.take())),
            ("arg", false) => {
                if let Some(c) = cur.as_mut() {
                    let dir = match (c.kind.as_str(), attr("direction").as_str()) {
                        ("signal", _) => String::new(),
                        (_, "") => "in ".into(),
                        (_, d) => format!("{d} "),
                    };
                    c.args.push(format!("{dir}{} {}", attr("type"), attr("name")));
                }
            }
            ("annotation", false) => {
                if let Some(c) = cur.as_mut() {
                    c.annotations.push(format!("{}={}", attr("name"), attr("value")));
                }
            }
            _ => {}
        }
    }
    assert!(found, "no interface {name} in:\n{xml}");
    members.sort();
    members
}

/// A method, signal or property being read.
struct Member {
    kind: String,
    name: String,
    args: Vec<String>,
    annotations: Vec<String>,
    /// A property's type and access.
    extra: String,
}

fn render(m: Option<Member>) -> String {
    let mut m = m.expect("a member element closes an open member");
    m.annotations.sort();
    format!("{} {}({}){} [{}]", m.kind, m.name, m.args.join(", "), m.extra, m.annotations.join(", "))
}

fn attributes(body: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = body;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].split_whitespace().last().unwrap_or("").to_string();
        let after = &rest[eq + 2..];
        let end = after.find('"').unwrap_or(after.len());
        out.insert(key, after[..end].to_string());
        rest = &after[(end + 1).min(after.len())..];
    }
    out
}

#[test]
fn xml_normaliser_sees_differences() {
    let a = r#"<node><interface name="x.Y"><!-- c --><method name="M"><arg name="a" type="s" direction="in"/><arg type="t" name="r" direction="out"/></method>
      <property name="P" type="b" access="read"/><signal name="S"><arg name="v" type="t"/></signal></interface></node>"#;
    let b = r#"<node>
      <interface name="x.Y">
        <signal name="S"><arg name="v" type="t" direction="out"/></signal>
        <property access="read" name="P" type="b"></property>
        <method name="M"><arg name="a" type="s"/><arg name="r" type="t" direction="out"/></method>
      </interface><interface name="x.Z"><method name="N"/></interface></node>"#;
    assert_eq!(interface_members(a, "x.Y"), interface_members(b, "x.Y"));
    assert_eq!(interface_members(a, "x.Y").len(), 3);
    for changed in [a.replace("type=\"t\" name=\"r\"", "type=\"u\" name=\"r\""), a.replace("name=\"a\"", "name=\"b\""), a.replace("access=\"read\"", "access=\"readwrite\"")] {
        assert_ne!(interface_members(a, "x.Y"), interface_members(&changed, "x.Y"));
    }
    let annotated = a.replace(r#"access="read"/>"#, r#"access="read"><annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/></property>"#);
    assert_ne!(interface_members(a, "x.Y"), interface_members(&annotated, "x.Y"));
}

/// `busctl introspect` on the live objects shows exactly the shipped XML,
/// and besides it only the standard interfaces.
#[test]
fn live_introspection_is_the_shipped_xml() {
    let s = setup(&[]);
    let manager_xml = s.bus.busctl(Caller::Nobody, &["introspect", "--xml-interface", BUS_NAME, MANAGER_PATH]).ok("introspect manager");
    assert_eq!(interface_members(&manager_xml, MANAGER_INTERFACE), interface_members(hostfwd_dbus::MANAGER_XML, MANAGER_INTERFACE));
    let link_xml = s.bus.busctl(Caller::Nobody, &["introspect", "--xml-interface", BUS_NAME, &s.h0_path()]).ok("introspect link");
    assert_eq!(interface_members(&link_xml, LINK_INTERFACE), interface_members(hostfwd_dbus::LINK_XML, LINK_INTERFACE));

    // The node's own interfaces (zbus also describes the children in full).
    let interfaces = |xml: &str| -> BTreeSet<String> {
        let own = xml.split("<node name=").next().unwrap_or_default();
        own.split("<interface name=\"").skip(1).filter_map(|r| r.split('"').next()).map(str::to_string).collect()
    };
    let standard = ["org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer", "org.freedesktop.DBus.Properties"];
    let mut want: BTreeSet<String> = standard.iter().map(|s| s.to_string()).collect();
    want.insert(MANAGER_INTERFACE.into());
    want.insert("org.freedesktop.DBus.ObjectManager".into());
    assert_eq!(interfaces(&manager_xml), want, "{manager_xml}");
    let mut want: BTreeSet<String> = standard.iter().map(|s| s.to_string()).collect();
    want.insert(LINK_INTERFACE.into());
    assert_eq!(interfaces(&link_xml), want);
    // The shipped files name exactly one interface each, the right one.
    assert_eq!(interfaces(hostfwd_dbus::MANAGER_XML), BTreeSet::from([MANAGER_INTERFACE.to_string()]));
    assert_eq!(interfaces(hostfwd_dbus::LINK_XML), BTreeSet::from([LINK_INTERFACE.to_string()]));
}

/// Every action id the daemon checks (`daemon/src/api/polkit.rs`) is in
/// the shipped `.policy` file, every action there is checked, and the
/// example rule grants each of them.
#[test]
fn polkit_action_ids_match_the_shipped_files() {
    let root = hostfwd_tests::bus::repo_root();
    let code = std::fs::read_to_string(root.join("daemon/src/api/polkit.rs")).expect("polkit.rs");
    // `pub const NAME: &str = "org.hostfwd.Firewall1.…";`
    let used: BTreeSet<String> = code
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const ")?.split_once(": &str = \"org.hostfwd.Firewall1."))
        .filter_map(|(_, rest)| rest.split('"').next())
        .map(|id| format!("org.hostfwd.Firewall1.{id}"))
        .collect();
    let policy = std::fs::read_to_string(hostfwd_tests::bus::shipped_actions()).expect("policy file");
    let shipped: BTreeSet<String> = policy.split("<action id=\"").skip(1).filter_map(|r| r.split('"').next()).map(str::to_string).collect();
    assert_eq!(used, shipped, "action ids in polkit.rs vs the .policy file");
    assert_eq!(shipped.len(), 4, "manage-policy, set-audit-mode, reload, monitor");
    // Each action is auth_admin_keep for everyone.
    for block in policy.split("<action id=").skip(1) {
        assert_eq!(block.matches("auth_admin_keep").count(), 3, "{block}");
        assert!(block.contains("<description>") && block.contains("<message>"), "{block}");
    }
    let rules = std::fs::read_to_string(hostfwd_tests::bus::shipped_rules()).expect("rules file");
    for id in &shipped {
        assert!(rules.contains(&format!("\"{id}\"")), "the example rule does not grant {id}");
    }
    assert!(rules.contains("isInGroup(\"hostfwd\")"));
}

/// The activation file names the service and hands starting to systemd;
/// the bus policy lets only root own the name and everyone call it.
#[test]
fn shipped_bus_files_name_the_service() {
    let root = hostfwd_tests::bus::repo_root();
    let service = std::fs::read_to_string(root.join("dbus/org.hostfwd.Firewall1.service")).expect("service file");
    let keys: BTreeSet<&str> = service.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let want = BTreeSet::from(["[D-BUS Service]", "Name=org.hostfwd.Firewall1", "Exec=/bin/false", "User=root", "SystemdService=dbus-org.hostfwd.Firewall1.service"]);
    assert_eq!(keys, want);
    let conf = hostfwd_dbus::BUS_POLICY;
    assert_eq!(conf.matches("<allow own=").count(), 1, "one owner: {conf}");
    let root_policy = conf.split("<policy user=\"root\">").nth(1).and_then(|r| r.split("</policy>").next()).expect("a policy for root");
    assert!(root_policy.contains("<allow own=\"org.hostfwd.Firewall1\"/>"));
    let default = conf.split("<policy context=\"default\">").nth(1).and_then(|r| r.split("</policy>").next()).expect("a default policy");
    assert!(default.contains("<allow send_destination=\"org.hostfwd.Firewall1\"/>") && !default.contains("own="));
}

/// The shipped bus policy: only root may own the name.
#[test]
fn only_root_may_own_the_name() {
    let bus = TestBus::start().expect("test bus");
    for caller in [Caller::Nobody, Caller::Member] {
        let out = bus.gdbus_call_to_bus(caller, "RequestName", &[BUS_NAME, "4"]);
        let err = out.err(&format!("RequestName as {caller:?}"));
        assert_eq!(error_name_of(&err), "org.freedesktop.DBus.Error.AccessDenied", "{err}");
    }
    let out = bus.gdbus_call_to_bus(Caller::Root, "RequestName", &[BUS_NAME, "4"]);
    assert_eq!(out.clone().ok("RequestName as root").trim(), "(uint32 1,)", "root becomes the primary owner");
}

trait BusExt {
    fn gdbus_call_to_bus(&self, caller: Caller, method: &str, args: &[&str]) -> Output;
}

impl BusExt for TestBus {
    /// A call to the bus itself (`org.freedesktop.DBus`).
    fn gdbus_call_to_bus(&self, caller: Caller, method: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(caller, "gdbus");
        cmd.args(["call", "--system", "--dest", "org.freedesktop.DBus", "--object-path", "/org/freedesktop/DBus", "--method"])
            .arg(format!("org.freedesktop.DBus.{method}"))
            .args(args);
        let out = cmd.output().expect("gdbus");
        Output { success: out.status.success(), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
    }
}

// ------------------------------------------------------------------- reads

/// Every property and read method, as each caller: reads are open.
#[test]
fn reads_are_open_to_everyone() {
    let s = setup(&[]);
    let h0 = s.h0_path();
    let h = s.topo.h.ifindex;
    for c in ALL {
        assert_eq!(s.manager_prop(c, "Version"), env!("CARGO_PKG_VERSION"));
        let state = s.manager_prop(c, "State");
        assert!(["starting", "enforcing", "audit", "degraded"].contains(&state.as_str().unwrap_or("?")), "{state}");
        assert!(s.manager_prop(c, "AuditMode").is_boolean());
        assert!(s.manager_prop(c, "PolicyRevision").is_u64());
        assert_eq!(s.manager_prop(c, "PendingConfirm"), serde_json::json!([0, 0]));
        let mode = s.manager_prop(c, "AttachMode");
        assert!(mode == "tcx" || mode == "tc", "{mode}");

        let links = s.manager_json(c, "ListLinks", &[]);
        let h0_entry = serde_json::json!([h, "h0", h0]);
        assert!(links[0].as_array().expect("a(iso)").contains(&h0_entry), "{links}");
        assert!(links[0].as_array().unwrap().iter().any(|l| l[1] == "lo"), "lo is listed too: {links}");
        assert_eq!(s.manager_json(c, "GetLinkByName", &["s", "h0"]), serde_json::json!([h, h0]));
        let err = s.manager_call(c, "GetLinkByName", &["s", "nosuch0"]).err("GetLinkByName nosuch0");
        assert!(err.contains("nosuch0"), "{err}");

        assert!(s.manager_json(c, "ListPolicies", &[])[0].is_array());
        assert!(s.manager_json(c, "GetStatistics", &[])[0].is_array());
        assert_eq!(s.manager_json(c, "ValidatePolicy", &["s", WEB_ONLY]), serde_json::json!([[]]));
        let errors = s.manager_json(c, "ValidatePolicy", &["s", BAD]);
        let errors = errors[0].as_array().expect("as");
        assert!(!errors.is_empty(), "BAD is invalid");
        let first = errors[0].as_str().unwrap_or_default();
        assert!(first.contains(":6:") && first.contains("nodeSelectr"), "names line and field: {first}");

        let describe = s.manager_json(c, "Describe", &[]);
        let d: Json = serde_json::from_str(describe[0].as_str().expect("s")).expect("Describe is JSON");
        assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
        assert!(d["links"].to_string().contains("\"h0\""), "{d}");

        // Link h0: every property, and Describe.
        assert_eq!(s.link_prop(c, &h0, "Ifindex"), h);
        assert_eq!(s.link_prop(c, &h0, "Name"), "h0");
        assert_eq!(s.link_prop(c, &h0, "Kind"), "veth");
        assert_eq!(s.link_prop(c, &h0, "Role"), "enforce");
        assert!(s.link_prop(c, &h0, "Reason").as_str().is_some_and(|r| r.contains("h0")));
        assert!(s.link_prop(c, &h0, "Lower").is_i64());
        assert_eq!(s.link_prop(c, &h0, "Controller"), 0);
        let addrs = s.link_prop(c, &h0, "Addresses");
        assert!(addrs.as_array().expect("as").contains(&Json::from("10.77.0.1/24")), "{addrs}");
        assert_eq!(s.link_prop(c, &h0, "AllowedVlans"), serde_json::json!([]));
        assert_eq!(s.link_prop(c, &h0, "AttachMode"), mode);
        assert!(s.link_prop(c, &h0, "AuditMode").is_boolean());
        assert_eq!(s.link_prop(c, &h0, "Problem"), "", "nothing runs before hostfwd");
        let describe = s.json(c, &["call", BUS_NAME, &h0, LINK_INTERFACE, "Describe"]);
        let d: Json = serde_json::from_str(describe[0].as_str().expect("s")).expect("Link.Describe is JSON");
        assert_eq!(d["name"], "h0");
        assert_eq!(d["role"], "enforce");
    }
    // Error names (gdbus prints them).
    assert_eq!(s.error_name(Caller::Nobody, MANAGER_PATH, "org.hostfwd.Firewall1.Manager.GetLinkByName", &["nosuch0"], false), "org.hostfwd.Firewall1.Error.NoSuchLink");
    assert_eq!(s.error_name(Caller::Nobody, MANAGER_PATH, "org.hostfwd.Firewall1.Manager.GetPolicy", &["nosuch"], false), "org.hostfwd.Firewall1.Error.NoSuchPolicy");
}

// ---------------------------------------------------------- authorization

/// Every mutating method, as a caller that is not authorized: refused,
/// nothing changes.
fn assert_refused(s: &Setup, caller: Caller) {
    let h0 = s.h0_path();
    let m = |name: &str| format!("{MANAGER_INTERFACE}.{name}");
    let l = |name: &str| format!("{LINK_INTERFACE}.{name}");
    let calls: Vec<(&str, String, Vec<&str>)> = vec![
        (MANAGER_PATH, m("ApplyPolicy"), vec!["p", WEB_ONLY, "{}"]),
        (MANAGER_PATH, m("RemovePolicy"), vec!["p", "{}"]),
        (MANAGER_PATH, m("ConfirmPolicy"), vec!["1"]),
        (MANAGER_PATH, m("RollbackPolicy"), vec![]),
        (MANAGER_PATH, m("SetAuditMode"), vec!["true", "false"]),
        (MANAGER_PATH, m("Reload"), vec![]),
        (MANAGER_PATH, m("OpenMonitor"), vec!["{}"]),
        (&h0, l("SetAuditMode"), vec!["true", "false"]),
    ];
    let before = (s.revision(), s.manager_prop(Caller::Root, "AuditMode"), s.link_prop(Caller::Root, &h0, "AuditMode"), s.policy_names());
    for (path, method, args) in &calls {
        // Without interaction allowed, polkit could ask (auth_admin_keep): the caller is told so.
        let name = s.error_name(caller, path, method, args, false);
        assert_eq!(name, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", "{method} as {caller:?}");
        // With interaction allowed, there is no agent to ask: denied.
        let name = s.error_name(caller, path, method, args, true);
        assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied", "{method} (interactive) as {caller:?}");
    }
    // busctl (interactive by default) is refused as well.
    assert!(!s.manager_call(caller, "SetAuditMode", &["bb", "true", "false"]).success);
    assert!(!s.apply(caller, "p", WEB_ONLY, &[]).success);
    let after = (s.revision(), s.manager_prop(Caller::Root, "AuditMode"), s.link_prop(Caller::Root, &h0, "AuditMode"), s.policy_names());
    assert_eq!(before, after, "refused calls changed nothing");
}

#[test]
fn nobody_may_read_but_not_change() {
    let s = setup(&[]);
    assert_refused(&s, Caller::Nobody);
}

/// polkit fails closed: without polkitd on the bus every mutation is
/// refused, even root's; reads go on.
#[test]
fn polkit_unreachable_fails_closed() {
    let mut s = setup(&[]);
    s.bus.stop_polkitd();
    wait_until("polkitd gone from the bus", Duration::from_secs(5), || !s.bus.has_name("org.freedesktop.PolicyKit1"));
    let before = s.manager_prop(Caller::Root, "AuditMode");
    let name = s.error_name(Caller::Root, MANAGER_PATH, "org.hostfwd.Firewall1.Manager.SetAuditMode", &["true", "false"], false);
    assert_eq!(name, "org.freedesktop.DBus.Error.AccessDenied");
    let err = s.manager_call(Caller::Root, "Reload", &[]).err("Reload without polkit");
    assert!(!err.is_empty());
    assert_eq!(s.manager_prop(Caller::Root, "AuditMode"), before);
    // Reads still work.
    assert_eq!(s.manager_prop(Caller::Nobody, "Version"), env!("CARGO_PKG_VERSION"));
}

/// Root, and a member of group hostfwd through the example rule, may change
/// everything; the core's refusals come back under their names.
#[test]
fn root_and_hostfwd_group_members_may_change() {
    let s = setup(&[("HOSTFWD_AUDIT", "true")]);
    let signals = Signals::watch(s.bus.address());
    let h0 = s.h0_path();
    for (caller, name) in [(Caller::Root, "root-web"), (Caller::Member, "member-web")] {
        // Global audit mode off and on again.
        s.manager_call(caller, "SetAuditMode", &["bb", "false", "false"]).ok("SetAuditMode false");
        wait_until("AuditMode false", Duration::from_secs(10), || s.manager_prop(Caller::Nobody, "AuditMode") == false);
        wait_until("State enforcing", Duration::from_secs(10), || s.manager_prop(Caller::Nobody, "State") == "enforcing");
        s.manager_call(caller, "SetAuditMode", &["bb", "true", "false"]).ok("SetAuditMode true");
        wait_until("AuditMode true", Duration::from_secs(10), || s.manager_prop(Caller::Nobody, "AuditMode") == true);
        wait_until("State audit", Duration::from_secs(10), || s.manager_prop(Caller::Nobody, "State") == "audit");
        // Per link: global audit off, h0's own audit on → h0 audits.
        s.manager_call(caller, "SetAuditMode", &["bb", "false", "false"]).ok("SetAuditMode false");
        s.bus.busctl(caller, &["call", BUS_NAME, &h0, LINK_INTERFACE, "SetAuditMode", "bb", "true", "false"]).ok("Link.SetAuditMode true");
        wait_until("h0 audits", Duration::from_secs(10), || s.link_prop(Caller::Nobody, &h0, "AuditMode") == true);
        s.bus.busctl(caller, &["call", BUS_NAME, &h0, LINK_INTERFACE, "SetAuditMode", "bb", "false", "false"]).ok("Link.SetAuditMode false");
        wait_until("h0 enforces", Duration::from_secs(10), || s.link_prop(Caller::Nobody, &h0, "AuditMode") == false);

        // A runtime policy: applied, listed, readable, removed.
        let before = s.revision();
        let out = s.apply(caller, name, WEB_ONLY, &[]).ok("ApplyPolicy");
        let rev: u64 = out.trim().strip_prefix("t ").and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("ApplyPolicy → t: {out}"));
        assert!(rev > before, "revision {rev} after {before}");
        assert_eq!(s.revision(), rev);
        signals.wait("PolicyApplied(rev)", Duration::from_secs(10), |m| member(m) == "PolicyApplied" && m.body().deserialize::<u64>().ok() == Some(rev));
        let list = s.manager_json(Caller::Nobody, "ListPolicies", &[]);
        let entry = list[0].as_array().unwrap().iter().find(|p| p[0] == name).cloned().unwrap_or_else(|| panic!("{name} listed: {list}"));
        assert_eq!(entry[1], "runtime");
        assert_eq!(entry[3], true, "an empty nodeSelector selects this node: {entry}");
        assert!(entry[2].as_str().unwrap_or_default().contains("web-only"), "reason names the Cilium policy: {entry}");
        assert_eq!(s.manager_json(Caller::Nobody, "GetPolicy", &["s", name]), serde_json::json!([WEB_ONLY]));
        let out = s.manager_call(caller, "RemovePolicy", &["sa{sv}", name, "0"]).ok("RemovePolicy");
        let rev2: u64 = out.trim().strip_prefix("t ").and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("RemovePolicy → t: {out}"));
        assert!(rev2 > rev);
        assert!(!s.policy_names().contains(&name.to_string()));

        // Reload: the permanent set is read again, runtime policies go.
        s.apply(caller, "transient", DNS_ONLY, &[]).ok("ApplyPolicy transient");
        assert!(s.policy_names().contains(&"transient".to_string()));
        let before = s.revision();
        s.manager_call(caller, "Reload", &[]).ok("Reload");
        assert!(!s.policy_names().contains(&"transient".to_string()), "Reload drops runtime policies");
        assert!(s.revision() > before, "Reload is a new revision");

        // OpenMonitor answers a file descriptor.
        let out = s.manager_call(caller, "OpenMonitor", &["a{sv}", "0"]).ok("OpenMonitor");
        assert!(out.starts_with("h "), "{out}");
    }

    // A persisted policy lands in the policy directory, and goes with remove --persist.
    let out = s.apply(Caller::Root, "kept", WEB_ONLY, &["persist", "b", "true"]).ok("ApplyPolicy persist");
    assert!(out.starts_with("t "));
    let file = s.daemon.policy_dir().join("kept.yaml");
    assert_eq!(std::fs::read_to_string(&file).ok().as_deref(), Some(WEB_ONLY), "persisted to {}", file.display());
    let list = s.manager_json(Caller::Root, "ListPolicies", &[]);
    let kept = list[0].as_array().unwrap().iter().find(|p| p[0] == "kept").cloned().expect("kept listed");
    assert!(kept[1].as_str().unwrap_or_default().ends_with("kept.yaml"), "source is the file: {kept}");
    s.manager_call(Caller::Root, "RemovePolicy", &["sa{sv}", "kept", "1", "persist", "b", "true"]).ok("RemovePolicy persist");
    assert!(!file.exists(), "the file went with the persisted remove");

    // The core's refusals, by name.
    let e = |method: &str, args: &[&str]| s.error_name(Caller::Root, MANAGER_PATH, &format!("{MANAGER_INTERFACE}.{method}"), args, false);
    assert_eq!(e("ApplyPolicy", &["bad", BAD, "{}"]), "org.hostfwd.Firewall1.Error.InvalidPolicy");
    let err = s.apply(Caller::Root, "bad", BAD, &[]).err("ApplyPolicy BAD");
    assert!(err.contains("nodeSelectr"), "the message names the field: {err}");
    assert_eq!(e("RemovePolicy", &["nosuch", "{}"]), "org.hostfwd.Firewall1.Error.NoSuchPolicy");
    assert_eq!(e("ConfirmPolicy", &["12345"]), "org.hostfwd.Firewall1.Error.NoPendingConfirm");
    assert_eq!(e("RollbackPolicy", &[]), "org.hostfwd.Firewall1.Error.NoPendingConfirm");
    assert_eq!(e("ApplyPolicy", &["x", WEB_ONLY, "{'colour': <'red'>}"]), "org.freedesktop.DBus.Error.InvalidArgs");
    assert_eq!(e("ApplyPolicy", &["x", WEB_ONLY, "{'persist': <'yes'>}"]), "org.freedesktop.DBus.Error.InvalidArgs");
    assert_eq!(e("OpenMonitor", &["{'link': <'nosuch0'>}"]), "org.hostfwd.Firewall1.Error.NoSuchLink");
    assert!(!s.policy_names().iter().any(|n| n == "x" || n == "bad"), "refused applies left nothing");
}

// ------------------------------------------------------ apply-with-confirm

#[test]
fn apply_with_confirm_rolls_back_unless_confirmed() {
    let s = setup(&[]);
    let signals = Signals::watch(s.bus.address());
    let r0 = s.revision();

    // Unconfirmed: rolled back after the timeout.
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let out = s.apply(Caller::Root, "trial", WEB_ONLY, &["confirm-timeout-sec", "u", "2"]).ok("ApplyPolicy with confirm");
    let rev: u64 = out.trim().strip_prefix("t ").and_then(|r| r.parse().ok()).expect("revision");
    assert!(rev > r0);
    let pending = s.manager_prop(Caller::Nobody, "PendingConfirm");
    assert_eq!(pending[0], rev, "{pending}");
    let deadline = pending[1].as_u64().expect("deadline");
    assert!(deadline >= t0 + 1_500_000 && deadline <= t0 + 10_000_000, "deadline {deadline} about 2 s after {t0}");
    assert!(s.policy_names().contains(&"trial".to_string()));
    // While it is pending: another apply is Busy, a wrong revision is not confirmed.
    let e = |method: &str, args: &[&str]| s.error_name(Caller::Root, MANAGER_PATH, &format!("{MANAGER_INTERFACE}.{method}"), args, false);
    assert_eq!(e("ApplyPolicy", &["other", DNS_ONLY, "{}"]), "org.hostfwd.Firewall1.Error.Busy");
    assert_eq!(e("ConfirmPolicy", &[&(rev + 7).to_string()]), "org.hostfwd.Firewall1.Error.NoPendingConfirm");
    let m = signals.wait("PolicyRolledBack", Duration::from_secs(15), |m| member(m) == "PolicyRolledBack");
    let (rolled, reason): (u64, String) = m.body().deserialize().expect("(ts)");
    assert_eq!(rolled, rev, "the undone change");
    assert!(!reason.is_empty());
    assert!(s.revision() > rev, "a rollback is a new revision");
    assert_eq!(s.manager_prop(Caller::Nobody, "PendingConfirm"), serde_json::json!([0, 0]));
    assert!(!s.policy_names().contains(&"trial".to_string()), "the previous policy set is back");
    // PropertiesChanged said so.
    let pc = signals.wait("PendingConfirm back to zeros", Duration::from_secs(5), |m| {
        changed(m).is_some_and(|(i, p)| i == MANAGER_INTERFACE && p.contains("PendingConfirm")) && path_of(m) == MANAGER_PATH
    });
    drop(pc);

    // Confirmed in time: stays.
    let out = s.apply(Caller::Root, "trial", WEB_ONLY, &["confirm-timeout-sec", "u", "30"]).ok("ApplyPolicy with confirm");
    let rev: u64 = out.trim().strip_prefix("t ").and_then(|r| r.parse().ok()).expect("revision");
    s.manager_call(Caller::Root, "ConfirmPolicy", &["t", &rev.to_string()]).ok("ConfirmPolicy");
    assert_eq!(s.manager_prop(Caller::Nobody, "PendingConfirm"), serde_json::json!([0, 0]));
    assert_eq!(e("ConfirmPolicy", &[&rev.to_string()]), "org.hostfwd.Firewall1.Error.NoPendingConfirm", "confirmed once only");
    assert!(s.policy_names().contains(&"trial".to_string()));

    // Rolled back on demand: by the member of group hostfwd.
    let out = s.apply(Caller::Member, "trial2", DNS_ONLY, &["confirm-timeout-sec", "u", "30"]).ok("ApplyPolicy with confirm");
    let rev: u64 = out.trim().strip_prefix("t ").and_then(|r| r.parse().ok()).expect("revision");
    s.manager_call(Caller::Member, "RollbackPolicy", &[]).ok("RollbackPolicy");
    let m = signals.wait("PolicyRolledBack on demand", Duration::from_secs(10), |m| member(m) == "PolicyRolledBack");
    assert_eq!(m.body().deserialize::<(u64, String)>().expect("(ts)").0, rev);
    let names = s.policy_names();
    assert!(names.contains(&"trial".to_string()) && !names.contains(&"trial2".to_string()), "{names:?}");
}

// ---------------------------------------------------------------- monitor

fn open_monitor(address: &str, filter: &[(&str, Value<'_>)]) -> Result<UnixStream, hostfwd_dbus::Error> {
    let filter: HashMap<&str, &Value<'_>> = filter.iter().map(|(k, v)| (*k, v)).collect();
    runtime().block_on(async {
        let conn = zbus::connection::Builder::address(address)?.build().await?;
        let reply = conn.call_method(Some(BUS_NAME), MANAGER_PATH, Some(MANAGER_INTERFACE), "OpenMonitor", &(filter,)).await?;
        let fd: zbus::zvariant::OwnedFd = reply.body().deserialize()?;
        Ok(UnixStream::from(std::os::fd::OwnedFd::from(fd)))
    })
}

/// A monitor stream read on a thread: its lines as JSON, and the socket
/// (to shut it down: the client closing its end).
struct Monitor {
    lines: mpsc::Receiver<Json>,
    sock: UnixStream,
}

impl std::ops::Deref for Monitor {
    type Target = mpsc::Receiver<Json>;
    fn deref(&self) -> &mpsc::Receiver<Json> {
        &self.lines
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Lines from a monitor, on a thread, until `within` passes or it is dropped.
fn read_lines(sock: UnixStream, within: Duration) -> Monitor {
    let (tx, rx) = mpsc::channel();
    let keep = sock.try_clone().expect("dup the monitor socket");
    std::thread::spawn(move || {
        let _ = sock.set_read_timeout(Some(within));
        for line in BufReader::new(sock).lines() {
            let Ok(line) = line else { break };
            let v: Json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("monitor line is not JSON ({e}): {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    Monitor { lines: rx, sock: keep }
}

/// How many sockets the process `pid` has open.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).filter(|l| l.to_string_lossy().starts_with("socket:")).count())
        .unwrap_or(0)
}

/// Real TCP from the peer namespace, denied by the policy: the monitor
/// streams the drop; filters select.
#[test]
fn monitor_streams_drops_of_real_traffic() {
    let s = setup(&[("HOSTFWD_AUDIT", "false")]);
    s.apply(Caller::Root, "web", WEB_ONLY, &[]).ok("ApplyPolicy");
    wait_until("enforcing", Duration::from_secs(10), || s.manager_prop(Caller::Root, "State") == "enforcing");
    let sockets_before = sockets(s.daemon.pid());
    let all = read_lines(open_monitor(s.bus.address(), &[]).expect("OpenMonitor"), Duration::from_secs(30));
    let h0 = read_lines(open_monitor(s.bus.address(), &[("link", Value::from("h0")), ("reason", Value::from("policy-denied")), ("audit", Value::from(false))]).expect("OpenMonitor filtered"), Duration::from_secs(30));
    let by_index = read_lines(open_monitor(s.bus.address(), &[("link", Value::from(s.topo.h.ifindex))]).expect("OpenMonitor by ifindex"), Duration::from_secs(30));
    let other = read_lines(open_monitor(s.bus.address(), &[("reason", Value::from("vlan-filtered"))]).expect("OpenMonitor other reason"), Duration::from_secs(30));
    let audited = read_lines(open_monitor(s.bus.address(), &[("audit", Value::from(true))]).expect("OpenMonitor audited"), Duration::from_secs(30));

    let dst: std::net::SocketAddr = "10.77.0.1:8080".parse().unwrap();
    let r = s.topo.peer.tcp_connect(dst, Duration::from_millis(700));
    assert!(matches!(&r, Err(e) if e.is_timeout()), "tcp/8080 is denied: {r:?}");
    let is_our_drop = |v: &Json| v["reason"] == "policy-denied" && v["dport"] == 8080 && v["dir"] == "ingress";
    let wait_drop = |rx: &Monitor, what: &str| -> Json {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(v) if is_our_drop(&v) => return v,
                Ok(_) => continue,
                Err(_) => panic!("{what}: no drop of tcp/8080 streamed; daemon log:\n{}", s.daemon.log()),
            }
        }
    };
    let v = wait_drop(&all, "unfiltered monitor");
    assert_eq!(v["link"], "h0");
    assert_eq!(v["ifindex"], s.topo.h.ifindex);
    assert_eq!(v["audit"], false);
    assert_eq!(v["src"], "10.77.0.2");
    assert_eq!(v["dst"], "10.77.0.1");
    assert_eq!(v["proto"], 6);
    wait_drop(&h0, "monitor filtered on h0, policy-denied, not audited");
    wait_drop(&by_index, "monitor filtered on h0's ifindex");
    // The others saw nothing of it.
    std::thread::sleep(Duration::from_millis(300));
    for (rx, what) in [(&other, "reason vlan-filtered"), (&audited, "audit only")] {
        let got: Vec<Json> = rx.try_iter().collect();
        assert!(got.iter().all(|v| !is_our_drop(v)), "monitor for {what} got {got:?}");
    }
    // The counters have it too.
    let stats = s.manager_json(Caller::Nobody, "GetStatistics", &[]);
    let h = s.topo.h.ifindex;
    let counted = stats[0].as_array().expect("a(issst)").iter().any(|e| e[0] == h && e[1] == "h0" && e[2] == "ingress" && e[3] == "policy-denied" && e[4].as_u64().unwrap_or(0) >= 1);
    assert!(counted, "GetStatistics counts the drop on h0: {stats}");
    // Audit mode: the same traffic passes and is streamed with audit=true.
    s.manager_call(Caller::Root, "SetAuditMode", &["bb", "true", "false"]).ok("SetAuditMode true");
    wait_until("audit", Duration::from_secs(10), || s.manager_prop(Caller::Root, "State") == "audit");
    let r = s.topo.peer.tcp_connect(dst, Duration::from_millis(700));
    assert!(matches!(&r, Err(e) if e.io_kind() == Some(std::io::ErrorKind::ConnectionRefused)), "audit: the SYN reaches the host (RST): {r:?}");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match audited.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(v) if v["dport"] == 8080 && v["audit"] == true => break,
            Ok(_) => continue,
            Err(_) => panic!("no audited drop streamed"),
        }
    }

    // Each monitor holds one socket in the daemon; closing the client's end
    // ends it there (no leak), and the daemon goes on.
    assert_eq!(sockets(s.daemon.pid()), sockets_before + 5, "one socket per monitor");
    drop((all, h0, by_index, other, audited));
    wait_until("the daemon closed the monitors' sockets", Duration::from_secs(10), || sockets(s.daemon.pid()) == sockets_before);
    assert_eq!(s.manager_prop(Caller::Nobody, "Version"), env!("CARGO_PKG_VERSION"));

    // Nobody may not open one (the monitor reveals traffic).
    assert!(!s.manager_call(Caller::Nobody, "OpenMonitor", &["a{sv}", "0"]).success);
}

// ------------------------------------------------------------------- links

/// A veth pair created in the daemon's namespace gets objects (announced
/// by the ObjectManager and LinkRoleChanged); deleting it removes them.
#[test]
fn link_objects_follow_veths() {
    let s = setup(&[]);
    let signals = Signals::watch(s.bus.address());
    s.topo.host.ip(&["link", "add", "hfx0", "type", "veth", "peer", "name", "hfx1"]).expect("veth");
    let x0 = s.topo.host.ifindex("hfx0").expect("ifindex");
    let x1 = s.topo.host.ifindex("hfx1").expect("ifindex");
    let (p0, p1) = (link_path(x0), link_path(x1));
    let added = signals.wait("InterfacesAdded for hfx0", Duration::from_secs(10), |m| {
        member(m) == "InterfacesAdded" && m.body().deserialize::<(zbus::zvariant::OwnedObjectPath, HashMap<String, HashMap<String, zbus::zvariant::OwnedValue>>)>().is_ok_and(|(p, i)| p.as_str() == p0 && i.contains_key(LINK_INTERFACE))
    });
    assert_eq!(path_of(&added), MANAGER_PATH, "the ObjectManager is at {MANAGER_PATH}");
    let role = signals.wait("LinkRoleChanged for hfx0", Duration::from_secs(10), |m| member(m) == "LinkRoleChanged" && m.body().deserialize::<(i32, String, String, String)>().is_ok_and(|b| b.0 == x0 as i32));
    let (_, name, role, reason) = role.body().deserialize::<(i32, String, String, String)>().unwrap();
    assert_eq!((name.as_str(), role.as_str()), ("hfx0", "ignored"));
    assert!(!reason.is_empty());

    wait_until("hfx0 and hfx1 listed", Duration::from_secs(10), || {
        let l = s.manager_json(Caller::Nobody, "ListLinks", &[]).to_string();
        l.contains("\"hfx0\"") && l.contains("\"hfx1\"")
    });
    assert_eq!(s.link_prop(Caller::Nobody, &p0, "Name"), "hfx0");
    assert_eq!(s.link_prop(Caller::Nobody, &p1, "Ifindex"), x1);
    assert_eq!(s.manager_json(Caller::Nobody, "GetLinkByName", &["s", "hfx1"]), serde_json::json!([x1, p1]));
    let managed = s.json(Caller::Nobody, &["call", BUS_NAME, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"]).to_string();
    assert!(managed.contains(&p0) && managed.contains(&p1) && managed.contains(&s.h0_path()), "{managed}");

    // A change of a property: PropertiesChanged on the link.
    s.topo.host.ip(&["link", "set", "hfx0", "name", "hfy0"]).expect("rename");
    signals.wait("PropertiesChanged Name on hfx0", Duration::from_secs(10), |m| {
        path_of(m) == p0 && changed(m).is_some_and(|(i, p)| i == LINK_INTERFACE && p.contains("Name"))
    });
    assert_eq!(s.link_prop(Caller::Nobody, &p0, "Name"), "hfy0");

    s.topo.host.ip(&["link", "del", "hfy0"]).expect("delete veth");
    signals.wait("InterfacesRemoved for hfx0", Duration::from_secs(10), |m| {
        member(m) == "InterfacesRemoved" && m.body().deserialize::<(zbus::zvariant::OwnedObjectPath, Vec<String>)>().is_ok_and(|(p, _)| p.as_str() == p0)
    });
    wait_until("both ends gone", Duration::from_secs(10), || {
        let l = s.manager_json(Caller::Nobody, "ListLinks", &[]).to_string();
        !l.contains("\"hfy0\"") && !l.contains("\"hfx1\"")
    });
    let err = s.bus.busctl(Caller::Nobody, &["get-property", BUS_NAME, &p0, LINK_INTERFACE, "Name"]);
    assert!(!err.success, "the object is gone: {}", err.stdout);
    let managed = s.json(Caller::Nobody, &["call", BUS_NAME, MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"]).to_string();
    assert!(!managed.contains(&p0) && !managed.contains(&p1) && managed.contains(&s.h0_path()), "{managed}");
}

/// Audit mode changes show up as PropertiesChanged on the manager and the link.
#[test]
fn properties_changed_follow_the_state() {
    let s = setup(&[("HOSTFWD_AUDIT", "false")]);
    let signals = Signals::watch(s.bus.address());
    let h0 = s.h0_path();
    s.manager_call(Caller::Root, "SetAuditMode", &["bb", "true", "false"]).ok("SetAuditMode");
    let m = signals.wait("manager AuditMode changed", Duration::from_secs(10), |m| {
        path_of(m) == MANAGER_PATH && changed(m).is_some_and(|(i, p)| i == MANAGER_INTERFACE && p.contains("AuditMode"))
    });
    let (_, props, _): (String, HashMap<String, zbus::zvariant::OwnedValue>, Vec<String>) = m.body().deserialize().unwrap();
    assert_eq!(bool::try_from(&props["AuditMode"]).ok(), Some(true));
    assert_eq!(props.get("State").and_then(|v| <&str>::try_from(v).ok()), Some("audit"), "{props:?}");
    signals.wait("link AuditMode changed", Duration::from_secs(10), |m| {
        path_of(m) == h0 && changed(m).is_some_and(|(i, p)| i == LINK_INTERFACE && p.contains("AuditMode"))
    });
}
