//! The REST API and the watch stream.
//!
//! Reads are open (status, controls, history, findings, the watch stream
//! edges follow); previews need any token; changes are operations (`POST
//! /v1/ops`, one [`switchyard_model::Op`] each) and need a bearer token whose
//! scope covers them: `operate` for shifts, fail-overs, read-only and the
//! rest, `admin` for replacing the controls wholesale and for `force`. The
//! token is checked before the body is read. Malformed requests get 400
//! with the reasons, unknown targets 404, refusals by a safety rule 409
//! naming the rule and the numbers, bodies over the limit 413. Request and answer types live in
//! `switchyard-api`, which every client uses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use switchyard_api::limits;
use switchyard_api::{
    Accepted, Applied, ControlsView, History, HistoryPage, IngestedAlerts, OpRequest, Preview,
    RegionStatus, ServiceStatus, StatusView, ZoneStatus,
};
use switchyard_model::ops::{human_duration, Place};
use switchyard_model::{Actor, Op, Scope};

use crate::plane::{now_ms, Change, Published};
use crate::respond::{
    authorize, body, error, invalid, read_body, unavailable, within_limits, Answer, Api,
};
use crate::store::Store;

pub fn router<S: Store + 'static>(api: Api<S>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/v1/status", get(status::<S>))
        .route("/v1/leader", get(leader::<S>))
        .route("/v1/controls", get(get_controls::<S>))
        .route("/v1/ops", post(ops::<S>))
        .route("/v1/history", get(history::<S>))
        .route("/v1/findings", get(findings::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/v1/ingest/alertmanager", post(ingest_alertmanager::<S>))
        .route("/v1/ingest/heartbeat", post(ingest_heartbeat::<S>))
        .route("/v1/events/dns-push", post(dns_push_event::<S>))
        .route("/v1/watch", get(watch::<S>))
        .route("/v1/config", get(config_assignment::<S>))
        .route("/v1/config/{version}", get(config_doc::<S>))
        .merge(crate::api_incidents::routes::<S>())
        .merge(crate::api_rollouts::routes::<S>())
        .merge(crate::api_live::routes::<S>())
        .merge(crate::api_console::routes::<S>())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                vec!["no such endpoint".into()],
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            crate::forward::to_leader::<S>,
        ))
        .with_state(api)
}

async fn leader<S: Store>(State(api): State<Api<S>>) -> Json<switchyard_api::LeaderView> {
    Json(leader_view(&api))
}

pub fn leader_view<S: Store>(api: &Api<S>) -> switchyard_api::LeaderView {
    let l = &api.plane.leadership;
    let acting = l.acting(now_ms());
    let leader = match l.role() {
        crate::leader::Role::Leader { .. } if acting => Some(l.me.clone()),
        crate::leader::Role::Follower { leader } => leader,
        crate::leader::Role::Leader { .. } => None,
    };
    switchyard_api::LeaderView {
        me: l.me.clone(),
        acting,
        leader,
    }
}

async fn status<S: Store>(State(api): State<Api<S>>) -> Json<StatusView> {
    Json(status_view(&api))
}

/// The controls in force per service, region and zone, as `/v1/status` and
/// the live view show them.
pub fn status_view<S: Store>(api: &Api<S>) -> StatusView {
    let cur = api.plane.current();
    let cfg = &api.plane.config();
    let now = now_ms();
    let services = cfg
        .services
        .iter()
        .map(|svc| {
            let sc = cur.controls.service(&svc.name);
            let regions = cfg
                .regions
                .iter()
                .map(|r| {
                    let rc = sc
                        .and_then(|c| c.regions.get(&r.name))
                        .cloned()
                        .unwrap_or_default();
                    let zones = r
                        .zones
                        .iter()
                        .map(|z| {
                            let zc = sc.and_then(|c| c.zones.get(&z.name));
                            ZoneStatus {
                                zone: z.name.clone(),
                                weight: zc.map(|c| c.effective_weight(now)).unwrap_or(1.0),
                                shift_expires_at_ms: zc
                                    .and_then(|c| c.expires_at_ms)
                                    .filter(|t| *t > now),
                                shift_reason: zc.and_then(|c| c.reason.clone()),
                                instances: svc
                                    .instances
                                    .iter()
                                    .filter(|i| i.zone == z.name)
                                    .count(),
                            }
                        })
                        .collect();
                    RegionStatus {
                        region: r.name.clone(),
                        state: rc.state,
                        weight: rc.weight,
                        failover: rc.failover,
                        read_only: rc.read_only,
                        floor: svc.floor(&r.name),
                        zones,
                    }
                })
                .collect();
            ServiceStatus {
                service: svc.name.clone(),
                read_only: sc.map(|c| c.read_only).unwrap_or(false),
                shed_level: sc.map(|c| c.shed_level).unwrap_or(0),
                regions,
            }
        })
        .collect();
    StatusView {
        version: cur.version,
        services,
        watchers: api.plane.watchers(),
        problem: api.plane.held_back().or_else(|| api.plane.stale()),
    }
}

