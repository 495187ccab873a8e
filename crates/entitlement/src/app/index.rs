//! This replica's evaluation index: built from a storage snapshot at start, advanced by this
//! replica's own commits and by the change log other replicas write (LISTEN/NOTIFY with a
//! revision poll as fallback).
//!
//! Revisions are applied strictly in order: a commit whose revision is not the next one first
//! replays the missing revisions from the change log, so an index at revision N always includes
//! every write up to N (what `min_revision` promises).
//!
//! The changes of the most recent revisions applied are kept in memory (bounded), in order, for
//! the index stream's subscribers to continue from without reading the database.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::sync::{Mutex, Semaphore, watch};

use super::ports::Revisions;
use crate::domain::{
    DomainError, EntitlementIndex, IndexChange, IndexExport, IndexWriter, Result, SharedIndex,
};

/// Change-log rows read per round trip while catching up.
pub(crate) const LOG_PAGE: u64 = 256;
/// The recent revisions kept for stream subscribers: at most this many revisions…
const RECENT_REVISIONS: usize = 4096;
/// …and at most about this many changes among them (a large batch counts for its size).
const RECENT_CHANGES: usize = 100_000;

/// One applied revision, as stream subscribers receive it.
#[derive(Debug, Clone)]
pub struct Committed {
    pub revision: u64,
    pub written_at: DateTime<Utc>,
    pub changes: Arc<[IndexChange]>,
}

/// The recent revisions, oldest first, consecutive.
#[derive(Debug, Default)]
struct Recent {
    entries: VecDeque<Committed>,
    changes: usize,
}

impl Recent {
    fn push(&mut self, entry: Committed) {
        if self
            .entries
            .back()
            .is_some_and(|last| last.revision + 1 != entry.revision)
        {
            // Never a hole: what came before can no longer be continued from memory.
            self.entries.clear();
            self.changes = 0;
        }
        self.changes += entry.changes.len();
        self.entries.push_back(entry);
        while self.entries.len() > RECENT_REVISIONS
            || (self.changes > RECENT_CHANGES && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.changes -= old.changes.len();
            }
        }
    }
}

/// The revisions after a subscriber's position are no longer held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotHeld;

/// How a read with a minimum revision waits for this replica's index: at most `timeout`, and
/// at most `max_waiters` such reads at once (each parks a request, holding one of the server's
/// concurrency permits, on the client's say-so).
#[derive(Debug)]
pub struct RevisionWait {
    timeout: Duration,
    max_waiters: usize,
    waiters: Semaphore,
}

impl RevisionWait {
    pub fn new(timeout: Duration, max_waiters: usize) -> Self {
        Self {
            timeout,
            max_waiters,
            waiters: Semaphore::new(max_waiters),
        }
    }
}

/// The largest revision there can be: the storage's revision counter is a signed 64-bit
/// integer (PostgreSQL `BIGINT`, SQLite `INTEGER`).
pub const MAX_REVISION: u64 = i64::MAX as u64;

#[derive(Debug)]
pub struct IndexHandle<S> {
    shared: SharedIndex,
    writer: Mutex<IndexWriter>,
    published: watch::Sender<u64>,
    recent: std::sync::Mutex<Recent>,
    store: S,
}

impl<S: Revisions> IndexHandle<S> {
    /// Builds the index from a consistent snapshot of storage.
    pub async fn load(store: S) -> Result<Self> {
        let (writer, revision) = store.load_index().await?;
        let estimate = writer.memory_estimate();
        tracing::info!(
            revision,
            grants = estimate.grants,
            tenants = estimate.tenants,
            index_bytes = estimate.bytes,
            "entitlement index built"
        );
        let (published, _) = watch::channel(revision);
        Ok(Self {
            shared: SharedIndex::new(writer.current()),
            writer: Mutex::new(writer),
            published,
            recent: std::sync::Mutex::default(),
            store,
        })
    }

    /// The newest published snapshot (checks read this; never blocks on writers).
    pub fn current(&self) -> Arc<EntitlementIndex> {
        self.shared.load()
    }

    fn publish_locked(&self, writer: &IndexWriter) {
        let index = writer.current();
        let revision = index.revision();
        self.shared.store(index);
        self.published.send_replace(revision);
    }

    /// Applies this replica's own committed write, made at `written_at` by this clock.
    pub async fn apply_committed(
        &self,
        revision: u64,
        changes: Vec<IndexChange>,
        written_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut writer = self.writer.lock().await;
        if writer.revision() >= revision {
            return Ok(());
        }
        if writer.revision() + 1 < revision {
            // Another replica committed in between: replay the log (which holds ours too).
            self.catch_up_locked(&mut writer).await?;
            if writer.revision() >= revision {
                return Ok(());
            }
        }
        let changes: Arc<[IndexChange]> = changes.into();
        writer.note_written(written_at);
        writer.apply_at(revision, changes.iter().cloned());
        self.remember(revision, written_at, changes);
        self.publish_locked(&writer);
        Ok(())
    }

