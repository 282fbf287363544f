//! What a canary analysis says, as records: the per-second samples it
//! reads, and its verdict with the numbers. The statistics that produce a
//! verdict are pure code in `switchyard-detect::canary`; these types live
//! here so the API, the store and the CLI carry them without detection.

use serde::{Deserialize, Serialize};

/// One second of one group (canary or baseline) on one route. Several edges
/// of a group may each give a `Second` for the same `at_ms`: each is one
/// sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub at_ms: u64,
    pub requests: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not enough traffic to judge: bake longer.
    Wait,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Wait => "wait",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ErrorRatio,
    P50,
    P99,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::ErrorRatio, Metric::P50, Metric::P99];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ErrorRatio => "error_ratio",
            Metric::P50 => "p50",
            Metric::P99 => "p99",
        }
    }
}

/// One metric of one route. `canary` and `baseline` are error ratios (0–1)
/// or median per-second latencies in ms; 0 for a side without data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub route: String,
    pub metric: Metric,
    pub canary: f64,
    pub baseline: f64,
    pub canary_requests: u64,
    pub baseline_requests: u64,
    /// `None` when no test ran (not judged, no variance, or the canary-only
    /// bound decided).
    pub p_value: Option<f64>,
    pub verdict: Verdict,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Per route (sorted by name), per metric in `Metric::ALL` order.
    pub metrics: Vec<MetricResult>,
    /// One sentence with the numbers.
    pub reason: String,
}
