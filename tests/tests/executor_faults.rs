//! The executor under failure, on the real kernel: a namespace with veth
//! lower devices and VLAN subinterfaces, a real datapath, the link table read
//! from netlink, `reconcile::desired/plan` and `execute::execute` driven
//! directly, and kernel operations made to fail through
//! `datapath::FaultyKernel`. After every pass the kernel state (read back
//! from the hooks, pins and maps) must keep the plan's promises:
//!
//! - no attachment on a link without its `hf_links` entry;
//! - no pass opens a VID on a lower device towards a VLAN that no device on
//!   its way (the subinterface, its bridge) guards — attached in both
//!   directions with its entry — and a VID opened in a pass leads to a VLAN
//!   whose addresses, and its bridge's, are in the local maps;
//!
//! and the next pass without failures converges.
//!
//! The kernels of these machines have no 802.1Q (`CONFIG_VLAN_8021Q` is
//! off, without modules; bonds and VLANs are in the VM tests): a macvlan
//! device named `LOWER.VID` on its lower stands in for each VLAN
//! subinterface, and the table read from netlink says it is that VLAN. The
//! executor and the datapath see only ifindexes, hooks and maps, all real.
//!
//! The next pass without failures converges (the plan after it is
//! empty). `HOSTFWD_EXEC_SEED` / `HOSTFWD_EXEC_STEPS` replay or extend the
//! randomized test.

mod common;

use std::collections::BTreeSet;

use common::*;
use hostfwd::datapath::{AttachModeChoice, Datapath, Direction, FaultyKernel, Faults};
use hostfwd::execute::{self, Deps, Outcome};
use hostfwd::links::{Change, Link, LinkKind, Table, Vid};
use hostfwd::reconcile::{self, Action, Actual, Desired, Settings};
use hostfwd::select::{self, receiving_link, SelectConfig};
use hostfwd_bpf::layout as l;
use hostfwd_tests::NetNs;
use ipnet::IpNet;

fn ip(ns: &NetNs, args: &[&str]) {
    ns.ip(args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
}

/// A namespace without IPv6 (no link-local addresses appearing later: the
/// plans of a scenario stay the same from one run to the next).
fn namespace() -> NetNs {
    let ns = NetNs::new().expect("netns");
    for k in ["net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"] {
        ns.sysctl(k, "1").expect("sysctl");
    }
    ns
}

/// A veth pair `name`/`namep` in `ns`, `name` with `addr`, both up.
fn add_lower(ns: &NetNs, name: &str, addr: &str) {
    let peer = format!("{name}p");
    ip(ns, &["link", "add", name, "type", "veth", "peer", "name", &peer]);
    ip(ns, &["addr", "add", addr, "dev", name]);
    ip(ns, &["link", "set", &peer, "up"]);
    ip(ns, &["link", "set", name, "up"]);
}

fn add_vlan(ns: &NetNs, lower: &str, vid: u16, addr: Option<&str>) -> String {
    let name = format!("{lower}.{vid}");
    ip(ns, &["link", "add", "link", lower, "name", &name, "type", "macvlan", "mode", "bridge"]);
    if let Some(a) = addr {
        ip(ns, &["addr", "add", a, "dev", &name]);
    }
    ip(ns, &["link", "set", &name, "up"]);
    name
}

/// The link table as the daemon would read it in `ns`, with every
/// `LOWER.VID` a VLAN subinterface of `LOWER`.
fn table(ns: &NetNs) -> Table {
    let mut t = ns
        .run(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(async { hostfwd::netlink::Netlink::connect().expect("netlink").dump().await.expect("dump") })
        })
        .expect("netns");
    let vlans: Vec<Link> = t
        .iter()
        .filter_map(|x| {
            let (lower, vid) = x.name.split_once('.')?;
            let vid = Vid::new(vid.parse().ok()?)?;
            let lower = t.by_name(lower)?.ifindex;
            Some(Link { kind: LinkKind::Vlan { vid, lower }, ..x.clone() })
        })
        .collect();
    for v in vlans {
        t.apply(Change::Link(v));
    }
    t
}

