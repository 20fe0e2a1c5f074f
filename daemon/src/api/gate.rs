//! The methods every user may call and that cost more than a look at the
//! published snapshot (`ValidatePolicy` parses up to
//! [`MAX_SOURCE_BYTES`](crate::policy::cilium::MAX_SOURCE_BYTES) of YAML,
//! `GetStatistics` reads a per-CPU map) run here: one after the other on
//! one thread of their own at the lowest CPU priority (nice 19), never on
//! the main loop or on the two runtime workers that carry netlink and the
//! bus; and at most [`PER_CALLER`] in flight per user (uid, asked of the
//! bus: one user's many connections count once). A user over the bound
//! gets `LimitsExceeded` at once instead of a queue that grows with the
//! flood. The priority is what keeps a flood from slowing reconciliation
//! on a small machine: the parse gets the CPU the daemon's own work leaves
//! (BENCHMARKS.md, "Open calls under a flood": 2.4× slower attaches at
//! nice 0 on tokio's blocking pool).

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};

use hostfwd_dbus::Error as BusError;
use zbus::message::Header;
use zbus::Connection;

/// Jobs in flight per user, waiting or running.
pub const PER_CALLER: usize = 2;
/// The worker's nice value: the lowest priority.
const NICE: libc::c_int = 19;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Gate {
    /// To the worker thread; it ends when the last sender goes.
    jobs: mpsc::Sender<Job>,
    in_flight: Arc<Mutex<HashMap<u32, usize>>>,
    /// The uid of each unique name asked about: a flood from one
    /// connection costs one question to the bus, not one per call. A bus
    /// never reuses a unique name, so an entry cannot go stale.
    uids: Arc<Mutex<HashMap<String, u32>>>,
}

/// Cached uids; the cache starts over when full.
const UID_CACHE: usize = 1024;

impl Gate {
    /// Starts the worker thread.
    pub fn start() -> std::io::Result<Gate> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("hostfwd-open".into()).spawn(move || {
            // This thread only (a tid is a PRIO_PROCESS id on Linux).
            // SAFETY: plain syscalls on the calling thread.
            let tid = unsafe { libc::gettid() };
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) } != 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "lowering the priority of the open-call worker");
            }
            for job in rx {
                job();
            }
        })?;
        Ok(Gate {
            jobs,
            in_flight: Arc::default(),
            uids: Arc::default(),
        })
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
    pub async fn run<T: Send + 'static>(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        what: &str,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BusError> {
        let uid = self.caller_uid(conn, hdr).await?;
        let _slot = self.enter(uid, what)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || BusError::Failed(format!("{what}: the worker is gone"));
        self.jobs
            .send(Box::new(move || {
                // The caller may have gone: nobody to answer.
                let _ = tx.send(job());
            }))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    fn enter(&self, uid: u32, what: &str) -> Result<Slot, BusError> {
        let mut m = lock(&self.in_flight);
        let n = m.entry(uid).or_default();
        if *n >= PER_CALLER {
            tracing::debug!(uid, what, "refused: too many calls in flight");
            return Err(zbus::fdo::Error::LimitsExceeded(format!("{what}: uid {uid} has {PER_CALLER} calls in flight already (at most {PER_CALLER}); retry when one returns")).into());
        }
        *n += 1;
        Ok(Slot {
            uid,
            in_flight: self.in_flight.clone(),
        })
    }
}

impl Gate {
    /// The uid of the connection that sent `hdr`, from the bus.
    async fn caller_uid(&self, conn: &Connection, hdr: &Header<'_>) -> Result<u32, BusError> {
        let failed =
            |e: zbus::Error| BusError::Failed(format!("asking the bus for the caller's uid: {e}"));
        let sender = hdr
            .sender()
            .ok_or_else(|| BusError::Failed("a call without a sender".into()))?;
        if let Some(uid) = lock(&self.uids).get(sender.as_str()) {
            return Ok(*uid);
        }
        let proxy = zbus::fdo::DBusProxy::new(conn).await.map_err(failed)?;
        let uid = proxy
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| failed(e.into()))?;
        let mut uids = lock(&self.uids);
        if uids.len() >= UID_CACHE {
            uids.clear();
        }
        uids.insert(sender.to_string(), uid);
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_a_bounded_number_of_slots_freed_on_drop() {
        let g = Gate::start().expect("worker");
        let a: Vec<Slot> = (0..PER_CALLER)
            .map(|_| g.enter(65534, "x").expect("within the bound"))
            .collect();
        let err = g
            .enter(65534, "ValidatePolicy")
            .err()
            .expect("over the bound");
        assert!(
            err.to_string().contains("LimitsExceeded") || err.to_string().contains("in flight"),
            "{err}"
        );
        // Another user is not affected.
        let b = g.enter(1000, "x").expect("another user");
        drop(a);
        assert!(g.enter(65534, "x").is_ok(), "slots are freed on drop");
        drop(b);
        assert!(lock(&g.in_flight).is_empty());
    }

    #[test]
    fn jobs_run_on_a_thread_at_the_lowest_priority() {
        let g = Gate::start().expect("worker");
        let (tx, rx) = mpsc::channel();
        g.jobs
            .send(Box::new(move || {
                // SAFETY: plain syscalls on the calling thread.
                let nice =
                    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
                let _ = tx.send((std::thread::current().name().map(str::to_string), nice));
            }))
            .expect("send");
        assert_eq!(
            rx.recv().expect("ran"),
            (Some("hostfwd-open".to_string()), NICE)
        );
    }
}
