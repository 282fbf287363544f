//! Load shedding: a fixed concurrency ceiling, an adaptive limit that follows
//! latency (a gradient limiter in the style of Netflix's concurrency-limits),
//! and a requests-per-second ceiling. Lower priorities hit their share of each
//! limit first, so sheddable routes are rejected before normal ones and
//! critical ones last.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_model::{LimitSettings, Priority};

/// The share of each limit a priority may use.
fn share(p: Priority) -> f64 {
    match p {
        Priority::Critical => 1.0,
        Priority::Normal => 0.9,
        Priority::Sheddable => 0.75,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// The operator's or control plane's shed level covers this priority.
    Level,
    Concurrency,
    Rate,
}

impl ShedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Level => "shed_level",
            ShedReason::Concurrency => "concurrency",
            ShedReason::Rate => "rate",
        }
    }
}

#[derive(Debug)]
struct Gradient {
    limit: f64,
    /// The mean latency of recent uncongested windows, with when each
    /// ended: the baseline is their minimum.
    uncongested: VecDeque<(Instant, f64)>,
    /// The last baseline, kept while no uncongested window comes.
    baseline: Option<f64>,
    window_start: Instant,
    window_sum: f64,
    window_n: u32,
    window_max_inflight: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct Admission {
    settings: LimitSettings,
    inflight: AtomicU32,
    limit: AtomicU32,
    gradient: Mutex<Gradient>,
    bucket: Option<Mutex<Bucket>>,
}

/// Held while a request is in flight; releasing it frees the slot.
#[derive(Debug)]
pub struct Permit {
    adm: Arc<Admission>,
    start: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.adm.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Permit {
    /// Feeds the adaptive limit with this request's latency. Only answers
    /// that reflect the service's speed should be reported.
    pub fn report_latency(&self, now: Instant) {
        self.adm
            .sample(now.saturating_duration_since(self.start), now);
    }
}

const WINDOW: Duration = Duration::from_millis(250);
/// How far above the baseline a window's mean latency may rise before the
/// limit comes down (Netflix's Gradient2 defaults to 1.5 as well).
const TOLERANCE: f64 = 1.5;
const SMOOTHING: f64 = 0.2;
/// How long an uncongested window counts toward the baseline: long enough
/// to span an overload's first minute, short enough that a service that
/// really got slower (a new release, a colder cache) is followed.
const BASELINE_HORIZON: Duration = Duration::from_secs(30);

impl Admission {
    pub fn new(settings: LimitSettings, now: Instant) -> Arc<Self> {
        let start = if settings.adaptive {
            settings
                .max_concurrency
                .min(settings.min_concurrency.max(20))
        } else {
            settings.max_concurrency
        };
        Arc::new(Admission {
            settings,
            inflight: AtomicU32::new(0),
            limit: AtomicU32::new(start),
            gradient: Mutex::new(Gradient {
                limit: start as f64,
                uncongested: VecDeque::new(),
                baseline: None,
                window_start: now,
                window_sum: 0.0,
                window_n: 0,
                window_max_inflight: 0,
            }),
            bucket: settings.max_rps.map(|r| {
                Mutex::new(Bucket {
                    tokens: r,
                    last: now,
                })
            }),
        })
    }

