//! Attaching to devices: tcx links (pinned, updated in place on adoption) or
//! legacy clsact + cls_bpf with hostfwd's own handle and priority. Other
//! users' qdiscs and filters are never touched: a clsact qdisc is created if
//! missing and never deleted.
//!
//! hostfwd must be first on its hooks (see `order.rs`: the first program
//! decides). tcx links are created in front of all (BPF_F_BEFORE without a
//! relative program) and moved back there when someone else is inserted in
//! front later ([`Datapath::move_to_front`]). Legacy tc has no such move:
//! filters run by priority, and within one cls_bpf priority the newest
//! first. hostfwd's default priority 1 is the lowest there is, so only a
//! filter at priority 1 added after hostfwd's (or any filter when hostfwd
//! is configured at a higher number) runs before it; it cannot be overtaken
//! without deleting it (hostfwd never deletes a foreign filter) and is
//! reported instead. A tcx program (on kernels that have tcx) runs before
//! every legacy filter and is reported the same way.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use libbpf_rs::query::{LinkInfo, LinkTypeInfo};
use libbpf_rs::{Link, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use super::order::{self, query_opts, tcx_attach_type};
use super::{dir_name, paths::Paths, AttachModeChoice, Datapath, Direction, Error, Result};
use crate::reconcile::HookProg;

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

/// One of hostfwd's own attachments, as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub dir: Direction,
    pub mode: AttachMode,
    pub prog_id: u32,
    /// Programs that run before this one on its hook, in order.
    pub ahead: Vec<HookProg>,
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
                let mut link = self.tcx_attach_front(prog, ifindex).map_err(err)?;
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

    /// A new tcx link for `prog` on `ifindex`, in front of every program
    /// already there (BPF_F_BEFORE relative to nothing).
    fn tcx_attach_front(&self, prog: &libbpf_rs::ProgramMut<'static>, ifindex: u32) -> libbpf_rs::Result<Link> {
        // SAFETY: a zeroed bpf_tcx_opts is valid once sz is set.
        let mut opts: libbpf_sys::bpf_tcx_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of::<libbpf_sys::bpf_tcx_opts>() as _;
        opts.flags = libbpf_sys::BPF_F_BEFORE;
        // SAFETY: prog is a loaded program owned by self.skel; opts is valid.
        let ptr = unsafe {
            libbpf_sys::bpf_program__attach_tcx(
                std::ptr::from_ref(libbpf_rs::AsRawLibbpf::as_libbpf_object(prog).as_ref()).cast_mut(),
                ifindex as i32,
                &opts,
            )
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| libbpf_rs::Error::from(io::Error::last_os_error()))?;
        // SAFETY: a non-null pointer from bpf_program__attach_tcx is an owned bpf_link.
        Ok(unsafe { Link::from_ptr(ptr) })
    }

    /// Puts hostfwd back in front of the tcx hook of `ifindex`/`dir`
    /// without a moment off the hook: a new link in front of all first,
    /// pinned under a temporary name and renamed over the old pin (bpffs
    /// renames atomically), and only then the old link released. tcx takes
    /// a program once per hook, so the new link starts with the spare copy
    /// (same code, same maps) and is switched in place to this load's
    /// program once the old link is gone; this also adopts an old load.
    pub fn move_to_front(&self, ifindex: u32, dir: Direction) -> Result<()> {
        let AttachMode::Tcx = self.mode else { return self.attach(ifindex, dir) };
        let err = |source| Error::Attach { ifindex, dir: dir_name(dir), mode: self.mode, source };
        let pin = self.paths.tcx_link(ifindex, dir);
        let tmp = self.paths.tcx_link_tmp(ifindex, dir);
        // A move cut short (the daemon killed between pin and rename) left
        // a second hostfwd link pinned under the temporary name: release it.
        if tmp.exists() {
            if let Ok(mut stale) = Link::open(&tmp) {
                let _ = stale.unpin();
                let _ = stale.detach();
            }
            let _ = fs::remove_file(&tmp);
        }
        let old = match Link::open(&pin) {
            Ok(l) if l.info().is_ok_and(|i| tcx_link_valid(&i, ifindex, dir)) => l,
            // Nothing of ours to move: an ordinary attach is in front anyway.
            _ => return self.attach(ifindex, dir),
        };
        let mut new = self.tcx_attach_front(self.spare_prog(dir)?, ifindex).map_err(err)?;
        if let Err(source) = new.pin(&tmp) {
            // Dropping `new` detaches it: back to the old state.
            return Err(Error::PinLink { ifindex, dir: dir_name(dir), path: tmp, source });
        }
        if let Err(source) = fs::rename(&tmp, &pin) {
            let _ = new.unpin();
            return Err(Error::RenamePin { from: tmp, to: pin, source });
        }
        // The old link's pin is gone with the rename; this detaches it even
        // if another process still holds it open.
        old.detach().map_err(|source| Error::Detach { ifindex, dir: dir_name(dir), mode: self.mode, source })?;
        drop(old);
        // Should this fail, the spare copy stays in front (it filters the
        // same) and the next pass updates it in place.
        new.update_prog(self.prog(dir)).map_err(err)
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
            let info = match Link::open(entry.path()).and_then(|l| l.info()) {
                Ok(info) => info,
                // Removed meanwhile (a detach or move on another thread).
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => continue,
                // Unreadable is not stale: keep the pin and say why.
                Err(source) => return Err(Error::ReadLinkPin { path: entry.path(), source }),
            };
            match info {
                info if tcx_link_valid(&info, ifindex, d) => {
                    let ahead = match tcx_ahead(ifindex, d, info.id) {
                        Ok(a) => a,
                        // The device went away after the pin was read.
                        Err(e) if e.is_device_gone() => continue,
                        Err(e) => return Err(e),
                    };
                    out.push(Attachment { ifindex, dir: d, mode: self.mode, prog_id: info.prog_id, ahead })
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

    /// Legacy attachments: every device's clsact filters (one dump per
    /// hook), hostfwd's found by its (priority, handle) and by the dump
    /// alone (see [`is_own_filter`]): no program is opened by id, which
    /// would need CAP_SYS_ADMIN. A dump that fails for any reason but the
    /// device going away fails the whole read: taking it for "not attached"
    /// would re-attach every pass and hide the cause.
    fn tc_attachments(&self) -> Result<Vec<Attachment>> {
        let AttachMode::Tc { priority, handle } = self.mode else { return Ok(Vec::new()) };
        let own_tags = self.own_tags();
        let ifaces = nix::net::if_::if_nameindex().map_err(Error::Interfaces)?;
        let mut out = Vec::new();
        for iface in ifaces.iter() {
            let ifindex = iface.index();
            for dir in [Direction::Ingress, Direction::Egress] {
                let filters = match order::tc_filters(ifindex, dir) {
                    Ok(f) => f,
                    // Gone between the listing and the dump: nothing attached.
                    Err(e) if e.is_device_gone() => continue,
                    Err(e) => return Err(e),
                };
                let Some(pos) = filters.iter().position(|f| f.priority == priority && f.handle == handle && is_own_filter(f, &own_tags)) else { continue };
                let Some(prog_id) = filters[pos].prog_id else { continue };
                let mut ahead: Vec<HookProg> = match tcx_chain_progs(ifindex, dir) {
                    Ok(p) => p,
                    Err(e) if e.is_device_gone() => continue,
                    Err(e) => return Err(e),
                };
                ahead.extend(filters[..pos].iter().map(order::TcFilter::hook_prog));
                out.push(Attachment { ifindex, dir, mode: self.mode, prog_id, ahead });
            }
        }
        Ok(out)
    }

    /// The tags of this load's programs (ingress, egress), read from the
    /// fds it holds; none when the programs are not loaded
    /// ([`Datapath::load_maps`]).
    fn own_tags(&self) -> Vec<[u8; 8]> {
        [Direction::Ingress, Direction::Egress]
            .into_iter()
            .filter_map(|d| {
                // SAFETY: the program belongs to self.skel, alive as long as self.
                let fd = unsafe { libbpf_sys::bpf_program__fd(libbpf_rs::AsRawLibbpf::as_libbpf_object(self.prog(d)).as_ptr()) };
                (fd >= 0).then(|| order::prog_info(fd).ok()).flatten().map(|i| i.tag)
            })
            .collect()
    }

    /// Ids of every program the kernel runs on the tcx hook of `ifindex`
    /// (hostfwd's and anyone else's), in order: how duplicates are caught.
    pub fn tcx_progs(ifindex: u32, dir: Direction) -> Result<Vec<u32>> {
        Ok(order::tcx_chain(ifindex, dir)?.into_iter().map(|e| e.prog_id).collect())
    }

    /// For the periodic order check: whether this load's program runs first
    /// on each of `hooks` (tcx: one query per hook that copies one id).
    /// Empty hooks count as first. Always true on legacy tc, where
    /// nothing can be moved (the regular pass reports what runs first).
    pub fn first_on_hooks(&self, hooks: impl IntoIterator<Item = (u32, Direction)>) -> bool {
        let AttachMode::Tcx = self.mode else { return true };
        let ids = self.prog_ids();
        hooks.into_iter().all(|(ifindex, dir)| {
            let own = if dir == Direction::Ingress { ids.0 } else { ids.1 };
            match order::tcx_first(ifindex, dir) {
                Ok(Some(first)) => first == own,
                // Empty (not attached yet) or unreadable (the device is
                // going): netlink events bring the pass for those.
                Ok(None) | Err(_) => true,
            }
        })
    }

    /// The kernel id of this load's program for `dir`, to compare with
    /// what is attached.
    pub fn prog_id(&self, dir: Direction) -> u32 {
        libbpf_rs::Program::id_from_fd(self.prog(dir).as_fd()).unwrap_or(0)
    }
}

/// The names of hostfwd's entry programs (in the object: `hf_ingress`,
/// `hf_egress`).
const OWN_PROG_NAMES: [&str; 2] = ["hf_ingress", "hf_egress"];

/// Whether a dumped cls_bpf filter (found at hostfwd's priority and handle)
/// runs hostfwd's program, told from the dump alone: the program's tag is
/// one of this load's (the same code, whoever attached it and under any
/// name), or the filter carries libbpf's `<prog name>:[<id>]` name with one
/// of hostfwd's program names (an earlier build, to be updated in place).
fn is_own_filter(f: &order::TcFilter, own_tags: &[[u8; 8]]) -> bool {
    f.kind == "bpf" && f.prog_id.is_some() && (f.tag.is_some_and(|t| own_tags.contains(&t)) || f.prog_name().is_some_and(|n| OWN_PROG_NAMES.contains(&n)))
}

fn tcx_hook_prog(e: &order::TcxEntry) -> HookProg {
    HookProg { id: e.prog_id, name: order::foreign_prog_name(e.prog_id), at: "tcx".into() }
}

/// The programs before hostfwd's link `own_link` on a tcx hook.
fn tcx_ahead(ifindex: u32, dir: Direction, own_link: u32) -> Result<Vec<HookProg>> {
    let chain = order::tcx_chain(ifindex, dir)?;
    let Some(pos) = chain.iter().position(|e| e.link_id == own_link) else { return Ok(Vec::new()) };
    Ok(chain[..pos].iter().map(tcx_hook_prog).collect())
}

/// Every tcx program of a hook (they all run before legacy filters); none
/// where the kernel has no tcx (EINVAL: the attach type is unknown). Any
/// other failure is an error.
fn tcx_chain_progs(ifindex: u32, dir: Direction) -> Result<Vec<HookProg>> {
    match order::tcx_chain(ifindex, dir) {
        Ok(c) => Ok(c.iter().map(tcx_hook_prog).collect()),
        Err(Error::Query { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn tc_point(dir: Direction) -> libbpf_rs::TcAttachPoint {
    match dir {
        Direction::Ingress => TC_INGRESS,
        Direction::Egress => TC_EGRESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(name: Option<&str>, id: u32, tag: [u8; 8]) -> order::TcFilter {
        order::TcFilter { priority: 1, handle: DEFAULT_TC_HANDLE, kind: "bpf".into(), prog_id: Some(id), bpf_name: name.map(Into::into), tag: Some(tag) }
    }

    #[test]
    fn own_filters_by_tag_or_libbpf_name() {
        let ours = [[1; 8], [2; 8]];
        // This build's code, under any name (here iproute2's).
        assert!(is_own_filter(&filter(Some("hostfwd.o:[tcx/ingress]"), 7, [2; 8]), &ours));
        // An earlier build, named by libbpf after hostfwd's program.
        assert!(is_own_filter(&filter(Some("hf_egress:[7]"), 7, [9; 8]), &ours));
        // Without this load's tags (programs not loaded): the name alone.
        assert!(is_own_filter(&filter(Some("hf_ingress:[7]"), 7, [9; 8]), &[]));
        // Someone else's program at hostfwd's place.
        assert!(!is_own_filter(&filter(Some("other:[7]"), 7, [9; 8]), &ours));
        // A name whose id is not the filter's program is not libbpf's.
        assert!(!is_own_filter(&filter(Some("hf_ingress:[8]"), 7, [9; 8]), &ours));
        assert!(!is_own_filter(&filter(None, 7, [9; 8]), &ours));
        let mut u32f = filter(Some("hf_ingress:[7]"), 7, [1; 8]);
        u32f.kind = "u32".into();
        assert!(!is_own_filter(&u32f, &ours), "only cls_bpf runs programs");
    }

    #[test]
    fn foreign_filters_are_named_from_the_dump() {
        assert_eq!(filter(Some("fw_in:[41]"), 41, [0; 8]).hook_prog().name, "fw_in");
        assert_eq!(filter(Some("obj.o:[tc]"), 41, [0; 8]).hook_prog().name, "obj.o:[tc]");
        let mut f = filter(None, 41, [0; 8]);
        f.kind = "flower".into();
        f.prog_id = None;
        let p = f.hook_prog();
        assert_eq!((p.id, p.name.as_str(), p.at.as_str()), (0, "flower", "tc prio 1 handle 0x4846"));
    }
}
