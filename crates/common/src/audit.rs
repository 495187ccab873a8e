//! The audit log's shared rules, one for both services: who is acting (the [`RequestContext`]
//! every gRPC server sets around a call), what an entry holds ([`AuditEntry`]: the changed
//! fields before and after, with secrets redacted by [`redact`]), and how a query is checked
//! ([`AuditQuery`]). Each service stores its own entries in its own schema through
//! [`store`], inside the transaction of the write they record.

pub mod store;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::grpc::PRINCIPAL_METADATA_KEY;

/// The request header (and gRPC metadata key) naming a request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The actor of a direct gRPC call: it holds the service token and passes no principal.
pub const SERVICE_ACTOR: &str = "service";
/// The actor of work no call started (none records today; named so an entry never lacks one).
pub const SYSTEM_ACTOR: &str = "system";
/// The message of an audit read refused because the service records no entries (its reason is
/// [`crate::error::AUDIT_DISABLED`]).
pub const DISABLED_MESSAGE: &str =
    "the audit log is disabled on this service (audit_enabled = false): no entries are recorded";
/// What a redacted value is replaced by.
pub const REDACTED: &str = "[REDACTED]";
/// Entries a page holds when the caller names no limit.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page.
pub const MAX_LIMIT: u32 = 500;
/// Longest filter value, in characters.
pub const MAX_FILTER_CHARS: usize = 255;
/// Longest request ID kept, in bytes (a longer one is cut: it is the caller's label).
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Entries a pruner deletes per statement: no single statement grows with the backlog.
pub const PRUNE_BATCH: u64 = 500;
/// How often pruners look for entries past retention (a read on an index when there are none).
pub const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// Who made a call and how to find it again: set by the gRPC server around every call (from
/// the metadata) and by the gateway around every request (so its calls carry the request ID).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// `environment:<clientId>`, `user:<sub>`, [`SERVICE_ACTOR`] or [`SYSTEM_ACTOR`].
    pub actor: String,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

impl RequestContext {
    /// The context of a gRPC call, from its headers: the gateway's principal (else the call is
    /// the service's own caller), `x-request-id` and the W3C `traceparent`.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        Self {
            actor: text(PRINCIPAL_METADATA_KEY)
                .map_or_else(|| SERVICE_ACTOR.to_owned(), str::to_owned),
            request_id: text(REQUEST_ID_HEADER).map(|id| truncate(id, MAX_REQUEST_ID_BYTES)),
            trace_id: text("traceparent").and_then(trace_id_of),
        }
    }

    /// The context of the running call; outside any call, the [`SYSTEM_ACTOR`]'s.
    pub fn current() -> Self {
        CONTEXT.try_with(Clone::clone).unwrap_or_else(|_| Self {
            actor: SYSTEM_ACTOR.to_owned(),
            ..Self::default()
        })
    }

    /// The running call's request ID, if any.
    pub fn current_request_id() -> Option<String> {
        CONTEXT.try_with(|c| c.request_id.clone()).ok().flatten()
    }

    /// Runs `work` with this context as the current one.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CONTEXT.scope(self, work).await
    }
}

/// The trace ID of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), unless malformed or
/// all zeros.
fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let valid = trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0');
    valid.then(|| trace_id.to_ascii_lowercase())
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// One write to record, as the code that made it knows it. The actor, the request and the time
/// are added when it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// A stable `<resource>.<verb>` name, from a service's typed actions.
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: String,
    pub account_id: Option<String>,
    /// The changed fields before (`null` when the resource did not exist).
    pub before: Value,
    /// The changed fields after (`null` when the resource no longer exists).
    pub after: Value,
}

impl AuditEntry {
    /// An entry of a write that turned `before` into `after` (each a resource as JSON, or
    /// `null`): an update keeps only the fields that differ, and every secret is redacted.
    pub fn new(
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl Into<String>,
        account_id: Option<String>,
        before: Value,
        after: Value,
    ) -> Self {
        let (before, after) = changed(before, after);
        Self {
            action,
            resource_type,
            resource_id: resource_id.into(),
            account_id,
            before: redact(before),
            after: redact(after),
        }
    }

    /// Whether the write changed anything (an update whose fields all stayed is no change).
    pub fn changes_something(&self) -> bool {
        self.before != self.after
    }
}

/// The fields of two objects that differ, each side with its own values (a field one side
/// lacks is `null` there); anything but two objects is kept whole.
fn changed(before: Value, after: Value) -> (Value, Value) {
    match (before, after) {
        (Value::Object(mut before), Value::Object(mut after)) => {
            let mut keys: Vec<String> = before.keys().chain(after.keys()).cloned().collect();
            keys.sort();
            keys.dedup();
            let (mut old, mut new) = (Map::new(), Map::new());
            for key in keys {
                let was = before.remove(&key).unwrap_or(Value::Null);
                let is = after.remove(&key).unwrap_or(Value::Null);
                if was != is {
                    old.insert(key.clone(), was);
                    new.insert(key, is);
                }
            }
            (Value::Object(old), Value::Object(new))
        }
        pair => pair,
    }
}

