//! The main paths on SQLite (embedded mode).

use std::time::Duration;

use futures::StreamExt;
use tenantry_proto::tenant::v1::{self as pb, migration_item::Item};
use tonic::Code;

use crate::helpers::{TestApp, assert_code, reason, spawn_sqlite_app};

#[tokio::test]
async fn accounts_hierarchy_and_metadata_work_on_sqlite() {
    let app = spawn_sqlite_app().await;
    app.create("root", "Root").await;
    app.create("kid", "Kid").await;
    app.create("grandkid", "Grandkid").await;
    app.attach("root", "kid").await.unwrap();
    app.attach("kid", "grandkid").await.unwrap();
    let s = assert_code(
        app.attach("grandkid", "root").await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&s), "CYCLE");
    let (a, b) = tokio::join!(
        app.attach("root", "grandkid"),
        app.attach("grandkid", "root")
    );
    assert!(
        a.is_err() && b.is_err(),
        "grandkid already has a parent; root would cycle"
    );

    app.tenants()
        .add_account_metadata(pb::AddAccountMetadataRequest {
            tenant_id: "kid".into(),
            metadata: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(
                    r#"{"seats": 5}"#.into(),
                )),
            }),
        })
        .await
        .unwrap();

    let deleted = app.delete("kid").await;
    assert_eq!(deleted.reparented_tenant_ids, vec!["grandkid".to_owned()]);
    assert_eq!(
        app.get("grandkid")
            .await
            .unwrap()
            .parent_tenant_id
            .as_deref(),
        Some("root")
    );
    let revived = app
        .tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount {
                tenant_id: Some("kid".into()),
                name: "Kid 2".into(),
                ..pb::NewAccount::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revived.reactivated);

    let page = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest {
            filter: Some("KID".into()),
            sort_by: pb::AccountSortField::Name.into(),
            ..pb::ListAccountsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = page.accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["Grandkid", "Kid 2"]);
}

#[tokio::test]
async fn migrations_and_the_feed_survive_a_restart_on_sqlite() {
    let app = spawn_sqlite_app().await;
    let items: Vec<_> = (0..300)
        .map(|i| pb::MigrationItem {
            item: Some(Item::TenantId(format!("s{i:03}"))),
        })
        .collect();
    let submitted = app
        .migrations()
        .submit_migration(tokio_stream::iter(vec![pb::SubmitMigrationRequest {
            items,
            idempotency_key: None,
        }]))
        .await
        .unwrap()
        .into_inner();
    let app = TestApp::restart(app.stop().await).await;
    let done = crate::migrations::wait_done(&app, &submitted.migration_id).await;
    let m = done.migration.unwrap();
    assert_eq!((m.created_items, m.failed_items), (300, 0));

    let mut feed = app
        .feed()
        .watch_changes(pb::WatchChangesRequest {
            from_sequence: 250,
            change_types: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < 51 {
        let message = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        events.extend(message.events);
    }
    let sequences: Vec<_> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (251..=301).collect::<Vec<_>>());
    // The job's end follows its accounts, once, with no account of its own (the column the
    // SQLite migration rebuilt the table for).
    let end = &events[50];
    assert_eq!(end.change_type(), pb::ChangeType::MigrationFinished);
    assert!(end.tenant_id.is_empty() && end.account.is_none());
    let Some(pb::change_event::Detail::Migration(m)) = &end.detail else {
        panic!("a migration event without its migration: {end:?}");
    };
    assert_eq!(m.migration_id, submitted.migration_id);
    assert_eq!((m.created_items, m.failed_items), (300, 0));
    app.create("after", "after").await;
    let message = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message.events[0].sequence, 302);
}

/// SQLite has one writer at a time and its busy handler is no queue: an import whose worker
/// began its next batch the moment the last committed kept winning the lock, and writes
/// arriving meanwhile waited out the busy timeout (UNAVAILABLE). Writers now take turns: a
/// write sees the import advance by the batch it waited for, one that may have queued first,
/// and (at most) one begun while the test reads the status, never more.
#[tokio::test]
async fn writes_take_turns_with_a_running_import_on_sqlite() {
    use tenantry_proto::tenant::v1::{
        migration_service_client::MigrationServiceClient,
        tenant_service_client::TenantServiceClient,
    };
    use tenantry_tenant::domain::MIGRATION_BATCH;
    use tonic::transport::Channel;
    const ITEMS: u64 = 30 * MIGRATION_BATCH;
    const WRITERS: usize = 8;
    let app = spawn_sqlite_app().await;
    let items = (0..ITEMS)
        .map(|i| pb::MigrationItem {
            item: Some(Item::TenantId(format!("import-{i:05}"))),
        })
        .collect();
    let submitted = crate::migrations::submit(&app, vec![items]).await;
    let processed = |channel: Channel, id: String| async move {
        let status = MigrationServiceClient::new(channel)
            .get_migration_status(pb::GetMigrationStatusRequest {
                migration_id: id,
                errors_page: None,
            })
            .await
            .unwrap()
            .into_inner()
            .migration
            .unwrap();
        (status.processed_items, status.state())
    };
    let writers = (0..WRITERS).map(|w| {
        let (channel, id) = (app.channel.clone(), submitted.migration_id.clone());
        tokio::spawn(async move {
            let mut advances = Vec::new();
            for i in 0.. {
                let (before, state) = processed(channel.clone(), id.clone()).await;
                if state == pb::MigrationState::Completed {
                    break;
                }
                let created = TenantServiceClient::new(channel.clone())
                    .create_account(pb::CreateAccountRequest {
                        account: Some(pb::NewAccount {
                            tenant_id: Some(format!("writer-{w}-{i}")),
                            name: "Writer".into(),
                            ..pb::NewAccount::default()
                        }),
                        idempotency_key: None,
                    })
                    .await;
                if let Err(status) = created {
                    panic!("a write during the import failed: {status:?}");
                }
                let (after, _) = processed(channel.clone(), id.clone()).await;
                advances.push(after - before);
            }
            advances
        })
    });
    let mut advances = Vec::new();
    for writer in writers {
        advances.extend(writer.await.unwrap());
    }
    assert!(!advances.is_empty(), "no write ran during the import");
    let worst = advances.iter().copied().max().unwrap_or_default();
    assert!(
        worst <= 3 * MIGRATION_BATCH,
        "a write waited while the import applied {worst} items ({} writes)",
        advances.len()
    );
    let done = crate::migrations::wait_done(&app, &submitted.migration_id).await;
    let m = done.migration.unwrap();
    assert_eq!((m.created_items, m.failed_items), (ITEMS, 0));
}
