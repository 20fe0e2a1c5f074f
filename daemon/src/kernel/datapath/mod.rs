//! The one module that touches the kernel: loads the eBPF object, pins and
//! adopts its maps and links under bpffs, attaches to devices (tcx or legacy
//! clsact/cls_bpf), writes the maps and reads counters and events.
//!
//! Everything above this module is pure: it decides *what* the kernel should
//! hold; this module makes it so and reads back what is there.

mod attach;
mod events;
#[cfg(feature = "testing")]
pub mod faulty;
mod maps;
mod memory;
pub mod order;
pub mod paths;

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hostfwd_bpf::skel::{HostfwdSkel, HostfwdSkelBuilder, OpenHostfwdSkel};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, OpenObject, ProgramAttachType};
use std::os::fd::AsFd;

pub use crate::policy::model::Direction;
pub use attach::{AttachMode, Attachment};
pub use events::{Event, EventReader};
#[cfg(feature = "testing")]
pub use faulty::{FaultyKernel, Faults};
pub use maps::{pinned_counters, ConntrackEntry, CounterEntry, GlobalSettings};
pub use memory::{MapMemory, MapSize};
pub use paths::Paths;

pub use crate::reconcile::dir_name;

pub fn dir_from_name(s: &str) -> Option<Direction> {
    match s {
        "ingress" => Some(Direction::Ingress),
        "egress" => Some(Direction::Egress),
        _ => None,
    }
}

use crate::policy::encode::dir_code;

