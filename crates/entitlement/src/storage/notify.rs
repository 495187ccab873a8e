//! Fewer change notifications from the single-statement writes (consumption groups, usage
//! batches): at a thousand groups a second, NOTIFY was a tenth of a consumption's cost (the
//! writer signals every listening backend at commit, each wakes and forwards it, each
//! replica's listener wakes). A follower only needs to be woken after a change it has not
//! read: it reads the whole change log past its revision, however many notifications
//! announced it.
//!
//! So a write announces itself in its own statement when the last write that did started
//! at least [`WINDOW`] ago (the leading edge: an isolated write reaches other replicas as
//! soon as before). A write inside the window commits without one and is then owed one: the
//! next announcing write to commit pays it if it started after the owed write committed (its
//! notification is delivered at its commit, after the owed write is visible). Under a steady
//! stream of writes that is every announcement, one per window and no extra statement. Owed
//! writes not paid that way within twice the window (the stream stopped, an announcing write
//! failed) are announced by a statement of their own. Followers thus learn of a committed
//! write within `2 × WINDOW`, and a lost announcement is still covered by their poll.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::sqlx::{self, PgPool};
use tokio::time::Instant;

use super::NotifyOrigin;

/// The least time between two announcing writes' starts: far below the replica-propagation
/// bound (B6, 100 ms; an isolated write is not delayed at all), and long enough that a
/// thousand groups a second announce themselves at most 200 times.
pub(super) const WINDOW: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
struct State {
    /// When the last write that announces itself started.
    lead: Option<Instant>,
    /// What is owed, if anything.
    owed: Option<Owed>,
    /// Whether a task is watching what is owed.
    watched: bool,
}

#[derive(Debug, Clone, Copy)]
struct Owed {
    /// The highest revision committed without an announcement.
    revision: u64,
    /// No later than the commit of the earliest write not paid for.
    since: Instant,
    /// When the last write asked.
    latest: Instant,
}

/// Decides which single-statement writes announce themselves; pays what is owed. Cheap to
/// clone.
#[derive(Debug, Clone, Default)]
pub(super) struct NotifyThrottle(Arc<Mutex<State>>);

impl NotifyThrottle {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the write about to run announces itself in its statement: `Some(start)` when
    /// the window since the last announcing write's start has passed.
    pub(super) fn lead(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.state();
        let due = state.lead.is_none_or(|last| now >= last + WINDOW);
        due.then(|| {
            state.lead = Some(now);
            now
        })
    }

    /// An announcing write that started at `start` committed: it paid for every write owed
    /// before `start`.
    pub(super) fn led(&self, start: Instant) {
        let mut state = self.state();
        state.owed = state.owed.and_then(|owed| {
            (owed.latest >= start).then_some(Owed {
                since: owed.since.max(start),
                ..owed
            })
        });
    }

    /// Records `revision` as owed; `true` when no task watches what is owed yet (the caller
    /// starts one).
    fn record_owed(&self, revision: u64) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        state.owed = Some(match state.owed {
            Some(owed) => Owed {
                revision: owed.revision.max(revision),
                latest: now,
                ..owed
            },
            None => Owed {
                revision,
                since: now,
                latest: now,
            },
        });
        !std::mem::replace(&mut state.watched, true)
    }

    #[cfg(test)]
    fn owed(&self) -> Option<u64> {
        self.state().owed.map(|o| o.revision)
    }

    /// A write that did not announce itself committed `revision`: owes an announcement
    /// (`"{revision} {origin}"` on `channel`), paid by the next announcing write or, failing
    /// that within `2 × WINDOW`, by a statement of its own.
    pub(super) fn owe(&self, revision: u64, pool: &PgPool, channel: &str, origin: &NotifyOrigin) {
        if !self.record_owed(revision) {
            return;
        }
        let throttle = self.clone();
        let pool = pool.clone();
        let channel = channel.to_owned();
        let origin = origin.clone();
        tokio::spawn(async move {
            let revision = loop {
                let since = {
                    let mut state = throttle.state();
                    match state.owed {
                        None => {
                            state.watched = false;
                            return;
                        }
                        Some(owed) if Instant::now() >= owed.since + 2 * WINDOW => {
                            state.owed = None;
                            state.watched = false;
                            break owed.revision;
                        }
                        Some(owed) => owed.since,
                    }
                };
                tokio::time::sleep_until(since + 2 * WINDOW).await;
            };
            // Every write owed here committed before it asked; one asking from now on is
            // watched by another task.
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(origin.payload(revision))
                .execute(&pool)
                .await;
            if let Err(e) = sent {
                // Followers' poll reads the change anyway, later.
                tracing::debug!(
                    failure = ?tenantry_common::db::classify_sqlx(&e),
                    "a change announcement failed"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_leads_only_once_the_window_has_passed() {
        let throttle = NotifyThrottle::default();
        assert!(
            throttle.lead().is_some(),
            "the first write announces itself"
        );
        assert!(
            throttle.lead().is_none(),
            "a write inside the window does not"
        );
        tokio::time::advance(WINDOW / 2).await;
        assert!(throttle.lead().is_none(), "still inside the window");
        tokio::time::advance(WINDOW / 2).await;
        assert!(throttle.lead().is_some(), "the window has passed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_announcement_pays_only_for_writes_committed_before_it_started() {
        let throttle = NotifyThrottle::default();
        let early = throttle.lead().unwrap();
        tokio::time::advance(WINDOW / 4).await;
        assert!(
            throttle.record_owed(7),
            "the first owed write starts a watch"
        );
        assert!(!throttle.record_owed(8), "one watch at a time");
        // Started before those committed: its notification may have gone out before them.
        throttle.led(early);
        assert_eq!(throttle.owed(), Some(8));
        tokio::time::advance(WINDOW).await;
        let late = throttle.lead().unwrap();
        throttle.led(late);
        assert_eq!(throttle.owed(), None);
    }
}
