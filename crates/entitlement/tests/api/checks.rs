//! Every justification, time boundaries with the injected clock, merge policies, flags and
//! every rule operator, permissions and routes.

use chrono::Duration;
use serde_json::json;
use tenantry_proto::entitlement::v1::{self as pb, entitlement_query::Target};

use crate::helpers::*;

#[tokio::test]
async fn justifications_and_time_boundaries() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    app.feature(
        "seats",
        pb::AllocationType::MaxCount,
        pb::MergePolicy::Sum,
        &[],
    )
    .await;
    let pro = app
        .plan("pro", vec![bare("sso"), count("seats", 5)], false)
        .await;
    let now = app.clock.now_for_tests();
    let (g, rev) = app
        .grant(
            &pro,
            "acme",
            None,
            Some(now + Duration::hours(1)),
            Some(now + Duration::hours(3)),
        )
        .await;

    // Before the start: NOT_STARTED, and the answer says when it changes.
    let d = app
        .check("acme", None, feature_target("sso"), None, rev)
        .await
        .unwrap();
    assert!(!d.result);
    assert_eq!(justification(&d), pb::Justification::NotStarted);
    assert_eq!(d.next_change_at, Some(ts(now + Duration::hours(1))));
    assert_eq!(d.provenance.as_ref().unwrap().grant_id, g.id);

    // Exactly at the start (clock moved): active.
    app.clock.set(now + Duration::hours(1));
    let d = app
        .check("acme", None, feature_target("sso"), None, 0)
        .await
        .unwrap();
    assert!(d.result, "{d:?}");
    let p = d.provenance.unwrap();
    assert_eq!(
        (p.plan_key.as_str(), p.level),
        ("pro", pb::GrantLevel::Account as i32)
    );

    // One microsecond before the expiry: active; at the expiry: PLAN_EXPIRED (end exclusive).
    let expiry = now + Duration::hours(3);
    let d = app
        .check(
            "acme",
            None,
            feature_target("sso"),
            Some(expiry - Duration::microseconds(1)),
            0,
        )
        .await
        .unwrap();
    assert!(d.result);
    app.clock.set(expiry);
    let d = app
        .check("acme", None, feature_target("sso"), None, 0)
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::PlanExpired);

    // Revoked: PLAN_REVOKED.
    app.clock.set(now + Duration::hours(2));
    let r = app
        .grants
        .clone()
        .revoke_grant(pb::RevokeGrantRequest {
            id: g.id.clone(),
            reason: Some("churn".into()),
        })
        .await
        .unwrap()
        .into_inner();
    let d = app
        .check("acme", None, feature_target("sso"), None, r.revision)
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::PlanRevoked);

    // Unknown feature, unknown tenant.
    let d = app
        .check("acme", None, feature_target("nope"), None, 0)
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::MissingFeature);
    let d = app
        .check("ghost", None, feature_target("sso"), None, 0)
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::TenantNotFound);

    // LIMIT_EXCEEDED with stacked SUM grants: 5 + 5 = 10.
    let (_, _) = app.grant(&pro, "acme", None, None, None).await;
    let (_, rev) = app.grant(&pro, "acme", None, None, None).await;
    let d = app
        .check_with(
            "acme",
            None,
            &[],
            None,
            feature_target("seats"),
            None,
            Some(10),
            rev,
        )
        .await
        .unwrap();
    assert!(d.result, "{d:?}");
    let d = app
        .check_with(
            "acme",
            None,
            &[],
            None,
            feature_target("seats"),
            None,
            Some(11),
            rev,
        )
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::LimitExceeded);

    // No target: INVALID_ARGUMENT.
    let err = app
        .checks
        .clone()
        .is_entitled_to(pb::IsEntitledToRequest {
            query: Some(pb::EntitlementQuery {
                subject: Some(pb::Subject {
                    tenant_id: "acme".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            min_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn user_account_and_inherited_grants_with_merge_policies() {
    let app = spawn_app().await;
    app.account("root", None).await;
    app.account("child", Some("root")).await;
    app.bool_feature("sso").await;
    app.feature(
        "seats",
        pb::AllocationType::MaxCount,
        pb::MergePolicy::Max,
        &[],
    )
    .await;
    let org = app
        .plan("org", vec![bare("sso"), count("seats", 50)], true)
        .await;
    let team = app.plan("team", vec![count("seats", 7)], false).await;
    app.grant(&org, "root", None, None, None).await;
    app.grant(&team, "child", Some("alice"), None, None).await;
    let (_, rev) = app.grant(&team, "child", None, None, None).await;

    // The hierarchy arrives through the tenant feed: wait for the inherited grant.
    app.eventually("child inherits sso from root", || async {
        app.check("child", None, feature_target("sso"), None, rev)
            .await
            .unwrap()
            .result
    })
    .await;
    let d = app
        .check("child", None, feature_target("sso"), None, 0)
        .await
        .unwrap();
    let p = d.provenance.unwrap();
    assert_eq!(p.level, pb::GrantLevel::Ancestor as i32);
    assert_eq!(p.granted_tenant_id, "root");
    // MAX: the inherited 50 beats the own 7.
    let d = app
        .check("child", Some("alice"), feature_target("seats"), None, 0)
        .await
        .unwrap();
    assert_eq!(
        d.allocation.unwrap().kind,
        Some(pb::allocation::Kind::MaxCountAllocation(
            pb::MaxCountAllocation {
                value: 50,
                unlimited: false
            }
        ))
    );
    // A user-level grant is seen only for that user.
    let user = app
        .checks
        .clone()
        .get_account_entitlements(pb::GetAccountEntitlementsRequest {
            tenant_id: "child".into(),
            user_id: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&str> = user
        .entitlements
        .iter()
        .map(|e| e.feature_key.as_str())
        .collect();
    assert_eq!(keys, vec!["seats", "sso"]);
}

#[tokio::test]
async fn flags_and_every_rule_operator() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("beta").await;
    let plan = app.plan("beta-plan", vec![bare("beta")], false).await;
    let (_, _) = app.grant(&plan, "acme", None, None, None).await;
    // (operator, value, attributes that match, attributes that do not)
    let cases = [
        (
            "in_list",
            json!({"list": ["gold"]}),
            json!({"a": "gold"}),
            json!({"a": "tin"}),
        ),
        (
            "starts_with",
            json!({"list": ["go"]}),
            json!({"a": "gold"}),
            json!({"a": "tin"}),
        ),
        (
            "ends_with",
            json!({"list": ["ld"]}),
            json!({"a": "gold"}),
            json!({"a": "tin"}),
        ),
        (
            "contains",
            json!({"list": ["ol"]}),
            json!({"a": "gold"}),
            json!({"a": "tin"}),
        ),
        (
            "matches",
            json!({"string": "^g.*d$"}),
            json!({"a": "gold"}),
            json!({"a": "tin"}),
        ),
        (
            "equal",
            json!({"number": 5}),
            json!({"a": 5}),
            json!({"a": 6}),
        ),
        (
            "greater_than",
            json!({"number": 5}),
            json!({"a": 6}),
            json!({"a": 5}),
        ),
        (
            "greater_than_equal",
            json!({"number": 5}),
            json!({"a": 5}),
            json!({"a": 4}),
        ),
        (
            "lower_than",
            json!({"number": 5}),
            json!({"a": 4}),
            json!({"a": 5}),
        ),
        (
            "lower_than_equal",
            json!({"number": 5}),
            json!({"a": 5}),
            json!({"a": 6}),
        ),
        (
            "between_numeric",
            json!({"start": 1, "end": 3}),
            json!({"a": 2}),
            json!({"a": 4}),
        ),
        (
            "is",
            json!({"boolean": true}),
            json!({"a": true}),
            json!({"a": false}),
        ),
        (
            "on",
            json!({"date": "2025-01-02T00:00:00Z"}),
            json!({"a": "2025-01-02T10:00:00Z"}),
            json!({"a": "2025-01-03T00:00:00Z"}),
        ),
        (
            "between_date",
            json!({"start": "2025-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}),
            json!({"a": "2025-01-15T00:00:00Z"}),
            json!({"a": "2025-03-01T00:00:00Z"}),
        ),
        (
            "on_or_after",
            json!({"date": "2025-01-02T00:00:00Z"}),
            json!({"a": "2025-01-02T00:00:00Z"}),
            json!({"a": "2025-01-01T00:00:00Z"}),
        ),
        (
            "on_or_before",
            json!({"date": "2025-01-02T00:00:00Z"}),
            json!({"a": "2025-01-02T00:00:00Z"}),
            json!({"a": "2025-01-03T00:00:00Z"}),
        ),
    ];
    let mut flag_id: Option<String> = None;
    for (op, value, yes, no) in cases {
        let op_enum =
            pb::ConditionOp::from_str_name(&format!("CONDITION_OP_{}", op.to_uppercase())).unwrap();
        let rules = vec![pb::TargetingRule {
            description: String::new(),
            condition_logic: pb::ConditionLogic::And as i32,
            conditions: vec![pb::Condition {
                attribute: "a".into(),
                attribute_type: pb::AttributeType::Custom as i32,
                negate: false,
                op: op_enum as i32,
                value: serde_json_to_struct(&value),
            }],
            treatment: pb::Treatment::True as i32,
        }];
        let revision = match &flag_id {
            None => {
                let r = app
                    .flags
                    .clone()
                    .create_feature_flag(pb::CreateFeatureFlagRequest {
                        name: "beta gate".into(),
                        on: true,
                        off_treatment: pb::Treatment::False as i32,
                        default_treatment: pb::Treatment::False as i32,
                        feature: Some(pb::create_feature_flag_request::Feature::FeatureKey(
                            "beta".into(),
                        )),
                        rules,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                flag_id = Some(r.feature_flag.unwrap().id);
                r.revision
            }
            Some(id) => {
                app.flags
                    .clone()
                    .update_feature_flag(pb::UpdateFeatureFlagRequest {
                        id: id.clone(),
                        rules: Some(pb::TargetingRuleList { rules }),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .revision
            }
        };
        let d = app
            .check_with(
                "acme",
                None,
                &[],
                Some(yes),
                feature_target("beta"),
                None,
                None,
                revision,
            )
            .await
            .unwrap();
        assert!(d.result, "{op} should match: {d:?}");
        let d = app
            .check_with(
                "acme",
                None,
                &[],
                Some(no),
                feature_target("beta"),
                None,
                None,
                revision,
            )
            .await
            .unwrap();
        assert_eq!(justification(&d), pb::Justification::FeatureFlagOff, "{op}");
    }
}

#[tokio::test]
async fn permissions_and_routes() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.feature(
        "reports",
        pb::AllocationType::Bool,
        pb::MergePolicy::Unspecified,
        &["reports.read"],
    )
    .await;
    let plan = app.plan("pro", vec![bare("reports")], false).await;
    app.grant(&plan, "acme", None, None, None).await;
    let route = |method: &str, path: &str, policy: pb::RoutePolicy, features: Vec<String>| {
        let mut routes = app.routes.clone();
        let req = pb::CreateRouteRequest {
            method: method.into(),
            path_pattern: path.into(),
            policy: policy as i32,
            required_feature_keys: features,
            ..Default::default()
        };
        async move {
            routes
                .create_route(req)
                .await
                .unwrap()
                .into_inner()
                .revision
        }
    };
    route(
        "GET",
        "/api/reports/**",
        pb::RoutePolicy::Require,
        vec!["reports".into()],
    )
    .await;
    route("GET", "/public/**", pb::RoutePolicy::Allow, vec![]).await;
    let rev = route("*", "/admin/**", pb::RoutePolicy::Deny, vec![]).await;

    let perm = |p: &str| Target::PermissionKey(p.into());
    let d = app
        .check_with(
            "acme",
            None,
            &[],
            None,
            perm("reports.read"),
            None,
            None,
            rev,
        )
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::MissingPermission);
    let d = app
        .check_with(
            "acme",
            None,
            &["reports.read"],
            None,
            perm("reports.read"),
            None,
            None,
            rev,
        )
        .await
        .unwrap();
    assert!(d.result);
    // The linked feature that decided is named.
    assert_eq!(
        pb::AllowReason::try_from(d.allow_reason).unwrap(),
        pb::AllowReason::Grant
    );
    let p = d.provenance.unwrap();
    assert_eq!(p.feature_key, "reports");
    assert_eq!(p.plan_key, "pro");
    let d = app
        .check_with(
            "acme",
            None,
            &["other"],
            None,
            perm("other"),
            None,
            None,
            rev,
        )
        .await
        .unwrap();
    assert_eq!(
        pb::AllowReason::try_from(d.allow_reason).unwrap(),
        pb::AllowReason::UngatedPermission
    );

    let r = |m: &str, p: &str| {
        Target::Route(pb::RouteTarget {
            method: m.into(),
            path: p.into(),
        })
    };
    // A Require route met: its own reason, and the required feature that decided.
    let d = app
        .check("acme", None, r("GET", "/api/reports/1"), None, rev)
        .await
        .unwrap();
    assert!(d.result);
    assert_eq!(
        pb::AllowReason::try_from(d.allow_reason).unwrap(),
        pb::AllowReason::RouteRequirementsMet
    );
    let p = d.provenance.unwrap();
    assert_eq!(p.feature_key, "reports");
    assert!(!p.route_id.is_empty());
    // An Allow route: allowed with no grant involved.
    let d = app
        .check("acme", None, r("GET", "/public/logo.png"), None, rev)
        .await
        .unwrap();
    assert!(d.result);
    assert_eq!(
        pb::AllowReason::try_from(d.allow_reason).unwrap(),
        pb::AllowReason::RouteAllow
    );
    assert_eq!(d.provenance, None);
    let d = app
        .check("acme", None, r("GET", "/admin/users"), None, rev)
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::RouteDenied);
    let d = app
        .check("acme", None, r("GET", "/elsewhere"), None, rev)
        .await
        .unwrap();
    assert_eq!(justification(&d), pb::Justification::MissingRoute);
}

#[tokio::test]
async fn plans_applying_by_targeting_report_the_targeting_level() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("reports").await;
    let written = app
        .plans
        .clone()
        .create_plan(pb::CreatePlanRequest {
            key: Some("gold".into()),
            name: "gold".into(),
            features: vec![bare("reports")],
            rules: vec![pb::TargetingRule {
                conditions: vec![pb::Condition {
                    attribute: "tier".into(),
                    op: pb::ConditionOp::InList as i32,
                    value: serde_json_to_struct(&serde_json::json!({"list": ["gold"]})),
                    ..Default::default()
                }],
                treatment: pb::Treatment::True as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let gold = written.plan.unwrap();
    let attrs = serde_json::json!({"tier": "gold"});
    let check = || {
        app.check_with(
            "acme",
            None,
            &[],
            Some(attrs.clone()),
            feature_target("reports"),
            None,
            None,
            written.revision,
        )
    };
    // The account reaches the index through the tenant change feed.
    app.eventually("acme is known", || async {
        check()
            .await
            .is_ok_and(|d| justification(&d) != pb::Justification::TenantNotFound)
    })
    .await;
    let d = check().await.unwrap();
    assert!(d.result, "{d:?}");
    let p = d.provenance.unwrap();
    assert_eq!(
        pb::GrantLevel::try_from(p.level).unwrap(),
        pb::GrantLevel::Targeting
    );
    assert_eq!(p.grant_id, "");
    assert_eq!(p.plan_id, gold.id);
    assert_eq!(p.plan_key, "gold");
    assert_eq!(p.granted_tenant_id, "acme");
    assert_eq!(p.feature_key, "reports");

    // The account listing says the same.
    let listed = app
        .checks
        .clone()
        .get_account_entitlements(pb::GetAccountEntitlementsRequest {
            tenant_id: "acme".into(),
            attributes: serde_json_to_struct(&attrs),
            min_revision: written.revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let p = listed.entitlements[0].provenance.clone().unwrap();
    assert_eq!(
        pb::GrantLevel::try_from(p.level).unwrap(),
        pb::GrantLevel::Targeting
    );
    assert_eq!(p.grant_id, "");

    // With a grant of the plan as well, the grant decides at account level.
    let (_, rev) = app.grant(&gold, "acme", None, None, None).await;
    let d = app
        .check_with(
            "acme",
            None,
            &[],
            Some(attrs.clone()),
            feature_target("reports"),
            None,
            None,
            rev,
        )
        .await
        .unwrap();
    assert_eq!(
        pb::GrantLevel::try_from(d.provenance.unwrap().level).unwrap(),
        pb::GrantLevel::Account
    );
}

#[tokio::test]
async fn deep_or_oversized_attributes_are_invalid_argument_with_the_field() {
    let app = spawn_app().await;
    let nested = |levels: usize| {
        let mut v = serde_json::json!(1);
        for _ in 0..levels {
            v = serde_json::json!({ "a": v });
        }
        v
    };
    for attributes in [
        nested(11),
        serde_json::json!({ "big": "x".repeat(17 * 1024) }),
        serde_json::Value::Object(
            (0..300)
                .map(|i| (format!("k{i}"), serde_json::json!(i)))
                .collect(),
        ),
    ] {
        let err = app
            .check_with(
                "acme",
                None,
                &[],
                Some(attributes),
                feature_target("sso"),
                None,
                None,
                0,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("attributes"),
            "names the field: {err:?}"
        );
    }
    // Strings and lists of the query are bounded too.
    let huge = "x".repeat(512 * 1024);
    let many: Vec<String> = (0..1_001).map(|i| format!("p{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for (user, permissions, target) in [
        (Some(huge.as_str()), vec![], feature_target("sso")),
        (None, vec![huge.as_str()], feature_target("sso")),
        (None, many, feature_target("sso")),
        (None, vec![], feature_target(&huge)),
        (
            None,
            vec![],
            Target::Route(pb::RouteTarget {
                method: "GET".into(),
                path: huge.clone(),
            }),
        ),
    ] {
        let err = app
            .check_with("acme", user, &permissions, None, target, None, None, 0)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    }
    // Within the limits: answered.
    app.check_with(
        "acme",
        None,
        &[],
        Some(nested(10)),
        feature_target("sso"),
        None,
        None,
        0,
    )
    .await
    .unwrap();
}
