//! The incident API: list, show, open by hand, move the status, acknowledge,
//! set the people's stages, notes, severity; silences; durations over a
//! period; and the status feed per service. Reads are open, writes need an
//! `operate` token. Unknown ids are 404, transitions that are not allowed
//! 409 with the reason, malformed bodies 400. A change is answered as made
//! only once it is in the store: 409 when another plane's copy won, 503
//! when this plane no longer leads.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use switchyard_api::limits;
use switchyard_api::{
    FeedIncident, IncidentList, IncidentQuery, IncidentSummary, LastMinute, NoteRequest,
    OpenIncident, Opened, Removed, ServiceFeed, ServiceHealth, SeverityChange, SilenceList,
    SilenceRequest, StageChange, StatsQuery, StatusChange, StatusFeed,
};
use switchyard_incident::incident::{durations, EntryKind};
use switchyard_incident::{Incident, Severity, Stage, Status};
use switchyard_model::ops::{human_duration, LONGEST_LEASE};
use switchyard_model::Scope;
use switchyard_notify::Silence;

use crate::incidents::{ByHand, Unwritten, INCIDENT, SILENCE};
use crate::plane::now_ms;
use crate::respond::{
    authorize, body, error, invalid, read_body, unavailable, within_limits, Answer, Api,
};
use crate::store::{Fence, Store, StoreError};

pub fn routes<S: Store + 'static>() -> Router<Api<S>> {
    Router::new()
        .route("/v1/incidents", get(list::<S>).post(open::<S>))
        .route("/v1/incidents/stats", get(stats::<S>))
        .route("/v1/incidents/{id}", get(show::<S>))
        .route("/v1/incidents/{id}/status", post(set_status::<S>))
        .route("/v1/incidents/{id}/ack", post(ack::<S>))
        .route("/v1/incidents/{id}/stage", post(stage::<S>))
        .route("/v1/incidents/{id}/note", post(note::<S>))
        .route("/v1/incidents/{id}/severity", post(severity::<S>))
        .route("/v1/silences", get(silences::<S>).post(add_silence::<S>))
        .route("/v1/silences/{id}", delete(remove_silence::<S>))
        .route("/v1/status-feed", get(feed::<S>))
        .route("/v1/status-feed/{service}", get(feed_one::<S>))
}

fn not_found(id: &str) -> Response {
    crate::respond::not_found(format!("no incident {id:?}"))
}

fn refused(reason: String) -> Response {
    error(StatusCode::CONFLICT, "invalid_transition", vec![reason])
}

/// Whether this plane tracks incidents now. Only then can its tracker hold
/// a copy newer than the store's; otherwise the store's copy is the one.
fn acting<S: Store>(api: &Api<S>) -> bool {
    api.plane.leadership.acting(now_ms())
}

/// Every incident: the store's, with the tracker's newer copies of the
/// ones it holds while this plane acts.
async fn all<S: Store>(api: &Api<S>) -> Result<Vec<Incident>, Response> {
    let docs = api
        .plane
        .store()
        .list_docs(INCIDENT)
        .await
        .map_err(unavailable)?;
    let mut out: Vec<Incident> = docs
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_value::<Incident>(v).ok())
        .collect();
    if acting(api) {
        let t = api.incidents.lock();
        for i in out.iter_mut() {
            if let Some(fresh) = t.open_incidents().find(|x| x.id == i.id) {
                *i = fresh.clone();
            }
        }
        for i in t.open_incidents() {
            if !out.iter().any(|x| x.id == i.id) {
                out.push(i.clone());
            }
        }
    }
    out.sort_by_key(|i| i.created_ms);
    Ok(out)
}

pub(crate) async fn one<S: Store>(api: &Api<S>, id: &str) -> Result<Incident, Response> {
    if acting(api) {
        if let Some(i) = api.incidents.lock().open_incidents().find(|i| i.id == id) {
            return Ok(i.clone());
        }
    }
    Ok(stored(api, id).await?.1)
}

