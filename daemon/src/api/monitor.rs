//! `OpenMonitor`: drop events are not signals (a flood would swamp the bus
//! and every listener); each monitor gets one end of a socket pair, and a
//! task writes one JSON object per line for every event that passes its
//! filter, until the client closes its end.
//!
//! A line is the event as the datapath reports it (`ts_ns`, `ifindex`,
//! `dir`, `reason`, `audit`, `vlan`, `proto`, `src`, `dst`, `sport`, `dport`,
//! `rule_id`) plus `link`, the link's name (empty when unknown). When the
//! reader falls behind and events are lost, a line `{"lost": N}` says how
//! many.

use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;

use hostfwd_dbus::Error as BusError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;
use zbus::zvariant::{OwnedFd, OwnedValue, Value};

use super::args::{invalid_args, opt_uint, shown};
use crate::datapath::Event;
use crate::manager::{Handle, Snapshot};

/// Which events a monitor wants; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub link: Option<LinkSel>,
    pub reason: Option<String>,
    pub audit: Option<bool>,
}

/// A link by name (follows the name when the link is recreated) or by ifindex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSel {
    Name(String),
    Ifindex(u32),
}

impl Filter {
    /// The `a{sv}` filter of `OpenMonitor`; an unknown link is `NoSuchLink`
    /// (a typo would otherwise be a silent, empty stream).
    pub fn parse(filter: &HashMap<String, OwnedValue>, snapshot: &Snapshot) -> Result<Filter, BusError> {
        let mut f = Filter::default();
        for (k, v) in filter {
            match k.as_str() {
                hostfwd_dbus::monitor::LINK => {
                    let sel = match &**v {
                        Value::Str(s) => LinkSel::Name(s.to_string()),
                        other => LinkSel::Ifindex(
                            opt_uint(k, other)
                                .ok()
                                .and_then(|n| u32::try_from(n).ok())
                                .ok_or_else(|| invalid_args(format!("filter \"link\" must be a name (s) or an ifindex (i or u), not {}", other.value_signature())))?,
                        ),
                    };
                    let known = match &sel {
                        LinkSel::Name(n) => snapshot.link_by_name(n).is_some(),
                        LinkSel::Ifindex(i) => snapshot.links.keys().any(|k| k.get() == *i),
                    };
                    if !known {
                        let what = match &sel {
                            LinkSel::Name(n) => format!("named {:?}", shown(n)),
                            LinkSel::Ifindex(i) => format!("with ifindex {i}"),
                        };
                        return Err(BusError::NoSuchLink(format!("no link {what}")));
                    }
                    f.link = Some(sel);
                }
                hostfwd_dbus::monitor::REASON => match &**v {
                    // A reason no event can have would be a silent, empty stream.
                    Value::Str(s) if hostfwd_bpf::DropReason::from_name(s).is_some() => f.reason = Some(s.to_string()),
                    Value::Str(s) => {
                        let known: Vec<&str> = hostfwd_bpf::DropReason::ALL.iter().map(|r| r.name()).collect();
                        return Err(invalid_args(format!("filter \"reason\": no drop reason {:?} (known: {})", shown(s), known.join(", "))));
                    }
                    other => return Err(invalid_args(format!("filter \"reason\" must be a string (s), not {}", other.value_signature()))),
                },
                hostfwd_dbus::monitor::AUDIT => match &**v {
                    Value::Bool(b) => f.audit = Some(*b),
                    other => return Err(invalid_args(format!("filter \"audit\" must be a boolean (b), not {}", other.value_signature()))),
                },
                other => return Err(invalid_args(format!("unknown filter {:?} (known: link, reason, audit)", shown(other)))),
            }
        }
        Ok(f)
    }

    pub fn matches(&self, e: &Event, snapshot: &Snapshot) -> bool {
        let link_ok = match &self.link {
            None => true,
            Some(LinkSel::Ifindex(i)) => e.ifindex == *i,
            Some(LinkSel::Name(n)) => snapshot.links.values().any(|l| l.ifindex.get() == e.ifindex && &l.name == n),
        };
        link_ok && self.reason.as_ref().is_none_or(|r| *r == e.reason) && self.audit.is_none_or(|a| a == e.audit)
    }
}

