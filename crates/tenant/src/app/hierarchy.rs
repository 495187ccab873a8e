//! The hierarchy: self-service sub-account creation (deleted IDs stay taken), attach and
//! detach, descendants, ancestors and the subtree, reseller management, hierarchy settings and
//! the sub-account scope check.

use super::{Engine, idempotency::idempotent, ports::Storage};
use crate::domain::{
    self, Account, Created, DEFAULT_LIMIT, DeletedIds, Error, HierarchyEntry, Idempotency,
    MAX_LIMIT, NewAccount, Page, SubAccountAccessType, Subtree, error::Result, page_limit,
};

/// Most accounts one CheckSubAccountScope call may ask about (a batch check's items).
pub const MAX_SCOPE_CHECK_IDS: usize = 1_000;

impl<S: Storage> Engine<S> {
    /// Creates a sub-account under `new.parent_tenant_id`. A deleted account's ID stays taken
    /// (the 409 a live one gets): see [`DeletedIds::Reserved`].
    pub async fn create_sub_account(
        &self,
        new: NewAccount,
        key: Option<&Idempotency>,
    ) -> Result<Created> {
        domain::validate_tenant_id("tenant_id", new.tenant_id.as_deref().unwrap_or_default())?;
        domain::validate_tenant_id(
            "parent_tenant_id",
            new.parent_tenant_id.as_deref().unwrap_or_default(),
        )?;
        let new = new.validated("", true)?;
        idempotent(&self.store, key, "create_sub_account", |claim| {
            self.store.create_account(new, DeletedIds::Reserved, claim)
        })
        .await
    }

    pub async fn attach(
        &self,
        parent_id: &str,
        child_id: &str,
        key: Option<&Idempotency>,
    ) -> Result<Account> {
        domain::validate_tenant_id("parent_tenant_id", parent_id)?;
        domain::validate_tenant_id("child_tenant_id", child_id)?;
        idempotent(&self.store, key, "attach_sub_account", |claim| {
            self.store.attach(parent_id, child_id, claim)
        })
        .await
    }

    pub async fn detach(&self, parent_id: &str, child_id: &str) -> Result<Account> {
        domain::validate_tenant_id("parent_tenant_id", parent_id)?;
        domain::validate_tenant_id("child_tenant_id", child_id)?;
        self.store.detach(parent_id, child_id).await
    }

    pub async fn list_descendants(
        &self,
        tenant_id: &str,
        direct_only: bool,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Page<HierarchyEntry>> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        let limit = page_limit("page.limit", limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        self.store
            .list_descendants(tenant_id, direct_only, limit, offset)
            .await
    }

    pub async fn list_ancestors(&self, tenant_id: &str) -> Result<Vec<HierarchyEntry>> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        self.store.list_ancestors(tenant_id).await
    }

    /// The subtree under `tenant_id`, cut breadth first after `max_nodes` accounts.
    pub async fn subtree(&self, tenant_id: &str, max_nodes: Option<u32>) -> Result<Subtree> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        let limit = page_limit(
            "max_nodes",
            max_nodes,
            domain::DEFAULT_SUBTREE_NODES,
            domain::MAX_SUBTREE_NODES,
        )?;
        self.store.subtree(tenant_id, limit).await
    }

    pub async fn update_reseller(&self, tenant_id: &str, is_reseller: bool) -> Result<Account> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        self.store.update_reseller(tenant_id, is_reseller).await
    }

    /// The account whose hierarchy settings are asked for.
    pub async fn hierarchy_settings(&self, tenant_id: &str) -> Result<Account> {
        self.get_account(tenant_id).await
    }

    pub async fn update_access_type(
        &self,
        tenant_id: &str,
        access: SubAccountAccessType,
    ) -> Result<Account> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        self.store.update_access_type(tenant_id, access).await
    }

    /// Which of `tenant_ids` (at most [`MAX_SCOPE_CHECK_IDS`]) users of `caller` may reach as
    /// sub-accounts: sorted, without duplicates. One call decides a whole batch's accounts.
    pub async fn check_sub_account_scope(
        &self,
        caller: &str,
        tenant_ids: Vec<String>,
    ) -> Result<Vec<String>> {
        domain::validate_tenant_id("caller_tenant_id", caller)?;
        if tenant_ids.len() > MAX_SCOPE_CHECK_IDS {
            return Err(Error::invalid(
                "tenant_ids",
                format!("at most {MAX_SCOPE_CHECK_IDS} accounts per call"),
            ));
        }
        let mut ids = tenant_ids;
        for id in &ids {
            domain::validate_tenant_id("tenant_ids", id)?;
        }
        ids.sort_unstable();
        ids.dedup();
        self.store.reachable_sub_accounts(caller, &ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::{self, new_account};

    #[tokio::test]
    async fn a_deleted_id_stays_taken_for_sub_accounts_and_management_reactivates_it() {
        let t = testing::engine().await;
        let app = &t.engine;
        app.create_account(new_account("root", None), None)
            .await
            .unwrap();
        app.create_account(new_account("gone", None), None)
            .await
            .unwrap();
        app.delete_account("gone", None).await.unwrap();
        let err = app
            .create_sub_account(new_account("gone", Some("root")), None)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "ACCOUNT_EXISTS", "{err:?}");
        let created = app
            .create_account(new_account("gone", None), None)
            .await
            .unwrap();
        assert!(created.reactivated);
    }

    #[tokio::test]
    async fn the_scope_check_is_bounded_deduplicated_and_follows_the_access_type() {
        let t = testing::engine().await;
        let app = &t.engine;
        app.create_account(new_account("root", None), None)
            .await
            .unwrap();
        app.create_sub_account(new_account("kid", Some("root")), None)
            .await
            .unwrap();
        let asked = vec!["kid".to_owned(), "kid".to_owned(), "other".to_owned()];
        // Under defaultOff the caller's users reach no sub-account.
        assert!(
            app.check_sub_account_scope("root", asked.clone())
                .await
                .unwrap()
                .is_empty()
        );
        app.update_access_type("root", SubAccountAccessType::DefaultOn)
            .await
            .unwrap();
        assert_eq!(
            app.check_sub_account_scope("root", asked).await.unwrap(),
            vec!["kid".to_owned()]
        );
        let too_many = vec!["kid".to_owned(); MAX_SCOPE_CHECK_IDS + 1];
        let err = app
            .check_sub_account_scope("root", too_many)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "tenant_ids"),
            "{err:?}"
        );
    }
}
