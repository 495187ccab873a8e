//! The unfiltered list total is the live-account counter the triggers maintain (no count of
//! the table). It must equal the real number of live accounts after every kind of write —
//! concurrent creates and deletes, reactivations, a migration job, writers other than the
//! service — and start from the rows present when its migration runs.

use futures::{StreamExt, stream};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;
use tenantry_common::{
    Config,
    db::{self, DbSettings},
    testing,
};
use tenantry_proto::{
    common::v1::PageRequest,
    tenant::v1::{self as pb, migration_item::Item},
};
use tenantry_tenant::{
    migration::Migrator,
    storage::{LIVE_COUNT_POSTGRES, LIVE_COUNT_SQLITE},
};
use tonic::Code;

use crate::{
    helpers::{TestApp, spawn_app, spawn_app_on, spawn_sqlite_app},
    migrations::{submit, wait_done},
};

async fn connect(url: String) -> DatabaseConnection {
    db::connect(&DbSettings {
        url,
        schema: Config::default().tenant_db_schema,
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(30),
        application_name: "count-test".into(),
    })
    .await
    .unwrap()
}

async fn scalar(conn: &DatabaseConnection, sql: &str) -> i64 {
    conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .expect("one row")
        .try_get_by_index::<i64>(0)
        .unwrap()
}

/// `COUNT(*)` of the live rows: the truth the counter must equal.
async fn real_live(conn: &DatabaseConnection) -> u64 {
    let n = scalar(
        conn,
        "SELECT COUNT(*) FROM accounts WHERE deleted_at IS NULL",
    )
    .await;
    u64::try_from(n).unwrap()
}

/// The counter, read as the store reads it.
async fn counter(conn: &DatabaseConnection) -> u64 {
    let sql = if conn.get_database_backend() == DbBackend::Postgres {
        LIVE_COUNT_POSTGRES
    } else {
        LIVE_COUNT_SQLITE
    };
    u64::try_from(scalar(conn, sql).await).unwrap()
}

