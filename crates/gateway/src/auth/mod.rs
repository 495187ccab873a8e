//! Authentication and authorization.
//!
//! Two kinds of bearer token:
//! - **Environment tokens**, issued by `POST /auth/vendor` and signed by the gateway (HS256 or
//!   EdDSA, header `kid` = [`ENV_TOKEN_KID`]). They open management routes and act on any account.
//! - **User tokens** from the customer's identity provider, verified with a JWKS URL, a PEM public
//!   key or a shared HS256 secret, with the algorithm pinned. Claims: `sub`, `tenantId`,
//!   `permissions`. They open self-service routes, inside the token's account and the
//!   sub-accounts its hierarchy settings let it reach ([`scope`]).
//!
//! The [`authenticate`] middleware verifies the token once per request and leaves the outcome
//! in the request's extensions; the extractors ([`Management`], [`Caller`]) then decide, so
//! public routes ignore a bad token and protected ones answer 401 (no or bad token) or 403
//! (valid token without the right).

mod cache;
mod jwks;
mod lockout;
pub mod scope;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tenantry_common::{Config, RunError};

use crate::{credentials, error::ApiError};

/// `kid` of every environment token: routes a token to the gateway's own key.
pub const ENV_TOKEN_KID: &str = "tenantry-environment";
const ENV_TOKEN_ISSUER: &str = "tenantry-gateway";
const ENV_TOKEN_AUDIENCE: &str = "tenantry-management";
/// Clock skew tolerated on `exp`/`nbf`.
const LEEWAY_SECS: u64 = 30;

/// Who is calling. Serialized as the console's session cookie holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Principal {
    /// An environment (vendor) token: full management rights.
    Environment { client_id: String },
    /// An end user of one account.
    User {
        user_id: String,
        tenant_id: String,
        permissions: Vec<String>,
        /// The token's `email` and `email_verified` claims (targeting attributes).
        email: Option<String>,
        email_verified: Option<bool>,
    },
}

impl Principal {
    /// Rate-limit bucket key.
    pub fn key(&self) -> String {
        match self {
            Self::Environment { client_id } => format!("environment:{client_id}"),
            Self::User {
                user_id, tenant_id, ..
            } => format!("user:{tenant_id}:{user_id}"),
        }
    }

