//! Routes: method and path patterns that allow, deny or require features and permissions.

use uuid::Uuid;

use super::idempotency::Idempotency;
use super::listing::{Listed, PageRequest, Sort, list};
use super::ports::Storage;
use super::{Engine, Saved};
use crate::domain::audit::Prior;
use crate::domain::catalog::Stored;
use crate::domain::{DomainError, IndexChange, Result, Route, RoutePolicy, validate_route};

/// A route's policy as asked for (`None`: not given or unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Allow,
    Deny,
    Require,
}

/// The policy `kind` with its requirements: only REQUIRE routes list any.
pub fn route_policy(
    kind: Option<PolicyKind>,
    features: Vec<String>,
    permissions: Vec<String>,
) -> Result<RoutePolicy> {
    let policy = match kind {
        Some(PolicyKind::Allow) => RoutePolicy::Allow,
        Some(PolicyKind::Deny) => RoutePolicy::Deny,
        Some(PolicyKind::Require) => {
            return Ok(RoutePolicy::Require {
                features,
                permissions,
            });
        }
        None => {
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

/// ListRoutes' filters; routes are listed by path, then method.
#[derive(Debug, Clone)]
pub struct RouteQuery {
    /// Case-insensitive part of the path pattern.
    pub path_contains: Option<String>,
    pub method: Option<String>,
    pub page: PageRequest,
}

/// A new route.
#[derive(Debug, Clone)]
pub struct NewRoute {
    pub method: String,
    pub path: String,
    pub policy: Option<PolicyKind>,
    pub required_features: Vec<String>,
    pub required_permissions: Vec<String>,
    pub description: Option<String>,
}

/// The fields an update sets (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct RoutePatch {
    pub method: Option<String>,
    pub path: Option<String>,
    /// An empty description clears it.
    pub description: Option<String>,
    /// `Some(None)`: a policy was given that is not ALLOW, DENY or REQUIRE.
    pub policy: Option<Option<PolicyKind>>,
    pub required_features: Option<Vec<String>>,
    pub required_permissions: Option<Vec<String>>,
}

impl<S: Storage> Engine<S> {
    pub async fn route(&self, id: Uuid) -> Result<Stored<Route>> {
        let catalog = self.catalog().await?;
        catalog
            .route_by_id(id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("route", id))
    }

    pub async fn list_routes(&self, q: RouteQuery) -> Result<Listed<Stored<Route>>> {
        let catalog = self.catalog().await?;
        let path = q.path_contains.map(|f| f.to_lowercase());
        let keep = |x: &Stored<Route>| {
            path.as_ref()
                .is_none_or(|s| x.value.path.to_lowercase().contains(s))
                && q.method.as_ref().is_none_or(|m| &x.value.method == m)
        };
        let by_path = |a: &Stored<Route>, b: &Stored<Route>| {
            (&a.value.path, &a.value.method, a.value.id).cmp(&(
                &b.value.path,
                &b.value.method,
                b.value.id,
            ))
        };
        let sort = Sort {
            order: Some(&by_path),
            descending: false,
        };
        Ok(list(&catalog.routes, keep, sort, q.page).map(Clone::clone))
    }

    /// Creates a route; with a key, a retry of the same request replays the first answer.
    pub async fn create_route(
        &self,
        new: NewRoute,
        idempotency: Option<&Idempotency>,
    ) -> Result<Saved<Stored<Route>>> {
        let route = Route {
            id: Uuid::now_v7(),
            method: new.method,
            path: new.path,
            policy: route_policy(new.policy, new.required_features, new.required_permissions)?,
            description: new.description,
        };
        self.idempotent(idempotency, "create_route", |claim| async {
            let (txn, catalog, claimed) = self.catalog_txn_claiming(claim).await?;
            validate_route(&route, |k| catalog.feature_by_key(k).is_some())?;
            let now = self.now();
            let stored = Stored {
                value: route,
                created_at: now,
                updated_at: now,
            };
            self.store.put_route(&txn, &stored, true).await?;
            let change = IndexChange::UpsertRoute(stored.value.clone());
            self.commit_created(txn, vec![change], claimed, stored)
                .await
        })
        .await
    }

    pub async fn update_route(&self, id: Uuid, patch: RoutePatch) -> Result<Saved<Stored<Route>>> {
        let (txn, catalog) = self.catalog_txn().await?;
        let mut stored = catalog
            .route_by_id(id)
            .cloned()
            .ok_or_else(|| DomainError::not_found("route", id))?;
        let route = &mut stored.value;
        if let Some(m) = patch.method {
            route.method = m;
        }
        if let Some(p) = patch.path {
            route.path = p;
        }
        if let Some(d) = patch.description {
            route.description = Some(d).filter(|d| !d.is_empty());
        }
        let (kind, mut features, mut permissions) = match &route.policy {
            RoutePolicy::Allow => (PolicyKind::Allow, vec![], vec![]),
            RoutePolicy::Deny => (PolicyKind::Deny, vec![], vec![]),
            RoutePolicy::Require {
                features,
                permissions,
            } => (PolicyKind::Require, features.clone(), permissions.clone()),
        };
        if let Some(l) = patch.required_features {
            features = l;
        }
        if let Some(l) = patch.required_permissions {
            permissions = l;
        }
        route.policy = route_policy(patch.policy.unwrap_or(Some(kind)), features, permissions)?;
        validate_route(&stored.value, |k| catalog.feature_by_key(k).is_some())?;
        stored.updated_at = self.now();
        self.store.put_route(&txn, &stored, false).await?;
        let change = IndexChange::UpsertRoute(stored.value.clone());
        let revision = self
            .commit(txn, vec![change], &Prior::catalog(&catalog))
            .await?;
        Ok(Saved {
            value: stored,
            revision,
        })
    }

    pub async fn delete_route(&self, id: Uuid) -> Result<u64> {
        let (txn, catalog) = self.catalog_txn().await?;
        if catalog.route_by_id(id).is_none() {
            return Err(DomainError::not_found("route", id));
        }
        self.store.delete_route(&txn, id).await?;
        self.commit(
            txn,
            vec![IndexChange::DeleteRoute { id }],
            &Prior::catalog(&catalog),
        )
        .await
    }
}
