//! SLA arithmetic: the availability a composition of parts can promise, and
//! the availability users actually got, read from recorded signals, with the
//! error budget an objective leaves over the same window.
//!
//! # Compositions
//!
//! A composition file names components; each is exactly one of
//!
//! - a leaf with a measured or promised `availability` in (0, 1];
//! - `series = [...]`: every part is needed, A = Π aᵢ;
//! - `parallel = [...]`: any one part suffices, A = 1 − Π (1 − aᵢ);
//! - `k_of_n = { k = K, parts = [...] }`: at least K of the parts are needed,
//!   computed exactly by a dynamic programme over the parts' probabilities
//!   (the parts may differ).
//!
//! Parts fail independently: a name listed twice stands for two independent
//! copies of the same kind of part (three zones built alike, say), and a
//! component shared by two branches is counted once per branch. That is the
//! usual reliability-block arithmetic; correlated failures (a bad deploy to
//! every zone) are exactly what it does not see, which is why measured
//! availability sits next to it.
//!
//! Internally everything is carried as *unavailability* (1 − A): for the
//! availabilities that matter (many nines) that keeps the digits that
//! `1 − A` would cancel away.
//!
//! # Measured availability
//!
//! From a trace of edge snapshots: requests and failed requests per service
//! (only the [`ErrorClass`]es that count against the target count;
//! deliberate `shed` and `read_only` answers are counted apart), the
//! availability 1 − failed/requests, the window the snapshots cover, the
//! error budget (1 − objective) × requests, how much of it was spent and what
//! remains, and the worst minute. The same per region of the target zone,
//! zones mapped to regions the way the detection engine maps them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use switchyard_model::signals::{ErrorClass, ProbeTarget, Snapshot};

/// A month for SLA purposes: 30 days.
pub const MONTH_S: f64 = 30.0 * 86_400.0;
/// A year for SLA purposes: 365 days.
pub const YEAR_S: f64 = 365.0 * 86_400.0;

/// Availabilities compare with this much slack, so arithmetic rounding does
/// not turn "exactly the objective" into "missed it".
const SLACK: f64 = 1e-12;

// ---------------------------------------------------------------------------
// Composition file: raw types as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComposition {
    objective: Option<f64>,
    top: Option<String>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    availability: Option<f64>,
    series: Option<Vec<String>>,
    parallel: Option<Vec<String>>,
    k_of_n: Option<RawKOfN>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKOfN {
    k: i64,
    parts: Vec<String>,
}

// ---------------------------------------------------------------------------
// Validated model.

/// How a component's availability comes about.
#[derive(Debug, Clone, PartialEq)]
pub enum Component {
    Leaf { availability: f64 },
    Series { parts: Vec<String> },
    Parallel { parts: Vec<String> },
    KOfN { k: usize, parts: Vec<String> },
}

impl Component {
    pub fn kind(&self) -> &'static str {
        match self {
            Component::Leaf { .. } => "leaf",
            Component::Series { .. } => "series",
            Component::Parallel { .. } => "parallel",
            Component::KOfN { .. } => "k_of_n",
        }
    }

    pub fn parts(&self) -> &[String] {
        match self {
            Component::Leaf { .. } => &[],
            Component::Series { parts }
            | Component::Parallel { parts }
            | Component::KOfN { parts, .. } => parts,
        }
    }
}

/// A validated composition: every part exists, no cycles, numbers in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Composition {
    pub objective: Option<f64>,
    pub top: String,
    pub components: BTreeMap<String, Component>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompositionError {
    /// Not TOML, or not the shape of a composition (unknown key, wrong type);
    /// the message names the line and column.
    #[error("{0}")]
    Parse(String),
    /// Every semantic problem, each with the path of the value at fault.
    #[error("{} problem{}: {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("; "))]
    Invalid(Vec<String>),
}

impl CompositionError {
    /// One line per problem.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            CompositionError::Parse(m) => vec![m.trim_end().to_string()],
            CompositionError::Invalid(v) => v.clone(),
        }
    }
}

/// `component.NAME`, quoting NAME the way TOML would need it.
fn component_path(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        format!("component.{name}")
    } else {
        format!("component.{name:?}")
    }
}

