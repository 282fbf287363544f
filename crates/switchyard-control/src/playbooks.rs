//! Playbooks: findings in, control changes out — data-plane actions first.
//!
//! - a zone finding → a zonal shift with an expiry; the shift ends only once
//!   the zone is *known* healthy — its findings closed and its heartbeats
//!   clean — for the hold. A zone that gets no traffic is unknown, not
//!   healthy. Where `failback_canary_percent` is set, a canary share of real
//!   traffic then goes back first, and the shift ends only once that share
//!   has been served as well as the zone's peers for `failback_canary_ms`
//!   (heartbeats are synthetic: a fault that only real requests meet passes
//!   them). A canary that fails is pulled back at once and counts as an
//!   undone failback. Each failback that had to be undone (the zone
//!   mitigated again within `undone_window_ms`) doubles the next hold, up to
//!   `max_failback_hold_ms`, as ejection times grow;
//! - a region finding where some zones are impaired and others are not →
//!   the smallest answer: shift the impaired zones, keep the healthy one
//!   serving, and say so (the safety rules judge the shifts like any other,
//!   and a refusal names the rule in the way);
//! - a region finding with every zone impaired → a gradual evacuation, `evacuation_steps` steps
//!   `evacuation_step_ms` apart, so the other regions can scale and warm
//!   caches while edges forward; back in once known healthy for the hold;
//! - a cut link between regions → no evacuation: both sides go to failover
//!   mode and serve locally, until the link is back;
//! - an impaired write path in a region (its writes fail, its reads work) →
//!   read-only mode for the service there, so reads keep being served and
//!   writes are turned away at once instead of timing out; off again once
//!   the write heartbeats have been clean for the hold.
//!
//! Pure: events and time in, planned changes out. The control plane applies
//! them through the safety rules like any other change.

use std::collections::BTreeMap;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_detect::evidence::{Canary, Evidence};
use switchyard_detect::{Engine, Event, Finding};
pub use switchyard_model::finding::Mitigation;
use switchyard_model::Op;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlaybookConfig {
    /// Expiry of a playbook's zonal shift (renewed while the finding stays).
    pub shift_for_ms: u64,
    /// How long a place must stay clear before traffic returns.
    pub failback_hold_ms: u64,
    /// The longest the hold grows to after undone failbacks.
    pub max_failback_hold_ms: u64,
    /// A place mitigated again within this long after its failback counts
    /// the failback as undone; after twice this long without one the count
    /// starts over.
    pub undone_window_ms: u64,
    pub evacuation_steps: u32,
    pub evacuation_step_ms: u64,
    /// Share of a shifted zone's traffic sent back as a canary once its
    /// heartbeats have been clean for the hold; 0 fails back at once.
    pub failback_canary_percent: f64,
    /// How long the canary must be served as well as the zone's peers.
    pub failback_canary_ms: u64,
    /// Requests the canary must have served to be called healthy.
    pub failback_canary_min_requests: u64,
}

impl PlaybookConfig {
    /// Every problem, each as `path.field: message`.
    pub fn validate(&self, path: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let p = self.failback_canary_percent;
        if !(p.is_finite() && (0.0..=switchyard_model::ops::MAX_CANARY_PERCENT).contains(&p)) {
            errs.push(format!(
                "{path}.failback_canary_percent: between 0 (no canary) and {}, got {p}",
                switchyard_model::ops::MAX_CANARY_PERCENT
            ));
        }
        if p > 0.0 && self.failback_canary_ms == 0 {
            errs.push(format!(
                "{path}.failback_canary_ms: must be above 0 when a canary is configured"
            ));
        }
        let longest = switchyard_model::ops::LONGEST_LEASE.as_millis() as u64;
        if self.shift_for_ms == 0 || self.shift_for_ms > longest {
            errs.push(format!(
                "{path}.shift_for_ms: must be above 0 and at most {longest} (366 days), got {}",
                self.shift_for_ms
            ));
        }
        if self.max_failback_hold_ms < self.failback_hold_ms {
            errs.push(format!(
                "{path}.max_failback_hold_ms: must be at least failback_hold_ms ({}), got {}",
                self.failback_hold_ms, self.max_failback_hold_ms
            ));
        }
        if self.evacuation_steps == 0 {
            errs.push(format!("{path}.evacuation_steps: at least 1, got 0"));
        }
        if self.evacuation_step_ms == 0 {
            errs.push(format!(
                "{path}.evacuation_step_ms: must be above 0: the other regions need time to scale"
            ));
        }
        if p > 0.0 && self.failback_canary_min_requests == 0 {
            errs.push(format!(
                "{path}.failback_canary_min_requests: at least 1: no requests is no evidence"
            ));
        }
        errs
    }

