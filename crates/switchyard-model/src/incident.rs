//! An incident: what is affected, how badly, where it stands, and a timeline
//! the system fills in itself, with the raw timestamps kept so time to
//! detect, acknowledge, mitigate and recover can be computed for any period.

use std::collections::BTreeMap;
use std::fmt;

use crate::finding::Finding;
use serde::{Deserialize, Serialize};

/// Where an incident stands. Moves forward; the one way back is from
/// monitoring to mitigating, when the mitigation did not hold. A resolved
/// incident is final for people; the system reopens it only when its fault
/// comes back within the reopen window ([`Incident::reopen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Investigating,
    Identified,
    Mitigating,
    Monitoring,
    Resolved,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Investigating,
        Status::Identified,
        Status::Mitigating,
        Status::Monitoring,
        Status::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Investigating => "investigating",
            Status::Identified => "identified",
            Status::Mitigating => "mitigating",
            Status::Monitoring => "monitoring",
            Status::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Result<Status, String> {
        Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?} (one of {})",
                    Status::ALL.map(Status::as_str).join(", ")
                )
            })
    }

    /// Whether `self` → `to` is allowed, and why not.
    pub fn check(self, to: Status) -> Result<(), String> {
        if self == to {
            return Err(format!("the incident is already {}", to.as_str()));
        }
        if self == Status::Resolved {
            return Err("a resolved incident stays resolved; open a new one".into());
        }
        if to < self && !(self == Status::Monitoring && to == Status::Mitigating) {
            return Err(format!(
                "cannot go back from {} to {} (the only way back is monitoring → mitigating)",
                self.as_str(),
                to.as_str()
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The timeline's stages. The first six are set by the system from what it
/// recorded (acknowledged by the person who acknowledges); the last three
/// are set by people, in order, once the incident is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Occurred,
    Detected,
    Notified,
    Acknowledged,
    Mitigated,
    Recovered,
    Analysed,
    Shared,
    Reviewed,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Occurred,
        Stage::Detected,
        Stage::Notified,
        Stage::Acknowledged,
        Stage::Mitigated,
        Stage::Recovered,
        Stage::Analysed,
        Stage::Shared,
        Stage::Reviewed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Occurred => "occurred",
            Stage::Detected => "detected",
            Stage::Notified => "notified",
            Stage::Acknowledged => "acknowledged",
            Stage::Mitigated => "mitigated",
            Stage::Recovered => "recovered",
            Stage::Analysed => "analysed",
            Stage::Shared => "shared",
            Stage::Reviewed => "reviewed",
        }
    }

    pub fn parse(s: &str) -> Result<Stage, String> {
        Stage::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown stage {s:?} (one of {})",
                    Stage::ALL.map(Stage::as_str).join(", ")
                )
            })
    }

    pub fn by_people(self) -> bool {
        matches!(self, Stage::Analysed | Stage::Shared | Stage::Reviewed)
    }
}

/// One severity scale for incidents and the notices about them: SEV1 is
/// the worst and orders highest.
pub use crate::notice::Severity;

/// Who and what is affected, measured from the edges' signals over the
/// incident so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// Share of the service's requests that went to the affected places on
    /// the routes that failed there.
    pub traffic_share: f64,
    /// Routes that failed in the affected places.
    pub routes: Vec<String>,
    /// Whether one of them is a critical route.
    pub critical_route: bool,
    pub requests: u64,
    pub failed: u64,
    /// Failed requests as a share of the month's error budget at the
    /// service's current traffic.
    pub budget_burned: f64,
    pub duration_ms: u64,
}

