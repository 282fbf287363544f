//! Scoring a drill: the report's numbers from the timeline clients saw, the
//! time to detect and to mitigate, and each expectation of the scenario
//! measured and judged. Playbook actions are counted from the control
//! plane's typed audit entries, not from the words it logged.

use switchyard_model::{AuditEntry, AuditKind, Op};
use switchyard_report::{DrillReport, Expectation, Second, SteadyState};

use super::{rate, Observed};
use crate::load::Recorder;
use crate::scenario::{holds, Scenario};

pub(crate) fn score(
    scenario: &Scenario,
    mut report: DrillReport,
    rec: &Recorder,
    observed: &Observed,
) -> DrillReport {
    let steady = report.steady_state.clone();
    let (fault_at, restored_at) = (report.fault_at_s, report.restored_at_s);
    let secs = report.timeline.len();
    report.requests_total = report.timeline.iter().map(|s| s.requests).sum();
    report.requests_failed = report.timeline.iter().map(|s| s.failures).sum();
    report.requests_shed = report.timeline.iter().map(|s| s.shed).sum();
    report.requests_read_only = report.timeline.iter().map(|s| s.read_only).sum();
    report.detected_at_s = report
        .findings
        .iter()
        .filter(|f| {
            scenario.fault_scope.contains(&f.scope) && fault_at.is_some_and(|t| f.at_s >= t)
        })
        .map(|f| f.at_s)
        .reduce(f64::min);
    report.mitigated_at_s = fault_at.map(|f| mitigated_at(&report.timeline, f, &steady));
    report.recovered_at_s = restored_at.and_then(|r| {
        report
            .timeline
            .iter()
            .find(|s| {
                s.t as f64 >= r.floor()
                    && rate(s) <= steady.max_error_rate
                    && s.p99_ms <= steady.max_p99_ms
            })
            .map(|s| (s.t as f64).max(r))
    });
    let window = (
        fault_at.map(|f| f as usize).unwrap_or(0),
        restored_at.map(|r| r.ceil() as usize).unwrap_or(secs),
    );
    let playbook = |f: &dyn Fn(&Op) -> bool| {
        observed
            .playbook_entries
            .iter()
            .filter(|e| e.accepted_change(f))
            .count() as f64
    };
    let verification = |e: &AuditEntry| e.kind == AuditKind::Verification;
    let metric = |m: &str| -> Option<f64> {
        let total = report.requests_total.max(1) as f64;
        Some(match m {
            "failed_ratio" => report.requests_failed as f64 / total,
            "requests_failed" => report.requests_failed as f64,
            "requests_total" => report.requests_total as f64,
            "shed_ratio" => report.requests_shed as f64 / total,
            "read_only_ratio" => report.requests_read_only as f64 / total,
            "ttd_s" => report.ttd_s()?,
            "ttm_s" => report.ttm_s()?,
            "recovery_s" => report.recovered_at_s? - report.restored_at_s?,
            "p99_ms" => rec.p99_between(window.0, window.1),
            // A playbook's check of its own action is not an action: the
            // drill's own refusals plus the playbooks' other refused entries.
            "refused_actions" => {
                let own = report
                    .actions
                    .iter()
                    .filter(|a| !a.accepted && !a.what.starts_with("playbook: "))
                    .count();
                let books = observed
                    .playbook_entries
                    .iter()
                    .filter(|e| !e.accepted && !verification(e))
                    .count();
                (own + books) as f64
            }
            "accepted_actions" => report.actions.iter().filter(|a| a.accepted).count() as f64,
            "replication_queue_max" => observed.replication_max as f64,
            "replication_queue_end" => observed.replication_end as f64,
            "playbook_shifts" => playbook(&|o| matches!(o, Op::Shift { .. })),
            "playbook_evacuations" => playbook(&|o| matches!(o, Op::RegionWeight { .. })),
            "playbook_read_only" => playbook(&|o| matches!(o, Op::ReadOnly { on: true, .. })),
            "playbook_actions" => playbook(&|_| true),
            "incidents_opened" => report.incidents.len() as f64,
            "notifications_delivered" => report.notifications.len() as f64,
            _ => return None,
        })
    };
    report.expectations = scenario
        .expectations
        .iter()
        .map(|e| {
            let name = format!("{} {} {}", e.metric, e.op, e.value);
            match metric(&e.metric) {
                Some(v) => Expectation {
                    held: holds(v, &e.op, e.value),
                    detail: format!("measured {}", fmt_num(v)),
                    name,
                },
                None => Expectation {
                    name,
                    held: false,
                    detail: "not measured in this run".into(),
                },
            }
        })
        .collect();
    report.passed = report.aborted.is_none() && report.expectations.iter().all(|e| e.held);
    report
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() < 0.1 {
        format!("{v:.4}")
    } else {
        format!("{v:.2}")
    }
}

/// The first moment after the fault when the client error rate is back under
/// the bound: the fault time itself when it never went above, otherwise the
/// end of the first run of bad seconds.
pub fn mitigated_at(timeline: &[Second], fault_at: f64, steady: &SteadyState) -> f64 {
    let from = fault_at.floor() as usize;
    let bad = |s: &Second| s.requests > 0 && rate(s) > steady.max_error_rate;
    let Some(first_bad) = timeline.iter().skip(from).position(bad).map(|i| i + from) else {
        return fault_at;
    };
    match timeline.iter().skip(first_bad).position(|s| !bad(s)) {
        Some(i) => (first_bad + i) as f64,
        None => timeline.len() as f64,
    }
}
