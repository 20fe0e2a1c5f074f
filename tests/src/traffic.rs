//! Real traffic between namespaces: TCP, UDP, ICMP echo, and a long-lived
//! TCP session for "an established connection keeps flowing" checks.
//!
//! Free functions act in the calling thread's namespace (call them inside
//! [`NetNs::run`]); the `NetNs` methods below wrap them. Every wait has a
//! timeout, and a drop surfaces as [`Error::Timeout`].
//!
//! Note: a dropped TCP segment of an established connection is retransmitted
//! (RTO starts at 200 ms+), so a short blip can heal within a round trip's
//! timeout; a lasting drop times out.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::{io_err, last_os_err, Error, Result};

/// Default timeout for connects, round trips and pings: long enough for a
/// veth round trip under load, short enough that a drop fails fast.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Poll interval of the echo servers' stop flag.
const TICK: Duration = Duration::from_millis(20);

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn timeout(what: impl Into<String>, after: Duration) -> Error {
    Error::Timeout {
        what: what.into(),
        after,
    }
}

/// Bind a TCP listener (port 0: ephemeral, see `local_addr()`).
pub fn tcp_listen(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(io_err(format!("tcp bind {addr}")))
}

/// Connect with a timeout. A silently dropped SYN (or SYN-ACK) gives
/// [`Error::Timeout`]; a RST gives `Error::Io` of kind `ConnectionRefused`;
/// an ICMP unreachable an `Error::Io` such as `HostUnreachable`.
pub fn tcp_connect(addr: SocketAddr, timeout_after: Duration) -> Result<TcpStream> {
    match TcpStream::connect_timeout(&addr, timeout_after) {
        Ok(s) => Ok(s),
        Err(e) if is_timeout(&e) => Err(timeout(format!("tcp connect {addr}"), timeout_after)),
        Err(e) => Err(io_err(format!("tcp connect {addr}"))(e)),
    }
}

/// Bind a UDP socket (port 0: ephemeral).
pub fn udp_bind(addr: SocketAddr) -> Result<UdpSocket> {
    UdpSocket::bind(addr).map_err(io_err(format!("udp bind {addr}")))
}

/// Receive one datagram, or [`Error::Timeout`]. A signal interrupting the
/// wait (other tests' child processes exit) is not an answer: wait on.
pub fn udp_recv(sock: &UdpSocket, timeout_after: Duration) -> Result<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + timeout_after;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(io_err("udp set_read_timeout"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                return Ok((buf, from));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && !left.is_zero() => continue,
            Err(e) if is_timeout(&e) || e.kind() == std::io::ErrorKind::Interrupted => {
                return Err(timeout("udp recv", timeout_after))
            }
            Err(e) => return Err(io_err("udp recv")(e)),
        }
    }
}

/// Send `data` to `dst` and wait for a datagram back from `dst` (others are
/// skipped). Pairs with [`EchoServer::udp`].
pub fn udp_roundtrip(
    sock: &UdpSocket,
    dst: SocketAddr,
    data: &[u8],
    timeout_after: Duration,
) -> Result<Vec<u8>> {
    sock.send_to(data, dst)
        .map_err(io_err(format!("udp send to {dst}")))?;
    let deadline = Instant::now() + timeout_after;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout(format!("udp reply from {dst}"), timeout_after));
        }
        match udp_recv(sock, left) {
            Ok((data, from)) if from == dst => return Ok(data),
            Ok(_) => continue,
            Err(e) if e.is_timeout() => {
                return Err(timeout(format!("udp reply from {dst}"), timeout_after))
            }
            Err(e) => return Err(e),
        }
    }
}