/// The store's copy of an incident, with its revision.
async fn stored<S: Store>(api: &Api<S>, id: &str) -> Result<(u64, Incident), Response> {
    match api
        .plane
        .store()
        .get_doc_rev(INCIDENT, id)
        .await
        .map_err(unavailable)?
    {
        Some(d) => serde_json::from_value(d.body)
            .map(|i| (d.rev, i))
            .map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt",
                    vec![format!("incident {id}: {e}")],
                )
            }),
        None => Err(not_found(id)),
    }
}

/// How many times a change to an incident the tracker does not hold is
/// made again on a fresh copy when another write got there first.
const CHANGE_TRIES: usize = 3;

/// The change was not written: the store's copy changed meanwhile.
fn changed_meanwhile(id: &str, how: &str) -> Response {
    error(
        StatusCode::CONFLICT,
        "conflict",
        vec![format!(
            "incident {id} {how}; this change was not made: read the incident again and retry"
        )],
    )
}

/// Writes back a change by hand to `id`, held by the tracker; answered
/// as made only once it is in the store. A 409 when the store's copy had
/// changed meanwhile and replaced the one changed here; a 503 when this
/// plane no longer leads (nothing was kept: the new leader takes it).
async fn write_held<S: Store>(api: &Api<S>, hand: ByHand<'_>, id: &str) -> Result<(), Response> {
    match hand.write(&api.plane, id).await {
        Ok(()) => Ok(()),
        Err(Unwritten::Superseded) => Err(changed_meanwhile(
            id,
            "was changed by another control plane meanwhile",
        )),
        Err(Unwritten::Store(e)) => Err(unavailable(e)),
        Err(e @ Unwritten::LetGo) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            vec![
                format!("incident {id}: {e}"),
                "nothing was changed: send it again, it goes to the new leader".into(),
            ],
        )),
    }
}

/// Changes an incident where it lives: through the tracker when it holds
/// it (so a later automatic update cannot overwrite the change), else on
/// the store's copy by compare-and-set, made again on a fresh copy when
/// another write got there first. Answers with the changed incident.
async fn change<S: Store>(
    api: &Api<S>,
    id: &str,
    edit: impl Fn(&mut Incident) -> Result<(), String>,
) -> Answer {
    let hand = api.incidents.by_hand().await;
    let held = {
        let mut t = hand.tracker();
        match t.get_mut(id) {
            Some(i) => {
                edit(i).map_err(refused)?;
                Some(i.clone())
            }
            None => None,
        }
    };
    if let Some(i) = held {
        write_held(api, hand, id).await?;
        return Ok(Json(i).into_response());
    }
    // The store's copy is changed by compare-and-set: nothing held here to
    // keep other write-backs from.
    drop(hand);
    for _ in 0..CHANGE_TRIES {
        let (rev, mut i) = stored(api, id).await?;
        edit(&mut i).map_err(refused)?;
        let body = serde_json::to_value(&i).expect("serializable");
        match api
            .plane
            .store()
            .put_doc_if(INCIDENT, id, &body, Some(rev), Fence::Leader)
            .await
        {
            Ok(_) => return Ok(Json(i).into_response()),
            Err(StoreError::DocConflict { .. }) => continue,
            Err(e) => return Err(unavailable(e)),
        }
    }
    Err(changed_meanwhile(
        id,
        &format!("kept changing while this change was made ({CHANGE_TRIES} tries)"),
    ))
}

fn summary(i: &Incident) -> IncidentSummary {
    IncidentSummary {
        id: i.id.clone(),
        service: i.service.clone(),
        title: i.title.clone(),
        status: i.status,
        severity: i.severity,
        scopes: i.scopes.clone(),
        opened_by: i.opened_by.clone(),
        stages: i.stages.clone(),
        created_ms: i.created_ms,
        updated_ms: i.updated_ms,
        traffic_share: i.impact.traffic_share,
        failed: i.impact.failed,
    }
}

async fn list<S: Store>(State(api): State<Api<S>>, Query(q): Query<IncidentQuery>) -> Answer {
    let wanted = match q.status.as_deref() {
        None | Some("all") => None,
        Some("open") => Some(None),
        Some(s) => Some(Some(Status::parse(s).map_err(|e| invalid("status", e))?)),
    };
    let items: Vec<_> = all(&api)
        .await?
        .iter()
        .filter(|i| match wanted {
            None => true,
            Some(None) => i.status != Status::Resolved,
            Some(Some(s)) => i.status == s,
        })
        .filter(|i| q.service.as_ref().is_none_or(|s| &i.service == s))
        .map(summary)
        .collect();
    Ok(Json(IncidentList { incidents: items }).into_response())
}

