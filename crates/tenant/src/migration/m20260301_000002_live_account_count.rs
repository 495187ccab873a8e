//! The number of live accounts, kept exact by triggers so `ListAccounts` without a filter
//! reads its total from one row instead of counting the table.
//!
//! `account_counts` holds one row, initialised here from the current rows. On SQLite every
//! writer holds the database's write lock, so row triggers update that row directly.
//!
//! On PostgreSQL a trigger updating that row would lock it from the statement that changes the
//! live set until commit; a transaction that goes on to lock other rows afterwards (a migration
//! batch) could then deadlock with a create that holds one of those rows and waits for the
//! counter. So statement-level triggers (one per statement, with transition tables, so a bulk
//! `INSERT … SELECT` adds one row) append the statement's net change to
//! `account_count_deltas`, which no other transaction locks, and the tenant service folds its
//! transaction's deltas into the counter at commit, just before it takes the change-feed head
//! (see `Store::commit`): every counter lock is then taken last but one, in the same order.
//! The live count is `account_counts.live` plus the committed deltas (normally none: only
//! writers other than the service, such as a bulk load, leave deltas unfolded, one row per
//! statement), read in one statement, hence one snapshot.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn postgres() -> Vec<String> {
    vec![
        "CREATE TABLE account_counts (
            id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            live BIGINT NOT NULL
        )"
        .into(),
        // `txid` is the writing transaction's `txid_current()`, so it can fold its own rows.
        "CREATE TABLE account_count_deltas (
            txid BIGINT NOT NULL,
            delta BIGINT NOT NULL
        )"
        .into(),
        "CREATE INDEX account_count_deltas_txid ON account_count_deltas (txid)".into(),
        // Writers that committed before this lock are in the count below; later ones wait for
        // this transaction, which creates the triggers, to commit.
        "LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE".into(),
        "INSERT INTO account_counts (id, live)
            SELECT 1, COUNT(*) FROM accounts WHERE deleted_at IS NULL"
            .into(),
        // `search_path` is pinned to this schema, so writers on another path still find the
        // deltas table. Transition tables are only planned in the branch that runs.
        r"CREATE FUNCTION accounts_live_count_delta() RETURNS trigger
            LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        DECLARE
            delta BIGINT;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                SELECT COUNT(*) INTO delta FROM new_rows WHERE deleted_at IS NULL;
            ELSIF TG_OP = 'DELETE' THEN
                SELECT -COUNT(*) INTO delta FROM old_rows WHERE deleted_at IS NULL;
            ELSE
                SELECT (SELECT COUNT(*) FROM new_rows WHERE deleted_at IS NULL)
                     - (SELECT COUNT(*) FROM old_rows WHERE deleted_at IS NULL)
                  INTO delta;
            END IF;
            IF delta <> 0 THEN
                INSERT INTO account_count_deltas (txid, delta) VALUES (txid_current(), delta);
            END IF;
            RETURN NULL;
        END
        $$"
        .into(),
        "CREATE TRIGGER accounts_live_count_insert AFTER INSERT ON accounts
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION accounts_live_count_delta()"
            .into(),
        "CREATE TRIGGER accounts_live_count_update AFTER UPDATE ON accounts
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION accounts_live_count_delta()"
            .into(),
        "CREATE TRIGGER accounts_live_count_delete AFTER DELETE ON accounts
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION accounts_live_count_delta()"
            .into(),
        r"CREATE FUNCTION accounts_live_count_truncate() RETURNS trigger
            LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
        BEGIN
            DELETE FROM account_count_deltas;
            UPDATE account_counts SET live = 0 WHERE id = 1;
            RETURN NULL;
        END
        $$"
        .into(),
        "CREATE TRIGGER accounts_live_count_truncate AFTER TRUNCATE ON accounts
            FOR EACH STATEMENT EXECUTE FUNCTION accounts_live_count_truncate()"
            .into(),
    ]
}

fn sqlite() -> Vec<String> {
    vec![
        "CREATE TABLE account_counts (
            id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            live INTEGER NOT NULL
        )"
        .into(),
        // This migration runs in a transaction: the count and the triggers land together.
        "INSERT INTO account_counts (id, live)
            SELECT 1, COUNT(*) FROM accounts WHERE deleted_at IS NULL"
            .into(),
        "CREATE TRIGGER accounts_live_count_insert AFTER INSERT ON accounts
            WHEN NEW.deleted_at IS NULL
            BEGIN UPDATE account_counts SET live = live + 1 WHERE id = 1; END"
            .into(),
        "CREATE TRIGGER accounts_live_count_delete AFTER DELETE ON accounts
            WHEN OLD.deleted_at IS NULL
            BEGIN UPDATE account_counts SET live = live - 1 WHERE id = 1; END"
            .into(),
        "CREATE TRIGGER accounts_live_count_update AFTER UPDATE OF deleted_at ON accounts
            WHEN (OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL)
            BEGIN
                UPDATE account_counts
                    SET live = live + CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE -1 END
                    WHERE id = 1;
            END"
        .into(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Also on SQLite (where the migrator runs without one by default): the initial count
    /// and the triggers must commit together.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = if manager.get_database_backend() == DbBackend::Postgres {
            postgres()
        } else {
            sqlite()
        };
        super::run_all(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements: &[&str] = if manager.get_database_backend() == DbBackend::Postgres {
            &[
                "DROP TRIGGER IF EXISTS accounts_live_count_insert ON accounts",
                "DROP TRIGGER IF EXISTS accounts_live_count_update ON accounts",
                "DROP TRIGGER IF EXISTS accounts_live_count_delete ON accounts",
                "DROP TRIGGER IF EXISTS accounts_live_count_truncate ON accounts",
                "DROP FUNCTION IF EXISTS accounts_live_count_delta()",
                "DROP FUNCTION IF EXISTS accounts_live_count_truncate()",
                "DROP TABLE IF EXISTS account_count_deltas",
                "DROP TABLE IF EXISTS account_counts",
            ]
        } else {
            &[
                "DROP TRIGGER IF EXISTS accounts_live_count_insert",
                "DROP TRIGGER IF EXISTS accounts_live_count_update",
                "DROP TRIGGER IF EXISTS accounts_live_count_delete",
                "DROP TABLE IF EXISTS account_counts",
            ]
        };
        let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
        super::run_all(manager, &statements).await
    }
}