fn cfg(devices: &[&str], exclude: &[&str]) -> SelectConfig {
    SelectConfig { devices: devices.iter().map(|s| s.to_string()).collect(), exclude: exclude.iter().map(|s| s.to_string()).collect(), vlan_bypass: Vec::new() }
}

fn desired(t: &Table, c: &SelectConfig, dp: &Datapath) -> Desired {
    let dec = select::select(t, c);
    let sets = hostfwd::vlan::allowed(t, &dec, &c.vlan_bypass);
    reconcile::desired(t, &dec, &sets, &Settings { to_front: true, ..Settings::default() }, dp.prog_ids())
}

fn actual(ns: &NetNs, dp: &Datapath) -> Actual {
    ns.run(|| dp.actual().expect("actual")).expect("netns")
}

/// One pass as the daemon makes it: plan against the kernel state, execute
/// through a kernel failing `faults`. Returns the plan, the outcome and the
/// operations that were made to fail.
fn pass(ns: &NetNs, dp: &Datapath, t: &Table, d: &Desired, faults: Faults) -> (Vec<Action>, Outcome, Vec<Action>) {
    ns.run(|| {
        let k = FaultyKernel::new(dp, faults);
        let a = execute::Kernel::actual(&k).expect("actual");
        let p = reconcile::plan(d, &a);
        let out = execute::execute(&k, &p, &Deps::from_table(t));
        (p, out, k.injected())
    })
    .expect("netns")
}

/// Nothing fails: afterwards the kernel is in the desired state.
fn repair(ns: &NetNs, dp: &Datapath, t: &Table, d: &Desired, why: &str) {
    let (_, out, _) = pass(ns, dp, t, d, Faults::default());
    assert!(out.is_clean(), "{why}: repair pass: {out:?}");
    let left = reconcile::plan(d, &actual(ns, dp));
    assert!(left.is_empty(), "{why}: not converged after the repair pass: {left:?}");
}

/// VIDs allowed on a lower device towards a VLAN that no device on its way
/// guards: not the subinterface, nor the bridges it is a port of (each sees
/// the frame on ingress), none attached in both directions with its entry.
fn unguarded(t: &Table, dp: &Datapath, a: &Actual) -> BTreeSet<(u32, u16)> {
    let ours = dp.prog_ids();
    let guarded = |p: u32| {
        a.attachments.get(&(p, Direction::Ingress)) == Some(&ours.0)
            && a.attachments.get(&(p, Direction::Egress)) == Some(&ours.1)
            && a.links.get(&p).is_some_and(|f| f & l::L_ENFORCE_INGRESS != 0)
    };
    let mut out = BTreeSet::new();
    for s in t.iter() {
        let LinkKind::Vlan { vid, lower } = s.kind else { continue };
        let key = (lower.get(), vid.get());
        if !a.vlans.contains(&key) {
            continue;
        }
        let mut way = vec![s.ifindex.get()];
        let mut cur = s;
        while let Some(c) = cur.controller.and_then(|c| t.get(c)).filter(|_| way.len() <= t.len()) {
            way.push(c.ifindex.get());
            cur = c;
        }
        if !way.iter().any(|i| guarded(*i)) {
            out.insert(key);
        }
    }
    out
}

/// The promises, on the kernel state `after` a pass that started from
/// `before` (both read with table `t`). Returns the violations.
///
/// A link event alone can open a path (a port moved into a bridge that is
/// not attached yet): a pass must not open one that was closed before it.
fn violations(t: &Table, dp: &Datapath, before: &Actual, after: &Actual) -> Vec<String> {
    let mut v = Vec::new();
    for (i, dir) in after.attachments.keys() {
        if !after.links.contains_key(i) {
            v.push(format!("{dir:?} attached on {i} without its hf_links entry"));
        }
    }
    let was = unguarded(t, dp, before);
    for (lower, vid) in unguarded(t, dp, after).difference(&was) {
        v.push(format!("VID {vid} opened on {lower} towards a VLAN no device on its way guards"));
    }
    for s in t.iter() {
        let LinkKind::Vlan { vid, lower } = s.kind else { continue };
        let key = (lower.get(), vid.get());
        if !after.vlans.contains(&key) || before.vlans.contains(&key) {
            continue;
        }
        let Some(p) = receiving_link(t, s.ifindex) else { continue };
        let mut addrs: BTreeSet<IpNet> = s.addrs.iter().map(|a| IpNet::from(a.addr())).collect();
        addrs.extend(t.get(p).into_iter().flat_map(|pl| pl.addrs.iter().map(|a| IpNet::from(a.addr()))));
        for a in addrs.iter().filter(|a| !after.local.contains(a)) {
            v.push(format!("VID {vid} opened on {lower} while {a} of {} is not in the local maps", s.name));
        }
    }
    v
}

