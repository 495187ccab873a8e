//! The balance burn-down within a period: every point where an account's meter of a metered
//! feature changed over a range — each draw (usage, consumption, reservation commit), each
//! credit grant taking effect, being voided or expiring, each reset — with the meter after it.
//!
//! Exact and cheap: a draw's meter is the one its write kept on the event row (`Drawn`, in the
//! draw's transaction), never recomputed from events. Between draws only the clock and credit
//! grants move a balance: from the latest kept draw before each point, the engine's own rules
//! (`MeterState::advance`, `add_credit`, `void_credit`, `reset`) take the meter forward to the
//! point, with the credit grants' and resets' own recorded times. Holds are not draws: the
//! balances here leave them out.

use chrono::{DateTime, Utc};

use super::{known_account, metered_or_error};
use crate::app::Engine;
use crate::app::ports::Storage;
use crate::domain::metering::{
    CreditGrant, MeterReading, MeterSpec, MeterState, StoredDraw, StoredOutcome,
};
use crate::domain::{DomainError, Result};

/// The most points one answer holds.
pub const MAX_BALANCE_POINTS: usize = 1_000;

/// What moved the balance at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PointKind {
    /// A usage event drawn (its id).
    Usage,
    /// A check-and-consume that consumed (its id).
    Consumption,
    /// A reservation committed (the reservation's id).
    ReservationCommit,
    /// A credit grant became usable (its id).
    CreditEffective,
    /// A credit grant was voided (its id).
    CreditVoided,
    /// A credit grant expired (its id).
    CreditExpired,
    /// A scheduled reset: a new period.
    Reset,
    /// A manual reset: a new period.
    ManualReset,
}

/// One point of the burn-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancePoint {
    pub at: DateTime<Utc>,
    pub kind: PointKind,
    /// The event, reservation or credit grant (none for resets).
    pub id: Option<String>,
    /// The meter after the point (holds left out); `None`: unknown, the meter's draws before
    /// it were stored before draws were kept.
    pub meter: Option<MeterReading>,
}

