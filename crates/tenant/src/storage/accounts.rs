//! Accounts: create (with reactivation), read, list, update, soft delete, metadata, settings.

use async_trait::async_trait;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    FromQueryResult, Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};

use tenantry_common::db::PgArrayLiteral;

use super::{
    Result, Store,
    convert::{account_from_row, account_to_active},
    db_err,
    entities::{accounts, memberships},
    hierarchy::RECURSION_GUARD,
};
use crate::app::ports::AccountStore;
use crate::domain::{
    self, Account, AccountPatch, AttachFacts, ChangeKind, Claim, Created, Deleted, DeletedIds,
    Error, ListQuery, NewAccount, NewChange, Page, Settings, SortField, SubAccountAccessType,
    audit::{self, Action},
    check_attach,
    error::{ACCOUNT_EXISTS, ALIAS_TAKEN},
    like_contains,
};

pub(super) async fn load_row<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    lock: bool,
) -> Result<Option<accounts::Model>> {
    let mut select = accounts::Entity::find_by_id(tenant_id.to_owned());
    if lock {
        select = select.lock_exclusive();
    }
    select.one(conn).await.map_err(db_err("load account"))
}

/// A live account, or NOT_FOUND.
pub(super) async fn load_live<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    lock: bool,
) -> Result<Account> {
    match load_row(conn, tenant_id, lock).await? {
        Some(row) if row.deleted_at.is_none() => account_from_row(row),
        Some(_) | None => Err(Error::account_not_found(tenant_id)),
    }
}

pub(super) async fn save<C: ConnectionTrait>(conn: &C, account: &Account) -> Result<()> {
    accounts::Entity::update(account_to_active(account))
        .exec(conn)
        .await
        .map_err(db_err("update account"))?;
    Ok(())
}

async fn ensure_alias_free<C: ConnectionTrait>(conn: &C, alias: &str, owner: &str) -> Result<()> {
    let taken = accounts::Entity::find()
        .filter(accounts::Column::Alias.eq(alias))
        .filter(accounts::Column::DeletedAt.is_null())
        .filter(accounts::Column::TenantId.ne(owner))
        .count(conn)
        .await
        .map_err(db_err("check alias"))?;
    if taken > 0 {
        return Err(Error::AlreadyExists {
            reason: ALIAS_TAKEN,
            message: format!("alias `{alias}` is already used by another account"),
        });
    }
    Ok(())
}

impl Store {
    /// Creates `new` (validated) inside `txn`; a deleted account with its ID is reactivated or
    /// taken as `deleted` says. The caller holds the hierarchy lock when
    /// `new.parent_tenant_id` is set.
    pub(super) async fn create_in(
        &self,
        txn: &DatabaseTransaction,
        new: &NewAccount,
        deleted: DeletedIds,
    ) -> Result<(Created, Vec<NewChange>)> {
        let tenant_id = new
            .tenant_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let existing = load_row(txn, &tenant_id, true).await?;
        if existing
            .as_ref()
            .is_some_and(|row| row.deleted_at.is_none() || deleted == DeletedIds::Reserved)
        {
            return Err(Error::AlreadyExists {
                reason: ACCOUNT_EXISTS,
                message: format!("account `{tenant_id}` already exists"),
            });
        }
        if let Some(alias) = &new.alias {
            ensure_alias_free(txn, alias, &tenant_id).await?;
        }
        let now = domain::now();
        let mut account = Account::from_new(tenant_id.clone(), new, now);
        if let Some(parent_id) = &new.parent_tenant_id {
            let parent = load_live(txn, parent_id, false)
                .await
                .map_err(|_| Error::NotFound {
                    reason: "PARENT_NOT_FOUND",
                    message: format!("parent account `{parent_id}` does not exist"),
                })?;
            let ancestors = self
                .ancestor_ids(txn, &parent.tenant_id, RECURSION_GUARD)
                .await?;
            // A new or reactivated account has no children: deleting it re-parented them.
            check_attach(&AttachFacts {
                parent_id,
                child_id: &tenant_id,
                child_parent: None,
                parent_ancestors: &ancestors,
                child_height: 0,
                max_depth: self.inner.max_depth,
            })?;
            account.parent_tenant_id = Some(parent.tenant_id);
        }
        let reactivated = existing.is_some();
        if let Some(row) = existing {
            account.created_at = row.created_at;
            save(txn, &account).await?;
        } else {
            accounts::Entity::insert(account_to_active(&account))
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert account"))?;
        }
        let kind = if reactivated {
            ChangeKind::Reactivated
        } else {
            ChangeKind::Created
        };
        let mut changes = vec![NewChange::new(kind, &account)];
        if account.parent_tenant_id.is_some() {
            changes.push(NewChange::hierarchy(&account, None));
        }
        Ok((
            Created {
                account,
                reactivated,
            },
            changes,
        ))
    }

