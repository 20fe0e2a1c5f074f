//! The methods every user may call and that cost more than a look at the
//! published snapshot (`ValidatePolicy` parses up to
//! [`MAX_SOURCE_BYTES`](crate::policy::cilium::MAX_SOURCE_BYTES) of YAML,
//! `GetStatistics` reads a per-CPU map) run here: on tokio's blocking pool,
//! never on the main loop or on the two runtime workers that carry netlink
//! and the bus, [`WORKERS`] at a time, and at most [`PER_CALLER`] in flight
//! per user (uid, asked of the bus: one user's many connections count
//! once). A user over the bound gets `LimitsExceeded` at once instead of a
//! queue that grows with the flood.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hostfwd_dbus::Error as BusError;
use tokio::sync::Semaphore;
use zbus::message::Header;
use zbus::Connection;

/// Blocking jobs at a time (the machine this runs on may have 2 cores; one
/// stays with the main loop).
pub const WORKERS: usize = 1;
/// Jobs in flight per user, waiting or running.
pub const PER_CALLER: usize = 2;

#[derive(Clone)]
pub struct Gate {
    workers: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { workers: Arc::new(Semaphore::new(WORKERS)), in_flight: Arc::default() }
    }
}

/// A user's slot; frees it when dropped (also when the call is abandoned).
struct Slot {
    uid: u32,
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = lock(&self.in_flight);
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    /// Runs `job` for the sender of `hdr` under the bounds above.
    pub async fn run<T: Send + 'static>(&self, conn: &Connection, hdr: &Header<'_>, what: &str, job: impl FnOnce() -> T + Send + 'static) -> Result<T, BusError> {
        let uid = caller_uid(conn, hdr).await?;
        let _slot = self.enter(uid, what)?;
        let _permit = self.workers.acquire().await.map_err(|_| BusError::Failed("the daemon is shutting down".into()))?;
        tokio::task::spawn_blocking(job).await.map_err(|e| BusError::Failed(format!("{what}: {e}")))
    }

    fn enter(&self, uid: u32, what: &str) -> Result<Slot, BusError> {
        let mut m = lock(&self.in_flight);
        let n = m.entry(uid).or_default();
        if *n >= PER_CALLER {
            tracing::debug!(uid, what, "refused: too many calls in flight");
            return Err(zbus::fdo::Error::LimitsExceeded(format!("{what}: uid {uid} has {PER_CALLER} calls in flight already (at most {PER_CALLER}); retry when one returns")).into());
        }
        *n += 1;
        Ok(Slot { uid, in_flight: self.in_flight.clone() })
    }
}

/// The uid of the connection that sent `hdr`, from the bus.
async fn caller_uid(conn: &Connection, hdr: &Header<'_>) -> Result<u32, BusError> {
    let failed = |e: zbus::Error| BusError::Failed(format!("asking the bus for the caller's uid: {e}"));
    let sender = hdr.sender().ok_or_else(|| BusError::Failed("a call without a sender".into()))?;
    let proxy = zbus::fdo::DBusProxy::new(conn).await.map_err(failed)?;
    proxy.get_connection_unix_user(sender.clone().into()).await.map_err(|e| failed(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_a_bounded_number_of_slots_freed_on_drop() {
        let g = Gate::default();
        let a: Vec<Slot> = (0..PER_CALLER).map(|_| g.enter(65534, "x").expect("within the bound")).collect();
        let err = g.enter(65534, "ValidatePolicy").err().expect("over the bound");
        assert!(err.to_string().contains("LimitsExceeded") || err.to_string().contains("in flight"), "{err}");
        // Another user is not affected.
        let b = g.enter(1000, "x").expect("another user");
        drop(a);
        assert!(g.enter(65534, "x").is_ok(), "slots are freed on drop");
        drop(b);
        assert!(lock(&g.in_flight).is_empty());
    }
}
