//! Storage: sea-orm entities and the repository. Returns domain types; database errors are
//! classified with [`tenantry_common::db::classify`] and never leak SQL to callers.

mod accounts;
mod audit;
mod convert;
pub mod entities;
mod feed;
mod hierarchy;
mod idempotency;
mod jobs;
mod memberships;

use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};
use tenantry_common::db::{DbFailure, classify};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::domain::{
    Error, Migration, NewChange,
    audit::AuditEntry,
    error::{ACCOUNT_EXISTS, ALIAS_TAKEN, MEMBERSHIP_EXISTS},
};

pub use jobs::BatchProgress;

type Result<T, E = Error> = std::result::Result<T, E>;

/// The tenant service's repository. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Whether writes record audit entries (`audit_enabled`).
    audit_enabled: bool,
}

struct Inner {
    db: DatabaseConnection,
    backend: DbBackend,
    max_depth: u32,
    /// PostgreSQL advisory-lock key guarding hierarchy changes, derived from the schema so two
    /// deployments sharing a database do not block each other.
    hierarchy_lock_key: i64,
    /// PostgreSQL NOTIFY channel waking change-feed followers (channels are database-wide).
    channel: String,
    /// Highest sequence committed by this process: wakes followers in this process at once.
    feed_head: watch::Sender<u64>,
    /// SQLite only: writers of this process take turns here, first come first served. SQLite's
    /// own busy handler is no queue: waiters poll, and a writer that commits and begins again
    /// at once (the import worker) wins the lock over and over, until other writers' busy
    /// timeout runs out (UNAVAILABLE).
    write_turns: Option<Arc<Mutex<()>>>,
}

/// A writer's turn at the SQLite write lock (nothing on PostgreSQL); held until the write ends.
#[must_use = "the turn ends when this is dropped"]
pub(crate) struct WriteTurn(
    #[expect(dead_code, reason = "held for its drop")] Option<OwnedMutexGuard<()>>,
);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("max_depth", &self.inner.max_depth)
            .finish_non_exhaustive()
    }
}

/// FNV-1a: a stable 64-bit hash (std's hasher is randomly seeded per process), so every
/// replica and version takes the same advisory lock.
fn stable_hash(text: &str) -> i64 {
    use std::hash::Hasher as _;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(text.as_bytes());
    i64::from_ne_bytes(hasher.finish().to_ne_bytes())
}

