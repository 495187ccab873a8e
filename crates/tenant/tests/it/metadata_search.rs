//! ListAccounts' metadata filter (exact `key = value` string pairs, AND), on both databases,
//! with the other filters and paging.

use tenantry_proto::{
    common::v1::{PageInfo, PageRequest},
    tenant::v1::{self as pb},
};
use tonic::Code;

use crate::helpers::{TestApp, assert_code, spawn_app, spawn_sqlite_app, violated_fields};

async fn set_metadata(app: &TestApp, tenant_id: &str, json: &str) {
    app.tenants()
        .add_account_metadata(pb::AddAccountMetadataRequest {
            tenant_id: tenant_id.into(),
            metadata: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(json.into())),
            }),
        })
        .await
        .unwrap_or_else(|s| panic!("metadata of {tenant_id}: {s:?}"));
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<pb::MetadataMatch> {
    pairs
        .iter()
        .map(|(key, value)| pb::MetadataMatch {
            key: (*key).into(),
            value: (*value).into(),
        })
        .collect()
}

async fn search(
    app: &TestApp,
    request: pb::ListAccountsRequest,
) -> Result<(Vec<String>, PageInfo), tonic::Status> {
    let out = app
        .tenants()
        .list_accounts(pb::ListAccountsRequest {
            sort_by: pb::AccountSortField::TenantId.into(),
            ..request
        })
        .await?
        .into_inner();
    Ok((
        out.accounts.into_iter().map(|a| a.tenant_id).collect(),
        out.page.unwrap_or_default(),
    ))
}

async fn ids(app: &TestApp, request: pb::ListAccountsRequest) -> Vec<String> {
    search(app, request).await.unwrap().0
}

fn by(metadata: &[(&str, &str)]) -> pb::ListAccountsRequest {
    pb::ListAccountsRequest {
        metadata: pairs(metadata),
        ..pb::ListAccountsRequest::default()
    }
}

async fn searches_by_metadata(app: TestApp) {
    for (id, name) in [
        ("acme-1", "Acme One"),
        ("acme-2", "Acme Two"),
        ("acme-3", "Acme Three"),
        ("globex", "Globex"),
        ("typed", "Typed"),
        ("odd", "Odd keys"),
        ("nul", "Has a NUL"),
        ("gone", "Deleted"),
    ] {
        app.create(id, name).await;
    }
    set_metadata(&app, "acme-1", r#"{"plan": "pro", "region": "eu"}"#).await;
    set_metadata(&app, "acme-2", r#"{"plan": "pro", "region": "us"}"#).await;
    set_metadata(&app, "acme-3", r#"{"plan": "free", "region": "eu"}"#).await;
    set_metadata(
        &app,
        "globex",
        r#"{"plan": "pro", "region": "eu", "seats": 5, "inner": {"tier": "gold"}}"#,
    )
    .await;
    // Not the string "pro", and the number 5 is not the string "5".
    set_metadata(
        &app,
        "typed",
        r#"{"plan": ["pro"], "seats": "5", "tier": "Gold"}"#,
    )
    .await;
    set_metadata(&app, "odd", r#"{"a.b \"c\"": "x:y,z", "$[0]": ""}"#).await;
    // PostgreSQL's jsonb cannot hold \u0000; the account is still found by its other keys.
    set_metadata(&app, "nul", r#"{"plan": "pro", "note": "a\u0000b"}"#).await;
    set_metadata(&app, "gone", r#"{"plan": "pro"}"#).await;
    app.delete("gone").await;

    let (found, page) = search(&app, by(&[("plan", "pro")])).await.unwrap();
    assert_eq!(found, ["acme-1", "acme-2", "globex", "nul"]);
    assert_eq!(page.total_items, 4);
    assert!(!page.has_next);

    // Pairs are ANDed; the other filters apply too.
    assert_eq!(
        ids(&app, by(&[("plan", "pro"), ("region", "eu")])).await,
        ["acme-1", "globex"]
    );
    assert!(
        ids(&app, by(&[("region", "eu"), ("region", "us")]))
            .await
            .is_empty()
    );
    assert_eq!(
        ids(
            &app,
            pb::ListAccountsRequest {
                filter: Some("ACME".into()),
                ..by(&[("plan", "pro")])
            }
        )
        .await,
        ["acme-1", "acme-2"]
    );
    assert_eq!(
        ids(
            &app,
            pb::ListAccountsRequest {
                tenant_ids: vec!["acme-2".into(), "acme-3".into()],
                ..by(&[("plan", "pro")])
            }
        )
        .await,
        ["acme-2"]
    );

    // Exact: strings only, case-sensitive, top-level keys only.
    assert_eq!(ids(&app, by(&[("seats", "5")])).await, ["typed"]);
    assert_eq!(ids(&app, by(&[("tier", "Gold")])).await, ["typed"]);
    assert!(ids(&app, by(&[("tier", "gold")])).await.is_empty());
    assert!(ids(&app, by(&[("plan", "PRO")])).await.is_empty());
    assert!(ids(&app, by(&[("plan", "pr")])).await.is_empty());
    // Any key, any value (JSON-path and LIKE characters mean nothing here), and "" is a value.
    assert_eq!(ids(&app, by(&[("a.b \"c\"", "x:y,z")])).await, ["odd"]);
    assert_eq!(ids(&app, by(&[("$[0]", "")])).await, ["odd"]);
    assert!(ids(&app, by(&[("plan", "%")])).await.is_empty());

    // Pages never repeat or skip, and the total counts every match.
    for sort_by in [
        pb::AccountSortField::Name,
        pb::AccountSortField::CreatedAt,
        pb::AccountSortField::TenantId,
    ] {
        let mut seen = Vec::new();
        for offset in [0, 3] {
            let out = app
                .tenants()
                .list_accounts(pb::ListAccountsRequest {
                    page: Some(PageRequest {
                        limit: Some(3),
                        offset,
                    }),
                    sort_by: sort_by.into(),
                    ..by(&[("plan", "pro")])
                })
                .await
                .unwrap()
                .into_inner();
            let page = out.page.unwrap();
            assert_eq!(page.total_items, 4);
            assert_eq!(page.total_pages, 2);
            assert_eq!(page.has_next, offset == 0);
            seen.extend(out.accounts.into_iter().map(|a| a.tenant_id));
        }
        seen.sort();
        assert_eq!(seen, ["acme-1", "acme-2", "globex", "nul"], "{sort_by:?}");
    }

    // Bounded: the pair count, each key and value.
    let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".into())).collect();
    let eleven: Vec<(&str, &str)> = eleven.iter().map(|(k, v)| (&**k, &**v)).collect();
    let status = assert_code(search(&app, by(&eleven)).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["metadata"]);
    let status = assert_code(
        search(&app, by(&[("plan", "pro"), ("", "x")])).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["metadata[1].key"]);
    let long = "v".repeat(1_025);
    let status = assert_code(
        search(&app, by(&[("plan", &long)])).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["metadata[0].value"]);
    let status = assert_code(
        search(&app, by(&[("note", "a\u{0}b")])).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["metadata[0].value"]);
}

#[tokio::test]
async fn accounts_are_searched_by_metadata_on_postgres() {
    searches_by_metadata(spawn_app().await).await;
}

#[tokio::test]
async fn accounts_are_searched_by_metadata_on_sqlite() {
    searches_by_metadata(spawn_sqlite_app().await).await;
}
