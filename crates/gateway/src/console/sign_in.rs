//! Signing in and out. An environment credential pair is checked exactly as `POST /auth/vendor`
//! checks it (constant time, the same lockout); a user token exactly as the REST API verifies
//! one, and the session ends no later than the token. Neither secret is logged nor kept: the
//! session holds only who signed in.

use askama::Template;
use axum::{
    Form,
    extract::{Request, State},
    response::{IntoResponse, Redirect, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::{
    Console, Current, PageError, SignedIn, render_with,
    session::{self, ANONYMOUS_TTL_SECS, Session, unix_now},
};
use crate::{auth::IssueError, error::ApiError};

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    csrf: String,
    user_tokens: bool,
    error: Option<String>,
    client_id: String,
}

/// The sign-in page; starts an anonymous session whose CSRF token the forms carry.
pub async fn sign_in_page(State(c): State<Console>, req: Request) -> Result<Response, PageError> {
    let current = req.extensions().get::<Current>().cloned();
    let (session, secure) = match current {
        Some(Current {
            session: Some(s),
            secure,
        }) => {
            if s.who.is_some() {
                return Ok(Redirect::to("/console").into_response());
            }
            (s, secure)
        }
        Some(Current {
            session: None,
            secure,
        }) => (anonymous(&c), secure),
        None => (anonymous(&c), c.cookie_secure),
    };
    let page = SignInPage {
        csrf: session.csrf.clone(),
        user_tokens: c.app.auth.accepts_user_tokens(),
        error: None,
        client_id: String::new(),
    };
    let response = render_with(StatusCode::OK, &page)?;
    Ok(with_session(response, &c, &session, secure))
}

fn anonymous(c: &Console) -> Session {
    Session {
        exp: unix_now() + ANONYMOUS_TTL_SECS,
        csrf: c.sealer.token(),
        who: None,
    }
}

/// The sign-in form (CSRF checked by the guard). `method` says which of the two forms.
#[derive(Deserialize)]
pub struct SignInForm {
    method: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    token: String,
}

pub async fn sign_in(
    State(c): State<Console>,
    axum::Extension(current): axum::Extension<Current>,
    Form(form): Form<SignInForm>,
) -> Result<Response, PageError> {
    let now = unix_now();
    let outcome = match form.method.as_str() {
        "environment" => c
            .app
            .auth
            .sign_in_environment(form.client_id.trim(), &form.secret)
            .map(|p| (p, now + c.session_ttl))
            .map_err(|e| match e {
                IssueError::Invalid => ApiError::unauthenticated("invalid client ID or secret"),
                IssueError::LockedOut(wait) => crate::auth::locked_out(wait),
                IssueError::Signing => ApiError::internal(),
            }),
        "user" if c.app.auth.accepts_user_tokens() => c
            .app
            .auth
            .verify_user_token(form.token.trim())
            .await
            .map(|(p, exp)| (p, exp.min(now + c.session_ttl))),
        _ => Err(ApiError::invalid_field(
            "method",
            "must be environment or user (user tokens only when an identity provider is configured)",
        )),
    };
    let session = current.session.unwrap_or_else(|| anonymous(&c));
    match outcome {
        Ok((principal, exp)) => {
            tracing::info!(principal = %principal.metadata_value(), "console sign-in");
            // A new token on sign-in: one seen before signing in is worth nothing after.
            let signed_in = Session {
                exp,
                csrf: c.sealer.token(),
                who: Some(principal),
            };
            let response = Redirect::to("/console").into_response();
            Ok(with_session(response, &c, &signed_in, current.secure))
        }
        Err(e) => {
            let page = SignInPage {
                csrf: session.csrf,
                user_tokens: c.app.auth.accepts_user_tokens(),
                error: Some(e.body.message.clone()),
                client_id: form.client_id,
            };
            let mut response = render_with(e.status, &page)?;
            if let Some(secs) = e.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Ok(response)
        }
    }
}

/// Ends the session in this browser: the cookie is removed (a sealed cookie copied elsewhere
/// stays valid until it expires; keep `console_session_ttl_secs` short where that matters).
pub async fn sign_out(
    axum::Extension(current): axum::Extension<Current>,
    _session: SignedIn,
) -> Response {
    let mut response = Redirect::to("/console/sign-in").into_response();
    if let Ok(value) = HeaderValue::from_str(&session::set_cookie("", 0, current.secure)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn with_session(mut response: Response, c: &Console, s: &Session, secure: bool) -> Response {
    let Some(sealed) = c.sealer.seal(s) else {
        tracing::error!("a console session could not be sealed");
        return PageError(ApiError::internal()).into_response();
    };
    let max_age = s.exp.saturating_sub(unix_now());
    match HeaderValue::from_str(&session::set_cookie(&sealed, max_age, secure)) {
        Ok(value) => {
            response.headers_mut().append(header::SET_COOKIE, value);
            response
        }
        Err(_) => PageError(ApiError::internal()).into_response(),
    }
}
