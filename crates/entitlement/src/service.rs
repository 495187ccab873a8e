//! The service core: writes (validate → store in one transaction → commit a revision → apply
//! to this replica's index) and the tenant directory used by batch validation. Transport-free:
//! the gRPC layer decodes into these calls and encodes their results.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use tenantry_common::{db::StorageHealth, grpc::ClientChannel};
use tenantry_proto::tenant::v1::{
    BatchGetAccountsRequest, tenant_service_client::TenantServiceClient,
};
use uuid::Uuid;

use crate::clock::Clock;
use crate::domain::{
    AllocationType, DomainError, EntitlementIndex, Feature, Grant, GrantContext, GrantInput,
    GrantOrigin, GrantPatch, GrantSource, IndexChange, Plan, Route, RoutePolicy, revoke_grant,
    validate_feature, validate_flag, validate_grant_deletes, validate_grant_updates,
    validate_new_grants, validate_plan, validate_route,
};
use crate::index_handle::IndexHandle;
use crate::storage::{Catalog, EncodedChanges, FeatureDoc, FlagDoc, Result, Store, Stored};

/// Who performs automatic writes (revocations on tenant deletion, signup grants).
pub const SYSTEM_PRINCIPAL: &str = "system";

/// Reads the tenant service: which accounts exist.
#[derive(Debug, Clone)]
pub struct TenantDirectory {
    client: TenantServiceClient<ClientChannel>,
}

impl TenantDirectory {
    pub fn new(channel: ClientChannel, max_message_bytes: usize) -> Self {
        Self {
            client: TenantServiceClient::new(channel)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        }
    }

    /// The live accounts among `ids` (asked in batches of 1,000).
    pub async fn live(&self, ids: &[String]) -> Result<HashSet<String>> {
        let mut live = HashSet::new();
        for chunk in ids.chunks(1000) {
            let response = self
                .client
                .clone()
                .batch_get_accounts(BatchGetAccountsRequest {
                    tenant_ids: chunk.to_vec(),
                    missing_only: true,
                })
                .await
                .map_err(|status| match tenantry_common::grpc::caller_code(&status) {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Unknown => DomainError::Unavailable(
                        "tenant service unavailable: accounts cannot be checked; retry".into(),
                    ),
                    tonic::Code::Ok
                    | tonic::Code::InvalidArgument
                    | tonic::Code::NotFound
                    | tonic::Code::AlreadyExists
                    | tonic::Code::PermissionDenied
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::Aborted
                    | tonic::Code::OutOfRange
                    | tonic::Code::Unimplemented
                    | tonic::Code::Internal
                    | tonic::Code::DataLoss
                    | tonic::Code::Unauthenticated => DomainError::Internal {
                        message: "tenant service refused BatchGetAccounts".into(),
                        source: Some(Box::new(status)),
                    },
                })?
                .into_inner();
            let missing: HashSet<String> = response.missing_tenant_ids.into_iter().collect();
            live.extend(chunk.iter().filter(|id| !missing.contains(*id)).cloned());
        }
        Ok(live)
    }
}

/// The service's state, shared by every RPC and background task.
#[derive(Debug)]
pub struct Engine {
    pub store: Store,
    pub index: IndexHandle,
    pub tenants: TenantDirectory,
    pub clock: Arc<dyn Clock>,
    /// How long a check with `min_revision` waits for that revision.
    pub revision_wait: Duration,
    /// The storage's health, shared with the gRPC server: background writes (the follower,
    /// pruning) report their storage faults here as requests do.
    pub storage: StorageHealth,
}

/// FNV-1a over bytes, twice with different offsets: a stable request fingerprint for
/// idempotency keys (std's hasher is seeded per process).
pub fn fingerprint(bytes: &[u8]) -> String {
    let fnv = |offset: u64| {
        bytes.iter().fold(offset, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}{:08x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142),
        bytes.len()
    )
}

struct BatchContext<'a> {
    catalog: &'a Catalog,
    /// The tenant service's answer; `None` while it is pending: every account is then assumed
    /// live, and the batch is validated again against the answer before it commits.
    live: Option<&'a HashSet<String>>,
    taken: &'a HashSet<(String, String)>,
}

impl GrantContext for BatchContext<'_> {
    fn plan(&self, id: Uuid) -> Option<&Plan> {
        self.catalog.plan_by_id(id).map(|p| &p.value)
    }

    fn plan_by_key(&self, key: &str) -> Option<&Plan> {
        self.catalog.plan_by_key(key).map(|p| &p.value)
    }

    fn account_exists(&self, id: &str) -> bool {
        self.live.is_none_or(|live| live.contains(id))
    }

    fn external_id_taken(&self, tenant: &str, external_id: &str) -> bool {
        self.taken
            .contains(&(tenant.to_owned(), external_id.to_owned()))
    }
}