    /// Records an applied revision for stream subscribers (called under the writer's lock, so
    /// in order).
    fn remember(&self, revision: u64, written_at: DateTime<Utc>, changes: Arc<[IndexChange]>) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Committed {
                revision,
                written_at,
                changes,
            });
    }

    /// The applied revisions after `after`, oldest first, at most `limit`; empty when the index
    /// is at `after`. [`NotHeld`] when memory no longer holds the revision after `after`.
    pub fn recent_after(&self, after: u64, limit: usize) -> Result<Vec<Committed>, NotHeld> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current().revision();
        if after >= current {
            return Ok(Vec::new());
        }
        match recent.entries.front() {
            Some(first) if first.revision <= after + 1 => Ok(recent
                .entries
                .iter()
                .skip((after + 1 - first.revision) as usize)
                .take(limit)
                .cloned()
                .collect()),
            Some(_) | None => Err(NotHeld),
        }
    }

    /// Change-log entries after `after` up to the revision this index holds (the log may hold
    /// newer ones not yet applied here).
    pub async fn logged_after(&self, after: u64) -> Result<Vec<Committed>> {
        let current = self.current().revision();
        let page = self.store.log_after(after, LOG_PAGE).await?;
        Ok(page
            .into_iter()
            .take_while(|(revision, _, _)| *revision <= current)
            .map(|(revision, written_at, changes)| Committed {
                revision,
                written_at,
                changes: changes.into(),
            })
            .collect())
    }

    /// The index with the catalog it was built from, for a stream snapshot.
    pub async fn export(&self) -> IndexExport {
        self.writer.lock().await.export()
    }

    /// Follows the published revision.
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Replays change-log entries newer than the index.
    pub async fn catch_up(&self) -> Result<()> {
        let mut writer = self.writer.lock().await;
        self.catch_up_locked(&mut writer).await
    }

    async fn catch_up_locked(&self, writer: &mut IndexWriter) -> Result<()> {
        loop {
            let from = writer.revision();
            let page = self.store.log_after(from, LOG_PAGE).await?;
            let Some(&(first, _, _)) = page.first() else {
                return Ok(());
            };
            if first != from + 1 {
                // The log was pruned past us: rebuild from a snapshot.
                tracing::warn!(
                    from,
                    first,
                    "change log pruned past this replica; reloading"
                );
                let (rebuilt, _) = self.store.load_index().await?;
                *writer = rebuilt;
                // Subscribers behind the rebuilt revision start over from a snapshot.
                *self.recent.lock().unwrap_or_else(|e| e.into_inner()) = Recent::default();
                self.publish_locked(writer);
                continue;
            }
            let full = page.len() as u64 == LOG_PAGE;
            for (revision, written_at, changes) in page {
                let changes: Arc<[IndexChange]> = changes.into();
                writer.note_written(written_at);
                writer.apply_at(revision, changes.iter().cloned());
                self.remember(revision, written_at, changes);
            }
            self.publish_locked(writer);
            if !full {
                return Ok(());
            }
        }
    }

    /// An index including `min_revision`: at once if the current one does, else after catching
    /// up from the log and waiting up to `wait.timeout` for the write to be published; else
    /// UNAVAILABLE. A revision that cannot exist is the caller's error (INVALID_ARGUMENT): at
    /// once beyond [`MAX_REVISION`], after reading the revision counter when beyond the newest
    /// committed one. With `wait.max_waiters` reads already waiting, refused at once.
    pub async fn at_least(
        &self,
        min_revision: u64,
        wait: &RevisionWait,
    ) -> Result<Arc<EntitlementIndex>> {
        if min_revision > MAX_REVISION {
            return Err(DomainError::invalid(
                "min_revision",
                format!(
                    "is {min_revision}, beyond any revision (at most {MAX_REVISION}); give a revision a write returned"
                ),
            ));
        }
        let current = self.current();
        if current.revision() >= min_revision {
            return Ok(current);
        }
        // Held until the answer: the catch-up, the counter read and the wait all count.
        let Ok(_waiting) = wait.waiters.try_acquire() else {
            return Err(DomainError::RevisionWaitersFull {
                limit: wait.max_waiters,
            });
        };
        let mut rx = self.published.subscribe();
        self.catch_up().await?;
        if self.current().revision() < min_revision {
            // Callers learn revisions from write answers, so one beyond the newest committed
            // (the counter is read outside any write) was never handed out: waiting for it
            // would only park the request.
            let head = self.store.revision().await?;
            if min_revision > head {
                return Err(DomainError::invalid(
                    "min_revision",
                    format!(
                        "is {min_revision}, beyond the newest revision ({head}); give a revision a write returned"
                    ),
                ));
            }
        }
        let reached = tokio::time::timeout(wait.timeout, rx.wait_for(|r| *r >= min_revision)).await;
        let current = self.current();
        if current.revision() >= min_revision {
            return Ok(current);
        }
        let _ = reached;
        Err(DomainError::Unavailable(format!(
            "index is at revision {}, below the requested minimum {min_revision}; retry shortly",
            current.revision()
        )))
    }
}