impl Store {
    pub fn new(db: DatabaseConnection, schema: &str, max_depth: u32) -> Self {
        let backend = db.get_database_backend();
        let (feed_head, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                db,
                backend,
                max_depth,
                hierarchy_lock_key: stable_hash(&format!("tenantry.tenant.hierarchy.{schema}")),
                channel: format!("tenantry_tenant_changes_{schema}"),
                feed_head,
                write_turns: (backend == DbBackend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            }),
            audit_enabled: true,
        }
    }

    /// This store with audit entries recorded or not (`audit_enabled`; on by default).
    #[must_use]
    pub fn with_audit(mut self, enabled: bool) -> Self {
        self.audit_enabled = enabled;
        self
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    pub fn is_postgres(&self) -> bool {
        self.inner.backend == DbBackend::Postgres
    }

    pub fn notify_channel(&self) -> &str {
        &self.inner.channel
    }

    /// Tells followers that sequences up to `sequence` may be readable now.
    pub fn wake_followers(&self, sequence: u64) {
        self.inner.feed_head.send_if_modified(|head| {
            if sequence > *head {
                *head = sequence;
                true
            } else {
                false
            }
        });
    }

    /// Waits for this writer's turn (SQLite; at once on PostgreSQL). Every write outside
    /// [`Store::begin_write`] takes one too.
    async fn write_turn(&self) -> WriteTurn {
        match &self.inner.write_turns {
            Some(turns) => WriteTurn(Some(turns.clone().lock_owned().await)),
            None => WriteTurn(None),
        }
    }

    /// A write transaction and the writer's turn, to hold until it ends (declared first, so
    /// it is dropped after the transaction). On SQLite it takes the write lock at BEGIN
    /// (IMMEDIATE), so a transaction never fails upgrading a read lock.
    async fn begin_write(&self) -> Result<(WriteTurn, DatabaseTransaction)> {
        let turn = self.write_turn().await;
        let txn = self
            .inner
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(db_err("begin transaction"))?;
        Ok((turn, txn))
    }

    /// Records `changes` in the outbox and commits, then wakes local followers. A transaction
    /// that created, reactivated or deleted accounts first folds its live-count deltas into
    /// the counter (PostgreSQL; see the `live_account_count` migration): the counter's row lock
    /// is taken here, after every other lock the transaction needs but the feed head's.
    async fn commit(
        &self,
        txn: DatabaseTransaction,
        changes: Vec<NewChange>,
        audit: Vec<AuditEntry>,
    ) -> Result<()> {
        self.commit_ending(txn, changes, audit, None).await
    }

    /// [`Store::commit`], recording after `changes` that the migration `finished` ended (the
    /// transaction that writes the job's final state, so its event exists exactly once).
    async fn commit_ending(
        &self,
        txn: DatabaseTransaction,
        changes: Vec<NewChange>,
        audit: Vec<AuditEntry>,
        finished: Option<Migration>,
    ) -> Result<()> {
        self.record_audit(&txn, audit).await?;
        if self.is_postgres() && changes.iter().any(|c| c.kind.changes_live_set()) {
            txn.execute_raw(Statement::from_string(DbBackend::Postgres, FOLD_LIVE_COUNT))
                .await
                .map_err(db_err("update live account count"))?;
        }
        let mut last = if changes.is_empty() {
            None
        } else {
            Some(feed::append(&txn, self, changes).await?)
        };
        if let Some(migration) = finished {
            last = Some(feed::append_migration_finished(&txn, self, migration).await?);
        }
        txn.commit().await.map_err(db_err("commit"))?;
        if let Some(last) = last {
            self.wake_followers(last);
        }
        Ok(())
    }

    /// Records the entries that change something in the audit log, inside `txn`, naming the
    /// running call's actor, request and trace.
    async fn record_audit(
        &self,
        txn: &DatabaseTransaction,
        entries: Vec<AuditEntry>,
    ) -> Result<()> {
        if !self.audit_enabled {
            return Ok(());
        }
        let entries: Vec<AuditEntry> = entries
            .into_iter()
            .filter(AuditEntry::changes_something)
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let context = tenantry_common::audit::RequestContext::current();
        tenantry_common::audit::store::insert(txn, &entries, &context, crate::domain::now())
            .await
            .map_err(db_err("record audit entries"))
    }

    /// The number of live accounts, from the counter the triggers maintain (exact, O(1)).
    async fn live_account_count(&self) -> Result<u64> {
        let sql = if self.is_postgres() {
            LIVE_COUNT_POSTGRES
        } else {
            LIVE_COUNT_SQLITE
        };
        let row = self
            .connection()
            .query_one_raw(self.statement(sql, vec![]))
            .await
            .map_err(db_err("read live account count"))?
            .ok_or_else(|| {
                Error::internal("read live account count", "the counter row is missing")
            })?;
        let live: i64 = row
            .try_get("", "live")
            .map_err(db_err("read live account count"))?;
        Ok(unsigned(live))
    }

    /// Serializes hierarchy changes until the transaction ends. On SQLite the IMMEDIATE write
    /// transaction already excludes every other writer.
    async fn lock_hierarchy(&self, txn: &DatabaseTransaction) -> Result<()> {
        if self.is_postgres() {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [Value::from(self.inner.hierarchy_lock_key)],
            ))
            .await
            .map_err(db_err("lock hierarchy"))?;
        }
        Ok(())
    }

    /// A statement written with `?` placeholders, numbered for PostgreSQL.
    fn statement(&self, sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(
            self.inner.backend,
            placeholders(self.inner.backend, sql),
            values,
        )
    }
}

/// The live-account count on PostgreSQL: the counter plus the committed deltas not folded into
/// it (normally none; a bulk load by another writer leaves one row per statement).
pub const LIVE_COUNT_POSTGRES: &str = "SELECT (live + COALESCE((SELECT SUM(delta) FROM account_count_deltas), 0))::BIGINT AS live \
     FROM account_counts WHERE id = 1";

/// The live-account count on SQLite, where the triggers update the counter directly.
pub const LIVE_COUNT_SQLITE: &str = "SELECT live FROM account_counts WHERE id = 1";

/// Moves this transaction's live-count deltas (written by the triggers on `accounts`) into the
/// counter row. Only its own rows: they are invisible to everyone else, so nothing here waits
/// but the counter's row lock.
const FOLD_LIVE_COUNT: &str = "WITH mine AS (
        DELETE FROM account_count_deltas WHERE txid = txid_current() RETURNING delta
    )
    UPDATE account_counts SET live = live + (SELECT SUM(delta) FROM mine)::BIGINT
    WHERE id = 1 AND EXISTS (SELECT 1 FROM mine)";

/// Rewrites `?` placeholders to `$1, $2, …` for PostgreSQL. Our SQL has no `?` elsewhere.
fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// The unique keys of the tenant schema whose violation means something to a caller. A
/// violation is matched on the whole key the database reports — the constraint's name on
/// PostgreSQL, `UNIQUE constraint failed: <columns>` on SQLite, which names no constraint —
/// never on a part of it; any other key is an internal error, and no name reaches a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UniqueKey {
    Account,
    LiveAlias,
    Membership,
}

impl UniqueKey {
    fn of(reported: &str) -> Option<Self> {
        let key = reported
            .strip_prefix("UNIQUE constraint failed: ")
            .unwrap_or(reported);
        match key {
            "accounts_pkey" | "accounts.tenant_id" => Some(Self::Account),
            "accounts_live_alias" | "accounts.alias" => Some(Self::LiveAlias),
            "memberships_pkey" | "memberships.tenant_id, memberships.user_id" => {
                Some(Self::Membership)
            }
            _ => None,
        }
    }

