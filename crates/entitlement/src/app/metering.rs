//! Metering: usage recorded into each account's meter, check-and-consume, credit grants and
//! meter readings. Every write locks the meters it draws on, so writers of one meter (on any
//! replica) take turns on its row and a consumption decides on the newest balance; the meter
//! goes to the index (and every replica and agent) as an `UpsertMeter` change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ports::Storage;
use super::thresholds::Reached;
use super::{Engine, Saved};
use crate::domain::audit::{Action, credit_grant_entry};
use crate::domain::metering::{
    CreditGrant, DrawError, MeterKey, MeterReading, MeterSpec, MeterState, NewCreditGrant,
    NewUsage, UsageOutcome, credit_grant, validate_usage_batch,
};
use crate::domain::{
    Aggregation, AllocationType, DomainError, EntitlementIndex, IndexChange, ItemError, Limit,
    Result,
};

/// A metered feature as a write sees it.
#[derive(Debug, Clone)]
pub(super) struct Metered {
    pub(super) id: Uuid,
    pub(super) key: String,
    pub(super) aggregation: Aggregation,
    pub(super) spec: MeterSpec,
}

/// Why a feature key names no metered feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotMetered {
    Unknown,
    OtherType,
}

impl NotMetered {
    fn message(self) -> &'static str {
        match self {
            NotMetered::Unknown => "unknown feature",
            NotMetered::OtherType => "not a metered feature",
        }
    }
}

fn metered(index: &EntitlementIndex, key: &str) -> std::result::Result<Metered, NotMetered> {
    let Some((feature, _)) = index.catalog_feature(key) else {
        return Err(NotMetered::Unknown);
    };
    match (&feature.metering, feature.allocation_type) {
        (Some(m), AllocationType::Metered) => Ok(Metered {
            id: feature.id,
            key: feature.key.clone(),
            aggregation: m.aggregation,
            spec: m.spec(),
        }),
        _ => Err(NotMetered::OtherType),
    }
}

pub(super) fn metered_or_error(index: &EntitlementIndex, key: &str) -> Result<Metered> {
    metered(index, key).map_err(|why| match why {
        NotMetered::Unknown => DomainError::not_found("feature", key),
        NotMetered::OtherType => DomainError::invalid("feature_key", why.message()),
    })
}

pub(super) fn answer_json<T: serde::Serialize>(answer: &T) -> Result<String> {
    serde_json::to_string(answer).map_err(|e| DomainError::Internal {
        message: "serialize a consumption's answer".into(),
        source: Some(Box::new(e)),
    })
}

pub(super) fn answer_of<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| DomainError::Internal {
        message: "decode a consumption's answer".into(),
        source: Some(Box::new(e)),
    })
}

/// The meter of `feature` that `tenant_id` (and `user_id`, when given) draws on at `at`: the
/// user's own, the account's, or the pool of the ancestor it shares (see
/// `EntitlementIndex::meter_owner`).
pub(super) fn meter_owner(
    index: &EntitlementIndex,
    tenant_id: &str,
    user_id: Option<&str>,
    feature: &Metered,
    at: DateTime<Utc>,
) -> MeterKey {
    let (owner, user) = index
        .meter_owner(tenant_id, user_id, &feature.key, at)
        .unwrap_or((tenant_id, None));
    MeterKey::new(owner, user)
}

/// The owner when it is not the account itself.
pub(super) fn pool_owner(tenant_id: &str, owner: &MeterKey) -> Option<String> {
    (owner.tenant_id != tenant_id).then(|| owner.tenant_id.clone())
}

/// Refuses a write only a meter's owner may make on an account drawing on a pool, or on a
/// user without a meter of its own (`user_id`); answers the meter it writes.
pub(super) fn own_meter(
    index: &EntitlementIndex,
    tenant_id: &str,
    user_id: Option<&str>,
    feature: &Metered,
    at: DateTime<Utc>,
) -> Result<MeterKey> {
    let owner = meter_owner(index, tenant_id, user_id, feature, at);
    if let Some(user) = user_id {
        return match owner.user_id {
            Some(_) => Ok(owner),
            None => Err(DomainError::NoUserMeter {
                tenant_id: tenant_id.to_owned(),
                user_id: user.to_owned(),
            }),
        };
    }
    if owner.tenant_id == tenant_id {
        Ok(owner)
    } else {
        Err(DomainError::MeterPooled {
            tenant_id: tenant_id.to_owned(),
            owner: owner.tenant_id,
        })
    }
}

