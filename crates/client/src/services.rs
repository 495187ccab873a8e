//! Typed clients for every Tenantry gRPC service.
//!
//! Each unary method takes the generated request message and returns the response message.
//! A call runs within the client's deadline (every attempt and every wait between attempts),
//! carries the service token and the caller's trace context, and is retried as [`RetryPolicy`]
//! allows: reads always, writes only when they carry an `idempotency_key`. Streaming methods
//! (the tenant change feed, migration uploads) are reached through `raw()`, the generated
//! client over the same channel.

use std::{future::Future, path::PathBuf, time::Duration};

use tenantry_common::{
    Secret,
    grpc::{ClientChannel, ConnectError, connect},
};
use tenantry_proto::{
    entitlement::v1::{
        self as entitlement_pb, entitlement_service_client::EntitlementServiceClient,
        feature_flag_service_client::FeatureFlagServiceClient,
        feature_service_client::FeatureServiceClient, grant_service_client::GrantServiceClient,
        plan_service_client::PlanServiceClient, route_service_client::RouteServiceClient,
    },
    tenant::v1::{
        self as tenant_pb, change_feed_service_client::ChangeFeedServiceClient,
        hierarchy_service_client::HierarchyServiceClient,
        membership_service_client::MembershipServiceClient,
        migration_service_client::MigrationServiceClient,
        tenant_service_client::TenantServiceClient,
    },
};
use tokio::time::Instant;

use crate::retry::{RetryPolicy, Safety};

/// How the clients reach and call the services.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent as `authorization: Bearer …` on every call (the services' `TENANTRY_SERVICE_TOKEN`).
    pub service_token: Option<Secret>,
    /// PEM bundle trusted for `https://` URLs; the system roots are not used without one.
    pub ca_path: Option<PathBuf>,
    /// How long one call may take in all, retries included.
    pub deadline: Duration,
    pub retry: RetryPolicy,
    /// The largest message sent or accepted (the services' `TENANTRY_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            service_token: None,
            ca_path: None,
            deadline: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_message_bytes: 16 << 20,
        }
    }
}

impl ClientConfig {
    pub fn with_service_token(mut self, token: impl Into<String>) -> Self {
        self.service_token = Some(Secret::new(token));
        self
    }

    pub fn with_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_path = Some(path.into());
        self
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// A lazily connecting channel to `url` (`http://` or `https://`): building it never
    /// blocks, and calls made while the service is down fail (and are retried) as outages.
    pub(crate) fn channel(&self, url: &str) -> Result<ClientChannel, ConnectError> {
        // The channel's own timeout only bounds waiting for response headers; the per-call
        // deadline below is the one that counts, so this is just a generous backstop.
        let backstop = self.deadline.max(Duration::from_secs(60));
        connect(
            url,
            self.ca_path.as_ref(),
            self.service_token.as_ref(),
            backstop,
        )
    }
}

/// Runs one call under the deadline and retry policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calls {
    pub(crate) retry: RetryPolicy,
    pub(crate) deadline: Duration,
}

