//! Inside a region: the capacity guard, then the zone and the instance a
//! request goes to. Plain functions over whatever the caller keeps per
//! instance (anything that is a [`Backend`]), with the clock and the
//! randomness passed in, so the guard that every removal of capacity stops
//! at is tested without sockets and read by the edge without copying.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::Rng;
use switchyard_model::ServiceControls;

/// What steering needs to know of one instance. The edge implements it on
/// its live per-instance state, so a plan borrows that state in place.
pub trait Backend {
    fn zone(&self) -> &str;
    /// In rotation: neither ejected nor waiting for its re-check, nor failing
    /// its active health checks.
    fn is_healthy(&self) -> bool;
    /// Out of rotation by outlier ejection, which is what the ejection cap
    /// counts; an instance out because its health checks fail is not.
    fn ejected(&self) -> bool {
        !self.is_healthy()
    }
    /// Requests in flight, for power of two choices.
    fn inflight(&self) -> u32;
}

impl<T: Backend + ?Sized> Backend for Arc<T> {
    fn zone(&self) -> &str {
        (**self).zone()
    }
    fn is_healthy(&self) -> bool {
        (**self).is_healthy()
    }
    fn ejected(&self) -> bool {
        (**self).ejected()
    }
    fn inflight(&self) -> u32 {
        (**self).inflight()
    }
}

/// How the candidate set was formed (one type with the edge's status).
pub use switchyard_model::CapacityMode as Mode;

#[derive(Debug)]
pub struct Plan<'a, B> {
    pub mode: Mode,
    pub floor: usize,
    /// Healthy instances in zones not shifted away, whatever the mode.
    pub serving: usize,
    pub candidates: Vec<&'a B>,
    /// Zone weights used for choosing between zones (all 1 outside `Normal`).
    weights: Vec<(&'a str, f64)>,
}

impl<B> Plan<'_, B> {
    pub fn weight(&self, zone: &str) -> f64 {
        self.weights
            .iter()
            .find(|(z, _)| *z == zone)
            .map(|(_, w)| *w)
            .unwrap_or(0.0)
    }
}

/// A zone's weight now: 1 unless shifted, and 1 again once the shift's
/// lease has expired, even if no one is left to lift it.
pub fn zone_weight(sc: Option<&ServiceControls>, zone: &str, now_ms: u64) -> f64 {
    sc.and_then(|c| c.zones.get(zone))
        .map(|z| z.effective_weight(now_ms))
        .unwrap_or(1.0)
}

/// The capacity guard lives here: whatever ejection and shifts say, the plan
/// never offers fewer than the service's floor of instances in the region.
/// Runs on every request, so it avoids allocating beyond two small vectors.
pub fn plan<'a, B: Backend>(
    local: &'a [B],
    floor: usize,
    sc: Option<&ServiceControls>,
    now_ms: u64,
) -> Plan<'a, B> {
    let mut plan = Plan {
        mode: Mode::Normal,
        floor,
        serving: 0,
        candidates: Vec::new(),
        weights: Vec::with_capacity(4),
    };
    for i in local {
        let z = i.zone();
        if !plan.weights.iter().any(|(x, _)| *x == z) {
            plan.weights.push((z, zone_weight(sc, z, now_ms)));
        }
    }
    let need = floor.max(1);
    plan.candidates = local
        .iter()
        .filter(|i| i.is_healthy() && plan.weight(i.zone()) > 0.0)
        .collect();
    plan.serving = plan.candidates.len();
    if plan.serving >= need {
        return plan;
    }
    for (_, w) in plan.weights.iter_mut() {
        *w = 1.0;
    }
    plan.candidates = local.iter().filter(|i| i.is_healthy()).collect();
    if plan.candidates.len() >= need {
        plan.mode = Mode::ShiftFailedOpen;
        return plan;
    }
    plan.mode = Mode::Panic;
    plan.candidates = local.iter().collect();
    plan
}

/// Why an ejection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectRefusal {
    /// The instances left serving would drop below the floor.
    CapacityGuard,
    /// The cap on instances ejected at once is reached.
    MaxEjectionPercent,
}

impl EjectRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            EjectRefusal::CapacityGuard => "capacity_guard",
            EjectRefusal::MaxEjectionPercent => "max_ejection_percent",
        }
    }
}

/// Whether `candidate`, one of `local`, may be ejected. It counts serving
/// instances exactly as [`plan`] does, so an ejection the guard allows can
/// never push the next plan out of `Normal` by itself. At least one instance
/// may always be ejected, however small the percentage.
pub fn may_eject<B: Backend>(
    local: &[B],
    candidate: &B,
    floor: usize,
    max_ejection_percent: f64,
    sc: Option<&ServiceControls>,
    now_ms: u64,
) -> Result<(), EjectRefusal> {
    let serving = plan(local, floor, sc, now_ms).serving;
    let counted = candidate.is_healthy() && zone_weight(sc, candidate.zone(), now_ms) > 0.0;
    let after = serving - usize::from(counted);
    let ejected = local.iter().filter(|i| i.ejected()).count();
    let cap = ((local.len() as f64) * max_ejection_percent / 100.0)
        .floor()
        .max(1.0) as usize;
    if after < floor.max(1) {
        Err(EjectRefusal::CapacityGuard)
    } else if ejected >= cap {
        Err(EjectRefusal::MaxEjectionPercent)
    } else {
        Ok(())
    }
}

