//! The embedded evaluator: the entitlement service's index, followed into this process.
//!
//! [`Evaluator::start`] subscribes to `IndexStreamService.WatchIndex` and applies its snapshot
//! and deltas to a local `tenantry-index` index — the same code and the same changes as the
//! service's own index — so a check here answers exactly as the service would at the revision
//! the evaluator reports, in about a microsecond and without a network hop.
//!
//! - **Ready** once a snapshot is held ([`Evaluator::wait_ready`]); before that a check is
//!   [`EvalError::NotReady`].
//! - **Read your writes**: a write's response carries its revision; hand it to
//!   [`Evaluator::check_at_least`], which waits (bounded) until the local index holds it.
//! - **Changes**: [`Evaluator::subscribe`] is a `watch` of the revision held.
//! - **Reconnects** with backoff and resumes from the revision held; the service answers with
//!   the missing deltas, or a reset and a fresh snapshot — never a silent hole.
//! - **Fail-static**: with a snapshot file configured, the index is saved after each snapshot
//!   and at most every `persist_every` after changes, and loaded at start, so a process started
//!   while the service is unreachable still answers. [`Evaluator::staleness`] tells how old the
//!   answers may be.

mod follow;
pub mod persist;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use tenantry_common::CancellationToken;
use tenantry_index::{CheckRequest, Decision, EntitlementIndex};
use tokio::sync::watch;

use crate::services::EntitlementApi;

/// How the evaluator follows the service.
#[derive(Debug, Clone)]
pub struct EvaluatorConfig {
    /// Follow only these accounts (with their ancestors, so inherited grants resolve); empty:
    /// every account. The catalog is always followed whole.
    pub accounts: Vec<String>,
    /// Where the last snapshot is kept for a start without the service (fail-static).
    pub snapshot_file: Option<PathBuf>,
    /// After changes, the snapshot file is rewritten at most this often.
    pub persist_every: Duration,
    /// How long [`Evaluator::check_at_least`] waits for a revision before giving up.
    pub read_your_writes_timeout: Duration,
    /// A stream silent this long (no delta, no heartbeat) is dropped and reconnected.
    pub idle_timeout: Duration,
    /// Reconnect waits: exponential with full jitter between these bounds.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            snapshot_file: None,
            persist_every: Duration::from_secs(10),
            read_your_writes_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// Where the index answering now came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Nothing held yet.
    None,
    /// The snapshot file: the service has not been heard from since start.
    Persisted,
    /// The service's stream.
    Service,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::None => "none",
            Origin::Persisted => "persisted",
            Origin::Service => "service",
        }
    }
}

/// How current the evaluator's answers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// The revision held (`None`: not ready).
    pub revision: Option<u64>,
    pub origin: Origin,
    /// Whether a stream to the service is open now.
    pub connected: bool,
    /// When the service was last heard from (by this process or, for a persisted snapshot,
    /// by the process that saved it).
    pub last_contact: Option<SystemTime>,
}

impl Staleness {
    /// Time since the service was last heard from (`None`: never).
    pub fn since_contact(&self) -> Option<Duration> {
        self.last_contact
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    /// Whether answers may lag the service: not connected, or answering from the file.
    pub fn is_stale(&self) -> bool {
        !self.connected || self.origin != Origin::Service
    }
}

/// Why the evaluator gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the evaluator holds no snapshot yet")]
    NotReady,
    #[error("the evaluator holds revision {held:?}, not yet {wanted}")]
    Behind { held: Option<u64>, wanted: u64 },
}

#[derive(Debug)]
struct Contact {
    origin: Origin,
    connected: bool,
    last: Option<SystemTime>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    index: RwLock<Option<Arc<EntitlementIndex>>>,
    revision: watch::Sender<Option<u64>>,
    contact: Mutex<Contact>,
}

impl Shared {
    fn new() -> Self {
        Self {
            index: RwLock::new(None),
            revision: watch::Sender::new(None),
            contact: Mutex::new(Contact {
                origin: Origin::None,
                connected: false,
                last: None,
            }),
        }
    }

    /// Publishes a new index (never an older revision over a newer one from the same origin).
    pub(crate) fn publish(&self, index: Arc<EntitlementIndex>, origin: Origin) {
        let revision = index.revision();
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Some(index);
        self.with_contact(|c| c.origin = origin);
        self.revision.send_replace(Some(revision));
    }

    pub(crate) fn heard(&self, at: SystemTime) {
        self.with_contact(|c| {
            c.connected = true;
            c.last = Some(at);
        });
    }

    pub(crate) fn disconnected(&self) {
        self.with_contact(|c| c.connected = false);
    }

    pub(crate) fn loaded_contact(&self, at: SystemTime) {
        self.with_contact(|c| c.last = Some(at));
    }

