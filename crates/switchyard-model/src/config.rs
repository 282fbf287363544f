//! The config file: raw serde types that deny unknown fields, and the validated
//! model the rest of Switchyard uses. Validation reports every error at once,
//! each with the path of the field, and never fills in a safety floor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ValidationErrors};

pub mod raw {
    //! The file as written. Optional fields stay `Option` so that validation,
    //! not serde, decides what is required and can report all gaps at once.
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        #[serde(default)]
        pub edge: Edge,
        #[serde(default, rename = "region")]
        pub regions: Vec<Region>,
        #[serde(default, rename = "service")]
        pub services: Vec<Service>,
        pub control: Option<Control>,
        /// The authoritative DNS servers (`switchyard dns`).
        pub dns: Option<crate::dns::raw::Dns>,
    }

    impl Config {
        /// The file as written; wrong types and unknown fields are refused here.
        pub fn parse(text: &str) -> Result<Config, crate::ConfigError> {
            toml::from_str(text).map_err(|e| crate::ConfigError::Parse(e.to_string()))
        }
    }

    impl Control {
        /// The tables the control plane checks itself, also when the rest
        /// of the file is invalid.
        pub fn tables(&self) -> super::ControlTables {
            super::ControlTables {
                safety: self.safety.clone(),
                playbook: self.playbook.clone(),
                detect: self.detect.clone(),
                incidents: self.incidents.clone(),
                notify: self.notify.clone(),
                rollout: self.rollout.clone(),
                tls: self.tls.clone(),
                etcd_tls: self.etcd_tls.clone(),
                console: self.console.clone(),
            }
        }
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Control {
        pub listen: Option<String>,
        /// `sqlite:PATH` or `etcd:http(s)://HOST:PORT[,http(s)://HOST:PORT…]`.
        pub store: Option<String>,
        #[serde(default, rename = "token")]
        pub tokens: Vec<Token>,
        /// Per service: `auto`, `recommend` or `off`.
        #[serde(default)]
        pub playbooks: std::collections::BTreeMap<String, String>,
        /// Checked by the control plane, which owns these rules.
        pub safety: Option<toml::Table>,
        /// Playbook timings (shift expiry, failback hold, evacuation steps),
        /// checked by the control plane.
        pub playbook: Option<toml::Table>,
        /// Detection settings (windows, thresholds), checked by the engine.
        pub detect: Option<toml::Table>,
        /// Incident settings (resolve hold, objective), checked by the control plane.
        pub incidents: Option<toml::Table>,
        /// Notification receivers, routes and silences.
        pub notify: Option<toml::Table>,
        /// Staged config rollouts: bake times and the canary analysis.
        pub rollout: Option<toml::Table>,
        /// `cert_file`, `key_file`: serve the API over HTTPS; read and
        /// checked by the control plane.
        pub tls: Option<toml::Table>,
        /// `ca_file`, `cert_file`, `key_file`: TLS with a client
        /// certificate to etcd; read and checked by the control plane.
        pub etcd_tls: Option<toml::Table>,
        /// The web console (`reports_dir`: drill reports to show), checked
        /// by the control plane.
        pub console: Option<toml::Table>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Token {
        pub name: Option<String>,
        pub scope: Option<String>,
        pub token: Option<String>,
        pub token_env: Option<String>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Edge {
        pub admin_token: Option<String>,
        pub admin_token_env: Option<String>,
        pub forward_secret: Option<String>,
        pub forward_secret_env: Option<String>,
        pub state_dir: Option<String>,
        pub controls_file: Option<String>,
        pub control_url: Option<ControlUrls>,
        pub control_ca_file: Option<String>,
        pub max_header_bytes: Option<usize>,
        pub max_headers: Option<usize>,
        pub max_body_bytes: Option<usize>,
        pub retry_buffer_bytes: Option<usize>,
        pub access_log: Option<String>,
        pub signal_interval_ms: Option<u64>,
        pub client_header_timeout_ms: Option<u64>,
        pub client_body_timeout_ms: Option<u64>,
        pub client_idle_timeout_ms: Option<u64>,
        pub client_body_total_timeout_ms: Option<u64>,
        pub max_client_connections: Option<usize>,
        pub max_connections_per_client: Option<usize>,
        pub upgrade_idle_timeout_ms: Option<u64>,
        pub http1_server: Option<String>,
        /// TLS on each zone's `edge_tls` listener.
        pub tls: Option<EdgeTls>,
        /// mTLS between this deployment's edges for forwarded requests.
        pub peer_tls: Option<PeerTls>,
    }

    /// The files and name a TLS client side is made of, as written: the
    /// same keys for `[edge.peer_tls]` and `[service.upstream_tls]` (which
    /// of them is required differs, and is checked in validation).
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClientTls {
        pub ca_file: Option<String>,
        pub server_name: Option<String>,
        pub cert_file: Option<String>,
        pub key_file: Option<String>,
    }

    pub type PeerTls = ClientTls;
    pub type UpstreamTls = ClientTls;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct EdgeTls {
        #[serde(default, rename = "certificate")]
        pub certificates: Vec<TlsCertificate>,
        pub poll_interval_ms: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TlsCertificate {
        pub cert_file: Option<String>,
        pub key_file: Option<String>,
    }

    /// `control_url`: one control plane, or several sharing a store (the
    /// edge follows the first that answers and moves on when it stops).
    #[derive(Debug, Clone, Deserialize)]
    #[serde(untagged)]
    pub enum ControlUrls {
        One(String),
        Many(Vec<String>),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Region {
        pub name: Option<String>,
        #[serde(default, rename = "zone")]
        pub zones: Vec<Zone>,
        /// Per target region, the addresses this region's edges forward to
        /// instead of that region's edges (a link, a tunnel, a load balancer).
        #[serde(default)]
        pub forward_via: std::collections::BTreeMap<String, Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Zone {
        pub name: Option<String>,
        pub edge: Option<String>,
        /// The zone edge's TLS listener (needs `[edge.tls]`).
        pub edge_tls: Option<String>,
        pub admin: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Service {
        pub name: Option<String>,
        #[serde(default)]
        pub hosts: Vec<String>,
        pub path_prefix: Option<String>,
        pub min_healthy: Option<f64>,
        pub region_preference: Option<Vec<String>>,
        pub health_path: Option<String>,
        pub retry_budget: Option<f64>,
        pub retry_min_concurrency: Option<u32>,
        pub upstream_protocol: Option<String>,
        /// TLS (and mTLS) to the instances.
        pub upstream_tls: Option<UpstreamTls>,
        #[serde(default)]
        pub timeouts: Timeouts,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub ejection: Ejection,
        #[serde(default)]
        pub health_check: HealthCheck,
        #[serde(default, rename = "route")]
        pub routes: Vec<Route>,
        #[serde(default, rename = "instance")]
        pub instances: Vec<Instance>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Timeouts {
        pub connect_ms: Option<u64>,
        pub header_ms: Option<u64>,
        pub total_ms: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
        pub max_concurrency: Option<u32>,
        pub adaptive: Option<bool>,
        pub min_concurrency: Option<u32>,
        pub max_rps: Option<f64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Ejection {
        pub consecutive_5xx: Option<u32>,
        pub consecutive_connect_failures: Option<u32>,
        pub interval_ms: Option<u64>,
        pub base_ejection_ms: Option<u64>,
        pub max_ejection_ms: Option<u64>,
        pub max_ejection_percent: Option<f64>,
        pub success_rate_min_hosts: Option<u32>,
        pub success_rate_min_requests: Option<u64>,
        pub success_rate_stdev_factor: Option<f64>,
        pub latency_factor: Option<f64>,
        pub latency_min_ms: Option<u64>,
        pub latency_min_requests: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct HealthCheck {
        pub enabled: Option<bool>,
        pub interval_ms: Option<u64>,
        pub timeout_ms: Option<u64>,
        pub unhealthy_threshold: Option<u32>,
        pub healthy_threshold: Option<u32>,
        pub grpc_service: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub name: Option<String>,
        pub path_prefix: Option<String>,
        #[serde(default)]
        pub methods: Vec<String>,
        pub kind: Option<super::RouteKind>,
        pub priority: Option<super::Priority>,
        pub heartbeat_path: Option<String>,
        /// The route's own total timeout, in place of the service's
        /// `timeouts.total_ms` (its connect and header timeouts are capped
        /// by it).
        pub timeout_ms: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Instance {
        pub name: Option<String>,
        pub zone: Option<String>,
        pub addr: Option<String>,
    }
}

/// Whether a route only reads (safe in read-only mode) or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Read,
    Write,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Read => "read",
            RouteKind::Write => "write",
        }
    }
}

/// Shedding order: sheddable routes go first, critical ones last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Sheddable,
    Normal,
    Critical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Sheddable => "sheddable",
            Priority::Normal => "normal",
            Priority::Critical => "critical",
        }
    }
}

/// The validated config. Indexes are built once so lookups on the request
/// path are map reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub edge: EdgeSettings,
    pub regions: Vec<Region>,
    pub services: Vec<Service>,
    /// Present when the file configures a control plane.
    pub control: Option<ControlSettings>,
    /// `[dns]`: the authoritative DNS servers; `None` when there are none.
    pub dns: Option<crate::dns::DnsSettings>,
}

/// What a token may do on the control plane's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Look: status, controls, history, the watch stream.
    Read,
    /// Act within the safety rules: shift, fail over, read-only.
    Operate,
    /// Also replace controls wholesale and override rules with `force`.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sqlite(String),
    Etcd(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaybookMode {
    /// Act, within the safety rules.
    Auto,
    /// Say what would be done; do nothing.
    Recommend,
    Off,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings {
    pub listen: SocketAddr,
    pub store: StoreSpec,
    /// (name, scope, secret), secrets already resolved from the environment.
    pub tokens: Vec<(String, Scope, String)>,
    pub playbooks: BTreeMap<String, PlaybookMode>,
    pub tables: ControlTables,
}

/// The `[control.*]` tables the control plane owns and checks itself
/// (`switchyard_control::server::check`), as the file has them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlTables {
    pub safety: Option<toml::Table>,
    pub playbook: Option<toml::Table>,
    pub detect: Option<toml::Table>,
    pub incidents: Option<toml::Table>,
    pub notify: Option<toml::Table>,
    pub rollout: Option<toml::Table>,
    pub tls: Option<toml::Table>,
    pub etcd_tls: Option<toml::Table>,
    pub console: Option<toml::Table>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSettings {
    /// The admin bearer token, already resolved from the environment if the
    /// file names a variable. `None` means admin writes are refused.
    pub admin_token: Option<String>,
    pub admin_token_env: Option<String>,
    /// The secret this deployment's edges show each other when one forwards
    /// a request to another region, resolved like the admin token. Without
    /// it no request is believed to be forwarded.
    pub forward_secret: Option<String>,
    pub state_dir: Option<String>,
    pub controls_file: Option<String>,
    /// The control planes to follow, in order of preference; empty: none.
    pub control_urls: Vec<String>,
    /// A private CA (PEM) to trust for `https://` control planes besides the
    /// shipped roots; relative to the config file.
    pub control_ca_file: Option<String>,
    pub max_header_bytes: usize,
    /// The most header fields a request may carry.
    pub max_headers: usize,
    pub max_body_bytes: usize,
    /// How much of a request body the edge keeps so that it can send the
    /// request again (linkerd's and Envoy's retry buffer): a request whose
    /// body outgrew it is not retried.
    pub retry_buffer_bytes: usize,
    /// Where the access log goes (one JSON line per request); `None`: off.
    pub access_log: Option<AccessLogTarget>,
    /// Client connections the proxy listener holds at once; `None`: half of
    /// the process's file-descriptor limit, so upstream connections, the
    /// admin listener and files always have the other half.
    pub max_client_connections: Option<usize>,
    /// Connections one client address may hold; `None`: half of
    /// `max_client_connections`, so no single client can take them all.
    pub max_connections_per_client: Option<usize>,
    pub signal_interval: Duration,
    /// How long a client connection may go without a complete request head:
    /// from accept to the first request, and between two requests on a
    /// keep-alive connection (hyper runs one timer for both). nginx:
    /// `client_header_timeout` 60 s, `keepalive_timeout` 75 s.
    pub client_header_timeout: Duration,
    /// How long a client connection may stay open with no request in flight
    /// (h2 between streams; HTTP/1.1 is closed first by the header timeout).
    /// nginx: `keepalive_timeout` 75 s (HTTP/2 too); Envoy: `idle_timeout` 1 h.
    pub client_idle_timeout: Duration,
    /// The longest wait between two reads of a request body (nginx:
    /// `client_body_timeout` 60 s).
    pub client_body_timeout: Duration,
    /// The longest a whole request body may take to arrive (Envoy's
    /// `stream_idle_timeout`, 5 min, is the nearest).
    pub client_body_total_timeout: Duration,
    /// How long an upgraded connection (WebSocket and other `Upgrade`s)
    /// may carry no byte either way before the edge closes it. nginx:
    /// `proxy_read_timeout` 60 s; Envoy: `stream_idle_timeout` 5 min.
    pub upgrade_idle_timeout: Duration,
    /// Which server reads HTTP/1.x requests on the plain proxy listener.
    pub http1_server: Http1Server,
    /// The certificates of the zones' `edge_tls` listeners.
    pub tls: Option<EdgeTls>,
    /// `[edge.peer_tls]`: forwards between edges go over mTLS, and only a
    /// connection whose client certificate the peer CA signed may carry a
    /// forwarded request.
    pub peer_tls: Option<PeerTls>,
}

/// `[edge.peer_tls]`: the deployment's edge CA and this edge's certificate,
/// which it presents as a client when it forwards and as a server (for
/// `server_name`) on its `edge_tls` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    pub ca_file: String,
    pub identity: TlsCertificateFiles,
    /// The name every edge's peer certificate carries: a forwarding edge
    /// asks for it by SNI and verifies the peer's certificate against it.
    pub server_name: String,
}

/// `[service.upstream_tls]`: the edge speaks TLS to the instances, verifying
/// them against `ca_file` only (no public roots, no "insecure" mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub ca_file: String,
    /// Sent as SNI and verified; `None`: the instance's address (an IP
    /// address, which the certificate must then name).
    pub server_name: Option<String>,
    /// The client certificate for instances that require one (mTLS).
    pub client_cert: Option<TlsCertificateFiles>,
}

/// `[edge.tls]`: what a TLS listener presents. The files are read by the
/// edge (this crate does no I/O); the first certificate is the default for
/// clients that send no server name or one no certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeTls {
    pub certificates: Vec<TlsCertificateFiles>,
    /// How often the files are read to notice a change (besides every
    /// config reload).
    pub poll_interval: Duration,
}

/// One certificate chain and its private key, PEM files relative to the
/// config file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertificateFiles {
    pub cert_file: String,
    pub key_file: String,
}

/// `edge.http1_server`: the edge's own HTTP/1 server (`"switchyard"`, the
/// default), which holds no buffer for an idle keep-alive connection, or
/// hyper's (`"hyper"`), kept as a way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http1Server {
    #[default]
    Switchyard,
    Hyper,
}

