//! Logging and tracing, set up once per process.
//!
//! `tracing` writes human-readable lines on a terminal and JSON otherwise. When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans and metrics are also exported over OTLP/gRPC and
//! W3C trace context is propagated on every gRPC hop (see [`crate::grpc`]). The returned
//! [`TelemetryGuard`] flushes the exporters when dropped, so the last spans of a shutdown are kept.

use std::io::IsTerminal;

use opentelemetry::{
    global,
    trace::{TraceContextExt as _, TraceId, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource, metrics::SdkMeterProvider, propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{Config, ENV_OTLP_ENDPOINT, LogFormat};

/// Flushes and shuts down the OpenTelemetry providers when dropped.
#[must_use = "telemetry is flushed when the guard is dropped"]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp", &self.tracer.is_some())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take()
            && let Err(e) = tracer.shutdown()
        {
            eprintln!("tenantry: flushing traces failed: {e}");
        }
        if let Some(meter) = self.meter.take()
            && let Err(e) = meter.shutdown()
        {
            eprintln!("tenantry: flushing metrics failed: {e}");
        }
    }
}

/// Installs the global subscriber. Call once, early in `main`, inside the tokio runtime (the
/// OTLP exporter needs it). Later calls (tests) leave the first subscriber in place.
pub fn init(service_name: &'static str, config: &Config) -> TelemetryGuard {
    // The W3C propagator is installed even without an exporter so incoming trace context is
    // still passed on to the next hop.
    global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log_level));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };

    let (tracer, meter, otel_error) = match std::env::var(ENV_OTLP_ENDPOINT) {
        Ok(endpoint) if !endpoint.trim().is_empty() => match otlp_providers(service_name) {
            Ok((t, m)) => (Some(t), Some(m), None),
            Err(e) => (None, None, Some(e)),
        },
        _ => (None, None, None),
    };
    let otel_layer = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .boxed()
    });
    if let Some(meter) = &meter {
        global::set_meter_provider(meter.clone());
    }

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .is_ok();
    if installed && let Some(e) = otel_error {
        tracing::warn!(error = %e, "otlp export disabled: exporter could not be built");
    }
    TelemetryGuard { tracer, meter }
}

/// Makes `span` (a server's span for one request) continue the W3C trace the request's
/// headers carry, read by the installed propagator, and returns the trace ID the request
/// belongs to: the caller's when it sent one, else the span's own (invalid when no
/// OpenTelemetry layer is installed). The REST gateway and both gRPC services use this.
pub fn continue_remote_trace(span: &tracing::Span, headers: &http::HeaderMap) -> TraceId {
    let parent = global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let remote = parent.span().span_context().trace_id();
    // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
    let _ = span.set_parent(parent);
    if remote == TraceId::INVALID {
        span.context().span().span_context().trace_id()
    } else {
        remote
    }
}

fn otlp_providers(
    service_name: &'static str,
) -> Result<(SdkTracerProvider, SdkMeterProvider), String> {
    let resource = Resource::builder().with_service_name(service_name).build();
    // Endpoint, headers and timeouts come from the standard OTEL_EXPORTER_OTLP_* variables.
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((tracer, meter))
}

/// For tests: logs only when `TEST_LOG` is set, so test output stays readable.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let config = Config {
            log_format: LogFormat::Pretty,
            log_level: "debug,sqlx=warn,h2=info,hyper=info,tower=info".to_owned(),
            ..Config::default()
        };
        std::mem::forget(init("tenantry-test", &config));
    } else {
        global::set_text_map_propagator(TraceContextPropagator::new());
    }
}
