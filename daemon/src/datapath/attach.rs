//! Attaching to devices: tcx links (pinned, updated in place on adoption) or
//! legacy clsact + cls_bpf with hostfwd's own handle and priority. Other
//! users' qdiscs and filters are never touched: a clsact qdisc is created if
//! missing and never deleted.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use libbpf_rs::query::{LinkInfo, LinkTypeInfo};
use libbpf_rs::{Link, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use super::{dir_name, paths::Paths, AttachModeChoice, Datapath, Direction, Error, Result};

/// The default legacy tc priority and handle ("HF").
pub const DEFAULT_TC_PRIORITY: u16 = 1;
pub const DEFAULT_TC_HANDLE: u32 = 0x4846;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Tcx,
    Tc { priority: u16, handle: u32 },
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachMode::Tcx => f.write_str("tcx"),
            AttachMode::Tc { priority, handle } => write!(f, "tc(prio {priority}, handle {handle:#x})"),
        }
    }
}

impl AttachMode {
    /// The short name shown to users (`tcx`, `tc`).
    pub fn name(&self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Tc { .. } => "tc",
        }
    }

    pub(super) fn resolve(choice: AttachModeChoice) -> Result<Self> {
        Ok(match choice {
            AttachModeChoice::Tcx => AttachMode::Tcx,
            AttachModeChoice::Tc { priority, handle } => AttachMode::Tc { priority, handle },
            AttachModeChoice::Auto => {
                if probe_tcx()? {
                    AttachMode::Tcx
                } else {
                    AttachMode::Tc { priority: DEFAULT_TC_PRIORITY, handle: DEFAULT_TC_HANDLE }
                }
            }
        })
    }
}

/// Whether the kernel knows tcx: querying tcx on loopback succeeds where it
/// exists and fails with EINVAL where the attach type is unknown.
pub fn probe_tcx() -> Result<bool> {
    let mut opts = query_opts();
    // SAFETY: opts is a properly sized, zeroed bpf_prog_query_opts.
    let rc = unsafe { libbpf_sys::bpf_prog_query_opts(1, libbpf_sys::BPF_TCX_INGRESS, &mut opts) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::from_raw_os_error(-rc);
    match err.raw_os_error() {
        Some(libc::EINVAL) => Ok(false),
        _ => Err(Error::Probe(err)),
    }
}

fn query_opts() -> libbpf_sys::bpf_prog_query_opts {
    // SAFETY: a zeroed bpf_prog_query_opts is valid once sz is set.
    let mut opts: libbpf_sys::bpf_prog_query_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _;
    opts
}

fn tcx_attach_type(dir: Direction) -> u32 {
    match dir {
        Direction::Ingress => libbpf_sys::BPF_TCX_INGRESS,
        Direction::Egress => libbpf_sys::BPF_TCX_EGRESS,
    }
}

/// One of hostfwd's own attachments, as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub dir: Direction,
    pub mode: AttachMode,
    pub prog_id: u32,
}

/// A pinned tcx link is trusted only if the kernel still has it on the
/// device it was pinned for (a deleted device leaves the link defunct, with
/// ifindex 0).
fn tcx_link_valid(info: &LinkInfo, ifindex: u32, dir: Direction) -> bool {
    match &info.info {
        LinkTypeInfo::Tcx(t) => t.ifindex == ifindex && t.attach_type.clone() as u32 == tcx_attach_type(dir),
        _ => false,
    }
}

impl Datapath {
    /// Attaches (or adopts) the program for `dir` on `ifindex`. Idempotent:
    /// an existing attachment is updated in place, atomically, so filtering
    /// never has a gap and never runs twice.
    pub fn attach(&self, ifindex: u32, dir: Direction) -> Result<()> {
        let prog = self.prog(dir);
        let err = |source| Error::Attach { ifindex, dir: dir_name(dir), mode: self.mode, source };
        match self.mode {
            AttachMode::Tcx => {
                let pin = self.paths.tcx_link(ifindex, dir);
                if pin.exists() {
                    match Link::open(&pin) {
                        Ok(mut link) if link.info().is_ok_and(|i| tcx_link_valid(&i, ifindex, dir)) => {
                            return link.update_prog(prog).map_err(err);
                        }
                        _ => {
                            tracing::info!(path = %pin.display(), "dropping stale tcx link pin");
                            let _ = fs::remove_file(&pin);
                        }
                    }
                }
                let mut opts: libbpf_sys::bpf_tcx_opts = unsafe { std::mem::zeroed() };
                opts.sz = std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as _;
                // SAFETY: prog is a loaded program owned by self.skel; opts is valid.
                let ptr = unsafe {
                    libbpf_sys::bpf_program__attach_tcx(
                        std::ptr::from_ref(libbpf_rs::AsRawLibbpf::as_libbpf_object(prog).as_ref()).cast_mut(),
                        ifindex as i32,
                        &opts,
                    )
                };
                let ptr = NonNull::new(ptr).ok_or_else(|| err(libbpf_rs::Error::from(io::Error::last_os_error())))?;
                // SAFETY: a non-null pointer from bpf_program__attach_tcx is an owned bpf_link.
                let mut link = unsafe { Link::from_ptr(ptr) };
                link.pin(&pin).map_err(|source| Error::PinLink { ifindex, dir: dir_name(dir), path: pin, source })
            }
            AttachMode::Tc { priority, handle } => {
                let mut hook = TcHookBuilder::new(prog.as_fd())
                    .ifindex(ifindex as i32)
                    .replace(true)
                    .handle(handle)
                    .priority(priority as u32)
                    .hook(tc_point(dir));
                // EEXIST: the device already has a clsact qdisc (maybe not ours).
                if let Err(e) = hook.create() {
                    if e.kind() != libbpf_rs::ErrorKind::AlreadyExists {
                        return Err(err(e));
                    }
                }
                hook.attach().map(|_| ()).map_err(err)
            }
        }
    }