async fn show<S: Store>(State(api): State<Api<S>>, Path(id): Path<String>) -> Answer {
    Ok(Json(one(&api, &id).await?).into_response())
}

async fn open<S: Store>(State(api): State<Api<S>>, headers: HeaderMap, raw: Body) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let req: OpenIncident = body(&read_body(raw).await?)?;
    within_limits(&[
        ("service", req.service.as_str(), limits::NAME),
        ("title", req.title.as_str(), limits::NOTE),
    ])?;
    let mut errs = Vec::new();
    if api.plane.config().service(&req.service).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            vec![format!("service: unknown service {:?}", req.service)],
        ));
    }
    if req.title.trim().is_empty() {
        errs.push("title: must not be empty".to_string());
    }
    let sev = match req.severity.as_deref().map(Severity::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            errs.push(format!("severity: {e}"));
            None
        }
    };
    if !errs.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid", errs));
    }
    let hand = api.incidents.by_hand().await;
    let (id, created) =
        hand.tracker()
            .open_by_hand(&req.service, req.title.trim(), &who, sev, now_ms());
    write_held(&api, hand, &id).await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(Opened { id, created })).into_response())
}

async fn set_status<S: Store>(
    State(api): State<Api<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let req: StatusChange = body(&read_body(raw).await?)?;
    within_limits(&[("note", req.note.as_str(), limits::NOTE)])?;
    let to = Status::parse(&req.status).map_err(|e| invalid("status", e))?;
    let hand = api.incidents.by_hand().await;
    let open = hand.tracker().open_incidents().any(|i| i.id == id);
    if open {
        // Through the tracker, which also tells people and stops tracking
        // an incident resolved by hand.
        let r = hand
            .tracker()
            .set_status(&id, to, &who, &req.note, now_ms());
        let i = r.map_err(refused)?;
        write_held(&api, hand, &id).await?;
        return Ok(Json(i).into_response());
    }
    drop(hand);
    change(&api, &id, |i| i.set_status(to, now_ms(), &who, &req.note)).await
}

/// A stage reached by a person, with an optional note.
/// Who asks (an operator's token, checked before the body is read) and
/// their stage change; an empty body is no stage and no note.
async fn stage_request<S: Store>(
    api: &Api<S>,
    headers: &HeaderMap,
    raw: Body,
) -> Result<(String, StageChange), Response> {
    let who = authorize(api, headers, Scope::Operate)?;
    let raw = read_body(raw).await?;
    let req: StageChange = if raw.is_empty() {
        StageChange::default()
    } else {
        body(&raw)?
    };
    within_limits(&[("note", req.note.as_str(), limits::NOTE)])?;
    Ok((who, req))
}

async fn record_stage<S: Store>(
    api: &Api<S>,
    id: &str,
    (who, req): (String, StageChange),
    fixed: Option<Stage>,
) -> Answer {
    let stage = match (fixed, req.stage.as_deref()) {
        (Some(s), _) => s,
        (None, Some(s)) => Stage::parse(s).map_err(|e| invalid("stage", e))?,
        (None, None) => return Err(invalid("stage", "required (analysed, shared or reviewed)")),
    };
    change(api, id, |i| {
        let now = now_ms();
        i.set_stage_by_person(stage, now, &who)?;
        if !req.note.is_empty() {
            i.log(
                now,
                EntryKind::Note,
                &who,
                req.note.clone(),
                serde_json::Value::Null,
            );
        }
        Ok(())
    })
    .await
}

