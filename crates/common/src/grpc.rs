//! gRPC server and client plumbing shared by the services.
//!
//! [`serve`] adds what every Tenantry gRPC server has: `grpc.health.v1` (NOT_SERVING while
//! draining), server reflection, the service-token check, per-request spans that continue the
//! caller's W3C trace, a deadline, a concurrency limit, optional TLS and graceful shutdown.
//! [`connect`] builds the client side: a lazily connecting channel whose interceptor adds the
//! service token and the current trace context to every call.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{extract::Request, middleware::Next, response::Response};
use opentelemetry::{global, propagation::Injector};
use tokio::net::TcpListener;
use tonic::{
    Code,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    service::{Interceptor, Routes, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig},
};
use tonic_health::ServingStatus;
use tower::limit::GlobalConcurrencyLimitLayer;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    audit::{REQUEST_ID_HEADER, RequestContext},
    config::{Config, Secret},
    db::{StorageFault, StorageHealth},
    shutdown::{CancellationToken, drain_within_grace},
};

/// Metadata key carrying the authenticated end principal (set by the gateway) to the services.
pub const PRINCIPAL_METADATA_KEY: &str = "x-tenantry-principal";
const HEALTH_PATH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Response metadata by which a service's error says its storage refused the write (set with
/// [`mark_storage_fault`]); the server turns it into NOT_SERVING and strips it.
const STORAGE_FAULT_METADATA_KEY: &str = "x-tenantry-storage-fault";
/// How often a server whose storage refused a write tries a probe write.
const STORAGE_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The authenticated principal the gateway passes along in [`PRINCIPAL_METADATA_KEY`], if any.
pub fn principal<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .metadata()
        .get(PRINCIPAL_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|p| !p.is_empty())
}

/// What a gRPC server needs to know beyond its services.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub tls: Option<(PathBuf, PathBuf)>,
    pub service_token: Option<Secret>,
    pub request_timeout: Duration,
    pub concurrency_limit: usize,
    pub max_message_bytes: usize,
    pub shutdown_grace: Duration,
}

impl ServerSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            tls: config
                .tls_cert_path
                .clone()
                .zip(config.tls_key_path.clone()),
            service_token: config.service_token.clone(),
            request_timeout: config.request_timeout(),
            concurrency_limit: config.concurrency_limit,
            max_message_bytes: config.max_message_bytes,
            shutdown_grace: config.shutdown_grace(),
        }
    }
}

/// Why a server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read TLS material {path}: {source}")]
    Tls {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reflection descriptors are malformed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The services one server hosts: their routes and the names health reports for them.
#[derive(Debug, Default)]
pub struct Services {
    routes: tonic::service::RoutesBuilder,
    names: Vec<&'static str>,
    storage: Option<(StorageHealth, sea_orm::DatabaseConnection)>,
    conditions: Vec<(&'static str, tokio::sync::watch::Receiver<bool>)>,
}

impl Services {
    pub fn new() -> Self {
        Self::default()
    }

    /// Health follows the storage of `conn`: a call whose error was [`mark_storage_fault`]ed
    /// makes every service NOT_SERVING until a probe write on `conn` commits.
    pub fn storage(mut self, health: StorageHealth, conn: sea_orm::DatabaseConnection) -> Self {
        self.storage = Some((health, conn));
        self
    }

    /// Adds a generated tonic server.
    #[expect(
        clippy::should_implement_trait,
        reason = "a builder step, not arithmetic"
    )]
    pub fn add<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Reports `name` in health as SERVING while `healthy` holds true and NOT_SERVING
    /// otherwise: a part of the server that can fall behind without stopping it from serving
    /// (the overall status is unaffected).
    pub fn condition(
        mut self,
        name: &'static str,
        healthy: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        self.conditions.push((name, healthy));
        self
    }
}

