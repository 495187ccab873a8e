//! Frontegg's vendor-entitlements snapshot (what `@frontegg/client` loads): built from the
//! serving index, never from storage, and kept until a write or a grant's start makes it stale,
//! so an SDK polling the offset costs a comparison.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::Engine;
use super::ports::Storage;
use crate::domain::{DomainError, Result, VendorSnapshot};

/// The newest snapshot built. Behind an async lock, so concurrent pollers wait for one build
/// instead of each building their own.
#[derive(Debug, Default)]
pub struct VendorCache(Mutex<Option<Arc<VendorSnapshot>>>);

impl<S: Storage> Engine<S> {
    /// The current snapshot: the cached one while it describes the index at "now", else a new
    /// one (built off the async runtime: it walks every grant).
    pub async fn vendor_snapshot(&self) -> Result<Arc<VendorSnapshot>> {
        let index = self.index.current();
        let now = self.now();
        let mut cached = self.vendor.0.lock().await;
        if let Some(snapshot) = cached.as_ref().filter(|s| s.is_current(&index, now)) {
            return Ok(snapshot.clone());
        }
        let built = tokio::task::spawn_blocking(move || index.vendor_snapshot(now))
            .await
            .map_err(|e| DomainError::internal(format!("building the vendor snapshot: {e}")))?
            .map_err(|too_large| DomainError::FailedPrecondition(too_large.to_string()))?;
        let built = Arc::new(built);
        *cached = Some(built.clone());
        Ok(built)
    }
}
