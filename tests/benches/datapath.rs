//! Per-packet cost of the datapath, measured by the kernel itself
//! (BPF_PROG_TEST_RUN reports the average time per run). Every figure is
//! reported next to a baseline measured in the same run: the empty tc
//! program. Run with `cargo bench -p hostfwd-tests --bench datapath`
//! (as root); `HOSTFWD_BENCH_RULES=10,10000` picks the rule counts. The
//! figures in BENCHMARKS.md are this output.
//!
//! New flows cannot be repeated (the first run creates the entry the next
//! one hits), so they are measured as single runs of many distinct frames
//! (one source port each), against the empty program run the same way on
//! the same frames: both then carry the single run's timing overhead and
//! cold caches. The maps have the default configuration's sizes, with the
//! policy maps raised to hold 100,000 rules in both generations.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostfwd::datapath::{self, AttachModeChoice, Datapath, Direction, GlobalSettings};
use hostfwd::policy::compiler::compile;
use hostfwd::policy::model::{Action, CidrSet, L4Proto, PortMatch, Rule, RuleSet};
use hostfwd_bpf::layout as l;
use hostfwd_tests::{median, Frame, TcpFlags};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 5;

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

struct Empty {
    skel: hostfwd_bpf::empty_skel::EmptySkel<'static>,
}

impl Empty {
    fn load() -> Empty {
        let storage = Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
        let open = hostfwd_bpf::empty_skel::EmptySkelBuilder::default().open(storage).expect("open empty");
        Empty { skel: open.load().expect("load empty") }
    }

    fn run(&self, frame: &[u8], repeat: u32) -> Duration {
        let input = libbpf_rs::ProgramInput { data_in: Some(frame), repeat, ..Default::default() };
        self.skel.progs.hf_empty.test_run(input).expect("test run empty").duration
    }
}