fn in_unit(x: f64) -> bool {
    x > 0.0 && x <= 1.0
}

impl Composition {
    /// Parses and validates a composition file, reporting every semantic
    /// problem at once.
    pub fn from_toml(text: &str) -> Result<Composition, CompositionError> {
        let raw: RawComposition =
            toml::from_str(text).map_err(|e| CompositionError::Parse(e.to_string()))?;
        let mut problems = Vec::new();

        if let Some(o) = raw.objective {
            if !(o > 0.0 && o < 1.0) {
                problems.push(format!("objective: must be in (0, 1), got {o}"));
            }
        }
        if raw.component.is_empty() {
            problems.push("component: none defined; add at least one [component.NAME]".into());
        }
        match &raw.top {
            None => problems
                .push("top: missing; name the component whose availability is asked for".into()),
            Some(t) if !raw.component.is_empty() && !raw.component.contains_key(t) => {
                problems.push(format!("top: unknown component {t:?}"))
            }
            Some(_) => {}
        }

        let mut components = BTreeMap::new();
        for (name, c) in &raw.component {
            let path = component_path(name);
            let given: Vec<&str> = [
                ("availability", c.availability.is_some()),
                ("series", c.series.is_some()),
                ("parallel", c.parallel.is_some()),
                ("k_of_n", c.k_of_n.is_some()),
            ]
            .into_iter()
            .filter_map(|(k, set)| set.then_some(k))
            .collect();
            if given.len() != 1 {
                problems.push(format!(
                    "{path}: must have exactly one of availability, series, parallel, k_of_n; {}",
                    if given.is_empty() {
                        "has none".to_string()
                    } else {
                        format!("has {}", given.join(" and "))
                    }
                ));
                continue;
            }
            let check_parts = |key: &str, parts: &[String], problems: &mut Vec<String>| {
                if parts.is_empty() {
                    problems.push(format!("{path}.{key}: must name at least one component"));
                }
                for (i, p) in parts.iter().enumerate() {
                    if !raw.component.contains_key(p) {
                        problems.push(format!("{path}.{key}[{i}]: unknown component {p:?}"));
                    }
                }
            };
            let comp = if let Some(a) = c.availability {
                if !in_unit(a) {
                    problems.push(format!("{path}.availability: must be in (0, 1], got {a}"));
                }
                Component::Leaf { availability: a }
            } else if let Some(parts) = &c.series {
                check_parts("series", parts, &mut problems);
                Component::Series {
                    parts: parts.clone(),
                }
            } else if let Some(parts) = &c.parallel {
                check_parts("parallel", parts, &mut problems);
                Component::Parallel {
                    parts: parts.clone(),
                }
            } else {
                let kn = c.k_of_n.as_ref().expect("one of the four is set");
                check_parts("k_of_n.parts", &kn.parts, &mut problems);
                let n = kn.parts.len();
                if n > 0 && !(kn.k >= 1 && kn.k as u64 <= n as u64) {
                    problems.push(format!(
                        "{path}.k_of_n.k: must be between 1 and {n} (the number of parts), got {}",
                        kn.k
                    ));
                }
                Component::KOfN {
                    k: kn.k.max(0) as usize,
                    parts: kn.parts.clone(),
                }
            };
            components.insert(name.clone(), comp);
        }

        for cycle in cycles(&components) {
            problems.push(format!(
                "{}: cycle {}",
                component_path(&cycle[0]),
                cycle.join(" -> ")
            ));
        }

        if !problems.is_empty() {
            return Err(CompositionError::Invalid(problems));
        }
        Ok(Composition {
            objective: raw.objective,
            top: raw.top.expect("checked above"),
            components,
        })
    }