/// The documented severity rules (docs/incidents.md): the worst level any
/// rule gives.
pub fn severity_of(i: &Impact) -> (Severity, String) {
    let s = i.traffic_share;
    let b = i.budget_burned;
    let mut why: Vec<(Severity, String)> = Vec::new();
    let mut worse = |l: Severity, reason: String| why.push((l, reason));
    if s >= 0.5 {
        worse(
            Severity::Sev1,
            format!("{:.0} % of traffic affected (≥ 50 %)", s * 100.0),
        );
    } else if s >= 0.2 {
        worse(
            Severity::Sev2,
            format!("{:.0} % of traffic affected (≥ 20 %)", s * 100.0),
        );
    } else if s >= 0.05 {
        worse(
            Severity::Sev3,
            format!("{:.1} % of traffic affected (≥ 5 %)", s * 100.0),
        );
    }
    if b >= 0.10 {
        worse(
            Severity::Sev1,
            format!(
                "{:.1} % of the month's error budget burned (≥ 10 %)",
                b * 100.0
            ),
        );
    } else if b >= 0.02 {
        worse(
            Severity::Sev2,
            format!(
                "{:.1} % of the month's error budget burned (≥ 2 %)",
                b * 100.0
            ),
        );
    } else if b >= 0.005 {
        worse(
            Severity::Sev3,
            format!(
                "{:.2} % of the month's error budget burned (≥ 0.5 %)",
                b * 100.0
            ),
        );
    }
    if i.critical_route && s >= 0.05 {
        worse(
            Severity::Sev2,
            "a critical route fails for ≥ 5 % of traffic".into(),
        );
    }
    let level = |w: &[(Severity, String)]| w.iter().map(|x| x.0).max().unwrap_or(Severity::Sev4);
    if i.duration_ms >= 30 * 60 * 1000 && level(&why) < Severity::Sev1 {
        let raised = level(&why).raised();
        why.push((raised, "not over after 30 minutes: one level up".into()));
    }
    let level = level(&why);
    let reason = why
        .into_iter()
        .filter(|(l, _)| *l == level)
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join("; ");
    let reason = if reason.is_empty() {
        "below every rule's threshold".to_string()
    } else {
        reason
    };
    (level, reason)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Opened,
    FindingOpened,
    FindingClosed,
    Action,
    Verification,
    Notification,
    Status,
    Stage,
    Severity,
    Note,
    /// A resolved incident taken up again: its fault came back.
    Reopened,
    /// An action that did not help: the incident was raised and people paged.
    Escalation,
    /// An alarm (SLO burn, threshold, trend, silent heartbeat) started or
    /// stopped firing while the incident was open.
    Alarm,
    /// A step of a config rollout touching the service (a wave went out,
    /// its verdict, a rollback), also those shortly before the incident
    /// opened: the change that came before the errors.
    ConfigChange,
}

/// An alarm as an incident records it: one firing episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// The alarm's name, e.g. `slo_burn:page-fast` or `trend:zone:a`.
    pub name: String,
    /// `page` or `ticket`: the floor it sets under the severity while it fires.
    pub severity: String,
    pub scope: String,
    pub since_ms: u64,
    /// When it stopped firing; `None` while it fires.
    pub end_ms: Option<u64>,
    /// It opened the incident (nothing with a place explained it), so the
    /// incident recovers when it stops. An alarm that joined an incident
    /// opened by a finding never holds that incident open.
    pub opened: bool,
    /// The numbers when it was last seen firing.
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: u64,
    pub kind: EntryKind,
    /// `switchyard` (or `playbook`) for the system, else the person's name.
    pub who: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// One second of the affected service, kept for the postmortem's plots and
