//! A synthetic signal generator with noise, for the evaluation corpus: the
//! lab's default topology (2 regions × 3 zones × 2 instances, an edge per
//! zone, each sending its clients' requests to its own zone), every edge
//! probing every instance of its region and the other region's edges once a
//! second, and a fault injected into the numbers as each case says.

use std::collections::BTreeMap;

use serde_json::json;
use switchyard_model::signals::{ErrorClass, Probe, ProbeTarget, Series, Snapshot};

use crate::trace::{Label, Trace};

/// The corpus cases, by name.
pub const CASES: &[&str] = &[
    "healthy",
    "noisy",
    "uniform-errors",
    "single-instance",
    "single-instance-slow",
    "zone-errors-5",
    "zone-errors-20",
    "zone-errors-100",
    "zone-latency-50",
    "zone-latency-200",
    "region-errors",
    "cross-zone-link",
    "inter-region-link",
    "slow-growth",
    "fast-flapping",
    "write-path",
];

/// splitmix64: small, fast and deterministic across platforms.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Binomial(n, p) by summing Bernoullis (n is small here).
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.f() < p).count() as u64
    }
}

/// What is wrong at one second, for one instance or probe path.
#[derive(Default, Clone, Copy)]
struct Harm {
    error_rate: f64,
    extra_ms: f64,
    /// Failing writes only (requests and heartbeats of the write route).
    write_error_rate: f64,
}

/// (t seconds, region, zone, instance) → what is wrong with the instance.
type InstanceHarm = Box<dyn Fn(u64, &str, &str, &str) -> Harm>;
/// (t seconds, source, target) → share of probes that fail.
type ProbeHarm = Box<dyn Fn(u64, &str, &str) -> f64>;

struct Case {
    labels: Vec<Label>,
    /// (t seconds, instance) → harm.
    instance: InstanceHarm,
    /// (t, source zone, target zone) → probe failure share.
    zone_probe: ProbeHarm,
    /// (t, source region, target region) → probe failure share.
    region_probe: ProbeHarm,
    noise: f64,
}

const T0_MS: u64 = 1_700_000_000_000;
const FAULT: (u64, u64) = (20, 50);

fn label(scope: &str, kind: Option<&str>, from: u64, to: u64) -> Label {
    Label {
        scope: scope.into(),
        kind: kind.map(str::to_string),
        start_ms: T0_MS + from * 1000,
        end_ms: T0_MS + to * 1000,
    }
}

fn during(t: u64) -> bool {
    (FAULT.0..FAULT.1).contains(&t)
}

/// The harm of one instance during the fault.
fn one_instance(name: &'static str, harm: Harm) -> InstanceHarm {
    Box::new(move |t, _, _, i| {
        if during(t) && i == name {
            harm
        } else {
            Harm::default()
        }
    })
}

