//! Entitlement checks that arrive together share one `BatchIsEntitledTo` call.
//!
//! A check through the gateway is one gRPC round trip whose transport (h2 framing, socket
//! reads and writes on both sides, a wake-up of each process) costs far more than the check
//! itself. Checks are therefore queued to one task, which takes every check waiting when it
//! runs and sends them as one call. There is no timer: with no load a check goes out alone
//! as soon as the task runs; under load one round trip carries every check that arrived while
//! the previous ones were being sent. Each caller gets exactly what its own call would have
//! answered — a batch that fails, for whatever reason, is resent as single calls.

use futures::future::join_all;
use opentelemetry::trace::TraceContextExt;
use tenantry_common::grpc::ClientChannel;
use tenantry_proto::entitlement::v1::{
    BatchIsEntitledToRequest, EntitlementQuery, IsEntitledToRequest, IsEntitledToResponse,
    entitlement_service_client::EntitlementServiceClient,
};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{auth::Principal, state::grpc};

type Client = EntitlementServiceClient<ClientChannel>;
type Answer = Result<IsEntitledToResponse, Status>;

/// One check waiting for its answer.
struct Pending {
    /// The call this check would make alone (principal metadata included).
    request: tonic::Request<IsEntitledToRequest>,
    /// The caller's span: a check sent alone continues the caller's trace.
    span: Span,
    reply: oneshot::Sender<Answer>,
}

/// Sends entitlement checks, coalescing concurrent ones. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Checker {
    client: Client,
    /// `None` when coalescing is off (`check_coalesce_max = 1`).
    queue: Option<mpsc::UnboundedSender<Pending>>,
}

impl Checker {
    /// Starts the coalescing task on the current runtime when `max > 1`.
    pub fn new(client: Client, max: usize) -> Self {
        let queue = (max > 1).then(|| {
            // Unbounded: what it holds is bounded by the gateway's concurrency limit, and a
            // bounded queue would make every check await capacity.
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(coalesce(rx, client.clone(), max));
            tx
        });
        Self { client, queue }
    }

    /// One check, answered as `IsEntitledTo` would answer it.
    pub async fn check(
        &self,
        principal: &Principal,
        query: EntitlementQuery,
        min_revision: u64,
    ) -> Answer {
        let request = grpc(
            principal,
            IsEntitledToRequest {
                query: Some(query),
                min_revision,
            },
        );
        // A check that must wait for a revision goes alone, so it never delays the others.
        let Some(queue) = self.queue.as_ref().filter(|_| min_revision == 0) else {
            return alone(self.client.clone(), request).await;
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request,
            span: Span::current(),
            reply,
        };
        if let Err(mpsc::error::SendError(pending)) = queue.send(pending) {
            // The task only ends with the runtime; answer the call anyway.
            return alone(self.client.clone(), pending.request).await;
        }
        answer.await.unwrap_or_else(|_| {
            Err(Status::unavailable(
                "the gateway stopped before the check was answered",
            ))
        })
    }
}

/// Takes every check waiting each time it runs and sends them as one call.
async fn coalesce(mut queue: mpsc::UnboundedReceiver<Pending>, client: Client, max: usize) {
    let mut taken = Vec::with_capacity(max);
    while queue.recv_many(&mut taken, max).await > 0 {
        // A caller that went away (client disconnect, gateway deadline) needs no answer.
        let batch: Vec<Pending> = taken.drain(..).filter(|p| !p.reply.is_closed()).collect();
        if !batch.is_empty() {
            tokio::spawn(send(client.clone(), batch));
        }
    }
}

async fn send(client: Client, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Some(p) = batch.pop() else { return };
        let answer = alone(client, p.request).instrument(p.span).await;
        let _ = p.reply.send(answer);
        return;
    }
    let span = batch_span(&batch);
    let queries = batch
        .iter()
        .map(|p| p.request.get_ref().query.clone().unwrap_or_default())
        .collect();
    let call = BatchIsEntitledToRequest {
        queries,
        min_revision: 0,
    };
    let mut answering = client.clone();
    match answering
        .batch_is_entitled_to(call)
        .instrument(span.clone())
        .await
    {
        Ok(out) => {
            let out = out.into_inner();
            if out.decisions.len() != batch.len() {
                let status = Status::internal(format!(
                    "the entitlement service answered {} of {} batched checks",
                    out.decisions.len(),
                    batch.len()
                ));
                for p in batch {
                    let _ = p.reply.send(Err(status.clone()));
                }
                return;
            }
            for (p, decision) in batch.into_iter().zip(out.decisions) {
                let _ = p.reply.send(Ok(IsEntitledToResponse {
                    decision: Some(decision),
                    revision: out.revision,
                }));
            }
        }
        // Whatever the code, a failed batch cannot say whose query caused it (an invalid one,
        // one the service chokes on, a message grown too large): each goes alone and gets
        // its own answer or error, so one caller's bad check never fails another's.
        Err(status) => {
            tracing::debug!(parent: &span, grpc.code = ?status.code(), checks = batch.len(), "batch check failed; answering each alone");
            join_all(batch.into_iter().map(|p| {
                let client = client.clone();
                async move {
                    let answer = alone(client, p.request).instrument(p.span).await;
                    let _ = p.reply.send(answer);
                }
            }))
            .instrument(span)
            .await;
        }
    }
}

async fn alone(mut client: Client, request: tonic::Request<IsEntitledToRequest>) -> Answer {
    client
        .is_entitled_to(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The batch call's span: a child of the first caller's, linked to every other caller's, so
/// each request's trace shows the call that answered it.
fn batch_span(batch: &[Pending]) -> Span {
    let Some(first) = batch.first() else {
        return Span::none();
    };
    let span = tracing::info_span!(
        parent: &first.span,
        "entitlement.check_batch",
        otel.kind = "client",
        checks = batch.len()
    );
    if !span.is_disabled() {
        for p in &batch[1..] {
            let context = p.span.context().span().span_context().clone();
            if context.is_valid() {
                span.add_link(context);
            }
        }
    }
    span
}