async fn get_controls<S: Store>(State(api): State<Api<S>>) -> Json<ControlsView> {
    let cur = api.plane.current();
    Json(ControlsView {
        version: cur.version,
        controls: cur.controls,
    })
}

/// One operation: previewed (any token), or made as the token's owner — or
/// as a drill acting through that token. The caller is known before the
/// body is read: a stranger gets 401 whatever they sent, and learns
/// nothing from the parse errors.
async fn ops<S: Store>(State(api): State<Api<S>>, headers: HeaderMap, raw: Body) -> Answer {
    let token = authorize(&api, &headers, Scope::Read)?;
    let raw = read_body(raw).await?;
    let req: OpRequest = body(&raw)?;
    check_request(&api, &req)?;
    if req.preview {
        return Ok(Json(preview(&api, req)?).into_response());
    }
    let need = if req.force || req.op.needs_admin() {
        Scope::Admin
    } else {
        Scope::Operate
    };
    authorize(&api, &headers, need)?;
    let actor = match req.drill {
        Some(name) => Actor::Drill { name, token },
        None => Actor::Person { name: token },
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .map_err(|_| crate::respond::invalid("Idempotency-Key", "not text"))?;
            within_limits(&[("Idempotency-Key", k, limits::NAME)])?;
            if k.is_empty() {
                return Err(crate::respond::invalid("Idempotency-Key", "empty"));
            }
            Some(k.to_string())
        }
    };
    let (p, changed) = api
        .plane
        .change_or_same(Change {
            actor,
            op: req.op,
            reason: req.reason,
            force: req.force,
            idempotency_key,
        })
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(Applied {
        accepted: true,
        version: p.version,
        changed,
    })
    .into_response())
}

/// What the request itself must satisfy before anything is judged: sizes
/// (the reason travels to every edge and into every audit entry), and a
/// shift's lease no longer than the rules' longest, named as `for`.
#[allow(clippy::result_large_err)]
fn check_request<S: Store>(api: &Api<S>, req: &OpRequest) -> Result<(), Response> {
    let scope = req.op.scope();
    let mut fields = vec![("reason", req.reason.as_str(), limits::REASON)];
    if let Some(d) = &req.drill {
        fields.push(("drill", d.as_str(), limits::NAME));
    }
    if let Some(s) = scope.service {
        fields.push(("op.service", s, limits::NAME));
    }
    match scope.place {
        Place::Zone(z) => fields.push(("op.zone", z, limits::NAME)),
        Place::Region(r) => fields.push(("op.region", r, limits::NAME)),
        Place::Regions(rs) => {
            fields.extend(rs.iter().map(|r| ("op.regions", r.as_str(), limits::NAME)))
        }
        Place::Service | Place::Everything => {}
    }
    if let Op::Failover { to, .. } = &req.op {
        fields.push(("op.to", to.as_str(), limits::NAME));
    }
    within_limits(&fields)?;
    if let Op::Shift { for_, .. } = &req.op {
        let max = Duration::from_millis(api.plane.safety.max_shift_ms);
        if *for_ > max {
            return Err(invalid(
                "op.for",
                format!(
                    "{} is longer than the longest shift allowed ({}, control.safety.max_shift_ms)",
                    human_duration::format(*for_),
                    human_duration::format(max)
                ),
            ));
        }
    }
    Ok(())
}

