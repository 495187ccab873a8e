//! The entitlement evaluation core: the model, targeting conditions, route patterns, the
//! in-memory index that answers a check without allocating, and the writer that applies
//! `IndexChange`s to it. One implementation for the entitlement service, the agent and the SDK,
//! so a follower's index answers exactly as the service's. Knows no transport, storage or runtime.

pub mod condition;
pub mod error;
pub mod export;
#[cfg(test)]
mod fixtures;
pub mod follow;
pub mod index;
pub mod metering;
pub mod model;
pub mod permission;
#[cfg(test)]
mod reference;
pub mod route;
#[cfg(any(test, feature = "synthetic"))]
pub mod synthetic;
pub mod writer;

pub use error::IndexError;
pub use export::{IndexExport, ScopeClosure, scope_closure};
pub use follow::{FollowError, Follower, ResetReason, StreamEvent};
pub use index::{
    AllowReason, CheckRequest, DecidedBy, Decision, EffectiveFeature, EntitlementIndex,
    ExplainedGrant, FeatureChange, FeatureIndex, GrantLevel, Hypothetical, Justification,
    MAX_ANCESTOR_DEPTH, MAX_VENDOR_ENTITLEMENTS, MAX_WHAT_IF_CHANGES, MemoryEstimate, MeterOutlook,
    PastAsk, PastMeter, PastMeters, SharedIndex, SnapshotTooLarge, Subject, Target, VendorBundle,
    VendorEntitlement, VendorFeature, VendorSnapshot, WhatIf,
};
pub use model::{
    Aggregation, Allocation, AllocationType, AttributeType, Condition, ConditionOp, Feature,
    FeatureFlag, Grant, GrantSource, GrantStatus, Limit, MergePolicy, Metering, Plan, PlanFeature,
    Route, RoutePolicy, Rule, Treatment,
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

/// Whether a feature flag leaves its feature on for a subject: off → its off treatment; on →
/// the first matching rule's treatment, else its default (a flag only takes features away).
pub fn flag_allows(
    flag: &FeatureFlag,
    attributes: Option<&serde_json::Map<String, serde_json::Value>>,
) -> bool {
    index::flag_allows(flag, attributes)
}
