//! Entitlement routes through real HTTP against the real tenant and entitlement services on
//! PostgreSQL: catalog (features, plans, flags, routes), grants (the seed's batch and the single
//! forms), checks (ours and Frontegg's agent endpoints), the two compatibility surfaces' exact
//! shapes, and the tenant-scope rules of user tokens.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use tenantry_common::{Config, Secret, Shutdown};
use tenantry_entitlement::clock::ManualClock;

use crate::helpers::{Reply, TestApp, assert_error_shape, spawn_with, user_claims, user_token};

const FEATURES: &str = "/entitlements/resources/features/v1";
const FEATURES_V2: &str = "/entitlements/resources/features/v2";
const PLANS: &str = "/entitlements/resources/plans/v1";
const FLAGS: &str = "/entitlements/resources/feature-flags/v1";
const ROUTES: &str = "/entitlements/resources/routes/v1";
const GRANTS: &str = "/entitlements/resources/entitlements/v2";
const BATCH: &str = "/entitlements/resources/entitlements/v2/batch";
const CHECK: &str = "/entitlements/api/v1/is-entitled-to";
const CHECK_BATCH: &str = "/entitlements/api/v1/is-entitled-to/batch";
const AGENT_FEATURE: &str = "/v1/data/e10s/features/is_entitled_to_input_feature";
const AGENT_PERMISSION: &str = "/v1/data/e10s/permissions/is_entitled_to_input_permission";
const AGENT_ROUTE: &str = "/v1/data/e10s/routes/is_entitled_to_input_route";

/// The gateway in front of a real tenant service and entitlement service (manual clock) on a
/// fresh PostgreSQL database, with an environment token.
struct Stack {
    app: TestApp,
    clock: ManualClock,
    env: String,
    services: Shutdown,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.services.trigger();
    }
}

async fn spawn_stack() -> Stack {
    let db = tenantry_common::testing::postgres().create_database().await;
    let services = Shutdown::new();
    let tenant_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tenant_url = format!("http://{}", tenant_listener.local_addr().unwrap());
    let config = Config {
        tenant_database_url: Some(Secret::new(db.clone())),
        entitlement_database_url: Some(Secret::new(db)),
        tenant_service_url: Some(tenant_url.clone()),
        ..Config::default()
    };
    {
        let (c, s) = (config.clone(), services.clone());
        tokio::spawn(async move {
            tenantry_tenant::serve(&c, tenant_listener, s)
                .await
                .expect("tenant service serves");
        });
    }
    let clock = ManualClock::new(Utc::now().trunc_subsecs(0));
    let ent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ent_url = format!("http://{}", ent_listener.local_addr().unwrap());
    {
        let (c, s, clock) = (config, services.clone(), clock.clone());
        tokio::spawn(async move {
            tenantry_entitlement::serve_with_clock(&c, ent_listener, s, Arc::new(clock))
                .await
                .expect("entitlement service serves");
        });
    }
    let app = spawn_with(|c| {
        c.tenant_service_url = Some(tenant_url);
        c.entitlement_service_url = Some(ent_url);
    })
    .await;
    let mut ready = false;
    for _ in 0..200 {
        if app.get("/readyz", None).await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "both services became ready");
    let env = app.vendor_token().await;
    Stack {
        app,
        clock,
        env,
        services,
    }
}

impl Stack {
    async fn get(&self, path: &str) -> Reply {
        self.app.get(path, Some(&self.env)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.app.post_json(path, Some(&self.env), body).await
    }

    async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.app
            .send_json("PATCH", path, Some(&self.env), body)
            .await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.app
            .request(
                "DELETE",
                path,
                &[("authorization", &format!("Bearer {}", self.env))],
                None,
            )
            .await
    }

    /// POST with extra headers (and the environment token).
    async fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let auth = format!("Bearer {}", self.env);
        let mut all = vec![
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        all.extend_from_slice(headers);
        self.app
            .request("POST", path, &all, Some(body.to_string().into_bytes()))
            .await
    }

