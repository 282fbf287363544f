//! What a new config takes away compared with the one it replaces.
//!
//! Syntax and validation say a config is well formed; they cannot say it is
//! a safe successor of the running one. The outage this project started from
//! was a valid config that lowered a safety floor. [`diff`] compares two
//! validated configs and names each change an SRE would want to see before a
//! rollout starts, with the field path (as validation errors spell it:
//! `service.catalog.min_healthy`, `service.catalog.instance.use-a-1`), the
//! value before and after, and one sentence saying why it is risky.
//!
//! Only risky directions are reported: a timeout raised, an instance added
//! or a floor raised is not a difference here. The riskiest kinds
//! ([`RiskKind::needs_ack`]) must be acknowledged by name before a rollout
//! may start (`--accept capacity_removed`); the others are shown and left to
//! the canary to judge.
//!
//! Pure and deterministic: the output is sorted by path, then kind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Instance, Route, Service, UpstreamTls};

/// A value is "cut sharply" when the new one is below the old one divided by
/// this. Tuning steps are usually 10–30 %; halving a timeout moves it across
/// the latency tail (p99 is commonly 2–5 × p50), so requests that succeeded
/// start to time out, and halving a concurrency or rate ceiling sheds load the
/// service carried yesterday. Smaller cuts are left to the canary.
pub const SHARP_CUT_FACTOR: f64 = 2.0;

/// One risky change between the running config and a new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: RiskKind,
    /// The field or item, spelled like validation error paths.
    pub path: String,
    /// The value in the running config; `none` when it had none.
    pub before: String,
    /// The value in the new config; `none` when it is gone.
    pub after: String,
    /// One sentence: what users may feel.
    pub why: String,
}

/// The kinds of risky change, named in acknowledgements and audit entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskKind {
    /// `min_healthy` lowered.
    FloorLowered,
    /// An instance, zone or region removed.
    CapacityRemoved,
    /// A whole service removed.
    ServiceRemoved,
    /// A host name no longer served by the service it was.
    HostRemoved,
    /// A route removed: its requests fall to the default read/write route,
    /// with another priority and kind.
    RouteRemoved,
    /// A connect, header or total timeout cut sharply.
    TimeoutCut,
    /// A concurrency or rate ceiling newly set or cut sharply.
    LimitCut,
    /// The retry budget cut sharply: transient failures reach users.
    RetryBudgetCut,
    /// More of the instances may be ejected at once.
    EjectionLoosened,
    /// Active health checks switched off.
    HealthCheckDisabled,
    /// What health checks ask changed (`health_path`, `grpc_service`): a
    /// wrong one takes healthy instances out of rotation.
    HealthCheckChanged,
    /// Where or how requests go upstream changed: protocol, TLS, an
    /// instance's address or zone, a path prefix, a route's methods.
    UpstreamChanged,
}

impl RiskKind {
    pub const ALL: [RiskKind; 12] = [
        RiskKind::FloorLowered,
        RiskKind::CapacityRemoved,
        RiskKind::ServiceRemoved,
        RiskKind::HostRemoved,
        RiskKind::RouteRemoved,
        RiskKind::TimeoutCut,
        RiskKind::LimitCut,
        RiskKind::RetryBudgetCut,
        RiskKind::EjectionLoosened,
        RiskKind::HealthCheckDisabled,
        RiskKind::HealthCheckChanged,
        RiskKind::UpstreamChanged,
    ];

