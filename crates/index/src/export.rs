//! An index handed to a follower: what it needs to rebuild an index that answers exactly as this
//! one, as `IndexChange` upserts. The catalog is copied from the writer (small, under its lock);
//! grants and the hierarchy are read afterwards from the immutable published index, so a large
//! export never holds up writes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::index::{CompactGrant, EntitlementIndex, MAX_ANCESTOR_DEPTH, NEVER};
use super::model::{Feature, FeatureFlag, Grant, GrantSource, Plan, Route};
use super::writer::{IndexChange, IndexWriter};

/// A consistent copy of an index at one revision, to stream to a follower.
#[derive(Debug, Clone)]
pub struct IndexExport {
    features: Vec<Feature>,
    plans: Vec<Plan>,
    flags: Vec<FeatureFlag>,
    routes: Vec<Route>,
    /// Plan ID by the index's plan slot (a grant keeps only its slot).
    plan_ids: Vec<Uuid>,
    index: Arc<EntitlementIndex>,
}

/// Accounts in a follower's scope, each with its parent as the index holds it.
pub type ScopeClosure = BTreeMap<String, Option<String>>;

impl IndexWriter {
    /// The published index with the catalog it was built from.
    pub fn export(&self) -> IndexExport {
        let mut plan_ids = vec![Uuid::nil(); self.plan_slots.len()];
        for (&id, &slot) in &self.plan_slots {
            plan_ids[slot as usize] = id;
        }
        IndexExport {
            features: self.features.values().cloned().collect(),
            plans: self.plans.values().cloned().collect(),
            flags: self.flags.values().cloned().collect(),
            routes: self.routes.values().cloned().collect(),
            plan_ids,
            index: self.current(),
        }
    }
}

impl IndexExport {
    pub fn revision(&self) -> u64 {
        self.index.revision()
    }

    /// The latest commit time among the revisions included (`None`: no write yet).
    pub fn written_until(&self) -> Option<DateTime<Utc>> {
        self.index.written_until()
    }

    pub fn index(&self) -> &Arc<EntitlementIndex> {
        &self.index
    }

    /// The catalog as upserts: features, plans, flags, routes.
    pub fn catalog_changes(&self) -> impl Iterator<Item = IndexChange> + '_ {
        self.features
            .iter()
            .cloned()
            .map(IndexChange::UpsertFeature)
            .chain(self.plans.iter().cloned().map(IndexChange::UpsertPlan))
            .chain(self.flags.iter().cloned().map(IndexChange::UpsertFlag))
            .chain(self.routes.iter().cloned().map(IndexChange::UpsertRoute))
    }

    /// Every account the index holds, with its parent.
    pub fn accounts(&self) -> ScopeClosure {
        self.index
            .nodes()
            .map(|(id, node)| (id.to_string(), node.parent.as_deref().map(str::to_owned)))
            .collect()
    }

    /// `accounts` (those the index holds) with their ancestors, each with its parent.
    pub fn scope(&self, accounts: &[String]) -> ScopeClosure {
        scope_closure(&self.index, accounts)
    }

    /// An account's grants, rebuilt from what the index keeps of them (the fields a check reads;
    /// bookkeeping such as metadata or who granted stays with the service).
    pub fn grants_of(&self, account: &str) -> Vec<Grant> {
        let Some(node) = self.index.node(account) else {
            return Vec::new();
        };
        let account_level = node.grants.iter().map(|g| (None, g));
        let user_level = node
            .user_lists()
            .iter()
            .flat_map(|u| u.grants.iter().map(move |g| (Some(&*u.user), g)));
        account_level
            .chain(user_level)
            .map(|(user, g)| self.grant(account, user, g))
            .collect()
    }

    /// An account's meters of metered features, its users' own included, as upserts.
    pub fn meters_of<'a>(&'a self, account: &'a str) -> impl Iterator<Item = IndexChange> + 'a {
        let node = self.index.node(account);
        let own = node
            .map(|n| n.meter_lists())
            .unwrap_or(&[])
            .iter()
            .map(move |(feature_id, state)| (None, feature_id, state));
        let users = node
            .map(|n| n.user_lists())
            .unwrap_or(&[])
            .iter()
            .flat_map(|u| {
                u.meter_lists()
                    .iter()
                    .map(move |(feature_id, state)| (Some(&*u.user), feature_id, state))
            });
        own.chain(users)
            .map(move |(user, feature_id, state)| IndexChange::UpsertMeter {
                tenant_id: account.to_owned(),
                user_id: user.map(str::to_owned),
                feature_id: *feature_id,
                state: Box::new(state.clone()),
            })
    }

    fn grant(&self, account: &str, user: Option<&str>, g: &CompactGrant) -> Grant {
        let time = |micros: i64| {
            (micros != NEVER)
                .then(|| DateTime::from_timestamp_micros(micros))
                .flatten()
        };
        let starts_at = time(g.starts_at).unwrap_or(DateTime::UNIX_EPOCH);
        Grant {
            id: g.id,
            plan_id: self
                .plan_ids
                .get(g.plan as usize)
                .copied()
                .unwrap_or_default(),
            tenant_id: account.to_owned(),
            user_id: user.map(str::to_owned),
            starts_at,
            expires_at: time(g.expires_at),
            revoked_at: time(g.revoked_at),
            revoked_by: None,
            revoke_reason: None,
            source: GrantSource::Api,
            external_id: None,
            granted_by: None,
            metadata: Value::Null,
            created_at: starts_at,
            updated_at: starts_at,
        }
    }
}

/// `accounts` (those `index` holds) with their ancestors as checks walk them, each with its
/// parent.
pub fn scope_closure(index: &EntitlementIndex, accounts: &[String]) -> ScopeClosure {
    let mut out = ScopeClosure::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for account in accounts {
        let mut current = Some(account.as_str());
        let mut depth = 0;
        while let Some(id) = current {
            if !seen.insert(id) || depth > MAX_ANCESTOR_DEPTH {
                break;
            }
            let Some(node) = index.node(id) else { break };
            let parent = node.parent.as_deref();
            out.insert(id.to_owned(), parent.map(str::to_owned));
            current = parent;
            depth += 1;
        }
    }
    out
}