    pub fn settings(&self) -> LimitSettings {
        self.settings
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn try_admit(
        self: &Arc<Self>,
        p: Priority,
        shed_level: u8,
        now: Instant,
    ) -> Result<Permit, ShedReason> {
        let shed_by_level = match p {
            Priority::Sheddable => shed_level >= 1,
            Priority::Normal => shed_level >= 2,
            Priority::Critical => false,
        };
        if shed_by_level {
            return Err(ShedReason::Level);
        }
        let cap = ((self.limit() as f64) * share(p)).floor().max(1.0) as u32;
        let prev = self.inflight.fetch_add(1, Ordering::AcqRel);
        if prev >= cap {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(ShedReason::Concurrency);
        }
        if let Some(b) = &self.bucket {
            let rate = self.settings.max_rps.unwrap_or(f64::MAX);
            let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(rate);
            b.last = now;
            // Lower priorities must leave a reserve in the bucket for higher ones.
            let reserve = rate * (1.0 - share(p));
            if b.tokens < 1.0 + reserve {
                drop(b);
                self.inflight.fetch_sub(1, Ordering::AcqRel);
                return Err(ShedReason::Rate);
            }
            b.tokens -= 1.0;
        }
        let inflight = prev + 1;
        if self.settings.adaptive {
            let mut g = self.gradient.lock().unwrap_or_else(|e| e.into_inner());
            g.window_max_inflight = g.window_max_inflight.max(inflight);
        }
        Ok(Permit {
            adm: self.clone(),
            start: now,
        })
    }

    fn sample(&self, rtt: Duration, now: Instant) {
        if !self.settings.adaptive {
            return;
        }
        let mut g = self.gradient.lock().unwrap_or_else(|e| e.into_inner());
        g.window_sum += rtt.as_secs_f64();
        g.window_n += 1;
        if now.saturating_duration_since(g.window_start) < WINDOW || g.window_n < 5 {
            return;
        }
        let short = g.window_sum / g.window_n as f64;
        // The baseline is what a request takes when it does not queue, so
        // it learns only from windows that did not press on the limit (or
        // where the limit is as low as it goes, so nothing less congested
        // can be seen). Learning from congested windows, as an average of
        // every window would, raises the baseline with the queue it
        // should keep short, and under a sustained overload the limit
        // then ratchets up for as long as the overload lasts.
        let congested = (g.window_max_inflight as f64) >= g.limit / 2.0
            && g.limit > self.settings.min_concurrency as f64 + 0.5;
        // With nothing better yet (traffic pressing from the first window),
        // the first window is the baseline: the limit then holds, rather
        // than grows, until an uncongested window says more.
        if !congested || g.baseline.is_none() {
            g.uncongested.push_back((now, short));
        }
        while g
            .uncongested
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > BASELINE_HORIZON)
        {
            g.uncongested.pop_front();
        }
        if let Some(min) = g.uncongested.iter().map(|(_, m)| *m).reduce(f64::min) {
            g.baseline = Some(min);
        }
        let base = g.baseline.unwrap_or(short);
        let gradient = (TOLERANCE * base / short).clamp(0.5, 1.0);
        // Headroom to probe for more is added only while latency is within
        // the tolerance; on top of a cut it would hold the queue above it.
        let mut new_limit = if gradient < 1.0 {
            g.limit * gradient
        } else {
            g.limit + g.limit.sqrt()
        };
        // Do not grow a limit that traffic never came close to using.
        if (g.window_max_inflight as f64) < g.limit / 2.0 {
            new_limit = new_limit.min(g.limit);
        }
        let smoothed = g.limit * (1.0 - SMOOTHING) + new_limit * SMOOTHING;
        g.limit = smoothed.clamp(
            self.settings.min_concurrency as f64,
            self.settings.max_concurrency as f64,
        );
        self.limit.store(g.limit.round() as u32, Ordering::Relaxed);
        g.window_start = now;
        g.window_sum = 0.0;
        g.window_n = 0;
        g.window_max_inflight = 0;
    }
}

/// Retries may add at most `budget` of the requests in flight, with a small
/// floor so a quiet service can still retry (Envoy's retry budget).
#[derive(Debug)]
pub struct RetryBudget {
    pub budget: f64,
    pub min_concurrency: u32,
    active: AtomicU32,
}

pub struct RetryPermit<'a>(&'a RetryBudget);

impl Drop for RetryPermit<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RetryBudget {
    pub fn new(budget: f64, min_concurrency: u32) -> Self {
        RetryBudget {
            budget,
            min_concurrency,
            active: AtomicU32::new(0),
        }
    }

