//! The REST API and the watch stream.
//!
//! Reads are open (status, controls, history, the watch stream edges follow);
//! writes need a bearer token whose scope covers them: `operate` for shifts,
//! fail-overs and read-only, `admin` for replacing the controls wholesale and
//! for `force`. Malformed requests get 400 with the reasons, unknown targets
//! 404, refusals by a safety rule 409 naming the rule and the numbers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use switchyard_model::{Controls, RegionState, Scope, ZoneControl};

use crate::plane::{now_ms, Change, ChangeError, ControlPlane, Published};
use crate::store::Store;

pub struct Api<S: Store> {
    pub plane: Arc<ControlPlane<S>>,
}

impl<S: Store> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api {
            plane: self.plane.clone(),
        }
    }
}

pub(crate) fn error(status: StatusCode, code: &str, reasons: Vec<String>) -> Response {
    (status, Json(json!({"error": code, "reasons": reasons}))).into_response()
}

impl IntoResponse for ChangeError {
    fn into_response(self) -> Response {
        match self {
            ChangeError::Invalid(r) => error(StatusCode::BAD_REQUEST, "invalid", r),
            ChangeError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", vec![m]),
            ChangeError::Refused(rules) => (
                StatusCode::CONFLICT,
                Json(json!({
                    "error": "refused",
                    "rules": rules.iter().map(|(r, m)| json!({"rule": r, "message": m})).collect::<Vec<_>>(),
                    "reasons": rules.iter().map(|(r, m)| format!("{r}: {m}")).collect::<Vec<_>>(),
                })),
            )
                .into_response(),
            ChangeError::Store(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", vec![e.to_string()]),
        }
    }
}

/// The caller's name, if its token allows `need`. The error is the answer
/// to send as it is, so handlers can return it directly.
#[allow(clippy::result_large_err)]
pub(crate) fn authorize<S: Store>(
    api: &Api<S>,
    headers: &HeaderMap,
    need: Scope,
) -> Result<String, Response> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                vec!["an Authorization: Bearer token is required".into()],
            )
        })?;
    let tokens = api
        .plane
        .config
        .control
        .as_ref()
        .map(|c| c.tokens.clone())
        .unwrap_or_default();
    let Some((name, scope, _)) = tokens.iter().find(|(_, _, t)| {
        t.len() == given.len()
            && t.bytes()
                .zip(given.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    }) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            vec!["unknown token".into()],
        ));
    };
    if *scope < need {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            vec![format!(
                "token {name:?} has scope {scope:?}; this needs {need:?}"
            )],
        ));
    }
    Ok(name.clone())
}

/// `90s`, `30m`, `1h`, `2h30m`, `3d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("not a duration: {s:?} (use 90s, 30m, 1h, 2h30m, 3d)"))?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "not a duration: {s:?} (use 90s, 30m, 1h, 2h30m, 3d)"
                ))
            }
        };
    }
    if !num.is_empty() || total == 0 {
        return Err(format!(
            "not a duration: {s:?} (use 90s, 30m, 1h, 2h30m, 3d)"
        ));
    }
    Ok(Duration::from_secs(total))
}

pub fn router<S: Store + 'static>(api: Api<S>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/status", get(status::<S>))
        .route(
            "/v1/controls",
            get(get_controls::<S>).put(put_controls::<S>),
        )
        .route("/v1/history", get(history::<S>))
        .route("/v1/findings", get(findings::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/v1/ingest/alertmanager", post(ingest_alertmanager::<S>))
        .route("/v1/ingest/heartbeat", post(ingest_heartbeat::<S>))
        .route("/v1/watch", get(watch::<S>))
        .route("/v1/shift", post(shift::<S>))
        .route("/v1/shift/{service}/{zone}", delete(unshift::<S>))
        .route("/v1/readonly", post(readonly::<S>))
        .route("/v1/failover", post(failover::<S>))
        .route("/v1/failback", post(failback::<S>))
        .merge(crate::api_incidents::routes::<S>())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                vec!["no such endpoint".into()],
            )
        })
        .with_state(api)
}

/// A body that failed to parse is a 400 with serde's reason (which names the field).
#[allow(clippy::result_large_err)]
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", vec![e.to_string()]))
}

