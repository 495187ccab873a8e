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

#[tokio::test]
async fn forced_feature_delete_removes_it_from_routes() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    let sso = app.bool_feature("sso").await;
    app.bool_feature("audit").await;
    let plan = app
        .plan("pro", vec![bare("sso"), bare("audit")], false)
        .await;
    app.grant(&plan, "acme", None, None, None).await;
    let route = |path: &str, features: &[&str], permissions: &[&str]| pb::CreateRouteRequest {
        method: "GET".into(),
        path_pattern: path.into(),
        policy: pb::RoutePolicy::Require as i32,
        required_feature_keys: features.iter().map(|f| (*f).into()).collect(),
        required_permission_keys: permissions.iter().map(|p| (*p).into()).collect(),
        ..Default::default()
    };
    let mut routes = app.routes.clone();
    let only_sso = routes
        .create_route(route("/sso/**", &["sso"], &[]))
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap();
    let sso_and_audit = routes
        .create_route(route("/audit/**", &["sso", "audit"], &[]))
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap();
    let sso_and_permission = routes
        .create_route(route("/admin/**", &["sso"], &["admin.read"]))
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap();
    // Only routes depend on `sso` once it is unlinked from the plan: still in use.
    app.plans
        .clone()
        .unlink_plan_features(pb::UnlinkPlanFeaturesRequest {
            plan_id: plan.id.clone(),
            feature_keys: vec!["sso".into()],
            ..Default::default()
        })
        .await
        .unwrap();
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
    assert!(err.message().contains("3 route(s)"), "{}", err.message());

    let deleted = app
        .features
        .clone()
        .delete_feature(pb::DeleteFeatureRequest {
            id: sso.id.clone(),
            force: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut updated = deleted.updated_route_ids.clone();
    updated.sort();
    let mut expected = vec![sso_and_audit.id.clone(), sso_and_permission.id.clone()];
    expected.sort();
    assert_eq!(updated, expected);
    assert_eq!(deleted.deleted_route_ids, vec![only_sso.id.clone()]);

    // The route that required only `sso` is gone (no route matches any more); the others
    // keep their remaining requirements.
    let err = routes
        .get_route(pb::GetRouteRequest {
            id: only_sso.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let audit_route = routes
        .get_route(pb::GetRouteRequest {
            id: sso_and_audit.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap();
    assert_eq!(audit_route.required_feature_keys, vec!["audit".to_owned()]);
    let admin_route = routes
        .get_route(pb::GetRouteRequest {
            id: sso_and_permission.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .route
        .unwrap();
    assert!(admin_route.required_feature_keys.is_empty());
    assert_eq!(
        admin_route.required_permission_keys,
        vec!["admin.read".to_owned()]
    );

    let get = |path: &str| {
        pb::entitlement_query::Target::Route(pb::RouteTarget {
            method: "GET".into(),
            path: path.into(),
        })
    };
    let check = |path: &'static str, perms: &'static [&'static str]| {
        app.check_with(
            "acme",
            None,
            perms,
            None,
            get(path),
            None,
            None,
            deleted.revision,
        )
    };
    let d = check("/audit/x", &[]).await.unwrap();
    assert!(d.result, "audit is still granted: {d:?}");
    let d = check("/sso/x", &[]).await.unwrap();
    assert_eq!(justification(&d), pb::Justification::MissingRoute);
    let d = check("/admin/x", &["admin.read"]).await.unwrap();
    assert!(d.result, "{d:?}");
    let d = check("/admin/x", &[]).await.unwrap();
    assert_eq!(justification(&d), pb::Justification::MissingPermission);
}
