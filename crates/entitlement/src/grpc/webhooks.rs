//! `WebhookService`.

use std::sync::Arc;

use tenantry_proto::entitlement::v1::*;
use tonic::{Request, Response};

use super::Result;
use super::convert::timestamp;
use crate::app::webhooks::{EndpointPatch, NewEndpoint, Webhooks};
use crate::domain::webhook::{Delivery, DeliveryStatus, Endpoint};
use crate::storage::Store;

/// The `WebhookService` handlers.
#[derive(Debug, Clone)]
pub struct WebhookHandler {
    webhooks: Arc<Webhooks<Store>>,
}

impl WebhookHandler {
    pub fn new(webhooks: Arc<Webhooks<Store>>) -> Self {
        Self { webhooks }
    }
}

fn endpoint(e: &Endpoint) -> WebhookEndpoint {
    WebhookEndpoint {
        id: e.id.to_string(),
        url: e.url.clone(),
        event_types: e.event_types.clone(),
        account_ids: e.account_ids.clone(),
        enabled: e.enabled,
        description: e.description.clone(),
        disabled_reason: e.disabled_reason.clone().unwrap_or_default(),
        failing_since: e.failing_since.map(timestamp),
        created_at: Some(timestamp(e.created_at)),
        updated_at: Some(timestamp(e.updated_at)),
    }
}

fn delivery(d: &Delivery) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id.to_string(),
        endpoint_id: d.endpoint_id.to_string(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        subject: d.subject.clone().unwrap_or_default(),
        status: match d.status {
            DeliveryStatus::Pending => WebhookDeliveryStatus::Pending,
            DeliveryStatus::Succeeded => WebhookDeliveryStatus::Succeeded,
            DeliveryStatus::Failed => WebhookDeliveryStatus::Failed,
        }
        .into(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at.map(timestamp),
        last_attempt_at: d.last_attempt_at.map(timestamp),
        last_status_code: d.last_status_code.map(u32::from).unwrap_or_default(),
        last_latency_ms: d.last_latency_ms.unwrap_or_default(),
        last_response_excerpt: d.last_response_excerpt.clone().unwrap_or_default(),
        last_error: d.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp(d.created_at)),
    }
}

#[tonic::async_trait]
impl webhook_service_server::WebhookService for WebhookHandler {
    async fn create_webhook_endpoint(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<Response<CreateWebhookEndpointResponse>> {
        let r = request.into_inner();
        let (created, secret) = self
            .webhooks
            .create(NewEndpoint {
                url: r.url,
                event_types: r.event_types,
                account_ids: r.account_ids,
                enabled: r.enabled.unwrap_or(true),
                description: r.description,
            })
            .await?;
        Ok(Response::new(CreateWebhookEndpointResponse {
            endpoint: Some(endpoint(&created)),
            secret,
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> Result<Response<GetWebhookEndpointResponse>> {
        let found = self.webhooks.get(&request.into_inner().id).await?;
        Ok(Response::new(GetWebhookEndpointResponse {
            endpoint: Some(endpoint(&found)),
        }))
    }

    async fn list_webhook_endpoints(
        &self,
        _request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<Response<ListWebhookEndpointsResponse>> {
        let all = self.webhooks.list().await?;
        Ok(Response::new(ListWebhookEndpointsResponse {
            endpoints: all.iter().map(endpoint).collect(),
        }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<UpdateWebhookEndpointRequest>,
    ) -> Result<Response<UpdateWebhookEndpointResponse>> {
        let r = request.into_inner();
        let patch = EndpointPatch {
            url: r.url,
            event_types: r.event_types.map(|l| l.values),
            account_ids: r.account_ids.map(|l| l.values),
            enabled: r.enabled,
            description: r.description,
        };
        let updated = self.webhooks.update(&r.id, patch).await?;
        Ok(Response::new(UpdateWebhookEndpointResponse {
            endpoint: Some(endpoint(&updated)),
        }))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<Response<DeleteWebhookEndpointResponse>> {
        self.webhooks.delete(&request.into_inner().id).await?;
        Ok(Response::new(DeleteWebhookEndpointResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>> {
        let secret = self
            .webhooks
            .rotate_secret(&request.into_inner().id)
            .await?;
        Ok(Response::new(RotateWebhookSecretResponse { secret }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>> {
        let r = request.into_inner();
        let (items, next_cursor) = self
            .webhooks
            .deliveries(&r.endpoint_id, r.limit, r.cursor.as_deref())
            .await?;
        Ok(Response::new(ListWebhookDeliveriesResponse {
            deliveries: items.iter().map(delivery).collect(),
            next_cursor,
        }))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<RedeliverWebhookRequest>,
    ) -> Result<Response<RedeliverWebhookResponse>> {
        let r = request.into_inner();
        let found = self
            .webhooks
            .redeliver(&r.endpoint_id, &r.delivery_id)
            .await?;
        Ok(Response::new(RedeliverWebhookResponse {
            delivery: Some(delivery(&found)),
        }))
    }
}
