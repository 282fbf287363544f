//! Robust statistics for telling an outlier from its peers.
//!
//! A gray failure shows up as one instance, zone or region that looks worse
//! than its peers while every absolute health check stays green. The AWS
//! multi-AZ pattern (see DESIGN.md, "Defaults worth knowing") combines several
//! peer tests: z-score ≥ 2–3, MAD score ≥ 3, IQR with k = 1.5 and a
//! chi-squared test of error proportions with p ≤ 0.05. Each test has a blind
//! spot (the z-score is dragged by the outlier itself, MAD collapses when most
//! peers are identical, IQR needs a few peers), so detectors combine them;
//! this module only supplies the arithmetic.
//!
//! Conventions, so callers never have to guess:
//! - Every function is pure and deterministic. Empty input or an undefined
//!   result (zero spread, zero MAD, …) gives `None`, never a panic, NaN or
//!   infinity: a detector must be able to treat `None` as "no evidence".
//! - Inputs are expected to be finite. Sorting uses `f64::total_cmp`, so a
//!   stray NaN cannot panic or make the order depend on the input order.

/// Scale factor that makes the MAD a consistent estimator of the standard
/// deviation for normally distributed data (1 / Φ⁻¹(3/4)), so MAD scores are
/// on the same scale as z-scores and the usual thresholds (3) carry over.
pub const MAD_SCALE: f64 = 1.4826;

/// Arithmetic mean; `None` for an empty slice.
pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    Some(xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Population standard deviation (divides by n, not n − 1): the peers are the
/// whole population being compared, not a sample of a larger one. `None` for
/// an empty slice; a single value has spread 0.
pub fn stddev(xs: &[f64]) -> Option<f64> {
    let m = mean(xs)?;
    // Two-pass (deviations from the mean) rather than E[x²] − E[x]², which
    // cancels catastrophically when values are large and close together
    // (e.g. latencies in microseconds).
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
    Some(var.sqrt())
}

/// True for x > 0; false for 0, negatives and NaN. Guards are written as
/// `!is_positive(x)` so that a NaN (from bad input) is rejected along with
/// zero instead of slipping through a `x <= 0.0` test.
fn is_positive(x: f64) -> bool {
    x > 0.0
}

/// Sorted copy; `total_cmp` gives a total order so the result never depends
/// on the input order and never panics.
fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Quantile of an already sorted, non-empty slice, linear interpolation
/// between closest ranks (Hyndman & Fan type 7, the default of R and NumPy),
/// so results match what operators get from their usual tools.
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// Median; the mean of the two middle values for an even count. `None` for an
/// empty slice.
pub fn median(xs: &[f64]) -> Option<f64> {
    quantile(xs, 0.5)
}

/// The `q`-quantile (0 ≤ q ≤ 1) with linear interpolation between closest
/// ranks (type 7: q = 0 is the minimum, q = 1 the maximum). `None` for an
/// empty slice or a `q` outside [0, 1] (including NaN).
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    Some(quantile_sorted(&sorted(xs), q))
}

/// How many standard deviations `x` lies above (positive) or below the mean
/// of its peers. `None` with fewer than 2 peers or when the peers do not vary
/// at all: a spread of 0 would make any difference infinitely significant,
/// which is noise, not evidence.
pub fn z_score(x: f64, peers: &[f64]) -> Option<f64> {
    if peers.len() < 2 {
        return None;
    }
    let m = mean(peers)?;
    let sd = stddev(peers)?;
    if !is_positive(sd) {
        return None;
    }
    Some((x - m) / sd)
}

/// Robust z-score: (x − median) / (1.4826 · MAD), MAD being the median of the
/// absolute deviations from the median. Unlike the z-score, one extreme peer
/// barely moves it. `None` without peers or when the MAD is 0 (at least half
/// of the peers are identical), for the same reason as a zero spread.
pub fn mad_score(x: f64, peers: &[f64]) -> Option<f64> {
    let med = median(peers)?;
    let deviations: Vec<f64> = peers.iter().map(|p| (p - med).abs()).collect();
    let mad = median(&deviations)?;
    if !is_positive(mad) {
        return None;
    }
    Some((x - med) / (MAD_SCALE * mad))
}

