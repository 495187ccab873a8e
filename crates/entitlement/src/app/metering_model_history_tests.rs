//! The reference model's history, compared with the engine's: the closed periods of every
//! meter (GET …/meters/{feature}/periods), a check at a past instant between steps (README
//! "Point in time": the meter as it was then, holds left out), usage per window (by period and
//! by day) and the balance burn-down (draws, credit grants taking effect, voided and expiring,
//! scheduled and manual resets) — for accounts on their own meter, pools' owners, pooled
//! sub-accounts (they answer the pool's periods and burn-down, and their own events' usage:
//! `app/metering_history.rs`) and users' own meters. The past is the model's meters after
//! each step (`snap`), taken forward to the instant asked by the model's own rules.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use rand::Rng;

use super::{
    Account, ClosedPeriod, DrawKind, Kept, LoggedCredit, MeterAt, Model, Sequence, USER,
    answer_for, model_at, owner_of, summary,
};
use crate::app::checks::CheckQuery;
use crate::app::metering::balance::PointKind;
use crate::app::testing::feature_query;
use crate::domain::usage_history::{HistoryQuery, WindowSize};
use crate::domain::{Aggregation, DomainError};

/// How far back every history query reaches: before any sequence's first write.
const BEFORE: TimeDelta = TimeDelta::days(400);

