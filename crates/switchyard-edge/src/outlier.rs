//! Per-instance health as the edge observes it: consecutive failures,
//! success-rate and latency outliers among a zone's peers, ejection with a
//! growing, capped duration, and an active re-check before an instance returns.
//!
//! The state machine takes `now` as an argument so it can be driven by tests.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchyard_model::{EjectionSettings, Instance};

use crate::health_check::ActiveCheck;

/// How one attempt against an instance ended, from the instance's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The instance answered with a 5xx.
    Status5xx,
    /// Connect refused or timed out, connection reset, or no answer in time.
    LocalOriginFailure,
}

pub use switchyard_api::edge::{EjectReason, Health, InstanceView};

#[derive(Debug)]
struct Inner {
    health: Health,
    consecutive_5xx: u32,
    consecutive_local: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    last_reason: Option<EjectReason>,
    // Counters for the current analysis interval.
    requests: u64,
    successes: u64,
    latency_sum: Duration,
    /// Intervals these counters have been carried over (see `take_interval`).
    carried: u32,
}

/// The most intervals an instance's counters are carried over while they are
/// too few to judge: older evidence says little about the instance now.
const MAX_CARRIED: u32 = 2;

/// One instance of a service as this edge sees it. Survives config reloads as
/// long as the instance keeps its name and address.
#[derive(Debug)]
pub struct InstanceState {
    pub meta: Instance,
    pub inflight: AtomicU32,
    /// The active health checks' verdict, kept apart from ejection.
    pub check: ActiveCheck,
    /// Mirrors `inner.health == Healthy` so routing reads it without a lock.
    healthy: AtomicBool,
    inner: Mutex<Inner>,
}

/// Steering reads the live state in place: a plan borrows the instances, it
/// never copies them.
impl switchyard_steer::Backend for InstanceState {
    fn zone(&self) -> &str {
        &self.meta.zone
    }
    fn is_healthy(&self) -> bool {
        InstanceState::is_healthy(self)
    }
    fn ejected(&self) -> bool {
        !self.healthy.load(Ordering::Acquire)
    }
    fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// What the state machine wants done after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Eject if the capacity guard allows it.
    Eject(EjectReason),
}

