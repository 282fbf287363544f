//! Findings and actions in, incidents out. Pure: the control plane feeds it
//! the edges' snapshots, detection events, control changes and delivery
//! attempts with their times, and persists the incidents it marks changed.
//!
//! Grouping: one open incident per service. Zone, region, link and
//! write-path findings (and scoped alerts) open one; instance findings and
//! any later finding join the open one, so a zone failure is one incident,
//! not one per instance alarm. An instance alone opens nothing: the edges
//! eject it and that is not worth waking anyone.
//!
//! One fault, one incident: a finding that comes back within
//! `reopen_window_ms` of its incident's resolution, in the places that
//! incident covered, reopens it (same id, same notification group) rather
//! than opening a new one and paging again.
//!
//! Every mitigation is checked `verify_after_ms` later against what its
//! users saw ([`crate::evidence`]); one that did not help escalates the
//! incident: severity one level up, a timeline entry, and a notice that
//! names the action and the numbers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_detect::{Event, Finding};
use switchyard_model::check::{Check, CheckOutcome, Users};
use switchyard_model::signals::{ProbeTarget, Snapshot};
use switchyard_model::{Actor, AuditEntry, AuditKind, Op};

use crate::evidence::{self, CheckRules, UserSignals};
use crate::incident::{
    severity_of, Entry, EntryKind, Impact, Incident, Point, Severity, Stage, Status,
};

mod alarms;
pub use alarms::ALARM_CLEAR_MS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Recovered (every finding closed) this long before it is resolved.
    pub resolve_after_ms: u64,
    /// The availability objective the error budget is measured against.
    pub objective: f64,
    /// A second with a larger share of failed requests is in the error window.
    pub error_bound: f64,
    /// How long after an action its effect is judged: the "after" window
    /// ends here.
    pub verify_after_ms: u64,
    /// Length of the windows compared: the one just before acting and the
    /// one ending `verify_after_ms` after it.
    pub verify_window_ms: u64,
    /// A fixed p99 above which a series' requests count as slow when an
    /// action is checked. Unset: twice the users' p99 before the onset, and
    /// at least `slow_margin_ms` above it.
    pub slow_p99_ms: Option<f64>,
    /// See `slow_p99_ms`; the default matches detection's
    /// `latency_excess_ms`, so what detection calls slow a check does too.
    pub slow_margin_ms: f64,
    /// A finding that comes back within this long after its incident was
    /// resolved reopens that incident instead of opening a new one.
    pub reopen_window_ms: u64,
    /// Seconds of signals kept, for the minute before an onset.
    pub keep_s: u64,
    /// At most this many seconds of series per incident.
    pub max_points: usize,
    /// An alarm (SLO burn of the whole service, threshold, trend, silent
    /// heartbeat) that no open incident explains for this long opens one
    /// of its own; sooner, a finding with a place usually explains it.
    pub alarm_grace_ms: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            resolve_after_ms: 60_000,
            objective: 0.999,
            error_bound: 0.01,
            verify_after_ms: 10_000,
            verify_window_ms: 5_000,
            slow_p99_ms: None,
            slow_margin_ms: 40.0,
            reopen_window_ms: 10 * 60 * 1000,
            keep_s: 900,
            max_points: 3600,
            alarm_grace_ms: 30_000,
        }
    }
}

impl TrackerConfig {
    /// Every problem at once, each with its path under `prefix`
    /// (`control.incidents`).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, why: String| errs.push(format!("{prefix}.{field}: {why}"));
        if !(self.objective > 0.0 && self.objective < 1.0) {
            bad(
                "objective",
                format!("must be between 0 and 1, got {}", self.objective),
            );
        }
        if !(0.0..1.0).contains(&self.error_bound) {
            bad(
                "error_bound",
                format!("must be at least 0 and below 1, got {}", self.error_bound),
            );
        }
        if self.verify_window_ms == 0 {
            bad("verify_window_ms", "must be above 0".into());
        }
        if self.verify_window_ms > self.verify_after_ms {
            bad(
                "verify_window_ms",
                format!(
                    "must not be longer than verify_after_ms ({}), or the window after acting would start before the action",
                    self.verify_after_ms
                ),
            );
        }
        if let Some(p) = self.slow_p99_ms {
            if !(p.is_finite() && p > 0.0) {
                bad("slow_p99_ms", format!("must be above 0 ms, got {p}"));
            }
        }
        if !(self.slow_margin_ms.is_finite() && self.slow_margin_ms >= 0.0) {
            bad(
                "slow_margin_ms",
                format!("must be 0 ms or more, got {}", self.slow_margin_ms),
            );
        }
        if self.keep_s == 0 {
            bad("keep_s", "must be above 0, got 0".into());
        }
        if self.max_points == 0 {
            bad("max_points", "must be above 0, got 0".into());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The rules a check of an action follows.
    pub fn check_rules(&self) -> CheckRules {
        CheckRules {
            verify_after_ms: self.verify_after_ms,
            window_ms: self.verify_window_ms,
            error_bound: self.error_bound,
            slow_p99_ms: self.slow_p99_ms,
            slow_margin_ms: self.slow_margin_ms,
        }
    }
}

/// A check of an action taken during an incident, judged: what the audit
/// log records for a playbook's verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub incident: String,
    pub service: String,
    pub actor: Actor,
    pub op: Op,
    /// When the action took effect.
    pub acted_ms: u64,
    /// When it was judged.
    pub at_ms: u64,
    pub check: Check,
}

/// Something to tell people about one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub incident: Incident,
    pub event: String,
    pub at_ms: u64,
    /// Page now, not after the group interval: an escalation.
    pub urgent: bool,
}

#[derive(Default, Clone)]
struct Cell {
    requests: u64,
    failed: u64,
    p99_ms: f64,
}

/// One second of one service: (target zone, route) → counts; heartbeats by route.
#[derive(Default, Clone)]
struct Second {
    cells: BTreeMap<(String, String), Cell>,
    heartbeats: BTreeMap<String, (u64, u64)>,
}

struct Pending {
    at_ms: u64,
    due_ms: u64,
    what: String,
    actor: Actor,
    op: Op,
    users: Users,
}

/// How long after an action's after window ends it is judged: edges report
/// each second once it is over, and the last one must have arrived.
const SETTLE_MS: u64 = 1500;

/// How far back an incident that opens looks for config changes to its
/// service: a bad config shows within its bake time, which is minutes.
pub const CHANGES_BEFORE_MS: u64 = 30 * 60_000;

pub struct Tracker {
    cfg: TrackerConfig,
    /// Config rollout steps of the last [`CHANGES_BEFORE_MS`], per service:
    /// an incident that opens copies them into its timeline.
    config_changes: BTreeMap<String, Vec<(u64, String, String)>>,
    /// second → service → what the edges saw.
    seconds: BTreeMap<u64, BTreeMap<String, Second>>,
    zone_region: BTreeMap<String, String>,
    /// Learned from the signals: the zone each instance serves in.
    instance_zone: BTreeMap<String, String>,
    critical_routes: BTreeMap<String, BTreeSet<String>>,
    open: BTreeMap<String, Incident>,
    /// Actions waiting to be judged, by incident id.
    verify: BTreeMap<String, Vec<Pending>>,
    dirty: BTreeSet<String>,
    notices: Vec<Notice>,
    ids: BTreeSet<String>,
    /// Recently resolved, newest last: late delivery attempts and people's
    /// stages still land on them here rather than on a stale copy, and a
    /// fault that comes back finds its incident here.
    closed: Vec<Incident>,
    /// What users saw, by the region they entered through: the evidence
    /// actions are checked against.
    users: UserSignals,
    /// Checks judged since the last `take_checks`.
    checks: Vec<Judged>,
    /// Alarms firing, by (service, alarm name).
    alarms: BTreeMap<(String, String), alarms::Episode>,
}

/// An SLO burn finding sets a floor under the severity: a fast burn pages
/// (SEV2) and a slow one is a ticket (SEV3), whatever share of traffic the
/// failing route is.
fn burn_floor(findings: &[Finding], (sev, why): (Severity, String)) -> (Severity, String) {
    let floor = findings
        .iter()
        .filter(|f| f.kind.starts_with("slo_burn:"))
        .filter_map(|f| {
            let level = match f.evidence.get("severity").and_then(|v| v.as_str()) {
                Some("page") => Severity::Sev2,
                Some("ticket") => Severity::Sev3,
                _ => return None,
            };
            let route = f.kind.trim_start_matches("slo_burn:");
            let region = f.scope.trim_start_matches("region:");
            let rule = f
                .evidence
                .get("rule")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            Some((level, format!("SLO burn on {route} in {region} ({rule})")))
        })
        .max_by_key(|(l, _)| *l);
    match floor {
        Some((l, w)) if l > sev => (l, w),
        _ => (sev, why),
    }
}

