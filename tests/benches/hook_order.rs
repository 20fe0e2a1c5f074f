//! Cost of the periodic hook-order check (tcx: is hostfwd still first on
//! every hook it holds?) against a baseline measured in the same run: the
//! reconcile pass's own read of the kernel state (`Datapath::actual`) for the
//! same devices. The daemon runs the check every `ORDER_CHECK` when nothing
//! else ran a pass. Run with `cargo bench -p hostfwd-tests --bench
//! hook_order` (root); `HOSTFWD_BENCH_HOOKS=100` picks the device count.

use std::path::PathBuf;
use std::time::Instant;

use hostfwd::datapath::{self, AttachModeChoice, Datapath, Direction};
use hostfwd_tests::{median, NetNs};

const ROUNDS: usize = 50;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let devices: usize = std::env::var("HOSTFWD_BENCH_HOOKS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let ns = NetNs::new().expect("netns");
    let batch: String = (0..devices).map(|i| format!("link add ho{i} type veth peer name hp{i}\n")).collect();
    let file = std::env::temp_dir().join(format!("hf-bench-order-{}", std::process::id()));
    std::fs::write(&file, batch).expect("batch file");
    ns.ip(&["-batch", file.to_str().expect("utf-8 path")]).expect("ip -batch");
    let _ = std::fs::remove_file(&file);
    let root = PathBuf::from(format!("/sys/fs/bpf/hfbench-order-{}", std::process::id()));
    let dp = Datapath::load(&datapath::Config { bpffs_root: root.clone(), attach_mode: AttachModeChoice::Tcx, ..Default::default() }).expect("load");

    let (check, read) = ns
        .run(|| {
            let hooks: Vec<(u32, Direction)> = (0..devices)
                .map(|i| nix::net::if_::if_nametoindex(format!("ho{i}").as_str()).expect("ifindex"))
                .flat_map(|i| Direction::ALL.map(|d| (i, d)))
                .collect();
            for (i, d) in &hooks {
                dp.attach(*i, *d).expect("attach");
            }
            let (mut check, mut read) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let t = Instant::now();
                assert!(dp.first_on_hooks(hooks.iter().copied()), "hostfwd first everywhere");
                check.push(t.elapsed().as_secs_f64() * 1e6);
                let t = Instant::now();
                let a = dp.actual().expect("actual");
                read.push(t.elapsed().as_secs_f64() * 1e6);
                assert_eq!(a.attachments.len(), hooks.len());
            }
            (median(check), median(read))
        })
        .expect("netns");
    let _ = Datapath::remove_pins(&root);

    let hooks = 2 * devices;
    println!("# hook-order check ({devices} devices, {hooks} tcx hooks; kernel {})", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    println!();
    println!("| measure | order check | baseline: reconcile's kernel read | ratio |");
    println!("|---|---:|---:|---:|");
    println!("| all hooks, median µs | {check:.0} | {read:.0} | {:.3}× |", check / read);
    println!("| per hook, median µs | {:.2} | {:.2} | |", check / hooks as f64, read / hooks as f64);
    println!("| CPU share at one check per {} s | {:.4} % | | |", hostfwd::daemon::ORDER_CHECK.as_secs(), check / 1e6 / hostfwd::daemon::ORDER_CHECK.as_secs_f64() * 100.0);
}
