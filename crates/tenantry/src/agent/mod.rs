//! `tenantry agent`: a sidecar that answers entitlement checks from an index in its own memory.
//!
//! It follows the entitlement service's `WatchIndex` stream through the SDK's evaluator (no
//! database), and answers on its own listeners, without authentication by default — Frontegg's
//! agent model: a listener only the application's pod reaches, on loopback — or with a bearer
//! token (`agent_token`) when it must listen further. It never turns a check into a
//! call to the service: the REST routes are the gateway's check routes and the gRPC service is
//! the entitlement service's check handlers, both over the local index.
//!
//! - HTTP (default `127.0.0.1:8181`): `/v1/data/e10s/{features,permissions,routes}/…`,
//!   `/entitlements/api/v1/is-entitled-to` (+ `/batch`), OFREP (`/ofrep/v1/…`), `/readyz`,
//!   `/livez`, `/metrics`.
//! - gRPC (default `127.0.0.1:8182`): `EntitlementService` (checks, explain, what-if).
//! - Ready once it holds a snapshot — from the service, or from the snapshot file it keeps
//!   (fail-static); every answer says how stale it may be (`x-tenantry-*` headers).

mod ofrep;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;
use tenantry_client::{
    ClientConfig, EntitlementApi, EvalError, Evaluator, EvaluatorConfig, RetryPolicy, Staleness,
    index::EntitlementIndex,
};
use tenantry_common::{
    CancellationToken, Config, RunError,
    grpc::{ServerSettings, Services, bearer_matches, bind, serve},
    shutdown::drain_within_grace,
};
use tenantry_entitlement::{
    checks::{CheckService, IndexSource},
    domain::DomainError,
};
use tenantry_gateway::{Decide, Principal, unauthenticated_check_router};
use tenantry_proto::entitlement::v1::{
    BatchIsEntitledToRequest, BatchIsEntitledToResponse, EntitlementQuery, IsEntitledToRequest,
    IsEntitledToResponse,
    entitlement_service_server::{EntitlementService, EntitlementServiceServer},
};

/// Refuses an unauthenticated listener on a non-loopback address unless explicitly allowed
/// (or guarded by `agent_token`).
pub fn check_bind(config: &Config) -> Result<(), RunError> {
    if config.agent_token.is_some() {
        return Ok(());
    }
    for addr in [config.agent_http_addr, config.agent_grpc_addr] {
        if !addr.ip().is_loopback() && !config.agent_allow_unauthenticated_non_loopback {
            return Err(RunError::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to serve unauthenticated checks on {addr}, which is not a loopback \
                     address: anyone reaching it could read any account's entitlements. Bind to \
                     127.0.0.1 (the pod's loopback), set TENANTRY_AGENT_TOKEN to require a \
                     bearer token, or set TENANTRY_AGENT_ALLOW_UNAUTHENTICATED_NON_LOOPBACK=true \
                     if a network policy guards it"
                ),
            )));
        }
    }
    Ok(())
}

/// The follower's index as the entitlement check handlers see it.
#[derive(Debug)]
pub struct FollowedIndex(Evaluator);

impl IndexSource for FollowedIndex {
    async fn index_at(&self, min_revision: u64) -> Result<Arc<EntitlementIndex>, DomainError> {
        self.0
            .index_at_least(min_revision)
            .await
            .map_err(|e| match e {
                EvalError::NotReady => {
                    DomainError::Unavailable("the agent holds no index snapshot yet".to_owned())
                }
                EvalError::Behind { held, wanted } => DomainError::Unavailable(format!(
                    "the agent's index is at revision {}, below the requested minimum {wanted}; \
                     retry shortly",
                    held.unwrap_or_default()
                )),
            })
    }

    fn present(&self, index: &EntitlementIndex) -> chrono::DateTime<chrono::Utc> {
        index.present(chrono::Utc::now())
    }

    fn revision(&self) -> u64 {
        self.0.revision().unwrap_or_default()
    }
}

