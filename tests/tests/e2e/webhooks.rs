//! Webhooks against the real services and a real HTTP receiver: every catalogue event a journey
//! produces arrives, each signature verifies with the Standard Webhooks reference library
//! (PyPI `standardwebhooks`); a receiver that fails for a while then recovers gets every
//! event; an entitlement service killed (SIGKILL) mid-delivery delivers everything after its
//! restart; a private address is refused at creation and at delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode as AxumStatus};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry_common::testing;
use tenantry_tests::standardwebhooks::{Message, verify};
use tenantry_tests::{Process, Stack, StackOptions};

use crate::support::{create_account, create_feature, create_plan, eventually, expect};

const DEADLINE: Duration = Duration::from_secs(30);
const HOOKS: &str = "/entitlements/api/v1/webhooks";

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    /// Holds each request this long, then answers 200.
    Hold(Duration),
}

#[derive(Debug)]
struct Inbox {
    mode: Mode,
    received: Vec<Message>,
    /// Requests that arrived (counted before any hold).
    arrivals: usize,
}

/// A webhook receiver on loopback.
#[derive(Clone, Debug)]
struct Receiver {
    inbox: Arc<Mutex<Inbox>>,
    port: u16,
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: String,
) -> AxumStatus {
    let mode = {
        let mut inbox = inbox.lock().unwrap();
        inbox.arrivals += 1;
        inbox.mode
    };
    match mode {
        Mode::Fail => return AxumStatus::INTERNAL_SERVER_ERROR,
        Mode::Hold(d) => tokio::time::sleep(d).await,
        Mode::Ok => {}
    }
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    inbox
        .lock()
        .unwrap()
        .received
        .push(Message { headers, body });
    AxumStatus::NO_CONTENT
}

