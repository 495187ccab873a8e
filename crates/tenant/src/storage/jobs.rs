//! Bulk-import (migration) jobs: stored items, processed in batches, resumable and idempotent.
//!
//! Each batch is one short transaction that locks the job row, applies up to N pending items
//! (each in a savepoint, so one bad item cannot spoil the batch), marks them done, records their
//! errors, bumps the counters and appends the change events. A restart resumes at the first
//! pending item; nothing is applied twice because an item's effect and its `done` mark commit
//! together. Items whose parent is a later item of the same job are deferred and retried in
//! another pass while passes make progress.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait, sea_query::Expr,
};

use super::{
    Result, Store,
    accounts::{load_live, load_row},
    convert::account_from_row,
    db_err,
    entities::{migration_errors, migration_items, migration_jobs},
    signed, unsigned,
};
use crate::app::ports::MigrationStore;
use crate::domain::{
    self, Claim, DeletedIds, Error, ItemError, ItemOutcome, Migration, MigrationItem,
    MigrationState, NewAccount, NewChange, Page, Submitted, audit, error::ALIAS_TAKEN,
};

/// What a batch left to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchProgress {
    More,
    Finished,
}

/// Most rows per multi-row insert (well under both drivers' bind-parameter limits).
const INSERT_CHUNK: usize = 500;

fn job_from_row(row: migration_jobs::Model) -> Result<Migration> {
    let state = MigrationState::parse(&row.state).ok_or_else(|| Error::NotFound {
        reason: "MIGRATION_NOT_FOUND",
        message: format!("migration `{}` does not exist", row.migration_id),
    })?;
    Ok(Migration {
        id: row.migration_id,
        state,
        total_items: unsigned(row.total_items),
        processed_items: unsigned(row.processed_items),
        created_items: unsigned(row.created_items),
        skipped_items: unsigned(row.skipped_items),
        failed_items: unsigned(row.failed_items),
        failure_message: row.failure_message,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
    })
}

fn failed(field: &str, reason: &str, message: impl Into<String>) -> ItemOutcome {
    ItemOutcome::Failed {
        field: field.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
    }
}

/// An item-level refusal from the shared create path, as an item outcome. Outages and
/// internal errors are not the item's fault and stop the batch instead.
fn outcome_of(err: Error) -> Result<ItemOutcome> {
    match err {
        Error::InvalidArgument { field, message } => Ok(failed(&field, "INVALID_ITEM", message)),
        Error::AlreadyExists { reason, message } => {
            let field = match reason {
                ALIAS_TAKEN => "alias",
                _ => "tenant_id",
            };
            Ok(failed(field, reason, message))
        }
        Error::NotFound { reason, message } | Error::FailedPrecondition { reason, message } => {
            Ok(failed("parent_tenant_id", reason, message))
        }
        Error::PermissionDenied(message) => Ok(failed("", "PERMISSION_DENIED", message)),
        err @ (Error::Unavailable(_)
        | Error::StorageFull(_)
        | Error::StorageFailed(_)
        | Error::Internal { .. }) => Err(err),
    }
}

impl Store {
    /// Removes uploads a crashed process never finished.
    pub async fn sweep_abandoned_uploads(&self, started_before: DateTime<Utc>) -> Result<u64> {
        let _turn = self.write_turn().await;
        let done = migration_jobs::Entity::delete_many()
            .filter(migration_jobs::Column::State.eq("receiving"))
            .filter(migration_jobs::Column::CreatedAt.lt(started_before))
            .exec(self.connection())
            .await
            .map_err(db_err("sweep abandoned uploads"))?;
        Ok(done.rows_affected)
    }

    /// The oldest job with work left.
    pub async fn next_runnable_migration(&self) -> Result<Option<String>> {
        let row = migration_jobs::Entity::find()
            .filter(migration_jobs::Column::State.is_in(["pending", "running"]))
            .order_by_asc(migration_jobs::Column::CreatedAt)
            .one(self.connection())
            .await
            .map_err(db_err("find runnable migration"))?;
        Ok(row.map(|r| r.migration_id))
    }

