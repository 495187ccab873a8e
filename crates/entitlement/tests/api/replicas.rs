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

/// A check of `sso` for acme that needs `min_revision`, on its own task.
fn check_at(
    app: &App,
    min_revision: u64,
) -> tokio::task::JoinHandle<Result<pb::EntitlementDecision, tonic::Status>> {
    let mut checks = app.checks.clone();
    tokio::spawn(async move {
        checks
            .is_entitled_to(pb::IsEntitledToRequest {
                query: Some(pb::EntitlementQuery {
                    subject: Some(pb::Subject {
                        tenant_id: "acme".into(),
                        ..Default::default()
                    }),
                    target: Some(feature_target("sso")),
                    ..Default::default()
                }),
                min_revision,
            })
            .await
            .map(|r| r.into_inner().decision.unwrap())
    })
}

#[tokio::test]
async fn reads_waiting_for_a_revision_are_bounded_and_the_rest_refused_at_once() {
    let mut config = pg_config().await;
    config.max_revision_waiters = 2;
    let a = spawn_on(config).await;
    a.account("acme", None).await;
    a.bool_feature("sso").await;
    let plan = a.plan("pro", vec![bare("sso")], false).await;
    a.grant(&plan, "acme", None, None, None).await;
    // The account reaches the index through the tenant feed, whose commits take revisions
    // too: once it has, nothing else commits until this test writes.
    a.eventually("acme reached the index", || async {
        a.check("acme", None, feature_target("sso"), None, 0)
            .await
            .is_ok_and(|d| d.result)
    })
    .await;
    let rev = a
        .checks
        .clone()
        .get_revision(pb::GetRevisionRequest {})
        .await
        .unwrap()
        .into_inner()
        .revision;

    // Another replica's commit whose change-log entry this replica cannot read yet: the
    // revision counter is one ahead of its index, so a read of that revision waits.
    let url = a.config.entitlement_database_url.as_ref().unwrap().expose();
    let bump = format!(
        "UPDATE {}.ent_revision SET value = value + 1 WHERE id = 1",
        a.config.entitlement_db_schema
    );
    tenantry_common::testing::execute(url, &bump).await;
    let pending = rev + 1;

    // Six reads of it at once: two wait, four are refused at once, retryable.
    let started = Instant::now();
    let reads: Vec<_> = (0..6).map(|_| check_at(&a, pending)).collect();
    while reads.iter().filter(|r| r.is_finished()).count() < 4 {
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "the reads over the bound were not refused at once"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A revision beyond any (2^63) is the client's error even now, decided before waiting.
    let err = a
        .check("acme", None, feature_target("sso"), None, 1 << 63)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A write reaches the revision: the two waiting reads answer from an index including it.
    let (_, newest) = a.grant(&plan, "acme", Some("bob"), None, None).await;
    let (mut refused, mut answered) = (0, 0);
    for read in reads {
        match read.await.unwrap() {
            Ok(decision) => {
                assert!(decision.result, "{decision:?}");
                answered += 1;
            }
            Err(err) => {
                assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
                assert_eq!(details(&err).reason, "REVISION_WAITERS_FULL", "{err:?}");
                assert!(err.message().contains("waiting"), "{err:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((answered, refused), (2, 4));

    // The waiting room empties with its answers: two reads may wait again.
    tenantry_common::testing::execute(url, &bump).await;
    let reads: Vec<_> = (0..2).map(|_| check_at(&a, newest + 1)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        reads.iter().all(|r| !r.is_finished()),
        "the reads were not let wait"
    );
    a.grant(&plan, "acme", Some("carol"), None, None).await;
    for read in reads {
        let d = read.await.unwrap().unwrap();
        assert!(d.result, "{d:?}");
    }
}