/// Removes every attachment and entry of this load (the desired state of
/// no links at all).
fn reset(ns: &NetNs, dp: &Datapath) {
    let none = Desired { prog_ids: dp.prog_ids(), to_front: true, ..Desired::default() };
    let (_, out, _) = pass(ns, dp, &Table::new(), &none, Faults::default());
    assert!(out.is_clean(), "reset: {out:?}");
    assert_eq!(actual(ns, dp), Actual::default(), "reset");
}

/// Lower d0 with VLANs 100 and 200, lower d1 with VLAN 300 bridged into
/// br300 (the bridge carries the address).
fn reference(ns: &NetNs) {
    add_lower(ns, "d0", "10.50.0.1/24");
    add_vlan(ns, "d0", 100, Some("10.51.0.1/24"));
    add_vlan(ns, "d0", 200, Some("10.52.0.1/24"));
    add_lower(ns, "d1", "10.60.0.1/24");
    let v = add_vlan(ns, "d1", 300, Some("10.63.0.9/24"));
    ip(ns, &["link", "add", "br300", "type", "bridge"]);
    ip(ns, &["link", "set", &v, "master", "br300"]);
    ip(ns, &["addr", "add", "10.63.0.1/24", "dev", "br300"]);
    ip(ns, &["link", "set", "br300", "up"]);
}

/// Every step of `d`'s plan from `start` failing once, each in turn:
/// `start` is restored by `prepare` before each run.
fn each_step_fails(ns: &NetNs, dp: &Datapath, t: &Table, d: &Desired, prepare: &dyn Fn(), what: &str) -> usize {
    prepare();
    let before = actual(ns, dp);
    let steps = reconcile::plan(d, &before);
    assert!(!steps.is_empty(), "{what}: nothing to do");
    for (k, step) in steps.iter().enumerate() {
        prepare();
        let before = actual(ns, dp);
        let (p, out, injected) = pass(ns, dp, t, d, Faults { actions: vec![*step], ..Faults::default() });
        assert_eq!(p, steps, "{what}: the plan changed between runs");
        assert_eq!(injected, vec![*step], "{what}: step {k}");
        assert_eq!(out.failed.iter().map(|f| f.action).collect::<Vec<_>>(), vec![*step], "{what}: step {k}");
        let after = actual(ns, dp);
        let bad = violations(t, dp, &before, &after);
        assert!(bad.is_empty(), "{what}: step {k} ({step}) failed, then:\n{}\nheld: {:?}", bad.join("\n"), out.held);
        repair(ns, dp, t, d, &format!("{what}: after step {k} ({step}) failed"));
    }
    steps.len()
}

#[test]
fn every_step_failing_once_keeps_the_promises() {
    let ns = namespace();
    let dp = TestDp::load("exec-each", AttachModeChoice::Tcx);
    reference(&ns);
    let t = table(&ns);
    let all = cfg(&["d0", "d1"], &[]);
    let d = desired(&t, &all, &dp);
    assert_eq!(d.links.len(), 5, "d0, d0.100, d0.200, d1, br300: {d:?}");

    // From nothing: every add.
    let n = each_step_fails(&ns, &dp, &t, &d, &|| reset(&ns, &dp), "from scratch");

    // From the whole reference, plus the entries of a device deleted since
    // (ifindex 9999, VID 4000 on d0): d0.200 and d1.300 excluded (their
    // tags close, then they are detached and their entries removed; br300
    // is no place of a guarded VLAN any more), the stale entries removed.
    let d0 = t.by_name("d0").expect("d0").ifindex.get();
    let full = || {
        let (_, out, _) = pass(&ns, &dp, &t, &d, Faults::default());
        assert!(out.is_clean(), "{out:?}");
        dp.set_link(9999, l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS).expect("stale link entry");
        dp.allow_vlan(d0, 4000).expect("stale VID");
    };
    let d2 = desired(&t, &cfg(&["d0", "d1"], &["d0.200", "d1.300"]), &dp);
    let m = each_step_fails(&ns, &dp, &t, &d2, &full, "removals");
    eprintln!("{n} + {m} steps, each failed once");
}