/// Capacity after the operation (instances of the services it touches that
/// would still take traffic) and every rule's verdict.
#[allow(clippy::result_large_err)]
fn preview<S: Store>(api: &Api<S>, req: OpRequest) -> Result<Preview, Response> {
    let (proposed, verdict) = api
        .plane
        .preview(&req.op, &Actor::person("preview"), &req.reason)
        .map_err(IntoResponse::into_response)?;
    let now = now_ms();
    let config = api.plane.config();
    let services: Vec<_> = config
        .services
        .iter()
        .filter(|s| req.op.service().is_none_or(|n| n == s.name))
        .collect();
    let dns = crate::dns_preview::moves(
        &api.plane.config(),
        &api.plane.current().controls,
        &proposed,
        &services,
        now,
    );
    let (mut serving, mut total) = (0, 0);
    for svc in services {
        let sc = proposed.service(&svc.name);
        for i in &svc.instances {
            total += 1;
            let region = sc
                .and_then(|c| c.regions.get(&i.region))
                .map_or(1.0, |r| r.local_share());
            let zone = sc
                .and_then(|c| c.zones.get(&i.zone))
                .map_or(1.0, |z| z.effective_weight(now));
            if region > 0.0 && zone > 0.0 {
                serving += 1;
            }
        }
    }
    Ok(Preview {
        op: req.op,
        serving_instances_after: serving,
        total_instances: total,
        capacity_after: serving as f64 / total.max(1) as f64,
        allowed: verdict.allowed,
        refusals: verdict.refusals.iter().map(|r| r.to_wire()).collect(),
        dns,
        rules: verdict
            .refusals
            .iter()
            .map(|r| (r, false))
            .chain(verdict.passed.iter().map(|r| (r, true)))
            .map(|(r, passed)| switchyard_api::RuleVerdict {
                rule: r.rule.to_string(),
                passed,
                message: r.message.clone(),
            })
            .collect(),
    })
}

/// An Alertmanager webhook receiver (payload version 4). Alerts whose labels
/// name a place (`switchyard_zone`, `switchyard_region`, `switchyard_instance`)
/// become findings, and feed the playbooks like any other.
async fn ingest_alertmanager<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    authorize(&api, &headers, Scope::Operate)?;
    let raw = read_body(raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let alerts = switchyard_detect::alerts::parse_alertmanager(&text)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", vec![e.to_string()]))?;
    let answer = IngestedAlerts {
        alerts: alerts.len(),
        with_scope: alerts.iter().filter(|a| a.scope.is_some()).count(),
    };
    let _ = api.plane.ingest.send(crate::plane::Ingest::Alerts(alerts));
    Ok(Json(answer).into_response())
}

/// An application's own heartbeat: `{"source", "at_ms", "interval_ms"}`.
async fn ingest_heartbeat<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    authorize(&api, &headers, Scope::Operate)?;
    let raw = read_body(raw).await?;
    let hb = switchyard_detect::alerts::parse_heartbeat(&String::from_utf8_lossy(&raw))
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid", vec![e.to_string()]))?;
    let _ = api.plane.ingest.send(crate::plane::Ingest::Heartbeat(hb));
    Ok(Json(Accepted { accepted: true }).into_response())
}

/// A DNS server's push to an outside zone, recorded in the history: the
/// records the controls changed outside Switchyard, and refusals an
/// operator must act on (a wrong key, an update policy). `operate` scope:
/// it writes the audit log, though it changes no control.
async fn dns_push_event<S: Store>(
    State(api): State<Api<S>>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let raw = read_body(raw).await?;
    let ev: switchyard_api::dns::DnsPushEvent = serde_json::from_slice(&raw).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid",
            vec![format!("not a DNS push event: {e}")],
        )
    })?;
    let mut bad = Vec::new();
    for (field, v) in [
        ("server", &ev.server),
        ("zone", &ev.zone),
        ("provider", &ev.provider),
    ] {
        if v.trim().is_empty() {
            bad.push(format!("{field}: required"));
        } else if v.len() > 512 {
            bad.push(format!("{field}: at most 512 characters"));
        }
    }
    if !bad.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid", bad));
    }
    let action = if ev.ok {
        format!(
            "dns push: {} RRset{} changed in zone {} by server {} ({})",
            ev.changes,
            if ev.changes == 1 { "" } else { "s" },
            ev.zone,
            ev.server,
            ev.provider
        )
    } else {
        format!(
            "dns push: zone {} by server {} failed ({})",
            ev.zone, ev.server, ev.provider
        )
    };
    let entry = switchyard_model::AuditEntry {
        at_ms: now_ms(),
        actor: Actor::person(who),
        kind: switchyard_model::AuditKind::DnsPush,
        op: None,
        action,
        reason: ev.error.clone().unwrap_or_default(),
        accepted: ev.ok,
        rule: None,
        version: None,
        detail: serde_json::json!({
            "server": ev.server,
            "zone": ev.zone,
            "provider": ev.provider,
            "changes": ev.changes,
            "summary": ev.summary,
        }),
        check: None,
    };
    api.plane.record(entry).await.map_err(unavailable)?;
    Ok(Json(Accepted { accepted: true }).into_response())
}

