//! Webhooks and the audit trail. Environment sessions only, as the REST routes.
//!
//! Webhooks: endpoints listed, created, edited, deleted; an endpoint's delivery log (newest
//! first, cursor paging) with redelivery; its signing secret rotated. A secret is shown once,
//! in the answer to the create or rotate form itself (never in a URL or a later page), as the
//! API returns it once. The audit trail: both services' entries merged newest first with the
//! REST list's filters and cursor (`routes::audit::list`).

use askama::Template;
use axum::{
    Router,
    extract::{Path, Query, RawForm, State},
    response::Response,
    routing::{get, post},
};
use serde::Deserialize;
use tenantry_proto::{
    common::v1::StringList,
    entitlement::v1::{
        CreateWebhookEndpointRequest, DeleteWebhookEndpointRequest, GetWebhookEndpointRequest,
        ListWebhookDeliveriesRequest, ListWebhookEndpointsRequest, RedeliverWebhookRequest,
        RotateWebhookSecretRequest, UpdateWebhookEndpointRequest, WebhookDeliveryStatus,
        WebhookEndpoint,
    },
};

use super::{
    Console, Layout, PageError, SignedIn,
    catalogue::{field, fields, list_field},
    encode, render, write_then_see,
};
use crate::{
    convert::opt_timestamp,
    error::ApiError,
    routes::audit::{AuditEvent, EventsQuery},
    state::grpc,
};

pub fn router() -> Router<Console> {
    Router::new()
        .route("/webhooks", get(webhooks).post(create))
        .route("/webhooks/{id}", get(webhook).post(update))
        .route("/webhooks/{id}/delete", post(delete))
        .route("/webhooks/{id}/rotate-secret", post(rotate))
        .route(
            "/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(redeliver),
        )
        .route("/audit", get(audit))
}

fn webhook_href(id: &str) -> String {
    format!("/console/webhooks/{}", encode(id))
}

pub struct EndpointRow {
    pub href: String,
    pub url: String,
    pub events: String,
    pub accounts: String,
    pub enabled: bool,
    pub description: String,
    /// Why it was disabled, or since when it fails; empty when healthy.
    pub trouble: String,
}

impl From<WebhookEndpoint> for EndpointRow {
    fn from(e: WebhookEndpoint) -> Self {
        let trouble = if !e.disabled_reason.is_empty() {
            format!("disabled: {}", e.disabled_reason)
        } else {
            opt_timestamp(e.failing_since)
                .map(|t| format!("failing since {t}"))
                .unwrap_or_default()
        };
        Self {
            href: webhook_href(&e.id),
            url: e.url,
            events: e.event_types.join(", "),
            accounts: e.account_ids.join(", "),
            enabled: e.enabled,
            description: e.description,
            trouble,
        }
    }
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    rows: Vec<EndpointRow>,
}

async fn webhooks(State(c): State<Console>, session: SignedIn) -> Result<Response, PageError> {
    let p = session.management()?;
    let endpoints = c
        .app
        .webhooks()
        .list_webhook_endpoints(grpc(p, ListWebhookEndpointsRequest {}))
        .await?
        .into_inner()
        .endpoints;
    render(&WebhooksPage {
        layout: session.layout("Webhooks", "Webhooks"),
        rows: endpoints.into_iter().map(EndpointRow::from).collect(),
    })
}

/// The page that shows a signing secret, once.
#[derive(Template)]
#[template(path = "console/webhook_secret.html")]
struct SecretPage {
    layout: Layout,
    href: String,
    url: String,
    secret: String,
    rotated: bool,
}

async fn create(
    State(c): State<Console>,
    session: SignedIn,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let f = fields(&form)?;
    let request = CreateWebhookEndpointRequest {
        url: field(&f, "url"),
        event_types: list_field(&f, "event_types"),
        account_ids: list_field(&f, "account_ids"),
        enabled: Some(field(&f, "enabled") == "on"),
        description: field(&f, "description"),
    };
    let out = c
        .app
        .webhooks()
        .create_webhook_endpoint(grpc(p, request))
        .await?
        .into_inner();
    let endpoint = out.endpoint.ok_or_else(ApiError::internal)?;
    render(&SecretPage {
        layout: session.layout("New webhook endpoint", "Webhooks"),
        href: webhook_href(&endpoint.id),
        url: endpoint.url,
        secret: out.secret,
        rotated: false,
    })
}

