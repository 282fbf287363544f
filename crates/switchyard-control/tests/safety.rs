//! The safety rules against the example topology: 2 regions × 3 zones × 2
//! instances of `catalog` (12 in all), `min_healthy = 0.5`.

use switchyard_control::safety::{
    capacity_removed, changed_keys, check, config_removal_rate, rule, History, Refusal,
    SafetyConfig, Verdict, HOUR_MS,
};
use switchyard_model::{Config, Controls, RegionState, ZoneControl};

const EXAMPLE: &str = include_str!("../../../examples/switchyard.toml");
const T0: u64 = 1_700_000_000_000;
const SEC: u64 = 1_000;
const MIN: u64 = 60_000;

fn config() -> Config {
    Config::from_toml(EXAMPLE, |_| None).expect("the example config is valid")
}

/// The example with another `min_healthy`.
fn config_min_healthy(x: &str) -> Config {
    assert!(EXAMPLE.contains("min_healthy = 0.5"));
    let text = EXAMPLE.replace("min_healthy = 0.5", &format!("min_healthy = {x}"));
    let c = Config::from_toml(&text, |_| None).expect("valid config");
    assert_eq!(c.services[0].min_healthy.to_string(), x);
    c
}

/// Rules that refuse nothing; each test turns on the one it is about.
fn lenient() -> SafetyConfig {
    SafetyConfig {
        min_serving_zones_per_region: 0,
        min_serving_regions: 0,
        max_removal_per_hour: 1.0,
        flip_wait_ms: 0,
        max_zones_shifted_per_region: 3,
        max_shift_ms: 1_000 * HOUR_MS,
        min_capacity_after_move: 0.0,
    }
}

/// Sets a zone's weight with an expiry.
fn zone(c: &Controls, name: &str, weight: f64, expires_at_ms: Option<u64>) -> Controls {
    let mut c = c.clone();
    c.services
        .entry("catalog".into())
        .or_default()
        .zones
        .insert(
            name.into(),
            ZoneControl {
                weight,
                expires_at_ms,
                reason: Some("test".into()),
            },
        );
    c
}

/// Shifts a zone away for two hours from `now`.
fn shift(c: &Controls, name: &str, now: u64) -> Controls {
    zone(c, name, 0.0, Some(now + 2 * HOUR_MS))
}

fn unshift(c: &Controls, name: &str) -> Controls {
    let mut c = c.clone();
    c.services.get_mut("catalog").unwrap().zones.remove(name);
    c
}

fn region(c: &Controls, name: &str, state: RegionState, weight: f64) -> Controls {
    let mut c = c.clone();
    let r = c
        .services
        .entry("catalog".into())
        .or_default()
        .regions
        .entry(name.into())
        .or_default();
    r.state = state;
    r.weight = weight;
    c
}

fn edit(c: &Controls, f: impl FnOnce(&mut switchyard_model::ServiceControls)) -> Controls {
    let mut c = c.clone();
    f(c.services.entry("catalog".into()).or_default());
    c
}

fn rules_of(v: &Verdict) -> Vec<&'static str> {
    v.refusals.iter().map(|r| r.rule).collect()
}

#[track_caller]
fn allowed(v: &Verdict) {
    assert!(v.allowed, "expected allowed, got {:#?}", v.refusals);
    assert!(v.refusals.is_empty());
}

/// Asserts exactly one refusal, by `rule`, and returns its message.
#[track_caller]
fn only(v: &Verdict, rule: &str) -> String {
    assert!(!v.allowed, "expected a refusal by {rule}");
    assert_eq!(rules_of(v), vec![rule], "{:#?}", v.refusals);
    v.refusals[0].message.clone()
}

/// Asserts the refusals are exactly `rules`, in order; returns their messages.
#[track_caller]
fn exactly(v: &Verdict, rules: &[&str]) -> Vec<String> {
    assert!(!v.allowed);
    assert_eq!(rules_of(v), rules, "{:#?}", v.refusals);
    v.refusals.iter().map(|r| r.message.clone()).collect()
}

#[track_caller]
fn contains(msg: &str, part: &str) {
    assert!(msg.contains(part), "{msg:?} does not contain {part:?}");
}

