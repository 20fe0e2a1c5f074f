//! Raw frames in and out of an interface through `AF_PACKET`/`SOCK_RAW`.
//!
//! Both ends act in the calling thread's namespace (use [`NetNs::send_frame`]
//! and [`NetNs::capture`], or call inside [`NetNs::run`]); a [`Capture`]
//! stays bound to its namespace and can be read from any thread.
//!
//! What the kernel does with these frames (observed on 6.18, veth):
//! - A sent frame goes through the *sending* device's tc egress (no
//!   `PACKET_QDISC_BYPASS`), then reaches the other veth end's receive path.
//! - On receive, an in-band 802.1Q or 802.1ad tag is moved into skb
//!   metadata (`skb_vlan_untag`) *before* packet taps and tc ingress: a
//!   capture gets the frame **without** the outer tag, and the tag in
//!   `PACKET_AUXDATA` ([`Captured::vlan`], TPID included). With QinQ only the
//!   outer (0x88a8) tag is moved; the inner 0x8100 tag stays in the bytes. A
//!   VID-0 priority tag is moved too (`vlan` = `Some`, VID 0).
//! - Packet sockets see incoming frames **before** tc ingress. A capture on
//!   the receiving device therefore cannot tell whether tc ingress dropped
//!   a frame; observe that through datapath counters or through the
//!   kernel's reply (or its absence) captured on the sending side.
//! - A capture also sees the device's own outgoing frames
//!   ([`Captured::outgoing`]); filter them out when waiting for replies.
//! - Frames whose destination MAC is not the receiver's (or broadcast /
//!   multicast) arrive as `PACKET_OTHERHOST` and the IP stack ignores them:
//!   set MACs with [`crate::packet::Frame::macs`].

use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::{last_os_err, Result};

pub const PACKET_HOST: u8 = 0;
pub const PACKET_BROADCAST: u8 = 1;
pub const PACKET_MULTICAST: u8 = 2;
pub const PACKET_OTHERHOST: u8 = 3;
pub const PACKET_OUTGOING: u8 = 4;

const PACKET_AUXDATA: libc::c_int = 8;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// `struct tpacket_auxdata` (linux/if_packet.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct AuxData {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

fn packet_socket(op: &str) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); protocol 0 receives nothing until bound.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_os_err(format!("{op}: socket(AF_PACKET)")));
    }
    // SAFETY: fresh valid fd, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_ll(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    sll
}

/// Send `frame` (starting with the Ethernet header) out of `ifindex`.
pub fn send_frame(ifindex: u32, frame: &[u8]) -> Result<()> {
    let op = format!("send {} bytes on ifindex {ifindex}", frame.len());
    let fd = packet_socket(&op)?;
    let mut sll = sockaddr_ll(ifindex, 0);
    sll.sll_halen = 6;
    let n = frame.len().min(6);
    sll.sll_addr[..n].copy_from_slice(&frame[..n]);
    // SAFETY: buffer and address are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(last_os_err(op));
    }
    if sent as usize != frame.len() {
        return Err(crate::Error::Unexpected {
            what: op,
            got: format!("{sent} bytes sent"),
        });
    }
    Ok(())
}

/// A VLAN tag the kernel moved from the frame into metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 or 0x88a8.
    pub tpid: u16,
    /// PCP << 13 | DEI << 12 | VID.
    pub tci: u16,
}

impl VlanTag {
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }
    pub fn pcp(self) -> u8 {
        (self.tci >> 13) as u8
    }
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The bytes as the packet socket got them (outer VLAN tag removed if
    /// the kernel untagged it: see [`Captured::vlan`]).
    pub data: Vec<u8>,
    /// `PACKET_HOST`, `PACKET_OUTGOING`, ... (`sll_pkttype`).
    pub pkttype: u8,
    pub ifindex: u32,
    /// The tag from `PACKET_AUXDATA` (`tp_vlan_tci`, `tp_vlan_tpid`).
    pub vlan: Option<VlanTag>,
}

impl Captured {
    /// Sent by this device (not received).
    pub fn outgoing(&self) -> bool {
        self.pkttype == PACKET_OUTGOING
    }

    /// VID of the metadata tag.
    pub fn vid(&self) -> Option<u16> {
        self.vlan.map(VlanTag::vid)
    }

    /// The frame as on the wire: the metadata tag put back after the MACs.
    pub fn with_tag(&self) -> Vec<u8> {
        match self.vlan {
            Some(tag) if self.data.len() >= 12 => {
                let mut f = self.data[..12].to_vec();
                f.extend_from_slice(&tag.tpid.to_be_bytes());
                f.extend_from_slice(&tag.tci.to_be_bytes());
                f.extend_from_slice(&self.data[12..]);
                f
            }
            _ => self.data.clone(),
        }
    }
}

