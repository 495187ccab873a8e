//! Trace context crosses gateway → services: an OTLP/gRPC trace receiver in the test collects
//! the spans every process exports, and one trace holds spans of the gateway and of a service.
//! The spans are named and described per OpenTelemetry's HTTP and RPC semantic conventions.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantry_common::testing;
use tenantry_tests::{Stack, StackOptions};
use tokio_stream::wrappers::TcpListenerStream;

use crate::support::{
    assert_decision, check_feature, create_account, create_feature, create_plan, eventually,
    grant_batch,
};

/// One received span: its process's `service.name`, trace ID, name and attributes (values
/// rendered as text: strings as they are, integers in decimal).
#[derive(Clone, Debug)]
struct SpanSeen {
    service: String,
    trace_id: Vec<u8>,
    name: String,
    attributes: BTreeMap<String, String>,
}

/// Every span received.
#[derive(Clone, Debug, Default)]
struct Received(Arc<Mutex<Vec<SpanSeen>>>);

impl SpanSeen {
    /// `gateway`, `entitlement` or `tenant`, from the `service.name` (for example
    /// `tenantry-gateway`, `entitlement-service`).
    fn process(&self) -> &'static str {
        if self.service.contains("gateway") {
            "gateway"
        } else if self.service.contains("entitlement") {
            "entitlement"
        } else if self.service.contains("tenant") {
            "tenant"
        } else {
            "other"
        }
    }

    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

impl Received {
    /// The processes seen in each trace.
    fn traces(&self) -> BTreeMap<Vec<u8>, BTreeSet<&'static str>> {
        let spans = self.spans();
        let mut traces: BTreeMap<Vec<u8>, BTreeSet<&'static str>> = BTreeMap::new();
        for span in spans {
            traces
                .entry(span.trace_id.clone())
                .or_default()
                .insert(span.process());
        }
        traces
    }

    fn spans(&self) -> Vec<SpanSeen> {
        self.0.lock().expect("spans lock").clone()
    }
}