    fn canary(&self) -> bool {
        self.failback_canary_percent > 0.0
    }
}

impl Default for PlaybookConfig {
    fn default() -> Self {
        PlaybookConfig {
            shift_for_ms: 30 * 60 * 1000,
            failback_hold_ms: 30_000,
            max_failback_hold_ms: 30 * 60 * 1000,
            undone_window_ms: 10 * 60 * 1000,
            evacuation_steps: 4,
            evacuation_step_ms: 10_000,
            failback_canary_percent: 0.0,
            failback_canary_ms: 60_000,
            failback_canary_min_requests: 100,
        }
    }
}

/// The playbooks by name, as the audit log records them.
pub const ZONE_SHIFT: &str = "zone-shift";
pub const REGION_EVACUATION: &str = "region-evacuation";
pub const LINK_FAILOVER: &str = "link-failover";
pub const WRITE_PATH_READ_ONLY: &str = "write-path-read-only";

/// A change a playbook wants: an operation like anyone's, applied through the
/// safety rules, with the playbook's name and its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub playbook: &'static str,
    pub op: Op,
    pub why: String,
}

impl Planned {
    fn new(playbook: &'static str, op: Op, why: String) -> Planned {
        Planned { playbook, op, why }
    }
}

pub struct Playbooks {
    pub cfg: PlaybookConfig,
    /// The topology's regions: a link between two of them is a region link.
    regions: Vec<String>,
    active: BTreeMap<(String, String), Mitigation>,
    /// Per mitigated place: when traffic last went back, and how many
    /// failbacks in a row were undone.
    failed_back: BTreeMap<(String, String), (u64, u32)>,
    /// The safety rules' flip wait: a canary is judged no sooner, so the
    /// shift that pulls it back is a change the rules allow.
    flip_wait_ms: u64,
}

/// What the playbooks may ask of detection before they end a mitigation.
pub trait Knowledge {
    /// Since when a zone or region (`zone:NAME`, `region:NAME`) of a
    /// service has been known healthy without a break, or `None`.
    fn clean_since(&self, service: &str, scope: &str) -> Option<u64>;
    /// Real traffic into `zone` since `since_ms`, judged against its peers.
    fn canary(&self, service: &str, zone: &str, since_ms: u64, min_requests: u64) -> Canary;
}

impl Knowledge for Engine {
    fn clean_since(&self, service: &str, scope: &str) -> Option<u64> {
        Engine::clean_since(self, service, scope)
    }
    fn canary(&self, service: &str, zone: &str, since_ms: u64, min_requests: u64) -> Canary {
        Engine::canary(self, service, zone, since_ms, min_requests)
    }
}

fn place(scope: &str) -> Option<(&str, &str)> {
    scope.split_once(':')
}

/// Write-path findings share their region's scope but get their own
/// mitigation (read-only mode), tracked apart from an evacuation.
const WRITE_PATH: &str = "write_path";

/// Findings of SLO burn on a route (`slo_burn:ROUTE`).
const SLO_BURN: &str = "slo_burn";

fn mitigation_key(f: &Finding) -> (String, String) {
    let scope = if f.kind == WRITE_PATH {
        format!("{}#{WRITE_PATH}", f.scope)
    } else {
        f.scope.clone()
    };
    (f.service.clone(), scope)
}

impl Playbooks {
    pub fn new(cfg: PlaybookConfig, regions: Vec<String>) -> Playbooks {
        Playbooks {
            cfg,
            regions,
            active: BTreeMap::new(),
            failed_back: BTreeMap::new(),
            flip_wait_ms: 0,
        }
    }

    /// Judges canaries no sooner than the safety rules' flip wait.
    pub fn with_flip_wait(mut self, ms: u64) -> Playbooks {
        self.flip_wait_ms = ms;
        self
    }

    pub fn active(&self) -> Vec<&Mitigation> {
        self.active.values().collect()
    }

    fn why(f: &Finding) -> String {
        format!(
            "finding {} ({}) since {}",
            f.scope,
            f.kind,
            switchyard_model::time::human_utc(f.start_ms as i64)
        )
    }

