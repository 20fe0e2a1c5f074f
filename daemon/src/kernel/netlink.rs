//! rtnetlink: the only module that reads links, addresses, routes and tc
//! changes from the kernel. It turns kernel messages into
//! [`crate::links::Change`]s; the pure [`Table`] applies them.
//!
//! Two objects:
//!
//! - [`Netlink`]: a request connection for dumps. [`Netlink::dump`] reads
//!   links, IPv4/IPv6 addresses, IPv4/IPv6 default routes and local-table
//!   routes into a fresh [`Table`].
//! - [`Monitor`]: a multicast socket joined to the link, IPv4/IPv6 ifaddr,
//!   IPv4/IPv6 route and tc groups, plus its own [`Netlink`].
//!   [`Monitor::next`] yields [`Event`]s.
//!
//! # Use
//!
//! ```no_run
//! # async fn f() -> Result<(), hostfwd::netlink::Error> {
//! use hostfwd::netlink::{Event, Monitor};
//! let mut mon = Monitor::open().await?;     // subscribe first ...
//! let mut table = mon.dump().await?;        // ... then dump
//! loop {
//!     match mon.next().await? {
//!         Event::Change(c) => { table.apply(c); }
//!         Event::Resync => { table.replace(mon.dump().await?); }
//!     }
//! }
//! # }
//! ```
//!
//! Subscribing before dumping means no change falls between the two: events
//! queued meanwhile are applied after the dump. They may be older than the
//! dump, but every message is full state for its object (a link, one
//! address, a whole default-route or local-route set) and each later
//! change brings its own message, so the table converges to the kernel's.
//!
//! # Namespaces
//!
//! A netlink socket belongs to the network namespace of the thread that
//! created it, for its whole life. [`Netlink::connect`] and
//! [`Monitor::open`] create their sockets on the calling thread: call them
//! on a thread inside the namespace to watch (the daemon: the host
//! namespace; tests: a thread that did `setns(CLONE_NEWNET)` and built its
//! tokio runtime there). They need a tokio runtime ([`Error::NoRuntime`]
//! otherwise) and nothing else.
//!
//! # Overruns
//!
//! The kernel does not wait for a multicast listener: when the socket's
//! receive buffer is full, messages are dropped and the next `recv` fails
//! with ENOBUFS. The monitor reads its socket itself (not through
//! netlink-proto, whose connection task copies every message into an
//! unbounded channel and so would grow memory instead of reporting the
//! loss): the kernel buffer is the only queue, so a consumer that falls
//! behind gets an overrun, not an ever-growing backlog. The buffer is 4 MiB
//! ([`DEFAULT_RX_BUFFER`], `SO_RCVBUFFORCE`, falling back to `SO_RCVBUF`
//! capped by `net.core.rmem_max`).
//!
//! On ENOBUFS the monitor discards what is still queued (it was sent before
//! the loss, and applying it after a fresh dump would bring back stale
//! state), drops its own pending events and returns [`Event::Resync`]: the
//! consumer then dumps again and `Table::replace`s. Events after that are
//! complete again.
//!
//! # What maps to what
//!
//! Links (RTM_NEWLINK / RTM_DELLINK of family AF_UNSPEC; the bridge's own
//! AF_BRIDGE port messages are ignored: they lack IFLA_LINKINFO and a
//! bridge-port DELLINK does not mean the device is gone):
//!
//! | kernel                                   | [`Link`]                         |
//! |------------------------------------------|----------------------------------|
//! | ifi_index                                | `ifindex` (0: message ignored)   |
//! | IFLA_IFNAME                              | `name` (missing: ignored)        |
//! | ifi_flags & IFF_UP                       | `up`                             |
//! | IFLA_OPERSTATE                           | `oper` (unknown values: Unknown) |
//! | IFLA_MASTER                              | `controller`                     |
//! | IFLA_LINKINFO/IFLA_INFO_KIND (+ DATA)    | `kind`, see [`link_kind`]        |
//! | IFLA_LINK_NETNSID on a veth              | `peer_in_other_netns`            |
//!
//! Addresses (RTM_NEWADDR / RTM_DELADDR): `ifa_index`, IFA_LOCAL (or
//! IFA_ADDRESS when there is no IFA_LOCAL: IPv6 without a peer) and
//! `ifa_prefixlen` → `AddrAdded` / `AddrRemoved`.
//!
//! Default routes: a route of family AF_INET/AF_INET6 with destination
//! prefix length 0 in the **main table** (RTA_TABLE, else `rtm_table`) —
//! what `ip route` shows and what the host's own traffic uses without
//! policy routing — of type unicast. Its output interfaces are RTA_OIF and
//! the RTA_MULTIPATH nexthops, less those flagged dead (RTNH_F_DEAD).
//! Routes using nexthop objects (RTA_NH_ID) are seen through the
//! `nexthop_compat_mode` expansion the kernel adds by default. A
//! source-specific IPv6 default (`from P`) counts too.
//!
//! Local routes: a route of family AF_INET/AF_INET6 in the **local table**
//! (RT_TABLE_LOCAL, 255) of type local, broadcast or anycast, not flagged
//! dead: its destination prefix (RTA_DST, absent: the whole family, with
//! `rtm_dst_len`) → `LocalRoutes { v6, nets }`. These are what the kernel
//! delivers to the host itself: interface addresses (/32, /128), directed
//! broadcasts, IPv6 subnet-router anycast, and prefixes such as
//! `ip route add local 10.9.0.0/24 dev lo`.
//!
//! Route messages are not turned into changes one by one: `ip route
//! replace`, `append`, `prepend` and multipath nexthop deletions make an
//! incremental model fragile, and the kernel flushes IPv4 routes of a link
//! that goes down or away *without* RTM_DELROUTE. Instead, the monitor keeps
//! the per-family default-route and local-route sets and re-reads both (one
//! route dump of that family) after any main-table default-route or
//! local-table route message, after a link is deleted or changes IFF_UP,
//! and after an overrun; every re-read yields `DefaultRoutes { v6, via }`
//! and `LocalRoutes { v6, nets }` with the full sets. Messages already waiting
//! on the socket are read first, so a burst costs one dump.
//!
//! tc (RTNLGRP_TC): RTM_NEWQDISC/DELQDISC, NEWTFILTER/DELTFILTER,
//! NEWTCLASS/DELTCLASS and NEWCHAIN/DELCHAIN → `Tc(ifindex)` (a foreign
//! `tc qdisc del dev X clsact` is noticed); messages about shared blocks
//! (`TCM_IFINDEX_MAGIC_BLOCK`) carry no ifindex and are ignored. tcx
//! attachments are bpf links, not tc objects: the kernel announces nothing
//! about them over rtnetlink.
//!
//! Anything else (neighbours, other tables, unknown messages) is ignored;
//! messages that do not decode are logged and skipped.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;

