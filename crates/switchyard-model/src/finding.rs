//! Findings and alarms: what detection concludes, in the one shape the
//! engine emits, the control plane serves on its API, incidents group and
//! drills report; and the mitigations playbooks hold open for them.

use serde::{Deserialize, Serialize};

/// A detector's conclusion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `instance:NAME`, `zone:NAME`, `region:NAME` or `link:FROM->TO`.
    pub scope: String,
    /// `errors`, `latency` or `unreachable`.
    pub kind: String,
    pub service: String,
    /// When the condition began (the first second of the opening run).
    pub start_ms: u64,
    /// When the engine concluded.
    pub detected_ms: u64,
    /// When it cleared; `None` while open.
    pub end_ms: Option<u64>,
    /// The numbers that fired and the peers' numbers, at detection.
    pub evidence: serde_json::Value,
}

/// A non-localized alarm: an SLO burning too fast, a metric trending to its
/// threshold, an application heartbeat gone quiet. Current state, not history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub name: String,
    pub service: String,
    pub severity: String,
    pub at_ms: u64,
    pub detail: serde_json::Value,
}

impl Alarm {
    /// A route's SLO burn in one region: detection also turns it into a
    /// finding (`slo_burn:ROUTE`), which is what incidents follow.
    pub fn is_route_burn(&self) -> bool {
        self.detail.get("route").is_some()
    }

    /// The service the alarm is about. An application heartbeat names its
    /// sender (`catalog/us-east-a-1`): the part before the `/`.
    pub fn owner(&self) -> &str {
        if !self.service.is_empty() {
            return &self.service;
        }
        let source = self.name.strip_prefix("heartbeat_missing:").unwrap_or("");
        source.split('/').next().unwrap_or("")
    }

    /// Where the alarm points, in the scope words findings use:
    /// `zone:a` for a trend, the place of a threshold, `heartbeat:SOURCE`
    /// for a silent heartbeat, and `service` for a burn of the whole
    /// service's budget.
    pub fn scope(&self) -> String {
        let parts: Vec<&str> = self.name.split(':').collect();
        match parts.as_slice() {
            ["trend", level, place] => format!("{level}:{place}"),
            ["threshold", _, level, place] => format!("{level}:{place}"),
            ["heartbeat_missing", ..] => format!(
                "heartbeat:{}",
                self.name.trim_start_matches("heartbeat_missing:")
            ),
            _ => "service".into(),
        }
    }

    /// In words, for an incident's title and timeline.
    pub fn describe(&self) -> String {
        let parts: Vec<&str> = self.name.split(':').collect();
        let num = |k: &str| self.detail.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
        match parts.as_slice() {
            ["slo_burn", rule] => format!(
                "SLO burn {rule} across the service ({:.1}× over the long window)",
                num("long_burn")
            ),
            ["trend", level, place] => format!(
                "error rate in {level} {place} trending to {:.1} % within {:.0} s",
                num("threshold") * 100.0,
                num("crosses_in_s")
            ),
            ["threshold", name, level, place] => format!(
                "threshold {name} exceeded in {level} {place} ({} above {})",
                num("value"),
                num("above")
            ),
            ["heartbeat_missing", ..] => format!(
                "heartbeat of {} silent for {:.0} s",
                self.name.trim_start_matches("heartbeat_missing:"),
                num("silent_ms") / 1000.0
            ),
            _ => self.name.clone(),
        }
    }
}

/// One mitigation a playbook has in progress, keyed by (service, scope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// How long the place must be known healthy before traffic returns:
    /// the playbooks' hold, doubled for each earlier failback into this
    /// place that had to be undone.
    #[serde(default)]
    pub hold_ms: u64,
    /// Failbacks into this place undone so far (mitigated again soon after).
    #[serde(default)]
    pub failbacks_undone: u32,
    /// A region finding answered by shifting its impaired zones rather than
    /// evacuating it: the zones shifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Since when a canary share of real traffic has been going back into
    /// the shifted zones, before the failback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_since_ms: Option<u64>,
}
