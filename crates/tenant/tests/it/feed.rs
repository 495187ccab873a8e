//! The change feed: every write recorded once, in order; replay from a cursor, then live; a
//! restart loses and repeats nothing.

use std::time::Duration;

use futures::{StreamExt, stream};
use tenantry_proto::tenant::v1::{self as pb, change_event::Detail};
use tonic::Streaming;

use crate::helpers::{TestApp, spawn_app};

/// Reads events until `count` have arrived (or fails after a timeout).
async fn take(
    stream: &mut Streaming<pb::WatchChangesResponse>,
    count: usize,
) -> Vec<pb::ChangeEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", events.len()))
            .expect("stream open")
            .expect("stream item");
        events.extend(message.events);
    }
    events
}

async fn watch(app: &TestApp, from: u64) -> Streaming<pb::WatchChangesResponse> {
    app.feed()
        .watch_changes(pb::WatchChangesRequest {
            from_sequence: from,
            change_types: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn every_kind_of_write_is_recorded_in_order() {
    let app = spawn_app().await;
    app.create("p", "P").await;
    app.create("c", "C").await;
    app.attach("p", "c").await.unwrap();
    app.memberships()
        .add_membership(pb::AddMembershipRequest {
            tenant_id: "p".into(),
            user_id: "u".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    app.tenants()
        .delete_account_metadata(pb::DeleteAccountMetadataRequest {
            tenant_id: "p".into(),
            key: "absent".into(),
        })
        .await
        .unwrap(); // no change, no event
    app.delete("p").await;
    app.create("p", "P again").await;

    let mut feed = watch(&app, 0).await;
    let events = take(&mut feed, 8).await;
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.sequence, e.change_type(), e.tenant_id.as_str()))
        .collect();
    use pb::ChangeType as T;
    assert_eq!(
        seen,
        [
            (1, T::Created, "p"),
            (2, T::Created, "c"),
            (3, T::Hierarchy, "c"),
            (4, T::Membership, "p"),
            (5, T::Deleted, "p"),
            (6, T::Hierarchy, "c"),
            (7, T::Membership, "p"),
            (8, T::Reactivated, "p"),
        ]
    );
    assert_eq!(
        events[5].detail,
        Some(Detail::Hierarchy(pb::HierarchyChange {
            old_parent_tenant_id: Some("p".into()),
            new_parent_tenant_id: None,
        }))
    );
    assert_eq!(
        events[6].detail,
        Some(Detail::Membership(pb::MembershipChange {
            user_id: "u".into(),
            added: false,
        }))
    );
    assert_eq!(events[7].account.as_ref().unwrap().name, "P again");

    // Only some types, from a cursor.
    let mut filtered = app
        .feed()
        .watch_changes(pb::WatchChangesRequest {
            from_sequence: 3,
            change_types: vec![T::Hierarchy.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let only = take(&mut filtered, 1).await;
    assert_eq!(only[0].sequence, 6);
}

#[tokio::test]
async fn concurrent_writers_produce_a_gapless_feed_that_followers_see_live() {
    let app = spawn_app().await;
    let mut feed = watch(&app, 0).await;
    const N: usize = 200;
    stream::iter(0..N)
        .for_each_concurrent(16, |i| {
            let app = &app;
            async move {
                app.create(&format!("w{i}"), "w").await;
            }
        })
        .await;
    let events = take(&mut feed, N).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=N as u64).collect::<Vec<_>>(),
        "in order, none lost or repeated"
    );
}

#[tokio::test]
async fn a_follower_resumes_from_its_cursor_after_a_restart() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create(&format!("a{i}"), "a").await;
    }
    let mut feed = watch(&app, 0).await;
    let first = take(&mut feed, 3).await;
    let cursor = first[2].sequence; // applied three, then the follower goes away
    drop(feed);

    let app = TestApp::restart(app.stop().await).await;
    for i in 0..4 {
        app.create(&format!("b{i}"), "b").await;
    }
    let mut feed = watch(&app, cursor).await;
    let rest = take(&mut feed, 6).await;
    let ids: Vec<_> = rest
        .iter()
        .map(|e| (e.sequence, e.tenant_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            (4, "a3"),
            (5, "a4"),
            (6, "b0"),
            (7, "b1"),
            (8, "b2"),
            (9, "b3")
        ]
    );
    // Live after the replay.
    app.create("live", "live").await;
    let live = take(&mut feed, 1).await;
    assert_eq!((live[0].sequence, live[0].tenant_id.as_str()), (10, "live"));
    // Nothing else is pending: the next message is a heartbeat or nothing within a second.
    let extra = tokio::time::timeout(Duration::from_secs(1), feed.next()).await;
    if let Ok(Some(Ok(message))) = extra {
        assert!(
            message.events.is_empty(),
            "unexpected events: {:?}",
            message.events
        );
    }
}

/// The largest logo the limits allow: 12 of them, each twice in an event as it was, are over
/// gRPC's 4 MiB message limit.
const MAX_LOGO: usize = tenantry_common::limits::MAX_LOGO_BYTES;

/// A base64-looking logo of `bytes` bytes, distinct per `seed`.
fn logo(bytes: usize, seed: usize) -> String {
    let mut logo = format!("{seed:08}");
    logo.push_str(&"A".repeat(bytes - logo.len()));
    logo
}

#[tokio::test]
async fn twelve_concurrent_large_logo_updates_never_make_a_message_too_large() {
    // Each update used to record the whole account, the logo twice in the encoded event, and
    // a replay packed 500 events in one message: 12 × 2 logos over the client's 4 MiB limit, a
    // stream that failed at the same cursor forever.
    let app = spawn_app().await;
    app.create("big", "Big").await;
    stream::iter(0..12)
        .for_each_concurrent(12, |i| {
            let app = &app;
            async move {
                app.tenants()
                    .update_account_settings(pb::UpdateAccountSettingsRequest {
                        tenant_id: "big".into(),
                        settings: Some(pb::AccountSettings {
                            logo: Some(logo(MAX_LOGO, i)),
                            ..pb::AccountSettings::default()
                        }),
                    })
                    .await
                    .expect("logo update");
            }
        })
        .await;
    app.create("after", "After").await;
    // The outbox no longer stores the logo with every update.
    let stored = {
        use sea_orm::ConnectionTrait;
        let db =
            tenantry_common::db::connect(&tenantry_common::db::DbSettings::tenant(&app.config))
                .await
                .unwrap();
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT MAX(octet_length(payload))::BIGINT AS n FROM change_events \
                 WHERE change_type = 'updated'",
            ))
            .await
            .unwrap()
            .expect("a row");
        row.try_get::<i64>("", "n").unwrap()
    };
    assert!(stored < 2_048, "an update event stores {stored} bytes");

    // A client with gRPC's default 4 MiB decoding limit replays all of it.
    let mut feed = watch(&app, 0).await;
    let events = take(&mut feed, 14).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=14).collect::<Vec<_>>());
    assert_eq!(events[13].tenant_id, "after");
    for event in &events[1..13] {
        assert_eq!(event.change_type(), pb::ChangeType::Updated);
        let account = event.account.as_ref().expect("account");
        assert_eq!(account.tenant_id, "big");
        // What changed is said, the logo itself is not carried.
        assert_eq!(account.logo, None);
        assert_eq!(account.settings.as_ref().and_then(|s| s.logo.clone()), None);
        use prost::Message;
        assert!(event.encoded_len() < 2_048, "{} bytes", event.encoded_len());
    }
    // The account itself still has its logo.
    let stored = app.get("big").await.unwrap();
    assert_eq!(stored.logo.map(|l| l.len()), Some(MAX_LOGO));
}