/// Whether a field's name says it holds a secret: the rule every entry is put through, so a
/// secret field added later is redacted without anyone remembering to.
pub fn is_secret_field(name: &str) -> bool {
    let normalized: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [
        "secret",
        "password",
        "token",
        "credential",
        "privatekey",
        "apikey",
    ]
    .iter()
    .any(|word| normalized.contains(word))
}

/// `value` with every secret field's value (at any depth) replaced by [`REDACTED`].
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = if is_secret_field(&key) && !value.is_null() {
                        Value::String(REDACTED.to_owned())
                    } else {
                        redact(value)
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        scalar @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_)) => scalar,
    }
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub sequence: u64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub account_id: Option<String>,
    pub before: Value,
    pub after: Value,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

/// A checked query: every filter given must hold; newest first, older than `before_sequence`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: u32,
    pub before_sequence: Option<u64>,
}

/// A refused query: the field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct QueryError {
    pub field: &'static str,
    pub message: String,
}

/// A query as received, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct RawQuery {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    pub page_token: Option<String>,
}

impl AuditQuery {
    /// Checks a query: filters are 1-255 characters without control characters, `from` is before `to`, the limit is 1-500, and
    /// the page token is one a page returned.
    pub fn parse(raw: RawQuery) -> Result<Self, QueryError> {
        if let (Some(from), Some(to)) = (raw.from, raw.to)
            && from >= to
        {
            return Err(to_not_after_from());
        }
        let limit = raw.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(QueryError {
                field: "limit",
                message: format!("must be 1-{MAX_LIMIT}"),
            });
        }
        let before_sequence = raw
            .page_token
            .map(|token| {
                decode_page_token(&token).ok_or_else(|| QueryError {
                    field: "page_token",
                    message: "is not a token a page returned".into(),
                })
            })
            .transpose()?;
        Ok(Self {
            resource_type: filter("resource_type", raw.resource_type)?,
            resource_id: filter("resource_id", raw.resource_id)?,
            actor: filter("actor", raw.actor)?,
            action: filter("action", raw.action)?,
            from: raw.from,
            to: raw.to,
            limit,
            before_sequence,
        })
    }
}

/// A filter value as given, or the refusal naming `field`: 1-255 characters without control
/// characters (the rule of the list and the export alike).
fn filter(field: &'static str, value: Option<String>) -> Result<Option<String>, QueryError> {
    match value {
        Some(v)
            if v.is_empty()
                || v.chars().count() > MAX_FILTER_CHARS
                || v.chars().any(char::is_control) =>
        {
            Err(QueryError {
                field,
                message: format!(
                    "must be 1-{MAX_FILTER_CHARS} characters without control characters"
                ),
            })
        }
        other => Ok(other),
    }
}

fn to_not_after_from() -> QueryError {
    QueryError {
        field: "to",
        message: "must be after `from`".into(),
    }
}

/// An export as received, before it is checked.
#[derive(Clone, Debug, Default)]
pub struct RawExport {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after_sequence: Option<u64>,
}

/// A checked export: the entries of `[from, to)` matching every filter given, oldest first,
/// after `after_sequence` (where an earlier export stopped; 0 from the start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportQuery {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub after_sequence: u64,
}

impl ExportQuery {
    /// Checks an export: `from` is required, `to` (default `now`: an export ends) after it,
    /// and the filters follow the list's rule.
    pub fn parse(raw: RawExport, now: DateTime<Utc>) -> Result<Self, QueryError> {
        let from = raw.from.ok_or_else(|| QueryError {
            field: "from",
            message: "is required".into(),
        })?;
        let to = raw.to.unwrap_or(now);
        if from >= to {
            return Err(to_not_after_from());
        }
        Ok(Self {
            resource_type: filter("resource_type", raw.resource_type)?,
            resource_id: filter("resource_id", raw.resource_id)?,
            actor: filter("actor", raw.actor)?,
            action: filter("action", raw.action)?,
            from,
            to,
            after_sequence: raw.after_sequence.unwrap_or(0),
        })
    }
}

/// The token of the page after one whose last entry is `sequence`.
pub fn page_token(sequence: u64) -> String {
    format!("a1.{sequence:x}")
}

