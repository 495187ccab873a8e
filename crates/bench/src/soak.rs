//! B9: the soak. A bounded mixed load of REST and gRPC checks and writes (self-service
//! settings updates that fill the change feed's outbox, grant writes with idempotency keys,
//! account creations) against a fresh server, twice: with the change feed's and the
//! idempotency keys' retention short, so pruning runs during the run (A), and at their
//! defaults (B). B9 runs the three services as separate processes on PostgreSQL (the e2e
//! stack); B9′ runs `tenantry serve`, the all-in-one binary, on its default SQLite.
//!
//! A side: start, seed, one warm-up window, then `WINDOWS` measured windows. After each window
//! the suite reads every server process's VmRSS and the size of what retention bounds
//! (PostgreSQL: the outbox and idempotency tables with their indexes and TOAST; SQLite: every
//! file in the data directory, WAL included). The row reports p99 per window and its drift
//! (last ÷ first), RSS at start, after the warm-up, in the middle, at the end and at its peak
//! (VmHWM), and disk growth per 100,000 writes over the second half of the windows, when
//! retention has had time to act.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tenantry_common::{grpc::ClientChannel, testing};
use tenantry_proto::{
    entitlement::v1::{
        BatchCreateGrantsRequest, CreateGrantRequest, DeleteGrantRequest, IsEntitledToRequest,
        NewGrant, entitlement_service_client::EntitlementServiceClient,
        grant_service_client::GrantServiceClient, new_grant::Plan as PlanRef,
    },
    tenant::v1::{
        AccountSettings, CreateAccountRequest, NewAccount, UpdateAccountSettingsRequest,
        tenant_service_client::TenantServiceClient,
    },
};
use tenantry_tests::{
    CLIENT_ID, CLIENT_SECRET, Process, SERVICE_TOKEN, Stack, StackOptions, USER_JWT_SECRET,
};

use crate::{
    fixture::{self, FEATURES, PLANS, Settings, USER_ID, feature_key, plan_key, query},
    load::{self, Bounds, LoadResult},
    procfs::{self, CpuMeter},
    report::{Row, Verdict, thousands},
    stats::{self, Summary},
};

/// Measured windows per side (after one warm-up window of the same length).
pub const WINDOWS: u32 = 6;
/// Requests in flight: a closed loop, so the server core stays busy and a slowdown shows as
/// both lower throughput and higher latency.
const CONCURRENCY: usize = 8;
/// Accounts seeded per side (checks, settings updates and grant writes go to these).
const ACCOUNTS: usize = 200;
/// Plans granted to each seeded account.
const GRANTS_PER_ACCOUNT: usize = 3;
/// Size of the logo each REST settings update writes (events leave the logo out, so it
/// weighs on the accounts table, not on the outbox).
const LOGO_BYTES: usize = 8 * 1024;
/// Longest soak per side: user tokens live an hour, and a side lasts 7/6 of this.
pub const MAX_SOAK_SECS: u64 = 3_000;
/// Permission a user needs to write their account's settings.
const WRITE_SETTINGS: &str = "fe.account-settings.write.account";

/// The retention of side A: a sixth of the run (so pruning acts from the second window on),
/// between 5 s and the 60 s a long run uses.
pub fn retention_secs(soak: Duration) -> u64 {
    (soak.as_secs() / 6).clamp(5, 60)
}

/// What a soak runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The three services as separate processes on PostgreSQL, each with its own role.
    Stack,
    /// `tenantry serve` on SQLite files in its data directory (the binary's default).
    AllInOne,
}

impl Backend {
    pub fn id(self) -> &'static str {
        match self {
            Self::Stack => "B9",
            Self::AllInOne => "B9′",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Stack => "the three services on PostgreSQL",
            Self::AllInOne => "`tenantry serve` on SQLite (its default)",
        }
    }
}

/// The all-in-one binary next to this one, built in this binary's profile when it is missing
/// or older than the service binaries (which the e2e harness keeps fresh).
fn all_in_one_binary() -> Result<PathBuf> {
    let gateway = tenantry_tests::binary("gateway");
    let path = gateway.with_file_name("tenantry");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let own_sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenantry/src");
    let newest_source = std::fs::read_dir(&own_sources)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| modified(&e.path()))
        .chain(modified(&gateway))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if std::env::var_os("TENANTRY_E2E_NO_BUILD").is_none()
        && modified(&path).is_none_or(|built| built < newest_source)
    {
        let dir = path.parent().context("binary directory")?;
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "tenantry",
                "--profile",
                &profile,
            ])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
            .env(
                "CARGO_TARGET_DIR",
                dir.parent().context("target directory")?,
            )
            .stdin(Stdio::null())
            .status()
            .context("run cargo build")?;
        ensure!(status.success(), "building the tenantry binary failed");
    }
    ensure!(path.is_file(), "binary {} not found", path.display());
    Ok(path)
}

