//! Change-feed events: what every write records in the outbox.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::account::Account;
use super::migration::Migration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    Reactivated,
    Metadata,
    Hierarchy,
    Membership,
    /// A migration ended: the one kind that is no account's change.
    MigrationFinished,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 8] = [
        Self::Created,
        Self::Updated,
        Self::Deleted,
        Self::Reactivated,
        Self::Metadata,
        Self::Hierarchy,
        Self::Membership,
        Self::MigrationFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Reactivated => "reactivated",
            Self::Metadata => "metadata",
            Self::Hierarchy => "hierarchy",
            Self::Membership => "membership",
            Self::MigrationFinished => "migration_finished",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// Whether the change adds an account to the live ones or removes one from them.
    pub fn changes_live_set(self) -> bool {
        matches!(self, Self::Created | Self::Deleted | Self::Reactivated)
    }
}

/// Type-specific detail of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeDetail {
    None,
    Hierarchy {
        old_parent: Option<String>,
        new_parent: Option<String>,
    },
    Membership {
        user_id: String,
        added: bool,
    },
}

/// An event to record, before it has a sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct NewChange {
    pub kind: ChangeKind,
    /// The account without its large fields (see [`feed_view`]).
    pub account: Account,
    pub detail: ChangeDetail,
    /// For updates: the fields the change set (see [`changed_fields`]).
    pub changed_fields: Vec<String>,
}

impl NewChange {
    pub fn new(kind: ChangeKind, account: &Account) -> Self {
        Self {
            kind,
            account: feed_view(account),
            detail: ChangeDetail::None,
            changed_fields: Vec::new(),
        }
    }

    /// An update of `after`, naming the fields that differ from `before`.
    pub fn update(kind: ChangeKind, before: &Account, after: &Account) -> Self {
        Self {
            changed_fields: changed_fields(before, after),
            ..Self::new(kind, after)
        }
    }

    pub fn hierarchy(account: &Account, old_parent: Option<String>) -> Self {
        Self {
            detail: ChangeDetail::Hierarchy {
                old_parent,
                new_parent: account.parent_tenant_id.clone(),
            },
            ..Self::new(ChangeKind::Hierarchy, account)
        }
    }

    pub fn membership(account: &Account, user_id: &str, added: bool) -> Self {
        Self {
            detail: ChangeDetail::Membership {
                user_id: user_id.to_owned(),
                added,
            },
            ..Self::new(ChangeKind::Membership, account)
        }
    }
}

/// The account as events carry it: every field but the large ones (the logo and the
/// metadata). No follower needs them, and with them one event weighed as much as the account
/// (a 1 MB logo, twice over in the encoded event); followers that want them read the account.
pub fn feed_view(account: &Account) -> Account {
    Account {
        tenant_id: account.tenant_id.clone(),
        name: account.name.clone(),
        status: account.status.clone(),
        creator_name: account.creator_name.clone(),
        creator_email: account.creator_email.clone(),
        is_reseller: account.is_reseller,
        parent_tenant_id: account.parent_tenant_id.clone(),
        alias: account.alias.clone(),
        metadata: serde_json::Map::new(),
        settings: account.settings.clone_without_logo(),
        sub_account_access_type: account.sub_account_access_type,
        created_at: account.created_at,
        updated_at: account.updated_at,
    }
}

/// The fields of `after` that differ from `before`, in the contract's field names
/// (`settings.logo`, `metadata`, ...).
pub fn changed_fields(before: &Account, after: &Account) -> Vec<String> {
    let mut changed: Vec<String> = [
        ("name", before.name != after.name),
        ("status", before.status != after.status),
        ("creator_name", before.creator_name != after.creator_name),
        ("creator_email", before.creator_email != after.creator_email),
        ("is_reseller", before.is_reseller != after.is_reseller),
        (
            "parent_tenant_id",
            before.parent_tenant_id != after.parent_tenant_id,
        ),
        ("alias", before.alias != after.alias),
        ("metadata", before.metadata != after.metadata),
        (
            "sub_account_access_type",
            before.sub_account_access_type != after.sub_account_access_type,
        ),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(name, _)| name.to_owned())
    .collect();
    changed.extend(
        before
            .settings
            .changed_fields(&after.settings)
            .map(|name| format!("settings.{name}")),
    );
    changed
}

/// A recorded event.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub sequence: u64,
    pub occurred_at: DateTime<Utc>,
    pub entry: FeedEntry,
}

/// What one outbox row records: an account's change, or the end of a migration.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedEntry {
    Account(Box<AccountChange>),
    MigrationFinished(Migration),
}

impl FeedEntry {
    pub fn kind(&self) -> ChangeKind {
        match self {
            Self::Account(change) => change.kind,
            Self::MigrationFinished(_) => ChangeKind::MigrationFinished,
        }
    }
}

/// A recorded account change.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountChange {
    pub kind: ChangeKind,
    pub tenant_id: String,
    pub account: Account,
    pub detail: ChangeDetail,
    pub changed_fields: Vec<String>,
}

/// What the outbox stores beside the indexed columns. Rows written before events left out the
/// large fields hold the whole account; reading passes them through [`feed_view`] too.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangePayload {
    pub account: Account,
    pub detail: ChangeDetail,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_fields: Vec<String>,
}

/// What the outbox stores for a `migration_finished` row (its `tenant_id` column is NULL).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MigrationPayload {
    pub migration: Migration,
}

/// What retention keeps of the outbox; older events are pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Events that occurred before this are pruned.
    pub older_than: Option<DateTime<Utc>>,
    /// At most this many of the newest events are kept.
    pub keep_events: Option<u64>,
}

/// The live accounts as of one feed sequence: what a follower whose cursor expired rebuilds
/// its state from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedSnapshot {
    pub sequence: u64,
    /// The highest sequence pruned when the snapshot was read: the events after it were still
    /// in the outbox.
    pub pruned_through: u64,
    pub accounts: Vec<AccountState>,
}

/// A live account as a snapshot carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    pub tenant_id: String,
    pub parent_tenant_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Settings, SubAccountAccessType};

    fn account() -> Account {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        Account {
            tenant_id: "t".into(),
            name: "T".into(),
            status: None,
            creator_name: None,
            creator_email: None,
            is_reseller: false,
            parent_tenant_id: Some("p".into()),
            alias: None,
            metadata: serde_json::Map::from_iter([("k".to_owned(), serde_json::json!([1]))]),
            settings: Settings {
                logo: Some("x".repeat(1 << 20)),
                locale: Some("en-GB".into()),
                ..Settings::default()
            },
            sub_account_access_type: SubAccountAccessType::DefaultOff,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn events_leave_out_the_logo_and_the_metadata_and_keep_the_rest() {
        let view = feed_view(&account());
        assert_eq!(view.settings.logo, None);
        assert!(view.metadata.is_empty());
        assert_eq!(view.settings.locale.as_deref(), Some("en-GB"));
        assert_eq!(view.parent_tenant_id.as_deref(), Some("p"));
        let encoded = serde_json::to_string(&view).unwrap();
        assert!(encoded.len() < 1_024, "{} bytes", encoded.len());
    }

    #[test]
    fn changed_fields_name_what_differs() {
        let before = account();
        let mut after = before.clone();
        assert!(changed_fields(&before, &after).is_empty());
        after.settings.logo = Some("y".into());
        after.metadata.clear();
        after.name = "U".into();
        assert_eq!(
            changed_fields(&before, &after),
            ["name", "metadata", "settings.logo"]
        );
    }
}
