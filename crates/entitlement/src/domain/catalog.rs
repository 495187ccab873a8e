//! The catalog as a whole: features, plans, flags and routes with their bookkeeping, as one
//! transaction saw them. Writes validate against it; lists filter, sort and page it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::{Feature, FeatureFlag, Plan, Route};

/// A catalog object with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored<T> {
    pub value: T,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A feature's stored document: the domain feature plus the callers' permission IDs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDoc {
    #[serde(flatten)]
    pub feature: Feature,
    /// Permission key → the caller's permission ID (Frontegg v2), informational.
    #[serde(default)]
    pub permission_ids: BTreeMap<String, String>,
}

/// A flag's stored document: the domain flag plus what only the API shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagDoc {
    #[serde(flatten)]
    pub flag: FeatureFlag,
    pub feature_id: Uuid,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// The whole catalog, as one transaction saw it (each list in creation order).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub features: Vec<Stored<FeatureDoc>>,
    pub plans: Vec<Stored<Plan>>,
    pub flags: Vec<Stored<FlagDoc>>,
    pub routes: Vec<Stored<Route>>,
}

impl Catalog {
    pub fn feature_by_key(&self, key: &str) -> Option<&Stored<FeatureDoc>> {
        self.features.iter().find(|f| f.value.feature.key == key)
    }

    pub fn feature_by_id(&self, id: Uuid) -> Option<&Stored<FeatureDoc>> {
        self.features.iter().find(|f| f.value.feature.id == id)
    }

    pub fn plan_by_id(&self, id: Uuid) -> Option<&Stored<Plan>> {
        self.plans.iter().find(|p| p.value.id == id)
    }

    pub fn plan_by_key(&self, key: &str) -> Option<&Stored<Plan>> {
        self.plans.iter().find(|p| p.value.key == key)
    }

    pub fn flag_by_id(&self, id: Uuid) -> Option<&Stored<FlagDoc>> {
        self.flags.iter().find(|f| f.value.flag.id == id)
    }

    pub fn flag_of(&self, feature_key: &str) -> Option<&Stored<FlagDoc>> {
        self.flags
            .iter()
            .find(|f| f.value.flag.feature_key == feature_key)
    }

    pub fn route_by_id(&self, id: Uuid) -> Option<&Stored<Route>> {
        self.routes.iter().find(|r| r.value.id == id)
    }

    /// The feature a flag is for, as the API describes it: when the feature row is gone
    /// (never, while the flag's foreign key holds), a bare one with the flag's key.
    pub fn flagged_feature(&self, flag: &FlagDoc) -> Feature {
        match self.feature_by_id(flag.feature_id) {
            Some(f) => f.value.feature.clone(),
            None => Feature {
                id: flag.feature_id,
                key: flag.flag.feature_key.clone(),
                name: String::new(),
                description: None,
                metadata: serde_json::Value::Null,
                permissions: vec![],
                allocation_type: super::AllocationType::Bool,
                merge_policy: super::MergePolicy::Max,
                metering: None,
            },
        }
    }
}

/// A feature named by id or key.
#[derive(Debug, Clone)]
pub enum FeatureRef {
    Id(Uuid),
    Key(String),
}

impl std::fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureRef::Id(id) => id.fmt(f),
            FeatureRef::Key(key) => f.write_str(key),
        }
    }
}

impl FeatureRef {
    pub fn resolve<'c>(&self, catalog: &'c Catalog) -> Option<&'c Stored<FeatureDoc>> {
        match self {
            FeatureRef::Id(id) => catalog.feature_by_id(*id),
            FeatureRef::Key(key) => catalog.feature_by_key(key),
        }
    }
}

/// A plan named by id or key.
#[derive(Debug, Clone)]
pub enum PlanRef {
    Id(Uuid),
    Key(String),
}

impl PlanRef {
    pub fn resolve<'c>(&self, catalog: &'c Catalog) -> Option<&'c Stored<Plan>> {
        match self {
            PlanRef::Id(id) => catalog.plan_by_id(*id),
            PlanRef::Key(key) => catalog.plan_by_key(key),
        }
    }
}
