//! Storage that never acknowledges what it did not commit: the entitlement service on SQLite
//! in a size-limited directory, filled while it serves.

use std::time::{Duration, Instant};

use tenantry_common::testing::SizeLimitedDir;
use tenantry_proto::entitlement::v1 as pb;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

async fn serving(app: &App) -> ServingStatus {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

async fn create(app: &App, key: &str) -> Result<(), tonic::Status> {
    app.features
        .clone()
        .create_feature(pb::CreateFeatureRequest {
            key: key.into(),
            name: key.into(),
            // Big enough that each commit needs new pages in the WAL.
            description: "x".repeat(4_000),
            allocation_type: pb::AllocationType::Bool as i32,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_full_disk_refuses_catalog_writes_with_storage_full_and_loses_none() {
    let dir = SizeLimitedDir::mount(8 << 20)
        .expect("a size-limited tmpfs for the disk-full test (run the tests as root, as CI does)");
    let app = spawn_sqlite_app_in(dir.path()).await;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let key = format!("before-{i}");
        create(&app, &key)
            .await
            .expect("write before the disk fills");
        acknowledged.push(key);
    }
    assert_eq!(serving(&app).await, ServingStatus::Serving);

    dir.fill();
    let (mut refused, mut wrong) = (0, Vec::new());
    for i in 0..300 {
        let key = format!("full-{i}");
        match create(&app, &key).await {
            Ok(()) => acknowledged.push(key),
            Err(status) => {
                refused += 1;
                let typed = (status.code(), details(&status).reason);
                if typed != (Code::ResourceExhausted, "STORAGE_FULL".to_owned())
                    && typed != (Code::Unavailable, "STORAGE_FAILED".to_owned())
                {
                    wrong.push(format!("{key}: {status:?}"));
                }
            }
        }
        if refused >= 20 {
            break;
        }
    }
    assert!(refused > 0, "a full disk refused no write");
    assert!(
        wrong.is_empty(),
        "refusals that do not say the storage is full: {wrong:#?}"
    );
    assert_eq!(serving(&app).await, ServingStatus::NotServing);

    dir.free();
    let deadline = Instant::now() + Duration::from_secs(20);
    while serving(&app).await != ServingStatus::Serving {
        assert!(
            Instant::now() < deadline,
            "the service stayed NOT_SERVING after the disk was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        let key = format!("after-{i}");
        create(&app, &key)
            .await
            .expect("write after the disk is freed");
        acknowledged.push(key);
    }
    drop(app);

    // A fresh process on the same files holds every acknowledged feature.
    let app = spawn_sqlite_app_in(dir.path()).await;
    let mut lost = Vec::new();
    for key in &acknowledged {
        let found = app
            .features
            .clone()
            .get_feature(pb::GetFeatureRequest {
                selector: Some(pb::get_feature_request::Selector::Key(key.clone())),
            })
            .await;
        if let Err(status) = found {
            lost.push(format!("{key}: {:?}", status.code()));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged features are gone after a restart: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
}
