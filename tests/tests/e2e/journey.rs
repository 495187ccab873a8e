//! The operator and user journey on one stack: an environment token, an account tree, features
//! and plans, a batch of grants, checks as users, revocation, expiry, deletion of a parent
//! account followed through the change feed; then database role isolation and a clean SIGTERM
//! of every process.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use tenantry_tests::{ENTITLEMENT_SCHEMA, Stack, TENANT_SCHEMA};

use crate::support::{
    assert_decision, at, check_feature, create_account, create_feature, create_plan, eventually,
    expect, grant_batch, grants, id_of,
};

const FEED_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_builds_accounts_and_plans_and_users_see_their_entitlements() {
    let stack = Stack::start().await;

    // -- authentication ------------------------------------------------------------------------
    let (status, body) = stack
        .call(Method::GET, "/tenants/resources/tenants/v2", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token: {body}");
    let (status, body) = stack
        .call(
            Method::POST,
            "/auth/vendor",
            None,
            Some(json!({"clientId": tenantry_tests::CLIENT_ID, "secret": "wrong-secret"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong secret: {body}");
    let env = stack.env_token().await;
    let env = env.as_str();

    // -- the account tree ----------------------------------------------------------------------
    //   acme ─┬─ acme-eu ── acme-eu-paris
    //         └─ acme-us            (created as a root, then attached)
    //   globex                      (another customer)
    create_account(&stack, env, "acme", "Acme").await;
    create_account(&stack, env, "globex", "Globex").await;
    for (id, parent) in [("acme-eu", "acme"), ("acme-eu-paris", "acme-eu")] {
        let sub = expect(
            &stack,
            StatusCode::CREATED,
            Method::POST,
            "/tenants/resources/sub-tenants/v1",
            Some(env),
            Some(json!({"tenantId": id, "name": id, "parentTenantId": parent})),
        )
        .await;
        assert_eq!(sub["parentTenantId"], parent, "{sub}");
    }
    create_account(&stack, env, "acme-us", "Acme US").await;
    let attached = expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/tenants/resources/hierarchy/v1",
        Some(env),
        Some(json!({"parentTenantId": "acme", "childTenantId": "acme-us"})),
    )
    .await;
    assert_eq!(attached["parentTenantId"], "acme", "{attached}");
    // A cycle is refused.
    let (status, body) = stack
        .call(
            Method::POST,
            "/tenants/resources/hierarchy/v1",
            Some(env),
            Some(json!({"parentTenantId": "acme-eu-paris", "childTenantId": "acme"})),
        )
        .await;
    assert!(status.is_client_error(), "cycle: {status} {body}");

    let (status, _, tree) = stack
        .call_with(
            Method::GET,
            "/tenants/resources/hierarchy/v1/tree",
            Some(env),
            &[("frontegg-tenant-id", "acme")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tree}");
    assert_eq!(
        shape(&tree),
        json!({"acme": [{"acme-eu": [{"acme-eu-paris": []}]}, {"acme-us": []}]}),
        "{tree}"
    );
    assert_eq!(
        parents(&stack, env, "acme-eu-paris").await,
        ["acme-eu", "acme"]
    );

    // -- features and plans --------------------------------------------------------------------
    create_feature(&stack, env, "sso", "bool", &["sso.configure"]).await;
    create_feature(&stack, env, "seats", "max_count", &[]).await;
    create_feature(&stack, env, "audit-log", "bool", &[]).await;
    create_feature(&stack, env, "reports", "bool", &[]).await;
    let enterprise = create_plan(
        &stack,
        env,
        json!({
            "name": "Enterprise", "key": "enterprise", "inheritToSubAccounts": true,
            "features": [
                {"featureKey": "sso"},
                {"featureKey": "seats", "allocation": {"type": "max_count", "value": 50}},
            ],
        }),
    )
    .await;
    let pro = create_plan(
        &stack,
        env,
        json!({
            "name": "Pro", "key": "pro",
            "featureKeys": ["audit-log"],
            "features": [{"featureKey": "seats", "allocation": {"type": "max_count", "value": 10}}],
        }),
    )
    .await;
    let reports = create_plan(
        &stack,
        env,
        json!({"name": "Reports add-on", "key": "reports-addon", "featureKeys": ["reports"]}),
    )
    .await;
    let plan = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        &format!("/entitlements/resources/plans/v1/{enterprise}"),
        Some(env),
        None,
    )
    .await;
    assert_eq!(plan["inheritToSubAccounts"], true, "{plan}");
    let mut keys: Vec<&str> = plan["features"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["key"].as_str()).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(keys, ["seats", "sso"], "{plan}");

    // -- grants in one batch -------------------------------------------------------------------
    // All or nothing: one good item and two bad ones write nothing and name the bad ones.
    let (status, body) = stack
        .call(
            Method::POST,
            "/entitlements/resources/entitlements/v2/batch",
            Some(env),
            Some(json!({"entitlements": [
                {"planId": pro, "tenantId": "globex"},
                {"planKey": "no-such-plan", "tenantId": "globex"},
                {"planId": pro, "tenantId": "no-such-account"},
            ]})),
        )
        .await;
    assert!(status.is_client_error(), "bad batch: {status} {body}");
    let mut bad: Vec<u64> = body["itemErrors"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["index"].as_u64()).collect())
        .unwrap_or_default();
    bad.sort_unstable();
    bad.dedup();
    assert_eq!(bad, [1, 2], "bad batch items: {body}");
    assert!(grants(&stack, env, "tenantIds=globex").await.is_empty());

    let ids = grant_batch(
        &stack,
        env,
        vec![
            json!({"planId": enterprise, "tenantId": "acme"}),
            json!({"planId": pro, "tenantId": "acme-eu", "startsAt": at(-3600)}),
            json!({"planId": reports, "tenantId": "acme-eu-paris", "userId": "u-paris-1"}),
            json!({"planKey": "pro", "tenantId": "acme-us"}),
            json!({"planId": pro, "tenantId": "globex", "startsAt": at(86_400)}),
            json!({"planId": reports, "tenantId": "acme-eu", "expirationDate": at(30 * 86_400)}),
        ],
    )
    .await;
    let expected = [
        ("enterprise", "acme", None, "active"),
        ("pro", "acme-eu", None, "active"),
        (
            "reports-addon",
            "acme-eu-paris",
            Some("u-paris-1"),
            "active",
        ),
        ("pro", "acme-us", None, "active"),
        ("pro", "globex", None, "scheduled"),
        ("reports-addon", "acme-eu", None, "active"),
    ];
    for (id, (plan_key, tenant, user, status)) in ids.iter().zip(expected) {
        let grant = get_grant(&stack, env, id).await;
        assert_eq!(grant["planKey"], plan_key, "{grant}");
        assert_eq!(grant["tenantId"], tenant, "{grant}");
        assert_eq!(grant["userId"].as_str(), user, "{grant}");
        assert_eq!(grant["status"], status, "{grant}");
    }

    // -- checks as users -----------------------------------------------------------------------
    let acme_admin = stack.user_token("acme", "u-acme-1", &["sso.configure"]);
    let acme_member = stack.user_token("acme", "u-acme-2", &[]);
    let eu_user = stack.user_token("acme-eu", "u-eu-1", &[]);
    let paris_1 = stack.user_token("acme-eu-paris", "u-paris-1", &[]);
    let paris_2 = stack.user_token("acme-eu-paris", "u-paris-2", &[]);
    let us_user = stack.user_token("acme-us", "u-us-1", &[]);
    let globex_user = stack.user_token("globex", "u-globex-1", &[]);

    let answer = check_feature(&stack, &acme_admin, "acme", "sso", json!({})).await;
    assert_decision(&answer, true, None, "acme sso");
    assert_eq!(answer["provenance"]["grantId"], ids[0], "{answer}");
    assert_eq!(answer["provenance"]["planKey"], "enterprise", "{answer}");
    assert_eq!(answer["provenance"]["level"], "account", "{answer}");
    assert_eq!(
        agent_feature(&stack, &acme_admin, "acme", "u-acme-1", "sso").await,
        (true, None)
    );

    // Inherited from an ancestor, merged with the account's own grant (max of 50 and 10).
    let answer = check_feature(&stack, &eu_user, "acme-eu", "sso", json!({})).await;
    assert_decision(&answer, true, None, "acme-eu inherits sso");
    assert_eq!(answer["provenance"]["level"], "ancestor", "{answer}");
    assert_eq!(answer["provenance"]["grantedTenantId"], "acme", "{answer}");
    let answer = check_feature(&stack, &eu_user, "acme-eu", "seats", json!({})).await;
    assert_decision(&answer, true, None, "acme-eu seats");
    assert_eq!(
        answer["allocation"],
        json!({"type": "max_count", "value": 50}),
        "{answer}"
    );
    let answer = check_feature(
        &stack,
        &eu_user,
        "acme-eu",
        "seats",
        json!({"requestedAmount": 60}),
    )
    .await;
    assert_decision(&answer, false, Some("LIMIT_EXCEEDED"), "60 of 50 seats");
    let answer = check_feature(&stack, &paris_1, "acme-eu-paris", "sso", json!({})).await;
    assert_decision(&answer, true, None, "grandchild inherits sso");
    assert_eq!(answer["provenance"]["grantedTenantId"], "acme", "{answer}");

    // A grant to one user of an account.
    let answer = check_feature(&stack, &paris_1, "acme-eu-paris", "reports", json!({})).await;
    assert_decision(&answer, true, None, "user grant");
    assert_eq!(answer["provenance"]["level"], "user", "{answer}");
    assert_eq!(answer["provenance"]["grantId"], ids[2], "{answer}");
    let answer = check_feature(&stack, &paris_2, "acme-eu-paris", "reports", json!({})).await;
    assert_decision(&answer, false, Some("MISSING_FEATURE"), "other user");
    assert_eq!(
        agent_feature(&stack, &paris_2, "acme-eu-paris", "u-paris-2", "reports").await,
        (false, Some("MISSING_FEATURE".to_owned()))
    );

    // Permissions come from the user token: linked to an entitled feature, or missing.
    let permission = |token: &str| {
        let token = token.to_owned();
        let stack = &stack;
        async move {
            expect(
                stack,
                StatusCode::OK,
                Method::POST,
                "/entitlements/api/v1/is-entitled-to",
                Some(&token),
                Some(json!({
                    "subject": {"tenantId": "acme"},
                    "permission": {"permissionKey": "sso.configure"},
                })),
            )
            .await
        }
    };
    assert_decision(
        &permission(&acme_admin).await,
        true,
        None,
        "permission held",
    );
    assert_decision(
        &permission(&acme_member).await,
        false,
        Some("MISSING_PERMISSION"),
        "permission not held",
    );

    // A scheduled grant is not active yet, and says when that changes.
    let answer = check_feature(&stack, &globex_user, "globex", "audit-log", json!({})).await;
    assert_decision(&answer, false, Some("NOT_STARTED"), "scheduled grant");
    assert!(answer["nextChangeAt"].is_string(), "{answer}");
    let answer = check_feature(&stack, &globex_user, "globex", "sso", json!({})).await;
    assert_decision(&answer, false, Some("MISSING_FEATURE"), "globex sso");

    // A user token never reaches another customer's account; a management route needs an
    // environment token.
    let (status, body) = stack
        .call(
            Method::POST,
            "/entitlements/api/v1/is-entitled-to",
            Some(&globex_user),
            Some(json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "sso"}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "cross-tenant check: {body}");
    let (status, body) = stack
        .call(
            Method::GET,
            "/tenants/resources/tenants/v2",
            Some(&acme_admin),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "user token on management: {body}"
    );

    // -- revocation ----------------------------------------------------------------------------
    let (status, headers, revoked) = stack
        .call_with(
            Method::POST,
            &format!("/entitlements/resources/entitlements/v2/{}/revoke", ids[3]),
            Some(env),
            &[],
            Some(json!({"reason": "downgrade"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    assert_eq!(revoked["revokeReason"], "downgrade", "{revoked}");
    assert!(revoked["revokedAt"].is_string(), "{revoked}");
    let after_revoke = revision(&headers);
    let answer = check_feature(
        &stack,
        &us_user,
        "acme-us",
        "audit-log",
        json!({"minRevision": after_revoke}),
    )
    .await;
    assert_decision(&answer, false, Some("PLAN_REVOKED"), "revoked grant");
    // The ancestor's grant still applies to the attached account.
    let answer = check_feature(&stack, &us_user, "acme-us", "sso", json!({})).await;
    assert_decision(&answer, true, None, "acme-us inherits sso");

    // -- expiry: the batch PATCH moves an expiry into the past ----------------------------------
    let answer = check_feature(&stack, &eu_user, "acme-eu", "audit-log", json!({})).await;
    assert_decision(&answer, true, None, "before expiry");
    let (status, headers, patched) = stack
        .call_with(
            Method::PATCH,
            "/entitlements/resources/entitlements/v2/batch",
            Some(env),
            &[],
            Some(json!({"entitlements": [{"id": ids[1], "expirationDate": at(-60)}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["entitlementIds"], json!([ids[1]]), "{patched}");
    let after_patch = revision(&headers);
    let answer = check_feature(
        &stack,
        &eu_user,
        "acme-eu",
        "audit-log",
        json!({"minRevision": after_patch}),
    )
    .await;
    assert_decision(&answer, false, Some("PLAN_EXPIRED"), "expired grant");
    assert_eq!(
        agent_feature(&stack, &eu_user, "acme-eu", "u-eu-1", "audit-log").await,
        (false, Some("PLAN_EXPIRED".to_owned()))
    );
    assert_eq!(get_grant(&stack, env, &ids[1]).await["status"], "expired");

    // -- deleting a parent account ---------------------------------------------------------------
    let answer = check_feature(&stack, &eu_user, "acme-eu", "reports", json!({})).await;
    assert_decision(&answer, true, None, "acme-eu reports before deletion");
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        "/tenants/resources/tenants/v1/acme-eu",
        Some(env),
        None,
    )
    .await;
    let gone = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2/acme-eu",
        Some(env),
        None,
    )
    .await;
    assert_eq!(gone, json!([]), "a deleted account reads as an empty array");
    let child = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2/acme-eu-paris",
        Some(env),
        None,
    )
    .await;
    assert_eq!(child["parentTenantId"], "acme", "re-parented: {child}");
    assert_eq!(parents(&stack, env, "acme-eu-paris").await, ["acme"]);

    // The entitlement service learns of the deletion from the change feed.
    let revoked = eventually(FEED_DEADLINE, "acme-eu's grant revoked", || async {
        let grant = get_grant(&stack, env, &ids[5]).await;
        if grant["status"] == "revoked" {
            Ok(grant)
        } else {
            Err(grant.to_string())
        }
    })
    .await;
    assert_eq!(revoked["revokeReason"], "tenant_deleted", "{revoked}");
    let answer = check_feature(&stack, &eu_user, "acme-eu", "reports", json!({})).await;
    assert_eq!(answer["result"], false, "deleted account: {answer}");
    // The re-parented child keeps its own grant and inherits from its new parent.
    assert_eq!(get_grant(&stack, env, &ids[2]).await["status"], "active");
    let answer = check_feature(&stack, &paris_1, "acme-eu-paris", "sso", json!({})).await;
    assert_decision(&answer, true, None, "re-parented child inherits sso");
    assert_eq!(answer["provenance"]["grantedTenantId"], "acme", "{answer}");
    let answer = check_feature(&stack, &paris_1, "acme-eu-paris", "reports", json!({})).await;
    assert_decision(
        &answer,
        true,
        None,
        "re-parented child keeps its user grant",
    );

    // -- each service's database role cannot read the other's schema ----------------------------
    assert_schema_private(&stack, TENANT_SCHEMA, &stack.entitlement_db_url).await;
    assert_schema_private(&stack, ENTITLEMENT_SCHEMA, &stack.tenant_db_url).await;

    // -- SIGTERM lets every process exit cleanly ------------------------------------------------
    let mut stack = stack;
    for process in [
        &mut stack.gateway,
        &mut stack.entitlement,
        &mut stack.tenant,
    ] {
        let status = process.terminate().await;
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            process.logs()
        );
    }
}

/// `{"id": [children...]}` of a tree node, children ordered by ID.
fn shape(node: &Value) -> Value {
    let mut children: Vec<Value> = node["children"]
        .as_array()
        .map(|c| c.iter().map(shape).collect())
        .unwrap_or_default();
    children.sort_by_key(Value::to_string);
    let id = node["tenantId"].as_str().unwrap_or("?").to_owned();
    json!({ id: children })
}

/// The ancestors of an account, nearest first.
async fn parents(stack: &Stack, env: &str, tenant_id: &str) -> Vec<String> {
    let (status, _, body) = stack
        .call_with(
            Method::GET,
            "/tenants/resources/hierarchy/v1/parents",
            Some(env),
            &[("frontegg-tenant-id", tenant_id)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {body}"))
        .iter()
        .map(|e| e["tenantId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn get_grant(stack: &Stack, env: &str, id: &str) -> Value {
    let grant = expect(
        stack,
        StatusCode::OK,
        Method::GET,
        &format!("/entitlements/resources/entitlements/v2/{id}"),
        Some(env),
        None,
    )
    .await;
    assert_eq!(id_of(&grant), id);
    grant
}

/// The revision a write answered with (`x-tenantry-revision`).
fn revision(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("x-tenantry-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-tenantry-revision in {headers:?}"))
}

/// Frontegg's agent check: `(result, justification)`.
async fn agent_feature(
    stack: &Stack,
    token: &str,
    tenant_id: &str,
    user_id: &str,
    feature_key: &str,
) -> (bool, Option<String>) {
    let answer = expect(
        stack,
        StatusCode::OK,
        Method::POST,
        "/v1/data/e10s/features/is_entitled_to_input_feature",
        Some(token),
        Some(json!({"input": {
            "subjectContext": {"tenantId": tenant_id, "userId": user_id, "permissions": []},
            "requestContext": {"featureKey": feature_key},
        }})),
    )
    .await;
    assert!(answer["decision_id"].is_string(), "{answer}");
    assert!(answer["metrics"].is_object(), "{answer}");
    assert_eq!(answer["result"]["monitoring"], false, "{answer}");
    let result = answer["result"]["result"]
        .as_bool()
        .unwrap_or_else(|| panic!("no result.result in {answer}"));
    let justification = answer["result"]["justification"]
        .as_str()
        .map(str::to_owned);
    (result, justification)
}

/// `schema` has tables, and the role of `other_url` can read none of them.
async fn assert_schema_private(stack: &Stack, schema: &str, other_url: &str) {
    let admin = Database::connect(stack.admin_db_url.clone())
        .await
        .expect("connect as admin");
    let tables: Vec<String> = admin
        .query_all_raw(Statement::from_string(
            admin.get_database_backend(),
            format!(
                "SELECT table_name::text AS name FROM information_schema.tables \
                 WHERE table_schema = '{schema}' ORDER BY 1"
            ),
        ))
        .await
        .expect("list tables")
        .iter()
        .map(|row| row.try_get::<String>("", "name").expect("table name"))
        .collect();
    admin.close().await.expect("close admin");
    assert!(!tables.is_empty(), "schema {schema} has no tables");

    // The owner reads its own tables (so the refusal below is about the schema, not the login).
    let owner_url = if schema == TENANT_SCHEMA {
        &stack.tenant_db_url
    } else {
        &stack.entitlement_db_url
    };
    let owner = Database::connect(owner_url.clone())
        .await
        .expect("connect as the owning role");
    for table in &tables {
        owner
            .query_all_raw(Statement::from_string(
                owner.get_database_backend(),
                format!("SELECT * FROM \"{schema}\".\"{table}\" LIMIT 1"),
            ))
            .await
            .unwrap_or_else(|e| panic!("{schema}.{table} unreadable by its owner: {e}"));
    }
    owner.close().await.expect("close");

    let other = Database::connect(other_url.to_owned())
        .await
        .expect("connect as the other service's role");
    for table in &tables {
        let denied = other
            .query_all_raw(Statement::from_string(
                other.get_database_backend(),
                format!("SELECT * FROM \"{schema}\".\"{table}\" LIMIT 1"),
            ))
            .await
            .expect_err(&format!("{schema}.{table} readable by the other role"));
        assert!(
            denied.to_string().contains("permission denied"),
            "{schema}.{table}: {denied}"
        );
    }
    other.close().await.expect("close");
}
