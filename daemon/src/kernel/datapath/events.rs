//! Reading drop events from the ring buffer. The reader opens the pinned map
//! on its own, so it can live on its own thread, independent of loading.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use hostfwd_bpf::layout::{self as l, Pod};
use hostfwd_bpf::DropReason;
use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};
use serde::Serialize;

use super::{dir_from_name, dir_name, paths::Paths, Direction, Error, Result};

/// One drop (or audited would-be drop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub ifindex: u32,
    #[serde(serialize_with = "ser_dir")]
    pub dir: Direction,
    pub reason: String,
    pub audit: bool,
    pub vlan: u16,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub rule_id: u32,
}

fn ser_dir<S: serde::Serializer>(d: &Direction, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(dir_name(*d))
}

impl Event {
    pub fn from_raw(e: &l::Event) -> Self {
        Event {
            ts_ns: e.ts_ns,
            ifindex: e.ifindex,
            dir: if e.dir == l::DIR_EGRESS { Direction::Egress } else { Direction::Ingress },
            reason: DropReason::from_code(e.reason).map(|r| r.name().to_string()).unwrap_or_else(|| format!("unknown-{}", e.reason)),
            audit: e.audit != 0,
            vlan: e.vlan,
            proto: e.proto,
            src: l::ip_from16(e.saddr),
            dst: l::ip_from16(e.daddr),
            sport: e.sport,
            dport: e.dport,
            rule_id: e.rule_id,
        }
    }

    pub fn direction_is(&self, name: &str) -> bool {
        dir_from_name(name) == Some(self.dir)
    }
}

/// Polls the pinned ring buffer and collects decoded events.
pub struct EventReader {
    ring: RingBuffer<'static>,
    pending: Rc<RefCell<Vec<Event>>>,
    _map: &'static MapHandle,
}

impl EventReader {
    pub fn open(paths: &Paths) -> Result<Self> {
        let path = paths.map("hf_events");
        let map = MapHandle::from_pinned_path(&path).map_err(|source| Error::OpenPinned { path, source })?;
        // The ring buffer borrows its map for its whole life; readers live as
        // long as the daemon (or a test), so one handle is leaked per reader.
        let map: &'static MapHandle = Box::leak(Box::new(map));
        let pending = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&pending);
        let mut b = RingBufferBuilder::new();
        b.add(map, move |data: &[u8]| {
            if let Some(raw) = data.get(..std::mem::size_of::<l::Event>()).and_then(l::Event::from_bytes) {
                sink.borrow_mut().push(Event::from_raw(&raw));
            }
            0
        })
        .map_err(Error::RingBuf)?;
        let ring = b.build().map_err(Error::RingBuf)?;
        Ok(EventReader { ring, pending, _map: map })
    }

    /// Waits up to `timeout` for events and returns all that arrived.
    pub fn poll(&self, timeout: Duration) -> Result<Vec<Event>> {
        self.ring.poll(timeout).map_err(Error::RingBuf)?;
        Ok(std::mem::take(&mut *self.pending.borrow_mut()))
    }

    /// The epoll fd, for integration into an async loop.
    pub fn fd(&self) -> i32 {
        self.ring.epoll_fd()
    }
}
