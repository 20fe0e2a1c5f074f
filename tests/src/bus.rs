//! A private system bus for D-Bus tests: `dbus-daemon` with the *shipped*
//! bus policy, `polkitd` against it with the *shipped* actions and example
//! rule, and the hostfwd daemon on it inside a test network namespace.
//!
//! ```no_run
//! use hostfwd_tests::bus::{Caller, TestBus};
//! use hostfwd_tests::Topology;
//! let bus = TestBus::start().unwrap();
//! let topo = Topology::new().unwrap();
//! let daemon = bus.start_daemon(&topo.host, "h0", &[("HOSTFWD_AUDIT", "false")]).unwrap();
//! // busctl as root, as nobody (uid 65534), or as a member of group hostfwd:
//! let out = bus.busctl(Caller::Nobody, &["get-property", "org.hostfwd.Firewall1", "/org/hostfwd/Firewall1", "org.hostfwd.Firewall1.Manager", "State"]);
//! assert!(out.success, "{}", out.stderr);
//! // any program, e.g. hostfwdctl, with DBUS_SYSTEM_BUS_ADDRESS set:
//! let st = bus.command(Caller::Member, "hostfwdctl").arg("status").status().unwrap();
//! # drop((daemon, st));
//! ```
//!
//! What is real here:
//! - the bus is a `dbus-daemon` of `<type>system</type>` whose policy is the
//!   system bus's default (deny method calls and name ownership, allow
//!   signals and replies) plus the shipped `dbus/org.hostfwd.Firewall1.conf`
//!   and polkit's own bus policy — so the test exercises the file that is
//!   installed to `/usr/share/dbus-1/system.d/`;
//! - `polkitd` (it drops to its own user) owns `org.freedesktop.PolicyKit1`
//!   on that bus and decides with the shipped
//!   `polkit/org.hostfwd.Firewall1.policy` (installed to
//!   `/usr/share/polkit-1/actions/`) and `polkit/50-hostfwd.rules`
//!   (installed to `/etc/polkit-1/rules.d/`): both files are installed while
//!   any [`TestBus`] of the process lives and removed (or the previous file
//!   restored) when the last one goes;
//! - callers are real processes with real credentials: [`Caller::Root`],
//!   [`Caller::Nobody`] (uid/gid 65534, no supplementary groups) and
//!   [`Caller::Member`] (the user [`MEMBER_USER`], created if missing, in
//!   group [`GROUP`], which the example rule lets do everything), switched
//!   with `setpriv`.
//!
//! Every bus, polkitd and daemon belongs to one [`TestBus`] / [`Daemon`]
//! and is killed on drop, so tests run in parallel. The caller's
//! environment never reaches the host's buses: commands get
//! `DBUS_SYSTEM_BUS_ADDRESS` set to the test bus and
//! `DBUS_SESSION_BUS_ADDRESS` removed.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::netns::run_cmd;
use crate::{io_err, Error, NetNs, Result};

/// The well-known name the daemon owns.
pub const BUS_NAME: &str = "org.hostfwd.Firewall1";
/// Allows TCP/80 in, so every other port is denied (ingress has a rule).
pub const WEB_ONLY: &str = "apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: web-only
spec:
  nodeSelector: {}
  ingress:
  - fromEntities:
    - all
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
";

/// The group the example polkit rule grants every action to.
pub const GROUP: &str = "hostfwd";
/// The test user in [`GROUP`] (created with `useradd --system` if missing).
pub const MEMBER_USER: &str = "hostfwd-test";
/// uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;

const POLKITD: &str = "/usr/lib/polkit-1/polkitd";
const ACTIONS_DEST: &str = "/usr/share/polkit-1/actions/org.hostfwd.Firewall1.policy";
const RULES_DEST: &str = "/etc/polkit-1/rules.d/50-hostfwd.rules";

/// The repository's root (this crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// The shipped bus policy file.
pub fn shipped_bus_policy() -> PathBuf {
    repo_root().join("dbus/org.hostfwd.Firewall1.conf")
}

/// The shipped polkit actions file.
pub fn shipped_actions() -> PathBuf {
    repo_root().join("polkit/org.hostfwd.Firewall1.policy")
}

/// The shipped example polkit rule.
pub fn shipped_rules() -> PathBuf {
    repo_root().join("polkit/50-hostfwd.rules")
}

