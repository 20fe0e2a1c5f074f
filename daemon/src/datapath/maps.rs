//! Typed writers and readers for every datapath map. Keys and values are
//! the `#[repr(C)]` mirrors from `hostfwd_bpf::layout`.

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use hostfwd_bpf::layout::{self as l, Pod};
use hostfwd_bpf::DropReason;
use ipnet::IpNet;
use libbpf_rs::{MapCore, MapFlags, MapMut};

use super::{dir_code, Datapath, Direction, Error, Result};
use crate::policy::image::{prefix_mask, MapImage, MAPPED_BASE};
use crate::policy::model::Action;

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
    /// In the host's own maps (`hf_ct*_out`): a flow the host started.
    pub host_started: bool,
}

/// Between two policy swaps, packets that read the old generation must have
/// finished before its entries are reused; eBPF programs run to completion
/// in microseconds, so this margin is generous.
const GENERATION_GRACE: Duration = Duration::from_millis(50);

/// The kernel's tick: its length in ns and the value jiffies start from at
/// boot, for the datapath's clock (`hf_now`: jiffies, read without a helper
/// call, scaled to CLOCK_MONOTONIC). The resolution of CLOCK_MONOTONIC_COARSE
/// is the tick length (TICK_NSEC) by definition; HZ follows, and from it
/// INITIAL_JIFFIES, `(unsigned int)(-300 * HZ)`. (0, 0) if the answer is
/// implausible: the datapath then reads the coarse clock instead.
fn kernel_tick() -> (u32, u64) {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_getres only writes the timespec it is given.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 || ts.tv_sec != 0 || !(100_000..=100_000_000).contains(&ts.tv_nsec) {
        return (0, 0);
    }
    let tick_ns = ts.tv_nsec as u32;
    let hz = ((1_000_000_000 + tick_ns / 2) / tick_ns).max(1);
    (tick_ns, u64::from(0u32.wrapping_sub(300 * hz)))
}

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

/// Entries per batch syscall: large policies are written in a few calls
/// instead of one per entry.
const BATCH: usize = 8192;

/// Writes every (key, value) with batch updates.
fn update_all<K: Pod, V: Pod>(map: &MapMut<'_>, name: &'static str, entries: &[(K, V)]) -> Result<()> {
    for chunk in entries.chunks(BATCH) {
        let keys: Vec<u8> = chunk.iter().flat_map(|(k, _)| k.as_bytes().iter().copied()).collect();
        let values: Vec<u8> = chunk.iter().flat_map(|(_, v)| v.as_bytes().iter().copied()).collect();
        map.update_batch(&keys, &values, chunk.len() as u32, MapFlags::ANY, MapFlags::ANY)
            .map_err(|source| Error::MapUpdate { map: name, source })?;
    }
    Ok(())
}

