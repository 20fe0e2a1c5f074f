//! Client proxies for `org.hostfwd.Firewall1.Manager` and `.Link` (zbus
//! `#[proxy]`; async, for tokio).
//!
//! Every member carries its D-Bus name explicitly, so that the wire names
//! do not depend on zbus's case conversion and can be grepped.
//!
//! Methods return [`crate::Error`]: hostfwd's own conditions
//! (`org.hostfwd.Firewall1.Error.*`) and authorization refusals come back
//! as their variants, anything else as [`crate::Error::ZBus`].
//!
//! Mutating methods (and `OpenMonitor`, which reveals traffic) are declared
//! with `allow_interactive_auth`: the message carries the
//! ALLOW_INTERACTIVE_AUTHORIZATION flag, so that polkit may ask the user
//! for a password through an authentication agent. A client that must
//! never block on a prompt (`hostfwdctl --no-ask-password`) sends the same
//! call without the flag through [`call_without_interaction`], with the
//! member names of [`member`].
//!
//! ```no_run
//! # async fn f() -> Result<(), hostfwd_dbus::Error> {
//! let conn = zbus::Connection::system().await?;
//! let manager = hostfwd_dbus::proxy::ManagerProxy::new(&conn).await?;
//! for (ifindex, name, path) in manager.list_links().await? {
//!     let link = hostfwd_dbus::proxy::LinkProxy::builder(&conn).path(path)?.build().await?;
//!     println!("{ifindex} {name} {}", link.role().await?);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zbus::proxy;
use zbus::zvariant::{DynamicType, OwnedFd, OwnedObjectPath, Value};

use crate::Error;

/// `a{sv}` arguments (`ApplyPolicy` / `RemovePolicy` options, the
/// `OpenMonitor` filter); keys in [`crate::options`] and [`crate::monitor`].
pub type Options<'a> = HashMap<&'a str, Value<'a>>;

/// The D-Bus member names of the methods declared below, for calls made
/// through [`call_without_interaction`].
pub mod member {
    pub const APPLY_POLICY: &str = "ApplyPolicy";
    pub const REMOVE_POLICY: &str = "RemovePolicy";
    pub const CONFIRM_POLICY: &str = "ConfirmPolicy";
    pub const ROLLBACK_POLICY: &str = "RollbackPolicy";
    pub const SET_AUDIT_MODE: &str = "SetAuditMode";
    pub const RELOAD: &str = "Reload";
    pub const OPEN_MONITOR: &str = "OpenMonitor";
}

#[proxy(
    interface = "org.hostfwd.Firewall1.Manager",
    default_service = "org.hostfwd.Firewall1",
    default_path = "/org/hostfwd/Firewall1",
    gen_blocking = false
)]
pub trait Manager {
    /// The daemon's version.
    #[zbus(property, name = "Version")]
    fn version(&self) -> Result<String, Error>;

    /// `starting`, `enforcing`, `audit`, `degraded` or `not-enforcing`.
    #[zbus(property, name = "State")]
    fn state(&self) -> Result<String, Error>;

    /// Why the state is `degraded` or `not-enforcing`, one problem each.
    #[zbus(property, name = "Problems")]
    fn problems(&self) -> Result<Vec<String>, Error>;

    /// Global audit mode: nothing is dropped, would-be drops are reported.
    #[zbus(property, name = "AuditMode")]
    fn audit_mode(&self) -> Result<bool, Error>;

    #[zbus(property, name = "PolicyRevision")]
    fn policy_revision(&self) -> Result<u64, Error>;

    /// (revision, deadline in CLOCK_REALTIME µs); zeros when nothing is
    /// awaiting confirmation.
    #[zbus(property, name = "PendingConfirm")]
    fn pending_confirm(&self) -> Result<(u64, u64), Error>;

    /// `tcx` or `tc`.
    #[zbus(property, name = "AttachMode")]
    fn attach_mode(&self) -> Result<String, Error>;

