//! Decisions where the application runs: the SDK's embedded evaluator (in this test process)
//! and `tenantry agent` (a process) follow a real stack through writes, an account deletion and
//! an entitlement-service restart, and answer every check of a generated world exactly as the
//! service does at the revision they report; started while the service is down, both answer
//! from their snapshot file and say they are stale; the agent refuses an unauthenticated
//! listener off loopback.

use std::{sync::Arc, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry_client::{
    ClientConfig, EntitlementApi, EvalError, Evaluator, EvaluatorConfig, Origin, RetryPolicy,
    TenantApi,
    index::EntitlementIndex,
    pb::{
        entitlement::{
            BatchIsEntitledToRequest, CreateFeatureRequest, CreateGrantRequest, CreatePlanRequest,
            EntitlementDecision, EntitlementQuery, FeaturePermission, GetRevisionRequest,
            Justification, NewGrant, PlanFeatureInput, RevokeGrantRequest, Subject,
            entitlement_query::Target, entitlement_service_server::EntitlementService, new_grant,
        },
        tenant::{CreateAccountRequest, CreateSubAccountRequest, DeleteAccountRequest, NewAccount},
    },
};
use tenantry_entitlement::{
    checks::{CheckService, IndexSource},
    domain::DomainError,
};
use tenantry_tests::{Process, SERVICE_TOKEN, Stack};

use crate::support::eventually;

const DEADLINE: Duration = Duration::from_secs(60);
const FEATURES: [&str; 5] = ["f-alpha", "f-beta", "f-gamma", "f-delta", "f-eps"];

/// The SDK's evaluator behind the entitlement service's own check handlers, so its answers
/// are encoded exactly as the service's and can be compared whole.
#[derive(Debug)]
struct Sdk(Evaluator);

impl IndexSource for Sdk {
    async fn index_at(&self, min_revision: u64) -> Result<Arc<EntitlementIndex>, DomainError> {
        self.0
            .index_at_least(min_revision)
            .await
            .map_err(|e| DomainError::Unavailable(e.to_string()))
    }

    fn present(&self, index: &EntitlementIndex) -> chrono::DateTime<chrono::Utc> {
        index.present(chrono::Utc::now())
    }

    fn revision(&self) -> u64 {
        self.0.revision().unwrap_or_default()
    }
}

fn config() -> ClientConfig {
    ClientConfig::default().with_service_token(SERVICE_TOKEN)
}

/// Every check of the world: each account (the deleted one too) × feature × {account, user},
/// and each feature's permission held by a user, at one fixed time so all answer alike.
fn world_queries(accounts: &[&str]) -> Vec<EntitlementQuery> {
    let at = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 5,
        nanos: 0,
    };
    let mut queries = Vec::new();
    for account in accounts {
        for (i, feature) in FEATURES.iter().enumerate() {
            for user in [None, Some("u1")] {
                queries.push(EntitlementQuery {
                    subject: Some(Subject {
                        tenant_id: (*account).to_owned(),
                        user_id: user.map(str::to_owned),
                        ..Subject::default()
                    }),
                    target: Some(Target::FeatureKey((*feature).to_owned())),
                    at: Some(at),
                    requested_amount: None,
                });
            }
            queries.push(EntitlementQuery {
                subject: Some(Subject {
                    tenant_id: (*account).to_owned(),
                    user_id: Some("u1".to_owned()),
                    permissions: vec![format!("perm.{i}")],
                    attributes: None,
                }),
                target: Some(Target::PermissionKey(format!("perm.{i}"))),
                at: Some(at),
                requested_amount: None,
            });
        }
    }
    queries
}

struct Followers {
    sdk: CheckService<Sdk>,
    evaluator: Evaluator,
    agent_grpc: EntitlementApi,
}

