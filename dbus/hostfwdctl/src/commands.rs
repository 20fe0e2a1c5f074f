//! The commands that talk to the daemon. Each returns its whole output;
//! `main` prints it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hostfwd_dbus::proxy::{LinkProxy, Options};
use hostfwd_dbus::{options, Error as BusError};
use serde::Serialize;
use serde_json::json;
use zbus::zvariant::{OwnedObjectPath, Value};

use crate::bus::Client;
use crate::cli::{self, ApplyArgs, AuditArgs, OnOff, PolicyCmd};
use crate::fail::{Exit, Failure, Result};
use crate::table::{fields, Table};

/// What every command needs from the command line.
pub struct Ctx {
    pub address: Option<String>,
    pub json: bool,
    /// Allow password prompts on mutating calls.
    pub ask: bool,
}

impl Ctx {
    pub async fn reader(&self) -> Result<Client> {
        Client::connect(self.address.as_deref(), self.ask, false).await
    }

    pub async fn writer(&self) -> Result<Client> {
        Client::connect(self.address.as_deref(), self.ask, true).await
    }

    /// `value` as pretty JSON, or the human text.
    fn emit(&self, value: impl Serialize, human: impl FnOnce() -> String) -> Result<String> {
        if self.json {
            to_json(&value)
        } else {
            Ok(human())
        }
    }
}

