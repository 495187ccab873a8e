//! A reference ledger for per-user meters: random sequences of grants of a plan to users and
//! their revocations, usage events, consumptions and credit grants with and without a user,
//! driven through the real engine and a plain ledger per meter (the account's and each user's),
//! comparing after every step each subject's check (result, meter, whose meter), each
//! consumption's answer and each user's meter view. One account, a SUM meter with a hard limit,
//! within one period (resets, pools and the rest are the main model's).

use chrono::TimeDelta;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::metered_feature;
use super::*;
use crate::app::testing::{TestEngine, engine, engine_on, t0};
use crate::clock::ManualClock;
use crate::domain::metering::NewConsumption;
use crate::domain::{Allocation, PlanFeature};

const SEQUENCES: u64 = 60;
const STEPS: usize = 12;
const USERS: [&str; 2] = ["ada", "bob"];

/// One meter as a ledger: the allowance drawn this period, what remains of credits (drawn after
/// the allowance: at equal priority the allowance expires first), overage and usage.
#[derive(Debug, Clone, Default)]
struct Ledger {
    allowance_drawn: i64,
    credits: i64,
    usage: i64,
    /// Drawn on or credited: the index holds it.
    written: bool,
}

impl Ledger {
    fn balance(&self, allocation: i64) -> i64 {
        (allocation - self.allowance_drawn).max(0) + self.credits
    }

    fn draw(&mut self, amount: i64, allocation: i64) {
        let from_allowance = amount.min((allocation - self.allowance_drawn).max(0));
        self.allowance_drawn += from_allowance;
        let from_credits = (amount - from_allowance).min(self.credits);
        self.credits -= from_credits;
        self.usage += amount;
        self.written = true;
    }
}

struct User {
    name: &'static str,
    /// The user's live grant of `seat`, if any.
    grant: Option<Uuid>,
    ledger: Ledger,
}

struct World<'a> {
    e: &'a TestEngine,
    rng: StdRng,
    team: i64,
    team_granted: bool,
    seat: i64,
    account: Ledger,
    users: Vec<User>,
    steps: Vec<String>,
    seed: u64,
    counter: usize,
}

fn calls(n: i64) -> Vec<PlanFeature> {
    vec![PlanFeature {
        feature_key: "calls".into(),
        allocation: Some(Allocation::MaxCount(Limit::Finite(n.unsigned_abs()))),
    }]
}

