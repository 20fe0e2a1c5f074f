//! The daemon under hostile input (issue 11): documents that crashed the
//! parser or would exhaust the daemon, every class of bad D-Bus argument,
//! a flood of open calls from `nobody`, and a seeded random mix of
//! documents and arguments — against the real daemon on the private bus
//! with polkitd (`hostfwd_tests::bus`). After every refused call the daemon
//! must be alive and its policy (revision, sources, pending change)
//! unchanged. The offline validators (`hostfwd check-policy`, `hostfwdctl
//! policy validate`) must exit with the error, not a signal.
//!
//! Large arguments and floods go through `buscall` (src/bin/buscall.rs),
//! run as the caller: busctl cannot pass an argument over 128 KiB.
//!
//! Needs root; `dbus-daemon`, `busctl`, polkitd, `setpriv`.
//! `HOSTFWD_FUZZ_SEED` replays a random run, `HOSTFWD_FUZZ_CALLS` (default
//! 300) sets its length.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hostfwd::policy::cilium::{
    MAX_CIDRS_PER_SOURCE, MAX_DEPTH, MAX_NODES, MAX_RULES_PER_SOURCE, MAX_SOURCE_BYTES,
};
use hostfwd_dbus::{BUS_NAME, MANAGER_INTERFACE, MANAGER_PATH};
use hostfwd_tests::bus::{Caller, Daemon, TestBus, WEB_ONLY};
use hostfwd_tests::fuzz::Rng;
use hostfwd_tests::Topology;
use zbus::zvariant::{OwnedValue, Value};

fn ccnp_with_ingress(items: &str) -> String {
    format!("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: big\nspec:\n  nodeSelector: {{}}\n  ingress:\n{items}")
}

/// (what, text, what the first error must say).
fn hostile_documents() -> Vec<(&'static str, String, String)> {
    let deep = format!("nesting deeper than {MAX_DEPTH}");
    let mut alias_bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        alias_bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let rules = "  - {}\n".repeat(MAX_RULES_PER_SOURCE + 1);
    let cidrs: String = (0..=MAX_CIDRS_PER_SOURCE)
        .map(|i| format!("    - 10.{}.{}.0/24\n", i >> 8 & 0xff, i & 0xff))
        .collect();
    vec![
        (
            "300,000 nested block sequences",
            format!("{}x\n", "- ".repeat(300_000)),
            format!(":1:{}: {deep}", 2 * MAX_DEPTH + 1),
        ),
        (
            "60,000 nested block sequences",
            format!("{}x\n", "- ".repeat(60_000)),
            format!(":1:{}: {deep}", 2 * MAX_DEPTH + 1),
        ),
        (
            "200 nested block mappings",
            (0..200)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>()
                + &" ".repeat(200)
                + "x\n",
            deep.clone(),
        ),
        (
            "200 nested sequences of mappings",
            (0..200)
                .map(|i| format!("{}- a:\n", "  ".repeat(2 * i)))
                .collect(),
            deep.clone(),
        ),
        (
            "an alias expanded too deep",
            format!(
                "a: &x {}1{}\nb: {}*x{}\n",
                "[".repeat(40),
                "]".repeat(40),
                "[".repeat(40),
                "]".repeat(40)
            ),
            format!("{deep} (after expanding this alias)"),
        ),
        (
            "an alias bomb",
            alias_bomb,
            format!("more than {MAX_NODES} nodes"),
        ),
        (
            "too many nodes",
            format!("[{}]\n", "0,".repeat(MAX_NODES)),
            format!("more than {MAX_NODES} nodes"),
        ),
        (
            "a source over the size bound",
            format!("# {}\n", "x".repeat(1021)).repeat(MAX_SOURCE_BYTES / 1024 + 1),
            format!("more than {MAX_SOURCE_BYTES} bytes"),
        ),
        (
            "too many rules",
            ccnp_with_ingress(&rules),
            "too many rules in one source".into(),
        ),
        (
            "too many CIDRs",
            ccnp_with_ingress(&format!("  - fromCIDR:\n{cidrs}")),
            "too many CIDRs in one source".into(),
        ),
    ]
}

struct Setup {
    // Drop order: daemon, then topology, then bus.
    daemon: Daemon,
    _topo: Topology,
    bus: TestBus,
    rt: tokio::runtime::Runtime,
    /// Root's connection.
    conn: zbus::Connection,
    buscall: PathBuf,
}