use ipnet::IpNet;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, Socket, SocketAddr, TokioSocket};
use rtnetlink::Handle;
use tracing::{debug, info, warn};

use crate::links::{Change, Ifindex, Link, Table};

mod parse;
mod responses;
pub use parse::{local_route, parse_addr, parse_link};
use parse::*;
use responses::Responses;

/// Receive buffer the monitor asks for (the kernel doubles it for
/// bookkeeping and reports the doubled value).
pub const DEFAULT_RX_BUFFER: usize = 4 << 20;

/// How often a dump interrupted by concurrent changes (NLM_F_DUMP_INTR) is
/// repeated before giving up.
const DUMP_ATTEMPTS: u32 = 5;

/// Datagrams read without waiting before a default-route re-read, so that a
/// burst of route messages costs one dump.
const COALESCE_DATAGRAMS: usize = 256;

/// Upper bound of datagrams discarded after an overrun.
const DISCARD_LIMIT: usize = 1 << 20;

/// The main routing table (`RT_TABLE_MAIN`).
pub(super) const RT_TABLE_MAIN: u32 = 254;

/// The local routing table (`RT_TABLE_LOCAL`): what is delivered locally.
pub(super) const RT_TABLE_LOCAL: u32 = 255;

/// The rtnetlink multicast groups the monitor joins.
const GROUPS: [(u32, &str); 6] = [
    (libc::RTNLGRP_LINK, "link"),
    (libc::RTNLGRP_IPV4_IFADDR, "ipv4-ifaddr"),
    (libc::RTNLGRP_IPV6_IFADDR, "ipv6-ifaddr"),
    (libc::RTNLGRP_IPV4_ROUTE, "ipv4-route"),
    (libc::RTNLGRP_IPV6_ROUTE, "ipv6-route"),
    (libc::RTNLGRP_TC, "tc"),
];

