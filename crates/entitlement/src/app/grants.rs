//! Grants: all-or-nothing batch writes (accounts checked against the tenant directory while
//! the write is staged), single writes, revocation, and reads with each grant's plan.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Engine;
use super::idempotency::Idempotency;
use super::listing::{PageInfo, PageRequest};
use super::plans::PlanView;
use super::ports::{GrantFilter, GrantSort, StatusFilter, Storage};
use crate::domain::audit::Prior;
use crate::domain::catalog::{Catalog, PlanRef};
use crate::domain::{
    DomainError, Grant, GrantContext, GrantInput, GrantOrigin, GrantPatch, GrantSource,
    GrantStatus, IndexChange, ItemProblem, MAX_BATCH, Plan, Result, revoke_grant,
    tenant_id_problem, validate_grant_deletes, validate_grant_updates, validate_new_grants,
};

pub use super::idempotency::BatchOutcome;

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

/// A grant as reads describe it: with its plan's key, and the plan itself when asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantView {
    pub grant: Grant,
    /// Empty when the plan is unknown.
    pub plan_key: String,
    pub plan: Option<PlanView>,
}

/// Grants with the instant their statuses are evaluated at.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantsAt {
    pub at: DateTime<Utc>,
    pub grants: Vec<GrantView>,
}

/// ListGrants' filters (empty lists mean "any"), order and page.
#[derive(Debug, Clone, Default)]
pub struct GrantQuery {
    pub tenant_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub plan_ids: Vec<Uuid>,
    /// Grants in any of these statuses at `at`.
    pub statuses: Vec<GrantStatus>,
    pub sources: Vec<String>,
    /// `Some(true)`: user grants only; `Some(false)`: account grants only.
    pub user_level: Option<bool>,
    pub external_id: Option<String>,
    /// The instant statuses are evaluated at; `None`: now, leaving out grants committed
    /// while the list runs.
    pub at: Option<DateTime<Utc>>,
    pub sort: GrantSort,
    pub descending: bool,
    pub with_relations: bool,
}

/// How many grants a plan read with its grants lists: enough for a plan's page in a console,
/// bounded so the read stays small (the grant list pages through the rest).
pub const PLAN_GRANTS: u64 = 100;

/// A user's grant in the seed-003 user view.
#[derive(Debug, Clone, PartialEq)]
pub struct UserGrant {
    pub grant: Grant,
    /// Active, expired or revoked (grants that have not started are left out).
    pub status: GrantStatus,
    pub product_key: String,
}

/// A single write reports its one bad item as a plain field error under `prefix`.
#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "every other error keeps its meaning"
)]
fn single_item(e: DomainError, prefix: &str) -> DomainError {
    match e {
        DomainError::InvalidItems(mut items) if !items.is_empty() => {
            let first = items.swap_remove(0);
            DomainError::invalid(format!("{prefix}.{}", first.field), first.message)
        }
        other => other,
    }
}

/// The problem of a single write's item, when it is one that single writes report as such.
#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "every other error keeps its meaning"
)]
fn single_problem(e: &DomainError, problem: ItemProblem) -> bool {
    match e {
        DomainError::InvalidItems(items) => items.iter().any(|i| i.problem == problem),
        _ => false,
    }
}

