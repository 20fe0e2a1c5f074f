//! Cost of a policy change, phase by phase: parse the Cilium YAML files,
//! resolve them for this node (`to_rule_set`), compile the map image,
//! apply it into the real pinned maps (`Datapath::apply_policy`, under a
//! private bpffs root). Run with `cargo bench -p hostfwd-tests --bench
//! policy` (as root); `HOSTFWD_BENCH_POLICY_RULES=10,10000` picks the sizes,
//! `HOSTFWD_BENCH_RUNS` the number of runs (median reported). The figures
//! in BENCHMARKS.md are this output.
//!
//! "N rules" means N Cilium rule entries: items of `ingress`, `ingressDeny`,
//! `egress` and `egressDeny` lists (each becomes one model rule with its own
//! rule id). The policy set is 100-rule documents, ten documents per file,
//! every spec selecting this node, so all N rules are compiled and applied.
//! The mix (per 20 rules): 8 ingress `fromCIDRSet` /24 with a /28 `except`
//! and a TCP port plus a UDP range; 2 ingress `fromCIDR` of three /32s, one
//! port, any protocol; 1 ingress IPv6 `fromCIDR` /64, TCP; 1 ingress ICMP
//! (echo, IPv4 by number and IPv6 by name) from a /24; 1 ingress
//! `fromEntities` (cluster, remote-node or host) with a TCP port; 2
//! `ingressDeny` of a /32 inside an allowed /24 with a TCP range; 3 egress
//! `toCIDRSet` /16 except a /24 to TCP/443 and UDP/53; 1 L3-only
//! `egressDeny` of a /24; 1 egress `toEntities: [world]` to one of five
//! common ports. Documents alternate between `spec` and two `specs`, and
//! between `matchLabels` and `matchExpressions` selectors.
//!
//! Baselines, in the same run: the same pipeline for a 10-rule policy of the
//! same mix (fixed costs), and for the parse phase two readers of the same
//! content that build no policy: `serde_json` parsing the same documents
//! written as JSON into `Value`s, and the YAML event stream alone
//! (`saphyr-parser`, the tokenizer hostfwd's parser is built on).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostfwd::datapath::{self, AttachModeChoice, Datapath, GlobalSettings};
use hostfwd::policy::cilium::{self, EntityContext, NodeLabels};
use hostfwd::policy::compile;
use hostfwd_tests::median;

const RULES_PER_DOC: usize = 100;
const DOCS_PER_FILE: usize = 10;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// The policy set, as a small tree written both as YAML and as JSON.

