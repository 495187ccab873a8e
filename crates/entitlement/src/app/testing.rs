//! Use-case tests run against the real store on a fresh SQLite database (no mocks), with a
//! clock that moves only when told to and the tenant directory answered in-process.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tempfile::TempDir;
use tenantry_common::db::{self, DbSettings};
use uuid::Uuid;

use super::Engine;
use super::checks::{CheckQuery, CheckTarget};
use super::plans::{NewPlan, PlanView};
use super::ports::TenantDirectory;
use super::tenant_sync::{AccountChange, FeedEvent};
use crate::clock::ManualClock;
use crate::domain::catalog::{FeatureDoc, Stored};
use crate::domain::{
    AllocationType, Decision, DomainError, Feature, Grant, GrantInput, MergePolicy, PlanFeature,
    Result, Treatment,
};
use crate::storage::Store;

/// The accounts the tenant service would call live, held in this process. While `down`, it
/// answers as the gRPC directory does when the tenant service cannot be reached.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    live: Mutex<HashSet<String>>,
    down: Mutex<bool>,
}

impl Directory {
    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }
}

#[async_trait]
impl TenantDirectory for Directory {
    async fn live(&self, ids: &[String]) -> Result<HashSet<String>> {
        if *self.down.lock().unwrap() {
            return Err(DomainError::Unavailable(
                "tenant service unavailable: accounts cannot be checked; retry".into(),
            ));
        }
        let live = self.live.lock().unwrap();
        Ok(ids
            .iter()
            .filter(|id| live.contains(*id))
            .cloned()
            .collect())
    }
}

/// An engine over a migrated SQLite file in a temporary directory.
pub(crate) struct TestEngine {
    pub engine: Engine<Store>,
    pub clock: ManualClock,
    pub directory: Arc<Directory>,
    feed_sequence: AtomicU64,
    _dir: Option<TempDir>,
}

/// Where every test's clock starts.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

pub(crate) async fn engine() -> TestEngine {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("entitlement.db").display()
    );
    let mut engine = engine_on(&url, ManualClock::new(t0())).await;
    engine._dir = Some(dir);
    engine
}

