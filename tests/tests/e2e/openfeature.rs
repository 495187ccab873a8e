//! OFREP on the gateway, evaluated by the official OpenFeature SDKs (JavaScript server SDK and
//! Python SDK, each with its OFREP provider; `tenantry_tests::openfeature`) as applications
//! would, against a generated world: every (account, user, attributes, flag) of it must answer
//! what our own check (`is-entitled-to`) answers — value, justification, deciding plan — and
//! errors must reach the SDKs as OpenFeature's codes; then the same from `tenantry agent`'s
//! OFREP, from its own index. Then the bulk evaluation with its ETag, on both.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_tests::{
    Stack,
    openfeature::{self, Sdk},
};

use crate::support::{
    at, check_feature, create_account, create_feature, create_plan, eventually, expect, grant_batch,
};

const FEED_DEADLINE: Duration = Duration::from_secs(45);
/// What an unlimited `limit:` flag answers: the largest integer every JSON client reads exactly.
const UNLIMITED: u64 = (1 << 53) - 1;

/// Accounts of the world: what each holds is set up in [`world`].
const ACCOUNTS: [&str; 7] = [
    "acme",        // pro, and alice's own starter
    "globex",      // pro, expired
    "initech",     // pro, revoked
    "umbrella",    // enterprise (inherits to sub-accounts)
    "umbrella-eu", // its sub-account
    "hooli",       // nothing
    "ghost",       // no such account
];