/// `edge.access_log`: `"-"` for standard output, else a file (relative to
/// the config file's directory), appended to.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogTarget {
    Stdout,
    File(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: String,
    pub zones: Vec<Zone>,
    /// Where this region's edges send requests forwarded to another region;
    /// by default that region's edges.
    pub forward_via: BTreeMap<String, Vec<SocketAddr>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub region: String,
    pub edge: SocketAddr,
    /// The edge's TLS listener, when the zone has one.
    pub edge_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    /// Fraction of the service's instances in each region that must stay in
    /// service. Always explicit in the file.
    pub min_healthy: f64,
    pub region_preference: Vec<String>,
    pub health_path: String,
    pub retry_budget: f64,
    pub retry_min_concurrency: u32,
    /// How the edge speaks to this service's instances.
    pub upstream_protocol: UpstreamProtocol,
    /// TLS to the instances; `None`: plain TCP.
    pub upstream_tls: Option<UpstreamTls>,
    pub timeouts: Timeouts,
    pub limits: LimitSettings,
    pub ejection: EjectionSettings,
    pub health_check: HealthCheckSettings,
    pub routes: Vec<Route>,
    pub instances: Vec<Instance>,
    /// What requests that match no route are: `[read, write]`.
    pub default_routes: [Route; 2],
}

