//! `hostfwdctl`, the real binary: its offline commands (policy validate,
//! generate, detach), usage errors and exit statuses, and every command
//! against the real daemon on a private test bus with polkitd.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hostfwd_tests::bus::{Caller, Daemon, TestBus};
use hostfwd_tests::{hostfwdctl_bin, Topology};

/// A finished hostfwdctl run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit status\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// hostfwdctl with a clean environment as to buses: never the host's.
fn ctl() -> Command {
    let mut c = Command::new(hostfwdctl_bin());
    c.env_remove("DBUS_SYSTEM_BUS_ADDRESS").env_remove("DBUS_SESSION_BUS_ADDRESS").stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Run {
    Run::from(ctl().args(args).output().expect("running hostfwdctl"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing a policy file");
    p
}

const SSH: &str = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: ssh
spec:
  nodeSelector: {}
  ingress:
  - toPorts:
    - ports:
      - port: \"22\"
        protocol: TCP
";

/// Two problems, on lines 10 and 14.
const BROKEN: &str = "\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: broken
spec:
  nodeSelector: {}
  ingress:
  - toPorts:
    - ports:
      - port: \"70000\"
        protocol: TCP
  egress:
  - toCIDR:
    - 10.0.0.0/33
";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------
// Offline: no bus, no daemon.

#[test]
fn validate_accepts_valid_files_and_explains_them() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = write(dir.path(), "ssh.yaml", SSH);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/tests/policies/golden-ports.yaml");
    let r = run(&["policy", "validate", p(&ssh), p(&golden)]).expect(0);
    assert!(r.stdout.contains(&format!("{}: valid", ssh.display())), "{}", r.stdout);
    assert!(r.stdout.contains("policy ssh: active: nodeSelector is empty"), "{}", r.stdout);
    assert!(r.stdout.contains("for this node: 2 policies"), "{}", r.stdout);
    assert!(r.stdout.contains("enforcing ingress: yes, egress: no"), "{}", r.stdout);
    assert_eq!(r.stderr, "");

    let j = run(&["-o", "json", "policy", "validate", p(&ssh)]).expect(0).json();
    assert_eq!(j["valid"], true);
    assert_eq!(j["files"][0]["valid"], true);
    assert_eq!(j["policies"][0]["name"], "ssh");
    assert_eq!(j["node"]["enforce_ingress"], true);
    assert_eq!(j["node"]["enforce_egress"], false);
}

#[test]
fn validate_shows_warnings_and_strict_policies_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let lockdown = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/cilium-compat/remote-node-lockdown.yaml");
    let r = run(&["policy", "validate", p(&lockdown)]).expect(0);
    assert!(r.stdout.contains(":39:5: spec.ingress[2].fromEndpoints: warning: inert here: "), "{}", r.stdout);
    assert!(r.stdout.contains("\nspec.ingress[2]: inert here: fromEndpoints: "), "{}", r.stdout);
    let j = run(&["-o", "json", "policy", "validate", p(&lockdown)]).expect(0).json();
    assert_eq!(j["warnings"].as_array().map(Vec::len), Some(6), "{j}");
    let strict = write(dir.path(), "strict.toml", "strict_policies = true\n");
    let r = run(&["policy", "validate", p(&lockdown), "--config", p(&strict)]).expect(5);
    assert!(r.stdout.contains("spec.ingress[2].fromEndpoints: inert here: ") && r.stdout.contains("(refused: strict_policies = true)"), "{}", r.stdout);
}

#[test]
fn validate_names_file_line_and_field_and_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let ssh = write(dir.path(), "ssh.yaml", SSH);
    let bad = write(dir.path(), "broken.yaml", BROKEN);
    let r = run(&["policy", "validate", p(&ssh), p(&bad)]).expect(5);
    let b = bad.display();
    assert!(r.stdout.contains(&format!("{b}:10:15: spec.ingress[0].toPorts[0].ports[0].port: port 70000 is out of range")), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{b}:14:")) && r.stdout.contains("spec.egress[0].toCIDR[0]: invalid CIDR \"10.0.0.0/33\""), "{}", r.stdout);
    // The valid file is still reported as such; nothing is compiled.
    assert!(r.stdout.contains(&format!("{}: valid", ssh.display())), "{}", r.stdout);
    assert!(!r.stdout.contains("for this node"), "{}", r.stdout);
    assert_eq!(r.stderr.trim(), "hostfwdctl: validation failed: 2 problems");

    let j = run(&["policy", "validate", "-o", "json", p(&bad)]).expect(5).json();
    assert_eq!(j["valid"], false);
    let errors = j["files"][0]["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].as_str().unwrap().starts_with(&format!("{b}:10:15: spec.ingress[0].toPorts[0].ports[0].port:")), "{errors:?}");
}

#[test]
fn validate_checks_the_files_together() {
    // Each file is valid alone; together they define `ssh` twice, which the
    // daemon would refuse for its policy directory.
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.yaml", SSH);
    let b = write(dir.path(), "b.yaml", SSH);
    let r = run(&["policy", "validate", p(&a), p(&b)]).expect(5);
    assert!(r.stdout.contains(&format!("{}:4:9: metadata.name: policy \"ssh\" is already defined at {}:4:9", b.display(), a.display())), "{}", r.stdout);
    assert!(!r.stdout.contains(": valid"), "{}", r.stdout);
}

