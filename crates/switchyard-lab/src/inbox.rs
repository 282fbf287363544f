//! The lab's notification inbox: a real HTTP receiver on `127.0.0.3:7800`
//! that the lab's control plane notifies (a JSON webhook at `/webhook`, a
//! Slack-compatible one at `/slack`), so drills can report what people were
//! told and when. `GET /received` lists what arrived.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{json, read_body, serve};

pub const ADDR: &str = "127.0.0.3:7800";

#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub at_ms: u64,
    /// `webhook` or `slack`.
    pub receiver: String,
    pub body: serde_json::Value,
}

#[derive(Clone, Default)]
pub struct Inbox {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Inbox {
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Listens on `addr`, in a task of `tasks`.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<()> {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("notification inbox: cannot listen on {addr}: {e}"))?;
        let got = self.got.clone();
        tasks.spawn(serve(l, move |req| {
            let got = got.clone();
            async move {
                let path = req.uri().path().to_string();
                match (req.method().clone(), path.as_str()) {
                    (Method::GET, "/received") => json(
                        StatusCode::OK,
                        &serde_json::to_value(&*got.lock().unwrap_or_else(|e| e.into_inner()))
                            .expect("serializable"),
                    ),
                    (Method::POST, "/webhook" | "/slack") => match read_body(req, 1 << 20).await {
                        Ok(b) => {
                            let body = serde_json::from_slice(&b)
                                .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&b)}));
                            got.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Received {
                                    at_ms: switchyard_model::time::now_ms(),
                                    receiver: path[1..].to_string(),
                                    body,
                                });
                            json(StatusCode::OK, &json!({"ok": true}))
                        }
                        Err(e) => json(StatusCode::BAD_REQUEST, &json!({"error": e})),
                    },
                    _ => json(
                        StatusCode::NOT_FOUND,
                        &json!({"error": "not_found", "path": path}),
                    ),
                }
            }
        }));
        Ok(())
    }
}
