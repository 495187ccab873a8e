//! The audit log of the entitlement service: one entry per changed item, in the write's
//! transaction, naming the caller, the request and the trace; replays and refused writes
//! record nothing.

use serde_json::{Value, json};
use tenantry_common::grpc::PRINCIPAL_METADATA_KEY;
use tenantry_proto::audit::v1::{self as apb, audit_service_client::AuditServiceClient};
use tenantry_proto::entitlement::v1 as pb;
use tonic::{Code, Request};

use crate::helpers::{App, spawn_app, spawn_sqlite_app};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn from<T>(message: T, principal: &str, request_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(PRINCIPAL_METADATA_KEY, principal.parse().unwrap());
    metadata.insert("x-request-id", request_id.parse().unwrap());
    metadata.insert(
        "traceparent",
        format!("00-{TRACE_ID}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    request
}

/// Every entry, oldest first.
async fn entries(app: &App) -> Vec<apb::AuditEvent> {
    let mut events = AuditServiceClient::new(app.channel.clone())
        .list_audit_events(apb::ListAuditEventsRequest {
            limit: Some(500),
            ..apb::ListAuditEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    events.reverse();
    events
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

async fn every_write_records_one_entry_per_item(app: App) {
    let env = "environment:c-1";
    app.account("acme", None).await;
    let create = |key: Option<&str>| pb::CreateFeatureRequest {
        key: "sso".into(),
        name: "SSO".into(),
        allocation_type: pb::AllocationType::Bool as i32,
        idempotency_key: key.map(str::to_owned),
        ..Default::default()
    };
    let feature = app
        .features
        .clone()
        .create_feature(from(create(Some("k-1")), env, "r-1"))
        .await
        .unwrap()
        .into_inner()
        .feature
        .unwrap();
    // A replay answers from the key; a duplicate key is refused in its transaction.
    app.features
        .clone()
        .create_feature(from(create(Some("k-1")), env, "r-1b"))
        .await
        .unwrap();
    let refused = app
        .features
        .clone()
        .create_feature(from(create(None), env, "r-x"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    app.features
        .clone()
        .update_feature(from(
            pb::UpdateFeatureRequest {
                id: feature.id.clone(),
                name: Some("Single sign-on".into()),
                ..Default::default()
            },
            "user:u-9",
            "r-2",
        ))
        .await
        .unwrap();
    let plan = app
        .plan("pro", vec![crate::helpers::bare("sso")], false)
        .await;
    let grant = app
        .grants
        .clone()
        .create_grant(from(
            pb::CreateGrantRequest {
                grant: Some(pb::NewGrant {
                    plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
                    tenant_id: "acme".into(),
                    ..Default::default()
                }),
                idempotency_key: None,
            },
            env,
            "r-3",
        ))
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    // A grant for an account that does not exist is refused and rolled back.
    let refused = app
        .grants
        .clone()
        .create_grant(from(
            pb::CreateGrantRequest {
                grant: Some(pb::NewGrant {
                    plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
                    tenant_id: "nobody".into(),
                    ..Default::default()
                }),
                idempotency_key: None,
            },
            env,
            "r-y",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    app.grants
        .clone()
        .revoke_grant(from(
            pb::RevokeGrantRequest {
                id: grant.id.clone(),
                reason: Some("churned".into()),
            },
            env,
            "r-4",
        ))
        .await
        .unwrap();
    app.grants
        .clone()
        .delete_grant(from(
            pb::DeleteGrantRequest {
                id: grant.id.clone(),
            },
            env,
            "r-5",
        ))
        .await
        .unwrap();

    let events = entries(&app).await;
    let seen: Vec<(&str, &str, &str, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.action.as_str(),
                e.resource_id.as_str(),
                e.request_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (env, "feature.create", feature.id.as_str(), Some("r-1")),
            (
                "user:u-9",
                "feature.update",
                feature.id.as_str(),
                Some("r-2")
            ),
            ("service", "plan.create", plan.id.as_str(), None),
            (env, "grant.create", grant.id.as_str(), Some("r-3")),
            (env, "grant.revoke", grant.id.as_str(), Some("r-4")),
            (env, "grant.delete", grant.id.as_str(), Some("r-5")),
        ]
    );
    assert!(events[0].trace_id.as_deref() == Some(TRACE_ID));
    assert_eq!(json_of(&events[1].before_json), json!({"name": "SSO"}));
    assert_eq!(
        json_of(&events[1].after_json),
        json!({"name": "Single sign-on"})
    );
    assert_eq!(events[3].account_id.as_deref(), Some("acme"));
    assert_eq!(json_of(&events[4].before_json)["revokedAt"], Value::Null);
    assert_eq!(
        json_of(&events[4].after_json)["revokeReason"],
        json!("churned")
    );
    assert_eq!(json_of(&events[5].after_json), Value::Null);
}

#[tokio::test]
async fn every_write_records_one_entry_per_item_on_postgres() {
    every_write_records_one_entry_per_item(spawn_app().await).await;
}

#[tokio::test]
async fn every_write_records_one_entry_per_item_on_sqlite() {
    every_write_records_one_entry_per_item(spawn_sqlite_app().await).await;
}

/// Entries older than `audit_retention_days` (by the service's clock) are pruned; newer ones
/// stay.
#[tokio::test]
async fn retention_prunes_entries_past_their_days() {
    let app = spawn_app().await;
    app.bool_feature("old").await;
    app.clock.advance(chrono::Duration::days(366));
    app.bool_feature("new").await;
    app.eventually("the old entry is pruned", || async {
        entries(&app).await.len() == 1
    })
    .await;
    let [kept] = entries(&app).await.try_into().unwrap();
    assert_eq!(json_of(&kept.after_json)["key"], json!("new"));
}
