//! Prometheus metrics, served as text at the admin listener's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: String,
    pub route_kind: String,
    pub zone: String,
    pub instance: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub service: String,
    pub route_kind: String,
    pub zone: String,
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub service: String,
    pub zone: String,
    pub instance: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub service: String,
    pub instance: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub service: String,
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub service: String,
    pub instance: String,
    /// `pass` or `fail`.
    pub result: String,
}

pub use switchyard_metrics::VersionLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub service: String,
    pub priority: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub service: String,
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub service: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcceptLabels {
    /// `proxy` or `admin`.
    pub listener: String,
    /// `emfile`, `enfile`, `enobufs`, `enomem` or `other`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `proxy` or `admin`.
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub listener: String,
    /// `total` or `per_client`.
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub service: String,
    /// The status's name: `OK`, `UNAVAILABLE`, …
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsReloadLabels {
    /// `accepted` or `refused`.
    pub result: String,
    /// Why a reload was refused (`expired`, `key_mismatch`, …); empty when accepted.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `1.2` or `1.3`.
    pub version: String,
    /// `h2`, `http/1.1` or `none`.
    pub alpn: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamTlsLabels {
    pub service: String,
    /// `instance`, or `edge` for a peer edge a request was forwarded to.
    pub target: String,
    /// `unknown_issuer`, `name_mismatch`, `certificate_required`, …
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub cert_file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeFailureLabels {
    pub reason: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram>,
    pub upstream_errors: Family<ErrorLabels, Counter>,
    pub ejections: Family<InstanceLabels, Counter>,
    pub ejections_refused: Family<InstanceLabels, Counter>,
    pub health_checks: Family<CheckLabels, Counter>,
    pub instance_down: Family<HostLabels, Gauge>,
    pub shed: Family<ShedLabels, Counter>,
    pub read_only: Family<ServiceLabels, Counter>,
    pub panic: Family<RegionLabels, Gauge>,
    pub retries: Family<OutcomeLabels, Counter>,
    pub forwarded: Family<RegionLabels, Counter>,
    /// Forwarded requests whose target region could not be reached, by the
    /// region that served them instead (this edge's own: failed open).
    pub forward_fallbacks: Family<RegionLabels, Counter>,
    pub concurrency_limit: Family<ServiceLabels, Gauge>,
    pub inflight: Family<ServiceLabels, Gauge>,
    pub updates: Family<SourceLabels, Counter>,
    pub control_plane_connected: Gauge,
    pub accept_errors: Family<AcceptLabels, Counter>,
    pub client_connections: Family<ListenerLabels, Gauge>,
    pub connections_refused: Family<RefusalLabels, Counter>,
    pub last_known_good_unusable: Gauge,
    /// 1 for the version of the config running, absent for every other.
    pub config_info: Family<VersionLabels, Gauge>,
    pub access_log_dropped: Counter,
    pub tls_reloads: Family<TlsReloadLabels, Counter>,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    pub tls_handshake_failures: Family<HandshakeFailureLabels, Counter>,
    pub tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    pub upstream_tls_failures: Family<UpstreamTlsLabels, Counter>,
    pub grpc_responses: Family<GrpcLabels, Counter>,
    pub upgrades: Family<ServiceLabels, Counter>,
    pub upgraded_open: Family<ServiceLabels, Gauge>,
    pub upgrade_closes: Family<OutcomeLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let upstream_errors = Family::default();
        let ejections = Family::default();
        let ejections_refused = Family::default();
        let health_checks = Family::default();
        let instance_down = Family::default();
        let shed = Family::default();
        let read_only = Family::default();
        let panic = Family::default();
        let retries = Family::default();
        let forwarded = Family::default();
        let forward_fallbacks = Family::default();
        let concurrency_limit = Family::default();
        let inflight = Family::default();
        let updates = Family::default();
        let control_plane_connected = Gauge::default();
        let accept_errors = Family::default();
        registry.register(
            "accept_errors",
            "Failed accepts on a listener, by listener and cause (emfile: out of file descriptors)",
            accept_errors.clone(),
        );
        registry.register(
            "h1_buffers_outstanding",
            "Read and write buffers the HTTP/1 server has lent to connections and not yet taken back; idle keep-alive connections hold none",
            crate::h1::pool::OUTSTANDING.clone(),
        );
        let client_connections = Family::default();
        registry.register(
            "client_connections",
            "Client connections open, by listener",
            client_connections.clone(),
        );
        let connections_refused = Family::default();
        registry.register(
            "connections_refused",
            "Client connections refused at a connection limit, by listener and limit (total, per_client)",
            connections_refused.clone(),
        );
        let last_known_good_unusable = Gauge::default();
        let config_info = Family::default();
        // `switchyard_edge_config_info`: the name rollouts and dashboards ask for.
        registry.register(
            "edge_config_info",
            "1 for the version (content hash) of the config the edge runs",
            config_info.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer was behind (the queue was full)",
            access_log_dropped.clone(),
        );
        let tls_reloads = Family::default();
        registry.register(
            "tls_reloads",
            "Changed TLS certificate files loaded (accepted) or refused, by reason; a refused set leaves the old one serving",
            tls_reloads.clone(),
        );
        let tls_handshakes = Family::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed on the proxy's TLS listener, by version and ALPN protocol",
            tls_handshakes.clone(),
        );
        let tls_certificate_expiry = Family::default();
        registry.register(
            "tls_certificate_expiry_seconds",
            "When each TLS certificate in use expires (notAfter), Unix seconds",
            tls_certificate_expiry.clone(),
        );
        let upstream_tls_failures = Family::default();
        registry.register(
            "upstream_tls_handshake_failures",
            "TLS handshakes with instances and peer edges that failed, by service, target and reason; each is an upstream connect failure",
            upstream_tls_failures.clone(),
        );
        let tls_handshake_failures = Family::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or did not finish within client_header_timeout_ms, by reason",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by service, route kind, serving zone, instance and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to full response, by service, route kind, serving zone and instance",
            latency.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed attempts against instances or remote edges, by class",
            upstream_errors.clone(),
        );
        registry.register(
            "ejections",
            "Instances ejected by outlier detection, by reason",
            ejections.clone(),
        );
        registry.register(
            "ejections_refused",
            "Ejections refused because they would break the capacity floor or the ejection cap",
            ejections_refused.clone(),
        );
        registry.register(
            "health_checks",
            "Active health checks of instances, by result (pass, fail)",
            health_checks.clone(),
        );
        registry.register(
            "instance_down",
            "1 while an instance is out of rotation because it fails its active health checks",
            instance_down.clone(),
        );
        registry.register(
            "shed",
            "Requests rejected by load shedding, by priority and reason",
            shed.clone(),
        );
        registry.register(
            "read_only_rejections",
            "Write requests refused in read-only mode",
            read_only.clone(),
        );
        registry.register("panic", "1 while a region's serving capacity is at the floor and the edge routes to every instance", panic.clone());
        registry.register(
            "retries",
            "Retries, by outcome (sent, budget_exhausted, no_candidate, body_too_large: the request body outgrew the replay copy, streaming: a gRPC call, whose body streams from its first byte)",
            retries.clone(),
        );
        registry.register(
            "forwarded",
            "Requests forwarded to another region's edges, by target region",
            forwarded.clone(),
        );
        registry.register(
            "forward_fallbacks",
            "Forwarded requests whose target region could not be reached, by the region that served them instead (this edge's own: failed open)",
            forward_fallbacks.clone(),
        );
        registry.register(
            "concurrency_limit",
            "Current concurrency limit (adaptive or fixed)",
            concurrency_limit.clone(),
        );
        registry.register("inflight", "Requests in flight", inflight.clone());
        registry.register(
            "updates",
            "Config and controls updates, by source and result",
            updates.clone(),
        );
        registry.register(
            "control_plane_connected",
            "1 while the control-plane watch stream is connected",
            control_plane_connected.clone(),
        );
        registry.register(
            "last_known_good_unusable",
            "1 when the last-known-good controls file could not be used at start-up",
            last_known_good_unusable.clone(),
        );
        let grpc_responses = Family::default();
        registry.register(
            "grpc_responses",
            "gRPC calls answered by instances, by service and grpc-status (from the trailers, or the headers of a trailers-only answer)",
            grpc_responses.clone(),
        );
        let upgrades = Family::default();
        registry.register(
            "upgrades",
            "Connections upgraded (101 Switching Protocols: WebSocket and other Upgrades), by service",
            upgrades.clone(),
        );
        let upgraded_open = Family::default();
        registry.register(
            "upgraded_connections",
            "Upgraded connections open now, by service",
            upgraded_open.clone(),
        );
        let upgrade_closes = Family::default();
        registry.register(
            "upgrade_closes",
            "Upgraded connections closed, by service and outcome (closed: either side ended it, idle: upgrade_idle_timeout, shutdown: the drain deadline, error)",
            upgrade_closes.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            upstream_errors,
            ejections,
            ejections_refused,
            health_checks,
            instance_down,
            shed,
            read_only,
            panic,
            retries,
            forwarded,
            forward_fallbacks,
            concurrency_limit,
            inflight,
            updates,
            control_plane_connected,
            accept_errors,
            client_connections,
            connections_refused,
            last_known_good_unusable,
            config_info,
            access_log_dropped,
            tls_reloads,
            tls_handshakes,
            tls_handshake_failures,
            tls_certificate_expiry,
            upstream_tls_failures,
            grpc_responses,
            upgrades,
            upgraded_open,
            upgrade_closes,
        }
    }

    pub fn update(&self, source: &str, ok: bool) {
        self.updates
            .get_or_create(&SourceLabels {
                source: source.into(),
                result: if ok { "accepted" } else { "refused" }.into(),
            })
            .inc();
    }

    /// The config running is now `version` (it was `was`).
    pub fn config_running(&self, was: Option<&str>, version: &str) {
        switchyard_metrics::set_running_version(&self.config_info, was, version);
    }

    pub fn encode(&self) -> String {
        switchyard_metrics::encode(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