/// `hf_global` and `hf_failsafe` are desired state like the links: a pass
/// writes what the kernel lacks and removes what it has too much of, and a
/// failed settings write keeps every program off.
#[test]
fn global_settings_and_failsafe_ports_are_reconciled_against_the_kernel() {
    use hostfwd::datapath::{Direction, GlobalSettings};
    let ns = namespace();
    let dp = TestDp::load("exec-global", AttachModeChoice::Tcx);
    reset(&ns, &dp);
    add_lower(&ns, "d0", "10.50.0.1/24");
    let t = table(&ns);
    let mut d = desired(&t, &cfg(&["d0"], &[]), &dp);
    d.global = GlobalSettings { audit: false, drop_non_ip: true, events_per_sec: 10, events_burst: 5 };
    d.failsafe = [(Direction::Ingress, 6, 22), (Direction::Egress, 17, 53)].into();

    // The settings write fails: nothing is attached, the next pass repairs.
    let (_, out, _) = pass(&ns, &dp, &t, &d, Faults { kinds: vec!["set-global".into()], ..Faults::default() });
    assert!(actual(&ns, &dp).attachments.is_empty(), "no program without its settings: {out:?}");
    repair(&ns, &dp, &t, &d, "after a failed settings write");
    let a = actual(&ns, &dp);
    assert_eq!((a.global, &a.failsafe), (d.global, &d.failsafe));

    // Someone else changes the maps: the next pass puts them back.
    dp.set_global(GlobalSettings { audit: true, ..d.global }).expect("tamper hf_global");
    dp.remove_failsafe((Direction::Ingress, 6, 22)).expect("tamper hf_failsafe");
    dp.add_failsafe((Direction::Ingress, 6, 2222)).expect("tamper hf_failsafe");
    let (p, out, _) = pass(&ns, &dp, &t, &d, Faults::default());
    assert!(out.is_clean(), "{out:?}");
    assert_eq!(
        p,
        vec![
            Action::SetGlobal(d.global),
            Action::AddFailsafe((Direction::Ingress, 6, 22)),
            Action::RemoveFailsafe((Direction::Ingress, 6, 2222))
        ]
    );
    let a = actual(&ns, &dp);
    assert_eq!((a.global, &a.failsafe), (d.global, &d.failsafe));
    reset(&ns, &dp);
}

