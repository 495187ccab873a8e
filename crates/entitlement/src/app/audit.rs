//! Reading the audit log: a checked query, and an export in chunks — both refused when the
//! service records no entries (`audit_enabled = false`), so an empty answer never passes for
//! "nothing happened".

use chrono::{DateTime, Utc};
use tenantry_common::audit::{
    AuditPage, AuditQuery, AuditRecord, ExportQuery, QueryError, RawExport, RawQuery,
};

use super::{Engine, ports::Storage};
use crate::domain::{DomainError, Result};

/// Entries one export chunk holds.
pub const EXPORT_CHUNK: u32 = 100;

fn invalid(err: QueryError) -> DomainError {
    DomainError::invalid(err.field, err.message)
}

impl<S: Storage> Engine<S> {
    fn ensure_audit_enabled(&self) -> Result<()> {
        if self.store.audit_enabled() {
            Ok(())
        } else {
            Err(DomainError::AuditDisabled)
        }
    }

    /// A page of audit entries matching `raw`'s filters, newest first.
    pub async fn audit_events(&self, raw: RawQuery) -> Result<AuditPage> {
        self.ensure_audit_enabled()?;
        let query = AuditQuery::parse(raw).map_err(invalid)?;
        self.store.list_audit(&query).await
    }

    /// A checked export (`to` defaults to the engine's now).
    pub fn audit_export(&self, raw: RawExport) -> Result<ExportQuery> {
        self.ensure_audit_enabled()?;
        ExportQuery::parse(raw, self.now()).map_err(invalid)
    }

    /// Deletes up to `limit` entries recorded before `before` by the engine's clock.
    pub async fn prune_audit(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        self.store.prune_audit(before, limit).await
    }

    /// The next chunk of `export` after `after_sequence` (empty at the end).
    pub async fn export_audit_chunk(
        &self,
        export: &ExportQuery,
        after_sequence: u64,
    ) -> Result<Vec<AuditRecord>> {
        self.store
            .export_audit(export, after_sequence, EXPORT_CHUNK)
            .await
    }
}