    /// Reacts to a finding opening or closing.
    pub fn on_event(&mut self, ev: &Event, now_ms: u64) -> Vec<Planned> {
        let mut out = Vec::new();
        match ev {
            Event::Opened(f) => {
                let Some((level, name)) = place(&f.scope) else {
                    return out;
                };
                if f.service.is_empty() || !matches!(level, "zone" | "region" | "link") {
                    return out;
                }
                // An SLO burn is for people (an incident, a ticket or a
                // page): a route failing a little in a region names nothing
                // that moving traffic would fix, and evacuating a region for
                // it would hurt more users than it helps.
                if f.kind.starts_with(SLO_BURN) {
                    return out;
                }
                let key = mitigation_key(f);
                if let Some(m) = self.active.get_mut(&key) {
                    // Still (or again) impaired: keep the mitigation, cancel the failback.
                    m.open.push(f.kind.clone());
                    m.clear_since_ms = None;
                    if m.canary_since_ms.is_some() {
                        let why = format!("{} during the canary", Self::why(f));
                        out.extend(self.pull_canary(&key, now_ms, why));
                    }
                    return out;
                }
                let undone = self.undone_failbacks(&key, now_ms);
                let mut m = Mitigation {
                    scope: key.1.clone(),
                    started_ms: now_ms,
                    open: vec![f.kind.clone()],
                    clear_since_ms: None,
                    step: 0,
                    next_step_ms: None,
                    hold_ms: self.hold(undone),
                    failbacks_undone: undone,
                    zones: Vec::new(),
                    canary_since_ms: None,
                };
                match level {
                    "region" if f.kind == WRITE_PATH => out.push(Planned::new(
                        WRITE_PATH_READ_ONLY,
                        Op::ReadOnly {
                            service: f.service.clone(),
                            region: Some(name.to_string()),
                            on: true,
                        },
                        Self::why(f),
                    )),
                    "zone" => out.push(Planned::new(
                        ZONE_SHIFT,
                        Op::Shift {
                            service: f.service.clone(),
                            zone: name.to_string(),
                            for_: Duration::from_millis(self.cfg.shift_for_ms),
                        },
                        Self::why(f),
                    )),
                    "region" => {
                        let list = |k: &str| -> Vec<String> {
                            f.evidence[k]
                                .as_array()
                                .map(|v| {
                                    v.iter()
                                        .filter_map(|z| z.as_str().map(str::to_string))
                                        .collect()
                                })
                                .unwrap_or_default()
                        };
                        let (impaired, healthy) = (list("impaired_zones"), list("healthy_zones"));
                        if !impaired.is_empty() && !healthy.is_empty() {
                            for z in &impaired {
                                out.push(Planned::new(
                                    ZONE_SHIFT,
                                    Op::Shift {
                                        service: f.service.clone(),
                                        zone: z.clone(),
                                        for_: Duration::from_millis(self.cfg.shift_for_ms),
                                    },
                                    format!(
                                        "{}: zones {} impaired, {} healthy: shifting the impaired \
                                         zones (the smallest action that removes the fault) rather \
                                         than evacuating the region and draining healthy capacity",
                                        Self::why(f),
                                        impaired.join(", "),
                                        healthy.join(", ")
                                    ),
                                ));
                            }
                            m.zones = impaired;
                        } else {
                            m.next_step_ms = Some(now_ms);
                        }
                    }
                    "link" => {
                        // A cut between regions is not a region failure:
                        // evacuating would send traffic into the cut.
                        let Some((from, to)) = name.split_once("->") else {
                            return out;
                        };
                        if !(self.regions.iter().any(|r| r == from)
                            && self.regions.iter().any(|r| r == to))
                        {
                            // Between zones: the zone findings handle it.
                            return out;
                        }
                        out.push(Planned::new(
                            LINK_FAILOVER,
                            Op::FailoverMode {
                                service: f.service.clone(),
                                regions: vec![from.to_string(), to.to_string()],
                                on: true,
                            },
                            Self::why(f),
                        ));
                    }
                    _ => {}
                }
                self.active.insert(key, m);
            }
            Event::Closed(f) => {
                let key = mitigation_key(f);
                if let Some(m) = self.active.get_mut(&key) {
                    if let Some(i) = m.open.iter().position(|k| *k == f.kind) {
                        m.open.remove(i);
                    }
                    if m.open.is_empty() {
                        m.clear_since_ms = Some(now_ms);
                    }
                }
            }
        }
        out
    }

    /// Failbacks into `key` undone in a row, counting a new mitigation now:
    /// one more if traffic went back there within `undone_window_ms`, none
    /// if the last failback is long past.
    fn undone_failbacks(&mut self, key: &(String, String), now_ms: u64) -> u32 {
        match self.failed_back.get(key) {
            Some((at, n)) if now_ms.saturating_sub(*at) <= self.cfg.undone_window_ms => n + 1,
            Some((at, n)) if now_ms.saturating_sub(*at) <= 2 * self.cfg.undone_window_ms => *n,
            _ => 0,
        }
    }

    fn hold(&self, undone: u32) -> u64 {
        self.cfg
            .failback_hold_ms
            .saturating_mul(1u64 << undone.min(20))
            .min(self.cfg.max_failback_hold_ms.max(self.cfg.failback_hold_ms))
    }