/// before/after numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub at_ms: u64,
    pub requests: u64,
    pub failed: u64,
    pub p99_ms: f64,
    /// Per zone: (requests, failed, p99 ms).
    #[serde(default)]
    pub zones: BTreeMap<String, (u64, u64, f64)>,
    /// Heartbeats per route: (sent, failed) — the dependencies behind them.
    #[serde(default)]
    pub heartbeats: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub service: String,
    pub title: String,
    /// `switchyard` when opened from findings, else the person's name.
    pub opened_by: String,
    pub status: Status,
    pub severity: Severity,
    pub severity_reason: String,
    /// Set by a person: automatic rules no longer change the severity.
    #[serde(default)]
    pub severity_pinned: bool,
    /// The failure points: scopes of the findings.
    pub scopes: Vec<String>,
    pub impact: Impact,
    /// When each stage was reached (Unix ms).
    pub stages: BTreeMap<Stage, u64>,
    pub findings: Vec<Finding>,
    pub timeline: Vec<Entry>,
    /// Per second from a minute before the onset; bounded.
    #[serde(default)]
    pub series: Vec<Point>,
    /// First and last second the service's error rate was above the bound.
    #[serde(default)]
    pub error_window: Option<(u64, u64)>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When it was last resolved; cleared when it is reopened. The reopen
    /// window is measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<u64>,
    /// When it was reopened, oldest first: one fault that came back, not a
    /// new incident each time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reopened_ms: Vec<u64>,
    /// The users' p99 before the onset, per region their requests entered
    /// through (the median of its per-second series): what "slow" is judged
    /// against when an action is checked. Kept here so it outlives the
    /// signals it came from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baseline_p99_ms: BTreeMap<String, f64>,
    /// The alarms that fired while it was open, or that opened it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<AlarmRecord>,
    /// Whether people were told it is open (the first notice waits for the
    /// first measured impact). Kept with the incident so a plane that takes
    /// over, or restarts, between the opening and that first notice still
    /// tells. Stored incidents from before this field were all told.
    #[serde(default = "told_before")]
    pub announced: bool,
}

fn told_before() -> bool {
    true
}

impl Incident {
    pub fn new(id: String, service: &str, title: &str, by: &str, now_ms: u64) -> Incident {
        Incident {
            id,
            service: service.into(),
            title: title.into(),
            opened_by: by.into(),
            status: Status::Investigating,
            severity: Severity::Sev4,
            severity_reason: "not measured yet".into(),
            severity_pinned: false,
            scopes: Vec::new(),
            impact: Impact::default(),
            stages: BTreeMap::new(),
            findings: Vec::new(),
            timeline: vec![Entry {
                at_ms: now_ms,
                kind: EntryKind::Opened,
                who: by.into(),
                text: format!("incident opened: {title}"),
                detail: serde_json::Value::Null,
            }],
            series: Vec::new(),
            error_window: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            reopened_ms: Vec::new(),
            baseline_p99_ms: BTreeMap::new(),
            alarms: Vec::new(),
            announced: false,
        }
    }

    pub fn log(
        &mut self,
        at_ms: u64,
        kind: EntryKind,
        who: &str,
        text: String,
        detail: serde_json::Value,
    ) {
        self.timeline.push(Entry {
            at_ms,
            kind,
            who: who.into(),
            text,
            detail,
        });
        self.updated_ms = self.updated_ms.max(at_ms);
    }

    /// Records a stage the first time it is reached; later ones keep the first.
    pub fn reach(&mut self, stage: Stage, at_ms: u64, who: &str) -> bool {
        if self.stages.contains_key(&stage) {
            return false;
        }
        self.stages.insert(stage, at_ms);
        self.log(
            at_ms,
            EntryKind::Stage,
            who,
            format!("stage {}", stage.as_str()),
            serde_json::Value::Null,
        );
        true
    }

    /// Moves the status, or says why it cannot.
    pub fn set_status(
        &mut self,
        to: Status,
        at_ms: u64,
        who: &str,
        note: &str,
    ) -> Result<(), String> {
        self.status.check(to)?;
        let from = self.status;
        self.status = to;
        if to == Status::Resolved {
            self.resolved_ms = Some(at_ms);
        }
        let text = if note.is_empty() {
            format!("status {from} → {to}")
        } else {
            format!("status {from} → {to}: {note}")
        };
        self.log(at_ms, EntryKind::Status, who, text, serde_json::Value::Null);
        Ok(())
    }

