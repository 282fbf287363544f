//! One client connection's lifetime limits: the first request must begin
//! within the header timeout, and a connection with nothing in flight is
//! closed after the idle timeout. hyper covers neither for every protocol:
//! its header timer starts only once the connection's protocol is known (see
//! `protocol`), and its h2 server has no idle limit between streams.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::Inbound;
use crate::error::{EdgeError, ErrorKind};

/// How many connections a listener holds, in all and per client address.
/// Every connection costs a file descriptor and memory: without a ceiling, a
/// client that opens connections until the process runs out of descriptors
/// leaves none for upstream connections, and every request fails. With one
/// ceiling per address as well, one client can take at most its share.
pub struct ConnLimits {
    listener: &'static str,
    max_total: usize,
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    open: Gauge,
    /// Set while refusing, so the log says so once per episode.
    refusing: std::sync::atomic::AtomicBool,
}

/// A connection's place under [`ConnLimits`]; dropping it frees the place.
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    pub fn new(
        listener: &'static str,
        max_total: usize,
        max_per_client: usize,
        open: Gauge,
    ) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            listener,
            max_total: max_total.max(1),
            max_per_client: max_per_client.clamp(1, max_total.max(1)),
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            open,
            refusing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_client(&self) -> usize {
        self.max_per_client
    }

    /// A place for a new connection from `ip`, or which limit refused it
    /// (`total` or `per_client`) and the error its client gets.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, (&'static str, EdgeError)> {
        let mut per = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let mine = per.get(&ip).copied().unwrap_or(0);
        let refused = if self.total.load(Ordering::Acquire) >= self.max_total {
            Some((
                "total",
                format!(
                    "the edge holds its limit of {} client connections",
                    self.max_total
                ),
            ))
        } else if mine >= self.max_per_client {
            Some((
                "per_client",
                format!(
                    "{ip} holds its limit of {} connections",
                    self.max_per_client
                ),
            ))
        } else {
            None
        };
        if let Some((which, reason)) = refused {
            if !self.refusing.swap(true, Ordering::Relaxed) {
                tracing::warn!(listener = self.listener, %reason, "refusing new connections");
            }
            return Err((which, EdgeError::new(ErrorKind::TooManyConnections, reason)));
        }
        if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!(listener = self.listener, "accepting new connections again");
        }
        per.insert(ip, mine + 1);
        self.total.fetch_add(1, Ordering::AcqRel);
        self.open.inc();
        Ok(ConnSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let l = &self.limits;
        let mut per = l.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
        l.total.fetch_sub(1, Ordering::AcqRel);
        l.open.dec();
    }
}

/// The answer a refused connection gets before it is closed: an HTTP/1.1
/// `503` with the edge's JSON error body, written with one non-blocking
/// write into the fresh socket's empty send buffer, so a client that does
/// not read cannot hold the accept loop.
pub fn refuse(stream: &tokio::net::TcpStream, e: &EdgeError) {
    let resp = e.to_response(None);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status().as_u16(),
        resp.status().canonical_reason().unwrap_or("")
    );
    for (k, v) in resp.headers() {
        out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
    }
    let body = e.json_body(None);
    out.push_str(&format!(
        "connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    let _ = stream.try_write(&out);
}

/// What is in flight on one connection. A request counts from the moment the
/// service sees it until its response body has been written (or dropped).
pub struct Activity {
    first: Notify,
    active: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            first: Notify::new(),
            active: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    /// Called by the service for every request; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.first.notify_one();
        self.active.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection went idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(*self.last.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `handle` as a service whose every request counts as in flight on the
/// connection until its response body is written: the proxy and the admin
/// listener serve through it alike, on hyper's connections and on `h1`'s.
pub fn tracked<F>(activity: &Arc<Activity>, handle: F) -> Tracker<F> {
    Tracker {
        activity: activity.clone(),
        handle,
    }
}

/// See [`tracked`].
#[derive(Clone)]
pub struct Tracker<F> {
    activity: Arc<Activity>,
    handle: F,
}

/// A tracked request's response, boxed: hyper's HTTP/1 dispatcher allocates
/// a slot the size of this future when the connection opens and keeps it for
/// the connection's life, idle or not. Unboxed it is about 9 KiB for the
/// proxy (its 4.4 KiB request future held twice: as captured and as
/// awaited), which every idle connection paid; boxed, the slot is one
/// pointer and the future exists only while a request does.
pub type ResponseFuture<B> = Pin<Box<dyn Future<Output = http::Response<Tracked<B>>> + Send>>;

impl<F, Fut, B> Tracker<F>
where
    F: Fn(http::Request<Inbound>) -> Fut + Clone,
    Fut: Future<Output = Result<http::Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
{
    /// Serves one request, whichever server read it.
    pub fn serve(&self, req: http::Request<Inbound>) -> ResponseFuture<B> {
        let in_flight = self.activity.begin();
        let resp = (self.handle)(req);
        Box::pin(async move {
            match resp.await {
                Ok(r) => r.map(|b| Tracked::new(b, in_flight)),
                Err(never) => match never {},
            }
        })
    }
}

type Answered<B> = Result<http::Response<Tracked<B>>, std::convert::Infallible>;

impl<F, Fut, B> hyper::service::Service<http::Request<hyper::body::Incoming>> for Tracker<F>
where
    F: Fn(http::Request<Inbound>) -> Fut + Clone,
    Fut: Future<Output = Result<http::Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
{
    type Response = http::Response<Tracked<B>>;
    type Error = std::convert::Infallible;
    type Future =
        futures_util::future::Map<ResponseFuture<B>, fn(http::Response<Tracked<B>>) -> Answered<B>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        futures_util::FutureExt::map(self.serve(req.map(Inbound::Hyper)), Ok as fn(_) -> _)
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is dropped.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs one connection under its limits; returning drops (closes) it.
pub async fn run<F: Future>(
    conn: F,
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
) {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = &mut conn => return,
        _ = activity.first.notified() => {}
        _ = tokio::time::sleep(header_timeout) => {
            tracing::debug!("closing a connection that sent no request in time");
            return;
        }
    }
    loop {
        let wake = match activity.idle_since() {
            Some(since) if since.elapsed() >= idle_timeout => {
                tracing::debug!("closing an idle connection");
                return;
            }
            Some(since) => since + idle_timeout,
            None => Instant::now() + idle_timeout,
        };
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
