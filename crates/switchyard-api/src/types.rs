//! Every request and answer of the control plane's API, defined once: the
//! server serializes these, the client, the CLI, the lab and the tests
//! deserialize them. A field renamed here is renamed for both sides.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use switchyard_model::finding::{Alarm, Finding, Mitigation};
use switchyard_model::incident::{Durations, Severity, Stage, Status};
use switchyard_model::{AuditEntry, AuditRecord, ConfigDoc, Controls, Op, RegionState};

/// `POST /v1/ops`: one operation, why, and whether to force it past the rules
/// or only preview it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRequest {
    pub op: Op,
    #[serde(default)]
    pub reason: String,
    /// Past the safety rules (admin tokens only; audited with what it overrode).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Only say what would happen: capacity after and every rule's verdict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview: bool,
    /// The drill this operation is part of; the audit log then names the
    /// drill as the actor, with the token it acted through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<String>,
}

impl OpRequest {
    pub fn new(op: Op, reason: impl Into<String>) -> OpRequest {
        OpRequest {
            op,
            reason: reason.into(),
            force: false,
            preview: false,
            drill: None,
        }
    }

    pub fn force(mut self, force: bool) -> OpRequest {
        self.force = force;
        self
    }

    pub fn preview(mut self) -> OpRequest {
        self.preview = true;
        self
    }

    pub fn drill(mut self, name: impl Into<String>) -> OpRequest {
        self.drill = Some(name.into());
        self
    }
}

/// An accepted change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub accepted: bool,
    pub version: u64,
    /// False when the controls already said what the operation asks for:
    /// nothing was committed, audited or pushed, and `version` is the
    /// current one.
    #[serde(default = "yes")]
    pub changed: bool,
}

fn yes() -> bool {
    true
}

/// How much the API takes: a body, and each free-text field and name in
/// it. A reason is copied into every edge's state and every audit entry,
/// so it is held to what a person writes, not what a script can send.
pub mod limits {
    /// A request body, in bytes (a whole controls document fits many times).
    pub const BODY: usize = 256 * 1024;
    /// The reason of an operation, a silence or a severity change.
    pub const REASON: usize = 1024;
    /// A note, a status or stage note, an incident title.
    pub const NOTE: usize = 4096;
    /// A name or id: a service, zone, region, drill, incident or scope prefix.
    pub const NAME: usize = 128;

    /// `field: at most N bytes, got M` when `value` is longer than `max`.
    pub fn check(field: &str, value: &str, max: usize) -> Result<(), String> {
        if value.len() > max {
            Err(format!(
                "{field}: at most {max} bytes, got {} bytes",
                value.len()
            ))
        } else {
            Ok(())
        }
    }
}

/// A safety rule's refusal, with its numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub rule: String,
    pub message: String,
}

/// What an operation would do, without doing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub op: Op,
    /// Instances of the service that would still take traffic.
    pub serving_instances_after: usize,
    pub total_instances: usize,
    pub capacity_after: f64,
    pub allowed: bool,
    pub refusals: Vec<Refusal>,
    /// When the config has a `[dns]` section: the DNS answers the operation
    /// moves (`switchyard dns` servers and the outside zones they push to
    /// follow the same controls). Only answers that change are listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsMove>,
    /// Every safety rule that judged the change, refused or passed, with
    /// its numbers, in the order the rules apply (refusals first).
    #[serde(default)]
    pub rules: Vec<RuleVerdict>,
}

/// One safety rule's verdict on a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleVerdict {
    pub rule: String,
    pub passed: bool,
    pub message: String,
}

/// One service's DNS answer for one kind of client, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsMove {
    pub service: String,
    /// The service's names DNS answers (`svc.example.com`).
    pub names: Vec<String>,
    /// The clients' region by the geo map; `None`: clients no prefix
    /// places, which is also what pushed outside zones hold.
    pub client_region: Option<String>,
    /// Regions answered (with a share above 0), in steering order.
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// In `before`, not in `after`.
    pub dropped: Vec<String>,
}

/// The body of every error answer: a code (`invalid`, `not_found`,
/// `refused`, `unauthorized`, `forbidden`, `store_unavailable`, …) and the
/// reasons, each naming what is wrong; refusals also name their rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Refusal>,
}

impl ErrorBody {
    /// Whether a safety rule of that name refused.
    pub fn refused_by(&self, rule: &str) -> bool {
        self.rules.iter().any(|r| r.rule == rule)
    }
}

/// `GET /v1/controls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlsView {
    pub version: u64,
    pub controls: Controls,
}

/// `GET /v1/config`: which config each member runs. A member is an edge's
/// zone name, or `dns:<name>` for a DNS server (its watch identity). The
/// control plane holds it as `switchyard_control::configs::Assignment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigAssignment {
    /// Grows by one with every assignment, never goes back.
    pub revision: u64,
    /// What every member not in `members` runs.
    pub base: ConfigDoc,
    /// What the `members` run, while a change rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ConfigDoc>,
    #[serde(default)]
    pub members: BTreeSet<String>,
}

impl ConfigAssignment {
    /// The config `member` is to run: the target when it is named and
    /// there is one, else the base.
    pub fn doc_for(&self, member: &str) -> &ConfigDoc {
        match &self.target {
            Some(t) if self.members.contains(member) => t,
            _ => &self.base,
        }
    }
}

