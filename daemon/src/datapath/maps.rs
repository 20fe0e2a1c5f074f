//! Typed writers and readers for every datapath map. Keys and values are
//! the `#[repr(C)]` mirrors from `hostfwd_bpf::layout`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hostfwd_bpf::layout::{self as l, Pod};
use hostfwd_bpf::DropReason;
use libbpf_rs::{MapCore, MapFlags, MapMut};

use super::{dir_code, Datapath, Direction, Error, Result};
use crate::policy::model::Action;
use crate::policy::image::MapImage;

/// Global datapath settings (`hf_global`, minus the policy generation which
/// only [`Datapath::apply_policy`] changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalSettings {
    pub audit: bool,
    pub drop_non_ip: bool,
    /// Events per second and CPU; 0 disables events (counters stay exact).
    pub events_per_sec: u32,
    pub events_burst: u32,
}

impl Default for GlobalSettings {
    fn default() -> Self {
        GlobalSettings { audit: true, drop_non_ip: false, events_per_sec: 1000, events_burst: 100 }
    }
}

/// A per-CPU-summed drop counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterEntry {
    pub ifindex: u32,
    pub dir: Direction,
    pub reason: Option<DropReason>,
    pub reason_code: u8,
    pub audit: bool,
    pub packets: u64,
}

/// A conntrack entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackEntry {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub state: u8,
    pub flags: u8,
    pub origin: Direction,
    pub ifindex: u32,
}

/// Between two policy swaps, packets that read the old generation must have
/// finished before its entries are reused; eBPF programs run to completion
/// in microseconds, so this margin is generous.
const GENERATION_GRACE: Duration = Duration::from_millis(50);

fn update<K: Pod, V: Pod>(map: &MapMut<'_>, name: &'static str, k: &K, v: &V) -> Result<()> {
    map.update(k.as_bytes(), v.as_bytes(), MapFlags::ANY).map_err(|source| Error::MapUpdate { map: name, source })
}

/// Deletes a key; a key that is not there is not an error.
fn delete<K: Pod>(map: &MapMut<'_>, name: &'static str, k: &K) -> Result<()> {
    match map.delete(k.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::MapUpdate { map: name, source }),
    }
}

fn lookup<K: Pod, V: Pod>(map: &MapMut<'_>, name: &'static str, k: &K) -> Result<Option<V>> {
    let raw = map.lookup(k.as_bytes(), MapFlags::ANY).map_err(|source| Error::MapRead { map: name, source })?;
    raw.map(|b| V::from_bytes(&b).ok_or(Error::MapLayout { map: name, len: b.len(), expected: std::mem::size_of::<V>() }))
        .transpose()
}

fn keys<K: Pod>(map: &MapMut<'_>) -> Vec<K> {
    map.keys().filter_map(|k| K::from_bytes(&k)).collect()
}

