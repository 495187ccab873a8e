//! Reservations: an amount held on a meter for a time-to-live, then committed (drawn, possibly
//! less) or released. The hold lives in the meter's state, so every check on every replica and
//! agent counts it as spent; an expired hold counts for nothing at once (readings compare its
//! expiry with the clock) and the next write to the meter forgets it. Every step holds the
//! meter's row lock, as usage does, so holds, commits and consumptions of one meter take turns.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Engine;
use super::metering::{
    answer_json, answer_of, draw_error, issued, known_account, meter_owner, metered_or_error,
    pool_owner,
};
use super::ports::Storage;
use super::thresholds::Reached;
use crate::domain::metering::{
    Drawn, MAX_LIVE_HOLDS, MeterReading, NewReservation, Reservation, ReservationRefusal,
    ReservationStatus, ReserveAnswer, StoredOutcome, StoredUsage, commit_amount,
    validate_reservation,
};
use crate::domain::{DomainError, Result};

/// A reservation after a commit or release, with its meter then.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub reservation: Reservation,
    pub meter: MeterReading,
    /// The same commit or release was made before: nothing changed now.
    pub replayed: bool,
    pub revision: u64,
}

/// The usage event a commit records (so usage history shows it).
/// A commit's usage event id: this prefix and the reservation's id.
pub(crate) const COMMIT_PREFIX: &str = "reservation:";

fn commit_event_id(id: Uuid) -> String {
    format!("{COMMIT_PREFIX}{id}")
}

impl<S: Storage> Engine<S> {
    /// Holds `amount` for `ttl` if the meter allows it; a retry with the same key returns the
    /// first answer (`true`: replayed) and holds nothing more.
    pub async fn reserve(&self, r: NewReservation) -> Result<(Reservation, ReserveAnswer, bool)> {
        validate_reservation(&r)?;
        let now = self.now();
        let index = self.index.current();
        let feature = metered_or_error(&index, &r.feature_key)?;
        known_account(&index, &r.tenant_id)?;
        let txn = self.store.begin().await?;
        let tenant_id = r.tenant_id.clone();
        // The hold lives on the meter the account (or its user) draws on: the user's own, the
        // account's, or a pool's (its owner's).
        let owner = meter_owner(&index, &tenant_id, r.user_id.as_deref(), &feature, now);
        let allocation = |t: DateTime<Utc>| issued(&index, &owner, &feature, t);
        let mut state = self
            .open_meter(&txn, &owner, &feature, now, &allocation)
            .await?;
        if let Some((prior, answer)) = self
            .store
            .reservation_by_key(&txn, &tenant_id, &r.id)
            .await?
        {
            self.store.commit_plain(txn).await?;
            let same = prior.feature_id == feature.id
                && prior.amount == r.amount
                && prior.user_id == r.user_id
                && prior.expires_at - prior.created_at == r.ttl;
            return if same {
                Ok((prior.at(now), answer_of(&answer)?, true))
            } else {
                Err(DomainError::IdempotencyKeyReused(r.id))
            };
        }
        if state.live_holds(now) >= MAX_LIVE_HOLDS {
            return Err(DomainError::TooManyHolds {
                limit: MAX_LIVE_HOLDS,
            });
        }
        let requested = u64::try_from(r.amount).unwrap_or(u64::MAX);
        let decision = index
            .meter_decision(
                &r.tenant_id,
                r.user_id.as_deref(),
                &feature.key,
                Some(&state),
                Some(requested),
                now,
            )
            .ok_or_else(|| DomainError::not_found("account", &r.tenant_id))?;
        let reservation = Reservation {
            id: Uuid::now_v7(),
            key: r.id,
            tenant_id: r.tenant_id,
            user_id: r.user_id,
            feature_id: feature.id,
            feature_key: feature.key.clone(),
            amount: r.amount,
            status: if decision.result {
                ReservationStatus::Held
            } else {
                ReservationStatus::Refused
            },
            expires_at: now + r.ttl,
            committed_amount: None,
            created_at: now,
            settled_at: None,
            meter_owner: pool_owner(&tenant_id, &owner),
            meter_user: owner.user_id.clone(),
        };
        if decision.result {
            state.hold(reservation.hold());
        }
        let mut answer = ReserveAnswer {
            held: decision.result,
            justification: decision.justification,
            allow_reason: decision.allow_reason,
            meter: Some(state.read(&feature.spec, now, allocation(now))),
            revision: 0,
            meter_owner: reservation.meter_owner.clone(),
            meter_user: reservation.meter_user.clone(),
        };
        if !self
            .store
            .insert_reservation(&txn, &reservation, &answer_json(&answer)?)
            .await?
        {
            return Err(DomainError::Conflict {
                kind: "reservation",
                field: "id",
            });
        }
        if !decision.result {
            self.store.commit_plain(txn).await?;
            return Ok((reservation, answer, false));
        }
        // A hold is not usage: it reaches no threshold (the commit that draws it may).
        answer.revision = self
            .commit_meter(txn, &owner, feature.id, state, now, Reached::default())
            .await?;
        Ok((reservation, answer, false))
    }

