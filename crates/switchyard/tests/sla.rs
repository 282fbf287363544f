//! `switchyard sla` through the binary: the example composition's numbers
//! (worked out here by hand, not by the library), the JSON shape, exit codes
//! and path-named errors for bad input, and measured availability from a
//! synthetic trace counted here straight from its NDJSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The failure classes, written out again on purpose: the test must not
/// lean on the code it checks.
const FAILURES: &[&str] = &[
    "status_5xx",
    "upstream_connect",
    "upstream_timeout",
    "upstream_protocol",
    "fault",
];

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/composition.toml")
}

fn sla(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("sla")
        .args(args)
        .output()
        .expect("run switchyard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(o: &Output) -> Value {
    let out = stdout(o);
    assert_eq!(out.trim_end().lines().count(), 1, "one JSON object: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn component<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {j}"))
}

/// The example's availabilities, by hand from the numbers in the file.
fn example_by_hand() -> BTreeMap<&'static str, f64> {
    let instance: f64 = 0.995;
    let instances = 1.0 - (1.0 - instance) * (1.0 - instance);
    let zone = 0.999 * 0.9995 * instances;
    // At least 2 of 3 alike: all three up, or exactly two.
    let zones = zone.powi(3) + 3.0 * zone * zone * (1.0 - zone);
    let region = 0.9999 * zones * 0.9995;
    let regions = 1.0 - (1.0 - region) * (1.0 - region);
    let service = 0.99999 * regions;
    BTreeMap::from([
        ("instance", instance),
        ("instances", instances),
        ("zone", zone),
        ("zones", zones),
        ("us-east", region),
        ("eu-west", region),
        ("regions", regions),
        ("service", service),
    ])
}

