//! Outbox retention: `change_feed_retention` remembers the highest sequence pruned, so the feed
//! can tell a follower whose cursor is older than what is kept (it must resynchronise) from one
//! that merely has nothing new. Separate from `change_feed_head`, whose row lock orders writers:
//! pruning never waits for them, nor they for it.
//!
//! Events recorded before events left out the large account fields lose them here (the logo
//! and the metadata, which no follower used), so an upgraded outbox no longer holds a megabyte
//! per logo update. Reading strips them too, so nothing depends on this rewrite.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Payloads shorter than this cannot hold a field worth rewriting.
const REWRITE_ABOVE_BYTES: u32 = 4_096;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let big = if manager.get_database_backend() == DbBackend::Postgres {
            "BIGINT"
        } else {
            "INTEGER"
        };
        let trim = if manager.get_database_backend() == DbBackend::Postgres {
            format!(
                "UPDATE change_events SET payload = jsonb_set(
                    payload::jsonb #- '{{account,settings,logo}}', '{{account,metadata}}', '{{}}'
                 )::text
                 WHERE length(payload) > {REWRITE_ABOVE_BYTES}"
            )
        } else {
            format!(
                "UPDATE change_events SET payload = json_set(
                    json_remove(payload, '$.account.settings.logo'), '$.account.metadata', json('{{}}')
                 )
                 WHERE length(payload) > {REWRITE_ABOVE_BYTES}"
            )
        };
        super::run_all(
            manager,
            &[
                format!(
                    "CREATE TABLE change_feed_retention (
                        id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
                        pruned_through {big} NOT NULL
                    )"
                ),
                "INSERT INTO change_feed_retention (id, pruned_through) VALUES (1, 0)".into(),
                trim,
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::run_all(
            manager,
            &["DROP TABLE IF EXISTS change_feed_retention".into()],
        )
        .await
    }
}
