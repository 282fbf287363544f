//! Controls: the switches the control plane holds and every edge obeys.
//! Edges receive them as JSON (controls file, admin API, watch stream) and keep
//! the last accepted set on disk, so the same type is the wire and disk format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{ConfigError, ValidationErrors};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controls {
    /// Increases with every change made by the control plane; informational
    /// for edges, which apply whatever their source hands them last.
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceControls>,
    /// Faults injected for drills. Empty means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// The store these controls come from, set by the control plane that
    /// publishes them; absent in documents written by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The identity of a control plane's store, and the stores it was
/// explicitly adopted over (an admin's audited `switchyard control
/// --adopt`). Versions count within one store: an empty store, a restored
/// backup or a mistyped path starts again at a low version, so a follower
/// compares versions only within one store and takes another store's
/// controls only when they name its own among those they supersede.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    pub store: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
}

/// Why a follower keeps the controls it holds rather than the ones offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Backwards {
    #[error(
        "controls version {offered} is older than version {current}, which is in force; keeping it"
    )]
    Older { offered: u64, current: u64 },
    #[error(
        "controls from store {offered:?} cannot replace those of store {held:?}, which are in force, \
         unless an admin adopts it over that store (`switchyard control --adopt`); keeping them"
    )]
    OtherStore { offered: String, held: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceControls {
    /// Writes answer 503 with `Retry-After`; reads keep working.
    #[serde(default)]
    pub read_only: bool,
    /// 0: shed only above the limits; 1: shed every sheddable request;
    /// 2: shed sheddable and normal requests; critical ones are never shed by level.
    #[serde(default)]
    pub shed_level: u8,
    #[serde(default)]
    pub zones: BTreeMap<String, ZoneControl>,
    #[serde(default)]
    pub regions: BTreeMap<String, RegionControl>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneControl {
    /// 1 serves normally, 0 is shifted away; values between take a share.
    #[serde(default = "one")]
    pub weight: f64,
    /// A shift is a lease: after this instant (Unix milliseconds) the weight
    /// goes back to 1 on its own, even if the control plane is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Default for ZoneControl {
    fn default() -> Self {
        ZoneControl {
            weight: 1.0,
            expires_at_ms: None,
            reason: None,
        }
    }
}

impl ZoneControl {
    pub fn effective_weight(&self, now_ms: u64) -> f64 {
        match self.expires_at_ms {
            Some(t) if now_ms >= t => 1.0,
            _ => self.weight,
        }
    }
}

/// How the capacity guard formed the set of instances a request may go to:
/// every removal of capacity (ejection, zonal shift, evacuation) stops at
/// the service's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacityMode {
    /// Healthy instances in zones that are not shifted away.
    Normal,
    /// Honouring the zonal shift would leave too little; the shift is
    /// ignored (fails open) but ejected instances stay out.
    ShiftFailedOpen,
    /// Even ignoring shifts, healthy instances are below the floor: route to
    /// every instance rather than overload the few that are left.
    Panic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionState {
    #[default]
    In,
    Out,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionControl {
    #[serde(default)]
    pub state: RegionState,
    /// Share of the traffic reaching this region's edges that they serve
    /// locally; the rest goes to the next region. Used to evacuate gradually.
    #[serde(default = "one")]
    pub weight: f64,
    /// Misrouted requests are served here instead of forwarded home.
    #[serde(default)]
    pub failover: bool,
    /// Writes served in this region answer 503; reads keep working.
    #[serde(default)]
    pub read_only: bool,
}

impl Default for RegionControl {
    fn default() -> Self {
        RegionControl {
            state: RegionState::In,
            weight: 1.0,
            failover: false,
            read_only: false,
        }
    }
}

impl RegionControl {
    /// The share of traffic the region keeps: 0 when out.
    pub fn local_share(&self) -> f64 {
        match self.state {
            RegionState::Out => 0.0,
            RegionState::In => self.weight,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub service: String,
    /// Only this route; all routes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Only requests served by instances in this zone; all zones when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub delay_jitter_ms: u64,
    #[serde(default)]
    pub delay_percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_status: Option<u16>,
    #[serde(default)]
    pub abort_percent: f64,
}

fn one() -> f64 {
    1.0
}

impl Controls {
    /// Whether these controls may replace `held` at a follower: never older
    /// than what it holds, and never from another store unless adopted over
    /// it. Hand-written documents (no origin) are judged by version alone.
    pub fn may_replace(&self, held: &Controls) -> Result<(), Backwards> {
        if let (Some(o), Some(h)) = (&self.origin, &held.origin) {
            if o.store != h.store {
                return if o.supersedes.contains(&h.store) {
                    Ok(())
                } else {
                    Err(Backwards::OtherStore {
                        offered: o.store.clone(),
                        held: h.store.clone(),
                    })
                };
            }
        }
        if self.version < held.version {
            return Err(Backwards::Older {
                offered: self.version,
                current: held.version,
            });
        }
        Ok(())
    }

    /// Every leaf that differs from `self` to `after`, as
    /// `{"path", "before", "after"}` (a missing side is `null`), versions
    /// aside: what an audit entry of a whole-document change records.
    pub fn diff(&self, after: &Controls) -> Vec<serde_json::Value> {
        fn leaves(
            prefix: &str,
            v: &serde_json::Value,
            out: &mut BTreeMap<String, serde_json::Value>,
        ) {
            match v {
                serde_json::Value::Object(m) if !m.is_empty() => {
                    for (k, x) in m {
                        let p = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&p, x, out);
                    }
                }
                other => {
                    out.insert(prefix.to_string(), other.clone());
                }
            }
        }
        let flat = |c: &Controls| {
            let mut c = c.clone();
            c.version = 0;
            let mut out = BTreeMap::new();
            leaves(
                "",
                &serde_json::to_value(&c).expect("serializable"),
                &mut out,
            );
            out
        };
        let (a, b) = (flat(self), flat(after));
        let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        paths
            .into_iter()
            .filter(|p| a.get(*p) != b.get(*p))
            .map(|p| {
                serde_json::json!({
                    "path": p,
                    "before": a.get(p).cloned().unwrap_or(serde_json::Value::Null),
                    "after": b.get(p).cloned().unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    /// Whether the two say the same to every edge: versions aside, and a
    /// service or region entry holding only defaults is the same as none
    /// (turning read-only off where it was never on adds an empty entry).
    pub fn same_as(&self, other: &Controls) -> bool {
        fn meaningful(c: &Controls) -> (BTreeMap<&String, ServiceControls>, &Vec<Fault>) {
            let services = c
                .services
                .iter()
                .map(|(name, sc)| {
                    let mut sc = sc.clone();
                    sc.regions.retain(|_, rc| *rc != RegionControl::default());
                    (name, sc)
                })
                .filter(|(_, sc)| *sc != ServiceControls::default())
                .collect();
            (services, &c.faults)
        }
        meaningful(self) == meaningful(other)
    }

    /// Parses JSON and checks it against the topology; a refused document
    /// reports every problem with its path and must change nothing.
    pub fn from_json(text: &str, config: &Config) -> Result<Controls, ConfigError> {
        let c: Controls =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        c.validate(config).map_err(ConfigError::Invalid)?;
        Ok(c)
    }

    pub fn validate(&self, config: &Config) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if let Some(o) = &self.origin {
            let id_ok = |s: &str| !s.is_empty() && s.len() <= 64;
            if !id_ok(&o.store) {
                errs.push(
                    "origin.store",
                    format!("1 to 64 characters, got {:?}", o.store),
                );
            }
            if o.supersedes.len() > 64 {
                errs.push(
                    "origin.supersedes",
                    format!("at most 64 stores, got {}", o.supersedes.len()),
                );
            }
            for (i, s) in o.supersedes.iter().enumerate() {
                if !id_ok(s) {
                    errs.push(
                        format!("origin.supersedes[{i}]"),
                        format!("1 to 64 characters, got {s:?}"),
                    );
                }
            }
        }
        for (name, sc) in &self.services {
            let p = format!("services.{name}");
            let Some(_svc) = config.service(name) else {
                errs.push(p, format!("unknown service {name:?}"));
                continue;
            };
            if sc.shed_level > 2 {
                errs.push(
                    format!("{p}.shed_level"),
                    format!("must be 0, 1 or 2, got {}", sc.shed_level),
                );
            }
            for (z, zc) in &sc.zones {
                let zp = format!("{p}.zones.{z}");
                if config.zone(z).is_none() {
                    errs.push(zp.clone(), format!("unknown zone {z:?}"));
                }
                weight_in_range(zc.weight, &format!("{zp}.weight"), &mut errs);
            }
            for (r, rc) in &sc.regions {
                let rp = format!("{p}.regions.{r}");
                if config.region(r).is_none() {
                    errs.push(rp.clone(), format!("unknown region {r:?}"));
                }
                weight_in_range(rc.weight, &format!("{rp}.weight"), &mut errs);
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let p = format!("faults[{i}]");
            match config.service(&f.service) {
                None => errs.push(
                    format!("{p}.service"),
                    format!("unknown service {:?}", f.service),
                ),
                Some(svc) => {
                    if let Some(r) = &f.route {
                        if !svc.routes.iter().any(|x| &x.name == r) && r != "default" {
                            errs.push(
                                format!("{p}.route"),
                                format!("unknown route {r:?} of service {:?}", f.service),
                            );
                        }
                    }
                }
            }
            if let Some(z) = &f.zone {
                if config.zone(z).is_none() {
                    errs.push(format!("{p}.zone"), format!("unknown zone {z:?}"));
                }
            }
            for (v, field) in [
                (f.delay_percent, "delay_percent"),
                (f.abort_percent, "abort_percent"),
            ] {
                if !(0.0..=100.0).contains(&v) {
                    errs.push(
                        format!("{p}.{field}"),
                        format!("must be a percentage between 0 and 100, got {v}"),
                    );
                }
            }
            if let Some(s) = f.abort_status {
                if !(200..=599).contains(&s) {
                    errs.push(
                        format!("{p}.abort_status"),
                        format!("must be an HTTP status between 200 and 599, got {s}"),
                    );
                }
            } else if f.abort_percent > 0.0 {
                errs.push(
                    format!("{p}.abort_status"),
                    "required when abort_percent is above 0",
                );
            }
            if f.delay_ms > 600_000 || f.delay_jitter_ms > 600_000 {
                errs.push(
                    format!("{p}.delay_ms"),
                    "delays above 600000 ms are refused",
                );
            }
        }
        errs.into_result(())
    }

    pub fn service(&self, name: &str) -> Option<&ServiceControls> {
        self.services.get(name)
    }
}

fn weight_in_range(w: f64, path: &str, errs: &mut ValidationErrors) {
    if !(w.is_finite() && (0.0..=1.0).contains(&w)) {
        errs.push(path, format!("must be a weight between 0 and 1, got {w}"));
    }
}

#[cfg(test)]
mod origin_tests {
    use super::*;

    #[test]
    fn controls_never_go_back_in_time_nor_to_another_store_unadopted() {
        let at = |store: &str, version: u64, supersedes: &[&str]| Controls {
            version,
            origin: Some(Origin {
                store: store.into(),
                supersedes: supersedes.iter().map(|s| s.to_string()).collect(),
            }),
            ..Controls::default()
        };
        let held = at("s1", 57, &[]);
        assert!(at("s1", 58, &[]).may_replace(&held).is_ok());
        assert!(
            at("s1", 57, &[]).may_replace(&held).is_ok(),
            "the same again"
        );
        assert_eq!(
            at("s1", 3, &[]).may_replace(&held),
            Err(Backwards::Older {
                offered: 3,
                current: 57
            })
        );
        // An empty store starts at 0, a busy other one may be far ahead:
        // neither replaces s1's controls unless adopted over s1.
        for v in [0, 500] {
            let e = at("s2", v, &[]).may_replace(&held).unwrap_err();
            assert!(e.to_string().contains("--adopt"), "{e}");
        }
        assert!(at("s2", 1, &["s0", "s1"]).may_replace(&held).is_ok());
        // Hand-written documents are judged by version alone.
        let by_hand = Controls {
            version: 60,
            ..Controls::default()
        };
        assert!(by_hand.may_replace(&held).is_ok());
        assert!(at("s2", 1, &[]).may_replace(&by_hand).is_err());
    }
}
