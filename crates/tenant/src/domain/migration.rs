//! Bulk import (migration) jobs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Error,
    account::{MAX_ID_CHARS, NewAccount},
};

/// Most items one job may hold.
pub const MAX_MIGRATION_ITEMS: u64 = 1_000_000;
/// Largest item, stored: past any valid account (a 256 KiB logo, 64 KiB of metadata and its
/// short texts), so only an item that could never be imported is refused whole.
pub const MAX_MIGRATION_ITEM_BYTES: usize = 1024 * 1024;
/// Most bytes one job may store, its items together.
pub const MAX_MIGRATION_BYTES: u64 = 256 * 1024 * 1024;
/// Items a job applies per batch: one transaction each, holding the SQLite write lock
/// throughout, so another write waits for at most one batch (writers take turns in order).
pub const MIGRATION_BATCH: u64 = 100;
pub const DEFAULT_ERRORS_LIMIT: u32 = 50;
pub const MAX_ERRORS_LIMIT: u32 = 1_000;

/// One account to import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MigrationItem {
    /// The seed's bare ID: an account with that ID and the ID as its name. An existing live
    /// account with that ID counts as identical (only the ID was specified).
    Bare(String),
    Full(Box<NewAccount>),
}

impl MigrationItem {
    /// The item's account ID, if it names one.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Self::Bare(id) => Some(id.as_str()).filter(|id| !id.is_empty()),
            Self::Full(account) => account.tenant_id.as_deref().filter(|id| !id.is_empty()),
        }
    }

    /// The item's stored size, or why the whole submission is refused for it: a bare ID longer
    /// than any ID, or an item larger than any valid account. Such an item is a client sending
    /// too much, not an account to report on; smaller faults stay the item's own (its error).
    pub fn stored_size(&self, field: &str) -> Result<usize, Error> {
        if let Self::Bare(id) = self
            && id.chars().count() > MAX_ID_CHARS
        {
            return Err(Error::invalid(
                field,
                format!("a bare account ID is at most {MAX_ID_CHARS} characters"),
            ));
        }
        let size = serde_json::to_vec(self)
            .map_err(|e| Error::internal("encode migration item", e))?
            .len();
        if size > MAX_MIGRATION_ITEM_BYTES {
            return Err(Error::invalid(
                field,
                format!(
                    "is {size} bytes; an item is at most {MAX_MIGRATION_ITEM_BYTES} (far past any valid account)"
                ),
            ));
        }
        Ok(size)
    }
}

/// A submitted job, as SubmitMigration answers (and an idempotency key replays).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    pub migration_id: String,
    pub total_items: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    Pending,
    Running,
    Completed,
    Failed,
}

impl MigrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub id: String,
    pub state: MigrationState,
    pub total_items: u64,
    pub processed_items: u64,
    pub created_items: u64,
    pub skipped_items: u64,
    pub failed_items: u64,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Why one item was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemError {
    pub index: u64,
    pub tenant_id: String,
    pub field: String,
    pub reason: String,
    pub message: String,
}

/// What happened to one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    Created,
    Skipped,
    /// Its parent is another item of the job not applied yet: retry in a later pass.
    Deferred,
    Failed {
        field: String,
        reason: String,
        message: String,
    },
}
