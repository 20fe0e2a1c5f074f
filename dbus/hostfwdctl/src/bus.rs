//! The connection to the daemon and the calls that change something (with
//! or without interactive authorization).

use std::time::Duration;

use hostfwd_dbus::proxy::{self, member, LinkProxy, ManagerProxy, Options};
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedFd, OwnedObjectPath};
use zbus::Connection;

use crate::fail::{Failure, Result};

/// How long a call may take before hostfwd counts as not answering; with a
/// password prompt on the way, the person typing gets longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const INTERACTIVE_CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// A connected client of the daemon.
pub struct Client {
    pub conn: Connection,
    pub manager: ManagerProxy<'static>,
    /// Send mutating calls with ALLOW_INTERACTIVE_AUTHORIZATION.
    ask: bool,
    /// A polkit agent for this terminal while the client lives.
    _agent: Option<crate::agent::Agent>,
}

/// Connects to `address` (the system bus when `None`).
pub async fn connect(address: Option<&str>, timeout: Duration) -> Result<Connection> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a),
        None => zbus::connection::Builder::system(),
    }
    .map_err(|e| Failure::connect(address, e))?;
    builder.method_timeout(timeout).build().await.map_err(|e| Failure::connect(address, e))
}

/// Calls `$method` on `$proxy` through the typed proxy (which allows
/// interactive authorization) when the client may ask for a password, and
/// as the same member without that flag otherwise; `?` on the result.
macro_rules! mutate {
    ($client:expr, $proxy:expr, $method:ident, $member:expr, ($($arg:expr),*)) => {
        if $client.ask {
            $proxy.$method($($arg),*).await?
        } else {
            proxy::call_without_interaction($proxy.inner(), $member, &($($arg,)*)).await?
        }
    };
}

impl Client {
    /// Connects; `ask` allows password prompts on mutating calls (and
    /// starts a terminal polkit agent when one may be needed).
    pub async fn connect(address: Option<&str>, ask: bool, mutating: bool) -> Result<Client> {
        let prompt = ask && mutating && crate::agent::Agent::wanted();
        let conn = connect(address, if prompt { INTERACTIVE_CALL_TIMEOUT } else { CALL_TIMEOUT }).await?;
        // Once the bus is there (the agent registers on it).
        let agent = if prompt { crate::agent::Agent::start(address) } else { None };
        // One-shot reads: no cache (it would subscribe to changes and could
        // lag behind a change this client just made).
        let manager = ManagerProxy::builder(&conn).cache_properties(CacheProperties::No).build().await?;
        Ok(Client { conn, manager, ask, _agent: agent })
    }

    /// The proxy of the link object at `path`.
    pub async fn link_at(&self, path: OwnedObjectPath) -> Result<LinkProxy<'static>> {
        Ok(LinkProxy::builder(&self.conn).path(path)?.cache_properties(CacheProperties::No).build().await?)
    }

    /// The proxy of the link named `name` (`no such link` when none).
    pub async fn link_by_name(&self, name: &str) -> Result<LinkProxy<'static>> {
        let (_, path) = self.manager.get_link_by_name(name).await?;
        self.link_at(path).await
    }

    pub async fn apply_policy(&self, name: &str, yaml: &str, options: Options<'_>) -> Result<u64> {
        Ok(mutate!(self, self.manager, apply_policy, member::APPLY_POLICY, (name, yaml, options)))
    }

    pub async fn remove_policy(&self, name: &str, options: Options<'_>) -> Result<u64> {
        Ok(mutate!(self, self.manager, remove_policy, member::REMOVE_POLICY, (name, options)))
    }

    pub async fn confirm_policy(&self, revision: u64) -> Result<()> {
        mutate!(self, self.manager, confirm_policy, member::CONFIRM_POLICY, (revision));
        Ok(())
    }

    pub async fn rollback_policy(&self) -> Result<()> {
        mutate!(self, self.manager, rollback_policy, member::ROLLBACK_POLICY, ());
        Ok(())
    }

    pub async fn set_audit_mode(&self, enabled: bool, persist: bool) -> Result<()> {
        mutate!(self, self.manager, set_audit_mode, member::SET_AUDIT_MODE, (enabled, persist));
        Ok(())
    }

    pub async fn set_link_audit_mode(&self, link: &LinkProxy<'_>, enabled: bool, persist: bool) -> Result<()> {
        mutate!(self, link, set_audit_mode, member::SET_AUDIT_MODE, (enabled, persist));
        Ok(())
    }

    pub async fn reload(&self) -> Result<()> {
        mutate!(self, self.manager, reload, member::RELOAD, ());
        Ok(())
    }

    pub async fn open_monitor(&self, filter: Options<'_>) -> Result<OwnedFd> {
        Ok(mutate!(self, self.manager, open_monitor, member::OPEN_MONITOR, (filter)))
    }
}
