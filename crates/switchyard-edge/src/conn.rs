//! One client connection's lifetime limits: the first request must begin
//! within the header timeout, and a connection with nothing in flight is
//! closed after the idle timeout. hyper covers neither for every protocol:
//! its header timer starts only once the connection's protocol is known (see
//! `protocol`), and its h2 server has no idle limit between streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

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

/// `handle` as a hyper service whose every request counts as in flight on
/// the connection until its response body is written: the proxy and the
/// admin listener serve through it alike.
pub fn tracked<F, Fut, B>(
    activity: &Arc<Activity>,
    handle: F,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Tracked<B>>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone,
    Fut: Future<Output = Result<http::Response<B>, std::convert::Infallible>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
{
    let seen = activity.clone();
    hyper::service::service_fn(move |req| {
        let in_flight = seen.begin();
        let resp = handle(req);
        // Boxed: hyper's HTTP/1 dispatcher allocates a slot the size of this
        // future when the connection opens and keeps it for the connection's
        // life, idle or not. Unboxed it is about 9 KiB for the proxy (its
        // 4.4 KiB request future held twice: as captured and as awaited),
        // which every idle connection paid; boxed, the slot is one pointer
        // and the future exists only while a request does.
        Box::pin(async move {
            let r = resp.await?;
            Ok(r.map(|b| Tracked::new(b, in_flight)))
        })
    })
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