#[test]
fn example_composition_numbers() {
    let o = sla(&[example().to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json_of(&o);
    let c = &j["composition"];
    assert_eq!(c["top"], "service");
    assert_eq!(c["objective"], 0.9995);
    assert_eq!(c["meets_objective"], true);
    for (name, want) in example_by_hand() {
        let got = component(c, name)["availability"].as_f64().unwrap();
        assert!(close(got, want, 1e-12), "{name}: {got} != {want}");
    }
    let service = example_by_hand()["service"];
    assert!(close(c["availability"].as_f64().unwrap(), service, 1e-12));
    let top = component(c, "service");
    assert!(close(
        top["nines"].as_f64().unwrap(),
        -(1.0 - service).log10(),
        1e-6
    ));
    let month = (1.0 - service) * 30.0 * 86_400.0;
    assert!(close(
        top["downtime_month_s"].as_f64().unwrap(),
        month,
        1e-6
    ));
    assert!(close(
        top["downtime_year_s"].as_f64().unwrap(),
        (1.0 - service) * 365.0 * 86_400.0,
        1e-5
    ));
    // A region alone misses the objective; the pair meets it.
    assert_eq!(component(c, "us-east")["meets_objective"], false);
    assert_eq!(component(c, "regions")["meets_objective"], true);
    assert_eq!(j["ok"], true);

    // The text names the same numbers, and the file's comment states what
    // the command prints for the top.
    let o = sla(&[example().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    let headline = text
        .lines()
        .find(|l| l.starts_with("service availability "))
        .unwrap_or_else(|| panic!("no headline in {text}"));
    assert!(
        headline.contains(&format!("{service:.11}")[..11]),
        "{headline}"
    );
    assert!(
        headline.contains("26.9 s down per 30-day month"),
        "{headline}"
    );
    let comments: String = std::fs::read_to_string(example())
        .unwrap()
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words(&comments).contains(&words(headline)),
        "the example's comment should state: {headline}"
    );
    for row in ["service", "zones", "instance"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{row} "))),
            "{row} row in {text}"
        );
    }
}

#[test]
fn json_shape_and_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("three-nines.toml");
    std::fs::write(
        &f,
        r#"
objective = 0.999
top = "svc"
[component.svc]
series = ["db"]
[component.db]
availability = 0.999
[component.spare]
k_of_n = { k = 2, parts = ["db", "db", "db"] }
"#,
    )
    .unwrap();
    let o = sla(&[f.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json_of(&o);
    let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["composition", "ok"]);
    let c = &j["composition"];
    for k in [
        "file",
        "top",
        "objective",
        "availability",
        "meets_objective",
        "components",
    ] {
        assert!(c.get(k).is_some(), "composition.{k} in {c}");
    }
    assert_eq!(c["file"], f.to_str().unwrap());
    let svc = component(c, "svc");
    assert_eq!(svc["kind"], "series");
    assert_eq!(svc["parts"], serde_json::json!(["db"]));
    assert_eq!(svc["downtime_month"], "43 min 12 s");
    assert_eq!(svc["downtime_year"], "8 h 45 min 36 s");
    assert!(close(svc["nines"].as_f64().unwrap(), 3.0, 1e-9));
    assert_eq!(svc["meets_objective"], true);
    let spare = component(c, "spare");
    assert_eq!(spare["kind"], "k_of_n");
    assert_eq!(spare["k"], 2);
    assert_eq!(spare["used_by_top"], false);
    let a: f64 = 0.999;
    let want = a.powi(3) + 3.0 * a * a * (1.0 - a);
    assert!(close(spare["availability"].as_f64().unwrap(), want, 1e-12));
}

#[test]
fn objective_missed_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        "objective = 0.9999\ntop = \"a\"\n[component.a]\navailability = 0.999\n",
    )
    .unwrap();
    let o = sla(&[f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("MISSES"), "{}", stdout(&o));
    let o = sla(&[f.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j = json_of(&o);
    assert_eq!(j["ok"], false);
    assert_eq!(j["composition"]["meets_objective"], false);
}

#[test]
fn bad_composition_exits_2_naming_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        r#"
top = "api"
[component.db]
availability = 1.2
[component.api]
series = ["db", "cache"]
[component.loop]
parallel = ["loop2"]
[component.loop2]
series = ["loop"]
"#,
    )
    .unwrap();
    for json in [false, true] {
        let mut args = vec![f.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let o = sla(&args);
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(stdout(&o), "", "nothing on stdout");
        let err = stderr(&o);
        for want in [
            "bad.toml",
            "3 problems",
            "component.db.availability: must be in (0, 1], got 1.2",
            "component.api.series[1]: unknown component \"cache\"",
            "component.loop: cycle loop -> loop2 -> loop",
        ] {
            assert!(err.contains(want), "{want:?} in {err}");
        }
    }

    // Syntax and unknown keys: the line is named.
    std::fs::write(&f, "top = \"a\"\n[component.a]\navailabilty = 0.9\n").unwrap();
    let o = sla(&[f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    assert!(
        err.contains("bad.toml") && err.contains("line 3") && err.contains("availabilty"),
        "{err}"
    );

    // A missing file, a bad objective, nothing to do.
    let o = sla(&[dir.path().join("nope.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.toml"), "{}", stderr(&o));
    let o = sla(&[example().to_str().unwrap(), "--objective", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("--objective: must be in (0, 1), got 1.5"));
    let o = sla(&[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bad_trace_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.ndjson");
    std::fs::write(&f, "{\"meta\":{}}\n{\"snapshot\":{\"at_ms\":\"soon\"}}\n").unwrap();
    // With a good composition too: still nothing on stdout.
    let o = sla(&[
        example().to_str().unwrap(),
        "--signals",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    assert!(
        err.contains("broken.ndjson") && err.contains("line 2"),
        "{err}"
    );
}

/// What the test counts itself from a trace's NDJSON.
#[derive(Default, Debug)]
struct Count {
    requests: u64,
    failed: u64,
    start_ms: Option<u64>,
    end_ms: u64,
    minutes: BTreeMap<u64, (u64, u64)>,
}

impl Count {
    fn add(&mut self, snap: &Value, requests: u64, failed: u64) {
        let at = snap["at_ms"].as_u64().unwrap();
        let start = at - snap["interval_ms"].as_u64().unwrap();
        self.start_ms = Some(self.start_ms.map_or(start, |s| s.min(start)));
        self.end_ms = self.end_ms.max(at);
        self.requests += requests;
        self.failed += failed;
        // The snapshot's interval ends at `at_ms`: it belongs to the second
        // (and minute) before that instant.
        let m = self.minutes.entry((at - 1) / 60_000).or_default();
        m.0 += requests;
        m.1 += failed;
    }

    /// Lowest availability, then most failures, then earliest.
    fn worst(&self) -> (u64, u64, u64) {
        let (m, (r, f)) = self
            .minutes
            .iter()
            .filter(|(_, (r, _))| *r > 0)
            .min_by(|a, b| {
                let av = |x: &(u64, u64)| 1.0 - x.1 as f64 / x.0 as f64;
                av(a.1)
                    .total_cmp(&av(b.1))
                    .then(b.1 .1.cmp(&a.1 .1))
                    .then(a.0.cmp(b.0))
            })
            .unwrap();
        (m * 60_000, *r, *f)
    }
}

fn count_trace(text: &str) -> (BTreeMap<String, Count>, BTreeMap<(String, String), Count>) {
    let snaps: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| v.get("snapshot").cloned())
        .collect();
    let mut zone_region: BTreeMap<String, String> = BTreeMap::new();
    for s in &snaps {
        zone_region.insert(
            s["source_zone"].as_str().unwrap().into(),
            s["region"].as_str().unwrap().into(),
        );
    }
    let mut services: BTreeMap<String, Count> = BTreeMap::new();
    let mut regions: BTreeMap<(String, String), Count> = BTreeMap::new();
    for s in &snaps {
        for x in s["series"].as_array().unwrap() {
            let service = x["service"].as_str().unwrap().to_string();
            let requests = x["requests"].as_u64().unwrap();
            let errors = x["errors"].as_object().unwrap();
            let failed: u64 = errors
                .iter()
                .filter(|(k, _)| FAILURES.contains(&k.as_str()))
                .map(|(_, v)| v.as_u64().unwrap())
                .sum();
            let region = zone_region
                .get(x["target_zone"].as_str().unwrap())
                .cloned()
                .unwrap_or_else(|| s["region"].as_str().unwrap().to_string());
            services
                .entry(service.clone())
                .or_default()
                .add(s, requests, failed);
            regions
                .entry((service, region))
                .or_default()
                .add(s, requests, failed);
        }
    }
    (services, regions)
}

fn check(got: &Value, want: &Count, objective: f64, what: &str) {
    assert_eq!(got["requests"], want.requests, "{what} requests");
    assert_eq!(got["failed"], want.failed, "{what} failed");
    let avail = 1.0 - want.failed as f64 / want.requests as f64;
    assert!(
        close(got["availability"].as_f64().unwrap(), avail, 1e-12),
        "{what} availability"
    );
    assert_eq!(got["window_start_ms"], want.start_ms.unwrap(), "{what}");
    assert_eq!(got["window_end_ms"], want.end_ms, "{what}");
    let budget = (1.0 - objective) * want.requests as f64;
    assert!(
        close(got["budget"].as_f64().unwrap(), budget, 1e-9),
        "{what} budget"
    );
    assert!(
        close(
            got["budget_spent"].as_f64().unwrap(),
            want.failed as f64 / budget,
            1e-9
        ),
        "{what} spent"
    );
    assert!(
        close(
            got["budget_remaining"].as_f64().unwrap(),
            budget - want.failed as f64,
            1e-9
        ),
        "{what} remaining"
    );
    assert!(
        close(
            got["budget_remaining_fraction"].as_f64().unwrap(),
            1.0 - want.failed as f64 / budget,
            1e-9
        ),
        "{what} remaining fraction"
    );
    assert_eq!(got["meets_objective"], avail >= objective, "{what} verdict");
    let (start, r, f) = want.worst();
    let w = &got["worst_minute"];
    assert_eq!(
        (
            w["start_ms"].as_u64(),
            w["requests"].as_u64(),
            w["failed"].as_u64()
        ),
        (Some(start), Some(r), Some(f)),
        "{what} worst minute"
    );
}

#[test]
fn measured_availability_of_a_synthetic_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("zone-errors-20.ndjson");
    let o = Command::new(BIN)
        .args(["detect", "synth", "zone-errors-20", "--seed", "1", "--out"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&trace).unwrap();
    let (services, regions) = count_trace(&text);
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(regions.len(), 2, "{regions:?}");

    let o = sla(&[
        "--signals",
        trace.to_str().unwrap(),
        "--objective",
        "0.999",
        "--json",
    ]);
    let j = json_of(&o);
    let s = &j["signals"];
    assert_eq!(s["file"], trace.to_str().unwrap());
    assert_eq!(s["objective"], 0.999);
    let got = s["services"].as_array().unwrap();
    assert_eq!(got.len(), 1);
    let (name, want) = services.iter().next().unwrap();
    assert_eq!(&got[0]["service"], name);
    check(&got[0], want, 0.999, name);
    for r in got[0]["regions"].as_array().unwrap() {
        let region = r["region"].as_str().unwrap().to_string();
        let want = &regions[&(name.clone(), region.clone())];
        check(r, want, 0.999, &format!("{name} {region}"));
    }
    // 20 % errors in one zone for half a minute: far below three nines.
    assert!(want.failed * 1000 > want.requests);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(j["ok"], false);

    // The text table carries the same counts.
    let o = sla(&["--signals", trace.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let row = out
        .lines()
        .find(|l| l.starts_with(name.as_str()))
        .unwrap_or_else(|| panic!("no {name} row in {out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], want.requests.to_string(), "{row}");
    assert_eq!(cells[2], want.failed.to_string(), "{row}");

    // A lax objective is met: exit 0.
    let o = sla(&["--signals", trace.to_str().unwrap(), "--objective", "0.9"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn shed_and_read_only_are_not_failures() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.ndjson");
    let snap = |at: u64, region: &str, zone: &str, errors: Value| {
        serde_json::json!({"snapshot": {
            "at_ms": at, "interval_ms": 1000, "region": region, "source_zone": zone,
            "series": [{
                "service": "shop", "route": "buy", "target_zone": zone, "instance": format!("{zone}-1"),
                "requests": 1000, "errors": errors,
                "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "max_ms": 4.0
            }]
        }})
        .to_string()
    };
    let text = [
        serde_json::json!({"meta": {"hand": "made"}}).to_string(),
        snap(
            120_500,
            "r1",
            "r1-a",
            serde_json::json!({"shed": 100, "read_only": 40, "status_5xx": 1}),
        ),
        snap(
            121_500,
            "r2",
            "r2-a",
            serde_json::json!({"upstream_connect": 2, "shed": 5}),
        ),
    ]
    .join("\n");
    std::fs::write(&trace, text).unwrap();
    // With a composition at the same time; its objective (0.9995) applies.
    let o = sla(&[
        example().to_str().unwrap(),
        "--signals",
        trace.to_str().unwrap(),
        "--json",
    ]);
    let j = json_of(&o);
    assert!(j["composition"].is_object());
    let s = &j["signals"]["services"][0];
    assert_eq!(s["objective"], 0.9995);
    assert_eq!((&s["requests"], &s["failed"]), (&2000.into(), &3.into()));
    assert_eq!((&s["shed"], &s["read_only"]), (&105.into(), &40.into()));
    assert!(close(s["availability"].as_f64().unwrap(), 0.9985, 1e-12));
    assert!(close(s["budget"].as_f64().unwrap(), 1.0, 1e-9));
    assert_eq!(s["meets_objective"], false);
    assert_eq!(o.status.code(), Some(1));
    let regions: Vec<(&str, u64)> = s["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["region"].as_str().unwrap(), r["failed"].as_u64().unwrap()))
        .collect();
    assert_eq!(regions, [("r1", 1), ("r2", 2)]);
}
