//! The pushing server's loop: on every change of the answers
//! ([`Dns::changes`]) each `[[dns.push]]` zone's desired record sets are
//! computed again ([`provider::desired`]) and handed to
//! [`provider::follow`], which pushes them, and re-reads the zone every
//! `resync_s` to undo drift. Every push is counted
//! (`switchyard_dns_push_total{target,result}`) and shown in `/status`; a
//! push that sent changes or failed is logged and recorded in the control
//! plane's history (`POST /v1/events/dns-push`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_api::dns::{DnsPushEvent, PushState};
use tokio::sync::{mpsc, watch};

use crate::metrics::PushLabels;
use crate::provider::config::PushTarget;
use crate::provider::{self, Desired, FollowOptions, PushOutcome, PushReport};
use switchyard_model::time::now_ms;

use crate::state::Dns;

/// Audit events waiting for the control plane; beyond this, pushes are
/// counted as unaudited rather than held (the push itself is not held up).
const AUDIT_QUEUE: usize = 256;

/// Runs the targets until the process ends.
pub async fn run(dns: Arc<Dns>, targets: Vec<PushTarget>) {
    let (report_tx, mut reports) = mpsc::channel::<PushReport>(16);
    let mut desired: Vec<(PushTarget, watch::Sender<Option<Desired>>)> = Vec::new();
    for t in targets {
        let (tx, rx) = watch::channel(None);
        let provider = t.backend.provider();
        dns.pushes.lock().unwrap_or_else(|e| e.into_inner()).insert(
            t.zone.to_string(),
            PushState {
                zone: t.zone.to_string(),
                provider: provider.describe(),
                result: "pending".into(),
                at_ms: now_ms(),
                changes: 0,
                error: None,
                error_kind: None,
                last_sent_at_ms: None,
            },
        );
        let opts = FollowOptions {
            push: t.options.clone(),
            resync: t.resync,
            after_failure: Duration::from_secs(5).min(t.resync),
        };
        let reports = report_tx.clone();
        tokio::spawn(async move { provider::follow(&*provider, rx, opts, reports).await });
        desired.push((t, tx));
    }
    let (audit_tx, audit_rx) = mpsc::channel(AUDIT_QUEUE);
    tokio::spawn(audit(dns.clone(), audit_rx));
    let mut changes = dns.changes();
    // The error each zone's last audited failure had: a refused key fails
    // every few seconds, and the history needs it once, not each time.
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    update(&dns, &desired);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    // The server is going away; nothing more will change.
                    std::future::pending::<()>().await;
                }
                update(&dns, &desired);
            }
            Some(r) = reports.recv() => handled(&dns, &r, &mut failing, &audit_tx),
        }
    }
}

/// Computes every zone's desired sets from the answers in force; a follower
/// whose zone's sets did not change is not woken.
fn update(dns: &Dns, targets: &[(PushTarget, watch::Sender<Option<Desired>>)]) {
    let view = dns.view();
    let health = dns.edge_health();
    for (t, tx) in targets {
        match provider::desired::desired(&view.config, &view.controls, &health, now_ms(), &t.zone) {
            Ok(d) => {
                tx.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&d) {
                        false
                    } else {
                        *cur = Some(d);
                        true
                    }
                });
            }
            // Names were checked when the config was; a failure here is a bug.
            Err(e) => {
                tracing::error!(zone = %t.zone, error = %e, "cannot build the records to push")
            }
        }
    }
}

