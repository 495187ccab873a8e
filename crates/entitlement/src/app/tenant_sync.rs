//! The tenant service's accounts, mirrored: feed events and snapshots become the local
//! hierarchy copy, signup grants for new accounts and revocations for deleted ones.
//!
//! Exactly-once: each batch is applied in ONE transaction that first locks the stored cursor,
//! skips events at or below it, applies the effects, stores the new cursor and commits. A
//! crash before the commit leaves neither effects nor cursor (the batch is replayed); after
//! it, both (the batch is skipped on replay). Replicas following the same feed serialize on
//! the cursor, so two of them never apply the same event twice.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ports::{HeldAccount, Storage};
use super::{Engine, SYSTEM_PRINCIPAL};
use crate::domain::catalog::Catalog;
use crate::domain::webhook::{self, AccountNotice, AccountNoticeKind, FeedNotice};
use crate::domain::{Grant, GrantSource, IndexChange, Plan, Result, revoke_grant};

/// What one feed event does to the local copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// A new account (`occurred`: when; unknown: now), with the signup plans of that time.
    Created {
        tenant_id: String,
        parent_id: Option<String>,
        occurred: Option<DateTime<Utc>>,
    },
    /// A live account (reactivated, updated, moved under `parent_id`).
    Live {
        tenant_id: String,
        parent_id: Option<String>,
    },
    /// A deleted account: its grants are revoked.
    Deleted { tenant_id: String },
    /// Nothing the entitlement service keeps (memberships, a migration's end).
    Ignored,
}

/// One event of the tenant change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    pub sequence: u64,
    pub change: AccountChange,
    /// What the event says happened, for webhooks (`None`: nothing they announce).
    pub notice: Option<FeedNotice>,
}

/// A live account in a tenant snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotAccount {
    pub tenant_id: String,
    pub parent_id: Option<String>,
    /// When it was created (unknown: now).
    pub created_at: Option<DateTime<Utc>>,
}

/// The effects of feed events and snapshots, gathered in one transaction.
struct Effects<'a, S: Storage> {
    engine: &'a Engine<S>,
    txn: &'a S::Txn,
    now: DateTime<Utc>,
    catalog: Option<Catalog>,
    changes: Vec<IndexChange>,
    /// Accounts deleted by this batch (the index still holds them until it commits).
    deleted: HashSet<String>,
}

impl<S: Storage> Effects<'_, S> {
    /// Records a live account under `parent`. One the index does not hold (deleted, here or
    /// before) gets back what it had: its grants (those its deletion revoked stay revoked)
    /// and its meters as stored — the period's usage, credits and holds — as a restart would
    /// load them.
    async fn upsert(&mut self, tenant: &str, parent: Option<&str>) -> Result<()> {
        let unknown = !self.engine.index.current().contains_tenant(tenant);
        self.record(tenant, parent, unknown).await
    }

    /// Records a live account; with `restore` (or when this batch deleted it) what it had.
    async fn record(&mut self, tenant: &str, parent: Option<&str>, restore: bool) -> Result<()> {
        self.engine
            .store
            .upsert_account(self.txn, tenant, parent, false, self.now)
            .await?;
        self.changes.push(IndexChange::UpsertTenant {
            id: tenant.to_owned(),
            parent: parent.map(str::to_owned),
        });
        if restore || self.deleted.remove(tenant) {
            let (grants, meters) = self.engine.store.account_state(self.txn, tenant).await?;
            self.changes
                .extend(grants.into_iter().map(IndexChange::UpsertGrant));
            self.changes
                .extend(meters.into_iter().map(|(user_id, feature_id, state)| {
                    IndexChange::UpsertMeter {
                        tenant_id: tenant.to_owned(),
                        user_id,
                        feature_id,
                        state: Box::new(state),
                    }
                }));
        }
        Ok(())
    }

    /// A new account: recorded, with the signup plans that existed when it was created.
    async fn create(
        &mut self,
        tenant: &str,
        parent: Option<&str>,
        occurred: DateTime<Utc>,
    ) -> Result<()> {
        // A reactivation arrives as a live account, so a creation restores nothing unless
        // this batch deleted the account (new accounts cost no reads here).
        self.record(tenant, parent, false).await?;
        if self.catalog.is_none() {
            self.catalog = Some(self.engine.store.catalog_in(self.txn).await?);
        }
        let now = self.now;
        let grants: Vec<Grant> = self
            .catalog
            .iter()
            .flat_map(|c| c.plans.iter())
            // Only plans that existed when the account was created: replaying an old
            // feed must not hand today's signup plans to last year's accounts.
            .filter(|p| p.value.assign_on_signup && p.created_at <= occurred)
            .map(|p| signup_grant(&p.value, tenant, now))
            .collect();
        self.engine.store.insert_grants(self.txn, &grants).await?;
        self.changes
            .extend(grants.into_iter().map(IndexChange::UpsertGrant));
        Ok(())
    }

    /// A deleted account: its grants are revoked and it leaves the index.
    async fn delete(&mut self, tenant: &str) -> Result<()> {
        let store = &self.engine.store;
        store
            .upsert_account(self.txn, tenant, None, true, self.now)
            .await?;
        for grant in store.unrevoked_grants(self.txn, Some(tenant), None).await? {
            let grant = revoke_grant(
                &grant,
                Some(SYSTEM_PRINCIPAL),
                Some("tenant_deleted"),
                self.now,
            )?;
            store.update_grant(self.txn, &grant).await?;
            self.changes.push(IndexChange::UpsertGrant(grant));
        }
        // Last, so the revocations above do not re-create the node.
        self.changes.push(IndexChange::RemoveTenant {
            id: tenant.to_owned(),
        });
        self.deleted.insert(tenant.to_owned());
        Ok(())
    }
}

