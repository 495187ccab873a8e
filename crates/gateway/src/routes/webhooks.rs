//! Webhook endpoints and their delivery log, tag "Webhooks" (`/entitlements/api/v1/webhooks`,
//! environment token): the entitlement service's `WebhookService`.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_proto::{
    common::v1::StringList,
    entitlement::v1::{
        self as pb, CreateWebhookEndpointRequest, DeleteWebhookEndpointRequest,
        GetWebhookEndpointRequest, ListWebhookDeliveriesRequest, ListWebhookEndpointsRequest,
        RedeliverWebhookRequest, RotateWebhookSecretRequest, UpdateWebhookEndpointRequest,
        WebhookDeliveryStatus,
    },
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::Deleted;
use crate::{
    auth::Management,
    convert::opt_timestamp,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(list_webhook_deliveries))
        .routes(routes!(redeliver_webhook))
}

/// A webhook endpoint. Events are CloudEvents 1.0 JSON, signed per Standard Webhooks
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// Event types delivered; empty: every type.
    pub event_types: Vec<String>,
    /// Accounts whose events are delivered (an event's `subject`); empty: every event.
    pub account_ids: Vec<String>,
    pub enabled: bool,
    pub description: String,
    /// `failing` when the service disabled it after sustained failure.
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed.
    pub failing_since: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<pb::WebhookEndpoint> for Webhook {
    fn from(e: pb::WebhookEndpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            event_types: e.event_types,
            account_ids: e.account_ids,
            enabled: e.enabled,
            description: e.description,
            disabled_reason: Some(e.disabled_reason).filter(|r| !r.is_empty()),
            failing_since: opt_timestamp(e.failing_since),
            created_at: opt_timestamp(e.created_at),
            updated_at: opt_timestamp(e.updated_at),
        }
    }
}

fn webhook(e: Option<pb::WebhookEndpoint>) -> Result<Webhook, ApiError> {
    e.map(Webhook::from).ok_or_else(ApiError::internal)
}

/// A created webhook with its signing secret (shown only here and on rotation).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_…`: the Standard Webhooks signing secret.
    pub secret: String,
}

/// A new signing secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecret {
    /// `whsec_…`.
    pub secret: String,
}

/// One event's delivery to the endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub id: String,
    pub webhook_id: String,
    /// The `webhook-id` header and CloudEvent `id` (the same on every attempt).
    pub event_id: String,
    pub event_type: String,
    pub subject: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    /// The last answer's HTTP status.
    pub last_status_code: Option<u32>,
    pub last_latency_ms: Option<u64>,
    /// The first 1 KiB of the last answer.
    pub last_response_excerpt: Option<String>,
    /// Why the last attempt got no answer.
    pub last_error: Option<String>,
    pub created_at: Option<String>,
}

impl From<pb::WebhookDelivery> for WebhookDelivery {
    fn from(d: pb::WebhookDelivery) -> Self {
        let attempted = d.attempts > 0;
        Self {
            status: match d.status() {
                WebhookDeliveryStatus::Succeeded => "succeeded",
                WebhookDeliveryStatus::Failed => "failed",
                WebhookDeliveryStatus::Pending | WebhookDeliveryStatus::Unspecified => "pending",
            }
            .to_owned(),
            id: d.id,
            webhook_id: d.endpoint_id,
            event_id: d.event_id,
            event_type: d.event_type,
            subject: Some(d.subject).filter(|s| !s.is_empty()),
            attempts: d.attempts,
            next_attempt_at: opt_timestamp(d.next_attempt_at),
            last_attempt_at: opt_timestamp(d.last_attempt_at),
            last_status_code: Some(d.last_status_code).filter(|c| *c != 0),
            last_latency_ms: attempted.then_some(d.last_latency_ms),
            last_response_excerpt: Some(d.last_response_excerpt).filter(|s| !s.is_empty()),
            last_error: Some(d.last_error).filter(|s| !s.is_empty()),
            created_at: opt_timestamp(d.created_at),
        }
    }
}

fn delivery(d: Option<pb::WebhookDelivery>) -> Result<WebhookDelivery, ApiError> {
    d.map(WebhookDelivery::from).ok_or_else(ApiError::internal)
}

/// Body of `POST /entitlements/api/v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// `http` or `https`; its host must be (and resolve to) a public address unless the
    /// operator allows private networks.
    #[schema(max_length = 2048, pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub url: String,
    /// Catalogue event types (README, "Webhooks"); empty: every type.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub event_types: Vec<String>,
    /// Account IDs; empty: every event.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub account_ids: Vec<String>,
    /// Default true.
    pub enabled: Option<bool>,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
}

/// Body of `PATCH /entitlements/api/v1/webhooks/{webhookId}`; an absent field is unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWebhookBody {
    #[schema(max_length = 2048, pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub url: Option<String>,
    #[schema(max_items = 64)]
    pub event_types: Option<Vec<String>>,
    #[schema(max_items = 100)]
    pub account_ids: Option<Vec<String>>,
    /// Enabling clears an automatic disabling.
    pub enabled: Option<bool>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// The webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub items: Vec<Webhook>,
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<WebhookDelivery>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query of the delivery list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// 1-100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
}