async fn ack<S: Store>(
    State(api): State<Api<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    // The body is read before any write-back is held off for it.
    let (who, req) = stage_request(&api, &headers, raw).await?;
    let hand = api.incidents.by_hand().await;
    let open = hand.tracker().open_incidents().any(|i| i.id == id);
    if !open {
        drop(hand);
        return record_stage(&api, &id, (who, req), Some(Stage::Acknowledged)).await;
    }
    // Through the tracker, which also tells people (a pager stops paging).
    let i = {
        let mut t = hand.tracker();
        let now = now_ms();
        let mut i = t.acknowledge(&id, &who, now).map_err(refused)?;
        if !req.note.is_empty() {
            if let Some(held) = t.get_mut(&id) {
                held.log(
                    now,
                    EntryKind::Note,
                    &who,
                    req.note.clone(),
                    serde_json::Value::Null,
                );
                i = held.clone();
            }
        }
        i
    };
    write_held(&api, hand, &id).await?;
    Ok(Json(i).into_response())
}

async fn stage<S: Store>(
    State(api): State<Api<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let asked = stage_request(&api, &headers, raw).await?;
    record_stage(&api, &id, asked, None).await
}

async fn note<S: Store>(
    State(api): State<Api<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let req: NoteRequest = body(&read_body(raw).await?)?;
    within_limits(&[("text", req.text.as_str(), limits::NOTE)])?;
    if req.text.trim().is_empty() {
        return Err(invalid("text", "must not be empty"));
    }
    change(&api, &id, |i| {
        i.log(
            now_ms(),
            EntryKind::Note,
            &who,
            req.text.clone(),
            serde_json::Value::Null,
        );
        Ok(())
    })
    .await
}

async fn severity<S: Store>(
    State(api): State<Api<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let req: SeverityChange = body(&read_body(raw).await?)?;
    within_limits(&[("reason", req.reason.as_str(), limits::REASON)])?;
    let sev = Severity::parse(&req.severity).map_err(|e| invalid("severity", e))?;
    change(&api, &id, |i| {
        let now = now_ms();
        i.log(
            now,
            EntryKind::Severity,
            &who,
            format!(
                "severity {} → {}: {}",
                i.severity.as_str(),
                sev.as_str(),
                req.reason
            ),
            serde_json::Value::Null,
        );
        i.severity = sev;
        i.severity_reason = format!("set by {who}: {}", req.reason);
        i.severity_pinned = true;
        Ok(())
    })
    .await
}

async fn stats<S: Store>(State(api): State<Api<S>>, Query(q): Query<StatsQuery>) -> Answer {
    let all = all(&api).await?;
    let d = durations(&all, q.from_ms.unwrap_or(0), q.to_ms.unwrap_or(u64::MAX));
    Ok(Json(d).into_response())
}

async fn silences<S: Store>(State(api): State<Api<S>>) -> Answer {
    let now = now_ms();
    let all: Vec<Silence> = api.incidents.silences(api.plane.store()).await;
    let active: Vec<Silence> = all.into_iter().filter(|s| s.until_ms > now).collect();
    Ok(Json(SilenceList { silences: active }).into_response())
}

async fn add_silence<S: Store>(State(api): State<Api<S>>, headers: HeaderMap, raw: Body) -> Answer {
    let who = authorize(&api, &headers, Scope::Operate)?;
    let req: SilenceRequest = body(&read_body(raw).await?)?;
    within_limits(&[
        ("reason", req.reason.as_str(), limits::REASON),
        (
            "service",
            req.service.as_deref().unwrap_or(""),
            limits::NAME,
        ),
        (
            "severity",
            req.severity.as_deref().unwrap_or(""),
            limits::NAME,
        ),
        (
            "scope_prefix",
            req.scope_prefix.as_deref().unwrap_or(""),
            limits::NAME,
        ),
    ])?;
    let mut errs = Vec::new();
    let now = now_ms();
    // Checked: a duration that does not fit after now is refused, never
    // wrapped into a short silence.
    let until = match human_duration::parse(&req.duration) {
        Ok(d) if d > LONGEST_LEASE => {
            errs.push(format!(
                "for: {} is longer than any silence may be (at most {}; a permanent one belongs in the config)",
                human_duration::format(d),
                human_duration::format(LONGEST_LEASE)
            ));
            None
        }
        Ok(d) => {
            let until = switchyard_model::time::after(now, d);
            if until.is_none() {
                errs.push(format!(
                    "for: {} from now is past the end of time",
                    human_duration::format(d)
                ));
            }
            until
        }
        Err(e) => {
            errs.push(format!("for: {e}"));
            None
        }
    };
    let severity = match req.severity.as_deref().map(Severity::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            errs.push(format!("severity: {e}"));
            None
        }
    };
    if let Some(s) = &req.service {
        if api.plane.config().service(s).is_none() {
            errs.push(format!("service: unknown service {s:?}"));
        }
    }
    if req.reason.trim().is_empty() {
        errs.push("reason: must not be empty".into());
    }
    if !errs.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "invalid", errs));
    }
    let s = Silence {
        id: silence_id(now),
        service: req.service,
        severity,
        scope_prefix: req.scope_prefix,
        until_ms: until.expect("checked"),
        reason: req.reason,
        created_by: who,
    };
    api.plane
        .store()
        .put_doc(
            SILENCE,
            &s.id,
            &serde_json::to_value(&s).expect("serializable"),
        )
        .await
        .map_err(unavailable)?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