fn serving(healthy: bool) -> ServingStatus {
    if healthy {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Serves `services` on `listener` until `shutdown` fires, then reports NOT_SERVING, stops
/// accepting, and lets in-flight calls finish for up to `shutdown_grace`.
pub async fn serve(
    settings: &ServerSettings,
    listener: TcpListener,
    services: Services,
    descriptor_sets: &[&'static [u8]],
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &services.names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    for (name, mut healthy) in services.conditions {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let status = serving(*healthy.borrow_and_update());
                health.set_service_status(name, status).await;
                tokio::select! {
                    changed = healthy.changed() => if changed.is_err() { break },
                    () = shutdown.cancelled() => break,
                }
            }
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        });
    }
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in descriptor_sets {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        builder
    };
    // Both versions: grpcurl asks for v1, while the official Python client (grpcio-reflection)
    // and other common tools still speak only v1alpha. Building only fails on a malformed
    // descriptor set, which is a build-time artefact.
    let reflection_v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;

    let mut routes = services.routes;
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut router = routes.routes().into_axum_router();
    let mut storage_monitor = None;
    if let Some((storage, conn)) = services.storage {
        let watched = storage.clone();
        router = router.layer(axum::middleware::from_fn(move |req, next| {
            watch_storage_faults(watched.clone(), req, next)
        }));
        storage_monitor = Some(tokio::spawn(follow_storage(
            health.clone(),
            services.names.clone(),
            storage,
            conn,
            shutdown.clone(),
        )));
    }
    if let Some(token) = &settings.service_token {
        let expected: Arc<str> = format!("Bearer {}", token.expose()).into();
        router = router.layer(axum::middleware::from_fn(move |req, next| {
            check_service_token(expected.clone(), req, next)
        }));
    }
    // Who is calling, for the audit entries its writes record (inside the token check: a
    // refused call writes nothing).
    router = router.layer(axum::middleware::from_fn(request_context));
    // Outermost, so the status of a call the token check refused is recorded too.
    let routes = Routes::from(router.layer(axum::middleware::from_fn(record_grpc_status)));

    let mut builder = tonic::transport::Server::builder()
        .timeout(settings.request_timeout)
        .trace_fn(server_span);
    if let Some((cert, key)) = &settings.tls {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ServeError::Tls {
                path: path.clone(),
                source,
            })
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let mut builder = builder.layer(GlobalConcurrencyLimitLayer::new(settings.concurrency_limit));

    let signal = {
        let shutdown = shutdown.clone();
        let names = services.names.clone();
        async move {
            shutdown.cancelled().await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in names {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            tracing::info!("shutdown requested: draining in-flight requests");
        }
    };
    let server = builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), signal);
    tokio::pin!(server);
    let drained = drain_within_grace(
        &mut server,
        &shutdown,
        settings.shutdown_grace,
        "in-flight requests",
    );
    if let Some(result) = drained.await {
        result?;
    }
    if let Some(monitor) = storage_monitor {
        monitor.abort();
    }
    Ok(())
}

/// Marks a status as a write its storage refused, so the server reports NOT_SERVING.
pub fn mark_storage_fault(status: &mut tonic::Status, fault: StorageFault) {
    let value = match fault {
        StorageFault::Full => "full",
        StorageFault::Failed => "failed",
    };
    status.metadata_mut().insert(
        STORAGE_FAULT_METADATA_KEY,
        MetadataValue::from_static(value),
    );
}

async fn watch_storage_faults(storage: StorageHealth, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Some(value) = response.headers_mut().remove(STORAGE_FAULT_METADATA_KEY) {
        storage.fault(if value == "full" {
            StorageFault::Full
        } else {
            StorageFault::Failed
        });
    }
    response
}

