//! Configuration shared by every Tenantry binary.
//!
//! One flat set of keys for all binaries, so the same `TENANTRY_…` environment serves the
//! all-in-one server and the separate services alike, and an unknown key is an error everywhere.
//! Layers, later wins: built-in defaults → optional TOML file (`--config` / `TENANTRY_CONFIG`) →
//! `TENANTRY_*` environment variables → command-line flags. [`Config::validate`] then checks
//! values that types alone cannot.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;
use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// Environment variable prefix of every configuration key.
pub const ENV_PREFIX: &str = "TENANTRY_";
/// Environment variable naming the optional TOML configuration file.
pub const ENV_CONFIG_FILE: &str = "TENANTRY_CONFIG";
/// Standard OpenTelemetry variable: OTLP export is on when it is set.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Log filter that replaces `log_level` when set.
pub const ENV_RUST_LOG: &str = "RUST_LOG";
/// Longest accepted duration setting (`*_ms`): a day. Larger values are typos, and deadlines
/// computed from them could overflow.
const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1000;
/// Longest environment token lifetime: 30 days (`iat + ttl` must stay a sane timestamp).
const MAX_ENV_TOKEN_TTL_SECS: u64 = 30 * 24 * 60 * 60;
/// A year: keys are for retries, not an archive.
const MAX_IDEMPOTENCY_RETENTION_SECS: u64 = 365 * 24 * 60 * 60;
/// A century: far beyond any audit requirement, and far from overflowing a time.
const MAX_AUDIT_RETENTION_DAYS: u64 = 36_500;
/// Smallest `max_message_bytes` that still carries a page of accounts; the gRPC length prefix
/// caps the largest at 4 GiB - 1.
const MIN_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_MESSAGE_BYTES: usize = u32::MAX as usize;

/// A configuration value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call sites that need it are easy to audit with grep.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human format on a terminal, JSON otherwise.
    Auto,
    Pretty,
    Json,
}

/// Every setting of every Tenantry binary. Each binary reads the keys it needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where embedded SQLite files and generated development credentials live.
    pub data_dir: PathBuf,
    /// REST gateway listen address.
    pub http_addr: SocketAddr,
    /// Tenant service gRPC listen address.
    pub tenant_grpc_addr: SocketAddr,
    /// Entitlement service gRPC listen address.
    pub entitlement_grpc_addr: SocketAddr,
    /// Tenant service database (`postgres://…` or `sqlite://…`); SQLite in `data_dir` when unset.
    pub tenant_database_url: Option<Secret>,
    /// Entitlement service database; SQLite in `data_dir` when unset.
    pub entitlement_database_url: Option<Secret>,
    /// PostgreSQL schema owned by the tenant service.
    pub tenant_db_schema: String,
    /// PostgreSQL schema owned by the entitlement service.
    pub entitlement_db_schema: String,
    /// Connection pool size per service.
    pub db_max_connections: u32,
    /// How long to wait for a pooled connection before answering UNAVAILABLE.
    pub db_acquire_timeout_ms: u64,
    /// Where clients reach the tenant service (default: `http://` + `tenant_grpc_addr`).
    pub tenant_service_url: Option<String>,
    /// Where clients reach the entitlement service (default: `http://` + `entitlement_grpc_addr`).
    pub entitlement_service_url: Option<String>,
    /// Bearer token every gRPC call must carry; off when unset.
    pub service_token: Option<Secret>,
    /// PEM certificate chain for gRPC TLS (with `tls_key_path`).
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key for gRPC TLS (with `tls_cert_path`).
    pub tls_key_path: Option<PathBuf>,
    /// PEM CA bundle clients use to verify the services' certificates.
    pub tls_ca_path: Option<PathBuf>,
    /// Per-request deadline enforced by the servers.
    pub request_timeout_ms: u64,
    /// Requests served at once per server; more wait.
    pub concurrency_limit: usize,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// After SIGTERM: how long in-flight requests may take before the server stops anyway.
    pub shutdown_grace_ms: u64,
    /// How long an idempotency key answers a retry; older keys are pruned in the background.
    pub idempotency_retention_secs: u64,
    /// Days an audit entry is kept; older ones are pruned in the background (0 keeps them).
    pub audit_retention_days: u64,
    /// Record an audit entry for every write (off: nothing is recorded and the audit reads
    /// answer FAILED_PRECONDITION `AUDIT_DISABLED`; entries already recorded are still pruned).
    pub audit_enabled: bool,
    /// Log filter (`RUST_LOG` syntax); `RUST_LOG` itself wins when set.
    pub log_level: String,
    /// `auto`, `pretty` or `json`.
    pub log_format: LogFormat,
    /// Apply the service's migrations at start (off when a Kubernetes Job runs them first).
    pub migrate_on_start: bool,
    /// Deepest allowed account hierarchy (root = depth 0).
    pub max_hierarchy_depth: u32,
    /// Tenant change-feed events older than this are pruned; 0 keeps them regardless of age.
    pub feed_retention_secs: u64,
    /// At most this many of the newest change-feed events are kept; 0 means no count bound.
    pub feed_retention_events: u64,
    /// The entitlement service warns, and reports its feed NOT_SERVING in gRPC health, once it
    /// has been behind the tenant change feed this long.
    pub feed_lag_alarm_secs: u64,
    /// Environment credentials for `POST /auth/vendor`; generated into `data_dir` in dev mode.
    pub client_id: Option<String>,
    /// Secret paired with `client_id`.
    pub client_secret: Option<Secret>,
    /// More `POST /auth/vendor` credentials: `id:secret` pairs separated by commas.
    pub client_credentials: Option<Secret>,
    /// Frontegg's `vendorId`, which the gateway puts on features, plans and flags; when unset,
    /// derived from the primary environment credential's client ID (stable across restarts).
    pub vendor_id: Option<String>,
    /// HS256 key (at least 32 characters) signing environment tokens. With neither this nor
    /// `env_token_ed25519_key_path`, a key is generated once into `data_dir` (dev mode).
    pub env_token_hs256_secret: Option<Secret>,
    /// Ed25519 private key (PKCS#8 PEM file) signing environment tokens with EdDSA.
    pub env_token_ed25519_key_path: Option<PathBuf>,
    /// Lifetime of an environment token (`expiresIn`).
    pub env_token_ttl_secs: u64,
    /// JWKS URL of the identity provider that signs user tokens.
    pub user_jwt_jwks_url: Option<String>,
    /// PEM public key file verifying user tokens.
    pub user_jwt_public_key_path: Option<PathBuf>,
    /// Shared HS256 secret verifying user tokens (development; at least 32 characters).
    pub user_jwt_hs256_secret: Option<Secret>,
    /// The only algorithm accepted for user tokens verified by JWKS or PEM key.
    pub user_jwt_algorithm: String,
    /// Required `iss` of user tokens; not checked when unset.
    pub user_jwt_issuer: Option<String>,
    /// Required `aud` of user tokens; not checked when unset.
    pub user_jwt_audience: Option<String>,
    /// Largest REST request body, in bytes; larger bodies are refused with 413.
    pub http_body_limit_bytes: usize,
    /// Sustained REST requests per second per principal (per client address when anonymous).
    pub rate_limit_per_second: u32,
    /// Requests a principal may send at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// Browser origins allowed to call the REST API (CORS); empty sends no CORS headers.
    /// A list in TOML, comma-separated in the environment.
    #[serde(deserialize_with = "string_or_list")]
    pub cors_allowed_origins: Vec<String>,
    /// Most entitlement checks the gateway sends in one `BatchIsEntitledTo` call when they
    /// arrive together (1 to 1,000); 1 sends every check in its own call.
    pub check_coalesce_max: usize,
    /// Most reads (checks, an account's plans) an entitlement replica lets wait at once for a
    /// `min_revision` its index has not reached (1 to 100,000); more are refused at once with
    /// UNAVAILABLE `REVISION_WAITERS_FULL` (HTTP 503 with `retry-after`). Each waits up to 2 s
    /// holding one of the server's `concurrency_limit` permits.
    pub max_revision_waiters: usize,
    /// How long a REST client may take to send a request's headers (the connection is closed).
    pub http_header_read_timeout_ms: u64,
    /// How long a REST request body may pause between two chunks (408).
    pub http_body_idle_timeout_ms: u64,
    /// How long a REST client may take to send the first `http_body_limit_bytes` of a body (408).
    pub http_body_read_timeout_ms: u64,
    /// Seconds without news after which the index stream (gRPC and the gateway's SSE mirror)
    /// sends a heartbeat.
    pub stream_heartbeat_secs: u64,
    /// Most concurrent index stream subscribers of one entitlement replica (UNAVAILABLE beyond).
    pub stream_max_subscribers: usize,
    /// Most concurrent SSE index streams of one gateway (503 beyond); counted apart from
    /// `concurrency_limit`, so idle streams never starve requests.
    pub sse_max_streams: usize,
    /// `tenantry agent`: its HTTP listener (unauthenticated; Frontegg's agent port is 8181).
    pub agent_http_addr: SocketAddr,
    /// `tenantry agent`: its gRPC listener (unauthenticated).
    pub agent_grpc_addr: SocketAddr,
    /// `tenantry agent`: the snapshot file it answers from while the service is unreachable
    /// (default `data_dir/agent-index.snapshot`).
    pub agent_snapshot_file: Option<PathBuf>,
    /// `tenantry agent`: follow only these accounts (with their ancestors); empty: all.
    /// A list in TOML, comma-separated in the environment.
    #[serde(deserialize_with = "string_or_list")]
    pub agent_accounts: Vec<String>,
    /// `tenantry agent`: allow its unauthenticated listeners on a non-loopback address.
    pub agent_allow_unauthenticated_non_loopback: bool,
    /// `tenantry agent`: when set, both listeners require `authorization: Bearer <token>`
    /// (health probes and metrics excepted), and may then bind any address.
    pub agent_token: Option<Secret>,
    /// Webhooks may be registered on, and delivered to, private, loopback and link-local
    /// addresses (off: such URLs are refused at creation and at delivery).
    pub webhook_allow_private_networks: bool,
    /// The waits before each webhook retry (`ms`, `s`, `m`, `h`, `d` units); its length bounds
    /// the attempts (one more than its steps). A list in TOML, comma-separated in the
    /// environment.
    #[serde(deserialize_with = "string_or_list")]
    pub webhook_retry_schedule: Vec<String>,
    /// One webhook attempt's limit, connection to last byte.
    pub webhook_timeout_ms: u64,
    /// A webhook endpoint whose attempts have all failed for this long is disabled.
    pub webhook_disable_after_secs: u64,
    /// How often an entitlement replica looks for webhook work nobody woke it for (other
    /// replicas' commits, retries falling due).
    pub webhook_poll_ms: u64,
    /// Finished webhook deliveries stay in the delivery log this long.
    pub webhook_delivery_retention_secs: u64,
    /// How long before a grant's expiry `tenantry.grant.expiring.v1` fires, once per lead time
    /// (`s`, `m`, `h`, `d` units, whole seconds, 1s to 366d, at most 10, distinct). A list in
    /// TOML, comma-separated in the environment; empty: no expiring events.
    #[serde(deserialize_with = "string_or_list")]
    pub webhook_expiring_lead_times: Vec<String>,
    /// The shares of a period's available amount at which `tenantry.usage.threshold.v1` fires,
    /// once per account, metered feature and period each (whole percents, 1 to 1000, at most
    /// 10, distinct). A list in TOML, comma-separated in the environment; empty: none.
    #[serde(deserialize_with = "number_or_string_list")]
    pub webhook_usage_thresholds: Vec<String>,
    /// The gateway serves the web console at `/console` (off: 404 there).
    pub console_enabled: bool,
    /// How long a console sign-in lasts (a user token's own expiry ends it sooner).
    pub console_session_ttl_secs: u64,
    /// Key sealing console session cookies (at least 32 characters), the same on every
    /// gateway replica; generated at start when unset (sessions then end with the process).
    pub console_session_key: Option<Secret>,
    /// Console cookies carry `Secure` (set when TLS ends in front of the gateway; a request
    /// arriving with `X-Forwarded-Proto: https` gets it anyway).
    pub console_cookie_secure: bool,
}

