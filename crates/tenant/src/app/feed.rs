//! The change feed: replay from a cursor then follow live, with heartbeats; the snapshot a
//! follower whose cursor expired resynchronises from. How events are framed into messages is
//! the transport's business (the [`Follower`] port).

use std::time::Duration;

use tokio::time::Instant;

use super::{
    Engine,
    ports::{Follower, Storage},
};
use crate::domain::{ChangeKind, FeedSnapshot, error::Result};

/// Events read per query during replay.
pub const BATCH: u64 = 500;
/// Re-reads the outbox this often even without a wake-up: covers writes by other replicas
/// while LISTEN is down, and other processes writing the same SQLite file.
const POLL: Duration = Duration::from_secs(1);
/// An empty send this often tells an idle follower the stream and the head are alive.
const HEARTBEAT: Duration = Duration::from_secs(15);

impl<S: Storage> Engine<S> {
    /// Sends `follower` the events after `cursor` of `kinds` (all when empty), then every new
    /// one as it commits, until the follower goes or the service stops.
    pub async fn follow(
        &self,
        mut cursor: u64,
        kinds: Vec<ChangeKind>,
        follower: &mut impl Follower,
    ) {
        let mut wake = self.store.subscribe_feed();
        let mut last_sent = Instant::now();
        // The first message goes out at once, even empty: it tells the follower the head.
        let mut greeted = false;
        loop {
            // Mark the wake-up seen before reading, so a commit racing the read still wakes us.
            wake.borrow_and_update();
            let head = match self.store.feed_head().await {
                Ok(head) => head,
                Err(err) => return follower.fail(err).await,
            };
            let events = match self.store.read_changes(cursor, &kinds, BATCH).await {
                Ok(events) => events,
                Err(err) => return follower.fail(err).await,
            };
            let full = events.len() as u64 == BATCH;
            if let Some(last) = events.last() {
                cursor = last.sequence;
                if !follower.send(events, head).await {
                    return;
                }
                last_sent = Instant::now();
                greeted = true;
                if full {
                    continue;
                }
            } else if head > cursor {
                // Every sequence up to `head` had committed before the read (the head row is
                // updated in the writers' transactions), so events filtered out by type need
                // not be read again.
                cursor = head;
            }
            if !greeted || last_sent.elapsed() >= HEARTBEAT {
                if !follower.send(Vec::new(), head.max(cursor)).await {
                    return;
                }
                last_sent = Instant::now();
                greeted = true;
            }
            tokio::select! {
                changed = wake.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(POLL) => {}
                () = follower.closed() => return,
            }
        }
    }

    /// The live accounts as of one feed sequence.
    pub async fn feed_snapshot(&self) -> Result<FeedSnapshot> {
        self.store.feed_snapshot().await
    }
}
