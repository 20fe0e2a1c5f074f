//! `hostfwdctl monitor`: reads the event stream that `OpenMonitor` hands
//! over (one JSON object per line) until Ctrl-C, SIGTERM, a closed standard
//! output (`| head`) or the end of the stream.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;

use hostfwd_dbus::monitor as key;
use hostfwd_dbus::proxy::Options;
use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use zbus::zvariant::Value;

use crate::cli::MonitorArgs;
use crate::commands::Ctx;
use crate::fail::{Exit, Failure, Result};

pub async fn run(ctx: &Ctx, args: &MonitorArgs) -> Result<Exit> {
    let c = ctx.writer().await?;
    let mut filter: Options<'_> = HashMap::new();
    if let Some(l) = &args.link {
        filter.insert(key::LINK, Value::from(l.as_str()));
    }
    if let Some(r) = &args.reason {
        filter.insert(key::REASON, Value::from(r.as_str()));
    }
    if args.audit {
        filter.insert(key::AUDIT, Value::from(true));
    }
    let fd: OwnedFd = c.open_monitor(filter).await?.into();
    let mut names: HashMap<u64, String> = link_names(&c).await;
    let mut stream = lines(fd)?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::error(format!("SIGINT handler: {e}")))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::error(format!("SIGTERM handler: {e}")))?;
    let mut out = std::io::stdout();
    loop {
        let line = tokio::select! {
            _ = int.recv() => return Ok(Exit::Ok),
            _ = term.recv() => return Ok(Exit::Ok),
            line = stream.next_line() => line,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => return Err(Failure::new(Exit::Unreachable, "the daemon closed the monitor stream")),
            Err(e) => return Err(Failure::new(Exit::Unreachable, format!("reading the monitor stream: {e}"))),
        };
        if line.trim().is_empty() {
            continue;
        }
        let text = if ctx.json {
            line
        } else {
            // Events name their link; for one the daemon could not name,
            // ask for the names again (the link may be new).
            let v = serde_json::from_str::<Json>(&line).ok();
            let unnamed = v.as_ref().filter(|v| v.get("link").and_then(Json::as_str).is_none_or(str::is_empty));
            if let Some(i) = unnamed.and_then(|v| v.get("ifindex").and_then(Json::as_u64)).filter(|i| !names.contains_key(i)) {
                // A link that came after the start: learn the names again.
                names = link_names(&c).await;
                names.entry(i).or_insert_with(|| format!("if{i}"));
            }
            human(&line, &names)
        };
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Exit::Ok),
            Err(e) => return Err(Failure::error(format!("writing: {e}"))),
        }
    }
}

/// ifindex → name of the links the daemon knows (empty when it cannot say).
async fn link_names(c: &crate::bus::Client) -> HashMap<u64, String> {
    match c.manager.list_links().await {
        Ok(list) => list.into_iter().filter_map(|(i, n, _)| Some((u64::try_from(i).ok()?, n))).collect(),
        Err(_) => HashMap::new(),
    }
}