#[test]
fn validate_of_a_missing_file_is_an_error_not_a_verdict() {
    let r = run(&["policy", "validate", "/nonexistent/hostfwd-policy.yaml"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: reading /nonexistent/hostfwd-policy.yaml: "), "{}", r.stderr);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &[],
        &["policy"],
        &["policy", "apply"],
        &["policy", "apply", "x.yaml", "--confirm", "soon"],
        &["policy", "apply", "x.yaml", "--confirm", "0s"],
        &["policy", "validate"],
        &["policy", "confirm", "notanumber"],
        &["audit", "maybe"],
        &["-o", "yaml", "status"],
        &["link"],
        &["generate", "completions", "tcsh"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "hostfwdctl {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
        assert!(r.stderr.contains("error:") || r.stderr.contains("Usage:"), "{args:?}: {}", r.stderr);
    }
    // A policy from standard input has no file name to take its name from.
    let r = Run::from(ctl().args(["--address", "unix:path=/nonexistent", "policy", "apply", "-"]).output().unwrap()).expect(2);
    assert!(r.stderr.contains("needs --name"), "{}", r.stderr);
    // An address that is not a D-Bus address.
    let r = run(&["--address", "no-such-transport", "status"]).expect(2);
    assert!(r.stderr.starts_with("hostfwdctl: invalid bus address \"no-such-transport\""), "{}", r.stderr);
}

#[test]
fn help_documents_the_exit_statuses() {
    let r = run(&["--help"]).expect(0);
    for line in ["Exit status:", "0  success", "2  usage error", "3  the daemon is not reachable", "4  access denied", "5  validation failed"] {
        assert!(r.stdout.contains(line), "{line:?} missing from --help:\n{}", r.stdout);
    }
    for cmd in ["status", "links", "link", "policy", "audit", "monitor", "reload", "stats", "detach"] {
        assert!(r.stdout.contains(&format!("\n  {cmd} ")), "{cmd} missing from --help:\n{}", r.stdout);
    }
    assert!(!r.stdout.contains("generate"), "generate is hidden:\n{}", r.stdout);
    let r = run(&["policy", "apply", "--help"]).expect(0);
    assert!(r.stdout.contains("--confirm <DURATION>") && r.stdout.contains("--persist") && r.stdout.contains("--name"), "{}", r.stdout);
}

#[test]
fn generate_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&["generate", "man", p(dir.path())]).expect(0);
    let top = std::fs::read_to_string(dir.path().join("hostfwdctl.1")).expect("hostfwdctl.1");
    assert!(top.contains(".TH hostfwdctl 1"), "title");
    assert!(top.contains(".SH \"EXIT STATUS\""), "exit status section");
    assert!(top.contains("access denied (polkit refused the caller)"), "exit status 4 explained");
    assert!(top.contains("DBUS_SYSTEM_BUS_ADDRESS"), "environment");
    assert!(!top.contains(".SH EXTRA"), "no raw after-help section");
    for page in ["hostfwdctl-status.1", "hostfwdctl-policy.1", "hostfwdctl-policy-apply.1", "hostfwdctl-policy-validate.1", "hostfwdctl-audit.1", "hostfwdctl-monitor.1"] {
        assert!(dir.path().join(page).is_file(), "{page} not written; wrote:\n{}", r.stdout);
        assert!(r.stdout.contains(page), "{page} not listed:\n{}", r.stdout);
    }
    let apply = std::fs::read_to_string(dir.path().join("hostfwdctl-policy-apply.1")).unwrap();
    assert!(apply.contains("confirm"), "{apply}");
    assert!(!dir.path().join("hostfwdctl-generate.1").exists(), "hidden command has no page");
    // A man page that man(1) can format, if man is there.
    if Path::new("/usr/bin/man").exists() {
        let out = Command::new("man").args(["-l", "-P", "cat"]).arg(dir.path().join("hostfwdctl.1")).env("MANWIDTH", "100").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("EXIT STATUS"), "man -l failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef hostfwdctl"), ("fish", "complete -c hostfwdctl")] {
        let r = run(&["generate", "completions", shell]).expect(0);
        assert!(r.stdout.contains(marker), "{shell}: {}", &r.stdout[..r.stdout.len().min(300)]);
        assert!(r.stdout.contains("validate") && r.stdout.contains("rollback"), "{shell} completes subcommands");
    }
    if Path::new("/bin/bash").exists() {
        let script = run(&["generate", "completions", "bash"]).stdout;
        let ok = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn().and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        });
        assert!(ok.unwrap().success(), "bash completion script does not parse");
    }
}