#[test]
fn defaults_and_config_format() {
    let d = SafetyConfig::default();
    assert_eq!(d.min_serving_zones_per_region, 2);
    assert_eq!(d.min_serving_regions, 1);
    assert_eq!(d.max_removal_per_hour, 0.34);
    assert_eq!(d.flip_wait_ms, 5_000);
    assert_eq!(d.max_zones_shifted_per_region, 1);
    assert_eq!(d.max_shift_ms, 72 * 3_600_000);
    assert_eq!(d.validate(), Ok(()));

    let empty: SafetyConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, d);
    let partial: SafetyConfig = serde_json::from_str(r#"{"flip_wait_ms": 100}"#).unwrap();
    assert_eq!(partial.flip_wait_ms, 100);
    assert_eq!(partial.min_serving_zones_per_region, 2);
    let err = serde_json::from_str::<SafetyConfig>(r#"{"flip_wait": 100}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let back: SafetyConfig = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(back, d);

    let bad = SafetyConfig {
        max_removal_per_hour: 1.5,
        flip_wait_ms: 2 * HOUR_MS,
        max_shift_ms: 0,
        ..d
    };
    let errs = bad.validate().unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].contains("1.5"));
}

#[test]
fn unchanged_controls_are_allowed() {
    let cfg = config();
    let h = History::new();
    let rules = SafetyConfig::default();
    let none = Controls::default();
    allowed(&check(&cfg, &rules, &h, &none, &none, T0));
    // Even controls that are beyond every limit: nothing changes.
    let bad = shift(&shift(&none, "us-east-a", T0), "us-east-b", T0);
    let bad = region(&bad, "eu-west", RegionState::Out, 1.0);
    allowed(&check(&cfg, &rules, &h, &bad, &bad, T0));
    // The version is not judged.
    let mut v2 = bad.clone();
    v2.version += 1;
    allowed(&check(&cfg, &rules, &h, &bad, &v2, T0));
}

#[test]
fn a_change_that_passes_says_what_each_rule_judged() {
    let cfg = config_min_healthy("0.1");
    let h = History::new();
    let rules = SafetyConfig {
        min_serving_zones_per_region: 2,
        ..lenient()
    };
    let none = Controls::default();
    let one = zone(&none, "us-east-a", 0.0, Some(T0 + 3_600_000));
    let v = check(&cfg, &rules, &h, &none, &one, T0);
    allowed(&v);
    let passed = |rule: &str| -> String {
        v.passed
            .iter()
            .find(|r| r.rule == rule)
            .unwrap_or_else(|| panic!("{rule} not among {:?}", v.passed))
            .message
            .clone()
    };
    contains(
        &passed(rule::SERVING_ZONES),
        "region us-east keeps 2 serving zones of 3 (was 3); at least 2 required",
    );
    contains(&passed(rule::SHIFT_EXPIRY), "expires in 1 h");
    contains(
        &passed(rule::ONE_ZONE_PER_REGION),
        "1 zone shifted away; at most 3",
    );
    contains(
        &passed(rule::REMOVAL_RATE),
        "taken out of service within an hour",
    );
    contains(&passed(rule::FLIP_WAIT), "us-east-a");
    // The region rules did not judge it: no region moved.
    assert!(
        v.passed.iter().all(|r| r.rule != rule::MOVE_CAPACITY),
        "{:?}",
        v.passed
    );
    // Unchanged controls: nothing was judged, so nothing is said.
    assert!(check(&cfg, &rules, &h, &one, &one, T0).passed.is_empty());
}

#[test]
fn serving_zones_per_region() {
    let cfg = config_min_healthy("0.1");
    let h = History::new();
    let rules = SafetyConfig {
        min_serving_zones_per_region: 2,
        ..lenient()
    };
    let none = Controls::default();

    let one = shift(&none, "us-east-a", T0);
    allowed(&check(&cfg, &rules, &h, &none, &one, T0));

    let two = shift(&one, "us-east-b", T0);
    let m = only(
        &check(&cfg, &rules, &h, &one, &two, T0),
        rule::SERVING_ZONES,
    );
    contains(
        &m,
        "region us-east would keep 1 serving zone of 3; at least 2 are required",
    );
    contains(&m, "catalog");

    let three = shift(&two, "us-east-c", T0);
    // No zone left is also no instance left: two rules refuse.
    let m = exactly(
        &check(&cfg, &rules, &h, &none, &three, T0),
        &[rule::SERVING_ZONES, rule::CAPACITY_FLOOR],
    );
    contains(
        &m[0],
        "region us-east would keep 0 serving zones of 3; at least 2 are required",
    );
    contains(
        &m[1],
        "would keep 0 instances in serving zones; at least 1 must stay",
    );

    // A partial weight still serves.
    let partial = zone(
        &zone(&none, "us-east-a", 0.5, Some(T0 + MIN)),
        "us-east-b",
        0.1,
        Some(T0 + MIN),
    );
    allowed(&check(&cfg, &rules, &h, &none, &partial, T0));

    // An expired shift serves again.
    let expired = zone(&one, "us-east-b", 0.0, Some(T0 - 1));
    allowed(&check(&cfg, &rules, &h, &one, &expired, T0));
    let m = only(
        &check(&cfg, &rules, &h, &one, &expired, T0 - 2),
        rule::SERVING_ZONES,
    );
    contains(&m, "would keep 1 serving zone of 3");

    // Regions are judged separately.
    let both = shift(&one, "eu-west-a", T0);
    allowed(&check(&cfg, &rules, &h, &none, &both, T0));

    // A region going out is not "losing its zones".
    let out = region(&none, "us-east", RegionState::Out, 1.0);
    allowed(&check(&cfg, &rules, &h, &none, &out, T0));

    let stricter = SafetyConfig {
        min_serving_zones_per_region: 3,
        ..lenient()
    };
    let m = only(
        &check(&cfg, &stricter, &h, &none, &one, T0),
        rule::SERVING_ZONES,
    );
    contains(
        &m,
        "region us-east would keep 2 serving zones of 3; at least 3 are required",
    );
    let m = exactly(
        &check(
            &cfg,
            &SafetyConfig {
                min_serving_zones_per_region: 1,
                ..lenient()
            },
            &h,
            &none,
            &three,
            T0,
        ),
        &[rule::SERVING_ZONES, rule::CAPACITY_FLOOR],
    );
    contains(
        &m[0],
        "would keep 0 serving zones of 3; at least 1 is required",
    );
}