/// What must not change when a call is refused.
#[derive(Debug, Clone, PartialEq)]
struct PolicyState {
    revision: u64,
    pending: (u64, u64),
    sources: Vec<(String, String, String, bool)>,
    texts: Vec<String>,
}

type CallResult = Result<zbus::Message, (String, String)>;

fn setup() -> Setup {
    let bus = TestBus::start().expect("test bus");
    let topo = Topology::new().expect("topology");
    let daemon = bus
        .start_daemon(
            &topo.host,
            "h0",
            &[
                ("HOSTFWD_AUDIT", "false"),
                ("HOSTFWD_FAILSAFE__INGRESS", "udp/68"),
            ],
        )
        .expect("daemon");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let conn = rt
        .block_on(async {
            zbus::connection::Builder::address(bus.address())?
                .method_timeout(Duration::from_secs(600))
                .build()
                .await
        })
        .expect("root's connection to the test bus");
    // nobody runs it: a copy where nobody may reach it (the checkout may
    // sit below a root-only directory).
    let buscall = bus.dir().join("buscall");
    std::fs::copy(env!("CARGO_BIN_EXE_buscall"), &buscall).expect("copy buscall next to the bus");
    let s = Setup {
        daemon,
        _topo: topo,
        bus,
        rt,
        conn,
        buscall,
    };
    let opts: HashMap<&str, Value<'_>> = HashMap::new();
    s.call("ApplyPolicy", &("web-only", WEB_ONLY, opts))
        .expect("root applies a policy");
    s
}

impl Setup {
    fn call<B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType>(
        &self,
        method: &str,
        body: &B,
    ) -> CallResult {
        self.rt
            .block_on(self.conn.call_method(
                Some(BUS_NAME),
                MANAGER_PATH,
                Some(MANAGER_INTERFACE),
                method,
                body,
            ))
            .map_err(|e| match e {
                zbus::Error::MethodError(name, msg, _) => {
                    (name.to_string(), msg.unwrap_or_default())
                }
                other => ("(not a method error)".into(), other.to_string()),
            })
    }

    fn property<T: TryFrom<OwnedValue>>(&self, name: &str) -> T {
        let reply = self.rt.block_on(self.conn.call_method(
            Some(BUS_NAME),
            MANAGER_PATH,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(MANAGER_INTERFACE, name),
        ));
        let v: OwnedValue = reply
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", self.daemon.log()))
            .body()
            .deserialize()
            .expect("v");
        T::try_from(v).unwrap_or_else(|_| panic!("{name} of another type"))
    }

    fn state(&self) -> PolicyState {
        let sources: Vec<(String, String, String, bool)> = self
            .call("ListPolicies", &())
            .expect("ListPolicies")
            .body()
            .deserialize()
            .expect("a(sssb)");
        let texts = sources
            .iter()
            .map(|p| {
                self.call("GetPolicy", &(p.0.as_str(),))
                    .expect("GetPolicy")
                    .body()
                    .deserialize::<String>()
                    .expect("s")
            })
            .collect();
        PolicyState {
            revision: self.property("PolicyRevision"),
            pending: self.property("PendingConfirm"),
            sources,
            texts,
        }
    }

    /// The daemon runs and owns its name.
    #[track_caller]
    fn assert_alive(&mut self, after: &str) {
        assert!(
            self.daemon.running(),
            "the daemon died after {after}:\n{}",
            self.daemon.log()
        );
        assert!(
            self.bus.has_name(BUS_NAME),
            "the daemon lost its name after {after}"
        );
    }

