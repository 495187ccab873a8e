//! The time-transition scheduler: `tenantry.grant.started.v1`, `…expiring.v1` (at each lead
//! time) and `…expired.v1`, each sent once across any number of replicas, and caught up after
//! downtime.
//!
//! A round scans the grants whose start or expiry (less a lead time) fell due in the window
//! from the cursor (less [`LOOKBACK`]) to now, through the start and expiry indexes, skipping
//! transitions already decided. Each due transition's decision (sent or passed over, see
//! [`Transition::is_sent`]) is recorded under a UNIQUE key — grant, kind, lead time and the
//! start or expiry it hangs on — in the same transaction that puts its event in the webhook
//! outbox and moves the cursor: a second decision on the same key (another replica, an
//! overlapping window) is a no-op, so an event is sent once, and a grant whose expiry moved
//! has new keys at its new time while the old ones are never due. On PostgreSQL one replica
//! scans at a time (the cursor row, `FOR UPDATE SKIP LOCKED`); SQLite's write lock does the
//! same. After downtime the window simply starts at the cursor, so what fell due meanwhile is
//! decided then. A round that finds nothing due, with reads alone, takes no write lock (it
//! moves the cursor once a minute).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tenantry_common::CancellationToken;

use super::Engine;
use super::ports::Storage;
use uuid::Uuid;

use crate::domain::transition::{Transition, TransitionKind};
use crate::domain::webhook;
use crate::domain::{Grant, Result};

/// How far behind the cursor each window reaches again: a write that commits late (its times
/// taken before a round moved the cursor past them) or a replica whose clock lags this much
/// still has its transitions seen. A start or expiry written further into the past than this
/// fires nothing (its `tenantry.grant.updated.v1` tells).
pub const LOOKBACK: chrono::Duration = chrono::Duration::minutes(5);

/// How far an idle scheduler lets its cursor fall behind before moving it (the one write of
/// an idle round): a window then reaches back at most this much beyond [`LOOKBACK`].
const IDLE_CURSOR_STEP: chrono::Duration = chrono::Duration::minutes(1);

/// Most grants a round takes per kind and lead time; more are taken by the next round, at once.
const BATCH: u64 = 500;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct TransitionSettings {
    /// When `expiring` fires, before the expiry: distinct, validated at start.
    pub lead_times: Vec<Duration>,
    /// How often a replica looks for due transitions.
    pub poll: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Events put in the outbox.
    pub sent: usize,
    /// Another replica held the cursor: this round did nothing.
    pub skipped: bool,
    /// A batch was full: more is due at once.
    pub more: bool,
}

impl<S: Storage> Engine<S> {
    /// One scheduler round at the clock's now.
    pub async fn fire_transitions(&self, lead_times: &[Duration]) -> Result<Round> {
        let now = self.now();
        // (Validated at start: 1 s to 366 days; anything beyond a century is ignored.)
        let mut kinds = vec![(TransitionKind::Started, 0), (TransitionKind::Expired, 0)];
        kinds.extend(
            lead_times
                .iter()
                .filter(|lead| lead.as_secs() <= 100 * 366 * 86_400)
                .map(|lead| (TransitionKind::Expiring, lead.as_secs() as i64)),
        );
        if self.idle(&kinds, now).await? {
            return Ok(Round::default());
        }
        let txn = self.store.begin().await?;
        let Some(scanned) = self.store.lock_transition_cursor(&txn).await? else {
            return Ok(Round {
                skipped: true,
                ..Round::default()
            });
        };
        let Some(scanned) = scanned else {
            // The first round ever starts the clock: a deployment that upgrades does not send
            // every transition of its history.
            self.store.set_transition_cursor(&txn, now).await?;
            self.store.commit_plain(txn).await?;
            return Ok(Round::default());
        };
        let from = scanned - LOOKBACK;
        let mut round = Round::default();
        // With no endpoint there is no one to tell: the cursor moves on alone (as a write
        // records no events then).
        let mut until = now;
        if self.store.webhooks_wanted(&txn).await? {
            let revision = self.store.revision_in(&txn).await?;
            let mut due = Vec::new();
            for (kind, lead_secs) in kinds {
                let lead = chrono::Duration::seconds(lead_secs);
                let grants = self
                    .store
                    .grants_due(&txn, kind, lead_secs, from + lead, now + lead, BATCH)
                    .await?;
                if grants.len() as u64 == BATCH {
                    // The rest is taken at once by the next round; the cursor stops at the
                    // last due time this batch reached (what it decided is skipped then).
                    round.more = true;
                    if let Some(last) = grants
                        .last()
                        .and_then(|g| Transition::of(g, kind, lead_secs))
                    {
                        until = until.min(last.due());
                    }
                }
                for grant in grants {
                    let Some(transition) = Transition::of(&grant, kind, lead_secs) else {
                        continue;
                    };
                    let sent = transition.is_sent(&grant, now);
                    if self
                        .store
                        .record_transition(&txn, &transition, sent, now)
                        .await?
                        && sent
                    {
                        due.push((transition, grant));
                    }
                }
            }
            let events = self.transition_events(&due, revision).await?;
            round.sent = events.len();
            if !events.is_empty() {
                self.store.enqueue_events(&txn, &events, now).await?;
            }
        }
        self.store
            .set_transition_cursor(&txn, until.max(scanned))
            .await?;
        // Every later window starts after `from` (the cursor never moves back).
        self.store.prune_transitions(&txn, from).await?;
        self.store.commit_plain(txn).await?;
        if round.sent > 0 {
            self.wake_webhooks();
        }
        Ok(round)
    }
}

