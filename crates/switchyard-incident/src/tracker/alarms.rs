//! Alarms into incidents. SLO burns of a whole service, static thresholds,
//! error-rate trends and silent application heartbeats say that users are
//! hurt (or soon will be) without saying where; they reach people through
//! the same incidents, severity rules and notifications as findings.
//!
//! One fault, one incident: an alarm usually fires a little before, or
//! with, the finding that localizes its fault (a fast burn needs only
//! seconds of errors), and its long windows keep it firing for minutes
//! after the fault is gone. So an alarm joins the service's open incident
//! as evidence without becoming its title or scope, and stays with that
//! incident until it stops, even once the incident has resolved: a lagging
//! burn neither holds the incident open nor opens a second one. Only an
//! alarm that nothing with a place has explained for `alarm_grace_ms`
//! opens an incident of its own, which recovers when its alarms stop, and
//! which a finding arriving later takes over (title and scope).

use serde_json::json;
use switchyard_model::finding::Alarm;

use super::{incident_id, Tracker};
use crate::incident::{AlarmRecord, EntryKind, Incident, Severity, Stage};

/// An alarm missing from this many milliseconds of evaluations has
/// stopped: a threshold's M-of-N or a trend's fit may drop out for one
/// second without the alarm's episode ending.
pub const ALARM_CLEAR_MS: u64 = 3_000;

/// One firing episode of one alarm of one service.
#[derive(Debug, Clone)]
pub(super) struct Episode {
    since_ms: u64,
    last_seen_ms: u64,
    /// The incident that explains it (it joined or opened it), kept after
    /// that incident resolves.
    incident: Option<String>,
    alarm: Alarm,
}

/// The severity an alarm asks for: a page (fast burn, threshold, silent
/// heartbeat) is SEV2, a ticket (slow burn, trend) SEV3.
pub(super) fn floor(severity: &str) -> Option<Severity> {
    match severity {
        "page" => Some(Severity::Sev2),
        "ticket" => Some(Severity::Sev3),
        _ => None,
    }
}

/// The most severe floor of the alarms firing on `i`, with why.
pub(super) fn alarm_floor(i: &Incident) -> Option<(Severity, String)> {
    i.alarms
        .iter()
        .filter(|a| a.end_ms.is_none())
        .filter_map(|a| {
            floor(&a.severity).map(|s| (s, format!("alarm {} ({})", a.name, a.severity)))
        })
        .max_by_key(|(s, _)| *s)
}

fn record(e: &Episode, opened: bool) -> AlarmRecord {
    AlarmRecord {
        name: e.alarm.name.clone(),
        severity: e.alarm.severity.clone(),
        scope: e.alarm.scope(),
        since_ms: e.since_ms,
        end_ms: None,
        opened,
        detail: e.alarm.detail.clone(),
    }
}

impl Tracker {
    /// The alarms in force now (the detection engine's list, every tick).
    pub fn on_alarms(&mut self, alarms: &[Alarm], now_ms: u64) {
        for a in alarms.iter().filter(|a| !a.is_route_burn()) {
            let svc = a.owner().to_string();
            if svc.is_empty() {
                continue;
            }
            let e = self
                .alarms
                .entry((svc, a.name.clone()))
                .or_insert_with(|| Episode {
                    since_ms: now_ms,
                    last_seen_ms: now_ms,
                    incident: None,
                    alarm: a.clone(),
                });
            e.last_seen_ms = now_ms;
            e.alarm = a.clone();
        }
        let keys: Vec<(String, String)> = self.alarms.keys().cloned().collect();
        for key in keys {
            let e = self.alarms[&key].clone();
            let svc = key.0.as_str();
            if now_ms.saturating_sub(e.last_seen_ms) > ALARM_CLEAR_MS {
                self.alarms.remove(&key);
                self.alarm_stopped(svc, &e, now_ms);
                continue;
            }
            if e.last_seen_ms != now_ms {
                continue;
            }
            match &e.incident {
                Some(id) => self.alarm_update(svc, id, &e),
                None if self.open.contains_key(svc) => self.alarm_joins(svc, &key, now_ms),
                None if now_ms.saturating_sub(e.since_ms) >= self.cfg.alarm_grace_ms => {
                    self.alarm_opens(svc, &key, now_ms)
                }
                None => {}
            }
        }
    }

