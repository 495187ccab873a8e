//! Webhooks: endpoint management, the events a commit records, and the delivery loop.
//!
//! Events are recorded in the outbox by the transaction that commits the change (a revision's
//! catalog and grant changes, a tenant-feed event's account change), so an event exists if and
//! only if its change committed. The loop moves outbox rows into one delivery per event and
//! endpoint (one replica at a time), then claims due deliveries (a lease: a replica that dies
//! mid-attempt leaves the delivery to be retried when the lease ends), signs and sends them,
//! and records each attempt: at least once, on a bounded, jittered retry schedule. Ordering is
//! not promised, per account or otherwise: a retried event can arrive after later ones;
//! receivers order by the CloudEvent's `tenantryrevision` / `tenantrysequence`.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use tenantry_common::CancellationToken;
use tokio::sync::Notify;
use uuid::Uuid;

use super::Engine;
use super::ports::{AttemptRecord, Clock, DueDelivery, Storage};
use crate::domain::audit::AuditEntry;
use crate::domain::webhook::{self, DISABLED_FAILING, Delivery, Endpoint, Event, MAX_ENDPOINTS};
use crate::domain::{DomainError, Result};
use serde_json::{Value, json};

/// How deliveries are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Deliver to (and accept endpoints on) private, loopback and link-local addresses.
    pub allow_private_networks: bool,
    /// The wait before each retry; its length bounds the attempts (one more than its steps).
    pub retry_schedule: Vec<Duration>,
    /// One attempt's limit, connection to last byte.
    pub timeout: Duration,
    /// An endpoint failing this long without a success is disabled.
    pub disable_after: Duration,
    /// How often the loop looks for work when nothing wakes it.
    pub poll: Duration,
    /// Most deliveries in flight at once per replica.
    pub concurrency: usize,
    /// Finished deliveries are deleted from the log after this long.
    pub delivery_retention: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            retry_schedule: [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]
                .map(Duration::from_secs)
                .to_vec(),
            timeout: Duration::from_secs(10),
            disable_after: Duration::from_secs(5 * 24 * 3_600),
            poll: Duration::from_secs(1),
            concurrency: 16,
            delivery_retention: Duration::from_secs(30 * 24 * 3_600),
        }
    }
}

/// One HTTP attempt's outcome.
#[derive(Debug, Clone, Default)]
pub struct SendOutcome {
    /// The answer's status; `None` when there was none.
    pub status: Option<u16>,
    pub excerpt: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
}

/// Sends webhook requests; where a host points is vetted here (no DNS-rebinding gap: the
/// connection goes to the address that was vetted).
#[async_trait]
pub trait WebhookSender: Send + Sync + Debug {
    /// Refuses a host that is, or resolves only to, an address deliveries may not reach
    /// (INVALID_ARGUMENT on `url`). A name that does not resolve is refused too.
    async fn vet(&self, host: &str, port: u16) -> Result<()>;
    /// POSTs `body` with `headers` to `url`.
    async fn send(
        &self,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: String,
    ) -> SendOutcome;
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<String>,
    pub account_ids: Vec<String>,
    pub enabled: bool,
    pub description: String,
}

/// Changes to an endpoint; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub account_ids: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
}

const ACTION_CREATE: &str = "webhook.create";
const ACTION_UPDATE: &str = "webhook.update";
const ACTION_DELETE: &str = "webhook.delete";
const ACTION_ROTATE_SECRET: &str = "webhook.rotate_secret";
const ACTION_REDELIVER: &str = "webhook.redeliver";

/// An endpoint as its audit entries show it (never its secret).
fn view(e: &Endpoint) -> Value {
    json!({
        "url": e.url,
        "eventTypes": e.event_types,
        "accountIds": e.account_ids,
        "enabled": e.enabled,
        "description": e.description,
        "disabledReason": e.disabled_reason,
    })
}

fn audit(action: &'static str, id: Uuid, before: Value, after: Value) -> AuditEntry {
    AuditEntry::new(action, "webhook", id.to_string(), None, before, after)
}

/// How often finished deliveries past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Most deliveries a list answers.
pub const MAX_DELIVERY_PAGE: u32 = 100;