/// List webhook endpoints.
#[utoipa::path(get, path = "/entitlements/api/v1/webhooks", tag = "Webhooks",
    responses((status = 200, body = WebhookList), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_webhooks(
    State(state): State<AppState>,
    Management(p): Management,
) -> Result<Json<WebhookList>, ApiError> {
    let out = state
        .webhooks()
        .list_webhook_endpoints(grpc(&p, ListWebhookEndpointsRequest {}))
        .await?
        .into_inner();
    Ok(Json(WebhookList {
        items: out.endpoints.into_iter().map(Webhook::from).collect(),
    }))
}

/// Register a webhook endpoint (at most 100). The answer carries the signing secret, shown
/// only here.
#[utoipa::path(post, path = "/entitlements/api/v1/webhooks", tag = "Webhooks",
    request_body = CreateWebhookBody,
    responses((status = 201, body = CreatedWebhook), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_webhook(
    State(state): State<AppState>,
    Management(p): Management,
    ApiJson(b): ApiJson<CreateWebhookBody>,
) -> Result<Response, ApiError> {
    let request = CreateWebhookEndpointRequest {
        url: b.url,
        event_types: b.event_types,
        account_ids: b.account_ids,
        enabled: b.enabled,
        description: b.description,
    };
    let out = state
        .webhooks()
        .create_webhook_endpoint(grpc(&p, request))
        .await?
        .into_inner();
    let created = CreatedWebhook {
        webhook: webhook(out.endpoint)?,
        secret: out.secret,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Get a webhook endpoint.
#[utoipa::path(get, path = "/entitlements/api/v1/webhooks/{webhookId}", tag = "Webhooks",
    params(("webhookId" = String, Path)),
    responses((status = 200, body = Webhook), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_webhook(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Webhook>, ApiError> {
    let out = state
        .webhooks()
        .get_webhook_endpoint(grpc(&p, GetWebhookEndpointRequest { id }))
        .await?
        .into_inner();
    Ok(Json(webhook(out.endpoint)?))
}

/// Change a webhook endpoint.
#[utoipa::path(patch, path = "/entitlements/api/v1/webhooks/{webhookId}", tag = "Webhooks",
    params(("webhookId" = String, Path)), request_body = UpdateWebhookBody,
    responses((status = 200, body = Webhook), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_webhook(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<UpdateWebhookBody>,
) -> Result<Json<Webhook>, ApiError> {
    let request = UpdateWebhookEndpointRequest {
        id,
        url: b.url,
        event_types: b.event_types.map(|values| StringList { values }),
        account_ids: b.account_ids.map(|values| StringList { values }),
        enabled: b.enabled,
        description: b.description,
    };
    let out = state
        .webhooks()
        .update_webhook_endpoint(grpc(&p, request))
        .await?
        .into_inner();
    Ok(Json(webhook(out.endpoint)?))
}

/// Delete a webhook endpoint and its delivery log.
#[utoipa::path(delete, path = "/entitlements/api/v1/webhooks/{webhookId}", tag = "Webhooks",
    params(("webhookId" = String, Path)),
    responses((status = 200, body = Deleted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_webhook(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .webhooks()
        .delete_webhook_endpoint(grpc(&p, DeleteWebhookEndpointRequest { id }))
        .await?;
    Ok(Json(Deleted { deleted: true }))
}

/// Replace a webhook's signing secret; later deliveries are signed with the new one.
#[utoipa::path(post, path = "/entitlements/api/v1/webhooks/{webhookId}/rotate-secret",
    tag = "Webhooks", params(("webhookId" = String, Path)),
    responses((status = 200, body = WebhookSecret), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookSecret>, ApiError> {
    let out = state
        .webhooks()
        .rotate_webhook_secret(grpc(&p, RotateWebhookSecretRequest { id }))
        .await?
        .into_inner();
    Ok(Json(WebhookSecret { secret: out.secret }))
}

/// A webhook's deliveries, newest first (cursor-paged).
#[utoipa::path(get, path = "/entitlements/api/v1/webhooks/{webhookId}/deliveries",
    tag = "Webhooks", params(("webhookId" = String, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_webhook_deliveries(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(endpoint_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let out = state
        .webhooks()
        .list_webhook_deliveries(grpc(
            &p,
            ListWebhookDeliveriesRequest {
                endpoint_id,
                limit: q.limit,
                cursor: q.cursor,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(DeliveryPage {
        items: out
            .deliveries
            .into_iter()
            .map(WebhookDelivery::from)
            .collect(),
        next_cursor: out.next_cursor,
    }))
}

/// Deliver an event again at once (its attempts start over).
#[utoipa::path(post,
    path = "/entitlements/api/v1/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver",
    tag = "Webhooks", params(("webhookId" = String, Path), ("deliveryId" = String, Path)),
    responses((status = 200, body = WebhookDelivery), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn redeliver_webhook(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath((endpoint_id, delivery_id)): ApiPath<(String, String)>,
) -> Result<Json<WebhookDelivery>, ApiError> {
    let out = state
        .webhooks()
        .redeliver_webhook(grpc(
            &p,
            RedeliverWebhookRequest {
                endpoint_id,
                delivery_id,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(delivery(out.delivery)?))
}