fn handled(
    dns: &Dns,
    r: &PushReport,
    failing: &mut BTreeMap<String, String>,
    audit: &mpsc::Sender<DnsPushEvent>,
) {
    let summary = r.summary();
    let (label, changes) = match &r.outcome {
        PushOutcome::Unchanged { .. } => ("unchanged", 0),
        PushOutcome::Sent { changes, .. } => ("sent", changes.len()),
        PushOutcome::Failed { planned, error, .. } => (error.kind(), planned.len()),
    };
    dns.metrics
        .push
        .get_or_create(&PushLabels {
            target: r.zone.clone(),
            result: label.to_string(),
        })
        .inc();
    let now = now_ms();
    let error = r.error().map(|e| e.to_string());
    {
        let mut states = dns.pushes.lock().unwrap_or_else(|e| e.into_inner());
        let st = states.entry(r.zone.clone()).or_insert_with(|| PushState {
            zone: r.zone.clone(),
            provider: r.provider.clone(),
            result: String::new(),
            at_ms: now,
            changes: 0,
            error: None,
            error_kind: None,
            last_sent_at_ms: None,
        });
        st.result = serde_json::to_value(summary.result)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        st.at_ms = now;
        st.changes = changes;
        st.error = error.clone();
        st.error_kind = r.error().map(|e| e.kind().to_string());
        if matches!(r.outcome, PushOutcome::Sent { .. }) {
            st.last_sent_at_ms = Some(now);
        }
    }
    let audited = match (&r.outcome, &error) {
        (PushOutcome::Unchanged { .. }, _) => {
            tracing::debug!(zone = %r.zone, provider = %r.provider, "dns push: the zone already matches");
            failing.remove(&r.zone).is_some()
        }
        (PushOutcome::Sent { .. }, _) => {
            tracing::info!(zone = %r.zone, provider = %r.provider, changes, summary = %serde_json::to_string(&summary).unwrap_or_default(), "dns push sent changes");
            failing.remove(&r.zone);
            true
        }
        (PushOutcome::Failed { .. }, Some(e)) => {
            tracing::error!(zone = %r.zone, provider = %r.provider, error = %e, planned = changes, "dns push failed; the zone keeps its old records");
            failing.insert(r.zone.clone(), e.clone()).as_ref() != Some(e)
        }
        (PushOutcome::Failed { .. }, None) => true,
    };
    if !audited {
        return;
    }
    let ev = DnsPushEvent {
        server: dns.name.clone(),
        zone: r.zone.clone(),
        provider: r.provider.clone(),
        ok: error.is_none(),
        changes,
        error,
        summary: serde_json::to_value(&summary).unwrap_or_default(),
    };
    if audit.try_send(ev).is_err() {
        dns.metrics.push_audit_failed.inc();
        tracing::error!(zone = %r.zone, "the control plane's history is behind; this push is not recorded there");
    }
}

/// Records pushes in the control plane's history, in order: each event is
/// tried at every control URL, a few rounds with backoff, then counted as
/// unrecorded (the push is in the log and the metrics regardless).
async fn audit(dns: Arc<Dns>, mut events: mpsc::Receiver<DnsPushEvent>) {
    while let Some(ev) = events.recv().await {
        let cfg = dns.config();
        let urls = cfg.edge.control_urls.clone();
        if urls.is_empty() {
            // No control plane: the log and the metrics are the record.
            continue;
        }
        let token = cfg.dns.as_ref().and_then(|d| d.control_token.clone());
        let ca = match switchyard_api::watch::Follower::control_ca_file(&*dns) {
            None => Vec::new(),
            Some(p) => switchyard_api::tls::read_ca_file(&p.to_string_lossy()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "edge.control_ca_file is unreadable; trying the shipped roots");
                Vec::new()
            }),
        };
        let mut last = String::new();
        let mut done = false;
        let mut backoff = Duration::from_millis(500);
        'rounds: for round in 0..4 {
            if round > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            for url in &urls {
                let client = match switchyard_api::Client::with_roots(
                    url,
                    token.clone(),
                    Duration::from_secs(5),
                    &ca,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        last = format!("{url}: {e}");
                        continue;
                    }
                };
                match client.dns_push_event(&ev).await {
                    Ok(_) => {
                        done = true;
                        break 'rounds;
                    }
                    Err(e) => {
                        last = format!("{url}: {e}");
                        if !e.retryable() {
                            break 'rounds;
                        }
                    }
                }
            }
        }
        if !done {
            dns.metrics.push_audit_failed.inc();
            tracing::error!(zone = %ev.zone, error = %last, "cannot record the dns push in the control plane's history");
        }
    }
}