/// The REST check routes' decisions, from the check handlers over the local index.
#[derive(Debug, Clone)]
struct LocalDecide(CheckService<FollowedIndex>);

impl Decide for LocalDecide {
    async fn check(
        &self,
        _principal: &Principal,
        query: EntitlementQuery,
        min_revision: u64,
    ) -> Result<IsEntitledToResponse, tonic::Status> {
        let request = IsEntitledToRequest {
            query: Some(query),
            min_revision,
        };
        Ok(self
            .0
            .is_entitled_to(tonic::Request::new(request))
            .await?
            .into_inner())
    }

    async fn check_batch(
        &self,
        _principal: &Principal,
        request: BatchIsEntitledToRequest,
    ) -> Result<BatchIsEntitledToResponse, tonic::Status> {
        Ok(self
            .0
            .batch_is_entitled_to(tonic::Request::new(request))
            .await?
            .into_inner())
    }
}

const REVISION_HEADER: &str = "x-tenantry-revision";
const STALENESS_HEADER: &str = "x-tenantry-staleness-ms";
const STALE_HEADER: &str = "x-tenantry-stale";
const ORIGIN_HEADER: &str = "x-tenantry-index-origin";

/// How stale the answers are, as response headers (HTTP) or initial metadata (gRPC):
/// the revision held, milliseconds since the service was last heard from, whether the answers
/// may lag (not connected, or from the snapshot file), and where the index came from.
fn staleness_headers(s: &Staleness, headers: &mut HeaderMap) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    if let Some(revision) = s.revision {
        set(REVISION_HEADER, revision.to_string());
    }
    if let Some(age) = s.since_contact() {
        set(STALENESS_HEADER, age.as_millis().to_string());
    }
    set(STALE_HEADER, s.is_stale().to_string());
    set(ORIGIN_HEADER, s.origin.as_str().to_owned());
}

async fn add_staleness(State(evaluator): State<Evaluator>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    staleness_headers(&evaluator.staleness(), response.headers_mut());
    response
}

fn staleness_json(s: &Staleness) -> serde_json::Value {
    json!({
        "ready": s.revision.is_some(),
        "revision": s.revision,
        "origin": s.origin.as_str(),
        "connected": s.connected,
        "stale": s.is_stale(),
        "stalenessMs": s.since_contact().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}

async fn readyz(State(evaluator): State<Evaluator>) -> Response {
    let s = evaluator.staleness();
    let status = if s.revision.is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(staleness_json(&s))).into_response()
}

/// With `agent_token`, every route but the probes and metrics needs the token.
async fn require_token(State(expected): State<Arc<str>>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/livez" | "/readyz" | "/metrics")
        || bearer_matches(req.headers(), &expected)
    {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(http::header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"statusCode": 401, "message": "missing or invalid agent token"})),
    )
        .into_response()
}

async fn livez() -> StatusCode {
    StatusCode::OK
}

/// Prometheus text format.
async fn metrics(State(evaluator): State<Evaluator>) -> Response {
    let s = evaluator.staleness();
    let since = s.since_contact().map_or(f64::INFINITY, |d| d.as_secs_f64());
    let body = format!(
        "# HELP tenantry_agent_ready Whether the agent holds an index snapshot.\n\
         # TYPE tenantry_agent_ready gauge\n\
         tenantry_agent_ready {}\n\
         # HELP tenantry_agent_index_revision The revision of the index the agent answers from.\n\
         # TYPE tenantry_agent_index_revision gauge\n\
         tenantry_agent_index_revision {}\n\
         # HELP tenantry_agent_connected Whether the stream from the entitlement service is open.\n\
         # TYPE tenantry_agent_connected gauge\n\
         tenantry_agent_connected {}\n\
         # HELP tenantry_agent_stale Whether answers may lag the service (disconnected, or from the snapshot file).\n\
         # TYPE tenantry_agent_stale gauge\n\
         tenantry_agent_stale {}\n\
         # HELP tenantry_agent_staleness_seconds Seconds since the entitlement service was last heard from.\n\
         # TYPE tenantry_agent_staleness_seconds gauge\n\
         tenantry_agent_staleness_seconds {since}\n",
        u8::from(s.revision.is_some()),
        s.revision.unwrap_or_default(),
        u8::from(s.connected),
        u8::from(s.is_stale()),
    );
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

/// The gRPC check service with the staleness in every answer's initial metadata.
#[derive(Debug, Clone)]
struct WithStaleness<S> {
    inner: S,
    evaluator: Evaluator,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for WithStaleness<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for WithStaleness<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let evaluator = self.evaluator.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let mut response = call.await?;
            staleness_headers(&evaluator.staleness(), response.headers_mut());
            Ok(response)
        })
    }
}

