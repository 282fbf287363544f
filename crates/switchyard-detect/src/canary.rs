//! Canary analysis: do the edges on a new config serve a route worse than
//! the edges still on the old one, over the same bake window?
//!
//! As Kayenta's judge does, each metric of each route is compared with a
//! test that accounts for volume, and a difference must be both significant
//! and large enough to matter before it fails the canary:
//!
//! - **Errors**: a pooled two-proportion z-test on the route's total failed
//!   and total requests per side. Fail when p < `alpha` *and* the canary's
//!   ratio exceeds the baseline's by more than `error_margin` (absolute).
//! - **Latency** (p50 and p99): a Mann-Whitney U test on the per-second
//!   values (seconds without requests carry no latency and are left out).
//!   Fail when p < `alpha` *and* the canary's median exceeds the baseline's
//!   by the factor `latency_ratio` *and* by more than `latency_floor_ms`, so
//!   a significant 0.3 ms shift on a 1 ms route does not roll back a config.
//! - A route is judged only when each side has at least `min_requests`
//!   requests and `min_seconds` seconds with requests; otherwise its metrics
//!   are `Wait`, with the numbers.
//! - **Canary only**: a route the baseline does not carry (enough of) can
//!   still fail: a new config that breaks a route may also be the only one
//!   that routes it. With at least `min_requests` on the canary, its error
//!   ratio above `max_error_ratio` (an absolute bound, 0.2 by default: no
//!   healthy route fails one request in five) fails it without comparison.
//!
//! Overall: `Fail` as soon as one metric fails (the reason names the
//! strongest evidence). Otherwise `Pass` only when the routes judged carry
//! at least `judged_share` (90 %) of the canary's requests: a pass that
//! rests on the few routes with traffic while most of the canary's traffic
//! went unjudged is not a pass, so that case (and no canary traffic at all)
//! is `Wait` — bake longer.
//!
//! Pure and deterministic: the caller collects the seconds, no clock here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::stats::median;
pub use crate::stats::{mann_whitney, two_proportions, MannWhitney};

pub use switchyard_model::canary::{Judgement, Metric, MetricResult, Second, Verdict};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// Significance level of each test. 0.01 rather than 0.05: a rollout
    /// runs 3 tests per route per wave, and a false fail costs a rollback.
    pub alpha: f64,
    /// Requests per side per route before the route is judged.
    pub min_requests: u64,
    /// Seconds with requests per side per route before the route is judged.
    pub min_seconds: usize,
    /// Absolute increase of the error ratio tolerated (0.005: half a percent).
    pub error_margin: f64,
    /// The canary's median latency must exceed the baseline's by this
    /// factor to fail…
    pub latency_ratio: f64,
    /// …and by at least this many milliseconds.
    pub latency_floor_ms: f64,
    /// The canary's error ratio that fails a route the baseline cannot be
    /// compared on.
    pub max_error_ratio: f64,
    /// The share of the canary's requests that must be on judged routes for
    /// a pass.
    pub judged_share: f64,
}

impl CanaryConfig {
    /// Every problem, each as `path.field: message`.
    pub fn validate(&self, path: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let mut fraction = |field: &str, v: f64, open_top: f64| {
            if !(v > 0.0 && v <= open_top) {
                errs.push(format!(
                    "{path}.{field}: above 0 and at most {open_top}, got {v}"
                ));
            }
        };
        fraction("alpha", self.alpha, 0.5);
        fraction("max_error_ratio", self.max_error_ratio, 1.0);
        fraction("judged_share", self.judged_share, 1.0);
        if !(self.error_margin >= 0.0 && self.error_margin < 1.0) {
            errs.push(format!(
                "{path}.error_margin: from 0 to below 1, got {}",
                self.error_margin
            ));
        }
        if !(self.latency_ratio >= 1.0 && self.latency_ratio.is_finite()) {
            errs.push(format!(
                "{path}.latency_ratio: at least 1, got {}",
                self.latency_ratio
            ));
        }
        if !(self.latency_floor_ms >= 0.0 && self.latency_floor_ms.is_finite()) {
            errs.push(format!(
                "{path}.latency_floor_ms: at least 0, got {}",
                self.latency_floor_ms
            ));
        }
        if self.min_seconds == 0 {
            errs.push(format!("{path}.min_seconds: at least 1"));
        }
        errs
    }
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            alpha: 0.01,
            min_requests: 200,
            min_seconds: 10,
            error_margin: 0.005,
            latency_ratio: 1.2,
            latency_floor_ms: 2.0,
            max_error_ratio: 0.2,
            judged_share: 0.9,
        }
    }
}

