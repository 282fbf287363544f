//! The edge's shared state: the current config and controls (swapped
//! atomically, never locked on the request path), the per-service runtime that
//! survives reloads, and the last-known-good controls on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_model::time::now_ms;
use switchyard_model::{Config, ConfigError, Controls, Service, UpstreamProtocol};

use crate::metrics::{InstanceLabels, Metrics, RegionLabels};
use crate::outlier::{EjectReason, InstanceState};
use crate::shed::{Admission, RetryBudget};
use crate::signals::Signals;

pub type HttpClient = Client<HttpConnector, crate::body::UpstreamBody>;
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, crate::body::UpstreamBody>;

/// A connection pool to instances or peer edges: plain, or TLS with one
/// client side's settings.
#[derive(Clone)]
pub enum UpstreamClient {
    Plain(HttpClient),
    Tls(HttpsClient),
}

impl UpstreamClient {
    pub fn request(
        &self,
        req: http::Request<crate::body::UpstreamBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            UpstreamClient::Plain(c) => c.request(req),
            UpstreamClient::Tls(c) => c.request(req),
        }
    }

    /// The scheme a request's URI must carry for this pool.
    pub fn scheme(&self) -> &'static str {
        match self {
            UpstreamClient::Plain(_) => "http",
            UpstreamClient::Tls(_) => "https",
        }
    }
}

fn builder(protocol: UpstreamProtocol) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024);
    if protocol == UpstreamProtocol::H2c {
        // One connection per instance, shared by every request in flight to
        // it (the pool hands the same h2 connection to each caller). Pings
        // find a connection that died silently before a request waits on it.
        b.http2_only(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(20));
    }
    b
}

fn connector(connect_timeout: Duration) -> HttpConnector {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(connect_timeout));
    conn.set_nodelay(true);
    conn
}

pub fn http_client(connect_timeout: Duration, protocol: UpstreamProtocol) -> HttpClient {
    let mut conn = connector(connect_timeout);
    conn.enforce_http(true);
    builder(protocol).build(conn)
}

/// A pool speaking TLS with `tls`'s settings; `connect_timeout` bounds the
/// TCP connect, the request's own timeouts the handshake.
pub fn https_client(
    connect_timeout: Duration,
    protocol: UpstreamProtocol,
    tls: &crate::tls::ClientSide,
) -> HttpsClient {
    let mut conn = connector(connect_timeout);
    // The TLS layer asks for https:// URIs; the TCP connector must let them by.
    conn.enforce_http(false);
    let names: Arc<dyn ResolveServerName + Send + Sync> = match &tls.server_name {
        Some(n) => Arc::new(FixedServerNameResolver::new(n.clone())),
        None => Arc::new(DefaultServerNameResolver::default()),
    };
    let https = HttpsConnector::new(conn, tls.config(protocol), true, names);
    builder(protocol).build(https)
}

/// The pools of one thread: by connect timeout, protocol and TLS settings
/// (held weakly, so settings replaced by a reload let their pool go).
type ClientKey = (
    Duration,
    UpstreamProtocol,
    Option<std::sync::Weak<crate::tls::ClientSide>>,
);

