//! A plain HTTP/1.1 client for tests: one request, full answer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `region/zone/instance` that served the request, from the edge's header.
    pub fn upstream(&self) -> String {
        self.header("x-switchyard-upstream").unwrap_or_default()
    }

    /// The zone part of [`Reply::upstream`].
    pub fn zone(&self) -> String {
        self.upstream().split('/').nth(1).unwrap_or("").to_string()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A request to build with chained calls and send with [`Req::send`].
pub struct Req {
    method: Method,
    addr: SocketAddr,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    from: Option<IpAddr>,
}

impl Req {
    pub fn new(method: Method, addr: SocketAddr, path: &str) -> Self {
        Req {
            method,
            addr,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            from: None,
        }
    }

    pub fn get(addr: SocketAddr, path: &str) -> Self {
        Self::new(Method::GET, addr, path)
    }

    pub fn put(addr: SocketAddr, path: &str) -> Self {
        Self::new(Method::PUT, addr, path)
    }

    pub fn post(addr: SocketAddr, path: &str) -> Self {
        Self::new(Method::POST, addr, path)
    }

    pub fn host(self, host: &str) -> Self {
        self.header("host", host)
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = b.into();
        self
    }

    /// Sent from this source address (every 127.x.y.z is bindable), so one
    /// test can be many clients.
    pub fn from(mut self, ip: IpAddr) -> Self {
        self.from = Some(ip);
        self
    }

    pub async fn send(self) -> Result<Reply, String> {
        let mut b = Request::builder()
            .method(self.method)
            .uri(format!("http://{}{}", self.addr, self.path));
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Full::new(self.body)).map_err(|e| e.to_string())?;
        send_from(req, self.from).await
    }
}

fn client(from: Option<IpAddr>) -> Client<HttpConnector, Full<Bytes>> {
    let mut c = HttpConnector::new();
    c.set_local_address(from);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(c)
}

/// Sends on a fresh connection, with a 10 s bound so a hung edge fails the
/// test instead of hanging it.
pub async fn send(req: Request<Full<Bytes>>) -> Result<Reply, String> {
    send_from(req, None).await
}

/// [`send`] from source address `from` (the system's choice when `None`).
pub async fn send_from(req: Request<Full<Bytes>>, from: Option<IpAddr>) -> Result<Reply, String> {
    let fut = async {
        let resp = client(from)
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// Steady background traffic through edges until dropped: every 10 ms each
/// edge gets the next request of `mix` (method, path) in turn, so the
/// control plane has signals to detect from. Every answer is kept, for tests
/// that count what users saw.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    sent: std::sync::Arc<std::sync::Mutex<Vec<Sent>>>,
}

/// One request of [`Traffic`] and how it ended.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When the request was sent.
    pub at: std::time::Instant,
    pub method: Method,
    /// The answer's status, or why there was none.
    pub result: Result<(StatusCode, String), String>,
}

impl Sent {
    pub fn ok(&self) -> bool {
        matches!(&self.result, Ok((s, _)) if s.is_success())
    }

    /// The zone that served it (from the edge's `x-switchyard-upstream`).
    pub fn zone(&self) -> Option<&str> {
        self.result.as_ref().ok().map(|(_, z)| z.as_str())
    }
}

impl Traffic {
    pub fn start(edges: &[SocketAddr], host: &str, mix: &[(Method, &str)]) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mix: Vec<(Method, String)> = mix
            .iter()
            .map(|(m, p)| (m.clone(), p.to_string()))
            .collect();
        let tasks = edges
            .iter()
            .map(|addr| {
                let (addr, stop, mix, host, sent) = (
                    *addr,
                    stop.clone(),
                    mix.clone(),
                    host.to_string(),
                    sent.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (m, p) = &mix[i % mix.len()];
                        let at = std::time::Instant::now();
                        let result = Req::new(m.clone(), addr, p)
                            .host(&host)
                            .send()
                            .await
                            .map(|r| (r.status, r.zone()));
                        sent.lock().unwrap().push(Sent {
                            at,
                            method: m.clone(),
                            result,
                        });
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Traffic { stop, tasks, sent }
    }

    /// Stops, waits for the last requests to finish, and returns every
    /// request sent, in the order they ended.
    pub async fn stop(mut self) -> Vec<Sent> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
