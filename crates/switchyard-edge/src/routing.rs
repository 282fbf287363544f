//! Where a request goes: this region or another, and which instance. The
//! decisions are plain functions over the instances' state and the controls,
//! with the randomness passed in, so they can be tested without sockets.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::Rng;
use serde::Serialize;
use switchyard_model::{Controls, Service, ServiceControls};

use crate::outlier::InstanceState;

/// How the candidate set was formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Healthy instances in zones that are not shifted away.
    Normal,
    /// Honouring the zonal shift would leave too little; the shift is
    /// ignored (fails open) but ejected instances stay out.
    ShiftFailedOpen,
    /// Even ignoring shifts, healthy instances are below the floor: route to
    /// every instance rather than overload the few that are left.
    Panic,
}

#[derive(Debug)]
pub struct Plan<'a> {
    pub mode: Mode,
    pub floor: usize,
    pub serving: usize,
    pub candidates: Vec<&'a Arc<InstanceState>>,
    /// Zone weights used for choosing between zones (all 1 outside `Normal`).
    weights: Vec<(&'a str, f64)>,
}

impl Plan<'_> {
    pub fn weight(&self, zone: &str) -> f64 {
        self.weights
            .iter()
            .find(|(z, _)| *z == zone)
            .map(|(_, w)| *w)
            .unwrap_or(0.0)
    }
}

pub fn zone_weight(sc: Option<&ServiceControls>, zone: &str, now_ms: u64) -> f64 {
    sc.and_then(|c| c.zones.get(zone))
        .map(|z| z.effective_weight(now_ms))
        .unwrap_or(1.0)
}

/// The capacity guard lives here: whatever ejection and shifts say, the plan
/// never offers fewer than the service's floor of instances in the region.
/// Runs on every request, so it avoids allocating beyond two small vectors.
pub fn plan<'a>(
    local: &'a [Arc<InstanceState>],
    floor: usize,
    sc: Option<&ServiceControls>,
    now_ms: u64,
) -> Plan<'a> {
    let mut weights: Vec<(&'a str, f64)> = Vec::with_capacity(4);
    for i in local {
        let z = i.meta.zone.as_str();
        if !weights.iter().any(|(x, _)| *x == z) {
            weights.push((z, zone_weight(sc, z, now_ms)));
        }
    }
    let w = |z: &str| {
        weights
            .iter()
            .find(|(x, _)| *x == z)
            .map(|(_, w)| *w)
            .unwrap_or(0.0)
    };
    let need = floor.max(1);
    let serving: Vec<&'a Arc<InstanceState>> = local
        .iter()
        .filter(|i| i.is_healthy() && w(&i.meta.zone) > 0.0)
        .collect();
    let n_serving = serving.len();
    if n_serving >= need {
        return Plan {
            mode: Mode::Normal,
            floor,
            serving: n_serving,
            candidates: serving,
            weights,
        };
    }
    for (_, w) in weights.iter_mut() {
        *w = 1.0;
    }
    let healthy: Vec<&'a Arc<InstanceState>> = local.iter().filter(|i| i.is_healthy()).collect();
    if healthy.len() >= need {
        return Plan {
            mode: Mode::ShiftFailedOpen,
            floor,
            serving: n_serving,
            candidates: healthy,
            weights,
        };
    }
    Plan {
        mode: Mode::Panic,
        floor,
        serving: n_serving,
        candidates: local.iter().collect(),
        weights,
    }
}

/// Power of two choices on in-flight requests.
fn p2c<R: Rng>(c: &[&Arc<InstanceState>], rng: &mut R) -> Option<Arc<InstanceState>> {
    match c.len() {
        0 => None,
        1 => Some(c[0].clone()),
        n => {
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ia, ib) = (
                c[a].inflight.load(Ordering::Relaxed),
                c[b].inflight.load(Ordering::Relaxed),
            );
            Some(if ib < ia { c[b].clone() } else { c[a].clone() })
        }
    }
}

/// Picks an instance: the own zone first (with the share its weight gives
/// it), otherwise another zone chosen by weight times size, then power of two
/// choices inside the zone. A retry passes the instance that failed, and goes
/// to another zone where one has candidates.
pub fn choose<R: Rng>(
    plan: &Plan,
    own_zone: &str,
    failed: Option<&Arc<InstanceState>>,
    rng: &mut R,
) -> Option<Arc<InstanceState>> {
    let cands: Vec<&Arc<InstanceState>> = plan
        .candidates
        .iter()
        .copied()
        .filter(|c| failed.is_none_or(|f| !Arc::ptr_eq(c, f)))
        .collect();
    if cands.is_empty() {
        return None;
    }
    let avoid_zone = failed.map(|f| f.meta.zone.as_str()).unwrap_or("");
    let own: Vec<_> = cands
        .iter()
        .copied()
        .filter(|c| c.meta.zone == own_zone)
        .collect();
    let own_w = plan.weight(own_zone);
    if !own.is_empty() && own_zone != avoid_zone && (own_w >= 1.0 || rng.gen::<f64>() < own_w) {
        return p2c(&own, rng);
    }
    // Other zones, weighted; skip the failed one's zone when there is a choice.
    let mut zones: BTreeMap<&str, Vec<&Arc<InstanceState>>> = BTreeMap::new();
    for c in &cands {
        if c.meta.zone != own_zone || own_zone == avoid_zone {
            zones.entry(c.meta.zone.as_str()).or_default().push(c);
        }
    }
    if zones.len() > 1 || (zones.len() == 1 && !zones.contains_key(avoid_zone)) {
        zones.remove(avoid_zone);
    }
    if zones.is_empty() {
        return p2c(&cands, rng);
    }
    let total: f64 = zones
        .iter()
        .map(|(z, v)| plan.weight(z) * v.len() as f64)
        .sum();
    if total <= 0.0 {
        return p2c(&cands, rng);
    }
    let mut x = rng.gen::<f64>() * total;
    for (z, v) in &zones {
        x -= plan.weight(z) * v.len() as f64;
        if x <= 0.0 {
            return p2c(v, rng);
        }
    }
    p2c(zones.values().last().expect("zones is not empty"), rng)
}