    /// Takes a resolved incident up again because `why` (its fault came
    /// back): mitigating if anything was done about it, else identified; the
    /// stages reached are kept except *recovered*, which no longer holds.
    /// Only the system does this; people open a new incident instead.
    pub fn reopen(&mut self, at_ms: u64, why: &str) -> Result<Status, String> {
        if self.status != Status::Resolved {
            return Err(format!(
                "only a resolved incident is reopened (it is {})",
                self.status
            ));
        }
        let acted = self.stages.contains_key(&Stage::Mitigated)
            || self.timeline.iter().any(|e| e.kind == EntryKind::Action);
        let to = if acted {
            Status::Mitigating
        } else {
            Status::Identified
        };
        self.log(
            at_ms,
            EntryKind::Reopened,
            "switchyard",
            format!("reopened: {why}"),
            serde_json::Value::Null,
        );
        if self.stages.remove(&Stage::Recovered).is_some() {
            self.log(
                at_ms,
                EntryKind::Stage,
                "switchyard",
                "stage recovered withdrawn: not recovered after all".into(),
                serde_json::Value::Null,
            );
        }
        self.status = to;
        self.resolved_ms = None;
        self.reopened_ms.push(at_ms);
        self.log(
            at_ms,
            EntryKind::Status,
            "switchyard",
            format!("status resolved → {to}: reopened"),
            serde_json::Value::Null,
        );
        Ok(to)
    }

    /// A stage set by a person: the people's stages in order, once resolved;
    /// `acknowledged` at any time before it is resolved.
    pub fn set_stage_by_person(
        &mut self,
        stage: Stage,
        at_ms: u64,
        who: &str,
    ) -> Result<(), String> {
        if let Some(t) = self.stages.get(&stage) {
            return Err(format!(
                "stage {} was already reached at {t}",
                stage.as_str()
            ));
        }
        match stage {
            Stage::Acknowledged => {}
            Stage::Analysed | Stage::Shared | Stage::Reviewed => {
                if self.status != Status::Resolved {
                    return Err(format!(
                        "stage {} comes after the incident is resolved (it is {})",
                        stage.as_str(),
                        self.status
                    ));
                }
                let before = match stage {
                    Stage::Shared => Some(Stage::Analysed),
                    Stage::Reviewed => Some(Stage::Shared),
                    _ => None,
                };
                if let Some(b) = before.filter(|b| !self.stages.contains_key(b)) {
                    return Err(format!(
                        "stage {} comes after {}, which is not reached yet",
                        stage.as_str(),
                        b.as_str()
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "stage {} is set by the system from what it recorded; people set acknowledged, analysed, shared and reviewed",
                    stage.as_str()
                ))
            }
        }
        self.reach(stage, at_ms, who);
        Ok(())
    }

    /// Seconds between two stages, when both were reached.
    pub fn between(&self, from: Stage, to: Stage) -> Option<f64> {
        let (a, b) = (self.stages.get(&from)?, self.stages.get(&to)?);
        Some((*b as f64 - *a as f64) / 1000.0)
    }

    /// Seconds from the moment people could have known to the
    /// acknowledgement: from the first notification delivered, or from
    /// detection when none was (no receivers configured, an incident
    /// opened by the person who then acknowledges it).
    pub fn time_to_acknowledge(&self) -> Option<f64> {
        self.between(Stage::Notified, Stage::Acknowledged)
            .or_else(|| self.between(Stage::Detected, Stage::Acknowledged))
    }
}

/// Durations over a set of incidents, from their raw stage timestamps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Durations {
    pub incidents: usize,
    /// (median, mean, worst) seconds, over the incidents that have both stages.
    pub ttd_s: Option<(f64, f64, f64)>,
    pub tta_s: Option<(f64, f64, f64)>,
    pub ttm_s: Option<(f64, f64, f64)>,
    pub ttr_s: Option<(f64, f64, f64)>,
}

