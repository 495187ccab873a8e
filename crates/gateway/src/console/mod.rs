//! The web console at `/console`: server-rendered pages (askama templates, compiled into the
//! binary with every asset) for the people who run accounts and plans.
//!
//! No back door: a console handler decodes a form, makes the same gRPC call with the same
//! principal and the same authorisation rule as the REST route for that operation
//! (`Management` for environment-only routes, `auth::scope` for user-scoped ones), and renders
//! the answer. Errors are the REST API's (`ApiError`: the same status and message), rendered as
//! a page.
//!
//! Every request passes [`guard`]: it opens the sealed session cookie ([`session`]), refuses a
//! state change whose CSRF token is not the session's, and puts the security headers on every
//! answer (a Content-Security-Policy allowing only the console's own scripts and styles, no
//! framing).

mod accounts;
mod catalogue;
mod flags;
mod imports;
mod members;
mod operations;
mod route_policies;
mod session;
mod sign_in;

use std::sync::Arc;

use askama::Template;
use axum::{
    Router,
    body::Body,
    extract::{FromRequest, FromRequestParts, Request, State},
    http::request::Parts,
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use http::{HeaderValue, Method, StatusCode, header};
use tenantry_common::{Config, RunError};

use crate::{auth::Principal, error::ApiError, state::AppState};
use session::{Sealer, Session};

/// Where the console is mounted.
pub const BASE: &str = "/console";

/// What every console handler shares.
#[derive(Clone, Debug)]
pub struct Console {
    pub app: AppState,
    pub sealer: Arc<Sealer>,
    /// `console_session_ttl_secs`.
    pub session_ttl: u64,
    /// `console_cookie_secure`.
    pub cookie_secure: bool,
}

/// The console's routes, to be nested at [`BASE`].
pub fn router<S: Clone + Send + Sync + 'static>(
    config: &Config,
    app: AppState,
) -> Result<Router<S>, RunError> {
    let console = Console {
        app,
        sealer: Arc::new(Sealer::from_config(config)?),
        session_ttl: config.console_session_ttl_secs,
        cookie_secure: config.console_cookie_secure,
    };
    Ok(Router::new()
        .route("/", get(home))
        .route(
            "/sign-in",
            get(sign_in::sign_in_page).post(sign_in::sign_in),
        )
        .route("/sign-out", post(sign_in::sign_out))
        .route("/assets/{file}", get(asset))
        .merge(accounts::router())
        .merge(catalogue::router())
        .merge(flags::router())
        .merge(route_policies::router())
        .merge(imports::router())
        .merge(members::router())
        .merge(operations::router())
        .fallback(page_not_found)
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console))
}

// ---------------------------------------------------------------------------------------------
// Assets, embedded in the binary.

const CSS: &str = include_str!("../../assets/console/console.css");
const HTMX: &[u8] = include_bytes!("../../assets/console/htmx-4.0.1.min.js");

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "console.css" => (CSS.as_bytes(), "text/css; charset=utf-8"),
        "htmx-4.0.1.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        _ => return page_error(ApiError::not_found("no such console asset")),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            // Versioned or small: an hour's cache spares a round trip per page.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The guard: session, CSRF, security headers.

/// The request's session, as [`guard`] found it.
#[derive(Clone, Debug)]
struct Current {
    session: Option<Session>,
    /// Whether cookies set in the answer carry `Secure`.
    secure: bool,
}

/// Header a script may send the CSRF token in instead of the `csrf` form field.
const CSRF_HEADER: &str = "x-csrf-token";
/// The form field every console form carries the CSRF token in.
const CSRF_FIELD: &str = "csrf";

async fn guard(State(c): State<Console>, req: Request, next: Next) -> Response {
    let session = session::cookie_value(req.headers())
        .and_then(|v| c.sealer.open(v))
        // A session of an environment credential that is no longer configured ends.
        .filter(|s| match &s.who {
            Some(Principal::Environment { client_id }) => c.app.auth.knows_client(client_id),
            Some(Principal::User { .. }) | None => true,
        });
    let secure = c.cookie_secure
        || req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let mut req = req;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        req = match csrf_checked(session.as_ref(), req).await {
            Ok(req) => req,
            Err(e) => return with_security_headers(page_error(e)),
        };
    }
    req.extensions_mut().insert(Current { session, secure });
    with_security_headers(next.run(req).await)
}

