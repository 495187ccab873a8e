//! Reacting to the tenant change feed: deletion revokes grants, signup plans, restarts.

use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

#[tokio::test]
async fn deleting_a_tenant_revokes_its_grants_and_new_accounts_get_signup_plans() {
    let app = spawn_app().await;
    app.bool_feature("sso").await;
    app.bool_feature("basic").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    app.plans
        .clone()
        .create_plan(pb::CreatePlanRequest {
            key: Some("free".into()),
            name: "Free".into(),
            features: vec![bare("basic")],
            assign_on_signup: true,
            ..Default::default()
        })
        .await
        .unwrap();
    app.account("doomed", None).await;
    let (grant, rev) = app.grant(&plan, "doomed", None, None, None).await;
    assert!(
        app.check("doomed", None, feature_target("sso"), None, rev)
            .await
            .unwrap()
            .result
    );

    // The signup plan arrives through the feed.
    app.eventually("signup grant", || async {
        app.check("doomed", None, feature_target("basic"), None, 0)
            .await
            .unwrap()
            .result
    })
    .await;
    let listed = app
        .grants
        .clone()
        .list_grants(pb::ListGrantsRequest {
            sources: vec!["signup".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.grants.len(), 1);

    app.delete_account("doomed").await;
    app.eventually("tenant deletion applied", || async {
        let d = app
            .check("doomed", None, feature_target("sso"), None, 0)
            .await
            .unwrap();
        justification(&d) == pb::Justification::TenantNotFound
    })
    .await;
    let g = app
        .grants
        .clone()
        .get_grant(pb::GetGrantRequest {
            id: grant.id.clone(),
            with_relations: false,
        })
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(g.status, pb::GrantStatus::Revoked as i32);
    assert_eq!(g.revoke_reason.as_deref(), Some("tenant_deleted"));
    assert_eq!(g.revoked_by.as_deref(), Some("system"));

    // A restarted replica resumes from its cursor: no second signup grant, nothing re-revoked.
    let replica = spawn_replica(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let listed = replica
        .grants
        .clone()
        .list_grants(pb::ListGrantsRequest {
            sources: vec!["signup".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.grants.len(),
        1,
        "each feed event applies exactly once"
    );
}

#[tokio::test]
async fn a_follower_whose_cursor_expired_resynchronises_and_applies_what_it_missed() {
    use tenantry_proto::tenant::v1::{
        self as tpb, change_feed_service_client::ChangeFeedServiceClient,
        hierarchy_service_client::HierarchyServiceClient,
    };
    use tokio_stream::StreamExt;

    let mut config = pg_config().await;
    config.feed_retention_secs = 1;
    // The tenant service runs on while the entitlement service is away.
    let tenant_shutdown = tenantry_common::CancellationToken::new();
    let tenant_url = spawn_tenant(&config, &tenant_shutdown).await;
    let away = spawn_with_tenant(config.clone(), tenant_url.clone()).await;
    away.bool_feature("sso").await;
    away.bool_feature("basic").await;
    away.bool_feature("family").await;
    let pro = away.plan("pro", vec![bare("sso")], false).await;
    let family = away.plan("family", vec![bare("family")], true).await;
    away.plans
        .clone()
        .create_plan(pb::CreatePlanRequest {
            key: Some("free".into()),
            name: "Free".into(),
            features: vec![bare("basic")],
            assign_on_signup: true,
            ..Default::default()
        })
        .await
        .unwrap();
    for id in ["doomed", "parent", "child"] {
        away.account(id, None).await;
    }
    let (grant, _) = away.grant(&pro, "doomed", None, None, None).await;
    let (_, rev) = away.grant(&family, "parent", None, None, None).await;
    away.eventually("the signup grants", || async {
        away.check("child", None, feature_target("basic"), None, rev)
            .await
            .unwrap()
            .result
    })
    .await;
    assert!(
        !away
            .check("child", None, feature_target("family"), None, rev)
            .await
            .unwrap()
            .result
    );
    let tenants = away.tenants.clone();
    let mut feed = ChangeFeedServiceClient::connect(tenant_url.clone())
        .await
        .unwrap();
    let applied = feed
        .watch_changes(tpb::WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap()
        .head_sequence;
    away.stop().await;

    // While it is away: a deletion, a sign-up and a hierarchy change.
    tenants
        .clone()
        .delete_account(tpb::DeleteAccountRequest {
            tenant_id: "doomed".into(),
            expected_parent_tenant_id: None,
        })
        .await
        .unwrap();
    tenants
        .clone()
        .create_account(tpb::CreateAccountRequest {
            account: Some(tpb::NewAccount {
                tenant_id: Some("newcomer".into()),
                name: "Newcomer".into(),
                ..Default::default()
            }),
            idempotency_key: None,
        })
        .await
        .unwrap();
    HierarchyServiceClient::connect(tenant_url.clone())
        .await
        .unwrap()
        .attach_sub_account(tpb::AttachSubAccountRequest {
            parent_tenant_id: "parent".into(),
            child_tenant_id: "child".into(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    // ... and then those events are pruned: the cursor it stopped at is no longer served.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut stream = feed
            .watch_changes(tpb::WatchChangesRequest {
                from_sequence: applied,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Ok(Some(Err(status))) =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await
        {
            assert_eq!(details(&status).reason, "CURSOR_EXPIRED", "{status:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the events after {applied} were never pruned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Back: it resynchronises from the snapshot and converges.
    let back = spawn_with_tenant(config, tenant_url).await;
    back.eventually("the deletion applied", || async {
        let d = back
            .check("doomed", None, feature_target("sso"), None, 0)
            .await
            .unwrap();
        justification(&d) == pb::Justification::TenantNotFound
    })
    .await;
    let revoked = back
        .grants
        .clone()
        .get_grant(pb::GetGrantRequest {
            id: grant.id.clone(),
            with_relations: false,
        })
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(revoked.status, pb::GrantStatus::Revoked as i32);
    assert_eq!(revoked.revoke_reason.as_deref(), Some("tenant_deleted"));
    back.eventually("the newcomer's signup plan", || async {
        back.check("newcomer", None, feature_target("basic"), None, 0)
            .await
            .unwrap()
            .result
    })
    .await;
    back.eventually("the new parent's inherited plan", || async {
        back.check("child", None, feature_target("family"), None, 0)
            .await
            .unwrap()
            .result
    })
    .await;
    let signups = back
        .grants
        .clone()
        .list_grants(pb::ListGrantsRequest {
            sources: vec!["signup".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    let mut holders: Vec<_> = signups.iter().map(|g| g.tenant_id.as_str()).collect();
    holders.sort_unstable();
    assert_eq!(holders, ["child", "doomed", "newcomer", "parent"]);
    tenant_shutdown.cancel();
}

#[tokio::test]
async fn a_follower_that_falls_behind_says_so_in_health_and_the_server_stays_serving() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let mut config = pg_config().await;
    config.feed_lag_alarm_secs = 1;
    // A tenant service that refuses the follower (it lacks the service token): it never
    // catches up.
    let tenant_shutdown = tenantry_common::CancellationToken::new();
    let tenant_config = tenantry_common::Config {
        service_token: Some(tenantry_common::Secret::new("a-token-the-follower-lacks")),
        ..config.clone()
    };
    let tenant_url = spawn_tenant(&tenant_config, &tenant_shutdown).await;
    let app = spawn_with_tenant(config, tenant_url).await;
    let health = |service: &'static str| {
        let mut client = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
        async move {
            client
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    app.eventually("the feed reported lagging", || async {
        health("tenantry.entitlement.v1.TenantFeed").await == ServingStatus::NotServing
    })
    .await;
    // Checks are still answered from the index: the server itself is serving.
    assert_eq!(health("").await, ServingStatus::Serving);
    app.bool_feature("sso").await;
    tenant_shutdown.cancel();
}