    /// (ifindex, name, object path) of every link the daemon knows.
    #[zbus(name = "ListLinks")]
    fn list_links(&self) -> Result<Vec<(i32, String, OwnedObjectPath)>, Error>;

    /// (ifindex, object path); `NoSuchLink` when there is none.
    #[zbus(name = "GetLinkByName")]
    fn get_link_by_name(&self, name: &str) -> Result<(i32, OwnedObjectPath), Error>;

    /// (name, source, reason, active) of every policy source.
    #[zbus(name = "ListPolicies")]
    fn list_policies(&self) -> Result<Vec<(String, String, String, bool)>, Error>;

    /// The YAML text of a policy source; `NoSuchPolicy` when there is none.
    #[zbus(name = "GetPolicy")]
    fn get_policy(&self, name: &str) -> Result<String, Error>;

    /// Every problem of `yaml` (each naming line and field); empty = valid.
    #[zbus(name = "ValidatePolicy")]
    fn validate_policy(&self, yaml: &str) -> Result<Vec<String>, Error>;

    /// Adds or replaces the policy source `name`; returns the new revision.
    /// Options: `persist` b, `confirm-timeout-sec` u.
    #[zbus(name = "ApplyPolicy", allow_interactive_auth)]
    fn apply_policy(&self, name: &str, yaml: &str, options: Options<'_>) -> Result<u64, Error>;

    /// Removes the policy source `name`; returns the new revision.
    /// Options: `persist` b.
    #[zbus(name = "RemovePolicy", allow_interactive_auth)]
    fn remove_policy(&self, name: &str, options: Options<'_>) -> Result<u64, Error>;

    /// Keeps the change `revision` that awaits confirmation.
    #[zbus(name = "ConfirmPolicy", allow_interactive_auth)]
    fn confirm_policy(&self, revision: u64) -> Result<(), Error>;

    /// Undoes the change awaiting confirmation now.
    #[zbus(name = "RollbackPolicy", allow_interactive_auth)]
    fn rollback_policy(&self) -> Result<(), Error>;

    /// The global audit mode; `persist` also writes it to the state directory.
    #[zbus(name = "SetAuditMode", allow_interactive_auth)]
    fn set_audit_mode(&self, enabled: bool, persist: bool) -> Result<(), Error>;

    /// Reads the permanent policy set again (runtime changes are dropped).
    #[zbus(name = "Reload", allow_interactive_auth)]
    fn reload(&self) -> Result<(), Error>;

    /// (ifindex, name, direction, reason, count) of every drop counter.
    #[zbus(name = "GetStatistics")]
    fn get_statistics(&self) -> Result<Vec<(i32, String, String, String, u64)>, Error>;

    /// A file descriptor streaming one JSON event per line. Filter keys
    /// `link`, `reason`, `audit` ([`crate::monitor`]).
    #[zbus(name = "OpenMonitor", allow_interactive_auth)]
    fn open_monitor(&self, filter: Options<'_>) -> Result<OwnedFd, Error>;

    /// JSON of the whole state.
    #[zbus(name = "Describe")]
    fn describe(&self) -> Result<String, Error>;

    #[zbus(signal, name = "PolicyApplied")]
    fn policy_applied(&self, revision: u64) -> zbus::Result<()>;

    /// `revision` is the change that was undone.
    #[zbus(signal, name = "PolicyRolledBack")]
    fn policy_rolled_back(&self, revision: u64, reason: &str) -> zbus::Result<()>;

    #[zbus(signal, name = "LinkRoleChanged")]
    fn link_role_changed(&self, ifindex: i32, name: &str, role: &str, reason: &str) -> zbus::Result<()>;
}

/// One link object, at [`crate::link_path`]`(ifindex)` (build it with
/// `LinkProxy::builder(&conn).path(path)?`).
#[proxy(interface = "org.hostfwd.Firewall1.Link", default_service = "org.hostfwd.Firewall1", gen_blocking = false)]
pub trait Link {
    #[zbus(property, name = "Ifindex")]
    fn ifindex(&self) -> Result<i32, Error>;

    #[zbus(property, name = "Name")]
    fn name(&self) -> Result<String, Error>;

    /// `physical`, `bond`, `vlan`, `veth`, …
    #[zbus(property, name = "Kind")]
    fn kind(&self) -> Result<String, Error>;

    /// `enforce`, `vlan-guard` or `ignored`.
    #[zbus(property, name = "Role")]
    fn role(&self) -> Result<String, Error>;

    /// Why the link has its role.
    #[zbus(property, name = "Reason")]
    fn reason(&self) -> Result<String, Error>;

    /// A VLAN's lower device, 0 when none.
    #[zbus(property, name = "Lower")]
    fn lower(&self) -> Result<i32, Error>;

    /// The bond or bridge this link is a port of, 0 when none.
    #[zbus(property, name = "Controller")]
    fn controller(&self) -> Result<i32, Error>;

    /// Addresses with prefix length.
    #[zbus(property, name = "Addresses")]
    fn addresses(&self) -> Result<Vec<String>, Error>;

    /// VIDs admitted on this link (a VLAN guard).
    #[zbus(property, name = "AllowedVlans")]
    fn allowed_vlans(&self) -> Result<Vec<u16>, Error>;

    /// `tcx` or `tc` when hostfwd's programs are attached, empty otherwise.
    #[zbus(property, name = "AttachMode")]
    fn attach_mode(&self) -> Result<String, Error>;

    /// Effective audit mode on this link.
    #[zbus(property, name = "AuditMode")]
    fn audit_mode(&self) -> Result<bool, Error>;

    /// Other programs that run before hostfwd on this link's hooks, and
    /// actions on this link that failed or were held back in the last
    /// reconcile pass (with the error); empty when none.
    #[zbus(property, name = "Problem")]
    fn problem(&self) -> Result<String, Error>;

    /// Audit mode for this link alone.
    #[zbus(name = "SetAuditMode", allow_interactive_auth)]
    fn set_audit_mode(&self, enabled: bool, persist: bool) -> Result<(), Error>;

    /// JSON of the link.
    #[zbus(name = "Describe")]
    fn describe(&self) -> Result<String, Error>;
}

/// Calls `member` on `proxy` without the ALLOW_INTERACTIVE_AUTHORIZATION
/// flag: polkit then answers at once, and a refusal that a password could
/// have lifted comes back as
/// [`Error::InteractiveAuthorizationRequired`]. `body` is the argument
/// tuple, as the declared method takes it.
pub async fn call_without_interaction<B, R>(proxy: &zbus::Proxy<'_>, member: &str, body: &B) -> Result<R, Error>
where
    B: Serialize + DynamicType,
    R: DeserializeOwned + zbus::zvariant::Type,
{
    // No flag at all (the default `BitFlags` is empty): a reply is expected,
    // interaction is not allowed.
    let reply: Option<R> = proxy.call_with_flags(member, Default::default(), body).await?;
    reply.ok_or_else(|| Error::ZBus(zbus::Error::InvalidReply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::proxy::Defaults;

    /// The macro needs literals; they must be the contract's constants.
    #[test]
    fn proxy_defaults_are_the_contract_names() {
        let name = |n: &Option<zbus::names::InterfaceName<'static>>| n.as_ref().map(ToString::to_string);
        assert_eq!(name(ManagerProxy::INTERFACE).as_deref(), Some(crate::MANAGER_INTERFACE));
        assert_eq!(name(LinkProxy::INTERFACE).as_deref(), Some(crate::LINK_INTERFACE));
        for dest in [ManagerProxy::DESTINATION, LinkProxy::DESTINATION] {
            assert_eq!(dest.as_ref().map(ToString::to_string).as_deref(), Some(crate::BUS_NAME));
        }
        assert_eq!(ManagerProxy::PATH.as_ref().map(ToString::to_string).as_deref(), Some(crate::MANAGER_PATH));
        assert!(LinkProxy::PATH.is_none());
    }
}
