//! Explain (targeting, matched route) and WhatIf with several hypothetical changes.

use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

fn grant_change(plan_key: &str) -> pb::HypotheticalChange {
    pb::HypotheticalChange {
        change: Some(pb::hypothetical_change::Change::Grant(pb::NewGrant {
            plan: Some(pb::new_grant::Plan::PlanKey(plan_key.into())),
            ..Default::default()
        })),
    }
}

fn revoke_plan(plan: &str) -> pb::HypotheticalChange {
    pb::HypotheticalChange {
        change: Some(pb::hypothetical_change::Change::RevokePlan(plan.into())),
    }
}

fn revoke_grant(id: &str) -> pb::HypotheticalChange {
    pb::HypotheticalChange {
        change: Some(pb::hypothetical_change::Change::RevokeGrantId(id.into())),
    }
}

fn keys(list: &[pb::FeatureChange]) -> Vec<&str> {
    list.iter().map(|c| c.feature_key.as_str()).collect()
}

fn max_count(c: &pb::FeatureChange) -> (Option<u64>, Option<u64>) {
    let n = |a: &Option<pb::Allocation>| match a.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::allocation::Kind::MaxCountAllocation(m)) => Some(m.value),
        Some(pb::allocation::Kind::BoolAllocation(_)) | None => None,
    };
    (n(&c.before), n(&c.after))
}