#[tokio::test]
async fn events_name_the_fields_that_changed_and_respect_a_small_client_bound() {
    let app = spawn_app().await;
    for i in 0..40 {
        app.create(&format!("a{i:02}"), &"n".repeat(255)).await;
    }
    app.tenants()
        .update_account_settings(pb::UpdateAccountSettingsRequest {
            tenant_id: "a00".into(),
            settings: Some(pb::AccountSettings {
                logo: Some(logo(MAX_LOGO, 0)),
                locale: Some("fr-FR".into()),
                ..pb::AccountSettings::default()
            }),
        })
        .await
        .unwrap();
    let mut feed = app
        .feed()
        .max_decoding_message_size(64 << 10)
        .watch_changes(pb::WatchChangesRequest {
            from_sequence: 0,
            max_message_bytes: Some(64 << 10),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < 41 {
        let message = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("events arrive")
            .expect("stream open")
            .expect("a message within the 64 KiB bound");
        events.extend(message.events);
    }
    let update = &events[40];
    assert_eq!(update.change_type(), pb::ChangeType::Updated);
    assert_eq!(update.changed_fields, ["settings.logo", "settings.locale"]);
}

#[tokio::test]
async fn an_outbox_event_from_before_the_upgrade_with_deep_metadata_and_a_logo_is_delivered() {
    // Events recorded before events left out the large fields hold the whole account: metadata
    // nested past protobuf's recursion limit and a logo twice over the message limit once
    // encoded must not stop the feed (a follower would retry that cursor forever).
    use sea_orm::{ConnectionTrait, Statement};
    let app = spawn_app().await;
    app.create("old", "Old").await;
    let db = tenantry_common::db::connect(&tenantry_common::db::DbSettings::tenant(&app.config))
        .await
        .unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT payload FROM change_events WHERE sequence = 1",
        ))
        .await
        .unwrap()
        .expect("the creation event");
    let mut payload: serde_json::Value =
        serde_json::from_str(&row.try_get::<String>("", "payload").unwrap()).unwrap();
    let mut deep = serde_json::json!("bottom");
    for _ in 0..40 {
        deep = serde_json::json!({ "level": deep });
    }
    payload["account"]["metadata"] = serde_json::json!({ "deep": deep });
    payload["account"]["settings"]["logo"] = serde_json::json!(logo(3_000_000, 1));
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO change_events (sequence, change_type, tenant_id, occurred_at, payload) \
         VALUES (2, 'metadata', 'old', CURRENT_TIMESTAMP, $1)",
        [payload.to_string().into()],
    ))
    .await
    .unwrap();
    db.execute_unprepared("UPDATE change_feed_head SET last_sequence = 2 WHERE id = 1")
        .await
        .unwrap();
    app.create("new", "New").await;

    let mut feed = watch(&app, 0).await;
    let events = take(&mut feed, 3).await;
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.sequence, e.change_type(), e.tenant_id.as_str()))
        .collect();
    use pb::ChangeType as T;
    assert_eq!(
        seen,
        [
            (1, T::Created, "old"),
            (2, T::Metadata, "old"),
            (3, T::Created, "new")
        ]
    );
    let account = events[1].account.as_ref().expect("account");
    assert_eq!(account.name, "Old");
    assert_eq!(account.logo, None);
}

