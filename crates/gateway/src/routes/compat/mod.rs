//! The two compatibility surfaces, tag "Compatibility", each in its own exact shape including
//! errors: seed 003 `GET /v1/entitlements/{user_id}` (`{"grants"}`, errors `{"error",
//! "message"}`, [`seed003`]) and seed 004 `GET /tenants/{tenant_id}/entitlements`
//! (Cloudflare's `{success, errors, messages, result}` envelope, error codes ≥ 1000,
//! [`seed004`]).

mod seed003;
mod seed004;

use utoipa_axum::{router::OpenApiRouter, routes};

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(seed003::user_grants))
        .routes(routes!(seed004::tenant_entitlements))
}