/// Reports NOT_SERVING while `storage` has a fault, probing with a write until one commits.
async fn follow_storage(
    health: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    storage: StorageHealth,
    conn: sea_orm::DatabaseConnection,
    shutdown: CancellationToken,
) {
    let mut faults = storage.subscribe();
    let set_all = |status: ServingStatus| {
        let (health, names) = (health.clone(), names.clone());
        async move {
            health.set_service_status("", status).await;
            for name in names {
                health.set_service_status(name, status).await;
            }
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = faults.wait_for(Option::is_some) => if changed.is_err() { return },
        }
        set_all(ServingStatus::NotServing).await;
        // Recovered when the probe commits, or sooner when another write commits and says so: on
        // SQLite a busy writer (an import's back-to-back batches) can keep the probe waiting on
        // the database lock for the whole busy timeout.
        loop {
            let probed = tokio::select! {
                () = shutdown.cancelled() => return,
                cleared = faults.wait_for(Option::is_none) => {
                    if cleared.is_err() { return }
                    break;
                }
                probed = async {
                    tokio::time::sleep(STORAGE_PROBE_INTERVAL).await;
                    crate::db::probe_write(&conn).await
                } => probed,
            };
            match probed {
                Ok(()) => break,
                Err(err) => tracing::debug!(error = %err, "storage probe write failed"),
            }
        }
        storage.recovered();
        // Draining wins: the shutdown signal has reported NOT_SERVING for good.
        if shutdown.is_cancelled() {
            return;
        }
        set_all(ServingStatus::Serving).await;
    }
}

/// Accepted connections with Nagle off: a large response otherwise waits ~40 ms on the peer's
/// delayed ACK (seen on 200-row account pages).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Runs a call with its [`RequestContext`] (principal, request ID, trace ID) as the current one.
async fn request_context(req: Request, next: Next) -> Response {
    RequestContext::from_headers(req.headers())
        .scope(next.run(req))
        .await
}

async fn check_service_token(expected: Arc<str>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with(HEALTH_PATH_PREFIX) {
        // Kubernetes' native gRPC probes carry no credentials.
        return next.run(req).await;
    }
    if bearer_matches(req.headers(), &expected) {
        next.run(req).await
    } else {
        tonic::Status::unauthenticated("missing or invalid service token").into_http()
    }
}

/// Whether `headers` carry `authorization` equal to `expected` (`Bearer <token>`), compared in
/// constant time.
pub fn bearer_matches(headers: &http::HeaderMap, expected: &str) -> bool {
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .map(http::HeaderValue::as_bytes)
        .unwrap_or_default();
    constant_time_eq(presented, expected.as_bytes())
}

/// Compares without an early exit so timing does not reveal how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, byte) in b.iter().enumerate() {
        diff |= byte ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The server span of one call, named and described per OpenTelemetry's RPC semantic
/// conventions (`{package.Service}/{Method}`, `rpc.*`) so tracing backends group calls by
/// method; `rpc.grpc.status_code` is recorded by [`record_grpc_status`] once the call ends.
fn server_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %path.strip_prefix('/').unwrap_or(path),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        // Filtered out for every layer: no trace context to parse.
        return span;
    }
    crate::telemetry::continue_remote_trace(&span, req.headers());
    span
}

/// Records the call's gRPC status on its span: from the headers of a trailers-only answer (how
/// a call refused before any message ends), else from the trailers that end the body.
async fn record_grpc_status(req: Request, next: Next) -> Response {
    let span = tracing::Span::current();
    let response = next.run(req).await;
    if let Some(code) = grpc_status(response.headers()) {
        span.record("rpc.grpc.status_code", code);
        return response;
    }
    response.map(|body| axum::body::Body::new(StatusFromTrailers { body, span }))
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A response body that records the `grpc-status` of its trailers on the call's span.
struct StatusFromTrailers {
    body: axum::body::Body,
    span: tracing::Span,
}

impl http_body::Body for StatusFromTrailers {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &frame
            && let Some(code) = frame.trailers_ref().and_then(grpc_status)
        {
            self.span.record("rpc.grpc.status_code", code);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's W3C trace context into outgoing metadata.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut MetadataInjector(metadata))
    });
}

