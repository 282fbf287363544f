//! Safety rules: every change to the controls, made by a person or by a
//! playbook, is checked here before it is stored. The checks are pure: no I/O,
//! and the time is passed in, so every rule can be replayed and tested.
//!
//! A refusal names the rule and the numbers behind it, and [`check`] reports
//! every refusal it finds, not only the first, so an operator fixes a proposal
//! in one go.
//!
//! Each capacity rule judges only what the proposal changes: it refuses a
//! proposal that makes its measure worse *and* leaves it beyond the limit. A
//! proposal that makes things better (un-shifting a zone, bringing a region
//! back in) is therefore always allowed by the capacity rules, even while the
//! controls are still beyond a limit; the flip wait still applies to it.
//!
//! Vocabulary used below, for one service:
//! - a region is *in* when its state is `in`; it *serves* when it is in and its
//!   weight is above 0;
//! - a zone *serves* when its effective weight (expired shifts count as 1) is
//!   above 0 and its region is in; it is *shifted* when its effective weight
//!   is 0;
//! - the share of a zone's instances in service is the region's local share
//!   times the zone's effective weight; capacity taken out of service is
//!   measured in instances with that share (a zone at weight 0.5 with 2
//!   instances counts 1).
//!
//! Faults, versions and unknown services, zones or regions are not judged here
//! (the last are refused by `Controls::validate`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use switchyard_model::ops::LONGEST_LEASE;
use switchyard_model::{Config, Controls, RegionControl, RegionState, Service, ServiceControls};

/// The sliding window of the removal-rate rule.
pub const HOUR_MS: u64 = 3_600_000;

/// Removals recorded less than this apart are kept as one entry (stamped with
/// the later time, so they count a little longer, never shorter). This bounds
/// the history to about one entry per second and service.
const MERGE_MS: u64 = 1_000;

/// Tolerance for comparing sums of fractional instance counts.
const EPSILON: f64 = 1e-9;

/// The names of the rules, as they appear in [`Refusal::rule`], audit entries
/// and drill reports.
pub mod rule {
    pub const SERVING_ZONES: &str = "serving_zones";
    pub const SERVING_REGIONS: &str = "serving_regions";
    pub const CAPACITY_FLOOR: &str = "capacity_floor";
    pub const REMOVAL_RATE: &str = "removal_rate";
    pub const FLIP_WAIT: &str = "flip_wait";
    pub const ONE_ZONE_PER_REGION: &str = "one_zone_per_region";
    pub const SHIFT_EXPIRY: &str = "shift_expiry";
    pub const MOVE_CAPACITY: &str = "move_capacity";
    /// Every rule, in the order [`super::check`] applies them.
    pub const ALL: &[&str] = &[
        SERVING_ZONES,
        SERVING_REGIONS,
        CAPACITY_FLOOR,
        MOVE_CAPACITY,
        REMOVAL_RATE,
        FLIP_WAIT,
        ONE_ZONE_PER_REGION,
        SHIFT_EXPIRY,
    ];
}

/// The limits the rules enforce. Defaults follow the zonal-shift figures in
/// DESIGN.md (5 s wait, one zone at a time, 72 h expiry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyConfig {
    /// Zones that must keep serving in every region that is in.
    pub min_serving_zones_per_region: usize,
    /// Regions that must keep serving each service.
    pub min_serving_regions: usize,
    /// Fraction of a service's instances (all regions) that may be taken out
    /// of service within any sliding hour.
    pub max_removal_per_hour: f64,
    /// A control may not change again within this time of its last change.
    pub flip_wait_ms: u64,
    /// Zones shifted away at the same time, per service and region.
    pub max_zones_shifted_per_region: usize,
    /// The furthest expiry a zone shift may carry.
    pub max_shift_ms: u64,
    /// Moving traffic out of a region (a failover, an evacuation step) needs
    /// the regions left serving to hold at least this share of the service's
    /// instances in serving zones.
    pub min_capacity_after_move: f64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            min_serving_zones_per_region: 2,
            min_serving_regions: 1,
            max_removal_per_hour: 0.34,
            flip_wait_ms: 5_000,
            max_zones_shifted_per_region: 1,
            max_shift_ms: 72 * HOUR_MS,
            // Two regions: either one may take all the traffic.
            min_capacity_after_move: 0.5,
        }
    }
}

