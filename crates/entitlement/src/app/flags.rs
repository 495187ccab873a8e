//! Feature flags: one per feature, read with the feature they are for.

use std::cmp::Ordering;

use uuid::Uuid;

use super::idempotency::Idempotency;
use super::listing::{Listed, PageRequest, Sort, list};
use super::ports::Storage;
use super::{Engine, Saved};
use crate::domain::audit::Prior;
use crate::domain::catalog::{Catalog, FeatureRef, FlagDoc, Stored};
use crate::domain::{
    DomainError, Feature, FeatureFlag, IndexChange, Result, Rule, Treatment, validate_flag,
};

/// A flag with the feature it is for, as reads describe it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlagView {
    pub flag: Stored<FlagDoc>,
    pub feature: Feature,
}

impl FlagView {
    fn of(catalog: &Catalog, flag: &Stored<FlagDoc>) -> Self {
        Self {
            feature: catalog.flagged_feature(&flag.value),
            flag: flag.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlagSort {
    #[default]
    Created,
    Updated,
    Name,
}

/// ListFeatureFlags' filters (empty lists mean "any") and order.
#[derive(Debug, Clone)]
pub struct FlagQuery {
    /// Case-insensitive part of the name.
    pub name_contains: Option<String>,
    pub feature_ids: Vec<String>,
    pub on: Option<bool>,
    pub sort: FlagSort,
    pub descending: bool,
    pub page: PageRequest,
}

/// A new flag for the feature `feature` names.
#[derive(Debug, Clone)]
pub struct NewFlag {
    pub feature: FeatureRef,
    pub name: String,
    pub description: Option<String>,
    pub on: bool,
    pub off_treatment: Treatment,
    pub default_treatment: Treatment,
    pub rules: Vec<Rule>,
    pub metadata: serde_json::Value,
}

/// The fields an update sets (`None`: unchanged). The flagged feature never changes.
#[derive(Debug, Clone, Default)]
pub struct FlagPatch {
    pub name: Option<String>,
    pub on: Option<bool>,
    pub off_treatment: Option<Treatment>,
    pub default_treatment: Option<Treatment>,
    /// An empty description clears it.
    pub description: Option<String>,
    pub rules: Option<Vec<Rule>>,
    pub metadata: Option<serde_json::Value>,
    /// The flag's feature as the client read it: must be the flag's own.
    pub feature_id: Option<Uuid>,
}

impl<S: Storage> Engine<S> {
    /// A flag by id (`None`: there is none).
    pub async fn flag(&self, id: Uuid) -> Result<FlagView> {
        let catalog = self.catalog().await?;
        let flag = catalog
            .flag_by_id(id)
            .ok_or_else(|| DomainError::not_found("feature flag", id))?;
        Ok(FlagView::of(&catalog, flag))
    }

    pub async fn list_flags(&self, q: FlagQuery) -> Result<Listed<FlagView>> {
        let catalog = self.catalog().await?;
        let name = q.name_contains.map(|f| f.to_lowercase());
        let keep = |f: &Stored<FlagDoc>| {
            name.as_ref()
                .is_none_or(|s| f.value.flag.name.to_lowercase().contains(s))
                && (q.feature_ids.is_empty()
                    || q.feature_ids.contains(&f.value.feature_id.to_string()))
                && q.on.is_none_or(|on| f.value.flag.on == on)
        };
        let id = |f: &Stored<FlagDoc>| f.value.flag.id;
        let by_name = |a: &Stored<FlagDoc>, b: &Stored<FlagDoc>| -> Ordering {
            (&a.value.flag.name, id(a)).cmp(&(&b.value.flag.name, id(b)))
        };
        let by_updated = |a: &Stored<FlagDoc>, b: &Stored<FlagDoc>| -> Ordering {
            (a.updated_at, id(a)).cmp(&(b.updated_at, id(b)))
        };
        let by_created = |a: &Stored<FlagDoc>, b: &Stored<FlagDoc>| -> Ordering {
            (a.created_at, id(a)).cmp(&(b.created_at, id(b)))
        };
        let order: &dyn Fn(&Stored<FlagDoc>, &Stored<FlagDoc>) -> Ordering = match q.sort {
            FlagSort::Name => &by_name,
            FlagSort::Updated => &by_updated,
            FlagSort::Created => &by_created,
        };
        let sort = Sort {
            order: Some(order),
            descending: q.descending,
        };
        Ok(list(&catalog.flags, keep, sort, q.page).map(|f| FlagView::of(&catalog, f)))
    }

    /// Creates a flag for the feature `new.feature` names (by id or key); with a key, a retry
    /// of the same request replays the first answer.
    pub async fn create_flag(
        &self,
        new: NewFlag,
        idempotency: Option<&Idempotency>,
    ) -> Result<Saved<FlagView>> {
        if new.name.trim().is_empty() {
            return Err(DomainError::invalid("name", "must not be empty"));
        }
        self.idempotent(idempotency, "create_flag", |claim| async {
            let (txn, catalog, claimed) = self.catalog_txn_claiming(claim).await?;
            let target = new
                .feature
                .resolve(&catalog)
                // NOT_FOUND naming the feature, as a plan naming an unknown feature is.
                .ok_or_else(|| DomainError::not_found("feature", &new.feature))?
                .value
                .feature
                .clone();
            if catalog.flag_of(&target.key).is_some() {
                return Err(DomainError::AlreadyExists {
                    kind: "feature flag",
                    id: target.key,
                });
            }
            let doc = FlagDoc {
                flag: FeatureFlag {
                    id: Uuid::now_v7(),
                    feature_key: target.key.clone(),
                    name: new.name,
                    description: new.description,
                    on: new.on,
                    off_treatment: new.off_treatment,
                    default_treatment: new.default_treatment,
                    rules: new.rules,
                },
                feature_id: target.id,
                metadata: new.metadata,
            };
            validate_flag(&doc.flag, |k| catalog.feature_by_key(k).is_some())?;
            let now = self.now();
            let stored = Stored {
                value: doc,
                created_at: now,
                updated_at: now,
            };
            self.store.put_flag(&txn, &stored, true).await?;
            let change = IndexChange::UpsertFlag(stored.value.flag.clone());
            let view = FlagView {
                flag: stored,
                feature: target,
            };
            self.commit_created(txn, vec![change], claimed, view).await
        })
        .await
    }

    pub async fn update_flag(&self, id: Uuid, patch: FlagPatch) -> Result<Saved<FlagView>> {
        let (txn, catalog) = self.catalog_txn().await?;
        let mut stored = catalog
            .flag_by_id(id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("feature flag", id))?;
        if patch
            .feature_id
            .is_some_and(|feature| feature != stored.value.feature_id)
        {
            return Err(DomainError::invalid(
                "feature_id",
                "a flag cannot move to another feature",
            ));
        }
        let f = &mut stored.value.flag;
        if let Some(name) = patch.name {
            f.name = name;
        }
        if let Some(on) = patch.on {
            f.on = on;
        }
        if let Some(t) = patch.off_treatment {
            f.off_treatment = t;
        }
        if let Some(t) = patch.default_treatment {
            f.default_treatment = t;
        }
        if let Some(d) = patch.description {
            f.description = Some(d).filter(|d| !d.is_empty());
        }
        if let Some(rules) = patch.rules {
            f.rules = rules;
        }
        if let Some(metadata) = patch.metadata {
            stored.value.metadata = metadata;
        }
        validate_flag(&stored.value.flag, |k| catalog.feature_by_key(k).is_some())?;
        stored.updated_at = self.now();
        self.store.put_flag(&txn, &stored, false).await?;
        let change = IndexChange::UpsertFlag(stored.value.flag.clone());
        let revision = self
            .commit(txn, vec![change], &Prior::catalog(&catalog))
            .await?;
        Ok(Saved {
            value: FlagView::of(&catalog, &stored),
            revision,
        })
    }

    pub async fn delete_flag(&self, id: Uuid) -> Result<u64> {
        let (txn, catalog) = self.catalog_txn().await?;
        if catalog.flag_by_id(id).is_none() {
            return Err(DomainError::not_found("feature flag", id));
        }
        self.store.delete_flag(&txn, id).await?;
        self.commit(
            txn,
            vec![IndexChange::DeleteFlag { id }],
            &Prior::catalog(&catalog),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::app::testing::{self, invalid_field};
    use crate::domain::{AllocationType, Condition, ConditionOp, Justification, PlanFeature};

    fn new_flag(feature: &str) -> NewFlag {
        NewFlag {
            feature: FeatureRef::Key(feature.into()),
            name: format!("{feature} rollout"),
            description: None,
            on: true,
            off_treatment: Treatment::False,
            default_treatment: Treatment::False,
            rules: vec![],
            metadata: serde_json::Value::Null,
        }
    }

    fn country_in(countries: &[&str]) -> Rule {
        Rule {
            description: None,
            conditions: vec![Condition {
                attribute: "country".into(),
                attribute_type: crate::domain::AttributeType::Custom,
                negate: false,
                op: ConditionOp::InList,
                value: json!({ "list": countries }),
            }],
            treatment: Treatment::True,
        }
    }

    #[tokio::test]
    async fn a_feature_has_at_most_one_flag_and_its_rules_must_compile() {
        let t = testing::engine().await;
        let app = &t.engine;
        t.feature("sso", AllocationType::Bool, &[]).await;
        let err = app.create_flag(new_flag("nope"), None).await.unwrap_err();
        assert!(
            matches!(&err, DomainError::NotFound { kind: "feature", id } if id == "nope"),
            "{err:?}"
        );
        let err = app
            .create_flag(
                NewFlag {
                    name: " ".into(),
                    ..new_flag("sso")
                },
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "name");
        let mut empty_rule = country_in(&["de"]);
        empty_rule.conditions.clear();
        let err = app
            .create_flag(
                NewFlag {
                    rules: vec![empty_rule],
                    ..new_flag("sso")
                },
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "rules[0].conditions");
        let mut malformed = country_in(&["de"]);
        malformed.conditions[0].value = json!({ "number": 3 });
        let err = app
            .create_flag(
                NewFlag {
                    rules: vec![malformed],
                    ..new_flag("sso")
                },
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(invalid_field(&err), "rules[0].conditions[0]");
        let created = app.create_flag(new_flag("sso"), None).await.unwrap();
        assert_eq!(created.value.feature.key, "sso");
        let err = app.create_flag(new_flag("sso"), None).await.unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::AlreadyExists {
                    kind: "feature flag",
                    ..
                }
            ),
            "{err:?}"
        );
        let id = created.value.flag.value.flag.id;
        app.delete_flag(id).await.unwrap();
        assert!(matches!(
            app.flag(id).await.unwrap_err(),
            DomainError::NotFound { .. }
        ));
        assert!(matches!(
            app.delete_flag(id).await.unwrap_err(),
            DomainError::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn a_flag_only_takes_a_granted_feature_away_by_the_subjects_attributes() {
        let t = testing::engine().await;
        let app = &t.engine;
        t.account("acme", None).await;
        t.account("other", None).await;
        t.feature("sso", AllocationType::Bool, &[]).await;
        t.plan("pro", vec![PlanFeature::bare("sso")]).await;
        t.grant("pro", "acme", None).await;
        let flag = app
            .create_flag(
                NewFlag {
                    rules: vec![country_in(&["de"])],
                    ..new_flag("sso")
                },
                None,
            )
            .await
            .unwrap()
            .value;
        let check = |tenant: &'static str, country: Option<&str>| {
            let mut q = testing::feature_query(tenant, None, "sso");
            q.attributes = country.map(|c| {
                let mut map = serde_json::Map::new();
                map.insert("country".into(), json!(c));
                map
            });
            async move { app.check(&q, 0).await.unwrap().value }
        };
        assert!(check("acme", Some("de")).await.result);
        let off = check("acme", Some("fr")).await;
        assert_eq!(off.justification, Some(Justification::FeatureFlagOff));
        let off = check("acme", None).await;
        assert_eq!(off.justification, Some(Justification::FeatureFlagOff));
        // The flag never entitles on its own.
        let ungranted = check("other", Some("de")).await;
        assert_eq!(ungranted.justification, Some(Justification::MissingFeature));
        // Switched off, the off treatment applies to everyone.
        let updated = app
            .update_flag(
                flag.flag.value.flag.id,
                FlagPatch {
                    on: Some(false),
                    off_treatment: Some(Treatment::True),
                    ..FlagPatch::default()
                },
            )
            .await
            .unwrap();
        assert!(!updated.value.flag.value.flag.on);
        assert!(check("acme", Some("fr")).await.result);
        let listed = app
            .list_flags(FlagQuery {
                name_contains: Some("ROLLOUT".into()),
                feature_ids: vec![],
                on: Some(false),
                sort: FlagSort::Name,
                descending: false,
                page: super::super::listing::PageRequest::new(0, None).unwrap(),
            })
            .await
            .unwrap();
        assert_eq!(listed.page.total, 1);
        assert_eq!(listed.items[0].feature.key, "sso");
    }
}
