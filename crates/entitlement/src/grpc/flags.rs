//! `FeatureFlagService`.

use tenantry_proto::entitlement::v1::*;
use tonic::{Request, Response};

use super::convert::{self, uuid};
use super::{
    Handler, Result, descending, encode_page, idempotency, page, principal, request_fingerprint,
};
use crate::app::flags::{FlagPatch, FlagQuery, FlagSort, NewFlag};
use crate::domain::DomainError;
use crate::domain::catalog::FeatureRef;

#[tonic::async_trait]
impl feature_flag_service_server::FeatureFlagService for Handler {
    async fn create_feature_flag(
        &self,
        request: Request<CreateFeatureFlagRequest>,
    ) -> Result<Response<CreateFeatureFlagResponse>> {
        let by = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(by.as_deref(), r.idempotency_key.take(), || {
            request_fingerprint(&r)
        })?;
        let feature = match r.feature {
            Some(create_feature_flag_request::Feature::FeatureId(id)) => {
                FeatureRef::Id(uuid("feature_id", &id)?)
            }
            Some(create_feature_flag_request::Feature::FeatureKey(key)) => FeatureRef::Key(key),
            None => {
                return Err(
                    DomainError::invalid("feature", "give feature_id or feature_key").into(),
                );
            }
        };
        let new = NewFlag {
            off_treatment: convert::required_treatment("off_treatment", r.off_treatment)?,
            default_treatment: convert::required_treatment(
                "default_treatment",
                r.default_treatment,
            )?,
            rules: convert::rules_in("rules", r.rules)?,
            feature,
            name: r.name,
            description: Some(r.description).filter(|d| !d.is_empty()),
            on: r.on,
            metadata: convert::metadata(r.metadata),
        };
        let saved = self.engine.create_flag(new, key.as_ref()).await?;
        Ok(Response::new(CreateFeatureFlagResponse {
            feature_flag: Some(convert::flag_view(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn get_feature_flag(
        &self,
        request: Request<GetFeatureFlagRequest>,
    ) -> Result<Response<GetFeatureFlagResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let flag = self.engine.flag(id).await?;
        Ok(Response::new(GetFeatureFlagResponse {
            feature_flag: Some(convert::flag_view(&flag)),
        }))
    }

    async fn list_feature_flags(
        &self,
        request: Request<ListFeatureFlagsRequest>,
    ) -> Result<Response<ListFeatureFlagsResponse>> {
        let r = request.into_inner();
        let query = FlagQuery {
            page: page(r.page)?,
            name_contains: r.filter,
            feature_ids: r.feature_ids,
            on: r.on,
            sort: match FeatureFlagSortField::try_from(r.sort_by).unwrap_or_default() {
                FeatureFlagSortField::Name => FlagSort::Name,
                FeatureFlagSortField::UpdatedAt => FlagSort::Updated,
                FeatureFlagSortField::CreatedAt | FeatureFlagSortField::Unspecified => {
                    FlagSort::Created
                }
            },
            descending: descending(r.order),
        };
        let listed = self.engine.list_flags(query).await?;
        let (feature_flags, page) = encode_page(listed, |f| convert::flag_view(&f));
        Ok(Response::new(ListFeatureFlagsResponse {
            feature_flags,
            page,
        }))
    }

    async fn update_feature_flag(
        &self,
        request: Request<UpdateFeatureFlagRequest>,
    ) -> Result<Response<UpdateFeatureFlagResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let patch = FlagPatch {
            rules: r
                .rules
                .map(|l| convert::rules_in("rules", l.rules))
                .transpose()?,
            off_treatment: r
                .off_treatment
                .map(|t| convert::required_treatment("off_treatment", t))
                .transpose()?,
            default_treatment: r
                .default_treatment
                .map(|t| convert::required_treatment("default_treatment", t))
                .transpose()?,
            name: r.name,
            on: r.on,
            description: r.description,
            metadata: r.metadata.is_some().then(|| convert::metadata(r.metadata)),
            feature_id: r
                .feature_id
                .as_deref()
                .map(|f| uuid("feature_id", f))
                .transpose()?,
        };
        let saved = self.engine.update_flag(id, patch).await?;
        Ok(Response::new(UpdateFeatureFlagResponse {
            feature_flag: Some(convert::flag_view(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn delete_feature_flag(
        &self,
        request: Request<DeleteFeatureFlagRequest>,
    ) -> Result<Response<DeleteFeatureFlagResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let revision = self.engine.delete_flag(id).await?;
        Ok(Response::new(DeleteFeatureFlagResponse { revision }))
    }
}