pub fn to_json(value: &impl Serialize) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| Failure::error(format!("encoding JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// One link as its object shows it.
#[derive(Debug, Serialize)]
pub struct LinkView {
    pub ifindex: i32,
    pub name: String,
    pub kind: String,
    pub role: String,
    pub reason: String,
    pub lower: i32,
    pub controller: i32,
    pub addresses: Vec<String>,
    pub allowed_vlans: Vec<u16>,
    pub attach_mode: String,
    pub audit_mode: bool,
    pub path: String,
}

async fn link_view(link: &LinkProxy<'_>) -> Result<LinkView, BusError> {
    // All properties at once: the calls are pipelined on the connection.
    let (ifindex, name, kind, role, reason, lower, controller, addresses, allowed_vlans, attach_mode, audit_mode) = tokio::try_join!(
        link.ifindex(),
        link.name(),
        link.kind(),
        link.role(),
        link.reason(),
        link.lower(),
        link.controller(),
        link.addresses(),
        link.allowed_vlans(),
        link.attach_mode(),
        link.audit_mode(),
    )?;
    let path = link.inner().path().to_string();
    Ok(LinkView { ifindex, name, kind, role, reason, lower, controller, addresses, allowed_vlans, attach_mode, audit_mode, path })
}

/// True when the object went away between listing and reading it.
fn vanished(e: &BusError) -> bool {
    matches!(
        e.error_name().as_str(),
        "org.freedesktop.DBus.Error.UnknownObject" | "org.freedesktop.DBus.Error.UnknownInterface" | "org.freedesktop.DBus.Error.UnknownProperty"
    )
}

/// Every link, in ifindex order (links that vanish meanwhile are left out).
async fn all_links(c: &Client) -> Result<Vec<LinkView>> {
    let mut list: Vec<(i32, String, OwnedObjectPath)> = c.manager.list_links().await?;
    list.sort_by_key(|(ifindex, _, _)| *ifindex);
    let mut out = Vec::with_capacity(list.len());
    for (_, _, path) in list {
        let proxy = c.link_at(path).await?;
        match link_view(&proxy).await {
            Ok(v) => out.push(v),
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// `(revision, deadline)` of `PendingConfirm`; `None` when zeros.
fn pending(p: (u64, u64)) -> Option<(u64, SystemTime)> {
    (p.0 != 0).then(|| (p.0, SystemTime::UNIX_EPOCH + Duration::from_micros(p.1)))
}

/// `2025-01-31T12:00:00Z (in 1m 28s)`.
fn human_deadline(deadline: SystemTime) -> String {
    let when = humantime::format_rfc3339_seconds(deadline);
    match deadline.duration_since(SystemTime::now()) {
        // To the nearest second: a 2m deadline read a moment later is "2m".
        Ok(left) => format!("{when} (in {})", humantime::format_duration(Duration::from_secs((left.as_millis().div_ceil(1000) as u64).max(1)))),
        Err(_) => format!("{when} (overdue)"),
    }
}

fn pending_json(p: Option<(u64, SystemTime)>) -> serde_json::Value {
    match p {
        Some((revision, deadline)) => json!({
            "revision": revision,
            "deadline_us": deadline.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0),
            "deadline": humantime::format_rfc3339_seconds(deadline).to_string(),
        }),
        None => serde_json::Value::Null,
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_string()
}

/// The daemon's state; exits with [`Exit::Degraded`] unless it enforces
/// (or audits) what it was asked to, so scripts and monitoring notice.
pub async fn status(ctx: &Ctx) -> Result<(String, Exit)> {
    let c = ctx.reader().await?;
    let m = &c.manager;
    let (version, state, problems, audit, revision, pend, attach) =
        tokio::try_join!(m.version(), m.state(), m.problems(), m.audit_mode(), m.policy_revision(), m.pending_confirm(), m.attach_mode())?;
    let exit = if matches!(state.as_str(), "degraded" | "not-enforcing") { Exit::Degraded } else { Exit::Ok };
    let links = all_links(&c).await?;
    let mut roles: BTreeMap<String, usize> = BTreeMap::new();
    for l in &links {
        *roles.entry(l.role.clone()).or_default() += 1;
    }
    let pend = pending(pend);
    ctx.emit(
        json!({
            "version": version,
            "state": state,
            "problems": problems,
            "audit_mode": audit,
            "policy_revision": revision,
            "pending_confirm": pending_json(pend),
            "attach_mode": attach,
            "links": links.len(),
            "roles": roles,
        }),
        || {
            let roles: Vec<String> = roles.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let links = if roles.is_empty() { "0".to_string() } else { format!("{} ({})", links.len(), roles.join(", ")) };
            fields(&[
                ("Version", version.clone()),
                ("State", state.clone()),
                ("AuditMode", if audit { "on" } else { "off" }.into()),
                ("PolicyRevision", revision.to_string()),
                (
                    "PendingConfirm",
                    match pend {
                        Some((r, d)) => format!("revision {r}, rolled back at {}", human_deadline(d)),
                        None => "none".into(),
                    },
                ),
                ("AttachMode", attach.clone()),
                ("Links", links),
                ("Problems", if problems.is_empty() { "none".into() } else { problems.join("\n") }),
            ])
        },
    )
    .map(|text| (text, exit))
}

pub async fn links(ctx: &Ctx) -> Result<String> {
    let c = ctx.reader().await?;
    let links = all_links(&c).await?;
    ctx.emit(&links, || {
        let mut t = Table::new(&["IFINDEX", "NAME", "KIND", "ROLE", "ATTACH", "AUDIT", "REASON"]).right(0);
        for l in &links {
            t.row(vec![
                l.ifindex.to_string(),
                l.name.clone(),
                l.kind.clone(),
                l.role.clone(),
                or_dash(&l.attach_mode),
                yes_no(l.audit_mode),
                l.reason.clone(),
            ]);
        }
        t.render()
    })
}

pub async fn link(ctx: &Ctx, name: &str) -> Result<String> {
    let c = ctx.reader().await?;
    let link = c.link_by_name(name).await?;
    let view = link_view(&link).await?;
    let names: HashMap<i32, String> = c.manager.list_links().await?.into_iter().map(|(i, n, _)| (i, n)).collect();
    let other = |ifindex: i32| match (ifindex, names.get(&ifindex)) {
        (0, _) => "-".to_string(),
        (i, Some(n)) => format!("{n} ({i})"),
        (i, None) => format!("ifindex {i}"),
    };
    ctx.emit(&view, || {
        let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join("\n") };
        let vlans: Vec<String> = view.allowed_vlans.iter().map(u16::to_string).collect();
        fields(&[
            ("Name", view.name.clone()),
            ("Ifindex", view.ifindex.to_string()),
            ("Kind", view.kind.clone()),
            ("Role", view.role.clone()),
            ("Reason", view.reason.clone()),
            ("Lower", other(view.lower)),
            ("Controller", other(view.controller)),
            ("Addresses", list(&view.addresses)),
            ("AllowedVlans", if vlans.is_empty() { "-".into() } else { vlans.join(", ") }),
            ("AttachMode", if view.attach_mode.is_empty() { "- (not attached)".into() } else { view.attach_mode.clone() }),
            ("AuditMode", if view.audit_mode { "on" } else { "off" }.into()),
            ("Path", view.path.clone()),
        ])
    })
}

pub async fn stats(ctx: &Ctx) -> Result<String> {
    let c = ctx.reader().await?;
    let mut list = c.manager.get_statistics().await?;
    list.sort_by(|a, b| (a.0, &a.2, &a.3).cmp(&(b.0, &b.2, &b.3)));
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|(ifindex, name, direction, reason, count)| {
            json!({"ifindex": ifindex, "name": name, "direction": direction, "reason": reason, "count": count})
        })
        .collect();
    ctx.emit(&rows, || {
        let mut t = Table::new(&["IFINDEX", "NAME", "DIRECTION", "REASON", "COUNT"]).right(0).right(4);
        for (ifindex, name, direction, reason, count) in &list {
            t.row(vec![ifindex.to_string(), or_dash(name), direction.clone(), reason.clone(), count.to_string()]);
        }
        t.render()
    })
}

pub async fn reload(ctx: &Ctx) -> Result<String> {
    let c = ctx.writer().await?;
    c.reload().await?;
    let revision = c.manager.policy_revision().await?;
    ctx.emit(json!({"policy_revision": revision}), || format!("reloaded; policy revision {revision}\n"))
}

pub async fn audit(ctx: &Ctx, args: &AuditArgs) -> Result<String> {
    let c = ctx.writer().await?;
    let enabled = args.mode == OnOff::On;
    match &args.link {
        Some(name) => {
            let link = c.link_by_name(name).await?;
            c.set_link_audit_mode(&link, enabled, args.persist).await?;
        }
        None => c.set_audit_mode(enabled, args.persist).await?,
    }
    let state = if enabled { "on" } else { "off" };
    let scope = match &args.link {
        Some(n) => format!("for {n}"),
        None => "globally".into(),
    };
    let kept = if args.persist { ", kept across restarts" } else { "" };
    ctx.emit(json!({"audit_mode": enabled, "link": args.link, "persist": args.persist}), || {
        format!("audit mode {state} {scope}{kept}\n")
    })
}

pub async fn policy(ctx: &Ctx, cmd: &PolicyCmd) -> Result<String> {
    match cmd {
        PolicyCmd::List => policy_list(ctx).await,
        PolicyCmd::Show { name } => {
            let c = ctx.reader().await?;
            let mut yaml = c.manager.get_policy(name).await?;
            // What the daemon made of it (active or not, rules inert here),
            // as comments: the output stays the YAML as applied.
            let reason = c.manager.list_policies().await?.into_iter().find(|p| &p.0 == name).map(|p| p.2).unwrap_or_default();
            ctx.emit(json!({"name": name, "yaml": yaml, "reason": reason}), move || {
                if !yaml.ends_with('\n') {
                    yaml.push('\n');
                }
                let header: String = reason.lines().map(|l| format!("# {l}\n")).collect();
                header + &yaml
            })
        }
        // `main` runs it offline, without connecting.
        PolicyCmd::Validate { .. } => Err(Failure::error("internal: policy validate is an offline command")),
        PolicyCmd::Apply(args) => policy_apply(ctx, args).await,
        PolicyCmd::Remove { name, persist } => {
            let c = ctx.writer().await?;
            let mut opts: Options<'_> = HashMap::new();
            opts.insert(options::PERSIST, Value::from(*persist));
            let revision = c.remove_policy(name, opts).await?;
            ctx.emit(json!({"name": name, "revision": revision}), || format!("removed policy {name:?}: revision {revision}\n"))
        }
        PolicyCmd::Confirm { revision } => {
            let c = ctx.writer().await?;
            let revision = match revision {
                Some(r) => *r,
                None => match pending(c.manager.pending_confirm().await?) {
                    Some((r, _)) => r,
                    None => return Err(Failure::error("nothing to confirm: no policy change is awaiting confirmation")),
                },
            };
            c.confirm_policy(revision).await?;
            ctx.emit(json!({"revision": revision}), || format!("confirmed revision {revision}\n"))
        }
        PolicyCmd::Rollback => {
            let c = ctx.writer().await?;
            let undone = pending(c.manager.pending_confirm().await?).map(|(r, _)| r);
            c.rollback_policy().await?;
            let now = c.manager.policy_revision().await?;
            ctx.emit(json!({"rolled_back": undone, "policy_revision": now}), || match undone {
                Some(r) => format!("rolled back revision {r}; policy revision is now {now}\n"),
                None => format!("rolled back; policy revision is now {now}\n"),
            })
        }
    }
}

async fn policy_list(ctx: &Ctx) -> Result<String> {
    let c = ctx.reader().await?;
    let list = c.manager.list_policies().await?;
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|(name, source, reason, active)| json!({"name": name, "source": source, "reason": reason, "active": active}))
        .collect();
    ctx.emit(&rows, || {
        let mut t = Table::new(&["NAME", "ACTIVE", "SOURCE", "REASON"]);
        for (name, source, reason, active) in &list {
            t.row(vec![name.clone(), yes_no(*active), source.clone(), reason.clone()]);
        }
        t.render()
    })
}

/// The policy text of `file` (`-` is standard input) and the default name.
fn read_policy(file: &Path) -> Result<(String, Option<String>)> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| Failure::error(format!("reading standard input: {e}")))?;
        return Ok((text, None));
    }
    let text = std::fs::read_to_string(file).map_err(|e| Failure::error(format!("reading {}: {e}", file.display())))?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty());
    Ok((text, stem))
}

