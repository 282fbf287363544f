//! The lab's own admin API, on `127.0.0.2:7700` by default: see and change
//! links while the lab runs (`switchyard lab link` talks to it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{json, read_body, serve};
use crate::link::{Link, LinkSettings};

pub const DEFAULT_ADDR: &str = "127.0.0.2:7700";

pub async fn serve_admin(
    addr: SocketAddr,
    links: Arc<BTreeMap<String, Link>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("lab admin: cannot listen on {addr}: {e}"))?;
    Ok(tokio::spawn(serve(l, move |req| {
        let links = links.clone();
        async move {
            let path = req.uri().path().to_string();
            match (req.method().clone(), path.strip_prefix("/links")) {
                (Method::GET, Some("" | "/")) => json(
                    StatusCode::OK,
                    &serde_json::to_value(links.values().map(|l| l.view()).collect::<Vec<_>>())
                        .expect("serializable"),
                ),
                (Method::PUT, Some(name)) if name.len() > 1 => {
                    let decoded = name[1..].replace("%3E", ">").replace("%3e", ">");
                    let name = decoded.as_str();
                    let Some(link) = links.get(name) else {
                        return json(
                            StatusCode::NOT_FOUND,
                            &json!({"error": "unknown_link", "reason": format!("no link {name:?}"), "links": links.keys().collect::<Vec<_>>()}),
                        );
                    };
                    let body = match read_body(req, 64 * 1024).await {
                        Ok(b) => b,
                        Err(e) => {
                            return json(
                                StatusCode::BAD_REQUEST,
                                &json!({"error": "bad_body", "reason": e}),
                            )
                        }
                    };
                    let s: LinkSettings = match serde_json::from_slice(&body) {
                        Ok(s) => s,
                        Err(e) => {
                            return json(
                                StatusCode::BAD_REQUEST,
                                &json!({"error": "invalid_settings", "reason": e.to_string()}),
                            )
                        }
                    };
                    match link.set(s) {
                        Ok(()) => json(
                            StatusCode::OK,
                            &serde_json::to_value(link.view()).expect("serializable"),
                        ),
                        Err(e) => json(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": "invalid_settings", "reason": e}),
                        ),
                    }
                }
                _ => json(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "not_found", "reason": format!("no lab endpoint {path}")}),
                ),
            }
        }
    })))
}
