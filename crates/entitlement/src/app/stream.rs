//! The index stream (`IndexStreamService.WatchIndex`): a snapshot of this replica's index, then
//! every revision it applies (its own commits and those it replays from other replicas and the
//! tenant feed), each once and in order, filtered to a subscriber's scope.
//!
//! Every subscriber runs as its own task that reads the recent revisions `IndexHandle` keeps
//! (or, past them, the change log) at its own pace, so writers never wait for a subscriber and
//! subscribers never wait for each other. One that falls behind what is kept gets a reset and a
//! fresh snapshot; one that stops reading for `stall` is dropped (it resumes from its revision).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tenantry_common::CancellationToken;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Engine;
use super::index::{Committed, NotHeld};
use super::ports::Storage;
use crate::domain::{
    DomainError, IndexChange, ResetReason, Result, ScopeClosure, StreamEvent, scope_closure,
    validate_tenant_id,
};

/// Most accounts one subscription may name.
pub const MAX_SCOPE: usize = 1000;
/// Changes per snapshot chunk event (the gRPC layer also bounds each message in bytes).
const SNAPSHOT_CHUNK: usize = 512;
/// Revisions read from memory per round.
const ROUND: usize = 256;

/// What a subscriber asks for.
#[derive(Debug, Clone, Default)]
pub struct WatchQuery {
    /// The last revision the subscriber applied.
    pub resume_revision: Option<u64>,
    /// Only these accounts (with their ancestors); empty: every account.
    pub accounts: Vec<String>,
}

/// How the stream behaves.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// A heartbeat after this long without anything to send.
    pub heartbeat: Duration,
    /// Most concurrent subscribers of this replica.
    pub max_subscribers: usize,
    /// Events buffered per subscriber.
    pub buffer: usize,
    /// A subscriber whose buffer stays full this long is dropped.
    pub stall: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            max_subscribers: 1024,
            buffer: 64,
            stall: Duration::from_secs(30),
        }
    }
}

/// The subscribers' shared state: settings, permits, the shutdown signal.
#[derive(Debug)]
pub struct StreamHub {
    settings: StreamSettings,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl StreamHub {
    pub fn new(settings: StreamSettings, shutdown: CancellationToken) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_subscribers)),
            settings,
            shutdown,
        }
    }
}

impl Default for StreamHub {
    fn default() -> Self {
        Self::new(StreamSettings::default(), CancellationToken::new())
    }
}

/// What a subscriber's task yields: events, or the error that ends the stream.
pub type StreamItem = Result<StreamEvent>;

impl<S: Storage + 'static> Engine<S> {
    /// Starts a subscription: validates it, takes a subscriber slot and returns its events.
    pub fn watch_index(self: &Arc<Self>, q: WatchQuery) -> Result<mpsc::Receiver<StreamItem>> {
        if q.accounts.len() > MAX_SCOPE {
            return Err(DomainError::invalid(
                "account_ids",
                format!(
                    "give at most {MAX_SCOPE} accounts (got {})",
                    q.accounts.len()
                ),
            ));
        }
        for (i, account) in q.accounts.iter().enumerate() {
            validate_tenant_id(&format!("account_ids[{i}]"), account)?;
        }
        let hub = &self.streams;
        let permit = Arc::clone(&hub.permits).try_acquire_owned().map_err(|_| {
            DomainError::Unavailable(format!(
                "this replica already serves {} index stream subscribers; retry later or elsewhere",
                hub.settings.max_subscribers
            ))
        })?;
        let (tx, rx) = mpsc::channel(hub.settings.buffer);
        let requested: HashSet<String> = q.accounts.into_iter().collect();
        let subscriber = Subscriber {
            engine: Arc::clone(self),
            tx,
            requested: (!requested.is_empty()).then(|| {
                let mut accounts: Vec<String> = requested.into_iter().collect();
                accounts.sort();
                accounts
            }),
            closure: None,
            _permit: permit,
        };
        tokio::spawn(subscriber.run(q.resume_revision));
        Ok(rx)
    }
}

