//! Network namespace guard and the two-namespace veth topology.
//!
//! Namespaces are made with `ip netns add` (a bind mount under
//! `/run/netns/NAME`) and entered in-process with `setns(CLONE_NEWNET)` on a
//! fresh thread ([`NetNs::run`]) or, for commands, with
//! `nsenter --net=/run/netns/NAME` ([`NetNs::cmd`]). Not `ip netns exec`: it
//! remounts `/sys` and so hides `/sys/fs/bpf` pins.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use crate::{io_err, Error, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Run a command, return its stdout; on failure the error carries the
/// command line, exit status and stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(io_err(format!("spawn `{line}`")))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A uniquely named network namespace (`hfT<pid>_<n>`, at most 15 bytes so
/// it also fits an ifname), removed on drop together with every process
/// still running in it (and so its devices, e.g. both ends of a veth).
///
/// A new namespace has `lo` up and `net.ipv4.ping_group_range` set to
/// `0 2147483647` so that ICMP ping sockets work in it ([`crate::traffic::ping`]).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    pub fn new() -> Result<NetNs> {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale);
        let pid = std::process::id();
        let mut attempt = 0;
        let ns = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 10_000;
            let name = format!("hfT{pid}_{n}");
            let path = Path::new("/run/netns").join(&name);
            // A stale namespace of an earlier, crashed run with the same pid:
            // not ours to remove, take the next number.
            if path.exists() {
                attempt += 1;
                if attempt > 100 {
                    return Err(Error::Unexpected {
                        what: "netns name".into(),
                        got: format!("100 names taken, last {name}"),
                    });
                }
                continue;
            }
            run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
            break NetNs { name, path };
        };
        // From here on Drop cleans up if a step fails.
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on a fresh thread that has `setns(CLONE_NEWNET)` into this
    /// namespace, and return its result. Sockets made in `f` belong to this
    /// namespace for their whole life. A panic in `f` is propagated.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file =
            File::open(&self.path).map_err(io_err(format!("open {}", self.path.display())))?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> Result<R> {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(io_err(format!("setns({})", self.name)))?;
                drop(file);
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `nsenter --net=/run/netns/NAME -- program`: add args and spawn it. The
    /// process (nsenter execs the program, no extra fork) is killed when the
    /// namespace is dropped if it still runs; `/sys` is the host's, so bpffs
    /// pins stay visible.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// `ip -n NAME ARGS...`, returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Write a sysctl in this namespace: `key` as `net.ipv4.ip_forward` or
    /// `net/ipv4/ip_forward`. (Writes `/proc/sys` from a thread inside the
    /// namespace: `/proc/sys/net` follows the writing thread's namespace.)
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.run(move || {
            std::fs::write(&path, value).map_err(io_err(format!("write {path} in {}", self.name)))
        })?
    }

    /// Read a sysctl in this namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(move || {
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(io_err(format!("read {path} in {}", self.name)))
        })?
    }

    /// Interface index of `ifname` in this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        self.run(|| {
            nix::net::if_::if_nametoindex(ifname)
                .map_err(io_err(format!("if_nametoindex({ifname}) in {}", self.name)))
        })?
    }

    /// MAC address of `ifname` in this namespace (from `getifaddrs`).
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        self.run(|| {
            let addrs = nix::ifaddrs::getifaddrs().map_err(io_err("getifaddrs"))?;
            addrs
                .filter(|a| a.interface_name == ifname)
                .find_map(|a| a.address?.as_link_addr()?.addr())
                .ok_or_else(|| Error::Unexpected {
                    what: format!("MAC of {ifname} in {}", self.name),
                    got: "no link-layer address".into(),
                })
        })?
    }

    /// Wait until `ifname` is operationally up with its qdisc attached.
    ///
    /// Carrier changes are applied by the kernel's linkwatch work, which
    /// may lag by up to a second; until then the device still has the
    /// `noop` qdisc and silently drops what is sent (typically the first
    /// ARP/ND packet, which then costs a 1 s retransmit).
    pub fn wait_up(&self, ifname: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.ip(&["-o", "link", "show", "dev", ifname])?;
            if out.contains("state UP") && !out.contains("qdisc noop") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{ifname} up in {}: {}", self.name, out.trim()),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pids of processes whose network namespace is this one.
    fn pids(&self) -> Vec<i32> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        let me = std::process::id() as i32;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev())
            })
            .collect()
    }
}

/// Remove `hfT<pid>_*` namespaces left by test processes that no longer
/// exist (killed runs). Processes still inside them are left alone.
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name.strip_prefix("hfT").and_then(|r| r.split('_').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", name])) {
                eprintln!("hostfwd-tests: removing stale netns {name}: {e}");
            }
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Only processes inside this test namespace: they were started by
        // the test (through `cmd`). Killed by pid.
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("hostfwd-tests: removing netns {}: {e}", self.name);
        }
    }
}

/// One end of the topology's veth pair.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub ifname: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Endpoint {
    /// The v4 or v6 address.
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            self.v6.into()
        } else {
            self.v4.into()
        }
    }
}

