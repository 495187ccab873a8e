//! The audit log: every write records one entry in its own transaction, naming the caller,
//! the request and the trace, with the changed fields before and after; replays and refused
//! writes record nothing; entries are queried with filters and paged, and exported in order.

use serde_json::{Value, json};
use tenantry_common::grpc::PRINCIPAL_METADATA_KEY;
use tenantry_proto::audit::v1::{self as pb, audit_service_client::AuditServiceClient};
use tenantry_proto::tenant::v1 as tpb;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

use crate::helpers::{TestApp, assert_code, spawn_app, spawn_sqlite_app, violated_fields};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A request as the gateway sends it: the principal, the request ID and a trace context.
fn from<T>(message: T, principal: Option<&str>, request_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    if let Some(principal) = principal {
        metadata.insert(PRINCIPAL_METADATA_KEY, principal.parse().unwrap());
    }
    metadata.insert("x-request-id", request_id.parse().unwrap());
    metadata.insert(
        "traceparent",
        format!("00-{TRACE_ID}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    request
}

fn audit(app: &TestApp) -> AuditServiceClient<tonic::transport::Channel> {
    AuditServiceClient::new(app.channel.clone())
}

async fn events(app: &TestApp, request: pb::ListAuditEventsRequest) -> Vec<pb::AuditEvent> {
    audit(app)
        .list_audit_events(request)
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn all_events(app: &TestApp) -> Vec<pb::AuditEvent> {
    events(
        app,
        pb::ListAuditEventsRequest {
            limit: Some(500),
            ..pb::ListAuditEventsRequest::default()
        },
    )
    .await
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn new_account(id: &str, name: &str, key: Option<&str>) -> tpb::CreateAccountRequest {
    tpb::CreateAccountRequest {
        account: Some(tpb::NewAccount {
            tenant_id: Some(id.into()),
            name: name.into(),
            ..tpb::NewAccount::default()
        }),
        idempotency_key: key.map(str::to_owned),
    }
}

async fn writes_record_who_what_and_the_change(app: TestApp) {
    let env = Some("environment:client-1");
    let mut tenants = app.tenants();
    tenants
        .create_account(from(new_account("acme", "Acme", Some("k-1")), env, "r-1"))
        .await
        .unwrap();
    // The replay of a keyed create answers from its key and records nothing new.
    tenants
        .create_account(from(new_account("acme", "Acme", Some("k-1")), env, "r-1b"))
        .await
        .unwrap();
    // Refused writes (a taken ID, an invalid name) roll back with their entries.
    assert_code(
        tenants
            .create_account(from(new_account("acme", "Again", None), env, "r-x"))
            .await,
        Code::AlreadyExists,
    );
    assert_code(
        tenants
            .create_account(from(new_account("bad id", "Bad", None), env, "r-y"))
            .await,
        Code::InvalidArgument,
    );
    let [created] = all_events(&app).await.try_into().unwrap();
    assert_eq!(
        (
            created.actor.as_str(),
            created.action.as_str(),
            created.resource_type.as_str(),
            created.resource_id.as_str(),
            created.account_id.as_deref(),
            created.request_id.as_deref(),
            created.trace_id.as_deref(),
        ),
        (
            "environment:client-1",
            "account.create",
            "account",
            "acme",
            Some("acme"),
            Some("r-1"),
            Some(TRACE_ID),
        )
    );
    assert_eq!(json_of(&created.before_json), Value::Null);
    assert_eq!(json_of(&created.after_json)["name"], json!("Acme"));

    // An update names the user who made it and shows only what changed, before and after.
    tenants
        .update_account(from(
            tpb::UpdateAccountRequest {
                tenant_id: "acme".into(),
                name: Some("Acme Corp".into()),
                ..tpb::UpdateAccountRequest::default()
            },
            Some("user:u-7"),
            "r-2",
        ))
        .await
        .unwrap();
    // An update that changes nothing writes nothing, and records nothing.
    tenants
        .update_account(from(
            tpb::UpdateAccountRequest {
                tenant_id: "acme".into(),
                name: Some("Acme Corp".into()),
                ..tpb::UpdateAccountRequest::default()
            },
            Some("user:u-7"),
            "r-3",
        ))
        .await
        .unwrap();
    let newest = all_events(&app).await;
    assert_eq!(newest.len(), 2, "{newest:?}");
    let update = &newest[0];
    assert_eq!(
        (update.actor.as_str(), update.action.as_str()),
        ("user:u-7", "account.update")
    );
    assert_eq!(json_of(&update.before_json), json!({"name": "Acme"}));
    assert_eq!(json_of(&update.after_json), json!({"name": "Acme Corp"}));

    // Memberships, the hierarchy and a delete; a direct caller with the service token is
    // `service`.
    app.create("child", "Child").await;
    let mut memberships = app.memberships();
    memberships
        .add_membership(from(
            tpb::AddMembershipRequest {
                tenant_id: "acme".into(),
                user_id: "u-1".into(),
                idempotency_key: None,
            },
            env,
            "r-4",
        ))
        .await
        .unwrap();
    memberships
        .remove_membership(from(
            tpb::RemoveMembershipRequest {
                tenant_id: "acme".into(),
                user_id: "u-1".into(),
            },
            env,
            "r-5",
        ))
        .await
        .unwrap();
    app.attach("acme", "child").await.unwrap();
    app.delete("child").await;
    let actions: Vec<(String, String, String)> = all_events(&app)
        .await
        .into_iter()
        .rev()
        .map(|e| (e.actor, e.action, e.resource_id))
        .collect();
    let expected = [
        ("environment:client-1", "account.create", "acme"),
        ("user:u-7", "account.update", "acme"),
        ("service", "account.create", "child"),
        ("environment:client-1", "membership.add", "acme/u-1"),
        ("environment:client-1", "membership.remove", "acme/u-1"),
        ("service", "hierarchy.attach", "child"),
        ("service", "account.delete", "child"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
        .collect();
    assert_eq!(actions, expected);
    let attach = events(
        &app,
        pb::ListAuditEventsRequest {
            action: Some("hierarchy.attach".into()),
            ..pb::ListAuditEventsRequest::default()
        },
    )
    .await;
    assert_eq!(
        (
            json_of(&attach[0].before_json),
            json_of(&attach[0].after_json)
        ),
        (
            json!({"parent_tenant_id": null}),
            json!({"parent_tenant_id": "acme"})
        )
    );
}

#[tokio::test]
async fn writes_record_who_what_and_the_change_on_postgres() {
    writes_record_who_what_and_the_change(spawn_app().await).await;
}

#[tokio::test]
async fn writes_record_who_what_and_the_change_on_sqlite() {
    writes_record_who_what_and_the_change(spawn_sqlite_app().await).await;
}

#[tokio::test]
async fn queries_filter_page_and_export() {
    let app = spawn_app().await;
    for i in 0..5 {
        let principal = if i % 2 == 0 { "user:even" } else { "user:odd" };
        app.tenants()
            .create_account(from(
                new_account(&format!("t{i}"), "T", None),
                Some(principal),
                &format!("r{i}"),
            ))
            .await
            .unwrap();
    }
    // Filters: actor, resource.
    let even = events(
        &app,
        pb::ListAuditEventsRequest {
            actor: Some("user:even".into()),
            ..pb::ListAuditEventsRequest::default()
        },
    )
    .await;
    let ids: Vec<_> = even.iter().map(|e| e.resource_id.as_str()).collect();
    assert_eq!(ids, ["t4", "t2", "t0"]);
    let one = events(
        &app,
        pb::ListAuditEventsRequest {
            resource_type: Some("account".into()),
            resource_id: Some("t3".into()),
            ..pb::ListAuditEventsRequest::default()
        },
    )
    .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].request_id.as_deref(), Some("r3"));
    // A time range that ends before the first entry holds nothing.
    let before_all = events(
        &app,
        pb::ListAuditEventsRequest {
            to: one[0].time,
            from: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            resource_id: Some("t3".into()),
            ..pb::ListAuditEventsRequest::default()
        },
    )
    .await;
    assert!(before_all.is_empty());

    // Pages of two, newest first, until no token is returned.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = audit(&app)
            .list_audit_events(pb::ListAuditEventsRequest {
                limit: Some(2),
                page_token: token.clone(),
                ..pb::ListAuditEventsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.events.into_iter().map(|e| e.resource_id));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["t4", "t3", "t2", "t1", "t0"]);

    // Bad input names the field.
    for (request, field) in [
        (
            pb::ListAuditEventsRequest {
                limit: Some(0),
                ..pb::ListAuditEventsRequest::default()
            },
            "limit",
        ),
        (
            pb::ListAuditEventsRequest {
                page_token: Some("not-a-token".into()),
                ..pb::ListAuditEventsRequest::default()
            },
            "page_token",
        ),
    ] {
        let status = assert_code(
            audit(&app).list_audit_events(request).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), [field]);
    }

    // The export streams the range oldest first.
    let mut stream = audit(&app)
        .export_audit_events(pb::ExportAuditEventsRequest {
            from: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..pb::ExportAuditEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut exported = Vec::new();
    while let Some(chunk) = stream.next().await {
        exported.extend(chunk.unwrap().events.into_iter().map(|e| e.resource_id));
    }
    assert_eq!(exported, ["t0", "t1", "t2", "t3", "t4"]);
    let status = assert_code(
        audit(&app)
            .export_audit_events(pb::ExportAuditEventsRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["from"]);
}
