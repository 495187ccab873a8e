//! The narrow ports through which use-cases reach the outside: storage (split by table
//! group; the transaction is an associated type, so a use-case holds one without naming the
//! database library), the tenant directory and the clock. `storage::Store` implements the
//! storage ports, `clients::tenant` the directory.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantry_common::audit::{AuditPage, AuditQuery, AuditRecord, ExportQuery};
use tenantry_common::idempotency::{Idempotency, StoredKey};
use uuid::Uuid;

pub use crate::clock::Clock;
use crate::domain::audit::AuditEntry;
use crate::domain::catalog::{Catalog, FeatureDoc, FlagDoc, Stored};
use crate::domain::metering::{
    CreditGrant, MeterKey, MeterState, Reservation, StoredDraw, StoredUsage,
};
use crate::domain::transition::{Transition, TransitionKind};
use crate::domain::usage_history::PeriodSummary;
use crate::domain::webhook;
use crate::domain::{
    Aggregation, Grant, GrantStatus, IndexChange, IndexWriter, Plan, Result, Route,
};

/// Storage with transactions. A transaction is begun here, written through the other ports
/// and ended by [`Transactional::commit_plain`] (after [`Revisions::advance`] when it changed
/// what the index holds); dropping it rolls it back.
#[async_trait]
pub trait Transactional: Clone + Send + Sync + std::fmt::Debug + 'static {
    type Txn: Send + Sync;

    /// Starts a writing transaction.
    async fn begin(&self) -> Result<Self::Txn>;

    /// Commits a transaction that changed nothing the index holds (no revision).
    async fn commit_plain(&self, txn: Self::Txn) -> Result<()>;
}

/// A revision taken by [`Revisions::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    pub revision: u64,
    /// An enabled webhook endpoint exists (as the write's transaction sees it).
    pub webhooks_wanted: bool,
}

/// Revisions and the change log: every write that changes the index commits under the next
/// revision with its changes recorded, so other replicas can replay them.
#[async_trait]
pub trait Revisions: Transactional {
    /// A change-log entry, encoded (a large batch encodes it while its rows are inserted).
    type Encoded: Send;

    fn encode(&self, changes: &[IndexChange]) -> Result<Self::Encoded>;

    /// Takes the next revision for `txn` (writers serialize on it until the transaction ends)
    /// and records `log` under it, announced to the other replicas when `txn` commits; says
    /// whether a webhook endpoint is enabled, so the write knows whether to record events.
    /// One round trip on PostgreSQL: every index-changing write pays it.
    async fn advance(
        &self,
        txn: &Self::Txn,
        log: Self::Encoded,
        now: DateTime<Utc>,
    ) -> Result<Advanced>;

    /// The newest committed revision.
    async fn revision(&self) -> Result<u64>;

    /// Change-log entries after `revision`, in order, with their commit times.
    async fn log_after(
        &self,
        revision: u64,
        limit: u64,
    ) -> Result<Vec<(u64, DateTime<Utc>, Vec<IndexChange>)>>;

    /// The evaluation index built from one consistent snapshot, with its revision.
    async fn load_index(&self) -> Result<(IndexWriter, u64)>;
}

/// Features, plans, flags and routes.
#[async_trait]
pub trait CatalogStore: Transactional {
    /// Serializes catalog writers (documents are rewritten whole).
    async fn lock_catalog(&self, txn: &Self::Txn) -> Result<()>;
    /// The catalog as committed.
    async fn catalog(&self) -> Result<Catalog>;
    /// The catalog as `txn` sees it.
    async fn catalog_in(&self, txn: &Self::Txn) -> Result<Catalog>;
    /// Any plan by id, deleted ones included (grants keep pointing at them).
    async fn plans_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Plan>>;
    async fn put_feature(
        &self,
        txn: &Self::Txn,
        doc: &Stored<FeatureDoc>,
        insert: bool,
    ) -> Result<()>;
    async fn delete_feature(&self, txn: &Self::Txn, id: Uuid) -> Result<()>;
    /// Writes a plan and its feature links (`feature_ids`: the ids of its features).
    async fn put_plan(
        &self,
        txn: &Self::Txn,
        plan: &Stored<Plan>,
        feature_ids: &[Uuid],
        insert: bool,
    ) -> Result<()>;
    /// Soft-deletes a plan (grants keep referring to it).
    async fn delete_plan(&self, txn: &Self::Txn, id: Uuid, now: DateTime<Utc>) -> Result<()>;
    async fn put_flag(&self, txn: &Self::Txn, flag: &Stored<FlagDoc>, insert: bool) -> Result<()>;
    async fn delete_flag(&self, txn: &Self::Txn, id: Uuid) -> Result<()>;
    async fn put_route(&self, txn: &Self::Txn, route: &Stored<Route>, insert: bool) -> Result<()>;
    async fn delete_route(&self, txn: &Self::Txn, id: Uuid) -> Result<()>;
}

