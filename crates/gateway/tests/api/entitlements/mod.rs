//! Entitlement routes through real HTTP against the real tenant and entitlement services on
//! PostgreSQL: catalog (features, plans, flags, routes), grants (the seed's batch and the single
//! forms), checks (ours and Frontegg's agent endpoints), the two compatibility surfaces' exact
//! shapes, and the tenant-scope rules of user tokens.
//!
//! One module per area; the shared stack and helpers are here.

mod audit;
mod auth;
mod catalog;
mod checks;
mod compat;
mod grants;
mod idempotency;
mod metered;
mod metering;
mod metering_history;
mod ofrep;
mod reservations;
mod seeds;
mod webhooks;
mod what_if;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use tenantry_common::{CancellationToken, Config, Secret};
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
    /// The services' database.
    db: String,
    clock: ManualClock,
    env: String,
    services: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.services.cancel();
    }
}

async fn spawn_stack() -> Stack {
    spawn_stack_with(|_| {}).await
}

/// [`spawn_stack`] with the services' config adjusted.
async fn spawn_stack_with(adjust: impl FnOnce(&mut Config)) -> Stack {
    spawn_stack_configured(adjust, |_| {}).await
}

/// [`spawn_stack`] with the services' and the gateway's configs adjusted.
async fn spawn_stack_configured(
    adjust: impl FnOnce(&mut Config),
    adjust_gateway: impl FnOnce(&mut Config),
) -> Stack {
    let db = tenantry_common::testing::postgres().create_database().await;
    let services = CancellationToken::new();
    let tenant_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tenant_url = format!("http://{}", tenant_listener.local_addr().unwrap());
    let mut config = Config {
        tenant_database_url: Some(Secret::new(db.clone())),
        entitlement_database_url: Some(Secret::new(db.clone())),
        tenant_service_url: Some(tenant_url.clone()),
        ..Config::default()
    };
    adjust(&mut config);
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
        adjust_gateway(c);
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
        db,
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
    // Accounts reach the index through the tenant change feed, which no write's revision
    // covers: wait for the last one created, so a check on `globex` is not TENANT_NOT_FOUND.
    s.eventually("the accounts reached the index", || async {
        let r = s
            .post(
                CHECK,
                &json!({"subject": {"tenantId": "globex"}, "feature": {"featureKey": "reports"}}),
            )
            .await;
        r.body["justification"] != "TENANT_NOT_FOUND"
    })
    .await;
    (pro, ids, rev)
}
