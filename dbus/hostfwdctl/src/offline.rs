//! The commands that work without the daemon: `policy validate` (the
//! daemon's own parser and compiler, from the pure `hostfwd-policy` crate),
//! `detach` (the daemon binary's `hostfwd detach`: hostfwdctl itself has no
//! kernel code) and `generate` (man pages, completions).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use hostfwd_config::{Bus, Config};
use hostfwd_policy::files as pf;
use serde_json::json;

use crate::cli::{self, Cli, GenerateCmd};
use crate::commands::to_json;
use crate::fail::{Exit, Failure, Result};

fn load_config(config: Option<&Path>) -> Result<Config> {
    Config::load(config).map_err(|e| Failure::error(e.to_string()))
}

/// `policy validate FILE...`: every file through the daemon's validator
/// (what `ValidatePolicy` answers), then all of them together through the
/// loader and the compiler, as the daemon would load its policy directory.
pub fn validate(files: &[PathBuf], config: Option<&Path>, json: bool) -> Result<(String, Exit)> {
    let mut per_file = Vec::new();
    for f in files {
        let text = pf::read(f).map_err(|e| match e {
            pf::Error::Read { path, source } => Failure::error(format!("reading {}: {source}", path.display())),
            other => Failure::error(other.to_string()),
        })?;
        let errors = hostfwd_policy::cilium::validate_policy(&f.display().to_string(), &text);
        per_file.push((f.display().to_string(), errors));
    }
    let mut problems: Vec<String> = Vec::new();
    let mut compiled = None;
    let mut policies = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    if per_file.iter().all(|(_, e)| e.is_empty()) {
        let cfg = load_config(config)?;
        // strict_policies = true turns the warnings into errors here.
        match pf::load_with(files, cfg.strict_policies) {
            Ok(loaded) => {
                let ctx = cfg.entities(Default::default());
                match pf::compile_for_node(&loaded, &ctx, &cfg.node_labels) {
                    Ok(c) => {
                        policies = c.report.policies.iter().map(|p| (p.name.clone(), p.summary())).collect();
                        warnings = c.report.policies.iter().flat_map(|p| p.warnings.iter().cloned()).collect();
                        compiled = Some(c);
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            Err(pf::Error::Read { path, source }) => return Err(Failure::error(format!("reading {}: {source}", path.display()))),
            Err(e) => problems.extend(e.to_string().lines().map(str::to_string)),
        }
    }
    let valid = problems.is_empty() && per_file.iter().all(|(_, e)| e.is_empty());
    let exit = if valid { Exit::Ok } else { Exit::Invalid };
    if json {
        let files: Vec<_> = per_file.iter().map(|(f, e)| json!({"file": f, "valid": e.is_empty(), "errors": e})).collect();
        let node = compiled.as_ref().map(|c| {
            json!({
                "identities": c.image.identities.len(),
                "rule_entries": c.image.rules.len(),
                "enforce_ingress": c.image.enforce_ingress,
                "enforce_egress": c.image.enforce_egress,
            })
        });
        let policies: Vec<_> = policies.iter().map(|(n, s)| json!({"name": n, "summary": s})).collect();
        let doc = json!({"valid": valid, "files": files, "errors": problems, "warnings": warnings, "policies": policies, "node": node});
        return Ok((to_json(&doc)?, exit));
    }
    let mut out = String::new();
    for (f, errors) in &per_file {
        // A problem across files (a name defined twice) names its file itself.
        if errors.is_empty() && problems.is_empty() {
            out.push_str(&format!("{f}: valid\n"));
        }
        for e in errors {
            out.push_str(e);
            out.push('\n');
        }
    }
    for p in problems.iter().chain(&warnings) {
        out.push_str(p);
        out.push('\n');
    }
    for (name, summary) in &policies {
        out.push_str(&format!("policy {name}: {summary}\n"));
    }
    if let Some(c) = &compiled {
        let yn = |b: bool| if b { "yes" } else { "no" };
        out.push_str(&format!(
            "for this node: {} policies, {} identities, {} rule entries, enforcing ingress: {}, egress: {}\n",
            policies.len(),
            c.image.identities.len(),
            c.image.rules.len(),
            yn(c.image.enforce_ingress),
            yn(c.image.enforce_egress)
        ));
    }
    if !valid {
        let n = per_file.iter().map(|(_, e)| e.len()).sum::<usize>() + problems.len();
        eprintln!("hostfwdctl: validation failed: {n} problem{}", if n == 1 { "" } else { "s" });
    }
    Ok((out, exit))
}

/// `detach`: refuses while the daemon owns its name on the bus (it would
/// attach again), then removes every attachment and pin with `hostfwd
/// detach` (same configuration and environment), passing on its report or
/// its error.
pub async fn detach(address: Option<&str>, config: Option<&Path>) -> Result<String> {
    let cfg = load_config(config)?;
    let bus = match address {
        Some(a) => Bus::Address(a.to_string()),
        None => cfg.bus().map_err(|e| Failure::error(e.to_string()))?,
    };
    if let Some(on) = daemon_on(&bus).await {
        return Err(Failure::error(format!(
            "busy: the daemon is running (it owns {} on {on}) and would attach again; stop it first (systemctl stop hostfwd)",
            hostfwd_dbus::BUS_NAME
        )));
    }
    let daemon = daemon_binary();
    let mut cmd = Command::new(&daemon);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.arg("detach").output().map_err(|e| Failure::error(format!("running {} detach: {e}", daemon.display())))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // Its error is the last line of its stderr (`hostfwd: …`), after any log.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let message = match last.strip_prefix("hostfwd: ") {
        Some(m) => m.to_string(),
        None => format!("{} detach failed ({}): {last}", daemon.display(), out.status),
    };
    Err(Failure::error(message))
}

/// The daemon binary: beside this executable (a cargo build), in the
/// `sbin` beside its `bin` (an install: /usr/bin/hostfwdctl,
/// /usr/sbin/hostfwd), else `hostfwd` from PATH.
fn daemon_binary() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent);
    let beside = dir.map(|d| d.join("hostfwd"));
    let sbin = dir.and_then(Path::parent).map(|p| p.join("sbin/hostfwd"));
    [beside, sbin].into_iter().flatten().find(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("hostfwd"))
}