    /// The conditions of a filtered listing beyond `deleted_at IS NULL`, each starting with
    /// ` AND `, and their values in order.
    fn list_conditions(&self, q: &ListQuery) -> (String, Vec<sea_orm::Value>) {
        let mut sql = String::new();
        let mut values: Vec<sea_orm::Value> = Vec::new();
        if let Some(filter) = &q.filter {
            let pattern = like_contains(filter);
            sql.push_str(
                " AND (lower(name) LIKE ? ESCAPE '\\' OR lower(tenant_id) LIKE ? ESCAPE '\\')",
            );
            values.push(pattern.clone().into());
            values.push(pattern.into());
        }
        if !q.tenant_ids.is_empty() {
            sql.push_str(" AND tenant_id IN (");
            for (i, id) in q.tenant_ids.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                values.push(id.clone().into());
            }
            sql.push(')');
        }
        for pair in &q.metadata {
            if self.is_postgres() {
                // The expression of the `accounts_live_metadata` GIN index, so it serves this.
                sql.push_str(" AND account_metadata_jsonb(metadata) @> CAST(? AS jsonb)");
                values.push(pair.as_json_object().into());
            } else {
                // json_each names any key as it is (a JSON path would need quoting rules) and
                // types the value: only a JSON string matches, as on PostgreSQL.
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM json_each(accounts.metadata) AS m \
                     WHERE m.key = ? AND m.type = 'text' AND m.atom = ?)",
                );
                values.push(pair.key.clone().into());
                values.push(pair.value.clone().into());
            }
        }
        (sql, values)
    }

    /// A filtered page (a name or ID substring on PostgreSQL, metadata on either engine) and
    /// its total. The matches are collected first (through the trigram or metadata indexes)
    /// and only they are sorted: left to itself the planner often walks the sort index and
    /// tests every row, since it cannot estimate how rare a match is, and a rare one then
    /// costs a scan of the whole table.
    async fn filtered_page(&self, q: &ListQuery) -> Result<Page<Account>> {
        let (conditions, mut values) = self.list_conditions(q);
        let count = self
            .connection()
            .query_one_raw(self.statement(
                &format!("SELECT COUNT(*) AS n FROM accounts WHERE deleted_at IS NULL{conditions}"),
                values.clone(),
            ))
            .await
            .map_err(db_err("count accounts"))?;
        let total = match count {
            Some(row) => row
                .try_get::<i64>("", "n")
                .map_err(db_err("count accounts"))?,
            None => 0,
        };
        let dir = if q.descending { "DESC" } else { "ASC" };
        let sort = match q.sort {
            SortField::CreatedAt => format!("a.created_at {dir}, "),
            SortField::Name => format!("a.name {dir}, "),
            SortField::TenantId => String::new(),
        };
        // MATERIALIZED keeps PostgreSQL from folding the matches back into the sort's scan.
        let materialized = if self.is_postgres() {
            "MATERIALIZED "
        } else {
            ""
        };
        values.push(i64::from(q.limit).into());
        values.push(i64::from(q.offset).into());
        let sql = format!(
            "WITH matches AS {materialized}(
                SELECT tenant_id FROM accounts WHERE deleted_at IS NULL{conditions}
            )
            SELECT a.* FROM accounts a JOIN matches m ON m.tenant_id = a.tenant_id
            ORDER BY {sort}a.tenant_id {dir}
            LIMIT ? OFFSET ?"
        );
        let rows = self
            .connection()
            .query_all_raw(self.statement(&sql, values))
            .await
            .map_err(db_err("list accounts"))?;
        let items = rows
            .iter()
            .map(|row| {
                accounts::Model::from_query_result(row, "")
                    .map_err(db_err("read accounts"))
                    .and_then(account_from_row)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            total: u64::try_from(total).unwrap_or_default(),
            limit: q.limit,
            offset: q.offset,
        })
    }

    /// Reads, changes and writes one live account under its row lock, recording `kind` when
    /// `change` reports a change.
    async fn modify(
        &self,
        tenant_id: &str,
        action: Action,
        kind: ChangeKind,
        change: impl FnOnce(&mut Account) -> Result<bool> + Send,
    ) -> Result<Account> {
        let (_turn, txn) = self.begin_write().await?;
        let mut account = load_live(&txn, tenant_id, true).await?;
        let before = account.clone();
        if !change(&mut account)? {
            txn.rollback().await.map_err(db_err("rollback"))?;
            return Ok(account);
        }
        if account.alias != before.alias
            && let Some(alias) = &account.alias
        {
            ensure_alias_free(&txn, alias, tenant_id).await?;
        }
        account.updated_at = domain::now();
        save(&txn, &account).await?;
        self.commit(
            txn,
            vec![NewChange::update(kind, &before, &account)],
            vec![audit::account(action, Some(&before), Some(&account))],
        )
        .await?;
        Ok(account)
    }
}

