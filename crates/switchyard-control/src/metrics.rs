//! Prometheus metrics of the control plane, at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// `person` or `playbook`.
    pub by: String,
    /// `accepted`, `refused` or `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub receiver: String,
    /// `delivered` or `failed` (one per attempt).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `succeeded`, `rolled_back` or `aborted`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `pass`, `fail` or `wait` (a wave paused for want of traffic).
    pub verdict: String,
}

pub struct Metrics {
    registry: Registry,
    /// The wave of the running rollout (1-based); 0 when none runs.
    pub rollout_wave: Gauge,
    /// 1 while a rollout is paused (by a person, or for want of traffic).
    pub rollout_paused: Gauge,
    pub rollouts: Family<OutcomeLabels, Counter>,
    pub rollout_verdicts: Family<VerdictLabels, Counter>,
    pub changes: Family<ChangeLabels, Counter>,
    pub refusals: Family<RuleLabels, Counter>,
    pub version: Gauge,
    pub watchers: Gauge,
    pub open_findings: Gauge,
    pub open_incidents: Gauge,
    pub notifications: Family<NotifyLabels, Counter>,
    /// 1 while this plane is the elected one that acts, 0 otherwise.
    pub leader: Gauge,
    /// Incident writes refused because the store's copy had changed since
    /// this plane read it (the store's copy was taken instead).
    pub incident_conflicts: Counter,
    /// Live-view streams (consoles) open now.
    pub live_viewers: Gauge,
    /// Console logins, by result (`ok`, `refused`).
    pub console_logins: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard_control");
        let changes = Family::<ChangeLabels, Counter>::default();
        let refusals = Family::<RuleLabels, Counter>::default();
        let version = Gauge::default();
        let watchers = Gauge::default();
        let open_findings = Gauge::default();
        let open_incidents = Gauge::default();
        let notifications = Family::<NotifyLabels, Counter>::default();
        let leader = Gauge::default();
        let incident_conflicts = Counter::default();
        let rollout_wave = Gauge::default();
        let rollout_paused = Gauge::default();
        let rollouts = Family::<OutcomeLabels, Counter>::default();
        let rollout_verdicts = Family::<VerdictLabels, Counter>::default();
        let live_viewers = Gauge::default();
        let console_logins = Family::<ResultLabels, Counter>::default();
        registry.register(
            "live_viewers",
            "Live-view streams (GET /v1/live, the console's overview) open now",
            live_viewers.clone(),
        );
        registry.register(
            "console_logins",
            "Console logins, by result (ok, refused)",
            console_logins.clone(),
        );
        registry.register(
            "rollout_wave",
            "The wave of the config rollout running now (1 is the canary); 0 when none runs",
            rollout_wave.clone(),
        );
        registry.register(
            "rollout_paused",
            "1 while the config rollout is paused and waits for a person",
            rollout_paused.clone(),
        );
        registry.register(
            "rollouts",
            "Config rollouts ended, by outcome",
            rollouts.clone(),
        );
        registry.register(
            "rollout_verdicts",
            "Verdicts on rollout waves, by verdict",
            rollout_verdicts.clone(),
        );
        registry.register(
            "incident_conflicts",
            "Incident writes refused because another control plane had changed the stored copy; the stored copy replaced this plane's",
            incident_conflicts.clone(),
        );
        registry.register(
            "leader",
            "1 while this control plane is the elected leader that runs playbooks, incidents and notifications",
            leader.clone(),
        );
        registry.register(
            "open_incidents",
            "Incidents not resolved yet",
            open_incidents.clone(),
        );
        registry.register(
            "notification_attempts",
            "Notification delivery attempts, by receiver and result",
            notifications.clone(),
        );
        registry.register(
            "changes",
            "Control changes asked for, by who and result",
            changes.clone(),
        );
        registry.register("refusals", "Refusals by safety rule", refusals.clone());
        registry.register(
            "controls_version",
            "Version of the controls in force",
            version.clone(),
        );
        registry.register(
            "watchers",
            "Edges (watch streams) connected",
            watchers.clone(),
        );
        registry.register(
            "open_findings",
            "Detection findings open now",
            open_findings.clone(),
        );
        Metrics {
            registry,
            rollout_wave,
            rollout_paused,
            rollouts,
            rollout_verdicts,
            changes,
            refusals,
            version,
            watchers,
            open_findings,
            open_incidents,
            notifications,
            leader,
            incident_conflicts,
            live_viewers,
            console_logins,
        }
    }

    pub fn encode(&self) -> String {
        switchyard_metrics::encode(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