/// The webhook use-cases and the delivery loop.
#[derive(Debug)]
pub struct Webhooks<S: Storage> {
    store: S,
    sender: Arc<dyn WebhookSender>,
    clock: Arc<dyn Clock>,
    settings: WebhookSettings,
    /// Poked by this replica's commits that record events.
    wake: Arc<Notify>,
}

fn parse_id(field: &str, value: &str) -> Result<Uuid> {
    Uuid::parse_str(value).map_err(|_| DomainError::invalid(field, "must be a UUID"))
}

fn not_found(id: impl ToString) -> DomainError {
    DomainError::not_found("webhook", id)
}

impl<S: Storage> Webhooks<S> {
    pub fn new(
        store: S,
        sender: Arc<dyn WebhookSender>,
        clock: Arc<dyn Clock>,
        settings: WebhookSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            sender,
            clock,
            settings,
            wake,
        }
    }

    /// A URL's shape and where it points.
    async fn check_url(&self, url: &str) -> Result<()> {
        let (host, port) = webhook::validate_url(url)?;
        if self.settings.allow_private_networks {
            return Ok(());
        }
        self.sender.vet(&host, port).await
    }

    /// Registers an endpoint; answers it with its secret (shown only now).
    pub async fn create(&self, new: NewEndpoint) -> Result<(Endpoint, String)> {
        webhook::validate_event_types(&new.event_types)?;
        webhook::validate_account_ids(&new.account_ids)?;
        webhook::validate_description(&new.description)?;
        self.check_url(&new.url).await?;
        if self.store.count_endpoints().await? >= MAX_ENDPOINTS {
            return Err(DomainError::FailedPrecondition(format!(
                "at most {MAX_ENDPOINTS} webhook endpoints; delete one first"
            )));
        }
        let now = self.clock.now();
        let endpoint = Endpoint {
            id: Uuid::now_v7(),
            url: new.url,
            event_types: new.event_types,
            account_ids: new.account_ids,
            enabled: new.enabled,
            description: new.description,
            disabled_reason: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let secret = webhook::new_secret();
        let txn = self.store.begin().await?;
        self.store.insert_endpoint(&txn, &endpoint, &secret).await?;
        let entry = audit(ACTION_CREATE, endpoint.id, Value::Null, view(&endpoint));
        self.commit_audited(txn, entry).await?;
        Ok((endpoint, secret))
    }

    pub async fn get(&self, id: &str) -> Result<Endpoint> {
        let uuid = parse_id("id", id)?;
        self.store
            .endpoint(uuid)
            .await?
            .ok_or_else(|| not_found(id))
    }

    pub async fn list(&self) -> Result<Vec<Endpoint>> {
        self.store.endpoints().await
    }

    pub async fn update(&self, id: &str, patch: EndpointPatch) -> Result<Endpoint> {
        let mut endpoint = self.get(id).await?;
        let before = view(&endpoint);
        if let Some(types) = &patch.event_types {
            webhook::validate_event_types(types)?;
        }
        if let Some(accounts) = &patch.account_ids {
            webhook::validate_account_ids(accounts)?;
        }
        if let Some(description) = &patch.description {
            webhook::validate_description(description)?;
        }
        if let Some(url) = &patch.url {
            self.check_url(url).await?;
        }
        if let Some(url) = patch.url {
            endpoint.url = url;
        }
        if let Some(types) = patch.event_types {
            endpoint.event_types = types;
        }
        if let Some(accounts) = patch.account_ids {
            endpoint.account_ids = accounts;
        }
        if let Some(description) = patch.description {
            endpoint.description = description;
        }
        if let Some(enabled) = patch.enabled {
            if enabled {
                // Enabled by hand: the failure streak that disabled it starts over.
                endpoint.disabled_reason = None;
                endpoint.failing_since = None;
            }
            endpoint.enabled = enabled;
        }
        endpoint.updated_at = self.clock.now();
        let txn = self.store.begin().await?;
        if !self.store.update_endpoint(&txn, &endpoint).await? {
            return Err(not_found(id));
        }
        let entry = audit(ACTION_UPDATE, endpoint.id, before, view(&endpoint));
        self.commit_audited(txn, entry).await?;
        if endpoint.enabled {
            self.wake.notify_one();
        }
        Ok(endpoint)
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let endpoint = self.get(id).await?;
        let txn = self.store.begin().await?;
        if !self.store.delete_endpoint(&txn, endpoint.id).await? {
            return Err(not_found(id));
        }
        let entry = audit(ACTION_DELETE, endpoint.id, view(&endpoint), Value::Null);
        self.commit_audited(txn, entry).await
    }

    /// Replaces an endpoint's secret; answers the new one.
    pub async fn rotate_secret(&self, id: &str) -> Result<String> {
        let endpoint = self.get(id).await?;
        let secret = webhook::new_secret();
        let now = self.clock.now();
        let txn = self.store.begin().await?;
        if !self
            .store
            .set_endpoint_secret(&txn, endpoint.id, &secret, now)
            .await?
        {
            return Err(not_found(id));
        }
        // The secret itself is never recorded: the entry says when it was replaced (a field name
        // without "secret", which the redaction rule would hide).
        let entry = audit(
            ACTION_ROTATE_SECRET,
            endpoint.id,
            json!({ "rotatedAt": Value::Null }),
            json!({ "rotatedAt": now }),
        );
        self.commit_audited(txn, entry).await?;
        Ok(secret)
    }

    /// An endpoint's deliveries, newest first, after `cursor` (a delivery ID); answers the
    /// next page's cursor when there may be more.
    pub async fn deliveries(
        &self,
        endpoint: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<(Vec<Delivery>, Option<String>)> {
        let limit = limit.unwrap_or(50);
        if !(1..=MAX_DELIVERY_PAGE).contains(&limit) {
            return Err(DomainError::invalid("limit", "must be 1-100"));
        }
        let endpoint_id = self.get(endpoint).await?.id;
        let before = cursor.map(|c| parse_id("cursor", c)).transpose()?;
        let mut items = self
            .store
            .deliveries(endpoint_id, before, u64::from(limit) + 1)
            .await?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|d| d.id.to_string())
        } else {
            None
        };
        Ok((items, next))
    }

    /// Schedules a delivery again, at once.
    pub async fn redeliver(&self, endpoint: &str, delivery: &str) -> Result<Delivery> {
        let endpoint_id = parse_id("endpointId", endpoint)?;
        let delivery_id = parse_id("deliveryId", delivery)?;
        let txn = self.store.begin().await?;
        let found = self
            .store
            .redeliver(&txn, endpoint_id, delivery_id, self.clock.now())
            .await?
            .ok_or_else(|| DomainError::not_found("webhook delivery", delivery))?;
        let entry = audit(
            ACTION_REDELIVER,
            endpoint_id,
            Value::Null,
            json!({ "deliveryId": delivery_id, "eventId": found.event_id }),
        );
        self.commit_audited(txn, entry).await?;
        self.wake.notify_one();
        Ok(found)
    }

    /// Commits a management write with its audit entry, in its transaction.
    async fn commit_audited(&self, txn: S::Txn, entry: AuditEntry) -> Result<()> {
        self.store
            .record_audit(&txn, &[entry], self.clock.now())
            .await?;
        self.store.commit_plain(txn).await
    }

    /// Runs the delivery loop until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.settings.concurrency.max(1),
        ));
        let mut pruned_at = Instant::now();
        loop {
            if pruned_at.elapsed() >= PRUNE_EVERY {
                pruned_at = Instant::now();
                self.prune().await;
            }
            let busy = match self.round(&permits).await {
                Ok(busy) => busy,
                Err(err) => {
                    tracing::warn!(error = %err, "webhook delivery round failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        // Attempts in flight finish (or the lease retries them after a restart).
        let _ = tokio::time::timeout(
            self.settings.timeout,
            permits.acquire_many(self.settings.concurrency.max(1) as u32),
        )
        .await;
    }

    /// Deletes finished deliveries older than the retention, in bounded batches.
    async fn prune(&self) {
        const BATCH: u64 = 500;
        let Ok(retention) = chrono::Duration::from_std(self.settings.delivery_retention) else {
            return;
        };
        let before = self.clock.now() - retention;
        loop {
            match self.store.prune_deliveries(before, BATCH).await {
                Ok(n) if n == BATCH => {}
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "pruning webhook deliveries failed; will retry");
                    break;
                }
            }
        }
    }

    /// One round: the outbox into deliveries, then the due deliveries started. Answers
    /// whether there may be more work at once.
    async fn round(self: &Arc<Self>, permits: &Arc<tokio::sync::Semaphore>) -> Result<bool> {
        const BATCH: u64 = 100;
        let now = self.clock.now();
        let moved = self.store.fan_out(BATCH, now).await?;
        let free = permits.available_permits() as u64;
        if free == 0 {
            return Ok(false);
        }
        // The lease outlasts an attempt (bounded by the timeout) and its recording, so no
        // other replica starts it meanwhile; a replica that dies leaves it for this long.
        let lease = now
            + chrono::Duration::from_std(self.settings.timeout * 2 + Duration::from_secs(1))
                .unwrap_or_else(|_| chrono::Duration::minutes(10));
        let due = self.store.claim_due(now, lease, free).await?;
        let claimed = due.len() as u64;
        for delivery in due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let id = delivery.id;
                if let Err(err) = this.attempt(delivery).await {
                    tracing::warn!(delivery = %id, error = %err, "recording a webhook attempt failed");
                }
                drop(permit);
            });
        }
        Ok(moved > 0 || claimed == free)
    }

    /// One attempt: sign, send, record, and disable the endpoint after sustained failure.
    async fn attempt(&self, due: DueDelivery) -> Result<()> {
        let started = Instant::now();
        let at = self.clock.now();
        let timestamp = at.timestamp();
        let signature = webhook::sign(&due.secret, &due.event_id, timestamp, &due.body)?;
        let headers = vec![
            ("webhook-id", due.event_id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
            ("content-type", "application/cloudevents+json".to_owned()),
        ];
        let outcome = self.sender.send(&due.url, headers, due.body).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let succeeded = outcome.status.is_some_and(|s| (200..300).contains(&s));
        let failures = due.attempts + 1;
        let next_attempt_at = if succeeded {
            None
        } else {
            let unit: f64 = rand::rng().random();
            webhook::retry_delay(&self.settings.retry_schedule, failures, unit)
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| at + d)
        };
        let record = AttemptRecord {
            at,
            status_code: outcome.status,
            latency_ms,
            response_excerpt: outcome.excerpt,
            error: outcome.error,
            succeeded,
            next_attempt_at,
        };
        tracing::debug!(
            delivery = %due.id,
            endpoint = %due.endpoint_id,
            status = ?record.status_code,
            succeeded,
            "webhook attempt"
        );
        let failing_since = self
            .store
            .record_attempt(due.id, due.endpoint_id, &record)
            .await?;
        if let Some(since) = failing_since {
            let sustained = chrono::Duration::from_std(self.settings.disable_after)
                .is_ok_and(|limit| at - since >= limit);
            if sustained {
                tracing::warn!(endpoint = %due.endpoint_id, "webhook endpoint disabled after sustained failure");
                self.store
                    .disable_endpoint(due.endpoint_id, DISABLED_FAILING, at)
                    .await?;
            }
        }
        Ok(())
    }
}