/// An engine over the (migrated here) database at `url`, with `clock`: several over one
/// database are replicas.
pub(crate) async fn engine_on(url: &str, clock: ManualClock) -> TestEngine {
    let conn = db::connect(&DbSettings {
        url: url.to_owned(),
        schema: "entitlement".into(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
        application_name: "entitlement-app-test".into(),
    })
    .await
    .expect("connect to the database");
    db::migrate::<crate::migration::Migrator>(&conn)
        .await
        .expect("migrate");
    let directory = Arc::new(Directory::default());
    let engine = Engine::start(
        Store::new(conn, "entitlement"),
        directory.clone(),
        Arc::new(clock.clone()),
        super::RevisionWait::new(Duration::from_millis(200), 4),
    )
    .await
    .expect("build the index");
    TestEngine {
        engine,
        clock,
        directory,
        feed_sequence: AtomicU64::new(0),
        _dir: None,
    }
}

impl TestEngine {
    /// An account the tenant service holds, delivered to the engine as its feed would.
    pub async fn account(&self, id: &str, parent: Option<&str>) {
        self.directory.live.lock().unwrap().insert(id.to_owned());
        let sequence = self.feed_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        self.engine
            .apply_feed_events(&[FeedEvent {
                sequence,
                change: AccountChange::Created {
                    tenant_id: id.to_owned(),
                    parent_id: parent.map(str::to_owned),
                    occurred: None,
                },
                notice: None,
            }])
            .await
            .expect("apply the account's creation");
    }

    /// Accounts the tenant service holds (each with its parent, parents first), delivered to
    /// the engine in one batch of its feed.
    pub async fn accounts(&self, accounts: &[(&str, Option<&str>)]) {
        let mut events = Vec::with_capacity(accounts.len());
        for &(id, parent) in accounts {
            self.directory.live.lock().unwrap().insert(id.to_owned());
            events.push(FeedEvent {
                sequence: self.feed_sequence.fetch_add(1, Ordering::Relaxed) + 1,
                change: AccountChange::Created {
                    tenant_id: id.to_owned(),
                    parent_id: parent.map(str::to_owned),
                    occurred: None,
                },
                notice: None,
            });
        }
        self.engine
            .apply_feed_events(&events)
            .await
            .expect("apply the accounts' creation");
    }

    /// The account deleted at the tenant service, delivered to the engine as its feed would.
    pub async fn delete_account(&self, id: &str) {
        self.directory.live.lock().unwrap().remove(id);
        self.feed(AccountChange::Deleted {
            tenant_id: id.to_owned(),
        })
        .await;
    }

    /// A deleted account reactivated under its ID (the feed's `REACTIVATED`: a live account).
    pub async fn reactivate_account(&self, id: &str, parent: Option<&str>) {
        self.directory.live.lock().unwrap().insert(id.to_owned());
        self.feed(AccountChange::Live {
            tenant_id: id.to_owned(),
            parent_id: parent.map(str::to_owned),
        })
        .await;
    }

    async fn feed(&self, change: AccountChange) {
        let sequence = self.feed_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        self.engine
            .apply_feed_events(&[FeedEvent {
                sequence,
                change,
                notice: None,
            }])
            .await
            .expect("apply the account change");
    }

    /// A `bool` feature (or, with `max_count`, a counted one) with these permissions.
    pub async fn feature(&self, key: &str, ty: AllocationType, permissions: &[&str]) -> Feature {
        self.engine
            .create_feature(feature_doc(key, ty, permissions), None)
            .await
            .expect("create feature")
            .value
            .value
            .feature
    }

    /// A plan of these features (bare keys: the full allocation).
    pub async fn plan(&self, key: &str, features: Vec<PlanFeature>) -> PlanView {
        self.engine
            .create_plan(new_plan(key, features), None)
            .await
            .expect("create plan")
            .value
    }

    /// A grant of `plan` (a key or id) to an account, or with `user` to one of its users.
    pub async fn grant(&self, plan: &str, tenant: &str, user: Option<&str>) -> Grant {
        let input = GrantInput {
            plan_id: plan.into(),
            tenant_id: tenant.into(),
            user_id: user.map(str::to_owned),
            ..GrantInput::default()
        };
        self.engine
            .create_grant(input, Some("tester"), None)
            .await
            .expect("create grant")
            .0
            .grants
            .remove(0)
            .grant
    }

    /// Whether the account (or its user) is entitled to the feature, now.
    pub async fn check(&self, tenant: &str, user: Option<&str>, feature: &str) -> Decision {
        self.engine
            .check(&feature_query(tenant, user, feature), 0)
            .await
            .expect("check")
            .value
    }

    /// An enabled webhook endpoint for every event (never delivered to in tests): writes
    /// record their events in the outbox only while one is.
    pub async fn webhook_endpoint(&self) {
        use crate::app::ports::{Transactional, WebhookStore};
        let store = self.engine.store();
        let txn = store.begin().await.unwrap();
        let endpoint = crate::domain::webhook::Endpoint {
            id: Uuid::now_v7(),
            url: "http://127.0.0.1:9/hook".into(),
            event_types: vec![],
            account_ids: vec![],
            enabled: true,
            description: String::new(),
            disabled_reason: None,
            failing_since: None,
            created_at: t0(),
            updated_at: t0(),
        };
        store
            .insert_endpoint(&txn, &endpoint, "whsec_c2VjcmV0")
            .await
            .unwrap();
        store.commit_plain(txn).await.unwrap();
    }
}

pub(crate) fn feature_doc(key: &str, ty: AllocationType, permissions: &[&str]) -> FeatureDoc {
    FeatureDoc {
        feature: Feature {
            id: Uuid::now_v7(),
            key: key.into(),
            name: format!("Feature {key}"),
            description: None,
            metadata: serde_json::Value::Null,
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            allocation_type: ty,
            merge_policy: MergePolicy::Max,
            metering: None,
        },
        permission_ids: Default::default(),
    }
}

pub(crate) fn new_plan(key: &str, features: Vec<PlanFeature>) -> NewPlan {
    NewPlan {
        key: Some(key.into()),
        name: format!("Plan {key}"),
        description: None,
        metadata: serde_json::Value::Null,
        features,
        default_time_limitation_days: None,
        assign_on_signup: false,
        rules: vec![],
        default_treatment: Treatment::False,
        inherit_to_sub_accounts: false,
    }
}

pub(crate) fn feature_query(tenant: &str, user: Option<&str>, feature: &str) -> CheckQuery {
    CheckQuery {
        tenant_id: tenant.into(),
        user_id: user.map(str::to_owned),
        permissions: vec![],
        attributes: None,
        target: CheckTarget::Feature(feature.into()),
        at: None,
        requested: None,
    }
}

/// The field of an invalid-argument error (panics on any other error).
#[track_caller]
pub(crate) fn invalid_field(err: &DomainError) -> &str {
    let DomainError::InvalidArgument { field, .. } = err else {
        panic!("expected INVALID_ARGUMENT, got {err:?}");
    };
    field
}

/// A stored feature's key.
pub(crate) fn key_of(feature: &Stored<FeatureDoc>) -> &str {
    &feature.value.feature.key
}