/// The request, when its CSRF token (form field or header) is its session's; a state change
/// without a session is 401, with a missing or wrong token 403.
async fn csrf_checked(session: Option<&Session>, req: Request) -> Result<Request, ApiError> {
    let Some(session) = session else {
        return Err(ApiError::unauthenticated(
            "no console session: sign in first (sessions expire)",
        ));
    };
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or not this session's: reload the page and retry",
        )
    };
    if let Some(sent) = req.headers().get(CSRF_HEADER) {
        let sent = sent.to_str().map_err(|_| refused())?;
        return if session::same_token(sent, &session.csrf) {
            Ok(req)
        } else {
            Err(refused())
        };
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (parts, body) = req.into_parts();
    // The gateway's body layers have already bounded and read the body.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|_| ApiError::bad_request("the form could not be read"))?;
    let sent = if content_type.starts_with("application/x-www-form-urlencoded") {
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| ApiError::bad_request("the form is not URL-encoded"))?;
        fields
            .into_iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v)
    } else if content_type.starts_with("multipart/form-data") {
        multipart_field(&content_type, bytes.clone(), CSRF_FIELD).await?
    } else {
        None
    };
    match sent {
        Some(sent) if session::same_token(&sent, &session.csrf) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Some(_) | None => Err(refused()),
    }
}

/// A text field of a multipart body (an upload form's CSRF token).
async fn multipart_field(
    content_type: &str,
    bytes: axum::body::Bytes,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let malformed = || ApiError::bad_request("the form is not valid multipart/form-data");
    let request = Request::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(bytes))
        .map_err(|_| malformed())?;
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .map_err(|_| malformed())?;
    while let Some(field) = multipart.next_field().await.map_err(|_| malformed())? {
        if field.name() == Some(name) {
            return field.text().await.map(Some).map_err(|_| malformed());
        }
    }
    Ok(None)
}

/// Scripts and styles from the console itself only (no inline script, no `eval`), no framing,
/// no MIME sniffing, no referrer beyond the console's origin; pages are never cached.
fn with_security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Who is signed in.

/// A signed-in session. Without one, a page (GET) redirects to the sign-in page and an action
/// is 401.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub principal: Principal,
    pub csrf: String,
}

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let current = parts.extensions.get::<Current>();
        match current.and_then(|c| c.session.as_ref()) {
            Some(Session {
                who: Some(who),
                csrf,
                ..
            }) => Ok(Self {
                principal: who.clone(),
                csrf: csrf.clone(),
            }),
            Some(_) | None if parts.method == Method::GET || parts.method == Method::HEAD => {
                Err(Redirect::to("/console/sign-in").into_response())
            }
            Some(_) | None => Err(page_error(ApiError::unauthenticated(
                "no console session: sign in first (sessions expire)",
            ))),
        }
    }
}

impl SignedIn {
    /// The principal when it may use environment-only operations (the REST `Management`
    /// rule): a user session is 403, as a user token is on those routes.
    pub fn management(&self) -> Result<&Principal, PageError> {
        match &self.principal {
            p @ Principal::Environment { .. } => Ok(p),
            Principal::User { .. } => Err(PageError(ApiError::new(
                StatusCode::FORBIDDEN,
                "this page requires signing in with an environment credential",
            ))),
        }
    }

    pub fn is_management(&self) -> bool {
        matches!(self.principal, Principal::Environment { .. })
    }