impl SafetyConfig {
    /// Problems that would make the rules meaningless, each as
    /// `field: problem, got VALUE`. A flip wait above one hour is refused
    /// because [`History::new`] keeps the time of a change for one hour; a
    /// longest shift beyond [`LONGEST_LEASE`] is no limit at all.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let r = self.max_removal_per_hour;
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            errs.push(format!(
                "max_removal_per_hour: must be a fraction between 0 and 1, got {r}"
            ));
        }
        if self.flip_wait_ms > HOUR_MS {
            errs.push(format!(
                "flip_wait_ms: must be at most {HOUR_MS} (one hour), got {}",
                self.flip_wait_ms
            ));
        }
        let m = self.min_capacity_after_move;
        if !(m.is_finite() && (0.0..=1.0).contains(&m)) {
            errs.push(format!(
                "min_capacity_after_move: must be a fraction between 0 and 1, got {m}"
            ));
        }
        let longest = LONGEST_LEASE.as_millis() as u64;
        if self.max_shift_ms == 0 || self.max_shift_ms > longest {
            errs.push(format!(
                "max_shift_ms: must be above 0 and at most {longest} (366 days), got {}",
                self.max_shift_ms
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// The outcome of [`check`]: allowed when no rule refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// Every refusal found, in rule order per service.
    pub refusals: Vec<Refusal>,
    /// The rules that judged the change and let it through, with their
    /// numbers, for the services it changes (a preview shows every rule's
    /// verdict, not only the refusals). Not kept in audit entries.
    #[serde(default, skip)]
    pub passed: Vec<Refusal>,
}

impl Verdict {
    /// The rule of the first refusal, for a one-line audit entry.
    pub fn first_rule(&self) -> Option<&'static str> {
        self.refusals.first().map(|r| r.rule)
    }

    /// Whether `rule` is among the refusals.
    pub fn refused_by(&self, rule: &str) -> bool {
        self.refusals.iter().any(|r| r.rule == rule)
    }

    /// All refusals in one line: `rule: message; rule: message`.
    pub fn summary(&self) -> String {
        self.refusals
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One rule that refused, with the numbers that made it refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// One of [`rule::ALL`].
    pub rule: &'static str,
    pub message: String,
}

impl Refusal {
    /// As the API answers it.
    pub fn to_wire(&self) -> switchyard_api::Refusal {
        switchyard_api::Refusal {
            rule: self.rule.to_string(),
            message: self.message.clone(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// Reads the rule as a string and maps it back onto the rule's name; a rule
/// this version does not know is an error.
impl<'de> Deserialize<'de> for Refusal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            rule: String,
            message: String,
        }
        let raw = Raw::deserialize(d)?;
        let rule = rule::ALL
            .iter()
            .copied()
            .find(|r| *r == raw.rule)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown safety rule {:?}", raw.rule))
            })?;
        Ok(Refusal {
            rule,
            message: raw.message,
        })
    }
}

/// What an accepted change did, as far as the rules remember: capacity taken
/// out of service per service (in instances) and the control keys whose
/// value changed. Kept in the change's audit entry, committed with it, so
/// the removal budget and the flip wait survive a restart or a new leader.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Effects {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

impl Effects {
    pub fn of(config: &Config, before: &Controls, after: &Controls, now_ms: u64) -> Effects {
        Effects {
            removed: config
                .services
                .iter()
                .map(|svc| {
                    (
                        svc.name.clone(),
                        capacity_removed(svc, before, after, now_ms),
                    )
                })
                .filter(|(_, r)| *r > EPSILON)
                .collect(),
            changed: changed_keys(config, before, after, now_ms),
        }
    }
}

/// Capacity taken out of service at one moment, in instances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Removal {
    pub at_ms: u64,
    pub instances: f64,
}

