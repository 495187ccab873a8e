//! The entitlement domain: model, validation and the evaluation index. Knows neither the
//! transport (tonic) nor storage (sea-orm); both layers call into it.

pub mod audit;
pub mod catalog;
pub mod error;
pub mod metering;
pub mod threshold;
pub mod transition;
pub mod usage_history;
pub mod validate;
pub mod webhook;

// The evaluation core lives in `tenantry-index`, shared with the agent and the SDK; its modules
// keep their `domain::` paths here.
#[cfg(any(test, feature = "synthetic"))]
pub use tenantry_index::synthetic;
pub use tenantry_index::{IndexError, flag_allows, index, model, plan_targets, writer};

pub use error::{DomainError, ItemError, ItemProblem, Result};
pub use tenantry_index::{
    Aggregation, Allocation, AllocationType, AttributeType, Condition, ConditionOp, Feature,
    FeatureFlag, Grant, GrantSource, GrantStatus, Limit, MergePolicy, Metering, Plan, PlanFeature,
    Route, RoutePolicy, Rule, Treatment,
};
pub use tenantry_index::{
    AllowReason, CheckRequest, DecidedBy, Decision, EffectiveFeature, EntitlementIndex,
    ExplainedGrant, FeatureChange, FeatureIndex, GrantLevel, Hypothetical, Justification,
    MAX_ANCESTOR_DEPTH, MAX_VENDOR_ENTITLEMENTS, MAX_WHAT_IF_CHANGES, MemoryEstimate, MeterOutlook,
    PastAsk, PastMeter, PastMeters, SharedIndex, Subject, Target, VendorBundle, VendorEntitlement,
    VendorFeature, VendorSnapshot, WhatIf,
};
pub use tenantry_index::{
    IndexChange, IndexExport, IndexWriter, ResetReason, ScopeClosure, Snapshot, StreamEvent,
    scope_closure,
};
pub use validate::{
    GrantContext, GrantInput, GrantOrigin, GrantPatch, MAX_BATCH, MAX_KEY_LEN, allocation_type_for,
    allocations_survive, parse_timestamp, revoke_grant, tenant_id_problem, validate_attributes,
    validate_feature, validate_feature_change, validate_flag, validate_grant_deletes,
    validate_grant_updates, validate_key, validate_new_grant, validate_new_grants, validate_plan,
    validate_route, validate_rules, validate_tenant_id,
};