    /// The zones a zone-sized mitigation shifted: its own zone, or the
    /// impaired zones of a region it answered without evacuating.
    fn shifted_zones(scope: &str, m: &Mitigation) -> Vec<String> {
        match place(scope) {
            Some(("zone", z)) => vec![z.to_string()],
            Some(("region", _)) => m.zones.clone(),
            _ => Vec::new(),
        }
    }

    /// A canary that failed: its zones are shifted away again, the failback
    /// counts as undone (the hold doubles) and the hold starts over.
    fn pull_canary(&mut self, key: &(String, String), now_ms: u64, why: String) -> Vec<Planned> {
        let for_ = Duration::from_millis(self.cfg.shift_for_ms);
        let Some(undone) = self.active.get(key).map(|m| m.failbacks_undone + 1) else {
            return Vec::new();
        };
        let hold = self.hold(undone);
        let Some(m) = self.active.get_mut(key) else {
            return Vec::new();
        };
        m.canary_since_ms = None;
        m.failbacks_undone = undone;
        m.hold_ms = hold;
        m.clear_since_ms = m.clear_since_ms.map(|_| now_ms);
        Self::shifted_zones(&key.1, m)
            .into_iter()
            .map(|zone| {
                Planned::new(
                    ZONE_SHIFT,
                    Op::Shift {
                        service: key.0.clone(),
                        zone,
                        for_,
                    },
                    format!(
                        "{why}: canary failed, shifted away again; the hold is now {} s",
                        hold / 1000
                    ),
                )
            })
            .collect()
    }