impl World<'_> {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "per-user model mismatch (seed {}): {what}\nsteps:\n{}",
            self.seed,
            self.steps.join("\n")
        )
    }

    /// The ledger a draw for `user` goes to, with the amount issued to it.
    fn target(&mut self, user: Option<usize>) -> (&mut Ledger, i64, bool) {
        match user {
            Some(u) if self.users[u].grant.is_some() => {
                (&mut self.users[u].ledger, self.seat, true)
            }
            _ => {
                let allocation = if self.team_granted { self.team } else { 0 };
                (&mut self.account, allocation, false)
            }
        }
    }

    fn pick_user(&mut self) -> Option<usize> {
        match self.rng.random_range(0..3) {
            0 => None,
            n => Some(n - 1),
        }
    }

    fn name(&self, user: Option<usize>) -> Option<String> {
        user.map(|u| self.users[u].name.to_owned())
    }

    async fn step(&mut self) {
        self.e.clock.advance(TimeDelta::seconds(1));
        self.counter += 1;
        let id = format!("x{}", self.counter);
        match self.rng.random_range(0..6) {
            0 => {
                let u = self.rng.random_range(0..USERS.len());
                if self.users[u].grant.is_none() {
                    self.steps.push(format!("grant seat to {}", USERS[u]));
                    let g = self.e.grant("seat", "acme", Some(USERS[u])).await;
                    self.users[u].grant = Some(g.id);
                }
            }
            1 => {
                let u = self.rng.random_range(0..USERS.len());
                if let Some(g) = self.users[u].grant.take() {
                    self.steps.push(format!("revoke {}'s seat", USERS[u]));
                    self.e.engine.revoke_grant(g, None, None).await.unwrap();
                }
            }
            2 | 3 => {
                let user = self.pick_user();
                let amount = self.rng.random_range(1..=15);
                let consume = self.rng.random_bool(0.5);
                let name = self.name(user);
                self.steps.push(format!(
                    "{} {amount} for {name:?}",
                    if consume { "consume" } else { "use" }
                ));
                let (ledger, allocation, own) = self.target(user);
                if consume {
                    let allowed = ledger.balance(allocation) >= amount;
                    if allowed {
                        ledger.draw(amount, allocation);
                    }
                    let want = (ledger.usage, ledger.balance(allocation));
                    let (answer, _) = self
                        .e
                        .engine
                        .consume_usage(NewConsumption {
                            id,
                            tenant_id: "acme".into(),
                            user_id: name.clone(),
                            feature_key: "calls".into(),
                            amount,
                        })
                        .await
                        .unwrap();
                    let got = answer.meter.map(|m| (m.usage, m.balance.unwrap_or(-1)));
                    let named = name.filter(|_| own);
                    if answer.consumed != allowed || got != Some(want) || answer.meter_user != named
                    {
                        self.fail(&format!(
                            "consumption answered {answer:?}, the model {allowed} {want:?} \
                             on {named:?}'s meter"
                        ));
                    }
                } else {
                    ledger.draw(amount, allocation);
                    self.e
                        .engine
                        .record_usage(vec![NewUsage {
                            id,
                            tenant_id: "acme".into(),
                            user_id: name,
                            feature_key: "calls".into(),
                            amount,
                            at: None,
                            unique: None,
                        }])
                        .await
                        .unwrap();
                }
            }
            _ => {
                let user = self.pick_user();
                let amount = self.rng.random_range(1..=10);
                let name = self.name(user);
                self.steps.push(format!("credit {amount} to {name:?}"));
                let got = self
                    .e
                    .engine
                    .create_credit_grant(NewCreditGrant {
                        user_id: name.clone(),
                        tenant_id: "acme".into(),
                        feature_key: "calls".into(),
                        amount,
                        priority: None,
                        effective_at: None,
                        expires_at: None,
                        rollover: None,
                        metadata: serde_json::Value::Null,
                    })
                    .await;
                let (ledger, _, own) = self.target(user);
                match (user.is_some() && !own, got) {
                    (true, Err(DomainError::NoUserMeter { .. })) => {}
                    (false, Ok(_)) => {
                        ledger.credits += amount;
                        ledger.written = true;
                    }
                    (refused, other) => self.fail(&format!(
                        "a credit (the model refuses it: {refused}) answered {other:?}"
                    )),
                }
            }
        }
    }

    async fn compare(&mut self) {
        for user in [None, Some(0), Some(1)] {
            let name = self.name(user);
            let planned = self.team_granted || user.is_some_and(|u| self.users[u].grant.is_some());
            let (ledger, allocation, own) = self.target(user);
            let (usage, balance) = (ledger.usage, ledger.balance(allocation));
            let d = self.e.check("acme", name.as_deref(), "calls").await;
            let got = d.meter.map(|m| (m.usage, m.balance.unwrap_or(-1)));
            // Neither a plan nor a balance: not entitled, and no meter is answered.
            let want = (planned || balance > 0).then_some((usage, balance));
            if d.result != (balance >= 1) || got != want || d.meter_user != own {
                self.fail(&format!(
                    "{name:?}'s check answered {} {got:?} (own meter {}), the model {} \
                     {:?} (own {own})",
                    d.result,
                    d.meter_user,
                    balance >= 1,
                    want
                ));
            }
        }
        for user in &self.users {
            let view = self
                .e
                .engine
                .meter_view("acme", Some(user.name), "calls", 0)
                .await;
            let allocation = if user.grant.is_some() { self.seat } else { 0 };
            let want = (user.grant.is_some() || user.ledger.written)
                .then(|| (user.ledger.usage, user.ledger.balance(allocation)));
            let got = view
                .as_ref()
                .ok()
                .map(|v| (v.reading.usage, v.reading.balance.unwrap_or(-1)));
            let missing = matches!(
                &view,
                Err(DomainError::NotFound {
                    kind: "user meter",
                    ..
                })
            );
            if got != want || (want.is_none() && !missing) {
                self.fail(&format!(
                    "{}'s meter view answered {view:?}, the model {want:?}",
                    user.name
                ));
            }
        }
    }
}

async fn run(e: &TestEngine, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let team = rng.random_range(10..=60);
    let seat = rng.random_range(5..=30);
    let team_granted = rng.random_bool(0.7);
    e.account("acme", None).await;
    metered_feature(e, "calls", false).await;
    e.plan("team", calls(team)).await;
    e.plan("seat", calls(seat)).await;
    if team_granted {
        e.grant("team", "acme", None).await;
    }
    let mut world = World {
        e,
        rng,
        team,
        team_granted,
        seat,
        account: Ledger::default(),
        users: USERS
            .iter()
            .map(|name| User {
                name,
                grant: None,
                ledger: Ledger::default(),
            })
            .collect(),
        steps: vec![format!(
            "team {team} (granted: {team_granted}), seat {seat}"
        )],
        seed,
        counter: 0,
    };
    world.compare().await;
    for _ in 0..STEPS {
        world.step().await;
        world.compare().await;
    }
}

/// `TENANTRY_MODEL_SEED` runs one sequence alone, `TENANTRY_MODEL_SEQUENCES` that many.
fn seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("TENANTRY_MODEL_SEED") {
        return vec![seed.parse().expect("TENANTRY_MODEL_SEED is a number")];
    }
    let n = std::env::var("TENANTRY_MODEL_SEQUENCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

#[tokio::test]
async fn users_meters_agree_with_the_reference_ledger() {
    for seed in seeds(SEQUENCES) {
        run(&engine().await, seed).await;
    }
}

#[tokio::test]
async fn users_meters_agree_with_the_reference_ledger_on_postgres() {
    for seed in seeds(SEQUENCES / 6) {
        let url = tenantry_common::testing::postgres().create_database().await;
        run(&engine_on(&url, ManualClock::new(t0())).await, seed).await;
    }
}
