//! Detection and playbooks inside the control plane: follow every edge's
//! signals, run the detection engine, and turn findings into control changes
//! through the same safety rules as a person's — or only recommend them.
//! Whether a playbook's change helped is judged by the incident tracker,
//! against what the users it concerns saw (`switchyard_incident::evidence`),
//! and recorded here in the audit log with its typed outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_api::FindingsView;
use switchyard_detect::{DetectConfig, Engine, Event, Finding};
use switchyard_incident::Judged;
use switchyard_model::{Actor, AuditKind, CheckOutcome, PlaybookMode};

use crate::incidents::Incidents;
use crate::plane::{now_ms, Change, ControlPlane};
use crate::playbooks::{Planned, PlaybookConfig, Playbooks};
use crate::store::{AuditEntry, Store};

/// Runs until the task is dropped.
pub async fn run<S: Store + 'static>(
    plane: Arc<ControlPlane<S>>,
    incidents: Arc<Incidents>,
    rollouts: Arc<crate::rollout_run::Rollouts>,
    detect: DetectConfig,
    playbook_cfg: PlaybookConfig,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for z in plane.config().zones() {
        tokio::spawn(switchyard_api::signals::follow(z.admin, tx.clone()));
    }
    drop(tx);
    // DNS servers send no signals; what config each runs is read from its
    // status, for the rollouts' DNS wave.
    let (dns_tx, mut dns_rx) = tokio::sync::mpsc::unbounded_channel();
    for s in plane.config().dns.iter().flat_map(|d| d.servers.iter()) {
        tokio::spawn(switchyard_api::dns::follow_config(
            s.name.clone(),
            s.admin,
            dns_tx.clone(),
        ));
    }
    drop(dns_tx);
    let modes: BTreeMap<String, PlaybookMode> = plane
        .config()
        .control
        .as_ref()
        .map(|c| c.playbooks.clone())
        .unwrap_or_default();
    let regions = plane
        .config()
        .regions
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let mut engine = Engine::new(detect);
    let mut books = Playbooks::new(playbook_cfg, regions).with_flip_wait(plane.safety.flip_wait_ms);
    let mut ingest = plane
        .ingest_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut recent: Vec<Finding> = Vec::new();
    let base_url = plane
        .config()
        .control
        .as_ref()
        .map(|c| format!("http://{}", c.listen))
        .unwrap_or_default();
    let mut last_incident_tick = 0u64;
    let mut was_acting = false;
    loop {
        tick.tick().await;
        let now = now_ms();
        // Every plane follows the signals, so detection is warm when it is
        // elected; only the leader tracks incidents and acts.
        let acting = plane.leadership.acting(now);
        plane.metrics.leader.set(i64::from(acting));
        if acting && !was_acting {
            take_over(&plane, &incidents, &engine, now).await;
        }
        if was_acting && !acting {
            // Its copies would go stale under the next leader's writes.
            incidents.step_down();
            rollouts.step_down().await;
            plane.metrics.open_incidents.set(0);
            tracing::warn!("stopped acting: incidents are read from the store until elected again");
        }
        was_acting = acting;
        while let Ok((member, running)) = dns_rx.try_recv() {
            rollouts.ingest_dns(member, running);
        }
        while let Ok(s) = rx.try_recv() {
            plane
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ingest(&s, now);
            engine.ingest(&s);
            rollouts.ingest(&s);
            if acting {
                incidents.lock().ingest(&s);
            }
        }
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
            if acting {
                incidents.lock().on_event(&ev, now);
            }
            // The playbooks follow on every plane, so a new leader knows
            // what is mitigated; only the leader's plans are carried out.
            planned.extend(books.on_event(&ev, now));
        }
        planned.extend(books.tick(now, &engine));
        if recent.len() > 200 {
            recent.drain(..recent.len() - 200);
        }
        if !acting {
            planned.clear();
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
                PlaybookMode::Auto => act(&plane, p).await,
            }
        }
        // Incidents once a second: impact, severity, series, resolution;
        // then what changed is stored and what is due is told.
        if acting && now >= last_incident_tick + 1000 {
            last_incident_tick = now;
            let (open, checks) = {
                let mut t = incidents.lock();
                // The engine's alarms change once per evaluated second.
                t.on_alarms(engine.alarms(), now);
                t.tick(now);
                (t.open_incidents().count(), t.take_checks())
            };
            plane.metrics.open_incidents.set(open as i64);
            for j in checks.into_iter().filter(|j| j.actor.is_playbook()) {
                let _ = plane.record(verification(j)).await;
            }
            if let Err(e) = incidents.persist(&plane).await {
                tracing::warn!(error = %e, "cannot store incidents; kept in memory and retried");
            }
            let blockers = {
                let t = incidents.lock();
                let open: Vec<_> = t.open_incidents().cloned().collect();
                crate::rollout_run::blockers(&plane.config(), engine.findings(), &open)
            };
            rollouts.tick(&plane, &incidents, &blockers, now).await;
        }
        let due = if acting {
            incidents.due_notices(&base_url, now)
        } else {
            Vec::new()
        };
        for g in due {
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

/// Elected: the incidents as the last leader stored them replace whatever
/// this plane held, and the findings open now join them (a finding of an
/// open incident rejoins it rather than opening another).
async fn take_over<S: Store + 'static>(
    plane: &ControlPlane<S>,
    incidents: &Incidents,
    engine: &Engine,
    now: u64,
) {
    match incidents.restore(plane.store()).await {
        Ok(open) => tracing::warn!(open, "taking over: incidents read from the store"),
        Err(e) => tracing::warn!(error = %e, "taking over without the stored incidents"),
    }
    let mut t = incidents.lock();
    let open: Vec<&Finding> = engine
        .findings()
        .iter()
        .filter(|f| f.end_ms.is_none())
        .collect();
    // Findings the last leader stored open but that closed since (seen here
    // while following): closed now, with the end this plane saw, so the
    // incident can recover and resolve.
    let same =
        |a: &Finding, b: &Finding| a.service == b.service && a.scope == b.scope && a.kind == b.kind;
    let stale: Vec<Finding> = t
        .open_incidents()
        .flat_map(|i| i.findings.iter())
        .filter(|f| f.end_ms.is_none() && !open.iter().any(|o| same(o, f)))
        .cloned()
        .collect();
    for mut f in stale {
        f.end_ms = engine
            .findings()
            .iter()
            .rev()
            .find(|e| same(e, &f))
            .and_then(|e| e.end_ms)
            .or(Some(now));
        t.on_event(&Event::Closed(f), now);
    }
    for f in open {
        t.on_event(&Event::Opened(f.clone()), now);
    }
}

