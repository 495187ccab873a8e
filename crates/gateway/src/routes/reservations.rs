//! Reservations, tag "Metering" (environment token): hold an amount of a metered feature for a
//! time-to-live, then commit (possibly less) or release — the entitlement service's
//! `MeteringService` reservation calls.

use axum::{Json, extract::State, response::Response};
use serde::{Deserialize, Serialize};
use tenantry_proto::entitlement::v1::{
    self as pb, CommitReservationRequest, GetReservationRequest, ReleaseReservationRequest,
    ReserveRequest,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::checks::{MeterJson, allow_reason_name, justification_name, meter_json};
use super::metering::whole;
use super::with_revision;
use crate::{
    auth::Management,
    convert::opt_timestamp,
    error::{ApiError, ErrorBody},
    extract::{ApiJson, ApiPath},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(reserve))
        .routes(routes!(get_reservation))
        .routes(routes!(commit_reservation))
        .routes(routes!(release_reservation))
}

/// Body of `POST /entitlements/api/v1/reservations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveBody {
    /// Idempotency key, unique per account among reservations.
    #[schema(min_length = 1, max_length = 255)]
    pub id: String,
    #[schema(min_length = 1, max_length = 255)]
    pub tenant_id: String,
    #[schema(min_length = 1, max_length = 255)]
    pub user_id: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    pub feature_key: String,
    /// 1 to 10^15; default 1.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    #[serde(default, deserialize_with = "whole")]
    pub amount: Option<i64>,
    /// How long the hold lives: 1 second to 7 days.
    #[schema(minimum = 1, maximum = 604_800)]
    #[serde(deserialize_with = "whole_ttl")]
    pub ttl_seconds: i64,
}

fn whole_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    whole(d)?.ok_or_else(|| serde::de::Error::custom("ttlSeconds is required"))
}

/// Body of a commit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitBody {
    /// What to draw: 0 to the amount held; default all of it.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(default, deserialize_with = "whole")]
    pub amount: Option<i64>,
}

/// A reservation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationJson {
    /// Commit or release it by this ID.
    pub id: String,
    /// The idempotency key it was asked for with.
    pub key: String,
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub feature_key: String,
    /// The amount held.
    pub amount: i64,
    /// HELD, REFUSED, COMMITTED, RELEASED or EXPIRED.
    pub status: &'static str,
    pub expires_at: Option<String>,
    /// What the commit drew.
    pub committed_amount: Option<i64>,
    pub created_at: Option<String>,
    /// When it was committed or released.
    pub settled_at: Option<String>,
}

fn status_name(s: pb::ReservationStatus) -> &'static str {
    match s {
        pb::ReservationStatus::Held => "HELD",
        pb::ReservationStatus::Refused => "REFUSED",
        pb::ReservationStatus::Committed => "COMMITTED",
        pb::ReservationStatus::Released => "RELEASED",
        pb::ReservationStatus::Expired => "EXPIRED",
        pb::ReservationStatus::Unspecified => "UNSPECIFIED",
    }
}

fn reservation(r: Option<pb::Reservation>) -> Result<ReservationJson, ApiError> {
    let r = r.ok_or_else(ApiError::internal)?;
    Ok(ReservationJson {
        status: status_name(r.status()),
        id: r.id,
        key: r.key,
        tenant_id: r.tenant_id,
        user_id: r.user_id,
        feature_key: r.feature_key,
        amount: r.amount,
        expires_at: opt_timestamp(r.expires_at),
        committed_amount: r.committed_amount,
        created_at: opt_timestamp(r.created_at),
        settled_at: opt_timestamp(r.settled_at),
    })
}

/// A reservation's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reserved {
    /// Status HELD when held, REFUSED when the balance did not allow it.
    pub reservation: ReservationJson,
    /// USAGE_LIMIT_REACHED, INSUFFICIENT_BALANCE, MISSING_FEATURE, ... when refused.
    pub justification: Option<String>,
    /// GRANT, CREDITS or SOFT_LIMIT_OVERAGE when held.
    pub allow_reason: Option<String>,
    /// The meter after the call, the hold deducted from its balance.
    pub meter: Option<MeterJson>,
    /// The stored answer of an earlier call with this id (nothing held again).
    pub replayed: bool,
    pub revision: u64,
}

