//! Scoring a drill: the report's numbers from the timeline clients saw, the
//! time to detect and to mitigate, and each expectation of the scenario
//! measured and judged. Playbook actions, shifts, failbacks and checks are
//! counted from the control plane's typed audit entries, not from the words
//! it logged.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_model::{Actor, AuditEntry, AuditKind, CheckOutcome, Op};
use switchyard_report::{DrillReport, Expectation, Second, SteadyState};

use super::dns::DnsRun;
use super::{rate, Observed};
use crate::load::Recorder;
use crate::scenario::{holds, Scenario};

/// Seconds in a row within the steady state that make a mitigation: one
/// good second between bad ones is a lull, not relief.
pub const MITIGATION_HOLD_S: u32 = 3;

/// Incidents opened this long after the fault was removed still belong to
/// it: detection and the incident's own debounce take some seconds.
pub const INCIDENT_GRACE_S: f64 = 30.0;

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
    report.mitigated_at_s =
        fault_at.and_then(|f| mitigated_at(&report.timeline, f, restored_at, &steady));
    report.recovered_at_s = restored_at.and_then(|r| {
        report
            .timeline
            .iter()
            .find(|s| s.t as f64 >= r.floor() && within(s, &steady))
            .map(|s| (s.t as f64).max(r))
    });
    let window = (
        fault_at.map(|f| f as usize).unwrap_or(0),
        restored_at.map(|r| r.ceil() as usize).unwrap_or(secs),
    );
    let playbook = |f: &dyn Fn(&Op) -> bool| {
        observed
            .playbook_entries()
            .filter(|e| e.accepted_change(f))
            .count() as f64
    };
    let verification = |e: &AuditEntry| e.kind == AuditKind::Verification;
    // The DNS numbers are about the region whose ingress the drill breaks.
    let dns_region = scenario
        .fault_scope
        .iter()
        .find_map(|s| s.strip_prefix("region:"));
    let dns_groups: Vec<String> = observed
        .group_regions
        .iter()
        .filter(|(_, r)| Some(r.as_str()) == dns_region)
        .map(|(g, _)| g.clone())
        .collect();
    let no_zones = Vec::new();
    let dns = match (dns_region, fault_at) {
        (Some(region), Some(fault_at)) if !observed.dns_samples.is_empty() => Some(DnsRun {
            samples: &observed.dns_samples,
            servers: observed.dns_servers,
            region,
            zones: observed.region_zones.get(region).unwrap_or(&no_zones),
            groups: &dns_groups,
            fault_at,
            restored_at,
        }),
        _ => None,
    };
    let shape = dns.as_ref().map(|d| d.return_shape());
    let roll = RolloutNumbers::of(&report, observed, rec);
    // Metrics made of the control plane's record: not measured without one.
    let plane = |v: f64| observed.control_plane.then_some(v);
    let metric = |m: &str| -> Option<f64> {
        let total = report.requests_total.max(1) as f64;
        Some(match m {
            "failed_ratio" => report.requests_failed as f64 / total,
            "requests_failed" => report.requests_failed as f64,
            "requests_total" => report.requests_total as f64,
            "edge_ejections" => observed.edge_ejections as f64,
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
                    .playbook_entries()
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
            "max_zones_shifted_per_region" => plane(max_zones_shifted_per_region(
                &observed.audit_entries,
                &observed.region_of_zone,
            ) as f64)?,
            "failbacks" => plane(failbacks(&observed.audit_entries).count() as f64)?,
            "failbacks_undone" => plane(failbacks_undone(
                &observed.audit_entries,
                (scenario.undone_within_s * 1000.0) as u64,
            ) as f64)?,
            "canaries" => plane(playbook(&|o| matches!(o, Op::ZoneCanary { .. })))?,
            "canaries_failed" => plane(canaries_failed(&observed.audit_entries) as f64)?,
            "incidents_per_fault" => {
                let from = fault_at?;
                let until = restored_at.unwrap_or(report.duration_s) + INCIDENT_GRACE_S;
                plane(
                    observed
                        .incidents_created_ms
                        .iter()
                        .map(|ms| ms.saturating_sub(observed.t0_ms) as f64 / 1000.0)
                        .filter(|t| (from..=until).contains(t))
                        .count() as f64,
                )?
            }
            "checks_passed" => plane(checks(&observed.audit_entries).0 as f64)?,
            "checks_failed" => plane(checks(&observed.audit_entries).1 as f64)?,
            "alarms_fired" => plane(report.alarms.len() as f64)?,
            "dns_detect_s" => dns.as_ref()?.detected_at()? - fault_at?,
            "dns_moved_s" => {
                let d = dns.as_ref()?;
                d.moved_at()? - d.detected_at()?
            }
            "clients_moved_s" => {
                let d = dns.as_ref()?;
                (d.clients_moved_at(&report.timeline)? - d.moved_at()?).max(0.0)
            }
            "failed_after_clients_moved" => {
                let d = dns.as_ref()?;
                d.failed_from(&report.timeline, d.clients_moved_at(&report.timeline)?) as f64
            }
            "dns_return_s" => shape?.0?,
            "dns_return_steps" => shape?.1 as f64,
            "dns_flaps" => shape?.2 as f64,
            "clients_returned_s" => {
                dns.as_ref()?.clients_returned_at(&report.timeline)? - restored_at?
            }
            "rollouts_started" => plane(roll.started as f64)?,
            "rollouts_refused" => plane(roll.refused as f64)?,
            "rollout_steps_unexpected" => plane(roll.unexpected as f64)?,
            "rollouts_succeeded" => plane(roll.in_state("succeeded") as f64)?,
            "rollouts_rolled_back" => plane(roll.in_state("rolled_back") as f64)?,
            "rollout_waves" => report.rollouts.last()?.waves.len() as f64,
            "rollout_waves_passed" => report.rollouts.last()?.waves_passed as f64,
            "rollout_caught_s" => {
                let r = report
                    .rollouts
                    .last()
                    .filter(|r| r.state == "rolled_back")?;
                r.ended_at_s? - r.canary_took_at_s?
            }
            "rollout_edges_on_new" => {
                let to = &report.rollouts.last()?.to;
                let end = report.config_versions.last()?;
                end.zones.values().filter(|v| *v == to).count() as f64
            }
            "rollout_incidents" => plane(roll.incidents as f64)?,
            "failed_in_canary" => roll.failed?.0 as f64,
            "failed_outside_canary" => roll.failed?.1 as f64,
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

/// Seconds after a rollout ended whose requests still count as during it:
/// requests due just before the end may take the clients' 2 s timeout.
pub const ROLLOUT_GRACE_S: f64 = 3.0;

/// Whether an incident (as the control plane recorded it) names the
/// rollout: in its title (one the rollout opened) or as the author of a
/// config change on its timeline (one it joined, or one detection opened
/// that copied the changes before it).
fn names_rollout(incident: &serde_json::Value, id: &str) -> bool {
    let title = incident["title"].as_str().unwrap_or_default();
    let who = format!("rollout {id}");
    title.split_whitespace().any(|w| w == id)
        || incident["timeline"].as_array().is_some_and(|t| {
            t.iter()
                .any(|e| e["kind"] == "config_change" && e["who"].as_str() == Some(who.as_str()))
        })
}

/// The rollout numbers of a run.
struct RolloutNumbers<'a> {
    runs: &'a [switchyard_report::RolloutRun],
    started: usize,
    refused: usize,
    unexpected: usize,
    /// Incidents whose title names a rollout of the run.
    incidents: usize,
    /// Failed requests during the last started rollout, (entered through
    /// the canary's edge, through any other or none).
    failed: Option<(u64, u64)>,
}

impl<'a> RolloutNumbers<'a> {
    fn of(report: &'a DrillReport, observed: &Observed, rec: &Recorder) -> RolloutNumbers<'a> {
        let answers = &observed.rollout_answers;
        let incidents = report
            .incidents
            .iter()
            .filter(|i| report.rollouts.iter().any(|r| names_rollout(i, &r.id)))
            .count();
        let failed = report.rollouts.last().map(|r| {
            let from = r.started_at_s.max(0.0).floor() as usize;
            let until = r
                .ended_at_s
                .map_or(report.duration_s, |e| e + ROLLOUT_GRACE_S)
                .min(report.duration_s)
                .ceil() as usize;
            rec.entered_zones_between(from, until).into_iter().fold(
                (0, 0),
                |(c, o), (zone, (_, f))| {
                    if zone == r.canary {
                        (c + f, o)
                    } else {
                        (c, o + f)
                    }
                },
            )
        });
        RolloutNumbers {
            runs: &report.rollouts,
            started: answers.iter().filter(|a| a.id.is_some()).count(),
            refused: answers.iter().filter(|a| a.id.is_none()).count(),
            unexpected: answers.iter().filter(|a| !a.as_expected).count(),
            incidents,
            failed,
        }
    }

    fn in_state(&self, state: &str) -> usize {
        self.runs.iter().filter(|r| r.state == state).count()
    }
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

/// A second whose clients saw the steady state: error rate and p99 both
/// within bounds. A second without requests says nothing either way.
fn within(s: &Second, steady: &SteadyState) -> bool {
    s.requests > 0 && rate(s) <= steady.max_error_rate && s.p99_ms <= steady.max_p99_ms
}

fn outside(s: &Second, steady: &SteadyState) -> bool {
    s.requests > 0 && !within(s, steady)
}

/// When the fault stopped hurting users, judged on errors and latency alike
/// (a latency-only fault is not "mitigated" while users wait): the start of
/// the first [`MITIGATION_HOLD_S`] seconds in a row within the steady state
/// after the first second outside it. Only seconds that end before the
/// restore count — after it, relief is the restore's doing — so `None` when
/// users were not back in time. The fault time itself when users never left
/// the steady state while the fault lasted. Never before the fault.
pub fn mitigated_at(
    timeline: &[Second],
    fault_at: f64,
    restored_at: Option<f64>,
    steady: &SteadyState,
) -> Option<f64> {
    let from = fault_at.floor().max(0.0) as u32;
    let until = restored_at.map_or(u32::MAX, |r| r.floor().max(0.0) as u32);
    let mut during = timeline.iter().filter(|s| s.t >= from && s.t < until);
    // `any` stops at the first second outside: the loop below goes on from
    // the one after it.
    if !during.any(|s| outside(s, steady)) {
        return Some(fault_at);
    }
    let mut good_run = 0;
    for s in during {
        if within(s, steady) {
            good_run += 1;
            if good_run == MITIGATION_HOLD_S {
                return Some(((s.t + 1 - MITIGATION_HOLD_S) as f64).max(fault_at));
            }
        } else {
            good_run = 0;
        }
    }
    None
}

/// Most zones of one region (of one service) shifted away at the same time
/// during the run, by anyone: a zonal shift starts one, its end
/// (`Op::Unshift`) or its lease running out ends it.
pub(crate) fn max_zones_shifted_per_region(
    entries: &[AuditEntry],
    region_of: &BTreeMap<String, String>,
) -> u32 {
    // (service, zone) → when its lease runs out (Unix ms).
    let mut shifted: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut most = 0;
    for e in entries.iter().filter(|e| e.accepted_change(|_| true)) {
        shifted.retain(|_, until| *until > e.at_ms);
        match e.op.as_ref() {
            Some(Op::Shift {
                service,
                zone,
                for_,
            }) => {
                shifted.insert((service, zone), e.at_ms + for_.as_millis() as u64);
            }
            Some(Op::Unshift { service, zone }) => {
                shifted.remove(&(service.as_str(), zone.as_str()));
                continue;
            }
            _ => continue,
        }
        let mut per_region: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for (service, zone) in shifted.keys() {
            // A zone the topology does not know is its own region: counted,
            // never merged with another.
            let region = region_of.get(*zone).map_or(*zone, String::as_str);
            *per_region.entry((service, region)).or_default() += 1;
        }
        most = most.max(per_region.into_values().max().unwrap_or(0));
    }
    most
}

/// Whether a change mitigates a place or hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Mitigate,
    FailBack,
}

/// The places a change turns, one way or the other: a zone's traffic, a
/// region's, a region's writes (read-only), a region's forwarding
/// (failover mode), the service's home (failover). Keys name the service.
fn turns(op: &Op) -> Option<(Turn, Vec<String>)> {
    use Turn::*;
    let (turn, service, places): (Turn, &str, Vec<String>) = match op {
        Op::Shift { service, zone, .. } => (Mitigate, service, vec![format!("zone:{zone}")]),
        Op::Unshift { service, zone } => (FailBack, service, vec![format!("zone:{zone}")]),
        // A weight below 1 takes traffic away; 1 is not a mitigation.
        Op::RegionWeight {
            service,
            region,
            weight,
        } if *weight < 1.0 => (Mitigate, service, vec![format!("region:{region}")]),
        Op::RegionBack { service, region } => (FailBack, service, vec![format!("region:{region}")]),
        Op::ReadOnly {
            service,
            region,
            on,
        } => (
            if *on { Mitigate } else { FailBack },
            service,
            vec![format!("read-only:{}", region.as_deref().unwrap_or("*"))],
        ),
        Op::FailoverMode {
            service,
            regions,
            on,
        } => (
            if *on { Mitigate } else { FailBack },
            service,
            regions
                .iter()
                .map(|r| format!("failover-mode:{r}"))
                .collect(),
        ),
        Op::Failover { service, .. } => (Mitigate, service, vec!["failover".into()]),
        Op::Failback { service } => (FailBack, service, vec!["failover".into()]),
        _ => return None,
    };
    Some((
        turn,
        places
            .into_iter()
            .map(|p| format!("{service} {p}"))
            .collect(),
    ))
}

/// Accepted failbacks by a playbook: a shift ended, a region back in,
/// read-only or failover mode off, a failover undone.
pub(crate) fn failbacks(entries: &[AuditEntry]) -> impl Iterator<Item = &AuditEntry> {
    entries.iter().filter(|e| {
        e.actor.is_playbook()
            && e.accepted_change(|op| matches!(turns(op), Some((Turn::FailBack, _))))
    })
}

/// Failbacks followed, within `within_ms`, by the same place being
/// mitigated again — by a playbook or a person; the drill's own steps are the
/// fault, not a mitigation. Each failback counts once.
pub(crate) fn failbacks_undone(entries: &[AuditEntry], within_ms: u64) -> usize {
    let mitigations: Vec<(u64, BTreeSet<String>)> = entries
        .iter()
        .filter(|e| !matches!(e.actor, Actor::Drill { .. }))
        .filter_map(|e| {
            let op = e.op.as_ref().filter(|_| e.accepted_change(|_| true))?;
            match turns(op)? {
                (Turn::Mitigate, places) => Some((e.at_ms, places.into_iter().collect())),
                (Turn::FailBack, _) => None,
            }
        })
        .collect();
    failbacks(entries)
        .filter(|f| {
            let Some((_, places)) = f.op.as_ref().and_then(turns) else {
                return false;
            };
            mitigations.iter().any(|(at, again)| {
                *at > f.at_ms
                    && *at <= f.at_ms + within_ms
                    && places.iter().any(|p| again.contains(p))
            })
        })
        .count()
}

/// Canaries pulled back: a zone shifted away again (by a playbook or a
/// person) while a canary share was going into it, before its failback.
pub(crate) fn canaries_failed(entries: &[AuditEntry]) -> usize {
    let mut in_canary: BTreeSet<(String, String)> = BTreeSet::new();
    let mut failed = 0;
    for e in entries
        .iter()
        .filter(|e| !matches!(e.actor, Actor::Drill { .. }))
    {
        let Some(op) = e.op.as_ref().filter(|_| e.accepted_change(|_| true)) else {
            continue;
        };
        match op {
            Op::ZoneCanary { service, zone, .. } => {
                in_canary.insert((service.clone(), zone.clone()));
            }
            Op::Shift { service, zone, .. } => {
                failed += usize::from(in_canary.remove(&(service.clone(), zone.clone())));
            }
            Op::Unshift { service, zone } => {
                in_canary.remove(&(service.clone(), zone.clone()));
            }
            _ => {}
        }
    }
    failed
}

/// The playbooks' checks of their own actions: (passed, failed), from the
/// typed outcome of each verification entry. An inconclusive check (too few
/// requests to say) is neither.
pub(crate) fn checks(entries: &[AuditEntry]) -> (usize, usize) {
    entries
        .iter()
        .filter(|e| e.actor.is_playbook())
        .filter_map(AuditEntry::check_outcome)
        .fold((0, 0), |(p, f), o| match o {
            CheckOutcome::Passed => (p + 1, f),
            CheckOutcome::Failed => (p, f + 1),
            CheckOutcome::Inconclusive => (p, f),
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SVC: &str = "catalog";

    fn entry(at_ms: u64, actor: Actor, op: Op) -> AuditEntry {
        AuditEntry {
            accepted: true,
            kind: AuditKind::Change,
            ..AuditEntry::note(at_ms, actor, AuditKind::Change, op, "test".into())
        }
    }

    fn book() -> Actor {
        Actor::playbook("zone-shift")
    }

    fn shift(at_ms: u64, zone: &str, for_s: u64) -> AuditEntry {
        entry(
            at_ms,
            book(),
            Op::Shift {
                service: SVC.into(),
                zone: zone.into(),
                for_: Duration::from_secs(for_s),
            },
        )
    }

    fn unshift(at_ms: u64, zone: &str) -> AuditEntry {
        entry(
            at_ms,
            book(),
            Op::Unshift {
                service: SVC.into(),
                zone: zone.into(),
            },
        )
    }

    fn regions() -> BTreeMap<String, String> {
        [
            ("use-a", "us-east"),
            ("use-b", "us-east"),
            ("use-c", "us-east"),
            ("euw-a", "eu-west"),
        ]
        .into_iter()
        .map(|(z, r)| (z.to_string(), r.to_string()))
        .collect()
    }

    #[test]
    fn zones_shifted_at_once_count_per_region_and_end_by_unshift_or_expiry() {
        let r = regions();
        // Zones of different regions never add up.
        let e = [shift(1_000, "use-a", 60), shift(2_000, "euw-a", 60)];
        assert_eq!(max_zones_shifted_per_region(&e, &r), 1);
        // Two of us-east at once.
        let e = [shift(1_000, "use-a", 60), shift(2_000, "use-b", 60)];
        assert_eq!(max_zones_shifted_per_region(&e, &r), 2);
        // One ended before the next began: never two at once.
        let e = [
            shift(1_000, "use-a", 60),
            unshift(5_000, "use-a"),
            shift(6_000, "use-b", 60),
        ];
        assert_eq!(max_zones_shifted_per_region(&e, &r), 1);
        // A lease that ran out ends the shift too.
        let e = [shift(1_000, "use-a", 10), shift(12_000, "use-b", 60)];
        assert_eq!(max_zones_shifted_per_region(&e, &r), 1);
        // Shifting the same zone again renews it, it is still one zone;
        // and a person's or a drill's shift counts like a playbook's.
        let mut by_person = shift(3_000, "use-c", 60);
        by_person.actor = Actor::person("oncall");
        let e = [
            shift(1_000, "use-a", 60),
            shift(2_000, "use-a", 60),
            by_person,
        ];
        assert_eq!(max_zones_shifted_per_region(&e, &r), 2);
        // Refused shifts and recommendations move nothing.
        let mut refused = shift(2_000, "use-b", 60);
        refused.accepted = false;
        let mut recommended = shift(2_000, "use-c", 60);
        recommended.kind = AuditKind::Recommendation;
        let e = [shift(1_000, "use-a", 60), refused, recommended];
        assert_eq!(max_zones_shifted_per_region(&e, &r), 1);
        assert_eq!(max_zones_shifted_per_region(&[], &r), 0);
    }

    #[test]
    fn failbacks_are_the_playbooks_accepted_hand_backs() {
        let read_only = |on| Op::ReadOnly {
            service: SVC.into(),
            region: Some("us-east".into()),
            on,
        };
        let mut refused = unshift(9_000, "use-b");
        refused.accepted = false;
        let mut by_person = unshift(9_500, "use-c");
        by_person.actor = Actor::person("oncall");
        let e = [
            shift(1_000, "use-a", 600),
            unshift(5_000, "use-a"),
            entry(6_000, book(), read_only(true)),
            entry(7_000, book(), read_only(false)),
            entry(
                8_000,
                book(),
                Op::FailoverMode {
                    service: SVC.into(),
                    regions: vec!["us-east".into(), "eu-west".into()],
                    on: false,
                },
            ),
            entry(
                8_500,
                book(),
                Op::RegionBack {
                    service: SVC.into(),
                    region: "us-east".into(),
                },
            ),
            refused,
            by_person,
        ];
        let at: Vec<u64> = failbacks(&e).map(|e| e.at_ms).collect();
        assert_eq!(at, [5_000, 7_000, 8_000, 8_500]);
    }

    #[test]
    fn a_canary_failed_when_its_zone_is_shifted_away_again_before_the_failback() {
        let canary = |at, zone: &str| {
            entry(
                at,
                book(),
                Op::ZoneCanary {
                    service: SVC.into(),
                    zone: zone.into(),
                    percent: 10.0,
                },
            )
        };
        let e = [
            shift(1_000, "use-a", 600),
            canary(30_000, "use-a"),
            shift(34_000, "use-a", 600),
            canary(70_000, "use-a"),
            unshift(90_000, "use-a"),
            // A new shift long after the failback is a new fault, not a canary.
            shift(200_000, "use-a", 600),
            // Another zone's canary going well.
            shift(1_000, "use-b", 600),
            canary(30_000, "use-b"),
        ];
        assert_eq!(canaries_failed(&e), 1);
        let mut refused = shift(34_000, "use-b", 600);
        refused.accepted = false;
        assert_eq!(canaries_failed(&[canary(30_000, "use-b"), refused]), 0);
    }

    #[test]
    fn a_failback_is_undone_when_the_same_place_is_mitigated_again_in_time() {
        // Shift, failback, shift again 20 s later: undone within 60 s.
        let flap = [
            shift(1_000, "use-a", 600),
            unshift(30_000, "use-a"),
            shift(50_000, "use-a", 600),
        ];
        assert_eq!(failbacks_undone(&flap, 60_000), 1);
        // Not within 10 s.
        assert_eq!(failbacks_undone(&flap, 10_000), 0);
        // Another zone shifted is not this failback undone.
        let elsewhere = [
            shift(1_000, "use-a", 600),
            unshift(30_000, "use-a"),
            shift(40_000, "use-b", 600),
        ];
        assert_eq!(failbacks_undone(&elsewhere, 60_000), 0);
        // The drill's own step is the fault, not a mitigation.
        let mut by_drill = shift(40_000, "use-a", 600);
        by_drill.actor = Actor::Drill {
            name: "flap".into(),
            token: "lab".into(),
        };
        let drilled = [
            shift(1_000, "use-a", 600),
            unshift(30_000, "use-a"),
            by_drill,
        ];
        assert_eq!(failbacks_undone(&drilled, 60_000), 0);
        // Failover mode off for two regions, back on for one of them.
        let mode = |at, regions: &[&str], on| {
            entry(
                at,
                book(),
                Op::FailoverMode {
                    service: SVC.into(),
                    regions: regions.iter().map(|r| r.to_string()).collect(),
                    on,
                },
            )
        };
        let e = [
            mode(1_000, &["us-east", "eu-west"], true),
            mode(20_000, &["us-east", "eu-west"], false),
            mode(25_000, &["eu-west"], true),
        ];
        assert_eq!(failbacks_undone(&e, 60_000), 1);
        // Two failbacks, each undone: two.
        let twice = [
            shift(1_000, "use-a", 600),
            unshift(10_000, "use-a"),
            shift(15_000, "use-a", 600),
            unshift(30_000, "use-a"),
            shift(35_000, "use-a", 600),
        ];
        assert_eq!(failbacks_undone(&twice, 60_000), 2);
        assert_eq!(failbacks(&twice).count(), 2);
    }

    #[test]
    fn checks_are_the_verdicts_of_verification_entries() {
        let check = |helped: bool| AuditEntry {
            accepted: helped,
            rule: (!helped).then(|| "not-verified".into()),
            ..AuditEntry::note(
                1_000,
                book(),
                AuditKind::Verification,
                Op::Shift {
                    service: SVC.into(),
                    zone: "use-a".into(),
                    for_: Duration::from_secs(60),
                },
                "errors of catalog in us-east".into(),
            )
        };
        let e = [
            check(true),
            check(false),
            check(false),
            // A change is not a check.
            shift(500, "use-a", 60),
        ];
        assert_eq!(checks(&e), (1, 2));
    }

    fn sec(t: u32, requests: u64, failures: u64, p99_ms: f64) -> Second {
        Second {
            t,
            requests,
            failures,
            p99_ms,
            ..Second::default()
        }
    }

    fn steady() -> SteadyState {
        SteadyState {
            max_error_rate: 0.01,
            max_p99_ms: 250.0,
        }
    }

    /// 40 seconds at 100 requests, p99 50 ms, errors none, with `bad`
    /// seconds given as (t, failures, p99).
    fn timeline(bad: &[(u32, u64, f64)]) -> Vec<Second> {
        (0..40)
            .map(|t| match bad.iter().find(|b| b.0 == t) {
                Some(&(_, f, p)) => sec(t, 100, f, p),
                None => sec(t, 100, 0, 50.0),
            })
            .collect()
    }

    #[test]
    fn a_latency_only_fault_is_mitigated_when_p99_is_back() {
        // p99 over the bound from 10 to 17, no errors: not mitigated at the
        // fault (as the error-only measure said) but when p99 came back.
        let bad: Vec<_> = (10..18).map(|t| (t, 0, 400.0)).collect();
        let m = mitigated_at(&timeline(&bad), 10.2, Some(30.0), &steady());
        assert_eq!(m, Some(18.0));
    }

    #[test]
    fn a_short_lull_is_not_a_mitigation() {
        // Bad 10-12, good 13-14 (two seconds), bad 15, good from 16 on.
        let bad = [
            (10, 50, 50.0),
            (11, 50, 50.0),
            (12, 50, 50.0),
            (15, 0, 900.0),
        ];
        let m = mitigated_at(&timeline(&bad), 10.0, Some(30.0), &steady());
        assert_eq!(m, Some(16.0));
    }

    #[test]
    fn not_back_before_the_restore_is_no_mitigation_at_all() {
        // Bad from 10 until the restore at 28; fine afterwards.
        let bad: Vec<_> = (10..28).map(|t| (t, 0, 600.0)).collect();
        let m = mitigated_at(&timeline(&bad), 10.0, Some(28.0), &steady());
        assert_eq!(m, None);
        // Back at 26, but three good seconds would end after the restore.
        let bad: Vec<_> = (10..26).map(|t| (t, 0, 600.0)).collect();
        assert_eq!(
            mitigated_at(&timeline(&bad), 10.0, Some(28.0), &steady()),
            None
        );
        assert_eq!(
            mitigated_at(&timeline(&bad), 10.0, Some(29.0), &steady()),
            Some(26.0)
        );
    }

    #[test]
    fn a_fault_users_never_felt_is_mitigated_at_once_and_never_before() {
        // Bad seconds before the fault are not the fault's.
        let m = mitigated_at(&timeline(&[(3, 90, 900.0)]), 10.5, Some(30.0), &steady());
        assert_eq!(m, Some(10.5));
        // Bad after the restore is not the fault's either.
        let m = mitigated_at(&timeline(&[(31, 90, 900.0)]), 10.5, Some(30.0), &steady());
        assert_eq!(m, Some(10.5));
        // Without a restore, the run's end bounds it.
        let bad: Vec<_> = (10..40).map(|t| (t, 5, 50.0)).collect();
        assert_eq!(mitigated_at(&timeline(&bad), 10.0, None, &steady()), None);
    }
}
