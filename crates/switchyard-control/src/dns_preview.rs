//! What an operation does to the DNS answers, for its preview: the regions
//! `switchyard dns` answers each kind of client with, before and after, by
//! the steering library the DNS servers answer with. The control plane
//! does not see the DNS servers' own probes, so every edge counts as alive
//! here; a zone shifted to weight 0 does not.

use switchyard_api::DnsMove;
use switchyard_model::{Config, Controls, Service};

/// Every answer of `services` that differs between `cur` and `proposed`;
/// empty without a `[dns]` section.
pub fn moves(
    config: &Config,
    cur: &Controls,
    proposed: &Controls,
    services: &[&Service],
    now_ms: u64,
) -> Vec<DnsMove> {
    let Some(dns) = &config.dns else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for svc in services {
        let names = names(config, svc);
        if names.is_empty() {
            continue;
        }
        let clients = std::iter::once(None).chain(config.regions.iter().map(|r| Some(&r.name)));
        for client in clients {
            let Some(from) = switchyard_steer::region::dns_from(
                svc,
                client.map(String::as_str),
                dns.default_region.as_deref(),
            ) else {
                continue;
            };
            let before = answered(config, cur, svc, from, now_ms);
            let after = answered(config, proposed, svc, from, now_ms);
            if before != after {
                out.push(DnsMove {
                    service: svc.name.clone(),
                    names: names.clone(),
                    client_region: client.cloned(),
                    dropped: before
                        .iter()
                        .filter(|r| !after.contains(r))
                        .cloned()
                        .collect(),
                    before,
                    after,
                });
            }
        }
    }
    out
}

/// The service's names answered by a `[[dns.zone]]` or pushed to a
/// `[[dns.push]]` zone.
fn names(config: &Config, svc: &Service) -> Vec<String> {
    let Some(dns) = &config.dns else {
        return Vec::new();
    };
    let norm = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
    let pushed: Vec<String> = dns
        .push
        .iter()
        .filter_map(|p| p.zone.as_deref().map(norm))
        .collect();
    svc.hosts
        .iter()
        .map(|h| norm(h))
        .filter(|h| !h.contains(':') && !h.contains('*'))
        .filter(|h| {
            dns.zones.iter().any(|z| z.holds(h))
                || pushed
                    .iter()
                    .any(|z| h == z || h.ends_with(&format!(".{z}")))
        })
        .collect()
}

fn answered(
    config: &Config,
    controls: &Controls,
    svc: &Service,
    from: &str,
    now_ms: u64,
) -> Vec<String> {
    let sc = controls.service(&svc.name);
    let up = |region: &str| {
        config.region(region).is_some_and(|r| {
            r.zones
                .iter()
                .any(|z| switchyard_steer::zone_weight(sc, &z.name, now_ms) > 0.0)
        })
    };
    switchyard_steer::regions(svc, controls, from, None, &up)
        .as_slice()
        .iter()
        .filter(|s| s.weight > 0.0)
        .map(|s| s.region.to_string())
        .collect()
}
