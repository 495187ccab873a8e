//! Read-your-writes with `min_revision`, and two instances on one database.

use std::time::{Duration, Instant};

use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

#[tokio::test]
async fn two_instances_see_each_others_writes() {
    let a = spawn_app().await;
    let b = spawn_replica(&a).await;
    a.account("acme", None).await;
    a.bool_feature("sso").await;
    let plan = a.plan("pro", vec![bare("sso")], false).await;
    let (_, rev) = a.grant(&plan, "acme", None, None, None).await;

    // With min_revision, B answers only from an index including A's write.
    let d = b
        .check("acme", None, feature_target("sso"), None, rev)
        .await
        .unwrap();
    assert!(d.result, "{d:?}");

    // Without it, B converges by itself (NOTIFY, or the 1 s log poll at worst; the bound is
    // generous because CI machines are loaded, and B6 measures the latency).
    let (_, _) = b.grant(&plan, "acme", Some("bob"), None, None).await;
    let start = Instant::now();
    let (g, _) = a.grant(&plan, "acme", Some("carol"), None, None).await;
    loop {
        let d = b
            .check("acme", Some("carol"), feature_target("sso"), None, 0)
            .await
            .unwrap();
        if d.provenance.as_ref().is_some_and(|p| p.grant_id == g.id) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replica B never saw A's write"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A revision nobody wrote (no write ever answered with it): a client error, at once
    // rather than after parking the request for the revision wait.
    for beyond in [rev + 1_000, 1 << 63, u64::MAX] {
        let err = b
            .check("acme", None, feature_target("sso"), None, beyond)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("min_revision"), "{err:?}");
    }

    let revision = b
        .checks
        .clone()
        .get_revision(pb::GetRevisionRequest {})
        .await
        .unwrap()
        .into_inner()
        .revision;
    assert!(revision >= rev);
}

#[tokio::test]
async fn tenant_plans_honour_min_revision() {
    let a = spawn_app().await;
    let b = spawn_replica(&a).await;
    a.account("acme", None).await;
    a.bool_feature("sso").await;
    let plan = a.plan("pro", vec![bare("sso")], false).await;
    let (grant, rev) = a.grant(&plan, "acme", None, None, None).await;
    let list = |min_revision: u64| {
        let mut plans = b.plans.clone();
        async move {
            plans
                .list_tenant_plans(pb::ListTenantPlansRequest {
                    tenant_id: "acme".into(),
                    min_revision,
                    ..Default::default()
                })
                .await
        }
    };

    // B answers from an index including A's grant (so it knows the account).
    let plans = list(rev).await.unwrap().into_inner().plans;
    assert_eq!(plans.len(), 1);
    assert!(plans[0].entitled);
    assert_eq!(plans[0].grant_ids, vec![grant.id]);

    // A revision nobody wrote: refused as the client's error, not a stale answer.
    let err = list(rev + 1_000).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_replica_whose_clock_lags_sees_a_fresh_grant_started_and_a_revocation_done() {
    // A's clock runs a second ahead of B's (replicas' clocks never agree exactly). A grant
    // starting "now" on A, or revoked "now" on A, must not look not-started, or still active,
    // on B for that second.
    let a = spawn_app().await;
    let b = spawn_replica(&a).await;
    a.account("acme", None).await;
    a.bool_feature("sso").await;
    let plan = a.plan("pro", vec![bare("sso")], false).await;
    a.clock
        .set(b.clock.now_for_tests() + chrono::Duration::seconds(1));

    let (grant, rev) = a.grant(&plan, "acme", None, None, None).await;
    let d = b
        .check("acme", None, feature_target("sso"), None, rev)
        .await
        .unwrap();
    assert!(d.result, "{d:?}");
    let listed = b
        .grants
        .clone()
        .get_grant(pb::GetGrantRequest {
            id: grant.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(listed.status(), pb::GrantStatus::Active);

    a.clock
        .set(b.clock.now_for_tests() + chrono::Duration::seconds(2));
    let revoked = a
        .grants
        .clone()
        .revoke_grant(pb::RevokeGrantRequest {
            id: grant.id.clone(),
            reason: Some("churn".into()),
        })
        .await
        .unwrap()
        .into_inner();
    let d = b
        .check("acme", None, feature_target("sso"), None, revoked.revision)
        .await
        .unwrap();
    assert!(!d.result, "{d:?}");
    assert_eq!(d.justification(), pb::Justification::PlanRevoked, "{d:?}");

    // A question about an explicit instant is still answered at that instant.
    let before = b
        .check(
            "acme",
            None,
            feature_target("sso"),
            Some(b.clock.now_for_tests()),
            revoked.revision,
        )
        .await
        .unwrap();
    assert!(!before.result, "not started at B's own reading: {before:?}");
}