/// Tukey's fence, upper side only: `x > Q3 + k·IQR` (k = 1.5 by convention).
/// Only the upper side matters for error rates and latencies — being better
/// than the peers is not a failure. False without peers (no evidence).
pub fn iqr_outlier(x: f64, peers: &[f64], k: f64) -> bool {
    if peers.is_empty() {
        return false;
    }
    let v = sorted(peers);
    let q1 = quantile_sorted(&v, 0.25);
    let q3 = quantile_sorted(&v, 0.75);
    x > q3 + k * (q3 - q1)
}

/// Pearson chi-squared test of homogeneity of error proportions across groups
/// (a 2×k table: errors and successes per group). Returns the p-value, the
/// probability of a spread at least this large if every group had the same
/// error rate; a small p (≤ 0.05 in the AWS pattern) says "this difference is
/// not chance". Unlike a ratio threshold it accounts for volume: 2 errors out
/// of 10 is weaker evidence than 200 out of 1000.
///
/// Groups with a total of 0 carry no information and are skipped. `None` when
/// the slices differ in length, a group has more errors than requests, fewer
/// than 2 groups remain, or the pooled error proportion is 0 or 1 (every cell
/// expectation on one side is 0, the statistic is undefined — and there is
/// nothing to localize anyway).
pub fn chi_squared_p(errors: &[u64], totals: &[u64]) -> Option<f64> {
    if errors.len() != totals.len() {
        return None;
    }
    let mut groups = Vec::with_capacity(totals.len());
    for (&e, &n) in errors.iter().zip(totals) {
        if e > n {
            return None;
        }
        if n > 0 {
            groups.push((e as f64, n as f64));
        }
    }
    if groups.len() < 2 {
        return None;
    }
    let total_errors: f64 = groups.iter().map(|g| g.0).sum();
    let total: f64 = groups.iter().map(|g| g.1).sum();
    let p = total_errors / total;
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    // Σ over both cells of each group of (observed − expected)² / expected.
    // The error cell and the success cell deviate by the same amount with
    // opposite signs, so per group this is d² / (n·p) + d² / (n·(1 − p)).
    let stat: f64 = groups
        .iter()
        .map(|&(e, n)| {
            let d = e - n * p;
            d * d / (n * p) + d * d / (n * (1.0 - p))
        })
        .sum();
    chi_squared_sf(stat, (groups.len() - 1) as f64)
}

/// Survival function (upper tail) of the chi-squared distribution with `df`
/// degrees of freedom: P(X ≥ x) = Q(df/2, x/2). `None` for df ≤ 0, a
/// negative or non-finite `x`.
pub fn chi_squared_sf(x: f64, df: f64) -> Option<f64> {
    if !is_positive(df) || !x.is_finite() || x < 0.0 {
        return None;
    }
    gamma_q(df / 2.0, x / 2.0)
}

/// Convergence limits of the Numerical Recipes routines: `EPS` is the relative
/// precision at which a series or fraction is considered converged, `FPMIN`
/// keeps Lentz's method away from dividing by zero, `ITMAX` bounds the loop so
/// a pathological input cannot spin (convergence needs about √a iterations).
const EPS: f64 = 1e-15;
const FPMIN: f64 = 1e-300;
const ITMAX: usize = 10_000;

/// Regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a).
/// Uses the series for P (then Q = 1 − P) where x < a + 1, where it converges
/// quickly, and the continued fraction for Q elsewhere, where the series
/// would need many terms and Q would suffer from cancellation in 1 − P
/// (Numerical Recipes, §6.2). `None` for a ≤ 0 or x < 0.
pub fn gamma_q(a: f64, x: f64) -> Option<f64> {
    if !is_positive(a) || !a.is_finite() || x.is_nan() || x < 0.0 {
        return None;
    }
    if x == 0.0 {
        return Some(1.0);
    }
    if x.is_infinite() {
        return Some(0.0);
    }
    let q = if x < a + 1.0 {
        1.0 - gamma_p_series(a, x)
    } else {
        gamma_q_continued_fraction(a, x)
    };
    Some(q.clamp(0.0, 1.0))
}

/// P(a, x) by its series representation, for x < a + 1.
fn gamma_p_series(a: f64, x: f64) -> f64 {
    let mut ap = a;
    let mut del = 1.0 / a;
    let mut sum = del;
    for _ in 0..ITMAX {
        ap += 1.0;
        del *= x / ap;
        sum += del;
        if del.abs() < sum.abs() * EPS {
            break;
        }
    }
    sum * (-x + a * x.ln() - ln_gamma(a)).exp()
}

