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
