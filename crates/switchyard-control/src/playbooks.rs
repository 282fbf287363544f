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

use serde::{Deserialize, Serialize};
use switchyard_detect::{Event, Finding};

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

/// A change a playbook wants; applied through the safety rules.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Planned {
    Shift {
        service: String,
        zone: String,
        until_ms: u64,
        why: String,
    },
    Unshift {
        service: String,
        zone: String,
        why: String,
    },
    RegionWeight {
        service: String,
        region: String,
        weight: f64,
        why: String,
    },
    RegionBack {
        service: String,
        region: String,
        why: String,
    },
    Failover {
        service: String,
        regions: Vec<String>,
        on: bool,
        why: String,
    },
    ReadOnly {
        service: String,
        region: String,
        on: bool,
        why: String,
    },
}

impl Planned {
    pub fn describe(&self) -> String {
        match self {
            Planned::Shift { service, zone, .. } => {
                format!("shift {service} away from zone {zone}")
            }
            Planned::Unshift { service, zone, .. } => {
                format!("end the shift of {service} away from zone {zone}")
            }
            Planned::RegionWeight {
                service,
                region,
                weight,
                ..
            } => format!("region {region} of {service} weight {weight:.2}"),
            Planned::RegionBack {
                service, region, ..
            } => format!("region {region} of {service} back in"),
            Planned::Failover {
                service,
                regions,
                on,
                ..
            } => {
                format!(
                    "failover mode {} for {service} in {}",
                    if *on { "on" } else { "off" },
                    regions.join(", ")
                )
            }
            Planned::ReadOnly {
                service,
                region,
                on,
                ..
            } => format!(
                "read-only mode {} for {service} in {region}",
                if *on { "on" } else { "off" }
            ),
        }
    }

    pub fn why(&self) -> &str {
        match self {
            Planned::Shift { why, .. }
            | Planned::Unshift { why, .. }
            | Planned::RegionWeight { why, .. }
            | Planned::RegionBack { why, .. }
            | Planned::Failover { why, .. }
            | Planned::ReadOnly { why, .. } => why,
        }
    }
}

/// One mitigation in progress, keyed by (service, scope).
#[derive(Debug, Clone, Serialize)]
pub struct Mitigation {
    pub scope: String,
    pub started_ms: u64,
    /// Findings of this scope now open (kinds).
    pub open: Vec<String>,
    /// When the last finding closed, if all are closed.
    pub clear_since_ms: Option<u64>,
    /// Evacuation: the steps taken so far.
    pub step: u32,
    pub next_step_ms: Option<u64>,
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
                    "region" if f.kind == WRITE_PATH => out.push(Planned::ReadOnly {
                        service: f.service.clone(),
                        region: name.to_string(),
                        on: true,
                        why: Self::why(f),
                    }),
                    "zone" => out.push(Planned::Shift {
                        service: f.service.clone(),
                        zone: name.to_string(),
                        until_ms: now_ms + self.cfg.shift_for_ms,
                        why: Self::why(f),
                    }),
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
                        out.push(Planned::Failover {
                            service: f.service.clone(),
                            regions: vec![from.to_string(), to.to_string()],
                            on: true,
                            why: Self::why(f),
                        });
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
                        out.push(Planned::RegionWeight {
                            service: svc.clone(),
                            region: name.to_string(),
                            weight: w,
                            why: format!(
                                "region finding: evacuation step {} of {}",
                                m.step, self.cfg.evacuation_steps
                            ),
                        });
                        m.next_step_ms = Some(t + self.cfg.evacuation_step_ms);
                    }
                }
            }
            if let Some(c) = m.clear_since_ms {
                if now_ms.saturating_sub(c) >= self.cfg.failback_hold_ms {
                    let why = format!("{scope} clear for {} s", self.cfg.failback_hold_ms / 1000);
                    match level {
                        "region" if write_path => out.push(Planned::ReadOnly {
                            service: svc.clone(),
                            region: name.to_string(),
                            on: false,
                            why,
                        }),
                        "zone" => out.push(Planned::Unshift {
                            service: svc.clone(),
                            zone: name.to_string(),
                            why,
                        }),
                        "region" => out.push(Planned::RegionBack {
                            service: svc.clone(),
                            region: name.to_string(),
                            why,
                        }),
                        "link" => {
                            if let Some((from, to)) = name.split_once("->") {
                                out.push(Planned::Failover {
                                    service: svc.clone(),
                                    regions: vec![from.to_string(), to.to_string()],
                                    on: false,
                                    why,
                                });
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
            matches!(&out[..], [Planned::Shift { zone, until_ms: 1_810_000, .. }] if zone == "us-east-a"),
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
            matches!(&out[..], [Planned::Unshift { zone, .. }] if zone == "us-east-a"),
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
                Planned::RegionWeight { weight, .. } => Some(weight),
                _ => None,
            })
            .collect();
        assert_eq!(weights, vec![0.75, 0.5, 0.25, 0.0]);
        p.on_event(&Event::Closed(finding("region:us-east", "errors")), 50_000);
        assert!(matches!(&p.tick(80_000)[..], [Planned::RegionBack { .. }]));
    }

    #[test]
    fn an_impaired_write_path_means_read_only_not_evacuation() {
        let mut p = Playbooks::new(
            PlaybookConfig::default(),
            vec!["us-east".into(), "eu-west".into()],
        );
        let out = p.on_event(&Event::Opened(finding("region:us-east", "write_path")), 0);
        assert!(
            matches!(&out[..], [Planned::ReadOnly { on: true, region, .. }] if region == "us-east"),
            "{out:?}"
        );
        assert!(
            [0, 10_000, 20_000, 40_000]
                .iter()
                .flat_map(|t| p.tick(*t))
                .all(|x| !matches!(x, Planned::RegionWeight { .. })),
            "no evacuation step for a write-path finding"
        );
        p.on_event(
            &Event::Closed(finding("region:us-east", "write_path")),
            50_000,
        );
        assert!(p.tick(70_000).is_empty(), "clear for less than the hold");
        let out = p.tick(80_000);
        assert!(
            matches!(&out[..], [Planned::ReadOnly { on: false, region, .. }] if region == "us-east"),
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
            matches!(&out[..], [Planned::Failover { on: true, regions, .. }] if regions == &vec!["us-east".to_string(), "eu-west".to_string()])
        );
        assert!(p
            .tick(5_000)
            .iter()
            .all(|x| !matches!(x, Planned::RegionWeight { .. })));
        // A link between two zones of one region is not a region matter.
        assert!(p
            .on_event(
                &Event::Opened(finding("link:us-east-a->us-east-b", "unreachable")),
                0
            )
            .is_empty());
    }
}
