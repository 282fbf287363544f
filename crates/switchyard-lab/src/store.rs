//! The demo service's regional store: an in-memory key-value store that
//! replicates every write asynchronously to the other region's store over a
//! link. Replication lag is real: cut the link and the queue grows, restore it
//! and the queue drains; concurrent writes resolve last-writer-wins.
//!
//! `POST /admin/writes {"reject": true}` makes the store turn client writes
//! away (503) while reads keep working — a primary that lost its disk or its
//! quorum while replicas still serve reads: the write path fails, the read
//! path does not.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{call, json, read_body, serve, Resp};

/// What a store says of its replication to the other region
/// (`GET /replication`): drills watch the queue grow during a cut and drain.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Replication {
    pub region: String,
    pub queue_len: u64,
    pub lag_ms: u64,
    pub replicated_total: u64,
    pub received_total: u64,
    pub last_error: Option<String>,
    pub rejecting_writes: bool,
    pub writes_rejected_total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Write {
    pub key: String,
    pub value: String,
    /// Unix microseconds of the write; the larger one wins.
    pub version: u64,
    pub origin: String,
}

struct Queued {
    write: Write,
    at: Instant,
}

pub struct Store {
    region: String,
    data: Mutex<HashMap<String, Write>>,
    queue: Mutex<VecDeque<Queued>>,
    replicated: AtomicU64,
    received: AtomicU64,
    last_error: Mutex<Option<String>>,
    reject_writes: std::sync::atomic::AtomicBool,
    writes_rejected: AtomicU64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Store {
    pub fn new(region: &str) -> Arc<Store> {
        Arc::new(Store {
            region: region.into(),
            data: Mutex::new(HashMap::new()),
            queue: Mutex::new(VecDeque::new()),
            replicated: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_error: Mutex::new(None),
            reject_writes: std::sync::atomic::AtomicBool::new(false),
            writes_rejected: AtomicU64::new(0),
        })
    }

    fn apply(&self, w: Write) -> bool {
        let mut d = self.data.lock().expect("store lock");
        match d.get(&w.key) {
            Some(cur) if cur.version >= w.version => false,
            _ => {
                d.insert(w.key.clone(), w);
                true
            }
        }
    }

    fn put(&self, key: &str, value: String) -> Write {
        let w = Write {
            key: key.into(),
            value,
            version: now_us(),
            origin: self.region.clone(),
        };
        self.apply(w.clone());
        self.queue.lock().expect("queue lock").push_back(Queued {
            write: w.clone(),
            at: Instant::now(),
        });
        w
    }

    pub fn replication(&self) -> Replication {
        let q = self.queue.lock().expect("queue lock");
        Replication {
            region: self.region.clone(),
            queue_len: q.len() as u64,
            lag_ms: q
                .front()
                .map(|x| x.at.elapsed().as_millis() as u64)
                .unwrap_or(0),
            replicated_total: self.replicated.load(Ordering::Relaxed),
            received_total: self.received.load(Ordering::Relaxed),
            last_error: self.last_error.lock().expect("error lock").clone(),
            rejecting_writes: self.reject_writes.load(Ordering::Relaxed),
            writes_rejected_total: self.writes_rejected.load(Ordering::Relaxed),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if path == "/health" {
            return json(StatusCode::OK, &json!({"status": "ok"}));
        }
        if path == "/replication" {
            return json(
                StatusCode::OK,
                &serde_json::to_value(self.replication()).expect("serializable"),
            );
        }
        if path == "/admin/writes" && method == Method::POST {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct WritesKnob {
                reject: bool,
            }
            let knob = match read_body(req, 4096)
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<WritesKnob>(&b).map_err(|e| e.to_string()))
            {
                Ok(k) => k,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "bad_body", "reason": e}),
                    )
                }
            };
            self.reject_writes.store(knob.reject, Ordering::Relaxed);
            tracing::warn!(region = %self.region, reject = knob.reject, "store writes knob");
            return json(StatusCode::OK, &json!({"rejecting_writes": knob.reject}));
        }
        if let Some(key) = path.strip_prefix("/kv/") {
            let key = key.to_string();
            return match method {
                Method::GET => match self.data.lock().expect("store lock").get(&key) {
                    Some(w) => json(
                        StatusCode::OK,
                        &serde_json::to_value(w).expect("serializable"),
                    ),
                    None => json(
                        StatusCode::NOT_FOUND,
                        &json!({"error": "not_found", "key": key}),
                    ),
                },
                Method::PUT if self.reject_writes.load(Ordering::Relaxed) => {
                    self.writes_rejected.fetch_add(1, Ordering::Relaxed);
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"error": "writes_unavailable", "region": self.region}),
                    )
                }
                Method::PUT => match read_body(req, 64 * 1024).await {
                    Ok(b) => {
                        let w = self.put(&key, String::from_utf8_lossy(&b).into_owned());
                        json(StatusCode::OK, &json!({"key": key, "version": w.version}))
                    }
                    Err(e) => json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "bad_body", "reason": e}),
                    ),
                },
                _ => json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({"error": "method_not_allowed"}),
                ),
            };
        }
        if path == "/replicate" && method == Method::POST {
            let body = match read_body(req, 16 * 1024 * 1024).await {
                Ok(b) => b,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "bad_body", "reason": e}),
                    )
                }
            };
            let writes: Vec<Write> = match serde_json::from_slice(&body) {
                Ok(w) => w,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "bad_json", "reason": e.to_string()}),
                    )
                }
            };
            let n = writes.len() as u64;
            for w in writes {
                self.apply(w);
            }
            self.received.fetch_add(n, Ordering::Relaxed);
            return json(StatusCode::OK, &json!({"applied": n}));
        }
        json(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "path": path}),
        )
    }

    /// Sends queued writes to the peer in batches; a failed batch stays queued.
    async fn replicate(self: Arc<Self>, peer: SocketAddr) {
        loop {
            let batch: Vec<Write> = {
                let q = self.queue.lock().expect("queue lock");
                q.iter().take(500).map(|x| x.write.clone()).collect()
            };
            if batch.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let body = Bytes::from(serde_json::to_vec(&batch).expect("writes serialize"));
            match call(
                peer,
                Method::POST,
                "/replicate",
                body,
                Duration::from_secs(2),
            )
            .await
            {
                Ok((s, _)) if s.is_success() => {
                    let mut q = self.queue.lock().expect("queue lock");
                    for _ in 0..batch.len() {
                        q.pop_front();
                    }
                    self.replicated
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    *self.last_error.lock().expect("error lock") = None;
                }
                Ok((s, _)) => {
                    *self.last_error.lock().expect("error lock") =
                        Some(format!("peer answered {s}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    *self.last_error.lock().expect("error lock") = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Runs a store on `listen`, replicating to `peer` when given.
pub async fn run(listen: SocketAddr, region: &str, peer: Option<SocketAddr>) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let store = Store::new(region);
    if let Some(p) = peer {
        tokio::spawn(store.clone().replicate(p));
    }
    tracing::info!(%listen, region, ?peer, "store serving");
    serve(l, move |req| store.clone().handle(req)).await;
    Ok(())
}
