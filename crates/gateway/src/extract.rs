//! Request extractors whose rejections use the gateway's error shape: malformed JSON, wrong
//! types, unknown fields (every request type denies them), oversized bodies and bad query or
//! path parameters are 4xx in [`ApiError`] form, never axum's plain-text defaults.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::request::Parts,
};
use http::StatusCode;
use serde::de::DeserializeOwned;
use tenantry_common::{idempotency, limits};

use crate::error::ApiError;

/// `axum::Json` with the gateway's rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_body(req, state, false).await.map(Self)
    }
}

/// An optional body (`Option<ApiJson<T>>`): none when the request carries no bytes, else
/// parsed as [`ApiJson`] is.
impl<T, S> axum::extract::OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let headers = req.headers();
        let declared_empty = headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|l| l.as_bytes() == b"0");
        let untyped = !headers.contains_key(http::header::CONTENT_TYPE);
        if declared_empty || (untyped && !headers.contains_key(http::header::TRANSFER_ENCODING)) {
            return Ok(None);
        }
        json_body(req, state, false).await.map(|v| Some(Self(v)))
    }
}

/// [`ApiJson`] for the one kind of body that is a JSON array (a CloudEvents JSON batch).
#[derive(Debug, Clone, Default)]
pub struct ApiJsonArray<T>(pub Vec<T>);

impl<T, S> FromRequest<S> for ApiJsonArray<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_body(req, state, true).await.map(Self)
    }
}

/// A JSON body: an object, or with `array` an array (never the other: serde's derived structs
/// also take an array, their fields by position).
async fn json_body<T, S>(req: Request, state: &S, array: bool) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    if !json_content_type(req.headers()) {
        return Err(json_rejection(&JsonRejection::MissingJsonContentType(
            Default::default(),
        )));
    }
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| json_rejection(&JsonRejection::BytesRejection(e)))?;
    // Before deserialising: serde_json recurses up to 128 levels, far past what the
    // protobuf conversion of free-form objects survives.
    if limits::json_deeper_than(&bytes, limits::MAX_BODY_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "the JSON body is nested more than {} levels deep",
            limits::MAX_BODY_DEPTH
        ))
        .with_reason("BODY_TOO_DEEP"));
    }
    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    match axum::Json::<T>::from_bytes(&bytes) {
        Ok(_) if is_array != array => Err(ApiError::bad_request(if array {
            "the JSON body does not match the expected shape: expected an array"
        } else {
            "the JSON body does not match the expected shape: expected an object, found an array"
        })
        .with_reason("INVALID_BODY")),
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection) => Err(json_rejection(&rejection)),
    }
}

/// `application/json` or `application/*+json`, as `axum::Json` accepts.
fn json_content_type(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "axum's JsonRejection is non_exhaustive; any other rejection keeps its client status"
)]
fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::bad_request(format!(
            "the JSON body does not match the expected shape: {}",
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        ))
        .with_reason("INVALID_BODY"),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request("the body is not valid JSON").with_reason("MALFORMED_JSON")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected `content-type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the configured limit",
            )
            .with_reason("BODY_TOO_LARGE")
        }
        other => {
            let status = if other.status().is_client_error() {
                other.status()
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, "the request body could not be read")
        }
    }
}

/// Query parameters: repeated keys (`ids=a&ids=b`, `ids[]=a`) are joined with commas before
/// typed parsing, so list parameters accept both spellings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Self)
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    let mut merged: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let key = key.strip_suffix("[]").unwrap_or(&key).to_owned();
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            None => merged.push((key, value)),
        }
    }
    let normalized = serde_urlencoded::to_string(&merged)
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    serde_urlencoded::from_str(&normalized).map_err(|e| {
        ApiError::bad_request(format!("invalid query parameter: {e}")).with_reason("INVALID_QUERY")
    })
}

/// Path parameters with the gateway's rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid path parameter: {}",
                e.body_text()
            ))),
        }
    }
}

/// Splits a comma-separated list parameter, dropping empty entries.
pub fn split_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every value of a repeatable query parameter (`name=…` or `name[]=…`), one per occurrence
/// and as sent: [`ApiQuery`] joins repeats with commas, which a value holding a comma does not
/// survive.
pub fn query_values(query: Option<&str>, name: &str) -> Result<Vec<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    Ok(pairs
        .into_iter()
        .filter(|(key, _)| key.strip_suffix("[]").unwrap_or(key) == name)
        .map(|(_, value)| value)
        .collect())
}

/// The `Idempotency-Key` header of a create, validated by the services' rule (1-255 visible
/// characters); absent is `None`. A malformed or repeated header is 400 naming it. Routes
/// declare it in OpenAPI with `params(IdempotencyKey)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
pub struct IdempotencyKey(
    /// Makes a retry answer as the first request did, without writing twice (1-255 visible
    /// characters, kept `idempotency_retention_secs`); the same key with another request is
    /// 409 `IDEMPOTENCY_KEY_REUSED`.
    #[param(pattern = "^[!-~]([ -~]{0,253}[!-~])?$")]
    pub Option<String>,
);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(idempotency::HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(ApiError::invalid_field("Idempotency-Key", "send it once"));
        }
        value
            .to_str()
            .ok()
            .filter(|key| idempotency::is_valid_key(key))
            .map(|key| Self(Some(key.to_owned())))
            .ok_or_else(|| ApiError::invalid_field("Idempotency-Key", idempotency::KEY_RULE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Q {
        #[serde(rename = "_tenantIds")]
        tenant_ids: Option<String>,
        #[serde(rename = "_limit")]
        limit: Option<u32>,
    }

    #[test]
    fn repeated_and_bracketed_keys_are_merged() {
        let q: Q = parse_query("_tenantIds=a&_tenantIds[]=b&_limit=5").unwrap();
        assert_eq!(split_list(q.tenant_ids.as_deref()), vec!["a", "b"]);
        assert_eq!(q.limit, Some(5));
        let q: Q = parse_query("_tenantIds=a,b").unwrap();
        assert_eq!(split_list(q.tenant_ids.as_deref()), vec!["a", "b"]);
        assert!(parse_query::<Q>("_limit=ten").is_err());
    }
}
