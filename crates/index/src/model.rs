//! The entitlement model: features, plans, flags, routes and grants, as stored and as
//! exchanged with the transport layers. Evaluation works on compiled forms built from these
//! (see `index`), so nothing here is on the hot path.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// How a feature is allocated: on/off, up to a count, or an amount issued each usage period
/// and drawn down by usage (the feature's [`Metering`] says how).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationType {
    #[default]
    Bool,
    MaxCount,
    Metered,
}

impl AllocationType {
    /// Whether allocations of this type are counts (`max_count` values): a metered feature's
    /// plan allocation is the amount issued each period.
    pub fn is_counted(self) -> bool {
        matches!(self, AllocationType::MaxCount | AllocationType::Metered)
    }
}

/// How usage of a metered feature is aggregated within a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Aggregation {
    /// The events' amounts add up.
    #[default]
    Sum,
    /// Each event counts one, whatever its amount.
    Count,
    /// The period's usage is the largest amount reported (e.g. peak seats).
    Max,
    /// Each distinct value of the events' `unique` property counts one per period.
    UniqueCount,
}

/// What a metered feature counts and how its balance resets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metering {
    /// The usage unit, e.g. `api_call` or `GB` (informational).
    pub unit: String,
    #[serde(default)]
    pub aggregation: Aggregation,
    /// The usage period: a recurrence and its anchor.
    pub period: crate::metering::UsagePeriod,
    /// Soft: access continues past a zero balance and the excess is reported as overage.
    #[serde(default)]
    pub soft_limit: bool,
    /// Overage at a reset is owed by the next period (drawn first from its credits).
    #[serde(default)]
    pub carry_overage: bool,
}

impl Metering {
    /// The meter's evaluation parameters.
    pub fn spec(&self) -> crate::metering::MeterSpec {
        crate::metering::MeterSpec {
            period: self.period,
            soft_limit: self.soft_limit,
            carry_overage: self.carry_overage,
        }
    }
}

/// How stacked `max_count` grants of one feature combine. `bool` features always OR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// The largest single allocation wins.
    #[default]
    Max,
    /// Allocations add up (saturating).
    Sum,
}

/// A `max_count` value. On the wire it is a number, or `null` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Option<u64>", into = "Option<u64>")]
pub enum Limit {
    Finite(u64),
    Unlimited,
}

impl From<Option<u64>> for Limit {
    fn from(value: Option<u64>) -> Self {
        value.map_or(Limit::Unlimited, Limit::Finite)
    }
}

impl From<Limit> for Option<u64> {
    fn from(value: Limit) -> Self {
        match value {
            Limit::Finite(n) => Some(n),
            Limit::Unlimited => None,
        }
    }
}

impl Ord for Limit {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Limit::Finite(a), Limit::Finite(b)) => a.cmp(b),
            (Limit::Finite(_), Limit::Unlimited) => Ordering::Less,
            (Limit::Unlimited, Limit::Finite(_)) => Ordering::Greater,
            (Limit::Unlimited, Limit::Unlimited) => Ordering::Equal,
        }
    }
}

impl PartialOrd for Limit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Limit {
    /// Combines two stacked allocations; unlimited dominates either way.
    pub fn merge(self, other: Limit, policy: MergePolicy) -> Limit {
        match (self, other, policy) {
            (Limit::Finite(a), Limit::Finite(b), MergePolicy::Max) => Limit::Finite(a.max(b)),
            (Limit::Finite(a), Limit::Finite(b), MergePolicy::Sum) => {
                Limit::Finite(a.saturating_add(b))
            }
            (Limit::Unlimited, _, _) | (_, Limit::Unlimited, _) => Limit::Unlimited,
        }
    }

    /// Whether `requested` units fit in this allocation.
    pub fn allows(self, requested: u64) -> bool {
        match self {
            Limit::Finite(n) => requested <= n,
            Limit::Unlimited => true,
        }
    }
}

/// A typed allocation, shaped on the wire as `{"type": "bool"|"max_count", "value": ...}`
/// (the account-entitlements shape of seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Allocation {
    Bool(bool),
    MaxCount(Limit),
}

impl Allocation {
    pub fn allocation_type(self) -> AllocationType {
        match self {
            Allocation::Bool(_) => AllocationType::Bool,
            Allocation::MaxCount(_) => AllocationType::MaxCount,
        }
    }

    /// What a bare feature key in a plan means: the full allocation (`true` / unlimited).
    pub fn full(ty: AllocationType) -> Allocation {
        match ty {
            AllocationType::Bool => Allocation::Bool(true),
            AllocationType::MaxCount | AllocationType::Metered => {
                Allocation::MaxCount(Limit::Unlimited)
            }
        }
    }