/// Errors of the netlink module, each naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink connection needs a tokio runtime: call it from inside one")]
    NoRuntime,
    #[error("opening a netlink socket: {source}")]
    Socket { source: io::Error },
    #[error("binding the netlink event socket: {source}")]
    Bind { source: io::Error },
    #[error("joining rtnetlink multicast group {group}: {source}")]
    Subscribe { group: &'static str, source: io::Error },
    #[error("setting the netlink receive buffer to {bytes} bytes: {source}")]
    RxBuffer { bytes: usize, source: io::Error },
    #[error("dumping {what}: {source}")]
    Dump { what: &'static str, source: io::Error },
    #[error("dumping {what}: the netlink connection closed before the dump was complete")]
    DumpClosed { what: &'static str },
    #[error("dumping {what}: interrupted by concurrent changes {attempts} times in a row")]
    DumpInterrupted { what: &'static str, attempts: u32 },
    #[error("receiving rtnetlink events: {source}")]
    Receive { source: io::Error },
}

// ---------------------------------------------------------------------------
// Dumps

/// A request connection to rtnetlink, for dumps. Its sockets live in the
/// network namespace of the thread that called [`Netlink::connect`]; its
/// connection task runs on the current tokio runtime and is stopped on drop.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    conn: tokio::task::JoinHandle<()>,
}

impl Netlink {
    /// Opens the connection (in the calling thread's network namespace) and
    /// spawns its driver on the current tokio runtime.
    pub fn connect() -> Result<Netlink, Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (mut conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| Error::Socket { source })?;
        // NLMSG_DONE is forwarded so that a dump cut short by a closed
        // connection (the response stream just ends) is told apart from a
        // complete one.
        conn.set_forward_done(true);
        let conn = rt.spawn(conn);
        Ok(Netlink { handle, conn })
    }

    /// The rtnetlink handle, for requests this module does not wrap. Its
    /// connection forwards NLMSG_DONE to the response streams.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Links, addresses (IPv4, IPv6), default routes and local routes
    /// (IPv4, IPv6) as a fresh table.
    pub async fn dump(&self) -> Result<Table, Error> {
        let mut table = Table::new();
        for link in self.links().await? {
            table.apply(Change::Link(link));
        }
        for (ifindex, addr) in self.addresses().await? {
            table.apply(Change::AddrAdded(ifindex, addr));
        }
        for v6 in [false, true] {
            let r = self.routes(v6).await?;
            table.apply(Change::DefaultRoutes { v6, via: r.default_via });
            table.apply(Change::LocalRoutes { v6, nets: r.local });
        }
        Ok(table)
    }

    /// Every link (RTM_GETLINK dump), without addresses and routes.
    pub async fn links(&self) -> Result<Vec<Link>, Error> {
        let msgs = self.dump_raw("links", RouteNetlinkMessage::GetLink(LinkMessage::default())).await?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) if l.header.interface_family == AddressFamily::Unspec => {
                    parse_link(l)
                }
                _ => None,
            })
            .collect())
    }

    /// Every IPv4 and IPv6 address with its prefix length.
    pub async fn addresses(&self) -> Result<Vec<(Ifindex, IpNet)>, Error> {
        let mut out = Vec::new();
        for (family, what) in [(AddressFamily::Inet, "IPv4 addresses"), (AddressFamily::Inet6, "IPv6 addresses")] {
            let mut req = AddressMessage::default();
            req.header.family = family;
            let msgs = self.dump_raw(what, RouteNetlinkMessage::GetAddress(req)).await?;
            out.extend(msgs.iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr(a),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// The links a default route of the main table leaves through, for one
    /// family (see the module docs for what counts).
    pub async fn default_routes(&self, v6: bool) -> Result<BTreeSet<Ifindex>, Error> {
        Ok(self.routes(v6).await?.default_via)
    }

    /// The default-route and local-route sets of one family, from one
    /// route dump (every table).
    pub async fn routes(&self, v6: bool) -> Result<Routes, Error> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let what = if v6 { "IPv6 routes" } else { "IPv4 routes" };
        let msgs = self.dump_raw(what, RouteNetlinkMessage::GetRoute(req)).await?;
        let mut out = Routes::default();
        for m in &msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else { continue };
            if main_default_family(r) == Some(v6) {
                out.default_via.extend(default_route_oifs(r));
            }
            if let Some((route_v6, net)) = local_route(r) {
                if route_v6 == v6 {
                    out.local.insert(net);
                    out.local_oifs.extend(route_oif(r));
                }
            }
        }
        Ok(out)
    }

    /// One dump request; repeated when the kernel flags it inconsistent
    /// (NLM_F_DUMP_INTR: the object list changed while it was being read).
    async fn dump_raw(&self, what: &'static str, request: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, Error> {
        for attempt in 1..=DUMP_ATTEMPTS {
            let mut req = NetlinkMessage::from(request.clone());
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut handle = self.handle.clone();
            let responses = handle.request(req).map_err(|_| Error::DumpClosed { what })?;
            let mut responses = Responses::new(responses);
            let mut out = Vec::new();
            let mut interrupted = false;
            let mut done = false;
            while let Some(msg) = responses.next().await {
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Done(d) => {
                        if d.code < 0 {
                            return Err(Error::Dump { what, source: io::Error::from_raw_os_error(-d.code) });
                        }
                        done = true;
                        break;
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(Error::Dump { what, source: e.to_io() });
                    }
                    _ => {}
                }
            }
            if !done {
                return Err(Error::DumpClosed { what });
            }
            if !interrupted {
                return Ok(out);
            }
            debug!(what, attempt, "dump interrupted by a concurrent change; repeating it");
        }
        Err(Error::DumpInterrupted { what, attempts: DUMP_ATTEMPTS })
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// What a route dump of one family yields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Output links of the main table's default routes.
    pub default_via: BTreeSet<Ifindex>,
    /// Destinations of the local table's local, broadcast and anycast
    /// routes (see the module docs).
    pub local: BTreeSet<IpNet>,
    /// The links those local routes name.
    pub local_oifs: BTreeSet<Ifindex>,
}