    /// The value sent to the services in `x-tenantry-principal` (recorded as `granted_by`,
    /// `revoked_by`): `environment:<clientId>` or `user:<sub>`, non-ASCII percent-encoded.
    pub fn metadata_value(&self) -> String {
        let raw = match self {
            Self::Environment { client_id } => format!("environment:{client_id}"),
            Self::User { user_id, .. } => format!("user:{user_id}"),
        };
        let mut out = String::with_capacity(raw.len());
        for b in raw.bytes() {
            if b.is_ascii_graphic() && b != b'%' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    pub fn has_permission(&self, permission: &str) -> bool {
        match self {
            Self::Environment { .. } => true,
            Self::User { permissions, .. } => {
                tenantry_common::permission::holds(permissions, permission)
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EnvClaims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
}

#[derive(Deserialize)]
struct UserClaims {
    sub: String,
    /// A string when present: jsonwebtoken's issuer check also passes an array holding the
    /// configured issuer, which RFC 7519 does not allow; typing it refuses the array.
    #[serde(default)]
    #[allow(dead_code)] // read by the type check only
    iss: Option<String>,
    /// Required by the validation, so always present when decoding succeeds.
    exp: u64,
    #[serde(rename = "tenantId")]
    tenant_id: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    /// Identity claims that Frontegg's `frontegg` targeting attributes come from; kept only
    /// when well typed (a token is not refused for them).
    #[serde(default)]
    email: Option<serde_json::Value>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
}

/// How user tokens are verified.
enum UserKeys {
    None,
    Static(DecodingKey),
    Jwks(jwks::JwksCache),
}

/// Everything needed to issue and verify tokens.
pub struct Authenticator {
    clients: Vec<credentials::EnvironmentCredentials>,
    env_alg: Algorithm,
    env_encoding: EncodingKey,
    env_decoding: DecodingKey,
    env_validation: Validation,
    env_ttl: Duration,
    user_keys: UserKeys,
    user_validation: Validation,
    verified: cache::VerifiedTokens,
    lockout: lockout::Lockout,
}

/// Why `POST /auth/vendor` issued no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueError {
    /// No configured pair matches.
    Invalid,
    /// Too many recent failures for this client ID: refused, whatever the secret, for this
    /// long.
    LockedOut(Duration),
    /// The token could not be signed (logged).
    Signing,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("clients", &self.clients.len())
            .field("env_alg", &self.env_alg)
            .finish_non_exhaustive()
    }
}

fn config_error(key: &'static str, message: String) -> RunError {
    RunError::Config(tenantry_common::config::ConfigError::Invalid { key, message })
}

impl Authenticator {
    pub fn from_config(config: &Config) -> Result<Self, RunError> {
        let clients = credentials::all_credentials(config)?;
        let (env_alg, env_encoding, env_decoding) =
            if let Some(path) = &config.env_token_ed25519_key_path {
                ed25519_keys(path)?
            } else {
                let secret = match &config.env_token_hs256_secret {
                    Some(s) => s.clone(),
                    None => credentials::dev_token_key(config)?,
                };
                let bytes = secret.expose().as_bytes();
                (
                    Algorithm::HS256,
                    EncodingKey::from_secret(bytes),
                    DecodingKey::from_secret(bytes),
                )
            };
        let mut env_validation = Validation::new(env_alg);
        env_validation.leeway = LEEWAY_SECS;
        env_validation.set_issuer(&[ENV_TOKEN_ISSUER]);
        env_validation.set_audience(&[ENV_TOKEN_AUDIENCE]);
        env_validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);

        let (user_keys, user_alg) = if let Some(secret) = &config.user_jwt_hs256_secret {
            (
                UserKeys::Static(DecodingKey::from_secret(secret.expose().as_bytes())),
                Algorithm::HS256,
            )
        } else {
            let alg: Algorithm = config.user_jwt_algorithm.parse().map_err(|_| {
                config_error("user_jwt_algorithm", "is not a known algorithm".to_owned())
            })?;
            if let Some(path) = &config.user_jwt_public_key_path {
                (UserKeys::Static(pem_public_key(path, alg)?), alg)
            } else if let Some(url) = &config.user_jwt_jwks_url {
                let cache = jwks::JwksCache::new(url.clone(), alg)
                    .map_err(|e| config_error("user_jwt_jwks_url", e))?;
                (UserKeys::Jwks(cache), alg)
            } else {
                (UserKeys::None, alg)
            }
        };
        // Pinned: the header's `alg` must be exactly this one (no `none`, no confusion).
        let mut user_validation = Validation::new(user_alg);
        user_validation.leeway = LEEWAY_SECS;
        user_validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &config.user_jwt_issuer {
            user_validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &config.user_jwt_audience {
            Some(aud) => {
                user_validation.set_audience(&[aud]);
                required.push("aud");
            }
            // jsonwebtoken refuses any token carrying `aud` unless told not to check it.
            None => user_validation.validate_aud = false,
        }
        user_validation.set_required_spec_claims(&required);

        Ok(Self {
            clients,
            env_alg,
            env_encoding,
            env_decoding,
            env_validation,
            env_ttl: Duration::from_secs(config.env_token_ttl_secs),
            user_keys,
            user_validation,
            verified: cache::VerifiedTokens::default(),
            lockout: lockout::Lockout::default(),
        })
    }

    /// Issues an environment token when the pair matches. After repeated failures a client ID
    /// is locked out for a growing while, during which even the right secret is refused (so a
    /// guess cannot be confirmed by a success).
    pub fn issue(&self, client_id: &str, secret: &str) -> Result<(String, u64), IssueError> {
        let client_id = self.check_pair(client_id, secret)?;
        let now = unix_now();
        let claims = EnvClaims {
            sub: client_id.to_owned(),
            iss: ENV_TOKEN_ISSUER.to_owned(),
            aud: ENV_TOKEN_AUDIENCE.to_owned(),
            iat: now,
            exp: now + self.env_ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(self.env_alg);
        header.kid = Some(ENV_TOKEN_KID.to_owned());
        match jsonwebtoken::encode(&header, &claims, &self.env_encoding) {
            Ok(token) => Ok((token, self.env_ttl.as_secs())),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an environment token");
                Err(IssueError::Signing)
            }
        }
    }

    /// Checks a client ID and secret against the configured pairs, under the lockout: the
    /// configured client ID when one matches.
    fn check_pair(&self, client_id: &str, secret: &str) -> Result<&str, IssueError> {
        if let Err(wait) = self.lockout.check(client_id) {
            return Err(IssueError::LockedOut(wait));
        }
        // Every configured pair is compared in full, so timing does not reveal which matched.
        let mut matched: Option<&str> = None;
        for c in &self.clients {
            let id_ok = constant_time_eq(c.client_id.as_bytes(), client_id.as_bytes());
            let secret_ok = constant_time_eq(c.secret.expose().as_bytes(), secret.as_bytes());
            if id_ok & secret_ok {
                matched = Some(&c.client_id);
            }
        }
        let Some(client_id) = matched else {
            self.lockout.failed(client_id);
            return Err(IssueError::Invalid);
        };
        self.lockout.succeeded(client_id);
        Ok(client_id)
    }

    /// The console's sign-in with an environment credential pair: checked exactly as
    /// `POST /auth/vendor` checks it (constant time, the same lockout).
    pub fn sign_in_environment(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Principal, IssueError> {
        self.check_pair(client_id, secret)
            .map(|client_id| Principal::Environment {
                client_id: client_id.to_owned(),
            })
    }

    /// Whether `client_id` is still a configured environment credential (a console session
    /// of a removed credential ends).
    pub fn knows_client(&self, client_id: &str) -> bool {
        self.clients.iter().any(|c| c.client_id == client_id)
    }

    /// Whether user tokens can be verified (an identity provider is configured).
    pub fn accepts_user_tokens(&self) -> bool {
        !matches!(self.user_keys, UserKeys::None)
    }

    /// The console's sign-in with a user token: fully verified (signature, algorithm, claims),
    /// with its `exp`. An environment token is refused here: the credential pair signs in.
    pub async fn verify_user_token(&self, token: &str) -> Result<(Principal, u64), ApiError> {
        match self.verify_signed(token).await? {
            (Principal::Environment { .. }, _) => Err(ApiError::unauthenticated(
                "this is an environment token: sign in with the client ID and secret",
            )),
            user @ (Principal::User { .. }, _) => Ok(user),
        }
    }

    /// Seed 004's Cloudflare API-key pair (`X-Auth-Email` + `X-Auth-Key`), mapped onto an
    /// environment credential: the client ID and its secret, checked exactly as
    /// `POST /auth/vendor` checks them (constant time, the same lockout).
    pub fn verify_api_key(&self, email: &str, key: &str) -> Result<Principal, ApiError> {
        match self.check_pair(email, key) {
            Ok(client_id) => Ok(Principal::Environment {
                client_id: client_id.to_owned(),
            }),
            Err(IssueError::LockedOut(wait)) => Err(locked_out(wait)),
            Err(IssueError::Invalid | IssueError::Signing) => Err(ApiError::unauthenticated(
                "invalid X-Auth-Email or X-Auth-Key",
            )),
        }
    }

    /// Verifies a bearer token. Errors are 401s whose message never echoes the token.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let now = unix_now();
        if let Some(principal) = self.verified.get(token, now) {
            return Ok(principal);
        }
        let (principal, exp) = self.verify_signed(token).await?;
        self.verified.insert(token, &principal, exp, now);
        Ok(principal)
    }

    /// Full verification: signature, algorithm, claims. Also returns `exp`.
    async fn verify_signed(&self, token: &str) -> Result<(Principal, u64), ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthenticated("the bearer token is not a valid JWT"))?;
        refuse_critical_extensions(token)?;
        if header.kid.as_deref() == Some(ENV_TOKEN_KID) {
            let data =
                jsonwebtoken::decode::<EnvClaims>(token, &self.env_decoding, &self.env_validation)
                    .map_err(|e| token_error(&e))?;
            let principal = Principal::Environment {
                client_id: data.claims.sub,
            };
            return Ok((principal, data.claims.exp));
        }
        let decoded = match &self.user_keys {
            UserKeys::None => {
                return Err(ApiError::unauthenticated(
                    "user tokens are not accepted: no identity provider is configured",
                ));
            }
            UserKeys::Static(key) => {
                jsonwebtoken::decode::<UserClaims>(token, key, &self.user_validation)
            }
            UserKeys::Jwks(cache) => {
                let key = cache.key_for(&header).await?;
                jsonwebtoken::decode::<UserClaims>(token, &key, &self.user_validation)
            }
        };
        let data = decoded.map_err(|e| token_error(&e))?;
        let claims = data.claims;
        let tenant_id = claims
            .tenant_id
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthenticated("the user token has no `tenantId` claim"))?;
        if claims.sub.is_empty() {
            return Err(ApiError::unauthenticated(
                "the user token has an empty `sub`",
            ));
        }
        let principal = Principal::User {
            user_id: claims.sub,
            tenant_id,
            permissions: claims.permissions,
            email: claims
                .email
                .and_then(|e| e.as_str().map(str::to_owned))
                .filter(|e| !e.is_empty()),
            email_verified: claims.email_verified.and_then(|v| v.as_bool()),
        };
        Ok((principal, claims.exp))
    }
}

