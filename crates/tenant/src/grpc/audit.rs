//! `tenantry.audit.v1.AuditService` over the tenant service's audit log.

use std::pin::Pin;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tenantry_common::audit::{AuditRecord, RawExport, RawQuery};
use tenantry_proto::audit::v1::{self as pb, audit_service_server::AuditService};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{Handlers, convert::timestamp};
use crate::domain::Error;

/// A protobuf time as the domain's, or INVALID_ARGUMENT naming `field`.
fn time(field: &'static str, value: Option<Timestamp>) -> Result<Option<DateTime<Utc>>, Error> {
    value
        .map(|t| {
            u32::try_from(t.nanos)
                .ok()
                .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
                .ok_or_else(|| Error::invalid(field, "is not a valid time"))
        })
        .transpose()
}

fn event(r: AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        sequence: r.sequence,
        time: Some(timestamp(r.time)),
        actor: r.actor,
        action: r.action,
        resource_type: r.resource_type,
        resource_id: r.resource_id,
        account_id: r.account_id,
        before_json: r.before.to_string(),
        after_json: r.after.to_string(),
        request_id: r.request_id,
        trace_id: r.trace_id,
    }
}

type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportAuditEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for Handlers {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let r = request.into_inner();
        let raw = RawQuery {
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            actor: r.actor,
            action: r.action,
            from: time("from", r.from)?,
            to: time("to", r.to)?,
            limit: r.limit,
            page_token: r.page_token,
        };
        let page = self.app.audit_events(raw).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.records.into_iter().map(event).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type ExportAuditEventsStream = ExportStream;

    async fn export_audit_events(
        &self,
        request: Request<pb::ExportAuditEventsRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let r = request.into_inner();
        let export = self.app.audit_export(RawExport {
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            actor: r.actor,
            action: r.action,
            from: time("from", r.from)?,
            to: time("to", r.to)?,
            after_sequence: r.after_sequence,
        })?;
        let app = self.app.clone();
        let shutdown = self.shutdown.clone();
        // One chunk in flight: a slow reader holds the export, never the database.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut after = export.after_sequence;
            loop {
                let chunk = tokio::select! {
                    () = shutdown.cancelled() => return,
                    chunk = app.export_audit_chunk(&export, after) => chunk,
                };
                let message = match chunk {
                    Ok(records) if records.is_empty() => return,
                    Ok(records) => {
                        after = records.last().map_or(after, |r| r.sequence);
                        Ok(pb::ExportAuditEventsResponse {
                            events: records.into_iter().map(event).collect(),
                        })
                    }
                    Err(err) => Err(Status::from(err)),
                };
                let failed = message.is_err();
                if tx.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
