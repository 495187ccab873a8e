//! `FeatureService`.

use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};
use uuid::Uuid;

use super::convert::{self, uuid};
use super::{
    Handler, Result, descending, encode_page, idempotency, page, principal, request_fingerprint,
};
use crate::app::features::{FeatureQuery, FeatureSort};
use crate::domain::catalog::{FeatureDoc, FeatureRef};
use crate::domain::model::Metering;
use crate::domain::{AllocationType, DomainError, Feature, MergePolicy};

/// Permission keys and the callers' permission IDs (by key).
pub(super) fn permissions(
    list: Vec<FeaturePermission>,
) -> (Vec<String>, std::collections::BTreeMap<String, String>) {
    let mut ids = std::collections::BTreeMap::new();
    let keys = list
        .into_iter()
        .map(|p| {
            if let Some(id) = p.permission_id {
                ids.insert(p.permission_key.clone(), id);
            }
            p.permission_key
        })
        .collect();
    (keys, ids)
}

/// The merge policy of a feature of type `ty`: only counted (MAX_COUNT, METERED) features take
/// one.
fn merge_policy(ty: AllocationType, policy: i32) -> std::result::Result<MergePolicy, DomainError> {
    let p = pb::MergePolicy::try_from(policy).unwrap_or(pb::MergePolicy::Unspecified);
    if ty == AllocationType::Bool && p != pb::MergePolicy::Unspecified {
        return Err(DomainError::invalid(
            "merge_policy",
            "only MAX_COUNT and METERED features take a merge policy",
        ));
    }
    Ok(convert::merge_policy_in(p))
}

/// A metering from the wire: the recurrence parsed (its own error text), the anchor required,
/// an UNSPECIFIED aggregation read as SUM.
fn metering(m: pb::Metering) -> std::result::Result<Metering, DomainError> {
    tenantry_proto::index_stream::decode_metering(m)
        .map_err(|e| DomainError::invalid(e.field, e.message))
}

fn allocation_type(t: i32) -> AllocationType {
    convert::allocation_type_in(pb::AllocationType::try_from(t).unwrap_or_default())
}

#[tonic::async_trait]
impl feature_service_server::FeatureService for Handler {
    async fn create_feature(
        &self,
        request: Request<CreateFeatureRequest>,
    ) -> Result<Response<CreateFeatureResponse>> {
        let by = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(by.as_deref(), r.idempotency_key.take(), || {
            request_fingerprint(&r)
        })?;
        let ty = allocation_type(r.allocation_type);
        let (keys, permission_ids) = permissions(r.permissions);
        let doc = FeatureDoc {
            feature: Feature {
                id: Uuid::now_v7(),
                key: r.key,
                name: r.name,
                description: Some(r.description).filter(|d| !d.is_empty()),
                metadata: convert::metadata(r.metadata),
                permissions: keys,
                allocation_type: ty,
                merge_policy: merge_policy(ty, r.merge_policy)?,
                metering: r.metering.map(metering).transpose()?,
            },
            permission_ids,
        };
        let saved = self.engine.create_feature(doc, key.as_ref()).await?;
        Ok(Response::new(CreateFeatureResponse {
            feature: Some(convert::feature(&saved.value, None)),
            revision: saved.revision,
        }))
    }

    async fn get_feature(
        &self,
        request: Request<GetFeatureRequest>,
    ) -> Result<Response<GetFeatureResponse>> {
        let selector = request
            .into_inner()
            .selector
            .ok_or_else(|| DomainError::invalid("selector", "give an id or a key"))?;
        let (which, named) = match selector {
            get_feature_request::Selector::Id(id) => (FeatureRef::Id(uuid("id", &id)?), id),
            get_feature_request::Selector::Key(key) => (FeatureRef::Key(key.clone()), key),
        };
        let feature = self
            .engine
            .feature(&which)
            .await?
            .ok_or_else(|| DomainError::not_found("feature", named))?;
        Ok(Response::new(GetFeatureResponse {
            feature: Some(convert::feature_view(&feature)),
        }))
    }

    async fn list_features(
        &self,
        request: Request<ListFeaturesRequest>,
    ) -> Result<Response<ListFeaturesResponse>> {
        let r = request.into_inner();
        let query = FeatureQuery {
            page: page(r.page)?,
            name_contains: r.filter,
            ids: r.feature_ids,
            keys: r.feature_keys,
            permission_keys: r.permission_keys,
            has_flag: r.has_feature_flag,
            sort: match FeatureSortField::try_from(r.sort_by).unwrap_or_default() {
                FeatureSortField::Name => FeatureSort::Name,
                FeatureSortField::Key => FeatureSort::Key,
                FeatureSortField::CreatedAt | FeatureSortField::Unspecified => FeatureSort::Created,
            },
            descending: descending(r.order),
        };
        let listed = self.engine.list_features(query).await?;
        let (features, page) = encode_page(listed, |f| convert::feature_view(&f));
        Ok(Response::new(ListFeaturesResponse { features, page }))
    }

    async fn update_feature(
        &self,
        request: Request<UpdateFeatureRequest>,
    ) -> Result<Response<UpdateFeatureResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let saved = self
            .engine
            .update_feature(id, |doc| {
                let f = &mut doc.feature;
                if let Some(key) = r.key {
                    f.key = key;
                }
                if let Some(name) = r.name {
                    f.name = name;
                }
                if let Some(d) = r.description {
                    f.description = Some(d).filter(|d| !d.is_empty());
                }
                if r.metadata.is_some() {
                    f.metadata = convert::metadata(r.metadata);
                }
                if let Some(list) = r.permissions {
                    let (keys, ids) = permissions(list.permissions);
                    f.permissions = keys;
                    doc.permission_ids = ids;
                }
                let f = &mut doc.feature;
                if let Some(t) = r.allocation_type {
                    f.allocation_type = allocation_type(t);
                }
                if let Some(m) = r.merge_policy {
                    f.merge_policy = merge_policy(f.allocation_type, m)?;
                }
                // A metering replaces the feature's whole; without one a metered feature keeps
                // its own, and a feature that is no longer metered has none.
                if let Some(m) = r.metering {
                    f.metering = Some(metering(m)?);
                } else if f.allocation_type != AllocationType::Metered {
                    f.metering = None;
                }
                Ok(())
            })
            .await?;
        Ok(Response::new(UpdateFeatureResponse {
            feature: Some(convert::feature_view(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn delete_feature(
        &self,
        request: Request<DeleteFeatureRequest>,
    ) -> Result<Response<DeleteFeatureResponse>> {
        let r = request.into_inner();
        let saved = self
            .engine
            .delete_feature(uuid("id", &r.id)?, r.force)
            .await?;
        let ids = |list: &[Uuid]| list.iter().map(Uuid::to_string).collect();
        Ok(Response::new(DeleteFeatureResponse {
            unlinked_plan_ids: ids(&saved.value.unlinked_plans),
            revision: saved.revision,
            updated_route_ids: ids(&saved.value.updated_routes),
            deleted_route_ids: ids(&saved.value.deleted_routes),
        }))
    }
}
