//! Grants: single and batch writes, revocation, listing, and the seed-003 user view.

use std::collections::HashMap;

use prost::Message;
use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};
use uuid::Uuid;

use super::convert::{self, rfc3339, uuid};
use super::{Handler, Result, descending, page, page_info, principal};
use crate::domain::{
    DomainError, GRANT_REVOKED, Grant, GrantInput, GrantSource, GrantStatus, ItemError, Plan,
    tenant_id_problem,
};
use crate::service::fingerprint;
use crate::storage::{GrantFilter, GrantSort, StatusFilter};

/// The problems of one item found while decoding it: `(field, message)`, fields named as the
/// domain's item errors name them.
type Problems = Vec<(&'static str, String)>;

/// Decodes a timestamp to the RFC 3339 text the domain validates. An invalid one (out of
/// range, bad nanos) is a problem on `field`, never "unset" or "clear".
fn time_text(
    field: &'static str,
    t: Option<prost_types::Timestamp>,
    problems: &mut Problems,
) -> Option<String> {
    match convert::time(field, &t?) {
        Ok(t) => Some(rfc3339(t)),
        Err(_) => {
            problems.push((field, "timestamp out of range".to_owned()));
            None
        }
    }
}

fn input(g: NewGrant) -> std::result::Result<GrantInput, Problems> {
    let mut problems = Problems::new();
    let starts_at = time_text("startsAt", g.starts_at, &mut problems);
    let expires_at = time_text("expiresAt", g.expires_at, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(GrantInput {
        plan_id: match g.plan {
            Some(new_grant::Plan::PlanId(id)) => id,
            Some(new_grant::Plan::PlanKey(key)) => key,
            None => String::new(),
        },
        tenant_id: g.tenant_id,
        user_id: g.user_id,
        starts_at,
        expires_at,
        external_id: g.external_id,
        metadata: g.metadata.map(convert::struct_to_json),
        source: g.source,
    })
}

fn patch(
    p: pb::GrantPatch,
    now: chrono::DateTime<chrono::Utc>,
) -> std::result::Result<crate::domain::GrantPatch, Problems> {
    let mut problems = Problems::new();
    // A wrapper without value means "now" for the start and "never" for the expiry.
    let starts_at = p.starts_at.map(|w| match w.value {
        Some(t) => time_text("startsAt", Some(t), &mut problems).unwrap_or_default(),
        None => rfc3339(now),
    });
    let expires_at = p
        .expires_at
        .map(|w| time_text("expiresAt", w.value, &mut problems));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(crate::domain::GrantPatch {
        id: p.id,
        starts_at,
        expires_at,
        metadata: p.metadata.map(|m| convert::metadata(Some(m))),
        external_id: p.external_id,
    })
}

/// Decodes every item of a batch; any problem refuses the batch, listing every bad item.
fn decode_batch<T, U>(
    items: Vec<T>,
    decode: impl Fn(T) -> std::result::Result<U, Problems>,
) -> std::result::Result<Vec<U>, DomainError> {
    let mut out = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match decode(item) {
            Ok(u) => out.push(u),
            Err(problems) => errors.extend(
                problems
                    .into_iter()
                    .map(|(field, message)| ItemError::new(i, field, message)),
            ),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(DomainError::InvalidItems(errors))
    }
}

/// A single write's decoding problem as a plain field error under `prefix`.
fn single_problem(problems: Problems, prefix: &str) -> DomainError {
    let (field, message) = problems.into_iter().next().unwrap_or(("", String::new()));
    DomainError::invalid(format!("{prefix}.{field}"), message)
}

/// A single write reports its one bad item as a plain field error.
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

/// A single update of a revoked grant is refused like a second revocation.
#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "every other error keeps its meaning"
)]
fn revoked_item(e: DomainError, id: Uuid) -> DomainError {
    match e {
        DomainError::InvalidItems(items)
            if items
                .iter()
                .any(|i| i.field == "id" && i.message == GRANT_REVOKED) =>
        {
            DomainError::FailedPrecondition(format!("grant {id} is revoked and cannot be changed"))
        }
        other => other,
    }
}

