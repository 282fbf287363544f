//! Drill scenarios: a TOML file names the topology, the load, a steady-state
//! hypothesis, a timeline of steps (faults and restores), stop conditions and
//! expectations. `docs/drills.md` documents the format; the built-in
//! scenarios live in `scenarios/`.

use serde::Deserialize;

use crate::link::LinkSettings;
use crate::rollout_spec::RolloutSpec;
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
    (
        "creeping-latency",
        include_str!("../scenarios/creeping-latency.toml"),
    ),
    (
        "flapping-link",
        include_str!("../scenarios/flapping-link.toml"),
    ),
    ("region-gray", include_str!("../scenarios/region-gray.toml")),
    (
        "two-gray-zones",
        include_str!("../scenarios/two-gray-zones.toml"),
    ),
    (
        "low-rate-writes",
        include_str!("../scenarios/low-rate-writes.toml"),
    ),
    (
        "slow-instance",
        include_str!("../scenarios/slow-instance.toml"),
    ),
    (
        "canary-failback",
        include_str!("../scenarios/canary-failback.toml"),
    ),
    (
        "region-ingress-lost",
        include_str!("../scenarios/region-ingress-lost.toml"),
    ),
    (
        "dns-failback",
        include_str!("../scenarios/dns-failback.toml"),
    ),
    (
        "good-config-rollout",
        include_str!("../scenarios/good-config-rollout.toml"),
    ),
    (
        "bad-config-rollout",
        include_str!("../scenarios/bad-config-rollout.toml"),
    ),
    (
        "floor-drop-rollout",
        include_str!("../scenarios/floor-drop-rollout.toml"),
    ),
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
    /// A failback counts as undone (`failbacks_undone`) when the same place
    /// is mitigated again within this many seconds of it.
    #[serde(default = "sixty")]
    pub undone_within_s: f64,
}

fn one() -> f64 {
    1.0
}

fn sixty() -> f64 {
    60.0
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
    /// This step starts the fault (sets `fault_at_s`); with `repeat` or
    /// `ramp`, only its first occurrence does.
    pub fault: bool,
    /// This step removes the fault (sets `restored_at_s`); restore steps also
    /// run when a stop condition aborts the drill. With `repeat` or `ramp`,
    /// only its last occurrence is the restore.
    pub restore: bool,
    /// The same step again, `every_s` apart.
    pub repeat: Option<Repeat>,
    /// The same step again with one numeric field raised each time.
    pub ramp: Option<Ramp>,
}

/// `repeat = { every_s = 6, times = 5 }`: the step happens `times` times in
/// all (the first at `at_s`), `every_s` seconds apart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    pub every_s: f64,
    pub times: u32,
}

/// `ramp = { field = "latency_ms", by = 15, every_s = 5, times = 8 }`: the
/// step happens `times` times in all, `every_s` seconds apart, the k-th time
/// (from 0) with `field` raised by k × `by` (a negative `by` lowers it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub field: String,
    pub by: f64,
    pub every_s: f64,
    pub times: u32,
}

/// The runner looks at the clock every 100 ms: steps closer together than
/// that would happen in the same tick anyway.
pub const MIN_EVERY_S: f64 = 0.1;
/// A bound on one step's occurrences, so a slip of the finger cannot plan
/// millions of changes.
pub const MAX_TIMES: u32 = 1000;

/// One occurrence of a step, on the run's clock.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub at_s: f64,
    pub action: Action,
    pub fault: bool,
    pub restore: bool,
}

impl Step {
    /// (every_s, times) of a repeated or ramped step.
    fn cadence(&self) -> Option<(f64, u32)> {
        match (&self.repeat, &self.ramp) {
            (Some(r), _) => Some((r.every_s, r.times)),
            (None, Some(r)) => Some((r.every_s, r.times)),
            (None, None) => None,
        }
    }

    /// When the last occurrence happens.
    pub fn last_at_s(&self) -> f64 {
        match self.cadence() {
            Some((every, times)) => self.at_s + every * times.saturating_sub(1) as f64,
            None => self.at_s,
        }
    }

