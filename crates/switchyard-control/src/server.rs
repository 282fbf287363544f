//! `switchyard control --config FILE`: opens the store the config names,
//! serves the API, and keeps in step with other control planes sharing it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_api::tls;
use switchyard_model::{Config, ControlTables, StoreSpec};

use crate::api::router;
use crate::plane::ControlPlane;
use crate::playbooks::PlaybookConfig;
use crate::respond::Api;
use crate::safety::SafetyConfig;
use crate::store::etcd::EtcdStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Candidate, Store};
use switchyard_detect::DetectConfig;

/// The tables of `[control]` the control plane owns, checked: safety
/// rules, playbook timings and detection settings, every field optional.
pub struct Settings {
    pub safety: SafetyConfig,
    pub playbook: PlaybookConfig,
    pub detect: DetectConfig,
    pub incidents: switchyard_incident::TrackerConfig,
    pub notify: switchyard_notify::NotifyConfig,
    pub rollout: crate::rollout_run::RolloutConfig,
    /// `[control.tls]`: serve the API over HTTPS with this.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whom this plane trusts when it passes a request to the leader: the
    /// shipped roots plus `[control.tls] ca_file`.
    pub peer_tls: Arc<rustls::ClientConfig>,
    /// `[control.etcd_tls]`: how to speak TLS to etcd (`https://` endpoints
    /// without it trust the shipped roots and present no certificate).
    pub etcd_tls: Option<rustls::ClientConfig>,
    /// `[control.console]`, files resolved.
    pub console: crate::api_console::ConsoleSettings,
}

/// `[control.tls]` as written.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeTlsFiles {
    /// The CA that issued the other planes' certificates, when private.
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

/// `[control.etcd_tls]` as written.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdTlsFiles {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

/// Reads a certificate chain and its key named at `path.cert_file` and
/// `path.key_file`, naming the field and the file in every error.
fn identity(
    path: &str,
    base: &Path,
    cert: &Option<String>,
    key: &Option<String>,
    errs: &mut Vec<String>,
) -> Option<tls::Identity> {
    let chain = match cert {
        None => {
            errs.push(format!("{path}.cert_file: required with {path}.key_file"));
            None
        }
        Some(c) => tls::read_certs(&beside(base, c))
            .map_err(|e| errs.push(format!("{path}.cert_file: {e}")))
            .ok(),
    };
    let key = match key {
        None => {
            errs.push(format!("{path}.key_file: required with {path}.cert_file"));
            None
        }
        Some(k) => tls::read_key(&beside(base, k))
            .map_err(|e| errs.push(format!("{path}.key_file: {e}")))
            .ok(),
    };
    Some(tls::Identity {
        chain: chain?,
        key: key?,
    })
}

/// The server config of `[control.tls]` (none without the table) and the
/// client config planes pass requests to each other with.
fn serve_tls(
    t: &Option<toml::Table>,
    base: &Path,
    errs: &mut Vec<String>,
) -> (Option<Arc<rustls::ServerConfig>>, Arc<rustls::ClientConfig>) {
    let files: ServeTlsFiles = table(t, "control.tls", errs);
    let ca = match &files.ca_file {
        None => Vec::new(),
        Some(f) => tls::read_ca_file(&beside(base, f)).unwrap_or_else(|e| {
            errs.push(format!("control.tls.ca_file: {e}"));
            Vec::new()
        }),
    };
    let peers = Arc::new(
        tls::client_config(&ca, None).expect("CA certificates read by read_ca_file are valid"),
    );
    if t.is_none() {
        return (None, peers);
    }
    let Some(id) = identity("control.tls", base, &files.cert_file, &files.key_file, errs) else {
        return (None, peers);
    };
    match tls::server_config(&id) {
        Ok(c) => (Some(Arc::new(c)), peers),
        Err(e) => {
            errs.push(format!(
                "control.tls: {:?} and {:?} are not a usable certificate and key: {e}",
                files.cert_file.unwrap_or_default(),
                files.key_file.unwrap_or_default()
            ));
            (None, peers)
        }
    }
}

fn etcd_tls(
    t: &Option<toml::Table>,
    base: &Path,
    errs: &mut Vec<String>,
) -> Option<rustls::ClientConfig> {
    t.as_ref()?;
    let files: EtcdTlsFiles = table(t, "control.etcd_tls", errs);
    let before = errs.len();
    let ca = match &files.ca_file {
        None => Vec::new(),
        Some(f) => tls::read_ca_file(&beside(base, f)).unwrap_or_else(|e| {
            errs.push(format!("control.etcd_tls.ca_file: {e}"));
            Vec::new()
        }),
    };
    let id = match (&files.cert_file, &files.key_file) {
        (None, None) => None,
        (c, k) => identity("control.etcd_tls", base, c, k, errs),
    };
    if errs.len() > before {
        return None;
    }
    tls::client_config(&ca, id.as_ref())
        .map_err(|e| {
            errs.push(format!(
                "control.etcd_tls: {:?} and {:?} are not a usable certificate and key: {e}",
                files.cert_file.unwrap_or_default(),
                files.key_file.unwrap_or_default()
            ))
        })
        .ok()
}

