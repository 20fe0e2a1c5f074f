//! The two D-Bus interfaces. Objects hold a [`Handle`], never state: every
//! property reads the published snapshot, every change is a request to the
//! main loop. Member names are spelled out (`name = "…"`) so that the wire
//! names do not depend on zbus's case conversion; the shipped introspection
//! XML (`dbus/*.xml`) is checked against what these produce.

use std::collections::HashMap;

use hostfwd_dbus::Error as BusError;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedFd, OwnedObjectPath, OwnedValue, Value};
use zbus::{interface, Connection};

use super::gate::Gate;
use super::monitor::{self, Filter};
use super::{polkit, stats};
use crate::datapath::Paths;
use crate::links::Ifindex;
use crate::policy_store as store;
use crate::manager::{self, ApplyOptions, Handle, LinkInfo};

/// `a{sv}` arguments.
pub type Options = HashMap<String, OwnedValue>;

/// The core's refusals, one to one onto the bus's.
pub fn bus_error(e: manager::Error) -> BusError {
    match e {
        manager::Error::InvalidArgs(m) => invalid_args(m),
        manager::Error::InvalidPolicy(m) => BusError::InvalidPolicy(m),
        manager::Error::NoSuchLink(m) => BusError::NoSuchLink(format!("no link {m}")),
        manager::Error::NoSuchPolicy(m) => BusError::NoSuchPolicy(format!("no policy named {m:?}")),
        e @ manager::Error::NoPendingConfirm(_) => BusError::NoPendingConfirm(e.to_string()),
        manager::Error::Busy(m) => BusError::Busy(m),
        manager::Error::Failed(m) => BusError::Failed(m),
    }
}

pub fn invalid_args(m: String) -> BusError {
    zbus::fdo::Error::InvalidArgs(m).into()
}

/// A `b` option.
fn opt_bool(key: &str, v: &Value<'_>) -> Result<bool, BusError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(invalid_args(format!("option {key:?} must be a boolean (b), not {}", other.value_signature()))),
    }
}

