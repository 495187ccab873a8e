//! `tenantry.tenant.v1.MigrationService`.

use async_trait::async_trait;
use prost::Message;
use tenantry_common::{grpc::principal, idempotency::Fingerprinter};
use tenantry_proto::{
    common::v1::ItemError,
    tenant::v1::{self as pb, migration_service_server::MigrationService},
};
use tonic::{Request, Response, Status, Streaming};

use super::{Handlers, convert, invalid};
use crate::{
    app::ports::Upload,
    domain::{Error, Idempotency, MigrationItem},
};

/// A SubmitMigration stream, decoded message by message as the use-case pulls it. The
/// idempotency key may come on the first message only; the fingerprint covers every message.
struct Stream {
    messages: Streaming<pb::SubmitMigrationRequest>,
    principal: Option<String>,
    /// Items decoded so far: the next item's place in the upload.
    received: u64,
    key: Option<String>,
    print: Fingerprinter,
}

#[async_trait]
impl Upload for Stream {
    type Error = Status;

    async fn next_chunk(&mut self) -> Option<Result<Vec<MigrationItem>, Status>> {
        let mut chunk = match self.messages.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return None,
            Err(status) => return Some(Err(status)),
        };
        match chunk.idempotency_key.take() {
            Some(k) if self.received == 0 && self.key.is_none() => self.key = Some(k),
            Some(_) => {
                return Some(Err(invalid(
                    "idempotency_key",
                    "set it on the first chunk only",
                )));
            }
            None => {}
        }
        // Encoded chunks concatenate to the encoding of one message holding all items, so
        // the fingerprint does not depend on where the stream was cut.
        if self.key.is_some() {
            self.print.update(&chunk.encode_to_vec());
        }
        let items = items(self.received, chunk.items);
        if let Ok(items) = &items {
            self.received += items.len() as u64;
        }
        Some(items)
    }

    fn idempotency(self) -> Result<Option<Idempotency>, Status> {
        let print = self.print;
        self.key
            .map(|k| Idempotency::with_fingerprint(self.principal.as_deref(), k, print.finish()))
            .transpose()
            .map_err(|_| Status::from(Error::key_invalid()))
    }
}

/// The items of one upload message, numbered on from `first` (their place in the upload).
fn items(first: u64, chunk: Vec<pb::MigrationItem>) -> Result<Vec<MigrationItem>, Status> {
    let mut items = Vec::with_capacity(chunk.len());
    for (i, item) in chunk.into_iter().enumerate() {
        let field = format!("items[{}]", first + i as u64);
        items.push(match item.item {
            Some(pb::migration_item::Item::TenantId(id)) => MigrationItem::Bare(id),
            Some(pb::migration_item::Item::Account(account)) => MigrationItem::Full(Box::new(
                convert::new_account(&format!("{field}.account."), account)?,
            )),
            None => return Err(invalid(field, "set either tenant_id or account")),
        });
    }
    Ok(items)
}

#[tonic::async_trait]
impl MigrationService for Handlers {
    async fn submit_migration(
        &self,
        request: Request<Streaming<pb::SubmitMigrationRequest>>,
    ) -> Result<Response<pb::SubmitMigrationResponse>, Status> {
        let upload = Stream {
            principal: principal(&request),
            messages: request.into_inner(),
            received: 0,
            key: None,
            print: Fingerprinter::default(),
        };
        let job = self.app.submit_migration(upload).await?;
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
        let page = r.errors_page.unwrap_or_default();
        let (job, errors) = self
            .app
            .migration_status(&r.migration_id, page.limit, page.offset)
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