    /// Draws a held reservation's amount (all of it when `amount` is `None`) and frees it.
    pub async fn commit_reservation(&self, id: Uuid, amount: Option<i64>) -> Result<Settled> {
        self.settle(id, Some(amount)).await
    }

    /// Frees a held reservation without drawing.
    pub async fn release_reservation(&self, id: Uuid) -> Result<Settled> {
        self.settle(id, None).await
    }

    /// A reservation as it stands now.
    pub async fn reservation(&self, id: Uuid) -> Result<Reservation> {
        let found = self
            .store
            .reservation(id)
            .await?
            .ok_or_else(|| DomainError::not_found("reservation", id))?;
        Ok(found.at(self.now()))
    }

    /// Commits (`Some(amount)`) or releases (`None`) a reservation under its meter's lock.
    async fn settle(&self, id: Uuid, commit: Option<Option<i64>>) -> Result<Settled> {
        let now = self.now();
        let index = self.index.current();
        let found = self
            .store
            .reservation(id)
            .await?
            .ok_or_else(|| DomainError::not_found("reservation", id))?;
        let feature = metered_or_error(&index, &found.feature_key)?;
        // A deleted account's meters take no writes (reactivating it brings them back).
        known_account(&index, &found.tenant_id)?;
        // Settled where it is held, even if the account has moved or the user's grant gone
        // since; a deleted pool owner's meter takes no writes either.
        let owner = found.meter_key();
        let tenant_id = found.tenant_id;
        known_account(&index, &owner.tenant_id)?;
        let txn = self.store.begin().await?;
        let allocation = |t: DateTime<Utc>| issued(&index, &owner, &feature, t);
        let mut state = self
            .open_meter(&txn, &owner, &feature, now, &allocation)
            .await?;
        // Read again under the meter's lock: the one other settlement of it has finished.
        let mut reservation = self
            .store
            .reservation_in(&txn, id)
            .await?
            .ok_or_else(|| DomainError::not_found("reservation", id))?;
        let status = reservation.status_at(now);
        let repeat = match (commit, status) {
            (_, ReservationStatus::Held) => false,
            (Some(amount), ReservationStatus::Committed) => {
                if amount.is_some_and(|a| Some(a) != reservation.committed_amount) {
                    return Err(DomainError::Reservation(ReservationRefusal::Settled(
                        status,
                    )));
                }
                true
            }
            (None, ReservationStatus::Released | ReservationStatus::Expired) => true,
            (Some(_), ReservationStatus::Expired) => {
                return Err(DomainError::Reservation(ReservationRefusal::Expired));
            }
            (_, other) => {
                return Err(DomainError::Reservation(ReservationRefusal::Settled(other)));
            }
        };
        if repeat {
            self.store.commit_plain(txn).await?;
            return Ok(Settled {
                meter: state.read(&feature.spec, now, allocation(now)),
                reservation: reservation.at(now),
                replayed: true,
                revision: self.revision(),
            });
        }
        state.release(id);
        match commit {
            Some(amount) => {
                let amount = commit_amount(&reservation, amount)?;
                // In the open period (a reset may have started it a little ahead of the clock).
                let drawn_at = now.max(state.start);
                state
                    .draw(&feature.spec, drawn_at, amount, &allocation)
                    .map_err(draw_error)?;
                reservation.status = ReservationStatus::Committed;
                reservation.committed_amount = Some(amount);
                let event = StoredUsage {
                    tenant_id: tenant_id.clone(),
                    event_id: commit_event_id(id),
                    feature_id: feature.id,
                    user_id: reservation.user_id.clone(),
                    amount,
                    counted: amount,
                    occurred_at: drawn_at,
                    received_at: now,
                    outcome: StoredOutcome::Consumed,
                    answer: None,
                    unique: None,
                    drawn: Some(Drawn::after(&owner, &state, allocation(state.last_draw))),
                };
                if !self.store.insert_usage(&txn, &event).await? {
                    return Err(DomainError::Conflict {
                        kind: "usage event",
                        field: "id",
                    });
                }
            }
            None => reservation.status = ReservationStatus::Released,
        }
        reservation.settled_at = Some(now);
        self.store.update_reservation(&txn, &reservation).await?;
        let meter = state.read(&feature.spec, now, allocation(now));
        let mut reached = Reached::default();
        if commit.is_some() {
            self.usage_thresholds(
                &txn,
                &mut reached,
                (&owner, feature.id, &feature.key),
                &meter,
                now,
            )
            .await?;
        }
        let revision = self
            .commit_meter(txn, &owner, feature.id, state, now, reached)
            .await?;
        Ok(Settled {
            reservation,
            meter,
            replayed: false,
            revision,
        })
    }
}

#[cfg(test)]
#[path = "reservations_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "metering_model_tests.rs"]
mod model_tests;
