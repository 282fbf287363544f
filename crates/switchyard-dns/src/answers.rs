//! What a service's name is answered with, per client region: the weighted
//! regions steering gives ([`switchyard_steer::regions`], the list the edges
//! forward by) and, for each, the addresses of its edges that are usable.
//! The table is computed whole whenever the controls, the edges' health or
//! the clock (a zonal shift's lease) change, so a query only looks it up.
//! The same table is what a provider pushing records elsewhere reads.

use std::net::IpAddr;

use switchyard_model::{Config, Controls, Service};
use switchyard_steer::Reason;

pub use switchyard_api::dns::{Choice, ServiceAnswers};

/// Whether answering with `c` is a fail-open answer (steering had no region
/// to give the traffic to, or the region had no usable edge).
pub fn failed_open(c: &Choice) -> bool {
    c.fail_open || c.reason == Reason::FailOpen.as_str()
}

/// Every edge's liveness as the DNS server knows it (its own probes).
pub trait EdgeHealth {
    fn alive(&self, zone: &str) -> bool;

    /// The part of `region`'s weight steering gives it, in [0, 1]: below 1
    /// while the region comes back after the probes saw it down
    /// (`dns.return_ramp_s`), so its clients return a few at a time.
    fn return_fraction(&self, _region: &str) -> f64 {
        1.0
    }
}

impl<F: Fn(&str) -> bool> EdgeHealth for F {
    fn alive(&self, zone: &str) -> bool {
        self(zone)
    }
}

/// The addresses DNS hands out for a zone's edge.
pub fn zone_addrs(config: &Config, zone: &str) -> Vec<IpAddr> {
    let over = config
        .dns
        .as_ref()
        .and_then(|d| d.edge_addresses.get(zone))
        .filter(|a| !a.is_empty());
    match over {
        Some(a) => a.clone(),
        None => config
            .zone(zone)
            .map(|z| vec![z.edge.ip()])
            .unwrap_or_default(),
    }
}

/// The region a service steers a client of `client_region` from: that
/// region when the service runs there, else `dns.default_region` when it
/// does, else the first of its preference.
pub fn from_region<'a>(
    config: &Config,
    service: &'a Service,
    client_region: Option<&str>,
) -> Option<&'a str> {
    let default = config
        .dns
        .as_ref()
        .and_then(|d| d.default_region.as_deref());
    switchyard_steer::region::dns_from(service, client_region, default)
}

/// The answers for `service` to a client of `client_region` (`None`: no
/// prefix matched). An edge is usable when it is alive and its zone is not
/// shifted away for the service (weight 0); a region with no usable edge
/// is down for steering, which gives its share to the next region of the
/// service's preference, exactly as the edges would forward it.
pub fn answer_set(
    config: &Config,
    controls: &Controls,
    health: &impl EdgeHealth,
    now_ms: u64,
    service: &Service,
    client_region: Option<&str>,
) -> Vec<Choice> {
    let Some(from) = from_region(config, service, client_region) else {
        return Vec::new();
    };
    let ramped = returning(controls, service, health);
    let steered = ramped.as_ref().unwrap_or(controls);
    let sc = controls.service(&service.name);
    let usable = |region: &str| -> Vec<IpAddr> {
        config
            .region(region)
            .map(|r| {
                r.zones
                    .iter()
                    .filter(|z| {
                        health.alive(&z.name)
                            && switchyard_steer::zone_weight(sc, &z.name, now_ms) > 0.0
                    })
                    .flat_map(|z| zone_addrs(config, &z.name))
                    .collect()
            })
            .unwrap_or_default()
    };
    let up = |region: &str| !usable(region).is_empty();
    switchyard_steer::regions(service, steered, from, None, &up)
        .as_slice()
        .iter()
        .map(|s| {
            let live = usable(s.region);
            let fail_open = live.is_empty();
            let addrs = if fail_open {
                config
                    .region(s.region)
                    .map(|r| {
                        r.zones
                            .iter()
                            .flat_map(|z| zone_addrs(config, &z.name))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                live
            };
            Choice {
                region: s.region.to_string(),
                weight: s.weight,
                reason: s.reason.as_str().to_string(),
                addrs,
                fail_open,
            }
        })
        .collect()
}

/// `controls` with the weight of each of `service`'s regions that is
/// coming back scaled by its fraction; `None` when none is. Steering then
/// treats the region as partly evacuated: its clients whose draw falls
/// under the scaled share get it, so as the share grows the ones already
/// back stay and more join, and no client flips back and forth.
fn returning(controls: &Controls, service: &Service, health: &impl EdgeHealth) -> Option<Controls> {
    let scaled: Vec<(&String, f64)> = service
        .region_preference
        .iter()
        .map(|r| (r, health.return_fraction(r)))
        .filter(|(_, f)| *f < 1.0)
        .collect();
    if scaled.is_empty() {
        return None;
    }
    let mut c = controls.clone();
    let sc = c.services.entry(service.name.clone()).or_default();
    for (region, f) in scaled {
        sc.regions.entry(region.clone()).or_default().weight *= f.clamp(0.0, 1.0);
    }
    Some(c)
}

/// The whole table: every service answered under a DNS zone.
pub fn table(
    config: &Config,
    controls: &Controls,
    health: &impl EdgeHealth,
    now_ms: u64,
    services: &[&Service],
) -> Vec<ServiceAnswers> {
    services
        .iter()
        .map(|svc| ServiceAnswers {
            service: svc.name.clone(),
            ttl: config
                .dns
                .as_ref()
                .map_or(switchyard_model::dns::DEFAULT_TTL_S, |d| {
                    d.service_ttl.get(&svc.name).copied().unwrap_or(d.ttl)
                }),
            by_region: config
                .regions
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        answer_set(config, controls, health, now_ms, svc, Some(&r.name)),
                    )
                })
                .collect(),
            default: answer_set(config, controls, health, now_ms, svc, None),
        })
        .collect()
}

