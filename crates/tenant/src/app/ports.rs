//! The narrow ports through which use-cases reach storage, split by table group, and the
//! follower a change feed is streamed to.
//! `storage::Store` implements them; every method is one transaction of its own (the store
//! takes the locks a write needs), so no transaction type crosses the port. The service reads
//! no clock outside storage (which stamps its writes itself), so there is no clock port.

use async_trait::async_trait;
use serde_json::{Map, Value};
use tenantry_common::audit::{AuditPage, AuditQuery, AuditRecord, ExportQuery};
use tokio::sync::watch;

use crate::domain::{
    Account, AccountPatch, ChangeEvent, ChangeKind, Claim, Created, Deleted, DeletedIds, Error,
    FeedSnapshot, HierarchyEntry, Idempotency, ItemError, ListQuery, Membership, Migration,
    MigrationItem, NewAccount, Page, Settings, StoredKey, SubAccountAccessType, Submitted, Subtree,
    error::Result,
};

/// Accounts: their profile, metadata and settings.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates a validated account; a deleted one with its ID is reactivated or taken as
    /// `deleted` says. A `claim` is stored with it (see [`IdempotencyStore`]).
    async fn create_account(
        &self,
        new: NewAccount,
        deleted: DeletedIds,
        claim: Option<Claim<'_>>,
    ) -> Result<Created>;
    /// A live account (NOT_FOUND otherwise).
    async fn get_account(&self, tenant_id: &str) -> Result<Account>;
    async fn get_account_by_alias(&self, alias: &str) -> Result<Account>;
    /// Live accounts among `ids`, and the IDs that are missing or deleted.
    async fn batch_get_accounts(&self, ids: &[String]) -> Result<(Vec<Account>, Vec<String>)>;
    /// The IDs among `ids` that are missing or deleted, sorted and deduplicated.
    async fn missing_accounts(&self, ids: &[String]) -> Result<Vec<String>>;
    /// One page of live accounts.
    async fn list_accounts(&self, q: &ListQuery) -> Result<Page<Account>>;
    /// Applies a validated profile patch; a patch that changes nothing writes nothing.
    async fn update_account(&self, tenant_id: &str, patch: AccountPatch) -> Result<Account>;
    /// Merges keys into the metadata.
    async fn add_metadata(&self, tenant_id: &str, add: Map<String, Value>) -> Result<Account>;
    /// Removes one key (an absent key is not an error).
    async fn delete_metadata(&self, tenant_id: &str, key: &str) -> Result<Account>;
    async fn update_settings(&self, tenant_id: &str, patch: Settings) -> Result<Account>;
    async fn update_reseller(&self, tenant_id: &str, is_reseller: bool) -> Result<Account>;
    async fn update_access_type(
        &self,
        tenant_id: &str,
        access: SubAccountAccessType,
    ) -> Result<Account>;
    /// Soft-deletes an account: memberships removed, direct sub-accounts moved to its parent.
    /// With `expected_parent`, the account must be a direct child of it, else NOT_FOUND.
    async fn delete_account(
        &self,
        tenant_id: &str,
        expected_parent: Option<&str>,
    ) -> Result<Deleted>;
}

/// The hierarchy between accounts.
#[async_trait]
pub trait HierarchyStore: Send + Sync {
    /// Puts a root account under a parent (no cycle, no deeper than the maximum depth).
    async fn attach(
        &self,
        parent_id: &str,
        child_id: &str,
        claim: Option<Claim<'_>>,
    ) -> Result<Account>;
    /// Makes a direct child a root again; NOT_FOUND unless it is one.
    async fn detach(&self, parent_id: &str, child_id: &str) -> Result<Account>;
    /// A page of the direct children or of every descendant, breadth first.
    async fn list_descendants(
        &self,
        tenant_id: &str,
        direct_only: bool,
        limit: u32,
        offset: u32,
    ) -> Result<Page<HierarchyEntry>>;
    /// Ancestors, nearest first.
    async fn list_ancestors(&self, tenant_id: &str) -> Result<Vec<HierarchyEntry>>;
    /// Which of the sorted, deduplicated `tenant_ids` users of `caller` may reach as
    /// sub-accounts.
    async fn reachable_sub_accounts(
        &self,
        caller: &str,
        tenant_ids: &[String],
    ) -> Result<Vec<String>>;
    /// The first `limit` accounts below `tenant_id`, breadth first.
    async fn subtree(&self, tenant_id: &str, limit: u32) -> Result<Subtree>;
}

