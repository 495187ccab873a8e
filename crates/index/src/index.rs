//! The evaluation index: an immutable snapshot of features, plans, flags, routes, grants and the
//! tenant hierarchy that answers checks without allocating.
//!
//! Layout (chosen for allocation-free checks and cheap copy-on-write updates, see `writer`):
//! - `Catalog` (features, plans, flags, routes, permission links) is small and rebuilt whole
//!   behind one `Arc` when any of it changes. Feature keys are interned to `u32` positions
//!   (sorted by key); plans get stable `u32` slots that grants refer to.
//! - Tenants live in shards, each an `Arc<FxHashMap<Arc<str>, TenantNode>>` keyed by the
//!   caller-chosen tenant ID. There are 256 shards, doubled whenever they average more than
//!   64 tenants, so the tables a write copies stay small at any size. Each ID is interned
//!   once: the table key and every child's parent pointer share one `Arc<str>`, and checks look nodes up by `&str`, so nothing allocates.
//!   A node sits in the table itself (one cache miss fewer per level than a boxed node) and holds its parent, its
//!   account-level grants and its users' grants as exact-size `Arc<[_]>` slices of compact
//!   48-byte records sorted by grant id. A write copies one shard's table (shallow: the slices
//!   are shared) and the touched tenant's slices.
//! - Ancestors are found by walking parent pointers (bounded by `MAX_ANCESTOR_DEPTH`, with a
//!   cycle guard), so a hierarchy change touches one node.
//!
//! Semantics of a feature check (the reference model in `reference.rs` restates them):
//! 1. unknown tenant → `TenantNotFound`; unknown feature → `MissingFeature`;
//! 2. a feature flag evaluating to false for the subject → `FeatureFlagOff` (flags only gate);
//! 3. relevant grants, in this order: the user's grants (when a user id is given), the account's
//!    grants, then ancestors' account grants whose plan has `inherit_to_sub_accounts`, nearest
//!    first; within a level by grant id. Then plans targeting the subject by rules (by plan id).
//!    A grant is relevant when its plan includes the feature;
//! 4. active relevant grants that grant (`bool` true, any `max_count`) are merged (`bool` ORs,
//!    `max_count` by the feature's merge policy). The deciding grant is the first one holding the
//!    largest single allocation;
//! 5. none: `PlanExpired` if a relevant grant expired, else `PlanRevoked`, else `NotStarted`,
//!    else `MissingFeature`; the first such grant is reported as the decider;
//! 6. a requested amount above a `max_count` allocation → `LimitExceeded`;
//! 7. `next_change_at` is the earliest start, expiry or revocation after `at` among relevant
//!    grants.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::mem::size_of;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::condition::CompiledTargeting;
use super::error::IndexError;
use super::metering::{MeterReading, MeterSpec, MeterState};
use super::model::{
    Allocation, AllocationType, Feature, FeatureFlag, Grant, GrantStatus, Limit, MergePolicy, Plan,
    Route, RoutePolicy, status_at_micros,
};
use super::route::{PathPattern, parse_method, request_segments, route_order};
use rustc_hash::{FxBuildHasher, FxHashMap};

#[path = "vendor_snapshot.rs"]
mod vendor;

#[path = "index_past.rs"]
mod past;
pub use past::{PastAsk, PastMeter, PastMeters};
#[path = "index_what_if.rs"]
mod what_if;
pub use vendor::{
    MAX_VENDOR_ENTITLEMENTS, SnapshotTooLarge, VendorBundle, VendorEntitlement, VendorFeature,
    VendorSnapshot,
};
pub use what_if::{FeatureChange, Hypothetical, MAX_WHAT_IF_CHANGES, MeterOutlook, WhatIf};

/// Ancestors further up than this are ignored by checks (the tenant service keeps trees shallow).
pub const MAX_ANCESTOR_DEPTH: usize = 32;
/// The fewest shards (2^8); there are never fewer, so small indexes keep their tables hot.
const MIN_SHARD_BITS: u32 = 8;
/// The most shards (2^24): past that, tables grow instead.
const MAX_SHARD_BITS: u32 = 24;
/// Past this many tenants per shard on average the shard count doubles: a batch write copies
/// every table it touches, so their size, not the index's, must bound its cost.
pub(crate) const MAX_TENANTS_PER_SHARD: usize = 64;
/// "No such instant" in compact grants: never expires, never revoked.
pub(crate) const NEVER: i64 = i64::MAX;

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

/// Who is asking. Everything is borrowed so a check allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub tenant_id: &'a str,
    pub user_id: Option<&'a str>,
    /// Permissions the subject holds (from its token); used by permission and route checks.
    pub permissions: &'a [String],
    /// Attributes for feature-flag and plan targeting rules.
    pub attributes: Option<&'a Map<String, Value>>,
}

impl<'a> Subject<'a> {
    pub fn account(tenant_id: &'a str) -> Self {
        Self {
            tenant_id,
            user_id: None,
            permissions: &[],
            attributes: None,
        }
    }

    pub fn user(tenant_id: &'a str, user_id: &'a str) -> Self {
        Self {
            user_id: Some(user_id),
            ..Self::account(tenant_id)
        }
    }
}

/// What is asked about: exactly one of a feature, a permission or a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Feature(&'a str),
    Permission(&'a str),
    Route { method: &'a str, path: &'a str },
}

impl<'a> Target<'a> {
    /// Builds a target from a request's optional fields; none or several is an invalid argument.
    pub fn from_parts(
        feature_key: Option<&'a str>,
        permission_key: Option<&'a str>,
        route: Option<(&'a str, &'a str)>,
    ) -> Result<Self, IndexError> {
        match (feature_key, permission_key, route) {
            (Some(f), None, None) => Ok(Target::Feature(f)),
            (None, Some(p), None) => Ok(Target::Permission(p)),
            (None, None, Some((method, path))) => Ok(Target::Route { method, path }),
            _ => Err(IndexError::invalid(
                "requestContext",
                "exactly one of featureKey, permissionKey or route is required",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    pub subject: Subject<'a>,
    pub target: Target<'a>,
    /// Units wanted of a `max_count` feature; ignored for `bool` features, permissions, routes.
    pub requested: Option<u64>,
}

/// Why a check said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Justification {
    MissingFeature,
    MissingPermission,
    PlanExpired,
    PlanRevoked,
    NotStarted,
    FeatureFlagOff,
    LimitExceeded,
    MissingRoute,
    RouteDenied,
    TenantNotFound,
    /// A metered feature's balance is spent (hard limit).
    UsageLimitReached,
    /// A metered feature has a balance, but less than the requested amount (hard limit).
    InsufficientBalance,
    /// A check at a past instant of a metered feature whose meter then is not known (drawn on
    /// before draws kept their meter, or asked of an index without history).
    MeterHistoryUnknown,
}

/// Where the deciding grant sits relative to the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum GrantLevel {
    User,
    Account,
    /// `depth` 1 is the parent. The ancestor's ID is not carried (it would allocate on the
    /// hot path); `EntitlementIndex::ancestor_at` resolves it.
    Ancestor {
        depth: u8,
    },
    /// Held through the plan's targeting rules, not a grant.
    Targeting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecidedBy {
    /// `None` for plan targeting.
    pub grant_id: Option<Uuid>,
    pub plan_id: Uuid,
    pub level: GrantLevel,
}

/// Why a check said yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AllowReason {
    /// A grant (or a plan's targeting) includes the feature; see `decided_by`.
    Grant,
    /// The permission is held and linked to no feature.
    UngatedPermission,
    /// The matching route allows unconditionally.
    RouteAllow,
    /// The matching route requires features and/or permissions, and all are satisfied.
    RouteRequirementsMet,
    /// A metered feature with a soft limit, used beyond its balance: allowed, the excess is
    /// overage.
    SoftLimitOverage,
    /// A metered feature entitled by credit grants alone (no plan includes it).
    Credits,
}

/// A feature interned in one index snapshot (its position among the catalog's features,
/// which are sorted by key). Copy-sized so a decision can name its feature without
/// allocating; `EntitlementIndex::feature_key` resolves it against the same snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FeatureIndex(pub(crate) u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub result: bool,
    /// Set exactly when `result` is false.
    pub justification: Option<Justification>,
    /// Set exactly when `result` is true.
    pub allow_reason: Option<AllowReason>,
    pub allocation: Option<Allocation>,
    pub decided_by: Option<DecidedBy>,
    /// The feature whose evaluation decided: the checked feature, or for permission and route
    /// checks the linked or required feature whose answer was taken. `None` when no known
    /// feature was evaluated (unknown tenant or feature, ungated permission, route allow,
    /// deny or miss, a missing permission).
    pub feature: Option<FeatureIndex>,
    /// When this answer may next change by time alone (a start, expiry or revocation).
    pub next_change_at: Option<DateTime<Utc>>,
    pub revision: u64,
    /// A metered feature's balance, usage and period (for feature checks of metered features).
    pub meter: Option<MeterReading>,
    /// Set when `meter` is a pool: the meter of the ancestor at this depth (1 = the parent;
    /// `EntitlementIndex::ancestor_at` resolves it), which the subject draws on through an
    /// inherited grant. `None`: the subject's own meter.
    pub meter_pool: Option<u8>,
    /// `meter` is the subject's user's own meter (README "Per-user meters"): the user's own
    /// grants allocate the feature. `false`: the account's (or its pool's).
    pub meter_user: bool,
}

/// One entitled feature of a subject (the seed-004 listing: key + typed allocation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveFeature {
    pub key: String,
    pub allocation: Allocation,
    pub decided_by: Option<DecidedBy>,
    pub next_change_at: Option<DateTime<Utc>>,
}

