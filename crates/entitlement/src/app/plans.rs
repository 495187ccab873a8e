//! Plans: reads, lists (also per account, with what the account holds), writes, feature
//! links, and deletion that revokes the plan's grants when forced.

use std::cmp::Ordering;

use uuid::Uuid;

use super::features::FeatureView;
use super::idempotency::Idempotency;
use super::listing::{Listed, PageRequest, Sort, list};
use super::ports::Storage;
use super::{Engine, Saved};
use crate::domain::audit::Prior;
use crate::domain::catalog::{Catalog, PlanRef, Stored};
use crate::domain::{
    AllocationType, DomainError, Feature, Grant, GrantStatus, IndexChange, Plan, PlanFeature,
    Result, Rule, Treatment, plan_targets, revoke_grant, validate_key, validate_plan,
    validate_tenant_id,
};

/// A plan with the catalog's features it links, as reads describe it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanView {
    pub plan: Stored<Plan>,
    /// The linked features the catalog holds, in the plan's order.
    pub features: Vec<Feature>,
}

impl PlanView {
    pub(super) fn of(catalog: &Catalog, plan: &Stored<Plan>) -> Self {
        Self {
            features: plan
                .value
                .features
                .iter()
                .filter_map(|pf| catalog.feature_by_key(&pf.feature_key))
                .map(|f| f.value.feature.clone())
                .collect(),
            plan: plan.clone(),
        }
    }

    /// A linked feature by key.
    pub fn feature(&self, key: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.key == key)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PlanSort {
    /// Creation order.
    #[default]
    Created,
    Name,
}

/// ListPlans' filters (empty lists mean "any") and order.
#[derive(Debug, Clone)]
pub struct PlanQuery {
    /// Case-insensitive part of the name.
    pub name_contains: Option<String>,
    /// Plans linking any of these features (by id).
    pub feature_ids: Vec<String>,
    /// Plans granted to any of these accounts or users.
    pub tenant_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub sort: PlanSort,
    pub descending: bool,
    pub page: PageRequest,
}

/// A new plan; without a key, one is derived from the name.
#[derive(Debug, Clone)]
pub struct NewPlan {
    pub key: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub metadata: serde_json::Value,
    pub features: Vec<PlanFeature>,
    pub default_time_limitation_days: Option<u32>,
    pub assign_on_signup: bool,
    pub rules: Vec<Rule>,
    pub default_treatment: Treatment,
    pub inherit_to_sub_accounts: bool,
}

/// The fields an update sets (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct PlanPatch {
    pub key: Option<String>,
    pub name: Option<String>,
    /// An empty description clears it.
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub features: Option<Vec<PlanFeature>>,
    pub default_time_limitation_days: Option<Option<u32>>,
    pub assign_on_signup: Option<bool>,
    pub rules: Option<Vec<Rule>>,
    pub default_treatment: Option<Treatment>,
    pub inherit_to_sub_accounts: Option<bool>,
}

/// Features to link: by id, and by key with an allocation.
#[derive(Debug, Clone, Default)]
pub struct PlanLinks {
    pub feature_ids: Vec<String>,
    pub features: Vec<PlanFeature>,
}

/// Features to unlink, by key or id (unknown ones are ignored).
#[derive(Debug, Clone, Default)]
pub struct PlanUnlinks {
    pub feature_keys: Vec<String>,
    pub feature_ids: Vec<String>,
}

/// ListTenantPlans: the plans an account holds or could hold.
#[derive(Debug, Clone)]
pub struct TenantPlansQuery {
    pub tenant_id: String,
    /// Plans linking any of these features (empty: any).
    pub feature_keys: Vec<String>,
    pub exclude_non_entitled_plans: bool,
    pub min_revision: u64,
}

/// A plan as one account holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPlan {
    pub plan: PlanView,
    /// Its targeting selects the account.
    pub targeted: bool,
    /// An active grant (the account's, or an ancestor's of an inherited plan) holds it.
    pub entitled: bool,
    /// The account's own grants of the plan.
    pub grant_ids: Vec<Uuid>,
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