    /// After a restart or a takeover: the alarms the stored incidents
    /// record as firing are episodes again, seen last when the incident
    /// was last updated, so one that still fires keeps its incident and
    /// one that stopped meanwhile ends.
    pub(super) fn restore_alarms(&mut self) {
        self.alarms.clear();
        for i in self.open.values() {
            for a in i.alarms.iter().filter(|a| a.end_ms.is_none()) {
                self.alarms.insert(
                    (i.service.clone(), a.name.clone()),
                    Episode {
                        since_ms: a.since_ms,
                        last_seen_ms: i.updated_ms,
                        incident: Some(i.id.clone()),
                        alarm: Alarm {
                            name: a.name.clone(),
                            service: i.service.clone(),
                            severity: a.severity.clone(),
                            at_ms: i.updated_ms,
                            detail: a.detail.clone(),
                        },
                    },
                );
            }
        }
    }

    fn alarm_joins(&mut self, svc: &str, key: &(String, String), now_ms: u64) {
        let Some(i) = self.open.get_mut(svc) else {
            return;
        };
        let e = self.alarms.get_mut(key).expect("listed");
        e.incident = Some(i.id.clone());
        if !i
            .alarms
            .iter()
            .any(|a| a.name == e.alarm.name && a.end_ms.is_none())
        {
            i.alarms.push(record(e, false));
        }
        i.log(
            now_ms,
            EntryKind::Alarm,
            "switchyard",
            format!("alarm {}: {}", e.alarm.name, e.alarm.describe()),
            json!({"severity": e.alarm.severity, "since_ms": e.since_ms, "detail": e.alarm.detail}),
        );
        self.dirty.insert(i.id.clone());
    }

    fn alarm_opens(&mut self, svc: &str, key: &(String, String), now_ms: u64) {
        let e = self.alarms.get(key).expect("listed").clone();
        let id = incident_id(svc, now_ms, &self.ids);
        let title = format!("{svc}: {}", e.alarm.describe());
        let mut i = Incident::new(id.clone(), svc, &title, "switchyard", now_ms);
        self.backfill_config_changes(&mut i);
        i.scopes.push(e.alarm.scope());
        i.alarms.push(record(&e, true));
        i.baseline_p99_ms = self.users.baseline_p99(
            svc,
            e.since_ms.saturating_sub(crate::evidence::BASELINE_MS),
            e.since_ms,
        );
        i.log(
            now_ms,
            EntryKind::Alarm,
            "switchyard",
            format!(
                "alarm {} unexplained for {} s: {}",
                e.alarm.name,
                now_ms.saturating_sub(e.since_ms) / 1000,
                e.alarm.describe()
            ),
            json!({"severity": e.alarm.severity, "since_ms": e.since_ms, "detail": e.alarm.detail}),
        );
        i.stages.insert(Stage::Occurred, e.since_ms);
        i.reach(Stage::Detected, now_ms, "switchyard");
        self.ids.insert(id.clone());
        self.dirty.insert(id.clone());
        self.open.insert(svc.to_string(), i);
        self.alarms.get_mut(key).expect("listed").incident = Some(id.clone());
        // Others of the service's alarms already firing belong here too.
        let others: Vec<(String, String)> = self
            .alarms
            .iter()
            .filter(|(k, o)| k.0 == svc && o.incident.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for k in others {
            self.alarm_joins(svc, &k, now_ms);
        }
    }

    /// Keeps the firing alarm's numbers current on its open incident.
    fn alarm_update(&mut self, svc: &str, id: &str, e: &Episode) {
        let Some(i) = self.open.get_mut(svc).filter(|i| i.id == id) else {
            return;
        };
        if let Some(r) = i
            .alarms
            .iter_mut()
            .rev()
            .find(|a| a.name == e.alarm.name && a.end_ms.is_none())
        {
            r.detail = e.alarm.detail.clone();
            r.severity = e.alarm.severity.clone();
        }
    }

    fn alarm_stopped(&mut self, svc: &str, e: &Episode, now_ms: u64) {
        let Some(i) = self
            .open
            .get_mut(svc)
            .filter(|i| Some(&i.id) == e.incident.as_ref())
        else {
            return;
        };
        let Some(r) = i
            .alarms
            .iter_mut()
            .rev()
            .find(|a| a.name == e.alarm.name && a.end_ms.is_none())
        else {
            return;
        };
        r.end_ms = Some(e.last_seen_ms);
        i.log(
            now_ms,
            EntryKind::Alarm,
            "switchyard",
            format!("alarm {} stopped", e.alarm.name),
            serde_json::Value::Null,
        );
        self.dirty.insert(i.id.clone());
    }
}