/// `Ok` when a single-item write failed because its grant does not exist.
#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "every other error keeps its meaning"
)]
fn not_found_item(e: DomainError) -> std::result::Result<(), DomainError> {
    match e {
        DomainError::InvalidItems(items)
            if items
                .iter()
                .any(|i| i.field == "id" && i.message == "grant not found") =>
        {
            Ok(())
        }
        other => Err(other),
    }
}

impl Handler {
    async fn plans_of(&self, grants: &[Grant]) -> Result<HashMap<Uuid, Plan>> {
        let mut ids: Vec<Uuid> = grants.iter().map(|g| g.plan_id).collect();
        ids.sort();
        ids.dedup();
        let store = &self.engine.store;
        Ok(store
            .plans_by_ids(store.connection(), &ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect())
    }

    async fn encode(
        &self,
        grants: &[Grant],
        at: chrono::DateTime<chrono::Utc>,
        with_relations: bool,
    ) -> Result<Vec<pb::Grant>> {
        let plans = self.plans_of(grants).await?;
        let catalog = if with_relations {
            Some(self.engine.catalog().await?)
        } else {
            None
        };
        Ok(grants
            .iter()
            .map(|g| {
                let plan = plans.get(&g.plan_id);
                let relation = match (&catalog, plan) {
                    (Some(c), Some(p)) => c.plan_by_id(p.id).map(|s| convert::plan(s, c)),
                    _ => None,
                };
                convert::grant(g, plan.map_or("", |p| p.key.as_str()), at, relation)
            })
            .collect())
    }
}

#[tonic::async_trait]
impl grant_service_server::GrantService for Handler {
    async fn create_grant(
        &self,
        request: Request<CreateGrantRequest>,
    ) -> Result<Response<CreateGrantResponse>> {
        let by = principal(&request);
        let r = request.into_inner();
        let print = fingerprint(&r.grant.clone().unwrap_or_default().encode_to_vec());
        let new = r
            .grant
            .ok_or_else(|| DomainError::invalid("grant", "required"))?;
        let new = input(new).map_err(|p| single_problem(p, "grant"))?;
        let outcome = self
            .engine
            .create_grants(
                vec![new],
                GrantSource::Api,
                by.as_deref(),
                r.idempotency_key.as_deref(),
                &print,
            )
            .await
            .map_err(|e| single_item(e, "grant"))?;
        let now = self.engine.now();
        let grants = outcome.grants.unwrap_or_default();
        let grant = self.encode(&grants, now, false).await?.pop();
        Ok(Response::new(CreateGrantResponse {
            grant,
            revision: outcome.revision,
        }))
    }

    async fn get_grant(
        &self,
        request: Request<GetGrantRequest>,
    ) -> Result<Response<GetGrantResponse>> {
        let r = request.into_inner();
        let grant = self.engine.store.grant(uuid("id", &r.id)?).await?;
        let now = self.engine.present_now();
        let grant = self.encode(&[grant], now, r.with_relations).await?.pop();
        Ok(Response::new(GetGrantResponse { grant }))
    }