    /// Marks a job failed on an error it cannot get past, with its `migration_finished`
    /// event. A job that already ended is left as it is (and announced no second time).
    pub async fn fail_migration(&self, migration_id: &str, message: &str) -> Result<()> {
        let (_turn, txn) = self.begin_write().await?;
        let failed = migration_jobs::Entity::update_many()
            .col_expr(migration_jobs::Column::State, Expr::value("failed"))
            .col_expr(migration_jobs::Column::FailureMessage, Expr::value(message))
            .col_expr(
                migration_jobs::Column::FinishedAt,
                Expr::value(domain::now()),
            )
            .filter(migration_jobs::Column::MigrationId.eq(migration_id))
            .filter(migration_jobs::Column::State.is_in(["pending", "running"]))
            .exec(&txn)
            .await
            .map_err(db_err("fail migration job"))?;
        if failed.rows_affected == 0 {
            txn.rollback().await.map_err(db_err("rollback"))?;
            return Ok(());
        }
        let job = migration_jobs::Entity::find_by_id(migration_id.to_owned())
            .one(&txn)
            .await
            .map_err(db_err("load migration job"))?
            .ok_or_else(|| Error::internal("fail migration job", "the job row vanished"))?;
        self.commit_ending(txn, Vec::new(), Vec::new(), Some(job_from_row(job)?))
            .await
    }