/// `1 route`, `3 routes`.
fn count_routes(n: usize) -> String {
    format!("{n} route{}", if n == 1 { "" } else { "s" })
}

/// Judges the canary against the baseline, route by route; see the module
/// documentation for the rules.
pub fn judge(
    canary: &BTreeMap<String, Vec<Second>>,
    baseline: &BTreeMap<String, Vec<Second>>,
    cfg: &CanaryConfig,
) -> Judgement {
    let routes: BTreeSet<&String> = canary.keys().chain(baseline.keys()).collect();
    let empty = Vec::new();
    let mut metrics = Vec::new();
    let mut canary_total = 0u64;
    let mut judged_total = 0u64;
    for route in routes {
        let c = Side::of(canary.get(route).unwrap_or(&empty));
        let b = Side::of(baseline.get(route).unwrap_or(&empty));
        canary_total += c.requests;
        let enough = |s: &Side| s.requests >= cfg.min_requests && s.seconds >= cfg.min_seconds;
        if enough(&c) && enough(&b) {
            judged_total += c.requests;
            metrics.push(errors(route, &c, &b, cfg));
            metrics.push(latency(route, Metric::P50, &c.p50, &b.p50, &c, &b, cfg));
            metrics.push(latency(route, Metric::P99, &c.p99, &b.p99, &c, &b, cfg));
        } else {
            let bounded = enough(&c) && c.ratio() > cfg.max_error_ratio;
            if bounded {
                // Failing on errors judges the route: its traffic is accounted for.
                judged_total += c.requests;
            }
            for m in Metric::ALL {
                metrics.push(unjudged(route, m, &c, &b, bounded, cfg));
            }
        }
    }
    let (verdict, reason) = overall(&metrics, canary_total, judged_total, cfg);
    Judgement {
        verdict,
        metrics,
        reason,
    }
}

/// One group's seconds on one route, summed and split into samples.
struct Side {
    requests: u64,
    failed: u64,
    seconds: usize,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Side {
    fn of(seconds: &[Second]) -> Side {
        let busy: Vec<&Second> = seconds.iter().filter(|s| s.requests > 0).collect();
        Side {
            requests: busy.iter().map(|s| s.requests).sum(),
            // A second cannot fail more requests than it had: bad input
            // must not make a ratio above 1.
            failed: busy.iter().map(|s| s.failed.min(s.requests)).sum(),
            seconds: busy.len(),
            // A NaN or infinite latency is a broken sample, not a slow one;
            // kept out, it cannot make a result unserializable either.
            p50: busy
                .iter()
                .map(|s| s.p50_ms)
                .filter(|v| v.is_finite())
                .collect(),
            p99: busy
                .iter()
                .map(|s| s.p99_ms)
                .filter(|v| v.is_finite())
                .collect(),
        }
    }

    fn ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed as f64 / self.requests as f64
        }
    }
}

fn result(
    route: &str,
    metric: Metric,
    (canary, baseline): (f64, f64),
    (c, b): (&Side, &Side),
    p_value: Option<f64>,
    verdict: Verdict,
    why: String,
) -> MetricResult {
    MetricResult {
        route: route.to_string(),
        metric,
        canary,
        baseline,
        canary_requests: c.requests,
        baseline_requests: b.requests,
        p_value,
        verdict,
        why,
    }
}

fn errors(route: &str, c: &Side, b: &Side, cfg: &CanaryConfig) -> MetricResult {
    let (cr, br) = (c.ratio(), b.ratio());
    let p = two_proportions(c.failed, c.requests, b.failed, b.requests).map(|(_, p)| p);
    let worse = cr > br + cfg.error_margin;
    let significant = p.is_some_and(|p| p < cfg.alpha);
    let numbers = format!(
        "canary errors {} ({} of {}) vs baseline {} ({} of {}){}",
        pct(cr),
        c.failed,
        c.requests,
        pct(br),
        b.failed,
        b.requests,
        p_text(p)
    );
    let (verdict, why) = if worse && significant {
        (Verdict::Fail, numbers)
    } else if worse {
        (
            Verdict::Pass,
            format!("{numbers}: higher, but not significant at {}", cfg.alpha),
        )
    } else {
        (
            Verdict::Pass,
            format!("{numbers}: within the margin of {}", pct(cfg.error_margin)),
        )
    };
    result(route, Metric::ErrorRatio, (cr, br), (c, b), p, verdict, why)
}

