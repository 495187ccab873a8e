//! Bulk import: 202-style submit, background batches, idempotency, per-item errors, resume.

use std::time::Duration;

use tenantry_proto::{
    common::v1::PageRequest,
    tenant::v1::{self as pb, migration_item::Item},
};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::{TestApp, assert_code, spawn_app, violated_fields};

fn bare(id: &str) -> pb::MigrationItem {
    pb::MigrationItem {
        item: Some(Item::TenantId(id.to_owned())),
    }
}

fn full(id: &str, name: &str, parent: Option<&str>) -> pb::MigrationItem {
    pb::MigrationItem {
        item: Some(Item::Account(pb::NewAccount {
            tenant_id: Some(id.to_owned()),
            name: name.to_owned(),
            parent_tenant_id: parent.map(str::to_owned),
            settings: Some(pb::AccountSettings {
                locale: Some("en-GB".into()),
                ..pb::AccountSettings::default()
            }),
            ..pb::NewAccount::default()
        })),
    }
}

pub async fn submit(
    app: &TestApp,
    chunks: Vec<Vec<pb::MigrationItem>>,
) -> pb::SubmitMigrationResponse {
    let requests: Vec<_> = chunks
        .into_iter()
        .map(|items| pb::SubmitMigrationRequest {
            items,
            idempotency_key: None,
        })
        .collect();
    app.migrations()
        .submit_migration(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
}

pub async fn wait_done(app: &TestApp, id: &str) -> pb::GetMigrationStatusResponse {
    for _ in 0..600 {
        let status = app
            .migrations()
            .get_migration_status(pb::GetMigrationStatusRequest {
                migration_id: id.to_owned(),
                errors_page: Some(PageRequest {
                    limit: Some(1_000),
                    offset: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let state = status.migration.as_ref().unwrap().state();
        if matches!(
            state,
            pb::MigrationState::Completed | pb::MigrationState::Failed
        ) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("migration {id} did not finish in time");
}

#[tokio::test]
async fn mixed_good_and_bad_items_run_to_completion() {
    let app = spawn_app().await;
    app.create("same", "same").await; // identical to a bare item: skipped
    app.create("differs", "Original").await; // a full item with another name: reported
    let submitted = submit(
        &app,
        vec![
            vec![
                // Child before its parent: applied once the parent exists.
                full("child", "Child", Some("parent")),
                bare("bare-1"),
                bare("bad id"),
                bare("same"),
            ],
            vec![
                full("parent", "Parent", None),
                full("differs", "Changed", None),
                full("orphan", "Orphan", Some("nowhere")),
                full("loop-a", "A", Some("loop-b")),
                full("loop-b", "B", Some("loop-a")),
                bare("bare-1"),
            ],
        ],
    )
    .await;
    assert_eq!(submitted.total_items, 10);
    let done = wait_done(&app, &submitted.migration_id).await;
    let m = done.migration.unwrap();
    assert_eq!(m.state(), pb::MigrationState::Completed);
    assert_eq!(m.total_items, 10);
    assert_eq!(m.processed_items, 10);
    assert_eq!(m.created_items, 3, "child, bare-1, parent");
    assert_eq!(m.skipped_items, 2, "same, second bare-1");
    assert_eq!(m.failed_items, 5);
    assert!(m.started_at.is_some() && m.finished_at.is_some());
    let errors: Vec<_> = done
        .errors
        .iter()
        .map(|e| (e.index, e.id.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (2, "bad id", "INVALID_ITEM"),
            (5, "differs", "ACCOUNT_DIFFERS"),
            (6, "orphan", "PARENT_NOT_FOUND"),
            (7, "loop-a", "PARENT_NOT_FOUND"),
            (8, "loop-b", "PARENT_NOT_FOUND"),
        ]
    );
    assert_eq!(done.errors_page.unwrap().total_items, 5);
    let child = app.get("child").await.unwrap();
    assert_eq!(child.parent_tenant_id.as_deref(), Some("parent"));
    assert_eq!(child.settings.unwrap().locale.as_deref(), Some("en-GB"));
    assert_eq!(app.get("bare-1").await.unwrap().name, "bare-1");
    assert_eq!(app.get("differs").await.unwrap().name, "Original");

    // Submitting the same items again changes nothing: everything existing is skipped.
    let again = submit(
        &app,
        vec![vec![full("parent", "Parent", None), bare("bare-1")]],
    )
    .await;
    let m = wait_done(&app, &again.migration_id)
        .await
        .migration
        .unwrap();
    assert_eq!(
        (m.created_items, m.skipped_items, m.failed_items),
        (0, 2, 0)
    );

    // Each job's end is on the feed once, after the accounts it created, as it ended.
    let feed = whole_feed(&app).await;
    let ends: Vec<_> = feed
        .iter()
        .filter(|e| e.change_type() == pb::ChangeType::MigrationFinished)
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    let Some(pb::change_event::Detail::Migration(first)) = &ends[0].detail else {
        panic!("a migration event without its migration: {:?}", ends[0]);
    };
    assert_eq!(first.migration_id, submitted.migration_id);
    assert_eq!(first.state(), pb::MigrationState::Completed);
    assert_eq!(
        (
            first.total_items,
            first.created_items,
            first.skipped_items,
            first.failed_items
        ),
        (10, 3, 2, 5)
    );
    assert!(first.started_at.is_some() && first.finished_at.is_some());
    assert!(ends[0].tenant_id.is_empty() && ends[0].account.is_none());
    let parent_created = feed
        .iter()
        .find(|e| e.change_type() == pb::ChangeType::Created && e.tenant_id == "parent")
        .expect("the parent's creation");
    assert!(parent_created.sequence < ends[0].sequence);
    let Some(pb::change_event::Detail::Migration(second)) = &ends[1].detail else {
        panic!("a migration event without its migration: {:?}", ends[1]);
    };
    assert_eq!(second.migration_id, again.migration_id);

    // A follower asking for account changes only never sees them.
    let accounts_only = app
        .feed()
        .watch_changes(pb::WatchChangesRequest {
            change_types: vec![pb::ChangeType::Created.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert!(
        accounts_only
            .events
            .iter()
            .all(|e| e.change_type() == pb::ChangeType::Created)
    );
}

/// Every event of the feed up to its head.
pub async fn whole_feed(app: &TestApp) -> Vec<pb::ChangeEvent> {
    let mut stream = app
        .feed()
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut events: Vec<pb::ChangeEvent> = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a feed message in time")
            .expect("the feed goes on")
            .unwrap();
        events.extend(message.events);
        if events.last().map_or(0, |e| e.sequence) >= message.head_sequence {
            return events;
        }
    }
}

#[tokio::test]
async fn submission_needs_items_and_unknown_jobs_are_not_found() {
    let app = spawn_app().await;
    let empty = app
        .migrations()
        .submit_migration(tokio_stream::iter(vec![pb::SubmitMigrationRequest {
            items: vec![],
            idempotency_key: None,
        }]))
        .await;
    assert_code(empty, Code::InvalidArgument);
    let no_kind = app
        .migrations()
        .submit_migration(tokio_stream::iter(vec![pb::SubmitMigrationRequest {
            items: vec![pb::MigrationItem { item: None }],
            idempotency_key: None,
        }]))
        .await;
    assert_code(no_kind, Code::InvalidArgument);
    assert_code(
        app.migrations()
            .get_migration_status(pb::GetMigrationStatusRequest {
                migration_id: uuid::Uuid::now_v7().to_string(),
                errors_page: None,
            })
            .await,
        Code::NotFound,
    );
}

/// A bare ID longer than any ID, or an item larger than any account, refuses the whole
/// submission (it was stored and reported item by item: half a megabyte per ID); short bad IDs
/// stay the item's own error (`mixed_good_and_bad_items_run_to_completion`).
#[tokio::test]
async fn oversized_items_refuse_the_whole_submission() {
    let app = spawn_app().await;
    let long_id = app
        .migrations()
        .submit_migration(tokio_stream::iter(vec![pb::SubmitMigrationRequest {
            items: vec![bare("fine"), bare(&"x".repeat(256))],
            idempotency_key: None,
        }]))
        .await;
    let status = assert_code(long_id, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["items[1]"], "{status:?}");
    let mut huge = full("huge", "Huge", None);
    if let Some(Item::Account(account)) = &mut huge.item {
        account.logo = Some("x".repeat(1024 * 1024));
    }
    let huge = app
        .migrations()
        .submit_migration(tokio_stream::iter(vec![pb::SubmitMigrationRequest {
            items: vec![huge],
            idempotency_key: None,
        }]))
        .await;
    let status = assert_code(huge, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["items[0]"], "{status:?}");
    let listed = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.accounts.is_empty(), "nothing imported: {listed:?}");
}

#[tokio::test]
async fn a_job_interrupted_by_a_restart_resumes_and_applies_each_item_once() {
    let app = spawn_app().await;
    const N: usize = 6_000;
    let chunks: Vec<Vec<_>> = (0..N)
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(|c| c.iter().map(|i| bare(&format!("m{i:05}"))).collect())
        .collect();
    let submitted = submit(&app, chunks).await;
    assert_eq!(submitted.total_items, N as u64);
    // Stop while the background batches are under way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = TestApp::restart(app.stop().await).await;
    let m = wait_done(&app, &submitted.migration_id)
        .await
        .migration
        .unwrap();
    assert_eq!(m.state(), pb::MigrationState::Completed);
    assert_eq!(m.processed_items, N as u64);
    assert_eq!(m.created_items, N as u64, "no item applied twice or lost");
    assert_eq!(m.failed_items + m.skipped_items, 0);
    let listed = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest {
            filter: Some("m0".into()),
            ..pb::ListAccountsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.page.unwrap().total_items, N as u64);
}