    /// Takes evacuation steps that are due and fails back what has been
    /// known healthy long enough: zones and regions on the engine's
    /// evidence (`clean_since`, then a canary where configured), links and
    /// write paths once their findings (which their probes keep measuring)
    /// have been closed for the hold.
    pub fn tick(&mut self, now_ms: u64, known: &dyn Knowledge) -> Vec<Planned> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        let mut pull = Vec::new();
        let canary_pct = self
            .cfg
            .canary()
            .then_some(self.cfg.failback_canary_percent);
        for ((svc, key), m) in self.active.iter_mut() {
            let (scope, write_path) = match key.strip_suffix(&format!("#{WRITE_PATH}")) {
                Some(s) => (s, true),
                None => (key.as_str(), false),
            };
            let Some((level, name)) = place(scope) else {
                continue;
            };
            if level == "region" && !write_path && m.clear_since_ms.is_none() {
                if let Some(t) = m.next_step_ms.filter(|t| *t <= now_ms) {
                    if m.step < self.cfg.evacuation_steps {
                        m.step += 1;
                        let w = 1.0 - m.step as f64 / self.cfg.evacuation_steps as f64;
                        out.push(Planned::new(
                            REGION_EVACUATION,
                            Op::RegionWeight {
                                service: svc.clone(),
                                region: name.to_string(),
                                weight: w,
                            },
                            format!(
                                "region finding: evacuation step {} of {}",
                                m.step, self.cfg.evacuation_steps
                            ),
                        ));
                        m.next_step_ms = Some(t + self.cfg.evacuation_step_ms);
                    }
                }
            }
            let zones = if write_path {
                Vec::new()
            } else {
                Self::shifted_zones(scope, m)
            };
            // A canary in progress: pulled back the moment its traffic
            // fails, whatever the heartbeats say (but not before the flip
            // wait, so the rules let the pull through).
            if m.canary_since_ms
                .is_some_and(|since| now_ms < since + self.flip_wait_ms)
            {
                continue;
            }
            let canary = m.canary_since_ms.map(|since| {
                let v: Vec<(&String, Canary)> = zones
                    .iter()
                    .map(|z| {
                        (
                            z,
                            known.canary(svc, z, since, self.cfg.failback_canary_min_requests),
                        )
                    })
                    .collect();
                (since, v)
            });
            if let Some((_, v)) = &canary {
                if let Some((z, c)) = v.iter().find(|(_, c)| c.verdict == Evidence::Bad) {
                    pull.push((
                        (svc.clone(), key.clone()),
                        format!(
                            "zone {z}: {} of {} canary requests failed, request-weighted p99 {:.0} ms, worse than its peers",
                            c.failures, c.requests, c.mean_p99_ms
                        ),
                    ));
                    continue;
                }
            }
            let hold = m.hold_ms.max(self.cfg.failback_hold_ms);
            let since = match (level, write_path) {
                ("zone" | "region", false) => m
                    .clear_since_ms
                    .and(known.clean_since(svc, scope))
                    .map(|c| c.max(m.clear_since_ms.unwrap_or(c))),
                _ => m.clear_since_ms,
            };
            let Some(c) = since else {
                continue;
            };
            if now_ms.saturating_sub(c) < hold {
                continue;
            }
            let mut why = match (level, write_path) {
                ("zone" | "region", false) => format!(
                    "{scope} known healthy for {} s: findings closed and heartbeats clean{}",
                    hold / 1000,
                    match m.failbacks_undone {
                        0 => String::new(),
                        1 => " (hold doubled once: an earlier failback undone)".into(),
                        n => format!(" (hold doubled {n} times: earlier failbacks undone)"),
                    }
                ),
                _ => format!("{scope} clear for {} s", hold / 1000),
            };
            if let (Some(pct), false) = (canary_pct, zones.is_empty()) {
                match &canary {
                    None => {
                        m.canary_since_ms = Some(now_ms);
                        for z in &zones {
                            out.push(Planned::new(
                                ZONE_SHIFT,
                                Op::ZoneCanary {
                                    service: svc.clone(),
                                    zone: z.clone(),
                                    percent: pct,
                                },
                                format!(
                                    "{why}; sending {pct} % of its traffic back as a canary for {} s before the failback",
                                    self.cfg.failback_canary_ms / 1000
                                ),
                            ));
                        }
                        continue;
                    }
                    Some((since, v)) => {
                        let clean = v.iter().all(|(_, c)| c.verdict == Evidence::Clean);
                        if !clean || now_ms.saturating_sub(*since) < self.cfg.failback_canary_ms {
                            continue;
                        }
                        let (n, failed) = v
                            .iter()
                            .fold((0, 0), |(n, f), (_, c)| (n + c.requests, f + c.failures));
                        why = format!(
                            "{why}; canary of {pct} % served as well as its peers for {} s ({failed} of {n} requests failed)",
                            now_ms.saturating_sub(*since) / 1000
                        );
                    }
                }
            }
            match level {
                "region" if write_path => out.push(Planned::new(
                    WRITE_PATH_READ_ONLY,
                    Op::ReadOnly {
                        service: svc.clone(),
                        region: Some(name.to_string()),
                        on: false,
                    },
                    why,
                )),
                "zone" | "region" if !zones.is_empty() => {
                    for z in &zones {
                        out.push(Planned::new(
                            ZONE_SHIFT,
                            Op::Unshift {
                                service: svc.clone(),
                                zone: z.clone(),
                            },
                            why.clone(),
                        ));
                    }
                }
                "region" => out.push(Planned::new(
                    REGION_EVACUATION,
                    Op::RegionBack {
                        service: svc.clone(),
                        region: name.to_string(),
                    },
                    why,
                )),
                "link" => {
                    if let Some((from, to)) = name.split_once("->") {
                        out.push(Planned::new(
                            LINK_FAILOVER,
                            Op::FailoverMode {
                                service: svc.clone(),
                                regions: vec![from.to_string(), to.to_string()],
                                on: false,
                            },
                            why,
                        ));
                    }
                }
                _ => {}
            }
            done.push((svc.clone(), key.clone()));
        }
        for (k, why) in pull {
            out.extend(self.pull_canary(&k, now_ms, why));
        }
        for k in done {
            if let Some(m) = self.active.remove(&k) {
                self.failed_back.insert(k, (now_ms, m.failbacks_undone));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What detection knows, the same of every place: clean since when
    /// (if at all), and how a canary is doing.
    struct Known {
        clean: Option<u64>,
        canary: Evidence,
    }

    impl Knowledge for Known {
        fn clean_since(&self, _: &str, _: &str) -> Option<u64> {
            self.clean
        }
        fn canary(&self, _: &str, _: &str, _: u64, _: u64) -> Canary {
            Canary {
                requests: 120,
                failures: if self.canary == Evidence::Bad { 30 } else { 0 },
                mean_p99_ms: 20.0,
                verdict: self.canary,
            }
        }
    }

    /// Every place known healthy since the start.
    const ALWAYS_CLEAN: Known = Known {
        clean: Some(0),
        canary: Evidence::Clean,
    };

    fn known(clean: Option<u64>) -> Known {
        Known {
            clean,
            canary: Evidence::Clean,
        }
    }

    fn finding(scope: &str, kind: &str) -> Finding {
        Finding {
            scope: scope.into(),
            kind: kind.into(),
            service: "catalog".into(),
            start_ms: 1_000,
            detected_ms: 3_000,
            end_ms: None,
            evidence: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_zone_finding_shifts_and_failback_waits_for_the_hold() {
        let mut p = Playbooks::new(
            PlaybookConfig::default(),
            vec!["us-east".into(), "eu-west".into()],
        );
        let out = p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), 10_000);
        assert!(
            matches!(&out[..], [Planned { op: Op::Shift { zone, for_, .. }, .. }] if zone == "us-east-a" && for_.as_millis() == 1_800_000),
            "{out:?}"
        );
        // A second kind of finding on the same zone changes nothing.
        assert!(p
            .on_event(&Event::Opened(finding("zone:us-east-a", "latency")), 11_000)
            .is_empty());
        p.on_event(&Event::Closed(finding("zone:us-east-a", "errors")), 20_000);
        assert!(
            p.tick(60_000, &ALWAYS_CLEAN).is_empty(),
            "latency is still open"
        );
        p.on_event(&Event::Closed(finding("zone:us-east-a", "latency")), 60_000);
        assert!(
            p.tick(89_000, &ALWAYS_CLEAN).is_empty(),
            "clear for less than the hold"
        );
        // Back again within the hold: the failback is cancelled.
        p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), 70_000);
        assert!(p.tick(100_000, &ALWAYS_CLEAN).is_empty());
        p.on_event(&Event::Closed(finding("zone:us-east-a", "errors")), 100_000);
        let out = p.tick(130_000, &ALWAYS_CLEAN);
        assert!(
            matches!(&out[..], [Planned { op: Op::Unshift { zone, .. }, .. }] if zone == "us-east-a"),
            "{out:?}"
        );
        assert!(p.active().is_empty());
    }

