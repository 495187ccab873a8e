//! Features: reads, lists, and writes that carry a key change or a forced deletion into every
//! plan, flag and route naming the feature.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::idempotency::Idempotency;
use super::listing::{Listed, Order, PageRequest, Sort, list};
use super::plans::plan_feature_ids;
use super::ports::Storage;
use super::{Engine, Saved};
use crate::domain::audit::Prior;
use crate::domain::catalog::{Catalog, FeatureDoc, FeatureRef, FlagDoc, Stored};
use crate::domain::{
    DomainError, IndexChange, Plan, Result, Route, RoutePolicy, allocations_survive,
    validate_feature, validate_feature_change,
};

/// A feature with its flag, as reads describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView {
    pub feature: Stored<FeatureDoc>,
    pub flag: Option<Stored<FlagDoc>>,
}

impl FeatureView {
    pub(super) fn of(catalog: &Catalog, feature: &Stored<FeatureDoc>) -> Self {
        Self {
            flag: catalog.flag_of(&feature.value.feature.key).cloned(),
            feature: feature.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FeatureSort {
    /// Creation order.
    #[default]
    Created,
    Name,
    Key,
}

/// ListFeatures' filters (empty lists mean "any") and order.
#[derive(Debug, Clone)]
pub struct FeatureQuery {
    /// Case-insensitive part of the name.
    pub name_contains: Option<String>,
    pub ids: Vec<String>,
    pub keys: Vec<String>,
    /// Features linking any of these permissions.
    pub permission_keys: Vec<String>,
    pub has_flag: Option<bool>,
    pub sort: FeatureSort,
    pub descending: bool,
    pub page: PageRequest,
}

/// What a forced feature deletion changed besides the feature itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureDeletion {
    /// Plans the feature was unlinked from.
    pub unlinked_plans: Vec<Uuid>,
    /// REQUIRE routes that still require other features or permissions, now without it.
    pub updated_routes: Vec<Uuid>,
    /// REQUIRE routes that required only this feature, deleted.
    pub deleted_routes: Vec<Uuid>,
}

fn route_requires(route: &Route, feature_key: &str) -> bool {
    matches!(&route.policy, RoutePolicy::Require { features, .. } if features.iter().any(|f| f == feature_key))
}

impl<S: Storage> Engine<S> {
    /// A feature by id or key (`None`: there is none).
    pub async fn feature(&self, which: &FeatureRef) -> Result<Option<FeatureView>> {
        let catalog = self.catalog().await?;
        Ok(which
            .resolve(&catalog)
            .map(|f| FeatureView::of(&catalog, f)))
    }

    pub async fn list_features(&self, q: FeatureQuery) -> Result<Listed<FeatureView>> {
        let catalog = self.catalog().await?;
        let name = q.name_contains.map(|f| f.to_lowercase());
        let keep = |f: &Stored<FeatureDoc>| {
            let feature = &f.value.feature;
            name.as_ref()
                .is_none_or(|s| feature.name.to_lowercase().contains(s))
                && (q.ids.is_empty() || q.ids.contains(&feature.id.to_string()))
                && (q.keys.is_empty() || q.keys.contains(&feature.key))
                && (q.permission_keys.is_empty()
                    || feature
                        .permissions
                        .iter()
                        .any(|p| q.permission_keys.contains(p)))
                && q.has_flag
                    .is_none_or(|want| catalog.flag_of(&feature.key).is_some() == want)
        };
        let by_name = |a: &Stored<FeatureDoc>, b: &Stored<FeatureDoc>| -> Ordering {
            let (a, b) = (&a.value.feature, &b.value.feature);
            (&a.name, a.id).cmp(&(&b.name, b.id))
        };
        let by_key = |a: &Stored<FeatureDoc>, b: &Stored<FeatureDoc>| -> Ordering {
            a.value.feature.key.cmp(&b.value.feature.key)
        };
        let order: Option<Order<'_, Stored<FeatureDoc>>> = match q.sort {
            FeatureSort::Name => Some(&by_name),
            FeatureSort::Key => Some(&by_key),
            FeatureSort::Created => None,
        };
        let sort = Sort {
            order,
            descending: q.descending,
        };
        Ok(list(&catalog.features, keep, sort, q.page).map(|f| FeatureView::of(&catalog, f)))
    }

    /// Creates a feature; with a key, a retry of the same request replays the first answer.
    pub async fn create_feature(
        &self,
        doc: FeatureDoc,
        idempotency: Option<&Idempotency>,
    ) -> Result<Saved<Stored<FeatureDoc>>> {
        validate_feature(&doc.feature)?;
        self.idempotent(idempotency, "create_feature", |claim| async {
            let (txn, catalog, claimed) = self.catalog_txn_claiming(claim).await?;
            if catalog.feature_by_key(&doc.feature.key).is_some() {
                return Err(DomainError::AlreadyExists {
                    kind: "feature",
                    id: doc.feature.key,
                });
            }
            let now = self.now();
            let stored = Stored {
                value: doc,
                created_at: now,
                updated_at: now,
            };
            self.store.put_feature(&txn, &stored, true).await?;
            let change = IndexChange::UpsertFeature(stored.value.feature.clone());
            self.commit_created(txn, vec![change], claimed, stored)
                .await
        })
        .await
    }

    /// Changes a feature through `edit`; a key change is carried into every plan, flag and
    /// route naming the old key, in the same transaction.
    pub async fn update_feature(
        &self,
        id: Uuid,
        edit: impl FnOnce(&mut FeatureDoc) -> Result<()>,
    ) -> Result<Saved<FeatureView>> {
        let (txn, catalog) = self.catalog_txn().await?;
        let mut stored = catalog
            .feature_by_id(id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("feature", id))?;
        let before = stored.value.feature.clone();
        edit(&mut stored.value)?;
        stored.value.feature.id = id;
        validate_feature(&stored.value.feature)?;
        let after = stored.value.feature.clone();
        if after.key != before.key && catalog.feature_by_key(&after.key).is_some() {
            return Err(DomainError::AlreadyExists {
                kind: "feature",
                id: after.key,
            });
        }
        validate_feature_change(&before, &after)?;
        if !allocations_survive(before.allocation_type, after.allocation_type) {
            let allocated = catalog.plans.iter().any(|p| {
                p.value
                    .features
                    .iter()
                    .any(|pf| pf.feature_key == before.key && pf.allocation.is_some())
            });
            if allocated {
                return Err(DomainError::FailedPrecondition(format!(
                    "plans allocate feature {} with its current type; change their allocations first",
                    before.key
                )));
            }
        }
        let now = self.now();
        stored.updated_at = now;
        self.store.put_feature(&txn, &stored, false).await?;
        let mut changes = vec![IndexChange::UpsertFeature(after.clone())];
        if after.key != before.key {
            changes.extend(
                self.rename_feature_key(&txn, &catalog, &before.key, &after.key, now)
                    .await?,
            );
        }
        let revision = self.commit(txn, changes, &Prior::catalog(&catalog)).await?;
        // Described as committed: a renamed feature's flag now carries the new key.
        let catalog = self.catalog().await?;
        Ok(Saved {
            value: FeatureView::of(&catalog, &stored),
            revision,
        })
    }

    async fn rename_feature_key(
        &self,
        txn: &S::Txn,
        catalog: &Catalog,
        old: &str,
        new: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<IndexChange>> {
        let mut changes = Vec::new();
        for plan in &catalog.plans {
            if plan.value.features.iter().any(|pf| pf.feature_key == old) {
                let mut plan = plan.clone();
                for pf in &mut plan.value.features {
                    if pf.feature_key == old {
                        pf.feature_key = new.to_owned();
                    }
                }
                plan.updated_at = now;
                let ids = plan_feature_ids(catalog, &plan.value, Some((new, old)))?;
                self.store.put_plan(txn, &plan, &ids, false).await?;
                changes.push(IndexChange::UpsertPlan(plan.value));
            }
        }
        if let Some(flag) = catalog.flag_of(old) {
            let mut flag = flag.clone();
            new.clone_into(&mut flag.value.flag.feature_key);
            flag.updated_at = now;
            self.store.put_flag(txn, &flag, false).await?;
            changes.push(IndexChange::UpsertFlag(flag.value.flag));
        }
        for route in &catalog.routes {
            if route_requires(&route.value, old) {
                let mut route = route.clone();
                if let RoutePolicy::Require { features, .. } = &mut route.value.policy {
                    for f in features.iter_mut().filter(|f| *f == old) {
                        new.clone_into(f);
                    }
                }
                route.updated_at = now;
                self.store.put_route(txn, &route, false).await?;
                changes.push(IndexChange::UpsertRoute(route.value));
            }
        }
        Ok(changes)
    }

    /// Deletes a feature. In use (included in plans or required by routes): refused unless
    /// `force`, which removes every dependency in the same transaction: the feature is
    /// unlinked from its plans, its flag is dropped, and it is removed from the required
    /// features of REQUIRE routes. A route that required only this feature (no other feature,
    /// no permission) is deleted rather than left requiring nothing: an empty REQUIRE is not a
    /// valid route, and turning it into an unconditional allow would widen access; with it
    /// gone, the request falls to the next matching route or to MISSING_ROUTE.
    pub async fn delete_feature(&self, id: Uuid, force: bool) -> Result<Saved<FeatureDeletion>> {
        let (txn, catalog) = self.catalog_txn().await?;
        let feature = catalog
            .feature_by_id(id)
            .ok_or_else(|| DomainError::not_found("feature", id))?
            .value
            .feature
            .clone();
        let linked: Vec<&Stored<Plan>> = catalog
            .plans
            .iter()
            .filter(|p| {
                p.value
                    .features
                    .iter()
                    .any(|pf| pf.feature_key == feature.key)
            })
            .collect();
        let requiring: Vec<&Stored<Route>> = catalog
            .routes
            .iter()
            .filter(|r| route_requires(&r.value, &feature.key))
            .collect();
        if (!linked.is_empty() || !requiring.is_empty()) && !force {
            return Err(DomainError::FailedPrecondition(format!(
                "feature {} is included in {} plan(s) and required by {} route(s); unlink it or \
                 delete with force",
                feature.key,
                linked.len(),
                requiring.len()
            )));
        }
        let now = self.now();
        let mut changes = Vec::new();
        let mut outcome = FeatureDeletion::default();
        for plan in linked {
            let mut plan = plan.clone();
            plan.value
                .features
                .retain(|pf| pf.feature_key != feature.key);
            plan.updated_at = now;
            let ids = plan_feature_ids(&catalog, &plan.value, None)?;
            self.store.put_plan(&txn, &plan, &ids, false).await?;
            outcome.unlinked_plans.push(plan.value.id);
            changes.push(IndexChange::UpsertPlan(plan.value));
        }
        for route in requiring {
            let mut route = route.clone();
            let RoutePolicy::Require {
                features,
                permissions,
            } = &mut route.value.policy
            else {
                continue;
            };
            features.retain(|f| *f != feature.key);
            if features.is_empty() && permissions.is_empty() {
                self.store.delete_route(&txn, route.value.id).await?;
                outcome.deleted_routes.push(route.value.id);
                changes.push(IndexChange::DeleteRoute { id: route.value.id });
            } else {
                route.updated_at = now;
                self.store.put_route(&txn, &route, false).await?;
                outcome.updated_routes.push(route.value.id);
                changes.push(IndexChange::UpsertRoute(route.value));
            }
        }
        if let Some(flag) = catalog.flag_of(&feature.key) {
            changes.push(IndexChange::DeleteFlag {
                id: flag.value.flag.id,
            });
        }
        // The flag row goes with the feature (ON DELETE CASCADE).
        self.store.delete_feature(&txn, id).await?;
        changes.push(IndexChange::DeleteFeature { id });
        let revision = self.commit(txn, changes, &Prior::catalog(&catalog)).await?;
        Ok(Saved {
            value: outcome,
            revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::flags::NewFlag;
    use crate::app::routes::{NewRoute, PolicyKind};
    use crate::app::testing::{self, feature_doc, invalid_field, key_of};
    use crate::domain::{AllocationType, Justification, PlanFeature, Treatment};

    #[tokio::test]
    async fn a_feature_key_is_well_formed_and_unique_and_its_permissions_distinct() {
        let t = testing::engine().await;
        let app = &t.engine;
        let created = app
            .create_feature(
                feature_doc("sso", AllocationType::Bool, &["sso.read"]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(key_of(&created.value), "sso");
        assert_eq!(created.revision, app.revision());
        let err = app
            .create_feature(feature_doc("sso", AllocationType::Bool, &[]), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DomainError::AlreadyExists { kind: "feature", id } if id == "sso"),
            "{err:?}"
        );
        // Frontegg's keys: case-sensitive, any printable characters but `/` and whitespace.
        app.create_feature(feature_doc("SSO", AllocationType::Bool, &[]), None)
            .await
            .unwrap();
        let err = app
            .create_feature(
                feature_doc("Single Sign-On", AllocationType::Bool, &[]),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "key");
        let mut unnamed = feature_doc("unnamed", AllocationType::Bool, &[]);
        unnamed.feature.name = "  ".into();
        let err = app.create_feature(unnamed, None).await.unwrap_err();
        assert_eq!(invalid_field(&err), "name");
        let err = app
            .create_feature(
                feature_doc("audit", AllocationType::Bool, &["a", "a"]),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "permissions[1]");
        // Nothing refused was stored.
        let all = app
            .list_features(FeatureQuery {
                name_contains: None,
                ids: vec![],
                keys: vec![],
                permission_keys: vec![],
                has_flag: None,
                sort: FeatureSort::Created,
                descending: false,
                page: PageRequest::new(0, None).unwrap(),
            })
            .await
            .unwrap();
        // `sso` and `SSO`: keys are case-sensitive.
        assert_eq!(all.page.total, 2);
    }

    #[tokio::test]
    async fn a_renamed_feature_key_follows_into_plans_flags_routes_and_checks() {
        let t = testing::engine().await;
        let app = &t.engine;
        t.account("acme", None).await;
        let seats = t.feature("seats", AllocationType::MaxCount, &[]).await;
        t.plan(
            "team",
            vec![PlanFeature::with(
                "seats",
                crate::domain::Allocation::MaxCount(crate::domain::Limit::Finite(5)),
            )],
        )
        .await;
        t.grant("team", "acme", None).await;
        app.create_flag(
            NewFlag {
                feature: FeatureRef::Key("seats".into()),
                name: "seats rollout".into(),
                description: None,
                on: true,
                off_treatment: Treatment::False,
                default_treatment: Treatment::True,
                rules: vec![],
                metadata: serde_json::Value::Null,
            },
            None,
        )
        .await
        .unwrap();
        let route = app
            .create_route(
                NewRoute {
                    method: "GET".into(),
                    path: "/seats/**".into(),
                    policy: Some(PolicyKind::Require),
                    required_features: vec!["seats".into()],
                    required_permissions: vec![],
                    description: None,
                },
                None,
            )
            .await
            .unwrap()
            .value;
        // Allocated by a plan, the feature's type cannot change under it.
        let err = app
            .update_feature(seats.id, |doc| {
                doc.feature.allocation_type = AllocationType::Bool;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::FailedPrecondition(_)), "{err:?}");
        let renamed = app
            .update_feature(seats.id, |doc| {
                doc.feature.key = "members".into();
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            renamed.value.flag.unwrap().value.flag.feature_key,
            "members"
        );
        let plan = app
            .plan(&crate::domain::catalog::PlanRef::Key("team".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(plan.plan.value.features[0].feature_key, "members");
        assert_eq!(
            app.route(route.value.id).await.unwrap().value.policy,
            RoutePolicy::Require {
                features: vec!["members".into()],
                permissions: vec![]
            }
        );
        assert!(t.check("acme", None, "members").await.result);
        let old = t.check("acme", None, "seats").await;
        assert_eq!(old.justification, Some(Justification::MissingFeature));
        // A key another feature holds is refused.
        t.feature("sso", AllocationType::Bool, &[]).await;
        let err = app
            .update_feature(seats.id, |doc| {
                doc.feature.key = "sso".into();
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::AlreadyExists { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_feature_in_use_is_deleted_only_with_force_which_removes_what_depends_on_it() {
        let t = testing::engine().await;
        let app = &t.engine;
        t.account("acme", None).await;
        let sso = t.feature("sso", AllocationType::Bool, &[]).await;
        t.feature("audit", AllocationType::Bool, &[]).await;
        let plan = t
            .plan(
                "pro",
                vec![PlanFeature::bare("sso"), PlanFeature::bare("audit")],
            )
            .await;
        t.grant("pro", "acme", None).await;
        let require = |features: &[&str], permissions: &[&str]| NewRoute {
            method: "GET".into(),
            path: format!("/{}", features.join("/")),
            policy: Some(PolicyKind::Require),
            required_features: features.iter().map(|f| (*f).to_owned()).collect(),
            required_permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            description: None,
        };
        let only_sso = app
            .create_route(require(&["sso"], &[]), None)
            .await
            .unwrap();
        let sso_and_more = app
            .create_route(require(&["sso", "audit"], &["audit.read"]), None)
            .await
            .unwrap();
        let err = app.delete_feature(sso.id, false).await.unwrap_err();
        assert!(matches!(err, DomainError::FailedPrecondition(_)), "{err:?}");
        assert!(t.check("acme", None, "sso").await.result);

        let deleted = app.delete_feature(sso.id, true).await.unwrap();
        assert_eq!(deleted.value.unlinked_plans, vec![plan.plan.value.id]);
        assert_eq!(deleted.value.deleted_routes, vec![only_sso.value.value.id]);
        assert_eq!(
            deleted.value.updated_routes,
            vec![sso_and_more.value.value.id]
        );
        let plan = app
            .plan(&crate::domain::catalog::PlanRef::Id(plan.plan.value.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(plan.plan.value.features, vec![PlanFeature::bare("audit")]);
        assert!(matches!(
            app.route(only_sso.value.value.id).await.unwrap_err(),
            DomainError::NotFound { .. }
        ));
        let check = t.check("acme", None, "sso").await;
        assert_eq!(check.justification, Some(Justification::MissingFeature));
        assert!(t.check("acme", None, "audit").await.result);
        // Gone: a second delete is NOT_FOUND.
        assert!(matches!(
            app.delete_feature(sso.id, true).await.unwrap_err(),
            DomainError::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn features_are_filtered_sorted_and_paged() {
        let t = testing::engine().await;
        let app = &t.engine;
        for key in ["delta", "alpha", "charlie", "bravo"] {
            t.feature(key, AllocationType::Bool, &[]).await;
        }
        t.feature("echo", AllocationType::Bool, &["reports.read"])
            .await;
        let query = |sort, descending, page| FeatureQuery {
            name_contains: None,
            ids: vec![],
            keys: vec![],
            permission_keys: vec![],
            has_flag: None,
            sort,
            descending,
            page,
        };
        let keys = |listed: &Listed<FeatureView>| -> Vec<String> {
            listed
                .items
                .iter()
                .map(|f| f.feature.value.feature.key.clone())
                .collect()
        };
        let created = app
            .list_features(query(
                FeatureSort::Created,
                false,
                PageRequest::new(0, Some(2)).unwrap(),
            ))
            .await
            .unwrap();
        assert_eq!(keys(&created), ["delta", "alpha"]);
        assert_eq!((created.page.total, created.page.total_pages()), (5, 3));
        assert!(created.page.has_next());
        let last = app
            .list_features(query(
                FeatureSort::Key,
                true,
                PageRequest::new(4, Some(2)).unwrap(),
            ))
            .await
            .unwrap();
        assert_eq!(keys(&last), ["alpha"]);
        assert!(!last.page.has_next());
        let by_permission = app
            .list_features(FeatureQuery {
                permission_keys: vec!["reports.read".into()],
                name_contains: Some("ECHO".into()),
                ..query(FeatureSort::Name, false, PageRequest::new(0, None).unwrap())
            })
            .await
            .unwrap();
        assert_eq!(keys(&by_permission), ["echo"]);
        let err = PageRequest::new(0, Some(1001)).unwrap_err();
        assert_eq!(invalid_field(&err), "page.limit");
    }
}
