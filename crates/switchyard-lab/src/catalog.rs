//! `catalog`, the lab's demo service: one process per instance. Reads and
//! writes go to its region's store over a link, one connection per request,
//! so a degraded link hurts exactly the share of requests it should. `/health`
//! is shallow and stays green whatever the store does — the gray failure the
//! lab exists to show — while `/heartbeat/{route}` exercises the route's real
//! path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{call, json, read_body, serve, CallError, Resp};

pub struct Catalog {
    pub name: String,
    pub zone: String,
    pub store: SocketAddr,
    pub store_timeout: Duration,
}

impl Catalog {
    fn store_failed(&self, e: CallError) -> Resp {
        let status = match e {
            CallError::Timeout(..) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        json(
            status,
            &json!({"error": "store_unavailable", "reason": e.to_string(), "instance": self.name}),
        )
    }

    async fn read(&self, key: &str) -> Resp {
        match call(
            self.store,
            Method::GET,
            &format!("/kv/{key}"),
            Bytes::new(),
            self.store_timeout,
        )
        .await
        {
            Ok((StatusCode::OK, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                json(
                    StatusCode::OK,
                    &json!({"key": key, "value": v["value"], "version": v["version"], "instance": self.name, "zone": self.zone}),
                )
            }
            Ok((StatusCode::NOT_FOUND, _)) => json(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "key": key, "instance": self.name}),
            ),
            Ok((s, _)) => json(
                StatusCode::BAD_GATEWAY,
                &json!({"error": "store_error", "status": s.as_u16(), "instance": self.name}),
            ),
            Err(e) => self.store_failed(e),
        }
    }

    async fn write(&self, key: &str, value: Bytes) -> Resp {
        match call(
            self.store,
            Method::PUT,
            &format!("/kv/{key}"),
            value,
            self.store_timeout,
        )
        .await
        {
            Ok((s, body)) if s.is_success() => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                json(
                    StatusCode::OK,
                    &json!({"key": key, "version": v["version"], "instance": self.name, "zone": self.zone}),
                )
            }
            Ok((s, _)) => json(
                StatusCode::BAD_GATEWAY,
                &json!({"error": "store_error", "status": s.as_u16(), "instance": self.name}),
            ),
            Err(e) => self.store_failed(e),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::GET, "/health") => json(
                StatusCode::OK,
                &json!({"status": "ok", "instance": self.name}),
            ),
            (Method::GET, "/heartbeat/get-item") => {
                let r = self.read(&format!("heartbeat:{}", self.name)).await;
                // Not found still proves the read path works.
                if r.status() == StatusCode::NOT_FOUND {
                    json(
                        StatusCode::OK,
                        &json!({"route": "get-item", "instance": self.name}),
                    )
                } else {
                    r
                }
            }
            (Method::GET, "/heartbeat/put-item") => {
                self.write(
                    &format!("heartbeat:{}", self.name),
                    Bytes::from_static(b"beat"),
                )
                .await
            }
            (Method::GET | Method::HEAD, p) if p.starts_with("/items/") => {
                self.read(&format!("item:{}", &p[7..])).await
            }
            (Method::PUT | Method::POST, p) if p.starts_with("/items/") => {
                let key = format!("item:{}", &p[7..]);
                match read_body(req, 64 * 1024).await {
                    Ok(b) => self.write(&key, b).await,
                    Err(e) => json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "bad_body", "reason": e}),
                    ),
                }
            }
            (_, p) => json(
                StatusCode::NOT_FOUND,
                &json!({"error": "not_found", "path": p}),
            ),
        }
    }
}

pub async fn run(listen: SocketAddr, catalog: Catalog) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, name = %catalog.name, store = %catalog.store, "catalog instance serving");
    let c = Arc::new(catalog);
    serve(l, move |req| c.clone().handle(req)).await;
    Ok(())
}
