//! `GetStatistics` without the main loop: the drop counters are read from
//! the pinned `hf_counters` map (a per-CPU hash the datapath only adds to),
//! on the [`Gate`](super::gate::Gate)'s worker, and named with the
//! published snapshot. The main loop's [`crate::datapath::Datapath`] is not
//! shared: it is the one writer of the maps.

use std::path::PathBuf;

use hostfwd_bpf::layout::{self as l, Pod};
use hostfwd_bpf::DropReason;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::datapath::Paths;
use crate::manager::{Snapshot, Statistic};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the pinned map {path}: {source}")]
    Open {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("reading the map hf_counters: {source}")]
    Read { source: libbpf_rs::Error },
}

/// Every counter above zero, summed over CPUs, in (ifindex, direction,
/// reason, audit) order, named after the links of `snapshot`.
pub fn read(paths: &Paths, snapshot: &Snapshot) -> Result<Vec<Statistic>, Error> {
    let path = paths.map("hf_counters");
    let map = MapHandle::from_pinned_path(&path).map_err(|source| Error::Open { path, source })?;
    let mut keys: Vec<l::CounterKey> = map
        .keys()
        .filter_map(|k| l::CounterKey::from_bytes(&k))
        .collect();
    keys.sort_by_key(|k| (k.ifindex, k.dir, k.reason, k.audit));
    let mut out = Vec::new();
    for k in keys {
        // A key deleted since it was listed is no counter any more.
        let per_cpu = map
            .lookup_percpu(k.as_bytes(), MapFlags::ANY)
            .map_err(|source| Error::Read { source })?
            .unwrap_or_default();
        let count: u64 = per_cpu
            .iter()
            .filter_map(|v| v.get(..8))
            .filter_map(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .sum();
        if count == 0 {
            continue;
        }
        let reason = DropReason::from_code(k.reason)
            .map(|r| r.name().to_string())
            .unwrap_or_else(|| format!("unknown-{}", k.reason));
        let dir = if k.dir == l::DIR_EGRESS {
            crate::datapath::Direction::Egress
        } else {
            crate::datapath::Direction::Ingress
        };
        out.push(Statistic {
            ifindex: k.ifindex,
            name: snapshot
                .links
                .values()
                .find(|i| i.ifindex.get() == k.ifindex)
                .map(|i| i.name.clone())
                .unwrap_or_default(),
            direction: crate::datapath::dir_name(dir).to_string(),
            reason: if k.audit != 0 {
                format!("audit:{reason}")
            } else {
                reason
            },
            count,
        });
    }
    Ok(out)
}