/// How many resolved incidents stay in memory.
const KEEP_CLOSED: usize = 50;

/// When an incident was resolved; one stored before that was recorded
/// counts from its last update.
fn resolved_at(i: &Incident) -> u64 {
    i.resolved_ms.unwrap_or(i.updated_ms)
}

/// An action that did not help: raises the incident one level (unless a
/// person set its severity) and records why; returns the notice's event,
/// which names the action and the numbers so whoever is paged knows what
/// was tried.
fn escalate(i: &mut Incident, what: &str, check: &Check, now_ms: u64) -> String {
    let from = i.severity;
    let to = if i.severity_pinned {
        from
    } else {
        from.raised()
    };
    let numbers = format!(
        "{}: {} before, {} after",
        check.users,
        check.before.describe(),
        check.after.describe()
    );
    i.log(
        now_ms,
        EntryKind::Escalation,
        "switchyard",
        format!("escalated: {what} did not help ({numbers})"),
        json!({"action": what, "severity_from": from, "severity_to": to, "check": check}),
    );
    let severity = if to == from {
        format!("severity stays {} (set by a person)", from.as_str())
    } else {
        let why = format!("escalated: {what} did not help");
        i.log(
            now_ms,
            EntryKind::Severity,
            "switchyard",
            format!("severity {}: {why}", to.as_str()),
            serde_json::Value::Null,
        );
        i.severity = to;
        i.severity_reason = why;
        format!("severity raised to {}", to.as_str())
    };
    format!("escalated: {what} did not help ({numbers}); {severity}")
}

fn rate(q: u64, f: u64) -> Option<f64> {
    (q > 0).then(|| f as f64 / q as f64)
}