impl<S: Storage> Engine<S> {
    /// Creates grants all-or-nothing; every bad item is reported by index. Accounts are
    /// checked against the tenant directory in one batch call. The outcome carries the grants
    /// (as first created, on a replay of a single create too).
    pub async fn create_grants(
        &self,
        inputs: Vec<GrantInput>,
        source: GrantSource,
        granted_by: Option<&str>,
        idempotency: Option<&Idempotency>,
    ) -> Result<BatchOutcome> {
        if inputs.len() > MAX_BATCH {
            return Err(DomainError::invalid(
                "grants",
                format!("at most {MAX_BATCH} items per call"),
            ));
        }
        let single = inputs.len() == 1;
        let mut outcome = self
            .idempotent(idempotency, "create_grants", |claim| async {
                let mut tenants: Vec<String> = inputs.iter().map(|i| i.tenant_id.clone()).collect();
                tenants.sort();
                tenants.dedup();
                tenants.retain(|t| tenant_id_problem(t).is_none());
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
                    let catalog = self.store.catalog_in(&txn).await?;
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
                        let pending = self
                            .claim_answering(&txn, claim, || BatchOutcome {
                                ids: grants.iter().map(|g| g.id.to_string()).collect(),
                                count: grants.len() as u64,
                                revision: 0,
                                grants: single.then(|| grants.clone()),
                            })
                            .await?;
                        // The change-log entry is encoded while the database inserts.
                        let (inserted, changes) =
                            tokio::join!(self.store.insert_grants(&txn, &grants), async {
                                let changes: Vec<IndexChange> = grants
                                    .iter()
                                    .cloned()
                                    .map(IndexChange::UpsertGrant)
                                    .collect();
                                self.store.encode(&changes).map(|log| (changes, log))
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
                let accounts_live = write
                    .as_ref()
                    .is_ok_and(|(grants, _, _)| grants.iter().all(|g| live.contains(&g.tenant_id)));
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
                let ids = grants.iter().map(|g| g.id.to_string()).collect();
                let count = grants.len() as u64;
                let revision = self
                    .commit_encoded(txn, changes, log, pending, &Prior::none())
                    .await?;
                Ok(BatchOutcome {
                    ids,
                    count,
                    revision,
                    grants: Some(grants),
                })
            })
            .await?;
        if outcome.grants.is_none() && single {
            // A replay of a record without the grants: read back what the first call created.
            let ids: Vec<Uuid> = outcome
                .ids
                .iter()
                .filter_map(|id| Uuid::try_parse(id).ok())
                .collect();
            outcome.grants = Some(self.store.grants_by_ids(&ids).await?);
        }
        Ok(outcome)
    }

    /// Creates one grant; a bad input is a plain field error under `grant.`.
    pub async fn create_grant(
        &self,
        input: GrantInput,
        granted_by: Option<&str>,
        idempotency: Option<&Idempotency>,
    ) -> Result<(GrantsAt, u64)> {
        let outcome = self
            .create_grants(vec![input], GrantSource::Api, granted_by, idempotency)
            .await
            .map_err(|e| single_item(e, "grant"))?;
        let at = self.now();
        let grants = self
            .describe(outcome.grants.unwrap_or_default(), at, false)
            .await?;
        Ok((grants, outcome.revision))
    }

    /// Updates grants (expiry, start, metadata, external id) all-or-nothing. The outcome's
    /// ids are the updated grants in request order; `grants` is set unless replayed.
    pub async fn update_grants(
        &self,
        patches: Vec<GrantPatch>,
        idempotency: Option<&Idempotency>,
    ) -> Result<BatchOutcome> {
        self.idempotent(idempotency, "update_grants", |claim| async {
            let txn = self.store.begin().await?;
            let ids: Vec<Uuid> = patches
                .iter()
                .filter_map(|p| Uuid::try_parse(&p.id).ok())
                .collect();
            let current: HashMap<Uuid, Grant> = self
                .store
                .lock_grants(&txn, &ids)
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
            let pending = self
                .claim_answering(&txn, claim, || BatchOutcome {
                    ids: ids.clone(),
                    count,
                    revision: 0,
                    grants: None,
                })
                .await?;
            for grant in &grants {
                self.store.update_grant(&txn, grant).await?;
            }
            let changes: Vec<IndexChange> = grants
                .iter()
                .cloned()
                .map(IndexChange::UpsertGrant)
                .collect();
            let log = self.store.encode(&changes)?;
            let prior = Prior::grants(current.into_values());
            let revision = self
                .commit_encoded(txn, changes, log, pending, &prior)
                .await?;
            Ok(BatchOutcome {
                ids,
                count,
                revision,
                grants: Some(grants),
            })
        })
        .await
    }

    /// Updates one grant: a missing grant is NOT_FOUND, a revoked one FAILED_PRECONDITION
    /// (like a second revocation), any other bad field a plain error under `patch.`.
    pub async fn update_grant(
        &self,
        id: Uuid,
        patch: GrantPatch,
        at: DateTime<Utc>,
    ) -> Result<(GrantsAt, u64)> {
        let outcome = self.update_grants(vec![patch], None).await.map_err(|e| {
            if single_problem(&e, ItemProblem::GrantNotFound) {
                DomainError::not_found("grant", id)
            } else if single_problem(&e, ItemProblem::GrantRevoked) {
                DomainError::FailedPrecondition(format!(
                    "grant {id} is revoked and cannot be changed"
                ))
            } else {
                single_item(e, "patch")
            }
        })?;
        let grants = self
            .describe(outcome.grants.unwrap_or_default(), at, false)
            .await?;
        Ok((grants, outcome.revision))
    }

    pub async fn delete_grants(
        &self,
        ids: Vec<String>,
        idempotency: Option<&Idempotency>,
    ) -> Result<BatchOutcome> {
        self.idempotent(idempotency, "delete_grants", |claim| async {
            let txn = self.store.begin().await?;
            let parsed: Vec<Uuid> = ids.iter().filter_map(|i| Uuid::try_parse(i).ok()).collect();
            let locked = self.store.lock_grants(&txn, &parsed).await?;
            let existing: HashSet<Uuid> = locked.iter().map(|g| g.id).collect();
            let ids = validate_grant_deletes(&ids, |id| existing.contains(&id))?;
            let id_strings: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            let pending = self
                .claim_answering(&txn, claim, || BatchOutcome {
                    ids: id_strings.clone(),
                    count: ids.len() as u64,
                    revision: 0,
                    grants: None,
                })
                .await?;
            let count = self.store.delete_grants(&txn, &ids).await?;
            let changes: Vec<IndexChange> = ids
                .iter()
                .map(|&id| IndexChange::DeleteGrant { id })
                .collect();
            let log = self.store.encode(&changes)?;
            let revision = self
                .commit_encoded(txn, changes, log, pending, &Prior::grants(locked))
                .await?;
            Ok(BatchOutcome {
                ids: id_strings,
                count,
                revision,
                grants: None,
            })
        })
        .await
    }

    /// Deletes one grant (NOT_FOUND when there is none); returns the revision.
    pub async fn delete_grant(&self, id: Uuid) -> Result<u64> {
        let outcome = self
            .delete_grants(vec![id.to_string()], None)
            .await
            .map_err(|e| {
                if single_problem(&e, ItemProblem::GrantNotFound) {
                    DomainError::not_found("grant", id)
                } else {
                    e
                }
            })?;
        Ok(outcome.revision)
    }

    pub async fn revoke_grant(
        &self,
        id: Uuid,
        by: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(GrantsAt, u64)> {
        let txn = self.store.begin().await?;
        let grant = self
            .store
            .lock_grants(&txn, &[id])
            .await?
            .pop()
            .ok_or_else(|| DomainError::not_found("grant", id))?;
        let revoked = revoke_grant(&grant, by, Some(reason.unwrap_or("revoked")), self.now())?;
        self.store.update_grant(&txn, &revoked).await?;
        let revision = self
            .commit(
                txn,
                vec![IndexChange::UpsertGrant(revoked.clone())],
                &Prior::grants([grant]),
            )
            .await?;
        let grant = revoked;
        let grants = self.describe(vec![grant], self.now(), false).await?;
        Ok((grants, revision))
    }

    /// One grant, its status as of now.
    pub async fn grant(&self, id: Uuid, with_relations: bool) -> Result<GrantsAt> {
        let grant = self.store.grant(id).await?;
        self.describe(vec![grant], self.present_now(), with_relations)
            .await
    }

    /// A plan with its [`PLAN_GRANTS`] newest grants (every status) and whether it has more:
    /// Frontegg's plan object lists its entitlements.
    pub async fn plan_with_grants(&self, id: Uuid) -> Result<(PlanView, GrantsAt, bool)> {
        let plan = self
            .plan(&PlanRef::Id(id))
            .await?
            .ok_or_else(|| DomainError::not_found("plan", id))?;
        let query = GrantQuery {
            plan_ids: vec![id],
            descending: true,
            ..GrantQuery::default()
        };
        let page = PageRequest {
            offset: 0,
            limit: PLAN_GRANTS,
        };
        let (grants, page) = self.list_grants(query, page).await?;
        Ok((plan, grants, page.has_next()))
    }

    /// One page of grants and where it sits in the list.
    pub async fn list_grants(
        &self,
        q: GrantQuery,
        page: PageRequest,
    ) -> Result<(GrantsAt, PageInfo)> {
        let (at, created_until) = match q.at {
            Some(at) => (at, None),
            None => {
                let now = self.present_now();
                (now, Some(now))
            }
        };
        let filter = GrantFilter {
            tenant_ids: q.tenant_ids,
            user_ids: q.user_ids,
            plan_ids: q.plan_ids,
            statuses: q
                .statuses
                .into_iter()
                .map(|status| StatusFilter { status, at })
                .collect(),
            sources: q.sources,
            user_level: q.user_level,
            external_id: q.external_id,
            created_until,
            sort: q.sort,
            descending: q.descending,
            offset: page.offset,
            limit: page.limit,
        };
        let (grants, total) = self.store.list_grants(&filter).await?;
        let grants = self.describe(grants, at, q.with_relations).await?;
        Ok((grants, page.info(total)))
    }

    /// A user's grants (in one account, or all) as of `at` (default now), newest first.
    pub async fn user_grants(
        &self,
        user_id: &str,
        tenant_id: Option<&str>,
        at: Option<DateTime<Utc>>,
    ) -> Result<Vec<UserGrant>> {
        if user_id.trim().is_empty() || user_id.chars().count() > 255 {
            return Err(DomainError::invalid(
                "user_id",
                "must be 1 to 255 characters",
            ));
        }
        if let Some(problem) = tenant_id.and_then(tenant_id_problem) {
            return Err(DomainError::invalid("tenant_id", problem));
        }
        let grants = self.store.user_grants(user_id, tenant_id).await?;
        // "Now" is read after the rows: a grant committed during the query started by then.
        let at = at.unwrap_or_else(|| self.present_now());
        let plans = self.plans_of(&grants).await?;
        Ok(grants
            .into_iter()
            .filter_map(|grant| {
                let status = grant.status_at(at);
                // The seed's status has no value for a grant that has not started.
                if status == GrantStatus::Scheduled {
                    return None;
                }
                Some(UserGrant {
                    status,
                    product_key: plans
                        .get(&grant.plan_id)
                        .map(|p| p.key.clone())
                        .unwrap_or_default(),
                    grant,
                })
            })
            .collect())
    }

    /// The plans `grants` name, deleted ones included.
    async fn plans_of(&self, grants: &[Grant]) -> Result<HashMap<Uuid, Plan>> {
        let mut ids: Vec<Uuid> = grants.iter().map(|g| g.plan_id).collect();
        ids.sort();
        ids.dedup();
        Ok(self
            .store
            .plans_by_ids(&ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect())
    }

    /// Grants with their plans' keys (and live plans when `with_relations`).
    async fn describe(
        &self,
        grants: Vec<Grant>,
        at: DateTime<Utc>,
        with_relations: bool,
    ) -> Result<GrantsAt> {
        let plans = self.plans_of(&grants).await?;
        let catalog = if with_relations {
            Some(self.catalog().await?)
        } else {
            None
        };
        let grants = grants
            .into_iter()
            .map(|grant| {
                let plan = plans.get(&grant.plan_id);
                let relation = match (&catalog, plan) {
                    (Some(c), Some(p)) => c.plan_by_id(p.id).map(|s| PlanView::of(c, s)),
                    _ => None,
                };
                GrantView {
                    plan_key: plan.map(|p| p.key.clone()).unwrap_or_default(),
                    plan: relation,
                    grant,
                }
            })
            .collect();
        Ok(GrantsAt { at, grants })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::{self, invalid_field};
    use crate::domain::{AllocationType, Justification, PlanFeature};

    fn input(plan: &str, tenant: &str) -> GrantInput {
        GrantInput {
            plan_id: plan.into(),
            tenant_id: tenant.into(),
            ..GrantInput::default()
        }
    }

    fn fields(err: &DomainError) -> Vec<(usize, &str)> {
        let DomainError::InvalidItems(items) = err else {
            panic!("expected invalid items, got {err:?}");
        };
        items.iter().map(|i| (i.index, i.field.as_str())).collect()
    }

    async fn with_plan() -> testing::TestEngine {
        let t = testing::engine().await;
        t.account("acme", None).await;
        t.account("globex", None).await;
        t.feature("sso", AllocationType::Bool, &[]).await;
        t.plan("pro", vec![PlanFeature::bare("sso")]).await;
        t
    }

    async fn count(t: &testing::TestEngine) -> u64 {
        let (_, page) = t
            .engine
            .list_grants(GrantQuery::default(), PageRequest::new(0, None).unwrap())
            .await
            .unwrap();
        page.total
    }

    #[tokio::test]
    async fn a_grant_needs_a_live_account_a_known_plan_and_an_end_after_its_start() {
        let t = with_plan().await;
        let app = &t.engine;
        let single = |input| app.create_grant(input, None, None);
        let err = single(input("pro", "nobody")).await.unwrap_err();
        assert_eq!(invalid_field(&err), "grant.tenantId");
        let err = single(input("nope", "acme")).await.unwrap_err();
        assert_eq!(invalid_field(&err), "grant.planId");
        let err = single(GrantInput {
            starts_at: Some("2026-07-01T00:00:00Z".into()),
            expires_at: Some("2026-06-30T00:00:00Z".into()),
            ..input("pro", "acme")
        })
        .await
        .unwrap_err();
        assert_eq!(invalid_field(&err), "grant.expiresAt");
        // A batch is all or nothing, and names every bad item.
        let err = app
            .create_grants(
                vec![
                    input("pro", "acme"),
                    input("pro", "nobody"),
                    GrantInput {
                        source: Some("inherited".into()),
                        ..input("nope", "globex")
                    },
                ],
                GrantSource::Batch,
                None,
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(
            fields(&err),
            [(1, "tenantId"), (2, "planId"), (2, "source")]
        );
        assert_eq!(count(&t).await, 0);
        // The tenant service down: nothing is written, and the caller is told to retry.
        t.directory.set_down(true);
        let err = single(input("pro", "acme")).await.unwrap_err();
        assert!(matches!(err, DomainError::Unavailable(_)), "{err:?}");
        assert_eq!(count(&t).await, 0);
        t.directory.set_down(false);
        let (created, revision) = single(input("pro", "acme")).await.unwrap();
        assert_eq!(created.grants[0].plan_key, "pro");
        assert_eq!(revision, app.revision());
        assert!(t.check("acme", None, "sso").await.result);
    }

    #[tokio::test]
    async fn an_external_id_names_one_grant_per_account() {
        let t = with_plan().await;
        let app = &t.engine;
        let with_ext = |tenant: &str, ext: &str| GrantInput {
            external_id: Some(ext.into()),
            ..input("pro", tenant)
        };
        app.create_grant(with_ext("acme", "order-1"), None, None)
            .await
            .unwrap();
        let err = app
            .create_grant(with_ext("acme", "order-1"), None, None)
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "grant.externalId");
        // Another account may use the same ID; one batch may not use it twice.
        app.create_grant(with_ext("globex", "order-1"), None, None)
            .await
            .unwrap();
        let err = app
            .create_grants(
                vec![with_ext("acme", "order-2"), with_ext("acme", "order-2")],
                GrantSource::Batch,
                None,
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(fields(&err), [(1, "externalId")]);
        let (found, page) = app
            .list_grants(
                GrantQuery {
                    external_id: Some("order-1".into()),
                    tenant_ids: vec!["acme".into()],
                    ..GrantQuery::default()
                },
                PageRequest::new(0, None).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(found.grants[0].grant.tenant_id, "acme");
    }

    #[tokio::test]
    async fn a_key_replays_its_first_answer_and_refuses_another_request() {
        let t = with_plan().await;
        let app = &t.engine;
        let key = |fingerprint: &str| {
            Idempotency::with_fingerprint(None, "key-1".into(), fingerprint.into()).unwrap()
        };
        let (a, b) = (key("fp-a"), key("fp-b"));
        let first = app
            .create_grant(input("pro", "acme"), None, Some(&a))
            .await
            .unwrap();
        let again = app
            .create_grant(input("pro", "acme"), None, Some(&a))
            .await
            .unwrap();
        assert_eq!(again.0.grants[0].grant.id, first.0.grants[0].grant.id);
        assert_eq!(again.1, first.1);
        assert_eq!(count(&t).await, 1);
        let err = app
            .create_grant(input("pro", "globex"), None, Some(&b))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DomainError::IdempotencyKeyReused(_)),
            "{err:?}"
        );
        assert_eq!(count(&t).await, 1);
    }

    #[tokio::test]
    async fn updates_and_revocations_follow_the_grant_lifecycle() {
        let t = with_plan().await;
        let app = &t.engine;
        let grant = t.grant("pro", "acme", None).await;
        let now = t.clock.now_for_tests();
        let patch = |expires: &str| GrantPatch {
            id: grant.id.to_string(),
            expires_at: Some(Some(expires.into())),
            ..GrantPatch::default()
        };
        let missing = Uuid::now_v7();
        let err = app
            .update_grant(
                missing,
                GrantPatch {
                    id: missing.to_string(),
                    ..GrantPatch::default()
                },
                now,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");
        // An expiry before a start given with it is refused (a past expiry alone ends it).
        let err = app
            .update_grant(
                grant.id,
                GrantPatch {
                    starts_at: Some("2020-02-01T00:00:00Z".into()),
                    ..patch("2020-01-01T00:00:00Z")
                },
                now,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "patch.expiresAt");
        let (updated, _) = app
            .update_grant(grant.id, patch("2026-06-02T12:00:00Z"), now)
            .await
            .unwrap();
        assert_eq!(
            updated.grants[0].grant.expires_at,
            Some(now + chrono::Duration::days(1))
        );
        // Past its expiry the check says so, and says when it changed.
        let before = t.check("acme", None, "sso").await;
        assert_eq!(before.next_change_at, Some(now + chrono::Duration::days(1)));
        t.clock.advance(chrono::Duration::days(2));
        let expired = t.check("acme", None, "sso").await;
        assert_eq!(expired.justification, Some(Justification::PlanExpired));
        let (revoked, _) = app.revoke_grant(grant.id, Some("ops"), None).await.unwrap();
        assert_eq!(
            revoked.grants[0].grant.revoke_reason.as_deref(),
            Some("revoked")
        );
        let err = app.revoke_grant(grant.id, None, None).await.unwrap_err();
        assert!(matches!(err, DomainError::FailedPrecondition(_)), "{err:?}");
        let err = app
            .update_grant(grant.id, patch("2027-01-01T00:00:00Z"), now)
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::FailedPrecondition(_)), "{err:?}");
        app.delete_grant(grant.id).await.unwrap();
        let err = app.delete_grant(grant.id).await.unwrap_err();
        assert!(matches!(err, DomainError::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn grants_are_listed_by_account_user_and_status_and_paged() {
        let t = with_plan().await;
        let app = &t.engine;
        for _ in 0..3 {
            t.grant("pro", "acme", None).await;
        }
        t.grant("pro", "acme", Some("ann")).await;
        let later = app
            .create_grant(
                GrantInput {
                    starts_at: Some("2026-09-01T00:00:00Z".into()),
                    ..input("pro", "globex")
                },
                None,
                None,
            )
            .await
            .unwrap()
            .0
            .grants
            .remove(0)
            .grant;
        let page = |offset, limit| PageRequest::new(offset, Some(limit)).unwrap();
        let (acme, info) = app
            .list_grants(
                GrantQuery {
                    tenant_ids: vec!["acme".into()],
                    ..GrantQuery::default()
                },
                page(2, 2),
            )
            .await
            .unwrap();
        assert_eq!((acme.grants.len(), info.total), (2, 4));
        assert!(!info.has_next());
        let (users, _) = app
            .list_grants(
                GrantQuery {
                    user_level: Some(true),
                    ..GrantQuery::default()
                },
                page(0, 10),
            )
            .await
            .unwrap();
        assert_eq!(users.grants.len(), 1);
        assert_eq!(users.grants[0].grant.user_id.as_deref(), Some("ann"));
        let (scheduled, _) = app
            .list_grants(
                GrantQuery {
                    statuses: vec![GrantStatus::Scheduled],
                    ..GrantQuery::default()
                },
                page(0, 10),
            )
            .await
            .unwrap();
        assert_eq!(scheduled.grants.len(), 1);
        assert_eq!(scheduled.grants[0].grant.id, later.id);
        // The user's grant is the user's alone; a scheduled one is not yet held.
        assert!(t.check("acme", Some("ann"), "sso").await.result);
        let not_yet = t.check("globex", None, "sso").await;
        assert_eq!(not_yet.justification, Some(Justification::NotStarted));
        assert_eq!(not_yet.next_change_at, Some(later.starts_at));
        let ann = app.user_grants("ann", Some("acme"), None).await.unwrap();
        assert_eq!(ann.len(), 1);
        assert_eq!(ann[0].product_key, "pro");
        let err = app.user_grants(" ", None, None).await.unwrap_err();
        assert_eq!(invalid_field(&err), "user_id");
    }
}
