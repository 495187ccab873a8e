//! `PlanService`.

use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};

use super::convert::{self, uuid};
use super::{
    Handler, Result, descending, encode_page, idempotency, page, principal, request_fingerprint,
};
use crate::app::plans::{
    NewPlan, PlanLinks, PlanPatch, PlanQuery, PlanSort, PlanUnlinks, TenantPlansQuery,
};
use crate::domain::catalog::PlanRef;
use crate::domain::{DomainError, PlanFeature, Treatment};

fn plan_features(inputs: Vec<PlanFeatureInput>) -> Vec<PlanFeature> {
    inputs
        .into_iter()
        .map(|f| PlanFeature {
            feature_key: f.feature_key,
            allocation: convert::allocation_in(f.allocation),
        })
        .collect()
}

#[tonic::async_trait]
impl plan_service_server::PlanService for Handler {
    async fn create_plan(
        &self,
        request: Request<CreatePlanRequest>,
    ) -> Result<Response<CreatePlanResponse>> {
        let by = principal(&request);
        let mut r = request.into_inner();
        let key = idempotency(by.as_deref(), r.idempotency_key.take(), || {
            request_fingerprint(&r)
        })?;
        let new = NewPlan {
            rules: convert::rules_in("rules", r.rules)?,
            key: r.key,
            name: r.name,
            description: Some(r.description).filter(|d| !d.is_empty()),
            metadata: convert::metadata(r.metadata),
            features: plan_features(r.features),
            default_time_limitation_days: r.default_time_limitation_days,
            assign_on_signup: r.assign_on_signup,
            // Targeting grants the plan without a grant, so it is opt-in: unset = FALSE.
            default_treatment: convert::treatment_in(
                pb::Treatment::try_from(r.default_treatment).unwrap_or_default(),
                Treatment::False,
            ),
            inherit_to_sub_accounts: r.inherit_to_sub_accounts,
        };
        let saved = self.engine.create_plan(new, key.as_ref()).await?;
        Ok(Response::new(CreatePlanResponse {
            plan: Some(convert::plan(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn get_plan(
        &self,
        request: Request<GetPlanRequest>,
    ) -> Result<Response<GetPlanResponse>> {
        let selector = request
            .into_inner()
            .selector
            .ok_or_else(|| DomainError::invalid("selector", "give an id or a key"))?;
        let (which, named) = match selector {
            get_plan_request::Selector::Id(id) => (PlanRef::Id(uuid("id", &id)?), id),
            get_plan_request::Selector::Key(key) => (PlanRef::Key(key.clone()), key),
        };
        let plan = self
            .engine
            .plan(&which)
            .await?
            .ok_or_else(|| DomainError::not_found("plan", named))?;
        Ok(Response::new(GetPlanResponse {
            plan: Some(convert::plan(&plan)),
        }))
    }

    async fn list_plans(
        &self,
        request: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>> {
        let r = request.into_inner();
        let query = PlanQuery {
            page: page(r.page)?,
            name_contains: r.filter,
            feature_ids: r.feature_ids,
            tenant_ids: r.tenant_ids,
            user_ids: r.user_ids,
            sort: match PlanSortField::try_from(r.sort_by).unwrap_or_default() {
                PlanSortField::Name => PlanSort::Name,
                PlanSortField::CreatedAt | PlanSortField::Unspecified => PlanSort::Created,
            },
            descending: descending(r.order),
        };
        let listed = self.engine.list_plans(query).await?;
        let (plans, page) = encode_page(listed, |p| convert::plan(&p));
        Ok(Response::new(ListPlansResponse { plans, page }))
    }

    async fn update_plan(
        &self,
        request: Request<UpdatePlanRequest>,
    ) -> Result<Response<UpdatePlanResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let patch = PlanPatch {
            rules: r
                .rules
                .map(|list| convert::rules_in("rules", list.rules))
                .transpose()?,
            default_treatment: r
                .default_treatment
                .map(|t| convert::required_treatment("default_treatment", t))
                .transpose()?,
            key: r.key,
            name: r.name,
            description: r.description,
            metadata: r.metadata.is_some().then(|| convert::metadata(r.metadata)),
            features: r.features.map(|list| plan_features(list.features)),
            default_time_limitation_days: r.default_time_limitation_days.map(|days| days.value),
            assign_on_signup: r.assign_on_signup,
            inherit_to_sub_accounts: r.inherit_to_sub_accounts,
        };
        let saved = self.engine.update_plan(id, patch).await?;
        Ok(Response::new(UpdatePlanResponse {
            plan: Some(convert::plan(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn delete_plan(
        &self,
        request: Request<DeletePlanRequest>,
    ) -> Result<Response<DeletePlanResponse>> {
        let by = principal(&request).unwrap_or_else(|| "api".to_owned());
        let r = request.into_inner();
        let saved = self
            .engine
            .delete_plan(uuid("id", &r.id)?, r.force, &by)
            .await?;
        Ok(Response::new(DeletePlanResponse {
            revoked_grants: saved.value,
            revision: saved.revision,
        }))
    }

    async fn list_plan_features(
        &self,
        request: Request<ListPlanFeaturesRequest>,
    ) -> Result<Response<ListPlanFeaturesResponse>> {
        let id = uuid("plan_id", &request.into_inner().plan_id)?;
        let (plan, features) = self.engine.plan_features(id).await?;
        Ok(Response::new(ListPlanFeaturesResponse {
            plan_features: convert::plan(&plan).features,
            features: features.iter().map(convert::feature_view).collect(),
        }))
    }

    async fn link_plan_features(
        &self,
        request: Request<LinkPlanFeaturesRequest>,
    ) -> Result<Response<LinkPlanFeaturesResponse>> {
        let r = request.into_inner();
        let id = uuid("plan_id", &r.plan_id)?;
        let links = PlanLinks {
            feature_ids: r.feature_ids,
            features: plan_features(r.features),
        };
        let saved = self.engine.link_plan_features(id, links).await?;
        Ok(Response::new(LinkPlanFeaturesResponse {
            plan: Some(convert::plan(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn unlink_plan_features(
        &self,
        request: Request<UnlinkPlanFeaturesRequest>,
    ) -> Result<Response<UnlinkPlanFeaturesResponse>> {
        let r = request.into_inner();
        let id = uuid("plan_id", &r.plan_id)?;
        let unlinks = PlanUnlinks {
            feature_keys: r.feature_keys,
            feature_ids: r.feature_ids,
        };
        let saved = self.engine.unlink_plan_features(id, unlinks).await?;
        Ok(Response::new(UnlinkPlanFeaturesResponse {
            plan: Some(convert::plan(&saved.value)),
            revision: saved.revision,
        }))
    }

    async fn list_tenant_plans(
        &self,
        request: Request<ListTenantPlansRequest>,
    ) -> Result<Response<ListTenantPlansResponse>> {
        let r = request.into_inner();
        let plans = self
            .engine
            .tenant_plans(TenantPlansQuery {
                tenant_id: r.tenant_id,
                feature_keys: r.feature_keys,
                exclude_non_entitled_plans: r.exclude_non_entitled_plans,
                min_revision: r.min_revision,
            })
            .await?;
        Ok(Response::new(ListTenantPlansResponse {
            plans: plans
                .into_iter()
                .map(|p| TenantPlan {
                    plan: Some(convert::plan(&p.plan)),
                    targeted: p.targeted,
                    entitled: p.entitled,
                    grant_ids: p.grant_ids.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        }))
    }
}
