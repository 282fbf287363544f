//! The edge's admin API (`GET /status` on each edge's admin listener) as
//! types: the edge writes them, the lab and the tests read them. What an
//! operator sees of one edge at a glance: its controls and where they came
//! from, the control-plane link, and per service the capacity guard's mode,
//! zone weights, limits and every instance's health.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_model::{CapacityMode, Fault, RegionControl};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeStatus {
    pub zone: String,
    pub region: String,
    pub uptime_s: u64,
    pub controls: EdgeControls,
    pub control_plane: ControlPlaneLink,
    /// The config running (absent from edges that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::configs::RunningConfig>,
    pub services: Vec<EdgeService>,
}

impl EdgeStatus {
    /// The service of that name, if this edge serves it.
    pub fn service(&self, name: &str) -> Option<&EdgeService> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// The controls in force and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeControls {
    pub version: u64,
    /// The control-plane store the controls in force come from (absent for
    /// hand-written ones): a plane on another store is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<switchyard_model::Origin>,
    /// `control-plane`, `file`, `admin`, `last-known-good` or `default`.
    pub source: String,
    pub faults: Vec<Fault>,
    /// Why the last-known-good file could not be used at start-up (torn,
    /// empty, unreadable or no longer fitting the config); `None` when it was
    /// used or there was none. The edge then started from the freshest other
    /// source, which an operator must know is not what it served before.
    #[serde(default)]
    pub last_known_good_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlPlaneLink {
    pub url: Option<String>,
    pub connected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeService {
    pub name: String,
    /// The capacity guard's mode now.
    pub mode: CapacityMode,
    pub panic: bool,
    /// Instances that must keep serving in this region.
    pub floor: usize,
    /// Instances that would take a request now.
    pub serving: usize,
    pub instances_in_region: usize,
    /// Forwarded requests served here because no region to forward to could
    /// be reached (failing open), since the edge started.
    pub forward_failed_open: u64,
    pub read_only: bool,
    pub shed_level: u8,
    pub limits: EdgeLimits,
    pub zones: Vec<EdgeZone>,
    pub regions: BTreeMap<String, RegionControl>,
    pub instances: Vec<InstanceView>,
}

impl EdgeService {
    pub fn instance(&self, name: &str) -> Option<&InstanceView> {
        self.instances.iter().find(|i| i.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeLimits {
    /// The adaptive limit now (the configured maximum when not adaptive).
    pub concurrency_limit: u32,
    pub max_concurrency: u32,
    pub adaptive: bool,
    pub max_rps: Option<f64>,
    pub inflight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeZone {
    pub zone: String,
    /// As the controls say.
    pub weight: f64,
    /// In force now: a shift whose lease ran out counts as 1.
    pub effective_weight: f64,
    pub shift_expires_at_ms: Option<u64>,
}

/// One instance as this edge sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub name: String,
    pub zone: String,
    pub addr: String,
    pub health: Health,
    pub ejections: u32,
    pub ejected_for_ms: Option<u64>,
    pub last_ejection_reason: Option<EjectReason>,
    pub consecutive_5xx: u32,
    pub inflight: u32,
    /// The active health check's view, apart from outlier ejection.
    #[serde(default)]
    pub check: CheckView,
}

/// What the active health checks say of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    pub state: CheckState,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
    /// Why the last failed check failed (`connect`, `timeout`, `status 503`…).
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Not checked yet, or checks are off: no evidence either way, so the
    /// instance stays in rotation on what the traffic says of it.
    #[default]
    Unknown,
    Up,
    /// Failed `unhealthy_threshold` checks in a row: out of rotation.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Ejected,
    /// Ejection time is over; waiting for an active check to pass.
    Probing,
    /// Failing its active health checks (dead, not an outlier): out of
    /// rotation whatever the ejection cap, until the checks pass again.
    Down,
}

/// Why the edge ejected an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EjectReason {
    Consecutive5xx,
    ConsecutiveLocalFailures,
    SuccessRate,
    Latency,
    FailedRecheck,
}

impl EjectReason {
    /// The name used in JSON, metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::Consecutive5xx => "consecutive_5xx",
            EjectReason::ConsecutiveLocalFailures => "consecutive_local_failures",
            EjectReason::SuccessRate => "success_rate",
            EjectReason::Latency => "latency",
            EjectReason::FailedRecheck => "failed_recheck",
        }
    }
}
