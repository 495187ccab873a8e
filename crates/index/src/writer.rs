//! Incremental maintenance of the index: the single writer applies changes to a working copy
//! and publishes a new `Arc` snapshot; readers keep whatever snapshot they loaded.
//!
//! Cost per published batch (documented, measured by the bench for the grant case):
//! - grant upsert/delete, tenant upsert/remove: the touched tenants are staged as editable
//!   drafts (their grant lists copied once per batch), then written back as exact-size slices;
//!   each touched shard's table (at most ~64 entries, shallow: shards double as tenants grow)
//!   is copied once; then one `Vec` of one `Arc` per shard for the new snapshot. A batch is
//!   O(touched tenants' grants + batch + shards);
//! - feature, plan, flag or route change: rebuild the catalog once per batch — O(features +
//!   plan features + flags + routes), independent of the number of grants, because grants refer
//!   to plans through stable slots.

use std::collections::BTreeMap;
use std::mem::size_of;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::index::{
    Catalog, CompactGrant, EntitlementIndex, MemoryEstimate, TenantKey, TenantNode, UserGrants,
};
use super::metering::MeterState;
use super::model::{Feature, FeatureFlag, Grant, Plan, Route};
use rustc_hash::FxHashMap;

/// One write, as the storage layer (or the change log of another replica) reports it.
/// Serializable: the storage layer records committed changes in its change log as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IndexChange {
    UpsertFeature(Feature),
    DeleteFeature {
        id: Uuid,
    },
    UpsertPlan(Plan),
    DeletePlan {
        id: Uuid,
    },
    UpsertFlag(FeatureFlag),
    DeleteFlag {
        id: Uuid,
    },
    UpsertRoute(Route),
    DeleteRoute {
        id: Uuid,
    },
    /// Insert or replace by id (a revocation is an upsert with `revoked_at` set).
    UpsertGrant(Grant),
    DeleteGrant {
        id: Uuid,
    },
    /// A tenant and its parent, from the tenant change feed.
    UpsertTenant {
        id: String,
        parent: Option<String>,
    },
    /// Drops the tenant and any grants still indexed under it.
    RemoveTenant {
        id: String,
    },
    /// A meter of a metered feature, as its last write left it: the account's own, or with
    /// `user_id` that user's own (README "Per-user meters").
    UpsertMeter {
        tenant_id: String,
        user_id: Option<String>,
        feature_id: Uuid,
        state: Box<MeterState>,
    },
}

/// Everything needed to build an index from scratch (at start, from storage).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub features: Vec<Feature>,
    pub plans: Vec<Plan>,
    pub flags: Vec<FeatureFlag>,
    pub routes: Vec<Route>,
    /// `(tenant, parent)`.
    pub tenants: Vec<(String, Option<String>)>,
    pub grants: Vec<Grant>,
    /// `(account, feature id, meter)`.
    pub meters: Vec<(String, Uuid, MeterState)>,
    /// Users' own meters: `(account, user, feature id, meter)`.
    pub user_meters: Vec<(String, String, Uuid, MeterState)>,
}

/// The single writer. Not `Sync`-shared: the service owns it behind its write path.
#[derive(Debug)]
pub struct IndexWriter {
    pub(crate) features: BTreeMap<String, Feature>,
    pub(crate) plans: FxHashMap<Uuid, Plan>,
    pub(crate) flags: BTreeMap<String, FeatureFlag>,
    pub(crate) routes: BTreeMap<Uuid, Route>,
    /// Plan id → stable slot; never shrinks, so grants' `u32` plan refs stay valid.
    pub(crate) plan_slots: FxHashMap<Uuid, u32>,
    /// Grant id → tenant (the interned ID), to find a grant on update or delete.
    locator: FxHashMap<Uuid, TenantKey>,
    /// Tenants touched by the batch in progress.
    drafts: FxHashMap<TenantKey, Draft>,
    working: EntitlementIndex,
    published: Arc<EntitlementIndex>,
    catalog_dirty: bool,
}

/// A tenant node being edited: plain `Vec`s, unsorted until written back.
#[derive(Debug, Default)]
struct Draft {
    old_grants: usize,
    parent: Option<TenantKey>,
    grants: Vec<CompactGrant>,
    users: BTreeMap<Box<str>, Vec<CompactGrant>>,
    meters: BTreeMap<Uuid, MeterState>,
    user_meters: BTreeMap<Box<str>, BTreeMap<Uuid, MeterState>>,
    removed: bool,
}

