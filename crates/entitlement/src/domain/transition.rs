//! Grant time transitions: a scheduled grant starting, a grant's expiry coming within a lead
//! time, a grant expiring. What makes a transition itself (its key), when it is due, and the
//! rule deciding whether a due transition is sent. Pure: no IO.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Grant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionKind {
    /// A grant created to start later reaches its start.
    Started,
    /// A grant's expiry is a lead time away.
    Expiring,
    /// A grant reaches its expiry.
    Expired,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
        }
    }
}

/// One transition of one grant. The key is the whole value: a grant whose expiry moved has new
/// transitions (a new anchor) and never fires the old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    pub grant_id: Uuid,
    pub kind: TransitionKind,
    /// How long before the anchor it is due (0 but for `Expiring`).
    pub lead_secs: i64,
    /// The grant time it hangs on: its start (`Started`) or its expiry.
    pub anchor: DateTime<Utc>,
}

impl Transition {
    /// The transition of `kind` (at `lead_secs` for `Expiring`) that `grant` has, if any.
    pub fn of(grant: &Grant, kind: TransitionKind, lead_secs: i64) -> Option<Self> {
        let anchor = match kind {
            TransitionKind::Started => grant.starts_at,
            TransitionKind::Expiring | TransitionKind::Expired => grant.expires_at?,
        };
        Some(Self {
            grant_id: grant.id,
            kind,
            lead_secs: if kind == TransitionKind::Expiring {
                lead_secs
            } else {
                0
            },
            anchor,
        })
    }

    pub fn due(&self) -> DateTime<Utc> {
        self.anchor - chrono::Duration::seconds(self.lead_secs)
    }

    /// Whether this due transition is sent when the scheduler reaches it at `now` (else it is
    /// recorded as passed over, so it is never looked at again):
    /// - nothing of a grant revoked at or before the transition was due;
    /// - `started` only for a grant created to start later (an immediate grant's creation is
    ///   its `tenantry.grant.created.v1`);
    /// - `expiring` only when its lead time fell after the grant was created and within its
    ///   term (a 3-day trial gets its 1-day notice, not its 7-day one), and only while the
    ///   grant has not yet expired: after downtime, a notice the expiry has overtaken is not
    ///   sent late — its `expired` is.
    pub fn is_sent(&self, grant: &Grant, now: DateTime<Utc>) -> bool {
        let due = self.due();
        if grant.revoked_at.is_some_and(|revoked| revoked <= due) {
            return false;
        }
        match self.kind {
            TransitionKind::Started => grant.starts_at > grant.created_at,
            TransitionKind::Expiring => {
                due > grant.created_at && due >= grant.starts_at && self.anchor > now
            }
            TransitionKind::Expired => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn grant(created: i64, starts: i64, expires: Option<i64>) -> Grant {
        let at =
            |days: i64| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::days(days);
        Grant {
            id: Uuid::now_v7(),
            plan_id: Uuid::now_v7(),
            tenant_id: "acme".into(),
            user_id: None,
            starts_at: at(starts),
            expires_at: expires.map(at),
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            source: crate::domain::GrantSource::Api,
            external_id: None,
            granted_by: None,
            metadata: serde_json::Value::Null,
            created_at: at(created),
            updated_at: at(created),
        }
    }

    const DAY: i64 = 86_400;

    #[test]
    fn expiring_notices_fall_within_the_term_and_before_the_expiry() {
        let trial = grant(0, 0, Some(3));
        let week = Transition::of(&trial, TransitionKind::Expiring, 7 * DAY).unwrap();
        let day = Transition::of(&trial, TransitionKind::Expiring, DAY).unwrap();
        assert_eq!(day.due(), trial.expires_at.unwrap() - Duration::days(1));
        assert!(
            !week.is_sent(&trial, week.due()),
            "before the grant existed"
        );
        assert!(day.is_sent(&trial, day.due()));
        // Reached only after the expiry (downtime): the expiry overtook it.
        assert!(!day.is_sent(&trial, trial.expires_at.unwrap()));
        let expired = Transition::of(&trial, TransitionKind::Expired, 7 * DAY).unwrap();
        assert_eq!(expired.lead_secs, 0);
        assert!(expired.is_sent(&trial, trial.expires_at.unwrap() + Duration::days(5)));
    }

    #[test]
    fn only_scheduled_grants_start_and_revoked_ones_fire_nothing_after() {
        let now = grant(0, 0, None);
        let later = grant(0, 2, Some(10));
        let started = |g: &Grant| Transition::of(g, TransitionKind::Started, 0).unwrap();
        assert!(!started(&now).is_sent(&now, now.starts_at));
        assert!(started(&later).is_sent(&later, later.starts_at));
        assert!(Transition::of(&now, TransitionKind::Expired, 0).is_none());
        let mut revoked = later.clone();
        revoked.revoked_at = Some(later.starts_at - Duration::days(1));
        assert!(!started(&revoked).is_sent(&revoked, revoked.starts_at));
        // Revoked after it started (while the scheduler was down): the start still happened.
        revoked.revoked_at = Some(later.starts_at + Duration::days(1));
        assert!(started(&revoked).is_sent(&revoked, revoked.starts_at + Duration::days(2)));
    }
}
