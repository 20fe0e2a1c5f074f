//! The daemon's control surface: a [`Handle`] that front ends (the D-Bus
//! objects) hold instead of state. Reads come from a published
//! [`Snapshot`]; changes are requests answered by the main loop, the only
//! owner of the datapath. Notices (policy applied or rolled back, link
//! roles) and drop events are broadcast to whoever listens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::datapath::Event;
use crate::links::Ifindex;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The daemon's overall state (`State` on the bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Loading, before the first reconcile pass and policy apply.
    Starting,
    /// Programs attached, policy enforced.
    Enforcing,
    /// Programs attached, global audit mode: nothing is dropped.
    Audit,
    /// Something the daemon wants in the kernel is not there (a failed
    /// attach, a policy that could not be installed) or the policy in force
    /// is not the one configured (an invalid policy directory: the last
    /// good policy stays); `Problems` says why. It keeps retrying.
    Degraded,
    /// No good policy was ever installed and the configured one is
    /// invalid: programs may be attached, but no policy is enforced.
    NotEnforcing,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Enforcing => "enforcing",
            State::Audit => "audit",
            State::Degraded => "degraded",
            State::NotEnforcing => "not-enforcing",
        }
    }
}

/// A policy change awaiting confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub revision: u64,
    /// CLOCK_REALTIME.
    #[serde(serialize_with = "ser_unix_us")]
    pub deadline: SystemTime,
}

/// Microseconds since the epoch (the bus's `PendingConfirm` deadline).
pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn ser_unix_us<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(unix_us(*t))
}

/// One link as the daemon sees and treats it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    pub ifindex: Ifindex,
    pub name: String,
    /// `physical`, `bond`, `vlan`, `veth`, … (IFLA_INFO_KIND or ours).
    pub kind: String,
    /// `enforce`, `vlan-guard` or `ignored`.
    pub role: String,
    pub reason: String,
    /// A VLAN's lower device (or a veth's peer), 0 when none.
    pub lower: u32,
    /// The bond or bridge this link is a port of, 0 when none.
    pub controller: u32,
    /// Addresses with prefix length (`192.0.2.1/24`).
    pub addresses: Vec<String>,
    /// VIDs admitted on this link (a VLAN guard); empty otherwise.
    pub allowed_vlans: Vec<u16>,
    /// `tcx` or `tc` when hostfwd's programs are attached, `` otherwise.
    pub attach_mode: String,
    /// Effective audit mode on this link (global or per link).
    pub audit: bool,
    /// Per-link audit switched on (independent of the global mode).
    pub link_audit: bool,
    /// What keeps hostfwd from deciding on this link, empty when nothing:
    /// other programs that run before it on its hooks
    /// (`ingress: runs after name (id 7, tcx)`), and the last pass's failed
    /// or held-back actions on it, with the error (`attach egress on link 7
    /// failed: …; retrying`), `; `-separated.
    pub problem: String,
}

pub use crate::policy_store::Origin;

/// One policy source: a file of the policy directory or a policy applied
/// through the API, by name. It may hold several Cilium policy documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    /// The source's name: the file's stem, or the name given when applying.
    pub name: String,
    pub origin: Origin,
    /// The file for permanent sources, `runtime` otherwise.
    pub source: String,
    /// One line per Cilium policy in it: `name: active: …` / `inactive: …`.
    pub reason: String,
    /// Whether any of its policies selects this node.
    pub active: bool,
    /// The YAML text as applied.
    #[serde(skip)]
    pub yaml: String,
}

/// Everything a reader may ask; replaced as a whole on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub state: State,
    /// Why the state is `degraded` or `not-enforcing`, one problem each;
    /// empty otherwise.
    pub problems: Vec<String>,
    /// Global audit mode.
    pub audit: bool,
    pub policy_revision: u64,
    pub pending_confirm: Option<Pending>,
    /// `tcx` or `tc`.
    pub attach_mode: &'static str,
    /// `strict_policies`: `ValidatePolicy` answers as an apply would.
    pub strict_policies: bool,
    pub links: BTreeMap<Ifindex, LinkInfo>,
    /// In name order.
    pub policies: Vec<PolicyInfo>,
}

impl Snapshot {
    pub fn starting(attach_mode: &'static str) -> Snapshot {
        Snapshot {
            version: VERSION,
            state: State::Starting,
            problems: Vec::new(),
            audit: true,
            policy_revision: 0,
            pending_confirm: None,
            attach_mode,
            strict_policies: false,
            links: BTreeMap::new(),
            policies: Vec::new(),
        }
    }

    pub fn link_by_name(&self, name: &str) -> Option<&LinkInfo> {
        self.links.values().find(|l| l.name == name)
    }

    pub fn policy(&self, name: &str) -> Option<&PolicyInfo> {
        self.policies.iter().find(|p| p.name == name)
    }
}

