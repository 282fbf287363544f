//! The demo service's regional store: an in-memory key-value store that
//! replicates every write asynchronously to the other region's store over a
//! link. Replication lag is real: cut the link and the queue grows, restore it
//! and the queue drains; concurrent writes resolve last-writer-wins.
//!
//! `POST /admin/writes {"reject": true}` makes the store turn client writes
//! away (503) while reads keep working — a primary that lost its disk or its
//! quorum while replicas still serve reads: the write path fails, the read
//! path does not. `{"reject_percent": 7}` turns away that share of writes
//! only: the small, persistent failure that only an SLO burn notices.
//! `POST /admin/latency {"delay_ms": 40, "jitter_ms": 10, "writes_only": true}`
//! slows client requests down (reads and writes, or writes only): a store
//! under compaction or a saturated disk.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{call, json, read_body, serve, Resp};

/// The largest added store latency: a minute is far past every caller's
/// timeout, so anything larger is a typo.
pub const MAX_DELAY_MS: u64 = 60_000;

/// The body of `POST /admin/writes`: `reject` (all or nothing, as before)
/// or `reject_percent`; both may be given only when they agree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesKnob {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_percent: Option<f64>,
}

impl WritesKnob {
    /// The share of writes to turn away, in percent; `reject = true` is 100
    /// and `reject = false` is 0. Names the field and the value when the
    /// knob makes no sense.
    pub fn percent(&self) -> Result<f64, String> {
        match (self.reject, self.reject_percent) {
            (None, None) => Err("reject: required unless reject_percent is given".into()),
            (Some(r), None) => Ok(if r { 100.0 } else { 0.0 }),
            (r, Some(p)) => {
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!(
                        "reject_percent: a percentage between 0 and 100, got {p}"
                    ));
                }
                match r {
                    Some(true) if p < 100.0 => Err(format!(
                        "reject_percent: {p} contradicts reject = true (every write); give one of them"
                    )),
                    Some(false) if p > 0.0 => Err(format!(
                        "reject_percent: {p} contradicts reject = false (no write); give one of them"
                    )),
                    _ => Ok(p),
                }
            }
        }
    }
}

/// The body of `POST /admin/latency`: added delay on client requests to the
/// store (`/kv/…`), `delay_ms` plus up to `jitter_ms` more at random, on
/// reads and writes or, with `writes_only`, on writes alone. Replication
/// between stores is not slowed: that is the region link's business.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLatency {
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default)]
    pub writes_only: bool,
}

impl StoreLatency {
    pub fn problems(&self) -> Vec<String> {
        [("delay_ms", self.delay_ms), ("jitter_ms", self.jitter_ms)]
            .into_iter()
            .filter(|(_, v)| *v > MAX_DELAY_MS)
            .map(|(f, v)| format!("{f}: at most {MAX_DELAY_MS}, got {v}"))
            .collect()
    }

    /// How long this request waits, drawn now.
    fn draw(&self, is_write: bool) -> Duration {
        if self.writes_only && !is_write {
            return Duration::ZERO;
        }
        let extra = if self.jitter_ms > 0 {
            rand::thread_rng().gen_range(0..=self.jitter_ms)
        } else {
            0
        };
        Duration::from_millis(self.delay_ms + extra)
    }
}

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
    /// Whether any share of writes is turned away now.
    pub rejecting_writes: bool,
    /// The share of writes turned away now, in percent.
    #[serde(default)]
    pub reject_percent: f64,
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
    /// Share of client writes turned away, in percent.
    reject_percent: Mutex<f64>,
    writes_rejected: AtomicU64,
    latency: ArcSwap<StoreLatency>,
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
            reject_percent: Mutex::new(0.0),
            writes_rejected: AtomicU64::new(0),
            latency: ArcSwap::from_pointee(StoreLatency::default()),
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
            rejecting_writes: self.reject_percent() > 0.0,
            reject_percent: self.reject_percent(),
            writes_rejected_total: self.writes_rejected.load(Ordering::Relaxed),
        }
    }

    fn reject_percent(&self) -> f64 {
        *self.reject_percent.lock().expect("reject lock")
    }

    /// Whether this write is one of the share turned away.
    fn rejects_this_write(&self) -> bool {
        let p = self.reject_percent();
        p > 0.0 && rand::thread_rng().gen_bool((p / 100.0).min(1.0))
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
            let percent = match read_body(req, 4096)
                .await
                .and_then(|b| serde_json::from_slice::<WritesKnob>(&b).map_err(|e| e.to_string()))
                .and_then(|k| k.percent())
            {
                Ok(p) => p,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "bad_body", "reason": e}),
                    )
                }
            };
            *self.reject_percent.lock().expect("reject lock") = percent;
            tracing::warn!(region = %self.region, reject_percent = percent, "store writes knob");
            return json(
                StatusCode::OK,
                &json!({"rejecting_writes": percent > 0.0, "reject_percent": percent}),
            );
        }
        if path == "/admin/latency" {
            if method == Method::POST {
                let parsed = read_body(req, 4096).await.and_then(|b| {
                    serde_json::from_slice::<StoreLatency>(&b).map_err(|e| e.to_string())
                });
                let l = match parsed {
                    Ok(l) if l.problems().is_empty() => l,
                    Ok(l) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": "bad_body", "reason": l.problems().join("; ")}),
                        )
                    }
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": "bad_body", "reason": e}),
                        )
                    }
                };
                tracing::warn!(region = %self.region, latency = ?l, "store latency knob");
                self.latency.store(Arc::new(l));
            }
            return json(
                StatusCode::OK,
                &serde_json::to_value(&**self.latency.load()).expect("serializable"),
            );
        }
        if let Some(key) = path.strip_prefix("/kv/") {
            let key = key.to_string();
            let wait = self.latency.load().draw(method == Method::PUT);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
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
                Method::PUT if self.rejects_this_write() => {
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
