//! `tenantry.tenant.v1.ChangeFeedService`: replay from a cursor, then follow live.

use std::time::Duration;

use tenantry_proto::tenant::v1::{self as pb, change_feed_service_server::ChangeFeedService};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Handlers, convert};
use crate::domain::ChangeKind;

/// Events per message during replay.
const BATCH: u64 = 500;
/// Re-reads the outbox this often even without a wake-up: covers writes by other replicas
/// while LISTEN is down, and other processes writing the same SQLite file.
const POLL: Duration = Duration::from_secs(1);
/// An empty message this often tells an idle follower the stream and the head are alive.
const HEARTBEAT: Duration = Duration::from_secs(15);

type Sender = mpsc::Sender<Result<pb::WatchChangesResponse, Status>>;

impl Handlers {
    async fn follow(&self, mut cursor: u64, kinds: Vec<ChangeKind>, tx: Sender) {
        let mut wake = self.store.subscribe_feed();
        let mut last_sent = Instant::now();
        loop {
            // Mark the wake-up seen before reading, so a commit racing the read still wakes us.
            wake.borrow_and_update();
            let head = match self.store.feed_head().await {
                Ok(head) => head,
                Err(err) => {
                    let _ = tx.send(Err(err.into())).await;
                    return;
                }
            };
            let events = match self.store.read_changes(cursor, &kinds, BATCH).await {
                Ok(events) => events,
                Err(err) => {
                    let _ = tx.send(Err(err.into())).await;
                    return;
                }
            };
            let full = events.len() as u64 == BATCH;
            if let Some(last) = events.last() {
                cursor = last.sequence;
                let message = pb::WatchChangesResponse {
                    events: events.iter().map(convert::change_event).collect(),
                    head_sequence: head.max(cursor),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
                if full {
                    continue;
                }
            } else if head > cursor {
                // Every sequence up to `head` had committed before the read (the head row is
                // updated in the writers' transactions), so events filtered out by type need
                // not be read again.
                cursor = head;
            }
            if last_sent.elapsed() >= HEARTBEAT {
                let beat = pb::WatchChangesResponse {
                    events: vec![],
                    head_sequence: head.max(cursor),
                };
                if tx.send(Ok(beat)).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(POLL) => {}
                () = self.shutdown.wait() => return,
                () = tx.closed() => return,
            }
        }
    }
}

#[tonic::async_trait]
impl ChangeFeedService for Handlers {
    type WatchChangesStream = ReceiverStream<Result<pb::WatchChangesResponse, Status>>;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let r = request.into_inner();
        let mut kinds = Vec::with_capacity(r.change_types.len());
        for (i, value) in r.change_types.iter().enumerate() {
            kinds.push(convert::change_kind_from(
                &format!("change_types[{i}]"),
                *value,
            )?);
        }
        let (tx, rx) = mpsc::channel(4);
        let handlers = self.clone();
        tokio::spawn(async move { handlers.follow(r.from_sequence, kinds, tx).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
