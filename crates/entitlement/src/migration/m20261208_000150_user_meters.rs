//! Per-user meters: a meter is keyed by (account, feature, user), the user `''` being the
//! account's own meter, in `ent_meter` and in the tables keyed by a meter (closed periods,
//! thresholds sent, UNIQUE_COUNT values). Existing rows become the accounts' meters (user
//! `''`). A usage event keeps whose user meter it drew on (`drawn_user`, null: the account's).
//! SQLite cannot change a primary key in place: its tables are copied into new ones.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A table keyed by a meter: its name, its columns after `tenant_id, feature_id` as created
/// (SQLite types), and its key after `tenant_id, feature_id`.
struct Keyed {
    table: &'static str,
    columns: &'static str,
    names: &'static str,
    key_rest: &'static str,
}

const KEYED: [Keyed; 4] = [
    Keyed {
        table: "ent_meter",
        columns: "state TEXT NOT NULL, updated_at TEXT NOT NULL",
        names: "state, updated_at",
        key_rest: "",
    },
    Keyed {
        table: "ent_meter_period",
        columns: "period_start TEXT NOT NULL, period_end TEXT NOT NULL, manual BOOLEAN NOT NULL, \
                  summary TEXT NOT NULL, closed_at TEXT NOT NULL",
        names: "period_start, period_end, manual, summary, closed_at",
        key_rest: ", period_start",
    },
    Keyed {
        table: "ent_usage_threshold",
        columns: "period_start TEXT NOT NULL, threshold INTEGER NOT NULL, fired_at TEXT NOT NULL",
        names: "period_start, threshold, fired_at",
        key_rest: ", period_start, threshold",
    },
    Keyed {
        table: "ent_usage_unique",
        columns: "period_start TEXT NOT NULL, value VARCHAR(255) NOT NULL",
        names: "period_start, value",
        key_rest: ", period_start, value",
    },
];

fn statements(backend: DbBackend) -> Vec<String> {
    let mut out = Vec::new();
    for k in KEYED {
        let Keyed {
            table,
            columns,
            names,
            key_rest,
        } = k;
        // The user goes last in the key: an account's meter and its users' sort together,
        // the account's first (`''`), as writers lock them.
        let key = format!("tenant_id, feature_id, user_id{key_rest}");
        if backend == DbBackend::Postgres {
            out.push(format!(
                "ALTER TABLE {table} ADD COLUMN user_id VARCHAR(255) NOT NULL DEFAULT ''"
            ));
            out.push(format!("ALTER TABLE {table} DROP CONSTRAINT {table}_pkey"));
            out.push(format!("ALTER TABLE {table} ADD PRIMARY KEY ({key})"));
        } else {
            out.push(format!(
                "CREATE TABLE {table}_next (
                    tenant_id VARCHAR(255) NOT NULL,
                    feature_id BLOB NOT NULL,
                    user_id VARCHAR(255) NOT NULL DEFAULT '',
                    {columns},
                    PRIMARY KEY ({key})
                )"
            ));
            out.push(format!(
                "INSERT INTO {table}_next (tenant_id, feature_id, user_id, {names}) \
                 SELECT tenant_id, feature_id, '', {names} FROM {table}"
            ));
            out.push(format!("DROP TABLE {table}"));
            out.push(format!("ALTER TABLE {table}_next RENAME TO {table}"));
        }
    }
    out.push("ALTER TABLE ent_usage_event ADD COLUMN drawn_user VARCHAR(255)".into());
    out
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on every backend: on SQLite the rebuilds then run on one connection
    /// (another pooled connection, its schema not yet reloaded, can still see a dropped table
    /// when the new one is renamed to its name) — as the idempotency-scope migration found.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        for statement in statements(manager.get_database_backend()) {
            conn.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Users' meters have no place in the old key: they go, the accounts' stay.
        let conn = manager.get_connection();
        let pg = manager.get_database_backend() == DbBackend::Postgres;
        conn.execute_unprepared("ALTER TABLE ent_usage_event DROP COLUMN drawn_user")
            .await?;
        for k in KEYED {
            let Keyed {
                table,
                columns,
                names,
                key_rest,
            } = k;
            let key = format!("tenant_id, feature_id{key_rest}");
            let statements = if pg {
                vec![
                    format!("DELETE FROM {table} WHERE user_id <> ''"),
                    format!("ALTER TABLE {table} DROP CONSTRAINT {table}_pkey"),
                    format!("ALTER TABLE {table} DROP COLUMN user_id"),
                    format!("ALTER TABLE {table} ADD PRIMARY KEY ({key})"),
                ]
            } else {
                vec![
                    format!(
                        "CREATE TABLE {table}_prev (tenant_id VARCHAR(255) NOT NULL, \
                         feature_id BLOB NOT NULL, {columns}, PRIMARY KEY ({key}))"
                    ),
                    format!(
                        "INSERT INTO {table}_prev (tenant_id, feature_id, {names}) \
                         SELECT tenant_id, feature_id, {names} FROM {table} WHERE user_id = ''"
                    ),
                    format!("DROP TABLE {table}"),
                    format!("ALTER TABLE {table}_prev RENAME TO {table}"),
                ]
            };
            for statement in statements {
                conn.execute_unprepared(&statement).await?;
            }
        }
        Ok(())
    }
}
