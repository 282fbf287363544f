//! Following the edges' signal streams (`GET /signals` on each edge's admin
//! listener, one JSON snapshot per line). Used by the control plane to feed
//! detection, and by drills.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use switchyard_model::signals::Snapshot;
use tokio::sync::mpsc::UnboundedSender;

/// Forwards every snapshot of one edge until the receiver is gone,
/// reconnecting whenever the edge goes away and comes back.
pub async fn follow(admin: SocketAddr, tx: UnboundedSender<Snapshot>) {
    loop {
        if tx.is_closed() {
            return;
        }
        let Ok(stream) = tokio::net::TcpStream::connect(admin).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Empty<bytes::Bytes>,
        >(hyper_util::rt::TokioIo::new(stream))
        .await
        else {
            continue;
        };
        tokio::spawn(conn);
        let req = http::Request::get("/signals")
            .header("host", admin.to_string())
            .body(http_body_util::Empty::new())
            .expect("valid request");
        let Ok(resp) = send.send_request(req).await else {
            continue;
        };
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Some(d) = frame.data_ref() else { continue };
            buf.extend_from_slice(d);
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
