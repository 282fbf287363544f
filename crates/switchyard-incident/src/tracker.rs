//! Findings and actions in, incidents out. Pure: the control plane feeds it
//! the edges' snapshots, detection events, control changes and delivery
//! attempts with their times, and persists the incidents it marks changed.
//!
//! Grouping: one open incident per service. Zone, region, link and
//! write-path findings (and scoped alerts) open one; instance findings and
//! any later finding join the open one, so a zone failure is one incident,
//! not one per instance alarm. An instance alone opens nothing: the edges
//! eject it and that is not worth waking anyone.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_detect::{Event, Finding};
use switchyard_model::signals::{ProbeTarget, Snapshot};

use crate::incident::{severity_of, EntryKind, Impact, Incident, Point, Severity, Stage, Status};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Recovered (every finding closed) this long before it is resolved.
    pub resolve_after_ms: u64,
    /// The availability objective the error budget is measured against.
    pub objective: f64,
    /// A second with a larger share of failed requests is in the error window.
    pub error_bound: f64,
    /// How long after an action its effect is judged.
    pub verify_after_ms: u64,
    /// Seconds of signals kept, for the minute before an onset.
    pub keep_s: u64,
    /// At most this many seconds of series per incident.
    pub max_points: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            resolve_after_ms: 60_000,
            objective: 0.999,
            error_bound: 0.01,
            verify_after_ms: 10_000,
            keep_s: 900,
            max_points: 3600,
        }
    }
}

/// Something to tell people about one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub incident: Incident,
    pub event: String,
    pub at_ms: u64,
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
    before: Option<f64>,
}

