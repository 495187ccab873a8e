//! Reading the audit log: a checked query, and an export of a time range in chunks.

use chrono::{DateTime, Utc};
use tenantry_common::audit::{AuditPage, AuditQuery, AuditRecord, QueryError, RawQuery};

use super::{Engine, ports::Storage};
use crate::domain::{DomainError, Result};

/// Entries one export chunk holds.
pub const EXPORT_CHUNK: u32 = 100;

fn invalid(err: QueryError) -> DomainError {
    DomainError::invalid(err.field, err.message)
}

/// The bounds of an export: `from` is required and `to` (default: `now`) after it.
pub fn export_range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let from = from.ok_or_else(|| DomainError::invalid("from", "is required"))?;
    let to = to.unwrap_or(now);
    if from >= to {
        return Err(DomainError::invalid("to", "must be after `from`"));
    }
    Ok((from, to))
}

impl<S: Storage> Engine<S> {
    /// A page of audit entries matching `raw`'s filters, newest first.
    pub async fn audit_events(&self, raw: RawQuery) -> Result<AuditPage> {
        let query = AuditQuery::parse(raw).map_err(invalid)?;
        self.store.list_audit(&query).await
    }

    /// Deletes up to `limit` entries recorded before `before` by the engine's clock.
    pub async fn prune_audit(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        self.store.prune_audit(before, limit).await
    }

    /// The next chunk of an export of `[from, to)` after `after_sequence` (empty at the end).
    pub async fn export_audit_chunk(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after_sequence: u64,
    ) -> Result<Vec<AuditRecord>> {
        self.store
            .export_audit(from, to, after_sequence, EXPORT_CHUNK)
            .await
    }
}
