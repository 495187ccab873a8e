//! What the tenant service's writes record in the audit log: one typed action per write the
//! API offers, and the entry each builds from the resource before and after (common's
//! [`AuditEntry`] keeps the changed fields and redacts secrets).

use serde_json::{Value, json};
pub use tenantry_common::audit::AuditEntry;

use super::{Account, Membership};

/// Every write of the tenant service's API, by its stable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    AccountCreate,
    /// A create that brought a deleted account with the same ID back.
    AccountReactivate,
    AccountUpdate,
    AccountMetadataUpdate,
    AccountMetadataDelete,
    AccountSettingsUpdate,
    AccountResellerUpdate,
    AccountAccessTypeUpdate,
    AccountDelete,
    HierarchyAttach,
    HierarchyDetach,
    MembershipAdd,
    MembershipRemove,
    MigrationSubmit,
}

impl Action {
    pub const ALL: [Self; 14] = [
        Self::AccountCreate,
        Self::AccountReactivate,
        Self::AccountUpdate,
        Self::AccountMetadataUpdate,
        Self::AccountMetadataDelete,
        Self::AccountSettingsUpdate,
        Self::AccountResellerUpdate,
        Self::AccountAccessTypeUpdate,
        Self::AccountDelete,
        Self::HierarchyAttach,
        Self::HierarchyDetach,
        Self::MembershipAdd,
        Self::MembershipRemove,
        Self::MigrationSubmit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AccountCreate => "account.create",
            Self::AccountReactivate => "account.reactivate",
            Self::AccountUpdate => "account.update",
            Self::AccountMetadataUpdate => "account.metadata.update",
            Self::AccountMetadataDelete => "account.metadata.delete",
            Self::AccountSettingsUpdate => "account.settings.update",
            Self::AccountResellerUpdate => "account.reseller.update",
            Self::AccountAccessTypeUpdate => "account.access_type.update",
            Self::AccountDelete => "account.delete",
            Self::HierarchyAttach => "hierarchy.attach",
            Self::HierarchyDetach => "hierarchy.detach",
            Self::MembershipAdd => "membership.add",
            Self::MembershipRemove => "membership.remove",
            Self::MigrationSubmit => "migration.submit",
        }
    }
}

/// An account as an entry shows it: every field but `updated_at`, which every write changes.
fn account_view(account: &Account) -> Value {
    let mut value = serde_json::to_value(account).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("updated_at");
    }
    value
}

/// A write to one account: `before` is `None` for a create, `after` `None` for a delete.
pub fn account(action: Action, before: Option<&Account>, after: Option<&Account>) -> AuditEntry {
    let id = after
        .or(before)
        .map(|a| a.tenant_id.clone())
        .unwrap_or_default();
    AuditEntry::new(
        action.name(),
        "account",
        id.clone(),
        Some(id),
        before.map_or(Value::Null, account_view),
        after.map_or(Value::Null, account_view),
    )
}

/// A membership added (`added`) or removed.
pub fn membership(membership: &Membership, added: bool) -> AuditEntry {
    let view = json!({
        "tenant_id": membership.tenant_id,
        "user_id": membership.user_id,
    });
    let (action, before, after) = if added {
        (Action::MembershipAdd, Value::Null, view)
    } else {
        (Action::MembershipRemove, view, Value::Null)
    };
    AuditEntry::new(
        action.name(),
        "membership",
        format!("{}/{}", membership.tenant_id, membership.user_id),
        Some(membership.tenant_id.clone()),
        before,
        after,
    )
}

/// A migration submitted with `total` items (its accounts are created by the job; this entry
/// records the request).
pub fn migration(migration_id: &str, total: u64) -> AuditEntry {
    AuditEntry::new(
        Action::MigrationSubmit.name(),
        "migration",
        migration_id,
        None,
        Value::Null,
        json!({ "migration_id": migration_id, "total_items": total }),
    )
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
        assert!(names.iter().all(|n| n.contains('.')));
    }

    #[test]
    fn an_update_shows_the_changed_fields_before_and_after() {
        let new = crate::domain::NewAccount {
            name: "Old".into(),
            ..crate::domain::NewAccount::default()
        };
        let before = Account::from_new("t".into(), &new, chrono::Utc::now());
        let mut after = before.clone();
        after.name = "New".into();
        after.updated_at = chrono::Utc::now();
        let entry = account(Action::AccountUpdate, Some(&before), Some(&after));
        assert_eq!(entry.before, json!({"name": "Old"}));
        assert_eq!(entry.after, json!({"name": "New"}));
        assert_eq!(entry.account_id.as_deref(), Some("t"));
    }
}
