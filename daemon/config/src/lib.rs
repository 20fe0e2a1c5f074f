//! The daemon's configuration: the documented `hostfwd.toml` is compiled in
//! as the default, a file given with `--config` overrides it key by key, and
//! `HOSTFWD_<KEY>` environment variables override both (nested keys with a
//! double underscore: `HOSTFWD_FAILSAFE__INGRESS=tcp/22,udp/68`).
//!
//! Pure: loading and checking every key, read by the daemon and by
//! `hostfwdctl` alike. What the daemon makes of it for the kernel (the
//! datapath's settings) is the daemon's `config` module; this crate may
//! not depend on the datapath or the daemon.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use hostfwd_policy::entities::EntityContext;
use hostfwd_policy::model::Direction;

/// The built-in default (and the documented example).
pub const DEFAULT_TOML: &str = include_str!("../../hostfwd.toml");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration {source_name}: {source}")]
    Load { source_name: String, source: config::ConfigError },
    #[error("configuration field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

/// How to choose the attach mode (`attach_mode`, `tc_priority`, `tc_handle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachModeChoice {
    /// tcx where the kernel has it (probed, not guessed from the version).
    #[default]
    Auto,
    Tcx,
    Tc { priority: u16, handle: u32 },
}

/// max_entries for one map, and the configuration key it comes from (named
/// in errors and in the "map is full" warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSize {
    pub map: &'static str,
    pub key: &'static str,
    pub entries: u32,
}

/// `[maps]`: the size (max_entries) of every map that can fill. The
/// defaults and their memory are documented in `hostfwd.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Maps {
    pub conntrack_in_v4: u32,
    pub conntrack_in_v6: u32,
    pub conntrack_out_v4: u32,
    pub conntrack_out_v6: u32,
    pub fragments: u32,
    pub host_addrs: u32,
    pub local_nets: u32,
    pub vlans: u32,
    pub identities_v4: u32,
    pub identities_v6: u32,
    pub rules: u32,
    pub counters: u32,
}

/// One `[maps]` key: its map and the sizes hostfwd accepts. None of these
/// map types needs a power of two (the kernel rounds hash buckets up
/// itself); the bounds keep a typo from asking for gigabytes or a map too
/// small to work (an LRU map needs entries for every CPU's free list).
struct MapKey {
    key: &'static str,
    map: &'static str,
    min: u32,
    max: u32,
}

const MAP_KEYS: [MapKey; 12] = [
    MapKey { key: "maps.conntrack_in_v4", map: "hf_ct4", min: 1024, max: 1 << 24 },
    MapKey { key: "maps.conntrack_in_v6", map: "hf_ct6", min: 1024, max: 1 << 24 },
    MapKey { key: "maps.conntrack_out_v4", map: "hf_ct4_out", min: 1024, max: 1 << 24 },
    MapKey { key: "maps.conntrack_out_v6", map: "hf_ct6_out", min: 1024, max: 1 << 24 },
    MapKey { key: "maps.fragments", map: "hf_frags", min: 1024, max: 1 << 20 },
    MapKey { key: "maps.host_addrs", map: "hf_host_addrs", min: 64, max: 1 << 20 },
    MapKey { key: "maps.local_nets", map: "hf_local_nets", min: 64, max: 1 << 20 },
    MapKey { key: "maps.vlans", map: "hf_vlans", min: 4094, max: 1 << 20 },
    MapKey { key: "maps.identities_v4", map: "hf_ident4", min: 1024, max: 1 << 24 },
    MapKey { key: "maps.identities_v6", map: "hf_ident6", min: 1024, max: 1 << 24 },
    MapKey { key: "maps.rules", map: "hf_rules", min: 1024, max: 1 << 24 },
    MapKey { key: "maps.counters", map: "hf_counters", min: 256, max: 1 << 20 },
];

impl Maps {
    /// Values in the order of MAP_KEYS.
    fn values(&self) -> [u32; 12] {
        [
            self.conntrack_in_v4,
            self.conntrack_in_v6,
            self.conntrack_out_v4,
            self.conntrack_out_v6,
            self.fragments,
            self.host_addrs,
            self.local_nets,
            self.vlans,
            self.identities_v4,
            self.identities_v6,
            self.rules,
            self.counters,
        ]
    }
}

/// The configuration key (`maps.…`) that sizes a map, if any.
pub fn map_size_key(map: &str) -> Option<&'static str> {
    MAP_KEYS.iter().find(|k| k.map == map).map(|k| k.key)
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Failsafe {
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

/// Which bus the API is served on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
    /// A bus address (`unix:path=/run/…`), e.g. a private test bus.
    Address(String),
    /// No API (the daemon still enforces and follows its files).
    None,
}

