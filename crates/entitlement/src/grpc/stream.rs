//! `IndexStreamService`: decodes the subscription, starts it (`Engine::watch_index`) and
//! encodes its events, splitting a snapshot chunk so no message exceeds `CHUNK_BYTES`.

use std::pin::Pin;

use futures::{Stream, StreamExt, stream};
use prost::Message;
use tenantry_proto::entitlement::v1::{
    IndexChange, SnapshotChunk, WatchIndexRequest, WatchIndexResponse,
    index_stream_service_server::IndexStreamService, watch_index_response::Event,
};
use tenantry_proto::index_stream::encode_changes;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Handler, Result};
use crate::app::stream::WatchQuery;
use crate::domain::StreamEvent;

/// Most bytes of changes in one snapshot chunk message (well under any message size limit).
const CHUNK_BYTES: usize = 256 * 1024;

type Events = Pin<Box<dyn Stream<Item = Result<WatchIndexResponse>> + Send>>;

/// One event as messages: a snapshot chunk becomes as many as its size needs.
fn encode(event: StreamEvent) -> Vec<WatchIndexResponse> {
    let StreamEvent::SnapshotChunk(changes) = event else {
        return vec![event.into()];
    };
    let mut out = Vec::new();
    let mut chunk: Vec<IndexChange> = Vec::new();
    let mut bytes = 0;
    for change in encode_changes(&changes) {
        let len = change.encoded_len();
        if !chunk.is_empty() && bytes + len > CHUNK_BYTES {
            out.push(chunk_message(std::mem::take(&mut chunk)));
            bytes = 0;
        }
        bytes += len + 4;
        chunk.push(change);
    }
    if !chunk.is_empty() {
        out.push(chunk_message(chunk));
    }
    out
}

fn chunk_message(changes: Vec<IndexChange>) -> WatchIndexResponse {
    WatchIndexResponse {
        event: Some(Event::SnapshotChunk(SnapshotChunk { changes })),
    }
}

#[tonic::async_trait]
impl IndexStreamService for Handler {
    type WatchIndexStream = Events;

    async fn watch_index(
        &self,
        request: Request<WatchIndexRequest>,
    ) -> Result<Response<Self::WatchIndexStream>> {
        let r = request.into_inner();
        let events = self.engine.watch_index(WatchQuery {
            resume_revision: r.resume_revision,
            accounts: r.account_ids,
        })?;
        let messages = ReceiverStream::new(events).flat_map(|item| {
            let out: Vec<Result<WatchIndexResponse>> = match item {
                Ok(event) => encode(event).into_iter().map(Ok).collect(),
                Err(err) => vec![Err(Status::from(err))],
            };
            stream::iter(out)
        });
        Ok(Response::new(Box::pin(messages)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::synthetic::world;

    #[test]
    fn a_large_snapshot_chunk_is_split_under_the_byte_bound_in_order() {
        let (snapshot, _) = world(2_000, 1);
        let changes: Vec<crate::domain::IndexChange> = snapshot
            .grants
            .into_iter()
            .map(crate::domain::IndexChange::UpsertGrant)
            .collect();
        let count = changes.len();
        let messages = encode(StreamEvent::SnapshotChunk(changes));
        assert!(messages.len() > 1, "20,000 grants fit one message?");
        let mut seen = 0;
        for m in &messages {
            assert!(m.encoded_len() <= CHUNK_BYTES + 1024, "{}", m.encoded_len());
            let Some(Event::SnapshotChunk(c)) = &m.event else {
                panic!("not a chunk")
            };
            seen += c.changes.len();
        }
        assert_eq!(seen, count);
    }
}