impl Receiver {
    async fn start() -> Self {
        let inbox = Arc::new(Mutex::new(Inbox {
            mode: Mode::Ok,
            received: Vec::new(),
            arrivals: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inbox.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inbox, port }
    }

    fn set_mode(&self, mode: Mode) {
        self.inbox.lock().unwrap().mode = mode;
    }

    fn arrivals(&self) -> usize {
        self.inbox.lock().unwrap().arrivals
    }

    fn received(&self) -> Vec<Message> {
        self.inbox.lock().unwrap().received.clone()
    }

    /// The events received, by `webhook-id` (a redelivered event counts once).
    fn events(&self) -> BTreeMap<String, Value> {
        self.received()
            .iter()
            .map(|m| {
                let id = header(m, "webhook-id").to_owned();
                (id, serde_json::from_str(&m.body).expect("a JSON body"))
            })
            .collect()
    }

    fn types(&self) -> BTreeSet<String> {
        self.events()
            .values()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

fn header<'a>(m: &'a Message, name: &str) -> &'a str {
    m.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// Loopback allowed (the receiver is there), quick retries, a quick poll.
fn webhook_env(p: &mut Process) {
    if p.name() == "entitlement-service" {
        p.set_env("TENANTRY_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
        p.set_env(
            "TENANTRY_WEBHOOK_RETRY_SCHEDULE",
            "200ms,300ms,400ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms",
        );
        p.set_env("TENANTRY_WEBHOOK_POLL_MS", "100");
        p.set_env("TENANTRY_WEBHOOK_TIMEOUT_MS", "1000");
    }
}

async fn stack() -> Stack {
    Stack::start_configured(testing::postgres(), StackOptions::default(), webhook_env).await
}

/// Registers `url`; answers the webhook's ID and secret.
async fn register(stack: &Stack, env: &str, url: &str) -> (String, String) {
    let created = expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        HOOKS,
        Some(env),
        Some(json!({"url": url, "description": "e2e receiver"})),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    (created["id"].as_str().expect("id").to_owned(), secret)
}

async fn deliveries(stack: &Stack, env: &str, hook: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{HOOKS}/{hook}/deliveries?limit=100&cursor={c}"),
            None => format!("{HOOKS}/{hook}/deliveries?limit=100"),
        };
        let page = expect(stack, StatusCode::OK, Method::GET, &path, Some(env), None).await;
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogue_event_arrives_signed_and_a_failing_receiver_gets_them_all() {
    let stack = stack().await;
    let env = &stack.env_token().await;
    let receiver = Receiver::start().await;
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let (hook, secret) = register(&stack, env, &url).await;

    // Management: listed and read without the secret; bad input refused with the field.
    let listed = expect(&stack, StatusCode::OK, Method::GET, HOOKS, Some(env), None).await;
    assert_eq!(listed["items"][0]["id"], hook.as_str(), "{listed}");
    assert!(listed["items"][0].get("secret").is_none(), "{listed}");
    for (body, field) in [
        (json!({"url": "ftp://example.com/"}), "url"),
        (
            json!({"url": url, "eventTypes": ["tenantry.nope.v1"]}),
            "eventTypes",
        ),
    ] {
        let (status, answer) = stack.call(Method::POST, HOOKS, Some(env), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.to_string().contains(field), "{answer}");
    }
    let (status, _) = stack
        .call(
            Method::POST,
            HOOKS,
            Some(&stack.user_token("acme", "u1", &[])),
            Some(json!({"url": url})),
        )
        .await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED,
        "{status}"
    );

    // A journey touching every catalogue type.
    create_account(&stack, env, "acme", "Acme").await;
    create_account(&stack, env, "acme-eu", "Acme EU").await;
    expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/tenants/resources/hierarchy/v1",
        Some(env),
        Some(json!({"parentTenantId": "acme", "childTenantId": "acme-eu"})),
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::PUT,
        "/tenants/resources/tenants/v1/acme",
        Some(env),
        Some(json!({"name": "Acme Corp"})),
    )
    .await;
    let (status, _, answer) = stack
        .call_with(
            Method::PUT,
            "/tenants/resources/account-settings/v1",
            Some(env),
            &[("frontegg-tenant-id", "acme")],
            Some(json!({"timezone": "Europe/Paris"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = stack
        .call(
            Method::POST,
            "/tenants/resources/tenants/v1/acme/users",
            Some(env),
            Some(json!({"userId": "u1"})),
        )
        .await;
    assert!(status.is_success(), "{status} {answer}");
    create_feature(&stack, env, "reports", "bool", &["reports.read"]).await;
    create_plan(
        &stack,
        env,
        json!({"name": "Pro", "key": "pro", "featureKeys": ["reports"]}),
    )
    .await;
    expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/feature-flags/v1",
        Some(env),
        Some(json!({"name": "beta", "on": true, "offTreatment": "false",
            "defaultTreatment": "true", "featureKey": "reports"})),
    )
    .await;
    expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/routes/v1",
        Some(env),
        Some(json!({"method": "GET", "path": "/reports/**", "policy": "allow"})),
    )
    .await;
    let grant = expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/entitlements/v2",
        Some(env),
        Some(json!({"planKey": "pro", "tenantId": "acme"})),
    )
    .await;
    let grant = grant["id"].as_str().expect("grant id").to_owned();
    expect(
        &stack,
        StatusCode::OK,
        Method::PATCH,
        &format!("/entitlements/resources/entitlements/v2/{grant}"),
        Some(env),
        Some(json!({"externalId": "crm-1"})),
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::POST,
        &format!("/entitlements/resources/entitlements/v2/{grant}/revoke"),
        Some(env),
        Some(json!({})),
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        &format!("/entitlements/resources/entitlements/v2/{grant}"),
        Some(env),
        None,
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        "/tenants/resources/tenants/v1/acme-eu",
        Some(env),
        None,
    )
    .await;

    let expected: BTreeSet<String> = [
        "account.created",
        "account.updated",
        "account.deleted",
        "account.settings_changed",
        "account.hierarchy_changed",
        "account.membership_changed",
        "feature.changed",
        "plan.changed",
        "flag.changed",
        "route.changed",
        "grant.created",
        "grant.updated",
        "grant.revoked",
        "grant.deleted",
    ]
    .iter()
    .map(|t| format!("tenantry.{t}.v1"))
    .collect();
    eventually(DEADLINE, "every catalogue type received", || async {
        let missing: Vec<_> = expected.difference(&receiver.types()).cloned().collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    })
    .await;

    // Each one a CloudEvent, signed as the reference library verifies.
    let received = receiver.received();
    for result in verify(&secret, &received).await {
        assert_eq!(result, "ok");
    }
    for (id, event) in receiver.events() {
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(event["id"], id.as_str(), "{event}");
        assert!(
            event["tenantryrevision"].is_u64() || event["tenantrysequence"].is_u64(),
            "{event}"
        );
    }
    let created = receiver
        .events()
        .into_values()
        .find(|e| e["type"] == "tenantry.grant.created.v1")
        .expect("grant created");
    assert_eq!(created["subject"], "acme", "{created}");
    assert_eq!(created["data"]["grant"]["id"], grant.as_str(), "{created}");
    // A tampered body fails the same verifier (the check above is not vacuous).
    let mut forged = received[0].clone();
    forged.body = forged.body.replacen('{', "{ ", 1);
    assert_ne!(verify(&secret, &[forged]).await[0], "ok");

    // A receiver that fails for a while, then recovers, gets every event.
    receiver.set_mode(Mode::Fail);
    let before = receiver.events().len();
    let arrivals = receiver.arrivals();
    for key in ["failing-a", "failing-b", "failing-c"] {
        create_feature(&stack, env, key, "bool", &[]).await;
    }
    eventually(DEADLINE, "repeated failed attempts", || async {
        let failed = deliveries(&stack, env, &hook)
            .await
            .into_iter()
            .filter(|d| d["lastStatusCode"] == 500 && d["attempts"].as_u64() >= Some(2))
            .count();
        if failed == 3 && receiver.arrivals() >= arrivals + 6 {
            Ok(())
        } else {
            Err(format!("{failed} failing"))
        }
    })
    .await;
    assert_eq!(receiver.events().len(), before, "a 500 is not a delivery");
    receiver.set_mode(Mode::Ok);
    eventually(DEADLINE, "the events after recovery", || async {
        let keys: BTreeSet<String> = receiver
            .events()
            .values()
            .filter(|e| e["type"] == "tenantry.feature.changed.v1")
            .filter_map(|e| e["data"]["item"]["key"].as_str().map(str::to_owned))
            .collect();
        if ["failing-a", "failing-b", "failing-c"]
            .iter()
            .all(|k| keys.contains(*k))
        {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        }
    })
    .await;
    let log = deliveries(&stack, env, &hook).await;
    assert!(log.iter().all(|d| d["status"] == "succeeded"), "{log:?}");
    let retried = log
        .iter()
        .filter(|d| d["attempts"].as_u64() >= Some(3))
        .count();
    assert!(retried >= 3, "{log:?}");
    for result in verify(&secret, &receiver.received()).await {
        assert_eq!(result, "ok");
    }

    // Redelivery sends the same event (same webhook-id) again; rotation re-signs.
    let first = log.last().expect("a delivery");
    let count = receiver.received().len();
    let new_secret = expect(
        &stack,
        StatusCode::OK,
        Method::POST,
        &format!("{HOOKS}/{hook}/rotate-secret"),
        Some(env),
        None,
    )
    .await["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(new_secret, secret);
    let redelivered = expect(
        &stack,
        StatusCode::OK,
        Method::POST,
        &format!(
            "{HOOKS}/{hook}/deliveries/{}/redeliver",
            first["id"].as_str().unwrap()
        ),
        Some(env),
        None,
    )
    .await;
    assert_eq!(redelivered["status"], "pending", "{redelivered}");
    eventually(DEADLINE, "the redelivery", || async {
        if receiver.received().len() > count {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let again = receiver.received()[count].clone();
    assert_eq!(
        header(&again, "webhook-id"),
        first["eventId"].as_str().unwrap()
    );
    assert_eq!(verify(&new_secret, &[again]).await[0], "ok");

    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        &format!("{HOOKS}/{hook}"),
        Some(env),
        None,
    )
    .await;
    expect(
        &stack,
        StatusCode::NOT_FOUND,
        Method::GET,
        &format!("{HOOKS}/{hook}"),
        Some(env),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_redelivers_after_restart_and_private_addresses_are_refused() {
    let mut stack = stack().await;
    let env = &stack.env_token().await;
    let receiver = Receiver::start().await;
    let (hook, secret) = register(
        &stack,
        env,
        &format!("http://127.0.0.1:{}/hook", receiver.port),
    )
    .await;
    // A name that resolves to loopback, registered while private networks are allowed.
    let (named, _) = register(
        &stack,
        env,
        &format!("http://localhost:{}/hook", receiver.port),
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::PATCH,
        &format!("{HOOKS}/{named}"),
        Some(env),
        Some(json!({"enabled": false})),
    )
    .await;

    // Killed while the receiver holds a delivery, with more events queued behind it.
    receiver.set_mode(Mode::Hold(Duration::from_secs(3)));
    let keys: Vec<String> = (0..5).map(|i| format!("kill-{i}")).collect();
    for key in &keys {
        create_feature(&stack, env, key, "bool", &[]).await;
    }
    eventually(DEADLINE, "a delivery in flight", || async {
        if receiver.arrivals() > 0 {
            Ok(())
        } else {
            Err("none yet".into())
        }
    })
    .await;
    stack.entitlement.kill();
    receiver.set_mode(Mode::Ok);
    stack.entitlement.start();
    stack.wait_ready(Duration::from_secs(60)).await;
    eventually(DEADLINE, "every event after the restart", || async {
        let got: BTreeSet<String> = receiver
            .events()
            .values()
            .filter_map(|e| e["data"]["item"]["key"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<_> = keys.iter().filter(|k| !got.contains(*k)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    })
    .await;
    for result in verify(&secret, &receiver.received()).await {
        assert_eq!(result, "ok");
    }

    // Private networks not allowed: refused at creation, literal or by name...
    stack
        .entitlement
        .set_env("TENANTRY_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false");
    stack.entitlement.kill();
    stack.entitlement.start();
    stack.wait_ready(Duration::from_secs(60)).await;
    for url in [
        format!("http://127.0.0.1:{}/hook", receiver.port),
        format!("http://localhost:{}/hook", receiver.port),
        "http://[::1]/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
        "http://[::ffff:127.0.0.1]/hook".to_owned(),
    ] {
        let (status, answer) = stack
            .call(Method::POST, HOOKS, Some(env), Some(json!({"url": url})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {answer}");
        assert!(answer.to_string().contains("url"), "{answer}");
    }
    // ...and at delivery: the name registered earlier resolves to loopback and is not reached.
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        &format!("{HOOKS}/{hook}"),
        Some(env),
        None,
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::PATCH,
        &format!("{HOOKS}/{named}"),
        Some(env),
        Some(json!({"enabled": true})),
    )
    .await;
    let arrivals = receiver.arrivals();
    create_feature(&stack, env, "after-private", "bool", &[]).await;
    let refused = eventually(DEADLINE, "the refused attempt", || async {
        deliveries(&stack, env, &named)
            .await
            .into_iter()
            .find(|d| {
                d["eventType"] == "tenantry.feature.changed.v1" && d["attempts"].as_u64() >= Some(1)
            })
            .ok_or_else(|| "no attempt yet".to_owned())
    })
    .await;
    assert!(refused["lastStatusCode"].is_null(), "{refused}");
    assert!(
        refused["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("may not reach"),
        "{refused}"
    );
    assert_eq!(
        receiver.arrivals(),
        arrivals,
        "nothing reached the loopback receiver"
    );
}

/// Time transitions with real time on two entitlement replicas sharing one PostgreSQL: a
/// scheduled grant's start, its expiring notice (a 2-second lead time) and its expiry each
/// arrive exactly once, signed; a revoked grant sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_transitions_arrive_once_from_two_replicas() {
    let stack = Stack::start_configured(testing::postgres(), StackOptions::default(), |p| {
        webhook_env(p);
        if p.name() == "entitlement-service" {
            p.set_env("TENANTRY_WEBHOOK_EXPIRING_LEAD_TIMES", "2s");
        }
    })
    .await;
    let (mut replica, _) = stack.entitlement_replica("entitlement-replica");
    replica.start();
    let env = &stack.env_token().await;
    let receiver = Receiver::start().await;
    let types = [
        "tenantry.grant.started.v1",
        "tenantry.grant.expiring.v1",
        "tenantry.grant.expired.v1",
    ];
    let created = expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        HOOKS,
        Some(env),
        Some(json!({
            "url": format!("http://127.0.0.1:{}/hook", receiver.port),
            "eventTypes": types,
        })),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_owned();
    create_account(&stack, env, "acme", "Acme").await;
    create_feature(&stack, env, "reports", "bool", &[]).await;
    create_plan(
        &stack,
        env,
        json!({"name": "Pro", "key": "pro", "featureKeys": ["reports"]}),
    )
    .await;
    eventually(DEADLINE, "the replica serving", || async {
        if replica.logs().contains("entitlement service listening") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;

    let now = chrono::Utc::now();
    let ms = |n: i64| {
        (now + chrono::Duration::milliseconds(n))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    // Starts in 2 s, its notice in 4 s (2 s before its expiry), expires in 6 s.
    let trial = create_grant(
        &stack,
        env,
        json!({"planKey": "pro", "tenantId": "acme", "startsAt": ms(2_000), "expirationDate": ms(6_000)}),
    )
    .await;
    let revoked = create_grant(
        &stack,
        env,
        json!({"planKey": "pro", "tenantId": "acme", "startsAt": ms(2_000), "expirationDate": ms(5_000)}),
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::POST,
        &format!("/entitlements/resources/entitlements/v2/{revoked}/revoke"),
        Some(env),
        Some(json!({})),
    )
    .await;

    eventually(Duration::from_secs(20), "the three transitions", || async {
        let got = receiver.types();
        if types.iter().all(|t| got.contains(*t)) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    // Time for a duplicate to show up: both replicas poll every 100 ms.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let received = receiver.received();
    let mut arrived: Vec<(String, String)> = received
        .iter()
        .map(|m| {
            let event: Value = serde_json::from_str(&m.body).expect("a JSON body");
            (
                event["type"].as_str().unwrap_or_default().to_owned(),
                event["data"]["grant"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    arrived.sort();
    let mut expected: Vec<(String, String)> = types
        .iter()
        .map(|t| ((*t).to_owned(), trial.clone()))
        .collect();
    expected.sort();
    assert_eq!(
        arrived, expected,
        "each transition once, none of the revoked grant"
    );
    for result in verify(&secret, &received).await {
        assert_eq!(result, "ok");
    }
    let events = receiver.events();
    let expiring = events
        .values()
        .find(|e| e["type"] == "tenantry.grant.expiring.v1")
        .expect("expiring");
    assert_eq!(expiring["data"]["leadSeconds"], 2, "{expiring}");
    assert_eq!(expiring["data"]["planKey"], "pro", "{expiring}");
    assert_eq!(expiring["subject"], "acme", "{expiring}");
    assert!(expiring["tenantryrevision"].is_u64(), "{expiring}");
    replica.kill();
}

async fn create_grant(stack: &Stack, env: &str, body: Value) -> String {
    expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/entitlements/v2",
        Some(env),
        Some(body),
    )
    .await["id"]
        .as_str()
        .expect("grant id")
        .to_owned()
}

/// An import's end is announced once (`tenantry.migration.finished.v1`), signed as the
/// reference library verifies, with its counts and times and the feed sequence it came from;
/// the accounts it created come before it as their own events. An endpoint filtered to
/// accounts does not receive it (it is no account's event), only the events of its accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_migration_arrives_once_signed_with_its_counts() {
    const IMPORTS: &str = "/tenants/resources/migrations/v1/tenants";
    const FINISHED: &str = "tenantry.migration.finished.v1";
    let stack = stack().await;
    let env = &stack.env_token().await;
    let receiver = Receiver::start().await;
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let (_, secret) = register(&stack, env, &url).await;
    let filtered = Receiver::start().await;
    let filtered_hook = expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        HOOKS,
        Some(env),
        Some(json!({
            "url": format!("http://127.0.0.1:{}/hook", filtered.port),
            "accountIds": ["imp-a"],
        })),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    create_account(&stack, env, "imp-exists", "Exists").await;

    let started = expect(
        &stack,
        StatusCode::ACCEPTED,
        Method::POST,
        IMPORTS,
        Some(env),
        Some(json!({"tenants": [
            "imp-a",
            {"tenantId": "imp-b", "name": "B", "parentTenantId": "imp-a"},
            // Already there: skipped; there and different: refused; no parent: refused.
            "imp-exists",
            {"tenantId": "imp-exists", "name": "Another name"},
            {"tenantId": "imp-orphan", "name": "Orphan", "parentTenantId": "nowhere"},
        ]})),
    )
    .await;
    let migration_id = started["migrationId"].as_str().expect("migration ID");
    let status_path = format!("{IMPORTS}/status/{migration_id}");
    let status = eventually(DEADLINE, "the migration finished", || async {
        let status = expect(
            &stack,
            StatusCode::OK,
            Method::GET,
            &status_path,
            Some(env),
            None,
        )
        .await;
        match status["status"].as_str() {
            Some("completed" | "failed") => Ok(status),
            _ => Err(status.to_string()),
        }
    })
    .await;
    assert_eq!(status["status"], "completed", "{status}");

    let finished = eventually(DEADLINE, "the migration's event", || async {
        receiver
            .events()
            .into_values()
            .find(|e| e["type"] == FINISHED)
            .ok_or_else(|| format!("{:?}", receiver.types()))
    })
    .await;
    let data = &finished["data"];
    assert_eq!(data["migrationId"], migration_id, "{finished}");
    assert_eq!(data["status"], "completed", "{finished}");
    for (field, count) in [
        ("totalItems", 5),
        ("processedItems", 5),
        ("createdItems", 2),
        ("skippedItems", 1),
        ("succeededItems", 3),
        ("failedItems", 2),
    ] {
        assert_eq!(data[field], count, "{field}: {finished}");
    }
    for field in ["createdItems", "skippedItems", "failedItems"] {
        assert_eq!(
            data[field], status[field],
            "{field}: {finished} vs {status}"
        );
    }
    // The same instants; the REST status writes milliseconds, the event microseconds.
    let millis = |v: &Value| v.as_str().map(|t| t[..23].to_owned());
    for field in ["startedAt", "finishedAt"] {
        assert!(millis(&data[field]).is_some(), "{field}: {finished}");
        assert_eq!(millis(&data[field]), millis(&status[field]), "{field}");
    }
    assert_eq!(finished["time"], data["finishedAt"], "{finished}");
    assert!(finished.get("subject").is_none(), "{finished}");
    let sequence = finished["tenantrysequence"]
        .as_u64()
        .expect("the feed sequence");
    for account in ["imp-a", "imp-b"] {
        let created = receiver
            .events()
            .into_values()
            .find(|e| e["type"] == "tenantry.account.created.v1" && e["subject"] == account)
            .unwrap_or_else(|| panic!("{account} created: {:?}", receiver.types()));
        assert!(
            created["tenantrysequence"].as_u64() < Some(sequence),
            "{created}"
        );
    }

    // A second import announces itself, and the first one never again.
    let again = expect(
        &stack,
        StatusCode::ACCEPTED,
        Method::POST,
        IMPORTS,
        Some(env),
        Some(json!({"tenants": ["imp-a"]})),
    )
    .await;
    let again_id = again["migrationId"]
        .as_str()
        .expect("migration ID")
        .to_owned();
    let second = eventually(DEADLINE, "the second migration's event", || async {
        receiver
            .events()
            .into_values()
            .find(|e| e["data"]["migrationId"] == again_id.as_str())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;
    assert_eq!(second["data"]["skippedItems"], 1, "{second}");
    assert_eq!(second["data"]["createdItems"], 0, "{second}");
    let ends = receiver
        .received()
        .iter()
        .filter(|m| m.body.contains(FINISHED))
        .count();
    assert_eq!(ends, 2, "each end once");
    for result in verify(&secret, &receiver.received()).await {
        assert_eq!(result, "ok");
    }

    // The account-filtered endpoint: its account's events, no migration's. Both ends were
    // fanned out to every endpoint before they reached the first receiver.
    let log = deliveries(&stack, env, &filtered_hook).await;
    assert!(log.iter().all(|d| d["eventType"] != FINISHED), "{log:?}");
    eventually(DEADLINE, "the filtered endpoint's events", || async {
        let subjects: BTreeSet<String> = filtered
            .events()
            .values()
            .map(|e| e["subject"].as_str().unwrap_or("<none>").to_owned())
            .collect();
        if subjects == BTreeSet::from(["imp-a".to_owned()]) && filtered.events().len() == log.len()
        {
            Ok(())
        } else {
            Err(format!("{subjects:?}"))
        }
    })
    .await;
}

/// An entitlement service away past the feed's retention loses no event the tenant service
/// still holds: after resynchronising, the feed's events retained between its cursor and the
/// snapshot arrive as the feed would have sent them (an update with its changed fields, an
/// import's accounts and its end), and what was pruned arrives as the snapshot's difference
/// (`tenantryresync`). Before, a resynchronisation announced no account event at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resynchronised_follower_announces_what_happened_while_it_was_away() {
    const RETENTION_SECS: u64 = 15;
    let mut stack = Stack::start_configured(testing::postgres(), StackOptions::default(), |p| {
        webhook_env(p);
        if p.name() == "tenant-service" {
            p.set_env("TENANTRY_FEED_RETENTION_SECS", &RETENTION_SECS.to_string());
        }
    })
    .await;
    let env = &stack.env_token().await;
    let receiver = Receiver::start().await;
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let (_, secret) = register(&stack, env, &url).await;
    for id in ["gap-kept", "gap-gone"] {
        create_account(&stack, env, id, id).await;
    }
    eventually(DEADLINE, "the accounts announced", || async {
        let n = receiver.events().len();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} events"))
        }
    })
    .await;
    let status = stack.entitlement.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");

    // Away: a deletion, pruned before it comes back...
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        "/tenants/resources/tenants/v1/gap-gone",
        Some(env),
        None,
    )
    .await;
    let admin = sea_orm::Database::connect(stack.admin_db_url.clone())
        .await
        .expect("connect as admin");
    eventually(
        Duration::from_secs(RETENTION_SECS * 3),
        "the outbox pruned",
        || async {
            use sea_orm::ConnectionTrait;
            let row = admin
                .query_one_raw(sea_orm::Statement::from_string(
                    admin.get_database_backend(),
                    format!(
                        "SELECT COUNT(*)::BIGINT AS n FROM {}.change_events",
                        tenantry_tests::TENANT_SCHEMA
                    ),
                ))
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no row")?;
            match row.try_get::<i64>("", "n").map_err(|e| e.to_string())? {
                0 => Ok(()),
                n => Err(format!("{n} events left")),
            }
        },
    )
    .await;
    // ... then an update and an import, still retained when it comes back.
    expect(
        &stack,
        StatusCode::OK,
        Method::PUT,
        "/tenants/resources/tenants/v1/gap-kept",
        Some(env),
        Some(json!({"name": "Kept, renamed"})),
    )
    .await;
    let started = expect(
        &stack,
        StatusCode::ACCEPTED,
        Method::POST,
        "/tenants/resources/migrations/v1/tenants",
        Some(env),
        Some(json!({"tenants": ["gap-imported"]})),
    )
    .await;
    let migration_id = started["migrationId"]
        .as_str()
        .expect("migration ID")
        .to_owned();
    eventually(DEADLINE, "the import finished", || async {
        let path = format!("/tenants/resources/migrations/v1/tenants/status/{migration_id}");
        let status = expect(&stack, StatusCode::OK, Method::GET, &path, Some(env), None).await;
        if status["status"] == "completed" {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;

    let find = |ty: &str, subject: Option<&str>| {
        receiver
            .events()
            .into_values()
            .find(|e| e["type"] == ty && subject.is_none_or(|s| e["subject"] == s))
    };
    eventually(DEADLINE, "the events of the gap", || async {
        let missing: Vec<&str> = [
            ("tenantry.account.deleted.v1", Some("gap-gone")),
            ("tenantry.account.updated.v1", Some("gap-kept")),
            ("tenantry.account.created.v1", Some("gap-imported")),
            ("tenantry.migration.finished.v1", None),
        ]
        .into_iter()
        .filter(|(ty, subject)| find(ty, *subject).is_none())
        .map(|(ty, _)| ty)
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}; got {:?}", receiver.types()))
        }
    })
    .await;
    let deleted = find("tenantry.account.deleted.v1", Some("gap-gone")).unwrap();
    assert_eq!(deleted["tenantryresync"], true, "{deleted}");
    let updated = find("tenantry.account.updated.v1", Some("gap-kept")).unwrap();
    assert_eq!(
        updated["data"]["changedFields"],
        json!(["name"]),
        "{updated}"
    );
    assert!(updated.get("tenantryresync").is_none(), "{updated}");
    let finished = find("tenantry.migration.finished.v1", None).unwrap();
    assert_eq!(
        finished["data"]["migrationId"],
        migration_id.as_str(),
        "{finished}"
    );
    for result in verify(&secret, &receiver.received()).await {
        assert_eq!(result, "ok");
    }
    assert!(
        stack
            .entitlement
            .logs()
            .contains("resynchronised with the tenant service"),
        "no resynchronisation:\n{}",
        stack.log_tails()
    );
}

/// A journey with usage: an account on a plan issuing 10 `calls` a month reports usage and
/// consumes; `tenantry.usage.threshold.v1` arrives once for each of 50, 80 and 100 %, signed
/// as the reference library verifies, with the usage and balance of the write that reached
/// it; usage past the allowance, a duplicate and a top-up climbing back send nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_thresholds_arrive_once_each_signed() {
    const THRESHOLD: &str = "tenantry.usage.threshold.v1";
    const USAGE: &str = "/entitlements/api/v1/usage";
    let stack = stack().await;
    let env = &stack.env_token().await;
    let receiver = Receiver::start().await;
    let created = expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        HOOKS,
        Some(env),
        Some(json!({
            "url": format!("http://127.0.0.1:{}/hook", receiver.port),
            "eventTypes": [THRESHOLD],
        })),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_owned();
    create_account(&stack, env, "acme", "Acme").await;
    expect(
        &stack,
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
    create_plan(
        &stack,
        env,
        json!({"name": "API", "key": "api", "features": [{"featureKey": "calls",
            "allocation": {"type": "max_count", "value": 10}}]}),
    )
    .await;
    create_grant(&stack, env, json!({"planKey": "api", "tenantId": "acme"})).await;
    let usage = |id: &str, amount: i64| {
        json!({"events": [{"id": id, "tenantId": "acme", "featureKey": "calls",
            "amount": amount}]})
    };
    // The account reaches the entitlement service through the tenant feed.
    eventually(DEADLINE, "usage recorded", || async {
        let (status, answer) = stack
            .call(Method::POST, USAGE, Some(env), Some(usage("u1", 6)))
            .await;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{status} {answer}"))
        }
    })
    .await;
    let consumed = expect(
        &stack,
        StatusCode::OK,
        Method::POST,
        "/entitlements/api/v1/usage/consume",
        Some(env),
        Some(json!({"id": "c1", "tenantId": "acme", "featureKey": "calls", "amount": 2})),
    )
    .await;
    assert_eq!(consumed["consumed"], true, "{consumed}");
    for (id, amount) in [("u2", 2), ("u3", 5), ("u1", 6)] {
        expect(
            &stack,
            StatusCode::OK,
            Method::POST,
            USAGE,
            Some(env),
            Some(usage(id, amount)),
        )
        .await;
    }
    expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/api/v1/credit-grants",
        Some(env),
        Some(json!({"tenantId": "acme", "featureKey": "calls", "amount": 100})),
    )
    .await;
    expect(
        &stack,
        StatusCode::OK,
        Method::POST,
        USAGE,
        Some(env),
        Some(usage("u4", 90)),
    )
    .await;

    eventually(DEADLINE, "three thresholds", || async {
        match receiver.events().len() {
            3.. => Ok(()),
            n => Err(format!("{n} received")),
        }
    })
    .await;
    // Time for a duplicate to show up (the loop polls every 100 ms).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let received = receiver.received();
    for result in verify(&secret, &received).await {
        assert_eq!(result, "ok");
    }
    let mut seen: Vec<(u64, i64, i64)> = receiver
        .events()
        .into_values()
        .map(|e| {
            assert_eq!(e["type"], THRESHOLD, "{e}");
            assert_eq!(e["subject"], "acme", "{e}");
            assert!(e["tenantryrevision"].as_u64() > Some(0), "{e}");
            assert_eq!(e["data"]["featureKey"], "calls", "{e}");
            assert!(
                e["data"]["periodStart"].as_str() < e["data"]["periodEnd"].as_str(),
                "{e}"
            );
            let data = &e["data"];
            (
                data["threshold"].as_u64().unwrap_or_default(),
                data["usage"].as_i64().unwrap_or_default(),
                data["balance"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort_unstable();
    // 6 of 10 (50 %), 8 (80 %), 10 (100 %: the balance at 0); then 15 (overage), and 105 of
    // 110 after the top-up: nothing again.
    assert_eq!(seen, [(50, 6, 4), (80, 8, 2), (100, 10, 0)]);
    assert_eq!(received.len(), 3, "each delivered once");
}
