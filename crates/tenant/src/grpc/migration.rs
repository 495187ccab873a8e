//! `tenantry.tenant.v1.MigrationService`.

use tenantry_proto::{
    common::v1::ItemError,
    tenant::v1::{self as pb, migration_service_server::MigrationService},
};
use tonic::{Request, Response, Status, Streaming};

use prost::Message;
use tenantry_common::{grpc::principal, idempotency::Fingerprinter};

use super::{Handlers, convert, invalid};
use crate::app::idempotency::idempotent;
use crate::domain::{
    DEFAULT_ERRORS_LIMIT, Error, Idempotency, MAX_ERRORS_LIMIT, MAX_MIGRATION_ITEMS, MigrationItem,
    Submitted, page_limit,
};

impl Handlers {
    /// Receives the stream chunk by chunk, storing each as it comes, so a large import is never
    /// held in memory whole. Returns the number of items stored and the idempotency key (on
    /// the first chunk only) with the fingerprint of the whole stream.
    async fn receive_items(
        &self,
        migration_id: &str,
        stream: &mut Streaming<pb::SubmitMigrationRequest>,
        principal: Option<&str>,
    ) -> Result<(u64, Option<Idempotency>), Status> {
        let mut total: u64 = 0;
        let mut key = None;
        let mut print = Fingerprinter::default();
        while let Some(mut chunk) = stream.message().await? {
            match chunk.idempotency_key.take() {
                Some(k) if total == 0 && key.is_none() => key = Some(k),
                Some(_) => {
                    return Err(invalid("idempotency_key", "set it on the first chunk only"));
                }
                None => {}
            }
            // Encoded chunks concatenate to the encoding of one message holding all items, so
            // the fingerprint does not depend on where the stream was cut.
            if key.is_some() {
                print.update(&chunk.encode_to_vec());
            }
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
        let key = key
            .map(|k| Idempotency::with_fingerprint(principal, k, print.finish()))
            .transpose()
            .map_err(|_| Status::from(Error::key_invalid()))?;
        Ok((total, key))
    }
}

#[tonic::async_trait]
impl MigrationService for Handlers {
    async fn submit_migration(
        &self,
        request: Request<Streaming<pb::SubmitMigrationRequest>>,
    ) -> Result<Response<pb::SubmitMigrationResponse>, Status> {
        let principal = principal(&request);
        let mut stream = request.into_inner();
        let migration_id = self.store.begin_migration().await?;
        let received = self
            .receive_items(&migration_id, &mut stream, principal.as_deref())
            .await;
        let (total, key) = match received {
            Ok(received) => received,
            Err(status) => {
                // Nothing is stored when the upload fails midway.
                if let Err(err) = self.store.abandon_migration(&migration_id).await {
                    tracing::warn!(migration_id = %migration_id, error = %err, "cannot discard failed migration upload");
                }
                return Err(status);
            }
        };
        let sealed: Result<Submitted, Error> =
            idempotent(&self.store, key.as_ref(), "submit_migration", |claim| {
                self.store.seal_migration(&migration_id, total, claim)
            })
            .await;
        if sealed
            .as_ref()
            .map_or(true, |s| s.migration_id != migration_id)
        {
            // Refused, or the key's first upload answers: this upload's items are not kept.
            if let Err(err) = self.store.abandon_migration(&migration_id).await {
                tracing::warn!(migration_id = %migration_id, error = %err, "cannot discard unsealed migration upload");
            }
        }
        let job = sealed?;
        if job.migration_id == migration_id {
            tracing::info!(migration_id = %job.migration_id, total_items = total, "migration submitted");
            self.workers.wake_migrations();
        }
        Ok(Response::new(pb::SubmitMigrationResponse {
            migration_id: job.migration_id,
            total_items: job.total_items,
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