fn rules(cidrs: usize) -> Vec<Rule> {
    let mut v: Vec<Rule> = (0..cidrs as u32)
        .map(|i| {
            // Distinct /32s spread over 10.0.0.0/8, TCP/443 each.
            let a = Ipv4Addr::from(0x0a00_0000 | (i * 7 + 1));
            Rule {
                id: i + 1,
                direction: Direction::Ingress,
                action: Action::Allow,
                peers: vec![CidrSet::cidr(ipnet::IpNet::new(IpAddr::V4(a), 32).unwrap())],
                ports: vec![PortMatch::l4(L4Proto::Tcp, 443, None)],
            }
        })
        .collect();
    // 100 port ranges for the remote's /24.
    for r in 0..100u32 {
        let first = 2000 + r as u16 * 100;
        v.push(Rule {
            id: 1_000_000 + r,
            direction: Direction::Ingress,
            action: if r % 10 == 9 { Action::Deny } else { Action::Allow },
            peers: vec![CidrSet::cidr("10.0.0.0/24".parse().unwrap())],
            ports: vec![PortMatch::l4(L4Proto::Tcp, first, Some(first + 57))],
        });
    }
    v
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

/// The default configuration's datapath settings, under `root`, with
/// `overrides` (`HOSTFWD_MAPS__RULES`, …).
fn default_config(root: &std::path::Path, overrides: &[(&str, &str)]) -> datapath::Config {
    let env = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    use hostfwd::config::DatapathConfig as _;
    let mut cfg = hostfwd::config::Config::load_with_env(None, env).expect("default configuration").datapath().expect("datapath configuration");
    cfg.bpffs_root = root.to_path_buf();
    cfg.attach_mode = AttachModeChoice::Auto;
    cfg
}

/// Kernel memory of the maps of the default configuration, as loaded.
fn default_memory() {
    let root = PathBuf::from(format!("/sys/fs/bpf/hfbench-mem-{}", std::process::id()));
    let dp = Datapath::load(&default_config(&root, &[])).expect("load datapath (default configuration)");
    let maps = dp.map_memory().expect("map memory");
    drop(dp);
    let _ = Datapath::remove_pins(&root);
    let total: u64 = maps.iter().map(|m| m.memlock).sum();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("map memory of the default configuration (fdinfo memlock, {cpus} CPUs): {:.1} MiB", total as f64 / (1 << 20) as f64);
    for m in &maps {
        println!("  {} {} entries: {:.2} MiB", m.map, m.max_entries, m.memlock as f64 / (1 << 20) as f64);
    }
    println!();
}

fn fixture() -> Fixture {
    let root = PathBuf::from(format!("/sys/fs/bpf/hfbench-{}", std::process::id()));
    let cfg = default_config(&root, &[("HOSTFWD_MAPS__IDENTITIES_V4", "262144"), ("HOSTFWD_MAPS__RULES", "524288")]);
    let dp = Datapath::load(&cfg).expect("load datapath (root? bpffs mounted?)");
    // Events on, as in production: drops pay for the rate limiter.
    dp.set_global(GlobalSettings { audit: false, drop_non_ip: false, events_per_sec: 1000, events_burst: 100 }).unwrap();
    dp.set_link(1, l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS).unwrap();
    dp.add_host_addr("10.0.0.254".parse().unwrap()).unwrap();
    Fixture { dp, root }
}

fn run(dp: &Datapath, frame: &[u8], repeat: u32) -> f64 {
    median((0..ROUNDS).map(|_| ns(dp.test_run(Direction::Ingress, frame, repeat).unwrap().per_run)).collect())
}

/// Distinct frames per single-run measurement.
const SINGLES: u16 = 4000;

/// Medians of single runs of `frames` through hostfwd and through the empty
/// program, interleaved frame by frame (so that both see the same machine),
/// with the expected verdict checked on every run.
fn singles(dp: &Datapath, empty: &Empty, frames: &[Vec<u8>], retval: i32) -> (f64, f64) {
    let (mut hf, mut base) = (Vec::new(), Vec::new());
    for f in frames {
        base.push(ns(empty.run(f, 1)));
        let r = dp.test_run(Direction::Ingress, f, 1).unwrap();
        assert_eq!(r.retval, retval);
        hf.push(ns(r.per_run));
    }
    (median(hf), median(base))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests.
    }
    default_memory();
    let mut f = fixture();
    let empty = Empty::load();
    let host: IpAddr = "10.0.0.254".parse().unwrap();
    // The remote is one of the /32s (i = 4 → 10.0.0.29) and inside the /24.
    let remote: IpAddr = Ipv4Addr::from(0x0a00_0000 | (4 * 7 + 1)).into();
    // Ports above those of the new-flow frames below.
    let syn_ack_flow = Frame::tcp(remote, host, 65002, 443, TcpFlags::SYN).seq(1000, 0).build();
    let synack = Frame::tcp(host, remote, 443, 65002, TcpFlags::SYN_ACK).seq(2000, 1001).build();
    let ack = Frame::tcp(remote, host, 65002, 443, TcpFlags::ACK).seq(1001, 2001).build();
    let denied = Frame::tcp(remote, host, 65003, 9999, TcpFlags::SYN).build();
    // Forwarded: to an address that is not the host's (passes untouched).
    let forwarded = Frame::tcp(remote, "10.0.0.253".parse().unwrap(), 65004, 443, TcpFlags::ACK).build();

    if std::env::var_os("HOSTFWD_BENCH_PROFILE").is_some() {
        profile(&mut f, &empty, remote, host);
        return;
    }
    // Distinct new flows: one source port each.
    let syns = |base_port: u16, dport: u16| -> Vec<Vec<u8>> {
        (0..SINGLES).map(|i| Frame::tcp(remote, host, base_port.wrapping_add(i), dport, TcpFlags::SYN).build()).collect()
    };

    let base = median((0..ROUNDS).map(|_| ns(empty.run(&ack, REPEAT))).collect());
    println!("# datapath per-packet cost (BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {ROUNDS}; new flows: median of {SINGLES} single runs of distinct frames)");
    println!("kernel: {}", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    println!();
    println!("| CIDR rules | compile+apply ms | established ns | denied ns | forwarded ns | empty ns | new allowed SYN ns | allowed SYN (range) ns | denied, single ns | empty, single ns |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    let counts: Vec<usize> = std::env::var("HOSTFWD_BENCH_RULES")
        .map(|v| v.split(',').map(|n| n.trim().parse().expect("HOSTFWD_BENCH_RULES: comma-separated counts")).collect())
        .unwrap_or_else(|_| vec![10, 1_000, 10_000, 100_000]);
    for (round, n) in counts.into_iter().enumerate() {
        let set = RuleSet::new(rules(n));
        let t = Instant::now();
        let image = compile(&set).expect("compile");
        f.dp.apply_policy(&image).expect("apply");
        let apply_ms = t.elapsed().as_secs_f64() * 1e3;
        f.dp.flush_flows().unwrap();

        // Established: after a handshake, every run is a conntrack hit.
        assert_eq!(f.dp.test_run(Direction::Ingress, &syn_ack_flow, 1).unwrap().retval, -1);
        assert_eq!(f.dp.test_run(Direction::Egress, &synack, 1).unwrap().retval, -1);
        assert_eq!(f.dp.test_run(Direction::Ingress, &ack, 1).unwrap().retval, -1);
        assert!(f.dp.conntrack().unwrap().iter().any(|e| e.sport == 65002 && e.state == l::CT_ESTABLISHED), "the ACK is tracked");
        let est = run(&f.dp, &ack, REPEAT);
        // New allowed SYNs: the first packet of a flow pays parse, conntrack
        // miss, host test, failsafe, both policy lookups and the conntrack
        // insert. Ports differ per rule count, so every frame is new.
        let port0 = 1024u16.wrapping_add(round as u16 * 3 * SINGLES);
        let (new_syn, empty1) = singles(&f.dp, &empty, &syns(port0, 443), -1);
        let (range_syn, _) = singles(&f.dp, &empty, &syns(port0.wrapping_add(SINGLES), 2010), -1);
        // Denied: no rule matches port 9999; a drop creates no entry, so
        // every repeat takes the whole path (and pays counter and event budget).
        assert_eq!(f.dp.test_run(Direction::Ingress, &denied, 1).unwrap().retval, 2);
        let den = run(&f.dp, &denied, REPEAT);
        let (den1, _) = singles(&f.dp, &empty, &syns(port0.wrapping_add(2 * SINGLES), 9999), 2);
        assert_eq!(f.dp.test_run(Direction::Ingress, &forwarded, 1).unwrap().retval, -1);
        let fwd = run(&f.dp, &forwarded, REPEAT);
        assert!(f.dp.conntrack().unwrap().iter().all(|e| e.sport != 65003 && e.sport != 65004), "no entry for denied or forwarded");
        f.dp.flush_flows().unwrap();
        println!("| {n} | {apply_ms:.1} | {est:.1} | {den:.1} | {fwd:.1} | {base:.1} | {new_syn:.1} | {range_syn:.1} | {den1:.1} | {empty1:.1} |");
        results.push((n, est, new_syn, range_syn, den, fwd, empty1, den1));
    }
    println!();
    let (_, _, new10, range10, den10, _, _, _) = results[0];
    for (n, est, new_syn, range_syn, den, fwd, empty1, den1) in &results {
        println!(
            "- {n} rules: established / empty = {:.2}x; denied / empty = {:.2}x; forwarded / empty = {:.2}x; new SYN / empty (single runs) = {:.2}x; range SYN / empty (single runs) = {:.2}x; denied / empty (single runs) = {:.2}x; new SYN / same at 10 rules = {:.2}x; range SYN / same at 10 rules = {:.2}x; denied / same at 10 rules = {:.2}x",
            est / base,
            den / base,
            fwd / base,
            new_syn / empty1,
            range_syn / empty1,
            den1 / empty1,
            new_syn / new10,
            range_syn / range10,
            den / den10,
        );
    }
}

/// `HOSTFWD_BENCH_PROFILE=1`: the new-flow SYN alone at 10 rules, for
/// builds of the datapath with an early return after one step (how
/// BENCHMARKS.md's step tables are made). Before the conntrack insert a SYN
/// can be repeated (no entry is made), so each step is measured by repeat
/// and as single runs of distinct frames; verdicts are not checked.
fn profile(f: &mut Fixture, empty: &Empty, remote: IpAddr, host: IpAddr) {
    f.dp.apply_policy(&compile(&RuleSet::new(rules(10))).expect("compile")).expect("apply");
    f.dp.flush_flows().unwrap();
    let syn = Frame::tcp(remote, host, 65010, 443, TcpFlags::SYN).build();
    let frames: Vec<Vec<u8>> = (0..SINGLES).map(|i| Frame::tcp(remote, host, 1024 + i, 443, TcpFlags::SYN).build()).collect();
    let (mut hf, mut base) = (Vec::new(), Vec::new());
    for fr in &frames {
        base.push(ns(empty.run(fr, 1)));
        hf.push(ns(f.dp.test_run(Direction::Ingress, fr, 1).unwrap().per_run));
    }
    let rep = run(&f.dp, &syn, REPEAT);
    let empty_rep = median((0..ROUNDS).map(|_| ns(empty.run(&syn, REPEAT))).collect());
    println!("profile: SYN repeat {rep:.1} ns (empty {empty_rep:.1}); single runs {:.1} ns (empty {:.1})", median(hf), median(base));
}