    /// Processes up to `batch` items of a job in one transaction.
    pub async fn run_migration_batch(
        &self,
        migration_id: &str,
        batch: u64,
    ) -> Result<BatchProgress> {
        let (_turn, txn) = self.begin_write().await?;
        // The job row lock serializes batches of the same job across replicas.
        let Some(job) = migration_jobs::Entity::find_by_id(migration_id.to_owned())
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(db_err("lock migration job"))?
        else {
            return Ok(BatchProgress::Finished);
        };
        let now = domain::now();
        let mut job_update: migration_jobs::ActiveModel = job.clone().into();
        match job.state.as_str() {
            "pending" => {
                job_update.state = Set("running".into());
                job_update.started_at = Set(Some(now));
            }
            "running" => {}
            _ => return Ok(BatchProgress::Finished),
        }
        self.lock_hierarchy(&txn).await?;

        let items = migration_items::Entity::find()
            .filter(migration_items::Column::MigrationId.eq(migration_id))
            .filter(migration_items::Column::State.eq("pending"))
            .order_by_asc(migration_items::Column::ItemIndex)
            .limit(batch)
            .all(&txn)
            .await
            .map_err(db_err("load migration items"))?;

        let mut counts = Counts::from(&job);
        let mut changes = Vec::new();
        let mut errors = Vec::new();
        let mut progress = BatchProgress::More;

        if items.is_empty() {
            let deferred = migration_items::Entity::find()
                .filter(migration_items::Column::MigrationId.eq(migration_id))
                .filter(migration_items::Column::State.eq("deferred"))
                .order_by_asc(migration_items::Column::ItemIndex)
                .limit(batch)
                .all(&txn)
                .await
                .map_err(db_err("load deferred migration items"))?;
            if deferred.is_empty() {
                job_update.state = Set("completed".into());
                job_update.finished_at = Set(Some(now));
                migration_items::Entity::delete_many()
                    .filter(migration_items::Column::MigrationId.eq(migration_id))
                    .exec(&txn)
                    .await
                    .map_err(db_err("clear migration items"))?;
                progress = BatchProgress::Finished;
            } else if job.processed_items > job.pass_marker {
                // The last pass applied something: parents may exist now, try the rest again.
                migration_items::Entity::update_many()
                    .col_expr(migration_items::Column::State, Expr::value("pending"))
                    .filter(migration_items::Column::MigrationId.eq(migration_id))
                    .filter(migration_items::Column::State.eq("deferred"))
                    .exec(&txn)
                    .await
                    .map_err(db_err("retry deferred migration items"))?;
                job_update.pass_marker = Set(job.processed_items);
            } else {
                // A pass without progress: these parents will never appear.
                for item in deferred {
                    let parent = serde_json::from_str::<MigrationItem>(&item.payload)
                        .ok()
                        .and_then(|i| match i {
                            MigrationItem::Full(a) => a.parent_tenant_id,
                            MigrationItem::Bare(_) => None,
                        })
                        .unwrap_or_default();
                    let outcome = failed(
                        "parent_tenant_id",
                        "PARENT_NOT_FOUND",
                        format!(
                            "parent account `{parent}` was never created: it is missing, its own item failed, or the items form a cycle"
                        ),
                    );
                    counts.record(&outcome);
                    errors.push((
                        item.item_index,
                        item.tenant_id.clone().unwrap_or_default(),
                        outcome,
                    ));
                    mark_item(&txn, migration_id, item.item_index, "done").await?;
                }
            }
        }

        for item in items {
            let tenant_id = item.tenant_id.clone().unwrap_or_default();
            let outcome = match serde_json::from_str::<MigrationItem>(&item.payload) {
                Err(e) => failed(
                    "",
                    "INVALID_ITEM",
                    format!("stored item cannot be decoded: {e}"),
                ),
                Ok(parsed) => {
                    let savepoint = txn.begin().await.map_err(db_err("savepoint"))?;
                    match self
                        .apply_item(&savepoint, migration_id, item.item_index, parsed)
                        .await
                    {
                        Ok((outcome, item_changes)) => {
                            savepoint
                                .commit()
                                .await
                                .map_err(db_err("release savepoint"))?;
                            changes.extend(item_changes);
                            outcome
                        }
                        Err(err) => {
                            savepoint
                                .rollback()
                                .await
                                .map_err(db_err("rollback savepoint"))?;
                            outcome_of(err)?
                        }
                    }
                }
            };
            let state = if outcome == ItemOutcome::Deferred {
                "deferred"
            } else {
                "done"
            };
            counts.record(&outcome);
            if matches!(outcome, ItemOutcome::Failed { .. }) {
                errors.push((item.item_index, tenant_id, outcome));
            }
            mark_item(&txn, migration_id, item.item_index, state).await?;
        }

        if !errors.is_empty() {
            let rows: Vec<_> = errors
                .into_iter()
                .filter_map(|(index, tenant_id, outcome)| match outcome {
                    ItemOutcome::Failed {
                        field,
                        reason,
                        message,
                    } => Some(migration_errors::ActiveModel {
                        migration_id: Set(migration_id.to_owned()),
                        item_index: Set(index),
                        tenant_id: Set(tenant_id),
                        field: Set(field),
                        reason: Set(reason),
                        message: Set(message),
                    }),
                    ItemOutcome::Created | ItemOutcome::Skipped | ItemOutcome::Deferred => None,
                })
                .collect();
            for chunk in rows.chunks(INSERT_CHUNK) {
                migration_errors::Entity::insert_many(chunk.to_vec())
                    .exec_without_returning(&txn)
                    .await
                    .map_err(db_err("insert migration errors"))?;
            }
        }
        counts.write(&mut job_update);
        let job = migration_jobs::Entity::update(job_update)
            .exec(&txn)
            .await
            .map_err(db_err("update migration job"))?;
        // Only the batch that completes the job announces it: later batches find it completed
        // under the row lock and return above, so the event is recorded once, with the state.
        let finished = match progress {
            BatchProgress::Finished => Some(job_from_row(job)?),
            BatchProgress::More => None,
        };
        // The job's accounts are recorded by the request that submitted it (`migration.submit`).
        self.commit_ending(txn, changes, Vec::new(), finished)
            .await?;
        Ok(progress)
    }