#[test]
fn serving_regions() {
    let cfg = config_min_healthy("0.1");
    let h = History::new();
    let rules = SafetyConfig {
        min_serving_regions: 1,
        ..lenient()
    };
    let none = Controls::default();

    let east_out = region(&none, "us-east", RegionState::Out, 1.0);
    allowed(&check(&cfg, &rules, &h, &none, &east_out, T0));

    let both_out = region(&east_out, "eu-west", RegionState::Out, 1.0);
    let m = only(
        &check(&cfg, &rules, &h, &east_out, &both_out, T0),
        rule::SERVING_REGIONS,
    );
    contains(
        &m,
        "service catalog would keep 0 serving regions of 2; at least 1 is required",
    );

    // In but at weight 0 does not serve.
    let drained = region(&east_out, "eu-west", RegionState::In, 0.0);
    let m = only(
        &check(&cfg, &rules, &h, &east_out, &drained, T0),
        rule::SERVING_REGIONS,
    );
    contains(&m, "would keep 0 serving regions of 2");
    // A small weight does.
    let low = region(&east_out, "eu-west", RegionState::In, 0.1);
    allowed(&check(&cfg, &rules, &h, &east_out, &low, T0));

    let two = SafetyConfig {
        min_serving_regions: 2,
        ..lenient()
    };
    let m = only(
        &check(&cfg, &two, &h, &none, &east_out, T0),
        rule::SERVING_REGIONS,
    );
    contains(
        &m,
        "service catalog would keep 1 serving region of 2; at least 2 are required",
    );
}

#[test]
fn capacity_floor() {
    let h = History::new();
    let rules = lenient();
    let none = Controls::default();

    // min_healthy 0.7 of 6 instances: ceil(4.2) = 5 must stay.
    let cfg = config_min_healthy("0.7");
    assert_eq!(cfg.services[0].floor("us-east"), 5);
    let one = shift(&none, "us-east-a", T0);
    let m = only(
        &check(&cfg, &rules, &h, &none, &one, T0),
        rule::CAPACITY_FLOOR,
    );
    contains(
        &m,
        "region us-east would keep 4 instances in serving zones; at least 5 must stay in service (min_healthy 0.7 of 6)",
    );
    contains(&m, "catalog");
    // A partial weight keeps the zone's instances in service.
    let partial = zone(&none, "us-east-a", 0.2, Some(T0 + MIN));
    allowed(&check(&cfg, &rules, &h, &none, &partial, T0));
    // A region that goes out is judged by the region rules only.
    let out = region(&one, "us-east", RegionState::Out, 1.0);
    allowed(&check(&cfg, &rules, &h, &none, &out, T0));

    // The example's 0.5: floor 3, so one zone may go, not two.
    let cfg = config();
    allowed(&check(&cfg, &rules, &h, &none, &one, T0));
    let two = shift(&one, "eu-west-b", T0);
    allowed(&check(&cfg, &rules, &h, &none, &two, T0));
    let two = shift(&one, "us-east-b", T0);
    let m = only(
        &check(&cfg, &rules, &h, &one, &two, T0),
        rule::CAPACITY_FLOOR,
    );
    contains(
        &m,
        "region us-east would keep 2 instances in serving zones; at least 3 must stay in service (min_healthy 0.5 of 6)",
    );
    assert!(!m.contains("eu-west"), "{m}");
}