/// A silence id no other creation shares: the time for people, a counter
/// for creations in the same millisecond here, and random bits for other
/// control planes sharing the store (std's per-process random hash keys, so
/// no dependency is needed for them).
fn silence_id(now: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    h.write_u64(now);
    format!("silence-{now}-{seq}-{:08x}", h.finish() as u32)
}

async fn remove_silence<S: Store>(
    State(api): State<Api<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    authorize(&api, &headers, Scope::Operate)?;
    let store = api.plane.store();
    if store
        .get_doc(SILENCE, &id)
        .await
        .map_err(unavailable)?
        .is_none()
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            vec![format!(
                "no silence {id:?} (static silences live in the config)"
            )],
        ));
    }
    store.delete_doc(SILENCE, &id).await.map_err(unavailable)?;
    Ok(Json(Removed { removed: id }).into_response())
}

/// The open incidents reads show, by service: `None` while this plane
/// acts (its tracker holds them), else the store's.
async fn stored_open<S: Store>(api: &Api<S>) -> Result<Option<Vec<Incident>>, Response> {
    if acting(api) {
        return Ok(None);
    }
    Ok(Some(
        all(api)
            .await?
            .into_iter()
            .filter(|i| i.status != Status::Resolved)
            .collect(),
    ))
}

/// The documented status of a service (docs/incidents.md).
fn service_status<S: Store>(
    api: &Api<S>,
    service: &str,
    now: u64,
    stored: Option<&[Incident]>,
) -> ServiceFeed {
    let t = api.incidents.lock();
    let (q, f, p99) = t.recent(service, now);
    let err = if q == 0 { 0.0 } else { f as f64 / q as f64 };
    let inc = match stored {
        Some(open) => open.iter().find(|i| i.service == service),
        None => t.open_for(service),
    };
    let active = inc.filter(|i| i.status < Status::Monitoring);
    let status = if err >= 0.25 || active.is_some_and(|i| i.severity == Severity::Sev1) {
        ServiceHealth::MajorOutage
    } else if err >= 0.05 || active.is_some_and(|i| i.impact.failed > 0) {
        ServiceHealth::PartialOutage
    } else if err >= 0.01 || inc.is_some() {
        ServiceHealth::DegradedPerformance
    } else {
        ServiceHealth::Operational
    };
    ServiceFeed {
        service: service.to_string(),
        status,
        incident: inc.map(|i| FeedIncident {
            id: i.id.clone(),
            title: i.title.clone(),
            severity: i.severity,
            status: i.status,
            since_ms: i
                .stages
                .get(&Stage::Occurred)
                .copied()
                .unwrap_or(i.created_ms),
        }),
        last_60s: LastMinute {
            requests: q,
            failed: f,
            error_rate: err,
            p99_ms: p99,
        },
        updated_ms: now,
    }
}

async fn feed<S: Store>(State(api): State<Api<S>>) -> Answer {
    let stored = stored_open(&api).await?;
    let now = now_ms();
    let services: Vec<_> = api
        .plane
        .config()
        .services
        .iter()
        .map(|s| service_status(&api, &s.name, now, stored.as_deref()))
        .collect();
    Ok(Json(StatusFeed { services }).into_response())
}