async fn metrics<S: Store>(State(api): State<Api<S>>) -> Response {
    let m = &api.plane.metrics;
    m.watchers.set(api.plane.watchers() as i64);
    m.version.set(api.plane.current().version as i64);
    (
        [("content-type", switchyard_metrics::CONTENT_TYPE)],
        m.encode(),
    )
        .into_response()
}

async fn findings<S: Store>(State(api): State<Api<S>>) -> Json<switchyard_api::FindingsView> {
    Json(
        api.plane
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    )
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
    service: Option<String>,
    actor: Option<String>,
    kind: Option<String>,
}

/// How far back a filtered read of the newest entries looks.
const FILTER_SCAN: usize = 10_000;

/// `service`, `actor` (a kind — `person`, `playbook`, `drill`, `rollout` —
/// or a name) and `kind` (of entry), each optional; all must match.
struct HistoryFilter {
    service: Option<String>,
    actor: Option<String>,
    kind: Option<switchyard_model::AuditKind>,
}

impl HistoryFilter {
    #[allow(clippy::result_large_err)]
    fn of(q: &HistoryQuery) -> Result<Option<HistoryFilter>, Response> {
        let kind = match q.kind.as_deref() {
            None => None,
            Some(k) => Some(
                serde_json::from_value(serde_json::Value::String(k.to_string())).map_err(|_| {
                    invalid(
                        "kind",
                        format!(
                            "{k:?} is not a kind of entry (change, recommendation, verification, dns_push, rollout)"
                        ),
                    )
                })?,
            ),
        };
        for (field, v) in [("service", &q.service), ("actor", &q.actor)] {
            if let Some(v) = v {
                within_limits(&[(field, v.as_str(), limits::NAME)])?;
            }
        }
        let f = HistoryFilter {
            service: q.service.clone(),
            actor: q.actor.clone(),
            kind,
        };
        Ok((f.service.is_some() || f.actor.is_some() || f.kind.is_some()).then_some(f))
    }

    fn matches(&self, e: &switchyard_model::AuditEntry) -> bool {
        let service =
            e.op.as_ref()
                .and_then(|o| o.service().map(str::to_string))
                .or_else(|| e.detail["service"].as_str().map(str::to_string));
        let actor_name = match &e.actor {
            Actor::Person { name } | Actor::Playbook { name } | Actor::Drill { name, .. } => {
                name.as_str()
            }
            Actor::Rollout { id } => id.as_str(),
        };
        self.service
            .as_deref()
            .is_none_or(|s| service.as_deref() == Some(s))
            && self
                .actor
                .as_deref()
                .is_none_or(|a| a == e.actor.kind() || a == actor_name)
            && self.kind.is_none_or(|k| k == e.kind)
    }
}

