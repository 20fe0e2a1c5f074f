//! hostfwd: a host firewall daemon. The pure core (link table, device
//! selection, VLAN sets, reconcile plan, configuration; the policy crate)
//! lives beside the one module that touches the kernel ([`kernel`]:
//! netlink and the eBPF datapath). `docs/architecture.md` draws the whole.

pub mod api;
pub mod config;
// The seam's two halves keep their short paths (`crate::datapath`).
pub use kernel::{datapath, netlink};
pub mod daemon;
pub mod execute;
pub mod inspect;
pub mod kernel;
pub mod links;
pub mod manager;
pub use hostfwd_policy as policy;
pub mod policy_store;
pub mod reconcile;
pub mod select;
pub mod state;
mod tasks;
pub mod vlan;
