//! The signals edges publish once per interval: what they observed of every
//! (service, route, target zone, instance) they sent traffic to, and the
//! results of their active probes. Edges produce them, detection consumes
//! them, traces store them: one wire format for all three.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a request an edge handled did not succeed, as its signals record it.
/// The edge classifies, detection and SLA arithmetic read the class: one
/// list, so a new class cannot be emitted without deciding whether it counts.
/// Its serde form is the class's name in signals and traces (`status_5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The target answered with a 5xx status.
    #[serde(rename = "status_5xx")]
    Status5xx,
    /// The target could not be connected to.
    UpstreamConnect,
    /// The target did not answer, or not completely, in time.
    UpstreamTimeout,
    /// The exchange with the target broke or spoke bad HTTP.
    UpstreamProtocol,
    /// An injected fault answered in the target's place; it stands for the
    /// target failing, so drills exercise detection.
    Fault,
    /// Deliberately rejected by load shedding.
    Shed,
    /// A write deliberately refused in read-only mode.
    ReadOnly,
    /// No instance could be chosen: the edge's routing, not a target.
    NoInstance,
    /// The request itself was wrong: the client's, not the target's.
    BadRequest,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::Status5xx,
        ErrorClass::UpstreamConnect,
        ErrorClass::UpstreamTimeout,
        ErrorClass::UpstreamProtocol,
        ErrorClass::Fault,
        ErrorClass::Shed,
        ErrorClass::ReadOnly,
        ErrorClass::NoInstance,
        ErrorClass::BadRequest,
    ];

    /// The name in signals, traces and metric labels; equal to the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Status5xx => "status_5xx",
            ErrorClass::UpstreamConnect => "upstream_connect",
            ErrorClass::UpstreamTimeout => "upstream_timeout",
            ErrorClass::UpstreamProtocol => "upstream_protocol",
            ErrorClass::Fault => "fault",
            ErrorClass::Shed => "shed",
            ErrorClass::ReadOnly => "read_only",
            ErrorClass::NoInstance => "no_instance",
            ErrorClass::BadRequest => "bad_request",
        }
    }

    /// Whether it counts against what the request was sent to (detection,
    /// availability). Deliberate rejections (`shed`, `read_only`) and
    /// requests that never had a target do not.
    pub fn counts_against_target(self) -> bool {
        match self {
            ErrorClass::Status5xx
            | ErrorClass::UpstreamConnect
            | ErrorClass::UpstreamTimeout
            | ErrorClass::UpstreamProtocol
            | ErrorClass::Fault => true,
            ErrorClass::Shed
            | ErrorClass::ReadOnly
            | ErrorClass::NoInstance
            | ErrorClass::BadRequest => false,
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Requests another region's edge forwarded here: served here, but
    /// their users entered there and are counted there (in its `forward`
    /// series), so they are not this region's users a second time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded_in: bool,
    pub requests: u64,
    /// Failed requests by [`ErrorClass`], keyed by its name. The key stays a
    /// string so a snapshot with a class this build does not know (a newer
    /// edge's, an older trace's) still reads, its count kept and not counted
    /// as a failure.
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Series {
    /// Requests that failed because of the target.
    pub fn failures(&self) -> u64 {
        ErrorClass::ALL
            .into_iter()
            .filter(|c| c.counts_against_target())
            .map(|c| self.count(c))
            .sum()
    }

    /// Requests of one class.
    pub fn count(&self, class: ErrorClass) -> u64 {
        self.errors.get(class.as_str()).copied().unwrap_or(0)
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
    /// The version of the config the edge ran during the interval (see
    /// [`crate::ConfigDoc`]), so what it saw can be told apart by config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// The last config the edge was sent and refused, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_refused: Option<ConfigRefusal>,
}

/// A config an edge was sent and kept out, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfigRefusal {
    pub version: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_class_names_are_their_serde_form() {
        for c in ErrorClass::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            let back: ErrorClass = serde_json::from_value(c.as_str().into()).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn only_the_targets_failures_count() {
        let s: Series = serde_json::from_value(serde_json::json!({
            "service": "svc", "route": "get", "target_zone": "a", "instance": "a-1",
            "requests": 100,
            "errors": {"status_5xx": 1, "upstream_connect": 2, "upstream_timeout": 4,
                       "upstream_protocol": 8, "fault": 16, "shed": 32, "read_only": 64,
                       "a_class_from_elsewhere": 128},
            "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0,
        }))
        .unwrap();
        assert_eq!(s.failures(), 31);
        assert_eq!(s.count(ErrorClass::Shed), 32);
    }
}
