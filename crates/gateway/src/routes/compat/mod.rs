//! The two compatibility surfaces, tag "Compatibility", each in its own exact shape including
//! errors: seed 003 `GET /v1/entitlements/{user_id}` (`{"grants"}`, errors `{"error",
//! "message"}`, [`seed003`]) and seed 004 `GET /tenants/{tenant_id}/entitlements`
//! (Cloudflare's `{success, errors, messages, result}` envelope, error codes ≥ 1000,
//! [`seed004`]).

mod seed003;
mod seed004;

use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ApiError, ofrep, state::AppState};

/// A compatibility surface whose errors have their own shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `/v1/entitlements/{user_id}`: `{"error", "message"}`.
    Seed003,
    /// `/tenants/{tenant_id}/entitlements`: the `{success, errors, messages, result}` envelope.
    Seed004,
    /// `/ofrep/…`: OFREP's `{"errorCode", "errorDetails"}`, which its providers read.
    Ofrep,
}

/// The surface a request path belongs to (any method: a 405 is answered in its shape too).
pub fn surface(path: &str) -> Option<Surface> {
    if path.starts_with("/ofrep/") {
        return Some(Surface::Ofrep);
    }
    let mut segments = path.strip_prefix('/')?.split('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("tenants"), Some(id), Some("entitlements"), None) if !id.is_empty() => {
            Some(Surface::Seed004)
        }
        (Some("v1"), Some("entitlements"), Some(user), None) if !user.is_empty() => {
            Some(Surface::Seed003)
        }
        _ => None,
    }
}

/// Answers an error response made in the gateway's shape (by a handler's extractor or by a
/// layer: 401, 405, 408, 413, 429, 504, ...) in the surface's own shape, keeping its headers
/// (`retry-after`, `allow`, `connection`). Other responses pass unchanged.
pub fn reshape(surface: Surface, response: Response) -> Response {
    let Some(error) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (parts, _) = response.into_parts();
    let mut reshaped = match surface {
        Surface::Seed003 => seed003::Seed003Error::from(error).into_response(),
        Surface::Seed004 => seed004::Seed004Error::from(error).into_response(),
        Surface::Ofrep => (error.status, axum::Json(ofrep::ErrorBody::from(error))).into_response(),
    };
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_TYPE && name != http::header::CONTENT_LENGTH {
            reshaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    reshaped
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(seed003::user_grants))
        .routes(routes!(seed004::tenant_entitlements))
}