/// `base`, or `base-2`, `base-3`, … the first no live plan holds (within the key length).
fn free_key(catalog: &Catalog, base: &str) -> String {
    if catalog.plan_by_key(base).is_none() {
        return base.to_owned();
    }
    (2u64..)
        .map(|n| {
            let suffix = format!("-{n}");
            let room = crate::domain::MAX_KEY_LEN.saturating_sub(suffix.len());
            let stem: String = base.chars().take(room).collect();
            format!("{stem}{suffix}")
        })
        .find(|key| catalog.plan_by_key(key).is_none())
        .unwrap_or_else(|| base.to_owned())
}

/// Every linked feature exists (NOT_FOUND naming the first that does not).
fn require_features(catalog: &Catalog, features: &[PlanFeature]) -> Result<()> {
    match features
        .iter()
        .find(|f| catalog.feature_by_key(&f.feature_key).is_none())
    {
        Some(missing) => Err(DomainError::not_found("feature", &missing.feature_key)),
        None => Ok(()),
    }
}

fn feature_type(catalog: &Catalog, key: &str) -> Option<AllocationType> {
    catalog
        .feature_by_key(key)
        .map(|f| f.value.feature.allocation_type)
}

/// The ids of a plan's features (for the link table). `rename` maps a key being renamed in
/// the same transaction (new, old) so it resolves against the catalog read before.
pub(super) fn plan_feature_ids(
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

impl<S: Storage> Engine<S> {
    /// A plan by id or key (`None`: there is none).
    pub async fn plan(&self, which: &PlanRef) -> Result<Option<PlanView>> {
        let catalog = self.catalog().await?;
        Ok(which.resolve(&catalog).map(|p| PlanView::of(&catalog, p)))
    }

    pub async fn list_plans(&self, q: PlanQuery) -> Result<Listed<PlanView>> {
        let catalog = self.catalog().await?;
        let granted = if q.tenant_ids.is_empty() && q.user_ids.is_empty() {
            None
        } else {
            Some(
                self.store
                    .granted_plan_ids(&q.tenant_ids, &q.user_ids)
                    .await?,
            )
        };
        let feature_keys: Vec<&str> = q
            .feature_ids
            .iter()
            .filter_map(|id| Uuid::try_parse(id).ok())
            .filter_map(|id| catalog.feature_by_id(id))
            .map(|f| f.value.feature.key.as_str())
            .collect();
        let name = q.name_contains.map(|f| f.to_lowercase());
        let keep = |p: &Stored<Plan>| {
            name.as_ref()
                .is_none_or(|s| p.value.name.to_lowercase().contains(s))
                && (q.feature_ids.is_empty()
                    || p.value
                        .features
                        .iter()
                        .any(|pf| feature_keys.contains(&pf.feature_key.as_str())))
                && granted.as_ref().is_none_or(|g| g.contains(&p.value.id))
        };
        let by_name = |a: &Stored<Plan>, b: &Stored<Plan>| -> Ordering {
            (&a.value.name, a.value.id).cmp(&(&b.value.name, b.value.id))
        };
        let sort = Sort {
            order: (q.sort == PlanSort::Name).then_some(&by_name as _),
            descending: q.descending,
        };
        Ok(list(&catalog.plans, keep, sort, q.page).map(|p| PlanView::of(&catalog, p)))
    }

    /// A plan and its features (sorted by key).
    pub async fn plan_features(&self, id: Uuid) -> Result<(PlanView, Vec<FeatureView>)> {
        let catalog = self.catalog().await?;
        let plan = catalog
            .plan_by_id(id)
            .ok_or_else(|| DomainError::not_found("plan", id))?;
        let mut features: Vec<FeatureView> = plan
            .value
            .features
            .iter()
            .filter_map(|pf| catalog.feature_by_key(&pf.feature_key))
            .map(|f| FeatureView::of(&catalog, f))
            .collect();
        features.sort_by(|a, b| {
            a.feature
                .value
                .feature
                .key
                .cmp(&b.feature.value.feature.key)
        });
        Ok((PlanView::of(&catalog, plan), features))
    }

    /// Creates a plan; with a key, a retry of the same request replays the first answer.
    pub async fn create_plan(
        &self,
        new: NewPlan,
        idempotency: Option<&Idempotency>,
    ) -> Result<Saved<PlanView>> {
        if let Some(key) = &new.key {
            validate_key("key", key)?;
        }
        self.idempotent(idempotency, "create_plan", |claim| async {
            let (txn, catalog, claimed) = self.catalog_txn_claiming(claim).await?;
            // Frontegg's plans have names, not keys, and two may share a name: a derived key
            // takes the first free suffix.
            let key = match new.key {
                Some(key) => key,
                None => free_key(&catalog, &key_from_name(&new.name)),
            };
            validate_key("key", &key)?;
            require_features(&catalog, &new.features)?;
            let plan = Plan {
                id: Uuid::now_v7(),
                key,
                name: new.name,
                description: new.description,
                metadata: new.metadata,
                features: new.features,
                default_time_limitation_days: new.default_time_limitation_days,
                assign_on_signup: new.assign_on_signup,
                rules: new.rules,
                default_treatment: new.default_treatment,
                inherit_to_sub_accounts: new.inherit_to_sub_accounts,
            };
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
            // The catalog lock held every feature in place while the plan was written.
            let view = PlanView::of(&catalog, &stored);
            self.commit_created(txn, vec![change], claimed, view).await
        })
        .await
    }

    pub async fn update_plan(&self, id: Uuid, patch: PlanPatch) -> Result<Saved<PlanView>> {
        self.edit_plan(id, |plan, catalog| {
            if let Some(key) = patch.key {
                plan.key = key;
            }
            if let Some(name) = patch.name {
                plan.name = name;
            }
            if let Some(d) = patch.description {
                plan.description = Some(d).filter(|d| !d.is_empty());
            }
            if let Some(metadata) = patch.metadata {
                plan.metadata = metadata;
            }
            if let Some(features) = patch.features {
                require_features(catalog, &features)?;
                plan.features = features;
            }
            if let Some(days) = patch.default_time_limitation_days {
                plan.default_time_limitation_days = days;
            }
            if let Some(a) = patch.assign_on_signup {
                plan.assign_on_signup = a;
            }
            if let Some(rules) = patch.rules {
                plan.rules = rules;
            }
            if let Some(t) = patch.default_treatment {
                plan.default_treatment = t;
            }
            if let Some(i) = patch.inherit_to_sub_accounts {
                plan.inherit_to_sub_accounts = i;
            }
            Ok(())
        })
        .await
    }

    /// Links features to a plan; a feature already linked takes the given allocation.
    pub async fn link_plan_features(&self, id: Uuid, links: PlanLinks) -> Result<Saved<PlanView>> {
        self.edit_plan(id, |plan, catalog| {
            let mut add = Vec::new();
            for (i, fid) in links.feature_ids.iter().enumerate() {
                let parsed = Uuid::try_parse(fid).map_err(|_| {
                    DomainError::invalid(format!("feature_ids[{i}]"), "must be a UUID")
                })?;
                let feature = catalog
                    .feature_by_id(parsed)
                    .ok_or_else(|| DomainError::not_found("feature", fid))?;
                add.push(PlanFeature::bare(feature.value.feature.key.clone()));
            }
            require_features(catalog, &links.features)?;
            add.extend(links.features);
            for link in add {
                match plan
                    .features
                    .iter_mut()
                    .find(|pf| pf.feature_key == link.feature_key)
                {
                    Some(existing) => existing.allocation = link.allocation,
                    None => plan.features.push(link),
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn unlink_plan_features(
        &self,
        id: Uuid,
        unlinks: PlanUnlinks,
    ) -> Result<Saved<PlanView>> {
        self.edit_plan(id, |plan, catalog| {
            let mut keys = unlinks.feature_keys;
            for fid in &unlinks.feature_ids {
                if let Some(f) = Uuid::try_parse(fid)
                    .ok()
                    .and_then(|id| catalog.feature_by_id(id))
                {
                    keys.push(f.value.feature.key.clone());
                }
            }
            plan.features.retain(|pf| !keys.contains(&pf.feature_key));
            Ok(())
        })
        .await
    }

    /// Changes a plan through `edit` (which sees the catalog, e.g. to resolve feature ids).
    async fn edit_plan(
        &self,
        id: Uuid,
        edit: impl FnOnce(&mut Plan, &Catalog) -> Result<()>,
    ) -> Result<Saved<PlanView>> {
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
        let revision = self
            .commit(txn, vec![change], &Prior::catalog(&catalog))
            .await?;
        Ok(Saved {
            value: PlanView::of(&catalog, &stored),
            revision,
        })
    }

    /// Deletes a plan. With active or scheduled grants: refused unless `force`, which revokes
    /// them (`plan_deleted`). Returns how many were revoked.
    pub async fn delete_plan(&self, id: Uuid, force: bool, by: &str) -> Result<Saved<u64>> {
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
        let revision = self.commit(txn, changes, &Prior::catalog(&catalog)).await?;
        Ok(Saved {
            value: revoked,
            revision,
        })
    }

    /// The plans of an account (sorted by key) with what it holds of each: an account the
    /// local hierarchy copy does not know is NOT_FOUND.
    pub async fn tenant_plans(&self, q: TenantPlansQuery) -> Result<Vec<TenantPlan>> {
        validate_tenant_id("tenant_id", &q.tenant_id)?;
        let index = self.index_at(q.min_revision).await?;
        // The local hierarchy copy knows every live account (from the change feed, or a grant
        // written here); one it does not know is unknown or deleted.
        if !index.contains_tenant(&q.tenant_id) {
            return Err(DomainError::not_found("tenant", &q.tenant_id));
        }
        let mut tenants = vec![q.tenant_id.clone()];
        tenants.extend(index.ancestors(&q.tenant_id).into_iter().map(str::to_owned));
        let grants = self.store.account_grants(&tenants).await?;
        // Read after the rows: a grant committed during the query has started by then.
        let now = self.present(&index);
        let catalog = self.catalog().await?;
        let mut plans: Vec<&Stored<Plan>> = catalog.plans.iter().collect();
        plans.sort_by(|a, b| a.value.key.cmp(&b.value.key));
        let mut out = Vec::new();
        for plan in plans {
            if !q.feature_keys.is_empty()
                && !plan
                    .value
                    .features
                    .iter()
                    .any(|pf| q.feature_keys.contains(&pf.feature_key))
            {
                continue;
            }
            let held: Vec<&Grant> = grants
                .iter()
                .filter(|g| {
                    g.plan_id == plan.value.id
                        && (g.tenant_id == q.tenant_id || plan.value.inherit_to_sub_accounts)
                })
                .collect();
            let entitled = held.iter().any(|g| g.status_at(now) == GrantStatus::Active);
            let targeted = plan.value.has_targeting() && plan_targets(&plan.value, None);
            if q.exclude_non_entitled_plans && !entitled {
                continue;
            }
            out.push(TenantPlan {
                plan: PlanView::of(&catalog, plan),
                targeted,
                entitled,
                grant_ids: held
                    .iter()
                    .filter(|g| g.tenant_id == q.tenant_id)
                    .map(|g| g.id)
                    .collect(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::app::testing::{self, invalid_field, new_plan};
    use crate::domain::{Allocation, GrantLevel, Justification, Limit};

    #[test]
    fn keys_derive_from_names() {
        assert_eq!(key_from_name("  Pro Plan (2026)! "), "pro-plan--2026--");
        assert_eq!(key_from_name(&"x".repeat(100)).len(), 64);
    }

    #[tokio::test]
    async fn a_plan_links_known_features_once_with_allocations_of_their_type() {
        let t = testing::engine().await;
        let app = &t.engine;
        t.feature("sso", AllocationType::Bool, &[]).await;
        t.feature("seats", AllocationType::MaxCount, &[]).await;
        let err = app
            .create_plan(new_plan("pro", vec![PlanFeature::bare("nope")]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DomainError::NotFound { kind: "feature", id } if id == "nope"),
            "{err:?}"
        );
        let err = app
            .create_plan(
                new_plan(
                    "pro",
                    vec![PlanFeature::with("seats", Allocation::Bool(true))],
                ),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "features[0].allocation");
        let err = app
            .create_plan(
                new_plan(
                    "pro",
                    vec![PlanFeature::bare("sso"), PlanFeature::bare("sso")],
                ),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "features[1]");
        let err = app
            .create_plan(
                NewPlan {
                    default_time_limitation_days: Some(0),
                    ..new_plan("pro", vec![])
                },
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "defaultTimeLimitation");
        // Without a key, one is derived from the name.
        let derived = app
            .create_plan(
                NewPlan {
                    key: None,
                    name: "Pro Plan".into(),
                    ..new_plan("", vec![PlanFeature::bare("sso")])
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(derived.value.plan.value.key, "pro-plan");
        assert_eq!(derived.value.features[0].key, "sso");
        // Plans may share a name: the derived key takes the first free suffix.
        let twin = app
            .create_plan(
                NewPlan {
                    key: None,
                    name: "Pro Plan".into(),
                    ..new_plan("", vec![])
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(twin.value.plan.value.key, "pro-plan-2");
        let err = app
            .create_plan(new_plan("pro-plan", vec![]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DomainError::AlreadyExists { kind: "plan", .. }),
            "{err:?}"
        );
        let other = t.plan("basic", vec![]).await;
        let err = app
            .update_plan(
                other.plan.value.id,
                PlanPatch {
                    key: Some("pro-plan".into()),
                    ..PlanPatch::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, DomainError::AlreadyExists { kind: "plan", .. }),
            "{err:?}"
        );
        let linked = app
            .link_plan_features(
                other.plan.value.id,
                PlanLinks {
                    feature_ids: vec![],
                    features: vec![PlanFeature::with(
                        "seats",
                        Allocation::MaxCount(Limit::Finite(3)),
                    )],
                },
            )
            .await
            .unwrap();
        assert_eq!(linked.value.features[0].key, "seats");
        assert!(matches!(
            app.update_plan(Uuid::now_v7(), PlanPatch::default())
                .await
                .unwrap_err(),
            DomainError::NotFound { kind: "plan", .. }
        ));
    }

    #[tokio::test]
    async fn an_inherited_plan_reaches_sub_accounts_and_a_limit_caps_the_amount() {
        let t = testing::engine().await;
        t.account("parent", None).await;
        t.account("child", Some("parent")).await;
        t.feature("seats", AllocationType::MaxCount, &[]).await;
        let plan = t
            .plan(
                "team",
                vec![PlanFeature::with(
                    "seats",
                    Allocation::MaxCount(Limit::Finite(5)),
                )],
            )
            .await;
        t.grant("team", "parent", None).await;
        // Not inherited yet: the child holds nothing.
        let child = t.check("child", None, "seats").await;
        assert_eq!(child.justification, Some(Justification::MissingFeature));
        t.engine
            .update_plan(
                plan.plan.value.id,
                PlanPatch {
                    inherit_to_sub_accounts: Some(true),
                    ..PlanPatch::default()
                },
            )
            .await
            .unwrap();
        let child = t.check("child", None, "seats").await;
        assert!(child.result);
        assert_eq!(
            child.decided_by.map(|by| by.level),
            Some(GrantLevel::Ancestor { depth: 1 })
        );
        assert_eq!(
            child.allocation,
            Some(Allocation::MaxCount(Limit::Finite(5)))
        );
        let mut asking = testing::feature_query("child", None, "seats");
        asking.requested = Some(6);
        let over = t.engine.check(&asking, 0).await.unwrap().value;
        assert_eq!(over.justification, Some(Justification::LimitExceeded));
        asking.requested = Some(5);
        assert!(t.engine.check(&asking, 0).await.unwrap().value.result);
    }

    #[tokio::test]
    async fn a_plan_with_live_grants_is_deleted_only_with_force_which_revokes_them() {
        let t = testing::engine().await;
        let app = &t.engine;
        t.account("acme", None).await;
        t.feature("sso", AllocationType::Bool, &[]).await;
        let plan = t.plan("pro", vec![PlanFeature::bare("sso")]).await;
        let grant = t.grant("pro", "acme", None).await;
        let id = plan.plan.value.id;
        let err = app.delete_plan(id, false, "ops").await.unwrap_err();
        assert!(matches!(err, DomainError::FailedPrecondition(_)), "{err:?}");
        assert!(t.check("acme", None, "sso").await.result);
        let deleted = app.delete_plan(id, true, "ops").await.unwrap();
        assert_eq!(deleted.value, 1);
        assert!(app.plan(&PlanRef::Id(id)).await.unwrap().is_none());
        let revoked = app.grant(grant.id, false).await.unwrap().grants.remove(0);
        assert_eq!(revoked.grant.revoke_reason.as_deref(), Some("plan_deleted"));
        assert_eq!(revoked.grant.revoked_by.as_deref(), Some("ops"));
        // The grant keeps naming its deleted plan.
        assert_eq!(revoked.plan_key, "pro");
        assert!(!t.check("acme", None, "sso").await.result);
        // Without grants, no force is needed.
        let empty = t.plan("empty", vec![]).await;
        assert_eq!(
            app.delete_plan(empty.plan.value.id, false, "ops")
                .await
                .unwrap()
                .value,
            0
        );
    }
}