thread_local! {
    static CLIENTS: std::cell::RefCell<Vec<(ClientKey, UpstreamClient)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The connection pool of the calling thread for a connect timeout, a
/// protocol and TLS settings. Each proxy worker thread runs its own runtime;
/// a pool per thread keeps a request, its upstream connection and that
/// connection's task on one thread.
pub fn client_for(
    connect_timeout: Duration,
    protocol: UpstreamProtocol,
    tls: Option<&Arc<crate::tls::ClientSide>>,
) -> UpstreamClient {
    CLIENTS.with(|c| {
        let mut c = c.borrow_mut();
        let same = |k: &ClientKey| {
            k.0 == connect_timeout
                && k.1 == protocol
                && match (&k.2, tls) {
                    (None, None) => true,
                    (Some(w), Some(t)) => std::ptr::eq(w.as_ptr(), Arc::as_ptr(t)),
                    _ => false,
                }
        };
        if let Some((_, cl)) = c.iter().find(|(k, _)| same(k)) {
            return cl.clone();
        }
        // Pools of settings a reload replaced: their idle connections close.
        c.retain(|(k, _)| k.2.as_ref().is_none_or(|w| w.strong_count() > 0));
        let cl = match tls {
            None => UpstreamClient::Plain(http_client(connect_timeout, protocol)),
            Some(t) => UpstreamClient::Tls(https_client(connect_timeout, protocol, t)),
        };
        c.push((
            (connect_timeout, protocol, tls.map(Arc::downgrade)),
            cl.clone(),
        ));
        cl
    })
}

/// One service as this edge runs it.
pub struct ServiceRuntime {
    pub svc: Service,
    /// Instances in this edge's region: the only ones it sends to directly.
    pub local: Vec<Arc<InstanceState>>,
    pub admission: Arc<Admission>,
    pub retry: Arc<RetryBudget>,
    pub inflight_gauge: prometheus_client::metrics::gauge::Gauge,
    pub(crate) last_analysis: Mutex<Instant>,
    eject_lock: Mutex<()>,
}

pub struct Snapshot {
    pub config: Arc<Config>,
    pub controls: Arc<Controls>,
    pub services: Vec<Arc<ServiceRuntime>>,
}

impl Snapshot {
    /// The service for a host (port ignored, case-insensitive) and path; the
    /// longest matching path prefix wins.
    pub fn service_for(&self, host: &str, path: &str) -> Option<&Arc<ServiceRuntime>> {
        self.services
            .iter()
            .filter(|s| s.svc.hosts.iter().any(|h| h == host))
            .filter(|s| {
                s.svc
                    .path_prefix
                    .as_deref()
                    .is_none_or(|p| path.starts_with(p))
            })
            .max_by_key(|s| s.svc.path_prefix.as_ref().map(|p| p.len()).unwrap_or(0))
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRuntime>> {
        self.services.iter().find(|s| s.svc.name == name)
    }
}

/// Why a change was refused; the edge keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("{0}")]
    Refused(String),
    /// Older than the state in force, or from another control-plane store
    /// not adopted over it: no source ever takes the edge back in time.
    #[error(transparent)]
    Backwards(#[from] switchyard_model::Backwards),
    /// A conditional write (`If-Match`) based on another version than the
    /// one in force.
    #[error("If-Match names version {given}, but version {current} is in force; nothing changed")]
    Mismatch { given: u64, current: u64 },
    /// Not a controls document at all (an array, a string, …).
    #[error("{0}")]
    NotADocument(String),
    #[error("could not save last-known-good state: {0}")]
    Persist(std::io::Error),
}

impl UpdateError {
    pub fn reasons(&self) -> Vec<String> {
        match self {
            UpdateError::Invalid(e) => e.reasons(),
            other => vec![other.to_string()],
        }
    }
}

pub struct Edge {
    pub zone: String,
    pub region: String,
    pub config_path: PathBuf,
    snap: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    pub signals: Signals,
    pub started: Instant,
    pub control_plane_connected: AtomicBool,
    lkg_path: Option<PathBuf>,
    update_lock: Mutex<()>,
    controls_source: Mutex<String>,
    /// Why the last-known-good file was unusable at start-up, if it was.
    pub last_known_good_error: Option<String>,
    /// Opened at start-up from `edge.access_log`; `None`: off.
    pub access_log: Option<crate::access_log::AccessLog>,
    /// Woken on every config reload (SIGHUP, file change), so the TLS
    /// certificates are read again at once rather than at the next poll.
    pub tls_reload: tokio::sync::Notify,
    /// Upgraded connections (WebSockets) open through this edge.
    pub tunnels: crate::upgrade::Tunnels,
    /// Off only with `switchyard edge --without-observation`, which exists
    /// to measure what per-request metrics, signals and outlier state cost:
    /// when off, the request path records none of them.
    pub observation: AtomicBool,
    /// How the edge speaks TLS to instances and peer edges; replaced whole
    /// when the files change (see `tls::watch`).
    pub client_tls: ArcSwap<crate::tls::ClientSides>,
    /// The config running (its version and source), changed with it under
    /// the update lock.
    running_config: Mutex<crate::configs::RunningConfig>,
}

impl Edge {
    /// Whether the request path records metrics, signals and outlier state.
    pub fn observing(&self) -> bool {
        self.observation.load(Ordering::Relaxed)
    }

    /// Builds the edge for `zone` on `config`, which `running` describes
    /// (see [`crate::configs::initial`]). Controls start from the
    /// last-known-good file when it is there and still fits the config.
    pub fn new(
        config: Config,
        running: crate::configs::RunningConfig,
        config_path: PathBuf,
        zone: &str,
    ) -> anyhow::Result<Arc<Edge>> {
        let z = config.zone(zone).ok_or_else(|| {
            anyhow::anyhow!(
                "zone {zone:?} is not in the config (known: {})",
                zone_list(&config)
            )
        })?;
        let region = z.region.clone();
        let lkg_path = config
            .edge
            .state_dir
            .as_ref()
            .map(|d| Path::new(d).join(format!("{zone}.controls.lkg.json")));
        let mut controls = Controls::default();
        let mut source = "default".to_string();
        let mut lkg_error = None;
        if let Some(p) = &lkg_path {
            match switchyard_api::lkg::load(p, &config) {
                Ok(Some(lkg)) => {
                    let c = lkg.controls;
                    tracing::info!(path = %p.display(), version = c.version, "starting from last-known-good controls");
                    controls = c;
                    source = "last-known-good".into();
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e,
                        "the last-known-good controls are unusable; NOT starting from what this edge served before, \
                         but from the controls file if there is one, else from the control plane or empty controls");
                    lkg_error = Some(e.to_string());
                }
            }
        }
        let config = Arc::new(config);
        let metrics = Metrics::new();
        metrics
            .last_known_good_unusable
            .set(i64::from(lkg_error.is_some()));
        metrics.config_running(None, &running.version);
        let services = build_services(&config, &region, None, &metrics);
        let access_log = match &config.edge.access_log {
            Some(t) => Some(crate::access_log::AccessLog::open(
                t,
                &config_path,
                metrics.access_log_dropped.clone(),
            )?),
            None => None,
        };
        let edge = Arc::new(Edge {
            zone: zone.to_string(),
            region: region.clone(),
            config_path,
            snap: ArcSwap::from_pointee(Snapshot {
                config,
                controls: Arc::new(controls),
                services,
            }),
            metrics,
            signals: Signals::new(&region, zone),
            started: Instant::now(),
            control_plane_connected: AtomicBool::new(false),
            lkg_path,
            update_lock: Mutex::new(()),
            controls_source: Mutex::new(source),
            last_known_good_error: lkg_error,
            access_log,
            tls_reload: tokio::sync::Notify::new(),
            tunnels: crate::upgrade::Tunnels::default(),
            observation: AtomicBool::new(true),
            client_tls: ArcSwap::from_pointee(crate::tls::ClientSides::default()),
            running_config: Mutex::new(running),
        });
        Ok(edge)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.load_full()
    }

    /// The version (content hash) of the config running.
    pub fn config_version(&self) -> String {
        self.running_config().version
    }

    /// The config running, where it came from, and the last one refused.
    pub fn running_config(&self) -> crate::configs::RunningConfig {
        self.running_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_config_refused(&self, r: Option<switchyard_model::signals::ConfigRefusal>) {
        self.running_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused = r;
    }

    pub fn controls_source(&self) -> String {
        self.controls_source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Validates, saves as last-known-good, then swaps in. A refused set
    /// changes nothing.
    pub fn apply_controls_json(
        &self,
        text: &str,
        source: &str,
    ) -> Result<Arc<Controls>, UpdateError> {
        self.update_controls(source, None, |_, cfg| Ok(Controls::from_json(text, cfg)?))
    }

    pub fn apply_controls(
        &self,
        controls: Controls,
        source: &str,
    ) -> Result<Arc<Controls>, UpdateError> {
        self.update_controls(source, None, move |_, _| Ok(controls))
    }

    /// The one way controls change: under the update lock, `change` makes
    /// the new set from the one in force (a replacement ignores it, a merge
    /// patch reads it), so a read-modify-write and a compare-and-set
    /// (`if_match`: the version the writer based its change on) cannot
    /// interleave with another update. The result is validated, must not be
    /// older than the set in force, and is saved as last-known-good before
    /// it is swapped in. A refused change changes nothing.
    pub fn update_controls(
        &self,
        source: &str,
        if_match: Option<u64>,
        change: impl FnOnce(&Controls, &Config) -> Result<Controls, UpdateError>,
    ) -> Result<Arc<Controls>, UpdateError> {
        let _g = self.update_lock.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.snapshot();
        let result = (|| {
            let current = cur.controls.version;
            if let Some(given) = if_match.filter(|v| *v != current) {
                return Err(UpdateError::Mismatch { given, current });
            }
            let controls = change(&cur.controls, &cur.config)?;
            controls
                .validate(&cur.config)
                .map_err(ConfigError::Invalid)?;
            controls.may_replace(&cur.controls)?;
            if let Some(p) = &self.lkg_path {
                switchyard_api::lkg::save(p, &controls, source, now_ms())
                    .map_err(UpdateError::Persist)?;
            }
            let controls = Arc::new(controls);
            self.snap.store(Arc::new(Snapshot {
                config: cur.config.clone(),
                controls: controls.clone(),
                services: cur.services.clone(),
            }));
            Ok(controls)
        })();
        self.metrics.update(source, result.is_ok());
        match &result {
            Ok(c) => {
                *self
                    .controls_source
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = source.to_string();
                tracing::info!(source, version = c.version, "controls applied");
            }
            Err(e) => {
                tracing::warn!(source, error = %e, "controls refused; keeping the current set")
            }
        }
        result
    }

    /// Swaps in a new config of `version` from `source`. Instance health,
    /// limits and connection pools carry over for everything that did not
    /// change. `keep` runs once every check passed, just before the swap
    /// (it keeps the config on disk, or forgets the kept one); its error
    /// refuses the config.
    pub fn apply_config(
        &self,
        config: Config,
        version: &str,
        source: &str,
        keep: impl FnOnce() -> Result<(), UpdateError>,
    ) -> Result<(), UpdateError> {
        let _g = self.update_lock.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.snapshot();
        let result = (|| {
            let old_zone = cur
                .config
                .zone(&self.zone)
                .expect("own zone exists in the running config");
            let new_zone = config.zone(&self.zone).ok_or_else(|| {
                UpdateError::Refused(format!(
                    "the new config has no zone {:?}, which this edge serves",
                    self.zone
                ))
            })?;
            if new_zone.edge != old_zone.edge
                || new_zone.edge_tls != old_zone.edge_tls
                || new_zone.admin != old_zone.admin
                || new_zone.region != old_zone.region
            {
                return Err(UpdateError::Refused(format!(
                    "zone {:?} changed its addresses or region; that needs a restart",
                    self.zone
                )));
            }
            if config.edge.access_log != cur.config.edge.access_log {
                // The writer thread owns the open file; swapping it under
                // requests in flight is not worth a reload path of its own.
                tracing::warn!(
                    "edge.access_log changed; the access log is opened at start-up, so the edge keeps the one it has until a restart"
                );
            }
            cur.controls.validate(&config).map_err(|e| {
                UpdateError::Refused(format!(
                    "the current controls do not fit the new config: {}",
                    e.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })?;
            let config = Arc::new(config);
            let services =
                build_services(&config, &self.region, Some(&cur.services), &self.metrics);
            keep()?;
            self.snap.store(Arc::new(Snapshot {
                config,
                controls: cur.controls.clone(),
                services,
            }));
            let mut running = self
                .running_config
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.metrics.config_running(Some(&running.version), version);
            running.version = version.to_string();
            running.source = source.to_string();
            if source == "file" {
                running.file_version = Some(version.to_string());
            }
            Ok(())
        })();
        self.metrics.update("config", result.is_ok());
        match &result {
            Ok(()) => tracing::info!(version, source, "config applied"),
            Err(e) => tracing::warn!(error = %e, "config refused; keeping the running one"),
        }
        result
    }

    /// Ejects if the cap on ejected instances and the capacity floor allow;
    /// otherwise counts the refusal. Serialized per service so that two
    /// concurrent failures cannot both pass the check.
    pub fn try_eject(
        &self,
        rt: &ServiceRuntime,
        inst: &Arc<InstanceState>,
        reason: EjectReason,
    ) -> bool {
        let _g = rt.eject_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !inst.is_healthy() {
            return false;
        }
        let snap = self.snapshot();
        let refused = switchyard_steer::may_eject(
            &rt.local,
            inst,
            rt.svc.floor(&self.region),
            rt.svc.ejection.max_ejection_percent,
            snap.controls.service(&rt.svc.name),
            now_ms(),
        )
        .err()
        .map(switchyard_steer::EjectRefusal::as_str);
        let labels = InstanceLabels {
            service: rt.svc.name.clone(),
            instance: inst.meta.name.clone(),
            reason: refused.unwrap_or(reason.as_str()).to_string(),
        };
        if refused.is_some() {
            self.metrics.ejections_refused.get_or_create(&labels).inc();
            return false;
        }
        let d = inst.eject(reason, Instant::now(), &rt.svc.ejection);
        self.metrics.ejections.get_or_create(&labels).inc();
        tracing::warn!(service = %rt.svc.name, instance = %inst.meta.name, ?reason, for_s = d.as_secs(), "instance ejected");
        true
    }

    pub fn set_panic_gauge(&self, service: &str, panic: bool) {
        self.metrics
            .panic
            .get_or_create(&RegionLabels {
                service: service.into(),
                region: self.region.clone(),
            })
            .set(i64::from(panic));
    }

    pub fn set_control_plane_connected(&self, up: bool) {
        self.control_plane_connected.store(up, Ordering::Relaxed);
        self.metrics.control_plane_connected.set(i64::from(up));
    }
}

fn zone_list(c: &Config) -> String {
    c.zones()
        .map(|z| z.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn build_services(
    config: &Config,
    region: &str,
    old: Option<&[Arc<ServiceRuntime>]>,
    metrics: &Metrics,
) -> Vec<Arc<ServiceRuntime>> {
    let now = Instant::now();
    let old: HashMap<&str, &Arc<ServiceRuntime>> = old
        .unwrap_or(&[])
        .iter()
        .map(|s| (s.svc.name.as_str(), s))
        .collect();
    config
        .services
        .iter()
        .map(|svc| {
            let prev = old.get(svc.name.as_str());
            let local = svc
                .instances_in_region(region)
                .map(|i| {
                    prev.and_then(|p| p.local.iter().find(|x| x.meta == *i).cloned())
                        .unwrap_or_else(|| Arc::new(InstanceState::new(i.clone())))
                })
                .collect();
            let admission = match prev {
                Some(p) if p.admission.settings() == svc.limits => p.admission.clone(),
                _ => Admission::new(svc.limits, now),
            };
            let retry = match prev {
                Some(p)
                    if p.retry.budget == svc.retry_budget
                        && p.retry.min_concurrency == svc.retry_min_concurrency =>
                {
                    p.retry.clone()
                }
                _ => Arc::new(RetryBudget::new(
                    svc.retry_budget,
                    svc.retry_min_concurrency,
                )),
            };
            let inflight_gauge = metrics
                .inflight
                .get_or_create(&crate::metrics::ServiceLabels {
                    service: svc.name.clone(),
                })
                .clone();
            Arc::new(ServiceRuntime {
                svc: svc.clone(),
                local,
                admission,
                retry,
                inflight_gauge,
                last_analysis: Mutex::new(now),
                eject_lock: Mutex::new(()),
            })
        })
        .collect()
}