#[test]
fn removal_rate_over_a_sliding_hour() {
    // A low floor, so that only the removal rate limits shifts here.
    let cfg = config_min_healthy("0.1");
    let rules = SafetyConfig {
        max_removal_per_hour: 0.34,
        ..lenient()
    };
    let mut h = History::new();
    let c0 = Controls::default();

    // 2 of 12 instances, then 2 more: 4 ≤ 0.34 × 12 = 4.08.
    let c1 = shift(&c0, "us-east-a", T0);
    assert_eq!(capacity_removed(&cfg.services[0], &c0, &c1, T0), 2.0);
    allowed(&check(&cfg, &rules, &h, &c0, &c1, T0));
    h.record(&cfg, &c0, &c1, T0);
    let t1 = T0 + 5 * MIN;
    let c2 = shift(&c1, "eu-west-a", t1);
    allowed(&check(&cfg, &rules, &h, &c1, &c2, t1));
    h.record(&cfg, &c1, &c2, t1);
    assert_eq!(h.removed_within_hour("catalog", t1), 4.0);

    // One more instance (a zone at half weight counts half of its 2): 5 > 4.08.
    let c3 = zone(&c2, "us-east-b", 0.5, Some(T0 + 3 * HOUR_MS));
    let m = only(
        &check(&cfg, &rules, &h, &c2, &c3, t1 + 10 * SEC),
        rule::REMOVAL_RATE,
    );
    contains(
        &m,
        "service catalog would have 5 instances taken out of service within an hour (1 now, 4 earlier in the hour); at most 4.08 of 12 (34%) may be taken out per hour",
    );
    // 59 minutes after the first removal both still count.
    only(
        &check(&cfg, &rules, &h, &c2, &c3, T0 + 59 * MIN),
        rule::REMOVAL_RATE,
    );
    // 61 minutes after the first, only the second counts: 2 + 1 ≤ 4.08.
    assert_eq!(h.removed_within_hour("catalog", T0 + 61 * MIN), 2.0);
    allowed(&check(&cfg, &rules, &h, &c2, &c3, T0 + 61 * MIN));
    // Exactly one hour old no longer counts either.
    assert_eq!(h.removed_within_hour("catalog", T0 + HOUR_MS), 2.0);
    assert_eq!(h.removed_within_hour("catalog", T0 + HOUR_MS - 1), 4.0);
    // 61 minutes after the second, nothing counts: a whole zone more fits.
    let later = t1 + 61 * MIN;
    assert_eq!(h.removed_within_hour("catalog", later), 0.0);
    let c4 = shift(&c2, "us-east-b", later);
    allowed(&check(&cfg, &rules, &h, &c2, &c4, later));

    // Restorations are allowed whatever the history, and do not count.
    let t2 = t1 + 10 * SEC;
    let back = unshift(&c2, "us-east-a");
    assert_eq!(capacity_removed(&cfg.services[0], &c2, &back, t2), 0.0);
    allowed(&check(&cfg, &rules, &h, &c2, &back, t2));
    // ...nor offset a removal made in the same proposal.
    let swap = shift(&back, "us-east-b", t2);
    assert_eq!(capacity_removed(&cfg.services[0], &c2, &swap, t2), 2.0);
    let m = only(&check(&cfg, &rules, &h, &c2, &swap, t2), rule::REMOVAL_RATE);
    contains(
        &m,
        "6 instances taken out of service within an hour (2 now, 4 earlier in the hour)",
    );
    h.record(&cfg, &c2, &back, t2);
    assert_eq!(h.removed_within_hour("catalog", t2), 4.0);

    // A region's traffic moved to another region is not capacity removed
    // piecemeal: the budget does not count it, the move capacity rule
    // judges it (the regions left serving must hold enough instances).
    let fresh = History::new();
    let out = region(&c0, "us-east", RegionState::Out, 1.0);
    assert_eq!(capacity_removed(&cfg.services[0], &c0, &out, T0), 0.0);
    allowed(&check(&cfg, &rules, &fresh, &c0, &out, T0));
    let quarter = region(&c0, "us-east", RegionState::In, 0.25);
    allowed(&check(&cfg, &rules, &fresh, &c0, &quarter, T0));
    let moves = SafetyConfig {
        min_capacity_after_move: 0.5,
        ..rules.clone()
    };
    // Half the instances left serving: enough at 0.5.
    allowed(&check(&cfg, &moves, &fresh, &c0, &out, T0));
    // With a zone of eu-west shifted away, 4 of 12 would be left: refused.
    let weak = shift(&c0, "eu-west-a", T0);
    let weak_out = region(&weak, "us-east", RegionState::Out, 1.0);
    let m = only(
        &check(&cfg, &moves, &fresh, &weak, &weak_out, T0),
        rule::MOVE_CAPACITY,
    );
    contains(
        &m,
        "the regions left serving would hold 4 of its 12 instances in serving zones; moving traffic there needs at least 6",
    );
    // A shift inside a region already out removes nothing more.
    let shifted_out = shift(&out, "us-east-a", T0);
    assert_eq!(
        capacity_removed(&cfg.services[0], &out, &shifted_out, T0),
        0.0
    );
}

