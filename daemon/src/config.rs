//! The daemon's configuration: the documented `hostfwd.toml` is compiled in
//! as the default, a file given with `--config` overrides it key by key, and
//! `HOSTFWD_<KEY>` environment variables override both (nested keys with a
//! double underscore: `HOSTFWD_FAILSAFE__INGRESS=tcp/22,udp/68`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::datapath::{self, AttachModeChoice, Direction};

/// The built-in default (and the documented example).
pub const DEFAULT_TOML: &str = include_str!("../hostfwd.toml");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration {source_name}: {source}")]
    Load { source_name: String, source: config::ConfigError },
    #[error("configuration field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Failsafe {
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub audit: bool,
    pub devices: Vec<String>,
    pub exclude: Vec<String>,
    pub bpffs_root: PathBuf,
    pub attach_mode: String,
    pub tc_priority: u16,
    pub tc_handle: u32,
    pub detach_on_exit: bool,
    pub drop_non_ip: bool,
    pub events_per_sec: u32,
    pub events_burst: u32,
    pub failsafe: Failsafe,
}

impl Config {
    /// Built-in default, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let mut b = config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
        let name = match file {
            Some(f) => {
                b = b.add_source(config::File::from(f).format(config::FileFormat::Toml).required(true));
                f.display().to_string()
            }
            None => "built-in default".to_string(),
        };
        b = b.add_source(config::Environment::with_prefix("HOSTFWD").prefix_separator("_").separator("__").try_parsing(true).list_separator(",").with_list_parse_key("devices").with_list_parse_key("exclude").with_list_parse_key("failsafe.ingress").with_list_parse_key("failsafe.egress"));
        let cfg: Config = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|source| Error::Load { source_name: name, source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), Error> {
        self.attach_choice()?;
        self.failsafe_entries()?;
        for (field, list) in [("devices", &self.devices), ("exclude", &self.exclude)] {
            for (i, pat) in list.iter().enumerate() {
                if pat != "auto" {
                    glob::Pattern::new(pat).map_err(|e| Error::Invalid { field: format!("{field}[{i}]"), problem: format!("`{pat}` is not a valid glob: {e}") })?;
                }
            }
        }
        Ok(())
    }

    pub fn attach_choice(&self) -> Result<AttachModeChoice, Error> {
        match self.attach_mode.as_str() {
            "auto" => Ok(AttachModeChoice::Auto),
            "tcx" => Ok(AttachModeChoice::Tcx),
            "tc" => Ok(AttachModeChoice::Tc { priority: self.tc_priority, handle: self.tc_handle }),
            other => Err(Error::Invalid { field: "attach_mode".into(), problem: format!("`{other}` is not one of auto, tcx, tc") }),
        }
    }

    pub fn datapath(&self) -> Result<datapath::Config, Error> {
        Ok(datapath::Config { bpffs_root: self.bpffs_root.clone(), attach_mode: self.attach_choice()? })
    }

    /// Failsafe entries as (direction, IP protocol, port).
    pub fn failsafe_entries(&self) -> Result<Vec<(Direction, u8, u16)>, Error> {
        let mut out = Vec::new();
        for (dir, name, list) in [(Direction::Ingress, "ingress", &self.failsafe.ingress), (Direction::Egress, "egress", &self.failsafe.egress)] {
            for (i, entry) in list.iter().enumerate() {
                let field = format!("failsafe.{name}[{i}]");
                let bad = |problem: String| Error::Invalid { field: field.clone(), problem };
                let (proto, port) = entry.split_once('/').ok_or_else(|| bad(format!("`{entry}` is not PROTO/PORT (e.g. tcp/22)")))?;
                let proto = match proto {
                    "tcp" => 6,
                    "udp" => 17,
                    "sctp" => 132,
                    p => return Err(bad(format!("protocol `{p}` is not one of tcp, udp, sctp"))),
                };
                let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| bad(format!("port `{port}` is not in 1..65535")))?;
                out.push((dir, proto, port));
            }
        }
        Ok(out)
    }

    pub fn settings(&self) -> datapath::GlobalSettings {
        datapath::GlobalSettings {
            audit: self.audit,
            drop_non_ip: self.drop_non_ip,
            events_per_sec: self.events_per_sec,
            events_burst: self.events_burst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn builtin_default_is_safe() {
        let c = Config::load(None).unwrap();
        assert!(c.audit, "the default must be audit mode");
        assert_eq!(c.devices, vec!["auto"]);
        assert_eq!(c.attach_choice().unwrap(), AttachModeChoice::Auto);
        let fs = c.failsafe_entries().unwrap();
        assert!(fs.contains(&(Direction::Ingress, 6, 22)));
        assert!(fs.contains(&(Direction::Egress, 17, 53)));
    }

    fn load_str(s: &str) -> Result<Config, Error> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(s.as_bytes()).unwrap();
        Config::load(Some(f.path()))
    }

    #[test]
    fn file_overrides_default() {
        let c = load_str("audit = false\ndevices = [\"eth*\"]\n").unwrap();
        assert!(!c.audit);
        assert_eq!(c.devices, vec!["eth*"]);
        assert_eq!(c.bpffs_root, PathBuf::from("/sys/fs/bpf/hostfwd"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = load_str("attach_mode = \"xdp\"\n").unwrap_err().to_string();
        assert!(e.contains("attach_mode") && e.contains("xdp"), "{e}");
        let e = load_str("[failsafe]\ningress = [\"tcp/0\"]\negress = []\n").unwrap_err().to_string();
        assert!(e.contains("failsafe.ingress[0]"), "{e}");
        let e = load_str("[failsafe]\ningress = [\"icmp/1\"]\negress = []\n").unwrap_err().to_string();
        assert!(e.contains("icmp"), "{e}");
        let e = load_str("devices = [\"eth[\"]\n").unwrap_err().to_string();
        assert!(e.contains("devices[0]"), "{e}");
        let e = load_str("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn environment_overrides() {
        // Only this test sets HOSTFWD_* variables in this process.
        std::env::set_var("HOSTFWD_DEVICES", "eth0,bond0.*");
        std::env::set_var("HOSTFWD_BPFFS_ROOT", "/sys/fs/bpf/x");
        std::env::set_var("HOSTFWD_FAILSAFE__EGRESS", "udp/53");
        let c = Config::load(None);
        for k in ["HOSTFWD_DEVICES", "HOSTFWD_BPFFS_ROOT", "HOSTFWD_FAILSAFE__EGRESS"] {
            std::env::remove_var(k);
        }
        let c = c.unwrap();
        assert_eq!(c.devices, vec!["eth0", "bond0.*"]);
        assert_eq!(c.bpffs_root, PathBuf::from("/sys/fs/bpf/x"));
        assert_eq!(c.failsafe.egress, vec!["udp/53"]);
    }

    #[test]
    fn failsafe_can_be_disabled() {
        let c = load_str("[failsafe]\ningress = []\negress = []\n").unwrap();
        assert!(c.failsafe_entries().unwrap().is_empty());
    }
}