/// The subscriber went away or stopped reading.
struct Gone;

struct Subscriber<S: Storage> {
    engine: Arc<Engine<S>>,
    tx: mpsc::Sender<StreamItem>,
    /// The scoped accounts, sorted; `None`: everything.
    requested: Option<Vec<String>>,
    /// The scope's accounts with their ancestors, as of the last snapshot or resume.
    closure: Option<ScopeClosure>,
    _permit: OwnedSemaphorePermit,
}

impl<S: Storage + 'static> Subscriber<S> {
    async fn run(mut self, resume: Option<u64>) {
        let shutdown = self.engine.streams.shutdown.clone();
        let tx = self.tx.clone();
        tokio::select! {
            _ = self.follow(resume) => {}
            () = shutdown.cancelled() => {
                // Best effort: a subscriber that stopped reading learns it from the closed stream.
                let _ = tx.try_send(Err(DomainError::Unavailable(
                    "the service is shutting down; resume from your revision".into(),
                )));
            }
        }
    }

    async fn send(&self, event: StreamEvent) -> Result<(), Gone> {
        let stall = self.engine.streams.settings.stall;
        match tokio::time::timeout(stall, self.tx.send(Ok(event))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::info!(
                    stall_secs = stall.as_secs(),
                    "index stream subscriber stopped reading; dropped"
                );
                Err(Gone)
            }
        }
    }

    async fn reset(&mut self, reason: ResetReason, message: String) -> Result<u64, Gone> {
        tracing::debug!(?reason, %message, "index stream reset");
        self.send(StreamEvent::Reset { reason, message }).await?;
        self.snapshot().await
    }

    async fn follow(&mut self, resume: Option<u64>) -> Result<(), Gone> {
        let engine = Arc::clone(&self.engine);
        let index = &engine.index;
        let mut published = index.published();
        let mut position = match resume {
            None => self.snapshot().await?,
            Some(r) if r > index.current().revision() => {
                let message = format!(
                    "revision {r} is beyond this replica's index ({})",
                    index.current().revision()
                );
                self.reset(ResetReason::RevisionUnknown, message).await?
            }
            Some(r) => {
                self.closure = self
                    .requested
                    .as_ref()
                    .map(|accounts| scope_closure(&index.current(), accounts));
                r
            }
        };
        // A resume point is checked against what is held once; later misses mean lagging.
        let mut resumed = resume.is_some();
        let heartbeat = self.engine.streams.settings.heartbeat;
        loop {
            published.borrow_and_update();
            let entries = match index.recent_after(position, ROUND) {
                Ok(entries) => entries,
                Err(NotHeld) => match index.logged_after(position).await {
                    Ok(entries) if entries.first().is_some_and(|e| e.revision == position + 1) => {
                        entries
                    }
                    Ok(_) => {
                        let reason = if resumed {
                            ResetReason::RevisionTooOld
                        } else {
                            ResetReason::Lagging
                        };
                        let message = format!(
                            "the revisions after {position} are no longer held; a snapshot follows"
                        );
                        position = self.reset(reason, message).await?;
                        resumed = false;
                        continue;
                    }
                    Err(err) => {
                        let _ = self.tx.send(Err(err)).await;
                        return Err(Gone);
                    }
                },
            };
            resumed = false;
            if entries.is_empty() {
                tokio::select! {
                    changed = published.changed() => if changed.is_err() { return Err(Gone) },
                    () = tokio::time::sleep(heartbeat) => {
                        // This stream's position, not the index's: a revision published since
                        // the look above is not the subscriber's yet.
                        self.send(StreamEvent::Heartbeat { revision: position }).await?;
                    }
                }
                continue;
            }
            for entry in entries {
                match self.scoped(&entry) {
                    Some(changes) => {
                        position = entry.revision;
                        self.send(StreamEvent::Delta {
                            revision: entry.revision,
                            written_at: Some(entry.written_at),
                            changes,
                        })
                        .await?;
                    }
                    None => {
                        let message = format!(
                            "revision {} changes the hierarchy of the scoped accounts; a snapshot follows",
                            entry.revision
                        );
                        position = self.reset(ResetReason::ScopeChanged, message).await?;
                        break;
                    }
                }
            }
        }
    }

    /// The revision's changes within the scope; `None` when it changes the scope itself (an
    /// account of it moves or appears), which only a new snapshot can follow without a hole.
    fn scoped(&self, entry: &Committed) -> Option<Vec<IndexChange>> {
        let (Some(requested), Some(closure)) = (&self.requested, &self.closure) else {
            return Some(entry.changes.to_vec());
        };
        let in_scope = |id: &str| {
            closure.contains_key(id) || requested.binary_search_by(|a| a.as_str().cmp(id)).is_ok()
        };
        let mut out = Vec::new();
        for change in entry.changes.iter() {
            let keep = match change {
                IndexChange::UpsertFeature(_)
                | IndexChange::DeleteFeature { .. }
                | IndexChange::UpsertPlan(_)
                | IndexChange::DeletePlan { .. }
                | IndexChange::UpsertFlag(_)
                | IndexChange::DeleteFlag { .. }
                | IndexChange::UpsertRoute(_)
                | IndexChange::DeleteRoute { .. }
                // A grant's account is not in the change; deleting an unknown one is a no-op.
                | IndexChange::DeleteGrant { .. } => true,
                IndexChange::UpsertGrant(g) => in_scope(&g.tenant_id),
                IndexChange::UpsertTenant { id, parent } => {
                    if !in_scope(id) {
                        false
                    } else if closure.get(id.as_str()) == Some(parent) {
                        true
                    } else {
                        return None;
                    }
                }
                IndexChange::RemoveTenant { id } => in_scope(id),
                IndexChange::UpsertMeter { tenant_id, .. } => in_scope(tenant_id),
            };
            if keep {
                out.push(change.clone());
            }
        }
        Some(out)
    }

    /// Sends a snapshot of the index as it is now; returns its revision.
    async fn snapshot(&mut self) -> Result<u64, Gone> {
        let export = self.engine.index.export().await;
        let revision = export.revision();
        self.send(StreamEvent::SnapshotBegin {
            revision,
            written_until: export.written_until(),
        })
        .await?;
        let accounts = match &self.requested {
            Some(requested) => export.scope(requested),
            None => export.accounts(),
        };
        let mut chunk = Chunker::default();
        for change in export.catalog_changes() {
            chunk.push(self, change).await?;
        }
        for (id, parent) in &accounts {
            let change = IndexChange::UpsertTenant {
                id: id.clone(),
                parent: parent.clone(),
            };
            chunk.push(self, change).await?;
        }
        for id in accounts.keys() {
            for grant in export.grants_of(id) {
                chunk.push(self, IndexChange::UpsertGrant(grant)).await?;
            }
            for meter in export.meters_of(id) {
                chunk.push(self, meter).await?;
            }
        }
        chunk.flush(self).await?;
        self.send(StreamEvent::SnapshotEnd { revision }).await?;
        self.closure = self.requested.as_ref().map(|_| accounts);
        Ok(revision)
    }
}

/// Gathers snapshot changes into chunk events.
#[derive(Default)]
struct Chunker {
    changes: Vec<IndexChange>,
}

impl Chunker {
    async fn push<S: Storage + 'static>(
        &mut self,
        to: &Subscriber<S>,
        change: IndexChange,
    ) -> Result<(), Gone> {
        self.changes.push(change);
        if self.changes.len() >= SNAPSHOT_CHUNK {
            self.flush(to).await?;
        }
        Ok(())
    }

    async fn flush<S: Storage + 'static>(&mut self, to: &Subscriber<S>) -> Result<(), Gone> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.changes);
        to.send(StreamEvent::SnapshotChunk(changes)).await
    }
}
