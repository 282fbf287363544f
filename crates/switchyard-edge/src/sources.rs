//! Where config and controls come from besides the admin API: the config file
//! (polled, and on SIGHUP), a controls file, and the control plane's watch
//! stream. Each source only proposes; the edge validates and keeps the old
//! state when a proposal is refused. Losing a source changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::state::Edge;

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Resolves a path from the config relative to the config file's folder.
pub fn resolve(config_path: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads the controls file and proposes it. A missing file is not an error:
/// the edge keeps what it has.
pub fn load_controls_file(edge: &Edge, path: &Path) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Err(e) = edge.apply_controls_json(&text, "file") {
                tracing::error!(path = %path.display(), reasons = ?e.reasons(), "controls file refused");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the controls file")
        }
    }
}

/// Polls the config file and the controls file for changes.
pub async fn watch_files(edge: Arc<Edge>) {
    let mut config_stamp = stamp(&edge.config_path);
    let controls_path = |edge: &Edge| {
        edge.snapshot()
            .config
            .edge
            .controls_file
            .as_ref()
            .map(|p| resolve(&edge.config_path, p))
    };
    let mut controls_stamp = controls_path(&edge).and_then(|p| stamp(&p));
    // A file rewritten with the same text is no change: it must not take
    // an edge off the config the control plane gave it.
    let file_version = |edge: &Edge| {
        std::fs::read_to_string(&edge.config_path)
            .ok()
            .map(|t| switchyard_model::config_version(&t))
    };
    let mut config_version = file_version(&edge);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let s = stamp(&edge.config_path);
        if s.is_some() && s != config_stamp {
            config_stamp = s;
            let v = file_version(&edge);
            if v != config_version {
                config_version = v;
                let _ = crate::reload_config(&edge);
            }
        }
        if let Some(p) = controls_path(&edge) {
            let s = stamp(&p);
            if s.is_some() && s != controls_stamp {
                controls_stamp = s;
                load_controls_file(&edge, &p);
            }
        }
    }
}

/// Reloads on SIGHUP, the conventional signal for it.
pub async fn watch_sighup(edge: Arc<Edge>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config and controls");
        let _ = crate::reload_config(&edge);
        if let Some(p) = &edge.snapshot().config.edge.controls_file {
            load_controls_file(&edge, &resolve(&edge.config_path, p));
        }
    }
}

/// Follows the control plane's watch stream (see `switchyard_api::watch`).
/// While disconnected the edge keeps serving with what it has.
pub async fn watch_control_plane(edge: Arc<Edge>) {
    switchyard_api::watch::follow(&*edge).await
}

impl switchyard_api::watch::Follower for Edge {
    fn control_urls(&self) -> Vec<String> {
        self.snapshot().config.edge.control_urls.clone()
    }

    fn control_ca_file(&self) -> Option<PathBuf> {
        let snap = self.snapshot();
        let p = snap.config.edge.control_ca_file.as_deref()?;
        Some(resolve(&self.config_path, p))
    }

    fn identity(&self) -> Vec<(&'static str, String)> {
        vec![("region", self.region.clone()), ("zone", self.zone.clone())]
    }

    fn connected(&self, up: bool) {
        self.set_control_plane_connected(up);
    }

    fn controls(&self, controls: switchyard_model::Controls) {
        match self.apply_controls(controls, "control-plane") {
            Ok(_) => {}
            Err(crate::state::UpdateError::Backwards(b)) => {
                tracing::error!(
                    refused = %b,
                    "the control plane sent controls that would take this edge back; \
                     a plane on an empty, restored or other store must be adopted over the \
                     one in force (`switchyard control --adopt`) before this edge follows it"
                )
            }
            Err(e) => {
                tracing::error!(reasons = ?e.reasons(), "control plane sent controls that were refused")
            }
        }
    }

    fn config(&self, doc: switchyard_model::ConfigDoc) {
        crate::configs::from_control_plane(self, doc)
    }

    fn unreadable(&self, reason: &str) {
        self.metrics.update("control-plane", false);
        tracing::error!(reason, "control plane sent controls that cannot be read");
    }
}
