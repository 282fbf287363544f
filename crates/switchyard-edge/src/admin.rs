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
use hyper::body::Frame;

use crate::body::Inbound;
use serde_json::json;
use switchyard_model::time::now_ms;

use switchyard_api::edge::{
    ControlPlaneLink, EdgeControls, EdgeLimits, EdgeService, EdgeStatus, EdgeZone,
};

use crate::metrics::RegionLabels;
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
    req: Request<Inbound>,
) -> Result<Response<AdminBody>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/health") => json_resp(StatusCode::OK, json!({"status": "ok"})),
        (Method::GET, "/status") => json_resp(
            StatusCode::OK,
            serde_json::to_value(status(&edge)).expect("serializable"),
        ),
        (Method::GET, "/controls") => {
            let c = edge.snapshot().controls.clone();
            with_etag(
                json_resp(
                    StatusCode::OK,
                    serde_json::to_value(&*c).expect("controls serialize"),
                ),
                c.version,
            )
        }
        (Method::PUT | Method::PATCH, "/controls") => write_controls(&edge, req).await,
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
fn authorize(edge: &Edge, req: &Request<Inbound>) -> Result<(), Response<AdminBody>> {
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
        Some(g) if switchyard_model::secret::equal(g.as_bytes(), token.as_bytes()) => Ok(()),
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

/// `PUT /controls` replaces the whole set; `PATCH /controls` merges a JSON
/// merge patch (RFC 7396) into the set in force, so a change names only what
/// it changes (a patch that names no `version` gets the next one). Both take
/// `If-Match: VERSION` to apply only over that version (412 otherwise).
async fn write_controls(edge: &Arc<Edge>, req: Request<Inbound>) -> Response<AdminBody> {
    if let Err(r) = authorize(edge, &req) {
        return r;
    }
    let merge = req.method() == Method::PATCH;
    let if_match = match if_match(&req) {
        Ok(v) => v,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad_if_match", vec![reason]),
    };
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", vec![e.to_string()]),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            vec!["the body is not UTF-8".into()],
        );
    };
    // Any JSON value that is not an object is refused by name; text that is
    // not JSON at all gets the parser's reason from the model below.
    let doc = serde_json::from_str::<serde_json::Value>(text).ok();
    if let Some(kind) = doc.as_ref().and_then(not_an_object) {
        let e = crate::state::UpdateError::NotADocument(format!(
            "a controls document is a JSON object; got {kind}"
        ));
        edge.metrics.update("admin", false);
        return update_error(e);
    }
    let result = if merge {
        let Some(patch) = doc else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                vec!["a merge patch must be JSON (RFC 7396)".into()],
            );
        };
        edge.update_controls("admin", if_match, |cur, cfg| {
            let mut merged = serde_json::to_value(cur).expect("controls serialize");
            json_patch::merge(&mut merged, &patch);
            if patch.get("version").is_none() {
                merged["version"] = json!(cur.version + 1);
            }
            Ok(switchyard_model::Controls::from_json(
                &merged.to_string(),
                cfg,
            )?)
        })
    } else {
        edge.update_controls("admin", if_match, |_, cfg| {
            Ok(switchyard_model::Controls::from_json(text, cfg)?)
        })
    };
    match result {
        Ok(c) => with_etag(
            json_resp(
                StatusCode::OK,
                json!({"accepted": true, "version": c.version}),
            ),
            c.version,
        ),
        Err(e) => update_error(e),
    }
}

fn not_an_object(v: &serde_json::Value) -> Option<&'static str> {
    match v {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Array(_) => Some("an array"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Null => Some("null"),
    }
}

/// `If-Match: 12` or, as an entity tag, `If-Match: "12"`.
fn if_match(req: &Request<Inbound>) -> Result<Option<u64>, String> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    s.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| format!("If-Match must be a controls version (a number), got {s:?}"))
}

fn with_etag(mut r: Response<AdminBody>, version: u64) -> Response<AdminBody> {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn update_error(e: crate::state::UpdateError) -> Response<AdminBody> {
    use crate::state::UpdateError as E;
    match e {
        E::Persist(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not_persisted",
            vec![format!(
                "could not save the controls, so they were not applied: {e}"
            )],
        ),
        e @ E::Backwards(switchyard_model::Backwards::Older { .. }) => {
            error(StatusCode::CONFLICT, "older_version", e.reasons())
        }
        e @ E::Backwards(switchyard_model::Backwards::OtherStore { .. }) => {
            error(StatusCode::CONFLICT, "other_store", e.reasons())
        }
        E::Mismatch { current, .. } => {
            let body = switchyard_api::ErrorBody {
                error: "version_mismatch".into(),
                reasons: e.reasons(),
                rules: Vec::new(),
            };
            let mut v = serde_json::to_value(body).expect("serializable");
            v["current_version"] = json!(current);
            with_etag(json_resp(StatusCode::PRECONDITION_FAILED, v), current)
        }
        e @ E::NotADocument(_) => error(
            StatusCode::BAD_REQUEST,
            "not_a_controls_document",
            e.reasons(),
        ),
        e => error(StatusCode::BAD_REQUEST, "invalid_controls", e.reasons()),
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
                forward_failed_open: edge
                    .metrics
                    .forward_fallbacks
                    .get_or_create(&RegionLabels {
                        service: rt.svc.name.clone(),
                        region: edge.region.clone(),
                    })
                    .get(),
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
            origin: snap.controls.origin.clone(),
            source: edge.controls_source(),
            faults: snap.controls.faults.clone(),
            last_known_good_error: edge.last_known_good_error.clone(),
        },
        control_plane: ControlPlaneLink {
            url: snap.config.edge.control_urls.first().cloned(),
            connected: edge.control_plane_connected.load(Ordering::Relaxed),
        },
        config: Some(edge.running_config()),
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
