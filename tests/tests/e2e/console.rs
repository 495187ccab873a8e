//! The console (`/console`) against the real stack: the journey in real headless Chromium
//! with axe-core on every page (`tests/console/journey.py`), and its security over plain HTTP —
//! no access without a session, CSRF on every state change, a user session kept to its scope,
//! the security headers, sessions sealed with a shared key across replicas, the console off by
//! configuration.

use std::{path::PathBuf, time::Duration};

use reqwest::{Method, StatusCode, header};
use serde_json::json;
use tenantry_common::testing;
use tenantry_tests::{CLIENT_ID, CLIENT_SECRET, Process, Stack, StackOptions, console};

use crate::support::{create_account, expect};

/// A stack whose webhook endpoints may be on loopback (where nothing listens: deliveries
/// fail, which the endpoint's page shows).
async fn stack_with_loopback_webhooks() -> Stack {
    Stack::start_configured(
        testing::postgres(),
        StackOptions::default(),
        |p: &mut Process| {
            if p.name() == "entitlement-service" {
                p.set_env("TENANTRY_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
            }
        },
    )
    .await
}

/// Where the journey's screenshots go: `<target>/console-shots/`.
fn shots_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .find(|d| {
            d.file_name()
                .is_some_and(|n| n == "debug" || n == "release")
        })
        .and_then(|profile| profile.parent())
        .map_or_else(std::env::temp_dir, |t| t.to_path_buf());
    let dir = target.join("console-shots");
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_journey_in_a_real_browser() {
    let (chromium, chromedriver) = console::browser();
    let stack = stack_with_loopback_webhooks().await;
    let input = json!({
        "base_url": stack.base_url,
        "client_id": CLIENT_ID,
        "secret": CLIENT_SECRET,
        "shots_dir": shots_dir(),
        "axe_js": console::axe_js(),
        "chromium": chromium,
        "chromedriver": chromedriver,
    });
    let seen = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || console::run_journey(&input)),
    )
    .await
    .expect("the journey took over 120 s")
    .expect("the journey's task");
    let seen: serde_json::Value = serde_json::from_str(seen.trim()).expect("the journey's report");
    // Every page it visited was checked by axe and photographed.
    assert!(
        seen["pages_checked"]
            .as_array()
            .is_some_and(|p| p.len() >= 15),
        "{seen}"
    );
    // The secret typed into the sign-in form never reaches the log.
    assert!(
        !stack.gateway.logs().contains(CLIENT_SECRET),
        "the gateway logged the secret"
    );
}

/// A browser without a browser: cookies by hand, redirects not followed.
struct Client {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            base: base.to_owned(),
            cookie: None,
        }
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, format!("tenantry_console={cookie}"));
        }
        if let Some(form) = form {
            request = request
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(serde_urlencoded_pairs(form));
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().expect("ascii cookie");
            let value = set
                .strip_prefix("tenantry_console=")
                .and_then(|rest| rest.split(';').next())
                .expect("the console cookie");
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
        let body = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send(Method::POST, path, Some(form)).await
    }

    /// Signs in through the form; returns the signed-in session's CSRF token.
    async fn sign_in(&mut self, form: &[(&str, &str)]) -> String {
        let page = self.get("/console/sign-in").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let before = csrf(&page.body);
        let mut fields = vec![("csrf", before.as_str())];
        fields.extend_from_slice(form);
        let signed_in = self.post("/console/sign-in", &fields).await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
        // Home: the accounts (an environment session) or the user's own account.
        let home = self.get("/console").await;
        assert_eq!(home.status, StatusCode::SEE_OTHER, "{}", home.body);
        let landing = location(&home).to_owned();
        let page = self.get(&landing).await;
        assert_eq!(page.status, StatusCode::OK, "{landing}: {}", page.body);
        // Every signed-in page carries the session's token in its forms (the sign-out form).
        let token = csrf(&page.body);
        assert_ne!(token, before, "signing in must give a new CSRF token");
        token
    }
}