// ---------------------------------------------------------------------------
// Events

/// What the monitor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A change to apply to the table.
    Change(Change),
    /// Events were lost (the socket overran): dump again and
    /// `Table::replace`. Dump *after* receiving this.
    Resync,
}

/// The rtnetlink event stream (see the module docs). Its sockets live in
/// the network namespace of the thread that called [`Monitor::open`].
pub struct Monitor {
    netlink: Netlink,
    socket: TokioSocket,
    /// The receive buffer as the kernel reports it (doubled).
    rx_buffer: usize,
    /// Events decoded but not yet returned.
    pending: VecDeque<Event>,
    /// IFF_UP of every link: a change triggers a default-route re-read.
    up: HashMap<Ifindex, bool>,
    /// The last default-route set read, per family (index: v6 as usize).
    routes: [BTreeSet<Ifindex>; 2],
    /// The last local-route set read, per family, and the links it names.
    local: [BTreeSet<IpNet>; 2],
    local_oifs: [BTreeSet<Ifindex>; 2],
    /// The route sets of that family must be re-read.
    dirty: [bool; 2],
    /// `up` must be re-learnt with a link dump (after an overrun).
    relearn_links: bool,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("rx_buffer", &self.rx_buffer)
            .field("pending", &self.pending.len())
            .field("routes", &self.routes)
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Subscribes with a [`DEFAULT_RX_BUFFER`] receive buffer, then reads
    /// the current default routes and link states (its own bookkeeping; no
    /// events come of it). Call [`Monitor::dump`] afterwards for the table.
    pub async fn open() -> Result<Monitor, Error> {
        Monitor::open_with_rx_buffer(DEFAULT_RX_BUFFER).await
    }

