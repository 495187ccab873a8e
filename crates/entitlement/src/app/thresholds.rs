//! Usage thresholds: `tenantry.usage.threshold.v1` once per (account, feature, period,
//! threshold), from the transaction of the metering write that reached it.
//!
//! Every metering write calls [`Engine::usage_thresholds`] with its meter's reading after the
//! write (under the meter's lock). The rule is a level, not an edge: each configured threshold
//! the reading has reached (`domain::threshold`) and that is not yet recorded for the period
//! is recorded (insert-if-absent, same transaction) and its event goes to the outbox with the
//! write's revision. So a write that rolls back fires nothing, two replicas never fire one
//! twice, one write can fire several, a new period fires again — and a share reached without
//! a metering write (a plan downgrade, a credit expiring mid-period) fires at the meter's next
//! write, which the edge rule would miss. With no enabled endpoint nothing is recorded (as no
//! event is): an endpoint added later hears of the open period's thresholds at the next write.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Engine;
use super::ports::Storage;
use crate::domain::metering::{MeterKey, MeterReading};
use crate::domain::threshold::ThresholdCrossing;
use crate::domain::webhook::{self, Event};
use crate::domain::{IndexChange, Result};

/// The thresholds one transaction's metering writes reached, sent with its commit
/// ([`Engine::commit_metered`]).
#[derive(Debug, Default)]
pub struct Reached {
    /// Whether an endpoint is enabled, asked once per transaction (only once something is
    /// reached).
    wanted: Option<bool>,
    crossings: Vec<ThresholdCrossing>,
}

impl Reached {
    /// Their events, stamped with the commit's revision.
    pub(super) fn events(&self, revision: u64) -> impl Iterator<Item = Event> + '_ {
        self.crossings
            .iter()
            .map(move |c| webhook::threshold_event(c, revision))
    }
}

impl<S: Storage> Engine<S> {
    /// The one place thresholds are detected: records in `txn` each configured threshold the
    /// account's meter of the feature has reached in `after`'s period and not before, and adds
    /// it to `reached`. `after` is the meter's reading once the write is done, at `now`.
    pub(super) async fn usage_thresholds(
        &self,
        txn: &S::Txn,
        reached: &mut Reached,
        (meter, feature_id, feature_key): (&MeterKey, Uuid, &str),
        after: &MeterReading,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let levels = self.thresholds.reached(after);
        if levels.is_empty() {
            return Ok(());
        }
        let wanted = match reached.wanted {
            Some(wanted) => wanted,
            None => {
                let wanted = self.store.webhooks_wanted(txn).await?;
                reached.wanted = Some(wanted);
                wanted
            }
        };
        if !wanted {
            return Ok(());
        }
        let fired = self
            .store
            .record_thresholds(txn, meter, feature_id, after.period_start, levels, now)
            .await?;
        reached.crossings.extend(ThresholdCrossing::of(
            (&meter.tenant_id, meter.user()),
            feature_id,
            feature_key,
            after,
            &fired,
            now,
        ));
        Ok(())
    }

    /// Commits a metering write's `changes` with the thresholds it reached.
    pub(super) async fn commit_metered(
        &self,
        txn: S::Txn,
        changes: Vec<IndexChange>,
        reached: Reached,
    ) -> Result<u64> {
        let log = self.store.encode(&changes)?;
        self.commit_encoded_with(
            txn,
            changes,
            log,
            None,
            &crate::domain::audit::Prior::none(),
            reached,
        )
        .await
    }
}

#[cfg(test)]
#[path = "thresholds_tests.rs"]
mod tests;
