//! Frontegg's vendor-entitlements snapshot, exactly as `@frontegg/client`'s
//! `EntitlementsClient` reads it: it polls `GET .../vendor-entitlements-snapshot-offset`
//! (every 30 s by default) and loads `GET .../vendor-entitlements` when the offset differs from
//! the one it holds, then decides checks locally. Environment token only (the SDK sends it as
//! `x-access-token`). The entitlement service builds and caches the snapshot
//! (`VendorSnapshotService`); this handler only renders its tuples.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::Value as Json_;
use tenantry_proto::entitlement::v1::{
    GetVendorSnapshotOffsetRequest, GetVendorSnapshotRequest, Treatment, VendorBundle,
    VendorEntitlement, VendorFeature,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::rules::{Rule, rule_from_pb, treatment_name};
use crate::{
    auth::Management,
    convert::opt_timestamp,
    error::{ApiError, ErrorBody},
    state::{AppState, grpc},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(snapshot_offset))
        .routes(routes!(snapshot))
}

/// `{"snapshotOffset"}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotOffset {
    /// Changes with every entitlement write and whenever a scheduled grant starts (below 2^53).
    pub snapshot_offset: u64,
}

/// The snapshot: `{"snapshotOffset", "data": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub snapshot_offset: u64,
    pub data: SnapshotData,
}

/// The snapshot's tuples, in Frontegg's order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotData {
    /// `[featureId, featureKey, [permissionKey...]]`.
    #[schema(value_type = Vec<Vec<Value>>)]
    pub features: Vec<(String, String, Vec<String>)>,
    /// `[bundleId, [featureId...], defaultTreatment, [rule...]]`: a bundle per granted feature
    /// (ID = the feature's ID, no rules), and per plan with targeting rules.
    #[schema(value_type = Vec<Vec<Value>>)]
    pub feature_bundles: Vec<(String, Vec<String>, &'static str, Vec<Rule>)>,
    /// `[bundleId, tenantId, userId | null, expirationDate | null]`.
    #[schema(value_type = Vec<Vec<Value>>)]
    pub entitlements: Vec<(String, String, Option<String>, Option<String>)>,
    /// Always empty: Tenantry's flags only take features away, and are folded into the
    /// bundles' rules (see the README's compatibility notes).
    #[schema(value_type = Vec<Vec<Value>>)]
    pub feature_flags: Vec<Json_>,
}

fn feature(f: VendorFeature) -> (String, String, Vec<String>) {
    (f.id, f.key, f.permissions)
}

fn bundle(b: VendorBundle) -> (String, Vec<String>, &'static str, Vec<Rule>) {
    let treatment = treatment_name(Treatment::try_from(b.default_treatment).unwrap_or_default());
    (
        b.id,
        b.feature_ids,
        treatment,
        b.rules.into_iter().map(rule_from_pb).collect(),
    )
}

fn entitlement(e: VendorEntitlement) -> (String, String, Option<String>, Option<String>) {
    (
        e.bundle_id,
        e.tenant_id,
        e.user_id,
        opt_timestamp(e.expires_at),
    )
}

fn etag(offset: u64) -> HeaderValue {
    // Quoted digits are always a valid header value.
    HeaderValue::from_str(&format!("\"{offset}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The offset an `If-None-Match` names, if it names one of ours (`"123"` or `W/"123"`).
fn unless_offset(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    value.split(',').find_map(|tag| {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
    })
}

/// The offset of the current snapshot (an SDK reloads when it differs from its own).
#[utoipa::path(get, path = "/entitlements/api/v1/vendor-entitlements-snapshot-offset",
    tag = "Vendor entitlements",
    responses((status = 200, body = SnapshotOffset), (status = "4XX", body = ErrorBody),
        (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn snapshot_offset(
    State(state): State<AppState>,
    Management(p): Management,
) -> Result<Json<SnapshotOffset>, ApiError> {
    let out = state
        .vendor_snapshots()
        .get_vendor_snapshot_offset(grpc(&p, GetVendorSnapshotOffsetRequest {}))
        .await?
        .into_inner();
    Ok(Json(SnapshotOffset {
        snapshot_offset: out.offset,
    }))
}

/// The snapshot an SDK decides from. `ETag` is the offset; `If-None-Match` with the current
/// one answers 304 without a body. Above 1,000,000 entitlements: 412.
#[utoipa::path(get, path = "/entitlements/api/v1/vendor-entitlements",
    tag = "Vendor entitlements",
    params(("If-None-Match" = Option<String>, Header, description = "an ETag this endpoint gave")),
    responses((status = 200, body = Snapshot), (status = 304, description = "unchanged"),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)),
    security(("bearer" = [])))]
async fn snapshot(
    State(state): State<AppState>,
    Management(p): Management,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request = GetVendorSnapshotRequest {
        unless_offset: unless_offset(&headers),
    };
    let mut stream = state
        .vendor_snapshots()
        .get_vendor_snapshot(grpc(&p, request))
        .await?
        .into_inner();
    let Some(first) = stream.message().await? else {
        return Err(ApiError::internal());
    };
    let offset = first.offset;
    if first.not_modified {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag(offset));
        return Ok(response);
    }
    let mut data = SnapshotData {
        features: first.features.into_iter().map(feature).collect(),
        feature_bundles: first.bundles.into_iter().map(bundle).collect(),
        entitlements: first.entitlements.into_iter().map(entitlement).collect(),
        feature_flags: Vec::new(),
    };
    while let Some(page) = stream.message().await? {
        data.entitlements
            .extend(page.entitlements.into_iter().map(entitlement));
    }
    let mut response = Json(Snapshot {
        snapshot_offset: offset,
        data,
    })
    .into_response();
    response.headers_mut().insert(header::ETAG, etag(offset));
    Ok(response)
}