#[test]
fn a_failed_step_holds_back_what_relies_on_it() {
    let ns = namespace();
    let dp = TestDp::load("exec-hold", AttachModeChoice::Tcx);
    add_lower(&ns, "d0", "10.50.0.1/24");
    let t = table(&ns);
    let d = desired(&t, &cfg(&["d0"], &[]), &dp);
    repair(&ns, &dp, &t, &d, "d0 alone");
    let d0 = t.by_name("d0").expect("d0").ifindex.get();

    // A new VLAN whose attach fails in the parallel batch: its tag stays
    // closed on d0, the problem names both links.
    add_vlan(&ns, "d0", 100, Some("10.51.0.1/24"));
    let t = table(&ns);
    let v = t.by_name("d0.100").expect("d0.100").ifindex.get();
    let d = desired(&t, &cfg(&["d0"], &[]), &dp);
    let (p, out, _) = pass(&ns, &dp, &t, &d, Faults { actions: vec![Action::Attach(v, Direction::Egress)], ..Faults::default() });
    assert!(p.contains(&Action::AllowVlan(d0, 100)), "{p:?}");
    assert_eq!(out.held.iter().map(|h| (h.action, h.because)).collect::<Vec<_>>(), vec![(Action::AllowVlan(d0, 100), Action::Attach(v, Direction::Egress))]);
    assert!(!actual(&ns, &dp).vlans.contains(&(d0, 100)), "VID 100 opened towards a half-attached d0.100");
    let names = |i: u32| t.get(hostfwd::links::Ifindex::new(i).expect("ifindex")).map(|l| l.name.clone()).unwrap_or_default();
    let problems = out.problems(names);
    assert!(problems.iter().any(|s| s.starts_with("link d0.100 ") && s.contains("attach egress") && s.contains("Device or resource busy")), "{problems:?}");
    assert!(problems.iter().any(|s| s.starts_with("link d0 ") && s.contains("allow VLAN 100") && s.contains("held back") && s.contains("d0.100")), "{problems:?}");
    assert_eq!(out.links(), [v].into(), "d0 runs as configured but for the tag");
    repair(&ns, &dp, &t, &d, "d0.100");

    // A new VLAN whose address cannot be written (a full map): its tag
    // stays closed, though the device is attached.
    add_vlan(&ns, "d0", 200, Some("10.52.0.1/24"));
    let t = table(&ns);
    let d = desired(&t, &cfg(&["d0"], &[]), &dp);
    let addr: IpNet = "10.52.0.1/32".parse().expect("net");
    let (_, out, _) = pass(&ns, &dp, &t, &d, Faults { actions: vec![Action::AddLocal(addr)], ..Faults::default() });
    assert_eq!(out.held.iter().map(|h| h.action).collect::<Vec<_>>(), vec![Action::AllowVlan(d0, 200)]);
    assert!(!actual(&ns, &dp).vlans.contains(&(d0, 200)));
    assert_eq!(out.local_failed(), 1);
    let problems = out.problems(|i| format!("#{i}"));
    assert!(problems.iter().any(|s| s.contains("add local address 10.52.0.1 failed") && s.contains("is full") && s.contains("passes unjudged")), "{problems:?}");
    repair(&ns, &dp, &t, &d, "d0.200");
    reset(&ns, &dp);
}

// ---- randomized: link events and failures ------------------------------

/// xorshift64*, seeded: the same seed gives the same events and failures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().map(|v| v.parse().unwrap_or_else(|e| panic!("{key}={v}: {e}")))
}

/// What the randomized test changes: VLANs on two lowers.
struct World {
    lowers: Vec<(String, bool)>,
    /// (name, index of its lower)
    vlans: Vec<(String, usize)>,
    /// Bridges made so far (a VLAN bridged into one receives there).
    bridges: usize,
    /// A VID is never used twice: a tag left open on a lower by a failed
    /// `DisallowVlan` must not lead to a later device that reuses it.
    next_vid: u16,
}

