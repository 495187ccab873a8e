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