/// Captures every frame (both directions) of one interface, from the moment
/// it is opened.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
    ifindex: u32,
}

impl Capture {
    /// Bind a capture to `ifindex` (in the calling thread's namespace).
    pub fn open(ifindex: u32) -> Result<Capture> {
        let op = format!("capture on ifindex {ifindex}");
        let fd = packet_socket(&op)?;
        let one: libc::c_int = 1;
        // SAFETY: valid fd and option buffer.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_AUXDATA,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_os_err(format!("{op}: PACKET_AUXDATA")));
        }
        let sll = sockaddr_ll(ifindex, libc::ETH_P_ALL as u16);
        // SAFETY: valid fd and address.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_os_err(format!("{op}: bind")));
        }
        Ok(Capture { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The next frame, or `None` after `timeout`.
    pub fn next(&self, timeout: Duration) -> Result<Option<Captured>> {
        self.wait_for(timeout, |_| true)
    }

    /// The first frame for which `filter` is true, or `None` after
    /// `timeout`. Frames not matching are consumed.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut filter: impl FnMut(&Captured) -> bool,
    ) -> Result<Option<Captured>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(crate::io_err(format!(
                    "poll capture on ifindex {}",
                    self.ifindex
                ))(e));
            }
            if rc == 0 {
                return Ok(None);
            }
            if let Some(c) = self.recv()? {
                if filter(&c) {
                    return Ok(Some(c));
                }
            }
        }
    }

    /// Drop everything queued so far.
    pub fn drain(&self) -> Result<usize> {
        let mut n = 0;
        while self.recv()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// One frame without blocking; `None` if nothing is queued.
    fn recv(&self) -> Result<Option<Captured>> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: plain data, zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 32];
        // SAFETY: plain data, zero is valid.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 32]>();
        // SAFETY: msg points at live buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) {
                return Ok(None);
            }
            return Err(crate::io_err(format!(
                "recvmsg on ifindex {}",
                self.ifindex
            ))(e));
        }
        buf.truncate(n as usize);
        let mut vlan = None;
        // SAFETY: walking the control messages the kernel just wrote into
        // `cbuf`, as described by `msg`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == PACKET_AUXDATA {
                    let aux: AuxData = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    if aux.tp_status & TP_STATUS_VLAN_VALID != 0 || aux.tp_vlan_tci != 0 {
                        let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.tp_vlan_tpid
                        } else {
                            crate::packet::ETH_P_8021Q
                        };
                        vlan = Some(VlanTag {
                            tpid,
                            tci: aux.tp_vlan_tci,
                        });
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(Some(Captured {
            data: buf,
            pkttype: sll.sll_pkttype,
            ifindex: sll.sll_ifindex as u32,
            vlan,
        }))
    }
}

/// Convenience wrappers that run inside the namespace.
impl NetNs {
    /// [`send_frame`] from inside this namespace.
    pub fn send_frame(&self, ifindex: u32, frame: &[u8]) -> Result<()> {
        self.run(|| send_frame(ifindex, frame))?
    }

