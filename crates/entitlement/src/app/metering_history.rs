//! Usage history: a metered feature's usage for an account per window, aggregated by the store
//! from the recorded events (late ones in the window they happened in).

use chrono::{DateTime, Utc};

use super::reset::period_cuts;
use super::{known_account, meter_owner, metered_or_error, selected_meter};
use crate::app::Engine;
use crate::app::ports::Storage;
use crate::domain::usage_history::{
    HistoryQuery, Span, UsageWindow, period_containing, validate_query, windows,
};
use crate::domain::{Aggregation, DomainError, Result};

/// A feature's usage per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageHistory {
    /// How each window's usage was aggregated (the feature's).
    pub aggregation: Aggregation,
    pub windows: Vec<UsageWindow>,
}

impl<S: Storage> Engine<S> {
    /// The account's usage of a metered feature per `q.window` over `[q.from, q.to)`.
    pub async fn usage_history(&self, q: &HistoryQuery) -> Result<UsageHistory> {
        validate_query(q)?;
        let index = self.index.current();
        let feature = metered_or_error(&index, &q.feature_key)?;
        // A deleted account's history is not shown (its events are kept).
        known_account(&index, &q.tenant_id)?;
        // The account's events (of `user_id` when given), in the periods of the meter they
        // draw on: the user's own when it has one, else the account's (a pool's are its
        // owner's).
        let now = self.present(&index);
        let owner = match q.user_id.as_deref() {
            Some(user) => selected_meter(&index, &q.tenant_id, Some(user), &feature, now)
                .unwrap_or_else(|_| meter_owner(&index, &q.tenant_id, None, &feature, now)),
            None => meter_owner(&index, &q.tenant_id, None, &feature, now),
        };
        let open = index.meter(&owner.tenant_id, owner.user(), feature.id);
        let spec = &feature.spec;
        let first = spec
            .period
            .containing(q.from)
            .map_err(|e| DomainError::invalid("from", e.to_string()))?;
        // Periods that resets cut short bound the scheduled ones.
        let recorded = self
            .store
            .closed_periods(&owner, feature.id, first.start, q.to)
            .await?;
        let cuts = period_cuts(&recorded, open);
        let period_at = |at: DateTime<Utc>| -> Result<Span> {
            let w = spec
                .period
                .containing(at)
                .map_err(|e| DomainError::invalid("from", e.to_string()))?;
            Ok(period_containing((w.start, w.end), &cuts, at))
        };
        let cut = windows(q.window, q.from, q.to, &period_at)?;
        let bounds: Vec<DateTime<Utc>> = cut
            .iter()
            .map(|w| w.0)
            .chain(std::iter::once(q.to))
            .collect();
        let values = self
            .store
            .usage_per_window(
                &q.tenant_id,
                feature.id,
                q.user_id.as_deref(),
                feature.aggregation,
                &bounds,
            )
            .await?;
        Ok(UsageHistory {
            aggregation: feature.aggregation,
            windows: cut
                .into_iter()
                .zip(values)
                .map(|((start, end), usage)| UsageWindow { start, end, usage })
                .collect(),
        })
    }
}

#[cfg(test)]
#[path = "metering_history_tests.rs"]
mod tests;