    /// `buscall METHOD` as `caller` with `text` (None: no argument); one
    /// line per call.
    fn buscall(
        &self,
        caller: Caller,
        method: &str,
        text: Option<&str>,
        count: usize,
        parallel: usize,
    ) -> Vec<String> {
        let file = match text {
            Some(t) => {
                let f = self.bus.dir().join(format!("doc-{method}.yaml"));
                std::fs::write(&f, t).expect("write the document");
                f.display().to_string()
            }
            None => "-".into(),
        };
        let out = self
            .bus
            .command(caller, &self.buscall)
            .args([method, &file, &count.to_string(), &parallel.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("buscall");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "buscall {method} as {caller:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.lines().map(str::to_string).collect()
    }
}

// -------------------------------------------------------------- documents

/// Each document as `nobody` (ValidatePolicy, open to all) and as root
/// (ApplyPolicy): a precise error, the daemon alive, its policy unchanged.
/// Before, the deep ones killed the daemon (a stack overflow).
#[test]
fn hostile_documents_get_a_precise_error_and_change_nothing() {
    let mut s = setup();
    let before = s.state();
    for (what, text, expected) in hostile_documents() {
        let lines = s.buscall(Caller::Nobody, "ValidatePolicy", Some(&text), 1, 1);
        assert_eq!(lines.len(), 1, "{what}: {lines:?}");
        assert!(
            lines[0].starts_with("ok ")
                && lines[0].contains("<input>:")
                && lines[0].contains(&expected),
            "ValidatePolicy of {what} as nobody: {}",
            lines[0]
        );
        s.assert_alive(&format!("ValidatePolicy of {what}"));

        let opts: HashMap<&str, Value<'_>> = HashMap::new();
        let err = s
            .call("ApplyPolicy", &("hostile", text.as_str(), opts))
            .expect_err(what);
        assert_eq!(
            err.0, "org.hostfwd.Firewall1.Error.InvalidPolicy",
            "ApplyPolicy of {what}: {err:?}"
        );
        assert!(
            err.1.starts_with("hostile:") && err.1.contains(&expected),
            "ApplyPolicy of {what}: {}",
            err.1
        );
        s.assert_alive(&format!("ApplyPolicy of {what}"));
        assert_eq!(s.state(), before, "the policy changed after {what}");
    }
}

/// `hostfwd check-policy` and `hostfwdctl policy validate` on the same
/// files: an exit status with the error, never a signal (before: SIGABRT
/// on the deep ones).
#[test]
fn offline_validators_exit_with_the_error_not_a_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (what, text, expected)) in hostile_documents().into_iter().enumerate() {
        let file = dir.path().join(format!("doc{i}.yaml"));
        std::fs::write(&file, &text).expect("write");
        for (tool, args, code) in [
            (hostfwd_tests::hostfwd_bin(), vec!["check-policy"], 1),
            (
                hostfwd_tests::hostfwdctl_bin(),
                vec!["policy", "validate"],
                5,
            ),
        ] {
            let out = std::process::Command::new(&tool)
                .args(&args)
                .arg(&file)
                .env("HOSTFWD_POLICY_DIR", dir.path())
                .output()
                .expect("run");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                out.status.signal(),
                None,
                "{} {args:?} on {what}: killed by a signal\n{}",
                tool.display(),
                &text[..text.len().min(2000)]
            );
            assert_eq!(
                out.status.code(),
                Some(code),
                "{} {args:?} on {what}:\n{}",
                tool.display(),
                &text[..text.len().min(2000)]
            );
            let expected_at = format!("{}:", file.display());
            assert!(
                text.contains(&expected_at) && text.contains(&expected),
                "{} {args:?} on {what} names file, position and bound:\n{}",
                tool.display(),
                &text[..text.len().min(2000)]
            );
        }
    }
}

// -------------------------------------------------------------- arguments

fn opts<'a>(kv: &[(&'a str, Value<'a>)]) -> HashMap<&'a str, Value<'a>> {
    kv.iter()
        .map(|(k, v)| (*k, v.try_clone().expect("clone")))
        .collect()
}

