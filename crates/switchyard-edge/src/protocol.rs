//! Which HTTP version a client speaks: on the plain listener (HTTP/1.1 or
//! h2c with prior knowledge) told from its first bytes without consuming
//! them, on the TLS listener from ALPN.
//!
//! hyper-util's auto builder tells the same by reading up to 24 bytes itself
//! and handing them back to hyper as a prefix. hyper's HTTP/1 reader then
//! sees a first read of those few bytes, and its next read, asking for a full
//! 8 KiB on top of them, grows the read buffer to 16 KiB, which it keeps for
//! the connection's life: 8.7 KiB more per idle connection, measured. Peeking
//! instead lets hyper read the whole first request into its first 8 KiB.
//!
//! HTTP/1.1 connections are served by hyper's own HTTP/1 builder with
//! upgrades on (WebSocket and other `Upgrade`s): hyper-util's auto builder
//! serves upgrades only through its version-reading path, the one that costs
//! the larger buffer.

use std::future::Future;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What an h2c client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type Builder = auto::Builder<TokioExecutor>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a client's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Http1,
    Http2,
    /// Only the start of the h2 preface so far: the auto builder decides.
    Unknown,
}

impl Sniffed {
    /// What a TLS client chose by ALPN: `h2` is HTTP/2, `http/1.1`
    /// HTTP/1.1, and a client that offered no ALPN (old HTTP/1.1 clients,
    /// h2 clients with prior knowledge) goes to the auto builder, which
    /// tells them apart from their first bytes.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Sniffed {
        match alpn {
            Some(b"h2") => Sniffed::Http2,
            Some(b"http/1.1") => Sniffed::Http1,
            _ => Sniffed::Unknown,
        }
    }
}

/// One listener's connection builders: one per protocol, and the auto
/// builder for a client whose first bytes do not tell yet.
pub struct Builders {
    auto: Builder,
    http1: http1::Builder,
    http2: Builder,
}

impl Builders {
    /// `auto` carries the settings of both protocols; `http1` must carry
    /// the same HTTP/1 settings (hyper-util does not hand its own out).
    pub fn new(auto: Builder, http1: http1::Builder) -> Builders {
        Builders {
            http1,
            http2: auto.clone().http2_only(),
            auto,
        }
    }

    /// Waits for the client's first bytes, leaves them in the socket, and
    /// says which protocol to serve the connection with; `None` when the
    /// client closed or the connection failed before sending anything.
    ///
    /// One peek, never a loop: peeking does not consume, so waiting for more
    /// bytes by peeking again would spin. A client whose first bytes are
    /// only the start of the preface (a split h2 preface, or a hostile
    /// client) goes to the auto builder, which reads them itself, at the
    /// cost of the larger buffer for that connection.
    pub async fn sniff(&self, stream: &TcpStream) -> Option<Sniffed> {
        let mut first = [0u8; H2_PREFACE.len()];
        let n = stream.peek(&mut first).await.ok().filter(|&n| n > 0)?;
        Some(if first[..n] != H2_PREFACE[..n] {
            Sniffed::Http1
        } else if n == H2_PREFACE.len() {
            Sniffed::Http2
        } else {
            Sniffed::Unknown
        })
    }

    /// Serves one connection in the protocol sniffed until it ends. Once
    /// `stop` is set, the connection takes no new request, finishes the
    /// ones in flight and closes.
    pub async fn serve<I, S, B>(
        &self,
        how: Sniffed,
        io: I,
        svc: S,
        stop: Option<&mut watch::Receiver<bool>>,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // Each connection is boxed at its own size: inline, the task of
        // every connection would be as large as the largest of the three
        // (an h2 connection), and an idle HTTP/1.1 connection would pay for it.
        match how {
            Sniffed::Http1 => {
                let conn = Box::pin(self.http1.serve_connection(io, svc).with_upgrades());
                until_stopped(conn, stop, |c| c.as_mut().graceful_shutdown()).await
            }
            Sniffed::Http2 => {
                let conn = Box::pin(self.http2.serve_connection(io, svc));
                until_stopped(conn, stop, |c| c.as_mut().graceful_shutdown()).await
            }
            Sniffed::Unknown => {
                let conn = Box::pin(self.auto.serve_connection_with_upgrades(io, svc));
                until_stopped(conn, stop, |c| c.as_mut().graceful_shutdown()).await
            }
        }
    }
}

/// Runs `conn` to its end; when `stop` is set first, asks it to shut down
/// gracefully and runs it to its end still.
async fn until_stopped<C: Future + Unpin>(
    mut conn: C,
    stop: Option<&mut watch::Receiver<bool>>,
    shutdown: impl FnOnce(&mut C),
) {
    let Some(stop) = stop else {
        conn.await;
        return;
    };
    let stopped = async {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::select! {
        _ = &mut conn => return,
        _ = stopped => {}
    }
    shutdown(&mut conn);
    conn.await;
}