/// `service.upstream_protocol`: the protocol of the edge's connections to
/// the service's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request at a time per pooled connection.
    #[default]
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge (no `Upgrade: h2c` dance):
    /// one connection per instance carries many requests at once. gRPC
    /// instances need it; HTTP/1.1 `Upgrade`s (WebSocket) still go out on
    /// HTTP/1.1, since HTTP/2 has no such thing.
    H2c,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub header: Duration,
    pub total: Duration,
}

impl Timeouts {
    /// A route's timeouts: its own total in place of the service's, the
    /// connect and header timeouts capped by it (a route that must answer
    /// within 50 ms cannot wait 250 ms to connect).
    pub fn for_route(self, total: Option<Duration>) -> Timeouts {
        match total {
            None => self,
            Some(t) => Timeouts {
                connect: self.connect.min(t),
                header: self.header.min(t),
                total: t,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSettings {
    pub max_concurrency: u32,
    pub adaptive: bool,
    pub min_concurrency: u32,
    /// Requests per second admitted by this edge; `None` for no ceiling.
    pub max_rps: Option<f64>,
}

/// Outlier ejection. Defaults follow Envoy's published ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectionSettings {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: f64,
    pub success_rate_min_hosts: u32,
    pub success_rate_min_requests: u64,
    pub success_rate_stdev_factor: f64,
    pub latency_factor: f64,
    pub latency_min: Duration,
    /// Requests an instance needs in an interval for its mean latency to be
    /// judged. Lower than the success-rate minimum on purpose: a slow
    /// instance gets fewer requests (power of two choices favours peers with
    /// fewer in flight), and ten slow answers say more about latency than
    /// ten failures would about a rate.
    pub latency_min_requests: u64,
}

/// Active health checks: every edge asks each instance of its region for
/// `health_path` every `interval`. `unhealthy_threshold` failures in a row
/// take the instance out of rotation (it is dead, not an outlier, so the
/// ejection cap does not hold it back) and `healthy_threshold` passes bring
/// it back. Defaults: 1 s, 1 s, 2 and 2, so a dead instance leaves within
/// about two seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Check with the gRPC Health Checking Protocol
    /// (`grpc.health.v1.Health/Check`) asking for this service name ("":
    /// the server as a whole) instead of `GET health_path`: a gRPC server
    /// answers any `GET` with HTTP 200, so only its own verdict says
    /// whether it is serving. Needs `upstream_protocol = "h2c"`.
    pub grpc_service: Option<String>,
}

impl Default for HealthCheckSettings {
    fn default() -> Self {
        HealthCheckSettings {
            enabled: true,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 2,
            grpc_service: None,
        }
    }
}

impl Default for EjectionSettings {
    fn default() -> Self {
        EjectionSettings {
            consecutive_5xx: 5,
            consecutive_connect_failures: 5,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10.0,
            success_rate_min_hosts: 5,
            success_rate_min_requests: 100,
            success_rate_stdev_factor: 1.9,
            latency_factor: 3.0,
            latency_min: Duration::from_millis(50),
            latency_min_requests: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub path_prefix: String,
    /// Upper-case methods; empty matches any method.
    pub methods: Vec<String>,
    pub kind: RouteKind,
    pub priority: Priority,
    /// Path of the route's heartbeat endpoint on each instance, if it has one.
    pub heartbeat_path: Option<String>,
    /// `timeout_ms` as written: the route's own total timeout.
    pub timeout: Option<Duration>,
    /// What the route's requests get: the service's timeouts, with the
    /// route's own total (and the others capped by it) when it has one.
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    pub zone: String,
    pub region: String,
    pub addr: SocketAddr,
}

/// nginx: `large_client_header_buffers` 4 × 8 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// nginx has no count limit (only bytes); Envoy's `max_headers_count` is 100.
pub const DEFAULT_MAX_HEADERS: usize = 500;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// linkerd's retry buffer is 64 KiB; Envoy's `per_request_buffer_limit` 1 MiB.
pub const DEFAULT_RETRY_BUFFER_BYTES: usize = 64 * 1024;
/// Held per request in flight: a larger replay copy would undo the bound on
/// memory per request that streaming gives.
pub const MAX_RETRY_BUFFER_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_MS: u64 = 60_000;
/// Reading a few kilobytes every few seconds costs nothing and, unlike
/// inotify, sees every way a file can be replaced (rename over, bind mount,
/// Kubernetes' symlink swap).
pub const DEFAULT_TLS_POLL_INTERVAL_MS: u64 = 2_000;
pub const DEFAULT_CLIENT_BODY_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_MS: u64 = 75_000;
pub const DEFAULT_CLIENT_BODY_TOTAL_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_UPGRADE_IDLE_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_CONNECT_MS: u64 = 250;
pub const DEFAULT_HEADER_MS: u64 = 3_000;
pub const DEFAULT_TOTAL_MS: u64 = 10_000;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 1_024;

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl Config {
    /// Parses and validates TOML text. `env` resolves `admin_token_env`; pass
    /// `|k| std::env::var(k).ok()` in production, a map in tests.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::validate(raw::Config::parse(text)?, env).map_err(ConfigError::Invalid)
    }

    pub fn validate(
        raw: raw::Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ValidationErrors> {
        let mut errs = ValidationErrors::default();
        let edge = validate_edge(&raw.edge, &env, &mut errs);
        let regions = validate_regions(&raw.regions, &mut errs);
        // From the names as written: a zone whose own fields are wrong is
        // still a zone, so its instances are not reported again as unknown.
        let zone_regions: HashMap<&str, &str> = raw
            .regions
            .iter()
            .filter_map(|r| Some((r, r.name.as_deref()?)))
            .flat_map(|(r, region)| {
                r.zones
                    .iter()
                    .filter_map(move |z| Some((z.name.as_deref()?, region)))
            })
            .collect();
        let mut taken_addrs: HashMap<SocketAddr, String> = HashMap::new();
        for r in &regions {
            for z in &r.zones {
                let p = format!("region.{}.zone.{}", r.name, z.name);
                taken_addrs.insert(z.edge, format!("{p}.edge"));
                if let Some(a) = z.edge_tls {
                    taken_addrs.insert(a, format!("{p}.edge_tls"));
                }
                taken_addrs.insert(z.admin, format!("{p}.admin"));
            }
        }
        check_tls_listeners(&raw, &mut errs);
        let region_names: Vec<String> = regions.iter().map(|r| r.name.clone()).collect();
        let mut services = Vec::new();
        let mut seen_services = BTreeSet::new();
        let mut seen_hosts: HashMap<(String, String), String> = HashMap::new();
        for (i, s) in raw.services.iter().enumerate() {
            let path = item_path("service", i, &s.name, &mut errs);
            if let Some(n) = &s.name {
                if !n.is_empty() && !seen_services.insert(n.clone()) {
                    errs.push(
                        format!("{path}.name"),
                        format!("duplicate service name {n:?}"),
                    );
                }
            }
            if let Some(svc) = validate_service(
                s,
                &path,
                &zone_regions,
                &region_names,
                &mut taken_addrs,
                &mut seen_hosts,
                &mut errs,
            ) {
                services.push(svc);
            }
        }
        if raw.services.is_empty() {
            errs.push("service", "at least one [[service]] is required");
        }
        let control = raw
            .control
            .as_ref()
            .map(|c| validate_control(c, &services_names(&raw.services), &env, &mut errs));
        let dns = raw.dns.as_ref().map(|d| {
            crate::dns::validate(d, &edge, &env, &regions, &services, parse_addr, &mut errs)
        });
        errs.into_result(Config {
            edge,
            regions,
            services,
            control: control.flatten(),
            dns,
        })
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.regions
            .iter()
            .flat_map(|r| r.zones.iter())
            .find(|z| z.name == name)
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.regions.iter().flat_map(|r| r.zones.iter())
    }
}

impl Service {
    /// The route a request belongs to. Requests that match no configured
    /// route get a synthetic `default` route: safe methods read, others write.
    pub fn route_for(&self, method: &str, path: &str) -> &Route {
        for r in &self.routes {
            if path.starts_with(&r.path_prefix)
                && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
            {
                return r;
            }
        }
        if matches!(method, "GET" | "HEAD" | "OPTIONS") {
            &self.default_routes[0]
        } else {
            &self.default_routes[1]
        }
    }

    pub fn instances_in_region<'a>(
        &'a self,
        region: &'a str,
    ) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances.iter().filter(move |i| i.region == region)
    }

    /// The number of instances that must stay in service in `region`.
    pub fn floor(&self, region: &str) -> usize {
        let n = self.instances_in_region(region).count();
        (self.min_healthy * n as f64).ceil() as usize
    }
}

fn validate_edge(
    e: &raw::Edge,
    env: &impl Fn(&str) -> Option<String>,
    errs: &mut ValidationErrors,
) -> EdgeSettings {
    let admin_token = secret(
        "edge.admin_token",
        (&e.admin_token, &e.admin_token_env),
        8,
        env,
        errs,
    );
    let forward_secret = secret(
        "edge.forward_secret",
        (&e.forward_secret, &e.forward_secret_env),
        16,
        env,
        errs,
    );
    let control_urls = match &e.control_url {
        None => Vec::new(),
        Some(raw::ControlUrls::One(u)) => vec![u.clone()],
        Some(raw::ControlUrls::Many(v)) => v.clone(),
    };
    for (i, url) in control_urls.iter().enumerate() {
        let path = match &e.control_url {
            Some(raw::ControlUrls::Many(_)) => format!("edge.control_url[{i}]"),
            _ => "edge.control_url".to_string(),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errs.push(
                path,
                format!("must be an http:// or https:// URL, got {url:?}"),
            );
        }
    }
    if e.control_ca_file.is_some() && !control_urls.iter().any(|u| u.starts_with("https://")) {
        errs.push(
            "edge.control_ca_file",
            "set, but no edge.control_url is an https:// URL",
        );
    }
    if matches!(&e.control_url, Some(raw::ControlUrls::Many(v)) if v.is_empty()) {
        errs.push(
            "edge.control_url",
            "an empty list: leave it out to follow no control plane",
        );
    }
    let max_header_bytes = e.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        errs.push(
            "edge.max_header_bytes",
            format!("must be between 1024 and 1048576, got {max_header_bytes}"),
        );
    }
    let max_headers = e.max_headers.unwrap_or(DEFAULT_MAX_HEADERS);
    if !(16..=10_000).contains(&max_headers) {
        errs.push(
            "edge.max_headers",
            format!("must be between 16 and 10000, got {max_headers}"),
        );
    }
    let max_body_bytes = e.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 || max_body_bytes > 1024 * 1024 * 1024 {
        errs.push(
            "edge.max_body_bytes",
            format!("must be between 1 and 1073741824, got {max_body_bytes}"),
        );
    }
    let retry_buffer_bytes = e.retry_buffer_bytes.unwrap_or(DEFAULT_RETRY_BUFFER_BYTES);
    if retry_buffer_bytes > MAX_RETRY_BUFFER_BYTES {
        errs.push(
            "edge.retry_buffer_bytes",
            format!("must be between 0 and {MAX_RETRY_BUFFER_BYTES}, got {retry_buffer_bytes}"),
        );
    }
    let access_log = match e.access_log.as_deref() {
        None => None,
        Some("-") => Some(AccessLogTarget::Stdout),
        Some(p) if p.trim().is_empty() => {
            errs.push(
                "edge.access_log",
                "an empty path: leave it out for no access log, or \"-\" for standard output",
            );
            None
        }
        Some(p) => Some(AccessLogTarget::File(p.to_string())),
    };
    let signal_ms = e.signal_interval_ms.unwrap_or(1000);
    if !(100..=60_000).contains(&signal_ms) {
        errs.push(
            "edge.signal_interval_ms",
            format!("must be between 100 and 60000, got {signal_ms}"),
        );
    }
    let client_header_ms = e
        .client_header_timeout_ms
        .unwrap_or(DEFAULT_CLIENT_HEADER_TIMEOUT_MS);
    if !(100..=3_600_000).contains(&client_header_ms) {
        errs.push(
            "edge.client_header_timeout_ms",
            format!("must be between 100 and 3600000, got {client_header_ms}"),
        );
    }
    let ms_in = |v: Option<u64>, def: u64, path: &str, errs: &mut ValidationErrors| {
        let ms = v.unwrap_or(def);
        if !(100..=3_600_000).contains(&ms) {
            errs.push(path, format!("must be between 100 and 3600000, got {ms}"));
        }
        Duration::from_millis(ms)
    };
    let client_body_timeout = ms_in(
        e.client_body_timeout_ms,
        DEFAULT_CLIENT_BODY_TIMEOUT_MS,
        "edge.client_body_timeout_ms",
        errs,
    );
    let client_idle_timeout = ms_in(
        e.client_idle_timeout_ms,
        DEFAULT_CLIENT_IDLE_TIMEOUT_MS,
        "edge.client_idle_timeout_ms",
        errs,
    );
    let client_body_total_timeout = ms_in(
        e.client_body_total_timeout_ms,
        DEFAULT_CLIENT_BODY_TOTAL_TIMEOUT_MS,
        "edge.client_body_total_timeout_ms",
        errs,
    );
    let upgrade_idle_timeout = ms_in(
        e.upgrade_idle_timeout_ms,
        DEFAULT_UPGRADE_IDLE_TIMEOUT_MS,
        "edge.upgrade_idle_timeout_ms",
        errs,
    );
    let http1_server = match e.http1_server.as_deref() {
        None | Some("switchyard") => Http1Server::Switchyard,
        Some("hyper") => Http1Server::Hyper,
        Some(other) => {
            errs.push(
                "edge.http1_server",
                format!("must be \"switchyard\" or \"hyper\", got {other:?}"),
            );
            Http1Server::Switchyard
        }
    };
    for (path, v) in [
        ("edge.max_client_connections", e.max_client_connections),
        (
            "edge.max_connections_per_client",
            e.max_connections_per_client,
        ),
    ] {
        if v == Some(0) {
            errs.push(path, "must be at least 1");
        }
    }
    if let (Some(all), Some(one)) = (e.max_client_connections, e.max_connections_per_client) {
        if one > all {
            errs.push(
                "edge.max_connections_per_client",
                format!("must not exceed edge.max_client_connections ({all}), got {one}"),
            );
        }
    }
    EdgeSettings {
        admin_token,
        admin_token_env: e.admin_token_env.clone(),
        forward_secret,
        state_dir: e.state_dir.clone(),
        controls_file: e.controls_file.clone(),
        control_urls,
        control_ca_file: e.control_ca_file.clone(),
        max_header_bytes,
        max_headers,
        max_body_bytes,
        retry_buffer_bytes,
        access_log,
        max_client_connections: e.max_client_connections,
        max_connections_per_client: e.max_connections_per_client,
        signal_interval: Duration::from_millis(signal_ms),
        client_header_timeout: Duration::from_millis(client_header_ms),
        client_body_timeout,
        client_body_total_timeout,
        client_idle_timeout,
        upgrade_idle_timeout,
        http1_server,
        tls: e.tls.as_ref().map(|t| validate_edge_tls(t, errs)),
        peer_tls: e.peer_tls.as_ref().and_then(|t| validate_peer_tls(t, errs)),
    }
}

/// A file a TLS table names: required and not blank.
fn tls_file(v: &Option<String>, path: String, errs: &mut ValidationErrors) -> Option<String> {
    match v {
        Some(f) if !f.trim().is_empty() => Some(f.clone()),
        Some(_) => {
            errs.push(path, "must name a file");
            None
        }
        None => {
            errs.push(path, "required");
            None
        }
    }
}

/// A name TLS can ask for (SNI) and verify: a DNS name or an IP address.
fn check_server_name(v: &str, path: String, errs: &mut ValidationErrors) -> bool {
    let dns = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if dns || v.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    errs.push(
        path,
        format!("must be a DNS name or an IP address, got {v:?}"),
    );
    false
}

fn validate_peer_tls(t: &raw::PeerTls, errs: &mut ValidationErrors) -> Option<PeerTls> {
    let ca = tls_file(&t.ca_file, "edge.peer_tls.ca_file".into(), errs);
    let cert = tls_file(&t.cert_file, "edge.peer_tls.cert_file".into(), errs);
    let key = tls_file(&t.key_file, "edge.peer_tls.key_file".into(), errs);
    let name = match &t.server_name {
        None => {
            errs.push(
                "edge.peer_tls.server_name",
                "required: the DNS name every edge's peer certificate carries (for example \"edges.internal\")",
            );
            None
        }
        Some(n) if n.parse::<std::net::IpAddr>().is_ok() => {
            errs.push(
                "edge.peer_tls.server_name",
                format!("must be a DNS name (it is asked for by SNI), got {n:?}"),
            );
            None
        }
        Some(n) => check_server_name(n, "edge.peer_tls.server_name".into(), errs)
            .then(|| n.to_ascii_lowercase()),
    };
    Some(PeerTls {
        ca_file: ca?,
        identity: TlsCertificateFiles {
            cert_file: cert?,
            key_file: key?,
        },
        server_name: name?,
    })
}

fn validate_upstream_tls(
    t: &raw::UpstreamTls,
    path: &str,
    errs: &mut ValidationErrors,
) -> Option<UpstreamTls> {
    let ca = tls_file(&t.ca_file, format!("{path}.ca_file"), errs);
    let server_name = t.server_name.as_ref().and_then(|n| {
        check_server_name(n, format!("{path}.server_name"), errs).then(|| n.to_ascii_lowercase())
    });
    let bad_name = t.server_name.is_some() && server_name.is_none();
    let client_cert = match (&t.cert_file, &t.key_file) {
        (None, None) => None,
        (c, k) => {
            let cert = tls_file(c, format!("{path}.cert_file"), errs);
            let key = tls_file(k, format!("{path}.key_file"), errs);
            Some(TlsCertificateFiles {
                cert_file: cert?,
                key_file: key?,
            })
        }
    };
    if bad_name {
        return None;
    }
    Some(UpstreamTls {
        ca_file: ca?,
        server_name,
        client_cert,
    })
}

fn validate_edge_tls(t: &raw::EdgeTls, errs: &mut ValidationErrors) -> EdgeTls {
    if t.certificates.is_empty() {
        errs.push(
            "edge.tls.certificate",
            "at least one [[edge.tls.certificate]] (cert_file, key_file) is required",
        );
    }
    let mut certificates = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        let file = |v: &Option<String>, field: &str, errs: &mut ValidationErrors| match v {
            Some(f) if !f.trim().is_empty() => Some(f.clone()),
            Some(_) => {
                errs.push(
                    format!("edge.tls.certificate[{i}].{field}"),
                    "must name a file",
                );
                None
            }
            None => {
                errs.push(format!("edge.tls.certificate[{i}].{field}"), "required");
                None
            }
        };
        let cert = file(&c.cert_file, "cert_file", errs);
        let key = file(&c.key_file, "key_file", errs);
        if let (Some(cert_file), Some(key_file)) = (cert, key) {
            certificates.push(TlsCertificateFiles {
                cert_file,
                key_file,
            });
        }
    }
    let poll_ms = t.poll_interval_ms.unwrap_or(DEFAULT_TLS_POLL_INTERVAL_MS);
    if !(100..=3_600_000).contains(&poll_ms) {
        errs.push(
            "edge.tls.poll_interval_ms",
            format!("must be between 100 and 3600000, got {poll_ms}"),
        );
    }
    EdgeTls {
        certificates,
        poll_interval: Duration::from_millis(poll_ms),
    }
}

