//! The `hostfwd` daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hostfwd::config::{Config, DatapathConfig as _};
use hostfwd::datapath::{self, Datapath, Direction};
use hostfwd_bpf::layout as l;

#[derive(Parser)]
#[command(name = "hostfwd", version, about = "Host firewall daemon: eBPF policy on the host's own devices")]
struct Cli {
    /// Configuration file (TOML); the built-in default applies otherwise.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the default).
    Run,
    /// Remove every hostfwd attachment and pin, then exit.
    Detach,
    /// Load the programs, attach them to IFNAME, print what the kernel holds
    /// (JSON), and detach again unless --keep.
    Probe {
        #[arg(long)]
        attach: String,
        #[arg(long)]
        keep: bool,
    },
    /// Print what the kernel holds for hostfwd (attachments, link
    /// configuration, VLAN sets, host addresses, counters) as JSON.
    Inspect {
        /// One fact per line instead of JSON (for shell scripts).
        #[arg(long)]
        lines: bool,
    },
    /// Validate and explain policy files without a running daemon: every
    /// error with file:line:column and field; exit status 1 on any error.
    CheckPolicy {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the built-in default configuration.
    DefaultConfig,
}

/// `netlink_proto` warns ("failed to forward response back to the handle")
/// when a reply finds its receiver gone, which NetworkManager's link churn
/// provokes in the E2E VM; nothing an operator can act on.
/// `RUST_LOG=info,netlink_proto=warn` shows them.
const DEFAULT_LOG: &str = "info,netlink_proto=error";

fn main() -> ExitCode {
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG.into()))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not for journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd the journal stamps every line already.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostfwd: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

fn run(cli: Cli) -> Result<(), AnyError> {
    if let Some(Cmd::DefaultConfig) = cli.cmd {
        print!("{}", hostfwd::config::DEFAULT_TOML);
        return Ok(());
    }
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => daemon(cfg, cli.config),
        Cmd::Detach => detach(&cfg),
        Cmd::Probe { attach, keep } => probe(&cfg, &attach, keep),
        Cmd::Inspect { lines } => {
            let dp = Datapath::load_maps(&cfg.datapath()?)?;
            let snap = hostfwd::inspect::snapshot(&dp)?;
            if lines {
                print!("{}", snap.lines());
            } else {
                println!("{}", serde_json::to_string_pretty(&snap)?);
            }
            Ok(())
        }
        Cmd::CheckPolicy { files } => check_policy(&cfg, &files),
        Cmd::DefaultConfig => Ok(()),
    }
}

/// Removes every attachment and pin, and says what it removed on stdout
/// (`hostfwdctl detach` runs this and passes the line and errors on).
fn detach(cfg: &Config) -> Result<(), AnyError> {
    let dpcfg = cfg.datapath()?;
    let dp = Datapath::load(&dpcfg).map_err(|e| format!("loading the datapath: {e}"))?;
    let attached = dp.attachments().map(|a| a.len()).unwrap_or(0);
    let errors = dp.teardown();
    if !errors.is_empty() {
        return Err(format!("detach: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")).into());
    }
    println!("detached {attached} attachment{} and removed the pins under {}", if attached == 1 { "" } else { "s" }, dpcfg.bpffs_root.display());
    Ok(())
}

fn check_policy(cfg: &Config, files: &[PathBuf]) -> Result<(), AnyError> {
    use hostfwd::policy::files as pf;
    let policies = pf::load_with(files, cfg.strict_policies)?;
    // Offline there are no live host addresses: `host` resolves to nothing.
    let ctx = cfg.entities(Default::default());
    let compiled = pf::compile_for_node(&policies, &ctx, &cfg.node_labels)?;
    for p in &compiled.report.policies {
        for w in &p.warnings {
            println!("{w}");
        }
        println!("{}: {}", p.name, p.summary());
    }
    println!(
        "valid: {} policies; for this node's labels: {} identities, {} rule entries, enforcing ingress: {}, egress: {}",
        policies.len(),
        compiled.image.identities.len(),
        compiled.image.rules.len(),
        compiled.image.enforce_ingress,
        compiled.image.enforce_egress
    );
    Ok(())
}

fn probe(cfg: &Config, ifname: &str, keep: bool) -> Result<(), AnyError> {
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|e| format!("interface {ifname}: {e}"))?;
    let dp = Datapath::load(&cfg.datapath()?)?;
    dp.set_link(ifindex, l::L_ENFORCE_INGRESS | l::L_ENFORCE_EGRESS)?;
    for dir in Direction::ALL {
        dp.attach(ifindex, dir)?;
    }
    let list: Vec<_> = dp
        .attachments()?
        .into_iter()
        .map(|a| serde_json::json!({"ifindex": a.ifindex, "direction": datapath::dir_name(a.dir), "prog_id": a.prog_id}))
        .collect();
    println!("{}", serde_json::json!({"mode": dp.mode().name(), "attachments": list}));
    if !keep {
        for dir in Direction::ALL {
            dp.detach(ifindex, dir)?;
        }
        dp.remove_link(ifindex)?;
    }
    Ok(())
}

fn daemon(cfg: Config, file: Option<PathBuf>) -> Result<(), AnyError> {
    // Two workers: the bus keeps answering while a reconcile pass runs.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(hostfwd::daemon::run(cfg, file)).map_err(|e| -> AnyError { e.to_string().into() })
}