impl Draft {
    fn load(node: &TenantNode) -> Self {
        Draft {
            old_grants: node.grant_count(),
            parent: node.parent.clone(),
            grants: node.grants.to_vec(),
            users: node
                .user_lists()
                .iter()
                .map(|u| (u.user.clone(), u.grants.to_vec()))
                .collect(),
            meters: node.meter_lists().iter().cloned().collect(),
            user_meters: node
                .user_lists()
                .iter()
                .filter(|u| u.meters.is_some())
                .map(|u| (u.user.clone(), u.meter_lists().iter().cloned().collect()))
                .collect(),
            removed: false,
        }
    }

    fn grant_count(&self) -> usize {
        self.grants.len() + self.users.values().map(Vec::len).sum::<usize>()
    }

    fn into_node(mut self) -> TenantNode {
        self.grants.sort_unstable_by_key(|g| g.id);
        // A user is listed while it holds a grant or a meter of its own.
        let mut user_meters = self.user_meters;
        for user in user_meters.keys() {
            if !self.users.contains_key(user) {
                self.users.insert(user.clone(), Vec::new());
            }
        }
        // BTreeMap order is the user-id order checks binary-search on.
        let users: Vec<UserGrants> = self
            .users
            .into_iter()
            .filter_map(|(user, mut grants)| {
                let meters: Vec<(Uuid, MeterState)> = user_meters
                    .remove(&user)
                    .map(|m| m.into_iter().collect())
                    .unwrap_or_default();
                if grants.is_empty() && meters.is_empty() {
                    return None;
                }
                grants.sort_unstable_by_key(|g| g.id);
                Some(UserGrants {
                    user,
                    grants: grants.into(),
                    meters: (!meters.is_empty()).then(|| meters.into()),
                })
            })
            .collect();
        // BTreeMap order is the feature-id order checks binary-search on.
        let meters: Vec<(Uuid, MeterState)> = self.meters.into_iter().collect();
        TenantNode {
            parent: self.parent,
            grants: self.grants.into(),
            users: (!users.is_empty()).then(|| users.into()),
            meters: (!meters.is_empty()).then(|| meters.into()),
        }
    }
}

impl Default for IndexWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexWriter {
    pub fn new() -> Self {
        let working = EntitlementIndex::empty();
        Self {
            features: BTreeMap::new(),
            plans: FxHashMap::default(),
            flags: BTreeMap::new(),
            routes: BTreeMap::new(),
            plan_slots: FxHashMap::default(),
            locator: FxHashMap::default(),
            drafts: FxHashMap::default(),
            published: Arc::new(working.clone()),
            working,
            catalog_dirty: false,
        }
    }

    /// Builds the index from a full snapshot at `revision`.
    pub fn from_snapshot(snapshot: Snapshot, revision: u64) -> Self {
        let mut writer = Self::new();
        let changes = snapshot
            .features
            .into_iter()
            .map(IndexChange::UpsertFeature)
            .chain(snapshot.plans.into_iter().map(IndexChange::UpsertPlan))
            .chain(snapshot.flags.into_iter().map(IndexChange::UpsertFlag))
            .chain(snapshot.routes.into_iter().map(IndexChange::UpsertRoute))
            .chain(
                snapshot
                    .tenants
                    .into_iter()
                    .map(|(id, parent)| IndexChange::UpsertTenant { id, parent }),
            )
            .chain(snapshot.grants.into_iter().map(IndexChange::UpsertGrant))
            .chain(
                snapshot
                    .meters
                    .into_iter()
                    .map(|(tenant_id, feature_id, state)| IndexChange::UpsertMeter {
                        tenant_id,
                        user_id: None,
                        feature_id,
                        state: Box::new(state),
                    })
                    .chain(snapshot.user_meters.into_iter().map(
                        |(tenant_id, user_id, feature_id, state)| IndexChange::UpsertMeter {
                            tenant_id,
                            user_id: Some(user_id),
                            feature_id,
                            state: Box::new(state),
                        },
                    )),
            );
        for change in changes {
            writer.apply_one(change);
        }
        writer.finish(revision);
        writer
    }

