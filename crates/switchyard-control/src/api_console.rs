//! The web console under `/ui` on the plane's own listener: the page and
//! its assets (embedded), logging in and out, who the session is, and the
//! server-rendered pieces (postmortems with their plots, the lab's drill
//! reports). Everything the page shows or does beyond that goes through
//! the `/v1` API, where the session cookie counts as the token it holds —
//! with its CSRF header — so scopes are enforced in one place
//! ([`crate::respond::identify`]).

use std::path::{Path as FsPath, PathBuf};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchyard_console::{assets, markdown, session};

use crate::respond::{
    error, identify, known_token, not_found, read_body, session_cookie, Answer, Api,
};
use crate::store::Store;

/// `[control.console]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    /// A directory of drill reports (`NAME/report.md` and its plots), as
    /// `switchyard drill --report` and `scripts/drills` write them.
    reports_dir: Option<String>,
}

/// `[control.console]`, checked.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    pub reports_dir: Option<PathBuf>,
    /// The API is served over HTTPS: cookies are marked `Secure`.
    pub secure: bool,
}

impl ConsoleSettings {
    pub fn check(
        t: &Option<toml::Table>,
        secure: bool,
        base: &FsPath,
        errs: &mut Vec<String>,
    ) -> ConsoleSettings {
        let raw: RawConsole = match t {
            None => RawConsole::default(),
            Some(t) => t.clone().try_into().unwrap_or_else(|e: toml::de::Error| {
                errs.push(format!("control.console: {}", e.message()));
                RawConsole::default()
            }),
        };
        let reports_dir = raw.reports_dir.map(|d| {
            if d.trim().is_empty() {
                errs.push("control.console.reports_dir: must not be empty".into());
            }
            PathBuf::from(crate::server::beside(base, &d))
        });
        ConsoleSettings {
            reports_dir,
            secure,
        }
    }
}

pub fn routes<S: Store + 'static>() -> axum::Router<Api<S>> {
    Router::new()
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/", get(index::<S>))
        .route("/ui/login", get(login_page).post(login::<S>))
        .route("/ui/logout", post(logout::<S>))
        .route("/ui/session", get(whoami::<S>))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/incidents/{id}/postmortem", get(postmortem::<S>))
        .route("/ui/incidents/{id}/plots/{file}", get(postmortem_plot::<S>))
        .route("/ui/drills", get(drills::<S>))
        .route("/ui/drills/{name}", get(drill::<S>))
        .route("/ui/drills/{name}/{file}", get(drill_file::<S>))
}

