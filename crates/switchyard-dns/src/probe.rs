//! The server's own view of each edge: `GET /health` on the zone's admin
//! address every `dns.probe_interval_ms`. `dns.probe_failures` failures in a
//! row take an edge out of the answers, `dns.probe_successes` successes in a
//! row put it back. The view is rebuilt on every round too, so a zonal
//! shift whose lease ran out returns its edge without anyone lifting it,
//! and a region coming back after the probes saw it down gets a little
//! more of its share each round (`dns.return_ramp_s`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::Dns;

/// Whether `admin` answers `GET /health` with a 2xx within `timeout`.
pub async fn probe(admin: SocketAddr, timeout: Duration) -> bool {
    let once = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        s.write_all(
            format!("GET /health HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        // "HTTP/1.1 200"
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.") && head[9] == b'2')
    };
    matches!(tokio::time::timeout(timeout, once).await, Ok(Ok(true)))
}

/// Probes every zone's edge each round, with the settings of the config in
/// force (a reload may change them), then rebuilds the view.
pub async fn run(dns: Arc<Dns>) {
    loop {
        let config = dns.config();
        let Some(settings) = config.dns.as_ref() else {
            return;
        };
        if settings.probe_interval.is_zero() {
            // No probes: still rebuild, for shift leases.
            tokio::time::sleep(Duration::from_secs(1)).await;
            dns.rebuild();
            continue;
        }
        let started = tokio::time::Instant::now();
        let timeout = settings.probe_timeout;
        let results = futures_join(
            config
                .zones()
                .map(|z| {
                    let (name, admin) = (z.name.clone(), z.admin);
                    async move { (name, probe(admin, timeout).await) }
                })
                .collect(),
        )
        .await;
        for (z, ok) in results {
            dns.probed(&z, ok, settings.probe_failures, settings.probe_successes);
        }
        dns.rebuild();
        tokio::time::sleep_until(started + settings.probe_interval).await;
    }
}

/// Runs the probes side by side, so one slow edge costs one timeout per
/// round, not one per edge.
async fn futures_join<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}
