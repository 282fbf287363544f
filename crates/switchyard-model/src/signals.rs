//! The signals edges publish once per interval: what they observed of every
//! (service, route, target zone, instance) they sent traffic to, and the
//! results of their active probes. Edges produce them, detection consumes
//! them, traces store them: one wire format for all three.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Error classes that count against what they were sent to. Deliberate
/// rejections by the edge (`shed`, `read_only`) are not failures of the target.
pub const FAILURE_CLASSES: &[&str] = &[
    "status_5xx",
    "upstream_connect",
    "upstream_timeout",
    "upstream_protocol",
    "fault",
];

/// One series of one interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub service: String,
    pub route: String,
    pub target_zone: String,
    pub instance: String,
    /// The route writes (its kind is `write`): write-path impairment is told
    /// apart from a failing region by comparing write routes with reads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write: bool,
    pub requests: u64,
    /// Failed requests by class (`status_5xx`, `upstream_connect`, `upstream_timeout`, `shed`, ...).
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Series {
    /// Requests that failed because of the target.
    pub fn failures(&self) -> u64 {
        FAILURE_CLASSES
            .iter()
            .filter_map(|c| self.errors.get(*c))
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeTarget {
    /// A route's heartbeat endpoint on an instance of the edge's region.
    Instance,
    /// Another region's edge, through the path forwarded requests take.
    Edge,
}

/// One active probe: the heartbeat on every API, not only `/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    pub service: String,
    pub route: String,
    pub target: ProbeTarget,
    /// The instance's name, or the probed edge's zone.
    pub name: String,
    pub target_zone: String,
    pub target_region: String,
    /// The probed route writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write: bool,
    pub ok: bool,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything one edge saw in one interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Unix milliseconds at the end of the interval.
    pub at_ms: u64,
    pub interval_ms: u64,
    pub region: String,
    pub source_zone: String,
    pub series: Vec<Series>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
}
