//! What-if questions: the features a subject would gain, lose or see changed under
//! hypothetical grants and revocations, evaluated through an overlay on the grants (the index
//! is not copied). A metered feature is answered with the meter the subject would draw on
//! before and after and what a check for a requested amount would say: the check's own rules
//! under the hypothetical grants — usage already counted stays counted (it is on the meter),
//! credits and holds stay, the allowance is the hypothetical grants' (the merge policy, the
//! user's own meter, the account's or a pool's as a write would decide).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::past::{PastAsk, PastMeters};
use super::{
    AllowReason, CompactGrant, EntitlementIndex, IndexError, Justification, MeterMode, NEVER,
    Overlay, Resolved, Subject, UserGrants, Verdict,
};
use crate::metering::MeterReading;
use crate::model::Allocation;

/// A hypothetical change for `what_if`. A list of them applies in order: a plan revoked
/// after being hypothetically granted loses that grant too; one granted after a revocation
/// keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hypothetical {
    /// The plan granted from `starts_at` (`None` = the evaluation time) until `expires_at`
    /// (`None` = never), to the subject's user when `to_user` (and a user is given), else to
    /// the account.
    GrantPlan {
        plan_id: Uuid,
        to_user: bool,
        starts_at: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
    },
    /// Every grant of the plan held directly by the account (and by the user, if given),
    /// including ones granted by earlier changes; ancestors' grants are not the account's to
    /// revoke.
    RevokePlan { plan_id: Uuid },
    /// One grant held directly by the account or the given user.
    RevokeGrant { grant_id: Uuid },
}

impl Hypothetical {
    /// The plan granted now, without expiry, to the account (or the user when `to_user`).
    pub fn grant_plan(plan_id: Uuid, to_user: bool) -> Self {
        Hypothetical::GrantPlan {
            plan_id,
            to_user,
            starts_at: None,
            expires_at: None,
        }
    }
}

/// At most this many hypothetical changes per `what_if`.
pub const MAX_WHAT_IF_CHANGES: usize = 100;

