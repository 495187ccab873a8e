//! The entitlement stream (`IndexStreamService.WatchIndex`) against the real services: a
//! subscriber that applies it to a `tenantry-index` index answers every check of a generated
//! world exactly as the service, at the revisions it reports, through writes, an account's
//! deletion and a service restart; resumes lose nothing; a revision the service no longer holds
//! resets; a scoped subscription holds only its accounts and their ancestors; a subscriber that
//! stops reading holds up no write; the service token is required.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use tenantry_common::Secret;
use tenantry_index::{
    CheckRequest, EntitlementIndex, Follower, IndexChange, ResetReason, StreamEvent, Subject,
    Target,
};
use tenantry_proto::entitlement::v1::{
    BatchIsEntitledToRequest, EntitlementQuery, GetRevisionRequest, Subject as PbSubject,
    WatchIndexRequest, WatchIndexResponse, entitlement_query,
    entitlement_service_client::EntitlementServiceClient,
    index_stream_service_client::IndexStreamServiceClient,
};
use tenantry_proto::index_stream::timestamp;
use tenantry_tests::{SERVICE_TOKEN, Stack};
use tonic::{Code, Status, Streaming};

use crate::support::{
    create_account, create_feature, create_plan, eventually, expect, grant_batch,
};

const DEADLINE: Duration = Duration::from_secs(45);
const FEATURES: usize = 6;
const ACCOUNTS: usize = 10;

fn entitlement_url(stack: &Stack) -> String {
    stack
        .gateway
        .env("TENANTRY_ENTITLEMENT_SERVICE_URL")
        .expect("entitlement URL")
        .to_owned()
}

fn channel(url: &str, token: Option<&str>) -> tenantry_common::grpc::ClientChannel {
    let secret = token.map(Secret::new);
    tenantry_common::grpc::connect(url, None, secret.as_ref(), Duration::from_secs(30))
        .expect("channel")
}

