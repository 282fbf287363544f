//! Rendering a drill report for people: report.md plus PNG and SVG plots.
//!
//! Set `SWITCHYARD_REPORT_OUT=/some/dir` to also write each test's report
//! into a subdirectory there, to look at the plots.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use switchyard_report::{
    write_report, Action, AlarmFired, Cell, ConfigSecond, DrillReport, Expectation, Finding,
    RolloutRun, Second, SteadyState,
};

const REGIONS: [&str; 2] = ["us-east", "eu-west"];
const ZONES: [&str; 3] = ["a", "b", "c"];
const PLOTS: [&str; 4] = ["rps", "errors", "p99", "entry"];
const MARKERS: [&str; 5] = [
    "fault 10.0 s",
    "detected 12.5 s",
    "mitigated 14.0 s",
    "restored 30.0 s",
    "recovered 32.0 s",
];
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// 40 seconds, 2 regions × 3 zones, 300 requests per region per second.
/// At 10 s zone us-east-a starts failing most requests (and some get no
/// answer at all, counted under zone "none"); at 14 s it is drained, its
/// traffic moving to us-east-b and -c; at 30 s the fault is removed and the
/// zone gets its traffic back over two seconds.
fn sample_report() -> DrillReport {
    DrillReport {
        scenario: "zone-gray-failure".into(),
        passed: false,
        requests_total: 24_000,
        requests_failed: 320,
        requests_shed: 0,
        requests_read_only: 0,
        fault_at_s: Some(10.0),
        detected_at_s: Some(12.5),
        mitigated_at_s: Some(14.0),
        restored_at_s: Some(30.0),
        recovered_at_s: Some(32.0),
        duration_s: 40.0,
        steady_state: SteadyState {
            max_error_rate: 0.01,
            max_p99_ms: 250.0,
        },
        findings: vec![Finding {
            scope: "zone:us-east-a".into(),
            kind: "errors".into(),
            at_s: 12.5,
            evidence: json!({"error_rate": 0.75, "peers_error_rate": 0.0, "instances": 2}),
        }],
        actions: vec![
            Action {
                what: "zone us-east-a weight 0".into(),
                why: "playbook zone-errors after finding zone:us-east-a errors".into(),
                at_s: 14.0,
                accepted: true,
                refused_by: None,
            },
            Action {
                what: "zone us-east-b weight 0".into(),
                why: "playbook zone-errors".into(),
                at_s: 14.5,
                accepted: false,
                refused_by: Some("one-zone-at-a-time".into()),
            },
        ],
        expectations: vec![
            Expectation {
                name: "failed_ratio <= 0.05".into(),
                held: true,
                detail: "failed 1.42 % of requests, bound 5 %".into(),
            },
            Expectation {
                name: "ttm_s <= 3".into(),
                held: false,
                detail: "mitigated 4.0 s after the fault, bound 3 s".into(),
            },
        ],
        aborted: None,
        timeline: (0..40).map(second).collect(),
        alarms: vec![AlarmFired {
            name: "slo_burn:fast".into(),
            service: "catalog".into(),
            severity: "page".into(),
            first_at_s: 11.2,
            last_at_s: 29.0,
            episodes: 1,
            detail: json!({"long_burn": 15.2, "short_burn": 40.0}),
        }],
        ..DrillReport::default()
    }
}

fn second(t: u32) -> Second {
    let mut zones = BTreeMap::new();
    let mut regions = BTreeMap::new();
    for region in REGIONS {
        let served = zone_shares(region, t);
        let mut failures = 0;
        for (zone, (requests, zone_failures)) in ZONES.iter().zip(served) {
            let p99_ms = if zone_failures > 0 { 900.0 } else { 40.0 };
            zones.insert(
                format!("{region}-{zone}"),
                cell(requests, zone_failures, p99_ms),
            );
            failures += zone_failures;
        }
        let unanswered = if region == "us-east" && (10..14).contains(&t) {
            20
        } else {
            0
        };
        if unanswered > 0 {
            zones.insert("none".into(), cell(unanswered, unanswered, 1000.0));
        }
        failures += unanswered;
        let p99_ms = if failures > 0 {
            950.0
        } else if region == "us-east" {
            45.0
        } else {
            60.0
        };
        regions.insert(region.to_string(), cell(300, failures, p99_ms));
    }
    let requests = regions.values().map(|c| c.requests).sum();
    let failures = regions.values().map(|c| c.failures).sum();
    Second {
        t,
        requests,
        failures,
        shed: 0,
        read_only: 0,
        p99_ms: regions.values().map(|c| c.p99_ms).fold(0.0, f64::max),
        regions,
        zones,
        entered: entered(t),
    }
}