    /// The serde name, used on the command line (`--accept floor_lowered`).
    pub fn as_str(self) -> &'static str {
        match self {
            RiskKind::FloorLowered => "floor_lowered",
            RiskKind::CapacityRemoved => "capacity_removed",
            RiskKind::ServiceRemoved => "service_removed",
            RiskKind::HostRemoved => "host_removed",
            RiskKind::RouteRemoved => "route_removed",
            RiskKind::TimeoutCut => "timeout_cut",
            RiskKind::LimitCut => "limit_cut",
            RiskKind::RetryBudgetCut => "retry_budget_cut",
            RiskKind::EjectionLoosened => "ejection_loosened",
            RiskKind::HealthCheckDisabled => "health_check_disabled",
            RiskKind::HealthCheckChanged => "health_check_changed",
            RiskKind::UpstreamChanged => "upstream_changed",
        }
    }

    /// Whether a rollout needs this kind acknowledged by name. These are the
    /// changes a canary cannot judge: they remove protection or capacity
    /// that only matters on a bad day (a floor, instances, health checks),
    /// or take traffic away entirely (a service, a host), so a canary
    /// passes them on a good day and the damage shows in the next incident.
    /// Cut timeouts, limits and changed upstreams hurt at once, which is
    /// what the canary measures.
    pub fn needs_ack(self) -> bool {
        matches!(
            self,
            RiskKind::FloorLowered
                | RiskKind::CapacityRemoved
                | RiskKind::ServiceRemoved
                | RiskKind::HostRemoved
                | RiskKind::HealthCheckDisabled
        )
    }

    /// The kind with this serde name; the error lists every valid name.
    pub fn parse(s: &str) -> Result<RiskKind, String> {
        RiskKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RiskKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown risk kind {s:?}; valid kinds: {}", names.join(", "))
            })
    }
}

impl fmt::Display for RiskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The differences whose kind needs an acknowledgement that `accepted` does
/// not give, in diff order.
pub fn unacknowledged<'a>(
    diffs: &'a [Difference],
    accepted: &BTreeSet<RiskKind>,
) -> Vec<&'a Difference> {
    diffs
        .iter()
        .filter(|d| d.kind.needs_ack() && !accepted.contains(&d.kind))
        .collect()
}

/// Every risky change from `old` to `new`, sorted by path then kind.
pub fn diff(old: &Config, new: &Config) -> Vec<Difference> {
    let mut out = Out(Vec::new());
    topology(old, new, &mut out);
    for s in &old.services {
        let path = format!("service.{}", s.name);
        match new.service(&s.name) {
            None => out.push(
                RiskKind::ServiceRemoved,
                path,
                format!(
                    "instances: {}, hosts: {}",
                    s.instances.len(),
                    list(&s.hosts)
                ),
                NONE,
                "every request for the service's hosts will find no service",
            ),
            Some(n) => service(&path, s, n, &mut out),
        }
    }
    let mut v = out.0;
    v.sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.cmp(&b.kind)));
    v
}

const NONE: &str = "none";

struct Out(Vec<Difference>);

impl Out {
    fn push(
        &mut self,
        kind: RiskKind,
        path: impl Into<String>,
        before: impl Into<String>,
        after: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.0.push(Difference {
            kind,
            path: path.into(),
            before: before.into(),
            after: after.into(),
            why: why.into(),
        });
    }
}

fn topology(old: &Config, new: &Config, out: &mut Out) {
    for r in &old.regions {
        let path = format!("region.{}", r.name);
        let Some(nr) = new.region(&r.name) else {
            out.push(
                RiskKind::CapacityRemoved,
                path,
                format!("{} zones", r.zones.len()),
                NONE,
                "the region's edges and instances leave: its users and failover capacity go elsewhere",
            );
            continue;
        };
        for z in &r.zones {
            if !nr.zones.iter().any(|nz| nz.name == z.name) {
                out.push(
                    RiskKind::CapacityRemoved,
                    format!("{path}.zone.{}", z.name),
                    format!("edge {}", z.edge),
                    NONE,
                    "the zone's edge and instances leave: the region's other zones carry its load",
                );
            }
        }
    }
}

