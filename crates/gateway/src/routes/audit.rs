//! The audit log, tag "Audit": both services' entries as one list, newest first (environment
//! token only). Each service pages its own log; the gateway merges the two pages by time and
//! keeps where it stopped in each in an opaque cursor. The export streams both services'
//! exports merged oldest first as NDJSON, each line with the cursor to continue after it.

use std::collections::VecDeque;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::State,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use futures::{StreamExt as _, stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::audit::v1::{self as pb, audit_service_client::AuditServiceClient};
use tonic::Streaming;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Management, Principal},
    convert::{opt_timestamp, parse_time_field},
    error::{ApiError, ErrorBody},
    extract::ApiQuery,
    state::{AppState, grpc},
};

/// The largest page (each service is asked for at most this many entries, and the ones the
/// cursor skips).
const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(export_events))
}

/// Filters of the audit log; every one given must hold.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `account`, `membership`, `migration`, `feature`, `plan`, `flag`, `route` or `grant`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub resource_type: Option<String>,
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub resource_id: Option<String>,
    /// `environment:<clientId>`, `user:<sub>` or `service`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub actor: Option<String>,
    /// A stable action name, e.g. `account.create` or `grant.revoke`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub action: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Entries before this time (RFC 3339, after `from`).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// Entries per page: 1-100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `<service>:<sequence>`, unique across both services.
    pub id: String,
    /// `tenant` or `entitlement`: the service that recorded it.
    pub service: String,
    pub time: Option<String>,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub account_id: Option<String>,
    /// The changed fields before the write (`null` for a create); secrets are `"[REDACTED]"`.
    #[schema(value_type = Object, nullable = true)]
    pub before: Value,
    /// The changed fields after the write (`null` for a delete).
    #[schema(value_type = Object, nullable = true)]
    pub after: Value,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

/// A page of entries, newest first. A page may hold fewer than `limit` entries while more
/// follow: read on while `nextCursor` is set.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// Where a listing stands in one service's log: the page token to ask with, and how many of
/// that page's entries were already returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(default)]
    skip: u32,
    #[serde(default)]
    done: bool,
}

/// The cursor: both services' positions (base64url JSON; opaque to callers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    tenant: Position,
    entitlement: Position,
}

impl Cursor {
    fn decode(text: &str) -> Result<Self, ApiError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Self>(&bytes).ok())
            .filter(|c| c.tenant.skip <= MAX_LIMIT && c.entitlement.skip <= MAX_LIMIT)
            .ok_or_else(|| ApiError::invalid_field("cursor", "is not a cursor a page returned"))
    }

    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }
}

/// One service's part of a page: its entries after the skipped ones, and its next token.
struct Part {
    events: Vec<pb::AuditEvent>,
    next_token: Option<String>,
}

async fn fetch(
    mut client: AuditServiceClient<ClientChannel>,
    principal: &Principal,
    filter: &pb::ListAuditEventsRequest,
    at: &Position,
    limit: u32,
) -> Result<Option<Part>, ApiError> {
    if at.done {
        return Ok(None);
    }
    let request = pb::ListAuditEventsRequest {
        limit: Some(limit + at.skip),
        page_token: at.token.clone(),
        ..filter.clone()
    };
    let out = client
        .list_audit_events(grpc(principal, request))
        .await?
        .into_inner();
    let events = out.events.into_iter().skip(at.skip as usize).collect();
    Ok(Some(Part {
        events,
        next_token: out.next_page_token,
    }))
}

/// Where a service's listing stands after `taken` of its part's entries were returned.
fn advance(at: &Position, part: Option<&Part>, taken: usize) -> Position {
    let Some(part) = part else {
        return at.clone();
    };
    if taken < part.events.len() {
        return Position {
            token: at.token.clone(),
            skip: at.skip + u32::try_from(taken).unwrap_or(MAX_LIMIT),
            done: false,
        };
    }
    match &part.next_token {
        Some(token) => Position {
            token: Some(token.clone()),
            skip: 0,
            done: false,
        },
        None => Position {
            done: true,
            ..Position::default()
        },
    }
}