/// The code a caller should act on for a client call's status. A call that failed on its way
/// (the connection dropped, the peer was killed, the request was queued on a connection that
/// closed) rather than with a status the server sent carries its local cause as the status's
/// `source` — tonic attaches one only then — and tonic guesses a code for it (UNKNOWN,
/// INTERNAL from an h2 reset, CANCELLED from hyper). All of those are UNAVAILABLE: retry, not a
/// bug. A local timeout (tonic's `TimeoutExpired`, reported as CANCELLED) is DEADLINE_EXCEEDED.
pub fn caller_code(status: &tonic::Status) -> Code {
    let mut cause = std::error::Error::source(status);
    if cause.is_none() {
        return status.code();
    }
    while let Some(err) = cause {
        if err.is::<tonic::TimeoutExpired>() {
            return Code::DeadlineExceeded;
        }
        cause = err.source();
    }
    if status.code() == Code::DeadlineExceeded {
        Code::DeadlineExceeded
    } else {
        Code::Unavailable
    }
}

/// What a failed client call means to its caller, from the code it should act on
/// ([`caller_code`]). The one classification of failed calls: callers match on it rather than
/// keep their own lists of codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// The service called did not answer about the request: it was unreachable, did not answer
    /// in time, shed the load, or the call broke on its way. Retry it, or report it as an
    /// outage (503, 504); never act on it as a refusal.
    Outage,
    /// The call lost a race with a concurrent change (ABORTED): the same call may succeed.
    Conflict,
    /// The caller's own credentials or rights were refused: cured by its configuration (a
    /// rotated service token), not by changing the request.
    Credentials,
    /// The service's answer about this request (invalid, not found, a failed precondition,
    /// or a bug on one side): the same call meets it again.
    Refusal,
}

impl CallFailure {
    pub fn of(status: &tonic::Status) -> Self {
        match caller_code(status) {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown => Self::Outage,
            Code::Aborted => Self::Conflict,
            Code::Unauthenticated | Code::PermissionDenied => Self::Credentials,
            Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => Self::Refusal,
        }
    }

    /// Whether retrying the same call later can succeed without anything about the request
    /// changing (everything but a [`CallFailure::Refusal`]).
    pub fn is_transient(self) -> bool {
        match self {
            Self::Outage | Self::Conflict | Self::Credentials => true,
            Self::Refusal => false,
        }
    }
}

/// Whether a failed call is an outage of the service called rather than its answer about the
/// request ([`CallFailure::Outage`]).
pub fn is_outage(status: &tonic::Status) -> bool {
    CallFailure::of(status) == CallFailure::Outage
}

/// Adds the service token and the trace context to every outgoing call.
#[derive(Clone, Debug, Default)]
pub struct ClientInterceptor {
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl ClientInterceptor {
    pub fn new(service_token: Option<&Secret>) -> Self {
        let authorization = service_token.and_then(|t| {
            let mut value = MetadataValue::try_from(format!("Bearer {}", t.expose())).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        Self { authorization }
    }
}

impl Interceptor for ClientInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        inject_trace_context(request.metadata_mut());
        // The request ID of the call being served, so the callee's audit entries name it.
        if let Some(id) = RequestContext::current_request_id()
            && let Ok(value) = MetadataValue::try_from(id)
        {
            request.metadata_mut().insert(REQUEST_ID_HEADER, value);
        }
        Ok(request)
    }
}

/// A channel to another service plus the interceptor to wrap its clients with.
pub type ClientChannel = InterceptedService<Channel, ClientInterceptor>;

/// Why a client channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid service URL `{url}`: {source}")]
    Url {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("cannot read TLS CA bundle {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration for `{url}` refused: {source}")]
    Tls {
        url: String,
        source: tonic::transport::Error,
    },
}

/// Largest header or trailer block a client accepts. A refused batch sends every item error in
/// its trailers (`grpc-status-details-bin`): 1,000 of them are ~100-200 KB, far over hyper's
/// 16 KiB default, which broke the call (UNAVAILABLE) instead of answering INVALID_ARGUMENT.
pub const MAX_TRAILERS_BYTES: u32 = 1 << 20;