fn service(path: &str, old: &Service, new: &Service, out: &mut Out) {
    if new.min_healthy < old.min_healthy {
        out.push(
            RiskKind::FloorLowered,
            format!("{path}.min_healthy"),
            old.min_healthy.to_string(),
            new.min_healthy.to_string(),
            "fewer instances per region must stay in service, so ejection, shifts and evacuations may take more capacity away",
        );
    }
    for h in &old.hosts {
        if !new.hosts.contains(h) {
            out.push(
                RiskKind::HostRemoved,
                format!("{path}.hosts"),
                h.clone(),
                NONE,
                format!("requests for {h} will no longer reach the service"),
            );
        }
    }
    if old.path_prefix != new.path_prefix {
        out.push(
            RiskKind::UpstreamChanged,
            format!("{path}.path_prefix"),
            opt(&old.path_prefix),
            opt(&new.path_prefix),
            "requests are matched to the service by another path prefix",
        );
    }
    if old.upstream_protocol != new.upstream_protocol {
        out.push(
            RiskKind::UpstreamChanged,
            format!("{path}.upstream_protocol"),
            old.upstream_protocol.as_str(),
            new.upstream_protocol.as_str(),
            "the edge speaks another protocol to the instances, which must all understand it",
        );
    }
    if old.upstream_tls != new.upstream_tls {
        out.push(
            RiskKind::UpstreamChanged,
            format!("{path}.upstream_tls"),
            tls(&old.upstream_tls),
            tls(&new.upstream_tls),
            "connections to the instances are set up differently; a mismatch fails every request",
        );
    }
    if sharp_cut(old.retry_budget, new.retry_budget) {
        out.push(
            RiskKind::RetryBudgetCut,
            format!("{path}.retry_budget"),
            old.retry_budget.to_string(),
            new.retry_budget.to_string(),
            "fewer failed requests are retried, so transient upstream failures reach users",
        );
    }
    timeouts(path, old, new, out);
    limits(path, old, new, out);
    ejection_and_health(path, old, new, out);
    routes(path, &old.routes, &new.routes, out);
    instances(path, &old.instances, &new.instances, out);
}

fn timeouts(path: &str, old: &Service, new: &Service, out: &mut Out) {
    let (o, n) = (&old.timeouts, &new.timeouts);
    for (field, a, b) in [
        ("connect_ms", o.connect, n.connect),
        ("header_ms", o.header, n.header),
        ("total_ms", o.total, n.total),
    ] {
        if sharp_cut(secs(a), secs(b)) {
            out.push(
                RiskKind::TimeoutCut,
                format!("{path}.timeouts.{field}"),
                a.as_millis().to_string(),
                b.as_millis().to_string(),
                "requests slower than the new timeout, which succeeded before, will fail",
            );
        }
    }
}

fn limits(path: &str, old: &Service, new: &Service, out: &mut Out) {
    let (o, n) = (&old.limits, &new.limits);
    let why = "the edge sheds load it admitted before";
    if sharp_cut(o.max_concurrency.into(), n.max_concurrency.into()) {
        out.push(
            RiskKind::LimitCut,
            format!("{path}.limits.max_concurrency"),
            o.max_concurrency.to_string(),
            n.max_concurrency.to_string(),
            why,
        );
    }
    // Only the floor of the adaptive limit: it is what the limit falls to
    // under latency, so it matters only while adaptive is on.
    if n.adaptive && sharp_cut(o.min_concurrency.into(), n.min_concurrency.into()) {
        out.push(
            RiskKind::LimitCut,
            format!("{path}.limits.min_concurrency"),
            o.min_concurrency.to_string(),
            n.min_concurrency.to_string(),
            "the adaptive limit may fall lower under latency, shedding load it admitted before",
        );
    }
    if !o.adaptive && n.adaptive {
        out.push(
            RiskKind::LimitCut,
            format!("{path}.limits.adaptive"),
            "false",
            "true",
            "a limit that follows latency may now admit fewer requests than max_concurrency",
        );
    }
    let rps_cut = match (o.max_rps, n.max_rps) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => sharp_cut(a, b),
        _ => false,
    };
    if rps_cut {
        out.push(
            RiskKind::LimitCut,
            format!("{path}.limits.max_rps"),
            o.max_rps.map_or(NONE.to_string(), |v| v.to_string()),
            n.max_rps.map_or(NONE.to_string(), |v| v.to_string()),
            why,
        );
    }
}

