//! Metering's records and their validation: usage events, credit grants and the stored answer
//! of a consumption. The arithmetic (periods, burn-down, rollover) is the index's
//! `tenantry_index::metering`.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{AllowReason, DomainError, ItemError, Justification, Result};
pub use tenantry_index::metering::{
    ALLOWANCE_ID, ALLOWANCE_PRIORITY, Credit, DrawError, Hold, MeterReading, MeterSpec, MeterState,
    Recurrence, Rollover, UsagePeriod,
};

/// Events per RecordUsage call.
pub const MAX_USAGE_BATCH: usize = 1_000;
/// The largest amount one event or credit grant may carry: sums of a period's events stay far
/// from `i64`'s limit.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;
/// How far ahead of the service's clock an event's timestamp may be (clock skew).
pub const MAX_FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);
/// Longest idempotency key, unique value and user ID of an event.
pub const MAX_EVENT_TEXT: usize = 255;
/// Highest credit-grant priority.
pub const MAX_PRIORITY: u32 = 1_000;
/// Largest credit-grant metadata, serialized.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest a reservation may hold its amount.
pub const MAX_HOLD_TTL: TimeDelta = TimeDelta::days(7);
/// Live holds one meter may carry: each is checked by every reading of the meter.
pub const MAX_LIVE_HOLDS: usize = 1_000;

/// Whose meter of a feature: an account's (`user_id` `None`), or one of its users' own — the
/// meter a user draws on while the user's own grants allocate the feature (README
/// "Per-user meters"). Ordered by account, then user (the account's first): the order writers
/// lock meters in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeterKey {
    pub tenant_id: String,
    pub user_id: Option<String>,
}

impl MeterKey {
    pub fn account(tenant_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            user_id: None,
        }
    }

    pub fn new(tenant_id: &str, user_id: Option<&str>) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.map(str::to_owned),
        }
    }

    pub fn user(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// A usage event as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsage {
    pub id: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub feature_key: String,
    pub amount: i64,
    /// `None`: when received.
    pub at: Option<DateTime<Utc>>,
    pub unique: Option<String>,
}

/// What became of one reported event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UsageOutcome {
    /// Counted in the open period.
    Recorded,
    /// Its id was seen before: nothing counted again.
    Duplicate,
    /// Counted in the closed period it belongs to; the open balance is unchanged.
    Late,
}

/// How a stored event was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredOutcome {
    Recorded,
    Late,
    /// A consumption that was allowed.
    Consumed,
    /// A consumption that was refused (kept so a retry answers the same).
    Refused,
}

impl StoredOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredOutcome::Recorded => "recorded",
            StoredOutcome::Late => "late",
            StoredOutcome::Consumed => "consumed",
            StoredOutcome::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "recorded" => StoredOutcome::Recorded,
            "late" => StoredOutcome::Late,
            "consumed" => StoredOutcome::Consumed,
            "refused" => StoredOutcome::Refused,
            _ => return None,
        })
    }
}

/// A usage event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUsage {
    pub tenant_id: String,
    pub event_id: String,
    pub feature_id: Uuid,
    pub user_id: Option<String>,
    /// As reported.
    pub amount: i64,
    /// What it added to its period's usage (COUNT: 1; MAX: the rise; UNIQUE_COUNT: 1 or 0).
    pub counted: i64,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub outcome: StoredOutcome,
    /// A consumption's answer (JSON of [`ConsumeAnswer`]).
    pub answer: Option<String>,
    /// The value a UNIQUE_COUNT feature counts (history's distinct counts per window).
    pub unique: Option<String>,
    /// The meter right after this event drew on it (the balance burn-down's point); `None` for
    /// events that drew nothing (late, refused) and for events stored before it was kept.
    pub drawn: Option<Drawn>,
}

/// A stored event that drew on its meter, as the burn-down reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDraw {
    pub event_id: String,
    pub outcome: StoredOutcome,
    /// When it drew (for an event stored before draws were kept, when it happened).
    pub at: DateTime<Utc>,
    /// When it was written: before `at` for a draw dated ahead of the clock (just after a
    /// reset that started the period ahead), so credit writes timed in between came after it.
    pub received_at: DateTime<Utc>,
    /// `None`: stored before draws were kept; its balance is unknown.
    pub drawn: Option<Drawn>,
}