    /// [`Capture::open`] inside this namespace.
    pub fn capture(&self, ifindex: u32) -> Result<Capture> {
        self.run(|| Capture::open(ifindex))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::Topology;
    use crate::packet::{Frame, TcpFlags, ETH_P_8021AD, ETH_P_8021Q};
    use crate::require_root;
    use crate::traffic::DEFAULT_TIMEOUT;
    use std::net::SocketAddr;

    fn udp(t: &Topology, sport: u16) -> Frame {
        Frame::udp(t.p.v4.into(), t.h.v4.into(), sport, 9)
            .payload(b"hostfwd".to_vec())
            .macs(t.p.mac, t.h.mac)
    }

    #[test]
    fn frame_from_peer_captured_on_host() {
        require_root();
        let t = Topology::new().expect("topology");
        let cap = t.host.capture(t.h.ifindex).expect("capture");
        let frame = udp(&t, 40001).build();
        t.peer.send_frame(t.p.ifindex, &frame).expect("send");
        let got = cap
            .wait_for(DEFAULT_TIMEOUT, |c| c.data == frame)
            .expect("capture")
            .expect("frame arrived");
        assert_eq!(
            (got.pkttype, got.ifindex, got.vlan),
            (PACKET_HOST, t.h.ifindex, None)
        );
        // The sender sees its own frame as outgoing.
        let out = t.peer.capture(t.p.ifindex).expect("capture");
        t.peer.send_frame(t.p.ifindex, &frame).expect("send");
        let got = out
            .wait_for(DEFAULT_TIMEOUT, |c| c.data == frame)
            .expect("capture")
            .expect("own frame");
        assert!(got.outgoing());
        // Nothing else matching arrives: None, not an error.
        assert_eq!(
            cap.wait_for(Duration::from_millis(100), |c| c.data == b"x")
                .expect("capture"),
            None
        );
    }

    /// How tags look on the receiving veth end: the outer tag is in
    /// PACKET_AUXDATA, not in the bytes.
    #[test]
    fn vlan_tags_arrive_in_auxdata() {
        require_root();
        let t = Topology::new().expect("topology");
        let cap = t.host.capture(t.h.ifindex).expect("capture");
        let cases: [(Frame, VlanTag, Option<u16>); 3] = [
            (
                udp(&t, 40002).vlan(1000),
                VlanTag {
                    tpid: ETH_P_8021Q,
                    tci: 1000,
                },
                None,
            ),
            (
                udp(&t, 40003).priority_tag(5),
                VlanTag {
                    tpid: ETH_P_8021Q,
                    tci: 5 << 13,
                },
                None,
            ),
            (
                udp(&t, 40004).qinq(100, 200),
                VlanTag {
                    tpid: ETH_P_8021AD,
                    tci: 100,
                },
                Some(200),
            ),
        ];
        for (frame, tag, inner) in cases {
            let wire = frame.build();
            t.peer.send_frame(t.p.ifindex, &wire).expect("send");
            let got = cap
                .wait_for(DEFAULT_TIMEOUT, |c| {
                    c.data.ends_with(b"hostfwd") && c.with_tag() == wire
                })
                .expect("capture")
                .unwrap_or_else(|| panic!("{frame:?} did not arrive"));
            assert_eq!(got.vlan, Some(tag));
            assert_eq!(got.data.len(), wire.len() - 4, "outer tag not in the bytes");
            match inner {
                None => assert_eq!(&got.data[12..14], &[0x08, 0x00]),
                Some(vid) => {
                    assert_eq!(&got.data[12..14], &ETH_P_8021Q.to_be_bytes());
                    assert_eq!(
                        u16::from_be_bytes([got.data[14], got.data[15]]) & 0xfff,
                        vid
                    );
                }
            }
        }
    }

    /// Crafted frames are good enough for the real kernel: it answers a SYN
    /// with a SYN-ACK and an echo request with a reply, v4 and v6 (so the
    /// checksums are right).
    #[test]
    fn kernel_answers_crafted_frames() {
        require_root();
        let t = Topology::new().expect("topology");
        for v6 in [false, true] {
            let listener = t
                .host
                .tcp_listen(SocketAddr::new(t.h.ip(v6), 0))
                .expect("listen");
            let port = listener.local_addr().expect("addr").port();
            let cap = t.peer.capture(t.p.ifindex).expect("capture");
            let syn = Frame::tcp(t.p.ip(v6), t.h.ip(v6), 40100, port, TcpFlags::SYN)
                .macs(t.p.mac, t.h.mac);
            t.peer
                .send_frame(t.p.ifindex, &syn.build())
                .expect("send syn");
            let l4 = syn.offsets().l4;
            let synack = cap
                .wait_for(DEFAULT_TIMEOUT, |c| {
                    !c.outgoing()
                        && c.data.len() > l4 + 14
                        && c.data[l4..l4 + 4] == [(port >> 8) as u8, port as u8, 0x9c, 0xa4]
                        && c.data[l4 + 13] & 0x12 == 0x12
                })
                .expect("capture");
            assert!(synack.is_some(), "no SYN-ACK (v6={v6})");

            let echo =
                Frame::echo_request(t.p.ip(v6), t.h.ip(v6), 0x77, 1).payload(b"abcdefgh".to_vec());
            let echo = echo.macs(t.p.mac, t.h.mac);
            t.peer
                .send_frame(t.p.ifindex, &echo.build())
                .expect("send echo");
            let reply_type = if v6 { 129 } else { 0 };
            let l4 = echo.offsets().l4;
            let reply = cap
                .wait_for(DEFAULT_TIMEOUT, |c| {
                    !c.outgoing() && c.data.len() > l4 && c.data[l4] == reply_type
                })
                .expect("capture");
            assert!(reply.is_some(), "no echo reply (v6={v6})");

            // Fragments reassemble into the datagram the socket receives.
            let sock = t
                .host
                .udp_bind(SocketAddr::new(t.h.ip(v6), 0))
                .expect("bind");
            let port = sock.local_addr().expect("addr").port();
            let data = crate::packet::garbage(300, 9);
            let dgram = Frame::udp(t.p.ip(v6), t.h.ip(v6), 40200, port).payload(data.clone());
            for f in dgram.macs(t.p.mac, t.h.mac).ident(0xbeef).fragments(128) {
                t.peer.send_frame(t.p.ifindex, &f).expect("send fragment");
            }
            let (got, _) =
                crate::traffic::udp_recv(&sock, DEFAULT_TIMEOUT).expect("reassembled datagram");
            assert_eq!(got, data, "v6={v6}");
        }
    }
}