fn latency(
    route: &str,
    metric: Metric,
    cs: &[f64],
    bs: &[f64],
    c: &Side,
    b: &Side,
    cfg: &CanaryConfig,
) -> MetricResult {
    let cm = median(cs).unwrap_or(0.0);
    let bm = median(bs).unwrap_or(0.0);
    let p = mann_whitney(cs, bs).map(|r| r.p_greater);
    let worse = cm > bm * cfg.latency_ratio && cm - bm > cfg.latency_floor_ms;
    let significant = p.is_some_and(|p| p < cfg.alpha);
    let numbers = format!(
        "canary {} {} vs baseline {} (medians of {} and {} seconds){}",
        metric.as_str(),
        ms(cm),
        ms(bm),
        cs.len(),
        bs.len(),
        p_text(p)
    );
    let (verdict, why) = if worse && significant {
        (Verdict::Fail, numbers)
    } else if worse {
        (
            Verdict::Pass,
            format!("{numbers}: slower, but not significant at {}", cfg.alpha),
        )
    } else {
        (
            Verdict::Pass,
            format!(
                "{numbers}: within ×{} and {} ms",
                cfg.latency_ratio, cfg.latency_floor_ms
            ),
        )
    };
    result(route, metric, (cm, bm), (c, b), p, verdict, why)
}

fn unjudged(
    route: &str,
    metric: Metric,
    c: &Side,
    b: &Side,
    bounded: bool,
    cfg: &CanaryConfig,
) -> MetricResult {
    let (cv, bv) = match metric {
        Metric::ErrorRatio => (c.ratio(), b.ratio()),
        Metric::P50 => (median(&c.p50).unwrap_or(0.0), median(&b.p50).unwrap_or(0.0)),
        Metric::P99 => (median(&c.p99).unwrap_or(0.0), median(&b.p99).unwrap_or(0.0)),
    };
    if bounded && metric == Metric::ErrorRatio {
        let why = format!(
            "canary errors {} ({} of {}) above the absolute bound {}, baseline too little traffic to compare ({} requests in {} s)",
            pct(cv),
            c.failed,
            c.requests,
            pct(cfg.max_error_ratio),
            b.requests,
            b.seconds
        );
        return result(route, metric, (cv, bv), (c, b), None, Verdict::Fail, why);
    }
    let why = format!(
        "not judged: canary {} requests in {} s, baseline {} in {} s; needs {} requests and {} s on each side",
        c.requests, c.seconds, b.requests, b.seconds, cfg.min_requests, cfg.min_seconds
    );
    result(route, metric, (cv, bv), (c, b), None, Verdict::Wait, why)
}

fn overall(
    metrics: &[MetricResult],
    canary_total: u64,
    judged_total: u64,
    cfg: &CanaryConfig,
) -> (Verdict, String) {
    let failed: Vec<&MetricResult> = metrics
        .iter()
        .filter(|m| m.verdict == Verdict::Fail)
        .collect();
    // The strongest evidence first: the absolute bound (no p) counts as the
    // strongest, then the smallest p; ties keep route and metric order.
    if let Some(worst) = failed.iter().min_by(|a, b| {
        a.p_value
            .unwrap_or(0.0)
            .total_cmp(&b.p_value.unwrap_or(0.0))
    }) {
        let more = match failed.len() - 1 {
            0 => String::new(),
            1 => " (and 1 more failing metric)".to_string(),
            n => format!(" (and {n} more failing metrics)"),
        };
        return (
            Verdict::Fail,
            format!("route {}: {}{more}", worst.route, worst.why),
        );
    }
    if canary_total == 0 {
        return (Verdict::Wait, "no canary traffic yet".to_string());
    }
    let share = judged_total as f64 / canary_total as f64;
    let routes = |v: Verdict| {
        let names: BTreeSet<&str> = metrics
            .iter()
            .filter(|m| m.verdict == v)
            .map(|m| m.route.as_str())
            .collect();
        names.len()
    };
    if share >= cfg.judged_share {
        (
            Verdict::Pass,
            format!(
                "{} judged, carrying {} of {} canary requests ({}); none worse than the baseline",
                count_routes(routes(Verdict::Pass)),
                judged_total,
                canary_total,
                pct(share)
            ),
        )
    } else {
        (
            Verdict::Wait,
            format!(
                "only {} of the canary's {} requests are on routes with enough traffic to judge (needs {}); {} waiting",
                pct(share),
                canary_total,
                pct(cfg.judged_share),
                count_routes(routes(Verdict::Wait))
            ),
        )
    }
}