/// A meter right after a draw: when the draw took effect (a late event of the open period is
/// drawn as of the latest draw), the meter then (holds left out: a hold is not a draw) and the
/// plan allowance it drew with (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drawn {
    #[serde(skip)]
    pub at: DateTime<Utc>,
    /// The account whose meter it drew on: the reporting account's, or its pool owner's.
    #[serde(skip)]
    pub on: String,
    /// Set when it drew on that user's own meter (of `on`).
    #[serde(skip)]
    pub on_user: Option<String>,
    pub allowance: Option<i64>,
    pub state: MeterState,
}

impl Drawn {
    /// `on`'s meter `state` just after a draw, with the plan allowance `allowance` then.
    pub fn after(on: &MeterKey, state: &MeterState, allowance: crate::domain::Limit) -> Self {
        let mut state = state.clone();
        state.holds = Vec::new();
        Self {
            at: state.last_draw,
            on: on.tenant_id.clone(),
            on_user: on.user_id.clone(),
            allowance: match allowance {
                crate::domain::Limit::Finite(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
                crate::domain::Limit::Unlimited => None,
            },
            state,
        }
    }

    /// The plan allowance as the meter takes it.
    pub fn limit(&self) -> crate::domain::Limit {
        match self.allowance {
            Some(n) => crate::domain::Limit::Finite(u64::try_from(n).unwrap_or(0)),
            None => crate::domain::Limit::Unlimited,
        }
    }
}

/// A consumption's answer, stored with it so a retry returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeAnswer {
    pub consumed: bool,
    pub justification: Option<Justification>,
    pub allow_reason: Option<AllowReason>,
    pub meter: Option<MeterReading>,
    pub revision: u64,
    /// The account whose meter `meter` is when not the consumer's own: the ancestor whose
    /// pool it drew on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_owner: Option<String>,
    /// Set when `meter` is the consuming user's own meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_user: Option<String>,
}

/// A consumption as asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewConsumption {
    pub id: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub feature_key: String,
    pub amount: i64,
}

/// A credit grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditGrant {
    pub id: Uuid,
    pub tenant_id: String,
    /// Set when it credits that user's own meter (README "Per-user meters").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub feature_id: Uuid,
    pub feature_key: String,
    pub amount: i64,
    pub priority: u32,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rollover: Rollover,
    #[serde(default)]
    pub metadata: Value,
    pub voided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl CreditGrant {
    /// The grant as a meter draws on it (its whole amount; the meter keeps what remains).
    pub fn credit(&self) -> Credit {
        Credit {
            id: self.id,
            priority: self.priority,
            effective_at: self.effective_at,
            expires_at: self.expires_at,
            voided_at: self.voided_at,
            balance: self.amount,
            rollover: self.rollover,
        }
    }
}

/// A credit grant as asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCreditGrant {
    pub tenant_id: String,
    /// Credits this user's own meter (the user's own grants must allocate the feature).
    pub user_id: Option<String>,
    pub feature_key: String,
    pub amount: i64,
    pub priority: Option<u32>,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub rollover: Option<Rollover>,
    pub metadata: Value,
}

/// An optional `user_id` selecting a user's meter: 1–255 characters, none of them control
/// characters.
pub fn validate_user_id(user_id: Option<&str>) -> Result<()> {
    if user_id.is_some_and(|u| !plain_text(u)) {
        return Err(DomainError::invalid(
            "user_id",
            "must be 1-255 characters, none of them control characters",
        ));
    }
    Ok(())
}

/// A user id or unique value: 1–255 bytes without control characters (a NUL could not be
/// stored by PostgreSQL at all).
pub(crate) fn plain_text(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_EVENT_TEXT && !text.chars().any(char::is_control)
}

fn visible(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_EVENT_TEXT && text.chars().all(|c| c.is_ascii_graphic())
}

