//! Link tracking and reconcile, measured against the real kernel in a test
//! namespace: how long from creating a device until hostfwd's program is
//! attached to it, against a baseline measured in the same run (the same
//! event seen by a bare rtnetlink subscriber); storm convergence of 1,000
//! devices against the time the kernel needs to create them; the daemon's
//! memory idle and with 1,000 devices. Run with
//! `cargo bench -p hostfwd-tests --bench links` (root).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostfwd::links::Change;
use hostfwd::netlink::{Event, Monitor};
use hostfwd_tests::{hostfwd_bin, percentile, wait_for, NetNs};

const SINGLE: usize = 100;
const STORM: usize = 1000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// A bare subscriber in the namespace: when did each `lat*` link appear?
fn subscriber(ns: &NetNs) -> Arc<Mutex<HashMap<String, (Instant, u32)>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let out = Arc::clone(&seen);
    let file = std::fs::File::open(ns.path()).expect("netns file");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut mon = Monitor::open().await.expect("monitor");
            let _ = ready_tx.send(());
            loop {
                match mon.next().await {
                    Ok(Event::Change(Change::Link(l))) if l.name.starts_with("lat") => {
                        out.lock().unwrap().entry(l.name.clone()).or_insert_with(|| (Instant::now(), l.ifindex.get()));
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    });
    ready_rx.recv().expect("subscriber ready");
    seen
}

fn pin(root: &Path, ifindex: u32) -> PathBuf {
    root.join(format!("links/tcx-{ifindex}-ingress"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = hostfwd_bin();
    let ns = NetNs::new().expect("netns");
    let root = PathBuf::from(format!("/sys/fs/bpf/hfbench-links-{}", std::process::id()));
    let mut daemon: Child = ns
        .cmd(&bin)
        .arg("run")
        .env("HOSTFWD_BPFFS_ROOT", &root)
        .env("HOSTFWD_DEVICES", "lat*")
        .env("HOSTFWD_DBUS", "none")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start daemon");
    wait_for(|| root.join("maps/hf_links").exists(), Duration::from_secs(20)).expect("daemon up");
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(daemon.id());
    let seen = subscriber(&ns);

    // One device at a time.
    let (mut attach_ms, mut event_ms) = (Vec::new(), Vec::new());
    for i in 0..SINGLE {
        let name = format!("lat{i}");
        let t0 = Instant::now();
        ns.ip(&["link", "add", &name, "type", "veth", "peer", "name", &format!("lp{i}")]).expect("ip link add");
        // The subscriber tells the ifindex; the pin appears right after the
        // attach.
        wait_for(|| seen.lock().unwrap().contains_key(&name), Duration::from_secs(5)).expect("event");
        let (ev, ifindex) = seen.lock().unwrap()[&name];
        let attached = wait_for(|| pin(&root, ifindex).exists(), Duration::from_secs(5)).expect("attached");
        attach_ms.push((attached - t0).as_secs_f64() * 1e3);
        event_ms.push((ev - t0).as_secs_f64() * 1e3);
    }
    let batch = |verb: &str, from: usize, to: usize| -> String {
        (from..to)
            .map(|i| if verb == "add" { format!("link add lat{i} type veth peer name lp{i}\n") } else { format!("link del lat{i}\n") })
            .collect()
    };
    for i in 0..SINGLE {
        ns.ip(&["link", "del", &format!("lat{i}")]).expect("del");
    }
    wait_for(|| std::fs::read_dir(root.join("links")).map(|d| d.count() == 0).unwrap_or(false), Duration::from_secs(10)).expect("clean");

    // The kernel's own cost of one tcx attach on a fresh device (it waits
    // for an RCU grace period under the RTNL lock), from this process.
    let raw_root = PathBuf::from(format!("/sys/fs/bpf/hfbench-raw-{}", std::process::id()));
    let raw = hostfwd::datapath::Datapath::load(&hostfwd::datapath::Config { bpffs_root: raw_root.clone(), attach_mode: hostfwd::datapath::AttachModeChoice::Tcx, ..Default::default() }).expect("load");
    let mut raw_ms = Vec::new();
    for i in 0..20 {
        let name = format!("raw{i}");
        ns.ip(&["link", "add", &name, "type", "veth", "peer", "name", &format!("rp{i}")]).expect("ip link add");
        let ifindex = ns.ifindex(&name).expect("ifindex");
        let t = ns
            .run(|| {
                let t = Instant::now();
                raw.attach(ifindex, hostfwd::datapath::Direction::Ingress).expect("attach");
                raw.attach(ifindex, hostfwd::datapath::Direction::Egress).expect("attach");
                t.elapsed()
            })
            .expect("netns");
        raw_ms.push(t.as_secs_f64() * 1e3);
        ns.ip(&["link", "del", &name]).expect("del");
    }
    drop(raw);
    let _ = std::fs::remove_dir_all(&raw_root);

    // Storm: 1,000 devices in one `ip -batch`.
    let file = std::env::temp_dir().join(format!("hfbench-{}.batch", std::process::id()));
    std::fs::write(&file, batch("add", 0, STORM)).unwrap();
    let t0 = Instant::now();
    let st = ns.cmd("ip").arg("-batch").arg(&file).status().expect("ip -batch");
    assert!(st.success());
    let created = t0.elapsed();
    let count = || std::fs::read_dir(root.join("links")).map(|d| d.count()).unwrap_or(0);
    let up = wait_for(|| count() == 2 * STORM, Duration::from_secs(120)).expect("storm converged") - t0;
    std::thread::sleep(Duration::from_millis(500));
    let loaded = rss_kib(daemon.id());
    std::fs::write(&file, batch("del", 0, STORM)).unwrap();
    let t1 = Instant::now();
    let st = ns.cmd("ip").arg("-batch").arg(&file).status().expect("ip -batch");
    assert!(st.success());
    let deleted = t1.elapsed();
    let down = wait_for(|| count() == 0, Duration::from_secs(120)).expect("storm down") - t1;
    let _ = std::fs::remove_file(&file);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&root);

    let (am, ap) = (percentile(attach_ms.clone(), 0.5), percentile(attach_ms, 0.99));
    let (em, ep) = (percentile(event_ms.clone(), 0.5), percentile(event_ms, 0.99));
    println!("# link tracking ({SINGLE} single devices, storm of {STORM}; kernel {})", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    println!();
    println!("| measure | hostfwd | baseline | ratio |");
    println!("|---|---:|---:|---:|");
    println!("| device created → attached, median ms | {am:.1} | {em:.1} (netlink event seen) | {:.2}× |", am / em);
    println!("| device created → attached, p99 ms | {ap:.1} | {ep:.1} | {:.2}× |", ap / ep);
    println!("| ingress + egress tcx attach alone (kernel), median ms | | {:.1} | |", percentile(raw_ms, 0.5));
    println!("| storm: {STORM} veth pairs created → all attached, ms | {:.0} | {:.0} (`ip -batch` itself) | {:.2}× |", up.as_secs_f64() * 1e3, created.as_secs_f64() * 1e3, up.as_secs_f64() / created.as_secs_f64());
    println!("| storm: deleted → all detached, ms | {:.0} | {:.0} | {:.2}× |", down.as_secs_f64() * 1e3, deleted.as_secs_f64() * 1e3, down.as_secs_f64() / deleted.as_secs_f64());
    println!("| daemon RSS, MiB: idle / with {} links | {:.1} / {:.1} | | {:.2}× |", 2 * STORM + 1, idle as f64 / 1024.0, loaded as f64 / 1024.0, loaded as f64 / idle.max(1) as f64);
}