/// Who runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Root,
    /// uid/gid 65534, no supplementary groups: may read, may not change.
    Nobody,
    /// [`MEMBER_USER`], with its groups (so in [`GROUP`]).
    Member,
}

impl Caller {
    /// `setpriv …` arguments that switch to this caller (none for root).
    pub fn setpriv_args(self) -> Vec<String> {
        match self {
            Caller::Root => vec![],
            Caller::Nobody => vec![format!("--reuid={NOBODY}"), format!("--regid={NOBODY}"), "--clear-groups".into()],
            Caller::Member => {
                let (uid, gid) = member_ids();
                vec![format!("--reuid={uid}"), format!("--regid={gid}"), "--init-groups".into()]
            }
        }
    }
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Stdout, or a panic naming `what` with stderr.
    pub fn ok(self, what: &str) -> String {
        assert!(self.success, "{what} failed: {}{}", self.stderr, self.stdout);
        self.stdout
    }

    /// Stderr of a command that must fail, or a panic naming `what`.
    pub fn err(self, what: &str) -> String {
        assert!(!self.success, "{what} succeeded but should have failed: {}", self.stdout);
        self.stderr
    }
}

fn output(cmd: &mut Command) -> Result<Output> {
    let line = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().map_err(io_err(format!("spawn {line}")))?;
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Creates [`GROUP`] and [`MEMBER_USER`] in it, once per process.
fn ensure_member() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let exists = |db: &str, name: &str| Command::new("getent").args([db, name]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        if !exists("group", GROUP) {
            let _ = run_cmd(Command::new("groupadd").args(["--system", GROUP]));
            assert!(exists("group", GROUP), "groupadd {GROUP} failed");
        }
        if !exists("passwd", MEMBER_USER) {
            let _ = run_cmd(Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--groups", GROUP, MEMBER_USER]));
            assert!(exists("passwd", MEMBER_USER), "useradd {MEMBER_USER} failed");
        } else {
            // An existing user that is not (yet) in the group.
            let _ = run_cmd(Command::new("usermod").args(["--append", "--groups", GROUP, MEMBER_USER]));
        }
    });
}

/// (uid, primary gid) of [`MEMBER_USER`].
pub fn member_ids() -> (u32, u32) {
    ensure_member();
    let line = run_cmd(Command::new("getent").args(["passwd", MEMBER_USER])).unwrap_or_default();
    let f: Vec<&str> = line.trim().split(':').collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse().ok());
    match (num(2), num(3)) {
        (Some(u), Some(g)) => (u, g),
        _ => panic!("no uid/gid for {MEMBER_USER} in {line:?}"),
    }
}

/// Where test processes coordinate the installation of the polkit files:
/// `lock` (flock), `users/<pid>` (one per process with a live bus) and
/// `backup/` (what was installed before the first user came).
const POLKIT_REGISTRY: &str = "/run/hostfwd-tests/polkit";

/// Test buses of this process: the registry is touched on 0 → 1 and 1 → 0.
static POLKIT_USERS: Mutex<usize> = Mutex::new(0);

/// The polkit files are shared by every test process of the machine (two
/// test binaries may run at once): they are installed while any process
/// has a live [`TestBus`], and what was there before is restored when the
/// last one goes — also after a crashed run (its pid is dead, its backup
/// is still there).
fn polkit_files_acquire() -> Result<()> {
    let mut users = POLKIT_USERS.lock().unwrap_or_else(|p| p.into_inner());
    if *users == 0 {
        with_registry(|reg, live| {
            let backup = reg.join("backup");
            if live == 0 && !backup.exists() {
                std::fs::create_dir_all(&backup).map_err(io_err("mkdir polkit backup"))?;
                for dest in [ACTIONS_DEST, RULES_DEST] {
                    if let Ok(before) = std::fs::read(dest) {
                        let name = Path::new(dest).file_name().unwrap_or_default();
                        std::fs::write(backup.join(name), before).map_err(io_err("back up a polkit file"))?;
                    }
                }
            }
            for (src, dest) in [(shipped_actions(), ACTIONS_DEST), (shipped_rules(), RULES_DEST)] {
                let text = std::fs::read(&src).map_err(io_err(format!("read {}", src.display())))?;
                std::fs::write(dest, text).map_err(io_err(format!("install {dest}")))?;
                // polkitd reads rules as its own user.
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o644));
            }
            std::fs::write(reg.join("users").join(std::process::id().to_string()), b"").map_err(io_err("register a polkit user"))
        })?;
    }
    *users += 1;
    Ok(())
}