/// Where a request is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local,
    /// Forward to this region's edges.
    Region {
        name: String,
        reason: ForwardReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardReason {
    /// The request's home region is elsewhere.
    Home,
    /// This region is out (or partly evacuated) for the service.
    Evacuation,
}

impl ForwardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardReason::Home => "home",
            ForwardReason::Evacuation => "evacuation",
        }
    }
}

/// Region-level steering. A request already forwarded once is always served
/// where it lands, so two edges can never bounce it between them.
pub fn target<R: Rng>(
    svc: &Service,
    controls: &Controls,
    local_region: &str,
    home: Option<&str>,
    already_forwarded: bool,
    rng: &mut R,
) -> Target {
    if already_forwarded {
        return Target::Local;
    }
    let sc = controls.service(&svc.name);
    let rc = |r: &str| {
        sc.and_then(|c| c.regions.get(r))
            .cloned()
            .unwrap_or_default()
    };
    let local = rc(local_region);
    if let Some(h) = home {
        if h != local_region
            && svc.region_preference.iter().any(|r| r == h)
            && !local.failover
            && rc(h).local_share() > 0.0
        {
            return Target::Region {
                name: h.to_string(),
                reason: ForwardReason::Home,
            };
        }
    }
    let share = local.local_share();
    if share >= 1.0 || rng.gen::<f64>() < share {
        return Target::Local;
    }
    match svc
        .region_preference
        .iter()
        .find(|r| r.as_str() != local_region && rc(r).local_share() > 0.0)
    {
        Some(r) => Target::Region {
            name: r.clone(),
            reason: ForwardReason::Evacuation,
        },
        // Every other region is out too: serving here beats serving nobody.
        None => Target::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outlier::EjectReason;
    use rand::{rngs::StdRng, SeedableRng};
    use std::time::Instant;
    use switchyard_model::{EjectionSettings, Instance, ZoneControl};

    fn instances() -> Vec<Arc<InstanceState>> {
        ["a", "a", "b", "b", "c", "c"]
            .iter()
            .enumerate()
            .map(|(i, z)| {
                Arc::new(InstanceState::new(Instance {
                    name: format!("{z}{i}"),
                    zone: z.to_string(),
                    region: "r".into(),
                    addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                }))
            })
            .collect()
    }

    fn shift(zone: &str) -> ServiceControls {
        let mut sc = ServiceControls::default();
        sc.zones.insert(
            zone.into(),
            ZoneControl {
                weight: 0.0,
                ..Default::default()
            },
        );
        sc
    }

    #[test]
    fn own_zone_first_and_shifted_zone_gets_nothing() {
        let local = instances();
        let mut rng = StdRng::seed_from_u64(7);
        let p = plan(&local, 3, None, 0);
        for _ in 0..100 {
            assert_eq!(choose(&p, "a", None, &mut rng).unwrap().meta.zone, "a");
        }
        let sc = shift("a");
        let p = plan(&local, 3, Some(&sc), 0);
        assert_eq!(p.mode, Mode::Normal);
        for _ in 0..100 {
            assert_ne!(choose(&p, "a", None, &mut rng).unwrap().meta.zone, "a");
        }
    }

    #[test]
    fn shift_fails_open_and_ejection_panics_at_the_floor() {
        let local = instances();
        let s = EjectionSettings::default();
        let now = Instant::now();
        let sc = shift("a");
        // Four of six healthy, two of them shifted away: 2 serving < floor 3.
        local[2].eject(EjectReason::Consecutive5xx, now, &s);
        local[3].eject(EjectReason::Consecutive5xx, now, &s);
        let p = plan(&local, 3, Some(&sc), 0);
        assert_eq!(p.mode, Mode::ShiftFailedOpen);
        assert_eq!(p.candidates.len(), 4);
        local[4].eject(EjectReason::Consecutive5xx, now, &s);
        local[5].eject(EjectReason::Consecutive5xx, now, &s);
        let p = plan(&local, 3, Some(&sc), 0);
        assert_eq!(p.mode, Mode::Panic);
        assert_eq!(p.candidates.len(), 6);
    }

    #[test]
    fn a_retry_goes_to_another_zone() {
        let local = instances();
        let mut rng = StdRng::seed_from_u64(1);
        let p = plan(&local, 3, None, 0);
        let first = choose(&p, "a", None, &mut rng).unwrap();
        for _ in 0..50 {
            let second = choose(&p, "a", Some(&first), &mut rng).unwrap();
            assert_ne!(second.meta.zone, "a");
        }
    }

    #[test]
    fn an_expired_shift_no_longer_applies() {
        let local = instances();
        let mut sc = shift("a");
        sc.zones.get_mut("a").unwrap().expires_at_ms = Some(1_000);
        let mut rng = StdRng::seed_from_u64(3);
        let p = plan(&local, 3, Some(&sc), 2_000);
        assert_eq!(choose(&p, "a", None, &mut rng).unwrap().meta.zone, "a");
    }
}