/// One line of the stream.
pub fn line(e: &Event, snapshot: &Snapshot) -> String {
    let name = snapshot.links.values().find(|l| l.ifindex.get() == e.ifindex).map(|l| l.name.as_str()).unwrap_or("");
    let mut v = serde_json::to_value(e).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("link".into(), serde_json::Value::from(name));
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Starts a monitor; returns the client's end.
pub fn open(handle: &Handle, filter: Filter) -> Result<OwnedFd, BusError> {
    let failed = |e: std::io::Error| BusError::Failed(format!("creating the monitor socket: {e}"));
    // Subscribed before the client gets its end: nothing after the reply is missed.
    let events = handle.events();
    let (ours, theirs) = StdUnixStream::pair().map_err(failed)?;
    ours.set_nonblocking(true).map_err(failed)?;
    let ours = UnixStream::from_std(ours).map_err(failed)?;
    tokio::spawn(stream(ours, events, filter, handle.clone()));
    Ok(OwnedFd::from(std::os::fd::OwnedFd::from(theirs)))
}

async fn stream(mut sock: UnixStream, mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<Event>>, filter: Filter, handle: Handle) {
    tracing::debug!(?filter, "monitor opened");
    let mut buf = [0u8; 256];
    loop {
        let text = tokio::select! {
            // The client only reads; EOF (or an error) means it is gone.
            r = sock.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            },
            ev = events.recv() => match ev {
                Ok(e) => {
                    let snap = handle.snapshot();
                    if !filter.matches(&e, &snap) {
                        continue;
                    }
                    line(&e, &snap)
                }
                Err(RecvError::Lagged(n)) => format!("{{\"lost\":{n}}}\n"),
                Err(RecvError::Closed) => break,
            },
        };
        if sock.write_all(text.as_bytes()).await.is_err() {
            break;
        }
    }
    tracing::debug!("monitor closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::Direction;
    use crate::links::Ifindex;
    use crate::manager::LinkInfo;

    fn snap() -> Snapshot {
        let mut s = Snapshot::starting("tcx");
        for (i, n) in [(2u32, "eth0"), (3, "eth1")] {
            let ifindex = Ifindex::new(i).unwrap();
            s.links.insert(
                ifindex,
                LinkInfo {
                    ifindex,
                    name: n.into(),
                    kind: "veth".into(),
                    role: "enforce".into(),
                    reason: String::new(),
                    lower: 0,
                    controller: 0,
                    addresses: vec![],
                    allowed_vlans: vec![],
                    attach_mode: "tcx".into(),
                    audit: false,
                    link_audit: false,
                    problem: String::new(),
                },
            );
        }
        s
    }

    fn event(ifindex: u32, reason: &str, audit: bool) -> Event {
        Event {
            ts_ns: 1,
            ifindex,
            dir: Direction::Ingress,
            reason: reason.into(),
            audit,
            vlan: 0,
            proto: 6,
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            sport: 1234,
            dport: 22,
            rule_id: 0,
        }
    }

    fn filter(kv: &[(&str, Value<'_>)]) -> Result<Filter, BusError> {
        let m = kv.iter().map(|(k, v)| (k.to_string(), OwnedValue::try_from(v.try_clone().unwrap()).unwrap())).collect();
        Filter::parse(&m, &snap())
    }

    #[test]
    fn filters_select_link_reason_and_audit() {
        let s = snap();
        let all = filter(&[]).unwrap();
        assert!(all.matches(&event(2, "policy-denied", false), &s));
        let by_name = filter(&[("link", Value::from("eth1"))]).unwrap();
        assert!(by_name.matches(&event(3, "x", false), &s));
        assert!(!by_name.matches(&event(2, "x", false), &s));
        let by_index = filter(&[("link", Value::from(2i32))]).unwrap();
        assert!(by_index.matches(&event(2, "x", false), &s));
        assert!(!by_index.matches(&event(3, "x", false), &s));
        let f = filter(&[("reason", Value::from("policy-denied")), ("audit", Value::from(true))]).unwrap();
        assert!(f.matches(&event(2, "policy-denied", true), &s));
        assert!(!f.matches(&event(2, "policy-denied", false), &s));
        assert!(!f.matches(&event(2, "malformed", true), &s));
    }

    #[test]
    fn bad_filters_are_refused() {
        let e = filter(&[("link", Value::from("nope0"))]).unwrap_err();
        assert!(matches!(e, BusError::NoSuchLink(_)), "{e}");
        let e = filter(&[("link", Value::from(99u32))]).unwrap_err();
        assert!(matches!(e, BusError::NoSuchLink(_)), "{e}");
        let e = filter(&[("colour", Value::from("red"))]).unwrap_err();
        assert_eq!(e.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        let e = filter(&[("audit", Value::from("yes"))]).unwrap_err();
        assert_eq!(e.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        let e = filter(&[("link", Value::from(-1i32))]).unwrap_err();
        assert_eq!(e.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        // A reason no event has: refused, naming the key (a typo would be
        // a silent, empty stream).
        let e = filter(&[("reason", Value::from("policy-deined"))]).unwrap_err();
        assert_eq!(e.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(e.to_string().contains("\"reason\"") && e.to_string().contains("policy-denied"), "{e}");
        // Messages quote at most 64 characters of what the caller sent.
        let e = filter(&[(&"k".repeat(10_000), Value::from(1u32))]).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn lines_are_json_with_the_link_name() {
        let l = line(&event(2, "policy-denied", false), &snap());
        assert!(l.ends_with('\n') && !l[..l.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["link"], "eth0");
        assert_eq!(v["reason"], "policy-denied");
        assert_eq!(v["dport"], 22);
        assert_eq!(v["dir"], "ingress");
    }
}
