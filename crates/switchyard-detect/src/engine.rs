//! The detection engine: per-second signals in, findings out.
//!
//! Every second (once the edges have had `lag_ms` to report it) the engine
//! computes raw alarms over the last `window_s` seconds — zone outliers among
//! their peers, instances affected, region-wide impairment, instance outliers,
//! probe failures between zones and regions — combines them with the
//! composite templates, and turns each composite into a finding with M-of-N
//! to open and a hold-down to close, so findings neither flap nor multiply:
//! a single failing instance never yields a zone finding, and a region-wide
//! problem yields one region finding, not one per zone.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_model::signals::{ProbeTarget, Snapshot};

pub use switchyard_model::finding::{Alarm, Finding};

use crate::alerts::{Heartbeat, HeartbeatMonitor, IngestedAlert};
use crate::evidence::{self, Beats, Canary, Evidence};
use crate::expr::Expr;
use crate::keys::{
    AlertKey, InstanceKey, PlaceKey, ProbeKey, RouteKey, ThresholdKey, TrackKey, ZoneKey,
};
use crate::slo::{default_rules, SloTracker};
use crate::stats;
use crate::trend::TrendAlarm;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Seconds of signals each evaluation looks at.
    pub window_s: u64,
    /// How long after a second ends the engine waits for every edge's report.
    pub lag_ms: u64,
    /// A finding opens when its condition held in `open_m` of the last `open_n` seconds…
    pub open_m: usize,
    pub open_n: usize,
    /// …and closes after `clear_after_s` seconds in a row without it.
    pub clear_after_s: u64,
    /// Requests a zone needs in the window to be judged.
    pub min_requests: u64,
    /// Error rate above the peers' median that counts as an outlier.
    pub error_excess: f64,
    /// Chi-squared p-value below which zones' error rates differ.
    pub chi_p: f64,
    /// How a zone is judged against its peers: `mad` (robust z-score,
    /// the default), `z` (plain z-score) or `iqr` (above Q3 + k·IQR).
    pub outlier_method: OutlierMethod,
    /// Score above which a zone is an outlier (`mad` and `z`), or the IQR `k`.
    pub mad_z: f64,
    /// p99 above the peers' median, in ms, that counts as an outlier…
    pub latency_excess_ms: f64,
    /// …and as a ratio to that median.
    pub latency_ratio: f64,
    /// Instances that must be affected before a zone is impaired.
    pub min_instances_affected: usize,
    pub instance_min_requests: u64,
    pub instance_error_excess: f64,
    /// Probes: a link is impaired when this share of its probes fail while
    /// its source reaches others and others reach its target.
    pub probe_fail_ratio: f64,
    pub probe_peer_max_fail: f64,
    pub probe_min: u64,
    /// Seconds of probes each link evaluation looks at: probes are few per
    /// second, so links need a longer window than traffic to be sure.
    pub link_window_s: u64,
    /// Seconds of history kept.
    pub keep_s: u64,
    /// Availability objective of every service, for SLO burn-rate alarms.
    pub slo_objective: f64,
    /// A zone's error rate projected to reach this within `trend_horizon_s`
    /// raises a trend alarm before it does.
    pub trend_threshold: f64,
    pub trend_horizon_s: f64,
    /// Intervals an application heartbeat may miss before it alarms.
    pub heartbeat_grace: u32,
    /// Write path: a zone's writes (requests or heartbeats of write routes)
    /// failing at least this share while its reads fail at most a quarter
    /// as often; most of a region's zones like that is a write-path finding.
    pub write_fail_ratio: f64,
    /// Static thresholds, reported as alarms.
    pub thresholds: Vec<StaticThreshold>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            window_s: 3,
            lag_ms: 400,
            open_m: 2,
            open_n: 3,
            clear_after_s: 5,
            min_requests: 20,
            error_excess: 0.02,
            // Strict: every zone is tested every second, and a service-wide
            // problem must not single out the zone that drew the short straw.
            chi_p: 0.005,
            outlier_method: OutlierMethod::Mad,
            mad_z: 3.0,
            latency_excess_ms: 40.0,
            latency_ratio: 1.5,
            min_instances_affected: 2,
            instance_min_requests: 5,
            instance_error_excess: 0.1,
            probe_fail_ratio: 0.5,
            probe_peer_max_fail: 0.1,
            probe_min: 6,
            link_window_s: 5,
            keep_s: 120,
            slo_objective: 0.999,
            trend_threshold: 0.05,
            trend_horizon_s: 300.0,
            heartbeat_grace: 3,
            write_fail_ratio: 0.2,
            thresholds: Vec::new(),
        }
    }
}

impl DetectConfig {
    /// Every problem at once, each as `path.field: problem, got VALUE`:
    /// settings that would make a detector divide by nothing, never open,
    /// never close, or judge shares outside 0…1.
    pub fn validate(&self, path: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, why: &str, got: &dyn std::fmt::Display| {
            errs.push(format!("{path}.{field}: {why}, got {got}"))
        };
        let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        let positive = |x: f64| x.is_finite() && x > 0.0;
        for (field, v) in [
            ("window_s", self.window_s),
            ("clear_after_s", self.clear_after_s),
            ("min_requests", self.min_requests),
            ("instance_min_requests", self.instance_min_requests),
            ("probe_min", self.probe_min),
            ("link_window_s", self.link_window_s),
        ] {
            if v == 0 {
                bad(field, "must be at least 1", &v);
            }
        }
        if self.lag_ms > 60_000 {
            bad("lag_ms", "must be at most 60000 (a minute)", &self.lag_ms);
        }
        if self.open_m == 0 {
            bad("open_m", "must be at least 1", &self.open_m);
        }
        if self.open_n < self.open_m {
            bad("open_n", "must be at least open_m", &self.open_n);
        }
        if self.min_instances_affected == 0 {
            bad(
                "min_instances_affected",
                "must be at least 1",
                &self.min_instances_affected,
            );
        }
        if self.keep_s < self.window_s.max(self.link_window_s) {
            bad(
                "keep_s",
                "must be at least window_s and link_window_s",
                &self.keep_s,
            );
        }
        if self.heartbeat_grace == 0 {
            bad(
                "heartbeat_grace",
                "must be at least 1",
                &self.heartbeat_grace,
            );
        }
        for (field, v) in [
            ("error_excess", self.error_excess),
            ("instance_error_excess", self.instance_error_excess),
            ("probe_peer_max_fail", self.probe_peer_max_fail),
        ] {
            if !share(v) {
                bad(field, "must be between 0 and 1", &v);
            }
        }
        for (field, v) in [
            ("chi_p", self.chi_p),
            ("probe_fail_ratio", self.probe_fail_ratio),
            ("trend_threshold", self.trend_threshold),
            ("write_fail_ratio", self.write_fail_ratio),
        ] {
            if !(positive(v) && v <= 1.0) {
                bad(field, "must be above 0 and at most 1", &v);
            }
        }
        if !(positive(self.slo_objective) && self.slo_objective < 1.0) {
            bad(
                "slo_objective",
                "must be between 0 and 1",
                &self.slo_objective,
            );
        }
        for (field, v) in [
            ("mad_z", self.mad_z),
            ("trend_horizon_s", self.trend_horizon_s),
        ] {
            if !positive(v) {
                bad(field, "must be above 0", &v);
            }
        }
        if !(self.latency_excess_ms.is_finite() && self.latency_excess_ms >= 0.0) {
            bad(
                "latency_excess_ms",
                "must be 0 or more",
                &self.latency_excess_ms,
            );
        }
        if !(self.latency_ratio.is_finite() && self.latency_ratio >= 1.0) {
            bad("latency_ratio", "must be at least 1", &self.latency_ratio);
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            let at = |f: &str| format!("{path}.thresholds[{i}].{f}");
            if t.name.trim().is_empty() {
                errs.push(format!("{}: must not be empty", at("name")));
            }
            if !matches!(t.metric.as_str(), "error_rate" | "p99_ms") {
                errs.push(format!(
                    "{}: error_rate or p99_ms, got {:?}",
                    at("metric"),
                    t.metric
                ));
            }
            if !matches!(t.level.as_str(), "zone" | "region") {
                errs.push(format!(
                    "{}: zone or region, got {:?}",
                    at("level"),
                    t.level
                ));
            }
            if !(t.above.is_finite() && t.above >= 0.0) {
                errs.push(format!(
                    "{}: must be 0 or more, got {}",
                    at("above"),
                    t.above
                ));
            }
            if t.m == 0 || t.n < t.m {
                errs.push(format!(
                    "{}: m must be at least 1 and n at least m, got m = {}, n = {}",
                    at("m"),
                    t.m,
                    t.n
                ));
            }
        }
        errs
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutlierMethod {
    Mad,
    Z,
    Iqr,
}

/// A static threshold with M-of-N datapoints, on a zone's or region's error
/// rate or p99: the classic alarm, for operators who know their numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticThreshold {
    pub name: String,
    /// `error_rate` or `p99_ms`.
    pub metric: String,
    /// `zone` or `region`.
    pub level: String,
    pub above: f64,
    pub m: usize,
    pub n: usize,
}

impl OutlierMethod {
    /// Whether `x` stands out above `peers`; `None` scores (no spread among
    /// the peers) count as standing out, since the excess test already held.
    fn judge(self, x: f64, peers: &[f64], k: f64) -> (bool, Option<f64>) {
        match self {
            OutlierMethod::Mad => {
                let s = stats::mad_score(x, peers);
                (s.is_none_or(|m| m >= k), s)
            }
            OutlierMethod::Z => {
                let s = stats::z_score(x, peers);
                (s.is_none_or(|m| m >= k), s)
            }
            OutlierMethod::Iqr => (
                stats::iqr_outlier(x, peers, k)
                    || stats::quantile(peers, 0.75) == stats::quantile(peers, 0.25),
                None,
            ),
        }
    }
}

#[derive(Default, Clone)]
struct InstAcc {
    requests: u64,
    failures: u64,
    /// Per second of the window: (requests, failures). A real zone failure
    /// shows in most seconds; unrelated one-second blips in two instances
    /// must not add up to one.
    seconds: Vec<(u64, u64)>,
    /// (p99, requests) of each series, for a request-weighted latency.
    lat_sum: f64,
    lat_weight: u64,
}

#[derive(Default)]
struct Bucket {
    /// What callers saw of each instance.
    inst: BTreeMap<InstanceKey, InstAcc>,
    /// Source zone → target zone: (ok, total), instance probes.
    zprobe: BTreeMap<ProbeKey, (u64, u64)>,
    /// Source region → target region: (ok, total), edge probes.
    rprobe: BTreeMap<ProbeKey, (u64, u64)>,
    /// Target instance: (ok, total), from every source.
    iprobe: BTreeMap<InstanceKey, (u64, u64)>,
    /// Target zone: reads and writes, passive and probed.
    paths: BTreeMap<ZoneKey, PathAcc>,
    /// Heartbeats into each zone and each instance, with their latency.
    zbeats: BTreeMap<ZoneKey, Beats>,
    ibeats: BTreeMap<InstanceKey, Beats>,
    /// Requests and failures per route and target zone.
    routes: BTreeMap<RouteKey, (u64, u64)>,
}

/// Requests and heartbeats of one zone split by route kind: (done, failed).
#[derive(Default, Clone, Copy)]
struct PathAcc {
    read: (u64, u64),
    write: (u64, u64),
    read_probe: (u64, u64),
    write_probe: (u64, u64),
}

impl PathAcc {
    fn add(&mut self, o: &PathAcc) {
        for (a, b) in [
            (&mut self.read, o.read),
            (&mut self.write, o.write),
            (&mut self.read_probe, o.read_probe),
            (&mut self.write_probe, o.write_probe),
        ] {
            a.0 += b.0;
            a.1 += b.1;
        }
    }

