//! Who runs before hostfwd on a hook: the tcx chain in order (prog and link
//! ids from BPF_PROG_QUERY) and the legacy clsact filters in the order they
//! run (an RTM_GETTFILTER dump lists them as they are classified: by
//! priority, and within one cls_bpf priority newest first).
//!
//! Whoever is first on a hook decides: a tcx program returning "pass"
//! (TCX_PASS) ends the chain, as does a direct-action cls_bpf filter
//! returning TC_ACT_OK, and tcx runs before every legacy filter. hostfwd
//! itself passes with TCX_NEXT/TC_ACT_UNSPEC so that later programs still run.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{Direction, Error, Result};
use crate::reconcile::HookProg;

/// Most programs a tcx hook lists in one query; more is not a real setup
/// (the kernel's own limit is 64 per hook).
const MAX_TCX: usize = 64;

pub(super) fn tcx_attach_type(dir: Direction) -> u32 {
    match dir {
        Direction::Ingress => libbpf_sys::BPF_TCX_INGRESS,
        Direction::Egress => libbpf_sys::BPF_TCX_EGRESS,
    }
}

pub(super) fn query_opts() -> libbpf_sys::bpf_prog_query_opts {
    // SAFETY: a zeroed bpf_prog_query_opts is valid once sz is set.
    let mut opts: libbpf_sys::bpf_prog_query_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _;
    opts
}

/// A failed BPF_PROG_QUERY; refused for lack of privilege, it says which.
fn query_err(ifindex: u32, errno: i32) -> Error {
    let source = io::Error::from_raw_os_error(errno);
    match errno {
        libc::EPERM | libc::EACCES => Error::NeedsCapability { op: "querying the tcx programs (BPF_PROG_QUERY)", ifindex, cap: "CAP_NET_ADMIN", source },
        _ => Error::Query { ifindex, source },
    }
}

/// One entry of a tcx chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcxEntry {
    pub prog_id: u32,
    /// 0 for a program attached without a link (BPF_PROG_ATTACH).
    pub link_id: u32,
}

/// The tcx chain of `ifindex`/`dir` in the order it runs.
pub fn tcx_chain(ifindex: u32, dir: Direction) -> Result<Vec<TcxEntry>> {
    let mut progs = [0u32; MAX_TCX];
    let mut links = [0u32; MAX_TCX];
    let mut opts = query_opts();
    opts.prog_ids = progs.as_mut_ptr();
    opts.link_ids = links.as_mut_ptr();
    opts.__bindgen_anon_1.count = MAX_TCX as u32;
    // SAFETY: prog_ids and link_ids point at `count` writable u32s each,
    // alive for the call.
    let rc = unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, tcx_attach_type(dir), &mut opts) };
    if rc != 0 {
        return Err(query_err(ifindex, -rc));
    }
    // SAFETY: both union members are the same u32.
    let n = (unsafe { opts.__bindgen_anon_1.count } as usize).min(MAX_TCX);
    Ok((0..n).map(|i| TcxEntry { prog_id: progs[i], link_id: links[i] }).collect())
}

/// The id of the program that runs first on the tcx hook, if any: one
/// query that copies a single id (the periodic order check).
pub fn tcx_first(ifindex: u32, dir: Direction) -> Result<Option<u32>> {
    let mut id = 0u32;
    let mut opts = query_opts();
    opts.prog_ids = &mut id;
    opts.__bindgen_anon_1.count = 1;
    // SAFETY: prog_ids points at one writable u32 (count = 1).
    let rc = unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, tcx_attach_type(dir), &mut opts) };
    // ENOSPC: more programs than the one slot; the first id is filled in.
    if rc != 0 && rc != -libc::ENOSPC {
        return Err(query_err(ifindex, -rc));
    }
    // SAFETY: both union members are the same u32.
    let n = unsafe { opts.__bindgen_anon_1.count };
    Ok((n > 0).then_some(id))
}

/// The kernel's description of a program behind an fd this process holds
/// (BPF_OBJ_GET_INFO_BY_FD: no capability needed for its own programs).
pub fn prog_info(fd: RawFd) -> io::Result<libbpf_sys::bpf_prog_info> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a writable bpf_prog_info of `len` bytes.
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(info)
}