/// `[edge.tls]` and the zones' `edge_tls` listeners come together: a TLS
/// listener without certificates could only fail every handshake, and
/// certificates no listener presents are a mistake the operator would not see.
fn check_tls_listeners(raw: &raw::Config, errs: &mut ValidationErrors) {
    let mut any_listener = false;
    for (ri, r) in raw.regions.iter().enumerate() {
        for (zi, z) in r.zones.iter().enumerate() {
            if z.edge_tls.is_none() {
                continue;
            }
            any_listener = true;
            if raw.edge.tls.is_none() {
                let path = match (&r.name, &z.name) {
                    (Some(r), Some(z)) if valid_name(r) && valid_name(z) => {
                        format!("region.{r}.zone.{z}.edge_tls")
                    }
                    _ => format!("region[{ri}].zone[{zi}].edge_tls"),
                };
                errs.push(
                    path,
                    "set, but there is no [edge.tls] with the certificates to present",
                );
            }
        }
    }
    if raw.edge.peer_tls.is_some() {
        // A forward goes to the target zone's TLS listener; a zone without
        // one could never be reached by its peers.
        for (ri, r) in raw.regions.iter().enumerate() {
            for (zi, z) in r.zones.iter().enumerate() {
                if z.edge_tls.is_some() {
                    continue;
                }
                let path = match (&r.name, &z.name) {
                    (Some(r), Some(z)) if valid_name(r) && valid_name(z) => {
                        format!("region.{r}.zone.{z}.edge_tls")
                    }
                    _ => format!("region[{ri}].zone[{zi}].edge_tls"),
                };
                errs.push(
                    path,
                    "required with [edge.peer_tls]: peer edges forward to this TLS listener",
                );
            }
        }
    }
    if raw.edge.tls.is_some() && !any_listener {
        errs.push(
            "edge.tls",
            "set, but no zone has an edge_tls address to serve TLS on",
        );
    }
}