/// Whether the feed's `said` already announces what the snapshot's difference `derived` would:
/// the same account's creation (or reactivation), deletion, or parent change.
fn says(said: &FeedNotice, derived: &AccountNotice) -> bool {
    let FeedNotice::Account(said) = said else {
        return false;
    };
    if said.tenant_id != derived.tenant_id {
        return false;
    }
    use AccountNoticeKind as K;
    match (&derived.kind, &said.kind) {
        (K::Created | K::Reactivated, K::Created | K::Reactivated)
        | (K::Deleted, K::Deleted)
        | (K::HierarchyChanged { .. }, K::HierarchyChanged { .. }) => true,
        (
            K::Created
            | K::Reactivated
            | K::Deleted
            | K::HierarchyChanged { .. }
            | K::Updated
            | K::SettingsChanged
            | K::MembershipChanged { .. },
            _,
        ) => false,
    }
}

/// An account event a resynchronisation derives from the snapshot: no changed fields (the
/// snapshot does not say), no time (it happened somewhere in the gap).
fn resync_notice(tenant: &str, parent: Option<&str>, kind: AccountNoticeKind) -> AccountNotice {
    AccountNotice {
        tenant_id: tenant.to_owned(),
        parent_id: parent.map(str::to_owned),
        kind,
        changed_fields: Vec::new(),
        occurred_at: None,
    }
}

fn signup_grant(plan: &Plan, tenant: &str, now: DateTime<Utc>) -> Grant {
    Grant {
        id: uuid::Uuid::now_v7(),
        plan_id: plan.id,
        tenant_id: tenant.to_owned(),
        user_id: None,
        starts_at: now,
        expires_at: plan
            .default_time_limitation_days
            .map(|d| now + chrono::Duration::days(i64::from(d))),
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        source: GrantSource::Signup,
        external_id: None,
        granted_by: Some(SYSTEM_PRINCIPAL.to_owned()),
        metadata: Value::Null,
        created_at: now,
        updated_at: now,
    }
}

impl<S: Storage> Engine<S> {
    /// The feed cursor as committed: the last event applied.
    pub async fn feed_cursor(&self) -> Result<u64> {
        self.store.cursor().await
    }