/// TTD (occurred → detected), time to acknowledge (notified → acknowledged),
/// TTM (occurred → mitigated) and TTR (occurred → recovered) for the
/// incidents that occurred in `[from_ms, to_ms)`.
pub fn durations(incidents: &[Incident], from_ms: u64, to_ms: u64) -> Durations {
    let chosen: Vec<&Incident> = incidents
        .iter()
        .filter(|i| {
            let t = i
                .stages
                .get(&Stage::Occurred)
                .copied()
                .unwrap_or(i.created_ms);
            t >= from_ms && t < to_ms
        })
        .collect();
    let stat_of = |f: &dyn Fn(&Incident) -> Option<f64>| {
        let mut v: Vec<f64> = chosen.iter().filter_map(|&i| f(i)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        Some((median, mean, *v.last().expect("not empty")))
    };
    let stat = |a: Stage, b: Stage| stat_of(&|i: &Incident| i.between(a, b));
    Durations {
        incidents: chosen.len(),
        ttd_s: stat(Stage::Occurred, Stage::Detected),
        tta_s: stat_of(&Incident::time_to_acknowledge),
        ttm_s: stat(Stage::Occurred, Stage::Mitigated),
        ttr_s: stat(Stage::Occurred, Stage::Recovered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_moves_forward_with_one_way_back() {
        use Status::*;
        assert!(
            Investigating.check(Mitigating).is_ok(),
            "skipping ahead is fine"
        );
        assert!(Monitoring.check(Mitigating).is_ok());
        let e = Mitigating.check(Investigating).unwrap_err();
        assert!(e.contains("cannot go back"), "{e}");
        let e = Resolved.check(Monitoring).unwrap_err();
        assert!(e.contains("stays resolved"), "{e}");
        assert!(Identified
            .check(Identified)
            .unwrap_err()
            .contains("already"));
    }

    #[test]
    fn a_resolved_incident_reopens_keeping_its_stages_but_recovery() {
        let mut i = Incident::new("x".into(), "svc", "t", "switchyard", 0);
        for (s, t) in [
            (Stage::Occurred, 1),
            (Stage::Detected, 2),
            (Stage::Mitigated, 3),
            (Stage::Recovered, 4),
        ] {
            i.reach(s, t, "switchyard");
        }
        assert!(
            i.reopen(5, "too early").is_err(),
            "open incidents are not reopened"
        );
        i.set_status(Status::Resolved, 10, "switchyard", "")
            .unwrap();
        assert_eq!(i.resolved_ms, Some(10));
        assert_eq!(
            i.reopen(20, "finding zone:a came back"),
            Ok(Status::Mitigating)
        );
        assert_eq!(i.status, Status::Mitigating);
        assert_eq!(i.resolved_ms, None);
        assert_eq!(i.reopened_ms, [20]);
        assert!(!i.stages.contains_key(&Stage::Recovered));
        assert_eq!(i.stages.len(), 3, "the other stages are kept");
        assert!(i.timeline.iter().any(
            |e| e.kind == EntryKind::Reopened && e.text == "reopened: finding zone:a came back"
        ));
        // Nothing was done about one that never got past identified.
        let mut j = Incident::new("y".into(), "svc", "t", "switchyard", 0);
        j.set_status(Status::Resolved, 1, "ana", "").unwrap();
        assert_eq!(j.reopen(2, "back"), Ok(Status::Identified));
        // Written before reopening existed, it still reads.
        let mut v = serde_json::to_value(&j).unwrap();
        for k in ["resolved_ms", "reopened_ms", "baseline_p99_ms"] {
            v.as_object_mut().unwrap().remove(k);
        }
        let old: Incident = serde_json::from_value(v).unwrap();
        assert!(old.reopened_ms.is_empty() && old.resolved_ms.is_none());
    }

    #[test]
    fn people_set_their_stages_in_order_after_resolution() {
        let mut i = Incident::new("x".into(), "svc", "t", "switchyard", 0);
        let e = i
            .set_stage_by_person(Stage::Analysed, 1, "ana")
            .unwrap_err();
        assert!(e.contains("after the incident is resolved"), "{e}");
        let e = i
            .set_stage_by_person(Stage::Mitigated, 1, "ana")
            .unwrap_err();
        assert!(e.contains("set by the system"), "{e}");
        i.set_stage_by_person(Stage::Acknowledged, 2, "ana")
            .unwrap();
        assert!(i.set_stage_by_person(Stage::Acknowledged, 3, "bo").is_err());
        i.set_status(Status::Resolved, 4, "ana", "").unwrap();
        let e = i
            .set_stage_by_person(Stage::Reviewed, 5, "ana")
            .unwrap_err();
        assert!(e.contains("after shared"), "{e}");
        i.set_stage_by_person(Stage::Analysed, 5, "ana").unwrap();
        i.set_stage_by_person(Stage::Shared, 6, "ana").unwrap();
        i.set_stage_by_person(Stage::Reviewed, 7, "ana").unwrap();
        assert_eq!(i.stages.len(), 4);
    }

    #[test]
    fn severity_takes_the_worst_rule() {
        let base = Impact {
            traffic_share: 0.17,
            ..Impact::default()
        };
        assert_eq!(severity_of(&base).0, Severity::Sev3);
        let half = Impact {
            traffic_share: 0.5,
            ..Impact::default()
        };
        assert_eq!(severity_of(&half).0, Severity::Sev1);
        let budget = Impact {
            traffic_share: 0.01,
            budget_burned: 0.03,
            ..Impact::default()
        };
        let (s, why) = severity_of(&budget);
        assert_eq!(s, Severity::Sev2);
        assert!(why.contains("error budget"), "{why}");
        let critical = Impact {
            traffic_share: 0.06,
            critical_route: true,
            ..Impact::default()
        };
        assert_eq!(severity_of(&critical).0, Severity::Sev2);
        let long = Impact {
            traffic_share: 0.06,
            duration_ms: 31 * 60 * 1000,
            ..Impact::default()
        };
        assert_eq!(severity_of(&long).0, Severity::Sev2);
        assert_eq!(severity_of(&Impact::default()).0, Severity::Sev4);
    }

    #[test]
    fn durations_come_from_the_raw_stage_times() {
        let mut a = Incident::new("a".into(), "svc", "t", "switchyard", 0);
        for (s, t) in [
            (Stage::Occurred, 10_000),
            (Stage::Detected, 12_000),
            (Stage::Notified, 13_000),
            (Stage::Mitigated, 15_000),
            (Stage::Recovered, 40_000),
        ] {
            a.reach(s, t, "switchyard");
        }
        let mut b = a.clone();
        b.stages.insert(Stage::Detected, 16_000);
        b.stages.insert(Stage::Acknowledged, 73_000);
        let d = durations(&[a.clone(), b], 0, 100_000);
        assert_eq!(d.incidents, 2);
        assert_eq!(d.ttd_s, Some((4.0, 4.0, 6.0)));
        assert_eq!(d.tta_s, Some((60.0, 60.0, 60.0)));
        assert_eq!(d.ttm_s, Some((5.0, 5.0, 5.0)));
        assert_eq!(durations(&[a.clone()], 20_000, 100_000).incidents, 0);
        // Nobody was notified (no receivers): acknowledging still counts,
        // from detection.
        let mut quiet = a;
        quiet.stages.remove(&Stage::Notified);
        quiet.stages.insert(Stage::Acknowledged, 42_000);
        assert_eq!(
            durations(&[quiet], 0, 100_000).tta_s,
            Some((30.0, 30.0, 30.0))
        );
    }
}