/// A lazily connecting channel to `url`: services start in any order, and calls made while the
/// peer is down fail with UNAVAILABLE instead of blocking start-up.
pub fn connect(
    url: &str,
    ca_path: Option<&PathBuf>,
    service_token: Option<&Secret>,
    request_timeout: Duration,
) -> Result<ClientChannel, ConnectError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|source| ConnectError::Url {
            url: url.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .http2_max_header_list_size(MAX_TRAILERS_BYTES);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = ca_path {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Ca {
                path: path.clone(),
                source,
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|source| ConnectError::Tls {
                url: url.to_owned(),
                source,
            })?;
    }
    Ok(InterceptedService::new(
        endpoint.connect_lazy(),
        ClientInterceptor::new(service_token),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_failures_are_unavailable_or_deadline_and_server_statuses_keep_their_code() {
        let local = |err: Box<dyn std::error::Error + Send + Sync>| {
            caller_code(&tonic::Status::from_error(err))
        };
        // A connection that died under the call (tonic: UNKNOWN with the cause).
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(local(Box::new(reset)), Code::Unavailable);
        // The request sat on a connection that closed: hyper's "canceled" error, which tonic
        // finds in the cause chain and reports as CANCELLED with that chain as its source.
        #[derive(Debug)]
        struct ConnectionClosed(tonic::Status);
        impl std::fmt::Display for ConnectionClosed {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("operation was canceled: connection closed")
            }
        }
        impl std::error::Error for ConnectionClosed {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let closed = ConnectionClosed(tonic::Status::cancelled("canceled"));
        let cancelled = tonic::Status::from_error(Box::new(closed));
        assert_eq!(cancelled.code(), Code::Cancelled);
        assert_eq!(caller_code(&cancelled), Code::Unavailable);
        // The client's own timeout (tonic: CANCELLED) is a deadline, not an outage.
        assert_eq!(
            local(Box::new(tonic::TimeoutExpired(()))),
            Code::DeadlineExceeded
        );
        // Whatever the server sent stands, including INTERNAL, UNKNOWN and CANCELLED.
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::Cancelled,
            Code::NotFound,
        ] {
            assert_eq!(caller_code(&tonic::Status::new(code, "sent")), code);
        }
    }

    #[test]
    fn outages_are_the_peer_not_answering_never_its_refusals() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Cancelled,
            Code::Unknown,
        ] {
            assert!(is_outage(&tonic::Status::new(code, "sent")), "{code:?}");
        }
        for code in [
            Code::NotFound,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            assert!(!is_outage(&tonic::Status::new(code, "sent")), "{code:?}");
        }
        // A call that broke on its way is an outage whatever code tonic guessed for it.
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let broken = tonic::Status::from_error(Box::new(reset));
        assert!(is_outage(&broken));
    }

    #[test]
    fn a_failed_call_is_transient_unless_it_is_the_services_answer_about_the_request() {
        let of = |code| CallFailure::of(&tonic::Status::new(code, "sent"));
        assert_eq!(of(Code::Aborted), CallFailure::Conflict);
        assert_eq!(of(Code::Unauthenticated), CallFailure::Credentials);
        assert_eq!(of(Code::PermissionDenied), CallFailure::Credentials);
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Unauthenticated,
        ] {
            assert!(of(code).is_transient(), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::DataLoss,
        ] {
            assert_eq!(of(code), CallFailure::Refusal, "{code:?}");
            assert!(!of(code).is_transient(), "{code:?}");
        }
        // A call that broke on its way is an outage, whatever code tonic guessed for it.
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let broken = tonic::Status::from_error(Box::new(reset));
        assert_eq!(CallFailure::of(&broken), CallFailure::Outage);
    }

    #[test]
    fn constant_time_eq_matches_only_equal_inputs() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abcd", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
