//! Write races the service's own checks cannot see, settled by the database's unique keys: the
//! loser gets the conflict the key protects, with its reason, and never the key's name.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use tenantry_common::db::{self, DbSettings};
use tenantry_proto::tenant::v1 as pb;
use tonic::{Code, Status};

use crate::helpers::{TestApp, assert_code, reason, spawn_app};

/// Backends of this database waiting for another transaction to end (as an insert waits on
/// an uncommitted row with its key).
async fn waiting(conn: &DatabaseConnection) -> i64 {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT COUNT(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event = 'transactionid'",
    ))
    .await
    .unwrap()
    .expect("a row")
    .try_get::<i64>("", "n")
    .unwrap()
}

/// Creates `account` while another writer holds `rival` uncommitted: the create passes its own
/// checks (the rival's row is invisible to them), waits on the rival's row in the unique key,
/// and meets the key when the rival commits.
async fn create_against(app: &TestApp, rival: &str, account: pb::NewAccount) -> Status {
    let conn = db::connect(&DbSettings::tenant(&app.config)).await.unwrap();
    let txn = conn.begin().await.unwrap();
    txn.execute_raw(Statement::from_string(DbBackend::Postgres, rival))
        .await
        .unwrap();
    let create = tokio::spawn({
        let mut tenants = app.tenants();
        async move {
            tenants
                .create_account(pb::CreateAccountRequest {
                    account: Some(account),
                    idempotency_key: None,
                })
                .await
        }
    });
    let mut waited = Duration::ZERO;
    while waiting(&conn).await == 0 {
        assert!(
            waited < Duration::from_secs(20) && !create.is_finished(),
            "the create never waited on the rival's row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    txn.commit().await.unwrap();
    let result = create.await.unwrap();
    assert_code(result, Code::AlreadyExists)
}

/// Nothing of the schema in what a client reads.
fn assert_names_no_key(status: &Status) {
    let message = status.message();
    for name in [
        "accounts_pkey",
        "accounts_live_alias",
        "constraint",
        "duplicate key",
    ] {
        assert!(!message.contains(name), "{message}");
    }
}

#[tokio::test]
async fn an_id_taken_by_a_concurrent_writer_is_account_exists_without_the_key_name() {
    let app = spawn_app().await;
    let status = create_against(
        &app,
        "INSERT INTO accounts (tenant_id, name, created_at, updated_at) \
         VALUES ('raced', 'Rival', now(), now())",
        pb::NewAccount {
            tenant_id: Some("raced".into()),
            name: "Loser".into(),
            ..pb::NewAccount::default()
        },
    )
    .await;
    assert_eq!(reason(&status), "ACCOUNT_EXISTS", "{status:?}");
    assert_names_no_key(&status);
    assert_eq!(app.get("raced").await.unwrap().name, "Rival");
}

#[tokio::test]
async fn an_alias_taken_by_a_concurrent_writer_is_alias_taken_without_the_key_name() {
    let app = spawn_app().await;
    let status = create_against(
        &app,
        "INSERT INTO accounts (tenant_id, name, alias, created_at, updated_at) \
         VALUES ('rival', 'Rival', 'contested', now(), now())",
        pb::NewAccount {
            tenant_id: Some("loser".into()),
            name: "Loser".into(),
            alias: Some("contested".into()),
            ..pb::NewAccount::default()
        },
    )
    .await;
    assert_eq!(reason(&status), "ALIAS_TAKEN", "{status:?}");
    assert_names_no_key(&status);
    assert_code(app.get("loser").await, Code::NotFound);
}
