//! The time-transition scheduler's cursor, its recorded decisions, and the scan of grants
//! with a transition due.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, Set, Statement,
};
use uuid::Uuid;

use super::entities::{grant, grant_transition, transition_cursor};
use super::{Store, db_err, grants};
use crate::app::ports::TransitionStore;
use crate::domain::transition::{Transition, TransitionKind};
use crate::domain::{DomainError, Grant, Result};

#[async_trait]
impl TransitionStore for Store {
    async fn lock_transition_cursor(
        &self,
        txn: &DatabaseTransaction,
    ) -> Result<Option<Option<DateTime<Utc>>>> {
        let mut query = transition_cursor::Entity::find_by_id(1);
        if self.is_postgres() {
            // One replica scans at a time; the others skip rather than queue behind it.
            query = query.lock_with_behavior(
                sea_orm::sea_query::LockType::Update,
                sea_orm::sea_query::LockBehavior::SkipLocked,
            );
        }
        let row = query
            .one(txn)
            .await
            .map_err(db_err("lock the transition cursor"))?;
        Ok(row.map(|r| r.scanned_until))
    }

    async fn set_transition_cursor(
        &self,
        txn: &DatabaseTransaction,
        until: DateTime<Utc>,
    ) -> Result<()> {
        transition_cursor::Entity::update_many()
            .col_expr(
                transition_cursor::Column::ScannedUntil,
                Expr::value(Some(until)),
            )
            .filter(transition_cursor::Column::Id.eq(1))
            .exec(txn)
            .await
            .map_err(db_err("move the transition cursor"))?;
        Ok(())
    }

    async fn grants_due(
        &self,
        txn: &DatabaseTransaction,
        kind: TransitionKind,
        lead_secs: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<Grant>> {
        due_query(kind, lead_secs, from, to)
            .limit(limit)
            .all(txn)
            .await
            .map_err(db_err("find grants with a transition due"))?
            .into_iter()
            .map(grants::to_domain)
            .collect()
    }

    async fn transition_cursor(&self) -> Result<Option<DateTime<Utc>>> {
        let row = transition_cursor::Entity::find_by_id(1)
            .one(&self.db)
            .await
            .map_err(db_err("read the transition cursor"))?;
        Ok(row.and_then(|r| r.scanned_until))
    }

    async fn any_grant_due(
        &self,
        kind: TransitionKind,
        lead_secs: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<bool> {
        let found = due_query(kind, lead_secs, from, to)
            .select_only()
            .column(grant::Column::Id)
            .limit(1)
            .into_tuple::<Uuid>()
            .one(&self.db)
            .await
            .map_err(db_err("look for grants with a transition due"))?;
        Ok(found.is_some())
    }

    async fn record_transition(
        &self,
        txn: &DatabaseTransaction,
        transition: &Transition,
        sent: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let inserted = grant_transition::Entity::insert(grant_transition::ActiveModel {
            grant_id: Set(transition.grant_id),
            kind: Set(transition.kind.as_str().to_owned()),
            lead_secs: Set(transition.lead_secs),
            anchor_at: Set(transition.anchor),
            sent: Set(sent),
            recorded_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([
                grant_transition::Column::GrantId,
                grant_transition::Column::Kind,
                grant_transition::Column::LeadSecs,
                grant_transition::Column::AnchorAt,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(db_err("record a grant transition"))?;
        Ok(inserted > 0)
    }

    async fn prune_transitions(
        &self,
        txn: &DatabaseTransaction,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        let result = grant_transition::Entity::delete_many()
            .filter(grant_transition::Column::AnchorAt.lt(before))
            .exec(txn)
            .await
            .map_err(db_err("prune grant transitions"))?;
        Ok(result.rows_affected)
    }

    async fn revision_in(&self, txn: &DatabaseTransaction) -> Result<u64> {
        let row = txn
            .query_one_raw(Statement::from_string(
                self.backend,
                "SELECT value FROM ent_revision WHERE id = 1",
            ))
            .await
            .map_err(db_err("read the revision"))?
            .ok_or_else(|| DomainError::internal("revision row is missing"))?;
        let revision: i64 = row
            .try_get("", "value")
            .map_err(db_err("read the revision"))?;
        Ok(u64::try_from(revision).unwrap_or(0))
    }
}

/// Grants whose `kind` transition (at `lead_secs`) hangs on an anchor in `(from, to]` and has no
/// recorded decision, earliest anchor first.
fn due_query(
    kind: TransitionKind,
    lead_secs: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Select<grant::Entity> {
    let anchor = match kind {
        TransitionKind::Started => grant::Column::StartsAt,
        TransitionKind::Expiring | TransitionKind::Expired => grant::Column::ExpiresAt,
    };
    // Decided already (by this scan's overlap with the last, or another replica).
    let decided = Query::select()
        .expr(Expr::val(1))
        .from(grant_transition::Entity)
        .and_where(
            Expr::col((grant_transition::Entity, grant_transition::Column::GrantId))
                .equals((grant::Entity, grant::Column::Id)),
        )
        .and_where(
            Expr::col((grant_transition::Entity, grant_transition::Column::Kind)).eq(kind.as_str()),
        )
        .and_where(
            Expr::col((grant_transition::Entity, grant_transition::Column::LeadSecs)).eq(lead_secs),
        )
        .and_where(
            Expr::col((grant_transition::Entity, grant_transition::Column::AnchorAt))
                .equals((grant::Entity, anchor)),
        )
        .to_owned();
    let mut query = grant::Entity::find();
    if kind == TransitionKind::Started {
        // Only a grant created to start later starts (most start as they are created:
        // passing over each of those would be a write per grant).
        query = query
            .filter(Expr::col(grant::Column::StartsAt).gt(Expr::col(grant::Column::CreatedAt)));
    }
    query
        .filter(anchor.gt(from))
        .filter(anchor.lte(to))
        .filter(Expr::exists(decided).not())
        .order_by_asc(anchor)
        .order_by_asc(grant::Column::Id)
}