/// A secret written in the file or named by an environment variable (one or
/// the other); one given in the file must be at least `min_len` long. An
/// unset or empty variable is no secret.
pub(crate) fn secret(
    path: &str,
    (literal, var): (&Option<String>, &Option<String>),
    min_len: usize,
    env: &impl Fn(&str) -> Option<String>,
    errs: &mut ValidationErrors,
) -> Option<String> {
    match (literal, var) {
        (Some(_), Some(_)) => {
            let field = path.rsplit('.').next().unwrap_or(path);
            errs.push(path, format!("set either {field} or {field}_env, not both"));
            None
        }
        (Some(t), None) if t.len() < min_len => {
            errs.push(path, format!("must be at least {min_len} characters"));
            None
        }
        (Some(t), None) => Some(t.clone()),
        (None, Some(v)) => env(v).filter(|t| !t.is_empty()),
        (None, None) => None,
    }
}

fn parse_addr(v: &Option<String>, path: &str, errs: &mut ValidationErrors) -> Option<SocketAddr> {
    match v {
        None => {
            errs.push(path, "required");
            None
        }
        Some(s) => {
            match s.parse::<SocketAddr>() {
                Ok(a) if a.port() == 0 => {
                    errs.push(
                    path,
                    format!("port 0 means any free port, so nobody could find it: name a port in {s:?}"),
                );
                    None
                }
                Ok(a) => Some(a),
                Err(_) => {
                    errs.push(path, format!("not an address of the form ip:port: {s:?}"));
                    None
                }
            }
        }
    }
}

