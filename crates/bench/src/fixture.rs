//! The system under test: the real stack (tenant service, entitlement service, gateway as
//! separate processes, started by the e2e harness `tenantry_tests::Stack`) on the run's
//! PostgreSQL, pinned to the server CPUs, plus a catalog, accounts and grants created through
//! the services' own gRPC APIs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tenantry_common::{
    config::Secret,
    db::{self, DbSettings},
    grpc::{self, ClientChannel},
    testing,
};
use tenantry_proto::{
    entitlement::v1::{
        self as ent, AllocationType, BatchCreateGrantsRequest, BatchIsEntitledToRequest,
        CreateFeatureRequest, CreatePlanRequest, EntitlementQuery, Justification, NewGrant,
        PlanFeatureInput, Treatment, entitlement_query::Target,
        entitlement_service_client::EntitlementServiceClient,
        feature_service_client::FeatureServiceClient, grant_service_client::GrantServiceClient,
        new_grant::Plan as PlanRef, plan_service_client::PlanServiceClient,
    },
    tenant::v1::{CreateAccountRequest, NewAccount, tenant_service_client::TenantServiceClient},
};
use tenantry_tests::{SERVICE_TOKEN, Stack, StackOptions};

use crate::load::{self, Bounds};

/// Knobs of one run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub quick: bool,
    /// A/B pairs per measure (at least 5).
    pub pairs: usize,
    /// Requests in flight for throughput runs.
    pub concurrency: usize,
    /// Upper bound of one side of one pair, in time…
    pub run_time: Duration,
    /// …and in requests.
    pub run_requests: u64,
    /// `taskset -c` list for the service processes (`None`: not pinned).
    pub server_cpus: Option<String>,
    /// `taskset -c` list for this process (the load generator).
    pub client_cpus: Option<String>,
    /// Accounts created through the tenant service for B2–B6.
    pub accounts: usize,
    /// Plans granted to each account.
    pub grants_per_account: usize,
    /// Accounts seeded for B7.
    pub b7_accounts: u64,
    /// Grants seeded for B8.
    pub b8_grants: u64,
    /// Load per side of the soak (B9), after its warm-up.
    pub soak: Duration,
}

impl Settings {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            pairs: 5,
            concurrency: 16,
            run_time: if quick {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(5)
            },
            run_requests: if quick { 20_000 } else { 100_000 },
            server_cpus: None,
            client_cpus: None,
            accounts: if quick { 500 } else { 2_000 },
            grants_per_account: 3,
            b7_accounts: if quick { 100_000 } else { 1_000_000 },
            b8_grants: if quick { 200_000 } else { 1_000_000 },
            soak: Duration::from_secs(if quick { 30 } else { 60 }),
        }
    }

    pub fn bounds(&self) -> Bounds {
        Bounds {
            concurrency: self.concurrency,
            requests: self.run_requests,
            duration: self.run_time,
        }
    }
}

pub const FEATURES: usize = 20;
pub const PLANS: usize = 10;
pub const FEATURES_PER_PLAN: usize = 5;
/// The user of every user token and user-level check.
pub const USER_ID: &str = "bench-user";

pub use tenantry_entitlement::domain::synthetic::Lcg;

pub fn feature_key(i: usize) -> String {
    format!("bench-feature-{i:02}")
}

pub fn plan_key(i: usize) -> String {
    format!("bench-plan-{i}")
}

pub fn account_id(i: usize) -> String {
    format!("bench-acct-{i:06}")
}

/// The features of plan `p`: `FEATURES_PER_PLAN` distinct ones.
pub fn plan_features(p: usize) -> Vec<usize> {
    (0..FEATURES_PER_PLAN)
        .map(|j| (p + 4 * j) % FEATURES)
        .collect()
}

/// The running stack and what was created in it.
pub struct Fixture {
    pub settings: Settings,
    pub stack: Stack,
    pub entitlement_url: String,
    pub tenant_url: String,
    pub entitlement: ClientChannel,
    pub tenant: ClientChannel,
    /// Superuser connection to the stack's database (seeding, EXPLAIN, backend PIDs).
    pub admin: DatabaseConnection,
    pub accounts: Vec<String>,
    /// `(tenant, feature key)` pairs checks cycle through; about half are entitled.
    pub checks: Vec<(String, String)>,
    /// Extra service processes (replicas) whose CPU counts as server CPU.
    pub extra_pids: Vec<u32>,
}

fn grpc_url(stack: &Stack, process: &tenantry_tests::Process, key: &str) -> Result<String> {
    let _ = stack;
    let addr = process
        .env(key)
        .with_context(|| format!("{} has no {key}", process.name()))?;
    Ok(format!("http://{addr}"))
}

