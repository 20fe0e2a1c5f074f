//! The two ends of `scripts/bench-veth.sh`: a UDP frame blaster and a
//! receiver that counts what the receiving stack delivered.
//!
//! ```text
//! vethbench send IFNAME SRC_MAC DST_MAC SRC_IP DST_IP PORT SECONDS one|new
//!     IPv4/UDP frames out of IFNAME (AF_PACKET, sendmmsg in batches):
//!     `one` repeats one flow, `new` makes every frame a new flow (source
//!     port 1024..65535, then the next source address of SRC_IP's /16,
//!     which must not contain x.y.255.254: that is the receiver's).
//!     Prints the frames sent.
//! vethbench recv PORT SECONDS
//!     Binds UDP PORT and reads until SECONDS have passed; prints the
//!     datagrams the stack delivered to UDP (/proc/net/snmp InDatagrams +
//!     RcvbufErrors of its network namespace: what passed the filter and
//!     the stack, whether or not this reader kept up) and those it read.
//! ```

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BATCH: usize = 64;
const PAYLOAD: usize = 18; // a 64-byte frame
const FRAME: usize = 14 + 20 + 8 + PAYLOAD;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let res = match args.get(1).map(String::as_str) {
        Some("send") if args.len() == 10 => send(&args[2..]),
        Some("recv") if args.len() == 4 => recv(&args[2..]),
        _ => Err("usage: vethbench send IFNAME SRC_MAC DST_MAC SRC_IP DST_IP PORT SECONDS one|new | recv PORT SECONDS".to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vethbench: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad {what}: {s}"))
}

fn os_err(op: &str) -> String {
    format!("{op}: {}", io::Error::last_os_error())
}

fn mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().map_err(|_| format!("bad MAC: {s}"))?;
    parts.try_into().map_err(|_| format!("bad MAC: {s}"))
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an Ethernet/IPv4/UDP frame (UDP checksum 0: none, valid for IPv4).
fn frame(buf: &mut [u8; FRAME], dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) {
    buf[..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&src_mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut buf[14..34];
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = ip_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut buf[34..42];
    udp[..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
}

fn send(a: &[String]) -> Result<(), String> {
    let (ifname, src_mac, dst_mac) = (&a[0], mac(&a[1])?, mac(&a[2])?);
    let (src, dst) = (parse::<Ipv4Addr>(&a[3], "SRC_IP")?, parse::<Ipv4Addr>(&a[4], "DST_IP")?);
    let (port, secs): (u16, f64) = (parse(&a[5], "PORT")?, parse(&a[6], "SECONDS")?);
    let new_flows = match a[7].as_str() {
        "one" => false,
        "new" => true,
        m => return Err(format!("mode {m} is not one or new")),
    };
    let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).map_err(|e| format!("interface {ifname}: {e}"))?;
    // SAFETY: plain socket(2) call; the fd is closed at exit.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(os_err("socket(AF_PACKET)"));
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst_mac);
    // SAFETY: the address is valid for its length.
    if unsafe { libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as u32) } < 0 {
        return Err(os_err("bind(AF_PACKET)"));
    }

    let mut bufs = [[0u8; FRAME]; BATCH];
    let base = u32::from(src) & 0xffff_0000;
    let (mut host, mut sport) = (u32::from(src) & 0xffff, 1024u16);
    let mut next = |buf: &mut [u8; FRAME]| {
        if new_flows {
            sport = if sport == u16::MAX { 1024 } else { sport + 1 };
            if sport == 1024 {
                // 1..=0xfffd: skips .0.0, and .255.254/.255.255 of the /16
                // (the receiver's address and broadcast).
                host = host % 0xfffd + 1;
            }
        }
        frame(buf, dst_mac, src_mac, Ipv4Addr::from(base | host), dst, sport, port);
    };
    for b in bufs.iter_mut() {
        next(b);
    }
    let mut iov: Vec<libc::iovec> = bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: FRAME }).collect();
    // SAFETY: mmsghdr is plain data; all-zero is valid.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        // SAFETY: every message points at a live buffer of FRAME bytes.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // A full device queue: try again.
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::EAGAIN) {
                continue;
            }
            return Err(format!("sendmmsg: {e}"));
        }
        sent += n as u64;
        if new_flows {
            for b in bufs.iter_mut().take(n as usize) {
                next(b);
            }
        }
    }
    println!("{sent}");
    Ok(())
}

/// InDatagrams + RcvbufErrors of this network namespace's UDP MIB.
fn udp_delivered() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/net/snmp").map_err(|e| format!("reading /proc/net/snmp: {e}"))?;
    let mut rows = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (rows.next().ok_or("no Udp header in /proc/net/snmp")?, rows.next().ok_or("no Udp values in /proc/net/snmp")?);
    let field = |name: &str| -> Result<u64, String> {
        let i = names.split_whitespace().position(|n| n == name).ok_or(format!("no {name} in /proc/net/snmp"))?;
        values.split_whitespace().nth(i).and_then(|v| v.parse().ok()).ok_or(format!("bad {name} in /proc/net/snmp"))
    };
    Ok(field("InDatagrams")? + field("RcvbufErrors")?)
}

fn recv(a: &[String]) -> Result<(), String> {
    let (port, secs): (u16, f64) = (parse(&a[0], "PORT")?, parse(&a[1], "SECONDS")?);
    let sock = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("binding UDP port {port}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| format!("read timeout: {e}"))?;
    let start = udp_delivered()?;
    let mut bufs = [[0u8; 64]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: 64 }).collect();
    // SAFETY: mmsghdr is plain data; all-zero is valid.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut read: u64 = 0;
    while Instant::now() < deadline {
        // SAFETY: every message points at a live 64-byte buffer.
        let n = unsafe { libc::recvmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0, std::ptr::null_mut()) };
        if n > 0 {
            read += n as u64;
        }
    }
    println!("{} {read}", udp_delivered()? - start);
    Ok(())
}
