//! The admin API: `/health`, `/metrics` (Prometheus) and `/status` (JSON:
//! where the controls came from, their version, the edges' health, the
//! regions coming back and every service's answer sets).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use switchyard_api::dns::DnsStatus;

use crate::state::Dns;

pub fn status(dns: &Dns) -> DnsStatus {
    let view = dns.view();
    DnsStatus {
        server: dns.name.clone(),
        source: dns.controls_source(),
        version: view.controls.version,
        serial: view.serial,
        control_plane_connected: dns.control_plane_connected.load(Ordering::Relaxed),
        last_known_good_error: dns.last_known_good_error.clone(),
        config: Some(dns.running_config()),
        edges: dns
            .health()
            .into_iter()
            .map(|(z, p)| (z, p.alive))
            .collect(),
        returning: dns.returning(),
        services: view.answers.clone(),
        pushes: dns
            .pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect(),
    }
}

pub async fn serve(dns: Arc<Dns>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/status",
            get(|State(d): State<Arc<Dns>>| async move { Json(status(&d)) }),
        )
        .route(
            "/metrics",
            get(|State(d): State<Arc<Dns>>| async move {
                (
                    [(CONTENT_TYPE, switchyard_metrics::CONTENT_TYPE)],
                    switchyard_metrics::encode(&d.metrics.registry),
                )
                    .into_response()
            }),
        )
        .with_state(dns);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin server stopped");
    }
}