/// A client channel with the service token, as the gateway has.
pub fn channel(url: &str) -> Result<ClientChannel> {
    Ok(grpc::connect(
        url,
        None,
        Some(&Secret::new(SERVICE_TOKEN)),
        Duration::from_secs(30),
    )?)
}

impl Fixture {
    /// Starts the stack and creates the catalog, accounts and grants.
    pub async fn start(settings: Settings) -> Result<Self> {
        let server_cpus = settings.server_cpus.clone();
        let stack =
            Stack::start_configured(testing::postgres(), StackOptions::default(), |process| {
                process.set_cpu_list(server_cpus.as_deref());
                // Per-request logs would measure the logger; warnings still reach the logs.
                process.set_env("TENANTRY_LOG_LEVEL", "warn");
                // The gateway's per-principal rate limit must not cap the load generator.
                process.set_env("TENANTRY_RATE_LIMIT_PER_SECOND", "1000000");
                process.set_env("TENANTRY_RATE_LIMIT_BURST", "1000000");
            })
            .await;
        let entitlement_url =
            grpc_url(&stack, &stack.entitlement, "TENANTRY_ENTITLEMENT_GRPC_ADDR")?;
        let tenant_url = grpc_url(&stack, &stack.tenant, "TENANTRY_TENANT_GRPC_ADDR")?;
        let admin = Database::connect(stack.admin_db_url.clone()).await?;
        let mut fixture = Self {
            entitlement: channel(&entitlement_url)?,
            tenant: channel(&tenant_url)?,
            entitlement_url,
            tenant_url,
            admin,
            accounts: Vec::new(),
            checks: Vec::new(),
            extra_pids: Vec::new(),
            stack,
            settings,
        };
        fixture.seed().await?;
        Ok(fixture)
    }

    /// The service processes' PIDs (tenant, entitlement, gateway, replicas).
    pub fn service_pids(&self) -> Vec<u32> {
        [
            &self.stack.tenant,
            &self.stack.entitlement,
            &self.stack.gateway,
        ]
        .iter()
        .filter_map(|p| p.pid())
        .chain(self.extra_pids.iter().copied())
        .collect()
    }

    /// Every server-side process: the services and the PostgreSQL backends serving this
    /// stack's database. CPU per request counts all of them, for A and B alike.
    pub async fn server_pids(&self) -> Result<Vec<u32>> {
        let mut pids = self.service_pids();
        pids.extend(self.backend_pids().await?);
        Ok(pids)
    }