    /// The failure share of requests and heartbeats together, each counted
    /// only with enough samples; `None` when neither has them. Pooled, not
    /// the larger of the two: a handful of heartbeats makes one unlucky
    /// failure in six look like 17 %, and a 7 % write failure looked like an
    /// impaired write path that way.
    fn fail_ratio(passive: (u64, u64), probed: (u64, u64), min_q: u64, min_p: u64) -> Option<f64> {
        let enough = |(n, _): (u64, u64), min: u64| n >= min && n > 0;
        let (n, f) = match (enough(passive, min_q), enough(probed, min_p)) {
            (true, true) => (passive.0 + probed.0, passive.1 + probed.1),
            (true, false) => passive,
            (false, true) => probed,
            (false, false) => return None,
        };
        Some(f as f64 / n as f64)
    }
}

/// One possible finding's recent seconds; its [`TrackKey`] says which.
#[derive(Default)]
struct Track {
    history: Vec<(u64, bool)>,
    open: Option<usize>,
    quiet_s: u64,
}

/// A finding the alarms of one second may support: the track it belongs to,
/// the condition over the raw alarms, and the evidence should it open.
type Candidate = (TrackKey, Expr, serde_json::Value);

/// Events emitted by [`Engine::tick`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Opened(Finding),
    Closed(Finding),
}

pub struct Engine {
    cfg: DetectConfig,
    buckets: BTreeMap<u64, Bucket>,
    zone_region: BTreeMap<String, String>,
    /// The zone each instance serves in, as the signals name them.
    instance_zone: BTreeMap<String, String>,
    next_eval: Option<u64>,
    tracks: BTreeMap<TrackKey, Track>,
    findings: Vec<Finding>,
    slo: BTreeMap<String, SloTracker>,
    /// SLO burn per route and region: small but persistent failures of one
    /// route in one region, which no outlier test sees.
    route_slo: BTreeMap<RouteKey, SloTracker>,
    /// This second's route burn alarms, until `update_alarms` lists them.
    route_alarms: Vec<Alarm>,
    /// Since which second each route has been burning without a break.
    route_burning_since: BTreeMap<RouteKey, u64>,
    trends: BTreeMap<ZoneKey, Vec<(f64, f64)>>,
    heartbeats: HeartbeatMonitor,
    /// Open findings raised by ingested alerts.
    alert_findings: BTreeMap<AlertKey, usize>,
    alarms: Vec<Alarm>,
    /// Recent verdicts of each static threshold, per place.
    threshold_history: BTreeMap<ThresholdKey, Vec<bool>>,
    /// The heartbeats' verdict on each place and kind after the last
    /// evaluated second: (service, scope, kind).
    evidence: BTreeMap<(String, String, String), Evidence>,
    /// Since when (ms) each zone and region has been clean in a row: both
    /// kinds of heartbeat evidence clean and no finding open on it.
    clean_since: BTreeMap<(String, String), u64>,
}

type Raw = BTreeMap<String, bool>;

/// Failures a route's short burn window must hold before a burn counts.
const ROUTE_BURN_MIN_FAILURES: f64 = 10.0;
/// The seconds a route must still be failing in, at the firing rule's burn
/// rate, to be burning now.
const ROUTE_BURN_NOW_S: u64 = 10;
/// Seconds a route must burn without a break before it is a finding.
const ROUTE_BURN_HOLD_S: u64 = 10;

impl Engine {
    pub fn new(cfg: DetectConfig) -> Engine {
        Engine {
            cfg,
            buckets: BTreeMap::new(),
            zone_region: BTreeMap::new(),
            instance_zone: BTreeMap::new(),
            next_eval: None,
            tracks: BTreeMap::new(),
            findings: Vec::new(),
            slo: BTreeMap::new(),
            route_slo: BTreeMap::new(),
            route_alarms: Vec::new(),
            route_burning_since: BTreeMap::new(),
            trends: BTreeMap::new(),
            heartbeats: HeartbeatMonitor::new(),
            alert_findings: BTreeMap::new(),
            alarms: Vec::new(),
            threshold_history: BTreeMap::new(),
            evidence: BTreeMap::new(),
            clean_since: BTreeMap::new(),
        }
    }

    /// Since when (Unix ms) `scope` (`zone:NAME` or `region:NAME`) of
    /// `service` has been known healthy without a break: its heartbeats
    /// clean (errors and latency) and no finding open on it. `None` while it
    /// is not, including while there is too little evidence either way.
    pub fn clean_since(&self, service: &str, scope: &str) -> Option<u64> {
        self.clean_since
            .get(&(service.to_string(), scope.to_string()))
            .copied()
    }

    /// The heartbeats' verdict on a place for a kind of finding (`errors`,
    /// `latency`) after the last evaluated second.
    pub fn evidence(&self, service: &str, scope: &str, kind: &str) -> Evidence {
        self.evidence
            .get(&(service.to_string(), scope.to_string(), kind.to_string()))
            .copied()
            .unwrap_or(Evidence::Unknown)
    }

