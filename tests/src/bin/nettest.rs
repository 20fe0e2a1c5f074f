//! Traffic tool for the VM guests (which have no Rust test harness): the
//! test library's helpers as a command line.
//!
//! ```text
//! nettest listen ADDR:PORT                 TCP echo server (until killed)
//! nettest connect ADDR:PORT [TIMEOUT_MS]   exit 0: connected and echoed; 3: timed out (dropped)
//! nettest session ADDR:PORT SECONDS        one TCP session echoing every 50 ms; exit 0 if no round trip failed
//! nettest send-tagged IFNAME VID DST_MAC SRC_IP DST_IP COUNT
//!                                          UDP frames tagged VID out of IFNAME (AF_PACKET)
//! nettest send-stack IFNAME TPID:VID[,TPID:VID…] DST_MAC SRC_IP DST_IP DPORT COUNT
//!                                          UDP frames with that tag stack, outermost first
//! nettest udp-count ADDR:PORT MS           count the datagrams received within MS ms; prints "received N"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use hostfwd_tests::{traffic, Frame};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i).ok_or_else(|| format!("missing {what}"))?.parse().map_err(|_| format!("bad {what}: {}", args[i]))
}

fn ifindex_of(args: &[String]) -> Result<u32, String> {
    let ifname: String = arg(args, 2, "IFNAME")?;
    nix::net::if_::if_nametoindex(ifname.as_str()).map_err(|e| format!("{ifname}: {e}"))
}

fn mac_arg(args: &[String], i: usize) -> Result<[u8; 6], String> {
    let s: String = arg(args, i, "DST_MAC")?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("bad MAC {s}"));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC {s}"))?;
    }
    Ok(mac)
}

fn send(ifindex: u32, frame: &[u8], count: u32) -> Result<u8, String> {
    for _ in 0..count {
        hostfwd_tests::afpacket::send_frame(ifindex, frame).map_err(|e| e.to_string())?;
    }
    Ok(0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nettest: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> Result<u8, String> {
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    match cmd {
        "listen" => {
            let addr: SocketAddr = arg(args, 2, "ADDR:PORT")?;
            let listener = traffic::tcp_listen(addr).map_err(|e| e.to_string())?;
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = stream;
                    let mut w = match r.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
            Ok(0)
        }
        "connect" => {
            let addr: SocketAddr = arg(args, 2, "ADDR:PORT")?;
            let ms: u64 = if args.len() > 3 { arg(args, 3, "TIMEOUT_MS")? } else { 1500 };
            let t = Duration::from_millis(ms);
            match traffic::tcp_connect(addr, t) {
                Ok(s) => {
                    use std::io::{Read, Write};
                    let mut s = s;
                    let _ = s.set_read_timeout(Some(t));
                    s.write_all(b"ping\n").map_err(|e| e.to_string())?;
                    let mut buf = [0u8; 5];
                    match s.read_exact(&mut buf) {
                        Ok(()) => {
                            println!("connected {addr}");
                            Ok(0)
                        }
                        Err(e) => {
                            println!("no echo from {addr}: {e}");
                            Ok(3)
                        }
                    }
                }
                Err(e) if e.is_timeout() => {
                    println!("timeout {addr}");
                    Ok(3)
                }
                Err(e) => Err(e.to_string()),
            }
        }
        "session" => {
            let addr: SocketAddr = arg(args, 2, "ADDR:PORT")?;
            let secs: u64 = arg(args, 3, "SECONDS")?;
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let end = std::time::Instant::now() + Duration::from_secs(secs);
            let (mut ok, mut failed) = (0u64, 0u64);
            while std::time::Instant::now() < end {
                use std::io::{Read, Write};
                let res = stream.write_all(b"0123456789abcdef").and_then(|_| {
                    let mut buf = [0u8; 16];
                    stream.read_exact(&mut buf)
                });
                match res {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("session {addr}: {ok} round trips, {failed} failed");
            Ok(if failed == 0 && ok > 0 { 0 } else { 3 })
        }
        "send-tagged" => {
            let vid: u16 = arg(args, 3, "VID")?;
            let (ifindex, mac) = (ifindex_of(args)?, mac_arg(args, 4)?);
            let src: IpAddr = arg(args, 5, "SRC_IP")?;
            let dst: IpAddr = arg(args, 6, "DST_IP")?;
            let count: u32 = arg(args, 7, "COUNT")?;
            let frame = Frame::udp(src, dst, 4000, 9).macs([2, 0, 0, 0, 0, 0x99], mac).vlan(vid).build();
            send(ifindex, &frame, count)
        }
        "send-stack" => {
            let stack: String = arg(args, 3, "TPID:VID list")?;
            let (ifindex, mac) = (ifindex_of(args)?, mac_arg(args, 4)?);
            let src: IpAddr = arg(args, 5, "SRC_IP")?;
            let dst: IpAddr = arg(args, 6, "DST_IP")?;
            let dport: u16 = arg(args, 7, "DPORT")?;
            let count: u32 = arg(args, 8, "COUNT")?;
            let mut frame = Frame::udp(src, dst, 4000, dport).macs([2, 0, 0, 0, 0, 0x99], mac);
            for tag in stack.split(',') {
                let (tpid, vid) = tag.split_once(':').ok_or_else(|| format!("bad tag {tag}: TPID:VID"))?;
                let tpid = u16::from_str_radix(tpid.trim_start_matches("0x"), 16).map_err(|_| format!("bad TPID {tpid}"))?;
                let vid: u16 = vid.parse().map_err(|_| format!("bad VID {vid}"))?;
                frame = frame.tag(tpid, vid);
            }
            send(ifindex, &frame.build(), count)
        }
        "udp-count" => {
            let addr: SocketAddr = arg(args, 2, "ADDR:PORT")?;
            let ms: u64 = arg(args, 3, "MS")?;
            let sock = std::net::UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
            let end = std::time::Instant::now() + Duration::from_millis(ms);
            let mut n = 0u64;
            let mut buf = [0u8; 2048];
            loop {
                let left = end.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                sock.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
                if sock.recv(&mut buf).is_ok() {
                    n += 1;
                }
            }
            println!("received {n}");
            Ok(0)
        }
        _ => Err("usage: nettest listen|connect|session|send-tagged|send-stack|udp-count ... (see source)".into()),
    }
}