/// RFC 7515 §4.1.11: a token whose header lists `crit` extensions must be refused unless each is
/// understood. We understand none, and jsonwebtoken ignores the parameter, so any `crit` is
/// refused here (an empty list is malformed anyway).
fn refuse_critical_extensions(token: &str) -> Result<(), ApiError> {
    use base64::Engine;
    let malformed = || ApiError::unauthenticated("the bearer token is not a valid JWT");
    let encoded = token.split('.').next().ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if header.contains_key("crit") {
        return Err(ApiError::unauthenticated(
            "the token's header lists critical extensions (`crit`) this gateway does not support",
        ));
    }
    Ok(())
}

#[expect(
    clippy::wildcard_enum_match_arm,
    reason = "jsonwebtoken's ErrorKind is non_exhaustive; the other kinds are described generically"
)]
fn token_error(e: &jsonwebtoken::errors::Error) -> ApiError {
    use jsonwebtoken::errors::ErrorKind;
    let message = match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
        ErrorKind::InvalidSignature => "the token's signature is invalid",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is invalid",
    };
    ApiError::unauthenticated(message)
}

fn ed25519_keys(path: &std::path::Path) -> Result<(Algorithm, EncodingKey, DecodingKey), RunError> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(path).map_err(|e| {
        config_error(
            "env_token_ed25519_key_path",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let invalid = || {
        config_error(
            "env_token_ed25519_key_path",
            "is not an Ed25519 private key in PKCS#8 PEM".to_owned(),
        )
    };
    let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|_| invalid())?;
    let encoding = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| invalid())?;
    let decoding = DecodingKey::from_ed_der(signing.verifying_key().as_bytes());
    Ok((Algorithm::EdDSA, encoding, decoding))
}