/// Every class of bad argument, as root (past polkit): `InvalidArgs`
/// naming the argument or key, nothing changed, the daemon alive. Before,
/// a confirm timeout of u32::MAX seconds installed the policy and then
/// killed the daemon (an `Instant` overflow).
#[test]
fn every_bad_argument_is_invalid_args_naming_it() {
    let mut s = setup();
    let before = s.state();
    let huge_name = "x".repeat(100_000);
    let cases: Vec<(&str, CallResult, &str)> = vec![
        (
            "confirm timeout u32::MAX",
            s.call(
                "ApplyPolicy",
                &(
                    "web-only",
                    WEB_ONLY,
                    opts(&[("confirm-timeout-sec", Value::from(u32::MAX))]),
                ),
            ),
            "confirm-timeout-sec",
        ),
        (
            "confirm timeout u64::MAX",
            s.call(
                "ApplyPolicy",
                &(
                    "web-only",
                    WEB_ONLY,
                    opts(&[("confirm-timeout-sec", Value::from(u64::MAX))]),
                ),
            ),
            "confirm-timeout-sec",
        ),
        (
            "confirm timeout a string",
            s.call(
                "ApplyPolicy",
                &(
                    "web-only",
                    WEB_ONLY,
                    opts(&[("confirm-timeout-sec", Value::from("60"))]),
                ),
            ),
            "confirm-timeout-sec",
        ),
        (
            "confirm timeout negative",
            s.call(
                "ApplyPolicy",
                &(
                    "web-only",
                    WEB_ONLY,
                    opts(&[("confirm-timeout-sec", Value::from(-5i32))]),
                ),
            ),
            "confirm-timeout-sec",
        ),
        (
            "persist an integer",
            s.call(
                "ApplyPolicy",
                &(
                    "web-only",
                    WEB_ONLY,
                    opts(&[("persist", Value::from(1u32))]),
                ),
            ),
            "persist",
        ),
        (
            "an unknown option",
            s.call(
                "ApplyPolicy",
                &(
                    "web-only",
                    WEB_ONLY,
                    opts(&[("persits", Value::from(true))]),
                ),
            ),
            "persits",
        ),
        (
            "a path as a policy name",
            s.call("ApplyPolicy", &("../../etc/x", WEB_ONLY, opts(&[]))),
            "name",
        ),
        (
            "an empty policy name",
            s.call("ApplyPolicy", &("", WEB_ONLY, opts(&[]))),
            "name",
        ),
        (
            "a remove option of apply",
            s.call(
                "RemovePolicy",
                &(
                    "web-only",
                    opts(&[("confirm-timeout-sec", Value::from(1u32))]),
                ),
            ),
            "confirm-timeout-sec",
        ),
        (
            "remove: persist a string",
            s.call(
                "RemovePolicy",
                &("web-only", opts(&[("persist", Value::from("yes"))])),
            ),
            "persist",
        ),
        (
            "remove: a path as a name",
            s.call("RemovePolicy", &("a/b", opts(&[]))),
            "name",
        ),
        (
            "GetPolicy: a path as a name",
            s.call("GetPolicy", &("../web-only",)),
            "name",
        ),
        (
            "GetLinkByName: 100,000 bytes",
            s.call("GetLinkByName", &(huge_name.as_str(),)),
            "name",
        ),
        (
            "GetLinkByName: a slash",
            s.call("GetLinkByName", &("h0/x",)),
            "name",
        ),
        (
            "monitor: an unknown reason",
            s.call(
                "OpenMonitor",
                &(opts(&[("reason", Value::from("policy-deined"))]),),
            ),
            "reason",
        ),
        (
            "monitor: a link of another type",
            s.call("OpenMonitor", &(opts(&[("link", Value::from(true))]),)),
            "link",
        ),
        (
            "monitor: audit a string",
            s.call("OpenMonitor", &(opts(&[("audit", Value::from("yes"))]),)),
            "audit",
        ),
        (
            "monitor: an unknown filter",
            s.call("OpenMonitor", &(opts(&[("colour", Value::from(1u32))]),)),
            "colour",
        ),
    ];
    for (what, result, key) in cases {
        let (name, msg) = result.expect_err(what);
        assert_eq!(
            name, "org.freedesktop.DBus.Error.InvalidArgs",
            "{what}: {msg}"
        );
        assert!(
            msg.contains(&format!("\"{key}\"")),
            "{what}: the message names {key:?}: {msg}"
        );
        assert!(
            msg.len() < 1000,
            "{what}: the message quotes the caller shortly ({} bytes)",
            msg.len()
        );
        s.assert_alive(what);
        assert_eq!(s.state(), before, "{what} changed the policy");
    }
    // The largest timeout allowed still works (and is rolled back at once).
    let max = hostfwd_dbus::options::MAX_CONFIRM_TIMEOUT_SEC as u32;
    s.call(
        "ApplyPolicy",
        &(
            "web-only",
            WEB_ONLY,
            opts(&[("confirm-timeout-sec", Value::from(max))]),
        ),
    )
    .expect("a day is allowed");
    s.call("RollbackPolicy", &()).expect("rollback");
    s.assert_alive("a confirm timeout of a day");
}

// ------------------------------------------------------------------ flood