fn decode_page_token(token: &str) -> Option<u64> {
    let hex = token.strip_prefix("a1.")?;
    (!hex.is_empty() && hex.len() <= 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// A page of entries and the token of the next one, if older entries may match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    pub next_page_token: Option<String>,
}

/// Deletes entries past retention every [`PRUNE_INTERVAL`] until `shutdown`: `prune_batch`
/// deletes up to [`PRUNE_BATCH`] of them and says how many went; a full batch is followed at
/// once by another. A batch refused for a storage fault is reported to `storage`. Retention is
/// the only delete of the audit log.
pub async fn prune_expired<F, Fut, E>(
    shutdown: crate::CancellationToken,
    storage: crate::db::StorageHealth,
    mut prune_batch: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
    E: std::fmt::Display + crate::db::StorageFaultSource,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
        loop {
            match prune_batch().await {
                Ok(n) if n >= PRUNE_BATCH && !shutdown.is_cancelled() => {}
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(pruned = n, "audit entries past retention pruned");
                    break;
                }
                Err(err) => {
                    storage.report(&err);
                    tracing::warn!(error = %err, "pruning audit entries failed; will retry");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_update_keeps_the_changed_fields_only() {
        let entry = AuditEntry::new(
            "account.update",
            "account",
            "a",
            Some("a".into()),
            json!({"name": "old", "alias": "x", "gone": 1}),
            json!({"name": "new", "alias": "x", "added": true}),
        );
        assert_eq!(
            entry.before,
            json!({"name": "old", "gone": 1, "added": null})
        );
        assert_eq!(
            entry.after,
            json!({"name": "new", "gone": null, "added": true})
        );
        assert!(entry.changes_something());
        let same = AuditEntry::new("a.b", "a", "a", None, json!({"x": 1}), json!({"x": 1}));
        assert!(!same.changes_something());
    }

    #[test]
    fn secrets_are_redacted_at_any_depth_by_their_names() {
        let entry = AuditEntry::new(
            "x.create",
            "x",
            "1",
            None,
            Value::Null,
            json!({"name": "n", "signingSecret": "s", "nested": [{"api_key": "k", "password": null}], "tokenTtl": 3}),
        );
        assert_eq!(
            entry.after,
            json!({"name": "n", "signingSecret": REDACTED, "nested": [{"api_key": REDACTED, "password": null}], "tokenTtl": REDACTED})
        );
        assert!(!is_secret_field("featureKey"));
        assert!(!is_secret_field("tenantId"));
    }

    #[test]
    fn the_context_comes_from_the_metadata() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(RequestContext::from_headers(&headers).actor, SERVICE_ACTOR);
        headers.insert(PRINCIPAL_METADATA_KEY, "user:u1".parse().unwrap());
        headers.insert(REQUEST_ID_HEADER, "r-1".parse().unwrap());
        headers.insert(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let context = RequestContext::from_headers(&headers);
        assert_eq!(context.actor, "user:u1");
        assert_eq!(context.request_id.as_deref(), Some("r-1"));
        assert_eq!(
            context.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
        assert_eq!(RequestContext::current().actor, SYSTEM_ACTOR);
    }

    #[test]
    fn queries_are_checked_naming_the_field() {
        let err = |raw: RawQuery| AuditQuery::parse(raw).unwrap_err().field;
        assert_eq!(
            err(RawQuery {
                limit: Some(0),
                ..RawQuery::default()
            }),
            "limit"
        );
        assert_eq!(
            err(RawQuery {
                page_token: Some("7".into()),
                ..RawQuery::default()
            }),
            "page_token"
        );
        assert_eq!(
            err(RawQuery {
                actor: Some(String::new()),
                ..RawQuery::default()
            }),
            "actor"
        );
        let now = Utc::now();
        assert_eq!(
            err(RawQuery {
                from: Some(now),
                to: Some(now),
                ..RawQuery::default()
            }),
            "to"
        );
        let export = |raw: RawExport| ExportQuery::parse(raw, now);
        assert_eq!(export(RawExport::default()).unwrap_err().field, "from");
        assert_eq!(
            export(RawExport {
                from: Some(now),
                ..RawExport::default()
            })
            .unwrap_err()
            .field,
            "to"
        );
        assert_eq!(
            export(RawExport {
                from: Some(now - chrono::Duration::hours(1)),
                action: Some("a\u{7}".into()),
                ..RawExport::default()
            })
            .unwrap_err()
            .field,
            "action"
        );
        let e = export(RawExport {
            from: Some(now - chrono::Duration::hours(1)),
            after_sequence: Some(7),
            ..RawExport::default()
        })
        .unwrap();
        assert_eq!((e.to, e.after_sequence), (now, 7));
        let q = AuditQuery::parse(RawQuery {
            page_token: Some(page_token(300)),
            ..RawQuery::default()
        })
        .unwrap();
        assert_eq!((q.limit, q.before_sequence), (DEFAULT_LIMIT, Some(300)));
    }
}
