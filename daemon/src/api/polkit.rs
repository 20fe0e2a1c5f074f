//! The one place where the API asks polkit. Every mutating method (and
//! `OpenMonitor`, which reveals traffic) calls [`authorize`] with one of the
//! action ids below before it does anything; the ids are those of the
//! shipped `polkit/org.hostfwd.Firewall1.policy` (a test keeps both equal).
//!
//! The subject is the caller's unique bus name (`system-bus-name`), never
//! the daemon's own process. Interaction (a password prompt through an
//! authentication agent) is allowed only when the caller set
//! ALLOW_INTERACTIVE_AUTHORIZATION on its message. Anything other than a
//! clear "authorized" — including polkit being unreachable — is a refusal.

use std::collections::HashMap;

use hostfwd_dbus::Error as BusError;
use zbus::message::{Flags, Header};
use zbus::proxy::CacheProperties;
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

/// `ApplyPolicy`, `RemovePolicy`, `ConfirmPolicy`, `RollbackPolicy`.
pub const MANAGE_POLICY: &str = "org.hostfwd.Firewall1.manage-policy";
/// `SetAuditMode` on the manager and on a link.
pub const SET_AUDIT_MODE: &str = "org.hostfwd.Firewall1.set-audit-mode";
/// `Reload`.
pub const RELOAD: &str = "org.hostfwd.Firewall1.reload";
/// `OpenMonitor`.
pub const MONITOR: &str = "org.hostfwd.Firewall1.monitor";

/// Every action id the daemon checks.
pub const ACTIONS: [&str; 4] = [MANAGE_POLICY, SET_AUDIT_MODE, RELOAD, MONITOR];

/// Succeeds when polkit authorizes the sender of the call `hdr` for
/// `action`; otherwise `AccessDenied`, or `InteractiveAuthorizationRequired`
/// when polkit could ask for credentials but the caller did not allow it.
pub async fn authorize(conn: &Connection, hdr: &Header<'_>, action: &str) -> Result<(), BusError> {
    let interactive = hdr.primary().flags().contains(Flags::AllowInteractiveAuth);
    let denied = |why: String| {
        tracing::info!(action, sender = ?hdr.sender().map(|s| s.to_string()), "refused: {why}");
        BusError::AccessDenied(format!("not authorized for {action}: {why}"))
    };
    let subject = Subject::new_for_message_header(hdr).map_err(|e| denied(format!("no subject: {e}")))?;
    let authority = AuthorityProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| denied(format!("polkit unreachable: {e}")))?;
    let flags = if interactive { CheckAuthorizationFlags::AllowUserInteraction.into() } else { Default::default() };
    let details: HashMap<&str, &str> = HashMap::new();
    let result = authority
        .check_authorization(&subject, action, &details, flags, "")
        .await
        .map_err(|e| denied(format!("polkit check failed: {e}")))?;
    if result.is_authorized {
        tracing::debug!(action, sender = ?hdr.sender().map(|s| s.to_string()), "authorized");
        Ok(())
    } else if result.is_challenge && !interactive {
        tracing::info!(action, sender = ?hdr.sender().map(|s| s.to_string()), "refused: interactive authorization required");
        Err(BusError::InteractiveAuthorizationRequired(format!(
            "{action} needs authentication: call again with interactive authorization allowed"
        )))
    } else {
        Err(denied("polkit said no".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The action ids of the shipped policy file, in file order.
    fn shipped_actions() -> Vec<String> {
        let text = include_str!("../../../polkit/org.hostfwd.Firewall1.policy");
        text.split("<action id=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn action_ids_match_the_shipped_policy() {
        let mut shipped = shipped_actions();
        shipped.sort();
        let mut used: Vec<String> = ACTIONS.iter().map(|s| s.to_string()).collect();
        used.sort();
        assert_eq!(used, shipped);
        assert!(ACTIONS.iter().all(|a| a.starts_with("org.hostfwd.Firewall1.")));
    }
}
