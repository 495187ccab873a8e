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