/// The name the kernel keeps for a program (BPF_OBJ_NAME_LEN bytes).
pub fn info_name(info: &libbpf_sys::bpf_prog_info) -> String {
    let bytes: Vec<u8> = info.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// What a report calls a program known only by id when its name cannot be
/// read: opening another's program by id (BPF_PROG_GET_FD_BY_ID) needs
/// CAP_SYS_ADMIN, which the unit does not grant.
pub const UNNAMED: &str = "?";

/// The name of someone else's program on a tcx hook, for reports only:
/// best effort, [`UNNAMED`] when it is gone or cannot be opened (EPERM
/// without CAP_SYS_ADMIN). Nothing decides on it: hostfwd's own links are
/// known from their pins, its own legacy filters from the dump.
pub fn foreign_prog_name(id: u32) -> String {
    let name = libbpf_rs::Program::fd_from_id(id).ok().and_then(|fd| prog_info(fd.as_raw_fd()).ok()).map(|i| info_name(&i));
    match name {
        Some(n) if !n.is_empty() => n,
        _ => UNNAMED.to_string(),
    }
}

/// One legacy filter of a clsact hook (chain 0), as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub priority: u16,
    pub handle: u32,
    /// `bpf`, `u32`, `flower`, …
    pub kind: String,
    /// The program of a cls_bpf filter (TCA_BPF_ID).
    pub prog_id: Option<u32>,
    /// TCA_BPF_NAME: what the loader called it (`obj.o:[sec]`, `name:[id]`).
    pub bpf_name: Option<String>,
    /// TCA_BPF_TAG: the hash of the program's instructions (map references
    /// left out), the same for every load of the same code.
    pub tag: Option<[u8; 8]>,
}

impl TcFilter {
    /// The program's own name, where the loader put it in the filter's
    /// name: libbpf's `bpf_tc_attach` names a filter `<prog name>:[<prog
    /// id>]`. `None` for other loaders' names (iproute2: `obj.o:[sec]`).
    pub fn prog_name(&self) -> Option<&str> {
        let (name, rest) = self.bpf_name.as_deref()?.rsplit_once(":[")?;
        let id: u32 = rest.strip_suffix(']')?.parse().ok()?;
        (Some(id) == self.prog_id && !name.is_empty()).then_some(name)
    }

    /// How a report names it, from the dump alone: the program's name (or
    /// the filter's name, or its kind), id and place.
    pub fn hook_prog(&self) -> HookProg {
        let id = self.prog_id.unwrap_or(0);
        let name = match (self.prog_name(), &self.bpf_name) {
            (Some(n), _) => n.to_string(),
            (None, Some(n)) if !n.is_empty() => n.clone(),
            _ => self.kind.clone(),
        };
        HookProg { id, name, at: format!("tc prio {} handle {:#x}", self.priority, self.handle) }
    }
}

fn nl_err(ifindex: u32, source: io::Error) -> Error {
    Error::Query { ifindex, source }
}

/// The filters of the clsact `dir` hook of `ifindex` (in the calling
/// thread's network namespace), in the order the kernel runs them. A device
/// without clsact has none; a device that is gone is an error.
pub fn tc_filters(ifindex: u32, dir: Direction) -> Result<Vec<TcFilter>> {
    let minor = match dir {
        Direction::Ingress => TcHandle::MIN_INGRESS,
        Direction::Egress => TcHandle::MIN_EGRESS,
    };
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle { major: 0xffff, minor };
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);

    let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err(ifindex, e))?;
    sock.bind_auto().map_err(|e| nl_err(ifindex, e))?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(|e| nl_err(ifindex, e))?;
    sock.send(&buf, 0).map_err(|e| nl_err(ifindex, e))?;

    let mut out = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full().map_err(|e| nl_err(ifindex, e))?;
        let mut off = 0;
        while off < data.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                .map_err(|e| nl_err(ifindex, io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    let err = e.to_io();
                    // No clsact qdisc: no filters.
                    return match err.raw_os_error() {
                        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(out),
                        _ => Err(nl_err(ifindex, err)),
                    };
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(m)) => {
                    if let Some(f) = parse_filter(&m) {
                        out.push(f);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

/// A filter of chain 0 (other chains run only through `goto chain`);
/// `None` for the per-priority header entry (handle 0) and other chains.
fn parse_filter(m: &TcMessage) -> Option<TcFilter> {
    let handle: u32 = m.header.handle.into();
    let mut kind = None;
    let (mut prog_id, mut bpf_name, mut tag) = (None, None, None);
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => kind = Some(k.clone()),
            TcAttribute::Chain(c) if *c != 0 => return None,
            TcAttribute::Options(opts) => {
                for o in opts {
                    match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => prog_id = Some(*id),
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => bpf_name = Some(n.clone()),
                        TcOption::Bpf(TcFilterBpfOption::ProgTag(t)) => tag = Some(*t),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // The kernel sends an entry per priority with handle 0 before its
    // filters (a classifier without filters yet).
    if handle == 0 {
        return None;
    }
    Some(TcFilter { priority: (m.header.info >> 16) as u16, handle, kind: kind.unwrap_or_default(), prog_id, bpf_name, tag })
}