/// Most `webhook_expiring_lead_times`.
pub const MAX_EXPIRING_LEAD_TIMES: usize = 10;
/// Longest `webhook_expiring_lead_times` entry (366 days).
pub const MAX_EXPIRING_LEAD_SECS: u64 = 366 * 24 * 3_600;

/// Most `webhook_usage_thresholds`.
pub const MAX_USAGE_THRESHOLDS: usize = 10;
/// Highest `webhook_usage_thresholds` entry, in percent.
pub const MAX_USAGE_THRESHOLD_PERCENT: u16 = 1_000;

/// Parses a duration such as `500ms`, `5s`, `5m`, `2h`, `1d`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms)?))
}

/// Algorithms `user_jwt_algorithm` accepts: asymmetric only, so a public key can never be
/// used as an HMAC secret (algorithm confusion).
pub const USER_JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            http_addr: ([127, 0, 0, 1], 8080).into(),
            tenant_grpc_addr: ([127, 0, 0, 1], 50051).into(),
            entitlement_grpc_addr: ([127, 0, 0, 1], 50052).into(),
            tenant_database_url: None,
            entitlement_database_url: None,
            tenant_db_schema: "tenant".to_owned(),
            entitlement_db_schema: "entitlement".to_owned(),
            db_max_connections: 10,
            db_acquire_timeout_ms: 5_000,
            tenant_service_url: None,
            entitlement_service_url: None,
            service_token: None,
            tls_cert_path: None,
            tls_key_path: None,
            tls_ca_path: None,
            request_timeout_ms: 30_000,
            concurrency_limit: 1_024,
            max_message_bytes: 4 * 1024 * 1024,
            shutdown_grace_ms: 25_000,
            idempotency_retention_secs: 24 * 60 * 60,
            audit_retention_days: 365,
            audit_enabled: true,
            log_level: "info".to_owned(),
            log_format: LogFormat::Auto,
            migrate_on_start: true,
            max_hierarchy_depth: 16,
            feed_retention_secs: 7 * 24 * 3_600,
            feed_retention_events: 0,
            feed_lag_alarm_secs: 30,
            client_id: None,
            client_secret: None,
            client_credentials: None,
            vendor_id: None,
            env_token_hs256_secret: None,
            env_token_ed25519_key_path: None,
            env_token_ttl_secs: 3_600,
            user_jwt_jwks_url: None,
            user_jwt_public_key_path: None,
            user_jwt_hs256_secret: None,
            user_jwt_algorithm: "RS256".to_owned(),
            user_jwt_issuer: None,
            user_jwt_audience: None,
            http_body_limit_bytes: 1024 * 1024,
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            cors_allowed_origins: Vec::new(),
            check_coalesce_max: 128,
            max_revision_waiters: 256,
            http_header_read_timeout_ms: 10_000,
            http_body_idle_timeout_ms: 5_000,
            http_body_read_timeout_ms: 10_000,
            stream_heartbeat_secs: 10,
            stream_max_subscribers: 1_024,
            sse_max_streams: 256,
            agent_http_addr: ([127, 0, 0, 1], 8181).into(),
            agent_grpc_addr: ([127, 0, 0, 1], 8182).into(),
            agent_snapshot_file: None,
            agent_accounts: Vec::new(),
            agent_allow_unauthenticated_non_loopback: false,
            agent_token: None,
            webhook_allow_private_networks: false,
            webhook_retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(str::to_owned)
                .to_vec(),
            webhook_timeout_ms: 10_000,
            webhook_disable_after_secs: 5 * 24 * 3_600,
            webhook_poll_ms: 1_000,
            webhook_delivery_retention_secs: 30 * 24 * 3_600,
            webhook_expiring_lead_times: ["7d", "1d"].map(str::to_owned).to_vec(),
            webhook_usage_thresholds: ["50", "80", "100"].map(str::to_owned).to_vec(),
            console_enabled: true,
            console_session_ttl_secs: 8 * 3_600,
            console_session_key: None,
            console_cookie_secure: false,
        }
    }
}

