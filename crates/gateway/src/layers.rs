//! The gateway's own middleware: access-log spans that continue the caller's W3C trace, the
//! per-principal rate limit and the request deadline, all answering in the error shape.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::{StreamExt, TryStreamExt};
use http::StatusCode;
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use tenantry_common::audit::RequestContext;

use crate::{auth, error::ApiError, routes::compat};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The span of one request: its fields form the access log line written on completion. Named
/// and described per OpenTelemetry's HTTP semantic conventions: `{METHOD} {route}` once the
/// router has matched a route template ([`RecordRouteLayer`]), `{METHOD}` for no route.
pub fn make_span(req: &http::Request<axum::body::Body>) -> Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %req.method(),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        request_id,
        trace_id = tracing::field::Empty,
        principal = tracing::field::Empty,
    );
    if span.is_disabled() {
        // Filtered out (one filter serves the log and OpenTelemetry layers): nothing would
        // record the trace context, so it is not parsed.
        return span;
    }
    let trace_id = tenantry_common::telemetry::continue_remote_trace(&span, req.headers());
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Runs the request with its ID as the current [`RequestContext`]'s, so every gRPC call it
/// makes carries `x-request-id` and the services' audit entries name it.
pub async fn request_context(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    RequestContext {
        actor: String::new(),
        request_id,
        trace_id: None,
    }
    .scope(next.run(req))
    .await
}

/// Writes the access log line.
pub fn log_response<B>(response: &http::Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(status, latency_ms, "request served");
    } else {
        tracing::info!(status, latency_ms, "request served");
    }
}

/// Names the request's span after the route template the router matched (`http.route`):
/// applied with `Router::route_layer`, so it runs only for matched routes, where axum has put
/// the template in the request. A plain service, not `from_fn`: nothing is boxed per request.
#[derive(Clone, Copy, Debug)]
pub struct RecordRouteLayer;

impl<S> tower::Layer<S> for RecordRouteLayer {
    type Service = RecordRoute<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordRoute(inner)
    }
}

#[derive(Clone, Debug)]
pub struct RecordRoute<S>(S);

impl<S, B> tower::Service<http::Request<B>> for RecordRoute<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(route) = req.extensions().get::<axum::extract::MatchedPath>() {
            // Called inside the access-log span (tower-http enters it while polling).
            let span = Span::current();
            span.record("http.route", route.as_str());
            // Through OpenTelemetry itself: tracing-opentelemetry applies a recorded
            // `otel.name` only before the span has started, and continuing the caller's
            // trace starts it.
            span.context()
                .span()
                .update_name(format!("{} {}", req.method(), route.as_str()));
        }
        self.0.call(req)
    }
}

/// A token bucket per principal (or per client address for anonymous calls).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Above this many tracked keys, full (idle) buckets are forgotten.
const MAX_TRACKED_KEYS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when a request may go now, else the whole seconds to wait.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > MAX_TRACKED_KEYS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        // Look up before inserting: the key is only copied for a new principal.
        if !buckets.contains_key(key) {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: self.burst,
                    at: now,
                },
            );
        }
        let Some(bucket) = buckets.get_mut(key) else {
            return Ok(());
        };
        let refilled =
            bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = refilled.min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

/// What [`authenticate_and_limit`] needs.
#[derive(Clone, Debug)]
pub struct Guard {
    pub auth: Arc<auth::Authenticator>,
    pub limiter: Arc<RateLimiter>,
}

