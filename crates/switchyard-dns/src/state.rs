//! The DNS server's state: config, controls and edge health, and the view
//! built from them (swapped atomically; queries never lock). Controls come
//! from the control plane's watch stream and are kept on disk as
//! last-known-good, exactly as an edge keeps them, so a server started
//! while the plane is down answers what it answered before.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_model::time::now_ms;
use switchyard_model::{Config, ConfigError, Controls};

pub use switchyard_api::dns::Returning;

use crate::answers::EdgeHealth;
use crate::metrics::{Metrics, RegionLabels, ZoneLabels};
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
    /// Consecutive good probes since the edge was taken out.
    pub successes: u32,
}

impl Default for Probe {
    /// Until probed, an edge counts as alive: a server that starts answers
    /// with every edge rather than none.
    fn default() -> Self {
        Probe {
            alive: true,
            failures: 0,
            successes: 0,
        }
    }
}

impl Probe {
    /// Takes one probe's result: `failures_to_down` failures in a row take
    /// the edge out, `successes_to_up` successes in a row put it back.
    /// Returns whether that changed its liveness.
    pub fn record(&mut self, ok: bool, failures_to_down: u32, successes_to_up: u32) -> bool {
        let was = self.alive;
        if ok {
            self.failures = 0;
            if !self.alive {
                self.successes = self.successes.saturating_add(1);
                if self.successes >= successes_to_up {
                    self.alive = true;
                    self.successes = 0;
                }
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= failures_to_down {
                self.alive = false;
            }
        }
        was != self.alive
    }
}

/// What the answers are built from besides the config and the controls:
/// each edge's probe and the fraction of each region coming back.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub probes: BTreeMap<String, Probe>,
    pub returning: BTreeMap<String, Returning>,
}

impl EdgeHealth for Health {
    fn alive(&self, zone: &str) -> bool {
        self.probes.get(zone).is_none_or(|p| p.alive)
    }

    fn return_fraction(&self, region: &str) -> f64 {
        self.returning.get(region).map_or(1.0, |r| r.fraction)
    }
}

/// Where a region stands for the return ramp.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Never seen down, or back in full.
    Up,
    /// No edge alive by the probes.
    Down,
    /// An edge alive again since then; its share grows until the ramp ends.
    Returning { since_ms: u64 },
}

/// Each region's phase. A region is only ramped after the probes saw it
/// down: one this server never saw down (a server that just started)
/// is answered in full at once.
#[derive(Debug, Default)]
struct Returns {
    phases: BTreeMap<String, Phase>,
}

