//! OFREP on the agent: the gateway's OFREP routes over the agent's own index. The catalog comes
//! from the index the agent holds and the checks from the same in-process check handlers its
//! other routes use; nothing calls the service. Like the agent's other routes, the listener is
//! unauthenticated (the pod's loopback), so a context may name any account, as with an
//! environment token on the gateway.

use axum::extract::FromRequestParts;
use http::{StatusCode, request::Parts};
use serde_json::{Map, Value};
use tenantry_client::{
    Evaluator,
    index::{EntitlementIndex, Feature, FeatureFlag},
};
use tenantry_entitlement::checks::CheckService;
use tenantry_gateway::ofrep::{self, CatalogFeature, Context, ErrorCode, OfrepError};
use tenantry_proto::entitlement::v1::{self as pb, BatchIsEntitledToRequest};

use super::FollowedIndex;

/// Most queries per in-process batch: the check handlers' own bound.
const CHUNK: usize = 1_000;

/// Whoever reached the agent's loopback listener.
#[derive(Debug, Clone, Copy)]
pub struct Loopback;

impl<S: Send + Sync> FromRequestParts<S> for Loopback {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self)
    }
}

#[derive(Debug, Clone)]
pub struct AgentOfrep {
    pub evaluator: Evaluator,
    pub checks: CheckService<FollowedIndex>,
}

impl AgentOfrep {
    async fn index(&self) -> Result<std::sync::Arc<EntitlementIndex>, OfrepError> {
        self.evaluator
            .index_at_least(0)
            .await
            .map_err(|_| OfrepError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: ErrorCode::General,
                details: "the agent holds no index snapshot yet".to_owned(),
                retry_after: Some(1),
            })
    }
}

fn catalog_feature((feature, flag): (&Feature, Option<&FeatureFlag>)) -> CatalogFeature {
    CatalogFeature {
        key: feature.key.clone(),
        allocation_type: tenantry_proto::index_stream::allocation_type(feature.allocation_type),
        flag_on: flag.map(|f| f.on),
    }
}

impl ofrep::Evaluator for AgentOfrep {
    type Caller = Loopback;

    async fn subject(&self, _: &Loopback, context: Context) -> Result<pb::Subject, OfrepError> {
        context.subject()
    }

    async fn feature(&self, _: &Loopback, key: &str) -> Result<Option<CatalogFeature>, OfrepError> {
        Ok(self
            .index()
            .await?
            .catalog_feature(key)
            .map(catalog_feature))
    }

    async fn features(
        &self,
        _: &Loopback,
        limit: usize,
    ) -> Result<Vec<CatalogFeature>, OfrepError> {
        let index = self.index().await?;
        let mut all: Vec<_> = index.catalog_features().map(catalog_feature).collect();
        all.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        all.truncate(limit.saturating_add(1));
        Ok(all)
    }

    async fn check(
        &self,
        _: &Loopback,
        queries: Vec<pb::EntitlementQuery>,
    ) -> Result<(Vec<pb::EntitlementDecision>, u64), OfrepError> {
        use tenantry_proto::entitlement::v1::entitlement_service_server::EntitlementService;
        let mut decisions = Vec::with_capacity(queries.len());
        let mut revision = 0;
        let mut rest = queries.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<_> = rest.by_ref().take(CHUNK).collect();
            // Later chunks from an index at least as fresh as the first's.
            let out = self
                .checks
                .batch_is_entitled_to(tonic::Request::new(BatchIsEntitledToRequest {
                    queries: chunk,
                    min_revision: revision,
                }))
                .await?
                .into_inner();
            revision = revision.max(out.revision);
            decisions.extend(out.decisions);
        }
        Ok((decisions, revision))
    }

    /// How stale the answer may be, as the agent's headers and `/readyz` say it.
    fn metadata(&self) -> Map<String, Value> {
        let s = self.evaluator.staleness();
        let mut out = Map::new();
        out.insert("agentStale".to_owned(), s.is_stale().into());
        out.insert("agentIndexOrigin".to_owned(), s.origin.as_str().into());
        if let Some(age) = s.since_contact() {
            let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            out.insert("agentStalenessMs".to_owned(), ms.into());
        }
        out
    }
}
