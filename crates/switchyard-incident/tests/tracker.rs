//! The tracker driven by the real detection engine over synthetic traces: a
//! zone failure becomes one incident whose timeline the system fills in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use switchyard_detect::synth::{generate, REGIONS};
use switchyard_detect::{DetectConfig, Engine, Event};
use switchyard_incident::incident::EntryKind;
use switchyard_incident::{Severity, Stage, Status, Tracker, TrackerConfig};
use switchyard_model::{Actor, AuditEntry, AuditKind, Op};

fn zone_region() -> BTreeMap<String, String> {
    REGIONS
        .iter()
        .flat_map(|(r, zs)| zs.iter().map(|z| (z.to_string(), r.to_string())))
        .collect()
}

struct Run {
    tracker: Tracker,
    persisted: BTreeMap<String, switchyard_incident::Incident>,
    notices: Vec<(String, String)>,
}

/// Replays `case`, acting like the control plane when `act`: a zone finding
/// gets a shift at once, after which that zone's traffic goes elsewhere;
/// notices are "delivered" one second later.
fn run(case: &str, seconds: u64, act: bool) -> Run {
    let t = generate(case, 1, seconds, 100).expect("known case");
    let mut engine = Engine::new(DetectConfig::default());
    let critical = BTreeMap::from([(
        "catalog".to_string(),
        BTreeSet::from(["get-item".to_string()]),
    )]);
    let cfg = TrackerConfig {
        resolve_after_ms: 10_000,
        ..TrackerConfig::default()
    };
    let mut r = Run {
        tracker: Tracker::new(cfg, zone_region(), critical),
        persisted: BTreeMap::new(),
        notices: Vec::new(),
    };
    let mut deliveries: Vec<(u64, String)> = Vec::new();
    let mut shifted: BTreeSet<String> = BTreeSet::new();
    let last = t.snapshots.last().expect("snapshots").at_ms;
    let mut now = t.snapshots[0].at_ms;
    let mut snaps = t.snapshots.iter().peekable();
    while now <= last + 40_000 {
        while let Some(s) = snaps.next_if(|s| s.at_ms <= now) {
            // A shifted zone gets no more traffic: the edges send it to the
            // region's other zones, which answer.
            let mut s = s.clone();
            s.series.retain(|x| !shifted.contains(&x.target_zone));
            engine.ingest(&s);
            r.tracker.ingest(&s);
        }
        for ev in engine.tick(now) {
            if let (Event::Opened(f), true) = (&ev, act) {
                if let Some(z) = f.scope.strip_prefix("zone:") {
                    shifted.insert(z.to_string());
                    r.tracker.on_event(&ev, now);
                    let op = Op::Shift {
                        service: "catalog".into(),
                        zone: z.to_string(),
                        for_: Duration::from_secs(1800),
                    };
                    let mut change = AuditEntry::note(
                        now,
                        Actor::playbook("zone-shift"),
                        AuditKind::Change,
                        op,
                        f.scope.clone(),
                    );
                    change.accepted = true;
                    r.tracker.on_change("catalog", &change);
                    continue;
                }
            }
            r.tracker.on_event(&ev, now);
        }
        r.tracker.tick(now);
        for n in r.tracker.take_notices() {
            r.notices.push((n.incident.id.clone(), n.event.clone()));
            deliveries.push((now + 1000, n.incident.id.clone()));
        }
        let (due, later): (Vec<_>, Vec<_>) = deliveries.into_iter().partition(|d| d.0 <= now);
        deliveries = later;
        for (at, id) in due {
            r.tracker.on_attempt(
                &id,
                "oncall",
                true,
                at,
                "delivered (200)".into(),
                serde_json::Value::Null,
            );
        }
        for i in r.tracker.take_dirty() {
            r.persisted.insert(i.id.clone(), i);
        }
        now += 250;
    }
    r
}

#[test]
fn a_zone_failure_is_one_incident_with_its_whole_timeline() {
    let r = run("zone-errors-20", 90, true);
    assert_eq!(
        r.persisted.len(),
        1,
        "{:?}",
        r.persisted.keys().collect::<Vec<_>>()
    );
    let i = r.persisted.values().next().unwrap();
    assert_eq!(i.service, "catalog");
    assert!(
        i.scopes.contains(&"zone:us-east-a".to_string()),
        "{:?}",
        i.scopes
    );
    assert_eq!(i.status, Status::Resolved);
    for s in [
        Stage::Occurred,
        Stage::Detected,
        Stage::Notified,
        Stage::Mitigated,
        Stage::Recovered,
    ] {
        assert!(
            i.stages.contains_key(&s),
            "stage {s:?} missing: {:?}",
            i.stages
        );
    }
    let st = |s| i.stages[&s];
    // The fault starts 20 s into the trace.
    let t0 = 1_700_000_000_000u64;
    assert!(
        st(Stage::Occurred) >= t0 + 18_000 && st(Stage::Occurred) <= t0 + 22_000,
        "{:?}",
        i.stages
    );
    assert!(st(Stage::Occurred) <= st(Stage::Detected));
    assert!(st(Stage::Detected) <= st(Stage::Notified));
    assert!(st(Stage::Detected) <= st(Stage::Mitigated));
    assert!(st(Stage::Mitigated) < st(Stage::Recovered));
    // One zone of six until it was shifted away: under a sixth of the
    // incident's traffic, above the 5 % rule.
    assert!(
        (0.05..0.17).contains(&i.impact.traffic_share),
        "{:?}",
        i.impact
    );
    assert!(i.impact.critical_route, "get-item failed: {:?}", i.impact);
    assert_eq!(i.severity, Severity::Sev2, "{}", i.severity_reason);
    assert!(i.error_window.is_some());
    assert!(!i.series.is_empty());
    let kinds: BTreeSet<_> = i.timeline.iter().map(|e| format!("{:?}", e.kind)).collect();
    for k in [
        "FindingOpened",
        "Action",
        "Verification",
        "Notification",
        "Status",
        "Stage",
        "Severity",
    ] {
        assert!(kinds.contains(k), "no {k} entry: {kinds:?}");
    }
    let events: Vec<&str> = r.notices.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(events.first(), Some(&"opened"), "{events:?}");
    assert_eq!(events.last(), Some(&"resolved"), "{events:?}");
}