    async fn apply_item(
        &self,
        txn: &DatabaseTransaction,
        migration_id: &str,
        index: i64,
        item: MigrationItem,
    ) -> Result<(ItemOutcome, Vec<NewChange>)> {
        let (new, bare) = match item {
            MigrationItem::Bare(id) => (
                NewAccount {
                    tenant_id: Some(id.clone()),
                    name: id,
                    ..NewAccount::default()
                },
                true,
            ),
            MigrationItem::Full(account) => (*account, false),
        };
        let new = match new.validated("", true) {
            Ok(new) => new,
            Err(err) => return Ok((outcome_of(err)?, vec![])),
        };
        let Some(tenant_id) = new.tenant_id.clone() else {
            return Ok((failed("tenant_id", "INVALID_ITEM", "is required"), vec![]));
        };
        if let Some(row) = load_row(txn, &tenant_id, true).await?
            && row.deleted_at.is_none()
        {
            if bare {
                return Ok((ItemOutcome::Skipped, vec![]));
            }
            let existing = account_from_row(row)?;
            let diff = existing.differences(&new);
            return Ok(match diff.first() {
                None => (ItemOutcome::Skipped, vec![]),
                Some(first) => (
                    failed(
                        first,
                        "ACCOUNT_DIFFERS",
                        format!(
                            "account `{tenant_id}` already exists with different values for: {}",
                            diff.join(", ")
                        ),
                    ),
                    vec![],
                ),
            });
        }
        if let Some(parent) = &new.parent_tenant_id {
            if *parent == tenant_id {
                return Ok((
                    failed(
                        "parent_tenant_id",
                        tenantry_common::error::SELF_PARENT,
                        format!("account `{tenant_id}` cannot be its own parent"),
                    ),
                    vec![],
                ));
            }
            if load_live(txn, parent, false).await.is_err() {
                let parent_pending = migration_items::Entity::find()
                    .filter(migration_items::Column::MigrationId.eq(migration_id))
                    .filter(migration_items::Column::TenantId.eq(parent.as_str()))
                    .filter(migration_items::Column::State.ne("done"))
                    .filter(migration_items::Column::ItemIndex.ne(index))
                    .count(txn)
                    .await
                    .map_err(db_err("look up parent item"))?;
                if parent_pending > 0 {
                    return Ok((ItemOutcome::Deferred, vec![]));
                }
            }
        }
        match self.create_in(txn, &new, DeletedIds::Reactivate).await {
            Ok((_, changes)) => Ok((ItemOutcome::Created, changes)),
            Err(err) => Ok((outcome_of(err)?, vec![])),
        }
    }
}

#[async_trait]
impl MigrationStore for Store {
    /// Starts receiving a job's items; it stays invisible until [`Store::seal_migration`].
    async fn begin_migration(&self) -> Result<String> {
        let id = uuid::Uuid::now_v7().to_string();
        let _turn = self.write_turn().await;
        migration_jobs::Entity::insert(migration_jobs::ActiveModel {
            migration_id: Set(id.clone()),
            state: Set("receiving".into()),
            total_items: Set(0),
            processed_items: Set(0),
            created_items: Set(0),
            skipped_items: Set(0),
            failed_items: Set(0),
            pass_marker: Set(0),
            failure_message: Set(None),
            created_at: Set(domain::now()),
            started_at: Set(None),
            finished_at: Set(None),
        })
        .exec_without_returning(self.connection())
        .await
        .map_err(db_err("insert migration job"))?;
        Ok(id)
    }

    /// Stores one received chunk of items, numbered from `first_index`.
    async fn add_migration_items(
        &self,
        migration_id: &str,
        first_index: u64,
        items: &[MigrationItem],
    ) -> Result<()> {
        let (_turn, txn) = self.begin_write().await?;
        for (chunk_no, chunk) in items.chunks(INSERT_CHUNK).enumerate() {
            let mut rows = Vec::with_capacity(chunk.len());
            for (i, item) in chunk.iter().enumerate() {
                let index = first_index + (chunk_no * INSERT_CHUNK + i) as u64;
                rows.push(migration_items::ActiveModel {
                    migration_id: Set(migration_id.to_owned()),
                    item_index: Set(signed(index)),
                    tenant_id: Set(item.tenant_id().map(str::to_owned)),
                    state: Set("pending".into()),
                    payload: Set(serde_json::to_string(item)
                        .map_err(|e| Error::internal("encode migration item", e))?),
                });
            }
            migration_items::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await
                .map_err(db_err("insert migration items"))?;
        }
        txn.commit().await.map_err(db_err("commit migration items"))
    }

