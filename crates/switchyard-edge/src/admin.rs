//! The admin listener: `/status`, `/controls`, `/metrics`, `/signals` and
//! `/health`. Reads are open; writes need the bearer token.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use switchyard_model::time::now_ms;

use switchyard_api::edge::{
    ControlPlaneLink, EdgeControls, EdgeLimits, EdgeService, EdgeStatus, EdgeZone,
};

use crate::state::Edge;

pub type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> AdminBody {
    Full::new(b.into()).boxed_unsync()
}

fn json_resp(status: StatusCode, v: serde_json::Value) -> Response<AdminBody> {
    let mut r = Response::new(full(
        serde_json::to_vec_pretty(&v).expect("json values serialize"),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The same error body as the control plane's, so one client type reads both.
fn error(status: StatusCode, code: &str, reasons: Vec<String>) -> Response<AdminBody> {
    let body = switchyard_api::ErrorBody {
        error: code.into(),
        reasons,
        rules: Vec::new(),
    };
    json_resp(status, serde_json::to_value(body).expect("serializable"))
}

pub async fn handle(
    edge: Arc<Edge>,
    req: Request<Incoming>,
) -> Result<Response<AdminBody>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/health") => json_resp(StatusCode::OK, json!({"status": "ok"})),
        (Method::GET, "/status") => json_resp(
            StatusCode::OK,
            serde_json::to_value(status(&edge)).expect("serializable"),
        ),
        (Method::GET, "/controls") => json_resp(
            StatusCode::OK,
            serde_json::to_value(&*edge.snapshot().controls).expect("controls serialize"),
        ),
        (Method::PUT, "/controls") => put_controls(&edge, req).await,
        (Method::POST, "/reload") => match authorize(&edge, &req) {
            Err(r) => r,
            Ok(()) => match crate::reload_config(&edge) {
                Ok(()) => json_resp(StatusCode::OK, json!({"reloaded": true})),
                Err(e) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "config_refused",
                    e.reasons(),
                ),
            },
        },
        (Method::GET, "/metrics") => {
            let mut r = Response::new(full(edge.metrics.encode()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(switchyard_metrics::CONTENT_TYPE),
            );
            r
        }
        (Method::GET, "/signals/recent") => json_resp(
            StatusCode::OK,
            serde_json::to_value(edge.signals.recent()).expect("signals serialize"),
        ),
        (Method::GET, "/signals") => signals_stream(&edge),
        (
            _,
            "/health" | "/status" | "/controls" | "/metrics" | "/signals" | "/signals/recent"
            | "/reload",
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            vec![format!("{} is not allowed on {path}", req.method())],
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            vec![format!("no admin endpoint {path}")],
        ),
    };
    Ok(resp)
}

#[allow(clippy::result_large_err)]
fn authorize(edge: &Edge, req: &Request<Incoming>) -> Result<(), Response<AdminBody>> {
    let snap = edge.snapshot();
    let Some(token) = snap.config.edge.admin_token.as_deref() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "writes_disabled",
            vec!["no admin token is configured (edge.admin_token or edge.admin_token_env), so admin writes are off".into()],
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            vec!["the bearer token is wrong".into()],
        )),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            vec!["an Authorization: Bearer token is required".into()],
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn put_controls(edge: &Arc<Edge>, req: Request<Incoming>) -> Response<AdminBody> {
    if let Err(r) = authorize(edge, &req) {
        return r;
    }
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", vec![e.to_string()]),
    };
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                vec!["the body is not UTF-8".into()],
            )
        }
    };
    match edge.apply_controls_json(text, "admin") {
        Ok(c) => json_resp(
            StatusCode::OK,
            json!({"accepted": true, "version": c.version}),
        ),
        Err(crate::state::UpdateError::Persist(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_persisted",
            vec![format!(
                "could not save the controls, so they were not applied: {e}"
            )],
        ),
        Err(e @ crate::state::UpdateError::Older { .. }) => {
            error(StatusCode::CONFLICT, "older_version", e.reasons())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid_controls", e.reasons()),
    }
}

/// What an operator wants to see at a glance, in one JSON document.
pub fn status(edge: &Edge) -> EdgeStatus {
    let snap = edge.snapshot();
    let now = Instant::now();
    let nms = now_ms();
    let zones_here: Vec<&str> = snap
        .config
        .region(&edge.region)
        .map(|r| r.zones.iter().map(|z| z.name.as_str()).collect())
        .unwrap_or_default();
    let services = snap
        .services
        .iter()
        .map(|rt| {
            let sc = snap.controls.service(&rt.svc.name);
            let plan = switchyard_steer::plan(&rt.local, rt.svc.floor(&edge.region), sc, nms);
            let zones = zones_here
                .iter()
                .map(|z| {
                    let c = sc.and_then(|c| c.zones.get(*z));
                    EdgeZone {
                        zone: z.to_string(),
                        weight: c.map(|c| c.weight).unwrap_or(1.0),
                        effective_weight: switchyard_steer::zone_weight(sc, z, nms),
                        shift_expires_at_ms: c.and_then(|c| c.expires_at_ms),
                    }
                })
                .collect();
            EdgeService {
                name: rt.svc.name.clone(),
                mode: plan.mode,
                panic: plan.mode == switchyard_steer::Mode::Panic,
                floor: plan.floor,
                serving: plan.serving,
                instances_in_region: rt.local.len(),
                read_only: sc
                    .map(|c| {
                        c.read_only || c.regions.get(&edge.region).is_some_and(|r| r.read_only)
                    })
                    .unwrap_or(false),
                shed_level: sc.map(|c| c.shed_level).unwrap_or(0),
                limits: EdgeLimits {
                    concurrency_limit: rt.admission.limit(),
                    max_concurrency: rt.svc.limits.max_concurrency,
                    adaptive: rt.svc.limits.adaptive,
                    max_rps: rt.svc.limits.max_rps,
                    inflight: rt.admission.inflight(),
                },
                zones,
                regions: sc.map(|c| c.regions.clone()).unwrap_or_default(),
                instances: rt.local.iter().map(|i| i.view(now)).collect(),
            }
        })
        .collect();
    EdgeStatus {
        zone: edge.zone.clone(),
        region: edge.region.clone(),
        uptime_s: edge.started.elapsed().as_secs(),
        controls: EdgeControls {
            version: snap.controls.version,
            source: edge.controls_source(),
            faults: snap.controls.faults.clone(),
            last_known_good_error: edge.last_known_good_error.clone(),
        },
        control_plane: ControlPlaneLink {
            url: snap.config.edge.control_url.clone(),
            connected: edge.control_plane_connected.load(Ordering::Relaxed),
        },
        services,
    }
}

fn signals_stream(edge: &Arc<Edge>) -> Response<AdminBody> {
    let rx = edge.signals.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(s) => {
                    let mut line = serde_json::to_vec(&s).expect("signals serialize");
                    line.push(b'\n');
                    return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed();
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}
