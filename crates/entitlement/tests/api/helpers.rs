//! `spawn_app()`: a fresh database, both services on port 0, clients and a manual clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use prost::Message;
use tenantry_common::{CancellationToken, Config, Secret, grpc::bind, testing};
use tenantry_entitlement::clock::ManualClock;
use tenantry_proto::common::v1::ErrorDetails;
use tenantry_proto::entitlement::v1::{
    self as pb, entitlement_service_client::EntitlementServiceClient,
    feature_flag_service_client::FeatureFlagServiceClient,
    feature_service_client::FeatureServiceClient, grant_service_client::GrantServiceClient,
    plan_service_client::PlanServiceClient, route_service_client::RouteServiceClient,
};
use tenantry_proto::tenant::v1::{
    CreateAccountRequest, DeleteAccountRequest, NewAccount,
    tenant_service_client::TenantServiceClient,
};
use tonic::transport::Channel;

pub struct App {
    pub features: FeatureServiceClient<Channel>,
    pub plans: PlanServiceClient<Channel>,
    pub flags: FeatureFlagServiceClient<Channel>,
    pub routes: RouteServiceClient<Channel>,
    pub grants: GrantServiceClient<Channel>,
    pub checks: EntitlementServiceClient<Channel>,
    pub tenants: TenantServiceClient<Channel>,
    /// The entitlement service's channel (health, raw calls).
    pub channel: Channel,
    pub clock: ManualClock,
    pub config: Config,
    pub shutdown: CancellationToken,
    /// The entitlement server's task (it ends once its followers have stopped).
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn start_time() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

async fn channel(url: &str) -> Channel {
    for _ in 0..100 {
        if let Ok(c) = Channel::from_shared(url.to_owned())
            .unwrap()
            .connect()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service at {url} did not come up");
}

/// Starts the tenant service (unless `tenant_url` points at one already) and an entitlement
/// service on `config`'s databases.
async fn start(
    mut config: Config,
    tenant_url: Option<String>,
    dir: Option<tempfile::TempDir>,
) -> App {
    tenantry_common::telemetry::init_for_tests();
    let shutdown = CancellationToken::new();
    let tenant_url = match tenant_url {
        Some(url) => url,
        None => {
            let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let (c, s) = (config.clone(), shutdown.clone());
            tokio::spawn(async move { tenantry_tenant::serve(&c, listener, s).await });
            url
        }
    };
    config.tenant_service_url = Some(tenant_url.clone());
    let clock = ManualClock::new(start_time());
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = {
        let (c, s, clock) = (config.clone(), shutdown.clone(), clock.clone());
        tokio::spawn(async move {
            if let Err(err) =
                tenantry_entitlement::serve_with_clock(&c, listener, s, Arc::new(clock)).await
            {
                panic!("entitlement service failed: {err}");
            }
        })
    };
    let ch = channel(&url).await;
    let tenant = channel(&tenant_url).await;
    App {
        features: FeatureServiceClient::new(ch.clone()),
        plans: PlanServiceClient::new(ch.clone()),
        flags: FeatureFlagServiceClient::new(ch.clone()),
        routes: RouteServiceClient::new(ch.clone()),
        grants: GrantServiceClient::new(ch.clone()),
        checks: EntitlementServiceClient::new(ch.clone()),
        channel: ch,
        tenants: TenantServiceClient::new(tenant),
        clock,
        config,
        shutdown,
        server: Some(server),
        _dir: dir,
    }
}

/// The tenant service alone on `config`'s database, until `shutdown`; returns its URL.
pub async fn spawn_tenant(config: &Config, shutdown: &CancellationToken) -> String {
    tenantry_common::telemetry::init_for_tests();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (c, s) = (config.clone(), shutdown.clone());
    tokio::spawn(async move { tenantry_tenant::serve(&c, listener, s).await });
    url
}

/// Both services on `config`'s databases (prepared by the caller).
pub async fn spawn_on(config: Config) -> App {
    start(config, None, None).await
}

/// SQLite files for both services in a fresh directory: the config and the directory (kept
/// by the caller until the app is spawned on it).
pub fn sqlite_config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        entitlement_database_url: Some(Secret::new(tenantry_common::config::sqlite_url(
            &dir.path().join("entitlement.db"),
        ))),
        tenant_database_url: Some(Secret::new(tenantry_common::config::sqlite_url(
            &dir.path().join("tenant.db"),
        ))),
        ..Config::default()
    };
    (config, dir)
}