/// Two namespaces, `host` and `peer`, joined by a veth pair: `h0` in host,
/// `p0` in peer, both up, with `10.77.0.1/24` + `fd77::1/64` (host) and
/// `10.77.0.2/24` + `fd77::2/64` (peer) by default, added with `nodad`
/// (and `accept_dad=0` in both namespaces, so link-local addresses are
/// usable at once too). MACs are fixed: `02:77:00:00:00:01` (h0) and
/// `02:77:00:00:00:02` (p0), read back from the kernel.
///
/// The datapath under test is meant to sit on `h0` (the host's device);
/// `peer` plays the outside world.
#[derive(Debug)]
pub struct Topology {
    pub host: NetNs,
    pub peer: NetNs,
    /// `h0`, in `host`.
    pub h: Endpoint,
    /// `p0`, in `peer`.
    pub p: Endpoint,
}

impl Topology {
    pub const HOST_IF: &'static str = "h0";
    pub const PEER_IF: &'static str = "p0";

    /// The default addresses (namespaces isolate parallel tests).
    pub fn new() -> Result<Topology> {
        Topology::with_addrs(
            [Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2)],
            [
                Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1),
                Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2),
            ],
        )
    }

    /// Custom addresses `[host, peer]`, on a /24 and a /64.
    pub fn with_addrs(v4: [Ipv4Addr; 2], v6: [Ipv6Addr; 2]) -> Result<Topology> {
        let host = NetNs::new()?;
        let peer = NetNs::new()?;
        for ns in [&host, &peer] {
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        }
        let (h, p) = (Self::HOST_IF, Self::PEER_IF);
        host.ip(&[
            "link",
            "add",
            h,
            "address",
            "02:77:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            p,
            "address",
            "02:77:00:00:00:02",
            "netns",
            peer.name(),
        ])?;
        let end = |ns: &NetNs, ifname: &str, v4: Ipv4Addr, v6: Ipv6Addr| -> Result<Endpoint> {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"])?;
            ns.ip(&["link", "set", ifname, "up"])?;
            Ok(Endpoint {
                ifname: ifname.to_string(),
                ifindex: ns.ifindex(ifname)?,
                mac: ns.mac(ifname)?,
                v4,
                v6,
            })
        };
        let h_end = end(&host, h, v4[0], v6[0])?;
        let p_end = end(&peer, p, v4[1], v6[1])?;
        host.wait_up(h, Duration::from_secs(5))?;
        peer.wait_up(p, Duration::from_secs(5))?;
        Ok(Topology {
            host,
            peer,
            h: h_end,
            p: p_end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require_root;

    #[test]
    fn netns_created_and_removed() {
        require_root();
        let ns = NetNs::new().expect("netns");
        let path = ns.path().to_path_buf();
        assert!(path.exists());
        assert!(ns.name().len() <= 15, "{}", ns.name());
        // lo is up, ping sockets are allowed.
        assert_eq!(
            ns.sysctl_get("net.ipv4.ping_group_range").expect("sysctl"),
            "0\t2147483647"
        );
        let out = ns.ip(&["-o", "link", "show", "lo"]).expect("ip link");
        assert!(out.contains("UP"), "{out}");
        // run() really is in the namespace: only lo there.
        let names: Vec<String> = ns
            .run(|| {
                nix::net::if_::if_nameindex()
                    .map(|l| {
                        l.iter()
                            .map(|i| i.name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .expect("run");
        assert_eq!(names, vec!["lo".to_string()]);
        // A process spawned in the namespace is killed on drop.
        let mut child = ns.cmd("sleep").arg("60").spawn().expect("spawn sleep");
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(ns);
        assert!(!path.exists(), "{} still there", path.display());
        let status = child.wait().expect("wait");
        assert!(!status.success(), "sleep was not killed: {status}");
    }

    #[test]
    fn failing_ip_reports_command_and_stderr() {
        require_root();
        let ns = NetNs::new().expect("netns");
        let err = ns.ip(&["link", "set", "nonexistent0", "up"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ip -n") && msg.contains("nonexistent0"),
            "{msg}"
        );
        assert!(
            matches!(err, Error::Command { ref stderr, .. } if !stderr.is_empty()),
            "{msg}"
        );
    }

    #[test]
    fn topology_addresses_and_cleanup() {
        require_root();
        let t = Topology::new().expect("topology");
        assert_eq!(t.h.mac, [0x02, 0x77, 0, 0, 0, 1]);
        assert_eq!(t.p.mac, [0x02, 0x77, 0, 0, 0, 2]);
        assert_eq!(t.host.ifindex("h0").expect("ifindex"), t.h.ifindex);
        let out = t
            .peer
            .ip(&["-o", "addr", "show", "dev", "p0"])
            .expect("ip addr");
        assert!(
            out.contains("10.77.0.2/24") && out.contains("fd77::2/64"),
            "{out}"
        );
        let (hp, pp) = (t.host.path().to_path_buf(), t.peer.path().to_path_buf());
        drop(t);
        assert!(!hp.exists() && !pp.exists());
    }
}
