//! Following the configs the control plane assigns, for every process that
//! follows it (edges, DNS servers): which config runs and from where, and
//! which one to start on. A config taken from the plane is kept in the
//! process's state folder (see [`crate::lkg::save_config`]) before it runs,
//! so a restart with the plane gone comes back on the config last
//! reported; a process whose file names no control plane runs its file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_model::signals::ConfigRefusal;
use switchyard_model::{Config, ConfigDoc, ConfigError};

/// The config a process runs: its version, where it came from (`file`,
/// `control-plane`, `last-known-good`: taken from the plane before a
/// restart), and the last config the plane sent that it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningConfig {
    pub version: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<ConfigRefusal>,
    /// The version of the config file as last read (at start or by a
    /// reload), which differs from `version` while a config from the
    /// control plane runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_version: Option<String>,
}

impl RunningConfig {
    /// Whether a reload of the file reading `file_version` has nothing to
    /// do: the file runs already, or it is unchanged since it was last
    /// read while a config from the control plane runs (a `SIGHUP` sent
    /// to reload certificates must not take a process off the config the
    /// plane gave it).
    pub fn file_unchanged(&self, file_version: &str) -> bool {
        self.version == file_version || self.file_version.as_deref() == Some(file_version)
    }
}

/// Parses a config's text with the process's environment for secrets.
pub fn parse(doc: &ConfigDoc) -> Result<Config, ConfigError> {
    Config::from_toml(&doc.text, |k| std::env::var(k).ok())
}

/// Why a process cannot start on its config file.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {error}")]
    Invalid { path: String, error: ConfigError },
}

/// What a process starts on: the config, and which it is.
pub struct Start {
    pub config: Config,
    pub running: RunningConfig,
}

/// The config to start on: the one last taken from the control plane
/// when `kept` names a file holding it and it `fits` this process, else
/// the config file. Only a file that names a control plane lets a kept
/// config in (a process taken off the plane runs its file). The file must
/// be valid either way: it says where the state folder is. A kept config
/// that cannot be used is logged and passed over.
pub fn start(
    config_path: &Path,
    kept: impl Fn(&Config) -> Option<PathBuf>,
    fits: impl Fn(&Config) -> bool,
) -> Result<Start, StartError> {
    let path = || config_path.display().to_string();
    let text = std::fs::read_to_string(config_path).map_err(|source| StartError::Read {
        path: path(),
        source,
    })?;
    let doc = ConfigDoc::new(text);
    let file = parse(&doc).map_err(|error| StartError::Invalid {
        path: path(),
        error,
    })?;
    let file_version = doc.version.clone();
    let running = |version: &str, source: &str| RunningConfig {
        version: version.to_string(),
        source: source.to_string(),
        refused: None,
        file_version: Some(file_version.clone()),
    };
    let from_file = |config, doc: ConfigDoc| Start {
        config,
        running: running(&doc.version, "file"),
    };
    if file.edge.control_urls.is_empty() {
        return Ok(from_file(file, doc));
    }
    let Some(lkg) = kept(&file) else {
        return Ok(from_file(file, doc));
    };
    match crate::lkg::load_config(&lkg) {
        Ok(Some(k)) => match parse(&k.config) {
            Ok(c) if fits(&c) => {
                tracing::info!(
                    path = %lkg.display(),
                    running = %k.config.version,
                    file = %doc.version,
                    "starting on the config last taken from the control plane, not the config file"
                );
                return Ok(Start {
                    config: c,
                    running: running(&k.config.version, "last-known-good"),
                });
            }
            Ok(_) => tracing::error!(path = %lkg.display(),
                "the kept config has no place for this process; starting on the config file"),
            Err(e) => tracing::error!(path = %lkg.display(), reasons = ?e.reasons(),
                "the kept config is no longer valid; starting on the config file"),
        },
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "the kept config is unusable; starting on the config file")
        }
    }
    Ok(from_file(file, doc))
}

/// Removes the kept config (a file reload put the file's config in force,
/// so a restart must come back on the file too); an absent one is fine.
pub fn forget(lkg: Option<&Path>) -> std::io::Result<()> {
    match lkg.map(std::fs::remove_file) {
        Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
