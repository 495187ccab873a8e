//! Account-management routes against the real tenant service on PostgreSQL (the entitlement
//! service stays down here).

use serde_json::json;

use crate::helpers::{TestApp, assert_error_shape, spawn_with, user_claims, user_token};

const WRITE_SUB: &str = "fe.account-hierarchy.write.subAccount";

pub(crate) struct Stack {
    pub(crate) app: TestApp,
    _tenant: tenantry_common::CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self._tenant.cancel();
    }
}

pub(crate) async fn spawn_stack() -> Stack {
    spawn_stack_with(|_| {}).await
}

async fn spawn_stack_with(adjust: impl FnOnce(&mut tenantry_common::Config)) -> Stack {
    let db = tenantry_common::testing::postgres().create_database().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tenant_shutdown = tenantry_common::CancellationToken::new();
    let config = tenantry_common::Config {
        tenant_database_url: Some(tenantry_common::Secret::new(db)),
        ..tenantry_common::Config::default()
    };
    let signal = tenant_shutdown.clone();
    tokio::spawn(async move {
        tenantry_tenant::serve(&config, listener, signal)
            .await
            .expect("tenant service serves");
    });
    let app = spawn_with(|c| {
        c.tenant_service_url = Some(format!("http://{addr}"));
        adjust(c);
    })
    .await;
    // Wait until the tenant service has migrated and answers.
    for _ in 0..100 {
        let r = app.get("/readyz", None).await;
        if r.body["services"]["tenant"] == "SERVING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Stack {
        app,
        _tenant: tenant_shutdown,
    }
}