/// The answer an idempotency key replays: written in the transaction of the first call,
/// with the revision that call committed, so a retry answers exactly as the first call did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Replay {
    ids: Vec<String>,
    count: u64,
    /// Absent only in records written before revisions were kept (replayed with the
    /// current revision, which includes the write).
    #[serde(default)]
    revision: Option<u64>,
    /// The created grants as first returned (single creates only: a batch answers with ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grants: Option<Vec<Grant>>,
}

/// An idempotency record inserted at the start of a write, completed at commit.
struct PendingReplay {
    key: String,
    replay: Replay,
}

/// What a batch write returns: the affected ids in request order (or a count) and the
/// revision that includes it; `grants` when the write (or the stored answer) has them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    pub ids: Vec<String>,
    pub count: u64,
    pub revision: u64,
    pub grants: Option<Vec<Grant>>,
}

impl Engine {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// "Now" for reading `index` (see [`EntitlementIndex::present`]).
    pub fn present(&self, index: &EntitlementIndex) -> DateTime<Utc> {
        index.present(self.now())
    }

    /// "Now" for a read from storage: not before a write this replica has seen.
    pub fn present_now(&self) -> DateTime<Utc> {
        self.present(&self.index.current())
    }

    /// Commits `changes` and makes them visible to this replica's next check.
    async fn commit(&self, txn: DatabaseTransaction, changes: Vec<IndexChange>) -> Result<u64> {
        self.commit_replayable(txn, changes, None).await
    }

    /// [`Engine::commit`], completing an idempotency record with the committed revision in the
    /// same transaction.
    async fn commit_replayable(
        &self,
        txn: DatabaseTransaction,
        changes: Vec<IndexChange>,
        pending: Option<PendingReplay>,
    ) -> Result<u64> {
        let log = EncodedChanges::of(&changes)?;
        self.commit_encoded(txn, changes, log, pending).await
    }

    /// [`Engine::commit_replayable`] with the change-log entry already encoded.
    async fn commit_encoded(
        &self,
        txn: DatabaseTransaction,
        changes: Vec<IndexChange>,
        log: EncodedChanges,
        pending: Option<PendingReplay>,
    ) -> Result<u64> {
        let revision = self.store.next_revision(&txn).await?;
        if let Some(mut pending) = pending {
            pending.replay.revision = Some(revision);
            let response = crate::storage::to_json(&pending.replay)?;
            self.store
                .set_idempotent_response(&txn, &pending.key, &response)
                .await?;
        }
        let now = self.now();
        self.store.commit_encoded(txn, revision, log, now).await?;
        self.index.apply_committed(revision, changes, now).await?;
        Ok(revision)
    }

    /// The catalog as committed, read outside any write transaction (for reads and lists).
    pub(crate) async fn catalog(&self) -> Result<Catalog> {
        self.store.catalog(self.store.connection()).await
    }

    async fn catalog_txn(&self) -> Result<(DatabaseTransaction, Catalog)> {
        let txn = self.store.begin().await?;
        self.store.lock_catalog(&txn).await?;
        let catalog = self.store.catalog(&txn).await?;
        Ok((txn, catalog))
    }

    // -----------------------------------------------------------------------------------------
    // Features
    // -----------------------------------------------------------------------------------------

    pub async fn create_feature(&self, doc: FeatureDoc) -> Result<(Stored<FeatureDoc>, u64)> {
        validate_feature(&doc.feature)?;
        let (txn, catalog) = self.catalog_txn().await?;
        if catalog.feature_by_key(&doc.feature.key).is_some() {
            return Err(DomainError::AlreadyExists {
                kind: "feature",
                id: doc.feature.key,
            });
        }
        let now = self.now();
        let stored = Stored {
            value: doc,
            created_at: now,
            updated_at: now,
        };
        self.store.put_feature(&txn, &stored, true).await?;
        let change = IndexChange::UpsertFeature(stored.value.feature.clone());
        let revision = self.commit(txn, vec![change]).await?;
        Ok((stored, revision))
    }

