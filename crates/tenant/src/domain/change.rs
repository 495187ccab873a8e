//! Change-feed events: what every write records in the outbox.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::account::Account;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    Reactivated,
    Metadata,
    Hierarchy,
    Membership,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 7] = [
        Self::Created,
        Self::Updated,
        Self::Deleted,
        Self::Reactivated,
        Self::Metadata,
        Self::Hierarchy,
        Self::Membership,
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
    pub account: Account,
    pub detail: ChangeDetail,
}

impl NewChange {
    pub fn new(kind: ChangeKind, account: &Account) -> Self {
        Self {
            kind,
            account: account.clone(),
            detail: ChangeDetail::None,
        }
    }

    pub fn hierarchy(account: &Account, old_parent: Option<String>) -> Self {
        Self {
            kind: ChangeKind::Hierarchy,
            account: account.clone(),
            detail: ChangeDetail::Hierarchy {
                old_parent,
                new_parent: account.parent_tenant_id.clone(),
            },
        }
    }

    pub fn membership(account: &Account, user_id: &str, added: bool) -> Self {
        Self {
            kind: ChangeKind::Membership,
            account: account.clone(),
            detail: ChangeDetail::Membership {
                user_id: user_id.to_owned(),
                added,
            },
        }
    }
}

/// A recorded event.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub sequence: u64,
    pub kind: ChangeKind,
    pub tenant_id: String,
    pub occurred_at: DateTime<Utc>,
    pub account: Account,
    pub detail: ChangeDetail,
}

/// What the outbox stores beside the indexed columns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangePayload {
    pub account: Account,
    pub detail: ChangeDetail,
}
