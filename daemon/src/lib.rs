//! hostfwd: a host firewall daemon. The pure core (device selection,
//! configuration) lives beside the one module that touches the kernel
//! (`datapath`); the policy parser and compiler are the `hostfwd-policy`
//! crate, re-exported here as [`policy`].

pub mod api;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod inspect;
pub mod links;
pub mod manager;
pub mod netlink;
pub use hostfwd_policy as policy;
pub mod policy_store;
pub mod reconcile;
pub mod select;
pub mod state;
pub mod vlan;