/// A grant status at an instant, as a list filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusFilter {
    pub status: GrantStatus,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GrantSort {
    #[default]
    CreatedAt,
    ExpiresAt,
}

/// ListGrants' filters; empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub tenant_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub plan_ids: Vec<Uuid>,
    pub statuses: Vec<StatusFilter>,
    pub sources: Vec<String>,
    /// `Some(true)`: user grants only; `Some(false)`: account grants only.
    pub user_level: Option<bool>,
    pub external_id: Option<String>,
    /// Only grants created at or before this instant: a list "as of now" leaves out grants
    /// committed while it ran, whose start may lie after the `now` it evaluates statuses at.
    pub created_until: Option<DateTime<Utc>>,
    pub sort: GrantSort,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
}

/// Grants.
#[async_trait]
pub trait GrantStore: Transactional {
    async fn insert_grants(&self, txn: &Self::Txn, grants: &[Grant]) -> Result<()>;
    async fn update_grant(&self, txn: &Self::Txn, grant: &Grant) -> Result<()>;
    /// Deletes grants; returns how many went.
    async fn delete_grants(&self, txn: &Self::Txn, ids: &[Uuid]) -> Result<u64>;
    /// Committed grants by id.
    async fn grants_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Grant>>;
    /// Grants by id, locked until `txn` ends (writers of the same grant serialize).
    async fn lock_grants(&self, txn: &Self::Txn, ids: &[Uuid]) -> Result<Vec<Grant>>;
    /// One grant (NOT_FOUND when there is none).
    async fn grant(&self, id: Uuid) -> Result<Grant>;
    /// `(tenant, external_id, grant holding it)` for the pairs already taken.
    async fn taken_external_ids(
        &self,
        txn: &Self::Txn,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String, Uuid)>>;
    /// Not-yet-revoked grants of an account (all levels) or of a plan, locked.
    async fn unrevoked_grants(
        &self,
        txn: &Self::Txn,
        tenant_id: Option<&str>,
        plan_id: Option<Uuid>,
    ) -> Result<Vec<Grant>>;
    /// A plan's grants that are active or scheduled at `at`.
    async fn live_grant_count(
        &self,
        txn: &Self::Txn,
        plan_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<u64>;
    /// One page of grants and the count of all that match.
    async fn list_grants(&self, filter: &GrantFilter) -> Result<(Vec<Grant>, u64)>;
    /// A user's grants (in one account, or all), newest first.
    async fn user_grants(&self, user_id: &str, tenant_id: Option<&str>) -> Result<Vec<Grant>>;
    /// The account-level grants of `tenant_ids`, newest first.
    async fn account_grants(&self, tenant_ids: &[String]) -> Result<Vec<Grant>>;
    /// Plans granted to any of the accounts or users.
    async fn granted_plan_ids(
        &self,
        tenant_ids: &[String],
        user_ids: &[String],
    ) -> Result<Vec<Uuid>>;
}

/// An account as the local hierarchy copy holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAccount {
    pub tenant_id: String,
    pub parent_id: Option<String>,
    pub deleted: bool,
}

/// The local copy of the tenant hierarchy and the tenant-feed cursor.
/// An account's written meters: (the user whose own meter, feature id, state).
pub type AccountMeters = Vec<(Option<String>, Uuid, MeterState)>;

