//! Trace context crosses gateway → services: an OTLP/gRPC trace receiver in the test collects
//! the spans every process exports, and one trace holds spans of the gateway and of a service.

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

/// `service.name` and trace ID of one received span.
type SpanSeen = (String, Vec<u8>);

/// Every span received.
#[derive(Clone, Debug, Default)]
struct Received(Arc<Mutex<Vec<SpanSeen>>>);

impl Received {
    /// The processes seen in each trace: `gateway`, `entitlement` or `tenant`, from their
    /// `service.name` (for example `tenantry-gateway`, `entitlement-service`).
    fn traces(&self) -> BTreeMap<Vec<u8>, BTreeSet<&'static str>> {
        let spans = self.0.lock().expect("spans lock").clone();
        let mut traces: BTreeMap<Vec<u8>, BTreeSet<&'static str>> = BTreeMap::new();
        for (service, trace_id) in spans {
            let process = if service.contains("gateway") {
                "gateway"
            } else if service.contains("entitlement") {
                "entitlement"
            } else if service.contains("tenant") {
                "tenant"
            } else {
                "other"
            };
            traces.entry(trace_id).or_default().insert(process);
        }
        traces
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
                    spans.push((service.clone(), span.trace_id));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_gateway_and_the_services() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind OTLP receiver");
    let endpoint = format!(
        "http://{}",
        listener.local_addr().expect("receiver address")
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let options = StackOptions {
        otlp_endpoint: Some(endpoint),
    };
    let mut stack = Stack::start_on(testing::postgres(), options).await;
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
