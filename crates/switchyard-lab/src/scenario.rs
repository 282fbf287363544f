//! Drill scenarios: a TOML file names the topology, the load, a steady-state
//! hypothesis, a timeline of steps (faults and restores), stop conditions and
//! expectations. `docs/drills.md` documents the format; the built-in
//! scenarios live in `scenarios/`.

use serde::Deserialize;

use crate::link::LinkSettings;
use crate::topology::Topology;

pub const BUILTIN: &[(&str, &str)] = &[
    (
        "instance-kill",
        include_str!("../scenarios/instance-kill.toml"),
    ),
    ("zone-outage", include_str!("../scenarios/zone-outage.toml")),
    ("zone-gray", include_str!("../scenarios/zone-gray.toml")),
    (
        "region-evacuation",
        include_str!("../scenarios/region-evacuation.toml"),
    ),
    (
        "region-partition",
        include_str!("../scenarios/region-partition.toml"),
    ),
    (
        "latency-injection",
        include_str!("../scenarios/latency-injection.toml"),
    ),
    (
        "thundering-herd",
        include_str!("../scenarios/thundering-herd.toml"),
    ),
    (
        "unsafe-config",
        include_str!("../scenarios/unsafe-config.toml"),
    ),
    ("write-path", include_str!("../scenarios/write-path.toml")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub duration_s: f64,
    /// A topology file; the built-in one when absent.
    pub topology: Option<String>,
    /// Multiplies every client group's rate.
    #[serde(default = "one")]
    pub load_factor: f64,
    /// Overrides the service's per-edge `max_rps` ceiling from the topology.
    pub max_rps: Option<f64>,
    /// What the fault is expected to be found as, for time to detect:
    /// `instance:NAME`, `zone:NAME`, `region:NAME` or `link:FROM->TO`; a
    /// list when the fault has several places (a cut in both directions).
    #[serde(default, deserialize_with = "one_or_many")]
    pub fault_scope: Vec<String>,
    pub steady_state: SteadyStateSpec,
    pub stop: Option<StopSpec>,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    #[serde(default, rename = "expect")]
    pub expectations: Vec<ExpectSpec>,
}

fn one() -> f64 {
    1.0
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyStateSpec {
    pub max_error_rate: f64,
    pub max_p99_ms: f64,
}

/// Abort (and restore) when the error rate stays above `max_error_rate` for
/// `for_s` seconds in a row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    pub max_error_rate: f64,
    pub for_s: u32,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub at_s: f64,
    pub action: Action,
    /// This step starts the fault (sets `fault_at_s`).
    pub fault: bool,
    /// This step removes the fault (sets `restored_at_s`); restore steps also
    /// run when a stop condition aborts the drill.
    pub restore: bool,
}

// serde cannot combine `flatten` with `deny_unknown_fields`, so a step takes
// its own fields off the table and hands the rest to the strict action enum.
impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let at_s = match t.remove("at_s") {
            Some(toml::Value::Float(f)) => f,
            Some(toml::Value::Integer(i)) => i as f64,
            Some(v) => {
                return Err(D::Error::custom(format!(
                    "at_s: expected a number, got {v}"
                )))
            }
            None => return Err(D::Error::custom("at_s: required")),
        };
        let flag = |t: &mut toml::Table, k: &str| match t.remove(k) {
            None => Ok(false),
            Some(toml::Value::Boolean(b)) => Ok(b),
            Some(v) => Err(D::Error::custom(format!(
                "{k}: expected true or false, got {v}"
            ))),
        };
        let fault = flag(&mut t, "fault")?;
        let restore = flag(&mut t, "restore")?;
        let action = Action::deserialize(toml::Value::Table(t))
            .map_err(|e| D::Error::custom(format!("step at {at_s} s: {}", e.message())))?;
        Ok(Step {
            at_s,
            action,
            fault,
            restore,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    KillInstance {
        target: String,
    },
    RestartInstance {
        target: String,
    },
    /// Kills every instance of a zone.
    KillZone {
        target: String,
    },
    RestartZone {
        target: String,
    },
    /// Degrades or cuts a link (fields as in the lab's link settings).
    Link {
        target: String,
        #[serde(default)]
        latency_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        fail_percent: f64,
        #[serde(default)]
        reset_percent: f64,
        #[serde(default)]
        bandwidth_kbps: u64,
        #[serde(default)]
        cut: bool,
    },
    RestoreLink {
        target: String,
    },
    /// Makes a region's store turn writes away (`reject = true`) or take
    /// them again; reads keep working either way.
    StoreWrites {
        target: String,
        reject: bool,
    },
    /// Moves a region's traffic away in `steps` equal steps, `step_s` apart.
    EvacuateRegion {
        target: String,
        steps: u32,
        step_s: f64,
    },
    RestoreRegion {
        target: String,
    },
    /// Sends a controls document (JSON text) to every edge.
    Controls {
        controls: String,
    },
    /// Injects a fault on every edge.
    Fault {
        #[serde(default)]
        route: Option<String>,
        #[serde(default)]
        zone: Option<String>,
        #[serde(default)]
        delay_ms: u64,
        #[serde(default)]
        delay_jitter_ms: u64,
        #[serde(default)]
        delay_percent: f64,
        #[serde(default)]
        abort_status: Option<u16>,
        #[serde(default)]
        abort_percent: f64,
    },
    ClearFaults,
    /// Multiplies the offered load.
    Load {
        factor: f64,
    },
    /// Pushes the lab config with `min_healthy` removed to every edge.
    PushConfigWithoutFloor,
    /// Shifts the given zones away one after the other, `interval_s` apart.
    RemoveCapacity {
        zones: Vec<String>,
        interval_s: f64,
    },
}

impl Action {
    pub fn link_settings(&self) -> Option<LinkSettings> {
        match self {
            Action::Link {
                latency_ms,
                jitter_ms,
                fail_percent,
                reset_percent,
                bandwidth_kbps,
                cut,
                ..
            } => Some(LinkSettings {
                latency_ms: *latency_ms,
                jitter_ms: *jitter_ms,
                fail_percent: *fail_percent,
                reset_percent: *reset_percent,
                bandwidth_kbps: *bandwidth_kbps,
                cut: *cut,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// One of [`METRICS`].
    pub metric: String,
    /// `<`, `<=`, `>`, `>=` or `==`.
    pub op: String,
    pub value: f64,
}

/// What an expectation may check, computed from the run.
pub const METRICS: &[&str] = &[
    "failed_ratio",
    "requests_failed",
    "shed_ratio",
    "read_only_ratio",
    "ttd_s",
    "ttm_s",
    "recovery_s",
    "p99_ms",
    "refused_actions",
    "accepted_actions",
    "replication_queue_max",
    "replication_queue_end",
    "playbook_shifts",
    "playbook_evacuations",
    "playbook_actions",
    "playbook_read_only",
    "incidents_opened",
    "notifications_delivered",
    "requests_total",
];

impl Scenario {
    /// A built-in name or a path to a file.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(text)
                .map_err(|e| format!("built-in scenario {name_or_path}: {e}"));
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            format!(
                "{name_or_path:?} is neither a built-in scenario ({}) nor a readable file: {e}",
                names.join(", ")
            )
        })?;
        Scenario::parse(&text).map_err(|e| format!("{name_or_path}: {e}"))
    }

    /// Parses and checks a scenario, reporting every problem at once.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let topo = s.topology()?;
        let mut errs = Vec::new();
        if !(1.0..=3600.0).contains(&s.duration_s) {
            errs.push(format!(
                "duration_s: between 1 and 3600, got {}",
                s.duration_s
            ));
        }
        if !(s.load_factor > 0.0 && s.load_factor <= 100.0) {
            errs.push(format!(
                "load_factor: between 0 and 100, got {}",
                s.load_factor
            ));
        }
        if !(0.0..=1.0).contains(&s.steady_state.max_error_rate) {
            errs.push(format!(
                "steady_state.max_error_rate: a fraction, got {}",
                s.steady_state.max_error_rate
            ));
        }
        if s.steady_state.max_p99_ms <= 0.0 {
            errs.push("steady_state.max_p99_ms: must be above 0".into());
        }
        if let Some(st) = &s.stop {
            if !(0.0..=1.0).contains(&st.max_error_rate) || st.for_s == 0 {
                errs.push("stop: max_error_rate must be a fraction and for_s above 0".into());
            }
        }
        let instances: Vec<String> = topo
            .all_instances()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        let zones: Vec<String> = topo.zones().map(|(_, z)| z.to_string()).collect();
        let links: Vec<String> = topo.links().into_iter().map(|l| l.name).collect();
        let regions: Vec<String> = topo.regions.iter().map(|r| r.name.clone()).collect();
        for (i, st) in s.steps.iter().enumerate() {
            let p = format!("step[{i}]");
            if st.at_s < 0.0 || st.at_s > s.duration_s {
                errs.push(format!(
                    "{p}.at_s: {} is outside the run (0..{})",
                    st.at_s, s.duration_s
                ));
            }
            let known = |list: &[String], t: &str, what: &str, errs: &mut Vec<String>| {
                if !list.iter().any(|x| x == t) {
                    errs.push(format!(
                        "{p}.target: unknown {what} {t:?} (known: {})",
                        list.join(", ")
                    ));
                }
            };
            match &st.action {
                Action::KillInstance { target } | Action::RestartInstance { target } => {
                    known(&instances, target, "instance", &mut errs)
                }
                Action::KillZone { target } | Action::RestartZone { target } => {
                    known(&zones, target, "zone", &mut errs)
                }
                Action::Link { target, .. } | Action::RestoreLink { target } => {
                    known(&links, target, "link", &mut errs)
                }
                Action::EvacuateRegion {
                    target,
                    steps,
                    step_s,
                } => {
                    known(&regions, target, "region", &mut errs);
                    if *steps == 0 || *step_s < 0.0 {
                        errs.push(format!(
                            "{p}: steps must be at least 1 and step_s not negative"
                        ));
                    }
                }
                Action::RestoreRegion { target } | Action::StoreWrites { target, .. } => {
                    known(&regions, target, "region", &mut errs)
                }
                Action::Controls { controls } => {
                    if let Err(e) = serde_json::from_str::<serde_json::Value>(controls) {
                        errs.push(format!("{p}.controls: not JSON: {e}"));
                    }
                }
                Action::Fault {
                    zone,
                    abort_percent,
                    delay_percent,
                    ..
                } => {
                    if let Some(z) = zone {
                        if !zones.contains(z) {
                            errs.push(format!("{p}.zone: unknown zone {z:?}"));
                        }
                    }
                    for v in [abort_percent, delay_percent] {
                        if !(0.0..=100.0).contains(v) {
                            errs.push(format!(
                                "{p}: percentages must be between 0 and 100, got {v}"
                            ));
                        }
                    }
                }
                Action::Load { factor } => {
                    if !(*factor > 0.0 && *factor <= 100.0) {
                        errs.push(format!("{p}.factor: between 0 and 100, got {factor}"));
                    }
                }
                Action::RemoveCapacity { zones: zs, .. } => {
                    for z in zs {
                        if !zones.contains(z) {
                            errs.push(format!("{p}.zones: unknown zone {z:?}"));
                        }
                    }
                }
                Action::ClearFaults | Action::PushConfigWithoutFloor => {}
            }
            if let Some(ls) = st.action.link_settings() {
                if let Err(e) = ls.validate() {
                    errs.push(format!("{p}: {e}"));
                }
            }
        }
        for (i, e) in s.expectations.iter().enumerate() {
            if !METRICS.contains(&e.metric.as_str()) {
                errs.push(format!(
                    "expect[{i}].metric: unknown metric {:?} (known: {})",
                    e.metric,
                    METRICS.join(", ")
                ));
            }
            if !["<", "<=", ">", ">=", "=="].contains(&e.op.as_str()) {
                errs.push(format!(
                    "expect[{i}].op: {:?} is not one of <, <=, >, >=, ==",
                    e.op
                ));
            }
        }
        for scope in &s.fault_scope {
            if !["instance:", "zone:", "region:", "link:"]
                .iter()
                .any(|p| scope.starts_with(p))
            {
                errs.push(format!(
                    "fault_scope: {scope:?} must start with instance:, zone:, region: or link:"
                ));
            }
        }
        if errs.is_empty() {
            Ok(s)
        } else {
            Err(errs.join("\n"))
        }
    }

    pub fn topology(&self) -> Result<Topology, String> {
        let mut t = match &self.topology {
            None => Topology::default_topology(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("topology: cannot read {p}: {e}"))?;
                Topology::parse(&text).map_err(|e| format!("topology {p}: {e}"))?
            }
        };
        if let Some(r) = self.max_rps {
            t.service.max_rps = Some(r);
        }
        for c in &mut t.clients {
            c.rate *= self.load_factor;
        }
        Ok(t)
    }
}

/// Compares a measured value with an expectation.
pub fn holds(measured: f64, op: &str, value: f64) -> bool {
    match op {
        "<" => measured < value,
        "<=" => measured <= value,
        ">" => measured > value,
        ">=" => measured >= value,
        "==" => (measured - value).abs() < 1e-9,
        _ => false,
    }
}