#[tokio::test]
async fn what_if_applies_several_changes_in_order() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    app.bool_feature("audit").await;
    app.feature(
        "seats",
        pb::AllocationType::MaxCount,
        pb::MergePolicy::Max,
        &[],
    )
    .await;
    let basic = app
        .plan("basic", vec![bare("sso"), count("seats", 5)], false)
        .await;
    app.plan("pro", vec![bare("audit"), count("seats", 20)], false)
        .await;
    let (held, rev) = app.grant(&basic, "acme", None, None, None).await;
    let what_if = |changes: Vec<pb::HypotheticalChange>| {
        let mut client = app.checks.clone();
        async move {
            client
                .what_if(pb::WhatIfRequest {
                    tenant_id: "acme".into(),
                    changes,
                    min_revision: rev,
                    ..Default::default()
                })
                .await
        }
    };

    // Swap basic for pro: sso lost, audit gained, seats 5 -> 20.
    let swap = what_if(vec![revoke_plan(&basic.id), grant_change("pro")])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&swap.gained), vec!["audit"]);
    assert_eq!(keys(&swap.lost), vec!["sso"]);
    assert_eq!(keys(&swap.changed), vec!["seats"]);
    assert_eq!(max_count(&swap.changed[0]), (Some(5), Some(20)));
    assert!(swap.revision >= rev);

    // Granting pro and then revoking it by key leaves nothing; revoking the held grant by id
    // after the plan by key is the same as the plan alone.
    let nothing = what_if(vec![grant_change("pro"), revoke_plan("pro")])
        .await
        .unwrap()
        .into_inner();
    assert!(nothing.gained.is_empty() && nothing.lost.is_empty() && nothing.changed.is_empty());
    let both = what_if(vec![revoke_plan("basic"), revoke_grant(&held.id)])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&both.lost), vec!["seats", "sso"]);

    // A bad change anywhere in the list refuses the call.
    let err = what_if(vec![grant_change("pro"), revoke_plan("no-such-plan")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = what_if(vec![]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = what_if(vec![grant_change("pro"); 101]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = what_if(vec![
        grant_change("pro"),
        pb::HypotheticalChange { change: None },
    ])
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(details(&err).field_violations[0].field, "changes[1]");
}

#[tokio::test]
async fn explain_fills_targeting_and_the_matched_route() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("reports").await;
    let basic = app.plan("basic", vec![bare("reports")], false).await;
    // `gold` also targets subjects with tier=gold (its grant is explained either way).
    let gold = app
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
        .into_inner()
        .plan
        .unwrap();
    app.grant(&basic, "acme", None, None, None).await;
    app.grant(&gold, "acme", None, None, None).await;
    let mut routes = app.routes.clone();
    let create =
        |path: &str, policy: pb::RoutePolicy, features: Vec<String>| pb::CreateRouteRequest {
            method: "GET".into(),
            path_pattern: path.into(),
            policy: policy as i32,
            required_feature_keys: features,
            ..Default::default()
        };
    let broad = routes
        .create_route(create("/api/**", pb::RoutePolicy::Allow, vec![]))
        .await
        .unwrap()
        .into_inner();
    let specific = routes
        .create_route(create(
            "/api/reports/*",
            pb::RoutePolicy::Require,
            vec!["reports".into()],
        ))
        .await
        .unwrap()
        .into_inner();
    let rev = specific.revision;

    let explain = |target: pb::entitlement_query::Target, attrs: Option<serde_json::Value>| {
        let mut client = app.checks.clone();
        async move {
            client
                .explain(pb::ExplainRequest {
                    query: Some(pb::EntitlementQuery {
                        subject: Some(pb::Subject {
                            tenant_id: "acme".into(),
                            attributes: attrs.as_ref().and_then(serde_json_to_struct),
                            ..Default::default()
                        }),
                        target: Some(target),
                        ..Default::default()
                    }),
                    min_revision: rev,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let targeted = |e: &pb::ExplainResponse| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = e
            .grants
            .iter()
            .map(|g| (g.plan_key.clone(), g.targeted))
            .collect();
        v.sort();
        v
    };
    let plain = explain(feature_target("reports"), None).await;
    assert_eq!(
        targeted(&plain),
        vec![("basic".into(), false), ("gold".into(), false)]
    );
    assert_eq!(plain.matched_route_id, None);
    let gold_subject = explain(
        feature_target("reports"),
        Some(serde_json::json!({"tier": "gold"})),
    )
    .await;
    assert_eq!(
        targeted(&gold_subject),
        vec![("basic".into(), false), ("gold".into(), true)]
    );

    let route = |path: &str| {
        pb::entitlement_query::Target::Route(pb::RouteTarget {
            method: "GET".into(),
            path: path.into(),
        })
    };
    let by_specific = explain(route("/api/reports/7"), None).await;
    let specific_id = specific.route.unwrap().id;
    assert_eq!(
        by_specific.matched_route_id.as_deref(),
        Some(specific_id.as_str())
    );
    let decision = by_specific.decision.unwrap();
    assert!(decision.result);
    assert_eq!(decision.provenance.unwrap().route_id, specific_id);
    let by_broad = explain(route("/api/other"), None).await;
    assert_eq!(
        by_broad.matched_route_id.as_deref(),
        Some(broad.route.unwrap().id.as_str())
    );
    let none = explain(route("/elsewhere"), None).await;
    assert_eq!(none.matched_route_id, None);
    assert_eq!(
        justification(&none.decision.unwrap()),
        pb::Justification::MissingRoute
    );
}

/// (balance, usage, pool owner, user) of a meter on the wire.
type Reading<'a> = (Option<i64>, i64, Option<&'a str>, Option<&'a str>);

fn reading(m: &Option<pb::MeterReading>) -> Option<Reading<'_>> {
    m.as_ref().map(|m| {
        (
            m.balance,
            m.usage,
            m.owner_tenant_id.as_deref(),
            m.user_id.as_deref(),
        )
    })
}

fn amount(d: &Option<pb::AmountDecision>) -> (bool, pb::Justification, pb::AllowReason) {
    let d = d.as_ref().expect("a metered feature's decision");
    (d.result, d.justification(), d.allow_reason())
}

#[tokio::test]
async fn what_if_answers_a_metered_feature_with_its_meters_and_decisions() {
    for app in [spawn_app().await, spawn_sqlite_app().await] {
        app.account("org", None).await;
        app.account("team", Some("org")).await;
        app.features
            .clone()
            .create_feature(pb::CreateFeatureRequest {
                key: "calls".into(),
                name: "calls".into(),
                allocation_type: pb::AllocationType::Metered.into(),
                metering: Some(pb::Metering {
                    unit: "call".into(),
                    recurrence: "DAY".into(),
                    anchor: Some(ts(start_time() - chrono::TimeDelta::hours(1))),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("metered feature");
        let pool = app.plan("pool", vec![count("calls", 100)], true).await;
        app.plan("own", vec![count("calls", 10)], false).await;
        app.grant(&pool, "org", None, None, None).await;
        // team draws on org's pool once the feed has put it under org.
        app.eventually("team draws on org's pool", || async {
            app.check("team", None, feature_target("calls"), None, 0)
                .await
                .is_ok_and(|d| {
                    d.meter
                        .is_some_and(|m| m.owner_tenant_id.as_deref() == Some("org"))
                })
        })
        .await;
        let recorded = pb::metering_service_client::MeteringServiceClient::new(app.channel.clone())
            .record_usage(pb::RecordUsageRequest {
                events: vec![pb::UsageEvent {
                    id: "e1".into(),
                    tenant_id: "team".into(),
                    feature_key: "calls".into(),
                    amount: 30,
                    ..Default::default()
                }],
            })
            .await
            .expect("usage")
            .into_inner();
        let ask = |user: Option<&str>, change: pb::HypotheticalChange, requested: Option<i64>| {
            let mut client = app.checks.clone();
            let request = pb::WhatIfRequest {
                tenant_id: "team".into(),
                user_id: user.map(str::to_owned),
                changes: vec![change],
                min_revision: recorded.revision,
                requested_amount: requested,
                ..Default::default()
            };
            async move { client.what_if(request).await }
        };

        // Its own 10 would take team off the pool: 20 fits now, not then.
        let w = ask(None, grant_change("own"), Some(20))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(keys(&w.changed), vec!["calls"]);
        let c = &w.changed[0];
        assert_eq!(max_count(c), (Some(100), Some(10)));
        assert_eq!(
            reading(&c.meter_before),
            Some((Some(70), 30, Some("org"), None))
        );
        assert_eq!(reading(&c.meter_after), Some((Some(10), 0, None, None)));
        assert_eq!(
            amount(&c.decision_before),
            (true, pb::Justification::Unspecified, pb::AllowReason::Grant)
        );
        assert_eq!(
            amount(&c.decision_after),
            (
                false,
                pb::Justification::InsufficientBalance,
                pb::AllowReason::Unspecified
            )
        );

        // A user granted `own` itself: its own meter, named.
        let to_user = pb::HypotheticalChange {
            change: Some(pb::hypothetical_change::Change::Grant(pb::NewGrant {
                plan: Some(pb::new_grant::Plan::PlanKey("own".into())),
                user_id: Some("ann".into()),
                ..Default::default()
            })),
        };
        let w = ask(Some("ann"), to_user, None).await.unwrap().into_inner();
        assert_eq!(
            reading(&w.changed[0].meter_after),
            Some((Some(10), 0, None, Some("ann")))
        );

        // Not a consumption's amount: refused, naming the field.
        for bad in [0, 1_000_000_000_000_001] {
            let err = ask(None, grant_change("own"), Some(bad)).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert_eq!(details(&err).field_violations[0].field, "requested_amount");
        }
    }
}
