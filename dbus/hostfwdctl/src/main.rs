//! `hostfwdctl`: the command-line client of the hostfwd daemon, over D-Bus
//! (`org.hostfwd.Firewall1`), with a few offline commands that use the
//! daemon's library directly (`policy validate`, `detach`).

mod agent;
mod bus;
mod cli;
mod commands;
mod fail;
mod monitor;
mod offline;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Cmd, Output, PolicyCmd};
use crate::commands::Ctx;
use crate::fail::{Exit, Result};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors, 0 for --help and --version.
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(fail::Failure::error(format!("starting the runtime: {e}"))),
    };
    let exit = match result {
        Ok((text, exit)) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // A reader that went away (`| head`) is not an error.
                Ok(()) => exit,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit,
                Err(e) => {
                    eprintln!("hostfwdctl: writing: {e}");
                    Exit::Error
                }
            }
        }
        Err(f) => {
            eprintln!("hostfwdctl: {f}");
            f.exit
        }
    };
    ExitCode::from(exit as u8)
}

async fn run(cli: Cli) -> Result<(String, Exit)> {
    let ctx = Ctx { address: cli.address.filter(|a| !a.is_empty()), json: cli.output == Output::Json, ask: !cli.no_ask_password };
    let text = match &cli.cmd {
        Cmd::Status => return commands::status(&ctx).await,
        Cmd::Links => commands::links(&ctx).await?,
        Cmd::Link { name } => commands::link(&ctx, name).await?,
        Cmd::Policy(PolicyCmd::Validate { files, config }) => return offline::validate(files, config.as_deref(), ctx.json),
        Cmd::Policy(cmd) => commands::policy(&ctx, cmd).await?,
        Cmd::Audit(args) => commands::audit(&ctx, args).await?,
        Cmd::Monitor(args) => return Ok((String::new(), monitor::run(&ctx, args).await?)),
        Cmd::Reload => commands::reload(&ctx).await?,
        Cmd::Stats => commands::stats(&ctx).await?,
        Cmd::Detach { config } => offline::detach(ctx.address.as_deref(), config.as_deref()).await?,
        Cmd::Generate(cmd) => offline::generate(cmd)?,
    };
    Ok((text, Exit::Ok))
}
