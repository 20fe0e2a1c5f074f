//! The daemon's configuration: the `hostfwd-config` crate (loading and
//! checking `hostfwd.toml`, shared with hostfwdctl), re-exported, plus what
//! only the daemon makes of it: the datapath's load options and global
//! settings ([`DatapathConfig`]). It may not load or write anything.

pub use hostfwd_config::*;

use crate::datapath;

/// The datapath's view of a [`Config`].
pub trait DatapathConfig {
    /// What `Datapath::load` needs: the bpffs root, the attach mode and the
    /// map sizes.
    fn datapath(&self) -> Result<datapath::Config, Error>;
    /// The global settings of `hf_global` (audit from the file, not the
    /// persisted audit state).
    fn settings(&self) -> datapath::GlobalSettings;
}

impl DatapathConfig for Config {
    fn datapath(&self) -> Result<datapath::Config, Error> {
        Ok(datapath::Config { bpffs_root: self.bpffs_root.clone(), attach_mode: self.attach_choice()?, map_sizes: self.map_sizes()? })
    }

    fn settings(&self) -> datapath::GlobalSettings {
        datapath::GlobalSettings {
            audit: self.audit,
            drop_non_ip: self.drop_non_ip,
            events_per_sec: self.events_per_sec,
            events_burst: self.events_burst,
        }
    }
}
