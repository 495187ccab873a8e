//! Check-and-consume, with group commit: consumptions arriving while one transaction runs
//! wait for it, then go together in the next — one transaction, one lock statement for all
//! their meters, one insert for all their events, one meter write, one revision — decided one
//! after another in arrival order on the meters as the previous ones left them. Each answers
//! only once that transaction is durable. A transaction of several that fails is run again one
//! consumption at a time, so one's fault (a racing id, a storage error) is not the others'.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::super::ports::{DrawLane, SeenMeter, Storage};
use super::super::thresholds::Reached;
use super::batch::unchanged_meter;
use super::{
    Metered, answer_json, answer_of, draw_error, issued, known_account, meter_owner,
    metered_or_error, pool_owner,
};
use crate::app::Engine;
use crate::domain::metering::{
    ConsumeAnswer, Drawn, MeterKey, MeterState, NewConsumption, StoredOutcome, StoredUsage,
    validate_consumption,
};
use crate::domain::{DomainError, EntitlementIndex, IndexChange, Result};

/// The most consumptions one transaction takes (the rest wait for the next).
const MAX_GROUP: usize = 256;

type Answer = Result<(ConsumeAnswer, bool)>;

/// Consumptions waiting for their transaction, and the turn to run one.
#[derive(Default)]
pub struct ConsumeQueue {
    pending: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
}

struct Pending {
    consumption: NewConsumption,
    reply: oneshot::Sender<Answer>,
}

impl std::fmt::Debug for ConsumeQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = self.pending.lock().map_or(0, |p| p.len());
        f.debug_struct("ConsumeQueue")
            .field("waiting", &waiting)
            .finish()
    }
}

impl ConsumeQueue {
    fn push(&self, pending: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pending);
    }

    fn take(&self) -> Vec<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = pending.len().min(MAX_GROUP);
        pending.drain(..n).collect()
    }
}

impl<S: Storage> Engine<S> {
    /// Checks a metered feature and consumes `amount` if allowed, atomically; a retry with the
    /// same id returns the first answer (`true`: replayed) and consumes nothing more.
    pub async fn consume_usage(&self, c: NewConsumption) -> Answer {
        validate_consumption(&c)?;
        loop {
            let (reply, mut answer) = oneshot::channel();
            self.consumes.push(Pending {
                consumption: c.clone(),
                reply,
            });
            {
                // Whoever holds the turn runs what is pending, until this one is answered.
                let _turn = self.consumes.turn.lock().await;
                loop {
                    if let Ok(answered) = answer.try_recv() {
                        return answered;
                    }
                    let group = self.consumes.take();
                    if group.is_empty() {
                        break;
                    }
                    self.consume_group(group).await;
                }
            }
            match answer.await {
                Ok(answered) => return answered,
                // The caller running its group was cancelled before answering: asking again is
                // safe (if it committed, the stored answer is replayed).
                Err(_) => continue,
            }
        }
    }

