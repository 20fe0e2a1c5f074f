//! The command line, as clap derives it; the man pages and shell
//! completions are generated from this definition (`hostfwdctl generate`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit statuses, shown by `--help` and in the man page.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "success"),
    (1, "the daemon refused or failed (invalid policy, no such link or policy, nothing to confirm, busy), or another error"),
    (2, "usage error (unknown command or option, bad value)"),
    (3, "the daemon is not reachable (no bus at the address, hostfwd not running on it)"),
    (4, "access denied (polkit refused the caller)"),
    (5, "validation failed (policy validate)"),
    (6, "the daemon is degraded or not enforcing (status; its problems are listed)"),
];

fn exit_status_help() -> String {
    let mut s = String::from("Exit status:");
    for (code, meaning) in EXIT_CODES {
        s.push_str(&format!("\n  {code}  {meaning}"));
    }
    s
}

#[derive(Parser, Debug)]
#[command(
    name = "hostfwdctl",
    version,
    about = "Control the hostfwd host firewall daemon over D-Bus",
    long_about = "Control the hostfwd host firewall daemon over D-Bus \
                  (org.hostfwd.Firewall1 on the system bus). Reads are open to every \
                  user; changes are authorized by polkit.",
    after_help = exit_status_help(),
    propagate_version = true
)]
pub struct Cli {
    /// D-Bus address of the bus the daemon is on (default: the system bus).
    #[arg(long, global = true, value_name = "ADDRESS", env = "DBUS_SYSTEM_BUS_ADDRESS", hide_env_values = true)]
    pub address: Option<String>,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,

    /// Never ask for a password: changes that polkit would allow only after
    /// authentication fail with "interactive authorization required".
    #[arg(long, global = true)]
    pub no_ask_password: bool,

    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned text for people.
    Human,
    /// JSON (one document; one event per line for `monitor`).
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Show the daemon's state, audit mode, policy revision, pending
    /// confirmation, attach mode and link counts.
    Status,
    /// List the links the daemon sees, with their role and the reason for it.
    Links,
    /// Show one link.
    Link {
        /// Interface name (e.g. bond0.1000).
        name: String,
    },
    /// Manage policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Switch audit mode (nothing is dropped, would-be drops are reported),
    /// globally or for one link.
    Audit(AuditArgs),
    /// Stream drop events (and audited would-be drops) as they happen, until
    /// interrupted.
    Monitor(MonitorArgs),
    /// Read the permanent policy set again; runtime changes are dropped.
    Reload,
    /// Show the drop counters per link, direction and reason.
    Stats,
    /// Remove every hostfwd attachment and pin from the kernel, locally and
    /// without the daemon (it runs `hostfwd detach`). Refused while the daemon is
    /// on the bus, since it would attach again: stop it first.
    Detach {
        /// The daemon's configuration file (bpffs root, D-Bus setting);
        /// the built-in default otherwise.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Generate man pages or shell completions from this definition.
    #[command(hide = true, subcommand)]
    Generate(GenerateCmd),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// List the policy sources with their state.
    List,
    /// Print the YAML of a policy source.
    Show {
        name: String,
    },
    /// Check policy files with the daemon's own parser, without a daemon;
    /// every problem names file, line, column and field.
    Validate {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Configuration for node labels and CIDRs (the built-in default
        /// otherwise).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Apply a policy file at runtime (adds or replaces the source NAME).
    Apply(ApplyArgs),
    /// Remove a policy source.
    Remove {
        name: String,
        /// Also delete it from the policy directory.
        #[arg(long)]
        persist: bool,
    },
    /// Keep the change awaiting confirmation (default: the pending revision).
    Confirm {
        revision: Option<u64>,
    },
    /// Undo the change awaiting confirmation now.
    Rollback,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The policy file (Cilium CCNP/CNP YAML); `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The source's name (default: the file name without extension).
    #[arg(long)]
    pub name: Option<String>,
    /// Also write it to the policy directory (after confirmation when
    /// --confirm is given).
    #[arg(long)]
    pub persist: bool,
    /// Roll the change back unless `hostfwdctl policy confirm REVISION`
    /// comes within this time (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_confirm)]
    pub confirm: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    pub mode: OnOff,
    /// Only this link (the global mode otherwise).
    #[arg(long, value_name = "NAME")]
    pub link: Option<String>,
    /// Keep the setting across restarts.
    #[arg(long)]
    pub persist: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// Only events of this link.
    #[arg(long, value_name = "NAME")]
    pub link: Option<String>,
    /// Only events with this drop reason (e.g. policy-denied).
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,
    /// Only audited would-be drops.
    #[arg(long)]
    pub audit: bool,
}

#[derive(Subcommand, Debug)]
pub enum GenerateCmd {
    /// Write hostfwdctl.1 and one page per subcommand into DIR.
    Man { dir: PathBuf },
    /// Print the completion script for SHELL.
    Completions { shell: clap_complete::Shell },
}

/// `--confirm`: a humantime duration of at least one second and at most
/// what the bus's `u` seconds can carry.
fn parse_confirm(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 30s, 2m, 1h)"))?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    if d.as_secs() > u64::from(u32::MAX) {
        return Err("too long".into());
    }
    Ok(d)
}

/// Whole seconds for `confirm-timeout-sec`, rounded up.
pub fn confirm_seconds(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn confirm_durations() {
        assert_eq!(parse_confirm("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_confirm("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_confirm("0s").is_err());
        assert!(parse_confirm("soon").is_err());
        assert_eq!(confirm_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(confirm_seconds(Duration::from_secs(90)), 90);
    }
}
