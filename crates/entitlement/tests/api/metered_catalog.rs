//! Metered features in the catalogue over gRPC: created, read, listed and updated with their
//! metering; every refusal with its code and field; plans allocating them counts.

use tenantry_proto::entitlement::v1 as pb;

use crate::helpers::*;

fn anchor() -> prost_types::Timestamp {
    ts(chrono::DateTime::parse_from_rfc3339("2026-01-31T00:00:00Z")
        .unwrap()
        .to_utc())
}

fn monthly(unit: &str) -> pb::Metering {
    pb::Metering {
        unit: unit.into(),
        aggregation: pb::Aggregation::Unspecified.into(),
        recurrence: "month".into(),
        anchor: Some(anchor()),
        soft_limit: false,
        carry_overage: false,
    }
}

fn new_feature(
    key: &str,
    ty: pb::AllocationType,
    m: Option<pb::Metering>,
) -> pb::CreateFeatureRequest {
    pb::CreateFeatureRequest {
        key: key.into(),
        name: key.into(),
        allocation_type: ty.into(),
        metering: m,
        ..Default::default()
    }
}

/// The refusal's code and first field; the reason too when it is not a field's own
/// `INVALID_…`.
fn refusal(status: &tonic::Status) -> (tonic::Code, String, String) {
    let d = details(status);
    let field = d
        .field_violations
        .first()
        .map(|v| v.field.clone())
        .unwrap_or_default();
    let reason = if d.reason.starts_with("INVALID_") {
        String::new()
    } else {
        d.reason
    };
    (status.code(), reason, field)
}

fn invalid(field: &str) -> (tonic::Code, String, String) {
    (
        tonic::Code::InvalidArgument,
        String::new(),
        field.to_owned(),
    )
}

fn immutable(field: &str) -> (tonic::Code, String, String) {
    (
        tonic::Code::FailedPrecondition,
        "METERING_IMMUTABLE".to_owned(),
        field.to_owned(),
    )
}