impl InstanceState {
    pub fn new(meta: Instance) -> Self {
        InstanceState {
            meta,
            inflight: AtomicU32::new(0),
            check: ActiveCheck::default(),
            healthy: AtomicBool::new(true),
            inner: Mutex::new(Inner {
                health: Health::Healthy,
                consecutive_5xx: 0,
                consecutive_local: 0,
                ejections: 0,
                ejected_until: None,
                last_reason: None,
                requests: 0,
                successes: 0,
                latency_sum: Duration::ZERO,
                carried: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The outlier state machine's verdict (healthy, ejected, probing).
    pub fn health(&self) -> Health {
        self.lock().health
    }

    /// In rotation: not ejected as an outlier and not down by its checks.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.check.is_down()
    }

    fn set_health(&self, g: &mut Inner, h: Health) {
        g.health = h;
        self.healthy.store(h == Health::Healthy, Ordering::Release);
    }

    /// Records one attempt. Failures on an instance already out of rotation
    /// (panic routing still sends to it) do not extend its ejection.
    pub fn observe(&self, outcome: Outcome, latency: Duration, s: &EjectionSettings) -> Verdict {
        let mut g = self.lock();
        g.requests += 1;
        g.latency_sum += latency;
        match outcome {
            Outcome::Success => {
                g.successes += 1;
                g.consecutive_5xx = 0;
                g.consecutive_local = 0;
                Verdict::Keep
            }
            Outcome::Status5xx | Outcome::LocalOriginFailure => {
                g.consecutive_5xx += 1;
                if outcome == Outcome::LocalOriginFailure {
                    g.consecutive_local += 1;
                }
                if g.health != Health::Healthy {
                    return Verdict::Keep;
                }
                if s.consecutive_connect_failures > 0
                    && g.consecutive_local >= s.consecutive_connect_failures
                {
                    Verdict::Eject(EjectReason::ConsecutiveLocalFailures)
                } else if s.consecutive_5xx > 0 && g.consecutive_5xx >= s.consecutive_5xx {
                    Verdict::Eject(EjectReason::Consecutive5xx)
                } else {
                    Verdict::Keep
                }
            }
        }
    }

    /// Takes the instance out for base × number of ejections, capped.
    pub fn eject(&self, reason: EjectReason, now: Instant, s: &EjectionSettings) -> Duration {
        let mut g = self.lock();
        g.ejections = g.ejections.saturating_add(1);
        let d = s
            .base_ejection
            .saturating_mul(g.ejections)
            .min(s.max_ejection);
        self.set_health(&mut g, Health::Ejected);
        g.ejected_until = Some(now + d);
        g.last_reason = Some(reason);
        g.consecutive_5xx = 0;
        g.consecutive_local = 0;
        d
    }

    /// Moves an instance whose time is up to `Probing`; returns true if it did.
    pub fn ejection_expired(&self, now: Instant) -> bool {
        let mut g = self.lock();
        if g.health == Health::Ejected && g.ejected_until.is_some_and(|t| now >= t) {
            self.set_health(&mut g, Health::Probing);
            return true;
        }
        false
    }

    /// The result of an active check on a probing instance.
    pub fn recheck(&self, passed: bool, now: Instant, s: &EjectionSettings) {
        if passed {
            let mut g = self.lock();
            if g.health == Health::Probing {
                self.set_health(&mut g, Health::Healthy);
                g.ejected_until = None;
            }
        } else if self.health() == Health::Probing {
            self.eject(EjectReason::FailedRecheck, now, s);
        }
    }

    /// Closes the analysis interval and returns its numbers. An instance
    /// with fewer than `enough` requests keeps its counters into the next
    /// interval (for at most `MAX_CARRIED` intervals): a slow instance gets
    /// few requests, because power of two choices favours peers with fewer
    /// in flight, and without carrying its evidence over it would never have
    /// enough to be judged. A healthy interval forgives one past ejection, as
    /// Envoy does, so the next ejection is shorter.
    pub fn take_interval(&self, enough: u64) -> IntervalStats {
        let mut g = self.lock();
        let out = IntervalStats {
            requests: g.requests,
            success_rate: if g.requests == 0 {
                1.0
            } else {
                g.successes as f64 / g.requests as f64
            },
            mean_latency: if g.requests == 0 {
                Duration::ZERO
            } else {
                g.latency_sum / g.requests as u32
            },
        };
        if g.requests < enough && g.carried < MAX_CARRIED {
            g.carried += 1;
            return out;
        }
        if g.health == Health::Healthy && g.ejections > 0 && g.successes == g.requests {
            g.ejections -= 1;
        }
        g.requests = 0;
        g.successes = 0;
        g.latency_sum = Duration::ZERO;
        g.carried = 0;
        out
    }

    pub fn view(&self, now: Instant) -> InstanceView {
        let g = self.lock();
        // An ejection says more (why, for how long) than a failing check,
        // so it shows first; `check` has the rest.
        let health = match g.health {
            Health::Healthy if self.check.is_down() => Health::Down,
            h => h,
        };
        InstanceView {
            name: self.meta.name.clone(),
            zone: self.meta.zone.clone(),
            addr: self.meta.addr.to_string(),
            health,
            ejections: g.ejections,
            ejected_for_ms: g
                .ejected_until
                .filter(|_| g.health == Health::Ejected)
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            last_ejection_reason: g.last_reason,
            consecutive_5xx: g.consecutive_5xx,
            inflight: self.inflight.load(Ordering::Relaxed),
            check: self.check.view(),
        }
    }
}

/// One interval's numbers for an instance, as fed to the peer analysis.
#[derive(Debug, Clone, Copy)]
pub struct IntervalStats {
    pub requests: u64,
    pub success_rate: f64,
    pub mean_latency: Duration,
}

/// Success-rate and latency outliers among the peers of one zone. Returns
/// the indexes of instances to eject and why. Pure, for tests.
pub fn peer_outliers(stats: &[IntervalStats], s: &EjectionSettings) -> Vec<(usize, EjectReason)> {
    let mut out = Vec::new();
    let qualified: Vec<usize> = (0..stats.len())
        .filter(|&i| stats[i].requests >= s.success_rate_min_requests.max(1))
        .collect();
    if qualified.len() >= s.success_rate_min_hosts.max(2) as usize {
        let rates: Vec<f64> = qualified.iter().map(|&i| stats[i].success_rate).collect();
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let threshold = mean - s.success_rate_stdev_factor * var.sqrt();
        for &i in &qualified {
            if stats[i].success_rate < threshold {
                out.push((i, EjectReason::SuccessRate));
            }
        }
    }
    // Latency: slower than `latency_factor` times the median of the others.
    // Its own, lower bar on requests (see `latency_min_requests`).
    let qualified: Vec<usize> = (0..stats.len())
        .filter(|&i| stats[i].requests >= s.latency_min_requests.max(1))
        .collect();
    if qualified.len() >= 2 {
        for &i in &qualified {
            if out.iter().any(|(j, _)| *j == i) {
                continue;
            }
            let mut others: Vec<Duration> = qualified
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| stats[j].mean_latency)
                .collect();
            others.sort();
            let median = others[others.len() / 2];
            let mine = stats[i].mean_latency;
            if mine >= s.latency_min && mine.as_secs_f64() > s.latency_factor * median.as_secs_f64()
            {
                out.push((i, EjectReason::Latency));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> InstanceState {
        InstanceState::new(Instance {
            name: "i1".into(),
            zone: "z".into(),
            region: "r".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
        })
    }

    #[test]
    fn five_consecutive_5xx_ask_for_ejection_and_a_success_resets() {
        let s = EjectionSettings::default();
        let i = inst();
        for _ in 0..4 {
            assert_eq!(
                i.observe(Outcome::Status5xx, Duration::ZERO, &s),
                Verdict::Keep
            );
        }
        assert_eq!(
            i.observe(Outcome::Success, Duration::ZERO, &s),
            Verdict::Keep
        );
        for _ in 0..4 {
            i.observe(Outcome::Status5xx, Duration::ZERO, &s);
        }
        assert_eq!(
            i.observe(Outcome::Status5xx, Duration::ZERO, &s),
            Verdict::Eject(EjectReason::Consecutive5xx)
        );
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_is_capped() {
        let s = EjectionSettings::default();
        let i = inst();
        let now = Instant::now();
        let ds: Vec<u64> = (0..12)
            .map(|_| i.eject(EjectReason::Consecutive5xx, now, &s).as_secs())
            .collect();
        assert_eq!(&ds[..4], &[30, 60, 90, 120]);
        assert_eq!(*ds.last().unwrap(), 300);
    }

    #[test]
    fn an_instance_returns_only_after_its_recheck_passes() {
        let s = EjectionSettings::default();
        let i = inst();
        let t0 = Instant::now();
        i.eject(EjectReason::Consecutive5xx, t0, &s);
        assert!(!i.ejection_expired(t0 + Duration::from_secs(29)));
        assert!(i.ejection_expired(t0 + Duration::from_secs(30)));
        assert_eq!(i.health(), Health::Probing);
        i.recheck(false, t0 + Duration::from_secs(30), &s);
        assert_eq!(i.health(), Health::Ejected, "a failed recheck ejects again");
        assert!(i.ejection_expired(t0 + Duration::from_secs(91)));
        i.recheck(true, t0 + Duration::from_secs(91), &s);
        assert_eq!(i.health(), Health::Healthy);
    }

    #[test]
    fn peers_flag_success_rate_and_latency_outliers() {
        let s = EjectionSettings {
            success_rate_min_hosts: 3,
            success_rate_min_requests: 10,
            ..Default::default()
        };
        let ok = |ms| IntervalStats {
            requests: 100,
            success_rate: 1.0,
            mean_latency: Duration::from_millis(ms),
        };
        let mut stats = vec![ok(10), ok(11), ok(12), ok(10), ok(9)];
        stats[2].success_rate = 0.5;
        stats[4].mean_latency = Duration::from_millis(200);
        let out = peer_outliers(&stats, &s);
        assert_eq!(
            out,
            vec![(2, EjectReason::SuccessRate), (4, EjectReason::Latency)]
        );
        // Too little traffic: no verdict either way.
        for st in &mut stats {
            st.requests = 5;
        }
        assert!(peer_outliers(&stats, &s).is_empty());
    }

    #[test]
    fn a_starved_instance_carries_its_evidence_over_until_it_can_be_judged() {
        let s = EjectionSettings::default();
        let i = inst();
        let slow = Duration::from_millis(400);
        for _ in 0..6 {
            i.observe(Outcome::Success, slow, &s);
        }
        assert_eq!(i.take_interval(10).requests, 6, "too few: kept");
        for _ in 0..6 {
            i.observe(Outcome::Success, slow, &s);
        }
        let st = i.take_interval(10);
        assert_eq!(st.requests, 12);
        assert_eq!(st.mean_latency, slow);
        assert_eq!(
            i.take_interval(10).requests,
            0,
            "judged: the next interval starts afresh"
        );
        // Evidence is not kept forever: after two carried intervals it goes.
        let i = inst();
        i.observe(Outcome::Success, slow, &s);
        assert_eq!(i.take_interval(10).requests, 1);
        assert_eq!(i.take_interval(10).requests, 1);
        assert_eq!(i.take_interval(10).requests, 1);
        assert_eq!(i.take_interval(10).requests, 0);
    }

    #[test]
    fn latency_is_judged_on_fewer_requests_than_the_success_rate() {
        let s = EjectionSettings::default();
        let st = |requests, ms| IntervalStats {
            requests,
            success_rate: 1.0,
            mean_latency: Duration::from_millis(ms),
        };
        let out = peer_outliers(&[st(400, 2), st(12, 400)], &s);
        assert_eq!(out, vec![(1, EjectReason::Latency)]);
        assert!(peer_outliers(&[st(400, 2), st(9, 400)], &s).is_empty());
    }
}
