//! B7: the tenants list page (`ListAccounts`, limit 200, sorted by name) with 1,000,000
//! accounts, with the query plans.
//!
//! The accounts are seeded fast and directly, with `INSERT … SELECT generate_series` into the
//! tenant service's `accounts` table (as its own role, in its own schema), then `VACUUM
//! ANALYZE` (what autovacuum would do after a bulk load). Rows written this way bypass the
//! change feed, which this measure does not need. The page is timed over gRPC against the
//! tenant service, interleaved with `GetAccount` (a primary-key read on the same server) as
//! the baseline; one request in flight, so these are latencies, not throughput.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenantry_proto::{
    common::v1::{PageRequest, SortOrder},
    tenant::v1::{
        AccountSortField, GetAccountRequest, ListAccountsRequest,
        tenant_service_client::TenantServiceClient,
    },
};

use crate::{
    ab::interleaved,
    fixture::Fixture,
    load::Bounds,
    report::{Row, Verdict, thousands},
    stats::{self, Latency, ms, summarize},
};

/// The unfiltered total exactly as the tenant service computes it (a maintained counter).
pub const COUNT_SQL: &str = tenantry_tenant::storage::LIVE_COUNT_POSTGRES;
/// The page query the tenant service runs (its sea-orm query, written out).
pub const PAGE_SQL: &str = "SELECT * FROM accounts WHERE deleted_at IS NULL \
     ORDER BY name ASC, tenant_id ASC LIMIT 200 OFFSET 0";

fn account(i: u64) -> String {
    format!("b7-{i:08}")
}

/// Returns the row and the query plans (Markdown).
pub async fn b7(fixture: &Fixture) -> Result<(Row, String)> {
    let s = &fixture.settings;
    let n = s.b7_accounts;
    let db = fixture.tenant_db(2).await?;
    let started = Instant::now();
    db.execute_unprepared(&format!(
        "INSERT INTO accounts (tenant_id, name, created_at, updated_at) \
         SELECT 'b7-' || lpad(g::text, 8, '0'), 'Account ' || substr(md5(g::text), 1, 16), \
                now() - make_interval(secs => g), now() \
         FROM generate_series(1, {n}) AS g"
    ))
    .await?;
    db.execute_unprepared("VACUUM ANALYZE accounts").await?;
    let seeded = started.elapsed();
    eprintln!(
        "B7: seeded {} accounts in {:.1} s",
        thousands(n as f64),
        seeded.as_secs_f64()
    );

    let client = TenantServiceClient::new(fixture.tenant.clone());
    let list_request = || ListAccountsRequest {
        page: Some(PageRequest {
            limit: Some(200),
            offset: 0,
        }),
        sort_by: AccountSortField::Name.into(),
        order: SortOrder::Asc.into(),
        ..Default::default()
    };
    let first = client
        .clone()
        .list_accounts(list_request())
        .await?
        .into_inner();
    ensure!(
        first.accounts.len() == 200,
        "the page holds {} accounts",
        first.accounts.len()
    );
    let total = first.page.map_or(0, |p| p.total_items);
    ensure!(total >= n, "the list counts {total} accounts");

    let list = |_| {
        let mut c = client.clone();
        async move { c.list_accounts(list_request()).await.map(drop) }
    };
    let get = |i: u64| {
        let mut c = client.clone();
        let tenant_id = account(1 + (i * 7_919) % n);
        async move {
            c.get_account(GetAccountRequest { tenant_id })
                .await
                .map(drop)
        }
    };
    let bounds = Bounds {
        concurrency: 1,
        requests: if s.quick { 60 } else { 100 },
        duration: Duration::from_secs(60),
    };
    let pairs = interleaved(fixture, s.pairs, bounds, list, get).await?;
    let p99_ratios: Vec<(f64, f64)> = pairs
        .a
        .iter()
        .zip(&pairs.b)
        .map(|(a, b)| {
            (
                a.load.latency().p99.as_secs_f64(),
                b.load.latency().p99.as_secs_f64(),
            )
        })
        .collect();
    let ratio = summarize(&stats::ratios(&p99_ratios));
    let merged = |sides: &[crate::ab::Side]| {
        let mut h = stats::histogram();
        for side in sides {
            h.add(&side.load.histogram).expect("same bounds");
        }
        Latency::of(&h)
    };
    let a = merged(&pairs.a);
    let b = merged(&pairs.b);

    let mut plans = String::new();
    for (what, sql) in [("total (count)", COUNT_SQL), ("page", PAGE_SQL)] {
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"),
            ))
            .await?;
        plans.push_str(&format!("B7 {what}: `{sql}`\n\n```text\n"));
        for row in rows {
            let line: String = row.try_get("", "QUERY PLAN")?;
            plans.push_str(&line);
            plans.push('\n');
        }
        plans.push_str("```\n\n");
    }
    db.close().await?;
    let row = Row {
        id: "B7",
        measure: format!(
            "ListAccounts page (limit 200, by name, with total) at {} accounts ÷ GetAccount, p99 latency, 1 in flight (seeded in {:.0} s)",
            thousands(total as f64),
            seeded.as_secs_f64()
        ),
        a: format!(
            "list: p50 {} / p99 {} / max {} ms",
            ms(a.p50),
            ms(a.p99),
            ms(a.max)
        ),
        b: format!(
            "get: p50 {} / p99 {} / max {} ms",
            ms(b.p50),
            ms(b.p99),
            ms(b.max)
        ),
        summary: ratio,
        unit: "×",
        cpu: pairs.cpu(),
        target: "report (with the query plan)".into(),
        verdict: Verdict::Report,
    };
    Ok((row, plans))
}