#[tokio::test]
async fn metered_features_are_created_read_and_listed_with_their_metering() {
    let app = spawn_app().await;
    let mut features = app.features.clone();
    let created = features
        .create_feature(pb::CreateFeatureRequest {
            merge_policy: pb::MergePolicy::Sum.into(),
            metering: Some(pb::Metering {
                soft_limit: true,
                ..monthly("api_call")
            }),
            ..new_feature("calls", pb::AllocationType::Metered, None)
        })
        .await
        .unwrap()
        .into_inner()
        .feature
        .unwrap();
    assert_eq!(created.allocation_type(), pb::AllocationType::Metered);
    assert_eq!(created.merge_policy(), pb::MergePolicy::Sum);
    let m = created.metering.clone().unwrap();
    assert_eq!(m.unit, "api_call");
    assert_eq!(m.aggregation(), pb::Aggregation::Sum, "UNSPECIFIED is SUM");
    assert_eq!(m.recurrence, "P1M", "the canonical form");
    assert_eq!(m.anchor, Some(anchor()));
    assert!(m.soft_limit && !m.carry_overage);

    let got = features
        .get_feature(pb::GetFeatureRequest {
            selector: Some(pb::get_feature_request::Selector::Key("calls".into())),
        })
        .await
        .unwrap()
        .into_inner()
        .feature
        .unwrap();
    assert_eq!(got.metering, created.metering);
    let sso = app.bool_feature("sso").await;
    assert_eq!(sso.metering, None, "other types carry none");
    let listed = features
        .list_features(pb::ListFeaturesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .features;
    let calls = listed.iter().find(|f| f.key == "calls").unwrap();
    assert_eq!(calls.metering, created.metering);

    // Every aggregation and an ISO-8601 recurrence.
    for (i, aggregation) in [
        pb::Aggregation::Count,
        pb::Aggregation::Max,
        pb::Aggregation::UniqueCount,
    ]
    .into_iter()
    .enumerate()
    {
        let f = features
            .create_feature(new_feature(
                &format!("meter-{i}"),
                pb::AllocationType::Metered,
                Some(pb::Metering {
                    aggregation: aggregation.into(),
                    recurrence: "P14D".into(),
                    ..monthly("seat")
                }),
            ))
            .await
            .unwrap()
            .into_inner()
            .feature
            .unwrap();
        let m = f.metering.unwrap();
        assert_eq!(
            (m.aggregation(), m.recurrence.as_str()),
            (aggregation, "P14D")
        );
    }
}

#[tokio::test]
async fn bad_meterings_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let mut features = app.features.clone();
    let metered = |m: pb::Metering| new_feature("calls", pb::AllocationType::Metered, Some(m));
    let cases = [
        (
            new_feature("calls", pb::AllocationType::Metered, None),
            invalid("metering"),
        ),
        (
            new_feature("calls", pb::AllocationType::Bool, Some(monthly("api_call"))),
            invalid("metering"),
        ),
        (
            new_feature(
                "calls",
                pb::AllocationType::MaxCount,
                Some(monthly("api_call")),
            ),
            invalid("metering"),
        ),
        (metered(monthly("")), invalid("metering.unit")),
        (metered(monthly("api calls")), invalid("metering.unit")),
        (metered(monthly(&"u".repeat(65))), invalid("metering.unit")),
        (
            metered(pb::Metering {
                recurrence: "fortnight".into(),
                ..monthly("api_call")
            }),
            invalid("metering.recurrence"),
        ),
        (
            metered(pb::Metering {
                recurrence: "PT30S".into(),
                ..monthly("api_call")
            }),
            invalid("metering.recurrence"),
        ),
        (
            metered(pb::Metering {
                anchor: None,
                ..monthly("api_call")
            }),
            invalid("metering.anchor"),
        ),
        (
            metered(pb::Metering {
                anchor: Some(prost_types::Timestamp {
                    seconds: 300_000_000_000,
                    nanos: 0,
                }),
                ..monthly("api_call")
            }),
            invalid("metering.anchor"),
        ),
        (
            metered(pb::Metering {
                aggregation: 99,
                ..monthly("api_call")
            }),
            invalid("metering.aggregation"),
        ),
    ];
    for (request, expected) in cases {
        let err = features
            .create_feature(request.clone())
            .await
            .expect_err(&format!("{request:?}"));
        assert_eq!(refusal(&err), expected, "{request:?}: {err:?}");
    }
    // The recurrence's own error text, not a generic one.
    let err = features
        .create_feature(metered(pb::Metering {
            recurrence: "PT30S".into(),
            ..monthly("api_call")
        }))
        .await
        .unwrap_err();
    assert!(err.message().contains("at least one minute"), "{err:?}");
    // Nothing refused was stored.
    let listed = features
        .list_features(pb::ListFeaturesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.features.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn a_metered_feature_keeps_its_aggregation_period_and_type() {
    let app = spawn_app().await;
    let mut features = app.features.clone();
    let calls = features
        .create_feature(new_feature(
            "calls",
            pb::AllocationType::Metered,
            Some(monthly("api_call")),
        ))
        .await
        .unwrap()
        .into_inner()
        .feature
        .unwrap();
    let update = |m: Option<pb::Metering>| pb::UpdateFeatureRequest {
        id: calls.id.clone(),
        metering: m,
        ..Default::default()
    };

    // Unit, soft limit and carried overage change; an update without a metering keeps it.
    let changed = pb::Metering {
        unit: "request".into(),
        soft_limit: true,
        carry_overage: true,
        ..monthly("api_call")
    };
    let r = features
        .update_feature(update(Some(changed.clone())))
        .await
        .unwrap()
        .into_inner()
        .feature
        .unwrap();
    let m = r.metering.unwrap();
    assert_eq!(
        (m.unit.as_str(), m.soft_limit, m.carry_overage),
        ("request", true, true)
    );
    let r = features
        .update_feature(pb::UpdateFeatureRequest {
            name: Some("API calls".into()),
            ..update(None)
        })
        .await
        .unwrap()
        .into_inner()
        .feature
        .unwrap();
    assert_eq!(r.name, "API calls");
    assert_eq!(r.metering.unwrap().unit, "request", "kept");

    // Aggregation, recurrence, anchor and the type are fixed.
    let later = prost_types::Timestamp {
        seconds: anchor().seconds + 86_400,
        nanos: 0,
    };
    for (m, field) in [
        (
            pb::Metering {
                aggregation: pb::Aggregation::Max.into(),
                ..changed.clone()
            },
            "metering.aggregation",
        ),
        (
            pb::Metering {
                recurrence: "P30D".into(),
                ..changed.clone()
            },
            "metering.recurrence",
        ),
        (
            pb::Metering {
                anchor: Some(later),
                ..changed.clone()
            },
            "metering.anchor",
        ),
    ] {
        let err = features.update_feature(update(Some(m))).await.unwrap_err();
        assert_eq!(refusal(&err), immutable(field), "{err:?}");
    }
    // MONTH and P1M are the same recurrence: not a change.
    features
        .update_feature(update(Some(pb::Metering {
            recurrence: "P1M".into(),
            ..changed.clone()
        })))
        .await
        .unwrap();
    for ty in [pb::AllocationType::MaxCount, pb::AllocationType::Bool] {
        let err = features
            .update_feature(pb::UpdateFeatureRequest {
                allocation_type: Some(ty.into()),
                ..update(None)
            })
            .await
            .unwrap_err();
        assert_eq!(refusal(&err), immutable("allocation_type"), "{err:?}");
    }
    let got = features
        .get_feature(pb::GetFeatureRequest {
            selector: Some(pb::get_feature_request::Selector::Id(calls.id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .feature
        .unwrap();
    assert_eq!(got.allocation_type(), pb::AllocationType::Metered);
    assert_eq!(
        got.metering.unwrap(),
        pb::Metering {
            aggregation: pb::Aggregation::Sum.into(),
            recurrence: "P1M".into(),
            ..changed
        },
        "nothing refused was written"
    );
}

#[tokio::test]
async fn plans_allocate_metered_features_counts_and_max_count_becomes_metered_under_them() {
    let app = spawn_app().await;
    let mut features = app.features.clone();
    let mut plans = app.plans.clone();
    features
        .create_feature(new_feature(
            "calls",
            pb::AllocationType::Metered,
            Some(monthly("api_call")),
        ))
        .await
        .unwrap();
    let seats = app
        .feature(
            "seats",
            pb::AllocationType::MaxCount,
            pb::MergePolicy::Sum,
            &[],
        )
        .await;
    let sso = app.bool_feature("sso").await;

    // The amount issued each period is a max_count value; a bare key is unlimited.
    let plan = app
        .plan(
            "pro",
            vec![count("calls", 10_000), count("seats", 5)],
            false,
        )
        .await;
    let allocation = |plan: &pb::Plan, key: &str| {
        plan.features
            .iter()
            .find(|f| f.feature_key == key)
            .and_then(|f| f.allocation)
            .and_then(|a| a.kind)
    };
    let issued = |n| {
        Some(pb::allocation::Kind::MaxCountAllocation(
            pb::MaxCountAllocation {
                value: n,
                unlimited: false,
            },
        ))
    };
    assert_eq!(allocation(&plan, "calls"), issued(10_000));
    let open = app.plan("open", vec![bare("calls")], false).await;
    assert_eq!(
        allocation(&open, "calls"),
        Some(pb::allocation::Kind::MaxCountAllocation(
            pb::MaxCountAllocation {
                value: 0,
                unlimited: true,
            }
        ))
    );
    // An on/off allocation is not one.
    let err = plans
        .create_plan(pb::CreatePlanRequest {
            key: Some("bad".into()),
            name: "bad".into(),
            features: vec![pb::PlanFeatureInput {
                feature_key: "calls".into(),
                allocation: Some(pb::Allocation {
                    kind: Some(pb::allocation::Kind::BoolAllocation(pb::BoolAllocation {
                        value: true,
                    })),
                }),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refusal(&err), invalid("features[0].allocation"), "{err:?}");

    // MAX_COUNT → METERED under a plan: its count becomes the amount issued each period.
    let err = features
        .update_feature(pb::UpdateFeatureRequest {
            id: seats.id.clone(),
            allocation_type: Some(pb::AllocationType::Metered.into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refusal(&err), invalid("metering"), "{err:?}");
    let err = features
        .update_feature(pb::UpdateFeatureRequest {
            id: seats.id.clone(),
            metering: Some(monthly("seat")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refusal(&err), invalid("metering"), "only METERED takes one");
    let metered = features
        .update_feature(pb::UpdateFeatureRequest {
            id: seats.id.clone(),
            allocation_type: Some(pb::AllocationType::Metered.into()),
            metering: Some(monthly("seat")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let f = metered.feature.unwrap();
    assert_eq!(f.allocation_type(), pb::AllocationType::Metered);
    assert_eq!(
        f.merge_policy(),
        pb::MergePolicy::Sum,
        "the merge policy stays"
    );
    let plan = plans
        .get_plan(pb::GetPlanRequest {
            selector: Some(pb::get_plan_request::Selector::Id(plan.id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    assert_eq!(allocation(&plan, "seats"), issued(5));

    // On/off allocations never become counts: BOOL → METERED is refused under a plan
    // allocating it, as BOOL → MAX_COUNT is.
    app.plan(
        "sso-off",
        vec![pb::PlanFeatureInput {
            feature_key: "sso".into(),
            allocation: Some(pb::Allocation {
                kind: Some(pb::allocation::Kind::BoolAllocation(pb::BoolAllocation {
                    value: false,
                })),
            }),
        }],
        false,
    )
    .await;
    let err = features
        .update_feature(pb::UpdateFeatureRequest {
            id: sso.id.clone(),
            allocation_type: Some(pb::AllocationType::Metered.into()),
            metering: Some(monthly("login")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}