/// A feed with retention after a few writes: pruning happens, an expired cursor is refused
/// with CURSOR_EXPIRED, and the snapshot plus the feed from its sequence carry on.
async fn retention_prunes_and_refuses_expired_cursors(app: TestApp) {
    for id in ["a", "b", "c"] {
        app.create(id, id).await;
    }
    app.attach("a", "c").await.unwrap();
    app.delete("b").await; // events 1-5
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let mut feed = watch(&app, 0).await;
        if let Ok(Some(Err(status))) =
            tokio::time::timeout(Duration::from_secs(5), feed.next()).await
        {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursor 0 still served after the events outlived their retention"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(crate::helpers::reason(&refused), "CURSOR_EXPIRED");

    let mut snapshot = app
        .feed()
        .read_snapshot(pb::ReadSnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut accounts = Vec::new();
    let mut sequence = None;
    let mut pruned_through = 0;
    while let Some(message) = snapshot.next().await {
        let message = message.unwrap();
        sequence = Some(message.sequence);
        pruned_through = message.pruned_through;
        accounts.extend(message.accounts);
    }
    assert_eq!(sequence, Some(5));
    // It says how far the feed was pruned: cursor 0 was refused, so at least event 1.
    assert!((1..=5).contains(&pruned_through), "{pruned_through}");
    let states: Vec<_> = accounts
        .iter()
        .map(|a| (a.tenant_id.as_str(), a.parent_tenant_id.as_deref()))
        .collect();
    assert_eq!(states, [("a", None), ("c", Some("a"))]);

    let mut feed = watch(&app, 5).await;
    app.create("d", "d").await;
    let next = take(&mut feed, 1).await;
    assert_eq!((next[0].sequence, next[0].tenant_id.as_str()), (6, "d"));
}

#[tokio::test]
async fn retention_prunes_the_outbox_and_an_expired_cursor_resynchronises_from_a_snapshot() {
    let app = crate::helpers::spawn_app_with(|c| c.feed_retention_secs = 1).await;
    retention_prunes_and_refuses_expired_cursors(app).await;
}

#[tokio::test]
async fn retention_works_on_sqlite_too() {
    let app = crate::helpers::spawn_sqlite_app_with(|c| c.feed_retention_secs = 1).await;
    retention_prunes_and_refuses_expired_cursors(app).await;
}
