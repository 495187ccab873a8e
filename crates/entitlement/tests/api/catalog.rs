//! Catalog rules: deleting what is in use, force, key renames.

use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

#[tokio::test]
async fn in_use_features_and_plans_need_force() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    let sso = app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let (grant, _) = app.grant(&plan, "acme", None, None, None).await;

    let err = app
        .features
        .clone()
        .delete_feature(pb::DeleteFeatureRequest {
            id: sso.id.clone(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = app
        .plans
        .clone()
        .delete_plan(pb::DeletePlanRequest {
            id: plan.id.clone(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // Renaming a feature key carries into the plan.
    let renamed = app
        .features
        .clone()
        .update_feature(pb::UpdateFeatureRequest {
            id: sso.id.clone(),
            key: Some("saml".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let d = app
        .check("acme", None, feature_target("saml"), None, renamed.revision)
        .await
        .unwrap();
    assert!(d.result, "{d:?}");

    let deleted = app
        .plans
        .clone()
        .delete_plan(pb::DeletePlanRequest {
            id: plan.id.clone(),
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.revoked_grants, 1);
    let g = app
        .grants
        .clone()
        .get_grant(pb::GetGrantRequest {
            id: grant.id,
            with_relations: false,
        })
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(g.revoke_reason.as_deref(), Some("plan_deleted"));
    let f = app
        .features
        .clone()
        .delete_feature(pb::DeleteFeatureRequest {
            id: sso.id,
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(f.unlinked_plan_ids.is_empty());

    // Duplicate keys are refused.
    app.bool_feature("dup").await;
    let err = app
        .features
        .clone()
        .create_feature(pb::CreateFeatureRequest {
            key: "dup".into(),
            name: "dup".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
}