#[async_trait]
pub trait AccountStore: Transactional {
    async fn upsert_account(
        &self,
        txn: &Self::Txn,
        tenant_id: &str,
        parent_id: Option<&str>,
        deleted: bool,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Every account the feed has recorded.
    async fn accounts(&self, txn: &Self::Txn) -> Result<Vec<HeldAccount>>;
    /// What the index holds of one account besides its place: every grant of it and its
    /// users (revoked ones included) and each written meter (its user's when a user's own,
    /// by feature id). Read when a deleted account is reactivated, so the index has what a
    /// restart would load.
    async fn account_state(
        &self,
        txn: &Self::Txn,
        tenant_id: &str,
    ) -> Result<(Vec<Grant>, AccountMeters)>;
    /// The feed cursor, locked until `txn` ends (replicas following the same feed serialize
    /// here, so each event applies once).
    async fn lock_cursor(&self, txn: &Self::Txn) -> Result<u64>;
    /// The feed cursor as committed.
    async fn cursor(&self) -> Result<u64>;
    async fn set_cursor(&self, txn: &Self::Txn, sequence: u64, now: DateTime<Utc>) -> Result<()>;
}

/// Idempotency keys and the answers they replay, in their callers' scopes.
#[async_trait]
pub trait IdempotencyStore: Transactional {
    /// What is stored under a caller's key, if anything (committed records only).
    async fn idempotency_record(&self, scope: &str, key: &str) -> Result<Option<StoredKey>>;
    /// Stores a key for `operation` with no answer yet; a key a committed twin stored first
    /// is [`DomainError::IdempotencyKeyTaken`](crate::domain::DomainError).
    async fn claim_idempotency_key(
        &self,
        txn: &Self::Txn,
        key: &Idempotency,
        operation: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Stores a claimed key's answer (once the transaction knows its revision).
    async fn set_idempotent_response(
        &self,
        txn: &Self::Txn,
        scope: &str,
        key: &str,
        response: &str,
    ) -> Result<()>;
    /// Deletes about `limit` keys stored before `before`, oldest first; returns how many went.
    async fn prune_idempotency_keys(&self, before: DateTime<Utc>, limit: u64) -> Result<u64>;
}

/// Everything the use-cases need from storage.
pub trait Storage:
    Revisions
    + CatalogStore
    + GrantStore
    + AccountStore
    + IdempotencyStore
    + AuditStore
    + WebhookStore
    + TransitionStore
    + MeterStore
    + MeterHistoryStore
    + UsageHistoryStore
    + ThresholdStore
    + ReservationStore
{
}

impl<S> Storage for S where
    S: Revisions
        + CatalogStore
        + GrantStore
        + AccountStore
        + IdempotencyStore
        + AuditStore
        + WebhookStore
        + TransitionStore
        + MeterStore
        + MeterHistoryStore
        + UsageHistoryStore
        + ThresholdStore
        + ReservationStore
{
}

/// Which connection [`MeterStore::draw_if_unchanged`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrawLane {
    /// Consumption groups, which run one at a time: the store may keep a connection for them.
    Consumptions,
    /// Any other writer (usage batches run side by side): a pooled connection.
    Pooled,
}

/// A meter a consumption group or usage batch decided on ([`MeterStore::draw_if_unchanged`]): its key, the
/// state it was decided on (as stored), and its state after the group's draws (`None`:
/// nothing drawn on it).
#[derive(Debug, Clone, Copy)]
pub struct SeenMeter<'a> {
    pub owner: &'a MeterKey,
    pub feature_id: Uuid,
    pub before: &'a MeterState,
    pub after: Option<&'a MeterState>,
}

