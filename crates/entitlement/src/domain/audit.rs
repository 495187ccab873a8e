//! What the entitlement service's writes record in the audit log. Every API write commits a
//! list of [`IndexChange`]s; [`entries`] turns them into one entry per changed item (the items a
//! write changes as a consequence included: a renamed feature's plans, a force-deleted
//! feature's routes), naming each with a typed [`Action`] decided from what the item was
//! before ([`Prior`]: the catalog and the grants the write's transaction read).

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
pub use tenantry_common::audit::AuditEntry;
use uuid::Uuid;

use super::catalog::Catalog;
use super::{Grant, IndexChange};

/// Every write of the entitlement service's API, by its stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    FeatureCreate,
    FeatureUpdate,
    FeatureDelete,
    PlanCreate,
    PlanUpdate,
    PlanDelete,
    FlagCreate,
    FlagUpdate,
    FlagDelete,
    RouteCreate,
    RouteUpdate,
    RouteDelete,
    GrantCreate,
    GrantUpdate,
    GrantRevoke,
    GrantDelete,
    CreditGrantCreate,
    CreditGrantVoid,
    MeterReset,
}

impl Action {
    pub const ALL: [Self; 19] = [
        Self::FeatureCreate,
        Self::FeatureUpdate,
        Self::FeatureDelete,
        Self::PlanCreate,
        Self::PlanUpdate,
        Self::PlanDelete,
        Self::FlagCreate,
        Self::FlagUpdate,
        Self::FlagDelete,
        Self::RouteCreate,
        Self::RouteUpdate,
        Self::RouteDelete,
        Self::GrantCreate,
        Self::GrantUpdate,
        Self::GrantRevoke,
        Self::GrantDelete,
        Self::CreditGrantCreate,
        Self::CreditGrantVoid,
        Self::MeterReset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::FeatureCreate => "feature.create",
            Self::FeatureUpdate => "feature.update",
            Self::FeatureDelete => "feature.delete",
            Self::PlanCreate => "plan.create",
            Self::PlanUpdate => "plan.update",
            Self::PlanDelete => "plan.delete",
            Self::FlagCreate => "flag.create",
            Self::FlagUpdate => "flag.update",
            Self::FlagDelete => "flag.delete",
            Self::RouteCreate => "route.create",
            Self::RouteUpdate => "route.update",
            Self::RouteDelete => "route.delete",
            Self::GrantCreate => "grant.create",
            Self::GrantUpdate => "grant.update",
            Self::GrantRevoke => "grant.revoke",
            Self::GrantDelete => "grant.delete",
            Self::CreditGrantCreate => "credit_grant.create",
            Self::CreditGrantVoid => "credit_grant.void",
            Self::MeterReset => "meter.reset",
        }
    }

    /// The resource type the action writes.
    pub fn resource_type(self) -> &'static str {
        match self {
            Self::FeatureCreate | Self::FeatureUpdate | Self::FeatureDelete => "feature",
            Self::PlanCreate | Self::PlanUpdate | Self::PlanDelete => "plan",
            Self::FlagCreate | Self::FlagUpdate | Self::FlagDelete => "flag",
            Self::RouteCreate | Self::RouteUpdate | Self::RouteDelete => "route",
            Self::GrantCreate | Self::GrantUpdate | Self::GrantRevoke | Self::GrantDelete => {
                "grant"
            }
            Self::CreditGrantCreate | Self::CreditGrantVoid => "credit_grant",
            Self::MeterReset => "meter",
        }
    }
}

/// What the items a write changes were before it, as its transaction read them. An item it
/// does not know is new.
#[derive(Debug, Default)]
pub struct Prior<'a> {
    catalog: Option<&'a Catalog>,
    grants: HashMap<Uuid, Grant>,
}

impl<'a> Prior<'a> {
    /// Nothing existed before (a create).
    pub fn none() -> Self {
        Self::default()
    }

    /// The catalog as the write's transaction read it.
    pub fn catalog(catalog: &'a Catalog) -> Self {
        Self {
            catalog: Some(catalog),
            grants: HashMap::new(),
        }
    }

    /// The grants as the write's transaction locked them.
    pub fn grants(grants: impl IntoIterator<Item = Grant>) -> Self {
        Self {
            catalog: None,
            grants: grants.into_iter().map(|g| (g.id, g)).collect(),
        }
    }
}

/// An item as an entry shows it: its fields but the update time, which every write changes.
fn view<T: Serialize>(item: &T) -> Value {
    let mut value = serde_json::to_value(item).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("updatedAt");
        map.remove("updated_at");
    }
    value
}

fn entry(
    action: Action,
    id: Uuid,
    account_id: Option<String>,
    before: Option<Value>,
    after: Option<Value>,
) -> AuditEntry {
    AuditEntry::new(
        action.name(),
        action.resource_type(),
        id.to_string(),
        account_id,
        before.unwrap_or(Value::Null),
        after.unwrap_or(Value::Null),
    )
}