/// What every console answer carries: nothing from another origin runs or
/// frames it, and nothing is sniffed into another type.
fn hardened(mut r: Response, csp: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                        script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                        base-uri 'none'; form-action 'self'";
/// A plot opened on its own is an SVG document: it may style itself, and
/// nothing else.
const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'";

fn html(status: StatusCode, body: String) -> Response {
    hardened(
        (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        PAGE_CSP,
    )
}

fn see_other(to: &'static str) -> Response {
    hardened(
        (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response(),
        PAGE_CSP,
    )
}

fn with_cookies(mut r: Response, cookies: [String; 2]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The session's token when its cookie names a known token. A page load
/// carries no CSRF header, and needs none: it changes nothing.
fn session_token<'h, S: Store>(api: &Api<S>, headers: &'h HeaderMap) -> Option<&'h str> {
    session_cookie(headers).filter(|t| known_token(api, t).is_some())
}

async fn index<S: Store>(State(api): State<Api<S>>, headers: HeaderMap) -> Response {
    if session_token(&api, &headers).is_none() {
        return see_other("/ui/login");
    }
    let page = assets::get("index.html").expect("index.html is embedded");
    html(
        StatusCode::OK,
        String::from_utf8_lossy(page.bytes).into_owned(),
    )
}

async fn login_page() -> Response {
    html(StatusCode::OK, assets::login_page(None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// The token comes in a form body (never the URL, so it is in no log or
/// history) and goes into an `HttpOnly` cookie.
async fn login<S: Store>(State(api): State<Api<S>>, raw: Body) -> Response {
    let refused = |status: StatusCode, why: &str| html(status, assets::login_page(Some(why)));
    let Ok(bytes) = read_body(raw).await else {
        return refused(StatusCode::BAD_REQUEST, "the form could not be read");
    };
    let form: LoginForm = match serde_urlencoded::from_bytes(&bytes) {
        Ok(f) => f,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &format!("token: {e}")),
    };
    let token = form.token.trim();
    if token.is_empty() {
        return refused(StatusCode::BAD_REQUEST, "token: enter an API token");
    }
    let logins = &api.plane.metrics.console_logins;
    let caller = match known_token(&api, token) {
        Some(c) => c,
        None => {
            logins
                .get_or_create(&crate::metrics::ResultLabels { result: "refused" })
                .inc();
            tracing::warn!("console login refused: unknown token");
            return refused(StatusCode::UNAUTHORIZED, "unknown token");
        }
    };
    if !session::cookie_safe(token) {
        return refused(
            StatusCode::BAD_REQUEST,
            "this token has characters a cookie cannot hold; use the API with it",
        );
    }
    logins
        .get_or_create(&crate::metrics::ResultLabels { result: "ok" })
        .inc();
    tracing::info!(token = %caller.name, scope = ?caller.scope, "console login");
    with_cookies(see_other("/ui/"), session::open(token, api.console.secure))
}

async fn logout<S: Store>(State(api): State<Api<S>>, headers: HeaderMap) -> Answer {
    identify(&api, &headers)?;
    Ok(with_cookies(
        see_other("/ui/login"),
        session::close(api.console.secure),
    ))
}

/// `GET /ui/session`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionView {
    pub token: String,
    pub scope: switchyard_model::Scope,
    pub csrf: String,
}

async fn whoami<S: Store>(State(api): State<Api<S>>, headers: HeaderMap) -> Answer {
    let caller = identify(&api, &headers)?;
    Ok(Json(SessionView {
        token: caller.name,
        scope: caller.scope,
        csrf: session::csrf_for(session_cookie(&headers).unwrap_or_default()),
    })
    .into_response())
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = assets::get(&name) else {
        return not_found(format!("no console asset {name:?}"));
    };
    let etag = a.etag();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body = if fresh {
        Body::empty()
    } else {
        Body::from(a.bytes)
    };
    hardened(
        (
            status,
            [
                (header::CONTENT_TYPE, a.content_type.to_string()),
                (header::ETAG, etag),
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
            body,
        )
            .into_response(),
        PAGE_CSP,
    )
}

/// Reads for the console need a session (or a token) of any scope. A
/// session's cookie alone is enough here: these reads change nothing, and
/// the page's `<img>` loads (plots) cannot carry the CSRF header.
#[allow(clippy::result_large_err)]
fn reader<S: Store>(api: &Api<S>, headers: &HeaderMap) -> Result<(), Response> {
    if !headers.contains_key(header::AUTHORIZATION) && session_token(api, headers).is_some() {
        return Ok(());
    }
    identify(api, headers).map(|_| ())
}

async fn postmortem<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    reader(&api, &headers)?;
    let incident = crate::api_incidents::one(&api, &id).await?;
    let text = switchyard_incident::postmortem::render(&incident);
    Ok(html(
        StatusCode::OK,
        markdown::render(&text, &format!("/ui/incidents/{id}/plots")),
    ))
}

fn svg(body: String) -> Response {
    hardened(
        (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        SVG_CSP,
    )
}

async fn postmortem_plot<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    Path((id, file)): Path<(String, String)>,
) -> Answer {
    reader(&api, &headers)?;
    let stem = file
        .strip_suffix(".png")
        .or_else(|| file.strip_suffix(".svg"))
        .unwrap_or(&file);
    let incident = crate::api_incidents::one(&api, &id).await?;
    match switchyard_incident::postmortem::plot_svg(&incident, stem) {
        None => Err(not_found(format!("incident {id} has no plot {stem:?}"))),
        Some(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "plot",
            vec![format!("plot {stem}: {e}")],
        )),
        Some(Ok(s)) => Ok(svg(s)),
    }
}

/// One drill report the console lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillEntry {
    pub name: String,
    /// The report's first heading.
    pub title: String,
}

/// A report's directory name, or a file in it: letters, digits, `-`, `_`,
/// `.`, and no `..` — never a path out of the reports directory.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[allow(clippy::result_large_err)]
fn reports_dir<S: Store>(api: &Api<S>) -> Result<&FsPath, Response> {
    api.console.reports_dir.as_deref().ok_or_else(|| {
        not_found("no drill reports: [control.console] reports_dir is not set".into())
    })
}

async fn drills<S: Store>(State(api): State<Api<S>>, headers: HeaderMap) -> Answer {
    reader(&api, &headers)?;
    let Some(dir) = api.console.reports_dir.clone() else {
        return Ok(Json(Vec::<DrillEntry>::new()).into_response());
    };
    let list = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !plain_name(&name) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path().join("report.md")) else {
                continue;
            };
            let title = text
                .lines()
                .find_map(|l| l.strip_prefix("# "))
                .unwrap_or(&name)
                .to_string();
            out.push(DrillEntry { name, title });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    })
    .await
    .unwrap_or_default();
    Ok(Json(list).into_response())
}

async fn drill<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    reader(&api, &headers)?;
    let dir = reports_dir(&api)?;
    if !plain_name(&name) {
        return Err(not_found(format!("no drill report {name:?}")));
    }
    let text = tokio::fs::read_to_string(dir.join(&name).join("report.md"))
        .await
        .map_err(|_| not_found(format!("no drill report {name:?}")))?;
    Ok(html(
        StatusCode::OK,
        markdown::render(&text, &format!("/ui/drills/{name}")),
    ))
}

async fn drill_file<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    Path((name, file)): Path<(String, String)>,
) -> Answer {
    reader(&api, &headers)?;
    let dir = reports_dir(&api)?;
    let kind = if file.ends_with(".png") {
        "image/png"
    } else if file.ends_with(".svg") {
        "image/svg+xml"
    } else {
        return Err(not_found(format!("{file:?}: only plots are served")));
    };
    if !plain_name(&name) || !plain_name(&file) {
        return Err(not_found(format!("no file {file:?} in {name:?}")));
    }
    let bytes = tokio::fs::read(dir.join(&name).join(&file))
        .await
        .map_err(|_| not_found(format!("no file {file:?} in {name:?}")))?;
    Ok(hardened(
        (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        SVG_CSP,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_never_leave_the_directory() {
        assert!(plain_name("zone-gray"));
        assert!(plain_name("entry.png"));
        assert!(!plain_name(".."));
        assert!(!plain_name("../etc"));
        assert!(!plain_name("a/b"));
        assert!(!plain_name(".hidden"));
        assert!(!plain_name(""));
    }
}
