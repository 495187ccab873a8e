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

    // Without it, B converges through NOTIFY quickly.
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
            start.elapsed() < Duration::from_secs(2),
            "replica B never saw A's write"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A revision nobody wrote yet: UNAVAILABLE after a short wait.
    let err = b
        .check("acme", None, feature_target("sso"), None, rev + 1_000)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

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

    // A revision nobody wrote yet: UNAVAILABLE after a short wait, not a stale answer.
    let err = list(rev + 1_000).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}
