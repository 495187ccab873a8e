//! Accounts: create (reactivating a deleted ID), read, list, update, delete, metadata and
//! settings.

use serde_json::Value;

use super::{Engine, idempotency::idempotent, ports::Storage};
use crate::domain::{
    self, Account, AccountPatch, Created, DELETE_ACCOUNT_PERMISSION, Deleted, DeletedIds, Error,
    Idempotency, ListQuery, MetadataMatch, NewAccount, Page, PublicSettings, Settings, SortField,
    error::Result,
};

/// Most IDs one BatchGetAccounts may name.
pub const MAX_BATCH_GET: usize = 1_000;

/// An account listing as asked for (validated by [`Engine::list_accounts`]).
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub limit: Option<u32>,
    pub offset: u32,
    pub filter: Option<String>,
    pub sort: SortField,
    pub descending: bool,
    pub tenant_ids: Vec<String>,
    pub metadata: Vec<MetadataMatch>,
}

/// The answer to a batch read: live accounts and the IDs missing or deleted.
#[derive(Debug, Default)]
pub struct Batch {
    pub accounts: Vec<Account>,
    pub missing: Vec<String>,
}

impl<S: Storage> Engine<S> {
    /// A management create: a deleted account with the same ID is reactivated (its grants
    /// stay revoked), see [`DeletedIds::Reactivate`].
    pub async fn create_account(
        &self,
        new: NewAccount,
        key: Option<&Idempotency>,
    ) -> Result<Created> {
        let new = new.validated("account.", false)?;
        idempotent(&self.store, key, "create_account", |claim| {
            self.store
                .create_account(new, DeletedIds::Reactivate, claim)
        })
        .await
    }

    pub async fn get_account(&self, tenant_id: &str) -> Result<Account> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        self.store.get_account(tenant_id).await
    }

    pub async fn get_account_by_alias(&self, alias: &str) -> Result<Account> {
        domain::validate_alias("alias", alias)?;
        self.store.get_account_by_alias(alias).await
    }

    /// Between 1 and [`MAX_BATCH_GET`] valid IDs; with `missing_only`, only the missing IDs
    /// are read (not the accounts).
    pub async fn batch_get_accounts(&self, ids: &[String], missing_only: bool) -> Result<Batch> {
        if ids.is_empty() || ids.len() > MAX_BATCH_GET {
            return Err(Error::invalid(
                "tenant_ids",
                format!("give between 1 and {MAX_BATCH_GET} IDs (got {})", ids.len()),
            ));
        }
        for (i, id) in ids.iter().enumerate() {
            domain::validate_tenant_id(&format!("tenant_ids[{i}]"), id)?;
        }
        if missing_only {
            return Ok(Batch {
                accounts: Vec::new(),
                missing: self.store.missing_accounts(ids).await?,
            });
        }
        let (accounts, missing) = self.store.batch_get_accounts(ids).await?;
        Ok(Batch { accounts, missing })
    }

    pub async fn list_accounts(&self, listing: Listing) -> Result<Page<Account>> {
        let query = ListQuery::new(
            listing.limit,
            listing.offset,
            listing.filter,
            listing.sort,
            listing.descending,
            listing.tenant_ids,
            listing.metadata,
        )?;
        self.store.list_accounts(&query).await
    }

    pub async fn update_account(&self, tenant_id: &str, patch: AccountPatch) -> Result<Account> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        patch.validate()?;
        self.store.update_account(tenant_id, patch).await
    }

    /// Deletes an account; with `expected_parent`, only when it is a direct child of that one.
    pub async fn delete_account(
        &self,
        tenant_id: &str,
        expected_parent: Option<&str>,
    ) -> Result<Deleted> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        if let Some(parent) = expected_parent {
            domain::validate_tenant_id("expected_parent_tenant_id", parent)?;
        }
        self.store.delete_account(tenant_id, expected_parent).await
    }

    /// A user deleting its own account: only with [`DELETE_ACCOUNT_PERMISSION`] among the
    /// permissions its token carries.
    pub async fn delete_current_account(
        &self,
        tenant_id: &str,
        caller_permissions: &[String],
    ) -> Result<Deleted> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        if !tenantry_common::permission::holds(caller_permissions, DELETE_ACCOUNT_PERMISSION) {
            return Err(Error::PermissionDenied(format!(
                "deleting the current account requires the `{DELETE_ACCOUNT_PERMISSION}` permission"
            )));
        }
        self.store.delete_account(tenant_id, None).await
    }

    /// Merges `metadata` (a JSON object, or a string holding one) into the account's.
    pub async fn add_metadata(&self, tenant_id: &str, metadata: Option<Value>) -> Result<Account> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        let add = domain::parse_metadata("metadata", metadata)?;
        self.store.add_metadata(tenant_id, add).await
    }

    pub async fn delete_metadata(&self, tenant_id: &str, key: &str) -> Result<Account> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        if key.is_empty() {
            return Err(Error::invalid("key", "is required"));
        }
        self.store.delete_metadata(tenant_id, key).await
    }

    pub async fn account_settings(&self, tenant_id: &str) -> Result<Settings> {
        Ok(self.get_account(tenant_id).await?.settings)
    }

    /// Changes the given settings (at least one).
    pub async fn update_settings(&self, tenant_id: &str, patch: Settings) -> Result<Settings> {
        domain::validate_tenant_id("tenant_id", tenant_id)?;
        if patch.is_empty() {
            return Err(Error::invalid(
                "settings",
                "give at least one setting to change",
            ));
        }
        patch.validate("settings.")?;
        Ok(self.store.update_settings(tenant_id, patch).await?.settings)
    }

    /// The settings an unauthenticated user may see.
    pub async fn public_settings(&self, tenant_id: &str) -> Result<PublicSettings> {
        Ok(self.get_account(tenant_id).await?.public_settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testing::{self, new_account};

    #[tokio::test]
    async fn deleting_the_current_account_needs_the_permission_and_leaves_it_otherwise() {
        let t = testing::engine().await;
        let app = &t.engine;
        app.create_account(new_account("acme", None), None)
            .await
            .unwrap();
        let err = app
            .delete_current_account("acme", &["fe.account-settings.read".into()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
        assert_eq!(app.get_account("acme").await.unwrap().tenant_id, "acme");
        let deleted = app
            .delete_current_account("acme", &["fe.account-settings.*".into()])
            .await
            .unwrap();
        assert_eq!(deleted.account.tenant_id, "acme");
        assert!(matches!(
            app.get_account("acme").await.unwrap_err(),
            Error::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn batch_reads_and_listings_are_bounded_before_storage() {
        let t = testing::engine().await;
        let app = &t.engine;
        let too_many: Vec<String> = (0..=MAX_BATCH_GET).map(|i| format!("t{i}")).collect();
        for ids in [Vec::new(), too_many] {
            let err = app.batch_get_accounts(&ids, false).await.unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument { field, .. } if field == "tenant_ids"),
                "{err:?}"
            );
        }
        let err = app
            .batch_get_accounts(&["ok".into(), "bad id".into()], true)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "tenant_ids[1]"),
            "{err:?}"
        );
        app.create_account(new_account("acme", None), None)
            .await
            .unwrap();
        let batch = app
            .batch_get_accounts(&["acme".into(), "gone".into()], false)
            .await
            .unwrap();
        assert_eq!(batch.accounts.len(), 1);
        assert_eq!(batch.missing, vec!["gone".to_owned()]);
        let err = app
            .list_accounts(Listing {
                limit: Some(domain::MAX_LIMIT + 1),
                ..Listing::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if field == "page.limit"),
            "{err:?}"
        );
    }
}