async fn policy_apply(ctx: &Ctx, args: &ApplyArgs) -> Result<String> {
    let (yaml, stem) = read_policy(&args.file)?;
    let name = match (&args.name, stem) {
        (Some(n), _) => n.clone(),
        (None, Some(s)) => s,
        (None, None) => return Err(Failure::usage("a policy read from standard input needs --name")),
    };
    let c = ctx.writer().await?;
    let mut opts: Options<'_> = HashMap::new();
    opts.insert(options::PERSIST, Value::from(args.persist));
    if let Some(d) = args.confirm {
        opts.insert(options::CONFIRM_TIMEOUT_SEC, Value::from(cli::confirm_seconds(d)));
    }
    let requested = SystemTime::now();
    let revision = c.apply_policy(&name, &yaml, opts).await?;
    let pend = match args.confirm {
        None => None,
        // The daemon's deadline when it reports this revision pending, ours otherwise.
        Some(d) => Some(match pending(c.manager.pending_confirm().await?) {
            Some((r, deadline)) if r == revision => (r, deadline),
            _ => (revision, requested + d),
        }),
    };
    ctx.emit(json!({"name": name, "revision": revision, "pending_confirm": pending_json(pend)}), || match pend {
        None => format!("applied policy {name:?}: revision {revision}\n"),
        Some((r, deadline)) => format!(
            "applied policy {name:?}: revision {r}, awaiting confirmation\n\
             It is rolled back at {} unless confirmed. To keep it, run:\n  hostfwdctl policy confirm {r}\n",
            human_deadline(deadline)
        ),
    })
}