async fn status<S: Store>(State(api): State<Api<S>>) -> Response {
    let cur = api.plane.current();
    let cfg = &api.plane.config;
    let now = now_ms();
    let services: Vec<_> = cfg
        .services
        .iter()
        .map(|svc| {
            let sc = cur.controls.service(&svc.name);
            let regions: Vec<_> = cfg
                .regions
                .iter()
                .map(|r| {
                    let rc = sc.and_then(|c| c.regions.get(&r.name)).cloned().unwrap_or_default();
                    let zones: Vec<_> = r
                        .zones
                        .iter()
                        .map(|z| {
                            let zc = sc.and_then(|c| c.zones.get(&z.name));
                            let instances = svc.instances.iter().filter(|i| i.zone == z.name).count();
                            json!({
                                "zone": z.name,
                                "weight": zc.map(|c| c.effective_weight(now)).unwrap_or(1.0),
                                "shift_expires_at_ms": zc.and_then(|c| c.expires_at_ms).filter(|t| *t > now),
                                "shift_reason": zc.and_then(|c| c.reason.clone()),
                                "instances": instances,
                            })
                        })
                        .collect();
                    json!({
                        "region": r.name, "state": rc.state, "weight": rc.weight, "failover": rc.failover,
                        "read_only": rc.read_only, "floor": svc.floor(&r.name), "zones": zones,
                    })
                })
                .collect();
            json!({
                "service": svc.name,
                "read_only": sc.map(|c| c.read_only).unwrap_or(false),
                "shed_level": sc.map(|c| c.shed_level).unwrap_or(0),
                "regions": regions,
            })
        })
        .collect();
    Json(json!({"version": cur.version, "services": services, "watchers": api.plane.watchers()}))
        .into_response()
}

