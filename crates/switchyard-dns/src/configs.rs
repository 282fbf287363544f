//! Which config the DNS server runs, and from where: its config file, or
//! the control plane, which sends each server the config assigned to
//! `dns:<name>` over the watch stream. As on the edge (see
//! `switchyard_api::configs`), a config taken from the plane is kept on
//! disk (`STATE_DIR/dns-NAME.config.lkg.json`) before it runs and is
//! started on after a restart.

use std::path::{Path, PathBuf};

use switchyard_model::signals::ConfigRefusal;
use switchyard_model::time::now_ms;
use switchyard_model::{Config, ConfigDoc};

use crate::state::Dns;

/// Where the config taken from the control plane is kept: beside the
/// controls' last-known-good file.
pub fn lkg_path(config: &Config, name: &str) -> Option<PathBuf> {
    config
        .dns
        .as_ref()?
        .state_dir
        .as_ref()
        .map(|d| Path::new(d).join(format!("dns-{name}.config.lkg.json")))
}

/// Parses `doc` and puts it in force as coming from `source`; `keep` runs
/// just before it does.
fn apply(
    dns: &Dns,
    doc: &ConfigDoc,
    source: &str,
    keep: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    match switchyard_api::configs::parse(doc) {
        Ok(c) => dns.apply_config(c, &doc.version, source, keep),
        Err(e) => {
            dns.metrics.update("config", false);
            let e = e.reasons().join("; ");
            tracing::warn!(source, version = %doc.version, error = %e, "config refused; keeping the running one");
            Err(e)
        }
    }
}

/// A config the control plane sent for this server: put in force and kept
/// on disk unless it is the one running; a refusal keeps the running one
/// and is remembered (`/status`) until a later config applies.
pub fn from_control_plane(dns: &Dns, doc: ConfigDoc) {
    if doc.version == dns.config_version() {
        return;
    }
    let lkg = lkg_path(&dns.config(), &dns.name);
    let keep = || match &lkg {
        Some(p) => switchyard_api::lkg::save_config(p, &doc, now_ms())
            .map_err(|e| format!("could not keep the config at {}: {e}", p.display())),
        None => Ok(()),
    };
    match apply(dns, &doc, "control-plane", keep) {
        Ok(()) => dns.set_config_refused(None),
        Err(reason) => {
            tracing::error!(version = %doc.version, %reason, "the control plane sent a config this server refuses; keeping the running one");
            dns.set_config_refused(Some(ConfigRefusal {
                version: doc.version,
                reason,
            }));
        }
    }
}

/// The config file, read again (SIGHUP, a change on disk): when its text
/// changed since it was last read, what the operator put there runs, and
/// the config kept from the control plane is dropped, so a restart comes
/// back on the file too. An unchanged file changes nothing.
pub fn from_file(dns: &Dns) -> Result<(), String> {
    let text = std::fs::read_to_string(&dns.config_path)
        .map_err(|e| format!("cannot read {}: {e}", dns.config_path.display()))?;
    let doc = ConfigDoc::new(text);
    let running = dns.running_config();
    if running.file_unchanged(&doc.version) {
        tracing::info!(file = %doc.version, running = %running.version, source = %running.source,
            "the config file is unchanged; keeping the config running");
        return Ok(());
    }
    let lkg = lkg_path(&dns.config(), &dns.name);
    let forget = || {
        switchyard_api::configs::forget(lkg.as_deref())
            .map_err(|e| format!("could not drop the kept config: {e}"))
    };
    apply(dns, &doc, "file", forget)
}