/// `[entities]`: Cilium entities defined by addresses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entities {
    pub kube_apiserver: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub audit: bool,
    pub devices: Vec<String>,
    pub exclude: Vec<String>,
    pub vlan_bypass: Vec<u16>,
    pub policy_dir: PathBuf,
    pub state_dir: PathBuf,
    pub dbus: String,
    pub node_labels: std::collections::BTreeMap<String, String>,
    pub node_cidrs: Vec<ipnet::IpNet>,
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// Refuse what the policies may contain that changes nothing here
    /// (unknown fields outside spec, inert peers) instead of warning.
    pub strict_policies: bool,
    pub entities: Entities,
    pub bpffs_root: PathBuf,
    pub attach_mode: String,
    pub tc_priority: u16,
    pub tc_handle: u32,
    pub detach_on_exit: bool,
    pub drop_non_ip: bool,
    pub events_per_sec: u32,
    pub events_burst: u32,
    pub failsafe: Failsafe,
    pub maps: Maps,
}

impl Config {
    /// Built-in default, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly.
    pub fn load_with_env(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        let mut b = config::Config::builder().add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml));
        let name = match file {
            Some(f) => {
                b = b.add_source(config::File::from(f).format(config::FileFormat::Toml).required(true));
                f.display().to_string()
            }
            None => "built-in default".to_string(),
        };
        b = b.add_source(config::Environment::with_prefix("HOSTFWD").source(Some(known_env_vars(env))).prefix_separator("_").separator("__").try_parsing(true).list_separator(",").with_list_parse_key("devices").with_list_parse_key("exclude").with_list_parse_key("vlan_bypass").with_list_parse_key("node_cidrs").with_list_parse_key("cluster_cidrs").with_list_parse_key("entities.kube_apiserver").with_list_parse_key("failsafe.ingress").with_list_parse_key("failsafe.egress"));
        let cfg: Config = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|source| Error::Load { source_name: name, source })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), Error> {
        self.attach_choice()?;
        for (i, v) in self.vlan_bypass.iter().enumerate() {
            if *v > 4094 {
                return Err(Error::Invalid { field: format!("vlan_bypass[{i}]"), problem: format!("{v} is not a VLAN id (0 = all, 1..4094)") });
            }
        }
        self.failsafe_entries()?;
        self.map_sizes()?;
        self.bus()?;
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

    pub fn bus(&self) -> Result<Bus, Error> {
        match self.dbus.as_str() {
            "system" => Ok(Bus::System),
            "session" => Ok(Bus::Session),
            "none" => Ok(Bus::None),
            a if a.contains(':') => Ok(Bus::Address(a.to_string())),
            other => Err(Error::Invalid { field: "dbus".into(), problem: format!("`{other}` is not system, session, none or a D-Bus address (unix:path=…)") }),
        }
    }

    /// The entities of this configuration for the given host addresses
    /// (none offline: `host` then resolves to nothing).
    pub fn entities(&self, host_addrs: std::collections::BTreeSet<std::net::IpAddr>) -> EntityContext {
        EntityContext {
            host_addrs,
            node_cidrs: self.node_cidrs.clone(),
            cluster_cidrs: self.cluster_cidrs.clone(),
            kube_apiserver: self.entities.kube_apiserver.clone(),
        }
    }

    /// `[maps]` as sizes for the loader, each checked against its bounds.
    pub fn map_sizes(&self) -> Result<Vec<MapSize>, Error> {
        MAP_KEYS
            .iter()
            .zip(self.maps.values())
            .map(|(k, entries)| {
                if entries < k.min || entries > k.max {
                    return Err(Error::Invalid { field: k.key.to_string(), problem: format!("{entries} entries is outside {}..={}", k.min, k.max) });
                }
                Ok(MapSize { map: k.map, key: k.key, entries })
            })
            .collect()
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
}

/// The `HOSTFWD_*` variables that name a configuration key. Other
/// `HOSTFWD_*` variables (test harnesses, wrappers) are not configuration:
/// they are ignored with a warning instead of failing the start.
fn known_env_vars(env: impl IntoIterator<Item = (String, String)>) -> std::collections::HashMap<String, String> {
    let keys: Vec<String> = toml_keys();
    env.into_iter()
        .filter(|(k, _)| k.starts_with("HOSTFWD_"))
        .filter(|(k, _)| {
            let key = k["HOSTFWD_".len()..].to_ascii_lowercase().replace("__", ".");
            let known = keys.contains(&key);
            if !known {
                tracing::warn!(variable = %k, "ignoring environment variable: not a configuration key");
            }
            known
        })
        .collect()
}

/// Every key of the built-in default, nested ones as `table.key`.
fn toml_keys() -> Vec<String> {
    let mut out = Vec::new();
    let mut table = String::new();
    for line in DEFAULT_TOML.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            table = format!("{t}.");
        } else if let Some((k, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            out.push(format!("{table}{}", k.trim()));
        }
    }
    out
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
        let e = load_str("vlan_bypass = [5000]\n").unwrap_err().to_string();
        assert!(e.contains("vlan_bypass[0]"), "{e}");
        let e = load_str("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn environment_overrides() {
        let env = [
            ("HOSTFWD_DEVICES", "eth0,bond0.*"),
            ("HOSTFWD_BPFFS_ROOT", "/sys/fs/bpf/x"),
            ("HOSTFWD_FAILSAFE__EGRESS", "udp/53"),
            ("HOSTFWD_NOT_A_KEY", "1"),
            ("PATH", "/bin"),
        ];
        let c = Config::load_with_env(None, env.map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        assert_eq!(c.devices, vec!["eth0", "bond0.*"]);
        assert_eq!(c.bpffs_root, PathBuf::from("/sys/fs/bpf/x"));
        assert_eq!(c.failsafe.egress, vec!["udp/53"]);
        assert!(toml_keys().contains(&"failsafe.ingress".to_string()));
    }

    #[test]
    fn policy_keys() {
        let c = load_str("cluster_cidrs = [\"10.0.0.0/8\"]\n[node_labels]\nnode-access = \"ssh\"\n").unwrap();
        assert_eq!(c.cluster_cidrs, vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(c.node_labels.get("node-access").map(String::as_str), Some("ssh"));
        let e = load_str("node_cidrs = [\"10.0.0.0/33\"]\n").unwrap_err().to_string();
        assert!(e.contains("node_cidrs"), "{e}");
        assert!(!c.strict_policies, "lenient by default");
        assert!(c.entities.kube_apiserver.is_empty());
        let c = load_str("strict_policies = true\n[entities]\nkube_apiserver = [\"10.96.0.1/32\"]\n").unwrap();
        assert!(c.strict_policies);
        assert_eq!(c.entities(Default::default()).kube_apiserver, vec!["10.96.0.1/32".parse::<ipnet::IpNet>().unwrap()]);
        let e = load_str("[entities]\nkube_apiserver = [\"nowhere\"]\n").unwrap_err().to_string();
        assert!(e.contains("kube_apiserver"), "{e}");
    }

    #[test]
    fn failsafe_can_be_disabled() {
        let c = load_str("[failsafe]\ningress = []\negress = []\n").unwrap();
        assert!(c.failsafe_entries().unwrap().is_empty());
    }

    #[test]
    fn map_sizes_merge_validate_and_name_the_key() {
        let d = Config::load(None).unwrap().map_sizes().unwrap();
        assert_eq!(d.len(), MAP_KEYS.len());
        let c = load_str("[maps]\nrules = 524288\n").unwrap();
        let sizes = c.map_sizes().unwrap();
        let rules = sizes.iter().find(|s| s.map == "hf_rules").unwrap();
        assert_eq!((rules.key, rules.entries), ("maps.rules", 524288));
        // The other keys keep the built-in default.
        assert_eq!(sizes.iter().find(|s| s.map == "hf_ct4").map(|s| s.entries), d.iter().find(|s| s.map == "hf_ct4").map(|s| s.entries));
        let e = load_str("[maps]\nconntrack_in_v6 = 10\n").unwrap_err().to_string();
        assert!(e.contains("maps.conntrack_in_v6") && e.contains("10 entries"), "{e}");
        let e = load_str("[maps]\ncounters = 4294967295\n").unwrap_err().to_string();
        assert!(e.contains("maps.counters"), "{e}");
        let e = load_str("[maps]\nconntrack = 1024\n").unwrap_err().to_string();
        assert!(e.contains("conntrack"), "{e}");
        let env = [("HOSTFWD_MAPS__CONNTRACK_OUT_V4", "4096")].map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::load_with_env(None, env).unwrap();
        assert_eq!(c.maps.conntrack_out_v4, 4096);
        assert_eq!(map_size_key("hf_ct4_out"), Some("maps.conntrack_out_v4"));
        assert_eq!(map_size_key("hf_events"), None);
    }
}
