//! `GET /audit/api/v1/events`: both services' audit entries as one list, newest first, through
//! the real gateway and services: the environment client and the request ID are named, filters
//! hold, cursor pages cover every entry once, bad input is 400 naming the field, and a user
//! token (a tenant) cannot read the log.

use serde_json::{Value, json};

use super::spawn_stack;
use crate::helpers::{CLIENT_ID, assert_error_shape, user_claims, user_token};

const EVENTS: &str = "/audit/api/v1/events";

#[tokio::test]
async fn the_audit_log_merges_both_services_filters_and_pages() {
    let s = spawn_stack().await;
    let env_actor = format!("environment:{CLIENT_ID}");
    // Alternate writes between the services, each with its own request ID.
    let auth = format!("Bearer {}", s.env);
    for i in 0..3 {
        let request_id = format!("req-account-{i}");
        let body = json!({"tenantId": format!("t{i}"), "name": "T"}).to_string();
        let r = s
            .app
            .request(
                "POST",
                "/tenants/resources/tenants/v1",
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                    ("x-request-id", &request_id),
                ],
                Some(body.into_bytes()),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        s.feature(json!({"key": format!("f{i}"), "name": "F"}))
            .await;
    }

    let page = s.get(&format!("{EVENTS}?limit=100")).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{items:?}");
    assert_eq!(page.body["nextCursor"], Value::Null);
    let services: Vec<&str> = items
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert_eq!(services.iter().filter(|s| **s == "tenant").count(), 3);
    assert!(items.iter().all(|e| e["actor"] == json!(env_actor)));
    let account = items
        .iter()
        .find(|e| e["resourceId"] == "t1")
        .expect("the account's entry");
    assert_eq!(account["action"], "account.create");
    assert_eq!(account["requestId"], "req-account-1");
    assert_eq!(account["before"], Value::Null);
    assert_eq!(account["after"]["name"], "T");
    // Every entry of a gateway request names the request, the gateway's own ID when the caller
    // sent none.
    assert!(
        items.iter().all(|e| e["requestId"].is_string()),
        "{items:?}"
    );

    // Filters.
    let features = s.get(&format!("{EVENTS}?resourceType=feature")).await;
    let keys: Vec<&Value> = features.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["after"]["key"])
        .collect();
    assert_eq!(keys, [&json!("f2"), &json!("f1"), &json!("f0")]);
    let created = s
        .get(&format!("{EVENTS}?action=account.create&resourceId=t0"))
        .await;
    assert_eq!(created.body["items"].as_array().unwrap().len(), 1);
    let nobody = s.get(&format!("{EVENTS}?actor=user:nobody")).await;
    assert_eq!(nobody.body["items"], json!([]));

    // Pages of two cover every entry once, in the same order as one page.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("{EVENTS}?limit=2&cursor={c}"),
            None => format!("{EVENTS}?limit=2"),
        };
        let r = s.get(&path).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        paged.extend(r.body["items"].as_array().unwrap().iter().cloned());
        cursor = r.body["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "paging ends");
    assert_eq!(&paged, items);

    // Bad input is 400 naming the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=garbage", "cursor"),
        ("from=yesterday", "from"),
        ("from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", "to"),
    ] {
        let r = s.get(&format!("{EVENTS}?{query}")).await;
        assert_error_shape(&r, 400);
        assert!(r.body.to_string().contains(field), "{query}: {:?}", r.body);
    }
}

#[tokio::test]
async fn a_user_token_write_names_the_user_and_a_tenant_cannot_read_the_log() {
    let s = spawn_stack().await;
    s.account("acme", None).await;
    let token = user_token(&user_claims(
        "acme",
        "ann",
        &["fe.account-settings.write.account"],
    ));
    let auth = format!("Bearer {token}");
    let r = s
        .app
        .request(
            "PUT",
            "/tenants/resources/account-settings/v1",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            Some(json!({"timezone": "Europe/Paris"}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let page = s
        .get(&format!("{EVENTS}?action=account.settings.update"))
        .await;
    let [entry] = page.body["items"].as_array().unwrap().as_slice() else {
        panic!("one settings entry: {:?}", page.body);
    };
    assert_eq!(entry["actor"], "user:ann");
    assert_eq!(entry["before"]["settings"]["timezone"], Value::Null);
    assert_eq!(entry["after"]["settings"]["timezone"], "Europe/Paris");

    let denied = s.app.get(EVENTS, Some(&token)).await;
    assert_error_shape(&denied, 403);
}
