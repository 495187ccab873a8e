//! The main paths on SQLite (single process).

use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

#[tokio::test]
async fn sqlite_main_paths() {
    let app = spawn_sqlite_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let (grant, rev) = app.grant(&plan, "acme", Some("alice"), None, None).await;
    let d = app
        .check("acme", Some("alice"), feature_target("sso"), None, rev)
        .await
        .unwrap();
    assert!(d.result, "{d:?}");
    assert_eq!(d.provenance.unwrap().level, pb::GrantLevel::User as i32);
    let r = app
        .grants
        .clone()
        .revoke_grant(pb::RevokeGrantRequest {
            id: grant.id,
            reason: None,
        })
        .await
        .unwrap()
        .into_inner();
    let d = app
        .check(
            "acme",
            Some("alice"),
            feature_target("sso"),
            None,
            r.revision,
        )
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::PlanRevoked);
    app.delete_account("acme").await;
    app.eventually("deletion through the feed", || async {
        let d = app
            .check("acme", None, feature_target("sso"), None, 0)
            .await
            .unwrap();
        justification(&d) == pb::Justification::TenantNotFound
    })
    .await;
}