/// Waits until the service's answers satisfy `settled`, then until the SDK and the agent hold
/// the same revision, and asserts all three answer every query alike. Returns the answers.
async fn answers_agree(
    stack: &Stack,
    service: &EntitlementApi,
    followers: &Followers,
    queries: &[EntitlementQuery],
    settled: impl Fn(&[EntitlementDecision]) -> Result<(), String>,
) -> (u64, Vec<EntitlementDecision>) {
    let batch = |min_revision| BatchIsEntitledToRequest {
        queries: queries.to_vec(),
        min_revision,
    };
    eventually(DEADLINE, "service, SDK and agent agree", || async {
        let revision = service
            .checks()
            .get_revision(GetRevisionRequest::default())
            .await
            .map_err(|e| format!("service revision: {e}"))?
            .revision;
        let theirs = service
            .checks()
            .batch_is_entitled_to(batch(revision))
            .await
            .map_err(|e| format!("service: {e}"))?;
        settled(&theirs.decisions)?;
        let sdk = followers
            .sdk
            .batch_is_entitled_to(tonic::Request::new(batch(theirs.revision)))
            .await
            .map_err(|e| format!("sdk: {e}"))?
            .into_inner();
        let agent = followers
            .agent_grpc
            .checks()
            .batch_is_entitled_to(batch(theirs.revision))
            .await
            .map_err(|e| format!("agent: {e}"))?;
        if sdk.revision != theirs.revision || agent.revision != theirs.revision {
            return Err(format!(
                "revisions differ: service {}, sdk {}, agent {}",
                theirs.revision, sdk.revision, agent.revision
            ));
        }
        assert_eq!(
            sdk.decisions, theirs.decisions,
            "the SDK answers as the service at revision {}",
            theirs.revision
        );
        assert_eq!(
            agent.decisions,
            theirs.decisions,
            "the agent answers as the service at revision {}\n{}",
            theirs.revision,
            stack.log_tails()
        );
        Ok((theirs.revision, theirs.decisions))
    })
    .await
}

fn granted(decisions: &[EntitlementDecision]) -> usize {
    decisions.iter().filter(|d| d.result).count()
}

fn knows_accounts(
    live: &'static [&'static str],
    gone: &'static [&'static str],
    accounts: &'static [&'static str],
) -> impl Fn(&[EntitlementDecision]) -> Result<(), String> {
    move |decisions| {
        let per_account = decisions.len() / accounts.len();
        for (i, account) in accounts.iter().enumerate() {
            let unknown = decisions[i * per_account..(i + 1) * per_account]
                .iter()
                .all(|d| d.justification() == Justification::TenantNotFound);
            if live.contains(account) && unknown {
                return Err(format!("{account} not yet in the service's index"));
            }
            if gone.contains(account) && !unknown {
                return Err(format!("{account} still in the service's index"));
            }
        }
        Ok(())
    }
}

