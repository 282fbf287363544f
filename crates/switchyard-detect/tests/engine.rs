//! The engine's other inputs and outputs: ingested alerts, application
//! heartbeats, SLO burn and trend alarms, and hysteresis.

use switchyard_detect::alerts::{parse_alertmanager, Heartbeat};
use switchyard_detect::synth::generate;
use switchyard_detect::{DetectConfig, Engine, Event};

const AM: &str = r#"{
  "version": "4", "groupKey": "{}:{alertname=\"StoreDown\"}", "truncatedAlerts": 0, "status": "firing",
  "receiver": "switchyard", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
  "alerts": [{"status": "STATUS", "labels": {"alertname": "StoreDown", "switchyard_zone": "us-east-a", "service": "catalog"},
              "annotations": {}, "startsAt": "2026-11-21T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
              "generatorURL": "http://prom", "fingerprint": "abc"}]
}"#;

#[test]
fn a_firing_alert_with_a_scope_is_a_finding_until_it_resolves() {
    let mut e = Engine::new(DetectConfig::default());
    let firing = parse_alertmanager(&AM.replace("STATUS", "firing")).unwrap();
    match e.ingest_alert(&firing[0], 5_000) {
        Some(Event::Opened(f)) => {
            assert_eq!(f.scope, "zone:us-east-a");
            assert_eq!(f.kind, "alert:StoreDown");
            assert_eq!(f.service, "catalog");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.ingest_alert(&firing[0], 6_000).is_none(),
        "a repeat changes nothing"
    );
    let resolved = parse_alertmanager(&AM.replace("STATUS", "resolved")).unwrap();
    assert!(matches!(
        e.ingest_alert(&resolved[0], 9_000),
        Some(Event::Closed(_))
    ));
    assert_eq!(e.findings()[0].end_ms, Some(9_000));
}

#[test]
fn a_silent_application_heartbeat_raises_an_alarm() {
    let t = generate("healthy", 1, 20, 100).unwrap();
    let mut e = Engine::new(DetectConfig::default());
    let t0 = t.snapshots[0].at_ms;
    e.ingest_heartbeat(Heartbeat {
        source: "billing".into(),
        at_ms: t0,
        interval_ms: 1000,
    });
    for s in &t.snapshots {
        e.ingest(s);
        e.tick(s.at_ms);
        if s.at_ms < t0 + 2_000 {
            assert!(e
                .alarms()
                .iter()
                .all(|a| !a.name.starts_with("heartbeat_missing")));
        }
    }
    assert!(
        e.alarms()
            .iter()
            .any(|a| a.name == "heartbeat_missing:billing"),
        "{:?}",
        e.alarms()
    );
}

#[test]
fn errors_in_every_zone_burn_the_slo_and_a_slow_rise_trends_before_the_threshold() {
    let t = generate("region-errors", 3, 50, 100).unwrap();
    let mut e = Engine::new(DetectConfig::default());
    let mut burned = false;
    for s in &t.snapshots {
        e.ingest(s);
        e.tick(s.at_ms);
        burned |= e.alarms().iter().any(|a| a.name == "slo_burn:page-fast");
    }
    assert!(
        burned,
        "10 % errors in half the traffic is a 50x burn of a 99.9 % objective"
    );

    let t = generate("slow-growth", 3, 60, 100).unwrap();
    let mut e = Engine::new(DetectConfig::default());
    let mut first_trend = None;
    for s in &t.snapshots {
        e.ingest(s);
        e.tick(s.at_ms);
        if first_trend.is_none() && e.alarms().iter().any(|a| a.name == "trend:zone:us-east-a") {
            first_trend = Some(s.at_ms - t.snapshots[0].at_ms);
        }
    }
    // Errors grow by 1/3 of a point per second from t=20 s; 5 % is reached at t=35 s.
    let at = first_trend.expect("the trend alarms");
    assert!(
        at < 35_000,
        "trend alarm at {at} ms, after the threshold would have been crossed"
    );
}

#[test]
fn a_finding_closes_after_the_hold_down_and_records_its_end() {
    let t = generate("zone-errors-20", 2, 70, 100).unwrap();
    let f = t.replay(&DetectConfig::default());
    let z: Vec<_> = f.iter().filter(|x| x.scope == "zone:us-east-a").collect();
    assert_eq!(z.len(), 1, "{z:#?}");
    let end = z[0].end_ms.expect("closed after the fault ended");
    let fault_end = t.labels[0].end_ms;
    assert!(
        end >= fault_end - 1000 && end <= fault_end + 4000,
        "ended at {end}, fault ended {fault_end}"
    );
    assert!(z[0].start_ms >= t.labels[0].start_ms && z[0].start_ms <= t.labels[0].start_ms + 3000);
    assert!(z[0].evidence["peers"].as_object().unwrap().len() == 5);
}

#[test]
fn a_static_threshold_needs_m_of_n_seconds() {
    use switchyard_detect::engine::StaticThreshold;
    let cfg = DetectConfig {
        thresholds: vec![StaticThreshold {
            name: "zone-5xx".into(),
            metric: "error_rate".into(),
            level: "zone".into(),
            above: 0.1,
            m: 3,
            n: 5,
        }],
        ..DetectConfig::default()
    };
    let t = generate("zone-errors-20", 4, 40, 100).unwrap();
    let mut e = Engine::new(cfg);
    let mut first = None;
    for s in &t.snapshots {
        e.ingest(s);
        e.tick(s.at_ms);
        if first.is_none()
            && e.alarms()
                .iter()
                .any(|a| a.name == "threshold:zone-5xx:zone:us-east-a")
        {
            first = Some(s.at_ms);
        }
        assert!(
            !e.alarms()
                .iter()
                .any(|a| a.name.starts_with("threshold:") && !a.name.ends_with("us-east-a")),
            "{:?}",
            e.alarms()
        );
    }
    let at = first.expect("fires") - t.labels[0].start_ms;
    assert!(
        (2_000..=7_000).contains(&at),
        "three bad seconds are needed: {at} ms"
    );
}

#[test]
fn every_outlier_method_finds_the_zone_and_nothing_in_healthy_noise() {
    use switchyard_detect::engine::OutlierMethod;
    use switchyard_detect::score::score;
    for (method, k) in [
        (OutlierMethod::Mad, 3.0),
        (OutlierMethod::Z, 2.0),
        (OutlierMethod::Iqr, 1.5),
    ] {
        let cfg = DetectConfig {
            outlier_method: method,
            mad_z: k,
            ..DetectConfig::default()
        };
        let t = generate("zone-errors-20", 1, 70, 100).unwrap();
        let s = score(&t.replay(&cfg), &t.labels, 5_000);
        assert!(
            s.labels[0].ttd_s.is_some_and(|x| x <= 10.0),
            "{method:?}: {:?}",
            s.labels
        );
        let h = generate("healthy", 1, 70, 100).unwrap();
        let s = score(&h.replay(&cfg), &h.labels, 5_000);
        assert_eq!(
            s.false_at("zone") + s.false_at("region"),
            0,
            "{method:?}: {:?}",
            s.false_findings
        );
    }
}

#[test]
fn an_alert_about_the_write_side_is_a_write_path_finding() {
    let mut e = Engine::new(DetectConfig::default());
    let am = AM
        .replace("STATUS", "firing")
        .replace(
            r#""switchyard_zone": "us-east-a""#,
            r#""switchyard_region": "us-east", "impact": "write_path""#,
        )
        .replace("StoreDown", "ReplicationStopped");
    let alerts = parse_alertmanager(&am).unwrap();
    match e.ingest_alert(&alerts[0], 5_000) {
        Some(Event::Opened(f)) => {
            assert_eq!(f.scope, "region:us-east");
            assert_eq!(f.kind, "write_path");
        }
        other => panic!("{other:?}"),
    }
}

mod shifted_zone {
    use std::collections::BTreeMap;

    use switchyard_detect::evidence::Evidence;
    use switchyard_detect::{DetectConfig, Engine, Event};
    use switchyard_model::signals::{Probe, ProbeTarget, Series, Snapshot};

    const ZONES: [&str; 3] = ["r-a", "r-b", "r-c"];

    /// One second as the edge of `zone` saw it: 40 requests to each of its
    /// zone's two instances unless the zone is shifted away (then none),
    /// `fail` of them failing in zone r-a, and one heartbeat from this edge
    /// to every instance of the region, those into r-a failing at `hb_fail`
    /// (when `beats` is false there are none into r-a at all).
    fn second(t: u64, zone: &str, shifted: bool, fail: f64, hb_fail: f64, beats: bool) -> Snapshot {
        let mut series = Vec::new();
        if !(shifted && zone == "r-a") {
            for i in 1..=2 {
                let failed = if zone == "r-a" {
                    (40.0 * fail) as u64
                } else {
                    0
                };
                series.push(Series {
                    service: "svc".into(),
                    route: "get".into(),
                    target_zone: zone.into(),
                    instance: format!("{zone}-{i}"),
                    write: false,
                    forwarded_in: false,
                    requests: 40,
                    errors: BTreeMap::from([("status_5xx".to_string(), failed)]),
                    p50_ms: 4.0,
                    p90_ms: 6.0,
                    p99_ms: 8.0,
                    max_ms: 9.0,
                });
            }
        }
        let mut probes = Vec::new();
        for (k, z) in ZONES.iter().enumerate() {
            if *z == "r-a" && !beats {
                continue;
            }
            for i in 1..=2 {
                // A deterministic share of failures: every n-th heartbeat.
                let nth = (t as usize * 6 + k * 2 + i) % 10;
                let ok = !(*z == "r-a" && (nth as f64) < hb_fail * 10.0);
                probes.push(Probe {
                    service: "svc".into(),
                    route: "get".into(),
                    target: ProbeTarget::Instance,
                    name: format!("{z}-{i}"),
                    target_zone: z.to_string(),
                    target_region: "r".into(),
                    write: false,
                    ok,
                    latency_ms: 5.0,
                    error: None,
                });
            }
        }
        Snapshot {
            at_ms: (t + 1) * 1000,
            interval_ms: 1000,
            region: "r".into(),
            source_zone: zone.into(),
            series,
            probes,
            config_version: None,
            config_refused: None,
        }
    }

    fn run(e: &mut Engine, from: u64, to: u64, f: impl Fn(u64, &str) -> Snapshot) -> Vec<Event> {
        let mut out = Vec::new();
        for t in from..to {
            for z in ZONES {
                e.ingest(&f(t, z));
            }
            out.extend(e.tick((t + 1) * 1000 + 500));
        }
        out
    }

    fn zone_a_events(ev: &[Event]) -> Vec<String> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Opened(f) if f.scope == "zone:r-a" => Some(format!("opened {}", f.kind)),
                Event::Closed(f) if f.scope == "zone:r-a" => Some(format!("closed {}", f.kind)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_shifted_zone_stays_found_until_its_heartbeats_are_clean() {
        let mut e = Engine::new(DetectConfig::default());
        let ev = run(&mut e, 0, 10, |t, z| second(t, z, false, 0.3, 0.3, true));
        assert_eq!(zone_a_events(&ev), vec!["opened errors"]);
        // Shifted away: no traffic, heartbeats still failing. Before, the
        // finding closed within seconds for lack of data.
        let ev = run(&mut e, 10, 40, |t, z| second(t, z, true, 0.0, 0.3, true));
        assert!(zone_a_events(&ev).is_empty(), "{ev:?}");
        assert_eq!(e.evidence("svc", "zone:r-a", "errors"), Evidence::Bad);
        assert_eq!(e.clean_since("svc", "zone:r-a"), None);
        // No heartbeats either: nothing known, nothing closes.
        let ev = run(&mut e, 40, 60, |t, z| second(t, z, true, 0.0, 0.0, false));
        assert!(zone_a_events(&ev).is_empty(), "{ev:?}");
        // Heartbeats clean: the finding closes, then the zone is clean.
        let ev = run(&mut e, 60, 80, |t, z| second(t, z, true, 0.0, 0.0, true));
        assert_eq!(zone_a_events(&ev), vec!["closed errors"]);
        let since = e.clean_since("svc", "zone:r-a").expect("clean");
        assert!((61_000..=81_000).contains(&since), "{since}");
        assert!(e.clean_since("svc", "zone:r-b").is_some());
    }
}

mod low_rate_write_failures {
    use std::collections::BTreeMap;

    use switchyard_detect::{DetectConfig, Engine, Event};
    use switchyard_model::signals::{Series, Snapshot};

    /// One second at the edge of `zone`: reads and writes to its two
    /// instances; from `fault` on, 7 writes in a hundred fail.
    fn second(t: u64, zone: &str, fault: bool) -> Snapshot {
        let mut series = Vec::new();
        for i in 1..=2 {
            for (route, write, requests) in [("get", false, 40u64), ("put", true, 50u64)] {
                // 7 % of writes, spread over the seconds: 3 or 4 of 50.
                let failed = if write && fault { 3 + (t + i) % 2 } else { 0 };
                series.push(Series {
                    service: "svc".into(),
                    route: route.into(),
                    target_zone: zone.into(),
                    instance: format!("{zone}-{i}"),
                    write,
                    forwarded_in: false,
                    requests,
                    errors: BTreeMap::from([("status_5xx".to_string(), failed)]),
                    p50_ms: 4.0,
                    p90_ms: 6.0,
                    p99_ms: 8.0,
                    max_ms: 9.0,
                });
            }
        }
        Snapshot {
            at_ms: (t + 1) * 1000,
            interval_ms: 1000,
            region: "r".into(),
            source_zone: zone.into(),
            series,
            probes: Vec::new(),
            config_version: None,
            config_refused: None,
        }
    }

    #[test]
    fn a_few_failing_writes_in_a_region_burn_the_route_slo() {
        let mut e = Engine::new(DetectConfig::default());
        let mut opened = Vec::new();
        for t in 0..70 {
            for z in ["r-a", "r-b", "r-c"] {
                e.ingest(&second(t, z, (10..40).contains(&t)));
            }
            for ev in e.tick((t + 1) * 1000 + 500) {
                if let Event::Opened(f) = ev {
                    opened.push((t, f));
                }
            }
        }
        let (t, f) = opened
            .iter()
            .find(|(_, f)| f.kind == "slo_burn:put")
            .unwrap_or_else(|| panic!("no burn finding: {opened:?}"));
        assert!(*t < 10 + 60, "found at {t} s");
        assert_eq!(f.scope, "region:r");
        assert_eq!(f.evidence["route"], "put");
        assert_eq!(f.evidence["severity"], "page");
        assert!(
            opened
                .iter()
                .all(|(_, f)| f.kind != "write_path" && !f.scope.starts_with("zone:")),
            "7 % is below the write-path and zone detectors: {opened:?}"
        );
    }
}

#[test]
fn a_canary_is_judged_on_real_traffic_against_its_peers() {
    use switchyard_detect::evidence::Evidence;
    let t = generate("zone-errors-20", 4, 70, 100).unwrap();
    let fault = &t.labels[0];
    let mut e = Engine::new(DetectConfig::default());
    for s in &t.snapshots {
        e.tick(s.at_ms);
        e.ingest(s);
    }
    let last = t.snapshots.last().unwrap().at_ms;
    e.tick(last + 2000);
    let during = fault.start_ms + 2000;
    let failing = e.canary("catalog", "us-east-a", during, 100);
    assert_eq!(failing.verdict, Evidence::Bad, "{failing:?}");
    let peer = e.canary("catalog", "us-east-b", during, 100);
    assert_eq!(peer.verdict, Evidence::Clean, "{peer:?}");
    // Too few requests to call it healthy is not healthy.
    let short = e.canary("catalog", "us-east-b", last - 3000, 1000);
    assert_eq!(short.verdict, Evidence::Unknown, "{short:?}");
    assert!(short.requests >= 250 && short.requests < 1000, "{short:?}");
    // After the fault the zone is judged clean again, on its own seconds.
    let after = e.canary("catalog", "us-east-a", fault.end_ms + 2000, 100);
    assert_eq!(after.verdict, Evidence::Clean, "{after:?}");
    // A zone the engine never heard of is unknown, not clean.
    let nowhere = e.canary("catalog", "mars-a", 0, 100);
    assert_eq!(nowhere.verdict, Evidence::Unknown);
}
