//! `spawn_app()`: a fresh database, the real migrator, the real server on port 0, and clients.

use std::time::Duration;

use tenantry_common::{
    CancellationToken, Config, RunError, Secret, grpc::bind, telemetry, testing,
};
use tenantry_proto::tenant::v1::{
    self as pb, change_feed_service_client::ChangeFeedServiceClient,
    hierarchy_service_client::HierarchyServiceClient,
    membership_service_client::MembershipServiceClient,
    migration_service_client::MigrationServiceClient, tenant_service_client::TenantServiceClient,
};
use tokio::task::JoinHandle;
use tonic::{Code, Status, transport::Channel};

pub struct TestApp {
    pub config: Config,
    pub channel: Channel,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), RunError>>,
    /// Keeps a SQLite database's directory alive.
    dir: Option<TempDir>,
}

type TempDir = std::sync::Arc<tempfile::TempDir>;

fn config_for(url: String) -> Config {
    Config {
        tenant_database_url: Some(Secret::new(url)),
        tenant_grpc_addr: ([127, 0, 0, 1], 0).into(),
        shutdown_grace_ms: 3_000,
        db_max_connections: 20,
        ..Config::default()
    }
}

/// A fresh PostgreSQL database with the tenant service serving it.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let url = testing::postgres().create_database().await;
    let mut config = config_for(url);
    adjust(&mut config);
    start(config, None).await
}

/// The tenant service on an existing database (migrated to the latest on start).
pub async fn spawn_app_on(url: String) -> TestApp {
    start(config_for(url), None).await
}

/// The same on a fresh SQLite file.
pub async fn spawn_sqlite_app() -> TestApp {
    spawn_sqlite_app_with(|_| {}).await
}

pub async fn spawn_sqlite_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let (dir, url) = testing::sqlite();
    let mut config = config_for(url);
    adjust(&mut config);
    start(config, Some(std::sync::Arc::new(dir))).await
}

/// The tenant service on the SQLite database at `url` (whose directory the caller keeps).
pub async fn spawn_sqlite_app_at(url: String) -> TestApp {
    start(config_for(url), None).await
}

async fn start(config: Config, dir: Option<TempDir>) -> TestApp {
    telemetry::init_for_tests();
    tenantry_tenant::migrate(&config)
        .await
        .expect("migrations apply");
    let listener = bind(config.tenant_grpc_addr).await.expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let server = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { tenantry_tenant::serve(&config, listener, shutdown).await })
    };
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the tenant service");
    TestApp {
        config,
        channel,
        shutdown,
        server,
        dir,
    }
}

impl TestApp {
    pub fn tenants(&self) -> TenantServiceClient<Channel> {
        TenantServiceClient::new(self.channel.clone())
    }

    pub fn hierarchy(&self) -> HierarchyServiceClient<Channel> {
        HierarchyServiceClient::new(self.channel.clone())
    }

    pub fn memberships(&self) -> MembershipServiceClient<Channel> {
        MembershipServiceClient::new(self.channel.clone())
    }

    pub fn migrations(&self) -> MigrationServiceClient<Channel> {
        MigrationServiceClient::new(self.channel.clone())
    }

    pub fn feed(&self) -> ChangeFeedServiceClient<Channel> {
        ChangeFeedServiceClient::new(self.channel.clone())
    }

    /// Stops the server (as on SIGTERM) and returns its configuration, to start another
    /// server on the same database.
    pub async fn stop(self) -> (Config, Option<TempDir>) {
        self.shutdown.cancel();
        drop(self.channel);
        tokio::time::timeout(Duration::from_secs(15), self.server)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server ends cleanly");
        (self.config, self.dir)
    }

    /// A new server on the database of a stopped one.
    pub async fn restart((config, dir): (Config, Option<TempDir>)) -> TestApp {
        start(config, dir).await
    }

    pub async fn create(&self, tenant_id: &str, name: &str) -> pb::Account {
        self.tenants()
            .create_account(pb::CreateAccountRequest {
                account: Some(pb::NewAccount {
                    tenant_id: Some(tenant_id.to_owned()),
                    name: name.to_owned(),
                    ..pb::NewAccount::default()
                }),
                idempotency_key: None,
            })
            .await
            .unwrap_or_else(|s| panic!("create {tenant_id}: {s:?}"))
            .into_inner()
            .account
            .expect("account in response")
    }

    pub async fn get(&self, tenant_id: &str) -> Result<pb::Account, Status> {
        self.tenants()
            .get_account(pb::GetAccountRequest {
                tenant_id: tenant_id.to_owned(),
            })
            .await
            .map(|r| r.into_inner().account.expect("account"))
    }

    pub async fn attach(&self, parent: &str, child: &str) -> Result<pb::Account, Status> {
        self.hierarchy()
            .attach_sub_account(pb::AttachSubAccountRequest {
                parent_tenant_id: parent.to_owned(),
                child_tenant_id: child.to_owned(),
                idempotency_key: None,
            })
            .await
            .map(|r| r.into_inner().child.expect("child"))
    }

    pub async fn delete(&self, tenant_id: &str) -> pb::DeleteAccountResponse {
        self.tenants()
            .delete_account(pb::DeleteAccountRequest {
                tenant_id: tenant_id.to_owned(),
                expected_parent_tenant_id: None,
            })
            .await
            .unwrap_or_else(|s| panic!("delete {tenant_id}: {s:?}"))
            .into_inner()
    }
}

/// The `reason` of the ErrorDetails a status carries.
pub fn reason(status: &Status) -> String {
    use prost::Message;
    tenantry_proto::common::v1::ErrorDetails::decode(status.details())
        .map(|d| d.reason)
        .unwrap_or_default()
}

/// The field violations of an INVALID_ARGUMENT.
pub fn violated_fields(status: &Status) -> Vec<String> {
    use prost::Message;
    tenantry_proto::common::v1::ErrorDetails::decode(status.details())
        .map(|d| d.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Asserts the call failed with `code` (and never INTERNAL).
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got success: {v:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}