/// Q(a, x) by its continued fraction, evaluated with the modified Lentz
/// method, for x ≥ a + 1.
fn gamma_q_continued_fraction(a: f64, x: f64) -> f64 {
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / FPMIN;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..=ITMAX {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = b + an / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    (-x + a * x.ln() - ln_gamma(a)).exp() * h
}

/// ln Γ(x) for x > 0 by the Lanczos approximation (g = 7, 9 coefficients,
/// relative error around 1e-15), with the reflection formula below 0.5 where
/// the approximation loses accuracy. Working in logarithms keeps Γ from
/// overflowing for large degrees of freedom. NaN for x ≤ 0 (not needed here:
/// callers pass df/2 > 0).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if !is_positive(x) {
        return f64::NAN;
    }
    if x < 0.5 {
        // Γ(x)·Γ(1 − x) = π / sin(πx), and sin(πx) > 0 on (0, 0.5).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Ordinary least-squares line through `points` (x, y), as (slope,
/// intercept). `None` with fewer than 2 points or when every x is the same
/// (a vertical line has no slope). Sums are taken around the means so that
/// large x values (Unix timestamps) do not cancel catastrophically.
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for &(x, y) in points {
        sxx += (x - mx) * (x - mx);
        sxy += (x - mx) * (y - my);
    }
    if !is_positive(sxx) {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// Coefficient of determination of the line `y = slope·x + intercept` over
/// `points`: the share of the variance of y that the line explains (1 for a
/// perfect fit, ≤ 0 for a line no better than the mean). `None` for an empty
/// slice or when y does not vary (nothing to explain).
pub fn r_squared(points: &[(f64, f64)], slope: f64, intercept: f64) -> Option<f64> {
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    let my = mean(&ys)?;
    let ss_tot: f64 = ys.iter().map(|y| (y - my) * (y - my)).sum();
    if !is_positive(ss_tot) {
        return None;
    }
    let ss_res: f64 = points
        .iter()
        .map(|&(x, y)| {
            let r = y - (slope * x + intercept);
            r * r
        })
        .sum();
    Some(1.0 - ss_res / ss_tot)
}

/// Upper tail of the standard normal distribution, P(Z ≥ z). Computed as
/// ½·Q(½, z²/2) (erfc by the incomplete gamma function) for z ≥ 0, so a far
/// tail keeps its relative precision instead of vanishing in 1 − Φ(z).
/// `None` for NaN.
pub fn normal_sf(z: f64) -> Option<f64> {
    if z.is_nan() {
        return None;
    }
    let tail = 0.5 * gamma_q(0.5, z * z / 2.0)?;
    Some(if z >= 0.0 { tail } else { 1.0 - tail })
}

/// The Mann-Whitney U test of sample `a` against sample `b`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MannWhitney {
    /// U of `a`: pairs (x from a, y from b) with x > y, ties counting ½.
    pub u: f64,
    /// (U − n_a·n_b/2 − ½) / σ, σ corrected for ties.
    pub z: f64,
    /// One-sided p-value that values of `a` tend to be larger than those of
    /// `b` (P(X > Y) > ½).
    pub p_greater: f64,
}

/// Mann-Whitney U (Wilcoxon rank-sum) test, one-sided: does `a` tend to be
/// larger than `b`? Rank-based, so it assumes no distribution and one
/// extreme value weighs no more than any other larger value — what
/// per-second latencies, skewed and spiky, need. Midranks for ties, the
/// normal approximation with the tie-corrected variance and a continuity
/// correction of ½ (as SciPy's `mannwhitneyu(..., method="asymptotic")`),
/// which is slightly conservative: within about 0.002 of the exact p-value
/// from 8 values a side and closer above.
///
/// `None` when either sample is empty or every value is tied (σ = 0: the
/// samples cannot be told apart).
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let n = na + nb;
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks are 1-based: the group i..=j shares the mean of i+1..=j+1.
        let midrank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum_a += midrank * all[i..=j].iter().filter(|v| v.1).count() as f64;
        i = j + 1;
    }
    let u = rank_sum_a - na * (na + 1.0) / 2.0;
    let var = na * nb / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if !is_positive(var) {
        return None;
    }
    let z = (u - na * nb / 2.0 - 0.5) / var.sqrt();
    Some(MannWhitney {
        u,
        z,
        p_greater: normal_sf(z)?,
    })
}