    /// [`Monitor::open`] with a given receive buffer size (bytes, before
    /// the kernel doubles it; at least the kernel's minimum).
    pub async fn open_with_rx_buffer(bytes: usize) -> Result<Monitor, Error> {
        let netlink = Netlink::connect()?;
        let (socket, rx_buffer) = subscribe(bytes)?;
        let mut mon = Monitor {
            netlink,
            socket,
            rx_buffer,
            pending: VecDeque::new(),
            up: HashMap::new(),
            routes: [BTreeSet::new(), BTreeSet::new()],
            local: [BTreeSet::new(), BTreeSet::new()],
            local_oifs: [BTreeSet::new(), BTreeSet::new()],
            dirty: [true, true],
            relearn_links: true,
        };
        mon.refresh(false).await?;
        info!(rx_buffer, "watching rtnetlink: links, addresses, routes, tc");
        Ok(mon)
    }

    /// The request connection (for dumps in the same namespace).
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// A fresh table: [`Netlink::dump`] on this monitor's connection.
    pub async fn dump(&self) -> Result<Table, Error> {
        self.netlink.dump().await
    }

    /// The receive buffer in bytes, as the kernel reports it.
    pub fn rx_buffer(&self) -> usize {
        self.rx_buffer
    }

    /// The default-route set last read for a family.
    pub fn default_routes(&self, v6: bool) -> &BTreeSet<Ifindex> {
        &self.routes[usize::from(v6)]
    }

    /// The local-route set last read for a family.
    pub fn local_routes(&self, v6: bool) -> &BTreeSet<IpNet> {
        &self.local[usize::from(v6)]
    }

