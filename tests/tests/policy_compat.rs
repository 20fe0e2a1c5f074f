//! The Cilium compatibility corpus (`tests/policies/cilium-compat/`, its
//! README says the format): host policies shaped like Cilium users' load
//! with exactly the warnings their `#! warn` lines name, give the verdicts
//! of their `#! probe` lines in the compiled map image and in the reference
//! model alike, and are refused whole with `strict_policies = true` when
//! they have any warning. No root needed.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hostfwd_policy::cilium::{self, NodeLabels, Policy, PolicyError};
use hostfwd_policy::entities::EntityContext;
use hostfwd_policy::files::{self, compile_for_node};
use hostfwd_policy::model::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};
use hostfwd_policy::{Direction, Verdict};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/cilium-compat");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("literal")
}

/// The node of the corpus README.
fn context(kube_apiserver: bool) -> EntityContext {
    let host: BTreeSet<IpAddr> = ["192.168.1.201", "fd00:1::201"].iter().map(|a| a.parse().expect("literal")).collect();
    EntityContext {
        host_addrs: host,
        node_cidrs: vec![net("192.168.1.0/24")],
        cluster_cidrs: vec![net("10.0.0.0/8")],
        kube_apiserver: if kube_apiserver { vec![net("10.96.0.1/32"), net("192.168.1.10/32")] } else { Vec::new() },
    }
}

#[derive(Default)]
struct Expect {
    labels: NodeLabels,
    warns: Vec<(String, String)>,
    errors: Vec<(String, String)>,
    unconfigured: Vec<(String, String)>,
    summaries: Vec<String>,
    probes: Vec<Probe>,
}

struct Probe {
    line: String,
    direction: Direction,
    remote: IpAddr,
    proto: u8,
    port: u16,
    verdict: String,
}

/// `PATH: TEXT`.
fn at(rest: &str, line: &str) -> (String, String) {
    let (path, text) = rest.split_once(": ").unwrap_or_else(|| panic!("{line}: expected PATH: TEXT"));
    (path.to_string(), text.to_string())
}

fn expectations(text: &str) -> Expect {
    let mut e = Expect::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("#! ") else { continue };
        let (what, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}: no argument"));
        match what {
            "label" => {
                let (k, v) = rest.split_once('=').unwrap_or_else(|| panic!("{line}: KEY=VALUE"));
                e.labels.insert(k.to_string(), v.to_string());
            }
            "warn" => e.warns.push(at(rest, line)),
            "error" => e.errors.push(at(rest, line)),
            "unconfigured" => e.unconfigured.push(at(rest, line)),
            "summary" => e.summaries.push(rest.to_string()),
            "probe" => e.probes.push(probe(rest, line)),
            other => panic!("{line}: unknown expectation {other:?}"),
        }
    }
    e
}

fn probe(rest: &str, line: &str) -> Probe {
    let f: Vec<&str> = rest.split_whitespace().collect();
    let [dir, addr, pp, verdict] = f[..] else { panic!("{line}: DIR ADDR PROTO/PORT VERDICT") };
    let direction = match dir {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        _ => panic!("{line}: direction {dir:?}"),
    };
    let (p, n) = pp.split_once('/').unwrap_or_else(|| panic!("{line}: PROTO/PORT"));
    let n: u16 = n.parse().unwrap_or_else(|_| panic!("{line}: {n:?} is not a number"));
    let (proto, port) = match p {
        "tcp" => (IPPROTO_TCP, n),
        "udp" => (IPPROTO_UDP, n),
        "sctp" => (IPPROTO_SCTP, n),
        // The datapath's ICMP port is type << 8 | code.
        "icmp" => (IPPROTO_ICMP, n << 8),
        "icmpv6" => (IPPROTO_ICMPV6, n << 8),
        // Protocols without ports are looked up with port 0.
        "ip" => (u8::try_from(n).unwrap_or_else(|_| panic!("{line}: protocol {n}")), 0),
        _ => panic!("{line}: protocol {p:?}"),
    };
    assert!(["allow", "deny", "open"].contains(&verdict), "{line}: verdict {verdict:?}");
    Probe {
        line: line.to_string(),
        direction,
        remote: addr.parse().unwrap_or_else(|_| panic!("{line}: address {addr:?}")),
        proto,
        port,
        verdict: verdict.to_string(),
    }
}

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow(_) => "allow",
        Verdict::Deny(_) | Verdict::NoMatch => "deny",
        Verdict::NotEnforced => "open",
    }
}

fn has(errors: &[PolicyError], path: &str, text: &str) -> bool {
    errors.iter().any(|e| e.path == path && e.message.contains(text))
}

