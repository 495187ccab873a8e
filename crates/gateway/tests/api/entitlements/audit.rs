//! `GET /audit/api/v1/events`: both services' audit entries as one list, newest first, through
//! the real gateway and services: the environment client and the request ID are named, filters
//! hold, cursor pages cover every entry once, bad input is 400 naming the field, and a user
//! token (a tenant) cannot read the log. `GET /audit/api/v1/events/export`: the same entries
//! as NDJSON, oldest first, resumable from any line's cursor. With `audit_enabled = false`
//! nothing is recorded and both reads say so.

use serde_json::{Value, json};

use super::{
    BATCH, FEATURES as FEATURES_V1, FEATURES_V2, FLAGS, GRANTS, PLANS, ROUTES, Stack, spawn_stack,
    spawn_stack_with,
};
use crate::helpers::{CLIENT_ID, assert_error_shape, user_claims, user_token};

const EVENTS: &str = "/audit/api/v1/events";
const EXPORT: &str = "/audit/api/v1/events/export";
/// Before every entry of a test.
const LONG_AGO: &str = "2000-01-01T00:00:00Z";

/// An export's lines (status 200 and NDJSON asserted), each entry without its cursor, and the
/// cursors.
async fn export(s: &Stack, query: &str) -> (Vec<Value>, Vec<String>) {
    let auth = format!("Bearer {}", s.env);
    let (status, headers, body) = s
        .app
        .request_raw(
            "GET",
            &format!("{EXPORT}?{query}"),
            &[("authorization", &auth)],
            None,
        )
        .await;
    let text = String::from_utf8(body).expect("UTF-8");
    assert_eq!(status, 200, "{query}: {text}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let mut entries = Vec::new();
    let mut cursors = Vec::new();
    for line in text.lines() {
        let mut entry: Value = serde_json::from_str(line).expect("one JSON object per line");
        let cursor = entry
            .as_object_mut()
            .and_then(|o| o.remove("cursor"))
            .expect("each line has a cursor");
        cursors.push(cursor.as_str().expect("a string").to_owned());
        entries.push(entry);
    }
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    (entries, cursors)
}

/// The list's entries for `query`, every page, oldest first (as an export gives them).
async fn listed_oldest_first(s: &Stack, query: &str) -> Vec<Value> {
    let page = s.get(&format!("{EVENTS}?limit=100&{query}")).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(page.body["nextCursor"], Value::Null, "one page holds them");
    let mut items = page.body["items"].as_array().unwrap().clone();
    items.reverse();
    items
}

#[tokio::test]
async fn the_export_streams_what_the_list_pages_and_resumes_from_a_line() {
    let s = spawn_stack().await;
    for i in 0..3 {
        s.account(&format!("t{i}"), None).await;
        s.feature(json!({"key": format!("f{i}"), "name": "F"}))
            .await;
    }
    let r = s
        .app
        .send_json(
            "PUT",
            "/tenants/resources/tenants/v1/t1",
            Some(&s.env),
            &json!({"name": "renamed"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Everything: the list's entries, oldest first, both services merged.
    let (all, cursors) = export(&s, &format!("from={LONG_AGO}")).await;
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(all, listed_oldest_first(&s, "").await);
    // The same filters as the list.
    for filter in [
        "resourceType=feature",
        "action=account.update",
        "resourceId=t1",
        &format!("actor=environment:{CLIENT_ID}"),
        "actor=user:nobody",
    ] {
        let (filtered, _) = export(&s, &format!("from={LONG_AGO}&{filter}")).await;
        assert_eq!(filtered, listed_oldest_first(&s, filter).await, "{filter}");
    }
    let (features, _) = export(&s, &format!("from={LONG_AGO}&resourceType=feature")).await;
    assert_eq!(features.len(), 3);
    // A time range after every entry is empty.
    let (none, _) = export(&s, "from=2999-01-01T00:00:00Z&to=2999-01-02T00:00:00Z").await;
    assert!(none.is_empty());

    // Continued after any line, it gives the rest.
    for (i, cursor) in cursors.iter().enumerate() {
        let (rest, _) = export(&s, &format!("from={LONG_AGO}&cursor={cursor}")).await;
        assert_eq!(rest, all[i + 1..], "after line {i}");
    }

    // Compressed, an export ends as it should, empty or not (the compression polled the
    // ended body again, which panicked the handler's stream: the connection was cut).
    let auth = format!("Bearer {}", s.env);
    for query in [
        format!("from={LONG_AGO}"),
        format!("from={LONG_AGO}&actor=user:nobody"),
    ] {
        let (status, headers, _) = s
            .app
            .request_raw(
                "GET",
                &format!("{EXPORT}?{query}"),
                &[("authorization", &auth), ("accept-encoding", "gzip")],
                None,
            )
            .await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(headers["content-encoding"], "gzip", "{query}");
    }

    // A user token (a tenant) cannot export the log.
    s.account("acme", None).await;
    let token = user_token(&user_claims(
        "acme",
        "ann",
        &["fe.account-settings.write.account"],
    ));
    let denied = s
        .app
        .get(&format!("{EXPORT}?from={LONG_AGO}"), Some(&token))
        .await;
    assert_error_shape(&denied, 403);

    // Bad input is 400 naming the parameter, before any line.
    for (query, field) in [
        (String::new(), "from"),
        ("from=yesterday".to_owned(), "from"),
        (format!("from={LONG_AGO}&to=1999-01-01T00:00:00Z"), "to"),
        ("from=2999-01-01T00:00:00Z".to_owned(), "to"),
        (format!("from={LONG_AGO}&cursor=garbage"), "cursor"),
        (format!("from={LONG_AGO}&actor="), "actor"),
        (format!("from={LONG_AGO}&limit=5"), "limit"),
    ] {
        let r = s.get(&format!("{EXPORT}?{query}")).await;
        assert_error_shape(&r, 400);
        assert!(r.body.to_string().contains(field), "{query}: {:?}", r.body);
    }
}

#[tokio::test]
async fn with_the_audit_log_off_writes_record_nothing_and_reads_say_so() {
    let s = spawn_stack_with(|c| c.audit_enabled = false).await;
    s.account("t0", None).await;
    s.feature(json!({"key": "f0", "name": "F"})).await;
    for path in [EVENTS.to_owned(), format!("{EXPORT}?from={LONG_AGO}")] {
        let r = s.get(&path).await;
        assert_error_shape(&r, 409);
        assert_eq!(r.body["reason"], "AUDIT_DISABLED", "{path}: {:?}", r.body);
        assert!(
            r.body.to_string().contains("audit_enabled"),
            "{path}: {:?}",
            r.body
        );
    }
    let db = sea_orm::Database::connect(s.db.as_str()).await.unwrap();
    for schema in ["tenant", "entitlement"] {
        let row = sea_orm::ConnectionTrait::query_one_raw(
            &db,
            sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT COUNT(*)::BIGINT AS n FROM {schema}.audit_log"),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        let n: i64 = row.try_get("", "n").unwrap();
        assert_eq!(n, 0, "{schema}.audit_log");
    }
}

#[tokio::test]
async fn the_audit_log_merges_both_services_filters_and_pages() {
    let s = spawn_stack().await;
    let env_actor = format!("environment:{CLIENT_ID}");
    // Alternate writes between the services, each with its own request ID.
    let auth = format!("Bearer {}", s.env);
    for i in 0..3 {
        let request_id = format!("req-account-{i}");
        let body = json!({"tenantId": format!("t{i}"), "name": "T"}).to_string();
        let r = s
            .app
            .request(
                "POST",
                "/tenants/resources/tenants/v1",
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                    ("x-request-id", &request_id),
                ],
                Some(body.into_bytes()),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        s.feature(json!({"key": format!("f{i}"), "name": "F"}))
            .await;
    }

    let page = s.get(&format!("{EVENTS}?limit=100")).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{items:?}");
    assert_eq!(page.body["nextCursor"], Value::Null);
    let services: Vec<&str> = items
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert_eq!(services.iter().filter(|s| **s == "tenant").count(), 3);
    assert!(items.iter().all(|e| e["actor"] == json!(env_actor)));
    let account = items
        .iter()
        .find(|e| e["resourceId"] == "t1")
        .expect("the account's entry");
    assert_eq!(account["action"], "account.create");
    assert_eq!(account["requestId"], "req-account-1");
    assert_eq!(account["before"], Value::Null);
    assert_eq!(account["after"]["name"], "T");
    // Every entry of a gateway request names the request, the gateway's own ID when the caller
    // sent none.
    assert!(
        items.iter().all(|e| e["requestId"].is_string()),
        "{items:?}"
    );

    // Filters.
    let features = s.get(&format!("{EVENTS}?resourceType=feature")).await;
    let keys: Vec<&Value> = features.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["after"]["key"])
        .collect();
    assert_eq!(keys, [&json!("f2"), &json!("f1"), &json!("f0")]);
    let created = s
        .get(&format!("{EVENTS}?action=account.create&resourceId=t0"))
        .await;
    assert_eq!(created.body["items"].as_array().unwrap().len(), 1);
    let nobody = s.get(&format!("{EVENTS}?actor=user:nobody")).await;
    assert_eq!(nobody.body["items"], json!([]));

    // Pages of two cover every entry once, in the same order as one page.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("{EVENTS}?limit=2&cursor={c}"),
            None => format!("{EVENTS}?limit=2"),
        };
        let r = s.get(&path).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        paged.extend(r.body["items"].as_array().unwrap().iter().cloned());
        cursor = r.body["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "paging ends");
    assert_eq!(&paged, items);

    // Bad input is 400 naming the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=garbage", "cursor"),
        ("from=yesterday", "from"),
        ("from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", "to"),
    ] {
        let r = s.get(&format!("{EVENTS}?{query}")).await;
        assert_error_shape(&r, 400);
        assert!(r.body.to_string().contains(field), "{query}: {:?}", r.body);
    }
}

#[tokio::test]
async fn a_user_token_write_names_the_user_and_a_tenant_cannot_read_the_log() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    let token = user_token(&user_claims(
        "acme",
        "ann",
        &["fe.account-settings.write.account"],
    ));
    let auth = format!("Bearer {token}");
    let r = s
        .app
        .request(
            "PUT",
            "/tenants/resources/account-settings/v1",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            Some(json!({"timezone": "Europe/Paris"}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let page = s
        .get(&format!("{EVENTS}?action=account.settings.update"))
        .await;
    let [entry] = page.body["items"].as_array().unwrap().as_slice() else {
        panic!("one settings entry: {:?}", page.body);
    };
    assert_eq!(entry["actor"], "user:ann");
    assert_eq!(entry["before"]["settings"]["timezone"], Value::Null);
    assert_eq!(entry["after"]["settings"]["timezone"], "Europe/Paris");

    let denied = s.app.get(EVENTS, Some(&token)).await;
    assert_error_shape(&denied, 403);
}

/// Operations of the document that write nothing, so record nothing, with why.
const NOT_WRITES: &[(&str, &str, &str)] = &[
    (
        "post",
        "/auth/vendor",
        "issues an environment token from the configured credentials",
    ),
    (
        "post",
        "/entitlements/api/v1/is-entitled-to",
        "a check: reads the index",
    ),
    (
        "post",
        "/entitlements/api/v1/is-entitled-to/batch",
        "checks: read the index",
    ),
    (
        "post",
        "/entitlements/api/v1/accounts/{tenantId}/what-if",
        "a preview of hypothetical grants: reads the index (and past meters), writes nothing",
    ),
    (
        "post",
        "/ofrep/v1/evaluate/flags",
        "flag evaluations: read the index",
    ),
    (
        "post",
        "/ofrep/v1/evaluate/flags/{key}",
        "a flag evaluation: reads the index",
    ),
    (
        "post",
        "/v1/data/e10s/features/is_entitled_to_input_feature",
        "Frontegg's agent check: reads the index",
    ),
    (
        "post",
        "/v1/data/e10s/permissions/is_entitled_to_input_permission",
        "Frontegg's agent check: reads the index",
    ),
    (
        "post",
        "/v1/data/e10s/routes/is_entitled_to_input_route",
        "Frontegg's agent check: reads the index",
    ),
    (
        "post",
        "/entitlements/api/v1/usage",
        "usage is data, not an administrative change: each event is kept as its own record",
    ),
    (
        "post",
        "/entitlements/api/v1/usage/cloudevents",
        "usage is data, not an administrative change: each event is kept as its own record",
    ),
    (
        "post",
        "/entitlements/api/v1/usage/consume",
        "a consumption is usage (data), kept as its own record with its answer",
    ),
    (
        "post",
        "/entitlements/api/v1/reservations",
        "a reservation is usage (data), kept as its own record with its answer",
    ),
    (
        "post",
        "/entitlements/api/v1/reservations/{reservationId}/commit",
        "a commit is usage (data): the reservation's record and a usage event keep it",
    ),
    (
        "post",
        "/entitlements/api/v1/reservations/{reservationId}/release",
        "a release is usage (data): the reservation's record keeps it",
    ),
];

/// One write of the walk: its operation, the request, and the actions it must record (one
/// per changed item).
struct Step {
    method: &'static str,
    template: &'static str,
    path: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
    user: Option<String>,
    expected: Vec<&'static str>,
}

fn step(method: &'static str, template: &'static str, path: impl Into<String>) -> Step {
    Step {
        method,
        template,
        path: path.into(),
        body: None,
        headers: Vec::new(),
        user: None,
        expected: Vec::new(),
    }
}

impl Step {
    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn records(mut self, actions: &[&'static str]) -> Self {
        self.expected = actions.to_vec();
        self
    }
}

/// Every write operation of the served OpenAPI document, called once with a valid request,
/// leaves exactly one audit entry per item it changes, naming the caller and the right action.
/// The operations are read from the document: one added later without a step here (or a reason
/// in [`NOT_WRITES`]) fails this test.
#[tokio::test]
async fn every_write_route_of_the_document_records_its_audit_entries() {
    let s = spawn_stack().await;
    let doc = s.app.get("/openapi.json", None).await.body;
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.insert((method.to_owned(), path.clone()));
            }
        }
    }

    let env_actor = format!("environment:{CLIENT_ID}");
    let mut covered = std::collections::BTreeSet::new();
    let mut expected: Vec<(String, String, Vec<&'static str>)> = Vec::new();
    let mut n = 0;
    // Runs a step with its own request ID and returns its answer.
    let mut run = |st: Step| {
        n += 1;
        let request_id = format!("audit-step-{n}");
        let token = st.user.clone().unwrap_or_else(|| s.env.clone());
        let actor = if st.user.is_some() {
            "user:ann".to_owned()
        } else {
            env_actor.clone()
        };
        covered.insert((st.method.to_owned(), st.template.to_owned()));
        expected.push((request_id.clone(), actor, st.expected.clone()));
        let app = &s.app;
        async move {
            let auth = format!("Bearer {token}");
            let mut headers: Vec<(&str, &str)> = vec![
                ("authorization", auth.as_str()),
                ("x-request-id", request_id.as_str()),
            ];
            if st.body.is_some() {
                headers.push(("content-type", "application/json"));
            }
            for (name, value) in &st.headers {
                headers.push((name, value.as_str()));
            }
            let r = app
                .request(
                    &st.method.to_uppercase(),
                    &st.path,
                    &headers,
                    st.body.as_ref().map(|b| b.to_string().into_bytes()),
                )
                .await;
            assert!(
                (200..300).contains(&r.status),
                "{} {}: {} {:?}",
                st.method,
                st.path,
                r.status,
                r.body
            );
            r.body
        }
    };

    // A webhook endpoint first, so the writes below queue deliveries to it (a public address
    // nothing answers on here: the attempts fail, the log holds them).
    const WEBHOOKS: &str = "/entitlements/api/v1/webhooks";
    let hook = run(step("post", WEBHOOKS, WEBHOOKS)
        .body(json!({"url": "https://93.184.216.34/hook"}))
        .records(&["webhook.create"]))
    .await;
    let hook = hook["id"].as_str().unwrap().to_owned();

    // Accounts, memberships, settings, the hierarchy, migrations.
    const ACCOUNT: &str = "/tenants/resources/tenants/v1/{tenantId}";
    run(step(
        "post",
        "/tenants/resources/tenants/v1",
        "/tenants/resources/tenants/v1",
    )
    .body(json!({"tenantId": "acme", "name": "Acme"}))
    .records(&["account.create"]))
    .await;
    run(step("put", ACCOUNT, "/tenants/resources/tenants/v1/acme")
        .body(json!({"name": "Acme 1"}))
        .records(&["account.update"]))
    .await;
    run(step(
        "put",
        "/tenants/resources/tenants/v2/{tenantId}",
        "/tenants/resources/tenants/v2/acme",
    )
    .body(json!({"name": "Acme 2"}))
    .records(&["account.update"]))
    .await;
    run(step(
        "post",
        "/tenants/resources/tenants/v1/{tenantId}/metadata",
        "/tenants/resources/tenants/v1/acme/metadata",
    )
    .body(json!({"metadata": {"tier": "gold"}}))
    .records(&["account.metadata.update"]))
    .await;
    run(step(
        "delete",
        "/tenants/resources/tenants/v1/{tenantId}/metadata/{key}",
        "/tenants/resources/tenants/v1/acme/metadata/tier",
    )
    .records(&["account.metadata.delete"]))
    .await;
    run(step(
        "post",
        "/tenants/resources/tenants/v1/{tenantId}/users",
        "/tenants/resources/tenants/v1/acme/users",
    )
    .body(json!({"userId": "ann"}))
    .records(&["membership.add"]))
    .await;
    run(step(
        "delete",
        "/tenants/resources/tenants/v1/{tenantId}/users/{userId}",
        "/tenants/resources/tenants/v1/acme/users/ann",
    )
    .records(&["membership.remove"]))
    .await;
    run(step(
        "put",
        "/tenants/resources/account-settings/v1",
        "/tenants/resources/account-settings/v1",
    )
    .header("frontegg-tenant-id", "acme")
    .body(json!({"timezone": "Europe/Paris"}))
    .records(&["account.settings.update"]))
    .await;
    run(step(
        "post",
        "/tenants/resources/sub-tenants/v1",
        "/tenants/resources/sub-tenants/v1",
    )
    .body(json!({"tenantId": "sub", "name": "Sub", "parentTenantId": "acme"}))
    .records(&["account.create"]))
    .await;
    run(step(
        "put",
        "/tenants/resources/sub-tenants/v1/{tenantId}/management",
        "/tenants/resources/sub-tenants/v1/sub/management",
    )
    .body(json!({"isReseller": true}))
    .records(&["account.reseller.update"]))
    .await;
    run(step(
        "put",
        "/tenants/resources/sub-tenants/v1/{tenantId}/hierarchy-settings",
        "/tenants/resources/sub-tenants/v1/sub/hierarchy-settings",
    )
    .body(json!({"subAccountAccessType": "alwaysOn"}))
    .records(&["account.access_type.update"]))
    .await;
    run(step(
        "delete",
        "/tenants/resources/sub-tenants/v1/{tenantId}",
        "/tenants/resources/sub-tenants/v1/sub",
    )
    .records(&["account.delete"]))
    .await;
    s.account("child", None).await;
    let pair = json!({"parentTenantId": "acme", "childTenantId": "child"});
    run(step(
        "post",
        "/tenants/resources/hierarchy/v1",
        "/tenants/resources/hierarchy/v1",
    )
    .body(pair.clone())
    .records(&["hierarchy.attach"]))
    .await;
    run(step(
        "delete",
        "/tenants/resources/hierarchy/v1",
        "/tenants/resources/hierarchy/v1",
    )
    .body(pair)
    .records(&["hierarchy.detach"]))
    .await;
    run(step(
        "post",
        "/tenants/resources/migrations/v1/tenants",
        "/tenants/resources/migrations/v1/tenants",
    )
    .body(json!({"tenants": ["m-1"]}))
    .records(&["migration.submit"]))
    .await;
    run(
        step("delete", ACCOUNT, "/tenants/resources/tenants/v1/child").records(&["account.delete"]),
    )
    .await;
    s.account("gone", None).await;
    let user = user_token(&user_claims(
        "gone",
        "ann",
        &["fe.account-settings.delete.account"],
    ));
    let mut own = step(
        "delete",
        "/tenants/resources/tenants/v1",
        "/tenants/resources/tenants/v1",
    )
    .records(&["account.delete"]);
    own.user = Some(user);
    run(own).await;

    // The catalog and grants.
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let sso = run(step("post", FEATURES_V1, FEATURES_V1)
        .body(json!({"key": "sso", "name": "SSO"}))
        .records(&["feature.create"]))
    .await;
    let seats = run(step("post", FEATURES_V2, FEATURES_V2)
        .body(json!({"key": "seats", "name": "Seats", "type": "max_count", "mergePolicy": "sum"}))
        .records(&["feature.create"]))
    .await;
    run(step(
        "patch",
        "/entitlements/resources/features/v1/{featureId}",
        format!("{FEATURES_V1}/{}", id(&sso)),
    )
    .body(json!({"name": "SSO 1"}))
    .records(&["feature.update"]))
    .await;
    run(step(
        "patch",
        "/entitlements/resources/features/v2/{featureId}",
        format!("{FEATURES_V2}/{}", id(&seats)),
    )
    .body(json!({"description": "Seats per account"}))
    .records(&["feature.update"]))
    .await;
    let plan = run(step("post", PLANS, PLANS)
        .body(json!({"key": "pro", "name": "Pro"}))
        .records(&["plan.create"]))
    .await;
    let plan_path = format!("{PLANS}/{}", id(&plan));
    run(step(
        "patch",
        "/entitlements/resources/plans/v1/{planId}",
        plan_path.clone(),
    )
    .body(json!({"name": "Pro 1"}))
    .records(&["plan.update"]))
    .await;
    run(step(
        "patch",
        "/entitlements/resources/plans/v1/{planId}/features/link",
        format!("{plan_path}/features/link"),
    )
    .body(json!({"featuresIds": [id(&sso)]}))
    .records(&["plan.update"]))
    .await;
    run(step(
        "patch",
        "/entitlements/resources/plans/v1/{planId}/features/unlink",
        format!("{plan_path}/features/unlink"),
    )
    .body(json!({"featuresIds": [id(&sso)]}))
    .records(&["plan.update"]))
    .await;
    let flag = run(step("post", FLAGS, FLAGS)
        .body(
            json!({"name": "SSO flag", "on": true, "offTreatment": "false",
                     "defaultTreatment": "true", "featureKey": "sso"}),
        )
        .records(&["flag.create"]))
    .await;
    let flag_path = format!("{FLAGS}/{}", id(&flag));
    run(step(
        "patch",
        "/entitlements/resources/feature-flags/v1/{flagId}",
        flag_path.clone(),
    )
    .body(json!({"on": false}))
    .records(&["flag.update"]))
    .await;
    run(step(
        "delete",
        "/entitlements/resources/feature-flags/v1/{flagId}",
        flag_path,
    )
    .records(&["flag.delete"]))
    .await;
    let route = run(step("post", ROUTES, ROUTES)
        .body(json!({"method": "GET", "path": "/admin/**", "policy": "deny"}))
        .records(&["route.create"]))
    .await;
    let route_path = format!("{ROUTES}/{}", id(&route));
    run(step(
        "patch",
        "/entitlements/resources/routes/v1/{routeId}",
        route_path.clone(),
    )
    .body(json!({"description": "admins"}))
    .records(&["route.update"]))
    .await;
    run(step(
        "delete",
        "/entitlements/resources/routes/v1/{routeId}",
        route_path,
    )
    .records(&["route.delete"]))
    .await;
    let grant = run(step("post", GRANTS, GRANTS)
        .body(json!({"planId": id(&plan), "tenantId": "acme"}))
        .records(&["grant.create"]))
    .await;
    let grant_path = format!("{GRANTS}/{}", id(&grant));
    run(step(
        "patch",
        "/entitlements/resources/entitlements/v2/{id}",
        grant_path.clone(),
    )
    .body(json!({"expirationDate": "2099-01-01T00:00:00Z"}))
    .records(&["grant.update"]))
    .await;
    run(step(
        "post",
        "/entitlements/resources/entitlements/v2/{id}/revoke",
        format!("{grant_path}/revoke"),
    )
    .body(json!({}))
    .records(&["grant.revoke"]))
    .await;
    run(step(
        "delete",
        "/entitlements/resources/entitlements/v2/{id}",
        grant_path,
    )
    .records(&["grant.delete"]))
    .await;
    let batch = run(step("post", BATCH, BATCH)
        .body(json!({"entitlements": [
            {"planId": id(&plan), "tenantId": "acme"},
            {"planId": id(&plan), "tenantId": "acme", "userId": "bob"},
        ]}))
        .records(&["grant.create", "grant.create"]))
    .await;
    let ids: Vec<String> = batch["entitlementIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    run(step("patch", BATCH, BATCH)
        .body(json!({"entitlements": [
            {"id": ids[0], "expirationDate": "2099-01-01T00:00:00Z"},
            {"id": ids[1], "expirationDate": "2099-01-01T00:00:00Z"},
        ]}))
        .records(&["grant.update", "grant.update"]))
    .await;
    run(step(
        "delete",
        BATCH,
        format!("{BATCH}?ids={},{}", ids[0], ids[1]),
    )
    .records(&["grant.delete", "grant.delete"]))
    .await;
    run(step(
        "delete",
        "/entitlements/resources/plans/v1/{planId}",
        plan_path,
    )
    .records(&["plan.delete"]))
    .await;
    run(step(
        "delete",
        "/entitlements/resources/features/v1/{featureId}",
        format!("{FEATURES_V1}/{}", id(&seats)),
    )
    .records(&["feature.delete"]))
    .await;

    // Metering: credit grants are administrative writes (usage is data: see NOT_WRITES).
    run(step("post", FEATURES_V2, FEATURES_V2)
        .body(json!({"key": "calls", "name": "Calls", "type": "metered",
            "metering": {"unit": "call", "recurrence": "MONTH",
                "anchor": "2026-01-01T00:00:00Z"}}))
        .records(&["feature.create"]))
    .await;
    const CREDITS: &str = "/entitlements/api/v1/credit-grants";
    let credit = run(step("post", CREDITS, CREDITS)
        .body(json!({"tenantId": "acme", "featureKey": "calls", "amount": 100}))
        .records(&["credit_grant.create"]))
    .await;
    run(step(
        "post",
        "/entitlements/api/v1/credit-grants/{creditGrantId}/void",
        format!("{CREDITS}/{}/void", id(&credit)),
    )
    .records(&["credit_grant.void"]))
    .await;
    run(step(
        "post",
        "/entitlements/api/v1/accounts/{tenantId}/meters/{featureKey}/reset",
        "/entitlements/api/v1/accounts/acme/meters/calls/reset".to_owned(),
    )
    .records(&["meter.reset"]))
    .await;

    // The webhook's management writes.
    let mut delivery = None;
    for _ in 0..100 {
        let page = s.get(&format!("{WEBHOOKS}/{hook}/deliveries")).await;
        delivery = page.body["items"][0]["id"].as_str().map(str::to_owned);
        if delivery.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let delivery = delivery.expect("a delivery queued for the webhook");
    run(step(
        "post",
        "/entitlements/api/v1/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver",
        format!("{WEBHOOKS}/{hook}/deliveries/{delivery}/redeliver"),
    )
    .records(&["webhook.redeliver"]))
    .await;
    run(step(
        "post",
        "/entitlements/api/v1/webhooks/{webhookId}/rotate-secret",
        format!("{WEBHOOKS}/{hook}/rotate-secret"),
    )
    .records(&["webhook.rotate_secret"]))
    .await;
    run(step(
        "patch",
        "/entitlements/api/v1/webhooks/{webhookId}",
        format!("{WEBHOOKS}/{hook}"),
    )
    .body(json!({"enabled": false}))
    .records(&["webhook.update"]))
    .await;
    run(step(
        "delete",
        "/entitlements/api/v1/webhooks/{webhookId}",
        format!("{WEBHOOKS}/{hook}"),
    )
    .records(&["webhook.delete"]))
    .await;

    // Every documented write is walked or named as no write, and nothing else.
    let excluded: std::collections::BTreeSet<(String, String)> = NOT_WRITES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let walked_or_excluded: std::collections::BTreeSet<_> =
        covered.union(&excluded).cloned().collect();
    assert_eq!(
        documented, walked_or_excluded,
        "a write operation lacks a step"
    );
    assert!(covered.is_disjoint(&excluded));

    // The entries, by request ID.
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{EVENTS}?limit=100&cursor={c}"),
            None => format!("{EVENTS}?limit=100"),
        };
        let r = s.get(&path).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        all.extend(r.body["items"].as_array().unwrap().iter().cloned());
        cursor = r.body["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    for (request_id, actor, actions) in expected {
        let mine: Vec<&Value> = all
            .iter()
            .filter(|e| e["requestId"] == request_id)
            .collect();
        let mut got: Vec<&str> = mine.iter().map(|e| e["action"].as_str().unwrap()).collect();
        got.sort_unstable();
        let mut want = actions.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{request_id}: {mine:?}");
        assert!(
            mine.iter().all(|e| e["actor"] == json!(actor)),
            "{request_id}: {mine:?}"
        );
    }
}
