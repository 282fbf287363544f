//! Did an action help? Measured where users feel it: the share of the
//! service's requests that failed or were slow, for the users the action
//! concerns, before acting and once it has had time to work.
//!
//! Users are known by the region whose edges their requests entered through
//! (a snapshot's `region`), and every series of that edge counts — requests
//! it forwarded to another region included — so moving users away from a
//! broken place lowers *their* numbers. Comparing the broken place's own
//! error rate instead cannot see that: an evacuated region keeps failing the
//! little it still serves, and the check said "not verified" while users
//! were fine.
//!
//! Pure and deterministic: snapshots and times in, numbers out. The tracker
//! owns one [`UserSignals`] and judges every action with [`check`]; the
//! control plane's audit log records the tracker's verdicts, so the incident
//! and the audit log cannot disagree about one action.

use std::collections::BTreeMap;

use switchyard_model::check::{Check, CheckOutcome, UserShare, Users};
use switchyard_model::signals::Snapshot;
use switchyard_model::Op;

/// How long before an incident's onset its baseline p99 is measured.
pub const BASELINE_MS: u64 = 60_000;

/// Fewer requests than this in a window say nothing either way: the check
/// is inconclusive rather than paging people on noise.
pub const MIN_REQUESTS: u64 = 20;

/// One-sided z above which a fall in the bad share is more than noise (95 %).
const Z_FELL: f64 = 1.645;

/// How a check is judged; the tracker's config supplies each number.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRules {
    /// How long after acting the "after" window ends.
    pub verify_after_ms: u64,
    /// Length of the windows before and after.
    pub window_ms: u64,
    /// A share of failed or slow requests at or under this is fine whatever
    /// it was before.
    pub error_bound: f64,
    /// A fixed latency bound for every service, when configured.
    pub slow_p99_ms: Option<f64>,
    /// Without a fixed bound: twice the baseline p99, and at least this far
    /// above it.
    pub slow_margin_ms: f64,
}

impl CheckRules {
    /// The p99 above which a series' requests are slow: the fixed bound, or
    /// twice the baseline and at least `slow_margin_ms` above it, so a few
    /// milliseconds of jitter on a fast service are not "slow". `None`
    /// without either: then only failures count.
    pub fn slow_bound(&self, baseline_p99_ms: Option<f64>) -> Option<f64> {
        self.slow_p99_ms
            .or_else(|| baseline_p99_ms.map(|b| (2.0 * b).max(b + self.slow_margin_ms)))
    }

    /// `[acted - window, acted)`.
    pub fn before(&self, acted_ms: u64) -> (u64, u64) {
        (acted_ms.saturating_sub(self.window_ms), acted_ms)
    }

    /// `[acted + verify_after - window, acted + verify_after)`, never
    /// reaching back before the action.
    pub fn after(&self, acted_ms: u64) -> (u64, u64) {
        let end = acted_ms + self.verify_after_ms;
        (end.saturating_sub(self.window_ms).max(acted_ms), end)
    }
}

/// One series of one edge in one second, reduced to what a check reads.
#[derive(Debug, Clone, Copy)]
struct Obs {
    requests: u64,
    failed: u64,
    p99_ms: f64,
}

/// The edges' series of the last minutes by second, service and the region
/// the requests entered through.
#[derive(Debug, Default)]
pub struct UserSignals {
    seconds: BTreeMap<u64, BTreeMap<String, BTreeMap<String, Vec<Obs>>>>,
    keep_ms: u64,
}

impl UserSignals {
    /// Keeps `keep_ms` of signals: enough for a baseline before an onset
    /// and for an action's windows.
    pub fn new(keep_ms: u64) -> UserSignals {
        UserSignals {
            seconds: BTreeMap::new(),
            keep_ms,
        }
    }