    /// Changes a feature through `edit`; a key change is carried into every plan, flag and
    /// route naming the old key, in the same transaction.
    pub async fn update_feature(
        &self,
        id: Uuid,
        edit: impl FnOnce(&mut FeatureDoc) -> Result<()>,
    ) -> Result<(Stored<FeatureDoc>, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        let mut stored = catalog
            .feature_by_id(id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("feature", id))?;
        let before = stored.value.feature.clone();
        edit(&mut stored.value)?;
        stored.value.feature.id = id;
        validate_feature(&stored.value.feature)?;
        let after = stored.value.feature.clone();
        if after.key != before.key && catalog.feature_by_key(&after.key).is_some() {
            return Err(DomainError::AlreadyExists {
                kind: "feature",
                id: after.key,
            });
        }
        if after.allocation_type != before.allocation_type {
            let allocated = catalog.plans.iter().any(|p| {
                p.value
                    .features
                    .iter()
                    .any(|pf| pf.feature_key == before.key && pf.allocation.is_some())
            });
            if allocated {
                return Err(DomainError::FailedPrecondition(format!(
                    "plans allocate feature {} with its current type; change their allocations first",
                    before.key
                )));
            }
        }
        let now = self.now();
        stored.updated_at = now;
        self.store.put_feature(&txn, &stored, false).await?;
        let mut changes = vec![IndexChange::UpsertFeature(after.clone())];
        if after.key != before.key {
            changes.extend(
                self.rename_feature_key(&txn, &catalog, &before.key, &after.key, now)
                    .await?,
            );
        }
        let revision = self.commit(txn, changes).await?;
        Ok((stored, revision))
    }