/// An entitlement service following the tenant service at `tenant_url`.
pub async fn spawn_with_tenant(config: Config, tenant_url: String) -> App {
    start(config, Some(tenant_url), None).await
}

pub async fn pg_config() -> Config {
    let url = testing::postgres().create_database().await;
    Config {
        entitlement_database_url: Some(Secret::new(url.clone())),
        tenant_database_url: Some(Secret::new(url)),
        ..Config::default()
    }
}

/// PostgreSQL: a fresh database, the real tenant service in its own schema.
pub async fn spawn_app() -> App {
    start(pg_config().await, None, None).await
}

/// A second entitlement replica on the same database and tenant service.
pub async fn spawn_replica(of: &App) -> App {
    start(
        of.config.clone(),
        of.config.tenant_service_url.clone(),
        None,
    )
    .await
}

/// SQLite files for both services.
pub async fn spawn_sqlite_app() -> App {
    let (config, dir) = sqlite_config();
    start(config, None, Some(dir)).await
}

/// SQLite files for both services in `dir`, which the caller keeps (and may restart on).
pub async fn spawn_sqlite_app_in(dir: &std::path::Path) -> App {
    let config = Config {
        data_dir: dir.to_owned(),
        entitlement_database_url: Some(Secret::new(tenantry_common::config::sqlite_url(
            &dir.join("entitlement.db"),
        ))),
        tenant_database_url: Some(Secret::new(tenantry_common::config::sqlite_url(
            &dir.join("tenant.db"),
        ))),
        ..Config::default()
    };
    start(config, None, None).await
}

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn details(status: &tonic::Status) -> ErrorDetails {
    ErrorDetails::decode(status.details()).expect("error details")
}