fn serde_urlencoded_pairs(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The first form's CSRF token in a page.
fn csrf(html: &str) -> String {
    let start = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no CSRF field in {html}"))
        + r#"name="csrf" value=""#.len();
    html[start..]
        .split('"')
        .next()
        .expect("the token")
        .to_owned()
}

fn location(answer: &Answer) -> &str {
    answer
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_refuses_without_a_session_a_token_or_the_scope() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    create_account(&stack, &env, "acme", "Acme").await;
    create_account(&stack, &env, "other", "Other").await;
    let mut anonymous = Client::new(&stack.base_url);

    // No session: pages redirect to the sign-in page, actions are 401.
    let page = anonymous.get("/console/accounts").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&page), "/console/sign-in");
    let action = anonymous
        .post("/console/accounts", &[("tenant_id", "x"), ("csrf", "x")])
        .await;
    assert_eq!(action.status, StatusCode::UNAUTHORIZED, "{}", action.body);

    // The sign-in page: the security headers, and a strict session cookie.
    let page = anonymous.get("/console/sign-in").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    for part in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(page.headers.contains_key(header::REFERRER_POLICY));
    let set_cookie = page.headers[header::SET_COOKIE].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    // No inline script or event handler anywhere: the CSP could not allow them.
    assert!(!page.body.contains("<script>") && !page.body.contains(" onclick="));
    let anonymous_token = csrf(&page.body);

    // The sign-in form itself needs the session's token.
    let signed = [
        ("method", "environment"),
        ("client_id", CLIENT_ID),
        ("secret", CLIENT_SECRET),
    ];
    let no_token = anonymous.post("/console/sign-in", &signed).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN, "{}", no_token.body);
    let mut wrong = vec![("csrf", "forged-token")];
    wrong.extend_from_slice(&signed);
    let wrong_token = anonymous.post("/console/sign-in", &wrong).await;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    // A wrong secret: the API's 401 and message.
    let bad_secret = anonymous
        .post(
            "/console/sign-in",
            &[
                ("csrf", anonymous_token.as_str()),
                ("method", "environment"),
                ("client_id", CLIENT_ID),
                ("secret", "wrong-secret-0123456789-abcdef"),
            ],
        )
        .await;
    assert_eq!(bad_secret.status, StatusCode::UNAUTHORIZED);
    assert!(bad_secret.body.contains("invalid client ID or secret"));

    // Signed in with the environment credential.
    let mut operator = Client::new(&stack.base_url);
    let token = operator.sign_in(&signed).await;
    // The token of the session before signing in is worth nothing after.
    let stale = operator
        .post(
            "/console/accounts",
            &[("csrf", anonymous_token.as_str()), ("tenant_id", "forged")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    let forged = operator
        .post(
            "/console/accounts",
            &[("csrf", "forged"), ("tenant_id", "forged")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let missing = operator
        .post("/console/accounts", &[("tenant_id", "forged")])
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let none = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2/forged",
        Some(&env),
        None,
    )
    .await;
    assert_eq!(none, json!([]), "a refused form must change nothing");
    let created = operator
        .post(
            "/console/accounts",
            &[
                ("csrf", token.as_str()),
                ("tenant_id", "made-here"),
                ("name", "Made"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(location(&created), "/console/accounts/made-here");
    // An upload form (multipart) needs the token too.
    for token_field in ["", "forged"] {
        let boundary = "tenantry-boundary";
        let mut body = String::new();
        if !token_field.is_empty() {
            body.push_str(&format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"csrf\"\r\n\r\n{token_field}\r\n"
            ));
        }
        body.push_str(&format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\
             content-type: text/csv\r\n\r\ntenantId,name\nforged,Forged\n\r\n--{boundary}--\r\n"
        ));
        let refused = operator
            .http
            .post(format!("{}/console/imports", stack.base_url))
            .header(
                header::COOKIE,
                format!(
                    "tenantry_console={}",
                    operator.cookie.clone().unwrap_or_default()
                ),
            )
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    // Bad input: the API's status and message, as a page.
    let invalid = operator
        .post(
            "/console/accounts",
            &[("csrf", token.as_str()), ("tenant_id", "has space")],
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST, "{}", invalid.body);
    assert!(invalid.body.contains("tenantId"), "{}", invalid.body);
    // A tampered cookie is no session.
    let mut tampered = Client::new(&stack.base_url);
    tampered.cookie = operator.cookie.clone().map(|c| format!("{c}A"));
    assert_eq!(
        tampered.get("/console/accounts").await.status,
        StatusCode::SEE_OTHER
    );

    // A user session sees its own account, never another's, and writes nothing.
    let mut user = Client::new(&stack.base_url);
    let user_token = stack.user_token("acme", "alice", &[]);
    let user_csrf = user
        .sign_in(&[("method", "user"), ("token", user_token.as_str())])
        .await;
    assert_eq!(
        user.get("/console/accounts/acme").await.status,
        StatusCode::OK
    );
    let other = user.get("/console/accounts/other").await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.body);
    assert!(!other.body.contains("Other"), "{}", other.body);
    assert_eq!(
        user.get("/console/accounts").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        user.get("/console/plans").await.status,
        StatusCode::FORBIDDEN
    );
    let delete = user
        .post(
            "/console/accounts/other/delete",
            &[("csrf", user_csrf.as_str())],
        )
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    let still = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2/other",
        Some(&env),
        None,
    )
    .await;
    assert_eq!(still["tenantId"], "other");

    // Signing out removes the cookie.
    let out = operator
        .post("/console/sign-out", &[("csrf", token.as_str())])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(operator.cookie.is_none());
    assert_eq!(
        operator.get("/console/accounts").await.status,
        StatusCode::SEE_OTHER
    );
    assert!(!stack.gateway.logs().contains(CLIENT_SECRET));
    assert!(!stack.gateway.logs().contains("wrong-secret-0123456789"));
}

#[tokio::test(flavor = "multi_thread")]
async fn console_sessions_cross_replicas_with_a_shared_key_and_the_console_can_be_off() {
    let stack = Stack::start().await;
    let key = "console-session-key-0123456789-abcdefgh";
    let (mut first, first_url) =
        stack.gateway_variant("gateway-a", &[("TENANTRY_CONSOLE_SESSION_KEY", key)]);
    let (mut second, second_url) =
        stack.gateway_variant("gateway-b", &[("TENANTRY_CONSOLE_SESSION_KEY", key)]);
    let (mut off, off_url) =
        stack.gateway_variant("gateway-off", &[("TENANTRY_CONSOLE_ENABLED", "false")]);
    for p in [&mut first, &mut second, &mut off] {
        p.start();
    }
    for url in [&first_url, &second_url, &off_url] {
        crate::support::eventually(Duration::from_secs(30), "a gateway ready", || async {
            match reqwest::get(format!("{url}/readyz")).await {
                Ok(r) if r.status() == StatusCode::OK => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    let mut a = Client::new(&first_url);
    a.sign_in(&[
        ("method", "environment"),
        ("client_id", CLIENT_ID),
        ("secret", CLIENT_SECRET),
    ])
    .await;
    // The same cookie on the other replica: signed in there too.
    let mut b = Client::new(&second_url);
    b.cookie = a.cookie.clone();
    assert_eq!(b.get("/console/features").await.status, StatusCode::OK);
    // A gateway with its own key (generated into its own data dir) does not accept it.
    let mut elsewhere = Client::new(&stack.base_url);
    elsewhere.cookie = a.cookie.clone();
    assert_eq!(
        elsewhere.get("/console/features").await.status,
        StatusCode::SEE_OTHER
    );

    // Off by configuration: no console, the API unchanged.
    let mut disabled = Client::new(&off_url);
    assert_eq!(
        disabled.get("/console/sign-in").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(disabled.get("/console").await.status, StatusCode::NOT_FOUND);
    assert_eq!(disabled.get("/healthz").await.status, StatusCode::OK);
}

/// The catalogue's edit routes (features, plans, flags with their rule builder, route
/// policies): no session 401, no or a wrong CSRF token 403, a user session 403 whatever it
/// asks, and nothing written by any of them; the builder's refusals are the API's.
#[tokio::test(flavor = "multi_thread")]
async fn the_catalogue_editors_refuse_without_a_session_a_token_or_environment_rights() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    create_account(&stack, &env, "acme", "Acme").await;
    let feature = crate::support::create_feature(&stack, &env, "sso", "bool", &[]).await;
    let plan = crate::support::create_plan(
        &stack,
        &env,
        json!({"name": "Pro", "key": "pro", "featureKeys": ["sso"]}),
    )
    .await;
    let flag = expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/feature-flags/v1",
        Some(&env),
        Some(
            json!({"name": "SSO rollout", "on": false, "offTreatment": "true",
                    "defaultTreatment": "false", "featureKey": "sso"}),
        ),
    )
    .await["id"]
        .as_str()
        .expect("flag id")
        .to_owned();
    let route = expect(
        &stack,
        StatusCode::CREATED,
        Method::POST,
        "/entitlements/resources/routes/v1",
        Some(&env),
        Some(json!({"method": "GET", "path": "/reports/**", "policy": "allow"})),
    )
    .await["id"]
        .as_str()
        .expect("route id")
        .to_owned();

    let writes: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/console/features/{feature}"),
            vec![("key", "sso"), ("name", "Forged"), ("type", "bool")],
        ),
        (
            format!("/console/plans/{plan}"),
            vec![("key", "pro"), ("name", "Forged")],
        ),
        (
            "/console/flags".to_owned(),
            vec![
                ("name", "Forged"),
                ("feature_key", "sso"),
                ("off_treatment", "true"),
                ("default_treatment", "true"),
            ],
        ),
        (
            format!("/console/flags/{flag}"),
            vec![
                ("action", "save"),
                ("name", "Forged"),
                ("off_treatment", "true"),
                ("default_treatment", "true"),
            ],
        ),
        (format!("/console/flags/{flag}/delete"), vec![]),
        (
            "/console/route-policies".to_owned(),
            vec![("method", "*"), ("path", "/forged"), ("policy", "deny")],
        ),
        (
            format!("/console/route-policies/{route}"),
            vec![("method", "*"), ("path", "/forged"), ("policy", "deny")],
        ),
        (format!("/console/route-policies/{route}/delete"), vec![]),
    ];
    let mut anonymous = Client::new(&stack.base_url);
    let mut operator = Client::new(&stack.base_url);
    operator
        .sign_in(&[
            ("method", "environment"),
            ("client_id", CLIENT_ID),
            ("secret", CLIENT_SECRET),
        ])
        .await;
    let mut user = Client::new(&stack.base_url);
    let user_token = stack.user_token("acme", "alice", &[]);
    let user_csrf = user
        .sign_in(&[("method", "user"), ("token", user_token.as_str())])
        .await;
    for (path, form) in &writes {
        let mut with_token = vec![("csrf", "x")];
        with_token.extend_from_slice(form);
        let refused = anonymous.post(path, &with_token).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
        let refused = operator.post(path, form).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{path} without a token"
        );
        let refused = operator.post(path, &with_token).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path} forged token");
        let mut as_user = vec![("csrf", user_csrf.as_str())];
        as_user.extend_from_slice(form);
        let refused = user.post(path, &as_user).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path} as a user");
    }
    for page in [
        format!("/console/features/{feature}"),
        format!("/console/plans/{plan}"),
        "/console/flags".to_owned(),
        format!("/console/flags/{flag}"),
        "/console/route-policies".to_owned(),
        format!("/console/route-policies/{route}"),
    ] {
        assert_eq!(anonymous.get(&page).await.status, StatusCode::SEE_OTHER);
        assert_eq!(
            user.get(&page).await.status,
            StatusCode::FORBIDDEN,
            "{page}"
        );
        assert_eq!(operator.get(&page).await.status, StatusCode::OK, "{page}");
    }
    // Nothing changed.
    let api = |path: String| {
        let stack = &stack;
        let env = env.clone();
        async move { expect(stack, StatusCode::OK, Method::GET, &path, Some(&env), None).await }
    };
    let f = api(format!("/entitlements/resources/features/v1/{feature}")).await;
    assert_eq!(f["name"], "sso", "{f}");
    let fl = api(format!("/entitlements/resources/feature-flags/v1/{flag}")).await;
    assert_eq!(fl["name"], "SSO rollout", "{fl}");
    let flags = api("/entitlements/resources/feature-flags/v1".to_owned()).await;
    assert_eq!(flags["items"].as_array().map(Vec::len), Some(1), "{flags}");
    let r = api(format!("/entitlements/resources/routes/v1/{route}")).await;
    assert_eq!(r["path"], "/reports/**", "{r}");

    // The builder: an added row is the form again, nothing written; a refused operand is the
    // API's 400 naming the condition, shown above the form kept as typed.
    let token = csrf(&operator.get(&format!("/console/flags/{flag}")).await.body);
    let base = [
        ("csrf", token.as_str()),
        ("name", "SSO rollout"),
        ("feature_key", "sso"),
        ("off_treatment", "true"),
        ("default_treatment", "false"),
        ("r0.treatment", "true"),
        ("r0.c0.attribute", "seats"),
        ("r0.c0.op", "greater_than"),
        ("r0.c0.value", "many"),
    ];
    let mut add = base.to_vec();
    add.push(("action", "add-condition:0"));
    let added = operator.post(&format!("/console/flags/{flag}"), &add).await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert!(added.body.contains(r#"name="r0.c1.op""#), "{}", added.body);
    assert!(
        added.body.contains(r#"value="many""#),
        "the typed value is kept"
    );
    let mut save = base.to_vec();
    save.push(("action", "save"));
    let refused = operator
        .post(&format!("/console/flags/{flag}"), &save)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("<code>rules[0].conditions[0]</code>: expected a number"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains(r#"value="many""#), "the form is kept");
    let fl = api(format!("/entitlements/resources/feature-flags/v1/{flag}")).await;
    assert_eq!(fl["rules"], json!([]), "{fl}");
    // Fixed, it saves: the REST API reads the rule the builder made.
    let mut fixed = save.clone();
    fixed.retain(|(k, _)| *k != "r0.c0.value");
    fixed.push(("r0.c0.value", "10"));
    let saved = operator
        .post(&format!("/console/flags/{flag}"), &fixed)
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let fl = api(format!("/entitlements/resources/feature-flags/v1/{flag}")).await;
    assert_eq!(
        fl["rules"][0]["conditions"][0],
        json!({"attribute": "seats", "attributeType": "custom", "negate": false,
               "op": "greater_than", "value": {"number": 10}}),
        "{fl}"
    );
}

/// Grants from the console: to a selection of accounts (one refused account reported on its
/// own, the others granted), to a user, and a grant's dates changed; every such write refused
/// without a session (401), without the CSRF token (403) and for a user session (403).
#[tokio::test(flavor = "multi_thread")]
async fn grants_to_a_selection_a_user_and_new_dates_each_reported_and_guarded() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    for id in ["acme", "initech"] {
        create_account(&stack, &env, id, id).await;
    }
    crate::support::create_feature(&stack, &env, "sso", "bool", &[]).await;
    let plan = crate::support::create_plan(
        &stack,
        &env,
        json!({"name": "Pro", "key": "pro", "featureKeys": ["sso"]}),
    )
    .await;
    let mut operator = Client::new(&stack.base_url);
    let token = operator
        .sign_in(&[
            ("method", "environment"),
            ("client_id", CLIENT_ID),
            ("secret", CLIENT_SECRET),
        ])
        .await;

    // A selection with an account that does not exist: it is refused on its row, the two
    // others are granted.
    let granted = operator
        .post(
            "/console/grants",
            &[
                ("csrf", token.as_str()),
                ("plan_id", plan.as_str()),
                ("tenant_id", "acme"),
                ("tenant_id", "ghost"),
                ("tenant_id", "initech"),
            ],
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    assert!(
        granted
            .body
            .contains("1 of 3 selected accounts were refused"),
        "{}",
        granted.body
    );
    let ghost = granted
        .body
        .split(r#"data-account="ghost""#)
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_default();
    assert!(ghost.contains("refused: 4"), "{ghost}");
    for id in ["acme", "initech"] {
        let held = crate::support::grants(&stack, &env, &format!("tenantIds={id}")).await;
        assert_eq!(held.len(), 1, "{id}: {held:?}");
    }
    // None ticked: the API's kind of refusal, nothing granted.
    let none = operator
        .post(
            "/console/grants",
            &[("csrf", token.as_str()), ("plan_id", plan.as_str())],
        )
        .await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST, "{}", none.body);

    // A user grant, then its dates: extended to 2031, then rescheduled to start in 2030.
    let user_grant = operator
        .post(
            "/console/accounts/acme/grants",
            &[
                ("csrf", token.as_str()),
                ("plan_id", plan.as_str()),
                ("user_id", "alice"),
            ],
        )
        .await;
    assert_eq!(
        user_grant.status,
        StatusCode::SEE_OTHER,
        "{}",
        user_grant.body
    );
    let held = crate::support::grants(&stack, &env, "tenantIds=acme").await;
    let alice = held
        .iter()
        .find(|g| g["userId"] == "alice")
        .unwrap_or_else(|| panic!("alice's grant in {held:?}"));
    let grant = alice["id"].as_str().expect("grant id").to_owned();
    let dates = format!("/console/accounts/acme/grants/{grant}/dates");
    let extended = operator
        .post(
            &dates,
            &[("csrf", token.as_str()), ("expires", "2031-01-31")],
        )
        .await;
    assert_eq!(extended.status, StatusCode::SEE_OTHER, "{}", extended.body);
    let rescheduled = operator
        .post(
            &dates,
            &[("csrf", token.as_str()), ("starts", "2030-06-01")],
        )
        .await;
    assert_eq!(
        rescheduled.status,
        StatusCode::SEE_OTHER,
        "{}",
        rescheduled.body
    );
    let g = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        &format!("/entitlements/resources/entitlements/v2/{grant}"),
        Some(&env),
        None,
    )
    .await;
    assert!(
        g.to_string().contains("2031-01-31") && g.to_string().contains("2030-06-01"),
        "{g}"
    );
    // An expiry before the start: the API's 400; nothing asked: 400.
    let backwards = operator
        .post(
            &dates,
            &[("csrf", token.as_str()), ("expires", "2029-01-01")],
        )
        .await;
    assert_eq!(
        backwards.status,
        StatusCode::BAD_REQUEST,
        "{}",
        backwards.body
    );
    let empty = operator.post(&dates, &[("csrf", token.as_str())]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.body);

    // Guarded.
    let mut anonymous = Client::new(&stack.base_url);
    let mut user = Client::new(&stack.base_url);
    let user_token = stack.user_token("acme", "alice", &[]);
    let user_csrf = user
        .sign_in(&[("method", "user"), ("token", user_token.as_str())])
        .await;
    let writes: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "/console/grants",
            vec![("plan_id", plan.as_str()), ("tenant_id", "initech")],
        ),
        (dates.as_str(), vec![("never", "on")]),
        (
            "/console/accounts/initech/grants",
            vec![("plan_id", plan.as_str()), ("user_id", "alice")],
        ),
    ];
    for (path, form) in &writes {
        let mut forged = vec![("csrf", "forged")];
        forged.extend_from_slice(form);
        assert_eq!(
            anonymous.post(path, &forged).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            operator.post(path, form).await.status,
            StatusCode::FORBIDDEN,
            "{path} without a token"
        );
        assert_eq!(
            operator.post(path, &forged).await.status,
            StatusCode::FORBIDDEN,
            "{path} forged"
        );
        let mut as_user = vec![("csrf", user_csrf.as_str())];
        as_user.extend_from_slice(form);
        assert_eq!(
            user.post(path, &as_user).await.status,
            StatusCode::FORBIDDEN,
            "{path} as a user"
        );
    }
    let after = crate::support::grants(&stack, &env, "tenantIds=initech").await;
    assert_eq!(after.len(), 1, "nothing more granted: {after:?}");
    let g = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        &format!("/entitlements/resources/entitlements/v2/{grant}"),
        Some(&env),
        None,
    )
    .await;
    assert!(g.to_string().contains("2031-01-31"), "still expiring: {g}");
}

/// Members and settings on an account's page, and reactivation: members are the
/// environment's (a user session neither sees nor changes them); settings are read by a user
/// session of the account and changed only with the settings permission, never on an account
/// out of its reach; every write refused without a session or the CSRF token.
#[tokio::test(flavor = "multi_thread")]
async fn members_settings_and_reactivation_follow_the_api_rules() {
    let stack = Stack::start().await;
    let env = stack.env_token().await;
    for id in ["acme", "other", "gone"] {
        create_account(&stack, &env, id, id).await;
    }
    let mut operator = Client::new(&stack.base_url);
    let token = operator
        .sign_in(&[
            ("method", "environment"),
            ("client_id", CLIENT_ID),
            ("secret", CLIENT_SECRET),
        ])
        .await;
    let added = operator
        .post(
            "/console/accounts/acme/members",
            &[("csrf", token.as_str()), ("user_id", "bob")],
        )
        .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let members = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v1/acme/users",
        Some(&env),
        None,
    )
    .await;
    assert!(members.to_string().contains("bob"), "{members}");
    let page = operator.get("/console/accounts/acme").await;
    assert!(page.body.contains(r#"id="members-list""#), "{}", page.body);

    // A user without the settings permission: reads its settings, sees no members, writes
    // nothing.
    let mut reader = Client::new(&stack.base_url);
    let reader_token = stack.user_token("acme", "alice", &[]);
    let reader_csrf = reader
        .sign_in(&[("method", "user"), ("token", reader_token.as_str())])
        .await;
    let page = reader.get("/console/accounts/acme").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"id="settings-list""#), "{}", page.body);
    assert!(!page.body.contains("members-list") && !page.body.contains("bob"));
    for (path, form) in [
        ("/console/accounts/acme/settings", vec![("timezone", "UTC")]),
        (
            "/console/accounts/acme/members",
            vec![("user_id", "mallory")],
        ),
        ("/console/accounts/acme/members/bob/remove", vec![]),
    ] {
        let mut with = vec![("csrf", reader_csrf.as_str())];
        with.extend_from_slice(&form);
        assert_eq!(
            reader.post(path, &with).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        let mut anonymous = Client::new(&stack.base_url);
        let mut forged = vec![("csrf", "forged")];
        forged.extend_from_slice(&form);
        assert_eq!(
            anonymous.post(path, &forged).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            operator.post(path, &form).await.status,
            StatusCode::FORBIDDEN,
            "{path} without a token"
        );
    }
    // A user with the permission changes its own account's settings, never another's.
    let mut writer = Client::new(&stack.base_url);
    let writer_token = stack.user_token("acme", "carol", &["fe.account-settings.write.account"]);
    let writer_csrf = writer
        .sign_in(&[("method", "user"), ("token", writer_token.as_str())])
        .await;
    let page = writer.get("/console/accounts/acme").await;
    assert!(page.body.contains(r#"id="save-settings""#), "{}", page.body);
    let saved = writer
        .post(
            "/console/accounts/acme/settings",
            &[
                ("csrf", writer_csrf.as_str()),
                ("timezone", "Europe/Berlin"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let elsewhere = writer
        .post(
            "/console/accounts/other/settings",
            &[("csrf", writer_csrf.as_str()), ("timezone", "Asia/Tokyo")],
        )
        .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::FORBIDDEN,
        "{}",
        elsewhere.body
    );
    let settings = |tenant: &'static str| {
        let stack = &stack;
        let env = env.clone();
        async move {
            let (status, _, body) = stack
                .call_with(
                    Method::GET,
                    "/tenants/resources/account-settings/v1",
                    Some(&env),
                    &[("frontegg-tenant-id", tenant)],
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    assert_eq!(settings("acme").await["timezone"], "Europe/Berlin");
    assert_ne!(settings("other").await["timezone"], "Asia/Tokyo");
    let members = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v1/acme/users",
        Some(&env),
        None,
    )
    .await;
    assert!(
        members.to_string().contains("bob") && !members.to_string().contains("mallory"),
        "{members}"
    );

    // Reactivation: a deleted account comes back through the create form, under its ID.
    let deleted = operator
        .post("/console/accounts/gone/delete", &[("csrf", token.as_str())])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert_eq!(
        operator.get("/console/accounts/gone").await.status,
        StatusCode::NOT_FOUND
    );
    let back = operator
        .post(
            "/console/accounts",
            &[
                ("csrf", token.as_str()),
                ("tenant_id", "gone"),
                ("name", "Back"),
            ],
        )
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.body);
    assert_eq!(location(&back), "/console/accounts/gone");
    let account = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/tenants/resources/tenants/v2/gone",
        Some(&env),
        None,
    )
    .await;
    assert!(account.to_string().contains("Back"), "{account}");
}

/// The secret between `id="webhook-secret">` and its closing tag.
fn shown_secret(html: &str) -> String {
    html.split(r#"id="webhook-secret">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no secret shown in {html}"))
        .to_owned()
}

/// Webhooks and the audit trail: a secret shown once (in the create and rotate answers, never
/// on the endpoint's page or through the API), edits and deletion as the API makes them, the
/// audit trail filtered and paged by its cursor; every write refused without a session or the
/// CSRF token, and every page and write refused to a user session.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_show_a_secret_once_and_the_audit_trail_pages_and_both_are_guarded() {
    let stack = stack_with_loopback_webhooks().await;
    let env = stack.env_token().await;
    create_account(&stack, &env, "acme", "Acme").await;
    let mut operator = Client::new(&stack.base_url);
    let token = operator
        .sign_in(&[
            ("method", "environment"),
            ("client_id", CLIENT_ID),
            ("secret", CLIENT_SECRET),
        ])
        .await;
    let created = operator
        .post(
            "/console/webhooks",
            &[
                ("csrf", token.as_str()),
                ("url", "http://127.0.0.1:9/hooks"),
                ("event_types", "tenantry.grant.created.v1"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let secret = shown_secret(&created.body);
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created.headers[header::CACHE_CONTROL], "no-store");
    let listed = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/entitlements/api/v1/webhooks",
        Some(&env),
        None,
    )
    .await;
    let id = listed["items"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{listed}"))
        .to_owned();
    let page = operator.get(&format!("/console/webhooks/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        !page.body.contains(&secret),
        "the secret is shown once only"
    );
    let rotated = operator
        .post(
            &format!("/console/webhooks/{id}/rotate-secret"),
            &[("csrf", token.as_str())],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new_secret = shown_secret(&rotated.body);
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let edited = operator
        .post(
            &format!("/console/webhooks/{id}"),
            &[
                ("csrf", token.as_str()),
                ("url", "http://127.0.0.1:9/other"),
                ("description", "billing"),
            ],
        )
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.body);
    let endpoint = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        &format!("/entitlements/api/v1/webhooks/{id}"),
        Some(&env),
        None,
    )
    .await;
    assert_eq!(endpoint["url"], "http://127.0.0.1:9/other", "{endpoint}");
    assert_eq!(endpoint["enabled"], false, "{endpoint}");
    // A bad URL: the API's 400 and message.
    let bad = operator
        .post(
            &format!("/console/webhooks/{id}"),
            &[("csrf", token.as_str()), ("url", "ftp://x")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body.contains("scheme must be http or https"),
        "{}",
        bad.body
    );

    // The audit trail: the webhook's writes, one per page, the cursor leading to the next.
    let first = operator
        .get("/console/audit?resourceType=webhook&limit=1&actor=")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(first.body.contains("webhook.update"), "{}", first.body);
    let next = first
        .body
        .split(r#"<a href=""#)
        .find(|part| part.contains(r#"id="audit-next""#))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no next page link in {}", first.body))
        .replace("&#38;", "&");
    assert!(
        next.contains("resourceType=webhook") && next.contains("limit=1"),
        "{next}"
    );
    let second = operator.get(&next).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(
        second.body.contains("webhook.rotate_secret"),
        "{}",
        second.body
    );
    assert!(!second.body.contains("webhook.update"), "{}", second.body);
    assert!(!second.body.contains(&new_secret) && !first.body.contains(&new_secret));

    // Guarded.
    let mut user = Client::new(&stack.base_url);
    let user_token = stack.user_token("acme", "alice", &[]);
    let user_csrf = user
        .sign_in(&[("method", "user"), ("token", user_token.as_str())])
        .await;
    for page in [
        "/console/webhooks".to_owned(),
        format!("/console/webhooks/{id}"),
        "/console/audit".to_owned(),
    ] {
        assert_eq!(
            user.get(&page).await.status,
            StatusCode::FORBIDDEN,
            "{page}"
        );
        assert_eq!(
            Client::new(&stack.base_url).get(&page).await.status,
            StatusCode::SEE_OTHER
        );
    }
    let writes = [
        (
            "/console/webhooks".to_owned(),
            vec![("url", "http://127.0.0.1:9/x")],
        ),
        (
            format!("/console/webhooks/{id}"),
            vec![("url", "http://127.0.0.1:9/x")],
        ),
        (format!("/console/webhooks/{id}/rotate-secret"), vec![]),
        (format!("/console/webhooks/{id}/delete"), vec![]),
        (
            format!(
                "/console/webhooks/{id}/deliveries/0190a0b0-0000-7000-8000-000000000000/redeliver"
            ),
            vec![],
        ),
    ];
    for (path, form) in &writes {
        let mut forged = vec![("csrf", "forged")];
        forged.extend_from_slice(form);
        assert_eq!(
            Client::new(&stack.base_url)
                .post(path, &forged)
                .await
                .status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            operator.post(path, form).await.status,
            StatusCode::FORBIDDEN,
            "{path} without a token"
        );
        let mut as_user = vec![("csrf", user_csrf.as_str())];
        as_user.extend_from_slice(form);
        let refused = user.post(path, &as_user).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path} as a user");
        assert!(!refused.body.contains("whsec_"), "{path}");
    }
    let still = expect(
        &stack,
        StatusCode::OK,
        Method::GET,
        "/entitlements/api/v1/webhooks",
        Some(&env),
        None,
    )
    .await;
    assert_eq!(still["items"].as_array().map(Vec::len), Some(1), "{still}");
    assert_eq!(
        still["items"][0]["url"], "http://127.0.0.1:9/other",
        "{still}"
    );

    let deleted = operator
        .post(
            &format!("/console/webhooks/{id}/delete"),
            &[("csrf", token.as_str())],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    expect(
        &stack,
        StatusCode::NOT_FOUND,
        Method::GET,
        &format!("/entitlements/api/v1/webhooks/{id}"),
        Some(&env),
        None,
    )
    .await;
}