    async fn rename_feature_key(
        &self,
        txn: &DatabaseTransaction,
        catalog: &Catalog,
        old: &str,
        new: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<IndexChange>> {
        let mut changes = Vec::new();
        for plan in &catalog.plans {
            if plan.value.features.iter().any(|pf| pf.feature_key == old) {
                let mut plan = plan.clone();
                for pf in &mut plan.value.features {
                    if pf.feature_key == old {
                        pf.feature_key = new.to_owned();
                    }
                }
                plan.updated_at = now;
                let ids = plan_feature_ids(catalog, &plan.value, Some((new, old)))?;
                self.store.put_plan(txn, &plan, &ids, false).await?;
                changes.push(IndexChange::UpsertPlan(plan.value));
            }
        }
        if let Some(flag) = catalog.flag_of(old) {
            let mut flag = flag.clone();
            new.clone_into(&mut flag.value.flag.feature_key);
            flag.updated_at = now;
            self.store.put_flag(txn, &flag, false).await?;
            changes.push(IndexChange::UpsertFlag(flag.value.flag));
        }
        for route in &catalog.routes {
            if let RoutePolicy::Require { features, .. } = &route.value.policy
                && features.iter().any(|f| f == old)
            {
                let mut route = route.clone();
                if let RoutePolicy::Require { features, .. } = &mut route.value.policy {
                    for f in features.iter_mut().filter(|f| *f == old) {
                        new.clone_into(f);
                    }
                }
                route.updated_at = now;
                self.store.put_route(txn, &route, false).await?;
                changes.push(IndexChange::UpsertRoute(route.value));
            }
        }
        Ok(changes)
    }

    /// Deletes a feature. In use (included in plans or required by routes): refused unless
    /// `force`, which removes every dependency in the same transaction: the feature is
    /// unlinked from its plans, its flag is dropped, and it is removed from the required
    /// features of REQUIRE routes. A route that required only this feature (no other feature,
    /// no permission) is deleted rather than left requiring nothing: an empty REQUIRE is not a
    /// valid route, and turning it into an unconditional allow would widen access; with it
    /// gone, the request falls to the next matching route or to MISSING_ROUTE.
    pub async fn delete_feature(&self, id: Uuid, force: bool) -> Result<(FeatureDeletion, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        let feature = catalog
            .feature_by_id(id)
            .ok_or_else(|| DomainError::not_found("feature", id))?
            .value
            .feature
            .clone();
        let linked: Vec<&Stored<Plan>> = catalog
            .plans
            .iter()
            .filter(|p| {
                p.value
                    .features
                    .iter()
                    .any(|pf| pf.feature_key == feature.key)
            })
            .collect();
        let requiring: Vec<&Stored<Route>> = catalog
            .routes
            .iter()
            .filter(|r| route_requires(&r.value, &feature.key))
            .collect();
        if (!linked.is_empty() || !requiring.is_empty()) && !force {
            return Err(DomainError::FailedPrecondition(format!(
                "feature {} is included in {} plan(s) and required by {} route(s); unlink it or \
                 delete with force",
                feature.key,
                linked.len(),
                requiring.len()
            )));
        }
        let now = self.now();
        let mut changes = Vec::new();
        let mut outcome = FeatureDeletion::default();
        for plan in linked {
            let mut plan = plan.clone();
            plan.value
                .features
                .retain(|pf| pf.feature_key != feature.key);
            plan.updated_at = now;
            let ids = plan_feature_ids(&catalog, &plan.value, None)?;
            self.store.put_plan(&txn, &plan, &ids, false).await?;
            outcome.unlinked_plans.push(plan.value.id);
            changes.push(IndexChange::UpsertPlan(plan.value));
        }
        for route in requiring {
            let mut route = route.clone();
            let RoutePolicy::Require {
                features,
                permissions,
            } = &mut route.value.policy
            else {
                continue;
            };
            features.retain(|f| *f != feature.key);
            if features.is_empty() && permissions.is_empty() {
                self.store.delete_route(&txn, route.value.id).await?;
                outcome.deleted_routes.push(route.value.id);
                changes.push(IndexChange::DeleteRoute { id: route.value.id });
            } else {
                route.updated_at = now;
                self.store.put_route(&txn, &route, false).await?;
                outcome.updated_routes.push(route.value.id);
                changes.push(IndexChange::UpsertRoute(route.value));
            }
        }
        if let Some(flag) = catalog.flag_of(&feature.key) {
            changes.push(IndexChange::DeleteFlag {
                id: flag.value.flag.id,
            });
        }
        // The flag row goes with the feature (ON DELETE CASCADE).
        self.store.delete_feature(&txn, id).await?;
        changes.push(IndexChange::DeleteFeature { id });
        let revision = self.commit(txn, changes).await?;
        Ok((outcome, revision))
    }

    // -----------------------------------------------------------------------------------------
    // Plans
    // -----------------------------------------------------------------------------------------

    pub async fn create_plan(&self, plan: Plan) -> Result<(Stored<Plan>, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        validate_plan(&plan, |k| feature_type(&catalog, k))?;
        if catalog.plan_by_key(&plan.key).is_some() {
            return Err(DomainError::AlreadyExists {
                kind: "plan",
                id: plan.key,
            });
        }
        let now = self.now();
        let stored = Stored {
            value: plan,
            created_at: now,
            updated_at: now,
        };
        let ids = plan_feature_ids(&catalog, &stored.value, None)?;
        self.store.put_plan(&txn, &stored, &ids, true).await?;
        let change = IndexChange::UpsertPlan(stored.value.clone());
        let revision = self.commit(txn, vec![change]).await?;
        Ok((stored, revision))
    }

    /// Changes a plan through `edit` (which sees the catalog, e.g. to resolve feature ids).
    pub async fn update_plan(
        &self,
        id: Uuid,
        edit: impl FnOnce(&mut Plan, &Catalog) -> Result<()>,
    ) -> Result<(Stored<Plan>, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        let mut stored = catalog
            .plan_by_id(id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("plan", id))?;
        let old_key = stored.value.key.clone();
        edit(&mut stored.value, &catalog)?;
        stored.value.id = id;
        validate_plan(&stored.value, |k| feature_type(&catalog, k))?;
        if stored.value.key != old_key && catalog.plan_by_key(&stored.value.key).is_some() {
            return Err(DomainError::AlreadyExists {
                kind: "plan",
                id: stored.value.key,
            });
        }
        stored.updated_at = self.now();
        let ids = plan_feature_ids(&catalog, &stored.value, None)?;
        self.store.put_plan(&txn, &stored, &ids, false).await?;
        let change = IndexChange::UpsertPlan(stored.value.clone());
        let revision = self.commit(txn, vec![change]).await?;
        Ok((stored, revision))
    }

    /// Deletes a plan. With active or scheduled grants: refused unless `force`, which revokes
    /// them (`plan_deleted`). Returns how many were revoked.
    pub async fn delete_plan(&self, id: Uuid, force: bool, by: &str) -> Result<(u64, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        if catalog.plan_by_id(id).is_none() {
            return Err(DomainError::not_found("plan", id));
        }
        let now = self.now();
        let live = self.store.live_grant_count(&txn, id, now).await?;
        if live > 0 && !force {
            return Err(DomainError::FailedPrecondition(format!(
                "plan {id} has {live} active or scheduled grant(s); revoke them or delete with force"
            )));
        }
        let mut changes = Vec::new();
        let mut revoked = 0;
        for grant in self.store.unrevoked_grants(&txn, None, Some(id)).await? {
            let grant = revoke_grant(&grant, Some(by), Some("plan_deleted"), now)?;
            self.store.update_grant(&txn, &grant).await?;
            changes.push(IndexChange::UpsertGrant(grant));
            revoked += 1;
        }
        self.store.delete_plan(&txn, id, now).await?;
        changes.push(IndexChange::DeletePlan { id });
        let revision = self.commit(txn, changes).await?;
        Ok((revoked, revision))
    }

    // -----------------------------------------------------------------------------------------
    // Feature flags
    // -----------------------------------------------------------------------------------------

    /// Creates a flag for the feature `feature` names (by id or key, resolved in the catalog).
    pub async fn create_flag(
        &self,
        feature: FeatureRef,
        build: impl FnOnce(&Feature) -> Result<FlagDoc>,
    ) -> Result<(Stored<FlagDoc>, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        let target = feature
            .resolve(&catalog)
            // NOT_FOUND naming the feature, as a plan naming an unknown feature is.
            .ok_or_else(|| DomainError::not_found("feature", &feature))?
            .value
            .feature
            .clone();
        if catalog.flag_of(&target.key).is_some() {
            return Err(DomainError::AlreadyExists {
                kind: "feature flag",
                id: target.key,
            });
        }
        let doc = build(&target)?;
        validate_flag(&doc.flag, |k| catalog.feature_by_key(k).is_some())?;
        let now = self.now();
        let stored = Stored {
            value: doc,
            created_at: now,
            updated_at: now,
        };
        self.store.put_flag(&txn, &stored, true).await?;
        let change = IndexChange::UpsertFlag(stored.value.flag.clone());
        let revision = self.commit(txn, vec![change]).await?;
        Ok((stored, revision))
    }

    pub async fn update_flag(
        &self,
        id: Uuid,
        edit: impl FnOnce(&mut FlagDoc) -> Result<()>,
    ) -> Result<(Stored<FlagDoc>, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        let mut stored = catalog
            .flags
            .iter()
            .find(|f| f.value.flag.id == id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("feature flag", id))?;
        let (feature_id, feature_key) = (
            stored.value.feature_id,
            stored.value.flag.feature_key.clone(),
        );
        edit(&mut stored.value)?;
        // The flagged feature never changes through an update.
        stored.value.flag.id = id;
        stored.value.feature_id = feature_id;
        stored.value.flag.feature_key = feature_key;
        validate_flag(&stored.value.flag, |k| catalog.feature_by_key(k).is_some())?;
        stored.updated_at = self.now();
        self.store.put_flag(&txn, &stored, false).await?;
        let change = IndexChange::UpsertFlag(stored.value.flag.clone());
        let revision = self.commit(txn, vec![change]).await?;
        Ok((stored, revision))
    }

    pub async fn delete_flag(&self, id: Uuid) -> Result<u64> {
        let (txn, catalog) = self.catalog_txn().await?;
        if !catalog.flags.iter().any(|f| f.value.flag.id == id) {
            return Err(DomainError::not_found("feature flag", id));
        }
        self.store.delete_flag(&txn, id).await?;
        self.commit(txn, vec![IndexChange::DeleteFlag { id }]).await
    }

    // -----------------------------------------------------------------------------------------
    // Routes
    // -----------------------------------------------------------------------------------------

    pub async fn create_route(&self, route: Route) -> Result<(Stored<Route>, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        validate_route(&route, |k| catalog.feature_by_key(k).is_some())?;
        let now = self.now();
        let stored = Stored {
            value: route,
            created_at: now,
            updated_at: now,
        };
        self.store.put_route(&txn, &stored, true).await?;
        let change = IndexChange::UpsertRoute(stored.value.clone());
        let revision = self.commit(txn, vec![change]).await?;
        Ok((stored, revision))
    }

    pub async fn update_route(
        &self,
        id: Uuid,
        edit: impl FnOnce(&mut Route) -> Result<()>,
    ) -> Result<(Stored<Route>, u64)> {
        let (txn, catalog) = self.catalog_txn().await?;
        let mut stored = catalog
            .routes
            .iter()
            .find(|r| r.value.id == id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("route", id))?;
        edit(&mut stored.value)?;
        stored.value.id = id;
        validate_route(&stored.value, |k| catalog.feature_by_key(k).is_some())?;
        stored.updated_at = self.now();
        self.store.put_route(&txn, &stored, false).await?;
        let change = IndexChange::UpsertRoute(stored.value.clone());
        let revision = self.commit(txn, vec![change]).await?;
        Ok((stored, revision))
    }

    pub async fn delete_route(&self, id: Uuid) -> Result<u64> {
        let (txn, catalog) = self.catalog_txn().await?;
        if !catalog.routes.iter().any(|r| r.value.id == id) {
            return Err(DomainError::not_found("route", id));
        }
        self.store.delete_route(&txn, id).await?;
        self.commit(txn, vec![IndexChange::DeleteRoute { id }])
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Grants
    // -----------------------------------------------------------------------------------------

    /// Replays an idempotency key's stored answer: `Ok(Some)` for the same request, an error
    /// for a different one, `Ok(None)` for a new key.
    async fn replay(
        &self,
        key: Option<&str>,
        operation: &str,
        fingerprint: &str,
    ) -> Result<Option<BatchOutcome>> {
        let Some(key) = key else { return Ok(None) };
        if key.is_empty() || key.len() > 256 {
            return Err(DomainError::invalid(
                "idempotency_key",
                "must be 1 to 256 bytes",
            ));
        }
        match self
            .store
            .idempotent_response(self.store.connection(), key, operation)
            .await?
        {
            Some((stored, response)) if stored == fingerprint => {
                let replay: Replay = crate::storage::from_json(&response)?;
                let revision = match replay.revision {
                    Some(revision) => revision,
                    None => self.store.revision(self.store.connection()).await?,
                };
                Ok(Some(BatchOutcome {
                    ids: replay.ids,
                    count: replay.count,
                    revision,
                    grants: replay.grants,
                }))
            }
            Some(_) => Err(DomainError::IdempotencyKeyReused(key.to_owned())),
            None if self.store.idempotency_key_exists(key).await? => {
                Err(DomainError::IdempotencyKeyReused(key.to_owned()))
            }
            None => Ok(None),
        }
    }

    /// Runs an idempotent batch write: a stored answer is replayed; otherwise `write` runs
    /// and stores its answer in its own transaction. A concurrent twin with the same key
    /// loses on the key's primary key and then replays the winner's answer.
    async fn idempotent<F, Fut>(
        &self,
        key: Option<&str>,
        operation: &'static str,
        fingerprint: &str,
        write: F,
    ) -> Result<BatchOutcome>
    where
        F: FnOnce(Option<(String, String)>) -> Fut,
        Fut: std::future::Future<Output = Result<BatchOutcome>>,
    {
        if let Some(done) = self.replay(key, operation, fingerprint).await? {
            return Ok(done);
        }
        let record = key.map(|k| (k.to_owned(), fingerprint.to_owned()));
        match write(record).await {
            Err(DomainError::AlreadyExists { kind: "record", .. }) if key.is_some() => self
                .replay(key, operation, fingerprint)
                .await?
                .ok_or_else(|| DomainError::Unavailable("concurrent retry; try again".into())),
            other => other,
        }
    }

    /// Inserts the key's record first thing in the write's transaction (a concurrent twin
    /// then waits on it and replays), with the answer but not yet the revision, which
    /// [`Engine::commit_replayable`] adds.
    async fn remember(
        &self,
        txn: &DatabaseTransaction,
        record: Option<(String, String)>,
        operation: &str,
        replay: Replay,
    ) -> Result<Option<PendingReplay>> {
        let Some((key, fingerprint)) = record else {
            return Ok(None);
        };
        self.store
            .store_idempotent_response(
                txn,
                &key,
                operation,
                &fingerprint,
                &crate::storage::to_json(&replay)?,
                self.now(),
            )
            .await?;
        Ok(Some(PendingReplay { key, replay }))
    }

    /// Creates grants all-or-nothing; every bad item is reported by index. Accounts are
    /// checked against the tenant service in one batch call. The outcome carries the grants
    /// (as first created, on a replay of a single create too) unless `ids_only`.
    pub async fn create_grants(
        &self,
        inputs: Vec<GrantInput>,
        source: GrantSource,
        granted_by: Option<&str>,
        idempotency_key: Option<&str>,
        fingerprint: &str,
    ) -> Result<BatchOutcome> {
        if inputs.len() > crate::domain::MAX_BATCH {
            return Err(DomainError::invalid(
                "grants",
                format!("at most {} items per call", crate::domain::MAX_BATCH),
            ));
        }
        let single = inputs.len() == 1;
        let mut outcome = self
            .idempotent(
                idempotency_key,
                "create_grants",
                fingerprint,
                |record| async {
                    let mut tenants: Vec<String> =
                        inputs.iter().map(|i| i.tenant_id.clone()).collect();
                    tenants.sort();
                    tenants.dedup();
                    tenants.retain(|t| crate::domain::tenant_id_problem(t).is_none());
                    // The tenant service is asked while the write is staged (validated
                    // assuming the accounts live, then inserted, uncommitted): its round
                    // trip overlaps the database's. Nothing commits before its answer.
                    let origin = GrantOrigin {
                        source,
                        granted_by,
                        now: self.now(),
                    };
                    let staged = async {
                        let txn = self.store.begin().await?;
                        let catalog = self.store.catalog(&txn).await?;
                        let pairs: Vec<(String, String)> = inputs
                            .iter()
                            .filter_map(|i| Some((i.tenant_id.clone(), i.external_id.clone()?)))
                            .collect();
                        let taken: HashSet<(String, String)> = self
                            .store
                            .taken_external_ids(&txn, &pairs)
                            .await?
                            .into_iter()
                            .map(|(t, e, _)| (t, e))
                            .collect();
                        let ctx = BatchContext {
                            catalog: &catalog,
                            live: None,
                            taken: &taken,
                        };
                        let write = async {
                            let grants = validate_new_grants(&inputs, &ctx, &origin)?;
                            let replay = Replay {
                                ids: grants.iter().map(|g| g.id.to_string()).collect(),
                                count: grants.len() as u64,
                                revision: None,
                                grants: single.then(|| grants.clone()),
                            };
                            let pending =
                                self.remember(&txn, record, "create_grants", replay).await?;
                            // The change-log entry is encoded while the database inserts.
                            let (inserted, changes) =
                                tokio::join!(self.store.insert_grants(&txn, &grants), async {
                                    let changes: Vec<IndexChange> = grants
                                        .iter()
                                        .cloned()
                                        .map(IndexChange::UpsertGrant)
                                        .collect();
                                    EncodedChanges::of(&changes).map(|log| (changes, log))
                                });
                            inserted?;
                            Ok::<_, DomainError>((grants, pending, changes?))
                        }
                        .await;
                        Ok::<_, DomainError>((txn, catalog, taken, write))
                    };
                    let (live, staged) = tokio::join!(self.tenants.live(&tenants), staged);
                    // Any early return drops (rolls back) the staged transaction.
                    let live = live?;
                    let (txn, catalog, taken, write) = staged?;
                    let accounts_live = write.as_ref().is_ok_and(|(grants, _, _)| {
                        grants.iter().all(|g| live.contains(&g.tenant_id))
                    });
                    if !accounts_live {
                        // Every bad item, as the tenant service's answer shows them.
                        let ctx = BatchContext {
                            catalog: &catalog,
                            live: Some(&live),
                            taken: &taken,
                        };
                        validate_new_grants(&inputs, &ctx, &origin)?;
                        // The accounts are live: the staged write failed on its own.
                        write?;
                        return Err(DomainError::internal("batch validation disagreed"));
                    }
                    let (grants, pending, (changes, log)) = write?;
                    let ids = pending.as_ref().map_or_else(
                        || grants.iter().map(|g| g.id.to_string()).collect(),
                        |p| p.replay.ids.clone(),
                    );
                    let count = grants.len() as u64;
                    let revision = self.commit_encoded(txn, changes, log, pending).await?;
                    Ok(BatchOutcome {
                        ids,
                        count,
                        revision,
                        grants: Some(grants),
                    })
                },
            )
            .await?;
        if outcome.grants.is_none() && single {
            // A replay of a record without the grants: read back what the first call created.
            let ids: Vec<Uuid> = outcome
                .ids
                .iter()
                .filter_map(|id| Uuid::try_parse(id).ok())
                .collect();
            outcome.grants = Some(
                self.store
                    .grants_by_ids(self.store.connection(), &ids, false)
                    .await?,
            );
        }
        Ok(outcome)
    }

    /// Updates grants (expiry, start, metadata, external id) all-or-nothing. The outcome's
    /// ids are the updated grants in request order; `grants` is set unless replayed.
    pub async fn update_grants(
        &self,
        patches: Vec<GrantPatch>,
        idempotency_key: Option<&str>,
        fingerprint: &str,
    ) -> Result<BatchOutcome> {
        self.idempotent(
            idempotency_key,
            "update_grants",
            fingerprint,
            |record| async {
                let txn = self.store.begin().await?;
                let ids: Vec<Uuid> = patches
                    .iter()
                    .filter_map(|p| Uuid::try_parse(&p.id).ok())
                    .collect();
                let current: HashMap<Uuid, Grant> = self
                    .store
                    .grants_by_ids(&txn, &ids, true)
                    .await?
                    .into_iter()
                    .map(|g| (g.id, g))
                    .collect();
                // Who holds the external ids the patches set, among each grant's account.
                let pairs: Vec<(String, String)> = patches
                    .iter()
                    .filter_map(|p| {
                        let grant = current.get(&Uuid::try_parse(&p.id).ok()?)?;
                        let ext = p.external_id.clone().filter(|e| !e.is_empty())?;
                        Some((grant.tenant_id.clone(), ext))
                    })
                    .collect();
                let owners: HashMap<(String, String), Uuid> = self
                    .store
                    .taken_external_ids(&txn, &pairs)
                    .await?
                    .into_iter()
                    .map(|(t, e, id)| ((t, e), id))
                    .collect();
                let grants = validate_grant_updates(
                    &patches,
                    |id| current.get(&id).cloned(),
                    |tenant, ext| owners.get(&(tenant.to_owned(), ext.to_owned())).copied(),
                    self.now(),
                )?;
                let ids: Vec<String> = grants.iter().map(|g| g.id.to_string()).collect();
                let count = grants.len() as u64;
                let replay = Replay {
                    ids: ids.clone(),
                    count,
                    revision: None,
                    grants: None,
                };
                let pending = self.remember(&txn, record, "update_grants", replay).await?;
                for grant in &grants {
                    self.store.update_grant(&txn, grant).await?;
                }
                let changes = grants
                    .iter()
                    .cloned()
                    .map(IndexChange::UpsertGrant)
                    .collect();
                let revision = self.commit_replayable(txn, changes, pending).await?;
                Ok(BatchOutcome {
                    ids,
                    count,
                    revision,
                    grants: Some(grants),
                })
            },
        )
        .await
    }

    pub async fn delete_grants(
        &self,
        ids: Vec<String>,
        idempotency_key: Option<&str>,
        fingerprint: &str,
    ) -> Result<BatchOutcome> {
        self.idempotent(
            idempotency_key,
            "delete_grants",
            fingerprint,
            |record| async {
                let txn = self.store.begin().await?;
                let parsed: Vec<Uuid> =
                    ids.iter().filter_map(|i| Uuid::try_parse(i).ok()).collect();
                let existing: HashSet<Uuid> = self
                    .store
                    .grants_by_ids(&txn, &parsed, true)
                    .await?
                    .into_iter()
                    .map(|g| g.id)
                    .collect();
                let ids = validate_grant_deletes(&ids, |id| existing.contains(&id))?;
                let id_strings: Vec<String> = ids.iter().map(Uuid::to_string).collect();
                let replay = Replay {
                    ids: id_strings.clone(),
                    count: ids.len() as u64,
                    revision: None,
                    grants: None,
                };
                let pending = self.remember(&txn, record, "delete_grants", replay).await?;
                let count = self.store.delete_grants(&txn, &ids).await?;
                let changes = ids
                    .iter()
                    .map(|&id| IndexChange::DeleteGrant { id })
                    .collect();
                let revision = self.commit_replayable(txn, changes, pending).await?;
                Ok(BatchOutcome {
                    ids: id_strings,
                    count,
                    revision,
                    grants: None,
                })
            },
        )
        .await
    }

    pub async fn revoke_grant(
        &self,
        id: Uuid,
        by: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(Grant, u64)> {
        let txn = self.store.begin().await?;
        let grant = self
            .store
            .grants_by_ids(&txn, &[id], true)
            .await?
            .pop()
            .ok_or_else(|| DomainError::not_found("grant", id))?;
        let grant = revoke_grant(&grant, by, Some(reason.unwrap_or("revoked")), self.now())?;
        self.store.update_grant(&txn, &grant).await?;
        let revision = self
            .commit(txn, vec![IndexChange::UpsertGrant(grant.clone())])
            .await?;
        Ok((grant, revision))
    }
}

/// What a forced feature deletion changed besides the feature itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureDeletion {
    /// Plans the feature was unlinked from.
    pub unlinked_plans: Vec<Uuid>,
    /// REQUIRE routes that still require other features or permissions, now without it.
    pub updated_routes: Vec<Uuid>,
    /// REQUIRE routes that required only this feature, deleted.
    pub deleted_routes: Vec<Uuid>,
}

fn route_requires(route: &Route, feature_key: &str) -> bool {
    matches!(&route.policy, RoutePolicy::Require { features, .. } if features.iter().any(|f| f == feature_key))
}

/// A feature named by id or key.
#[derive(Debug, Clone)]
pub enum FeatureRef {
    Id(Uuid),
    Key(String),
}

impl std::fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureRef::Id(id) => id.fmt(f),
            FeatureRef::Key(key) => f.write_str(key),
        }
    }
}

impl FeatureRef {
    pub fn resolve<'c>(&self, catalog: &'c Catalog) -> Option<&'c Stored<FeatureDoc>> {
        match self {
            FeatureRef::Id(id) => catalog.feature_by_id(*id),
            FeatureRef::Key(key) => catalog.feature_by_key(key),
        }
    }
}

fn feature_type(catalog: &Catalog, key: &str) -> Option<AllocationType> {
    catalog
        .feature_by_key(key)
        .map(|f| f.value.feature.allocation_type)
}

/// The ids of a plan's features (for the link table). `rename` maps a key being renamed in
/// the same transaction (new, old) so it resolves against the catalog read before.
fn plan_feature_ids(
    catalog: &Catalog,
    plan: &Plan,
    rename: Option<(&str, &str)>,
) -> Result<Vec<Uuid>> {
    plan.features
        .iter()
        .map(|pf| {
            let key = match rename {
                Some((new, old)) if pf.feature_key == new => old,
                _ => pf.feature_key.as_str(),
            };
            catalog
                .feature_by_key(key)
                .map(|f| f.value.feature.id)
                .ok_or_else(|| DomainError::invalid("features", format!("unknown feature {key}")))
        })
        .collect()
}
