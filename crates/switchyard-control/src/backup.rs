//! `switchyard control backup` and `restore`: the whole store (controls
//! with their version, every audit entry, every document, the store's
//! identity among them) as one JSON file, and back into an empty store.
//!
//! A restore never takes edges back silently: the store keeps the backup's
//! identity and versions, so a plane on it whose edges hold a newer state of
//! that store holds back until an admin adopts it (`--adopt`), as for any
//! store that is behind (see `adopt.rs`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_model::{Config, StoreSpec};

use crate::store::etcd::EtcdStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Dump, Progress, Store, StoreError};

/// The file format this build writes and reads. A later build that changes
/// the format raises it and keeps reading the older ones; this one refuses
/// any other rather than guess.
pub const FORMAT: u64 = 1;

/// The etcd key prefix every plane uses (see `server.rs`).
pub const ETCD_PREFIX: &str = "/switchyard/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupFile {
    /// [`FORMAT`] when written by this build.
    pub format: u64,
    pub taken_at_ms: u64,
    /// Which store it was taken from, in words (`sqlite /var/lib/…`).
    pub source: String,
    pub state: Dump,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: {1}")]
    Config(PathBuf, String),
    #[error("{}: the file exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("{}: no such SQLite store (control.store); nothing to back up", .0.display())]
    NoStore(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the file is truncated ({detail}); nothing was restored", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("{}: not a Switchyard backup ({detail}); nothing was restored", path.display())]
    NotABackup { path: PathBuf, detail: String },
    #[error(
        "{}: format {found} is not one this build reads (it reads format {reads}); \
         restore it with the build that wrote it or a later one; nothing was restored",
        path.display()
    )]
    Format {
        path: PathBuf,
        found: String,
        reads: u64,
    },
    #[error("control.store: {0}")]
    Store(#[from] StoreError),
}

/// The store a config names, either backend.
pub enum AnyStore {
    Sqlite(SqliteStore, PathBuf),
    Etcd(Box<EtcdStore>, Vec<String>),
}

impl AnyStore {
    /// Opens the store of the config at `config_path`; with `must_exist`, a
    /// SQLite file that is not there is an error rather than a new empty
    /// store (a mistyped path must not back up nothing).
    pub fn open(config_path: &Path, must_exist: bool) -> Result<AnyStore, BackupError> {
        let text = std::fs::read_to_string(config_path).map_err(|e| BackupError::Io {
            path: config_path.into(),
            source: e,
        })?;
        let config = Config::from_toml(&text, |k| std::env::var(k).ok())
            .map_err(|e| BackupError::Config(config_path.into(), e.to_string()))?;
        let Some(ctl) = &config.control else {
            return Err(BackupError::Config(
                config_path.into(),
                "the config has no [control] section".into(),
            ));
        };
        Ok(match &ctl.store {
            StoreSpec::Sqlite(p) => {
                let path = if Path::new(p).is_absolute() {
                    PathBuf::from(p)
                } else {
                    config_path.parent().unwrap_or(Path::new(".")).join(p)
                };
                if must_exist && !path.exists() {
                    return Err(BackupError::NoStore(path));
                }
                AnyStore::Sqlite(SqliteStore::open(&path)?, path)
            }
            StoreSpec::Etcd(eps) => {
                // The same TLS to etcd as the plane's, client certificate included.
                let settings = crate::server::settings(&config, config_path)
                    .map_err(|e| BackupError::Config(config_path.into(), e.to_string()))?;
                AnyStore::Etcd(
                    Box::new(EtcdStore::with_tls(
                        eps.clone(),
                        ETCD_PREFIX,
                        settings.etcd_tls.clone(),
                    )),
                    eps.clone(),
                )
            }
        })
    }

    pub fn describe(&self) -> String {
        match self {
            AnyStore::Sqlite(_, p) => format!("sqlite {}", p.display()),
            AnyStore::Etcd(_, eps) => format!("etcd {} {ETCD_PREFIX}", eps.join(",")),
        }
    }

    pub async fn dump(&self, progress: Progress<'_>) -> Result<Dump, StoreError> {
        match self {
            AnyStore::Sqlite(s, _) => s.dump(progress).await,
            AnyStore::Etcd(s, _) => s.dump(progress).await,
        }
    }

    pub async fn restore(&self, d: &Dump, progress: Progress<'_>) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s, _) => s.restore(d, progress).await,
            AnyStore::Etcd(s, _) => s.restore(d, progress).await,
        }
    }
}

/// Writes a backup of the store of `config_path` to `out`: to a temporary
/// file beside it, synced, then renamed over, so `out` is either the whole
/// backup or not there (or the old file, with `force`).
pub async fn backup(
    config_path: &Path,
    out: &Path,
    force: bool,
    progress: Progress<'_>,
) -> Result<BackupFile, BackupError> {
    if !force && out.exists() {
        return Err(BackupError::Exists(out.into()));
    }
    let store = AnyStore::open(config_path, true)?;
    let state = store.dump(progress).await?;
    let file = BackupFile {
        format: FORMAT,
        taken_at_ms: switchyard_model::time::now_ms(),
        source: store.describe(),
        state,
    };
    let io = |e| BackupError::Io {
        path: out.into(),
        source: e,
    };
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, out).map_err(io)?;
    let written = (|| {
        let mut w = std::io::BufWriter::new(&mut tmp.1);
        serde_json::to_writer(&mut w, &file).map_err(std::io::Error::other)?;
        w.write_all(b"\n")?;
        w.flush()?;
        drop(w);
        tmp.1.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp.0);
        return Err(io(e));
    }
    // Without --force, a file that appeared meanwhile is not replaced.
    let placed = if force {
        std::fs::rename(&tmp.0, out)
    } else {
        std::fs::hard_link(&tmp.0, out).and_then(|_| std::fs::remove_file(&tmp.0))
    };
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp.0);
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::Exists(out.into())
        } else {
            io(e)
        });
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(file)
}

/// A new file beside `out`, named after it, that no one else has.
fn tempfile_in(dir: &Path, out: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let path = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, f))
}

/// Reads and checks a backup file: the whole of it, of a format this build
/// reads. Nothing is touched until this has succeeded.
pub fn read(path: &Path) -> Result<BackupFile, BackupError> {
    let bytes = std::fs::read(path).map_err(|e| BackupError::Io {
        path: path.into(),
        source: e,
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_eof() {
            BackupError::Truncated {
                path: path.into(),
                detail: format!("it ends at line {} column {}", e.line(), e.column()),
            }
        } else {
            BackupError::NotABackup {
                path: path.into(),
                detail: e.to_string(),
            }
        }
    })?;
    match value.get("format") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(FORMAT) => {}
        Some(other) => {
            return Err(BackupError::Format {
                path: path.into(),
                found: other.to_string(),
                reads: FORMAT,
            })
        }
        None => {
            return Err(BackupError::NotABackup {
                path: path.into(),
                detail: "no `format` field".into(),
            })
        }
    }
    serde_json::from_value(value).map_err(|e| BackupError::NotABackup {
        path: path.into(),
        detail: e.to_string(),
    })
}

/// Restores the backup at `from` into the (empty) store of `config_path`.
pub async fn restore(
    config_path: &Path,
    from: &Path,
    progress: Progress<'_>,
) -> Result<BackupFile, BackupError> {
    let file = read(from)?;
    let store = AnyStore::open(config_path, false)?;
    store.restore(&file.state, progress).await?;
    Ok(file)
}
