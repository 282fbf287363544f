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

/// The config running: its version, where it came from (`file`,
/// `control-plane`, `last-known-good`), and the last config the control
/// plane sent that the edge refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningConfig {
    pub version: String,
    pub source: String,
    pub refused: Option<ConfigRefusal>,
}

/// Where the config taken from the control plane is kept: beside the
/// controls' last-known-good file.
pub fn lkg_path(config: &Config, zone: &str) -> Option<PathBuf> {
    config
        .edge
        .state_dir
        .as_ref()
        .map(|d| Path::new(d).join(format!("{zone}.config.lkg.json")))
}

fn parse(doc: &ConfigDoc) -> Result<Config, switchyard_model::ConfigError> {
    Config::from_toml(&doc.text, |k| std::env::var(k).ok())
}

/// The config to start on, its document and its source: the one last
/// taken from the control plane when the state folder holds it (and the
/// file still names a control plane: an edge taken off the plane runs its
/// file), else the config file. A kept config that no longer parses or
/// has no zone for this edge is logged and passed over.
pub fn initial(config_path: &Path, zone: &str) -> anyhow::Result<(Config, ConfigDoc, String)> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", config_path.display()))?;
    let file = Config::from_toml(&text, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{}: {}", config_path.display(), e))?;
    let file_doc = ConfigDoc::new(text);
    let from_file = |file, doc| Ok((file, doc, "file".to_string()));
    if file.edge.control_urls.is_empty() {
        return from_file(file, file_doc);
    }
    let Some(path) = lkg_path(&file, zone) else {
        return from_file(file, file_doc);
    };
    match switchyard_api::lkg::load_config(&path) {
        Ok(Some(kept)) => match parse(&kept.config) {
            Ok(c) if c.zone(zone).is_some() => {
                tracing::info!(
                    path = %path.display(),
                    running = %kept.config.version,
                    file = %file_doc.version,
                    "starting on the config last taken from the control plane, not the config file"
                );
                return Ok((c, kept.config, "last-known-good".into()));
            }
            Ok(_) => tracing::error!(path = %path.display(), zone,
                "the kept config has no zone for this edge; starting on the config file"),
            Err(e) => tracing::error!(path = %path.display(), reasons = ?e.reasons(),
                "the kept config is no longer valid; starting on the config file"),
        },
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "the kept config is unusable; starting on the config file")
        }
    }
    from_file(file, file_doc)
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
    let c = match parse(doc) {
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
/// what the operator put there runs, and the config kept from the control
/// plane is dropped, so a restart comes back on the file too.
pub fn from_file(edge: &Edge) -> Result<(), UpdateError> {
    let text = std::fs::read_to_string(&edge.config_path).map_err(|e| {
        UpdateError::Refused(format!("cannot read {}: {e}", edge.config_path.display()))
    })?;
    let lkg = lkg_path(&edge.snapshot().config, &edge.zone);
    let forget = || match &lkg {
        Some(p) => match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(UpdateError::Persist(e)),
            _ => Ok(()),
        },
        None => Ok(()),
    };
    apply(edge, &ConfigDoc::new(text), "file", forget)
}
