//! Checks: ours with provenance (user and environment tokens), coalescing, route and permission
//! checks, Frontegg's agent endpoints.

use super::*;

#[tokio::test]
async fn checks_with_user_and_environment_tokens_and_provenance() {
    let s = spawn_stack().await;
    let (pro, grant_ids, rev) = catalog_with_grant(&s).await;

    // Read-your-write: `minRevision` from the write's `x-tenantry-revision`.
    let r = s.reports_check_at(rev).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        keys(&r.body),
        set(&[
            "result",
            "justification",
            "allowReason",
            "allocation",
            "provenance",
            "nextChangeAt",
            "revision"
        ])
    );
    assert_eq!(r.body["result"], true);
    assert_eq!(r.body["justification"], Value::Null);
    assert_eq!(r.body["allowReason"], "GRANT");
    assert_eq!(r.body["allocation"], json!({"type": "bool", "value": true}));
    assert_eq!(
        r.body["provenance"],
        json!({"grantId": grant_ids[0], "planId": id(&pro), "planKey": "pro",
               "level": "account", "grantedTenantId": "acme", "featureKey": "reports",
               "routeId": ""})
    );
    assert_eq!(r.body["nextChangeAt"], Value::Null);
    assert!(r.body["revision"].as_u64().unwrap() >= rev);

    // A revision no write returned is the client's error (400 at once), not a stale answer
    // and not a request parked for the revision wait; 2^63 is beyond any revision too.
    for beyond in [rev + 1_000_000, 1 << 63] {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"},
                        "minRevision": beyond}),
            )
            .await;
        assert_error_shape(&r, 400);
        assert_eq!(
            r.body["fieldViolations"][0]["field"],
            json!("minRevision"),
            "{:?}",
            r.body
        );
    }

    // Denials with their justification.
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "globex"}, "feature": {"featureKey": "reports"}}),
        )
        .await;
    assert_eq!(r.body["result"], false, "{:?}", r.body);
    assert_eq!(r.body["justification"], "MISSING_FEATURE");
    assert_eq!(r.body["allowReason"], Value::Null);
    assert_eq!(r.body["provenance"], Value::Null);
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "nobody"}, "feature": {"featureKey": "reports"}}),
        )
        .await;
    assert_eq!(r.body["justification"], "TENANT_NOT_FOUND", "{:?}", r.body);
    // max_count with a requested amount.
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "seats"},
                    "requestedAmount": 6}),
        )
        .await;
    assert_eq!(r.body["result"], false, "{:?}", r.body);
    assert_eq!(r.body["justification"], "LIMIT_EXCEEDED");
    assert_eq!(
        r.body["allocation"],
        json!({"type": "max_count", "value": 5})
    );
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "seats"},
                    "requestedAmount": 5}),
        )
        .await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);
    // Permissions: the environment token passes them in the body.
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "acme", "permissions": ["reports.read"]},
                    "permission": {"permissionKey": "reports.read"}}),
        )
        .await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);
    assert_eq!(r.body["allowReason"], "GRANT");
    assert_eq!(r.body["provenance"]["planKey"], "pro");
    assert_eq!(r.body["provenance"]["grantId"], grant_ids[0]);
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "acme"},
                    "permission": {"permissionKey": "reports.read"}}),
        )
        .await;
    assert_eq!(
        r.body["justification"], "MISSING_PERMISSION",
        "{:?}",
        r.body
    );
    // `at`: before the grant started.
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"},
                    "at": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.body["result"], false, "{:?}", r.body);
    assert_eq!(r.body["justification"], "NOT_STARTED");
    assert!(r.body["nextChangeAt"].is_string());

    // Inherited by the sub-account once the hierarchy reached the index.
    s.eventually("acme-eu inherits pro", || async {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "acme-eu"},
                        "feature": {"featureKey": "reports"}}),
            )
            .await;
        r.body["result"] == true
    })
    .await;
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "acme-eu"}, "feature": {"featureKey": "reports"}}),
        )
        .await;
    assert_eq!(r.body["provenance"]["level"], "ancestor");
    assert_eq!(r.body["provenance"]["grantedTenantId"], "acme");

    // Expiry by the service's clock.
    let trial = s
        .plan(json!({"name": "Trial", "key": "trial", "featureKeys": ["reports"]}))
        .await;
    let soon = (s.clock.now_for_tests() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, rev) = s
        .grant(json!([{"planId": id(&trial), "tenantId": "globex", "expirationDate": soon}]))
        .await;
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "globex"}, "feature": {"featureKey": "reports"},
                    "minRevision": rev}),
        )
        .await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);
    assert_eq!(r.body["provenance"]["planKey"], "trial");
    assert!(r.body["nextChangeAt"].is_string());
    s.clock.advance(chrono::Duration::hours(2));
    let r = s
        .post(
            CHECK,
            &json!({"subject": {"tenantId": "globex"}, "feature": {"featureKey": "reports"}}),
        )
        .await;
    assert_eq!(r.body["result"], false, "{:?}", r.body);
    assert_eq!(r.body["justification"], "PLAN_EXPIRED");
    assert_eq!(r.body["provenance"]["planKey"], "trial");

    // A user token: the subject's user and permissions come from the token.
    let alice = user_token(&user_claims("acme", "alice", &["reports.read"]));
    let r = s
        .app
        .post_json(
            CHECK,
            Some(&alice),
            &json!({"subject": {"tenantId": "acme", "permissions": ["seats.admin"]},
                    "permission": {"permissionKey": "reports.read"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["result"], true);
    let r = s
        .app
        .post_json(
            CHECK,
            Some(&alice),
            &json!({"subject": {"tenantId": "acme", "userId": "alice"},
                    "feature": {"featureKey": "reports"}}),
        )
        .await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);
    // A user grant shows at user level.
    let (user_grant, rev) = s
        .grant(json!([{"planId": id(&trial), "tenantId": "acme", "userId": "alice"}]))
        .await;
    let bob = user_token(&user_claims("acme", "bob", &[]));
    for (token, level) in [(&alice, "user"), (&bob, "account")] {
        let r = s
            .app
            .post_json(
                CHECK,
                Some(token),
                &json!({"subject": {"tenantId": "acme"},
                        "feature": {"featureKey": "reports"}, "minRevision": rev}),
            )
            .await;
        assert_eq!(r.body["provenance"]["level"], level, "{:?}", r.body);
    }
    let r = s
        .app
        .post_json(
            CHECK,
            Some(&alice),
            &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"}}),
        )
        .await;
    assert_eq!(r.body["provenance"]["grantId"], user_grant[0]);

    // Bad bodies.
    assert_error_shape(
        &s.post(CHECK, &json!({"subject": {"tenantId": "acme"}}))
            .await,
        400,
    );
    assert_error_shape(
        &s.post(
            CHECK,
            &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"},
                    "permission": {"permissionKey": "reports.read"}}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(
            CHECK,
            &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"},
                    "at": "yesterday"}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(CHECK, &json!({"feature": {"featureKey": "reports"}}))
            .await,
        400,
    );
    assert_error_shape(
        &s.app
            .post_json(
                CHECK,
                None,
                &json!({"subject": {"tenantId": "acme"},
                                            "feature": {"featureKey": "reports"}}),
            )
            .await,
        401,
    );

    // The batch: answers in request order from one revision.
    let r = s
        .post(
            CHECK_BATCH,
            &json!({"checks": [
                {"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"}},
                {"subject": {"tenantId": "globex"}, "feature": {"featureKey": "reports"}},
                {"subject": {"tenantId": "acme"}, "feature": {"featureKey": "seats"},
                 "requestedAmount": 9},
                {"subject": {"tenantId": "acme"}, "route": {"method": "GET", "path": "/x"}}
            ], "minRevision": rev}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(keys(&r.body), set(&["results", "revision"]));
    let results = r.body["results"].as_array().unwrap();
    let answers: Vec<(&Value, &Value)> = results
        .iter()
        .map(|d| (&d["result"], &d["justification"]))
        .collect();
    assert_eq!(
        answers,
        [
            (&json!(true), &Value::Null),
            (&json!(false), &json!("PLAN_EXPIRED")),
            (&json!(false), &json!("LIMIT_EXCEEDED")),
            (&json!(false), &json!("MISSING_ROUTE"))
        ]
    );
    assert_eq!(results[0]["provenance"]["planKey"], "pro");
    let r = s
        .app
        .post_json(
            CHECK_BATCH,
            Some(&alice),
            &json!({"checks": [
                {"subject": {"tenantId": "acme"}, "permission": {"permissionKey": "reports.read"}}
            ]}),
        )
        .await;
    assert_eq!(r.body["results"][0]["result"], true, "{:?}", r.body);
    assert_error_shape(&s.post(CHECK_BATCH, &json!({"checks": []})).await, 400);
    let r = s
        .post(
            CHECK_BATCH,
            &json!({"checks": [
                {"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"}},
                {"subject": {"tenantId": "acme"}}
            ]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "checks[1].feature");
}

/// Records the `checks` field of every coalesced batch call the gateway makes.
#[derive(Clone, Default)]
struct BatchSizes(Arc<std::sync::Mutex<Vec<u64>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for BatchSizes {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Checks(Option<u64>);
        impl tracing::field::Visit for Checks {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "checks" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        if attrs.metadata().name() == "entitlement.check_batch" {
            let mut checks = Checks(None);
            attrs.record(&mut checks);
            self.0.lock().unwrap().extend(checks.0);
        }
    }
}

#[tokio::test]
async fn reads_waiting_for_a_revision_are_bounded_and_the_rest_answered_503_at_once() {
    let s = spawn_stack_with(|c| c.max_revision_waiters = 1).await;
    let (pro, _, _) = catalog_with_grant(&s).await;
    // The index's revision once the accounts arrived (the tenant feed's commits take
    // revisions after the grant's): nothing else commits until this test writes.
    let rev = s.reports_check_at(0).await.body["revision"]
        .as_u64()
        .unwrap();
    // Another replica's commit whose change-log entry this replica cannot read yet: the
    // revision counter is one ahead of its index, so a check of that revision waits.
    tenantry_common::testing::execute(
        &s.db,
        "UPDATE entitlement.ent_revision SET value = value + 1 WHERE id = 1",
    )
    .await;

    // Three checks of it at once: one waits (the bound is 1) until a write reaches the
    // revision; the other two are refused before that write, retryable.
    let written = std::sync::atomic::AtomicBool::new(false);
    let check = || async {
        let r = s.reports_check_at(rev + 1).await;
        (r, written.load(std::sync::atomic::Ordering::SeqCst))
    };
    let (a, b, c, ()) = tokio::join!(check(), check(), check(), async {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        written.store(true, std::sync::atomic::Ordering::SeqCst);
        s.grant(json!([{"planId": id(&pro), "tenantId": "globex"}]))
            .await;
    });
    let (answered, refused): (Vec<_>, Vec<_>) =
        [a, b, c].into_iter().partition(|(r, _)| r.status == 200);
    assert_eq!(answered.len(), 1, "{answered:?} {refused:?}");
    assert_eq!(
        answered[0].0.body["result"], true,
        "{:?}",
        answered[0].0.body
    );
    assert!(
        answered[0].1,
        "the waiting check was answered before the write"
    );
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (r, after_write) in refused {
        assert_error_shape(&r, 503);
        assert_eq!(r.body["reason"], "REVISION_WAITERS_FULL", "{:?}", r.body);
        assert_eq!(r.headers["retry-after"], "1");
        assert!(!after_write, "refused only after waiting: {:?}", r.body);
    }

    // The document says so: the check routes answer this 503 with `Retry-After`, and a
    // revision beyond a signed 64-bit counter is outside `minRevision`'s range.
    let doc = s.get("/openapi.json").await.body;
    for path in [CHECK, CHECK_BATCH] {
        let declared = &doc["paths"][path]["post"]["responses"]["503"];
        assert!(
            declared["headers"]["Retry-After"].is_object(),
            "{path}: {declared}"
        );
        assert!(
            declared["description"]
                .as_str()
                .is_some_and(|d| d.contains("REVISION_WAITERS_FULL")),
            "{path}: {declared}"
        );
    }
    let check_body = &doc["components"]["schemas"]["CheckBody"];
    assert!(
        check_body
            .to_string()
            .contains(&format!("\"maximum\":{}", i64::MAX)),
        "{check_body}"
    );
}
#[tokio::test]
async fn concurrent_checks_share_calls_and_each_gets_its_own_answer() {
    use tracing_subscriber::layer::SubscriberExt;
    // The gateway runs on this test's one thread, so a thread-local subscriber sees its spans.
    let sizes = BatchSizes::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(sizes.clone()));
    let s = spawn_stack().await;
    let (_, _, rev) = catalog_with_grant(&s).await;
    let r = s.reports_check_at(rev).await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);
    // acme-eu inherits only once the hierarchy has come through the change feed.
    s.eventually("acme-eu inherits pro", || async {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "acme-eu"},
                        "feature": {"featureKey": "reports"}}),
            )
            .await;
        r.body["result"] == true
    })
    .await;

    let cases = [
        json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"}}),
        json!({"subject": {"tenantId": "acme-eu"}, "feature": {"featureKey": "reports"}}),
        json!({"subject": {"tenantId": "globex"}, "feature": {"featureKey": "reports"}}),
        json!({"subject": {"tenantId": "nobody"}, "feature": {"featureKey": "reports"}}),
        json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "seats"},
               "requestedAmount": 6}),
        json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "seats"},
               "requestedAmount": 5}),
        // Refused by the entitlement service, not the gateway: it fails its own request only.
        json!({"subject": {"tenantId": ""}, "feature": {"featureKey": "reports"}}),
    ];
    // Each case alone first: what every concurrent copy of it must answer.
    let mut alone = Vec::new();
    for case in &cases {
        let r = s.post(CHECK, case).await;
        alone.push((r.status, without_revision(r.body)));
    }
    assert_eq!(
        alone.iter().map(|(status, _)| *status).collect::<Vec<_>>(),
        [200, 200, 200, 200, 200, 200, 400]
    );
    assert_eq!(alone[0].1["result"], true);
    assert_eq!(
        alone[1].1["allowReason"], "GRANT",
        "inherited: {:?}",
        alone[1].1
    );
    assert_eq!(alone[2].1["justification"], "MISSING_FEATURE");
    assert_eq!(alone[3].1["justification"], "TENANT_NOT_FOUND");
    assert_eq!(alone[4].1["justification"], "LIMIT_EXCEEDED");
    assert_eq!(alone[5].1["result"], true);
    assert_error_shape(
        &Reply {
            status: alone[6].0,
            headers: http::HeaderMap::new(),
            body: alone[6].1.clone(),
        },
        400,
    );
    let before = sizes.0.lock().unwrap().len();

    // 20 copies of every case at once, interleaved (within the rate limit's burst).
    let order: Vec<usize> = (0..20 * cases.len()).map(|i| i % cases.len()).collect();
    let replies = futures::future::join_all(order.iter().map(|&c| s.post(CHECK, &cases[c]))).await;
    for (&c, r) in order.iter().zip(replies) {
        assert_eq!(
            (r.status, without_revision(r.body)),
            alone[c],
            "case {c} answered differently when sent with others"
        );
    }
    let batched = sizes.0.lock().unwrap()[before..].to_vec();
    assert!(
        batched.iter().any(|&n| n > 1),
        "concurrent checks were sent in batch calls: {batched:?}"
    );
}