/// A credit grant's creation (`before` = `None`) or voiding. Credit grants move meters, whose
/// changes record nothing themselves: their own use-cases record this.
pub fn credit_grant_entry(
    action: Action,
    before: Option<&super::metering::CreditGrant>,
    after: &super::metering::CreditGrant,
) -> AuditEntry {
    entry(
        action,
        after.id,
        Some(after.tenant_id.clone()),
        before.map(view),
        Some(view(after)),
    )
}

/// A manual reset of the account's meter of `feature_key` (the resource ID): the period it
/// closed, and the one it opened.
pub fn meter_reset_entry(
    meter: &super::metering::MeterKey,
    feature_key: &str,
    closed: &super::usage_history::PeriodSummary,
) -> AuditEntry {
    let action = Action::MeterReset;
    let mut before = serde_json::json!({"periodStart": closed.start, "usage": closed.usage,
                                        "overage": closed.overage});
    // A user's own meter names its user.
    if let Some(user) = meter.user() {
        before["userId"] = serde_json::json!(user);
    }
    AuditEntry::new(
        action.name(),
        action.resource_type(),
        feature_key.to_owned(),
        Some(meter.tenant_id.clone()),
        before,
        serde_json::json!({"periodStart": closed.end}),
    )
}

/// One entry per item `changes` create, change or delete, named from `prior`. Tenant-feed
/// changes (which no API call makes) record nothing.
pub fn entries(prior: &Prior<'_>, changes: &[IndexChange]) -> Vec<AuditEntry> {
    let catalog = prior.catalog;
    let feature = |id| {
        catalog
            .and_then(|c| c.feature_by_id(id))
            .map(|f| view(&f.value.feature))
    };
    let plan = |id| {
        catalog
            .and_then(|c| c.plan_by_id(id))
            .map(|p| view(&p.value))
    };
    let flag = |id| {
        catalog
            .and_then(|c| c.flag_by_id(id))
            .map(|f| view(&f.value.flag))
    };
    let route = |id| {
        catalog
            .and_then(|c| c.route_by_id(id))
            .map(|r| view(&r.value))
    };
    let upsert = |before: Option<Value>, create, update, id, after: Value| {
        let action = if before.is_some() { update } else { create };
        entry(action, id, None, before, Some(after))
    };
    changes
        .iter()
        .filter_map(|change| {
            Some(match change {
                IndexChange::UpsertFeature(f) => upsert(
                    feature(f.id),
                    Action::FeatureCreate,
                    Action::FeatureUpdate,
                    f.id,
                    view(f),
                ),
                IndexChange::DeleteFeature { id } => {
                    entry(Action::FeatureDelete, *id, None, feature(*id), None)
                }
                IndexChange::UpsertPlan(p) => upsert(
                    plan(p.id),
                    Action::PlanCreate,
                    Action::PlanUpdate,
                    p.id,
                    view(p),
                ),
                IndexChange::DeletePlan { id } => {
                    entry(Action::PlanDelete, *id, None, plan(*id), None)
                }
                IndexChange::UpsertFlag(f) => upsert(
                    flag(f.id),
                    Action::FlagCreate,
                    Action::FlagUpdate,
                    f.id,
                    view(f),
                ),
                IndexChange::DeleteFlag { id } => {
                    entry(Action::FlagDelete, *id, None, flag(*id), None)
                }
                IndexChange::UpsertRoute(r) => upsert(
                    route(r.id),
                    Action::RouteCreate,
                    Action::RouteUpdate,
                    r.id,
                    view(r),
                ),
                IndexChange::DeleteRoute { id } => {
                    entry(Action::RouteDelete, *id, None, route(*id), None)
                }
                IndexChange::UpsertGrant(g) => {
                    let before = prior.grants.get(&g.id);
                    let action = match before {
                        None => Action::GrantCreate,
                        Some(b) if b.revoked_at.is_none() && g.revoked_at.is_some() => {
                            Action::GrantRevoke
                        }
                        Some(_) => Action::GrantUpdate,
                    };
                    entry(
                        action,
                        g.id,
                        Some(g.tenant_id.clone()),
                        before.map(view),
                        Some(view(g)),
                    )
                }
                IndexChange::DeleteGrant { id } => {
                    let before = prior.grants.get(id);
                    entry(
                        Action::GrantDelete,
                        *id,
                        before.map(|g| g.tenant_id.clone()),
                        before.map(view),
                        None,
                    )
                }
                // A meter moves with usage (not an administrative write); the credit grants and
                // resets that also move it are audited by their own use-cases.
                IndexChange::UpsertTenant { .. }
                | IndexChange::RemoveTenant { .. }
                | IndexChange::UpsertMeter { .. } => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dotted() {
        let mut names: Vec<_> = Action::ALL.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
        assert!(
            Action::ALL
                .iter()
                .all(|a| a.name().starts_with(a.resource_type()))
        );
    }
}
