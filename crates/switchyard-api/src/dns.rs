//! The DNS server's admin API (`GET /status` on each `switchyard dns`
//! admin listener) as types: the server writes them, the lab, the tests and
//! a provider push read them. Where its controls came from, the edges it
//! sees alive, and per service what each client region is answered.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsStatus {
    pub server: String,
    /// `control-plane`, `last-known-good` or `default`.
    pub source: String,
    /// The controls' version (the revision the answers come from).
    pub version: u64,
    /// The zones' SOA serial.
    pub serial: u32,
    pub control_plane_connected: bool,
    /// Why the last-known-good file could not be used at start, if it could not.
    pub last_known_good_error: Option<String>,
    /// The config running (absent from servers that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::configs::RunningConfig>,
    /// Per zone: whether the server's probes see its edge alive.
    pub edges: BTreeMap<String, bool>,
    /// Per region the probes saw down (no edge alive) that has an edge
    /// alive again and is getting its clients back (`dns.return_ramp_s`);
    /// a region leaves it once back in full.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub returning: BTreeMap<String, Returning>,
    pub services: Vec<ServiceAnswers>,
    /// Per outside zone this server pushes to (`[[dns.push]]`), the last
    /// push; empty on a server that does not push.
    #[serde(default)]
    pub pushes: Vec<PushState>,
}

/// A region getting its clients back after the probes saw it down.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Returning {
    /// When the first edge of the region counted alive again.
    pub since_ms: u64,
    /// The part of its weight steering gives it now, in [0, 1): it rises
    /// with each rebuild of the answers until the ramp is over.
    pub fraction: f64,
}

/// The last push to one outside zone, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushState {
    /// Absolute (`example.com.`).
    pub zone: String,
    /// `rfc2136 192.0.2.53:53 key switchyard.`
    pub provider: String,
    /// `unchanged`, `sent` or `failed`; `pending` before the first push ends.
    pub result: String,
    pub at_ms: u64,
    /// RRsets sent by the push (or planned, when it failed).
    pub changes: usize,
    /// Why it failed, with the provider's code (`NOTAUTH/BADKEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `rejected`, `unreachable`, … when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The last push that sent changes, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent_at_ms: Option<u64>,
}

/// `POST /v1/events/dns-push`: a DNS server tells the control plane that
/// a push to an outside zone sent changes or failed, for its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsPushEvent {
    /// The `[[dns.server]]` that pushed.
    pub server: String,
    pub zone: String,
    pub provider: String,
    /// True when the changes were accepted (or nothing needed sending).
    pub ok: bool,
    /// RRsets sent (or planned, when the push failed).
    pub changes: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The push's whole summary (each RRset's from and to, the stage that
    /// failed): kept as the audit entry's detail.
    #[serde(default)]
    pub summary: serde_json::Value,
}

impl DnsStatus {
    pub fn service(&self, name: &str) -> Option<&ServiceAnswers> {
        self.services.iter().find(|s| s.service == name)
    }
}

/// What one service's name is answered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAnswers {
    pub service: String,
    /// The TTL of the name's record sets.
    pub ttl: u32,
    /// Per client region (by the geo map), the regions answered and their shares.
    pub by_region: BTreeMap<String, Vec<Choice>>,
    /// For clients no prefix places.
    pub default: Vec<Choice>,
}

impl ServiceAnswers {
    /// The answers for a client of `region` (`None`: no prefix placed it).
    pub fn for_region(&self, region: Option<&str>) -> &[Choice] {
        region
            .and_then(|r| self.by_region.get(r))
            .unwrap_or(&self.default)
    }
}

/// One region's part of the answers for one client region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub region: String,
    /// Share of the answers, in (0, 1]; a list's shares add up to 1.
    pub weight: f64,
    /// Why the region takes its share: `local`, `home`, `evacuation` or
    /// `fail_open` (as steering says it).
    pub reason: String,
    /// The edges handed out: those alive and not shifted away, or every edge
    /// of the region when none is (`fail_open`).
    pub addrs: Vec<IpAddr>,
    /// No edge of the region was usable, so all of them are answered.
    pub fail_open: bool,
}

/// Reads one DNS server's `/status` once a second and forwards the config
/// it runs (`dns:NAME`, what it reports) until the receiver is gone: DNS
/// servers send no signals, so this is how the control plane learns which
/// config each runs, for a rollout's DNS wave. A server that does not
/// answer is simply not reported (a rollout waiting on it times out).
pub async fn follow_config(
    name: String,
    admin: std::net::SocketAddr,
    tx: tokio::sync::mpsc::UnboundedSender<(String, crate::configs::RunningConfig)>,
) {
    let tls = crate::tls::client_config(&[], None).expect("the shipped roots make a TLS config");
    let http = crate::tls::reqwest_builder(tls)
        .connect_timeout(std::time::Duration::from_secs(1))
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .expect("an HTTP client with a preconfigured TLS config builds");
    let url = format!("http://{admin}/status");
    let member = format!("dns:{name}");
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        let status = match http.get(&url).send().await {
            Ok(r) => r.json::<DnsStatus>().await.ok(),
            Err(_) => None,
        };
        if let Some(running) = status.and_then(|s| s.config) {
            if tx.send((member.clone(), running)).is_err() {
                return;
            }
        }
    }
}
