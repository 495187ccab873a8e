//! Checks at a past instant of metered features. The index holds each meter's open period as
//! its latest write left it, which is not the meter at an earlier instant: a caller with
//! history (the entitlement service's balance burn-down) gives the meters then, and the rules
//! are the index's own. Grants at a past instant are the index's already (their windows and
//! revocations are kept).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    AllocationType, CheckRequest, CompiledPolicy, Decision, EffectiveFeature, EntitlementIndex,
    IndexError, Justification, MeterMode, MeterOwner, Overlay, Resolved, Subject, Target, Verdict,
    micros_to_time,
};
use crate::metering::MeterState;
use crate::model::Allocation;

/// A metered feature's meter at a past instant, from history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PastMeter {
    /// The meter then, holds left out; `None`: nothing had been drawn or credited by then (a
    /// fresh meter, as the index reads a meter never written).
    Known(Option<MeterState>),
    /// Not known: it was drawn on before draws kept their meter.
    Unknown,
}

/// A meter a past check weighs: its account (the subject's, or a pool's owner), the user
/// whose own meter it is (`None`: the account's), the metered feature's id.
pub type PastAsk = (String, Option<String>, Uuid);

/// Meters at one past instant, by [`PastAsk`]: what a past check weighs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PastMeters {
    meters: Vec<(PastAsk, PastMeter)>,
}

impl PastMeters {
    pub fn new(meters: Vec<(PastAsk, PastMeter)>) -> Self {
        Self { meters }
    }

    /// Every meter as an unknown one: what an index without history answers.
    pub fn unknown(asks: &[PastAsk]) -> Self {
        Self::new(
            asks.iter()
                .map(|ask| (ask.clone(), PastMeter::Unknown))
                .collect(),
        )
    }

    pub fn get(&self, owner: &str, user: Option<&str>, feature_id: Uuid) -> Option<&PastMeter> {
        self.meters
            .iter()
            .find(|((o, u, f), _)| o == owner && u.as_deref() == user && *f == feature_id)
            .map(|(_, m)| m)
    }

    /// Whether any meter is unknown.
    pub fn any_unknown(&self) -> bool {
        self.meters
            .iter()
            .any(|(_, m)| matches!(m, PastMeter::Unknown))
    }
}

/// A metered feature's answer when its meter then is not known: denied, saying so, with what
/// the grants decided (the amount issued each period, the deciding grant) kept.
pub(super) fn history_unknown(base: Verdict, owner: &MeterOwner<'_>) -> Verdict {
    Verdict {
        result: false,
        justification: Some(Justification::MeterHistoryUnknown),
        reason: None,
        allocation: base.result.then_some(Allocation::MaxCount(owner.allowance)),
        meter: None,
        meter_pool: owner.pool,
        ..base
    }
}

impl EntitlementIndex {
    /// The meters a check at `at` weighs: the checked feature, a permission's linked
    /// features, a route's required features and permissions' linked ones — each metered one
    /// with the meter the subject drew on then (its user's own, its account's, or a pool's).
    /// Empty when none is metered or the account is unknown.
    pub fn past_meter_asks(&self, request: &CheckRequest<'_>, at: DateTime<Utc>) -> Vec<PastAsk> {
        let catalog = &*self.catalog;
        let linked = |key: &str| {
            catalog
                .permissions
                .get(key)
                .map(|fs| fs.to_vec())
                .unwrap_or_default()
        };
        let features: Vec<u32> = match request.target {
            Target::Feature(key) => catalog
                .feature_by_key
                .get(key)
                .copied()
                .into_iter()
                .collect(),
            Target::Permission(key) => linked(key),
            Target::Route { method, path } => match self.find_route(method, path) {
                Some(route) => match &route.policy {
                    CompiledPolicy::Require {
                        features,
                        permissions,
                    } => features
                        .iter()
                        .flatten()
                        .copied()
                        .chain(permissions.iter().flat_map(|p| linked(p)))
                        .collect(),
                    CompiledPolicy::Allow | CompiledPolicy::Deny => Vec::new(),
                },
                None => Vec::new(),
            },
        };
        let mut asks = Vec::new();
        self.meter_owners(&request.subject, &features, at, &mut asks);
        asks
    }

    /// The meters of every metered feature of the catalog the subject drew on at `at` (its
    /// user's own, its account's or a pool's; with its attributes and without, as its
    /// entitlements and their meters weigh them).
    pub fn past_meter_asks_all(&self, subject: &Subject<'_>, at: DateTime<Utc>) -> Vec<PastAsk> {
        let features: Vec<u32> = (0..self.catalog.features.len() as u32).collect();
        let mut asks = Vec::new();
        self.meter_owners(subject, &features, at, &mut asks);
        let plain = Subject {
            user_id: subject.user_id,
            ..Subject::account(subject.tenant_id)
        };
        self.meter_owners(&plain, &features, at, &mut asks);
        asks
    }

