//! Features, plans, feature flags and routes.

use tenantry_proto::entitlement::v1::{self as pb, *};
use tonic::{Request, Response};
use uuid::Uuid;

use super::convert::{self, uuid};
use super::{Handler, Result, descending, page, paginate};
use crate::domain::{
    AllocationType, DomainError, Feature, FeatureFlag, Plan, PlanFeature, Route, RoutePolicy,
    Treatment, validate_key,
};
use crate::service::FeatureRef;
use crate::storage::{Catalog, FeatureDoc, FlagDoc, Stored};

fn permissions(
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

fn merge_policy(
    ty: AllocationType,
    policy: i32,
) -> std::result::Result<crate::domain::MergePolicy, DomainError> {
    let p = pb::MergePolicy::try_from(policy).unwrap_or(pb::MergePolicy::Unspecified);
    if ty == AllocationType::Bool && p != pb::MergePolicy::Unspecified {
        return Err(DomainError::invalid(
            "merge_policy",
            "only MAX_COUNT features take a merge policy",
        ));
    }
    Ok(convert::merge_policy_in(p))
}

fn feature_out(catalog: &Catalog, f: &Stored<FeatureDoc>) -> pb::Feature {
    convert::feature(f, catalog.flag_of(&f.value.feature.key))
}

/// Derives a key from a name: lowercased, other characters → `-`.
fn key_from_name(name: &str) -> String {
    let mut key: String = name
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    key.truncate(64);
    key
}

fn plan_features(
    catalog: &Catalog,
    inputs: Vec<PlanFeatureInput>,
) -> std::result::Result<Vec<PlanFeature>, DomainError> {
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            if catalog.feature_by_key(&f.feature_key).is_none() {
                return Err(DomainError::NotFound {
                    kind: "feature",
                    id: f.feature_key,
                });
            }
            let _ = i;
            Ok(PlanFeature {
                feature_key: f.feature_key,
                allocation: convert::allocation_in(f.allocation),
            })
        })
        .collect()
}

