//! A polkit text agent for this terminal while a change is made, as
//! systemctl starts one: when polkit wants the caller to authenticate
//! (`auth_admin_keep`), `pkttyagent` asks for the password on the terminal.
//!
//! Started only when it can be of use: standard input is a terminal, the
//! caller is not root (polkit authorizes root without asking), password
//! prompts are allowed (no `--no-ask-password`) and pkttyagent is installed.

use std::io::{IsTerminal, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

const PKTTYAGENT: &str = "/usr/bin/pkttyagent";
/// The descriptor number pkttyagent gets for `--notify-fd`.
const NOTIFY_FD: i32 = 3;
/// How long to wait for the agent to register before going on without it.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Agent {
    child: Child,
}

impl Agent {
    /// Whether an agent could be of use (see the module docs).
    pub fn wanted() -> bool {
        // SAFETY: geteuid cannot fail and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        !root && std::io::stdin().is_terminal() && Path::new(PKTTYAGENT).exists()
    }

    /// Starts the agent and waits until it has registered with polkit;
    /// `None` when no agent is wanted or it could not be started (the call
    /// then goes ahead without one).
    pub fn start(address: Option<&str>) -> Option<Agent> {
        if !Agent::wanted() {
            return None;
        }
        let (mut reader, writer) = std::io::pipe().ok()?;
        let wfd = writer.as_raw_fd();
        let mut cmd = Command::new(PKTTYAGENT);
        cmd.args(["--notify-fd", &NOTIFY_FD.to_string(), "--fallback"]);
        if let Some(a) = address {
            // pkttyagent registers on the bus the daemon is on.
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", a);
        }
        // SAFETY: between fork and exec only async-signal-safe calls
        // (dup2, fcntl) on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || {
                let ok = if wfd == NOTIFY_FD {
                    libc::fcntl(wfd, libc::F_SETFD, 0) >= 0
                } else {
                    // dup2 clears close-on-exec on the copy.
                    libc::dup2(wfd, NOTIFY_FD) >= 0
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd.spawn().ok()?;
        drop(writer);
        let agent = Agent { child };
        // The agent closes its end once registered (or exits on failure).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = tx.send(reader.read_to_end(&mut sink).is_ok());
        });
        match rx.recv_timeout(REGISTER_TIMEOUT) {
            Ok(_) => Some(agent),
            Err(_) => None,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM lets pkttyagent restore the terminal; then reap it.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}