    /// Forces a value into the feature's type. Validation refuses mismatches on write; this
    /// keeps evaluation total if a feature's type changes under existing plans.
    pub fn coerce(self, ty: AllocationType) -> Allocation {
        let ty = if ty.is_counted() {
            AllocationType::MaxCount
        } else {
            ty
        };
        match (self, ty) {
            (Allocation::Bool(b), AllocationType::Bool) => Allocation::Bool(b),
            (Allocation::MaxCount(l), AllocationType::MaxCount) => Allocation::MaxCount(l),
            (Allocation::MaxCount(l), AllocationType::Bool) => {
                Allocation::Bool(l != Limit::Finite(0))
            }
            (Allocation::Bool(true), AllocationType::MaxCount) => {
                Allocation::MaxCount(Limit::Unlimited)
            }
            (Allocation::Bool(false), AllocationType::MaxCount) => {
                Allocation::MaxCount(Limit::Finite(0))
            }
            (a, AllocationType::Metered) => a,
        }
    }

    /// Whether holding this allocation entitles the subject at all. `bool` false does not; any
    /// `max_count` does (the count says how much, a requested amount is checked separately).
    pub fn is_granting(self) -> bool {
        match self {
            Allocation::Bool(b) => b,
            Allocation::MaxCount(_) => true,
        }
    }

    /// Orders two values of the same type (the larger decides); mixed types compare by type.
    pub fn strength_cmp(self, other: Allocation) -> Ordering {
        match (self, other) {
            (Allocation::Bool(a), Allocation::Bool(b)) => a.cmp(&b),
            (Allocation::MaxCount(a), Allocation::MaxCount(b)) => a.cmp(&b),
            (Allocation::Bool(_), Allocation::MaxCount(_)) => Ordering::Less,
            (Allocation::MaxCount(_), Allocation::Bool(_)) => Ordering::Greater,
        }
    }

    /// Stacks two granting values of one feature.
    pub fn merge(self, other: Allocation, policy: MergePolicy) -> Allocation {
        match (self, other) {
            (Allocation::Bool(a), Allocation::Bool(b)) => Allocation::Bool(a || b),
            (Allocation::MaxCount(a), Allocation::MaxCount(b)) => {
                Allocation::MaxCount(a.merge(b, policy))
            }
            // Mixed types cannot occur after `coerce`; keep the stronger one.
            (a, b) => {
                if a.strength_cmp(b) == Ordering::Less {
                    b
                } else {
                    a
                }
            }
        }
    }
}

/// A feature: a unit of entitlement checked by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    pub id: Uuid,
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    /// Permission keys linked to this feature (Frontegg's `permissions`).
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub allocation_type: AllocationType,
    #[serde(default)]
    pub merge_policy: MergePolicy,
    /// Set exactly when `allocation_type` is `Metered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metering: Option<Metering>,
}

/// A feature included in a plan. `allocation: None` is a bare key: the full allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanFeature {
    pub feature_key: String,
    #[serde(default)]
    pub allocation: Option<Allocation>,
}

impl PlanFeature {
    pub fn bare(feature_key: impl Into<String>) -> Self {
        Self {
            feature_key: feature_key.into(),
            allocation: None,
        }
    }

    pub fn with(feature_key: impl Into<String>, allocation: Allocation) -> Self {
        Self {
            feature_key: feature_key.into(),
            allocation: Some(allocation),
        }
    }
}

/// Frontegg's `"true"` / `"false"` treatment strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Treatment {
    #[serde(rename = "true")]
    True,
    #[default]
    #[serde(rename = "false")]
    False,
}

impl Treatment {
    pub fn is_true(self) -> bool {
        self == Treatment::True
    }
}

impl From<bool> for Treatment {
    fn from(value: bool) -> Self {
        if value {
            Treatment::True
        } else {
            Treatment::False
        }
    }
}

/// A bundle of features granted to accounts and users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: Uuid,
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    #[serde(default)]
    pub features: Vec<PlanFeature>,
    /// Grants created without an expiry get `starts_at + days`.
    #[serde(default, rename = "defaultTimeLimitation")]
    pub default_time_limitation_days: Option<u32>,
    #[serde(default)]
    pub assign_on_signup: bool,
    /// Targeting: a subject for whom these rules yield `true` holds the plan without a grant.
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub default_treatment: Treatment,
    #[serde(default)]
    pub inherit_to_sub_accounts: bool,
}

impl Plan {
    /// Whether the plan targets anyone by rules (and so is evaluated on every check).
    pub fn has_targeting(&self) -> bool {
        !self.rules.is_empty() || self.default_treatment.is_true()
    }
}