    /// Availability of every component: `top` first, then the components it
    /// uses in the order it names them, then any the top does not use.
    pub fn evaluate(&self) -> Evaluation {
        let mut memo: BTreeMap<String, f64> = BTreeMap::new();
        // Dependencies first, without recursion: the file is validated
        // acyclic, so a post-order walk settles every component.
        for root in self.components.keys() {
            let mut stack: Vec<(&str, bool)> = vec![(root.as_str(), false)];
            while let Some((name, expanded)) = stack.pop() {
                if memo.contains_key(name) {
                    continue;
                }
                let c = &self.components[name];
                if expanded {
                    let parts: Vec<f64> = c.parts().iter().map(|p| memo[p]).collect();
                    let u = match c {
                        Component::Leaf { availability } => 1.0 - availability,
                        Component::Series { .. } => series_unavailability(&parts),
                        Component::Parallel { .. } => parallel_unavailability(&parts),
                        Component::KOfN { k, .. } => k_of_n_unavailability(*k, &parts),
                    };
                    memo.insert(name.to_string(), u);
                } else {
                    stack.push((name, true));
                    for p in c.parts() {
                        if !memo.contains_key(p) {
                            stack.push((p.as_str(), false));
                        }
                    }
                }
            }
        }

        // Pre-order from the top, then the rest by name.
        let mut order: Vec<(String, bool)> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![self.top.clone()];
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            for p in self.components[&n].parts().iter().rev() {
                if !seen.contains(p) {
                    stack.push(p.clone());
                }
            }
            order.push((n, true));
        }
        for n in self.components.keys() {
            if !seen.contains(n) {
                order.push((n.clone(), false));
            }
        }

        let components = order
            .into_iter()
            .map(|(name, used)| {
                let c = &self.components[&name];
                let u = memo[&name];
                let a = 1.0 - u;
                ComponentResult {
                    kind: c.kind().to_string(),
                    parts: c.parts().to_vec(),
                    k: match c {
                        Component::KOfN { k, .. } => Some(*k),
                        _ => None,
                    },
                    availability: a,
                    unavailability: u,
                    nines: nines(u),
                    downtime_month_s: u * MONTH_S,
                    downtime_month: human_duration(u * MONTH_S),
                    downtime_year_s: u * YEAR_S,
                    downtime_year: human_duration(u * YEAR_S),
                    meets_objective: self.objective.map(|o| meets(a, o)),
                    used_by_top: used,
                    name,
                }
            })
            .collect::<Vec<_>>();
        Evaluation {
            objective: self.objective,
            top: self.top.clone(),
            availability: components[0].availability,
            meets_objective: components[0].meets_objective,
            components,
        }
    }
}

/// Every cycle among the components, each once, starting from its first
/// component by name and ending where it began (`a -> b -> a`).
fn cycles(components: &BTreeMap<String, Component>) -> Vec<Vec<String>> {
    // 0 unseen, 1 on the current path, 2 done.
    let mut state: BTreeMap<&str, u8> = components.keys().map(|k| (k.as_str(), 0)).collect();
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut seen_sets: BTreeSet<Vec<String>> = BTreeSet::new();
    for root in components.keys() {
        if state[root.as_str()] != 0 {
            continue;
        }
        // (node, index of the next part to look at)
        let mut path: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
        state.insert(root.as_str(), 1);
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let parts = components[node].parts();
            if *next >= parts.len() {
                state.insert(node, 2);
                path.pop();
                continue;
            }
            let child = parts[*next].as_str();
            *next += 1;
            match state.get(child) {
                None => {} // unknown part, reported elsewhere
                Some(0) => {
                    state.insert(child, 1);
                    path.push((child, 0));
                }
                Some(1) => {
                    let from = path
                        .iter()
                        .position(|(n, _)| *n == child)
                        .expect("on the path");
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|(n, _)| n.to_string()).collect();
                    // Canonical rotation: start at the smallest name.
                    let min = (0..cycle.len())
                        .min_by(|&a, &b| cycle[a].cmp(&cycle[b]))
                        .unwrap_or(0);
                    cycle.rotate_left(min);
                    if seen_sets.insert(cycle.clone()) {
                        cycle.push(cycle[0].clone());
                        found.push(cycle);
                    }
                }
                Some(_) => {}
            }
        }
    }
    found
}

fn meets(availability: f64, objective: f64) -> bool {
    availability >= objective - SLACK
}

/// 1 − Π (1 − uᵢ), computed without cancelling the small digits.
pub fn series_unavailability(parts: &[f64]) -> f64 {
    let log_avail: f64 = parts.iter().map(|u| (-u).ln_1p()).sum();
    -log_avail.exp_m1()
}