/// Every (key, value) of a map, read with batch lookups (one syscall per
/// `BATCH` entries instead of two per entry); unlike libbpf-rs's batch
/// iterator, an error is an error, not the end of the map.
fn entries<K: Pod, V: Pod>(map: &MapMut<'_>, name: &'static str) -> Result<Vec<(K, V)>> {
    let (ksize, vsize) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut keys = vec![0u8; ksize * BATCH];
    let mut values = vec![0u8; vsize * BATCH];
    // The position between batches: a bucket number for hashes, a key for
    // arrays; opaque either way.
    let mut pos = vec![0u8; ksize.max(8)];
    let mut next = vec![0u8; ksize.max(8)];
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut first = true;
    loop {
        let mut count = BATCH as u32;
        // SAFETY: every buffer is as large as the kernel may fill (count
        // keys and values; a position of at least the key size).
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                if first { std::ptr::null_mut() } else { pos.as_mut_ptr().cast() },
                next.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        let err = (rc != 0).then(std::io::Error::last_os_error);
        let n = (count as usize).min(BATCH);
        for (k, v) in keys.chunks_exact(ksize).zip(values.chunks_exact(vsize)).take(n) {
            if let (Some(k), Some(v)) = (K::from_bytes(k), V::from_bytes(v)) {
                out.push((k, v));
            }
        }
        match err {
            None => {}
            // The last batch: count holds what it returned.
            Some(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Some(e) => return Err(Error::MapRead { map: name, source: e.into() }),
        }
        std::mem::swap(&mut pos, &mut next);
        first = false;
    }
}

/// Deletes every key for which `pred` holds, with batch deletes.
fn delete_where<K: Pod, V: Pod>(map: &MapMut<'_>, name: &'static str, pred: impl Fn(&K) -> bool) -> Result<()> {
    let doomed: Vec<K> = entries::<K, V>(map, name)?.into_iter().map(|(k, _)| k).filter(|k| pred(k)).collect();
    for chunk in doomed.chunks(BATCH) {
        let keys: Vec<u8> = chunk.iter().flat_map(|k| k.as_bytes().iter().copied()).collect();
        map.delete_batch(&keys, chunk.len() as u32, MapFlags::ANY, MapFlags::ANY)
            .map_err(|source| Error::MapUpdate { map: name, source })?;
    }
    Ok(())
}

/// Deletes `keys` with batch deletes; false if one of them was missing (the
/// kernel stops there) or a delete failed.
fn delete_keys<K: Pod>(map: &MapMut<'_>, keys: &[K]) -> bool {
    keys.chunks(BATCH).all(|chunk| {
        let bytes: Vec<u8> = chunk.iter().flat_map(|k| k.as_bytes().iter().copied()).collect();
        map.delete_batch(&bytes, chunk.len() as u32, MapFlags::ANY, MapFlags::ANY).is_ok()
    })
}

fn keys<K: Pod>(map: &impl MapCore) -> Vec<K> {
    map.keys().filter_map(|k| K::from_bytes(&k)).collect()
}

/// A /32 or /128: the hash holds it.
fn is_host_prefix(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The trie key of a prefix: IPv4 mapped, its length counted from bit 0 of
/// the mapped address.
fn local_net_key(net: IpNet) -> l::LocalNetKey {
    let prefixlen = match net {
        IpNet::V4(n) => 96 + u32::from(n.prefix_len()),
        IpNet::V6(n) => u32::from(n.prefix_len()),
    };
    l::LocalNetKey { prefixlen, addr: l::addr16(net.addr()) }
}

/// The inverse of [`local_net_key`]; `None` for a key no writer makes.
fn net_from_key(k: l::LocalNetKey) -> Option<IpNet> {
    let ip = l::ip_from16(k.addr);
    let len = match ip {
        IpAddr::V4(_) => k.prefixlen.checked_sub(96)?,
        IpAddr::V6(_) => k.prefixlen,
    };
    IpNet::new(ip, u8::try_from(len).ok()?).ok()
}

/// A conntrack entry from its canonical key: endpoint a or b is the source,
/// as recorded by the entry.
fn ct_entry(a: (IpAddr, u16), b: (IpAddr, u16), proto: u8, v: &l::CtVal, host_started: bool) -> ConntrackEntry {
    let ((src, sport), (dst, dport)) = if v.origin_a != 0 { (a, b) } else { (b, a) };
    ConntrackEntry {
        src,
        dst,
        sport,
        dport,
        proto,
        state: v.state,
        flags: v.flags,
        origin: dir_from_code(v.origin_dir),
        ifindex: v.ifindex,
        host_started,
    }
}

/// Every drop counter of `map` (`hf_counters`: the loaded one, or its pin
/// read by another process), summed over CPUs, in key order.
fn read_counters(map: &impl MapCore) -> Result<Vec<CounterEntry>> {
    let mut out = Vec::new();
    for k in keys::<l::CounterKey>(map) {
        // A key deleted since it was listed is no counter any more.
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

/// The drop counters from the pinned map under `paths`, without loading
/// the datapath (readers beside the one writer).
pub fn pinned_counters(paths: &super::Paths) -> Result<Vec<CounterEntry>> {
    let path = paths.map("hf_counters");
    let map = libbpf_rs::MapHandle::from_pinned_path(&path).map_err(|source| Error::OpenPinned { path, source })?;
    read_counters(&map)
}

fn dir_from_code(c: u8) -> Direction {
    if c == l::DIR_EGRESS {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

impl Datapath {
    /// Returns whether the settings were there already (pinned maps
    /// adopted from an earlier run, not a cold start).
    pub(super) fn init_global(&self) -> Result<bool> {
        // An adopted datapath keeps its settings and active generation.
        let adopted = self.global()?.is_some();
        if !adopted {
            self.set_global(GlobalSettings::default())?;
        }
        // The datapath's clock (hf_now in the C code); kept up to date on
        // adoption too, it is a property of the running kernel.
        let mut g = self.global()?.unwrap_or_default();
        let (tick_ns, jiffies_epoch) = kernel_tick();
        if (g.tick_ns, g.jiffies_epoch) != (tick_ns, jiffies_epoch) {
            g.tick_ns = tick_ns;
            g.jiffies_epoch = jiffies_epoch;
            update(&self.skel.maps.hf_global, "hf_global", &0u32, &g)?;
        }
        Ok(adopted)
    }

    fn global(&self) -> Result<Option<l::Global>> {
        let g: Option<l::Global> = lookup(&self.skel.maps.hf_global, "hf_global", &0u32)?;
        // An array map always has its slot; all-zero means never written.
        Ok(g.filter(|g| *g != l::Global::default()))
    }

    pub fn set_global(&self, s: GlobalSettings) -> Result<()> {
        let mut g = self.global()?.unwrap_or_default();
        // G_LOCAL_NETS follows hf_local_nets (set_local_nets_flag), not settings.
        let flags = (g.flags & l::G_LOCAL_NETS)
            | (if s.audit { l::G_AUDIT } else { 0 })
            | (if s.drop_non_ip { l::G_DROP_NON_IP } else { 0 });
        if flags != g.flags {
            // Audit on or off: every tracked flow is judged again.
            g.epoch = g.epoch.wrapping_add(1);
        }
        g.flags = flags;
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
    ///
    /// The datapath reads the `hf_link_slots` array for an ifindex below
    /// `LINK_SLOTS` and `hf_links` above; `hf_links` also lists every link
    /// for [`Datapath::links`], which reports what the datapath reads. The
    /// order of the two writes makes an interrupted call show up there as a
    /// difference that the next reconcile pass repairs.
    pub fn set_link(&self, ifindex: u32, flags: u32) -> Result<()> {
        let flags = flags & !l::L_CONFIGURED;
        update(&self.skel.maps.hf_links, "hf_links", &ifindex, &l::Link { flags })?;
        if ifindex < l::LINK_SLOTS {
            update(&self.skel.maps.hf_link_slots, "hf_link_slots", &ifindex, &l::Link { flags: flags | l::L_CONFIGURED })?;
        }
        // Enforcement or audit of a link changed: flows are judged again.
        self.bump_epoch()
    }

    /// Starts a new verdict epoch: every tracked flow is judged again on its
    /// next packet (conntrack entries remember the epoch of their verdict).
    fn bump_epoch(&self) -> Result<()> {
        let mut g = self.global()?.unwrap_or_default();
        g.epoch = g.epoch.wrapping_add(1);
        g.events_burst = g.events_burst.max(1);
        update(&self.skel.maps.hf_global, "hf_global", &0u32, &g)
    }

    pub fn remove_link(&self, ifindex: u32) -> Result<()> {
        if ifindex < l::LINK_SLOTS {
            update(&self.skel.maps.hf_link_slots, "hf_link_slots", &ifindex, &l::Link::default())?;
        }
        delete(&self.skel.maps.hf_links, "hf_links", &ifindex)
    }

    /// Every configured link and its flags, as the datapath sees them.
    pub fn links(&self) -> Result<BTreeMap<u32, u32>> {
        let mut out = BTreeMap::new();
        for k in keys::<u32>(&self.skel.maps.hf_links) {
            let flags = if k < l::LINK_SLOTS {
                lookup::<u32, l::Link>(&self.skel.maps.hf_link_slots, "hf_link_slots", &k)?
                    .filter(|s| s.flags & l::L_CONFIGURED != 0)
                    .map(|s| s.flags & !l::L_CONFIGURED)
            } else {
                lookup::<u32, l::Link>(&self.skel.maps.hf_links, "hf_links", &k)?.map(|v| v.flags)
            };
            if let Some(flags) = flags {
                out.insert(k, flags);
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

    /// Adds a host address (a local host prefix, see [`Datapath::add_local`]).
    pub fn add_host_addr(&self, ip: IpAddr) -> Result<()> {
        self.add_local(IpNet::from(ip))
    }

    /// Removes a host address (see [`Datapath::remove_local`]).
    pub fn remove_host_addr(&self, ip: IpAddr) -> Result<()> {
        self.remove_local(IpNet::from(ip))
    }

    /// Makes an address or prefix local: traffic to it (ingress) or from it
    /// (egress) is the host's own and judged. A full-length one goes into
    /// the `hf_host_addrs` hash, a shorter one into the `hf_local_nets`
    /// trie, which the datapath consults only while `G_LOCAL_NETS` is set.
    /// A full map is [`Error::LocalFull`]: the address would otherwise pass
    /// unjudged without anyone knowing.
    pub fn add_local(&self, net: IpNet) -> Result<()> {
        let net = net.trunc();
        let m = &self.skel.maps;
        if is_host_prefix(&net) {
            let k = l::AddrKey { addr: l::addr16(net.addr()) };
            return m
                .hf_host_addrs
                .update(k.as_bytes(), 1u8.as_bytes(), MapFlags::ANY)
                .map_err(|source| self.local_error(&m.hf_host_addrs, "hf_host_addrs", net, source));
        }
        let k = local_net_key(net);
        m.hf_local_nets
            .update(k.as_bytes(), 1u8.as_bytes(), MapFlags::ANY)
            .map_err(|source| self.local_error(&m.hf_local_nets, "hf_local_nets", net, source))?;
        // The entry before the flag: a packet that sees the flag finds it.
        self.set_local_nets_flag(true)
    }

    /// A failed write of a local net: [`Error::LocalFull`] when the map holds
    /// `max` entries (hashes report E2BIG, the trie ENOSPC), else
    /// [`Error::LocalUpdate`].
    fn local_error(&self, map: &MapMut<'_>, name: &'static str, net: IpNet, source: libbpf_rs::Error) -> Error {
        // The size the map was loaded with ([maps] in the configuration).
        let max = map.max_entries();
        let full = source.kind() == libbpf_rs::ErrorKind::TooBig || map.keys().count() >= max as usize;
        if full {
            Error::LocalFull { map: name, net, max_entries: max }
        } else {
            Error::LocalUpdate { map: name, net, source }
        }
    }

    /// Removes a local address or prefix. Conntrack entries remember the
    /// generation of host addresses under which their host side was last
    /// tested (and skip the test while it holds): a removal starts a new
    /// generation.
    pub fn remove_local(&self, net: IpNet) -> Result<()> {
        let net = net.trunc();
        let m = &self.skel.maps;
        if is_host_prefix(&net) {
            delete(&m.hf_host_addrs, "hf_host_addrs", &l::AddrKey { addr: l::addr16(net.addr()) })?;
        } else {
            delete(&m.hf_local_nets, "hf_local_nets", &local_net_key(net))?;
            if m.hf_local_nets.keys().next().is_none() {
                self.set_local_nets_flag(false)?;
            }
        }
        let mut g = self.global()?.unwrap_or_default();
        g.host_gen = g.host_gen.wrapping_add(1);
        g.events_burst = g.events_burst.max(1);
        update(&self.skel.maps.hf_global, "hf_global", &0u32, &g)
    }

    fn set_local_nets_flag(&self, on: bool) -> Result<()> {
        let mut g = self.global()?.unwrap_or_default();
        let flags = if on { g.flags | l::G_LOCAL_NETS } else { g.flags & !l::G_LOCAL_NETS };
        if flags == g.flags {
            return Ok(());
        }
        g.flags = flags;
        g.events_burst = g.events_burst.max(1);
        update(&self.skel.maps.hf_global, "hf_global", &0u32, &g)
    }

    /// The generation of host addresses (`hf_global.host_gen`): it moves
    /// with every removal from the local set.
    pub fn host_gen(&self) -> Result<u32> {
        Ok(self.global()?.map_or(0, |g| g.host_gen))
    }

    /// Whether the datapath consults `hf_local_nets` (`G_LOCAL_NETS`).
    pub fn local_nets_in_use(&self) -> Result<bool> {
        Ok(self.global()?.is_some_and(|g| g.flags & l::G_LOCAL_NETS != 0))
    }

    /// The full-length local addresses (`hf_host_addrs`).
    pub fn host_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<_> = keys::<l::AddrKey>(&self.skel.maps.hf_host_addrs).into_iter().map(|k| l::ip_from16(k.addr)).collect();
        v.sort_unstable();
        v
    }

    /// Every local address (as a host prefix) and prefix the datapath holds.
    pub fn local_nets(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.host_addrs().into_iter().map(IpNet::from).collect();
        v.extend(keys::<l::LocalNetKey>(&self.skel.maps.hf_local_nets).into_iter().filter_map(net_from_key));
        v.sort_unstable();
        v
    }

    /// Replaces the failsafe set with `entries` (direction, protocol, port).
    pub fn set_failsafe(&self, entries: &[(Direction, u8, u16)]) -> Result<()> {
        let map = &self.skel.maps.hf_failsafe;
        let want: Vec<l::FailsafeKey> =
            entries.iter().map(|&(d, proto, port)| l::FailsafeKey { dir: dir_code(d), proto, port }).collect();
        let have = keys::<l::FailsafeKey>(map);
        for k in &have {
            if !want.contains(k) {
                delete(map, "hf_failsafe", k)?;
            }
        }
        for k in &want {
            update(map, "hf_failsafe", k, &1u8)?;
        }
        if have.len() != want.len() || want.iter().any(|k| !have.contains(k)) {
            // A flow admitted only by a failsafe port that is gone is judged again.
            self.bump_epoch()?;
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
    ///
    /// The image's two longest-prefix matches are written as exact-match
    /// hashes (see [`PolicyMaps`]), which the datapath probes once per
    /// prefix length in use.
    pub fn apply_policy(&mut self, image: &MapImage) -> Result<u32> {
        let mut g = self.global()?.unwrap_or_default();
        let next = (g.policy_gen & 1) ^ 1;
        if let Some(t) = self.last_policy_swap {
            let since = t.elapsed();
            if since < GENERATION_GRACE {
                std::thread::sleep(GENERATION_GRACE - since);
            }
        }
        // Unknown from here until the write below succeeds.
        let known = self.policy_keys[next as usize].take();
        self.clear_generation(next as u8, known.as_ref())?;

        // Room for both generations: the size the map was loaded with.
        let maps = PolicyMaps::new(image, next as u8, self.skel.maps.hf_rules.max_entries() as usize);
        let m = &self.skel.maps;
        update_all(&m.hf_ident4, "hf_ident4", &maps.ident4)?;
        update_all(&m.hf_ident6, "hf_ident6", &maps.ident6)?;
        update_all(&m.hf_rules, "hf_rules", &maps.rules)?;
        update(&m.hf_policy_meta, "hf_policy_meta", &next, &maps.meta)?;
        self.policy_keys[next as usize] = Some(GenerationKeys::of(maps));

        // The switch: from here on, new packets see the new generation,
        // and tracked flows are judged again against it (a new epoch, in
        // the same write).
        g.policy_gen = next;
        g.epoch = g.epoch.wrapping_add(1);
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
        let m = &self.skel.maps;
        let i4 = entries::<l::Ident4Key, u32>(&m.hf_ident4, "hf_ident4").unwrap_or_default();
        let i6 = entries::<l::Ident6Key, u32>(&m.hf_ident6, "hf_ident6").unwrap_or_default();
        let r = entries::<l::RuleKey, l::RuleVal>(&m.hf_rules, "hf_rules").unwrap_or_default();
        (
            i4.iter().filter(|(k, _)| u32::from(k.gen) == gen).count()
                + i6.iter().filter(|(k, _)| u32::from(k.gen) == gen).count(),
            r.iter().filter(|(k, _)| u32::from(k.gen) == gen).count(),
        )
    }

    /// Empties generation `gen`. With the keys this process wrote into it
    /// (`known`), those are deleted directly; reading the maps back to find
    /// them costs more than the deletes (every bucket of both generations is
    /// scanned: ~80 ms for 230k rule entries). Without (maps adopted from an
    /// earlier process, a failed write), or if a key is missing, the maps
    /// are read back. This relies on what the generation scheme relies on
    /// already: one writer of the policy maps at a time.
    fn clear_generation(&self, gen: u8, known: Option<&GenerationKeys>) -> Result<()> {
        let m = &self.skel.maps;
        if let Some(k) = known {
            let deleted = delete_keys(&m.hf_ident4, &k.ident4)
                && delete_keys(&m.hf_ident6, &k.ident6)
                && delete_keys(&m.hf_rules, &k.rules);
            if deleted {
                return update(&m.hf_policy_meta, "hf_policy_meta", &(gen as u32), &l::PolicyMeta::default());
            }
        }
        delete_where::<l::Ident4Key, u32>(&m.hf_ident4, "hf_ident4", |k| k.gen == gen)?;
        delete_where::<l::Ident6Key, u32>(&m.hf_ident6, "hf_ident6", |k| k.gen == gen)?;
        delete_where::<l::RuleKey, l::RuleVal>(&m.hf_rules, "hf_rules", |k| k.gen == gen)?;
        update(&m.hf_policy_meta, "hf_policy_meta", &(gen as u32), &l::PolicyMeta::default())
    }

    /// Drop counters summed over CPUs.
    pub fn counters(&self) -> Result<Vec<CounterEntry>> {
        read_counters(&self.skel.maps.hf_counters)
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

    /// Every conntrack entry (both families, flows from outside and the
    /// host's own), oriented as its first packet.
    pub fn conntrack(&self) -> Result<Vec<ConntrackEntry>> {
        let mut out = Vec::new();
        let m = &self.skel.maps;
        for (map, name, host_started) in [(&m.hf_ct4, "hf_ct4", false), (&m.hf_ct4_out, "hf_ct4_out", true)] {
            for k in keys::<l::Ct4Key>(map) {
                if let Some(v) = lookup::<l::Ct4Key, l::CtVal>(map, name, &k)? {
                    let a = IpAddr::V4(k.addr_a.into());
                    let b = IpAddr::V4(k.addr_b.into());
                    out.push(ct_entry((a, k.port_a), (b, k.port_b), k.proto, &v, host_started));
                }
            }
        }
        for (map, name, host_started) in [(&m.hf_ct6, "hf_ct6", false), (&m.hf_ct6_out, "hf_ct6_out", true)] {
            for k in keys::<l::Ct6Key>(map) {
                if let Some(v) = lookup::<l::Ct6Key, l::CtVal>(map, name, &k)? {
                    let a = IpAddr::V6(k.addr_a.into());
                    let b = IpAddr::V6(k.addr_b.into());
                    out.push(ct_entry((a, k.port_a), (b, k.port_b), k.proto, &v, host_started));
                }
            }
        }
        Ok(out)
    }

    /// Empties the maps that hold per-flow state (conntrack, fragments).
    pub fn flush_flows(&self) -> Result<()> {
        let m = &self.skel.maps;
        for (map, name) in [(&m.hf_ct4, "hf_ct4"), (&m.hf_ct4_out, "hf_ct4_out")] {
            for k in keys::<l::Ct4Key>(map) {
                delete(map, name, &k)?;
            }
        }
        for (map, name) in [(&m.hf_ct6, "hf_ct6"), (&m.hf_ct6_out, "hf_ct6_out")] {
            for k in keys::<l::Ct6Key>(map) {
                delete(map, name, &k)?;
            }
        }
        for k in keys::<l::FragKey>(&m.hf_frags) {
            delete(&m.hf_frags, "hf_frags", &k)?;
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

// ---------------------------------------------------------------------------
// The policy image as exact-match hashes.

/// Room for both generations of rule entries.
#[cfg(test)]
const RULE_CAPACITY: usize = l::RULES_MAX_ENTRIES as usize;

/// Port prefixes of a head may be expanded into longer ones so that a
/// lookup probes fewer lengths, as long as the head's port entries grow by
/// at most this factor (or this many entries, whichever is more).
const EXPANSION_FACTOR: usize = 4;
const EXPANSION_SLACK: usize = 64;

/// (action code, rule id) of a rule entry.
type Hit = (u8, u32);

/// The policy maps' contents for one generation, as [`Datapath::apply_policy`]
/// writes them.
///
/// The image describes two longest-prefix matches ([`MapImage::evaluate`]);
/// the datapath (`policy.h`) does each as exact-match lookups, one per prefix
/// length in use, longest first, so its cost does not grow with the number
/// of entries:
/// - **Identities**, per family. The image's table is one 128-bit space with
///   IPv4 mapped into `::ffff:0:0/96`; for an IPv4 address only entries
///   inside that block can match, plus the entries covering the whole block
///   (such as `::/0`), of which the longest acts as an IPv4 `/0`. For any
///   other address, only entries not inside the block can match. The lengths
///   in use are listed in `meta`, longest first.
/// - **Rules**, per (identity, direction, protocol): a head entry with the
///   port prefix lengths in use below it and the result when no port prefix
///   matches (the protocol-wide entry, else the any-protocol one); the port
///   prefixes, possibly expanded into fewer distinct lengths (controlled
///   prefix expansion: a /12 becomes sixteen /16s); the any-protocol entry of
///   (identity, direction) for protocols without a head.
#[derive(Debug, Default, Clone)]
pub(crate) struct PolicyMaps {
    pub ident4: Vec<(l::Ident4Key, u32)>,
    pub ident6: Vec<(l::Ident6Key, u32)>,
    pub rules: Vec<(l::RuleKey, l::RuleVal)>,
    pub meta: l::PolicyMeta,
}

/// The keys of one generation's policy entries, as written.
#[derive(Debug, Default)]
pub(super) struct GenerationKeys {
    ident4: Vec<l::Ident4Key>,
    ident6: Vec<l::Ident6Key>,
    rules: Vec<l::RuleKey>,
}

impl GenerationKeys {
    fn of(maps: PolicyMaps) -> GenerationKeys {
        GenerationKeys {
            ident4: maps.ident4.into_iter().map(|(k, _)| k).collect(),
            ident6: maps.ident6.into_iter().map(|(k, _)| k).collect(),
            rules: maps.rules.into_iter().map(|(k, _)| k).collect(),
        }
    }
}

/// The rule entries of one (identity, direction, protocol).
#[derive(Debug, Default)]
struct Head {
    proto_wide: Option<Hit>,
    /// (prefix length 1..=16, masked port, hit), in image order.
    ports: Vec<(u8, u16, Hit)>,
}





fn action_code(a: Action) -> u8 {
    match a {
        Action::Allow => l::ACTION_ALLOW,
        Action::Deny => l::ACTION_DENY,
    }
}

impl PolicyMaps {
    /// The maps of `image` as generation `gen`. Port prefix expansion is
    /// dropped if it would take more than half of `capacity` (the other
    /// generation needs room until the next swap).
    pub(crate) fn new(image: &MapImage, gen: u8, capacity: usize) -> PolicyMaps {
        let mut maps = PolicyMaps::default();
        maps.meta.flags = (if image.enforce_ingress { l::P_ENFORCE_INGRESS } else { 0 })
            | (if image.enforce_egress { l::P_ENFORCE_EGRESS } else { 0 });
        maps.identities(image, gen);
        maps.rules = rule_entries(image, gen, true);
        if maps.rules.len() > capacity / 2 {
            maps.rules = rule_entries(image, gen, false);
        }
        maps
    }

    fn identities(&mut self, image: &MapImage, gen: u8) {
        // Later duplicates win, as later updates of one key do.
        let mut v4: BTreeMap<(u8, u32), u32> = BTreeMap::new();
        let mut v6: BTreeMap<(u8, u128), u32> = BTreeMap::new();
        // The longest entry covering all of ::ffff:0:0/96 from outside it.
        let mut cover: Option<(u8, u32)> = None;
        for e in &image.identities {
            let (addr, len) = e.mapped();
            let addr = u128::from(addr) & prefix_mask(len, 128);
            if len >= 96 && addr & prefix_mask(96, 128) == MAPPED_BASE {
                v4.insert((len - 96, addr as u32), e.identity);
            } else {
                v6.insert((len, addr), e.identity);
                if len < 96 && MAPPED_BASE & prefix_mask(len, 128) == addr && cover.is_none_or(|(l, _)| len >= l) {
                    cover = Some((len, e.identity));
                }
            }
        }
        if let Some((_, identity)) = cover {
            v4.entry((0, 0)).or_insert(identity);
        }

        let mut lens4: Vec<u8> = v4.keys().map(|&(len, _)| len).collect();
        let mut lens6: Vec<u8> = v6.keys().map(|&(len, _)| len).collect();
        for lens in [&mut lens4, &mut lens6] {
            lens.sort_unstable_by(|a, b| b.cmp(a));
            lens.dedup();
        }
        self.meta.ident4_nlens = lens4.len() as u8;
        self.meta.ident4_lens.0[..lens4.len()].copy_from_slice(&lens4);
        self.meta.ident6_nlens = lens6.len() as u8;
        self.meta.ident6_lens.0[..lens6.len()].copy_from_slice(&lens6);

        self.ident4 = v4
            .into_iter()
            .map(|((plen, addr), id)| (l::Ident4Key { gen, plen, pad: [0; 2], addr: addr.to_be_bytes() }, id))
            .collect();
        self.ident6 = v6
            .into_iter()
            .map(|((plen, addr), id)| (l::Ident6Key { gen, plen, pad: [0; 2], addr: addr.to_be_bytes() }, id))
            .collect();
    }
}

/// Every rule-map entry of `image` as generation `gen`.
fn rule_entries(image: &MapImage, gen: u8, expand: bool) -> Vec<(l::RuleKey, l::RuleVal)> {
    let mut heads: BTreeMap<(u32, u8, u8), Head> = BTreeMap::new();
    let mut any: BTreeMap<(u32, u8), Hit> = BTreeMap::new();
    for r in &image.rules {
        let dir = dir_code(r.direction);
        let hit = (action_code(r.action), r.rule_id);
        match (r.proto, r.port) {
            (None, _) => {
                any.insert((r.identity, dir), hit);
            }
            // A zero-length port prefix is the whole protocol.
            (Some(proto), None) | (Some(proto), Some((_, 0))) => {
                heads.entry((r.identity, dir, proto)).or_default().proto_wide = Some(hit);
            }
            (Some(proto), Some((port, plen))) => {
                let plen = plen.min(16);
                heads.entry((r.identity, dir, proto)).or_default().ports.push((plen, port & (prefix_mask(plen, 16) as u16), hit));
            }
        }
    }

    let key = |identity, dir, proto, kind, port| l::RuleKey { identity, gen, dir, proto, kind, port, pad: [0; 2] };
    let mut out = Vec::new();
    for ((identity, dir), &(action, rule_id)) in &any {
        out.push((key(*identity, *dir, 0, l::RK_ANY, 0), l::RuleVal { rule_id, action, pad: 0, port_lens: 0 }));
    }
    for (&(identity, dir, proto), head) in &heads {
        let (action, rule_id) = head.proto_wide.or_else(|| any.get(&(identity, dir)).copied()).unwrap_or((0, 0));
        let ports = expand_ports(&head.ports, expand);
        let port_lens = ports.keys().fold(0u16, |bits, &(len, _)| bits | 1 << (len - 1));
        out.push((key(identity, dir, proto, l::RK_PROTO, 0), l::RuleVal { rule_id, action, pad: 0, port_lens }));
        for ((len, port), (action, rule_id)) in ports {
            out.push((key(identity, dir, proto, len, port), l::RuleVal { rule_id, action, pad: 0, port_lens: 0 }));
        }
    }
    out
}

/// A head's port prefixes as entries keyed (length, masked port), expanded
/// into fewer distinct lengths where the budget allows. Longest match is
/// preserved: within a group of lengths expanded to the same target,
/// longer (then later) prefixes overwrite shorter ones, and the datapath
/// probes longer targets first.
fn expand_ports(ports: &[(u8, u16, Hit)], expand: bool) -> BTreeMap<(u8, u16), Hit> {
    let mut count: BTreeMap<u8, usize> = BTreeMap::new();
    for &(len, _, _) in ports {
        *count.entry(len).or_default() += 1;
    }
    let budget = if expand { (ports.len() * EXPANSION_FACTOR).max(ports.len() + EXPANSION_SLACK) } else { 0 };
    let target = expansion_targets(&count, budget);

    let mut sorted: Vec<&(u8, u16, Hit)> = ports.iter().collect();
    sorted.sort_by_key(|&&(len, _, _)| len); // stable: image order within a length
    let mut out = BTreeMap::new();
    for &&(len, port, hit) in &sorted {
        let t = target[&len];
        for suffix in 0..1u32 << (t - len) {
            let p = port | (suffix << (16 - t)) as u16;
            out.insert((t, p), hit);
        }
    }
    out
}

/// For each prefix length (with its number of entries), the length it is
/// expanded to. The sorted lengths are cut into runs, each expanded to its
/// longest length: the fewest runs (probes) whose total entry count stays
/// within `budget`, cheapest first; one run per length if nothing fits.
fn expansion_targets(count: &BTreeMap<u8, usize>, budget: usize) -> BTreeMap<u8, u8> {
    let lens: Vec<u8> = count.keys().copied().collect();
    let n = lens.len();
    if n == 0 {
        return BTreeMap::new();
    }
    // cost[i][j]: entries of lengths i..=j expanded to lens[j].
    let cost = |i: usize, j: usize| -> usize {
        (i..=j).map(|m| count[&lens[m]].saturating_mul(1usize << (lens[j] - lens[m]))).fold(0, usize::saturating_add)
    };
    // best[g][j]: cheapest split of lengths 0..=j into g runs, with the start
    // of its last run.
    let mut best = vec![vec![(usize::MAX, 0usize); n]; n + 1];
    for (j, b) in best[1].iter_mut().enumerate() {
        *b = (cost(0, j), 0);
    }
    for g in 2..=n {
        for j in g - 1..n {
            for i in g - 1..=j {
                let prev = best[g - 1][i - 1].0;
                let c = prev.saturating_add(cost(i, j));
                if c < best[g][j].0 {
                    best[g][j] = (c, i);
                }
            }
        }
    }
    let mut out: BTreeMap<u8, u8> = lens.iter().map(|&len| (len, len)).collect();
    let Some(groups) = (1..=n).find(|&g| best[g][n - 1].0 <= budget) else { return out };
    let (mut j, mut g) = (n - 1, groups);
    loop {
        let start = best[g][j].1;
        for m in start..=j {
            out.insert(lens[m], lens[j]);
        }
        if g == 1 {
            break;
        }
        j = start - 1;
        g -= 1;
    }
    out
}

#[cfg(test)]
impl PolicyMaps {
    /// The datapath's two lookups (`hf_policy_eval` in policy.h) over these
    /// entries, step by step: (action code, rule id) of the entry found.
    fn lookup(&self, remote: IpAddr, dir: u8, proto: u8, port: u16) -> Option<Hit> {
        let addr = u128::from(crate::policy::image::mapped_addr(remote));
        let identity = if addr & prefix_mask(96, 128) == MAPPED_BASE {
            let v4: HashMap<_, _> = self.ident4.iter().map(|(k, v)| ((k.gen, k.plen, k.addr), *v)).collect();
            let lens = &self.meta.ident4_lens.0[..self.meta.ident4_nlens as usize];
            let gen = self.ident4.first().map_or(0, |(k, _)| k.gen);
            lens.iter().find_map(|&len| v4.get(&(gen, len, (addr as u32 & (prefix_mask(len, 32) as u32)).to_be_bytes())).copied())
        } else {
            let v6: HashMap<_, _> = self.ident6.iter().map(|(k, v)| ((k.gen, k.plen, k.addr), *v)).collect();
            let lens = &self.meta.ident6_lens.0[..self.meta.ident6_nlens as usize];
            let gen = self.ident6.first().map_or(0, |(k, _)| k.gen);
            lens.iter().find_map(|&len| v6.get(&(gen, len, (addr & prefix_mask(len, 128)).to_be_bytes())).copied())
        }
        .unwrap_or(0);

        let rules: HashMap<_, _> = self.rules.iter().map(|(k, v)| ((k.identity, k.dir, k.proto, k.kind, k.port), *v)).collect();
        match rules.get(&(identity, dir, proto, l::RK_PROTO, 0)) {
            Some(head) => (1..=16u8)
                .rev()
                .filter(|&n| head.port_lens & 1 << (n - 1) != 0)
                .find_map(|n| rules.get(&(identity, dir, proto, n, port & (prefix_mask(n, 16) as u16))))
                .or((head.action != 0).then_some(head))
                .map(|v| (v.action, v.rule_id)),
            None => rules.get(&(identity, dir, 0, l::RK_ANY, 0)).map(|v| (v.action, v.rule_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ipnet::IpNet;

    use super::*;
    use crate::policy::image::{IdentityEntry, RuleEntry, Verdict};
    use hostfwd_policy::test_rng::Rng;

    /// An address near the interesting places: inside one of `nets`, in
    /// the IPv4-mapped block, or anywhere.
    fn random_addr(rng: &mut Rng, nets: &[IpNet]) -> IpAddr {
        let raw = u128::from(rng.next()) << 64 | u128::from(rng.next());
        if !nets.is_empty() && rng.below(4) != 0 {
            let net = nets[rng.below(nets.len() as u64) as usize];
            let (addr, len) = IdentityEntry { prefix: net, identity: 1 }.mapped();
            let a = u128::from(addr) & prefix_mask(len, 128) | raw & !prefix_mask(len, 128);
            let v6 = Ipv6Addr::from(a);
            // IPv4 as IPv4, with an occasional IPv4-mapped IPv6 twin.
            return match v6.to_ipv4_mapped() {
                Some(v4) if rng.below(8) != 0 => IpAddr::V4(v4),
                _ => IpAddr::V6(v6),
            };
        }
        match rng.below(3) {
            0 => IpAddr::V4(Ipv4Addr::from(raw as u32)),
            1 => IpAddr::V6(Ipv6Addr::from(MAPPED_BASE | (raw & 0xffff_ffff))),
            _ => IpAddr::V6(Ipv6Addr::from(raw)),
        }
    }

    fn random_net(rng: &mut Rng) -> IpNet {
        let raw = u128::from(rng.next()) << 64 | u128::from(rng.next());
        let net = match rng.below(6) {
            0..=2 => IpNet::new(IpAddr::V4(Ipv4Addr::from(raw as u32 & 0x0a0f_ffff)), rng.below(33) as u8),
            // Short IPv6 prefixes, most covering ::ffff:0:0/96 (::/0, ::/80,
            // ::fffe:0:0/95, ...), some beside it.
            3 => {
                let base = if rng.below(4) == 0 { raw & MAPPED_BASE } else { MAPPED_BASE };
                IpNet::new(IpAddr::V6(Ipv6Addr::from(base)), rng.pick(&[0, 1, 16, 64, 80, 94, 95, 96]))
            }
            // Inside the IPv4-mapped block, written as IPv6.
            4 => IpNet::new(IpAddr::V6(Ipv6Addr::from(MAPPED_BASE | (raw & 0x0a0f_ffff))), 96 + rng.below(33) as u8),
            _ => IpNet::new(IpAddr::V6(Ipv6Addr::from(raw & !(u128::MAX >> 16) | 0x2001 << 112)), rng.below(129) as u8),
        };
        net.expect("prefix length in range").trunc()
    }

    fn random_image(rng: &mut Rng) -> MapImage {
        let identities: Vec<IdentityEntry> =
            (0..rng.below(40)).map(|_| IdentityEntry { prefix: random_net(rng), identity: 1 + rng.below(6) as u32 }).collect();
        let protos = [1u8, 6, 17, 58, 132, 47];
        let rules = (0..rng.below(120))
            .map(|_| {
                let proto = if rng.below(6) == 0 { None } else { Some(rng.pick(&protos)) };
                let port = match rng.below(4) {
                    0 => None,
                    _ => {
                        let plen = 1 + rng.below(16) as u8;
                        // Ports clustered so that prefixes nest and overlap.
                        Some(((rng.below(64) as u16) << 10 | rng.below(1 << 10) as u16, plen))
                    }
                };
                RuleEntry {
                    identity: rng.below(7) as u32,
                    direction: if rng.below(2) == 0 { Direction::Ingress } else { Direction::Egress },
                    proto,
                    port,
                    action: if rng.below(3) == 0 { Action::Deny } else { Action::Allow },
                    rule_id: rng.below(1000) as u32,
                }
            })
            .collect();
        MapImage { enforce_ingress: true, enforce_egress: true, identities, rules }
    }

    fn expected(v: Verdict) -> Option<Hit> {
        match v {
            Verdict::Allow(id) => Some((l::ACTION_ALLOW, id)),
            Verdict::Deny(id) => Some((l::ACTION_DENY, id)),
            Verdict::NoMatch | Verdict::NotEnforced => None,
        }
    }

    /// The hashes answer exactly what the image's longest-prefix matches
    /// answer, on random images (overlapping and nested prefixes, IPv6
    /// prefixes covering the IPv4-mapped block, duplicate keys) and packets
    /// aimed at their prefixes and ports.
    #[test]
    fn hashes_agree_with_the_image() {
        let mut rng = Rng(0x6f6f_7061);
        for round in 0..400 {
            let image = random_image(&mut rng);
            let expand = round % 2 == 0;
            let maps = PolicyMaps::new(&image, (round % 2) as u8, if expand { RULE_CAPACITY } else { 0 });
            let reference = image.lookup();
            let nets: Vec<IpNet> = image.identities.iter().map(|e| e.prefix).collect();
            for _ in 0..300 {
                let mut remote = random_addr(&mut rng, &nets);
                let mut dir = if rng.below(2) == 0 { Direction::Ingress } else { Direction::Egress };
                let mut proto = rng.pick(&[1u8, 6, 17, 58, 132, 47, 0]);
                let mut port = rng.next() as u16;
                // Mostly aimed at a rule: its identity's addresses, its
                // direction, protocol and (a neighbourhood of) its port.
                if let Some(r) = image.rules.get(rng.below(image.rules.len() as u64 + 1) as usize) {
                    let own: Vec<IpNet> = image.identities.iter().filter(|e| e.identity == r.identity).map(|e| e.prefix).collect();
                    remote = random_addr(&mut rng, &own);
                    dir = r.direction;
                    proto = r.proto.filter(|_| rng.below(5) != 0).unwrap_or(proto);
                    if let Some((p, plen)) = r.port {
                        let wider = plen.saturating_sub(rng.below(3) as u8);
                        port = p & (prefix_mask(wider, 16) as u16) | (rng.next() as u16 & !(prefix_mask(wider, 16) as u16));
                    }
                }
                let want = expected(reference.evaluate(remote, dir, proto, port));
                let got = maps.lookup(remote, dir_code(dir), proto, port);
                assert_eq!(got, want, "round {round}: {remote} {dir:?} proto {proto} port {port}\n{image:#?}");
            }
        }
    }

    #[test]
    fn expansion_fewest_probes_within_budget() {
        let count = |v: &[(u8, usize)]| v.iter().copied().collect::<BTreeMap<u8, usize>>();
        // One /16 and one /12: sixteen /16s plus one, within 4x of two.
        let t = expansion_targets(&count(&[(12, 1), (16, 1)]), 64);
        assert_eq!((t[&12], t[&16]), (16, 16));
        // A /1 next to a /16 would cost 32768 entries: two probes instead.
        let t = expansion_targets(&count(&[(1, 1), (2, 1), (16, 1)]), 66);
        assert_eq!((t[&1], t[&2], t[&16]), (2, 2, 16));
        // No budget: every length stays.
        let t = expansion_targets(&count(&[(3, 2), (9, 1)]), 0);
        assert_eq!((t[&3], t[&9]), (3, 9));
    }

    #[test]
    fn expansion_keeps_the_longest_match() {
        let allow = (l::ACTION_ALLOW, 1);
        let deny = (l::ACTION_DENY, 2);
        // 8000/13 allow (8000..=8007) with 8004/15 deny (8004, 8005) inside.
        let out = expand_ports(&[(15, 8004, deny), (13, 8000, allow)], true);
        let at = |p: u16| out.get(&(15, p)).copied();
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!((at(8000), at(8002), at(8004), at(8006)), (Some(allow), Some(allow), Some(deny), Some(allow)));
    }

    /// Where the datapath has a bound, the writer stays inside it.
    #[test]
    fn meta_lists_fit() {
        let image = MapImage {
            identities: (0..=32u8)
                .map(|len| IdentityEntry { prefix: IpNet::new("10.0.0.0".parse().unwrap(), len).unwrap().trunc(), identity: 1 })
                .chain((0..=128u8).map(|len| IdentityEntry {
                    prefix: IpNet::new("2001:db8::".parse().unwrap(), len).unwrap().trunc(),
                    identity: 2,
                }))
                .collect(),
            ..MapImage::default()
        };
        let maps = PolicyMaps::new(&image, 0, RULE_CAPACITY);
        assert_eq!(maps.meta.ident4_nlens as usize, l::IDENT4_LENS);
        // /0 to /96 of 2001:db8:: are not inside ::ffff:0:0/96; /0 covers it.
        assert_eq!(maps.meta.ident6_nlens as usize, l::IDENT6_LENS);
        assert_eq!(maps.meta.ident4_lens.0[0], 32);
        assert_eq!(maps.meta.ident6_lens.0[l::IDENT6_LENS - 1], 0);
    }
}