async fn get_controls<S: Store>(State(api): State<Api<S>>) -> Response {
    let cur = api.plane.current();
    Json(json!({"version": cur.version, "controls": cur.controls})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutControls {
    controls: Controls,
    reason: String,
    #[serde(default)]
    force: bool,
}

async fn put_controls<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let who = match authorize(&api, &headers, Scope::Admin) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let req: PutControls = match body(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let new = req.controls.clone();
    let edit = move |c: &mut Controls| {
        *c = new.clone();
        Ok(())
    };
    respond(
        api.plane
            .change(Change {
                who,
                action: "replace controls".into(),
                reason: req.reason,
                force: req.force,
                edit: &edit,
            })
            .await,
    )
}

fn respond(r: Result<Published, ChangeError>) -> Response {
    match r {
        Ok(p) => Json(json!({"accepted": true, "version": p.version})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// An Alertmanager webhook receiver (payload version 4). Alerts whose labels
/// name a place (`switchyard_zone`, `switchyard_region`, `switchyard_instance`)
/// become findings, and feed the playbooks like any other.
async fn ingest_alertmanager<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&api, &headers, Scope::Operate) {
        return r;
    }
    let text = String::from_utf8_lossy(&raw);
    match switchyard_detect::alerts::parse_alertmanager(&text) {
        Ok(alerts) => {
            let n = alerts.len();
            let scoped = alerts.iter().filter(|a| a.scope.is_some()).count();
            let _ = api.plane.ingest.send(crate::plane::Ingest::Alerts(alerts));
            Json(json!({"alerts": n, "with_scope": scoped})).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid", vec![e.to_string()]),
    }
}

/// An application's own heartbeat: `{"source", "at_ms", "interval_ms"}`.
async fn ingest_heartbeat<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&api, &headers, Scope::Operate) {
        return r;
    }
    match switchyard_detect::alerts::parse_heartbeat(&String::from_utf8_lossy(&raw)) {
        Ok(hb) => {
            let _ = api.plane.ingest.send(crate::plane::Ingest::Heartbeat(hb));
            Json(json!({"accepted": true})).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "invalid", vec![e.to_string()]),
    }
}

async fn metrics<S: Store>(State(api): State<Api<S>>) -> Response {
    let m = &api.plane.metrics;
    m.watchers.set(api.plane.watchers() as i64);
    m.version.set(api.plane.current().version as i64);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

async fn findings<S: Store>(State(api): State<Api<S>>) -> Response {
    Json(
        api.plane
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    )
    .into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history<S: Store>(State(api): State<Api<S>>, Query(q): Query<HistoryQuery>) -> Response {
    match api.plane.history(q.limit.unwrap_or(50).min(10_000)).await {
        Ok(h) => Json(json!({"entries": h})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            vec![e.to_string()],
        ),
    }
}

/// Server-sent events: the full state at once, then every change. Edges
/// need nothing else to catch up after a reconnect.
async fn watch<S: Store>(
    State(api): State<Api<S>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = api.plane.subscribe();
    let first = Arc::new(api.plane.current());
    let event = |p: &Published| {
        let mut c = p.controls.clone();
        c.version = p.version;
        Ok::<_, Infallible>(
            Event::default()
                .event("controls")
                .data(serde_json::to_string(&c).expect("controls serialize")),
        )
    };
    let head = stream::once({
        let e = event(&first);
        async move { e }
    });
    let rest = stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(p) => return Some((event(&p), rx)),
                // A slow watcher that fell behind only needs the newest state.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(head.chain(rest)).keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
}

fn known_service<S: Store>(api: &Api<S>, service: &str) -> Result<(), ChangeError> {
    api.plane
        .config
        .service(service)
        .map(|_| ())
        .ok_or_else(|| ChangeError::NotFound(format!("unknown service {service:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShiftReq {
    service: String,
    zone: String,
    /// How long, e.g. `1h` (at most the safety rules' limit).
    #[serde(rename = "for")]
    for_: String,
    reason: String,
    #[serde(default)]
    force: bool,
}

async fn shift<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let req: ShiftReq = match body(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let who = match authorize(
        &api,
        &headers,
        if req.force {
            Scope::Admin
        } else {
            Scope::Operate
        },
    ) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(e) = known_service(&api, &req.service) {
        return e.into_response();
    }
    if api.plane.config.zone(&req.zone).is_none() {
        return ChangeError::NotFound(format!("unknown zone {:?}", req.zone)).into_response();
    }
    let d = match parse_duration(&req.for_) {
        Ok(d) => d,
        Err(e) => return ChangeError::Invalid(vec![format!("for: {e}")]).into_response(),
    };
    let until = now_ms() + d.as_millis() as u64;
    let (svc, zone, reason) = (req.service.clone(), req.zone.clone(), req.reason.clone());
    let edit = move |c: &mut Controls| {
        c.services.entry(svc.clone()).or_default().zones.insert(
            zone.clone(),
            ZoneControl {
                weight: 0.0,
                expires_at_ms: Some(until),
                reason: Some(reason.clone()),
            },
        );
        Ok(())
    };
    respond(
        api.plane
            .change(Change {
                who,
                action: format!(
                    "shift {} away from zone {} for {}",
                    req.service, req.zone, req.for_
                ),
                reason: req.reason,
                force: req.force,
                edit: &edit,
            })
            .await,
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonReq {
    #[serde(default)]
    reason: String,
}

async fn unshift<S: Store>(
    State(api): State<Api<S>>,
    Path((service, zone)): Path<(String, String)>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let who = match authorize(&api, &headers, Scope::Operate) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let req: ReasonReq = if raw.is_empty() {
        ReasonReq::default()
    } else {
        match body(&raw) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    if let Err(e) = known_service(&api, &service) {
        return e.into_response();
    }
    let shifted = api
        .plane
        .current()
        .controls
        .service(&service)
        .is_some_and(|c| c.zones.contains_key(&zone));
    if !shifted {
        return ChangeError::NotFound(format!(
            "zone {zone:?} is not shifted for service {service:?}"
        ))
        .into_response();
    }
    let (svc, z) = (service.clone(), zone.clone());
    let edit = move |c: &mut Controls| {
        if let Some(sc) = c.services.get_mut(&svc) {
            sc.zones.remove(&z);
        }
        Ok(())
    };
    respond(
        api.plane
            .change(Change {
                who,
                action: format!("end the shift of {service} away from zone {zone}"),
                reason: req.reason,
                force: false,
                edit: &edit,
            })
            .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadOnlyReq {
    service: String,
    /// One region only; the whole service when absent.
    #[serde(default)]
    region: Option<String>,
    on: bool,
    reason: String,
}

async fn readonly<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let who = match authorize(&api, &headers, Scope::Operate) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let req: ReadOnlyReq = match body(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = known_service(&api, &req.service) {
        return e.into_response();
    }
    if let Some(r) = &req.region {
        if api.plane.config.region(r).is_none() {
            return ChangeError::NotFound(format!("unknown region {r:?}")).into_response();
        }
    }
    let (svc, region, on) = (req.service.clone(), req.region.clone(), req.on);
    let edit = move |c: &mut Controls| {
        let sc = c.services.entry(svc.clone()).or_default();
        match &region {
            Some(r) => sc.regions.entry(r.clone()).or_default().read_only = on,
            None => sc.read_only = on,
        }
        Ok(())
    };
    respond(
        api.plane
            .change(Change {
                who,
                action: format!(
                    "read-only {} for {}{}",
                    if req.on { "on" } else { "off" },
                    req.service,
                    req.region
                        .as_ref()
                        .map(|r| format!(" in {r}"))
                        .unwrap_or_default()
                ),
                reason: req.reason,
                force: false,
                edit: &edit,
            })
            .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverReq {
    service: String,
    to: String,
    #[serde(default)]
    reason: String,
    /// Only say what would happen.
    #[serde(default)]
    preview: bool,
    #[serde(default)]
    force: bool,
}

/// Moves a service to one region: every other region of its preference goes
/// out, so their edges forward there. The preview shows the capacity left
/// and every rule's verdict before anything changes.
async fn failover<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let req: FailoverReq = match body(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(svc) = api.plane.config.service(&req.service).cloned() else {
        return ChangeError::NotFound(format!("unknown service {:?}", req.service)).into_response();
    };
    if !svc.region_preference.contains(&req.to) {
        return ChangeError::NotFound(format!(
            "region {:?} does not serve {:?}",
            req.to, req.service
        ))
        .into_response();
    }
    let (name, to) = (svc.name.clone(), req.to.clone());
    let others: Vec<String> = svc
        .region_preference
        .iter()
        .filter(|r| **r != req.to)
        .cloned()
        .collect();
    let edit = move |c: &mut Controls| {
        let sc = c.services.entry(name.clone()).or_default();
        sc.regions.entry(to.clone()).or_default().state = RegionState::In;
        for r in &others {
            let rc = sc.regions.entry(r.clone()).or_default();
            rc.state = RegionState::Out;
        }
        Ok(())
    };
    if req.preview {
        let mut proposed = api.plane.current().controls;
        let _ = edit(&mut proposed);
        let verdict = api.plane.preview(&proposed);
        let instances = svc.instances_in_region(&req.to).count();
        return Json(json!({
            "preview": true,
            "service": req.service,
            "to": req.to,
            "serving_instances_after": instances,
            "total_instances": svc.instances.len(),
            "capacity_after": instances as f64 / svc.instances.len().max(1) as f64,
            "allowed": verdict.allowed,
            "refusals": verdict.refusals.iter().map(|r| json!({"rule": r.rule, "message": r.message})).collect::<Vec<_>>(),
        }))
        .into_response();
    }
    let who = match authorize(
        &api,
        &headers,
        if req.force {
            Scope::Admin
        } else {
            Scope::Operate
        },
    ) {
        Ok(w) => w,
        Err(r) => return r,
    };
    respond(
        api.plane
            .change(Change {
                who,
                action: format!("fail {} over to {}", req.service, req.to),
                reason: req.reason,
                force: req.force,
                edit: &edit,
            })
            .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailbackReq {
    service: String,
    #[serde(default)]
    reason: String,
}

async fn failback<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Response {
    let who = match authorize(&api, &headers, Scope::Operate) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let req: FailbackReq = match body(&raw) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(e) = known_service(&api, &req.service) {
        return e.into_response();
    }
    let name = req.service.clone();
    let edit = move |c: &mut Controls| {
        if let Some(sc) = c.services.get_mut(&name) {
            sc.regions.clear();
        }
        Ok(())
    };
    respond(
        api.plane
            .change(Change {
                who,
                action: format!("fail {} back: every region in", req.service),
                reason: req.reason,
                force: false,
                edit: &edit,
            })
            .await,
    )
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_duration("3d").unwrap(), Duration::from_secs(259_200));
        for bad in ["", "1", "h", "1x", "0s", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