/// A metered feature on one side of a what-if: the meter the subject would draw on and what
/// a check for the requested amount (one unit when none is asked) would answer — exactly the
/// check's answer under that side's grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterOutlook {
    /// The meter at the question's instant. `None` when the check answers none: nothing
    /// entitles the feature (no grant allocates it, no credit holds a balance), or, asked at a
    /// past instant, its meter then is not known (`justification` `MeterHistoryUnknown`).
    pub reading: Option<MeterReading>,
    /// Set when it is an ancestor's pool: that ancestor. `None`: the subject's own meter.
    pub owner_tenant_id: Option<String>,
    /// Set when it is the subject's user's own meter: that user.
    pub user_id: Option<String>,
    /// Whether the requested amount would be allowed.
    pub result: bool,
    /// Why not (`UsageLimitReached`, `InsufficientBalance`, `MissingFeature`, …).
    pub justification: Option<Justification>,
    /// Why (`Grant`, `Credits`, `SoftLimitOverage`).
    pub allow_reason: Option<AllowReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureChange {
    pub key: String,
    pub before: Option<Allocation>,
    pub after: Option<Allocation>,
    /// A metered feature before the changes (`None` for other features).
    pub meter_before: Option<MeterOutlook>,
    /// A metered feature after the changes (`None` for other features).
    pub meter_after: Option<MeterOutlook>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WhatIf {
    pub gained: Vec<FeatureChange>,
    pub lost: Vec<FeatureChange>,
    /// Held before and after, with a different allocation — or, for a metered feature, a
    /// different meter or decision. The allocation alone can stay while the meter changes: a
    /// user whose own grant is revoked moves from its own meter to the account's (or a pool),
    /// and a sub-account losing its own allocation moves onto its ancestor's pool, each
    /// possibly issued the same amount; so can the balance under equal allocations (a
    /// hypothetical grant starting in the past issues a different allowance at the resets
    /// since the meter was last written).
    pub changed: Vec<FeatureChange>,
}

/// One feature on one side of a what-if.
struct Side {
    /// Whether the subject holds the feature: entitled, or a metered feature its grants
    /// entitle whose balance is spent (the plan still issues it each period: the meter says
    /// why a check refuses) or whose meter then is unknown (asked at a past instant).
    held: bool,
    allocation: Option<Allocation>,
    meter: Option<MeterOutlook>,
}

/// The subject with the overlay's empty user entry when the index holds none.
fn with_user<'s>(subj: Resolved<'s>, overlay: &'s Overlay) -> Resolved<'s> {
    Resolved {
        user: subj.user.or(overlay.user.as_ref()),
        ..subj
    }
}

impl EntitlementIndex {
    /// Features gained, lost or changed if `changes` were applied to the subject, in order,
    /// at `at`; metered features with the index's meters (now, or projected to a later `at`)
    /// and the decision for `requested` units (one when `None`).
    pub fn what_if(
        &self,
        subject: &Subject<'_>,
        changes: &[Hypothetical],
        at: DateTime<Utc>,
        requested: Option<u64>,
    ) -> Result<WhatIf, IndexError> {
        self.what_if_in(subject, changes, at, requested, MeterMode::Indexed)
    }

    /// [`Self::what_if`] at a past instant: metered features weighed against `past`, the
    /// meters then ([`Self::what_if_meter_asks`]'s); one not among them, or unknown, answers
    /// [`Justification::MeterHistoryUnknown`] without a reading.
    pub fn what_if_past(
        &self,
        subject: &Subject<'_>,
        changes: &[Hypothetical],
        at: DateTime<Utc>,
        requested: Option<u64>,
        past: &PastMeters,
    ) -> Result<WhatIf, IndexError> {
        self.what_if_in(subject, changes, at, requested, MeterMode::Past(past))
    }

    /// The meters a what-if at `at` weighs: for each metered feature, the one the subject
    /// draws on under the grants as they are and the one under the changes (its user's own,
    /// its account's or a pool's), each once. Refuses the changes as [`Self::what_if`] does.
    pub fn what_if_meter_asks(
        &self,
        subject: &Subject<'_>,
        changes: &[Hypothetical],
        at: DateTime<Utc>,
    ) -> Result<Vec<PastAsk>, IndexError> {
        let (subj, overlay) = self.what_if_overlay(subject, changes, at)?;
        let subj = with_user(subj, &overlay);
        let metered: Vec<u32> = (0..self.catalog.features.len() as u32)
            .filter(|&f| self.catalog.features[f as usize].meter.is_some())
            .collect();
        let mut asks = Vec::new();
        for overlay in [None, Some(&overlay)] {
            self.meter_owners_of(&subj, subject.attributes, &metered, at, overlay, &mut asks);
        }
        Ok(asks)
    }

    /// The subject and the overlay `changes` make of its grants (validated).
    fn what_if_overlay<'s>(
        &'s self,
        subject: &Subject<'_>,
        changes: &[Hypothetical],
        at: DateTime<Utc>,
    ) -> Result<(Resolved<'s>, Overlay), IndexError> {
        if changes.is_empty() || changes.len() > MAX_WHAT_IF_CHANGES {
            return Err(IndexError::invalid(
                "changes",
                format!("give 1 to {MAX_WHAT_IF_CHANGES} changes"),
            ));
        }
        let subj = self
            .resolve(subject)
            .ok_or_else(|| IndexError::not_found("tenant", subject.tenant_id))?;
        let micros = at.timestamp_micros();
        let known_plan = |plan_id: Uuid| {
            self.plan_slot(plan_id)
                .filter(|&s| self.catalog.plan(s).is_some())
                .ok_or_else(|| IndexError::not_found("plan", plan_id))
        };
        let mut overlay = Overlay::default();
        for (i, change) in changes.iter().enumerate() {
            match *change {
                Hypothetical::GrantPlan {
                    plan_id,
                    to_user,
                    starts_at,
                    expires_at,
                } => {
                    let starts_at = starts_at.map_or(micros, |t| t.timestamp_micros());
                    let expires_at = expires_at.map_or(NEVER, |t| t.timestamp_micros());
                    if expires_at <= starts_at {
                        return Err(IndexError::invalid(
                            format!("changes[{i}].grant.expires_at"),
                            "must be after starts_at",
                        ));
                    }
                    overlay.added.push((
                        CompactGrant {
                            // Distinct ids no stored UUIDv7 takes, in change order.
                            id: Uuid::from_u128(u128::MAX - i as u128),
                            starts_at,
                            expires_at,
                            revoked_at: NEVER,
                            plan: known_plan(plan_id)?,
                        },
                        to_user && subject.user_id.is_some(),
                    ));
                }
                Hypothetical::RevokePlan { plan_id } => {
                    let slot = known_plan(plan_id)?;
                    overlay.added.retain(|(g, _)| g.plan != slot);
                    overlay.removed_plans.push(slot);
                }
                Hypothetical::RevokeGrant { grant_id } => {
                    let held = subj
                        .node
                        .grants
                        .iter()
                        .chain(subj.user.iter().flat_map(|u| u.grants.iter()))
                        .any(|g| g.id == grant_id);
                    if !held {
                        return Err(IndexError::not_found("grant", grant_id));
                    }
                    overlay.removed_grants.push(grant_id);
                }
            }
        }
        if let (None, Some(user)) = (subj.user, subject.user_id)
            && overlay.added.iter().any(|(_, to_user)| *to_user)
        {
            overlay.user = Some(UserGrants {
                user: user.into(),
                grants: Arc::from([]),
                meters: None,
            });
        }
        Ok((subj, overlay))
    }

    fn what_if_in(
        &self,
        subject: &Subject<'_>,
        changes: &[Hypothetical],
        at: DateTime<Utc>,
        requested: Option<u64>,
        mode: MeterMode<'_>,
    ) -> Result<WhatIf, IndexError> {
        let (subj, overlay) = self.what_if_overlay(subject, changes, at)?;
        let subj = with_user(subj, &overlay);
        let micros = at.timestamp_micros();
        let before = self.what_if_side(&subj, subject, micros, None, mode, requested);
        let after = self.what_if_side(&subj, subject, micros, Some(&overlay), mode, requested);
        let key = |f: u32| self.catalog.features[f as usize].key.to_string();
        let mut out = WhatIf::default();
        for (f, (b, a)) in before.iter().zip(&after).enumerate() {
            let list = match (b.held, a.held) {
                (true, false) => &mut out.lost,
                (false, true) => &mut out.gained,
                (true, true) if b.allocation != a.allocation || b.meter != a.meter => {
                    &mut out.changed
                }
                (true, true) | (false, false) => continue,
            };
            list.push(FeatureChange {
                key: key(f as u32),
                before: b.allocation.filter(|_| b.held),
                after: a.allocation.filter(|_| a.held),
                meter_before: b.meter.clone(),
                meter_after: a.meter.clone(),
            });
        }
        Ok(out)
    }

    /// Every feature of the catalog on one side (`overlay`: after the changes), in catalog
    /// order.
    fn what_if_side(
        &self,
        subj: &Resolved<'_>,
        subject: &Subject<'_>,
        at: i64,
        overlay: Option<&Overlay>,
        mode: MeterMode<'_>,
        requested: Option<u64>,
    ) -> Vec<Side> {
        let attributes = subject.attributes;
        (0..self.catalog.features.len() as u32)
            .map(|f| {
                let v = self.eval_feature(subj, f, attributes, None, at, overlay, mode);
                let metered = self.catalog.features[f as usize].meter.is_some();
                let held = v.result
                    || metered
                        && v.allocation.is_some()
                        && matches!(
                            v.justification,
                            Some(
                                Justification::UsageLimitReached
                                    | Justification::MeterHistoryUnknown
                            )
                        );
                let meter = metered.then(|| {
                    let asked = match requested {
                        Some(_) => {
                            self.eval_feature(subj, f, attributes, requested, at, overlay, mode)
                        }
                        None => v,
                    };
                    self.outlook(subject, &asked)
                });
                Side {
                    held,
                    allocation: v.allocation,
                    meter,
                }
            })
            .collect()
    }

    fn outlook(&self, subject: &Subject<'_>, v: &Verdict) -> MeterOutlook {
        MeterOutlook {
            reading: v.meter,
            owner_tenant_id: v
                .meter_pool
                .and_then(|depth| self.ancestor_at(subject.tenant_id, depth))
                .map(str::to_owned),
            user_id: subject.user_id.filter(|_| v.meter_user).map(str::to_owned),
            result: v.result,
            justification: v.justification,
            allow_reason: v.reason,
        }
    }
}

#[cfg(test)]
#[path = "index_what_if_tests.rs"]
mod tests;