/// Command-line flags common to every binary; each overrides the matching key.
#[derive(Args, Clone, Debug, Default, Serialize)]
pub struct ConfigArgs {
    /// TOML configuration file (keys as in the README's configuration table).
    #[arg(long, env = ENV_CONFIG_FILE, global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for embedded SQLite files and generated development credentials.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// REST gateway listen address.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    /// Tenant service gRPC listen address.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_grpc_addr: Option<SocketAddr>,
    /// Entitlement service gRPC listen address.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlement_grpc_addr: Option<SocketAddr>,
    /// Tenant service database URL.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_database_url: Option<String>,
    /// Entitlement service database URL.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlement_database_url: Option<String>,
    /// Where clients reach the tenant service.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_service_url: Option<String>,
    /// Where clients reach the entitlement service.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlement_service_url: Option<String>,
    /// Log filter, e.g. `info,tenantry=debug`.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// `auto`, `pretty` or `json`.
    #[arg(long, global = true, value_parser = ["auto", "pretty", "json"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

/// A configuration that could not be loaded or is not valid; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: {0}")]
    Load(String),
    #[error("configuration error: `{key}` {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Loads defaults → file → environment → flags, then validates.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        Self::load_from(args, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        args: &ConfigArgs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let env: Vec<(String, String)> = env.into_iter().collect();
        let file = args.config.clone().or_else(|| {
            env.iter()
                .find(|(k, _)| k == ENV_CONFIG_FILE)
                .map(|(_, v)| PathBuf::from(v))
        });
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let vars: Vec<(String, String)> = env
            .iter()
            .filter(|&(k, _)| k.starts_with(ENV_PREFIX) && k != ENV_CONFIG_FILE)
            .cloned()
            .collect();
        figment = figment.merge(EnvList(vars));
        figment = figment.merge(Serialized::defaults(args));
        // Lossy: environment values arrive as text and become numbers or booleans only where
        // the key wants one, so a secret or ID made of digits stays the text it was.
        let config: Config = figment
            .extract_lossy()
            .map_err(|e| ConfigError::Load(describe_figment_error(&e)))?;
        config.validate()?;
        // `RUST_LOG` replaces `log_level` when set, so it is held to the same rule.
        if let Some((_, filter)) = env.iter().find(|(k, _)| k == ENV_RUST_LOG)
            && !filter.trim().is_empty()
        {
            check_log_filter(filter).map_err(|message| ConfigError::Invalid {
                key: ENV_RUST_LOG,
                message,
            })?;
        }
        Ok(config)
    }

    /// Checks the values that types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        for (key, url) in [
            ("tenant_database_url", &self.tenant_database_url),
            ("entitlement_database_url", &self.entitlement_database_url),
        ] {
            if let Some(url) = url {
                let url = url.expose();
                if !(url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:"))
                {
                    // The URL may hold a password: name the scheme only.
                    let scheme = url.split(':').next().unwrap_or_default();
                    return Err(invalid(
                        key,
                        format!(
                            "must start with postgres://, postgresql:// or sqlite: (got scheme `{scheme}`)"
                        ),
                    ));
                }
            }
        }
        for (key, schema) in [
            ("tenant_db_schema", &self.tenant_db_schema),
            ("entitlement_db_schema", &self.entitlement_db_schema),
        ] {
            let ok = !schema.is_empty()
                && schema.len() <= 63
                && schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !schema.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(invalid(
                    key,
                    format!(
                        "must be 1-63 lowercase letters, digits or `_`, not starting with a digit (got `{schema}`)"
                    ),
                ));
            }
        }
        for (key, url) in [
            ("tenant_service_url", &self.tenant_service_url),
            ("entitlement_service_url", &self.entitlement_service_url),
            ("user_jwt_jwks_url", &self.user_jwt_jwks_url),
        ] {
            if let Some(url) = url
                && !is_http_url(url)
            {
                return Err(invalid(
                    key,
                    format!("must be an http:// or https:// URL with a host (got `{url}`)"),
                ));
            }
        }
        if self.tls_cert_path.is_some() != self.tls_key_path.is_some() {
            return Err(invalid(
                "tls_cert_path",
                "and `tls_key_path` must be set together",
            ));
        }
        for (key, path) in [
            ("tls_cert_path", &self.tls_cert_path),
            ("tls_key_path", &self.tls_key_path),
            ("tls_ca_path", &self.tls_ca_path),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(invalid(
                    key,
                    format!("names a file that does not exist: {}", path.display()),
                ));
            }
        }
        for (key, token) in [
            ("service_token", &self.service_token),
            ("agent_token", &self.agent_token),
        ] {
            let Some(token) = token else { continue };
            if token.expose().len() < 16 {
                return Err(invalid(key, "must be at least 16 characters"));
            }
            // It travels as `authorization: Bearer <token>`; a token that is not a valid header
            // value would silently be sent as no token at all.
            if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(key, "must be printable ASCII without spaces"));
            }
        }
        if self.client_id.is_some() != self.client_secret.is_some() {
            return Err(invalid(
                "client_id",
                "and `client_secret` must be set together",
            ));
        }
        if let Some(id) = &self.client_id {
            check_client_id(id).map_err(|message| invalid("client_id", message))?;
        }
        if let Some(id) = &self.vendor_id {
            check_client_id(id).map_err(|message| invalid("vendor_id", message))?;
        }
        for (key, value) in [
            ("user_jwt_issuer", &self.user_jwt_issuer),
            ("user_jwt_audience", &self.user_jwt_audience),
        ] {
            if matches!(value, Some(v) if v.trim().is_empty()) {
                return Err(invalid(key, "must not be empty when set"));
            }
        }
        self.validate_gateway()?;
        if !(1..=100_000).contains(&self.max_revision_waiters) {
            return Err(invalid(
                "max_revision_waiters",
                format!("must be 1 to 100000 (got {})", self.max_revision_waiters),
            ));
        }
        for (key, value) in [
            ("db_max_connections", u64::from(self.db_max_connections)),
            ("db_acquire_timeout_ms", self.db_acquire_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("concurrency_limit", self.concurrency_limit as u64),
            ("max_message_bytes", self.max_message_bytes as u64),
            ("max_hierarchy_depth", u64::from(self.max_hierarchy_depth)),
            (
                "idempotency_retention_secs",
                self.idempotency_retention_secs,
            ),
            ("feed_lag_alarm_secs", self.feed_lag_alarm_secs),
            ("stream_heartbeat_secs", self.stream_heartbeat_secs),
            ("stream_max_subscribers", self.stream_max_subscribers as u64),
            ("sse_max_streams", self.sse_max_streams as u64),
            ("webhook_timeout_ms", self.webhook_timeout_ms),
            (
                "webhook_disable_after_secs",
                self.webhook_disable_after_secs,
            ),
            ("webhook_poll_ms", self.webhook_poll_ms),
            (
                "webhook_delivery_retention_secs",
                self.webhook_delivery_retention_secs,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        for (key, value, max) in [
            (
                "db_acquire_timeout_ms",
                self.db_acquire_timeout_ms,
                MAX_DURATION_MS,
            ),
            (
                "request_timeout_ms",
                self.request_timeout_ms,
                MAX_DURATION_MS,
            ),
            ("shutdown_grace_ms", self.shutdown_grace_ms, MAX_DURATION_MS),
            (
                "idempotency_retention_secs",
                self.idempotency_retention_secs,
                MAX_IDEMPOTENCY_RETENTION_SECS,
            ),
            (
                "env_token_ttl_secs",
                self.env_token_ttl_secs,
                MAX_ENV_TOKEN_TTL_SECS,
            ),
            (
                "audit_retention_days",
                self.audit_retention_days,
                MAX_AUDIT_RETENTION_DAYS,
            ),
            // tokio's semaphore panics above this many permits.
            (
                "concurrency_limit",
                self.concurrency_limit as u64,
                tokio::sync::Semaphore::MAX_PERMITS as u64,
            ),
            ("webhook_timeout_ms", self.webhook_timeout_ms, 5 * 60 * 1000),
            ("webhook_poll_ms", self.webhook_poll_ms, 60 * 1000),
            (
                "webhook_disable_after_secs",
                self.webhook_disable_after_secs,
                365 * 24 * 3_600,
            ),
            (
                "webhook_delivery_retention_secs",
                self.webhook_delivery_retention_secs,
                10 * 365 * 24 * 3_600,
            ),
        ] {
            if value > max {
                return Err(invalid(key, format!("must be at most {max} (got {value})")));
            }
        }
        if self.webhook_retry_schedule.len() > 20 {
            return Err(invalid("webhook_retry_schedule", "at most 20 steps"));
        }
        for step in &self.webhook_retry_schedule {
            if parse_duration(step).is_none_or(|d| d > Duration::from_secs(7 * 24 * 3_600)) {
                return Err(invalid(
                    "webhook_retry_schedule",
                    format!("{step:?} is not a duration of at most 7d such as 500ms, 5s, 5m, 2h"),
                ));
            }
        }
        if self.webhook_expiring_lead_times.len() > MAX_EXPIRING_LEAD_TIMES {
            return Err(invalid(
                "webhook_expiring_lead_times",
                format!("at most {MAX_EXPIRING_LEAD_TIMES} lead times"),
            ));
        }
        let mut leads = Vec::new();
        for lead in &self.webhook_expiring_lead_times {
            let parsed = parse_duration(lead).filter(|d| {
                d.subsec_nanos() == 0 && (1..=MAX_EXPIRING_LEAD_SECS).contains(&d.as_secs())
            });
            let Some(parsed) = parsed else {
                return Err(invalid(
                    "webhook_expiring_lead_times",
                    format!(
                        "{lead:?} is not a whole number of seconds from 1s to 366d such as 30s, 2h, 7d"
                    ),
                ));
            };
            if leads.contains(&parsed) {
                return Err(invalid(
                    "webhook_expiring_lead_times",
                    format!("{lead:?} is listed twice"),
                ));
            }
            leads.push(parsed);
        }
        if self.webhook_usage_thresholds.len() > MAX_USAGE_THRESHOLDS {
            return Err(invalid(
                "webhook_usage_thresholds",
                format!("at most {MAX_USAGE_THRESHOLDS} thresholds"),
            ));
        }
        let mut percents = Vec::new();
        for value in &self.webhook_usage_thresholds {
            let parsed = value
                .trim()
                .trim_end_matches('%')
                .parse::<u16>()
                .ok()
                .filter(|p| (1..=MAX_USAGE_THRESHOLD_PERCENT).contains(p));
            let Some(parsed) = parsed else {
                return Err(invalid(
                    "webhook_usage_thresholds",
                    format!(
                        "{value:?} is not a whole percentage from 1 to {MAX_USAGE_THRESHOLD_PERCENT}"
                    ),
                ));
            };
            if percents.contains(&parsed) {
                return Err(invalid(
                    "webhook_usage_thresholds",
                    format!("{value:?} is listed twice"),
                ));
            }
            percents.push(parsed);
        }
        // A bound this small would prune events before followers could read them.
        if (1..1_000).contains(&self.feed_retention_events) {
            return Err(invalid(
                "feed_retention_events",
                format!(
                    "must be 0 (no count bound) or at least 1000 (got {})",
                    self.feed_retention_events
                ),
            ));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(invalid(
                "max_message_bytes",
                format!(
                    "must be {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES} (got {})",
                    self.max_message_bytes
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(invalid(
                "data_dir",
                format!("names a file, not a directory: {}", self.data_dir.display()),
            ));
        }
        check_log_filter(&self.log_level).map_err(|message| invalid("log_level", message))?;
        Ok(())
    }

    /// The gateway's keys: credentials, token keys, user-token verification, limits, CORS.
    fn validate_gateway(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key,
                message: message.into(),
            }
        }
        if let Some(list) = &self.client_credentials {
            let mut ids: Vec<&str> = self.client_id.iter().map(|id| id.as_str()).collect();
            // Name the position only: the entry holds a secret.
            for (i, pair) in list.expose().split(',').enumerate() {
                let Some((id, secret)) = pair.trim().split_once(':') else {
                    return Err(invalid(
                        "client_credentials",
                        format!("entry {} is not `id:secret`", i + 1),
                    ));
                };
                let id = id.trim();
                if secret.trim().is_empty() {
                    return Err(invalid(
                        "client_credentials",
                        format!("entry {} has an empty secret", i + 1),
                    ));
                }
                check_client_id(id).map_err(|message| {
                    invalid("client_credentials", format!("entry {}: {message}", i + 1))
                })?;
                // Only one secret can be accepted per ID: a second would silently not work.
                if ids.contains(&id) {
                    return Err(invalid(
                        "client_credentials",
                        format!("entry {}: client ID `{id}` is configured twice", i + 1),
                    ));
                }
                ids.push(id);
            }
        }
        validate_client_secrets(self)?;
        for (key, secret) in [
            ("env_token_hs256_secret", &self.env_token_hs256_secret),
            ("user_jwt_hs256_secret", &self.user_jwt_hs256_secret),
        ] {
            if matches!(secret, Some(s) if s.expose().len() < 32) {
                return Err(invalid(key, "must be at least 32 characters"));
            }
        }
        if self.env_token_hs256_secret.is_some() && self.env_token_ed25519_key_path.is_some() {
            return Err(invalid(
                "env_token_hs256_secret",
                "and `env_token_ed25519_key_path` are exclusive: set one",
            ));
        }
        let user_sources = [
            self.user_jwt_jwks_url.is_some(),
            self.user_jwt_public_key_path.is_some(),
            self.user_jwt_hs256_secret.is_some(),
        ];
        if user_sources.iter().filter(|set| **set).count() > 1 {
            return Err(invalid(
                "user_jwt_jwks_url",
                "`user_jwt_public_key_path` and `user_jwt_hs256_secret` are exclusive: set one",
            ));
        }
        for (key, path) in [
            (
                "env_token_ed25519_key_path",
                &self.env_token_ed25519_key_path,
            ),
            ("user_jwt_public_key_path", &self.user_jwt_public_key_path),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(invalid(
                    key,
                    format!("names a file that does not exist: {}", path.display()),
                ));
            }
        }
        if !USER_JWT_ALGORITHMS.contains(&self.user_jwt_algorithm.as_str()) {
            return Err(invalid(
                "user_jwt_algorithm",
                format!(
                    "must be one of {} (got `{}`)",
                    USER_JWT_ALGORITHMS.join(", "),
                    self.user_jwt_algorithm
                ),
            ));
        }
        for origin in &self.cors_allowed_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && http::HeaderValue::from_str(origin).is_ok()
                    && !origin.ends_with('/'));
            if !ok {
                return Err(invalid(
                    "cors_allowed_origins",
                    format!("`{origin}` is not `*` or an origin like https://app.example.com"),
                ));
            }
        }
        if matches!(&self.console_session_key, Some(k) if k.expose().len() < 32) {
            return Err(invalid(
                "console_session_key",
                "must be at least 32 characters",
            ));
        }
        if !(60..=MAX_ENV_TOKEN_TTL_SECS).contains(&self.console_session_ttl_secs) {
            return Err(invalid(
                "console_session_ttl_secs",
                format!(
                    "must be 60 to {MAX_ENV_TOKEN_TTL_SECS} (got {})",
                    self.console_session_ttl_secs
                ),
            ));
        }
        if !(1..=1_000).contains(&self.check_coalesce_max) {
            return Err(invalid(
                "check_coalesce_max",
                format!("must be 1 to 1000 (got {})", self.check_coalesce_max),
            ));
        }
        for (key, value) in [
            ("env_token_ttl_secs", self.env_token_ttl_secs),
            ("http_body_limit_bytes", self.http_body_limit_bytes as u64),
            (
                "rate_limit_per_second",
                u64::from(self.rate_limit_per_second),
            ),
            ("rate_limit_burst", u64::from(self.rate_limit_burst)),
            (
                "http_header_read_timeout_ms",
                self.http_header_read_timeout_ms,
            ),
            ("http_body_idle_timeout_ms", self.http_body_idle_timeout_ms),
            ("http_body_read_timeout_ms", self.http_body_read_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        Ok(())
    }

    /// The tenant service database URL, defaulting to a SQLite file in `data_dir`.
    pub fn tenant_database(&self) -> String {
        self.database_url(&self.tenant_database_url, "tenant.db")
    }

    /// The entitlement service database URL, defaulting to a SQLite file in `data_dir`.
    pub fn entitlement_database(&self) -> String {
        self.database_url(&self.entitlement_database_url, "entitlement.db")
    }

    fn database_url(&self, configured: &Option<Secret>, file: &str) -> String {
        match configured {
            Some(url) => url.expose().to_owned(),
            None => sqlite_url(&self.data_dir.join(file)),
        }
    }

    /// Where clients reach the tenant service.
    pub fn tenant_endpoint(&self) -> String {
        self.endpoint(&self.tenant_service_url, self.tenant_grpc_addr)
    }

    /// Where clients reach the entitlement service.
    pub fn entitlement_endpoint(&self) -> String {
        self.endpoint(&self.entitlement_service_url, self.entitlement_grpc_addr)
    }

    fn endpoint(&self, configured: &Option<String>, addr: SocketAddr) -> String {
        match configured {
            Some(url) => url.clone(),
            None => {
                let scheme = if self.tls_cert_path.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{addr}")
            }
        }
    }

    /// The age past which change-feed events are pruned, when bounded.
    pub fn feed_retention_age(&self) -> Option<Duration> {
        (self.feed_retention_secs > 0).then(|| Duration::from_secs(self.feed_retention_secs))
    }

    /// `webhook_expiring_lead_times`, parsed (validated at start).
    pub fn webhook_expiring_lead_times(&self) -> Vec<Duration> {
        self.webhook_expiring_lead_times
            .iter()
            .filter_map(|s| parse_duration(s))
            .collect()
    }

    /// `webhook_usage_thresholds` in percent, parsed (validated at start).
    pub fn webhook_usage_thresholds(&self) -> Vec<u16> {
        self.webhook_usage_thresholds
            .iter()
            .filter_map(|s| s.trim().trim_end_matches('%').parse().ok())
            .collect()
    }

    /// `webhook_retry_schedule`, parsed (validated at start).
    pub fn webhook_retry_schedule(&self) -> Vec<Duration> {
        self.webhook_retry_schedule
            .iter()
            .filter_map(|s| parse_duration(s))
            .collect()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn http_header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_read_timeout_ms)
    }

    pub fn http_body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_idle_timeout_ms)
    }

    pub fn http_body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http_body_read_timeout_ms)
    }

    /// How long audit entries are kept; `None`: for ever.
    pub fn audit_retention(&self) -> Option<chrono::Duration> {
        (self.audit_retention_days > 0).then(|| {
            chrono::Duration::days(i64::try_from(self.audit_retention_days).unwrap_or(i64::MAX))
        })
    }

    pub fn idempotency_retention(&self) -> Duration {
        Duration::from_secs(self.idempotency_retention_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn db_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms)
    }
}