impl World {
    fn event(&mut self, ns: &NetNs, rng: &mut Rng) -> String {
        let links: Vec<String> = self.lowers.iter().filter(|l| l.1).map(|l| l.0.clone()).chain(self.vlans.iter().map(|v| v.0.clone())).collect();
        match rng.below(8) {
            0 | 1 => {
                let up: Vec<usize> = (0..self.lowers.len()).filter(|i| self.lowers[*i].1).collect();
                if up.is_empty() {
                    return self.event(ns, rng);
                }
                let lo = up[rng.below(up.len())];
                let vid = self.next_vid;
                self.next_vid += 1;
                let addr = format!("10.{}.{}.1/24", 100 + vid / 256, vid % 256);
                let name = add_vlan(ns, &self.lowers[lo].0, vid, rng.chance(80).then_some(addr.as_str()));
                self.vlans.push((name.clone(), lo));
                format!("add {name}")
            }
            2 if !self.vlans.is_empty() => {
                let (name, _) = self.vlans.remove(rng.below(self.vlans.len()));
                ip(ns, &["link", "del", &name]);
                format!("delete {name}")
            }
            3 if !links.is_empty() => {
                let name = &links[rng.below(links.len())];
                let state = if rng.chance(50) { "down" } else { "up" };
                ip(ns, &["link", "set", name, state]);
                format!("set {name} {state}")
            }
            4 if self.vlans.len() >= 2 => {
                let a = rng.below(self.vlans.len());
                let b = (a + 1 + rng.below(self.vlans.len() - 1)) % self.vlans.len();
                let (from, to) = (self.vlans[a].0.clone(), self.vlans[b].0.clone());
                let addrs = ns.ip(&["-4", "-o", "addr", "show", "dev", &from]).expect("addr show");
                let Some(addr) = addrs.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(str::to_string) else {
                    return format!("no address on {from} to move");
                };
                ip(ns, &["addr", "del", &addr, "dev", &from]);
                ip(ns, &["addr", "add", &addr, "dev", &to]);
                format!("move {addr} from {from} to {to}")
            }
            5 => {
                let i = rng.below(self.lowers.len());
                let name = self.lowers[i].0.clone();
                if self.lowers[i].1 {
                    ip(ns, &["link", "del", &name]);
                    self.vlans.retain(|v| v.1 != i);
                    self.lowers[i].1 = false;
                    format!("delete lower {name}")
                } else {
                    add_lower(ns, &name, &format!("10.{}.0.1/24", 50 + i));
                    self.lowers[i].1 = true;
                    format!("add lower {name}")
                }
            }
            6 if !self.vlans.is_empty() => {
                // Into a new bridge that carries an address of its own: the
                // bridge becomes the place the VLAN's tag leads to.
                let (name, _) = self.vlans[rng.below(self.vlans.len())].clone();
                let br = format!("br{}", self.bridges);
                self.bridges += 1;
                ip(ns, &["link", "add", &br, "type", "bridge"]);
                ip(ns, &["addr", "add", &format!("10.200.{}.1/24", self.bridges), "dev", &br]);
                ip(ns, &["link", "set", &name, "master", &br]);
                ip(ns, &["link", "set", &br, "up"]);
                format!("bridge {name} into {br}")
            }
            _ => "no event".to_string(),
        }
    }
}

#[test]
fn random_link_events_and_failures_keep_the_promises() {
    let seed = env_u64("HOSTFWD_EXEC_SEED").unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    let steps = env_u64("HOSTFWD_EXEC_STEPS").unwrap_or(400);
    eprintln!("HOSTFWD_EXEC_SEED={seed} HOSTFWD_EXEC_STEPS={steps}");
    let mut rng = Rng(seed | 1);
    let ns = namespace();
    let dp = TestDp::load("exec-rand", AttachModeChoice::Tcx);
    let mut w = World { lowers: vec![("d0".into(), true), ("d1".into(), true)], vlans: Vec::new(), bridges: 0, next_vid: 10 };
    add_lower(&ns, "d0", "10.50.0.1/24");
    add_lower(&ns, "d1", "10.51.0.1/24");
    let c = cfg(&["d0", "d1"], &[]);
    let mut log = Vec::new();
    let (mut failed, mut held) = (0, 0);
    for step in 0..steps {
        for _ in 0..1 + rng.below(3) {
            log.push(w.event(&ns, &mut rng));
        }
        let t = table(&ns);
        let d = desired(&t, &c, &dp);
        let faults = Faults { percent: [0, 10, 25, 50][rng.below(4)], seed: rng.next(), ..Faults::default() };
        let before = actual(&ns, &dp);
        let (_, out, _) = pass(&ns, &dp, &t, &d, faults);
        failed += out.failed.len();
        held += out.held.len();
        let bad = violations(&t, &dp, &before, &actual(&ns, &dp));
        assert!(bad.is_empty(), "seed {seed}, step {step}, after {log:?}:\n{}\noutcome {out:?}", bad.join("\n"));
    }
    let t = table(&ns);
    repair(&ns, &dp, &t, &desired(&t, &c, &dp), &format!("seed {seed}"));
    eprintln!("{steps} passes, {failed} actions failed, {held} held back");
    assert!(failed > 0, "seed {seed}: no failure was injected");
    reset(&ns, &dp);
}

