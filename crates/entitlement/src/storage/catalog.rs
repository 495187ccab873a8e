//! The catalog tables: features, plans (soft-deleted) with their feature links, flags and
//! routes, each row holding its domain document as JSON.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    Statement,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{Store, db_err, entities, from_json, to_json};
use crate::app::ports::CatalogStore;
use crate::domain::catalog::{Catalog, FeatureDoc, FlagDoc, Stored};
use crate::domain::{Plan, Result, Route};

#[async_trait]
impl CatalogStore for Store {
    /// Serializes catalog writers on the revision row (catalog documents are rewritten whole,
    /// so two concurrent catalog writes must not interleave). Grant writes skip this and only
    /// take the row at commit.
    async fn lock_catalog(&self, txn: &DatabaseTransaction) -> Result<()> {
        if self.is_postgres() {
            txn.execute_raw(Statement::from_string(
                self.backend,
                "SELECT value FROM ent_revision WHERE id = 1 FOR UPDATE",
            ))
            .await
            .map_err(db_err("lock the catalog"))?;
        }
        Ok(())
    }

    async fn catalog(&self) -> Result<Catalog> {
        self.catalog_on(self.connection()).await
    }

    async fn catalog_in(&self, txn: &DatabaseTransaction) -> Result<Catalog> {
        self.catalog_on(txn).await
    }

    async fn plans_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Plan>> {
        self.plans_by_ids_on(self.connection(), ids).await
    }

    async fn put_feature(
        &self,
        txn: &DatabaseTransaction,
        doc: &Stored<FeatureDoc>,
        insert: bool,
    ) -> Result<()> {
        use entities::feature::{ActiveModel, Entity};
        let model = ActiveModel {
            id: sea_orm::Set(doc.value.feature.id),
            key: sea_orm::Set(doc.value.feature.key.clone()),
            doc: sea_orm::Set(to_json(&doc.value)?),
            created_at: sea_orm::Set(doc.created_at),
            updated_at: sea_orm::Set(doc.updated_at),
        };
        if insert {
            Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert feature"))?;
        } else {
            Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update feature"))?;
        }
        Ok(())
    }

    async fn delete_feature(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        entities::feature::Entity::delete_by_id(id)
            .exec(txn)
            .await
            .map_err(db_err("delete feature"))?;
        Ok(())
    }

    /// Writes a plan and its feature links (`feature_ids`: the ids of its features).
    async fn put_plan(
        &self,
        txn: &DatabaseTransaction,
        plan: &Stored<Plan>,
        feature_ids: &[Uuid],
        insert: bool,
    ) -> Result<()> {
        use entities::{plan, plan_feature};
        let model = plan::ActiveModel {
            id: sea_orm::Set(plan.value.id),
            key: sea_orm::Set(plan.value.key.clone()),
            doc: sea_orm::Set(to_json(&plan.value)?),
            created_at: sea_orm::Set(plan.created_at),
            updated_at: sea_orm::Set(plan.updated_at),
            deleted_at: sea_orm::Set(None),
        };
        if insert {
            plan::Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert plan"))?;
        } else {
            plan::Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update plan"))?;
            plan_feature::Entity::delete_many()
                .filter(plan_feature::Column::PlanId.eq(plan.value.id))
                .exec(txn)
                .await
                .map_err(db_err("unlink plan features"))?;
        }
        if !feature_ids.is_empty() {
            plan_feature::Entity::insert_many(feature_ids.iter().map(|&feature_id| {
                plan_feature::ActiveModel {
                    plan_id: sea_orm::Set(plan.value.id),
                    feature_id: sea_orm::Set(feature_id),
                }
            }))
            .exec_without_returning(txn)
            .await
            .map_err(db_err("link plan features"))?;
        }
        Ok(())
    }

