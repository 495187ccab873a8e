//! Idempotency keys on the catalog creates (features, plans, flags, routes) and the rule every
//! keyed write shares with the tenant service: a retry with the key replays the first answer
//! (same id, same revision, nothing created twice, also when the twins run at once), the key
//! with another request is FAILED_PRECONDITION `IDEMPOTENCY_KEY_REUSED`, keys are 1-255
//! visible characters and live in their caller's scope.

use prost::Message;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;
use tenantry_common::{Config, db::DbSettings};
use tenantry_entitlement::migration::Migrator;
use tenantry_proto::entitlement::v1 as pb;
use tonic::Code;

use crate::helpers::*;

const REUSED: &str = "IDEMPOTENCY_KEY_REUSED";

/// `message` sent as `principal` (as the gateway names its callers).
fn from<T>(principal: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        tenantry_common::grpc::PRINCIPAL_METADATA_KEY,
        principal.parse().unwrap(),
    );
    request
}

fn reused(status: &tonic::Status) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(details(status).reason, REUSED, "{status:?}");
}

fn feature_request(key: &str, idempotency_key: &str) -> pb::CreateFeatureRequest {
    pb::CreateFeatureRequest {
        key: key.into(),
        name: key.into(),
        idempotency_key: Some(idempotency_key.into()),
        ..Default::default()
    }
}

fn plan_request(key: &str, feature: &str, idempotency_key: &str) -> pb::CreatePlanRequest {
    pb::CreatePlanRequest {
        key: Some(key.into()),
        name: key.into(),
        features: vec![bare(feature)],
        idempotency_key: Some(idempotency_key.into()),
        ..Default::default()
    }
}

fn flag_request(feature: &str, idempotency_key: &str) -> pb::CreateFeatureFlagRequest {
    pb::CreateFeatureFlagRequest {
        feature: Some(pb::create_feature_flag_request::Feature::FeatureKey(
            feature.into(),
        )),
        name: format!("{feature} flag"),
        on: true,
        off_treatment: pb::Treatment::False as i32,
        default_treatment: pb::Treatment::True as i32,
        idempotency_key: Some(idempotency_key.into()),
        ..Default::default()
    }
}

fn route_request(path: &str, feature: &str, idempotency_key: &str) -> pb::CreateRouteRequest {
    pb::CreateRouteRequest {
        method: "GET".into(),
        path_pattern: path.into(),
        policy: pb::RoutePolicy::Require as i32,
        required_feature_keys: vec![feature.into()],
        idempotency_key: Some(idempotency_key.into()),
        ..Default::default()
    }
}