fn event(service: &str, e: pb::AuditEvent) -> AuditEvent {
    let json = |text: &str| serde_json::from_str(text).unwrap_or(Value::Null);
    AuditEvent {
        id: format!("{service}:{}", e.sequence),
        service: service.to_owned(),
        time: opt_timestamp(e.time),
        actor: e.actor,
        action: e.action,
        resource_type: e.resource_type,
        resource_id: e.resource_id,
        account_id: e.account_id,
        before: json(&e.before_json),
        after: json(&e.after_json),
        request_id: e.request_id,
        trace_id: e.trace_id,
    }
}

fn time_key(e: &pb::AuditEvent) -> (i64, i32) {
    e.time.map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// List the audit log of both services, newest first.
///
/// Every write through the API records one entry per changed item, in the write's own
/// transaction: who (`actor`), what (`action`, `resourceType`, `resourceId`, `accountId`), the
/// changed fields `before` and `after`, the `requestId` and `traceId`, and when.
#[utoipa::path(get, path = "/audit/api/v1/events", tag = "Audit",
    params(EventsQuery),
    responses((status = 200, body = AuditPage), (status = "4XX", body = ErrorBody),
        (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_events(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    list(&state, &p, q).await.map(Json)
}

/// One page of both services' entries matching `q`, newest first (the REST list's and the
/// console's audit page).
pub async fn list(state: &AppState, p: &Principal, q: EventsQuery) -> Result<AuditPage, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be 1-{MAX_LIMIT}"),
        ));
    }
    let cursor = q
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()?
        .unwrap_or_default();
    let filter = pb::ListAuditEventsRequest {
        resource_type: q.resource_type,
        resource_id: q.resource_id,
        actor: q.actor,
        action: q.action,
        from: q
            .from
            .as_deref()
            .map(|t| parse_time_field(t, "from"))
            .transpose()?,
        to: q
            .to
            .as_deref()
            .map(|t| parse_time_field(t, "to"))
            .transpose()?,
        limit: None,
        page_token: None,
    };
    let (tenant, entitlement) = tokio::try_join!(
        fetch(state.audit_tenant(), p, &filter, &cursor.tenant, limit),
        fetch(
            state.audit_entitlement(),
            p,
            &filter,
            &cursor.entitlement,
            limit
        ),
    )?;
    // Merge the two newest-first lists by their heads. A part that runs out while its service
    // has more stops the page: its next entries could be newer than the other's.
    let empty = Vec::new();
    let (t_events, e_events) = (
        tenant.as_ref().map_or(&empty, |p| &p.events),
        entitlement.as_ref().map_or(&empty, |p| &p.events),
    );
    let more = |part: &Option<Part>| part.as_ref().is_some_and(|p| p.next_token.is_some());
    let (mut ti, mut ei) = (0, 0);
    let mut order = Vec::new();
    while order.len() < limit as usize {
        let (t, e) = (t_events.get(ti), e_events.get(ei));
        if (t.is_none() && more(&tenant)) || (e.is_none() && more(&entitlement)) {
            break;
        }
        match (t, e) {
            (Some(t), Some(e)) if time_key(t) >= time_key(e) => {
                order.push(true);
                ti += 1;
            }
            (Some(_), None) => {
                order.push(true);
                ti += 1;
            }
            (_, Some(_)) => {
                order.push(false);
                ei += 1;
            }
            (None, None) => break,
        }
    }
    let next = Cursor {
        tenant: advance(&cursor.tenant, tenant.as_ref(), ti),
        entitlement: advance(&cursor.entitlement, entitlement.as_ref(), ei),
    };
    let mut tenant_events = tenant.map(|p| p.events).unwrap_or_default().into_iter();
    let mut entitlement_events = entitlement
        .map(|p| p.events)
        .unwrap_or_default()
        .into_iter();
    let items = order
        .into_iter()
        .filter_map(|from_tenant| {
            if from_tenant {
                tenant_events.next().map(|e| event("tenant", e))
            } else {
                entitlement_events.next().map(|e| event("entitlement", e))
            }
        })
        .collect();
    let next_cursor = (!(next.tenant.done && next.entitlement.done)).then(|| next.encode());
    Ok(AuditPage { items, next_cursor })
}