/// ICMP / ICMPv6 echo through an unprivileged ping socket
/// (`socket(AF_INET{,6}, SOCK_DGRAM, IPPROTO_ICMP{V6})`; needs
/// `net.ipv4.ping_group_range`, which [`NetNs::new`] sets). The kernel fills
/// in the identifier and checksum and delivers only this socket's replies.
/// Returns the round-trip time, or [`Error::Timeout`].
/// Use global addresses (link-local ones would need a scope id).
pub fn ping(dst: IpAddr, timeout_after: Duration) -> Result<Duration> {
    static SEQ: AtomicU16 = AtomicU16::new(1);
    let (domain, proto, request, reply) = match dst {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8),
    };
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(last_os_err(format!(
            "ping socket for {dst} (ping_group_range?)"
        )));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns. A ping socket
    // is a datagram socket: UdpSocket's send_to/recv_from/timeouts apply.
    let sock = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut msg = vec![request, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"hostfwd-tests!!!");
    let start = Instant::now();
    sock.send_to(&msg, SocketAddr::new(dst, 0))
        .map_err(io_err(format!("ping {dst}: send")))?;
    let deadline = start + timeout_after;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout(format!("ping {dst}"), timeout_after));
        }
        sock.set_read_timeout(Some(left))
            .map_err(io_err("ping set_read_timeout"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n >= 8 && buf[0] == reply && buf[6..8] == seq.to_be_bytes() => {
                return Ok(start.elapsed())
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(timeout(format!("ping {dst}"), timeout_after)),
            Err(e) => return Err(io_err(format!("ping {dst}: recv"))(e)),
        }
    }
}

/// Convenience wrappers that run the helpers inside the namespace.
impl NetNs {
    pub fn tcp_listen(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.run(|| tcp_listen(addr))?
    }
    pub fn tcp_connect(&self, addr: SocketAddr, timeout_after: Duration) -> Result<TcpStream> {
        self.run(|| tcp_connect(addr, timeout_after))?
    }
    pub fn udp_bind(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.run(|| udp_bind(addr))?
    }
    pub fn ping(&self, dst: IpAddr, timeout_after: Duration) -> Result<Duration> {
        self.run(|| ping(dst, timeout_after))?
    }
}

