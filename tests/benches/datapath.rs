//! Per-packet cost of the datapath, measured by the kernel itself
//! (BPF_PROG_TEST_RUN reports the average time per run). Every figure is
//! reported next to a baseline measured in the same run: the empty tc
//! program. Run with `cargo bench -p hostfwd-tests --bench datapath`
//! (as root); `HOSTFWD_BENCH_RULES=10,10000` picks the rule counts. The
//! figures in BENCHMARKS.md are this output.

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

fn fixture() -> Fixture {
    let root = PathBuf::from(format!("/sys/fs/bpf/hfbench-{}", std::process::id()));
    let dp = Datapath::load(&datapath::Config { bpffs_root: root.clone(), attach_mode: AttachModeChoice::Auto }).expect("load datapath (root? bpffs mounted?)");
    // Events on, as in production: drops pay for the rate limiter.
    dp.set_global(GlobalSettings { audit: false, drop_non_ip: false, events_per_sec: 1000, events_burst: 100 }).unwrap();
    dp.set_link(1, l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS).unwrap();
    dp.add_host_addr("10.0.0.254".parse().unwrap()).unwrap();
    Fixture { dp, root }
}

fn run(dp: &Datapath, frame: &[u8], repeat: u32) -> f64 {
    median((0..ROUNDS).map(|_| ns(dp.test_run(Direction::Ingress, frame, repeat).unwrap().per_run)).collect())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list of tests.
    }
    let mut f = fixture();
    let empty = Empty::load();
    let host: IpAddr = "10.0.0.254".parse().unwrap();
    // The remote is one of the /32s (i = 4 → 10.0.0.29) and inside the /24.
    let remote: IpAddr = Ipv4Addr::from(0x0a00_0000 | (4 * 7 + 1)).into();
    let syn_443 = Frame::tcp(remote, host, 40000, 443, TcpFlags::SYN).build();
    let syn_range = Frame::tcp(remote, host, 40001, 2010, TcpFlags::SYN).build();
    let ack = Frame::tcp(remote, host, 40002, 443, TcpFlags::ACK).build();
    let denied = Frame::tcp(remote, host, 40003, 9999, TcpFlags::SYN).build();
    // Forwarded: to an address that is not the host's (passes untouched).
    let forwarded = Frame::tcp(remote, "10.0.0.253".parse().unwrap(), 40004, 443, TcpFlags::ACK).build();

    let base = median((0..ROUNDS).map(|_| ns(empty.run(&ack, REPEAT))).collect());
    println!("# datapath per-packet cost (BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {ROUNDS})");
    println!("kernel: {}", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    println!();
    println!("| CIDR rules | compile+apply ms | established ns | new allowed SYN ns | allowed SYN (range) ns | denied ns | forwarded ns | empty ns |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    let counts: Vec<usize> = std::env::var("HOSTFWD_BENCH_RULES")
        .map(|v| v.split(',').map(|n| n.trim().parse().expect("HOSTFWD_BENCH_RULES: comma-separated counts")).collect())
        .unwrap_or_else(|_| vec![10, 1_000, 10_000, 100_000]);
    for n in counts {
        let set = RuleSet::new(rules(n));
        let t = Instant::now();
        let image = compile(&set).expect("compile");
        f.dp.apply_policy(&image).expect("apply");
        let apply_ms = t.elapsed().as_secs_f64() * 1e3;
        f.dp.flush_flows().unwrap();

        // Established: the flow exists, every run is a conntrack hit.
        assert_eq!(f.dp.test_run(Direction::Ingress, &ack, 1).unwrap().retval, -1);
        assert!(f.dp.conntrack().unwrap().iter().any(|e| e.sport == 40002 && e.state == l::CT_ESTABLISHED), "the ACK is tracked");
        let est = run(&f.dp, &ack, REPEAT);
        // New allowed SYN: the first packet of a flow pays parse, conntrack
        // miss, failsafe, both policy lookups and the conntrack insert. A repeat
        // would hit the new entry, so each sample is one run on an empty
        // table (the baseline is measured the same way below).
        let mut samples = Vec::new();
        for _ in 0..2000 {
            f.dp.flush_flows().unwrap();
            samples.push(ns(f.dp.test_run(Direction::Ingress, &syn_443, 1).unwrap().per_run));
        }
        let new_syn = median(samples);
        f.dp.flush_flows().unwrap();
        let mut samples = Vec::new();
        for _ in 0..2000 {
            f.dp.flush_flows().unwrap();
            samples.push(ns(f.dp.test_run(Direction::Ingress, &syn_range, 1).unwrap().per_run));
        }
        let range_syn = median(samples);
        // Denied: no rule matches port 9999; a drop creates no entry, so
        // every run takes the whole path (and pays counter and event budget).
        assert_eq!(f.dp.test_run(Direction::Ingress, &denied, 1).unwrap().retval, 2);
        let den = run(&f.dp, &denied, REPEAT);
        assert_eq!(f.dp.test_run(Direction::Ingress, &forwarded, 1).unwrap().retval, -1);
        let fwd = run(&f.dp, &forwarded, REPEAT);
        assert!(f.dp.conntrack().unwrap().iter().all(|e| e.sport != 40003 && e.sport != 40004), "no entry for denied or forwarded");
        let empty1 = median((0..2000).map(|_| ns(empty.run(&ack, 1))).collect());
        println!("| {n} | {apply_ms:.1} | {est:.1} | {new_syn:.1} | {range_syn:.1} | {den:.1} | {fwd:.1} | {base:.1} (single run: {empty1:.1}) |");
        results.push((n, est, new_syn, range_syn, den, fwd, empty1));
    }
    println!();
    let (_, _, new10, range10, den10, _, _) = results[0];
    for (n, est, new_syn, range_syn, den, fwd, empty1) in &results {
        println!(
            "- {n} rules: established / empty = {:.2}x; forwarded / empty = {:.2}x; new SYN / new SYN at 10 rules = {:.2}x; range SYN / same at 10 rules = {:.2}x; denied / denied at 10 rules = {:.2}x; new SYN / empty (single run) = {:.2}x",
            est / base,
            fwd / base,
            new_syn / new10,
            range_syn / range10,
            den / den10,
            new_syn / empty1
        );
    }
}
