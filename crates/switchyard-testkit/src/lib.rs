//! Test support: start upstreams, edges and a stand-in control-plane stream on
//! loopback addresses, talk HTTP to them, and wait for things to become true.
//! Each integration test should read as a short story built from these.
#![forbid(unsafe_code)]

pub mod bench;
pub mod bind;
pub mod browser;
pub mod client;
pub mod control;
pub mod dns;
pub mod edge;
pub mod etcd;
pub mod eventually;
pub mod grpc;
pub mod process;
pub mod receiver;
pub mod sse;
pub mod tls;
pub mod topology;
pub mod upstream;
pub mod websocket;

pub use bench::BackendProcess;
pub use bind::{Bind, BindKey};
pub use browser::Browser;
pub use client::{send, Reply, Req, Sent, Traffic};
pub use control::ControlProcess;
pub use dns::DnsProcess;
pub use edge::EdgeProcess;
pub use etcd::Etcd;
pub use eventually::eventually;
pub use receiver::Receiver;
pub use sse::WatchServer;
pub use tls::{HttpsConn, HttpsReply, ServerCert, TestCa, TlsClient};
pub use topology::Topology;
pub use upstream::Upstream;

/// The value of one series (`name{labels}`, exactly as the exposition
/// writes it) in Prometheus text from `/metrics`; 0 when absent, as an
/// untouched counter is.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The admin token every test topology uses.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The forward secret the test edges share (`edge.forward_secret`).
pub const FORWARD_SECRET: &str = "test-forward-secret-0123";

/// The `Host` of the one service every test topology configures.
pub const HOST: &str = "svc.test";