#[tokio::test]
async fn accounts_crud_lists_and_metadata_at_the_seed_paths() {
    let s = spawn_stack().await;
    let app = &s.app;
    let r = app.get("/readyz", None).await;
    assert_eq!(r.body["services"]["tenant"], "SERVING");
    assert_eq!(r.status, 503, "the entitlement service is down here");

    let env = app.vendor_token().await;
    let r = app
        .post_json(
            "/tenants/resources/tenants/v1",
            Some(&env),
            &json!({"tenantId": "acme", "name": "Acme", "website": "https://acme.test",
                    "metadata": {"tier": "gold"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["tenantId"], "acme");
    assert_eq!(r.body["metadata"]["tier"], "gold");
    assert!(r.body["createdAt"].is_string());

    // Generated ID when none is given.
    let r = app
        .post_json(
            "/tenants/resources/tenants/v1",
            Some(&env),
            &json!({"name": "Globex"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(r.body["tenantId"].as_str().is_some_and(|id| !id.is_empty()));

    // Duplicate → 409 in the error shape.
    let r = app
        .post_json(
            "/tenants/resources/tenants/v1",
            Some(&env),
            &json!({"tenantId": "acme", "name": "Again"}),
        )
        .await;
    assert_error_shape(&r, 409);

    let r = app
        .get("/tenants/resources/tenants/v2/acme", Some(&env))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Acme");
    let r = app
        .get("/tenants/resources/tenants/v1/acme", Some(&env))
        .await;
    assert_eq!(r.status, 200);
    // The seed: an account that does not exist reads as an empty array.
    let r = app
        .get("/tenants/resources/tenants/v2/nope", Some(&env))
        .await;
    assert_eq!((r.status, r.body), (200, json!([])));

    let r = app
        .send_json(
            "PUT",
            "/tenants/resources/tenants/v2/acme",
            Some(&env),
            &json!({"name": "Acme Corp", "alias": "acme-login"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Acme Corp");
    let r = app
        .get("/tenants/resources/tenants/v2/alias/acme-login", Some(&env))
        .await;
    assert_eq!(r.body["tenantId"], "acme");

    let r = app
        .get(
            "/tenants/resources/tenants/v2?_limit=1&_sortBy=name&_order=ASC",
            Some(&env),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["_metadata"]["totalItems"], json!(2));
    assert_eq!(r.body["_metadata"]["totalPages"], json!(2));
    let r = app
        .get("/tenants/resources/tenants/v2?_tenantIds=acme", Some(&env))
        .await;
    assert_eq!(r.body["_metadata"]["totalItems"], json!(1));
    let r = app
        .get("/tenants/resources/tenants/v2?_limit=201", Some(&env))
        .await;
    assert_error_shape(&r, 400);

    let r = app
        .post_json(
            "/tenants/resources/tenants/v1/acme/metadata",
            Some(&env),
            &json!({"metadata": {"maximumUsers": 50}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["metadata"]["maximumUsers"], json!(50));
    let r = app
        .post_json(
            "/tenants/resources/tenants/v1/acme/metadata",
            Some(&env),
            &json!({"metadata": [1, 2]}),
        )
        .await;
    assert_error_shape(&r, 400);
    let r = app
        .send_json(
            "DELETE",
            "/tenants/resources/tenants/v1/acme/metadata/tier",
            Some(&env),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["metadata"].get("tier").is_none());

    // Memberships.
    let r = app
        .post_json(
            "/tenants/resources/tenants/v1/acme/users",
            Some(&env),
            &json!({"userId": "alice"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = app
        .get("/tenants/resources/tenants/v1/acme/users", Some(&env))
        .await;
    assert_eq!(r.body["items"][0]["userId"], "alice");
    let r = app
        .get("/tenants/resources/users/v1/alice/tenants", Some(&env))
        .await;
    assert_eq!(r.body["items"][0]["tenantId"], "acme");

    // Migration: 202 with an ID, then a status.
    let r = app
        .post_json(
            "/tenants/resources/migrations/v1/tenants",
            Some(&env),
            &json!({"tenants": ["m-1", "m-2", {"tenantId": "m-3", "name": "Third"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["totalItems"], json!(3));
    let id = r.body["migrationId"].as_str().unwrap().to_owned();
    let r = app
        .get(
            &format!("/tenants/resources/migrations/v1/tenants/status/{id}"),
            Some(&env),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(["pending", "running", "completed"].contains(&r.body["status"].as_str().unwrap()));

    // Sizes a client may not send: more accounts than one request takes, a bare ID longer
    // than any ID (the whole request is refused; nothing is imported).
    let r = app
        .post_json(
            "/tenants/resources/migrations/v1/tenants",
            Some(&env),
            &json!({"tenants": vec!["x"; 10_001]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        r.body["fieldViolations"][0]["field"], "tenants",
        "{:?}",
        r.body
    );
    let r = app
        .post_json(
            "/tenants/resources/migrations/v1/tenants",
            Some(&env),
            &json!({"tenants": ["m-4", "x".repeat(256)]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        r.body["fieldViolations"][0]["field"], "tenants[1]",
        "{:?}",
        r.body
    );

    let r = app
        .send_json(
            "DELETE",
            "/tenants/resources/tenants/v1/acme",
            Some(&env),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Gone: the v2 read answers an empty array, as the seed documents.
    let r = app
        .get("/tenants/resources/tenants/v2/acme", Some(&env))
        .await;
    assert_eq!((r.status, r.body), (200, json!([])));
}

#[tokio::test]
async fn accounts_are_listed_by_metadata() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    for (id, metadata) in [
        (
            "acme",
            json!({"plan": "pro", "region": "eu", "url": "https://a.test/x,y"}),
        ),
        ("globex", json!({"plan": "pro", "region": "us"})),
        (
            "initech",
            json!({"plan": "free", "region": "eu", "seats": 5}),
        ),
    ] {
        let r = app
            .post_json(
                "/tenants/resources/tenants/v1",
                Some(&env),
                &json!({"tenantId": id, "name": id, "metadata": metadata}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let listed = |r: &crate::helpers::Reply| -> Vec<String> {
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["tenantId"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = "/tenants/resources/tenants/v2?_sortBy=tenantId";
    let r = app
        .get(&format!("{list}&metadata=plan:pro"), Some(&env))
        .await;
    assert_eq!(listed(&r), ["acme", "globex"]);
    assert_eq!(r.body["_metadata"]["totalItems"], json!(2));
    // Repeated pairs must all hold; the array spelling means the same.
    let r = app
        .get(
            &format!("{list}&metadata=plan:pro&metadata[]=region:eu"),
            Some(&env),
        )
        .await;
    assert_eq!(listed(&r), ["acme"]);
    // The value is everything after the first colon, commas included (URL-encoded or not).
    let r = app
        .get(
            &format!("{list}&metadata=url:https://a.test/x,y"),
            Some(&env),
        )
        .await;
    assert_eq!(listed(&r), ["acme"]);
    let r = app
        .get(
            &format!("{list}&metadata=url%3Ahttps%3A%2F%2Fa.test%2Fx%2Cy"),
            Some(&env),
        )
        .await;
    assert_eq!(listed(&r), ["acme"]);
    // With the other filters and paging.
    let r = app
        .get(
            &format!("{list}&metadata=region:eu&_filter=INIT"),
            Some(&env),
        )
        .await;
    assert_eq!(listed(&r), ["initech"]);
    let r = app
        .get(
            &format!("{list}&metadata=plan:pro&_limit=1&_offset=1"),
            Some(&env),
        )
        .await;
    assert_eq!(listed(&r), ["globex"]);
    assert_eq!(r.body["_metadata"]["totalPages"], json!(2));
    // A number is not its string.
    let r = app
        .get(&format!("{list}&metadata=seats:5"), Some(&env))
        .await;
    assert!(listed(&r).is_empty());

    // Bad pairs: 400 naming the pair.
    let r = app.get(&format!("{list}&metadata=plan"), Some(&env)).await;
    assert_error_shape(&r, 400);
    assert!(
        r.body["message"].as_str().unwrap().contains("metadata[0]"),
        "{:?}",
        r.body
    );
    let r = app.get(&format!("{list}&metadata=:pro"), Some(&env)).await;
    assert_error_shape(&r, 400);
    let eleven: String = (0..11).map(|i| format!("&metadata=k{i}:v")).collect();
    let r = app.get(&format!("{list}{eleven}"), Some(&env)).await;
    assert_error_shape(&r, 400);

    // Listing is management: a user token of one of the accounts sees none of them.
    let alice = user_token(&user_claims("acme", "alice", &[]));
    let r = app
        .get(&format!("{list}&metadata=plan:pro"), Some(&alice))
        .await;
    assert_error_shape(&r, 403);
}

#[tokio::test]
async fn self_service_stays_inside_the_tokens_tenant() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    for (id, name) in [("tenant-a", "A"), ("tenant-b", "B")] {
        let r = app
            .post_json(
                "/tenants/resources/tenants/v1",
                Some(&env),
                &json!({"tenantId": id, "name": name}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let alice = user_token(&user_claims("tenant-a", "alice", &[WRITE_SUB]));

    // Own account settings by token, and by a header naming the own account.
    let r = app
        .get("/tenants/resources/account-settings/v1", Some(&alice))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // A sub-account under the own account.
    let r = app
        .post_json(
            "/tenants/resources/sub-tenants/v1",
            Some(&alice),
            &json!({"tenantId": "a-child", "name": "A child", "parentTenantId": "tenant-a"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["parentTenantId"], "tenant-a");

    // Tenant B by body, by header and by path: the same 403 as for an unknown account.
    let by_body = app
        .post_json(
            "/tenants/resources/sub-tenants/v1",
            Some(&alice),
            &json!({"tenantId": "b-child", "name": "B child", "parentTenantId": "tenant-b"}),
        )
        .await;
    assert_error_shape(&by_body, 403);
    let by_header = app
        .request(
            "GET",
            "/tenants/resources/account-settings/v1",
            &[
                ("authorization", &format!("Bearer {alice}")),
                ("frontegg-tenant-id", "tenant-b"),
            ],
            None,
        )
        .await;
    assert_error_shape(&by_header, 403);
    let unknown_header = app
        .request(
            "GET",
            "/tenants/resources/account-settings/v1",
            &[
                ("authorization", &format!("Bearer {alice}")),
                ("frontegg-tenant-id", "no-such-tenant"),
            ],
            None,
        )
        .await;
    assert_eq!(by_header.status, unknown_header.status);
    assert_eq!(by_header.body["message"], unknown_header.body["message"]);
    let by_path = app
        .send_json(
            "DELETE",
            "/tenants/resources/sub-tenants/v1/tenant-b",
            Some(&alice),
            &json!(null),
        )
        .await;
    assert_error_shape(&by_path, 403);

    // With defaultOff (the default) the user cannot reach the sub-account; alwaysOn opens it.
    let r = app
        .request(
            "GET",
            "/tenants/resources/hierarchy/v1/tree",
            &[
                ("authorization", &format!("Bearer {alice}")),
                ("frontegg-tenant-id", "a-child"),
            ],
            None,
        )
        .await;
    assert_error_shape(&r, 403);
    let r = app
        .send_json(
            "PUT",
            "/tenants/resources/sub-tenants/v1/tenant-a/hierarchy-settings",
            Some(&alice),
            &json!({"subAccountAccessType": "alwaysOn"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["subAccountAccessType"], "alwaysOn");
    let r = app
        .request(
            "GET",
            "/tenants/resources/hierarchy/v1/tree",
            &[
                ("authorization", &format!("Bearer {alice}")),
                ("frontegg-tenant-id", "a-child"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["tenantId"], "a-child");
    assert_eq!(r.body["truncated"], false, "{:?}", r.body);
    // The tree is bounded: more than 1,000 sub-accounts per request is refused.
    let r = app
        .request(
            "GET",
            "/tenants/resources/hierarchy/v1/tree?_limit=1001",
            &[
                ("authorization", &format!("Bearer {alice}")),
                ("frontegg-tenant-id", "a-child"),
            ],
            None,
        )
        .await;
    assert_error_shape(&r, 400);

    let r = app
        .get("/tenants/resources/hierarchy/v1", Some(&alice))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["items"][0]["tenantId"], "a-child");
    assert_eq!(r.body["items"][0]["depth"], json!(1));

    // A reachable sub-account can be deleted by the user who may write sub-accounts.
    let r = app
        .send_json(
            "DELETE",
            "/tenants/resources/sub-tenants/v1/a-child",
            Some(&alice),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["tenantId"], "a-child");
    // Gone: the v2 read answers an empty array, as the seed documents.
    let r = app
        .get("/tenants/resources/tenants/v2/a-child", Some(&env))
        .await;
    assert_eq!((r.status, r.body), (200, json!([])));

    // Deleting the current account needs the permission.
    let r = app
        .send_json(
            "DELETE",
            "/tenants/resources/tenants/v1",
            Some(&alice),
            &json!(null),
        )
        .await;
    assert_error_shape(&r, 403);
    let admin = user_token(&user_claims(
        "tenant-b",
        "bob",
        &["fe.account-settings.delete.account"],
    ));
    let r = app
        .send_json(
            "DELETE",
            "/tenants/resources/tenants/v1",
            Some(&admin),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["tenantId"], "tenant-b");
}

/// Creates accounts with an environment token.
async fn create_accounts(app: &TestApp, env: &str, ids: &[&str]) {
    for id in ids {
        let r = app
            .post_json(
                "/tenants/resources/tenants/v1",
                Some(env),
                &json!({"tenantId": id, "name": id}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
}

/// One permission rule at the gateway and in the tenant service (Frontegg's: `*` stands for
/// any run of characters, anchored): a pattern opens a settings write exactly when it opens
/// the account delete it also covers, and never one it does not cover.
#[tokio::test]
async fn permission_patterns_mean_the_same_at_every_check() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    // held pattern, settings write allowed, account delete allowed
    let matrix: &[(&str, bool, bool)] = &[
        ("fe.account-settings.*", true, true),
        ("fe.*.account", true, true),
        ("*", true, true),
        ("fe.account-settings.write.*", true, false),
        ("fe.account-settings.write.account", true, false),
        ("fe.account-settings.delete.account", false, true),
        ("fe.account-settings", false, false),
        ("fe.account-hierarchy.*", false, false),
    ];
    for (i, (held, write, delete)) in matrix.iter().enumerate() {
        let tenant = format!("perm-{i}");
        create_accounts(app, &env, &[&tenant]).await;
        let token = user_token(&user_claims(&tenant, "u", &[held]));
        let r = app
            .send_json(
                "PUT",
                "/tenants/resources/account-settings/v1",
                Some(&token),
                &json!({"timezone": "Europe/Paris"}),
            )
            .await;
        assert_eq!(
            r.status,
            if *write { 200 } else { 403 },
            "{held}: {:?}",
            r.body
        );
        let r = app
            .send_json(
                "DELETE",
                "/tenants/resources/tenants/v1",
                Some(&token),
                &json!(null),
            )
            .await;
        assert_eq!(
            r.status,
            if *delete { 200 } else { 403 },
            "{held}: {:?}",
            r.body
        );
    }
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
        .iter()
        .map(|e| e["tenantId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn tree_ids(node: &serde_json::Value, out: &mut Vec<String>) {
    out.push(node["tenantId"].as_str().unwrap_or_default().to_owned());
    for child in node["children"].as_array().into_iter().flatten() {
        tree_ids(child, out);
    }
}

/// Every hierarchy read applies the scope rule to each record it shows: a user token sees
/// its own account and the sub-accounts its hierarchy settings open, never an ancestor, and
/// nothing below its account under `defaultOff`; an environment token sees everything.
#[tokio::test]
async fn hierarchy_reads_show_only_accounts_the_token_may_read() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    // h-top → h-root → h-a → h-a1, each with private details.
    for id in ["h-top", "h-root", "h-a", "h-a1"] {
        let r = app
            .post_json(
                "/tenants/resources/tenants/v1",
                Some(&env),
                &json!({"tenantId": id, "name": id, "creatorEmail": format!("owner@{id}.example"),
                        "metadata": {"secret": id}}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    for (parent, child) in [("h-top", "h-root"), ("h-root", "h-a"), ("h-a", "h-a1")] {
        let r = app
            .post_json(
                "/tenants/resources/hierarchy/v1",
                Some(&env),
                &json!({"parentTenantId": parent, "childTenantId": child}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let alice = user_token(&user_claims("h-root", "alice", &[]));
    let leaf = user_token(&user_claims("h-a1", "bob", &[]));
    let read = |token: String, path: &'static str, header: Option<&'static str>| async move {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(h) = header {
            headers.push(("frontegg-tenant-id", h));
        }
        let r = app.request("GET", path, &headers, None).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        r.body
    };
    let tree = |body: serde_json::Value| {
        let mut out = Vec::new();
        tree_ids(&body, &mut out);
        out
    };
    const LIST: &str = "/tenants/resources/hierarchy/v1";
    const PARENTS: &str = "/tenants/resources/hierarchy/v1/parents";
    const TREE: &str = "/tenants/resources/hierarchy/v1/tree";

    // defaultOff: the user's own account only.
    assert!(ids(&read(alice.clone(), LIST, None).await).is_empty());
    assert!(ids(&read(alice.clone(), PARENTS, None).await).is_empty());
    assert_eq!(tree(read(alice.clone(), TREE, None).await), ["h-root"]);
    assert!(ids(&read(leaf.clone(), PARENTS, None).await).is_empty());

    // defaultOn opens the sub-accounts, never the ancestors.
    let r = app
        .send_json(
            "PUT",
            "/tenants/resources/sub-tenants/v1/h-root/hierarchy-settings",
            Some(&env),
            &json!({"subAccountAccessType": "defaultOn"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let list = read(alice.clone(), LIST, None).await;
    assert_eq!(ids(&list), ["h-a", "h-a1"]);
    assert_eq!(list["items"][0]["creatorEmail"], "owner@h-a.example");
    assert!(ids(&read(alice.clone(), PARENTS, None).await).is_empty());
    assert_eq!(
        tree(read(alice.clone(), TREE, None).await),
        ["h-root", "h-a", "h-a1"]
    );
    assert_eq!(
        ids(&read(alice.clone(), PARENTS, Some("h-a1")).await),
        ["h-a", "h-root"]
    );
    // The leaf's own user still sees no ancestor: h-root's settings open downwards only.
    assert!(ids(&read(leaf.clone(), PARENTS, None).await).is_empty());

    // An environment token sees every account.
    assert_eq!(
        ids(&read(env.clone(), PARENTS, Some("h-a1")).await),
        ["h-a", "h-root", "h-top"]
    );
    assert_eq!(
        ids(&read(env.clone(), LIST, Some("h-top")).await),
        ["h-root", "h-a", "h-a1"]
    );
    assert_eq!(
        tree(read(env, TREE, Some("h-top")).await),
        ["h-top", "h-root", "h-a", "h-a1"]
    );
}

/// Creating a sub-account tells a user nothing about accounts outside its scope: an ID held
/// by a live account elsewhere, by a deleted account elsewhere and by its own sub-account all
/// get the same 409, and a deleted account's ID is never reclaimed (it stays deleted).
#[tokio::test]
async fn sub_account_creation_is_no_oracle_and_reclaims_nothing() {
    let s = spawn_stack().await;
    let app = &s.app;
    let env = app.vendor_token().await;
    create_accounts(app, &env, &["o-mine", "o-theirs", "o-their-old"]).await;
    let r = app
        .send_json(
            "DELETE",
            "/tenants/resources/tenants/v1/o-their-old",
            Some(&env),
            &json!(null),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let user = user_token(&user_claims("o-mine", "u", &[WRITE_SUB]));
    let create = |id: &'static str| {
        let user = user.clone();
        async move {
            app.post_json(
                "/tenants/resources/sub-tenants/v1",
                Some(&user),
                &json!({"tenantId": id, "name": "mine", "parentTenantId": "o-mine"}),
            )
            .await
        }
    };
    let r = create("o-child").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mut answers = Vec::new();
    for id in ["o-child", "o-theirs", "o-their-old"] {
        let r = create(id).await;
        assert_error_shape(&r, 409);
        let mut body = r.body.clone();
        body["message"] = json!(body["message"].as_str().unwrap().replace(id, "ID"));
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    // Gone: the v2 read answers an empty array, as the seed documents.
    let r = app
        .get("/tenants/resources/tenants/v2/o-their-old", Some(&env))
        .await;
    assert_eq!((r.status, r.body), (200, json!([])));
}

/// Pages every item of a paged listing at `path` (`_limit` and `_offset` appended), sending
/// `frontegg-tenant-id: tenant` when given; returns the IDs and the number of pages.
async fn all_pages(
    app: &TestApp,
    token: &str,
    tenant: Option<&str>,
    path: &str,
) -> (Vec<String>, usize) {
    let auth = format!("Bearer {token}");
    let (mut ids, mut pages, mut offset) = (Vec::new(), 0, 0);
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(t) = tenant {
            headers.push(("frontegg-tenant-id", t));
        }
        let url = format!("{path}{sep}_limit=50&_offset={offset}");
        let r = app.request("GET", &url, &headers, None).await;
        assert_eq!(r.status, 200, "{url}: {:?}", r.body);
        let items = r.body["items"].as_array().unwrap();
        assert!(!items.is_empty(), "{url}: an empty page");
        assert_eq!(r.body["_metadata"]["totalItems"], json!(COUNT), "{url}");
        offset += items.len();
        pages += 1;
        ids.extend(
            items
                .iter()
                .map(|i| i["tenantId"].as_str().unwrap().to_owned()),
        );
        if offset >= COUNT {
            return (ids, pages);
        }
    }
}

/// Accounts in the large-logo listings.
const COUNT: usize = 20;

/// Accounts with the largest logos list fine: a page stops early by size (never over the gRPC
/// message limit) and says how many there are, so paging by `_offset` + items returned
/// reaches every account; the account list and the sub-account listing alike.
#[tokio::test]
async fn large_logos_page_by_size() {
    let s = spawn_stack_with(|c| c.http_body_limit_bytes = 1 << 20).await;
    let app = &s.app;
    let env = app.vendor_token().await;
    create_accounts(app, &env, &["logo-parent"]).await;
    // The largest logo allowed: 20 of them are 5 MiB, more than one 4 MiB message holds.
    let logo = "A".repeat(tenantry_common::limits::MAX_LOGO_BYTES);
    let mut expected = Vec::new();
    for i in 0..COUNT {
        let id = format!("logo-{i:02}");
        let r = app
            .post_json(
                "/tenants/resources/sub-tenants/v1",
                Some(&env),
                &json!({"tenantId": id, "name": id, "parentTenantId": "logo-parent",
                        "logo": logo}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        expected.push(id);
    }
    let ids = expected.join(",");
    let (listed, pages) = all_pages(
        app,
        &env,
        None,
        &format!("/tenants/resources/tenants/v2?_tenantIds={ids}&_sortBy=tenantId"),
    )
    .await;
    assert_eq!(listed, expected);
    assert!(pages > 1, "5 MiB of logos cannot come in one 4 MiB message");
    let (listed, pages) = all_pages(
        app,
        &env,
        Some("logo-parent"),
        "/tenants/resources/hierarchy/v1",
    )
    .await;
    assert_eq!(listed, expected);
    assert!(pages > 1);
}