/// The americas group enters eu-west while us-east's ingress is lost
/// (seconds 12 to 29), the europe group always eu-west.
fn entered(t: u32) -> BTreeMap<String, BTreeMap<String, u64>> {
    let americas = if (12..30).contains(&t) {
        [("eu-west".to_string(), 300)].into()
    } else if t == 30 {
        [("us-east".to_string(), 100), ("eu-west".to_string(), 200)].into()
    } else {
        [("us-east".to_string(), 300)].into()
    };
    [
        ("americas".to_string(), americas),
        ("europe".to_string(), [("eu-west".to_string(), 300)].into()),
    ]
    .into()
}

/// `(requests, failures)` per zone a, b, c of `region` in second `t`.
fn zone_shares(region: &str, t: u32) -> [(u64, u64); 3] {
    if region != "us-east" {
        return [(100, 0); 3];
    }
    match t {
        10..=13 => [(80, 60), (100, 0), (100, 0)],
        14..=29 => [(0, 0), (150, 0), (150, 0)],
        30 => [(30, 0), (135, 0), (135, 0)],
        31 => [(60, 0), (120, 0), (120, 0)],
        _ => [(100, 0); 3],
    }
}

fn cell(requests: u64, failures: u64, p99_ms: f64) -> Cell {
    Cell {
        requests,
        failures,
        p99_ms,
    }
}

fn render(report: &DrillReport, test: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("drill");
    let md = write_report(report, &out).unwrap();
    assert_eq!(md, out.join("report.md"));
    if let Some(keep) = std::env::var_os("SWITCHYARD_REPORT_OUT") {
        write_report(report, &Path::new(&keep).join(test)).unwrap();
    }
    dir
}