/// Two-proportion z-test with the pooled proportion: is `failed_a / n_a`
/// larger than `failed_b / n_b`? Returns (z, one-sided p). Unlike comparing
/// ratios it accounts for volume: 3 failures in 100 is no evidence against
/// 1 in 100, 300 in 10 000 against 100 in 10 000 is.
///
/// With Yates' continuity correction (the difference shrunk toward 0 by
/// ½·(1/n_a + 1/n_b)): error counts are small (a dozen failures in a bake
/// window), where the plain normal approximation rejects about twice as
/// often as alpha says; corrected it tracks Fisher's exact test, and with
/// thousands of requests the correction vanishes.
///
/// `None` when a side has no requests or more failures than requests, or
/// the pooled proportion is 0 or 1 (no variance: both sides are equal, all
/// good or all failed).
pub fn two_proportions(failed_a: u64, n_a: u64, failed_b: u64, n_b: u64) -> Option<(f64, f64)> {
    if n_a == 0 || n_b == 0 || failed_a > n_a || failed_b > n_b {
        return None;
    }
    let (fa, na, fb, nb) = (failed_a as f64, n_a as f64, failed_b as f64, n_b as f64);
    let pooled = (fa + fb) / (na + nb);
    let var = pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb);
    if !is_positive(var) {
        return None;
    }
    let d = fa / na - fb / nb;
    let correction = 0.5 * (1.0 / na + 1.0 / nb);
    let shrunk = if d.abs() <= correction {
        0.0
    } else {
        d - correction.copysign(d)
    };
    let z = shrunk / var.sqrt();
    Some((z, normal_sf(z)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_and_population_stddev() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), Some(5.0));
        // Population stddev of this classic set is exactly 2 (sample would be ≈ 2.138).
        assert_eq!(stddev(&xs), Some(2.0));
        assert_eq!(stddev(&[3.0]), Some(0.0));
        assert_eq!(mean(&[]), None);
        assert_eq!(stddev(&[]), None);
    }

    #[test]
    fn stddev_is_stable_for_large_close_values() {
        let xs = [1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0];
        assert!(close(stddev(&xs).unwrap(), (2.0f64 / 3.0).sqrt(), 1e-6));
    }

    #[test]
    fn median_odd_even_and_order_independent() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn quantile_interpolates_linearly() {
        let xs = [10.0, 40.0, 20.0, 30.0];
        assert_eq!(quantile(&xs, 0.0), Some(10.0));
        assert_eq!(quantile(&xs, 1.0), Some(40.0));
        // h = 3 · 0.25 = 0.75 → 10 + 0.75 · 10
        assert_eq!(quantile(&xs, 0.25), Some(17.5));
        // h = 3 · 0.9 = 2.7 → 30 + 0.7 · 10
        assert!(close(quantile(&xs, 0.9).unwrap(), 37.0, 1e-12));
        assert_eq!(quantile(&xs, 1.5), None);
        assert_eq!(quantile(&xs, -0.1), None);
        assert_eq!(quantile(&xs, f64::NAN), None);
        assert_eq!(quantile(&[7.0], 0.3), Some(7.0));
    }

    #[test]
    fn z_score_basics() {
        let peers = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(z_score(11.0, &peers), Some(3.0));
        assert_eq!(z_score(3.0, &peers), Some(-1.0));
        assert_eq!(z_score(1.0, &[1.0]), None, "one peer");
        assert_eq!(z_score(5.0, &[1.0, 1.0, 1.0]), None, "zero spread");
    }

    #[test]
    fn mad_score_is_robust_to_one_extreme_peer() {
        let peers = [1.0, 2.0, 3.0, 4.0, 100.0];
        // median 3, deviations [2,1,0,1,97] → MAD 1
        let s = mad_score(9.0, &peers).unwrap();
        assert!(close(s, 6.0 / MAD_SCALE, 1e-12), "{s}");
        // The z-score is dragged by the 100 and sees nothing unusual about 9.
        assert!(z_score(9.0, &peers).unwrap() < 0.0);
        assert_eq!(mad_score(9.0, &[1.0, 1.0, 1.0, 5.0]), None, "MAD 0");
        assert_eq!(mad_score(9.0, &[]), None);
    }

    #[test]
    fn iqr_upper_fence() {
        // Q1 = 2, Q3 = 4 (type 7 on 1..=5), IQR 2 → fence 4 + 1.5·2 = 7
        let peers = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!(!iqr_outlier(7.0, &peers, 1.5));
        assert!(iqr_outlier(7.01, &peers, 1.5));
        assert!(
            !iqr_outlier(-100.0, &peers, 1.5),
            "lower side is not a failure"
        );
        assert!(!iqr_outlier(100.0, &[], 1.5));
    }

    #[test]
    fn ln_gamma_known_values() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-13));
        assert!(close(ln_gamma(2.0), 0.0, 1e-13));
        assert!(close(ln_gamma(10.0), 362_880f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-13
        ));
        // Reflection branch: Γ(0.25) = 3.625609908221908...
        assert!(close(ln_gamma(0.25), 3.625_609_908_221_908f64.ln(), 1e-12));
        // Large argument (Stirling territory): ln Γ(100) = ln(99!)
        assert!(close(ln_gamma(100.0), 359.134_205_369_575_4, 1e-9));
    }

    #[test]
    fn chi_squared_sf_critical_values() {
        // Table values of the 0.05 critical points.
        assert!(close(chi_squared_sf(3.841, 1.0).unwrap(), 0.05, 1e-3));
        assert!(close(chi_squared_sf(5.991, 2.0).unwrap(), 0.05, 1e-3));
        assert!(close(chi_squared_sf(11.07, 5.0).unwrap(), 0.05, 1e-3));
        // 0.01 critical point for 1 df, and the median for 1 df.
        assert!(close(chi_squared_sf(6.635, 1.0).unwrap(), 0.01, 1e-4));
        assert!(close(chi_squared_sf(0.454_936, 1.0).unwrap(), 0.5, 1e-5));
    }

    #[test]
    fn chi_squared_sf_two_df_is_exponential_on_both_branches() {
        // With 2 df the survival function is exactly exp(−x/2): checks the
        // series branch (x/2 < 2) and the continued fraction (x/2 ≥ 2).
        for x in [0.1, 1.0, 2.5, 4.0, 10.0, 40.0] {
            let got = chi_squared_sf(x, 2.0).unwrap();
            assert!(close(got, (-x / 2.0f64).exp(), 1e-12), "x={x} got={got}");
        }
        assert_eq!(chi_squared_sf(0.0, 3.0), Some(1.0));
        assert_eq!(chi_squared_sf(-1.0, 3.0), None);
        assert_eq!(chi_squared_sf(1.0, 0.0), None);
    }

    #[test]
    fn gamma_q_matches_erfc_for_half() {
        // Q(1/2, x) = erfc(√x); erfc(1) = 0.157299207050285...
        assert!(close(
            gamma_q(0.5, 1.0).unwrap(),
            0.157_299_207_050_285,
            1e-12
        ));
        assert_eq!(gamma_q(0.0, 1.0), None);
    }

    #[test]
    fn chi_squared_one_bad_zone_is_significant() {
        // One zone at 20 % errors, two at 0.1 %.
        let p = chi_squared_p(&[200, 1, 1], &[1000, 1000, 1000]).unwrap();
        assert!(p < 1e-50, "p = {p}");
    }

    #[test]
    fn chi_squared_equal_rates_not_significant() {
        let p = chi_squared_p(&[10, 10, 10], &[1000, 1000, 1000]).unwrap();
        assert!(close(p, 1.0, 1e-12), "p = {p}");
    }

    #[test]
    fn chi_squared_known_statistic() {
        // 2×2 table: errors 10/100 vs 20/100 → pooled 0.15, statistic
        // = 4 · 25 / (100·0.15·0.85)... computed by hand:
        // d = ±5 per group; per group 25/15 + 25/85; total 2·(25/15 + 25/85)
        let stat = 2.0 * (25.0 / 15.0 + 25.0 / 85.0);
        let expected = chi_squared_sf(stat, 1.0).unwrap();
        let p = chi_squared_p(&[10, 20], &[100, 100]).unwrap();
        assert!(close(p, expected, 1e-15));
        // stat ≈ 3.92 is just past the 3.841 critical value.
        assert!(p < 0.05 && p > 0.04, "p = {p}");
    }

    #[test]
    fn chi_squared_volume_matters() {
        // 10 % vs 5 %: on 10 and 100 requests that is chance (statistic
        // ≈ 0.44); on 100× the traffic the same proportions are decisive.
        let small = chi_squared_p(&[1, 5], &[10, 100]).unwrap();
        let large = chi_squared_p(&[100, 500], &[1000, 10000]).unwrap();
        assert!(small > 0.05, "small = {small}");
        assert!(large < 1e-6, "large = {large}");
    }

    #[test]
    fn chi_squared_degenerate_inputs() {
        assert_eq!(chi_squared_p(&[0, 0], &[100, 100]), None, "pooled 0");
        assert_eq!(chi_squared_p(&[100, 100], &[100, 100]), None, "pooled 1");
        assert_eq!(chi_squared_p(&[5], &[100]), None, "one group");
        assert_eq!(
            chi_squared_p(&[5, 0], &[100, 0]),
            None,
            "one non-empty group"
        );
        assert_eq!(chi_squared_p(&[5, 1], &[100]), None, "length mismatch");
        assert_eq!(
            chi_squared_p(&[5, 101], &[100, 100]),
            None,
            "errors > total"
        );
        // Empty groups are skipped rather than poisoning the test.
        assert_eq!(
            chi_squared_p(&[10, 0, 20], &[100, 0, 100]),
            chi_squared_p(&[10, 20], &[100, 100])
        );
    }

    #[test]
    fn linear_fit_exact_and_noisy() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 - 2.0)).collect();
        let (m, b) = linear_fit(&pts).unwrap();
        assert!(close(m, 3.0, 1e-12) && close(b, -2.0, 1e-12));
        assert!(close(r_squared(&pts, m, b).unwrap(), 1.0, 1e-12));
        // Noisy points, fit checked against the hand computation
        // (Sxx = 5, Sxy = 3 around the means 1.5, 1.5).
        let pts = [(0.0, 1.0), (1.0, 0.0), (2.0, 3.0), (3.0, 2.0)];
        let (m, b) = linear_fit(&pts).unwrap();
        assert!(close(m, 0.6, 1e-12) && close(b, 0.6, 1e-12), "{m} {b}");
        assert_eq!(linear_fit(&[(1.0, 1.0)]), None);
        assert_eq!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn linear_fit_with_unix_timestamps() {
        let t0 = 1.7e9;
        let pts: Vec<(f64, f64)> = (0..60).map(|i| (t0 + i as f64, 0.5 * i as f64)).collect();
        let (m, b) = linear_fit(&pts).unwrap();
        assert!(close(m, 0.5, 1e-9), "{m}");
        assert!(close(m * (t0 + 10.0) + b, 5.0, 1e-3));
    }

    #[test]
    fn r_squared_of_a_useless_line() {
        let pts = [(0.0, 1.0), (1.0, -1.0), (2.0, 1.0), (3.0, -1.0)];
        // The mean line explains nothing.
        assert!(close(r_squared(&pts, 0.0, 0.0).unwrap(), 0.0, 1e-12));
        assert_eq!(r_squared(&[(0.0, 1.0), (1.0, 1.0)], 0.0, 1.0), None);
    }

    #[test]
    fn normal_upper_tail_matches_erfc() {
        // Reference values: 0.5·erfc(z/√2) from Python's math.erfc.
        assert_eq!(normal_sf(0.0), Some(0.5));
        assert!(close(
            normal_sf(1.96).unwrap(),
            0.024_997_895_148_220_435,
            1e-12
        ));
        assert!(close(
            normal_sf(-1.0).unwrap(),
            0.841_344_746_068_542_9,
            1e-12
        ));
        assert!(close(
            normal_sf(3.0).unwrap(),
            0.001_349_898_031_630_095_7,
            1e-13
        ));
        let far = normal_sf(6.0).unwrap();
        assert!(close(far / 9.865_876_450_377_012e-10, 1.0, 1e-9), "{far}");
        assert_eq!(normal_sf(f64::NAN), None);
    }

    /// Reference values computed from the definitions (U by counting pairs,
    /// tie-corrected variance, continuity correction), cross-checked with an
    /// exact permutation p-value, given in each comment.
    #[test]
    fn mann_whitney_known_values() {
        // (a, b, U, z, p_greater)
        type Case<'a> = (&'a [f64], &'a [f64], f64, f64, f64);
        let cases: [Case; 4] = [
            // exact p = 0.0556
            (
                &[19.0, 22.0, 16.0, 29.0, 24.0],
                &[20.0, 11.0, 17.0, 12.0],
                17.0,
                1.592_168_332_809_065_7,
                0.055_673_443_266_570_24,
            ),
            // complete separation, exact p = 1/252 = 0.00397
            (
                &[6.0, 7.0, 8.0, 9.0, 10.0],
                &[1.0, 2.0, 3.0, 4.0, 5.0],
                25.0,
                2.506_718_245_762_048_7,
                0.006_092_890_177_672_409,
            ),
            // ties, exact p = 0.1059
            (
                &[3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 6.0, 8.0],
                &[1.0, 2.0, 2.0, 4.0, 4.0, 5.0, 6.0, 7.0],
                44.0,
                1.227_765_781_649_605_3,
                0.109_767_452_207_770_95,
            ),
            // exact p = 0.00927
            (
                &[14.2, 15.1, 16.3, 17.0, 18.4, 19.9, 21.5, 22.0, 23.3, 24.8],
                &[12.0, 13.1, 13.9, 14.5, 15.0, 15.8, 16.1, 17.2, 18.0, 19.0],
                81.0,
                2.305_583_285_356_286,
                0.010_566_964_064_580_558,
            ),
        ];
        for (a, b, u, z, p) in cases {
            let r = mann_whitney(a, b).unwrap();
            assert!(close(r.u, u, 1e-12), "{a:?}: {r:?}");
            assert!(close(r.z, z, 1e-12), "{a:?}: {r:?}");
            assert!(close(r.p_greater, p, 1e-12), "{a:?}: {r:?}");
        }
    }

    #[test]
    fn mann_whitney_is_one_sided_and_undefined_without_spread() {
        let low = [1.0, 2.0, 3.0, 4.0, 5.0];
        let high = [6.0, 7.0, 8.0, 9.0, 10.0];
        let r = mann_whitney(&low, &high).unwrap();
        assert_eq!(r.u, 0.0);
        assert!(r.p_greater > 0.99, "{r:?}");
        let same = mann_whitney(&low, &low).unwrap();
        assert!(close(same.u, 12.5, 1e-12));
        assert!(same.p_greater > 0.4, "{same:?}");
        assert_eq!(mann_whitney(&[2.0, 2.0], &[2.0, 2.0, 2.0]), None);
        assert_eq!(mann_whitney(&[], &low), None);
    }

    #[test]
    fn two_proportions_known_values() {
        // 45/100 vs 30/100: pooled 0.375, z = (0.15 − 0.01) / √(0.375·0.625·0.02)
        // (2.19 without the continuity correction).
        let (z, p) = two_proportions(45, 100, 30, 100).unwrap();
        assert!(close(z, 2.044_830_881_352_620_4, 1e-12), "{z}");
        assert!(close(p, 0.020_435_767_044_503_082, 1e-12), "{p}");
        let (z, p) = two_proportions(30, 100, 45, 100).unwrap();
        assert!(close(z, -2.044_830_881_352_620_4, 1e-12), "{z}");
        assert!(close(p, 0.979_564_232_955_496_9, 1e-12), "{p}");
        // 22/600 vs 9/600: p = 0.0145, 0.009 uncorrected.
        let (_, p) = two_proportions(22, 600, 9, 600).unwrap();
        assert!(close(p, 0.014_493_852_059_864_417, 1e-12), "{p}");
        // A difference within the correction is no difference.
        assert_eq!(two_proportions(1, 100, 1, 101), Some((0.0, 0.5)));
        // Volume: the same ratios with 100× the traffic are overwhelming.
        assert!(two_proportions(4_500, 10_000, 3_000, 10_000).unwrap().1 < 1e-50);
        assert_eq!(two_proportions(0, 100, 0, 50), None);
        assert_eq!(two_proportions(10, 10, 5, 5), None);
        assert_eq!(two_proportions(1, 0, 0, 5), None);
        assert_eq!(two_proportions(6, 5, 0, 5), None);
    }
}