/// An event's fields that need no catalog: the key, account, user, amount, time and unique
/// value. `(field, message)` of the first problem.
pub fn usage_problem(event: &NewUsage, now: DateTime<Utc>) -> Option<(&'static str, String)> {
    if !visible(&event.id) {
        return Some(("id", "must be 1-255 visible ASCII characters".into()));
    }
    if let Some(message) = super::validate::tenant_id_problem(&event.tenant_id) {
        return Some(("tenant_id", message.to_string()));
    }
    if event.user_id.as_deref().is_some_and(|u| !plain_text(u)) {
        return Some((
            "user_id",
            "must be 1-255 characters, none of them control characters".into(),
        ));
    }
    if !(0..=MAX_AMOUNT).contains(&event.amount) {
        return Some(("amount", "must be between 0 and 10^15".into()));
    }
    if event.at.is_some_and(|at| at > now + MAX_FUTURE_SKEW) {
        return Some(("timestamp", "is more than 5 minutes in the future".into()));
    }
    if event.unique.as_deref().is_some_and(|u| !plain_text(u)) {
        return Some((
            "unique",
            "must be 1-255 characters, none of them control characters".into(),
        ));
    }
    None
}

/// Refuses an empty or oversized batch; lists the events with a bad field (the first of each).
pub fn validate_usage_batch(events: &[NewUsage], now: DateTime<Utc>) -> Result<Vec<ItemError>> {
    if events.is_empty() || events.len() > MAX_USAGE_BATCH {
        return Err(DomainError::invalid(
            "events",
            format!("must hold 1 to {MAX_USAGE_BATCH} events"),
        ));
    }
    let items: Vec<ItemError> = events
        .iter()
        .enumerate()
        .filter_map(|(index, e)| {
            usage_problem(e, now).map(|(field, message)| ItemError::new(index, field, message))
        })
        .collect();
    Ok(items)
}

/// A consumption's own fields.
pub fn validate_consumption(c: &NewConsumption) -> Result<()> {
    if !visible(&c.id) {
        return Err(DomainError::invalid(
            "id",
            "must be 1-255 visible ASCII characters",
        ));
    }
    super::validate_tenant_id("tenant_id", &c.tenant_id)?;
    if c.user_id.as_deref().is_some_and(|u| !plain_text(u)) {
        return Err(DomainError::invalid(
            "user_id",
            "must be 1-255 characters, none of them control characters",
        ));
    }
    if !(1..=MAX_AMOUNT).contains(&c.amount) {
        return Err(DomainError::invalid(
            "amount",
            "must be between 1 and 10^15",
        ));
    }
    Ok(())
}

/// A credit grant's own fields, with the defaults filled in.
pub fn credit_grant(
    new: NewCreditGrant,
    feature_id: Uuid,
    now: DateTime<Utc>,
) -> Result<CreditGrant> {
    super::validate_tenant_id("tenant_id", &new.tenant_id)?;
    validate_user_id(new.user_id.as_deref())?;
    if !(1..=MAX_AMOUNT).contains(&new.amount) {
        return Err(DomainError::invalid(
            "amount",
            "must be between 1 and 10^15",
        ));
    }
    let priority = new.priority.unwrap_or(ALLOWANCE_PRIORITY);
    if priority > MAX_PRIORITY {
        return Err(DomainError::invalid(
            "priority",
            format!("must be at most {MAX_PRIORITY}"),
        ));
    }
    let effective_at = new.effective_at.unwrap_or(now);
    if new.expires_at.is_some_and(|e| e <= effective_at) {
        return Err(DomainError::invalid(
            "expires_at",
            "must be after effective_at",
        ));
    }
    let rollover = new.rollover.unwrap_or(Rollover {
        min: 0,
        max: new.amount,
    });
    if rollover.min < 0 || rollover.min > rollover.max || rollover.max > MAX_AMOUNT {
        return Err(DomainError::invalid(
            "rollover",
            "needs 0 <= min <= max <= 10^15",
        ));
    }
    if !(new.metadata.is_null() || new.metadata.is_object()) {
        return Err(DomainError::invalid("metadata", "must be a JSON object"));
    }
    if new.metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(DomainError::invalid("metadata", "must be at most 16 KiB"));
    }
    Ok(CreditGrant {
        id: Uuid::now_v7(),
        tenant_id: new.tenant_id,
        user_id: new.user_id,
        feature_id,
        feature_key: new.feature_key,
        amount: new.amount,
        priority,
        effective_at,
        expires_at: new.expires_at,
        rollover,
        metadata: new.metadata,
        voided_at: None,
        created_at: now,
    })
}

