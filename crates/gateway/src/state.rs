//! What every handler shares: the service channels and the authenticator.

use std::{sync::Arc, time::Duration};

use tenantry_common::{
    Config, RunError,
    grpc::{ClientChannel, PRINCIPAL_METADATA_KEY, connect},
};
use tenantry_proto::audit::v1::audit_service_client::AuditServiceClient;
use tenantry_proto::{
    entitlement::v1::{
        entitlement_service_client::EntitlementServiceClient,
        feature_flag_service_client::FeatureFlagServiceClient,
        feature_service_client::FeatureServiceClient, grant_service_client::GrantServiceClient,
        index_stream_service_client::IndexStreamServiceClient,
        metering_service_client::MeteringServiceClient, plan_service_client::PlanServiceClient,
        route_service_client::RouteServiceClient,
        vendor_snapshot_service_client::VendorSnapshotServiceClient,
        webhook_service_client::WebhookServiceClient,
    },
    tenant::v1::{
        hierarchy_service_client::HierarchyServiceClient,
        membership_service_client::MembershipServiceClient,
        migration_service_client::MigrationServiceClient,
        tenant_service_client::TenantServiceClient,
    },
};
use tonic::metadata::MetadataValue;

use crate::{
    auth::{Authenticator, Principal},
    coalesce::Checker,
};

/// Cheap to clone: channels are shared handles.
#[derive(Clone, Debug)]
pub struct AppState {
    pub tenant: ClientChannel,
    pub entitlement: ClientChannel,
    pub auth: Arc<Authenticator>,
    /// Entitlement checks, coalesced when they arrive together.
    pub checker: Checker,
    pub max_message_bytes: usize,
    /// How long readiness waits for a health answer.
    pub probe_timeout: Duration,
    /// Frontegg's `vendorId` on features, plans and flags (`credentials::vendor_id`).
    pub vendor_id: Arc<str>,
    /// Permits for concurrent SSE entitlement streams (`sse_max_streams`).
    pub sse_streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// Builds the state; starts the check-coalescing task, so it needs a running runtime.
    pub fn from_config(config: &Config) -> Result<Self, RunError> {
        let ca = config.tls_ca_path.as_ref();
        let token = config.service_token.as_ref();
        let entitlement = connect(
            &config.entitlement_endpoint(),
            ca,
            token,
            config.request_timeout(),
        )?;
        let checks = EntitlementServiceClient::new(entitlement.clone())
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes);
        Ok(Self {
            tenant: connect(
                &config.tenant_endpoint(),
                ca,
                token,
                config.request_timeout(),
            )?,
            entitlement,
            auth: Arc::new(Authenticator::from_config(config)?),
            checker: Checker::new(checks, config.check_coalesce_max),
            max_message_bytes: config.max_message_bytes,
            probe_timeout: Duration::from_secs(2).min(config.request_timeout()),
            vendor_id: crate::credentials::vendor_id(config)?.into(),
            sse_streams: Arc::new(tokio::sync::Semaphore::new(config.sse_max_streams)),
        })
    }
}

macro_rules! client {
    ($name:ident, $client:ident, $channel:ident) => {
        pub fn $name(&self) -> $client<ClientChannel> {
            $client::new(self.$channel.clone())
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes)
        }
    };
}

impl AppState {
    client!(tenants, TenantServiceClient, tenant);
    client!(hierarchy, HierarchyServiceClient, tenant);
    client!(memberships, MembershipServiceClient, tenant);
    client!(migrations, MigrationServiceClient, tenant);
    client!(features, FeatureServiceClient, entitlement);
    client!(plans, PlanServiceClient, entitlement);
    client!(flags, FeatureFlagServiceClient, entitlement);
    client!(routes, RouteServiceClient, entitlement);
    client!(grants, GrantServiceClient, entitlement);
    client!(checks, EntitlementServiceClient, entitlement);
    client!(vendor_snapshots, VendorSnapshotServiceClient, entitlement);
    client!(index_stream, IndexStreamServiceClient, entitlement);
    client!(audit_tenant, AuditServiceClient, tenant);
    client!(audit_entitlement, AuditServiceClient, entitlement);
    client!(webhooks, WebhookServiceClient, entitlement);
    client!(metering, MeteringServiceClient, entitlement);
}

/// A gRPC request carrying the authenticated principal (trace context and the service token
/// are added by the channel's interceptor).
pub fn grpc<T>(principal: &Principal, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = MetadataValue::try_from(principal.metadata_value()) {
        request.metadata_mut().insert(PRINCIPAL_METADATA_KEY, value);
    }
    request
}
