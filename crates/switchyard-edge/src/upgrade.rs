//! HTTP/1.1 `Upgrade` (WebSocket and any other token) through the edge.
//! The request goes to the instance with its `Upgrade` and `Connection:
//! upgrade`; on `101 Switching Protocols` the edge joins the client's
//! upgraded connection to the instance's and copies bytes both ways until
//! either side closes, the connection goes idle past
//! `edge.upgrade_idle_timeout_ms`, or a stopping edge reaches its drain
//! deadline. A tunnel holds no request-concurrency slot: that slot protects
//! instances from request floods and is freed with the 101, or a handful of
//! long-lived WebSockets would starve every ordinary request.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::Version;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::{OutcomeLabels, ServiceLabels};
use crate::state::Edge;

/// Whether a request asks to switch protocols: HTTP/1.1, an `Upgrade`
/// header naming a protocol other than `h2c`, and `upgrade` among the
/// `Connection` tokens. `Upgrade: h2c` (deprecated by RFC 9113) is not
/// passed on: the request is served as HTTP/1.1, since a whole HTTP/2
/// connection tunnelled to one instance would bypass routing and
/// accounting for every request on it.
pub fn requested(version: Version, h: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && h.get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case("h2c"))
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Puts the upgrade back on a message whose hop-by-hop headers were
/// stripped: they are hop-by-hop, yet the switch is the whole point.
pub fn restore_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for v in from.get_all(header::UPGRADE) {
        to.append(header::UPGRADE, v.clone());
    }
    to.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// A share of the client connection's place under the listener's
/// connection ceilings, carried by an upgrade request to its tunnel.
#[derive(Clone)]
pub struct Hold(pub Arc<dyn std::any::Any + Send + Sync>);

/// Every upgraded connection this edge holds, so that a stopping edge can
/// let them run to its drain deadline and then close them.
pub struct Tunnels {
    open: AtomicUsize,
    close: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            open: AtomicUsize::new(0),
            close: watch::channel(false).0,
        }
    }
}

impl Tunnels {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until every tunnel has closed on its own or `deadline` has
    /// come, then closes the rest and waits (briefly) for them to go.
    pub async fn drain(&self, deadline: Instant) {
        while self.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.open() > 0 {
            tracing::info!(
                open = self.open(),
                "drain deadline reached; closing upgraded connections"
            );
        }
        self.close.send_replace(true);
        let last = Instant::now() + Duration::from_secs(1);
        while self.open() > 0 && Instant::now() < last {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Joins the client's and the instance's upgraded connections in a task
/// of its own, once hyper has handed both over (the client's after the 101
/// has been written to it). `hold` stays with the tunnel until it closes.
pub fn spawn(
    edge: Arc<Edge>,
    service: String,
    client: OnUpgrade,
    upstream: OnUpgrade,
    hold: Option<Hold>,
) {
    let idle = edge.snapshot().config.edge.upgrade_idle_timeout;
    let labels = ServiceLabels { service };
    edge.metrics.upgrades.get_or_create(&labels).inc();
    let open = edge.metrics.upgraded_open.get_or_create(&labels).clone();
    open.inc();
    edge.tunnels.open.fetch_add(1, Ordering::AcqRel);
    let mut close = edge.tunnels.close.subscribe();
    tokio::spawn(async move {
        let outcome = async {
            let (c, u) = match tokio::try_join!(client, upstream) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "an upgrade failed before the tunnel opened");
                    return "error";
                }
            };
            let last = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let mut c = Watched::new(TokioIo::new(c), last.clone(), started);
            let mut u = Watched::new(TokioIo::new(u), last.clone(), started);
            let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
            tokio::pin!(copy);
            loop {
                let seen = started + Duration::from_millis(last.load(Ordering::Relaxed));
                tokio::select! {
                    r = &mut copy => return if r.is_ok() { "closed" } else { "error" },
                    _ = tokio::time::sleep_until(seen + idle) => {
                        let seen = started + Duration::from_millis(last.load(Ordering::Relaxed));
                        if seen.elapsed() >= idle {
                            return "idle";
                        }
                    }
                    _ = close.wait_for(|c| *c) => return "shutdown",
                }
            }
        }
        .await;
        // Dropping both halves closes both connections.
        drop(hold);
        open.dec();
        edge.tunnels.open.fetch_sub(1, Ordering::AcqRel);
        edge.metrics
            .upgrade_closes
            .get_or_create(&OutcomeLabels {
                service: labels.service,
                outcome: outcome.into(),
            })
            .inc();
    });
}

/// One side of a tunnel, noting when it last read a byte (in ms after the
/// tunnel began) so the idle timeout sees traffic either way.
struct Watched<T> {
    inner: T,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl<T> Watched<T> {
    fn new(inner: T, last: Arc<AtomicU64>, started: Instant) -> Self {
        Watched {
            inner,
            last,
            started,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = this.started.elapsed().as_millis() as u64;
            this.last.fetch_max(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn an_upgrade_needs_both_headers_on_http_1_1_and_h2c_is_not_one() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(requested(Version::HTTP_11, &ws));
        assert!(!requested(Version::HTTP_10, &ws));
        assert!(!requested(
            Version::HTTP_11,
            &headers(&[("upgrade", "websocket")])
        ));
        assert!(!requested(
            Version::HTTP_11,
            &headers(&[("connection", "upgrade"), ("upgrade", "h2c")])
        ));
        assert!(requested(
            Version::HTTP_11,
            &headers(&[("connection", "upgrade"), ("upgrade", "h2c, foo/2")])
        ));
    }
}