    /// The page layout for this session, with `current` marked in the navigation.
    pub fn layout(&self, title: impl Into<String>, current: &str) -> Layout {
        let (who, nav) = match &self.principal {
            Principal::Environment { client_id } => (
                format!("environment credential {client_id}"),
                vec![
                    nav("Accounts", "/console/accounts".to_owned(), current),
                    nav("Features", "/console/features".to_owned(), current),
                    nav("Plans", "/console/plans".to_owned(), current),
                    nav("Flags", "/console/flags".to_owned(), current),
                    nav(
                        "Route policies",
                        "/console/route-policies".to_owned(),
                        current,
                    ),
                    nav("Imports", "/console/imports".to_owned(), current),
                    nav("Webhooks", "/console/webhooks".to_owned(), current),
                    nav("Audit", "/console/audit".to_owned(), current),
                ],
            ),
            Principal::User {
                user_id, tenant_id, ..
            } => (
                format!("user {user_id} of account {tenant_id}"),
                vec![nav(
                    "My account",
                    format!("/console/accounts/{}", encode(tenant_id)),
                    current,
                )],
            ),
        };
        Layout {
            title: title.into(),
            who,
            csrf: self.csrf.clone(),
            nav,
        }
    }
}

/// What the base template shows around every signed-in page.
#[derive(Clone, Debug)]
pub struct Layout {
    pub title: String,
    pub who: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
}

#[derive(Clone, Debug)]
pub struct NavItem {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

fn nav(label: &'static str, href: String, current: &str) -> NavItem {
    NavItem {
        label,
        current: label == current,
        href,
    }
}

/// The first `limit` items of a list.
pub fn first_page(limit: u32) -> Option<tenantry_proto::common::v1::PageRequest> {
    Some(tenantry_proto::common::v1::PageRequest {
        limit: Some(limit),
        offset: 0,
    })
}

/// Every environment-only write of the console: an environment session (the REST routes'
/// `Management` rule), one call made with its principal, then `then` (or the call's error
/// as a page).
pub async fn write_then_see<T, E, Fut>(
    session: &SignedIn,
    then: &str,
    call: impl FnOnce(Principal) -> Fut,
) -> Result<Response, PageError>
where
    Fut: Future<Output = Result<T, E>>,
    PageError: From<E>,
{
    let p = session.management()?.clone();
    call(p).await?;
    Ok(see(then))
}

/// An account's page.
pub fn account_href(id: &str) -> String {
    format!("/console/accounts/{}", encode(id))
}

/// A path segment, percent-encoded (account IDs may hold `?`, `#`, `%`).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Pages and errors.

async fn home(session: SignedIn) -> Redirect {
    match &session.principal {
        Principal::Environment { .. } => Redirect::to("/console/accounts"),
        Principal::User { tenant_id, .. } => {
            Redirect::to(&format!("/console/accounts/{}", encode(tenant_id)))
        }
    }
}

/// An error on its way to becoming a page: the REST API's error, status and message.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<tonic::Status> for PageError {
    fn from(status: tonic::Status) -> Self {
        Self(ApiError::from(status))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        page_error(self.0)
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    message: String,
    fields: Vec<(String, String)>,
    sign_in: bool,
}

fn page_error(e: ApiError) -> Response {
    let status = e.status;
    let page = ErrorPage {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        message: e.body.message.clone(),
        fields: e
            .body
            .field_violations
            .iter()
            .map(|f| (f.field.clone(), f.description.clone()))
            .collect(),
        sign_in: status == StatusCode::UNAUTHORIZED,
    };
    let mut response = match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "console error page did not render");
            (status, e.body.message).into_response()
        }
    };
    if let Some(secs) = e.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

async fn page_not_found(req: Request) -> Response {
    page_error(ApiError::not_found(format!(
        "no console page at {}",
        req.uri().path()
    )))
}

/// A rendered page, 200.
pub fn render(page: &impl Template) -> Result<Response, PageError> {
    render_with(StatusCode::OK, page)
}

pub fn render_with(status: StatusCode, page: &impl Template) -> Result<Response, PageError> {
    match page.render() {
        Ok(html) => Ok((status, Html(html)).into_response()),
        Err(err) => {
            tracing::error!(error = %err, "console page did not render");
            Err(PageError(ApiError::internal()))
        }
    }
}

/// After a successful form: see the result (303, so a reload does not post again).
pub fn see(path: &str) -> Response {
    Redirect::to(path).into_response()
}