fn dir_from_code(c: u8) -> Direction {
    if c == l::DIR_EGRESS {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

impl Datapath {
    pub(super) fn init_global(&self) -> Result<()> {
        // An adopted datapath keeps its settings and active generation.
        if self.global()?.is_some() {
            return Ok(());
        }
        self.set_global(GlobalSettings::default())
    }

    fn global(&self) -> Result<Option<l::Global>> {
        let g: Option<l::Global> = lookup(&self.skel.maps.hf_global, "hf_global", &0u32)?;
        // An array map always has its slot; all-zero means never written.
        Ok(g.filter(|g| *g != l::Global::default()))
    }

    pub fn set_global(&self, s: GlobalSettings) -> Result<()> {
        let mut g = self.global()?.unwrap_or_default();
        g.flags = (if s.audit { l::G_AUDIT } else { 0 }) | (if s.drop_non_ip { l::G_DROP_NON_IP } else { 0 });
        g.events_per_sec = s.events_per_sec;
        g.events_burst = s.events_burst;
        // Mark the slot as written even with every setting off.
        g.events_burst = g.events_burst.max(1);
        update(&self.skel.maps.hf_global, "hf_global", &0u32, &g)
    }

    pub fn global_settings(&self) -> Result<GlobalSettings> {
        let g = self.global()?.unwrap_or_default();
        Ok(GlobalSettings {
            audit: g.flags & l::G_AUDIT != 0,
            drop_non_ip: g.flags & l::G_DROP_NON_IP != 0,
            events_per_sec: g.events_per_sec,
            events_burst: g.events_burst,
        })
    }

    /// Per-link flags (`L_ENFORCE_INGRESS`, …). A link without an entry is
    /// passed untouched even where a program is attached.
    pub fn set_link(&self, ifindex: u32, flags: u32) -> Result<()> {
        update(&self.skel.maps.hf_links, "hf_links", &ifindex, &l::Link { flags })
    }

    pub fn remove_link(&self, ifindex: u32) -> Result<()> {
        delete(&self.skel.maps.hf_links, "hf_links", &ifindex)
    }

    pub fn links(&self) -> Result<BTreeMap<u32, u32>> {
        let mut out = BTreeMap::new();
        for k in keys::<u32>(&self.skel.maps.hf_links) {
            if let Some(v) = lookup::<u32, l::Link>(&self.skel.maps.hf_links, "hf_links", &k)? {
                out.insert(k, v.flags);
            }
        }
        Ok(out)
    }

    pub fn allow_vlan(&self, ifindex: u32, vid: u16) -> Result<()> {
        update(&self.skel.maps.hf_vlans, "hf_vlans", &l::VlanKey { ifindex, vid, pad: 0 }, &1u8)
    }

    pub fn disallow_vlan(&self, ifindex: u32, vid: u16) -> Result<()> {
        delete(&self.skel.maps.hf_vlans, "hf_vlans", &l::VlanKey { ifindex, vid, pad: 0 })
    }

    /// Every allowed (ifindex, VID).
    pub fn vlans(&self) -> Vec<(u32, u16)> {
        let mut v: Vec<_> = keys::<l::VlanKey>(&self.skel.maps.hf_vlans).into_iter().map(|k| (k.ifindex, k.vid)).collect();
        v.sort_unstable();
        v
    }

    pub fn add_host_addr(&self, ip: IpAddr) -> Result<()> {
        update(&self.skel.maps.hf_host_addrs, "hf_host_addrs", &l::AddrKey { addr: l::addr16(ip) }, &1u8)
    }

    pub fn remove_host_addr(&self, ip: IpAddr) -> Result<()> {
        delete(&self.skel.maps.hf_host_addrs, "hf_host_addrs", &l::AddrKey { addr: l::addr16(ip) })
    }

    pub fn host_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<_> = keys::<l::AddrKey>(&self.skel.maps.hf_host_addrs).into_iter().map(|k| l::ip_from16(k.addr)).collect();
        v.sort_unstable();
        v
    }

    /// Replaces the failsafe set with `entries` (direction, protocol, port).
    pub fn set_failsafe(&self, entries: &[(Direction, u8, u16)]) -> Result<()> {
        let map = &self.skel.maps.hf_failsafe;
        let want: Vec<l::FailsafeKey> =
            entries.iter().map(|&(d, proto, port)| l::FailsafeKey { dir: dir_code(d), proto, port }).collect();
        for k in keys::<l::FailsafeKey>(map) {
            if !want.contains(&k) {
                delete(map, "hf_failsafe", &k)?;
            }
        }
        for k in &want {
            update(map, "hf_failsafe", k, &1u8)?;
        }
        Ok(())
    }

    pub fn failsafe(&self) -> Vec<(Direction, u8, u16)> {
        let mut v: Vec<_> = keys::<l::FailsafeKey>(&self.skel.maps.hf_failsafe)
            .into_iter()
            .map(|k| (dir_from_code(k.dir), k.proto, k.port))
            .collect();
        v.sort_unstable_by_key(|&(d, p, port)| (d as u8, p, port));
        v
    }

    /// Installs a compiled policy atomically: the image is written into the
    /// inactive generation, then one write to `hf_global` switches every
    /// packet from the old policy to the new one. Returns the new generation.
    pub fn apply_policy(&mut self, image: &MapImage) -> Result<u32> {
        let mut g = self.global()?.unwrap_or_default();
        let next = (g.policy_gen & 1) ^ 1;
        if let Some(t) = self.last_policy_swap {
            let since = t.elapsed();
            if since < GENERATION_GRACE {
                std::thread::sleep(GENERATION_GRACE - since);
            }
        }
        self.clear_generation(next as u8)?;

        let idents = &self.skel.maps.hf_identities;
        for e in &image.identities {
            let net = e.prefix.trunc();
            let (addr, bits) = match net {
                ipnet::IpNet::V4(n) => (l::addr16(IpAddr::V4(n.network())), 96 + n.prefix_len() as u32),
                ipnet::IpNet::V6(n) => (l::addr16(IpAddr::V6(n.network())), n.prefix_len() as u32),
            };
            let k = l::IdentKey { prefixlen: 8 + bits, gen: next as u8, addr, pad: [0; 3] };
            update(idents, "hf_identities", &k, &e.identity)?;
        }
        let rules = &self.skel.maps.hf_rules;
        for r in &image.rules {
            let (prefixlen, proto, port) = match (r.proto, r.port) {
                (None, _) => (l::RULE_L3_BITS, 0, 0),
                (Some(p), None) => (l::RULE_PROTO_BITS, p, 0),
                (Some(p), Some((v, plen))) => (l::RULE_PROTO_BITS + plen as u32, p, v),
            };
            let k = l::RuleKey {
                prefixlen,
                identity: r.identity.to_be_bytes(),
                gen: next as u8,
                dir: dir_code(r.direction),
                proto,
                port: port.to_be_bytes(),
                pad: [0; 3],
            };
            let action = match r.action {
                Action::Allow => l::ACTION_ALLOW,
                Action::Deny => l::ACTION_DENY,
            };
            update(rules, "hf_rules", &k, &l::RuleVal { rule_id: r.rule_id, action, pad: [0; 3] })?;
        }
        let meta = l::PolicyMeta {
            flags: (if image.enforce_ingress { l::P_ENFORCE_INGRESS } else { 0 })
                | (if image.enforce_egress { l::P_ENFORCE_EGRESS } else { 0 }),
        };
        update(&self.skel.maps.hf_policy_meta, "hf_policy_meta", &next, &meta)?;

        // The switch: from here on, new packets see the new generation.
        g.policy_gen = next;
        g.events_burst = g.events_burst.max(1);
        update(&self.skel.maps.hf_global, "hf_global", &0u32, &g)?;
        self.last_policy_swap = Some(Instant::now());
        Ok(next)
    }

    /// The generation packets currently see.
    pub fn policy_generation(&self) -> Result<u32> {
        Ok(self.global()?.map(|g| g.policy_gen & 1).unwrap_or(0))
    }

    /// Number of (identity, rule) entries of a generation, for tests and stats.
    pub fn policy_entries(&self, gen: u32) -> (usize, usize) {
        let i = keys::<l::IdentKey>(&self.skel.maps.hf_identities).iter().filter(|k| k.gen as u32 == gen).count();
        let r = keys::<l::RuleKey>(&self.skel.maps.hf_rules).iter().filter(|k| k.gen as u32 == gen).count();
        (i, r)
    }

    fn clear_generation(&self, gen: u8) -> Result<()> {
        let idents = &self.skel.maps.hf_identities;
        for k in keys::<l::IdentKey>(idents).into_iter().filter(|k| k.gen == gen) {
            delete(idents, "hf_identities", &k)?;
        }
        let rules = &self.skel.maps.hf_rules;
        for k in keys::<l::RuleKey>(rules).into_iter().filter(|k| k.gen == gen) {
            delete(rules, "hf_rules", &k)?;
        }
        update(&self.skel.maps.hf_policy_meta, "hf_policy_meta", &(gen as u32), &l::PolicyMeta::default())
    }

    /// Drop counters summed over CPUs.
    pub fn counters(&self) -> Result<Vec<CounterEntry>> {
        let map = &self.skel.maps.hf_counters;
        let mut out = Vec::new();
        for k in keys::<l::CounterKey>(map) {
            let per_cpu = map
                .lookup_percpu(k.as_bytes(), MapFlags::ANY)
                .map_err(|source| Error::MapRead { map: "hf_counters", source })?
                .unwrap_or_default();
            let packets = per_cpu.iter().filter_map(|v| v.get(..8)).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))).sum();
            out.push(CounterEntry {
                ifindex: k.ifindex,
                dir: dir_from_code(k.dir),
                reason: DropReason::from_code(k.reason),
                reason_code: k.reason,
                audit: k.audit != 0,
                packets,
            });
        }
        out.sort_by_key(|c| (c.ifindex, c.dir as u8, c.reason_code, c.audit));
        Ok(out)
    }

    /// Sum of a drop counter over links, directions and audit flag.
    pub fn drops(&self, reason: DropReason) -> Result<u64> {
        Ok(self.counters()?.iter().filter(|c| c.reason == Some(reason)).map(|c| c.packets).sum())
    }

    /// Events suppressed by the per-CPU rate limit, summed over CPUs.
    pub fn events_suppressed(&self) -> Result<u64> {
        let per_cpu = self
            .skel
            .maps
            .hf_ratelimit
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| Error::MapRead { map: "hf_ratelimit", source })?
            .unwrap_or_default();
        Ok(per_cpu.iter().filter_map(|b| l::Ratelimit::from_bytes(b)).map(|r| r.suppressed).sum())
    }

    pub fn conntrack(&self) -> Result<Vec<ConntrackEntry>> {
        let map = &self.skel.maps.hf_conntrack;
        let mut out = Vec::new();
        for k in keys::<l::CtKey>(map) {
            if let Some(v) = lookup::<l::CtKey, l::CtVal>(map, "hf_conntrack", &k)? {
                out.push(ConntrackEntry {
                    src: l::ip_from16(k.saddr),
                    dst: l::ip_from16(k.daddr),
                    sport: k.sport,
                    dport: k.dport,
                    proto: k.proto,
                    state: v.state,
                    flags: v.flags,
                    origin: dir_from_code(v.origin_dir),
                    ifindex: v.ifindex,
                });
            }
        }
        Ok(out)
    }

    /// Empties the maps that hold per-flow state (conntrack, fragments).
    pub fn flush_flows(&self) -> Result<()> {
        for k in keys::<l::CtKey>(&self.skel.maps.hf_conntrack) {
            delete(&self.skel.maps.hf_conntrack, "hf_conntrack", &k)?;
        }
        for k in keys::<l::FragKey>(&self.skel.maps.hf_frags) {
            delete(&self.skel.maps.hf_frags, "hf_frags", &k)?;
        }
        Ok(())
    }

    /// Empties the drop counters.
    pub fn reset_counters(&self) -> Result<()> {
        for k in keys::<l::CounterKey>(&self.skel.maps.hf_counters) {
            delete(&self.skel.maps.hf_counters, "hf_counters", &k)?;
        }
        Ok(())
    }
}