    /// The next event. Cancel-safe (usable in `tokio::select!`): a received
    /// datagram is decoded before the next await, and a default-route
    /// re-read that was interrupted is repeated (the cancelled dump is read
    /// to its end in the background, see `Responses`).
    ///
    /// An error means the event socket failed (or a dump of the request
    /// connection did): the stream cannot be trusted any more; open a new
    /// monitor and dump.
    pub async fn next(&mut self) -> Result<Event, Error> {
        let mut refresh_failed = false;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            if self.needs_refresh() && !refresh_failed {
                self.read_waiting();
                if self.pending.front() == Some(&Event::Resync) {
                    continue;
                }
                match self.refresh(true).await {
                    Ok(()) => continue,
                    // Only under a storm of changes, which brings messages
                    // and so another try.
                    Err(e @ Error::DumpInterrupted { .. }) => {
                        warn!("re-reading default routes: {e}; trying again at the next event");
                        refresh_failed = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            match self.socket.recv_from_full().await {
                Ok((buf, from)) => self.handle_datagram(&buf, from),
                Err(e) => match classify_recv_error(&e) {
                    RecvFailure::Overrun => self.overrun(),
                    RecvFailure::Retry => {}
                    RecvFailure::Fatal => return Err(Error::Receive { source: e }),
                },
            }
        }
    }

    fn needs_refresh(&self) -> bool {
        self.relearn_links || self.dirty[0] || self.dirty[1]
    }

    /// Re-reads what is marked stale: link states after an overrun, and
    /// the route sets (yielding `DefaultRoutes` and `LocalRoutes` when
    /// `emit`).
    /// State is updated only after a successful read, so a cancelled or
    /// failed call leaves the marks for the next one.
    async fn refresh(&mut self, emit: bool) -> Result<(), Error> {
        if self.relearn_links {
            let links = self.netlink.links().await?;
            self.up = links.iter().map(|l| (l.ifindex, l.up)).collect();
            self.relearn_links = false;
        }
        for v6 in [false, true] {
            let f = usize::from(v6);
            if !self.dirty[f] {
                continue;
            }
            let r = self.netlink.routes(v6).await?;
            self.dirty[f] = false;
            if r.default_via != self.routes[f] {
                debug!(v6, via = ?r.default_via, "default routes changed");
            }
            if r.local != self.local[f] {
                debug!(v6, local = ?r.local, "local routes changed");
            }
            self.routes[f] = r.default_via.clone();
            self.local[f] = r.local.clone();
            self.local_oifs[f] = r.local_oifs;
            if emit {
                self.pending.push_back(Event::Change(Change::DefaultRoutes { v6, via: r.default_via }));
                self.pending.push_back(Event::Change(Change::LocalRoutes { v6, nets: r.local }));
            }
        }
        Ok(())
    }

    /// Handles datagrams already waiting on the socket, without waiting.
    fn read_waiting(&mut self) {
        for _ in 0..COALESCE_DATAGRAMS {
            match self.socket.socket_ref().recv_from_full() {
                Ok((buf, from)) => self.handle_datagram(&buf, from),
                Err(e) => {
                    // Would block: nothing waiting. Other errors are left
                    // for the awaited receive to report.
                    if classify_recv_error(&e) == RecvFailure::Overrun {
                        self.overrun();
                    }
                    return;
                }
            }
            if self.pending.front() == Some(&Event::Resync) {
                return;
            }
        }
    }

    fn handle_datagram(&mut self, buf: &[u8], from: SocketAddr) {
        if from.port_number() != 0 {
            debug!(port = from.port_number(), "ignoring a netlink datagram not sent by the kernel");
            return;
        }
        for msg in parse_datagram(buf) {
            match msg {
                Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(m), .. }) => self.handle_message(m),
                Ok(NetlinkMessage { payload: NetlinkPayload::Overrun(_), .. }) => {
                    self.overrun();
                    return;
                }
                Ok(_) => {}
                Err(e) => warn!("skipping an rtnetlink message that does not decode: {e}"),
            }
        }
    }

    fn handle_message(&mut self, msg: RouteNetlinkMessage) {
        match interpret(&msg) {
            Note::Change(Change::Link(link)) => {
                let before = self.up.insert(link.ifindex, link.up);
                if before.is_some_and(|b| b != link.up) {
                    // Going down flushes the link's IPv4 routes silently;
                    // coming up may revive dead nexthops silently.
                    self.dirty = [true, true];
                }
                self.pending.push_back(Event::Change(Change::Link(link)));
            }
            Note::Change(Change::LinkGone(ifindex)) => {
                self.up.remove(&ifindex);
                for f in 0..2 {
                    if self.routes[f].contains(&ifindex) || self.local_oifs[f].contains(&ifindex) {
                        self.dirty[f] = true;
                    }
                }
                self.pending.push_back(Event::Change(Change::LinkGone(ifindex)));
            }
            Note::Change(c) => self.pending.push_back(Event::Change(c)),
            Note::Routes { v6 } => self.dirty[usize::from(v6)] = true,
            Note::Ignored => {}
        }
    }

    /// The socket overran: what is still queued predates the loss and is
    /// discarded, pending events too; the consumer re-dumps.
    fn overrun(&mut self) {
        let discarded = self.discard_queued();
        warn!(
            discarded,
            rx_buffer = self.rx_buffer,
            "rtnetlink event socket overran (ENOBUFS): events were lost, asking for a full re-dump"
        );
        self.pending.clear();
        self.pending.push_back(Event::Resync);
        self.relearn_links = true;
        self.dirty = [true, true];
    }