/// Runs the agent until `shutdown` fires.
pub async fn run(config: &Config, shutdown: CancellationToken) -> Result<(), RunError> {
    check_bind(config)?;
    let http_listener = bind(config.agent_http_addr).await?;
    let grpc_listener = bind(config.agent_grpc_addr).await?;
    let client_config = ClientConfig {
        service_token: config.service_token.clone(),
        ca_path: config.tls_ca_path.clone(),
        deadline: config.request_timeout(),
        retry: RetryPolicy::default(),
        max_message_bytes: config.max_message_bytes,
    };
    let api = EntitlementApi::connect(&config.entitlement_endpoint(), &client_config)?;
    let snapshot_file = config
        .agent_snapshot_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("agent-index.snapshot"));
    if let Some(dir) = snapshot_file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let evaluator = Evaluator::start(
        &api,
        EvaluatorConfig {
            accounts: config.agent_accounts.clone(),
            snapshot_file: Some(snapshot_file.clone()),
            ..EvaluatorConfig::default()
        },
    );
    let checks = CheckService::new(Arc::new(FollowedIndex(evaluator.clone())));
    tracing::info!(
        http = %http_listener.local_addr()?,
        grpc = %grpc_listener.local_addr()?,
        service = %config.entitlement_endpoint(),
        snapshot_file = %snapshot_file.display(),
        "agent serving checks from its own index"
    );

    let mut router = Router::new()
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .with_state(evaluator.clone())
        .merge(unauthenticated_check_router(LocalDecide(checks.clone())))
        .merge(tenantry_gateway::ofrep::router(ofrep::AgentOfrep {
            evaluator: evaluator.clone(),
            checks: checks.clone(),
        }))
        .layer(middleware::from_fn_with_state(
            evaluator.clone(),
            add_staleness,
        ));
    if let Some(token) = &config.agent_token {
        let expected: Arc<str> = format!("Bearer {}", token.expose()).into();
        router = router.layer(middleware::from_fn_with_state(expected, require_token));
    }
    let http = {
        let shutdown = shutdown.clone();
        async move {
            axum::serve(http_listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .map_err(RunError::from)
        }
    };
    let settings = ServerSettings {
        tls: None,
        // The health service stays open to probes, as on the services.
        service_token: config.agent_token.clone(),
        request_timeout: config.request_timeout(),
        concurrency_limit: config.concurrency_limit,
        max_message_bytes: config.max_message_bytes,
        shutdown_grace: config.shutdown_grace(),
    };
    let services = Services::new().add(WithStaleness {
        inner: EntitlementServiceServer::new(checks)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
        evaluator: evaluator.clone(),
    });
    let grpc = async {
        serve(
            &settings,
            grpc_listener,
            services,
            &[tenantry_proto::FILE_DESCRIPTOR_SET],
            shutdown.clone(),
        )
        .await
        .map_err(RunError::from)
    };
    let servers = async { tokio::join!(http, grpc) };
    let result = drain_within_grace(servers, &shutdown, config.shutdown_grace(), "agent")
        .await
        .map_or(Ok(()), |(http, grpc)| http.and(grpc));
    // Saves the snapshot file with what the index holds now.
    evaluator.shutdown().await;
    result
}
