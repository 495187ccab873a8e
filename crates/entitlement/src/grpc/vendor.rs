//! `VendorSnapshotService`: Frontegg's vendor-entitlements snapshot, encoded from the
//! engine's cached snapshot and streamed in pages.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tenantry_proto::entitlement::v1::{
    self as pb, GetVendorSnapshotOffsetRequest, GetVendorSnapshotOffsetResponse,
    GetVendorSnapshotRequest, GetVendorSnapshotResponse,
    vendor_snapshot_service_server::VendorSnapshotService,
};
use tonic::{Request, Response, Status};

use super::convert;
use super::{Handler, Result};
use crate::domain::{VendorEntitlement, VendorSnapshot};

/// A page holds at most this many entitlements...
const PAGE_ITEMS: usize = 10_000;
/// ...and about this many bytes of IDs, well under the smallest `max_message_bytes` (64 KiB
/// is the floor; pages stay under it with room for the envelope).
const PAGE_BYTES: usize = 48 * 1024;

fn entitlement(e: &VendorEntitlement) -> pb::VendorEntitlement {
    pb::VendorEntitlement {
        bundle_id: e.feature.to_string(),
        tenant_id: e.tenant_id.clone(),
        user_id: e.user_id.clone(),
        expires_at: e.expires_at.map(convert::timestamp),
    }
}

/// The first message: offset, features and bundles.
fn head(s: &VendorSnapshot) -> GetVendorSnapshotResponse {
    GetVendorSnapshotResponse {
        offset: s.offset,
        not_modified: false,
        features: s
            .features
            .iter()
            .map(|f| pb::VendorFeature {
                id: f.id.to_string(),
                key: f.key.clone(),
                permissions: f.permissions.clone(),
            })
            .collect(),
        bundles: s
            .bundles
            .iter()
            .map(|b| pb::VendorBundle {
                id: b.id.clone(),
                feature_ids: b.feature_ids.iter().map(ToString::to_string).collect(),
                default_treatment: convert::treatment(b.default_treatment) as i32,
                rules: convert::rules_out(&b.rules),
            })
            .collect(),
        entitlements: Vec::new(),
    }
}

/// The page of entitlements starting at `from`, and where the next one starts.
fn page(s: &VendorSnapshot, from: usize) -> (GetVendorSnapshotResponse, usize) {
    let mut bytes = 0;
    let mut to = from;
    while to < s.entitlements.len() && to - from < PAGE_ITEMS && bytes < PAGE_BYTES {
        let e = &s.entitlements[to];
        bytes += 64 + e.tenant_id.len() + e.user_id.as_ref().map_or(0, String::len);
        to += 1;
    }
    let message = GetVendorSnapshotResponse {
        offset: s.offset,
        entitlements: s.entitlements[from..to].iter().map(entitlement).collect(),
        ..Default::default()
    };
    (message, to)
}

type SnapshotStream =
    Pin<Box<dyn Stream<Item = std::result::Result<GetVendorSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VendorSnapshotService for Handler {
    async fn get_vendor_snapshot_offset(
        &self,
        _request: Request<GetVendorSnapshotOffsetRequest>,
    ) -> Result<Response<GetVendorSnapshotOffsetResponse>> {
        let snapshot = self.engine.vendor_snapshot().await?;
        Ok(Response::new(GetVendorSnapshotOffsetResponse {
            offset: snapshot.offset,
            revision: snapshot.revision,
        }))
    }

    type GetVendorSnapshotStream = SnapshotStream;

    async fn get_vendor_snapshot(
        &self,
        request: Request<GetVendorSnapshotRequest>,
    ) -> Result<Response<SnapshotStream>> {
        let unless = request.into_inner().unless_offset;
        let snapshot: Arc<VendorSnapshot> = self.engine.vendor_snapshot().await?;
        if unless == Some(snapshot.offset) {
            let message = GetVendorSnapshotResponse {
                offset: snapshot.offset,
                not_modified: true,
                ..Default::default()
            };
            return Ok(Response::new(Box::pin(futures::stream::iter([Ok(
                message,
            )]))));
        }
        let first = head(&snapshot);
        // Pages are encoded as the client reads them, so a big snapshot is never copied whole.
        let pages = futures::stream::unfold(0usize, move |from| {
            let snapshot = snapshot.clone();
            async move {
                (from < snapshot.entitlements.len()).then(|| {
                    let (message, next) = page(&snapshot, from);
                    (Ok(message), next)
                })
            }
        });
        Ok(Response::new(Box::pin(
            futures::stream::iter([Ok::<_, Status>(first)]).chain(pages),
        )))
    }
}
