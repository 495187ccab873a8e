//! Webhook endpoints through REST: the secret shown once, filters and URLs validated with the
//! field named, private addresses refused unless allowed, unknown and malformed IDs, the
//! delivery log's paging bounds, environment tokens only.

use super::*;

const HOOKS: &str = "/entitlements/api/v1/webhooks";

#[tokio::test]
async fn webhook_endpoints_are_managed_with_an_environment_token_and_validated() {
    let s = spawn_stack().await;

    // Private networks not allowed (the default): refused at creation, whatever the spelling.
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "https://192.168.1.10/hook",
        "http://0.0.0.0/hook",
    ] {
        let r = s.post(HOOKS, &json!({"url": url})).await;
        assert_error_shape(&r, 400);
        assert!(r.body.to_string().contains("url"), "{url}: {:?}", r.body);
    }
    for (body, field) in [
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"url": "http://user:pw@93.184.216.34/"}), "url"),
        (
            json!({"url": format!("https://93.184.216.34/{}", "a".repeat(2048))}),
            "url",
        ),
        (
            json!({"url": "https://93.184.216.34/", "eventTypes": ["tenantry.nope.v1"]}),
            "eventTypes",
        ),
        (
            json!({"url": "https://93.184.216.34/", "accountIds": ["has space"]}),
            "accountIds",
        ),
        (
            json!({"url": "https://93.184.216.34/", "description": "x".repeat(501)}),
            "description",
        ),
    ] {
        let r = s.post(HOOKS, &body).await;
        assert_error_shape(&r, 400);
        assert!(r.body.to_string().contains(field), "{body}: {:?}", r.body);
    }

    // A public literal address is taken; the secret is shown once.
    let r = s
        .post(
            HOOKS,
            &json!({"url": "https://93.184.216.34/hook", "eventTypes": ["tenantry.grant.created.v1"],
                    "accountIds": ["acme"], "enabled": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(r.body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(r.body["enabled"], false);
    let read = s.get(&format!("{HOOKS}/{id}")).await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    assert!(read.body.get("secret").is_none(), "{:?}", read.body);
    assert_eq!(read.body["eventTypes"][0], "tenantry.grant.created.v1");

    let r = s
        .patch(
            &format!("{HOOKS}/{id}"),
            &json!({"eventTypes": [], "description": "all"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["eventTypes"], json!([]));
    assert_eq!(r.body["accountIds"][0], "acme");
    let r = s
        .patch(
            &format!("{HOOKS}/{id}"),
            &json!({"url": "http://10.1.2.3/"}),
        )
        .await;
    assert_error_shape(&r, 400);

    let rotated = s
        .post(&format!("{HOOKS}/{id}/rotate-secret"), &json!({}))
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    let secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    // The audit entry says when the secret was replaced, and never the secret.
    let entries = s
        .get("/audit/api/v1/events?action=webhook.rotate_secret")
        .await;
    assert_eq!(entries.status, 200, "{:?}", entries.body);
    let entry = &entries.body["items"][0];
    let rotated_at = entry["after"]["rotatedAt"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(rotated_at).is_ok(),
        "the rotation time, not redacted: {entry}"
    );
    assert!(!entries.body.to_string().contains(&secret), "{entry}");

    let page = s.get(&format!("{HOOKS}/{id}/deliveries?limit=100")).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(page.body["items"], json!([]));
    for query in ["limit=0", "limit=101", "cursor=nope"] {
        let r = s.get(&format!("{HOOKS}/{id}/deliveries?{query}")).await;
        assert_error_shape(&r, 400);
    }

    // Unknown and malformed IDs.
    let unknown = "0190f0e0-0000-7000-8000-000000000000";
    for path in [
        format!("{HOOKS}/{unknown}"),
        format!("{HOOKS}/{unknown}/deliveries"),
    ] {
        let r = s.get(&path).await;
        assert_error_shape(&r, 404);
        assert_eq!(r.body["reason"], "WEBHOOK_NOT_FOUND", "{:?}", r.body);
    }
    let r = s
        .post(
            &format!("{HOOKS}/{id}/deliveries/{unknown}/redeliver"),
            &json!({}),
        )
        .await;
    assert_error_shape(&r, 404);
    assert_error_shape(&s.get(&format!("{HOOKS}/not-a-uuid")).await, 400);

    // Environment tokens only.
    let user = user_token(&user_claims("acme", "u1", &["fe.secure.*"]));
    assert_eq!(s.app.get(HOOKS, Some(&user)).await.status, 403);
    assert_eq!(s.app.get(HOOKS, None).await.status, 401);

    let listed = s.get(HOOKS).await;
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "{:?}",
        listed.body
    );
    assert_eq!(s.delete(&format!("{HOOKS}/{id}")).await.status, 200);
    assert_error_shape(&s.delete(&format!("{HOOKS}/{id}")).await, 404);
}

#[tokio::test]
async fn private_addresses_are_taken_when_the_operator_allows_them() {
    let s = spawn_stack_with(|c| c.webhook_allow_private_networks = true).await;
    let r = s
        .post(HOOKS, &json!({"url": "http://127.0.0.1:9/hook"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}
