//! Writes racing for one unique value on PostgreSQL: one wins, the loser gets the conflict as a
//! client understands it, never the name of the constraint or index that refused it.

use tenantry_proto::entitlement::v1 as pb;
use tonic::Code;

use crate::helpers::*;

/// Whether a refusal names none of the schema's constraints or indexes.
fn names_no_constraint(status: &tonic::Status) {
    let reason = details(status).reason;
    for text in [status.message(), reason.as_str()] {
        for leak in ["ent_", "unique", "constraint", "pkey", "_key"] {
            assert!(
                !text.to_ascii_lowercase().contains(leak),
                "{leak} in {text:?} ({status:?})"
            );
        }
    }
}

/// Runs two writes at once; exactly one must win. Returns the loser's refusal.
async fn race<T, F, Fut>(write: F) -> tonic::Status
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let (a, b) = tokio::join!(write(), write());
    match (a, b) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        (Ok(_), Ok(_)) => panic!("both writes of one unique value succeeded"),
        (Err(a), Err(b)) => panic!("both writes failed: {a:?} / {b:?}"),
    }
}

#[tokio::test]
async fn racing_creates_of_one_key_lose_with_a_conflict_that_names_no_constraint() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    for round in 0..5 {
        let key = format!("sso-{round}");
        let lost = race(|| {
            let (mut client, key) = (app.features.clone(), key.clone());
            async move {
                client
                    .create_feature(pb::CreateFeatureRequest {
                        name: key.clone(),
                        key,
                        ..Default::default()
                    })
                    .await
            }
        })
        .await;
        assert_eq!(lost.code(), Code::AlreadyExists, "{lost:?}");
        names_no_constraint(&lost);

        let plan_key = format!("pro-{round}");
        let lost = race(|| {
            let (mut client, plan_key, key) = (app.plans.clone(), plan_key.clone(), key.clone());
            async move {
                client
                    .create_plan(pb::CreatePlanRequest {
                        key: Some(plan_key.clone()),
                        name: plan_key,
                        features: vec![bare(&key)],
                        ..Default::default()
                    })
                    .await
            }
        })
        .await;
        assert_eq!(lost.code(), Code::AlreadyExists, "{lost:?}");
        names_no_constraint(&lost);
    }

    // Grants with one external ID: both pass the check for a taken ID before either commits
    // (the tenant service is asked meanwhile), so the loser meets the unique index.
    let plan = app.plan("grants", vec![bare("sso-0")], false).await;
    for round in 0..5 {
        let external_id = format!("ext-{round}");
        let lost = race(|| {
            let mut client = app.grants.clone();
            let request = pb::CreateGrantRequest {
                grant: Some(pb::NewGrant {
                    plan: Some(pb::new_grant::Plan::PlanId(plan.id.clone())),
                    tenant_id: "acme".into(),
                    external_id: Some(external_id.clone()),
                    ..Default::default()
                }),
                idempotency_key: None,
            };
            async move { client.create_grant(request).await }
        })
        .await;
        // Seen taken before the insert: the field error; lost at the index: the conflict.
        assert!(
            matches!(lost.code(), Code::AlreadyExists | Code::InvalidArgument),
            "{lost:?}"
        );
        names_no_constraint(&lost);
    }
}
