//! Projected threshold crossing: alarm *before* a static threshold trips.
//!
//! A static threshold fires when a signal (queue depth, disk use, p99
//! latency, error ratio) is already bad. Many gray failures degrade steadily
//! first — a leak, a filling queue, a slowly saturating link — so a line fitted
//! to the recent window tells us *when* the threshold will be crossed, and we
//! can act while there is still headroom. This detector deliberately stays
//! silent once the value is at or above the threshold: that case belongs to
//! the static threshold alarm, and double-reporting it would only add noise.

use serde::{Deserialize, Serialize};

use crate::stats::{linear_fit, r_squared};

/// Minimum coefficient of determination of the fitted line. Below it, the
/// line explains less than half of the variance: a positive slope fitted to
/// noise would otherwise project a crossing out of nothing.
pub const MIN_R_SQUARED: f64 = 0.5;

/// Parameters of a trend alarm on one signal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrendAlarm {
    /// Number of most recent points used for the fit. Older points describe a
    /// regime that may be over; a shorter window reacts faster but is noisier.
    pub window: usize,
    /// Fewer points than this (in the window) give no verdict: a line through
    /// a handful of points is not a trend.
    pub min_points: usize,
    /// Alarm only if the projected crossing is at most this many seconds after
    /// the last point; further out, the linear extrapolation is a guess.
    pub horizon_s: f64,
    /// The value the signal must not reach (same unit as the points). There
    /// is no sensible generic value, so the caller must set it: the default
    /// is 0.0, which for non-negative signals means "always already at the
    /// threshold", i.e. a default alarm never fires rather than firing on a
    /// made-up limit.
    pub threshold: f64,
    /// The fitted slope (units per second) must be strictly greater than
    /// this. 0.0 means "any growth"; raise it to ignore slow drifts.
    pub min_slope: f64,
}

impl Default for TrendAlarm {
    /// One minute of per-second points, at least 20 of them, five minutes of
    /// look-ahead. `threshold` is 0.0 and must be set by the caller (see the
    /// field's documentation).
    fn default() -> Self {
        TrendAlarm {
            window: 60,
            min_points: 20,
            horizon_s: 300.0,
            threshold: 0.0,
            min_slope: 0.0,
        }
    }
}

/// Evidence of a projected crossing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrendVerdict {
    /// Fitted growth in units per second.
    pub slope: f64,
    /// Fitted value at the time of the last point (the line, not the raw last
    /// sample, so one noisy sample does not move it).
    pub current: f64,
    /// Seconds after the last point at which the fitted line reaches the
    /// threshold.
    pub crosses_in_s: f64,
    /// Coefficient of determination of the fit, ≥ [`MIN_R_SQUARED`].
    pub r_squared: f64,
}