    pub fn try_acquire(&self, requests_inflight: u32) -> Option<RetryPermit<'_>> {
        let allowed = ((requests_inflight as f64) * self.budget).floor() as u32;
        let allowed = allowed.max(self.min_concurrency);
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if prev >= allowed {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryPermit(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: u32) -> LimitSettings {
        LimitSettings {
            max_concurrency: max,
            adaptive: false,
            min_concurrency: 1,
            max_rps: None,
        }
    }

    #[test]
    fn sheddable_is_refused_first_and_critical_last() {
        let now = Instant::now();
        let a = Admission::new(settings(20), now);
        let mut held = Vec::new();
        while let Ok(p) = a.try_admit(Priority::Sheddable, 0, now) {
            held.push(p);
        }
        assert_eq!(held.len(), 15);
        while let Ok(p) = a.try_admit(Priority::Normal, 0, now) {
            held.push(p);
        }
        assert_eq!(held.len(), 18);
        assert!(a.try_admit(Priority::Sheddable, 0, now).is_err());
        while let Ok(p) = a.try_admit(Priority::Critical, 0, now) {
            held.push(p);
        }
        assert_eq!(held.len(), 20);
        held.clear();
        assert_eq!(a.inflight(), 0);
    }

    #[test]
    fn shed_level_never_touches_critical() {
        let now = Instant::now();
        let a = Admission::new(settings(20), now);
        assert_eq!(
            a.try_admit(Priority::Sheddable, 1, now).unwrap_err(),
            ShedReason::Level
        );
        assert!(a.try_admit(Priority::Normal, 1, now).is_ok());
        assert_eq!(
            a.try_admit(Priority::Normal, 2, now).unwrap_err(),
            ShedReason::Level
        );
        assert!(a.try_admit(Priority::Critical, 2, now).is_ok());
    }

    #[test]
    fn rate_ceiling_keeps_a_reserve_for_critical() {
        let now = Instant::now();
        let a = Admission::new(
            LimitSettings {
                max_rps: Some(100.0),
                ..settings(1000)
            },
            now,
        );
        let mut sheddable = 0;
        while a.try_admit(Priority::Sheddable, 0, now).is_ok() {
            sheddable += 1;
        }
        let mut critical = 0;
        while a.try_admit(Priority::Critical, 0, now).is_ok() {
            critical += 1;
        }
        assert_eq!(sheddable, 75);
        assert_eq!(critical, 25);
        // A second later the bucket has refilled.
        assert!(a
            .try_admit(Priority::Sheddable, 0, now + Duration::from_secs(1))
            .is_ok());
    }

    #[test]
    fn adaptive_limit_falls_when_latency_rises() {
        let t0 = Instant::now();
        let a = Admission::new(
            LimitSettings {
                max_concurrency: 200,
                adaptive: true,
                min_concurrency: 4,
                max_rps: None,
            },
            t0,
        );
        let mut t = t0;
        let run = |lat_ms: u64, windows: u32, t: &mut Instant| {
            for _ in 0..windows {
                let permits: Vec<_> = (0..a.limit())
                    .filter_map(|_| a.try_admit(Priority::Critical, 0, *t).ok())
                    .collect();
                *t += WINDOW;
                for p in &permits {
                    a.sample(Duration::from_millis(lat_ms), *t);
                    let _ = p;
                }
            }
        };
        run(10, 40, &mut t);
        let grown = a.limit();
        assert!(
            grown > 20,
            "limit should grow while latency is steady: {grown}"
        );
        run(100, 10, &mut t);
        let shrunk = a.limit();
        assert!(
            (shrunk as f64) < grown as f64 * 0.6,
            "limit should fall when latency jumps: {grown} -> {shrunk}"
        );
    }

    /// A backend that serves `capacity` requests at once in `service`, and
    /// queues the rest in front of them: what a request waits grows with
    /// how many are in flight beyond the capacity.
    fn queueing_latency(inflight: usize, capacity: usize, service: Duration) -> Duration {
        service.mul_f64((inflight as f64 / capacity as f64).max(1.0))
    }

    #[test]
    fn sustained_overload_keeps_latency_near_the_uncongested_baseline() {
        // Thirty seconds of three times what the backend can take: the
        // limit must settle where requests queue little, and stay there. A
        // baseline that followed the congested latency would let the limit
        // (and the queue) creep up for as long as the overload lasts.
        let (capacity, service) = (8, Duration::from_millis(20));
        let t0 = Instant::now();
        let a = Admission::new(
            LimitSettings {
                max_concurrency: 1000,
                adaptive: true,
                min_concurrency: 1,
                max_rps: None,
            },
            t0,
        );
        let mut t = t0;
        let window = |offered: usize, t: &mut Instant| -> (Duration, usize) {
            let permits: Vec<_> = (0..offered)
                .filter_map(|_| a.try_admit(Priority::Normal, 0, *t).ok())
                .collect();
            let lat = queueing_latency(permits.len(), capacity, service);
            *t += WINDOW;
            for _ in &permits {
                a.sample(lat, *t);
            }
            (lat, permits.len())
        };
        for _ in 0..20 {
            window(2, &mut t);
        }
        let (mut worst_late, mut busy) = (Duration::ZERO, 0.0);
        for w in 0..120 {
            let (lat, admitted) = window(1000, &mut t);
            if w >= 40 {
                worst_late = worst_late.max(lat);
                busy += admitted.min(capacity) as f64 / capacity as f64 / 80.0;
            }
        }
        assert!(
            worst_late <= service * 17 / 10,
            "after the first 10 s, requests waited up to {worst_late:?} for a {service:?} service (limit {})",
            a.limit()
        );
        // Shedding is no answer if it starves the backend.
        assert!(busy >= 0.95, "the backend was busy {busy:.2} of the time");
    }

    #[test]
    fn retry_budget_has_a_floor_and_a_share() {
        let b = RetryBudget::new(0.2, 3);
        let held: Vec<_> = (0..10).filter_map(|_| b.try_acquire(5)).collect();
        assert_eq!(held.len(), 3);
        drop(held);
        let held: Vec<_> = (0..100).filter_map(|_| b.try_acquire(100)).collect();
        assert_eq!(held.len(), 20);
    }
}