/// The choice a client with draw `x` ([`switchyard_steer::client_draw`],
/// the edges' draw too) gets from a list.
pub fn pick(choices: &[Choice], x: f64) -> Option<&Choice> {
    switchyard_steer::weighted_at(choices, |c| c.weight, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::{RegionControl, RegionState, ZoneControl};

    const CONFIG: &str = r#"
[[region]]
name = "r1"
zone = [
  { name = "r1a", edge = "127.1.1.1:8080", admin = "127.1.1.1:9901" },
  { name = "r1b", edge = "127.1.2.1:8080", admin = "127.1.2.1:9901" },
]
[[region]]
name = "r2"
zone = [{ name = "r2a", edge = "127.2.1.1:8080", admin = "127.2.1.1:9901" }]

[[service]]
name = "svc"
hosts = ["svc.example.test"]
min_healthy = 0.5
instance = [{ name = "i1", zone = "r1a", addr = "127.1.1.11:8081" }]

[dns]
default_region = "r2"
edge_addresses = { r2a = ["192.0.2.7", "2001:db8::7"] }
[[dns.server]]
name = "ns1"
listen = ["127.0.0.1:5353"]
admin = "127.0.0.1:9953"
[[dns.zone]]
apex = "example.test"
ns = ["ns1.example.test"]
ns_addresses = { "ns1.example.test" = ["127.0.0.53"] }
"#;

    fn config() -> Config {
        Config::from_toml(CONFIG, |_| None).unwrap()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn set(c: &Controls, alive: impl Fn(&str) -> bool, region: Option<&str>) -> Vec<Choice> {
        let cfg = config();
        answer_set(&cfg, c, &alive, 0, cfg.service("svc").unwrap(), region)
    }

    fn with(f: impl FnOnce(&mut switchyard_model::ServiceControls)) -> Controls {
        let mut c = Controls::default();
        f(c.services.entry("svc".into()).or_default());
        c
    }

    #[test]
    fn clients_get_their_regions_edges_and_unplaced_ones_the_default_region() {
        let none = Controls::default();
        let r1 = set(&none, |_: &str| true, Some("r1"));
        assert_eq!(r1.len(), 1);
        assert_eq!(r1[0].addrs, ips(&["127.1.1.1", "127.1.2.1"]));
        assert_eq!(r1[0].reason, "local");
        let other = set(&none, |_: &str| true, None);
        assert_eq!(other[0].region, "r2");
        assert_eq!(other[0].addrs, ips(&["192.0.2.7", "2001:db8::7"]));
    }

    #[test]
    fn dead_or_shifted_edges_are_left_out_and_a_region_without_any_is_evacuated() {
        let none = Controls::default();
        let r1 = set(&none, |z: &str| z != "r1a", Some("r1"));
        assert_eq!(r1[0].addrs, ips(&["127.1.2.1"]));
        let shifted = with(|s| {
            s.zones.insert(
                "r1b".into(),
                ZoneControl {
                    weight: 0.0,
                    ..Default::default()
                },
            );
        });
        let r1 = set(&shifted, |_: &str| true, Some("r1"));
        assert_eq!(r1[0].addrs, ips(&["127.1.1.1"]));
        // Both of r1's edges gone: its clients go to r2, as the edges would send them.
        let r1 = set(&none, |z: &str| !z.starts_with("r1"), Some("r1"));
        assert_eq!(
            (r1[0].region.as_str(), r1[0].reason.as_str()),
            ("r2", "evacuation")
        );
    }

    /// Every edge alive; `r1` coming back at `fraction`.
    struct Returning {
        fraction: f64,
    }

    impl EdgeHealth for Returning {
        fn alive(&self, _zone: &str) -> bool {
            true
        }
        fn return_fraction(&self, region: &str) -> f64 {
            if region == "r1" {
                self.fraction
            } else {
                1.0
            }
        }
    }

    /// Client `i`'s draw: one client per /24.
    fn draw(i: u32) -> f64 {
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
        switchyard_steer::client_draw("svc", addr.into(), 24)
    }

    fn r1_clients(c: &Controls, fraction: f64) -> Vec<bool> {
        let cfg = config();
        let set = answer_set(
            &cfg,
            c,
            &Returning { fraction },
            0,
            cfg.service("svc").unwrap(),
            Some("r1"),
        );
        (0..4_000u32)
            .map(|i| pick(&set, draw(i)).unwrap().region == "r1")
            .collect()
    }

    #[test]
    fn a_returning_region_gets_its_clients_back_by_its_fraction_each_for_good() {
        let none = Controls::default();
        let mut before = vec![false; 4_000];
        for fraction in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0] {
            let now = r1_clients(&none, fraction);
            let share = now.iter().filter(|b| **b).count() as f64 / now.len() as f64;
            assert!(
                (share - fraction).abs() < 0.03,
                "fraction {fraction}: r1 has {share}"
            );
            // A client back in r1 stays there as the ramp goes on.
            for (i, (was, is)) in before.iter().zip(&now).enumerate() {
                assert!(!was || *is, "client {i} left r1 again at {fraction}");
            }
            before = now;
        }
        // The rest go where r1's edges would send them: r2.
        let cfg = config();
        let set = answer_set(
            &cfg,
            &none,
            &Returning { fraction: 0.0 },
            0,
            cfg.service("svc").unwrap(),
            Some("r1"),
        );
        assert_eq!(
            (set.len(), set[0].region.as_str(), set[0].reason.as_str()),
            (1, "r2", "evacuation")
        );
    }

    #[test]
    fn a_returning_region_scales_the_weight_the_controls_give_it() {
        let half = with(|s| {
            s.regions.insert(
                "r1".into(),
                RegionControl {
                    weight: 0.5,
                    ..Default::default()
                },
            );
        });
        let kept = r1_clients(&half, 0.5).iter().filter(|b| **b).count();
        let share = kept as f64 / 4_000.0;
        assert!((0.22..0.28).contains(&share), "r1 has {share}");
        // The controls themselves are left as they were.
        assert_eq!(half.service("svc").unwrap().regions["r1"].weight, 0.5);
        // Health without a ramp (a plain closure) leaves every weight whole.
        let full = set(&Controls::default(), |_: &str| true, Some("r1"));
        assert_eq!((full.len(), full[0].weight), (1, 1.0));
    }

    #[test]
    fn nothing_usable_anywhere_answers_every_edge_of_the_clients_region() {
        let none = Controls::default();
        let r1 = set(&none, |_: &str| false, Some("r1"));
        assert_eq!(r1.len(), 1);
        assert!(r1[0].fail_open && failed_open(&r1[0]));
        assert_eq!(r1[0].addrs, ips(&["127.1.1.1", "127.1.2.1"]));
    }

    #[test]
    fn an_out_region_is_never_answered_and_a_weight_splits_the_answers() {
        let out = with(|s| {
            s.regions.insert(
                "r1".into(),
                RegionControl {
                    state: RegionState::Out,
                    ..Default::default()
                },
            );
        });
        let r1 = set(&out, |_: &str| true, Some("r1"));
        assert_eq!(
            r1.iter().map(|c| c.region.as_str()).collect::<Vec<_>>(),
            ["r2"]
        );
        let quarter = with(|s| {
            s.regions.insert(
                "r1".into(),
                RegionControl {
                    weight: 0.25,
                    ..Default::default()
                },
            );
        });
        let r1 = set(&quarter, |_: &str| true, Some("r1"));
        let n = 20_000;
        let kept = (0..n)
            .filter(|i| pick(&r1, draw(*i)).unwrap().region == "r1")
            .count();
        let share = kept as f64 / n as f64;
        assert!((0.23..0.27).contains(&share), "kept {share}");
    }
}