/// A reservation after a commit or release.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettledJson {
    pub reservation: ReservationJson,
    /// The meter after the call.
    pub meter: Option<MeterJson>,
    /// The same commit or release was made before: nothing changed now.
    pub replayed: bool,
    pub revision: u64,
}

/// A commit's or release's answer, with its revision header.
fn settled(
    r: Option<pb::Reservation>,
    meter: Option<pb::MeterReading>,
    replayed: bool,
    revision: u64,
) -> Result<Response, ApiError> {
    let settled = SettledJson {
        reservation: reservation(r)?,
        meter: meter.map(meter_json),
        replayed,
        revision,
    };
    Ok(with_revision(Json(settled), revision))
}

/// Hold an amount of a metered feature for a time-to-live, if the balance allows it (a hard
/// limit refuses; a soft limit holds into overage). A live hold counts as spent by every
/// check until it is committed, released or expires. A retry with the same id returns the
/// first answer and holds nothing more.
#[utoipa::path(post, path = "/entitlements/api/v1/reservations", tag = "Metering",
    request_body = ReserveBody,
    responses((status = 200, body = Reserved), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn reserve(
    State(state): State<AppState>,
    Management(p): Management,
    ApiJson(b): ApiJson<ReserveBody>,
) -> Result<Response, ApiError> {
    let out = state
        .metering()
        .reserve(grpc(
            &p,
            ReserveRequest {
                id: b.id,
                tenant_id: b.tenant_id,
                user_id: b.user_id,
                feature_key: b.feature_key,
                amount: b.amount.unwrap_or(1),
                ttl_seconds: b.ttl_seconds,
            },
        ))
        .await?
        .into_inner();
    let revision = out.revision;
    let answer = Reserved {
        justification: justification_name(out.justification()).map(str::to_owned),
        allow_reason: allow_reason_name(out.allow_reason()).map(str::to_owned),
        reservation: reservation(out.reservation)?,
        meter: out.meter.map(meter_json),
        replayed: out.replayed,
        revision,
    };
    Ok(with_revision(Json(answer), revision))
}

/// A reservation and where it stands.
#[utoipa::path(get, path = "/entitlements/api/v1/reservations/{reservationId}",
    tag = "Metering", params(("reservationId" = String, Path)),
    responses((status = 200, body = ReservationJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_reservation(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReservationJson>, ApiError> {
    let out = state
        .metering()
        .get_reservation(grpc(&p, GetReservationRequest { id }))
        .await?
        .into_inner();
    Ok(Json(reservation(out.reservation)?))
}

/// Draw a held reservation's amount (or less: `amount`) and free the rest. Committing again
/// with the same amount answers the committed reservation (replayed); an expired (409
/// `RESERVATION_EXPIRED`), released or refused one (409 `RESERVATION_SETTLED`) is refused.
#[utoipa::path(post, path = "/entitlements/api/v1/reservations/{reservationId}/commit",
    tag = "Metering", params(("reservationId" = String, Path)),
    request_body(content = CommitBody, description = "Optional."),
    responses((status = 200, body = SettledJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn commit_reservation(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
    body: Option<ApiJson<CommitBody>>,
) -> Result<Response, ApiError> {
    let amount = body.map(|ApiJson(b)| b).unwrap_or_default().amount;
    let out = state
        .metering()
        .commit_reservation(grpc(&p, CommitReservationRequest { id, amount }))
        .await?
        .into_inner();
    settled(out.reservation, out.meter, out.replayed, out.revision)
}

/// Free a held reservation without drawing (idempotent; an expired one answers EXPIRED; a
/// committed one is refused with 409 `RESERVATION_SETTLED`).
#[utoipa::path(post, path = "/entitlements/api/v1/reservations/{reservationId}/release",
    tag = "Metering", params(("reservationId" = String, Path)),
    responses((status = 200, body = SettledJson), (status = "4XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn release_reservation(
    State(state): State<AppState>,
    Management(p): Management,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let out = state
        .metering()
        .release_reservation(grpc(&p, ReleaseReservationRequest { id }))
        .await?
        .into_inner();
    settled(out.reservation, out.meter, out.replayed, out.revision)
}