/// One step of the walk, in time order; `rank` orders steps at one instant.
#[derive(Debug)]
enum Step<'a> {
    Reset,
    ManualReset,
    Draw(&'a StoredDraw),
    CreditAdded(&'a CreditGrant),
    CreditVoided(&'a CreditGrant),
    CreditEffective(&'a CreditGrant),
    CreditExpired(&'a CreditGrant),
}

impl Step<'_> {
    /// At one instant: a reset opens the period the draws there belong to; a draw's kept meter
    /// already holds the credit writes that came before it, and a credit write after it
    /// changes that meter (added only when absent, voided idempotently).
    fn rank(&self) -> u8 {
        match self {
            Step::Reset => 0,
            Step::ManualReset => 1,
            Step::Draw(_) => 2,
            Step::CreditAdded(_) => 3,
            Step::CreditVoided(_) => 4,
            Step::CreditEffective(_) => 5,
            Step::CreditExpired(_) => 6,
        }
    }
}

/// The meter as the walk knows it.
enum Running {
    /// Nothing drawn or credited yet.
    NotStarted,
    /// After an event stored before draws were kept.
    Unknown,
    Known(MeterState),
}

fn invalid(e: impl std::fmt::Display) -> DomainError {
    DomainError::invalid("metering", e.to_string())
}

fn too_many() -> DomainError {
    DomainError::invalid(
        "to",
        format!("the range holds more than {MAX_BALANCE_POINTS} balance points: narrow it"),
    )
}

impl<S: Storage> Engine<S> {
    /// The points of `[from, to)` where the account's meter of `feature_key` changed, oldest
    /// first (at most [`MAX_BALANCE_POINTS`]; a range holding more is refused naming `to`).
    pub async fn balance_points(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BalancePoint>> {
        crate::domain::validate_tenant_id("tenant_id", tenant_id)?;
        if from >= to {
            return Err(DomainError::invalid("to", "must be after from"));
        }
        let index = self.index.current();
        // What has not happened yet is no point: the range ends now.
        let to = to.min(self.present(&index));
        let feature = metered_or_error(&index, feature_key)?;
        known_account(&index, tenant_id)?;
        // A user's own meter (404 without one); else a pool's sub-account answers the pool's
        // meter, as its meter view does.
        let now = self.present(&index);
        let owner = match user_id {
            Some(_) => super::selected_meter(&index, tenant_id, user_id, &feature, now)?,
            None => super::meter_owner(&index, tenant_id, None, &feature, now),
        };
        let owner = &owner;
        let spec = feature.spec;
        let allocation = |t: DateTime<Utc>| super::issued(&index, owner, &feature, t);
        let limit = u64::try_from(MAX_BALANCE_POINTS + 1).unwrap_or(u64::MAX);
        let start = self.store.draw_before(owner, feature.id, from).await?;
        let draws = self.store.draws(owner, feature.id, from, to, limit).await?;
        if draws.len() > MAX_BALANCE_POINTS {
            return Err(too_many());
        }
        // The credits of this meter: the account's, or the user's own.
        let mut credits = self
            .store
            .credits(&owner.tenant_id, Some(feature.id))
            .await?;
        credits.retain(|c| c.user_id == owner.user_id);
        // The walk starts at the latest kept draw before `from` (its meter), else at the
        // meter's first credit grant.
        let walk_from = match &start {
            Some(d) => d.at,
            None => credits
                .iter()
                .map(|c| c.created_at)
                .min()
                .map_or(from, |c| c.min(from)),
        };
        let manual: Vec<DateTime<Utc>> = self
            .store
            .closed_periods(owner, feature.id, walk_from, to)
            .await?
            .into_iter()
            .filter(|p| p.manual && walk_from <= p.end && p.end < to)
            .map(|p| p.end)
            .collect();
        let mut steps: Vec<(DateTime<Utc>, Step<'_>)> = Vec::new();
        steps.extend(manual.iter().map(|&t| (t, Step::ManualReset)));
        steps.extend(draws.iter().map(|d| (d.at, Step::Draw(d))));
        for c in &credits {
            let effective = c.effective_at.max(c.created_at);
            let voided_before = |t: DateTime<Utc>| c.voided_at.is_some_and(|v| v <= t);
            if c.created_at >= walk_from && c.created_at < to {
                steps.push((c.created_at, Step::CreditAdded(c)));
            }
            if let Some(v) = c.voided_at {
                steps.push((v, Step::CreditVoided(c)));
            }
            if !voided_before(effective) {
                steps.push((effective, Step::CreditEffective(c)));
            }
            if let Some(e) = c.expires_at
                && e > effective
                && !voided_before(e)
            {
                steps.push((e, Step::CreditExpired(c)));
            }
        }
        // Only points in the range are answered; credit changes before it still move the meter
        // from the walk's start.
        steps.retain(|(t, step)| {
            *t < to && (from <= *t || (walk_from <= *t && !matches!(step, Step::CreditExpired(_))))
        });
        // A meter exists from its first write: no reset before it.
        let first = start.as_ref().map(|d| d.at).or_else(|| {
            credits
                .iter()
                .map(|c| c.created_at)
                .chain(draws.first().map(|d| d.at))
                .min()
        });
        if let Some(first) = first
            && first.max(from) < to
        {
            let resets = scheduled_resets(&spec, first.max(from), to)?;
            steps.extend(resets.into_iter().map(|t| (t, Step::Reset)));
        }
        let answered = steps.iter().filter(|(t, _)| from <= *t).count();
        if answered > MAX_BALANCE_POINTS {
            return Err(too_many());
        }
        steps.sort_by_key(|(t, step)| (*t, step.rank()));

        let mut running = match &start {
            Some(StoredDraw { drawn: Some(d), .. }) => Running::Known(d.state.clone()),
            Some(_) => Running::Unknown,
            None => Running::NotStarted,
        };
        let mut points = Vec::with_capacity(answered);
        for (at, step) in steps {
            let (kind, id) = match step {
                Step::Draw(d) => {
                    running = match &d.drawn {
                        Some(drawn) => Running::Known(drawn.state.clone()),
                        None => Running::Unknown,
                    };
                    // A draw dated ahead of the clock (just after a reset that started the
                    // period ahead) was written before the credit writes timed between its
                    // writing and its instant: they follow it.
                    if let Running::Known(state) = &mut running {
                        let between = |t: DateTime<Utc>| d.received_at <= t && t < d.at;
                        for c in &credits {
                            if between(c.created_at) && !state.credits.iter().any(|k| k.id == c.id)
                            {
                                let mut credit = c.credit();
                                credit.voided_at = None;
                                state.add_credit(credit);
                            }
                            if let Some(v) = c.voided_at
                                && between(v)
                            {
                                state.void_credit(c.id, v);
                            }
                        }
                    }
                    let reading = d.drawn.as_ref().map(|drawn| {
                        drawn
                            .state
                            .read(&spec, drawn.state.last_draw, drawn.limit())
                    });
                    points.push(BalancePoint {
                        at,
                        kind: draw_kind(d),
                        id: Some(draw_id(d)),
                        meter: reading,
                    });
                    continue;
                }
                Step::CreditAdded(c) => {
                    // The engine opens a meter at its first write.
                    if matches!(running, Running::NotStarted) {
                        running = Running::Known(MeterState::open(&spec, at).map_err(invalid)?);
                    }
                    if let Running::Known(state) = &mut running {
                        state.advance(&spec, at, &allocation).map_err(invalid)?;
                        if !state.credits.iter().any(|k| k.id == c.id) {
                            // As created: a void is its own step.
                            let mut credit = c.credit();
                            credit.voided_at = None;
                            state.add_credit(credit);
                        }
                    }
                    continue;
                }
                Step::CreditVoided(c) => {
                    if let Running::Known(state) = &mut running {
                        state.advance(&spec, at, &allocation).map_err(invalid)?;
                        state.void_credit(c.id, at);
                    }
                    (PointKind::CreditVoided, Some(c.id.to_string()))
                }
                Step::ManualReset => {
                    if let Running::Known(state) = &mut running {
                        state.reset(&spec, at, &allocation).map_err(invalid)?;
                    }
                    (PointKind::ManualReset, None)
                }
                Step::Reset => {
                    if matches!(running, Running::NotStarted) {
                        // No meter yet: nothing was reset.
                        continue;
                    }
                    (PointKind::Reset, None)
                }
                Step::CreditEffective(c) => (PointKind::CreditEffective, Some(c.id.to_string())),
                Step::CreditExpired(c) => (PointKind::CreditExpired, Some(c.id.to_string())),
            };
            if at < from {
                continue;
            }
            let meter = match &mut running {
                Running::Known(state) => {
                    state.advance(&spec, at, &allocation).map_err(invalid)?;
                    Some(state.read(&spec, at, allocation(at)))
                }
                Running::Unknown => None,
                Running::NotStarted => continue,
            };
            points.push(BalancePoint {
                at,
                kind,
                id,
                meter,
            });
        }
        Ok(points)
    }
}

/// The scheduled resets in `[from, to)`: period starts (at most one more than answers hold).
fn scheduled_resets(
    spec: &MeterSpec,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>> {
    let mut window = spec.period.containing(from).map_err(invalid)?;
    let mut resets = Vec::new();
    if window.start == from {
        resets.push(from);
    }
    while window.end < to {
        if resets.len() > MAX_BALANCE_POINTS {
            return Err(too_many());
        }
        resets.push(window.end);
        window = spec.period.window(window.index + 1).map_err(invalid)?;
    }
    Ok(resets)
}

fn draw_kind(d: &StoredDraw) -> PointKind {
    match d.outcome {
        StoredOutcome::Consumed
            if d.event_id
                .starts_with(crate::app::reservations::COMMIT_PREFIX) =>
        {
            PointKind::ReservationCommit
        }
        StoredOutcome::Consumed => PointKind::Consumption,
        StoredOutcome::Recorded | StoredOutcome::Late | StoredOutcome::Refused => PointKind::Usage,
    }
}

/// A draw's id: the event's, or for a commit the reservation's.
fn draw_id(d: &StoredDraw) -> String {
    match draw_kind(d) {
        PointKind::ReservationCommit => d
            .event_id
            .strip_prefix(crate::app::reservations::COMMIT_PREFIX)
            .unwrap_or(&d.event_id)
            .to_owned(),
        PointKind::Usage
        | PointKind::Consumption
        | PointKind::CreditEffective
        | PointKind::CreditVoided
        | PointKind::CreditExpired
        | PointKind::Reset
        | PointKind::ManualReset => d.event_id.clone(),
    }
}

#[cfg(test)]
#[path = "metering_balance_tests.rs"]
mod tests;