    /// Makes a fully received job visible and runnable; a `claim` is stored with it.
    async fn seal_migration(
        &self,
        migration_id: &str,
        total: u64,
        claim: Option<Claim<'_>>,
    ) -> Result<Submitted> {
        let (_turn, txn) = self.begin_write().await?;
        self.claim_key(&txn, claim).await?;
        let sealed = migration_jobs::Entity::update_many()
            .col_expr(migration_jobs::Column::State, Expr::value("pending"))
            .col_expr(
                migration_jobs::Column::TotalItems,
                Expr::value(signed(total)),
            )
            .filter(migration_jobs::Column::MigrationId.eq(migration_id))
            .filter(migration_jobs::Column::State.eq("receiving"))
            .exec(&txn)
            .await
            .map_err(db_err("seal migration job"))?;
        if sealed.rows_affected == 0 {
            return Err(Error::NotFound {
                reason: "MIGRATION_NOT_FOUND",
                message: format!("migration `{migration_id}` is not being received"),
            });
        }
        let submitted = Submitted {
            migration_id: migration_id.to_owned(),
            total_items: total,
        };
        self.answer_key(&txn, claim, &submitted).await?;
        self.record_audit(&txn, vec![audit::migration(migration_id, total)])
            .await?;
        txn.commit().await.map_err(db_err("commit migration job"))?;
        Ok(submitted)
    }

    /// Forgets a job whose upload failed midway (its items go with it).
    async fn abandon_migration(&self, migration_id: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        migration_jobs::Entity::delete_many()
            .filter(migration_jobs::Column::MigrationId.eq(migration_id))
            .filter(migration_jobs::Column::State.eq("receiving"))
            .exec(self.connection())
            .await
            .map_err(db_err("abandon migration job"))?;
        Ok(())
    }

    async fn get_migration(&self, migration_id: &str) -> Result<Migration> {
        let row = migration_jobs::Entity::find_by_id(migration_id.to_owned())
            .one(self.connection())
            .await
            .map_err(db_err("load migration job"))?;
        match row {
            // A job still being uploaded does not exist yet for its callers.
            Some(row) if row.state != "receiving" => job_from_row(row),
            Some(_) | None => Err(Error::NotFound {
                reason: "MIGRATION_NOT_FOUND",
                message: format!("migration `{migration_id}` does not exist"),
            }),
        }
    }

    async fn migration_errors(
        &self,
        migration_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Page<ItemError>> {
        let select = migration_errors::Entity::find()
            .filter(migration_errors::Column::MigrationId.eq(migration_id));
        let total = select
            .clone()
            .count(self.connection())
            .await
            .map_err(db_err("count migration errors"))?;
        let rows = select
            .order_by_asc(migration_errors::Column::ItemIndex)
            .limit(u64::from(limit))
            .offset(u64::from(offset))
            .all(self.connection())
            .await
            .map_err(db_err("list migration errors"))?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| ItemError {
                    index: unsigned(r.item_index),
                    tenant_id: r.tenant_id,
                    field: r.field,
                    reason: r.reason,
                    message: r.message,
                })
                .collect(),
            total,
            limit,
            offset,
        })
    }
}

async fn mark_item(
    txn: &DatabaseTransaction,
    migration_id: &str,
    index: i64,
    state: &str,
) -> Result<()> {
    migration_items::Entity::update_many()
        .col_expr(migration_items::Column::State, Expr::value(state))
        .filter(migration_items::Column::MigrationId.eq(migration_id))
        .filter(migration_items::Column::ItemIndex.eq(index))
        .exec(txn)
        .await
        .map_err(db_err("mark migration item"))?;
    Ok(())
}

/// A job's counters while a batch runs.
struct Counts {
    processed: i64,
    created: i64,
    skipped: i64,
    failed: i64,
}

impl Counts {
    fn from(job: &migration_jobs::Model) -> Self {
        Self {
            processed: job.processed_items,
            created: job.created_items,
            skipped: job.skipped_items,
            failed: job.failed_items,
        }
    }

    fn record(&mut self, outcome: &ItemOutcome) {
        match outcome {
            ItemOutcome::Created => self.created += 1,
            ItemOutcome::Skipped => self.skipped += 1,
            ItemOutcome::Failed { .. } => self.failed += 1,
            ItemOutcome::Deferred => return,
        }
        self.processed += 1;
    }

    fn write(&self, job: &mut migration_jobs::ActiveModel) {
        job.processed_items = Set(self.processed);
        job.created_items = Set(self.created);
        job.skipped_items = Set(self.skipped);
        job.failed_items = Set(self.failed);
    }
}