#[tokio::test]
async fn a_poisoned_check_fails_alone_and_never_its_batch_companions() {
    let s = spawn_stack().await;
    let (_, _, rev) = catalog_with_grant(&s).await;
    assert_eq!(s.reports_check_at(rev).await.body["result"], true);
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let victim = json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"}});
    let poisoned = json!({"subject": {"tenantId": "globex", "attributes": deep},
                          "feature": {"featureKey": "reports"}});
    // Alone, the poisoned check is the caller's own 400 naming the field.
    let r = s.post(CHECK, &poisoned).await;
    assert_error_shape(&r, 400);
    // Mixed in with victims, rounds at a time: only its caller fails.
    for _ in 0..5 {
        let bodies: Vec<&Value> = (0..40)
            .map(|i| if i % 10 == 5 { &poisoned } else { &victim })
            .collect();
        let replies = futures::future::join_all(bodies.iter().map(|b| s.post(CHECK, b))).await;
        for (body, r) in bodies.iter().zip(replies) {
            if *body == &poisoned {
                assert_error_shape(&r, 400);
            } else {
                assert_eq!(
                    r.status, 200,
                    "a victim failed with the poisoned check: {:?}",
                    r.body
                );
                assert_eq!(r.body["result"], true, "{:?}", r.body);
            }
        }
    }
}

