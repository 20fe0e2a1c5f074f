//! Shared fixtures of the integration tests: a loaded datapath with its own
//! bpffs root (removed on drop), policies built from the typed model.
#![allow(dead_code)]

pub mod web;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use hostfwd::datapath::{self, AttachModeChoice, Datapath, Direction, GlobalSettings};
use hostfwd::policy::compiler::compile;
use hostfwd::policy::model::{Action, CidrSet, L4Proto, PortMatch, Rule, RuleSet};
use hostfwd_bpf::layout as l;

pub const PASS: i32 = -1;
pub const DROP: i32 = 2;

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there (fresh CI VMs).
pub fn ensure_bpffs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let st = nix::sys::statfs::statfs("/sys/fs/bpf").expect("statfs /sys/fs/bpf");
        if st.filesystem_type().0 as i64 != 0xcafe4a11 {
            let ok = std::process::Command::new("mount")
                .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
                .status()
                .expect("mount");
            assert!(ok.success(), "mounting bpffs on /sys/fs/bpf failed");
        }
    });
}

pub fn unique_root(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    PathBuf::from(format!(
        "/sys/fs/bpf/hftest-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A loaded datapath under a private bpffs root, removed on drop.
pub struct TestDp {
    pub dp: Datapath,
    pub root: PathBuf,
}

impl std::ops::Deref for TestDp {
    type Target = Datapath;
    fn deref(&self) -> &Datapath {
        &self.dp
    }
}

impl std::ops::DerefMut for TestDp {
    fn deref_mut(&mut self) -> &mut Datapath {
        &mut self.dp
    }
}

impl Drop for TestDp {
    fn drop(&mut self) {
        let _ = Datapath::remove_pins(&self.root);
    }
}

impl TestDp {
    pub fn load(tag: &str, mode: AttachModeChoice) -> TestDp {
        TestDp::load_sized(tag, mode, Vec::new())
    }

    /// With map sizes of its own (as `[maps]` in the configuration); the
    /// others are the default configuration's (the object's own).
    pub fn load_sized(tag: &str, mode: AttachModeChoice, map_sizes: Vec<datapath::MapSize>) -> TestDp {
        ensure_bpffs();
        let root = unique_root(tag);
        let dp = Datapath::load(&datapath::Config {
            bpffs_root: root.clone(),
            attach_mode: mode,
            map_sizes,
        })
        .unwrap_or_else(|e| panic!("loading the datapath under {}: {e}", root.display()));
        dp.set_global(GlobalSettings {
            audit: false,
            drop_non_ip: false,
            events_per_sec: 100_000,
            events_burst: 100_000,
        })
        .expect("set global");
        TestDp { dp, root }
    }

    /// Enforcing both directions on `ifindex`.
    pub fn enforce(&self, ifindex: u32) {
        self.dp
            .set_link(ifindex, l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS)
            .expect("set link");
    }

    pub fn audit(&self, on: bool) {
        let mut g = self.dp.global_settings().expect("global");
        g.audit = on;
        self.dp.set_global(g).expect("set global");
    }

    pub fn apply(&mut self, rules: Vec<Rule>) {
        let image = compile(&RuleSet::new(rules)).expect("compile");
        self.dp.apply_policy(&image).expect("apply policy");
    }

    pub fn drops(&self, reason: hostfwd_bpf::DropReason) -> u64 {
        self.dp.drops(reason).expect("counters")
    }
}

pub fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// An allow rule for `cidrs` on TCP `port` (0 = all ports).
pub fn allow_tcp(id: u32, dir: Direction, cidrs: &[&str], port: u16) -> Rule {
    Rule {
        id,
        direction: dir,
        action: Action::Allow,
        peers: cidrs.iter().map(|c| CidrSet::cidr(net(c))).collect(),
        ports: vec![PortMatch::l4(L4Proto::Tcp, port, None)],
    }
}

#[allow(unused_imports)]
pub use hostfwd_tests::hostfwd_bin;

/// Polls `f` until it holds; fails the test naming `what` after `within`.
pub fn wait_until(what: &str, within: std::time::Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + within;
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Someone else's program for the hook-order tests (`bpf/c/pass.bpf.c`:
/// `foreign_pass_in`/`foreign_pass_eg` return "pass", which ends the tcx
/// chain and, as a direct-action filter, legacy classification).
pub struct ForeignPass {
    obj: libbpf_rs::Object,
}

impl ForeignPass {
    pub const INGRESS: &'static str = "foreign_pass_in";

    pub fn load() -> ForeignPass {
        let open = libbpf_rs::ObjectBuilder::default().open_memory(hostfwd_bpf::PASS_OBJECT).expect("open pass object");
        // Not pinned anywhere: the test's links are its only users.
        let obj = open.load().expect("load pass object");
        ForeignPass { obj }
    }

    fn prog_fd(&self, dir: Direction) -> std::os::fd::RawFd {
        use std::os::fd::{AsFd, AsRawFd};
        let name = if dir == Direction::Ingress { "foreign_pass_in" } else { "foreign_pass_eg" };
        let prog = self.obj.progs().find(|p| p.name() == name).expect("pass program");
        prog.as_fd().as_raw_fd()
    }

    pub fn prog_id(&self, dir: Direction) -> u32 {
        // SAFETY: the fd belongs to self.obj, which outlives the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.prog_fd(dir)) };
        libbpf_rs::Program::id_from_fd(fd).expect("pass program id")
    }

    /// Attaches to the tcx hook of `ifindex` in `ns`, in front of all
    /// (`front`, BPF_F_BEFORE) or behind all. Detached when the returned
    /// link fd is closed.
    pub fn attach_tcx(&self, ns: &hostfwd_tests::NetNs, ifindex: u32, dir: Direction, front: bool) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        let prog_fd = self.prog_fd(dir);
        let ty = if dir == Direction::Ingress { libbpf_sys::BPF_TCX_INGRESS } else { libbpf_sys::BPF_TCX_EGRESS };
        let fd = ns
            .run(move || {
                // SAFETY: a zeroed bpf_link_create_opts is valid once sz is set.
                let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
                opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
                opts.flags = if front { libbpf_sys::BPF_F_BEFORE } else { 0 };
                // SAFETY: prog_fd is a loaded program; opts is valid.
                unsafe { libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, ty, &opts) }
            })
            .expect("netns");
        assert!(fd >= 0, "attaching the foreign pass program: {}", std::io::Error::from_raw_os_error(-fd));
        // SAFETY: a new link fd that nothing else owns.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
    }
}

/// A daemon process of a test, killed and reaped when the test ends.
pub struct Running {
    pub child: std::process::Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test datapath enforcing on the host side of `topo`, its addresses
/// known, attached in both directions.
pub fn attached_to_host(topo: &hostfwd_tests::Topology, tag: &str, mode: AttachModeChoice) -> TestDp {
    let dp = TestDp::load(tag, mode);
    let h = &topo.h;
    dp.enforce(h.ifindex);
    dp.add_host_addr(h.v4.into()).expect("host address v4");
    dp.add_host_addr(h.v6.into()).expect("host address v6");
    topo.host
        .run(|| {
            for d in Direction::ALL {
                dp.attach(h.ifindex, d).expect("attach");
            }
        })
        .expect("netns");
    dp
}
