//! Account migration, tag "Account migration": bulk imports submitted at once and run in the
//! background by the tenant service, and their status.

use axum::{Json, extract::State, response::IntoResponse};
use futures::stream;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tenantry_common::{ids::MAX_TENANT_ID_CHARS, limits::MAX_MIGRATION_REQUEST_ITEMS};
use tenantry_proto::tenant::v1::{
    GetMigrationStatusRequest, GetMigrationStatusResponse, MigrationItem, MigrationState,
    SubmitMigrationRequest, migration_item,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{ListMetadata, PageQuery, accounts::CreateTenantBody, page};
use crate::{
    auth::Management,
    convert::opt_timestamp,
    error::{ApiError, ErrorBody, ItemError, camel_path},
    extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKey},
    state::{AppState, grpc},
};

/// Items per message of the migration stream.
const MIGRATION_CHUNK: usize = 1_000;
/// Migration bodies may be this large whatever the general body limit (10,000 accounts).
pub const MIGRATION_BODY_LIMIT: usize = 64 * 1024 * 1024;

pub fn router(body_limit: usize) -> OpenApiRouter<AppState> {
    let (schemas, paths, migrate) = routes!(submit_migration);
    let migrate = migrate.layer(axum::extract::DefaultBodyLimit::max(
        body_limit.max(MIGRATION_BODY_LIMIT),
    ));
    OpenApiRouter::new()
        .routes((schemas, paths, migrate))
        .routes(routes!(migration_status))
}

/// One account to migrate: a bare ID or a full account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MigrationItemBody {
    Id(String),
    Account(Box<CreateTenantBody>),
}

/// Body of `POST /tenants/resources/migrations/v1/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    /// 1 to 10,000 accounts (more is refused: submit larger imports in several requests). A
    /// bare ID longer than 255 characters refuses the whole request; other bad items are
    /// reported one by one in the migration's status.
    #[schema(min_items = 1, max_items = 10_000)]
    pub tenants: Vec<MigrationItemBody>,
}

/// A submitted migration.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationAccepted {
    pub migration_id: String,
    pub total_items: u64,
}

/// A migration's progress and one page of its item errors.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub migration_id: String,
    /// `pending`, `running`, `completed` or `failed`.
    pub status: String,
    pub total_items: u64,
    pub processed_items: u64,
    pub created_items: u64,
    pub skipped_items: u64,
    pub failed_items: u64,
    pub failure_message: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub errors: Vec<ItemError>,
    pub errors_metadata: ListMetadata,
}

impl MigrateBody {
    /// The upload as the messages of the migration stream, at most [`MIGRATION_CHUNK`] items
    /// each, so no message nears the gRPC limit however many accounts the body holds.
    pub(crate) fn into_requests(self) -> Result<Vec<SubmitMigrationRequest>, ApiError> {
        if self.tenants.is_empty() || self.tenants.len() > MAX_MIGRATION_REQUEST_ITEMS {
            return Err(ApiError::invalid_field(
                "tenants",
                format!("must list 1 to {MAX_MIGRATION_REQUEST_ITEMS} accounts"),
            ));
        }
        let mut items = Vec::with_capacity(self.tenants.len());
        for (i, t) in self.tenants.into_iter().enumerate() {
            let item = match t {
                // Longer is a client sending too much: the whole request is refused. Shorter
                // bad IDs are the item's own error in the migration's report.
                MigrationItemBody::Id(id) if id.chars().count() > MAX_TENANT_ID_CHARS => {
                    return Err(ApiError::invalid_field(
                        &format!("tenants[{i}]"),
                        format!("an account ID is at most {MAX_TENANT_ID_CHARS} characters"),
                    ));
                }
                MigrationItemBody::Id(id) => migration_item::Item::TenantId(id),
                MigrationItemBody::Account(a) => {
                    migration_item::Item::Account(a.into_new_account(&format!("tenants[{i}]."))?)
                }
            };
            items.push(MigrationItem { item: Some(item) });
        }
        let mut chunks = Vec::with_capacity(items.len().div_ceil(MIGRATION_CHUNK));
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            chunks.push(SubmitMigrationRequest {
                items: items.by_ref().take(MIGRATION_CHUNK).collect(),
                idempotency_key: None,
            });
        }
        Ok(chunks)
    }
}

impl MigrationStatus {
    pub(crate) fn from_pb(out: GetMigrationStatusResponse) -> Result<Self, ApiError> {
        let m = out.migration.ok_or_else(ApiError::internal)?;
        let status = match m.state() {
            MigrationState::Pending | MigrationState::Unspecified => "pending",
            MigrationState::Running => "running",
            MigrationState::Completed => "completed",
            MigrationState::Failed => "failed",
        };
        Ok(Self {
            migration_id: m.migration_id,
            status: status.to_owned(),
            total_items: m.total_items,
            processed_items: m.processed_items,
            created_items: m.created_items,
            skipped_items: m.skipped_items,
            failed_items: m.failed_items,
            failure_message: m.failure_message,
            created_at: opt_timestamp(m.created_at),
            started_at: opt_timestamp(m.started_at),
            finished_at: opt_timestamp(m.finished_at),
            errors: out
                .errors
                .into_iter()
                .map(|e| ItemError {
                    index: e.index,
                    id: e.id,
                    field: camel_path(&e.field),
                    reason: e.reason,
                    message: e.message,
                })
                .collect(),
            errors_metadata: out.errors_page.into(),
        })
    }
}

/// Submit accounts to import (bare IDs or full accounts); answers 202 at once
/// (`Idempotency-Key` makes retries safe: one job, whatever the retries).
#[utoipa::path(post, path = "/tenants/resources/migrations/v1/tenants", tag = "Account migration",
    params(IdempotencyKey),
    request_body = MigrateBody,
    responses((status = 202, body = MigrationAccepted), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn submit_migration(
    State(state): State<AppState>,
    Management(p): Management,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(body): ApiJson<MigrateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let mut requests = body.into_requests()?;
    // The first chunk carries the key for the whole stream.
    if let Some(first) = requests.first_mut() {
        first.idempotency_key = idempotency_key;
    }
    let out = state
        .migrations()
        .submit_migration(grpc(&p, stream::iter(requests)))
        .await?
        .into_inner();
    Ok((
        StatusCode::ACCEPTED,
        Json(MigrationAccepted {
            migration_id: out.migration_id,
            total_items: out.total_items,
        }),
    ))
}

/// A migration's state, counts and a page of its item errors.
#[utoipa::path(get, path = "/tenants/resources/migrations/v1/tenants/status/{migrationId}", tag = "Account migration",
    params(("migrationId" = String, Path), PageQuery),
    responses((status = 200, body = MigrationStatus), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn migration_status(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(migration_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<MigrationStatus>, ApiError> {
    let out = state
        .migrations()
        .get_migration_status(grpc(
            &p,
            GetMigrationStatusRequest {
                migration_id,
                errors_page: page(q.limit, q.offset),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(MigrationStatus::from_pb(out)?))
}
