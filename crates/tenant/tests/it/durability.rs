//! Storage that never acknowledges what it did not commit: the tenant service on SQLite in a
//! size-limited directory, filled while it serves.

use std::time::{Duration, Instant};

use tenantry_common::{config::sqlite_url, testing::SizeLimitedDir};
use tenantry_proto::tenant::v1 as pb;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{TestApp, reason, spawn_sqlite_app_at};

async fn migration(app: &TestApp, migration_id: &str) -> pb::Migration {
    app.migrations()
        .get_migration_status(pb::GetMigrationStatusRequest {
            migration_id: migration_id.to_owned(),
            errors_page: None,
        })
        .await
        .expect("status of the import")
        .into_inner()
        .migration
        .expect("the import")
}

async fn serving(app: &TestApp) -> ServingStatus {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

async fn create(app: &TestApp, tenant_id: &str) -> Result<(), tonic::Status> {
    app.tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount {
                tenant_id: Some(tenant_id.to_owned()),
                name: tenant_id.to_owned(),
                // Big enough that each commit needs new pages in the WAL.
                logo: Some("x".repeat(4_000)),
                ..pb::NewAccount::default()
            }),
            idempotency_key: None,
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_storage_full_never_loses_an_acknowledged_one_and_recovers()
{
    let dir = SizeLimitedDir::mount(8 << 20)
        .expect("a size-limited tmpfs for the disk-full test (run the tests as root, as CI does)");
    let url = sqlite_url(&dir.path().join("tenant.db"));
    let app = spawn_sqlite_app_at(url.clone()).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let id = format!("before-{i}");
        create(&app, &id)
            .await
            .expect("write before the disk fills");
        acknowledged.push(id);
    }
    assert_eq!(serving(&app).await, ServingStatus::Serving);

    dir.fill();
    let mut refused = 0;
    let mut wrong = Vec::new();
    for i in 0..300 {
        let id = format!("full-{i}");
        match create(&app, &id).await {
            Ok(()) => acknowledged.push(id),
            Err(status) => {
                refused += 1;
                let typed = (status.code(), reason(&status));
                if typed != (Code::ResourceExhausted, "STORAGE_FULL".to_owned())
                    && typed != (Code::Unavailable, "STORAGE_FAILED".to_owned())
                {
                    wrong.push(format!("{id}: {status:?}"));
                }
            }
        }
        if refused >= 20 {
            break;
        }
    }
    assert!(refused > 0, "a full disk refused no write");
    assert!(
        wrong.is_empty(),
        "refusals that do not say the storage is full: {wrong:#?}"
    );
    assert_eq!(
        serving(&app).await,
        ServingStatus::NotServing,
        "a service whose disk is full must not report itself ready"
    );

    dir.free();
    let deadline = Instant::now() + Duration::from_secs(20);
    while serving(&app).await != ServingStatus::Serving {
        assert!(
            Instant::now() < deadline,
            "the service stayed NOT_SERVING after the disk was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..5 {
        let id = format!("after-{i}");
        create(&app, &id)
            .await
            .expect("write after the disk is freed");
        acknowledged.push(id);
    }

    let app = TestApp::restart(app.stop().await).await;
    let mut lost = Vec::new();
    for id in &acknowledged {
        match app.get(id).await {
            Ok(_) => {}
            Err(status) => lost.push(format!("{id}: {:?}", status.code())),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged accounts are gone after a restart: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    drop(app);
    drop(url);
}

/// A background write refused for a full disk makes the service unready as a request's does
/// (the import worker's refusals were only logged, and the job was marked failed at once):
/// the job waits for the disk instead of failing, and the service is ready again as soon as a
/// write commits on the freed disk.
#[tokio::test]
async fn an_import_meeting_a_full_disk_makes_the_service_unready_until_it_is_freed() {
    const ITEMS: usize = 20_000;
    let dir = SizeLimitedDir::mount(64 << 20)
        .expect("a size-limited tmpfs for the disk-full test (run the tests as root, as CI does)");
    let app = spawn_sqlite_app_at(sqlite_url(&dir.path().join("tenant.db"))).await;
    let items = (0..ITEMS)
        .map(|i| pb::MigrationItem {
            item: Some(pb::migration_item::Item::TenantId(format!(
                "imported-{i:05}-{}",
                "p".repeat(100)
            ))),
        })
        .collect();
    let submitted = crate::migrations::submit(&app, vec![items]).await;
    dir.fill();
    // No request writes: only the import can find the disk full.
    let deadline = Instant::now() + Duration::from_secs(20);
    while serving(&app).await != ServingStatus::NotServing {
        assert!(
            Instant::now() < deadline,
            "the import met a full disk and the service still reports SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = migration(&app, &submitted.migration_id).await;
    assert!(
        matches!(
            status.state(),
            pb::MigrationState::Pending | pb::MigrationState::Running
        ),
        "an import must wait for a full disk, not fail (nor finish before it filled): {status:?}"
    );

    dir.free();
    // The import goes on as soon as the disk has room, and its commits are the proof that the
    // storage takes writes: readiness follows them rather than waiting for its own probe write,
    // which the import's back-to-back batches kept off SQLite's lock for up to the busy timeout.
    let resumed = (status.processed_items + 300).min(status.total_items);
    let deadline = Instant::now() + Duration::from_secs(60);
    while migration(&app, &submitted.migration_id)
        .await
        .processed_items
        < resumed
    {
        assert!(
            Instant::now() < deadline,
            "the import did not resume after the disk was freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        serving(&app).await,
        ServingStatus::Serving,
        "the import commits again but the service still reports NOT_SERVING"
    );
}