pub struct DeliveryRow {
    pub event_type: String,
    pub subject: String,
    pub status: &'static str,
    pub attempts: u32,
    pub last: String,
    pub created_at: String,
    pub redeliver_action: String,
}

#[derive(Template)]
#[template(path = "console/webhook.html")]
struct WebhookPage {
    layout: Layout,
    href: String,
    row: EndpointRow,
    deliveries: Vec<DeliveryRow>,
    next: Option<String>,
    first: bool,
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    cursor: Option<String>,
}

/// Deliveries per page of an endpoint's log.
const DELIVERIES: u32 = 25;

fn status_text(s: WebhookDeliveryStatus) -> &'static str {
    match s {
        WebhookDeliveryStatus::Pending => "pending",
        WebhookDeliveryStatus::Succeeded => "succeeded",
        WebhookDeliveryStatus::Failed => "failed",
        WebhookDeliveryStatus::Unspecified => "unknown",
    }
}

async fn webhook(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let endpoint = c
        .app
        .webhooks()
        .get_webhook_endpoint(grpc(p, GetWebhookEndpointRequest { id: id.clone() }))
        .await?
        .into_inner()
        .endpoint
        .ok_or_else(ApiError::internal)?;
    let cursor = q.cursor.filter(|v| !v.is_empty());
    let log = c
        .app
        .webhooks()
        .list_webhook_deliveries(grpc(
            p,
            ListWebhookDeliveriesRequest {
                endpoint_id: id.clone(),
                limit: Some(DELIVERIES),
                cursor: cursor.clone(),
            },
        ))
        .await?
        .into_inner();
    let href = webhook_href(&id);
    let deliveries = log
        .deliveries
        .into_iter()
        .map(|d| {
            let last = match (d.last_status_code, d.last_error.is_empty()) {
                (0, true) => String::new(),
                (0, false) => d.last_error.clone(),
                (code, _) => format!("HTTP {code} in {} ms", d.last_latency_ms),
            };
            DeliveryRow {
                redeliver_action: format!("{href}/deliveries/{}/redeliver", encode(&d.id)),
                status: status_text(d.status()),
                attempts: d.attempts,
                created_at: opt_timestamp(d.created_at).unwrap_or_default(),
                event_type: d.event_type,
                subject: d.subject,
                last,
            }
        })
        .collect();
    render(&WebhookPage {
        layout: session.layout(format!("Webhook {}", endpoint.url), "Webhooks"),
        next: log
            .next_cursor
            .map(|n| format!("{href}?cursor={}", encode(&n))),
        first: cursor.is_none(),
        row: EndpointRow::from(endpoint),
        href,
        deliveries,
    })
}

async fn update(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    RawForm(form): RawForm,
) -> Result<Response, PageError> {
    let f = fields(&form)?;
    let request = UpdateWebhookEndpointRequest {
        id: id.clone(),
        url: Some(field(&f, "url")),
        event_types: Some(StringList {
            values: list_field(&f, "event_types"),
        }),
        account_ids: Some(StringList {
            values: list_field(&f, "account_ids"),
        }),
        enabled: Some(field(&f, "enabled") == "on"),
        description: Some(field(&f, "description")),
    };
    write_then_see(&session, &webhook_href(&id), |p| async move {
        c.app
            .webhooks()
            .update_webhook_endpoint(grpc(&p, request))
            .await
    })
    .await
}

async fn delete(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    write_then_see(&session, "/console/webhooks", |p| async move {
        let request = DeleteWebhookEndpointRequest { id };
        c.app
            .webhooks()
            .delete_webhook_endpoint(grpc(&p, request))
            .await
    })
    .await
}