/// Power of two choices on in-flight requests.
fn p2c<'a, B: Backend, R: Rng>(c: &[&'a B], rng: &mut R) -> Option<&'a B> {
    match c.len() {
        0 => None,
        1 => Some(c[0]),
        n => {
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            Some(if c[b].inflight() < c[a].inflight() {
                c[b]
            } else {
                c[a]
            })
        }
    }
}

/// Picks an instance: the own zone first (with the share its weight gives
/// it), otherwise another zone chosen by weight times size, then power of two
/// choices inside the zone. A retry passes the instance that failed (as
/// `choose` returned it for this plan), and goes to another zone where one
/// has candidates.
pub fn choose<'a, B: Backend, R: Rng>(
    plan: &Plan<'a, B>,
    own_zone: &str,
    failed: Option<&B>,
    rng: &mut R,
) -> Option<&'a B> {
    let cands: Vec<&'a B> = plan
        .candidates
        .iter()
        .copied()
        .filter(|c| failed.is_none_or(|f| !std::ptr::eq(*c, f)))
        .collect();
    if cands.is_empty() {
        return None;
    }
    let avoid_zone = failed.map(|f| f.zone()).unwrap_or("");
    let own: Vec<&'a B> = cands
        .iter()
        .copied()
        .filter(|c| c.zone() == own_zone)
        .collect();
    let own_w = plan.weight(own_zone);
    if !own.is_empty() && own_zone != avoid_zone && (own_w >= 1.0 || rng.gen::<f64>() < own_w) {
        return p2c(&own, rng);
    }
    // Other zones, weighted; skip the failed one's zone when there is a choice.
    let mut zones: BTreeMap<&str, Vec<&'a B>> = BTreeMap::new();
    for &c in &cands {
        if c.zone() != own_zone || own_zone == avoid_zone {
            zones.entry(c.zone()).or_default().push(c);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};
    use switchyard_model::ZoneControl;

    #[derive(Debug)]
    struct Inst {
        zone: &'static str,
        healthy: bool,
        /// Out of rotation by its health checks rather than by ejection.
        down: bool,
    }

    impl Backend for Inst {
        fn zone(&self) -> &str {
            self.zone
        }
        fn is_healthy(&self) -> bool {
            self.healthy && !self.down
        }
        fn ejected(&self) -> bool {
            !self.healthy
        }
        fn inflight(&self) -> u32 {
            0
        }
    }

    fn instances() -> Vec<Inst> {
        ["a", "a", "b", "b", "c", "c"]
            .into_iter()
            .map(|zone| Inst {
                zone,
                healthy: true,
                down: false,
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
            assert_eq!(choose(&p, "a", None, &mut rng).unwrap().zone, "a");
        }
        let sc = shift("a");
        let p = plan(&local, 3, Some(&sc), 0);
        assert_eq!(p.mode, Mode::Normal);
        for _ in 0..100 {
            assert_ne!(choose(&p, "a", None, &mut rng).unwrap().zone, "a");
        }
    }

    #[test]
    fn shift_fails_open_and_ejection_panics_at_the_floor() {
        let mut local = instances();
        let sc = shift("a");
        // Four of six healthy, two of them shifted away: 2 serving < floor 3.
        local[2].healthy = false;
        local[3].healthy = false;
        let p = plan(&local, 3, Some(&sc), 0);
        assert_eq!(p.mode, Mode::ShiftFailedOpen);
        assert_eq!(p.candidates.len(), 4);
        local[4].healthy = false;
        local[5].healthy = false;
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
            let second = choose(&p, "a", Some(first), &mut rng).unwrap();
            assert_ne!(second.zone, "a");
        }
    }

    #[test]
    fn an_expired_shift_no_longer_applies() {
        let local = instances();
        let mut sc = shift("a");
        sc.zones.get_mut("a").unwrap().expires_at_ms = Some(1_000);
        let mut rng = StdRng::seed_from_u64(3);
        let p = plan(&local, 3, Some(&sc), 2_000);
        assert_eq!(choose(&p, "a", None, &mut rng).unwrap().zone, "a");
    }

    #[test]
    fn an_ejection_stops_at_the_floor_and_at_the_cap() {
        let mut local = instances();
        // Zone a shifted away: four serving, floor three, so one may go.
        let sc = shift("a");
        assert_eq!(may_eject(&local, &local[2], 3, 50.0, Some(&sc), 0), Ok(()));
        local[2].healthy = false;
        assert_eq!(
            may_eject(&local, &local[3], 3, 50.0, Some(&sc), 0),
            Err(EjectRefusal::CapacityGuard)
        );
        // An instance of the shifted zone does not count as serving.
        assert_eq!(may_eject(&local, &local[0], 3, 50.0, Some(&sc), 0), Ok(()));
        // Without the shift there is room, but the cap allows one at 10 %.
        assert_eq!(
            may_eject(&local, &local[3], 3, 10.0, None, 0),
            Err(EjectRefusal::MaxEjectionPercent)
        );
        assert_eq!(may_eject(&local, &local[3], 3, 50.0, None, 0), Ok(()));
    }

    #[test]
    fn a_dead_instance_counts_against_the_floor_but_not_against_the_ejection_cap() {
        let mut local = instances();
        local[0].down = true;
        // The cap at 10 % of six is one ejection; the dead instance does not use it.
        assert_eq!(may_eject(&local, &local[3], 3, 10.0, None, 0), Ok(()));
        // But it serves nobody: with three down, the floor of three holds the rest.
        local[1].down = true;
        local[2].down = true;
        assert_eq!(
            may_eject(&local, &local[3], 3, 10.0, None, 0),
            Err(EjectRefusal::CapacityGuard)
        );
        assert_eq!(plan(&local, 3, None, 0).serving, 3);
    }
}