    /// One edge's snapshot. Every series counts, a forwarded one (route
    /// `forward`, no instance) too: those are this edge's users as well.
    /// Requests another region's edge forwarded here are not: their users
    /// entered there and are counted there, in its `forward` series, and
    /// counting them again here would make a region's users look worse the
    /// more of them DNS sends elsewhere during an evacuation.
    pub fn ingest(&mut self, s: &Snapshot) {
        // The second a snapshot covers ends at its `at_ms`.
        let sec = s.at_ms.saturating_sub(1) / 1000;
        let by_service = self.seconds.entry(sec).or_default();
        for x in s
            .series
            .iter()
            .filter(|x| x.requests > 0 && !x.forwarded_in)
        {
            by_service
                .entry(x.service.clone())
                .or_default()
                .entry(s.region.clone())
                .or_default()
                .push(Obs {
                    requests: x.requests,
                    failed: x.failures().min(x.requests),
                    p99_ms: x.p99_ms,
                });
        }
        let keep_s = self.keep_ms.div_ceil(1000);
        if let Some(first) = self.seconds.keys().next().copied() {
            if sec > first + keep_s {
                self.seconds = self.seconds.split_off(&(sec - keep_s));
            }
        }
    }

    fn each<'a>(
        &'a self,
        service: &'a str,
        users: &'a Users,
        from_ms: u64,
        to_ms: u64,
    ) -> impl Iterator<Item = (&'a String, &'a Obs)> + 'a {
        // Whole seconds inside the window only: the second an action was
        // taken in belongs to neither side.
        let (first, end) = (from_ms.div_ceil(1000), to_ms / 1000);
        self.seconds
            .range(first..end.max(first))
            .filter_map(move |(_, by)| by.get(service))
            .flat_map(move |by_region| {
                by_region
                    .iter()
                    .filter(move |(r, _)| users.includes(r))
                    .flat_map(|(r, obs)| obs.iter().map(move |o| (r, o)))
            })
    }

    /// The users' requests in the whole seconds of `[from_ms, to_ms)`: failed,
    /// and slow — every request that did not fail in a series whose p99 is
    /// above `slow_p99_ms`. Coarse (a series' p99 over the bound says at
    /// least 1 % of it was slow, and all of it is counted) but the same
    /// before and after, so the comparison is fair.
    pub fn share(
        &self,
        service: &str,
        users: &Users,
        from_ms: u64,
        to_ms: u64,
        slow_p99_ms: Option<f64>,
    ) -> UserShare {
        let mut out = UserShare {
            from_ms,
            to_ms,
            ..UserShare::default()
        };
        for (_, o) in self.each(service, users, from_ms, to_ms) {
            out.requests += o.requests;
            out.failed += o.failed;
            if slow_p99_ms.is_some_and(|b| o.p99_ms > b) {
                out.slow += o.requests - o.failed;
            }
        }
        out
    }

    /// Per region the users entered through, the request-weighted median of
    /// the series' p99 over `[from_ms, to_ms)`: a typical request's tail, not
    /// the worst second's.
    pub fn baseline_p99(&self, service: &str, from_ms: u64, to_ms: u64) -> BTreeMap<String, f64> {
        let mut by_region: BTreeMap<&String, Vec<(f64, u64)>> = BTreeMap::new();
        for (r, o) in self.each(service, &Users::All, from_ms, to_ms) {
            by_region.entry(r).or_default().push((o.p99_ms, o.requests));
        }
        by_region
            .into_iter()
            .filter_map(|(r, v)| weighted_median(v).map(|m| (r.clone(), m)))
            .collect()
    }
}