impl Returns {
    /// Moves every region of `config` on by what `probes` see at `now_ms`,
    /// and gives the regions still coming back with their fractions.
    fn observe(
        &mut self,
        config: &Config,
        probes: &BTreeMap<String, Probe>,
        ramp: Duration,
        now_ms: u64,
        metrics: &Metrics,
    ) -> BTreeMap<String, Returning> {
        self.phases
            .retain(|r, _| config.regions.iter().any(|c| &c.name == r));
        let ramp_ms = ramp.as_millis() as u64;
        let mut returning = BTreeMap::new();
        for region in &config.regions {
            let alive = region
                .zones
                .iter()
                .any(|z| probes.get(&z.name).is_none_or(|p| p.alive));
            let name = region.name.as_str();
            let phase = self.phases.entry(region.name.clone()).or_insert(Phase::Up);
            let next = match (*phase, alive) {
                (Phase::Up, true) | (Phase::Down, false) => *phase,
                (Phase::Up, false) => {
                    tracing::warn!(region = name, "region down by the probes (no edge alive); its clients go to the next region");
                    Phase::Down
                }
                (Phase::Returning { .. }, false) => {
                    tracing::warn!(
                        region = name,
                        "region down again while returning; its ramp restarts when it comes back"
                    );
                    Phase::Down
                }
                (Phase::Down, true) if ramp_ms == 0 => {
                    tracing::info!(
                        region = name,
                        "region back: its clients return at once (dns.return_ramp_s = 0)"
                    );
                    Phase::Up
                }
                (Phase::Down, true) => {
                    tracing::info!(region = name, ramp_s = ramp.as_secs_f64(), "region returning: an edge is alive again; its clients come back over the ramp");
                    Phase::Returning { since_ms: now_ms }
                }
                (Phase::Returning { since_ms }, true) => {
                    if now_ms.saturating_sub(since_ms) >= ramp_ms {
                        tracing::info!(region = name, "region back in full");
                        Phase::Up
                    } else {
                        *phase
                    }
                }
            };
            *phase = next;
            let fraction = match next {
                Phase::Up => 1.0,
                Phase::Down => 0.0,
                Phase::Returning { since_ms } => {
                    let f = now_ms.saturating_sub(since_ms) as f64 / ramp_ms as f64;
                    returning.insert(
                        region.name.clone(),
                        Returning {
                            since_ms,
                            fraction: f,
                        },
                    );
                    f
                }
            };
            let labels = RegionLabels {
                region: region.name.clone(),
            };
            // A region never seen down has no series: nothing to show.
            if next != Phase::Up || metrics.region_returning.get(&labels).is_some() {
                metrics
                    .region_returning
                    .get_or_create(&labels)
                    .set(fraction);
            }
        }
        returning
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
    /// Moved on by each rebuild; `returning` is what the last one gave.
    returns: Mutex<Returns>,
    returning: Mutex<BTreeMap<String, Returning>>,
    /// Serialises rebuilds, so two of them never store out of order.
    rebuild_lock: Mutex<()>,
    lkg_path: Option<PathBuf>,
    /// Held while the process lives (the kernel drops it on any exit).
    _state_lock: Option<std::fs::File>,
    pub last_known_good_error: Option<String>,
    pub control_plane_connected: AtomicBool,
    pub metrics: Metrics,
    /// One table for every UDP socket, so a client cannot double its share
    /// by asking on two listen addresses.
    pub rrl: crate::rrl::Limiter,
    /// Counts answer-table changes; a provider pushing records to another
    /// DNS service waits on it instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    pub query_log: Option<switchyard_metrics::line_log::LineLog<crate::QueryLine>>,
    /// The last push to each outside zone, for `/status`.
    pub pushes: Mutex<BTreeMap<String, switchyard_api::dns::PushState>>,
    /// The config running (version, source, last refusal), changed with it
    /// under this lock so a reload and a config from the plane never
    /// interleave.
    running_config: Mutex<switchyard_api::configs::RunningConfig>,
}

impl Dns {
    /// The server `name` of `config`'s `[dns]`, starting from its
    /// last-known-good controls when they are there and still fit.
    /// `running` says which config it is (see
    /// `switchyard_api::configs::start`).
    pub fn new(
        config: Config,
        running: switchyard_api::configs::RunningConfig,
        config_path: PathBuf,
        name: &str,
    ) -> anyhow::Result<Arc<Dns>> {
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
        metrics.config_running(None, &running.version);
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
            returns: Mutex::new(Returns::default()),
            returning: Mutex::new(BTreeMap::new()),
            rebuild_lock: Mutex::new(()),
            lkg_path,
            _state_lock: state_lock,
            last_known_good_error: lkg_error,
            control_plane_connected: AtomicBool::new(false),
            metrics,
            rrl: crate::rrl::Limiter::new(),
            changes: tokio::sync::watch::Sender::new(0),
            query_log,
            pushes: Mutex::new(BTreeMap::new()),
            running_config: Mutex::new(running),
        }))
    }

    /// The config running, where it came from, and the last one refused.
    pub fn running_config(&self) -> switchyard_api::configs::RunningConfig {
        self.running_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The version (content hash) of the config running.
    pub fn config_version(&self) -> String {
        self.running_config().version
    }

    pub(crate) fn set_config_refused(&self, r: Option<switchyard_model::signals::ConfigRefusal>) {
        self.running_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused = r;
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
    /// once. `version` and `source` say which config it is; `keep` runs
    /// once every check passed, just before it goes in force (keeping it on
    /// disk, or forgetting the kept one), and its error refuses it.
    pub fn apply_config(
        &self,
        config: Config,
        version: &str,
        source: &str,
        keep: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        let mut running = self
            .running_config
            .lock()
            .unwrap_or_else(|e| e.into_inner());
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
            keep()?;
            self.config.store(Arc::new(config));
            self.metrics.config_running(Some(&running.version), version);
            running.version = version.to_string();
            running.source = source.to_string();
            if source == "file" {
                running.file_version = Some(version.to_string());
            }
            Ok(())
        })();
        drop(running);
        self.metrics.update("config", result.is_ok());
        match &result {
            Ok(()) => {
                tracing::info!(version, source, "config applied");
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

    /// The regions coming back after the probes saw them down, as the
    /// last rebuild of the answers left them.
    pub fn returning(&self) -> BTreeMap<String, Returning> {
        self.returning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the answers in force were built from: the probes now and the
    /// return fractions of the last rebuild (a provider pushing records
    /// answers with the same).
    pub fn edge_health(&self) -> Health {
        Health {
            probes: self.health(),
            returning: self.returning(),
        }
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

    /// Records one probe of `zone`'s edge ([`Probe::record`]); returns
    /// whether its liveness changed.
    pub fn probed(
        &self,
        zone: &str,
        ok: bool,
        failures_to_down: u32,
        successes_to_up: u32,
    ) -> bool {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let p = h.entry(zone.to_string()).or_default();
        let changed = p.record(ok, failures_to_down, successes_to_up);
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
        self.rebuild_at(now_ms());
    }

    /// [`Dns::rebuild`] at `now_ms`: moves each region's return ramp on to
    /// that moment, then builds the answers with it.
    pub fn rebuild_at(&self, now_ms: u64) {
        let _g = self.rebuild_lock.lock().unwrap_or_else(|e| e.into_inner());
        let controls = self
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone();
        let config = self.config();
        let probes = self.health();
        let ramp = config
            .dns
            .as_ref()
            .map_or(Duration::ZERO, |d| d.return_ramp);
        let returning = self
            .returns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&config, &probes, ramp, now_ms, &self.metrics);
        *self.returning.lock().unwrap_or_else(|e| e.into_inner()) = returning.clone();
        let health = Health { probes, returning };
        let view = View::build(config, controls, &health, now_ms);
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
    let holder = format!(
        "another DNS server named {name} is running with its state in {}",
        dir.display()
    );
    Ok(switchyard_api::lkg::lock(
        &dir.join(format!("dns-{name}.lock")),
        &holder,
    )?)
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

    fn config(&self, doc: switchyard_model::ConfigDoc) {
        crate::configs::from_control_plane(self, doc)
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

    fn test_running() -> switchyard_api::configs::RunningConfig {
        switchyard_api::configs::RunningConfig {
            version: "c-test".into(),
            source: "file".into(),
            refused: None,
            file_version: Some("c-test".into()),
        }
    }

    fn r1_answer(dns: &Dns) -> String {
        dns.view().answers[0].for_region(Some("r1"))[0]
            .region
            .clone()
    }

    /// A server over `CONFIG_TAIL` with `dns_keys` added to its `[dns]`.
    fn server(dir: &std::path::Path, dns_keys: &str) -> Arc<Dns> {
        let text = format!(
            "[edge]\nstate_dir = {:?}\n{CONFIG_TAIL}",
            dir.display().to_string()
        )
        .replace("[dns]\n", &format!("[dns]\n{dns_keys}\n"));
        let config = Config::from_toml(&text, |_| None).unwrap();
        Dns::new(config, test_running(), dir.join("c.toml"), "ns1").unwrap()
    }

    /// r1's share of the answers to r1's clients.
    fn r1_share(dns: &Dns) -> f64 {
        dns.view().answers[0]
            .for_region(Some("r1"))
            .iter()
            .filter(|c| c.region == "r1")
            .map(|c| c.weight)
            .sum()
    }

    /// One probe round of zone `a` (r1's only edge), with the config's
    /// probe settings as the probe loop takes them, then a rebuild at `at_ms`.
    fn round(dns: &Dns, ok: bool, at_ms: u64) {
        let c = dns.config();
        let d = c.dns.as_ref().unwrap();
        dns.probed("a", ok, d.probe_failures, d.probe_successes);
        dns.rebuild_at(at_ms);
    }

    fn gauge(dns: &Dns, region: &str) -> Option<f64> {
        dns.metrics
            .region_returning
            .get(&RegionLabels {
                region: region.into(),
            })
            .map(|g| g.get())
    }

    const T0: u64 = 1_000_000;

    /// Takes r1 down with two failed rounds ending at `at_ms`.
    fn take_r1_down(dns: &Dns, at_ms: u64) {
        round(dns, false, at_ms - 1_000);
        round(dns, false, at_ms);
        assert_eq!(r1_share(dns), 0.0, "r1 is down");
        assert_eq!(gauge(dns, "r1"), Some(0.0));
    }

    /// Brings r1's edge back with two good rounds, the second at `at_ms`.
    fn bring_r1_back(dns: &Dns, at_ms: u64) {
        round(dns, true, at_ms - 1_000);
        assert_eq!(r1_share(dns), 0.0, "one good probe is not enough");
        round(dns, true, at_ms);
    }

    #[test]
    fn a_server_that_starts_answers_every_region_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let dns = server(dir.path(), "return_ramp_s = 60");
        round(&dns, true, T0);
        assert_eq!(r1_share(&dns), 1.0);
        assert!(dns.returning().is_empty());
        // Never seen down: no series at all.
        assert_eq!(gauge(&dns, "r1"), None);
        assert_eq!(gauge(&dns, "r2"), None);
    }

    #[test]
    fn a_region_the_probes_saw_down_gets_its_share_back_in_steps_over_the_ramp() {
        let dir = tempfile::tempdir().unwrap();
        let dns = server(dir.path(), "return_ramp_s = 60");
        take_r1_down(&dns, T0);
        let back = T0 + 10_000;
        bring_r1_back(&dns, back);
        assert_eq!(r1_share(&dns), 0.0, "the ramp starts at 0");
        assert_eq!(
            dns.returning()["r1"],
            Returning {
                since_ms: back,
                fraction: 0.0
            }
        );
        let mut shares = Vec::new();
        for s in [15, 30, 45] {
            round(&dns, true, back + s * 1_000);
            shares.push(r1_share(&dns));
            assert_eq!(gauge(&dns, "r1"), Some(s as f64 / 60.0));
            assert_eq!(dns.returning()["r1"].fraction, s as f64 / 60.0);
        }
        assert_eq!(shares, [0.25, 0.5, 0.75]);
        round(&dns, true, back + 60_000);
        assert_eq!(r1_share(&dns), 1.0);
        assert!(dns.returning().is_empty());
        assert_eq!(gauge(&dns, "r1"), Some(1.0));
        // r2 was never down: never ramped.
        assert_eq!(gauge(&dns, "r2"), None);
    }

    #[test]
    fn a_region_down_again_while_returning_starts_its_ramp_over() {
        let dir = tempfile::tempdir().unwrap();
        let dns = server(dir.path(), "return_ramp_s = 60");
        take_r1_down(&dns, T0);
        bring_r1_back(&dns, T0 + 10_000);
        round(&dns, true, T0 + 40_000);
        assert_eq!(r1_share(&dns), 0.5);
        take_r1_down(&dns, T0 + 42_000);
        assert!(dns.returning().is_empty());
        let again = T0 + 50_000;
        bring_r1_back(&dns, again);
        assert_eq!(dns.returning()["r1"].since_ms, again);
        round(&dns, true, again + 15_000);
        assert_eq!(r1_share(&dns), 0.25, "not where the first ramp was");
    }

    #[test]
    fn an_edge_that_flaps_keeps_its_region_out_of_the_answers() {
        let dir = tempfile::tempdir().unwrap();
        let dns = server(dir.path(), "return_ramp_s = 60");
        take_r1_down(&dns, T0);
        let changes = dns.metrics.answer_sets_changed.get();
        for i in 1..=10 {
            round(&dns, i % 2 == 0, T0 + i * 1_000);
            assert_eq!(r1_share(&dns), 0.0, "round {i}");
        }
        assert!(!dns.health()["a"].alive);
        assert_eq!(dns.metrics.answer_sets_changed.get(), changes);
    }

    #[test]
    fn without_a_ramp_and_with_one_success_a_region_is_back_at_the_first_good_probe() {
        let dir = tempfile::tempdir().unwrap();
        let dns = server(dir.path(), "return_ramp_s = 0\nprobe_successes = 1");
        round(&dns, false, T0);
        round(&dns, false, T0 + 1_000);
        assert_eq!(r1_share(&dns), 0.0);
        round(&dns, true, T0 + 2_000);
        assert_eq!(r1_share(&dns), 1.0);
        assert!(dns.returning().is_empty());
    }

    #[test]
    fn a_reload_that_changes_the_push_targets_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dns = Dns::new(
            config(dir.path()),
            test_running(),
            dir.path().join("c.toml"),
            "ns1",
        )
        .unwrap();
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
        let err = dns
            .apply_config(with_push, "c-push", "file", || Ok(()))
            .unwrap_err();
        assert!(
            err.contains("dns.push changed; that needs a restart"),
            "{err}"
        );
        assert!(dns.config().dns.as_ref().unwrap().push.is_empty());
        assert_eq!(dns.config_version(), "c-test");
    }

    #[test]
    fn accepted_controls_change_the_answers_wake_watchers_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let dns = Dns::new(
            config(dir.path()),
            test_running(),
            dir.path().join("c.toml"),
            "ns1",
        )
        .unwrap();
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
        let again = Dns::new(
            config(dir.path()),
            test_running(),
            dir.path().join("c.toml"),
            "ns1",
        )
        .unwrap();
        assert_eq!(again.controls_source(), "last-known-good");
        assert_eq!(r1_answer(&again), "r2");
    }
}
