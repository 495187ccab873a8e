//! Account search by metadata (`ListAccounts.metadata`: exact `key = value` string pairs).
//!
//! PostgreSQL: a GIN index (`jsonb_path_ops`, which serves `@>` only, and is the smaller) on
//! the live accounts' metadata as `jsonb`, so a search reads the index instead of parsing every
//! account's metadata. The column stays TEXT; the index is on `account_metadata_jsonb(metadata)`
//! rather than `metadata::jsonb` because TEXT metadata may hold `\u0000`, which `jsonb` refuses:
//! a bare cast would make such an account's writes fail on the index. The function drops the
//! NULs instead (a search never looks for one: its pairs hold no control characters).
//!
//! SQLite has no index that serves a JSON condition; its search reads `json_each` per account.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        super::run_all(
            manager,
            &[
                // IMMUTABLE: the same text always gives the same jsonb, which an index needs.
                "CREATE FUNCTION account_metadata_jsonb(metadata TEXT) RETURNS JSONB
                LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
                BEGIN
                    RETURN metadata::jsonb;
                EXCEPTION WHEN untranslatable_character OR invalid_text_representation THEN
                    BEGIN
                        RETURN replace(metadata, '\\u0000', '')::jsonb;
                    EXCEPTION WHEN untranslatable_character OR invalid_text_representation THEN
                        RETURN NULL;
                    END;
                END
                $$"
                .into(),
                "CREATE INDEX accounts_live_metadata ON accounts
                USING GIN (account_metadata_jsonb(metadata) jsonb_path_ops)
                WHERE deleted_at IS NULL"
                    .into(),
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        super::run_all(
            manager,
            &[
                "DROP INDEX IF EXISTS accounts_live_metadata".into(),
                "DROP FUNCTION IF EXISTS account_metadata_jsonb(TEXT)".into(),
            ],
        )
        .await
    }
}