/// A directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tenantry-soak-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes of every file under `dir` (SQLite databases with their -wal and -shm files).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes of the `-wal` files under `dir`.
fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("-wal"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// How to read the size of what retention bounds.
enum Storage {
    /// SQLite: every file in the data directory.
    Files(PathBuf),
    /// PostgreSQL: the outbox and idempotency tables, as the superuser.
    Tables(DatabaseConnection),
}

/// The running processes of one side.
enum Processes {
    /// The three services, each its own process and PostgreSQL role.
    Stack(Box<Stack>),
    /// `tenantry serve` and its data directory.
    AllInOne {
        process: Box<Process>,
        /// Removed (with the SQLite files) when the side ends.
        _scratch: ScratchDir,
    },
}

/// The server of one side: its processes, its endpoints and its storage.
struct Server {
    processes: Processes,
    http: String,
    tenant: ClientChannel,
    entitlement: ClientChannel,
    storage: Storage,
}

/// Environment of a side: logs at `warn` and the rate limit lifted (as in the other rows:
/// per-request logs would measure the logger, and the per-principal limit would cap the load
/// generator), and side A's short retention.
fn side_env(retention: Option<u64>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TENANTRY_LOG_LEVEL", "warn".to_owned()),
        ("TENANTRY_RATE_LIMIT_PER_SECOND", "1000000".to_owned()),
        ("TENANTRY_RATE_LIMIT_BURST", "1000000".to_owned()),
    ];
    if let Some(secs) = retention {
        env.push(("TENANTRY_FEED_RETENTION_SECS", secs.to_string()));
        env.push(("TENANTRY_IDEMPOTENCY_RETENTION_SECS", secs.to_string()));
    }
    env
}

/// The outbox and the idempotency tables: bytes (indexes and TOAST included), rows, and the
/// whole database's bytes.
const TABLE_SIZES: &str = "SELECT \
     (pg_total_relation_size('tenant.change_events') \
      + pg_total_relation_size('tenant.idempotency_keys') \
      + pg_total_relation_size('entitlement.ent_idempotency'))::BIGINT AS bytes, \
     ((SELECT COUNT(*) FROM tenant.change_events) \
      + (SELECT COUNT(*) FROM tenant.idempotency_keys) \
      + (SELECT COUNT(*) FROM entitlement.ent_idempotency))::BIGINT AS rows, \
     pg_database_size(current_database())::BIGINT AS total";