fn show(errors: &[PolicyError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}

fn load(name: &str, text: &str, strict: bool) -> Result<Vec<Policy>, Vec<PolicyError>> {
    cilium::parse_policies_with(name, text, strict)
}

#[test]
fn the_corpus_covers_every_category_of_issue_13() {
    let all: String = corpus().iter().map(|p| std::fs::read_to_string(p).expect("fixture")).collect();
    for needle in [
        "\ndescription:",                // a top-level field beside metadata
        "clusterName:",                  // an unknown metadata field
        "protocol: VRRP",                // extended protocols by name
        "protocol: \"112\"",             // and by number
        "protocol: IGMP",
        "- health",                      // Cilium-managed entities
        "init, unmanaged",
        "[ingress]",
        "fromEndpoints:",                // pods
        "toEndpoints:",
        "fromRequires:",
        "toServices:",
        "[kube-apiserver]",              // an entity by configured addresses
        "fromNodes:",                    // refused until fleet mode
        "toNodes:",
    ] {
        assert!(all.contains(needle), "no fixture has {needle:?}");
    }
}

#[test]
fn cilium_shaped_policies_load_with_their_warnings_and_verdicts() {
    let mut probes = 0;
    for path in corpus() {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("fixture");
        let e = expectations(&text);
        if !e.errors.is_empty() {
            let errors = load(&name, &text, false).expect_err(&format!("{name} must be refused"));
            for (p, t) in &e.errors {
                assert!(has(&errors, p, t), "{name}: no error {p}: {t}; errors:{}", show(&errors));
            }
            assert_eq!(errors.len(), e.errors.len(), "{name}: other errors:{}", show(&errors));
            continue;
        }
        let policies = load(&name, &text, false).unwrap_or_else(|errors| panic!("{name} must load:{}", show(&errors)));
        let warnings: Vec<_> = policies.iter().flat_map(|p| &p.warnings).collect();
        for (p, t) in &e.warns {
            assert!(
                warnings.iter().any(|w| &w.path == p && w.message.contains(t.as_str())),
                "{name}: no warning {p}: {t}; warnings: {warnings:#?}"
            );
        }
        assert_eq!(warnings.len(), e.warns.len(), "{name}: other warnings: {warnings:#?}");

        for (p, t) in &e.unconfigured {
            let Err(files::Error::Invalid(errors)) = compile_for_node(&policies, &context(false), &e.labels) else {
                panic!("{name}: must fail without [entities] kube_apiserver");
            };
            assert!(has(&errors, p, t), "{name}: no error {p}: {t}; errors:{}", show(&errors));
        }

        let ctx = context(true);
        let compiled = compile_for_node(&policies, &ctx, &e.labels).unwrap_or_else(|err| panic!("{name}: {err}"));
        let (rules, _) = cilium::to_rule_set(&policies, &ctx, &e.labels);
        let summaries: Vec<String> = compiled.report.policies.iter().map(|p| p.summary()).collect();
        assert!(compiled.report.policies.iter().all(|p| p.active()), "{name}: inactive: {summaries:#?}");
        for s in &e.summaries {
            assert!(summaries.iter().any(|x| x.contains(s.as_str())), "{name}: no summary with {s:?}: {summaries:#?}");
        }
        for p in &e.probes {
            let image = compiled.image.evaluate(p.remote, p.direction, p.proto, p.port);
            let model = rules.evaluate(p.remote, p.direction, p.proto, p.port);
            assert_eq!(image, model, "{name}: {}: the image and the reference model disagree", p.line);
            assert_eq!(word(image), p.verdict, "{name}: {}: got {image:?}", p.line);
            probes += 1;
        }
    }
    assert!(probes >= 50, "only {probes} probes");
}

#[test]
fn strict_policies_refuse_every_lenient_case() {
    let mut refused = 0;
    for path in corpus() {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("fixture");
        let e = expectations(&text);
        let strict = load(&name, &text, true);
        if e.warns.is_empty() {
            // Nothing lenient: strict changes nothing.
            assert_eq!(strict.is_ok(), e.errors.is_empty(), "{name}");
            continue;
        }
        let errors = strict.expect_err(&format!("{name}: strict_policies = true must refuse it"));
        for (p, t) in &e.warns {
            assert!(
                errors.iter().any(|x| &x.path == p && x.message.contains(t.as_str()) && x.message.ends_with("(refused: strict_policies = true)")),
                "{name}: no strict error {p}: {t}; errors:{}",
                show(&errors)
            );
        }
        assert_eq!(errors.len(), e.warns.len(), "{name}: errors:{}", show(&errors));
        refused += 1;
    }
    assert!(refused >= 5, "only {refused} lenient fixtures");
}