#[test]
fn flip_wait() {
    let cfg = config();
    let rules = SafetyConfig {
        flip_wait_ms: 5_000,
        ..lenient()
    };
    let mut h = History::new();
    let c0 = Controls::default();
    let c1 = shift(&c0, "us-east-a", T0);
    allowed(&check(&cfg, &rules, &h, &c0, &c1, T0));
    h.record(&cfg, &c0, &c1, T0);
    assert_eq!(
        h.last_change("services.catalog.zones.us-east-a.weight"),
        Some(T0)
    );

    // Un-shifting is an improvement, but it is still a flip.
    let back = unshift(&c1, "us-east-a");
    let m = only(
        &check(&cfg, &rules, &h, &c1, &back, T0 + 1_000),
        rule::FLIP_WAIT,
    );
    contains(
        &m,
        "services.catalog.zones.us-east-a.weight last changed 1000 ms ago; changing it from 0 to 1 must wait until 5000 ms have passed (4000 ms left)",
    );
    let m = only(
        &check(&cfg, &rules, &h, &c1, &back, T0 + 4_999),
        rule::FLIP_WAIT,
    );
    contains(&m, "(1 ms left)");
    allowed(&check(&cfg, &rules, &h, &c1, &back, T0 + 5_000));

    // Other controls are free, and a longer lease is not a flip.
    allowed(&check(
        &cfg,
        &rules,
        &h,
        &c1,
        &shift(&c1, "eu-west-a", T0),
        T0 + 1_000,
    ));
    let longer = zone(&c1, "us-east-a", 0.0, Some(T0 + 5 * HOUR_MS));
    allowed(&check(&cfg, &rules, &h, &c1, &longer, T0 + 1_000));
    // A different weight is.
    let half = zone(&c1, "us-east-a", 0.5, Some(T0 + HOUR_MS));
    only(
        &check(&cfg, &rules, &h, &c1, &half, T0 + 1_000),
        rule::FLIP_WAIT,
    );

    // Service and region switches.
    let ro = edit(&c1, |s| {
        s.read_only = true;
        s.shed_level = 1;
    });
    let ro = region(&ro, "eu-west", RegionState::Out, 1.0);
    let ro = edit(&ro, |s| {
        let r = s.regions.get_mut("eu-west").unwrap();
        r.failover = true;
        r.read_only = true;
    });
    let t = T0 + 10_000;
    allowed(&check(&cfg, &rules, &h, &c1, &ro, t));
    h.record(&cfg, &c1, &ro, t);
    let back = edit(&c1, |s| s.shed_level = 2);
    let v = check(&cfg, &rules, &h, &ro, &back, t + 2_000);
    assert!(!v.allowed);
    assert!(rules_of(&v).iter().all(|r| *r == rule::FLIP_WAIT));
    let all = v.summary();
    for key in [
        "services.catalog.read_only last changed 2000 ms ago; changing it from true to false",
        "services.catalog.shed_level last changed 2000 ms ago; changing it from 1 to 2",
        "services.catalog.regions.eu-west.state last changed 2000 ms ago; changing it from out to in",
        "services.catalog.regions.eu-west.failover last changed",
        "services.catalog.regions.eu-west.read_only last changed",
    ] {
        contains(&all, key);
    }
    assert_eq!(v.refusals.len(), 5, "{all}");
    allowed(&check(&cfg, &rules, &h, &ro, &back, t + 5_000));
    let mut keys = changed_keys(&cfg, &c1, &ro, t);
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "services.catalog.read_only",
            "services.catalog.regions.eu-west.failover",
            "services.catalog.regions.eu-west.read_only",
            "services.catalog.regions.eu-west.state",
            "services.catalog.shed_level",
        ]
    );
}

