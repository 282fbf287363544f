//! Following the edges' signal streams (`GET /signals` on each edge's admin
//! listener, one JSON snapshot per line). The control plane feeds detection
//! with them; drills record them as traces.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use switchyard_model::signals::Snapshot;
use tokio::sync::mpsc::UnboundedSender;

/// Forwards every snapshot of one edge until the receiver is gone,
/// reconnecting whenever the edge goes away and comes back.
pub async fn follow(admin: SocketAddr, tx: UnboundedSender<Snapshot>) {
    // Plain HTTP to the edge's admin listener, but reqwest has no crypto
    // provider of its own and wants a TLS config even so.
    let tls = crate::tls::client_config(&[], None).expect("the shipped roots make a TLS config");
    let http = crate::tls::reqwest_builder(tls)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client with a preconfigured TLS config builds");
    let url = format!("http://{admin}/signals");
    loop {
        if tx.is_closed() {
            return;
        }
        let Ok(resp) = http.get(&url).send().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(snap) = serde_json::from_slice::<Snapshot>(&line) {
                    if tx.send(snap).is_err() {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