    /// PostgreSQL backends connected to this stack's database (except the admin session).
    pub async fn backend_pids(&self) -> Result<Vec<u32>> {
        let rows = self
            .admin
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pid FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let pid: i32 = r.try_get("", "pid")?;
                Ok(u32::try_from(pid).unwrap_or_default())
            })
            .collect()
    }

    /// A connection to the entitlement schema as the entitlement service's own role.
    pub async fn entitlement_db(&self, max_connections: u32) -> Result<DatabaseConnection> {
        Ok(db::connect(&DbSettings {
            url: self.stack.entitlement_db_url.clone(),
            schema: "entitlement".into(),
            max_connections,
            acquire_timeout: Duration::from_secs(30),
            application_name: "tenantry-bench".into(),
        })
        .await?)
    }

    /// A connection to the tenant schema as the tenant service's own role.
    pub async fn tenant_db(&self, max_connections: u32) -> Result<DatabaseConnection> {
        Ok(db::connect(&DbSettings {
            url: self.stack.tenant_db_url.clone(),
            schema: "tenant".into(),
            max_connections,
            acquire_timeout: Duration::from_secs(30),
            application_name: "tenantry-bench".into(),
        })
        .await?)
    }

    pub fn checks_client(&self) -> EntitlementServiceClient<ClientChannel> {
        EntitlementServiceClient::new(self.entitlement.clone())
    }

    pub fn grants_client(&self) -> GrantServiceClient<ClientChannel> {
        GrantServiceClient::new(self.entitlement.clone())
    }

    async fn seed(&mut self) -> Result<()> {
        let started = Instant::now();
        create_catalog(&self.entitlement).await?;

        // Accounts through the tenant service (the entitlement service learns them from the
        // change feed, and checks every grant's account against the tenant service).
        let n = self.settings.accounts;
        self.accounts = (0..n).map(account_id).collect();
        let tenants = TenantServiceClient::new(self.tenant.clone());
        let accounts = &self.accounts;
        let created = load::run(
            Bounds {
                concurrency: 8,
                requests: n as u64,
                duration: Duration::from_secs(600),
            },
            |i| {
                let mut client = tenants.clone();
                let id = accounts[i as usize].clone();
                async move {
                    client
                        .create_account(CreateAccountRequest {
                            account: Some(NewAccount {
                                tenant_id: Some(id.clone()),
                                name: format!("Bench account {id}"),
                                ..Default::default()
                            }),
                            idempotency_key: None,
                        })
                        .await
                        .map(|_| ())
                }
            },
        )
        .await;
        ensure!(
            created.errors == 0 && created.ok == n as u64,
            "creating accounts: {} ok, {} failed: {:?}",
            created.ok,
            created.errors,
            created.first_error
        );

        // Before any grant: a grant puts its account in the index too, which would hide a
        // feed follower still catching up (and competing with the first measures for CPU).
        let followed = Instant::now();
        self.wait_for_accounts(Duration::from_secs(120)).await?;
        eprintln!(
            "the entitlement service followed {n} account creations {:.1} s after the last one",
            followed.elapsed().as_secs_f64()
        );

        // Grants in 1,000-item batches: each account holds `grants_per_account` distinct plans.
        let mut rng = Lcg::new(11);
        let mut grants = Vec::new();
        for account in &self.accounts {
            let mut chosen: Vec<usize> = Vec::new();
            while chosen.len() < self.settings.grants_per_account.min(PLANS) {
                let p = rng.below(PLANS);
                if !chosen.contains(&p) {
                    chosen.push(p);
                }
            }
            grants.extend(chosen.into_iter().map(|p| NewGrant {
                plan: Some(PlanRef::PlanKey(plan_key(p))),
                tenant_id: account.clone(),
                ..Default::default()
            }));
        }
        let mut client = self.grants_client();
        for chunk in grants.chunks(1_000) {
            client
                .batch_create_grants(BatchCreateGrantsRequest {
                    grants: chunk.to_vec(),
                    idempotency_key: None,
                })
                .await
                .context("batch create grants")?;
        }

        // The checks: random (account, feature) pairs.
        self.checks = (0..4_096)
            .map(|_| {
                (
                    self.accounts[rng.below(n)].clone(),
                    feature_key(rng.below(FEATURES)),
                )
            })
            .collect();
        eprintln!(
            "seeded {FEATURES} features, {PLANS} plans, {n} accounts, {} grants in {:.1} s",
            grants.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Waits until the entitlement index knows every account (from the tenant change feed).
    async fn wait_for_accounts(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut client = self.checks_client();
        loop {
            let mut unknown = 0;
            for chunk in self.accounts.chunks(1_000) {
                let queries = chunk
                    .iter()
                    .map(|a| query(a, None, &feature_key(0)))
                    .collect();
                let answer = client
                    .batch_is_entitled_to(BatchIsEntitledToRequest {
                        queries,
                        min_revision: 0,
                    })
                    .await?
                    .into_inner();
                unknown += answer
                    .decisions
                    .iter()
                    .filter(|d| d.justification() == Justification::TenantNotFound)
                    .count();
            }
            if unknown == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{unknown} accounts still unknown to the entitlement index");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The suite's catalog: `FEATURES` boolean features and `PLANS` plans of
/// `FEATURES_PER_PLAN` of them, through the entitlement service's gRPC API.
pub async fn create_catalog(entitlement: &ClientChannel) -> Result<()> {
    let mut features = FeatureServiceClient::new(entitlement.clone());
    for i in 0..FEATURES {
        features
            .create_feature(CreateFeatureRequest {
                key: feature_key(i),
                name: feature_key(i),
                allocation_type: AllocationType::Bool.into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create feature {i}"))?;
    }
    let mut plans = PlanServiceClient::new(entitlement.clone());
    for p in 0..PLANS {
        plans
            .create_plan(CreatePlanRequest {
                key: Some(plan_key(p)),
                name: plan_key(p),
                features: plan_features(p)
                    .into_iter()
                    .map(|f| PlanFeatureInput {
                        feature_key: feature_key(f),
                        allocation: None,
                    })
                    .collect(),
                default_treatment: Treatment::False.into(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create plan {p}"))?;
    }
    Ok(())
}

/// A feature check for `tenant` (and `user`).
pub fn query(tenant: &str, user: Option<&str>, feature: &str) -> EntitlementQuery {
    EntitlementQuery {
        subject: Some(ent::Subject {
            tenant_id: tenant.to_owned(),
            user_id: user.map(str::to_owned),
            ..Default::default()
        }),
        target: Some(Target::FeatureKey(feature.to_owned())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plan_holds_distinct_features() {
        for p in 0..PLANS {
            let mut f = plan_features(p);
            f.sort_unstable();
            f.dedup();
            assert_eq!(f.len(), FEATURES_PER_PLAN, "plan {p}");
            assert!(f.iter().all(|&i| i < FEATURES));
        }
    }

    #[test]
    fn the_generator_is_deterministic() {
        let a: Vec<u64> = {
            let mut r = Lcg::new(3);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Lcg::new(3);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert!(Lcg::new(1).below(7) < 7);
    }
}