/// A control plane among those sharing a store: its id (unique per
/// process) and the URL its API answers on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaneRef {
    pub id: String,
    pub url: String,
}

/// `GET /v1/leader`: which control plane acts (runs playbooks, tracks
/// incidents, notifies). Every plane serves the API and the watch streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderView {
    /// The plane that answered.
    pub me: PlaneRef,
    /// Whether it is the leader and may act now.
    pub acting: bool,
    /// The leader, when known (itself when acting).
    pub leader: Option<PlaneRef>,
}

/// `GET /v1/status`: every service, region and zone with what is in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: u64,
    pub services: Vec<ServiceStatus>,
    /// Watch streams open now (edges and DNS servers following this plane).
    pub watchers: usize,
    /// Why what this plane serves may not be the store's current state
    /// (the store unreachable since start: a snapshot is served), or why it
    /// publishes nothing (its store behind the edges); `None` when neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service: String,
    pub read_only: bool,
    pub shed_level: u8,
    pub regions: Vec<RegionStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionStatus {
    pub region: String,
    pub state: RegionState,
    pub weight: f64,
    pub failover: bool,
    pub read_only: bool,
    /// Instances that must keep serving in the region (the capacity guard).
    pub floor: usize,
    pub zones: Vec<ZoneStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneStatus {
    pub zone: String,
    /// In force now: a shift whose lease ran out counts as 1.
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_reason: Option<String>,
    pub instances: usize,
}

/// `GET /v1/history`: the audit log, newest last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<AuditEntry>,
}

/// `GET /v1/history` with `since`, `until` or `after`: one page of the audit
/// log in a time window, oldest first, each entry with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub records: Vec<AuditRecord>,
    /// Ask again with `after` set to this for the rest; absent at the end
    /// of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Which part of the audit log a [`HistoryPage`] holds: entries after
/// sequence number `after` (0: from the first) whose time (Unix ms) lies
/// within `since..=until`, at most `limit` of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRange {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub after: u64,
    pub limit: usize,
}

/// `GET /v1/history?limit=N&service=S&actor=A&kind=K`: the newest entries
/// that match every filter given (looked for among the newest 10,000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub service: Option<String>,
    /// An actor's kind (`person`, `playbook`, `drill`, `rollout`) or name.
    pub actor: Option<String>,
    /// `change`, `recommendation`, `verification`, `dns_push`, `rollout`.
    pub kind: Option<String>,
}

/// `GET /v1/findings`: what detection and the playbooks see now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FindingsView {
    /// The latest findings (at most 200), open and closed.
    pub findings: Vec<Finding>,
    pub open: usize,
    pub mitigations: Vec<Mitigation>,
    pub alarms: Vec<Alarm>,
}

/// `GET /v1/incidents`: one line per incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentList {
    pub incidents: Vec<IncidentSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentSummary {
    pub id: String,
    pub service: String,
    pub title: String,
    pub status: Status,
    pub severity: Severity,
    pub scopes: Vec<String>,
    pub opened_by: String,
    pub stages: BTreeMap<Stage, u64>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub traffic_share: f64,
    pub failed: u64,
}

/// `GET /v1/incidents?status=…&service=…`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    /// `open`, `all` (the default) or a status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// `POST /v1/incidents`: an incident opened by a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIncident {
    pub service: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// The answer to opening one: an open incident of the service is joined
/// rather than duplicated (`created` false).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub id: String,
    pub created: bool,
}

/// `POST /v1/incidents/{id}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: String,
    #[serde(default)]
    pub note: String,
}

/// `POST /v1/incidents/{id}/stage` (and `…/ack`, which needs no stage).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default)]
    pub note: String,
}

/// `POST /v1/incidents/{id}/note`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    pub text: String,
}

/// `POST /v1/incidents/{id}/severity`: pinned by a person from then on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityChange {
    pub severity: String,
    pub reason: String,
}

/// `GET /v1/incidents/stats?from_ms=…&to_ms=…`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<u64>,
}

pub type Stats = Durations;

/// `POST /v1/silences`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_prefix: Option<String>,
    /// How long, e.g. `2h`.
    #[serde(rename = "for")]
    pub duration: String,
    pub reason: String,
}

/// `GET /v1/silences`: the ones in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceList {
    pub silences: Vec<switchyard_model::notice::Silence>,
}

/// `DELETE /v1/silences/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    pub removed: String,
}

/// `GET /v1/status-feed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFeed {
    pub services: Vec<ServiceFeed>,
}

/// What users of a service are told (the rules are in docs/incidents.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceHealth {
    Operational,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceFeed {
    pub service: String,
    pub status: ServiceHealth,
    pub incident: Option<FeedIncident>,
    pub last_60s: LastMinute,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedIncident {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    pub since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastMinute {
    pub requests: u64,
    pub failed: u64,
    pub error_rate: f64,
    pub p99_ms: f64,
}

/// `POST /v1/ingest/alertmanager`: how many alerts came, how many name a place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestedAlerts {
    pub alerts: usize,
    pub with_scope: usize,
}

/// `POST /v1/ingest/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: bool,
}
