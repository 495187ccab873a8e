//! Manual resets: an operator starts a new period of an account's meter now. The open period
//! closes as at a scheduled reset and is recorded; the new one ends at the next scheduled reset
//! (the anchor is kept).

use chrono::{DateTime, Utc};

use super::{Metered, Reached, draw_error, known_account, metered_or_error};
use crate::app::ports::Storage;
use crate::app::{Engine, Saved};
use crate::domain::Result;
use crate::domain::audit::meter_reset_entry;
use crate::domain::metering::{MeterReading, MeterState};
use crate::domain::usage_history::{PeriodSummary, Span, period_containing, summarize};

/// What a reset did: the period it closed and the meter after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterReset {
    pub closed: PeriodSummary,
    pub reading: MeterReading,
}

impl<S: Storage> Engine<S> {
    /// Starts a new period of the account's meter of `feature_key` now: credits roll over, the
    /// plan allowance is issued afresh and overage carries when the feature says so, as at a
    /// scheduled reset; the schedule is unchanged. Audited (`meter.reset`).
    pub async fn reset_meter(
        &self,
        tenant_id: &str,
        feature_key: &str,
    ) -> Result<Saved<MeterReset>> {
        crate::domain::validate_tenant_id("tenant_id", tenant_id)?;
        let now = self.now();
        let index = self.index.current();
        let feature = metered_or_error(&index, feature_key)?;
        known_account(&index, tenant_id)?;
        let txn = self.store.begin().await?;
        let allocation = |t: DateTime<Utc>| index.issued_allowance(tenant_id, &feature.key, t);
        let mut state = self
            .open_meter(&txn, tenant_id, &feature, now, &allocation)
            .await?;
        let before = state.clone();
        state
            .reset(&feature.spec, now, &allocation)
            .map_err(draw_error)?;
        let closed = summarize(
            &before,
            &state,
            allocation(state.start),
            feature.spec.carry_overage,
            true,
        );
        self.store
            .insert_period(&txn, tenant_id, feature.id, &closed, now)
            .await?;
        if self.store.audit_enabled() {
            let entry = meter_reset_entry(tenant_id, &feature.key, &closed);
            self.store.record_audit(&txn, &[entry], now).await?;
        }
        let reading = state.read(&feature.spec, now, allocation(now));
        let revision = self
            // A new period starts with nothing used: no usage threshold can be reached.
            .commit_meter(txn, tenant_id, feature.id, state, now, Reached::default())
            .await?;
        Ok(Saved {
            value: MeterReset { closed, reading },
            revision,
        })
    }

    /// The period of the account's meter containing `at` (before the open one): the scheduled
    /// period, cut where resets recorded in `txn` moved its bounds.
    pub(super) async fn closed_period_of(
        &self,
        txn: &S::Txn,
        tenant_id: &str,
        feature: &Metered,
        open: &MeterState,
        at: DateTime<Utc>,
    ) -> Result<Span> {
        let scheduled = feature
            .spec
            .period
            .containing(at)
            .map_err(|e| crate::domain::DomainError::invalid("timestamp", e.to_string()))?;
        let recorded = self
            .store
            .closed_periods_in(txn, tenant_id, feature.id, scheduled.start, scheduled.end)
            .await?;
        let cuts = period_cuts(&recorded, Some(open));
        Ok(period_containing(
            (scheduled.start, scheduled.end),
            &cuts,
            at,
        ))
    }
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