async fn list_total(app: &TestApp, filter: Option<&str>) -> u64 {
    app.tenants()
        .list_accounts(pb::ListAccountsRequest {
            page: Some(PageRequest {
                limit: Some(1),
                offset: 0,
            }),
            filter: filter.map(str::to_owned),
            ..pb::ListAccountsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .page
        .unwrap()
        .total_items
}

async fn try_create(app: &TestApp, tenant_id: String) -> Result<(), tonic::Status> {
    app.tenants()
        .create_account(pb::CreateAccountRequest {
            account: Some(pb::NewAccount {
                tenant_id: Some(tenant_id.clone()),
                name: tenant_id,
                ..pb::NewAccount::default()
            }),
            idempotency_key: None,
        })
        .await
        .map(drop)
}

fn bare(id: String) -> pb::MigrationItem {
    pb::MigrationItem {
        item: Some(Item::TenantId(id)),
    }
}

enum Op {
    Create(String),
    Delete(String),
    /// Created by the API while the migration job may create it too: one of them wins.
    Race(String),
    List,
}

/// Concurrent creates, deletes and reactivations through the API while a migration job
/// (several batches; it also skips, reactivates, fails and races the API) runs. Returns the
/// number of live accounts the writes must leave.
async fn exercise(app: &TestApp, imported: usize) -> u64 {
    let ids = |prefix: &'static str, n: usize| (0..n).map(move |i| format!("{prefix}-{i:04}"));
    for id in ids("keep", 60)
        .chain(ids("again", 10))
        .chain(ids("back", 5))
    {
        try_create(app, id).await.unwrap();
    }
    for id in ids("again", 10).chain(ids("back", 5)) {
        app.delete(&id).await;
    }
    let mut items: Vec<_> = ids("mig", imported).map(bare).collect();
    items.push(bare("keep-0059".into())); // live: skipped
    items.extend(ids("back", 5).map(bare)); // deleted: reactivated by the job
    items.push(bare("bad id".into())); // invalid: an item error
    items.extend(ids("race", 20).map(bare));
    let job = submit(app, vec![items]).await.migration_id;

    let mut ops: Vec<Op> = Vec::new();
    ops.extend(ids("new", 200).map(Op::Create));
    ops.extend(ids("keep", 30).map(Op::Delete));
    ops.extend(ids("again", 10).map(Op::Create)); // reactivations
    ops.extend(ids("race", 20).map(Op::Race));
    ops.extend((0..20).map(|_| Op::List));
    // Interleave the kinds (7,919 is prime, so this is a permutation), so deletes and
    // reactivations run alongside creates.
    let n = ops.len();
    let mut shuffled: Vec<(usize, Op)> = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| ((i * 7_919) % n, op))
        .collect();
    shuffled.sort_by_key(|(key, _)| *key);
    stream::iter(shuffled)
        .for_each_concurrent(16, |(_, op)| async move {
            match op {
                Op::Create(id) => try_create(app, id).await.unwrap(),
                Op::Delete(id) => {
                    app.delete(&id).await;
                }
                Op::Race(id) => match try_create(app, id).await {
                    Ok(()) => {}
                    Err(s) => assert_eq!(s.code(), Code::AlreadyExists, "{s:?}"),
                },
                Op::List => {
                    list_total(app, None).await;
                }
            }
        })
        .await;
    let status = wait_done(app, &job).await;
    let m = status.migration.unwrap();
    assert_eq!(m.state(), pb::MigrationState::Completed);
    assert_eq!(m.failed_items, 1, "{:?}", status.errors);
    // keep: 60 − 30 deleted; again: 10 reactivated; back: 5 reactivated by the job; new: 200;
    // mig: imported; race: 20, each created once (by the API or the job).
    (60 - 30 + 10 + 5 + 200 + imported + 20) as u64
}

#[tokio::test]
async fn the_total_is_exact_after_concurrent_writes_reactivations_and_a_migration() {
    let app = spawn_app().await;
    // 1,100 items: three batches of the job.
    let expected = exercise(&app, 1_100).await;
    let conn = connect(app.config.tenant_database()).await;
    assert_eq!(real_live(&conn).await, expected);
    assert_eq!(list_total(&app, None).await, expected);
    assert_eq!(counter(&conn).await, expected);
    // Every transaction of the service folded its deltas into the counter row.
    assert_eq!(
        scalar(&conn, "SELECT COUNT(*) FROM account_count_deltas").await,
        0
    );
    // The filtered total still counts the rows (through the trigram indexes), and agrees.
    assert_eq!(list_total(&app, Some("-")).await, expected);
}

#[tokio::test]
async fn the_total_is_exact_after_concurrent_writes_reactivations_and_a_migration_on_sqlite() {
    let app = spawn_sqlite_app().await;
    let expected = exercise(&app, 600).await;
    let conn = connect(app.config.tenant_database()).await;
    assert_eq!(real_live(&conn).await, expected);
    assert_eq!(list_total(&app, None).await, expected);
    assert_eq!(list_total(&app, Some("-")).await, expected);
}

/// Accounts written before the counter's migration, some deleted, as on an upgraded database.
fn seed_sql(backend: DbBackend, from: u32, to: u32) -> String {
    let ts = if backend == DbBackend::Postgres {
        "timestamptz '2024-01-01 00:00:00+00'"
    } else {
        "'2024-01-01T00:00:00Z'"
    };
    format!(
        "INSERT INTO accounts (tenant_id, name, metadata, sub_account_access_type, is_reseller, created_at, updated_at, deleted_at)
         WITH RECURSIVE seq(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM seq WHERE i < {to})
         SELECT 'pre-' || i, 'Pre ' || i, '{{}}', 'defaultOff', false, {ts}, {ts},
                CASE WHEN i % 10 = 0 THEN {ts} END
         FROM seq"
    )
}

/// The migration counts the rows already there; statements by other writers (a bulk load,
/// an UPDATE or DELETE of many rows) keep the counter exact; so do the service's own writes.
async fn counter_follows_existing_rows_and_other_writers(url: String) -> TestApp {
    let conn = connect(url.clone()).await;
    let backend = conn.get_database_backend();
    Migrator::up(&conn, Some(1)).await.unwrap();
    conn.execute_unprepared(&seed_sql(backend, 1, 1_000))
        .await
        .unwrap();
    Migrator::up(&conn, None).await.unwrap();
    assert_eq!(counter(&conn).await, 900);
    assert_eq!(real_live(&conn).await, 900);

    for sql in [
        seed_sql(backend, 1_001, 1_500),
        "UPDATE accounts SET deleted_at = created_at WHERE tenant_id LIKE 'pre-1%'".into(),
        "UPDATE accounts SET deleted_at = NULL WHERE tenant_id LIKE 'pre-15%'".into(),
        "UPDATE accounts SET name = 'renamed' WHERE tenant_id LIKE 'pre-2%'".into(),
        "DELETE FROM accounts WHERE tenant_id LIKE 'pre-3%'".into(),
    ] {
        conn.execute_unprepared(&sql).await.unwrap();
        assert_eq!(counter(&conn).await, real_live(&conn).await, "after {sql}");
    }

    let app = spawn_app_on(url).await;
    try_create(&app, "svc-a".into()).await.unwrap();
    try_create(&app, "svc-b".into()).await.unwrap();
    app.delete("svc-a").await;
    app.delete("pre-42").await;
    try_create(&app, "pre-40".into()).await.unwrap(); // reactivates a seeded deleted row
    let real = real_live(&conn).await;
    assert_eq!(counter(&conn).await, real);
    assert_eq!(list_total(&app, None).await, real);
    app
}

#[tokio::test]
async fn the_counter_starts_from_existing_rows_and_follows_other_writers() {
    let url = testing::postgres().create_database().await;
    let app = counter_follows_existing_rows_and_other_writers(url).await;
    let conn = connect(app.config.tenant_database()).await;
    // Only the other writer's statements left deltas (the service folds its own), and a
    // TRUNCATE (after emptying the tables that reference accounts) resets the count.
    // The bulk load, the two UPDATEs of `deleted_at` and the DELETE: one row each.
    assert_eq!(
        scalar(&conn, "SELECT COUNT(*) FROM account_count_deltas").await,
        4
    );
    conn.execute_unprepared("TRUNCATE change_events, memberships, accounts")
        .await
        .unwrap();
    assert_eq!(counter(&conn).await, 0);
    assert_eq!(list_total(&app, None).await, 0);
}

#[tokio::test]
async fn the_counter_starts_from_existing_rows_and_follows_other_writers_on_sqlite() {
    let (_dir, url) = testing::sqlite();
    let _app = counter_follows_existing_rows_and_other_writers(url).await;
}