impl Server {
    async fn start(backend: Backend, settings: &Settings, retention: Option<u64>) -> Result<Self> {
        let env = side_env(retention);
        match backend {
            Backend::Stack => {
                let cpus = settings.server_cpus.clone();
                let stack = Stack::start_configured(
                    testing::postgres(),
                    StackOptions::default(),
                    |process| {
                        process.set_cpu_list(cpus.as_deref());
                        for (key, value) in &env {
                            process.set_env(key, value);
                        }
                    },
                )
                .await;
                let addr = |p: &Process, key: &str| {
                    p.env(key)
                        .map(|a| format!("http://{a}"))
                        .with_context(|| format!("{} has no {key}", p.name()))
                };
                let tenant = addr(&stack.tenant, "TENANTRY_TENANT_GRPC_ADDR")?;
                let entitlement = addr(&stack.entitlement, "TENANTRY_ENTITLEMENT_GRPC_ADDR")?;
                let admin = Database::connect(stack.admin_db_url.clone()).await?;
                Ok(Self {
                    http: stack.base_url.clone(),
                    tenant: fixture::channel(&tenant)?,
                    entitlement: fixture::channel(&entitlement)?,
                    processes: Processes::Stack(Box::new(stack)),
                    storage: Storage::Tables(admin),
                })
            }
            Backend::AllInOne => {
                let scratch = ScratchDir::new()?;
                let data_dir = scratch.0.join("data");
                let http_addr = format!("127.0.0.1:{}", testing::free_port());
                let tenant_addr = format!("127.0.0.1:{}", testing::free_port());
                let entitlement_addr = format!("127.0.0.1:{}", testing::free_port());
                let vars: HashMap<String, String> = [
                    ("TENANTRY_DATA_DIR", data_dir.display().to_string()),
                    ("TENANTRY_HTTP_ADDR", http_addr.clone()),
                    ("TENANTRY_TENANT_GRPC_ADDR", tenant_addr.clone()),
                    ("TENANTRY_ENTITLEMENT_GRPC_ADDR", entitlement_addr.clone()),
                    ("TENANTRY_SERVICE_TOKEN", SERVICE_TOKEN.into()),
                    ("TENANTRY_CLIENT_ID", CLIENT_ID.into()),
                    ("TENANTRY_CLIENT_SECRET", CLIENT_SECRET.into()),
                    ("TENANTRY_USER_JWT_HS256_SECRET", USER_JWT_SECRET.into()),
                    ("TENANTRY_LOG_FORMAT", "json".into()),
                    ("TENANTRY_SHUTDOWN_GRACE_MS", "5000".into()),
                ]
                .into_iter()
                .chain(env)
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                let mut process = Process::new("tenantry", all_in_one_binary()?, vars, &scratch.0);
                process.set_args(&["serve"]);
                process.set_cpu_list(settings.server_cpus.as_deref());
                process.start();
                let http = format!("http://{http_addr}");
                let client = reqwest::Client::new();
                let deadline = Instant::now() + Duration::from_secs(90);
                while !client
                    .get(format!("{http}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    if Instant::now() > deadline {
                        bail!(
                            "tenantry serve was not ready within 90 s:\n{}",
                            process.logs()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Self {
                    http,
                    tenant: fixture::channel(&format!("http://{tenant_addr}"))?,
                    entitlement: fixture::channel(&format!("http://{entitlement_addr}"))?,
                    storage: Storage::Files(data_dir),
                    processes: Processes::AllInOne {
                        process: Box::new(process),
                        _scratch: scratch,
                    },
                })
            }
        }
    }

    /// Name and PID of every server process.
    fn pids(&self) -> Result<Vec<(&'static str, u32)>> {
        let processes: Vec<&Process> = match &self.processes {
            Processes::Stack(stack) => vec![&stack.tenant, &stack.entitlement, &stack.gateway],
            Processes::AllInOne { process, .. } => vec![&**process],
        };
        processes
            .into_iter()
            .map(|p| {
                let pid = p
                    .pid()
                    .with_context(|| format!("{} has no PID", p.name()))?;
                Ok((p.name(), pid))
            })
            .collect()
    }

    /// What retention bounds, on disk now.
    async fn disk(&self) -> Result<Disk> {
        match &self.storage {
            Storage::Files(dir) => {
                let bytes = dir_bytes(dir);
                Ok(Disk {
                    bytes,
                    rows: None,
                    total: bytes,
                    wal: wal_bytes(dir),
                })
            }
            Storage::Tables(db) => {
                let row = db
                    .query_one_raw(Statement::from_string(DbBackend::Postgres, TABLE_SIZES))
                    .await?
                    .context("table sizes")?;
                let get = |column: &str| -> Result<u64> {
                    let n: i64 = row.try_get("", column)?;
                    Ok(u64::try_from(n).unwrap_or_default())
                };
                Ok(Disk {
                    bytes: get("bytes")?,
                    rows: Some(get("rows")?),
                    total: get("total")?,
                    wal: 0,
                })
            }
        }
    }

    /// Stops the processes (SIGTERM, as a deployment would).
    async fn stop(mut self) {
        match &mut self.processes {
            Processes::Stack(stack) => {
                for p in [
                    &mut stack.gateway,
                    &mut stack.entitlement,
                    &mut stack.tenant,
                ] {
                    p.terminate().await;
                }
            }
            Processes::AllInOne { process, .. } => {
                process.terminate().await;
            }
        }
        if let Storage::Tables(db) = self.storage {
            let _ = db.close().await;
        }
    }

    /// The catalog, `ACCOUNTS` accounts and their grants, through the services' gRPC APIs.
    async fn seed(&self) -> Result<Vec<String>> {
        fixture::create_catalog(&self.entitlement).await?;
        let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("soak-acct-{i:04}")).collect();
        let mut tenants = TenantServiceClient::new(self.tenant.clone());
        for id in &accounts {
            tenants
                .create_account(CreateAccountRequest {
                    account: Some(NewAccount {
                        tenant_id: Some(id.clone()),
                        name: format!("Soak account {id}"),
                        ..Default::default()
                    }),
                    idempotency_key: None,
                })
                .await
                .with_context(|| format!("create account {id}"))?;
        }
        // The entitlement service learns accounts from the change feed; grants for an account
        // it has not seen yet would be refused.
        let grants: Vec<NewGrant> = accounts
            .iter()
            .enumerate()
            .flat_map(|(a, id)| {
                (0..GRANTS_PER_ACCOUNT).map(move |g| NewGrant {
                    plan: Some(PlanRef::PlanKey(plan_key((a + g) % PLANS))),
                    tenant_id: id.clone(),
                    ..Default::default()
                })
            })
            .collect();
        let mut client = GrantServiceClient::new(self.entitlement.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let request = BatchCreateGrantsRequest {
                grants: grants.clone(),
                idempotency_key: None,
            };
            match client.batch_create_grants(request).await {
                Ok(_) => break,
                // Refused until the accounts have reached the entitlement service.
                Err(status) => {
                    ensure!(
                        Instant::now() < deadline,
                        "grant the seeded accounts: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(accounts)
    }
}

/// The size of what retention bounds, at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Disk {
    /// SQLite: the data directory's files; PostgreSQL: the outbox and idempotency tables.
    bytes: u64,
    /// Rows in those tables (PostgreSQL).
    rows: Option<u64>,
    /// The whole database.
    total: u64,
    /// SQLite's write-ahead logs (included in `bytes`).
    wal: u64,
}

/// What one window measured.
#[derive(Debug)]
struct Window {
    load: LoadResult,
    writes: u64,
    /// Per process, in the order of [`Side::names`].
    rss: Vec<u64>,
    disk: Disk,
}

/// What one side measured.
#[derive(Debug)]
struct Side {
    retention: Option<u64>,
    names: Vec<&'static str>,
    rss_start: Vec<u64>,
    rss_warm: Vec<u64>,
    rss_peak: Vec<u64>,
    disk_warm: Disk,
    windows: Vec<Window>,
    cpu: Duration,
}

impl Side {
    fn requests(&self) -> u64 {
        self.windows.iter().map(|w| w.load.ok).sum()
    }

    fn writes(&self) -> u64 {
        self.windows.iter().map(|w| w.writes).sum()
    }

    fn rss_mid(&self) -> &[u64] {
        match self.windows.len() {
            0 => &self.rss_warm,
            n => &self.windows[n / 2 - usize::from(n >= 2)].rss,
        }
    }

    fn rss_end(&self) -> &[u64] {
        self.windows.last().map_or(&self.rss_warm, |w| &w.rss)
    }

    fn disk_end(&self) -> Disk {
        self.windows.last().map_or(self.disk_warm, |w| w.disk)
    }

    fn p99(&self, w: usize) -> Duration {
        self.windows
            .get(w)
            .map_or(Duration::ZERO, |w| w.load.latency().p99)
    }

    /// Last window's p99 ÷ the first's.
    fn p99_drift(&self) -> f64 {
        let last = self.windows.len().saturating_sub(1);
        ratio(self.p99(last).as_secs_f64(), self.p99(0).as_secs_f64())
    }

    /// The largest growth of any process's RSS from after the warm-up to the end.
    fn rss_growth(&self) -> f64 {
        self.rss_warm
            .iter()
            .zip(self.rss_end())
            .map(|(&warm, &end)| ratio(end as f64, warm as f64))
            .fold(0.0, f64::max)
    }

    /// MB on disk per 100,000 writes over the second half of the windows (when retention has
    /// had time to act).
    fn disk_per_100k(&self) -> f64 {
        let half = self.windows.len() / 2;
        let before = match half {
            0 => self.disk_warm,
            h => self.windows[h - 1].disk,
        };
        let writes: u64 = self.windows[half..].iter().map(|w| w.writes).sum();
        per_100k(before.bytes, self.disk_end().bytes, writes)
    }

    /// Disk per 100,000 writes over every window after the warm-up.
    fn disk_per_100k_whole(&self) -> f64 {
        per_100k(self.disk_warm.bytes, self.disk_end().bytes, self.writes())
    }

    fn describe(&self, window: Duration, backend: Backend) -> String {
        let elapsed: f64 = self
            .windows
            .iter()
            .map(|w| w.load.elapsed.as_secs_f64())
            .sum();
        let p99s: Vec<String> = (0..self.windows.len())
            .map(|w| stats::ms(self.p99(w)))
            .collect();
        let retention = match self.retention {
            Some(s) => format!("retention {s} s"),
            None => "retention at its defaults".to_owned(),
        };
        let rss: Vec<String> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    "{name} {} / {} / {} / {} ({})",
                    mib(self.rss_start[i]),
                    mib(self.rss_warm[i]),
                    mib(self.rss_mid()[i]),
                    mib(self.rss_end()[i]),
                    mib(self.rss_peak[i]),
                )
            })
            .collect();
        let (warm, end) = (self.disk_warm, self.disk_end());
        let what = match backend {
            Backend::Stack => format!(
                "outbox + idempotency tables {:.1} → {:.1} MB ({} → {} rows; database {:.1} → {:.1} MB)",
                mb(warm.bytes),
                mb(end.bytes),
                thousands(warm.rows.unwrap_or_default() as f64),
                thousands(end.rows.unwrap_or_default() as f64),
                mb(warm.total),
                mb(end.total),
            ),
            Backend::AllInOne => format!(
                "SQLite files {:.1} → {:.1} MB (WAL {:.1} MB at the end)",
                mb(warm.bytes),
                mb(end.bytes),
                mb(end.wal),
            ),
        };
        format!(
            "{retention}: {} req/s, {} writes/s; p99 per {} s window {} ms; RSS MiB start / after warm-up / middle / end (peak): {}; {what}: {:.1} MB per 100k writes over the second half ({:.1} over the run)",
            thousands(self.requests() as f64 / elapsed),
            thousands(self.writes() as f64 / elapsed),
            window.as_secs(),
            p99s.join(", "),
            rss.join(", "),
            self.disk_per_100k(),
            self.disk_per_100k_whole(),
        )
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::INFINITY
    }
}

/// MB of growth from `before` to `after` bytes per 100,000 of `writes` (negative when it
/// shrank).
fn per_100k(before: u64, after: u64, writes: u64) -> f64 {
    if writes == 0 {
        return f64::INFINITY;
    }
    (after as f64 - before as f64) / 1e6 * 100_000.0 / writes as f64
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / 1_048_576.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The mixed load of one side: per 20 requests, 10 gRPC checks, 4 REST checks (user token),
/// a gRPC grant create (with an idempotency key) and a delete of the oldest grant it created,
/// 2 REST settings updates with an 8 KiB logo, a gRPC settings update and a gRPC account
/// creation with settings and an idempotency key. Six in twenty are writes.
struct Mix {
    label: &'static str,
    accounts: Vec<String>,
    checks: EntitlementServiceClient<ClientChannel>,
    grants: GrantServiceClient<ClientChannel>,
    tenants: TenantServiceClient<ClientChannel>,
    http: reqwest::Client,
    check_url: String,
    settings_url: String,
    /// Per account: a token without permissions (checks) and one that may write settings.
    tokens: Vec<(String, String)>,
    /// Grants this load created and has not deleted yet, oldest first.
    created: RefCell<VecDeque<String>>,
    /// Requests issued before the current window (so every window continues the sequence).
    offset: Cell<u64>,
    writes: Cell<u64>,
}

/// A logo of `LOGO_BYTES` as a data URL, different for every `i` and as incompressible as a
/// real image (PostgreSQL compresses large values; a run of one letter would weigh nothing).
fn logo(i: u64) -> String {
    const PREFIX: &str = "data:image/png;base64,";
    const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut logo = String::with_capacity(LOGO_BYTES);
    logo.push_str(PREFIX);
    while logo.len() < LOGO_BYTES {
        // xorshift64: cheap, and every i gives its own sequence.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        logo.push(char::from(BASE64[(state >> 58) as usize]));
    }
    logo
}

/// A well-mixed index from a counter (Fibonacci hashing).
fn spread(i: u64, n: usize) -> usize {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize % n.max(1)
}

impl Mix {
    fn new(server: &Server, accounts: Vec<String>, label: &'static str) -> Result<Self> {
        let tokens = accounts
            .iter()
            .map(|a| {
                (
                    tenantry_tests::user_token(a, USER_ID, &[]),
                    tenantry_tests::user_token(a, USER_ID, &[WRITE_SETTINGS]),
                )
            })
            .collect();
        Ok(Self {
            label,
            checks: EntitlementServiceClient::new(server.entitlement.clone()),
            grants: GrantServiceClient::new(server.entitlement.clone()),
            tenants: TenantServiceClient::new(server.tenant.clone()),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(CONCURRENCY)
                .tcp_nodelay(true)
                .build()?,
            check_url: format!("{}/entitlements/api/v1/is-entitled-to", server.http),
            settings_url: format!("{}/tenants/resources/account-settings/v1", server.http),
            tokens,
            accounts,
            created: RefCell::new(VecDeque::new()),
            offset: Cell::new(0),
            writes: Cell::new(0),
        })
    }

    async fn rest(&self, request: reqwest::RequestBuilder) -> Result<(), String> {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
        }
    }

    async fn create_grant(&self, i: u64, a: usize) -> Result<(), String> {
        let grant = self
            .grants
            .clone()
            .create_grant(CreateGrantRequest {
                grant: Some(NewGrant {
                    plan: Some(PlanRef::PlanKey(plan_key(spread(i, PLANS)))),
                    tenant_id: self.accounts[a].clone(),
                    ..Default::default()
                }),
                idempotency_key: Some(format!("soak-{}-{i}", self.label)),
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .grant
            .ok_or("CreateGrant answered no grant")?;
        self.created.borrow_mut().push_back(grant.id);
        Ok(())
    }

    /// Request `i` of the whole side.
    async fn op(&self, i: u64) -> Result<(), String> {
        let a = spread(i, self.accounts.len());
        let account = &self.accounts[a];
        let feature = feature_key(spread(i.rotate_left(17), FEATURES));
        let slot = i % 20;
        match slot {
            0..=9 => self
                .checks
                .clone()
                .is_entitled_to(IsEntitledToRequest {
                    query: Some(query(account, None, &feature)),
                    min_revision: 0,
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            10..=13 => {
                let body = serde_json::json!({
                    "subject": {"tenantId": account},
                    "feature": {"featureKey": feature},
                });
                self.rest(
                    self.http
                        .post(&self.check_url)
                        .bearer_auth(&self.tokens[a].0)
                        .json(&body),
                )
                .await
            }
            _ => {
                let result = match slot {
                    14 => self.create_grant(i, a).await,
                    15 => {
                        let oldest = self.created.borrow_mut().pop_front();
                        match oldest {
                            Some(id) => self
                                .grants
                                .clone()
                                .delete_grant(DeleteGrantRequest { id })
                                .await
                                .map(drop)
                                .map_err(|e| e.to_string()),
                            None => self.create_grant(i, a).await,
                        }
                    }
                    16 | 17 => {
                        // A different logo each time, so every update is a change.
                        let logo = logo(i);
                        let body = serde_json::json!({"logo": logo, "timezone": "Europe/Berlin"});
                        self.rest(
                            self.http
                                .put(&self.settings_url)
                                .bearer_auth(&self.tokens[a].1)
                                .json(&body),
                        )
                        .await
                    }
                    18 => self
                        .tenants
                        .clone()
                        .update_account_settings(UpdateAccountSettingsRequest {
                            tenant_id: account.clone(),
                            settings: Some(AccountSettings {
                                currency: Some(["EUR", "USD", "GBP"][(i % 3) as usize].into()),
                                address: Some(format!("{i} Soak Street")),
                                ..Default::default()
                            }),
                        })
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    _ => self
                        .tenants
                        .clone()
                        .create_account(CreateAccountRequest {
                            account: Some(NewAccount {
                                tenant_id: Some(format!("soak-{}-{i}", self.label)),
                                name: format!("Soak account {i}"),
                                timezone: Some("Europe/Paris".into()),
                                currency: Some("EUR".into()),
                                website: Some(format!("https://{i}.example.com")),
                                ..Default::default()
                            }),
                            idempotency_key: Some(format!("soak-{}-{i}", self.label)),
                        })
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                };
                if result.is_ok() {
                    self.writes.set(self.writes.get() + 1);
                }
                result
            }
        }
    }

    /// One window of load; any failed request fails the measure.
    async fn window(&self, length: Duration) -> Result<(LoadResult, u64)> {
        let writes = self.writes.get();
        let offset = self.offset.get();
        let bounds = Bounds {
            concurrency: CONCURRENCY,
            requests: u64::MAX,
            duration: length,
        };
        let load = load::run(bounds, |i| self.op(offset + i)).await;
        self.offset.set(offset + load.ok + load.errors);
        load.ensure_no_errors()?;
        Ok((load, self.writes.get() - writes))
    }
}

/// One side: a fresh server, seeded, warmed up, then `WINDOWS` windows of `window`.
async fn side(
    backend: Backend,
    settings: &Settings,
    window: Duration,
    retention: Option<u64>,
    label: &'static str,
) -> Result<Side> {
    let server = Server::start(backend, settings, retention).await?;
    let processes = server.pids()?;
    let (names, pids): (Vec<&'static str>, Vec<u32>) = processes.into_iter().unzip();
    let read_rss = |read: fn(u32) -> Option<u64>| -> Result<Vec<u64>> {
        pids.iter()
            .map(|&pid| read(pid).with_context(|| format!("read /proc/{pid}/status")))
            .collect()
    };
    let accounts = server.seed().await?;
    let rss_start = read_rss(procfs::rss_bytes)?;
    let mix = Mix::new(&server, accounts, label)?;
    mix.window(window).await.context("warm-up")?;
    let rss_warm = read_rss(procfs::rss_bytes)?;
    let disk_warm = server.disk().await?;
    let meter = CpuMeter::start(&pids);
    let mut windows = Vec::new();
    for w in 0..WINDOWS {
        let (load, writes) = mix
            .window(window)
            .await
            .with_context(|| format!("window {}", w + 1))?;
        let rss = read_rss(procfs::rss_bytes)?;
        let disk = server.disk().await?;
        let l = load.latency();
        eprintln!(
            "{} {label} window {}: {} req/s, {} writes, p99 {} ms, RSS {:?} MiB, disk {:.1} MB",
            backend.id(),
            w + 1,
            thousands(load.throughput()),
            writes,
            stats::ms(l.p99),
            rss.iter().map(|&b| mib(b)).collect::<Vec<_>>(),
            mb(disk.bytes),
        );
        windows.push(Window {
            load,
            writes,
            rss,
            disk,
        });
    }
    let cpu = meter.stop();
    let rss_peak = read_rss(procfs::rss_peak_bytes)?;
    drop(mix);
    server.stop().await;
    Ok(Side {
        retention,
        names,
        rss_start,
        rss_warm,
        rss_peak,
        disk_warm,
        windows,
        cpu,
    })
}

/// B9 (the three services on PostgreSQL) or B9′ (`tenantry serve` on SQLite): retention short
/// (A) then at its defaults (B), each for `soak` after a warm-up of one window.
pub async fn b9(settings: &Settings, backend: Backend, soak: Duration) -> Result<Row> {
    let window = soak / WINDOWS;
    let retention = retention_secs(soak);
    let a = side(backend, settings, window, Some(retention), "on").await?;
    let b = side(backend, settings, window, None, "off").await?;
    let drift = a.p99_drift();
    let cpu_per_request = |s: &Side| s.cpu.as_secs_f64() * 1e6 / s.requests().max(1) as f64;
    Ok(Row {
        id: backend.id(),
        measure: format!(
            "soak: {}, {CONCURRENCY} in flight, {} s per side after a {} s warm-up; per 20 requests 10 gRPC + 4 REST checks, a grant create (idempotency key) + delete, 2 REST self-service settings updates (8 KiB logo), a gRPC settings update, an account create (idempotency key); A: feed and idempotency-key retention {retention} s, B: the defaults (7 days, 1 day). Median = p99 of A's last window ÷ its first",
            backend.name(),
            soak.as_secs(),
            window.as_secs(),
        ),
        a: a.describe(window, backend),
        b: b.describe(window, backend),
        summary: drift.is_finite().then_some(Summary {
            median: drift,
            min: drift,
            max: drift,
            count: 1,
        }),
        unit: "×",
        cpu: format!(
            "A {:.1} / B {:.1} (the server processes{})",
            cpu_per_request(&a),
            cpu_per_request(&b),
            match backend {
                Backend::Stack => "; PostgreSQL backends not counted",
                Backend::AllInOne => "",
            }
        ),
        target: format!(
            "report: A's RSS end ÷ after warm-up (largest of its processes) {:.2}×, disk per 100k writes over the second half A {:.1} MB against B {:.1} MB",
            a.rss_growth(),
            a.disk_per_100k(),
            b.disk_per_100k(),
        ),
        verdict: Verdict::Report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_a_sixth_of_the_run_within_bounds() {
        assert_eq!(retention_secs(Duration::from_secs(10)), 5);
        assert_eq!(retention_secs(Duration::from_secs(60)), 10);
        assert_eq!(retention_secs(Duration::from_secs(300)), 50);
        assert_eq!(retention_secs(Duration::from_secs(3_000)), 60);
    }

    #[test]
    fn spread_stays_in_range_and_covers_it() {
        let mut seen = [false; 20];
        for i in 0..1_000 {
            seen[spread(i, 20)] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(spread(5, 0), 0);
    }

    #[test]
    fn logos_are_data_urls_of_the_set_size_and_differ() {
        let (a, b) = (logo(1), logo(2));
        assert_eq!(a.len(), LOGO_BYTES);
        assert!(a.starts_with("data:image/png;base64,"));
        assert_ne!(a, b);
        // Not one letter repeated: PostgreSQL would compress that to nothing.
        let distinct: std::collections::HashSet<char> = a.chars().skip(22).collect();
        assert!(
            distinct.len() > 32,
            "{} distinct characters",
            distinct.len()
        );
    }

    #[test]
    fn directory_sizes_count_every_file_and_the_wal_apart() {
        let dir = ScratchDir::new().unwrap();
        std::fs::write(dir.0.join("tenant.db"), [0_u8; 1000]).unwrap();
        std::fs::write(dir.0.join("tenant.db-wal"), [0_u8; 300]).unwrap();
        std::fs::create_dir(dir.0.join("sub")).unwrap();
        std::fs::write(dir.0.join("sub").join("x"), [0_u8; 20]).unwrap();
        assert_eq!(dir_bytes(&dir.0), 1320);
        assert_eq!(wal_bytes(&dir.0), 300);
        let path = dir.0.clone();
        drop(dir);
        assert!(!path.exists());
    }

    fn side(disks: &[u64], writes: &[u64], rss_warm: Vec<u64>, rss: &[Vec<u64>]) -> Side {
        let disk = |bytes| Disk {
            bytes,
            ..Disk::default()
        };
        Side {
            retention: Some(10),
            names: vec!["tenant", "entitlement"],
            rss_start: rss_warm.clone(),
            rss_peak: rss_warm.clone(),
            rss_warm,
            disk_warm: disk(disks[0]),
            windows: disks[1..]
                .iter()
                .zip(writes)
                .zip(rss)
                .map(|((&d, &w), r)| Window {
                    load: LoadResult {
                        ok: 10,
                        errors: 0,
                        first_error: None,
                        elapsed: Duration::from_secs(1),
                        histogram: stats::histogram(),
                    },
                    writes: w,
                    rss: r.clone(),
                    disk: disk(d),
                })
                .collect(),
            cpu: Duration::ZERO,
        }
    }

    #[test]
    fn disk_growth_counts_the_second_half_only() {
        // Grows 10 MB per window while retention has not acted yet, then stays put.
        let s = side(
            &[
                0, 10_000_000, 20_000_000, 30_000_000, 30_000_000, 30_000_000, 30_000_000,
            ],
            &[50_000; 6],
            vec![1, 1],
            &vec![vec![1, 1]; 6],
        );
        assert_eq!(s.disk_per_100k(), 0.0);
        assert_eq!(s.disk_per_100k_whole(), 10.0);
        // The second half alone: 2 MB over 100,000 writes.
        let s = side(
            &[0, 0, 0, 0, 1_000_000, 1_500_000, 2_000_000],
            &[10, 10, 10, 40_000, 40_000, 20_000],
            vec![1, 1],
            &vec![vec![1, 1]; 6],
        );
        assert!(
            (s.disk_per_100k() - 2.0).abs() < 1e-9,
            "{}",
            s.disk_per_100k()
        );
        assert!(
            side(&[0, 5], &[0], vec![1], &[vec![1]])
                .disk_per_100k()
                .is_infinite()
        );
    }

    #[test]
    fn rss_growth_is_the_worst_process_and_the_middle_is_halfway() {
        let rss: Vec<Vec<u64>> = (1..=6).map(|w| vec![100, 100 + 10 * w]).collect();
        let s = side(&[0; 7], &[1; 6], vec![100, 100], &rss);
        assert!((s.rss_growth() - 1.6).abs() < 1e-9, "{}", s.rss_growth());
        assert_eq!(s.rss_mid(), &[100, 130]);
        assert_eq!(s.rss_end(), &[100, 160]);
    }
}
