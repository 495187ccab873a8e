//! The gateway's [`Evaluator`]: the catalog and the checks from the entitlement service over
//! gRPC (one check through the coalescing checker, many in `BatchIsEntitledTo` calls of up to
//! 1,000), the caller the authenticated principal. An environment token evaluates for any
//! context; a user token for itself only: its own user and permissions and claims (as
//! `is-entitled-to` takes them), in its account or a sub-account it reaches.

use tenantry_proto::common::v1::{PageRequest, SortOrder};
use tenantry_proto::entitlement::v1::{
    self as pb, BatchIsEntitledToRequest, FeatureSortField, GetFeatureRequest, ListFeaturesRequest,
    get_feature_request::Selector,
};

use super::{CatalogFeature, Context, Evaluator, OfrepError};
use crate::{
    auth::{Caller, Principal, scope},
    error::ApiError,
    routes::{
        checks::{SubjectBody, subject},
        grants::MAX_BATCH,
    },
    state::{AppState, grpc},
};

/// Largest page of `ListFeatures`.
const FEATURE_PAGE: u32 = 1_000;

#[derive(Clone, Debug)]
pub struct GatewayEvaluator(pub AppState);

impl Evaluator for GatewayEvaluator {
    type Caller = Caller;

    async fn subject(&self, caller: &Caller, context: Context) -> Result<pb::Subject, OfrepError> {
        let principal = &caller.0;
        let Principal::User {
            user_id, tenant_id, ..
        } = principal
        else {
            return context.subject();
        };
        // A user evaluates for itself: a targeting key naming anyone else is the 403 that
        // naming another user in a check is.
        if context.targeting_key.as_ref().is_some_and(|k| k != user_id) {
            return Err(ApiError::forbidden().into());
        }
        let tenant = context.tenant_id.unwrap_or_else(|| tenant_id.clone());
        scope::ensure_account(&self.0, principal, &tenant).await?;
        let body = SubjectBody {
            tenant_id: tenant,
            user_id: None,
            permissions: Vec::new(),
            attributes: context.attributes,
        };
        Ok(subject(principal, body)?)
    }

    async fn feature(
        &self,
        caller: &Caller,
        key: &str,
    ) -> Result<Option<CatalogFeature>, OfrepError> {
        let answer = self
            .0
            .features()
            .get_feature(grpc(
                &caller.0,
                GetFeatureRequest {
                    selector: Some(Selector::Key(key.to_owned())),
                },
            ))
            .await;
        match answer {
            Ok(out) => Ok(out
                .into_inner()
                .feature
                .as_ref()
                .map(CatalogFeature::from_proto)),
            // A key the service cannot even read (too long, a `/`) names no feature either.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                Ok(None)
            }
            Err(status) => Err(ApiError::from(status).into()),
        }
    }

    async fn features(
        &self,
        caller: &Caller,
        limit: usize,
    ) -> Result<Vec<CatalogFeature>, OfrepError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let out = self
                .0
                .features()
                .list_features(grpc(
                    &caller.0,
                    ListFeaturesRequest {
                        page: Some(PageRequest {
                            limit: Some(FEATURE_PAGE),
                            offset,
                        }),
                        sort_by: FeatureSortField::Key.into(),
                        order: SortOrder::Asc.into(),
                        ..Default::default()
                    },
                ))
                .await
                .map_err(ApiError::from)?
                .into_inner();
            let count = u32::try_from(out.features.len()).unwrap_or(u32::MAX);
            all.extend(out.features.iter().map(CatalogFeature::from_proto));
            if all.len() > limit || !out.page.is_some_and(|p| p.has_next) || count == 0 {
                return Ok(all);
            }
            offset = offset.saturating_add(count);
        }
    }

    async fn check(
        &self,
        caller: &Caller,
        mut queries: Vec<pb::EntitlementQuery>,
    ) -> Result<(Vec<pb::EntitlementDecision>, u64), OfrepError> {
        let principal = &caller.0;
        if queries.len() == 1
            && let Some(q) = queries.pop()
        {
            let out = self
                .0
                .checker
                .check(principal, q, 0)
                .await
                .map_err(ApiError::from)?;
            return Ok((vec![out.decision.unwrap_or_default()], out.revision));
        }
        let mut decisions = Vec::with_capacity(queries.len());
        let mut revision = 0;
        let mut rest = queries.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<_> = rest.by_ref().take(MAX_BATCH).collect();
            // Later chunks from an index at least as fresh as the first's.
            let out = self
                .0
                .checks()
                .batch_is_entitled_to(grpc(
                    principal,
                    BatchIsEntitledToRequest {
                        queries: chunk,
                        min_revision: revision,
                    },
                ))
                .await
                .map_err(ApiError::from)?
                .into_inner();
            revision = revision.max(out.revision);
            decisions.extend(out.decisions);
        }
        Ok((decisions, revision))
    }
}
