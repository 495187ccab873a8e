//! The end-to-end harness: the real `tenant-service`, `entitlement-service` and `gateway`
//! binaries as separate processes on free loopback ports, against PostgreSQL, each service in its
//! own schema with its own database role, the service token on. Tests drive them through REST.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant, SystemTime},
};

use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tenantry_common::testing::{self, TestPostgres};

pub mod console;
pub mod frontegg;
pub mod openfeature;
pub mod standardwebhooks;
pub mod tools;

/// PostgreSQL schema of the tenant service (the configuration default).
pub const TENANT_SCHEMA: &str = "tenant";
/// PostgreSQL schema of the entitlement service (the configuration default).
pub const ENTITLEMENT_SCHEMA: &str = "entitlement";

/// Secrets shared by the processes of one stack (test values, not production ones).
pub const SERVICE_TOKEN: &str = "e2e-service-token-0123456789";
pub const CLIENT_ID: &str = "e2e-client";
pub const CLIENT_SECRET: &str = "e2e-client-secret-0123456789abcdef";
pub const USER_JWT_SECRET: &str = "e2e-user-jwt-secret-0123456789abcdef";

/// Where cargo put the workspace binaries: next to this test executable's `deps/` directory,
/// or next to the executable itself when it is a binary (the `tenantry-bench` suite).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile directory").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The service binaries the stack starts, and the all-in-one binary (its `agent`).
const BINARIES: [&str; 4] = [
    "tenant-service",
    "entitlement-service",
    "gateway",
    "tenantry",
];

/// The path of a workspace binary, fresh. A dependency never builds another package's
/// binaries, so the first call of a test process runs `cargo build` for the three services in
/// this test binary's profile when any is missing or older than the sources it is built from
/// (`cargo nextest run --workspace` has built them already; `cargo nextest run -p
/// tenantry-tests` has not). `TENANTRY_E2E_NO_BUILD` skips this.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("TENANTRY_E2E_NO_BUILD").is_none() && binaries_stale() {
            build_binaries();
        }
    });
    let path = bin_dir().join(name);
    assert!(path.is_file(), "binary {} not found", path.display());
    path
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Whether a service binary is missing or older than a source file of the crates it is built
/// from (`src/`, `build.rs` and manifests), the protobuf contracts, or the lock file.
fn binaries_stale() -> bool {
    fn newest(path: &Path, newest_seen: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                newest(&entry.path(), newest_seen);
            }
        } else if let Ok(modified) = meta.modified() {
            *newest_seen = (*newest_seen).max(modified);
        }
    }
    let root = workspace_root();
    let mut sources = SystemTime::UNIX_EPOCH;
    for file in ["Cargo.toml", "Cargo.lock", "proto"] {
        newest(&root.join(file), &mut sources);
    }
    for krate in [
        "common",
        "proto",
        "index",
        "client",
        "tenant",
        "entitlement",
        "gateway",
        "tenantry",
    ] {
        for part in ["src", "build.rs", "Cargo.toml"] {
            newest(&root.join("crates").join(krate).join(part), &mut sources);
        }
    }
    BINARIES.iter().any(|name| {
        std::fs::metadata(bin_dir().join(name))
            .and_then(|m| m.modified())
            .map_or(true, |built| built < sources)
    })
}

fn build_binaries() {
    let dir = bin_dir();
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target = dir.parent().expect("target directory").to_path_buf();
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--bins", "--profile", &profile])
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", "tenantry-tenant", "-p", "tenantry-entitlement"])
        .args(["-p", "tenantry-gateway", "-p", "tenantry"])
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the service binaries failed");
}

/// One service process; restartable with the same environment.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    binary: PathBuf,
    /// Command-line arguments (the all-in-one binary's `serve`).
    args: Vec<String>,
    env: HashMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
    /// CPUs the process is pinned to (`taskset -c`), for benchmarks.
    cpu_list: Option<String>,
}

impl Process {
    /// A process of `binary` with `env`, logging to `<log_dir>/<name>.log`, not started (the
    /// benchmark suite runs the all-in-one `tenantry` binary this way).
    pub fn new(
        name: &'static str,
        binary: PathBuf,
        env: HashMap<String, String>,
        log_dir: &Path,
    ) -> Self {
        Self {
            name,
            binary,
            args: Vec::new(),
            env,
            log: log_dir.join(format!("{name}.log")),
            child: None,
            cpu_list: None,
        }
    }