async fn feed_one<S: Store>(State(api): State<Api<S>>, Path(service): Path<String>) -> Answer {
    if api.plane.config().service(&service).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            vec![format!("unknown service {service:?}")],
        ));
    }
    let stored = stored_open(&api).await?;
    Ok(Json(service_status(&api, &service, now_ms(), stored.as_deref())).into_response())
}

#[cfg(test)]
mod tests {
    //! A change by hand racing the tracker's own write-backs, on a real
    //! etcd. The handlers are called here rather than over HTTP so the
    //! race is run the same way every time: the change arrives while
    //! another write-back is under way and one more is due before its own.

    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::Poll;

    use switchyard_model::Config;
    use switchyard_testkit::etcd::Etcd;
    use switchyard_testkit::topology::Topology;

    use super::*;
    use crate::incidents::Incidents;
    use crate::plane::ControlPlane;
    use crate::store::etcd::EtcdStore;
    use crate::store::Candidate;

    const PREFIX: &str = "/hand/";

    /// The API of a plane that leads on `etcd`.
    async fn leading(etcd: &Etcd) -> (Api<EtcdStore>, Topology) {
        let lab = Topology::new("unused", &[("r1", &["a"])])
            .with_control_plane()
            .etcd_store(&etcd.endpoint);
        let config = Config::from_toml(&lab.config_text(), |_| None).expect("config");
        let settings = crate::server::settings(&config, &lab.config_path()).expect("settings");
        let me = Candidate {
            id: "a".into(),
            url: "http://a".into(),
        };
        let store = EtcdStore::new(vec![etcd.endpoint.clone()], PREFIX);
        let term = store
            .campaign(&me, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        assert!(term.leading);
        let incidents = Arc::new(Incidents::new(&config, settings.incidents, settings.notify));
        let plane = ControlPlane::new(
            Arc::new(config),
            String::new(),
            settings.safety,
            store,
            me,
            None,
        )
        .await
        .unwrap();
        let api = Api {
            plane,
            incidents,
            rollouts: Arc::new(crate::rollout_run::Rollouts::new(settings.rollout)),
            stopping: tokio::sync::watch::channel(false).1,
            peer_tls: settings.peer_tls,
            console: Arc::new(settings.console),
        };
        (api, lab)
    }

    fn operator() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer operate-token".parse().unwrap());
        h
    }

