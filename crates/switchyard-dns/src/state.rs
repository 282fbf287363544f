//! The DNS server's state: config, controls and edge health, and the view
//! built from them (swapped atomically; queries never lock). Controls come
//! from the control plane's watch stream and are kept on disk as
//! last-known-good, exactly as an edge keeps them, so a server started
//! while the plane is down answers what it answered before.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use switchyard_model::time::now_ms;
use switchyard_model::{Config, ConfigError, Controls};

use crate::metrics::{Metrics, ZoneLabels};
use crate::view::View;

/// Why offered controls were not taken; the server keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error(transparent)]
    Backwards(#[from] switchyard_model::Backwards),
    #[error("could not save last-known-good controls: {0}")]
    Persist(std::io::Error),
}

/// What the server's own probes know of one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub alive: bool,
    /// Consecutive failed probes.
    pub failures: u32,
}

impl Default for Probe {
    /// Until probed, an edge counts as alive: a server that starts answers
    /// with every edge rather than none.
    fn default() -> Self {
        Probe {
            alive: true,
            failures: 0,
        }
    }
}

pub struct Dns {
    pub name: String,
    pub config_path: PathBuf,
    /// Swapped whole by a reload; see [`Dns::apply_config`].
    config: ArcSwap<Config>,
    view: ArcSwap<View>,
    controls: Mutex<(Arc<Controls>, String)>,
    health: Mutex<BTreeMap<String, Probe>>,
    /// Serialises rebuilds, so two of them never store out of order.
    rebuild_lock: Mutex<()>,
    lkg_path: Option<PathBuf>,
    /// Held while the process lives (the kernel drops it on any exit).
    _state_lock: Option<std::fs::File>,
    pub last_known_good_error: Option<String>,
    pub control_plane_connected: AtomicBool,
    pub metrics: Metrics,
    /// Counts answer-table changes; a provider pushing records to another
    /// DNS service waits on it instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    pub query_log: Option<switchyard_metrics::line_log::LineLog<crate::QueryLine>>,
    /// The last push to each outside zone, for `/status`.
    pub pushes: Mutex<BTreeMap<String, switchyard_api::dns::PushState>>,
}