    /// Removes hostfwd's attachment for `dir` from `ifindex`; absent is fine.
    pub fn detach(&self, ifindex: u32, dir: Direction) -> Result<()> {
        let err = |source| Error::Detach { ifindex, dir: dir_name(dir), mode: self.mode, source };
        match self.mode {
            AttachMode::Tcx => {
                let pin = self.paths.tcx_link(ifindex, dir);
                if !pin.exists() {
                    return Ok(());
                }
                let mut link = Link::open(&pin).map_err(err)?;
                let valid = link.info().is_ok_and(|i| tcx_link_valid(&i, ifindex, dir));
                link.unpin().map_err(err)?;
                if valid {
                    link.detach().map_err(err)?;
                }
                Ok(())
            }
            AttachMode::Tc { priority, handle } => {
                let prog = self.prog(dir);
                let mut hook = TcHookBuilder::new(prog.as_fd())
                    .ifindex(ifindex as i32)
                    .handle(handle)
                    .priority(priority as u32)
                    .hook(tc_point(dir));
                match hook.detach() {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                    // The device is gone, and the filter with it.
                    Err(e) if e.kind() == libbpf_rs::ErrorKind::InvalidInput => Ok(()),
                    Err(e) => Err(err(e)),
                }
            }
        }
    }

    /// hostfwd's attachments as the kernel has them now, sorted.
    pub fn attachments(&self) -> Result<Vec<Attachment>> {
        let mut out = match self.mode {
            AttachMode::Tcx => self.tcx_attachments()?,
            AttachMode::Tc { .. } => self.tc_attachments()?,
        };
        out.sort_by_key(|a| (a.ifindex, a.dir as u8));
        Ok(out)
    }

    /// tcx attachments from the pins, each checked with the kernel; a pin
    /// whose link no longer runs on its device (the device was deleted: the
    /// kernel detaches, the pin stays) is removed on the way.
    fn tcx_attachments(&self) -> Result<Vec<Attachment>> {
        let dir = self.paths.links_dir();
        let entries = fs::read_dir(&dir).map_err(|source| Error::ReadDir { path: dir.clone(), source })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((ifindex, d)) = name.to_str().and_then(Paths::parse_tcx_link) else { continue };
            let info = Link::open(entry.path()).and_then(|l| l.info());
            match info {
                Ok(info) if tcx_link_valid(&info, ifindex, d) => {
                    out.push(Attachment { ifindex, dir: d, mode: self.mode, prog_id: info.prog_id })
                }
                _ => {
                    if fs::remove_file(entry.path()).is_ok() {
                        tracing::debug!(pin = %entry.path().display(), "removed stale tcx link pin");
                    }
                }
            }
        }
        Ok(out)
    }

    fn tc_attachments(&self) -> Result<Vec<Attachment>> {
        let AttachMode::Tc { priority, handle } = self.mode else { return Ok(Vec::new()) };
        let ifaces = nix::net::if_::if_nameindex().map_err(Error::Interfaces)?;
        let mut out = Vec::new();
        for iface in ifaces.iter() {
            let ifindex = iface.index();
            for dir in [Direction::Ingress, Direction::Egress] {
                let mut hook = TcHookBuilder::new(self.prog(dir).as_fd())
                    .ifindex(ifindex as i32)
                    .handle(handle)
                    .priority(priority as u32)
                    .hook(tc_point(dir));
                if let Ok(prog_id) = hook.query() {
                    if self.is_own_prog(prog_id) {
                        out.push(Attachment { ifindex, dir, mode: self.mode, prog_id });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ids of every program the kernel runs on the tcx hook of `ifindex`
    /// (hostfwd's and anyone else's), in order: how duplicates are caught.
    pub fn tcx_progs(ifindex: u32, dir: Direction) -> Result<Vec<u32>> {
        let mut ids = [0u32; 64];
        let mut opts = query_opts();
        opts.prog_ids = ids.as_mut_ptr();
        opts.__bindgen_anon_1.count = ids.len() as u32;
        // SAFETY: prog_ids points at `count` writable u32s that outlive the call.
        let rc = unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, tcx_attach_type(dir), &mut opts) };
        if rc != 0 {
            return Err(Error::Query { ifindex, source: io::Error::from_raw_os_error(-rc) });
        }
        // SAFETY: both union members are the same u32.
        let n = unsafe { opts.__bindgen_anon_1.count } as usize;
        Ok(ids[..n.min(ids.len())].to_vec())
    }

    /// Whether a program id is one of hostfwd's entry programs (this load or
    /// an earlier one with the same names).
    fn is_own_prog(&self, prog_id: u32) -> bool {
        libbpf_rs::query::ProgInfoIter::default()
            .find(|p| p.id == prog_id)
            .is_some_and(|p| matches!(p.name.to_str(), Some("hf_ingress") | Some("hf_egress")))
    }

    /// The kernel id of this load's program for `dir`, to compare with
    /// what is attached.
    pub fn prog_id(&self, dir: Direction) -> u32 {
        libbpf_rs::Program::id_from_fd(self.prog(dir).as_fd()).unwrap_or(0)
    }
}

fn tc_point(dir: Direction) -> libbpf_rs::TcAttachPoint {
    match dir {
        Direction::Ingress => TC_INGRESS,
        Direction::Egress => TC_EGRESS,
    }
}