fn validate_regions(raw: &[raw::Region], errs: &mut ValidationErrors) -> Vec<Region> {
    let mut out = Vec::new();
    let mut region_names = BTreeSet::new();
    let mut zone_names: HashMap<String, String> = HashMap::new();
    let mut addrs: HashMap<SocketAddr, String> = HashMap::new();
    if raw.is_empty() {
        errs.push("region", "at least one [[region]] is required");
    }
    for (ri, r) in raw.iter().enumerate() {
        let rpath = item_path("region", ri, &r.name, errs);
        if let Some(n) = &r.name {
            if !region_names.insert(n.clone()) {
                errs.push(
                    format!("{rpath}.name"),
                    format!("duplicate region name {n:?}"),
                );
            }
        }
        if r.zones.is_empty() {
            errs.push(
                format!("{rpath}.zone"),
                "a region needs at least one [[region.zone]]",
            );
        }
        let mut zones = Vec::new();
        for (zi, z) in r.zones.iter().enumerate() {
            let zpath = item_path(&format!("{rpath}.zone"), zi, &z.name, errs);
            if let Some(n) = &z.name {
                if let Some(prev) = zone_names.insert(n.clone(), zpath.clone()) {
                    errs.push(
                        format!("{zpath}.name"),
                        format!("duplicate zone name {n:?} (also at {prev})"),
                    );
                }
            }
            let edge = parse_addr(&z.edge, &format!("{zpath}.edge"), errs);
            let admin = parse_addr(&z.admin, &format!("{zpath}.admin"), errs);
            let edge_tls = z
                .edge_tls
                .as_ref()
                .and_then(|_| parse_addr(&z.edge_tls, &format!("{zpath}.edge_tls"), errs));
            for (a, field) in [(edge, "edge"), (edge_tls, "edge_tls"), (admin, "admin")] {
                if let Some(a) = a {
                    let p = format!("{zpath}.{field}");
                    if let Some(prev) = addrs.insert(a, p.clone()) {
                        errs.push(p, format!("duplicate address {a} (also at {prev})"));
                    }
                }
            }
            if let (Some(name), Some(edge), Some(admin), Some(region)) =
                (&z.name, edge, admin, &r.name)
            {
                zones.push(Zone {
                    name: name.clone(),
                    region: region.clone(),
                    edge,
                    edge_tls,
                    admin,
                });
            }
        }
        let mut forward_via = BTreeMap::new();
        for (target, addrs) in &r.forward_via {
            let p = format!("{rpath}.forward_via.{target}");
            if !raw
                .iter()
                .any(|x| x.name.as_deref() == Some(target.as_str()))
                || r.name.as_deref() == Some(target.as_str())
            {
                errs.push(
                    p.clone(),
                    format!("{target:?} is not another region of this config"),
                );
            }
            if addrs.is_empty() {
                errs.push(p.clone(), "at least one address is required");
            }
            let parsed: Vec<SocketAddr> = addrs
                .iter()
                .enumerate()
                .filter_map(|(i, a)| parse_addr(&Some(a.clone()), &format!("{p}[{i}]"), errs))
                .collect();
            forward_via.insert(target.clone(), parsed);
        }
        if let Some(name) = &r.name {
            out.push(Region {
                name: name.clone(),
                zones,
                forward_via,
            });
        }
    }
    out
}

/// The path of a named item (`{prefix}.{name}`), or of its index when the
/// name is missing or unusable, which is then reported.
fn item_path(
    prefix: &str,
    index: usize,
    name: &Option<String>,
    errs: &mut ValidationErrors,
) -> String {
    match name {
        Some(n) if valid_name(n) => format!("{prefix}.{n}"),
        Some(n) => {
            errs.push(
                format!("{prefix}[{index}].name"),
                format!("{n:?} is not a valid name (letters, digits, '-' and '_', at most 64)"),
            );
            format!("{prefix}[{index}]")
        }
        None => {
            errs.push(format!("{prefix}[{index}].name"), "required");
            format!("{prefix}[{index}]")
        }
    }
}

pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn fraction(v: Option<f64>, default: f64, path: String, errs: &mut ValidationErrors) -> f64 {
    let v = v.unwrap_or(default);
    if !(0.0..=1.0).contains(&v) {
        errs.push(path, format!("must be a fraction between 0 and 1, got {v}"));
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn validate_service(
    s: &raw::Service,
    path: &str,
    zone_regions: &HashMap<&str, &str>,
    region_names: &[String],
    taken_addrs: &mut HashMap<SocketAddr, String>,
    seen_hosts: &mut HashMap<(String, String), String>,
    errs: &mut ValidationErrors,
) -> Option<Service> {
    let before = errs.len();
    let name = s.name.clone().unwrap_or_default();
    // The lesson of the resolver outage: a missing floor is an error, never a default.
    let min_healthy = match s.min_healthy {
        None => {
            errs.push(
                format!("{path}.min_healthy"),
                "required: the fraction of instances per region that must stay in service (for example 0.5)",
            );
            0.0
        }
        Some(v) if v <= 0.0 => {
            errs.push(
                format!("{path}.min_healthy"),
                format!(
                    "must be above 0 (a floor of 0 lets every instance leave service), got {v}"
                ),
            );
            v
        }
        Some(v) => fraction(Some(v), 0.0, format!("{path}.min_healthy"), errs),
    };
    if s.hosts.is_empty() {
        errs.push(
            format!("{path}.hosts"),
            "at least one host name is required",
        );
    }
    let prefix = s.path_prefix.clone();
    if let Some(p) = &prefix {
        if !p.starts_with('/') {
            errs.push(
                format!("{path}.path_prefix"),
                format!("must start with '/', got {p:?}"),
            );
        }
    }
    for (i, h) in s.hosts.iter().enumerate() {
        let host = h.to_ascii_lowercase();
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            errs.push(
                format!("{path}.hosts[{i}]"),
                format!("not a host name: {h:?}"),
            );
            continue;
        }
        let key = (host, prefix.clone().unwrap_or_default());
        let here = format!("{path}.hosts[{i}]");
        if let Some(prev) = seen_hosts.insert(key, here.clone()) {
            errs.push(here, format!("duplicate host {h:?} (also at {prev})"));
        }
    }
    let region_preference = match &s.region_preference {
        None => region_names.to_vec(),
        Some(list) => {
            let mut seen = BTreeSet::new();
            for (i, r) in list.iter().enumerate() {
                if !region_names.contains(r) {
                    errs.push(
                        format!("{path}.region_preference[{i}]"),
                        format!("unknown region {r:?}"),
                    );
                }
                if !seen.insert(r) {
                    errs.push(
                        format!("{path}.region_preference[{i}]"),
                        format!("duplicate region {r:?}"),
                    );
                }
            }
            list.clone()
        }
    };
    let health_path = s.health_path.clone().unwrap_or_else(|| "/health".into());
    if !health_path.starts_with('/') {
        errs.push(
            format!("{path}.health_path"),
            format!("must start with '/', got {health_path:?}"),
        );
    }
    let retry_budget = fraction(s.retry_budget, 0.2, format!("{path}.retry_budget"), errs);
    let upstream_protocol = match s.upstream_protocol.as_deref() {
        None | Some("http1") => UpstreamProtocol::Http1,
        Some("h2c") => UpstreamProtocol::H2c,
        Some(other) => {
            errs.push(
                format!("{path}.upstream_protocol"),
                format!("must be \"http1\" or \"h2c\", got {other:?}"),
            );
            UpstreamProtocol::Http1
        }
    };
    let upstream_tls = s
        .upstream_tls
        .as_ref()
        .and_then(|t| validate_upstream_tls(t, &format!("{path}.upstream_tls"), errs));
    let timeouts = {
        let t = &s.timeouts;
        let connect = t.connect_ms.unwrap_or(DEFAULT_CONNECT_MS);
        let header = t.header_ms.unwrap_or(DEFAULT_HEADER_MS);
        let total = t.total_ms.unwrap_or(DEFAULT_TOTAL_MS);
        for (v, f) in [
            (connect, "connect_ms"),
            (header, "header_ms"),
            (total, "total_ms"),
        ] {
            if v == 0 {
                errs.push(format!("{path}.timeouts.{f}"), "must be greater than 0");
            }
        }
        if header > total {
            errs.push(
                format!("{path}.timeouts.header_ms"),
                format!("{header} is longer than total_ms {total}"),
            );
        }
        if connect > total {
            errs.push(
                format!("{path}.timeouts.connect_ms"),
                format!("{connect} is longer than total_ms {total}"),
            );
        }
        Timeouts {
            connect: Duration::from_millis(connect),
            header: Duration::from_millis(header),
            total: Duration::from_millis(total),
        }
    };
    let limits = {
        let l = &s.limits;
        let max_concurrency = l.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        let min_concurrency = l.min_concurrency.unwrap_or(max_concurrency.clamp(1, 16));
        if max_concurrency == 0 {
            errs.push(
                format!("{path}.limits.max_concurrency"),
                "must be greater than 0",
            );
        }
        if min_concurrency == 0 || min_concurrency > max_concurrency {
            errs.push(
                format!("{path}.limits.min_concurrency"),
                format!("must be between 1 and max_concurrency ({max_concurrency}), got {min_concurrency}"),
            );
        }
        if let Some(r) = l.max_rps {
            if !(r.is_finite() && r > 0.0) {
                errs.push(
                    format!("{path}.limits.max_rps"),
                    format!("must be greater than 0, got {r}"),
                );
            }
        }
        LimitSettings {
            max_concurrency,
            adaptive: l.adaptive.unwrap_or(false),
            min_concurrency,
            max_rps: l.max_rps,
        }
    };
    let ejection = {
        let e = &s.ejection;
        let d = EjectionSettings::default();
        let ms = |v: Option<u64>, def: Duration| v.map(Duration::from_millis).unwrap_or(def);
        let out = EjectionSettings {
            consecutive_5xx: e.consecutive_5xx.unwrap_or(d.consecutive_5xx),
            consecutive_connect_failures: e
                .consecutive_connect_failures
                .unwrap_or(d.consecutive_connect_failures),
            interval: ms(e.interval_ms, d.interval),
            base_ejection: ms(e.base_ejection_ms, d.base_ejection),
            max_ejection: ms(e.max_ejection_ms, d.max_ejection),
            max_ejection_percent: e.max_ejection_percent.unwrap_or(d.max_ejection_percent),
            success_rate_min_hosts: e.success_rate_min_hosts.unwrap_or(d.success_rate_min_hosts),
            success_rate_min_requests: e
                .success_rate_min_requests
                .unwrap_or(d.success_rate_min_requests),
            success_rate_stdev_factor: e
                .success_rate_stdev_factor
                .unwrap_or(d.success_rate_stdev_factor),
            latency_factor: e.latency_factor.unwrap_or(d.latency_factor),
            latency_min: ms(e.latency_min_ms, d.latency_min),
            latency_min_requests: e.latency_min_requests.unwrap_or(d.latency_min_requests),
        };
        let ep = format!("{path}.ejection");
        if !(0.0..=100.0).contains(&out.max_ejection_percent) {
            errs.push(
                format!("{ep}.max_ejection_percent"),
                format!(
                    "must be a percentage between 0 and 100, got {}",
                    out.max_ejection_percent
                ),
            );
        }
        if out.interval.is_zero() {
            errs.push(format!("{ep}.interval_ms"), "must be greater than 0");
        }
        if out.base_ejection > out.max_ejection {
            errs.push(
                format!("{ep}.base_ejection_ms"),
                "must not be longer than max_ejection_ms",
            );
        }
        if out.latency_factor < 1.0 {
            errs.push(
                format!("{ep}.latency_factor"),
                format!("must be at least 1, got {}", out.latency_factor),
            );
        }
        if out.success_rate_stdev_factor <= 0.0 {
            errs.push(
                format!("{ep}.success_rate_stdev_factor"),
                "must be greater than 0",
            );
        }
        out
    };
    let health_check = {
        let h = &s.health_check;
        let d = HealthCheckSettings::default();
        let ms = |v: Option<u64>, def: Duration| v.map(Duration::from_millis).unwrap_or(def);
        let out = HealthCheckSettings {
            enabled: h.enabled.unwrap_or(d.enabled),
            interval: ms(h.interval_ms, d.interval),
            timeout: ms(h.timeout_ms, d.timeout),
            unhealthy_threshold: h.unhealthy_threshold.unwrap_or(d.unhealthy_threshold),
            healthy_threshold: h.healthy_threshold.unwrap_or(d.healthy_threshold),
            grpc_service: h.grpc_service.clone(),
        };
        let hp = format!("{path}.health_check");
        if out.interval.is_zero() {
            errs.push(
                format!("{hp}.interval_ms"),
                "must be greater than 0 (to turn checks off, set enabled = false)",
            );
        }
        if out.timeout.is_zero() {
            errs.push(format!("{hp}.timeout_ms"), "must be greater than 0");
        }
        if out.unhealthy_threshold == 0 {
            errs.push(format!("{hp}.unhealthy_threshold"), "must be at least 1");
        }
        if out.healthy_threshold == 0 {
            errs.push(format!("{hp}.healthy_threshold"), "must be at least 1");
        }
        if let Some(g) = &out.grpc_service {
            if upstream_protocol != UpstreamProtocol::H2c {
                errs.push(
                    format!("{hp}.grpc_service"),
                    format!(
                        "a gRPC health check ({g:?}) needs upstream_protocol = \"h2c\": gRPC runs over HTTP/2"
                    ),
                );
            }
            if g.len() > 256 || g.chars().any(|c| c.is_control() || c.is_whitespace()) {
                errs.push(
                    format!("{hp}.grpc_service"),
                    format!("{g:?} is not a gRPC service name (no spaces or control characters, at most 256 bytes)"),
                );
            }
        }
        out
    };
    let mut routes = Vec::new();
    let mut route_names = BTreeSet::new();
    for (i, r) in s.routes.iter().enumerate() {
        let rp = item_path(&format!("{path}.route"), i, &r.name, errs);
        if let Some(n) = &r.name {
            if n == "default" {
                errs.push(
                    format!("{rp}.name"),
                    "\"default\" is reserved for unmatched requests",
                );
            }
            if !route_names.insert(n.clone()) {
                errs.push(format!("{rp}.name"), format!("duplicate route name {n:?}"));
            }
        }
        let prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
        if !prefix.starts_with('/') {
            errs.push(
                format!("{rp}.path_prefix"),
                format!("must start with '/', got {prefix:?}"),
            );
        }
        let mut methods = Vec::new();
        for (mi, m) in r.methods.iter().enumerate() {
            let up = m.to_ascii_uppercase();
            if !HTTP_METHODS.contains(&up.as_str()) {
                errs.push(
                    format!("{rp}.methods[{mi}]"),
                    format!("unknown HTTP method {m:?}"),
                );
            }
            methods.push(up);
        }
        if r.kind.is_none() {
            errs.push(format!("{rp}.kind"), "required: \"read\" or \"write\"");
        }
        if let Some(h) = &r.heartbeat_path {
            if !h.starts_with('/') {
                errs.push(
                    format!("{rp}.heartbeat_path"),
                    format!("must start with '/', got {h:?}"),
                );
            }
        }
        if r.timeout_ms == Some(0) {
            errs.push(format!("{rp}.timeout_ms"), "must be greater than 0");
        }
        let timeout = r.timeout_ms.filter(|t| *t > 0).map(Duration::from_millis);
        if let (Some(name), Some(kind)) = (&r.name, r.kind) {
            routes.push(Route {
                name: name.clone(),
                path_prefix: prefix,
                methods,
                kind,
                priority: r.priority.unwrap_or(Priority::Normal),
                heartbeat_path: r.heartbeat_path.clone(),
                timeout,
                timeouts: timeouts.for_route(timeout),
            });
        }
    }
    let mut instances = Vec::new();
    let mut inst_names = BTreeSet::new();
    if s.instances.is_empty() {
        errs.push(
            format!("{path}.instance"),
            "at least one [[service.instance]] is required",
        );
    }
    for (i, inst) in s.instances.iter().enumerate() {
        let ip = item_path(&format!("{path}.instance"), i, &inst.name, errs);
        if let Some(n) = &inst.name {
            if !inst_names.insert(n.clone()) {
                errs.push(
                    format!("{ip}.name"),
                    format!("duplicate instance name {n:?}"),
                );
            }
        }
        let region = match &inst.zone {
            None => {
                errs.push(format!("{ip}.zone"), "required");
                None
            }
            Some(z) => match zone_regions.get(z.as_str()) {
                Some(r) => Some(r.to_string()),
                None => {
                    errs.push(format!("{ip}.zone"), format!("unknown zone {z:?}"));
                    None
                }
            },
        };
        let addr = parse_addr(&inst.addr, &format!("{ip}.addr"), errs);
        if let Some(a) = addr {
            let p = format!("{ip}.addr");
            if let Some(prev) = taken_addrs.insert(a, p.clone()) {
                errs.push(p, format!("duplicate address {a} (also at {prev})"));
            }
        }
        if let (Some(name), Some(zone), Some(region), Some(addr)) =
            (&inst.name, &inst.zone, region, addr)
        {
            instances.push(Instance {
                name: name.clone(),
                zone: zone.clone(),
                region,
                addr,
            });
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(Service {
        name,
        hosts: s.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        path_prefix: prefix,
        min_healthy,
        region_preference,
        health_path,
        retry_budget,
        retry_min_concurrency: s.retry_min_concurrency.unwrap_or(3),
        upstream_protocol,
        upstream_tls,
        timeouts,
        limits,
        ejection,
        health_check,
        routes,
        instances,
        default_routes: [
            default_route(RouteKind::Read, timeouts),
            default_route(RouteKind::Write, timeouts),
        ],
    })
}

fn default_route(kind: RouteKind, timeouts: Timeouts) -> Route {
    Route {
        name: "default".into(),
        path_prefix: "/".into(),
        methods: vec![],
        kind,
        priority: Priority::Normal,
        heartbeat_path: None,
        timeout: None,
        timeouts,
    }
}

fn services_names(raw: &[raw::Service]) -> Vec<String> {
    raw.iter().filter_map(|s| s.name.clone()).collect()
}

fn validate_control(
    c: &raw::Control,
    services: &[String],
    env: &impl Fn(&str) -> Option<String>,
    errs: &mut ValidationErrors,
) -> Option<ControlSettings> {
    let before = errs.len();
    let listen = parse_addr(&c.listen, "control.listen", errs);
    let store = match c.store.as_deref() {
        None => {
            errs.push(
                "control.store",
                "required: sqlite:PATH or etcd:http(s)://HOST:PORT[,…]",
            );
            None
        }
        Some(s) if s.starts_with("sqlite:") && s.len() > 7 => {
            Some(StoreSpec::Sqlite(s[7..].to_string()))
        }
        Some(s) if s.starts_with("etcd:") => {
            let eps: Vec<String> = s[5..]
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            if eps.is_empty()
                || eps
                    .iter()
                    .any(|e| !(e.starts_with("http://") || e.starts_with("https://")))
            {
                errs.push(
                    "control.store",
                    format!("etcd endpoints must be http:// or https:// URLs, got {s:?}"),
                );
            } else if c.etcd_tls.is_some() && eps.iter().any(|e| e.starts_with("http://")) {
                errs.push(
                    "control.etcd_tls",
                    format!("set, but the etcd endpoints are not all https:// URLs: {s:?}"),
                );
            }
            Some(StoreSpec::Etcd(eps))
        }
        Some(s) => {
            errs.push(
                "control.store",
                format!("must be sqlite:PATH or etcd:http(s)://HOST:PORT, got {s:?}"),
            );
            None
        }
    };
    let mut tokens = Vec::new();
    let mut names = BTreeSet::new();
    for (i, t) in c.tokens.iter().enumerate() {
        let p = item_path("control.token", i, &t.name, errs);
        if let Some(n) = &t.name {
            if !names.insert(n.clone()) {
                errs.push(format!("{p}.name"), format!("duplicate token name {n:?}"));
            }
        }
        let scope = match t.scope.as_deref() {
            Some("read") => Some(Scope::Read),
            Some("operate") => Some(Scope::Operate),
            Some("admin") => Some(Scope::Admin),
            Some(x) => {
                errs.push(
                    format!("{p}.scope"),
                    format!("must be read, operate or admin, got {x:?}"),
                );
                None
            }
            None => {
                errs.push(format!("{p}.scope"), "required: read, operate or admin");
                None
            }
        };
        let secret = match (&t.token, &t.token_env) {
            (Some(_), Some(_)) => {
                errs.push(
                    format!("{p}.token"),
                    "set either token or token_env, not both",
                );
                None
            }
            (Some(x), None) if x.len() >= 8 => Some(x.clone()),
            (Some(_), None) => {
                errs.push(format!("{p}.token"), "must be at least 8 characters");
                None
            }
            (None, Some(v)) => match env(v) {
                Some(x) if x.len() >= 8 => Some(x),
                _ => {
                    errs.push(
                        format!("{p}.token_env"),
                        format!(
                            "the variable {v:?} is not set to a token of at least 8 characters"
                        ),
                    );
                    None
                }
            },
            (None, None) => {
                errs.push(format!("{p}.token"), "required: token or token_env");
                None
            }
        };
        if let (Some(n), Some(sc), Some(sec)) = (&t.name, scope, secret) {
            tokens.push((n.clone(), sc, sec));
        }
    }
    let mut playbooks = BTreeMap::new();
    for (svc, mode) in &c.playbooks {
        if !services.contains(svc) {
            errs.push(
                format!("control.playbooks.{svc}"),
                format!("unknown service {svc:?}"),
            );
        }
        let m = match mode.as_str() {
            "auto" => PlaybookMode::Auto,
            "recommend" => PlaybookMode::Recommend,
            "off" => PlaybookMode::Off,
            x => {
                errs.push(
                    format!("control.playbooks.{svc}"),
                    format!("must be auto, recommend or off, got {x:?}"),
                );
                continue;
            }
        };
        playbooks.insert(svc.clone(), m);
    }
    if errs.len() > before {
        return None;
    }
    Some(ControlSettings {
        listen: listen?,
        store: store?,
        tokens,
        playbooks,
        tables: c.tables(),
    })
}

/// A short, stable summary used by `validate` and logs.
pub fn summary(c: &Config) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    m.insert("regions", c.regions.len());
    m.insert("zones", c.zones().count());
    m.insert("services", c.services.len());
    m.insert(
        "instances",
        c.services.iter().map(|s| s.instances.len()).sum(),
    );
    if let Some(d) = &c.dns {
        m.insert("dns servers", d.servers.len());
        m.insert("dns zones", d.zones.len());
    }
    m
}