/// TCP or UDP echo server in a namespace, served by a background thread
/// (the listening socket is made inside the namespace). Echoes bytes as
/// they come (TCP) or each datagram back to its sender (UDP). Stopped and
/// joined on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// TCP echo server on `addr` (port 0: ephemeral, see [`EchoServer::addr`]).
    pub fn tcp(ns: &NetNs, addr: SocketAddr) -> Result<EchoServer> {
        let listener = ns.tcp_listen(addr)?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("echo listener nonblocking"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("echo listener local_addr"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        conns.push(std::thread::spawn(move || echo_tcp(stream, &flag)));
                    }
                    Err(_) => std::thread::sleep(TICK),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(EchoServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// UDP echo server on `addr`.
    pub fn udp(ns: &NetNs, addr: SocketAddr) -> Result<EchoServer> {
        let sock = ns.udp_bind(addr)?;
        sock.set_read_timeout(Some(TICK))
            .map_err(io_err("udp echo set_read_timeout"))?;
        let addr = sock.local_addr().map_err(io_err("udp echo local_addr"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Ok(EchoServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn echo_tcp(mut stream: TcpStream, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A long-lived TCP connection to an [`EchoServer::tcp`]: send a numbered
/// line, expect it back. Late echoes of earlier (timed-out) round trips are
/// skipped, so the session stays usable after a timeout.
#[derive(Debug)]
pub struct Session {
    stream: TcpStream,
    pending: Vec<u8>,
    seq: u64,
}

impl Session {
    /// Connect from `ns` to `addr`.
    pub fn connect(ns: &NetNs, addr: SocketAddr, timeout_after: Duration) -> Result<Session> {
        Ok(Session {
            stream: ns.tcp_connect(addr, timeout_after)?,
            pending: Vec::new(),
            seq: 0,
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// One line out and back within `timeout_after`.
    pub fn roundtrip(&mut self, timeout_after: Duration) -> Result<()> {
        self.seq += 1;
        let line = format!("hostfwd {}\n", self.seq);
        self.stream
            .set_write_timeout(Some(timeout_after))
            .map_err(io_err("session set_write_timeout"))?;
        match self.stream.write_all(line.as_bytes()) {
            Err(e) if is_timeout(&e) => return Err(timeout("session send", timeout_after)),
            r => r.map_err(io_err("session send"))?,
        }
        let deadline = Instant::now() + timeout_after;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let got: Vec<u8> = self.pending.drain(..=end).collect();
                if got == line.as_bytes() {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&got).trim().to_string();
                let old = text
                    .strip_prefix("hostfwd ")
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n < self.seq);
                if !old {
                    return Err(Error::Unexpected {
                        what: format!("session echo of {}", line.trim()),
                        got: text,
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout(
                    format!("session echo of {}", line.trim()),
                    timeout_after,
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(io_err("session set_read_timeout"))?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(Error::Unexpected {
                        what: "session".into(),
                        got: "EOF (connection closed)".into(),
                    })
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {
                    return Err(timeout(
                        format!("session echo of {}", line.trim()),
                        timeout_after,
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("session recv")(e)),
            }
        }
    }

    /// Round trips every `interval` for `duration`; fails on the first that
    /// does not come back within `timeout_after`. Returns how many succeeded.
    pub fn keep_alive(
        &mut self,
        duration: Duration,
        interval: Duration,
        timeout_after: Duration,
    ) -> Result<u64> {
        let end = Instant::now() + duration;
        let mut n = 0;
        loop {
            self.roundtrip(timeout_after)?;
            n += 1;
            if Instant::now() + interval >= end {
                return Ok(n);
            }
            std::thread::sleep(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::Topology;
    use crate::require_root;

    #[test]
    fn ping_both_ways_v4_v6() {
        require_root();
        let t = Topology::new().expect("topology");
        for v6 in [false, true] {
            t.host
                .ping(t.p.ip(v6), DEFAULT_TIMEOUT)
                .expect("host -> peer");
            t.peer
                .ping(t.h.ip(v6), DEFAULT_TIMEOUT)
                .expect("peer -> host");
        }
        // An address nobody has: a timeout, not a hang.
        let err = t
            .peer
            .ping(
                "10.77.0.99".parse().expect("addr"),
                Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }

    #[test]
    fn tcp_connect_refused_and_timeout() {
        require_root();
        let t = Topology::new().expect("topology");
        for v6 in [false, true] {
            let listener = t
                .host
                .tcp_listen(SocketAddr::new(t.h.ip(v6), 0))
                .expect("listen");
            let addr = listener.local_addr().expect("local_addr");
            let mut c = t.peer.tcp_connect(addr, DEFAULT_TIMEOUT).expect("connect");
            let (mut s, from) = listener.accept().expect("accept");
            assert_eq!(from.ip(), t.p.ip(v6));
            c.write_all(b"hi").expect("write");
            let mut buf = [0u8; 2];
            s.read_exact(&mut buf).expect("read");
            assert_eq!(&buf, b"hi");
            // Nothing listens: RST -> refused.
            let closed = SocketAddr::new(t.h.ip(v6), 1);
            let err = t.peer.tcp_connect(closed, DEFAULT_TIMEOUT).unwrap_err();
            assert_eq!(
                err.io_kind(),
                Some(std::io::ErrorKind::ConnectionRefused),
                "{err}"
            );
        }
        // A silent drop: the peer sends to a MAC nobody has, h0 discards the
        // frames as PACKET_OTHERHOST. Must time out, not hang.
        t.peer
            .ip(&[
                "neigh",
                "add",
                "10.77.0.99",
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "p0",
                "nud",
                "permanent",
            ])
            .expect("neigh");
        let err = t
            .peer
            .tcp_connect(
                "10.77.0.99:80".parse().expect("addr"),
                Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }

    #[test]
    fn udp_and_echo_servers() {
        require_root();
        let t = Topology::new().expect("topology");
        for v6 in [false, true] {
            let udp = EchoServer::udp(&t.host, SocketAddr::new(t.h.ip(v6), 0)).expect("udp echo");
            let sock = t
                .peer
                .udp_bind(SocketAddr::new(t.p.ip(v6), 0))
                .expect("bind");
            let back =
                udp_roundtrip(&sock, udp.addr(), b"ping", DEFAULT_TIMEOUT).expect("udp roundtrip");
            assert_eq!(back, b"ping");
            // Nothing sent to us: timeout.
            assert!(udp_recv(&sock, Duration::from_millis(100))
                .unwrap_err()
                .is_timeout());

            let tcp = EchoServer::tcp(&t.host, SocketAddr::new(t.h.ip(v6), 0)).expect("tcp echo");
            let mut s = Session::connect(&t.peer, tcp.addr(), DEFAULT_TIMEOUT).expect("session");
            let n = s
                .keep_alive(
                    Duration::from_millis(300),
                    Duration::from_millis(50),
                    DEFAULT_TIMEOUT,
                )
                .expect("keep alive");
            assert!(n >= 3, "{n}");
        }
    }
}