#[async_trait]
impl AccountStore for Store {
    /// Creates an account (validated); a deleted one with the same ID is reactivated or taken
    /// as `deleted` says. A `claim` is stored with it, in its transaction.
    async fn create_account(
        &self,
        new: NewAccount,
        deleted: DeletedIds,
        claim: Option<Claim<'_>>,
    ) -> Result<Created> {
        let (_turn, txn) = self.begin_write().await?;
        self.claim_key(&txn, claim).await?;
        if new.parent_tenant_id.is_some() {
            self.lock_hierarchy(&txn).await?;
        }
        let (created, changes) = self.create_in(&txn, &new, deleted).await?;
        self.answer_key(&txn, claim, &created).await?;
        let action = if created.reactivated {
            Action::AccountReactivate
        } else {
            Action::AccountCreate
        };
        let entry = audit::account(action, None, Some(&created.account));
        self.commit(txn, changes, vec![entry]).await?;
        Ok(created)
    }

    async fn get_account(&self, tenant_id: &str) -> Result<Account> {
        load_live(self.connection(), tenant_id, false).await
    }

    async fn get_account_by_alias(&self, alias: &str) -> Result<Account> {
        let row = accounts::Entity::find()
            .filter(accounts::Column::Alias.eq(alias))
            .filter(accounts::Column::DeletedAt.is_null())
            .one(self.connection())
            .await
            .map_err(db_err("load account by alias"))?;
        match row {
            Some(row) => account_from_row(row),
            None => Err(Error::NotFound {
                reason: "ACCOUNT_NOT_FOUND",
                message: format!("no account has the alias `{alias}`"),
            }),
        }
    }

    /// Live accounts among `ids`, and the IDs that are missing or deleted.
    async fn batch_get_accounts(&self, ids: &[String]) -> Result<(Vec<Account>, Vec<String>)> {
        let rows = accounts::Entity::find()
            .filter(accounts::Column::TenantId.is_in(ids.iter().cloned()))
            .filter(accounts::Column::DeletedAt.is_null())
            .all(self.connection())
            .await
            .map_err(db_err("load accounts"))?;
        let accounts = rows
            .into_iter()
            .map(account_from_row)
            .collect::<Result<Vec<_>>>()?;
        let found: std::collections::HashSet<&str> =
            accounts.iter().map(|a| a.tenant_id.as_str()).collect();
        let mut missing: Vec<String> = ids
            .iter()
            .filter(|id| !found.contains(id.as_str()))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        Ok((accounts, missing))
    }