/// One grant as Explain shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainedGrant {
    pub grant_id: Uuid,
    pub plan_id: Uuid,
    pub level: GrantLevel,
    pub status: GrantStatus,
    /// Whether the grant's plan's targeting (rules, default treatment) selects the subject.
    /// A plan without targeting selects nobody by rules: its grants alone entitle.
    pub targeted: bool,
    /// What the plan gives the checked feature; `None` when it does not include it.
    pub allocation: Option<Allocation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryEstimate {
    pub tenants: usize,
    pub grants: usize,
    /// Heap bytes held by tenant nodes, grants and shard tables (catalog excluded: it is small).
    pub bytes: usize,
}

// ---------------------------------------------------------------------------------------------
// Compact storage
// ---------------------------------------------------------------------------------------------

/// A grant as the index keeps it: 48 bytes, times as epoch microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompactGrant {
    pub(crate) id: Uuid,
    pub(crate) starts_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) revoked_at: i64,
    pub(crate) plan: u32,
}

impl CompactGrant {
    pub(crate) fn new(grant: &Grant, plan: u32) -> Self {
        Self {
            id: grant.id,
            starts_at: grant.starts_at.timestamp_micros(),
            expires_at: grant.expires_at.map_or(NEVER, |t| t.timestamp_micros()),
            revoked_at: grant.revoked_at.map_or(NEVER, |t| t.timestamp_micros()),
            plan,
        }
    }

    #[inline]
    fn status(&self, at: i64) -> GrantStatus {
        status_at_micros(
            self.starts_at,
            (self.expires_at != NEVER).then_some(self.expires_at),
            (self.revoked_at != NEVER).then_some(self.revoked_at),
            at,
        )
    }

    #[inline]
    fn next_change_after(&self, at: i64) -> i64 {
        let after = |t: i64| if t > at { t } else { NEVER };
        after(self.starts_at)
            .min(after(self.expires_at))
            .min(after(self.revoked_at))
    }
}

/// Reads one field of every grant before a scan of them. These loads do not depend on each
/// other, so the cache misses of a cold slice overlap; the scan itself branches on every grant
/// and would wait for them one after another (without this, a check on a cold account took
/// 1.2–1.4 times as long in B1 of `tenantry-bench`).
#[inline]
fn touch(grants: &[CompactGrant]) {
    let mut plans = 0u32;
    for g in grants {
        plans ^= g.plan;
    }
    std::hint::black_box(plans);
}

#[derive(Debug, Clone)]
pub(crate) struct UserGrants {
    pub(crate) user: Box<str>,
    pub(crate) grants: Arc<[CompactGrant]>,
    /// The user's own meters (README "Per-user meters"), sorted by feature id; `None` when it
    /// has none (kept here, not on the account node, so accounts without them pay nothing).
    pub(crate) meters: Option<Arc<[(Uuid, MeterState)]>>,
}

impl UserGrants {
    pub(crate) fn meter(&self, feature: Uuid) -> Option<&MeterState> {
        meter_in(self.meters.as_deref()?, feature)
    }

    pub(crate) fn meter_lists(&self) -> &[(Uuid, MeterState)] {
        self.meters.as_deref().unwrap_or(&[])
    }
}