async fn watch(
    url: &str,
    token: Option<&str>,
    resume_revision: Option<u64>,
    account_ids: Vec<String>,
) -> Result<Streaming<WatchIndexResponse>, Status> {
    let mut client = IndexStreamServiceClient::new(channel(url, token));
    client
        .watch_index(WatchIndexRequest {
            resume_revision,
            account_ids,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// One subscription and the index it keeps.
struct Subscriber {
    stream: Streaming<WatchIndexResponse>,
    follower: Follower,
    /// Every event but chunks, in order (chunks are counted).
    seen: Vec<StreamEvent>,
    chunks: usize,
}

impl Subscriber {
    async fn start(url: &str, resume: Option<u64>, scope: Vec<String>) -> Self {
        let stream = watch(url, Some(SERVICE_TOKEN), resume, scope)
            .await
            .expect("watch");
        Self {
            stream,
            follower: Follower::new(),
            seen: Vec::new(),
            chunks: 0,
        }
    }

    /// The next event, applied; `Err` when the stream ends or fails.
    async fn next(&mut self) -> Result<StreamEvent, Status> {
        let message = tokio::time::timeout(DEADLINE, self.stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no event within the deadline"))??
            .ok_or_else(|| Status::unavailable("stream ended"))?;
        let event = StreamEvent::try_from(message).expect("event decodes");
        self.follower
            .apply(event.clone())
            .unwrap_or_else(|e| panic!("stream broke its order: {e}"));
        if matches!(event, StreamEvent::SnapshotChunk(_)) {
            self.chunks += 1;
        } else {
            self.seen.push(event.clone());
        }
        Ok(event)
    }

    /// Applies events until the index holds at least `revision`.
    async fn follow_to(&mut self, revision: u64) {
        while self.follower.revision().is_none_or(|r| r < revision) {
            self.next().await.expect("stream event");
        }
    }

    fn index(&self) -> std::sync::Arc<EntitlementIndex> {
        self.follower.current().expect("a snapshot")
    }
}

/// A delta's revision and changes.
fn delta(event: &StreamEvent) -> Option<(u64, &Vec<IndexChange>)> {
    if let StreamEvent::Delta {
        revision, changes, ..
    } = event
    {
        Some((*revision, changes))
    } else {
        None
    }
}

fn account(i: usize) -> String {
    format!("acct-{i}")
}

fn feature(i: usize) -> String {
    format!("feat-{i}")
}

/// Six features (two behind a permission), four plans (two reach sub-accounts), ten accounts
/// in two trees and some roots, and pseudo-random grants.
async fn world(stack: &Stack, env: &str) {
    for f in 0..FEATURES {
        let permission = format!("perm.{f}");
        let permissions: &[&str] = if f % 3 == 0 { &[&permission] } else { &[] };
        create_feature(stack, env, &feature(f), "bool", permissions).await;
    }
    for (p, features, inherit) in [
        (0, vec![0, 1], true),
        (1, vec![2], false),
        (2, vec![3, 4], true),
        (3, vec![5, 0], false),
    ] {
        let keys: Vec<String> = features.into_iter().map(feature).collect();
        create_plan(
            stack,
            env,
            json!({"name": format!("plan {p}"), "key": format!("plan-{p}"), "featureKeys": keys, "inheritToSubAccounts": inherit}),
        )
        .await;
    }
    for a in 0..ACCOUNTS {
        create_account(stack, env, &account(a), &account(a)).await;
    }
    // acct-0 ← acct-1..3, acct-1 ← acct-4..6; acct-7..9 are roots.
    for (parent, child) in [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6)] {
        attach(stack, env, parent, child).await;
    }
    let mut seed = 7u64;
    let mut grants = Vec::new();
    for a in 0..ACCOUNTS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let plan = (seed >> 33) % 4;
        if !(seed >> 40).is_multiple_of(3) {
            grants.push(json!({"planKey": format!("plan-{plan}"), "tenantId": account(a)}));
        }
    }
    grant_batch(stack, env, grants).await;
}

async fn attach(stack: &Stack, env: &str, parent: usize, child: usize) {
    expect(
        stack,
        StatusCode::CREATED,
        Method::POST,
        "/tenants/resources/hierarchy/v1",
        Some(env),
        Some(json!({"parentTenantId": account(parent), "childTenantId": account(child)})),
    )
    .await;
}

/// Every (account, feature) check and every (account, permission) check, in one order.
fn queries(accounts: &[String], at: DateTime<Utc>) -> Vec<EntitlementQuery> {
    let mut out = Vec::new();
    for a in accounts {
        for f in 0..FEATURES {
            for target in [
                entitlement_query::Target::FeatureKey(feature(f)),
                entitlement_query::Target::PermissionKey(format!("perm.{f}")),
            ] {
                out.push(EntitlementQuery {
                    subject: Some(PbSubject {
                        tenant_id: a.clone(),
                        user_id: None,
                        permissions: (0..FEATURES).map(|p| format!("perm.{p}")).collect(),
                        attributes: None,
                    }),
                    target: Some(target),
                    at: Some(timestamp(at)),
                    requested_amount: None,
                });
            }
        }
    }
    out
}

fn local_answers(
    index: &EntitlementIndex,
    queries: &[EntitlementQuery],
    at: DateTime<Utc>,
) -> Vec<bool> {
    queries
        .iter()
        .map(|q| {
            let subject = q.subject.as_ref().expect("subject");
            let target = match q.target.as_ref().expect("target") {
                entitlement_query::Target::FeatureKey(k) => Target::Feature(k),
                entitlement_query::Target::PermissionKey(p) => Target::Permission(p),
                entitlement_query::Target::Route(r) => Target::Route {
                    method: &r.method,
                    path: &r.path,
                },
            };
            let request = CheckRequest {
                subject: Subject {
                    tenant_id: &subject.tenant_id,
                    user_id: None,
                    permissions: &subject.permissions,
                    attributes: None,
                },
                target,
                requested: None,
            };
            index.check(&request, at).result
        })
        .collect()
}

/// Asks the service every check, follows the stream to the revision it answered at and
/// asserts the subscriber's index answers the same (retrying when the service moved on
/// between the two). Returns the revision compared and how many checks said yes.
async fn assert_same_answers(url: &str, sub: &mut Subscriber, accounts: &[String]) -> (u64, usize) {
    let at = Utc::now() + chrono::TimeDelta::minutes(1);
    let queries = queries(accounts, at);
    let mut client = EntitlementServiceClient::new(channel(url, Some(SERVICE_TOKEN)));
    let started = Instant::now();
    loop {
        let answer = client
            .batch_is_entitled_to(BatchIsEntitledToRequest {
                queries: queries.clone(),
                min_revision: 0,
            })
            .await
            .expect("batch check")
            .into_inner();
        sub.follow_to(answer.revision).await;
        if sub.follower.revision() == Some(answer.revision) {
            let service: Vec<bool> = answer.decisions.iter().map(|d| d.result).collect();
            let local = local_answers(&sub.index(), &queries, at);
            assert_eq!(local, service, "answers at revision {}", answer.revision);
            return (answer.revision, service.iter().filter(|r| **r).count());
        }
        assert!(
            started.elapsed() < DEADLINE,
            "never caught the service at rest"
        );
    }
}

async fn service_revision(url: &str) -> u64 {
    let mut client = EntitlementServiceClient::new(channel(url, Some(SERVICE_TOKEN)));
    client
        .get_revision(GetRevisionRequest {})
        .await
        .expect("revision")
        .into_inner()
        .revision
}

fn all_accounts() -> Vec<String> {
    (0..ACCOUNTS).map(account).collect()
}

async fn entitled_becomes(stack: &Stack, env: &str, tenant: &str, key: &str, result: bool) {
    eventually(DEADLINE, &format!("{tenant} {key} = {result}"), || async {
        let answer = crate::support::check_feature(stack, env, tenant, key, json!({})).await;
        if answer["result"] == result {
            Ok(())
        } else {
            Err(answer.to_string())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_answers_as_the_service_through_writes_deletions_and_a_restart() {
    let mut stack = Stack::start().await;
    let env = stack.env_token().await;
    let url = entitlement_url(&stack);
    world(&stack, &env).await;
    let accounts = all_accounts();

    let mut sub = Subscriber::start(&url, None, Vec::new()).await;
    let (first, yes) = assert_same_answers(&url, &mut sub, &accounts).await;
    assert!(yes > 0, "the world entitles something");
    assert!(
        matches!(sub.seen.first(), Some(StreamEvent::SnapshotBegin { .. })),
        "{:?}",
        sub.seen.first()
    );

    // Writes: more grants, a hierarchy move, a deleted grant.
    let ids = grant_batch(
        &stack,
        &env,
        vec![
            json!({"planKey": "plan-2", "tenantId": account(7)}),
            json!({"planKey": "plan-0", "tenantId": account(8)}),
        ],
    )
    .await;
    attach(&stack, &env, 7, 9).await;
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        &format!("/entitlements/resources/entitlements/v2/{}", ids[1]),
        Some(&env),
        None,
    )
    .await;
    entitled_becomes(&stack, &env, &account(9), &feature(3), true).await;
    let (second, _) = assert_same_answers(&url, &mut sub, &accounts).await;
    assert!(second > first);

    // A deleted account: its grants vanish here as on the service.
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        &format!("/tenants/resources/tenants/v1/{}", account(7)),
        Some(&env),
        None,
    )
    .await;
    entitled_becomes(&stack, &env, &account(7), &feature(3), false).await;
    let (third, _) = assert_same_answers(&url, &mut sub, &accounts).await;
    assert!(third > second);
    // Every revision since the snapshot came once, in order, as a delta (the follower refuses
    // a hole, so reaching `third` means none was skipped).
    let deltas: Vec<u64> = sub
        .seen
        .iter()
        .filter_map(delta)
        .map(|(revision, _)| revision)
        .collect();
    let begun = match sub.seen.first() {
        Some(StreamEvent::SnapshotBegin { revision, .. }) => *revision,
        other => panic!("{other:?}"),
    };
    assert_eq!(deltas, ((begun + 1)..=third).collect::<Vec<_>>());

    // A restart: the stream ends; resuming from the revision held continues without a reset
    // (the change log covers what memory lost) and nothing is missed.
    let held = sub.follower.revision().expect("held");
    let status = stack.entitlement.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    while sub.next().await.is_ok() {}
    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;
    grant_batch(
        &stack,
        &env,
        vec![json!({"planKey": "plan-1", "tenantId": account(4)})],
    )
    .await;
    let mut resumed = Subscriber::start(&url, Some(held), Vec::new()).await;
    resumed.follower = std::mem::take(&mut sub.follower);
    let (fourth, _) = assert_same_answers(&url, &mut resumed, &accounts).await;
    assert!(fourth > held);
    assert!(
        resumed
            .seen
            .iter()
            .all(|e| matches!(e, StreamEvent::Delta { .. } | StreamEvent::Heartbeat { .. })),
        "a resume within the log is deltas only: {:?}",
        resumed.seen
    );
    assert!(
        matches!(resumed.seen.first(), Some(StreamEvent::Delta { revision, .. }) if *revision == held + 1),
        "{:?}",
        resumed.seen.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_lose_nothing_and_revisions_not_held_reset() {
    let mut stack = Stack::start().await;
    let env = stack.env_token().await;
    let url = entitlement_url(&stack);
    world(&stack, &env).await;
    let accounts = all_accounts();

    let mut sub = Subscriber::start(&url, None, Vec::new()).await;
    let (before, _) = assert_same_answers(&url, &mut sub, &accounts).await;
    drop(sub.stream);

    // Written while nobody listens.
    grant_batch(
        &stack,
        &env,
        vec![
            json!({"planKey": "plan-1", "tenantId": account(9)}),
            json!({"planKey": "plan-3", "tenantId": account(2)}),
        ],
    )
    .await;
    let mut resumed = Subscriber::start(&url, Some(before), Vec::new()).await;
    resumed.follower = sub.follower;
    let (after, _) = assert_same_answers(&url, &mut resumed, &accounts).await;
    assert!(after > before);
    assert!(
        matches!(resumed.seen.first(), Some(StreamEvent::Delta { revision, .. }) if *revision == before + 1),
        "{:?}",
        resumed.seen.first()
    );

    // A revision beyond the service's: reset, then a snapshot.
    let head = service_revision(&url).await;
    let mut ahead = Subscriber::start(&url, Some(head + 100), Vec::new()).await;
    let first = ahead.next().await.expect("event");
    assert!(
        matches!(
            first,
            StreamEvent::Reset {
                reason: ResetReason::RevisionUnknown,
                ..
            }
        ),
        "{first:?}"
    );
    ahead.follow_to(head).await;

    // A revision older than the service holds: after a restart memory is empty, and the change
    // log was pruned (as retention would) past it.
    let status = stack.entitlement.terminate().await;
    assert!(status.success(), "{status}");
    let admin = Database::connect(stack.admin_db_url.clone())
        .await
        .expect("admin");
    admin
        .execute_unprepared(&format!(
            "DELETE FROM entitlement.ent_change_log WHERE revision <= {}",
            before + 1
        ))
        .await
        .expect("prune the change log");
    admin.close().await.expect("close");
    stack.entitlement.start();
    stack.wait_ready(DEADLINE).await;
    let mut old = Subscriber::start(&url, Some(before), Vec::new()).await;
    let first = old.next().await.expect("event");
    assert!(
        matches!(
            first,
            StreamEvent::Reset {
                reason: ResetReason::RevisionTooOld,
                ..
            }
        ),
        "{first:?}"
    );
    assert_same_answers(&url, &mut old, &accounts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_subscription_holds_its_accounts_with_their_ancestors_only() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    let url = entitlement_url(&stack);
    world(&stack, &env).await;
    // acct-4 inherits plan-0 from acct-1 (its parent).
    grant_batch(
        &stack,
        &env,
        vec![json!({"planKey": "plan-0", "tenantId": account(1)})],
    )
    .await;
    // The feed is ordered: once acct-6 inherits, every hierarchy change of the world is applied.
    entitled_becomes(&stack, &env, &account(6), &feature(0), true).await;
    let scope = vec![account(4)];
    let mut sub = Subscriber::start(&url, None, scope.clone()).await;
    let (_, yes) = assert_same_answers(&url, &mut sub, &scope).await;
    assert!(yes > 0, "acct-4 holds inherited grants");
    let index = sub.index();
    assert_eq!(index.tenant_count(), 3, "acct-4, acct-1, acct-0 only");
    assert_eq!(index.ancestors(&account(4)), vec![account(1), account(0)]);

    // A write elsewhere arrives as an empty delta; one in scope arrives with its change.
    let before = sub.follower.revision().expect("revision");
    grant_batch(
        &stack,
        &env,
        vec![json!({"planKey": "plan-1", "tenantId": account(8)})],
    )
    .await;
    grant_batch(
        &stack,
        &env,
        vec![json!({"planKey": "plan-1", "tenantId": account(4)})],
    )
    .await;
    let head = service_revision(&url).await;
    sub.follow_to(head).await;
    let changes: Vec<&IndexChange> = sub
        .seen
        .iter()
        .filter_map(delta)
        .filter(|(revision, _)| *revision > before)
        .flat_map(|(_, changes)| changes)
        .collect();
    assert!(
        matches!(changes.as_slice(), [IndexChange::UpsertGrant(g)] if g.tenant_id == account(4)),
        "{changes:?}"
    );
    assert_same_answers(&url, &mut sub, &scope).await;

    // Detaching the account from its parent changes the scope: a reset and a new snapshot.
    expect(
        &stack,
        StatusCode::OK,
        Method::DELETE,
        "/tenants/resources/hierarchy/v1",
        Some(&env),
        Some(json!({"parentTenantId": account(1), "childTenantId": account(4)})),
    )
    .await;
    let started = Instant::now();
    loop {
        if let StreamEvent::Reset { reason, .. } = sub.next().await.expect("event") {
            assert_eq!(reason, ResetReason::ScopeChanged);
            break;
        }
        assert!(started.elapsed() < DEADLINE, "no reset: {:?}", sub.seen);
    }
    assert_same_answers(&url, &mut sub, &scope).await;
    assert!(sub.index().ancestors(&account(4)).is_empty());
    assert_eq!(sub.index().tenant_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_holds_up_no_write_and_no_other_subscriber() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    let url = entitlement_url(&stack);
    world(&stack, &env).await;
    // Never read: its buffers fill and its task waits, alone.
    let _stalled = watch(&url, Some(SERVICE_TOKEN), None, Vec::new())
        .await
        .expect("watch");
    let mut reader = Subscriber::start(&url, None, Vec::new()).await;
    reader.follow_to(service_revision(&url).await).await;
    let started = Instant::now();
    for round in 0..80 {
        let grants: Vec<_> = (0..20)
            .map(|i| json!({"planKey": format!("plan-{}", (round + i) % 4), "tenantId": account(i % ACCOUNTS)}))
            .collect();
        grant_batch(&stack, &env, grants).await;
    }
    let written = started.elapsed();
    assert!(
        written < Duration::from_secs(40),
        "80 writes took {written:?}"
    );
    let (revision, _) = assert_same_answers(&url, &mut reader, &all_accounts()).await;
    assert!(revision >= 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_the_service_token_and_a_bounded_scope() {
    let stack = Stack::start().await;
    let url = entitlement_url(&stack);
    for token in [None, Some("not-the-token")] {
        let err = watch(&url, token, None, Vec::new())
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    let too_many: Vec<String> = (0..1001).map(|i| format!("a-{i}")).collect();
    let err = watch(&url, Some(SERVICE_TOKEN), None, too_many)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = watch(&url, Some(SERVICE_TOKEN), None, vec!["has space".into()])
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

/// An SSE response read frame by frame: `(event, id, data)`.
struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseReader {
    async fn open(stack: &Stack, token: &str, last_event_id: Option<u64>) -> Self {
        let mut request = stack
            .http
            .get(format!("{}/entitlements/api/v1/stream", stack.base_url))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("open the stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    async fn next(&mut self) -> (String, Option<u64>, serde_json::Value) {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame =
                    String::from_utf8(self.buffer.drain(..end + 2).collect()).expect("utf-8 frame");
                let (mut event, mut id, mut data) = (String::new(), None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<u64>().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() {
                    continue;
                }
                return (event, id, serde_json::from_str(&data).expect("JSON data"));
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("an event within the deadline")
                .expect("read the stream")
                .expect("the stream goes on");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Events until one named `name`; returns it.
    async fn until(&mut self, name: &str) -> (Option<u64>, serde_json::Value) {
        loop {
            let (event, id, data) = self.next().await;
            if event == name {
                return (id, data);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sse_mirror_streams_resumes_with_last_event_id_and_needs_an_environment_token() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    world(&stack, &env).await;
    let path = "/entitlements/api/v1/stream";
    let user = stack.user_token(&account(1), "u-1", &[]);
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("garbage"), StatusCode::UNAUTHORIZED),
        (Some(user.as_str()), StatusCode::FORBIDDEN),
    ] {
        let (got, body) = stack.call(Method::GET, path, token, None).await;
        assert_eq!(got, status, "{body}");
    }
    let (got, _, body) = stack
        .call_with(
            Method::GET,
            path,
            Some(&env),
            &[("last-event-id", "abc")],
            None,
        )
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{body}");

    let mut sse = SseReader::open(&stack, &env, None).await;
    let (begin_id, begin) = sse.until("snapshot-begin").await;
    assert_eq!(begin_id, None, "no id inside a snapshot: {begin}");
    let (id, end) = sse.until("snapshot-end").await;
    let held = id.expect("snapshot-end carries the revision");
    assert_eq!(end["revision"], held);

    grant_batch(
        &stack,
        &env,
        vec![json!({"planKey": "plan-1", "tenantId": account(9)})],
    )
    .await;
    let mut last = held;
    loop {
        let (id, delta) = sse.until("delta").await;
        let id = id.expect("a delta carries its revision");
        assert_eq!(id, last + 1, "revisions in order, none skipped: {delta}");
        last = id;
        if delta["changes"].to_string().contains(&account(9)) {
            assert_eq!(delta["changes"][0]["op"], "upsert_grant", "{delta}");
            break;
        }
    }
    drop(sse);

    // Written while disconnected; Last-Event-ID continues right after the last delta.
    grant_batch(
        &stack,
        &env,
        vec![json!({"planKey": "plan-3", "tenantId": account(8)})],
    )
    .await;
    let mut resumed = SseReader::open(&stack, &env, Some(last)).await;
    let (event, id, mut data) = resumed.next().await;
    assert_eq!((event.as_str(), id), ("delta", Some(last + 1)), "{data}");
    while !data["changes"].to_string().contains(&account(8)) {
        data = resumed.until("delta").await.1;
    }
}