    fn opening() -> Body {
        Body::from(r#"{"service": "svc", "title": "checkout fails"}"#)
    }

    fn answer(a: Answer) -> Response {
        match a {
            Ok(r) | Err(r) => r,
        }
    }

    async fn json(r: Response) -> serde_json::Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    /// Polls `f` once; whether it waits.
    async fn waits<F: Future + Unpin>(f: &mut F) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx).is_pending())).await
    }

    /// The answer to `change`, sent while a write-back is under way with
    /// the tracker's next one due after it; `meanwhile` happens before
    /// either goes on.
    async fn behind_a_write_back(
        api: &Api<EtcdStore>,
        change: impl Future<Output = Answer>,
        meanwhile: impl Future<Output = ()>,
    ) -> Response {
        let under_way = api.incidents.by_hand().await;
        let mut tick = std::pin::pin!(api.incidents.persist(&api.plane));
        assert!(waits(&mut tick).await, "the tick waits for its turn");
        let mut change = std::pin::pin!(change);
        assert!(waits(&mut change).await, "the change waits for its turn");
        meanwhile.await;
        drop(under_way);
        let (_, answered) = tokio::join!(tick, change);
        answer(answered)
    }

    /// The incident as stored, from another client of the store.
    async fn in_store(etcd: &Etcd, id: &str) -> Option<Incident> {
        EtcdStore::new(vec![etcd.endpoint.clone()], PREFIX)
            .get_doc(INCIDENT, id)
            .await
            .unwrap()
            .map(|v| serde_json::from_value(v).unwrap())
    }

    async fn opened(api: &Api<EtcdStore>) -> String {
        let r = answer(open(State(api.clone()), operator(), opening()).await);
        assert_eq!(r.status(), StatusCode::CREATED);
        json(r).await["id"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn an_incident_opened_as_the_plane_loses_the_lead_is_not_answered_as_opened() {
        let etcd = Etcd::start().await;
        let (api, _lab) = leading(&etcd).await;
        let r = behind_a_write_back(
            &api,
            open(State(api.clone()), operator(), opening()),
            async { api.plane.store().resign().await.unwrap() },
        )
        .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(r).await["error"], "not_leader");
        let stored = EtcdStore::new(vec![etcd.endpoint.clone()], PREFIX)
            .list_docs(INCIDENT)
            .await
            .unwrap();
        assert!(stored.is_empty(), "{stored:?}");
    }

    #[tokio::test]
    async fn an_ack_made_as_the_plane_loses_the_lead_is_not_answered_as_made() {
        let etcd = Etcd::start().await;
        let (api, _lab) = leading(&etcd).await;
        let id = opened(&api).await;
        let r = behind_a_write_back(
            &api,
            ack(
                State(api.clone()),
                Path(id.clone()),
                operator(),
                Body::empty(),
            ),
            async { api.plane.store().resign().await.unwrap() },
        )
        .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json(r).await["error"], "not_leader");
        let i = in_store(&etcd, &id).await.expect("still stored");
        assert!(!i.stages.contains_key(&Stage::Acknowledged), "{i:?}");
    }

    #[tokio::test]
    async fn a_note_on_an_incident_changed_elsewhere_meanwhile_is_a_conflict() {
        let etcd = Etcd::start().await;
        let (api, _lab) = leading(&etcd).await;
        let id = opened(&api).await;
        let elsewhere = async {
            let other = EtcdStore::new(vec![etcd.endpoint.clone()], PREFIX);
            let mut i = other.get_doc(INCIDENT, &id).await.unwrap().unwrap();
            i["title"] = "edited elsewhere".into();
            other.put_doc(INCIDENT, &id, &i).await.unwrap();
        };
        let r = behind_a_write_back(
            &api,
            note(
                State(api.clone()),
                Path(id.clone()),
                operator(),
                Body::from(r#"{"text": "lost in the conflict"}"#),
            ),
            elsewhere,
        )
        .await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(json(r).await["error"], "conflict");
        let i = in_store(&etcd, &id).await.expect("still stored");
        assert_eq!(i.title, "edited elsewhere");
        assert!(
            i.timeline.iter().all(|e| e.text != "lost in the conflict"),
            "{i:?}"
        );
    }

    #[tokio::test]
    async fn an_ack_made_as_the_plane_lets_its_copies_go_is_answered_only_once_stored() {
        let etcd = Etcd::start().await;
        let (api, _lab) = leading(&etcd).await;
        let id = opened(&api).await;
        // The plane stops acting (its deadline passed) while the store
        // still has it lead: the ack is made on the store's copy.
        let r = behind_a_write_back(
            &api,
            ack(
                State(api.clone()),
                Path(id.clone()),
                operator(),
                Body::empty(),
            ),
            async { api.incidents.step_down() },
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let i = in_store(&etcd, &id).await.expect("still stored");
        assert!(i.stages.contains_key(&Stage::Acknowledged), "{i:?}");
    }

    /// The tracker lets go between a change by hand and its write-back
    /// (on another thread: the plane stopped acting): the change is not
    /// written, and the write-back says so.
    #[tokio::test]
    async fn a_change_let_go_before_its_write_back_is_not_written() {
        let etcd = Etcd::start().await;
        let (api, _lab) = leading(&etcd).await;
        let id = opened(&api).await;
        let hand = api.incidents.by_hand().await;
        hand.tracker()
            .acknowledge(&id, "operate-user", now_ms())
            .unwrap();
        api.incidents.step_down();
        assert!(
            matches!(hand.write(&api.plane, &id).await, Err(Unwritten::LetGo)),
            "a change let go must not be reported written"
        );
        let i = in_store(&etcd, &id).await.expect("still stored");
        assert!(!i.stages.contains_key(&Stage::Acknowledged), "{i:?}");
    }
}