    /// The step as it happens: once, or `times` times with `repeat` or
    /// `ramp`. Only the first occurrence starts the fault and only the last
    /// is the restore: a cut repeated five times is one fault. Errors name
    /// the field (`ramp.field: …`) for the caller to place.
    pub fn occurrences(&self) -> Result<Vec<Occurrence>, String> {
        let Some((every, times)) = self.cadence() else {
            return Ok(vec![Occurrence {
                at_s: self.at_s,
                action: self.action.clone(),
                fault: self.fault,
                restore: self.restore,
            }]);
        };
        let times = times.min(MAX_TIMES);
        (0..times)
            .map(|k| {
                let action = match &self.ramp {
                    Some(r) => self.action.ramped(&r.field, r.by * k as f64)?,
                    None => self.action.clone(),
                };
                Ok(Occurrence {
                    at_s: self.at_s + every * k as f64,
                    action,
                    fault: self.fault && k == 0,
                    restore: self.restore && k + 1 == times,
                })
            })
            .collect()
    }
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
        let repeat = t
            .remove("repeat")
            .map(Repeat::deserialize)
            .transpose()
            .map_err(|e| D::Error::custom(format!("step at {at_s} s: repeat: {}", e.message())))?;
        let ramp = t
            .remove("ramp")
            .map(Ramp::deserialize)
            .transpose()
            .map_err(|e| D::Error::custom(format!("step at {at_s} s: ramp: {}", e.message())))?;
        let action = Action::deserialize(toml::Value::Table(t))
            .map_err(|e| D::Error::custom(format!("step at {at_s} s: {}", e.message())))?;
        Ok(Step {
            at_s,
            action,
            fault,
            restore,
            repeat,
            ramp,
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
    /// Kills every edge of a region: its ingress is lost, its instances
    /// and store keep running.
    KillEdges {
        target: String,
    },
    /// Starts every edge of a region again.
    RestartEdges {
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
    /// Makes a region's store turn writes away — all (`reject = true`) or
    /// a share (`reject_percent`) — or take them again; reads keep working
    /// either way.
    StoreWrites {
        target: String,
        #[serde(default)]
        reject: Option<bool>,
        #[serde(default)]
        reject_percent: Option<f64>,
    },
    /// Adds latency to a region's store: reads and writes, or writes only.
    /// A zero delay removes it.
    StoreLatency {
        target: String,
        #[serde(default)]
        delay_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        writes_only: bool,
    },
    /// Sets one catalog instance's own fault knob: a delay (plus jitter)
    /// and a share of errors on everything but `/health`.
    InstanceFault {
        target: String,
        #[serde(default)]
        delay_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default = "error_status")]
        error_status: u16,
        #[serde(default)]
        error_percent: f64,
    },
    ClearInstanceFault {
        target: String,
    },
    /// SIGSTOP on one catalog process: it holds its sockets and answers
    /// nothing, health checks included.
    PauseInstance {
        target: String,
    },
    /// SIGCONT: the paused process carries on.
    ResumeInstance {
        target: String,
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
    /// Starts a staged config rollout through the control plane with the
    /// config it runs, changed as the step says.
    Rollout(RolloutSpec),
}

fn error_status() -> u16 {
    500
}

/// A numeric field of an action, for `ramp`.
pub enum Num<'a> {
    /// Milliseconds, kilobytes per second: whole and never negative.
    Whole(&'a mut u64),
    /// Percentages and factors.
    Real(&'a mut f64),
}

impl Action {
    /// The action's name as scenarios write it (`action = "…"`).
    pub fn name(&self) -> &'static str {
        match self {
            Action::KillInstance { .. } => "kill_instance",
            Action::RestartInstance { .. } => "restart_instance",
            Action::KillZone { .. } => "kill_zone",
            Action::RestartZone { .. } => "restart_zone",
            Action::KillEdges { .. } => "kill_edges",
            Action::RestartEdges { .. } => "restart_edges",
            Action::Link { .. } => "link",
            Action::RestoreLink { .. } => "restore_link",
            Action::StoreWrites { .. } => "store_writes",
            Action::StoreLatency { .. } => "store_latency",
            Action::InstanceFault { .. } => "instance_fault",
            Action::ClearInstanceFault { .. } => "clear_instance_fault",
            Action::PauseInstance { .. } => "pause_instance",
            Action::ResumeInstance { .. } => "resume_instance",
            Action::EvacuateRegion { .. } => "evacuate_region",
            Action::RestoreRegion { .. } => "restore_region",
            Action::Controls { .. } => "controls",
            Action::Fault { .. } => "fault",
            Action::ClearFaults => "clear_faults",
            Action::Load { .. } => "load",
            Action::PushConfigWithoutFloor => "push_config_without_floor",
            Action::RemoveCapacity { .. } => "remove_capacity",
            Action::Rollout(_) => "rollout",
        }
    }

    /// The fields a `ramp` may raise: the fault's intensity (delays,
    /// shares, bandwidth, load), not its shape (targets, statuses, step
    /// counts). An unset optional field is not listed: there is nothing to
    /// raise from.
    pub fn numbers(&mut self) -> Vec<(&'static str, Num<'_>)> {
        use Num::{Real, Whole};
        match self {
            Action::Link {
                latency_ms,
                jitter_ms,
                fail_percent,
                reset_percent,
                bandwidth_kbps,
                ..
            } => vec![
                ("latency_ms", Whole(latency_ms)),
                ("jitter_ms", Whole(jitter_ms)),
                ("fail_percent", Real(fail_percent)),
                ("reset_percent", Real(reset_percent)),
                ("bandwidth_kbps", Whole(bandwidth_kbps)),
            ],
            Action::StoreWrites { reject_percent, .. } => reject_percent
                .as_mut()
                .map(|p| ("reject_percent", Real(p)))
                .into_iter()
                .collect(),
            Action::StoreLatency {
                delay_ms,
                jitter_ms,
                ..
            } => vec![
                ("delay_ms", Whole(delay_ms)),
                ("jitter_ms", Whole(jitter_ms)),
            ],
            Action::InstanceFault {
                delay_ms,
                jitter_ms,
                error_percent,
                ..
            } => vec![
                ("delay_ms", Whole(delay_ms)),
                ("jitter_ms", Whole(jitter_ms)),
                ("error_percent", Real(error_percent)),
            ],
            Action::Fault {
                delay_ms,
                delay_jitter_ms,
                delay_percent,
                abort_percent,
                ..
            } => vec![
                ("delay_ms", Whole(delay_ms)),
                ("delay_jitter_ms", Whole(delay_jitter_ms)),
                ("delay_percent", Real(delay_percent)),
                ("abort_percent", Real(abort_percent)),
            ],
            Action::Load { factor } => vec![("factor", Real(factor))],
            _ => Vec::new(),
        }
    }

    /// A copy with `field` raised by `add`. Errors name the field and say
    /// why: not a numeric field of this action, a fraction added to whole
    /// milliseconds, a value below zero.
    pub fn ramped(&self, field: &str, add: f64) -> Result<Action, String> {
        let mut a = self.clone();
        let name = a.name();
        let mut nums = a.numbers();
        let known: Vec<&str> = nums.iter().map(|(f, _)| *f).collect();
        let known = if known.is_empty() {
            "it has none".to_string()
        } else {
            format!("numeric fields: {}", known.join(", "))
        };
        let Some((_, n)) = nums.iter_mut().find(|(f, _)| *f == field) else {
            return Err(format!(
                "ramp.field: {field:?} is not a numeric field of action {name} ({known})"
            ));
        };
        match n {
            Num::Whole(v) => {
                if add.fract() != 0.0 {
                    return Err(format!(
                        "ramp.by: {field} is a whole number, so the ramp cannot add {add}"
                    ));
                }
                let raised = **v as f64 + add;
                if raised < 0.0 {
                    return Err(format!("ramp: {field} would fall to {raised}"));
                }
                **v = raised as u64;
            }
            Num::Real(v) => {
                let raised = **v + add;
                if raised < 0.0 {
                    return Err(format!("ramp: {field} would fall to {raised}"));
                }
                **v = raised;
            }
        }
        drop(nums);
        Ok(a)
    }

    /// The catalog instance's fault knob an `instance_fault` step sets.
    pub fn instance_fault(&self) -> Option<crate::catalog::InstanceFault> {
        match self {
            Action::InstanceFault {
                delay_ms,
                jitter_ms,
                error_status,
                error_percent,
                ..
            } => Some(crate::catalog::InstanceFault {
                delay_ms: *delay_ms,
                jitter_ms: *jitter_ms,
                error_status: *error_status,
                error_percent: *error_percent,
            }),
            _ => None,
        }
    }

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
    "edge_ejections",
    "max_zones_shifted_per_region",
    "failbacks",
    "failbacks_undone",
    "canaries",
    "canaries_failed",
    "incidents_per_fault",
    "checks_passed",
    "checks_failed",
    "alarms_fired",
    "dns_detect_s",
    "dns_moved_s",
    "clients_moved_s",
    "failed_after_clients_moved",
    "dns_return_s",
    "dns_return_steps",
    "dns_flaps",
    "clients_returned_s",
    "rollouts_started",
    "rollouts_refused",
    "rollout_steps_unexpected",
    "rollouts_succeeded",
    "rollouts_rolled_back",
    "rollout_waves",
    "rollout_waves_passed",
    "rollout_caught_s",
    "rollout_edges_on_new",
    "rollout_incidents",
    "failed_in_canary",
    "failed_outside_canary",
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
        if !(s.undone_within_s > 0.0 && s.undone_within_s <= 3600.0) {
            errs.push(format!(
                "undone_within_s: between 0 and 3600 seconds, got {}",
                s.undone_within_s
            ));
        }
        let known = Known {
            instances: topo
                .all_instances()
                .into_iter()
                .map(|(n, _, _)| n)
                .collect(),
            zones: topo.zones().map(|(_, z)| z.to_string()).collect(),
            links: topo.links().into_iter().map(|l| l.name).collect(),
            regions: topo.regions.iter().map(|r| r.name.clone()).collect(),
            control_plane: topo.control_plane,
        };
        for (i, st) in s.steps.iter().enumerate() {
            let p = format!("step[{i}]");
            if st.at_s < 0.0 || st.at_s > s.duration_s {
                errs.push(format!(
                    "{p}.at_s: {} is outside the run (0..{})",
                    st.at_s, s.duration_s
                ));
            }
            known.check_action(&p, &st.action, &mut errs);
            check_schedule(&p, st, s.duration_s, &known, &mut errs);
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

/// The topology's names, for checking a step's targets.
struct Known {
    instances: Vec<String>,
    zones: Vec<String>,
    links: Vec<String>,
    regions: Vec<String>,
    control_plane: bool,
}

impl Known {
    fn target(&self, p: &str, list: &[String], t: &str, what: &str, errs: &mut Vec<String>) {
        if !list.iter().any(|x| x == t) {
            errs.push(format!(
                "{p}.target: unknown {what} {t:?} (known: {})",
                list.join(", ")
            ));
        }
    }

    /// One action's targets and values; `p` is the step's path.
    fn check_action(&self, p: &str, action: &Action, errs: &mut Vec<String>) {
        let field = |problems: Vec<String>, errs: &mut Vec<String>| {
            errs.extend(problems.into_iter().map(|e| format!("{p}.{e}")))
        };
        match action {
            Action::KillInstance { target }
            | Action::RestartInstance { target }
            | Action::ClearInstanceFault { target }
            | Action::PauseInstance { target }
            | Action::ResumeInstance { target } => {
                self.target(p, &self.instances, target, "instance", errs)
            }
            a @ Action::InstanceFault { target, .. } => {
                self.target(p, &self.instances, target, "instance", errs);
                if let Some(f) = a.instance_fault() {
                    field(f.problems(), errs);
                }
            }
            Action::KillZone { target } | Action::RestartZone { target } => {
                self.target(p, &self.zones, target, "zone", errs)
            }
            Action::Link { target, .. } | Action::RestoreLink { target } => {
                self.target(p, &self.links, target, "link", errs)
            }
            Action::EvacuateRegion {
                target,
                steps,
                step_s,
            } => {
                self.target(p, &self.regions, target, "region", errs);
                if *steps == 0 || *step_s < 0.0 {
                    errs.push(format!(
                        "{p}: steps must be at least 1 and step_s not negative"
                    ));
                }
            }
            Action::RestoreRegion { target }
            | Action::KillEdges { target }
            | Action::RestartEdges { target } => {
                self.target(p, &self.regions, target, "region", errs)
            }
            Action::StoreWrites {
                target,
                reject,
                reject_percent,
            } => {
                self.target(p, &self.regions, target, "region", errs);
                let knob = crate::store::WritesKnob {
                    reject: *reject,
                    reject_percent: *reject_percent,
                };
                if let Err(e) = knob.percent() {
                    errs.push(format!("{p}.{e}"));
                }
            }
            Action::StoreLatency {
                target,
                delay_ms,
                jitter_ms,
                writes_only,
            } => {
                self.target(p, &self.regions, target, "region", errs);
                let l = crate::store::StoreLatency {
                    delay_ms: *delay_ms,
                    jitter_ms: *jitter_ms,
                    writes_only: *writes_only,
                };
                field(l.problems(), errs);
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
                    if !self.zones.contains(z) {
                        errs.push(format!("{p}.zone: unknown zone {z:?}"));
                    }
                }
                for (f, v) in [
                    ("abort_percent", abort_percent),
                    ("delay_percent", delay_percent),
                ] {
                    if !(0.0..=100.0).contains(v) {
                        errs.push(format!("{p}.{f}: a percentage between 0 and 100, got {v}"));
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
                    if !self.zones.contains(z) {
                        errs.push(format!("{p}.zones: unknown zone {z:?}"));
                    }
                }
            }
            Action::Rollout(spec) => {
                if !self.control_plane {
                    errs.push(format!(
                        "{p}.action: a rollout needs the lab's control plane (the topology has control_plane = false)"
                    ));
                }
                field(spec.problems(&self.zones, &self.instances), errs)
            }
            Action::ClearFaults | Action::PushConfigWithoutFloor => {}
        }
        if let Some(ls) = action.link_settings() {
            if let Err(e) = ls.validate() {
                errs.push(format!("{p}: {e}"));
            }
        }
    }
}

/// A step's `repeat` or `ramp`: sensible numbers, every occurrence inside
/// the run, and — since a ramp is linear, its last occurrence is its other
/// extreme — the ramp's last value as valid as its first.
fn check_schedule(p: &str, st: &Step, duration_s: f64, known: &Known, errs: &mut Vec<String>) {
    let (form, every_s, times) = match (&st.repeat, &st.ramp) {
        (None, None) => return,
        (Some(_), Some(_)) => {
            errs.push(format!(
                "{p}: repeat and ramp cannot be combined (a ramp already repeats its step)"
            ));
            return;
        }
        (Some(r), None) => ("repeat", r.every_s, r.times),
        (None, Some(r)) => ("ramp", r.every_s, r.times),
    };
    let before = errs.len();
    if !(every_s >= MIN_EVERY_S && every_s.is_finite()) {
        errs.push(format!(
            "{p}.{form}.every_s: at least {MIN_EVERY_S} s, got {every_s}"
        ));
    }
    if !(1..=MAX_TIMES).contains(&times) {
        errs.push(format!(
            "{p}.{form}.times: between 1 and {MAX_TIMES}, got {times}"
        ));
    }
    if let Some(r) = &st.ramp {
        if r.by == 0.0 || !r.by.is_finite() {
            errs.push(format!(
                "{p}.ramp.by: a number other than 0 (a ramp by 0 is a repeat), got {}",
                r.by
            ));
        }
    }
    if errs.len() > before {
        return;
    }
    let last_at = st.last_at_s();
    if last_at > duration_s {
        errs.push(format!(
            "{p}.{form}: its last occurrence (of {times}, {every_s} s apart) at {last_at} s is outside the run (0..{duration_s})"
        ));
    }
    match st.occurrences() {
        Err(e) => errs.push(format!("{p}.{e}")),
        Ok(all) if st.ramp.is_some() => {
            let last = all.last().expect("times is at least 1");
            let mut found = Vec::new();
            known.check_action(p, &last.action, &mut found);
            errs.extend(
                found
                    .into_iter()
                    .map(|e| format!("{e} (at the ramp's last occurrence, {} s)", last.at_s)),
            );
        }
        Ok(_) => {}
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