fn pem_public_key(path: &std::path::Path, alg: Algorithm) -> Result<DecodingKey, RunError> {
    let pem = std::fs::read(path).map_err(|e| {
        config_error(
            "user_jwt_public_key_path",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let key = if matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    ) {
        DecodingKey::from_rsa_pem(&pem)
    } else if matches!(alg, Algorithm::ES256 | Algorithm::ES384) {
        DecodingKey::from_ec_pem(&pem)
    } else if alg == Algorithm::EdDSA {
        DecodingKey::from_ed_pem(&pem)
    } else {
        return Err(config_error(
            "user_jwt_algorithm",
            "must be asymmetric with a public key".to_owned(),
        ));
    };
    key.map_err(|_| {
        config_error(
            "user_jwt_public_key_path",
            format!("is not a PEM public key for {alg:?}"),
        )
    })
}

/// 429 `CLIENT_LOCKED_OUT` with `retry-after`: too many failed attempts for a client ID.
pub fn locked_out(wait: Duration) -> ApiError {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut e = ApiError::new(
        http::StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many failed attempts for this client ID; every attempt is refused for {secs} s"
        ),
    )
    .with_reason("CLIENT_LOCKED_OUT");
    e.retry_after = Some(secs);
    e
}

/// Compares digests rather than the values, so neither the content nor the length of the
/// configured value shows in the time taken.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The outcome of authenticating one request, left in its extensions.
#[derive(Clone, Debug)]
pub struct Authentication(pub Result<Option<Principal>, ApiError>);

impl Authenticator {
    /// Verifies the request's bearer token, if any, or, where `api_key_pair` allows it (seed
    /// 004's route) and no bearer token is sent, the `X-Auth-Email` + `X-Auth-Key` pair. The
    /// caller leaves the outcome in the request's extensions, where the extractors read it.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        api_key_pair: bool,
    ) -> Authentication {
        let outcome = match bearer(headers) {
            Ok(None) if api_key_pair => self.api_key_pair(headers),
            Ok(None) => Ok(None),
            Ok(Some(token)) => self.verify(token).await.map(Some),
            Err(e) => Err(e),
        };
        if let Ok(Some(principal)) = &outcome {
            let span = tracing::Span::current();
            if !span.is_disabled() {
                span.record("principal", principal.metadata_value());
            }
        }
        Authentication(outcome)
    }
}

/// Seed 004's API-key headers (Cloudflare's names).
pub const API_EMAIL_HEADER: &str = "x-auth-email";
pub const API_KEY_HEADER: &str = "x-auth-key";

