//! Last-known-good controls on disk. A data-plane process writes every set
//! it accepts here before using it, and reads it back on start, so it comes
//! up serving what it served before even when the control plane is gone
//! (static stability). Beside it, the lock a process holds on its state so
//! that a second one of the same name never writes over its file.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_model::{Config, ConfigDoc, Controls};

/// What is kept: the controls, when and from where they came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastKnownGood {
    pub saved_at_ms: u64,
    /// `control-plane`, `file`, `admin`, …
    pub source: String,
    pub controls: Controls,
}

#[derive(Debug, thiserror::Error)]
pub enum LkgError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a last-known-good file: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Why a lock on a state file could not be taken; each names the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    /// Another process holds it: `holder` says who that is.
    #[error("{holder} (lock {path} is held); refusing to start")]
    Held { path: String, holder: String },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
}

/// An exclusive lock on `path` (created when missing), held as long as the
/// returned file is open; the kernel drops it on any exit, a crash
/// included, so a stale file never blocks a restart. `holder` describes
/// the process that would hold it (`another edge of zone a is running
/// with its state in state`), for the error when one does.
pub fn lock(path: &Path, holder: &str) -> Result<std::fs::File, LockError> {
    let p = || path.display().to_string();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open { path: p(), source })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
            path: p(),
            holder: holder.to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Lock { path: p(), source }),
    }
}

/// The saved set, checked against the topology; `None` when there is none.
/// A set the current config refuses is an error, never applied half.
pub fn load(path: &Path, config: &Config) -> Result<Option<LastKnownGood>, LkgError> {
    let p = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LkgError::Io { path: p, source }),
    };
    let lkg: LastKnownGood = serde_json::from_str(&text).map_err(|e| LkgError::Unreadable {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    lkg.controls
        .validate(config)
        .map_err(|e| LkgError::Unreadable {
            path: p,
            reason: e.to_string(),
        })?;
    Ok(Some(lkg))
}

/// Written to a temporary file, synced, then renamed over the old one (and
/// the folder synced), so a crash at any point leaves either the old or the
/// new set, never half of one.
pub fn save(path: &Path, controls: &Controls, source: &str, now_ms: u64) -> std::io::Result<()> {
    write_atomic(
        path,
        &LastKnownGood {
            saved_at_ms: now_ms,
            source: source.into(),
            controls: controls.clone(),
        },
    )
}

/// The last config taken from the control plane, kept like the controls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastKnownGoodConfig {
    pub saved_at_ms: u64,
    pub config: ConfigDoc,
}

/// Keeps `config` at `path` (atomically, as [`save`] does).
pub fn save_config(path: &Path, config: &ConfigDoc, now_ms: u64) -> std::io::Result<()> {
    write_atomic(
        path,
        &LastKnownGoodConfig {
            saved_at_ms: now_ms,
            config: config.clone(),
        },
    )
}

/// The kept config; `None` when there is none. A file whose text does not
/// hash to its version is an error: it would run under a false version.
/// Whether the text is a valid config is for the caller to find out.
pub fn load_config(path: &Path) -> Result<Option<LastKnownGoodConfig>, LkgError> {
    let p = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LkgError::Io { path: p, source }),
    };
    let lkg: LastKnownGoodConfig =
        serde_json::from_str(&text).map_err(|e| LkgError::Unreadable {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    if !lkg.config.is_intact() {
        return Err(LkgError::Unreadable {
            path: p,
            reason: format!(
                "the config's text does not hash to its version {}",
                lkg.config.version
            ),
        });
    }
    Ok(Some(lkg))
}

/// Written to a temporary file, synced, then renamed over the old one (and
/// the folder synced), so a crash at any point leaves either the old or the
/// new document, never half of one.
fn write_atomic<T: Serialize>(path: &Path, doc: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let body = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_taker_by_name_and_is_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dns-ns1.lock");
        let first = lock(&path, "another DNS server named ns1 is running").unwrap();
        let err = lock(&path, "another DNS server named ns1 is running").unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "another DNS server named ns1 is running (lock {} is held); refusing to start",
                path.display()
            )
        );
        drop(first);
        lock(&path, "x").unwrap();
        // A folder that is not there names the lock it could not open.
        let missing = dir.path().join("nope").join("a.lock");
        let err = lock(&missing, "x").unwrap_err();
        assert!(
            matches!(err, LockError::Open { .. })
                && err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_saved_config_reads_back_and_an_altered_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.config.lkg.json");
        assert!(load_config(&path).unwrap().is_none());
        let doc = ConfigDoc::new("[edge]\n".into());
        save_config(&path, &doc, 9).unwrap();
        let back = load_config(&path).unwrap().unwrap();
        assert_eq!((back.config, back.saved_at_ms), (doc.clone(), 9));
        let altered = std::fs::read_to_string(&path)
            .unwrap()
            .replace("[edge]", "[edgy]");
        std::fs::write(&path, altered).unwrap();
        let e = load_config(&path).unwrap_err();
        assert!(e.to_string().contains(&doc.version), "{e}");
    }

    #[test]
    fn a_saved_set_reads_back_and_a_torn_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.controls.lkg.json");
        let config = Config::from_toml(include_str!("../../../examples/switchyard.toml"), |_| {
            Some("t".into())
        })
        .unwrap();
        assert!(load(&path, &config).unwrap().is_none());
        let mut c = Controls {
            version: 7,
            ..Default::default()
        };
        c.services.entry("catalog".into()).or_default().read_only = true;
        save(&path, &c, "control-plane", 42).unwrap();
        let back = load(&path, &config).unwrap().unwrap();
        assert_eq!(
            (back.controls, back.source.as_str(), back.saved_at_ms),
            (c, "control-plane", 42)
        );
        std::fs::write(&path, "{\"saved_at_ms\": 1, \"sou").unwrap();
        assert!(matches!(
            load(&path, &config),
            Err(LkgError::Unreadable { .. })
        ));
    }
}