/// `Some(bus description)` when someone owns hostfwd's name on `bus`;
/// `None` when not, or when there is no such bus to ask (`dbus = "none"`).
async fn daemon_on(bus: &Bus) -> Option<String> {
    let (builder, desc) = match bus {
        Bus::System => (zbus::connection::Builder::system(), crate::fail::describe_bus(None)),
        Bus::Session => (zbus::connection::Builder::session(), "the session bus".to_string()),
        Bus::Address(a) => (zbus::connection::Builder::address(a.as_str()), crate::fail::describe_bus(Some(a))),
        Bus::None => return None,
    };
    let conn = builder.ok()?.method_timeout(std::time::Duration::from_secs(10)).build().await.ok()?;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
    let name = zbus::names::BusName::try_from(hostfwd_dbus::BUS_NAME).ok()?;
    dbus.name_has_owner(name).await.ok()?.then_some(desc)
}

pub fn generate(cmd: &GenerateCmd) -> Result<String> {
    match cmd {
        GenerateCmd::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "hostfwdctl", &mut buf);
            String::from_utf8(buf).map_err(|e| Failure::error(format!("completion script: {e}")))
        }
        GenerateCmd::Man { dir } => {
            let pages = man_pages(dir).map_err(|e| Failure::error(format!("writing man pages to {}: {e}", dir.display())))?;
            Ok(pages.iter().map(|p| format!("{}\n", p.display())).collect())
        }
    }
}

/// hostfwdctl.1 (with EXIT STATUS and ENVIRONMENT) and one page per
/// visible subcommand (`hostfwdctl-policy-apply.1`, …); returns the files.
fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();

    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(exit_status_roff().as_bytes());
    page.extend_from_slice(
        b".SH ENVIRONMENT\n.TP\n\\fBDBUS_SYSTEM_BUS_ADDRESS\\fR\nThe bus to use when \\fB\\-\\-address\\fR is not given \
          (default: the system bus).\n.SH \"SEE ALSO\"\n\\fBhostfwd\\fR(8), \\fBbusctl\\fR(1), \\fBpolkit\\fR(8)\n",
    );
    man.render_version_section(&mut page)?;
    let top = dir.join(man.get_filename());
    std::fs::write(&top, page)?;
    written.push(top);

    fn subpages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            written.push(clap_mangen::Man::new(sub.clone()).generate_to(dir)?);
            subpages(sub, dir, written)?;
        }
        Ok(())
    }
    subpages(&cmd, dir, &mut written)?;
    Ok(written)
}

fn exit_status_roff() -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in cli::EXIT_CODES {
        s.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", meaning.replace('-', "\\-")));
    }
    s
}