    /// What real traffic says of `zone` since `since_ms`, against the other
    /// zones of its region over the same seconds: the verdict on a canary
    /// share sent into a shifted zone. Only evaluated seconds count (later
    /// ones may still be missing an edge's report). `Clean` needs
    /// `min_requests`; a clearly failing canary is `Bad` from a quarter of
    /// them, so it is pulled back before it hurts more users than it must.
    pub fn canary(&self, service: &str, zone: &str, since_ms: u64, min_requests: u64) -> Canary {
        let region = self.zone_region.get(zone);
        let mut zones: BTreeMap<&str, Beats> = BTreeMap::new();
        let from = since_ms.div_ceil(1000);
        let to = self.next_eval.unwrap_or(0);
        if from < to {
            for b in self.buckets.range(from..to).map(|(_, b)| b) {
                for (k, a) in &b.inst {
                    let peer = k.zone != zone
                        && region.is_some()
                        && self.zone_region.get(&k.zone) == region;
                    if k.service != service || !(k.zone == zone || peer) {
                        continue;
                    }
                    let e = zones.entry(k.zone.as_str()).or_default();
                    e.n += a.requests;
                    e.failed += a.failures;
                    // Request-weighted p99, counted over every request.
                    if a.lat_weight > 0 {
                        e.lat_sum_ms += a.lat_sum * a.requests as f64 / a.lat_weight as f64;
                    }
                }
            }
        }
        let mine = zones.remove(zone).unwrap_or_default();
        let peers: Vec<Beats> = zones.into_values().collect();
        let verdict = if mine.n < (min_requests / 4).max(self.cfg.probe_min) {
            Evidence::Unknown
        } else {
            match evidence::both(
                evidence::errors(&mine, &peers, &self.cfg),
                evidence::latency(&mine, &peers, &self.cfg),
            ) {
                Evidence::Clean if mine.n < min_requests => Evidence::Unknown,
                v => v,
            }
        };
        Canary {
            requests: mine.n,
            failures: mine.failed,
            mean_p99_ms: mine.mean_ms(),
            verdict,
        }
    }

    /// The alarms in force after the last evaluated second.
    pub fn alarms(&self) -> &[Alarm] {
        &self.alarms
    }

    /// An alert from elsewhere (Alertmanager): a firing alert with a scope
    /// is a finding at once — its source already waited out its own M-of-N —
    /// and its resolution closes it.
    pub fn ingest_alert(&mut self, a: &IngestedAlert, now_ms: u64) -> Option<Event> {
        let scope = a.scope.clone()?;
        let key = AlertKey {
            alert: a.name.clone(),
            scope: scope.clone(),
        };
        match (a.firing, self.alert_findings.get(&key).copied()) {
            (true, None) => {
                let f = Finding {
                    scope,
                    // An alert about the write side (replication stopped,
                    // primary unreachable) says so with `impact="write_path"`
                    // and gets that playbook.
                    kind: match a.labels.get("impact").map(String::as_str) {
                        Some("write_path") => "write_path".into(),
                        _ => format!("alert:{}", a.name),
                    },
                    service: a.labels.get("service").cloned().unwrap_or_default(),
                    start_ms: a.starts_at_ms.unwrap_or(now_ms),
                    detected_ms: now_ms,
                    end_ms: None,
                    evidence: json!({"source": "alertmanager", "labels": a.labels}),
                };
                self.alert_findings.insert(key, self.findings.len());
                self.findings.push(f.clone());
                Some(Event::Opened(f))
            }
            (false, Some(i)) => {
                self.alert_findings.remove(&key);
                let f = &mut self.findings[i];
                f.end_ms = Some(a.ends_at_ms.unwrap_or(now_ms));
                Some(Event::Closed(f.clone()))
            }
            _ => None,
        }
    }

    /// An application's own heartbeat; silence beyond the grace raises an alarm.
    pub fn ingest_heartbeat(&mut self, hb: Heartbeat) {
        self.heartbeats.record(hb);
    }

    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// Every finding so far, open and closed, in the order they opened.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Adds one edge's snapshot. Late snapshots for seconds already
    /// evaluated are still counted in later windows that include them.
    pub fn ingest(&mut self, s: &Snapshot) {
        let sec = s.at_ms.saturating_sub(1) / 1000;
        self.zone_region
            .insert(s.source_zone.clone(), s.region.clone());
        let b = self.buckets.entry(sec).or_default();
        for x in &s.series {
            if x.instance.is_empty() || x.target_zone.is_empty() {
                continue;
            }
            let a = b
                .inst
                .entry(InstanceKey {
                    service: x.service.clone(),
                    zone: x.target_zone.clone(),
                    instance: x.instance.clone(),
                })
                .or_default();
            a.requests += x.requests;
            a.failures += x.failures();
            a.lat_sum += x.p99_ms * x.requests as f64;
            a.lat_weight += x.requests;
            let p = b
                .paths
                .entry(ZoneKey {
                    service: x.service.clone(),
                    zone: x.target_zone.clone(),
                })
                .or_default();
            let e = if x.write { &mut p.write } else { &mut p.read };
            e.0 += x.requests;
            e.1 += x.failures();
            let r = b
                .routes
                .entry(RouteKey {
                    service: x.service.clone(),
                    route: x.route.clone(),
                    place: x.target_zone.clone(),
                })
                .or_default();
            r.0 += x.requests;
            r.1 += x.failures();
        }
        for p in &s.probes {
            match p.target {
                ProbeTarget::Instance => {
                    let e = b
                        .zprobe
                        .entry(ProbeKey {
                            service: p.service.clone(),
                            from: s.source_zone.clone(),
                            to: p.target_zone.clone(),
                        })
                        .or_default();
                    e.0 += u64::from(p.ok);
                    e.1 += 1;
                    let ik = InstanceKey {
                        service: p.service.clone(),
                        zone: p.target_zone.clone(),
                        instance: p.name.clone(),
                    };
                    b.ibeats
                        .entry(ik.clone())
                        .or_default()
                        .record(p.ok, p.latency_ms);
                    b.zbeats
                        .entry(ZoneKey {
                            service: p.service.clone(),
                            zone: p.target_zone.clone(),
                        })
                        .or_default()
                        .record(p.ok, p.latency_ms);
                    let e = b.iprobe.entry(ik).or_default();
                    e.0 += u64::from(p.ok);
                    e.1 += 1;
                    let acc = b
                        .paths
                        .entry(ZoneKey {
                            service: p.service.clone(),
                            zone: p.target_zone.clone(),
                        })
                        .or_default();
                    let e = if p.write {
                        &mut acc.write_probe
                    } else {
                        &mut acc.read_probe
                    };
                    e.0 += 1;
                    e.1 += u64::from(!p.ok);
                }
                ProbeTarget::Edge => {
                    let e = b
                        .rprobe
                        .entry(ProbeKey {
                            service: p.service.clone(),
                            from: s.region.clone(),
                            to: p.target_region.clone(),
                        })
                        .or_default();
                    e.0 += u64::from(p.ok);
                    e.1 += 1;
                }
            }
        }
        for x in &s.series {
            if !x.target_zone.is_empty() && !x.instance.is_empty() {
                if !self.instance_zone.contains_key(&x.instance) {
                    self.instance_zone
                        .insert(x.instance.clone(), x.target_zone.clone());
                }
                self.zone_region
                    .entry(x.target_zone.clone())
                    .or_insert_with(|| s.region.clone());
            }
        }
        for p in s
            .probes
            .iter()
            .filter(|p| p.target == ProbeTarget::Instance)
        {
            self.zone_region
                .entry(p.target_zone.clone())
                .or_insert_with(|| p.target_region.clone());
        }
        if self.next_eval.is_none() {
            self.next_eval = Some(sec);
        }
    }