fn weighted_median(mut v: Vec<(f64, u64)>) -> Option<f64> {
    let total: u64 = v.iter().map(|x| x.1).sum();
    if total == 0 {
        return None;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut seen = 0;
    for (p99, n) in v {
        seen += n;
        if seen * 2 >= total {
            return Some(p99);
        }
    }
    None
}

/// The users an action concerns, or `None` for one that is not a
/// mitigation (a failback, a fault, a whole document): there is nothing it
/// promised to make better. A zone shift concerns its region's users (their
/// edges send them elsewhere); an evacuation or read-only mode the region's;
/// a failover the users of every region it takes out; shedding all users.
pub fn users_of(op: &Op, zone_region: &BTreeMap<String, String>) -> Option<Users> {
    let region_of = |z: &str| zone_region.get(z).cloned();
    Some(match op {
        Op::Shift { zone, .. } => region_of(zone).map_or(Users::All, |r| Users::regions([r])),
        Op::ReadOnly {
            on: true, region, ..
        } => Users::regions(region.clone()),
        Op::RegionWeight { region, weight, .. } if *weight < 1.0 => {
            Users::regions([region.clone()])
        }
        Op::Failover { to, .. } => {
            Users::regions(zone_region.values().filter(|r| *r != to).cloned())
        }
        Op::FailoverMode {
            regions, on: true, ..
        } => Users::regions(regions.clone()),
        Op::ShedLevel { level, .. } if *level > 0 => Users::All,
        _ => return None,
    })
}

/// The baseline a check of `users` is judged against: the highest of their
/// regions' baselines, so a region that is slower by nature does not make
/// the others' users look slow.
pub fn baseline_for(users: &Users, per_region: &BTreeMap<String, f64>) -> Option<f64> {
    per_region
        .iter()
        .filter(|(r, _)| users.includes(r))
        .map(|(_, p)| *p)
        .reduce(f64::max)
}

/// Passed, failed or inconclusive, and why.
///
/// - fewer than [`MIN_REQUESTS`] after acting: inconclusive;
/// - at or under `error_bound` after acting: passed (nothing left to fix);
/// - fewer than [`MIN_REQUESTS`] before acting: inconclusive (nothing to
///   compare with);
/// - the bad share fell by more than noise (a one-sided two-proportion
///   z-test at 95 %): passed;
/// - lower, but within noise: inconclusive — a gradual evacuation's first
///   step moves a quarter of the users, which five seconds of requests
///   often cannot tell from chance;
/// - otherwise failed: still above the bound and not lower than before.
pub fn judge(before: &UserShare, after: &UserShare, error_bound: f64) -> (CheckOutcome, String) {
    let pct = |x: f64| format!("{:.1} %", x * 100.0);
    let Some(a) = after.ratio().filter(|_| after.requests >= MIN_REQUESTS) else {
        return (
            CheckOutcome::Inconclusive,
            format!(
                "{} requests after acting, at least {MIN_REQUESTS} needed",
                after.requests
            ),
        );
    };
    if a <= error_bound {
        return (
            CheckOutcome::Passed,
            format!("{} at or under the {} bound", pct(a), pct(error_bound)),
        );
    }
    let Some(b) = before.ratio().filter(|_| before.requests >= MIN_REQUESTS) else {
        return (
            CheckOutcome::Inconclusive,
            format!(
                "{} after acting is above the {} bound, but {} requests before acting are too few to compare with",
                pct(a),
                pct(error_bound),
                before.requests
            ),
        );
    };
    let (nb, na) = (before.requests as f64, after.requests as f64);
    let pooled = (before.bad() + after.bad()) as f64 / (nb + na);
    let se = (pooled * (1.0 - pooled) * (1.0 / nb + 1.0 / na)).sqrt();
    let z = if se > 0.0 { (b - a) / se } else { 0.0 };
    if z >= Z_FELL {
        (
            CheckOutcome::Passed,
            format!(
                "fell from {} to {}, more than noise (z = {z:.1})",
                pct(b),
                pct(a)
            ),
        )
    } else if a < b {
        // Lower, but by less than these few seconds of requests can tell
        // from chance: a first evacuation step moves a quarter of the users
        // and often lands here. Not a reason to escalate.
        (
            CheckOutcome::Inconclusive,
            format!(
                "fell from {} to {}, but within noise (z = {z:.1}, {Z_FELL} needed)",
                pct(b),
                pct(a)
            ),
        )
    } else {
        (
            CheckOutcome::Failed,
            format!(
                "above the {} bound and not lower than before (z = {z:.1})",
                pct(error_bound)
            ),
        )
    }
}

/// The check of one action taken at `acted_ms` on `service`, for `users`,
/// once its after window is in. `per_region_baseline` is the incident's
/// baseline p99 per entry region; `onset_ms`, when the fault began: the
/// before window never reaches back past it (with a second left at least),
/// since an action taken in the first seconds of a fault would otherwise be
/// compared with healthy seconds and look as if it made things worse.
pub fn check(
    signals: &UserSignals,
    rules: &CheckRules,
    service: &str,
    users: &Users,
    acted_ms: u64,
    per_region_baseline: &BTreeMap<String, f64>,
    onset_ms: Option<u64>,
) -> Check {
    let slow = rules.slow_bound(baseline_for(users, per_region_baseline));
    let (b0, b1) = rules.before(acted_ms);
    let b0 = onset_ms
        .filter(|o| o.saturating_add(1000) <= b1)
        .map_or(b0, |o| b0.max(o));
    let (a0, a1) = rules.after(acted_ms);
    let before = signals.share(service, users, b0, b1, slow);
    let after = signals.share(service, users, a0, a1, slow);
    let (outcome, rule) = judge(&before, &after, rules.error_bound);
    let slow_words = match slow {
        Some(b) => format!("slow: p99 over {b:.0} ms"),
        None => "no baseline, failures only".into(),
    };
    Check {
        outcome,
        why: format!(
            "{users}: {} before, {} after ({slow_words}); {rule}",
            before.describe(),
            after.describe()
        ),
        users: users.clone(),
        before,
        after,
        slow_p99_ms: slow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_model::signals::Series;

    /// A series: `requests` of which `failed` failed, with this p99.
    fn series(route: &str, target: &str, instance: &str, q: u64, f: u64, p99: f64) -> Series {
        Series {
            service: "svc".into(),
            route: route.into(),
            target_zone: target.into(),
            instance: instance.into(),
            write: false,
            forwarded_in: false,
            requests: q,
            errors: if f > 0 {
                BTreeMap::from([("status_5xx".to_string(), f)])
            } else {
                BTreeMap::new()
            },
            p50_ms: p99 / 3.0,
            p90_ms: p99 / 2.0,
            p99_ms: p99,
            max_ms: p99,
        }
    }

    fn snap(sec: u64, region: &str, zone: &str, series: Vec<Series>) -> Snapshot {
        Snapshot {
            at_ms: sec * 1000 + 1000,
            interval_ms: 1000,
            region: region.into(),
            source_zone: zone.into(),
            series,
            probes: Vec::new(),
            config_version: None,
            config_refused: None,
        }
    }

    fn rules() -> CheckRules {
        CheckRules {
            verify_after_ms: 10_000,
            window_ms: 5_000,
            error_bound: 0.01,
            slow_p99_ms: None,
            slow_margin_ms: 40.0,
        }
    }

    fn zones() -> BTreeMap<String, String> {
        [("a", "r1"), ("b", "r1"), ("c", "r2")]
            .into_iter()
            .map(|(z, r)| (z.to_string(), r.to_string()))
            .collect()
    }

    /// A region-wide gray failure in r1 (a fifth of its requests fail),
    /// evacuated at second 100: r1's edge forwards its users to r2, which
    /// answers them. r1's own instances keep failing what they still get.
    fn evacuated_gray_region(forwarded_share: f64) -> UserSignals {
        let mut s = UserSignals::new(300_000);
        for sec in 30..120 {
            let faulty = sec >= 80;
            let fwd = if sec >= 100 {
                (100.0 * forwarded_share) as u64
            } else {
                0
            };
            let local = 100 - fwd;
            let failed = if faulty { local / 5 } else { 0 };
            let mut r1 = vec![series("get", "a", "a-1", local, failed, 9.0)];
            if fwd > 0 {
                r1.push(series("forward", "r2", "", fwd, 0, 12.0));
            }
            s.ingest(&snap(sec, "r1", "a", r1));
            // r2 serves its own users and what r1 sent: counted as r2's.
            s.ingest(&snap(
                sec,
                "r2",
                "c",
                vec![series("get", "c", "c-1", 100 + fwd, 0, 8.0)],
            ));
        }
        s
    }

    #[test]
    fn an_evacuation_is_judged_by_its_users_wherever_they_were_served() {
        let s = evacuated_gray_region(1.0);
        let users = users_of(
            &Op::RegionWeight {
                service: "svc".into(),
                region: "r1".into(),
                weight: 0.0,
            },
            &zones(),
        )
        .unwrap();
        assert_eq!(users, Users::regions(["r1"]));
        let base = s.baseline_p99("svc", 20_000, 80_000);
        assert_eq!(base.get("r1"), Some(&9.0));
        let c = check(&s, &rules(), "svc", &users, 100_000, &base, None);
        assert_eq!(c.outcome, CheckOutcome::Passed, "{}", c.why);
        assert_eq!((c.before.requests, c.before.failed), (500, 100));
        assert_eq!(c.after.requests, 500, "forwarded requests count");
        assert_eq!(c.after.bad(), 0);
        assert_eq!(c.slow_p99_ms, Some(49.0), "9 ms baseline + 40 ms margin");
        // The evacuated region's own error rate did not move: the old check
        // compared that, and failed.
        assert!(c.why.starts_with("users of r1: 20.0 % of 500"), "{}", c.why);
    }

    #[test]
    fn requests_forwarded_in_are_counted_where_their_users_entered_not_again() {
        // r1 is evacuated to a quarter: r1's users whom DNS sent to r2 are
        // forwarded back in part, and r1's edge serves them (and fails a
        // fifth of them). They are r2's entrants, counted in r2's forward
        // series; at r1 they must not pass for r1's users.
        let mut s = UserSignals::new(300_000);
        for sec in 30..40 {
            let mut back = series("get", "a", "a-1", 50, 10, 9.0);
            back.forwarded_in = true;
            s.ingest(&snap(
                sec,
                "r1",
                "a",
                vec![series("get", "a", "a-1", 25, 5, 9.0), back],
            ));
            s.ingest(&snap(
                sec,
                "r2",
                "c",
                vec![series("forward", "r1", "", 50, 10, 12.0)],
            ));
        }
        let r1 = s.share("svc", &Users::regions(["r1"]), 30_000, 40_000, None);
        assert_eq!(
            (r1.requests, r1.failed),
            (250, 50),
            "only r1's own entrants"
        );
        let r2 = s.share("svc", &Users::regions(["r2"]), 30_000, 40_000, None);
        assert_eq!(
            (r2.requests, r2.failed),
            (500, 100),
            "counted where they entered"
        );
    }

    #[test]
    fn an_action_in_the_first_seconds_of_a_fault_is_not_compared_with_healthy_seconds() {
        // The fault starts at 80 s; 40 % of the users leave at 82 s.
        let mut s = UserSignals::new(300_000);
        for sec in 30..100 {
            let fwd = if sec >= 82 { 40 } else { 0 };
            let local = 100 - fwd;
            let failed = if sec >= 80 { local / 5 } else { 0 };
            let mut r1 = vec![series("get", "a", "a-1", local, failed, 9.0)];
            if fwd > 0 {
                r1.push(series("forward", "r2", "", fwd, 0, 12.0));
            }
            s.ingest(&snap(sec, "r1", "a", r1));
        }
        let base = s.baseline_p99("svc", 20_000, 80_000);
        let users = Users::regions(["r1"]);
        let blind = check(&s, &rules(), "svc", &users, 82_000, &base, None);
        assert_eq!(
            blind.outcome,
            CheckOutcome::Failed,
            "three healthy seconds in the before window: {}",
            blind.why
        );
        let c = check(&s, &rules(), "svc", &users, 82_000, &base, Some(80_000));
        assert_eq!(c.outcome, CheckOutcome::Passed, "{}", c.why);
        assert_eq!((c.before.requests, c.before.failed), (200, 40));
    }

    #[test]
    fn a_first_evacuation_step_passes_and_an_action_that_moved_nobody_fails() {
        let quarter = evacuated_gray_region(0.25);
        let base = quarter.baseline_p99("svc", 20_000, 80_000);
        let users = Users::regions(["r1"]);
        let c = check(&quarter, &rules(), "svc", &users, 100_000, &base, None);
        assert_eq!(c.outcome, CheckOutcome::Passed, "{}", c.why);
        let none = evacuated_gray_region(0.0);
        let c = check(&none, &rules(), "svc", &users, 100_000, &base, None);
        assert_eq!(c.outcome, CheckOutcome::Failed, "{}", c.why);
        assert!(c.why.contains("not lower than before"), "{}", c.why);
    }

    #[test]
    fn slow_requests_count_against_the_baseline_bound() {
        let mut s = UserSignals::new(300_000);
        for sec in 0..40 {
            // Zone a's tail creeps up from second 20; at 30 it is shifted
            // and its users are served by zone b.
            let slow_a = if sec >= 20 { 130.0 } else { 10.0 };
            let series = if sec < 30 {
                vec![
                    series("get", "a", "a-1", 50, 0, slow_a),
                    series("get", "b", "b-1", 50, 0, 11.0),
                ]
            } else {
                vec![series("get", "b", "b-1", 100, 0, 12.0)]
            };
            s.ingest(&snap(sec, "r1", "a", series));
        }
        let shift = Op::Shift {
            service: "svc".into(),
            zone: "a".into(),
            for_: Duration::from_secs(60),
        };
        let users = users_of(&shift, &zones()).unwrap();
        let base = s.baseline_p99("svc", 0, 20_000);
        let r = CheckRules {
            window_ms: 5_000,
            verify_after_ms: 10_000,
            ..rules()
        };
        let c = check(&s, &r, "svc", &users, 30_000, &base, None);
        assert_eq!(c.before.slow, 250, "half the requests were slow");
        assert_eq!(c.after.bad(), 0);
        assert_eq!(c.outcome, CheckOutcome::Passed, "{}", c.why);
        // Without a baseline only failures count; a fixed bound overrides.
        assert_eq!(rules().slow_bound(None), None);
        let fixed = CheckRules {
            slow_p99_ms: Some(100.0),
            ..rules()
        };
        assert_eq!(fixed.slow_bound(Some(9.0)), Some(100.0));
        assert_eq!(rules().slow_bound(Some(100.0)), Some(200.0), "twice");
    }

    #[test]
    fn too_few_requests_say_nothing_either_way() {
        let few = UserShare {
            requests: 10,
            failed: 5,
            ..UserShare::default()
        };
        let many_bad = UserShare {
            requests: 1000,
            failed: 300,
            ..UserShare::default()
        };
        assert_eq!(judge(&many_bad, &few, 0.01).0, CheckOutcome::Inconclusive);
        assert_eq!(judge(&few, &many_bad, 0.01).0, CheckOutcome::Inconclusive);
        let fine = UserShare {
            requests: 1000,
            failed: 5,
            ..UserShare::default()
        };
        assert_eq!(judge(&few, &fine, 0.01).0, CheckOutcome::Passed);
        // Worse after than before fails.
        assert_eq!(judge(&fine, &many_bad, 0.01).0, CheckOutcome::Failed);
    }

    #[test]
    fn only_mitigations_are_checked() {
        let z = zones();
        let svc = || "svc".to_string();
        assert_eq!(
            users_of(
                &Op::Failover {
                    service: svc(),
                    to: "r2".into()
                },
                &z
            ),
            Some(Users::regions(["r1"]))
        );
        assert_eq!(
            users_of(
                &Op::ReadOnly {
                    service: svc(),
                    region: None,
                    on: true
                },
                &z
            ),
            Some(Users::All)
        );
        for op in [
            Op::Unshift {
                service: svc(),
                zone: "a".into(),
            },
            Op::RegionBack {
                service: svc(),
                region: "r1".into(),
            },
            Op::RegionWeight {
                service: svc(),
                region: "r1".into(),
                weight: 1.0,
            },
            Op::ClearFaults { service: None },
            Op::ShedLevel {
                service: svc(),
                level: 0,
            },
        ] {
            assert_eq!(users_of(&op, &z), None, "{op}");
        }
    }

    #[test]
    fn old_seconds_are_dropped() {
        let mut s = UserSignals::new(10_000);
        for sec in 0..30 {
            s.ingest(&snap(
                sec,
                "r1",
                "a",
                vec![series("get", "a", "a-1", 10, 0, 5.0)],
            ));
        }
        let all = s.share("svc", &Users::All, 0, 30_000, None);
        assert!(all.requests <= 12 * 10, "{all:?}");
        assert_eq!(
            s.share("svc", &Users::All, 25_000, 30_000, None).requests,
            50
        );
    }
}