/// What the rules need to remember between changes: per service, the
/// capacity taken out of service in the last hour; per control key, when its
/// value last changed. Memory is bounded: removals older than one hour and
/// change times older than the retention are dropped on every
/// [`History::record`], and removals less than a second apart share one entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    removals: BTreeMap<String, VecDeque<Removal>>,
    changes: BTreeMap<String, u64>,
    change_retention_ms: u64,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// An empty history that keeps change times for one hour, enough for any
    /// flip wait [`SafetyConfig::validate`] accepts.
    pub fn new() -> Self {
        History {
            removals: BTreeMap::new(),
            changes: BTreeMap::new(),
            change_retention_ms: HOUR_MS,
        }
    }

    /// An empty history that keeps change times only as long as the flip
    /// wait of `rules` needs them.
    pub fn for_rules(rules: &SafetyConfig) -> Self {
        History {
            change_retention_ms: rules.flip_wait_ms,
            ..History::new()
        }
    }

    /// Remembers an accepted change from `before` to `after` made at `now_ms`:
    /// the capacity it took out of service per service, and the time of every
    /// control key whose value changed. Drops what no rule needs any more.
    pub fn record(&mut self, config: &Config, before: &Controls, after: &Controls, now_ms: u64) {
        self.apply(&Effects::of(config, before, after, now_ms), now_ms);
    }

    /// Remembers a change's effects, as [`Effects::of`] measured them.
    pub fn apply(&mut self, effects: &Effects, now_ms: u64) {
        for (svc, removed) in &effects.removed {
            if *removed > EPSILON {
                let q = self.removals.entry(svc.clone()).or_default();
                match q.back_mut() {
                    Some(last) if now_ms >= last.at_ms && now_ms - last.at_ms < MERGE_MS => {
                        last.instances += removed;
                        last.at_ms = now_ms;
                    }
                    _ => q.push_back(Removal {
                        at_ms: now_ms,
                        instances: *removed,
                    }),
                }
            }
        }
        for key in &effects.changed {
            self.changes.insert(key.clone(), now_ms);
        }
        self.prune(now_ms);
    }

    /// Drops removals older than one hour and change times older than the
    /// retention.
    pub fn prune(&mut self, now_ms: u64) {
        for q in self.removals.values_mut() {
            q.retain(|r| now_ms.saturating_sub(r.at_ms) < HOUR_MS);
        }
        self.removals.retain(|_, q| !q.is_empty());
        let keep = self.change_retention_ms;
        self.changes
            .retain(|_, at| now_ms.saturating_sub(*at) < keep);
    }

    /// Instances of `service` taken out of service within the hour before
    /// `now_ms` (a removal exactly one hour old no longer counts).
    pub fn removed_within_hour(&self, service: &str, now_ms: u64) -> f64 {
        self.removals.get(service).map_or(0.0, |q| {
            q.iter()
                .filter(|r| now_ms.saturating_sub(r.at_ms) < HOUR_MS)
                .map(|r| r.instances)
                .sum()
        })
    }

    /// The removals remembered for `service`, oldest first.
    pub fn removals(&self, service: &str) -> Vec<Removal> {
        self.removals
            .get(service)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    /// When the control `key` (as named by [`changed_keys`]) last changed, if
    /// that is still remembered.
    pub fn last_change(&self, key: &str) -> Option<u64> {
        self.changes.get(key).copied()
    }

    /// The number of entries held (removals plus change times).
    pub fn len(&self) -> usize {
        self.removals.values().map(VecDeque::len).sum::<usize>() + self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks `proposed` against the rules, given the `current` controls and what
/// `history` remembers, at `now_ms`. Reports every refusal found.
pub fn check(
    config: &Config,
    rules: &SafetyConfig,
    history: &History,
    current: &Controls,
    proposed: &Controls,
    now_ms: u64,
) -> Verdict {
    let mut out = Judging::default();
    let empty = ServiceControls::default();
    for svc in &config.services {
        let cur = View::of(current, &svc.name, &empty, now_ms);
        let prop = View::of(proposed, &svc.name, &empty, now_ms);
        let regions = service_regions(config, svc);
        let passed_before = out.passed.len();
        serving_zones(config, rules, svc, &regions, &cur, &prop, &mut out);
        serving_regions(rules, svc, &regions, &cur, &prop, &mut out);
        capacity_floor(svc, &regions, &cur, &prop, &mut out);
        move_capacity(rules, svc, &regions, &cur, &prop, &mut out);
        removal_rate(rules, history, svc, current, proposed, now_ms, &mut out);
        flip_wait(config, rules, history, svc, &cur, &prop, now_ms, &mut out);
        one_zone_per_region(config, rules, svc, &regions, &cur, &prop, &mut out);
        shift_expiry(config, rules, svc, &cur, &prop, now_ms, &mut out);
        // A service the change leaves alone passes every rule trivially.
        if cur.sc == prop.sc {
            out.passed.truncate(passed_before);
        }
    }
    Verdict {
        allowed: out.refusals.is_empty(),
        refusals: out.refusals,
        passed: out.passed,
    }
}

/// What the rules found, refusals and passes, as they are applied.
#[derive(Default)]
pub struct Judging {
    refusals: Vec<Refusal>,
    passed: Vec<Refusal>,
}

impl Judging {
    fn push(&mut self, r: Refusal) {
        self.refusals.push(r);
    }

    fn pass(&mut self, rule: &'static str, message: String) {
        self.passed.push(Refusal { rule, message });
    }
}

/// Rule 1, serving zones per region. Gray failures are mitigated by shifting
/// traffic away from a zone, but every shift loads the zones that remain; a
/// mislocalized or runaway detector must not be able to leave a region on a
/// single zone (zonal shift's "at least N of these controls on"). Regions
/// going out are judged by the region rules, not this one.
fn serving_zones(
    config: &Config,
    rules: &SafetyConfig,
    svc: &Service,
    regions: &[String],
    cur: &View,
    prop: &View,
    out: &mut Judging,
) {
    let min = rules.min_serving_zones_per_region;
    for region in regions {
        if !prop.region_in(region) {
            continue;
        }
        let zones = zones_of(config, region);
        let after = zones
            .iter()
            .filter(|z| prop.zone_serving(region, z))
            .count();
        let before = zones.iter().filter(|z| cur.zone_serving(region, z)).count();
        if after < min && after < before {
            out.push(Refusal {
                rule: rule::SERVING_ZONES,
                message: format!(
                    "service {}: region {region} would keep {after} serving {} of {}; at least {min} {} required",
                    svc.name,
                    plural(after, "zone", "zones"),
                    zones.len(),
                    plural(min, "is", "are"),
                ),
            });
        } else if after != before {
            out.pass(
                rule::SERVING_ZONES,
                format!(
                    "service {}: region {region} keeps {after} serving {} of {} (was {before}); at least {min} required",
                    svc.name,
                    plural(after, "zone", "zones"),
                    zones.len(),
                ),
            );
        }
    }
}

/// Rule 2, serving regions. Regions are active-active so that losing one is
/// survivable; evacuating them all is an outage, whatever signal (often a
/// shared dependency or a broken detector) asked for it.
fn serving_regions(
    rules: &SafetyConfig,
    svc: &Service,
    regions: &[String],
    cur: &View,
    prop: &View,
    out: &mut Judging,
) {
    let min = rules.min_serving_regions;
    let after = regions.iter().filter(|r| prop.region_serving(r)).count();
    let before = regions.iter().filter(|r| cur.region_serving(r)).count();
    if after < min && after < before {
        out.push(Refusal {
            rule: rule::SERVING_REGIONS,
            message: format!(
                "service {} would keep {after} serving {} of {}; at least {min} {} required",
                svc.name,
                plural(after, "region", "regions"),
                regions.len(),
                plural(min, "is", "are"),
            ),
        });
    } else if after != before {
        out.pass(
            rule::SERVING_REGIONS,
            format!(
                "service {} keeps {after} serving {} of {} (was {before}); at least {min} required",
                svc.name,
                plural(after, "region", "regions"),
                regions.len(),
            ),
        );
    }
}

/// Rule 3, capacity floor. The DNS resolver outage: a change silently dropped
/// the minimum of healthy hosts and the fleet collapsed. `min_healthy` is
/// explicit in the config and every change must keep that many instances of
/// each region that stays in inside serving zones (the same floor the edges
/// guard with panic routing).
fn capacity_floor(svc: &Service, regions: &[String], cur: &View, prop: &View, out: &mut Judging) {
    for region in regions {
        if !prop.region_in(region) {
            continue;
        }
        let count = |v: &View| {
            svc.instances_in_region(region)
                .filter(|i| v.zone_serving(region, &i.zone))
                .count()
        };
        let (before, after) = (count(cur), count(prop));
        let floor = svc.floor(region);
        if after < floor && after < before {
            out.push(Refusal {
                rule: rule::CAPACITY_FLOOR,
                message: format!(
                    "service {}: region {region} would keep {after} {} in serving zones; at least {floor} must stay in service (min_healthy {} of {})",
                    svc.name,
                    plural(after, "instance", "instances"),
                    num(svc.min_healthy),
                    svc.instances_in_region(region).count(),
                ),
            });
        } else if after != before {
            out.pass(
                rule::CAPACITY_FLOOR,
                format!(
                    "service {}: region {region} keeps {after} of {} instances in serving zones (was {before}); the floor is {floor} (min_healthy {})",
                    svc.name,
                    svc.instances_in_region(region).count(),
                    num(svc.min_healthy),
                ),
            );
        }
    }
}

/// Rule 3b, capacity for a region move. Moving a region's traffic to others
/// (a failover, an evacuation step) is not capacity lost piecemeal: it is
/// one decision, allowed when the regions left serving have the capacity
/// to take it — together at least `min_capacity_after_move` of all the
/// service's instances, in serving zones of serving regions. Judged only
/// for changes that move traffic out of a region.
fn move_capacity(
    rules: &SafetyConfig,
    svc: &Service,
    regions: &[String],
    cur: &View,
    prop: &View,
    out: &mut Judging,
) {
    let moved = regions
        .iter()
        .any(|r| prop.region(r).local_share() + EPSILON < cur.region(r).local_share());
    if !moved {
        return;
    }
    let serving = |v: &View| {
        regions
            .iter()
            .filter(|r| v.region_serving(r))
            .flat_map(|r| {
                svc.instances_in_region(r)
                    .filter(|i| v.zone_serving(r, &i.zone))
                    .collect::<Vec<_>>()
            })
            .count()
    };
    let total = svc.instances.len();
    let need = (rules.min_capacity_after_move * total as f64 - EPSILON).ceil() as usize;
    let after = serving(prop);
    if after < need {
        out.push(Refusal {
            rule: rule::MOVE_CAPACITY,
            message: format!(
                "service {}: the regions left serving would hold {after} of its {total} instances in serving zones; moving traffic there needs at least {need} (min_capacity_after_move {})",
                svc.name,
                num(rules.min_capacity_after_move),
            ),
        });
    } else {
        out.pass(
            rule::MOVE_CAPACITY,
            format!(
                "service {}: the regions left serving hold {after} of its {total} instances in serving zones; at least {need} needed (min_capacity_after_move {})",
                svc.name,
                num(rules.min_capacity_after_move),
            ),
        );
    }
}

/// Rule 4, removal rate. The fix for the DNS resolver outage was also a limit
/// on how much capacity may leave service per hour, so that many small steps
/// (each allowed on its own, or a playbook acting in a loop) cannot add up to
/// a collapse. It counts capacity taken out piecemeal — zones shifted away,
/// by people or by playbooks acting on detection — not a region's traffic
/// moved to regions that can take it (that is one decision, judged by the
/// move capacity rule: an operator's failover and an evacuation playbook go
/// through with the default budget).
#[allow(clippy::too_many_arguments)]
fn removal_rate(
    rules: &SafetyConfig,
    history: &History,
    svc: &Service,
    current: &Controls,
    proposed: &Controls,
    now_ms: u64,
    out: &mut Judging,
) {
    let now = capacity_removed(svc, current, proposed, now_ms);
    if now <= EPSILON {
        return;
    }
    let earlier = history.removed_within_hour(&svc.name, now_ms);
    let total = svc.instances.len();
    let limit = rules.max_removal_per_hour * total as f64;
    // One message either way: a preview shows the same numbers whether
    // the rule lets the change through or not.
    let message = format!(
        "service {} would have {} instances taken out of service within an hour ({} now, {} earlier in the hour); at most {} of {} ({}%) may be taken out per hour",
        svc.name,
        num(now + earlier),
        num(now),
        num(earlier),
        num(limit),
        total,
        num(rules.max_removal_per_hour * 100.0),
    );
    if now + earlier > limit + EPSILON {
        out.push(Refusal {
            rule: rule::REMOVAL_RATE,
            message,
        });
    } else {
        out.pass(rule::REMOVAL_RATE, message);
    }
}

/// Rule 4 for a config that removes instances: they leave service as its
/// rollout reaches them, and an acknowledgement of `capacity_removed` says a
/// person meant it, not that the pace is safe. So the instances a new config
/// drops from `old` count against the same hourly budget as shifts do
/// (`earlier`: taken out within the hour by changes to the controls). A
/// service the new config drops altogether is `service_removed`, not
/// capacity leaving a service that keeps serving.
pub fn config_removal_rate(
    rules: &SafetyConfig,
    old: &Service,
    new: &Service,
    earlier: f64,
) -> Option<Refusal> {
    let removed = old
        .instances
        .iter()
        .filter(|i| !new.instances.iter().any(|n| n.name == i.name))
        .count() as f64;
    if removed <= EPSILON {
        return None;
    }
    let total = old.instances.len();
    let limit = rules.max_removal_per_hour * total as f64;
    (removed + earlier > limit + EPSILON).then(|| Refusal {
        rule: rule::REMOVAL_RATE,
        message: format!(
            "service {}: the new config removes {} of its {} instances ({} more taken out earlier in the hour); at most {} ({}%) may leave service per hour: remove them in several rollouts, an hour apart",
            old.name,
            num(removed),
            total,
            num(earlier),
            num(limit),
            num(rules.max_removal_per_hour * 100.0),
        ),
    })
}

/// Rule 5, flip wait. Zonal shift's wait period against flapping: steering
/// must be stable and predictable, and a change needs time to show its effect
/// before the next one is decided on the signals it produced.
#[allow(clippy::too_many_arguments)]
fn flip_wait(
    config: &Config,
    rules: &SafetyConfig,
    history: &History,
    svc: &Service,
    cur: &View,
    prop: &View,
    now_ms: u64,
    out: &mut Judging,
) {
    let before = control_values(config, svc, cur);
    let after = control_values(config, svc, prop);
    for ((key, old), (_, new)) in before.iter().zip(after.iter()) {
        if old == new {
            continue;
        }
        let Some(at) = history.last_change(key) else {
            out.pass(
                rule::FLIP_WAIT,
                format!(
                    "{key}: {old} to {new}, not changed in the remembered history (the wait is {} ms)",
                    rules.flip_wait_ms
                ),
            );
            continue;
        };
        let ago = now_ms.saturating_sub(at);
        if ago >= rules.flip_wait_ms {
            out.pass(
                rule::FLIP_WAIT,
                format!(
                    "{key}: {old} to {new}, last changed {ago} ms ago; at least {} ms must pass",
                    rules.flip_wait_ms
                ),
            );
        } else {
            out.push(Refusal {
                rule: rule::FLIP_WAIT,
                message: format!(
                    "{key} last changed {ago} ms ago; changing it from {old} to {new} must wait until {} ms have passed ({} ms left)",
                    rules.flip_wait_ms,
                    rules.flip_wait_ms - ago,
                ),
            });
        }
    }
}

/// Rule 6, one zone per region. Zonal shift moves one zone per resource at a
/// time: two zones of a region failing together points to a region-wide or
/// shared cause (or a wrong detector), where shifting zones one after another
/// would only concentrate load; that calls for a region-level decision.
fn one_zone_per_region(
    config: &Config,
    rules: &SafetyConfig,
    svc: &Service,
    regions: &[String],
    cur: &View,
    prop: &View,
    out: &mut Judging,
) {
    let max = rules.max_zones_shifted_per_region;
    for region in regions {
        let zones = zones_of(config, region);
        let shifted = |v: &View| -> Vec<&str> {
            zones
                .iter()
                .filter(|z| v.zone_weight(z) <= 0.0)
                .map(String::as_str)
                .collect()
        };
        let (before, after) = (shifted(cur), shifted(prop));
        if after.len() > max && after.len() > before.len() {
            out.push(Refusal {
                rule: rule::ONE_ZONE_PER_REGION,
                message: format!(
                    "service {}: region {region} would have {} {} shifted away ({}); at most {max} at a time",
                    svc.name,
                    after.len(),
                    plural(after.len(), "zone", "zones"),
                    after.join(", "),
                ),
            });
        } else if after != before {
            out.pass(
                rule::ONE_ZONE_PER_REGION,
                format!(
                    "service {}: region {region} would have {} {} shifted away; at most {max} at a time",
                    svc.name,
                    after.len(),
                    plural(after.len(), "zone", "zones"),
                ),
            );
        }
    }
}

/// Rule 7, shift expiry. A shift is a lease that ends on its own even when the
/// control plane is gone (static stability); a forgotten shift would silently
/// keep capacity out of service. Zonal shift caps a lease at 72 h. Only zone
/// controls the proposal changes are judged.
fn shift_expiry(
    config: &Config,
    rules: &SafetyConfig,
    svc: &Service,
    cur: &View,
    prop: &View,
    now_ms: u64,
    out: &mut Judging,
) {
    let latest = now_ms.saturating_add(rules.max_shift_ms);
    for zone in config.zones() {
        let Some(zc) = prop.sc.zones.get(&zone.name) else {
            continue;
        };
        if cur.sc.zones.get(&zone.name) == Some(zc) || zc.weight >= 1.0 {
            continue;
        }
        let problem = match zc.expires_at_ms {
            None => "has no expiry".to_string(),
            Some(t) if t > latest => format!(
                "expires {} ms from now, {} ms later than allowed",
                t - now_ms,
                t - latest
            ),
            Some(t) => {
                out.pass(
                    rule::SHIFT_EXPIRY,
                    format!(
                        "service {}: zone {} at weight {} expires in {}; at most {} allowed",
                        svc.name,
                        zone.name,
                        num(zc.weight),
                        human_ms(t.saturating_sub(now_ms)),
                        human_ms(rules.max_shift_ms),
                    ),
                );
                continue;
            }
        };
        out.push(Refusal {
            rule: rule::SHIFT_EXPIRY,
            message: format!(
                "service {}: zone {} at weight {} {problem}; every shift must expire within {} ms ({})",
                svc.name,
                zone.name,
                num(zc.weight),
                rules.max_shift_ms,
                human_ms(rules.max_shift_ms),
            ),
        });
    }
}

/// Instances of `svc` that the change from `before` to `after` takes out of
/// service piecemeal at `now_ms`: per zone, its instances times the drop of
/// its effective weight, at the local share its region keeps. A region's
/// traffic moved elsewhere is not counted (see the move capacity rule).
/// Restorations do not offset removals elsewhere.
pub fn capacity_removed(svc: &Service, before: &Controls, after: &Controls, now_ms: u64) -> f64 {
    let empty = ServiceControls::default();
    let b = View::of(before, &svc.name, &empty, now_ms);
    let a = View::of(after, &svc.name, &empty, now_ms);
    let mut per_zone: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for i in &svc.instances {
        *per_zone.entry((&i.region, &i.zone)).or_default() += 1;
    }
    // Only the zones' part: a zone's weight falling, at the share its
    // region keeps. A region's own share falling is a move, not a removal.
    per_zone
        .into_iter()
        .map(|((region, zone), n)| {
            let region_share = b
                .region(region)
                .local_share()
                .min(a.region(region).local_share())
                .clamp(0.0, 1.0);
            let drop = b.zone_weight(zone).clamp(0.0, 1.0) - a.zone_weight(zone).clamp(0.0, 1.0);
            n as f64 * region_share * drop.max(0.0)
        })
        .sum()
}

/// The control keys whose value differs between `before` and `after` at
/// `now_ms`, for every service of the config, named by their path:
/// `services.catalog.zones.us-east-a.weight`,
/// `services.catalog.regions.us-east.state` (also `weight`, `failover`,
/// `read_only`), `services.catalog.read_only`, `services.catalog.shed_level`.
/// A zone's weight is compared as effective weight, so extending a shift's
/// expiry is not a change.
pub fn changed_keys(
    config: &Config,
    before: &Controls,
    after: &Controls,
    now_ms: u64,
) -> Vec<String> {
    let empty = ServiceControls::default();
    let mut keys = Vec::new();
    for svc in &config.services {
        let b = control_values(config, svc, &View::of(before, &svc.name, &empty, now_ms));
        let a = control_values(config, svc, &View::of(after, &svc.name, &empty, now_ms));
        for ((key, old), (_, new)) in b.into_iter().zip(a) {
            if old != new {
                keys.push(key);
            }
        }
    }
    keys
}

/// One service's controls seen at one instant, with defaults for what is
/// absent (zones at weight 1, regions in at weight 1).
struct View<'a> {
    sc: &'a ServiceControls,
    now: u64,
}

impl<'a> View<'a> {
    fn of(c: &'a Controls, service: &str, empty: &'a ServiceControls, now: u64) -> Self {
        View {
            sc: c.services.get(service).unwrap_or(empty),
            now,
        }
    }

    fn zone_weight(&self, zone: &str) -> f64 {
        self.sc
            .zones
            .get(zone)
            .map_or(1.0, |z| z.effective_weight(self.now))
    }

    fn region(&self, region: &str) -> RegionControl {
        self.sc.regions.get(region).cloned().unwrap_or_default()
    }

    fn region_in(&self, region: &str) -> bool {
        self.region(region).state == RegionState::In
    }

    fn region_serving(&self, region: &str) -> bool {
        let r = self.region(region);
        r.state == RegionState::In && r.weight > 0.0
    }

    fn zone_serving(&self, region: &str, zone: &str) -> bool {
        self.region_in(region) && self.zone_weight(zone) > 0.0
    }
}

/// A control's value, for the flip wait.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Weight(f64),
    Flag(bool),
    State(RegionState),
    Level(u8),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Weight(w) => write!(f, "{}", num(*w)),
            Value::Flag(b) => write!(f, "{b}"),
            Value::State(RegionState::In) => write!(f, "in"),
            Value::State(RegionState::Out) => write!(f, "out"),
            Value::Level(l) => write!(f, "{l}"),
        }
    }
}

