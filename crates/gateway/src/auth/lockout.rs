//! Backoff per client ID on `POST /auth/vendor`: after [`FREE_FAILURES`] wrong secrets in a
//! row, a client ID is refused for 1 s, then 2 s, 4 s, … up to [`MAX_LOCK`], whatever the
//! secret, so an online guesser gets a handful of tries per lock period. A success clears the
//! count. Memory is bounded: at most [`MAX_TRACKED`] client IDs are remembered, the stalest
//! forgotten first.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Wrong secrets a client ID may send before backoff starts (typos, a rotated secret).
pub const FREE_FAILURES: u32 = 5;
/// The first lock; each further failure after it doubles the next one.
const BASE_LOCK: Duration = Duration::from_secs(1);
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::from_secs(300);
/// A client ID without failures for this long starts again from zero.
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Most client IDs remembered at once.
const MAX_TRACKED: usize = 10_000;
/// Longer client IDs are remembered by their first this many bytes (bounds each entry).
const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, Default)]
pub struct Lockout {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

fn key(client_id: &str) -> &str {
    if client_id.len() <= MAX_KEY_BYTES {
        return client_id;
    }
    let mut end = MAX_KEY_BYTES;
    while !client_id.is_char_boundary(end) {
        end -= 1;
    }
    &client_id[..end]
}

impl Lockout {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(remaining)` while `client_id` is locked out.
    pub fn check(&self, client_id: &str) -> Result<(), Duration> {
        self.check_at(client_id, Instant::now())
    }

    fn check_at(&self, client_id: &str, now: Instant) -> Result<(), Duration> {
        match self.lock().get(key(client_id)).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            Some(_) | None => Ok(()),
        }
    }

    /// Records a wrong secret (only called when not locked out, so retries during a lock do
    /// not lengthen it).
    pub fn failed(&self, client_id: &str) {
        self.failed_at(client_id, Instant::now());
    }

    fn failed_at(&self, client_id: &str, now: Instant) {
        let mut entries = self.lock();
        let k = key(client_id);
        if !entries.contains_key(k) && entries.len() >= MAX_TRACKED {
            entries.retain(|_, e| {
                now.duration_since(e.last_failure) < FORGET_AFTER
                    || e.locked_until.is_some_and(|u| u > now)
            });
            if entries.len() >= MAX_TRACKED
                && let Some(stalest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_failure)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&stalest);
            }
        }
        let entry = entries.entry(k.to_owned()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if now.duration_since(entry.last_failure) >= FORGET_AFTER {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        if entry.failures > FREE_FAILURES {
            let doublings = (entry.failures - FREE_FAILURES - 1).min(16);
            let lock = BASE_LOCK.saturating_mul(1 << doublings).min(MAX_LOCK);
            entry.locked_until = Some(now + lock);
        }
    }

    /// A right secret outside a lock: the count starts again.
    pub fn succeeded(&self, client_id: &str) {
        self.lock().remove(key(client_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_free_failures_doubles_and_is_capped() {
        let lockout = Lockout::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            lockout.failed_at("vendor", t0);
            assert_eq!(lockout.check_at("vendor", t0), Ok(()));
        }
        lockout.failed_at("vendor", t0);
        assert_eq!(lockout.check_at("vendor", t0), Err(Duration::from_secs(1)));
        // Another client ID is not affected.
        assert_eq!(lockout.check_at("other", t0), Ok(()));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(lockout.check_at("vendor", t1), Ok(()));
        lockout.failed_at("vendor", t1);
        assert_eq!(lockout.check_at("vendor", t1), Err(Duration::from_secs(2)));
        let mut t = t1;
        for _ in 0..30 {
            t += MAX_LOCK;
            lockout.failed_at("vendor", t);
        }
        assert_eq!(lockout.check_at("vendor", t), Err(MAX_LOCK));
        lockout.succeeded("vendor");
        assert_eq!(lockout.check_at("vendor", t), Ok(()));
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_stalest() {
        let lockout = Lockout::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED + 50 {
            lockout.failed_at(&format!("id-{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(lockout.lock().len(), MAX_TRACKED);
        assert!(!lockout.lock().contains_key("id-0"));
        lockout.failed_at(&"x".repeat(10_000), t0);
        assert!(lockout.lock().keys().all(|k| k.len() <= MAX_KEY_BYTES));
    }
}
