//! The DNS server's Prometheus families (`/metrics` on its admin address).

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    // Borrowed static names where they are known, so counting a query
    // allocates nothing for them.
    pub qtype: Cow<'static, str>,
    pub rcode: Cow<'static, str>,
    /// The region whose edges were answered; empty when none was.
    pub region: String,
    pub transport: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// The outside zone (`example.com.`).
    pub target: String,
    /// `sent`, `unchanged`, or why it failed: `rejected`, `unreachable`,
    /// `server_failure`, `conflict`, `bad_response`, `unmanageable`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `per_client` or `global`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `dropped` or `slipped`.
    pub action: &'static str,
}

pub use switchyard_metrics::VersionLabels;

pub struct Metrics {
    pub registry: Registry,
    /// 1 for the version of the config running, absent for every other.
    pub config_info: Family<VersionLabels, Gauge>,
    pub queries: Family<QueryLabels, Counter>,
    pub truncated: Counter,
    pub answer_sets_changed: Counter,
    pub fail_open: Family<ServiceLabels, Counter>,
    pub edge_up: Family<ZoneLabels, Gauge>,
    pub region_returning: Family<RegionLabels, Gauge<f64, AtomicU64>>,
    pub updates: Family<SourceLabels, Counter>,
    pub control_plane_connected: Gauge,
    pub last_known_good_unusable: Gauge,
    pub query_log_dropped: Counter,
    pub push: Family<PushLabels, Counter>,
    pub push_audit_failed: Counter,
    pub tcp_refused: Family<ReasonLabels, Counter>,
    pub tcp_write_timeouts: Counter,
    pub rrl: Family<ActionLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("switchyard_dns");
        let m = Metrics {
            config_info: Family::default(),
            queries: Family::default(),
            truncated: Counter::default(),
            answer_sets_changed: Counter::default(),
            fail_open: Family::default(),
            edge_up: Family::default(),
            region_returning: Family::default(),
            updates: Family::default(),
            control_plane_connected: Gauge::default(),
            last_known_good_unusable: Gauge::default(),
            query_log_dropped: Counter::default(),
            push: Family::default(),
            push_audit_failed: Counter::default(),
            tcp_refused: Family::default(),
            tcp_write_timeouts: Counter::default(),
            rrl: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "config_info",
            "1 for the version (content hash) of the config the server runs",
            m.config_info.clone(),
        );
        r.register(
            "queries",
            "Queries answered, by query type, rcode, answered region and transport",
            m.queries.clone(),
        );
        r.register(
            "truncated",
            "UDP answers sent empty with TC set because they did not fit",
            m.truncated.clone(),
        );
        r.register(
            "answer_sets_changed",
            "Times the answer table changed (controls, edge health, a shift's expiry)",
            m.answer_sets_changed.clone(),
        );
        r.register(
            "fail_open",
            "Answers given with every edge of a region because none was usable, or because steering had nowhere else to send the client",
            m.fail_open.clone(),
        );
        r.register(
            "edge_up",
            "1 while the server's own probe sees the zone's edge alive",
            m.edge_up.clone(),
        );
        r.register(
            "region_returning",
            "Part of its weight a region the probes saw down gets back: 0 while down, rising over dns.return_ramp_s, 1 once back (absent for a region never seen down)",
            m.region_returning.clone(),
        );
        r.register(
            "controls_updates",
            "Control sets offered, by source and result",
            m.updates.clone(),
        );
        r.register(
            "control_plane_connected",
            "1 while the watch stream to the control plane is up",
            m.control_plane_connected.clone(),
        );
        r.register(
            "last_known_good_unusable",
            "1 when the last-known-good file could not be used at start",
            m.last_known_good_unusable.clone(),
        );
        r.register(
            "query_log_dropped",
            "Query log lines dropped because the writer was behind",
            m.query_log_dropped.clone(),
        );
        r.register(
            "push",
            "Pushes to outside zones ([[dns.push]]), by zone and result (sent, unchanged, or the failure's kind)",
            m.push.clone(),
        );
        r.register(
            "push_audit_failed",
            "Pushes that sent changes or failed but could not be recorded in the control plane's history",
            m.push_audit_failed.clone(),
        );
        r.register(
            "tcp_refused",
            "TCP connections closed at once: the client address held dns.tcp_per_client already (per_client), or the server its 1024 (global)",
            m.tcp_refused.clone(),
        );
        r.register(
            "tcp_write_timeouts",
            "TCP connections closed because an answer could not be written within dns.tcp_write_timeout_ms (a client not reading)",
            m.tcp_write_timeouts.clone(),
        );
        r.register(
            "rrl",
            "UDP answers refused by response rate limiting ([dns.rrl]): dropped, or slipped (sent empty with TC set)",
            m.rrl.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The config running is now `version` (it was `was`).
    pub fn config_running(&self, was: Option<&str>, version: &str) {
        switchyard_metrics::set_running_version(&self.config_info, was, version);
    }

    pub fn update(&self, source: &str, ok: bool) {
        self.updates
            .get_or_create(&SourceLabels {
                source: source.into(),
                result: if ok { "accepted" } else { "refused" }.into(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