/// The meter of `feature` in a list sorted by feature id (an account's or a user's).
fn meter_in(meters: &[(Uuid, MeterState)], feature: Uuid) -> Option<&MeterState> {
    meters
        .binary_search_by_key(&feature, |(f, _)| *f)
        .ok()
        .map(|i| &meters[i].1)
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TenantNode {
    /// Shares the parent's interned ID.
    pub(crate) parent: Option<TenantKey>,
    /// Account-level grants, sorted by id.
    pub(crate) grants: Arc<[CompactGrant]>,
    /// Users holding grants, sorted by user id; each list sorted by grant id. `None` when no
    /// user of the account holds a grant (most accounts), to save the allocation.
    pub(crate) users: Option<Arc<[UserGrants]>>,
    /// The account's meters of metered features, sorted by feature id; `None` when it has none.
    pub(crate) meters: Option<Arc<[(Uuid, MeterState)]>>,
}

impl TenantNode {
    fn user(&self, user: &str) -> Option<&UserGrants> {
        let users = self.users.as_deref()?;
        users
            .binary_search_by(|u| (*u.user).cmp(user))
            .ok()
            .map(|i| &users[i])
    }

    pub(crate) fn meter(&self, feature: Uuid) -> Option<&MeterState> {
        meter_in(self.meters.as_deref()?, feature)
    }

    pub(crate) fn meter_lists(&self) -> &[(Uuid, MeterState)] {
        self.meters.as_deref().unwrap_or(&[])
    }

    pub(crate) fn user_lists(&self) -> &[UserGrants] {
        self.users.as_deref().unwrap_or(&[])
    }

    pub(crate) fn grant_count(&self) -> usize {
        self.grants.len()
            + self
                .user_lists()
                .iter()
                .map(|u| u.grants.len())
                .sum::<usize>()
    }
}

/// An interned tenant ID.
pub(crate) type TenantKey = Arc<str>;
pub(crate) type Shard = FxHashMap<TenantKey, TenantNode>;

#[derive(Debug, Clone)]
struct FeatureEntry {
    key: Box<str>,
    merge: MergePolicy,
    /// A metered feature's id (its meters are kept by id) and how it meters.
    meter: Option<(Uuid, MeterSpec)>,
    /// `None` when no flag can turn the feature off.
    flag: Option<CompiledTargeting>,
}

#[derive(Debug, Clone)]
struct PlanEntry {
    id: Uuid,
    key: Box<str>,
    inherit: bool,
    /// Sorted by feature position; allocations already coerced to the feature's type.
    features: Box<[(u32, Allocation)]>,
    targeting: Option<CompiledTargeting>,
    /// Whether its targeting selects a subject without attributes (as a write sees it).
    targets_anyone: bool,
}

impl PlanEntry {
    #[inline]
    fn allocation(&self, feature: u32) -> Option<Allocation> {
        self.features
            .binary_search_by_key(&feature, |&(f, _)| f)
            .ok()
            .map(|i| self.features[i].1)
    }
}

#[derive(Debug, Clone)]
enum CompiledPolicy {
    Allow,
    Deny,
    /// `None` marks a feature key the catalog does not know (never entitled).
    Require {
        features: Box<[Option<u32>]>,
        permissions: Box<[Box<str>]>,
    },
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    id: Uuid,
    method: Option<Box<str>>,
    pattern: PathPattern,
    policy: CompiledPolicy,
}

/// Paths up to this many segments are split once per check into a stack array.
const MAX_SPLIT_SEGMENTS: usize = 32;

impl CompiledRoute {
    fn method_matches(&self, method: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// Everything but grants and the hierarchy.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    features: Vec<FeatureEntry>,
    feature_by_key: FxHashMap<Box<str>, u32>,
    /// By stable plan slot; `None` for slots of deleted or not-yet-known plans.
    plans: Vec<Option<PlanEntry>>,
    plan_slots: FxHashMap<Uuid, u32>,
    permissions: FxHashMap<Box<str>, Box<[u32]>>,
    /// Most specific first (see `route`).
    routes: Vec<CompiledRoute>,
    /// Slots of plans with targeting rules, by plan id.
    targeted: Vec<u32>,
    /// Whether any plan inherits; if none does, checks skip the ancestor walk.
    any_inherit: bool,
    /// The catalog as written (features in position order), for the vendor snapshot, which
    /// hands rules and flags to SDKs that evaluate them themselves.
    raw: Arc<RawCatalog>,
}

/// The uncompiled catalog a [`Catalog`] was built from.
#[derive(Debug, Clone, Default)]
struct RawCatalog {
    /// By feature position.
    features: Vec<Feature>,
    flags: BTreeMap<String, FeatureFlag>,
    plans: FxHashMap<Uuid, Plan>,
}

/// Compiles a flag to "is the feature on for these attributes"; `None` if always on.
fn compile_flag(flag: &FeatureFlag) -> Option<CompiledTargeting> {
    let targeting = if flag.on {
        CompiledTargeting::new(&flag.rules, flag.default_treatment.is_true())
    } else {
        CompiledTargeting::new(&[], flag.off_treatment.is_true())
    };
    let always_on = (!flag.on && flag.off_treatment.is_true())
        || (flag.on && flag.rules.is_empty() && flag.default_treatment.is_true());
    (!always_on).then_some(targeting)
}

/// Whether `flag` leaves its feature on for a subject with `attributes`, as checks decide it.
pub(crate) fn flag_allows(flag: &FeatureFlag, attributes: Option<&Map<String, Value>>) -> bool {
    compile_flag(flag).is_none_or(|t| t.evaluate(attributes))
}

impl Catalog {
    pub(crate) fn build(
        features: &BTreeMap<String, Feature>,
        plans: &FxHashMap<Uuid, Plan>,
        flags: &BTreeMap<String, FeatureFlag>,
        routes: &BTreeMap<Uuid, Route>,
        plan_slots: &FxHashMap<Uuid, u32>,
    ) -> Catalog {
        let mut catalog = Catalog {
            raw: Arc::new(RawCatalog {
                features: features.values().cloned().collect(),
                flags: flags.clone(),
                plans: plans.clone(),
            }),
            ..Catalog::default()
        };
        let mut types = Vec::with_capacity(features.len());
        for (i, feature) in features.values().enumerate() {
            let idx = i as u32;
            catalog
                .feature_by_key
                .insert(feature.key.as_str().into(), idx);
            types.push(feature.allocation_type);
            catalog.features.push(FeatureEntry {
                key: feature.key.as_str().into(),
                merge: feature.merge_policy,
                meter: feature
                    .metering
                    .as_ref()
                    .filter(|_| feature.allocation_type == AllocationType::Metered)
                    .map(|m| (feature.id, m.spec())),
                flag: flags.get(&feature.key).and_then(compile_flag),
            });
        }

        let mut permissions: FxHashMap<Box<str>, Vec<u32>> = FxHashMap::default();
        for (i, feature) in features.values().enumerate() {
            for p in &feature.permissions {
                let list = permissions.entry(p.as_str().into()).or_default();
                if list.last() != Some(&(i as u32)) {
                    list.push(i as u32);
                }
            }
        }
        catalog.permissions = permissions
            .into_iter()
            .map(|(k, v)| (k, v.into_boxed_slice()))
            .collect();

        catalog.plans = vec![None; plan_slots.len()];
        catalog.plan_slots = plan_slots.clone();
        let mut targeted = Vec::new();
        for plan in plans.values() {
            let Some(&slot) = plan_slots.get(&plan.id) else {
                continue;
            };
            let mut entries: Vec<(u32, Allocation)> = plan
                .features
                .iter()
                .filter_map(|pf| {
                    let &f = catalog.feature_by_key.get(pf.feature_key.as_str())?;
                    let ty: AllocationType = types[f as usize];
                    let value = pf.allocation.unwrap_or(Allocation::full(ty)).coerce(ty);
                    Some((f, value))
                })
                .collect();
            // Stable sort + dedup keeps the first listing of a duplicated feature.
            entries.sort_by_key(|&(f, _)| f);
            entries.dedup_by_key(|&mut (f, _)| f);
            let targeting = plan
                .has_targeting()
                .then(|| CompiledTargeting::new(&plan.rules, plan.default_treatment.is_true()));
            if targeting.is_some() {
                targeted.push((plan.id, slot));
            }
            catalog.any_inherit |= plan.inherit_to_sub_accounts;
            if let Some(place) = catalog.plans.get_mut(slot as usize) {
                *place = Some(PlanEntry {
                    id: plan.id,
                    key: plan.key.as_str().into(),
                    inherit: plan.inherit_to_sub_accounts,
                    features: entries.into_boxed_slice(),
                    targets_anyone: targeting.as_ref().is_some_and(|t| t.evaluate(None)),
                    targeting,
                });
            }
        }
        targeted.sort();
        catalog.targeted = targeted.into_iter().map(|(_, slot)| slot).collect();

        let mut compiled: Vec<(PathPattern, Option<Box<str>>, &Route)> = routes
            .values()
            .filter_map(|r| {
                // Validation refuses bad routes on write; skipping keeps builds total.
                let pattern = PathPattern::parse(&r.path).ok()?;
                let method = parse_method(&r.method).ok()?;
                Some((pattern, method, r))
            })
            .collect();
        compiled
            .sort_by(|a, b| route_order((&a.0, a.1.is_some(), a.2), (&b.0, b.1.is_some(), b.2)));
        catalog.routes = compiled
            .into_iter()
            .map(|(pattern, method, route)| CompiledRoute {
                id: route.id,
                method,
                pattern,
                policy: match &route.policy {
                    RoutePolicy::Allow => CompiledPolicy::Allow,
                    RoutePolicy::Deny => CompiledPolicy::Deny,
                    RoutePolicy::Require {
                        features,
                        permissions,
                    } => CompiledPolicy::Require {
                        features: features
                            .iter()
                            .map(|k| catalog.feature_by_key.get(k.as_str()).copied())
                            .collect(),
                        permissions: permissions.iter().map(|p| p.as_str().into()).collect(),
                    },
                },
            })
            .collect();
        catalog
    }

    #[inline]
    fn plan(&self, slot: u32) -> Option<&PlanEntry> {
        self.plans.get(slot as usize).and_then(Option::as_ref)
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// A decision before the revision is stamped; times in epoch microseconds.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    result: bool,
    justification: Option<Justification>,
    reason: Option<AllowReason>,
    allocation: Option<Allocation>,
    decided_by: Option<DecidedBy>,
    feature: Option<u32>,
    next: i64,
    meter: Option<MeterReading>,
    meter_pool: Option<u8>,
    meter_user: bool,
}

impl Verdict {
    fn allow(reason: AllowReason) -> Self {
        Self {
            result: true,
            justification: None,
            reason: Some(reason),
            allocation: None,
            decided_by: None,
            feature: None,
            next: NEVER,
            meter: None,
            meter_pool: None,
            meter_user: false,
        }
    }

    fn deny(justification: Justification) -> Self {
        Self {
            result: false,
            justification: Some(justification),
            reason: None,
            allocation: None,
            decided_by: None,
            feature: None,
            next: NEVER,
            meter: None,
            meter_pool: None,
            meter_user: false,
        }
    }

    fn into_decision(self, revision: u64) -> Decision {
        Decision {
            result: self.result,
            justification: self.justification,
            allow_reason: self.reason,
            allocation: self.allocation,
            decided_by: self.decided_by,
            feature: self.feature.map(FeatureIndex),
            next_change_at: micros_to_time(self.next),
            revision,
            meter: self.meter,
            meter_pool: self.meter_pool,
            meter_user: self.meter_user,
        }
    }
}

/// A metered feature's answer: the grants' verdict (`base`) weighed against the meter the
/// subject draws on (`owner`: its own or an ancestor's pool, with the amount issued to it each
/// period).
fn metered(
    base: Verdict,
    owner: &MeterOwner<'_>,
    state: Option<&MeterState>,
    spec: &MeterSpec,
    requested: Option<u64>,
    at: i64,
    issued: &dyn Fn(DateTime<Utc>) -> Limit,
) -> Verdict {
    let allocation = if base.result {
        owner.allowance
    } else {
        Limit::Finite(0)
    };
    let Some(when) = DateTime::from_timestamp_micros(at) else {
        return base;
    };
    let reading = match state {
        Some(state) => state.read_issued(spec, when, allocation, issued),
        None => match MeterState::open(spec, when) {
            Ok(fresh) => fresh.read(spec, when, allocation),
            Err(_) => return base,
        },
    };
    // No plan includes it: entitled only while credits hold a balance.
    if !base.result && reading.balance.is_none_or(|b| b <= 0) {
        return base;
    }
    let next = base.next.min(reading.period_end.timestamp_micros());
    let reason = if base.result {
        AllowReason::Grant
    } else {
        AllowReason::Credits
    };
    let allowed = Verdict {
        result: true,
        justification: None,
        reason: Some(reason),
        // The amount issued each period to the meter drawn on.
        allocation: base.result.then_some(Allocation::MaxCount(owner.allowance)),
        next,
        meter: Some(reading),
        meter_pool: owner.pool,
        meter_user: owner.user.is_some(),
        ..base
    };
    if reading.covers(requested) {
        return allowed;
    }
    if spec.soft_limit {
        return Verdict {
            reason: Some(AllowReason::SoftLimitOverage),
            ..allowed
        };
    }
    let justification = if reading.balance.is_some_and(|b| b <= 0) {
        Justification::UsageLimitReached
    } else {
        Justification::InsufficientBalance
    };
    Verdict {
        result: false,
        justification: Some(justification),
        reason: None,
        ..allowed
    }
}

fn micros_to_time(micros: i64) -> Option<DateTime<Utc>> {
    if micros == NEVER {
        None
    } else {
        DateTime::from_timestamp_micros(micros)
    }
}

/// Folds relevant grants of one feature.
struct Acc {
    merge: MergePolicy,
    merged: Option<Allocation>,
    /// `merged` of what a write for the account sees as its own: its account-level grants and
    /// plans whose targeting selects anyone without attributes (not user grants, inherited
    /// grants or attribute-dependent targeting: a consumption has neither a user nor
    /// attributes, and a check must answer the meter it draws on).
    own: Option<Allocation>,
    /// `merged` of the subject's user's own grants (user-level grants only): when set, the
    /// user draws on a meter of its own issued this.
    user_own: Option<Allocation>,
    /// The nearest ancestor depth with an active inherited grant that grants.
    pool: Option<u8>,
    best: Option<(Allocation, DecidedBy)>,
    first_false: Option<DecidedBy>,
    expired: Option<DecidedBy>,
    revoked: Option<DecidedBy>,
    scheduled: Option<DecidedBy>,
    next: i64,
}

impl Acc {
    fn new(merge: MergePolicy) -> Self {
        Self {
            merge,
            merged: None,
            own: None,
            user_own: None,
            pool: None,
            best: None,
            first_false: None,
            expired: None,
            revoked: None,
            scheduled: None,
            next: NEVER,
        }
    }

    #[inline]
    fn active(&mut self, value: Allocation, by: DecidedBy) {
        let owned = matches!(by.level, GrantLevel::Account);
        self.active_as(value, by, owned);
    }

    /// [`Self::active`]; `owned` says whether the value counts as the account's own.
    #[inline]
    fn active_as(&mut self, value: Allocation, by: DecidedBy, owned: bool) {
        if !value.is_granting() {
            self.first_false.get_or_insert(by);
            return;
        }
        self.merged = Some(match self.merged {
            Some(m) => m.merge(value, self.merge),
            None => value,
        });
        if let GrantLevel::Ancestor { depth } = by.level {
            // Ancestors are visited nearest first.
            self.pool.get_or_insert(depth);
        } else if matches!(by.level, GrantLevel::User) {
            self.user_own = Some(match self.user_own {
                Some(m) => m.merge(value, self.merge),
                None => value,
            });
        } else if owned {
            self.own = Some(match self.own {
                Some(m) => m.merge(value, self.merge),
                None => value,
            });
        }
        if self
            .best
            .is_none_or(|(b, _)| value.strength_cmp(b) == Ordering::Greater)
        {
            self.best = Some((value, by));
        }
    }

    fn finish(self, feature: u32, requested: Option<u64>) -> Verdict {
        let base = Verdict {
            next: self.next,
            feature: Some(feature),
            ..Verdict::allow(AllowReason::Grant)
        };
        if let Some(merged) = self.merged {
            let decided_by = self.best.map(|(_, by)| by);
            if let (Allocation::MaxCount(limit), Some(r)) = (merged, requested)
                && !limit.allows(r)
            {
                return Verdict {
                    result: false,
                    justification: Some(Justification::LimitExceeded),
                    reason: None,
                    allocation: Some(merged),
                    decided_by,
                    ..base
                };
            }
            return Verdict {
                allocation: Some(merged),
                decided_by,
                ..base
            };
        }
        let why = [
            (self.expired, Justification::PlanExpired),
            (self.revoked, Justification::PlanRevoked),
            (self.scheduled, Justification::NotStarted),
        ]
        .into_iter()
        .find_map(|(by, j)| by.map(|by| (by, j)));
        match why {
            Some((by, justification)) => Verdict {
                result: false,
                justification: Some(justification),
                reason: None,
                decided_by: Some(by),
                ..base
            },
            None => Verdict {
                result: false,
                justification: Some(Justification::MissingFeature),
                reason: None,
                allocation: self.first_false.map(|_| Allocation::Bool(false)),
                decided_by: self.first_false,
                ..base
            },
        }
    }
}

/// What-if edits applied while visiting grants, instead of copying the index. Built from the
/// changes in order: a plan revocation also drops the hypothetical grants added before it.
#[derive(Debug, Clone, Default)]
struct Overlay {
    /// Hypothetical grants, with whether each is at the user level.
    added: Vec<(CompactGrant, bool)>,
    /// Plan slots whose direct grants are revoked.
    removed_plans: Vec<u32>,
    /// Direct grants revoked one by one.
    removed_grants: Vec<Uuid>,
    /// The subject's user when the index holds nothing of it (no grant, no meter) and a
    /// hypothetical grant goes to it: an empty entry, so the user's own meter is found (fresh)
    /// as it would be once the grant is written.
    user: Option<UserGrants>,
}

impl Overlay {
    /// Whether an existing direct grant is revoked by the overlay.
    fn removes(&self, g: &CompactGrant) -> bool {
        self.removed_plans.contains(&g.plan) || self.removed_grants.contains(&g.id)
    }

    /// The hypothetical grants at one level, in the order they were added.
    fn added_at(&self, user_level: bool) -> impl Iterator<Item = &CompactGrant> {
        self.added
            .iter()
            .filter(move |(_, u)| *u == user_level)
            .map(|(g, _)| g)
    }
}

/// Which meter a metered feature's check weighs the grants against.
#[derive(Clone, Copy)]
enum MeterMode<'s> {
    /// The meter the index holds for the subject's meter owner.
    Indexed,
    /// The owner's meter as given (read under its lock by a write).
    Given(Option<&'s MeterState>),
    /// The owners' meters at a past instant, from history; one not among them is unknown.
    Past(&'s PastMeters),
}

/// The meter a subject draws on for one metered feature.
struct MeterOwner<'i> {
    tenant_id: &'i str,
    node: &'i TenantNode,
    /// Set when it is the subject's user's own meter.
    user: Option<&'i UserGrants>,
    /// What it is issued each period.
    allowance: Limit,
    /// The owner's depth above the subject when it is an ancestor's pool.
    pool: Option<u8>,
}

fn limit_of(allocation: Option<Allocation>) -> Limit {
    match allocation {
        Some(Allocation::MaxCount(limit)) => limit,
        _ => Limit::Finite(0),
    }
}

struct Resolved<'i> {
    tenant_id: &'i str,
    node: &'i TenantNode,
    user: Option<&'i UserGrants>,
}

/// The immutable snapshot checks run against. Cloning is cheap (one `Arc` per shard).
#[derive(Debug, Clone)]
pub struct EntitlementIndex {
    pub(crate) revision: u64,
    pub(crate) catalog: Arc<Catalog>,
    /// A power of two, at least `1 << MIN_SHARD_BITS`.
    pub(crate) shards: Vec<Arc<Shard>>,
    tenants: usize,
    pub(crate) grants: usize,
    /// The latest commit time (by its writer's clock, epoch µs) among the revisions applied.
    pub(crate) written_until: i64,
}

impl Default for EntitlementIndex {
    fn default() -> Self {
        Self::empty()
    }
}

#[inline]
fn shard_of(id: &str, bits: u32) -> usize {
    use std::hash::BuildHasher;
    let hash = FxBuildHasher.hash_one(id);
    // The table inside a shard uses the hash's low bits for the bucket and its top 7 bits as
    // the tag it compares first; taking the shard from those top bits would give every key
    // in a shard the same tag (a string comparison per occupied slot probed). So the shard
    // comes from a remix of the whole hash instead.
    ((hash ^ (hash >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
}

impl EntitlementIndex {
    pub fn empty() -> Self {
        Self {
            revision: 0,
            catalog: Arc::new(Catalog::default()),
            shards: (0..1 << MIN_SHARD_BITS)
                .map(|_| Arc::new(Shard::default()))
                .collect(),
            tenants: 0,
            grants: 0,
            written_until: i64::MIN,
        }
    }

    /// The revision of the last write this snapshot includes.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The latest commit time among the revisions applied (`None`: no write yet).
    pub fn written_until(&self) -> Option<DateTime<Utc>> {
        (self.written_until != i64::MIN)
            .then(|| DateTime::from_timestamp_micros(self.written_until))
            .flatten()
    }

    /// Every tenant node, in no particular order.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = (&TenantKey, &TenantNode)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// "Now" for a question about the present: this replica's clock, but never earlier than a
    /// write the snapshot holds. Replicas' clocks differ by a little; without this a grant
    /// written on a replica whose clock runs ahead would look "not started" here (and one it
    /// revoked still active) until this clock caught up.
    pub fn present(&self, clock: DateTime<Utc>) -> DateTime<Utc> {
        match DateTime::from_timestamp_micros(self.written_until) {
            Some(written) if written > clock => written,
            Some(_) | None => clock,
        }
    }

    pub fn tenant_count(&self) -> usize {
        self.tenants
    }

    /// Grows the shard count, if needed, so `tenants` would average at most
    /// [`MAX_TENANTS_PER_SHARD`]: every table is rebuilt (O(tenants), shallow), which doubling
    /// makes rare. The count never shrinks.
    pub(crate) fn reserve_tenants(&mut self, tenants: usize) {
        let current = self.shard_bits();
        let mut bits = current;
        while tenants > (MAX_TENANTS_PER_SHARD << bits) && bits < MAX_SHARD_BITS {
            bits += 1;
        }
        if bits == current {
            return;
        }
        let per_shard = tenants >> bits;
        let mut shards: Vec<Shard> = (0..1_usize << bits)
            .map(|_| Shard::with_capacity_and_hasher(per_shard + per_shard / 4, Default::default()))
            .collect();
        for (key, node) in self.shards.iter().flat_map(|s| s.iter()) {
            shards[shard_of(key, bits)].insert(key.clone(), node.clone());
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
    }

    #[inline]
    fn shard_bits(&self) -> u32 {
        self.shards.len().trailing_zeros()
    }

    pub fn grant_count(&self) -> usize {
        self.grants
    }

    pub fn contains_tenant(&self, id: &str) -> bool {
        self.node(id).is_some()
    }

    /// The tenant's parent as the index knows it.
    pub fn parent_of(&self, id: &str) -> Option<&str> {
        self.node(id).and_then(|n| n.parent.as_deref())
    }

    /// The tenant's known ancestors, nearest first (as checks see them).
    pub fn ancestors(&self, id: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut current = self.node(id).and_then(|n| n.parent.as_deref());
        while let Some(p) = current {
            if out.len() == MAX_ANCESTOR_DEPTH || p == id || out.contains(&p) {
                break;
            }
            let Some(node) = self.node(p) else { break };
            out.push(p);
            current = node.parent.as_deref();
        }
        out
    }

    /// The ancestor a `GrantLevel::Ancestor { depth }` names (depth 1 = the parent).
    pub fn ancestor_at(&self, id: &str, depth: u8) -> Option<&str> {
        let depth = usize::from(depth).checked_sub(1)?;
        self.ancestors(id).get(depth).copied()
    }

    /// Whether making `parent` the parent of `tenant` would close a cycle.
    pub fn would_create_cycle(&self, tenant: &str, parent: &str) -> bool {
        parent == tenant || self.ancestors(parent).contains(&tenant)
    }

    #[inline]
    pub(crate) fn node(&self, id: &str) -> Option<&TenantNode> {
        self.shards[shard_of(id, self.shard_bits())].get(id)
    }

    /// The interned key of a known tenant.
    pub(crate) fn key_of(&self, id: &str) -> Option<&TenantKey> {
        self.shards[shard_of(id, self.shard_bits())]
            .get_key_value(id)
            .map(|(k, _)| k)
    }

    /// Inserts or replaces a node, copying its shard's table if a snapshot still shares it.
    pub(crate) fn put_node(&mut self, id: TenantKey, node: TenantNode) {
        let slot = shard_of(&id, self.shard_bits());
        if Arc::make_mut(&mut self.shards[slot])
            .insert(id, node)
            .is_none()
        {
            self.tenants += 1;
        }
    }

    pub(crate) fn remove_node(&mut self, id: &str) -> Option<TenantNode> {
        let slot = shard_of(id, self.shard_bits());
        if !self.shards[slot].contains_key(id) {
            return None;
        }
        let removed = Arc::make_mut(&mut self.shards[slot]).remove(id);
        self.tenants -= usize::from(removed.is_some());
        removed
    }

    /// The key of a feature a decision from this snapshot names.
    pub fn feature_key(&self, feature: FeatureIndex) -> Option<&str> {
        self.catalog
            .features
            .get(feature.0 as usize)
            .map(|f| &*f.key)
    }

    /// A live plan's key.
    pub fn plan_key(&self, plan_id: Uuid) -> Option<&str> {
        let slot = self.plan_slot(plan_id)?;
        self.catalog.plan(slot).map(|p| &*p.key)
    }

    /// A live plan's id by key (a scan: the catalog is small and this is not the hot path).
    pub fn plan_id_by_key(&self, key: &str) -> Option<Uuid> {
        self.catalog
            .plans
            .iter()
            .flatten()
            .find(|p| &*p.key == key)
            .map(|p| p.id)
    }

    pub(crate) fn plan_slot(&self, plan_id: Uuid) -> Option<u32> {
        self.catalog.plan_slots.get(&plan_id).copied()
    }

    fn resolve(&self, subject: &Subject<'_>) -> Option<Resolved<'_>> {
        let (tenant_id, node) = self.shards[shard_of(subject.tenant_id, self.shard_bits())]
            .get_key_value(subject.tenant_id)?;
        Some(Resolved {
            tenant_id,
            node,
            user: subject.user_id.and_then(|u| node.user(u)),
        })
    }

    /// Calls `f` for every grant that can apply to the subject, in decision order.
    #[inline]
    fn visit<F>(&self, subj: &Resolved<'_>, overlay: Option<&Overlay>, f: &mut F)
    where
        F: FnMut(&CompactGrant, &PlanEntry, GrantLevel),
    {
        let catalog = &*self.catalog;
        let kept = |g: &CompactGrant| overlay.is_none_or(|o| !o.removes(g));
        let added = |user_level: bool| {
            overlay
                .into_iter()
                .flat_map(move |o| o.added_at(user_level))
        };
        let direct = [
            (
                subj.user.map_or(&[][..], |u| &u.grants[..]),
                GrantLevel::User,
                true,
            ),
            (&subj.node.grants[..], GrantLevel::Account, false),
        ];
        // Both slices first, so that the misses of a cold account's grants overlap.
        touch(direct[0].0);
        touch(direct[1].0);
        for (grants, level, user_level) in direct {
            for g in grants.iter().filter(|g| kept(g)).chain(added(user_level)) {
                if let Some(plan) = catalog.plan(g.plan) {
                    f(g, plan, level);
                }
            }
        }
        if !catalog.any_inherit {
            return;
        }
        let mut seen = [""; MAX_ANCESTOR_DEPTH];
        let mut depth = 0;
        let mut current = subj.node.parent.as_deref();
        while let Some(parent) = current {
            if depth == MAX_ANCESTOR_DEPTH
                || parent == subj.tenant_id
                || seen[..depth].contains(&parent)
            {
                break;
            }
            let Some(node) = self.node(parent) else {
                break;
            };
            seen[depth] = parent;
            depth += 1;
            let level = GrantLevel::Ancestor { depth: depth as u8 };
            touch(&node.grants);
            for g in node.grants.iter() {
                if let Some(plan) = catalog.plan(g.plan).filter(|p| p.inherit) {
                    f(g, plan, level);
                }
            }
            current = node.parent.as_deref();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_feature(
        &self,
        subj: &Resolved<'_>,
        feature: u32,
        attributes: Option<&Map<String, Value>>,
        requested: Option<u64>,
        at: i64,
        overlay: Option<&Overlay>,
        mode: MeterMode<'_>,
    ) -> Verdict {
        self.eval_feature_with(subj, feature, attributes, requested, at, overlay, mode)
    }

    /// The relevant grants of one feature folded; `None` when its flag is off for `attributes`.
    #[inline]
    fn fold(
        &self,
        subj: &Resolved<'_>,
        feature: u32,
        attributes: Option<&Map<String, Value>>,
        at: i64,
        overlay: Option<&Overlay>,
    ) -> Option<Acc> {
        let catalog = &*self.catalog;
        let entry = &catalog.features[feature as usize];
        if let Some(flag) = &entry.flag
            && !flag.evaluate(attributes)
        {
            return None;
        }
        let mut acc = Acc::new(entry.merge);
        self.visit(subj, overlay, &mut |g, plan, level| {
            let Some(value) = plan.allocation(feature) else {
                return;
            };
            acc.next = acc.next.min(g.next_change_after(at));
            let by = DecidedBy {
                grant_id: Some(g.id),
                plan_id: plan.id,
                level,
            };
            match g.status(at) {
                GrantStatus::Active => acc.active(value, by),
                GrantStatus::Expired => {
                    acc.expired.get_or_insert(by);
                }
                GrantStatus::Revoked => {
                    acc.revoked.get_or_insert(by);
                }
                GrantStatus::Scheduled => {
                    acc.scheduled.get_or_insert(by);
                }
            }
        });
        for &slot in &catalog.targeted {
            let Some(plan) = catalog.plan(slot) else {
                continue;
            };
            let Some(value) = plan.allocation(feature) else {
                continue;
            };
            if plan
                .targeting
                .as_ref()
                .is_some_and(|t| t.evaluate(attributes))
            {
                let by = DecidedBy {
                    grant_id: None,
                    plan_id: plan.id,
                    level: GrantLevel::Targeting,
                };
                acc.active_as(value, by, plan.targets_anyone);
            }
        }
        Some(acc)
    }

    /// [`Self::eval_feature`], a metered feature weighed against the meter `mode` says.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn eval_feature_with(
        &self,
        subj: &Resolved<'_>,
        feature: u32,
        attributes: Option<&Map<String, Value>>,
        requested: Option<u64>,
        at: i64,
        overlay: Option<&Overlay>,
        mode: MeterMode<'_>,
    ) -> Verdict {
        let Some(acc) = self.fold(subj, feature, attributes, at, overlay) else {
            return Verdict {
                feature: Some(feature),
                ..Verdict::deny(Justification::FeatureFlagOff)
            };
        };
        let Some((id, spec)) = self.catalog.features[feature as usize].meter else {
            return acc.finish(feature, requested);
        };
        let owner = self.meter_owner_of(subj, feature, &acc, at);
        let state = match (mode, owner.user) {
            (MeterMode::Indexed, Some(user)) => user.meter(id),
            (MeterMode::Indexed, None) => owner.node.meter(id),
            (MeterMode::Given(state), _) => state,
            (MeterMode::Past(past), user) => {
                match past.get(owner.tenant_id, user.map(|u| &*u.user), id) {
                    Some(PastMeter::Known(state)) => state.as_ref(),
                    // Never a balance that may be wrong: the answer says it is not known.
                    Some(PastMeter::Unknown) | None => {
                        return past::history_unknown(acc.finish(feature, None), &owner);
                    }
                }
            }
        };
        // What the owner is issued for a period starting at `t` (a read across resets).
        let issued = |t: DateTime<Utc>| {
            let t = t.timestamp_micros();
            if owner.user.is_some() {
                self.fold(subj, feature, None, t, overlay)
                    .map_or(Limit::Finite(0), |acc| limit_of(acc.user_own))
            } else if owner.pool.is_some() {
                let pool = Resolved {
                    tenant_id: owner.tenant_id,
                    node: owner.node,
                    user: None,
                };
                self.own_allowance(&pool, feature, t, None)
            } else {
                self.own_allowance(subj, feature, t, overlay)
            }
        };
        // The allocation is issued per period, so the request is weighed against the
        // balance, not the allocation.
        metered(
            acc.finish(feature, None),
            &owner,
            state,
            &spec,
            requested,
            at,
            &issued,
        )
    }

    /// The meter a subject draws on (README "Metering"): its user's own when the user's own
    /// grants allocate the feature (`user_own`); else the account's own when its own grants
    /// allocate it (`own`) or no ancestor's inherited grant does; else the pool of the
    /// nearest ancestor whose inherited grant does (`pool`, its depth), issued that
    /// ancestor's own allowance.
    fn meter_owner_of<'s>(
        &'s self,
        subj: &Resolved<'s>,
        feature: u32,
        acc: &Acc,
        at: i64,
    ) -> MeterOwner<'s> {
        if let (Some(user), Some(allocation)) = (subj.user, acc.user_own) {
            return MeterOwner {
                tenant_id: subj.tenant_id,
                node: subj.node,
                user: Some(user),
                allowance: limit_of(Some(allocation)),
                pool: None,
            };
        }
        let (own, pool) = (acc.own, acc.pool);
        if let (None, Some(depth)) = (own, pool)
            && let Some((tenant_id, node)) = self.ancestor_node(subj, depth)
        {
            let owner = Resolved {
                tenant_id,
                node,
                user: None,
            };
            return MeterOwner {
                tenant_id,
                node,
                user: None,
                allowance: self.own_allowance(&owner, feature, at, None),
                pool: Some(depth),
            };
        }
        MeterOwner {
            tenant_id: subj.tenant_id,
            node: subj.node,
            user: None,
            allowance: limit_of(own),
            pool: None,
        }
    }

    /// The ancestor `depth` levels up (1 = the parent), as `visit` reaches it.
    fn ancestor_node<'s>(
        &'s self,
        subj: &Resolved<'s>,
        depth: u8,
    ) -> Option<(&'s str, &'s TenantNode)> {
        let mut id = subj.node.parent.as_deref()?;
        let mut node = self.node(id)?;
        for _ in 1..depth {
            id = node.parent.as_deref()?;
            node = self.node(id)?;
        }
        Some((id, node))
    }

    /// What the account's own grants (not inherited ones) allocate a metered feature per
    /// period, targeting read without attributes (they are a check's, not an account's).
    fn own_allowance(
        &self,
        subj: &Resolved<'_>,
        feature: u32,
        at: i64,
        overlay: Option<&Overlay>,
    ) -> Limit {
        self.fold(subj, feature, None, at, overlay)
            .map_or(Limit::Finite(0), |acc| limit_of(acc.own))
    }

    /// The plan allowance a metered feature issues each period to a meter at `at`: with
    /// `user_id`, the merge of that user's own active grants allocating it (its own meter);
    /// else the merge of the account's own active grants allocating it (inherited grants
    /// are their ancestor's pool, not this meter's; plans reached by targeting alone read
    /// without attributes). `Finite(0)` without one. Pass the meter's owner
    /// ([`Self::meter_owner`]).
    pub fn issued_allowance(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        at: DateTime<Utc>,
    ) -> Limit {
        let subject = Subject {
            user_id,
            ..Subject::account(tenant_id)
        };
        let (Some(subj), Some(&f)) = (
            self.resolve(&subject),
            self.catalog.feature_by_key.get(feature_key),
        ) else {
            return Limit::Finite(0);
        };
        let at = at.timestamp_micros();
        if user_id.is_some() {
            return self
                .fold(&subj, f, None, at, None)
                .map_or(Limit::Finite(0), |acc| limit_of(acc.user_own));
        }
        self.own_allowance(&subj, f, at, None)
    }

    /// Whose meter of a metered feature `tenant_id` (and `user_id`, when given) draws on at
    /// `at`: the user's own (`(tenant_id, Some(user))`) when the user's own grants allocate
    /// the feature; else the account itself when its own grants allocate it; else the nearest
    /// ancestor whose own grant of a plan inheriting to sub-accounts does (a pool); else the
    /// account itself. `None` when the feature is not metered or the account unknown.
    pub fn meter_owner<'s>(
        &'s self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        at: DateTime<Utc>,
    ) -> Option<(&'s str, Option<&'s str>)> {
        let subj = self.resolve(&Subject {
            user_id,
            ..Subject::account(tenant_id)
        })?;
        let &f = self.catalog.feature_by_key.get(feature_key)?;
        self.catalog.features[f as usize].meter?;
        let at = at.timestamp_micros();
        Some(match self.fold(&subj, f, None, at, None) {
            Some(acc) => {
                let owner = self.meter_owner_of(&subj, f, &acc, at);
                (owner.tenant_id, owner.user.map(|u| &*u.user))
            }
            None => (subj.tenant_id, None),
        })
    }

    /// A metered feature's check for an account (and its user, when given) against `state`,
    /// the meter it draws on ([`Self::meter_owner`]'s) read under its lock, newer than the
    /// index's: what a consumption decides on. `None` when the feature is not metered or the
    /// account unknown.
    pub fn meter_decision(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        state: Option<&MeterState>,
        requested: Option<u64>,
        at: DateTime<Utc>,
    ) -> Option<Decision> {
        let subj = self.resolve(&Subject {
            user_id,
            ..Subject::account(tenant_id)
        })?;
        let &f = self.catalog.feature_by_key.get(feature_key)?;
        self.catalog.features[f as usize].meter?;
        let at = at.timestamp_micros();
        let v =
            self.eval_feature_with(&subj, f, None, requested, at, None, MeterMode::Given(state));
        Some(v.into_decision(self.revision))
    }

    /// A metered feature's check for an account (and its user, when given; no attributes)
    /// against the meter the index holds for it (the user's own, the account's or its
    /// pool's). `None` when the feature is not metered or the account unknown.
    pub fn meter_check(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_key: &str,
        at: DateTime<Utc>,
    ) -> Option<Decision> {
        let subj = self.resolve(&Subject {
            user_id,
            ..Subject::account(tenant_id)
        })?;
        let &f = self.catalog.feature_by_key.get(feature_key)?;
        self.catalog.features[f as usize].meter?;
        let at = at.timestamp_micros();
        let v = self.eval_feature_with(&subj, f, None, None, at, None, MeterMode::Indexed);
        Some(v.into_decision(self.revision))
    }

    /// A meter as the index holds it: the account's own (`user_id` `None`) or one of its
    /// users' own (`None`: never drawn on or credited, or no such account). A sub-account
    /// drawing on a pool has none: ask for [`Self::meter_owner`]'s.
    pub fn meter(
        &self,
        tenant_id: &str,
        user_id: Option<&str>,
        feature_id: Uuid,
    ) -> Option<&MeterState> {
        let node = self.node(tenant_id)?;
        match user_id {
            Some(user) => node.user(user)?.meter(feature_id),
            None => node.meter(feature_id),
        }
    }

    /// The users of an account holding a meter of their own (of any feature), with them.
    pub fn user_meters(
        &self,
        tenant_id: &str,
    ) -> impl Iterator<Item = (&str, &[(Uuid, MeterState)])> + '_ {
        self.node(tenant_id)
            .map(TenantNode::user_lists)
            .unwrap_or(&[])
            .iter()
            .filter(|u| u.meters.is_some())
            .map(|u| (&*u.user, u.meter_lists()))
    }

    /// Frontegg's permission rule: held by the subject, then entitled through any linked
    /// feature (first by key decides), or allowed if linked to none.
    fn eval_permission(
        &self,
        subj: &Resolved<'_>,
        subject: &Subject<'_>,
        key: &str,
        at: i64,
        mode: MeterMode<'_>,
    ) -> Verdict {
        if !crate::permission::holds(subject.permissions, key) {
            return Verdict::deny(Justification::MissingPermission);
        }
        let Some(features) = self.catalog.permissions.get(key) else {
            return Verdict::allow(AllowReason::UngatedPermission);
        };
        let (mut entitled, mut refused, mut next) = (None, None, NEVER);
        for &f in features.iter() {
            let v = self.eval_feature(subj, f, subject.attributes, None, at, None, mode);
            next = next.min(v.next);
            let slot = if v.result {
                &mut entitled
            } else {
                &mut refused
            };
            slot.get_or_insert(v);
        }
        let mut v = entitled
            .or(refused)
            .unwrap_or_else(|| Verdict::allow(AllowReason::UngatedPermission));
        // Any linked feature changing state may change the answer.
        v.next = next;
        v
    }

    /// The most specific route matching a request (allocation-free).
    fn find_route(&self, method: &str, path: &str) -> Option<&CompiledRoute> {
        let mut split = [""; MAX_SPLIT_SEGMENTS];
        let mut n = 0;
        let mut overflow = false;
        for segment in request_segments(path) {
            if n == MAX_SPLIT_SEGMENTS {
                overflow = true;
                break;
            }
            split[n] = segment;
            n += 1;
        }
        let routes = &self.catalog.routes;
        if overflow {
            // Very long paths: match each route on the raw path instead.
            routes
                .iter()
                .find(|r| r.method_matches(method) && r.pattern.matches(path))
        } else {
            routes
                .iter()
                .find(|r| r.method_matches(method) && r.pattern.matches_segments(&split[..n]))
        }
    }

    /// The id of the route a route check for `method` and `path` is decided by (Explain).
    pub fn matched_route(&self, method: &str, path: &str) -> Option<Uuid> {
        self.find_route(method, path).map(|r| r.id)
    }

    fn eval_route(
        &self,
        subj: &Resolved<'_>,
        subject: &Subject<'_>,
        method: &str,
        path: &str,
        at: i64,
        mode: MeterMode<'_>,
    ) -> Verdict {
        let Some(route) = self.find_route(method, path) else {
            return Verdict::deny(Justification::MissingRoute);
        };
        match &route.policy {
            CompiledPolicy::Allow => Verdict::allow(AllowReason::RouteAllow),
            CompiledPolicy::Deny => Verdict::deny(Justification::RouteDenied),
            CompiledPolicy::Require {
                features,
                permissions,
            } => {
                // Required features first, then permissions; the first requirement met
                // through a grant names the decider (and its feature).
                let mut ok = Verdict::allow(AllowReason::RouteRequirementsMet);
                let met = |ok: &mut Verdict, v: Verdict| {
                    if ok.decided_by.is_none() && v.decided_by.is_some() {
                        ok.decided_by = v.decided_by;
                        ok.feature = v.feature;
                    }
                    ok.next = ok.next.min(v.next);
                };
                for f in features.iter() {
                    let v = match f {
                        Some(f) => {
                            self.eval_feature(subj, *f, subject.attributes, None, at, None, mode)
                        }
                        None => Verdict::deny(Justification::MissingFeature),
                    };
                    if !v.result {
                        return v;
                    }
                    met(&mut ok, v);
                }
                for p in permissions.iter() {
                    let v = self.eval_permission(subj, subject, p, at, mode);
                    if !v.result {
                        return v;
                    }
                    met(&mut ok, v);
                }
                ok
            }
        }
    }

    fn eval(
        &self,
        subj: &Resolved<'_>,
        request: &CheckRequest<'_>,
        at: i64,
        mode: MeterMode<'_>,
    ) -> Verdict {
        let subject = &request.subject;
        match request.target {
            Target::Feature(key) => match self.catalog.feature_by_key.get(key) {
                Some(&f) => self.eval_feature(
                    subj,
                    f,
                    subject.attributes,
                    request.requested,
                    at,
                    None,
                    mode,
                ),
                None => Verdict::deny(Justification::MissingFeature),
            },
            Target::Permission(key) => self.eval_permission(subj, subject, key, at, mode),
            Target::Route { method, path } => {
                self.eval_route(subj, subject, method, path, at, mode)
            }
        }
    }

    /// The hot path: no allocation, no IO.
    pub fn check(&self, request: &CheckRequest<'_>, at: DateTime<Utc>) -> Decision {
        let at = at.timestamp_micros();
        let verdict = match self.resolve(&request.subject) {
            Some(subj) => self.eval(&subj, request, at, MeterMode::Indexed),
            None => Verdict::deny(Justification::TenantNotFound),
        };
        verdict.into_decision(self.revision)
    }

    /// Many checks against one snapshot, answers in request order.
    pub fn check_batch(&self, requests: &[CheckRequest<'_>], at: DateTime<Utc>) -> Vec<Decision> {
        requests.iter().map(|r| self.check(r, at)).collect()
    }

    /// Every feature the subject is entitled to, by key, with its effective allocation.
    pub fn account_entitlements(
        &self,
        subject: &Subject<'_>,
        at: DateTime<Utc>,
    ) -> Result<Vec<EffectiveFeature>, IndexError> {
        let subj = self
            .resolve(subject)
            .ok_or_else(|| IndexError::not_found("tenant", subject.tenant_id))?;
        let at = at.timestamp_micros();
        Ok(self
            .entitled(&subj, subject, at, None, MeterMode::Indexed)
            .map(|(f, v)| EffectiveFeature {
                key: self.catalog.features[f as usize].key.to_string(),
                allocation: v.allocation.unwrap_or(Allocation::Bool(true)),
                decided_by: v.decided_by,
                next_change_at: micros_to_time(v.next),
            })
            .collect())
    }

    fn entitled<'s>(
        &'s self,
        subj: &'s Resolved<'s>,
        subject: &'s Subject<'s>,
        at: i64,
        overlay: Option<&'s Overlay>,
        mode: MeterMode<'s>,
    ) -> impl Iterator<Item = (u32, Verdict)> + 's {
        (0..self.catalog.features.len() as u32).filter_map(move |f| {
            let v = self.eval_feature(subj, f, subject.attributes, None, at, overlay, mode);
            v.result.then_some((f, v))
        })
    }

    /// Every grant a check for `subject` looks at, in decision order, with its status at `at`,
    /// whether its plan targets the subject and what its plan allocates `feature_key`
    /// (Explain). Allocates: not the hot path.
    pub fn explain_grants(
        &self,
        subject: &Subject<'_>,
        feature_key: Option<&str>,
        at: DateTime<Utc>,
    ) -> Vec<ExplainedGrant> {
        let Some(subj) = self.resolve(subject) else {
            return Vec::new();
        };
        let feature = feature_key.and_then(|k| self.catalog.feature_by_key.get(k).copied());
        let at = at.timestamp_micros();
        let mut out = Vec::new();
        self.visit(&subj, None, &mut |g, plan, level| {
            out.push(ExplainedGrant {
                grant_id: g.id,
                plan_id: plan.id,
                level,
                status: g.status(at),
                targeted: plan
                    .targeting
                    .as_ref()
                    .is_some_and(|t| t.evaluate(subject.attributes)),
                allocation: feature.and_then(|f| plan.allocation(f)),
            });
        });
        out
    }

    /// The flag outcome of a feature for these attributes; `None` when it has no flag (or an
    /// always-on one).
    pub fn flag_on(
        &self,
        feature_key: &str,
        attributes: Option<&Map<String, Value>>,
    ) -> Option<bool> {
        let &f = self.catalog.feature_by_key.get(feature_key)?;
        self.catalog.features[f as usize]
            .flag
            .as_ref()
            .map(|flag| flag.evaluate(attributes))
    }

    /// Feature keys linked to a permission.
    pub fn linked_features(&self, permission: &str) -> Vec<String> {
        self.catalog
            .permissions
            .get(permission)
            .map(|fs| {
                fs.iter()
                    .map(|&f| self.catalog.features[f as usize].key.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The catalog's features as written, each with its flag if it has one (in no particular
    /// order): what OFREP's catalog reads need on the agent and in the SDK.
    pub fn catalog_features(&self) -> impl Iterator<Item = (&Feature, Option<&FeatureFlag>)> {
        let raw = &*self.catalog.raw;
        raw.features.iter().map(|f| (f, raw.flags.get(&f.key)))
    }

    /// One feature of the catalog by key, with its flag if it has one.
    pub fn catalog_feature(&self, key: &str) -> Option<(&Feature, Option<&FeatureFlag>)> {
        let &f = self.catalog.feature_by_key.get(key)?;
        let raw = &*self.catalog.raw;
        raw.features
            .get(f as usize)
            .map(|feature| (feature, raw.flags.get(&feature.key)))
    }

    /// Approximate heap held by tenants and grants (what grows with accounts).
    pub fn memory_estimate(&self) -> MemoryEstimate {
        // Each `Arc` allocation carries a 16-byte header (two counters).
        const ARC: usize = 16;
        let mut bytes = self.shards.capacity() * size_of::<Arc<Shard>>();
        for shard in &self.shards {
            // hashbrown: one control byte per bucket plus the entry.
            bytes += ARC + shard.capacity() * (size_of::<(TenantKey, TenantNode)>() + 1);
            for (key, node) in shard.iter() {
                // The interned ID, shared with children's parent pointers.
                bytes += ARC + key.len();
                bytes += ARC + node.grants.len() * size_of::<CompactGrant>();
                if let Some(users) = &node.users {
                    bytes += ARC + users.len() * size_of::<UserGrants>();
                    for u in users.iter() {
                        bytes += u.user.len() + ARC + u.grants.len() * size_of::<CompactGrant>();
                    }
                }
            }
        }
        MemoryEstimate {
            tenants: self.tenant_count(),
            grants: self.grants,
            bytes,
        }
    }
}

/// The published snapshot readers load; a writer stores each new one. Loading is a read lock
/// held for one `Arc` clone, so readers never wait on a rebuild.
#[derive(Debug)]
pub struct SharedIndex {
    current: RwLock<Arc<EntitlementIndex>>,
}

impl SharedIndex {
    pub fn new(index: Arc<EntitlementIndex>) -> Self {
        Self {
            current: RwLock::new(index),
        }
    }

    pub fn load(&self) -> Arc<EntitlementIndex> {
        // A poisoned lock still holds a complete snapshot (stores are a single assignment).
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Publishes `index` unless a newer revision is already published.
    pub fn store(&self, index: Arc<EntitlementIndex>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if index.revision >= current.revision {
            *current = index;
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