/// Verifies the bearer token (the outcome goes to the extractors, see [`auth`]), then applies
/// the per-principal rate limit: 429 with `retry-after` once the bucket is empty. One
/// middleware rather than two, as each `from_fn` layer boxes a future per request.
pub async fn authenticate_and_limit(
    State(guard): State<Guard>,
    mut req: Request,
    next: Next,
) -> Response {
    // A compatibility surface answers every error in its own shape, including the ones made
    // by the layers below (401, 408, 413, 429, 504); seed 004 also takes its API-key pair.
    let surface = compat::surface(req.uri().path());
    let api_key_pair = surface == Some(compat::Surface::Seed004);
    let authentication = guard.auth.authenticate(req.headers(), api_key_pair).await;
    let key = match &authentication.0 {
        Ok(Some(principal)) => principal.key(),
        Ok(None) | Err(_) => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "anonymous".to_owned(), |c| format!("ip:{}", c.0.ip())),
    };
    req.extensions_mut().insert(authentication);
    let response = match guard.limiter.check(&key) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("rate limit exceeded; retry in {retry_after} s"),
            );
            e.retry_after = Some(retry_after);
            e.into_response()
        }
    };
    match surface {
        Some(surface) => compat::reshape(surface, response),
        None => response,
    }
}

/// How long a client may take over a request body (see [`read_body`]).
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeouts {
    /// Longest pause between two chunks.
    pub idle: Duration,
    /// Longest time to send the first `buffered` bytes.
    pub total: Duration,
    /// Bytes read before the request may take a concurrency permit: the general body limit.
    pub buffered: usize,
}

/// Reads the request body before the request takes a concurrency permit, so a client that
/// sends its body slowly holds a connection but never a permit other clients wait for. A body
/// that pauses longer than `idle`, or is not in within `total`, is answered 408 and the
/// connection closed. Bodies larger than `buffered` (only the migration route accepts them)
/// go on streaming past the permit, still under the idle timeout and the request deadline.
pub async fn read_body(State(t): State<BodyTimeouts>, req: Request, next: Next) -> Response {
    use http_body::Body as _;
    use http_body_util::BodyExt;

    let (parts, mut body) = req.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let deadline = tokio::time::Instant::now() + t.total;
    let mut buffer = Vec::new();
    loop {
        if buffer.len() > t.buffered {
            let prefix = futures::stream::once(std::future::ready(Ok::<_, axum::Error>(
                http_body::Frame::data(axum::body::Bytes::from(buffer)),
            )));
            let rest = tower_http::timeout::TimeoutBody::new(t.idle, body)
                .into_data_stream()
                .map_ok(http_body::Frame::data)
                .map_err(axum::Error::new);
            let body = axum::body::Body::new(http_body_util::StreamBody::new(prefix.chain(rest)));
            return next.run(Request::from_parts(parts, body)).await;
        }
        let idle_end = deadline.min(tokio::time::Instant::now() + t.idle);
        match tokio::time::timeout_at(idle_end, body.frame()).await {
            Err(_) => return body_timeout(),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                }
            }
            Ok(Some(Err(_))) => {
                return ApiError::bad_request("the request body could not be read")
                    .with_reason("BODY_UNREADABLE")
                    .into_response();
            }
        }
    }
    let body = axum::body::Body::from(buffer);
    next.run(Request::from_parts(parts, body)).await
}

fn body_timeout() -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "the request body was not received in time",
    )
    .with_reason("BODY_TIMEOUT")
    .into_response();
    // The rest of the body may still be on its way: the connection cannot be reused.
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// At most `concurrency_limit` requests in handlers at once, the rest waiting in line.
///
/// The permit is taken here, in the request's future, rather than by tower's
/// `ConcurrencyLimit`, which takes it in `poll_ready`: readiness propagates through every
/// outer layer, so the permit was held before the rate limit or the body read had even run.
pub async fn limit_concurrency(
    State(permits): State<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    match permits.acquire().await {
        Ok(_permit) => next.run(req).await,
        // Never closed; answer rather than panic if it ever were.
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping")
            .into_response(),
    }
}

/// The request deadline: 504 in the error shape when a handler takes longer.
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the request took longer than the configured timeout",
        )
        .into_response(),
    }
}

/// Unknown paths: 404 in the error shape.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Known path, wrong method: 405 in the error shape (axum keeps the `allow` header).
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_past_the_burst_and_name_a_wait() {
        let limiter = RateLimiter::new(1, 2);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert_eq!(limiter.check("a"), Err(1));
        // Another principal has its own bucket.
        assert!(limiter.check("b").is_ok());
    }
}
