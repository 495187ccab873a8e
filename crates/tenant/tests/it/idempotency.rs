//! Idempotency keys on every create: a retry with the key gets the first answer (after a
//! restart too), a different request with it is refused, concurrent twins create once, keys
//! are scoped to the principal, and expired keys are pruned.

use std::time::Duration;

use futures::future::join_all;
use tenantry_common::grpc::PRINCIPAL_METADATA_KEY;
use tenantry_proto::tenant::v1::{self as pb, migration_item::Item};
use tonic::{Code, Request};

use crate::helpers::{TestApp, assert_code, reason, spawn_app, spawn_sqlite_app};

fn new_account(id: &str, name: &str, key: Option<&str>) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        account: Some(pb::NewAccount {
            tenant_id: Some(id.into()),
            name: name.into(),
            ..pb::NewAccount::default()
        }),
        idempotency_key: key.map(str::to_owned),
    }
}

fn as_principal<T>(message: T, principal: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(PRINCIPAL_METADATA_KEY, principal.parse().unwrap());
    request
}

async fn live_ids(app: &TestApp) -> Vec<String> {
    app.tenants()
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accounts
        .into_iter()
        .map(|a| a.tenant_id)
        .collect()
}

async fn a_retried_create_answers_as_the_first(app: TestApp) {
    let mut t = app.tenants();
    let first = t
        .create_account(new_account("acme", "Acme", Some("k-1")))
        .await
        .unwrap()
        .into_inner();
    let again = t
        .create_account(new_account("acme", "Acme", Some("k-1")))
        .await
        .expect("a retry with the key is the first answer, not ALREADY_EXISTS")
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(live_ids(&app).await, vec!["acme".to_owned()]);

    // The same key with another request.
    let s = assert_code(
        t.create_account(new_account("acme", "Acme Corp", Some("k-1")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&s), "IDEMPOTENCY_KEY_REUSED");
    // Or for another operation.
    let s = assert_code(
        app.memberships()
            .add_membership(pb::AddMembershipRequest {
                tenant_id: "acme".into(),
                user_id: "u1".into(),
                idempotency_key: Some("k-1".into()),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&s), "IDEMPOTENCY_KEY_REUSED");
    // Without a key, a second create is what it always was.
    assert_code(
        t.create_account(new_account("acme", "Acme", None)).await,
        Code::AlreadyExists,
    );
    // A failed create stores no key: the key stays free for a request that succeeds.
    assert_code(
        t.create_account(new_account("acme", "Acme", Some("k-2")))
            .await,
        Code::AlreadyExists,
    );
    t.create_account(new_account("beta", "Beta", Some("k-2")))
        .await
        .expect("a key whose first request failed is unused");

    // After a restart the key still answers.
    let app = TestApp::restart(app.stop().await).await;
    let after = app
        .tenants()
        .create_account(new_account("acme", "Acme", Some("k-1")))
        .await
        .expect("the key survives a restart")
        .into_inner();
    assert_eq!(after, first);
    assert_eq!(live_ids(&app).await, vec!["acme".to_owned(), "beta".into()]);
}

#[tokio::test]
async fn a_retried_create_answers_as_the_first_on_postgres() {
    a_retried_create_answers_as_the_first(spawn_app().await).await;
}

#[tokio::test]
async fn a_retried_create_answers_as_the_first_on_sqlite() {
    a_retried_create_answers_as_the_first(spawn_sqlite_app().await).await;
}

async fn concurrent_twins_create_once(app: TestApp) {
    let answers = join_all((0..8).map(|_| {
        let mut t = app.tenants();
        async move {
            t.create_account(new_account("twin", "Twin", Some("same")))
                .await
                .map(|r| r.into_inner())
        }
    }))
    .await;
    let mut bodies = Vec::new();
    for answer in answers {
        match answer {
            Ok(body) => bodies.push(body),
            // The only other answer allowed is "retry".
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    }
    assert!(!bodies.is_empty());
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "every twin gets the first answer"
    );
    assert_eq!(live_ids(&app).await, vec!["twin".to_owned()]);
}

#[tokio::test]
async fn concurrent_twins_with_one_key_create_once_on_postgres() {
    concurrent_twins_create_once(spawn_app().await).await;
}

#[tokio::test]
async fn concurrent_twins_with_one_key_create_once_on_sqlite() {
    concurrent_twins_create_once(spawn_sqlite_app().await).await;
}

#[tokio::test]
async fn keys_are_scoped_to_the_principal() {
    let app = spawn_app().await;
    let mut t = app.tenants();
    let mine = t
        .create_account(as_principal(
            new_account("a1", "A1", Some("shared")),
            "environment:one",
        ))
        .await
        .unwrap()
        .into_inner();
    // Another caller's identical key neither replays nor is refused: it is its own.
    let theirs = t
        .create_account(as_principal(
            new_account("a2", "A2", Some("shared")),
            "environment:two",
        ))
        .await
        .expect("another principal's key is independent")
        .into_inner();
    assert_ne!(mine, theirs);
    // Another caller sending the first caller's very request does not read its answer.
    assert_code(
        t.create_account(as_principal(
            new_account("a1", "A1", Some("shared")),
            "user:someone",
        ))
        .await,
        Code::AlreadyExists,
    );
}

#[tokio::test]
async fn malformed_keys_are_invalid_argument() {
    let app = spawn_app().await;
    let mut t = app.tenants();
    for key in ["", "tab\tkey", "é", &"k".repeat(256)] {
        let s = assert_code(
            t.create_account(new_account("x", "X", Some(key))).await,
            Code::InvalidArgument,
        );
        assert!(s.message().starts_with("idempotency_key"), "{s:?}");
    }
    t.create_account(new_account("x", "X", Some(&"k".repeat(255))))
        .await
        .expect("255 visible characters is a key");
}

#[tokio::test]
async fn every_create_replays_its_first_answer() {
    let app = spawn_app().await;
    app.create("parent", "Parent").await;
    app.create("loner", "Loner").await;

    let sub = |name: &str| pb::CreateSubAccountRequest {
        tenant_id: "child".into(),
        name: name.into(),
        parent_tenant_id: "parent".into(),
        idempotency_key: Some("sub".into()),
        ..pb::CreateSubAccountRequest::default()
    };
    let mut h = app.hierarchy();
    let first = h
        .create_sub_account(sub("Child"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.create_sub_account(sub("Child"))
            .await
            .unwrap()
            .into_inner(),
        first
    );
    let s = assert_code(
        h.create_sub_account(sub("Other")).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&s), "IDEMPOTENCY_KEY_REUSED");

    let attach = pb::AttachSubAccountRequest {
        parent_tenant_id: "parent".into(),
        child_tenant_id: "loner".into(),
        idempotency_key: Some("attach".into()),
    };
    let first = h
        .attach_sub_account(attach.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.attach_sub_account(attach).await.unwrap().into_inner(),
        first
    );

    let add = pb::AddMembershipRequest {
        tenant_id: "parent".into(),
        user_id: "u1".into(),
        idempotency_key: Some("member".into()),
    };
    let mut m = app.memberships();
    let first = m.add_membership(add.clone()).await.unwrap().into_inner();
    assert_eq!(m.add_membership(add).await.unwrap().into_inner(), first);

    let chunks = |ids: &[&str]| {
        let items: Vec<pb::MigrationItem> = ids
            .iter()
            .map(|id| pb::MigrationItem {
                item: Some(Item::TenantId((*id).into())),
            })
            .collect();
        let mut chunks: Vec<pb::SubmitMigrationRequest> = items
            .chunks(2)
            .map(|c| pb::SubmitMigrationRequest {
                items: c.to_vec(),
                idempotency_key: None,
            })
            .collect();
        chunks[0].idempotency_key = Some("import".into());
        tokio_stream::iter(chunks)
    };
    let mut g = app.migrations();
    let first = g
        .submit_migration(chunks(&["m1", "m2", "m3"]))
        .await
        .unwrap()
        .into_inner();
    let again = g
        .submit_migration(chunks(&["m1", "m2", "m3"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "one import job, whatever the retries");
    let s = assert_code(
        g.submit_migration(chunks(&["m1", "m2"])).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&s), "IDEMPOTENCY_KEY_REUSED");
    // A key on a later chunk is refused.
    let late = tokio_stream::iter(vec![
        pb::SubmitMigrationRequest {
            items: vec![pb::MigrationItem {
                item: Some(Item::TenantId("m9".into())),
            }],
            idempotency_key: None,
        },
        pb::SubmitMigrationRequest {
            items: vec![],
            idempotency_key: Some("late".into()),
        },
    ]);
    assert_code(g.submit_migration(late).await, Code::InvalidArgument);
}

#[tokio::test]
async fn keys_past_the_retention_are_pruned() {
    let app = crate::helpers::spawn_app_with(|c| c.idempotency_retention_secs = 1).await;
    let mut t = app.tenants();
    t.create_account(new_account("old", "Old", Some("k")))
        .await
        .unwrap();
    // Until the pruner has run, the key refuses another request; then it is a new key.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match t.create_account(new_account("new", "New", Some("k"))).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(reason(&status), "IDEMPOTENCY_KEY_REUSED", "{status:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "an idempotency key past its retention was never pruned"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
