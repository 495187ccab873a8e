//! Usage batches: how an event is drawn on its meter (shared by the locked path in
//! [`Engine::record_usage`] and the single statement here), and that single statement — the
//! common case on PostgreSQL, which needs neither the batch's meters locked first nor its keys
//! read: a key stored before fails the statement, and the locked path finds it.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::super::ports::{DrawLane, SeenMeter, Storage};
use super::{Metered, draw_error, issued};
use crate::app::Engine;
use crate::domain::metering::{
    Drawn, MeterKey, MeterState, NewUsage, StoredOutcome, StoredUsage, UsageOutcome,
};
use crate::domain::{Aggregation, EntitlementIndex, IndexChange, Limit, Result};

/// A batch's meters (by owner and feature) with the feature and the indexes of their events.
pub(super) type Groups = BTreeMap<(MeterKey, Uuid), (Metered, Vec<usize>)>;

/// Which events count (`true`) and which repeat an id: an id twice in the batch counts as its
/// first event, decided in batch order, not meter by meter (one account's events may draw on
/// several meters, its users' own); an id in `stored` counts not at all.
pub(super) fn first_events(
    events: &[NewUsage],
    groups: &Groups,
    mut stored: HashSet<(String, String)>,
) -> Vec<bool> {
    let mut first = vec![false; events.len()];
    let mut in_order: Vec<usize> = groups
        .values()
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    in_order.sort_unstable();
    for i in in_order {
        first[i] = stored.insert((events[i].tenant_id.clone(), events[i].id.clone()));
    }
    first
}

/// When an event happened: without a time, when received — in the open period, which a reset
/// after a future-dated event may have started a little ahead of the clock.
pub(super) fn event_time(
    event: &NewUsage,
    state: &MeterState,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    event.at.unwrap_or_else(|| now.max(state.start))
}

/// What an event of `amount` adds to its period's usage; `None` for UNIQUE_COUNT, which
/// depends on the values its period already counted (the store's).
pub(super) fn counted(
    aggregation: Aggregation,
    amount: i64,
    late: bool,
    state: &MeterState,
) -> Option<i64> {
    match aggregation {
        Aggregation::Sum => Some(amount),
        Aggregation::Count => Some(1),
        // A closed period's maximum is taken over its events when read.
        Aggregation::Max if late => Some(amount),
        Aggregation::Max => Some((amount - state.usage).max(0)),
        Aggregation::UniqueCount => None,
    }
}

/// An event that counts, at `at`, adding `counted`: drawn on `state`, or recorded late when
/// it happened before the open period. Its outcome and its row.
pub(super) fn draw_event(
    (owner, feature): (&MeterKey, &Metered),
    state: &mut MeterState,
    event: &NewUsage,
    (at, counted): (DateTime<Utc>, i64),
    now: DateTime<Utc>,
    allocation: &dyn Fn(DateTime<Utc>) -> Limit,
) -> Result<(UsageOutcome, StoredUsage)> {
    let (outcome, stored, drawn) = if at < state.start {
        (UsageOutcome::Late, StoredOutcome::Late, None)
    } else {
        state
            .draw(&feature.spec, at, counted, allocation)
            .map_err(draw_error)?;
        let after = Drawn::after(owner, state, allocation(state.last_draw));
        (UsageOutcome::Recorded, StoredOutcome::Recorded, Some(after))
    };
    let row = StoredUsage {
        tenant_id: event.tenant_id.clone(),
        event_id: event.id.clone(),
        feature_id: feature.id,
        user_id: event.user_id.clone(),
        amount: event.amount,
        counted,
        occurred_at: at,
        received_at: now,
        outcome: stored,
        answer: None,
        unique: event.unique.clone(),
        drawn,
    };
    Ok((outcome, row))
}

/// A meter as this replica's index holds it (what its last write stored) and as a write
/// without its lock starts from: its expired holds forgotten. `None` when the index holds
/// none, or a period closed since (recording it is the locked path's).
pub(super) fn unchanged_meter<'i>(
    index: &'i EntitlementIndex,
    (owner, feature_id): (&MeterKey, Uuid),
    now: DateTime<Utc>,
) -> Option<(&'i MeterState, MeterState)> {
    let stored = index.meter(&owner.tenant_id, owner.user(), feature_id)?;
    if stored.end <= now {
        return None;
    }
    let mut state = stored.clone();
    state.prune_holds(now);
    Some((stored, state))
}