#[test]
fn report_md_states_the_verdict_and_the_numbers() {
    let report = sample_report();
    let dir = render(&report, "verdict");
    let md = std::fs::read_to_string(dir.path().join("drill/report.md")).unwrap();

    assert!(md.contains("zone-gray-failure"), "{md}");
    assert!(md.contains("FAILED"), "{md}");
    assert!(!md.contains("PASSED"), "{md}");
    for e in &report.expectations {
        assert!(
            md.contains(&e.name),
            "missing expectation {}:\n{md}",
            e.name
        );
    }
    assert!(md.contains("| Time to detect (TTD) | 2.5 s |"), "{md}");
    assert!(md.contains("| Time to mitigate (TTM) | 4.0 s |"), "{md}");
    assert!(md.contains("| ✗ |"), "{md}");
    assert!(md.contains("refused by `one-zone-at-a-time`"), "{md}");
    assert!(md.contains("## Alarms"), "{md}");
    assert!(
        md.contains("| `slo_burn:fast` | catalog | page | 11.2 s | 29.0 s | 1 |"),
        "{md}"
    );
    assert!(
        md.contains(r#"`{"error_rate":0.75,"instances":2,"peers_error_rate":0.0}`"#),
        "{md}"
    );
    for plot in PLOTS {
        assert!(md.contains(&format!("({plot}.png)")), "{md}");
        assert!(md.contains(&format!("({plot}.svg)")), "{md}");
    }
}

#[test]
fn plots_are_written_as_png_and_svg() {
    let dir = render(&sample_report(), "plots");
    let out = dir.path().join("drill");
    for plot in PLOTS {
        let png = std::fs::read(out.join(format!("{plot}.png"))).unwrap();
        assert!(png.starts_with(PNG_SIGNATURE), "{plot}.png is not a PNG");
        assert!(
            png.len() > 8 * 1024,
            "{plot}.png is only {} bytes",
            png.len()
        );

        let svg = std::fs::read_to_string(out.join(format!("{plot}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{plot}.svg");
    }

    let texts = |plot: &str| svg_texts(&out.join(format!("{plot}.svg")));
    let rps = texts("rps");
    for region in REGIONS {
        for zone in ZONES {
            let name = format!("{region}-{zone}");
            assert!(
                rps.contains(&name),
                "zone {name} not in the legend: {rps:?}"
            );
        }
    }
    assert!(
        rps.iter().any(|t| t == "none"),
        "zone none served requests, so it has a line"
    );
    for plot in ["errors", "p99"] {
        let texts = texts(plot);
        for region in REGIONS {
            assert!(
                texts.iter().any(|t| t == region),
                "region {region} not in {plot} legend"
            );
        }
        assert!(
            texts.iter().any(|t| t.starts_with("steady-state bound")),
            "{plot}.svg has no bound"
        );
    }
    for plot in PLOTS {
        let texts = texts(plot);
        for marker in MARKERS {
            assert!(
                texts.iter().any(|t| t == marker),
                "{plot}.svg lacks marker {marker}"
            );
        }
    }
    assert!(texts("errors").iter().any(|t| t == "all regions"));
    let entry = texts("entry");
    for line in ["americas: us-east", "americas: eu-west", "europe: eu-west"] {
        assert!(entry.iter().any(|t| t == line), "{line} not in {entry:?}");
    }
    assert!(
        !entry.iter().any(|t| t == "europe: us-east"),
        "europe never entered us-east, so it has no line: {entry:?}"
    );
}

#[test]
fn the_entry_plot_gives_each_groups_share_per_region() {
    let p = switchyard_report::entry_plot(&sample_report());
    let line = |name: &str| {
        p.series
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no line {name}"))
    };
    let at = |name: &str, t: usize| line(name).points[t].1;
    assert_eq!(at("americas: us-east", 5), Some(100.0));
    assert_eq!(at("americas: us-east", 20), Some(0.0));
    assert_eq!(at("americas: eu-west", 20), Some(100.0));
    let back = at("americas: us-east", 30).unwrap();
    assert!((back - 100.0 / 3.0).abs() < 1e-9, "{back}");
}

/// The text of every `<text>` element: the plotters SVG backend writes each
/// label as one element, its content on a line of its own.
fn svg_texts(path: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(path).unwrap();
    svg.split("<text")
        .skip(1)
        .filter_map(|element| {
            let content = element.split_once('>')?.1;
            Some(content.split_once("</text>")?.0.trim().to_string())
        })
        .collect()
}

#[test]
fn zone_none_without_requests_gets_no_line() {
    let mut report = sample_report();
    for second in &mut report.timeline {
        if let Some(none) = second.zones.get_mut("none") {
            none.requests = 0;
            none.failures = 0;
        }
    }
    let dir = render(&report, "no-none");
    let rps = svg_texts(&dir.path().join("drill/rps.svg"));
    assert!(rps.contains(&"us-east-a".to_string()), "{rps:?}");
    assert!(!rps.contains(&"none".to_string()), "{rps:?}");
}

#[test]
fn empty_report_renders() {
    let report = DrillReport {
        scenario: "nothing-happened".into(),
        passed: true,
        ..DrillReport::default()
    };
    let dir = render(&report, "empty");
    let out = dir.path().join("drill");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("PASSED"));
    assert!(md.contains("| Fault at | — |"), "{md}");
    assert!(md.contains("| Failed (% of total) | — |"), "{md}");
    assert!(!md.contains("## Alarms"), "no alarms, no section: {md}");
    for plot in PLOTS {
        let png = std::fs::read(out.join(format!("{plot}.png"))).unwrap();
        assert!(png.starts_with(PNG_SIGNATURE));
        assert!(out.join(format!("{plot}.svg")).exists());
    }
}

#[test]
fn json_round_trip() {
    let report = sample_report();
    let text = serde_json::to_string(&report).unwrap();
    let back: DrillReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);
}

#[test]
fn a_followed_rollout_gets_its_plot_and_section_and_its_waves_show_as_steps() {
    // Three edges; the canary a takes c2 at 2 s, b at 4 s, then the
    // rollout is rolled back at 6 s; c did not answer at 1 s.
    let at = |t: u32, a: &str, b: &str, c: &str| ConfigSecond {
        t,
        zones: [("a", a), ("b", b), ("c", c)]
            .into_iter()
            .map(|(z, v)| (z.to_string(), v.to_string()))
            .collect(),
    };
    let report = DrillReport {
        scenario: "rollout".into(),
        duration_s: 8.0,
        rollouts: vec![RolloutRun {
            id: "r1".into(),
            from: "c1".into(),
            to: "c2".into(),
            state: "rolled_back".into(),
            canary: "a".into(),
            waves: vec!["canary a".into(), "rest of r".into()],
            waves_passed: 1,
            started_at_s: 1.5,
            canary_took_at_s: Some(2.1),
            ended_at_s: Some(6.0),
            verdicts: vec!["wave 2 (rest of r): fail — route get: canary errors 100 %".into()],
            incident: Some("i1".into()),
        }],
        config_versions: vec![
            at(0, "c1", "c1", "c1"),
            at(1, "c1", "c1", "?"),
            at(2, "c2", "c1", "c1"),
            at(4, "c2", "c2", "c1"),
            at(6, "c1", "c1", "c1"),
        ],
        ..DrillReport::default()
    };
    let p = switchyard_report::rollout_plot(&report);
    let line = |name: &str| -> Vec<f64> {
        p.series
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name}: {:?}", p.series))
            .points
            .iter()
            .map(|(_, v)| v.unwrap())
            .collect()
    };
    assert_eq!(line("c2 (new)"), [0.0, 0.0, 1.0, 2.0, 0.0]);
    assert_eq!(line("c1 (old)"), [3.0, 2.0, 2.0, 1.0, 3.0]);
    assert_eq!(line("?"), [0.0, 1.0, 0.0, 0.0, 0.0]);
    let dir = render(&report, "rollout");
    let out = dir.path().join("drill");
    assert!(out.join("rollout.png").exists() && out.join("rollout.svg").exists());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("![Config rollout"), "{md}");
    assert!(
        md.contains("| `r1` | `c1` → `c2` | rolled_back | 1 of 2 | 1.5 s | 2.1 s | 6.0 s | `i1` |"),
        "{md}"
    );
    assert!(md.contains("- wave 2 (rest of r): fail"), "{md}");
    // A run without a rollout has neither.
    let plain = render(&sample_report(), "plain");
    assert!(!plain.path().join("drill/rollout.png").exists());
}