    async fn list_grants(
        &self,
        request: Request<ListGrantsRequest>,
    ) -> Result<Response<ListGrantsResponse>> {
        let r = request.into_inner();
        let (offset, limit) = page(r.page)?;
        let (at, created_until) = match r.at {
            Some(t) => (convert::time("at", &t)?, None),
            None => {
                let now = self.engine.present_now();
                (now, Some(now))
            }
        };
        let plan_ids = r
            .plan_ids
            .iter()
            .enumerate()
            .map(|(i, id)| uuid(&format!("plan_ids[{i}]"), id))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let statuses = r
            .statuses
            .iter()
            .filter_map(|s| match pb::GrantStatus::try_from(*s) {
                Ok(pb::GrantStatus::Active) => Some(GrantStatus::Active),
                Ok(pb::GrantStatus::Scheduled) => Some(GrantStatus::Scheduled),
                Ok(pb::GrantStatus::Expired) => Some(GrantStatus::Expired),
                Ok(pb::GrantStatus::Revoked) => Some(GrantStatus::Revoked),
                Ok(pb::GrantStatus::Unspecified) | Err(_) => None,
            })
            .map(|status| StatusFilter { status, at })
            .collect();
        let filter = GrantFilter {
            tenant_ids: r.tenant_ids,
            user_ids: r.user_ids,
            plan_ids,
            statuses,
            sources: r.sources,
            user_level: match AssignLevel::try_from(r.assign_level) {
                Ok(AssignLevel::User) => Some(true),
                Ok(AssignLevel::Tenant) => Some(false),
                Ok(AssignLevel::Unspecified) | Err(_) => None,
            },
            external_id: r.external_id,
            created_until,
            sort: match GrantSortField::try_from(r.sort_by) {
                Ok(GrantSortField::ExpiresAt) => GrantSort::ExpiresAt,
                Ok(GrantSortField::CreatedAt | GrantSortField::Unspecified) | Err(_) => {
                    GrantSort::CreatedAt
                }
            },
            descending: descending(r.order),
            offset,
            limit,
        };
        let (grants, total) = self.engine.store.list_grants(&filter).await?;
        Ok(Response::new(ListGrantsResponse {
            grants: self.encode(&grants, at, r.with_relations).await?,
            page: Some(page_info(total, offset, limit)),
        }))
    }

    async fn update_grant(
        &self,
        request: Request<UpdateGrantRequest>,
    ) -> Result<Response<UpdateGrantResponse>> {
        let r = request.into_inner();
        let p = r
            .patch
            .ok_or_else(|| DomainError::invalid("patch", "required"))?;
        let now = self.engine.now();
        let id = uuid("patch.id", &p.id)?;
        let print = fingerprint(&p.encode_to_vec());
        let p = patch(p, now).map_err(|p| single_problem(p, "patch"))?;
        let outcome = self
            .engine
            .update_grants(vec![p], None, &print)
            .await
            .map_err(|e| match not_found_item(e) {
                Ok(()) => DomainError::not_found("grant", id),
                Err(e) => single_item(revoked_item(e, id), "patch"),
            })?;
        let grants = outcome.grants.unwrap_or_default();
        let grant = self.encode(&grants, now, false).await?.pop();
        Ok(Response::new(UpdateGrantResponse {
            grant,
            revision: outcome.revision,
        }))
    }

    async fn delete_grant(
        &self,
        request: Request<DeleteGrantRequest>,
    ) -> Result<Response<DeleteGrantResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let outcome = self
            .engine
            .delete_grants(vec![id.to_string()], None, "")
            .await
            .map_err(|e| match not_found_item(e) {
                Ok(()) => DomainError::not_found("grant", id),
                Err(e) => e,
            })?;
        Ok(Response::new(DeleteGrantResponse {
            revision: outcome.revision,
        }))
    }

    async fn revoke_grant(
        &self,
        request: Request<RevokeGrantRequest>,
    ) -> Result<Response<RevokeGrantResponse>> {
        let by = principal(&request);
        let r = request.into_inner();
        let (grant, revision) = self
            .engine
            .revoke_grant(uuid("id", &r.id)?, by.as_deref(), r.reason.as_deref())
            .await?;
        let now = self.engine.now();
        let grant = self.encode(&[grant], now, false).await?.pop();
        Ok(Response::new(RevokeGrantResponse { grant, revision }))
    }

    async fn batch_create_grants(
        &self,
        request: Request<BatchCreateGrantsRequest>,
    ) -> Result<Response<BatchCreateGrantsResponse>> {
        let by = principal(&request);
        let r = request.into_inner();
        if r.grants.is_empty() {
            return Err(DomainError::invalid("grants", "at least one grant is required").into());
        }
        let print = fingerprint(
            &BatchCreateGrantsRequest {
                grants: r.grants.clone(),
                idempotency_key: None,
            }
            .encode_to_vec(),
        );
        let inputs = decode_batch(r.grants, input)?;
        let outcome = self
            .engine
            .create_grants(
                inputs,
                GrantSource::Batch,
                by.as_deref(),
                r.idempotency_key.as_deref(),
                &print,
            )
            .await?;
        Ok(Response::new(BatchCreateGrantsResponse {
            grant_ids: outcome.ids,
            revision: outcome.revision,
        }))
    }

