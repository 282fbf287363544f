//! Detection and playbooks inside the control plane: follow every edge's
//! signals, run the detection engine, and turn findings into control changes
//! through the same safety rules as a person's — or only recommend them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_api::FindingsView;
use switchyard_detect::{DetectConfig, Engine, Event, Finding};
use switchyard_model::ops::Place;
use switchyard_model::{Actor, AuditKind, Op, PlaybookMode};

use crate::incidents::Incidents;
use crate::plane::{now_ms, Change, ControlPlane};
use crate::playbooks::{Planned, PlaybookConfig, Playbooks};
use crate::store::{AuditEntry, Store};

/// An action to check later: when, the region whose errors tell, the error
/// rate when acting, and what was done.
struct ToVerify {
    due_ms: u64,
    service: String,
    region: String,
    before: Option<f64>,
    playbook: &'static str,
    op: Op,
}

/// How long after acting a playbook checks that it helped.
const VERIFY_AFTER_MS: u64 = 10_000;

/// Runs until the task is dropped.
pub async fn run<S: Store + 'static>(
    plane: Arc<ControlPlane<S>>,
    incidents: Arc<Incidents>,
    detect: DetectConfig,
    playbook_cfg: PlaybookConfig,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for z in plane.config.zones() {
        tokio::spawn(switchyard_api::signals::follow(z.admin, tx.clone()));
    }
    drop(tx);
    let modes: BTreeMap<String, PlaybookMode> = plane
        .config
        .control
        .as_ref()
        .map(|c| c.playbooks.clone())
        .unwrap_or_default();
    let regions = plane
        .config
        .regions
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let mut engine = Engine::new(detect);
    let mut books = Playbooks::new(playbook_cfg, regions);
    let mut ingest = plane
        .ingest_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut recent: Vec<Finding> = Vec::new();
    let mut to_verify: Vec<ToVerify> = Vec::new();
    let region_of_zone = |z: &str| plane.config.zone(z).map(|x| x.region.clone());
    let base_url = plane
        .config
        .control
        .as_ref()
        .map(|c| format!("http://{}", c.listen))
        .unwrap_or_default();
    let mut last_incident_tick = 0u64;
    loop {
        tick.tick().await;
        while let Ok(s) = rx.try_recv() {
            engine.ingest(&s);
            incidents.lock().ingest(&s);
        }
        let now = now_ms();
        let mut planned = Vec::new();
        let mut alert_events = Vec::new();
        if let Some(rx) = ingest.as_mut() {
            while let Ok(i) = rx.try_recv() {
                match i {
                    crate::plane::Ingest::Alerts(alerts) => {
                        for a in &alerts {
                            alert_events.extend(engine.ingest_alert(a, now));
                        }
                    }
                    crate::plane::Ingest::Heartbeat(hb) => engine.ingest_heartbeat(hb),
                }
            }
        }
        for ev in alert_events.into_iter().chain(engine.tick(now)) {
            match &ev {
                Event::Opened(f) => {
                    tracing::warn!(scope = %f.scope, kind = %f.kind, service = %f.service, "finding opened");
                    recent.push(f.clone());
                }
                Event::Closed(f) => {
                    tracing::info!(scope = %f.scope, kind = %f.kind, "finding closed");
                    if let Some(r) = recent
                        .iter_mut()
                        .rev()
                        .find(|r| r.scope == f.scope && r.kind == f.kind && r.end_ms.is_none())
                    {
                        r.end_ms = f.end_ms;
                    }
                }
            }
            incidents.lock().on_event(&ev, now);
            planned.extend(books.on_event(&ev, now));
        }
        planned.extend(books.tick(now, &|svc, scope| engine.clean_since(svc, scope)));
        if recent.len() > 200 {
            recent.drain(..recent.len() - 200);
        }
        for p in planned {
            let Some(service) = p.op.service().map(str::to_string) else {
                continue;
            };
            let mode = modes.get(&service).cloned().unwrap_or(PlaybookMode::Off);
            match mode {
                PlaybookMode::Off => {}
                PlaybookMode::Recommend => {
                    let note = AuditEntry::note(
                        now,
                        Actor::playbook(p.playbook),
                        AuditKind::Recommendation,
                        p.op,
                        p.why,
                    );
                    let _ = plane
                        .record(AuditEntry {
                            rule: Some("recommend-only".into()),
                            ..note
                        })
                        .await;
                }
                PlaybookMode::Auto => {
                    act(
                        &plane,
                        &engine,
                        &region_of_zone,
                        p,
                        service,
                        now,
                        &mut to_verify,
                    )
                    .await
                }
            }
        }
        // Did it help? Compare the errors the edges see in the region now
        // with those when the playbook acted.
        let (due, later): (Vec<_>, Vec<_>) = to_verify.into_iter().partition(|v| v.due_ms <= now);
        to_verify = later;
        for v in due {
            let after = engine.region_error_rate(&v.service, &v.region);
            let helped = match (v.before, after) {
                (_, None) => true,
                (None, Some(a)) => a <= 0.01,
                (Some(b), Some(a)) => a <= 0.01 || a <= b / 2.0,
            };
            let pct = |x: Option<f64>| {
                x.map(|v| format!("{:.1} %", v * 100.0))
                    .unwrap_or_else(|| "no traffic".into())
            };
            let reason = format!(
                "errors of {} in {}: {} when acting, {} {} s later",
                v.service,
                v.region,
                pct(v.before),
                pct(after),
                VERIFY_AFTER_MS / 1000
            );
            let detail = json!({"region": v.region, "error_rate_before": v.before, "error_rate_after": after});
            let note = AuditEntry::note(
                now,
                Actor::playbook(v.playbook),
                AuditKind::Verification,
                v.op,
                reason,
            );
            let _ = plane
                .record(AuditEntry {
                    accepted: helped,
                    rule: (!helped).then(|| "not-verified".into()),
                    detail,
                    ..note
                })
                .await;
        }
        // Incidents once a second: impact, severity, series, resolution;
        // then what changed is stored and what is due is told.
        if now >= last_incident_tick + 1000 {
            last_incident_tick = now;
            let open = {
                let mut t = incidents.lock();
                t.tick(now);
                t.open_incidents().count()
            };
            plane.metrics.open_incidents.set(open as i64);
            if let Err(e) = incidents.persist(plane.store()).await {
                tracing::warn!(error = %e, "cannot store incidents; kept in memory and retried");
            }
        }
        for g in incidents.due_notices(&base_url, now) {
            tokio::spawn(crate::incidents::deliver(
                plane.clone(),
                incidents.clone(),
                g,
            ));
        }
        plane
            .metrics
            .open_findings
            .set(recent.iter().filter(|f| f.end_ms.is_none()).count() as i64);
        *plane.observed.lock().unwrap_or_else(|e| e.into_inner()) = FindingsView {
            open: recent.iter().filter(|f| f.end_ms.is_none()).count(),
            findings: recent.clone(),
            mitigations: books.active().into_iter().cloned().collect(),
            alarms: engine.alarms().to_vec(),
        };
    }
}