pub struct Tracker {
    cfg: TrackerConfig,
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
    /// Incidents announced (the first notice waits for the first impact).
    announced: BTreeSet<String>,
    ids: BTreeSet<String>,
    /// Recently resolved, newest last: late delivery attempts and people's
    /// stages still land on them here rather than on a stale copy.
    closed: Vec<Incident>,
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
        Tracker {
            cfg,
            seconds: BTreeMap::new(),
            zone_region,
            instance_zone: BTreeMap::new(),
            critical_routes,
            open: BTreeMap::new(),
            verify: BTreeMap::new(),
            dirty: BTreeSet::new(),
            notices: Vec::new(),
            announced: BTreeSet::new(),
            ids: BTreeSet::new(),
            closed: Vec::new(),
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// Takes back the open incidents after a restart (already announced).
    pub fn restore(&mut self, incidents: Vec<Incident>) {
        for i in incidents {
            self.ids.insert(i.id.clone());
            if i.status != Status::Resolved {
                self.announced.insert(i.id.clone());
                self.open.insert(i.service.clone(), i);
            }
        }
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

    fn notify(&mut self, service: &str, event: String, at_ms: u64) {
        if let Some(i) = self.open.get(service) {
            if self.announced.contains(&i.id) {
                self.notices.push(Notice {
                    incident: i.clone(),
                    event,
                    at_ms,
                });
            }
        }
    }

    /// One edge's snapshot.
    pub fn ingest(&mut self, s: &Snapshot) {
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
        if !self.open.contains_key(&f.service) {
            if level == "instance" || f.scope.is_empty() {
                return;
            }
            let id = incident_id(&f.service, now_ms, &self.ids);
            let title = format!("{} {} ({})", f.service, f.scope.replace(':', " "), f.kind);
            let i = Incident::new(id.clone(), &f.service, &title, "switchyard", now_ms);
            self.ids.insert(id);
            self.open.insert(f.service.clone(), i);
        }
        let i = self.open.get_mut(&f.service).expect("just ensured");
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
        if let Some(s) = changed {
            self.notify(&f.service, format!("status: {s}"), now_ms);
        }
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

    /// A control change that took effect (`accepted`) or was refused, by a
    /// playbook or a person, for `service`.
    pub fn on_action(
        &mut self,
        service: &str,
        who: &str,
        what: &str,
        accepted: bool,
        at_ms: u64,
        detail: serde_json::Value,
    ) {
        let before = self.affected_rate(service, at_ms);
        let Some(i) = self.open.get_mut(service) else {
            return;
        };
        i.log(
            at_ms,
            EntryKind::Action,
            who,
            format!("{}{what}", if accepted { "" } else { "refused: " }),
            detail,
        );
        let id = i.id.clone();
        self.dirty.insert(id.clone());
        if !accepted || what.starts_with("verify") {
            return;
        }
        let moved = i.status < Status::Mitigating
            && i.set_status(Status::Mitigating, at_ms, "switchyard", what)
                .is_ok();
        self.verify.entry(id).or_default().push(Pending {
            at_ms,
            due_ms: at_ms + self.cfg.verify_after_ms,
            what: what.to_string(),
            before,
        });
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
        let mut zones = BTreeSet::new();
        let mut all = false;
        let zones_of = |r: &str| {
            self.zone_region
                .iter()
                .filter(|(_, x)| x.as_str() == r)
                .map(|(z, _)| z.clone())
                .collect::<Vec<_>>()
        };
        for s in &i.scopes {
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
        (zones, all || i.scopes.is_empty())
    }

    /// Errors of the regions an incident touches over the last 3 s before `at_ms`.
    fn affected_rate(&self, service: &str, at_ms: u64) -> Option<f64> {
        let i = self.open.get(service)?;
        let (zones, all) = self.affected_zones(i);
        let regions: BTreeSet<&String> = zones
            .iter()
            .filter_map(|z| self.zone_region.get(z))
            .collect();
        let sec = at_ms / 1000;
        let (mut q, mut f) = (0, 0);
        for (_, by) in self.seconds.range(sec.saturating_sub(3)..sec) {
            if let Some(s) = by.get(service) {
                for ((z, _), c) in &s.cells {
                    if all || self.zone_region.get(z).is_some_and(|r| regions.contains(r)) {
                        q += c.requests;
                        f += c.failed;
                    }
                }
            }
        }
        rate(q, f)
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
        for p in due {
            let after = self.affected_rate(svc, p.due_ms);
            let helped = match (p.before, after) {
                (_, None) => true,
                (None, Some(a)) => a <= self.cfg.error_bound,
                (Some(b), Some(a)) => a <= self.cfg.error_bound || a <= b / 2.0,
            };
            let pct = |x: Option<f64>| {
                x.map(|v| format!("{:.1} %", v * 100.0))
                    .unwrap_or_else(|| "no traffic".into())
            };
            let i = self.open.get_mut(svc).expect("open");
            i.log(
                now_ms,
                EntryKind::Verification,
                "switchyard",
                format!(
                    "{} {}: errors {} when acting, {} {} s later",
                    p.what,
                    if helped { "helped" } else { "did not help" },
                    pct(p.before),
                    pct(after),
                    self.cfg.verify_after_ms / 1000
                ),
                json!({"error_rate_before": p.before, "error_rate_after": after, "helped": helped}),
            );
            let mut moved = false;
            if helped {
                // Mitigated when the first action that helped took effect.
                i.reach(Stage::Mitigated, p.at_ms, "switchyard");
                if i.status == Status::Mitigating {
                    moved = i
                        .set_status(
                            Status::Monitoring,
                            now_ms,
                            "switchyard",
                            "the mitigation helped",
                        )
                        .is_ok();
                }
            }
            self.dirty.insert(id.clone());
            if moved {
                self.notify(svc, "status: monitoring".into(), now_ms);
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
            // Automatic rules only ever raise the severity during an incident.
            if sev > i.severity || i.severity_reason == "not measured yet" {
                if sev > i.severity && self.announced.contains(&i.id) {
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
        let id = i.id.clone();
        self.dirty.insert(id.clone());
        if !self.announced.contains(&id) {
            self.announced.insert(id);
            self.notify(svc, "opened".into(), now_ms);
        } else if let Some(s) = raised {
            self.notify(svc, format!("severity raised to {}", s.as_str()), now_ms);
        }
    }

    fn progress(&mut self, svc: &str, now_ms: u64) {
        let Some(i) = self.open.get_mut(svc) else {
            return;
        };
        if i.findings.is_empty() || i.findings.iter().any(|f| f.end_ms.is_none()) {
            return;
        }
        let recovered = i
            .findings
            .iter()
            .filter_map(|f| f.end_ms)
            .max()
            .unwrap_or(now_ms);
        let mut events = Vec::new();
        if i.reach(Stage::Recovered, recovered, "switchyard") && i.status < Status::Monitoring {
            let _ = i.set_status(
                Status::Monitoring,
                now_ms,
                "switchyard",
                "every finding closed",
            );
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

    /// Resolves an open incident by hand (or moves its status).
    pub fn set_status(
        &mut self,
        id: &str,
        to: Status,
        who: &str,
        note: &str,
        now_ms: u64,
    ) -> Result<Incident, String> {
        let svc = self
            .open
            .values()
            .find(|i| i.id == id)
            .map(|i| i.service.clone())
            .ok_or_else(|| format!("incident {id} is not open"))?;
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