/// Makes a playbook's change through the rules, like anyone's. The incident
/// tracker follows the change and checks it later.
async fn act<S: Store + 'static>(plane: &ControlPlane<S>, p: Planned) {
    let r = plane
        .change(Change {
            actor: Actor::playbook(p.playbook),
            op: p.op.clone(),
            reason: p.why.clone(),
            force: false,
            idempotency_key: None,
        })
        .await;
    match r {
        Ok(v) => tracing::warn!(action = %p.op, version = v.version, "playbook acted"),
        Err(e) => tracing::warn!(action = %p.op, error = %e, "playbook action not taken"),
    }
}

/// The audit entry of a playbook's check: its typed outcome and numbers,
/// `accepted` when it passed and the rule `not-verified` when it failed, as
/// readers written before the outcome was typed expect.
fn verification(j: Judged) -> AuditEntry {
    let outcome = j.check.outcome;
    match outcome {
        CheckOutcome::Failed => {
            tracing::warn!(action = %j.op, why = %j.check.why, "playbook action did not help")
        }
        _ => {
            tracing::info!(action = %j.op, %outcome, why = %j.check.why, "playbook action checked")
        }
    }
    let note = AuditEntry::note(
        j.at_ms,
        j.actor,
        AuditKind::Verification,
        j.op,
        j.check.why.clone(),
    );
    AuditEntry {
        accepted: outcome == CheckOutcome::Passed,
        rule: (outcome == CheckOutcome::Failed).then(|| "not-verified".into()),
        detail: json!({"incident": j.incident, "acted_ms": j.acted_ms}),
        check: Some(j.check),
        ..note
    }
}