impl<S: Storage> Engine<S> {
    /// A usage batch in one statement, decided on its meters as this replica's index holds
    /// them and written only if each is still stored so
    /// ([`MeterStore::draw_if_unchanged`](super::super::ports::MeterStore::draw_if_unchanged)).
    /// `None` (nothing written) sends the batch down the locked path: a meter the index does
    /// not hold or that moved, a period to close, a threshold reached, a UNIQUE_COUNT feature
    /// (its values are the store's), an id stored before (its key is taken), nothing drawn.
    pub(super) async fn record_unchanged(
        &self,
        index: &EntitlementIndex,
        events: &[NewUsage],
        groups: &Groups,
        now: DateTime<Utc>,
    ) -> Result<Option<(Vec<UsageOutcome>, u64)>> {
        let mut meters: Vec<(&MeterState, MeterState)> = Vec::with_capacity(groups.len());
        for ((owner, feature_id), (feature, _)) in groups {
            if feature.aggregation == Aggregation::UniqueCount {
                return Ok(None);
            }
            let Some(meter) = unchanged_meter(index, (owner, *feature_id), now) else {
                return Ok(None);
            };
            meters.push(meter);
        }
        let first = first_events(events, groups, HashSet::new());
        let mut outcomes = vec![UsageOutcome::Duplicate; events.len()];
        let mut rows = Vec::with_capacity(events.len());
        let mut drawn = vec![false; groups.len()];
        for (((owner, _), (feature, members)), ((_, state), drawn)) in
            groups.iter().zip(meters.iter_mut().zip(&mut drawn))
        {
            let allocation = |t: DateTime<Utc>| issued(index, owner, feature, t);
            for &i in members.iter().filter(|&&i| first[i]) {
                let event = &events[i];
                let at = event_time(event, state, now);
                let Some(counted) =
                    counted(feature.aggregation, event.amount, at < state.start, state)
                else {
                    return Ok(None);
                };
                let Ok((outcome, row)) = draw_event(
                    (owner, feature),
                    state,
                    event,
                    (at, counted),
                    now,
                    &allocation,
                ) else {
                    return Ok(None);
                };
                *drawn |= outcome == UsageOutcome::Recorded;
                outcomes[i] = outcome;
                rows.push(row);
            }
            // A threshold reached is recorded under the meter's lock: the locked path's.
            if *drawn
                && !self
                    .thresholds
                    .reached(&state.read(&feature.spec, now, allocation(now)))
                    .is_empty()
            {
                return Ok(None);
            }
        }
        if !drawn.contains(&true) {
            return Ok(None);
        }
        let seen = groups.keys().zip(&meters).zip(&drawn).map(
            |(((owner, feature_id), (stored, state)), drawn)| SeenMeter {
                owner,
                feature_id: *feature_id,
                before: stored,
                after: drawn.then_some(state),
            },
        );
        let Some(revision) = self
            .draw_unchanged(seen, &rows, now, DrawLane::Pooled)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((outcomes, revision)))
    }

    /// Writes `rows` and the meters drawn on (those of `seen` with an `after`) in one
    /// statement if none of `seen` moved, and applies the meters to the index: the revision
    /// taken, or `None` when nothing was written.
    pub(super) async fn draw_unchanged<'a>(
        &self,
        seen: impl Iterator<Item = SeenMeter<'a>>,
        rows: &[StoredUsage],
        now: DateTime<Utc>,
        lane: DrawLane,
    ) -> Result<Option<u64>> {
        let seen: Vec<SeenMeter<'a>> = seen.collect();
        let changes: Vec<IndexChange> = seen
            .iter()
            .filter_map(|m| {
                m.after.map(|state| IndexChange::UpsertMeter {
                    tenant_id: m.owner.tenant_id.clone(),
                    user_id: m.owner.user_id.clone(),
                    feature_id: m.feature_id,
                    state: Box::new(state.clone()),
                })
            })
            .collect();
        let Some(revision) = self
            .store
            .draw_if_unchanged(&seen, rows, &changes, now, lane)
            .await?
        else {
            return Ok(None);
        };
        self.index.apply_committed(revision, changes, now).await?;
        Ok(Some(revision))
    }
}