    fn error(self) -> Error {
        let (reason, message) = match self {
            Self::Account => (ACCOUNT_EXISTS, "an account with this ID already exists"),
            Self::LiveAlias => (ALIAS_TAKEN, "the alias is already used by another account"),
            Self::Membership => (
                MEMBERSHIP_EXISTS,
                "the user is already a member of the account",
            ),
        };
        Error::AlreadyExists {
            reason,
            message: message.into(),
        }
    }
}

/// Maps a database error to the domain: constraint violations to what they mean, lost
/// connections to UNAVAILABLE, anything else to an internal error carrying its context.
pub(crate) fn db_err(context: &'static str) -> impl FnOnce(DbErr) -> Error {
    move |err| match classify(&err) {
        DbFailure::UniqueViolation(key) => match UniqueKey::of(&key) {
            Some(key) => key.error(),
            None => Error::internal(context, err),
        },
        DbFailure::ForeignKeyViolation(_) => Error::precondition(
            "ACCOUNT_NOT_FOUND",
            "a referenced account does not exist (it may have been deleted concurrently)",
        ),
        DbFailure::Conflict => Error::Unavailable(
            "a concurrent change conflicted with this one; retry the request".into(),
        ),
        DbFailure::Unavailable => {
            Error::Unavailable("the tenant database is unavailable; retry later".into())
        }
        DbFailure::StorageFull => {
            Error::StorageFull("the tenant database's storage is full; nothing was written".into())
        }
        DbFailure::StorageFailed => Error::StorageFailed(
            "the tenant database's storage failed (I/O error); nothing was written".into(),
        ),
        DbFailure::Other => Error::internal(context, err),
    }
}

/// Converts a stored counter (never negative) to the domain's unsigned type.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// Converts a domain count to the stored signed type (saturating; counts are far below 2^63).
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        assert_eq!(
            placeholders(DbBackend::Postgres, "a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(placeholders(DbBackend::Sqlite, "a = ?"), "a = ?");
    }

    /// Each unique key a write can run into, on both databases, as the database reports it.
    async fn violations_map_to_what_they_mean(url: String) {
        use sea_orm::ConnectionTrait;

        use crate::app::ports::{AccountStore, MembershipStore, MigrationStore};
        use crate::domain::{DeletedIds, NewAccount};

        let conn = tenantry_common::db::connect(&tenantry_common::db::DbSettings {
            url,
            schema: "tenant".into(),
            max_connections: 2,
            acquire_timeout: std::time::Duration::from_secs(30),
            application_name: "unique-key-test".into(),
        })
        .await
        .unwrap();
        tenantry_common::db::migrate::<crate::migration::Migrator>(&conn)
            .await
            .unwrap();
        let store = Store::new(conn, "tenant", 16);
        for (id, alias) in [("a1", Some("x")), ("a2", None)] {
            let new = NewAccount {
                tenant_id: Some(id.into()),
                name: id.into(),
                alias: alias.map(str::to_owned),
                ..NewAccount::default()
            };
            store
                .create_account(new, DeletedIds::Reactivate, None)
                .await
                .unwrap();
        }
        store.add_membership("a1", "u", None).await.unwrap();
        store.begin_migration().await.unwrap();
        let violation = |sql: &'static str| {
            let store = store.clone();
            async move {
                let err = store
                    .connection()
                    .execute_raw(Statement::from_string(store.inner.backend, sql))
                    .await
                    .expect_err(sql);
                db_err("test")(err)
            }
        };
        let cases = [
            (
                "INSERT INTO accounts SELECT * FROM accounts WHERE tenant_id = 'a2'",
                "ACCOUNT_EXISTS",
            ),
            (
                "UPDATE accounts SET alias = 'x' WHERE tenant_id = 'a2'",
                "ALIAS_TAKEN",
            ),
            (
                "INSERT INTO memberships SELECT * FROM memberships",
                "MEMBERSHIP_EXISTS",
            ),
            // A key no caller can act on is an internal error, whatever its name says.
            (
                "INSERT INTO migration_jobs SELECT * FROM migration_jobs",
                "INTERNAL",
            ),
        ];
        for (sql, reason) in cases {
            let err = violation(sql).await;
            assert_eq!(err.reason(), reason, "{sql}: {err:?}");
            assert!(!err.to_string().contains("pkey"), "{err}");
        }
    }

    #[tokio::test]
    async fn unique_violations_are_decided_on_the_whole_key_on_sqlite() {
        let (_dir, url) = tenantry_common::testing::sqlite();
        violations_map_to_what_they_mean(url).await;
    }

    #[tokio::test]
    async fn unique_violations_are_decided_on_the_whole_key_on_postgres() {
        let url = tenantry_common::testing::postgres().create_database().await;
        violations_map_to_what_they_mean(url).await;
    }

    #[test]
    fn lock_keys_are_stable_and_schema_specific() {
        assert_eq!(stable_hash("x"), stable_hash("x"));
        assert_ne!(stable_hash("tenant"), stable_hash("tenant2"));
        // Replicas of two versions must take the same lock during a rolling upgrade.
        assert_eq!(
            stable_hash("tenantry.tenant.hierarchy.tenant"),
            0x738b_8213_fd11_2da7
        );
    }
}
