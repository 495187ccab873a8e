//! Grants: single and batch writes, revocation, listing, and the seed-003 user view.

use prost::Message;
use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};

use super::convert::{self, rfc3339, uuid};
use super::{Handler, Result, descending, idempotency, page, page_info, principal};
use crate::app::fingerprint;
use crate::app::grants::{GrantQuery, GrantsAt, UserGrant as HeldGrant};
use crate::app::ports::GrantSort;
use crate::domain::{DomainError, GrantInput, GrantSource, GrantStatus, ItemError};

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

fn encode(grants: &GrantsAt) -> Vec<pb::Grant> {
    grants
        .grants
        .iter()
        .map(|g| {
            convert::grant(
                &g.grant,
                &g.plan_key,
                grants.at,
                g.plan.as_ref().map(convert::plan),
            )
        })
        .collect()
}

#[tonic::async_trait]
impl grant_service_server::GrantService for Handler {
    async fn create_grant(
        &self,
        request: Request<CreateGrantRequest>,
    ) -> Result<Response<CreateGrantResponse>> {
        let by = principal(&request);
        let r = request.into_inner();
        let key = idempotency(by.as_deref(), r.idempotency_key, || {
            fingerprint(&r.grant.clone().unwrap_or_default().encode_to_vec())
        })?;
        let new = r
            .grant
            .ok_or_else(|| DomainError::invalid("grant", "required"))?;
        let new = input(new).map_err(|p| single_problem(p, "grant"))?;
        let (grants, revision) = self
            .engine
            .create_grant(new, by.as_deref(), key.as_ref())
            .await?;
        Ok(Response::new(CreateGrantResponse {
            grant: encode(&grants).pop(),
            revision,
        }))
    }

    async fn get_grant(
        &self,
        request: Request<GetGrantRequest>,
    ) -> Result<Response<GetGrantResponse>> {
        let r = request.into_inner();
        let grants = self
            .engine
            .grant(uuid("id", &r.id)?, r.with_relations)
            .await?;
        Ok(Response::new(GetGrantResponse {
            grant: encode(&grants).pop(),
        }))
    }

    async fn get_plan_with_grants(
        &self,
        request: Request<GetPlanWithGrantsRequest>,
    ) -> Result<Response<GetPlanWithGrantsResponse>> {
        let id = uuid("plan_id", &request.into_inner().plan_id)?;
        let (plan, grants, more_grants) = self.engine.plan_with_grants(id).await?;
        Ok(Response::new(GetPlanWithGrantsResponse {
            plan: Some(convert::plan(&plan)),
            grants: encode(&grants),
            more_grants,
        }))
    }

