//! Migrations: an upload received chunk by chunk (never held whole), sealed under its
//! idempotency key and handed to the background runner; its status with a page of item errors.

use super::{
    Engine,
    idempotency::idempotent,
    ports::{Storage, Upload},
};
use crate::domain::{
    DEFAULT_ERRORS_LIMIT, Error, Idempotency, ItemError, MAX_ERRORS_LIMIT, MAX_MIGRATION_BYTES,
    MAX_MIGRATION_ITEMS, Migration, Page, Submitted, error::Result, page_limit,
};

/// The longest migration ID (they are UUIDs; this bounds what a caller may send).
const MAX_MIGRATION_ID_LEN: usize = 64;

impl<S: Storage> Engine<S> {
    /// Stores the chunks of `upload` as they come, then seals the job under the upload's
    /// idempotency key and wakes the runner. Nothing is kept of an upload that fails midway,
    /// is refused, or repeats a key whose first upload answers instead.
    pub async fn submit_migration<U: Upload>(&self, upload: U) -> Result<Submitted, U::Error> {
        let migration_id = self.store.begin_migration().await?;
        let (total, key) = match self.receive_items(&migration_id, upload).await {
            Ok(received) => received,
            Err(err) => {
                if let Err(cleanup) = self.store.abandon_migration(&migration_id).await {
                    tracing::warn!(migration_id = %migration_id, error = %cleanup, "cannot discard failed migration upload");
                }
                return Err(err);
            }
        };
        let sealed: Result<Submitted> =
            idempotent(&self.store, key.as_ref(), "submit_migration", |claim| {
                self.store.seal_migration(&migration_id, total, claim)
            })
            .await;
        if sealed
            .as_ref()
            .map_or(true, |s| s.migration_id != migration_id)
        {
            // Refused, or the key's first upload answers: this upload's items are not kept.
            if let Err(cleanup) = self.store.abandon_migration(&migration_id).await {
                tracing::warn!(migration_id = %migration_id, error = %cleanup, "cannot discard unsealed migration upload");
            }
        }
        let job = sealed?;
        if job.migration_id == migration_id {
            tracing::info!(migration_id = %job.migration_id, total_items = total, "migration submitted");
            self.workers.wake_migrations();
        }
        Ok(job)
    }

    /// Stores each chunk as it arrives: at most [`MAX_MIGRATION_ITEMS`] and
    /// [`MAX_MIGRATION_BYTES`], at least one item, none too large to be an account. Returns how many, and the upload's idempotency key.
    async fn receive_items<U: Upload>(
        &self,
        migration_id: &str,
        mut upload: U,
    ) -> Result<(u64, Option<Idempotency>), U::Error> {
        let (mut total, mut bytes) = (0_u64, 0_u64);
        while let Some(items) = upload.next_chunk().await {
            let items = items?;
            for (i, item) in items.iter().enumerate() {
                let field = format!("items[{}]", total + i as u64);
                bytes += item.stored_size(&field)? as u64;
            }
            if bytes > MAX_MIGRATION_BYTES {
                return Err(Error::invalid(
                    "items",
                    format!("a migration holds at most {MAX_MIGRATION_BYTES} bytes of items"),
                )
                .into());
            }
            if total + items.len() as u64 > MAX_MIGRATION_ITEMS {
                return Err(Error::invalid(
                    "items",
                    format!("a migration holds at most {MAX_MIGRATION_ITEMS} items"),
                )
                .into());
            }
            self.store
                .add_migration_items(migration_id, total, &items)
                .await?;
            total += items.len() as u64;
        }
        if total == 0 {
            return Err(Error::invalid("items", "give at least one account to migrate").into());
        }
        Ok((total, upload.idempotency()?))
    }

    /// A job and one page of its item errors.
    pub async fn migration_status(
        &self,
        migration_id: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<(Migration, Page<ItemError>)> {
        if migration_id.is_empty() || migration_id.len() > MAX_MIGRATION_ID_LEN {
            return Err(Error::invalid(
                "migration_id",
                "must be a migration ID returned by SubmitMigration",
            ));
        }
        let limit = page_limit(
            "errors_page.limit",
            limit,
            DEFAULT_ERRORS_LIMIT,
            MAX_ERRORS_LIMIT,
        )?;
        let job = self.store.get_migration(migration_id).await?;
        let errors = self
            .store
            .migration_errors(migration_id, limit, offset)
            .await?;
        Ok((job, errors))
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::{app::testing, domain::MigrationItem};

    /// An upload already in memory, chunk by chunk.
    struct Chunks(std::vec::IntoIter<Result<Vec<MigrationItem>>>);

    impl Chunks {
        fn new(chunks: Vec<Result<Vec<MigrationItem>>>) -> Self {
            Self(chunks.into_iter())
        }
    }

    #[async_trait]
    impl Upload for Chunks {
        type Error = Error;

        async fn next_chunk(&mut self) -> Option<Result<Vec<MigrationItem>>> {
            self.0.next()
        }

        fn idempotency(self) -> Result<Option<Idempotency>> {
            Ok(None)
        }
    }

    fn bare(ids: &[&str]) -> Vec<MigrationItem> {
        ids.iter()
            .map(|id| MigrationItem::Bare((*id).into()))
            .collect()
    }

    #[tokio::test]
    async fn an_upload_is_stored_chunk_by_chunk_and_nothing_stays_of_a_failed_one() {
        let t = testing::engine().await;
        let app = &t.engine;
        let err = app.submit_migration(Chunks::new(vec![])).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "items"),
            "{err:?}"
        );
        let broken = Chunks::new(vec![
            Ok(bare(&["a"])),
            Err(Error::invalid(
                "items[1]",
                "set either tenant_id or account",
            )),
        ]);
        let err = app.submit_migration(broken).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "items[1]"),
            "{err:?}"
        );
        let jobs = |app: &Engine<crate::storage::Store>| {
            let conn = app.store.connection().clone();
            async move {
                use sea_orm::{ConnectionTrait, Statement};
                let sql = "SELECT COUNT(*) AS n FROM migration_jobs";
                let row = conn
                    .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get::<i64>("", "n").unwrap()
            }
        };
        assert_eq!(jobs(app).await, 0, "failed uploads leave no job");
        let chunks = Chunks::new(vec![Ok(bare(&["a"])), Ok(bare(&["b", "c"]))]);
        let job = app.submit_migration(chunks).await.unwrap();
        assert_eq!(job.total_items, 3);
        let (status, errors) = app
            .migration_status(&job.migration_id, None, 0)
            .await
            .unwrap();
        assert_eq!(status.id, job.migration_id);
        assert!(errors.items.is_empty());
        let err = app.migration_status("", None, 0).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "migration_id"),
            "{err:?}"
        );
    }
}