/// Π uᵢ: down only when every part is down.
pub fn parallel_unavailability(parts: &[f64]) -> f64 {
    parts.iter().product()
}

/// Probability that fewer than `k` of the parts are up, the parts up
/// independently with availability 1 − uᵢ: a dynamic programme over how many
/// parts are up, exact for parts that differ.
pub fn k_of_n_unavailability(k: usize, parts: &[f64]) -> f64 {
    // up[j]: probability that exactly j of the parts seen so far are up.
    let mut up = vec![0.0; parts.len() + 1];
    up[0] = 1.0;
    for (i, &u) in parts.iter().enumerate() {
        let a = 1.0 - u;
        for j in (0..=i + 1).rev() {
            let stay_down = up[j] * u;
            let came_up = if j > 0 { up[j - 1] * a } else { 0.0 };
            up[j] = stay_down + came_up;
        }
    }
    up.iter().take(k.min(up.len())).sum()
}

/// Availability of parts in series.
pub fn series(availabilities: &[f64]) -> f64 {
    1.0 - series_unavailability(&availabilities.iter().map(|a| 1.0 - a).collect::<Vec<_>>())
}

/// Availability of redundant parts, any one of which suffices.
pub fn parallel(availabilities: &[f64]) -> f64 {
    1.0 - parallel_unavailability(&availabilities.iter().map(|a| 1.0 - a).collect::<Vec<_>>())
}

/// Availability of at least `k` of the parts being up.
pub fn k_of_n(k: usize, availabilities: &[f64]) -> f64 {
    1.0 - k_of_n_unavailability(
        k,
        &availabilities.iter().map(|a| 1.0 - a).collect::<Vec<_>>(),
    )
}

/// −log10(unavailability): 0.999 is 3 nines. `None` for a perfect 1.
pub fn nines(unavailability: f64) -> Option<f64> {
    (unavailability > 0.0).then(|| -unavailability.log10())
}

/// Allowed downtime over `period_s` at `availability`.
pub fn downtime_s(availability: f64, period_s: f64) -> f64 {
    (1.0 - availability) * period_s
}

/// Seconds for people: `43 min 12 s`, `8 h 45 min 36 s`, `25.9 s`, `259 ms`.
pub fn human_duration(s: f64) -> String {
    if !s.is_finite() {
        return format!("{s} s");
    }
    if s <= 0.0 {
        return "0 s".into();
    }
    if s < 1.0 {
        return format!("{} ms", (s * 1000.0).round().max(1.0));
    }
    if s < 60.0 {
        let r = (s * 10.0).round() / 10.0;
        if r < 60.0 {
            return if r.fract() == 0.0 {
                format!("{r:.0} s")
            } else {
                format!("{r:.1} s")
            };
        }
    }
    let total = s.round() as u64;
    let units = [("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)];
    let mut rest = total;
    let mut out = Vec::new();
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            out.push(format!("{n} {name}"));
        }
    }
    out.join(" ")
}

/// The availability of every component of a composition.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub objective: Option<f64>,
    pub top: String,
    /// The top's availability.
    pub availability: f64,
    /// The top meets the objective (`None` without one).
    pub meets_objective: Option<bool>,
    /// The top first, then what it uses, then unused components.
    pub components: Vec<ComponentResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentResult {
    pub name: String,
    /// `leaf`, `series`, `parallel` or `k_of_n`.
    pub kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    pub availability: f64,
    pub unavailability: f64,
    /// −log10(1 − availability); `null` for a perfect 1.
    pub nines: Option<f64>,
    /// Allowed downtime per 30-day month.
    pub downtime_month_s: f64,
    pub downtime_month: String,
    /// Allowed downtime per 365-day year.
    pub downtime_year_s: f64,
    pub downtime_year: String,
    pub meets_objective: Option<bool>,
    /// The top depends on it (the top itself included).
    pub used_by_top: bool,
}

// ---------------------------------------------------------------------------
// Measured availability.

/// One minute of traffic (minutes of the Unix clock).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Minute {
    pub start_ms: u64,
    pub requests: u64,
    pub failed: u64,
    pub availability: f64,
}