fn polkit_files_release() {
    let mut users = POLKIT_USERS.lock().unwrap_or_else(|p| p.into_inner());
    *users = users.saturating_sub(1);
    if *users > 0 {
        return;
    }
    let _ = with_registry(|reg, _| {
        let _ = std::fs::remove_file(reg.join("users").join(std::process::id().to_string()));
        if live_users(reg) > 0 {
            return Ok(());
        }
        let backup = reg.join("backup");
        for dest in [ACTIONS_DEST, RULES_DEST] {
            let name = Path::new(dest).file_name().unwrap_or_default();
            let _ = match std::fs::read(backup.join(name)) {
                Ok(before) => std::fs::write(dest, before),
                Err(_) => std::fs::remove_file(dest),
            };
        }
        let _ = std::fs::remove_dir_all(&backup);
        Ok(())
    });
}

/// Runs `f(registry dir, live users other than this process)` under the
/// registry's lock; entries of dead processes are pruned first.
fn with_registry<T>(f: impl FnOnce(&Path, usize) -> Result<T>) -> Result<T> {
    let reg = Path::new(POLKIT_REGISTRY);
    std::fs::create_dir_all(reg.join("users")).map_err(io_err(format!("mkdir {POLKIT_REGISTRY}")))?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(reg.join("lock")).map_err(io_err("open the polkit registry lock"))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io_err("flock the polkit registry")(e))?;
    let live = live_users(reg);
    f(reg, live)
}

/// Live processes registered, other than this one; removes dead ones.
fn live_users(reg: &Path) -> usize {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir(reg.join("users")) else { return 0 };
    let mut live = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == me {
            continue;
        }
        if Path::new("/proc").join(&name).exists() {
            live += 1;
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
    live
}

/// The bus configuration: the system bus's default policy, polkit's and
/// hostfwd's shipped files.
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include ignore_missing="no">/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
  <include ignore_missing="no">{hostfwd}</include>
</busconfig>
"#,
        socket = socket.display(),
        hostfwd = shipped_bus_policy().display()
    )
}

/// A private system bus with polkitd on it. See the module docs.
pub struct TestBus {
    dir: tempfile::TempDir,
    address: String,
    dbus: Child,
    polkitd: Child,
}

impl TestBus {
    /// Starts the bus and polkitd, installs the polkit files, makes sure the
    /// test user exists; returns once polkitd owns its name.
    pub fn start() -> Result<TestBus> {
        ensure_member();
        polkit_files_acquire()?;
        match Self::start_inner() {
            Ok(b) => Ok(b),
            Err(e) => {
                polkit_files_release();
                Err(e)
            }
        }
    }