/// Errors of the datapath, each naming the operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not on a bpf filesystem (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },
    #[error("creating bpffs directory {path}: {source}")]
    BpffsDir { path: PathBuf, source: io::Error },
    #[error("opening the eBPF object: {0}")]
    Open(#[source] libbpf_rs::Error),
    #[error("loading the eBPF programs into the kernel: {0}")]
    Load(#[source] libbpf_rs::Error),
    #[error("pinning map {map} at {path}: {source}")]
    PinMap { map: String, path: PathBuf, source: libbpf_rs::Error },
    #[error("sharing map {map} with the spare programs: {source}")]
    ReuseMap { map: String, source: libbpf_rs::Error },
    #[error("opening pinned map {path}: {source}")]
    OpenPinned { path: PathBuf, source: libbpf_rs::Error },
    #[error("probing tcx support: {0}")]
    Probe(#[source] io::Error),
    #[error("attaching {dir} on ifindex {ifindex} ({mode}): {source}")]
    Attach { ifindex: u32, dir: &'static str, mode: AttachMode, source: libbpf_rs::Error },
    #[error("detaching {dir} from ifindex {ifindex} ({mode}): {source}")]
    Detach { ifindex: u32, dir: &'static str, mode: AttachMode, source: libbpf_rs::Error },
    #[error("pinning the tcx link for {dir} on ifindex {ifindex} at {path}: {source}")]
    PinLink { ifindex: u32, dir: &'static str, path: PathBuf, source: libbpf_rs::Error },
    #[error("renaming pin {from} over {to}: {source}")]
    RenamePin { from: PathBuf, to: PathBuf, source: io::Error },
    #[error("querying attachments on ifindex {ifindex}: {source}")]
    Query { ifindex: u32, source: io::Error },
    #[error("{op} on ifindex {ifindex}: {source} (needs {cap})")]
    NeedsCapability { op: &'static str, ifindex: u32, cap: &'static str, source: io::Error },
    #[error("reading the tcx link pinned at {path}: {source}")]
    ReadLinkPin { path: PathBuf, source: libbpf_rs::Error },
    #[error("listing network interfaces: {0}")]
    Interfaces(#[source] nix::Error),
    #[error("reading {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("updating map {map}: {source}")]
    MapUpdate { map: &'static str, source: libbpf_rs::Error },
    #[error("reading map {map}: {source}")]
    MapRead { map: &'static str, source: libbpf_rs::Error },
    #[error("map {map} returned a {len}-byte value, expected {expected}")]
    MapLayout { map: &'static str, len: usize, expected: usize },
    #[error("map {map} is full ({max_entries} entries): local {net} cannot be added, traffic to and from it passes unjudged")]
    LocalFull { map: &'static str, net: ipnet::IpNet, max_entries: u32 },
    #[error("adding local {net} to map {map}: {source}")]
    LocalUpdate { map: &'static str, net: ipnet::IpNet, source: libbpf_rs::Error },
    #[error("test run of the {dir} program: {source}")]
    #[cfg(feature = "testing")]
    TestRun { dir: &'static str, source: libbpf_rs::Error },
    #[error("building the event ring buffer: {0}")]
    RingBuf(#[source] libbpf_rs::Error),
    #[error("setting the size of map {map} to {entries} (configuration key {key}): {source}")]
    MapSize { map: String, key: &'static str, entries: u32, source: libbpf_rs::Error },
    #[error("map {map} (configuration key {key}) is not in the eBPF object")]
    MapUnknown { map: &'static str, key: &'static str },
    #[error("reading the memory of map {map} from fdinfo: {source}")]
    MapMemory { map: String, source: io::Error },
}

impl Error {
    /// The device a query was about no longer exists (ENODEV): it has
    /// nothing attached any more, which is not a failure.
    pub fn is_device_gone(&self) -> bool {
        matches!(self, Error::Query { source, .. } if source.raw_os_error() == Some(libc::ENODEV))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to choose the attach mode (a configuration value).
pub use hostfwd_config::AttachModeChoice;

#[derive(Debug, Clone)]
pub struct Config {
    pub bpffs_root: PathBuf,
    pub attach_mode: AttachModeChoice,
    /// max_entries of the maps named here (the configuration's `[maps]`);
    /// the others keep the object's size.
    pub map_sizes: Vec<MapSize>,
}

impl Default for Config {
    fn default() -> Self {
        Config { bpffs_root: PathBuf::from(paths::DEFAULT_ROOT), attach_mode: AttachModeChoice::Auto, map_sizes: Vec::new() }
    }
}

/// The loaded datapath. Maps are pinned, so dropping this value (or the
/// process dying) leaves filtering in place; a new `Datapath` adopts it.
pub struct Datapath {
    skel: HostfwdSkel<'static>,
    paths: Paths,
    mode: AttachMode,
    last_policy_swap: Option<Instant>,
    /// Per generation, the policy keys this process wrote into it (see
    /// `apply_policy`); `None` when unknown (adopted maps, a failed write).
    policy_keys: [Option<maps::GenerationKeys>; 2],
    /// The maps were set up by an earlier load (see [`Datapath::adopted`]).
    adopted: bool,
    /// A second copy of the programs on the same maps, loaded on the first
    /// move to the front: tcx holds a program once per hook, so the new
    /// link in front runs the copy until the old link is gone.
    spare: std::sync::OnceLock<HostfwdSkel<'static>>,
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC).unwrap_or(false)
}

/// Creates `dir` (and parents) on bpffs, refusing any other filesystem so that
/// pins never silently land on tmpfs and vanish.
fn ensure_bpffs_dir(dir: &Path) -> Result<()> {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    if !is_bpffs(probe) {
        return Err(Error::NotBpffs { path: dir.to_path_buf() });
    }
    fs::create_dir_all(dir).map_err(|source| Error::BpffsDir { path: dir.to_path_buf(), source })
}

/// An exclusive lock on the bpffs root, held while maps are reused or pinned.
fn lock_root(root: &Path) -> Result<nix::fcntl::Flock<fs::File>> {
    let dir = fs::File::open(root).map_err(|source| Error::BpffsDir { path: root.to_path_buf(), source })?;
    nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::BpffsDir { path: root.to_path_buf(), source: io::Error::from(e) })
}

/// Names of the maps that are pinned (the object's `.rodata` is per load).
fn pinned_map_names(open: &OpenHostfwdSkel<'_>) -> Vec<String> {
    open.open_object()
        .maps()
        .map(|m| m.name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hf_"))
        .collect()
}

impl Datapath {
    /// Loads the programs, reusing every map already pinned under the root
    /// (state such as conntrack and counters survives restarts), and pins the
    /// rest. Nothing is attached yet.
    pub fn load(cfg: &Config) -> Result<Self> {
        Self::load_with(cfg, true)
    }

    /// The maps alone, pinned or new, without loading the programs: no
    /// verifier run (a second or more on a slow machine), for readers such
    /// as `hostfwd inspect`. Attachments are still listed (hostfwd's
    /// programs are known by name); attaching and detaching need
    /// [`Datapath::load`].
    pub fn load_maps(cfg: &Config) -> Result<Self> {
        Self::load_with(cfg, false)
    }

    fn load_with(cfg: &Config, programs: bool) -> Result<Self> {
        route_libbpf_logs();
        let paths = Paths::new(&cfg.bpffs_root);
        ensure_bpffs_dir(&paths.maps_dir())?;
        ensure_bpffs_dir(&paths.links_dir())?;
        let mode = AttachMode::resolve(cfg.attach_mode)?;
        // Two loaders at once (the daemon starting while `hostfwd inspect`
        // runs) would each find no pins, create their own maps and end up
        // with different ones: reuse-or-pin is one critical section.
        let _lock = lock_root(paths.root())?;

        // The skeleton borrows its object storage for its whole life; the
        // datapath lives as long as the daemon, so leak one small allocation.
        let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = HostfwdSkelBuilder::default().open(storage).map_err(Error::Open)?;

        let names = pinned_map_names(&open);
        if let Some(s) = cfg.map_sizes.iter().find(|s| !names.iter().any(|n| n == s.map)) {
            return Err(Error::MapUnknown { map: s.map, key: s.key });
        }
        for mut map in open.open_object_mut().maps_mut() {
            let name = map.name().to_string_lossy().into_owned();
            if !names.contains(&name) {
                continue;
            }
            if let Some(s) = cfg.map_sizes.iter().find(|s| s.map == name) {
                map.set_max_entries(s.entries).map_err(|source| Error::MapSize { map: name.clone(), key: s.key, entries: s.entries, source })?;
            }
            let pin = paths.map(&name);
            if pin.exists() && !programs {
                // A reader takes the daemon's maps as they are, whatever
                // this configuration says, and never replaces one.
                if let Some(entries) = memory::pinned_max_entries(&pin) {
                    map.set_max_entries(entries).map_err(|source| Error::MapSize { map: name.clone(), key: "(pinned)", entries, source })?;
                }
                map.reuse_pinned_map(&pin).map_err(|source| Error::OpenPinned { path: pin.clone(), source })?;
            } else if pin.exists() {
                // Adopting takes the pinned map as it is: one of another
                // size, layout or type would silently win over this load.
                if let Some(why) = memory::pinned_mismatch(&map, &pin) {
                    tracing::warn!(map = %name, path = %pin.display(), differences = %why, "pinned map differs from this configuration; replacing it");
                    let _ = fs::remove_file(&pin);
                } else if let Err(e) = map.reuse_pinned_map(&pin) {
                    // An incompatible map from another version: start afresh
                    // (the old programs keep their copy until replaced).
                    tracing::warn!(map = %name, path = %pin.display(), error = %e, "pinned map is incompatible; replacing it");
                    let _ = fs::remove_file(&pin);
                }
            }
        }
        if !programs {
            for mut prog in open.open_object_mut().progs_mut() {
                prog.set_autoload(false);
            }
        }
        if let AttachMode::Tc { .. } = mode {
            // Kernels without tcx know no tcx attach type: load as plain tc.
            for mut prog in open.open_object_mut().progs_mut() {
                prog.set_attach_type(ProgramAttachType::CgroupInetIngress);
            }
        }

        let mut skel = open.load().map_err(Error::Load)?;
        for mut map in skel.object_mut().maps_mut() {
            let name = map.name().to_string_lossy().into_owned();
            if !names.contains(&name) {
                continue;
            }
            let pin = paths.map(&name);
            if !pin.exists() {
                map.pin(&pin).map_err(|source| Error::PinMap { map: name.clone(), path: pin.clone(), source })?;
            }
        }
        let mut dp = Datapath { skel, paths, mode, last_policy_swap: None, policy_keys: [None, None], spare: std::sync::OnceLock::new(), adopted: false };
        dp.adopted = dp.init_global()?;
        Ok(dp)
    }

    /// Whether the maps were pinned and set up before this load (a restart,
    /// not a cold start): they hold the policy of the last run.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Removes every attachment (all devices, both directions) and every pin.
    /// Collects all errors instead of stopping at the first.
    pub fn teardown(self) -> Vec<Error> {
        let mut errors = Vec::new();
        match self.attachments() {
            Ok(list) => {
                for a in list {
                    if let Err(e) = self.detach(a.ifindex, a.dir) {
                        errors.push(e);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        let _ = fs::remove_dir_all(self.paths.root());
        errors
    }

    /// Removes the pins under `root` without loading anything (used by tests
    /// and `hostfwd --detach`); attachments go with their pinned links.
    pub fn remove_pins(root: &Path) -> io::Result<()> {
        match fs::remove_dir_all(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The spare copy's program for `dir` (see `spare`), loaded on first use
    /// with every map of this load (same state, nothing pinned anew).
    fn spare_prog(&self, dir: Direction) -> Result<&libbpf_rs::ProgramMut<'static>> {
        let skel = match self.spare.get() {
            Some(s) => s,
            None => {
                let storage: &'static mut MaybeUninit<OpenObject> = Box::leak(Box::new(MaybeUninit::uninit()));
                let mut open = HostfwdSkelBuilder::default().open(storage).map_err(Error::Open)?;
                for mut map in open.open_object_mut().maps_mut() {
                    let name = map.name().to_owned();
                    if !name.to_string_lossy().starts_with("hf_") {
                        continue;
                    }
                    if let Some(ours) = self.skel.object().maps().find(|m| m.name() == name) {
                        map.reuse_fd(ours.as_fd()).map_err(|source| Error::ReuseMap { map: name.to_string_lossy().into_owned(), source })?;
                    }
                }
                let skel = open.load().map_err(Error::Load)?;
                // Two moves at once may both load one; the first kept wins.
                self.spare.get_or_init(|| skel)
            }
        };
        Ok(match dir {
            Direction::Ingress => &skel.progs.hf_ingress,
            Direction::Egress => &skel.progs.hf_egress,
        })
    }

    fn prog(&self, dir: Direction) -> &libbpf_rs::ProgramMut<'static> {
        match dir {
            Direction::Ingress => &self.skel.progs.hf_ingress,
            Direction::Egress => &self.skel.progs.hf_egress,
        }
    }
}

/// Result of one BPF_PROG_TEST_RUN.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    /// The program's return code (`-1` pass to the next program, `2` drop).
    pub retval: i32,
    /// Average time per run as measured by the kernel.
    pub per_run: std::time::Duration,
}

#[cfg(feature = "testing")]
impl Datapath {
    /// Runs the entry program for `dir` on a crafted frame in the kernel
    /// (BPF_PROG_TEST_RUN), against the live maps. The packet's device is
    /// the caller's loopback (ifindex 1 of its network namespace).
    pub fn test_run(&self, dir: Direction, frame: &[u8], repeat: u32) -> Result<TestRun> {
        let mut input = libbpf_rs::ProgramInput::default();
        input.data_in = Some(frame);
        input.repeat = repeat;
        let out = self.prog(dir).test_run(input).map_err(|source| Error::TestRun { dir: dir_name(dir), source })?;
        Ok(TestRun { retval: out.return_value as i32, per_run: out.duration })
    }
}

/// Routes libbpf's own messages through tracing (once per process), so that
/// expected probe failures ("Exclusivity flag on", …) do not clutter stderr.
fn route_libbpf_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        fn cb(level: libbpf_rs::PrintLevel, msg: String) {
            let msg = msg.trim_end();
            match level {
                // Netlink notes from probing tc ("Exclusivity flag on", "Parent
                // Qdisc doesn't exists") are expected; verifier logs are not.
                libbpf_rs::PrintLevel::Warn if msg.contains("Kernel error message") => tracing::debug!(target: "libbpf", "{msg}"),
                libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
                _ => tracing::trace!(target: "libbpf", "{msg}"),
            }
        }
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, cb)));
    });
}

impl Datapath {
    /// This load's (ingress, egress) program ids: an attachment running
    /// anything else is adopted (updated in place) by the reconciler.
    pub fn prog_ids(&self) -> (u32, u32) {
        (self.prog_id(Direction::Ingress), self.prog_id(Direction::Egress))
    }

    /// The state the reconciler compares against, read back from the kernel
    /// (attachments from the hooks and pins, the rest from the maps).
    /// Legacy tc attachments are found in the caller's network namespace.
    pub fn actual(&self) -> Result<crate::reconcile::Actual> {
        let list = self.attachments()?;
        Ok(crate::reconcile::Actual {
            ahead: list.iter().filter(|a| !a.ahead.is_empty()).map(|a| ((a.ifindex, a.dir), a.ahead.clone())).collect(),
            attachments: list.into_iter().map(|a| ((a.ifindex, a.dir), a.prog_id)).collect(),
            links: self.links()?,
            vlans: self.vlans().into_iter().collect(),
            local: self.local_nets().into_iter().collect(),
            global: self.global_settings()?,
            failsafe: self.failsafe().into_iter().collect(),
        })
    }

    /// Carries out one reconcile action.
    pub fn execute(&self, action: &crate::reconcile::Action) -> Result<()> {
        use crate::reconcile::Action as A;
        match *action {
            A::SetGlobal(s) => self.set_global(s),
            A::AddFailsafe(f) => self.add_failsafe(f),
            A::RemoveFailsafe(f) => self.remove_failsafe(f),
            A::AddLocal(net) => self.add_local(net),
            A::RemoveLocal(net) => self.remove_local(net),
            A::SetLink(i, flags) => self.set_link(i, flags),
            A::RemoveLink(i) => self.remove_link(i),
            A::AllowVlan(i, vid) => self.allow_vlan(i, vid),
            A::DisallowVlan(i, vid) => self.disallow_vlan(i, vid),
            A::Attach(i, d) => self.attach(i, d),
            A::MoveToFront(i, d) => self.move_to_front(i, d),
            A::Detach(i, d) => self.detach(i, d),
        }
    }
}

/// The kernel calls the executor (`crate::execute`) needs: the seam where
/// tests inject faults (`FaultyKernel`, feature `testing`).
pub trait Kernel: Sync {
    fn actual(&self) -> Result<crate::reconcile::Actual>;
    fn execute(&self, action: &crate::reconcile::Action) -> Result<()>;
}

impl Kernel for Datapath {
    fn actual(&self) -> Result<crate::reconcile::Actual> {
        Datapath::actual(self)
    }

    fn execute(&self, action: &crate::reconcile::Action) -> Result<()> {
        Datapath::execute(self, action)
    }
}