    pub(crate) fn last_contact(&self) -> Option<SystemTime> {
        self.contact.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    fn with_contact(&self, f: impl FnOnce(&mut Contact)) {
        f(&mut self.contact.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn current(&self) -> Option<Arc<EntitlementIndex>> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An in-process evaluator following the entitlement service. Cheap to clone; the stream stops
/// when the last clone is dropped (or at [`Evaluator::stop`]).
#[derive(Debug, Clone)]
pub struct Evaluator {
    shared: Arc<Shared>,
    config: Arc<EvaluatorConfig>,
    _stop: Arc<StopOnDrop>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Evaluator {
    /// Starts following the service behind `api` (its URL, service token and TLS). Returns at
    /// once; the snapshot file, when configured, is loaded in the background first.
    pub fn start(api: &EntitlementApi, config: EvaluatorConfig) -> Self {
        let shared = Arc::new(Shared::new());
        let stop = CancellationToken::new();
        let config = Arc::new(config);
        let task = tokio::spawn(follow::run(
            Arc::clone(&shared),
            api.channel(),
            api.config().max_message_bytes,
            Arc::clone(&config),
            stop.clone(),
        ));
        Self {
            shared,
            config,
            _stop: Arc::new(StopOnDrop(stop)),
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// An evaluator over a snapshot file alone, following no service: for offline tools,
    /// tests and benchmarks. Its staleness says `Persisted`, never connected.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, persist::PersistError> {
        let path = path.into();
        let (follower, contact) = tokio::task::spawn_blocking(move || follow::load_file(&path))
            .await
            .map_err(|e| persist::PersistError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })??;
        let shared = Arc::new(Shared::new());
        if let Some(index) = follower.current() {
            shared.loaded_contact(contact);
            shared.publish(index, Origin::Persisted);
        }
        Ok(Self {
            shared,
            config: Arc::new(EvaluatorConfig::default()),
            _stop: Arc::new(StopOnDrop(CancellationToken::new())),
            task: Arc::new(Mutex::new(None)),
        })
    }

    /// Stops following (the index held keeps answering) and waits until the snapshot file
    /// holds what the index holds.
    pub async fn shutdown(&self) {
        self._stop.0.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Waits until a snapshot is held (from the service or the snapshot file).
    pub async fn wait_ready(&self) {
        let mut revision = self.shared.revision.subscribe();
        // The sender lives as long as `self`, so this only returns once ready.
        let _ = revision.wait_for(Option::is_some).await;
    }

    /// The index held now, for several checks against one revision.
    pub fn index(&self) -> Result<Arc<EntitlementIndex>, EvalError> {
        self.shared.current().ok_or(EvalError::NotReady)
    }

    /// The revision held (`None`: not ready).
    pub fn revision(&self) -> Option<u64> {
        *self.shared.revision.borrow()
    }

    /// A check now (never before the newest write the index holds). Allocation-free.
    pub fn check(&self, request: &CheckRequest<'_>) -> Result<Decision, EvalError> {
        let index = self.shared.current().ok_or(EvalError::NotReady)?;
        Ok(index.check(request, index.present(Utc::now())))
    }

    /// A check at `at` (e.g. to ask about a future date).
    pub fn check_at(
        &self,
        request: &CheckRequest<'_>,
        at: DateTime<Utc>,
    ) -> Result<Decision, EvalError> {
        let index = self.shared.current().ok_or(EvalError::NotReady)?;
        Ok(index.check(request, at))
    }

    /// The index once it holds at least `min_revision`, waiting up to
    /// `read_your_writes_timeout` for it.
    pub async fn index_at_least(
        &self,
        min_revision: u64,
    ) -> Result<Arc<EntitlementIndex>, EvalError> {
        if let Some(index) = self.shared.current()
            && index.revision() >= min_revision
        {
            return Ok(index);
        }
        let mut revision = self.shared.revision.subscribe();
        let reached = tokio::time::timeout(
            self.config.read_your_writes_timeout,
            revision.wait_for(|r| r.is_some_and(|r| r >= min_revision)),
        )
        .await;
        match reached {
            Ok(Ok(_)) => self.index(),
            Ok(Err(_)) | Err(_) => Err(EvalError::Behind {
                held: self.revision(),
                wanted: min_revision,
            }),
        }
    }

    /// A check now against an index holding at least `min_revision` (read your writes: pass
    /// the revision a write answered with).
    pub async fn check_at_least(
        &self,
        request: &CheckRequest<'_>,
        min_revision: u64,
    ) -> Result<Decision, EvalError> {
        let index = self.index_at_least(min_revision).await?;
        Ok(index.check(request, index.present(Utc::now())))
    }

    /// The revision held, updated whenever a snapshot or a delta is applied.
    pub fn subscribe(&self) -> watch::Receiver<Option<u64>> {
        self.shared.revision.subscribe()
    }

    /// How current the answers are.
    pub fn staleness(&self) -> Staleness {
        let revision = self.revision();
        let contact = self
            .shared
            .contact
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Staleness {
            revision,
            origin: contact.origin,
            connected: contact.connected,
            last_contact: contact.last,
        }
    }
}