enum J {
    /// A plain scalar (YAML) / JSON string.
    S(String),
    /// A scalar YAML must quote (ports, `""`); a JSON string too.
    Q(String),
    /// An integer.
    N(i64),
    L(Vec<J>),
    M(Vec<(&'static str, J)>),
}

fn s(v: impl Into<String>) -> J {
    J::S(v.into())
}

fn q(v: impl Into<String>) -> J {
    J::Q(v.into())
}

fn is_collection(j: &J) -> bool {
    matches!(j, J::L(v) if !v.is_empty()) || matches!(j, J::M(v) if !v.is_empty())
}

fn scalar(j: &J) -> String {
    match j {
        J::S(v) => v.clone(),
        J::Q(v) => format!("{v:?}"),
        J::N(n) => n.to_string(),
        J::L(_) => "[]".into(),
        J::M(_) => "{}".into(),
    }
}

/// Block style as kubectl writes it: list items at their key's indent.
fn yaml(out: &mut String, j: &J, indent: usize) {
    match j {
        J::M(entries) => {
            for (k, v) in entries {
                out.push_str(&" ".repeat(indent));
                yaml_entry(out, k, v, indent);
            }
        }
        J::L(items) => {
            for item in items {
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                match item {
                    J::M(entries) if !entries.is_empty() => {
                        for (i, (k, v)) in entries.iter().enumerate() {
                            if i > 0 {
                                out.push_str(&" ".repeat(indent + 2));
                            }
                            yaml_entry(out, k, v, indent + 2);
                        }
                    }
                    other => {
                        out.push_str(&scalar(other));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn yaml_entry(out: &mut String, k: &str, v: &J, indent: usize) {
    out.push_str(k);
    out.push(':');
    if is_collection(v) {
        out.push('\n');
        // Lists under a key at the key's indent; mappings one level deeper.
        let inner = if matches!(v, J::L(_)) {
            indent
        } else {
            indent + 2
        };
        yaml(out, v, inner);
    } else {
        out.push(' ');
        out.push_str(&scalar(v));
        out.push('\n');
    }
}

fn json(j: &J) -> serde_json::Value {
    use serde_json::Value;
    match j {
        J::S(v) | J::Q(v) => Value::String(v.clone()),
        J::N(n) => Value::from(*n),
        J::L(v) => Value::Array(v.iter().map(json).collect()),
        J::M(v) => Value::Object(v.iter().map(|(k, v)| (k.to_string(), json(v))).collect()),
    }
}

fn v4(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(n)
}

fn port(p: u32) -> J {
    q((1024 + p % 60000).to_string())
}

fn ports(list: Vec<J>) -> J {
    J::L(vec![J::M(vec![("ports", J::L(list))])])
}

fn tcp(p: J) -> J {
    J::M(vec![("port", p), ("protocol", s("TCP"))])
}

/// Rule `i` of the set: (section, rule). The kind cycles through the mix
/// (module docs) in the order `i * 7 mod 20`, so every prefix of the set
/// has most kinds.
fn rule(i: usize) -> (&'static str, J) {
    let n = i as u32;
    // Ingress peers: a distinct /24 per rule in 100.64.0.0/10 (outside the
    // cluster), egress ones a /16 in 172.16.0.0/12 and 198.18.0.0/15.
    let net24 = 0x6440_0000 + (n << 8);
    match (i * 7) % 20 {
        0..=7 => (
            "ingress",
            J::M(vec![
                (
                    "fromCIDRSet",
                    J::L(vec![J::M(vec![
                        ("cidr", s(format!("{}/24", v4(net24)))),
                        ("except", J::L(vec![s(format!("{}/28", v4(net24 + 0xf0)))])),
                    ])]),
                ),
                (
                    "toPorts",
                    ports(vec![
                        tcp(port(n)),
                        J::M(vec![
                            ("port", port(n + 7)),
                            ("endPort", J::N((1024 + (n + 7) % 60000 + 15) as i64)),
                            ("protocol", s("UDP")),
                        ]),
                    ]),
                ),
            ]),
        ),
        8 | 9 => (
            "ingress",
            J::M(vec![
                (
                    "fromCIDR",
                    J::L(
                        (1..=3)
                            .map(|h| s(format!("{}/32", v4(net24 + h * 17))))
                            .collect(),
                    ),
                ),
                ("toPorts", ports(vec![J::M(vec![("port", port(n))])])),
            ]),
        ),
        10 => (
            "ingress",
            J::M(vec![
                (
                    "fromCIDR",
                    J::L(vec![s(format!(
                        "{}/64",
                        Ipv6Addr::from(
                            0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | (u128::from(n) << 64)
                        )
                    ))]),
                ),
                ("toPorts", ports(vec![tcp(port(n))])),
            ]),
        ),
        11 => (
            "ingress",
            J::M(vec![
                ("fromCIDR", J::L(vec![s(format!("{}/24", v4(net24)))])),
                (
                    "icmps",
                    J::L(vec![J::M(vec![(
                        "fields",
                        J::L(vec![
                            J::M(vec![("type", J::N(8)), ("family", s("IPv4"))]),
                            J::M(vec![("type", s("EchoRequest")), ("family", s("IPv6"))]),
                        ]),
                    )])]),
                ),
            ]),
        ),
        12 => (
            "ingress",
            J::M(vec![
                (
                    "fromEntities",
                    J::L(vec![s(["cluster", "remote-node", "host"][i % 3])]),
                ),
                ("toPorts", ports(vec![tcp(port(n))])),
            ]),
        ),
        // A host of the previous rule's /24, which is an allowed one: rules
        // i * 7 mod 20 = 13, 14 follow 6, 7.
        13 | 14 => (
            "ingressDeny",
            J::M(vec![
                (
                    "fromCIDR",
                    J::L(vec![s(format!("{}/32", v4(net24 - 0x100 + 0x42)))]),
                ),
                (
                    "toPorts",
                    ports(vec![J::M(vec![
                        ("port", port(n)),
                        ("endPort", J::N((1024 + n % 60000 + 99) as i64)),
                        ("protocol", s("TCP")),
                    ])]),
                ),
            ]),
        ),
        15..=17 => {
            let base = if n & 1 == 0 { 0xac10_0000 } else { 0xc612_0000 };
            let net16 = base + ((n / 2 % 16) << 16);
            (
                "egress",
                J::M(vec![
                    (
                        "toCIDRSet",
                        J::L(vec![J::M(vec![
                            ("cidr", s(format!("{}/16", v4(net16)))),
                            (
                                "except",
                                J::L(vec![s(format!("{}/24", v4(net16 + ((n % 256) << 8))))]),
                            ),
                        ])]),
                    ),
                    (
                        "toPorts",
                        ports(vec![
                            tcp(q("443")),
                            J::M(vec![("port", q("53")), ("protocol", s("UDP"))]),
                        ]),
                    ),
                ]),
            )
        }
        18 => (
            "egressDeny",
            J::M(vec![(
                "toCIDR",
                J::L(vec![s(format!("{}/24", v4(0xcb00_7100 + ((n % 64) << 8))))]),
            )]),
        ),
        _ => {
            let (p, proto) = [
                ("443", "TCP"),
                ("80", "TCP"),
                ("123", "UDP"),
                ("53", "UDP"),
                ("853", "TCP"),
            ][i % 5];
            (
                "egress",
                J::M(vec![
                    ("toEntities", J::L(vec![s("world")])),
                    (
                        "toPorts",
                        ports(vec![J::M(vec![("port", q(p)), ("protocol", s(proto))])]),
                    ),
                ]),
            )
        }
    }
}

fn spec(doc: usize, first: usize, count: usize) -> J {
    let selector = if doc & 1 == 0 {
        J::M(vec![("matchLabels", J::M(vec![("node-access", s("ssh"))]))])
    } else {
        J::M(vec![(
            "matchExpressions",
            J::L(vec![
                J::M(vec![
                    ("key", s("kubernetes.io/os")),
                    ("operator", s("In")),
                    ("values", J::L(vec![s("linux")])),
                ]),
                J::M(vec![
                    ("key", s("maintenance")),
                    ("operator", s("DoesNotExist")),
                ]),
            ]),
        )])
    };
    let mut sections: Vec<(&'static str, Vec<J>)> =
        ["ingress", "ingressDeny", "egress", "egressDeny"]
            .iter()
            .map(|s| (*s, Vec::new()))
            .collect();
    for i in first..first + count {
        let (section, r) = rule(i);
        sections
            .iter_mut()
            .find(|(s, _)| *s == section)
            .expect("section")
            .1
            .push(r);
    }
    let mut fields = vec![
        (
            "description",
            q(format!("bench rules {first}..{}", first + count)),
        ),
        ("nodeSelector", selector),
    ];
    fields.extend(
        sections
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, J::L(v))),
    );
    J::M(fields)
}

fn document(doc: usize, first: usize, count: usize) -> J {
    let mut fields = vec![
        ("apiVersion", s("cilium.io/v2")),
        ("kind", s("CiliumClusterwideNetworkPolicy")),
        (
            "metadata",
            J::M(vec![
                ("name", s(format!("bench-{doc:05}"))),
                (
                    "labels",
                    J::M(vec![("team", s(format!("team-{}", doc % 7)))]),
                ),
            ]),
        ),
    ];
    if doc & 1 == 0 || count < 2 {
        fields.push(("spec", spec(doc, first, count)));
    } else {
        let half = count / 2;
        fields.push((
            "specs",
            J::L(vec![
                spec(doc, first, half),
                spec(doc, first + half, count - half),
            ]),
        ));
    }
    J::M(fields)
}

/// The policy files of an `n`-rule set: (name, YAML, the same as JSON
/// documents).
fn policy_files(n: usize) -> Vec<(String, String, Vec<String>)> {
    let docs: Vec<J> = (0..n.div_ceil(RULES_PER_DOC))
        .map(|d| {
            document(
                d,
                d * RULES_PER_DOC,
                RULES_PER_DOC.min(n - d * RULES_PER_DOC),
            )
        })
        .collect();
    docs.chunks(DOCS_PER_FILE)
        .enumerate()
        .map(|(f, chunk)| {
            let mut text = String::new();
            let mut jsons = Vec::new();
            for d in chunk {
                text.push_str("---\n");
                yaml(&mut text, d, 0);
                jsons.push(serde_json::to_string(&json(d)).expect("json"));
            }
            (format!("policies/bench-{f:03}.yaml"), text, jsons)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The node and the datapath.

fn node() -> (EntityContext, NodeLabels) {
    let ip = |s: &str| -> IpAddr { s.parse().expect("literal") };
    let net = |s: &str| -> ipnet::IpNet { s.parse().expect("literal") };
    let ctx = EntityContext {
        host_addrs: [ip("10.20.1.11"), ip("fd00:20::11")].into_iter().collect(),
        node_cidrs: vec![net("10.20.1.0/24"), net("fd00:20::/64")],
        cluster_cidrs: vec![
            net("10.244.0.0/16"),
            net("10.96.0.0/12"),
            net("fd00:244::/56"),
        ],
        kube_apiserver: Vec::new(),
    };
    let labels = [("node-access", "ssh"), ("kubernetes.io/os", "linux")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (ctx, labels)
}

struct Fixture {
    dp: Datapath,
    root: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.root);
    }
}

fn fixture() -> Fixture {
    let root = PathBuf::from(format!("/sys/fs/bpf/hfbench-policy-{}", std::process::id()));
    let dp = Datapath::load(&datapath::Config {
        bpffs_root: root.clone(),
        attach_mode: AttachModeChoice::Auto,
        ..Default::default()
    })
    .expect("load datapath (root? bpffs mounted?)");
    dp.set_global(GlobalSettings {
        audit: false,
        drop_non_ip: false,
        events_per_sec: 1000,
        events_burst: 100,
    })
    .expect("set global");
    Fixture { dp, root }
}

// ---------------------------------------------------------------------------

#[derive(Default)]
struct Phases {
    parse: Vec<f64>,
    resolve: Vec<f64>,
    compile: Vec<f64>,
    apply: Vec<f64>,
    total: Vec<f64>,
    json: Vec<f64>,
    events: Vec<f64>,
}

struct Figures {
    rules: usize,
    bytes: usize,
    lines: usize,
    files: usize,
    model_rules: usize,
    identities: usize,
    image_rules: usize,
    map_entries: (usize, usize),
    parse: f64,
    resolve: f64,
    compile: f64,
    apply: f64,
    total: f64,
    json: f64,
    events: f64,
}

fn measure(f: &mut Fixture, n: usize, runs: usize) -> Figures {
    let files = policy_files(n);
    let (ctx, labels) = node();
    let mut p = Phases::default();
    let mut last = None;
    for _ in 0..runs {
        // apply_policy waits until the previous swap is 50 ms old (so no
        // packet still reads the generation it clears); keep that wait out
        // of the figures.
        std::thread::sleep(Duration::from_millis(60));
        let t0 = Instant::now();
        let policies = cilium::load_sources(
            files
                .iter()
                .map(|(name, text, _)| (name.as_str(), text.as_str())),
        )
        .unwrap_or_else(|e| panic!("the bench policy must load: {:?}", &e[..e.len().min(3)]));
        let t1 = Instant::now();
        let (rules, report) = cilium::to_rule_set(&policies, &ctx, &labels);
        let t2 = Instant::now();
        let image = compile(&rules).expect("compile");
        let t3 = Instant::now();
        let gen = f.dp.apply_policy(&image).expect("apply");
        let t4 = Instant::now();
        p.parse.push(ms(t1 - t0));
        p.resolve.push(ms(t2 - t1));
        p.compile.push(ms(t3 - t2));
        p.apply.push(ms(t4 - t3));
        p.total.push(ms(t4 - t0));
        assert!(
            report.policies.iter().all(|s| s.active()),
            "every bench policy selects this node"
        );
        assert_eq!(rules.rules.len(), n, "every rule entry is one model rule");
        last = Some((rules, image, gen));

        let t = Instant::now();
        for (_, _, docs) in &files {
            for d in docs {
                std::hint::black_box(serde_json::from_str::<serde_json::Value>(d).expect("json"));
            }
        }
        p.json.push(ms(t.elapsed()));
        let t = Instant::now();
        for (_, text, _) in &files {
            let mut parser = saphyr_parser::Parser::new_from_str(text);
            while let Some(ev) = parser.next_event() {
                std::hint::black_box(ev.expect("yaml"));
            }
        }
        p.events.push(ms(t.elapsed()));
    }
    let (rules, image, gen) = last.expect("at least one run");
    Figures {
        rules: n,
        bytes: files.iter().map(|(_, t, _)| t.len()).sum(),
        lines: files.iter().map(|(_, t, _)| t.lines().count()).sum(),
        files: files.len(),
        model_rules: rules.rules.len(),
        identities: image.identities.len(),
        image_rules: image.rules.len(),
        map_entries: f.dp.policy_entries(gen),
        parse: median(p.parse),
        resolve: median(p.resolve),
        compile: median(p.compile),
        apply: median(p.apply),
        total: median(p.total),
        json: median(p.json),
        events: median(p.events),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests.
    }
    let counts: Vec<usize> = std::env::var("HOSTFWD_BENCH_POLICY_RULES")
        .map(|v| {
            v.split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .expect("HOSTFWD_BENCH_POLICY_RULES: comma-separated counts")
                })
                .collect()
        })
        .unwrap_or_else(|_| vec![10, 1_000, 10_000]);
    let runs: usize = std::env::var("HOSTFWD_BENCH_RUNS")
        .map(|v| v.parse().expect("HOSTFWD_BENCH_RUNS: a number"))
        .unwrap_or(11);
    let mut f = fixture();
    println!("# policy pipeline: parse + resolve + compile + apply (median of {runs} runs)");
    println!(
        "kernel: {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!();
    println!("| rules | files | YAML KiB | lines | identities | image rules | map entries (ident / rule) | parse ms | resolve ms | compile ms | apply ms | total ms | JSON parse ms | YAML events ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    for n in counts {
        let r = measure(&mut f, n, runs);
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} / {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} |",
            r.rules,
            r.files,
            r.bytes as f64 / 1024.0,
            r.lines,
            r.identities,
            r.image_rules,
            r.map_entries.0,
            r.map_entries.1,
            r.parse,
            r.resolve,
            r.compile,
            r.apply,
            r.total,
            r.json,
            r.events
        );
        assert_eq!(r.model_rules, r.rules);
        results.push(r);
    }
    println!();
    let base = &results[0];
    for r in &results {
        println!(
            "- {} rules: total {:.1} ms{}; total / {}-rule total = {:.1}x; per rule {:.1} µs; parse / JSON parse = {:.2}x; parse / YAML events = {:.2}x; phase shares: parse {:.0}%, resolve {:.0}%, compile {:.0}%, apply {:.0}%",
            r.rules,
            r.total,
            match (r.rules, r.total <= 250.0) {
                (10_000, true) => " (target ≤ 250 ms: met)",
                (10_000, false) => " (target ≤ 250 ms: missed)",
                _ => "",
            },
            base.rules,
            r.total / base.total,
            r.total * 1e3 / r.rules as f64,
            r.parse / r.json,
            r.parse / r.events,
            100.0 * r.parse / r.total,
            100.0 * r.resolve / r.total,
            100.0 * r.compile / r.total,
            100.0 * r.apply / r.total,
        );
    }
}
