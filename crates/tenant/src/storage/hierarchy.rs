//! Hierarchy reads (recursive queries) and writes (attach, detach) under the hierarchy lock.

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, FromQueryResult, Value};

use super::{
    Result, Store,
    accounts::{load_live, save},
    convert::account_from_row,
    db_err,
    entities::accounts,
};
use crate::app::ports::HierarchyStore;
use crate::domain::{
    self, Account, AttachFacts, Claim, Error, HierarchyEntry, NewChange, Page,
    SubAccountAccessType, Subtree,
    audit::{self, Action},
    check_attach,
};

/// Bound on recursion, so a corrupted (cyclic) hierarchy cannot make a query loop forever.
pub(super) const RECURSION_GUARD: i32 = 10_000;

impl Store {
    /// IDs of the ancestors of `tenant_id`, nearest first, at most `levels` of them.
    pub(super) async fn ancestor_ids<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant_id: &str,
        levels: i32,
    ) -> Result<Vec<String>> {
        let rows = conn
            .query_all_raw(self.statement(
                "WITH RECURSIVE chain (tenant_id, parent_tenant_id, depth) AS (
                    SELECT tenant_id, parent_tenant_id, 0 FROM accounts WHERE tenant_id = ?
                    UNION ALL
                    SELECT a.tenant_id, a.parent_tenant_id, c.depth + 1
                    FROM accounts a JOIN chain c ON a.tenant_id = c.parent_tenant_id
                    WHERE c.depth < ?
                )
                SELECT tenant_id FROM chain WHERE depth > 0 ORDER BY depth",
                vec![Value::from(tenant_id), Value::from(levels)],
            ))
            .await
            .map_err(db_err("load ancestors"))?;
        rows.iter()
            .map(|row| {
                row.try_get::<String>("", "tenant_id")
                    .map_err(db_err("read ancestors"))
            })
            .collect()
    }

    /// Live descendants of `tenant_id` with their distance from it, breadth first, the first
    /// `limit` of them.
    async fn descendants<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant_id: &str,
        direct_only: bool,
        limit: u64,
    ) -> Result<Vec<(Account, u32)>> {
        let max_depth = if direct_only { 1 } else { RECURSION_GUARD };
        let rows = conn
            .query_all_raw(self.statement(
                "WITH RECURSIVE sub (tenant_id, depth) AS (
                    SELECT tenant_id, 1 FROM accounts
                    WHERE parent_tenant_id = ? AND deleted_at IS NULL
                    UNION ALL
                    SELECT a.tenant_id, s.depth + 1
                    FROM accounts a JOIN sub s ON a.parent_tenant_id = s.tenant_id
                    WHERE a.deleted_at IS NULL AND s.depth < ?
                )
                SELECT a.*, s.depth AS depth FROM sub s JOIN accounts a ON a.tenant_id = s.tenant_id
                ORDER BY s.depth, a.tenant_id LIMIT ?",
                vec![
                    Value::from(tenant_id),
                    Value::from(max_depth),
                    Value::from(i64::try_from(limit).unwrap_or(i64::MAX)),
                ],
            ))
            .await
            .map_err(db_err("load descendants"))?;
        rows.iter()
            .map(|row| {
                let model = accounts::Model::from_query_result(row, "")
                    .map_err(db_err("read descendants"))?;
                let depth: i32 = row.try_get("", "depth").map_err(db_err("read depth"))?;
                Ok((
                    account_from_row(model)?,
                    u32::try_from(depth).unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Levels below `tenant_id` (0 for a leaf).
    async fn height<C: ConnectionTrait>(&self, conn: &C, tenant_id: &str) -> Result<u32> {
        let row = conn
            .query_one_raw(self.statement(
                "WITH RECURSIVE sub (tenant_id, depth) AS (
                    SELECT tenant_id, 1 FROM accounts WHERE parent_tenant_id = ?
                    UNION ALL
                    SELECT a.tenant_id, s.depth + 1
                    FROM accounts a JOIN sub s ON a.parent_tenant_id = s.tenant_id
                    WHERE s.depth < ?
                )
                SELECT CAST(COALESCE(MAX(depth), 0) AS INTEGER) AS height FROM sub",
                vec![Value::from(tenant_id), Value::from(RECURSION_GUARD)],
            ))
            .await
            .map_err(db_err("measure subtree"))?;
        let height: i32 = match row {
            Some(row) => row.try_get("", "height").map_err(db_err("read height"))?,
            None => 0,
        };
        Ok(u32::try_from(height).unwrap_or_default())
    }
}

#[async_trait]
impl HierarchyStore for Store {
    /// Puts an existing root account under a parent. Checked under the hierarchy lock, so two
    /// concurrent attaches cannot together create a cycle.
    async fn attach(
        &self,
        parent_id: &str,
        child_id: &str,
        claim: Option<Claim<'_>>,
    ) -> Result<Account> {
        let (_turn, txn) = self.begin_write().await?;
        self.claim_key(&txn, claim).await?;
        self.lock_hierarchy(&txn).await?;
        let mut child = load_live(&txn, child_id, true).await?;
        if parent_id == child_id {
            check_attach(&AttachFacts {
                parent_id,
                child_id,
                child_parent: None,
                parent_ancestors: &[],
                child_height: 0,
                max_depth: self.inner.max_depth,
            })?;
        }
        let parent = load_live(&txn, parent_id, false)
            .await
            .map_err(|_| Error::NotFound {
                reason: "PARENT_NOT_FOUND",
                message: format!("parent account `{parent_id}` does not exist"),
            })?;
        let ancestors = self
            .ancestor_ids(&txn, &parent.tenant_id, RECURSION_GUARD)
            .await?;
        let height = self.height(&txn, child_id).await?;
        check_attach(&AttachFacts {
            parent_id,
            child_id,
            child_parent: child.parent_tenant_id.as_deref(),
            parent_ancestors: &ancestors,
            child_height: height,
            max_depth: self.inner.max_depth,
        })?;
        let before = child.clone();
        child.parent_tenant_id = Some(parent.tenant_id);
        child.updated_at = domain::now();
        save(&txn, &child).await?;
        self.answer_key(&txn, claim, &child).await?;
        let entry = audit::account(Action::HierarchyAttach, Some(&before), Some(&child));
        self.commit(txn, vec![NewChange::hierarchy(&child, None)], vec![entry])
            .await?;
        Ok(child)
    }

    /// Makes `child_id` a root again; NOT_FOUND unless it is a direct child of `parent_id`.
    async fn detach(&self, parent_id: &str, child_id: &str) -> Result<Account> {
        let (_turn, txn) = self.begin_write().await?;
        self.lock_hierarchy(&txn).await?;
        let mut child = load_live(&txn, child_id, true).await?;
        if child.parent_tenant_id.as_deref() != Some(parent_id) {
            return Err(Error::NotFound {
                reason: "NOT_PARENT_AND_CHILD",
                message: format!("account `{child_id}` is not a sub-account of `{parent_id}`"),
            });
        }
        let before = child.clone();
        let old = child.parent_tenant_id.take();
        child.updated_at = domain::now();
        save(&txn, &child).await?;
        let entry = audit::account(Action::HierarchyDetach, Some(&before), Some(&child));
        self.commit(txn, vec![NewChange::hierarchy(&child, old)], vec![entry])
            .await?;
        Ok(child)
    }

    /// A page of the direct children or of every descendant, breadth first, ties by tenant
    /// ID. Only the page's rows are read in full (logos and metadata can be large).
    async fn list_descendants(
        &self,
        tenant_id: &str,
        direct_only: bool,
        limit: u32,
        offset: u32,
    ) -> Result<Page<HierarchyEntry>> {
        let conn = self.connection();
        load_live(conn, tenant_id, false).await?;
        let max_depth = if direct_only { 1 } else { RECURSION_GUARD };
        let sub = "WITH RECURSIVE sub (tenant_id, depth) AS (
                SELECT tenant_id, 1 FROM accounts
                WHERE parent_tenant_id = ? AND deleted_at IS NULL
                UNION ALL
                SELECT a.tenant_id, s.depth + 1
                FROM accounts a JOIN sub s ON a.parent_tenant_id = s.tenant_id
                WHERE a.deleted_at IS NULL AND s.depth < ?
            )";
        let bind = || vec![Value::from(tenant_id), Value::from(max_depth)];
        let total: i64 = conn
            .query_one_raw(self.statement(
                &format!("{sub} SELECT CAST(COUNT(*) AS BIGINT) AS total FROM sub"),
                bind(),
            ))
            .await
            .map_err(db_err("count descendants"))?
            .map(|row| row.try_get("", "total"))
            .transpose()
            .map_err(db_err("read descendant count"))?
            .unwrap_or_default();
        let mut values = bind();
        values.push(Value::from(i64::from(limit)));
        values.push(Value::from(i64::from(offset)));
        let rows = conn
            .query_all_raw(self.statement(
                &format!(
                    "{sub} SELECT a.*, s.depth AS depth FROM sub s
                    JOIN accounts a ON a.tenant_id = s.tenant_id
                    ORDER BY s.depth, a.tenant_id LIMIT ? OFFSET ?"
                ),
                values,
            ))
            .await
            .map_err(db_err("load descendants"))?;
        let items = rows
            .iter()
            .map(|row| {
                let model = accounts::Model::from_query_result(row, "")
                    .map_err(db_err("read descendants"))?;
                let depth: i32 = row.try_get("", "depth").map_err(db_err("read depth"))?;
                Ok(HierarchyEntry {
                    account: account_from_row(model)?,
                    depth: u32::try_from(depth).unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            total: u64::try_from(total).unwrap_or_default(),
            limit,
            offset,
        })
    }

    /// Ancestors, nearest first.
    async fn list_ancestors(&self, tenant_id: &str) -> Result<Vec<HierarchyEntry>> {
        let conn = self.connection();
        load_live(conn, tenant_id, false).await?;
        // A chain is never longer than the maximum depth: a corrupted (cyclic) one is cut there.
        let levels = i32::try_from(self.inner.max_depth).unwrap_or(i32::MAX);
        let ids = self.ancestor_ids(conn, tenant_id, levels).await?;
        let mut entries = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let account = load_live(conn, id, false).await?;
            entries.push(HierarchyEntry {
                account,
                depth: u32::try_from(i + 1).unwrap_or(u32::MAX),
            });
        }
        Ok(entries)
    }

    /// Which of `tenant_ids` users of `caller` may reach as sub-accounts: live descendants of a
    /// live `caller` whose settings open sub-accounts ([`SubAccountAccessType::opens_sub_accounts`]).
    /// Sorted, without duplicates. The walk up from every asked account always takes
    /// `max_depth` steps, starting from the asked IDs rather than from stored rows, so its cost
    /// says nothing about where, or whether, an account exists.
    async fn reachable_sub_accounts(
        &self,
        caller: &str,
        tenant_ids: &[String],
    ) -> Result<Vec<String>> {
        let conn = self.connection();
        let row = conn
            .query_one_raw(self.statement(
                "SELECT sub_account_access_type FROM accounts
                 WHERE tenant_id = ? AND deleted_at IS NULL",
                vec![Value::from(caller)],
            ))
            .await
            .map_err(db_err("load hierarchy settings"))?;
        let opens = match row {
            Some(row) => {
                let stored: String = row
                    .try_get("", "sub_account_access_type")
                    .map_err(db_err("read hierarchy settings"))?;
                SubAccountAccessType::parse(&stored)
                    .is_some_and(SubAccountAccessType::opens_sub_accounts)
            }
            None => false,
        };
        if !opens || tenant_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows_sql = vec!["(?)"; tenant_ids.len()].join(", ");
        let mut values: Vec<Value> = tenant_ids.iter().map(|t| Value::from(t.as_str())).collect();
        values.push(Value::from(
            i32::try_from(self.inner.max_depth).unwrap_or(i32::MAX),
        ));
        values.push(Value::from(caller));
        let rows = conn
            .query_all_raw(self.statement(
                &format!(
                    "WITH RECURSIVE up (start, cur, depth) AS (
                        SELECT v.column1, t.parent_tenant_id, 1
                        FROM (VALUES {rows_sql}) v
                        LEFT JOIN accounts t ON t.tenant_id = v.column1 AND t.deleted_at IS NULL
                        UNION ALL
                        SELECT u.start, a.parent_tenant_id, u.depth + 1
                        FROM up u
                        LEFT JOIN accounts a ON a.tenant_id = u.cur AND a.deleted_at IS NULL
                        WHERE u.depth < ?
                    )
                    SELECT DISTINCT start FROM up WHERE cur = ? ORDER BY start"
                ),
                values,
            ))
            .await
            .map_err(db_err("check sub-account scope"))?;
        rows.iter()
            .map(|row| {
                row.try_get::<String>("", "start")
                    .map_err(db_err("read sub-account scope"))
            })
            .collect()
    }

    async fn subtree(&self, tenant_id: &str, limit: u32) -> Result<Subtree> {
        let conn = self.connection();
        let root = load_live(conn, tenant_id, false).await?;
        // One more than asked: whether more lie below.
        let mut descendants: Vec<Account> = self
            .descendants(conn, tenant_id, false, u64::from(limit) + 1)
            .await?
            .into_iter()
            .map(|(account, _)| account)
            .collect();
        let truncated = descendants.len() > limit as usize;
        descendants.truncate(limit as usize);
        Ok(Subtree {
            root,
            descendants,
            truncated,
        })
    }
}