    /// Starts (or restarts) the process; its logs are appended to `<name>.log`.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log file");
        let mut command = match &self.cpu_list {
            Some(cpus) => {
                // taskset execs the binary, so the child's PID is the service's.
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        for (key, _) in std::env::vars() {
            if key.starts_with("TENANTRY_") || key.starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        command
            .args(&self.args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        self.child = Some(command.spawn().expect("spawn service"));
    }

    /// Kills the process without warning (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit; returns its exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("process is running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for child") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within 30 s of SIGTERM\n{}",
                    self.name,
                    tail(&self.logs())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to 30 s for the process to exit on its own (then stops it), and returns its
    /// exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let child = self.child.as_mut().expect("process is running");
            if let Some(status) = child.try_wait().expect("wait for child") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                return self.terminate().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process has been started and not yet stopped by the harness.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// What the process has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn env(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// The process's name (its log file is `<name>.log`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The running process's ID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sets the command-line arguments for the next [`Process::start`].
    pub fn set_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
    }

    /// Sets an environment variable for the next [`Process::start`].
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_owned(), value.to_owned());
    }

    /// Pins the process to `cpus` (a `taskset -c` list such as `0` or `0-1`) from the next
    /// [`Process::start`] on; `None` unpins.
    pub fn set_cpu_list(&mut self, cpus: Option<&str>) {
        self.cpu_list = cpus.map(str::to_owned);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Extra settings for a stack.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    /// An OTLP/gRPC endpoint every process exports spans to.
    pub otlp_endpoint: Option<String>,
}

/// Three processes, two database roles, one PostgreSQL database.
#[derive(Debug)]
pub struct Stack {
    pub tenant: Process,
    pub entitlement: Process,
    pub gateway: Process,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// Superuser URL of the stack's database (for assertions only; the services never use it).
    pub admin_db_url: String,
    pub tenant_db_url: String,
    pub entitlement_db_url: String,
    pub http: reqwest::Client,
    _dir: tempfile_dir::TempDir,
}

mod tempfile_dir {
    //! A directory removed on drop, without another dependency.
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            let dir = std::env::temp_dir()
                .join(format!("tenantry-e2e-{}", uuid::Uuid::now_v7().simple()));
            std::fs::create_dir_all(&dir).expect("create e2e dir");
            Self(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if std::env::var_os("TENANTRY_E2E_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

impl Stack {
    /// A stack on the run's shared PostgreSQL.
    pub async fn start() -> Self {
        Self::start_on(testing::postgres(), StackOptions::default()).await
    }

    /// A stack on `server`, in a fresh database of its own.
    pub async fn start_on(server: &TestPostgres, options: StackOptions) -> Self {
        Self::start_configured(server, options, |_| {}).await
    }

    /// [`Stack::start_on`], with `configure` applied to each process before its first start
    /// (e.g. [`Process::set_cpu_list`], [`Process::set_env`]).
    pub async fn start_configured(
        server: &TestPostgres,
        options: StackOptions,
        mut configure: impl FnMut(&mut Process),
    ) -> Self {
        let admin_db_url = server.create_database().await;
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let tenant_role = format!("tenant_{}", &suffix[20..]);
        let entitlement_role = format!("entitlement_{}", &suffix[20..]);
        let tenant_db_url = server.create_role(&admin_db_url, &tenant_role).await;
        let entitlement_db_url = server.create_role(&admin_db_url, &entitlement_role).await;
        // Each role may create its own schema in this database and nothing else.
        let admin = Database::connect(admin_db_url.clone())
            .await
            .expect("connect as admin");
        let database = admin_db_url
            .rsplit('/')
            .next()
            .and_then(|d| d.split('?').next())
            .expect("database name")
            .to_owned();
        for role in [&tenant_role, &entitlement_role] {
            admin
                .execute_unprepared(&format!("GRANT CREATE ON DATABASE {database} TO {role}"))
                .await
                .expect("grant create");
        }
        admin
            .execute_unprepared("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            .await
            .expect("revoke public");
        admin.close().await.expect("close admin");

        let dir = tempfile_dir::TempDir::new();
        let tenant_addr = format!("127.0.0.1:{}", testing::free_port());
        let entitlement_addr = format!("127.0.0.1:{}", testing::free_port());
        let http_addr = format!("127.0.0.1:{}", testing::free_port());
        let common = |data: &str| {
            let mut env = HashMap::from([
                (
                    "TENANTRY_DATA_DIR".to_owned(),
                    dir.path().join(data).display().to_string(),
                ),
                (
                    "TENANTRY_SERVICE_TOKEN".to_owned(),
                    SERVICE_TOKEN.to_owned(),
                ),
                ("TENANTRY_LOG_FORMAT".to_owned(), "json".to_owned()),
                ("TENANTRY_LOG_LEVEL".to_owned(), "info".to_owned()),
                ("TENANTRY_SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned()),
                (
                    "TENANTRY_DB_ACQUIRE_TIMEOUT_MS".to_owned(),
                    "2000".to_owned(),
                ),
                (
                    "TENANTRY_TENANT_SERVICE_URL".to_owned(),
                    format!("http://{tenant_addr}"),
                ),
                (
                    "TENANTRY_ENTITLEMENT_SERVICE_URL".to_owned(),
                    format!("http://{entitlement_addr}"),
                ),
            ]);
            if let Some(endpoint) = &options.otlp_endpoint {
                env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone());
                env.insert("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned());
            }
            env
        };
        let mut tenant_env = common("tenant");
        tenant_env.insert("TENANTRY_TENANT_GRPC_ADDR".into(), tenant_addr.clone());
        tenant_env.insert("TENANTRY_TENANT_DATABASE_URL".into(), tenant_db_url.clone());
        let mut entitlement_env = common("entitlement");
        entitlement_env.insert(
            "TENANTRY_ENTITLEMENT_GRPC_ADDR".into(),
            entitlement_addr.clone(),
        );
        entitlement_env.insert(
            "TENANTRY_ENTITLEMENT_DATABASE_URL".into(),
            entitlement_db_url.clone(),
        );
        let mut gateway_env = common("gateway");
        gateway_env.insert("TENANTRY_HTTP_ADDR".into(), http_addr.clone());
        gateway_env.insert("TENANTRY_CLIENT_ID".into(), CLIENT_ID.into());
        gateway_env.insert("TENANTRY_CLIENT_SECRET".into(), CLIENT_SECRET.into());
        gateway_env.insert(
            "TENANTRY_USER_JWT_HS256_SECRET".into(),
            USER_JWT_SECRET.into(),
        );
        // Journeys send many requests from one principal.
        gateway_env.insert("TENANTRY_RATE_LIMIT_PER_SECOND".into(), "10000".into());
        gateway_env.insert("TENANTRY_RATE_LIMIT_BURST".into(), "10000".into());

        let mut stack = Self {
            tenant: Process::new(
                "tenant-service",
                binary("tenant-service"),
                tenant_env,
                dir.path(),
            ),
            entitlement: Process::new(
                "entitlement-service",
                binary("entitlement-service"),
                entitlement_env,
                dir.path(),
            ),
            gateway: Process::new("gateway", binary("gateway"), gateway_env, dir.path()),
            base_url: format!("http://{http_addr}"),
            admin_db_url,
            tenant_db_url,
            entitlement_db_url,
            http: {
                // The workspace's reqwest has rustls without a built-in crypto provider (the
                // gateway's JWKS client brings its own, ring): a plain client needs the
                // process default set, even for http only.
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
            }
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client"),
            _dir: dir,
        };
        for process in [
            &mut stack.tenant,
            &mut stack.entitlement,
            &mut stack.gateway,
        ] {
            configure(process);
            process.start();
        }
        stack.wait_ready(Duration::from_secs(90)).await;
        stack
    }

    /// A second entitlement-service process on the same database and schema (a replica), not
    /// started, and the `http://127.0.0.1:PORT` it will serve gRPC on.
    pub fn entitlement_replica(&self, name: &'static str) -> (Process, String) {
        self.variant(
            &self.entitlement,
            name,
            "TENANTRY_ENTITLEMENT_GRPC_ADDR",
            &[],
        )
    }

    /// A second tenant-service process on the same database and schema, not started: the
    /// first one's environment with `overrides` on top, and the `http://127.0.0.1:PORT` it will
    /// serve gRPC on.
    pub fn tenant_variant(
        &self,
        name: &'static str,
        overrides: &[(&str, &str)],
    ) -> (Process, String) {
        self.variant(&self.tenant, name, "TENANTRY_TENANT_GRPC_ADDR", overrides)
    }

    /// As [`Stack::entitlement_replica`], with `overrides` on top of its environment.
    pub fn entitlement_variant(
        &self,
        name: &'static str,
        overrides: &[(&str, &str)],
    ) -> (Process, String) {
        self.variant(
            &self.entitlement,
            name,
            "TENANTRY_ENTITLEMENT_GRPC_ADDR",
            overrides,
        )
    }

    /// A second gateway process in front of the same services, not started: the first one's
    /// environment with `overrides` on top, and the `http://127.0.0.1:PORT` it will serve on.
    pub fn gateway_variant(
        &self,
        name: &'static str,
        overrides: &[(&str, &str)],
    ) -> (Process, String) {
        self.variant(&self.gateway, name, "TENANTRY_HTTP_ADDR", overrides)
    }

    /// Another process like `base`: its own listen address (`addr_key`) and data directory,
    /// the same CPUs, `overrides` on top of its environment.
    fn variant(
        &self,
        base: &Process,
        name: &'static str,
        addr_key: &str,
        overrides: &[(&str, &str)],
    ) -> (Process, String) {
        let addr = format!("127.0.0.1:{}", testing::free_port());
        let mut env = base.env.clone();
        env.insert(addr_key.into(), addr.clone());
        env.insert(
            "TENANTRY_DATA_DIR".into(),
            self._dir.path().join(name).display().to_string(),
        );
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let mut process = Process::new(name, base.binary.clone(), env, self._dir.path());
        process.cpu_list = base.cpu_list.clone();
        (process, format!("http://{addr}"))
    }

    /// A `tenantry agent` process following this stack's entitlement service, not started, with
    /// its own data directory (its snapshot file), and the `http://127.0.0.1:PORT` addresses of
    /// its HTTP and gRPC listeners.
    pub fn agent(&self, name: &'static str) -> (Process, String, String) {
        let http = format!("127.0.0.1:{}", testing::free_port());
        let grpc = format!("127.0.0.1:{}", testing::free_port());
        let mut env: HashMap<String, String> = [
            "TENANTRY_ENTITLEMENT_SERVICE_URL",
            "TENANTRY_SERVICE_TOKEN",
            "TENANTRY_LOG_FORMAT",
            "TENANTRY_LOG_LEVEL",
        ]
        .into_iter()
        .filter_map(|key| Some((key.to_owned(), self.gateway.env(key)?.to_owned())))
        .collect();
        env.insert(
            "TENANTRY_DATA_DIR".into(),
            self._dir.path().join(name).display().to_string(),
        );
        env.insert("TENANTRY_AGENT_HTTP_ADDR".into(), http.clone());
        env.insert("TENANTRY_AGENT_GRPC_ADDR".into(), grpc.clone());
        let mut process = Process::new(name, binary("tenantry"), env, self._dir.path());
        process.set_args(&["agent"]);
        (process, format!("http://{http}"), format!("http://{grpc}"))
    }

    /// The entitlement service's gRPC URL.
    pub fn entitlement_url(&self) -> String {
        self.gateway
            .env("TENANTRY_ENTITLEMENT_SERVICE_URL")
            .expect("entitlement URL")
            .to_owned()
    }

    /// Waits until `/readyz` says both services answer.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = self
                .http
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("stack not ready within {within:?}\n{}", self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An environment (management) token from `POST /auth/vendor`.
    pub async fn env_token(&self) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/vendor",
                None,
                Some(json!({"clientId": CLIENT_ID, "secret": CLIENT_SECRET})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// A user token as the customer's identity provider would issue it.
    pub fn user_token(&self, tenant_id: &str, user_id: &str, permissions: &[&str]) -> String {
        user_token(tenant_id, user_id, permissions)
    }

    /// One REST call: status and JSON body (`null` when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.call_with(method, path, token, &[], body).await;
        (status, body)
    }

    /// One REST call with extra request headers: status, response headers and JSON body.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// The last lines each process has logged, for failure messages.
    pub fn log_tails(&self) -> String {
        format!(
            "--- tenant ---\n{}\n--- entitlement ---\n{}\n--- gateway ---\n{}",
            tail(&self.tenant.logs()),
            tail(&self.entitlement.logs()),
            tail(&self.gateway.logs())
        )
    }
}

/// A user token as the customer's identity provider would issue it, signed with
/// [`USER_JWT_SECRET`] and valid for an hour.
pub fn user_token(tenant_id: &str, user_id: &str, permissions: &[&str]) -> String {
    let exp = chrono_now() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user_id, "tenantId": tenant_id, "permissions": permissions, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(USER_JWT_SECRET.as_bytes()),
    )
    .expect("sign user token")
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