    fn start_inner() -> Result<TestBus> {
        let dir = tempfile::Builder::new().prefix("hfbus").tempdir().map_err(io_err("tempdir"))?;
        // Everyone connects to the socket (nobody, the test user, polkitd).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).map_err(io_err("chmod bus dir"))?;
        let socket = dir.path().join("bus");
        let conf = dir.path().join("bus.conf");
        std::fs::write(&conf, bus_config(&socket)).map_err(io_err("write bus.conf"))?;
        let mut dbus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("spawn dbus-daemon"))?;
        // The address is printed once the bus listens.
        let mut line = String::new();
        let read = dbus.stdout.take().map(|o| BufReader::new(o).read_line(&mut line));
        if !matches!(read, Some(Ok(n)) if n > 0) {
            let _ = dbus.kill();
            let _ = dbus.wait();
            return Err(Error::Unexpected { what: "dbus-daemon --print-address".into(), got: format!("{read:?}") });
        }
        let address = line.trim().to_string();
        let polkit_log = std::fs::File::create(dir.path().join("polkitd.log")).map_err(io_err("polkitd.log"))?;
        let polkitd = Command::new(POLKITD)
            .arg("--no-debug")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(polkit_log.try_clone().map_err(io_err("polkitd.log"))?)
            .stderr(polkit_log)
            .spawn();
        let polkitd = match polkitd {
            Ok(p) => p,
            Err(e) => {
                let _ = dbus.kill();
                let _ = dbus.wait();
                return Err(io_err(format!("spawn {POLKITD}"))(e));
            }
        };
        let bus = TestBus { dir, address, dbus, polkitd };
        bus.wait_for_name("org.freedesktop.PolicyKit1", Duration::from_secs(10))?;
        Ok(bus)
    }

    /// The bus address (`unix:path=…,guid=…`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A scratch directory that lives as long as the bus.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What polkitd wrote.
    pub fn polkitd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("polkitd.log")).unwrap_or_default()
    }

    /// `program` as `caller` (through `setpriv` unless root), with
    /// `DBUS_SYSTEM_BUS_ADDRESS` pointing at this bus and no session bus.
    /// Add arguments and run it like any `Command`.
    pub fn command(&self, caller: Caller, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match caller {
            Caller::Root => Command::new(program),
            _ => {
                let mut c = Command::new("setpriv");
                c.args(caller.setpriv_args()).arg("--").arg(program);
                c
            }
        };
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address).env_remove("DBUS_SESSION_BUS_ADDRESS");
        cmd
    }

    /// `busctl --address=ADDR ARGS` as `caller` (busctl allows interactive
    /// authorization by default; pass `--allow-interactive-authorization=no`
    /// to forbid it).
    pub fn busctl(&self, caller: Caller, args: &[&str]) -> Output {
        let mut cmd = self.command(caller, "busctl");
        cmd.arg(format!("--address={}", self.address)).args(args);
        output(&mut cmd).unwrap_or_else(|e| panic!("busctl: {e}"))
    }

    /// `gdbus call --system --dest hostfwd …` as `caller`: unlike busctl,
    /// gdbus prints the D-Bus *name* of an error
    /// (`GDBus.Error:org.freedesktop.DBus.Error.AccessDenied: …`). `args`
    /// are GVariant text (`"'name'"`, `"{'persist': <true>}"`). gdbus does
    /// not allow interactive authorization unless `interactive`.
    pub fn gdbus_call(&self, caller: Caller, path: &str, method: &str, args: &[&str], interactive: bool) -> Output {
        let mut cmd = self.command(caller, "gdbus");
        cmd.args(["call", "--system", "--dest", BUS_NAME, "--object-path", path, "--method", method]);
        if interactive {
            cmd.arg("--interactive");
        }
        // `--` so that GVariant text starting with `-` is not an option.
        cmd.arg("--").args(args);
        output(&mut cmd).unwrap_or_else(|e| panic!("gdbus: {e}"))
    }

    /// Stops polkitd (for tests of what happens without it); the bus stays.
    pub fn stop_polkitd(&mut self) {
        let _ = self.polkitd.kill();
        let _ = self.polkitd.wait();
    }

    /// Whether `name` has an owner on this bus.
    pub fn has_name(&self, name: &str) -> bool {
        let out = self.busctl(Caller::Root, &["call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", name]);
        out.success && out.stdout.trim() == "b true"
    }

    /// Waits until `name` has an owner.
    pub fn wait_for_name(&self, name: &str, within: Duration) -> Result<()> {
        let end = Instant::now() + within;
        while !self.has_name(name) {
            if Instant::now() >= end {
                return Err(Error::Timeout { what: format!("{name} on the test bus ({})", self.polkitd_log().trim()), after: within });
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }

    /// Starts `hostfwd run` in `ns` on this bus, with private state and
    /// policy directories and bpffs root, selecting `devices`
    /// (`HOSTFWD_DEVICES`); `env` adds or overrides configuration
    /// (`HOSTFWD_AUDIT=false`, …). Returns once the daemon owns its name.
    pub fn start_daemon(&self, ns: &NetNs, devices: &str, env: &[(&str, &str)]) -> Result<Daemon> {
        Daemon::start(self, ns, devices, env)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        for c in [&mut self.polkitd, &mut self.dbus] {
            let _ = c.kill();
            let _ = c.wait();
        }
        polkit_files_release();
    }
}

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there.
fn ensure_bpffs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mounted = nix::sys::statfs::statfs("/sys/fs/bpf").is_ok_and(|s| s.filesystem_type().0 == 0xcafe4a11);
        if !mounted {
            let _ = Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status();
        }
    });
}

/// A running `hostfwd run` on a [`TestBus`], killed on drop (its bpffs
/// root removed with it).
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    /// `HOSTFWD_BPFFS_ROOT`.
    pub bpffs_root: PathBuf,
}

