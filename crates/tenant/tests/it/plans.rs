//! Query plans of the account list on a large table: every sort is served by an index (no
//! full sort), the substring filter by the trigram indexes, the metadata filter by its GIN
//! index, and the unfiltered total by the
//! live-account counter (no scan of the table). Rows: `TENANTRY_PLAN_ROWS`
//! (default 100,000; the report's plans were taken with 1,000,000). Run with `--nocapture`
//! to see the plans.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenantry_common::db::{self, DbSettings};
use tenantry_proto::{common::v1::PageRequest, tenant::v1 as pb};
use tenantry_tenant::storage::LIVE_COUNT_POSTGRES;

use crate::helpers::spawn_app;

async fn explain(conn: &sea_orm::DatabaseConnection, sql: &str) -> String {
    let rows = conn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) {sql}"),
        ))
        .await
        .unwrap();
    let plan: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "QUERY PLAN").unwrap())
        .collect();
    plan.join("\n")
}

#[tokio::test]
async fn list_queries_use_indexes_on_a_large_table() {
    let rows: u64 = std::env::var("TENANTRY_PLAN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let app = spawn_app().await;
    let conn = db::connect(&DbSettings {
        url: app.config.tenant_database(),
        schema: app.config.tenant_db_schema.clone(),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(30),
        application_name: "plan-test".into(),
    })
    .await
    .unwrap();
    // Every 20th account deleted, names from 1,000 companies, one creation a second, a
    // metadata `shard` shared by 1 account in 5,000.
    conn.execute_unprepared(&format!(
        "INSERT INTO accounts (tenant_id, name, metadata, sub_account_access_type, is_reseller, created_at, updated_at, deleted_at)
         SELECT 'acct-' || lpad(i::text, 8, '0'),
                'Company ' || (i % 1000) || ' ' || substr(md5(i::text), 1, 8),
                '{{\"shard\": \"s' || (i % 5000) || '\", \"tier\": \"gold\"}}', 'defaultOff', false,
                timestamptz '2024-01-01' + i * interval '1 second',
                timestamptz '2024-01-01' + i * interval '1 second',
                CASE WHEN i % 20 = 0 THEN now() END
         FROM generate_series(1, {rows}) AS i"
    ))
    .await
    .unwrap();
    conn.execute_unprepared("ANALYZE accounts").await.unwrap();

    let live = "FROM accounts WHERE deleted_at IS NULL";
    // `_filter=4E7A1`: rare (a handful of rows), where scanning an ordered index would read
    // most of the table before finding 50 matches.
    let filter =
        r"(lower(name) LIKE '%4e7a1%' ESCAPE '\' OR lower(tenant_id) LIKE '%4e7a1%' ESCAPE '\')";
    // What the store runs for a filtered page on PostgreSQL: matches first, then sort them.
    let filtered_page = |order: &str| {
        format!(
            "WITH matches AS MATERIALIZED (SELECT tenant_id {live} AND {filter}) \
             SELECT a.* FROM accounts a JOIN matches m ON m.tenant_id = a.tenant_id \
             ORDER BY {order} LIMIT 50 OFFSET 0"
        )
    };
    // What the store runs for a metadata filter on PostgreSQL (`metadata=shard:s42`).
    let by_metadata = "account_metadata_jsonb(metadata) @> CAST('{\"shard\": \"s42\"}' AS jsonb)";
    let cases = [
        (
            "metadata, name",
            format!(
                "WITH matches AS MATERIALIZED (SELECT tenant_id {live} AND {by_metadata}) \
                 SELECT a.* FROM accounts a JOIN matches m ON m.tenant_id = a.tenant_id \
                 ORDER BY a.name ASC, a.tenant_id ASC LIMIT 50 OFFSET 0"
            ),
            "accounts_live_metadata",
        ),
        (
            "metadata count",
            format!("SELECT COUNT(*) {live} AND {by_metadata}"),
            "accounts_live_metadata",
        ),
        (
            "createdAt ASC, first page",
            format!("SELECT * {live} ORDER BY created_at ASC, tenant_id ASC LIMIT 50 OFFSET 0"),
            "accounts_live_created_at",
        ),
        (
            "name DESC, page 101",
            format!("SELECT * {live} ORDER BY name DESC, tenant_id DESC LIMIT 50 OFFSET 5000"),
            "accounts_live_name",
        ),
        (
            "tenantId ASC",
            format!("SELECT * {live} ORDER BY tenant_id ASC LIMIT 50 OFFSET 0"),
            "accounts_live_tenant_id",
        ),
        (
            "filter, createdAt",
            filtered_page("a.created_at ASC, a.tenant_id ASC"),
            "_trgm",
        ),
        (
            "filter count",
            format!("SELECT COUNT(*) {live} AND {filter}"),
            "_trgm",
        ),
        (
            "_tenantIds",
            format!(
                "SELECT * {live} AND tenant_id IN ('acct-00000007', 'acct-00000042') ORDER BY created_at, tenant_id LIMIT 50"
            ),
            "Index Cond: ((tenant_id)",
        ),
    ];
    // For comparison, not run by the service: counting 95% of the table reads all of it
    // whichever path is taken. This is what the unfiltered total used to cost.
    let count = format!("SELECT COUNT(*) {live}");
    eprintln!(
        "--- COUNT(*) of the live rows, no longer run ({rows} rows)\n{count}\n{}\n",
        explain(&conn, &count).await
    );
    // The unfiltered total the service runs: the counter row plus the unfolded deltas (the
    // bulk INSERT above left one), never a scan of `accounts`.
    let plan = explain(&conn, LIVE_COUNT_POSTGRES).await;
    eprintln!("--- unfiltered total ({rows} rows)\n{LIVE_COUNT_POSTGRES}\n{plan}\n");
    assert!(
        plan.contains("on account_counts") && plan.contains("on account_count_deltas"),
        "unfiltered total: plan does not read the counter:\n{plan}"
    );
    assert!(
        !plan
            .lines()
            .any(|l| l.contains(" on accounts ") || l.trim_end().ends_with(" on accounts")),
        "unfiltered total: plan reads the accounts table:\n{plan}"
    );
    let expected = rows - rows / 20;
    let total = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest {
            page: Some(PageRequest {
                limit: Some(200),
                offset: 0,
            }),
            sort_by: pb::AccountSortField::Name.into(),
            ..pb::ListAccountsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .page
        .unwrap()
        .total_items;
    assert_eq!(total, expected, "the unfiltered total is exact");
    let shard = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest {
            metadata: vec![pb::MetadataMatch {
                key: "shard".into(),
                value: "s42".into(),
            }],
            ..pb::ListAccountsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    // i % 5000 == 42 for i = 42, 5042, …; none of them is a multiple of 20 (deleted).
    assert_eq!(
        shard.page.unwrap().total_items,
        (rows - 42) / 5_000 + 1,
        "the metadata total is exact"
    );
    assert!(shard.accounts.iter().all(|a| a.tenant_id.ends_with("042")));
    for (name, sql, expected) in cases {
        let plan = explain(&conn, &sql).await;
        eprintln!("--- {name} ({rows} rows)\n{sql}\n{plan}\n");
        assert!(
            plan.contains(expected),
            "{name}: plan does not use {expected}:\n{plan}"
        );
        if !name.contains("count")
            && !name.contains("filter")
            && !name.contains("metadata")
            && !name.contains("_tenantIds")
        {
            assert!(
                !plan.contains("Sort Key"),
                "{name}: sorts instead of reading an index:\n{plan}"
            );
        }
    }
}