/// What an export streams: the entries of `[from, to)` matching every filter given.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `account`, `membership`, `migration`, `feature`, `plan`, `flag`, `route` or `grant`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub resource_type: Option<String>,
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub resource_id: Option<String>,
    /// `environment:<clientId>`, `user:<sub>` or `service`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub actor: Option<String>,
    /// A stable action name, e.g. `account.create` or `grant.revoke`.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub action: Option<String>,
    /// Entries at or after this time (RFC 3339; required).
    #[param(format = DateTime)]
    pub from: String,
    /// Entries before this time (RFC 3339, after `from`; default: when the export starts, so
    /// an export ends).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// The `cursor` of the last line read: the export continues after that entry (send the
    /// same filters).
    pub cursor: Option<String>,
}

/// One line of an export: an entry, and where to continue after it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportLine {
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Pass as `cursor` (with the same filters) to continue after this entry.
    pub cursor: String,
}

/// Where an export stands: the last sequence sent of each service (base64url JSON; opaque).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportCursor {
    tenant: u64,
    entitlement: u64,
}

impl ExportCursor {
    fn decode(text: &str) -> Result<Self, ApiError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Self>(&bytes).ok())
            .ok_or_else(|| ApiError::invalid_field("cursor", "is not a cursor an export returned"))
    }

    fn encode(self) -> String {
        let json = serde_json::to_vec(&self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }
}

/// One service's export as it is read: the chunk at hand, and whether it has ended.
struct Source {
    stream: Streaming<pb::ExportAuditEventsResponse>,
    buffer: VecDeque<pb::AuditEvent>,
    done: bool,
}

impl Source {
    fn new(stream: Streaming<pb::ExportAuditEventsResponse>) -> Self {
        Self {
            stream,
            buffer: VecDeque::new(),
            done: false,
        }
    }

    /// Reads on until an entry is at hand or the export ended.
    async fn fill(&mut self) -> Result<(), tonic::Status> {
        while self.buffer.is_empty() && !self.done {
            match self.stream.message().await? {
                Some(chunk) => self.buffer.extend(chunk.events),
                None => self.done = true,
            }
        }
        Ok(())
    }
}

/// Both exports, merged oldest first.
struct Merge {
    tenant: Source,
    entitlement: Source,
    at: ExportCursor,
    failed: bool,
}

impl Merge {
    /// The lines that can be sent with what is at hand (at least one, unless both ended): an
    /// entry goes out only once the other service's next one is known, or that one ended.
    async fn next_lines(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if self.failed {
            return None;
        }
        if let Err(status) = tokio::try_join!(self.tenant.fill(), self.entitlement.fill()) {
            // Headers are sent: the connection is cut without the last chunk, and the client
            // resumes from the last line's cursor.
            tracing::warn!(error = %status, "audit export failed midway");
            self.failed = true;
            return Some((
                Err(std::io::Error::other(status.message().to_owned())),
                self,
            ));
        }
        let mut out = Vec::new();
        loop {
            let from_tenant = match (self.tenant.buffer.front(), self.entitlement.buffer.front()) {
                // At equal times the entitlement entry first: the reverse of the list's order.
                (Some(t), Some(e)) => time_key(t) < time_key(e),
                (Some(_), None) if self.entitlement.done => true,
                (None, Some(_)) if self.tenant.done => false,
                _ => break,
            };
            let (service, entry) = if from_tenant {
                ("tenant", self.tenant.buffer.pop_front())
            } else {
                ("entitlement", self.entitlement.buffer.pop_front())
            };
            let Some(entry) = entry else { break };
            if from_tenant {
                self.at.tenant = entry.sequence;
            } else {
                self.at.entitlement = entry.sequence;
            }
            let line = ExportLine {
                event: event(service, entry),
                cursor: self.at.encode(),
            };
            if serde_json::to_writer(&mut out, &line).is_ok() {
                out.push(b'\n');
            }
        }
        (!out.is_empty()).then(|| (Ok(Bytes::from(out)), self))
    }
}