/// Every control key of one service with its value, in a fixed order (the
/// config's), so two lists for the same service line up.
fn control_values(config: &Config, svc: &Service, v: &View) -> Vec<(String, Value)> {
    let p = format!("services.{}", svc.name);
    let mut out = vec![
        (format!("{p}.read_only"), Value::Flag(v.sc.read_only)),
        (format!("{p}.shed_level"), Value::Level(v.sc.shed_level)),
    ];
    for region in &config.regions {
        let rc = v.region(&region.name);
        let rp = format!("{p}.regions.{}", region.name);
        out.push((format!("{rp}.state"), Value::State(rc.state)));
        out.push((format!("{rp}.weight"), Value::Weight(rc.weight)));
        out.push((format!("{rp}.failover"), Value::Flag(rc.failover)));
        out.push((format!("{rp}.read_only"), Value::Flag(rc.read_only)));
        for zone in &region.zones {
            out.push((
                format!("{p}.zones.{}.weight", zone.name),
                Value::Weight(v.zone_weight(&zone.name)),
            ));
        }
    }
    out
}

/// The regions where the service has instances.
fn service_regions(config: &Config, svc: &Service) -> Vec<String> {
    config
        .regions
        .iter()
        .filter(|r| svc.instances.iter().any(|i| i.region == r.name))
        .map(|r| r.name.clone())
        .collect()
}

fn zones_of(config: &Config, region: &str) -> Vec<String> {
    config
        .region(region)
        .map(|r| r.zones.iter().map(|z| z.name.clone()).collect())
        .unwrap_or_default()
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// A number for a message: integers without decimals, others with at most two.
fn num(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(HOUR_MS) {
        format!("{} h", ms / HOUR_MS)
    } else if ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{ms} ms")
    }
}
