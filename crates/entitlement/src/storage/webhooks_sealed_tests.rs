//! Webhook secrets sealed at rest, on a real SQLite store: the row never holds the secret
//! once a key is set, deliveries are handed the secret itself, old rows are sealed at start,
//! keys rotate, and a secret no configured key opens stops the start.

use chrono::Duration;
use sea_orm::EntityTrait;
use uuid::Uuid;

use super::*;
use crate::app::testing::{engine, t0};
use crate::domain::sealed::SecretKeys;
use crate::domain::webhook::types;

const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
const SECRET_A: &str = "whsec_c2VjcmV0LWEtMDEyMzQ1Njc4OWFiY2RlZg==";
const SECRET_B: &str = "whsec_c2VjcmV0LWItMDEyMzQ1Njc4OWFiY2RlZg==";

fn keys(entries: &[&str]) -> Option<SecretKeys> {
    Some(SecretKeys::parse(entries).unwrap())
}

async fn add_endpoint(store: &Store, secret: &str) -> Uuid {
    let endpoint = Endpoint {
        id: Uuid::now_v7(),
        url: "http://127.0.0.1:9/hook".into(),
        event_types: vec![],
        account_ids: vec![],
        enabled: true,
        description: String::new(),
        disabled_reason: None,
        failing_since: None,
        created_at: t0(),
        updated_at: t0(),
    };
    let txn = store.begin().await.unwrap();
    store
        .insert_endpoint(&txn, &endpoint, secret)
        .await
        .unwrap();
    store.commit_plain(txn).await.unwrap();
    endpoint.id
}

/// Each endpoint's stored secret column.
async fn stored(store: &Store) -> Vec<(Uuid, String)> {
    let mut rows: Vec<(Uuid, String)> = webhook_endpoint::Entity::find()
        .all(store.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.secret))
        .collect();
    rows.sort();
    rows
}

/// One event delivered to every endpoint, claimed at `at`: the secret each delivery signs with.
async fn signing_secrets(store: &Store, at: chrono::DateTime<Utc>) -> Vec<(Uuid, String)> {
    let event = Event {
        id: format!("evt_{}", Uuid::now_v7().simple()),
        event_type: types::FEATURE_CHANGED,
        subject: None,
        body: "{}".into(),
    };
    let txn = store.begin().await.unwrap();
    store.enqueue_events(&txn, &[event], at).await.unwrap();
    store.commit_plain(txn).await.unwrap();
    store.fan_out(10, at).await.unwrap();
    let mut secrets: Vec<(Uuid, String)> = store
        .claim_due(at, at + Duration::minutes(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.endpoint_id, d.secret))
        .collect();
    // Earlier events' deliveries, due again, are claimed too.
    secrets.sort();
    secrets.dedup();
    secrets
}

#[tokio::test]
async fn sealed_secrets_never_sit_in_the_row_and_still_sign_deliveries() {
    let e = engine().await;
    let plain = e.engine.store().clone();
    // Stored before any key was configured: plaintext, as today.
    let a = add_endpoint(&plain, SECRET_A).await;
    assert_eq!(stored(&plain).await, [(a, SECRET_A.to_owned())]);

    // A key configured: the next start seals the old row, new rows are sealed when written.
    let sealed = plain.clone().with_secret_keys(keys(&[K1]));
    assert_eq!(sealed.reseal_webhook_secrets().await.unwrap(), 1);
    let b = add_endpoint(&sealed, SECRET_B).await;
    let mut expected = vec![(a, SECRET_A.to_owned()), (b, SECRET_B.to_owned())];
    expected.sort();
    for (_, row) in stored(&sealed).await {
        assert!(row.starts_with("sealed:v1:k1:"), "{row}");
        assert!(!row.contains("c2VjcmV0"), "{row}");
    }
    assert_eq!(signing_secrets(&sealed, t0()).await, expected);
    // Already current: nothing to do.
    assert_eq!(sealed.reseal_webhook_secrets().await.unwrap(), 0);

    // Rotation: k2 seals, k1 still opens until every row is resealed at start.
    let rotated = plain.clone().with_secret_keys(keys(&[K2, K1]));
    assert_eq!(rotated.reseal_webhook_secrets().await.unwrap(), 2);
    for (_, row) in stored(&rotated).await {
        assert!(row.starts_with("sealed:v1:k2:"), "{row}");
    }
    let later = t0() + Duration::hours(1);
    assert_eq!(signing_secrets(&rotated, later).await, expected);
    // A secret rotated by the API is sealed with the current key too.
    let txn = rotated.begin().await.unwrap();
    rotated
        .set_endpoint_secret(&txn, a, "whsec_bmV3", later)
        .await
        .unwrap();
    rotated.commit_plain(txn).await.unwrap();
    let row = stored(&rotated).await.into_iter().find(|(id, _)| *id == a);
    assert!(row.unwrap().1.starts_with("sealed:v1:k2:"));

    // Keys that cannot open a row stop the start, naming the key, never the secret.
    for (store, why) in [
        (plain.clone(), "no key is configured"),
        (plain.clone().with_secret_keys(keys(&[K1])), "\"k2\""),
    ] {
        let err = store
            .reseal_webhook_secrets()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("c2VjcmV0") && !err.contains("bmV3"), "{err}");
    }
}