fn table<T: Default + serde::de::DeserializeOwned>(
    t: &Option<toml::Table>,
    path: &str,
    errs: &mut Vec<String>,
) -> T {
    match t {
        None => T::default(),
        Some(t) => t.clone().try_into::<T>().unwrap_or_else(|e| {
            errs.push(format!("{path}: {}", e.message()));
            T::default()
        }),
    }
}

/// A file the config names: relative paths are taken from the config
/// file's directory, so a plane started from anywhere reads the same files.
pub fn beside(base: &Path, file: &str) -> String {
    if Path::new(file).is_absolute() {
        file.to_string()
    } else {
        base.join(file).to_string_lossy().into_owned()
    }
}

/// Checks the tables and reports every problem at once, each as
/// `path: message`. The control plane refuses to start on them, and
/// `switchyard validate` lists them with the rest of the file's. Files
/// named with a relative path are read from `base`, the config's directory.
pub fn check(t: &ControlTables, base: &Path) -> Result<Settings, Vec<String>> {
    let mut errs = Vec::new();
    let (serve, peer_tls) = serve_tls(&t.tls, base, &mut errs);
    let s = Settings {
        safety: table(&t.safety, "control.safety", &mut errs),
        playbook: table(&t.playbook, "control.playbook", &mut errs),
        detect: table(&t.detect, "control.detect", &mut errs),
        incidents: table(&t.incidents, "control.incidents", &mut errs),
        notify: table(&t.notify, "control.notify", &mut errs),
        rollout: table(&t.rollout, "control.rollout", &mut errs),
        tls: serve,
        peer_tls,
        etcd_tls: etcd_tls(&t.etcd_tls, base, &mut errs),
        console: crate::api_console::ConsoleSettings::check(
            &t.console,
            t.tls.is_some(),
            base,
            &mut errs,
        ),
    };
    if let Err(e) = s.notify.validate(|k| std::env::var(k).ok()) {
        errs.extend(e);
    }
    if let Err(e) = s.incidents.validate("control.incidents") {
        errs.extend(e);
    }
    if let Err(e) = s.safety.validate() {
        errs.extend(e.into_iter().map(|e| format!("control.safety.{e}")));
    }
    errs.extend(s.playbook.validate("control.playbook"));
    errs.extend(s.detect.validate("control.detect"));
    errs.extend(s.rollout.validate("control.rollout"));
    if errs.is_empty() {
        Ok(s)
    } else {
        Err(errs)
    }
}

/// The checked settings of a config with a `[control]` section, read
/// from `config_path`.
pub fn settings(config: &Config, config_path: &Path) -> anyhow::Result<Settings> {
    let Some(c) = &config.control else {
        anyhow::bail!("control: the config has no [control] section");
    };
    let base = config_path.parent().unwrap_or(Path::new("."));
    check(&c.tables, base).map_err(|errs| anyhow::anyhow!("{}", errs.join("\n")))
}