/// Sets the world up; returns the `starter` plan's ID.
async fn world(stack: &Stack, env: &str) -> String {
    for id in ACCOUNTS
        .iter()
        .filter(|a| !matches!(**a, "ghost" | "umbrella-eu"))
    {
        create_account(stack, env, id, id).await;
    }
    expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/tenants/resources/sub-tenants/v1",
        Some(env),
        Some(json!({"tenantId": "umbrella-eu", "name": "EU", "parentTenantId": "umbrella"})),
    )
    .await;
    create_feature(stack, env, "sso", "bool", &[]).await;
    create_feature(stack, env, "seats", "max_count", &[]).await;
    let reports = create_feature(stack, env, "reports", "bool", &[]).await;
    let beta = create_feature(stack, env, "beta", "bool", &[]).await;
    create_feature(stack, env, "audit", "bool", &["audit.read"]).await;
    // `calls`: metered, a hard limit issued each month.
    expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/features/v1",
        Some(env),
        Some(
            json!({"name": "API calls", "key": "calls", "type": "metered",
                    "metering": {"unit": "call", "recurrence": "MONTH",
                                 "anchor": "2026-01-01T00:00:00Z"}}),
        ),
    )
    .await;
    // `reports` switched off for everyone; `beta` on for the `gold` plan attribute only.
    for body in [
        json!({"name": "reports", "on": false, "offTreatment": "false",
               "defaultTreatment": "true", "featureId": reports}),
        json!({"name": "beta", "on": true, "offTreatment": "false", "defaultTreatment": "false",
               "featureId": beta,
               "rules": [{"description": "gold", "conditionLogic": "and", "treatment": "true",
                          "conditions": [{"attribute": "plan", "attributeType": "custom",
                                          "negate": false, "op": "in_list",
                                          "value": {"list": ["gold"]}}]}]}),
    ] {
        expect(
            stack,
            StatusCode::CREATED,
            Method::POST,
            "/entitlements/resources/feature-flags/v1",
            Some(env),
            Some(body),
        )
        .await;
    }
    let seats = |value: Value| json!({"featureKey": "seats", "allocation": {"type": "max_count", "value": value}});
    let calls = |value: u64| json!({"featureKey": "calls", "allocation": {"type": "max_count", "value": value}});
    let pro = create_plan(
        stack,
        env,
        json!({"name": "Pro", "key": "pro", "featureKeys": ["sso", "reports", "beta", "audit"],
               "features": [seats(json!(10)), calls(100)]}),
    )
    .await;
    let starter = create_plan(
        stack,
        env,
        json!({"name": "Starter", "key": "starter", "featureKeys": ["sso"],
               "features": [seats(json!(3))]}),
    )
    .await;
    let enterprise = create_plan(
        stack,
        env,
        json!({"name": "Enterprise", "key": "enterprise", "inheritToSubAccounts": true,
               "featureKeys": ["sso"], "features": [seats(Value::Null), calls(5)]}),
    )
    .await;
    let ids = grant_batch(
        stack,
        env,
        vec![
            json!({"planId": pro, "tenantId": "acme"}),
            json!({"planId": starter, "tenantId": "acme", "userId": "alice"}),
            json!({"planId": pro, "tenantId": "globex", "expirationDate": at(-60)}),
            json!({"planId": pro, "tenantId": "initech"}),
            json!({"planId": enterprise, "tenantId": "umbrella"}),
        ],
    )
    .await;
    expect(
        stack,
        StatusCode::OK,
        Method::POST,
        &format!("/entitlements/resources/entitlements/v2/{}/revoke", ids[3]),
        Some(env),
        Some(json!({"reason": "downgrade"})),
    )
    .await;
    // Accounts reach the entitlement index through the tenant feed.
    for account in ACCOUNTS.iter().filter(|a| **a != "ghost") {
        eventually(
            FEED_DEADLINE,
            &format!("{account} in the index"),
            || async {
                let answer = check_feature(stack, env, account, "sso", json!({})).await;
                if answer["justification"] == "TENANT_NOT_FOUND" {
                    Err(answer.to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await;
    }
    // Acme has used 30 of its 100 calls; umbrella all 5 of its own.
    expect(
        stack,
        StatusCode::OK,
        Method::POST,
        "/entitlements/api/v1/usage",
        Some(env),
        Some(json!({"events": [
            {"id": "of-1", "tenantId": "acme", "featureKey": "calls", "amount": 30},
            {"id": "of-2", "tenantId": "umbrella", "featureKey": "calls", "amount": 5},
        ]})),
    )
    .await;
    starter
}

/// One SDK case and what our own check says it must answer.
struct Case {
    sdk: Value,
    expected_value: Value,
    justification: Value,
    plan_key: Value,
    /// A metered feature's meter as the check answered it (null otherwise).
    meter: Value,
}

/// The flag kinds of the key scheme, each with the SDK call type and default.
const FLAGS: [(&str, &str); 12] = [
    ("sso", "boolean"),
    ("seats", "boolean"),
    ("reports", "boolean"),
    ("beta", "boolean"),
    ("audit", "boolean"),
    ("limit:seats", "number"),
    ("allocation:seats", "object"),
    ("allocation:sso", "object"),
    ("perm:audit.read", "boolean"),
    ("calls", "boolean"),
    ("limit:calls", "number"),
    ("allocation:calls", "object"),
];

async fn cases(stack: &Stack, env: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for account in ACCOUNTS {
        for user in [None, Some("alice")] {
            for attributes in [json!({}), json!({"plan": "gold"})] {
                for (flag, kind) in FLAGS {
                    let mut context = attributes.clone();
                    context["tenantId"] = json!(account);
                    if let Some(user) = user {
                        context["targetingKey"] = json!(user);
                    }
                    let mut subject = json!({"tenantId": account, "attributes": context.clone()});
                    if let Some(user) = user {
                        subject["userId"] = json!(user);
                        if let Some(a) = subject["attributes"].as_object_mut() {
                            a.remove("targetingKey");
                        }
                    }
                    let check = if let Some(permission) = flag.strip_prefix("perm:") {
                        context["permissions"] = json!([permission]);
                        subject["permissions"] = json!([permission]);
                        json!({"subject": subject, "permission": {"permissionKey": permission}})
                    } else {
                        let feature = flag.rsplit(':').next().unwrap_or(flag);
                        json!({"subject": subject, "feature": {"featureKey": feature}})
                    };
                    let answer = expect(
                        stack,
                        StatusCode::OK,
                        Method::POST,
                        "/entitlements/api/v1/is-entitled-to",
                        Some(env),
                        Some(check),
                    )
                    .await;
                    let entitled = answer["result"] == true;
                    let meter = answer.get("meter").cloned().unwrap_or_default();
                    // A metered feature's allocation is the amount issued each period, shown
                    // with its meter (also when spent); its limit is the balance.
                    let allocation = if !meter.is_null() {
                        json!({"type": "metered", "value": answer["allocation"]["value"]})
                    } else if entitled {
                        answer["allocation"].clone()
                    } else {
                        json!({"type": "", "value": null})
                    };
                    let (default, expected_value) = match kind {
                        "boolean" => (json!(!entitled), json!(entitled)),
                        "number" if flag.ends_with(":calls") => (
                            json!(-1),
                            if meter.is_null() {
                                json!(0)
                            } else if meter["balance"].is_null() {
                                json!(UNLIMITED)
                            } else {
                                meter["balance"].clone()
                            },
                        ),
                        "number" => (
                            json!(-1),
                            if allocation["value"].is_null() {
                                json!(if entitled { UNLIMITED } else { 0 })
                            } else {
                                allocation["value"].clone()
                            },
                        ),
                        _ => (json!({"default": true}), allocation),
                    };
                    cases.push(Case {
                        sdk: json!({"flag": flag, "type": kind, "default": default,
                                    "context": context}),
                        expected_value,
                        justification: answer["justification"].clone(),
                        plan_key: answer["provenance"]["planKey"].clone(),
                        meter,
                    });
                }
            }
        }
    }
    cases
}

/// Both SDKs evaluate every case at `base_url` (with `token`; none on the agent) and answer what
/// our own check answered: value, justification, deciding plan, reason.
async fn sdks_answer_as_checks(base_url: &str, token: &str, cases: &[Case]) -> Vec<Vec<Value>> {
    let mut all = Vec::new();
    let sdk_cases: Vec<Value> = cases.iter().map(|c| c.sdk.clone()).collect();
    for sdk in [Sdk::JavaScript, Sdk::Python] {
        let results = openfeature::evaluate(sdk, base_url, token, &sdk_cases).await;
        for (case, got) in cases.iter().zip(&results) {
            let what = format!("{sdk:?} {} -> {got}", case.sdk);
            assert_eq!(got["errorCode"], Value::Null, "{what}");
            assert_eq!(got["value"], case.expected_value, "{what}");
            assert_eq!(
                got["flagMetadata"]["justification"], case.justification,
                "{what}"
            );
            assert_eq!(got["flagMetadata"]["planKey"], case.plan_key, "{what}");
            // A metered feature's meter is in every one of its flags' metadata.
            for (name, field) in [
                ("balance", "balance"),
                ("usage", "usage"),
                ("held", "held"),
                ("periodEnd", "periodEnd"),
            ] {
                assert_eq!(
                    got["flagMetadata"][name], case.meter[field],
                    "{what}: {name}"
                );
            }
            let reason = got["reason"].as_str().unwrap_or_default();
            let expected_reason = match (case.sdk["flag"].as_str(), case.justification.as_str()) {
                (Some("reports"), Some("FEATURE_FLAG_OFF")) => "DISABLED",
                (Some("beta"), Some("FEATURE_FLAG_OFF")) => "TARGETING_MATCH",
                (Some("beta"), None) => "TARGETING_MATCH",
                (_, Some(_)) => "DEFAULT",
                (_, None) => "STATIC",
            };
            assert_eq!(reason, expected_reason, "{what}");
        }
        all.push(results);
    }
    all
}

#[tokio::test]
async fn the_official_sdks_evaluate_flags_and_entitlements_as_our_checks_answer() {
    let stack = Stack::start().await;
    stack.wait_ready(Duration::from_secs(60)).await;
    let env = stack.env_token().await;
    let starter = world(&stack, &env).await;
    let cases = cases(&stack, &env).await;
    // The world covers what it should: grants, expiry, revocation, flags off and targeted.
    for j in [
        "PLAN_EXPIRED",
        "PLAN_REVOKED",
        "FEATURE_FLAG_OFF",
        "MISSING_FEATURE",
        "TENANT_NOT_FOUND",
        "USAGE_LIMIT_REACHED",
    ] {
        assert!(cases.iter().any(|c| c.justification == j), "no case is {j}");
    }
    assert!(cases.iter().any(|c| c.expected_value == json!(UNLIMITED)));
    assert!(cases.iter().any(|c| c.expected_value == json!(10)));
    // Acme's balance of calls, and what its plan issues each month.
    assert!(
        cases
            .iter()
            .any(|c| c.sdk["flag"] == "limit:calls" && c.expected_value == 70)
    );
    assert!(
        cases
            .iter()
            .any(|c| c.expected_value == json!({"type": "metered", "value": 100}))
    );
    sdks_answer_as_checks(&stack.base_url, &env, &cases).await;

    // The agent serves the same OFREP from its own index, to applications with no token, and
    // says how fresh its answers are.
    let (mut agent, agent_http, _) = stack.agent("agent");
    agent.start();
    eventually(FEED_DEADLINE, "agent ready", || async {
        let response = stack
            .http
            .get(format!("{agent_http}/readyz"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status() == StatusCode::OK {
            Ok(())
        } else {
            Err(response.status().to_string())
        }
    })
    .await;
    for results in sdks_answer_as_checks(&agent_http, "", &cases).await {
        for got in results {
            assert_eq!(got["flagMetadata"]["agentStale"], false, "{got}");
            assert_eq!(got["flagMetadata"]["agentIndexOrigin"], "service", "{got}");
        }
    }

    // Errors reach the SDKs as OpenFeature's codes, with the caller's default.
    let errors = [
        (
            json!({"flag": "no-such-feature", "type": "boolean", "default": true,
                "context": {"tenantId": "acme"}}),
            "FLAG_NOT_FOUND",
            json!(true),
        ),
        (
            json!({"flag": "limit:sso", "type": "number", "default": 7,
                "context": {"tenantId": "acme"}}),
            "FLAG_NOT_FOUND",
            json!(7),
        ),
        (
            json!({"flag": "sso", "type": "boolean", "default": true,
                "context": {"plan": "gold"}}),
            "TARGETING_KEY_MISSING",
            json!(true),
        ),
        (
            json!({"flag": "sso", "type": "boolean", "default": true,
                "context": {"tenantId": "acme", "permissions": "audit.read"}}),
            "INVALID_CONTEXT",
            json!(true),
        ),
        (
            json!({"flag": "sso", "type": "object", "default": {"d": 1},
                "context": {"tenantId": "acme"}}),
            "TYPE_MISMATCH",
            json!({"d": 1}),
        ),
    ];
    let error_cases: Vec<Value> = errors.iter().map(|(c, _, _)| c.clone()).collect();
    for (url, token) in [(stack.base_url.as_str(), env.as_str()), (&agent_http, "")] {
        for sdk in [Sdk::JavaScript, Sdk::Python] {
            let results = openfeature::evaluate(sdk, url, token, &error_cases).await;
            for ((case, code, default), got) in errors.iter().zip(&results) {
                let what = format!("{sdk:?} at {url}: {case} -> {got}");
                assert_eq!(got["errorCode"], *code, "{what}");
                assert_eq!(got["value"], *default, "{what}");
                assert_eq!(got["reason"], "ERROR", "{what}");
            }
        }
    }

    // The agent's bulk evaluation answers what the gateway's does, with its own ETag and 304.
    let context = json!({"context": {"tenantId": "acme", "targetingKey": "alice"}});
    let (status, _, on_gateway) = stack
        .call_with(
            Method::POST,
            "/ofrep/v1/evaluate/flags",
            Some(&env),
            &[],
            Some(context.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{on_gateway}");
    let agent_bulk = |etag: Option<String>| {
        let request = stack
            .http
            .post(format!("{agent_http}/ofrep/v1/evaluate/flags"))
            .json(&context);
        let request = match etag {
            Some(etag) => request.header("if-none-match", etag),
            None => request,
        };
        async move { request.send().await.expect("agent bulk") }
    };
    let response = agent_bulk(None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    let on_agent: Value = response.json().await.expect("agent bulk body");
    let values = |body: &Value| -> Vec<(Value, Value, Value)> {
        body["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .map(|f| (f["key"].clone(), f["value"].clone(), f["reason"].clone()))
            .collect()
    };
    assert_eq!(values(&on_agent), values(&on_gateway), "{on_agent}");
    assert!(
        values(&on_agent).iter().any(|(_, v, _)| *v == true),
        "{on_agent}"
    );
    assert_eq!(
        agent_bulk(Some(etag)).await.status(),
        StatusCode::NOT_MODIFIED
    );

    // A user token evaluates for itself only: its own account and user, whatever the context.
    let alice = stack.user_token("acme", "alice", &[]);
    let own = [
        json!({"flag": "limit:seats", "type": "number", "default": -1, "context": {}}),
        json!({"flag": "sso", "type": "boolean", "default": false,
               "context": {"tenantId": "globex"}}),
        json!({"flag": "sso", "type": "boolean", "default": false,
               "context": {"tenantId": "acme", "targetingKey": "bob"}}),
    ];
    for sdk in [Sdk::JavaScript, Sdk::Python] {
        let results = openfeature::evaluate(sdk, &stack.base_url, &alice, &own).await;
        // Alice's seats: the account's pro (10) and her own starter (3), the larger wins.
        assert_eq!(results[0]["value"], 10, "{sdk:?} {}", results[0]);
        for refused in &results[1..] {
            assert_eq!(refused["errorCode"], "GENERAL", "{sdk:?} {refused}");
            assert_eq!(refused["value"], false, "{sdk:?} {refused}");
        }
    }

    // Bulk: every feature's flags for a context, the ETag a 304 until an answer changes.
    let bulk = |etag: Option<String>| {
        let stack = &stack;
        let env = env.clone();
        async move {
            let headers: Vec<(&str, String)> =
                etag.map(|e| vec![("if-none-match", e)]).unwrap_or_default();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            stack
                .call_with(
                    Method::POST,
                    "/ofrep/v1/evaluate/flags",
                    Some(&env),
                    &headers,
                    Some(json!({"context": {"targetingKey": "hooli"}})),
                )
                .await
        }
    };
    let (status, headers, body) = bulk(None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: Vec<&str> = body["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .filter_map(|f| f["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "audit",
            "allocation:audit",
            "beta",
            "allocation:beta",
            "calls",
            "allocation:calls",
            "limit:calls",
            "reports",
            "allocation:reports",
            "seats",
            "allocation:seats",
            "limit:seats",
            "sso",
            "allocation:sso"
        ],
        "{body}"
    );
    assert!(
        body["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .all(|f| f["value"] == false
                || f["value"] == json!({"type": "", "value": null})
                || f["value"] == 0),
        "hooli holds nothing: {body}"
    );
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    let (status, again, _) = bulk(Some(etag.clone())).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(again["etag"].to_str().ok(), Some(etag.as_str()));
    // Hooli is granted starter: its answers change, and so does the ETag.
    grant_batch(
        &stack,
        &env,
        vec![json!({"planId": starter, "tenantId": "hooli"})],
    )
    .await;
    let (status, headers, body) = bulk(Some(etag.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(headers["etag"].to_str().ok(), Some(etag.as_str()));
    let sso = body["flags"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["key"] == "sso"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sso["value"], true, "{body}");
    assert_eq!(sso["metadata"]["planKey"], "starter", "{body}");
}