/// The newest `limit` entries as before; with `since`, `until` or `after`,
/// one [`HistoryPage`] of a time window, paged by sequence number.
async fn history<S: Store>(State(api): State<Api<S>>, Query(q): Query<HistoryQuery>) -> Answer {
    let limit = q.limit.unwrap_or(50).min(10_000);
    let filter = HistoryFilter::of(&q)?;
    if q.since.is_none() && q.until.is_none() && q.after.is_none() {
        let entries = match &filter {
            None => api.plane.history(limit).await.map_err(unavailable)?,
            Some(f) => {
                let mut all = api.plane.history(FILTER_SCAN).await.map_err(unavailable)?;
                all.retain(|e| f.matches(e));
                all.split_off(all.len().saturating_sub(limit))
            }
        };
        return Ok(Json(History { entries }).into_response());
    }
    if filter.is_some() {
        return Err(invalid(
            "service",
            "filters apply to the newest entries (limit), not to the export (since, until, after)",
        ));
    }
    let instant = |v: &Option<String>| {
        v.as_deref()
            .map(switchyard_model::time::parse_instant)
            .transpose()
    };
    let since = instant(&q.since).map_err(|e| invalid("since", e))?;
    let until = instant(&q.until).map_err(|e| invalid("until", e))?;
    let after = match q.after.as_deref() {
        None => 0,
        Some(a) => a.parse::<u64>().map_err(|_| {
            invalid(
                "after",
                format!("{a:?} is not an audit sequence number (a non-negative integer)"),
            )
        })?,
    };
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(invalid(
                "until",
                format!(
                    "{} is before since ({})",
                    q.until.unwrap_or_default(),
                    q.since.unwrap_or_default()
                ),
            ));
        }
    }
    let (records, next_after) = api
        .plane
        .history_page(after, limit.max(1), since, until)
        .await
        .map_err(unavailable)?;
    Ok(Json(HistoryPage {
        records,
        next_after,
    })
    .into_response())
}

/// `GET /v1/config`: which config each member runs.
async fn config_assignment<S: Store>(
    State(api): State<Api<S>>,
) -> Json<crate::configs::Assignment> {
    Json((*api.plane.assignment()).clone())
}

/// `GET /v1/config/{version}`: a config this plane has assigned, as a
/// [`switchyard_model::ConfigDoc`].
async fn config_doc<S: Store>(State(api): State<Api<S>>, Path(version): Path<String>) -> Answer {
    within_limits(&[("version", version.as_str(), limits::NAME)])?;
    match api.plane.config_doc(&version).await.map_err(unavailable)? {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            vec![format!(
                "no config of version {version:?} was ever assigned here"
            )],
        )),
    }
}

/// Who watches: an edge names its zone, a DNS server its name.
#[derive(Deserialize)]
struct Watcher {
    zone: Option<String>,
    dns: Option<String>,
}

/// Server-sent events: the watcher's config, then the full state at once,
/// then every change (of the controls, or of the watcher's config). Edges
/// need nothing else to catch up after a reconnect.
async fn watch<S: Store>(State(api): State<Api<S>>, Query(who): Query<Watcher>) -> Response {
    // A plane whose store is behind the edges' state publishes nothing:
    // its followers keep what they hold (or follow another plane).
    if let Some(why) = api.plane.held_back() {
        return error(StatusCode::CONFLICT, "store_behind", vec![why]);
    }
    let member =
        crate::configs::member(who.zone.as_deref(), who.dns.as_deref()).unwrap_or_default();
    let rx = api.plane.subscribe();
    let mut assignments = api.plane.watch_assignment();
    let doc = assignments.borrow_and_update().doc_for(&member).clone();
    let first = Arc::new(api.plane.current());
    let config_event = |d: &switchyard_model::ConfigDoc| {
        Ok::<_, Infallible>(
            Event::default()
                .event("config")
                .data(serde_json::to_string(d).expect("a config serializes")),
        )
    };
    let event = |p: &Published| {
        let mut c = p.controls.clone();
        c.version = p.version;
        Ok::<_, Infallible>(
            Event::default()
                .event("controls")
                .data(serde_json::to_string(&c).expect("controls serialize")),
        )
    };
    let head = stream::iter([config_event(&doc), event(&first)]);
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
    // Only a change of this member's config is sent, not every assignment
    // (a wave moving other members changes nothing here).
    let configs = stream::unfold((assignments, doc.version), move |(mut rx, mut running)| {
        let member = member.clone();
        async move {
            loop {
                rx.changed().await.ok()?;
                let d = rx.borrow_and_update().doc_for(&member).clone();
                if d.version != running {
                    running = d.version.clone();
                    return Some((config_event(&d), (rx, running)));
                }
            }
        }
    });
    let mut stopping = api.stopping.clone();
    let rest = stream::select(rest, configs).take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    Sse::new(head.chain(rest))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
        .into_response()
}
