//! Load shedding: a fixed concurrency ceiling, an adaptive limit that follows
//! latency (a gradient limiter in the style of Netflix's concurrency-limits),
//! and a requests-per-second ceiling. Lower priorities hit their share of each
//! limit first, so sheddable routes are rejected before normal ones and
//! critical ones last.

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
    long_rtt: Option<f64>,
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
const TOLERANCE: f64 = 2.0;
const SMOOTHING: f64 = 0.2;
const LONG_WINDOW: f64 = 40.0; // windows in the long-term average

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
                long_rtt: None,
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
        let long = match g.long_rtt {
            None => short,
            Some(l) => l + (short - l) / LONG_WINDOW,
        };
        // After a sustained shift the baseline must follow, or the limit
        // would stay pinned low forever.
        let long = if long / short > 2.0 {
            long * 0.95
        } else {
            long
        };
        g.long_rtt = Some(long);
        let gradient = (TOLERANCE * long / short).clamp(0.5, 1.0);
        let queue = g.limit.sqrt();
        let mut new_limit = g.limit * gradient + queue;
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