impl<S: Storage> Engine<S> {
    /// Records the events `build` makes in `txn` — built only when an endpoint is enabled
    /// (else the write pays one indexed lookup, and a large batch no serialization). Answers
    /// whether any were recorded (wake the loop after the commit).
    pub(super) async fn record_events(
        &self,
        txn: &S::Txn,
        build: impl FnOnce() -> Vec<Event> + Send,
    ) -> Result<bool> {
        let wanted = self.store.webhooks_wanted(txn).await?;
        self.record_wanted_events(txn, wanted, build).await
    }

    /// [`Engine::record_events`] when whether an endpoint is enabled is already known.
    pub(super) async fn record_wanted_events(
        &self,
        txn: &S::Txn,
        wanted: bool,
        build: impl FnOnce() -> Vec<Event> + Send,
    ) -> Result<bool> {
        if !wanted {
            return Ok(false);
        }
        let events = build();
        if events.is_empty() {
            return Ok(false);
        }
        self.store.enqueue_events(txn, &events, self.now()).await?;
        Ok(true)
    }

    /// Wakes this replica's delivery loop (after a commit that recorded events).
    pub(super) fn wake_webhooks(&self) {
        self.webhook_wake.notify_one();
    }

    /// The signal the delivery loop waits on besides its poll.
    pub fn webhook_wake(&self) -> Arc<Notify> {
        self.webhook_wake.clone()
    }
}