    /// Applies a batch of feed events exactly once (see the module documentation).
    pub async fn apply_feed_events(&self, events: &[FeedEvent]) -> Result<()> {
        let txn = self.store.begin().await?;
        let cursor = self.store.lock_cursor(&txn).await?;
        let now = self.now();
        let mut last = cursor;
        let mut announced = Vec::new();
        let mut effects = Effects {
            engine: self,
            txn: &txn,
            now,
            catalog: None,
            changes: Vec::new(),
            deleted: HashSet::new(),
        };
        for event in events.iter().filter(|e| e.sequence > cursor) {
            last = last.max(event.sequence);
            if let Some(notice) = &event.notice {
                announced.push(webhook::feed_event(event.sequence, notice, now));
            }
            match &event.change {
                AccountChange::Created {
                    tenant_id,
                    parent_id,
                    occurred,
                } => {
                    effects
                        .create(tenant_id, parent_id.as_deref(), occurred.unwrap_or(now))
                        .await?;
                }
                AccountChange::Live {
                    tenant_id,
                    parent_id,
                } => effects.upsert(tenant_id, parent_id.as_deref()).await?,
                AccountChange::Deleted { tenant_id } => effects.delete(tenant_id).await?,
                AccountChange::Ignored => {}
            }
        }
        let changes = effects.changes;
        if last == cursor {
            // Everything was applied before (a replay): nothing to record.
            return Ok(());
        }
        let now = self.now();
        self.store.set_cursor(&txn, last, now).await?;
        self.commit_changes(txn, changes, announced, now).await
    }