/// Something that happened, for the bus's signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    PolicyApplied { revision: u64 },
    /// `revision` is the change that was undone.
    PolicyRolledBack { revision: u64, reason: String },
    LinkRoleChanged { ifindex: Ifindex, name: String, role: String, reason: String },
}

/// One drop counter (summed over CPUs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statistic {
    pub ifindex: u32,
    /// The link's name, `` when it is gone.
    pub name: String,
    pub direction: String,
    /// The drop reason; `audit:<reason>` for would-be drops in audit mode.
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Also write the policy directory (after confirmation when confirming).
    pub persist: bool,
    /// Revert unless [`Handle::confirm`] is called within this time.
    pub confirm_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An argument out of its range, naming it.
    #[error("{0}")]
    InvalidArgs(String),
    /// Every problem, one per line, each naming source:line:column and field.
    #[error("{0}")]
    InvalidPolicy(String),
    #[error("no link {0}")]
    NoSuchLink(String),
    #[error("no policy named {0:?}")]
    NoSuchPolicy(String),
    #[error("no policy change is awaiting confirmation{0}")]
    NoPendingConfirm(String),
    /// Another change awaits confirmation (or the daemon is shutting down).
    #[error("{0}")]
    Busy(String),
    /// The change was valid but could not be carried out (kernel, disk).
    #[error("{0}")]
    Failed(String),
}

pub type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What the main loop is asked to do.
#[derive(Debug)]
pub enum Request {
    ApplyPolicy { name: String, yaml: String, options: ApplyOptions, reply: Reply<u64> },
    RemovePolicy { name: String, persist: bool, reply: Reply<u64> },
    Confirm { revision: u64, reply: Reply<()> },
    Rollback { reply: Reply<u64> },
    /// `link: None` is the global mode.
    SetAudit { link: Option<Ifindex>, enabled: bool, persist: bool, reply: Reply<()> },
    Reload { reply: Reply<()> },
}

/// The front ends' handle: cheap to clone, holds no state of its own.
#[derive(Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    notices: broadcast::Sender<Notice>,
    events: broadcast::Sender<Arc<Event>>,
}

/// The main loop's end of the channel to the API (the other end is the
/// [`Handle`]): requests in; snapshots, notices and drop events out.
pub struct LoopEnd {
    pub requests: mpsc::Receiver<Request>,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    pub notices: broadcast::Sender<Notice>,
    pub events: broadcast::Sender<Arc<Event>>,
}

impl LoopEnd {
    pub fn publish(&self, s: Snapshot) {
        self.snapshot.send_if_modified(|cur| {
            if **cur == s {
                false
            } else {
                *cur = Arc::new(s);
                true
            }
        });
    }

    pub fn notify(&self, n: Notice) {
        // No receiver is fine: nobody listens.
        let _ = self.notices.send(n);
    }
}

/// A connected pair.
pub fn channel(initial: Snapshot) -> (Handle, LoopEnd) {
    let (rq_tx, rq_rx) = mpsc::channel(64);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(initial));
    let (n_tx, _) = broadcast::channel(256);
    let (e_tx, _) = broadcast::channel(4096);
    (
        Handle { requests: rq_tx, snapshot: snap_rx, notices: n_tx.clone(), events: e_tx.clone() },
        LoopEnd { requests: rq_rx, snapshot: snap_tx, notices: n_tx, events: e_tx },
    )
}

impl Handle {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Changes to the snapshot (for PropertiesChanged and link objects).
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Drop events as they come from the datapath (a slow reader loses the
    /// oldest: `RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let gone = || Error::Busy("the daemon is shutting down".into());
        self.requests.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Adds or replaces the policy source `name`; returns the new revision.
    pub async fn apply_policy(&self, name: String, yaml: String, options: ApplyOptions) -> Result<u64, Error> {
        self.ask(|reply| Request::ApplyPolicy { name, yaml, options, reply }).await
    }

    pub async fn remove_policy(&self, name: String, persist: bool) -> Result<u64, Error> {
        self.ask(|reply| Request::RemovePolicy { name, persist, reply }).await
    }

    pub async fn confirm(&self, revision: u64) -> Result<(), Error> {
        self.ask(|reply| Request::Confirm { revision, reply }).await
    }

    /// Undoes the change awaiting confirmation now; returns the revision
    /// of the restored policy.
    pub async fn rollback(&self) -> Result<u64, Error> {
        self.ask(|reply| Request::Rollback { reply }).await
    }

    pub async fn set_audit(&self, link: Option<Ifindex>, enabled: bool, persist: bool) -> Result<(), Error> {
        self.ask(|reply| Request::SetAudit { link, enabled, persist, reply }).await
    }

    /// Reads the permanent policy set again (runtime changes are dropped,
    /// as with firewalld's reload).
    pub async fn reload(&self) -> Result<(), Error> {
        self.ask(|reply| Request::Reload { reply }).await
    }
}

/// Validates a policy text offline (what `ValidatePolicy` answers).
pub use crate::policy::cilium::{validate_policy, validate_policy_with};
