//! The admin API: `/health`, `/metrics` (Prometheus) and `/status` (JSON:
//! where the controls came from, their version, the edges' health and
//! every service's answer sets).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::answers::ServiceAnswers;
use crate::state::Dns;

#[derive(Debug, Serialize)]
pub struct Status {
    pub server: String,
    /// `control-plane`, `last-known-good` or `default`.
    pub source: String,
    pub version: u64,
    pub serial: u32,
    pub control_plane_connected: bool,
    pub last_known_good_error: Option<String>,
    /// Per zone: whether the server's probes see its edge alive.
    pub edges: BTreeMap<String, bool>,
    pub services: Vec<ServiceAnswers>,
}

pub fn status(dns: &Dns) -> Status {
    let view = dns.view();
    Status {
        server: dns.name.clone(),
        source: dns.controls_source(),
        version: view.controls.version,
        serial: view.serial,
        control_plane_connected: dns.control_plane_connected.load(Ordering::Relaxed),
        last_known_good_error: dns.last_known_good_error.clone(),
        edges: dns
            .health()
            .into_iter()
            .map(|(z, p)| (z, p.alive))
            .collect(),
        services: view.answers.clone(),
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