// ---- through the daemon: a failed write is a degraded state ------------

/// Pins of a datapath the daemon owns, removed at the end.
struct Pins(std::path::PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.0);
    }
}

#[test]
fn a_failed_write_degrades_the_daemon_until_repaired() {
    use hostfwd::config::DatapathConfig as _;
    use hostfwd::manager::State;
    let ns = namespace();
    add_lower(&ns, "d0", "10.50.0.1/24");
    add_vlan(&ns, "d0", 100, Some("10.51.0.1/24"));
    let t = table(&ns);
    let (d0, v) = (t.by_name("d0").expect("d0").ifindex, t.by_name("d0.100").expect("d0.100").ifindex);

    ensure_bpffs();
    let pins = Pins(unique_root("exec-daemon"));
    let dirs = tempfile::tempdir().expect("tempdir");
    let mut cfg = hostfwd::config::Config::load_with_env(None, Vec::new()).expect("default configuration");
    cfg.devices = vec!["d0".into()];
    cfg.bpffs_root = pins.0.clone();
    cfg.attach_mode = "tcx".into();
    cfg.policy_dir = dirs.path().join("policies");
    cfg.state_dir = dirs.path().join("state");
    cfg.dbus = "none".into();
    let dp = Datapath::load(&cfg.datapath().expect("datapath configuration")).expect("load the datapath");
    let (handle, api) = hostfwd::manager::channel(hostfwd::manager::Snapshot::starting("tcx"));
    let mut daemon = hostfwd::daemon::Daemon::new(cfg, None, dp, api);
    daemon.set_table(t);

    // The VLAN's egress attach fails: d0.100 is not attached, d0 keeps tag
    // 100 closed, both are named with the action and the error.
    daemon.inject_faults(Some(Faults { actions: vec![Action::Attach(v.get(), Direction::Egress)], ..Faults::default() }));
    ns.run(|| daemon.reconcile()).expect("netns");
    let s = handle.snapshot();
    assert_eq!(s.state, State::Degraded, "{:?}", s.problems);
    assert!(s.problems.iter().any(|p| p.starts_with("link d0.100 ") && p.contains("attach egress on link") && p.contains("Device or resource busy")), "{:?}", s.problems);
    assert!(s.problems.iter().any(|p| p.starts_with("link d0 ") && p.contains("allow VLAN 100") && p.contains("held back")), "{:?}", s.problems);
    assert_eq!(s.links[&v].attach_mode, "", "d0.100 is not shown attached");
    assert!(s.links[&v].problem.contains("attach egress on link") && s.links[&v].problem.contains("failed"), "{}", s.links[&v].problem);
    // d0 is attached and configured but for the tag, and says why.
    assert_eq!(s.links[&d0].attach_mode, "tcx");
    assert!(s.links[&d0].problem.starts_with("allow VLAN 100 on link") && s.links[&d0].problem.contains("held back: link d0.100"), "{}", s.links[&d0].problem);

    // Its VID entry fails next: d0.100 is attached now, d0 is degraded (its
    // configuration is incomplete).
    daemon.inject_faults(Some(Faults { kinds: vec!["allow-vlan"], ..Faults::default() }));
    ns.run(|| daemon.reconcile()).expect("netns");
    let s = handle.snapshot();
    assert_eq!(s.state, State::Degraded);
    assert!(s.problems.iter().any(|p| p.starts_with("link d0 ") && p.contains("allow VLAN 100 on link") && p.contains("failed") && p.contains("hf_vlans")), "{:?}", s.problems);
    assert_eq!(s.links[&v].attach_mode, "tcx");

    // Nothing fails: repaired, no problem left.
    daemon.inject_faults(None);
    ns.run(|| daemon.reconcile()).expect("netns");
    let s = handle.snapshot();
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_ne!(s.state, State::Degraded);
    assert_eq!((s.links[&d0].attach_mode.as_str(), s.links[&v].attach_mode.as_str()), ("tcx", "tcx"));
    assert_eq!((s.links[&d0].problem.as_str(), s.links[&v].problem.as_str()), ("", ""));
    drop(daemon);
}
