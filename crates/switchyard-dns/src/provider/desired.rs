//! The record sets an outside DNS should hold, from the same decisions the
//! server answers with.
//!
//! An outside zone has no geo views and no weights: every resolver gets the
//! same set. So each service name gets what `switchyard dns` answers a
//! client no `[[dns.geo]]` prefix places (the default answer set,
//! [`answers::answer_set`] with no client region): the edges of every
//! region in it whose share is above 0. Normally that is the default
//! region's usable edges; after a failover or with the region down, the
//! next region's; during a gradual evacuation both regions' edges (the
//! outside DNS spreads clients by address, not by the controls' shares);
//! a region `out` or weighted 0 is never in it. When steering fails open,
//! the set is the fail-open answer, as the server's.

use std::collections::BTreeSet;
use std::net::IpAddr;

use switchyard_model::{Config, Controls, Service};

use super::{Desired, DnsName, InvalidRecords};
use crate::answers::{self, Choice, EdgeHealth};

/// The addresses one default answer set puts in an outside zone.
pub fn addresses(choices: &[Choice]) -> BTreeSet<IpAddr> {
    let weighted: Vec<&Choice> = choices.iter().filter(|c| c.weight > 0.0).collect();
    // Steering gives every region a share or none; all-zero shares would
    // be a steering bug, and the server would answer from them regardless.
    let from = if weighted.is_empty() {
        choices.iter().collect()
    } else {
        weighted
    };
    from.into_iter()
        .flat_map(|c| c.addrs.iter().copied())
        .collect()
}

/// Every (service, host name) with the host inside `zone`, in config order.
pub fn names_in<'a>(config: &'a Config, zone: &DnsName) -> Vec<(&'a Service, DnsName)> {
    config
        .services
        .iter()
        .flat_map(|s| {
            s.hosts
                .iter()
                .filter_map(|h| DnsName::parse(h).ok())
                .filter(|n| n.is_in(zone))
                .map(move |n| (s, n))
        })
        .collect()
}

/// What `zone` should hold now. A name whose answer has no address at all
/// (a service with no region) is left unmanaged rather than emptied: an
/// empty set would take the name off the internet.
pub fn desired(
    config: &Config,
    controls: &Controls,
    health: &impl EdgeHealth,
    now_ms: u64,
    zone: &DnsName,
) -> Result<Desired, InvalidRecords> {
    let mut d = Desired::new(zone.as_str())?;
    for (svc, name) in names_in(config, zone) {
        let addrs = addresses(&answers::answer_set(
            config, controls, health, now_ms, svc, None,
        ));
        if addrs.is_empty() {
            tracing::warn!(service = %svc.name, name = %name, "no address to push; leaving the name as it is");
            continue;
        }
        let ttl = config
            .dns
            .as_ref()
            .map_or(switchyard_model::dns::DEFAULT_TTL_S, |d| {
                d.service_ttl.get(&svc.name).copied().unwrap_or(d.ttl)
            });
        d.set(name.as_str(), ttl, addrs)?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{AddrType, RrKey};
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
hosts = ["svc.example.test", "svc.other.test", "svc.example.test:8443"]
min_healthy = 0.5
instance = [{ name = "i1", zone = "r1a", addr = "127.1.1.11:8081" }]

[dns]
service_ttl_s = { svc = 20 }
edge_addresses = { r2a = ["192.0.2.7", "2001:db8::7"] }
[[dns.server]]
name = "ns1"
listen = ["127.0.0.1:5353"]
admin = "127.0.0.1:9953"
[[dns.zone]]
apex = "other.test"
ns = ["ns1.elsewhere.test"]
"#;

    fn config() -> Config {
        Config::from_toml(CONFIG, |_| None).unwrap()
    }

    fn zone() -> DnsName {
        DnsName::parse("example.test").unwrap()
    }

    /// (A addresses, AAAA addresses) of svc.example.test, with their TTL.
    fn sets(c: &Controls, alive: impl Fn(&str) -> bool) -> (Vec<String>, Vec<String>, u32) {
        let d = desired(&config(), c, &alive, 0, &zone()).unwrap();
        assert_eq!(
            d.names.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["svc.example.test."],
            "only the names inside the zone, a host with a port is not a DNS name"
        );
        let get = |t| {
            d.sets
                .get(&RrKey {
                    name: DnsName::parse("svc.example.test").unwrap(),
                    rtype: t,
                })
                .map(|s| (s.addrs.iter().map(|a| a.to_string()).collect(), s.ttl))
                .unwrap_or((Vec::new(), 0))
        };
        let (a, ta) = get(AddrType::A);
        let (aaaa, t6) = get(AddrType::Aaaa);
        (a, aaaa, ta.max(t6))
    }

    fn with(f: impl FnOnce(&mut switchyard_model::ServiceControls)) -> Controls {
        let mut c = Controls::default();
        f(c.services.entry("svc".into()).or_default());
        c
    }

    #[test]
    fn the_zone_gets_the_default_clients_answer() {
        // No default_region: the first of the preference, r1, both zones.
        let (a, aaaa, ttl) = sets(&Controls::default(), |_: &str| true);
        assert_eq!(a, ["127.1.1.1", "127.1.2.1"]);
        assert!(aaaa.is_empty());
        assert_eq!(ttl, 20, "the service's own TTL");
        // A dead edge is left out, as the server leaves it out.
        let (a, _, _) = sets(&Controls::default(), |z: &str| z != "r1b");
        assert_eq!(a, ["127.1.1.1"]);
    }

    #[test]
    fn a_region_out_or_down_drops_out_and_the_next_region_is_pushed() {
        let out = with(|s| {
            s.regions.insert(
                "r1".into(),
                RegionControl {
                    state: RegionState::Out,
                    ..Default::default()
                },
            );
        });
        let (a, aaaa, _) = sets(&out, |_: &str| true);
        assert_eq!(a, ["192.0.2.7"]);
        assert_eq!(aaaa, ["2001:db8::7"]);
        // Every edge of r1 dead: r1 is down for steering, r2 answers.
        let (a, _, _) = sets(&Controls::default(), |z: &str| z.starts_with("r2"));
        assert_eq!(a, ["192.0.2.7"]);
        // Both r1 zones shifted away (weight 0): the same.
        let shifted = with(|s| {
            for z in ["r1a", "r1b"] {
                s.zones.insert(
                    z.into(),
                    ZoneControl {
                        weight: 0.0,
                        ..Default::default()
                    },
                );
            }
        });
        let (a, _, _) = sets(&shifted, |_: &str| true);
        assert_eq!(a, ["192.0.2.7"]);
    }

    #[test]
    fn a_gradual_evacuation_pushes_both_regions_and_zero_shares_none() {
        let c = |w: f64| Choice {
            region: "r".into(),
            weight: w,
            reason: "local".into(),
            addrs: vec![format!("10.0.0.{}", (w * 10.0) as u8).parse().unwrap()],
            fail_open: false,
        };
        let got: Vec<String> = addresses(&[c(0.7), c(0.3), c(0.0)])
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.3", "10.0.0.7"]);
        assert_eq!(addresses(&[c(0.0)]).len(), 1, "all zero: answered as is");
    }
}
