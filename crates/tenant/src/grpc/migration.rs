//! `tenantry.tenant.v1.MigrationService`.

use tenantry_proto::{
    common::v1::ItemError,
    tenant::v1::{self as pb, migration_service_server::MigrationService},
};
use tonic::{Request, Response, Status, Streaming};

use super::{Handlers, convert, invalid};
use crate::domain::{
    DEFAULT_ERRORS_LIMIT, MAX_ERRORS_LIMIT, MAX_MIGRATION_ITEMS, MigrationItem, page_limit,
};

impl Handlers {
    /// Receives the stream chunk by chunk, storing each as it comes, so a large import is never
    /// held in memory whole. Returns the number of items stored.
    async fn receive_items(
        &self,
        migration_id: &str,
        stream: &mut Streaming<pb::SubmitMigrationRequest>,
    ) -> Result<u64, Status> {
        let mut total: u64 = 0;
        while let Some(chunk) = stream.message().await? {
            let mut items = Vec::with_capacity(chunk.items.len());
            for (i, item) in chunk.items.into_iter().enumerate() {
                let index = total + i as u64;
                let field = format!("items[{index}]");
                let item = match item.item {
                    Some(pb::migration_item::Item::TenantId(id)) => MigrationItem::Bare(id),
                    Some(pb::migration_item::Item::Account(account)) => MigrationItem::Full(
                        Box::new(convert::new_account(&format!("{field}.account."), account)?),
                    ),
                    None => return Err(invalid(field, "set either tenant_id or account")),
                };
                items.push(item);
            }
            if total + items.len() as u64 > MAX_MIGRATION_ITEMS {
                return Err(invalid(
                    "items",
                    format!("a migration holds at most {MAX_MIGRATION_ITEMS} items"),
                ));
            }
            self.store
                .add_migration_items(migration_id, total, &items)
                .await?;
            total += items.len() as u64;
        }
        if total == 0 {
            return Err(invalid("items", "give at least one account to migrate"));
        }
        Ok(total)
    }
}

#[tonic::async_trait]
impl MigrationService for Handlers {
    async fn submit_migration(
        &self,
        request: Request<Streaming<pb::SubmitMigrationRequest>>,
    ) -> Result<Response<pb::SubmitMigrationResponse>, Status> {
        let mut stream = request.into_inner();
        let migration_id = self.store.begin_migration().await?;
        let received = self.receive_items(&migration_id, &mut stream).await;
        let total = match received {
            Ok(total) => total,
            Err(status) => {
                // Nothing is stored when the upload fails midway.
                if let Err(err) = self.store.abandon_migration(&migration_id).await {
                    tracing::warn!(migration_id = %migration_id, error = %err, "cannot discard failed migration upload");
                }
                return Err(status);
            }
        };
        let job = self.store.seal_migration(&migration_id, total).await?;
        tracing::info!(migration_id = %job.id, total_items = total, "migration submitted");
        self.workers.wake_migrations();
        Ok(Response::new(pb::SubmitMigrationResponse {
            migration_id: job.id,
            total_items: total,
        }))
    }

    async fn get_migration_status(
        &self,
        request: Request<pb::GetMigrationStatusRequest>,
    ) -> Result<Response<pb::GetMigrationStatusResponse>, Status> {
        let r = request.into_inner();
        if r.migration_id.is_empty() || r.migration_id.len() > 64 {
            return Err(invalid(
                "migration_id",
                "must be a migration ID returned by SubmitMigration",
            ));
        }
        let page = r.errors_page.unwrap_or_default();
        let limit = page_limit(
            "errors_page.limit",
            page.limit,
            DEFAULT_ERRORS_LIMIT,
            MAX_ERRORS_LIMIT,
        )?;
        let job = self.store.get_migration(&r.migration_id).await?;
        let errors = self
            .store
            .migration_errors(&r.migration_id, limit, page.offset)
            .await?;
        Ok(Response::new(pb::GetMigrationStatusResponse {
            migration: Some(convert::migration(&job)),
            errors: errors
                .items
                .iter()
                .map(|e| ItemError {
                    index: u32::try_from(e.index).unwrap_or(u32::MAX),
                    id: e.tenant_id.clone(),
                    field: e.field.clone(),
                    reason: e.reason.clone(),
                    message: e.message.clone(),
                })
                .collect(),
            errors_page: Some(convert::page_info(&errors)),
        }))
    }
}
