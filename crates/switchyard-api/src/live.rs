//! `GET /v1/live`: what the console's overview shows, as one document the
//! control plane sends over server-sent events (`event: live`) once a
//! second and at once after a change of the controls. It joins what the
//! plane decides (the controls, as [`StatusView`]) with what it observes
//! (per-zone traffic from the edges' signals, the edges it hears from,
//! findings and mitigations), so a screen never mixes two moments.

use serde::{Deserialize, Serialize};
use switchyard_model::finding::{Finding, Mitigation};

use crate::types::{LeaderView, StatusView};

/// One frame of the live view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveView {
    /// When the plane made this frame (ms since the epoch).
    pub at_ms: u64,
    /// The controls in force, per service, region and zone.
    pub status: StatusView,
    /// Per service and zone served: the traffic of the last seconds.
    pub traffic: Vec<ZoneTraffic>,
    /// Every configured edge, heard from or not.
    pub edges: Vec<EdgeSeen>,
    /// Findings open now.
    pub findings: Vec<Finding>,
    /// Mitigations the playbooks hold now.
    pub mitigations: Vec<Mitigation>,
    /// The plane that serves this stream, and which plane leads.
    pub plane: LeaderView,
}

/// The requests one zone served for one service, as the edges saw them
/// (the zone an instance is in, wherever the request entered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneTraffic {
    pub service: String,
    pub region: String,
    pub zone: String,
    /// Over the last [`RECENT_SECONDS`] complete seconds; `None` when no
    /// request was served there then: unknown, not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<TrafficPoint>,
    /// One point per second, oldest first, for sparklines (at most
    /// [`SPARK_SECONDS`]); seconds without requests are left out.
    pub points: Vec<TrafficPoint>,
}

/// How many complete seconds [`ZoneTraffic::recent`] sums.
pub const RECENT_SECONDS: u64 = 3;
/// How many seconds of points a frame carries.
pub const SPARK_SECONDS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficPoint {
    /// Start of the second (ms since the epoch); for `recent`, the start of
    /// its first second.
    pub at_ms: u64,
    pub requests: u64,
    /// Requests that failed because of the target (the error classes that
    /// count against it), so a client's bad request is not the zone's.
    pub failures: u64,
    pub rps: f64,
    pub error_ratio: f64,
    /// The worst p99 among the edges' series served there (a p99 cannot be
    /// merged from parts; the worst one is what some users saw).
    pub p99_ms: f64,
}

/// An edge as the plane hears it through its signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSeen {
    pub zone: String,
    pub region: String,
    pub health: EdgeHealth,
    /// Age of its last signal, when one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_signal_ms_ago: Option<u64>,
    /// The config version it reported running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// A config it refused, with why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_refused: Option<String>,
}

/// Heard from within [`EDGE_STALE_MS`]: `up`; heard from before, not since:
/// `silent`; never heard from since this plane started: `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeHealth {
    Up,
    Silent,
    Unknown,
}

/// An edge sends a signal every second; three missed ones make it silent.
pub const EDGE_STALE_MS: u64 = 3_000;
