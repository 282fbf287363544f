//! Active probes — the heartbeat on every API, not only `/health`. Every
//! interval the edge calls each route's heartbeat endpoint on every instance
//! of its region, and one heartbeat through every other region's edges (the
//! path forwarded requests take). Results go into the signal snapshot, so
//! every zone is seen from every other zone and every region from every other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use switchyard_model::signals::{Probe, ProbeTarget};
use switchyard_model::{RouteKind, Service};

use crate::health_check::http_get;
use crate::proxy::Dest;
use crate::state::Edge;

/// The paths probed on each instance: every route's heartbeat, or the
/// service's health path when no route has one.
fn heartbeat_paths(svc: &Service) -> Vec<(String, String)> {
    let hb: Vec<(String, String)> = svc
        .routes
        .iter()
        .filter_map(|r| r.heartbeat_path.clone().map(|p| (r.name.clone(), p)))
        .collect();
    if hb.is_empty() {
        vec![("health".into(), svc.health_path.clone())]
    } else {
        hb
    }
}

async fn probe(
    edge: &Edge,
    svc: &Service,
    addr: SocketAddr,
    path: &str,
    forwarded_from: Option<&str>,
    forward_secret: Option<&str>,
) -> (bool, f64, Option<String>) {
    let mut extra = Vec::new();
    if let Some(r) = forwarded_from {
        extra.push((crate::proxy::FORWARDED, r));
        if let Some(secret) = forward_secret {
            extra.push((crate::proxy::FORWARD_AUTH, secret));
        }
    }
    // Instances with their service's TLS, peer edges with the peer TLS:
    // each probe travels as requests to it do.
    let snap = edge.snapshot();
    let tls = match forwarded_from {
        None => crate::proxy::instance_tls(edge, svc),
        Some(_) => crate::proxy::peer_tls(edge, &snap),
    };
    let tls = match tls {
        Ok(t) => t,
        Err(_) => return (false, 0.0, Some("tls: not_loaded".into())),
    };
    let dest = Dest {
        addr,
        tls: tls.as_ref(),
        to_edge: forwarded_from.is_some(),
    };
    let t0 = Instant::now();
    let timeout = svc.timeouts.header.min(Duration::from_secs(1)) + svc.timeouts.connect;
    let r = http_get(
        edge,
        svc,
        dest,
        path,
        "switchyard-edge-probe",
        &extra,
        timeout,
    )
    .await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    (r.is_ok(), ms, r.err())
}

/// One probe to send this interval.
struct ProbeJob {
    svc: Arc<Service>,
    addr: SocketAddr,
    route: String,
    path: String,
    target: ProbeTarget,
    name: String,
    zone: String,
    /// Set for probes through another region's edges.
    remote_region: Option<String>,
}

/// Probes forever, once per signal interval, spreading the probes over the
/// interval so they do not arrive as a burst.
pub async fn probe_loop(edge: Arc<Edge>) {
    loop {
        let snap = edge.snapshot();
        let every = snap.config.edge.signal_interval;
        let mut jobs: Vec<ProbeJob> = Vec::new();
        for rt in &snap.services {
            let svc = Arc::new(rt.svc.clone());
            let paths = heartbeat_paths(&svc);
            for inst in &rt.local {
                for (route, path) in &paths {
                    jobs.push(ProbeJob {
                        svc: svc.clone(),
                        addr: inst.meta.addr,
                        route: route.clone(),
                        path: path.clone(),
                        target: ProbeTarget::Instance,
                        name: inst.meta.name.clone(),
                        zone: inst.meta.zone.clone(),
                        remote_region: None,
                    });
                }
            }
            let (route, path) = paths[0].clone();
            for region in svc.region_preference.iter().filter(|r| **r != edge.region) {
                // Probed the way forwarded requests travel, so a cut link shows.
                let edges = switchyard_steer::forward_edges(&snap.config, &edge.region, region);
                if edges.is_empty() {
                    continue;
                }
                let ep = edges
                    .get(rand::thread_rng().gen_range(0..edges.len()))
                    .expect("the index is within the edges");
                let addr = crate::proxy::peer_addr(&snap, ep, snap.config.edge.peer_tls.is_some());
                jobs.push(ProbeJob {
                    svc: svc.clone(),
                    addr,
                    route: route.clone(),
                    path: path.clone(),
                    target: ProbeTarget::Edge,
                    name: ep.zone.map_or_else(|| ep.addr.to_string(), str::to_string),
                    zone: String::new(),
                    remote_region: Some(region.clone()),
                });
            }
        }
        if jobs.is_empty() {
            tokio::time::sleep(every).await;
            continue;
        }
        let gap = every / jobs.len() as u32;
        let own_region = edge.region.clone();
        let secret = snap.config.edge.forward_secret.clone();
        for ProbeJob {
            svc,
            addr,
            route,
            path,
            target,
            name,
            zone,
            remote_region,
        } in jobs
        {
            let edge = edge.clone();
            let own_region = own_region.clone();
            let secret = secret.clone();
            tokio::spawn(async move {
                let forwarded = remote_region.as_ref().map(|_| own_region.as_str());
                let (ok, latency_ms, error) =
                    probe(&edge, &svc, addr, &path, forwarded, secret.as_deref()).await;
                let write = svc
                    .routes
                    .iter()
                    .any(|r| r.name == route && r.kind == RouteKind::Write);
                edge.signals.record_probe(Probe {
                    service: svc.name.clone(),
                    route,
                    target,
                    name,
                    target_zone: zone,
                    target_region: remote_region.unwrap_or(own_region),
                    write,
                    ok,
                    latency_ms,
                    error,
                });
            });
            tokio::time::sleep(gap).await;
        }
    }
}