    /// Applies a batch as one new revision (`revision() + 1`) and publishes it.
    pub fn apply(
        &mut self,
        changes: impl IntoIterator<Item = IndexChange>,
    ) -> Arc<EntitlementIndex> {
        let next = self.working.revision + 1;
        self.apply_at(next, changes)
    }

    /// Takes in changes without publishing them: the next [`apply`](Self::apply) or
    /// [`apply_at`](Self::apply_at) publishes them with its own (a snapshot arriving in chunks).
    pub fn stage(&mut self, changes: impl IntoIterator<Item = IndexChange>) {
        for change in changes {
            self.apply_one(change);
        }
    }

    /// Applies a batch stamped with a revision from storage. The index revision never goes
    /// back: replaying an older batch re-applies its (idempotent) changes and keeps the revision.
    pub fn apply_at(
        &mut self,
        revision: u64,
        changes: impl IntoIterator<Item = IndexChange>,
    ) -> Arc<EntitlementIndex> {
        for change in changes {
            self.apply_one(change);
        }
        let revision = revision.max(self.working.revision);
        self.finish(revision);
        Arc::clone(&self.published)
    }

    /// Records that the next batch was written at `at` by its writer's clock (see
    /// [`EntitlementIndex::present`]).
    pub fn note_written(&mut self, at: DateTime<Utc>) {
        self.working.written_until = self.working.written_until.max(at.timestamp_micros());
    }

    /// The last published snapshot.
    pub fn current(&self) -> Arc<EntitlementIndex> {
        Arc::clone(&self.published)
    }

    pub fn revision(&self) -> u64 {
        self.published.revision()
    }

