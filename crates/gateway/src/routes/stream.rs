//! The entitlement stream as Server-Sent Events, for clients that cannot speak gRPC: the
//! entitlement service's `IndexStreamService.WatchIndex` relayed event by event, `id:` the
//! revision a subscriber holds after the event, `Last-Event-ID` (or `lastEventId`) resuming.
//!
//! A stream holds none of the `concurrency_limit` permits (those are released once the response
//! starts) but one of `sse_max_streams`, for as long as it runs.

use std::convert::Infallible;

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
};
use futures::stream;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tenantry_index::{ResetReason, StreamEvent};
use tenantry_proto::entitlement::v1::{WatchIndexRequest, WatchIndexResponse};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Streaming;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Management,
    error::{ApiError, ErrorBody},
    extract::{ApiQuery, split_list},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_index))
}

/// Where to start and what to follow.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this revision (the `id` of the last event applied); a `Last-Event-ID`
    /// header wins. Unset: a snapshot first.
    #[param(minimum = 0)]
    pub last_event_id: Option<u64>,
    /// Comma-separated account IDs (at most 1,000): only these accounts with their ancestors;
    /// unset: every account.
    pub account_ids: Option<String>,
}

fn reason(r: ResetReason) -> &'static str {
    match r {
        ResetReason::RevisionTooOld => "REVISION_TOO_OLD",
        ResetReason::RevisionUnknown => "REVISION_UNKNOWN",
        ResetReason::Lagging => "LAGGING",
        ResetReason::ScopeChanged => "SCOPE_CHANGED",
        ResetReason::IndexReloaded => "INDEX_RELOADED",
        ResetReason::Other => "UNSPECIFIED",
    }
}

/// One stream event as SSE. Only events after which the subscriber holds a complete revision
/// carry `id:`, so a reconnect with `Last-Event-ID` never resumes from inside a snapshot.
fn sse_event(event: StreamEvent) -> Event {
    let (name, id, data) = match event {
        StreamEvent::SnapshotBegin {
            revision,
            written_until,
        } => (
            "snapshot-begin",
            None,
            json!({"revision": revision, "writtenUntil": written_until}),
        ),
        StreamEvent::SnapshotChunk(changes) => {
            ("snapshot-chunk", None, json!({ "changes": changes }))
        }
        StreamEvent::SnapshotEnd { revision } => (
            "snapshot-end",
            Some(revision),
            json!({ "revision": revision }),
        ),
        StreamEvent::Delta {
            revision,
            written_at,
            changes,
        } => (
            "delta",
            Some(revision),
            json!({"revision": revision, "writtenAt": written_at, "changes": changes}),
        ),
        StreamEvent::Heartbeat { revision } => ("heartbeat", None, json!({ "revision": revision })),
        StreamEvent::Reset { reason: r, message } => (
            "reset",
            None,
            json!({"reason": reason(r), "message": message}),
        ),
    };
    let event = Event::default().event(name).data(data.to_string());
    match id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// The gRPC stream's state while relayed.
struct Relay {
    stream: Streaming<WatchIndexResponse>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

async fn next_event(mut relay: Relay) -> Option<(Result<Event, Infallible>, Relay)> {
    if relay.done {
        return None;
    }
    let failure = |code: &str, message: String| {
        Event::default()
            .event("error")
            .data(json!({"code": code, "message": message}).to_string())
    };
    let event = match relay.stream.message().await {
        Ok(Some(message)) => match StreamEvent::try_from(message) {
            Ok(event) => sse_event(event),
            Err(e) => {
                relay.done = true;
                tracing::warn!(error = %e, "undecodable index stream event");
                failure(
                    "INTERNAL",
                    "the stream could not be relayed; reconnect".into(),
                )
            }
        },
        Ok(None) => return None,
        Err(status) => {
            relay.done = true;
            // The service's own words for a shutdown or a refusal; reconnect with the last id.
            failure(&format!("{:?}", status.code()), status.message().to_owned())
        }
    };
    Some((Ok(event), relay))
}

/// Follow the entitlement index as Server-Sent Events (environment token).
///
/// Events (`event:` name, JSON `data:`): `snapshot-begin` `{revision, writtenUntil}`, then
/// `snapshot-chunk` `{changes}` (upserts), then `snapshot-end` `{revision}`; then `delta`
/// `{revision, writtenAt, changes}` for every revision, in order; `heartbeat` `{revision}` after
/// `stream_heartbeat_secs` without news; `reset` `{reason, message}` when what the client holds
/// cannot be continued (a snapshot follows); `error` `{code, message}` before the stream ends.
/// `snapshot-end` and `delta` carry `id:` = the revision held after them: reconnect with
/// `Last-Event-ID` to continue without a hole. A change is `{"op": …}` in the change log's JSON
/// shape (`upsert_grant`, `delete_plan`, `upsert_tenant`, …).
#[utoipa::path(get, path = "/entitlements/api/v1/stream", tag = "Checks",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event applied (a revision); wins over `lastEventId`")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
            description = "An endless event stream (see the operation's description)"),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn stream_index(
    State(state): State<AppState>,
    Management(p): Management,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID must be a revision (an unsigned integer)",
                    )
                })?,
        ),
        None => q.last_event_id,
    };
    let permit = state.sse_streams.clone().try_acquire_owned().map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many entitlement streams on this gateway; retry later",
        );
        e.retry_after = Some(5);
        e
    })?;
    let stream = state
        .index_stream()
        .watch_index(grpc(
            &p,
            WatchIndexRequest {
                resume_revision: resume,
                account_ids: split_list(q.account_ids.as_deref()),
            },
        ))
        .await?
        .into_inner();
    let relay = Relay {
        stream,
        done: false,
        _permit: permit,
    };
    Ok(Sse::new(stream::unfold(relay, next_event)).into_response())
}