/// Export the audit log of both services for a SIEM: NDJSON, oldest first.
///
/// One JSON object per line (`application/x-ndjson`, streamed in chunks): the entry as the list
/// gives it, plus `cursor`. The export covers `[from, to)` (`to` defaults to when it starts, so
/// it ends) and the same filters as the list; an export cut short (a dropped connection, a
/// service failing midway: the response then ends without its last chunk) continues with the
/// last line's `cursor` and the same filters. Each service streams its entries in chunks of
/// 100, one chunk in flight: a slow reader holds the export, never the databases. Entries of
/// writes still committing when the export reads past them can be missed: end `to` a few
/// seconds before now for a complete range.
#[utoipa::path(get, path = "/audit/api/v1/events/export", tag = "Audit",
    params(ExportQuery),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = ExportLine,
            description = "One `ExportLine` per line, oldest first"),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn export_events(
    State(state): State<AppState>,
    Management(p): Management,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let at = q
        .cursor
        .as_deref()
        .map(ExportCursor::decode)
        .transpose()?
        .unwrap_or_default();
    let from = parse_time_field(&q.from, "from")?;
    // Fixed here, so both services export the same range.
    let to = match q.to.as_deref() {
        Some(t) => parse_time_field(t, "to")?,
        None => {
            let now = chrono::Utc::now();
            prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or_default(),
            }
        }
    };
    if (from.seconds, from.nanos) >= (to.seconds, to.nanos) {
        return Err(ApiError::invalid_field("to", "must be after `from`"));
    }
    let request = |after_sequence: u64| pb::ExportAuditEventsRequest {
        from: Some(from),
        to: Some(to),
        resource_type: q.resource_type.clone(),
        resource_id: q.resource_id.clone(),
        actor: q.actor.clone(),
        action: q.action.clone(),
        after_sequence: Some(after_sequence),
    };
    let mut tenant_client = state.audit_tenant();
    let mut entitlement_client = state.audit_entitlement();
    // Either service's refusal (a bad filter, the audit log disabled) answers before any line.
    let (tenant, entitlement) = tokio::try_join!(
        tenant_client.export_audit_events(grpc(&p, request(at.tenant))),
        entitlement_client.export_audit_events(grpc(&p, request(at.entitlement))),
    )?;
    let merge = Merge {
        tenant: Source::new(tenant.into_inner()),
        entitlement: Source::new(entitlement.into_inner()),
        at,
        failed: false,
    };
    // Fused: the response compression polls its body once more after the end, which an
    // unfold alone answers with a panic.
    let body = Body::from_stream(stream::unfold(merge, Merge::next_lines).fuse());
    Ok(([(http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused_naming_it() {
        let cursor = Cursor {
            tenant: Position {
                token: Some("a1.ff".into()),
                skip: 3,
                done: false,
            },
            entitlement: Position {
                done: true,
                ..Position::default()
            },
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("!!").is_err());
        assert!(Cursor::decode("e30").is_err(), "{{}} lacks the positions");
        let at = ExportCursor {
            tenant: 7,
            entitlement: 0,
        };
        assert_eq!(ExportCursor::decode(&at.encode()).unwrap(), at);
        assert!(ExportCursor::decode(&cursor.encode()).is_err());
    }
}