impl Authenticator {
    /// The principal of an `X-Auth-Email` + `X-Auth-Key` pair; neither header: none.
    fn api_key_pair(&self, headers: &http::HeaderMap) -> Result<Option<Principal>, ApiError> {
        let text = |name: &str| {
            headers.get(name).map(|v| {
                v.to_str().map_err(|_| {
                    ApiError::unauthenticated(format!("the {name} header is malformed"))
                })
            })
        };
        match (text(API_EMAIL_HEADER), text(API_KEY_HEADER)) {
            (None, None) => Ok(None),
            (Some(email), Some(key)) => self.verify_api_key(email?, key?).map(Some),
            (Some(_), None) | (None, Some(_)) => Err(ApiError::unauthenticated(
                "X-Auth-Email and X-Auth-Key are sent together",
            )),
        }
    }
}

/// Frontegg's SDKs send the environment token bare in this header instead of `authorization`.
const ACCESS_TOKEN_HEADER: &str = "x-access-token";

fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return access_token(headers);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the authorization header is malformed"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(ApiError::unauthenticated(
            "expected `authorization: Bearer <token>`",
        )),
    }
}

/// The token of an `x-access-token` header, if any (used only without `authorization`).
fn access_token(headers: &http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(ACCESS_TOKEN_HEADER) else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(token) if !token.is_empty() => Ok(Some(token)),
        Ok(_) | Err(_) => Err(ApiError::unauthenticated(
            "the x-access-token header is malformed",
        )),
    }
}

fn principal_from(parts: &Parts) -> Result<Principal, ApiError> {
    match parts.extensions.get::<Authentication>() {
        Some(Authentication(Ok(Some(p)))) => Ok(p.clone()),
        Some(Authentication(Err(e))) => Err(e.clone()),
        Some(Authentication(Ok(None))) | None => Err(ApiError::unauthenticated(
            "a bearer token is required (POST /auth/vendor for an environment token)",
        )),
    }
}

/// An environment token: management routes. A user token is 403.
#[derive(Clone, Debug)]
pub struct Management(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Management {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match principal_from(parts)? {
            p @ Principal::Environment { .. } => Ok(Self(p)),
            Principal::User { .. } => Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "this route requires an environment token",
            )),
        }
    }
}

/// An environment or a user token: self-service routes (scope checked by the handler).
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        principal_from(parts).map(Self)
    }
}

/// Permission keys the gateway requires of user tokens on self-service writes.
pub mod permissions {
    /// Create, change or delete sub-accounts of the caller's account.
    pub const WRITE_SUB_ACCOUNTS: &str = "fe.account-hierarchy.write.subAccount";
    /// Change the caller's account settings.
    pub const WRITE_ACCOUNT_SETTINGS: &str = "fe.account-settings.write.account";
}

/// Requires `permission` of a user token (environment tokens hold every permission).
pub fn require_permission(principal: &Principal, permission: &str) -> Result<(), ApiError> {
    if principal.has_permission(permission) {
        Ok(())
    } else {
        Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            format!("this operation requires the `{permission}` permission"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_common::Secret;

    fn config(dir: &std::path::Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            client_id: Some("vendor".into()),
            client_secret: Some(Secret::new("vendor-secret")),
            user_jwt_hs256_secret: Some(Secret::new("u".repeat(32))),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_wrong_secrets_do_not_issue() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::from_config(&config(dir.path())).unwrap();
        assert_eq!(auth.issue("vendor", "wrong"), Err(IssueError::Invalid));
        assert_eq!(
            auth.issue("other", "vendor-secret"),
            Err(IssueError::Invalid)
        );
        let (token, ttl) = auth.issue("vendor", "vendor-secret").unwrap();
        assert_eq!(ttl, 3600);
        assert_eq!(
            auth.verify(&token).await.unwrap(),
            Principal::Environment {
                client_id: "vendor".into()
            }
        );
    }

    #[tokio::test]
    async fn a_user_token_cannot_pose_as_an_environment_token() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::from_config(&config(dir.path())).unwrap();
        // Signed with the user secret but claiming the environment key id.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(ENV_TOKEN_KID.into());
        let claims = EnvClaims {
            sub: "vendor".into(),
            iss: ENV_TOKEN_ISSUER.into(),
            aud: ENV_TOKEN_AUDIENCE.into(),
            exp: unix_now() + 60,
            iat: unix_now(),
            jti: "x".into(),
        };
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret("u".repeat(32).as_bytes()),
        )
        .unwrap();
        assert_eq!(
            auth.verify(&forged).await.unwrap_err().status,
            http::StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn principal_metadata_is_ascii() {
        let p = Principal::User {
            user_id: "zoë smith".into(),
            tenant_id: "t".into(),
            permissions: vec![],
            email: None,
            email_verified: None,
        };
        assert_eq!(p.metadata_value(), "user:zo%C3%AB%20smith");
    }
}
