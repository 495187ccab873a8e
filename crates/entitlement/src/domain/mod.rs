//! The entitlement domain: model, validation and the evaluation index. Knows neither the
//! transport (tonic) nor storage (sea-orm); both layers call into it.

pub mod catalog;
mod condition;
pub mod error;
pub mod index;
pub mod model;
#[cfg(test)]
mod reference;
mod route;
#[cfg(any(test, feature = "synthetic"))]
pub mod synthetic;
pub mod validate;
pub mod writer;

pub use error::{DomainError, ItemError, ItemProblem, Result};
pub use index::{
    AllowReason, CheckRequest, DecidedBy, Decision, EffectiveFeature, EntitlementIndex,
    ExplainedGrant, FeatureChange, FeatureIndex, GrantLevel, Hypothetical, Justification,
    MAX_ANCESTOR_DEPTH, MAX_WHAT_IF_CHANGES, MemoryEstimate, SharedIndex, Subject, Target, WhatIf,
};
pub use model::{
    Allocation, AllocationType, AttributeType, Condition, ConditionOp, Feature, FeatureFlag, Grant,
    GrantSource, GrantStatus, Limit, MergePolicy, Plan, PlanFeature, Route, RoutePolicy, Rule,
    Treatment,
};
pub use validate::{
    GrantContext, GrantInput, GrantOrigin, GrantPatch, MAX_BATCH, MAX_KEY_LEN, parse_timestamp,
    revoke_grant, tenant_id_problem, validate_attributes, validate_feature, validate_flag,
    validate_grant_deletes, validate_grant_updates, validate_key, validate_new_grant,
    validate_new_grants, validate_plan, validate_route, validate_rules, validate_tenant_id,
};
pub use writer::{IndexChange, IndexWriter, Snapshot};

/// Whether a plan's targeting (rules, then default treatment) selects a subject.
pub fn plan_targets(
    plan: &Plan,
    attributes: Option<&serde_json::Map<String, serde_json::Value>>,
) -> bool {
    condition::CompiledTargeting::new(&plan.rules, plan.default_treatment.is_true())
        .evaluate(attributes)
}
