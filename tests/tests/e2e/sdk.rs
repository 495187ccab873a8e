//! The Rust SDK (`tenantry-client`) against the real services: the service token, deadlines,
//! and retries that wait out a restart for reads and keyed writes but never resend a write
//! without an idempotency key.

use std::time::Duration;

use tenantry_client::{
    CallFailure, ClientConfig, RetryPolicy, TenantApi,
    pb::tenant::{CreateAccountRequest, GetAccountRequest, NewAccount},
};
use tenantry_tests::{SERVICE_TOKEN, Stack};
use tonic::Code;

fn create(tenant_id: &str, key: Option<&str>) -> CreateAccountRequest {
    CreateAccountRequest {
        account: Some(NewAccount {
            tenant_id: Some(tenant_id.to_owned()),
            name: tenant_id.to_owned(),
            ..NewAccount::default()
        }),
        idempotency_key: key.map(str::to_owned),
    }
}

fn get(tenant_id: &str) -> GetAccountRequest {
    GetAccountRequest {
        tenant_id: tenant_id.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_retries_reads_and_keyed_writes_across_a_restart_but_never_an_unkeyed_write() {
    let mut stack = Stack::start().await;
    let url = stack
        .gateway
        .env("TENANTRY_TENANT_SERVICE_URL")
        .expect("tenant URL")
        .to_owned();
    // Patient enough to outlast a restart: ~60 s of attempts at most 250 ms apart.
    let config = ClientConfig::default()
        .with_service_token(SERVICE_TOKEN)
        .with_deadline(Duration::from_secs(60))
        .with_retry(RetryPolicy {
            max_attempts: 1000,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(250),
        });
    let accounts = TenantApi::connect(&url, &config)
        .expect("client")
        .accounts();

    let created = accounts
        .create_account(create("sdk-first", Some("sdk-key-1")))
        .await
        .expect("create while up");
    assert_eq!(
        created.account.expect("account").tenant_id,
        "sdk-first",
        "the created account comes back"
    );

    // A wrong token is the caller's configuration: refused at once, not retried for a minute.
    let stranger = TenantApi::connect(&url, &config.clone().with_service_token("not-the-token"))
        .expect("client")
        .accounts();
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        stranger.get_account(get("sdk-first")),
    )
    .await
    .expect("a refusal is not retried until the deadline")
    .expect_err("wrong token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    stack.tenant.kill();

    // Without an idempotency key a write is sent once: the outage comes back at once, although
    // the policy would wait a minute for a read.
    let unkeyed = tokio::time::timeout(
        Duration::from_secs(20),
        accounts.create_account(create("sdk-unkeyed", None)),
    )
    .await
    .expect("an unkeyed write is not retried")
    .expect_err("the service is down");
    assert_eq!(
        CallFailure::of(&unkeyed),
        CallFailure::Outage,
        "{unkeyed:?}"
    );

    // A short deadline bounds the retries of a read.
    let short = tokio::time::timeout(
        Duration::from_secs(20),
        accounts
            .with_deadline(Duration::from_millis(300))
            .get_account(get("sdk-first")),
    )
    .await
    .expect("the deadline bounds the retries")
    .expect_err("the service is down");
    assert_eq!(CallFailure::of(&short), CallFailure::Outage, "{short:?}");

    // A read and a keyed write sent while the service is down are retried until it is back.
    let (read, keyed) = {
        let (a, b) = (accounts.clone(), accounts.clone());
        (
            tokio::spawn(async move { a.get_account(get("sdk-first")).await }),
            tokio::spawn(async move {
                b.create_account(create("sdk-keyed", Some("sdk-key-2")))
                    .await
            }),
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !read.is_finished() && !keyed.is_finished(),
        "safe calls wait for the service"
    );
    stack.tenant.start();
    let read = read
        .await
        .expect("join")
        .expect("read retried until the restart");
    assert_eq!(read.account.expect("account").tenant_id, "sdk-first");
    keyed
        .await
        .expect("join")
        .expect("keyed create retried until the restart");

    // The keyed create was applied once: its key replays it, and the account is there.
    let replayed = accounts
        .create_account(create("sdk-keyed", Some("sdk-key-2")))
        .await
        .expect("replay");
    assert!(!replayed.reactivated, "{replayed:?}");
    accounts
        .get_account(get("sdk-keyed"))
        .await
        .expect("the keyed account exists");
    // The unkeyed write never reached the service.
    let missing = accounts
        .get_account(get("sdk-unkeyed"))
        .await
        .expect_err("never created");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}