/// A per-feature flag gating it by subject attributes. Gate semantics: a flag can only take a
/// feature away (`FeatureFlagOff`); it never entitles on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureFlag {
    pub id: Uuid,
    pub feature_key: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub on: bool,
    pub off_treatment: Treatment,
    pub default_treatment: Treatment,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A targeting rule: all conditions must hold (`conditionLogic: "and"`), then `treatment` applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub description: Option<String>,
    pub conditions: Vec<Condition>,
    pub treatment: Treatment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    #[default]
    Custom,
    Frontegg,
}

/// One condition over a subject attribute. `value` keeps Frontegg's per-operation shape
/// (`{"list": [..]}`, `{"string": re}`, `{"number": n}`, `{"start", "end"}`, `{"boolean": b}`,
/// `{"date": ts}`); it is parsed once when the index is built (`condition::compile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub attribute: String,
    #[serde(default)]
    pub attribute_type: AttributeType,
    #[serde(default)]
    pub negate: bool,
    pub op: ConditionOp,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionOp {
    InList,
    StartsWith,
    EndsWith,
    Contains,
    Matches,
    Equal,
    GreaterThan,
    GreaterThanEqual,
    LowerThan,
    LowerThanEqual,
    BetweenNumeric,
    Is,
    On,
    BetweenDate,
    OnOrAfter,
    OnOrBefore,
}

impl ConditionOp {
    pub const ALL: [ConditionOp; 16] = [
        ConditionOp::InList,
        ConditionOp::StartsWith,
        ConditionOp::EndsWith,
        ConditionOp::Contains,
        ConditionOp::Matches,
        ConditionOp::Equal,
        ConditionOp::GreaterThan,
        ConditionOp::GreaterThanEqual,
        ConditionOp::LowerThan,
        ConditionOp::LowerThanEqual,
        ConditionOp::BetweenNumeric,
        ConditionOp::Is,
        ConditionOp::On,
        ConditionOp::BetweenDate,
        ConditionOp::OnOrAfter,
        ConditionOp::OnOrBefore,
    ];
}

/// What a matching route requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoutePolicy {
    Allow,
    Deny,
    /// Every listed feature must be entitled and every listed permission pass the permission
    /// check (held by the subject and, if linked to features, entitled).
    Require {
        #[serde(default)]
        features: Vec<String>,
        #[serde(default)]
        permissions: Vec<String>,
    },
}

/// An HTTP route rule. `method` is an upper-case method or `*`. `path` segments are literals,
/// `*` (exactly one segment) or a final `**` (zero or more remaining segments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub id: Uuid,
    pub method: String,
    pub path: String,
    pub policy: RoutePolicy,
    #[serde(default)]
    pub description: Option<String>,
}

/// Where a grant came from. Known sources are named; anything else is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum GrantSource {
    Api,
    Batch,
    Signup,
    Migration,
    Inherited,
    Other(String),
}

impl GrantSource {
    pub fn as_str(&self) -> &str {
        match self {
            GrantSource::Api => "api",
            GrantSource::Batch => "batch",
            GrantSource::Signup => "signup",
            GrantSource::Migration => "migration",
            GrantSource::Inherited => "inherited",
            GrantSource::Other(s) => s,
        }
    }
}

impl From<String> for GrantSource {
    fn from(value: String) -> Self {
        match value.as_str() {
            "api" => GrantSource::Api,
            "batch" => GrantSource::Batch,
            "signup" => GrantSource::Signup,
            "migration" => GrantSource::Migration,
            "inherited" => GrantSource::Inherited,
            _ => GrantSource::Other(value),
        }
    }
}

