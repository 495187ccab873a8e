//! The audit log: entries inserted in the write's transaction; pages and export chunks read.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use tenantry_common::audit::{
    AuditPage, AuditQuery, AuditRecord, ExportQuery, RequestContext, store,
};

use super::{Store, db_err};
use crate::app::ports::AuditStore;
use crate::domain::{Result, audit::AuditEntry};

#[async_trait]
impl AuditStore for Store {
    fn audit_enabled(&self) -> bool {
        self.audit_enabled
    }

    async fn record_audit(
        &self,
        txn: &DatabaseTransaction,
        entries: &[AuditEntry],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !self.audit_enabled {
            return Ok(());
        }
        store::insert(txn, entries, &RequestContext::current(), now)
            .await
            .map_err(db_err("record audit entries"))
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage> {
        store::list(self.connection(), query)
            .await
            .map_err(db_err("list audit entries"))
    }

    async fn prune_audit(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        store::prune(self.connection(), before, limit)
            .await
            .map_err(db_err("prune audit entries"))
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
