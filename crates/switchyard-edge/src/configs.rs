//! Which config the edge runs, and from where: its config file, or the
//! control plane, which sends each edge the config assigned to its zone
//! over the watch stream. A config taken from the plane is kept on disk
//! (`STATE_DIR/ZONE.config.lkg.json`) before it runs, so an edge restarted
//! with the plane gone comes back on the config it last reported. Every
//! config is identified by its version, the hash of its text
//! ([`switchyard_model::ConfigDoc`]), whichever way it came.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_model::signals::ConfigRefusal;
use switchyard_model::time::now_ms;
use switchyard_model::{Config, ConfigDoc};

use crate::state::{Edge, UpdateError};

pub use switchyard_api::configs::RunningConfig;

/// Where the config taken from the control plane is kept: beside the
/// controls' last-known-good file.
pub fn lkg_path(config: &Config, zone: &str) -> Option<PathBuf> {
    config
        .edge
        .state_dir
        .as_ref()
        .map(|d| Path::new(d).join(format!("{zone}.config.lkg.json")))
}

/// The config to start on and which it is (see
/// [`switchyard_api::configs::start`]): the one last taken from the
/// control plane, if it still has this edge's zone, else the file.
pub fn initial(config_path: &Path, zone: &str) -> anyhow::Result<(Config, RunningConfig)> {
    let s = switchyard_api::configs::start(
        config_path,
        |c| lkg_path(c, zone),
        |c| c.zone(zone).is_some(),
    )?;
    Ok((s.config, s.running))
}

/// Parses `doc` and puts it in force as coming from `source`; `keep` runs
/// once the edge has accepted it, just before it runs (a refusal from
/// `keep` refuses the config). The config's client-side TLS settings are
/// loaded before it applies, so a service that gains upstream_tls is never
/// served a moment without them; files that do not load are left to the
/// TLS watcher, which logs, counts and keeps the old settings.
pub fn apply(
    edge: &Edge,
    doc: &ConfigDoc,
    source: &str,
    keep: impl FnOnce() -> Result<(), UpdateError>,
) -> Result<(), UpdateError> {
    let c = match switchyard_api::configs::parse(doc) {
        Ok(c) => c,
        Err(e) => {
            edge.metrics.update("config", false);
            tracing::error!(source, version = %doc.version, reasons = ?e.reasons(), "config refused; keeping the running one");
            return Err(e.into());
        }
    };
    let dir = edge.config_path.parent().unwrap_or(Path::new("."));
    let clients = crate::tls::Material::build(&crate::tls::Files::read(&c, dir)).ok();
    let r = edge.apply_config(c, &doc.version, source, keep);
    if let (Ok(()), Some(m)) = (&r, clients) {
        edge.client_tls.store(Arc::new(m.clients));
    }
    // Again, now that the new config names the files.
    edge.tls_reload.notify_one();
    r
}

/// A config the control plane sent for this edge: put in force and kept
/// on disk unless it is the one running; a refusal keeps the running one
/// and is remembered (status, signals) until a later config applies.
pub fn from_control_plane(edge: &Edge, doc: ConfigDoc) {
    if doc.version == edge.running_config().version {
        return;
    }
    let lkg = lkg_path(&edge.snapshot().config, &edge.zone);
    let keep = || match &lkg {
        Some(p) => {
            switchyard_api::lkg::save_config(p, &doc, now_ms()).map_err(UpdateError::Persist)
        }
        None => Ok(()),
    };
    match apply(edge, &doc, "control-plane", keep) {
        Ok(()) => edge.set_config_refused(None),
        Err(e) => {
            let reason = e.reasons().join("; ");
            tracing::error!(version = %doc.version, %reason, "the control plane sent a config this edge refuses; keeping the running one");
            edge.set_config_refused(Some(ConfigRefusal {
                version: doc.version,
                reason,
            }));
        }
    }
}

/// The config file, read again (SIGHUP, a change on disk, `POST /reload`):
/// when its text changed since it was last read, what the operator put
/// there runs, and the config kept from the control plane is dropped, so a
/// restart comes back on the file too. An unchanged file changes nothing.
pub fn from_file(edge: &Edge) -> Result<(), UpdateError> {
    let text = std::fs::read_to_string(&edge.config_path).map_err(|e| {
        UpdateError::Refused(format!("cannot read {}: {e}", edge.config_path.display()))
    })?;
    let doc = ConfigDoc::new(text);
    let running = edge.running_config();
    if running.file_unchanged(&doc.version) {
        tracing::info!(file = %doc.version, running = %running.version, source = %running.source,
            "the config file is unchanged; keeping the config running");
        return Ok(());
    }
    let lkg = lkg_path(&edge.snapshot().config, &edge.zone);
    let forget = || switchyard_api::configs::forget(lkg.as_deref()).map_err(UpdateError::Persist);
    apply(edge, &doc, "file", forget)
}