impl Daemon {
    fn start(bus: &TestBus, ns: &NetNs, devices: &str, env: &[(&str, &str)]) -> Result<Daemon> {
        static N: AtomicU32 = AtomicU32::new(0);
        ensure_bpffs();
        let dir = tempfile::Builder::new().prefix("hfd").tempdir().map_err(io_err("tempdir"))?;
        let bpffs_root = PathBuf::from(format!("/sys/fs/bpf/hftest-bus-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        for d in ["state", "policies"] {
            let d = dir.path().join(d);
            std::fs::create_dir(&d).map_err(io_err(format!("mkdir {}", d.display())))?;
        }
        let child = Self::spawn(bus, ns, devices, env, dir.path(), &bpffs_root)?;
        let mut d = Daemon { child, dir, bpffs_root };
        d.wait_for_name(bus)?;
        Ok(d)
    }

    fn spawn(bus: &TestBus, ns: &NetNs, devices: &str, env: &[(&str, &str)], dir: &Path, bpffs_root: &Path) -> Result<Child> {
        // Appends: a restarted daemon's log follows the previous one's.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("hostfwd.log")).map_err(io_err("hostfwd.log"))?;
        let mut cmd = ns.cmd(crate::hostfwd_bin());
        cmd.arg("run")
            .env("HOSTFWD_DBUS", bus.address())
            .env("HOSTFWD_STATE_DIR", dir.join("state"))
            .env("HOSTFWD_POLICY_DIR", dir.join("policies"))
            .env("HOSTFWD_BPFFS_ROOT", bpffs_root)
            .env("HOSTFWD_DEVICES", devices)
            .env("RUST_LOG", "info")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("hostfwd.log"))?)
            .stderr(log)
            .spawn()
            .map_err(io_err("spawn hostfwd"))
    }

    /// Waits until this daemon owns its name; fails early if it exits.
    fn wait_for_name(&mut self, bus: &TestBus) -> Result<()> {
        let within = Duration::from_secs(30);
        let end = Instant::now() + within;
        while !bus.has_name(BUS_NAME) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Unexpected { what: "hostfwd exited before owning its name".into(), got: format!("{status}:\n{}", self.log()) });
            }
            if Instant::now() >= end {
                return Err(Error::Timeout { what: format!("{BUS_NAME} on the test bus; hostfwd log:\n{}", self.log()), after: within });
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Ok(())
    }

    /// SIGKILL (no clean shutdown: what a crash or an OOM kill does), then
    /// a new daemon with the same state and policy directories and the same
    /// bpffs root (it adopts the pinned programs and maps), on `bus` in
    /// `ns` with `devices` and `env` (as [`TestBus::start_daemon`]).
    /// Returns once the new one owns the name.
    pub fn kill_and_restart(&mut self, bus: &TestBus, ns: &NetNs, devices: &str, env: &[(&str, &str)]) -> Result<()> {
        self.kill(bus)?;
        self.restart(bus, ns, devices, env)
    }

    /// SIGKILL, then waits until the bus has dropped the daemon's name.
    pub fn kill(&mut self, bus: &TestBus) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The bus drops the name with the connection.
        let end = Instant::now() + Duration::from_secs(10);
        while bus.has_name(BUS_NAME) {
            if Instant::now() >= end {
                return Err(Error::Timeout { what: format!("{BUS_NAME} released after SIGKILL"), after: Duration::from_secs(10) });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// After [`Daemon::kill`]: what a reboot does to the datapath. Every
    /// pin goes, and with the last reference the maps and the tcx links
    /// (the programs are detached); state and policy directories stay.
    pub fn remove_pins(&self) -> Result<()> {
        remove_pins(&self.bpffs_root).map_err(io_err(format!("removing {}", self.bpffs_root.display())))
    }

    /// A new daemon after [`Daemon::kill`], with the same directories and
    /// bpffs root; returns once it owns the name.
    pub fn restart(&mut self, bus: &TestBus, ns: &NetNs, devices: &str, env: &[(&str, &str)]) -> Result<()> {
        self.child = Self::spawn(bus, ns, devices, env, self.dir.path(), &self.bpffs_root)?;
        self.wait_for_name(bus)
    }

    /// What the daemon logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hostfwd.log")).unwrap_or_default()
    }

    /// `HOSTFWD_STATE_DIR`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `HOSTFWD_POLICY_DIR` (the permanent policy set).
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = remove_pins(&self.bpffs_root);
    }
}

/// Removes a bpffs root with every pin below it (pins are plain files to
/// unlink; directories go bottom-up).
fn remove_pins(root: &Path) -> std::io::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(root)
}
