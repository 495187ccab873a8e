//! The PostgreSQL batch insert (`INSERT … SELECT FROM unnest(…)` with array literals): every
//! column arrives intact, whatever characters the caller's strings hold.

use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

#[tokio::test]
async fn batch_insert_keeps_every_column_and_awkward_strings_intact() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let now = app.clock.now_for_tests();
    let awkward = [
        r#"quote " and backslash \ "#,
        "{braces},commas,NULL",
        "NULL",
        "",
        "ünïcødé ✓ \t tab",
    ];
    let items: Vec<pb::NewGrant> = awkward
        .iter()
        .enumerate()
        .map(|(i, s)| pb::NewGrant {
            plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
            tenant_id: "acme".into(),
            user_id: (i % 2 == 0).then(|| format!("user {s}")),
            starts_at: Some(ts(now - chrono::Duration::hours(1))),
            expires_at: (i % 2 == 1).then(|| ts(now + chrono::Duration::days(i as i64 + 1))),
            external_id: Some(format!("ext {i} {s}")),
            metadata: serde_json_to_struct(&serde_json::json!({ "note": s, "i": i })),
            source: None,
        })
        .collect();
    let ids = app
        .batch_create(items.clone())
        .await
        .expect("batch create")
        .grant_ids;
    assert_eq!(ids.len(), items.len());
    for (id, item) in ids.iter().zip(&items) {
        let grant = app
            .grants
            .clone()
            .get_grant(pb::GetGrantRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("get grant")
            .into_inner()
            .grant
            .unwrap();
        assert_eq!(grant.tenant_id, item.tenant_id);
        assert_eq!(grant.user_id, item.user_id);
        assert_eq!(grant.external_id, item.external_id);
        assert_eq!(grant.metadata, item.metadata);
        assert_eq!(grant.starts_at, item.starts_at);
        assert_eq!(grant.expires_at, item.expires_at);
        assert_eq!(grant.source, "batch");
    }
    // Taken external IDs are per-item errors, and nothing of the batch is written.
    let again = vec![items[1].clone(), {
        let mut g = items[0].clone();
        g.external_id = Some("fresh".into());
        g
    }];
    let err = app.batch_create(again).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let bad: Vec<u32> = details(&err).item_errors.iter().map(|e| e.index).collect();
    assert_eq!(bad, vec![0]);
    let listed = app
        .grants
        .clone()
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.grants.len(), items.len());
}

/// A batch's change-log entry (≈100 bytes per grant) is compressed with lz4 on a server that
/// has it, and a second replica still replays it into the same answers.
#[tokio::test]
async fn change_log_entries_are_lz4_compressed_and_replayed() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let app = spawn_app().await;
    // Started first, so it learns the batch from the log rather than from a snapshot.
    let replica = spawn_replica(&app).await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let items: Vec<pb::NewGrant> = (0..500)
        .map(|i| pb::NewGrant {
            plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
            tenant_id: "acme".into(),
            user_id: Some(format!("user-{i}")),
            ..Default::default()
        })
        .collect();
    let revision = app
        .batch_create(items)
        .await
        .expect("batch create")
        .revision;

    let conn =
        tenantry_common::db::connect(&tenantry_common::db::DbSettings::entitlement(&app.config))
            .await
            .expect("connect");
    let lz4_available = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT 'lz4' = ANY (enumvals) AS lz4 FROM pg_settings \
             WHERE name = 'default_toast_compression'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<bool>("", "lz4")
        .unwrap();
    let method = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_column_compression(changes) AS method FROM ent_change_log \
             ORDER BY length(changes) DESC LIMIT 1",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<Option<String>>("", "method")
        .unwrap();
    let expected = if lz4_available { "lz4" } else { "pglz" };
    assert_eq!(method.as_deref(), Some(expected));

    for (user, entitled) in [("user-0", true), ("user-499", true), ("user-500", false)] {
        let decision = replica
            .check("acme", Some(user), feature_target("sso"), None, revision)
            .await
            .expect("check on the replica");
        assert_eq!(decision.result, entitled, "{user}: {decision:?}");
    }
}
