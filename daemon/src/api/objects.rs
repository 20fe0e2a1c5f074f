//! The two D-Bus interfaces. Objects hold a [`Handle`], never state: every
//! property reads the published snapshot, every change is a request to the
//! main loop. Member names are spelled out (`name = "…"`) so that the wire
//! names do not depend on zbus's case conversion; the shipped introspection
//! XML (`dbus/*.xml`) is checked against what these produce.

use std::collections::HashMap;

use hostfwd_dbus::Error as BusError;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedFd, OwnedObjectPath, Value};
use zbus::{interface, Connection};

use super::gate::Gate;
use super::args::{apply_options, invalid_args, link_name, policy_name, remove_options, Options};
use super::monitor::{self, Filter};
use super::{polkit, stats};
use crate::datapath::Paths;
use crate::links::Ifindex;
use crate::manager::{self, Handle, LinkInfo};

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
        let strict = self.handle.snapshot().strict_policies;
        if yaml.len() > crate::policy::cilium::MAX_SOURCE_BYTES {
            return Ok(manager::validate_policy_with("<input>", &yaml, strict));
        }
        self.gate.run(conn, &hdr, "ValidatePolicy", move || manager::validate_policy_with("<input>", &yaml, strict)).await
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
    /// run before it on its hooks, actions on it that failed or were held
    /// back in the last pass), empty when nothing.
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

/// Every Link property but the constant `Ifindex`, as the bus carries it:
/// the one list `PropertiesChanged` is computed from (the getters above
/// are zbus's; a test checks this list against the interface's XML).
fn link_values(l: &LinkInfo) -> [(&'static str, Value<'static>); 11] {
    [
        ("Name", Value::from(l.name.clone())),
        ("Kind", Value::from(l.kind.clone())),
        ("Role", Value::from(l.role.clone())),
        ("Reason", Value::from(l.reason.clone())),
        ("Lower", Value::from(l.lower as i32)),
        ("Controller", Value::from(l.controller as i32)),
        ("Addresses", Value::from(l.addresses.clone())),
        ("AllowedVlans", Value::from(l.allowed_vlans.clone())),
        ("AttachMode", Value::from(l.attach_mode.clone())),
        ("AuditMode", Value::from(l.audit)),
        ("Problem", Value::from(l.problem.clone())),
    ]
}

/// The values of the Link properties that differ between `old` and `new`.
pub fn link_changes(old: &LinkInfo, new: &LinkInfo) -> HashMap<&'static str, Value<'static>> {
    link_values(old).into_iter().zip(link_values(new)).filter(|(o, n)| o.1 != n.1).map(|(_, n)| n).collect()
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

    #[test]
    fn the_changed_link_properties_are_every_property_of_the_interface() {
        let xml = include_str!("../../../dbus/org.hostfwd.Firewall1.Link.xml");
        let mut declared: Vec<&str> =
            xml.split("<property name=\"").skip(1).filter_map(|p| p.split('"').next()).filter(|n| *n != "Ifindex").collect();
        let info = LinkInfo {
            ifindex: Ifindex::new(2).expect("non-zero"),
            name: "eth0".into(),
            kind: "physical".into(),
            role: "enforce".into(),
            reason: String::new(),
            lower: 0,
            controller: 0,
            addresses: Vec::new(),
            allowed_vlans: Vec::new(),
            attach_mode: "tcx".into(),
            audit: false,
            link_audit: false,
            problem: String::new(),
        };
        let mut listed: Vec<&str> = link_values(&info).iter().map(|(n, _)| *n).collect();
        declared.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, declared);
        let mut other = info.clone();
        other.problem = "x".into();
        other.lower = 3;
        let changed = link_changes(&info, &other);
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(changed.get("Lower"), Some(&Value::from(3i32)));
    }
}