fn pct(r: f64) -> String {
    format!("{:.1} %", r * 100.0)
}

fn ms(v: f64) -> String {
    format!("{v:.1} ms")
}

fn p_text(p: Option<f64>) -> String {
    match p {
        Some(p) if p < 0.001 => format!(" (p={p:.1e})"),
        // Two significant digits, so a p just under alpha never reads as alpha.
        Some(p) => {
            let decimals = (1.0 - p.log10().floor()).max(0.0) as usize;
            format!(" (p={p:.decimals$})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit LCG (Knuth's MMIX constants): deterministic noise without a
    /// dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// `n` seconds of `rps` requests each, every request failing with
    /// probability `err`, latencies around `p50` and `p99` with ±20 % noise.
    fn seconds(rng: &mut Lcg, n: u64, rps: u64, err: f64, p50: f64, p99: f64) -> Vec<Second> {
        (0..n)
            .map(|i| {
                let failed = (0..rps).filter(|_| rng.next() < err).count() as u64;
                Second {
                    at_ms: i * 1000,
                    requests: rps,
                    failed,
                    p50_ms: p50 * (0.8 + 0.4 * rng.next()),
                    p99_ms: p99 * (0.8 + 0.4 * rng.next()),
                }
            })
            .collect()
    }

    fn one(route: &str, s: Vec<Second>) -> BTreeMap<String, Vec<Second>> {
        BTreeMap::from([(route.to_string(), s)])
    }

    fn verdicts(j: &Judgement) -> Vec<(&str, Metric, Verdict)> {
        j.metrics
            .iter()
            .map(|m| (m.route.as_str(), m.metric, m.verdict))
            .collect()
    }

    #[test]
    fn a_canary_that_fails_requests_fails_naming_the_route() {
        let mut rng = Lcg(1);
        let canary = BTreeMap::from([
            (
                "get".to_string(),
                seconds(&mut rng, 60, 20, 0.12, 20.0, 80.0),
            ),
            (
                "put".to_string(),
                seconds(&mut rng, 60, 20, 0.001, 20.0, 80.0),
            ),
        ]);
        let baseline = BTreeMap::from([
            (
                "get".to_string(),
                seconds(&mut rng, 60, 100, 0.001, 20.0, 80.0),
            ),
            (
                "put".to_string(),
                seconds(&mut rng, 60, 100, 0.001, 20.0, 80.0),
            ),
        ]);
        let j = judge(&canary, &baseline, &CanaryConfig::default());
        assert_eq!(j.verdict, Verdict::Fail, "{j:#?}");
        assert_eq!(
            j.reason,
            "route get: canary errors 12.1 % (145 of 1200) vs baseline 0.1 % (5 of 6000) (p=1.5e-154)"
        );
        let failing: Vec<_> = verdicts(&j)
            .into_iter()
            .filter(|v| v.2 == Verdict::Fail)
            .collect();
        assert_eq!(failing, vec![("get", Metric::ErrorRatio, Verdict::Fail)]);
        let m = &j.metrics[0];
        assert_eq!((m.canary_requests, m.baseline_requests), (1200, 6000));
        assert!(m.p_value.unwrap() < 1e-9, "{m:?}");
    }

    #[test]
    fn a_slower_canary_fails_on_latency() {
        let mut rng = Lcg(2);
        let canary = one("get", seconds(&mut rng, 30, 20, 0.0, 30.0, 90.0));
        let baseline = one("get", seconds(&mut rng, 30, 20, 0.0, 20.0, 80.0));
        let j = judge(&canary, &baseline, &CanaryConfig::default());
        assert_eq!(
            verdicts(&j),
            vec![
                ("get", Metric::ErrorRatio, Verdict::Pass),
                ("get", Metric::P50, Verdict::Fail),
                ("get", Metric::P99, Verdict::Pass),
            ],
            "{j:#?}"
        );
        assert!(
            j.reason.starts_with("route get: canary p50 "),
            "{}",
            j.reason
        );
        // The same shift on a route too fast for it to matter passes.
        let canary = one("get", seconds(&mut rng, 30, 20, 0.0, 1.5, 3.0));
        let baseline = one("get", seconds(&mut rng, 30, 20, 0.0, 1.0, 3.0));
        let j = judge(&canary, &baseline, &CanaryConfig::default());
        assert_eq!(j.verdict, Verdict::Pass, "{j:#?}");
        assert!(j.metrics[1].p_value.unwrap() < 0.01, "{:?}", j.metrics[1]);
    }

    #[test]
    fn equal_groups_pass() {
        let mut rng = Lcg(3);
        let canary = one("get", seconds(&mut rng, 60, 50, 0.01, 20.0, 80.0));
        let baseline = one("get", seconds(&mut rng, 60, 50, 0.01, 20.0, 80.0));
        let j = judge(&canary, &baseline, &CanaryConfig::default());
        assert_eq!(j.verdict, Verdict::Pass, "{j:#?}");
        assert!(
            j.reason
                .starts_with("1 route judged, carrying 3000 of 3000 canary requests (100.0 %)"),
            "{}",
            j.reason
        );
        assert!(j.metrics.iter().all(|m| m.p_value.is_some()));
    }

    #[test]
    fn low_traffic_waits_with_the_numbers() {
        let mut rng = Lcg(4);
        let canary = one("get", seconds(&mut rng, 5, 10, 0.0, 20.0, 80.0));
        let baseline = one("get", seconds(&mut rng, 60, 50, 0.0, 20.0, 80.0));
        let j = judge(&canary, &baseline, &CanaryConfig::default());
        assert_eq!(j.verdict, Verdict::Wait);
        assert!(j.metrics.iter().all(|m| m.verdict == Verdict::Wait));
        assert_eq!(
            j.metrics[0].why,
            "not judged: canary 50 requests in 5 s, baseline 3000 in 60 s; needs 200 requests and 10 s on each side"
        );
        assert!(
            j.reason
                .starts_with("only 0.0 % of the canary's 50 requests"),
            "{}",
            j.reason
        );
        let j = judge(&BTreeMap::new(), &baseline, &CanaryConfig::default());
        assert_eq!(
            (j.verdict, j.reason.as_str()),
            (Verdict::Wait, "no canary traffic yet")
        );
    }

    #[test]
    fn a_pass_needs_most_of_the_canary_traffic_judged() {
        let mut rng = Lcg(5);
        // 80 % of the canary's requests are on a route the baseline lacks.
        let canary = BTreeMap::from([
            (
                "get".to_string(),
                seconds(&mut rng, 30, 10, 0.0, 20.0, 80.0),
            ),
            (
                "new".to_string(),
                seconds(&mut rng, 30, 40, 0.0, 20.0, 80.0),
            ),
        ]);
        let baseline = one("get", seconds(&mut rng, 30, 10, 0.0, 20.0, 80.0));
        let j = judge(&canary, &baseline, &CanaryConfig::default());
        assert_eq!(j.verdict, Verdict::Wait, "{j:#?}");
        assert!(
            j.reason
                .starts_with("only 20.0 % of the canary's 1500 requests"),
            "{}",
            j.reason
        );
        // A trickle on an unjudged route does not hold a pass back.
        let canary = BTreeMap::from([
            (
                "get".to_string(),
                seconds(&mut rng, 30, 100, 0.0, 20.0, 80.0),
            ),
            ("rare".to_string(), seconds(&mut rng, 3, 1, 0.0, 20.0, 80.0)),
        ]);
        let baseline = one("get", seconds(&mut rng, 30, 100, 0.0, 20.0, 80.0));
        assert_eq!(
            judge(&canary, &baseline, &CanaryConfig::default()).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn a_route_only_the_canary_carries_fails_when_it_errors_heavily() {
        let mut rng = Lcg(6);
        let canary = one("new", seconds(&mut rng, 30, 20, 0.5, 20.0, 80.0));
        let j = judge(&canary, &BTreeMap::new(), &CanaryConfig::default());
        assert_eq!(j.verdict, Verdict::Fail, "{j:#?}");
        assert!(
            j.reason
                .starts_with("route new: canary errors 47.8 % (287 of 600)"),
            "{}",
            j.reason
        );
        assert!(
            j.reason.contains("above the absolute bound 20.0 %"),
            "{}",
            j.reason
        );
        assert_eq!(j.metrics[0].p_value, None);
        // A healthy canary-only route is not judged.
        let canary = one("new", seconds(&mut rng, 30, 20, 0.01, 20.0, 80.0));
        assert_eq!(
            judge(&canary, &BTreeMap::new(), &CanaryConfig::default()).verdict,
            Verdict::Wait
        );
    }

    #[test]
    fn a_small_significant_error_increase_within_the_margin_passes() {
        let mut rng = Lcg(7);
        let canary = one("get", seconds(&mut rng, 60, 1000, 0.004, 20.0, 80.0));
        let baseline = one("get", seconds(&mut rng, 60, 1000, 0.001, 20.0, 80.0));
        let j = judge(&canary, &baseline, &CanaryConfig::default());
        assert!(j.metrics[0].p_value.unwrap() < 0.01, "{:?}", j.metrics[0]);
        assert_eq!(j.verdict, Verdict::Pass, "{j:#?}");
        assert!(
            j.metrics[0].why.ends_with("within the margin of 0.5 %"),
            "{}",
            j.metrics[0].why
        );
    }

    #[test]
    fn equal_distributions_rarely_fail() {
        let cfg = CanaryConfig::default();
        let mut failures = 0;
        let mut latency_signals = 0;
        let trials = 200;
        for seed in 0..trials {
            let mut rng = Lcg(1000 + seed);
            let canary = one("get", seconds(&mut rng, 30, 20, 0.02, 20.0, 80.0));
            let baseline = one("get", seconds(&mut rng, 30, 20, 0.02, 20.0, 80.0));
            let j = judge(&canary, &baseline, &cfg);
            assert_ne!(j.verdict, Verdict::Wait);
            failures += usize::from(j.verdict == Verdict::Fail);
            // Without the effect-size gates, the tests alone stay near alpha.
            latency_signals += usize::from(j.metrics[1].p_value.unwrap() < 0.05);
        }
        assert!(failures < 5, "{failures} of {trials} equal canaries failed");
        assert!(
            (2..=20).contains(&latency_signals),
            "{latency_signals} of {trials} p50 tests below 0.05"
        );
    }

    #[test]
    fn broken_samples_neither_panic_nor_poison_the_results() {
        let mut rng = Lcg(9);
        let mut canary = seconds(&mut rng, 30, 20, 0.0, 20.0, 80.0);
        canary[0].p50_ms = f64::NAN;
        canary[1].p99_ms = f64::INFINITY;
        canary[2].failed = 1_000;
        let baseline = seconds(&mut rng, 30, 20, 0.0, 20.0, 80.0);
        let j = judge(
            &one("get", canary),
            &one("get", baseline),
            &CanaryConfig::default(),
        );
        assert!(j.metrics.iter().all(|m| m.canary.is_finite()), "{j:#?}");
        assert!(j.metrics[0].canary <= 1.0, "{:?}", j.metrics[0]);
        let back: Judgement = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }

    #[test]
    fn p_values_read_with_two_significant_digits() {
        assert_eq!(p_text(Some(0.0098)), " (p=0.0098)");
        assert_eq!(p_text(Some(0.5)), " (p=0.50)");
        assert_eq!(p_text(Some(1e-9)), " (p=1.0e-9)");
        assert_eq!(p_text(None), "");
    }

    #[test]
    fn judgements_serialize_with_snake_case_names() {
        let mut rng = Lcg(8);
        let canary = one("get", seconds(&mut rng, 30, 20, 0.0, 20.0, 80.0));
        let j = judge(&canary, &canary, &CanaryConfig::default());
        let json = serde_json::to_value(&j).unwrap();
        assert_eq!(json["verdict"], "pass");
        assert_eq!(json["metrics"][0]["metric"], "error_ratio");
        let back: Judgement = serde_json::from_value(json).unwrap();
        assert_eq!(back, j);
        let cfg: CanaryConfig = serde_json::from_str(r#"{"alpha": 0.05}"#).unwrap();
        assert_eq!(cfg.alpha, 0.05);
        assert_eq!(cfg.min_requests, 200);
    }
}
