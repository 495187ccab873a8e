//! Use-cases: the rules and orchestration of every RPC, transport- and storage-free. A write
//! validates, stores in one transaction through the storage ports, commits a revision and
//! applies its changes to this replica's index; a read answers from the index or from storage.
//! One file per area; the ports they use are in [`ports`].

pub mod audit;
pub mod checks;
pub mod features;
pub mod flags;
pub mod grants;
mod idempotency;
pub mod index;
pub mod listing;
pub mod metering;
pub mod plans;
pub mod ports;
pub mod reservations;
pub mod routes;
pub mod stream;
pub mod tenant_sync;
#[cfg(test)]
pub(crate) mod testing;
pub mod thresholds;
pub mod transitions;
pub mod vendor;
pub mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tenantry_common::db::StorageHealth;

use crate::domain::audit::{AuditEntry, Prior, entries as audit_entries};
use crate::domain::catalog::Catalog;
use crate::domain::{EntitlementIndex, IndexChange, Result};
use index::IndexHandle;
pub use index::RevisionWait;
use ports::{Clock, Storage, TenantDirectory};

pub use idempotency::fingerprint;

/// Who performs automatic writes (revocations on tenant deletion, signup grants).
pub const SYSTEM_PRINCIPAL: &str = "system";

/// The service's state, shared by every RPC and background task.
#[derive(Debug)]
pub struct Engine<S: Storage> {
    store: S,
    index: IndexHandle<S>,
    tenants: Arc<dyn TenantDirectory>,
    clock: Arc<dyn Clock>,
    /// How reads with `min_revision` wait for that revision.
    revision_wait: RevisionWait,
    /// Whether storage takes writes, shared with the gRPC server's health: background writes
    /// (the follower, pruning) report their storage faults here as requests do.
    storage_health: StorageHealth,
    /// The vendor-entitlements snapshot last built (see `vendor`).
    vendor: vendor::VendorCache,
    /// The index stream's subscribers (see [`stream`]).
    streams: stream::StreamHub,
    /// Wakes the webhook delivery loop after a commit that recorded events.
    webhook_wake: Arc<tokio::sync::Notify>,
    /// The usage thresholds metering writes announce (see [`thresholds`]).
    thresholds: crate::domain::threshold::UsageThresholds,
    /// Consumptions waiting for their group's transaction (see `metering::consumption`).
    consumes: metering::consumption::ConsumeQueue,
}

impl<S: Storage> Engine<S> {
    /// Builds the index from storage and the engine around it.
    pub async fn start(
        store: S,
        tenants: Arc<dyn TenantDirectory>,
        clock: Arc<dyn Clock>,
        revision_wait: RevisionWait,
    ) -> Result<Self> {
        let index = IndexHandle::load(store.clone()).await?;
        Ok(Self {
            store,
            index,
            tenants,
            clock,
            revision_wait,
            storage_health: StorageHealth::new(),
            vendor: vendor::VendorCache::default(),
            streams: stream::StreamHub::default(),
            webhook_wake: Arc::default(),
            thresholds: Default::default(),
            consumes: Default::default(),
        })
    }

    /// Sets the usage thresholds metering writes announce (default 50, 80, 100 %).
    pub fn with_usage_thresholds(
        mut self,
        thresholds: crate::domain::threshold::UsageThresholds,
    ) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Sets how the index stream behaves and the signal that ends its subscriptions.
    pub fn with_streams(mut self, hub: stream::StreamHub) -> Self {
        self.streams = hub;
        self
    }

    /// The storage behind the engine (for the background tasks that maintain it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The storage's health (see the field).
    pub fn storage_health(&self) -> &StorageHealth {
        &self.storage_health
    }

    /// The engine's clock (the webhook loop keeps the same time).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// "Now" for reading `index` (see [`EntitlementIndex::present`]).
    pub fn present(&self, index: &EntitlementIndex) -> DateTime<Utc> {
        index.present(self.now())
    }

    /// "Now" for a read from storage: not before a write this replica has seen.
    pub fn present_now(&self) -> DateTime<Utc> {
        self.present(&self.index.current())
    }

    /// The revision this replica's index holds.
    pub fn revision(&self) -> u64 {
        self.index.current().revision()
    }

    /// The serving index once it includes `min_revision` (waiting briefly, else UNAVAILABLE).
    pub async fn index_at(&self, min_revision: u64) -> Result<Arc<EntitlementIndex>> {
        self.index.at_least(min_revision, &self.revision_wait).await
    }

    /// Replays other replicas' commits from the change log into the index.
    pub async fn catch_up(&self) -> Result<()> {
        self.index.catch_up().await
    }

    /// Commits `changes` and makes them visible to this replica's next check; `prior` is what
    /// the changed items were before (for their audit entries).
    async fn commit(
        &self,
        txn: S::Txn,
        changes: Vec<IndexChange>,
        prior: &Prior<'_>,
    ) -> Result<u64> {
        let log = self.store.encode(&changes)?;
        self.commit_encoded(txn, changes, log, None, prior).await
    }