/// Shortest `client_secret` (and secret of each `client_credentials` pair) accepted.
pub const MIN_CLIENT_SECRET_CHARS: usize = 24;
/// Fewest distinct characters such a secret must have: refuses `aaaa…` and `1212…`.
pub const MIN_CLIENT_SECRET_DISTINCT: usize = 10;

/// Environment credentials guard every account: a secret short or repetitive enough to
/// guess online is refused at start. The message names the key (and pair), never the secret.
fn validate_client_secrets(config: &Config) -> Result<(), ConfigError> {
    let weak = |secret: &str| {
        let distinct: std::collections::HashSet<char> = secret.chars().collect();
        secret.chars().count() < MIN_CLIENT_SECRET_CHARS
            || distinct.len() < MIN_CLIENT_SECRET_DISTINCT
    };
    let rule = format!(
        "must be at least {MIN_CLIENT_SECRET_CHARS} characters with at least \
         {MIN_CLIENT_SECRET_DISTINCT} different ones (e.g. `openssl rand -hex 24`)"
    );
    if config
        .client_secret
        .as_ref()
        .is_some_and(|s| weak(s.expose()))
    {
        return Err(ConfigError::Invalid {
            key: "client_secret",
            message: rule,
        });
    }
    if let Some(list) = &config.client_credentials {
        for (i, pair) in list.expose().split(',').enumerate() {
            if let Some((_, secret)) = pair.trim().split_once(':')
                && weak(secret.trim())
            {
                return Err(ConfigError::Invalid {
                    key: "client_credentials",
                    message: format!("entry {}: the secret {rule}", i + 1),
                });
            }
        }
    }
    Ok(())
}