/// What users got over a window, and the error budget an objective leaves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub requests: u64,
    /// Requests that failed because of what they were sent to
    /// ([`ErrorClass::counts_against_target`]).
    pub failed: u64,
    /// Deliberate rejections, not failures.
    pub shed: u64,
    pub read_only: u64,
    /// 1 − failed / requests; `None` without requests.
    pub availability: Option<f64>,
    /// Start of the first interval the snapshots cover.
    pub window_start_ms: u64,
    /// End of the last interval (the last snapshot's `at_ms`).
    pub window_end_ms: u64,
    pub window_s: f64,
    pub objective: f64,
    /// Failed requests the objective allows: (1 − objective) × requests.
    pub budget: f64,
    /// failed / budget; above 1 the budget is overspent. `None` without budget.
    pub budget_spent: Option<f64>,
    /// budget − failed, in requests; negative when overspent.
    pub budget_remaining: f64,
    /// 1 − budget_spent.
    pub budget_remaining_fraction: Option<f64>,
    pub meets_objective: Option<bool>,
    /// The minute with the lowest availability (most failures on a tie,
    /// earliest after that); `None` when nothing failed.
    pub worst_minute: Option<Minute>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionMeasured {
    pub region: String,
    #[serde(flatten)]
    pub measured: Measured,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceMeasured {
    pub service: String,
    #[serde(flatten)]
    pub measured: Measured,
    /// By the region of the zone the requests were sent to.
    pub regions: Vec<RegionMeasured>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalsReport {
    pub snapshots: usize,
    pub objective: f64,
    pub window_start_ms: u64,
    pub window_end_ms: u64,
    pub window_s: f64,
    pub services: Vec<ServiceMeasured>,
}

impl SignalsReport {
    /// Every service (and region) with traffic meets the objective.
    pub fn meets_objective(&self) -> bool {
        self.services
            .iter()
            .all(|s| s.measured.meets_objective != Some(false))
    }
}

#[derive(Default)]
struct Acc {
    requests: u64,
    failed: u64,
    shed: u64,
    read_only: u64,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    /// minute (Unix minutes) → (requests, failed)
    minutes: BTreeMap<u64, (u64, u64)>,
}

impl Acc {
    fn cover(&mut self, s: &Snapshot) {
        let start = s.at_ms.saturating_sub(s.interval_ms);
        self.start_ms = Some(self.start_ms.map_or(start, |x| x.min(start)));
        self.end_ms = Some(self.end_ms.map_or(s.at_ms, |x| x.max(s.at_ms)));
    }

    fn add(&mut self, minute: u64, requests: u64, failed: u64, shed: u64, read_only: u64) {
        self.requests += requests;
        self.failed += failed;
        self.shed += shed;
        self.read_only += read_only;
        let m = self.minutes.entry(minute).or_default();
        m.0 += requests;
        m.1 += failed;
    }

    fn finish(&self, objective: f64) -> Measured {
        let availability =
            (self.requests > 0).then(|| 1.0 - self.failed as f64 / self.requests as f64);
        let budget = (1.0 - objective) * self.requests as f64;
        let budget_spent = (budget > 0.0).then(|| self.failed as f64 / budget);
        let worst_minute = if self.failed == 0 {
            None
        } else {
            self.minutes
                .iter()
                .filter(|(_, (r, _))| *r > 0)
                .map(|(&m, &(r, f))| Minute {
                    start_ms: m * 60_000,
                    requests: r,
                    failed: f,
                    availability: 1.0 - f as f64 / r as f64,
                })
                .min_by(|a, b| {
                    a.availability
                        .total_cmp(&b.availability)
                        .then(b.failed.cmp(&a.failed))
                        .then(a.start_ms.cmp(&b.start_ms))
                })
        };
        let (start, end) = (self.start_ms.unwrap_or(0), self.end_ms.unwrap_or(0));
        Measured {
            requests: self.requests,
            failed: self.failed,
            shed: self.shed,
            read_only: self.read_only,
            availability,
            window_start_ms: start,
            window_end_ms: end,
            window_s: end.saturating_sub(start) as f64 / 1000.0,
            objective,
            budget,
            budget_spent,
            budget_remaining: budget - self.failed as f64,
            budget_remaining_fraction: budget_spent.map(|s| 1.0 - s),
            meets_objective: availability.map(|a| meets(a, objective)),
            worst_minute,
        }
    }
}

/// Zone → region as the detection engine learns it: an edge's own zone is in
/// the snapshot's region; a zone only ever targeted is in the region of the
/// first edge (or instance probe) that reached it.
pub fn zone_regions(snapshots: &[Snapshot]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for s in snapshots {
        map.insert(s.source_zone.clone(), s.region.clone());
    }
    for s in snapshots {
        for x in &s.series {
            if !x.target_zone.is_empty() {
                map.entry(x.target_zone.clone())
                    .or_insert_with(|| s.region.clone());
            }
        }
        for p in &s.probes {
            if p.target == ProbeTarget::Instance && !p.target_zone.is_empty() {
                map.entry(p.target_zone.clone())
                    .or_insert_with(|| p.target_region.clone());
            }
        }
    }
    map
}

/// Measured availability and error budget per service, and per region of the
/// target zone (requests with no target zone count for the edge's region).
pub fn measure(snapshots: &[Snapshot], objective: f64) -> SignalsReport {
    let regions = zone_regions(snapshots);
    let mut services: BTreeMap<String, (Acc, BTreeMap<String, Acc>)> = BTreeMap::new();
    let mut all = Acc::default();
    for s in snapshots {
        all.cover(s);
        let minute = s.at_ms.saturating_sub(1) / 1000 / 60;
        for x in &s.series {
            let failed = x.failures();
            let shed = x.count(ErrorClass::Shed);
            let read_only = x.count(ErrorClass::ReadOnly);
            let region = regions
                .get(&x.target_zone)
                .cloned()
                .unwrap_or_else(|| s.region.clone());
            let (svc, by_region) = services.entry(x.service.clone()).or_default();
            svc.cover(s);
            svc.add(minute, x.requests, failed, shed, read_only);
            let r = by_region.entry(region).or_default();
            r.cover(s);
            r.add(minute, x.requests, failed, shed, read_only);
        }
    }
    let (start, end) = (all.start_ms.unwrap_or(0), all.end_ms.unwrap_or(0));
    SignalsReport {
        snapshots: snapshots.len(),
        objective,
        window_start_ms: start,
        window_end_ms: end,
        window_s: end.saturating_sub(start) as f64 / 1000.0,
        services: services
            .into_iter()
            .map(|(service, (acc, by_region))| ServiceMeasured {
                service,
                measured: acc.finish(objective),
                regions: by_region
                    .into_iter()
                    .map(|(region, a)| RegionMeasured {
                        region,
                        measured: a.finish(objective),
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::signals::Series;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn series_multiplies() {
        assert!(close(series(&[0.99, 0.98]), 0.99 * 0.98));
        assert!(close(
            series(&[0.9999, 0.995, 0.9995]),
            0.9999 * 0.995 * 0.9995
        ));
        assert!(close(series(&[0.5]), 0.5));
    }

    #[test]
    fn parallel_is_one_minus_product_of_unavailabilities() {
        assert!(close(parallel(&[0.9, 0.8]), 1.0 - 0.1 * 0.2));
        assert!(close(parallel(&[0.995; 3]), 1.0 - 0.005f64.powi(3)));
        // Many nines keep their digits.
        let u = parallel_unavailability(&[1e-6, 1e-6]);
        assert!((u - 1e-12).abs() < 1e-24);
        assert!(close(nines(u).unwrap(), 12.0));
    }

    #[test]
    fn k_of_n_matches_hand_computation() {
        // 2 of 3 identical parts at 0.9: 3 × 0.9² × 0.1 + 0.9³ = 0.972.
        assert!(close(k_of_n(2, &[0.9, 0.9, 0.9]), 0.972));
        // 2 of (0.9, 0.8, 0.7): .9·.8·.3 + .9·.2·.7 + .1·.8·.7 + .9·.8·.7 = 0.902.
        assert!(close(k_of_n(2, &[0.9, 0.8, 0.7]), 0.902));
        // The two ends are series and parallel.
        assert!(close(k_of_n(3, &[0.9, 0.8, 0.7]), series(&[0.9, 0.8, 0.7])));
        assert!(close(
            k_of_n(1, &[0.9, 0.8, 0.7]),
            parallel(&[0.9, 0.8, 0.7])
        ));
    }

    #[test]
    fn downtime_of_three_nines() {
        let month = downtime_s(0.999, MONTH_S);
        assert!((month - 2592.0).abs() < 1e-6);
        assert_eq!(human_duration(month), "43 min 12 s");
        assert_eq!(human_duration(downtime_s(0.999, YEAR_S)), "8 h 45 min 36 s");
        assert_eq!(human_duration(downtime_s(0.99999, MONTH_S)), "25.9 s");
        assert_eq!(human_duration(0.2592), "259 ms");
        assert_eq!(human_duration(0.0), "0 s");
        assert_eq!(human_duration(3.0 * 86_400.0 + 7.0), "3 d 7 s");
        assert!(close(nines(1.0 - 0.999).unwrap(), 3.0));
    }

    const EXAMPLE: &str = r#"
objective = 0.999
top = "service"
[component.lb]
availability = 0.9999
[component.zone]
availability = 0.995
[component.zones]
parallel = ["zone", "zone", "zone"]
[component.db]
availability = 0.9995
[component.service]
series = ["lb", "zones", "db"]
"#;

    #[test]
    fn evaluates_the_brief_example() {
        let c = Composition::from_toml(EXAMPLE).unwrap();
        let e = c.evaluate();
        let expect = 0.9999 * (1.0 - 0.005f64.powi(3)) * 0.9995;
        assert!(close(e.availability, expect), "{}", e.availability);
        assert_eq!(e.meets_objective, Some(true));
        let names: Vec<&str> = e.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["service", "lb", "zones", "zone", "db"]);
        let zone = &e.components[3];
        assert_eq!(zone.meets_objective, Some(false));
        assert_eq!(zone.downtime_month, "3 h 36 min");
    }

    #[test]
    fn k_of_n_in_a_file() {
        let c = Composition::from_toml(
            r#"
top = "q"
[component.a]
availability = 0.9
[component.b]
availability = 0.8
[component.c]
availability = 0.7
[component.q]
k_of_n = { k = 2, parts = ["a", "b", "c"] }
"#,
        )
        .unwrap();
        let e = c.evaluate();
        assert!(close(e.availability, 0.902));
        assert_eq!(e.meets_objective, None);
        assert_eq!(e.components[0].k, Some(2));
    }

    #[test]
    fn every_validation_error_at_once() {
        let err = Composition::from_toml(
            r#"
objective = 1.5
top = "nowhere"
[component.db]
availability = 1.2
[component.zero]
availability = 0.0
[component.api]
series = ["db", "cache"]
[component.both]
availability = 0.9
parallel = ["db"]
[component.none]
[component.empty]
parallel = []
[component.quorum]
k_of_n = { k = 4, parts = ["db", "db", "ghost"] }
"#,
        )
        .unwrap_err();
        let r = err.reasons();
        let want = [
            "objective: must be in (0, 1), got 1.5",
            "top: unknown component \"nowhere\"",
            "component.api.series[1]: unknown component \"cache\"",
            "component.both: must have exactly one of availability, series, parallel, k_of_n; has availability and parallel",
            "component.db.availability: must be in (0, 1], got 1.2",
            "component.empty.parallel: must name at least one component",
            "component.none: must have exactly one of availability, series, parallel, k_of_n; has none",
            "component.quorum.k_of_n.parts[2]: unknown component \"ghost\"",
            "component.quorum.k_of_n.k: must be between 1 and 3 (the number of parts), got 4",
            "component.zero.availability: must be in (0, 1], got 0",
        ];
        assert_eq!(r, want, "{r:#?}");
    }

    #[test]
    fn unknown_keys_and_syntax_name_the_line() {
        let err =
            Composition::from_toml("top = \"a\"\n[component.a]\navailabilty = 0.9\n").unwrap_err();
        let m = err.to_string();
        assert!(m.contains("line 3"), "{m}");
        assert!(m.contains("availabilty"), "{m}");
        let err = Composition::from_toml("top = \"a\"\n[component.a]\navailability = \"high\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn cycles_are_named() {
        let err = Composition::from_toml(
            r#"
top = "a"
[component.a]
series = ["b", "leaf"]
[component.b]
parallel = ["c"]
[component.c]
k_of_n = { k = 1, parts = ["a"] }
[component.leaf]
availability = 0.9
[component.selfish]
series = ["selfish"]
"#,
        )
        .unwrap_err();
        assert_eq!(
            err.reasons(),
            [
                "component.a: cycle a -> b -> c -> a",
                "component.selfish: cycle selfish -> selfish",
            ]
        );
    }

    #[test]
    fn shared_parts_are_not_cycles() {
        let c = Composition::from_toml(
            r#"
top = "top"
[component.top]
series = ["x", "y"]
[component.x]
series = ["leaf"]
[component.y]
parallel = ["leaf", "x"]
[component.leaf]
availability = 0.9
[component.spare]
availability = 0.5
"#,
        )
        .unwrap();
        let e = c.evaluate();
        assert!(close(e.availability, 0.9 * (1.0 - 0.01)));
        let last = e.components.last().unwrap();
        assert_eq!((last.name.as_str(), last.used_by_top), ("spare", false));
    }

    fn series_of(service: &str, zone: &str, requests: u64, errors: &[(&str, u64)]) -> Series {
        Series {
            service: service.into(),
            route: "r".into(),
            target_zone: zone.into(),
            instance: format!("{zone}-1"),
            write: false,
            forwarded_in: false,
            requests,
            errors: errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: 1.0,
            max_ms: 1.0,
        }
    }

    fn snap(at_ms: u64, region: &str, zone: &str, series: Vec<Series>) -> Snapshot {
        Snapshot {
            at_ms,
            interval_ms: 1000,
            region: region.into(),
            source_zone: zone.into(),
            series,
            probes: vec![],
            config_version: None,
            config_refused: None,
        }
    }

    #[test]
    fn measured_availability_and_budget() {
        let snaps = vec![
            snap(
                60_000,
                "r1",
                "a",
                vec![series_of(
                    "svc",
                    "a",
                    1000,
                    &[("status_5xx", 1), ("shed", 50), ("read_only", 7)],
                )],
            ),
            snap(
                61_000,
                "r2",
                "b",
                vec![series_of("svc", "b", 1000, &[("upstream_timeout", 3)])],
            ),
            // Edge in r2 sends to zone a: a stays in r1 (its own edge says so).
            snap(
                90_000,
                "r2",
                "b",
                vec![series_of("svc", "a", 2000, &[("fault", 2)])],
            ),
        ];
        let r = measure(&snaps, 0.999);
        assert_eq!(r.snapshots, 3);
        assert_eq!((r.window_start_ms, r.window_end_ms), (59_000, 90_000));
        let s = &r.services[0].measured;
        assert_eq!(
            (s.requests, s.failed, s.shed, s.read_only),
            (4000, 6, 50, 7)
        );
        assert!(close(s.availability.unwrap(), 1.0 - 6.0 / 4000.0));
        assert!(close(s.budget, 4.0));
        assert!(close(s.budget_spent.unwrap(), 1.5));
        assert!(close(s.budget_remaining, -2.0));
        assert!(close(s.budget_remaining_fraction.unwrap(), -0.5));
        assert_eq!(s.meets_objective, Some(false));
        // Minute 0 holds the first snapshot (ends exactly at 60 000 ms).
        let w = s.worst_minute.clone().unwrap();
        assert_eq!((w.start_ms, w.requests, w.failed), (60_000, 3000, 5));
        let regions: Vec<(&str, u64, u64)> = r.services[0]
            .regions
            .iter()
            .map(|x| (x.region.as_str(), x.measured.requests, x.measured.failed))
            .collect();
        assert_eq!(regions, [("r1", 3000, 3), ("r2", 1000, 3)]);
        assert!(!r.meets_objective());
    }

    #[test]
    fn no_failures_no_worst_minute() {
        let r = measure(
            &[snap(5_000, "r", "z", vec![series_of("s", "z", 10, &[])])],
            0.99,
        );
        let m = &r.services[0].measured;
        assert_eq!(m.availability, Some(1.0));
        assert_eq!(m.worst_minute, None);
        assert_eq!(m.budget_spent, Some(0.0));
        assert!(r.meets_objective());
    }
}
