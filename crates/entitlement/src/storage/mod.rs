//! Storage: sea-orm entities and the repository, split by table group, implementing the
//! storage ports of `app::ports`. Returns domain types; database errors are classified with
//! [`tenantry_common::db::classify`] and never leak SQL or constraint names to callers.
//!
//! Every writing transaction that changes the index ends in `advance` (`revisions.rs`) and a
//! commit: it bumps the single revision row (whose row lock orders writers, so revisions
//! become visible in increasing order), records the transaction's index changes in
//! `ent_change_log` under that revision and NOTIFYs other replicas (PostgreSQL; delivered at
//! commit), in one statement. The revision is what the write RPC returns.

mod accounts;
mod audit;
mod catalog;
mod consumption;
pub mod entities;
mod errors;
mod grants;
mod idempotency;
mod index_load;
mod metering;
mod metering_past;
mod notify;
mod reservations;
mod revisions;
mod thresholds;
mod transitions;
mod usage_history;
mod webhooks;

use async_trait::async_trait;
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};

use crate::app::ports::Transactional;
use crate::domain::{DomainError, Result};

pub(crate) use errors::db_err;

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| DomainError::Internal {
        message: "serialize a stored document".into(),
        source: Some(Box::new(e)),
    })
}

pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| DomainError::Internal {
        message: "decode a stored document".into(),
        source: Some(Box::new(e)),
    })
}

/// The entitlement service's repository. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: DbBackend,
    /// PostgreSQL NOTIFY channel for index changes (channels are database-wide: named after
    /// the schema so two deployments sharing a database do not wake each other).
    channel: String,
    /// Names this process's notifications, so its own follower skips the writes it applies
    /// to its index itself (racing it would make the writer wait for a log read of its own
    /// change).
    origin: NotifyOrigin,
    /// Whether writes record audit entries (`audit_enabled`).
    audit_enabled: bool,
    /// The connection consumption groups write on ([`consumption`]).
    consume_conn: consumption::HeldConnection,
    /// Which single-statement writes announce themselves ([`notify`]).
    throttle: notify::NotifyThrottle,
}

/// The sender part of change-log notifications: `<revision> <origin>`.
#[derive(Debug, Clone)]
struct NotifyOrigin(String);

impl NotifyOrigin {
    fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// What follows the revision in a payload (written by the statement that takes it).
    fn payload_suffix(&self) -> String {
        self.0.clone()
    }

    /// A payload announcing `revision`, sent on its own (not by the statement taking it).
    fn payload(&self, revision: u64) -> String {
        format!("{revision} {}", self.0)
    }

    fn sent(&self, payload: &str) -> bool {
        payload
            .rsplit_once(' ')
            .is_some_and(|(_, origin)| origin == self.0)
    }
}

impl Store {
    pub fn new(db: DatabaseConnection, schema: &str) -> Self {
        let backend = db.get_database_backend();
        Self {
            db,
            backend,
            channel: format!("{schema}_entitlement_changes"),
            origin: NotifyOrigin::new(),
            audit_enabled: true,
            consume_conn: consumption::HeldConnection::default(),
            throttle: notify::NotifyThrottle::default(),
        }
    }

    /// This store with audit entries recorded or not (`audit_enabled`; on by default).
    #[must_use]
    pub fn with_audit(mut self, enabled: bool) -> Self {
        self.audit_enabled = enabled;
        self
    }

    /// Whether a change-log notification (`<revision> <origin>`) came from this store's own
    /// commits.
    pub fn is_own_notification(&self, payload: &str) -> bool {
        self.origin.sent(payload)
    }

    /// Closes the database pool once the connection consumption groups keep is handed back
    /// (closing waits for every connection taken from the pool: it never returned before).
    pub async fn close(&self) -> std::result::Result<(), sea_orm::DbErr> {
        self.consume_conn.release().await;
        self.db.clone().close().await
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }
}

#[async_trait]
impl Transactional for Store {
    type Txn = DatabaseTransaction;

    /// Starts a writing transaction (SQLite: `BEGIN IMMEDIATE`, so two writers never deadlock
    /// upgrading read locks).
    async fn begin(&self) -> Result<DatabaseTransaction> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(db_err("begin transaction"))
    }

    async fn commit_plain(&self, txn: DatabaseTransaction) -> Result<()> {
        txn.commit().await.map_err(db_err("commit"))
    }
}

#[cfg(test)]
mod notification_tests {
    use super::*;

    #[test]
    fn a_store_recognises_only_its_own_notifications() {
        let (a, b) = (NotifyOrigin::new(), NotifyOrigin::new());
        let own = format!("42 {}", a.payload_suffix());
        assert!(own.starts_with("42 "));
        assert!(a.sent(&own));
        assert!(!b.sent(&own));
        // A bare revision (an older replica's payload) always wakes the follower.
        assert!(!a.sent("42"));
    }
}