impl Dns {
    /// The server `name` of `config`'s `[dns]`, starting from its
    /// last-known-good controls when they are there and still fit.
    pub fn new(config: Config, config_path: PathBuf, name: &str) -> anyhow::Result<Arc<Dns>> {
        let dns = config
            .dns
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the config has no [dns] section"))?;
        if dns.server(name).is_none() {
            anyhow::bail!(
                "no [[dns.server]] named {name:?} (known: {})",
                dns.servers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        // As the edge reads edge.state_dir: as written (relative to the
        // working directory), so a server defaulting to it shares the folder.
        let state_dir = dns.state_dir.as_ref().map(PathBuf::from);
        let state_lock = state_dir
            .as_deref()
            .map(|d| lock_state(d, name))
            .transpose()?;
        let lkg_path = state_dir
            .as_ref()
            .map(|d| d.join(format!("dns-{name}.controls.lkg.json")));
        let metrics = Metrics::new();
        let mut controls = Controls::default();
        let mut source = "default".to_string();
        let mut lkg_error = None;
        if let Some(p) = &lkg_path {
            match switchyard_api::lkg::load(p, &config) {
                Ok(Some(lkg)) => {
                    tracing::info!(path = %p.display(), version = lkg.controls.version, "starting from last-known-good controls");
                    controls = lkg.controls;
                    source = "last-known-good".into();
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e, "the last-known-good controls are unusable; starting from the control plane or empty controls");
                    lkg_error = Some(e.to_string());
                }
            }
        }
        metrics
            .last_known_good_unusable
            .set(i64::from(lkg_error.is_some()));
        let query_log = match &dns.query_log {
            None => None,
            Some(t) => {
                let file = match t {
                    switchyard_model::config::AccessLogTarget::Stdout => None,
                    switchyard_model::config::AccessLogTarget::File(p) => {
                        Some(crate::resolve(&config_path, p))
                    }
                };
                Some(
                    switchyard_metrics::line_log::LineLog::open(
                        file.as_deref(),
                        "dns-query-log",
                        metrics.query_log_dropped.clone(),
                        16 * 1024,
                    )
                    .map_err(|e| anyhow::anyhow!("dns.query_log: {e}"))?,
                )
            }
        };
        let health: BTreeMap<String, Probe> = config
            .zones()
            .map(|z| (z.name.clone(), Probe::default()))
            .collect();
        for z in health.keys() {
            metrics
                .edge_up
                .get_or_create(&ZoneLabels { zone: z.clone() })
                .set(1);
        }
        let config = Arc::new(config);
        let controls = Arc::new(controls);
        let config_for_view = config.clone();
        let view = View::build(config_for_view, controls.clone(), &|_: &str| true, now_ms());
        Ok(Arc::new(Dns {
            name: name.to_string(),
            config_path,
            config: ArcSwap::new(config),
            view: ArcSwap::from_pointee(view),
            controls: Mutex::new((controls, source)),
            health: Mutex::new(health),
            rebuild_lock: Mutex::new(()),
            lkg_path,
            _state_lock: state_lock,
            last_known_good_error: lkg_error,
            control_plane_connected: AtomicBool::new(false),
            metrics,
            changes: tokio::sync::watch::Sender::new(0),
            query_log,
            pushes: Mutex::new(BTreeMap::new()),
        }))
    }

    pub fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.view.load()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Takes a new config (a reload): refused, keeping the running one, when
    /// this server is no longer in it, its addresses, state folder or query
    /// log changed (those need a restart), or the controls in force do not
    /// fit it. Zones, names, geo map, TTLs, regions and services change at
    /// once.
    pub fn apply_config(&self, config: Config) -> Result<(), String> {
        let result = (|| {
            let cur = self.config();
            let (old, new) = (cur.dns.as_ref(), config.dns.as_ref());
            let me = |d: Option<&switchyard_model::dns::DnsSettings>| {
                d.and_then(|d| d.server(&self.name)).cloned()
            };
            let Some(new_me) = me(new) else {
                return Err(format!(
                    "the new config has no [[dns.server]] named {:?}",
                    self.name
                ));
            };
            if me(old).as_ref() != Some(&new_me)
                || old.map(|d| (&d.state_dir, &d.query_log, &d.push, &d.pusher))
                    != new.map(|d| (&d.state_dir, &d.query_log, &d.push, &d.pusher))
            {
                return Err(format!(
                    "dns.server.{}'s addresses or push, dns.state_dir, dns.query_log or dns.push changed; that needs a restart",
                    self.name
                ));
            }
            let controls = self
                .controls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone();
            controls.validate(&config).map_err(|e| {
                format!(
                    "the controls in force do not fit the new config: {}",
                    e.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
            {
                let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
                let zones: Vec<String> = config.zones().map(|z| z.name.clone()).collect();
                h.retain(|z, _| zones.contains(z));
                for z in zones {
                    h.entry(z).or_default();
                }
            }
            self.config.store(Arc::new(config));
            Ok(())
        })();
        self.metrics.update("config", result.is_ok());
        match &result {
            Ok(()) => {
                tracing::info!("config reloaded");
                self.rebuild();
            }
            Err(e) => tracing::warn!(error = %e, "config refused; keeping the running one"),
        }
        result
    }

    /// Wakes on every change of the answer table (after the new view is
    /// in force); the value counts the changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn controls_source(&self) -> String {
        self.controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    pub fn health(&self) -> BTreeMap<String, Probe> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Validates, checks it is not older (or from another store), saves it
    /// as last-known-good, then answers from it.
    pub fn apply_controls(&self, controls: Controls, source: &str) -> Result<(), UpdateError> {
        let result = (|| {
            let mut cur = self.controls.lock().unwrap_or_else(|e| e.into_inner());
            controls
                .validate(&self.config())
                .map_err(ConfigError::Invalid)?;
            controls.may_replace(&cur.0)?;
            if let Some(p) = &self.lkg_path {
                switchyard_api::lkg::save(p, &controls, source, now_ms())
                    .map_err(UpdateError::Persist)?;
            }
            tracing::info!(source, version = controls.version, "controls applied");
            *cur = (Arc::new(controls), source.to_string());
            Ok(())
        })();
        self.metrics.update(source, result.is_ok());
        if let Err(e) = &result {
            tracing::warn!(source, error = %e, "controls refused; keeping the current set");
        }
        self.rebuild();
        result
    }

    /// Records one probe of `zone`'s edge; `failures_to_down` in a row take
    /// it out, one success brings it back.
    pub fn probed(&self, zone: &str, ok: bool, failures_to_down: u32) -> bool {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let p = h.entry(zone.to_string()).or_default();
        let was = p.alive;
        if ok {
            *p = Probe::default();
        } else {
            p.failures = p.failures.saturating_add(1);
            if p.failures >= failures_to_down {
                p.alive = false;
            }
        }
        let changed = was != p.alive;
        if changed {
            tracing::warn!(zone, alive = p.alive, "edge health changed");
            self.metrics
                .edge_up
                .get_or_create(&ZoneLabels { zone: zone.into() })
                .set(i64::from(p.alive));
        }
        changed
    }

    /// Builds the view from what is known now and swaps it in; counts a
    /// change of any answer set.
    pub fn rebuild(&self) {
        let _g = self.rebuild_lock.lock().unwrap_or_else(|e| e.into_inner());
        let controls = self
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone();
        let health = self.health();
        let alive = |z: &str| health.get(z).is_none_or(|p| p.alive);
        let view = View::build(self.config(), controls, &alive, now_ms());
        let old = self.view.load();
        let changed = old.answers != view.answers;
        self.view.store(Arc::new(view));
        if changed {
            self.metrics.answer_sets_changed.inc();
            self.changes.send_modify(|n| *n += 1);
            tracing::info!("answer sets changed");
        }
    }

    pub fn set_control_plane_connected(&self, up: bool) {
        self.control_plane_connected.store(up, Ordering::Relaxed);
        self.metrics.control_plane_connected.set(i64::from(up));
    }
}

/// An exclusive lock on `STATE_DIR/dns-NAME.lock`, so a second server of
/// the same name never writes over this one's last-known-good file.
fn lock_state(dir: &std::path::Path, name: &str) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("dns.state_dir {}: {e}", dir.display()))?;
    let path = dir.join(format!("dns-{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the lock {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another DNS server named {name} is running with its state in {} (lock {} is held); refusing to start",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
}

impl switchyard_api::watch::Follower for Dns {
    fn control_urls(&self) -> Vec<String> {
        self.config().edge.control_urls.clone()
    }

    fn control_ca_file(&self) -> Option<PathBuf> {
        let c = self.config();
        let p = c.edge.control_ca_file.as_deref()?;
        Some(crate::resolve(&self.config_path, p))
    }

    fn identity(&self) -> Vec<(&'static str, String)> {
        vec![("dns", self.name.clone())]
    }

    fn connected(&self, up: bool) {
        self.set_control_plane_connected(up);
    }

    fn controls(&self, controls: Controls) {
        // Refusals are logged and counted where they are decided.
        let _ = self.apply_controls(controls, "control-plane");
    }

    fn unreadable(&self, reason: &str) {
        self.metrics.update("control-plane", false);
        tracing::error!(reason, "control plane sent controls that cannot be read");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::{RegionControl, RegionState};

    const CONFIG_TAIL: &str = r#"
[[region]]
name = "r1"
zone = [{ name = "a", edge = "127.1.1.1:8080", admin = "127.1.1.1:9901" }]
[[region]]
name = "r2"
zone = [{ name = "b", edge = "127.2.1.1:8080", admin = "127.2.1.1:9901" }]
[[service]]
name = "svc"
hosts = ["svc.test"]
min_healthy = 0.5
instance = [{ name = "i1", zone = "a", addr = "127.1.1.11:8081" }]
[dns]
[[dns.server]]
name = "ns1"
listen = ["127.0.0.1:5353"]
admin = "127.0.0.1:9953"
[[dns.zone]]
apex = "test"
ns = ["ns1.test"]
ns_addresses = { "ns1.test" = ["127.0.0.53"] }
"#;

    fn config(state: &std::path::Path) -> Config {
        let text = format!(
            "[edge]\nstate_dir = {:?}\n{CONFIG_TAIL}",
            state.display().to_string()
        );
        Config::from_toml(&text, |_| None).unwrap()
    }

    fn r1_out(version: u64) -> Controls {
        let mut c = Controls {
            version,
            ..Default::default()
        };
        c.services.entry("svc".into()).or_default().regions.insert(
            "r1".into(),
            RegionControl {
                state: RegionState::Out,
                ..Default::default()
            },
        );
        c
    }

    fn r1_answer(dns: &Dns) -> String {
        dns.view().answers[0].for_region(Some("r1"))[0]
            .region
            .clone()
    }

    #[test]
    fn a_reload_that_changes_the_push_targets_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dns = Dns::new(config(dir.path()), dir.path().join("c.toml"), "ns1").unwrap();
        let text = format!(
            "[edge]\nstate_dir = {:?}\n{}",
            dir.path().display().to_string(),
            CONFIG_TAIL
        ) + "[[dns.push]]\nzone = \"test\"\n";
        let with_push = Config::from_toml(&text, |_| None).unwrap();
        assert_eq!(
            with_push.dns.as_ref().unwrap().pusher.as_deref(),
            Some("ns1")
        );
        let err = dns.apply_config(with_push).unwrap_err();
        assert!(
            err.contains("dns.push changed; that needs a restart"),
            "{err}"
        );
        assert!(dns.config().dns.as_ref().unwrap().push.is_empty());
    }

    #[test]
    fn accepted_controls_change_the_answers_wake_watchers_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let dns = Dns::new(config(dir.path()), dir.path().join("c.toml"), "ns1").unwrap();
        let mut changes = dns.changes();
        assert_eq!(r1_answer(&dns), "r1");
        dns.apply_controls(r1_out(3), "control-plane").unwrap();
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 1);
        assert_eq!(r1_answer(&dns), "r2");
        // Older controls are refused and change nothing.
        assert!(matches!(
            dns.apply_controls(Controls::default(), "control-plane"),
            Err(UpdateError::Backwards(_))
        ));
        assert!(!changes.has_changed().unwrap());
        assert_eq!(r1_answer(&dns), "r2");
        drop(dns);
        let again = Dns::new(config(dir.path()), dir.path().join("c.toml"), "ns1").unwrap();
        assert_eq!(again.controls_source(), "last-known-good");
        assert_eq!(r1_answer(&again), "r2");
    }
}