/// Users' memberships of accounts.
#[async_trait]
pub trait MembershipStore: Send + Sync {
    async fn add_membership(
        &self,
        tenant_id: &str,
        user_id: &str,
        claim: Option<Claim<'_>>,
    ) -> Result<Membership>;
    async fn remove_membership(&self, tenant_id: &str, user_id: &str) -> Result<()>;
    async fn list_members(
        &self,
        tenant_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Page<Membership>>;
    async fn list_user_accounts(
        &self,
        user_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Page<Membership>>;
}

/// Bulk migration jobs: an upload is received in chunks, invisible until sealed.
#[async_trait]
pub trait MigrationStore: Send + Sync {
    /// Starts receiving a job's items; returns its ID.
    async fn begin_migration(&self) -> Result<String>;
    /// Stores one received chunk of items, numbered from `first_index`.
    async fn add_migration_items(
        &self,
        migration_id: &str,
        first_index: u64,
        items: &[MigrationItem],
    ) -> Result<()>;
    /// Makes a fully received job visible and runnable; a `claim` is stored with it.
    async fn seal_migration(
        &self,
        migration_id: &str,
        total: u64,
        claim: Option<Claim<'_>>,
    ) -> Result<Submitted>;
    /// Forgets a job whose upload failed midway.
    async fn abandon_migration(&self, migration_id: &str) -> Result<()>;
    async fn get_migration(&self, migration_id: &str) -> Result<Migration>;
    async fn migration_errors(
        &self,
        migration_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Page<ItemError>>;
}

/// The change feed (the outbox every write appends to).
#[async_trait]
pub trait FeedStore: Send + Sync {
    /// Bumped when this process commits changes: followers here wait on it.
    fn subscribe_feed(&self) -> watch::Receiver<u64>;
    /// The newest committed sequence.
    async fn feed_head(&self) -> Result<u64>;
    /// Up to `limit` events after `cursor` of `kinds` (all when empty); CURSOR_EXPIRED when
    /// events after `cursor` were pruned.
    async fn read_changes(
        &self,
        cursor: u64,
        kinds: &[ChangeKind],
        limit: u64,
    ) -> Result<Vec<ChangeEvent>>;
    /// The live accounts as of one sequence.
    async fn feed_snapshot(&self) -> Result<FeedSnapshot>;
}

/// Idempotency keys: a create stores its [`Claim`] and its answer in its own transaction (the
/// write ports take the claim); a retry finds them here.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// What is stored under a caller's key, if anything.
    async fn idempotent_response(&self, scope: &str, key: &str) -> Result<Option<StoredKey>>;
}

/// The audit log: entries are written by the write ports, in their transactions; this reads.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Whether writes record audit entries (`audit_enabled`).
    fn audit_enabled(&self) -> bool;
    /// A page of entries matching `query`, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage>;
    /// Up to `limit` entries of `export` after `after_sequence`, oldest first.
    async fn export_audit(
        &self,
        export: &ExportQuery,
        after_sequence: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>>;
}

/// Where a followed feed goes (one follower's stream).
#[async_trait]
pub trait Follower: Send + Sync {
    /// Sends `events` (none: a heartbeat) with the feed's head; false once the follower is gone.
    async fn send(&mut self, events: Vec<ChangeEvent>, head: u64) -> bool;
    /// Ends the stream with an error.
    async fn fail(&mut self, err: Error);
    /// Resolves when the follower is gone or the service is stopping.
    async fn closed(&self);
}

/// A migration upload as it arrives, chunk by chunk (never whole).
#[async_trait]
pub trait Upload: Send {
    /// The transport's error: a broken upload is answered with what broke it.
    type Error: From<Error> + Send;
    /// The next chunk's items; `None` at the end.
    async fn next_chunk(&mut self) -> Option<Result<Vec<MigrationItem>, Self::Error>>;
    /// The idempotency key the upload carried, once all of it is received.
    fn idempotency(self) -> Result<Option<Idempotency>, Self::Error>
    where
        Self: Sized;
}

/// Everything the use-cases need from storage.
pub trait Storage:
    AccountStore
    + HierarchyStore
    + MembershipStore
    + MigrationStore
    + FeedStore
    + IdempotencyStore
    + AuditStore
    + Clone
    + 'static
{
}

impl<S> Storage for S where
    S: AccountStore
        + HierarchyStore
        + MembershipStore
        + MigrationStore
        + FeedStore
        + IdempotencyStore
        + AuditStore
        + Clone
        + 'static
{
}