/// The meter `user_id` selects among an account's for a read or a manual reset: the account's
/// own without one; with one, the user's own meter when the user has one — its own grants
/// allocate the feature now, or its meter was written — else 404 `user meter`.
pub(super) fn selected_meter(
    index: &EntitlementIndex,
    tenant_id: &str,
    user_id: Option<&str>,
    feature: &Metered,
    at: DateTime<Utc>,
) -> Result<MeterKey> {
    crate::domain::metering::validate_user_id(user_id)?;
    let Some(user) = user_id else {
        return Ok(MeterKey::account(tenant_id));
    };
    let drawing = meter_owner(index, tenant_id, Some(user), feature, at);
    if drawing.user_id.is_some() || index.meter(tenant_id, Some(user), feature.id).is_some() {
        Ok(MeterKey::new(tenant_id, Some(user)))
    } else {
        Err(DomainError::not_found("user meter", user))
    }
}

/// What `meter` is issued each period at `t` (its user's own grants' allocation for a user's
/// meter, the account's own for an account's).
pub(super) fn issued(
    index: &EntitlementIndex,
    meter: &MeterKey,
    feature: &Metered,
    t: DateTime<Utc>,
) -> Limit {
    index.issued_allowance(&meter.tenant_id, meter.user(), &feature.key, t)
}

pub(super) fn known_account(index: &EntitlementIndex, tenant_id: &str) -> Result<()> {
    if index.contains_tenant(tenant_id) {
        Ok(())
    } else {
        Err(DomainError::not_found("account", tenant_id))
    }
}

pub(super) fn draw_error(e: DrawError) -> DomainError {
    match e {
        DrawError::Overflow => DomainError::invalid(
            "amount",
            "the period's usage would exceed what can be counted",
        ),
        other @ (DrawError::ClosedPeriod(_) | DrawError::Negative | DrawError::Period(_)) => {
            DomainError::invalid("timestamp", other.to_string())
        }
    }
}

/// A meter now: the reading, the plan allowance issued each period and what remains of each
/// usable credit (the allowance as [`crate::domain::metering::ALLOWANCE_ID`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MeterView {
    pub reading: MeterReading,
    /// The account whose meter this is when not the one asked about (an ancestor's pool).
    pub owner: Option<String>,
    /// The user whose own meter this is (asked for with its `user_id`).
    pub user: Option<String>,
    pub allowance: Limit,
    pub credits: Vec<(Uuid, Option<i64>)>,
    pub revision: u64,
}