#[test]
fn one_zone_per_region() {
    let cfg = config_min_healthy("0.1");
    let h = History::new();
    let rules = SafetyConfig {
        max_zones_shifted_per_region: 1,
        ..lenient()
    };
    let none = Controls::default();
    let one = shift(&none, "us-east-a", T0);
    allowed(&check(&cfg, &rules, &h, &none, &one, T0));

    let two = shift(&one, "us-east-b", T0);
    let m = only(
        &check(&cfg, &rules, &h, &one, &two, T0),
        rule::ONE_ZONE_PER_REGION,
    );
    contains(
        &m,
        "region us-east would have 2 zones shifted away (us-east-a, us-east-b); at most 1 at a time",
    );
    contains(&m, "catalog");

    // One per region, not one in all.
    allowed(&check(
        &cfg,
        &rules,
        &h,
        &one,
        &shift(&one, "eu-west-c", T0),
        T0,
    ));
    // A partial weight is not shifted away.
    allowed(&check(
        &cfg,
        &rules,
        &h,
        &one,
        &zone(&one, "us-east-b", 0.3, Some(T0 + MIN)),
        T0,
    ));
    // Moving the shift to another zone keeps one.
    allowed(&check(
        &cfg,
        &rules,
        &h,
        &one,
        &shift(&unshift(&one, "us-east-a"), "us-east-b", T0),
        T0,
    ));
    // An expired shift does not count.
    let expired = zone(&none, "us-east-a", 0.0, Some(T0 - 1));
    allowed(&check(
        &cfg,
        &rules,
        &h,
        &expired,
        &shift(&expired, "us-east-b", T0),
        T0,
    ));
}

#[test]
fn shift_expiry() {
    let cfg = config();
    let h = History::new();
    let rules = SafetyConfig {
        max_shift_ms: 72 * HOUR_MS,
        ..lenient()
    };
    let none = Controls::default();

    let forever = zone(&none, "us-east-a", 0.0, None);
    let m = only(
        &check(&cfg, &rules, &h, &none, &forever, T0),
        rule::SHIFT_EXPIRY,
    );
    contains(
        &m,
        "service catalog: zone us-east-a at weight 0 has no expiry; every shift must expire within 259200000 ms (72 h)",
    );
    let partial = zone(&none, "us-east-a", 0.5, None);
    let m = only(
        &check(&cfg, &rules, &h, &none, &partial, T0),
        rule::SHIFT_EXPIRY,
    );
    contains(&m, "zone us-east-a at weight 0.5 has no expiry");

    allowed(&check(
        &cfg,
        &rules,
        &h,
        &none,
        &zone(&none, "us-east-a", 0.0, Some(T0 + 72 * HOUR_MS)),
        T0,
    ));
    let late = zone(&none, "us-east-a", 0.0, Some(T0 + 72 * HOUR_MS + 1));
    let m = only(
        &check(&cfg, &rules, &h, &none, &late, T0),
        rule::SHIFT_EXPIRY,
    );
    contains(&m, "expires 259200001 ms from now, 1 ms later than allowed");

    // Weight 1 needs no lease.
    allowed(&check(
        &cfg,
        &rules,
        &h,
        &none,
        &zone(&none, "us-east-a", 1.0, None),
        T0,
    ));
    // An existing lease the proposal does not touch is not judged again.
    let other = edit(&forever, |s| s.read_only = true);
    allowed(&check(&cfg, &rules, &h, &forever, &other, T0));
}

#[test]
fn every_refusal_is_reported_at_once() {
    let cfg = config();
    let rules = SafetyConfig {
        min_serving_regions: 2,
        ..SafetyConfig::default()
    };
    let mut h = History::new();
    let c0 = Controls::default();
    let c1 = edit(&c0, |s| s.read_only = true);
    h.record(&cfg, &c0, &c1, T0);

    let p = region(&c1, "eu-west", RegionState::Out, 1.0);
    let p = zone(&p, "us-east-a", 0.0, None);
    let p = zone(&p, "us-east-b", 0.0, None);
    let p = edit(&p, |s| s.read_only = false);
    let v = check(&cfg, &rules, &h, &c1, &p, T0 + 1_000);
    assert!(!v.allowed);
    assert_eq!(
        rules_of(&v),
        vec![
            rule::SERVING_ZONES,
            rule::SERVING_REGIONS,
            rule::CAPACITY_FLOOR,
            rule::MOVE_CAPACITY,
            rule::FLIP_WAIT,
            rule::ONE_ZONE_PER_REGION,
            rule::SHIFT_EXPIRY,
            rule::SHIFT_EXPIRY,
        ]
    );
    assert_eq!(v.first_rule(), Some(rule::SERVING_ZONES));
    assert!(v.refused_by(rule::FLIP_WAIT));
    let all = v.summary();
    contains(
        &all,
        "serving_zones: service catalog: region us-east would keep 1 serving zone of 3",
    );
    contains(
        &all,
        "would keep 1 serving region of 2; at least 2 are required",
    );
    contains(&all, "would keep 2 instances in serving zones; at least 3");
    contains(
        &all,
        "would hold 2 of its 12 instances in serving zones; moving traffic there needs at least 6",
    );
    contains(&all, "services.catalog.read_only last changed 1000 ms ago");
    contains(&all, "zone us-east-a at weight 0 has no expiry");
    contains(&all, "zone us-east-b at weight 0 has no expiry");
}