async fn feature_count(app: &App) -> usize {
    app.features
        .clone()
        .list_features(pb::ListFeaturesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .features
        .len()
}

/// Each catalog create with a key, retried after other writes moved the revision on: the
/// retry answers exactly as the first call did and creates nothing; the key with another
/// request, or on another create, is refused.
async fn catalog_creates_replay_and_refuse_reuse(app: &App) {
    let (mut features, mut plans) = (app.features.clone(), app.plans.clone());
    let (mut flags, mut routes) = (app.flags.clone(), app.routes.clone());

    let first = features
        .create_feature(feature_request("sso", "f-1"))
        .await
        .unwrap()
        .into_inner();
    app.bool_feature("audit").await;
    let again = features
        .create_feature(feature_request("sso", "f-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first, "a retry answers as the first call did");
    assert_eq!(feature_count(app).await, 2, "a retry creates nothing");
    reused(
        &features
            .create_feature(feature_request("other", "f-1"))
            .await
            .unwrap_err(),
    );
    // Without a key, the same create is the conflict it always was.
    let mut unkeyed = feature_request("sso", "f-1");
    unkeyed.idempotency_key = None;
    let conflict = features.create_feature(unkeyed).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");

    let first = plans
        .create_plan(plan_request("pro", "sso", "p-1"))
        .await
        .unwrap()
        .into_inner();
    app.bool_feature("seats").await;
    let again = plans
        .create_plan(plan_request("pro", "sso", "p-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    reused(
        &plans
            .create_plan(plan_request("pro", "audit", "p-1"))
            .await
            .unwrap_err(),
    );
    let listed = plans
        .list_plans(pb::ListPlansRequest::default())
        .await
        .unwrap()
        .into_inner()
        .plans;
    assert_eq!(listed.len(), 1);

    let first = flags
        .create_feature_flag(flag_request("sso", "fl-1"))
        .await
        .unwrap()
        .into_inner();
    app.bool_feature("later").await;
    let again = flags
        .create_feature_flag(flag_request("sso", "fl-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    reused(
        &flags
            .create_feature_flag(flag_request("audit", "fl-1"))
            .await
            .unwrap_err(),
    );

    let first = routes
        .create_route(route_request("/reports/**", "sso", "r-1"))
        .await
        .unwrap()
        .into_inner();
    app.bool_feature("last").await;
    let again = routes
        .create_route(route_request("/reports/**", "sso", "r-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    reused(
        &routes
            .create_route(route_request("/other", "sso", "r-1"))
            .await
            .unwrap_err(),
    );
    let listed = routes
        .list_routes(pb::ListRoutesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(listed.len(), 1);

    // A key belongs to the create it was first sent with.
    reused(
        &plans
            .create_plan(plan_request("team", "sso", "f-1"))
            .await
            .unwrap_err(),
    );
}

#[tokio::test]
async fn catalog_creates_replay_with_a_key_and_refuse_it_for_another_request() {
    catalog_creates_replay_and_refuse_reuse(&spawn_app().await).await;
}

#[tokio::test]
async fn catalog_creates_replay_with_a_key_on_sqlite() {
    catalog_creates_replay_and_refuse_reuse(&spawn_sqlite_app().await).await;
}

/// Twins sent at once with one key: every one answers with the same feature (and plan) and
/// only one is created; none meets the item its twin created as a conflict.
async fn concurrent_twins_create_once(app: &App) {
    for round in 0..3 {
        let (key, idempotency_key) = (format!("sso-{round}"), format!("twin-{round}"));
        let twins = (0..4).map(|_| {
            let mut client = app.features.clone();
            let request = feature_request(&key, &idempotency_key);
            async move { client.create_feature(request).await }
        });
        let answers: Vec<_> = futures::future::join_all(twins)
            .await
            .into_iter()
            .map(|r| r.expect("every twin answers").into_inner())
            .collect();
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");

        let plan_key = format!("pro-{round}");
        let twins = (0..4).map(|_| {
            let mut client = app.plans.clone();
            let request = plan_request(&plan_key, &key, &format!("plan-{idempotency_key}"));
            async move { client.create_plan(request).await }
        });
        let answers: Vec<_> = futures::future::join_all(twins)
            .await
            .into_iter()
            .map(|r| r.expect("every twin answers").into_inner())
            .collect();
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    }
    assert_eq!(feature_count(app).await, 3);
}

#[tokio::test]
async fn concurrent_twins_with_one_key_create_once() {
    concurrent_twins_create_once(&spawn_app().await).await;
}

#[tokio::test]
async fn concurrent_twins_with_one_key_create_once_on_sqlite() {
    concurrent_twins_create_once(&spawn_sqlite_app().await).await;
}

#[tokio::test]
async fn keys_live_in_their_callers_scope() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let batch = |tenant: &str| pb::BatchCreateGrantsRequest {
        grants: vec![pb::NewGrant {
            plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
            tenant_id: tenant.into(),
            user_id: Some(format!("{tenant}-user")),
            ..Default::default()
        }],
        idempotency_key: Some("shared".into()),
    };
    let mut grants = app.grants.clone();
    let a = grants
        .batch_create_grants(from("environment:a", batch("acme")))
        .await
        .unwrap()
        .into_inner();
    // Another caller's same key is its own: neither refused nor answered with a's grants.
    let mut other = batch("acme");
    other.grants[0].user_id = Some("someone-else".into());
    let b = grants
        .batch_create_grants(from("environment:b", other))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(b.grant_ids, a.grant_ids);
    // Each caller's retry replays its own answer.
    let again = grants
        .batch_create_grants(from("environment:a", batch("acme")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, a);

    let mut features = app.features.clone();
    let mine = features
        .create_feature(from("user:1", feature_request("reports", "k")))
        .await
        .unwrap()
        .into_inner();
    let theirs = features
        .create_feature(from("user:2", feature_request("billing", "k")))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(mine.feature, theirs.feature);
}

#[tokio::test]
async fn keys_are_1_to_255_visible_characters_as_in_the_tenant_service() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let (mut grants, mut features) = (app.grants.clone(), app.features.clone());
    let bad_keys = ["", "tab\there", "clé", &"k".repeat(256)];
    for bad in bad_keys {
        let request = pb::BatchCreateGrantsRequest {
            grants: vec![pb::NewGrant {
                plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
                tenant_id: "acme".into(),
                ..Default::default()
            }],
            idempotency_key: Some(bad.to_owned()),
        };
        let err = grants.batch_create_grants(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    for bad in bad_keys {
        let err = features
            .create_feature(feature_request("longest", bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        assert_eq!(
            details(&err).field_violations[0].field,
            "idempotency_key",
            "{err:?}"
        );
    }
    let longest = "k".repeat(255);
    features
        .create_feature(feature_request("longest", &longest))
        .await
        .unwrap();
}

/// A database from before keys had scopes, with a grant key stored then (its answer without a
/// revision, as the oldest records are) and one 256 characters long: after the upgrade the
/// first replays for callers without a principal, the second is gone.
async fn keys_from_before_scopes_survive_the_upgrade(config: Config) {
    let conn = tenantry_common::db::connect(&DbSettings::entitlement(&config))
        .await
        .unwrap();
    Migrator::up(&conn, Some(3)).await.unwrap();
    let batch = pb::BatchCreateGrantsRequest {
        grants: vec![pb::NewGrant {
            plan: Some(pb::new_grant::Plan::PlanKey("pro".into())),
            tenant_id: "acme".into(),
            ..Default::default()
        }],
        idempotency_key: None,
    };
    let print = tenantry_common::idempotency::fingerprint(&batch.encode_to_vec());
    let stored_id = "0190a000-0000-7000-8000-000000000001";
    let backend = conn.get_database_backend();
    let insert = if backend == DbBackend::Postgres {
        "INSERT INTO ent_idempotency (key, operation, fingerprint, response, created_at) \
         VALUES ($1, 'create_grants', $2, $3, $4)"
    } else {
        "INSERT INTO ent_idempotency (key, operation, fingerprint, response, created_at) \
         VALUES (?, 'create_grants', ?, ?, ?)"
    };
    for key in ["old-key".to_owned(), "k".repeat(256)] {
        conn.execute_raw(Statement::from_sql_and_values(
            backend,
            insert,
            [
                key.into(),
                print.clone().into(),
                format!(r#"{{"ids":["{stored_id}"],"count":1}}"#).into(),
                chrono::Utc::now().into(),
            ],
        ))
        .await
        .unwrap();
    }
    Migrator::up(&conn, None).await.unwrap();
    let left = conn
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM ent_idempotency",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(left, 1, "the 256-character key is dropped");
    conn.close().await.unwrap();

    let app = spawn_on(config).await;
    let mut keyed = batch.clone();
    keyed.idempotency_key = Some("old-key".into());
    let replayed = app
        .grants
        .clone()
        .batch_create_grants(keyed.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.grant_ids, vec![stored_id.to_owned()]);
    // A gateway caller's equal key is its own (here: a new write, refused on its merits).
    let err = app
        .grants
        .clone()
        .batch_create_grants(from("environment:a", keyed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test]
async fn keys_from_before_scopes_survive_the_upgrade_on_postgres() {
    keys_from_before_scopes_survive_the_upgrade(pg_config().await).await;
}

#[tokio::test]
async fn keys_from_before_scopes_survive_the_upgrade_on_sqlite() {
    let (config, _dir) = sqlite_config();
    keys_from_before_scopes_survive_the_upgrade(config).await;
}