    /// [`Engine::commit`] with the change-log entry already encoded, completing an
    /// idempotency record with the committed revision in the same transaction.
    async fn commit_encoded(
        &self,
        txn: S::Txn,
        changes: Vec<IndexChange>,
        log: S::Encoded,
        pending: Option<idempotency::PendingReplay>,
        prior: &Prior<'_>,
    ) -> Result<u64> {
        self.commit_encoded_with(
            txn,
            changes,
            log,
            pending,
            prior,
            thresholds::Reached::default(),
        )
        .await
    }

    /// [`Engine::commit_encoded`] with the usage thresholds the write reached: their events
    /// go to the outbox with the revision's.
    async fn commit_encoded_with(
        &self,
        txn: S::Txn,
        changes: Vec<IndexChange>,
        log: S::Encoded,
        pending: Option<idempotency::PendingReplay>,
        prior: &Prior<'_>,
        reached: thresholds::Reached,
    ) -> Result<u64> {
        let now = self.now();
        // One entry per changed item, in the write's transaction: it commits or rolls back
        // with the write. Not even built when the audit log is off.
        let entries: Vec<AuditEntry> = if self.store.audit_enabled() {
            audit_entries(prior, &changes)
                .into_iter()
                .filter(AuditEntry::changes_something)
                .collect()
        } else {
            Vec::new()
        };
        if !entries.is_empty() {
            self.store.record_audit(&txn, &entries, now).await?;
        }
        // The revision last: writers queue on it until this transaction ends.
        let advanced = self.store.advance(&txn, log, now).await?;
        let revision = advanced.revision;
        if let Some(pending) = pending {
            self.complete_replay(&txn, pending, revision).await?;
        }
        let recorded = self
            .record_wanted_events(&txn, advanced.webhooks_wanted, || {
                let mut events = crate::domain::webhook::revision_events(revision, now, &changes);
                events.extend(reached.events(revision));
                events
            })
            .await?;
        self.store.commit_plain(txn).await?;
        if recorded {
            self.wake_webhooks();
        }
        self.index.apply_committed(revision, changes, now).await?;
        Ok(revision)
    }

    /// Commits feed effects (or only the cursor when there are none) and applies them, with
    /// the webhook events of the feed (`events`) and of the effects.
    async fn commit_changes(
        &self,
        txn: S::Txn,
        changes: Vec<IndexChange>,
        events: Vec<crate::domain::webhook::Event>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if changes.is_empty() {
            let recorded = if events.is_empty() {
                false
            } else {
                self.record_events(&txn, || events).await?
            };
            self.store.commit_plain(txn).await?;
            if recorded {
                self.wake_webhooks();
            }
            return Ok(());
        }
        let log = self.store.encode(&changes)?;
        let advanced = self.store.advance(&txn, log, now).await?;
        let revision = advanced.revision;
        let recorded = self
            .record_wanted_events(&txn, advanced.webhooks_wanted, || {
                let mut events = events;
                events.extend(crate::domain::webhook::revision_events(
                    revision, now, &changes,
                ));
                events
            })
            .await?;
        self.store.commit_plain(txn).await?;
        if recorded {
            self.wake_webhooks();
        }
        tracing::debug!(revision, "tenant feed effects applied");
        self.index.apply_committed(revision, changes, now).await
    }

    /// The catalog as committed, read outside any write transaction (for reads and lists).
    async fn catalog(&self) -> Result<Catalog> {
        self.store.catalog().await
    }

    /// A catalog write's transaction, holding the catalog lock, and the catalog it sees.
    async fn catalog_txn(&self) -> Result<(S::Txn, Catalog)> {
        let (txn, catalog, _) = self.catalog_txn_claiming(None).await?;
        Ok((txn, catalog))
    }

    /// [`Engine::catalog_txn`] for a keyed create: the key is claimed under the lock, before
    /// the catalog is read, so a concurrent twin (which waited for the lock) finds its key
    /// taken and replays the answer rather than meeting the item it created as a conflict.
    async fn catalog_txn_claiming(
        &self,
        claim: Option<idempotency::Claim<'_>>,
    ) -> Result<(S::Txn, Catalog, Option<idempotency::Claimed>)> {
        let txn = self.store.begin().await?;
        self.store.lock_catalog(&txn).await?;
        let claimed = self.claim(&txn, claim).await?;
        let catalog = self.store.catalog_in(&txn).await?;
        Ok((txn, catalog, claimed))
    }

    /// Commits a create's `changes` and answers with `value`, storing the answer (with the
    /// revision) under its claimed key in the same transaction.
    async fn commit_created<T: serde::Serialize>(
        &self,
        txn: S::Txn,
        changes: Vec<IndexChange>,
        claimed: Option<idempotency::Claimed>,
        value: T,
    ) -> Result<Saved<T>> {
        let pending = match claimed {
            Some(claimed) => Some(claimed.answer(&Saved {
                value: &value,
                revision: 0,
            })?),
            None => None,
        };
        let log = self.store.encode(&changes)?;
        let revision = self
            .commit_encoded(txn, changes, log, pending, &Prior::none())
            .await?;
        Ok(Saved { value, revision })
    }
}

/// A write's result and the revision that includes it (a keyed create's stored answer).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Saved<T> {
    pub value: T,
    pub revision: u64,
}