    /// Index memory plus the writer's own per-grant bookkeeping.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        let mut estimate = self.working.memory_estimate();
        estimate.bytes += self.locator.capacity() * (size_of::<(Uuid, TenantKey)>() + 1);
        estimate
    }

    fn finish(&mut self, revision: u64) {
        // Grown before the drafts go in, so new tenants are placed once (drafts of known
        // tenants make this an upper bound).
        self.working
            .reserve_tenants(self.working.tenant_count() + self.drafts.len());
        for (id, draft) in std::mem::take(&mut self.drafts) {
            self.working.grants -= draft.old_grants;
            if draft.removed {
                self.working.remove_node(&id);
            } else {
                self.working.grants += draft.grant_count();
                self.working.put_node(id, draft.into_node());
            }
        }
        if self.catalog_dirty {
            self.working.catalog = Arc::new(Catalog::build(
                &self.features,
                &self.plans,
                &self.flags,
                &self.routes,
                &self.plan_slots,
            ));
            self.catalog_dirty = false;
        }
        self.working.revision = revision;
        self.published = Arc::new(self.working.clone());
    }

    /// The interned key for a tenant ID: the existing one when the tenant (or a draft of it)
    /// is known, so parent pointers and table keys share one allocation.
    fn intern(&self, id: &str) -> TenantKey {
        if let Some((key, _)) = self.drafts.get_key_value(id) {
            return key.clone();
        }
        match self.working.key_of(id) {
            Some(key) => key.clone(),
            None => TenantKey::from(id),
        }
    }

    /// The batch's editable copy of a tenant, created (empty) if the tenant is new.
    fn draft(&mut self, id: TenantKey) -> &mut Draft {
        let working = &self.working;
        self.drafts
            .entry(id)
            .or_insert_with_key(|id| working.node(id).map(Draft::load).unwrap_or_default())
    }

    fn slot(&mut self, plan_id: Uuid) -> u32 {
        let next = self.plan_slots.len() as u32;
        let slot = *self.plan_slots.entry(plan_id).or_insert(next);
        if slot == next {
            // A new slot must reach the catalog even if the plan itself is not known yet.
            self.catalog_dirty = true;
        }
        slot
    }

    fn apply_one(&mut self, change: IndexChange) {
        match change {
            IndexChange::UpsertFeature(feature) => {
                // A renamed key leaves its old entry behind unless removed by id.
                self.features.retain(|_, f| f.id != feature.id);
                self.features.insert(feature.key.clone(), feature);
                self.catalog_dirty = true;
            }
            IndexChange::DeleteFeature { id } => {
                self.features.retain(|_, f| f.id != id);
                self.catalog_dirty = true;
            }
            IndexChange::UpsertPlan(plan) => {
                self.slot(plan.id);
                self.plans.insert(plan.id, plan);
                self.catalog_dirty = true;
            }
            IndexChange::DeletePlan { id } => {
                self.plans.remove(&id);
                self.catalog_dirty = true;
            }
            IndexChange::UpsertFlag(flag) => {
                self.flags.retain(|_, f| f.id != flag.id);
                self.flags.insert(flag.feature_key.clone(), flag);
                self.catalog_dirty = true;
            }
            IndexChange::DeleteFlag { id } => {
                self.flags.retain(|_, f| f.id != id);
                self.catalog_dirty = true;
            }
            IndexChange::UpsertRoute(route) => {
                self.routes.insert(route.id, route);
                self.catalog_dirty = true;
            }
            IndexChange::DeleteRoute { id } => {
                self.routes.remove(&id);
                self.catalog_dirty = true;
            }
            IndexChange::UpsertGrant(grant) => self.upsert_grant(&grant),
            IndexChange::DeleteGrant { id } => {
                self.remove_grant(id);
            }
            IndexChange::UpsertTenant { id, parent } => {
                let parent = parent.map(|p| self.intern(&p));
                let key = self.intern(&id);
                let draft = self.draft(key);
                draft.parent = parent;
                draft.removed = false;
            }
            IndexChange::RemoveTenant { id } => {
                let key = self.intern(&id);
                let draft = self.draft(key);
                let grants = std::mem::take(&mut draft.grants);
                let users = std::mem::take(&mut draft.users);
                draft.meters.clear();
                draft.user_meters.clear();
                draft.parent = None;
                draft.removed = true;
                for g in grants.iter().chain(users.values().flatten()) {
                    self.locator.remove(&g.id);
                }
            }
            IndexChange::UpsertMeter {
                tenant_id,
                user_id,
                feature_id,
                state,
            } => {
                let key = self.intern(&tenant_id);
                let draft = self.draft(key);
                draft.removed = false;
                match user_id {
                    None => {
                        draft.meters.insert(feature_id, *state);
                    }
                    Some(user) => {
                        draft
                            .user_meters
                            .entry(user.into())
                            .or_default()
                            .insert(feature_id, *state);
                    }
                }
            }
        }
    }

    fn upsert_grant(&mut self, grant: &Grant) {
        self.remove_grant(grant.id);
        let compact = CompactGrant::new(grant, self.slot(grant.plan_id));
        let key = self.intern(&grant.tenant_id);
        let draft = self.draft(key.clone());
        draft.removed = false;
        match grant.user_id.as_deref() {
            None => draft.grants.push(compact),
            Some(user) => match draft.users.get_mut(user) {
                Some(grants) => grants.push(compact),
                None => {
                    draft.users.insert(user.into(), vec![compact]);
                }
            },
        }
        self.locator.insert(grant.id, key);
    }

    fn remove_grant(&mut self, id: Uuid) {
        let Some(tenant) = self.locator.remove(&id) else {
            return;
        };
        let draft = self.draft(tenant);
        draft.grants.retain(|g| g.id != id);
        for grants in draft.users.values_mut() {
            grants.retain(|g| g.id != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{CheckRequest, Justification, Subject, Target};
    use crate::model::{GrantSource, PlanFeature};
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::Value;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + h * 3600, 0).unwrap()
    }

    fn feature(key: &str) -> Feature {
        Feature {
            id: Uuid::new_v4(),
            key: key.into(),
            name: key.into(),
            description: None,
            metadata: Value::Null,
            permissions: vec![],
            allocation_type: Default::default(),
            merge_policy: Default::default(),
            metering: None,
        }
    }

    fn plan(key: &str, features: &[&str]) -> Plan {
        Plan {
            id: Uuid::new_v4(),
            key: key.into(),
            name: key.into(),
            description: None,
            metadata: Value::Null,
            features: features.iter().map(|f| PlanFeature::bare(*f)).collect(),
            default_time_limitation_days: None,
            assign_on_signup: false,
            rules: vec![],
            default_treatment: Default::default(),
            inherit_to_sub_accounts: false,
        }
    }

    fn grant(plan: Uuid, tenant: &str, user: Option<&str>) -> Grant {
        Grant {
            id: Uuid::now_v7(),
            plan_id: plan,
            tenant_id: tenant.into(),
            user_id: user.map(Into::into),
            starts_at: t(0),
            expires_at: None,
            revoked_at: None,
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

    fn check(index: &EntitlementIndex, tenant: &str, key: &str) -> bool {
        index
            .check(
                &CheckRequest {
                    subject: Subject::account(tenant),
                    target: Target::Feature(key),
                    requested: None,
                },
                t(1),
            )
            .result
    }

    #[test]
    fn writes_are_visible_to_the_next_snapshot_only() {
        let tenant = "acme";
        let p = plan("pro", &["sso"]);
        let mut w = IndexWriter::from_snapshot(
            Snapshot {
                features: vec![feature("sso")],
                plans: vec![p.clone()],
                tenants: vec![(tenant.into(), None)],
                ..Snapshot::default()
            },
            7,
        );
        let before = w.current();
        assert_eq!(before.revision(), 7);
        assert!(!check(&before, tenant, "sso"));

        let g = grant(p.id, tenant, None);
        let after = w.apply([IndexChange::UpsertGrant(g.clone())]);
        assert_eq!(after.revision(), 8);
        assert!(check(&after, tenant, "sso"));
        assert!(
            !check(&before, tenant, "sso"),
            "old snapshot must not change"
        );

        let mut revoked = g.clone();
        revoked.revoked_at = Some(t(0));
        let r = w.apply([IndexChange::UpsertGrant(revoked)]);
        assert_eq!(r.grant_count(), 1);
        let tid = tenant.to_string();
        let d = r.check(
            &CheckRequest {
                subject: Subject::account(&tid),
                target: Target::Feature("sso"),
                requested: None,
            },
            t(1),
        );
        assert_eq!(d.justification, Some(Justification::PlanRevoked));

        let d = w.apply([IndexChange::DeleteGrant { id: g.id }]);
        assert_eq!(d.grant_count(), 0);
        assert!(!check(&d, tenant, "sso"));

        // revisions from storage never go backwards
        assert_eq!(w.apply_at(5, []).revision(), 10);
        assert_eq!(w.apply_at(42, []).revision(), 42);
    }

    #[test]
    fn shards_grow_with_tenants_and_keep_every_tenant_and_old_snapshot() {
        let p = plan("pro", &["sso"]);
        let name = |i: usize| format!("acct-{i}");
        let mut w = IndexWriter::from_snapshot(
            Snapshot {
                features: vec![feature("sso")],
                plans: vec![p.clone()],
                tenants: (0..1_000).map(|i| (name(i), None)).collect(),
                ..Snapshot::default()
            },
            1,
        );
        let small = w.current();
        let shards_at_start = small.shards.len();
        // Enough new tenants (each with a grant) to force at least two doublings, in batches.
        for batch in 0..10 {
            w.apply(
                (1_000 + batch * 7_000..1_000 + (batch + 1) * 7_000).flat_map(|i| {
                    [
                        IndexChange::UpsertTenant {
                            id: name(i),
                            parent: Some(name(i % 1_000)),
                        },
                        IndexChange::UpsertGrant(grant(p.id, &name(i), None)),
                    ]
                }),
            );
        }
        let large = w.current();
        assert_eq!(large.tenant_count(), 71_000);
        assert!(
            large.shards.len() >= 4 * shards_at_start,
            "{} shards for 71,000 tenants",
            large.shards.len()
        );
        assert!(
            large
                .shards
                .iter()
                .all(|s| s.len() <= 2 * crate::index::MAX_TENANTS_PER_SHARD)
        );
        for i in (0..71_000).step_by(97) {
            assert!(large.contains_tenant(&name(i)), "{} lost", name(i));
            assert_eq!(check(&large, &name(i), "sso"), i >= 1_000, "{}", name(i));
            if i >= 1_000 {
                assert_eq!(large.parent_of(&name(i)), Some(name(i % 1_000).as_str()));
            }
        }
        // The snapshot taken before the growth still answers as it did.
        assert_eq!(small.tenant_count(), 1_000);
        assert!(small.contains_tenant(&name(999)) && !small.contains_tenant(&name(1_000)));

        let removed = w.apply([IndexChange::RemoveTenant { id: name(5_000) }]);
        assert_eq!(removed.tenant_count(), 70_999);
        assert!(!removed.contains_tenant(&name(5_000)));
        assert!(removed.contains_tenant(&name(5_001)));
    }

    #[test]
    fn moving_a_grant_between_levels_and_tenants() {
        let (a, b) = ("a", "b");
        let p = plan("pro", &["sso"]);
        let mut w = IndexWriter::new();
        w.apply([
            IndexChange::UpsertFeature(feature("sso")),
            IndexChange::UpsertPlan(p.clone()),
            IndexChange::UpsertTenant {
                id: a.into(),
                parent: None,
            },
            IndexChange::UpsertTenant {
                id: b.into(),
                parent: None,
            },
        ]);
        let mut g = grant(p.id, a, Some("u1"));
        w.apply([IndexChange::UpsertGrant(g.clone())]);
        g.tenant_id = b.into();
        g.user_id = None;
        let idx = w.apply([IndexChange::UpsertGrant(g)]);
        assert_eq!(idx.grant_count(), 1);
        assert!(check(&idx, b, "sso"));
        assert!(!check(&idx, a, "sso"));

        let idx = w.apply([IndexChange::RemoveTenant { id: b.into() }]);
        assert_eq!(idx.grant_count(), 0);
        assert!(!idx.contains_tenant(b));
        assert_eq!(w.memory_estimate().grants, 0);
    }

    #[test]
    fn plan_changes_apply_to_existing_grants_and_deleted_plans_grant_nothing() {
        let tenant = "acme";
        let mut p = plan("pro", &["sso"]);
        let mut w = IndexWriter::new();
        let g = grant(p.id, tenant, None);
        // a grant may arrive before its plan (replicas follow a log)
        w.apply([IndexChange::UpsertGrant(g)]);
        let idx = w.apply([
            IndexChange::UpsertFeature(feature("sso")),
            IndexChange::UpsertFeature(feature("audit")),
            IndexChange::UpsertPlan(p.clone()),
        ]);
        assert!(check(&idx, tenant, "sso"));
        assert!(!check(&idx, tenant, "audit"));
        p.features.push(PlanFeature::bare("audit"));
        let idx = w.apply([IndexChange::UpsertPlan(p.clone())]);
        assert!(check(&idx, tenant, "audit"));
        let idx = w.apply([IndexChange::DeletePlan { id: p.id }]);
        assert!(!check(&idx, tenant, "sso"));
        assert_eq!(idx.grant_count(), 1);
    }

    #[test]
    fn hierarchy_changes_and_cycle_detection() {
        let (root, mid, leaf) = ("root", "mid", "leaf");
        let mut p = plan("org", &["sso"]);
        p.inherit_to_sub_accounts = true;
        let mut w = IndexWriter::new();
        let idx = w.apply([
            IndexChange::UpsertFeature(feature("sso")),
            IndexChange::UpsertPlan(p.clone()),
            IndexChange::UpsertTenant {
                id: root.into(),
                parent: None,
            },
            IndexChange::UpsertTenant {
                id: mid.into(),
                parent: Some(root.into()),
            },
            IndexChange::UpsertTenant {
                id: leaf.into(),
                parent: None,
            },
            IndexChange::UpsertGrant(grant(p.id, root, None)),
        ]);
        assert!(check(&idx, mid, "sso"));
        assert!(!check(&idx, leaf, "sso"));
        let idx = w.apply([IndexChange::UpsertTenant {
            id: leaf.into(),
            parent: Some(mid.into()),
        }]);
        assert!(check(&idx, leaf, "sso"));
        assert_eq!(idx.ancestors(leaf), vec![mid, root]);
        assert!(idx.would_create_cycle(root, leaf));
        assert!(!idx.would_create_cycle(leaf, root));
        // a cycle that slipped in is tolerated: each ancestor counts once
        let idx = w.apply([IndexChange::UpsertTenant {
            id: root.into(),
            parent: Some(leaf.into()),
        }]);
        assert!(check(&idx, leaf, "sso"));
        assert_eq!(idx.ancestors(leaf), vec![mid, root]);
    }
}