/// A flood of ValidatePolicy from nobody (8 at a time, of a document that
/// takes a while to parse): the calls over the per-user bound are refused
/// with LimitsExceeded at once, the others are answered, root is answered
/// throughout, and nothing changes. Before, every call was taken, each on
/// a runtime worker.
#[test]
fn a_flood_of_open_calls_from_nobody_is_bounded_per_user() {
    let mut s = setup();
    let before = s.state();
    let items: String = (0..4000).map(|i| format!("  - fromCIDR: [10.{}.{}.0/24]\n    toPorts: [{{ports: [{{port: \"{}\", protocol: TCP}}]}}]\n", i >> 8 & 0xff, i & 0xff, 1000 + i)).collect();
    let doc = ccnp_with_ingress(&items);
    let (flood, root) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| s.buscall(Caller::Nobody, "ValidatePolicy", Some(&doc), 48, 8));
        let root = s.buscall(Caller::Root, "ValidatePolicy", Some(WEB_ONLY), 5, 1);
        (flood.join().expect("flood"), root)
    });
    // The same bound for the other open method that costs work (alone:
    // the bound is per user, across methods).
    let stats = s.buscall(Caller::Nobody, "GetStatistics", None, 48, 8);
    let limited = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.starts_with("error org.freedesktop.DBus.Error.LimitsExceeded"))
            .count()
    };
    for (what, lines, ok) in [
        ("ValidatePolicy", &flood, "ok 0 "),
        ("GetStatistics", &stats, "ok"),
    ] {
        let answered = lines.iter().filter(|l| *l == ok).count();
        assert_eq!(
            limited(lines) + answered,
            48,
            "every {what} is answered or limited: {lines:?}"
        );
        assert!(
            limited(lines) > 0,
            "{what} calls over the per-user bound are refused: {lines:?}"
        );
        assert!(
            answered > 0,
            "{what}: the first calls are answered: {lines:?}"
        );
    }
    assert!(
        root.iter().all(|l| l == "ok 0 "),
        "root is another user, answered throughout: {root:?}"
    );
    s.assert_alive("the flood");
    assert_eq!(s.state(), before);
}

// ----------------------------------------------------------------- random

/// A valid policy mutated a few times: YAML structure, anchors, tags,
/// deep nesting, bytes of every kind.
fn random_document(rng: &mut Rng) -> String {
    let base = if rng.index(2) == 0 {
        WEB_ONLY.to_string()
    } else {
        ccnp_with_ingress("  - fromCIDR: [10.0.0.0/8, \"2001:db8::/32\"]\n    toPorts: [{ports: [{port: \"22\", endPort: 30, protocol: TCP}]}]\n")
    };
    let mut chars: Vec<char> = base.chars().collect();
    let tokens = [
        "- ",
        "{",
        "}",
        "[",
        "]",
        ": ",
        "\n",
        "  ",
        "&a ",
        "*a",
        "!!str ",
        "!!int ",
        "!foo ",
        "\t",
        "%YAML 1.2\n",
        "---\n",
        "...\n",
        "? ",
        "|\n",
        "'",
        "\"",
        "#",
        "\u{1}",
        "é",
        "\u{feff}",
        "99999999999999999999",
        "-1",
        "0x1F",
        "ingressDeny",
        "toFQDNs",
        "0.0.0.0/0",
        "::/0",
    ];
    // Sometimes none: valid documents reach the options and names.
    for _ in 0..rng.index(6) {
        let at = rng.index(chars.len() + 1);
        match rng.index(6) {
            0 => {
                let end = (at + rng.index(40)).min(chars.len());
                chars.drain(at..end);
            }
            1 => {
                let end = (at + rng.index(80)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                let to = rng.index(chars.len() + 1);
                chars.splice(to..to, copy);
            }
            2 => {
                // Deep nesting, block or flow, around the bound: anywhere.
                let n = rng.index(3 * MAX_DEPTH);
                let deep: String = if rng.index(2) == 0 {
                    "- ".repeat(n)
                } else {
                    "[".repeat(n)
                };
                chars.splice(at..at, deep.chars());
            }
            3 if rng.index(3) == 0 => {
                // Far past it, as a document of its own that is complete
                // (what overflowed the stack): at the end.
                let deep = format!("\n---\n{}x\n", "- ".repeat(rng.pick(&[1000, 100_000])));
                chars.extend(deep.chars());
            }
            3 => {
                let c = char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('?');
                chars.insert(at, c);
            }
            _ => {
                let t = rng.pick(&tokens);
                chars.splice(at..at, t.chars());
            }
        }
    }
    // D-Bus strings cannot hold NUL: the bus would drop the connection
    // that sent one, before the daemon sees it.
    chars.into_iter().filter(|&c| c != '\0').collect()
}

fn random_value(rng: &mut Rng) -> Value<'static> {
    match rng.index(8) {
        0 => Value::from(rng.index(2) == 0),
        1 => Value::from(rng.next() as u32),
        2 => Value::from(rng.pick(&[0u32, 1, 60, 86_400, 86_401, u32::MAX])),
        3 => Value::from(rng.next()),
        4 => Value::from(-(rng.index(1000) as i32)),
        5 => Value::from(
            rng.pick(&["60", "", "true", "policy-denied", "h0"])
                .to_string(),
        ),
        6 => Value::from(rng.next() as f64),
        _ => Value::from(rng.index(10) as u8),
    }
}