impl<S: Storage> Engine<S> {
    /// Whether this round would only move a cursor that moved recently: then it is skipped,
    /// found out with reads alone, so an idle replica takes no write lock each poll.
    async fn idle(&self, kinds: &[(TransitionKind, i64)], now: DateTime<Utc>) -> Result<bool> {
        let Some(scanned) = self.store.transition_cursor().await? else {
            return Ok(false);
        };
        if now - scanned >= IDLE_CURSOR_STEP {
            return Ok(false);
        }
        if !self.store.webhooks_wanted_now().await? {
            return Ok(true);
        }
        let from = scanned - LOOKBACK;
        for &(kind, lead_secs) in kinds {
            let lead = chrono::Duration::seconds(lead_secs);
            if self
                .store
                .any_grant_due(kind, lead_secs, from + lead, now + lead)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The events of `due`, each naming its grant's plan and the plan's features (as stored:
    /// this replica's index may not yet hold a plan another replica just created).
    async fn transition_events(
        &self,
        due: &[(Transition, Grant)],
        revision: u64,
    ) -> Result<Vec<webhook::Event>> {
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut plan_ids: Vec<Uuid> = due.iter().map(|(_, g)| g.plan_id).collect();
        plan_ids.sort_unstable();
        plan_ids.dedup();
        let plans = self.store.plans_by_ids(&plan_ids).await?;
        Ok(due
            .iter()
            .map(|(transition, grant)| {
                let plan = plans.iter().find(|p| p.id == grant.plan_id);
                let features: Vec<String> = plan
                    .map(|p| p.features.iter().map(|f| f.feature_key.clone()).collect())
                    .unwrap_or_default();
                webhook::transition_event(
                    transition,
                    grant,
                    plan.map(|p| p.key.as_str()),
                    &features,
                    revision,
                )
            })
            .collect())
    }
}

/// Runs the scheduler until `shutdown`: a round every `poll` (at once again while batches are
/// full). It runs in each replica beside the webhook delivery loop, for the same reason
/// delivery does: its decision and its event commit in one transaction with the outbox, and
/// the cursor lock makes any number of replicas act as one, so there is no leader to elect.
pub async fn run<S: Storage>(
    engine: Arc<Engine<S>>,
    settings: TransitionSettings,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let more = match engine.fire_transitions(&settings.lead_times).await {
            Ok(round) => {
                if round.sent > 0 {
                    tracing::debug!(sent = round.sent, "grant transitions sent");
                }
                round.more
            }
            Err(err) => {
                tracing::warn!(error = %err, "grant transition round failed; will retry");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(settings.poll) => {}
        }
    }
}

#[cfg(test)]
mod tests;