/// A check's answer without the index revision (which later writes may move).
fn without_revision(mut body: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.remove("revision");
    }
    body
}

#[tokio::test]
async fn route_and_permission_checks_name_their_reason_feature_and_targeting_level() {
    let s = spawn_stack().await;
    let (pro, grant_ids, _) = catalog_with_grant(&s).await;
    let require = s
        .post(
            ROUTES,
            &json!({"method": "GET", "path": "/reports/**", "policy": "require",
                    "requiredFeatureKeys": ["reports"]}),
        )
        .await;
    assert_eq!(require.status, 201, "{:?}", require.body);
    let allow = s
        .post(
            ROUTES,
            &json!({"method": "GET", "path": "/public/**", "policy": "allow"}),
        )
        .await;
    assert_eq!(allow.status, 201, "{:?}", allow.body);
    // `gold` applies to subjects with tier=gold through its targeting rules alone.
    s.feature(json!({"name": "Export", "key": "export"})).await;
    let r = s
        .post(
            PLANS,
            &json!({"name": "Gold", "key": "gold", "featureKeys": ["export"],
                    "rules": [{"description": "gold tier", "conditionLogic": "and",
                               "conditions": [{"attribute": "tier", "attributeType": "custom",
                                               "negate": false, "op": "in_list",
                                               "value": {"list": ["gold"]}}],
                               "treatment": "true"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let rev = revision(&r);
    let gold = r.body;
    let check = |body: Value| {
        let mut body = body;
        body["minRevision"] = json!(rev);
        let s = &s;
        async move {
            let r = s.post(CHECK, &body).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body
        }
    };

    // A Require route met: its reason, and the required feature that decided.
    let d = check(json!({"subject": {"tenantId": "acme"},
                         "route": {"method": "GET", "path": "/reports/monthly"}}))
    .await;
    assert_eq!(d["result"], true, "{d:?}");
    assert_eq!(d["allowReason"], "ROUTE_REQUIREMENTS_MET");
    assert_eq!(
        d["provenance"],
        json!({"grantId": grant_ids[0], "planId": id(&pro), "planKey": "pro",
               "level": "account", "grantedTenantId": "acme", "featureKey": "reports",
               "routeId": id(&require.body)})
    );
    // An Allow route: no grant involved.
    let d = check(json!({"subject": {"tenantId": "acme"},
                         "route": {"method": "GET", "path": "/public/logo.png"}}))
    .await;
    assert_eq!(d["result"], true, "{d:?}");
    assert_eq!(d["allowReason"], "ROUTE_ALLOW");
    assert_eq!(d["provenance"], Value::Null);
    // A permission: the linked feature that decided.
    let d = check(
        json!({"subject": {"tenantId": "acme", "permissions": ["reports.read"]},
               "permission": {"permissionKey": "reports.read"}}),
    )
    .await;
    assert_eq!(d["allowReason"], "GRANT", "{d:?}");
    assert_eq!(d["provenance"]["featureKey"], "reports");

    // Targeting alone: level `targeting`, no grant.
    let d = check(
        json!({"subject": {"tenantId": "acme", "attributes": {"tier": "gold"}},
               "feature": {"featureKey": "export"}}),
    )
    .await;
    assert_eq!(d["result"], true, "{d:?}");
    assert_eq!(
        d["provenance"],
        json!({"grantId": "", "planId": id(&gold), "planKey": "gold", "level": "targeting",
               "grantedTenantId": "acme", "featureKey": "export", "routeId": ""})
    );
    let d = check(
        json!({"subject": {"tenantId": "acme", "attributes": {"tier": "silver"}},
               "feature": {"featureKey": "export"}}),
    )
    .await;
    assert_eq!(d["result"], false, "{d:?}");
}

#[tokio::test]
async fn frontegg_agent_endpoints_answer_in_their_exact_shape() {
    let s = spawn_stack().await;
    let _ = catalog_with_grant(&s).await;
    let route = s
        .post(
            ROUTES,
            &json!({"method": "GET", "path": "/reports/**", "policy": "require",
                    "requiredFeatureKeys": ["reports"]}),
        )
        .await;
    assert_eq!(route.status, 201, "{:?}", route.body);
    let deny = s
        .post(
            ROUTES,
            &json!({"method": "*", "path": "/admin/**", "policy": "deny"}),
        )
        .await;
    assert_eq!(deny.status, 201, "{:?}", deny.body);
    let rev = revision(&deny);
    // Agent calls take no minRevision: wait until the index holds the routes.
    s.eventually("the index includes the routes", || async {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "x"},
                        "minRevision": rev}),
            )
            .await;
        r.status == 200
    })
    .await;

    let exact = |r: &Reply, result: bool, justification: Option<&str>| {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(
            keys(&r.body),
            set(&["decision_id", "metrics", "result"]),
            "{:?}",
            r.body
        );
        assert!(
            r.body["decision_id"]
                .as_str()
                .is_some_and(|d| uuid::Uuid::parse_str(d).is_ok()),
            "{:?}",
            r.body
        );
        assert!(r.body["metrics"].is_object());
        let mut expected = json!({"result": result, "monitoring": false});
        if let Some(j) = justification {
            expected["justification"] = json!(j);
        }
        assert_eq!(r.body["result"], expected);
    };
    let agent = |path: &'static str, tenant: &str, context: Value| {
        let body = json!({"input": {
            "subjectContext": {"tenantId": tenant, "userId": "alice",
                               "permissions": ["reports.read"], "attributes": {"plan": "x"}},
            "requestContext": context}});
        let s = &s;
        async move { s.post(path, &body).await }
    };

    let r = agent(AGENT_FEATURE, "acme", json!({"featureKey": "reports"})).await;
    exact(&r, true, None);
    let r = agent(AGENT_FEATURE, "globex", json!({"featureKey": "reports"})).await;
    exact(&r, false, Some("MISSING_FEATURE"));
    let r = agent(
        AGENT_PERMISSION,
        "acme",
        json!({"permissionKey": "reports.read"}),
    )
    .await;
    exact(&r, true, None);
    let r = agent(
        AGENT_PERMISSION,
        "acme",
        json!({"permissionKey": "billing.write"}),
    )
    .await;
    exact(&r, false, Some("MISSING_PERMISSION"));
    let r = agent(
        AGENT_ROUTE,
        "acme",
        json!({"method": "GET", "path": "/reports/monthly"}),
    )
    .await;
    exact(&r, true, None);
    let r = agent(
        AGENT_ROUTE,
        "globex",
        json!({"method": "GET", "path": "/reports/monthly"}),
    )
    .await;
    exact(&r, false, Some("MISSING_FEATURE"));
    let r = agent(
        AGENT_ROUTE,
        "acme",
        json!({"method": "DELETE", "path": "/admin/users"}),
    )
    .await;
    exact(&r, false, Some("ROUTE_DENIED"));
    let r = agent(
        AGENT_ROUTE,
        "acme",
        json!({"method": "GET", "path": "/nowhere"}),
    )
    .await;
    exact(&r, false, Some("MISSING_ROUTE"));

    // A user token through the agent: its own account only.
    let alice = user_token(&user_claims("acme", "alice", &["reports.read"]));
    let r = s
        .app
        .post_json(
            AGENT_FEATURE,
            Some(&alice),
            &json!({"input": {"subjectContext": {"tenantId": "acme"},
                              "requestContext": {"featureKey": "reports"}}}),
        )
        .await;
    exact(&r, true, None);

    // Bad inputs in the gateway's error shape.
    assert_error_shape(
        &s.post(
            AGENT_FEATURE,
            &json!({"subjectContext": {"tenantId": "acme"}}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(
            AGENT_FEATURE,
            &json!({"input": {"subjectContext": {"tenantId": "acme"},
                              "requestContext": {"permissionKey": "reports.read"}}}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(
            AGENT_ROUTE,
            &json!({"input": {"subjectContext": {"userId": "alice"},
                              "requestContext": {"method": "GET", "path": "/"}}}),
        )
        .await,
        400,
    );
}

/// `frontegg-tenant-id` follows the account-ID rule whatever the token: with an environment
/// token a malformed header used to be passed on (or ignored) and the check answered 200.
#[tokio::test]
async fn a_malformed_tenant_header_is_a_400_with_an_environment_token() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    let long = "x".repeat(256);
    let body = json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"}});
    let agent = json!({"input": {"subjectContext": {"tenantId": "acme"},
                                 "requestContext": {"featureKey": "reports"}}});
    for bad in ["a/b", long.as_str()] {
        for (path, body) in [(CHECK, &body), (AGENT_FEATURE, &agent)] {
            let r = s
                .post_with(path, &[("frontegg-tenant-id", bad)], body)
                .await;
            assert_error_shape(&r, 400);
            assert_eq!(
                r.body["fieldViolations"][0]["field"],
                json!("frontegg-tenant-id"),
                "{path}: {:?}",
                r.body
            );
        }
    }
    let r = s
        .post_with(CHECK, &[("frontegg-tenant-id", "acme")], &body)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}
