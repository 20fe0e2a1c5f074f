//! Typed writers and readers for every datapath map. Keys and values are
//! the `#[repr(C)]` mirrors from `hostfwd_bpf::layout`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use hostfwd_bpf::layout::{self as l, Pod};
use hostfwd_bpf::DropReason;
use ipnet::IpNet;
use libbpf_rs::{MapCore, MapFlags, MapMut};

use super::{dir_code, Datapath, Direction, Error, Result};
use crate::policy::encode::PolicyMaps;
use crate::policy::image::MapImage;

pub use crate::reconcile::{Failsafe, GlobalSettings};

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
    /// Opens a failsafe port (`hf_failsafe`).
    pub fn add_failsafe(&self, (d, proto, port): Failsafe) -> Result<()> {
        update(&self.skel.maps.hf_failsafe, "hf_failsafe", &l::FailsafeKey { dir: dir_code(d), proto, port }, &1u8)
    }

    /// Makes the failsafe ports exactly `entries` (tests; the daemon's
    /// reconciler adds and removes them one by one).
    #[cfg(feature = "testing")]
    pub fn set_failsafe(&self, entries: &[Failsafe]) -> Result<()> {
        let have = self.failsafe();
        for f in have.iter().filter(|f| !entries.contains(f)) {
            self.remove_failsafe(*f)?;
        }
        for f in entries.iter().filter(|f| !have.contains(f)) {
            self.add_failsafe(*f)?;
        }
        Ok(())
    }

    /// Closes a failsafe port; the flows it alone admitted are judged again.
    pub fn remove_failsafe(&self, (d, proto, port): Failsafe) -> Result<()> {
        delete(&self.skel.maps.hf_failsafe, "hf_failsafe", &l::FailsafeKey { dir: dir_code(d), proto, port })?;
        self.bump_epoch()
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

    /// Empties the maps that hold per-flow state (conntrack, fragments):
    /// tests and benches start each case from no flows.
    #[cfg(feature = "testing")]
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

    /// Empties the drop counters (tests).
    #[cfg(feature = "testing")]
    pub fn reset_counters(&self) -> Result<()> {
        for k in keys::<l::CounterKey>(&self.skel.maps.hf_counters) {
            delete(&self.skel.maps.hf_counters, "hf_counters", &k)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// What was written of each policy generation.

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