    async fn list_grants(
        &self,
        request: Request<ListGrantsRequest>,
    ) -> Result<Response<ListGrantsResponse>> {
        let r = request.into_inner();
        let page = page(r.page)?;
        let at = r.at.map(|t| convert::time("at", &t)).transpose()?;
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
            .collect();
        let query = GrantQuery {
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
            at,
            sort: match GrantSortField::try_from(r.sort_by) {
                Ok(GrantSortField::ExpiresAt) => GrantSort::ExpiresAt,
                Ok(GrantSortField::CreatedAt | GrantSortField::Unspecified) | Err(_) => {
                    GrantSort::CreatedAt
                }
            },
            descending: descending(r.order),
            with_relations: r.with_relations,
        };
        let (grants, page) = self.engine.list_grants(query, page).await?;
        Ok(Response::new(ListGrantsResponse {
            grants: encode(&grants),
            page: Some(page_info(page)),
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
        let p = patch(p, now).map_err(|p| single_problem(p, "patch"))?;
        let (grants, revision) = self.engine.update_grant(id, p, now).await?;
        Ok(Response::new(UpdateGrantResponse {
            grant: encode(&grants).pop(),
            revision,
        }))
    }

    async fn delete_grant(
        &self,
        request: Request<DeleteGrantRequest>,
    ) -> Result<Response<DeleteGrantResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let revision = self.engine.delete_grant(id).await?;
        Ok(Response::new(DeleteGrantResponse { revision }))
    }

    async fn revoke_grant(
        &self,
        request: Request<RevokeGrantRequest>,
    ) -> Result<Response<RevokeGrantResponse>> {
        let by = principal(&request);
        let r = request.into_inner();
        let (grants, revision) = self
            .engine
            .revoke_grant(uuid("id", &r.id)?, by.as_deref(), r.reason.as_deref())
            .await?;
        Ok(Response::new(RevokeGrantResponse {
            grant: encode(&grants).pop(),
            revision,
        }))
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
        let key = idempotency(by.as_deref(), r.idempotency_key, || {
            fingerprint(
                &BatchCreateGrantsRequest {
                    grants: r.grants.clone(),
                    idempotency_key: None,
                }
                .encode_to_vec(),
            )
        })?;
        let inputs = decode_batch(r.grants, input)?;
        let outcome = self
            .engine
            .create_grants(inputs, GrantSource::Batch, by.as_deref(), key.as_ref())
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
        let by = principal(&request);
        let r = request.into_inner();
        if r.patches.is_empty() {
            return Err(DomainError::invalid("patches", "at least one patch is required").into());
        }
        let key = idempotency(by.as_deref(), r.idempotency_key, || {
            fingerprint(
                &BatchUpdateGrantsRequest {
                    patches: r.patches.clone(),
                    idempotency_key: None,
                }
                .encode_to_vec(),
            )
        })?;
        let now = self.engine.now();
        let patches = decode_batch(r.patches, |p| patch(p, now))?;
        let outcome = self.engine.update_grants(patches, key.as_ref()).await?;
        Ok(Response::new(BatchUpdateGrantsResponse {
            grant_ids: outcome.ids,
            revision: outcome.revision,
        }))
    }

    async fn batch_delete_grants(
        &self,
        request: Request<BatchDeleteGrantsRequest>,
    ) -> Result<Response<BatchDeleteGrantsResponse>> {
        let by = principal(&request);
        let r = request.into_inner();
        if r.ids.is_empty() {
            return Err(DomainError::invalid("ids", "at least one id is required").into());
        }
        let key = idempotency(by.as_deref(), r.idempotency_key, || {
            fingerprint(r.ids.join(",").as_bytes())
        })?;
        let outcome = self.engine.delete_grants(r.ids, key.as_ref()).await?;
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
        let at = r.at.map(|t| convert::time("at", &t)).transpose()?;
        let grants = self
            .engine
            .user_grants(&r.user_id, r.tenant_id.as_deref(), at)
            .await?;
        let out = grants
            .into_iter()
            .map(
                |HeldGrant {
                     grant: g,
                     status,
                     product_key,
                 }| UserGrant {
                    id: g.id.to_string(),
                    external_id: g.external_id.clone().unwrap_or_default(),
                    user_id: g.user_id.clone().unwrap_or_default(),
                    product_key,
                    status: match status {
                        GrantStatus::Active => UserGrantStatus::Active,
                        GrantStatus::Revoked => UserGrantStatus::Revoked,
                        // Scheduled grants are left out of the view.
                        GrantStatus::Expired | GrantStatus::Scheduled => UserGrantStatus::Expired,
                    } as i32,
                    granted_at: Some(convert::timestamp(g.starts_at)),
                    expires_at: g.expires_at.map(convert::timestamp),
                    revoked_at: g.revoked_at.map(convert::timestamp),
                    source: g.source.as_str().to_owned(),
                    brand_id: g.tenant_id.clone(),
                    metadata: convert::json_to_struct(&g.metadata),
                    granted_by: g.granted_by.clone().unwrap_or_default(),
                    created_at: Some(convert::timestamp(g.created_at)),
                    updated_at: Some(convert::timestamp(g.updated_at)),
                },
            )
            .collect();
        Ok(Response::new(ListUserGrantsResponse { grants: out }))
    }
}