    /// The IDs among `ids` that are missing or deleted, sorted and deduplicated. Reads only
    /// the IDs, not the accounts; on PostgreSQL only the missing ones come back (usually none).
    async fn missing_accounts(&self, ids: &[String]) -> Result<Vec<String>> {
        let mut missing: Vec<String> = if self.is_postgres() {
            // One array parameter instead of up to 1,000 placeholders, and one index probe
            // per ID whatever the plan cache decides (`tenant_id = ANY($1)` in a generic
            // plan filtered every live account against the whole list; the LATERAL … LIMIT 1
            // keeps a probe per ID where NOT EXISTS could become a hash anti-join over every
            // account).
            let rows = self
                .connection()
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT i.id AS tenant_id FROM unnest($1::text[]) AS i(id) \
                     LEFT JOIN LATERAL (SELECT 1 AS one FROM accounts a \
                       WHERE a.tenant_id = i.id AND a.deleted_at IS NULL LIMIT 1) AS live ON true \
                     WHERE live.one IS NULL",
                    [PgArrayLiteral::of(ids.iter().map(String::as_str))],
                ))
                .await
                .map_err(db_err("check accounts"))?;
            rows.iter()
                .map(|row| row.try_get::<String>("", "tenant_id"))
                .collect::<Result<_, _>>()
                .map_err(db_err("check accounts"))?
        } else {
            let live: Vec<String> = accounts::Entity::find()
                .select_only()
                .column(accounts::Column::TenantId)
                .filter(accounts::Column::TenantId.is_in(ids.iter().cloned()))
                .filter(accounts::Column::DeletedAt.is_null())
                .into_tuple()
                .all(self.connection())
                .await
                .map_err(db_err("check accounts"))?;
            let live: std::collections::HashSet<&str> = live.iter().map(String::as_str).collect();
            ids.iter()
                .filter(|id| !live.contains(id.as_str()))
                .cloned()
                .collect()
        };
        missing.sort();
        missing.dedup();
        Ok(missing)
    }

    /// One page of live accounts. Every sort ends with tenant_id, so pages never overlap.
    async fn list_accounts(&self, q: &ListQuery) -> Result<Page<Account>> {
        if !q.metadata.is_empty() || (self.is_postgres() && q.filter.is_some()) {
            return self.filtered_page(q).await;
        }
        let mut select = accounts::Entity::find().filter(accounts::Column::DeletedAt.is_null());
        if let Some(filter) = &q.filter {
            let pattern = like_contains(filter);
            let lowered = |col: accounts::Column| {
                Expr::expr(Func::lower(Expr::col((accounts::Entity, col))))
                    .like(LikeExpr::new(pattern.clone()).escape('\\'))
            };
            select = select.filter(
                Condition::any()
                    .add(lowered(accounts::Column::Name))
                    .add(lowered(accounts::Column::TenantId)),
            );
        }
        if !q.tenant_ids.is_empty() {
            select = select.filter(accounts::Column::TenantId.is_in(q.tenant_ids.iter().cloned()));
        }
        // Unfiltered, the total is the live-account counter: counting 1,000,000 rows takes
        // a scan of the table. Filtered totals count through the filter's indexes.
        let total = if q.filter.is_none() && q.tenant_ids.is_empty() {
            self.live_account_count().await?
        } else {
            select
                .clone()
                .count(self.connection())
                .await
                .map_err(db_err("count accounts"))?
        };
        let order = if q.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        select = match q.sort {
            SortField::CreatedAt => select.order_by(accounts::Column::CreatedAt, order.clone()),
            SortField::Name => select.order_by(accounts::Column::Name, order.clone()),
            SortField::TenantId => select,
        };
        let rows = select
            .order_by(accounts::Column::TenantId, order)
            .limit(u64::from(q.limit))
            .offset(u64::from(q.offset))
            .all(self.connection())
            .await
            .map_err(db_err("list accounts"))?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(account_from_row)
                .collect::<Result<Vec<_>>>()?,
            total,
            limit: q.limit,
            offset: q.offset,
        })
    }

    /// Applies a profile patch (validated); a patch that changes nothing writes nothing.
    async fn update_account(&self, tenant_id: &str, patch: AccountPatch) -> Result<Account> {
        self.modify(
            tenant_id,
            Action::AccountUpdate,
            ChangeKind::Updated,
            move |account| Ok(patch.apply(account)),
        )
        .await
    }

    async fn add_metadata(
        &self,
        tenant_id: &str,
        add: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Account> {
        self.modify(
            tenant_id,
            Action::AccountMetadataUpdate,
            ChangeKind::Metadata,
            move |account| domain::merge_metadata(&mut account.metadata, add),
        )
        .await
    }

    /// Removes one key; an absent key changes nothing and is not an error.
    async fn delete_metadata(&self, tenant_id: &str, key: &str) -> Result<Account> {
        self.modify(
            tenant_id,
            Action::AccountMetadataDelete,
            ChangeKind::Metadata,
            |account| Ok(account.metadata.remove(key).is_some()),
        )
        .await
    }

    async fn update_settings(&self, tenant_id: &str, patch: Settings) -> Result<Account> {
        self.modify(
            tenant_id,
            Action::AccountSettingsUpdate,
            ChangeKind::Updated,
            move |account| Ok(account.settings.apply(&patch)),
        )
        .await
    }

    async fn update_reseller(&self, tenant_id: &str, is_reseller: bool) -> Result<Account> {
        self.modify(
            tenant_id,
            Action::AccountResellerUpdate,
            ChangeKind::Updated,
            move |account| {
                let changed = account.is_reseller != is_reseller;
                account.is_reseller = is_reseller;
                Ok(changed)
            },
        )
        .await
    }

    async fn update_access_type(
        &self,
        tenant_id: &str,
        access: SubAccountAccessType,
    ) -> Result<Account> {
        self.modify(
            tenant_id,
            Action::AccountAccessTypeUpdate,
            ChangeKind::Updated,
            move |account| {
                let changed = account.sub_account_access_type != access;
                account.sub_account_access_type = access;
                Ok(changed)
            },
        )
        .await
    }

    /// Soft-deletes an account: its memberships are removed and its direct sub-accounts move
    /// to its parent (or become roots). With `expected_parent`, the account must be a direct
    /// child of that account, else NOT_FOUND.
    async fn delete_account(
        &self,
        tenant_id: &str,
        expected_parent: Option<&str>,
    ) -> Result<Deleted> {
        let (_turn, txn) = self.begin_write().await?;
        self.lock_hierarchy(&txn).await?;
        let account = load_live(&txn, tenant_id, true).await?;
        if let Some(expected) = expected_parent
            && account.parent_tenant_id.as_deref() != Some(expected)
        {
            return Err(Error::NotFound {
                reason: "SUB_ACCOUNT_NOT_FOUND",
                message: format!("account `{tenant_id}` is not a sub-account of `{expected}`"),
            });
        }
        let now = domain::now();
        let mut changes = vec![NewChange::new(ChangeKind::Deleted, &account)];

        let children = accounts::Entity::find()
            .filter(accounts::Column::ParentTenantId.eq(tenant_id))
            .order_by_asc(accounts::Column::TenantId)
            .lock_exclusive()
            .all(&txn)
            .await
            .map_err(db_err("load sub-accounts"))?;
        let mut reparented = Vec::with_capacity(children.len());
        for row in children {
            let mut child = account_from_row(row)?;
            child.parent_tenant_id = account.parent_tenant_id.clone();
            child.updated_at = now;
            save(&txn, &child).await?;
            changes.push(NewChange::hierarchy(&child, Some(tenant_id.to_owned())));
            reparented.push(child.tenant_id);
        }

        let members = memberships::Entity::find()
            .filter(memberships::Column::TenantId.eq(tenant_id))
            .order_by_asc(memberships::Column::UserId)
            .all(&txn)
            .await
            .map_err(db_err("load memberships"))?;
        memberships::Entity::delete_many()
            .filter(memberships::Column::TenantId.eq(tenant_id))
            .exec(&txn)
            .await
            .map_err(db_err("delete memberships"))?;
        for member in &members {
            changes.push(NewChange::membership(&account, &member.user_id, false));
        }

        accounts::Entity::update_many()
            .col_expr(accounts::Column::DeletedAt, Expr::value(now))
            .col_expr(accounts::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                accounts::Column::ParentTenantId,
                Expr::value(Option::<String>::None),
            )
            .filter(accounts::Column::TenantId.eq(tenant_id))
            .exec(&txn)
            .await
            .map_err(db_err("delete account"))?;
        let entry = audit::account(Action::AccountDelete, Some(&account), None);
        self.commit(txn, changes, vec![entry]).await?;
        Ok(Deleted {
            account,
            reparented,
            removed_memberships: members.len() as u64,
        })
    }
}
