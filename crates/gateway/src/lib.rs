//! Tenantry's REST gateway: the seeds' APIs (Frontegg account management and entitlements,
//! the seed-003 user grants and the seed-004 Cloudflare tenant entitlements) over the tenant
//! and entitlement gRPC services, with environment and user token authentication.
//!
//! The gateway holds no business logic: it authenticates, maps JSON ⇄ gRPC and maps status
//! codes through `tenantry_common::error`.

mod auth;
mod coalesce;
mod console;
mod convert;
mod credentials;
mod error;
mod extract;
mod layers;
pub mod ofrep;
mod openapi;
mod routes;
mod state;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit, middleware};
use http::{HeaderName, Method, header};
use tenantry_common::{CancellationToken, Config, RunError, shutdown::drain_within_grace};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::Principal;
pub use credentials::{EnvironmentCredentials, credentials_file, environment_credentials};
pub use routes::checks::{Decide, unauthenticated_router as unauthenticated_check_router};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tenantry",
        description = "Multi-tenant accounts and entitlements. Management routes take an \
            environment token from `POST /auth/vendor`; self-service routes also take a user \
            token from your identity provider.",
    ),
    modifiers(&BearerScheme),
)]
struct ApiDoc;

/// The OFREP routes ([`ofrep::router`], generic over their evaluator, so mounted apart).
#[derive(OpenApi)]
#[openapi(paths(ofrep::evaluate_flag, ofrep::evaluate_flags, ofrep::configuration))]
struct OfrepDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        // Seed 004's Cloudflare API-key pair: an environment credential's client ID and secret.
        components.add_security_scheme(
            "api_email",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(auth::API_EMAIL_HEADER))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(auth::API_KEY_HEADER))),
        );
    }
}

/// The API's routes and their OpenAPI description, built together so they cannot disagree.
fn api(config: &Config) -> (Router<state::AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::platform::router())
        .merge(routes::accounts::router())
        .merge(routes::memberships::router())
        .merge(routes::account_settings::router())
        .merge(routes::migrations::router(config.http_body_limit_bytes))
        .merge(routes::hierarchy::router())
        .merge(routes::features::router())
        .merge(routes::plans::router())
        .merge(routes::flags::router())
        .merge(routes::route_policies::router())
        .merge(routes::grants::router())
        .merge(routes::checks::router())
        .merge(routes::stream::router())
        .merge(routes::compat::router())
        .merge(routes::vendor_entitlements::router())
        .merge(routes::audit::router())
        .merge(routes::webhooks::router())
        .merge(routes::metering::router())
        .merge(routes::reservations::router())
        .merge(routes::what_if::router())
        .split_for_parts();
    doc.merge(OfrepDoc::openapi());
    // After the merge: the shared rules apply to every route's operations.
    openapi::SharedRules.modify(&mut doc);
    (router, doc)
}

/// The whole HTTP application: routes, `/openapi.json`, `/docs` and the tower layers.
///
/// The layers wrap the router rather than being added with `Router::layer`, which would box
/// and clone the whole stack per route call; here a request clones it once, unboxed.
fn app(
    config: &Config,
) -> Result<
    impl tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
    RunError,
> {
    let state = state::AppState::from_config(config)?;
    let auth = state.auth.clone();
    let (api, openapi) = api(config);
    let api = api.merge(ofrep::router(ofrep::gateway::GatewayEvaluator(
        state.clone(),
    )));
    let limiter = Arc::new(layers::RateLimiter::new(
        config.rate_limit_per_second,
        config.rate_limit_burst,
    ));
    let mut api = api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi));
    if config.console_enabled {
        api = api.nest(console::BASE, console::router(config, state.clone())?);
    }
    let router = api
        .route_layer(layers::RecordRouteLayer)
        .fallback(layers::not_found)
        .method_not_allowed_fallback(layers::method_not_allowed)
        .with_state(state);

    let request_id = HeaderName::from_static(layers::REQUEST_ID_HEADER);
    let body = layers::BodyTimeouts {
        idle: config.http_body_idle_timeout(),
        total: config.http_body_read_timeout(),
        buffered: config.http_body_limit_bytes,
    };
    // Outermost first: the request ID exists before the access-log span opens, and every
    // response (including 408, 413, 429 and 504 made by inner layers) carries it back. The
    // rate limit and the body read come before the concurrency permit, so neither a flood
    // nor a slow body holds a permit that served clients wait for.
    let stack = ServiceBuilder::new()
        .map_response(axum::response::IntoResponse::into_response)
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(layers::make_span)
                .on_request(())
                .on_response(layers::log_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(middleware::from_fn(layers::request_context))
        .layer(cors(config))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(
            layers::Guard { auth, limiter },
            layers::authenticate_and_limit,
        ))
        .layer(middleware::from_fn_with_state(body, layers::read_body))
        .layer(middleware::from_fn_with_state(
            config.request_timeout(),
            layers::deadline,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::new(tokio::sync::Semaphore::new(config.concurrency_limit)),
            layers::limit_concurrency,
        ))
        .layer(DefaultBodyLimit::max(config.http_body_limit_bytes));
    Ok(stack.service(router))
}

fn cors(config: &Config) -> CorsLayer {
    let origins = &config.cors_allowed_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Validated at start, so every origin is a valid header value.
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(auth::scope::TENANT_HEADER),
            HeaderName::from_static(layers::REQUEST_ID_HEADER),
            HeaderName::from_static(tenantry_common::idempotency::HEADER),
            // OFREP's bulk evaluation, polled by browser providers.
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            HeaderName::from_static(layers::REQUEST_ID_HEADER),
            header::ETAG,
            HeaderName::from_static(routes::REVISION_HEADER),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// Serves the REST API on `listener` until `shutdown` fires, then stops accepting and lets
/// in-flight requests finish for up to `shutdown_grace`.
///
/// Its own accept loop rather than `axum::serve`, which sets no timer and so no header-read
/// timeout: a client that never finishes its headers would hold its connection for good.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto,
        service::TowerToHyperService,
    };
    use tower::ServiceExt as _;

    let app = app(config)?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "rest gateway listening");
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.http_header_read_timeout());
    builder.http2().timer(TokioTimer::new());
    // Dropped by each connection task when it ends: `closed()` below waits for all of them.
    let (connections, _) = tokio::sync::watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Nagle off: responses are small and latency-bound; a delayed ACK would add ~40 ms.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "tcp_nodelay not set");
        }
        let service = app
            .clone()
            .map_request(move |req: http::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            });
        let builder = builder.clone();
        let done = connections.subscribe();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
            }
            drop(done);
        });
    }
    drop(listener);
    drain_within_grace(
        connections.closed(),
        &shutdown,
        config.shutdown_grace(),
        "in-flight requests",
    )
    .await;
    Ok(())
}
