//! Webhook endpoints, the event outbox and the deliveries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::entities::{webhook_delivery, webhook_endpoint, webhook_outbox};
use super::{Store, db_err, from_json, to_json};
use crate::app::ports::{AttemptRecord, DueDelivery, Transactional, WebhookStore};
use crate::domain::webhook::{Delivery, DeliveryStatus, Endpoint, Event};
use crate::domain::{DomainError, Result};

/// An outbox event as stored.
#[derive(Debug, Serialize, Deserialize)]
struct OutboxEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    subject: Option<String>,
    body: String,
}

fn endpoint(row: webhook_endpoint::Model) -> Result<Endpoint> {
    Ok(Endpoint {
        id: row.id,
        url: row.url,
        event_types: from_json(&row.event_types)?,
        account_ids: from_json(&row.account_ids)?,
        enabled: row.enabled,
        description: row.description,
        disabled_reason: row.disabled_reason,
        failing_since: row.failing_since,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn delivery(row: webhook_delivery::Model) -> Result<Delivery> {
    Ok(Delivery {
        id: row.id,
        endpoint_id: row.endpoint_id,
        event_id: row.event_id,
        event_type: row.event_type,
        subject: row.subject,
        status: DeliveryStatus::parse(&row.status)
            .ok_or_else(|| DomainError::internal("unknown webhook delivery status"))?,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        next_attempt_at: row.next_attempt_at,
        last_attempt_at: row.last_attempt_at,
        last_status_code: row.last_status_code.and_then(|c| u16::try_from(c).ok()),
        last_latency_ms: row.last_latency_ms.map(|l| u64::try_from(l).unwrap_or(0)),
        last_response_excerpt: row.last_response_excerpt,
        last_error: row.last_error,
        created_at: row.created_at,
    })
}

impl Store {
    /// Locks the fan-out row: PostgreSQL skips it when another replica holds it (`false`);
    /// SQLite's write transaction already excludes every other writer.
    async fn lock_fanout(&self, txn: &DatabaseTransaction) -> Result<bool> {
        if !self.is_postgres() {
            return Ok(true);
        }
        let row = txn
            .query_one_raw(Statement::from_string(
                self.backend,
                "SELECT id FROM ent_webhook_fanout WHERE id = 1 FOR UPDATE SKIP LOCKED",
            ))
            .await
            .map_err(db_err("lock the webhook fan-out"))?;
        Ok(row.is_some())
    }

    async fn webhooks_wanted_on(&self, conn: &impl ConnectionTrait) -> Result<bool> {
        let found = webhook_endpoint::Entity::find()
            .select_only()
            .column(webhook_endpoint::Column::Id)
            .filter(webhook_endpoint::Column::Enabled.eq(true))
            .limit(1)
            .into_tuple::<Uuid>()
            .one(conn)
            .await
            .map_err(db_err("look for webhook endpoints"))?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl WebhookStore for Store {
    async fn webhooks_wanted(&self, txn: &DatabaseTransaction) -> Result<bool> {
        self.webhooks_wanted_on(txn).await
    }

    async fn webhooks_wanted_now(&self) -> Result<bool> {
        self.webhooks_wanted_on(&self.db).await
    }

    async fn enqueue_events(
        &self,
        txn: &DatabaseTransaction,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let stored: Vec<OutboxEvent> = events
            .iter()
            .map(|e| OutboxEvent {
                id: e.id.clone(),
                event_type: e.event_type.to_owned(),
                subject: e.subject.clone(),
                body: e.body.clone(),
            })
            .collect();
        webhook_outbox::Entity::insert(webhook_outbox::ActiveModel {
            events: Set(to_json(&stored)?),
            created_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(txn)
        .await
        .map_err(db_err("record webhook events"))?;
        Ok(())
    }

    async fn fan_out(&self, limit: u64, now: DateTime<Utc>) -> Result<usize> {
        // Looked at outside a write transaction first: an idle poll takes no write lock.
        let any = webhook_outbox::Entity::find()
            .select_only()
            .column(webhook_outbox::Column::Position)
            .limit(1)
            .into_tuple::<i64>()
            .one(&self.db)
            .await
            .map_err(db_err("read the webhook outbox"))?;
        if any.is_none() {
            return Ok(0);
        }
        let txn = self.begin().await?;
        if !self.lock_fanout(&txn).await? {
            return Ok(0);
        }
        let rows = webhook_outbox::Entity::find()
            .order_by_asc(webhook_outbox::Column::Position)
            .limit(limit)
            .all(&txn)
            .await
            .map_err(db_err("read the webhook outbox"))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let endpoints = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Enabled.eq(true))
            .order_by_asc(webhook_endpoint::Column::Id)
            .all(&txn)
            .await
            .map_err(db_err("read webhook endpoints"))?
            .into_iter()
            .map(endpoint)
            .collect::<Result<Vec<_>>>()?;
        let mut created = Vec::new();
        for row in &rows {
            for event in from_json::<Vec<OutboxEvent>>(&row.events)? {
                for e in endpoints
                    .iter()
                    .filter(|e| e.wants(&event.event_type, event.subject.as_deref()))
                {
                    created.push(webhook_delivery::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        endpoint_id: Set(e.id),
                        event_id: Set(event.id.clone()),
                        event_type: Set(event.event_type.clone()),
                        subject: Set(event.subject.clone()),
                        body: Set(event.body.clone()),
                        status: Set(DeliveryStatus::Pending.as_str().to_owned()),
                        attempts: Set(0),
                        next_attempt_at: Set(Some(now)),
                        last_attempt_at: Set(None),
                        last_status_code: Set(None),
                        last_latency_ms: Set(None),
                        last_response_excerpt: Set(None),
                        last_error: Set(None),
                        created_at: Set(now),
                    });
                }
            }
        }
        let count = rows.len();
        // Bounded statements: SQLite takes at most 32,766 bound values.
        for chunk in created.chunks(500) {
            webhook_delivery::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&txn)
                .await
                .map_err(db_err("queue webhook deliveries"))?;
        }
        webhook_outbox::Entity::delete_many()
            .filter(
                webhook_outbox::Column::Position
                    .is_in(rows.iter().map(|r| r.position).collect::<Vec<_>>()),
            )
            .exec(&txn)
            .await
            .map_err(db_err("clear the webhook outbox"))?;
        txn.commit().await.map_err(db_err("commit"))?;
        Ok(count)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DueDelivery>> {
        let due = webhook_delivery::Entity::find()
            .select_only()
            .column(webhook_delivery::Column::Id)
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
            .limit(1)
            .into_tuple::<Uuid>()
            .one(&self.db)
            .await
            .map_err(db_err("read due webhook deliveries"))?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let txn = self.begin().await?;
        let mut query = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
            .filter(
                webhook_delivery::Column::EndpointId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(webhook_endpoint::Column::Id)
                        .from(webhook_endpoint::Entity)
                        .and_where(webhook_endpoint::Column::Enabled.eq(true))
                        .to_owned(),
                ),
            )
            .order_by_asc(webhook_delivery::Column::NextAttemptAt)
            .limit(limit);
        if self.is_postgres() {
            // Replicas claim disjoint deliveries without waiting for each other.
            query = query.lock_with_behavior(
                sea_orm::sea_query::LockType::Update,
                sea_orm::sea_query::LockBehavior::SkipLocked,
            );
        }
        let rows = query
            .all(&txn)
            .await
            .map_err(db_err("read due webhook deliveries"))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::NextAttemptAt,
                Expr::value(lease_until),
            )
            .filter(webhook_delivery::Column::Id.is_in(ids))
            .exec(&txn)
            .await
            .map_err(db_err("claim webhook deliveries"))?;
        let endpoint_ids: Vec<Uuid> = rows.iter().map(|r| r.endpoint_id).collect();
        let endpoints = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Id.is_in(endpoint_ids))
            .all(&txn)
            .await
            .map_err(db_err("read webhook endpoints"))?;
        txn.commit().await.map_err(db_err("commit"))?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let e = endpoints.iter().find(|e| e.id == row.endpoint_id)?;
                Some(DueDelivery {
                    id: row.id,
                    endpoint_id: row.endpoint_id,
                    url: e.url.clone(),
                    secret: e.secret.clone(),
                    event_id: row.event_id,
                    body: row.body,
                    attempts: u32::try_from(row.attempts).unwrap_or(0),
                })
            })
            .collect())
    }

    async fn record_attempt(
        &self,
        delivery_id: Uuid,
        endpoint_id: Uuid,
        attempt: &AttemptRecord,
    ) -> Result<Option<DateTime<Utc>>> {
        let txn = self.begin().await?;
        let status = if attempt.succeeded {
            DeliveryStatus::Succeeded
        } else if attempt.next_attempt_at.is_some() {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Failed
        };
        webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                Expr::value(status.as_str()),
            )
            .col_expr(
                webhook_delivery::Column::Attempts,
                Expr::col(webhook_delivery::Column::Attempts).add(1),
            )
            .col_expr(
                webhook_delivery::Column::NextAttemptAt,
                Expr::value(attempt.next_attempt_at),
            )
            .col_expr(
                webhook_delivery::Column::LastAttemptAt,
                Expr::value(Some(attempt.at)),
            )
            .col_expr(
                webhook_delivery::Column::LastStatusCode,
                Expr::value(attempt.status_code.map(i32::from)),
            )
            .col_expr(
                webhook_delivery::Column::LastLatencyMs,
                Expr::value(Some(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))),
            )
            .col_expr(
                webhook_delivery::Column::LastResponseExcerpt,
                Expr::value(attempt.response_excerpt.clone()),
            )
            .col_expr(
                webhook_delivery::Column::LastError,
                Expr::value(attempt.error.clone()),
            )
            .filter(webhook_delivery::Column::Id.eq(delivery_id))
            .exec(&txn)
            .await
            .map_err(db_err("record a webhook attempt"))?;
        let Some(row) = webhook_endpoint::Entity::find_by_id(endpoint_id)
            .one(&txn)
            .await
            .map_err(db_err("read a webhook endpoint"))?
        else {
            txn.commit().await.map_err(db_err("commit"))?;
            return Ok(None);
        };
        let failing_since = if attempt.succeeded {
            None
        } else {
            Some(row.failing_since.unwrap_or(attempt.at))
        };
        if failing_since != row.failing_since {
            let mut active: webhook_endpoint::ActiveModel = row.into();
            active.failing_since = Set(failing_since);
            active
                .update(&txn)
                .await
                .map_err(db_err("record a webhook endpoint's failures"))?;
        }
        txn.commit().await.map_err(db_err("commit"))?;
        Ok(failing_since)
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>, limit: u64) -> Result<u64> {
        let ids: Vec<Uuid> = webhook_delivery::Entity::find()
            .select_only()
            .column(webhook_delivery::Column::Id)
            .filter(webhook_delivery::Column::CreatedAt.lt(before))
            .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending.as_str()))
            .limit(limit)
            .into_tuple::<Uuid>()
            .all(&self.db)
            .await
            .map_err(db_err("find old webhook deliveries"))?;
        if ids.is_empty() {
            return Ok(0);
        }
        let result = webhook_delivery::Entity::delete_many()
            .filter(webhook_delivery::Column::Id.is_in(ids))
            .filter(webhook_delivery::Column::Status.ne(DeliveryStatus::Pending.as_str()))
            .exec(&self.db)
            .await
            .map_err(db_err("prune webhook deliveries"))?;
        Ok(result.rows_affected)
    }

    async fn disable_endpoint(&self, id: Uuid, reason: &str, now: DateTime<Utc>) -> Result<()> {
        webhook_endpoint::Entity::update_many()
            .col_expr(webhook_endpoint::Column::Enabled, Expr::value(false))
            .col_expr(
                webhook_endpoint::Column::DisabledReason,
                Expr::value(Some(reason.to_owned())),
            )
            .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_endpoint::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(db_err("disable a webhook endpoint"))?;
        Ok(())
    }

    async fn count_endpoints(&self) -> Result<usize> {
        let count = webhook_endpoint::Entity::find()
            .count(&self.db)
            .await
            .map_err(db_err("count webhook endpoints"))?;
        Ok(count as usize)
    }

    async fn insert_endpoint(
        &self,
        txn: &DatabaseTransaction,
        e: &Endpoint,
        secret: &str,
    ) -> Result<()> {
        webhook_endpoint::Entity::insert(webhook_endpoint::ActiveModel {
            id: Set(e.id),
            url: Set(e.url.clone()),
            event_types: Set(to_json(&e.event_types)?),
            account_ids: Set(to_json(&e.account_ids)?),
            enabled: Set(e.enabled),
            description: Set(e.description.clone()),
            secret: Set(secret.to_owned()),
            disabled_reason: Set(e.disabled_reason.clone()),
            failing_since: Set(e.failing_since),
            created_at: Set(e.created_at),
            updated_at: Set(e.updated_at),
        })
        .exec_without_returning(txn)
        .await
        .map_err(db_err("create a webhook endpoint"))?;
        Ok(())
    }

    async fn endpoint(&self, id: Uuid) -> Result<Option<Endpoint>> {
        webhook_endpoint::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(db_err("read a webhook endpoint"))?
            .map(endpoint)
            .transpose()
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>> {
        webhook_endpoint::Entity::find()
            .order_by_asc(webhook_endpoint::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err("list webhook endpoints"))?
            .into_iter()
            .map(endpoint)
            .collect()
    }

    async fn update_endpoint(&self, txn: &DatabaseTransaction, e: &Endpoint) -> Result<bool> {
        let result = webhook_endpoint::Entity::update_many()
            .col_expr(webhook_endpoint::Column::Url, Expr::value(e.url.clone()))
            .col_expr(
                webhook_endpoint::Column::EventTypes,
                Expr::value(to_json(&e.event_types)?),
            )
            .col_expr(
                webhook_endpoint::Column::AccountIds,
                Expr::value(to_json(&e.account_ids)?),
            )
            .col_expr(webhook_endpoint::Column::Enabled, Expr::value(e.enabled))
            .col_expr(
                webhook_endpoint::Column::Description,
                Expr::value(e.description.clone()),
            )
            .col_expr(
                webhook_endpoint::Column::DisabledReason,
                Expr::value(e.disabled_reason.clone()),
            )
            .col_expr(
                webhook_endpoint::Column::FailingSince,
                Expr::value(e.failing_since),
            )
            .col_expr(
                webhook_endpoint::Column::UpdatedAt,
                Expr::value(e.updated_at),
            )
            .filter(webhook_endpoint::Column::Id.eq(e.id))
            .exec(txn)
            .await
            .map_err(db_err("update a webhook endpoint"))?;
        Ok(result.rows_affected > 0)
    }

    async fn set_endpoint_secret(
        &self,
        txn: &DatabaseTransaction,
        id: Uuid,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let result = webhook_endpoint::Entity::update_many()
            .col_expr(
                webhook_endpoint::Column::Secret,
                Expr::value(secret.to_owned()),
            )
            .col_expr(webhook_endpoint::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_endpoint::Column::Id.eq(id))
            .exec(txn)
            .await
            .map_err(db_err("rotate a webhook secret"))?;
        Ok(result.rows_affected > 0)
    }

    async fn delete_endpoint(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<bool> {
        webhook_delivery::Entity::delete_many()
            .filter(webhook_delivery::Column::EndpointId.eq(id))
            .exec(txn)
            .await
            .map_err(db_err("delete webhook deliveries"))?;
        let result = webhook_endpoint::Entity::delete_by_id(id)
            .exec(txn)
            .await
            .map_err(db_err("delete a webhook endpoint"))?;
        Ok(result.rows_affected > 0)
    }

    async fn deliveries(
        &self,
        endpoint_id: Uuid,
        before: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Delivery>> {
        let mut query = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id));
        if let Some(before) = before {
            query = query.filter(webhook_delivery::Column::Id.lt(before));
        }
        query
            .order_by_desc(webhook_delivery::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err("list webhook deliveries"))?
            .into_iter()
            .map(delivery)
            .collect()
    }

    async fn redeliver(
        &self,
        txn: &DatabaseTransaction,
        endpoint_id: Uuid,
        delivery_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>> {
        let Some(row) = webhook_delivery::Entity::find_by_id(delivery_id)
            .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
            .one(txn)
            .await
            .map_err(db_err("read a webhook delivery"))?
        else {
            return Ok(None);
        };
        let mut active: webhook_delivery::ActiveModel = row.into();
        active.status = Set(DeliveryStatus::Pending.as_str().to_owned());
        active.attempts = Set(0);
        active.next_attempt_at = Set(Some(now));
        let row = active
            .update(txn)
            .await
            .map_err(db_err("schedule a webhook redelivery"))?;
        delivery(row).map(Some)
    }
}