/// A client ID: sent in JSON and compared exactly, so it must be visible text.
fn check_client_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if id.trim() != id || id.chars().any(char::is_control) {
        return Err("must not start or end with spaces or hold control characters".to_owned());
    }
    Ok(())
}

/// `http://` or `https://` with a host.
fn is_http_url(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
    })
}

/// A log filter every directive of which sets a level. `EnvFilter` reads a bare word as a
/// target enabled at every level, so a misspelt level (`loud`) silently turned all logging off.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    if filter.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let is_level = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive))
            || matches!(directive, "0" | "1" | "2" | "3" | "4" | "5");
        if !(is_level || directive.contains('=') || directive.contains('[')) {
            return Err(format!(
                "has the directive `{directive}`, which is neither a level ({}) nor `target=level`",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|e| format!("is not a valid filter: {e}"))
}

/// A list given as a TOML array or as one comma-separated string (environment variables).
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// [`string_or_list`] whose items may also be numbers (`[50, 80]` in TOML).
fn number_or_string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Text(String),
        Number(i64),
    }
    impl Item {
        fn text(self) -> String {
            match self {
                Item::Text(s) => s,
                Item::Number(n) => n.to_string(),
            }
        }
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Item),
        Many(Vec<Item>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(item) => item
            .text()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v.into_iter().map(Item::text).collect(),
    })
}

