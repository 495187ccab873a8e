//! Grants: the seed's batch and the single forms, revocation, list filters, all-or-nothing batches
//! and idempotency.

use super::*;

#[tokio::test]
async fn grants_seed_batch_single_forms_revocation_and_list_filters() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    s.account("globex", None).await;
    s.feature(json!({"name": "Reports", "key": "reports"}))
        .await;
    let pro = s
        .plan(json!({"name": "Pro", "key": "pro", "featureKeys": ["reports"]}))
        .await;
    let basic = s.plan(json!({"name": "Basic", "key": "basic"})).await;

    // The seed's batch create: `{"entitlementIds": [...]}` in request order.
    let r = s
        .post(
            BATCH,
            &json!({"entitlements": [
                {"planId": id(&pro), "tenantId": "acme", "userId": "u-1",
                 "expirationDate": "2099-01-01T12:00:00"},
                {"planId": id(&basic), "tenantId": "globex"},
                {"planId": id(&pro), "tenantId": "globex", "userId": "u-2"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(keys(&r.body), set(&["entitlementIds"]));
    revision(&r);
    let ids: Vec<String> = r.body["entitlementIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let first = s.get(&format!("{GRANTS}/{}", ids[0])).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["planId"], pro["id"]);
    assert_eq!(first.body["planKey"], "pro");
    assert_eq!(first.body["tenantId"], "acme");
    assert_eq!(first.body["userId"], "u-1");
    assert_eq!(
        first.body["expirationDate"], "2099-01-01T12:00:00.000Z",
        "a zone-less date is UTC"
    );
    assert_eq!(first.body["status"], "active");
    assert_eq!(first.body["source"], "batch");
    assert_eq!(first.body["grantedBy"], "environment:vendor");
    assert!(
        first.body.get("plan").is_none(),
        "no relations unless asked"
    );
    let second = s.get(&format!("{GRANTS}/{}", ids[1])).await;
    assert_eq!(second.body["planKey"], "basic");
    assert_eq!(second.body["tenantId"], "globex");
    assert_eq!(second.body["userId"], Value::Null);
    assert_eq!(second.body["expirationDate"], Value::Null);
    let third = s.get(&format!("{GRANTS}/{}", ids[2])).await;
    assert_eq!(third.body["userId"], "u-2");

    // The seed's PATCH changes expiries.
    let r = s
        .patch(
            BATCH,
            &json!({"entitlements": [
                {"id": ids[0], "expirationDate": "2098-06-01T00:00:00Z"},
                {"id": ids[1], "expirationDate": "2097-01-01T00:00:00+02:00"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"entitlementIds": [ids[0], ids[1]]}));
    let r = s.get(&format!("{GRANTS}/{}", ids[0])).await;
    assert_eq!(r.body["expirationDate"], "2098-06-01T00:00:00.000Z");
    let r = s.get(&format!("{GRANTS}/{}", ids[1])).await;
    assert_eq!(r.body["expirationDate"], "2096-12-31T22:00:00.000Z");

    // Single create (plan by key), with external ID, metadata, a start and an expiry.
    let r = s
        .post(
            GRANTS,
            &json!({"planKey": "pro", "tenantId": "acme", "externalId": "order-7",
                    "metadata": {"order": 7}, "startsAt": "2020-01-01T00:00:00Z",
                    "expirationDate": "2099-01-01"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    revision(&r);
    let single = r.body;
    assert_eq!(single["planId"], pro["id"]);
    assert_eq!(single["externalId"], "order-7");
    assert_eq!(single["metadata"], json!({"order": 7}));
    assert_eq!(single["startsAt"], "2020-01-01T00:00:00.000Z");
    assert_eq!(single["expirationDate"], "2099-01-01T00:00:00.000Z");
    assert_eq!(single["source"], "api");
    assert_eq!(single["status"], "active");
    let r = s
        .get(&format!("{GRANTS}/{}?withRelations=true", id(&single)))
        .await;
    assert_eq!(r.body["plan"]["key"], "pro");
    assert_eq!(r.body["plan"]["features"][0]["key"], "reports");

    // Single refusals.
    let r = s
        .post(
            GRANTS,
            &json!({"planId": uuid::Uuid::now_v7(), "tenantId": "acme"}),
        )
        .await;
    assert!(r.status == 400 || r.status == 404, "{:?}", r.body);
    assert_eq!(r.body["statusCode"], json!(r.status));
    assert_error_shape(
        &s.post(GRANTS, &json!({"planKey": "pro", "tenantId": "nobody"}))
            .await,
        400,
    );
    assert_error_shape(
        &s.post(
            GRANTS,
            &json!({"planKey": "pro", "planId": id(&pro), "tenantId": "acme"}),
        )
        .await,
        400,
    );
    let r = s
        .post(
            GRANTS,
            &json!({"planKey": "pro", "tenantId": "acme",
                    "startsAt": "2030-01-01T00:00:00Z", "expirationDate": "2029-01-01T00:00:00Z"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "expirationDate");
    let r = s
        .post(
            GRANTS,
            &json!({"planKey": "pro", "tenantId": "acme", "expirationDate": "next week"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "expirationDate");
    // An external ID is unique per account.
    assert_error_shape(
        &s.post(
            GRANTS,
            &json!({"planKey": "basic", "tenantId": "acme", "externalId": "order-7"}),
        )
        .await,
        400,
    );

    // Single PATCH: expiry set, then cleared with null.
    let path = format!("{GRANTS}/{}", id(&single));
    let r = s
        .patch(&path, &json!({"expirationDate": "2031-02-03T04:05:06Z"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["expirationDate"], "2031-02-03T04:05:06.000Z");
    assert_eq!(r.body["externalId"], "order-7", "unchanged fields are kept");
    let r = s.patch(&path, &json!({"expirationDate": null})).await;
    assert_eq!(r.body["expirationDate"], Value::Null, "{:?}", r.body);
    // An expiry before a start given with it is refused (a past expiry alone ends the grant).
    let r = s
        .patch(
            &path,
            &json!({"startsAt": "2010-02-01T00:00:00Z", "expirationDate": "2010-01-01T00:00:00Z"}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(r.body["fieldViolations"][0]["field"], "expirationDate");
    // So is a future expiry before a scheduled grant's start: it is no way to end the grant
    // (a past one is), and the grant is left as it was, never active before its start.
    s.account("initech", None).await;
    let scheduled = s
        .post(
            GRANTS,
            &json!({"planKey": "basic", "tenantId": "initech", "startsAt": "2040-01-02T00:00:00Z"}),
        )
        .await;
    assert_eq!(scheduled.status, 201, "{:?}", scheduled.body);
    let scheduled_path = format!("{GRANTS}/{}", id(&scheduled.body));
    for expiry in ["2040-01-02T00:00:00Z", "2039-06-01T00:00:00Z"] {
        let r = s
            .patch(&scheduled_path, &json!({"expirationDate": expiry}))
            .await;
        assert_error_shape(&r, 400);
        assert_eq!(r.body["fieldViolations"][0]["field"], "expirationDate");
    }
    let r = s.get(&scheduled_path).await;
    assert_eq!(r.body["startsAt"], "2040-01-02T00:00:00.000Z");
    assert_eq!(r.body["expirationDate"], Value::Null);
    assert_eq!(r.body["status"], "scheduled");
    // Out of the way of the list filters below.
    assert_eq!(s.delete(&scheduled_path).await.status, 200);
    assert_error_shape(&s.patch(&path, &json!({"planId": "x"})).await, 400);
    assert_error_shape(
        &s.patch(
            &format!("{GRANTS}/{}", uuid::Uuid::now_v7()),
            &json!({"expirationDate": null}),
        )
        .await,
        404,
    );

    // Revoke keeps the grant with who, when and why; twice is refused.
    let r = s
        .post(&format!("{path}/revoke"), &json!({"reason": "refund"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body["status"], "revoked");
    assert_eq!(r.body["revokeReason"], "refund");
    assert_eq!(r.body["revokedBy"], "environment:vendor");
    assert!(r.body["revokedAt"].is_string());
    assert_error_shape(&s.post(&format!("{path}/revoke"), &json!({})).await, 412);
    assert_error_shape(
        &s.post(
            &format!("{GRANTS}/{}/revoke", uuid::Uuid::now_v7()),
            &json!({}),
        )
        .await,
        404,
    );
    // A revoked grant cannot be changed: 412, like revoking it twice.
    let r = s
        .patch(&path, &json!({"expirationDate": "2040-01-01T00:00:00Z"}))
        .await;
    assert_error_shape(&r, 412);

    // Lists with Frontegg's filters and ours.
    let list = |q: &str| {
        let q = q.to_owned();
        let s = &s;
        async move {
            let r = s.get(&format!("{GRANTS}?{q}")).await;
            let mut got: Vec<String> = items(&r).iter().map(id).collect();
            got.sort();
            got
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list("tenantIds=acme").await,
        sorted(vec![ids[0].clone(), id(&single)])
    );
    assert_eq!(
        list("userIds=u-1,u-2").await,
        sorted(vec![ids[0].clone(), ids[2].clone()])
    );
    assert_eq!(
        list("assignLevel=TENANT").await,
        sorted(vec![ids[1].clone(), id(&single)])
    );
    assert_eq!(
        list("assignLevel=USER&tenantIds=globex").await,
        vec![ids[2].clone()]
    );
    assert_eq!(
        list(&format!("planId={}", id(&basic))).await,
        vec![ids[1].clone()]
    );
    assert_eq!(
        list(&format!("planIds={},{}", id(&basic), id(&pro)))
            .await
            .len(),
        4
    );
    assert_eq!(list("statuses=revoked").await, vec![id(&single)]);
    assert_eq!(list("sources=api").await, vec![id(&single)]);
    assert_eq!(
        list("externalId=order-7&tenantIds=acme").await,
        vec![id(&single)]
    );
    let r = s
        .get(&format!(
            "{GRANTS}?orderBy=expirationDate&sortType=ASC&statuses=active"
        ))
        .await;
    // Never-expiring grants last in ascending order.
    assert_eq!(
        items(&r).iter().map(id).collect::<Vec<_>>(),
        [ids[1].clone(), ids[0].clone(), ids[2].clone()]
    );
    let r = s.get(&format!("{GRANTS}?limit=2&withRelations=true")).await;
    assert_eq!(items(&r).len(), 2);
    assert_eq!(r.body["hasNext"], true);
    assert!(items(&r).iter().all(|g| g["plan"]["id"] == g["planId"]));
    assert_error_shape(&s.get(&format!("{GRANTS}?assignLevel=GROUP")).await, 400);
    assert_error_shape(&s.get(&format!("{GRANTS}?statuses=paused")).await, 400);
    assert_error_shape(&s.get(&format!("{GRANTS}?orderBy=tenantId")).await, 400);

    // Single delete removes the row.
    let r = s.delete(&path).await;
    assert_eq!(r.body, json!({"deleted": true}), "{}", r.status);
    revision(&r);
    assert_error_shape(&s.get(&path).await, 404);
    assert_error_shape(&s.delete(&path).await, 404);

    // The seed's DELETE `?ids=`.
    let r = s
        .delete(&format!("{BATCH}?ids={},{}", ids[0], ids[1]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    revision(&r);
    assert_eq!(r.body, json!({"deletedCount": 2}));
    assert_error_shape(&s.get(&format!("{GRANTS}/{}", ids[0])).await, 404);
    // Repeated keys work too; an empty list is refused.
    let r = s
        .delete(&format!("{BATCH}?ids={}&ids={}", ids[2], ids[2]))
        .await;
    assert!(
        (400..500).contains(&r.status),
        "a listed-twice ID: {:?}",
        r.body
    );
    let r = s.delete(&format!("{BATCH}?ids={}", ids[2])).await;
    assert_eq!(r.body, json!({"deletedCount": 1}), "{}", r.status);
    assert_error_shape(&s.delete(&format!("{BATCH}?ids=")).await, 400);
    assert!(list("").await.is_empty());
}

#[tokio::test]
async fn grant_batches_are_all_or_nothing_and_idempotent() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    let pro = s.plan(json!({"name": "Pro", "key": "pro"})).await;
    let good = json!({"planId": id(&pro), "tenantId": "acme"});

    // Several bad items, each listed by index; nothing written.
    let r = s
        .post(
            BATCH,
            &json!({"entitlements": [
                good,
                {"planId": uuid::Uuid::now_v7(), "tenantId": "acme"},
                {"planId": id(&pro), "tenantId": "nobody"},
                {"planId": id(&pro), "tenantId": "acme",
                 "startsAt": "2030-01-01T00:00:00Z", "expirationDate": "2029-12-31T00:00:00Z"},
                good
            ]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        item_errors(&r),
        [
            (1, "planId".to_owned()),
            (2, "tenantId".to_owned()),
            (3, "expirationDate".to_owned())
        ]
    );
    assert_eq!(r.body["reason"], "INVALID_BATCH_ITEMS");
    assert_eq!(r.body["itemErrors"][2]["reason"], "INVALID_EXPIRATION_DATE");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("[3] expirationDate"),
        "{:?}",
        r.body
    );
    let listed = s.get(GRANTS).await;
    assert!(items(&listed).is_empty(), "nothing was written");

    // Malformed dates are found before the services are asked, all of them by index.
    let r = s
        .post(
            BATCH,
            &json!({"entitlements": [
                good,
                {"planId": id(&pro), "tenantId": "acme", "expirationDate": "31/12/2030"},
                good,
                {"planId": id(&pro), "tenantId": "acme", "startsAt": "soon"},
                {"tenantId": "acme"}
            ]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        item_errors(&r),
        [
            (1, "expirationDate".to_owned()),
            (3, "startsAt".to_owned()),
            (4, "planId".to_owned())
        ]
    );
    assert_eq!(
        r.body["reason"], "INVALID_BATCH_ITEMS",
        "the service's shape"
    );
    assert_eq!(r.body["itemErrors"][0]["reason"], "INVALID_EXPIRATION_DATE");
    assert_eq!(
        r.body["fieldViolations"][0]["field"],
        "entitlements[1].expirationDate"
    );
    assert!(
        items(&s.get(GRANTS).await).is_empty(),
        "nothing was written"
    );

    // An empty batch and a body not in the seed's shape.
    assert_error_shape(&s.post(BATCH, &json!({"entitlements": []})).await, 400);
    assert_error_shape(&s.post(BATCH, &json!([good])).await, 400);

    // Idempotency-Key: a retry answers the same IDs without writing twice.
    let body = json!({"entitlements": [good, {"planId": id(&pro), "tenantId": "acme",
                                              "userId": "u-1"}]});
    let first = s
        .post_with(BATCH, &[("idempotency-key", "k-1")], &body)
        .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let retry = s
        .post_with(BATCH, &[("idempotency-key", "k-1")], &body)
        .await;
    assert_eq!(retry.status, 201, "{:?}", retry.body);
    assert_eq!(retry.body, first.body);
    assert_eq!(items(&s.get(GRANTS).await).len(), 2);
    // The same key with another body is refused, and writes nothing.
    let other = json!({"entitlements": [good]});
    let r = s
        .post_with(BATCH, &[("idempotency-key", "k-1")], &other)
        .await;
    assert_error_shape(&r, 409);
    assert_eq!(r.body["reason"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(items(&s.get(GRANTS).await).len(), 2);
    // A key that is not a visible string.
    let r = s.post_with(BATCH, &[("idempotency-key", "")], &other).await;
    assert_error_shape(&r, 400);
    // Without a key the same body writes again.
    let again = s.post(BATCH, &body).await;
    assert_eq!(again.status, 201);
    assert_ne!(again.body, first.body);
    assert_eq!(items(&s.get(GRANTS).await).len(), 4);

    // Single create honours the key too.
    let one = json!({"planKey": "pro", "tenantId": "acme", "userId": "u-9"});
    let a = s
        .post_with(GRANTS, &[("idempotency-key", "k-2")], &one)
        .await;
    let b = s
        .post_with(GRANTS, &[("idempotency-key", "k-2")], &one)
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(b.status, 201, "{:?}", b.body);
    assert_eq!(a.body["id"], b.body["id"]);
    assert_eq!(items(&s.get(GRANTS).await).len(), 5);

    // Batch PATCH and DELETE are all-or-nothing as well.
    let ids: Vec<String> = first.body["entitlementIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let unknown = uuid::Uuid::now_v7().to_string();
    let r = s
        .patch(
            BATCH,
            &json!({"entitlements": [
                {"id": ids[0], "expirationDate": "2040-01-01T00:00:00Z"},
                {"id": unknown, "expirationDate": "2040-01-01T00:00:00Z"},
                {"id": ids[1], "startsAt": "2041-01-01T00:00:00Z",
                 "expirationDate": "2040-01-01T00:00:00Z"}
            ]}),
        )
        .await;
    assert!(r.status == 400 || r.status == 404, "{:?}", r.body);
    assert_eq!(
        item_errors(&r).iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [1, 2]
    );
    let unchanged = s.get(&format!("{GRANTS}/{}", ids[0])).await;
    assert_eq!(unchanged.body["expirationDate"], Value::Null);
    let r = s
        .patch(
            BATCH,
            &json!({"entitlements": [{"id": ids[0], "expirationDate": "tomorrow"},
                                     {"id": ids[1], "expirationDate": "later"}]}),
        )
        .await;
    assert_error_shape(&r, 400);
    assert_eq!(
        item_errors(&r),
        [
            (0, "expirationDate".to_owned()),
            (1, "expirationDate".to_owned())
        ]
    );
    let r = s.delete(&format!("{BATCH}?ids={},{unknown}", ids[0])).await;
    assert!(r.status == 400 || r.status == 404, "{:?}", r.body);
    assert_eq!(item_errors(&r), [(1, "id".to_owned())]);
    assert_eq!(s.get(&format!("{GRANTS}/{}", ids[0])).await.status, 200);
}

/// A batch with every item refused: a 400 listing every item error. They travel in the gRPC
/// trailers, which overflowed HTTP/2's default 16 KiB header limit from ~200 items on
/// (the test's body limit is 16 KiB too): the hop broke and the caller got 503 for a request
/// that was simply wrong.
#[tokio::test]
async fn a_batch_of_refused_items_is_a_400_listing_every_item() {
    let s = spawn_stack().await;
    let unknown: Vec<String> = (0..250).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let patches: Vec<Value> = unknown.iter().map(|id| json!({ "id": id })).collect();
    let r = s.patch(BATCH, &json!({ "entitlements": patches })).await;
    assert_error_shape(&r, 400);
    let items = item_errors(&r);
    assert_eq!(items.len(), 250, "{:?}", r.body["message"]);
    assert!(
        items
            .iter()
            .enumerate()
            .all(|(i, (index, field))| *index == i as u64 && field == "id")
    );
}