#[test]
fn improvements_are_allowed() {
    let cfg = config();
    let rules = SafetyConfig::default();
    // Everything beyond the limits: all of us-east shifted, eu-west out, and
    // the whole service removed within the hour.
    let c0 = Controls::default();
    let bad = shift(
        &shift(&shift(&c0, "us-east-a", T0), "us-east-b", T0),
        "us-east-c",
        T0,
    );
    let bad = region(&bad, "eu-west", RegionState::Out, 1.0);
    let mut h = History::new();
    h.record(&cfg, &c0, &bad, T0);
    // The zones shifted count (6); eu-west's traffic moved out does not.
    assert_eq!(h.removed_within_hour("catalog", T0), 6.0);
    let now = T0 + MIN;

    // One zone back: still 1 serving zone of 3, 2 instances under a floor of 3,
    // 2 zones shifted, but each is better than before.
    let better = unshift(&bad, "us-east-a");
    allowed(&check(&cfg, &rules, &h, &bad, &better, now));
    // A region back in.
    let better = region(&bad, "eu-west", RegionState::In, 1.0);
    allowed(&check(&cfg, &rules, &h, &bad, &better, now));
    // A region back in with only one zone serving is still better than out.
    let east_out = region(&c0, "us-east", RegionState::Out, 1.0);
    let east_out = shift(&shift(&east_out, "us-east-a", T0), "us-east-b", T0);
    let east_in = region(&east_out, "us-east", RegionState::In, 1.0);
    allowed(&check(
        &cfg,
        &rules,
        &History::new(),
        &east_out,
        &east_in,
        now,
    ));

    // Flips still need the wait.
    let soon = T0 + 1_000;
    let m = only(
        &check(&cfg, &rules, &h, &bad, &unshift(&bad, "us-east-a"), soon),
        rule::FLIP_WAIT,
    );
    contains(
        &m,
        "services.catalog.zones.us-east-a.weight last changed 1000 ms ago",
    );

    // Making it worse while beyond a limit is refused.
    let worse = region(&better, "eu-west", RegionState::In, 0.5);
    let worse = zone(&worse, "eu-west-a", 0.0, Some(now + MIN));
    let v = check(&cfg, &rules, &h, &better, &worse, now);
    assert_eq!(
        rules_of(&v),
        vec![rule::MOVE_CAPACITY, rule::REMOVAL_RATE],
        "{:#?}",
        v.refusals
    );
}

#[test]
fn history_memory_is_bounded() {
    let cfg = config();
    let c0 = Controls::default();
    let c1 = shift(&c0, "us-east-a", T0);
    let key = "services.catalog.zones.us-east-a.weight";

    // A change every 2 s for 3 hours: only the last hour is kept.
    let mut h = History::new();
    let mut cur = c0.clone();
    let mut t = T0;
    for i in 0..5_400 {
        let next = if i % 2 == 0 {
            shift(&c0, "us-east-a", t)
        } else {
            c0.clone()
        };
        h.record(&cfg, &cur, &next, t);
        cur = next;
        t += 2 * SEC;
    }
    let last = t - 2 * SEC;
    // One removal every 4 s within the hour, and one change time.
    assert!(
        h.removals("catalog").len() <= 900,
        "{}",
        h.removals("catalog").len()
    );
    assert!(h.removals("catalog").len() >= 899);
    assert!(h.len() <= 901, "{}", h.len());
    assert!(h
        .removals("catalog")
        .iter()
        .all(|r| last - r.at_ms < HOUR_MS));
    assert_eq!(h.last_change(key), Some(last));

    // After a quiet hour a record that changes nothing leaves nothing.
    h.record(&cfg, &cur, &cur, last + HOUR_MS);
    assert!(h.is_empty(), "{h:?}");
    assert_eq!(h.len(), 0);
    assert_eq!(h.removed_within_hour("catalog", last + HOUR_MS), 0.0);

    // Removals less than a second apart share one entry that counts until an
    // hour after the later one.
    let mut h = History::new();
    let mut cur = c0.clone();
    for i in 0..100u64 {
        let next = if i % 2 == 0 { c1.clone() } else { c0.clone() };
        h.record(&cfg, &cur, &next, T0 + i * 9);
        cur = next;
    }
    assert_eq!(h.removals("catalog").len(), 1);
    assert_eq!(h.removed_within_hour("catalog", T0 + SEC), 100.0);
    assert_eq!(
        h.removed_within_hour("catalog", T0 + 98 * 9 + HOUR_MS - 1),
        100.0
    );
    assert_eq!(h.removed_within_hour("catalog", T0 + 98 * 9 + HOUR_MS), 0.0);

    // Change times: `new` keeps them an hour, `for_rules` only the flip wait.
    let rules = SafetyConfig::default();
    let mut short = History::for_rules(&rules);
    let mut long = History::new();
    for h in [&mut short, &mut long] {
        h.record(&cfg, &c0, &c1, T0);
    }
    short.record(&cfg, &c1, &c1, T0 + 4_999);
    assert_eq!(short.last_change(key), Some(T0));
    short.record(&cfg, &c1, &c1, T0 + 5_000);
    assert_eq!(short.last_change(key), None);
    assert_eq!(short.removals("catalog").len(), 1, "removals stay an hour");
    long.record(&cfg, &c1, &c1, T0 + 5_000);
    assert_eq!(long.last_change(key), Some(T0));
    long.prune(T0 + HOUR_MS);
    assert!(long.is_empty());
}

