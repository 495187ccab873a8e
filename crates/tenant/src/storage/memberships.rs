//! Memberships of users in accounts.

use async_trait::async_trait;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{Result, Store, accounts::load_live, db_err, entities::memberships};
use crate::app::ports::MembershipStore;
use crate::domain::{
    self, Claim, Error, Membership, NewChange, Page, audit, error::MEMBERSHIP_EXISTS,
};

fn from_row(row: memberships::Model) -> Membership {
    Membership {
        tenant_id: row.tenant_id,
        user_id: row.user_id,
        created_at: row.created_at,
    }
}

impl Store {
    async fn page(
        &self,
        select: sea_orm::Select<memberships::Entity>,
        order: memberships::Column,
        limit: u32,
        offset: u32,
    ) -> Result<Page<Membership>> {
        let total = select
            .clone()
            .count(self.connection())
            .await
            .map_err(db_err("count memberships"))?;
        let rows = select
            .order_by_asc(order)
            .limit(u64::from(limit))
            .offset(u64::from(offset))
            .all(self.connection())
            .await
            .map_err(db_err("list memberships"))?;
        Ok(Page {
            items: rows.into_iter().map(from_row).collect(),
            total,
            limit,
            offset,
        })
    }
}

#[async_trait]
impl MembershipStore for Store {
    /// Adds a user to a live account. The account row is locked so a concurrent delete either
    /// sees this membership (and removes it) or makes this call NOT_FOUND.
    async fn add_membership(
        &self,
        tenant_id: &str,
        user_id: &str,
        claim: Option<Claim<'_>>,
    ) -> Result<Membership> {
        let (_turn, txn) = self.begin_write().await?;
        self.claim_key(&txn, claim).await?;
        let account = load_live(&txn, tenant_id, true).await?;
        let exists = memberships::Entity::find_by_id((tenant_id.to_owned(), user_id.to_owned()))
            .one(&txn)
            .await
            .map_err(db_err("load membership"))?;
        if exists.is_some() {
            return Err(Error::AlreadyExists {
                reason: MEMBERSHIP_EXISTS,
                message: format!("user `{user_id}` is already a member of account `{tenant_id}`"),
            });
        }
        let membership = Membership {
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.to_owned(),
            created_at: domain::now(),
        };
        memberships::Entity::insert(memberships::ActiveModel {
            tenant_id: Set(membership.tenant_id.clone()),
            user_id: Set(membership.user_id.clone()),
            created_at: Set(membership.created_at),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(db_err("insert membership"))?;
        self.answer_key(&txn, claim, &membership).await?;
        self.commit(
            txn,
            vec![NewChange::membership(&account, user_id, true)],
            vec![audit::membership(&membership, true)],
        )
        .await?;
        Ok(membership)
    }

    async fn remove_membership(&self, tenant_id: &str, user_id: &str) -> Result<()> {
        let (_turn, txn) = self.begin_write().await?;
        let account = load_live(&txn, tenant_id, true).await?;
        let removed = memberships::Entity::delete_many()
            .filter(memberships::Column::TenantId.eq(tenant_id))
            .filter(memberships::Column::UserId.eq(user_id))
            .exec(&txn)
            .await
            .map_err(db_err("delete membership"))?;
        if removed.rows_affected == 0 {
            return Err(Error::NotFound {
                reason: "MEMBERSHIP_NOT_FOUND",
                message: format!("user `{user_id}` is not a member of account `{tenant_id}`"),
            });
        }
        let removed = Membership {
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.to_owned(),
            created_at: domain::now(),
        };
        self.commit(
            txn,
            vec![NewChange::membership(&account, user_id, false)],
            vec![audit::membership(&removed, false)],
        )
        .await
    }

    /// Members of a live account, by user ID.
    async fn list_members(
        &self,
        tenant_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Page<Membership>> {
        load_live(self.connection(), tenant_id, false).await?;
        let select =
            memberships::Entity::find().filter(memberships::Column::TenantId.eq(tenant_id));
        self.page(select, memberships::Column::UserId, limit, offset)
            .await
    }

    /// Accounts a user belongs to (memberships of deleted accounts are removed with them).
    async fn list_user_accounts(
        &self,
        user_id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Page<Membership>> {
        let select = memberships::Entity::find().filter(memberships::Column::UserId.eq(user_id));
        self.page(select, memberships::Column::TenantId, limit, offset)
            .await
    }
}
