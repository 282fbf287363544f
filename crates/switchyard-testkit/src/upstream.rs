//! A real HTTP backend on a loopback address whose behaviour a test can change
//! while it runs: answer status, delay, health, or go away entirely.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The heartbeat path that exercises an upstream's write path.
pub const WRITE_HEARTBEAT: &str = "/heartbeat/write";

#[derive(Default)]
struct Knobs {
    status: AtomicU16,
    /// For PUT, POST and DELETE when set (0: as `status`).
    write_status: AtomicU16,
    health: AtomicU16,
    delay_ms: AtomicU64,
    requests: AtomicU64,
    last_headers: Mutex<Vec<(String, String)>>,
}

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    knobs: Arc<Knobs>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    /// Starts answering 200 on `addr`, naming itself `name`.
    pub async fn start(name: &str, addr: SocketAddr) -> Upstream {
        let knobs = Arc::new(Knobs::default());
        knobs.status.store(200, Ordering::Relaxed);
        knobs.health.store(200, Ordering::Relaxed);
        let mut u = Upstream {
            name: name.into(),
            addr,
            knobs,
            task: None,
        };
        u.resume().await;
        u
    }

    /// Answers every non-health request with this status from now on.
    pub fn set_status(&self, s: u16) {
        self.knobs.status.store(s, Ordering::Relaxed);
    }

    /// Answers writes (PUT, POST, DELETE, and the write heartbeat
    /// [`WRITE_HEARTBEAT`]) with this status from now on; 0 answers them like reads. Reads and `/health` are unaffected, like a
    /// backend whose database turns writes away.
    pub fn set_write_status(&self, s: u16) {
        self.knobs.write_status.store(s, Ordering::Relaxed);
    }

    /// What `/health` answers (health checks can stay green while requests fail).
    pub fn set_health(&self, s: u16) {
        self.knobs.health.store(s, Ordering::Relaxed);
    }

    pub fn set_delay(&self, d: Duration) {
        self.knobs
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests served so far, health checks excluded.
    pub fn requests(&self) -> u64 {
        self.knobs.requests.load(Ordering::Relaxed)
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        self.knobs
            .last_headers
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Closes the listener and every connection: new connects are refused.
    /// Stops listening and drops every connection. Returns once the
    /// listener is closed: an abort alone only asks the runtime to drop the
    /// task later, and a connect that lands meanwhile would be accepted by
    /// the kernel and then reset, not refused.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn abort(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again after [`Upstream::stop`].
    pub async fn resume(&mut self) {
        self.stop().await;
        let l = bind_retrying(self.addr).await;
        let knobs = self.knobs.clone();
        let name = self.name.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                let (knobs, name) = (knobs.clone(), name.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (knobs, name) = (knobs.clone(), name.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let write = matches!(
                                *req.method(),
                                http::Method::PUT | http::Method::POST | http::Method::DELETE
                            ) || path == WRITE_HEARTBEAT;
                            let headers: Vec<(String, String)> = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect();
                            let _ = req.into_body().collect().await;
                            if path == "/health" {
                                let s = knobs.health.load(Ordering::Relaxed);
                                return Ok::<_, Infallible>(reply(s, &name));
                            }
                            knobs.requests.fetch_add(1, Ordering::Relaxed);
                            *knobs.last_headers.lock().unwrap() = headers;
                            let d = knobs.delay_ms.load(Ordering::Relaxed);
                            if d > 0 {
                                tokio::time::sleep(Duration::from_millis(d)).await;
                            }
                            let ws = knobs.write_status.load(Ordering::Relaxed);
                            let s = if write && ws != 0 {
                                ws
                            } else {
                                knobs.status.load(Ordering::Relaxed)
                            };
                            Ok(reply(s, &name))
                        }
                    });
                    // hyper's default of 100 headers would answer the
                    // edge's many-header tests itself.
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().max_headers(1000);
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        }));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.abort();
    }
}

fn reply(status: u16, name: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "{{\"instance\":\"{name}\"}}"
    ))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// A just-closed listener's address can take a moment to be free again.
pub(crate) async fn bind_retrying(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}