fn case(name: &str) -> Option<Case> {
    let none_i = |_: u64, _: &str, _: &str, _: &str| Harm::default();
    let none_p = |_: u64, _: &str, _: &str| 0.0;
    let zone_errors = |rate: f64| -> InstanceHarm {
        Box::new(move |t, _, zone, _| {
            if during(t) && zone == "us-east-a" {
                Harm {
                    error_rate: rate,
                    extra_ms: 0.0,
                    ..Harm::default()
                }
            } else {
                Harm::default()
            }
        })
    };
    let zone_probe_fail = |rate: f64| -> ProbeHarm {
        Box::new(move |t, _, dst| {
            if during(t) && dst == "us-east-a" {
                rate
            } else {
                0.0
            }
        })
    };
    Some(match name {
        "healthy" => Case {
            labels: vec![],
            instance: Box::new(none_i),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 0.5,
        },
        "noisy" => Case {
            labels: vec![],
            instance: Box::new(none_i),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 2.0,
        },
        // A service-wide problem (every zone 5 % errors) is nobody's zone.
        "uniform-errors" => Case {
            labels: vec![],
            instance: Box::new(|t, _, _, _| {
                if during(t) {
                    Harm {
                        error_rate: 0.05,
                        extra_ms: 0.0,
                        ..Harm::default()
                    }
                } else {
                    Harm::default()
                }
            }),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        "single-instance" => Case {
            labels: vec![label(
                "instance:us-east-a-1",
                Some("errors"),
                FAULT.0,
                FAULT.1,
            )],
            instance: one_instance(
                "us-east-a-1",
                Harm {
                    error_rate: 0.5,
                    extra_ms: 0.0,
                    ..Harm::default()
                },
            ),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        "single-instance-slow" => Case {
            labels: vec![label(
                "instance:us-east-a-1",
                Some("latency"),
                FAULT.0,
                FAULT.1,
            )],
            instance: one_instance(
                "us-east-a-1",
                Harm {
                    error_rate: 0.0,
                    extra_ms: 200.0,
                    ..Harm::default()
                },
            ),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        "zone-errors-5" | "zone-errors-20" | "zone-errors-100" => {
            let rate = match name {
                "zone-errors-5" => 0.05,
                "zone-errors-20" => 0.2,
                _ => 1.0,
            };
            Case {
                labels: vec![label("zone:us-east-a", Some("errors"), FAULT.0, FAULT.1)],
                instance: zone_errors(rate),
                zone_probe: zone_probe_fail(rate),
                region_probe: Box::new(none_p),
                noise: 1.0,
            }
        }
        "zone-latency-50" | "zone-latency-200" => {
            let ms = if name == "zone-latency-50" {
                50.0
            } else {
                200.0
            };
            Case {
                labels: vec![label("zone:us-east-a", Some("latency"), FAULT.0, FAULT.1)],
                instance: Box::new(move |t, _, zone, _| {
                    if during(t) && zone == "us-east-a" {
                        Harm {
                            error_rate: 0.0,
                            extra_ms: ms,
                            ..Harm::default()
                        }
                    } else {
                        Harm::default()
                    }
                }),
                zone_probe: Box::new(none_p),
                region_probe: Box::new(none_p),
                noise: 1.0,
            }
        }
        "region-errors" => Case {
            labels: vec![label("region:us-east", Some("errors"), FAULT.0, FAULT.1)],
            instance: Box::new(|t, region, _, _| {
                if during(t) && region == "us-east" {
                    Harm {
                        error_rate: 0.1,
                        extra_ms: 0.0,
                        ..Harm::default()
                    }
                } else {
                    Harm::default()
                }
            }),
            zone_probe: Box::new(|t, src, _| {
                if during(t) && src.starts_with("us-east") {
                    0.1
                } else {
                    0.0
                }
            }),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        "cross-zone-link" => Case {
            labels: vec![label(
                "link:us-east-b->us-east-a",
                Some("unreachable"),
                FAULT.0,
                FAULT.1,
            )],
            instance: Box::new(none_i),
            zone_probe: Box::new(|t, src, dst| {
                if during(t) && src == "us-east-b" && dst == "us-east-a" {
                    1.0
                } else {
                    0.0
                }
            }),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        "inter-region-link" => Case {
            labels: vec![label(
                "link:us-east->eu-west",
                Some("unreachable"),
                FAULT.0,
                FAULT.1,
            )],
            instance: Box::new(none_i),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(|t, src, dst| {
                if during(t) && src == "us-east" && dst == "eu-west" {
                    1.0
                } else {
                    0.0
                }
            }),
            noise: 1.0,
        },
        "slow-growth" => Case {
            // Errors in one zone grow from 0 to 20 % over a minute.
            labels: vec![label("zone:us-east-a", Some("errors"), 20, 80)],
            instance: Box::new(|t, _, zone, _| {
                if zone == "us-east-a" && (20..80).contains(&t) {
                    Harm {
                        error_rate: 0.2 * (t - 20) as f64 / 60.0,
                        extra_ms: 0.0,
                        ..Harm::default()
                    }
                } else {
                    Harm::default()
                }
            }),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        "fast-flapping" => Case {
            // 20 % errors, two seconds on, two seconds off.
            labels: vec![label("zone:us-east-a", Some("errors"), FAULT.0, FAULT.1)],
            instance: Box::new(|t, _, zone, _| {
                if during(t) && zone == "us-east-a" && (t / 2) % 2 == 0 {
                    Harm {
                        error_rate: 0.2,
                        extra_ms: 0.0,
                        ..Harm::default()
                    }
                } else {
                    Harm::default()
                }
            }),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        // The region's store turns writes away; reads keep working.
        "write-path" => Case {
            labels: vec![label(
                "region:us-east",
                Some("write_path"),
                FAULT.0,
                FAULT.1,
            )],
            instance: Box::new(|t, region, _, _| {
                if during(t) && region == "us-east" {
                    Harm {
                        write_error_rate: 1.0,
                        ..Harm::default()
                    }
                } else {
                    Harm::default()
                }
            }),
            zone_probe: Box::new(none_p),
            region_probe: Box::new(none_p),
            noise: 1.0,
        },
        _ => return None,
    })
}

pub const REGIONS: &[(&str, &[&str])] = &[
    ("us-east", &["us-east-a", "us-east-b", "us-east-c"]),
    ("eu-west", &["eu-west-a", "eu-west-b", "eu-west-c"]),
];

/// Generates a case: `seconds` long, each edge sending `rps` requests per
/// second to its own zone's two instances.
pub fn generate(name: &str, seed: u64, seconds: u64, rps: u64) -> Option<Trace> {
    let c = case(name)?;
    let mut rng = Rng::new(seed);
    let mut snapshots = Vec::new();
    for t in 0..seconds {
        for (region, zones) in REGIONS {
            for zone in *zones {
                // Edges' clocks are not aligned: each reports at its own offset.
                let offset =
                    (zone.len() as u64 * 37 + zone.as_bytes()[zone.len() - 1] as u64 * 101) % 900;
                let at_ms = T0_MS + t * 1000 + 50 + offset;
                let mut series = Vec::new();
                for i in 1..=2 {
                    let inst = format!("{zone}-{i}");
                    let h = (c.instance)(t, region, zone, &inst);
                    let noise = c.noise;
                    let jitter = (rng.f() - 0.5) * 0.2 * rps as f64;
                    let requests = ((rps as f64 / 2.0) + jitter).round().max(1.0) as u64;
                    // Background errors, plus in noisy runs rare one-second spikes on one instance.
                    let mut p = 0.002 * noise + h.error_rate;
                    if noise > 1.5 && rng.f() < 0.02 {
                        p += 0.15;
                    }
                    let failures = rng.binomial(requests, p.min(1.0));
                    let mut p99 = 8.0 + rng.f() * 4.0 * noise + h.extra_ms;
                    if noise > 1.5 && rng.f() < 0.02 {
                        p99 += 60.0;
                    }
                    let mut errors = BTreeMap::new();
                    if failures > 0 {
                        errors.insert(ErrorClass::Status5xx.to_string(), failures);
                    }
                    series.push(Series {
                        service: "catalog".into(),
                        route: "get-item".into(),
                        target_zone: zone.to_string(),
                        instance: inst,
                        requests,
                        errors,
                        p50_ms: p99 / 3.0,
                        p90_ms: p99 / 1.5,
                        p99_ms: p99,
                        max_ms: p99 * 1.2,
                        write: false,
                        forwarded_in: false,
                    });
                    // One request in five writes.
                    let writes = (requests / 4).max(1);
                    let wf = rng.binomial(
                        writes,
                        (0.002 * noise + h.error_rate + h.write_error_rate).min(1.0),
                    );
                    series.push(Series {
                        service: "catalog".into(),
                        route: "put-item".into(),
                        target_zone: zone.to_string(),
                        instance: format!("{zone}-{i}"),
                        write: true,
                        forwarded_in: false,
                        requests: writes,
                        errors: if wf > 0 {
                            BTreeMap::from([(ErrorClass::Status5xx.to_string(), wf)])
                        } else {
                            BTreeMap::new()
                        },
                        p50_ms: p99 / 3.0,
                        p90_ms: p99 / 1.5,
                        p99_ms: p99,
                        max_ms: p99 * 1.2,
                    });
                }
                let mut probes = Vec::new();
                for dst in *zones {
                    for i in 1..=2 {
                        let f = (c.zone_probe)(t, zone, dst);
                        let name = format!("{dst}-{i}");
                        let wf = (c.instance)(t, region, dst, &name).write_error_rate;
                        for (route, write, f) in
                            [("get-item", false, f), ("put-item", true, f.max(wf))]
                        {
                            let ok = rng.f() >= f;
                            probes.push(Probe {
                                service: "catalog".into(),
                                route: route.into(),
                                target: ProbeTarget::Instance,
                                name: name.clone(),
                                target_zone: dst.to_string(),
                                target_region: region.to_string(),
                                write,
                                ok,
                                latency_ms: 5.0,
                                error: (!ok).then(|| "status 503".into()),
                            });
                        }
                    }
                }
                for (other, _) in REGIONS.iter().filter(|(r, _)| r != region) {
                    let f = (c.region_probe)(t, region, other);
                    let ok = rng.f() >= f;
                    probes.push(Probe {
                        service: "catalog".into(),
                        route: "get-item".into(),
                        target: ProbeTarget::Edge,
                        name: format!("{other}-edge"),
                        target_zone: String::new(),
                        target_region: other.to_string(),
                        write: false,
                        ok,
                        latency_ms: 30.0,
                        error: (!ok).then(|| "connect".into()),
                    });
                }
                snapshots.push(Snapshot {
                    at_ms,
                    interval_ms: 1000,
                    region: region.to_string(),
                    source_zone: zone.to_string(),
                    series,
                    probes,
                    config_version: None,
                    config_refused: None,
                });
            }
        }
    }
    snapshots.sort_by_key(|s| s.at_ms);
    Some(Trace {
        meta: vec![
            json!({"generator": "synthetic", "case": name, "seed": seed, "seconds": seconds, "rps_per_edge": rps}),
        ],
        snapshots,
        labels: c.labels,
    })
}