/// An unsigned option (`u`; `t`, `q`, `y` and non-negative `i`/`x` are
/// accepted too, for clients whose integers default to another type).
pub fn opt_uint(key: &str, v: &Value<'_>) -> Result<u64, BusError> {
    let n: Option<u64> = match v {
        Value::U8(n) => Some((*n).into()),
        Value::U16(n) => Some((*n).into()),
        Value::U32(n) => Some((*n).into()),
        Value::U64(n) => Some(*n),
        Value::I16(n) => u64::try_from(*n).ok(),
        Value::I32(n) => u64::try_from(*n).ok(),
        Value::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    // The signature, not the value: the value may be anything, of any size.
    n.ok_or_else(|| invalid_args(format!("option {key:?} must be an unsigned integer (u), not {} of that type or sign", v.value_signature())))
}

/// `ApplyPolicy` options.
pub fn apply_options(options: &Options) -> Result<ApplyOptions, BusError> {
    let mut out = ApplyOptions::default();
    for (k, v) in options {
        match k.as_str() {
            hostfwd_dbus::options::PERSIST => out.persist = opt_bool(k, v)?,
            hostfwd_dbus::options::CONFIRM_TIMEOUT_SEC => {
                let secs = opt_uint(k, v)?;
                let max = hostfwd_dbus::options::MAX_CONFIRM_TIMEOUT_SEC;
                if secs > max {
                    return Err(invalid_args(format!("option {k:?} must be at most {max} (a day), not {secs}")));
                }
                out.confirm_timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            other => return Err(invalid_args(format!("unknown option {:?} (known: persist, confirm-timeout-sec)", shown(other)))),
        }
    }
    Ok(out)
}

/// `RemovePolicy` options: whether to persist.
pub fn remove_options(options: &Options) -> Result<bool, BusError> {
    let mut persist = false;
    for (k, v) in options {
        match k.as_str() {
            hostfwd_dbus::options::PERSIST => persist = opt_bool(k, v)?,
            other => return Err(invalid_args(format!("unknown option {:?} (known: persist)", shown(other)))),
        }
    }
    Ok(persist)
}

/// A caller's string in a message: at most 64 characters of it.
pub fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The `name` argument of the policy methods: a policy source name.
fn policy_name(name: &str) -> Result<(), BusError> {
    store::check_name(name).map_err(|_| {
        invalid_args(format!("argument \"name\": {:?} is not a policy name (1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-')", shown(name)))
    })
}

/// The `name` argument of `GetLinkByName`: a Linux interface name.
fn link_name(name: &str) -> Result<(), BusError> {
    // IFNAMSIZ - 1 bytes, no '/', ':' or white space (dev_valid_name()).
    let ok = (1..=15).contains(&name.len()) && name != "." && name != ".." && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    ok.then_some(()).ok_or_else(|| invalid_args(format!("argument \"name\": {:?} is not an interface name (1 to 15 bytes, no '/', ':' or spaces)", shown(name))))
}

fn object_path(ifindex: u32) -> OwnedObjectPath {
    // Always valid: `_` followed by letters and digits.
    OwnedObjectPath::try_from(hostfwd_dbus::link_path(ifindex)).unwrap_or_else(|_| unreachable!("link paths are valid"))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, BusError> {
    serde_json::to_string(v).map_err(|e| BusError::Failed(format!("serializing the state: {e}")))
}

/// `org.hostfwd.Firewall1.Manager` at `/org/hostfwd/Firewall1`.
pub struct Manager {
    pub handle: Handle,
    /// Bounds the open methods that cost work (`ValidatePolicy`, `GetStatistics`).
    pub gate: Gate,
    /// Where the pinned maps are (`GetStatistics` reads them).
    pub paths: Paths,
}

#[interface(name = "org.hostfwd.Firewall1.Manager")]
impl Manager {
    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"), name = "Version")]
    fn version(&self) -> String {
        self.handle.snapshot().version.to_string()
    }

    /// starting, enforcing, audit, degraded or not-enforcing.
    #[zbus(property, name = "State")]
    fn state(&self) -> String {
        self.handle.snapshot().state.name().to_string()
    }

    /// Why the state is degraded or not-enforcing, one problem each.
    #[zbus(property, name = "Problems")]
    fn problems(&self) -> Vec<String> {
        self.handle.snapshot().problems.clone()
    }

    /// Global audit mode.
    #[zbus(property, name = "AuditMode")]
    fn audit_mode(&self) -> bool {
        self.handle.snapshot().audit
    }

    /// Increments with every change of the policy in force.
    #[zbus(property, name = "PolicyRevision")]
    fn policy_revision(&self) -> u64 {
        self.handle.snapshot().policy_revision
    }

    /// (revision, deadline in CLOCK_REALTIME µs) of the change awaiting
    /// confirmation; zeros when none.
    #[zbus(property, name = "PendingConfirm")]
    fn pending_confirm(&self) -> (u64, u64) {
        pending(&self.handle.snapshot())
    }

    /// tcx or tc.
    #[zbus(property, name = "AttachMode")]
    fn attach_mode(&self) -> String {
        self.handle.snapshot().attach_mode.to_string()
    }

    /// (ifindex, name, object path) of every link.
    #[zbus(name = "ListLinks", out_args("links"))]
    fn list_links(&self) -> Vec<(i32, String, OwnedObjectPath)> {
        let s = self.handle.snapshot();
        s.links.values().map(|l| (l.ifindex.get() as i32, l.name.clone(), object_path(l.ifindex.get()))).collect()
    }

    /// The ifindex and object path of the link called `name`.
    #[zbus(name = "GetLinkByName", out_args("ifindex", "path"))]
    fn get_link_by_name(&self, name: String) -> Result<(i32, OwnedObjectPath), BusError> {
        link_name(&name)?;
        let s = self.handle.snapshot();
        let l = s.link_by_name(&name).ok_or_else(|| BusError::NoSuchLink(format!("no link named {name:?}")))?;
        Ok((l.ifindex.get() as i32, object_path(l.ifindex.get())))
    }

    /// (name, source, reason, active) of every policy source.
    #[zbus(name = "ListPolicies", out_args("policies"))]
    fn list_policies(&self) -> Vec<(String, String, String, bool)> {
        let s = self.handle.snapshot();
        s.policies.iter().map(|p| (p.name.clone(), p.source.clone(), p.reason.clone(), p.active)).collect()
    }

    /// The YAML text of the policy source called `name`.
    #[zbus(name = "GetPolicy", out_args("yaml"))]
    fn get_policy(&self, name: String) -> Result<String, BusError> {
        policy_name(&name)?;
        let s = self.handle.snapshot();
        let p = s.policy(&name).ok_or_else(|| BusError::NoSuchPolicy(format!("no policy named {name:?}")))?;
        Ok(p.yaml.clone())
    }

    /// Every problem of `yaml`, naming line and field; empty when valid.
    #[zbus(name = "ValidatePolicy", out_args("errors"))]
    async fn validate_policy(&self, yaml: String, #[zbus(header)] hdr: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<Vec<String>, BusError> {
        // Past the size bound the answer needs no parse: not worth a slot.
        if yaml.len() > crate::policy::cilium::MAX_SOURCE_BYTES {
            return Ok(manager::validate_policy("<input>", &yaml));
        }
        self.gate.run(conn, &hdr, "ValidatePolicy", move || manager::validate_policy("<input>", &yaml)).await
    }

    /// Adds or replaces the policy source `name`; returns the new revision.
    #[zbus(name = "ApplyPolicy", out_args("revision"))]
    async fn apply_policy(
        &self,
        name: String,
        yaml: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u64, BusError> {
        polkit::authorize(conn, &hdr, polkit::MANAGE_POLICY).await?;
        let options = apply_options(&options)?;
        policy_name(&name)?;
        self.handle.apply_policy(name, yaml, options).await.map_err(bus_error)
    }

    /// Removes the policy source `name`; returns the new revision.
    #[zbus(name = "RemovePolicy", out_args("revision"))]
    async fn remove_policy(
        &self,
        name: String,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u64, BusError> {
        polkit::authorize(conn, &hdr, polkit::MANAGE_POLICY).await?;
        let persist = remove_options(&options)?;
        policy_name(&name)?;
        self.handle.remove_policy(name, persist).await.map_err(bus_error)
    }

    /// Keeps the change `revision` that awaits confirmation.
    #[zbus(name = "ConfirmPolicy")]
    async fn confirm_policy(&self, revision: u64, #[zbus(header)] hdr: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<(), BusError> {
        polkit::authorize(conn, &hdr, polkit::MANAGE_POLICY).await?;
        self.handle.confirm(revision).await.map_err(bus_error)
    }

    /// Undoes the change awaiting confirmation now.
    #[zbus(name = "RollbackPolicy")]
    async fn rollback_policy(&self, #[zbus(header)] hdr: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<(), BusError> {
        polkit::authorize(conn, &hdr, polkit::MANAGE_POLICY).await?;
        self.handle.rollback().await.map(|_| ()).map_err(bus_error)
    }

    /// Global audit mode; `persist` keeps it across restarts.
    #[zbus(name = "SetAuditMode")]
    async fn set_audit_mode(
        &self,
        enabled: bool,
        persist: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), BusError> {
        polkit::authorize(conn, &hdr, polkit::SET_AUDIT_MODE).await?;
        self.handle.set_audit(None, enabled, persist).await.map_err(bus_error)
    }

    /// Reads the permanent policy set again (runtime changes are dropped).
    #[zbus(name = "Reload")]
    async fn reload(&self, #[zbus(header)] hdr: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<(), BusError> {
        polkit::authorize(conn, &hdr, polkit::RELOAD).await?;
        self.handle.reload().await.map_err(bus_error)
    }

    /// (ifindex, name, direction, reason, count) of every drop counter.
    #[zbus(name = "GetStatistics", out_args("statistics"))]
    async fn get_statistics(&self, #[zbus(header)] hdr: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<Vec<(i32, String, String, String, u64)>, BusError> {
        let (paths, snapshot) = (self.paths.clone(), self.handle.snapshot());
        let stats = self.gate.run(conn, &hdr, "GetStatistics", move || stats::read(&paths, &snapshot)).await?;
        let stats = stats.map_err(|e| BusError::Failed(e.to_string()))?;
        Ok(stats.into_iter().map(|s| (s.ifindex as i32, s.name, s.direction, s.reason, s.count)).collect())
    }

    /// A file descriptor streaming one JSON object per drop event.
    #[zbus(name = "OpenMonitor", out_args("fd"))]
    async fn open_monitor(&self, filter: Options, #[zbus(header)] hdr: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<OwnedFd, BusError> {
        polkit::authorize(conn, &hdr, polkit::MONITOR).await?;
        let filter = Filter::parse(&filter, &self.handle.snapshot())?;
        monitor::open(&self.handle, filter)
    }

    /// The daemon's whole state as JSON.
    #[zbus(name = "Describe", out_args("json"))]
    fn describe(&self) -> Result<String, BusError> {
        to_json(&*self.handle.snapshot())
    }

    /// A policy change took effect with this revision.
    #[zbus(signal, name = "PolicyApplied")]
    pub async fn policy_applied(emitter: &SignalEmitter<'_>, revision: u64) -> zbus::Result<()>;

    /// The change with this revision was undone, for `reason`.
    #[zbus(signal, name = "PolicyRolledBack")]
    pub async fn policy_rolled_back(emitter: &SignalEmitter<'_>, revision: u64, reason: &str) -> zbus::Result<()>;

    /// A link got a new role.
    #[zbus(signal, name = "LinkRoleChanged")]
    pub async fn link_role_changed(emitter: &SignalEmitter<'_>, ifindex: i32, name: &str, role: &str, reason: &str) -> zbus::Result<()>;
}

pub fn pending(s: &manager::Snapshot) -> (u64, u64) {
    s.pending_confirm.map(|p| (p.revision, manager::unix_us(p.deadline))).unwrap_or((0, 0))
}

/// `org.hostfwd.Firewall1.Link` at [`hostfwd_dbus::link_path`].
pub struct Link {
    pub handle: Handle,
    pub ifindex: Ifindex,
}

impl Link {
    fn info(&self) -> zbus::fdo::Result<LinkInfo> {
        self.handle
            .snapshot()
            .links
            .get(&self.ifindex)
            .cloned()
            .ok_or_else(|| zbus::fdo::Error::UnknownObject(format!("link {} is gone", self.ifindex)))
    }
}

#[interface(name = "org.hostfwd.Firewall1.Link")]
impl Link {
    #[zbus(property(emits_changed_signal = "const"), name = "Ifindex")]
    fn ifindex(&self) -> i32 {
        self.ifindex.get() as i32
    }

    #[zbus(property, name = "Name")]
    fn name(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.name)
    }

    /// physical, bond, vlan, veth, bridge, …
    #[zbus(property, name = "Kind")]
    fn kind(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.kind)
    }

    /// enforce, vlan-guard or ignored.
    #[zbus(property, name = "Role")]
    fn role(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.role)
    }

    /// Why the link has its role.
    #[zbus(property, name = "Reason")]
    fn reason(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.reason)
    }

    /// A VLAN's lower device (a veth's peer), 0 when none.
    #[zbus(property, name = "Lower")]
    fn lower(&self) -> zbus::fdo::Result<i32> {
        Ok(self.info()?.lower as i32)
    }

    /// The bond or bridge this link is a port of, 0 when none.
    #[zbus(property, name = "Controller")]
    fn controller(&self) -> zbus::fdo::Result<i32> {
        Ok(self.info()?.controller as i32)
    }

    /// Addresses with prefix length.
    #[zbus(property, name = "Addresses")]
    fn addresses(&self) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.info()?.addresses)
    }

    /// VLAN ids admitted on this link.
    #[zbus(property, name = "AllowedVlans")]
    fn allowed_vlans(&self) -> zbus::fdo::Result<Vec<u16>> {
        Ok(self.info()?.allowed_vlans)
    }

    /// tcx or tc while attached, empty otherwise.
    #[zbus(property, name = "AttachMode")]
    fn attach_mode(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.attach_mode)
    }

    /// Effective audit mode on this link (global or per link).
    #[zbus(property, name = "AuditMode")]
    fn audit_mode(&self) -> zbus::fdo::Result<bool> {
        Ok(self.info()?.audit)
    }

    /// What keeps hostfwd from deciding on this link (other programs that
    /// run before it on its hooks), empty when nothing.
    #[zbus(property, name = "Problem")]
    fn problem(&self) -> zbus::fdo::Result<String> {
        Ok(self.info()?.problem)
    }

    /// Audit mode on this link only; `persist` keeps it across restarts.
    #[zbus(name = "SetAuditMode")]
    async fn set_audit_mode(
        &self,
        enabled: bool,
        persist: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), BusError> {
        polkit::authorize(conn, &hdr, polkit::SET_AUDIT_MODE).await?;
        self.handle.set_audit(Some(self.ifindex), enabled, persist).await.map_err(bus_error)
    }

    /// This link as JSON.
    #[zbus(name = "Describe", out_args("json"))]
    fn describe(&self) -> Result<String, BusError> {
        to_json(&self.info()?)
    }
}

/// The values of the Link properties that differ between `old` and `new`.
pub fn link_changes(old: &LinkInfo, new: &LinkInfo) -> HashMap<&'static str, Value<'static>> {
    let mut c = HashMap::new();
    if old.name != new.name {
        c.insert("Name", Value::from(new.name.clone()));
    }
    if old.kind != new.kind {
        c.insert("Kind", Value::from(new.kind.clone()));
    }
    if old.role != new.role {
        c.insert("Role", Value::from(new.role.clone()));
    }
    if old.reason != new.reason {
        c.insert("Reason", Value::from(new.reason.clone()));
    }
    if old.lower != new.lower {
        c.insert("Lower", Value::from(new.lower as i32));
    }
    if old.controller != new.controller {
        c.insert("Controller", Value::from(new.controller as i32));
    }
    if old.addresses != new.addresses {
        c.insert("Addresses", Value::from(new.addresses.clone()));
    }
    if old.allowed_vlans != new.allowed_vlans {
        c.insert("AllowedVlans", Value::from(new.allowed_vlans.clone()));
    }
    if old.attach_mode != new.attach_mode {
        c.insert("AttachMode", Value::from(new.attach_mode.clone()));
    }
    if old.audit != new.audit {
        c.insert("AuditMode", Value::from(new.audit));
    }
    if old.problem != new.problem {
        c.insert("Problem", Value::from(new.problem.clone()));
    }
    c
}

/// The values of the Manager properties that differ between `old` and `new`.
pub fn manager_changes(old: &manager::Snapshot, new: &manager::Snapshot) -> HashMap<&'static str, Value<'static>> {
    let mut c = HashMap::new();
    if old.state != new.state {
        c.insert("State", Value::from(new.state.name().to_string()));
    }
    if old.problems != new.problems {
        c.insert("Problems", Value::from(new.problems.clone()));
    }
    if old.audit != new.audit {
        c.insert("AuditMode", Value::from(new.audit));
    }
    if old.policy_revision != new.policy_revision {
        c.insert("PolicyRevision", Value::from(new.policy_revision));
    }
    if old.pending_confirm != new.pending_confirm {
        c.insert("PendingConfirm", Value::from(pending(new)));
    }
    if old.attach_mode != new.attach_mode {
        c.insert("AttachMode", Value::from(new.attach_mode.to_string()));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, Value<'_>)]) -> Options {
        kv.iter().map(|(k, v)| (k.to_string(), OwnedValue::try_from(v.try_clone().expect("clone")).expect("owned"))).collect()
    }

    fn invalid(e: BusError, key: &str) {
        assert_eq!(e.error_name(), "org.freedesktop.DBus.Error.InvalidArgs");
        assert!(e.to_string().contains(&format!("{key:?}")), "names {key:?}: {e}");
    }

    #[test]
    fn confirm_timeouts_are_bounded() {
        let max = hostfwd_dbus::options::MAX_CONFIRM_TIMEOUT_SEC;
        let ok = apply_options(&opts(&[("confirm-timeout-sec", Value::from(max as u32))])).expect("a day");
        assert_eq!(ok.confirm_timeout, Some(std::time::Duration::from_secs(max)));
        for v in [Value::from(u32::MAX), Value::from(u64::MAX), Value::from(max + 1)] {
            invalid(apply_options(&opts(&[("confirm-timeout-sec", v)])).unwrap_err(), "confirm-timeout-sec");
        }
    }

    #[test]
    fn options_of_unknown_keys_or_wrong_types_name_the_key() {
        invalid(apply_options(&opts(&[("persist", Value::from(1u32))])).unwrap_err(), "persist");
        invalid(apply_options(&opts(&[("confirm-timeout-sec", Value::from("60"))])).unwrap_err(), "confirm-timeout-sec");
        invalid(apply_options(&opts(&[("confirm-timeout-sec", Value::from(-1i32))])).unwrap_err(), "confirm-timeout-sec");
        invalid(apply_options(&opts(&[("persits", Value::from(true))])).unwrap_err(), "persits");
        invalid(remove_options(&opts(&[("confirm-timeout-sec", Value::from(1u32))])).unwrap_err(), "confirm-timeout-sec");
        invalid(remove_options(&opts(&[("persist", Value::from("yes"))])).unwrap_err(), "persist");
    }

    #[test]
    fn names_are_checked_and_quoted_shortly() {
        for bad in ["", "../etc/passwd", "a b", &"x".repeat(65)] {
            invalid(policy_name(bad).unwrap_err(), "name");
        }
        policy_name("web.v2").expect("valid");
        for bad in ["", "a/b", "a:b", "sixteen-bytes-xx", ".", "a\tb"] {
            invalid(link_name(bad).unwrap_err(), "name");
        }
        link_name("bond0.1000").expect("valid");
        let e = policy_name(&"é".repeat(100_000)).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