impl TrendAlarm {
    /// Projects the last `window` points (`(t seconds, value)`, in time
    /// order) and returns a verdict when all of these hold:
    /// - at least `max(min_points, 2)` points in the window;
    /// - fitted slope > `min_slope`;
    /// - fitted value at the last point still below `threshold`;
    /// - crossing within `horizon_s` seconds of the last point;
    /// - r² ≥ [`MIN_R_SQUARED`].
    ///
    /// Otherwise `None` (including non-finite input, which makes the fit
    /// meaningless).
    pub fn projection(&self, points: &[(f64, f64)]) -> Option<TrendVerdict> {
        let recent = &points[points.len().saturating_sub(self.window)..];
        if recent.len() < self.min_points.max(2) {
            return None;
        }
        if recent.iter().any(|p| !p.0.is_finite() || !p.1.is_finite()) {
            return None;
        }
        // Fit against time relative to the last point: the intercept is then
        // the fitted current value directly, without evaluating the line at
        // a large absolute timestamp.
        let t_last = recent[recent.len() - 1].0;
        let shifted: Vec<(f64, f64)> = recent.iter().map(|&(t, v)| (t - t_last, v)).collect();
        let (slope, current) = linear_fit(&shifted)?;
        // Conditions are stated positively so that a NaN anywhere (input or
        // parameters) fails them and gives no verdict.
        let rising = slope > self.min_slope && slope > 0.0;
        let below = current < self.threshold;
        if !(rising && below) {
            return None;
        }
        let crosses_in_s = (self.threshold - current) / slope;
        let soon = crosses_in_s <= self.horizon_s;
        if !soon {
            return None;
        }
        let r2 = r_squared(&shifted, slope, current)?;
        let fits = r2 >= MIN_R_SQUARED;
        if !fits {
            return None;
        }
        Some(TrendVerdict {
            slope,
            current,
            crosses_in_s,
            r_squared: r2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [−amp, amp] (a linear congruential generator),
    /// so tests are reproducible without a random-number crate.
    fn noise(n: usize, amp: f64, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                (2.0 * u - 1.0) * amp
            })
            .collect()
    }

    fn alarm(threshold: f64) -> TrendAlarm {
        TrendAlarm {
            threshold,
            ..TrendAlarm::default()
        }
    }

    /// 60 points at 1 s, value = 10 + 0.5 t (+ noise): 39.5 at t = 59, so a
    /// threshold of 99.5 is reached 120 s after the last point.
    fn growth(noise_amp: f64) -> Vec<(f64, f64)> {
        let n = noise(60, noise_amp, 7);
        (0..60)
            .map(|i| {
                let t = 1_700_000_000.0 + i as f64;
                (t, 10.0 + 0.5 * i as f64 + n[i])
            })
            .collect()
    }

    #[test]
    fn default_values() {
        let d = TrendAlarm::default();
        assert_eq!(d.window, 60);
        assert_eq!(d.min_points, 20);
        assert_eq!(d.horizon_s, 300.0);
        assert_eq!(d.threshold, 0.0);
        // The default threshold never fires on a growing positive signal.
        assert_eq!(d.projection(&growth(0.0)), None);
    }

    #[test]
    fn steady_growth_alarms_with_crossing_time() {
        let v = alarm(99.5).projection(&growth(0.0)).expect("alarm");
        assert!((v.slope - 0.5).abs() < 1e-9, "{v:?}");
        assert!((v.current - 39.5).abs() < 1e-6, "{v:?}");
        assert!((v.crosses_in_s - 120.0).abs() < 1e-6, "{v:?}");
        assert!((v.r_squared - 1.0).abs() < 1e-9);
    }

    #[test]
    fn noisy_growth_still_alarms_near_120_s() {
        let v = alarm(99.5).projection(&growth(2.0)).expect("alarm");
        assert!((v.crosses_in_s - 120.0).abs() < 10.0, "{v:?}");
        assert!(v.r_squared >= MIN_R_SQUARED && v.r_squared < 1.0);
    }

    #[test]
    fn crossing_beyond_horizon_is_ignored() {
        // Threshold reached 400 s after the last point; horizon 300 s.
        assert_eq!(alarm(39.5 + 0.5 * 400.0).projection(&growth(0.0)), None);
        let wide = TrendAlarm {
            horizon_s: 500.0,
            ..alarm(39.5 + 0.5 * 400.0)
        };
        assert!(wide.projection(&growth(0.0)).is_some());
    }

    #[test]
    fn flat_noisy_series_does_not_alarm() {
        let n = noise(60, 5.0, 42);
        let pts: Vec<(f64, f64)> = (0..60).map(|i| (i as f64, 50.0 + n[i])).collect();
        assert_eq!(alarm(60.0).projection(&pts), None);
    }

    #[test]
    fn weak_fit_is_rejected_even_when_the_line_would_cross() {
        // Slope 0.05/s under ±5 noise: the fitted line crosses 56 within the
        // horizon, but r² is far below 0.5. Without noise the same line alarms.
        let n = noise(60, 5.0, 3);
        let noisy: Vec<(f64, f64)> = (0..60)
            .map(|i| (i as f64, 50.0 + 0.05 * i as f64 + n[i]))
            .collect();
        let clean: Vec<(f64, f64)> = (0..60)
            .map(|i| (i as f64, 50.0 + 0.05 * i as f64))
            .collect();
        let a = alarm(56.0);
        assert!(a.projection(&clean).is_some());
        let (m, b) = linear_fit(&noisy).unwrap();
        let crosses = (56.0 - (m * 59.0 + b)) / m;
        assert!(
            m > 0.0 && crosses > 0.0 && crosses < 300.0,
            "precondition: {m} {crosses}"
        );
        assert!(r_squared(&noisy, m, b).unwrap() < MIN_R_SQUARED);
        assert_eq!(a.projection(&noisy), None);
    }

    #[test]
    fn already_above_threshold_is_the_static_alarms_job() {
        assert_eq!(alarm(30.0).projection(&growth(0.0)), None);
        // Exactly at the threshold counts as reached.
        assert_eq!(alarm(39.5).projection(&growth(0.0)), None);
    }

    #[test]
    fn decreasing_series_does_not_alarm() {
        let pts: Vec<(f64, f64)> = (0..60).map(|i| (i as f64, 100.0 - i as f64)).collect();
        assert_eq!(alarm(200.0).projection(&pts), None);
    }

    #[test]
    fn min_slope_filters_slow_drift() {
        let a = TrendAlarm {
            min_slope: 0.5,
            ..alarm(99.5)
        };
        assert_eq!(a.projection(&growth(0.0)), None, "slope 0.5 is not > 0.5");
        let a = TrendAlarm {
            min_slope: 0.4,
            ..alarm(99.5)
        };
        assert!(a.projection(&growth(0.0)).is_some());
    }

    #[test]
    fn needs_min_points() {
        let pts = growth(0.0);
        assert_eq!(alarm(99.5).projection(&pts[..19]), None);
        assert!(alarm(99.5).projection(&pts[..20]).is_some());
        assert_eq!(alarm(99.5).projection(&[]), None);
    }

    #[test]
    fn only_the_last_window_points_count() {
        // A long decline followed by 60 s of growth: with the default window
        // only the growth is fitted; with a window covering everything the
        // fitted slope is negative.
        let mut pts: Vec<(f64, f64)> = (0..200)
            .map(|i| (i as f64, 400.0 - 2.0 * i as f64))
            .collect();
        pts.extend((200..260).map(|i| (i as f64, 0.5 * (i - 200) as f64)));
        let v = alarm(89.5).projection(&pts).expect("alarm");
        assert!((v.crosses_in_s - 120.0).abs() < 1e-6, "{v:?}");
        let everything = TrendAlarm {
            window: 260,
            ..alarm(89.5)
        };
        assert_eq!(everything.projection(&pts), None);
    }

    #[test]
    fn non_finite_points_give_no_verdict() {
        let mut pts = growth(0.0);
        pts[30].1 = f64::NAN;
        assert_eq!(alarm(99.5).projection(&pts), None);
    }
}