/// Metering: each account's meter of each metered feature (locked by the writes that draw on
/// it), usage events under their idempotency keys, and credit grants.
#[async_trait]
pub trait MeterStore: Transactional {
    /// Locks the given meters until `txn` ends (creating rows for those that have none;
    /// PostgreSQL `FOR UPDATE`, SQLite's write transaction) and returns each (`None`: never
    /// written), in the order given, without repeats. Every writer locks them in one order
    /// of the key (account, feature, user), so none can deadlock.
    async fn lock_meters(
        &self,
        txn: &Self::Txn,
        meters: &[(&MeterKey, Uuid)],
    ) -> Result<Vec<Option<MeterState>>>;
    /// Writes meters locked by `txn`, in one statement.
    async fn put_meters(
        &self,
        txn: &Self::Txn,
        meters: &[(&MeterKey, Uuid, &MeterState)],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Stores a usage event; false when its (account, id) is taken (then nothing changed).
    async fn insert_usage(&self, txn: &Self::Txn, usage: &StoredUsage) -> Result<bool>;
    /// Stores usage events under (account, id) keys `txn` has seen free, and writes the
    /// meters they drew (locked by `txn`), in one statement on PostgreSQL. A key another
    /// writer took meanwhile (its events drew on meters `txn` does not lock) is
    /// `Conflict { kind: "usage event", field: "id" }`, and nothing is stored.
    async fn store_draws(
        &self,
        txn: &Self::Txn,
        usages: &[StoredUsage],
        meters: &[(&MeterKey, Uuid, &MeterState)],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// A consumption group's or usage batch's whole write without a transaction of the
    /// caller's: stores
    /// `usages`, writes each meter of `seen` that has an `after` and takes the next revision
    /// with `changes` logged (announced as [`Revisions::advance`] does), answering it — all
    /// only if every
    /// meter of `seen` is stored exactly as its `before` (a compare-and-swap on the states
    /// the caller decided on). `None`: nothing was written, because a meter moved, a key was
    /// taken, the statement failed, or this store has no such statement (SQLite); the
    /// caller then takes the locked path, which finds out which and reports it.
    async fn draw_if_unchanged(
        &self,
        seen: &[SeenMeter<'_>],
        usages: &[StoredUsage],
        changes: &[IndexChange],
        now: DateTime<Utc>,
        lane: DrawLane,
    ) -> Result<Option<u64>>;
    /// Which of the (account, event id) keys have events stored under them, as `txn` sees it.
    async fn stored_usage_keys(
        &self,
        txn: &Self::Txn,
        keys: &[(&str, &str)],
    ) -> Result<HashSet<(String, String)>>;
    /// The events stored under the (account, event id) keys, as `txn` sees them (any order).
    async fn usage_events(
        &self,
        txn: &Self::Txn,
        keys: &[(&str, &str)],
    ) -> Result<Vec<StoredUsage>>;
    /// Marks `value` counted in the period starting at `period_start`; false when it was.
    async fn insert_unique(
        &self,
        txn: &Self::Txn,
        meter: &MeterKey,
        feature_id: Uuid,
        period_start: DateTime<Utc>,
        value: &str,
    ) -> Result<bool>;
    async fn insert_credit(&self, txn: &Self::Txn, grant: &CreditGrant) -> Result<()>;
    /// Locks a credit grant until `txn` ends.
    async fn lock_credit(&self, txn: &Self::Txn, id: Uuid) -> Result<Option<CreditGrant>>;
    async fn update_credit(&self, txn: &Self::Txn, grant: &CreditGrant) -> Result<()>;
    /// An account's credit grants (of one feature, when given), oldest first.
    async fn credits(&self, tenant_id: &str, feature_id: Option<Uuid>) -> Result<Vec<CreditGrant>>;
    /// The account's events that drew on its meter of `feature_id` in `[from, to)` (by when
    /// they drew; events stored before draws were kept, by when they happened), in draw order,
    /// at most `limit`.
    async fn draws(
        &self,
        meter: &MeterKey,
        feature_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<StoredDraw>>;
    /// The account's latest draw on its meter of `feature_id` before `before`.
    async fn draw_before(
        &self,
        meter: &MeterKey,
        feature_id: Uuid,
        before: DateTime<Utc>,
    ) -> Result<Option<StoredDraw>>;
}

/// One meter's history up to a past instant: what reading the meter then needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterHistory {
    /// The latest draw at or before the instant (the last in draw order of those at its
    /// instant); when no kept draw is, the latest event stored before draws were kept.
    pub latest: Option<StoredDraw>,
    /// The meter's credit grants created by the instant.
    pub credits: Vec<CreditGrant>,
    /// When each manual reset of the meter after `latest` and by the instant happened.
    pub manual_resets: Vec<DateTime<Utc>>,
}

/// Meters at past instants, read from the draws' kept meters.
#[async_trait]
pub trait MeterHistoryStore {
    /// Each meter `(meter, feature, at)` up to its instant, in the order asked: three
    /// statements for up to [`MAX_HISTORY_METERS`] meters, whatever their number.
    async fn meter_histories(
        &self,
        meters: &[(MeterKey, Uuid, DateTime<Utc>)],
    ) -> Result<Vec<MeterHistory>>;
}

/// The most meters one [`MeterHistoryStore::meter_histories`] call reads.
pub const MAX_HISTORY_METERS: usize = 200;

/// Usage history, aggregated by the database.
#[async_trait]
pub trait UsageHistoryStore: Transactional {
    /// The account's usage of `feature_id` (only `user_id`'s, when given) in each window
    /// `[bounds[i], bounds[i + 1])`, aggregated as `aggregation` (refused consumptions count
    /// nothing); one value per window.
    async fn usage_per_window(
        &self,
        tenant_id: &str,
        feature_id: Uuid,
        user_id: Option<&str>,
        aggregation: Aggregation,
        bounds: &[DateTime<Utc>],
    ) -> Result<Vec<i64>>;
    /// Records a closed period (a period already recorded stays as it was).
    async fn insert_period(
        &self,
        txn: &Self::Txn,
        meter: &MeterKey,
        feature_id: Uuid,
        period: &PeriodSummary,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The recorded closed periods of the account's meter that overlap `[from, to)`, oldest
    /// first (at most 1,001).
    async fn closed_periods(
        &self,
        meter: &MeterKey,
        feature_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PeriodSummary>>;
    /// [`UsageHistoryStore::closed_periods`] as `txn` sees them.
    async fn closed_periods_in(
        &self,
        txn: &Self::Txn,
        meter: &MeterKey,
        feature_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PeriodSummary>>;
}

/// Usage thresholds sent: the once-per-period key of `tenantry.usage.threshold.v1`.
#[async_trait]
pub trait ThresholdStore: Transactional {
    /// Records `thresholds` reached by the account's meter of `feature_id` in the period
    /// starting at `period_start`, each if absent; answers those that were absent (ascending).
    /// Recording any forgets the meter's earlier periods.
    async fn record_thresholds(
        &self,
        txn: &Self::Txn,
        meter: &MeterKey,
        feature_id: Uuid,
        period_start: DateTime<Utc>,
        thresholds: &[u16],
        now: DateTime<Utc>,
    ) -> Result<Vec<u16>>;
}

/// Reservations' records (their holds live in the meters' states).
#[async_trait]
pub trait ReservationStore: Transactional {
    /// Stores a reservation with the answer it was given; false when its (account, key) is
    /// taken (then nothing changed).
    async fn insert_reservation(
        &self,
        txn: &Self::Txn,
        reservation: &Reservation,
        answer: &str,
    ) -> Result<bool>;
    /// The reservation asked for under (account, key), with its answer, as `txn` sees it.
    async fn reservation_by_key(
        &self,
        txn: &Self::Txn,
        tenant_id: &str,
        key: &str,
    ) -> Result<Option<(Reservation, String)>>;
    /// A reservation, read in `txn` (its meter's lock already held), or outside any.
    async fn reservation_in(&self, txn: &Self::Txn, id: Uuid) -> Result<Option<Reservation>>;
    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>>;
    async fn update_reservation(&self, txn: &Self::Txn, reservation: &Reservation) -> Result<()>;
}

/// The time-transition scheduler's state: its cursor and the transitions it has decided.
#[async_trait]
pub trait TransitionStore: Transactional {
    /// Takes the scheduler's cursor for `txn`: `None` when another replica holds it
    /// (PostgreSQL skips a locked row; SQLite's write transaction already excludes every other
    /// writer), else how far scans have reached (`Some(None)` before the first round).
    async fn lock_transition_cursor(
        &self,
        txn: &Self::Txn,
    ) -> Result<Option<Option<DateTime<Utc>>>>;
    async fn set_transition_cursor(&self, txn: &Self::Txn, until: DateTime<Utc>) -> Result<()>;
    /// How far scans have reached, read outside any transaction.
    async fn transition_cursor(&self) -> Result<Option<DateTime<Utc>>>;
    /// Whether [`TransitionStore::grants_due`] would find any, read outside any transaction
    /// (an idle round takes no write lock).
    async fn any_grant_due(
        &self,
        kind: TransitionKind,
        lead_secs: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<bool>;
    /// Grants whose `kind` transition (at `lead_secs` for `Expiring`) hangs on an anchor (start
    /// or expiry) in `(from, to]` and has no recorded decision, earliest anchor first, at most
    /// `limit`.
    async fn grants_due(
        &self,
        txn: &Self::Txn,
        kind: TransitionKind,
        lead_secs: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Grant>>;
    /// Records the decision on `transition`; false when one was already recorded (then
    /// nothing changed).
    async fn record_transition(
        &self,
        txn: &Self::Txn,
        transition: &Transition,
        sent: bool,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Deletes decisions on anchors before `before` (no scan reaches back to them).
    async fn prune_transitions(&self, txn: &Self::Txn, before: DateTime<Utc>) -> Result<u64>;
    /// The last committed revision, as `txn` sees it.
    async fn revision_in(&self, txn: &Self::Txn) -> Result<u64>;
}

/// The audit log: a write records its entries in its own transaction; reads page and export.
#[async_trait]
pub trait AuditStore: Transactional {
    /// Whether writes record audit entries (`audit_enabled`): when not, [`Self::record_audit`]
    /// records nothing.
    fn audit_enabled(&self) -> bool;
    /// Records `entries` in `txn`, naming the running call's actor, request and trace.
    async fn record_audit(
        &self,
        txn: &Self::Txn,
        entries: &[AuditEntry],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// A page of entries matching `query`, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage>;
    /// Deletes up to `limit` entries recorded before `before` (retention, the only delete).
    async fn prune_audit(&self, before: DateTime<Utc>, limit: u64) -> Result<u64>;
    /// Up to `limit` entries of `export` after `after_sequence`, oldest first.
    async fn export_audit(
        &self,
        export: &ExportQuery,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>>;
}

/// A delivery due for an attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub url: String,
    pub secret: String,
    pub event_id: String,
    pub body: String,
    pub attempts: u32,
}

/// What one attempt found.
#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub succeeded: bool,
    /// When to try again; `None`: no more attempts (succeeded, or the schedule is spent).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Webhook endpoints, the event outbox and the delivery log.
#[async_trait]
pub trait WebhookStore: Transactional {
    /// Whether an enabled endpoint exists, as `txn` sees it (writes record no events when
    /// none does).
    async fn webhooks_wanted(&self, txn: &Self::Txn) -> Result<bool>;
    /// [`WebhookStore::webhooks_wanted`] outside any transaction.
    async fn webhooks_wanted_now(&self) -> Result<bool>;
    /// Adds `events` to the outbox in `txn`, in order.
    async fn enqueue_events(
        &self,
        txn: &Self::Txn,
        events: &[webhook::Event],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Moves up to `limit` outbox rows into a delivery per event and enabled endpoint that
    /// wants it ([`webhook::Endpoint::wants`]), in one transaction; one replica at a time
    /// (another's concurrent call moves nothing). Returns how many outbox rows it moved.
    async fn fan_out(&self, limit: u64, now: DateTime<Utc>) -> Result<usize>;
    /// Claims up to `limit` pending deliveries due by `now` of enabled endpoints: each is
    /// hidden from other claims until `lease_until` (a crash mid-attempt retries it then).
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DueDelivery>>;
    /// Records an attempt on a delivery and on its endpoint's failing streak; answers since
    /// when the endpoint has been failing (`None` after a success).
    async fn record_attempt(
        &self,
        delivery: Uuid,
        endpoint: Uuid,
        attempt: &AttemptRecord,
    ) -> Result<Option<DateTime<Utc>>>;
    /// Deletes up to `limit` finished (succeeded or failed) deliveries queued before `before`;
    /// answers how many.
    async fn prune_deliveries(&self, before: DateTime<Utc>, limit: u64) -> Result<u64>;
    /// Disables an endpoint for `reason`.
    async fn disable_endpoint(&self, id: Uuid, reason: &str, now: DateTime<Utc>) -> Result<()>;

    async fn count_endpoints(&self) -> Result<usize>;
    async fn insert_endpoint(
        &self,
        txn: &Self::Txn,
        endpoint: &webhook::Endpoint,
        secret: &str,
    ) -> Result<()>;
    async fn endpoint(&self, id: Uuid) -> Result<Option<webhook::Endpoint>>;
    /// Oldest first.
    async fn endpoints(&self) -> Result<Vec<webhook::Endpoint>>;
    /// Replaces the endpoint's settings (not its secret); false when it does not exist.
    async fn update_endpoint(&self, txn: &Self::Txn, endpoint: &webhook::Endpoint) -> Result<bool>;
    async fn set_endpoint_secret(
        &self,
        txn: &Self::Txn,
        id: Uuid,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Deletes the endpoint and its deliveries; false when it does not exist.
    async fn delete_endpoint(&self, txn: &Self::Txn, id: Uuid) -> Result<bool>;
    /// An endpoint's deliveries with IDs below `before`, newest first.
    async fn deliveries(
        &self,
        endpoint: Uuid,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<webhook::Delivery>>;
    /// Makes a delivery pending and due at `now` with its attempts reset; `None` when the
    /// endpoint has no such delivery.
    async fn redeliver(
        &self,
        txn: &Self::Txn,
        endpoint: Uuid,
        delivery: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<webhook::Delivery>>;
}

/// Which accounts exist, as the tenant service says.
#[async_trait]
pub trait TenantDirectory: Send + Sync + std::fmt::Debug {
    /// The live accounts among `ids` (UNAVAILABLE when the directory cannot be asked).
    async fn live(&self, ids: &[String]) -> Result<HashSet<String>>;
}