impl From<GrantSource> for String {
    fn from(value: GrantSource) -> Self {
        match value {
            GrantSource::Other(s) => s,
            known @ (GrantSource::Api
            | GrantSource::Batch
            | GrantSource::Signup
            | GrantSource::Migration
            | GrantSource::Inherited) => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for GrantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A grant's status at an instant, derived, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Scheduled,
    Active,
    Expired,
    Revoked,
}

/// The status rule on epoch microseconds, shared by `Grant` and the index's compact grants.
/// Precedence: revoked (from `revoked_at` on), then expired (from `expires_at` on: the end is
/// exclusive), then scheduled (before `starts_at`), else active. A revocation in the future of
/// `at` does not count yet, so a check at a past instant sees the past.
pub(crate) fn status_at_micros(
    starts_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    at: i64,
) -> GrantStatus {
    if revoked_at.is_some_and(|r| r <= at) {
        GrantStatus::Revoked
    } else if expires_at.is_some_and(|e| e <= at) {
        GrantStatus::Expired
    } else if at < starts_at {
        GrantStatus::Scheduled
    } else {
        GrantStatus::Active
    }
}

/// A plan granted to an account, or to one user of that account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub id: Uuid,
    pub plan_id: Uuid,
    /// The account: a caller-chosen ID of 1–255 characters without whitespace or `/`.
    pub tenant_id: String,
    /// The identity provider's user ID; `None` for an account-level grant.
    #[serde(default)]
    pub user_id: Option<String>,
    pub starts_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked_by: Option<String>,
    #[serde(default)]
    pub revoke_reason: Option<String>,
    pub source: GrantSource,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub granted_by: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Grant {
    pub fn status_at(&self, at: DateTime<Utc>) -> GrantStatus {
        status_at_micros(
            self.starts_at.timestamp_micros(),
            self.expires_at.map(|e| e.timestamp_micros()),
            self.revoked_at.map(|r| r.timestamp_micros()),
            at.timestamp_micros(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, h, 0, 0).unwrap()
    }

    fn grant(starts: u32, expires: Option<u32>, revoked: Option<u32>) -> Grant {
        Grant {
            id: Uuid::nil(),
            plan_id: Uuid::nil(),
            tenant_id: "acme".into(),
            user_id: None,
            starts_at: t(starts),
            expires_at: expires.map(t),
            revoked_at: revoked.map(t),
            revoked_by: None,
            revoke_reason: None,
            source: GrantSource::Api,
            external_id: None,
            granted_by: None,
            metadata: Value::Null,
            created_at: t(0),
            updated_at: t(0),
        }
    }

    #[test]
    fn status_boundaries() {
        let g = grant(2, Some(5), None);
        assert_eq!(g.status_at(t(1)), GrantStatus::Scheduled);
        assert_eq!(g.status_at(t(2)), GrantStatus::Active);
        assert_eq!(g.status_at(t(4)), GrantStatus::Active);
        assert_eq!(g.status_at(t(5)), GrantStatus::Expired);
        let r = grant(2, Some(5), Some(3));
        assert_eq!(r.status_at(t(2)), GrantStatus::Active);
        assert_eq!(r.status_at(t(3)), GrantStatus::Revoked);
        assert_eq!(r.status_at(t(9)), GrantStatus::Revoked);
        // revoked before it ever started
        assert_eq!(
            grant(5, None, Some(1)).status_at(t(2)),
            GrantStatus::Revoked
        );
    }

    #[test]
    fn limits_merge_saturating_and_unlimited_dominates() {
        use Limit::*;
        assert_eq!(Finite(3).merge(Finite(4), MergePolicy::Max), Finite(4));
        assert_eq!(Finite(3).merge(Finite(4), MergePolicy::Sum), Finite(7));
        assert_eq!(
            Finite(u64::MAX).merge(Finite(4), MergePolicy::Sum),
            Finite(u64::MAX)
        );
        assert_eq!(Finite(3).merge(Unlimited, MergePolicy::Sum), Unlimited);
        assert_eq!(Unlimited.merge(Finite(3), MergePolicy::Max), Unlimited);
        assert!(Finite(3).allows(3));
        assert!(!Finite(3).allows(4));
        assert!(Unlimited.allows(u64::MAX));
    }

    #[test]
    fn allocation_wire_shape_matches_seed_004() {
        let json = serde_json::to_value(Allocation::MaxCount(Limit::Finite(5))).unwrap();
        assert_eq!(json, serde_json::json!({"type": "max_count", "value": 5}));
        let json = serde_json::to_value(Allocation::Bool(true)).unwrap();
        assert_eq!(json, serde_json::json!({"type": "bool", "value": true}));
        let unlimited: Allocation =
            serde_json::from_value(serde_json::json!({"type": "max_count", "value": null}))
                .unwrap();
        assert_eq!(unlimited, Allocation::MaxCount(Limit::Unlimited));
    }

    #[test]
    fn coerce_and_source_round_trip() {
        assert_eq!(
            Allocation::Bool(true).coerce(AllocationType::MaxCount),
            Allocation::MaxCount(Limit::Unlimited)
        );
        assert_eq!(
            Allocation::MaxCount(Limit::Finite(0)).coerce(AllocationType::Bool),
            Allocation::Bool(false)
        );
        let s: GrantSource = serde_json::from_str("\"partner\"").unwrap();
        assert_eq!(s, GrantSource::Other("partner".into()));
        assert_eq!(
            serde_json::to_string(&GrantSource::Signup).unwrap(),
            "\"signup\""
        );
        let t: Treatment = serde_json::from_str("\"true\"").unwrap();
        assert!(t.is_true());
    }
}
