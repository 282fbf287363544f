//! `catalog`, the lab's demo service: one process per instance. Reads and
//! writes go to its region's store over a link, one connection per request,
//! so a degraded link hurts exactly the share of requests it should. `/health`
//! is shallow and stays green whatever the store does — the gray failure the
//! lab exists to show — while `/heartbeat/{route}` exercises the route's real
//! path.
//!
//! Each instance also carries its own fault knob (`POST /admin/faults`): a
//! delay and a share of errors on every request but `/health`, so a drill can
//! make one instance slow or failing while its health check stays green —
//! the instance-sized gray failure that only what callers observe can find.
//! The knob lives in the instance, not in the edge, so every caller (edges,
//! heartbeats, probes) meets the same fault, as with a real sick host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use hyper::body::Incoming;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{call, call_as, json, read_body, serve, CallError, Resp};
use crate::topology::ADMIN_TOKEN;

/// Where an instance's fault knob answers.
pub const FAULTS_PATH: &str = "/admin/faults";

/// The largest delay a knob accepts: beyond a minute every caller has long
/// given up, and a typo (`delay_ms = 50000`) should be refused, not obeyed.
pub const MAX_DELAY_MS: u64 = 60_000;

/// What one instance does to the requests it serves (`/health` excepted):
/// wait `delay_ms` plus up to `jitter_ms` more at random, then answer
/// `error_status` to `error_percent` % of them instead of serving them. The
/// default is no fault. Every `POST` replaces the whole setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFault {
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default = "default_error_status")]
    pub error_status: u16,
    #[serde(default)]
    pub error_percent: f64,
}

fn default_error_status() -> u16 {
    500
}

impl Default for InstanceFault {
    fn default() -> Self {
        InstanceFault {
            delay_ms: 0,
            jitter_ms: 0,
            error_status: default_error_status(),
            error_percent: 0.0,
        }
    }
}

impl InstanceFault {
    /// Every problem, each naming its field and value.
    pub fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for (f, v) in [("delay_ms", self.delay_ms), ("jitter_ms", self.jitter_ms)] {
            if v > MAX_DELAY_MS {
                errs.push(format!("{f}: at most {MAX_DELAY_MS}, got {v}"));
            }
        }
        if !(400..=599).contains(&self.error_status) {
            errs.push(format!(
                "error_status: an HTTP error status (400..599), got {}",
                self.error_status
            ));
        }
        if !(0.0..=100.0).contains(&self.error_percent) {
            errs.push(format!(
                "error_percent: a percentage between 0 and 100, got {}",
                self.error_percent
            ));
        }
        errs
    }

    pub fn is_clean(&self) -> bool {
        self.delay_ms == 0 && self.jitter_ms == 0 && self.error_percent == 0.0
    }
}

/// `GET /admin/faults`: the setting in force and what it did so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    pub instance: String,
    pub fault: InstanceFault,
    /// Requests held back by the delay.
    pub delayed_total: u64,
    /// Requests answered with the injected error.
    pub errors_total: u64,
}

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

/// Sets the fault knob of the instance at `addr` (the default clears it)
/// and returns what the instance now says of it.
pub async fn set_fault(addr: SocketAddr, fault: &InstanceFault) -> anyhow::Result<FaultView> {
    let body = Bytes::from(serde_json::to_vec(fault)?);
    knob_call(addr, Method::POST, body).await
}

/// The fault knob of the instance at `addr` and what it did so far.
pub async fn fault_view(addr: SocketAddr) -> anyhow::Result<FaultView> {
    knob_call(addr, Method::GET, Bytes::new()).await
}

async fn knob_call(addr: SocketAddr, method: Method, body: Bytes) -> anyhow::Result<FaultView> {
    let (s, b) = call_as(
        addr,
        method,
        FAULTS_PATH,
        body,
        Duration::from_secs(3),
        Some(ADMIN_TOKEN),
    )
    .await?;
    if !s.is_success() {
        anyhow::bail!("{addr} answered {s}: {}", String::from_utf8_lossy(&b));
    }
    Ok(serde_json::from_slice(&b)?)
}

/// A running instance: the service, and the fault knob in front of it.
struct Instance {
    catalog: Arc<Catalog>,
    fault: ArcSwap<InstanceFault>,
    delayed: AtomicU64,
    errors: AtomicU64,
}

impl Instance {
    /// Health and the knob first (neither is ever faulted: the health check
    /// must stay green for the failure to be gray), then the fault, then
    /// the service.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => {
                return json(
                    StatusCode::OK,
                    &json!({"status": "ok", "instance": self.catalog.name}),
                )
            }
            (_, FAULTS_PATH) => return self.knob(req).await,
            _ => {}
        }
        if let Some(refusal) = self.apply_fault().await {
            return refusal;
        }
        self.catalog.clone().handle(req).await
    }

    /// Waits out the delay, then draws whether this request gets the error.
    async fn apply_fault(&self) -> Option<Resp> {
        let f = self.fault.load_full();
        if f.is_clean() {
            return None;
        }
        // Draw before awaiting: the thread's generator cannot cross an await.
        let (extra, fail) = {
            let mut rng = rand::thread_rng();
            (
                if f.jitter_ms > 0 {
                    rng.gen_range(0..=f.jitter_ms)
                } else {
                    0
                },
                rng.gen_bool((f.error_percent / 100.0).clamp(0.0, 1.0)),
            )
        };
        if f.delay_ms + extra > 0 {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(f.delay_ms + extra)).await;
        }
        if !fail {
            return None;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let status =
            StatusCode::from_u16(f.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Some(json(
            status,
            &json!({"error": "injected_fault", "instance": self.catalog.name}),
        ))
    }

    fn view(&self) -> FaultView {
        FaultView {
            instance: self.catalog.name.clone(),
            fault: (**self.fault.load()).clone(),
            delayed_total: self.delayed.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
        }
    }

    /// `GET` shows the setting, `POST` replaces it. The instance's port is
    /// also the one edges forward users to, so the knob wants the lab's
    /// admin token: a user's request must not be able to break an instance.
    async fn knob(&self, req: Request<Incoming>) -> Resp {
        let authorized = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {ADMIN_TOKEN}"));
        if !authorized {
            return json(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "unauthorized", "reason": "the fault knob needs the lab's admin token"}),
            );
        }
        match *req.method() {
            Method::GET => {}
            Method::POST => {
                let parsed = read_body(req, 4096).await.and_then(|b| {
                    serde_json::from_slice::<InstanceFault>(&b).map_err(|e| e.to_string())
                });
                let f = match parsed {
                    Ok(f) => f,
                    Err(e) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &json!({"error": "bad_body", "reason": e}),
                        )
                    }
                };
                let problems = f.problems();
                if !problems.is_empty() {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "invalid_fault", "reason": problems.join("; ")}),
                    );
                }
                tracing::warn!(instance = %self.catalog.name, fault = ?f, "instance fault knob");
                self.fault.store(Arc::new(f));
            }
            _ => {
                return json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({"error": "method_not_allowed"}),
                )
            }
        }
        json(
            StatusCode::OK,
            &serde_json::to_value(self.view()).expect("serializable"),
        )
    }
}

pub async fn run(listen: SocketAddr, catalog: Catalog) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, name = %catalog.name, store = %catalog.store, "catalog instance serving");
    let i = Arc::new(Instance {
        catalog: Arc::new(catalog),
        fault: ArcSwap::from_pointee(InstanceFault::default()),
        delayed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    serve(l, move |req| i.clone().handle(req)).await;
    Ok(())
}
