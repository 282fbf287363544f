//! What every handler of the API shares: its state, the error answer (one
//! body shape, `switchyard_api::ErrorBody`), token checks and body parsing.
//! Handlers return [`Answer`], so every failure on the way is a `?`.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use switchyard_api::{limits, ErrorBody};
use switchyard_model::Scope;

use crate::incidents::Incidents;
use crate::plane::{ChangeError, ControlPlane};
use crate::store::{Store, StoreError};

pub struct Api<S: Store> {
    pub plane: Arc<ControlPlane<S>>,
    pub incidents: Arc<Incidents>,
    pub rollouts: Arc<crate::rollout_run::Rollouts>,
    /// Becomes `true` when the plane shuts down: long-lived answers (watch
    /// streams) end then, so the server can drain and exit.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// How to reach the leader over HTTPS when requests are passed to it.
    pub peer_tls: Arc<rustls::ClientConfig>,
    /// The web console's settings (`[control.console]`).
    pub console: Arc<crate::api_console::ConsoleSettings>,
}

impl<S: Store> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api {
            plane: self.plane.clone(),
            incidents: self.incidents.clone(),
            rollouts: self.rollouts.clone(),
            peer_tls: self.peer_tls.clone(),
            stopping: self.stopping.clone(),
            console: self.console.clone(),
        }
    }
}

/// A handler's result: the answer, or the error answer to send as it is.
pub type Answer = Result<Response, Response>;

pub fn error(status: StatusCode, code: &str, reasons: Vec<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.into(),
            reasons,
            rules: Vec::new(),
        }),
    )
        .into_response()
}

/// A 400 naming the field and what is wrong with it.
pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid",
        vec![format!("{field}: {problem}")],
    )
}

pub fn not_found(what: String) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", vec![what])
}

pub fn unavailable(e: StoreError) -> Response {
    match e {
        // Not "unavailable": the write may well have been applied, and
        // whoever asked must know before trying again.
        StoreError::Unknown(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "outcome_unknown",
            vec![
                e.to_string(),
                "the change may have been applied: retry it with the same Idempotency-Key \
                 (it is then applied at most once), or look at GET /v1/history"
                    .into(),
            ],
        ),
        StoreError::NotLeader(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            vec![
                e.to_string(),
                "nothing was changed: send it again, it goes to the new leader".into(),
            ],
        ),
        StoreError::DocConflict { .. } | StoreError::NotNext { .. } => error(
            StatusCode::CONFLICT,
            "conflict",
            vec![
                e.to_string(),
                "nothing was changed: read it again and retry".into(),
            ],
        ),
        e => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            vec![e.to_string()],
        ),
    }
}

impl IntoResponse for ChangeError {
    fn into_response(self) -> Response {
        match self {
            ChangeError::Invalid(r) => error(StatusCode::BAD_REQUEST, "invalid", r),
            ChangeError::NotFound(m) => not_found(m),
            ChangeError::Refused(rules) => (
                StatusCode::CONFLICT,
                Json(ErrorBody {
                    error: "refused".into(),
                    reasons: rules
                        .iter()
                        .map(|r| format!("{}: {}", r.rule, r.message))
                        .collect(),
                    rules,
                }),
            )
                .into_response(),
            ChangeError::Store(e) => unavailable(e),
            ChangeError::HeldBack(why) => error(StatusCode::CONFLICT, "store_behind", vec![why]),
        }
    }
}

/// Who calls: the name and scope of the token given.
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

/// The token a console session's cookie holds, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    use switchyard_console::session;
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| session::cookie(h, session::SESSION_COOKIE))
        .filter(|t| !t.is_empty())
}

