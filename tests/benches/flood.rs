//! Whether unprivileged callers can slow the firewall down: the time from
//! creating a device until hostfwd's program is attached to it, with the
//! daemon idle and during a flood of the open methods that cost work
//! (`ValidatePolicy` of a 4,000-rule document and `GetStatistics`, 8 calls
//! at a time each, from uid 65534), as a ratio. The daemon runs on a
//! private bus with polkitd (`hostfwd_tests::bus`), as in the D-Bus tests.
//! Run with `cargo bench -p hostfwd-tests --bench flood` (root);
//! `HOSTFWD_BENCH_RUNS` devices per phase (default 40).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hostfwd_tests::bus::{Caller, TestBus};
use hostfwd_tests::{median, percentile, wait_for, NetNs};

/// Device created → its ingress tcx link pinned, in ms, `runs` times.
fn attach_ms(ns: &NetNs, root: &Path, tag: &str, runs: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..runs {
        let name = format!("lat{tag}{i}");
        let t0 = Instant::now();
        ns.ip(&[
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("lp{tag}{i}"),
        ])
        .expect("ip link add");
        let ifindex = ns.ifindex(&name).expect("ifindex");
        let pin = root.join(format!("links/tcx-{ifindex}-ingress"));
        let attached = wait_for(|| pin.exists(), Duration::from_secs(30)).expect("attached");
        out.push((attached - t0).as_secs_f64() * 1e3);
        ns.ip(&["link", "del", &name]).expect("ip link del");
    }
    out
}

/// CPU seconds (user + system) of each thread of `pid`, by thread name.
fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let tick = 100.0; // USER_HZ
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state …`: comm may hold spaces; fields after it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let secs = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        *out.entry(comm).or_insert(0.0) += secs / tick;
    }
    out
}

fn flood(bus: &TestBus, buscall: &Path, method: &str, file: &str) -> Child {
    bus.command(Caller::Nobody, buscall)
        .args([method, file, "100000000", "8"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("buscall")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("HOSTFWD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let bus = TestBus::start().expect("test bus");
    let ns = NetNs::new().expect("netns");
    let daemon = bus
        .start_daemon(&ns, "lat*", &[("RUST_LOG", "error")])
        .expect("daemon");
    let root = daemon.bpffs_root.clone();
    let buscall = bus.dir().join("buscall");
    std::fs::copy(env!("CARGO_BIN_EXE_buscall"), &buscall).expect("copy buscall");
    let items: String = (0..4000).map(|i| format!("  - fromCIDR: [10.{}.{}.0/24]\n    toPorts: [{{ports: [{{port: \"{}\", protocol: TCP}}]}}]\n", i >> 8 & 0xff, i & 0xff, 1000 + i)).collect();
    let doc = format!("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: big\nspec:\n  nodeSelector: {{}}\n  ingress:\n{items}");
    let doc_file = bus.dir().join("flood.yaml");
    std::fs::write(&doc_file, &doc).expect("write the document");

    // Warm up, then idle.
    attach_ms(&ns, &root, "w", 5);
    let idle = attach_ms(&ns, &root, "i", runs);

    let mut floods = vec![
        flood(
            &bus,
            &buscall,
            "ValidatePolicy",
            &doc_file.display().to_string(),
        ),
        flood(&bus, &buscall, "GetStatistics", "-"),
    ];
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, t0) = (cpu_by_thread(daemon.pid()), Instant::now());
    let busy = attach_ms(&ns, &root, "f", runs);
    let (cpu1, wall) = (cpu_by_thread(daemon.pid()), t0.elapsed().as_secs_f64());
    for f in &mut floods {
        let _ = f.kill();
        let _ = f.wait();
    }
    drop(daemon);

    let (im, ip) = (median(idle.clone()), percentile(idle, 0.99));
    let (fm, fp) = (median(busy.clone()), percentile(busy, 0.99));
    println!("# device created → attached, idle vs a flood of open calls from uid 65534 ({runs} devices each; kernel {})", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    println!();
    println!("| measure | idle | flood | flood / idle |");
    println!("|---|---:|---:|---:|");
    println!("| median ms | {im:.1} | {fm:.1} | {:.2}× |", fm / im);
    println!("| p99 ms | {ip:.1} | {fp:.1} | {:.2}× |", fp / ip);
    println!();
    println!("The daemon's CPU during the flood phase ({wall:.1} s), by thread, % of one core:");
    println!();
    for (name, after) in &cpu1 {
        let used = after - cpu0.get(name).copied().unwrap_or(0.0);
        if used > 0.0 {
            println!("- {name}: {:.0} %", 100.0 * used / wall);
        }
    }
}
