//! Meters at a past instant, for checks, explanations and entitlements asked with an `at`
//! before now: exactly what the balance burn-down says then — the latest draw at or before
//! `at` (its row keeps the meter it left), taken forward to `at` by the engine's own rules
//! (`MeterState::add_credit`, `void_credit`, `reset`, `advance`) through the credit grants
//! created or voided and the manual resets recorded in between. Holds are not history: a past
//! meter leaves them out. A meter drawn on before draws kept their meter is unknown.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::app::Engine;
use crate::app::ports::{MAX_HISTORY_METERS, MeterHistory, Storage};
use crate::domain::metering::{MeterKey, MeterSpec, MeterState, StoredDraw};
use crate::domain::{DomainError, EntitlementIndex, Limit, PastAsk, PastMeter, Result};

fn invalid(e: impl std::fmt::Display) -> DomainError {
    DomainError::invalid("at", e.to_string())
}

/// One change between the latest draw and the instant, ordered at one instant as the
/// burn-down orders them: a reset, then a credit added, then one voided.
enum Step<'a> {
    ManualReset,
    CreditAdded(&'a crate::domain::metering::CreditGrant),
    CreditVoided(&'a crate::domain::metering::CreditGrant),
}

/// The meter of `spec` at `at` from its history up to then; `allocation(t)` is the plan
/// allowance its owner was issued at `t` (the index's grants).
pub(crate) fn meter_at(
    spec: &MeterSpec,
    history: &MeterHistory,
    at: DateTime<Utc>,
    allocation: &dyn Fn(DateTime<Utc>) -> Limit,
) -> Result<PastMeter> {
    let mut state = match &history.latest {
        Some(StoredDraw { drawn: Some(d), .. }) => Some(d.state.clone()),
        // Drawn on before draws kept their meter: what it left is not known.
        Some(StoredDraw { drawn: None, .. }) => return Ok(PastMeter::Unknown),
        None => None,
    };
    // Credit writes from the latest draw's writing on (a draw dated ahead of the clock was
    // written before its instant; those timed in between came after it).
    let from = history.latest.as_ref().map(|d| d.at.min(d.received_at));
    let since = |t: DateTime<Utc>| from.is_none_or(|f| f <= t) && t <= at;
    let mut steps: Vec<(DateTime<Utc>, u8, Step<'_>)> = Vec::new();
    steps.extend(
        history
            .manual_resets
            .iter()
            .map(|&t| (t, 0, Step::ManualReset)),
    );
    for c in &history.credits {
        if since(c.created_at) {
            steps.push((c.created_at, 1, Step::CreditAdded(c)));
        }
        if let Some(v) = c.voided_at
            && since(v)
        {
            steps.push((v, 2, Step::CreditVoided(c)));
        }
    }
    steps.sort_by_key(|(t, rank, _)| (*t, *rank));
    for (t, _, step) in steps {
        // The engine opens a meter at its first write.
        if state.is_none() {
            state = Some(MeterState::open(spec, t).map_err(invalid)?);
        }
        let Some(meter) = state.as_mut() else {
            continue;
        };
        match step {
            Step::ManualReset => meter.reset(spec, t, allocation).map_err(invalid)?,
            Step::CreditAdded(c) => {
                meter.advance(spec, t, allocation).map_err(invalid)?;
                // The draw's meter holds the credits created before it (or at its instant).
                if !meter.credits.iter().any(|k| k.id == c.id) {
                    // As created: a void is its own step.
                    let mut credit = c.credit();
                    credit.voided_at = None;
                    meter.add_credit(credit);
                }
            }
            Step::CreditVoided(c) => {
                meter.advance(spec, t, allocation).map_err(invalid)?;
                meter.void_credit(c.id, t);
            }
        }
    }
    if let Some(meter) = state.as_mut() {
        meter.advance(spec, at, allocation).map_err(invalid)?;
    }
    Ok(PastMeter::Known(state))
}

impl<S: Storage> Engine<S> {
    /// The meters `asks` at their instants, in order, from history: three statements per
    /// [`MAX_HISTORY_METERS`] meters. A feature the index does not know as metered reads
    /// unknown.
    pub async fn meters_at(
        &self,
        index: &EntitlementIndex,
        asks: Vec<(PastAsk, DateTime<Utc>)>,
    ) -> Result<Vec<PastMeter>> {
        let keyed: Vec<(MeterKey, Uuid, DateTime<Utc>)> = asks
            .iter()
            .map(|((owner, user, f), at)| (MeterKey::new(owner, user.as_deref()), *f, *at))
            .collect();
        let mut out = Vec::with_capacity(asks.len());
        for chunk in keyed.chunks(MAX_HISTORY_METERS) {
            let histories = self.store.meter_histories(chunk).await?;
            for ((meter, feature_id, at), history) in chunk.iter().zip(&histories) {
                let Some((key, spec)) = index.metered_feature(*feature_id) else {
                    out.push(PastMeter::Unknown);
                    continue;
                };
                let allocation = |t: DateTime<Utc>| {
                    index.issued_allowance(&meter.tenant_id, meter.user(), key, t)
                };
                out.push(meter_at(&spec, history, *at, &allocation)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "metering_past_tests.rs"]
mod tests;