impl Sequence<'_> {
    /// Keeps the step's instant and every meter after it (the model's history).
    pub(super) fn snap(&mut self) {
        let now = self.e.engine.now();
        let meters = self
            .accounts
            .iter()
            .map(|a| (a.model.clone(), a.user.clone()))
            .collect();
        self.snaps.push((now, meters));
    }

    /// The meter account `i`'s reads select now: with `user`, the user's own when it has one
    /// (else the account's); the account's own or its pool's.
    fn read_meter(&self, i: usize, user: bool, now: DateTime<Utc>) -> MeterAt {
        if user && self.user_selected(i, now) {
            return (i, true);
        }
        (owner_of(&self.accounts, i, now).0, false)
    }

    /// After a step: one account's (or its user's) closed periods, and a check at a past
    /// instant of the sequence.
    pub(super) async fn compare_history(&mut self) {
        let now = self.e.engine.now();
        let i = self.pick();
        let user = self.by_user();
        if !self.deleted(i) {
            self.compare_periods(i, user, now).await;
        }
        self.compare_past(now).await;
    }

    /// The closed periods the engine lists for account `i` (its user's own, with `user`):
    /// those the model closed since the meter's first write, the clock's closes since its
    /// last write too.
    async fn compare_periods(&mut self, i: usize, user: bool, now: DateTime<Utc>) {
        let tenant = self.name(i);
        let got = self
            .e
            .engine
            .meter_periods(
                &tenant,
                user.then_some(USER),
                &self.key,
                now - BEFORE,
                now + TimeDelta::days(1),
            )
            .await;
        if user && !self.user_selected(i, now) {
            if !matches!(
                got,
                Err(DomainError::NotFound {
                    kind: "user meter",
                    ..
                })
            ) {
                self.fail(&format!(
                    "the periods of {tenant}'s user, without a meter of its own, answered \
                     {got:?}"
                ));
            }
            return;
        }
        let got: Vec<ClosedPeriod> = got.unwrap().iter().map(summary).collect();
        let mut model = model_at(&self.accounts, self.read_meter(i, user, now)).clone();
        model.advance(now);
        let want: Vec<ClosedPeriod> = if model.written {
            model
                .closed
                .iter()
                .map(|p| {
                    let first = model.recorded.iter().find(|r| r.start == p.start);
                    first.unwrap_or(p).clone()
                })
                .collect()
        } else {
            Vec::new()
        };
        if got != want {
            self.fail(&format!(
                "the closed periods of {tenant} (its user's: {user}) {got:?}, the model {want:?}"
            ));
        }
    }

    /// A check at a random instant between two earlier steps, of a random account or its
    /// user, against the model's meters after the earlier step, holds left out. Not once the
    /// past was rewritten (a grant deleted, an account moved or deleted: the engine answers the
    /// past with the grants and hierarchy it has now), nor at an instant a write dated before
    /// it came later (a late event: the burn-down places a draw at its instant).
    async fn compare_past(&mut self, now: DateTime<Utc>) {
        if self.rewritten || self.snaps.len() < 2 {
            return;
        }
        let k = self.rng.random_range(0..self.snaps.len() - 1);
        let (from, _) = self.snaps[k];
        let seconds = (now - from).num_seconds();
        if seconds <= 1 {
            return;
        }
        let at = from + TimeDelta::seconds(self.rng.random_range(1..seconds));
        if self.kept.iter().any(|d| (d.at <= at) != (d.written <= at)) {
            return;
        }
        // The meters after the last step at or before `at`.
        let Some((_, meters)) = self.snaps.iter().rev().find(|(t, _)| *t <= at) else {
            return;
        };
        let accounts: Vec<Account> = self
            .accounts
            .iter()
            .zip(meters)
            .map(|(a, (model, user))| {
                let mut a = a.clone();
                a.model = without_holds(model);
                a.user = without_holds(user);
                a
            })
            .collect();
        let i = self.pick();
        let user = self.by_user();
        let requested = if self.rng.random_bool(0.5) {
            1
        } else {
            self.rng.random_range(1..120)
        };
        let tenant = self.name(i);
        let query = CheckQuery {
            requested: Some(requested as u64),
            at: Some(at),
            ..feature_query(&tenant, user.then_some(USER), &self.key)
        };
        let decision = self.e.engine.check(&query, 0).await.unwrap().value;
        let want = answer_for(&accounts, i, user, at, requested);
        let got = super::Answer {
            result: decision.result,
            justification: decision
                .justification
                .filter(|_| want.justification.is_some()),
            allow_reason: decision.allow_reason,
            metered: decision.meter.is_some(),
        };
        if got != want {
            self.fail(&format!(
                "checked {tenant} (its user: {user}) for {requested} at {at}: {decision:?}, the \
                 model {want:?}"
            ));
        }
        if let Some(meter) = &decision.meter {
            let model = model_at(&accounts, super::meter_of(&accounts, i, user, at)).clone();
            self.same_reading(
                &format!("checked {tenant} (its user: {user}) at {at}"),
                Some(meter),
                &model,
                at,
            );
        }
    }

    /// At the end of a sequence: every live account's (and its user's) usage per period and
    /// per day, and the draws of its burn-down.
    pub(super) async fn compare_all_history(&mut self) {
        let now = self.e.engine.now();
        let from = self.snaps.first().map_or(now, |s| s.0) - BEFORE;
        for i in 0..self.accounts.len() {
            if self.deleted(i) {
                continue;
            }
            for user in [false, true] {
                self.compare_usage(i, user, from, now, WindowSize::Period)
                    .await;
                let days = from.max(now - TimeDelta::days(60));
                self.compare_usage(i, user, days, now, WindowSize::Day)
                    .await;
                self.compare_burn_down(i, user, from, now).await;
            }
        }
    }

    /// Account `i`'s usage (its user's, with `user`) per `size` over `[from, to)`: its own
    /// events (a pool's sub-account's too: history counts what the account reported), in the
    /// periods of the meter its reads select.
    async fn compare_usage(
        &mut self,
        i: usize,
        user: bool,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        size: WindowSize,
    ) {
        let tenant = self.name(i);
        let q = HistoryQuery {
            tenant_id: tenant.clone(),
            feature_key: self.key.clone(),
            from,
            to,
            window: size,
            user_id: user.then(|| USER.to_owned()),
        };
        let got: Vec<(DateTime<Utc>, DateTime<Utc>, i64)> = self
            .e
            .engine
            .usage_history(&q)
            .await
            .unwrap()
            .windows
            .iter()
            .map(|w| (w.start, w.end, w.usage))
            .collect();
        let bounds = match size {
            WindowSize::Period => {
                let meter = model_at(&self.accounts, self.read_meter(i, user, to)).clone();
                period_bounds(&meter, from, to)
            }
            WindowSize::Day => day_bounds(from, to),
            WindowSize::Hour | WindowSize::Week | WindowSize::Month => {
                unreachable!("the model cuts by period and by day")
            }
        };
        let aggregation = self.accounts[i].model.kind.aggregation;
        let want: Vec<(DateTime<Utc>, DateTime<Utc>, i64)> = bounds
            .windows(2)
            .map(|w| {
                let mut sum = 0;
                let mut max = 0;
                let mut values = std::collections::HashSet::new();
                let mut without_value = 0;
                for e in &self.stored {
                    if e.account != i || (user && !e.user) || e.at < w[0] || e.at >= w[1] {
                        continue;
                    }
                    sum += e.counted;
                    if !e.refused {
                        max = max.max(e.amount);
                        match &e.unique {
                            Some(v) => {
                                values.insert(v.clone());
                            }
                            None => without_value += e.counted,
                        }
                    }
                }
                let usage = match aggregation {
                    Aggregation::Sum | Aggregation::Count => sum,
                    Aggregation::Max => max,
                    Aggregation::UniqueCount => values.len() as i64 + without_value,
                };
                (w[0], w[1], usage)
            })
            .collect();
        if got != want {
            self.fail(&format!(
                "the usage of {tenant} (its user's: {user}) per {size:?} {got:?}, the model \
                 {want:?}"
            ));
        }
    }

    /// The balance burn-down of the meter account `i`'s reads select (its user's own, with
    /// `user`: 404 `user meter` without one) over `[from, to)`, from the meter's start (its
    /// first draw or credit grant): each draw with the meter it left; each credit grant taking
    /// effect (unless voided by then), voided, expiring (after it took effect, unless voided);
    /// each scheduled and manual reset after the start — with the meter then (holds left out),
    /// where the model's history tells it: not once the past was rewritten or a late draw
    /// falls before the point, nor at an instant where two writes of the meter happened (the
    /// burn-down orders one instant's points by kind, not as they happened).
    async fn compare_burn_down(
        &mut self,
        i: usize,
        user: bool,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) {
        let tenant = self.name(i);
        let got = self
            .e
            .engine
            .balance_points(&tenant, user.then_some(USER), &self.key, from, to)
            .await;
        if user && !self.user_selected(i, to) {
            if !matches!(
                got,
                Err(DomainError::NotFound {
                    kind: "user meter",
                    ..
                })
            ) {
                self.fail(&format!(
                    "the burn-down of {tenant}'s user, without a meter of its own, answered \
                     {got:?}"
                ));
            }
            return;
        }
        let meter = self.read_meter(i, user, to);
        let draws: Vec<&Kept> = self
            .kept
            .iter()
            .filter(|d| d.meter == meter && from <= d.at && d.at < to)
            .collect();
        let credits: Vec<&LoggedCredit> = self
            .credit_log
            .iter()
            .filter(|c| c.meter == meter)
            .collect();
        let manual: Vec<DateTime<Utc>> = {
            let mut ahead = model_at(&self.accounts, meter).clone();
            ahead.advance(to);
            ahead
                .closed
                .iter()
                .filter(|p| p.manual)
                .map(|p| p.end)
                .collect()
        };
        // The writes of the meter at each instant.
        let writes = |t: DateTime<Utc>| {
            draws.iter().filter(|d| d.at == t).count()
                + credits.iter().filter(|c| c.created_at == t).count()
                + credits.iter().filter(|c| c.voided_at == Some(t)).count()
                + manual.iter().filter(|&&m| m == t).count()
        };
        // The meter's start: its first draw or credit grant.
        let start = draws
            .iter()
            .map(|d| d.at)
            .chain(credits.iter().map(|c| c.created_at))
            .min();
        let mut points: Vec<(DateTime<Utc>, PointKind, String, Option<Reading>)> = Vec::new();
        for d in &draws {
            let kind = match d.kind {
                DrawKind::Usage => PointKind::Usage,
                DrawKind::Consumption => PointKind::Consumption,
                DrawKind::Commit => PointKind::ReservationCommit,
            };
            let state = without_holds(&d.state);
            points.push((d.at, kind, d.id.clone(), Some(state.reading(d.at))));
        }
        let mut others: Vec<(DateTime<Utc>, PointKind, String, usize)> = Vec::new();
        for c in &credits {
            let id = c.id.to_string();
            let effective = c.effective_at.max(c.created_at);
            let voided_by = |t: DateTime<Utc>| c.voided_at.is_some_and(|v| v <= t);
            if !voided_by(effective) {
                let own = usize::from(effective == c.created_at);
                others.push((effective, PointKind::CreditEffective, id.clone(), own));
            }
            if let Some(v) = c.voided_at {
                others.push((v, PointKind::CreditVoided, id.clone(), 1));
            }
            if let Some(x) = c.expires_at
                && x > effective
                && !voided_by(x)
            {
                others.push((x, PointKind::CreditExpired, id, 0));
            }
        }
        if let Some(start) = start {
            let mut window = super::period().containing(start).unwrap();
            while window.end < to {
                if start < window.end {
                    others.push((window.end, PointKind::Reset, String::new(), 0));
                }
                window = super::period().window(window.index + 1).unwrap();
            }
            for &m in &manual {
                if start < m {
                    others.push((m, PointKind::ManualReset, String::new(), 1));
                }
            }
        }
        for (t, kind, id, own) in others {
            if t < from || t >= to {
                continue;
            }
            // The meter then, when the model's history tells it: the writes at `t` are the
            // point's own (if any), the past as it was, no late draw placed before `t` after.
            let known = !self.rewritten
                && writes(t) == own
                && !self.kept.iter().any(|d| (d.at <= t) != (d.written <= t));
            let reading = known.then(|| {
                self.snaps
                    .iter()
                    .rev()
                    .find(|(s, _)| *s <= t)
                    .map(|(_, meters)| {
                        let (account, user) = &meters[meter.0];
                        let m = if meter.1 { user } else { account };
                        without_holds(m).reading(t)
                    })
            });
            points.push((t, kind, id, reading.flatten()));
        }
        let mut got: Vec<(DateTime<Utc>, PointKind, String, Option<Reading>)> = got
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.at,
                    p.kind,
                    p.id.unwrap_or_default(),
                    p.meter.map(|m| (m.balance, m.usage, m.overage, m.held)),
                )
            })
            .collect();
        // Where the model does not know the meter, only the point is compared.
        for (t, kind, id, reading) in &points {
            if reading.is_none()
                && let Some(g) = got
                    .iter_mut()
                    .find(|g| (g.0, g.1, &g.2) == (*t, *kind, id) && g.3.is_some())
            {
                g.3 = None;
            }
        }
        got.sort();
        points.sort();
        if got != points {
            self.fail(&format!(
                "the burn-down of {tenant} (its user's: {user}) from {from} (at, kind, id, \
                 (balance, usage, overage, held)) {got:?}, the model {points:?}"
            ));
        }
    }
}

