//! hostfwd: a host firewall daemon. The pure core (policy compiler, device
//! selection, configuration) lives beside the one module that touches the
//! kernel (`datapath`).

pub mod api;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod execute;
pub mod inspect;
pub mod links;
pub mod manager;
pub mod netlink;
pub mod policy;
pub mod reconcile;
pub mod select;
pub mod state;
mod tasks;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod vlan;