    async fn batch_update_grants(
        &self,
        request: Request<BatchUpdateGrantsRequest>,
    ) -> Result<Response<BatchUpdateGrantsResponse>> {
        let r = request.into_inner();
        if r.patches.is_empty() {
            return Err(DomainError::invalid("patches", "at least one patch is required").into());
        }
        let print = fingerprint(
            &BatchUpdateGrantsRequest {
                patches: r.patches.clone(),
                idempotency_key: None,
            }
            .encode_to_vec(),
        );
        let now = self.engine.now();
        let patches = decode_batch(r.patches, |p| patch(p, now))?;
        let outcome = self
            .engine
            .update_grants(patches, r.idempotency_key.as_deref(), &print)
            .await?;
        Ok(Response::new(BatchUpdateGrantsResponse {
            grant_ids: outcome.ids,
            revision: outcome.revision,
        }))
    }

    async fn batch_delete_grants(
        &self,
        request: Request<BatchDeleteGrantsRequest>,
    ) -> Result<Response<BatchDeleteGrantsResponse>> {
        let r = request.into_inner();
        if r.ids.is_empty() {
            return Err(DomainError::invalid("ids", "at least one id is required").into());
        }
        let print = fingerprint(r.ids.join(",").as_bytes());
        let outcome = self
            .engine
            .delete_grants(r.ids, r.idempotency_key.as_deref(), &print)
            .await?;
        Ok(Response::new(BatchDeleteGrantsResponse {
            deleted_count: outcome.count,
            revision: outcome.revision,
        }))
    }

    async fn list_user_grants(
        &self,
        request: Request<ListUserGrantsRequest>,
    ) -> Result<Response<ListUserGrantsResponse>> {
        let r = request.into_inner();
        if r.user_id.trim().is_empty() || r.user_id.chars().count() > 255 {
            return Err(DomainError::invalid("user_id", "must be 1 to 255 characters").into());
        }
        if let Some(problem) = r.tenant_id.as_deref().and_then(tenant_id_problem) {
            return Err(DomainError::invalid("tenant_id", problem).into());
        }
        let at = r.at.map(|t| convert::time("at", &t)).transpose()?;
        let grants = self
            .engine
            .store
            .user_grants(&r.user_id, r.tenant_id.as_deref())
            .await?;
        // "Now" is read after the rows: a grant committed during the query started by then.
        let at = at.unwrap_or_else(|| self.engine.present_now());
        let plans = self.plans_of(&grants).await?;
        let out = grants
            .iter()
            .filter_map(|g| {
                let status = match g.status_at(at) {
                    GrantStatus::Active => UserGrantStatus::Active,
                    GrantStatus::Revoked => UserGrantStatus::Revoked,
                    GrantStatus::Expired => UserGrantStatus::Expired,
                    // The seed's status has no value for a grant that has not started.
                    GrantStatus::Scheduled => return None,
                };
                Some(UserGrant {
                    id: g.id.to_string(),
                    external_id: g.external_id.clone().unwrap_or_default(),
                    user_id: g.user_id.clone().unwrap_or_default(),
                    product_key: plans
                        .get(&g.plan_id)
                        .map(|p| p.key.clone())
                        .unwrap_or_default(),
                    status: status as i32,
                    granted_at: Some(convert::timestamp(g.starts_at)),
                    expires_at: g.expires_at.map(convert::timestamp),
                    revoked_at: g.revoked_at.map(convert::timestamp),
                    source: g.source.as_str().to_owned(),
                    brand_id: g.tenant_id.clone(),
                    metadata: convert::json_to_struct(&g.metadata),
                    granted_by: g.granted_by.clone().unwrap_or_default(),
                    created_at: Some(convert::timestamp(g.created_at)),
                    updated_at: Some(convert::timestamp(g.updated_at)),
                })
            })
            .collect();
        Ok(Response::new(ListUserGrantsResponse { grants: out }))
    }
}
