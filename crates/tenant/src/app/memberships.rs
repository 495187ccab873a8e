//! Memberships: users of an account, accounts of a user.

use super::{Engine, idempotency::idempotent, ports::Storage};
use crate::domain::{
    self, DEFAULT_LIMIT, Idempotency, MAX_LIMIT, Membership, Page, error::Result, page_limit,
    validate_user_id,
};

impl<S: Storage> Engine<S> {
    pub async fn add_membership(
        &self,
        tenant_id: &str,
        user_id: &str,
        key: Option<&Idempotency>,
    ) -> Result<Membership> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        validate_user_id("user_id", user_id)?;
        idempotent(&self.store, key, "add_membership", |claim| {
            self.store.add_membership(tenant_id, user_id, claim)
        })
        .await
    }

    pub async fn remove_membership(&self, tenant_id: &str, user_id: &str) -> Result<()> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        validate_user_id("user_id", user_id)?;
        self.store.remove_membership(tenant_id, user_id).await
    }

    pub async fn list_members(
        &self,
        tenant_id: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Page<Membership>> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        let limit = page_limit("page.limit", limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        self.store.list_members(tenant_id, limit, offset).await
    }

    pub async fn list_user_accounts(
        &self,
        user_id: &str,
        limit: Option<u32>,
        offset: u32,
    ) -> Result<Page<Membership>> {
        validate_user_id("user_id", user_id)?;
        let limit = page_limit("page.limit", limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        self.store.list_user_accounts(user_id, limit, offset).await
    }
}
