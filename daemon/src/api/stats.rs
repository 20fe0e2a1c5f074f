//! `GetStatistics` without the main loop: the drop counters are read from
//! the pinned `hf_counters` map (a per-CPU hash the datapath only adds to),
//! on the [`Gate`](super::gate::Gate)'s worker, and named with the
//! published snapshot. The main loop's [`crate::datapath::Datapath`] is not
//! shared: it is the one writer of the maps.

use crate::datapath::{self, Paths};
use crate::manager::{Snapshot, Statistic};

/// Every counter above zero, summed over CPUs, in (ifindex, direction,
/// reason, audit) order, named after the links of `snapshot`.
pub fn read(paths: &Paths, snapshot: &Snapshot) -> Result<Vec<Statistic>, datapath::Error> {
    let counters = datapath::pinned_counters(paths)?;
    Ok(counters
        .into_iter()
        .filter(|c| c.packets > 0)
        .map(|c| {
            let reason = c.reason.map(|r| r.name().to_string()).unwrap_or_else(|| format!("unknown-{}", c.reason_code));
            Statistic {
                ifindex: c.ifindex,
                name: snapshot.links.values().find(|i| i.ifindex.get() == c.ifindex).map(|i| i.name.clone()).unwrap_or_default(),
                direction: datapath::dir_name(c.dir).to_string(),
                reason: if c.audit { format!("audit:{reason}") } else { reason },
                count: c.packets,
            }
        })
        .collect())
}