#[test]
fn a_single_failing_instance_opens_nothing() {
    let r = run("single-instance", 70, false);
    assert!(
        r.persisted.is_empty(),
        "{:?}",
        r.persisted.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_healthy_run_opens_nothing_and_a_region_failure_opens_one() {
    assert!(run("healthy", 60, false).persisted.is_empty());
    let r = run("region-errors", 80, false);
    assert_eq!(r.persisted.len(), 1);
    let i = r.persisted.values().next().unwrap();
    assert_eq!(i.scopes, vec!["region:us-east".to_string()]);
    // Half the traffic: the worst severity.
    assert_eq!(i.severity, Severity::Sev1, "{}", i.severity_reason);
    // Nobody acted: never mitigated, resolved once it recovered on its own.
    assert!(!i.stages.contains_key(&Stage::Mitigated));
    assert_eq!(i.status, Status::Resolved);
    assert!(i.timeline.iter().any(|e| e.kind == EntryKind::Notification));
}

#[test]
fn people_open_acknowledge_and_cannot_move_backwards() {
    let mut t = Tracker::new(TrackerConfig::default(), zone_region(), BTreeMap::new());
    let (id, new) = t.open_by_hand(
        "catalog",
        "checkout slow for EU users",
        "ana",
        Some(Severity::Sev2),
        1_000,
    );
    assert!(new);
    let (again, new) = t.open_by_hand("catalog", "same thing", "bo", None, 2_000);
    assert_eq!(
        (again.as_str(), new),
        (id.as_str(), false),
        "one open incident per service"
    );
    let i = t.get_mut(&id).unwrap();
    i.set_stage_by_person(Stage::Acknowledged, 3_000, "ana")
        .unwrap();
    t.set_status(&id, Status::Mitigating, "ana", "shifted eu-west-b", 4_000)
        .unwrap();
    let e = t
        .set_status(&id, Status::Investigating, "ana", "", 5_000)
        .unwrap_err();
    assert!(e.contains("cannot go back"), "{e}");
    let done = t
        .set_status(&id, Status::Resolved, "ana", "fixed", 6_000)
        .unwrap();
    assert_eq!(done.severity, Severity::Sev2);
    assert!(t.open_for("catalog").is_none());
    let dirty = t.take_dirty();
    assert!(dirty
        .iter()
        .any(|i| i.id == id && i.status == Status::Resolved));
}

#[test]
fn the_postmortem_follows_the_template_with_the_recorded_numbers() {
    let r = run("zone-errors-20", 90, true);
    let i = r.persisted.values().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = switchyard_incident::postmortem::write(i, dir.path()).unwrap();
    let md = std::fs::read_to_string(path).unwrap();
    for section in [
        "## Summary",
        "## Impact",
        "## Timeline",
        "## Anomalous metrics and their thresholds",
        "## Error window",
        "## Failure points",
        "## Metrics before and after",
        "## Trends of related dependencies",
        "## Candidate fixes and the chosen one",
        "## Action items",
    ] {
        assert!(md.contains(section), "missing {section}");
    }
    let ttd = i.between(Stage::Occurred, Stage::Detected).unwrap();
    assert!(md.contains(&format!("Time to detect {ttd:.1} s")), "{md}");
    assert!(md.contains("`zone:us-east-a`"), "{md}");
    assert!(md.contains(&format!("| failed requests | {} |", i.impact.failed)));
    for plot in ["errors.png", "errors.svg", "p99.png", "heartbeats.png"] {
        assert!(dir.path().join(plot).exists(), "{plot}");
    }
    // What only people know is left to them, not made up.
    assert!(md.contains("Candidate fixes of the cause, the one chosen and why: _For the reviewers"));
}

#[test]
fn an_instance_finding_joining_an_incident_counts_its_zone_not_the_service() {
    let t = generate("single-instance", 1, 60, 100).expect("known case");
    let mut engine = Engine::new(DetectConfig::default());
    let mut tracker = Tracker::new(TrackerConfig::default(), zone_region(), BTreeMap::new());
    let start = t.snapshots[0].at_ms;
    let (id, _) = tracker.open_by_hand("catalog", "errors reported", "ana", None, start);
    let mut now = start;
    let mut snaps = t.snapshots.iter().peekable();
    while now <= t.snapshots.last().unwrap().at_ms {
        while let Some(s) = snaps.next_if(|s| s.at_ms <= now) {
            engine.ingest(s);
            tracker.ingest(s);
        }
        for ev in engine.tick(now) {
            tracker.on_event(&ev, now);
        }
        tracker.tick(now);
        now += 500;
    }
    let i = tracker.get_mut(&id).unwrap().clone();
    assert_eq!(i.scopes, vec!["instance:us-east-a-1".to_string()]);
    // The instance's zone, learned from the signals: a sixth of the traffic
    // at most, where the whole service would be all of it.
    assert!(
        i.impact.traffic_share > 0.0 && i.impact.traffic_share < 0.2,
        "{:?}",
        i.impact
    );
}
