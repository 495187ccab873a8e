//! The tenant service's accounts, mirrored: feed events and snapshots become the local
//! hierarchy copy, signup grants for new accounts and revocations for deleted ones.
//!
//! Exactly-once: each batch is applied in ONE transaction that first locks the stored cursor,
//! skips events at or below it, applies the effects, stores the new cursor and commits. A
//! crash before the commit leaves neither effects nor cursor (the batch is replayed); after
//! it, both (the batch is skipped on replay). Replicas following the same feed serialize on
//! the cursor, so two of them never apply the same event twice.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ports::{HeldAccount, Storage};
use super::{Engine, SYSTEM_PRINCIPAL};
use crate::domain::catalog::Catalog;
use crate::domain::webhook::{self, AccountNotice};
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
    /// Nothing the entitlement service keeps (memberships).
    Ignored,
}

/// One event of the tenant change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    pub sequence: u64,
    pub change: AccountChange,
    /// What the event says happened, for webhooks (`None`: nothing they announce).
    pub notice: Option<AccountNotice>,
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
}

impl<S: Storage> Effects<'_, S> {
    /// Records a live account under `parent`.
    async fn upsert(&mut self, tenant: &str, parent: Option<&str>) -> Result<()> {
        self.engine
            .store
            .upsert_account(self.txn, tenant, parent, false, self.now)
            .await?;
        self.changes.push(IndexChange::UpsertTenant {
            id: tenant.to_owned(),
            parent: parent.map(str::to_owned),
        });
        Ok(())
    }

    /// A new account: recorded, with the signup plans that existed when it was created.
    async fn create(
        &mut self,
        tenant: &str,
        parent: Option<&str>,
        occurred: DateTime<Utc>,
    ) -> Result<()> {
        self.upsert(tenant, parent).await?;
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
        Ok(())
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
        };
        for event in events.iter().filter(|e| e.sequence > cursor) {
            last = last.max(event.sequence);
            if let Some(notice) = &event.notice {
                announced.push(webhook::account_event(event.sequence, notice, now));
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
    pub async fn apply_tenant_snapshot(
        &self,
        sequence: u64,
        accounts: &[SnapshotAccount],
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
        };
        let mut changed = 0;
        for account in accounts {
            let tenant = account.tenant_id.as_str();
            let parent = account.parent_id.as_deref();
            match held.remove(tenant) {
                None => {
                    let created = account.created_at.unwrap_or(effects.now);
                    effects.create(tenant, parent, created).await?;
                    changed += 1;
                }
                Some((held_parent, deleted)) => {
                    if deleted || held_parent.as_deref() != parent {
                        effects.upsert(tenant, parent).await?;
                        changed += 1;
                    }
                }
            }
        }
        // Live here, absent from the snapshot: deleted while this follower was not looking.
        for (tenant, (_, deleted)) in held {
            if !deleted {
                effects.delete(&tenant).await?;
                changed += 1;
            }
        }
        let changes = effects.changes;
        let now = self.now();
        self.store.set_cursor(&txn, sequence, now).await?;
        // A snapshot says what is, not what happened: its grant effects are announced, no
        // account events.
        self.commit_changes(txn, changes, Vec::new(), now).await?;
        Ok(changed)
    }
}