/// A reservation as asked for: hold `amount` for `ttl`, idempotent on (account, `id`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewReservation {
    pub id: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub feature_key: String,
    pub amount: i64,
    pub ttl: TimeDelta,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    /// Holding its amount until it expires.
    Held,
    /// Refused when asked for: nothing held.
    Refused,
    Committed,
    Released,
    /// Held until its expiry passed; nothing was drawn.
    Expired,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Held => "held",
            ReservationStatus::Refused => "refused",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
        }
    }

    /// The stored status (expiry is not stored: it is read off the clock).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "held" => ReservationStatus::Held,
            "refused" => ReservationStatus::Refused,
            "committed" => ReservationStatus::Committed,
            "released" => ReservationStatus::Released,
            _ => return None,
        })
    }
}

/// A reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The hold's id.
    pub id: Uuid,
    /// The idempotency key it was asked for with.
    pub key: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub feature_id: Uuid,
    pub feature_key: String,
    pub amount: i64,
    /// As stored; [`Reservation::status_at`] reads an expired hold as expired.
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    /// What a commit drew.
    pub committed_amount: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// When it was committed or released.
    pub settled_at: Option<DateTime<Utc>>,
    /// The account whose meter holds it when not `tenant_id` (an ancestor's pool, as of the
    /// hold): its commit or release settles there even if the account has moved since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_owner: Option<String>,
    /// Set when the hold is on `user_id`'s own meter (as of the hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_user: Option<String>,
}

impl Reservation {
    /// The meter holding it.
    pub fn meter_key(&self) -> MeterKey {
        MeterKey {
            tenant_id: self
                .meter_owner
                .clone()
                .unwrap_or_else(|| self.tenant_id.clone()),
            user_id: self.meter_user.clone(),
        }
    }

    pub fn status_at(&self, at: DateTime<Utc>) -> ReservationStatus {
        if self.status == ReservationStatus::Held && at >= self.expires_at {
            ReservationStatus::Expired
        } else {
            self.status
        }
    }

    /// The reservation as it reads at `at` (its status brought up to date).
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.status = self.status_at(at);
        self
    }

    pub fn hold(&self) -> Hold {
        Hold {
            id: self.id,
            amount: self.amount,
            expires_at: self.expires_at,
        }
    }
}

/// A reservation's answer when asked for, stored with it so a retry returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveAnswer {
    pub held: bool,
    pub justification: Option<Justification>,
    pub allow_reason: Option<AllowReason>,
    pub meter: Option<MeterReading>,
    pub revision: u64,
    /// The account whose meter holds it when not the reserving account: the ancestor whose
    /// pool it drew on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_owner: Option<String>,
    /// Set when the hold is on the reserving user's own meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_user: Option<String>,
}

/// Why a reservation cannot be committed or released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationRefusal {
    /// Its expiry passed: the hold is gone.
    Expired,
    /// Already committed or released (or refused when asked for).
    Settled(ReservationStatus),
}

/// A reservation's own fields.
pub fn validate_reservation(r: &NewReservation) -> Result<()> {
    if !visible(&r.id) {
        return Err(DomainError::invalid(
            "id",
            "must be 1-255 visible ASCII characters",
        ));
    }
    super::validate_tenant_id("tenant_id", &r.tenant_id)?;
    if r.user_id.as_deref().is_some_and(|u| !plain_text(u)) {
        return Err(DomainError::invalid(
            "user_id",
            "must be 1-255 characters, none of them control characters",
        ));
    }
    if !(1..=MAX_AMOUNT).contains(&r.amount) {
        return Err(DomainError::invalid(
            "amount",
            "must be between 1 and 10^15",
        ));
    }
    if r.ttl < TimeDelta::seconds(1) || r.ttl > MAX_HOLD_TTL {
        return Err(DomainError::invalid(
            "ttl_seconds",
            "must be between 1 second and 7 days",
        ));
    }
    Ok(())
}

/// A commit's amount: the whole hold when not given, never more than held.
pub fn commit_amount(reservation: &Reservation, amount: Option<i64>) -> Result<i64> {
    match amount {
        None => Ok(reservation.amount),
        Some(n) if (0..=reservation.amount).contains(&n) => Ok(n),
        Some(_) => Err(DomainError::invalid(
            "amount",
            format!("must be between 0 and the {} held", reservation.amount),
        )),
    }
}
