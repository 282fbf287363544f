//! The report `switchyard drill SCENARIO --json FILE` writes. Field names are a
//! contract: add fields, never rename or remove them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub scenario: String,
    /// Every expectation held and the drill was not aborted.
    pub passed: bool,
    /// Client-side counts over the whole run. A failed request is a
    /// connection error, a timeout, or a 5xx other than a deliberate shed or
    /// read-only answer; those two are counted apart.
    pub requests_total: u64,
    pub requests_failed: u64,
    pub requests_shed: u64,
    pub requests_read_only: u64,
    /// Seconds from the start of the run.
    pub fault_at_s: Option<f64>,
    /// First finding whose scope matches the fault.
    pub detected_at_s: Option<f64>,
    /// First moment after the fault from which clients' error rate and p99
    /// were both back within the steady state for a few seconds in a row,
    /// before the fault was removed; the fault time itself when they never
    /// left it, `None` when they did not come back before the restore.
    pub mitigated_at_s: Option<f64>,
    /// When the fault was removed (the scenario's restore step), if it was.
    pub restored_at_s: Option<f64>,
    /// First moment after the restore when error rate and p99 are both back
    /// within the steady state.
    pub recovered_at_s: Option<f64>,
    pub duration_s: f64,
    pub steady_state: SteadyState,
    pub findings: Vec<Finding>,
    pub actions: Vec<Action>,
    pub expectations: Vec<Expectation>,
    /// Set when a stop condition ended the run early.
    pub aborted: Option<String>,
    /// One entry per second of the run.
    pub timeline: Vec<Second>,
    /// Unix milliseconds of second 0, to place absolute times on the run.
    #[serde(default)]
    pub started_at_ms: u64,
    /// The incidents the control plane opened during the run, as it
    /// recorded them (stages in Unix ms, timeline, impact).
    #[serde(default)]
    pub incidents: Vec<serde_json::Value>,
    /// What the control plane's receivers got during the run.
    #[serde(default)]
    pub notifications: Vec<serde_json::Value>,
    /// The control plane's alarms (SLO burn, trend, threshold, missing
    /// heartbeat) seen firing during the run, first fired first.
    #[serde(default)]
    pub alarms: Vec<AlarmFired>,
    /// The config rollouts the drill started, as it followed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutRun>,
    /// Which config version each edge ran, second by second, while the
    /// drill followed a rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_versions: Vec<ConfigSecond>,
}

/// A staged config rollout a drill started, as the drill followed it
/// (times in seconds from the start of the run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutRun {
    pub id: String,
    /// Config versions, before and going out.
    pub from: String,
    pub to: String,
    /// `succeeded`, `rolled_back`, `aborted`, or `running`/`paused` when
    /// the run ended first.
    pub state: String,
    pub canary: String,
    /// Wave names in order.
    pub waves: Vec<String>,
    pub waves_passed: usize,
    pub started_at_s: f64,
    /// When the canary edge was first seen running the new config.
    pub canary_took_at_s: Option<f64>,
    /// When the rollout ended, by the control plane's record.
    pub ended_at_s: Option<f64>,
    /// One line per verdict: wave, verdict and its reason with the numbers.
    pub verdicts: Vec<String>,
    /// The incident its failure opened or joined.
    pub incident: Option<String>,
}

/// One second: the config version each edge (by zone) ran at the drill's
/// last look in that second; `?` for an edge that did not answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigSecond {
    pub t: u32,
    pub zones: BTreeMap<String, String>,
}

/// An alarm of the control plane seen firing during the run. The control
/// plane shows alarms firing now; the drill looks once a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmFired {
    /// As the control plane names it: `slo_burn:RULE`, `trend:zone:ZONE`,
    /// `threshold:NAME:LEVEL:PLACE`, `heartbeat_missing:SOURCE`.
    pub name: String,
    pub service: String,
    /// `page` or `ticket`.
    pub severity: String,
    /// First and last time a look found it firing, seconds from the start.
    pub first_at_s: f64,
    pub last_at_s: f64,
    /// How many separate times it fired (gone at a look in between).
    pub episodes: u32,
    /// What it said when first seen (burn rates, slope, value).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SteadyState {
    /// Largest acceptable share of failed requests per second (0..1).
    pub max_error_rate: f64,
    /// Largest acceptable p99 per second, in milliseconds.
    pub max_p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `instance:NAME`, `zone:NAME`, `region:NAME` or `link:FROM->TO`.
    pub scope: String,
    /// `errors`, `latency` or `unreachable`.
    pub kind: String,
    pub at_s: f64,
    /// The numbers that fired and their peers' numbers.
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// What changed, for example `kill instance use-a-1` or `zone us-east-a weight 0`.
    pub what: String,
    /// Who or what asked for it and why: the scenario step, a playbook, a person.
    pub why: String,
    pub at_s: f64,
    pub accepted: bool,
    /// The rule that refused it, when it was refused.
    pub refused_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expectation {
    /// As written in the scenario, for example `failed_ratio <= 0.01`.
    pub name: String,
    pub held: bool,
    /// The measured value and the bound, in words.
    pub detail: String,
}

/// One second of the run as clients saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds from the start of the run.
    pub t: u32,
    pub requests: u64,
    pub failures: u64,
    pub shed: u64,
    pub read_only: u64,
    pub p99_ms: f64,
    /// By the region of the client group that sent the request (where its
    /// users are): what users there felt, wherever DNS sent them.
    pub regions: BTreeMap<String, Cell>,
    /// By the zone whose instance served the request (`x-switchyard-upstream`);
    /// requests no instance answered are under `"none"`.
    pub zones: BTreeMap<String, Cell>,
    /// Client group → region of the edge each request was sent to → requests
    /// (`"none"`: the group had no address to send it to). Reports written
    /// before groups resolved through DNS have none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entered: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub requests: u64,
    pub failures: u64,
    pub p99_ms: f64,
}

impl DrillReport {
    /// Time to detect, from the fault.
    pub fn ttd_s(&self) -> Option<f64> {
        Some(self.detected_at_s? - self.fault_at_s?)
    }

    /// Time to mitigate, from the fault.
    pub fn ttm_s(&self) -> Option<f64> {
        Some(self.mitigated_at_s? - self.fault_at_s?)
    }
}