/// A meter's (balance, usage, overage, held).
type Reading = (Option<i64>, i64, i64, i64);

/// The meter as history has it: holds are not history.
fn without_holds(model: &Model) -> Model {
    let mut m = model.clone();
    m.holds.clear();
    m
}

/// Where `meter`'s periods bound windows in `[from, to)`: the scheduled resets, and the bounds
/// of the periods it closed and of its open one (a manual reset cuts a period short).
fn period_bounds(meter: &Model, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut ahead = meter.clone();
    ahead.advance(to);
    let mut cuts = vec![from, to];
    let mut window = super::period().containing(from).unwrap();
    while window.end < to {
        cuts.push(window.end);
        window = super::period().window(window.index + 1).unwrap();
    }
    if ahead.written {
        for p in &ahead.closed {
            cuts.push(p.start);
            cuts.push(p.end);
        }
        cuts.push(ahead.window.start);
    }
    cuts.retain(|t| from <= *t && *t <= to);
    cuts.sort();
    cuts.dedup();
    cuts
}

/// UTC midnights in `[from, to)`, with `from` and `to`.
fn day_bounds(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut cuts = vec![from];
    let mut day = from.date_naive().and_time(NaiveTime::MIN).and_utc() + TimeDelta::days(1);
    while day < to {
        cuts.push(day);
        day += TimeDelta::days(1);
    }
    cuts.push(to);
    cuts
}
