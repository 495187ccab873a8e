//! When and how a failed call is tried again.
//!
//! A call is retried only when doing it twice cannot do harm: a read, or a write that carries an
//! idempotency key (the service replays the first answer to a retry). It is retried only when
//! the failure is an outage (the service did not answer about the request) or a lost race
//! (ABORTED), as [`CallFailure`] classifies them; a refusal or a credentials problem comes back
//! at once, because the same call would meet it again. Waits grow exponentially with full
//! jitter, so clients that failed together do not retry together, and the whole call — every
//! attempt and every wait — stays within the call's deadline.

use std::time::Duration;

use rand::Rng;
use tenantry_common::grpc::CallFailure;

/// Whether a call may be sent again after it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// A read: sending it twice changes nothing.
    Idempotent,
    /// A write the service deduplicates by the idempotency key it carries.
    Keyed,
    /// A write without a key: a retry after a lost answer could apply it twice.
    Once,
}

/// Retry settings. The default: up to 4 attempts, waits drawn from `[0, 50 ms · 2^n]`, each at
/// most 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// The ceiling of the first wait.
    pub initial_backoff: Duration,
    /// No wait is longer than this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries: every call is attempted once.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Whether a call of `safety` that failed with `status` on attempt `attempt` (1-based) may
    /// be attempted again.
    pub fn should_retry(&self, safety: Safety, status: &tonic::Status, attempt: u32) -> bool {
        attempt < self.max_attempts
            && safety != Safety::Once
            && matches!(
                CallFailure::of(status),
                CallFailure::Outage | CallFailure::Conflict
            )
    }

    /// The wait before attempt `attempt + 1`: uniform in `[0, min(max, initial · 2^(attempt-1))]`
    /// ("full jitter").
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=micros))
    }

    fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn only_safe_calls_are_retried_and_only_on_outages_or_lost_races() {
        let policy = RetryPolicy::default();
        let status = |code| tonic::Status::new(code, "sent");
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
        ] {
            assert!(policy.should_retry(Safety::Idempotent, &status(code), 1));
            assert!(policy.should_retry(Safety::Keyed, &status(code), 1));
            assert!(
                !policy.should_retry(Safety::Once, &status(code), 1),
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::Internal,
            Code::Unauthenticated,
            Code::PermissionDenied,
        ] {
            assert!(
                !policy.should_retry(Safety::Idempotent, &status(code), 1),
                "{code:?}"
            );
        }
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default();
        let outage = tonic::Status::unavailable("down");
        assert!(policy.should_retry(Safety::Idempotent, &outage, 3));
        assert!(!policy.should_retry(Safety::Idempotent, &outage, 4));
        assert!(!RetryPolicy::none().should_retry(Safety::Idempotent, &outage, 1));
    }

    #[test]
    fn waits_grow_exponentially_within_the_cap_and_are_jittered() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_millis(50));
        assert_eq!(policy.ceiling(2), Duration::from_millis(100));
        assert_eq!(policy.ceiling(4), Duration::from_millis(400));
        assert_eq!(policy.ceiling(10), Duration::from_secs(1));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..64).map(|_| policy.backoff(3)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(200)));
        // Full jitter: 64 draws from [0, 200 ms] are not all the same.
        assert!(waits.iter().any(|w| *w != waits[0]));
    }
}
