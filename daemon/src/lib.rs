//! hostfwd: a host firewall daemon. The pure core (policy compiler, device
//! selection, configuration) lives beside the one module that touches the
//! kernel (`datapath`).

pub mod config;
pub mod datapath;
pub mod inspect;
pub mod links;
pub mod policy;
pub mod select;
pub mod system;
