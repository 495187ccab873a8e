//! The auth matrix on entitlement routes: user tokens refused on management routes, kept to their
//! tenant, attributes from the token, scope decided once per batch.

use super::*;

#[tokio::test]
async fn user_tokens_are_refused_on_management_routes_and_kept_to_their_tenant() {
    let s = spawn_stack().await;
    let (pro, grant_ids, _) = catalog_with_grant(&s).await;
    let alice = user_token(&user_claims("acme", "alice", &["reports.read"]));

    // Every management route of the entitlement surface: 403 for a user token, before any
    // body, path or query is looked at; and nothing written.
    let management: Vec<&(&str, &str)> = crate::platform::ROUTES
        .iter()
        .filter(|(_, p)| p.starts_with("/entitlements/resources/"))
        .collect();
    assert!(management.len() >= 30, "{management:?}");
    for (method, path) in management {
        let concrete = path
            .replace("{planId}", &id(&pro))
            .replace("{id}", &grant_ids[0]);
        let concrete = concrete
            .split('/')
            .map(|seg| if seg.starts_with('{') { "acme" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let r = s
            .app
            .send_json(
                &method.to_ascii_uppercase(),
                &concrete,
                Some(&alice),
                &json!({"name": "x"}),
            )
            .await;
        assert_error_shape(&r, 403);
    }
    assert_eq!(s.get(&format!("{PLANS}/{}", id(&pro))).await.status, 200);
    assert_eq!(
        s.get(&format!("{GRANTS}/{}", grant_ids[0])).await.body["status"],
        "active"
    );

    // Inside its own account a user checks and reads.
    let check = |tenant: &str| json!({"subject": {"tenantId": tenant}, "feature": {"featureKey": "reports"}});
    let r = s.app.post_json(CHECK, Some(&alice), &check("acme")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Tenant B by body, by path and by header: 403, identical whether B exists or not.
    let forbidden = |existing: &Reply, missing: &Reply| {
        assert_eq!(existing.status, 403, "{:?}", existing.body);
        assert_eq!(existing.status, missing.status);
        assert_eq!(existing.body, missing.body);
    };
    // By body: our check, its batch, the agent.
    let a = s.app.post_json(CHECK, Some(&alice), &check("globex")).await;
    let b = s.app.post_json(CHECK, Some(&alice), &check("nobody")).await;
    forbidden(&a, &b);
    assert_error_shape(&a, 403);
    let batch = |tenant: &str| json!({"checks": [check("acme"), check(tenant)]});
    let a = s
        .app
        .post_json(CHECK_BATCH, Some(&alice), &batch("globex"))
        .await;
    let b = s
        .app
        .post_json(CHECK_BATCH, Some(&alice), &batch("nobody"))
        .await;
    forbidden(&a, &b);
    let agent = |tenant: &str| {
        json!({"input": {"subjectContext": {"tenantId": tenant},
                         "requestContext": {"featureKey": "reports"}}})
    };
    for path in [AGENT_FEATURE] {
        let a = s.app.post_json(path, Some(&alice), &agent("globex")).await;
        let b = s.app.post_json(path, Some(&alice), &agent("nobody")).await;
        forbidden(&a, &b);
    }
    let a = s
        .app
        .post_json(
            AGENT_PERMISSION,
            Some(&alice),
            &json!({"input": {"subjectContext": {"tenantId": "globex"},
                              "requestContext": {"permissionKey": "reports.read"}}}),
        )
        .await;
    let b = s
        .app
        .post_json(
            AGENT_ROUTE,
            Some(&alice),
            &json!({"input": {"subjectContext": {"tenantId": "nobody"},
                              "requestContext": {"method": "GET", "path": "/"}}}),
        )
        .await;
    forbidden(&a, &b);
    // A sub-account is out of reach while the hierarchy settings keep users home (the
    // default), and the same 403 again.
    let c = s
        .app
        .post_json(CHECK, Some(&alice), &check("acme-eu"))
        .await;
    forbidden(&c, &b);
    // By path: seed 004 (the envelope) and seed 003's user (its shape).
    let a = s
        .app
        .get("/tenants/globex/entitlements", Some(&alice))
        .await;
    let b = s
        .app
        .get("/tenants/nobody/entitlements", Some(&alice))
        .await;
    forbidden(&a, &b);
    assert_eq!(a.body["success"], false);
    // By header: `frontegg-tenant-id` naming another account.
    let auth = format!("Bearer {alice}");
    let with_header =
        |method: &'static str, path: &'static str, tenant: &'static str, body: Option<Value>| {
            let auth = auth.clone();
            let s = &s;
            async move {
                let mut headers = vec![
                    ("authorization", auth.as_str()),
                    ("frontegg-tenant-id", tenant),
                ];
                if body.is_some() {
                    headers.push(("content-type", "application/json"));
                }
                s.app
                    .request(
                        method,
                        path,
                        &headers,
                        body.map(|b| b.to_string().into_bytes()),
                    )
                    .await
            }
        };
    for (method, path, body) in [
        ("POST", CHECK, Some(check("acme"))),
        ("POST", CHECK_BATCH, Some(batch("acme"))),
        ("POST", AGENT_FEATURE, Some(agent("acme"))),
        ("GET", "/v1/entitlements/alice", None),
        ("GET", "/tenants/acme/entitlements", None),
    ] {
        let a = with_header(method, path, "globex", body.clone()).await;
        let b = with_header(method, path, "nobody", body.clone()).await;
        assert_eq!(a.status, 403, "{method} {path}: {:?}", a.body);
        assert_eq!(a.body, b.body, "{method} {path}");
        // Its own account in the header is fine.
        let ok = with_header(method, path, "acme", body).await;
        assert_eq!(ok.status, 200, "{method} {path}: {:?}", ok.body);
    }

    // Once the account's hierarchy settings open sub-accounts, the user reaches acme-eu.
    let r = s
        .app
        .send_json(
            "PUT",
            "/tenants/resources/sub-tenants/v1/acme/hierarchy-settings",
            Some(&s.env),
            &json!({"subAccountAccessType": "alwaysOn"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s
        .app
        .post_json(CHECK, Some(&alice), &check("acme-eu"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = with_header("GET", "/tenants/acme-eu/entitlements", "acme-eu", None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // But never another account's.
    let a = s.app.post_json(CHECK, Some(&alice), &check("globex")).await;
    let b = s.app.post_json(CHECK, Some(&alice), &check("nobody")).await;
    forbidden(&a, &b);
}

/// A user check with the given claims added to a token of `tenant`.
async fn user_check(s: &Stack, tenant: &str, extra: Value, path: &str, body: &Value) -> Reply {
    let mut claims = user_claims(tenant, "u1", &[]);
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    s.app
        .post_json(path, Some(&user_token(&claims)), body)
        .await
}

/// `frontegg` targeting attributes of a user-token check are the token's: a body claiming an
/// email, a user ID or an account it does not have changes nothing, and a claim the token
/// lacks stays absent; environment tokens still speak for any subject.
#[tokio::test]
async fn user_checks_take_frontegg_attributes_from_the_token() {
    let s = spawn_stack().await;
    s.account("vip", None).await;
    s.feature(json!({"name": "Lounge", "key": "lounge"})).await;
    let r = s
        .post(
            PLANS,
            &json!({"name": "VIP", "key": "vip", "featureKeys": ["lounge"],
                    "rules": [{"conditionLogic": "and", "treatment": "true",
                               "conditions": [{"attribute": "email", "attributeType": "frontegg",
                                               "negate": false, "op": "ends_with",
                                               "value": {"list": ["@vip.example"]}}]},
                              {"conditionLogic": "and", "treatment": "true",
                               "conditions": [{"attribute": "userId", "attributeType": "frontegg",
                                               "negate": false, "op": "in_list",
                                               "value": {"list": ["boss"]}}]}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let rev = revision(&r);
    let forged = |attributes: Value| {
        json!({"subject": {"tenantId": "vip", "attributes": attributes},
               "feature": {"featureKey": "lounge"}, "minRevision": rev})
    };
    let agent = |attributes: Value| {
        json!({"input": {"subjectContext": {"tenantId": "vip", "attributes": attributes},
                         "requestContext": {"featureKey": "lounge"}}})
    };
    let vip_body = json!({"email": "me@vip.example", "userId": "boss", "emailVerified": true});

    // The account reaches the index through the tenant change feed, which the plan's
    // revision does not include.
    s.eventually("vip reaches the index", || async {
        s.post(CHECK, &forged(vip_body.clone())).await.body["justification"] != "TENANT_NOT_FOUND"
    })
    .await;
    // Environment token: the body is the subject.
    let r = s.post(CHECK, &forged(vip_body.clone())).await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);

    // A user token without an email claim: the forged email and user ID count for nothing.
    for (path, body) in [
        (CHECK, forged(vip_body.clone())),
        (AGENT_FEATURE, agent(vip_body.clone())),
    ] {
        let r = user_check(&s, "vip", json!({}), path, &body).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        let result = r.body["result"]["result"]
            .as_bool()
            .or(r.body["result"].as_bool());
        assert_eq!(result, Some(false), "{path}: {:?}", r.body);
    }
    // The token's email decides, over the body's.
    let r = user_check(
        &s,
        "vip",
        json!({"email": "a@plain.example"}),
        CHECK,
        &forged(vip_body.clone()),
    )
    .await;
    assert_eq!(r.body["result"], false, "{:?}", r.body);
    let r = user_check(
        &s,
        "vip",
        json!({"email": "b@vip.example"}),
        CHECK,
        &forged(json!({"email": "x@plain.example"})),
    )
    .await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);
    // The token's `sub` is the `userId` attribute.
    let r = s
        .app
        .post_json(
            CHECK,
            Some(&user_token(&user_claims("vip", "boss", &[]))),
            &forged(json!({})),
        )
        .await;
    assert_eq!(r.body["result"], true, "{:?}", r.body);
}

/// Counts the tenant-service RPCs served while it is installed (the services run on the
/// test's thread).
#[derive(Clone, Default)]
struct TenantCalls(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TenantCalls {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        #[derive(Default)]
        struct Method {
            service: String,
            method: String,
        }
        impl tracing::field::Visit for Method {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "rpc.service" => self.service = format!("{value:?}"),
                    "rpc.method" => self.method = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        if attrs.metadata().name() == "grpc.request" {
            let mut method = Method::default();
            attrs.record(&mut method);
            if method.service.starts_with("tenantry.tenant.v1.") {
                let path = format!("/{}/{}", method.service, method.method);
                self.0.lock().unwrap().push(path);
            }
        }
    }
}

/// A batch check with a user token decides scope once for its distinct accounts (one tenant
/// call for the whole batch), answers each item as alone, and refuses the batch when any item
/// names an account out of scope (the same 403 as for an unknown account).
#[tokio::test]
async fn batch_checks_decide_scope_once_per_batch() {
    use tracing_subscriber::layer::SubscriberExt;
    let calls = TenantCalls::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(calls.clone()));
    let s = spawn_stack().await;
    let (_, _, rev) = catalog_with_grant(&s).await;
    // acme (granted `pro`) → acme-eu (inherits); globex elsewhere.
    let r = s
        .app
        .send_json(
            "PUT",
            "/tenants/resources/sub-tenants/v1/acme/hierarchy-settings",
            Some(&s.env),
            &json!({"subAccountAccessType": "defaultOn"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let user = user_token(&user_claims("acme", "u1", &[]));
    let item = |tenant: &str, amount: u64| {
        json!({"subject": {"tenantId": tenant}, "feature": {"featureKey": "seats"},
               "requestedAmount": amount})
    };
    let mut checks = Vec::new();
    for i in 0..100 {
        let tenant = if i % 2 == 0 { "acme" } else { "acme-eu" };
        // 5 seats are granted: 6 is refused.
        checks.push(item(tenant, if i % 3 == 0 { 6 } else { 5 }));
    }
    let before = calls.0.lock().unwrap().len();
    let r = s
        .app
        .post_json(
            CHECK_BATCH,
            Some(&user),
            &json!({"checks": checks, "minRevision": rev}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let during = calls.0.lock().unwrap()[before..].to_vec();
    assert_eq!(
        during,
        ["/tenantry.tenant.v1.HierarchyService/CheckSubAccountScope"],
        "one scope call for the batch"
    );
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    for (i, d) in results.iter().enumerate() {
        assert_eq!(d["result"], json!(i % 3 != 0), "item {i}: {d:?}");
    }
    // One item out of scope refuses the batch, exactly as an unknown account does.
    let mut messages = Vec::new();
    for outsider in ["globex", "no-such-account"] {
        let mut with = checks.clone();
        with[77] = item(outsider, 1);
        let r = s
            .app
            .post_json(CHECK_BATCH, Some(&user), &json!({"checks": with}))
            .await;
        assert_error_shape(&r, 403);
        messages.push(r.body["message"].clone());
    }
    assert_eq!(messages[0], messages[1]);
}