    async fn account(&self, id: &str, parent: Option<&str>) {
        let mut body = json!({"tenantId": id, "name": format!("{id} inc")});
        if let Some(parent) = parent {
            body["parentTenantId"] = json!(parent);
        }
        let r = self.post("/tenants/resources/tenants/v1", &body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }

    /// Creates a feature through the v1 route and returns it.
    async fn feature(&self, body: Value) -> Value {
        let r = self.post(FEATURES, &body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    async fn plan(&self, body: Value) -> Value {
        let r = self.post(PLANS, &body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    /// Seed batch create; returns the IDs and the write's revision.
    async fn grant(&self, items: Value) -> (Vec<String>, u64) {
        let r = self.post(BATCH, &json!({ "entitlements": items })).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let ids = r.body["entitlementIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        (ids, revision(&r))
    }

    /// `acme`'s `reports` check from an index that includes `rev` (read-your-write).
    async fn reports_check_at(&self, rev: u64) -> Reply {
        self.post(
            CHECK,
            &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "reports"},
                    "minRevision": rev}),
        )
        .await
    }

    /// Polls until `f` holds (effects carried by the tenant change feed).
    async fn eventually<F, Fut>(&self, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for: {what}");
    }
}

fn revision(r: &Reply) -> u64 {
    r.headers
        .get("x-tenantry-revision")
        .unwrap_or_else(|| panic!("a write answers with x-tenantry-revision: {:?}", r.body))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

fn items(r: &Reply) -> &Vec<Value> {
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(keys(&r.body), set(&["items", "hasNext"]), "{:?}", r.body);
    r.body["items"].as_array().unwrap()
}

fn field_of<'a>(items: &'a [Value], field: &str) -> Vec<&'a str> {
    items.iter().map(|i| i[field].as_str().unwrap()).collect()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// The item errors of a refused batch as `(index, field)`.
fn item_errors(r: &Reply) -> Vec<(u64, String)> {
    r.body["itemErrors"]
        .as_array()
        .unwrap_or_else(|| panic!("itemErrors: {:?}", r.body))
        .iter()
        .map(|e| {
            assert!(e["reason"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
            assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Catalog

#[tokio::test]
async fn features_v1_v2_create_list_patch_and_delete_with_force() {
    let s = spawn_stack().await;

    // v1: permissions as keys, plus our `type`.
    let r = s
        .post(
            FEATURES,
            &json!({"name": "Reports", "key": "reports", "description": "Monthly reports",
                    "permissions": ["reports.read"], "type": "bool"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let reports = r.body;
    assert!(!id(&reports).is_empty());
    assert_eq!(reports["key"], "reports");
    assert_eq!(reports["type"], "bool");
    assert_eq!(reports["description"], "Monthly reports");
    assert_eq!(reports["permissions"][0]["permissionKey"], "reports.read");
    assert_eq!(reports["featureFlag"], Value::Null);
    assert!(reports["createdAt"].is_string());

    // v2: permissions as objects, metadata as a JSON string, `max_count` with `mergePolicy`.
    let r = s
        .post(
            FEATURES_V2,
            &json!({"name": "Seats", "key": "seats",
                    "permissions": [{"permissionKey": "seats.manage", "permissionId": "perm-1"}],
                    "metadata": "{\"tier\": \"pro\"}", "type": "max_count", "mergePolicy": "sum"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let seats = r.body;
    assert_eq!(seats["type"], "max_count");
    assert_eq!(seats["mergePolicy"], "sum");
    assert_eq!(seats["metadata"], json!({"tier": "pro"}));
    assert_eq!(
        seats["permissions"],
        json!([{"permissionKey": "seats.manage", "permissionId": "perm-1"}])
    );
    let sso = s
        .feature(json!({"name": "Single sign-on", "key": "sso"}))
        .await;
    assert_eq!(sso["type"], "bool", "bool is the default type");

    // Refusals: duplicate key, unknown type or merge policy, unknown field, missing name,
    // metadata that is not an object.
    assert_error_shape(
        &s.post(FEATURES, &json!({"name": "Again", "key": "reports"}))
            .await,
        409,
    );
    let r = s
        .post(
            FEATURES,
            &json!({"name": "X", "key": "x1", "type": "number"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "type");
    let r = s
        .post(
            FEATURES_V2,
            &json!({"name": "X", "key": "x2", "type": "max_count", "mergePolicy": "avg"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "mergePolicy");
    assert_error_shape(
        &s.post(
            FEATURES,
            &json!({"name": "X", "key": "x3", "vendorId": "v"}),
        )
        .await,
        400,
    );
    assert_error_shape(&s.post(FEATURES, &json!({"key": "x4"})).await, 400);
    assert_error_shape(
        &s.post(
            FEATURES_V2,
            &json!({"name": "X", "key": "x5", "metadata": "[1, 2]"}),
        )
        .await,
        400,
    );
    // v2 takes permission objects, v1 keys: each refuses the other's form.
    assert_error_shape(
        &s.post(
            FEATURES_V2,
            &json!({"name": "X", "key": "x6", "permissions": ["a.b"]}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(
            FEATURES,
            &json!({"name": "X", "key": "x7", "permissions": [{"permissionKey": "a.b"}]}),
        )
        .await,
        400,
    );

    // Lists: Frontegg's filters and `{"items", "hasNext"}`.
    let r = s.get(&format!("{FEATURES}?limit=2")).await;
    assert_eq!(items(&r).len(), 2);
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{FEATURES}?limit=2&offset=2")).await;
    assert_eq!(items(&r).len(), 1);
    assert_eq!(r.body["hasNext"], false);
    let r = s.get(&format!("{FEATURES}?filter=Sea")).await;
    assert_eq!(field_of(items(&r), "key"), ["seats"]);
    let r = s
        .get(&format!(
            "{FEATURES}?featureKeys=reports,seats&orderBy=key&sortType=DESC"
        ))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["seats", "reports"]);
    let r = s
        .get(&format!("{FEATURES}?orderBy=name&sortType=ASC"))
        .await;
    assert_eq!(
        field_of(items(&r), "name"),
        ["Reports", "Seats", "Single sign-on"]
    );
    let r = s
        .get(&format!("{FEATURES}?permissionKeys=seats.manage"))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["seats"]);
    let r = s.get(&format!("{FEATURES}?featureIds={}", id(&sso))).await;
    assert_eq!(field_of(items(&r), "key"), ["sso"]);
    let r = s.get(&format!("{FEATURES}?hasFeatureFlag=true")).await;
    assert!(items(&r).is_empty());
    assert_error_shape(&s.get(&format!("{FEATURES}?orderBy=color")).await, 400);
    assert_error_shape(&s.get(&format!("{FEATURES}?sortType=UP")).await, 400);
    assert_error_shape(&s.get(&format!("{FEATURES}?limit=ten")).await, 400);

    // Reads and changes.
    let r = s.get(&format!("{FEATURES}/{}", id(&reports))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["key"], "reports");
    assert_error_shape(
        &s.get(&format!("{FEATURES}/{}", uuid::Uuid::now_v7())).await,
        404,
    );
    let r = s
        .patch(
            &format!("{FEATURES}/{}", id(&reports)),
            &json!({"name": "Reports+", "permissions": ["reports.read", "reports.export"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["name"], "Reports+");
    assert_eq!(r.body["key"], "reports", "unchanged fields are kept");
    let perms: Vec<&str> = r.body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["permissionKey"].as_str().unwrap())
        .collect();
    assert_eq!(perms, ["reports.read", "reports.export"]);
    let r = s
        .patch(
            &format!("/entitlements/resources/features/v2/{}", id(&seats)),
            &json!({"permissions": [{"permissionKey": "seats.admin"}], "mergePolicy": "max",
                    "description": "Seats per account"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["mergePolicy"], "max");
    assert_eq!(r.body["permissions"][0]["permissionKey"], "seats.admin");
    assert_eq!(r.body["description"], "Seats per account");
    assert_error_shape(
        &s.patch(
            &format!("{FEATURES}/{}", uuid::Uuid::now_v7()),
            &json!({"name": "Nobody"}),
        )
        .await,
        404,
    );
    assert_error_shape(
        &s.patch(
            &format!("{FEATURES}/{}", id(&reports)),
            &json!({"type": "percent"}),
        )
        .await,
        400,
    );
    // Another feature's key is taken.
    assert_error_shape(
        &s.patch(
            &format!("{FEATURES}/{}", id(&sso)),
            &json!({"key": "seats"}),
        )
        .await,
        409,
    );

    // Delete: a feature in a plan needs force, which unlinks it from the plan.
    let plan = s
        .plan(json!({"name": "Pro", "key": "pro", "featureKeys": ["reports", "sso"]}))
        .await;
    let r = s.delete(&format!("{FEATURES}/{}", id(&reports))).await;
    assert_error_shape(&r, 412);
    let r = s.get(&format!("{FEATURES}/{}", id(&reports))).await;
    assert_eq!(r.status, 200, "a refused delete deleted nothing");
    let r = s
        .delete(&format!("{FEATURES}/{}?force=true", id(&reports)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"unlinkedPlanIds": [id(&plan)]}));
    assert_error_shape(&s.get(&format!("{FEATURES}/{}", id(&reports))).await, 404);
    let r = s.get(&format!("{PLANS}/{}", id(&plan))).await;
    assert_eq!(
        field_of(r.body["features"].as_array().unwrap(), "key"),
        ["sso"]
    );
    // An unused feature goes without force; an unknown one is 404.
    let r = s.delete(&format!("{FEATURES}/{}", id(&seats))).await;
    assert_eq!(r.body, json!({"unlinkedPlanIds": []}), "{:?}", r.status);
    assert_error_shape(&s.delete(&format!("{FEATURES}/{}", id(&seats))).await, 404);
    assert_error_shape(
        &s.delete(&format!("{FEATURES}/{}?force=maybe", id(&sso)))
            .await,
        400,
    );
}

#[tokio::test]
async fn plans_with_keys_allocations_links_and_tenant_plans() {
    let s = spawn_stack().await;
    let reports = s
        .feature(json!({"name": "Reports", "key": "reports", "permissions": ["reports.read"]}))
        .await;
    let seats = s
        .feature(json!({"name": "Seats", "key": "seats", "type": "max_count"}))
        .await;
    let sso = s.feature(json!({"name": "SSO", "key": "sso"})).await;

    // Frontegg's `featureKeys` beside our `features` with allocations, `key`, inheritance.
    let r = s
        .post(
            PLANS,
            &json!({"name": "Pro", "key": "pro", "description": "For teams",
                    "featureKeys": ["reports"],
                    "features": [{"featureKey": "seats",
                                  "allocation": {"type": "max_count", "value": 5}}],
                    "inheritToSubAccounts": true, "defaultTimeLimitation": 30,
                    "metadata": "{\"tier\": 2}", "defaultTreatment": "true"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let pro = r.body;
    assert!(!id(&pro).is_empty());
    assert_eq!(pro["key"], "pro");
    assert_eq!(pro["inheritToSubAccounts"], true);
    assert_eq!(pro["defaultTimeLimitation"], 30);
    assert_eq!(pro["metadata"], json!({"tier": 2}));
    assert_eq!(pro["defaultTreatment"], "true");
    let features = pro["features"].as_array().unwrap();
    let by_key = |k: &str| features.iter().find(|f| f["key"] == k).unwrap().clone();
    assert_eq!(by_key("reports")["id"], reports["id"]);
    assert_eq!(by_key("reports")["permissions"], json!(["reports.read"]));
    assert_eq!(
        by_key("reports")["allocation"],
        json!({"type": "bool", "value": true})
    );
    assert_eq!(
        by_key("seats")["allocation"],
        json!({"type": "max_count", "value": 5})
    );

    // Without `key` one is derived; unlimited max_count is `value: null`.
    let basic = s
        .plan(json!({"name": "Basic plan", "features": [
            {"featureKey": "seats", "allocation": {"type": "max_count", "value": null}}]}))
        .await;
    assert!(basic["key"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(basic["inheritToSubAccounts"], false);
    assert_eq!(
        basic["defaultTreatment"], "false",
        "only grants give a plan by default"
    );
    assert_eq!(
        basic["features"][0]["allocation"],
        json!({"type": "max_count", "value": null})
    );

    // Refusals.
    assert_error_shape(
        &s.post(PLANS, &json!({"name": "Pro again", "key": "pro"}))
            .await,
        409,
    );
    assert_error_shape(
        &s.post(PLANS, &json!({"name": "Ghost", "featureKeys": ["ghost"]}))
            .await,
        404,
    );
    let r = s
        .post(
            PLANS,
            &json!({"name": "Bad", "features": [{"featureKey": "seats",
                    "allocation": {"type": "max_count", "value": -1}}]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        r.body["fieldViolations"][0]["field"],
        "features[0].allocation"
    );
    // A bool allocation for a max_count feature.
    assert_error_shape(
        &s.post(
            PLANS,
            &json!({"name": "Mismatch", "features": [{"featureKey": "seats",
                    "allocation": {"type": "bool", "value": true}}]}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(PLANS, &json!({"name": "T", "defaultTreatment": "maybe"}))
            .await,
        400,
    );
    assert_error_shape(&s.post(PLANS, &json!({"key": "nameless"})).await, 400);

    // Reads.
    let r = s.get(&format!("{PLANS}/{}", id(&pro))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Pro");
    assert_error_shape(
        &s.get(&format!("{PLANS}/{}", uuid::Uuid::now_v7())).await,
        404,
    );
    let r = s
        .get(&format!("{PLANS}?limit=1&orderBy=name&sortType=DESC"))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{PLANS}?filter=Basic")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&basic).as_str()]);
    let r = s.get(&format!("{PLANS}?featureIds={}", id(&reports))).await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    assert_error_shape(&s.get(&format!("{PLANS}?orderBy=key")).await, 400);

    // The plan's features with the full feature objects and allocations.
    let r = s.get(&format!("{PLANS}/{}/features", id(&pro))).await;
    let listed = items(&r);
    assert_eq!(listed.len(), 2);
    let seat_entry = listed.iter().find(|f| f["key"] == "seats").unwrap();
    assert_eq!(seat_entry["type"], "max_count");
    assert_eq!(
        seat_entry["allocation"],
        json!({"type": "max_count", "value": 5})
    );
    assert_error_shape(
        &s.get(&format!("{PLANS}/{}/features", uuid::Uuid::now_v7()))
            .await,
        404,
    );

    // Link (Frontegg `featuresIds`, and ours by key with an allocation), then unlink.
    let r = s
        .patch(
            &format!("{PLANS}/{}/features/link", id(&basic)),
            &json!({"featuresIds": [id(&sso)],
                    "features": [{"featureKey": "reports"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    let linked: BTreeSet<&str> = r.body["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(linked, set(&["reports", "seats", "sso"]));
    assert_error_shape(
        &s.patch(
            &format!("{PLANS}/{}/features/link", id(&basic)),
            &json!({"featuresIds": [uuid::Uuid::now_v7().to_string()]}),
        )
        .await,
        404,
    );
    let r = s
        .patch(
            &format!("{PLANS}/{}/features/unlink", id(&basic)),
            &json!({"featuresIds": [id(&sso)], "featureKeys": ["seats"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        field_of(r.body["features"].as_array().unwrap(), "key"),
        ["reports"]
    );
    assert_error_shape(
        &s.patch(
            &format!("{PLANS}/{}/features/link", id(&basic)),
            &json!({"featureIds": [id(&sso)]}),
        )
        .await,
        400,
    );

    // PATCH: only the given fields change; `null` clears the time limitation; features are
    // replaced when given.
    let r = s
        .patch(
            &format!("{PLANS}/{}", id(&pro)),
            &json!({"name": "Pro+", "inheritToSubAccounts": false,
                    "defaultTimeLimitation": null,
                    "features": [{"featureKey": "seats",
                                  "allocation": {"type": "max_count", "value": 10}}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["name"], "Pro+");
    assert_eq!(r.body["key"], "pro");
    assert_eq!(r.body["inheritToSubAccounts"], false);
    assert_eq!(r.body["defaultTimeLimitation"], Value::Null);
    assert_eq!(r.body["description"], "For teams");
    assert_eq!(
        r.body["features"],
        json!([{"id": id(&seats), "key": "seats", "name": "Seats", "permissions": [],
                "allocation": {"type": "max_count", "value": 10}}])
    );
    assert_error_shape(
        &s.patch(
            &format!("{PLANS}/{}", uuid::Uuid::now_v7()),
            &json!({"name": "x"}),
        )
        .await,
        404,
    );

    // Plans of an account, and the list filtered by account.
    s.account("acme", None).await;
    let (grant_ids, grant_rev) = s
        .grant(json!([{"planId": id(&pro), "tenantId": "acme"}]))
        .await;
    let r = s.get(&format!("{PLANS}/tenant/acme")).await;
    let all = items(&r);
    let pro_entry = all.iter().find(|p| p["key"] == "pro").unwrap();
    assert_eq!(pro_entry["entitled"], true);
    assert_eq!(pro_entry["grantIds"], json!(grant_ids));
    assert!(pro_entry["targeted"].is_boolean());
    let r = s
        .get(&format!("{PLANS}/tenant/acme?excludeNonEntitledPlans=true"))
        .await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    let r = s
        .get(&format!(
            "{PLANS}/tenant/acme?excludeNonEntitledPlans=false&featureKeys=reports"
        ))
        .await;
    assert_eq!(field_of(items(&r), "id"), [id(&basic).as_str()]);
    let r = s.get(&format!("{PLANS}?tenantIds=acme")).await;
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    // `minRevision`: answered from an index including the write, else 503.
    let r = s
        .get(&format!(
            "{PLANS}/tenant/acme?excludeNonEntitledPlans=true&minRevision={grant_rev}"
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(field_of(items(&r), "key"), ["pro"]);
    assert_error_shape(
        &s.get(&format!(
            "{PLANS}/tenant/acme?minRevision={}",
            grant_rev + 1_000_000
        ))
        .await,
        400,
    );
    assert_error_shape(
        &s.get(&format!("{PLANS}/tenant/acme?minRevision=soon"))
            .await,
        400,
    );
    // An account the service's hierarchy does not know is 404.
    assert_error_shape(&s.get(&format!("{PLANS}/tenant/nobody")).await, 404);

    // DELETE: live grants need force, which revokes them.
    let r = s.delete(&format!("{PLANS}/{}", id(&pro))).await;
    assert_error_shape(&r, 412);
    let r = s.delete(&format!("{PLANS}/{}?force=true", id(&pro))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"revokedGrants": 1}));
    assert_error_shape(&s.get(&format!("{PLANS}/{}", id(&pro))).await, 404);
    let r = s.delete(&format!("{PLANS}/{}", id(&basic))).await;
    assert_eq!(r.body, json!({"revokedGrants": 0}), "{}", r.status);
    assert_error_shape(&s.delete(&format!("{PLANS}/{}", id(&basic))).await, 404);
}

#[tokio::test]
async fn feature_flags_with_rules_and_routes_crud() {
    let s = spawn_stack().await;
    let beta = s.feature(json!({"name": "Beta", "key": "beta"})).await;
    let other = s.feature(json!({"name": "Other", "key": "other"})).await;
    let rule = json!({"description": "staff", "conditionLogic": "and",
        "conditions": [{"attribute": "email", "attributeType": "custom", "negate": false,
                        "op": "ends_with", "value": {"list": ["@acme.test"]}}],
        "treatment": "true"});

    let r = s
        .post(
            FLAGS,
            &json!({"name": "Beta flag", "on": true, "offTreatment": "false",
                    "defaultTreatment": "false", "featureId": id(&beta),
                    "description": "staff only", "metadata": "{\"owner\": \"web\"}",
                    "rules": [rule]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let flag = r.body;
    assert!(!id(&flag).is_empty());
    assert_eq!(
        flag["feature"],
        json!({"id": id(&beta), "key": "beta", "name": "Beta"})
    );
    assert_eq!(flag["on"], true);
    assert_eq!(flag["offTreatment"], "false");
    assert_eq!(flag["defaultTreatment"], "false");
    assert_eq!(flag["metadata"], json!({"owner": "web"}));
    assert_eq!(flag["rules"], json!([rule]));
    // By feature key too.
    let r = s
        .post(
            FLAGS,
            &json!({"name": "Other flag", "on": false, "offTreatment": "false",
                    "defaultTreatment": "true", "featureKey": "other"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["feature"]["id"], other["id"]);
    let other_flag = r.body;

    // Refusals.
    let base = json!({"name": "F", "on": true, "offTreatment": "false",
                      "defaultTreatment": "true"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    assert_error_shape(&s.post(FLAGS, &base).await, 400);
    assert_error_shape(
        &s.post(
            FLAGS,
            &with(json!({"featureId": id(&beta), "featureKey": "beta"})),
        )
        .await,
        400,
    );
    // An unknown feature is 404, as for plans.
    assert_error_shape(
        &s.post(FLAGS, &with(json!({"featureKey": "ghost"}))).await,
        404,
    );
    assert_error_shape(
        &s.post(
            FLAGS,
            &with(json!({"featureId": uuid::Uuid::now_v7().to_string()})),
        )
        .await,
        404,
    );
    let r = s
        .post(
            FLAGS,
            &with(json!({"featureKey": "beta", "offTreatment": "off"})),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "offTreatment");
    let mut bad_rule = rule.clone();
    bad_rule["conditions"][0]["op"] = json!("sounds_like");
    let r = s
        .post(
            FLAGS,
            &with(json!({"featureKey": "beta", "rules": [bad_rule]})),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        r.body["fieldViolations"][0]["field"],
        "rules[0].conditions[0].op"
    );
    let mut or_rule = rule.clone();
    or_rule["conditionLogic"] = json!("or");
    assert_error_shape(
        &s.post(
            FLAGS,
            &with(json!({"featureKey": "beta", "rules": [or_rule]})),
        )
        .await,
        400,
    );

    // Lists.
    let r = s.get(&format!("{FLAGS}?on=true")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&flag).as_str()]);
    let r = s.get(&format!("{FLAGS}?featureIds={}", id(&other))).await;
    assert_eq!(field_of(items(&r), "id"), [id(&other_flag).as_str()]);
    let r = s.get(&format!("{FLAGS}?limit=1")).await;
    assert_eq!(items(&r).len(), 1);
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{FLAGS}?filter=Beta")).await;
    assert_eq!(field_of(items(&r), "name"), ["Beta flag"]);
    // Frontegg's `orderBy` + `sortType` (default: created, ascending).
    s.feature(json!({"name": "Alpha", "key": "alpha"})).await;
    let r = s
        .post(
            FLAGS,
            &json!({"name": "Alpha flag", "on": false, "offTreatment": "false",
                    "defaultTreatment": "true", "featureKey": "alpha"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let alpha_flag = r.body;
    let names = |q: &'static str| {
        let s = &s;
        async move {
            let r = s.get(&format!("{FLAGS}{q}")).await;
            assert_eq!(r.status, 200, "{q}: {:?}", r.body);
            field_of(items(&r), "name")
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    let created = ["Beta flag", "Other flag", "Alpha flag"];
    assert_eq!(names("").await, created);
    assert_eq!(names("?orderBy=createdAt&sortType=ASC").await, created);
    assert_eq!(
        names("?orderBy=createdAt&sortType=DESC").await,
        ["Alpha flag", "Other flag", "Beta flag"]
    );
    assert_eq!(
        names("?orderBy=name").await,
        ["Alpha flag", "Beta flag", "Other flag"]
    );
    assert_eq!(
        names("?orderBy=name&sortType=desc&limit=2").await,
        ["Other flag", "Beta flag"]
    );
    let r = s.get(&format!("{FLAGS}?orderBy=color")).await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "orderBy");
    // The feature list shows the embedded flag.
    let r = s
        .get(&format!("{FEATURES}?hasFeatureFlag=true&featureKeys=beta"))
        .await;
    let listed = items(&r);
    assert_eq!(listed[0]["featureFlag"]["id"], flag["id"]);
    assert_eq!(listed[0]["featureFlag"]["on"], true);
    assert_eq!(listed[0]["featureFlag"]["offTreatment"], "false");

    // Read, change, delete.
    let r = s.get(&format!("{FLAGS}/{}", id(&flag))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Beta flag");
    s.clock.advance(chrono::Duration::seconds(5));
    let r = s
        .patch(
            &format!("{FLAGS}/{}", id(&flag)),
            &json!({"on": false, "rules": [], "defaultTreatment": "true"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["on"], false);
    assert_eq!(r.body["rules"], json!([]));
    assert_eq!(r.body["defaultTreatment"], "true");
    assert_eq!(r.body["name"], "Beta flag");
    // The changed flag sorts last by `updatedAt`.
    let r = s.get(&format!("{FLAGS}?orderBy=updatedAt")).await;
    assert_eq!(
        field_of(items(&r), "id"),
        [id(&other_flag), id(&alpha_flag), id(&flag)]
    );
    assert_error_shape(
        &s.patch(
            &format!("{FLAGS}/{}", id(&flag)),
            &json!({"featureId": "x"}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.patch(
            &format!("{FLAGS}/{}", uuid::Uuid::now_v7()),
            &json!({"on": true}),
        )
        .await,
        404,
    );
    let r = s.delete(&format!("{FLAGS}/{}", id(&flag))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"deleted": true}));
    revision(&r);
    assert_error_shape(&s.get(&format!("{FLAGS}/{}", id(&flag))).await, 404);
    assert_error_shape(&s.delete(&format!("{FLAGS}/{}", id(&flag))).await, 404);

    // Routes.
    let r = s
        .post(
            ROUTES,
            &json!({"method": "GET", "path": "/reports/**", "policy": "require",
                    "requiredFeatureKeys": ["beta"], "requiredPermissionKeys": ["reports.read"],
                    "description": "reports"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let route = r.body;
    assert_eq!(route["method"], "GET");
    assert_eq!(route["path"], "/reports/**");
    assert_eq!(route["policy"], "require");
    assert_eq!(route["requiredFeatureKeys"], json!(["beta"]));
    assert_eq!(route["requiredPermissionKeys"], json!(["reports.read"]));
    let admin = s
        .post(
            ROUTES,
            &json!({"method": "*", "path": "/admin/**", "policy": "deny"}),
        )
        .await;
    assert_eq!(admin.status, 201, "{:?}", admin.body);
    assert_error_shape(
        &s.post(
            ROUTES,
            &json!({"method": "GET", "path": "/x", "policy": "maybe"}),
        )
        .await,
        400,
    );
    assert_error_shape(
        &s.post(ROUTES, &json!({"method": "GET", "policy": "allow"}))
            .await,
        400,
    );
    let r = s.get(&format!("{ROUTES}?method=GET")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&route).as_str()]);
    let r = s.get(&format!("{ROUTES}?filter=admin")).await;
    assert_eq!(field_of(items(&r), "id"), [id(&admin.body).as_str()]);
    let r = s.get(&format!("{ROUTES}?limit=1")).await;
    assert_eq!(r.body["hasNext"], true);
    let r = s.get(&format!("{ROUTES}/{}", id(&route))).await;
    assert_eq!(r.body["description"], "reports");
    // Only `require` routes list requirements.
    assert_error_shape(
        &s.patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "allow", "requiredFeatureKeys": []}),
        )
        .await,
        400,
    );
    let r = s
        .patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "allow", "requiredFeatureKeys": [],
                    "requiredPermissionKeys": []}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["policy"], "allow");
    assert_eq!(r.body["requiredFeatureKeys"], json!([]));
    assert_eq!(r.body["path"], "/reports/**");
    assert_error_shape(
        &s.patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "nope"}),
        )
        .await,
        400,
    );
    let r = s.delete(&format!("{ROUTES}/{}", id(&route))).await;
    assert_eq!(r.body, json!({"deleted": true}));
    assert_error_shape(&s.get(&format!("{ROUTES}/{}", id(&route))).await, 404);
    assert_error_shape(
        &s.patch(
            &format!("{ROUTES}/{}", id(&route)),
            &json!({"policy": "deny"}),
        )
        .await,
        404,
    );
}

// ---------------------------------------------------------------------------------------------
// Grants

#[tokio::test]
async fn grants_seed_batch_single_forms_revocation_and_list_filters() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    s.account("globex", None).await;
    s.feature(json!({"name": "Reports", "key": "reports"}))
        .await;
    let pro = s
        .plan(json!({"name": "Pro", "key": "pro", "featureKeys": ["reports"]}))
        .await;
    let basic = s.plan(json!({"name": "Basic", "key": "basic"})).await;

    // The seed's batch create: `{"entitlementIds": [...]}` in request order.
    let r = s
        .post(
            BATCH,
            &json!({"entitlements": [
                {"planId": id(&pro), "tenantId": "acme", "userId": "u-1",
                 "expirationDate": "2099-01-01T12:00:00"},
                {"planId": id(&basic), "tenantId": "globex"},
                {"planId": id(&pro), "tenantId": "globex", "userId": "u-2"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(keys(&r.body), set(&["entitlementIds"]));
    revision(&r);
    let ids: Vec<String> = r.body["entitlementIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let first = s.get(&format!("{GRANTS}/{}", ids[0])).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["planId"], pro["id"]);
    assert_eq!(first.body["planKey"], "pro");
    assert_eq!(first.body["tenantId"], "acme");
    assert_eq!(first.body["userId"], "u-1");
    assert_eq!(
        first.body["expirationDate"], "2099-01-01T12:00:00.000Z",
        "a zone-less date is UTC"
    );
    assert_eq!(first.body["status"], "active");
    assert_eq!(first.body["source"], "batch");
    assert_eq!(first.body["grantedBy"], "environment:vendor");
    assert!(
        first.body.get("plan").is_none(),
        "no relations unless asked"
    );
    let second = s.get(&format!("{GRANTS}/{}", ids[1])).await;
    assert_eq!(second.body["planKey"], "basic");
    assert_eq!(second.body["tenantId"], "globex");
    assert_eq!(second.body["userId"], Value::Null);
    assert_eq!(second.body["expirationDate"], Value::Null);
    let third = s.get(&format!("{GRANTS}/{}", ids[2])).await;
    assert_eq!(third.body["userId"], "u-2");

    // The seed's PATCH changes expiries.
    let r = s
        .patch(
            BATCH,
            &json!({"entitlements": [
                {"id": ids[0], "expirationDate": "2098-06-01T00:00:00Z"},
                {"id": ids[1], "expirationDate": "2097-01-01T00:00:00+02:00"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"entitlementIds": [ids[0], ids[1]]}));
    let r = s.get(&format!("{GRANTS}/{}", ids[0])).await;
    assert_eq!(r.body["expirationDate"], "2098-06-01T00:00:00.000Z");
    let r = s.get(&format!("{GRANTS}/{}", ids[1])).await;
    assert_eq!(r.body["expirationDate"], "2096-12-31T22:00:00.000Z");

    // Single create (plan by key), with external ID, metadata, a start and an expiry.
    let r = s
        .post(
            GRANTS,
            &json!({"planKey": "pro", "tenantId": "acme", "externalId": "order-7",
                    "metadata": {"order": 7}, "startsAt": "2020-01-01T00:00:00Z",
                    "expirationDate": "2099-01-01"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let single = r.body;
    assert_eq!(single["planId"], pro["id"]);
    assert_eq!(single["externalId"], "order-7");
    assert_eq!(single["metadata"], json!({"order": 7}));
    assert_eq!(single["startsAt"], "2020-01-01T00:00:00.000Z");
    assert_eq!(single["expirationDate"], "2099-01-01T00:00:00.000Z");
    assert_eq!(single["source"], "api");
    assert_eq!(single["status"], "active");
    let r = s
        .get(&format!("{GRANTS}/{}?withRelations=true", id(&single)))
        .await;
    assert_eq!(r.body["plan"]["key"], "pro");
    assert_eq!(r.body["plan"]["features"][0]["key"], "reports");

    // Single refusals.
    let r = s
        .post(
            GRANTS,
            &json!({"planId": uuid::Uuid::now_v7(), "tenantId": "acme"}),
        )
        .await;
    assert!(r.status == 400 || r.status == 404, "{:?}", r.body);
    assert_eq!(r.body["statusCode"], json!(r.status));
    assert_error_shape(
        &s.post(GRANTS, &json!({"planKey": "pro", "tenantId": "nobody"}))
            .await,
        400,
    );
    assert_error_shape(
        &s.post(
            GRANTS,
            &json!({"planKey": "pro", "planId": id(&pro), "tenantId": "acme"}),
        )
        .await,
        400,
    );
    let r = s
        .post(
            GRANTS,
            &json!({"planKey": "pro", "tenantId": "acme",
                    "startsAt": "2030-01-01T00:00:00Z", "expirationDate": "2029-01-01T00:00:00Z"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "expirationDate");
    let r = s
        .post(
            GRANTS,
            &json!({"planKey": "pro", "tenantId": "acme", "expirationDate": "next week"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "expirationDate");
    // An external ID is unique per account.
    assert_error_shape(
        &s.post(
            GRANTS,
            &json!({"planKey": "basic", "tenantId": "acme", "externalId": "order-7"}),
        )
        .await,
        400,
    );

    // Single PATCH: expiry set, then cleared with null.
    let path = format!("{GRANTS}/{}", id(&single));
    let r = s
        .patch(&path, &json!({"expirationDate": "2031-02-03T04:05:06Z"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["expirationDate"], "2031-02-03T04:05:06.000Z");
    assert_eq!(r.body["externalId"], "order-7", "unchanged fields are kept");
    let r = s.patch(&path, &json!({"expirationDate": null})).await;
    assert_eq!(r.body["expirationDate"], Value::Null, "{:?}", r.body);
    let r = s
        .patch(&path, &json!({"expirationDate": "2010-01-01T00:00:00Z"}))
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "expirationDate");
    assert_error_shape(&s.patch(&path, &json!({"planId": "x"})).await, 400);
    assert_error_shape(
        &s.patch(
            &format!("{GRANTS}/{}", uuid::Uuid::now_v7()),
            &json!({"expirationDate": null}),
        )
        .await,
        404,
    );

    // Revoke keeps the grant with who, when and why; twice is refused.
    let r = s
        .post(&format!("{path}/revoke"), &json!({"reason": "refund"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["status"], "revoked");
    assert_eq!(r.body["revokeReason"], "refund");
    assert_eq!(r.body["revokedBy"], "environment:vendor");
    assert!(r.body["revokedAt"].is_string());
    assert_error_shape(&s.post(&format!("{path}/revoke"), &json!({})).await, 412);
    assert_error_shape(
        &s.post(
            &format!("{GRANTS}/{}/revoke", uuid::Uuid::now_v7()),
            &json!({}),
        )
        .await,
        404,
    );
    // A revoked grant cannot be changed: 412, like revoking it twice.
    let r = s
        .patch(&path, &json!({"expirationDate": "2040-01-01T00:00:00Z"}))
        .await;
    assert_error_shape(&r, 412);

    // Lists with Frontegg's filters and ours.
    let list = |q: &str| {
        let q = q.to_owned();
        let s = &s;
        async move {
            let r = s.get(&format!("{GRANTS}?{q}")).await;
            let mut got: Vec<String> = items(&r).iter().map(id).collect();
            got.sort();
            got
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list("tenantIds=acme").await,
        sorted(vec![ids[0].clone(), id(&single)])
    );
    assert_eq!(
        list("userIds=u-1,u-2").await,
        sorted(vec![ids[0].clone(), ids[2].clone()])
    );
    assert_eq!(
        list("assignLevel=TENANT").await,
        sorted(vec![ids[1].clone(), id(&single)])
    );
    assert_eq!(
        list("assignLevel=USER&tenantIds=globex").await,
        vec![ids[2].clone()]
    );
    assert_eq!(
        list(&format!("planId={}", id(&basic))).await,
        vec![ids[1].clone()]
    );
    assert_eq!(
        list(&format!("planIds={},{}", id(&basic), id(&pro)))
            .await
            .len(),
        4
    );
    assert_eq!(list("statuses=revoked").await, vec![id(&single)]);
    assert_eq!(list("sources=api").await, vec![id(&single)]);
    assert_eq!(
        list("externalId=order-7&tenantIds=acme").await,
        vec![id(&single)]
    );
    let r = s
        .get(&format!(
            "{GRANTS}?orderBy=expirationDate&sortType=ASC&statuses=active"
        ))
        .await;
    // Never-expiring grants last in ascending order.
    assert_eq!(
        items(&r).iter().map(id).collect::<Vec<_>>(),
        [ids[1].clone(), ids[0].clone(), ids[2].clone()]
    );
    let r = s.get(&format!("{GRANTS}?limit=2&withRelations=true")).await;
    assert_eq!(items(&r).len(), 2);
    assert_eq!(r.body["hasNext"], true);
    assert!(items(&r).iter().all(|g| g["plan"]["id"] == g["planId"]));
    assert_error_shape(&s.get(&format!("{GRANTS}?assignLevel=GROUP")).await, 400);
    assert_error_shape(&s.get(&format!("{GRANTS}?statuses=paused")).await, 400);
    assert_error_shape(&s.get(&format!("{GRANTS}?orderBy=tenantId")).await, 400);

    // Single delete removes the row.
    let r = s.delete(&path).await;
    assert_eq!(r.body, json!({"deleted": true}), "{}", r.status);
    revision(&r);
    assert_error_shape(&s.get(&path).await, 404);
    assert_error_shape(&s.delete(&path).await, 404);

    // The seed's DELETE `?ids=`.
    let r = s
        .delete(&format!("{BATCH}?ids={},{}", ids[0], ids[1]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"deletedCount": 2}));
    assert_error_shape(&s.get(&format!("{GRANTS}/{}", ids[0])).await, 404);
    // Repeated keys work too; an empty list is refused.
    let r = s
        .delete(&format!("{BATCH}?ids={}&ids={}", ids[2], ids[2]))
        .await;
    assert!(
        (400..500).contains(&r.status),
        "a listed-twice ID: {:?}",
        r.body
    );
    let r = s.delete(&format!("{BATCH}?ids={}", ids[2])).await;
    assert_eq!(r.body, json!({"deletedCount": 1}), "{}", r.status);
    assert_error_shape(&s.delete(&format!("{BATCH}?ids=")).await, 400);
    assert!(list("").await.is_empty());
}

#[tokio::test]
async fn grant_batches_are_all_or_nothing_and_idempotent() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    let pro = s.plan(json!({"name": "Pro", "key": "pro"})).await;
    let good = json!({"planId": id(&pro), "tenantId": "acme"});

    // Several bad items, each listed by index; nothing written.
    let r = s
        .post(
            BATCH,
            &json!({"entitlements": [
                good,
                {"planId": uuid::Uuid::now_v7(), "tenantId": "acme"},
                {"planId": id(&pro), "tenantId": "nobody"},
                {"planId": id(&pro), "tenantId": "acme",
                 "startsAt": "2030-01-01T00:00:00Z", "expirationDate": "2029-12-31T00:00:00Z"},
                good
            ]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        item_errors(&r),
        [
            (1, "planId".to_owned()),
            (2, "tenantId".to_owned()),
            (3, "expirationDate".to_owned())
        ]
    );
    assert_eq!(r.body["reason"], "INVALID_BATCH_ITEMS");
    assert_eq!(r.body["itemErrors"][2]["reason"], "INVALID_EXPIRATION_DATE");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("[3] expirationDate"),
        "{:?}",
        r.body
    );
    let listed = s.get(GRANTS).await;
    assert!(items(&listed).is_empty(), "nothing was written");

    // Malformed dates are found before the services are asked, all of them by index.
    let r = s
        .post(
            BATCH,
            &json!({"entitlements": [
                good,
                {"planId": id(&pro), "tenantId": "acme", "expirationDate": "31/12/2030"},
                good,
                {"planId": id(&pro), "tenantId": "acme", "startsAt": "soon"},
                {"tenantId": "acme"}
            ]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        item_errors(&r),
        [
            (1, "expirationDate".to_owned()),
            (3, "startsAt".to_owned()),
            (4, "planId".to_owned())
        ]
    );
    assert_eq!(
        r.body["reason"], "INVALID_BATCH_ITEMS",
        "the service's shape"
    );
    assert_eq!(r.body["itemErrors"][0]["reason"], "INVALID_EXPIRATION_DATE");
    assert_eq!(
        r.body["fieldViolations"][0]["field"],
        "entitlements[1].expirationDate"
    );
    assert!(
        items(&s.get(GRANTS).await).is_empty(),
        "nothing was written"
    );

    // An empty batch and a body not in the seed's shape.
    assert_error_shape(&s.post(BATCH, &json!({"entitlements": []})).await, 400);
    assert_error_shape(&s.post(BATCH, &json!([good])).await, 400);

    // Idempotency-Key: a retry answers the same IDs without writing twice.
    let body = json!({"entitlements": [good, {"planId": id(&pro), "tenantId": "acme",
                                              "userId": "u-1"}]});
    let first = s
        .post_with(BATCH, &[("idempotency-key", "k-1")], &body)
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let retry = s
        .post_with(BATCH, &[("idempotency-key", "k-1")], &body)
        .await;
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert_eq!(retry.body, first.body);
    assert_eq!(items(&s.get(GRANTS).await).len(), 2);
    // The same key with another body is refused, and writes nothing.
    let other = json!({"entitlements": [good]});
    let r = s
        .post_with(BATCH, &[("idempotency-key", "k-1")], &other)
        .await;
    assert_error_shape(&r, 412);
    assert_eq!(r.body["reason"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(items(&s.get(GRANTS).await).len(), 2);
    // A key that is not a visible string.
    let r = s.post_with(BATCH, &[("idempotency-key", "")], &other).await;
    assert_error_shape(&r, 400);
    // Without a key the same body writes again.
    let again = s.post(BATCH, &body).await;
    assert_eq!(again.status, 201);
    assert_ne!(again.body, first.body);
    assert_eq!(items(&s.get(GRANTS).await).len(), 4);

    // Single create honours the key too.
    let one = json!({"planKey": "pro", "tenantId": "acme", "userId": "u-9"});
    let a = s
        .post_with(GRANTS, &[("idempotency-key", "k-2")], &one)
        .await;
    let b = s
        .post_with(GRANTS, &[("idempotency-key", "k-2")], &one)
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(b.status, 201, "{:?}", b.body);
    assert_eq!(a.body["id"], b.body["id"]);
    assert_eq!(items(&s.get(GRANTS).await).len(), 5);

    // Batch PATCH and DELETE are all-or-nothing as well.
    let ids: Vec<String> = first.body["entitlementIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let unknown = uuid::Uuid::now_v7().to_string();
    let r = s
        .patch(
            BATCH,
            &json!({"entitlements": [
                {"id": ids[0], "expirationDate": "2040-01-01T00:00:00Z"},
                {"id": unknown, "expirationDate": "2040-01-01T00:00:00Z"},
                {"id": ids[1], "startsAt": "2041-01-01T00:00:00Z",
                 "expirationDate": "2040-01-01T00:00:00Z"}
            ]}),
        )
        .await;
    assert!(r.status == 400 || r.status == 404, "{:?}", r.body);
    assert_eq!(
        item_errors(&r).iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [1, 2]
    );
    let unchanged = s.get(&format!("{GRANTS}/{}", ids[0])).await;
    assert_eq!(unchanged.body["expirationDate"], Value::Null);
    let r = s
        .patch(
            BATCH,
            &json!({"entitlements": [{"id": ids[0], "expirationDate": "tomorrow"},
                                     {"id": ids[1], "expirationDate": "later"}]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        item_errors(&r),
        [
            (0, "expirationDate".to_owned()),
            (1, "expirationDate".to_owned())
        ]
    );
    let r = s.delete(&format!("{BATCH}?ids={},{unknown}", ids[0])).await;
    assert!(r.status == 400 || r.status == 404, "{:?}", r.body);
    assert_eq!(item_errors(&r), [(1, "id".to_owned())]);
    assert_eq!(s.get(&format!("{GRANTS}/{}", ids[0])).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Checks

/// An account with a plan of `reports` (linked to `reports.read`) and `seats` (5), inherited
/// by sub-accounts; `globex` has nothing.
async fn catalog_with_grant(s: &Stack) -> (Value, Vec<String>, u64) {
    s.account("acme", None).await;
    s.account("acme-eu", Some("acme")).await;
    s.account("globex", None).await;
    s.feature(json!({"name": "Reports", "key": "reports", "permissions": ["reports.read"]}))
        .await;
    s.feature(json!({"name": "Seats", "key": "seats", "type": "max_count"}))
        .await;
    let pro = s
        .plan(
            json!({"name": "Pro", "key": "pro", "featureKeys": ["reports"],
                     "features": [{"featureKey": "seats",
                                   "allocation": {"type": "max_count", "value": 5}}],
                     "inheritToSubAccounts": true}),
        )
        .await;
    let (ids, rev) = s
        .grant(json!([{"planId": id(&pro), "tenantId": "acme"}]))
        .await;
    (pro, ids, rev)
}

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

// ---------------------------------------------------------------------------------------------
// The compatibility surfaces

const SEED_003_REQUIRED: &[&str] = &[
    "id",
    "external_id",
    "user_id",
    "product_key",
    "status",
    "granted_at",
    "expires_at",
    "revoked_at",
    "source",
    "brand_id",
    "granted_by",
    "created_at",
    "updated_at",
];

/// Checks one grant against the seed-003 schema: exactly its properties (the required ones
/// and the optional `metadata`), each with the schema's type.
fn assert_seed_003_grant(g: &Value) {
    let mut allowed = set(SEED_003_REQUIRED);
    allowed.insert("metadata");
    let present = keys(g);
    assert!(set(SEED_003_REQUIRED).is_subset(&present), "{g}");
    assert!(present.is_subset(&allowed), "{g}");
    for k in SEED_003_REQUIRED {
        match *k {
            "expires_at" | "revoked_at" => {
                assert!(g[k].is_string() || g[k].is_null(), "{k}: {g}");
            }
            _ => assert!(g[k].is_string(), "{k}: {g}"),
        }
    }
    assert!(
        ["active", "revoked", "expired"].contains(&g["status"].as_str().unwrap()),
        "{g}"
    );
    for k in ["granted_at", "created_at", "updated_at"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(g[k].as_str().unwrap()).is_ok(),
            "{k}: {g}"
        );
    }
}

#[tokio::test]
async fn seed_003_user_grants_in_the_exact_schema() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    s.account("globex", None).await;
    let pro = s.plan(json!({"name": "Pro", "key": "pro"})).await;
    let addon = s.plan(json!({"name": "Add-on", "key": "addon"})).await;
    let soon = (s.clock.now_for_tests() + chrono::Duration::hours(1)).to_rfc3339();
    let (ids, _) = s
        .grant(json!([
            {"planId": id(&pro), "tenantId": "acme", "userId": "alice",
             "externalId": "order-1", "metadata": {"channel": "web"}},
            {"planId": id(&addon), "tenantId": "acme", "userId": "alice"},
            {"planId": id(&addon), "tenantId": "acme", "userId": "alice", "expirationDate": soon},
            {"planId": id(&pro), "tenantId": "globex", "userId": "alice"},
            {"planId": id(&pro), "tenantId": "acme"},
            {"planId": id(&pro), "tenantId": "acme", "userId": "bob"},
            {"planId": id(&pro), "tenantId": "acme", "userId": "alice",
             "startsAt": "2999-01-01T00:00:00Z"}
        ]))
        .await;
    let r = s
        .post(&format!("{GRANTS}/{}/revoke", ids[1]), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    s.clock.advance(chrono::Duration::hours(2));

    // An environment token reads the user's grants in every account.
    let r = s.get("/v1/entitlements/alice").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(keys(&r.body), set(&["grants"]));
    let grants = r.body["grants"].as_array().unwrap();
    for g in grants {
        assert_seed_003_grant(g);
        assert_eq!(g["user_id"], "alice");
    }
    let by_id = |id: &str| {
        grants
            .iter()
            .find(|g| g["id"] == id)
            .unwrap_or_else(|| panic!("grant {id} listed: {grants:?}"))
    };
    // Account-wide grants, other users' and scheduled ones are not listed.
    assert_eq!(grants.len(), 4, "{grants:?}");
    let active = by_id(&ids[0]);
    assert_eq!(active["status"], "active");
    assert_eq!(active["external_id"], "order-1");
    assert_eq!(active["product_key"], "pro");
    assert_eq!(active["brand_id"], "acme");
    assert_eq!(active["source"], "batch");
    assert_eq!(active["granted_by"], "environment:vendor");
    assert_eq!(active["metadata"], json!({"channel": "web"}));
    assert_eq!(active["expires_at"], Value::Null);
    assert_eq!(active["revoked_at"], Value::Null);
    let revoked = by_id(&ids[1]);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        revoked["external_id"], "",
        "the seed requires the key: empty when none"
    );
    let expired = by_id(&ids[2]);
    assert_eq!(expired["status"], "expired");
    assert!(expired["expires_at"].is_string());
    assert_eq!(by_id(&ids[3])["brand_id"], "globex");
    let statuses: BTreeSet<&str> = grants
        .iter()
        .map(|g| g["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, set(&["active", "revoked", "expired"]));

    // A user token reads its own grants, within its account.
    let alice = user_token(&user_claims("acme", "alice", &[]));
    let r = s.app.get("/v1/entitlements/alice", Some(&alice)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let own = r.body["grants"].as_array().unwrap();
    assert_eq!(own.len(), 3);
    assert!(own.iter().all(|g| g["brand_id"] == "acme"));
    // An unknown user has no grants.
    let r = s.get("/v1/entitlements/nobody").await;
    assert_eq!(r.body, json!({"grants": []}));

    // Errors in the seed's `{"error", "message"}`: a 400 for an invalid user ID, and the
    // refusals in the same shape.
    let seed_error = |r: &Reply, status: u16| {
        assert_eq!(r.status, status, "{:?}", r.body);
        assert_eq!(keys(&r.body), set(&["error", "message"]), "{:?}", r.body);
        assert!(r.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(r.body["message"].as_str().is_some_and(|e| !e.is_empty()));
    };
    let long = "u".repeat(300);
    let r = s.get(&format!("/v1/entitlements/{long}")).await;
    seed_error(&r, 400);
    assert_eq!(r.body["error"], "validation_error");
    seed_error(
        &s.app
            .get(&format!("/v1/entitlements/{long}"), Some(&alice))
            .await,
        403,
    );
    seed_error(&s.app.get("/v1/entitlements/bob", Some(&alice)).await, 403);
    seed_error(&s.app.get("/v1/entitlements/alice", None).await, 401);
    seed_error(
        &s.app.get("/v1/entitlements/alice", Some("junk")).await,
        401,
    );
}

#[tokio::test]
async fn seed_004_tenant_entitlements_in_the_exact_envelope() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    s.account("globex", None).await;
    s.feature(
        json!({"name": "Certificates", "key": "mhs_certificate_count",
                     "type": "max_count", "mergePolicy": "sum"}),
    )
    .await;
    s.feature(json!({"name": "Subdomains", "key": "allow_add_subdomain"}))
        .await;
    s.feature(json!({"name": "Seats", "key": "seats", "type": "max_count"}))
        .await;
    s.feature(json!({"name": "Unlimited", "key": "unlimited", "type": "max_count"}))
        .await;
    // A feature named like a fixed `bool` key but counted: listed as custom only.
    s.feature(json!({"name": "Partial", "key": "partial_setup_allowed", "type": "max_count"}))
        .await;
    let certs = s
        .plan(json!({"name": "Certs", "key": "certs", "features": [
            {"featureKey": "mhs_certificate_count", "allocation": {"type": "max_count", "value": 3}},
            {"featureKey": "allow_add_subdomain"},
            {"featureKey": "seats", "allocation": {"type": "max_count", "value": 10}},
            {"featureKey": "unlimited", "allocation": {"type": "max_count", "value": null}},
            {"featureKey": "partial_setup_allowed",
             "allocation": {"type": "max_count", "value": 2}}]}))
        .await;
    // Two grants: SUM merges the certificate counts.
    let (_, rev) = s
        .grant(json!([{"planId": id(&certs), "tenantId": "acme"},
                      {"planId": id(&certs), "tenantId": "acme"}]))
        .await;
    s.eventually("the grants reached the index", || async {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "seats"},
                        "minRevision": rev}),
            )
            .await;
        r.body["result"] == true
    })
    .await;

    let r = s.get("/tenants/acme/entitlements").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        keys(&r.body),
        set(&["success", "errors", "messages", "result"])
    );
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["errors"], json!([]));
    assert_eq!(r.body["messages"], json!([]));
    let result = &r.body["result"];
    assert_eq!(
        keys(result),
        set(&[
            "allow_add_subdomain",
            "allow_auto_accept_invites",
            "cname_setup_allowed",
            "custom_entitlements",
            "mhs_certificate_count",
            "partial_setup_allowed"
        ])
    );
    assert_eq!(
        result["mhs_certificate_count"],
        json!({"type": "max_count", "value": 6})
    );
    assert_eq!(
        result["allow_add_subdomain"],
        json!({"type": "bool", "value": true})
    );
    assert_eq!(
        result["cname_setup_allowed"],
        json!({"type": "bool", "value": false})
    );
    assert_eq!(
        result["allow_auto_accept_invites"],
        json!({"type": "bool", "value": false})
    );
    assert_eq!(
        result["partial_setup_allowed"],
        json!({"type": "bool", "value": false})
    );
    let custom = result["custom_entitlements"].as_array().unwrap();
    for e in custom {
        assert_eq!(keys(e), set(&["allocation", "feature"]), "{e}");
        assert_eq!(keys(&e["feature"]), set(&["key"]), "{e}");
        assert_eq!(keys(&e["allocation"]), set(&["type", "value"]), "{e}");
        match e["allocation"]["type"].as_str().unwrap() {
            "bool" => assert!(e["allocation"]["value"].is_boolean(), "{e}"),
            "max_count" => assert!(e["allocation"]["value"].is_number(), "{e}"),
            other => panic!("allocation type {other}: {e}"),
        }
    }
    let by_key = |k: &str| {
        custom
            .iter()
            .find(|e| e["feature"]["key"] == k)
            .unwrap_or_else(|| panic!("{k} listed: {custom:?}"))["allocation"]
            .clone()
    };
    assert_eq!(by_key("seats"), json!({"type": "max_count", "value": 10}));
    assert_eq!(
        by_key("mhs_certificate_count"),
        json!({"type": "max_count", "value": 6})
    );
    assert_eq!(
        by_key("allow_add_subdomain"),
        json!({"type": "bool", "value": true})
    );
    // Unlimited is still a number here (`Number.MAX_SAFE_INTEGER`), never null.
    assert_eq!(
        by_key("unlimited"),
        json!({"type": "max_count", "value": 9_007_199_254_740_991_u64})
    );
    assert_eq!(
        by_key("partial_setup_allowed"),
        json!({"type": "max_count", "value": 2})
    );
    assert_eq!(custom.len(), 5);

    // No grants: the fixed keys are off/zero, the custom list empty.
    let r = s.get("/tenants/globex/entitlements").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["result"]["custom_entitlements"], json!([]));
    assert_eq!(
        r.body["result"]["mhs_certificate_count"],
        json!({"type": "max_count", "value": 0})
    );

    // A user token reads its own account.
    let alice = user_token(&user_claims("acme", "alice", &[]));
    let r = s.app.get("/tenants/acme/entitlements", Some(&alice)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["result"]["custom_entitlements"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    // Errors in the same envelope, with codes ≥ 1000.
    let envelope_error = |r: &Reply, status: u16| {
        assert_eq!(r.status, status, "{:?}", r.body);
        assert_eq!(
            keys(&r.body),
            set(&["success", "errors", "messages", "result"])
        );
        assert_eq!(r.body["success"], false);
        assert_eq!(r.body["result"], Value::Null);
        assert_eq!(r.body["messages"], json!([]));
        let errors = r.body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{:?}", r.body);
        assert_eq!(keys(&errors[0]), set(&["code", "message"]));
        assert!(errors[0]["code"].as_u64().unwrap() >= 1000);
        assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    envelope_error(&s.get("/tenants/nobody/entitlements").await, 404);
    envelope_error(&s.app.get("/tenants/acme/entitlements", None).await, 401);
    envelope_error(
        &s.app
            .get("/tenants/globex/entitlements", Some(&alice))
            .await,
        403,
    );
}

// ---------------------------------------------------------------------------------------------
// The auth matrix on entitlement routes

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
        struct Method(Option<String>);
        impl tracing::field::Visit for Method {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "rpc.method" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        if attrs.metadata().name() == "grpc.request" {
            let mut method = Method(None);
            attrs.record(&mut method);
            if let Some(m) = method.0.filter(|m| m.starts_with("/tenantry.tenant.v1.")) {
                self.0.lock().unwrap().push(m);
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
