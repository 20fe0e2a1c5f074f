//! The D-Bus API (`org.hostfwd.Firewall1`) over a [`Handle`].
//!
//! - [`objects`]: the Manager object at `/org/hostfwd/Firewall1` and one
//!   Link object per link at [`hostfwd_dbus::link_path`]; an ObjectManager
//!   at `/org/hostfwd/Firewall1` announces the links;
//! - [`polkit`]: the authorization of every mutating method;
//! - [`monitor`]: `OpenMonitor`'s event streams;
//! - [`gate`]: the bounds on the open methods that cost work;
//! - [`stats`]: `GetStatistics` from the pinned counters;
//! - this module: connecting, and one task that follows the published
//!   snapshot (link objects added and removed, `PropertiesChanged` for what
//!   changed) and the notices (the Manager's signals).
//!
//! The objects are registered before the name is requested, so a client
//! that sees the name sees every object.

pub mod args;
pub mod gate;
pub mod monitor;
pub mod objects;
pub mod polkit;
pub mod stats;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use zbus::fdo::{ObjectManager, Properties, RequestNameFlags, RequestNameReply};
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;
use zbus::Connection;

use crate::config::Bus;
use crate::datapath::Paths;
use crate::links::Ifindex;
use crate::manager::{Handle, Notice, Snapshot};
use hostfwd_dbus::{BUS_NAME, LINK_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH};
use objects::{Link, Manager, ManagerSignals};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the {bus} bus: {source}")]
    Connect { bus: String, source: zbus::Error },
    #[error("serving {path}: {source}")]
    Serve { path: String, source: zbus::Error },
    #[error("requesting the name {BUS_NAME}: {source}")]
    RequestName { source: zbus::Error },
    #[error("the name {BUS_NAME} is owned by another process (is another hostfwd running?)")]
    NameTaken,
    #[error("starting the worker of the open calls: {source}")]
    Worker { source: std::io::Error },
}

/// Serves the API on `bus` (`Bus::None`: no API, `Ok(None)`). The objects
/// follow the handle's snapshot for as long as the daemon publishes one;
/// keep the returned connection for as long as the API should be there.
/// `paths` locates the pinned maps (`GetStatistics` reads them).
pub async fn serve(handle: Handle, bus: Bus, paths: Paths) -> Result<Option<Connection>, Error> {
    let (what, builder) = match &bus {
        Bus::None => return Ok(None),
        Bus::System => ("system".to_string(), zbus::connection::Builder::system()),
        Bus::Session => ("session".to_string(), zbus::connection::Builder::session()),
        Bus::Address(a) => (a.clone(), zbus::connection::Builder::address(a.as_str())),
    };
    let connect = |source| Error::Connect { bus: what.clone(), source };
    let conn = builder.map_err(connect)?.build().await.map_err(connect)?;

    let serve_err = |path: &str| {
        let path = path.to_string();
        move |source| Error::Serve { path, source }
    };
    let server = conn.object_server();
    let gate = gate::Gate::start().map_err(|source| Error::Worker { source })?;
    let manager = Manager { handle: handle.clone(), gate, paths };
    server.at(MANAGER_PATH, manager).await.map_err(serve_err(MANAGER_PATH))?;
    server.at(MANAGER_PATH, ObjectManager).await.map_err(serve_err(MANAGER_PATH))?;

    // The snapshot the link objects start from; later changes are diffed
    // against it, so nothing published in between is missed.
    let mut watch = handle.watch();
    let first = watch.borrow_and_update().clone();
    for ifindex in first.links.keys() {
        let path = hostfwd_dbus::link_path(ifindex.get());
        server.at(path.as_str(), Link { handle: handle.clone(), ifindex: *ifindex }).await.map_err(serve_err(&path))?;
    }
    let notices = handle.notices();

    let reply = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await
        .map_err(|source| Error::RequestName { source })?;
    if reply != RequestNameReply::PrimaryOwner && reply != RequestNameReply::AlreadyOwner {
        return Err(Error::NameTaken);
    }
    tracing::info!(bus = %what, name = BUS_NAME, "D-Bus API ready");

    tokio::spawn(follow_snapshot(conn.clone(), handle.clone(), watch, first));
    tokio::spawn(forward_notices(conn.clone(), notices));
    Ok(Some(conn))
}

/// Keeps the link objects and properties in step with the snapshot until
/// the daemon stops publishing.
async fn follow_snapshot(conn: Connection, handle: Handle, mut watch: tokio::sync::watch::Receiver<Arc<Snapshot>>, mut prev: Arc<Snapshot>) {
    while watch.changed().await.is_ok() {
        let next = watch.borrow_and_update().clone();
        publish(&conn, &handle, &prev, &next).await;
        prev = next;
    }
}

/// One step per link and one for the manager; a step that fails is logged
/// and does not keep the others from happening.
async fn publish(conn: &Connection, handle: &Handle, prev: &Snapshot, next: &Snapshot) {
    let server = conn.object_server();
    for ifindex in prev.links.keys().filter(|i| !next.links.contains_key(i)) {
        let path = hostfwd_dbus::link_path(ifindex.get());
        if let Err(e) = server.remove::<Link, _>(path.as_str()).await {
            tracing::warn!(%path, "removing a link object: {e}");
        }
    }
    for (ifindex, info) in &next.links {
        let path = hostfwd_dbus::link_path(ifindex.get());
        let done = match prev.links.get(ifindex) {
            None => server.at(path.as_str(), Link { handle: handle.clone(), ifindex: *ifindex }).await.map(|_| ()),
            Some(old) => properties_changed(conn, &path, LINK_INTERFACE, objects::link_changes(old, info)).await,
        };
        if let Err(e) = done {
            tracing::warn!(%path, "publishing a link on D-Bus: {e}");
        }
    }
    if let Err(e) = properties_changed(conn, MANAGER_PATH, MANAGER_INTERFACE, objects::manager_changes(prev, next)).await {
        tracing::warn!("publishing the manager's properties on D-Bus: {e}");
    }
}

async fn properties_changed(conn: &Connection, path: &str, iface: &str, changed: HashMap<&'static str, Value<'static>>) -> zbus::Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let emitter = SignalEmitter::new(conn, path)?;
    let iface = InterfaceName::try_from(iface)?;
    Properties::properties_changed(&emitter, iface, changed, Cow::Borrowed(&[])).await
}

/// The Manager's signals, from the core's notices.
async fn forward_notices(conn: Connection, mut notices: tokio::sync::broadcast::Receiver<Notice>) {
    let emitter = match SignalEmitter::new(&conn, MANAGER_PATH) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("no signals on D-Bus: {e}");
            return;
        }
    };
    loop {
        let sent = match notices.recv().await {
            Ok(Notice::PolicyApplied { revision }) => emitter.policy_applied(revision).await,
            Ok(Notice::PolicyRolledBack { revision, reason }) => emitter.policy_rolled_back(revision, &reason).await,
            Ok(Notice::LinkRoleChanged { ifindex, name, role, reason }) => {
                emitter.link_role_changed(ifindex_i32(ifindex), &name, &role, &reason).await
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "D-Bus signals lost: the notice queue overflowed");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        if let Err(e) = sent {
            tracing::warn!("emitting a D-Bus signal: {e}");
        }
    }
}

fn ifindex_i32(i: Ifindex) -> i32 {
    i.get() as i32
}