    /// Adds the meter `subject` drew on at `at` for each metered one of `features` (the
    /// check's own rule: its fold with its attributes), each once.
    fn meter_owners(
        &self,
        subject: &Subject<'_>,
        features: &[u32],
        at: DateTime<Utc>,
        asks: &mut Vec<PastAsk>,
    ) {
        if let Some(subj) = self.resolve(subject) {
            self.meter_owners_of(&subj, subject.attributes, features, at, None, asks);
        }
    }

    /// [`Self::meter_owners`] of a resolved subject, its grants under `overlay` (a what-if's).
    pub(super) fn meter_owners_of(
        &self,
        subj: &Resolved<'_>,
        attributes: Option<&Map<String, Value>>,
        features: &[u32],
        at: DateTime<Utc>,
        overlay: Option<&Overlay>,
        asks: &mut Vec<PastAsk>,
    ) {
        let at = at.timestamp_micros();
        for &f in features {
            let Some((id, _)) = self.catalog.features[f as usize].meter else {
                continue;
            };
            let ask = match self.fold(subj, f, attributes, at, overlay) {
                Some(acc) => {
                    let owner = self.meter_owner_of(subj, f, &acc, at);
                    let user = owner.user.map(|u| u.user.to_string());
                    (owner.tenant_id.to_owned(), user, id)
                }
                None => (subj.tenant_id.to_owned(), None, id),
            };
            if !asks.contains(&ask) {
                asks.push(ask);
            }
        }
    }

    /// [`Self::check`] at a past instant: metered features are weighed against `past`, the
    /// meters then ([`Self::past_meter_asks`]'s); a meter not among them, or unknown, answers
    /// [`Justification::MeterHistoryUnknown`].
    pub fn check_past(
        &self,
        request: &CheckRequest<'_>,
        at: DateTime<Utc>,
        past: &PastMeters,
    ) -> Decision {
        let at = at.timestamp_micros();
        let verdict = match self.resolve(&request.subject) {
            Some(subj) => self.eval(&subj, request, at, MeterMode::Past(past)),
            None => Verdict::deny(Justification::TenantNotFound),
        };
        verdict.into_decision(self.revision)
    }

    /// [`Self::account_entitlements`] at a past instant, metered features weighed against
    /// `past` ([`Self::past_meter_asks_all`]'s). A metered feature whose meter then is not
    /// known is listed as its grants have it, with `true` (its meter unknown); every other
    /// with `false`.
    pub fn account_entitlements_past(
        &self,
        subject: &Subject<'_>,
        at: DateTime<Utc>,
        past: &PastMeters,
    ) -> Result<Vec<(EffectiveFeature, bool)>, IndexError> {
        let subj = self
            .resolve(subject)
            .ok_or_else(|| IndexError::not_found("tenant", subject.tenant_id))?;
        let at = at.timestamp_micros();
        let mode = MeterMode::Past(past);
        Ok((0..self.catalog.features.len() as u32)
            .filter_map(|f| {
                let v = self.eval_feature(&subj, f, subject.attributes, None, at, None, mode);
                let unknown = v.justification == Some(Justification::MeterHistoryUnknown);
                // Unknown with grants entitling (`allocation` kept): listed, saying so.
                let listed = v.result || unknown && v.allocation.is_some();
                listed.then(|| {
                    (
                        EffectiveFeature {
                            key: self.catalog.features[f as usize].key.to_string(),
                            allocation: v.allocation.unwrap_or(Allocation::Bool(true)),
                            decided_by: v.decided_by,
                            next_change_at: micros_to_time(v.next),
                        },
                        unknown,
                    )
                })
            })
            .collect())
    }

    /// [`Self::meter_check`] at a past instant against `past`.
    pub fn meter_check_past(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        at: DateTime<Utc>,
        past: &PastMeters,
    ) -> Option<Decision> {
        let subj = self.resolve(&Subject {
            user_id,
            ..Subject::account(tenant_id)
        })?;
        let &f = self.catalog.feature_by_key.get(feature_key)?;
        let entry = &self.catalog.features[f as usize];
        entry.meter?;
        let at = at.timestamp_micros();
        let v = self.eval_feature_with(&subj, f, None, None, at, None, MeterMode::Past(past));
        Some(v.into_decision(self.revision))
    }

    /// Whether `feature_key` is a metered feature of the catalog.
    pub fn is_metered(&self, feature_key: &str) -> bool {
        self.catalog_feature(feature_key)
            .is_some_and(|(f, _)| f.allocation_type == AllocationType::Metered)
    }
}

impl EntitlementIndex {
    /// A metered feature's key and how it meters, by its id.
    pub fn metered_feature(&self, feature_id: Uuid) -> Option<(&str, crate::metering::MeterSpec)> {
        self.catalog.features.iter().find_map(|f| match f.meter {
            Some((id, spec)) if id == feature_id => Some((&*f.key, spec)),
            _ => None,
        })
    }
}