/// One event for people:
/// `12:00:01.250 ingress eth0 DROP policy-denied tcp 192.0.2.1:40000 -> 192.0.2.2:22 rule 3 vlan 100`.
/// Lines that are not events are shown as they are.
pub fn human(line: &str, names: &HashMap<u64, String>) -> String {
    let Ok(v) = serde_json::from_str::<Json>(line) else { return line.to_string() };
    if let Some(lost) = v.get("lost").and_then(Json::as_u64) {
        return format!("{} -- {lost} event{} lost (the reader fell behind)", clock(), if lost == 1 { "" } else { "s" });
    }
    let Some(reason) = v.get("reason").and_then(Json::as_str) else { return line.to_string() };
    let s = |k: &str| v.get(k).and_then(Json::as_str).unwrap_or("");
    let n = |k: &str| v.get(k).and_then(Json::as_u64).unwrap_or(0);
    let ifindex = n("ifindex");
    // The daemon names the link (empty when it does not know it).
    let link = match v.get("link").and_then(Json::as_str).filter(|l| !l.is_empty()) {
        Some(l) => l.to_string(),
        None => names.get(&ifindex).cloned().unwrap_or_else(|| format!("if{ifindex}")),
    };
    let dir = Some(s("dir")).filter(|d| !d.is_empty()).unwrap_or("?");
    let verdict = if v.get("audit").and_then(Json::as_bool).unwrap_or(false) { "AUDIT" } else { "DROP" };
    let proto = n("proto");
    let (pname, ports) = match proto {
        6 => ("tcp".to_string(), true),
        17 => ("udp".to_string(), true),
        132 => ("sctp".to_string(), true),
        1 => ("icmp".to_string(), false),
        58 => ("icmpv6".to_string(), false),
        0 => (String::new(), false),
        p => (format!("proto {p}"), false),
    };
    let endpoint = |addr: &str, port: u64| {
        if !ports {
            addr.to_string()
        } else if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        }
    };
    let mut out = format!("{} {dir} {link} {verdict} {reason}", clock());
    if !pname.is_empty() {
        out.push(' ');
        out.push_str(&pname);
    }
    if !s("src").is_empty() || !s("dst").is_empty() {
        out.push_str(&format!(" {} -> {}", endpoint(s("src"), n("sport")), endpoint(s("dst"), n("dport"))));
    }
    if n("rule_id") != 0 {
        out.push_str(&format!(" rule {}", n("rule_id")));
    }
    if n("vlan") != 0 {
        out.push_str(&format!(" vlan {}", n("vlan")));
    }
    out
}

/// The wall clock now as `HH:MM:SS.mmm` (UTC), when the event was read.
fn clock() -> String {
    let t = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    // 2025-01-31T12:00:01.250Z
    t.get(11..23).unwrap_or(&t).to_string()
}

/// The lines of the monitor socket (the contract: a stream socket).
fn lines(fd: OwnedFd) -> Result<Lines<BufReader<UnixStream>>> {
    let sock = std::os::unix::net::UnixStream::from(fd);
    let bad = |e: std::io::Error| Failure::error(format!("monitor stream: {e}"));
    sock.set_nonblocking(true).map_err(bad)?;
    Ok(BufReader::new(UnixStream::from_std(sock).map_err(bad)?).lines())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_one_line() {
        let names = HashMap::from([(2u64, "eth0".to_string())]);
        let line = r#"{"ts_ns":1,"ifindex":2,"dir":"ingress","reason":"policy-denied","audit":false,"vlan":100,"proto":6,"src":"192.0.2.1","dst":"192.0.2.2","sport":40000,"dport":22,"rule_id":3}"#;
        let h = human(line, &names);
        assert!(h.ends_with(" ingress eth0 DROP policy-denied tcp 192.0.2.1:40000 -> 192.0.2.2:22 rule 3 vlan 100"), "{h}");
        let line6 = r#"{"ifindex":9,"dir":"egress","reason":"policy-denied","audit":true,"proto":17,"src":"2001:db8::1","dst":"2001:db8::2","sport":53,"dport":5353}"#;
        let h = human(line6, &names);
        assert!(h.ends_with(" egress if9 AUDIT policy-denied udp [2001:db8::1]:53 -> [2001:db8::2]:5353"), "{h}");
        assert!(human("{\"lost\":3}", &names).ends_with(" -- 3 events lost (the reader fell behind)"));
        let named = r#"{"ifindex":9,"link":"bond0.1000","dir":"ingress","reason":"vlan-filtered","audit":false,"proto":0,"vlan":7}"#;
        assert!(human(named, &names).ends_with(" ingress bond0.1000 DROP vlan-filtered vlan 7"), "{}", human(named, &names));
        assert_eq!(human("not json", &names), "not json");
    }
}
