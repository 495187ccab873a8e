//! Batch writes: atomicity with several bad items, idempotent retries, and the seed-003 view.

use tenantry_proto::common::v1 as pb_common;
use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

fn new_grant(plan: &str, tenant: &str) -> pb::NewGrant {
    pb::NewGrant {
        plan: Some(pb::new_grant::Plan::PlanId(plan.into())),
        tenant_id: tenant.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn batch_is_all_or_nothing_and_lists_every_bad_item() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let now = app.clock.now_for_tests();
    let mut bad_dates = new_grant(&plan.id, "acme");
    bad_dates.starts_at = Some(ts(now + chrono::Duration::days(2)));
    bad_dates.expires_at = Some(ts(now + chrono::Duration::days(1)));
    let items = vec![
        new_grant(&plan.id, "acme"),
        new_grant("0190a000-0000-7000-8000-000000000000", "acme"),
        new_grant(&plan.id, "no-such-account"),
        bad_dates,
        new_grant(&plan.id, "has space"),
        // The tenant service refuses it; passed on, its refusal was an internal error.
        new_grant(&plan.id, "control\u{1}char"),
    ];
    let err = app.batch_create(items).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let got: Vec<(u32, String)> = details(&err)
        .item_errors
        .into_iter()
        .map(|e| (e.index, e.field))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "planId".to_owned()),
            (2, "tenantId".to_owned()),
            (3, "expiresAt".to_owned()),
            (4, "tenantId".to_owned()),
            (5, "tenantId".to_owned()),
        ]
    );
    let listed = app
        .grants
        .clone()
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.grants.is_empty(), "nothing may be written");

    // More than 1,000 items is refused as a whole.
    let too_many = vec![new_grant(&plan.id, "acme"); 1001];
    let err = app.batch_create(too_many).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn idempotent_retry_returns_the_same_ids() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let request = pb::BatchCreateGrantsRequest {
        grants: vec![new_grant(&plan.id, "acme"), {
            let mut g = new_grant(&plan.id, "acme");
            g.user_id = Some("alice".into());
            g.external_id = Some("ext-1".into());
            g
        }],
        idempotency_key: Some("key-1".into()),
    };
    let first = app
        .grants
        .clone()
        .batch_create_grants(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .grants
        .clone()
        .batch_create_grants(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.grant_ids.len(), 2);
    assert_eq!(first.grant_ids, again.grant_ids);
    let listed = app
        .grants
        .clone()
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.grants.len(), 2, "a retry writes nothing");

    let mut different = request;
    different.grants.pop();
    let err = app
        .grants
        .clone()
        .batch_create_grants(different)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(details(&err).reason, "IDEMPOTENCY_KEY_REUSED");

    // Seed 003: the user's grants with status and product key.
    let user = app
        .grants
        .clone()
        .list_user_grants(pb::ListUserGrantsRequest {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.grants.len(), 1);
    let g = &user.grants[0];
    assert_eq!(
        (
            g.product_key.as_str(),
            g.brand_id.as_str(),
            g.external_id.as_str()
        ),
        ("pro", "acme", "ext-1")
    );
    assert_eq!(g.status, pb::UserGrantStatus::Active as i32);

    // Batch update then delete, by id.
    let updated = app
        .grants
        .clone()
        .batch_update_grants(pb::BatchUpdateGrantsRequest {
            patches: vec![pb::GrantPatch {
                id: first.grant_ids[0].clone(),
                expires_at: Some(tenantry_proto::common::v1::NullableTimestamp {
                    value: Some(ts(app.clock.now_for_tests() + chrono::Duration::days(3))),
                }),
                ..Default::default()
            }],
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.grant_ids, vec![first.grant_ids[0].clone()]);
    let err = app
        .grants
        .clone()
        .batch_delete_grants(pb::BatchDeleteGrantsRequest {
            ids: vec![first.grant_ids[0].clone(), "not-a-uuid".into()],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).item_errors.len(), 1);
    let deleted = app
        .grants
        .clone()
        .batch_delete_grants(pb::BatchDeleteGrantsRequest {
            ids: first.grant_ids.clone(),
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_count, 2);
    let d = app
        .check("acme", None, feature_target("sso"), None, deleted.revision)
        .await
        .unwrap();
    assert!(!d.result);
}

#[tokio::test]
async fn idempotent_retries_return_the_first_response_including_its_revision() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let mut grants = app.grants.clone();

    let create = pb::CreateGrantRequest {
        grant: Some(new_grant(&plan.id, "acme")),
        idempotency_key: Some("single-1".into()),
    };
    let first = grants
        .create_grant(create.clone())
        .await
        .unwrap()
        .into_inner();
    // Later writes move the revision on and change the grant.
    let (_, later) = app.grant(&plan, "acme", None, None, None).await;
    assert!(later > first.revision);
    grants
        .update_grant(pb::UpdateGrantRequest {
            patch: Some(pb::GrantPatch {
                id: first.grant.as_ref().unwrap().id.clone(),
                metadata: serde_json_to_struct(&serde_json::json!({"changed": true})),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let again = grants.create_grant(create).await.unwrap().into_inner();
    assert_eq!(
        again, first,
        "a retry answers exactly as the first call did"
    );

    let batch = pb::BatchCreateGrantsRequest {
        grants: vec![new_grant(&plan.id, "acme"), new_grant(&plan.id, "acme")],
        idempotency_key: Some("batch-1".into()),
    };
    let first = grants
        .batch_create_grants(batch.clone())
        .await
        .unwrap()
        .into_inner();
    app.grant(&plan, "acme", None, None, None).await;
    let again = grants
        .batch_create_grants(batch)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);

    let update = pb::BatchUpdateGrantsRequest {
        patches: first
            .grant_ids
            .iter()
            .map(|id| pb::GrantPatch {
                id: id.clone(),
                metadata: serde_json_to_struct(&serde_json::json!({"n": 1})),
                ..Default::default()
            })
            .collect(),
        idempotency_key: Some("update-1".into()),
    };
    let updated = grants
        .batch_update_grants(update.clone())
        .await
        .unwrap()
        .into_inner();
    app.grant(&plan, "acme", None, None, None).await;
    let again = grants
        .batch_update_grants(update)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, updated);
    assert_eq!(again.grant_ids, first.grant_ids);

    let delete = pb::BatchDeleteGrantsRequest {
        ids: first.grant_ids.clone(),
        idempotency_key: Some("delete-1".into()),
    };
    let deleted = grants
        .batch_delete_grants(delete.clone())
        .await
        .unwrap()
        .into_inner();
    app.grant(&plan, "acme", None, None, None).await;
    let again = grants
        .batch_delete_grants(delete)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, deleted);
    assert_eq!(again.deleted_count, 2);
}

#[tokio::test]
async fn batch_update_moves_starts_and_metadata_and_keeps_external_ids_unique() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.account("globex", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let with_ext = |tenant: &str, ext: &str| {
        let mut g = new_grant(&plan.id, tenant);
        g.external_id = Some(ext.into());
        g
    };
    let created = app
        .grants
        .clone()
        .batch_create_grants(pb::BatchCreateGrantsRequest {
            grants: vec![
                with_ext("acme", "a-1"),
                with_ext("acme", "a-2"),
                with_ext("globex", "g-1"),
            ],
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids = created.grant_ids;
    let later = app.clock.now_for_tests() + chrono::Duration::days(2);
    let patch = |id: &str, ext: Option<&str>| pb::GrantPatch {
        id: id.into(),
        starts_at: Some(tenantry_proto::common::v1::NullableTimestamp {
            value: Some(ts(later)),
        }),
        metadata: serde_json_to_struct(&serde_json::json!({"tier": "gold"})),
        external_id: ext.map(Into::into),
        ..Default::default()
    };
    // a-1 may not take a-2 (held by another acme grant); globex's grant may take "a-2" (ids
    // are unique per account); two patches may not claim one id.
    let err = app
        .grants
        .clone()
        .batch_update_grants(pb::BatchUpdateGrantsRequest {
            patches: vec![
                patch(&ids[0], Some("a-2")),
                patch(&ids[2], Some("a-2")),
                patch(&ids[1], Some("a-3")),
            ],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    let items: Vec<(u32, String)> = details(&err)
        .item_errors
        .into_iter()
        .map(|e| (e.index, e.field))
        .collect();
    assert_eq!(items, vec![(0, "externalId".to_owned())]);

    let ok = app
        .grants
        .clone()
        .batch_update_grants(pb::BatchUpdateGrantsRequest {
            patches: vec![patch(&ids[0], Some("a-1")), patch(&ids[2], Some("a-2"))],
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.grant_ids, vec![ids[0].clone(), ids[2].clone()]);
    let g = app
        .grants
        .clone()
        .get_grant(pb::GetGrantRequest {
            id: ids[0].clone(),
            with_relations: false,
        })
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(g.starts_at, Some(ts(later)));
    assert_eq!(g.status, pb::GrantStatus::Scheduled as i32);
    assert_eq!(
        g.metadata,
        serde_json_to_struct(&serde_json::json!({"tier": "gold"}))
    );
    let d = app
        .check("acme", None, feature_target("sso"), None, ok.revision)
        .await
        .unwrap();
    // a-2 (not moved) still entitles acme now.
    assert!(d.result);
}

/// A timestamp chrono cannot represent (out of range, or negative nanos).
fn invalid_time(nanos_only: bool) -> prost_types::Timestamp {
    if nanos_only {
        prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: -1,
        }
    } else {
        prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        }
    }
}

#[tokio::test]
async fn invalid_timestamps_are_refused_naming_the_field_never_dropped() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let mut grants = app.grants.clone();
    let violation = |err: &tonic::Status| {
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        details(err).field_violations[0].field.clone()
    };

    // Single create: the bad field is named; nothing is created with it "unset".
    let mut bad = new_grant(&plan.id, "acme");
    bad.expires_at = Some(invalid_time(false));
    let err = grants
        .create_grant(pb::CreateGrantRequest {
            grant: Some(bad),
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violation(&err), "grant.expiresAt");
    let mut bad = new_grant(&plan.id, "acme");
    bad.starts_at = Some(invalid_time(true));
    let err = grants
        .create_grant(pb::CreateGrantRequest {
            grant: Some(bad),
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violation(&err), "grant.startsAt");

    // Batch create: every bad item by index, nothing written.
    let mut bad_expiry = new_grant(&plan.id, "acme");
    bad_expiry.expires_at = Some(invalid_time(false));
    let mut bad_start = new_grant(&plan.id, "acme");
    bad_start.starts_at = Some(invalid_time(true));
    let err = grants
        .batch_create_grants(pb::BatchCreateGrantsRequest {
            grants: vec![
                new_grant(&plan.id, "acme"),
                bad_expiry,
                new_grant(&plan.id, "acme"),
                bad_start,
            ],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let got: Vec<(u32, String)> = details(&err)
        .item_errors
        .into_iter()
        .map(|e| (e.index, e.field))
        .collect();
    assert_eq!(
        got,
        vec![(1, "expiresAt".to_owned()), (3, "startsAt".to_owned())]
    );
    let listed = grants
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.grants.is_empty(), "nothing may be written");

    // Updates: an invalid expiry is refused, never taken as "clear the expiry".
    let now = app.clock.now_for_tests();
    let expiry = ts(now + chrono::Duration::days(30));
    let (grant, _) = app
        .grant(
            &plan,
            "acme",
            None,
            None,
            Some(now + chrono::Duration::days(30)),
        )
        .await;
    let (other, _) = app.grant(&plan, "acme", None, None, None).await;
    let patch = |expires: Option<prost_types::Timestamp>,
                 starts: Option<prost_types::Timestamp>| pb::GrantPatch {
        id: grant.id.clone(),
        expires_at: Some(pb_common::NullableTimestamp { value: expires }),
        starts_at: starts.map(|t| pb_common::NullableTimestamp { value: Some(t) }),
        ..Default::default()
    };
    let err = grants
        .update_grant(pb::UpdateGrantRequest {
            patch: Some(patch(Some(invalid_time(false)), None)),
        })
        .await
        .unwrap_err();
    assert_eq!(violation(&err), "patch.expiresAt");
    let err = grants
        .update_grant(pb::UpdateGrantRequest {
            patch: Some(patch(Some(expiry), Some(invalid_time(true)))),
        })
        .await
        .unwrap_err();
    assert_eq!(violation(&err), "patch.startsAt");
    let err = grants
        .batch_update_grants(pb::BatchUpdateGrantsRequest {
            patches: vec![
                pb::GrantPatch {
                    id: other.id.clone(),
                    external_id: Some("other".into()),
                    ..Default::default()
                },
                patch(Some(invalid_time(true)), None),
            ],
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let got: Vec<(u32, String)> = details(&err)
        .item_errors
        .into_iter()
        .map(|e| (e.index, e.field))
        .collect();
    assert_eq!(got, vec![(1, "expiresAt".to_owned())]);
    let stored = grants
        .get_grant(pb::GetGrantRequest {
            id: grant.id.clone(),
            with_relations: false,
        })
        .await
        .unwrap()
        .into_inner()
        .grant
        .unwrap();
    assert_eq!(stored.expires_at, Some(expiry), "the expiry must survive");
    assert_eq!(stored.starts_at, grant.starts_at);
}

#[tokio::test]
async fn a_revoked_grant_cannot_be_changed_like_it_cannot_be_revoked_twice() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let (grant, _) = app.grant(&plan, "acme", None, None, None).await;
    let mut grants = app.grants.clone();
    grants
        .revoke_grant(pb::RevokeGrantRequest {
            id: grant.id.clone(),
            reason: None,
        })
        .await
        .unwrap();
    let twice = grants
        .revoke_grant(pb::RevokeGrantRequest {
            id: grant.id.clone(),
            reason: None,
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition);
    let err = grants
        .update_grant(pb::UpdateGrantRequest {
            patch: Some(pb::GrantPatch {
                id: grant.id.clone(),
                external_id: Some("late".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&grant.id), "{}", err.message());
    // An unknown grant stays NOT_FOUND.
    let err = grants
        .update_grant(pb::UpdateGrantRequest {
            patch: Some(pb::GrantPatch {
                id: uuid::Uuid::now_v7().to_string(),
                external_id: Some("x".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_list_as_of_now_never_shows_a_just_written_grant_as_scheduled() {
    // "Now" for a read is this replica's clock but never before a write it has seen, and a
    // grant committed while the list ran (created after the list's instant) is left out
    // rather than shown "scheduled". The manual clock stands in for both races: a grant
    // written at T+1s read at T, and a row another writer committed at T+1h that this
    // replica has not seen yet.
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let list = |statuses: Vec<i32>, at: Option<chrono::DateTime<chrono::Utc>>| {
        let mut grants = app.grants.clone();
        async move {
            grants
                .list_grants(pb::ListGrantsRequest {
                    tenant_ids: vec!["acme".into()],
                    statuses,
                    at: at.map(ts),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .grants
        }
    };
    let t = app.clock.now_for_tests();
    let (early, _) = app.grant(&plan, "acme", None, None, None).await;
    app.clock.set(t + chrono::Duration::seconds(1));
    let (late, _) = app.grant(&plan, "acme", None, None, None).await;
    app.clock.set(t);

    let all = list(vec![], None).await;
    assert_eq!(all.len(), 2);
    assert!(
        all.iter().all(|g| g.status() == pb::GrantStatus::Active),
        "{all:?}"
    );
    assert!(
        list(vec![pb::GrantStatus::Scheduled as i32], None)
            .await
            .is_empty()
    );
    // An explicit instant is a question about that instant.
    let at_t = list(vec![pb::GrantStatus::Scheduled as i32], Some(t)).await;
    assert_eq!(at_t.len(), 1);
    assert_eq!(at_t[0].id, late.id);

    // A row committed by another writer, not yet seen here, created an hour from now.
    let db =
        tenantry_common::db::connect(&tenantry_common::db::DbSettings::entitlement(&app.config))
            .await
            .unwrap();
    let future = t + chrono::Duration::hours(1);
    let unseen = uuid::Uuid::now_v7();
    use sea_orm::ConnectionTrait;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        db.get_database_backend(),
        "INSERT INTO ent_grant (id, plan_id, tenant_id, starts_at, source, metadata, \
         created_at, updated_at) VALUES ($1, $2, 'acme', $3, 'api', '{}', $3, $3)",
        [
            unseen.into(),
            uuid::Uuid::parse_str(&plan.id).unwrap().into(),
            future.into(),
        ],
    ))
    .await
    .unwrap();
    let ids = |grants: Vec<pb::Grant>| grants.into_iter().map(|g| g.id).collect::<Vec<_>>();
    assert_eq!(
        ids(list(vec![], None).await),
        vec![early.id, late.id.clone()]
    );
    let later = ids(list(vec![], Some(future)).await);
    assert!(later.contains(&unseen.to_string()), "{later:?}");
}

#[tokio::test]
async fn idempotency_keys_older_than_the_retention_are_pruned_and_fresh_ones_kept() {
    let app = spawn_app().await;
    app.account("acme", None).await;
    app.account("other", None).await;
    app.bool_feature("sso").await;
    let plan = app.plan("pro", vec![bare("sso")], false).await;
    let keyed = |tenant: &str, key: &str| pb::CreateGrantRequest {
        grant: Some(new_grant(&plan.id, tenant)),
        idempotency_key: Some(key.into()),
    };
    let mut grants = app.grants.clone();
    grants.create_grant(keyed("acme", "old")).await.unwrap();
    // The default retention is a day: "old" expires, "fresh" is written a day later.
    app.clock.advance(chrono::Duration::hours(25));
    grants.create_grant(keyed("acme", "fresh")).await.unwrap();

    // Until the pruner has run, "old" with another request is a reuse; after, a new key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match grants.create_grant(keyed("other", "old")).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(details(&status).reason, "IDEMPOTENCY_KEY_REUSED");
                assert!(
                    std::time::Instant::now() < deadline,
                    "an idempotency key past its retention was never pruned"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    let status = grants
        .create_grant(keyed("other", "fresh"))
        .await
        .expect_err("a fresh key still refuses a different request");
    assert_eq!(details(&status).reason, "IDEMPOTENCY_KEY_REUSED");
}