    /// Makes the stored accounts those of a tenant snapshot as of `sequence`: accounts it
    /// lacks are created (with their signup plans), deleted ones it holds are reactivated,
    /// parents are corrected, and live accounts it does not hold are deleted. Returns how many
    /// accounts changed. A cursor already at or past `sequence` means newer state is held:
    /// nothing to do.
    ///
    /// Webhooks lose nothing the tenant service still holds: `gap` is the feed's events
    /// between the cursor and the snapshot that were not pruned yet (their effects are in the
    /// snapshot), announced as the feed would have announced them; what the snapshot shows
    /// changed that none of them says (their pruned predecessors) is announced from the
    /// difference (see `resync_notice`).
    pub async fn apply_tenant_snapshot(
        &self,
        sequence: u64,
        accounts: &[SnapshotAccount],
        gap: &[FeedEvent],
    ) -> Result<usize> {
        let txn = self.store.begin().await?;
        let cursor = self.store.lock_cursor(&txn).await?;
        if cursor >= sequence {
            return Ok(0);
        }
        let mut held: HashMap<String, (Option<String>, bool)> = self
            .store
            .accounts(&txn)
            .await?
            .into_iter()
            .map(|a: HeldAccount| (a.tenant_id, (a.parent_id, a.deleted)))
            .collect();
        let mut effects = Effects {
            engine: self,
            txn: &txn,
            now: self.now(),
            catalog: None,
            changes: Vec::new(),
            deleted: HashSet::new(),
        };
        // What the snapshot shows happened in the gap, announced as account events: the
        // feed's own events for it are gone (pruned) or cannot be read, and a change nobody
        // hears of is lost to webhook receivers for good. Only what the snapshot can show —
        // an account's existence and its parent — is announced; see `resync_notice`.
        let mut notices = Vec::new();
        for account in accounts {
            let tenant = account.tenant_id.as_str();
            let parent = account.parent_id.as_deref();
            match held.remove(tenant) {
                None => {
                    let created = account.created_at.unwrap_or(effects.now);
                    effects.create(tenant, parent, created).await?;
                    notices.push(resync_notice(tenant, parent, AccountNoticeKind::Created));
                }
                Some((_, true)) => {
                    effects.upsert(tenant, parent).await?;
                    notices.push(resync_notice(
                        tenant,
                        parent,
                        AccountNoticeKind::Reactivated,
                    ));
                }
                Some((held_parent, false)) => {
                    if held_parent.as_deref() != parent {
                        effects.upsert(tenant, parent).await?;
                        notices.push(resync_notice(
                            tenant,
                            parent,
                            AccountNoticeKind::HierarchyChanged {
                                old_parent: held_parent,
                                new_parent: parent.map(str::to_owned),
                            },
                        ));
                    }
                }
            }
        }
        // Live here, absent from the snapshot: deleted while this follower was not looking.
        let mut gone: Vec<String> = held
            .into_iter()
            .filter(|(_, (_, deleted))| !deleted)
            .map(|(tenant, _)| tenant)
            .collect();
        gone.sort();
        for tenant in gone {
            effects.delete(&tenant).await?;
            notices.push(resync_notice(&tenant, None, AccountNoticeKind::Deleted));
        }
        let changed = notices.len();
        let changes = effects.changes;
        let now = self.now();
        self.store.set_cursor(&txn, sequence, now).await?;
        let gap: Vec<(u64, &FeedNotice)> = gap
            .iter()
            .filter(|e| e.sequence > cursor && e.sequence <= sequence)
            .filter_map(|e| e.notice.as_ref().map(|n| (e.sequence, n)))
            .collect();
        notices.retain(|notice| !gap.iter().any(|(_, said)| says(said, notice)));
        let mut announced: Vec<_> = gap
            .iter()
            .map(|(seq, notice)| webhook::feed_event(*seq, notice, now))
            .collect();
        announced.extend(webhook::resync_events(sequence, &notices, now));
        self.commit_changes(txn, changes, announced, now).await?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sea_orm::EntityTrait;
    use serde_json::Value;

    use super::*;
    use crate::app::testing::{engine, t0};
    use crate::domain::webhook::types;
    use crate::storage::entities::webhook_outbox;

    /// Every event in the outbox, in the order recorded.
    async fn outbox(engine: &Engine<crate::storage::Store>) -> Vec<Value> {
        let mut rows = webhook_outbox::Entity::find()
            .all(engine.store().connection())
            .await
            .unwrap();
        rows.sort_by_key(|r| r.position);
        rows.iter()
            .flat_map(|row| serde_json::from_str::<Vec<Value>>(&row.events).unwrap())
            .map(|event| serde_json::from_str(event["body"].as_str().unwrap()).unwrap())
            .collect()
    }

    /// Every account event in the outbox: (type, subject) → body.
    async fn account_events(
        engine: &Engine<crate::storage::Store>,
    ) -> BTreeMap<(String, String), Value> {
        let rows = webhook_outbox::Entity::find()
            .all(engine.store().connection())
            .await
            .unwrap();
        let mut seen = BTreeMap::new();
        let mut ids = std::collections::BTreeSet::new();
        for row in rows {
            let events: Vec<Value> = serde_json::from_str(&row.events).unwrap();
            for event in events {
                let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
                let kind = body["type"].as_str().unwrap().to_owned();
                if !kind.starts_with("tenantry.account.") {
                    continue;
                }
                assert!(
                    ids.insert(body["id"].as_str().unwrap().to_owned()),
                    "{body}"
                );
                let subject = body["subject"].as_str().unwrap().to_owned();
                assert!(seen.insert((kind, subject), body).is_none());
            }
        }
        seen
    }

    /// A follower that fell behind the feed and resynchronised from the snapshot announces what
    /// the snapshot shows happened in the gap; it announced nothing of it before.
    #[tokio::test]
    async fn a_resynchronisation_announces_the_account_changes_of_the_gap() {
        let t = engine().await;
        t.webhook_endpoint().await;
        for id in ["stays", "moves", "doomed", "parent", "returns"] {
            t.account(id, None).await;
        }
        t.engine
            .apply_feed_events(&[FeedEvent {
                sequence: 10,
                change: AccountChange::Deleted {
                    tenant_id: "returns".into(),
                },
                notice: None,
            }])
            .await
            .unwrap();
        let before = account_events(&t.engine).await;

        // The gap: `doomed` deleted, `newcomer` created, `moves` put under `parent`, `returns`
        // reactivated; `stays` unchanged.
        let live = |id: &str, parent: Option<&str>| SnapshotAccount {
            tenant_id: id.into(),
            parent_id: parent.map(str::to_owned),
            created_at: Some(t0()),
        };
        let snapshot = [
            live("moves", Some("parent")),
            live("newcomer", None),
            live("parent", None),
            live("returns", None),
            live("stays", None),
        ];
        let changed = t
            .engine
            .apply_tenant_snapshot(100, &snapshot, &[])
            .await
            .unwrap();
        assert_eq!(changed, 4);
        let mut after = account_events(&t.engine).await;
        after.retain(|key, _| !before.contains_key(key));
        let keys: Vec<(&str, &str)> = after
            .keys()
            .map(|(kind, subject)| (kind.as_str(), subject.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (types::ACCOUNT_CREATED, "newcomer"),
                (types::ACCOUNT_DELETED, "doomed"),
                (types::HIERARCHY_CHANGED, "moves"),
                (types::ACCOUNT_REACTIVATED, "returns"),
            ]
        );
        for body in after.values() {
            assert_eq!(body["tenantrysequence"], 100, "{body}");
            assert_eq!(body["tenantryresync"], true, "{body}");
            assert!(
                body["id"].as_str().unwrap().starts_with("evt_s100_"),
                "{body}"
            );
        }
        let moved = &after[&(types::HIERARCHY_CHANGED.to_owned(), "moves".to_owned())];
        assert_eq!(moved["data"]["oldParentTenantId"], Value::Null);
        assert_eq!(moved["data"]["parentTenantId"], "parent");

        // Applied once: the same snapshot again announces nothing more.
        t.engine
            .apply_tenant_snapshot(100, &snapshot, &[])
            .await
            .unwrap();
        assert_eq!(account_events(&t.engine).await.len(), before.len() + 4);
    }

    /// The feed's events still retained between the cursor and the snapshot are announced as
    /// the feed would have (their own IDs, changed fields, times), migrations' ends included;
    /// the difference adds only what none of them says.
    #[tokio::test]
    async fn a_resynchronisation_announces_the_retained_events_of_the_gap_as_they_were() {
        let t = engine().await;
        t.webhook_endpoint().await;
        for id in ["stays", "doomed"] {
            t.account(id, None).await;
        }
        let account = |sequence, tenant: &str, kind, changed: &[&str]| FeedEvent {
            sequence,
            // The snapshot holds the effects: whatever the change says is not applied again.
            change: AccountChange::Ignored,
            notice: Some(FeedNotice::Account(AccountNotice {
                tenant_id: tenant.into(),
                parent_id: None,
                kind,
                changed_fields: changed.iter().map(|f| (*f).to_owned()).collect(),
                occurred_at: Some(t0()),
            })),
        };
        // 3..=9 were pruned (`doomed` deleted, `early` created); 10..=12 retained.
        let gap = [
            account(1, "stays", AccountNoticeKind::Updated, &["name"]),
            account(10, "late", AccountNoticeKind::Created, &[]),
            account(11, "stays", AccountNoticeKind::Updated, &["name"]),
            FeedEvent {
                sequence: 12,
                change: AccountChange::Ignored,
                notice: Some(FeedNotice::Migration(webhook::MigrationNotice {
                    migration_id: "m1".into(),
                    outcome: webhook::MigrationOutcome::Completed,
                    total_items: 2,
                    processed_items: 2,
                    created_items: 2,
                    skipped_items: 0,
                    failed_items: 0,
                    failure_message: None,
                    created_at: Some(t0()),
                    started_at: Some(t0()),
                    finished_at: Some(t0()),
                })),
            },
        ];
        let live = |id: &str| SnapshotAccount {
            tenant_id: id.into(),
            parent_id: None,
            created_at: Some(t0()),
        };
        let before = outbox(&t.engine).await.len();
        t.engine
            .apply_tenant_snapshot(12, &[live("early"), live("late"), live("stays")], &gap)
            .await
            .unwrap();
        let events = outbox(&t.engine).await;
        let got: Vec<(&str, &str, &str)> = events[before..]
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap(),
                    e["type"].as_str().unwrap(),
                    e["subject"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("evt_f10", types::ACCOUNT_CREATED, "late"),
                ("evt_f11", types::ACCOUNT_UPDATED, "stays"),
                ("evt_f12", types::MIGRATION_FINISHED, "-"),
                ("evt_s12_0", types::ACCOUNT_CREATED, "early"),
                ("evt_s12_1", types::ACCOUNT_DELETED, "doomed"),
            ]
        );
        let update = &events[before + 1];
        assert_eq!(update["data"]["changedFields"], serde_json::json!(["name"]));
        assert!(update.get("tenantryresync").is_none(), "{update}");
        assert_eq!(events[before + 2]["data"]["createdItems"], 2);
    }
}