fn ejection_and_health(path: &str, old: &Service, new: &Service, out: &mut Out) {
    let (o, n) = (&old.ejection, &new.ejection);
    if n.max_ejection_percent > o.max_ejection_percent {
        out.push(
            RiskKind::EjectionLoosened,
            format!("{path}.ejection.max_ejection_percent"),
            o.max_ejection_percent.to_string(),
            n.max_ejection_percent.to_string(),
            "outlier ejection may take more of the instances out at once",
        );
    }
    let (o, n) = (&old.health_check, &new.health_check);
    if o.enabled && !n.enabled {
        out.push(
            RiskKind::HealthCheckDisabled,
            format!("{path}.health_check.enabled"),
            "true",
            "false",
            "a dead instance stays in rotation until passive ejection notices it, and requests fail meanwhile",
        );
    }
    if n.enabled {
        if old.health_path != new.health_path && n.grpc_service.is_none() {
            out.push(
                RiskKind::HealthCheckChanged,
                format!("{path}.health_path"),
                old.health_path.clone(),
                new.health_path.clone(),
                "health checks ask another path; a wrong one takes healthy instances out of rotation",
            );
        }
        if o.grpc_service != n.grpc_service {
            out.push(
                RiskKind::HealthCheckChanged,
                format!("{path}.health_check.grpc_service"),
                opt(&o.grpc_service),
                opt(&n.grpc_service),
                "health checks ask another question; a wrong one takes healthy instances out of rotation",
            );
        }
    }
}

fn routes(path: &str, old: &[Route], new: &[Route], out: &mut Out) {
    for r in old {
        let rp = format!("{path}.route.{}", r.name);
        let Some(n) = new.iter().find(|n| n.name == r.name) else {
            out.push(
                RiskKind::RouteRemoved,
                rp,
                route(r),
                NONE,
                "its requests fall to the default read or write route, with another priority when shedding",
            );
            continue;
        };
        // Only where the new config sets the route's own timeout: a cut
        // of the service's is reported once, on the service.
        if n.timeout.is_some() && sharp_cut(secs(r.timeouts.total), secs(n.timeouts.total)) {
            out.push(
                RiskKind::TimeoutCut,
                format!("{rp}.timeout_ms"),
                r.timeouts.total.as_millis().to_string(),
                n.timeouts.total.as_millis().to_string(),
                "the route's requests slower than its new timeout, which succeeded before, will fail",
            );
        }
        if r.path_prefix != n.path_prefix {
            out.push(
                RiskKind::UpstreamChanged,
                format!("{rp}.path_prefix"),
                r.path_prefix.clone(),
                n.path_prefix.clone(),
                "the route matches other requests than before",
            );
        }
        if r.methods != n.methods {
            out.push(
                RiskKind::UpstreamChanged,
                format!("{rp}.methods"),
                methods(&r.methods),
                methods(&n.methods),
                "the route matches other requests than before",
            );
        }
    }
}

fn instances(path: &str, old: &[Instance], new: &[Instance], out: &mut Out) {
    let new_by_name: BTreeMap<&str, &Instance> = new.iter().map(|i| (i.name.as_str(), i)).collect();
    for i in old {
        let ip = format!("{path}.instance.{}", i.name);
        match new_by_name.get(i.name.as_str()) {
            None => out.push(
                RiskKind::CapacityRemoved,
                ip,
                format!("{} in {}", i.addr, i.zone),
                NONE,
                format!(
                    "{} loses an instance; the rest of {} carries its load",
                    i.zone, i.region
                ),
            ),
            Some(n) => {
                if n.addr != i.addr {
                    out.push(
                        RiskKind::UpstreamChanged,
                        format!("{ip}.addr"),
                        i.addr.to_string(),
                        n.addr.to_string(),
                        "requests go to another address; a wrong one fails them",
                    );
                }
                if n.zone != i.zone {
                    out.push(
                        RiskKind::UpstreamChanged,
                        format!("{ip}.zone"),
                        i.zone.clone(),
                        n.zone.clone(),
                        format!("{} loses the instance to {}", i.zone, n.zone),
                    );
                }
            }
        }
    }
}

