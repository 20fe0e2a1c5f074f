//! netlink-proto's "failed to forward response back to the handle": logged
//! for every response that arrives for a request whose reader is gone. The
//! daemon drops a dump half-way whenever its `select!` cancels
//! `Monitor::next` during a route re-read (under NetworkManager churn, many
//! times a second). `hostfwd::netlink` reads such a dump to its end instead.
//!
//! netlink-proto reports through the `log` crate; this binary installs a
//! logger that keeps its warnings (a binary of its own: one logger per
//! process, and no other test's dumps to count).

use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use hostfwd::links::{Change, Ifindex};
use hostfwd::netlink::{Event, Monitor, Netlink};
use hostfwd_tests::NetNs;

const T: Duration = Duration::from_secs(10);

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Keep;

impl log::Log for Keep {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn && m.target().starts_with("netlink_proto")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            WARNINGS.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Keep).expect("the only logger of this binary");
        log::set_max_level(log::LevelFilter::Warn);
    });
}

fn forward_failures() -> Vec<String> {
    WARNINGS.lock().unwrap().iter().filter(|w| w.contains("failed to forward")).cloned().collect()
}

fn in_ns<R: Send>(ns: &NetNs, f: impl Future<Output = R> + Send) -> R {
    ns.run(move || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime").block_on(f)).expect("netns")
}

/// Polls `f` once and drops it, pending: a future cancelled by a select.
async fn poll_once_and_drop<F: Future>(f: F) {
    let mut f = pin!(f);
    let first = std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await;
    assert!(first, "the dump cannot be complete before its connection task ran");
}

/// A dump dropped after its request went out: the kernel's answer still
/// comes, and must not be reported as undeliverable. The next dump on the
/// same connection is complete and correct.
#[test]
fn cancelled_dumps_are_read_to_their_end() {
    capture();
    let ns = NetNs::new().unwrap();
    for i in 0..20 {
        ns.ip(&["link", "add", &format!("v{i}"), "type", "veth", "peer", "name", &format!("w{i}")]).unwrap();
    }
    let links = in_ns(&ns, async {
        let nl = Netlink::connect().expect("connect");
        for _ in 0..5 {
            // The first poll sends the request (the connection task has not
            // run yet on this one-thread runtime), then it is dropped.
            poll_once_and_drop(nl.links()).await;
        }
        // Runs the connection task through the five answers, then this one.
        nl.links().await.expect("links after cancelled dumps")
    });
    assert_eq!(links.len(), 41, "lo and 20 veth pairs: {links:?}");
    let failures = forward_failures();
    assert!(failures.is_empty(), "responses of cancelled dumps reached a closed channel: {failures:?}");
}

/// The daemon's pattern: `Monitor::next` in a select that another branch
/// wins while a route re-read is in flight, under address churn; then the
/// monitor still converges (a marker arrives) and nothing was undeliverable.
#[test]
fn monitor_cancelled_during_route_rereads() {
    capture();
    let ns = NetNs::new().unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    ns.ip(&["link", "add", "c0", "type", "veth", "peer", "name", "d0"]).unwrap();
    ns.ip(&["link", "set", "c0", "up"]).unwrap();
    let lo = Ifindex::new(ns.ifindex("lo").unwrap()).unwrap();
    in_ns(&ns, async {
        let mut mon = Monitor::open().await.expect("monitor");
        for i in 0..30 {
            // A local-table route marks the route sets stale (and is no
            // event itself): the next call re-reads them with a dump, and
            // is dropped during it.
            ns.ip(&["route", "add", "local", &format!("10.96.{i}.0/24"), "dev", "lo"]).unwrap();
            // First poll: the route message may not be known readable
            // yet; the yield turns the I/O driver. Second poll: the message
            // is read, the re-read's request goes out and the call waits
            // for its answer. Then it is dropped, as a select would.
            let mut next = pin!(mon.next());
            for _ in 0..2 {
                if let Poll::Ready(ev) = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await {
                    ev.expect("monitor event");
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        ns.ip(&["addr", "add", "127.0.0.90/8", "dev", "lo"]).unwrap();
        let want = Event::Change(Change::AddrAdded(lo, "127.0.0.90/8".parse().unwrap()));
        loop {
            match tokio::time::timeout(T, mon.next()).await {
                Ok(Ok(ev)) if ev == want => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("monitor failed: {e}"),
                Err(_) => panic!("marker not seen within {T:?}"),
            }
        }
    });
    let failures = forward_failures();
    assert!(failures.is_empty(), "responses of cancelled re-reads reached a closed channel: {failures:?}");
}