async fn rotate(
    State(c): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let secret = c
        .app
        .webhooks()
        .rotate_webhook_secret(grpc(p, RotateWebhookSecretRequest { id: id.clone() }))
        .await?
        .into_inner()
        .secret;
    let endpoint = c
        .app
        .webhooks()
        .get_webhook_endpoint(grpc(p, GetWebhookEndpointRequest { id: id.clone() }))
        .await?
        .into_inner()
        .endpoint
        .ok_or_else(ApiError::internal)?;
    render(&SecretPage {
        layout: session.layout("Rotated webhook secret", "Webhooks"),
        href: webhook_href(&id),
        url: endpoint.url,
        secret,
        rotated: true,
    })
}

async fn redeliver(
    State(c): State<Console>,
    session: SignedIn,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let request = RedeliverWebhookRequest {
        endpoint_id: id.clone(),
        delivery_id: delivery,
    };
    write_then_see(&session, &webhook_href(&id), |p| async move {
        c.app.webhooks().redeliver_webhook(grpc(&p, request)).await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The audit trail

/// The filter form as sent: an empty field is no filter.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditForm {
    resource_type: Option<String>,
    resource_id: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    /// Entries per page (the REST list's 1-100); 50 when not given.
    limit: Option<u32>,
}

pub struct AuditRow {
    pub event: AuditEvent,
    pub before: String,
    pub after: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    layout: Layout,
    filters: Vec<(&'static str, &'static str, String)>,
    rows: Vec<AuditRow>,
    next: Option<String>,
    first: String,
    paged: bool,
}

async fn audit(
    State(c): State<Console>,
    session: SignedIn,
    Query(form): Query<AuditForm>,
) -> Result<Response, PageError> {
    let p = session.management()?;
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let filters = vec![
        ("resourceType", "Resource type", form.resource_type.clone()),
        ("resourceId", "Resource ID", form.resource_id.clone()),
        ("actor", "Actor", form.actor.clone()),
        ("action", "Action", form.action.clone()),
        ("from", "From (date or RFC 3339)", form.from.clone()),
        ("to", "Before (date or RFC 3339)", form.to.clone()),
    ];
    let query = EventsQuery {
        resource_type: given(&form.resource_type),
        resource_id: given(&form.resource_id),
        actor: given(&form.actor),
        action: given(&form.action),
        from: given(&form.from),
        to: given(&form.to),
        cursor: given(&form.cursor),
        limit: Some(form.limit.unwrap_or(50)),
    };
    let page = crate::routes::audit::list(&c.app, p, query).await?;
    // The filters again, for the next page's and the first page's links.
    let mut filter_query: Vec<String> = filters
        .iter()
        .filter_map(|(name, _, v)| given(v).map(|v| format!("{name}={}", encode(&v))))
        .collect();
    if let Some(limit) = form.limit {
        filter_query.push(format!("limit={limit}"));
    }
    let filter_query = filter_query.join("&");
    let link = |cursor: Option<&str>| {
        let mut parts: Vec<String> = Vec::new();
        if !filter_query.is_empty() {
            parts.push(filter_query.clone());
        }
        if let Some(cursor) = cursor {
            parts.push(format!("cursor={}", encode(cursor)));
        }
        format!("/console/audit?{}", parts.join("&"))
    };
    let shown = |v: &serde_json::Value| {
        if v.is_null() {
            String::new()
        } else {
            v.to_string()
        }
    };
    render(&AuditPage {
        layout: session.layout("Audit trail", "Audit"),
        next: page.next_cursor.as_deref().map(|n| link(Some(n))),
        first: link(None),
        paged: given(&form.cursor).is_some(),
        filters: filters
            .into_iter()
            .map(|(name, label, v)| (name, label, v.unwrap_or_default()))
            .collect(),
        rows: page
            .items
            .into_iter()
            .map(|event| AuditRow {
                before: shown(&event.before),
                after: shown(&event.after),
                event,
            })
            .collect(),
    })
}