    /// Reads and drops every queued datagram. Until the queue has been
    /// emptied once the kernel keeps the socket marked congested and
    /// reports no further ENOBUFS, so stopping early could hide a later
    /// loss. (Reading is far faster than the kernel makes messages; the
    /// bound only guards against a bug.)
    fn discard_queued(&mut self) -> usize {
        let mut n = 0usize;
        for _ in 0..DISCARD_LIMIT {
            match self.socket.socket_ref().recv_from_full() {
                Ok(_) => n += 1,
                Err(e) if classify_recv_error(&e) == RecvFailure::Overrun => {}
                Err(_) => break,
            }
        }
        n
    }
}

/// Opens the multicast socket: receive buffer first (so the groups never
/// see the default one), then bind and join.
fn subscribe(rx_buffer: usize) -> Result<(TokioSocket, usize), Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(|source| Error::Socket { source })?;
    let actual = set_rx_buffer(socket.socket_ref(), rx_buffer)?;
    socket.socket_mut().bind_auto().map_err(|source| Error::Bind { source })?;
    for (group, name) in GROUPS {
        socket
            .socket_ref()
            .add_membership(group)
            .map_err(|source| Error::Subscribe { group: name, source })?;
    }
    Ok((socket, actual))
}

/// SO_RCVBUFFORCE (needs CAP_NET_ADMIN, ignores rmem_max), else SO_RCVBUF.
/// Returns the size the kernel reports.
fn set_rx_buffer(socket: &Socket, bytes: usize) -> Result<usize, Error> {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let err = |e: nix::Error| Error::RxBuffer { bytes, source: e.into() };
    if let Err(e) = setsockopt(socket, sockopt::RcvBufForce, &bytes) {
        debug!("SO_RCVBUFFORCE: {e}; using SO_RCVBUF (capped by net.core.rmem_max)");
        setsockopt(socket, sockopt::RcvBuf, &bytes).map_err(err)?;
    }
    let actual = getsockopt(socket, sockopt::RcvBuf).map_err(err)?;
    if actual < bytes {
        warn!(asked = bytes, got = actual, "netlink receive buffer smaller than asked");
    }
    Ok(actual)
}

/// What a failed receive means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvFailure {
    /// ENOBUFS: the kernel dropped messages.
    Overrun,
    /// Nothing lost, try again (EINTR, EAGAIN).
    Retry,
    /// The socket is unusable.
    Fatal,
}

fn classify_recv_error(e: &io::Error) -> RecvFailure {
    match e.raw_os_error() {
        Some(libc::ENOBUFS) => RecvFailure::Overrun,
        _ if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => RecvFailure::Retry,
        _ => RecvFailure::Fatal,
    }
}

/// The netlink messages of one datagram. A truncated or malformed header
/// ends the datagram; a message that does not decode is an `Err` and the
/// next one is tried.
fn parse_datagram(buf: &[u8]) -> Vec<Result<NetlinkMessage<RouteNetlinkMessage>, String>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        let len = match NetlinkBuffer::new_checked(rest) {
            Ok(b) => b.length() as usize,
            Err(e) => {
                out.push(Err(format!("malformed netlink header at offset {off}: {e}")));
                break;
            }
        };
        if len == 0 || len > rest.len() {
            out.push(Err(format!("netlink message length {len} at offset {off} of {}", buf.len())));
            break;
        }
        out.push(NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]).map_err(|e| {
            let kind = NetlinkBuffer::new_checked(rest).map(|b| b.message_type()).unwrap_or_default();
            format!("message type {kind}: {e}")
        }));
        // NLMSG_ALIGN
        off += (len + 3) & !3;
    }
    out
}

// ---------------------------------------------------------------------------
// Messages → changes (pure)

#[cfg(test)]
mod tests;
