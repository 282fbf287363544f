//! Changes only the leader may make, asked of another plane: incidents and
//! silences (one copy, kept by the leader, so a resolution made through
//! any plane is never overwritten by another's memory) and ingested alerts
//! and heartbeats (the leader's detection acts on them). A follower passes
//! such a request to the leader as it came, token included, and returns
//! the leader's answer; with no leader known it answers 503 at once.
//!
//! Forwarded rather than redirected: HTTP clients drop the Authorization
//! header when a redirect goes to another host, so a 307 would turn every
//! such request into a 401.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::plane::now_ms;
use crate::respond::{error, Api};
use crate::store::Store;

/// Marks a request one plane passed to another, so two planes that each
/// believe the other leads cannot pass it back and forth.
pub const FORWARDED: &str = "x-switchyard-forwarded";
/// The largest body passed on; the API's own limits are smaller.
const MAX_BODY: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

fn leader_only(method: &Method, path: &str) -> bool {
    method != Method::GET
        && method != Method::HEAD
        && [
            "/v1/incidents",
            "/v1/silences",
            "/v1/ingest/",
            "/v1/rollouts",
        ]
        .iter()
        .any(|p| path.starts_with(p))
}

pub async fn to_leader<S: Store + 'static>(
    State(api): State<Api<S>>,
    req: Request,
    next: Next,
) -> Response {
    let l = &api.plane.leadership;
    if !leader_only(req.method(), req.uri().path()) || l.acting(now_ms()) {
        return next.run(req).await;
    }
    let no_leader = |why: &str| {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            vec![format!(
                "{why}: incident changes and ingested signals wait for the election (a new leader within {} s)",
                (crate::leader::LEASE_TTL + crate::leader::ROUND).as_secs()
            )],
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        r
    };
    if req.headers().contains_key(FORWARDED) {
        return no_leader("passed on by another control plane, but this one is not the leader");
    }
    let Some(leader) = l.leader_url() else {
        return no_leader("no control plane is the leader now");
    };
    match pass(req, &leader, &api.peer_tls).await {
        Ok(r) => r,
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            "leader_unreachable",
            vec![format!("the leader at {leader} did not answer: {e}")],
        ),
    }
}

async fn pass(
    req: Request,
    leader: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Response, String> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the request: {e}"))?
        .to_bytes();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = http::Request::builder()
        .method(parts.method)
        .uri(format!("{leader}{path}"));
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    let out = out
        .header(FORWARDED, "1")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((**tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<bytes::Bytes>>(connector);
    let answer = tokio::time::timeout(TIMEOUT, async {
        let r = client
            .request(out)
            .await
            .map_err(|e| switchyard_api::tls::describe(&e))?;
        let (parts, body) = r.into_parts();
        let bytes = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((parts, bytes))
    })
    .await
    .map_err(|_| format!("no answer within {TIMEOUT:?}"))??;
    let (parts, bytes) = answer;
    let mut r = (parts.status, Body::from(bytes)).into_response();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_to_incidents_and_ingest_go_to_the_leader() {
        assert!(leader_only(&Method::POST, "/v1/incidents/i-1/ack"));
        assert!(leader_only(&Method::POST, "/v1/silences"));
        assert!(leader_only(&Method::DELETE, "/v1/silences/s-1"));
        assert!(leader_only(&Method::POST, "/v1/ingest/alertmanager"));
        assert!(!leader_only(&Method::GET, "/v1/incidents"));
        // Controls changes are safe on any plane: the store's compare-and-swap orders them.
        assert!(!leader_only(&Method::POST, "/v1/ops"));
    }
}