#[tonic::async_trait]
impl feature_service_server::FeatureService for Handler {
    async fn create_feature(
        &self,
        request: Request<CreateFeatureRequest>,
    ) -> Result<Response<CreateFeatureResponse>> {
        let r = request.into_inner();
        let ty = convert::allocation_type_in(
            pb::AllocationType::try_from(r.allocation_type).unwrap_or_default(),
        );
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
            },
            permission_ids,
        };
        let (stored, revision) = self.engine.create_feature(doc).await?;
        Ok(Response::new(CreateFeatureResponse {
            feature: Some(convert::feature(&stored, None)),
            revision,
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
        let catalog = self.engine.catalog().await?;
        let found = match &selector {
            get_feature_request::Selector::Id(id) => catalog.feature_by_id(uuid("id", id)?),
            get_feature_request::Selector::Key(key) => catalog.feature_by_key(key),
        };
        let feature = found.ok_or_else(|| {
            DomainError::not_found(
                "feature",
                match selector {
                    get_feature_request::Selector::Id(s)
                    | get_feature_request::Selector::Key(s) => s,
                },
            )
        })?;
        Ok(Response::new(GetFeatureResponse {
            feature: Some(feature_out(&catalog, feature)),
        }))
    }

    async fn list_features(
        &self,
        request: Request<ListFeaturesRequest>,
    ) -> Result<Response<ListFeaturesResponse>> {
        let r = request.into_inner();
        let (offset, limit) = page(r.page)?;
        let catalog = self.engine.catalog().await?;
        let filter = r.filter.map(|f| f.to_lowercase());
        let mut items: Vec<&Stored<FeatureDoc>> = catalog
            .features
            .iter()
            .filter(|f| {
                let feature = &f.value.feature;
                filter
                    .as_ref()
                    .is_none_or(|s| feature.name.to_lowercase().contains(s))
                    && (r.feature_ids.is_empty() || r.feature_ids.contains(&feature.id.to_string()))
                    && (r.feature_keys.is_empty() || r.feature_keys.contains(&feature.key))
                    && (r.permission_keys.is_empty()
                        || feature
                            .permissions
                            .iter()
                            .any(|p| r.permission_keys.contains(p)))
                    && r.has_feature_flag
                        .is_none_or(|want| catalog.flag_of(&feature.key).is_some() == want)
            })
            .collect();
        match FeatureSortField::try_from(r.sort_by).unwrap_or_default() {
            FeatureSortField::Name => items.sort_by(|a, b| {
                (&a.value.feature.name, a.value.feature.id)
                    .cmp(&(&b.value.feature.name, b.value.feature.id))
            }),
            FeatureSortField::Key => {
                items.sort_by(|a, b| a.value.feature.key.cmp(&b.value.feature.key))
            }
            FeatureSortField::CreatedAt | FeatureSortField::Unspecified => {}
        }
        if descending(r.order) {
            items.reverse();
        }
        let (items, page) = paginate(items, offset, limit);
        Ok(Response::new(ListFeaturesResponse {
            features: items
                .into_iter()
                .map(|f| feature_out(&catalog, f))
                .collect(),
            page: Some(page),
        }))
    }

    async fn update_feature(
        &self,
        request: Request<UpdateFeatureRequest>,
    ) -> Result<Response<UpdateFeatureResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let (stored, revision) = self
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
                    f.allocation_type = convert::allocation_type_in(
                        pb::AllocationType::try_from(t).unwrap_or_default(),
                    );
                }
                if let Some(m) = r.merge_policy {
                    f.merge_policy = merge_policy(f.allocation_type, m)?;
                }
                Ok(())
            })
            .await?;
        let catalog = self.engine.catalog().await?;
        Ok(Response::new(UpdateFeatureResponse {
            feature: Some(feature_out(&catalog, &stored)),
            revision,
        }))
    }

    async fn delete_feature(
        &self,
        request: Request<DeleteFeatureRequest>,
    ) -> Result<Response<DeleteFeatureResponse>> {
        let r = request.into_inner();
        let (deletion, revision) = self
            .engine
            .delete_feature(uuid("id", &r.id)?, r.force)
            .await?;
        let ids = |list: &[Uuid]| list.iter().map(Uuid::to_string).collect();
        Ok(Response::new(DeleteFeatureResponse {
            unlinked_plan_ids: ids(&deletion.unlinked_plans),
            revision,
            updated_route_ids: ids(&deletion.updated_routes),
            deleted_route_ids: ids(&deletion.deleted_routes),
        }))
    }
}

fn plan_selector_not_found(selector: get_plan_request::Selector) -> DomainError {
    match selector {
        get_plan_request::Selector::Id(s) | get_plan_request::Selector::Key(s) => {
            DomainError::not_found("plan", s)
        }
    }
}

