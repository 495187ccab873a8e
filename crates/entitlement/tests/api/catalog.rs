//! Catalog rules: deleting what is in use, force, key renames.

use tenantry_proto::common::v1 as pb_common;
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

#[tokio::test]
async fn unknown_features_and_accounts_are_not_found() {
    let app = spawn_app().await;
    app.bool_feature("sso").await;

    // A flag and a plan naming an unknown feature get the same code.
    let err = app
        .flags
        .clone()
        .create_feature_flag(pb::CreateFeatureFlagRequest {
            name: "ghost flag".into(),
            off_treatment: pb::Treatment::False as i32,
            default_treatment: pb::Treatment::True as i32,
            feature: Some(pb::create_feature_flag_request::Feature::FeatureKey(
                "ghost".into(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("ghost"), "{}", err.message());
    let err = app
        .flags
        .clone()
        .create_feature_flag(pb::CreateFeatureFlagRequest {
            name: "ghost flag".into(),
            off_treatment: pb::Treatment::False as i32,
            default_treatment: pb::Treatment::True as i32,
            feature: Some(pb::create_feature_flag_request::Feature::FeatureId(
                uuid::Uuid::now_v7().to_string(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = app
        .plans
        .clone()
        .create_plan(pb::CreatePlanRequest {
            key: Some("pro".into()),
            name: "pro".into(),
            features: vec![bare("ghost")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // The plans of an account the hierarchy copy does not know.
    let err = app
        .plans
        .clone()
        .list_tenant_plans(pb::ListTenantPlansRequest {
            tenant_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // A live account (once the change feed brought it) is listed.
    app.account("acme", None).await;
    let list = || {
        let mut plans = app.plans.clone();
        async move {
            plans
                .list_tenant_plans(pb::ListTenantPlansRequest {
                    tenant_id: "acme".into(),
                    ..Default::default()
                })
                .await
        }
    };
    app.eventually("acme is known", || async { list().await.is_ok() })
        .await;
    // A deleted account is unknown again.
    app.delete_account("acme").await;
    app.eventually("acme is gone", || async {
        list()
            .await
            .is_err_and(|e| e.code() == tonic::Code::NotFound)
    })
    .await;
}

#[tokio::test]
async fn feature_flags_list_in_the_requested_order() {
    let app = spawn_app().await;
    let mut flags = app.flags.clone();
    // Created in this order, named in another.
    let mut ids = Vec::new();
    for (key, name) in [("a", "Charlie"), ("b", "alpha"), ("c", "Bravo")] {
        app.bool_feature(key).await;
        let flag = flags
            .create_feature_flag(pb::CreateFeatureFlagRequest {
                name: name.into(),
                off_treatment: pb::Treatment::False as i32,
                default_treatment: pb::Treatment::True as i32,
                feature: Some(pb::create_feature_flag_request::Feature::FeatureKey(
                    key.into(),
                )),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .feature_flag
            .unwrap();
        ids.push(flag.id);
        app.clock.advance(chrono::Duration::seconds(1));
    }
    // Touch the first one last.
    flags
        .update_feature_flag(pb::UpdateFeatureFlagRequest {
            id: ids[0].clone(),
            on: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let names = |sort_by: pb::FeatureFlagSortField, order: pb_common::SortOrder| {
        let mut flags = app.flags.clone();
        async move {
            flags
                .list_feature_flags(pb::ListFeatureFlagsRequest {
                    sort_by: sort_by as i32,
                    order: order as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .feature_flags
                .into_iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
        }
    };
    use pb::FeatureFlagSortField as F;
    use pb_common::SortOrder as O;
    let created = ["Charlie", "alpha", "Bravo"];
    assert_eq!(names(F::Unspecified, O::Unspecified).await, created);
    assert_eq!(names(F::CreatedAt, O::Asc).await, created);
    assert_eq!(
        names(F::CreatedAt, O::Desc).await,
        ["Bravo", "alpha", "Charlie"]
    );
    // Names compare as stored (byte order, as the feature and plan lists do).
    assert_eq!(names(F::Name, O::Asc).await, ["Bravo", "Charlie", "alpha"]);
    assert_eq!(names(F::Name, O::Desc).await, ["alpha", "Charlie", "Bravo"]);
    assert_eq!(
        names(F::UpdatedAt, O::Asc).await,
        ["alpha", "Bravo", "Charlie"]
    );
}