pub struct Running {
    pub listen: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the control plane of `config` (with its path resolving a relative
/// SQLite file, and `config_text` the file's text, the config members run
/// until another is assigned) and returns once it listens.
pub async fn start(
    config: Config,
    config_text: String,
    config_path: &Path,
    adopt: bool,
) -> anyhow::Result<Running> {
    let settings = settings(&config, config_path)?;
    let ctl = config.control.clone().expect("checked by safety_config");
    let config = Arc::new(config);
    match &ctl.store {
        StoreSpec::Sqlite(p) => {
            let path = if Path::new(p).is_absolute() {
                p.into()
            } else {
                config_path.parent().unwrap_or(Path::new(".")).join(p)
            };
            let store =
                SqliteStore::open(&path).map_err(|e| anyhow::anyhow!("control.store: {e}"))?;
            serve(
                config,
                config_text,
                settings,
                store,
                ctl.listen,
                adopt,
                None,
            )
            .await
            .map(|(r, _)| r)
        }
        StoreSpec::Etcd(eps) => {
            let store = EtcdStore::with_tls(
                eps.clone(),
                crate::backup::ETCD_PREFIX,
                settings.etcd_tls.clone(),
            );
            serve(
                config,
                config_text,
                settings,
                store,
                ctl.listen,
                adopt,
                // A shared store may be out of reach when a plane starts:
                // the last state it published is kept beside its config.
                Some(
                    config_path
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join("control-snapshot.json"),
                ),
            )
            .await
            .map(|(r, _)| r)
        }
    }
}

/// Serves a plane on `store`, and hands back the plane itself too (for
/// whoever runs it in-process: tests, the rollout engine's tests).
pub async fn serve<S: Store + 'static>(
    config: Arc<Config>,
    config_text: String,
    settings: Settings,
    store: S,
    listen: std::net::SocketAddr,
    adopt: bool,
    snapshot: Option<std::path::PathBuf>,
) -> anyhow::Result<(Running, Arc<ControlPlane<S>>)> {
    let incidents = Arc::new(crate::incidents::Incidents::new(
        &config,
        settings.incidents,
        settings.notify,
    ));
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("control.listen: cannot listen on {listen}: {e}"))?;
    let listen = l.local_addr()?;
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let me = Candidate {
        // Unique per process: a restarted plane is a new candidate.
        id: format!("{listen}/{}/{}", std::process::id(), crate::plane::now_ms()),
        url: format!("{scheme}://{listen}"),
    };
    let server_tls = settings.tls.clone();
    let plane = ControlPlane::new(config, config_text, settings.safety, store, me, snapshot)
        .await
        .map_err(|e| anyhow::anyhow!("control.store: {e}"))?;
    match incidents.restore(plane.store()).await {
        Ok(0) => {}
        Ok(open) => tracing::warn!(open, "open incidents taken back from the store"),
        // Without the store the plane serves its snapshot; the leader reads
        // the incidents again when elected, which needs the store anyway.
        Err(e) if plane.stale().is_some() => {
            tracing::warn!(error = %e, "incidents not read: the store is unreachable")
        }
        Err(e) => anyhow::bail!("control.store: cannot read incidents: {e}"),
    }
    let verdict = crate::adopt::judge(
        &plane.current().controls,
        &crate::adopt::holdings(&plane.config()).await,
    );
    if !verdict.behind.is_empty() {
        if adopt {
            let who = std::env::var("USER").unwrap_or_else(|_| "admin".into());
            plane
                .adopt(
                    switchyard_model::Actor::person(format!("{who} (switchyard control --adopt)")),
                    verdict.over.clone(),
                    verdict.renew,
                )
                .await
                .map_err(|e| anyhow::anyhow!("control.store: cannot adopt: {e}"))?;
        } else {
            plane.hold_back(verdict.explain());
        }
    }
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let rollouts = Arc::new(crate::rollout_run::Rollouts::new(settings.rollout.clone()));
    let app = router(Api {
        console: Arc::new(settings.console.clone()),
        peer_tls: settings.peer_tls.clone(),
        plane: plane.clone(),
        incidents: incidents.clone(),
        rollouts: rollouts.clone(),
        stopping: rx.clone(),
    });
    let timelines = tokio::spawn(crate::incidents::follow_changes(
        plane.clone(),
        incidents.clone(),
    ));
    let resends = tokio::spawn(crate::incidents::resend(plane.clone(), incidents.clone()));
    let sync_plane = plane.clone();
    let mut sync_rx = rx.clone();
    // Other control planes may change a shared store: follow it.
    tokio::spawn(async move {
        let mut round = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if let Err(e) = sync_plane.sync().await {
                        tracing::warn!(error = %e, "cannot read the store; serving the last known state");
                    }
                    // The config assignment once a second, by every plane
                    // (the leader too: it may have lost the lead while it
                    // stalled), so edges following any plane get the same.
                    round += 1;
                    if round.is_multiple_of(4) && sync_plane.stale().is_none() {
                        if let Err(e) = sync_plane.sync_assignment().await {
                            tracing::warn!(error = %e, "cannot read the config assignment; serving the last known one");
                        }
                    }
                }
                r = sync_rx.changed() => {
                    if r.is_err() || *sync_rx.borrow() {
                        return;
                    }
                }
            }
        }
    });
    let election_plane = plane.clone();
    let election_stop = rx.clone();
    let election = tokio::spawn(async move {
        election_plane
            .leadership
            .run(election_plane.store(), election_stop)
            .await
    });
    let automation = tokio::spawn(crate::automation::run(
        plane.clone(),
        incidents,
        rollouts,
        settings.detect,
        settings.playbook,
    ));
    let task = tokio::spawn(async move {
        let _g = (
            AbortOnDrop(automation),
            AbortOnDrop(timelines),
            AbortOnDrop(resends),
        );
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let _ = match server_tls {
            None => axum::serve(l, app).with_graceful_shutdown(stopped).await,
            Some(cfg) => {
                axum::serve(crate::tls_listener::TlsListener::new(l, cfg), app)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        };
        // Resign, so another plane takes over at once rather than after the lease.
        let _ = election.await;
    });
    tracing::info!(%listen, scheme, "control plane serving");
    Ok((
        Running {
            listen,
            stop: tx,
            task,
        },
        plane,
    ))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs until SIGINT or SIGTERM. With `adopt`, a store behind what the
/// edges hold is adopted over it (audited) instead of holding back.
pub async fn run(config_path: &Path, adopt: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", config_path.display()))?;
    let config = Config::from_toml(&text, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let running = start(config, text, config_path, adopt).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown().await;
    Ok(())
}