    #[test]
    fn a_region_finding_evacuates_in_steps() {
        let mut p = Playbooks::new(
            PlaybookConfig::default(),
            vec!["us-east".into(), "eu-west".into()],
        );
        assert!(p
            .on_event(&Event::Opened(finding("region:us-east", "errors")), 0)
            .is_empty());
        let weights: Vec<f64> = [0, 5_000, 10_000, 20_000, 30_000, 40_000]
            .iter()
            .flat_map(|t| p.tick(*t, &ALWAYS_CLEAN))
            .filter_map(|x| match x {
                Planned {
                    op: Op::RegionWeight { weight, .. },
                    ..
                } => Some(weight),
                _ => None,
            })
            .collect();
        assert_eq!(weights, vec![0.75, 0.5, 0.25, 0.0]);
        p.on_event(&Event::Closed(finding("region:us-east", "errors")), 50_000);
        assert!(matches!(
            &p.tick(80_000, &ALWAYS_CLEAN)[..],
            [Planned {
                op: Op::RegionBack { .. },
                ..
            }]
        ));
    }

    #[test]
    fn an_impaired_write_path_means_read_only_not_evacuation() {
        let mut p = Playbooks::new(
            PlaybookConfig::default(),
            vec!["us-east".into(), "eu-west".into()],
        );
        let out = p.on_event(&Event::Opened(finding("region:us-east", "write_path")), 0);
        assert!(
            matches!(&out[..], [Planned { op: Op::ReadOnly { on: true, region: Some(region), .. }, .. }] if region == "us-east"),
            "{out:?}"
        );
        assert!(
            [0, 10_000, 20_000, 40_000]
                .iter()
                .flat_map(|t| p.tick(*t, &ALWAYS_CLEAN))
                .all(|x| !matches!(x.op, Op::RegionWeight { .. })),
            "no evacuation step for a write-path finding"
        );
        p.on_event(
            &Event::Closed(finding("region:us-east", "write_path")),
            50_000,
        );
        assert!(
            p.tick(70_000, &ALWAYS_CLEAN).is_empty(),
            "clear for less than the hold"
        );
        let out = p.tick(80_000, &ALWAYS_CLEAN);
        assert!(
            matches!(&out[..], [Planned { op: Op::ReadOnly { on: false, region: Some(region), .. }, .. }] if region == "us-east"),
            "{out:?}"
        );
        assert!(p.active().is_empty());
    }

    #[test]
    fn a_cut_between_regions_means_failover_mode_not_evacuation() {
        let mut p = Playbooks::new(
            PlaybookConfig::default(),
            vec!["us-east".into(), "eu-west".into()],
        );
        let out = p.on_event(
            &Event::Opened(finding("link:us-east->eu-west", "unreachable")),
            0,
        );
        assert!(
            matches!(&out[..], [Planned { op: Op::FailoverMode { on: true, regions, .. }, .. }] if regions == &vec!["us-east".to_string(), "eu-west".to_string()])
        );
        assert!(p
            .tick(5_000, &ALWAYS_CLEAN)
            .iter()
            .all(|x| !matches!(x.op, Op::RegionWeight { .. })));
        // A link between two zones of one region is not a region matter.
        assert!(p
            .on_event(
                &Event::Opened(finding("link:us-east-a->us-east-b", "unreachable")),
                0
            )
            .is_empty());
    }