#[tonic::async_trait]
impl plan_service_server::PlanService for Handler {
    async fn create_plan(
        &self,
        request: Request<CreatePlanRequest>,
    ) -> Result<Response<CreatePlanResponse>> {
        let r = request.into_inner();
        let catalog = self.engine.catalog().await?;
        let key = r.key.unwrap_or_else(|| key_from_name(&r.name));
        validate_key("key", &key)?;
        let plan = Plan {
            id: Uuid::now_v7(),
            key,
            name: r.name,
            description: Some(r.description).filter(|d| !d.is_empty()),
            metadata: convert::metadata(r.metadata),
            features: plan_features(&catalog, r.features)?,
            default_time_limitation_days: r.default_time_limitation_days,
            assign_on_signup: r.assign_on_signup,
            rules: convert::rules_in("rules", r.rules)?,
            // Targeting grants the plan without a grant, so it is opt-in: unset = FALSE.
            default_treatment: convert::treatment_in(
                pb::Treatment::try_from(r.default_treatment).unwrap_or_default(),
                Treatment::False,
            ),
            inherit_to_sub_accounts: r.inherit_to_sub_accounts,
        };
        let (stored, revision) = self.engine.create_plan(plan).await?;
        let catalog = self.engine.catalog().await?;
        Ok(Response::new(CreatePlanResponse {
            plan: Some(convert::plan(&stored, &catalog)),
            revision,
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
        let catalog = self.engine.catalog().await?;
        let found = match &selector {
            get_plan_request::Selector::Id(id) => catalog.plan_by_id(uuid("id", id)?),
            get_plan_request::Selector::Key(key) => catalog.plan_by_key(key),
        };
        let plan = found.ok_or_else(|| plan_selector_not_found(selector.clone()))?;
        Ok(Response::new(GetPlanResponse {
            plan: Some(convert::plan(plan, &catalog)),
        }))
    }

    async fn list_plans(
        &self,
        request: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>> {
        let r = request.into_inner();
        let (offset, limit) = page(r.page)?;
        let catalog = self.engine.catalog().await?;
        let granted = if r.tenant_ids.is_empty() && r.user_ids.is_empty() {
            None
        } else {
            Some(
                self.engine
                    .store
                    .granted_plan_ids(&r.tenant_ids, &r.user_ids)
                    .await?,
            )
        };
        let feature_keys: Vec<&str> = r
            .feature_ids
            .iter()
            .filter_map(|id| Uuid::try_parse(id).ok())
            .filter_map(|id| catalog.feature_by_id(id))
            .map(|f| f.value.feature.key.as_str())
            .collect();
        let filter = r.filter.map(|f| f.to_lowercase());
        let mut items: Vec<&Stored<Plan>> = catalog
            .plans
            .iter()
            .filter(|p| {
                filter
                    .as_ref()
                    .is_none_or(|s| p.value.name.to_lowercase().contains(s))
                    && (r.feature_ids.is_empty()
                        || p.value
                            .features
                            .iter()
                            .any(|pf| feature_keys.contains(&pf.feature_key.as_str())))
                    && granted.as_ref().is_none_or(|g| g.contains(&p.value.id))
            })
            .collect();
        if PlanSortField::try_from(r.sort_by).unwrap_or_default() == PlanSortField::Name {
            items.sort_by(|a, b| (&a.value.name, a.value.id).cmp(&(&b.value.name, b.value.id)));
        }
        if descending(r.order) {
            items.reverse();
        }
        let (items, page) = paginate(items, offset, limit);
        Ok(Response::new(ListPlansResponse {
            plans: items
                .into_iter()
                .map(|p| convert::plan(p, &catalog))
                .collect(),
            page: Some(page),
        }))
    }

    async fn update_plan(
        &self,
        request: Request<UpdatePlanRequest>,
    ) -> Result<Response<UpdatePlanResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let (stored, revision) = self
            .engine
            .update_plan(id, |p, catalog| {
                if let Some(key) = r.key {
                    p.key = key;
                }
                if let Some(name) = r.name {
                    p.name = name;
                }
                if let Some(d) = r.description {
                    p.description = Some(d).filter(|d| !d.is_empty());
                }
                if r.metadata.is_some() {
                    p.metadata = convert::metadata(r.metadata);
                }
                if let Some(list) = r.features {
                    p.features = plan_features(catalog, list.features)?;
                }
                if let Some(days) = r.default_time_limitation_days {
                    p.default_time_limitation_days = days.value;
                }
                if let Some(a) = r.assign_on_signup {
                    p.assign_on_signup = a;
                }
                if let Some(list) = r.rules {
                    p.rules = convert::rules_in("rules", list.rules)?;
                }
                if let Some(t) = r.default_treatment {
                    p.default_treatment = convert::required_treatment("default_treatment", t)?;
                }
                if let Some(i) = r.inherit_to_sub_accounts {
                    p.inherit_to_sub_accounts = i;
                }
                Ok(())
            })
            .await?;
        let catalog = self.engine.catalog().await?;
        Ok(Response::new(UpdatePlanResponse {
            plan: Some(convert::plan(&stored, &catalog)),
            revision,
        }))
    }

    async fn delete_plan(
        &self,
        request: Request<DeletePlanRequest>,
    ) -> Result<Response<DeletePlanResponse>> {
        let by = super::principal(&request).unwrap_or_else(|| "api".to_owned());
        let r = request.into_inner();
        let (revoked_grants, revision) = self
            .engine
            .delete_plan(uuid("id", &r.id)?, r.force, &by)
            .await?;
        Ok(Response::new(DeletePlanResponse {
            revoked_grants,
            revision,
        }))
    }

    async fn list_plan_features(
        &self,
        request: Request<ListPlanFeaturesRequest>,
    ) -> Result<Response<ListPlanFeaturesResponse>> {
        let id = uuid("plan_id", &request.into_inner().plan_id)?;
        let catalog = self.engine.catalog().await?;
        let plan = catalog
            .plan_by_id(id)
            .ok_or_else(|| DomainError::not_found("plan", id))?;
        let encoded = convert::plan(plan, &catalog);
        let features = encoded
            .features
            .iter()
            .filter_map(|pf| catalog.feature_by_key(&pf.feature_key))
            .map(|f| feature_out(&catalog, f))
            .collect();
        Ok(Response::new(ListPlanFeaturesResponse {
            plan_features: encoded.features,
            features,
        }))
    }

    async fn link_plan_features(
        &self,
        request: Request<LinkPlanFeaturesRequest>,
    ) -> Result<Response<LinkPlanFeaturesResponse>> {
        let r = request.into_inner();
        let id = uuid("plan_id", &r.plan_id)?;
        let (stored, revision) = self
            .engine
            .update_plan(id, |p, catalog| {
                let mut links = Vec::new();
                for (i, fid) in r.feature_ids.iter().enumerate() {
                    let feature = catalog
                        .feature_by_id(uuid(&format!("feature_ids[{i}]"), fid)?)
                        .ok_or_else(|| DomainError::not_found("feature", fid))?;
                    links.push(PlanFeature::bare(feature.value.feature.key.clone()));
                }
                links.extend(plan_features(catalog, r.features)?);
                for link in links {
                    match p
                        .features
                        .iter_mut()
                        .find(|pf| pf.feature_key == link.feature_key)
                    {
                        Some(existing) => existing.allocation = link.allocation,
                        None => p.features.push(link),
                    }
                }
                Ok(())
            })
            .await?;
        let catalog = self.engine.catalog().await?;
        Ok(Response::new(LinkPlanFeaturesResponse {
            plan: Some(convert::plan(&stored, &catalog)),
            revision,
        }))
    }

    async fn unlink_plan_features(
        &self,
        request: Request<UnlinkPlanFeaturesRequest>,
    ) -> Result<Response<UnlinkPlanFeaturesResponse>> {
        let r = request.into_inner();
        let id = uuid("plan_id", &r.plan_id)?;
        let (stored, revision) = self
            .engine
            .update_plan(id, |p, catalog| {
                let mut keys = r.feature_keys;
                for fid in &r.feature_ids {
                    if let Some(f) = Uuid::try_parse(fid)
                        .ok()
                        .and_then(|id| catalog.feature_by_id(id))
                    {
                        keys.push(f.value.feature.key.clone());
                    }
                }
                p.features.retain(|pf| !keys.contains(&pf.feature_key));
                Ok(())
            })
            .await?;
        let catalog = self.engine.catalog().await?;
        Ok(Response::new(UnlinkPlanFeaturesResponse {
            plan: Some(convert::plan(&stored, &catalog)),
            revision,
        }))
    }

    async fn list_tenant_plans(
        &self,
        request: Request<ListTenantPlansRequest>,
    ) -> Result<Response<ListTenantPlansResponse>> {
        let r = request.into_inner();
        crate::domain::validate_tenant_id("tenant_id", &r.tenant_id)?;
        let index = self.index(r.min_revision).await?;
        // The local hierarchy copy knows every live account (from the change feed, or a grant
        // written here); one it does not know is unknown or deleted.
        if !index.contains_tenant(&r.tenant_id) {
            return Err(DomainError::not_found("tenant", &r.tenant_id).into());
        }
        let engine = &self.engine;
        let mut tenants = vec![r.tenant_id.clone()];
        tenants.extend(index.ancestors(&r.tenant_id).into_iter().map(str::to_owned));
        let grants = engine.store.account_grants(&tenants).await?;
        // Read after the rows: a grant committed during the query has started by then.
        let now = engine.present(&index);
        let catalog = engine.catalog().await?;
        let mut plans: Vec<&Stored<Plan>> = catalog.plans.iter().collect();
        plans.sort_by(|a, b| a.value.key.cmp(&b.value.key));
        let mut out = Vec::new();
        for plan in plans {
            if !r.feature_keys.is_empty()
                && !plan
                    .value
                    .features
                    .iter()
                    .any(|pf| r.feature_keys.contains(&pf.feature_key))
            {
                continue;
            }
            let held: Vec<&crate::domain::Grant> = grants
                .iter()
                .filter(|g| {
                    g.plan_id == plan.value.id
                        && (g.tenant_id == r.tenant_id || plan.value.inherit_to_sub_accounts)
                })
                .collect();
            let entitled = held
                .iter()
                .any(|g| g.status_at(now) == crate::domain::GrantStatus::Active);
            let targeted =
                plan.value.has_targeting() && crate::domain::plan_targets(&plan.value, None);
            if r.exclude_non_entitled_plans && !entitled {
                continue;
            }
            out.push(TenantPlan {
                plan: Some(convert::plan(plan, &catalog)),
                targeted,
                entitled,
                grant_ids: held
                    .iter()
                    .filter(|g| g.tenant_id == r.tenant_id)
                    .map(|g| g.id.to_string())
                    .collect(),
            });
        }
        Ok(Response::new(ListTenantPlansResponse { plans: out }))
    }
}

fn flag_out(catalog: &Catalog, flag: &Stored<FlagDoc>) -> pb::FeatureFlag {
    let feature = catalog
        .feature_by_id(flag.value.feature_id)
        .map(|f| f.value.feature.clone());
    match feature {
        Some(f) => convert::feature_flag(flag, &f),
        None => convert::feature_flag(
            flag,
            &Feature {
                id: flag.value.feature_id,
                key: flag.value.flag.feature_key.clone(),
                name: String::new(),
                description: None,
                metadata: serde_json::Value::Null,
                permissions: vec![],
                allocation_type: AllocationType::Bool,
                merge_policy: crate::domain::MergePolicy::Max,
            },
        ),
    }
}

#[tonic::async_trait]
impl feature_flag_service_server::FeatureFlagService for Handler {
    async fn create_feature_flag(
        &self,
        request: Request<CreateFeatureFlagRequest>,
    ) -> Result<Response<CreateFeatureFlagResponse>> {
        let r = request.into_inner();
        let target = match r.feature {
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
        let off = convert::required_treatment("off_treatment", r.off_treatment)?;
        let default = convert::required_treatment("default_treatment", r.default_treatment)?;
        let rules = convert::rules_in("rules", r.rules)?;
        if r.name.trim().is_empty() {
            return Err(DomainError::invalid("name", "must not be empty").into());
        }
        let (stored, revision) = self
            .engine
            .create_flag(target, |feature| {
                Ok(FlagDoc {
                    flag: FeatureFlag {
                        id: Uuid::now_v7(),
                        feature_key: feature.key.clone(),
                        name: r.name,
                        description: Some(r.description).filter(|d| !d.is_empty()),
                        on: r.on,
                        off_treatment: off,
                        default_treatment: default,
                        rules,
                    },
                    feature_id: feature.id,
                    metadata: convert::metadata(r.metadata),
                })
            })
            .await?;
        let catalog = self.engine.catalog().await?;
        Ok(Response::new(CreateFeatureFlagResponse {
            feature_flag: Some(flag_out(&catalog, &stored)),
            revision,
        }))
    }

    async fn get_feature_flag(
        &self,
        request: Request<GetFeatureFlagRequest>,
    ) -> Result<Response<GetFeatureFlagResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let catalog = self.engine.catalog().await?;
        let flag = catalog
            .flags
            .iter()
            .find(|f| f.value.flag.id == id)
            .ok_or_else(|| DomainError::not_found("feature flag", id))?;
        Ok(Response::new(GetFeatureFlagResponse {
            feature_flag: Some(flag_out(&catalog, flag)),
        }))
    }

    async fn list_feature_flags(
        &self,
        request: Request<ListFeatureFlagsRequest>,
    ) -> Result<Response<ListFeatureFlagsResponse>> {
        let r = request.into_inner();
        let (offset, limit) = page(r.page)?;
        let catalog = self.engine.catalog().await?;
        let filter = r.filter.map(|f| f.to_lowercase());
        let mut items: Vec<&Stored<FlagDoc>> = catalog
            .flags
            .iter()
            .filter(|f| {
                filter
                    .as_ref()
                    .is_none_or(|s| f.value.flag.name.to_lowercase().contains(s))
                    && (r.feature_ids.is_empty()
                        || r.feature_ids.contains(&f.value.feature_id.to_string()))
                    && r.on.is_none_or(|on| f.value.flag.on == on)
            })
            .collect();
        let id = |f: &Stored<FlagDoc>| f.value.flag.id;
        match FeatureFlagSortField::try_from(r.sort_by).unwrap_or_default() {
            FeatureFlagSortField::Name => {
                items.sort_by(|a, b| (&a.value.flag.name, id(a)).cmp(&(&b.value.flag.name, id(b))));
            }
            FeatureFlagSortField::UpdatedAt => {
                items.sort_by_key(|f| (f.updated_at, id(f)));
            }
            FeatureFlagSortField::CreatedAt | FeatureFlagSortField::Unspecified => {
                items.sort_by_key(|f| (f.created_at, id(f)));
            }
        }
        if descending(r.order) {
            items.reverse();
        }
        let (items, page) = paginate(items, offset, limit);
        Ok(Response::new(ListFeatureFlagsResponse {
            feature_flags: items.into_iter().map(|f| flag_out(&catalog, f)).collect(),
            page: Some(page),
        }))
    }

    async fn update_feature_flag(
        &self,
        request: Request<UpdateFeatureFlagRequest>,
    ) -> Result<Response<UpdateFeatureFlagResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let rules = r
            .rules
            .map(|l| convert::rules_in("rules", l.rules))
            .transpose()?;
        let off = r
            .off_treatment
            .map(|t| convert::required_treatment("off_treatment", t))
            .transpose()?;
        let default = r
            .default_treatment
            .map(|t| convert::required_treatment("default_treatment", t))
            .transpose()?;
        let (stored, revision) = self
            .engine
            .update_flag(id, |doc| {
                let f = &mut doc.flag;
                if let Some(name) = r.name {
                    f.name = name;
                }
                if let Some(on) = r.on {
                    f.on = on;
                }
                if let Some(t) = off {
                    f.off_treatment = t;
                }
                if let Some(t) = default {
                    f.default_treatment = t;
                }
                if let Some(d) = r.description {
                    f.description = Some(d).filter(|d| !d.is_empty());
                }
                if let Some(rules) = rules {
                    f.rules = rules;
                }
                if r.metadata.is_some() {
                    doc.metadata = convert::metadata(r.metadata);
                }
                Ok(())
            })
            .await?;
        let catalog = self.engine.catalog().await?;
        Ok(Response::new(UpdateFeatureFlagResponse {
            feature_flag: Some(flag_out(&catalog, &stored)),
            revision,
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

fn route_policy(
    policy: i32,
    features: Vec<String>,
    permissions: Vec<String>,
) -> std::result::Result<RoutePolicy, DomainError> {
    let policy = match pb::RoutePolicy::try_from(policy) {
        Ok(pb::RoutePolicy::Allow) => RoutePolicy::Allow,
        Ok(pb::RoutePolicy::Deny) => RoutePolicy::Deny,
        Ok(pb::RoutePolicy::Require) => {
            return Ok(RoutePolicy::Require {
                features,
                permissions,
            });
        }
        Ok(pb::RoutePolicy::Unspecified) | Err(_) => {
            return Err(DomainError::invalid(
                "policy",
                "must be ALLOW, DENY or REQUIRE",
            ));
        }
    };
    if !features.is_empty() || !permissions.is_empty() {
        return Err(DomainError::invalid(
            "required_feature_keys",
            "only REQUIRE routes list requirements",
        ));
    }
    Ok(policy)
}

#[tonic::async_trait]
impl route_service_server::RouteService for Handler {
    async fn create_route(
        &self,
        request: Request<CreateRouteRequest>,
    ) -> Result<Response<CreateRouteResponse>> {
        let r = request.into_inner();
        let route = Route {
            id: Uuid::now_v7(),
            method: r.method,
            path: r.path_pattern,
            policy: route_policy(
                r.policy,
                r.required_feature_keys,
                r.required_permission_keys,
            )?,
            description: Some(r.description).filter(|d| !d.is_empty()),
        };
        let (stored, revision) = self.engine.create_route(route).await?;
        Ok(Response::new(CreateRouteResponse {
            route: Some(convert::route(&stored)),
            revision,
        }))
    }

    async fn get_route(
        &self,
        request: Request<GetRouteRequest>,
    ) -> Result<Response<GetRouteResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let catalog = self.engine.catalog().await?;
        let route = catalog
            .routes
            .iter()
            .find(|r| r.value.id == id)
            .ok_or_else(|| DomainError::not_found("route", id))?;
        Ok(Response::new(GetRouteResponse {
            route: Some(convert::route(route)),
        }))
    }

    async fn list_routes(
        &self,
        request: Request<ListRoutesRequest>,
    ) -> Result<Response<ListRoutesResponse>> {
        let r = request.into_inner();
        let (offset, limit) = page(r.page)?;
        let catalog = self.engine.catalog().await?;
        let filter = r.filter.map(|f| f.to_lowercase());
        let mut items: Vec<&Stored<Route>> = catalog
            .routes
            .iter()
            .filter(|x| {
                filter
                    .as_ref()
                    .is_none_or(|s| x.value.path.to_lowercase().contains(s))
                    && r.method.as_ref().is_none_or(|m| &x.value.method == m)
            })
            .collect();
        items.sort_by(|a, b| {
            (&a.value.path, &a.value.method, a.value.id).cmp(&(
                &b.value.path,
                &b.value.method,
                b.value.id,
            ))
        });
        let (items, page) = paginate(items, offset, limit);
        Ok(Response::new(ListRoutesResponse {
            routes: items.into_iter().map(convert::route).collect(),
            page: Some(page),
        }))
    }

    async fn update_route(
        &self,
        request: Request<UpdateRouteRequest>,
    ) -> Result<Response<UpdateRouteResponse>> {
        let r = request.into_inner();
        let id = uuid("id", &r.id)?;
        let (stored, revision) = self
            .engine
            .update_route(id, |route| {
                if let Some(m) = r.method {
                    route.method = m;
                }
                if let Some(p) = r.path_pattern {
                    route.path = p;
                }
                if let Some(d) = r.description {
                    route.description = Some(d).filter(|d| !d.is_empty());
                }
                let (mut features, mut permissions) = match &route.policy {
                    RoutePolicy::Require {
                        features,
                        permissions,
                    } => (features.clone(), permissions.clone()),
                    RoutePolicy::Allow | RoutePolicy::Deny => (vec![], vec![]),
                };
                if let Some(l) = r.required_feature_keys {
                    features = l.values;
                }
                if let Some(l) = r.required_permission_keys {
                    permissions = l.values;
                }
                let policy = match r.policy {
                    Some(p) => p,
                    None => match route.policy {
                        RoutePolicy::Allow => pb::RoutePolicy::Allow as i32,
                        RoutePolicy::Deny => pb::RoutePolicy::Deny as i32,
                        RoutePolicy::Require { .. } => pb::RoutePolicy::Require as i32,
                    },
                };
                route.policy = route_policy(policy, features, permissions)?;
                Ok(())
            })
            .await?;
        Ok(Response::new(UpdateRouteResponse {
            route: Some(convert::route(&stored)),
            revision,
        }))
    }

    async fn delete_route(
        &self,
        request: Request<DeleteRouteRequest>,
    ) -> Result<Response<DeleteRouteResponse>> {
        let id = uuid("id", &request.into_inner().id)?;
        let revision = self.engine.delete_route(id).await?;
        Ok(Response::new(DeleteRouteResponse { revision }))
    }
}