#[test]
fn unreachable_bus_exits_3_and_names_the_address() {
    let r = run(&["--address", "unix:path=/nonexistent/hostfwd-test-bus", "status"]).expect(3);
    assert!(r.stderr.starts_with("hostfwdctl: cannot connect to the bus at unix:path=/nonexistent/hostfwd-test-bus: "), "{}", r.stderr);
    // The environment variable is honoured as zbus and libdbus do.
    let r = Run::from(ctl().env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/from-env").args(["links"]).output().unwrap()).expect(3);
    assert!(r.stderr.contains("unix:path=/nonexistent/from-env"), "{}", r.stderr);
    // Every command that needs the daemon says so the same way.
    for args in [&["links"][..], &["link", "eth0"], &["stats"], &["policy", "list"], &["policy", "show", "x"], &["reload"], &["audit", "on"], &["policy", "rollback"], &["monitor"]] {
        let mut all = vec!["--address", "unix:path=/nonexistent/bus"];
        all.extend_from_slice(args);
        let r = run(&all);
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
    }
}

#[test]
fn a_bus_without_the_daemon_exits_3() {
    let bus = PrivateBus::start();
    let r = run(&["--address", &bus.address, "status"]).expect(3);
    assert!(r.stderr.starts_with("hostfwdctl: hostfwd is not reachable: "), "{}", r.stderr);
    assert!(r.stderr.contains("org.hostfwd.Firewall1"), "{}", r.stderr);
    let r = run(&["--address", &bus.address, "--no-ask-password", "policy", "remove", "x"]).expect(3);
    assert!(r.stderr.starts_with("hostfwdctl: hostfwd is not reachable: "), "{}", r.stderr);
}

/// `detach` removes what a loaded and attached datapath left in the kernel,
/// with the daemon's own library, when no daemon owns the name on the bus.
#[test]
fn detach_removes_attachments_and_pins() {
    use hostfwd::datapath::{AttachModeChoice, Direction};
    let topo = hostfwd_tests::Topology::new().expect("topology");
    let dp = common::TestDp::load("ctl-detach", AttachModeChoice::Auto);
    let h = topo.h.ifindex;
    topo.host
        .run(|| {
            for d in Direction::ALL {
                dp.attach(h, d).expect("attach");
            }
        })
        .unwrap();
    let listed = || topo.host.run(|| dp.attachments().map(|l| l.len()).unwrap_or(0)).unwrap();
    assert_eq!(listed(), 2);
    let bus = PrivateBus::start();
    let out = topo
        .host
        .cmd(hostfwdctl_bin())
        .args(["--address", &bus.address, "detach"])
        .env("HOSTFWD_BPFFS_ROOT", &dp.root)
        .output()
        .unwrap();
    let r = Run::from(out).expect(0);
    assert_eq!(r.stdout, format!("detached 2 attachments and removed the pins under {}\n", dp.root.display()));
    assert!(!dp.root.exists(), "pins removed");
    assert_eq!(listed(), 0, "attachments removed");
}

// ---------------------------------------------------------------------------
// Against the real daemon on the test bus (dbus-daemon with the shipped bus
// policy, polkitd with the shipped actions and rule).

/// The daemon enforcing on `h0` of a test topology, on a test bus.
struct Live {
    // Dropped in this order: the daemon, its namespaces, the bus.
    daemon: Daemon,
    topo: Topology,
    bus: TestBus,
}

fn live() -> Live {
    live_with(&[])
}

/// [`live`] with more configuration from the environment.
fn live_with(env: &[(&str, &str)]) -> Live {
    let bus = TestBus::start().expect("test bus");
    let topo = Topology::new().expect("topology");
    let env: Vec<(&str, &str)> = [("HOSTFWD_AUDIT", "false")].into_iter().chain(env.iter().copied()).collect();
    let daemon = bus.start_daemon(&topo.host, "h0", &env).expect("daemon");
    let live = Live { daemon, topo, bus };
    // The link table fills in right after start.
    common::wait_until("h0 attached", Duration::from_secs(15), || {
        let r = live.ctl(Caller::Root, &["-o", "json", "link", "h0"]);
        r.code == 0 && r.json()["attach_mode"].as_str().is_some_and(|m| !m.is_empty())
    });
    live
}

impl Live {
    fn ctl(&self, caller: Caller, args: &[&str]) -> Run {
        let mut cmd = self.bus.command(caller, hostfwdctl_bin());
        Run::from(cmd.args(args).stdin(Stdio::null()).output().expect("running hostfwdctl"))
    }

    fn root(&self, args: &[&str]) -> Run {
        self.ctl(Caller::Root, args)
    }

    /// `status -o json`.
    fn status(&self) -> serde_json::Value {
        self.root(&["-o", "json", "status"]).expect(0).json()
    }

    /// The names in `policy list -o json`.
    fn policies(&self) -> Vec<String> {
        let j = self.root(&["-o", "json", "policy", "list"]).expect(0).json();
        j.as_array().expect("array").iter().map(|p| p["name"].as_str().unwrap_or_default().to_string()).collect()
    }

    /// A file every caller can read (the bus's directory is world-readable).
    fn file(&self, name: &str, text: &str) -> String {
        p(&write(self.bus.dir(), name, text)).to_string()
    }

    fn log(&self) -> String {
        self.daemon.log()
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

#[test]
fn reads_work_for_everyone_in_both_formats() {
    let l = live();
    let h = l.topo.h.ifindex;
    for caller in [Caller::Root, Caller::Nobody] {
        let r = l.ctl(caller, &["status"]).expect(0);
        for key in ["Version:", "State:", "AuditMode:", "PolicyRevision:", "AttachMode:", "Links:"] {
            assert!(r.stdout.lines().any(|line| line.starts_with(key)), "{key} missing ({caller:?}):\n{}", r.stdout);
        }
        assert!(r.stdout.contains("PendingConfirm: none"), "{}", r.stdout);
        assert!(r.stdout.contains("AuditMode:      off"), "{}", r.stdout);

        let j = l.ctl(caller, &["status", "-o", "json"]).expect(0).json();
        assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(j["audit_mode"], false);
        assert!(j["pending_confirm"].is_null(), "{j}");
        assert!(matches!(j["attach_mode"].as_str(), Some("tcx" | "tc")), "{j}");
        assert!(matches!(j["state"].as_str(), Some("enforcing" | "starting" | "degraded")), "{j}");
        assert_eq!(j["roles"]["enforce"], 1, "h0 is the one enforcing link: {j}");
        assert!(j["links"].as_u64().unwrap() >= 2, "lo and h0 at least: {j}");

        let links = l.ctl(caller, &["-o", "json", "links"]).expect(0).json();
        let h0 = links.as_array().unwrap().iter().find(|x| x["name"] == "h0").unwrap_or_else(|| panic!("no h0 in {links}"));
        assert_eq!(h0["ifindex"], h);
        assert_eq!(h0["role"], "enforce");
        assert_eq!(h0["kind"], "veth");
        assert_eq!(h0["path"], format!("/org/hostfwd/Firewall1/link/_3{h}"));
        assert!(h0["addresses"].as_array().unwrap().iter().any(|a| a == "10.77.0.1/24"), "{h0}");
        assert_eq!(h0["attach_mode"], j["attach_mode"]);

        let human = l.ctl(caller, &["links"]).expect(0).stdout;
        let mut lines = human.lines();
        let header = lines.next().unwrap_or_default();
        assert!(header.starts_with("IFINDEX  NAME") && header.ends_with("REASON"), "{human}");
        let row = human.lines().find(|line| line.split_whitespace().nth(1) == Some("h0")).unwrap_or_else(|| panic!("{human}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[..4], &[h.to_string().as_str(), "h0", "veth", "enforce"], "{human}");
        // Columns line up: ROLE starts at the same offset in the header and the row.
        assert_eq!(header.find("ROLE"), row.find("enforce"), "{human}");

        let one = l.ctl(caller, &["link", "h0"]).expect(0).stdout;
        assert!(one.contains(&format!("Ifindex:      {h}\n")), "{one}");
        assert!(one.contains("Role:         enforce\n"), "{one}");
        assert!(one.contains("Addresses:    10.77.0.1/24\n"), "{one}");
        let j = l.ctl(caller, &["link", "h0", "-o", "json"]).expect(0).json();
        assert_eq!((j["name"].as_str(), j["ifindex"].as_u64()), (Some("h0"), Some(u64::from(h))));

        let stats = l.ctl(caller, &["-o", "json", "stats"]).expect(0).json();
        assert!(stats.is_array(), "{stats}");
        let human = l.ctl(caller, &["stats"]).expect(0).stdout;
        let header: Vec<&str> = human.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["IFINDEX", "NAME", "DIRECTION", "REASON", "COUNT"], "{human}");

        assert_eq!(l.ctl(caller, &["-o", "json", "policy", "list"]).expect(0).json(), serde_json::json!([]));
        assert_eq!(l.ctl(caller, &["policy", "list"]).expect(0).stdout, "NAME  ACTIVE  SOURCE  REASON\n");
    }
    let r = l.root(&["link", "nosuch0"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: no such link: "), "{}", r.stderr);
    let r = l.root(&["policy", "show", "nosuch"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: no such policy: "), "{}", r.stderr);
}

#[test]
fn mutations_are_refused_to_nobody_and_allowed_to_the_group() {
    let l = live();
    let ssh = l.file("ssh.yaml", SSH);
    let denied = [
        vec!["policy", "apply", ssh.as_str()],
        vec!["policy", "remove", "ssh"],
        vec!["policy", "confirm", "1"],
        vec!["policy", "rollback"],
        vec!["audit", "on"],
        vec!["audit", "on", "--link", "h0"],
        vec!["reload"],
        vec!["monitor"],
    ];
    for args in &denied {
        for ask in [true, false] {
            let mut all = args.clone();
            if !ask {
                all.insert(0, "--no-ask-password");
            }
            let r = l.ctl(Caller::Nobody, &all);
            assert_eq!(r.code, 4, "nobody: hostfwdctl {all:?}\nstdout {}\nstderr {}", r.stdout, r.stderr);
            assert!(
                r.stderr.starts_with("hostfwdctl: access denied") || r.stderr.starts_with("hostfwdctl: interactive authorization required"),
                "{all:?}: {}",
                r.stderr
            );
        }
    }
    // Without the interactive flag polkit's challenge is named as such.
    let r = l.ctl(Caller::Nobody, &["--no-ask-password", "reload"]).expect(4);
    assert!(r.stderr.starts_with("hostfwdctl: interactive authorization required"), "{}", r.stderr);
    // Nothing changed.
    assert_eq!(l.status()["audit_mode"], false);
    assert!(l.policies().is_empty());

    // A member of group hostfwd may (the shipped example rule).
    l.ctl(Caller::Member, &["audit", "on"]).expect(0);
    assert_eq!(l.status()["audit_mode"], true);
    l.ctl(Caller::Member, &["--no-ask-password", "audit", "off"]).expect(0);
    assert_eq!(l.status()["audit_mode"], false);
    l.ctl(Caller::Member, &["--no-ask-password", "audit", "on", "--link", "h0"]).expect(0);
    assert_eq!(l.root(&["-o", "json", "link", "h0"]).expect(0).json()["audit_mode"], true);
    l.ctl(Caller::Member, &["policy", "apply", ssh.as_str()]).expect(0);
    assert_eq!(l.policies(), ["ssh"]);
}

#[test]
fn policy_apply_show_list_remove_and_reload() {
    let l = live();
    let rev0 = l.status()["policy_revision"].as_u64().unwrap();
    let ssh = l.file("ssh.yaml", SSH);

    let r = l.root(&["policy", "apply", &ssh]).expect(0);
    let rev1 = l.status()["policy_revision"].as_u64().unwrap();
    assert!(rev1 > rev0, "revision {rev0} -> {rev1}");
    assert_eq!(r.stdout, format!("applied policy \"ssh\": revision {rev1}\n"));

    // list, show, in both forms.
    let list = l.root(&["-o", "json", "policy", "list"]).expect(0).json();
    assert_eq!(list[0]["name"], "ssh");
    assert_eq!(list[0]["active"], true);
    assert_eq!(list[0]["source"], "runtime");
    let human = l.root(&["policy", "list"]).expect(0).stdout;
    assert!(human.lines().nth(1).is_some_and(|row| row.starts_with("ssh   yes     runtime")), "{human}");
    // show: what the daemon made of it, as YAML comments, then the text as applied.
    let shown = l.root(&["policy", "show", "ssh"]).expect(0).stdout;
    let reason = list[0]["reason"].as_str().expect("reason");
    assert_eq!(shown, reason.lines().map(|l| format!("# {l}\n")).collect::<String>() + SSH, "{shown}");
    assert!(shown.starts_with("# ") && reason.contains("active"), "{shown}");
    let json = l.root(&["policy", "show", "ssh", "-o", "json"]).expect(0).json();
    assert_eq!((json["yaml"].as_str(), json["reason"].as_str()), (Some(SSH), Some(reason)));

    // --name, standard input, --persist (written to the policy directory).
    let r = Run::from(
        l.bus
            .command(Caller::Root, hostfwdctl_bin())
            .args(["-o", "json", "policy", "apply", "-", "--name", "web", "--persist"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(SSH.replace("name: ssh", "name: web").replace("\"22\"", "\"80\"").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap(),
    )
    .expect(0);
    let j = r.json();
    assert_eq!(j["name"], "web");
    assert!(j["revision"].as_u64().unwrap() > rev1, "{j}");
    assert!(j["pending_confirm"].is_null(), "{j}");
    assert_eq!(l.policies(), ["ssh", "web"]);
    let persisted = std::fs::read_to_string(l.daemon.policy_dir().join("web.yaml")).expect("web.yaml persisted");
    assert!(persisted.contains("name: web"), "{persisted}");

    // An invalid policy: the daemon's messages, with line and field.
    let bad = l.file("broken.yaml", BROKEN);
    let r = l.root(&["policy", "apply", &bad]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: invalid policy: "), "{}", r.stderr);
    assert!(r.stderr.contains(":10:15: spec.ingress[0].toPorts[0].ports[0].port: port 70000 is out of range"), "{}", r.stderr);
    assert!(!l.policies().contains(&"broken".to_string()));

    // A Cilium file with peers that select nothing here loads; list (over
    // D-Bus) and show name each such rule.
    let lockdown = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/cilium-compat/remote-node-lockdown.yaml");
    l.root(&["policy", "apply", lockdown]).expect(0);
    let list = l.root(&["-o", "json", "policy", "list"]).expect(0).json();
    let row = list.as_array().and_then(|a| a.iter().find(|p| p["name"] == "remote-node-lockdown")).unwrap_or_else(|| panic!("{list}"));
    let reason = row["reason"].as_str().expect("reason");
    assert!(reason.contains("\nspec.ingress[2]: inert here: fromEndpoints: "), "{reason}");
    assert!(reason.contains("\nspec.ingress[0]: partly inert here (its other peers apply): entity health: "), "{reason}");
    let human = l.root(&["policy", "list"]).expect(0).stdout;
    assert!(human.contains("spec.ingress[2]: inert here: fromEndpoints: "), "{human}");
    let shown = l.root(&["policy", "show", "remote-node-lockdown"]).expect(0).stdout;
    assert!(shown.contains("\n# spec.egress[1]: inert here: toEndpoints: "), "{shown}");
    l.root(&["policy", "remove", "remote-node-lockdown"]).expect(0);

    // Remove.
    let r = l.root(&["policy", "remove", "ssh"]).expect(0);
    assert!(r.stdout.starts_with("removed policy \"ssh\": revision "), "{}", r.stdout);
    assert_eq!(l.policies(), ["web"]);
    let r = l.root(&["policy", "remove", "ssh"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: no such policy: "), "{}", r.stderr);

    // Reload: the permanent set again (web was persisted; a runtime one goes).
    l.root(&["policy", "apply", &ssh]).expect(0);
    assert_eq!(l.policies(), ["ssh", "web"]);
    let r = l.root(&["reload"]).expect(0);
    assert!(r.stdout.starts_with("reloaded; policy revision "), "{}", r.stdout);
    assert_eq!(l.policies(), ["web"], "runtime policy dropped on reload; log:\n{}", l.log());
    let list = l.root(&["-o", "json", "policy", "list"]).expect(0).json();
    assert!(list[0]["source"].as_str().unwrap().ends_with("web.yaml"), "{list}");

    // remove --persist deletes the file.
    l.root(&["policy", "remove", "web", "--persist"]).expect(0);
    assert!(!l.daemon.policy_dir().join("web.yaml").exists(), "web.yaml removed");
    l.root(&["reload"]).expect(0);
    assert!(l.policies().is_empty());
}

#[test]
fn a_strict_daemon_refuses_inert_peers_and_takes_kube_apiserver_from_its_configuration() {
    let l = live_with(&[("HOSTFWD_STRICT_POLICIES", "true"), ("HOSTFWD_ENTITIES__KUBE_APISERVER", "10.96.0.1/32,192.168.1.10/32")]);
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/cilium-compat/");
    let r = l.root(&["policy", "apply", &format!("{corpus}remote-node-lockdown.yaml")]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: invalid policy: "), "{}", r.stderr);
    assert!(r.stderr.contains("spec.ingress[2].fromEndpoints: inert here: ") && r.stderr.contains("(refused: strict_policies = true)"), "{}", r.stderr);
    assert!(l.policies().is_empty());
    // The bus's ValidatePolicy answers as the apply did, for anyone.
    let text = std::fs::read_to_string(format!("{corpus}remote-node-lockdown.yaml")).expect("fixture");
    let out = l.bus.busctl(Caller::Nobody, &["--json=short", "call", hostfwd_dbus::BUS_NAME, hostfwd_dbus::MANAGER_PATH, hostfwd_dbus::MANAGER_INTERFACE, "ValidatePolicy", "s", &text]);
    let answer = out.ok("ValidatePolicy as nobody");
    assert!(answer.contains("(refused: strict_policies = true)"), "{answer}");
    // Nothing lenient in it: loads, the entity from the configuration.
    l.root(&["policy", "apply", &format!("{corpus}kube-apiserver.yaml")]).expect(0);
    assert_eq!(l.policies(), ["kube-apiserver"]);
}

#[test]
fn apply_with_confirm_then_confirm_rollback_or_timeout() {
    let l = live();
    let ssh = l.file("ssh.yaml", SSH);

    // Confirmed: stays.
    let before = now_us();
    let r = l.root(&["policy", "apply", &ssh, "--confirm", "30s"]).expect(0);
    let st = l.status();
    let rev = st["pending_confirm"]["revision"].as_u64().unwrap_or_else(|| panic!("nothing pending: {st}"));
    assert_eq!(st["policy_revision"].as_u64(), Some(rev));
    assert!(r.stdout.contains(&format!("revision {rev}, awaiting confirmation")), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("\n  hostfwdctl policy confirm {rev}\n")), "{}", r.stdout);
    // Rounded up to the second: 30s unless this machine took a second to answer.
    assert!(r.stdout.contains("(in 30s)") || r.stdout.contains("(in 29s)"), "{}", r.stdout);
    let deadline = st["pending_confirm"]["deadline_us"].as_u64().unwrap();
    assert!(deadline >= before + 29_000_000 && deadline <= now_us() + 31_000_000, "deadline {deadline}, now {}", now_us());
    let human = l.root(&["status"]).expect(0).stdout;
    assert!(human.contains(&format!("PendingConfirm: revision {rev}, rolled back at ")), "{human}");
    // Another change waits for this one.
    let r = l.root(&["policy", "remove", "ssh"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: busy: "), "{}", r.stderr);
    let r = l.root(&["policy", "confirm", &(rev + 1).to_string()]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: nothing to confirm: "), "{}", r.stderr);
    let r = l.root(&["policy", "confirm"]).expect(0);
    assert_eq!(r.stdout, format!("confirmed revision {rev}\n"));
    assert!(l.status()["pending_confirm"].is_null());
    assert_eq!(l.policies(), ["ssh"]);
    let r = l.root(&["policy", "confirm"]).expect(1);
    assert_eq!(r.stderr, "hostfwdctl: nothing to confirm: no policy change is awaiting confirmation\n");

    // Rolled back by hand.
    let web = l.file("web.yaml", &SSH.replace("name: ssh", "name: web"));
    let j = l.root(&["-o", "json", "policy", "apply", &web, "--confirm", "1m"]).expect(0).json();
    let rev = j["revision"].as_u64().unwrap();
    assert_eq!(j["pending_confirm"]["revision"].as_u64(), Some(rev));
    assert_eq!(l.policies(), ["ssh", "web"]);
    let r = l.root(&["policy", "rollback"]).expect(0);
    assert!(r.stdout.starts_with(&format!("rolled back revision {rev}; policy revision is now ")), "{}", r.stdout);
    assert_eq!(l.policies(), ["ssh"]);
    assert!(l.status()["pending_confirm"].is_null());
    let r = l.root(&["policy", "rollback"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: nothing to confirm: "), "{}", r.stderr);

    // Not confirmed in time: rolled back by the daemon.
    l.root(&["policy", "apply", &web, "--confirm", "2s"]).expect(0);
    assert_eq!(l.policies(), ["ssh", "web"]);
    common::wait_until("web rolled back after 2s", Duration::from_secs(15), || l.policies() == ["ssh"]);
    assert!(l.status()["pending_confirm"].is_null());
}

#[test]
fn audit_mode_globally_and_per_link() {
    let l = live();
    let r = l.root(&["audit", "on"]).expect(0);
    assert_eq!(r.stdout, "audit mode on globally\n");
    let st = l.status();
    assert_eq!((st["audit_mode"].as_bool(), st["state"].as_str()), (Some(true), Some("audit")), "{st}");
    let link = l.root(&["-o", "json", "link", "h0"]).expect(0).json();
    assert_eq!(link["audit_mode"], true, "global audit is effective on h0");
    l.root(&["audit", "off"]).expect(0);
    assert_eq!(l.status()["audit_mode"], false);
    assert_eq!(l.root(&["-o", "json", "link", "h0"]).expect(0).json()["audit_mode"], false);

    let r = l.root(&["audit", "on", "--link", "h0"]).expect(0);
    assert_eq!(r.stdout, "audit mode on for h0\n");
    assert_eq!(l.root(&["-o", "json", "link", "h0"]).expect(0).json()["audit_mode"], true);
    assert_eq!(l.status()["audit_mode"], false, "the global mode is untouched");
    let human = l.root(&["links"]).expect(0).stdout;
    let row = human.lines().find(|line| line.split_whitespace().nth(1) == Some("h0")).unwrap();
    assert_eq!(row.split_whitespace().nth(5), Some("yes"), "{human}");
    l.root(&["audit", "off", "--link", "h0"]).expect(0);
    assert_eq!(l.root(&["-o", "json", "link", "h0"]).expect(0).json()["audit_mode"], false);

    let r = l.root(&["audit", "on", "--link", "nosuch0"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: no such link: "), "{}", r.stderr);

    // --persist is passed on (what it keeps is the daemon's business).
    let r = l.root(&["audit", "on", "--persist"]).expect(0);
    assert_eq!(r.stdout, "audit mode on globally, kept across restarts\n");
    let j = l.root(&["-o", "json", "audit", "off"]).expect(0).json();
    assert_eq!(j, serde_json::json!({"audit_mode": false, "link": null, "persist": false}));
}

/// Real traffic dropped on h0 reaches `hostfwdctl monitor` (JSON and human)
/// and the counters of `stats`; Ctrl-C and a closed pipe end the monitor.
#[test]
fn monitor_and_stats_see_real_drops() {
    let l = live();
    l.root(&["policy", "apply", &l.file("ssh.yaml", SSH)]).expect(0);
    let target: std::net::SocketAddr = std::net::SocketAddr::new(l.topo.h.v4.into(), 80);
    let knock = || {
        let r = l.topo.peer.tcp_connect(target, Duration::from_millis(200));
        assert!(r.as_ref().err().is_some_and(|e| e.is_timeout()), "port 80 must be dropped, got {r:?}");
    };

    let r = l.root(&["monitor", "--link", "nosuch0"]).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: no such link: "), "{}", r.stderr);

    let json = Monitor::start(&l, &["-o", "json", "monitor", "--link", "h0", "--reason", "policy-denied"]);
    let human = Monitor::start(&l, &["monitor", "--link", "h0"]);
    let first = json.line_while(&knock);
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["reason"], "policy-denied", "{v}");
    assert_eq!(v["link"], "h0", "{v}");
    assert_eq!(v["dir"], "ingress", "{v}");
    assert_eq!(v["dport"], 80, "{v}");
    assert_eq!(v["dst"], "10.77.0.1", "{v}");
    assert_eq!(v["audit"], false, "{v}");
    let text = human.line_while(&knock);
    assert!(text.contains(" ingress h0 DROP policy-denied tcp 10.77.0.2:") && text.contains(" -> 10.77.0.1:80"), "{text}");

    // Ctrl-C: a clean exit.
    assert_eq!(json.interrupt(), Some(0));
    // A reader that goes away: the next event ends the monitor, cleanly.
    assert_eq!(human.close_stdout_and_wait(&knock), Some(0));

    // The same drops in the counters.
    let stats = l.root(&["-o", "json", "stats"]).expect(0).json();
    let row = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "h0" && s["reason"] == "policy-denied" && s["direction"] == "ingress")
        .unwrap_or_else(|| panic!("no policy-denied counter for h0: {stats}"));
    assert!(row["count"].as_u64().unwrap() >= 2, "{row}");
    let human = l.root(&["stats"]).expect(0).stdout;
    let line = human.lines().find(|line| line.contains("h0") && line.contains("policy-denied")).unwrap_or_else(|| panic!("{human}"));
    assert!(line.ends_with(&row["count"].to_string()), "{human}");
}

/// `detach` refuses while the daemon is on the bus (it would attach again).
#[test]
fn detach_refuses_while_the_daemon_runs() {
    let l = live();
    let out = l.topo.host.cmd(hostfwdctl_bin()).args(["--address", l.bus.address(), "detach"]).env("HOSTFWD_BPFFS_ROOT", &l.daemon.bpffs_root).output().unwrap();
    let r = Run::from(out).expect(1);
    assert!(r.stderr.starts_with("hostfwdctl: busy: the daemon is running (it owns org.hostfwd.Firewall1 on the bus at "), "{}", r.stderr);
    assert!(l.daemon.bpffs_root.exists(), "nothing removed");
    assert!(l.root(&["-o", "json", "link", "h0"]).expect(0).json()["attach_mode"].as_str().is_some_and(|m| !m.is_empty()));
}

/// From a terminal, a caller who is not root gets a polkit text agent
/// (pkttyagent) for the call; nobody is still refused (polkit has no one to
/// authenticate as), at once, and the agent is gone afterwards.
#[test]
fn from_a_terminal_the_agent_comes_and_goes() {
    let l = live();
    // The shell `script` starts runs as nobody without root's capabilities:
    // it needs a copy it may reach (the checkout may sit below a directory
    // only root can enter, as in `mktemp -d`).
    let bin = l.bus.dir().join("hostfwdctl");
    std::fs::copy(hostfwdctl_bin(), &bin).expect("copy hostfwdctl next to the bus");
    let line = format!("{} audit on; echo exit=$?", bin.display());
    // `script` gives the command a pseudo-terminal.
    let mut cmd = l.bus.command(Caller::Nobody, "timeout");
    cmd.args(["30", "script", "-qec", &line, "/dev/null"]);
    let started = std::time::Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "timed out? {:?}: {text}", out.status);
    assert!(text.contains("hostfwdctl: access denied") && text.contains("exit=4"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let left = Command::new("pgrep").args(["-u", "65534", "-x", "pkttyagent"]).output().unwrap();
    assert!(left.stdout.is_empty(), "pkttyagent left running: {}", String::from_utf8_lossy(&left.stdout));
    assert_eq!(l.status()["audit_mode"], false);
}

/// The daemon going away ends a monitor with "not reachable" (3).
#[test]
fn monitor_ends_when_the_daemon_stops() {
    let l = live();
    let mut child = l.bus.command(Caller::Root, hostfwdctl_bin()).args(["monitor"]).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Give it the time to open the stream (a monitor that comes too late
    // finds no daemon: also 3).
    std::thread::sleep(Duration::from_millis(1000));
    assert!(child.try_wait().unwrap().is_none(), "monitor exited early");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(l.daemon.pid() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < end, "monitor still running after the daemon stopped");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert_eq!(err, "hostfwdctl: the daemon closed the monitor stream\n");
}

/// A running `hostfwdctl monitor` whose lines a thread collects.
struct Monitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    fn start(l: &Live, args: &[&str]) -> Monitor {
        let mut child = l.bus.command(Caller::Root, hostfwdctl_bin()).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    /// The first line, doing `f` (traffic) until one comes.
    fn line_while(&self, f: &dyn Fn()) -> String {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end {
            f();
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
                return line;
            }
        }
        panic!("no event reached the monitor");
    }

    fn wait(mut self, within: Duration) -> Option<i32> {
        let end = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if std::time::Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn interrupt(self) -> Option<i32> {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT);
        self.wait(Duration::from_secs(5))
    }

    /// Drops the reading end of stdout, then makes events until it exits.
    fn close_stdout_and_wait(self, f: &dyn Fn()) -> Option<i32> {
        let Monitor { mut child, lines } = self;
        // The reader thread ends when it can no longer send.
        drop(lines);
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            f();
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

// ---------------------------------------------------------------------------
// A private bus with nothing on it (the daemon's own test bus is in
// hostfwd_tests::bus).

struct PrivateBus {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bus");
        let conf = write(
            dir.path(),
            "bus.conf",
            &format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/></policy>\
                 </busconfig>\n",
                sock.display()
            ),
        );
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            // It warns that it cannot raise its fd limit; nothing to see.
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon)");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("bus address");
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {address:?}");
        common::wait_until("bus socket", Duration::from_secs(5), || sock.exists());
        PrivateBus { child, address, _dir: dir }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