    /// Soft-deletes a plan (grants keep referring to it) and drops its feature links.
    async fn delete_plan(
        &self,
        txn: &DatabaseTransaction,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use entities::{plan, plan_feature};
        plan_feature::Entity::delete_many()
            .filter(plan_feature::Column::PlanId.eq(id))
            .exec(txn)
            .await
            .map_err(db_err("unlink plan features"))?;
        plan::Entity::update_many()
            .col_expr(
                plan::Column::DeletedAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(plan::Column::Id.eq(id))
            .exec(txn)
            .await
            .map_err(db_err("delete plan"))?;
        Ok(())
    }

    async fn put_flag(
        &self,
        txn: &DatabaseTransaction,
        flag: &Stored<FlagDoc>,
        insert: bool,
    ) -> Result<()> {
        use entities::feature_flag::{ActiveModel, Entity};
        let model = ActiveModel {
            id: sea_orm::Set(flag.value.flag.id),
            feature_id: sea_orm::Set(flag.value.feature_id),
            doc: sea_orm::Set(to_json(&flag.value)?),
            created_at: sea_orm::Set(flag.created_at),
            updated_at: sea_orm::Set(flag.updated_at),
        };
        if insert {
            Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert feature flag"))?;
        } else {
            Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update feature flag"))?;
        }
        Ok(())
    }

    async fn delete_flag(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        entities::feature_flag::Entity::delete_by_id(id)
            .exec(txn)
            .await
            .map_err(db_err("delete feature flag"))?;
        Ok(())
    }

    async fn put_route(
        &self,
        txn: &DatabaseTransaction,
        route: &Stored<Route>,
        insert: bool,
    ) -> Result<()> {
        use entities::route::{ActiveModel, Entity};
        let model = ActiveModel {
            id: sea_orm::Set(route.value.id),
            method: sea_orm::Set(route.value.method.clone()),
            path: sea_orm::Set(route.value.path.clone()),
            doc: sea_orm::Set(to_json(&route.value)?),
            created_at: sea_orm::Set(route.created_at),
            updated_at: sea_orm::Set(route.updated_at),
        };
        if insert {
            Entity::insert(model)
                .exec_without_returning(txn)
                .await
                .map_err(db_err("insert route"))?;
        } else {
            Entity::update(model)
                .exec(txn)
                .await
                .map_err(db_err("update route"))?;
        }
        Ok(())
    }

    async fn delete_route(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        entities::route::Entity::delete_by_id(id)
            .exec(txn)
            .await
            .map_err(db_err("delete route"))?;
        Ok(())
    }
}

impl Store {
    /// The live catalog, ordered by creation (then id).
    pub(super) async fn catalog_on(&self, conn: &impl ConnectionTrait) -> Result<Catalog> {
        use entities::{feature, feature_flag, plan, route};
        let features = feature::Entity::find()
            .order_by_asc(feature::Column::CreatedAt)
            .order_by_asc(feature::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load features"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        let plans = plan::Entity::find()
            .filter(plan::Column::DeletedAt.is_null())
            .order_by_asc(plan::Column::CreatedAt)
            .order_by_asc(plan::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load plans"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        let flags = feature_flag::Entity::find()
            .order_by_asc(feature_flag::Column::CreatedAt)
            .order_by_asc(feature_flag::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load feature flags"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        let routes = route::Entity::find()
            .order_by_asc(route::Column::CreatedAt)
            .order_by_asc(route::Column::Id)
            .all(conn)
            .await
            .map_err(db_err("load routes"))?
            .into_iter()
            .map(|r| stored(&r.doc, r.created_at, r.updated_at))
            .collect::<Result<_>>()?;
        Ok(Catalog {
            features,
            plans,
            flags,
            routes,
        })
    }

    /// Any plan by id, deleted ones included (grants keep pointing at them).
    async fn plans_by_ids_on(
        &self,
        conn: &impl ConnectionTrait,
        ids: &[Uuid],
    ) -> Result<Vec<Plan>> {
        use entities::plan::{Column, Entity};
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Entity::find()
            .filter(Column::Id.is_in(ids.iter().copied()))
            .all(conn)
            .await
            .map_err(db_err("load plans"))?
            .into_iter()
            .map(|r| from_json(&r.doc))
            .collect()
    }
}

fn stored<T: for<'de> Deserialize<'de>>(
    doc: &str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> Result<Stored<T>> {
    Ok(Stored {
        value: from_json(doc)?,
        created_at,
        updated_at,
    })
}