/// A new incident's id: the service and the UTC second it opened.
fn incident_id(service: &str, now_ms: u64, taken: &BTreeSet<String>) -> String {
    let t = switchyard_model::time::rfc3339_ms((now_ms / 1000 * 1000) as i64);
    let stamp: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    let base = format!("{service}-{}-{}", &stamp[..8], &stamp[8..14]);
    let mut id = base.clone();
    let mut n = 2;
    while taken.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

impl Tracker {
    /// `zone_region` maps every zone to its region; `critical_routes` the
    /// routes of priority `critical` per service.
    pub fn new(
        cfg: TrackerConfig,
        zone_region: BTreeMap<String, String>,
        critical_routes: BTreeMap<String, BTreeSet<String>>,
    ) -> Tracker {
        // Signals for a baseline before an onset (detected a little after
        // it) and for both windows of an action still being judged.
        let keep_ms =
            2 * evidence::BASELINE_MS + cfg.verify_after_ms + cfg.verify_window_ms + SETTLE_MS;
        Tracker {
            users: UserSignals::new(keep_ms),
            checks: Vec::new(),
            cfg,
            seconds: BTreeMap::new(),
            zone_region,
            instance_zone: BTreeMap::new(),
            critical_routes,
            open: BTreeMap::new(),
            verify: BTreeMap::new(),
            dirty: BTreeSet::new(),
            notices: Vec::new(),
            ids: BTreeSet::new(),
            closed: Vec::new(),
            config_changes: BTreeMap::new(),
            alarms: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// Takes back the incidents after a restart: the open ones, and the most recently resolved ones, so a
    /// fault that comes back after the restart still reopens its incident.
    /// The store's copy replaces what was held: this is also how a plane
    /// elected leader takes over from the one before.
    pub fn restore(&mut self, incidents: Vec<Incident>) {
        self.open.clear();
        self.closed.clear();
        let mut resolved = Vec::new();
        for i in incidents {
            self.ids.insert(i.id.clone());
            if i.status == Status::Resolved {
                resolved.push(i);
            } else {
                self.open.insert(i.service.clone(), i);
            }
        }
        resolved.sort_by_key(resolved_at);
        let skip = resolved.len().saturating_sub(KEEP_CLOSED);
        self.closed = resolved.into_iter().skip(skip).collect();
        self.restore_alarms();
    }

    /// Puts the store's copy of one incident in place of the one held: the
    /// store is the one shared copy, and another plane changed it since
    /// this one read it. What was held and not yet written is dropped.
    pub fn replace(&mut self, i: Incident) {
        self.forget(&i.id);
        self.ids.insert(i.id.clone());
        if i.status == Status::Resolved {
            self.closed.push(i);
            self.closed.sort_by_key(resolved_at);
            if self.closed.len() > KEEP_CLOSED {
                self.closed.remove(0);
            }
        } else if !self.open.contains_key(&i.service) {
            self.open.insert(i.service.clone(), i);
        }
        // Else another incident of the service is open here: the store
        // keeps this one, reads show it from there.
    }

    /// Stops holding an incident (gone from the store): its pending writes
    /// and checks with it.
    pub fn forget(&mut self, id: &str) {
        self.open.retain(|_, x| x.id != id);
        self.closed.retain(|x| x.id != id);
        self.dirty.remove(id);
        self.verify.remove(id);
    }

    /// Lets every incident go, with what was still to be written, told or
    /// checked: the plane no longer leads, the store holds the one copy and
    /// the next takeover reads it from there. The signals stay.
    pub fn let_go(&mut self) {
        self.open.clear();
        self.closed.clear();
        self.verify.clear();
        self.dirty.clear();
        self.notices.clear();
        self.checks.clear();
        self.alarms.clear();
    }

    /// Remembers an id that exists in the store, so a new one never reuses it.
    pub fn know_id(&mut self, id: &str) {
        self.ids.insert(id.to_string());
    }

    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    pub fn open_for(&self, service: &str) -> Option<&Incident> {
        self.open.get(service)
    }

    /// The incident with this id if it is open or recently resolved, to
    /// change by hand; marked changed.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Incident> {
        let i = self
            .open
            .values_mut()
            .chain(self.closed.iter_mut())
            .find(|i| i.id == id)?;
        self.dirty.insert(i.id.clone());
        Some(i)
    }

    pub fn mark_dirty(&mut self, id: &str) {
        self.dirty.insert(id.to_string());
    }

    /// Whether the tracker holds this incident (then changes go through it).
    pub fn holds(&self, id: &str) -> bool {
        self.open
            .values()
            .chain(self.closed.iter())
            .any(|i| i.id == id)
    }

    fn close(&mut self, service: &str) {
        if let Some(i) = self.open.remove(service) {
            self.verify.remove(&i.id);
            self.closed.push(i);
            if self.closed.len() > KEEP_CLOSED {
                self.closed.remove(0);
            }
        }
    }

    /// Incidents changed since the last call, to persist.
    pub fn take_dirty(&mut self) -> Vec<Incident> {
        let ids = std::mem::take(&mut self.dirty);
        self.open
            .values()
            .chain(self.closed.iter())
            .filter(|i| ids.contains(&i.id))
            .cloned()
            .collect()
    }

    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Actions judged since the last call, for the audit log.
    pub fn take_checks(&mut self) -> Vec<Judged> {
        std::mem::take(&mut self.checks)
    }

    fn notify(&mut self, service: &str, event: String, at_ms: u64) {
        self.tell(service, event, at_ms, false);
    }

    fn tell(&mut self, service: &str, event: String, at_ms: u64, urgent: bool) {
        if let Some(i) = self.open.get(service) {
            if i.announced {
                self.notices.push(Notice {
                    incident: i.clone(),
                    event,
                    at_ms,
                    urgent,
                });
            }
        }
    }

    /// One edge's snapshot.
    pub fn ingest(&mut self, s: &Snapshot) {
        self.users.ingest(s);
        let sec = s.at_ms.saturating_sub(1) / 1000;
        let by_service = self.seconds.entry(sec).or_default();
        for x in &s.series {
            if x.target_zone.is_empty() || x.instance.is_empty() {
                continue;
            }
            if !self.instance_zone.contains_key(&x.instance) {
                self.instance_zone
                    .insert(x.instance.clone(), x.target_zone.clone());
            }
            let c = by_service
                .entry(x.service.clone())
                .or_default()
                .cells
                .entry((x.target_zone.clone(), x.route.clone()))
                .or_default();
            c.requests += x.requests;
            c.failed += x.failures();
            c.p99_ms = c.p99_ms.max(x.p99_ms);
        }
        for p in s
            .probes
            .iter()
            .filter(|p| p.target == ProbeTarget::Instance)
        {
            let h = by_service
                .entry(p.service.clone())
                .or_default()
                .heartbeats
                .entry(p.route.clone())
                .or_default();
            h.0 += 1;
            h.1 += u64::from(!p.ok);
        }
        if let Some(first) = self.seconds.keys().next().copied() {
            if sec > first + self.cfg.keep_s {
                self.seconds = self.seconds.split_off(&(sec - self.cfg.keep_s));
            }
        }
    }

    /// Opens a incident by hand; returns its id, or the open one's if the
    /// service already has one (then the title is added as a note).
    pub fn open_by_hand(
        &mut self,
        service: &str,
        title: &str,
        who: &str,
        severity: Option<Severity>,
        now_ms: u64,
    ) -> (String, bool) {
        if let Some(i) = self.open.get_mut(service) {
            i.log(
                now_ms,
                EntryKind::Note,
                who,
                format!("{who} reported: {title}"),
                serde_json::Value::Null,
            );
            let id = i.id.clone();
            self.dirty.insert(id.clone());
            return (id, false);
        }
        let id = incident_id(service, now_ms, &self.ids);
        let mut i = Incident::new(id.clone(), service, title, who, now_ms);
        self.backfill_config_changes(&mut i);
        // People report what has been going on for a while: this is the
        // best baseline there is.
        i.baseline_p99_ms = self.users.baseline_p99(
            service,
            now_ms.saturating_sub(evidence::BASELINE_MS),
            now_ms,
        );
        i.reach(Stage::Occurred, now_ms, who);
        i.reach(Stage::Detected, now_ms, who);
        if let Some(s) = severity {
            i.severity = s;
            i.severity_reason = format!("set by {who}");
            i.severity_pinned = true;
        }
        self.ids.insert(id.clone());
        self.dirty.insert(id.clone());
        self.open.insert(service.into(), i);
        (id, true)
    }

    /// A detection event.
    pub fn on_event(&mut self, ev: &Event, now_ms: u64) {
        match ev {
            Event::Opened(f) => self.finding_opened(f, now_ms),
            Event::Closed(f) => self.finding_closed(f, now_ms),
        }
    }

    fn finding_opened(&mut self, f: &Finding, now_ms: u64) {
        if f.service.is_empty() {
            return;
        }
        let level = f.scope.split(':').next().unwrap_or("");
        let mut reopened = None;
        if !self.open.contains_key(&f.service) {
            if level == "instance" || f.scope.is_empty() {
                return;
            }
            if let Some(mut i) = self.take_reopenable(f, now_ms) {
                let why = format!("finding {} ({}) came back", f.scope, f.kind);
                let _ = i.reopen(now_ms, &why);
                reopened = Some(format!("reopened: {why}"));
                self.open.insert(f.service.clone(), i);
            } else {
                let id = incident_id(&f.service, now_ms, &self.ids);
                let title = format!("{} {} ({})", f.service, f.scope.replace(':', " "), f.kind);
                let mut i = Incident::new(id.clone(), &f.service, &title, "switchyard", now_ms);
                self.backfill_config_changes(&mut i);
                // The users' p99 before the fault: what a check of an
                // action calls slow is judged against it.
                i.baseline_p99_ms = self.users.baseline_p99(
                    &f.service,
                    f.start_ms.saturating_sub(evidence::BASELINE_MS),
                    f.start_ms,
                );
                self.ids.insert(id);
                self.open.insert(f.service.clone(), i);
            }
        }
        let i = self.open.get_mut(&f.service).expect("just ensured");
        if i.findings.is_empty() && i.alarms.iter().any(|a| a.opened) {
            // Opened by an alarm that could not say where; the first finding
            // can, and names the incident from now on.
            let title = format!("{} {} ({})", f.service, f.scope.replace(':', " "), f.kind);
            i.log(
                now_ms,
                EntryKind::Note,
                "switchyard",
                format!("localized: {} (was: {})", f.scope, i.title),
                serde_json::Value::Null,
            );
            i.title = title;
            i.scopes.clear();
        }
        i.findings.push(f.clone());
        if !i.scopes.contains(&f.scope) {
            i.scopes.push(f.scope.clone());
        }
        i.log(
            now_ms,
            EntryKind::FindingOpened,
            "switchyard",
            format!(
                "finding {} ({}) since {}",
                f.scope,
                f.kind,
                switchyard_model::time::human_utc(f.start_ms as i64)
            ),
            f.evidence.clone(),
        );
        // The onset is the earliest start any finding estimates.
        let occurred = i
            .stages
            .get(&Stage::Occurred)
            .copied()
            .unwrap_or(u64::MAX)
            .min(f.start_ms);
        if i.stages.insert(Stage::Occurred, occurred).is_none() {
            i.log(
                occurred,
                EntryKind::Stage,
                "switchyard",
                "stage occurred".into(),
                serde_json::Value::Null,
            );
        }
        i.reach(Stage::Detected, f.detected_ms, "switchyard");
        // Back again while recovering: not recovered after all.
        if i.stages.remove(&Stage::Recovered).is_some() {
            i.log(
                now_ms,
                EntryKind::Note,
                "switchyard",
                "a new finding: not recovered after all".into(),
                serde_json::Value::Null,
            );
        }
        let id = i.id.clone();
        let mut changed = None;
        match i.status {
            Status::Investigating => {
                let _ = i.set_status(
                    Status::Identified,
                    now_ms,
                    "switchyard",
                    &format!("localized to {}", f.scope),
                );
                changed = Some(Status::Identified);
            }
            Status::Monitoring => {
                let _ = i.set_status(
                    Status::Mitigating,
                    now_ms,
                    "switchyard",
                    "a finding came back",
                );
                changed = Some(Status::Mitigating);
            }
            _ => {}
        }
        self.dirty.insert(id);
        if let Some(r) = reopened {
            self.notify(&f.service, r, now_ms);
        }
        if let Some(s) = changed {
            self.notify(&f.service, format!("status: {s}"), now_ms);
        }
    }

    /// The resolved incident `f` belongs to, if it was resolved within the
    /// reopen window and covered the places `f` is about: taken out of the
    /// resolved ones. The newest such incident wins.
    fn take_reopenable(&mut self, f: &Finding, now_ms: u64) -> Option<Incident> {
        let (zones, all) = self.zones_of(std::slice::from_ref(&f.scope));
        let pos = self.closed.iter().rposition(|i| {
            if i.service != f.service
                || i.scopes.is_empty()
                || now_ms.saturating_sub(resolved_at(i)) > self.cfg.reopen_window_ms
            {
                return false;
            }
            let (theirs, their_all) = self.zones_of(&i.scopes);
            i.scopes.contains(&f.scope) || all || their_all || !theirs.is_disjoint(&zones)
        })?;
        Some(self.closed.remove(pos))
    }

    fn finding_closed(&mut self, f: &Finding, now_ms: u64) {
        let Some(i) = self.open.get_mut(&f.service) else {
            return;
        };
        if let Some(x) = i
            .findings
            .iter_mut()
            .rev()
            .find(|x| x.scope == f.scope && x.kind == f.kind && x.end_ms.is_none())
        {
            x.end_ms = f.end_ms.or(Some(now_ms));
        } else {
            return;
        }
        i.log(
            now_ms,
            EntryKind::FindingClosed,
            "switchyard",
            format!("finding {} ({}) closed", f.scope, f.kind),
            serde_json::Value::Null,
        );
        self.dirty.insert(i.id.clone());
    }

    /// A control change the plane made (`accepted`) or refused, by a
    /// playbook or a person, touching `service`: its audit entry. An
    /// accepted mitigation is checked `verify_after_ms` later (not one whose
    /// entry predates typed operations: what it did is not known).
    /// A config rollout step: into the open incident's timeline, and kept
    /// a while for an incident that opens after it.
    fn on_config_change(&mut self, service: &str, e: &AuditEntry) {
        let (who, text) = (e.actor.to_string(), e.action.clone());
        let kept = self.config_changes.entry(service.to_string()).or_default();
        kept.retain(|(at, _, _)| *at + CHANGES_BEFORE_MS >= e.at_ms);
        kept.push((e.at_ms, who.clone(), text.clone()));
        if let Some(i) = self.open.get_mut(service) {
            i.log(
                e.at_ms,
                EntryKind::ConfigChange,
                &who,
                text,
                json!({"reason": e.reason, "rollout": e.detail}),
            );
            let id = i.id.clone();
            self.dirty.insert(id);
        }
    }

    /// The config changes to the service shortly before `i` opened, at
    /// the top of its timeline.
    fn backfill_config_changes(&self, i: &mut Incident) {
        let Some(kept) = self.config_changes.get(&i.service) else {
            return;
        };
        let since = i.created_ms.saturating_sub(CHANGES_BEFORE_MS);
        let mut before: Vec<Entry> = kept
            .iter()
            .filter(|(at, _, _)| *at >= since && *at <= i.created_ms)
            .map(|(at, who, text)| Entry {
                at_ms: *at,
                kind: EntryKind::ConfigChange,
                who: who.clone(),
                text: format!("before the incident: {text}"),
                detail: serde_json::Value::Null,
            })
            .collect();
        if before.is_empty() {
            return;
        }
        before.append(&mut i.timeline);
        i.timeline = before;
    }

    pub fn on_change(&mut self, service: &str, e: &AuditEntry) {
        if e.kind == AuditKind::Rollout {
            self.on_config_change(service, e);
            return;
        }
        if e.kind != AuditKind::Change {
            // A recommendation or a verification changed nothing.
            return;
        }
        let (what, at_ms, op) = (e.action.as_str(), e.at_ms, e.op.as_ref());
        let users = op.and_then(|o| evidence::users_of(o, &self.zone_region));
        let Some(i) = self.open.get_mut(service) else {
            return;
        };
        let detail = if e.accepted {
            json!({"reason": e.reason, "version": e.version})
        } else {
            json!({"reason": e.reason, "refused_by": e.detail["refusals"]})
        };
        i.log(
            at_ms,
            EntryKind::Action,
            &e.actor.to_string(),
            format!("{}{what}", if e.accepted { "" } else { "refused: " }),
            detail,
        );
        let id = i.id.clone();
        self.dirty.insert(id.clone());
        if !e.accepted {
            return;
        }
        let moved = i.status < Status::Mitigating
            && i.set_status(Status::Mitigating, at_ms, "switchyard", what)
                .is_ok();
        if let (Some(users), Some(op)) = (users, op) {
            self.verify.entry(id).or_default().push(Pending {
                at_ms,
                due_ms: at_ms + self.cfg.verify_after_ms + SETTLE_MS,
                what: what.to_string(),
                actor: e.actor.clone(),
                op: op.clone(),
                users,
            });
        }
        if moved {
            self.notify(service, "status: mitigating".into(), at_ms);
        }
    }

    /// A delivery attempt of a notification of incident `id`.
    pub fn on_attempt(
        &mut self,
        id: &str,
        receiver: &str,
        ok: bool,
        at_ms: u64,
        text: String,
        detail: serde_json::Value,
    ) {
        let Some(i) = self
            .open
            .values_mut()
            .chain(self.closed.iter_mut())
            .find(|i| i.id == id)
        else {
            return;
        };
        i.log(
            at_ms,
            EntryKind::Notification,
            "switchyard",
            format!("{receiver}: {text}"),
            detail,
        );
        if ok {
            i.reach(Stage::Notified, at_ms, "switchyard");
        }
        self.dirty.insert(id.to_string());
    }

    /// Zones an incident's scopes cover, and whether it is the whole service.
    fn affected_zones(&self, i: &Incident) -> (BTreeSet<String>, bool) {
        let (zones, all) = self.zones_of(&i.scopes);
        (zones, all || i.scopes.is_empty())
    }

    /// Zones some scopes cover, and whether one of them is the whole service
    /// (or a place not known).
    fn zones_of(&self, scopes: &[String]) -> (BTreeSet<String>, bool) {
        let mut zones = BTreeSet::new();
        let mut all = false;
        let zones_of = |r: &str| {
            self.zone_region
                .iter()
                .filter(|(_, x)| x.as_str() == r)
                .map(|(z, _)| z.clone())
                .collect::<Vec<_>>()
        };
        for s in scopes {
            match s.split_once(':') {
                Some(("zone", z)) => {
                    zones.insert(z.to_string());
                }
                Some(("region", r)) => zones.extend(zones_of(r)),
                Some(("link", l)) => {
                    let from = l.split("->").next().unwrap_or("");
                    if self.zone_region.contains_key(from) {
                        zones.insert(from.to_string());
                    } else {
                        zones.extend(zones_of(from));
                    }
                }
                // An instance never seen serving: count the whole service.
                Some(("instance", inst)) => match self.instance_zone.get(inst) {
                    Some(z) => {
                        zones.insert(z.clone());
                    }
                    None => all = true,
                },
                _ => all = true,
            }
        }
        (zones, all)
    }

    /// Judges actions, measures impact and severity, keeps the series,
    /// and resolves what has stayed recovered.
    pub fn tick(&mut self, now_ms: u64) {
        let services: Vec<String> = self.open.keys().cloned().collect();
        for svc in services {
            self.judge_actions(&svc, now_ms);
            self.measure(&svc, now_ms);
            self.progress(&svc, now_ms);
        }
    }

    fn judge_actions(&mut self, svc: &str, now_ms: u64) {
        let Some(id) = self.open.get(svc).map(|i| i.id.clone()) else {
            return;
        };
        let Some(list) = self.verify.remove(&id) else {
            return;
        };
        let (due, later): (Vec<_>, Vec<_>) = list.into_iter().partition(|p| p.due_ms <= now_ms);
        if !later.is_empty() {
            self.verify.insert(id.clone(), later);
        }
        let rules = self.cfg.check_rules();
        for p in due {
            let mut baseline = self.open[svc].baseline_p99_ms.clone();
            let occurred = self.open[svc].stages.get(&Stage::Occurred).copied();
            if baseline.is_empty() {
                // Opened before baselines were kept, or with no signals
                // before its onset then: the minute before the onset, if
                // it is still here.
                let onset = occurred.unwrap_or(p.at_ms);
                baseline = self.users.baseline_p99(
                    svc,
                    onset.saturating_sub(evidence::BASELINE_MS),
                    onset,
                );
            }
            let check = evidence::check(
                &self.users,
                &rules,
                svc,
                &p.users,
                p.at_ms,
                &baseline,
                occurred,
            );
            let verb = match check.outcome {
                CheckOutcome::Passed => "helped",
                CheckOutcome::Failed => "did not help",
                CheckOutcome::Inconclusive => "could not be judged",
            };
            let i = self.open.get_mut(svc).expect("open");
            if i.baseline_p99_ms.is_empty() {
                i.baseline_p99_ms = baseline;
            }
            i.log(
                now_ms,
                EntryKind::Verification,
                "switchyard",
                format!("{} {verb}: {}", p.what, check.why),
                serde_json::to_value(&check).expect("a check serializes"),
            );
            // (event, urgent)
            let mut events = Vec::new();
            match check.outcome {
                CheckOutcome::Passed => {
                    // Mitigated when the first action that helped took effect.
                    i.reach(Stage::Mitigated, p.at_ms, "switchyard");
                    if i.status == Status::Mitigating
                        && i.set_status(
                            Status::Monitoring,
                            now_ms,
                            "switchyard",
                            "the mitigation helped",
                        )
                        .is_ok()
                    {
                        events.push(("status: monitoring".to_string(), false));
                    }
                }
                CheckOutcome::Failed => events.push((escalate(i, &p.what, &check, now_ms), true)),
                CheckOutcome::Inconclusive => {}
            }
            self.checks.push(Judged {
                incident: id.clone(),
                service: svc.to_string(),
                actor: p.actor,
                op: p.op,
                acted_ms: p.at_ms,
                at_ms: now_ms,
                check,
            });
            self.dirty.insert(id.clone());
            for (e, urgent) in events {
                self.tell(svc, e, now_ms, urgent);
            }
        }
    }

    fn measure(&mut self, svc: &str, now_ms: u64) {
        let Some(i) = self.open.get(svc) else {
            return;
        };
        let (zones, all) = self.affected_zones(i);
        let occurred = i
            .stages
            .get(&Stage::Occurred)
            .copied()
            .unwrap_or(i.created_ms);
        let from_s = occurred / 1000;
        let end_s = i
            .stages
            .get(&Stage::Recovered)
            .map(|r| r / 1000 + 1)
            .unwrap_or(now_ms / 1000);
        let (mut total, mut q, mut f) = (0u64, 0u64, 0u64);
        let mut failing: BTreeSet<String> = BTreeSet::new();
        for (_, by) in self.seconds.range(from_s..end_s) {
            if let Some(s) = by.get(svc) {
                for ((z, route), c) in &s.cells {
                    if (all || zones.contains(z)) && c.failed > 0 {
                        failing.insert(route.clone());
                    }
                }
            }
        }
        let (mut seconds_seen, mut seen_requests) = (0u64, 0u64);
        for (_, by) in self.seconds.range(from_s..end_s) {
            if let Some(s) = by.get(svc) {
                seconds_seen += 1;
                // The share is of the traffic while users were being hit: an
                // incident that stays open while its place is shifted away
                // and still broken must not look smaller for it.
                let hit = s
                    .cells
                    .iter()
                    .any(|((z, _), c)| (all || zones.contains(z)) && c.failed > 0);
                for ((z, route), c) in &s.cells {
                    seen_requests += c.requests;
                    if !hit {
                        continue;
                    }
                    total += c.requests;
                    if (all || zones.contains(z)) && (failing.is_empty() || failing.contains(route))
                    {
                        q += c.requests;
                    }
                    if all || zones.contains(z) {
                        f += c.failed;
                    }
                }
            }
        }
        // The month's budget at the traffic seen: objective × requests/s × 30 days.
        let rps = seen_requests as f64 / seconds_seen.max(1) as f64;
        let monthly_budget = (1.0 - self.cfg.objective) * rps * 30.0 * 86_400.0;
        let critical = self.critical_routes.get(svc);
        let impact = Impact {
            traffic_share: if total == 0 {
                0.0
            } else {
                q as f64 / total as f64
            },
            critical_route: failing
                .iter()
                .any(|r| critical.is_some_and(|c| c.contains(r))),
            routes: failing.into_iter().collect(),
            requests: q,
            failed: f,
            budget_burned: if monthly_budget > 0.0 {
                f as f64 / monthly_budget
            } else {
                0.0
            },
            duration_ms: end_s
                .saturating_mul(1000)
                .saturating_sub(occurred)
                .min(now_ms.saturating_sub(occurred)),
        };
        // The series: a minute before the onset to a minute after recovery.
        let series_from = from_s.saturating_sub(60);
        let series_to = i
            .stages
            .get(&Stage::Recovered)
            .map(|r| r / 1000 + 60)
            .unwrap_or(now_ms / 1000)
            .min(now_ms / 1000);
        let mut series = Vec::new();
        for (sec, by) in self.seconds.range(series_from..series_to) {
            let Some(s) = by.get(svc) else { continue };
            let mut p = Point {
                at_ms: sec * 1000,
                ..Point::default()
            };
            for ((z, _), c) in &s.cells {
                p.requests += c.requests;
                p.failed += c.failed;
                p.p99_ms = p.p99_ms.max(c.p99_ms);
                let e = p.zones.entry(z.clone()).or_default();
                e.0 += c.requests;
                e.1 += c.failed;
                e.2 = e.2.max(c.p99_ms);
            }
            p.heartbeats = s.heartbeats.clone();
            series.push(p);
        }
        let i = self.open.get_mut(svc).expect("open");
        // Keep what was recorded earlier if the window has since moved on.
        let mut merged: BTreeMap<u64, Point> = i.series.drain(..).map(|p| (p.at_ms, p)).collect();
        for p in series {
            merged.insert(p.at_ms, p);
        }
        let mut points: Vec<Point> = merged.into_values().collect();
        if points.len() > self.cfg.max_points {
            points.drain(..points.len() - self.cfg.max_points);
        }
        let bad: Vec<u64> = points
            .iter()
            .filter(|p| {
                p.at_ms >= occurred.saturating_sub(60_000)
                    && rate(p.requests, p.failed).is_some_and(|r| r > self.cfg.error_bound)
            })
            .map(|p| p.at_ms)
            .collect();
        i.error_window = bad.first().zip(bad.last()).map(|(a, b)| (*a, *b + 1000));
        i.series = points;
        i.impact = impact;
        let mut raised = None;
        if !i.severity_pinned {
            let (sev, why) = burn_floor(&i.findings, severity_of(&i.impact));
            let (sev, why) = match alarms::alarm_floor(i) {
                Some((floor, w)) if floor > sev => (floor, w),
                _ => (sev, why),
            };
            // Automatic rules only ever raise the severity during an incident.
            if sev > i.severity || i.severity_reason == "not measured yet" {
                if sev > i.severity && i.announced {
                    raised = Some(sev);
                }
                i.log(
                    now_ms,
                    EntryKind::Severity,
                    "switchyard",
                    format!("severity {}: {why}", sev.as_str()),
                    serde_json::Value::Null,
                );
                i.severity = sev;
                i.severity_reason = why;
            }
        }
        i.updated_ms = now_ms;
        let first = !i.announced;
        i.announced = true;
        self.dirty.insert(i.id.clone());
        if first {
            self.notify(svc, "opened".into(), now_ms);
        } else if let Some(s) = raised {
            self.notify(svc, format!("severity raised to {}", s.as_str()), now_ms);
        }
    }

    fn progress(&mut self, svc: &str, now_ms: u64) {
        let Some(i) = self.open.get_mut(svc) else {
            return;
        };
        // Findings say when the fault is over; an incident only alarms
        // opened is over when they stop. Alarms that joined a finding's
        // incident lag (a burn's long window) and are not waited for.
        let (ends, why): (Vec<Option<u64>>, _) = if !i.findings.is_empty() {
            (
                i.findings.iter().map(|f| f.end_ms).collect(),
                "every finding closed",
            )
        } else {
            (
                i.alarms.iter().map(|a| a.end_ms).collect(),
                "every alarm stopped",
            )
        };
        if ends.is_empty() || ends.iter().any(Option::is_none) {
            return;
        }
        let recovered = ends.into_iter().flatten().max().unwrap_or(now_ms);
        let mut events = Vec::new();
        if i.reach(Stage::Recovered, recovered, "switchyard") && i.status < Status::Monitoring {
            let _ = i.set_status(Status::Monitoring, now_ms, "switchyard", why);
            events.push("status: monitoring".to_string());
        }
        // An action still being judged keeps it open: its verdict belongs
        // in the record.
        let judging = self.verify.get(&i.id).is_some_and(|v| !v.is_empty());
        if now_ms.saturating_sub(recovered) >= self.cfg.resolve_after_ms && !judging {
            let _ = i.set_status(
                Status::Resolved,
                now_ms,
                "switchyard",
                &format!("recovered for {} s", self.cfg.resolve_after_ms / 1000),
            );
            events.push("resolved".to_string());
        }
        let id = i.id.clone();
        self.dirty.insert(id.clone());
        for e in events {
            self.notify(svc, e, now_ms);
        }
        if self
            .open
            .get(svc)
            .is_some_and(|i| i.status == Status::Resolved)
        {
            self.close(svc);
        }
    }

    /// The service of the open incident `id`, which is its key among the
    /// open ones.
    fn service_of_open(&self, id: &str) -> Result<String, String> {
        self.open
            .values()
            .find(|i| i.id == id)
            .map(|i| i.service.clone())
            .ok_or_else(|| format!("incident {id} is not open"))
    }

    /// A person acknowledged the open incident `id`: the stage is recorded
    /// and people are told, so a pager that tracks state stops paging.
    pub fn acknowledge(&mut self, id: &str, who: &str, now_ms: u64) -> Result<Incident, String> {
        let svc = self.service_of_open(id)?;
        let i = self.open.get_mut(&svc).expect("found");
        i.set_stage_by_person(Stage::Acknowledged, now_ms, who)?;
        let out = i.clone();
        self.dirty.insert(id.to_string());
        self.notify(&svc, format!("acknowledged by {who}"), now_ms);
        Ok(out)
    }

    /// Resolves an open incident by hand (or moves its status).
    pub fn set_status(
        &mut self,
        id: &str,
        to: Status,
        who: &str,
        note: &str,
        now_ms: u64,
    ) -> Result<Incident, String> {
        let svc = self.service_of_open(id)?;
        let i = self.open.get_mut(&svc).expect("found");
        i.set_status(to, now_ms, who, note)?;
        let out = i.clone();
        self.dirty.insert(id.to_string());
        self.notify(
            &svc,
            if to == Status::Resolved {
                "resolved".into()
            } else {
                format!("status: {to}")
            },
            now_ms,
        );
        if to == Status::Resolved {
            self.close(&svc);
        }
        Ok(out)
    }

    /// The status feed's view of a service: its open incident and the
    /// errors and p99 the edges saw over the last minute.
    pub fn recent(&self, service: &str, now_ms: u64) -> (u64, u64, f64) {
        let sec = now_ms / 1000;
        let (mut q, mut f, mut p99) = (0, 0, 0.0f64);
        for (_, by) in self.seconds.range(sec.saturating_sub(60)..sec) {
            if let Some(s) = by.get(service) {
                for c in s.cells.values() {
                    q += c.requests;
                    f += c.failed;
                    p99 = p99.max(c.p99_ms);
                }
            }
        }
        (q, f, p99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_model::signals::Series;

    /// Three edges, one per zone: a and b in r1, c in r2. Each sends 100
    /// requests a second to its own zone, or, when its zone is shifted, to
    /// the other zone of its region. `broken` is the share failing per zone.
    struct World {
        t: Tracker,
        now: u64,
        broken: BTreeMap<&'static str, f64>,
        shifted: BTreeSet<&'static str>,
        notices: Vec<Notice>,
        /// The alarms detection reports as firing, every second.
        alarms: Vec<switchyard_model::finding::Alarm>,
    }

    const ZONES: [(&str, &str); 3] = [("a", "r1"), ("b", "r1"), ("c", "r2")];

    fn world(cfg: TrackerConfig) -> World {
        let zr = ZONES
            .iter()
            .map(|(z, r)| (z.to_string(), r.to_string()))
            .collect();
        World {
            t: Tracker::new(cfg, zr, BTreeMap::new()),
            now: 0,
            broken: BTreeMap::new(),
            shifted: BTreeSet::new(),
            notices: Vec::new(),
            alarms: Vec::new(),
        }
    }

    fn finding(scope: &str, start_ms: u64, now: u64, end: Option<u64>) -> Finding {
        Finding {
            scope: scope.into(),
            kind: "errors".into(),
            service: "svc".into(),
            start_ms,
            detected_ms: now,
            end_ms: end,
            evidence: serde_json::Value::Null,
        }
    }

    impl World {
        /// Lets the seconds up to `until_ms` pass: the edges report, the
        /// tracker ticks, its notices are collected.
        fn run_until(&mut self, until_ms: u64) {
            while self.now < until_ms {
                self.now += 1000;
                for (zone, region) in ZONES {
                    let target = match (self.shifted.contains(zone), zone) {
                        (true, "a") => "b",
                        (true, "b") => "a",
                        _ => zone,
                    };
                    let failed = (100.0 * self.broken.get(target).copied().unwrap_or(0.0)) as u64;
                    let errors = BTreeMap::from([("status_5xx".to_string(), failed)]);
                    self.t.ingest(&Snapshot {
                        at_ms: self.now,
                        interval_ms: 1000,
                        region: region.into(),
                        source_zone: zone.into(),
                        series: vec![Series {
                            service: "svc".into(),
                            route: "get".into(),
                            target_zone: target.into(),
                            instance: format!("{target}-1"),
                            write: false,
                            forwarded_in: false,
                            requests: 100,
                            errors,
                            p50_ms: 3.0,
                            p90_ms: 6.0,
                            p99_ms: 10.0,
                            max_ms: 12.0,
                        }],
                        probes: Vec::new(),
                        config_version: None,
                        config_refused: None,
                    });
                }
                self.t.on_alarms(&self.alarms, self.now);
                self.t.tick(self.now);
                self.notices.extend(self.t.take_notices());
            }
        }

        fn open(&mut self, scope: &str) {
            let f = finding(scope, self.now.saturating_sub(2000), self.now, None);
            self.t.on_event(&Event::Opened(f), self.now);
            self.notices.extend(self.t.take_notices());
        }

        fn close(&mut self, scope: &str) {
            let f = finding(scope, 0, self.now, Some(self.now));
            self.t.on_event(&Event::Closed(f), self.now);
        }

        fn shift(&mut self, zone: &'static str) -> Op {
            self.shifted.insert(zone);
            let op = Op::Shift {
                service: "svc".into(),
                zone: zone.into(),
                for_: Duration::from_secs(1800),
            };
            let mut e = AuditEntry::note(
                self.now,
                Actor::playbook("zone-shift"),
                AuditKind::Change,
                op.clone(),
                "finding zone:a (errors)".into(),
            );
            e.accepted = true;
            self.t.on_change("svc", &e);
            op
        }

        fn events(&self) -> Vec<&str> {
            self.notices.iter().map(|n| n.event.as_str()).collect()
        }

        /// Zone a fails from 30 s until `fixed_ms`, then its finding closes
        /// and the incident resolves: the incident's id.
        fn resolved_zone_fault(&mut self, fixed_ms: u64) -> String {
            self.run_until(30_000);
            self.broken.insert("a", 0.3);
            self.run_until(33_000);
            self.open("zone:a");
            self.run_until(fixed_ms);
            self.broken.clear();
            self.close("zone:a");
            self.run_until(fixed_ms + 10_000);
            assert!(self.t.open_for("svc").is_none(), "{:?}", self.events());
            let id = self.notices[0].incident.id.clone();
            assert_eq!(self.events(), ["opened", "status: monitoring", "resolved"]);
            id
        }
    }

    fn cfg() -> TrackerConfig {
        TrackerConfig {
            resolve_after_ms: 5_000,
            ..TrackerConfig::default()
        }
    }

    #[test]
    fn a_fault_that_comes_back_within_the_window_reopens_its_incident() {
        let mut w = world(cfg());
        let id = w.resolved_zone_fault(45_000);
        w.notices.clear();
        w.now = 200_000;
        w.broken.insert("a", 0.3);
        w.open("zone:a");
        w.run_until(203_000);
        let i = w.t.open_for("svc").expect("open again").clone();
        assert_eq!(i.id, id, "the same incident");
        assert_eq!(i.status, Status::Identified, "nothing was done about it");
        assert_eq!(i.reopened_ms, [200_000]);
        assert!(!i.stages.contains_key(&Stage::Recovered));
        assert_eq!(
            i.stages[&Stage::Occurred],
            31_000,
            "the first onset is kept"
        );
        assert!(i.timeline.iter().any(|e| e.kind == EntryKind::Reopened
            && e.text == "reopened: finding zone:a (errors) came back"));
        assert_eq!(
            w.events(),
            ["reopened: finding zone:a (errors) came back"],
            "told as a reopening, not opened again"
        );
        assert_eq!(w.notices[0].incident.id, id);
        assert!(w.t.take_dirty().iter().any(|d| d.id == id));
        let md = crate::postmortem::render(&i);
        assert!(md.contains("- **Reopened** 1 time(s), at +169.0 s"), "{md}");
    }

    #[test]
    fn after_the_window_or_in_another_place_it_is_a_new_incident() {
        let mut w = world(cfg());
        let id = w.resolved_zone_fault(45_000);
        let resolved = w.t.closed.last().and_then(|i| i.resolved_ms).unwrap();
        w.notices.clear();
        w.now = resolved + cfg().reopen_window_ms + 1000;
        w.open("zone:a");
        w.run_until(w.now + 2000);
        let later = w.t.open_for("svc").unwrap().id.clone();
        assert_ne!(later, id);
        assert_eq!(w.events(), ["opened"]);

        let mut w = world(cfg());
        let id = w.resolved_zone_fault(45_000);
        w.now = 60_000;
        w.open("zone:c");
        assert_ne!(
            w.t.open_for("svc").unwrap().id,
            id,
            "r2 is not where it was"
        );
        // A region finding covers zone a: the same fault, seen wider.
        let mut w = world(cfg());
        let id = w.resolved_zone_fault(45_000);
        w.now = 60_000;
        w.open("region:r1");
        assert_eq!(w.t.open_for("svc").unwrap().id, id);
    }

    #[test]
    fn a_restart_keeps_the_resolved_incident_to_reopen() {
        let mut w = world(cfg());
        let id = w.resolved_zone_fault(45_000);
        let stored: BTreeMap<String, Incident> =
            w.t.take_dirty()
                .into_iter()
                .map(|i| (i.id.clone(), i))
                .collect();
        let stored: Vec<Incident> = serde_json::from_value(
            serde_json::to_value(stored.into_values().collect::<Vec<_>>()).unwrap(),
        )
        .unwrap();
        let mut again = world(cfg());
        again.t.restore(stored);
        assert!(again.t.holds(&id), "the resolved incident is held");
        again.now = 100_000;
        again.open("zone:a");
        assert_eq!(again.t.open_for("svc").unwrap().id, id);
        assert_eq!(
            again.events(),
            ["reopened: finding zone:a (errors) came back"]
        );
    }

    #[test]
    fn a_flapping_finding_is_one_update_per_group_interval() {
        let mut w = world(TrackerConfig::default());
        w.run_until(30_000);
        w.broken.insert("a", 0.3);
        w.run_until(33_000);
        w.open("zone:a");
        w.run_until(35_000);
        // Closes and comes back every 6 s, four times.
        for _ in 0..4 {
            w.close("zone:a");
            w.run_until(w.now + 6000);
            w.open("zone:a");
            w.run_until(w.now + 6000);
        }
        let flaps = w
            .events()
            .iter()
            .filter(|e| e.starts_with("status"))
            .count();
        assert!(flaps >= 8, "two status changes per flap: {:?}", w.events());
        let mut g = switchyard_notify::Grouper::with_interval(2000, 30_000);
        let mut sent = Vec::new();
        let mut pending = w.notices.iter().peekable();
        for now in (30_000..=90_000).step_by(500) {
            while let Some(n) = pending.next_if(|n| n.at_ms <= now) {
                let notice = switchyard_notify::Notice {
                    incident_id: n.incident.id.clone(),
                    service: n.incident.service.clone(),
                    severity: n.incident.severity,
                    status: n.incident.status.to_string(),
                    title: n.incident.title.clone(),
                    summary: String::new(),
                    scopes: n.incident.scopes.clone(),
                    event: n.event.clone(),
                    at_ms: n.at_ms,
                    started_at_ms: 0,
                    ended_at_ms: None,
                    url: None,
                    urgent: n.urgent,
                    acknowledged: false,
                };
                g.push(notice, now);
            }
            sent.extend(g.due(now).into_iter().map(|m| (now, m)));
        }
        let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
        assert!(
            times.windows(2).all(|p| p[1] - p[0] >= 30_000),
            "one message per interval at most: {times:?}"
        );
        assert!(times.len() <= 3, "{times:?}");
    }

    #[test]
    fn an_action_that_helped_mitigates() {
        let mut w = world(TrackerConfig::default());
        w.run_until(70_000);
        w.broken.insert("a", 0.3);
        w.run_until(73_000);
        w.open("zone:a");
        w.run_until(75_000);
        w.shift("a");
        w.run_until(90_000);
        let checks = w.t.take_checks();
        assert_eq!(checks.len(), 1);
        let c = &checks[0].check;
        assert_eq!(c.outcome, CheckOutcome::Passed, "{}", c.why);
        assert_eq!(c.users, Users::regions(["r1"]));
        // The before window starts at the onset, not in healthy seconds.
        assert_eq!((c.before.requests, c.before.failed), (800, 120));
        assert_eq!(c.after.bad(), 0);
        let i = w.t.open_for("svc").unwrap();
        assert_eq!(i.stages[&Stage::Mitigated], 75_000);
        assert_eq!(i.status, Status::Monitoring);
        assert!(!w.events().iter().any(|e| e.starts_with("escalated")));
    }

    #[test]
    fn an_action_that_did_not_help_escalates() {
        let mut w = world(TrackerConfig::default());
        w.run_until(70_000);
        // Both zones of r1 fail; detection named zone a first.
        w.broken.insert("a", 0.3);
        w.broken.insert("b", 0.3);
        w.run_until(73_000);
        w.open("zone:a");
        w.run_until(75_000);
        let before = w.t.open_for("svc").unwrap().severity;
        let op = w.shift("a");
        w.run_until(90_000);
        let checks = w.t.take_checks();
        assert_eq!(checks.len(), 1);
        let j = &checks[0];
        assert_eq!(j.check.outcome, CheckOutcome::Failed, "{}", j.check.why);
        assert_eq!((j.op.clone(), j.acted_ms), (op.clone(), 75_000));
        assert!(j.actor.is_playbook());
        let i = w.t.open_for("svc").unwrap();
        assert_eq!(i.severity, before.raised(), "one level up");
        assert!(
            i.severity_reason.starts_with("escalated"),
            "{}",
            i.severity_reason
        );
        assert!(!i.stages.contains_key(&Stage::Mitigated));
        assert!(i.timeline.iter().any(|e| e.kind == EntryKind::Escalation));
        let v = i
            .timeline
            .iter()
            .find(|e| e.kind == EntryKind::Verification)
            .unwrap();
        let typed: Check = serde_json::from_value(v.detail.clone()).unwrap();
        assert_eq!(typed, j.check);
        let n = w
            .notices
            .iter()
            .find(|n| n.event.starts_with("escalated"))
            .expect("people are told");
        assert!(n.urgent, "an escalation pages at once");
        let told = n.event.clone();
        assert_eq!(
            told,
            format!(
                "escalated: {op} did not help (users of r1: 30.0 % of 800 requests failed or slow before, 30.0 % of 1000 requests failed or slow after); severity raised to {}",
                before.raised()
            )
        );
        // The postmortem says so, in the summary and as an action item.
        let md = crate::postmortem::render(i);
        assert!(
            md.contains(&format!(
                "- **Escalated** at +16.0 s to {}: {op} did not help (users of r1",
                before.raised()
            )),
            "{md}"
        );
        assert!(
            md.contains("A mitigation did not help and the incident was escalated"),
            "{md}"
        );
    }

    #[test]
    fn a_person_pinned_severity_is_kept_but_still_told() {
        let mut w = world(TrackerConfig::default());
        w.run_until(70_000);
        w.broken.insert("a", 0.3);
        w.broken.insert("b", 0.3);
        w.run_until(73_000);
        w.open("zone:a");
        w.run_until(75_000);
        let id = w.t.open_for("svc").unwrap().id.clone();
        let i = w.t.get_mut(&id).unwrap();
        i.severity = Severity::Sev3;
        i.severity_pinned = true;
        w.shift("a");
        w.run_until(90_000);
        assert_eq!(w.t.open_for("svc").unwrap().severity, Severity::Sev3);
        assert!(w
            .events()
            .iter()
            .any(|e| e.ends_with("severity stays SEV3 (set by a person)")));
    }

    #[test]
    fn config_errors_name_their_field() {
        let bad = TrackerConfig {
            verify_window_ms: 20_000,
            slow_p99_ms: Some(-1.0),
            error_bound: 1.5,
            ..TrackerConfig::default()
        };
        let errs = bad.validate("control.incidents").unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("control.incidents.error_bound:"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("control.incidents.verify_window_ms:"),
            "{errs:?}"
        );
        assert!(
            errs[2].starts_with("control.incidents.slow_p99_ms:"),
            "{errs:?}"
        );
        assert!(TrackerConfig::default().validate("x").is_ok());
    }

    fn alarm(name: &str, severity: &str) -> switchyard_model::finding::Alarm {
        switchyard_model::finding::Alarm {
            name: name.into(),
            service: "svc".into(),
            severity: severity.into(),
            at_ms: 0,
            detail: serde_json::json!({"long_burn": 20.0}),
        }
    }

    fn grace() -> TrackerConfig {
        TrackerConfig {
            alarm_grace_ms: 10_000,
            ..cfg()
        }
    }

    #[test]
    fn an_unexplained_fast_burn_opens_a_paging_incident_after_the_grace() {
        let mut w = world(grace());
        w.run_until(60_000);
        w.alarms = vec![alarm("slo_burn:page-fast", "page")];
        w.run_until(69_000);
        assert_eq!(w.t.open_incidents().count(), 0, "within the grace");
        w.run_until(71_000);
        let i = w.t.open_for("svc").expect("opened").clone();
        assert!(i.title.contains("SLO burn page-fast"), "{}", i.title);
        assert_eq!(i.scopes, vec!["service".to_string()]);
        assert_eq!(i.severity, Severity::Sev2, "a fast burn pages");
        assert_eq!(i.stages[&Stage::Occurred], 61_000, "from the alarm's start");
        assert!(i.alarms[0].opened);
        assert!(w.events().contains(&"opened"), "{:?}", w.events());
        // The burn stops: recovered, then resolved after the usual wait.
        w.alarms.clear();
        w.run_until(75_000);
        let i = w.t.open_for("svc").expect("still open").clone();
        assert!(i.stages.contains_key(&Stage::Recovered), "{:?}", i.stages);
        assert!(
            i.timeline
                .iter()
                .any(|e| e.text.contains("every alarm stopped")),
            "{:?}",
            i.timeline
        );
        w.run_until(90_000);
        assert!(w.t.open_for("svc").is_none(), "resolved");
        assert!(w.events().contains(&"resolved"), "{:?}", w.events());
    }

    #[test]
    fn a_trend_opens_a_ticket_level_incident() {
        let mut w = world(grace());
        w.run_until(60_000);
        w.alarms = vec![alarm("trend:zone:a", "ticket")];
        w.run_until(75_000);
        let i = w.t.open_for("svc").expect("opened");
        assert_eq!(i.severity, Severity::Sev3, "{}", i.severity_reason);
        assert_eq!(i.scopes, vec!["zone:a".to_string()]);
    }

    #[test]
    fn an_alarm_joins_its_faults_incident_and_a_lagging_burn_opens_no_second() {
        let mut w = world(grace());
        w.run_until(60_000);
        // The burn fires first, as it does: a few seconds of errors are a
        // fast burn before detection has localized them.
        w.broken.insert("a", 0.5);
        w.alarms = vec![alarm("slo_burn:page-fast", "page")];
        w.run_until(62_000);
        w.open("zone:a");
        w.run_until(70_000);
        let i = w.t.open_for("svc").expect("open").clone();
        assert!(
            i.title.contains("zone a"),
            "the finding names it: {}",
            i.title
        );
        assert_eq!(i.scopes, vec!["zone:a".to_string()]);
        assert_eq!(i.alarms.len(), 1);
        assert!(!i.alarms[0].opened);
        assert!(i
            .timeline
            .iter()
            .any(|e| e.kind == EntryKind::Alarm && e.text.contains("slo_burn:page-fast")));
        // The zone heals; the burn's long window keeps it firing.
        w.broken.clear();
        w.close("zone:a");
        w.run_until(80_000);
        assert!(w.t.open_for("svc").is_none(), "resolved without the burn");
        w.run_until(200_000);
        assert_eq!(
            w.t.open_incidents().count(),
            0,
            "the lagging burn is explained"
        );
        assert_eq!(w.t.ids.len(), 1, "one incident for the fault");
        // Once it stops and fires again, it is a new alarm.
        w.alarms.clear();
        w.run_until(210_000);
        w.alarms = vec![alarm("slo_burn:page-fast", "page")];
        w.run_until(225_000);
        assert_eq!(w.t.open_incidents().count(), 1);
    }

    #[test]
    fn a_finding_takes_over_the_incident_its_alarm_opened() {
        let mut w = world(grace());
        w.run_until(60_000);
        w.alarms = vec![alarm("slo_burn:page-slow", "ticket")];
        w.run_until(75_000);
        let id = w.t.open_for("svc").expect("opened").id.clone();
        w.open("region:r1");
        let i = w.t.open_for("svc").unwrap();
        assert_eq!(i.id, id, "one incident");
        assert_eq!(i.scopes, vec!["region:r1".to_string()]);
        assert!(i.title.contains("region r1"), "{}", i.title);
        // From now on the finding says when it is over, not the alarm.
        w.close("region:r1");
        w.run_until(85_000);
        assert!(
            w.t.open_for("svc").is_none(),
            "resolved while the slow burn lags"
        );
    }

    #[test]
    fn a_takeover_ends_a_stored_alarm_that_stopped_meanwhile() {
        let mut w = world(grace());
        w.run_until(60_000);
        w.alarms = vec![alarm("threshold:p99:zone:a", "page")];
        w.run_until(75_000);
        let stored: Vec<Incident> = w.t.open_incidents().cloned().collect();
        assert_eq!(stored[0].severity, Severity::Sev2);
        // A new leader restores the store's copy; the alarm has stopped.
        let mut next = world(grace());
        next.now = w.now;
        next.t.restore(stored);
        next.run_until(79_000);
        let i = next.t.open_for("svc").expect("still open");
        assert!(i.alarms[0].end_ms.is_some(), "{:?}", i.alarms);
        next.run_until(100_000);
        assert!(next.t.open_for("svc").is_none(), "and resolved");
    }

    fn rollout_step(at_ms: u64, text: &str) -> AuditEntry {
        AuditEntry {
            at_ms,
            actor: Actor::Rollout { id: "r1".into() },
            kind: AuditKind::Rollout,
            op: None,
            action: format!("rollout: {text}"),
            reason: "new timeouts".into(),
            accepted: true,
            rule: None,
            version: None,
            detail: serde_json::Value::Null,
            check: None,
        }
    }

    #[test]
    fn config_changes_before_an_incident_open_its_timeline_and_later_ones_join_it() {
        let mut w = world(cfg());
        w.run_until(30_000);
        // Long before: not this incident's business.
        w.t.on_change("svc", &rollout_step(1_000, "wave 1 went out long ago"));
        w.now = 40 * 60_000;
        w.run_until(40 * 60_000 + 1_000);
        w.t.on_change(
            "svc",
            &rollout_step(w.now, "wave 1 (canary a) going out to a"),
        );
        w.t.on_change("other", &rollout_step(w.now, "another service's wave"));
        w.run_until(w.now + 20_000);
        w.broken.insert("a", 0.3);
        w.run_until(w.now + 3_000);
        w.open("zone:a");
        let i = w.t.open_for("svc").unwrap();
        assert_eq!(
            i.timeline[0].kind,
            EntryKind::ConfigChange,
            "{:?}",
            i.timeline
        );
        assert!(i.timeline[0]
            .text
            .contains("before the incident: rollout: wave 1 (canary a)"));
        assert_eq!(
            i.timeline
                .iter()
                .filter(|e| e.kind == EntryKind::ConfigChange)
                .count(),
            1,
            "only this service's, and only recent ones"
        );
        assert_eq!(i.timeline[1].kind, EntryKind::Opened);
        w.t.on_change("svc", &rollout_step(w.now, "rolled back to cold"));
        let i = w.t.open_for("svc").unwrap();
        let last = i.timeline.last().unwrap();
        assert_eq!(last.kind, EntryKind::ConfigChange);
        assert_eq!(last.text, "rollout: rolled back to cold");
    }

    #[test]
    fn an_incident_stored_before_its_first_notice_is_told_by_the_plane_that_takes_over() {
        let mut w = world(cfg());
        w.run_until(5_000);
        // Opened by hand and written to the store; the first notice waits
        // for the first measured second, which this plane never reaches.
        let (id, _) = w.t.open_by_hand("svc", "slow checkout", "ann", None, w.now);
        let stored: Vec<Incident> =
            serde_json::from_value(serde_json::to_value(w.t.take_dirty()).unwrap()).unwrap();
        assert!(w.events().is_empty(), "nothing told yet");
        let mut next = world(cfg());
        next.now = w.now;
        next.t.restore(stored);
        next.run_until(8_000);
        assert_eq!(next.events(), ["opened"], "told once, by the new plane");
        // A copy told before is not told again by the plane after.
        let told: Vec<Incident> = next.t.open_incidents().cloned().collect();
        assert!(told.iter().all(|i| i.id == id && i.announced));
        let mut third = world(cfg());
        third.now = next.now;
        third.t.restore(told);
        third.run_until(11_000);
        assert!(third.events().is_empty(), "{:?}", third.events());
    }

    #[test]
    fn the_stores_copy_replaces_the_held_one_and_a_plane_that_lets_go_holds_nothing() {
        let mut w = world(cfg());
        let (id, _) = w.t.open_by_hand("svc", "slow checkout", "ann", None, 1_000);
        let mut stored = w.t.open_for("svc").unwrap().clone();
        stored
            .set_status(Status::Resolved, 2_000, "bob", "fixed elsewhere")
            .unwrap();
        // A change made here and not yet written...
        w.t.get_mut(&id).unwrap().title = "changed here".into();
        // ...gives way to the store's copy: resolved, nothing left to write.
        w.t.replace(stored.clone());
        assert!(w.t.open_for("svc").is_none(), "resolved in the store");
        assert!(w.t.holds(&id), "kept among the recently resolved");
        assert!(
            w.t.take_dirty().is_empty(),
            "the change made here is dropped"
        );
        assert_eq!(w.t.get_mut(&id).unwrap().title, "slow checkout");
        // An open store copy goes back among the open ones.
        let mut reopened = stored;
        reopened.status = Status::Investigating;
        w.t.replace(reopened);
        assert_eq!(w.t.open_for("svc").map(|i| i.id.clone()), Some(id.clone()));
        // Letting go: nothing held, nothing to write or tell; ids stay known.
        w.t.get_mut(&id).unwrap();
        w.t.let_go();
        assert!(!w.t.holds(&id));
        assert!(w.t.take_dirty().is_empty());
        assert!(w.t.take_notices().is_empty());
        let (again, created) = w.t.open_by_hand("svc", "slow again", "ann", None, 1_000);
        assert!(created);
        assert_ne!(again, id, "an id in the store is never reused");
    }
}