impl Calls {
    pub(crate) async fn run<Req, Resp, F, Fut>(
        &self,
        safety: Safety,
        request: Req,
        mut send: F,
    ) -> Result<Resp, tonic::Status>
    where
        Req: Clone,
        F: FnMut(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.deadline;
        let attempt_once = |message: Req, send: &mut F| {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut request = tonic::Request::new(message);
            // Tells the service how long the caller waits (grpc-timeout), so it gives up too.
            request.set_timeout(remaining);
            let call = send(request);
            async move {
                match tokio::time::timeout(remaining, call).await {
                    Ok(result) => result.map(tonic::Response::into_inner),
                    Err(_) => Err(tonic::Status::deadline_exceeded(
                        "the call's deadline passed before the service answered",
                    )),
                }
            }
        };
        if safety == Safety::Once || self.retry.max_attempts <= 1 {
            return attempt_once(request, &mut send).await;
        }
        let mut attempt = 1;
        loop {
            let status = match attempt_once(request.clone(), &mut send).await {
                Ok(response) => return Ok(response),
                Err(status) => status,
            };
            if !self.retry.should_retry(safety, &status, attempt) {
                return Err(status);
            }
            let wait = self.retry.backoff(attempt);
            // A retry that cannot start before the deadline would only turn the real failure
            // into a deadline.
            if Instant::now() + wait >= deadline {
                return Err(status);
            }
            tracing::debug!(
                attempt,
                code = ?status.code(),
                wait_ms = wait.as_millis(),
                "retrying a failed call"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

macro_rules! safety {
    (read, $request:ident) => {
        Safety::Idempotent
    };
    (keyed, $request:ident) => {
        if $request.idempotency_key.is_some() {
            Safety::Keyed
        } else {
            Safety::Once
        }
    };
    (once, $request:ident) => {
        Safety::Once
    };
}

macro_rules! service_client {
    (
        $(#[$doc:meta])*
        $name:ident wraps $stub:ident from $pb:ident {
            $( $method:ident($req:ident) -> $resp:ident: $safety:ident; )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            inner: $stub<ClientChannel>,
            calls: Calls,
        }

        impl $name {
            pub(crate) fn new(channel: ClientChannel, config: &ClientConfig) -> Self {
                Self {
                    inner: $stub::new(channel)
                        .max_decoding_message_size(config.max_message_bytes)
                        .max_encoding_message_size(config.max_message_bytes),
                    calls: Calls { retry: config.retry, deadline: config.deadline },
                }
            }

            /// The generated client on the same channel: streaming methods, or calls that
            /// manage their own deadline and retries.
            pub fn raw(&self) -> $stub<ClientChannel> {
                self.inner.clone()
            }

            /// This client with another deadline for each call (retries included).
            pub fn with_deadline(&self, deadline: Duration) -> Self {
                let mut client = self.clone();
                client.calls.deadline = deadline;
                client
            }

            /// This client with another retry policy.
            pub fn with_retry(&self, retry: RetryPolicy) -> Self {
                let mut client = self.clone();
                client.calls.retry = retry;
                client
            }

            $(
                #[doc = concat!("`", stringify!($method), "`: retried ", safety_doc!($safety), ".")]
                pub async fn $method(
                    &self,
                    request: $pb::$req,
                ) -> Result<$pb::$resp, tonic::Status> {
                    let safety = safety!($safety, request);
                    let inner = &self.inner;
                    self.calls
                        .run(safety, request, |request| {
                            let mut client = inner.clone();
                            async move { client.$method(request).await }
                        })
                        .await
                }
            )*
        }
    };
}

macro_rules! safety_doc {
    (read) => {
        "on outages (a read)"
    };
    (keyed) => {
        "on outages when it carries an `idempotency_key`, never without one"
    };
    (once) => {
        "never (a write without an idempotency key)"
    };
}

service_client! {
    /// `tenantry.tenant.v1.TenantService`: accounts, their metadata and settings.
    AccountsClient wraps TenantServiceClient from tenant_pb {
        create_account(CreateAccountRequest) -> CreateAccountResponse: keyed;
        get_account(GetAccountRequest) -> GetAccountResponse: read;
        get_account_by_alias(GetAccountByAliasRequest) -> GetAccountByAliasResponse: read;
        batch_get_accounts(BatchGetAccountsRequest) -> BatchGetAccountsResponse: read;
        list_accounts(ListAccountsRequest) -> ListAccountsResponse: read;
        update_account(UpdateAccountRequest) -> UpdateAccountResponse: once;
        delete_account(DeleteAccountRequest) -> DeleteAccountResponse: once;
        delete_current_account(DeleteCurrentAccountRequest) -> DeleteCurrentAccountResponse: once;
        add_account_metadata(AddAccountMetadataRequest) -> AddAccountMetadataResponse: once;
        delete_account_metadata(DeleteAccountMetadataRequest) -> DeleteAccountMetadataResponse: once;
        get_account_settings(GetAccountSettingsRequest) -> GetAccountSettingsResponse: read;
        update_account_settings(UpdateAccountSettingsRequest) -> UpdateAccountSettingsResponse: once;
        get_public_account_settings(GetPublicAccountSettingsRequest) -> GetPublicAccountSettingsResponse: read;
    }
}

service_client! {
    /// `tenantry.tenant.v1.HierarchyService`: sub-accounts and hierarchy settings.
    HierarchyClient wraps HierarchyServiceClient from tenant_pb {
        create_sub_account(CreateSubAccountRequest) -> CreateSubAccountResponse: keyed;
        attach_sub_account(AttachSubAccountRequest) -> AttachSubAccountResponse: keyed;
        detach_sub_account(DetachSubAccountRequest) -> DetachSubAccountResponse: once;
        list_descendants(ListDescendantsRequest) -> ListDescendantsResponse: read;
        list_ancestors(ListAncestorsRequest) -> ListAncestorsResponse: read;
        get_subtree(GetSubtreeRequest) -> GetSubtreeResponse: read;
        update_sub_account_management(UpdateSubAccountManagementRequest) -> UpdateSubAccountManagementResponse: once;
        get_hierarchy_settings(GetHierarchySettingsRequest) -> GetHierarchySettingsResponse: read;
        update_hierarchy_settings(UpdateHierarchySettingsRequest) -> UpdateHierarchySettingsResponse: once;
        check_sub_account_scope(CheckSubAccountScopeRequest) -> CheckSubAccountScopeResponse: read;
    }
}

service_client! {
    /// `tenantry.tenant.v1.MembershipService`: which users belong to which accounts.
    MembershipsClient wraps MembershipServiceClient from tenant_pb {
        add_membership(AddMembershipRequest) -> AddMembershipResponse: keyed;
        remove_membership(RemoveMembershipRequest) -> RemoveMembershipResponse: once;
        list_account_members(ListAccountMembersRequest) -> ListAccountMembersResponse: read;
        list_user_accounts(ListUserAccountsRequest) -> ListUserAccountsResponse: read;
    }
}

service_client! {
    /// `tenantry.tenant.v1.MigrationService`: bulk imports. `SubmitMigration` is a client
    /// stream: send it through `raw()`, with an `idempotency_key` in its first message.
    MigrationsClient wraps MigrationServiceClient from tenant_pb {
        get_migration_status(GetMigrationStatusRequest) -> GetMigrationStatusResponse: read;
    }
}

service_client! {
    /// `tenantry.tenant.v1.ChangeFeedService`: the tenant change feed. Both methods are
    /// server streams: use `raw()` (`watch_changes` resumes from a cursor, `read_snapshot`
    /// resynchronises).
    ChangeFeedClient wraps ChangeFeedServiceClient from tenant_pb {}
}

service_client! {
    /// `tenantry.entitlement.v1.EntitlementService`: checks over the service's index. Pass a
    /// write's revision as `min_revision` to read your own writes on any replica.
    ChecksClient wraps EntitlementServiceClient from entitlement_pb {
        is_entitled_to(IsEntitledToRequest) -> IsEntitledToResponse: read;
        batch_is_entitled_to(BatchIsEntitledToRequest) -> BatchIsEntitledToResponse: read;
        get_account_entitlements(GetAccountEntitlementsRequest) -> GetAccountEntitlementsResponse: read;
        explain(ExplainRequest) -> ExplainResponse: read;
        what_if(WhatIfRequest) -> WhatIfResponse: read;
        get_revision(GetRevisionRequest) -> GetRevisionResponse: read;
    }
}

service_client! {
    /// `tenantry.entitlement.v1.FeatureService`.
    FeaturesClient wraps FeatureServiceClient from entitlement_pb {
        create_feature(CreateFeatureRequest) -> CreateFeatureResponse: keyed;
        get_feature(GetFeatureRequest) -> GetFeatureResponse: read;
        list_features(ListFeaturesRequest) -> ListFeaturesResponse: read;
        update_feature(UpdateFeatureRequest) -> UpdateFeatureResponse: once;
        delete_feature(DeleteFeatureRequest) -> DeleteFeatureResponse: once;
    }
}

service_client! {
    /// `tenantry.entitlement.v1.FeatureFlagService`.
    FlagsClient wraps FeatureFlagServiceClient from entitlement_pb {
        create_feature_flag(CreateFeatureFlagRequest) -> CreateFeatureFlagResponse: keyed;
        get_feature_flag(GetFeatureFlagRequest) -> GetFeatureFlagResponse: read;
        list_feature_flags(ListFeatureFlagsRequest) -> ListFeatureFlagsResponse: read;
        update_feature_flag(UpdateFeatureFlagRequest) -> UpdateFeatureFlagResponse: once;
        delete_feature_flag(DeleteFeatureFlagRequest) -> DeleteFeatureFlagResponse: once;
    }
}

service_client! {
    /// `tenantry.entitlement.v1.PlanService`.
    PlansClient wraps PlanServiceClient from entitlement_pb {
        create_plan(CreatePlanRequest) -> CreatePlanResponse: keyed;
        get_plan(GetPlanRequest) -> GetPlanResponse: read;
        list_plans(ListPlansRequest) -> ListPlansResponse: read;
        update_plan(UpdatePlanRequest) -> UpdatePlanResponse: once;
        delete_plan(DeletePlanRequest) -> DeletePlanResponse: once;
        list_plan_features(ListPlanFeaturesRequest) -> ListPlanFeaturesResponse: read;
        link_plan_features(LinkPlanFeaturesRequest) -> LinkPlanFeaturesResponse: once;
        unlink_plan_features(UnlinkPlanFeaturesRequest) -> UnlinkPlanFeaturesResponse: once;
        list_tenant_plans(ListTenantPlansRequest) -> ListTenantPlansResponse: read;
    }
}

service_client! {
    /// `tenantry.entitlement.v1.RouteService`.
    RoutesClient wraps RouteServiceClient from entitlement_pb {
        create_route(CreateRouteRequest) -> CreateRouteResponse: keyed;
        get_route(GetRouteRequest) -> GetRouteResponse: read;
        list_routes(ListRoutesRequest) -> ListRoutesResponse: read;
        update_route(UpdateRouteRequest) -> UpdateRouteResponse: once;
        delete_route(DeleteRouteRequest) -> DeleteRouteResponse: once;
    }
}

service_client! {
    /// `tenantry.entitlement.v1.GrantService`: grants of plans to accounts and users. Each
    /// write's response carries the revision to hand to a check's `min_revision`.
    GrantsClient wraps GrantServiceClient from entitlement_pb {
        create_grant(CreateGrantRequest) -> CreateGrantResponse: keyed;
        get_grant(GetGrantRequest) -> GetGrantResponse: read;
        list_grants(ListGrantsRequest) -> ListGrantsResponse: read;
        update_grant(UpdateGrantRequest) -> UpdateGrantResponse: once;
        delete_grant(DeleteGrantRequest) -> DeleteGrantResponse: once;
        revoke_grant(RevokeGrantRequest) -> RevokeGrantResponse: once;
        batch_create_grants(BatchCreateGrantsRequest) -> BatchCreateGrantsResponse: keyed;
        batch_update_grants(BatchUpdateGrantsRequest) -> BatchUpdateGrantsResponse: keyed;
        batch_delete_grants(BatchDeleteGrantsRequest) -> BatchDeleteGrantsResponse: keyed;
        list_user_grants(ListUserGrantsRequest) -> ListUserGrantsResponse: read;
    }
}

/// The tenant service's clients over one channel.
#[derive(Debug, Clone)]
pub struct TenantApi {
    channel: ClientChannel,
    config: ClientConfig,
}

impl TenantApi {
    /// Clients of the tenant service at `url` (e.g. `http://127.0.0.1:50051`). Connects
    /// lazily: this fails only on a malformed URL or unreadable TLS material.
    pub fn connect(url: &str, config: &ClientConfig) -> Result<Self, ConnectError> {
        Ok(Self {
            channel: config.channel(url)?,
            config: config.clone(),
        })
    }

    pub fn accounts(&self) -> AccountsClient {
        AccountsClient::new(self.channel.clone(), &self.config)
    }

    pub fn hierarchy(&self) -> HierarchyClient {
        HierarchyClient::new(self.channel.clone(), &self.config)
    }

    pub fn memberships(&self) -> MembershipsClient {
        MembershipsClient::new(self.channel.clone(), &self.config)
    }

    pub fn migrations(&self) -> MigrationsClient {
        MigrationsClient::new(self.channel.clone(), &self.config)
    }

    pub fn change_feed(&self) -> ChangeFeedClient {
        ChangeFeedClient::new(self.channel.clone(), &self.config)
    }
}

/// The entitlement service's clients over one channel.
#[derive(Debug, Clone)]
pub struct EntitlementApi {
    channel: ClientChannel,
    config: ClientConfig,
}

impl EntitlementApi {
    /// Clients of the entitlement service at `url` (e.g. `http://127.0.0.1:50052`). Connects
    /// lazily: this fails only on a malformed URL or unreadable TLS material.
    pub fn connect(url: &str, config: &ClientConfig) -> Result<Self, ConnectError> {
        Ok(Self {
            channel: config.channel(url)?,
            config: config.clone(),
        })
    }

    pub fn checks(&self) -> ChecksClient {
        ChecksClient::new(self.channel.clone(), &self.config)
    }

    pub fn features(&self) -> FeaturesClient {
        FeaturesClient::new(self.channel.clone(), &self.config)
    }

    pub fn flags(&self) -> FlagsClient {
        FlagsClient::new(self.channel.clone(), &self.config)
    }

    pub fn plans(&self) -> PlansClient {
        PlansClient::new(self.channel.clone(), &self.config)
    }

    pub fn routes(&self) -> RoutesClient {
        RoutesClient::new(self.channel.clone(), &self.config)
    }

    pub fn grants(&self) -> GrantsClient {
        GrantsClient::new(self.channel.clone(), &self.config)
    }

    /// The channel itself, for the evaluator's stream.
    pub(crate) fn channel(&self) -> ClientChannel {
        self.channel.clone()
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }
}
