//! A real HTTP endpoint on a loopback address that records every request it
//! gets, standing in for a notification receiver (webhook, Slack,
//! Alertmanager, PagerDuty), over plain HTTP or HTTPS with a certificate
//! from a [`TestCa`](crate::tls::TestCa). A test can make it fail for a
//! while, fail for good or be slow, then read back exactly what was sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When it arrived (after the body was read).
    pub at: Instant,
    /// The status it was answered with.
    pub answered: u16,
}

impl Received {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body when it is not, which
    /// is the message a failing test wants.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

#[derive(Debug)]
struct Behaviour {
    /// Answered once the failures below are used up.
    status: u16,
    /// How many of the next requests get `fail_status`.
    fail_left: u32,
    fail_status: u16,
    delay: Duration,
}

#[derive(Debug)]
struct State {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Received>>,
}

/// Records requests on `addr` until dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts answering 200 to everything on `addr`.
    pub async fn start(addr: SocketAddr) -> Receiver {
        Receiver::serve(addr, None).await
    }

    /// The same over HTTPS, presenting `cert` (made for the loopback
    /// address); [`Receiver::url`] then says `https://`. A handshake the
    /// client aborts (a certificate it does not trust) records nothing.
    pub async fn start_tls(addr: SocketAddr, cert: &crate::tls::ServerCert) -> Receiver {
        Receiver::serve(addr, Some(cert.acceptor())).await
    }

    async fn serve(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let l = crate::upstream::bind_retrying(addr).await;
        let addr = l.local_addr().expect("bound address");
        let state = Arc::new(State {
            behaviour: Mutex::new(Behaviour {
                status: 200,
                fail_left: 0,
                fail_status: 500,
                delay: Duration::ZERO,
            }),
            requests: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            // Owned here so aborting the task also closes open connections.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let http = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            scheme,
            state,
            task,
        }
    }

    /// `http://ADDR{path}`, or `https://…` when started with TLS.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Answers `status` to the next `n` requests, then as before (200 unless
    /// [`Receiver::always`] said otherwise).
    pub fn fail_first(&self, n: u32, status: u16) {
        let mut b = self.state.behaviour.lock().unwrap();
        b.fail_left = n;
        b.fail_status = status;
    }

    /// Answers `status` to every request from now on.
    pub fn always(&self, status: u16) {
        let mut b = self.state.behaviour.lock().unwrap();
        b.fail_left = 0;
        b.status = status;
    }

    /// Waits this long before answering (the request is recorded at once).
    pub fn set_delay(&self, d: Duration) {
        self.state.behaviour.lock().unwrap().delay = d;
    }

    /// Everything received so far, oldest first.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Stops listening and drops open connections.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    st: Arc<State>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let (status, delay) = {
        let mut b = st.behaviour.lock().unwrap();
        let status = if b.fail_left > 0 {
            b.fail_left -= 1;
            b.fail_status
        } else {
            b.status
        };
        (status, b.delay)
    };
    st.requests.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
        answered: status,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut r = Response::new(Full::new(Bytes::from(if (200..300).contains(&status) {
        "ok"
    } else {
        "refused by test receiver"
    })));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(r)
}
