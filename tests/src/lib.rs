//! Test support for hostfwd's datapath tests: network namespaces, a veth
//! topology, traffic helpers, crafted frames and AF_PACKET send/capture.
//!
//! Everything privileged needs root. Each test makes its own namespaces
//! ([`NetNs`], [`Topology`]); guards remove them on drop, so tests can run in
//! parallel and leave nothing behind even when they fail.
//!
//! Conventions:
//! - Functions in [`traffic`] and [`afpacket`] act in the *calling thread's*
//!   network namespace: call them inside [`NetNs::run`], or use the `NetNs`
//!   convenience methods (`ns.tcp_connect(..)`, `ns.ping(..)`,
//!   `ns.capture(..)`, `ns.send_frame(..)`) that do that for you. A socket
//!   made inside `run` stays in that namespace after the thread is gone, so
//!   it can be returned and used from any thread.
//! - A firewall drop shows up as [`Error::Timeout`] (check with
//!   [`Error::is_timeout`]), never as a hang.
//! - [`packet::Frame`] builds frames without touching the system (no root).

use std::time::Duration;

pub mod afpacket;
pub mod bus;
pub mod fuzz;
pub mod netns;
pub mod packet;
pub mod traffic;

pub use afpacket::{Capture, Captured, VlanTag};
pub use netns::{Endpoint, NetNs, Topology};
pub use packet::{Ext6, Frame, IcmpError, Nd, TcpFlags};
pub use traffic::{EchoServer, Session, DEFAULT_TIMEOUT};

/// Errors of the test support library. Variants name the operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command (`ip`, `nsenter`, ...) failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// A syscall or I/O operation failed.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// Nothing (or nothing matching) arrived in time: what a drop looks like.
    #[error("{what}: timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// Something arrived but was not what was expected, or kernel output
    /// could not be parsed.
    #[error("{what}: unexpected {got}")]
    Unexpected { what: String, got: String },
}

impl Error {
    /// True for [`Error::Timeout`] and for I/O errors of kind `TimedOut` or
    /// `WouldBlock` (socket timeouts).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// The `io::ErrorKind` of an [`Error::Io`] (e.g. `ConnectionRefused` when
    /// a RST came back, `HostUnreachable` for an ICMP error).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `map_err` adapter: wrap an I/O (or nix) error with the operation.
pub(crate) fn io_err<E: Into<std::io::Error>>(op: impl Into<String>) -> impl FnOnce(E) -> Error {
    let op = op.into();
    move |e| Error::Io {
        op,
        source: e.into(),
    }
}

/// Last OS error wrapped with the operation.
pub(crate) fn last_os_err(op: impl Into<String>) -> Error {
    Error::Io {
        op: op.into(),
        source: std::io::Error::last_os_error(),
    }
}

#[cfg(test)]
pub(crate) fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (network namespaces, veth, AF_PACKET)"
    );
}

/// The `p` quantile (0.0..=1.0) of benchmark samples, nearest rank;
/// `percentile(v, 0.5)` is the median. Panics on an empty list.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Polls `f` every 200 µs until it holds: the moment it did, or `None`
/// after `limit` (benchmarks time events with it).
pub fn wait_for(mut f: impl FnMut() -> bool, limit: Duration) -> Option<std::time::Instant> {
    let end = std::time::Instant::now() + limit;
    loop {
        if f() {
            return Some(std::time::Instant::now());
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The median of benchmark samples (see [`percentile`]).
pub fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// The workspace's `hostfwd` daemon binary, in the profile of the running
/// test or bench (cargo builds another package's binaries for its own tests
/// only, so this builds them; `--workspace`, so that the features match the
/// workspace build and nothing is rebuilt). Panics if the build fails: no
/// test can run without it.
pub fn hostfwd_bin() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/hostfwd
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir").to_path_buf();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "--workspace", "--bins"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let ok = cmd.status().expect("running cargo build");
        assert!(ok.success(), "building the hostfwd binary failed");
    });
    profile_dir.join("hostfwd")
}

/// The workspace's `hostfwdctl` client, beside the daemon (built with it by
/// [`hostfwd_bin`]).
pub fn hostfwdctl_bin() -> std::path::PathBuf {
    hostfwd_bin().with_file_name("hostfwdctl")
}
