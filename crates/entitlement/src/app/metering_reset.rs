//! Manual resets: an operator starts a new period of an account's meter now. The open period
//! closes as at a scheduled reset and is recorded; the new one ends at the next scheduled reset
//! (the anchor is kept).

use chrono::{DateTime, Utc};

use super::{
    Metered, Reached, draw_error, issued, known_account, meter_owner, metered_or_error, own_meter,
    selected_meter,
};
use crate::app::ports::Storage;
use crate::app::{Engine, Saved};
use crate::domain::audit::meter_reset_entry;
use crate::domain::metering::{MeterKey, MeterReading, MeterSpec, MeterState};
use crate::domain::usage_history::{PeriodSummary, Span, period_containing, summarize};
use crate::domain::{DomainError, Limit, Result};
use tenantry_index::metering::PeriodError;

/// The most closed periods one listing answers.
pub const MAX_LISTED_PERIODS: usize = 1_000;

/// What a reset did: the period it closed and the meter after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterReset {
    pub closed: PeriodSummary,
    pub reading: MeterReading,
}

impl<S: Storage> Engine<S> {
    /// Starts a new period of the account's meter of `feature_key` now: credits roll over, the
    /// plan allowance is issued afresh and overage carries when the feature says so, as at a
    /// scheduled reset; the schedule is unchanged. With `user_id`, that user's own meter (404
    /// `user meter` when it has none). Audited (`meter.reset`).
    pub async fn reset_meter(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
    ) -> Result<Saved<MeterReset>> {
        crate::domain::validate_tenant_id("tenant_id", tenant_id)?;
        let now = self.now();
        let index = self.index.current();
        let feature = metered_or_error(&index, feature_key)?;
        known_account(&index, tenant_id)?;
        let meter = match user_id {
            Some(_) => selected_meter(&index, tenant_id, user_id, &feature, now)?,
            // A pool is reset by its owner, for every account drawing on it.
            None => own_meter(&index, tenant_id, None, &feature, now)?,
        };
        let txn = self.store.begin().await?;
        let allocation = |t: DateTime<Utc>| issued(&index, &meter, &feature, t);
        let mut state = self
            .open_meter(&txn, &meter, &feature, now, &allocation)
            .await?;
        let before = state.clone();
        // A reset just before may have started the open period a little ahead of the clock.
        state
            .reset(&feature.spec, now.max(state.start), &allocation)
            .map_err(draw_error)?;
        let closed = summarize(
            &before,
            &state,
            allocation(state.start),
            feature.spec.carry_overage,
            true,
        );
        self.store
            .insert_period(&txn, &meter, feature.id, &closed, now)
            .await?;
        if self.store.audit_enabled() {
            let entry = meter_reset_entry(&meter, &feature.key, &closed);
            self.store.record_audit(&txn, &[entry], now).await?;
        }
        let reading = state.read(&feature.spec, now, allocation(now));
        let revision = self
            // A new period starts with nothing used: no usage threshold can be reached.
            .commit_meter(txn, &meter, feature.id, state, now, Reached::default())
            .await?;
        Ok(Saved {
            value: MeterReset { closed, reading },
            revision,
        })
    }

    /// The closed periods of the account's meter overlapping `[from, to)`, oldest first: those
    /// recorded when they closed, then those the clock has closed since the meter's last write
    /// (computed as that write will record them). At most 1,000.
    pub async fn meter_periods(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PeriodSummary>> {
        crate::domain::validate_tenant_id("tenant_id", tenant_id)?;
        if from >= to {
            return Err(DomainError::invalid("to", "must be after from"));
        }
        let index = self.index.current();
        let feature = metered_or_error(&index, feature_key)?;
        known_account(&index, tenant_id)?;
        let now = self.present(&index);
        // The periods of a user's own meter, else of the meter the account draws on (a
        // pool's are its owner's).
        let owner = match user_id {
            Some(_) => selected_meter(&index, tenant_id, user_id, &feature, now)?,
            None => meter_owner(&index, tenant_id, None, &feature, now),
        };
        let mut periods = self
            .store
            .closed_periods(&owner, feature.id, from, to)
            .await?;
        if let Some(state) = index.meter(&owner.tenant_id, owner.user(), feature.id) {
            let allocation = |t: DateTime<Utc>| issued(&index, &owner, &feature, t);
            let mut ahead = state.clone();
            let unrecorded = close_periods(&mut ahead, &feature.spec, now, &allocation)?;
            // A write that brought the meter forward without storing it (a batch of late
            // events only) recorded some already: the recorded summary stands.
            let recorded: Vec<DateTime<Utc>> = periods.iter().map(|p| p.start).collect();
            periods.extend(
                unrecorded
                    .into_iter()
                    .filter(|p| p.end > from && p.start < to && !recorded.contains(&p.start)),
            );
        }
        if periods.len() > MAX_LISTED_PERIODS {
            return Err(DomainError::invalid(
                "to",
                format!("the range holds more than {MAX_LISTED_PERIODS} periods: narrow it"),
            ));
        }
        Ok(periods)
    }

    /// The period of the account's meter containing `at` (before the open one): the scheduled
    /// period, cut where resets recorded in `txn` moved its bounds.
    pub(super) async fn closed_period_of(
        &self,
        txn: &S::Txn,
        meter: &MeterKey,
        feature: &Metered,
        open: &MeterState,
        at: DateTime<Utc>,
    ) -> Result<Span> {
        let scheduled = feature
            .spec
            .period
            .containing(at)
            .map_err(|e| DomainError::invalid("timestamp", e.to_string()))?;
        let recorded = self
            .store
            .closed_periods_in(txn, meter, feature.id, scheduled.start, scheduled.end)
            .await?;
        let cuts = period_cuts(&recorded, Some(open));
        Ok(period_containing(
            (scheduled.start, scheduled.end),
            &cuts,
            at,
        ))
    }
}

/// Scheduled closes recorded one by one; past this many (a meter idle that long) the rest
/// close at once unrecorded: periods without usage, whose balances only the rollover moves.
pub(super) const MAX_RECORDED_CLOSES: usize = 100;

/// Brings `state` to the period containing `now`, returning each scheduled close's summary.
pub(super) fn close_periods(
    state: &mut MeterState,
    spec: &MeterSpec,
    now: DateTime<Utc>,
    allocation: &dyn Fn(DateTime<Utc>) -> Limit,
) -> Result<Vec<PeriodSummary>> {
    let invalid = |e: PeriodError| DomainError::invalid("metering", e.to_string());
    let mut closed = Vec::new();
    while state.end <= now && closed.len() < MAX_RECORDED_CLOSES {
        let before = state.clone();
        // Exactly one period: the one starting at the open period's end.
        state
            .advance(spec, before.end, allocation)
            .map_err(invalid)?;
        closed.push(summarize(
            &before,
            state,
            allocation(before.end),
            spec.carry_overage,
            false,
        ));
    }
    state.advance(spec, now, allocation).map_err(invalid)?;
    Ok(closed)
}

/// Where recorded periods and the open one bound periods.
pub(super) fn period_cuts(
    recorded: &[PeriodSummary],
    open: Option<&MeterState>,
) -> Vec<DateTime<Utc>> {
    recorded
        .iter()
        .flat_map(|p| [p.start, p.end])
        .chain(open.map(|s| s.start))
        .collect()
}

#[cfg(test)]
#[path = "metering_reset_tests.rs"]
mod tests;