    async fn consume_group(&self, group: Vec<Pending>) {
        let (consumptions, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|p| (p.consumption, p.reply)).unzip();
        match self.consume_together(&consumptions).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A caller that went away needs no answer.
                    let _ = reply.send(answer);
                }
            }
            Err(e) if consumptions.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            Err(_) => {
                for (c, reply) in consumptions.iter().zip(replies) {
                    let answer = match self.consume_together(std::slice::from_ref(c)).await {
                        Ok(mut answers) => answers.remove(0),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// Consumptions in one transaction, in order; `Err` when the transaction failed (nothing
    /// of it is stored), else each one's answer.
    async fn consume_together(&self, group: &[NewConsumption]) -> Result<Vec<Answer>> {
        let now = self.now();
        let index = self.index.current();
        let mut answers: Vec<Option<Answer>> = group.iter().map(|_| None).collect();
        // Each consumption's meter: its user's own, its account's, or the pool's it draws on.
        let mut meters: BTreeMap<(MeterKey, Uuid), Metered> = BTreeMap::new();
        let mut owners: Vec<Option<(MeterKey, Uuid)>> = Vec::with_capacity(group.len());
        for (c, answer) in group.iter().zip(&mut answers) {
            let found = metered_or_error(&index, &c.feature_key)
                .and_then(|f| known_account(&index, &c.tenant_id).map(|()| f));
            match found {
                Ok(f) => {
                    let owner = meter_owner(&index, &c.tenant_id, c.user_id.as_deref(), &f, now);
                    let key = (owner, f.id);
                    owners.push(Some(key.clone()));
                    meters.entry(key).or_insert(f);
                }
                Err(e) => {
                    owners.push(None);
                    *answer = Some(Err(e));
                }
            }
        }
        if meters.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
        }
        if let Some(decided) = self
            .consume_unchanged(&index, group, &owners, &meters, now)
            .await?
        {
            for (answer, decided) in answers.iter_mut().zip(decided) {
                if let Some(decided) = decided {
                    *answer = Some(Ok((decided, false)));
                }
            }
            return Ok(answers.into_iter().flatten().collect());
        }
        let txn = self.store.begin().await?;
        let keys: Vec<(&MeterKey, &Metered)> = meters
            .iter()
            .map(|((owner, _), feature)| (owner, feature))
            .collect();
        let opened = self.open_meters(&txn, &index, &keys, now).await?;
        let mut states: BTreeMap<&(MeterKey, Uuid), MeterState> =
            meters.keys().zip(opened).collect();
        // Ids are each consuming account's (also when it draws on a pool).
        let ids: Vec<(&str, &str)> = group
            .iter()
            .zip(&owners)
            .filter(|(_, o)| o.is_some())
            .map(|(c, _)| (c.tenant_id.as_str(), c.id.as_str()))
            .collect();
        let mut stored: HashMap<(String, String), StoredUsage> = self
            .store
            .usage_events(&txn, &ids)
            .await?
            .into_iter()
            .map(|u| ((u.tenant_id.clone(), u.event_id.clone()), u))
            .collect();
        let mut rows = Vec::new();
        let mut reached = Reached::default();
        let mut drawn = Vec::new();
        for (i, c) in group.iter().enumerate() {
            let Some(key) = &owners[i] else {
                continue;
            };
            let feature = &meters[key];
            // A retry: of a consumption stored before, or of one earlier in this group.
            if let Some(prior) = stored.get(&(c.tenant_id.clone(), c.id.clone())) {
                let same = prior.feature_id == feature.id && prior.amount == c.amount;
                answers[i] = Some(match prior.answer.as_deref().filter(|_| same) {
                    Some(answer) => answer_of(answer).map(|a| (a, true)),
                    None => Err(DomainError::IdempotencyKeyReused(c.id.clone())),
                });
                continue;
            }
            let state = states.get_mut(key).ok_or_else(|| {
                DomainError::internal("a consumption's meter is not among those locked")
            })?;
            let (answer, usage) = decide(&index, c, &key.0, feature, state, now)?;
            if answer.consumed {
                if let Some(reading) = &answer.meter {
                    self.usage_thresholds(
                        &txn,
                        &mut reached,
                        (&key.0, feature.id, &feature.key),
                        reading,
                        now,
                    )
                    .await?;
                }
                if !drawn.contains(&key) {
                    drawn.push(key);
                }
            }
            stored.insert((c.tenant_id.clone(), c.id.clone()), usage.clone());
            rows.push(usage);
            answers[i] = Some(Ok((answer, false)));
        }
        drawn.sort_unstable();
        let written: Vec<(&MeterKey, Uuid, &MeterState)> = drawn
            .iter()
            .map(|key| (&key.0, key.1, &states[key]))
            .collect();
        // A conflict (another writer stored one of these ids meanwhile, on a meter not locked
        // here) fails the group: each of its consumptions is then run alone.
        self.store.store_draws(&txn, &rows, &written, now).await?;
        let revision = if drawn.is_empty() {
            self.store.commit_plain(txn).await?;
            let replayed = answers
                .iter()
                .flatten()
                .flatten()
                .any(|(a, _)| a.consumed && a.revision == 0);
            if !replayed {
                return Ok(answers.into_iter().flatten().collect());
            }
            // A replay's stored answer predates its commit's revision: the newest revision
            // is at or after it (this transaction saw the consumption stored), so a client's
            // `min_revision` from it still reads the consumption.
            self.store.revision().await?
        } else {
            let changes = drawn
                .iter()
                .map(|key| IndexChange::UpsertMeter {
                    tenant_id: key.0.tenant_id.clone(),
                    user_id: key.0.user_id.clone(),
                    feature_id: key.1,
                    state: Box::new(states[key].clone()),
                })
                .collect();
            self.commit_metered(txn, changes, reached).await?
        };
        for (a, _) in answers.iter_mut().flatten().flatten() {
            if a.consumed && a.revision == 0 {
                a.revision = revision;
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }
}

impl<S: Storage> Engine<S> {
    /// The common case in one statement, without locking first: the group decided on its
    /// meters as this replica's index holds them, written only if each is still stored so
    /// ([`MeterStore::draw_if_unchanged`](super::super::ports::MeterStore::draw_if_unchanged)).
    /// `None` (nothing written) sends the group down the locked path: a meter the index does
    /// not hold or that moved (another replica's write, not yet followed), a period to close
    /// or a threshold reached (both recorded under the lock), a retry (within the group, or
    /// of a stored id: its key is taken), refusals only (stored without a revision). Else
    /// each consumption's answer (`None` where `owners` has no meter).
    async fn consume_unchanged(
        &self,
        index: &EntitlementIndex,
        group: &[NewConsumption],
        owners: &[Option<(MeterKey, Uuid)>],
        meters: &BTreeMap<(MeterKey, Uuid), Metered>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Option<ConsumeAnswer>>>> {
        let mut ids = HashSet::with_capacity(group.len());
        let repeated = group
            .iter()
            .zip(owners)
            .filter(|(_, o)| o.is_some())
            .any(|(c, _)| !ids.insert((c.tenant_id.as_str(), c.id.as_str())));
        if repeated {
            return Ok(None);
        }
        // Each meter as stored (the index holds what the last write stored) and as drawn on.
        let mut seen: BTreeMap<&(MeterKey, Uuid), (&MeterState, MeterState)> = BTreeMap::new();
        for key in meters.keys() {
            let Some(meter) = unchanged_meter(index, (&key.0, key.1), now) else {
                return Ok(None);
            };
            seen.insert(key, meter);
        }
        let mut decided: Vec<Option<ConsumeAnswer>> = group.iter().map(|_| None).collect();
        let mut rows = Vec::with_capacity(group.len());
        let mut drawn: Vec<&(MeterKey, Uuid)> = Vec::new();
        for ((c, owner), decided) in group.iter().zip(owners).zip(&mut decided) {
            let Some(key) = owner else {
                continue;
            };
            let (Some(feature), Some((_, state))) = (meters.get(key), seen.get_mut(key)) else {
                return Ok(None);
            };
            let Ok((answer, usage)) = decide(index, c, &key.0, feature, state, now) else {
                return Ok(None);
            };
            if answer.consumed {
                let reached = answer
                    .meter
                    .as_ref()
                    .is_some_and(|reading| !self.thresholds.reached(reading).is_empty());
                if reached {
                    return Ok(None);
                }
                if !drawn.contains(&key) {
                    drawn.push(key);
                }
            }
            rows.push(usage);
            *decided = Some(answer);
        }
        if drawn.is_empty() {
            return Ok(None);
        }
        let meters = seen.iter().map(|(&key, (stored, state))| SeenMeter {
            owner: &key.0,
            feature_id: key.1,
            before: stored,
            after: drawn.contains(&key).then_some(state),
        });
        let Some(revision) = self
            .draw_unchanged(meters, &rows, now, DrawLane::Consumptions)
            .await?
        else {
            return Ok(None);
        };
        for answer in decided.iter_mut().flatten() {
            if answer.consumed {
                answer.revision = revision;
            }
        }
        Ok(Some(decided))
    }
}

/// One consumption decided on its meter (drawn on when allowed): the answer and the event
/// that records it.
fn decide(
    index: &EntitlementIndex,
    c: &NewConsumption,
    owner: &MeterKey,
    feature: &Metered,
    state: &mut MeterState,
    now: DateTime<Utc>,
) -> Result<(ConsumeAnswer, StoredUsage)> {
    let allocation = |t: DateTime<Utc>| issued(index, owner, feature, t);
    // In the open period (a reset may have started it a little ahead of the clock).
    let drawn_at = now.max(state.start);
    let requested = u64::try_from(c.amount).unwrap_or(u64::MAX);
    let decision = index
        .meter_decision(
            &c.tenant_id,
            c.user_id.as_deref(),
            &feature.key,
            Some(state),
            Some(requested),
            now,
        )
        .ok_or_else(|| DomainError::not_found("account", &c.tenant_id))?;
    if decision.result {
        state
            .draw(&feature.spec, drawn_at, c.amount, &allocation)
            .map_err(draw_error)?;
    }
    let answer = ConsumeAnswer {
        consumed: decision.result,
        justification: decision.justification,
        allow_reason: decision.allow_reason,
        meter: Some(state.read(&feature.spec, now, allocation(now))),
        revision: 0,
        meter_owner: pool_owner(&c.tenant_id, owner),
        meter_user: owner.user_id.clone(),
    };
    let usage = StoredUsage {
        tenant_id: c.tenant_id.clone(),
        event_id: c.id.clone(),
        feature_id: feature.id,
        user_id: c.user_id.clone(),
        amount: c.amount,
        counted: if decision.result { c.amount } else { 0 },
        occurred_at: drawn_at,
        received_at: now,
        outcome: if decision.result {
            StoredOutcome::Consumed
        } else {
            StoredOutcome::Refused
        },
        answer: Some(answer_json(&answer)?),
        unique: None,
        drawn: decision
            .result
            .then(|| Drawn::after(owner, state, allocation(state.last_draw))),
    };
    Ok((answer, usage))
}
