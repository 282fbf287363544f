//! Detection and playbooks inside the control plane: follow every edge's
//! signals, run the detection engine, and turn findings into control changes
//! through the same safety rules as a person's — or only recommend them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_detect::{DetectConfig, Engine, Event, Finding};
use switchyard_model::{Controls, PlaybookMode, RegionState, ZoneControl};

use crate::plane::{now_ms, Change, ChangeError, ControlPlane};
use crate::playbooks::{Planned, PlaybookConfig, Playbooks};
use crate::store::{AuditEntry, Store};

fn edit_for(p: &Planned) -> impl Fn(&mut Controls) -> Result<(), ChangeError> + Send + Sync + '_ {
    move |c: &mut Controls| {
        match p {
            Planned::Shift {
                service,
                zone,
                until_ms,
                why,
            } => {
                c.services.entry(service.clone()).or_default().zones.insert(
                    zone.clone(),
                    ZoneControl {
                        weight: 0.0,
                        expires_at_ms: Some(*until_ms),
                        reason: Some(format!("playbook: {why}")),
                    },
                );
            }
            Planned::Unshift { service, zone, .. } => {
                if let Some(sc) = c.services.get_mut(service) {
                    sc.zones.remove(zone);
                }
            }
            Planned::RegionWeight {
                service,
                region,
                weight,
                ..
            } => {
                let rc = c
                    .services
                    .entry(service.clone())
                    .or_default()
                    .regions
                    .entry(region.clone())
                    .or_default();
                rc.weight = *weight;
                rc.state = if *weight <= 0.0 {
                    RegionState::Out
                } else {
                    RegionState::In
                };
            }
            Planned::RegionBack {
                service, region, ..
            } => {
                if let Some(sc) = c.services.get_mut(service) {
                    if let Some(rc) = sc.regions.get_mut(region) {
                        rc.state = RegionState::In;
                        rc.weight = 1.0;
                    }
                }
            }
            Planned::Failover {
                service,
                regions,
                on,
                ..
            } => {
                let sc = c.services.entry(service.clone()).or_default();
                for r in regions {
                    sc.regions.entry(r.clone()).or_default().failover = *on;
                }
            }
            Planned::ReadOnly {
                service,
                region,
                on,
                ..
            } => {
                c.services
                    .entry(service.clone())
                    .or_default()
                    .regions
                    .entry(region.clone())
                    .or_default()
                    .read_only = *on;
            }
        }
        Ok(())
    }
}

fn service_of(p: &Planned) -> &str {
    match p {
        Planned::Shift { service, .. }
        | Planned::Unshift { service, .. }
        | Planned::RegionWeight { service, .. }
        | Planned::RegionBack { service, .. }
        | Planned::Failover { service, .. }
        | Planned::ReadOnly { service, .. } => service,
    }
}

/// How long after acting a playbook checks that it helped.
const VERIFY_AFTER_MS: u64 = 10_000;

/// Runs until the task is dropped.
pub async fn run<S: Store + 'static>(
    plane: Arc<ControlPlane<S>>,
    detect: DetectConfig,
    playbook_cfg: PlaybookConfig,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for z in plane.config.zones() {
        tokio::spawn(crate::signals::follow(z.admin, tx.clone()));
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
    // Actions to check: (when, service, region, error rate before, what was done).
    let mut to_verify: Vec<(u64, String, String, Option<f64>, String)> = Vec::new();
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
            plane.incidents.lock().ingest(&s);
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
            plane.incidents.lock().on_event(&ev, now);
            planned.extend(books.on_event(&ev, now));
        }
        planned.extend(books.tick(now));
        if recent.len() > 200 {
            recent.drain(..recent.len() - 200);
        }
        for p in planned {
            let mode = modes
                .get(service_of(&p))
                .cloned()
                .unwrap_or(PlaybookMode::Off);
            match mode {
                PlaybookMode::Off => {}
                PlaybookMode::Recommend => {
                    let _ = plane
                        .note(&AuditEntry {
                            at_ms: now,
                            who: "playbook".into(),
                            action: format!("recommend: {}", p.describe()),
                            reason: p.why().to_string(),
                            accepted: false,
                            rule: Some("recommend-only".into()),
                            version: None,
                            detail: serde_json::to_value(&p).unwrap_or_default(),
                        })
                        .await;
                }
                PlaybookMode::Auto => {
                    let edit = edit_for(&p);
                    let r = plane
                        .change(Change {
                            who: "playbook".into(),
                            action: p.describe(),
                            reason: p.why().to_string(),
                            force: false,
                            edit: &edit,
                        })
                        .await;
                    match r {
                        Ok(v) => {
                            tracing::warn!(action = %p.describe(), version = v.version, "playbook acted");
                            let region = match &p {
                                Planned::Shift { zone, .. } => region_of_zone(zone),
                                Planned::RegionWeight { region, .. }
                                | Planned::ReadOnly {
                                    region, on: true, ..
                                } => Some(region.clone()),
                                _ => None,
                            };
                            if let Some(region) = region {
                                let svc = service_of(&p).to_string();
                                let before = engine.region_error_rate(&svc, &region);
                                to_verify.push((
                                    now + VERIFY_AFTER_MS,
                                    svc,
                                    region,
                                    before,
                                    p.describe(),
                                ));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(action = %p.describe(), error = %e, "playbook action not taken")
                        }
                    }
                }
            }
        }
        // Did it help? Compare the errors the edges see in the region now
        // with those when the playbook acted.
        let (due, later): (Vec<_>, Vec<_>) = to_verify.into_iter().partition(|v| v.0 <= now);
        to_verify = later;
        for (_, svc, region, before, action) in due {
            let after = engine.region_error_rate(&svc, &region);
            let helped = match (before, after) {
                (_, None) => true,
                (None, Some(a)) => a <= 0.01,
                (Some(b), Some(a)) => a <= 0.01 || a <= b / 2.0,
            };
            let pct = |x: Option<f64>| {
                x.map(|v| format!("{:.1} %", v * 100.0))
                    .unwrap_or_else(|| "no traffic".into())
            };
            let _ = plane
                .note(&AuditEntry {
                    at_ms: now,
                    who: "playbook".into(),
                    action: format!("verify: {action}"),
                    reason: format!("errors of {svc} in {region}: {} when acting, {} {} s later", pct(before), pct(after), VERIFY_AFTER_MS / 1000),
                    accepted: helped,
                    rule: (!helped).then(|| "not-verified".into()),
                    version: None,
                    detail: json!({"region": region, "error_rate_before": before, "error_rate_after": after}),
                })
                .await;
        }
        // Incidents once a second: impact, severity, series, resolution;
        // then what changed is stored and what is due is told.
        if now >= last_incident_tick + 1000 {
            last_incident_tick = now;
            let open = {
                let mut t = plane.incidents.lock();
                t.tick(now);
                t.open_incidents().count()
            };
            plane.metrics.open_incidents.set(open as i64);
            if let Err(e) = plane.incidents.persist(plane.store()).await {
                tracing::warn!(error = %e, "cannot store incidents; kept in memory and retried");
            }
        }
        for g in plane.incidents.due_notices(&base_url, now) {
            tokio::spawn(crate::incidents::deliver(plane.clone(), g));
        }
        plane
            .metrics
            .open_findings
            .set(recent.iter().filter(|f| f.end_ms.is_none()).count() as i64);
        *plane.observed.lock().unwrap_or_else(|e| e.into_inner()) = json!({
            "findings": recent,
            "open": recent.iter().filter(|f| f.end_ms.is_none()).count(),
            "mitigations": books.active(),
            "alarms": engine.alarms(),
        });
    }
}
