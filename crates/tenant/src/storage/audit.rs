//! The audit log's reads (entries are written by [`super::Store::record_audit`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tenantry_common::audit::{AuditPage, AuditQuery, AuditRecord, ExportQuery, store};

use super::{Result, Store, db_err};
use crate::app::ports::AuditStore;

impl Store {
    /// Deletes up to `limit` entries recorded before `before` (retention, the only delete).
    pub async fn prune_audit(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        store::prune(self.connection(), before, limit)
            .await
            .map_err(db_err("prune audit entries"))
    }
}

#[async_trait]
impl AuditStore for Store {
    fn audit_enabled(&self) -> bool {
        self.audit_enabled
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage> {
        store::list(self.connection(), query)
            .await
            .map_err(db_err("list audit entries"))
    }

    async fn export_audit(
        &self,
        export: &ExportQuery,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        store::export_chunk(self.connection(), export, after_sequence, limit)
            .await
            .map_err(db_err("export audit entries"))
    }
}
