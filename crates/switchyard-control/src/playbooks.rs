//! Playbooks: findings in, control changes out — data-plane actions first.
//!
//! - a zone finding → a zonal shift with an expiry; once the zone has been
//!   clear for `failback_hold_ms`, the shift ends (hysteresis: a finding that
//!   comes back within the hold keeps the shift);
//! - a region finding → a gradual evacuation, `evacuation_steps` steps
//!   `evacuation_step_ms` apart, so the other regions can scale and warm
//!   caches while edges forward; back in once clear for the hold;
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
use switchyard_detect::{Event, Finding};
pub use switchyard_model::finding::Mitigation;
use switchyard_model::Op;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlaybookConfig {
    /// Expiry of a playbook's zonal shift (renewed while the finding stays).
    pub shift_for_ms: u64,
    /// How long a place must stay clear before traffic returns.
    pub failback_hold_ms: u64,
    pub evacuation_steps: u32,
    pub evacuation_step_ms: u64,
}

impl Default for PlaybookConfig {
    fn default() -> Self {
        PlaybookConfig {
            shift_for_ms: 30 * 60 * 1000,
            failback_hold_ms: 30_000,
            evacuation_steps: 4,
            evacuation_step_ms: 10_000,
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
}

fn place(scope: &str) -> Option<(&str, &str)> {
    scope.split_once(':')
}

/// Write-path findings share their region's scope but get their own
/// mitigation (read-only mode), tracked apart from an evacuation.
const WRITE_PATH: &str = "write_path";

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
        }
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
                let key = mitigation_key(f);
                if let Some(m) = self.active.get_mut(&key) {
                    // Still (or again) impaired: keep the mitigation, cancel the failback.
                    m.open.push(f.kind.clone());
                    m.clear_since_ms = None;
                    return out;
                }
                let mut m = Mitigation {
                    scope: key.1.clone(),
                    started_ms: now_ms,
                    open: vec![f.kind.clone()],
                    clear_since_ms: None,
                    step: 0,
                    next_step_ms: None,
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
                        m.next_step_ms = Some(now_ms);
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

    /// Takes evacuation steps that are due and fails back what has been
    /// clear long enough.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Planned> {
        let mut out = Vec::new();
        let mut done = Vec::new();
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
            if let Some(c) = m.clear_since_ms {
                if now_ms.saturating_sub(c) >= self.cfg.failback_hold_ms {
                    let why = format!("{scope} clear for {} s", self.cfg.failback_hold_ms / 1000);
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
                        "zone" => out.push(Planned::new(
                            ZONE_SHIFT,
                            Op::Unshift {
                                service: svc.clone(),
                                zone: name.to_string(),
                            },
                            why,
                        )),
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
            }
        }
        for k in done {
            self.active.remove(&k);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(p.tick(60_000).is_empty(), "latency is still open");
        p.on_event(&Event::Closed(finding("zone:us-east-a", "latency")), 60_000);
        assert!(p.tick(89_000).is_empty(), "clear for less than the hold");
        // Back again within the hold: the failback is cancelled.
        p.on_event(&Event::Opened(finding("zone:us-east-a", "errors")), 70_000);
        assert!(p.tick(100_000).is_empty());
        p.on_event(&Event::Closed(finding("zone:us-east-a", "errors")), 100_000);
        let out = p.tick(130_000);
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
            .flat_map(|t| p.tick(*t))
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
            &p.tick(80_000)[..],
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
                .flat_map(|t| p.tick(*t))
                .all(|x| !matches!(x.op, Op::RegionWeight { .. })),
            "no evacuation step for a write-path finding"
        );
        p.on_event(
            &Event::Closed(finding("region:us-east", "write_path")),
            50_000,
        );
        assert!(p.tick(70_000).is_empty(), "clear for less than the hold");
        let out = p.tick(80_000);
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
            .tick(5_000)
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
}