/// A SQLite URL that creates the file when missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// `TENANTRY_HTTP_ADDR=…` → key `http_addr`, from a list we were given rather than the process
/// environment. Values stay strings: `extract_lossy` turns them into numbers or booleans for the
/// keys that want one (figment's `Env` guesses types, which made a numeric secret a type error).
struct EnvList(Vec<(String, String)>);

impl figment::Provider for EnvList {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("`TENANTRY_*` environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.0 {
            let key = key[ENV_PREFIX.len()..].to_ascii_lowercase();
            dict.insert(key, figment::value::Value::from(value.clone()));
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "figment's error kinds are many; the rest are described generically"
)]
fn describe_figment_error(error: &figment::Error) -> String {
    // figment errors may quote the offending value, which could be a secret: name key and source.
    let mut parts = Vec::new();
    for e in error.clone() {
        let key = e.path.join(".");
        let source = e
            .metadata
            .as_ref()
            .map(|m| m.name.to_string())
            .unwrap_or_else(|| "configuration".to_owned());
        let kind = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => format!("unknown key `{field}`"),
            figment::error::Kind::InvalidType(actual, expected) => {
                format!("`{key}` has the wrong type: found {actual}, expected {expected}")
            }
            figment::error::Kind::InvalidValue(_, expected) => {
                format!("`{key}` has an invalid value: expected {expected}")
            }
            figment::error::Kind::UnknownVariant(_, expected) => {
                format!("`{key}` has an unknown value: expected one of {expected:?}")
            }
            figment::error::Kind::Message(msg) => {
                if key.is_empty() {
                    msg.clone()
                } else {
                    format!("`{key}`: {msg}")
                }
            }
            other => format!("`{key}`: {other}"),
        };
        parts.push(format!("{kind} (from {source})"));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_laptop_setup() {
        let c = Config::load_from(&ConfigArgs::default(), env(&[])).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.tenant_grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.entitlement_grpc_addr.to_string(), "127.0.0.1:50052");
        assert_eq!(c.tenant_database(), "sqlite://./data/tenant.db?mode=rwc");
        assert_eq!(c.tenant_endpoint(), "http://127.0.0.1:50051");
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenantry.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:1000\"\nlog_level = \"debug\"\nmax_hierarchy_depth = 4\n",
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(file),
            log_level: Some("warn".into()),
            ..ConfigArgs::default()
        };
        let c = Config::load_from(
            &args,
            env(&[
                ("TENANTRY_HTTP_ADDR", "127.0.0.1:2000"),
                ("TENANTRY_LOG_LEVEL", "trace"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:2000");
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.max_hierarchy_depth, 4);
    }

    #[test]
    fn expiring_lead_times_are_bounded_distinct_whole_seconds() {
        let load = |value: &str| {
            Config::load_from(
                &ConfigArgs::default(),
                env(&[("TENANTRY_WEBHOOK_EXPIRING_LEAD_TIMES", value)]),
            )
        };
        let c = Config::load_from(&ConfigArgs::default(), env(&[])).unwrap();
        assert_eq!(
            c.webhook_expiring_lead_times(),
            [Duration::from_secs(7 * 86_400), Duration::from_secs(86_400)]
        );
        let c = load("2s, 30m").unwrap();
        assert_eq!(
            c.webhook_expiring_lead_times(),
            [Duration::from_secs(2), Duration::from_secs(1_800)]
        );
        assert!(load("").unwrap().webhook_expiring_lead_times().is_empty());
        for bad in [
            "0s",
            "1500ms",
            "367d",
            "soon",
            "1d,24h",
            "1s,2s,3s,4s,5s,6s,7s,8s,9s,10s,11s",
        ] {
            let err = load(bad).unwrap_err().to_string();
            assert!(err.contains("webhook_expiring_lead_times"), "{bad}: {err}");
        }
    }

    #[test]
    fn usage_thresholds_are_bounded_distinct_percentages() {
        let load = |value: &str| {
            Config::load_from(
                &ConfigArgs::default(),
                env(&[("TENANTRY_WEBHOOK_USAGE_THRESHOLDS", value)]),
            )
        };
        let c = Config::load_from(&ConfigArgs::default(), env(&[])).unwrap();
        assert_eq!(c.webhook_usage_thresholds(), [50, 80, 100]);
        assert_eq!(
            load("75, 90%,150").unwrap().webhook_usage_thresholds(),
            [75, 90, 150]
        );
        assert_eq!(load("100").unwrap().webhook_usage_thresholds(), [100]);
        assert!(load("").unwrap().webhook_usage_thresholds().is_empty());
        for bad in [
            "0",
            "1001",
            "half",
            "50,50",
            "-5",
            "1,2,3,4,5,6,7,8,9,10,11",
        ] {
            let err = load(bad).unwrap_err().to_string();
            assert!(err.contains("webhook_usage_thresholds"), "{bad}: {err}");
        }
        // A TOML list of numbers.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenantry.toml");
        std::fs::write(&file, "webhook_usage_thresholds = [25, 100]\n").unwrap();
        let args = ConfigArgs {
            config: Some(file),
            ..ConfigArgs::default()
        };
        let c = Config::load_from(&args, env(&[])).unwrap();
        assert_eq!(c.webhook_usage_thresholds(), [25, 100]);
    }

    #[test]
    fn unknown_environment_key_is_refused_by_name() {
        let err = Config::load_from(
            &ConfigArgs::default(),
            env(&[("TENANTRY_HTTP_ADRR", "127.0.0.1:1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown key `http_adrr`"), "{err}");
        assert!(err.contains("TENANTRY_"), "{err}");
    }

    #[test]
    fn unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        let args = ConfigArgs {
            config: Some(file),
            ..ConfigArgs::default()
        };
        let err = Config::load_from(&args, env(&[])).unwrap_err().to_string();
        assert!(err.contains("unknown key `no_such_setting`"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key_and_without_the_secret() {
        let err = Config::load_from(
            &ConfigArgs::default(),
            env(&[("TENANTRY_HTTP_ADDR", "not-an-address")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("http_addr"), "{err}");

        let err = Config::load_from(
            &ConfigArgs::default(),
            env(&[(
                "TENANTRY_TENANT_DATABASE_URL",
                "mysql://root:hunter2hunter2@db/x",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tenant_database_url"), "{err}");
        assert!(!err.contains("hunter2"), "secret leaked: {err}");

        let err = Config::load_from(
            &ConfigArgs::default(),
            env(&[("TENANTRY_LOG_FORMAT", "xml")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("log_format"), "{err}");

        let err = Config::load_from(
            &ConfigArgs::default(),
            env(&[("TENANTRY_REQUEST_TIMEOUT_MS", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("request_timeout_ms"), "{err}");

        let err = Config::load_from(
            &ConfigArgs::default(),
            env(&[("TENANTRY_SERVICE_TOKEN", "short")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("service_token"), "{err}");
        assert!(!err.contains("short"), "secret leaked: {err}");
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let c = Config {
            service_token: Some(Secret::new("super-secret-token-value")),
            ..Config::default()
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("super-secret"), "{printed}");
    }

    #[test]
    fn gateway_keys_are_parsed_and_validated() {
        let c = Config::load_from(
            &ConfigArgs::default(),
            env(&[
                (
                    "TENANTRY_CORS_ALLOWED_ORIGINS",
                    "https://app.example.com, http://localhost:3000",
                ),
                (
                    "TENANTRY_CLIENT_CREDENTIALS",
                    "ci:first-secret-4f9a2c7e1b3d,ops:second-secret-8e0d6b5a9c2f",
                ),
                ("TENANTRY_USER_JWT_ISSUER", "https://idp.example.com/"),
                ("TENANTRY_RATE_LIMIT_PER_SECOND", "7"),
                ("TENANTRY_CHECK_COALESCE_MAX", "1"),
                ("TENANTRY_MAX_REVISION_WAITERS", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.cors_allowed_origins,
            vec!["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(c.rate_limit_per_second, 7);
        assert_eq!(c.check_coalesce_max, 1);
        assert_eq!(c.max_revision_waiters, 8);
        assert_eq!(c.user_jwt_algorithm, "RS256");

        let refused = |pairs: &[(&str, &str)], key: &str| {
            let err = Config::load_from(&ConfigArgs::default(), env(pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
            err
        };
        let err = refused(
            &[("TENANTRY_CLIENT_CREDENTIALS", "ok:fine,broken-hunter2")],
            "client_credentials",
        );
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
        let err = refused(
            &[("TENANTRY_USER_JWT_HS256_SECRET", "too-short-hunter2")],
            "user_jwt_hs256_secret",
        );
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
        refused(
            &[
                (
                    "TENANTRY_USER_JWT_HS256_SECRET",
                    "0123456789abcdef0123456789abcdef",
                ),
                (
                    "TENANTRY_USER_JWT_JWKS_URL",
                    "https://idp.example.com/jwks.json",
                ),
            ],
            "user_jwt_jwks_url",
        );
        refused(
            &[("TENANTRY_USER_JWT_ALGORITHM", "HS256")],
            "user_jwt_algorithm",
        );
        refused(
            &[("TENANTRY_USER_JWT_ALGORITHM", "none")],
            "user_jwt_algorithm",
        );
        refused(
            &[("TENANTRY_CORS_ALLOWED_ORIGINS", "app.example.com")],
            "cors_allowed_origins",
        );
        refused(
            &[("TENANTRY_HTTP_BODY_LIMIT_BYTES", "0")],
            "http_body_limit_bytes",
        );
        refused(
            &[("TENANTRY_CHECK_COALESCE_MAX", "0")],
            "check_coalesce_max",
        );
        refused(
            &[("TENANTRY_CHECK_COALESCE_MAX", "1001")],
            "check_coalesce_max",
        );
        refused(
            &[("TENANTRY_MAX_REVISION_WAITERS", "0")],
            "max_revision_waiters",
        );
        refused(
            &[("TENANTRY_USER_JWT_JWKS_URL", "ftp://idp/jwks")],
            "user_jwt_jwks_url",
        );
    }

    #[test]
    fn console_keys_default_on_and_are_validated() {
        let c = Config::load_from(&ConfigArgs::default(), env(&[])).unwrap();
        assert!(c.console_enabled);
        assert_eq!(c.console_session_ttl_secs, 8 * 3_600);
        assert!(c.console_session_key.is_none() && !c.console_cookie_secure);
        let c = Config::load_from(
            &ConfigArgs::default(),
            env(&[
                ("TENANTRY_CONSOLE_ENABLED", "false"),
                ("TENANTRY_CONSOLE_COOKIE_SECURE", "true"),
                ("TENANTRY_CONSOLE_SESSION_TTL_SECS", "900"),
            ]),
        )
        .unwrap();
        assert!(!c.console_enabled && c.console_cookie_secure);
        assert_eq!(c.console_session_ttl_secs, 900);
        let err = refused_naming(
            &[("TENANTRY_CONSOLE_SESSION_KEY", "short-hunter2")],
            "console_session_key",
        );
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
        refused_naming(
            &[("TENANTRY_CONSOLE_SESSION_TTL_SECS", "0")],
            "console_session_ttl_secs",
        );
    }

    fn refused_naming(pairs: &[(&str, &str)], key: &str) -> String {
        let err = Config::load_from(&ConfigArgs::default(), env(pairs))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{pairs:?}: {err}");
        err
    }

    #[test]
    fn a_log_filter_that_names_no_level_is_refused() {
        // `loud` used to parse as a target enabled at every level: all other logging went dark.
        for bad in ["loud", "info,loud", "tenantry=loud", "inf0"] {
            let err = refused_naming(&[("TENANTRY_LOG_LEVEL", bad)], "log_level");
            assert!(err.contains("level"), "{err}");
        }
        refused_naming(&[("RUST_LOG", "loud")], "RUST_LOG");
        for good in [
            "info",
            "WARN",
            "off",
            "3",
            "info,tenantry=debug,sqlx=warn",
            "h2=info",
        ] {
            let c = Config::load_from(
                &ConfigArgs::default(),
                env(&[("TENANTRY_LOG_LEVEL", good), ("RUST_LOG", "debug")]),
            )
            .unwrap();
            assert_eq!(c.log_level, good);
        }
    }

    #[test]
    fn an_empty_or_blank_client_id_is_not_a_credential() {
        for bad in ["", "  ", " padded", "tab\there"] {
            refused_naming(
                &[
                    ("TENANTRY_CLIENT_ID", bad),
                    ("TENANTRY_CLIENT_SECRET", "a-secret-long-enough-for-anyone"),
                ],
                "client_id",
            );
        }
        let err = refused_naming(
            &[(
                "TENANTRY_CLIENT_CREDENTIALS",
                "ci:first-hunter2, :second-hunter2",
            )],
            "client_credentials",
        );
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
        let err = refused_naming(
            &[
                ("TENANTRY_CLIENT_ID", "ci"),
                ("TENANTRY_CLIENT_SECRET", "a-secret-long-enough-for-anyone"),
                ("TENANTRY_CLIENT_CREDENTIALS", "ops:x-hunter2,ci:y-hunter2"),
            ],
            "client_credentials",
        );
        assert!(err.contains("twice"), "{err}");
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
    }

    #[test]
    fn secrets_and_ids_made_of_digits_stay_text() {
        let c = Config::load_from(
            &ConfigArgs::default(),
            env(&[
                ("TENANTRY_CLIENT_ID", "12345"),
                ("TENANTRY_CLIENT_SECRET", "1234567890123456789012345.50"),
                ("TENANTRY_SERVICE_TOKEN", "00012345678901234567"),
                ("TENANTRY_MIGRATE_ON_START", "false"),
                ("TENANTRY_DB_MAX_CONNECTIONS", "3"),
                ("TENANTRY_AUDIT_ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.client_id.as_deref(), Some("12345"));
        assert_eq!(
            c.client_secret.unwrap().expose(),
            "1234567890123456789012345.50"
        );
        assert_eq!(c.service_token.unwrap().expose(), "00012345678901234567");
        assert!(!c.migrate_on_start);
        assert_eq!(c.db_max_connections, 3);
        assert!(!c.audit_enabled);
        assert!(Config::default().audit_enabled);
    }

    #[test]
    fn every_key_refuses_values_it_cannot_work_with() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let file = file.to_str().unwrap();
        let cases: &[(&str, &str, &str)] = &[
            ("TENANTRY_DATA_DIR", "", "data_dir"),
            ("TENANTRY_DATA_DIR", file, "data_dir"),
            (
                "TENANTRY_TENANT_SERVICE_URL",
                "http://",
                "tenant_service_url",
            ),
            (
                "TENANTRY_ENTITLEMENT_SERVICE_URL",
                "grpc://x:1",
                "entitlement_service_url",
            ),
            (
                "TENANTRY_USER_JWT_JWKS_URL",
                "https:///jwks",
                "user_jwt_jwks_url",
            ),
            ("TENANTRY_USER_JWT_ISSUER", "", "user_jwt_issuer"),
            ("TENANTRY_VENDOR_ID", " ", "vendor_id"),
            ("TENANTRY_USER_JWT_AUDIENCE", " ", "user_jwt_audience"),
            (
                "TENANTRY_SERVICE_TOKEN",
                "0123456789abcdef\nx",
                "service_token",
            ),
            (
                "TENANTRY_SERVICE_TOKEN",
                "0123456789 abcdef",
                "service_token",
            ),
            (
                "TENANTRY_CONCURRENCY_LIMIT",
                "9223372036854775807",
                "concurrency_limit",
            ),
            (
                "TENANTRY_ENV_TOKEN_TTL_SECS",
                "18446744073709551615",
                "env_token_ttl_secs",
            ),
            (
                "TENANTRY_SHUTDOWN_GRACE_MS",
                "18446744073709551615",
                "shutdown_grace_ms",
            ),
            (
                "TENANTRY_REQUEST_TIMEOUT_MS",
                "864000000",
                "request_timeout_ms",
            ),
            (
                "TENANTRY_DB_ACQUIRE_TIMEOUT_MS",
                "864000000",
                "db_acquire_timeout_ms",
            ),
            ("TENANTRY_MAX_MESSAGE_BYTES", "1", "max_message_bytes"),
            (
                "TENANTRY_MAX_MESSAGE_BYTES",
                "4294967296",
                "max_message_bytes",
            ),
            ("TENANTRY_MIGRATE_ON_START", "maybe", "migrate_on_start"),
            ("TENANTRY_AUDIT_ENABLED", "maybe", "audit_enabled"),
            ("TENANTRY_DB_MAX_CONNECTIONS", "-1", "db_max_connections"),
            (
                "TENANTRY_IDEMPOTENCY_RETENTION_SECS",
                "0",
                "idempotency_retention_secs",
            ),
            (
                "TENANTRY_IDEMPOTENCY_RETENTION_SECS",
                "31536001",
                "idempotency_retention_secs",
            ),
            (
                "TENANTRY_AUDIT_RETENTION_DAYS",
                "36501",
                "audit_retention_days",
            ),
        ];
        for (var, value, key) in cases {
            refused_naming(&[(var, value)], key);
        }
    }

    #[test]
    fn short_or_repetitive_client_secrets_are_refused_without_being_echoed() {
        let refused = |pairs: &[(&str, &str)], key: &str| {
            let err = Config::load_from(&ConfigArgs::default(), env(pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
            err
        };
        // 12 characters: what a guessing campaign found accepted.
        let err = refused(
            &[
                ("TENANTRY_CLIENT_ID", "vendor"),
                ("TENANTRY_CLIENT_SECRET", "hunter2abcde"),
            ],
            "client_secret",
        );
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
        refused(
            &[
                ("TENANTRY_CLIENT_ID", "vendor"),
                ("TENANTRY_CLIENT_SECRET", &"ab".repeat(20)),
            ],
            "client_secret",
        );
        let err = refused(
            &[(
                "TENANTRY_CLIENT_CREDENTIALS",
                "ci:7d1e0c9b4a2f8e6d5c3b1a09,ops:hunter2hunter2",
            )],
            "client_credentials",
        );
        assert!(err.contains("entry 2"), "{err}");
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
        Config::load_from(
            &ConfigArgs::default(),
            env(&[
                ("TENANTRY_CLIENT_ID", "vendor"),
                ("TENANTRY_CLIENT_SECRET", "7d1e0c9b4a2f8e6d5c3b1a09"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let args = ConfigArgs {
            config: Some(PathBuf::from("/definitely/not/here.toml")),
            ..ConfigArgs::default()
        };
        let err = Config::load_from(&args, env(&[])).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