impl<S: Storage> Engine<S> {
    /// Records usage events (durable when this returns), each idempotent on (account, id).
    pub async fn record_usage(&self, events: Vec<NewUsage>) -> Result<(Vec<UsageOutcome>, u64)> {
        let now = self.now();
        let mut bad = validate_usage_batch(&events, now)?;
        let index = self.index.current();
        // Meters (by owner: a pool's sub-accounts draw on its owner's) in a fixed order, so
        // two batches locking the same ones cannot deadlock.
        let mut groups: BTreeMap<(MeterKey, Uuid), (Metered, Vec<usize>)> = BTreeMap::new();
        // Each reporter's meter, resolved once per batch (a batch holds many events of each).
        let mut owners: HashMap<(&str, Option<&str>, Uuid), MeterKey> = HashMap::new();
        let mut features: HashMap<&str, std::result::Result<Metered, NotMetered>> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            if bad.iter().any(|b| b.index == i) {
                continue;
            }
            if !index.contains_tenant(&event.tenant_id) {
                bad.push(ItemError::new(i, "tenant_id", "unknown account"));
                continue;
            }
            let feature = features
                .entry(&event.feature_key)
                .or_insert_with(|| metered(&index, &event.feature_key));
            match feature {
                Ok(m) if m.aggregation == Aggregation::UniqueCount && event.unique.is_none() => {
                    bad.push(ItemError::new(
                        i,
                        "unique",
                        "is required by a UNIQUE_COUNT feature",
                    ));
                }
                Ok(m) => {
                    let user = event.user_id.as_deref();
                    let owner = owners
                        .entry((&event.tenant_id, user, m.id))
                        .or_insert_with(|| meter_owner(&index, &event.tenant_id, user, m, now))
                        .clone();
                    groups
                        .entry((owner, m.id))
                        .or_insert_with(|| (m.clone(), Vec::new()))
                        .1
                        .push(i);
                }
                Err(why) => bad.push(ItemError::new(i, "feature_key", why.message())),
            }
        }
        if !bad.is_empty() {
            bad.sort_by_key(|b| b.index);
            return Err(DomainError::InvalidItems(bad));
        }
        if let Some(done) = self.record_unchanged(&index, &events, &groups, now).await? {
            return Ok(done);
        }
        let txn = self.store.begin().await?;
        // One statement each for the whole batch, not per meter or per event: lock every
        // meter, read which ids are stored (ids are each reporting account's, also in a pool),
        // insert the new events, write the meters back.
        let keys: Vec<(&MeterKey, &Metered)> = groups
            .iter()
            .map(|((owner, _), (feature, _))| (owner, feature))
            .collect();
        let states = self.open_meters(&txn, &index, &keys, now).await?;
        let event_keys: Vec<(&str, &str)> = groups
            .values()
            .flat_map(|(_, members)| members.iter())
            .map(|&i| (events[i].tenant_id.as_str(), events[i].id.as_str()))
            .collect();
        let stored = self.store.stored_usage_keys(&txn, &event_keys).await?;
        let first = batch::first_events(&events, &groups, stored);
        let mut outcomes = vec![UsageOutcome::Recorded; events.len()];
        let mut rows = Vec::with_capacity(event_keys.len());
        let mut drawn_meters = Vec::new();
        for (((owner, feature_id), (feature, members)), mut state) in groups.iter().zip(states) {
            let feature_id = *feature_id;
            let allocation = |t: DateTime<Utc>| issued(&index, owner, feature, t);
            let mut drawn = false;
            for &i in members {
                let event = &events[i];
                if !first[i] {
                    outcomes[i] = UsageOutcome::Duplicate;
                    continue;
                }
                let at = batch::event_time(event, &state, now);
                let late = at < state.start;
                let counted = match batch::counted(feature.aggregation, event.amount, late, &state)
                {
                    Some(counted) => counted,
                    // UNIQUE_COUNT: whether the value is new in its period, asked of the store.
                    None => {
                        let period_start = if late {
                            // A reset may have cut the scheduled period.
                            self.closed_period_of(&txn, owner, feature, &state, at)
                                .await?
                                .0
                        } else {
                            state.start
                        };
                        let value = event.unique.as_deref().unwrap_or_default();
                        let new = self
                            .store
                            .insert_unique(&txn, owner, feature_id, period_start, value)
                            .await?;
                        i64::from(new)
                    }
                };
                let (outcome, row) = batch::draw_event(
                    (owner, feature),
                    &mut state,
                    event,
                    (at, counted),
                    now,
                    &allocation,
                )?;
                drawn |= outcome == UsageOutcome::Recorded;
                outcomes[i] = outcome;
                rows.push(row);
            }
            if drawn {
                drawn_meters.push((owner, feature, state));
            }
        }
        let written: Vec<(&MeterKey, Uuid, &MeterState)> = drawn_meters
            .iter()
            .map(|(owner, feature, state)| (*owner, feature.id, state))
            .collect();
        self.store.store_draws(&txn, &rows, &written, now).await?;
        let mut reached = Reached::default();
        for (owner, feature, state) in &drawn_meters {
            let after = state.read(&feature.spec, now, issued(&index, owner, feature, now));
            self.usage_thresholds(
                &txn,
                &mut reached,
                (owner, feature.id, &feature.key),
                &after,
                now,
            )
            .await?;
        }
        let changes: Vec<IndexChange> = drawn_meters
            .into_iter()
            .map(|(owner, feature, state)| IndexChange::UpsertMeter {
                tenant_id: owner.tenant_id.clone(),
                user_id: owner.user_id.clone(),
                feature_id: feature.id,
                state: Box::new(state),
            })
            .collect();
        let revision = if changes.is_empty() {
            self.store.commit_plain(txn).await?;
            0
        } else {
            self.commit_metered(txn, changes, reached).await?
        };
        Ok((outcomes, revision))
    }

    /// Grants credits on an account for a metered feature.
    pub async fn create_credit_grant(&self, new: NewCreditGrant) -> Result<Saved<CreditGrant>> {
        let now = self.now();
        let index = self.index.current();
        let feature = metered_or_error(&index, &new.feature_key)?;
        known_account(&index, &new.tenant_id)?;
        crate::domain::metering::validate_user_id(new.user_id.as_deref())?;
        // A pool's credits are its owner's: a sub-account drawing on it has no meter of its
        // own to credit; a user is credited only on a meter of its own.
        let meter = own_meter(
            &index,
            &new.tenant_id,
            new.user_id.as_deref(),
            &feature,
            now,
        )?;
        let grant = credit_grant(new, feature.id, now)?;
        let txn = self.store.begin().await?;
        self.store.insert_credit(&txn, &grant).await?;
        self.audit_credit(&txn, Action::CreditGrantCreate, None, &grant, now)
            .await?;
        let allocation = |t: DateTime<Utc>| issued(&index, &meter, &feature, t);
        let mut state = self
            .open_meter(&txn, &meter, &feature, now, &allocation)
            .await?;
        state.add_credit(grant.credit());
        let mut reached = Reached::default();
        let after = state.read(&feature.spec, now, allocation(now));
        self.usage_thresholds(
            &txn,
            &mut reached,
            (&meter, feature.id, &feature.key),
            &after,
            now,
        )
        .await?;
        let revision = self
            .commit_meter(txn, &meter, feature.id, state, now, reached)
            .await?;
        Ok(Saved {
            value: grant,
            revision,
        })
    }

    /// Voids a credit grant from now on; voiding a void one changes nothing. A deleted
    /// account's grants cannot be voided (its meters take no writes until it is reactivated).
    pub async fn void_credit_grant(&self, id: Uuid) -> Result<Saved<CreditGrant>> {
        let now = self.now();
        let index = self.index.current();
        let txn = self.store.begin().await?;
        let mut grant = self
            .store
            .lock_credit(&txn, id)
            .await?
            .ok_or_else(|| DomainError::not_found("credit grant", id))?;
        known_account(&index, &grant.tenant_id)?;
        if grant.voided_at.is_some() {
            self.store.commit_plain(txn).await?;
            return Ok(Saved {
                value: grant,
                revision: self.revision(),
            });
        }
        let before = grant.clone();
        grant.voided_at = Some(now);
        self.store.update_credit(&txn, &grant).await?;
        self.audit_credit(&txn, Action::CreditGrantVoid, Some(&before), &grant, now)
            .await?;
        let revision = match metered(&index, &grant.feature_key) {
            // The feature is gone or no longer metered: nothing draws on the credit.
            Err(_) => {
                self.store.commit_plain(txn).await?;
                self.revision()
            }
            Ok(feature) => {
                // The meter it was granted on (a user's own stays that user's).
                let meter = MeterKey::new(&grant.tenant_id, grant.user_id.as_deref());
                let allocation = |t: DateTime<Utc>| issued(&index, &meter, &feature, t);
                let mut state = self
                    .open_meter(&txn, &meter, &feature, now, &allocation)
                    .await?;
                state.void_credit(id, now);
                // A void that leaves too little reaches thresholds as usage does.
                let mut reached = Reached::default();
                let after = state.read(&feature.spec, now, allocation(now));
                self.usage_thresholds(
                    &txn,
                    &mut reached,
                    (&meter, feature.id, &feature.key),
                    &after,
                    now,
                )
                .await?;
                self.commit_meter(txn, &meter, feature.id, state, now, reached)
                    .await?
            }
        };
        Ok(Saved {
            value: grant,
            revision,
        })
    }

    /// An account's credit grants (of one feature, when given), oldest first.
    pub async fn credit_grants(
        &self,
        tenant_id: &str,
        feature_key: Option<&str>,
    ) -> Result<Vec<CreditGrant>> {
        crate::domain::validate_tenant_id("tenant_id", tenant_id)?;
        let feature_id = match feature_key {
            Some(key) => Some(metered_or_error(&self.index.current(), key)?.id),
            None => None,
        };
        self.store.credits(tenant_id, feature_id).await
    }

    /// An account's meter of a metered feature now, from an index including `min_revision`.
    pub async fn meter_view(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        min_revision: u64,
    ) -> Result<MeterView> {
        let index: Arc<EntitlementIndex> = self.index_at(min_revision).await?;
        let feature = metered_or_error(&index, feature_key)?;
        known_account(&index, tenant_id)?;
        let now = self.present(&index);
        // A user's own meter (404 without one), else the one the account draws on.
        let owner = match user_id {
            Some(_) => selected_meter(&index, tenant_id, user_id, &feature, now)?,
            None => meter_owner(&index, tenant_id, None, &feature, now),
        };
        let allocation = |t: DateTime<Utc>| issued(&index, &owner, &feature, t);
        let allowance = allocation(now);
        let mut state = match index.meter(&owner.tenant_id, owner.user(), feature.id) {
            Some(state) => state.clone(),
            None => MeterState::open(&feature.spec, now)
                .map_err(|e| DomainError::invalid("metering", e.to_string()))?,
        };
        state
            .advance(&feature.spec, now, &allocation)
            .map_err(|e| DomainError::invalid("metering", e.to_string()))?;
        Ok(MeterView {
            reading: state.read(&feature.spec, now, allowance),
            owner: pool_owner(tenant_id, &owner),
            user: owner.user_id.clone(),
            allowance,
            credits: state.remaining_at(now, allowance).collect(),
            revision: index.revision(),
        })
    }

    /// A meter of `feature`, locked for `txn` and brought to `now`.
    pub(super) async fn open_meter(
        &self,
        txn: &S::Txn,
        meter: &MeterKey,
        feature: &Metered,
        now: DateTime<Utc>,
        allocation: &(dyn Fn(DateTime<Utc>) -> Limit + Sync),
    ) -> Result<MeterState> {
        let stored = self.store.lock_meters(txn, &[(meter, feature.id)]).await?;
        let stored = stored.into_iter().next().flatten();
        self.bring_to(txn, meter, feature, stored, now, allocation)
            .await
    }

    /// The meters of `meters` (owner and feature; sorted by owner, then feature id, without
    /// repeats), locked for `txn` in one statement and brought to `now`, in the order given.
    pub(super) async fn open_meters(
        &self,
        txn: &S::Txn,
        index: &EntitlementIndex,
        meters: &[(&MeterKey, &Metered)],
        now: DateTime<Utc>,
    ) -> Result<Vec<MeterState>> {
        let keys: Vec<(&MeterKey, Uuid)> = meters.iter().map(|(owner, f)| (*owner, f.id)).collect();
        let stored = self.store.lock_meters(txn, &keys).await?;
        let mut states = Vec::with_capacity(meters.len());
        for (&(owner, feature), stored) in meters.iter().zip(stored) {
            let allocation = |t: DateTime<Utc>| issued(index, owner, feature, t);
            states.push(
                self.bring_to(txn, owner, feature, stored, now, &allocation)
                    .await?,
            );
        }
        Ok(states)
    }

    /// A meter as stored (`None`: never written), brought to `now`: the periods closed since
    /// its last write recorded, its expired holds forgotten.
    async fn bring_to(
        &self,
        txn: &S::Txn,
        meter: &MeterKey,
        feature: &Metered,
        stored: Option<MeterState>,
        now: DateTime<Utc>,
        allocation: &(dyn Fn(DateTime<Utc>) -> Limit + Sync),
    ) -> Result<MeterState> {
        let mut state = match stored {
            Some(state) => state,
            None => MeterState::open(&feature.spec, now)
                .map_err(|e| DomainError::invalid("metering", e.to_string()))?,
        };
        // Each period that closed since the last write is recorded with its summary.
        for closed in reset::close_periods(&mut state, &feature.spec, now, allocation)? {
            self.store
                .insert_period(txn, meter, feature.id, &closed, now)
                .await?;
        }
        // Expired holds already count for nothing; the write that follows forgets them.
        state.prune_holds(now);
        Ok(state)
    }

    async fn audit_credit(
        &self,
        txn: &S::Txn,
        action: Action,
        before: Option<&CreditGrant>,
        after: &CreditGrant,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if self.store.audit_enabled() {
            let entry = credit_grant_entry(action, before, after);
            self.store.record_audit(txn, &[entry], now).await?;
        }
        Ok(())
    }

    pub(super) async fn commit_meter(
        &self,
        txn: S::Txn,
        meter: &MeterKey,
        feature_id: Uuid,
        state: MeterState,
        now: DateTime<Utc>,
        reached: Reached,
    ) -> Result<u64> {
        self.store
            .put_meters(&txn, &[(meter, feature_id, &state)], now)
            .await?;
        self.commit_metered(
            txn,
            vec![IndexChange::UpsertMeter {
                tenant_id: meter.tenant_id.clone(),
                user_id: meter.user_id.clone(),
                feature_id,
                state: Box::new(state),
            }],
            reached,
        )
        .await
    }
}

#[path = "metering_balance.rs"]
pub mod balance;
#[path = "metering_batch.rs"]
mod batch;
#[path = "consumption.rs"]
pub(super) mod consumption;
#[path = "metering_history.rs"]
mod history;
#[path = "metering_past.rs"]
pub mod past;
#[path = "metering_reset.rs"]
mod reset;

#[cfg(test)]
#[path = "metering_tests.rs"]
pub(super) mod tests;

#[cfg(test)]
#[path = "metering_pool_tests.rs"]
mod pool_tests;

#[cfg(test)]
#[path = "metering_user_tests.rs"]
mod user_tests;

#[cfg(test)]
#[path = "metering_user_model_tests.rs"]
mod user_model_tests;