async fn agent_ready(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status == StatusCode::OK {
        Ok(body)
    } else {
        Err(format!("{status} {body}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_and_agent_answer_as_the_service_through_writes_deletions_restarts_and_outages() {
    let mut stack = Stack::start().await;
    let service = EntitlementApi::connect(&stack.entitlement_url(), &config()).expect("client");
    let tenants = TenantApi::connect(
        stack
            .gateway
            .env("TENANTRY_TENANT_SERVICE_URL")
            .expect("tenant URL"),
        &config(),
    )
    .expect("client");

    // The catalog: five features with a permission each, three plans, one inheriting.
    for (i, key) in FEATURES.iter().enumerate() {
        service
            .features()
            .create_feature(CreateFeatureRequest {
                key: (*key).to_owned(),
                name: (*key).to_owned(),
                permissions: vec![FeaturePermission {
                    permission_key: format!("perm.{i}"),
                    permission_id: None,
                }],
                ..CreateFeatureRequest::default()
            })
            .await
            .expect("feature");
    }
    let plan = |key: &str, features: &[&str], inherit: bool| CreatePlanRequest {
        key: Some(key.to_owned()),
        name: key.to_owned(),
        features: features
            .iter()
            .map(|f| PlanFeatureInput {
                feature_key: (*f).to_owned(),
                allocation: None,
            })
            .collect(),
        inherit_to_sub_accounts: inherit,
        ..CreatePlanRequest::default()
    };
    for request in [
        plan("basic", &["f-alpha"], false),
        plan("pro", &["f-alpha", "f-beta", "f-gamma"], false),
        plan("group", &["f-delta"], true),
    ] {
        service.plans().create_plan(request).await.expect("plan");
    }
    // Accounts: two roots, a child of each, and one to delete later.
    const ACCOUNTS: &[&str] = &["acme", "globex", "acme-eu", "globex-us", "doomed"];
    for id in ["acme", "globex", "doomed"] {
        tenants
            .accounts()
            .create_account(CreateAccountRequest {
                account: Some(NewAccount {
                    tenant_id: Some(id.to_owned()),
                    name: id.to_owned(),
                    ..NewAccount::default()
                }),
                idempotency_key: None,
            })
            .await
            .expect("account");
    }
    for (child, parent) in [("acme-eu", "acme"), ("globex-us", "globex")] {
        tenants
            .hierarchy()
            .create_sub_account(CreateSubAccountRequest {
                tenant_id: child.to_owned(),
                name: child.to_owned(),
                parent_tenant_id: parent.to_owned(),
                ..CreateSubAccountRequest::default()
            })
            .await
            .expect("sub-account");
    }
    let grant = |plan: &str, tenant: &str, user: Option<&str>| CreateGrantRequest {
        grant: Some(NewGrant {
            plan: Some(new_grant::Plan::PlanKey(plan.to_owned())),
            tenant_id: tenant.to_owned(),
            user_id: user.map(str::to_owned),
            ..NewGrant::default()
        }),
        idempotency_key: None,
    };
    let mut last = 0;
    for request in [
        grant("basic", "acme", None),
        grant("pro", "globex", Some("u1")),
        grant("group", "acme", None),
        grant("pro", "doomed", None),
    ] {
        last = service
            .grants()
            .create_grant(request)
            .await
            .expect("grant")
            .revision;
    }

    // The followers: the SDK in this process (with a snapshot file), the agent as a process.
    let dir = tempfile::tempdir().expect("dir");
    let snapshot = dir.path().join("sdk.snapshot");
    let evaluator_config = EvaluatorConfig {
        snapshot_file: Some(snapshot.clone()),
        persist_every: Duration::from_millis(100),
        ..EvaluatorConfig::default()
    };
    let evaluator = Evaluator::start(&service, evaluator_config.clone());
    let (mut agent, agent_http, agent_grpc) = stack.agent("agent");
    agent.start();
    let followers = Followers {
        sdk: CheckService::new(Arc::new(Sdk(evaluator.clone()))),
        evaluator: evaluator.clone(),
        agent_grpc: EntitlementApi::connect(&agent_grpc, &ClientConfig::default())
            .expect("agent client"),
    };
    tokio::time::timeout(DEADLINE, followers.evaluator.wait_ready())
        .await
        .expect("the SDK holds a snapshot");
    eventually(DEADLINE, "agent ready", || {
        agent_ready(&stack.http, &agent_http)
    })
    .await;

    // Read your writes: the revision a write answered with, handed to a local check.
    let index = evaluator
        .index_at_least(last)
        .await
        .expect("holds the write");
    assert!(index.revision() >= last);

    let queries = world_queries(ACCOUNTS);
    let all_live: &'static [&'static str] = &["acme", "globex", "acme-eu", "globex-us", "doomed"];
    let (_, before) = answers_agree(
        &stack,
        &service,
        &followers,
        &queries,
        knows_accounts(all_live, &[], ACCOUNTS),
    )
    .await;
    assert!(granted(&before) > 0, "the world grants something");

    // Writes: a grant, a revocation, and a deleted account.
    let revoked = service
        .grants()
        .create_grant(grant("pro", "acme-eu", None))
        .await
        .expect("grant");
    let revoke = service
        .grants()
        .revoke_grant(RevokeGrantRequest {
            id: revoked.grant.expect("grant").id,
            reason: None,
        })
        .await
        .expect("revoke");
    let write = service
        .grants()
        .create_grant(grant("basic", "globex-us", Some("u1")))
        .await
        .expect("grant");
    assert!(write.revision > revoke.revision);
    let sso = EntitlementQuery {
        subject: Some(Subject {
            tenant_id: "globex-us".to_owned(),
            user_id: Some("u1".to_owned()),
            ..Subject::default()
        }),
        target: Some(Target::FeatureKey("f-alpha".to_owned())),
        at: None,
        requested_amount: None,
    };
    let local = followers
        .sdk
        .batch_is_entitled_to(tonic::Request::new(BatchIsEntitledToRequest {
            queries: vec![sso],
            min_revision: write.revision,
        }))
        .await
        .expect("read your write")
        .into_inner();
    assert!(
        local.decisions[0].result,
        "the SDK sees its own write at once"
    );
    tenants
        .accounts()
        .delete_account(DeleteAccountRequest {
            tenant_id: "doomed".to_owned(),
            expected_parent_tenant_id: None,
        })
        .await
        .expect("delete");
    let remaining: &'static [&'static str] = &["acme", "globex", "acme-eu", "globex-us"];
    let (_, after_writes) = answers_agree(
        &stack,
        &service,
        &followers,
        &queries,
        knows_accounts(remaining, &["doomed"], ACCOUNTS),
    )
    .await;
    assert_ne!(before, after_writes, "the writes changed answers");

    // The service restarts: both followers reconnect and follow the writes after it.
    stack.entitlement.kill();
    stack.entitlement.start();
    // Keyed, so the SDK retries it until the restarted service answers.
    service
        .grants()
        .with_deadline(DEADLINE)
        .with_retry(RetryPolicy {
            max_attempts: 1_000,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(250),
        })
        .create_grant(CreateGrantRequest {
            idempotency_key: Some("after-restart".to_owned()),
            ..grant("group", "globex", None)
        })
        .await
        .expect("grant after the restart");
    let (revision, settled) = answers_agree(
        &stack,
        &service,
        &followers,
        &queries,
        knows_accounts(remaining, &["doomed"], ACCOUNTS),
    )
    .await;
    assert_ne!(after_writes, settled, "the write after the restart shows");

    // Agent answers carry their staleness; Frontegg's agent path answers from the index.
    let response = stack
        .http
        .post(format!(
            "{agent_http}/v1/data/e10s/features/is_entitled_to_input_feature"
        ))
        .json(
            &json!({"input": {"subjectContext": {"tenantId": "globex-us"},
            "requestContext": {"featureKey": "f-delta"}}}),
        )
        .send()
        .await
        .expect("agent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-tenantry-stale"],
        "false",
        "{:?}",
        response.headers()
    );
    assert!(response.headers().contains_key("x-tenantry-staleness-ms"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["result"]["result"], true,
        "inherited from globex: {body}"
    );

    // The service goes away; followers started now answer from their snapshot files.
    let agent_snapshot_saved = || async {
        let sdk_saved = snapshot.exists();
        let metrics = stack
            .http
            .get(format!("{agent_http}/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if sdk_saved && metrics.contains(&format!("tenantry_agent_index_revision {revision}")) {
            Ok(())
        } else {
            Err(format!("sdk file {sdk_saved}; agent metrics {metrics}"))
        }
    };
    eventually(DEADLINE, "snapshots saved", agent_snapshot_saved).await;
    let status = agent.terminate().await;
    assert!(status.success(), "the agent stops cleanly: {status:?}");
    evaluator.shutdown().await;
    drop(followers);
    stack.entitlement.kill();

    let offline = Evaluator::start(&service, evaluator_config);
    tokio::time::timeout(DEADLINE, offline.wait_ready())
        .await
        .expect("ready from the snapshot file");
    let staleness = offline.staleness();
    assert_eq!(staleness.origin, Origin::Persisted);
    assert!(staleness.is_stale() && !staleness.connected);
    assert_eq!(staleness.revision, Some(revision));
    let sdk = CheckService::new(Arc::new(Sdk(offline.clone())));
    let from_file = sdk
        .batch_is_entitled_to(tonic::Request::new(BatchIsEntitledToRequest {
            queries: queries.clone(),
            min_revision: 0,
        }))
        .await
        .expect("answers from the file")
        .into_inner();
    assert_eq!(
        from_file.decisions, settled,
        "the file holds what was followed"
    );
    assert_eq!(
        offline.index_at_least(revision + 1_000).await.err(),
        Some(EvalError::Behind {
            held: Some(revision),
            wanted: revision + 1_000
        }),
        "a newer revision is not invented"
    );

    agent.start();
    let ready = eventually(DEADLINE, "agent ready from its file", || {
        agent_ready(&stack.http, &agent_http)
    })
    .await;
    assert_eq!(ready["origin"], "persisted", "{ready}");
    assert_eq!(ready["stale"], true, "{ready}");
    assert_eq!(ready["revision"], revision, "{ready}");
    let agent_checks = EntitlementApi::connect(&agent_grpc, &ClientConfig::default())
        .expect("agent client")
        .checks();
    let answers = agent_checks
        .batch_is_entitled_to(BatchIsEntitledToRequest {
            queries,
            min_revision: 0,
        })
        .await
        .expect("the agent answers without the service");
    assert_eq!(answers.decisions, settled);
    let response = stack
        .http
        .post(format!("{agent_http}/entitlements/api/v1/is-entitled-to"))
        .json(&json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "f-alpha"}}))
        .send()
        .await
        .expect("agent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-tenantry-stale"], "true");
    assert_eq!(response.headers()["x-tenantry-index-origin"], "persisted");
    let metrics = stack
        .http
        .get(format!("{agent_http}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("tenantry_agent_stale 1"), "{metrics}");
    assert!(metrics.contains("tenantry_agent_connected 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_an_unauthenticated_listener_off_loopback_unless_told_or_guarded() {
    let stack_less = |name: &'static str, overrides: &[(&str, &str)]| {
        let dir = std::env::temp_dir().join(format!(
            "tenantry-agent-bind-{}-{}",
            name,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let port = tenantry_common::testing::free_port();
        let mut env = std::collections::HashMap::from([
            (
                "TENANTRY_DATA_DIR".to_owned(),
                dir.join("data").display().to_string(),
            ),
            (
                "TENANTRY_ENTITLEMENT_SERVICE_URL".to_owned(),
                "http://127.0.0.1:9".to_owned(),
            ),
            (
                "TENANTRY_AGENT_GRPC_ADDR".to_owned(),
                format!("127.0.0.1:{}", tenantry_common::testing::free_port()),
            ),
            (
                "TENANTRY_AGENT_HTTP_ADDR".to_owned(),
                format!("0.0.0.0:{port}"),
            ),
        ]);
        for (key, value) in overrides {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        let mut process = Process::new(name, tenantry_tests::binary("tenantry"), env, &dir);
        process.set_args(&["agent"]);
        (process, port)
    };

    let (mut refused, _) = stack_less("agent-refused", &[]);
    refused.start();
    let status = refused.wait_exit().await;
    assert!(!status.success(), "a non-loopback bind is refused");
    let logs = refused.logs();
    assert!(
        logs.contains("TENANTRY_AGENT_ALLOW_UNAUTHENTICATED_NON_LOOPBACK"),
        "the refusal names the setting: {logs}"
    );

    let (mut allowed, port) = stack_less(
        "agent-allowed",
        &[("TENANTRY_AGENT_ALLOW_UNAUTHENTICATED_NON_LOOPBACK", "true")],
    );
    allowed.start();
    // reqwest's rustls needs a process-wide crypto provider (see `Stack`).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    eventually(DEADLINE, "allowed agent listens", || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/livez"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        (response.status() == StatusCode::OK)
            .then_some(())
            .ok_or_else(|| response.status().to_string())
    })
    .await;
    // Without the service it is alive but not ready: it has no snapshot to answer from.
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let check = http
        .post(format!(
            "http://127.0.0.1:{port}/entitlements/api/v1/is-entitled-to"
        ))
        .json(&json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "x"}}))
        .send()
        .await
        .expect("check");
    assert_eq!(
        check.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "never a guess"
    );

    // With a token, any address is allowed, and both listeners want the token (probes aside).
    let token = "agent-token-0123456789";
    let grpc_port = tenantry_common::testing::free_port();
    let grpc_addr = format!("0.0.0.0:{grpc_port}");
    let (mut guarded, port) = stack_less(
        "agent-token",
        &[
            ("TENANTRY_AGENT_TOKEN", token),
            ("TENANTRY_AGENT_GRPC_ADDR", &grpc_addr),
        ],
    );
    guarded.start();
    eventually(DEADLINE, "guarded agent listens", || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(())
            .ok_or_else(|| response.status().to_string())
    })
    .await;
    let check = |bearer: Option<&str>| {
        let mut request = http
            .post(format!(
                "http://127.0.0.1:{port}/entitlements/api/v1/is-entitled-to"
            ))
            .json(&json!({"subject": {"tenantId": "acme"}, "feature": {"featureKey": "x"}}));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        async move { request.send().await.expect("check").status() }
    };
    assert_eq!(check(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        check(Some("agent-token-wrong-value")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        check(Some(token)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "past the token, still never a guess"
    );
    let grpc_url = format!("http://127.0.0.1:{grpc_port}");
    let query = || BatchIsEntitledToRequest {
        queries: world_queries(&["acme"]),
        min_revision: 0,
    };
    let once = ClientConfig {
        retry: RetryPolicy::none(),
        ..ClientConfig::default()
    };
    let anonymous = EntitlementApi::connect(&grpc_url, &once).expect("client");
    let refused = anonymous
        .checks()
        .batch_is_entitled_to(query())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let holder =
        EntitlementApi::connect(&grpc_url, &once.with_service_token(token)).expect("client");
    let past = holder
        .checks()
        .batch_is_entitled_to(query())
        .await
        .expect_err("no snapshot");
    assert_eq!(past.code(), tonic::Code::Unavailable, "{past:?}");
}