/// The configured token `given` is, compared in constant time.
pub fn known_token<S: Store>(api: &Api<S>, given: &str) -> Option<Caller> {
    let config = api.plane.config();
    let tokens = config
        .control
        .as_ref()
        .map(|c| c.tokens.as_slice())
        .unwrap_or_default();
    tokens
        .iter()
        .find(|(_, _, t)| switchyard_model::secret::equal(t.as_bytes(), given.as_bytes()))
        .map(|(name, scope, _)| Caller {
            name: name.clone(),
            scope: *scope,
        })
}

/// The token of a request: `Authorization: Bearer`, or else the console's
/// session cookie — accepted only with its CSRF header, so a page on
/// another site that makes the browser send the cookie gets nothing done.
#[allow(clippy::result_large_err)]
pub fn identify<S: Store>(api: &Api<S>, headers: &HeaderMap) -> Result<Caller, Response> {
    use switchyard_console::session;
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = match (bearer, session_cookie(headers)) {
        (Some(t), _) => t,
        (None, Some(t)) => {
            let csrf = headers
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !session::csrf_matches(t, csrf) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    vec![format!(
                        "{}: missing or not this session's; a console session's requests must carry it (reload the console)",
                        session::CSRF_HEADER
                    )],
                ));
            }
            t
        }
        (None, None) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                vec!["an Authorization: Bearer token (or a console session) is required".into()],
            ))
        }
    };
    known_token(api, given).ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            vec!["unknown token".into()],
        )
    })
}

/// The caller's token name, if its token allows `need`.
#[allow(clippy::result_large_err)] // the error is the answer to send as it is
pub fn authorize<S: Store>(
    api: &Api<S>,
    headers: &HeaderMap,
    need: Scope,
) -> Result<String, Response> {
    let Caller { name, scope, .. } = identify(api, headers)?;
    if scope < need {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            vec![format!(
                "token {name:?} has scope {scope:?}; this needs {need:?}"
            )],
        ));
    }
    Ok(name)
}

/// The whole body, read only after the caller is authenticated (so a
/// stranger's upload is never buffered), up to [`limits::BODY`]; more is a
/// 413 naming the limit.
#[allow(clippy::result_large_err)]
pub async fn read_body(b: axum::body::Body) -> Result<bytes::Bytes, Response> {
    use futures_util::StreamExt;
    let mut stream = b.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let started = std::time::Instant::now();
    loop {
        // A client that stops sending mid-body holds a connection and a
        // task: it gets a clear answer instead, after a while.
        let next = tokio::time::timeout(BODY_IDLE, stream.next())
            .await
            .map_err(|_| {
                error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    vec![format!(
                        "body: nothing received for {} s",
                        BODY_IDLE.as_secs()
                    )],
                )
            })?;
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid",
                vec![format!("body: cannot be read: {e}")],
            )
        })?;
        seen += chunk.len();
        if seen <= limits::BODY {
            buf.extend_from_slice(&chunk);
            continue;
        }
        // Over the limit: the rest is read and dropped, up to a bound and
        // for a short while, so that the client, still sending, gets to
        // read the 413 instead of a reset connection.
        if seen > DRAIN_MAX || started.elapsed() > DRAIN_FOR {
            break;
        }
    }
    if seen > limits::BODY {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            vec![format!("body: at most {} bytes", limits::BODY)],
        );
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return Err(r);
    }
    Ok(buf.freeze())
}

/// The longest a body may pause.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// How much of a body over the limit is read (and dropped) before the
/// answer, and for how long at most.
const DRAIN_MAX: usize = 8 << 20;
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// A 400 listing every field over its limit, when any is.
#[allow(clippy::result_large_err)]
pub fn within_limits(fields: &[(&str, &str, usize)]) -> Result<(), Response> {
    let errs: Vec<String> = fields
        .iter()
        .filter_map(|(f, v, max)| limits::check(f, v, *max).err())
        .collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(error(StatusCode::BAD_REQUEST, "invalid", errs))
    }
}

/// A body that failed to parse is a 400 with serde's reason (which names the field).
#[allow(clippy::result_large_err)]
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", vec![e.to_string()]))
}
