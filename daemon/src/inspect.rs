//! What the kernel holds for hostfwd, read back from the maps and hooks:
//! `hostfwd inspect` prints it as JSON (tests and operators read it; the
//! reconciler reads the same state).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::datapath::{self, Datapath};
use hostfwd_bpf::layout as l;

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub mode: &'static str,
    pub attachments: Vec<AttachmentView>,
    pub links: Vec<LinkView>,
    pub vlans: Vec<VlanView>,
    /// Full-length local addresses (`hf_host_addrs`).
    pub host_addrs: Vec<IpAddr>,
    /// Shorter local prefixes (`hf_local_nets`, `ip route add local`).
    pub local_prefixes: Vec<ipnet::IpNet>,
    pub counters: Vec<CounterView>,
    pub policy_generation: u32,
    pub audit: bool,
    /// tcx only: how many programs the kernel runs on each hook hostfwd is
    /// attached to (anything above one of ours would be a duplicate).
    pub hooks: Vec<HookView>,
    pub memory: MemoryView,
}

/// Kernel memory of hostfwd's maps, as the kernel charges it (fdinfo
/// `memlock`).
#[derive(Debug, Serialize)]
pub struct MemoryView {
    pub total_bytes: u64,
    pub maps: Vec<datapath::MapMemory>,
}

#[derive(Debug, Serialize)]
pub struct HookView {
    pub ifindex: u32,
    pub name: String,
    pub direction: &'static str,
    pub programs: usize,
}

#[derive(Debug, Serialize)]
pub struct AttachmentView {
    pub ifindex: u32,
    pub name: String,
    pub direction: &'static str,
    pub prog_id: u32,
    /// Programs that run before hostfwd's on this hook.
    pub ahead: Vec<crate::reconcile::HookProg>,
}

#[derive(Debug, Serialize)]
pub struct LinkView {
    pub ifindex: u32,
    pub name: String,
    pub flags: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct VlanView {
    pub ifindex: u32,
    pub name: String,
    pub vid: u16,
}

#[derive(Debug, Serialize)]
pub struct CounterView {
    pub ifindex: u32,
    pub direction: &'static str,
    pub reason: String,
    pub audit: bool,
    pub packets: u64,
}

/// Names of the links of the caller's network namespace.
fn names() -> BTreeMap<u32, String> {
    nix::net::if_::if_nameindex()
        .map(|l| l.iter().map(|i| (i.index(), i.name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default()
}

pub fn link_flag_names(flags: u32) -> Vec<&'static str> {
    [
        (l::L_ENFORCE_INGRESS, "enforce-ingress"),
        (l::L_ENFORCE_EGRESS, "enforce-egress"),
        (l::L_AUDIT, "audit"),
        (l::L_VLAN_ALLOW_ALL, "vlan-allow-all"),
    ]
    .into_iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| n)
    .collect()
}

pub fn snapshot(dp: &Datapath) -> datapath::Result<Snapshot> {
    let names = names();
    let name = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("#{i}"));
    let attachments = dp.attachments()?;
    let hooks = if dp.mode() == datapath::AttachMode::Tcx {
        attachments
            .iter()
            .filter_map(|a| {
                let progs = Datapath::tcx_progs(a.ifindex, a.dir).ok()?;
                Some(HookView { ifindex: a.ifindex, name: name(a.ifindex), direction: datapath::dir_name(a.dir), programs: progs.len() })
            })
            .collect()
    } else {
        Vec::new()
    };
    let maps = dp.map_memory()?;
    let memory = MemoryView { total_bytes: maps.iter().map(|m| m.memlock).sum(), maps };
    Ok(Snapshot {
        memory,
        hooks,
        mode: dp.mode().name(),
        attachments: attachments
            .into_iter()
            .map(|a| AttachmentView {
                ifindex: a.ifindex,
                name: name(a.ifindex),
                direction: datapath::dir_name(a.dir),
                prog_id: a.prog_id,
                ahead: a.ahead,
            })
            .collect(),
        links: dp.links()?.into_iter().map(|(i, f)| LinkView { ifindex: i, name: name(i), flags: link_flag_names(f) }).collect(),
        vlans: dp.vlans().into_iter().map(|(i, vid)| VlanView { ifindex: i, name: name(i), vid }).collect(),
        host_addrs: dp.host_addrs(),
        local_prefixes: dp.local_nets().into_iter().filter(|n| n.prefix_len() < n.max_prefix_len()).collect(),
        counters: dp
            .counters()?
            .into_iter()
            .map(|c| CounterView {
                ifindex: c.ifindex,
                direction: datapath::dir_name(c.dir),
                reason: c.reason.map(|r| r.name().to_string()).unwrap_or_else(|| format!("unknown-{}", c.reason_code)),
                audit: c.audit,
                packets: c.packets,
            })
            .collect(),
        policy_generation: dp.policy_generation()?,
        audit: dp.global_settings()?.audit,
    })
}

impl Snapshot {
    /// One fact per line, for shell scripts (`grep -qx 'vlan bond0 1000'`):
    /// `mode M`, `attach NAME DIR`, `link NAME FLAGS`, `vlan NAME VID`,
    /// `addr IP`, `local PREFIX`, `drop NAME DIR REASON audit|enforced PACKETS`,
    /// `ahead NAME DIR PROGRAM ID` (a program that runs before hostfwd's),
    /// `memory TOTAL_BYTES`, `map NAME MAX_ENTRIES BYTES`.
    pub fn lines(&self) -> String {
        let mut out = format!("mode {}\n", self.mode);
        for a in &self.attachments {
            out += &format!("attach {} {}\n", a.name, a.direction);
        }
        for a in &self.attachments {
            for p in &a.ahead {
                out += &format!("ahead {} {} {} {}\n", a.name, a.direction, p.name, p.id);
            }
        }
        for h in &self.hooks {
            out += &format!("hook {} {} {}\n", h.name, h.direction, h.programs);
        }
        for l in &self.links {
            out += &format!("link {} {}\n", l.name, l.flags.join(","));
        }
        for v in &self.vlans {
            out += &format!("vlan {} {}\n", v.name, v.vid);
        }
        for a in &self.host_addrs {
            out += &format!("addr {a}\n");
        }
        for n in &self.local_prefixes {
            out += &format!("local {n}\n");
        }
        for c in &self.counters {
            let name = self.attachments.iter().find(|a| a.ifindex == c.ifindex).map(|a| a.name.clone()).unwrap_or_else(|| format!("#{}", c.ifindex));
            out += &format!("drop {name} {} {} {} {}\n", c.direction, c.reason, if c.audit { "audit" } else { "enforced" }, c.packets);
        }
        out += &format!("memory {}\n", self.memory.total_bytes);
        for m in &self.memory.maps {
            out += &format!("map {} {} {}\n", m.map, m.max_entries, m.memlock);
        }
        out
    }
}