impl App {
    /// Stops the entitlement service (as on SIGTERM) and waits until it has: its feed
    /// follower applies nothing more.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("entitlement service stops")
                .expect("entitlement service task");
        }
    }

    pub async fn account(&self, id: &str, parent: Option<&str>) {
        self.tenants
            .clone()
            .create_account(CreateAccountRequest {
                account: Some(NewAccount {
                    tenant_id: Some(id.to_owned()),
                    name: format!("{id} inc"),
                    parent_tenant_id: parent.map(str::to_owned),
                    ..NewAccount::default()
                }),
                idempotency_key: None,
            })
            .await
            .expect("create account");
    }

    pub async fn delete_account(&self, id: &str) {
        self.tenants
            .clone()
            .delete_account(DeleteAccountRequest {
                tenant_id: id.to_owned(),
                expected_parent_tenant_id: None,
            })
            .await
            .expect("delete account");
    }

    pub async fn feature(
        &self,
        key: &str,
        ty: pb::AllocationType,
        merge: pb::MergePolicy,
        perms: &[&str],
    ) -> pb::Feature {
        self.features
            .clone()
            .create_feature(pb::CreateFeatureRequest {
                key: key.into(),
                name: key.into(),
                allocation_type: ty as i32,
                merge_policy: merge as i32,
                permissions: perms
                    .iter()
                    .map(|p| pb::FeaturePermission {
                        permission_key: (*p).into(),
                        permission_id: None,
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("create feature")
            .into_inner()
            .feature
            .unwrap()
    }

    pub async fn bool_feature(&self, key: &str) -> pb::Feature {
        self.feature(
            key,
            pb::AllocationType::Bool,
            pb::MergePolicy::Unspecified,
            &[],
        )
        .await
    }

    pub async fn plan(
        &self,
        key: &str,
        features: Vec<pb::PlanFeatureInput>,
        inherit: bool,
    ) -> pb::Plan {
        self.plans
            .clone()
            .create_plan(pb::CreatePlanRequest {
                key: Some(key.into()),
                name: key.into(),
                features,
                inherit_to_sub_accounts: inherit,
                ..Default::default()
            })
            .await
            .expect("create plan")
            .into_inner()
            .plan
            .unwrap()
    }

    pub async fn grant(
        &self,
        plan: &pb::Plan,
        tenant: &str,
        user: Option<&str>,
        starts: Option<DateTime<Utc>>,
        expires: Option<DateTime<Utc>>,
    ) -> (pb::Grant, u64) {
        let r = self
            .grants
            .clone()
            .create_grant(pb::CreateGrantRequest {
                grant: Some(pb::NewGrant {
                    plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
                    tenant_id: tenant.into(),
                    user_id: user.map(Into::into),
                    starts_at: starts.map(ts),
                    expires_at: expires.map(ts),
                    ..Default::default()
                }),
                idempotency_key: None,
            })
            .await
            .expect("create grant")
            .into_inner();
        (r.grant.unwrap(), r.revision)
    }

    /// `BatchCreateGrants` without an idempotency key.
    pub async fn batch_create(
        &self,
        grants: Vec<pb::NewGrant>,
    ) -> Result<pb::BatchCreateGrantsResponse, tonic::Status> {
        self.grants
            .clone()
            .batch_create_grants(pb::BatchCreateGrantsRequest {
                grants,
                idempotency_key: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Checks a feature for an account (or user) at `at` (None = the service's clock).
    pub async fn check(
        &self,
        tenant: &str,
        user: Option<&str>,
        target: pb::entitlement_query::Target,
        at: Option<DateTime<Utc>>,
        min_revision: u64,
    ) -> Result<pb::EntitlementDecision, tonic::Status> {
        self.check_with(tenant, user, &[], None, target, at, None, min_revision)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn check_with(
        &self,
        tenant: &str,
        user: Option<&str>,
        permissions: &[&str],
        attributes: Option<serde_json::Value>,
        target: pb::entitlement_query::Target,
        at: Option<DateTime<Utc>>,
        requested: Option<u64>,
        min_revision: u64,
    ) -> Result<pb::EntitlementDecision, tonic::Status> {
        let attributes = attributes.map(|v| serde_json_to_struct(&v).unwrap_or_default());
        self.checks
            .clone()
            .is_entitled_to(pb::IsEntitledToRequest {
                query: Some(pb::EntitlementQuery {
                    subject: Some(pb::Subject {
                        tenant_id: tenant.into(),
                        user_id: user.map(Into::into),
                        permissions: permissions.iter().map(|p| (*p).into()).collect(),
                        attributes,
                    }),
                    target: Some(target),
                    at: at.map(ts),
                    requested_amount: requested,
                }),
                min_revision,
            })
            .await
            .map(|r| r.into_inner().decision.unwrap())
    }

    /// Waits (polling) until `f` holds, for feed-driven effects.
    pub async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for: {what}");
    }
}

pub fn feature_target(key: &str) -> pb::entitlement_query::Target {
    pb::entitlement_query::Target::FeatureKey(key.into())
}

pub fn bare(key: &str) -> pb::PlanFeatureInput {
    pb::PlanFeatureInput {
        feature_key: key.into(),
        allocation: None,
    }
}

pub fn count(key: &str, n: u64) -> pb::PlanFeatureInput {
    pb::PlanFeatureInput {
        feature_key: key.into(),
        allocation: Some(pb::Allocation {
            kind: Some(pb::allocation::Kind::MaxCountAllocation(
                pb::MaxCountAllocation {
                    value: n,
                    unlimited: false,
                },
            )),
        }),
    }
}

pub fn justification(d: &pb::EntitlementDecision) -> pb::Justification {
    pb::Justification::try_from(d.justification).unwrap()
}

pub fn serde_json_to_struct(v: &serde_json::Value) -> Option<prost_types::Struct> {
    fn value(v: &serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        prost_types::Value {
            kind: Some(match v {
                serde_json::Value::Null => Kind::NullValue(0),
                serde_json::Value::Bool(b) => Kind::BoolValue(*b),
                serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
                serde_json::Value::String(s) => Kind::StringValue(s.clone()),
                serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                    values: a.iter().map(value).collect(),
                }),
                serde_json::Value::Object(_) => Kind::StructValue(serde_json_to_struct(v).unwrap()),
            }),
        }
    }
    match v {
        serde_json::Value::Object(o) => Some(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
        }),
        serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Number(_)
        | serde_json::Value::String(_)
        | serde_json::Value::Array(_) => None,
    }
}