fn text(value: Option<&any_value::Value>) -> String {
    match value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(
            any_value::Value::ArrayValue(_)
            | any_value::Value::KvlistValue(_)
            | any_value::Value::BytesValue(_)
            | any_value::Value::StringValueStrindex(_),
        )
        | None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().expect("spans lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .and_then(|v| match v {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    any_value::Value::BoolValue(_)
                    | any_value::Value::IntValue(_)
                    | any_value::Value::DoubleValue(_)
                    | any_value::Value::ArrayValue(_)
                    | any_value::Value::KvlistValue(_)
                    | any_value::Value::BytesValue(_)
                    | any_value::Value::StringValueStrindex(_) => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope
                    .spans
                    .into_iter()
                    .filter(|s| s.trace_id.iter().any(|b| *b != 0))
                {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|a| {
                            let value = a.value.as_ref().and_then(|v| v.value.as_ref());
                            (a.key.clone(), text(value))
                        })
                        .collect();
                    spans.push(SpanSeen {
                        service: service.clone(),
                        trace_id: span.trace_id,
                        name: span.name,
                        attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A stack whose processes export their spans to a receiver in the test.
async fn traced_stack() -> (Received, Stack, tokio::task::JoinHandle<()>) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind OTLP receiver");
    let endpoint = format!(
        "http://{}",
        listener.local_addr().expect("receiver address")
    );
    let server = tokio::spawn({
        let serve = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        async move {
            // Ends only when the test aborts it.
            let _ = serve.await;
        }
    });
    let options = StackOptions {
        otlp_endpoint: Some(endpoint),
    };
    let stack = Stack::start_on(testing::postgres(), options).await;
    (received, stack, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_gateway_and_the_services() {
    let (received, mut stack, server) = traced_stack().await;
    let env = stack.env_token().await;
    let env = env.as_str();
    // gateway → tenant service
    create_account(&stack, env, "traced", "Traced").await;
    // gateway → entitlement service (→ tenant service to validate the account)
    create_feature(&stack, env, "traced-feature", "bool", &[]).await;
    create_plan(
        &stack,
        env,
        json!({"name": "Traced", "key": "traced-plan", "featureKeys": ["traced-feature"]}),
    )
    .await;
    grant_batch(
        &stack,
        env,
        vec![json!({"planKey": "traced-plan", "tenantId": "traced"})],
    )
    .await;
    let user = stack.user_token("traced", "u-traced", &[]);
    let answer = check_feature(&stack, &user, "traced", "traced-feature", json!({})).await;
    assert_decision(&answer, true, None, "traced check");
    let (status, _) = stack
        .call(
            Method::GET,
            "/tenants/resources/tenants/v2/traced",
            Some(env),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The account creation's trace: gateway → tenant service. The batch grant's trace:
    // gateway → entitlement service → tenant service (which checks the account exists).
    for expected in [
        &["gateway", "tenant"][..],
        &["gateway", "entitlement", "tenant"][..],
    ] {
        eventually(
            Duration::from_secs(30),
            &format!("one trace with spans of {expected:?}"),
            || async {
                let traces = received.traces();
                if traces
                    .values()
                    .any(|seen| expected.iter().all(|p| seen.contains(p)))
                {
                    Ok(())
                } else {
                    Err(format!(
                        "processes per trace: {:?}",
                        traces.values().collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await;
    }

    // SIGTERM lets each process exit cleanly (and flush its last spans).
    for process in [
        &mut stack.gateway,
        &mut stack.entitlement,
        &mut stack.tenant,
    ] {
        let status = process.terminate().await;
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            process.logs()
        );
    }
    server.abort();
}

/// Tracing backends group spans by name: the gateway's are `{METHOD} {route template}` with
/// the HTTP semantic conventions' attributes, the services' `{package.Service}/{Method}` with
/// the RPC ones, including the status each call ended with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_named_by_route_template_and_rpc_method() {
    let (received, mut stack, server) = traced_stack().await;
    let env = stack.env_token().await;
    let env = env.as_str();
    create_account(&stack, env, "named", "Named").await;
    // v1: its read answers a missing account 404 (v2 answers an empty array).
    let route = "/tenants/resources/tenants/v1/{tenantId}";
    for (tenant, http_status, grpc_status) in [("named", 200, 0), ("no-such-account", 404, 5)] {
        let path = format!("/tenants/resources/tenants/v1/{tenant}");
        let (status, _) = stack.call(Method::GET, &path, Some(env), None).await;
        assert_eq!(status.as_u16(), http_status, "{path}");
        let (http, rpcs) = eventually(
            Duration::from_secs(30),
            &format!("the gateway's and the tenant service's spans of GET {path}"),
            || async {
                let spans = received.spans();
                let http = spans
                    .iter()
                    .find(|s| s.process() == "gateway" && s.attribute("url.path") == path)
                    .ok_or_else(|| format!("no gateway span for {path} among {spans:#?}"))?;
                let rpcs: Vec<SpanSeen> = spans
                    .iter()
                    .filter(|s| {
                        s.process() == "tenant"
                            && s.trace_id == http.trace_id
                            && s.attribute("rpc.system") == "grpc"
                    })
                    .cloned()
                    .collect();
                if rpcs.is_empty() {
                    return Err(format!("no tenant-service span in {http:?}'s trace"));
                }
                Ok((http.clone(), rpcs))
            },
        )
        .await;

        assert_eq!(http.name, format!("GET {route}"), "{http:?}");
        assert_eq!(http.attribute("http.route"), route, "{http:?}");
        assert_eq!(http.attribute("http.request.method"), "GET", "{http:?}");
        assert_eq!(
            http.attribute("http.response.status_code"),
            http_status.to_string(),
            "{http:?}"
        );

        for rpc in &rpcs {
            let service = rpc.attribute("rpc.service");
            let method = rpc.attribute("rpc.method");
            assert!(service.starts_with("tenantry.tenant.v1."), "{rpc:?}");
            assert!(
                !method.is_empty() && !method.contains('/'),
                "the bare method name: {rpc:?}"
            );
            assert_eq!(rpc.name, format!("{service}/{method}"), "{rpc:?}");
        }
        assert!(
            rpcs.iter()
                .any(|rpc| rpc.attribute("rpc.grpc.status_code") == grpc_status.to_string()),
            "a call that ended with gRPC status {grpc_status}: {rpcs:#?}"
        );
    }

    // No route matched: the method alone names the span, and no route is claimed.
    let (status, _) = stack
        .call(Method::GET, "/no/such/route", Some(env), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unmatched = eventually(
        Duration::from_secs(30),
        "the gateway's span of GET /no/such/route",
        || async {
            received
                .spans()
                .into_iter()
                .find(|s| s.process() == "gateway" && s.attribute("url.path") == "/no/such/route")
                .ok_or_else(|| "not exported yet".to_owned())
        },
    )
    .await;
    assert_eq!(unmatched.name, "GET", "{unmatched:?}");
    assert!(
        !unmatched.attributes.contains_key("http.route"),
        "{unmatched:?}"
    );
    assert_eq!(unmatched.attribute("http.response.status_code"), "404");

    for process in [
        &mut stack.gateway,
        &mut stack.entitlement,
        &mut stack.tenant,
    ] {
        process.terminate().await;
    }
    server.abort();
}
