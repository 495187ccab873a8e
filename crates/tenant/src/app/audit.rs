//! Reading the audit log: a checked query, and an export in chunks — both refused when the
//! service records no entries (`audit_enabled = false`), so an empty answer never passes for
//! "nothing happened".

use chrono::Utc;
use tenantry_common::audit::{
    AuditPage, AuditQuery, AuditRecord, DISABLED_MESSAGE, ExportQuery, QueryError, RawExport,
    RawQuery,
};
use tenantry_common::error::AUDIT_DISABLED;

use super::{Engine, ports::Storage};
use crate::domain::{Error, error::Result};

/// Entries one export chunk holds.
pub const EXPORT_CHUNK: u32 = 100;

fn invalid(err: QueryError) -> Error {
    Error::invalid(err.field, err.message)
}

impl<S: Storage> Engine<S> {
    fn ensure_audit_enabled(&self) -> Result<()> {
        if self.store.audit_enabled() {
            Ok(())
        } else {
            Err(Error::FailedPrecondition {
                reason: AUDIT_DISABLED,
                message: DISABLED_MESSAGE.to_owned(),
            })
        }
    }

    /// A page of audit entries matching `raw`'s filters, newest first.
    pub async fn audit_events(&self, raw: RawQuery) -> Result<AuditPage> {
        self.ensure_audit_enabled()?;
        let query = AuditQuery::parse(raw).map_err(invalid)?;
        self.store.list_audit(&query).await
    }

    /// A checked export (`to` defaults to now).
    pub fn audit_export(&self, raw: RawExport) -> Result<ExportQuery> {
        self.ensure_audit_enabled()?;
        ExportQuery::parse(raw, Utc::now()).map_err(invalid)
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
