//! Map sizes from the configuration, and what the maps cost the kernel.
//!
//! Sizes are applied to the opened object before load; a pinned map whose
//! type, key, value, size or flags differ from what this load wants is not
//! adopted (the loader replaces it, see `Datapath::load`). Memory is what
//! the kernel charges each map (`memlock:` in the map fd's fdinfo: on
//! current kernels the map's own account of its allocations, including the
//! elements of maps that allocate on insert).

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use libbpf_rs::skel::Skel;
use libbpf_rs::{MapCore, MapHandle};

use super::{Datapath, Error, Result};

/// max_entries for one map, and the configuration key it comes from (a
/// configuration value).
pub use hostfwd_config::MapSize;

/// What one map costs the kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MapMemory {
    pub map: String,
    pub max_entries: u32,
    /// Bytes charged to the map (fdinfo `memlock`).
    pub memlock: u64,
}

/// Why a pinned map cannot serve this load, or `None` when it can (or when
/// it cannot even be opened: adopting it then fails and replaces it).
pub(super) fn pinned_mismatch(want: &libbpf_rs::OpenMapMut<'_>, pin: &Path) -> Option<String> {
    let info = MapHandle::from_pinned_path(pin).ok()?.info().ok()?.info;
    let pairs = [
        ("type", info.type_, want.map_type() as u32),
        ("key size", info.key_size, want.key_size()),
        ("value size", info.value_size, want.value_size()),
        ("max_entries", info.max_entries, want.max_entries()),
        ("flags", info.map_flags, want.map_flags()),
    ];
    let diffs: Vec<String> = pairs.iter().filter(|(_, have, want)| have != want).map(|(what, have, want)| format!("{what} {have} (want {want})")).collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// max_entries of the map pinned at `pin`, if it can be read.
pub(super) fn pinned_max_entries(pin: &Path) -> Option<u32> {
    Some(MapHandle::from_pinned_path(pin).ok()?.info().ok()?.info.max_entries)
}

/// The `memlock:` line of an fd's fdinfo, in bytes.
fn memlock(fd: i32) -> std::io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no memlock line"))
}

impl Datapath {
    /// Every hostfwd map with its size and kernel memory, by name.
    pub fn map_memory(&self) -> Result<Vec<MapMemory>> {
        let mut out = Vec::new();
        for map in self.skel.object().maps() {
            let name = map.name().to_string_lossy().into_owned();
            if !name.starts_with("hf_") {
                continue;
            }
            let fd = map.as_fd().as_raw_fd();
            let memlock = memlock(fd).map_err(|source| Error::MapMemory { map: name.clone(), source })?;
            out.push(MapMemory { map: name, max_entries: map.max_entries(), memlock });
        }
        out.sort_by(|a, b| a.map.cmp(&b.map));
        Ok(out)
    }

    /// (entries in use, max_entries) of a hash map by name; `None` for a
    /// map this object does not have. Walks the keys: for occasional
    /// reports (a map found full), not for every packet count.
    pub fn map_fill(&self, name: &str) -> Option<(u32, u32)> {
        let map = self.skel.object().maps().find(|m| m.name().to_str() == Some(name))?;
        Some((map.keys().count() as u32, map.max_entries()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_of_a_plain_fd_is_an_error() {
        // A regular file's fdinfo has no memlock line.
        let f = fs::File::open("/proc/self/status").unwrap();
        assert!(memlock(f.as_raw_fd()).is_err());
    }
}
