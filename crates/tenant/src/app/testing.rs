//! Use-case tests run against the real store on a fresh SQLite database (no mocks).

use tempfile::TempDir;
use tenantry_common::{
    CancellationToken,
    db::{self, DbSettings},
};

use super::Engine;
use crate::{
    storage::Store,
    workers::{self, FeedRetention},
};

/// An engine over a migrated SQLite file in a temporary directory, with its background
/// workers running until the returned guard drops.
pub(crate) struct TestEngine {
    pub engine: Engine<Store>,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) async fn engine() -> TestEngine {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("tenant.db").display()
    );
    let conn = db::connect(&DbSettings {
        url,
        schema: "tenant".into(),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(10),
        application_name: "tenant-app-test".into(),
    })
    .await
    .expect("connect to SQLite");
    db::migrate::<crate::migration::Migrator>(&conn)
        .await
        .expect("migrate");
    let store = Store::new(conn, "tenant", 16);
    let shutdown = CancellationToken::new();
    let workers = workers::start(
        &store,
        FeedRetention::default(),
        std::time::Duration::from_secs(86_400),
        None,
        &db::StorageHealth::new(),
        &shutdown,
    );
    TestEngine {
        engine: Engine::new(store, workers),
        shutdown,
        _dir: dir,
    }
}

/// A new top-level (or, with `parent`, sub-) account named after its ID.
pub(crate) fn new_account(id: &str, parent: Option<&str>) -> crate::domain::NewAccount {
    crate::domain::NewAccount {
        tenant_id: Some(id.into()),
        name: format!("Account {id}"),
        parent_tenant_id: parent.map(str::to_owned),
        ..crate::domain::NewAccount::default()
    }
}