    /// Evaluates every second that is complete at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(mut next) = self.next_eval else {
            return events;
        };
        while (next + 1) * 1000 + self.cfg.lag_ms <= now_ms {
            events.extend(self.evaluate(next));
            next += 1;
        }
        self.next_eval = Some(next);
        let keep_from = next.saturating_sub(self.cfg.keep_s);
        self.buckets = self.buckets.split_off(&keep_from);
        events
    }

    fn window(&self, sec: u64, len: u64) -> impl Iterator<Item = &Bucket> {
        let from = (sec + 1).saturating_sub(len);
        self.buckets.range(from..=sec).map(|(_, b)| b)
    }

    fn evaluate(&mut self, sec: u64) -> Vec<Event> {
        let mut inst: BTreeMap<InstanceKey, InstAcc> = BTreeMap::new();
        let mut zprobe: BTreeMap<ProbeKey, (u64, u64)> = BTreeMap::new();
        let mut rprobe: BTreeMap<ProbeKey, (u64, u64)> = BTreeMap::new();
        let mut iprobe: BTreeMap<InstanceKey, (u64, u64)> = BTreeMap::new();
        let mut paths: BTreeMap<ZoneKey, PathAcc> = BTreeMap::new();
        let mut zbeats: BTreeMap<ZoneKey, Beats> = BTreeMap::new();
        let mut ibeats: BTreeMap<InstanceKey, Beats> = BTreeMap::new();
        for b in self.window(sec, self.cfg.window_s) {
            for (k, a) in &b.paths {
                paths.entry(k.clone()).or_default().add(a);
            }
            for (k, a) in &b.inst {
                let e = inst.entry(k.clone()).or_default();
                e.requests += a.requests;
                e.failures += a.failures;
                e.seconds.push((a.requests, a.failures));
                e.lat_sum += a.lat_sum;
                e.lat_weight += a.lat_weight;
            }
        }
        for b in self.window(sec, self.cfg.link_window_s) {
            for (k, (ok, n)) in &b.zprobe {
                let e = zprobe.entry(k.clone()).or_default();
                e.0 += ok;
                e.1 += n;
            }
            for (k, (ok, n)) in &b.rprobe {
                let e = rprobe.entry(k.clone()).or_default();
                e.0 += ok;
                e.1 += n;
            }
            for (k, (ok, n)) in &b.iprobe {
                let e = iprobe.entry(k.clone()).or_default();
                e.0 += ok;
                e.1 += n;
            }
            for (k, x) in &b.zbeats {
                zbeats.entry(k.clone()).or_default().add(x);
            }
            for (k, x) in &b.ibeats {
                ibeats.entry(k.clone()).or_default().add(x);
            }
        }
        let services: BTreeSet<String> = inst
            .keys()
            .map(|k| k.service.clone())
            .chain(zprobe.keys().map(|k| k.service.clone()))
            .chain(rprobe.keys().map(|k| k.service.clone()))
            .collect();
        // Open findings suppress the ones beneath them (a region's its zones',
        // a zone's its instances') for as long as they stay open.
        let mut raw: Raw = self
            .tracks
            .iter()
            .filter(|(_, t)| t.open.is_some())
            .map(|(k, _)| (format!("open:{}:{}:{}", k.service, k.scope, k.kind), true))
            .collect();
        let mut candidates: Vec<Candidate> = Vec::new();
        // Candidates evaluated without evidence either way this second.
        let mut unknown: BTreeSet<TrackKey> = BTreeSet::new();
        for svc in &services {
            self.service_alarms(svc, &inst, &zprobe, &rprobe, &mut raw, &mut candidates);
            self.unreachable_alarms(svc, &iprobe, &mut raw, &mut candidates);
            self.write_path_alarms(svc, &paths, &mut raw, &mut candidates, &mut unknown);
        }
        self.route_burns(sec, &mut raw, &mut candidates);
        let now_ms = (sec + 1) * 1000;
        self.update_alarms(sec, &inst, now_ms);
        self.evidence = self.heartbeat_evidence(&zbeats, &ibeats);
        let mut events = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, expr, evidence) in candidates {
            let mut on = Some(expr.eval(&raw));
            let open = self.tracks.get(&key).is_some_and(|t| t.open.is_some());
            match self.evidence_for(&key) {
                // Still failing its heartbeats: the finding stays open even
                // if the traffic left (a shift) or looks better.
                Evidence::Bad if open => on = Some(true),
                Evidence::Unknown if open && on == Some(false) && unknown.contains(&key) => {
                    on = None
                }
                _ => {}
            }
            seen.insert(key.clone());
            events.extend(self.step(key, sec, on, now_ms, evidence));
        }
        // Keys with no traffic this second: the heartbeats decide, and
        // without them nothing is known, so an open finding stays open.
        let missing: Vec<_> = self
            .tracks
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in missing {
            // Heartbeats keep a finding open or let it close; they never
            // open one past the suppression the candidates apply (a zone of
            // an evacuated region is the region's finding, not its own).
            let open = self.tracks.get(&key).is_some_and(|t| t.open.is_some());
            let on = match self.evidence_for(&key) {
                Evidence::Bad if open => Some(true),
                Evidence::Clean => Some(false),
                _ => None,
            };
            events.extend(self.step(key, sec, on, now_ms, serde_json::Value::Null));
        }
        self.update_clean_since(&zbeats, now_ms);
        events
    }

    /// Instances and zones that stop answering their heartbeats from every
    /// source: a dead instance the edges have already ejected sends no more
    /// passive signals, but its heartbeats keep failing.
    fn unreachable_alarms(
        &self,
        svc: &str,
        iprobe: &BTreeMap<InstanceKey, (u64, u64)>,
        raw: &mut Raw,
        out: &mut Vec<Candidate>,
    ) {
        let cfg = &self.cfg;
        let mut zones: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
        for (k, (ok, n)) in iprobe {
            if k.service == svc && *n >= cfg.probe_min {
                zones
                    .entry(k.zone.as_str())
                    .or_default()
                    .push((k.instance.as_str(), 1.0 - *ok as f64 / *n as f64));
            }
        }
        let region_of = |z: &str| self.zone_region.get(z).cloned().unwrap_or_default();
        for (z, insts) in &zones {
            let dead: Vec<&str> = insts
                .iter()
                .filter(|(_, f)| *f >= cfg.probe_fail_ratio)
                .map(|(i, _)| *i)
                .collect();
            let r = region_of(z);
            let others: Vec<f64> = zones
                .iter()
                .filter(|(oz, _)| *oz != z && region_of(oz) == r)
                .flat_map(|(_, v)| v.iter().map(|(_, f)| *f))
                .collect();
            let others_fine = !others.is_empty()
                && stats::mean(&others).unwrap_or(1.0) <= cfg.probe_peer_max_fail;
            let zone_dead = others_fine
                && dead.len() >= cfg.min_instances_affected.min(insts.len()).max(1)
                && dead.len() * 2 > insts.len();
            raw.insert(format!("zone_unreachable:{svc}:{z}"), zone_dead);
            let ev = json!({
                "heartbeat_fail_ratio": insts.iter().map(|(i, f)| (i.to_string(), *f)).collect::<BTreeMap<_, _>>(),
                "failing": dead, "other_zones_mean_fail": stats::mean(&others), "window_s": cfg.link_window_s,
            });
            out.push((
                TrackKey::new(svc, format!("zone:{z}"), "unreachable"),
                Expr::All(vec![
                    Expr::alarm(format!("zone_unreachable:{svc}:{z}")),
                    Expr::negate(Expr::alarm(format!("open:{svc}:region:{r}:errors"))),
                ]),
                ev,
            ));
            for (i, f) in insts {
                let peers: Vec<f64> = insts
                    .iter()
                    .filter(|(o, _)| o != i)
                    .map(|(_, f)| *f)
                    .collect();
                let peers_fine = peers.is_empty()
                    || stats::mean(&peers).unwrap_or(1.0) <= cfg.probe_peer_max_fail;
                let on = *f >= cfg.probe_fail_ratio && peers_fine && !zone_dead;
                raw.insert(format!("instance_unreachable:{svc}:{i}"), on);
                out.push((
                    TrackKey::new(svc, format!("instance:{i}"), "unreachable"),
                    Expr::All(vec![
                        Expr::alarm(format!("instance_unreachable:{svc}:{i}")),
                        Expr::negate(Expr::alarm(format!("open:{svc}:zone:{z}:unreachable"))),
                    ]),
                    json!({"heartbeat_fail_ratio": f, "zone_peers": peers, "window_s": cfg.link_window_s}),
                ));
            }
        }
    }

    /// Writes failing across most of a region while its reads work: the
    /// store's write side (primary unreachable, replication stopped) rather
    /// than the region, so the answer is read-only mode there, which keeps
    /// reads served. The write routes' heartbeats keep measuring the write
    /// path while read-only mode turns the writes themselves away.
    fn write_path_alarms(
        &self,
        svc: &str,
        paths: &BTreeMap<ZoneKey, PathAcc>,
        raw: &mut Raw,
        out: &mut Vec<Candidate>,
        unknown: &mut BTreeSet<TrackKey>,
    ) {
        let cfg = &self.cfg;
        let mut regions: BTreeMap<String, Vec<(&str, &PathAcc)>> = BTreeMap::new();
        for (k, a) in paths {
            if k.service == svc {
                if let Some(r) = self.zone_region.get(&k.zone) {
                    regions
                        .entry(r.clone())
                        .or_default()
                        .push((k.zone.as_str(), a));
                }
            }
        }
        for (r, zones) in regions {
            let mut impaired = Vec::new();
            let mut evidence = BTreeMap::new();
            let mut measured = false;
            for (z, a) in &zones {
                let w = PathAcc::fail_ratio(
                    a.write,
                    a.write_probe,
                    cfg.min_requests / 4,
                    cfg.probe_min,
                );
                let rd = PathAcc::fail_ratio(a.read, a.read_probe, cfg.min_requests, cfg.probe_min);
                if let Some(w) = w {
                    measured = true;
                    if w >= cfg.write_fail_ratio && rd.unwrap_or(0.0) * 4.0 <= w {
                        impaired.push(z.to_string());
                    }
                }
                evidence.insert(
                    z.to_string(),
                    json!({"write_fail_ratio": w, "read_fail_ratio": rd,
                           "writes": a.write.0, "writes_failed": a.write.1,
                           "write_heartbeats": a.write_probe.0, "write_heartbeats_failed": a.write_probe.1}),
                );
            }
            let all = self.zone_region.values().filter(|x| **x == r).count();
            let need = all.div_ceil(2).max(1);
            let on = !impaired.is_empty() && impaired.len() >= need;
            raw.insert(format!("write_path:{svc}:{r}"), on);
            let key = TrackKey::new(svc, format!("region:{r}"), "write_path");
            if !measured {
                // Neither writes nor write heartbeats: nothing says the
                // write path works again.
                unknown.insert(key.clone());
            }
            out.push((
                key,
                Expr::alarm(format!("write_path:{svc}:{r}")),
                json!({"zones": evidence, "impaired": impaired, "zones_needed": need,
                       "threshold": cfg.write_fail_ratio, "window_s": cfg.window_s}),
            ));
        }
    }

    /// SLO burn per route and region, from this second's traffic: a rule
    /// that fires is an alarm naming the route and region, and a candidate
    /// finding `region:R` of kind `slo_burn:ROUTE` with the rule, its
    /// severity (page or ticket) and the burn rates as evidence.
    fn route_burns(&mut self, sec: u64, raw: &mut Raw, out: &mut Vec<Candidate>) {
        let mut this_second: BTreeMap<RouteKey, (u64, u64)> = BTreeMap::new();
        if let Some(b) = self.buckets.get(&sec) {
            for (k, (q, f)) in &b.routes {
                let Some(region) = self.zone_region.get(&k.place) else {
                    continue;
                };
                let e = this_second
                    .entry(RouteKey {
                        service: k.service.clone(),
                        route: k.route.clone(),
                        place: region.clone(),
                    })
                    .or_default();
                e.0 += q;
                e.1 += f;
            }
        }
        for (k, (q, f)) in this_second {
            if !self.route_slo.contains_key(&k) {
                match SloTracker::new(self.cfg.slo_objective, default_rules()) {
                    Ok(t) => {
                        self.route_slo.insert(k.clone(), t);
                    }
                    Err(_) => continue,
                }
            }
            if let Some(t) = self.route_slo.get_mut(&k) {
                t.observe(sec, q, f);
            }
        }
        for (k, t) in &self.route_slo {
            // A burn rate is a ratio: a route seen for a few seconds, or
            // failing a handful of times, burns fast by chance. A rule
            // counts once its short window holds enough failures to mean it.
            let burns: Vec<_> = t
                .evaluate(sec)
                .into_iter()
                .filter(|b| {
                    t.rules()
                        .iter()
                        .find(|r| r.name == b.rule)
                        .is_some_and(|r| {
                            t.window(sec, r.short_window_s).1 >= ROUTE_BURN_MIN_FAILURES
                        })
                })
                .collect();
            // The most urgent paging rule that fires speaks for the route:
            // a fast burn pages, a slow one (the workbook's 6-hour page) is
            // a ticket. The 1× ticket rule alone only spends the budget as
            // planned or a little faster: an alarm, not an incident.
            let paging = || {
                burns
                    .iter()
                    .filter(|b| b.severity == crate::slo::Severity::Page)
            };
            let top = paging()
                .find(|b| b.rule == "page-fast")
                .or_else(|| paging().next());
            // A finding is about now: the route must still fail at the
            // firing rule's burn rate over the last seconds (the burn windows
            // remember failures for minutes after they stop), and have
            // burned for a while, so a fault that has a place is found as
            // that place first and the burn is not a second finding for it.
            let (q, f) = t.window(sec, ROUTE_BURN_NOW_S);
            let rate = top
                .and_then(|b| t.rules().iter().find(|r| r.name == b.rule))
                .map_or(f64::INFINITY, |r| r.burn_rate);
            let now_burning = q > 0.0 && f / q >= rate * (1.0 - self.cfg.slo_objective);
            // Explained by a finding with a place in this region: that
            // finding's incident and mitigation cover the burn, and the
            // burn's hold starts over once it is gone.
            let mut explained: Vec<Expr> = ["errors", "latency", "write_path"]
                .iter()
                .map(|kind| Expr::alarm(format!("open:{}:region:{}:{kind}", k.service, k.place)))
                .collect();
            let in_region = |z: &str| self.zone_region.get(z) == Some(&k.place);
            let places = self
                .zone_region
                .keys()
                .filter(|z| in_region(z))
                .map(|z| format!("zone:{z}"))
                .chain(
                    self.instance_zone
                        .iter()
                        .filter(|(_, z)| in_region(z))
                        .map(|(i, _)| format!("instance:{i}")),
                );
            for p in places {
                for kind in ["errors", "latency", "unreachable"] {
                    explained.push(Expr::alarm(format!("open:{}:{p}:{kind}", k.service)));
                }
            }
            let explained = Expr::Any(explained).eval(raw);
            let since = if top.is_some() && now_burning && !explained {
                Some(*self.route_burning_since.entry(k.clone()).or_insert(sec))
            } else {
                self.route_burning_since.remove(k);
                None
            };
            let name = format!("slo_burn:{}:{}:{}", k.service, k.route, k.place);
            raw.insert(
                name.clone(),
                since.is_some_and(|s0| sec + 1 - s0 >= ROUTE_BURN_HOLD_S),
            );
            for b in &burns {
                self.route_alarms.push(Alarm {
                    name: format!("slo_burn:{}:{}@{}", b.rule, k.route, k.place),
                    service: k.service.clone(),
                    severity: match b.severity {
                        crate::slo::Severity::Page => "page",
                        crate::slo::Severity::Ticket => "ticket",
                    }
                    .into(),
                    at_ms: (sec + 1) * 1000,
                    detail: json!({"route": k.route, "region": k.place, "objective": self.cfg.slo_objective,
                                   "long_burn": b.long_burn, "short_burn": b.short_burn}),
                });
            }
            let evidence = top.map_or(serde_json::Value::Null, |b| {
                json!({"route": k.route, "region": k.place, "rule": b.rule,
                       "severity": if b.rule == "page-fast" { "page" } else { "ticket" },
                       "long_burn": b.long_burn, "short_burn": b.short_burn,
                       "objective": self.cfg.slo_objective})
            });
            out.push((
                TrackKey::new(
                    &k.service,
                    format!("region:{}", k.place),
                    format!("slo_burn:{}", k.route),
                ),
                Expr::alarm(name),
                evidence,
            ));
        }
    }

    /// SLO burn per service (from this second's traffic), error-rate trends
    /// per zone (from the window) and silent heartbeats.
    fn update_alarms(&mut self, sec: u64, window: &BTreeMap<InstanceKey, InstAcc>, now_ms: u64) {
        let cfg = self.cfg.clone();
        let mut alarms = Vec::new();
        let mut this_second: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        if let Some(b) = self.buckets.get(&sec) {
            for (k, a) in &b.inst {
                let e = this_second.entry(k.service.clone()).or_default();
                e.0 += a.requests;
                e.1 += a.failures;
            }
        }
        for (svc, (q, f)) in this_second {
            let Ok(t) = (match self.slo.get_mut(&svc) {
                Some(t) => Ok(t),
                None => SloTracker::new(cfg.slo_objective, default_rules())
                    .map(|t| self.slo.entry(svc.clone()).or_insert(t)),
            }) else {
                continue;
            };
            t.observe(sec, q, f);
            for b in t.evaluate(sec) {
                alarms.push(Alarm {
                    name: format!("slo_burn:{}", b.rule),
                    service: svc.clone(),
                    severity: serde_json::to_value(b.severity).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                    at_ms: now_ms,
                    detail: json!({"objective": cfg.slo_objective, "long_burn": b.long_burn, "short_burn": b.short_burn}),
                });
            }
        }
        let mut zones: BTreeMap<ZoneKey, (u64, u64)> = BTreeMap::new();
        for (k, a) in window {
            let e = zones
                .entry(ZoneKey {
                    service: k.service.clone(),
                    zone: k.zone.clone(),
                })
                .or_default();
            e.0 += a.requests;
            e.1 += a.failures;
        }
        let trend = TrendAlarm {
            threshold: cfg.trend_threshold,
            horizon_s: cfg.trend_horizon_s,
            ..TrendAlarm::default()
        };
        for (key, (q, f)) in zones {
            let pts = self.trends.entry(key.clone()).or_default();
            pts.push((sec as f64, if q == 0 { 0.0 } else { f as f64 / q as f64 }));
            if pts.len() > trend.window {
                pts.remove(0);
            }
            if let Some(v) = trend.projection(pts) {
                alarms.push(Alarm {
                    name: format!("trend:zone:{}", key.zone),
                    service: key.service.clone(),
                    severity: "ticket".into(),
                    at_ms: now_ms,
                    detail: json!({"metric": "error_rate", "current": v.current, "slope_per_s": v.slope, "threshold": cfg.trend_threshold, "crosses_in_s": v.crosses_in_s, "r_squared": v.r_squared}),
                });
            }
        }
        // Static thresholds on zones and regions, M of the last N seconds.
        let mut places: BTreeMap<PlaceKey, InstAcc> = BTreeMap::new();
        for (k, a) in window {
            let r = self.zone_region.get(&k.zone).cloned().unwrap_or_default();
            for (level, name) in [("zone", k.zone.clone()), ("region", r)] {
                let e = places
                    .entry(PlaceKey {
                        service: k.service.clone(),
                        level,
                        name,
                    })
                    .or_default();
                e.requests += a.requests;
                e.failures += a.failures;
                e.lat_sum += a.lat_sum;
                e.lat_weight += a.lat_weight;
            }
        }
        for th in &cfg.thresholds {
            for (p, a) in places.iter().filter(|(k, _)| k.level == th.level) {
                let (svc, level, name) = (&p.service, p.level, &p.name);
                let value = match th.metric.as_str() {
                    "p99_ms" if a.lat_weight > 0 => a.lat_sum / a.lat_weight as f64,
                    "error_rate" if a.requests > 0 => a.failures as f64 / a.requests as f64,
                    _ => continue,
                };
                let h = self
                    .threshold_history
                    .entry(ThresholdKey {
                        threshold: th.name.clone(),
                        place: p.clone(),
                    })
                    .or_default();
                h.push(value > th.above);
                if h.len() > th.n {
                    h.remove(0);
                }
                if h.iter().filter(|x| **x).count() >= th.m {
                    alarms.push(Alarm {
                        name: format!("threshold:{}:{level}:{name}", th.name),
                        service: svc.clone(),
                        severity: "page".into(),
                        at_ms: now_ms,
                        detail: json!({"metric": th.metric, "value": value, "above": th.above, "m": th.m, "n": th.n}),
                    });
                }
            }
        }
        // Heartbeats carry their own clock; judge them by the trace's.
        for (source, silent_ms) in self.heartbeats.missing(now_ms, cfg.heartbeat_grace) {
            alarms.push(Alarm {
                name: format!("heartbeat_missing:{source}"),
                service: String::new(),
                severity: "page".into(),
                at_ms: now_ms,
                detail: json!({"silent_ms": silent_ms}),
            });
        }
        alarms.append(&mut self.route_alarms);
        self.alarms = alarms;
    }

    /// The heartbeats' verdict on every zone (against its region's other
    /// zones), region (its zones against the other regions' zones) and
    /// instance (against its region's other instances), for errors and
    /// latency.
    fn heartbeat_evidence(
        &self,
        zbeats: &BTreeMap<ZoneKey, Beats>,
        ibeats: &BTreeMap<InstanceKey, Beats>,
    ) -> BTreeMap<(String, String, String), Evidence> {
        let cfg = &self.cfg;
        let region_of = |z: &str| self.zone_region.get(z).cloned().unwrap_or_default();
        let mut out = BTreeMap::new();
        type Judge = fn(&Beats, &[Beats], &DetectConfig) -> Evidence;
        let kinds: [(&str, Judge); 2] =
            [("errors", evidence::errors), ("latency", evidence::latency)];
        let mut by_region: BTreeMap<(String, String, String), Vec<Evidence>> = BTreeMap::new();
        for (k, b) in zbeats {
            let r = region_of(&k.zone);
            let same: Vec<Beats> = zbeats
                .iter()
                .filter(|(o, _)| {
                    o.service == k.service && o.zone != k.zone && region_of(&o.zone) == r
                })
                .map(|(_, x)| *x)
                .collect();
            let elsewhere: Vec<Beats> = zbeats
                .iter()
                .filter(|(o, _)| o.service == k.service && region_of(&o.zone) != r)
                .map(|(_, x)| *x)
                .collect();
            for (kind, judge) in kinds {
                out.insert(
                    (
                        k.service.clone(),
                        format!("zone:{}", k.zone),
                        kind.to_string(),
                    ),
                    judge(b, &same, cfg),
                );
                by_region
                    .entry((k.service.clone(), r.clone(), kind.to_string()))
                    .or_default()
                    .push(judge(b, &elsewhere, cfg));
            }
        }
        for ((svc, r, kind), zones) in by_region {
            out.insert((svc, format!("region:{r}"), kind), evidence::region(&zones));
        }
        for (k, b) in ibeats {
            let r = region_of(&k.zone);
            let peers: Vec<Beats> = ibeats
                .iter()
                .filter(|(o, _)| {
                    o.service == k.service && o.instance != k.instance && region_of(&o.zone) == r
                })
                .map(|(_, x)| *x)
                .collect();
            for (kind, judge) in kinds {
                out.insert(
                    (
                        k.service.clone(),
                        format!("instance:{}", k.instance),
                        kind.to_string(),
                    ),
                    judge(b, &peers, cfg),
                );
            }
        }
        out
    }

    /// The verdict that bears on a track: its own kind for errors and
    /// latency, the error verdict for a place found unreachable (its
    /// heartbeats failing is what made it so). Links and the write path
    /// have their own candidates every second they have data.
    fn evidence_for(&self, key: &TrackKey) -> Evidence {
        let kind = match key.kind.as_str() {
            "errors" | "unreachable" => "errors",
            "latency" => "latency",
            _ => return Evidence::Unknown,
        };
        if key.scope.starts_with("link:") {
            return Evidence::Unknown;
        }
        self.evidence
            .get(&(key.service.clone(), key.scope.clone(), kind.to_string()))
            .copied()
            .unwrap_or(Evidence::Unknown)
    }

    /// Zones and regions that are clean this second keep (or start) their
    /// clean run; any other verdict, or an open finding, ends it.
    fn update_clean_since(&mut self, zbeats: &BTreeMap<ZoneKey, Beats>, now_ms: u64) {
        let mut places: BTreeSet<(String, String)> = BTreeSet::new();
        for k in zbeats.keys() {
            places.insert((k.service.clone(), format!("zone:{}", k.zone)));
            if let Some(r) = self.zone_region.get(&k.zone) {
                places.insert((k.service.clone(), format!("region:{r}")));
            }
        }
        let open: BTreeSet<(String, String)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.open.is_some())
            .map(|(k, _)| (k.service.clone(), k.scope.clone()))
            .collect();
        let mut next = BTreeMap::new();
        for (svc, scope) in places {
            let clean = evidence::both(
                self.evidence(&svc, &scope, "errors"),
                self.evidence(&svc, &scope, "latency"),
            ) == Evidence::Clean;
            if clean && !open.contains(&(svc.clone(), scope.clone())) {
                let since = self
                    .clean_since
                    .get(&(svc.clone(), scope.clone()))
                    .copied()
                    .unwrap_or(now_ms);
                next.insert((svc, scope), since);
            }
        }
        self.clean_since = next;
    }

    /// One second of one track: `on` is whether its condition held, `None`
    /// when nothing was known either way. Unknown seconds neither open a
    /// finding nor count towards closing one.
    fn step(
        &mut self,
        key: TrackKey,
        sec: u64,
        on: Option<bool>,
        now_ms: u64,
        evidence: serde_json::Value,
    ) -> Vec<Event> {
        let cfg = &self.cfg;
        let t = self.tracks.entry(key.clone()).or_default();
        let known = on.is_some();
        let on = on.unwrap_or(false);
        t.history.push((sec, on));
        if t.history.len() > cfg.open_n {
            t.history.remove(0);
        }
        let mut out = Vec::new();
        match t.open {
            None => {
                let hits = t.history.iter().filter(|(_, h)| *h).count();
                if on && hits >= cfg.open_m {
                    let start = t
                        .history
                        .iter()
                        .find(|(_, h)| *h)
                        .map(|(s, _)| *s)
                        .unwrap_or(sec);
                    let f = Finding {
                        scope: key.scope,
                        kind: key.kind,
                        service: key.service,
                        start_ms: start * 1000,
                        detected_ms: now_ms,
                        end_ms: None,
                        evidence,
                    };
                    t.open = Some(self.findings.len());
                    t.quiet_s = 0;
                    self.findings.push(f.clone());
                    out.push(Event::Opened(f));
                }
            }
            Some(_) if !known => {}
            Some(i) => {
                if on {
                    t.quiet_s = 0;
                } else {
                    t.quiet_s += 1;
                    if t.quiet_s >= cfg.clear_after_s {
                        let f = &mut self.findings[i];
                        f.end_ms = Some((sec + 1 - t.quiet_s) * 1000);
                        out.push(Event::Closed(f.clone()));
                        t.open = None;
                        t.history.clear();
                    }
                }
            }
        }
        out
    }

    #[allow(clippy::type_complexity)]
    fn service_alarms(
        &self,
        svc: &str,
        inst: &BTreeMap<InstanceKey, InstAcc>,
        zprobe: &BTreeMap<ProbeKey, (u64, u64)>,
        rprobe: &BTreeMap<ProbeKey, (u64, u64)>,
        raw: &mut Raw,
        out: &mut Vec<Candidate>,
    ) {
        let cfg = &self.cfg;
        // Per-zone and per-instance numbers for this service.
        let mut zones: BTreeMap<&str, (u64, u64, Vec<(&str, &InstAcc)>)> = BTreeMap::new();
        for (k, a) in inst {
            if k.service != svc {
                continue;
            }
            let e = zones.entry(k.zone.as_str()).or_default();
            e.0 += a.requests;
            e.1 += a.failures;
            e.2.push((k.instance.as_str(), a));
        }
        let lat = |a: &InstAcc| {
            if a.lat_weight == 0 {
                None
            } else {
                Some(a.lat_sum / a.lat_weight as f64)
            }
        };
        let measured: Vec<&str> = zones
            .iter()
            .filter(|(_, v)| v.0 >= cfg.min_requests)
            .map(|(z, _)| *z)
            .collect();
        let rate = |z: &str| {
            let v = &zones[z];
            v.1 as f64 / v.0.max(1) as f64
        };
        let zone_lat = |z: &str| {
            stats::median(
                &zones[z]
                    .2
                    .iter()
                    .filter_map(|(_, a)| lat(a))
                    .collect::<Vec<_>>(),
            )
        };
        let errors: Vec<u64> = measured.iter().map(|z| zones[z].1).collect();
        let totals: Vec<u64> = measured.iter().map(|z| zones[z].0).collect();
        let chi = stats::chi_squared_p(&errors, &totals);
        let region_of = |z: &str| self.zone_region.get(z).cloned().unwrap_or_default();
        let mut zone_evidence: BTreeMap<(String, &str), serde_json::Value> = BTreeMap::new();

        for z in &measured {
            let peers: Vec<&str> = measured.iter().copied().filter(|p| p != z).collect();
            if peers.is_empty() {
                continue;
            }
            // Errors.
            let peer_rates: Vec<f64> = peers.iter().map(|p| rate(p)).collect();
            let med = stats::median(&peer_rates).unwrap_or(0.0);
            let r = rate(z);
            let excess = r - med;
            let (stands_out, mad) = cfg.outlier_method.judge(r, &peer_rates, cfg.mad_z);
            let outlier =
                excess >= cfg.error_excess && chi.is_some_and(|p| p <= cfg.chi_p) && stands_out;
            raw.insert(format!("zone_outlier:errors:{svc}:{z}"), outlier);
            // Affected: above the peers in most seconds of the window, not just overall.
            let affected: Vec<&str> = zones[z]
                .2
                .iter()
                .filter(|(_, a)| {
                    let bad = a
                        .seconds
                        .iter()
                        .filter(|(q, f)| *q > 0 && *f as f64 / *q as f64 - med >= cfg.error_excess)
                        .count();
                    a.requests >= cfg.instance_min_requests && bad * 2 > a.seconds.len()
                })
                .map(|(i, _)| *i)
                .collect();
            let need = cfg.min_instances_affected.min(zones[z].2.len()).max(1);
            raw.insert(
                format!("zone_affected:errors:{svc}:{z}"),
                affected.len() >= need,
            );
            zone_evidence.insert(
                ("errors".into(), z),
                json!({
                    "error_rate": r, "requests": zones[z].0, "peer_median": med,
                    "peers": peers.iter().map(|p| (p.to_string(), rate(p))).collect::<BTreeMap<_, _>>(),
                    "chi_squared_p": chi, "mad_z": mad, "instances_affected": affected,
                    "window_s": cfg.window_s,
                }),
            );
            // Latency.
            let peer_lats: Vec<f64> = peers.iter().filter_map(|p| zone_lat(p)).collect();
            if let (Some(l), Some(pm)) = (zone_lat(z), stats::median(&peer_lats)) {
                let (stands_out, mad) = cfg.outlier_method.judge(l, &peer_lats, cfg.mad_z);
                let outlier =
                    l - pm >= cfg.latency_excess_ms && l >= cfg.latency_ratio * pm && stands_out;
                raw.insert(format!("zone_outlier:latency:{svc}:{z}"), outlier);
                let affected: Vec<&str> = zones[z]
                    .2
                    .iter()
                    .filter(|(_, a)| lat(a).is_some_and(|x| x - pm >= cfg.latency_excess_ms / 2.0))
                    .map(|(i, _)| *i)
                    .collect();
                raw.insert(
                    format!("zone_affected:latency:{svc}:{z}"),
                    affected.len() >= need,
                );
                zone_evidence.insert(
                    ("latency".into(), z),
                    json!({
                        "p99_ms": l, "peer_median_p99_ms": pm,
                        "peers": peers.iter().filter_map(|p| zone_lat(p).map(|x| (p.to_string(), x))).collect::<BTreeMap<_, _>>(),
                        "mad_z": mad, "instances_affected": affected, "window_s": cfg.window_s,
                    }),
                );
            }
        }

        // Regions: most of a region's zones are outliers.
        let mut regions: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for z in &measured {
            regions.entry(region_of(z)).or_default().push(z);
        }
        for kind in ["errors", "latency"] {
            for (r, zs) in &regions {
                let all_zones_of_r: Vec<&str> = zones
                    .keys()
                    .copied()
                    .filter(|z| region_of(z) == *r)
                    .collect();
                let k = all_zones_of_r.len().div_ceil(2).max(1);
                // One zone alone is a zone problem, never a region one.
                let expr = if all_zones_of_r.len() < 2 {
                    Expr::All(vec![])
                } else {
                    Expr::AtLeast(
                        k,
                        zs.iter()
                            .map(|z| {
                                Expr::All(vec![
                                    Expr::alarm(format!("zone_outlier:{kind}:{svc}:{z}")),
                                    Expr::alarm(format!("zone_affected:{kind}:{svc}:{z}")),
                                ])
                            })
                            .collect(),
                    )
                };
                let on = all_zones_of_r.len() >= 2 && expr.eval(raw);
                raw.insert(format!("region_wide:{kind}:{svc}:{r}"), on);
                // Which zones are impaired and which are not, so the answer
                // can be the smallest one that removes the fault.
                let impaired: Vec<&str> = all_zones_of_r
                    .iter()
                    .copied()
                    .filter(|z| {
                        raw.get(&format!("zone_outlier:{kind}:{svc}:{z}")).copied() == Some(true)
                            && raw.get(&format!("zone_affected:{kind}:{svc}:{z}")).copied()
                                == Some(true)
                    })
                    .collect();
                let healthy: Vec<&str> = all_zones_of_r
                    .iter()
                    .copied()
                    .filter(|z| !impaired.contains(z))
                    .collect();
                let ev = json!({
                    "zones": zs.iter().map(|z| (z.to_string(), zone_evidence.get(&(kind.to_string(), *z)).cloned().unwrap_or_default())).collect::<BTreeMap<_, _>>(),
                    "impaired_zones": impaired,
                    "healthy_zones": healthy,
                    "zones_needed": k,
                });
                // Failing writes with working reads are the write path's,
                // answered with read-only mode, not by moving the region.
                out.push((
                    TrackKey::new(svc, format!("region:{r}"), kind),
                    Expr::All(vec![
                        Expr::alarm(format!("region_wide:{kind}:{svc}:{r}")),
                        Expr::negate(Expr::alarm(format!("write_path:{svc}:{r}"))),
                        Expr::negate(Expr::alarm(format!("open:{svc}:region:{r}:write_path"))),
                    ]),
                    ev,
                ));
            }
            for z in &measured {
                let r = region_of(z);
                let expr = Expr::All(vec![
                    Expr::alarm(format!("zone_outlier:{kind}:{svc}:{z}")),
                    Expr::alarm(format!("zone_affected:{kind}:{svc}:{z}")),
                    Expr::negate(Expr::alarm(format!("region_wide:{kind}:{svc}:{r}"))),
                    Expr::negate(Expr::alarm(format!("open:{svc}:region:{r}:{kind}"))),
                    Expr::negate(Expr::alarm(format!("write_path:{svc}:{r}"))),
                    Expr::negate(Expr::alarm(format!("open:{svc}:region:{r}:write_path"))),
                ]);
                let ev = zone_evidence
                    .get(&(kind.to_string(), *z))
                    .cloned()
                    .unwrap_or_default();
                out.push((TrackKey::new(svc, format!("zone:{z}"), kind), expr, ev));
            }
        }

        // Instances: outliers among the region's instances, when their zone
        // as a whole is not.
        for z in zones.keys() {
            let r = region_of(z);
            let peers_all: Vec<(&str, &InstAcc)> = zones
                .iter()
                .filter(|(pz, _)| region_of(pz) == r)
                .flat_map(|(_, v)| v.2.iter().copied())
                .collect();
            for (i, a) in &zones[z].2 {
                if a.requests < cfg.instance_min_requests {
                    continue;
                }
                let others: Vec<f64> = peers_all
                    .iter()
                    .filter(|(n, pa)| n != i && pa.requests >= cfg.instance_min_requests)
                    .map(|(_, pa)| pa.failures as f64 / pa.requests as f64)
                    .collect();
                let Some(med) = stats::median(&others) else {
                    continue;
                };
                let r_i = a.failures as f64 / a.requests as f64;
                let bad_secs = a
                    .seconds
                    .iter()
                    .filter(|(q, f)| {
                        *q > 0 && *f as f64 / *q as f64 - med >= cfg.instance_error_excess
                    })
                    .count();
                let outlier =
                    r_i - med >= cfg.instance_error_excess && bad_secs * 2 > a.seconds.len();
                raw.insert(format!("instance_outlier:errors:{svc}:{i}"), outlier);
                // A zone finding covers its instances; one bad instance alone
                // makes the zone an outlier but not impaired, so it is named here.
                let expr = Expr::All(vec![
                    Expr::alarm(format!("instance_outlier:errors:{svc}:{i}")),
                    Expr::negate(Expr::All(vec![
                        Expr::alarm(format!("zone_outlier:errors:{svc}:{z}")),
                        Expr::alarm(format!("zone_affected:errors:{svc}:{z}")),
                    ])),
                    Expr::negate(Expr::alarm(format!("region_wide:errors:{svc}:{r}"))),
                    Expr::negate(Expr::alarm(format!("open:{svc}:zone:{z}:errors"))),
                    Expr::negate(Expr::alarm(format!("open:{svc}:region:{r}:errors"))),
                    Expr::negate(Expr::alarm(format!("open:{svc}:region:{r}:write_path"))),
                ]);
                let ev = json!({"error_rate": r_i, "requests": a.requests, "peer_median": med, "zone": z, "window_s": cfg.window_s});
                out.push((
                    TrackKey::new(svc, format!("instance:{i}"), "errors"),
                    expr,
                    ev,
                ));
                // Latency: slower than the region's other instances by the
                // zone margins, when its zone as a whole is not.
                let other_lats: Vec<f64> = peers_all
                    .iter()
                    .filter(|(n, pa)| n != i && pa.requests >= cfg.instance_min_requests)
                    .filter_map(|(_, pa)| lat(pa))
                    .collect();
                if let (Some(l), Some(pm)) = (lat(a), stats::median(&other_lats)) {
                    let on = l - pm >= cfg.latency_excess_ms && l >= cfg.latency_ratio * pm;
                    raw.insert(format!("instance_outlier:latency:{svc}:{i}"), on);
                    let expr = Expr::All(vec![
                        Expr::alarm(format!("instance_outlier:latency:{svc}:{i}")),
                        Expr::negate(Expr::All(vec![
                            Expr::alarm(format!("zone_outlier:latency:{svc}:{z}")),
                            Expr::alarm(format!("zone_affected:latency:{svc}:{z}")),
                        ])),
                        Expr::negate(Expr::alarm(format!("region_wide:latency:{svc}:{r}"))),
                        Expr::negate(Expr::alarm(format!("open:{svc}:zone:{z}:latency"))),
                        Expr::negate(Expr::alarm(format!("open:{svc}:region:{r}:latency"))),
                    ]);
                    let ev = json!({"p99_ms": l, "peer_median_p99_ms": pm, "zone": z, "window_s": cfg.window_s});
                    out.push((
                        TrackKey::new(svc, format!("instance:{i}"), "latency"),
                        expr,
                        ev,
                    ));
                }
            }
        }

        // Links between zones, from the probe matrix.
        let fail = |m: &BTreeMap<ProbeKey, (u64, u64)>, a: &str, b: &str| {
            m.get(&ProbeKey {
                service: svc.to_string(),
                from: a.to_string(),
                to: b.to_string(),
            })
            .filter(|(_, n)| *n >= cfg.probe_min)
            .map(|(ok, n)| 1.0 - *ok as f64 / *n as f64)
        };
        let srcs: BTreeSet<&str> = zprobe
            .keys()
            .filter(|k| k.service == svc)
            .map(|k| k.from.as_str())
            .collect();
        let dsts: BTreeSet<&str> = zprobe
            .keys()
            .filter(|k| k.service == svc)
            .map(|k| k.to.as_str())
            .collect();
        for x in &srcs {
            for y in &dsts {
                if x == y {
                    continue;
                }
                let Some(f) = fail(zprobe, x, y) else {
                    continue;
                };
                let from_x: Vec<f64> = dsts
                    .iter()
                    .filter(|d| *d != y)
                    .filter_map(|d| fail(zprobe, x, d))
                    .collect();
                let to_y: Vec<f64> = srcs
                    .iter()
                    .filter(|s| *s != x)
                    .filter_map(|s| fail(zprobe, s, y))
                    .collect();
                let ok_side = |v: &[f64]| {
                    !v.is_empty() && stats::mean(v).unwrap_or(1.0) <= cfg.probe_peer_max_fail
                };
                let on = f >= cfg.probe_fail_ratio && ok_side(&from_x) && ok_side(&to_y);
                let name = format!("link:{x}->{y}");
                raw.insert(format!("link_impaired:{svc}:{x}->{y}"), on);
                let ev = json!({"fail_ratio": f, "source_to_others": from_x, "others_to_target": to_y, "window_s": cfg.window_s});
                out.push((
                    TrackKey::new(svc, name, "unreachable"),
                    Expr::alarm(format!("link_impaired:{svc}:{x}->{y}")),
                    ev,
                ));
            }
        }
        // Links between regions: a region reaches its own zones but not the
        // other region's edges, while that region serves its own clients.
        for (k, (ok, n)) in rprobe {
            if k.service != svc || *n < cfg.probe_min {
                continue;
            }
            let (from, to) = (&k.from, &k.to);
            let f = 1.0 - *ok as f64 / *n as f64;
            let local_ok = |r: &str| {
                let v: Vec<f64> = zprobe
                    .iter()
                    .filter(|(k, _)| {
                        k.service == svc && region_of(&k.from) == r && region_of(&k.to) == r
                    })
                    .filter(|(_, (_, n))| *n >= cfg.probe_min)
                    .map(|(_, (ok, n))| 1.0 - *ok as f64 / *n as f64)
                    .collect();
                !v.is_empty() && stats::mean(&v).unwrap_or(1.0) <= cfg.probe_peer_max_fail
            };
            let on = f >= cfg.probe_fail_ratio && local_ok(from) && local_ok(to);
            raw.insert(format!("link_impaired:{svc}:{from}->{to}"), on);
            let ev = json!({"fail_ratio": f, "probes": n, "window_s": cfg.window_s});
            out.push((
                TrackKey::new(svc, format!("link:{from}->{to}"), "unreachable"),
                Expr::alarm(format!("link_impaired:{svc}:{from}->{to}")),
                ev,
            ));
        }
    }
}