    #[test]
    fn a_zone_without_evidence_of_health_is_not_failed_back() {
        let mut p = Playbooks::new(PlaybookConfig::default(), vec!["us-east".into()]);
        p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), 0);
        p.on_event(&Event::Closed(finding("zone:us-east-a", "errors")), 10_000);
        let unknown = known(None);
        assert!(
            p.tick(600_000, &unknown).is_empty(),
            "findings closed is not enough: no heartbeats, no failback"
        );
        let since_500s = known(Some(500_000));
        assert!(
            p.tick(520_000, &since_500s).is_empty(),
            "clean for 20 s only"
        );
        let out = p.tick(530_000, &since_500s);
        assert!(
            matches!(&out[..], [Planned { op: Op::Unshift { .. }, why, .. }] if why.contains("heartbeats clean")),
            "{out:?}"
        );
    }

    #[test]
    fn each_undone_failback_doubles_the_hold() {
        let mut p = Playbooks::new(PlaybookConfig::default(), vec!["us-east".into()]);
        let mut t = 0;
        let mut holds = Vec::new();
        for _ in 0..4 {
            p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), t);
            holds.push(p.active()[0].hold_ms);
            p.on_event(
                &Event::Closed(finding("zone:us-east-a", "errors")),
                t + 5_000,
            );
            let clean = known(Some(t + 5_000));
            let mut back = None;
            for s in (t + 5_000..t + 600_000).step_by(1_000) {
                if !p.tick(s, &clean).is_empty() {
                    back = Some(s);
                    break;
                }
            }
            // Broken again a minute after traffic went back.
            t = back.expect("failed back") + 60_000;
        }
        assert_eq!(holds, vec![30_000, 60_000, 120_000, 240_000]);
        // Long after the last failback, the count starts over.
        p.on_event(
            &Event::Opened(finding("zone:us-east-a", "errors")),
            t + 3_600_000,
        );
        assert_eq!(p.active()[0].hold_ms, 30_000);
    }

    #[test]
    fn an_slo_burn_is_told_not_acted_on() {
        let mut p = Playbooks::new(PlaybookConfig::default(), vec!["us-east".into()]);
        assert!(p
            .on_event(
                &Event::Opened(finding("region:us-east", "slo_burn:put-item")),
                0
            )
            .is_empty());
        assert!(p.tick(60_000, &ALWAYS_CLEAN).is_empty());
        assert!(p.active().is_empty());
    }

    #[test]
    fn two_gray_zones_of_three_are_shifted_and_the_healthy_one_keeps_serving() {
        let mut p = Playbooks::new(
            PlaybookConfig::default(),
            vec!["us-east".into(), "eu-west".into()],
        );
        let mut f = finding("region:us-east", "errors");
        f.evidence = serde_json::json!({
            "impaired_zones": ["us-east-a", "us-east-b"],
            "healthy_zones": ["us-east-c"],
        });
        let out = p.on_event(&Event::Opened(f.clone()), 0);
        let shifted: Vec<&str> = out
            .iter()
            .filter_map(|x| match &x.op {
                Op::Shift { zone, .. } => Some(zone.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(shifted, ["us-east-a", "us-east-b"], "{out:?}");
        assert!(out[0].why.contains("us-east-c healthy"), "{}", out[0].why);
        assert!(
            [0, 10_000, 20_000, 40_000]
                .iter()
                .flat_map(|t| p.tick(*t, &ALWAYS_CLEAN))
                .all(|x| !matches!(x.op, Op::RegionWeight { .. })),
            "no evacuation step"
        );
        p.on_event(&Event::Closed(f), 50_000);
        let back: Vec<String> = p
            .tick(90_000, &ALWAYS_CLEAN)
            .into_iter()
            .filter_map(|x| match x.op {
                Op::Unshift { zone, .. } => Some(zone),
                _ => None,
            })
            .collect();
        assert_eq!(back, ["us-east-a", "us-east-b"]);
    }

    fn with_canary() -> PlaybookConfig {
        PlaybookConfig {
            failback_canary_percent: 10.0,
            failback_canary_ms: 20_000,
            ..PlaybookConfig::default()
        }
    }

    #[test]
    fn with_a_canary_the_shift_ends_only_after_real_traffic_was_served_well() {
        let mut p = Playbooks::new(with_canary(), vec!["us-east".into()]);
        p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), 0);
        p.on_event(&Event::Closed(finding("zone:us-east-a", "errors")), 10_000);
        // Heartbeats clean for the hold: a canary, not a failback.
        let out = p.tick(40_000, &ALWAYS_CLEAN);
        assert!(
            matches!(&out[..], [Planned { op: Op::ZoneCanary { zone, percent, .. }, why, .. }] if zone == "us-east-a" && *percent == 10.0 && why.contains("canary for 20 s")),
            "{out:?}"
        );
        assert_eq!(p.active()[0].canary_since_ms, Some(40_000));
        // Too few requests yet to call it healthy: no data is no failback.
        let unknown = Known {
            clean: Some(0),
            canary: Evidence::Unknown,
        };
        assert!(p.tick(70_000, &unknown).is_empty());
        // Clean, but not for long enough.
        assert!(p.tick(59_000, &ALWAYS_CLEAN).is_empty());
        let out = p.tick(60_000, &ALWAYS_CLEAN);
        assert!(
            matches!(&out[..], [Planned { op: Op::Unshift { .. }, why, .. }] if why.contains("0 of 120 requests failed")),
            "{out:?}"
        );
        assert!(p.active().is_empty());
    }

    #[test]
    fn a_failing_canary_is_pulled_back_and_the_hold_doubles() {
        let mut p = Playbooks::new(with_canary(), vec!["us-east".into()]).with_flip_wait(5_000);
        p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), 0);
        p.on_event(&Event::Closed(finding("zone:us-east-a", "errors")), 10_000);
        assert_eq!(p.tick(40_000, &ALWAYS_CLEAN).len(), 1, "canary");
        // Heartbeats still clean, but the real requests fail.
        let failing = Known {
            clean: Some(0),
            canary: Evidence::Bad,
        };
        assert!(
            p.tick(44_000, &failing).is_empty(),
            "judged only after the flip wait, when the rules let the pull through"
        );
        let out = p.tick(45_000, &failing);
        assert!(
            matches!(&out[..], [Planned { op: Op::Shift { zone, .. }, why, .. }] if zone == "us-east-a" && why.contains("30 of 120 canary requests failed") && why.contains("hold is now 60 s")),
            "{out:?}"
        );
        let m = p.active()[0].clone();
        assert_eq!(
            (m.canary_since_ms, m.failbacks_undone, m.hold_ms),
            (None, 1, 60_000)
        );
        // The hold starts over from the pull: no new canary 30 s later…
        assert!(p.tick(90_000, &ALWAYS_CLEAN).is_empty());
        // …but one after the doubled hold.
        assert!(matches!(
            &p.tick(105_000, &ALWAYS_CLEAN)[..],
            [Planned {
                op: Op::ZoneCanary { .. },
                ..
            }]
        ));
    }

    #[test]
    fn a_finding_during_the_canary_shifts_the_zone_away_again() {
        let mut p = Playbooks::new(with_canary(), vec!["us-east".into()]);
        p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), 0);
        p.on_event(&Event::Closed(finding("zone:us-east-a", "errors")), 10_000);
        p.tick(40_000, &ALWAYS_CLEAN);
        let out = p.on_event(&Event::Opened(finding("zone:us-east-a", "latency")), 43_000);
        assert!(
            matches!(&out[..], [Planned { op: Op::Shift { .. }, why, .. }] if why.contains("during the canary")),
            "{out:?}"
        );
        assert_eq!(p.active()[0].failbacks_undone, 1);
        // Still open: no failback, no canary.
        assert!(p.tick(200_000, &ALWAYS_CLEAN).is_empty());
    }

    #[test]
    fn two_shifted_zones_of_a_region_share_one_canary() {
        let mut p = Playbooks::new(with_canary(), vec!["us-east".into()]);
        let mut f = finding("region:us-east", "errors");
        f.evidence = serde_json::json!({
            "impaired_zones": ["us-east-a", "us-east-b"],
            "healthy_zones": ["us-east-c"],
        });
        p.on_event(&Event::Opened(f.clone()), 0);
        p.on_event(&Event::Closed(f), 10_000);
        let out = p.tick(40_000, &ALWAYS_CLEAN);
        let canaries: Vec<&str> = out
            .iter()
            .filter_map(|x| match &x.op {
                Op::ZoneCanary { zone, .. } => Some(zone.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(canaries, ["us-east-a", "us-east-b"]);
        assert_eq!(p.tick(60_000, &ALWAYS_CLEAN).len(), 2, "both unshifted");
    }

    #[test]
    fn a_canary_setting_out_of_range_is_refused_with_its_path() {
        let bad = PlaybookConfig {
            failback_canary_percent: 80.0,
            ..PlaybookConfig::default()
        };
        let errs = bad.validate("control.playbook");
        assert!(
            errs.len() == 1
                && errs[0].starts_with("control.playbook.failback_canary_percent:")
                && errs[0].contains("got 80"),
            "{errs:?}"
        );
        let none = PlaybookConfig {
            failback_canary_percent: 5.0,
            failback_canary_min_requests: 0,
            ..PlaybookConfig::default()
        };
        assert!(none.validate("p")[0].starts_with("p.failback_canary_min_requests"));
        assert!(PlaybookConfig::default().validate("p").is_empty());
    }
}