/// `new < old / SHARP_CUT_FACTOR`; a cut to zero counts.
fn sharp_cut(old: f64, new: f64) -> bool {
    new * SHARP_CUT_FACTOR < old
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| NONE.to_string())
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

fn methods(v: &[String]) -> String {
    if v.is_empty() {
        "any".to_string()
    } else {
        list(v)
    }
}

fn route(r: &Route) -> String {
    format!(
        "{} {} ({}, {})",
        methods(&r.methods),
        r.path_prefix,
        r.kind.as_str(),
        r.priority.as_str()
    )
}

fn tls(t: &Option<UpstreamTls>) -> String {
    match t {
        None => "plain".to_string(),
        Some(t) => format!(
            "tls ca_file={} server_name={}{}",
            t.ca_file,
            t.server_name.as_deref().unwrap_or("(address)"),
            match &t.client_cert {
                Some(c) => format!(" cert_file={}", c.cert_file),
                None => String::new(),
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/switchyard.toml");

    fn config(text: &str) -> Config {
        Config::from_toml(text, |_| None).unwrap_or_else(|e| panic!("{e}: {:?}", e.reasons()))
    }

    /// The differences from the example to the example with `edits` applied
    /// (each a text replacement that must match).
    fn diff_edited(edits: &[(&str, &str)]) -> Vec<Difference> {
        let mut text = EXAMPLE.to_string();
        for (from, to) in edits {
            assert!(text.contains(from), "edit {from:?} matches nothing");
            text = text.replacen(from, to, 1);
        }
        diff(&config(EXAMPLE), &config(&text))
    }

    fn kinds_paths(d: &[Difference]) -> Vec<(RiskKind, &str)> {
        d.iter().map(|d| (d.kind, d.path.as_str())).collect()
    }

    /// The instance block of the example named `name`.
    fn instance_block(name: &str) -> String {
        let start = EXAMPLE
            .find(&format!("  name = \"{name}\""))
            .expect("instance in the example");
        let head = EXAMPLE[..start].rfind("  [[service.instance]]").unwrap();
        let end = EXAMPLE[start..]
            .find("  [[service.instance]]")
            .map_or(EXAMPLE.len(), |e| start + e);
        EXAMPLE[head..end].to_string()
    }

    #[test]
    fn identical_configs_differ_in_nothing() {
        assert_eq!(diff(&config(EXAMPLE), &config(EXAMPLE)), vec![]);
    }

    #[test]
    fn harmless_changes_are_not_differences() {
        let d = diff_edited(&[
            ("total_ms = 10000", "total_ms = 20000"),
            ("connect_ms = 250", "connect_ms = 200"),
            ("min_healthy = 0.5", "min_healthy = 0.6"),
            ("max_concurrency = 512", "max_concurrency = 300"),
            ("max_rps = 20000", "max_rps = 40000"),
            ("max_ejection_percent = 10", "max_ejection_percent = 5"),
            ("priority = \"sheddable\"", "priority = \"normal\""),
        ]);
        assert_eq!(d, vec![]);
    }

    #[test]
    fn a_lowered_floor_is_flagged() {
        let d = diff_edited(&[("min_healthy = 0.5", "min_healthy = 0.25")]);
        assert_eq!(
            d,
            vec![Difference {
                kind: RiskKind::FloorLowered,
                path: "service.catalog.min_healthy".into(),
                before: "0.5".into(),
                after: "0.25".into(),
                why: "fewer instances per region must stay in service, so ejection, shifts and evacuations may take more capacity away".into(),
            }]
        );
    }

    #[test]
    fn each_removed_instance_is_named() {
        let d = diff_edited(&[
            (&instance_block("use-a-2"), ""),
            (&instance_block("euw-c-1"), ""),
        ]);
        assert_eq!(
            kinds_paths(&d),
            vec![
                (
                    RiskKind::CapacityRemoved,
                    "service.catalog.instance.euw-c-1"
                ),
                (
                    RiskKind::CapacityRemoved,
                    "service.catalog.instance.use-a-2"
                ),
            ]
        );
        assert_eq!(d[1].before, "127.1.1.12:8081 in us-east-a");
        assert_eq!(d[1].after, "none");
    }

    #[test]
    fn a_removed_zone_and_its_instances_are_flagged() {
        let zone = "  [[region.zone]]\n  name = \"eu-west-c\"\n  edge = \"127.2.3.1:8080\"\n  admin = \"127.2.3.1:9901\"\n";
        let d = diff_edited(&[
            (zone, ""),
            (&instance_block("euw-c-1"), ""),
            (&instance_block("euw-c-2"), ""),
        ]);
        assert_eq!(
            kinds_paths(&d),
            vec![
                (RiskKind::CapacityRemoved, "region.eu-west.zone.eu-west-c"),
                (
                    RiskKind::CapacityRemoved,
                    "service.catalog.instance.euw-c-1"
                ),
                (
                    RiskKind::CapacityRemoved,
                    "service.catalog.instance.euw-c-2"
                ),
            ]
        );
    }

    #[test]
    fn a_removed_region_is_flagged() {
        let start = EXAMPLE.find("[[region]]\nname = \"eu-west\"").unwrap();
        let end = EXAMPLE.find("[[service]]").unwrap();
        let mut edits: Vec<(String, String)> = vec![
            (EXAMPLE[start..end].to_string(), String::new()),
            (
                "region_preference = [\"us-east\", \"eu-west\"]".into(),
                "region_preference = [\"us-east\"]".into(),
            ),
        ];
        for i in ["a-1", "a-2", "b-1", "b-2", "c-1", "c-2"] {
            edits.push((instance_block(&format!("euw-{i}")), String::new()));
        }
        let edits: Vec<(&str, &str)> = edits
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let d = diff_edited(&edits);
        assert_eq!(d[0].kind, RiskKind::CapacityRemoved);
        assert_eq!(d[0].path, "region.eu-west");
        assert_eq!(d.len(), 7, "{d:#?}");
        assert!(d.iter().all(|d| d.kind == RiskKind::CapacityRemoved));
    }

    #[test]
    fn a_removed_service_is_flagged() {
        let old = format!(
            "{EXAMPLE}\n[[service]]\nname = \"search\"\nhosts = [\"search.local\"]\nmin_healthy = 0.5\n  [[service.instance]]\n  name = \"search-1\"\n  zone = \"us-east-a\"\n  addr = \"127.1.1.21:8081\"\n"
        );
        let d = diff(&config(&old), &config(EXAMPLE));
        assert_eq!(
            kinds_paths(&d),
            vec![(RiskKind::ServiceRemoved, "service.search")]
        );
        assert_eq!(d[0].before, "instances: 1, hosts: [search.local]");
    }

    #[test]
    fn a_removed_host_is_flagged() {
        let old = EXAMPLE.replace(
            "hosts = [\"catalog.local\"]",
            "hosts = [\"catalog.local\", \"shop.local\"]",
        );
        let d = diff(&config(&old), &config(EXAMPLE));
        assert_eq!(
            kinds_paths(&d),
            vec![(RiskKind::HostRemoved, "service.catalog.hosts")]
        );
        assert_eq!(d[0].before, "shop.local");
    }

    #[test]
    fn a_removed_route_is_flagged() {
        let block = "  [[service.route]]\n  name = \"recommendations\"\n  path_prefix = \"/recommendations\"\n  kind = \"read\"\n  priority = \"sheddable\"\n";
        let d = diff_edited(&[(block, "")]);
        assert_eq!(
            kinds_paths(&d),
            vec![(
                RiskKind::RouteRemoved,
                "service.catalog.route.recommendations"
            )]
        );
        assert_eq!(d[0].before, "any /recommendations (read, sheddable)");
    }

    #[test]
    fn a_routes_own_timeout_far_below_what_it_had_is_flagged_on_the_route() {
        let d = diff_edited(&[(
            "  name = \"get-item\"\n",
            "  name = \"get-item\"\n  timeout_ms = 40\n",
        )]);
        assert_eq!(
            kinds_paths(&d),
            vec![(
                RiskKind::TimeoutCut,
                "service.catalog.route.get-item.timeout_ms"
            )]
        );
        assert_eq!((d[0].before.as_str(), d[0].after.as_str()), ("10000", "40"));
        // A route timeout raised, or within half, is not a risk.
        assert!(diff_edited(&[(
            "  name = \"get-item\"\n",
            "  name = \"get-item\"\n  timeout_ms = 6000\n",
        )])
        .is_empty());
    }

    #[test]
    fn timeouts_cut_by_more_than_half_are_flagged_and_smaller_cuts_are_not() {
        let d = diff_edited(&[
            ("connect_ms = 250", "connect_ms = 125"),
            ("header_ms = 3000", "header_ms = 1499"),
            ("total_ms = 10000", "total_ms = 4000"),
        ]);
        assert_eq!(
            kinds_paths(&d),
            vec![
                (RiskKind::TimeoutCut, "service.catalog.timeouts.header_ms"),
                (RiskKind::TimeoutCut, "service.catalog.timeouts.total_ms"),
            ]
        );
        assert_eq!(
            (d[1].before.as_str(), d[1].after.as_str()),
            ("10000", "4000")
        );
    }

    #[test]
    fn limits_newly_set_or_cut_sharply_are_flagged() {
        let d = diff_edited(&[
            ("max_concurrency = 512", "max_concurrency = 100"),
            ("max_rps = 20000", "max_rps = 5000"),
        ]);
        assert_eq!(
            kinds_paths(&d),
            vec![
                (RiskKind::LimitCut, "service.catalog.limits.max_concurrency"),
                (RiskKind::LimitCut, "service.catalog.limits.max_rps"),
            ]
        );
        let old = EXAMPLE.replace("  max_rps = 20000", "");
        let d = diff(&config(&old), &config(EXAMPLE));
        assert_eq!(
            kinds_paths(&d),
            vec![(RiskKind::LimitCut, "service.catalog.limits.max_rps")]
        );
        assert_eq!(
            (d[0].before.as_str(), d[0].after.as_str()),
            ("none", "20000")
        );
        let old = EXAMPLE.replace("adaptive = true", "adaptive = false");
        let d = diff(&config(&old), &config(EXAMPLE));
        assert_eq!(
            kinds_paths(&d),
            vec![(RiskKind::LimitCut, "service.catalog.limits.adaptive")]
        );
        let old = EXAMPLE.replace("adaptive = true", "adaptive = true\n  min_concurrency = 64");
        let new = EXAMPLE.replace("adaptive = true", "adaptive = true\n  min_concurrency = 8");
        let d = diff(&config(&old), &config(&new));
        assert_eq!(
            kinds_paths(&d),
            vec![(RiskKind::LimitCut, "service.catalog.limits.min_concurrency")]
        );
    }

    #[test]
    fn upstream_changes_are_flagged() {
        let d = diff_edited(&[
            (
                "# upstream_protocol = \"h2c\"",
                "upstream_protocol = \"h2c\"",
            ),
            ("addr = \"127.1.1.11:8081\"", "addr = \"127.1.1.11:9999\""),
            (
                "path_prefix = \"/recommendations\"",
                "path_prefix = \"/recs\"",
            ),
            ("methods = [\"PUT\"]", "methods = [\"PUT\", \"POST\"]"),
            (
                "# [service.upstream_tls]\n# ca_file = \"tls/instances-ca.pem\"",
                "[service.upstream_tls]\nca_file = \"tls/instances-ca.pem\"",
            ),
        ]);
        assert_eq!(
            kinds_paths(&d),
            vec![
                (
                    RiskKind::UpstreamChanged,
                    "service.catalog.instance.use-a-1.addr"
                ),
                (
                    RiskKind::UpstreamChanged,
                    "service.catalog.route.put-item.methods"
                ),
                (
                    RiskKind::UpstreamChanged,
                    "service.catalog.route.recommendations.path_prefix"
                ),
                (
                    RiskKind::UpstreamChanged,
                    "service.catalog.upstream_protocol"
                ),
                (RiskKind::UpstreamChanged, "service.catalog.upstream_tls"),
            ]
        );
        assert_eq!(d[0].before, "127.1.1.11:8081");
        assert_eq!(d[0].after, "127.1.1.11:9999");
        assert_eq!(d[1].before, "[PUT]");
        assert_eq!(d[1].after, "[PUT, POST]");
        assert_eq!(d[4].before, "plain");
        assert_eq!(
            d[4].after,
            "tls ca_file=tls/instances-ca.pem server_name=(address)"
        );
    }

    #[test]
    fn retry_ejection_and_health_check_changes_are_flagged() {
        let d = diff_edited(&[
            ("retry_budget = 0.2", "retry_budget = 0.05"),
            ("max_ejection_percent = 10", "max_ejection_percent = 50"),
            ("health_path = \"/health\"", "health_path = \"/healthz\""),
        ]);
        assert_eq!(
            kinds_paths(&d),
            vec![
                (
                    RiskKind::EjectionLoosened,
                    "service.catalog.ejection.max_ejection_percent"
                ),
                (RiskKind::HealthCheckChanged, "service.catalog.health_path"),
                (RiskKind::RetryBudgetCut, "service.catalog.retry_budget"),
            ]
        );
        let d = diff_edited(&[(
            "[service.health_check]     # GET health_path on every instance of the region",
            "[service.health_check]\n  enabled = false",
        )]);
        assert_eq!(
            kinds_paths(&d),
            vec![(
                RiskKind::HealthCheckDisabled,
                "service.catalog.health_check.enabled"
            )]
        );
    }

    #[test]
    fn the_seed_outage_needs_two_acknowledgements() {
        let d = diff_edited(&[
            ("min_healthy = 0.5", "min_healthy = 0.1"),
            (&instance_block("use-c-2"), ""),
        ]);
        let none = BTreeSet::new();
        let missing: Vec<RiskKind> = unacknowledged(&d, &none).iter().map(|d| d.kind).collect();
        assert_eq!(
            missing,
            vec![RiskKind::CapacityRemoved, RiskKind::FloorLowered]
        );
        let floor_only = BTreeSet::from([RiskKind::FloorLowered]);
        assert_eq!(unacknowledged(&d, &floor_only).len(), 1);
        let both = BTreeSet::from([RiskKind::FloorLowered, RiskKind::CapacityRemoved]);
        assert!(unacknowledged(&d, &both).is_empty());
    }

    #[test]
    fn kinds_parse_from_their_serde_names_and_errors_list_them() {
        for k in RiskKind::ALL {
            assert_eq!(RiskKind::parse(k.as_str()), Ok(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        let e = RiskKind::parse("capacity").unwrap_err();
        assert!(e.contains("\"capacity\""), "{e}");
        assert!(e.contains("capacity_removed, service_removed"), "{e}");
        let acked: Vec<&str> = RiskKind::ALL
            .into_iter()
            .filter(|k| k.needs_ack())
            .map(RiskKind::as_str)
            .collect();
        assert_eq!(
            acked,
            vec![
                "floor_lowered",
                "capacity_removed",
                "service_removed",
                "host_removed",
                "health_check_disabled"
            ]
        );
    }

    #[test]
    fn differences_serialize_with_snake_case_kinds() {
        let d = diff_edited(&[("min_healthy = 0.5", "min_healthy = 0.25")]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json[0]["kind"], "floor_lowered");
        let back: Vec<Difference> = serde_json::from_value(json).unwrap();
        assert_eq!(back, d);
    }
}