#[test]
fn verdicts_serialize() {
    let cfg = config();
    let v = check(
        &cfg,
        &SafetyConfig::default(),
        &History::new(),
        &Controls::default(),
        &zone(&Controls::default(), "us-east-a", 0.0, None),
        T0,
    );
    assert_eq!(rules_of(&v), vec![rule::SHIFT_EXPIRY]);
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["allowed"], false);
    assert_eq!(json["refusals"][0]["rule"], "shift_expiry");
    let text = json.to_string();
    let back: Verdict = serde_json::from_str(&text).unwrap();
    // What passed is for previews, not kept with the refusals.
    assert_eq!((back.allowed, &back.refusals), (v.allowed, &v.refusals));
    assert!(serde_json::from_str::<Refusal>(r#"{"rule":"made_up","message":"x"}"#).is_err());
    assert_eq!(
        v.refusals[0].to_string(),
        format!("shift_expiry: {}", v.refusals[0].message)
    );
    assert_eq!(rule::ALL.len(), 8);
}

#[test]
fn history_survives_a_restart_as_json() {
    let cfg = config();
    let mut h = History::new();
    let c1 = shift(&Controls::default(), "us-east-a", T0);
    h.record(&cfg, &Controls::default(), &c1, T0);
    let back: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
    assert_eq!(back, h);
    assert_eq!(back.removed_within_hour("catalog", T0 + 1), 2.0);
}

#[test]
fn instances_a_config_drops_count_against_the_hourly_removal_budget() {
    let old = config();
    let drop = |names: &[&str]| {
        let mut text = EXAMPLE.to_string();
        for n in names {
            let at = text
                .find(&format!("name = \"{n}\""))
                .unwrap_or_else(|| panic!("no instance {n}"));
            let start = text[..at].rfind("[[service.instance]]").unwrap();
            let end = text[at..]
                .find("[[service.instance]]")
                .map_or(text.len(), |e| at + e);
            text.replace_range(start..end, "");
        }
        Config::from_toml(&text, |_| None).expect("valid config")
    };
    let rules = SafetyConfig {
        max_removal_per_hour: 0.34,
        ..lenient()
    };
    let (o, svc) = (&old.services[0], "catalog");
    assert_eq!(o.name, svc);
    // 4 of 12 fit in 34 % of an hour's budget; 5 do not.
    let four = drop(&["use-a-1", "use-a-2", "use-b-1", "use-b-2"]);
    assert!(config_removal_rate(&rules, o, &four.services[0], 0.0).is_none());
    let five = drop(&["use-a-1", "use-a-2", "use-b-1", "use-b-2", "use-c-1"]);
    let r = config_removal_rate(&rules, o, &five.services[0], 0.0).expect("refused");
    assert_eq!(r.rule, rule::REMOVAL_RATE);
    contains(&r.message, "removes 5 of its 12 instances");
    // What shifts took out earlier in the hour counts too.
    let r = config_removal_rate(&rules, o, &four.services[0], 1.0).expect("refused");
    contains(&r.message, "1 more taken out earlier in the hour");
    // Nothing dropped, nothing to say.
    assert!(config_removal_rate(&rules, o, &old.services[0], 11.0).is_none());
}