fn random_options(rng: &mut Rng, keys: &[&'static str]) -> HashMap<String, Value<'static>> {
    (0..rng.index(4))
        .map(|_| (rng.pick(keys).to_string(), random_value(rng)))
        .collect()
}

fn random_name(rng: &mut Rng) -> String {
    rng.pick(&[
        "web-only", "fuzz", "fuzz.v2", "", "../x", "a/b", ".hidden", "-x", "h0", "nosuch0", "x y",
        "ä",
    ])
    .to_string()
        + &"x".repeat(rng.pick(&[0, 0, 0, 60, 5000]))
}

/// A seeded random run of documents and arguments against the running
/// daemon; after every refused call it is alive and its policy unchanged.
/// An accepted change becomes the new state (a pending one is confirmed at
/// once, so that nothing changes behind the test's back).
#[test]
fn random_documents_and_arguments_leave_the_daemon_alive_and_its_policy_unchanged() {
    let seed = std::env::var("HOSTFWD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let calls: usize = std::env::var("HOSTFWD_FUZZ_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    println!("random run: HOSTFWD_FUZZ_SEED={seed} HOSTFWD_FUZZ_CALLS={calls}");
    let mut rng = Rng(seed);
    let mut s = setup();
    let mut state = s.state();
    let (mut refused, mut accepted) = (0, 0);
    for i in 0..calls {
        let doc = random_document(&mut rng);
        let (what, result) = match rng.index(7) {
            0 | 1 => ("ValidatePolicy", s.call("ValidatePolicy", &(doc.as_str(),))),
            2 | 3 => {
                let o =
                    random_options(&mut rng, &["persist", "confirm-timeout-sec", "persits", ""]);
                (
                    "ApplyPolicy",
                    s.call("ApplyPolicy", &(random_name(&mut rng), doc.as_str(), o)),
                )
            }
            4 => (
                "RemovePolicy",
                s.call(
                    "RemovePolicy",
                    &(
                        random_name(&mut rng),
                        random_options(&mut rng, &["persist", "confirm-timeout-sec"]),
                    ),
                ),
            ),
            5 => (
                "OpenMonitor",
                s.call(
                    "OpenMonitor",
                    &(random_options(&mut rng, &["link", "reason", "audit", "x"]),),
                ),
            ),
            _ => {
                let m = rng.pick(&["GetPolicy", "GetLinkByName"]);
                (m, s.call(m, &(random_name(&mut rng),)))
            }
        };
        s.assert_alive(&format!("call {i} ({what}) of the run with seed {seed}"));
        match result {
            Err(e) => {
                refused += 1;
                assert_ne!(
                    e.0, "(not a method error)",
                    "call {i} ({what}), seed {seed}: {e:?}"
                );
                assert_eq!(
                    s.state(),
                    state,
                    "refused call {i} ({what}: {e:?}) changed the policy; seed {seed}"
                );
            }
            Ok(reply) => {
                accepted += 1;
                let now = s.state();
                // A change is published before its reply.
                if matches!(what, "ApplyPolicy" | "RemovePolicy") {
                    let revision: u64 = reply.body().deserialize().expect("t");
                    assert_eq!(now.revision, revision, "call {i} ({what}): the reply came before the change was published; seed {seed}");
                }
                if now.pending.0 != 0 {
                    s.call("ConfirmPolicy", &(now.pending.0,))
                        .expect("confirm the accepted change");
                }
                state = s.state();
            }
        }
    }
    println!("random run: {accepted} calls accepted, {refused} refused");
    assert!(
        refused > 0,
        "the run refused nothing: the generator is broken"
    );
}
