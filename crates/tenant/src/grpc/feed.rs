//! `tenantry.tenant.v1.ChangeFeedService`: replay from a cursor, then follow live; snapshots
//! for followers whose cursor is older than what is retained.
//!
//! Messages are bounded in bytes as well as in events: the client's decoding limit is the
//! hard one (a message above it fails the whole stream, and a follower retrying from the same
//! cursor would fail the same way forever), so no message may exceed what the client accepts.

use async_trait::async_trait;
use prost::Message;
use tenantry_common::CancellationToken;
use tenantry_proto::tenant::v1::{self as pb, change_feed_service_server::ChangeFeedService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Handlers, convert};
use crate::{
    app::ports::Follower,
    domain::{ChangeEvent, Error},
};

/// The largest message sent unless the client accepts less: a quarter of gRPC's default
/// 4 MiB limit, so it also fits clients that never said what they accept.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The smallest bound a client may ask for: room for the largest possible bare event (IDs are
/// at most 255 characters) many times over.
const MIN_MESSAGE_BYTES: usize = 64 << 10;
/// Room for a message's own fields beside its events or accounts (`head_sequence`;
/// `sequence` and `pruned_through`): 11 bytes each at most.
const MESSAGE_OVERHEAD: usize = 32;

type Sender = mpsc::Sender<Result<pb::WatchChangesResponse, Status>>;

/// One follower's stream: events framed into messages within its byte budget.
struct Stream {
    tx: Sender,
    budget: usize,
    shutdown: CancellationToken,
}

#[async_trait]
impl Follower for Stream {
    async fn send(&mut self, events: Vec<ChangeEvent>, head: u64) -> bool {
        if events.is_empty() {
            let beat = pb::WatchChangesResponse {
                events: vec![],
                head_sequence: head,
            };
            return self.tx.send(Ok(beat)).await.is_ok();
        }
        let budget = self.budget;
        let encoded = events.iter().map(|e| fit(convert::change_event(e), budget));
        for events in split(encoded, budget, |e| e.encoded_len()) {
            let sent = events.last().map_or(head, |e| e.sequence);
            let message = pb::WatchChangesResponse {
                events,
                head_sequence: head.max(sent),
            };
            if self.tx.send(Ok(message)).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn fail(&mut self, err: Error) {
        let _ = self.tx.send(Err(err.into())).await;
    }

    async fn closed(&self) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = self.tx.closed() => {}
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
        let mut stream = Stream {
            tx,
            budget: self.message_budget(r.max_message_bytes),
            shutdown: self.shutdown.clone(),
        };
        let app = self.app.clone();
        tokio::spawn(async move { app.follow(r.from_sequence, kinds, &mut stream).await });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ReadSnapshotStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ReadSnapshotResponse, Status>>>;

    async fn read_snapshot(
        &self,
        request: Request<pb::ReadSnapshotRequest>,
    ) -> Result<Response<Self::ReadSnapshotStream>, Status> {
        let budget = self.message_budget(request.into_inner().max_message_bytes);
        let snapshot = self.app.feed_snapshot().await?;
        let sequence = snapshot.sequence;
        let pruned_through = snapshot.pruned_through;
        let accounts = snapshot.accounts.iter().map(convert::account_state);
        let mut messages: Vec<_> = split(accounts, budget, |a| a.encoded_len())
            .into_iter()
            .map(|accounts| {
                Ok(pb::ReadSnapshotResponse {
                    accounts,
                    sequence,
                    pruned_through,
                })
            })
            .collect();
        if messages.is_empty() {
            // No live account: the sequence alone still tells the follower where to resume.
            messages.push(Ok(pb::ReadSnapshotResponse {
                accounts: vec![],
                sequence,
                pruned_through,
            }));
        }
        Ok(Response::new(tokio_stream::iter(messages)))
    }
}

impl Handlers {
    /// The largest message to send a client that accepts `requested` bytes.
    fn message_budget(&self, requested: Option<u32>) -> usize {
        let requested = requested.map_or(MAX_MESSAGE_BYTES, |r| r as usize);
        requested
            .clamp(MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES)
            .min(self.max_message_bytes)
    }
}

/// Bytes an item adds to a message as a repeated field: tag, length, body.
fn field_cost(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// Splits `items` into groups whose encoded size stays within `budget`. An item is never
/// split; [`fit`] has made every event small enough to travel alone.
fn split<T>(
    items: impl Iterator<Item = T>,
    budget: usize,
    len: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let room = budget.saturating_sub(MESSAGE_OVERHEAD);
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut used = 0;
    for item in items {
        let cost = field_cost(len(&item));
        if !group.is_empty() && used + cost > room {
            groups.push(std::mem::take(&mut group));
            used = 0;
        }
        used += cost;
        group.push(item);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// The event itself when it fits in a message alone; otherwise the event without its account
/// profile, which keeps what every follower needs (type, account ID, parent, detail) and is
/// bounded by the lengths of IDs. Events carry no large field, but an event recorded before
/// they stopped carrying them, or a bound a client lowered, must still never stop the feed.
fn fit(event: pb::ChangeEvent, budget: usize) -> pb::ChangeEvent {
    // A migration's event has no account profile and is bounded by its ID and message.
    if event.account.is_none()
        || field_cost(event.encoded_len()) <= budget.saturating_sub(MESSAGE_OVERHEAD)
    {
        return event;
    }
    tracing::warn!(
        sequence = event.sequence,
        bytes = event.encoded_len(),
        budget,
        "change event larger than the message bound: sent without its account profile"
    );
    let parent_tenant_id = event
        .account
        .as_ref()
        .and_then(|a| a.parent_tenant_id.clone());
    pb::ChangeEvent {
        account: Some(pb::Account {
            tenant_id: event.tenant_id.clone(),
            parent_tenant_id,
            ..pb::Account::default()
        }),
        changed_fields: Vec::new(),
        ..event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_stay_within_the_budget_and_keep_the_order() {
        let items: Vec<usize> = vec![10, 500, 300, 200, 90, 1_000, 5];
        let groups = split(items.clone().into_iter(), 1_100, |n| *n);
        for group in &groups {
            let size: usize = group.iter().map(|n| field_cost(*n)).sum();
            assert!(size + MESSAGE_OVERHEAD <= 1_100, "{group:?}");
        }
        assert_eq!(groups.concat(), items);
        assert_eq!(groups.len(), 3);
    }

    #[test]
    fn an_event_too_large_for_a_message_keeps_its_identity_and_parent() {
        let event = pb::ChangeEvent {
            sequence: 7,
            change_type: pb::ChangeType::Updated.into(),
            tenant_id: "t".into(),
            account: Some(pb::Account {
                tenant_id: "t".into(),
                parent_tenant_id: Some("p".into()),
                name: "n".repeat(200_000),
                ..pb::Account::default()
            }),
            changed_fields: vec!["name".into()],
            ..pb::ChangeEvent::default()
        };
        let fitted = fit(event.clone(), MIN_MESSAGE_BYTES);
        assert!(fitted.encoded_len() < 1_000);
        assert_eq!(fitted.sequence, 7);
        assert_eq!(fitted.change_type(), pb::ChangeType::Updated);
        assert_eq!(
            fitted.account.and_then(|a| a.parent_tenant_id).as_deref(),
            Some("p")
        );
        let small = pb::ChangeEvent {
            account: None,
            ..event
        };
        assert_eq!(fit(small.clone(), MIN_MESSAGE_BYTES), small);
    }
}
