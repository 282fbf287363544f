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

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

/// What an h2c client with prior knowledge sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

type Builder = auto::Builder<TokioExecutor>;

/// One listener's connection builders: one per protocol, and the auto
/// builder for a client whose first bytes do not tell yet.
pub struct Builders {
    auto: Builder,
    http1: Builder,
    http2: Builder,
}

impl Builders {
    pub fn new(auto: Builder) -> Builders {
        Builders {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        }
    }

    /// The builder for a TLS connection whose client chose `alpn`: `h2` is
    /// HTTP/2, `http/1.1` HTTP/1.1, and a client that offered no ALPN (old
    /// HTTP/1.1 clients, h2 clients with prior knowledge) gets the auto
    /// builder, which tells them apart from their first bytes.
    pub fn for_alpn(&self, alpn: Option<&[u8]>) -> &Builder {
        match alpn {
            Some(b"h2") => &self.http2,
            Some(b"http/1.1") => &self.http1,
            _ => &self.auto,
        }
    }

    /// Waits for the client's first bytes, leaves them in the socket, and
    /// returns the builder to serve the connection with; `None` when the
    /// client closed or the connection failed before sending anything.
    ///
    /// One peek, never a loop: peeking does not consume, so waiting for more
    /// bytes by peeking again would spin. A client whose first bytes are
    /// only the start of the preface (a split h2 preface, or a hostile
    /// client) goes to the auto builder, which reads them itself, at the
    /// cost of the larger buffer for that connection.
    pub async fn sniff(&self, stream: &TcpStream) -> Option<&Builder> {
        let mut first = [0u8; H2_PREFACE.len()];
        let n = stream.peek(&mut first).await.ok().filter(|&n| n > 0)?;
        Some(if first[..n] != H2_PREFACE[..n] {
            &self.http1
        } else if n == H2_PREFACE.len() {
            &self.http2
        } else {
            &self.auto
        })
    }
}