/// Makes a playbook's change through the rules, like anyone's, and keeps the
/// ones whose effect can be measured (a place lost traffic or was put in
/// read-only mode) for verification.
async fn act<S: Store + 'static>(
    plane: &ControlPlane<S>,
    engine: &Engine,
    region_of_zone: &impl Fn(&str) -> Option<String>,
    p: Planned,
    service: String,
    now: u64,
    to_verify: &mut Vec<ToVerify>,
) {
    let r = plane
        .change(Change {
            actor: Actor::playbook(p.playbook),
            op: p.op.clone(),
            reason: p.why.clone(),
            force: false,
        })
        .await;
    match r {
        Ok(v) => {
            tracing::warn!(action = %p.op, version = v.version, "playbook acted");
            let region = match (&p.op, p.op.scope().place) {
                (Op::Shift { .. }, Place::Zone(z)) => region_of_zone(z),
                (Op::RegionWeight { .. }, Place::Region(r))
                | (Op::ReadOnly { on: true, .. }, Place::Region(r)) => Some(r.to_string()),
                _ => None,
            };
            if let Some(region) = region {
                let before = engine.region_error_rate(&service, &region);
                to_verify.push(ToVerify {
                    due_ms: now + VERIFY_AFTER_MS,
                    service,
                    region,
                    before,
                    playbook: p.playbook,
                    op: p.op,
                });
            }
        }
        Err(e) => {
            tracing::warn!(action = %p.op, error = %e, "playbook action not taken")
        }
    }
}
