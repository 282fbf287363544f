//! The edge's own HTTP/1.x server for client connections on the plain
//! listener (issue 14). hyper's HTTP/1 server keeps an 8 KiB read buffer, an
//! 8 KiB write buffer and its dispatcher state for the life of every
//! connection; an edge holding ten thousand idle keep-alive connections paid
//! over 200 MiB for them. Here an idle connection is parked on
//! `TcpStream::readable()` holding no buffer, buffers are lent per request
//! from a per-thread pool (`pool`), and everything that exists only during a
//! request lives in a boxed future.
//!
//! One exchange: read and parse the head (`head`, on httparse, under the
//! head limits and the header timeout), hand the request to the service with
//! a body that reads the socket as it is pulled (`body`), write the response
//! head and stream its body frame by frame, then read whatever of the request
//! body nobody read (lingering, bounded) before the next request. A request
//! that asks for an `Upgrade` (WebSocket) hands the connection, with the
//! bytes already read, to hyper's HTTP/1 server for the rest of its life.

mod body;
mod head;
pub mod pool;

use std::future::poll_fn;
use std::io::ErrorKind as IoKind;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::{header, Method, Request, Response, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

pub use body::{BodyError, RequestBody};
pub use head::HeadLimits;

use self::body::{Continue, Decoded, ReadState, Shared, CONTINUE};
use self::head::Framing;
use crate::body::{BoxError, Inbound};
use crate::conn::Tracker;
use crate::error::EdgeError;
use crate::protocol::{Builders, Sniffed};
use crate::upgrade;

/// How long, and for how many bytes, the rest of a request body nobody
/// read is read and dropped after its response (nginx's `lingering_time`
/// is 30 s, `lingering_timeout` 5 s): long enough for a client still
/// uploading to see its answer (a `413`) rather than a reset.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
pub const LINGER_BYTES: u64 = 4 << 20;

/// A connection's settings, the same for every connection of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub head: HeadLimits,
    /// From the moment the connection waits for a head (accept, or the end
    /// of the previous response) until that head is complete.
    pub header_timeout: Duration,
    /// How long a connection may wait between requests with none in flight;
    /// the sooner of this and the header timeout closes it.
    pub idle_timeout: Duration,
}

/// What the connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// Hand the connection to hyper, these bytes first.
    Upgrade(Bytes),
}

/// Serves one client connection until it closes, it times out, or `stop`
/// is set (an idle connection closes at once; one with a request in flight
/// finishes it with `connection: close`).
///
/// This is all an idle connection's task holds, so it carries its own
/// timers (the first head is due by `first_head`, counted from accept)
/// rather than a watchdog beside it: every byte here is paid per idle
/// connection.
pub async fn serve<F, Fut, B>(
    stream: TcpStream,
    svc: Tracker<F>,
    settings: Settings,
    first_head: Instant,
    stop: &mut watch::Receiver<bool>,
    builders: &Builders,
) where
    F: Fn(Request<Inbound>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, std::convert::Infallible>>
        + Send
        + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let shared = Arc::new(Shared {
        io: stream,
        state: Mutex::new(ReadState::new(settings.head.max_bytes)),
    });
    // Bytes of the next request already read (pipelined), else nothing.
    let mut buf: Option<BytesMut> = None;
    let mut first = true;
    loop {
        let now = Instant::now();
        let deadline = if std::mem::take(&mut first) {
            first_head
        } else {
            now + settings.header_timeout
        };
        if buf.is_none() {
            // Parked: no buffer, only the socket's readiness.
            let parked_until = deadline.min(now + settings.idle_timeout);
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                r = tokio::time::timeout_at(parked_until, shared.io.readable()) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::debug!("closing a keep-alive connection that sent no request in time");
                        return;
                    }
                },
            }
            let mut b = pool::take_read();
            match shared.io.try_read_buf(&mut b) {
                Ok(n) if n > 0 => buf = Some(b),
                Err(e) if e.kind() == IoKind::WouldBlock => {
                    pool::give_read(b);
                    continue;
                }
                _ => {
                    pool::give_read(b);
                    return;
                }
            }
        }
        let next = Box::pin(exchange(&shared, &mut buf, &svc, settings, deadline, stop)).await;
        match next {
            Next::KeepAlive => {}
            Next::Close => {
                if let Some(b) = buf.take() {
                    pool::give_read(b);
                }
                return;
            }
            Next::Upgrade(prefix) => {
                let io = TokioIo::new(Rewind {
                    prefix,
                    shared: shared.clone(),
                });
                Box::pin(builders.serve(Sniffed::Http1, io, svc, Some(stop))).await;
                return;
            }
        }
    }
}

/// One request and its response.
async fn exchange<F, Fut, B>(
    shared: &Arc<Shared>,
    buf: &mut Option<BytesMut>,
    svc: &Tracker<F>,
    settings: Settings,
    deadline: Instant,
    stop: &mut watch::Receiver<bool>,
) -> Next
where
    F: Fn(Request<Inbound>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, std::convert::Infallible>>
        + Send
        + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let head = match read_head(shared, buf, settings.head, deadline).await {
        Ok(Some(h)) => h,
        Ok(None) => return Next::Close,
        Err(e) => {
            tracing::debug!(error = %e, "refusing a request head");
            answer_error(shared, &e).await;
            return Next::Close;
        }
    };
    let mut rest = buf.take().expect("a head was read into it");
    if upgrade::requested(head.req.version(), head.req.headers()) {
        let prefix = Bytes::copy_from_slice(&rest);
        pool::give_read(rest);
        return Next::Upgrade(prefix);
    }
    rest.advance(head.len);
    let head::Head {
        req,
        body: decoder,
        keep_alive,
        expect_continue,
        ..
    } = head;
    let generation = {
        let mut st = shared.lock();
        st.generation += 1;
        st.buf = Some(rest);
        st.release_empty();
        st.decoder = decoder;
        st.expect = if expect_continue && !decoder.is_done() {
            Continue::Wanted
        } else {
            Continue::No
        };
        st.generation
    };
    let method = req.method().clone();
    let version = req.version();
    let body = if decoder.is_done() {
        RequestBody::empty()
    } else {
        RequestBody::new(shared.clone(), generation)
    };
    let mut resp = svc.serve(req.map(|()| Inbound::H1(body)));
    let resp = if decoder.is_done() {
        // Nothing else reads the socket meanwhile: a client that closes
        // while it waits has given up, and its request is dropped (its
        // upstream request cancelled, its slot freed), as hyper does.
        tokio::select! {
            r = &mut resp => r,
            () = client_gone(&shared.io) => {
                tracing::debug!("the client closed its connection before its answer");
                return Next::Close;
            }
        }
    } else {
        resp.await
    };

    let (mut parts, body) = resp.into_parts();
    let mut keep = keep_alive && !*stop.borrow() && !says_close(&parts.headers);
    let framing = if !head::has_body(&method, parts.status) {
        if method != Method::HEAD && parts.status != http::StatusCode::NOT_MODIFIED {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        Framing::None
    } else if let Some(n) = body.size_hint().exact() {
        Framing::Length(n)
    } else if version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        keep = false;
        Framing::Close
    };
    let mut w = pool::take_write();
    {
        // A `100 Continue` the body reader began goes out whole before the
        // head; one not begun never will.
        let mut st = shared.lock();
        match st.expect {
            Continue::Wanted => st.expect = Continue::Skipped,
            Continue::Writing(off) => {
                w.extend_from_slice(&CONTINUE[off..]);
                st.expect = Continue::Sent;
            }
            _ => {}
        }
    }
    head::encode(&mut w, version, parts.status, &parts.headers, framing, keep);
    let written = write_body(&shared.io, &mut w, body, framing).await;
    pool::give_write(w);
    if let Err(e) = written {
        tracing::debug!(error = %e, "closing a connection whose response did not go out whole");
        return Next::Close;
    }

    // The request body: what nobody read is read and dropped, within
    // bounds, so that the connection can be used again or the client sees
    // the answer before the close.
    let (unread, skipped) = {
        let mut st = shared.lock();
        st.generation += 1;
        let unread = !st.decoder.is_done();
        (unread, unread && st.expect == Continue::Skipped)
    };
    if skipped {
        // The client waits for a `100 Continue` that will not come: it may
        // or may not send the body, so the connection cannot be reused.
        return Next::Close;
    }
    if unread && !drain(shared).await {
        lingering_close(shared).await;
        return Next::Close;
    }
    let rest = shared.lock().buf.take();
    if !keep {
        if let Some(b) = rest {
            pool::give_read(b);
        }
        return Next::Close;
    }
    *buf = rest.filter(|b| !b.is_empty());
    Next::KeepAlive
}

/// Resolves when the client closes its side; pipelined bytes do not count.
async fn client_gone(io: &TcpStream) {
    match io.peek(&mut [0u8; 1]).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

fn says_close(h: &http::HeaderMap) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Reads until a whole head is in `buf`: `Ok(None)` when the client closed
/// or the header timeout ran out first, an error (answered) for a head over
/// the limits or malformed.
async fn read_head(
    shared: &Shared,
    buf: &mut Option<BytesMut>,
    limits: HeadLimits,
    deadline: Instant,
) -> Result<Option<head::Head>, EdgeError> {
    let b = buf.get_or_insert_with(pool::take_read);
    loop {
        if !b.is_empty() {
            if let Some(h) = head::parse(b, limits)? {
                return Ok(Some(h));
            }
            if b.len() >= limits.max_bytes {
                return Err(EdgeError::new(
                    crate::error::ErrorKind::HeadersTooLarge,
                    format!("the request head is over {} bytes", limits.max_bytes),
                ));
            }
        }
        if b.capacity() - b.len() < 1024 {
            b.reserve(b.capacity().min(limits.max_bytes));
        }
        match tokio::time::timeout_at(deadline, shared.io.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ok(None),
            Err(_) => {
                tracing::debug!("closing a connection whose request head did not arrive in time");
                return Ok(None);
            }
        }
        match shared.io.try_read_buf(b) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == IoKind::WouldBlock => {}
            Err(_) => return Ok(None),
        }
    }
}

/// Answers a head the edge will not serve with its JSON error, then closes.
async fn answer_error(shared: &Shared, e: &EdgeError) {
    let resp = e.to_response(None);
    let body = e.json_body(None);
    let mut w = pool::take_write();
    head::encode(
        &mut w,
        Version::HTTP_11,
        resp.status(),
        resp.headers(),
        Framing::Length(body.len() as u64),
        false,
    );
    w.extend_from_slice(&body);
    let _ = write_all(&shared.io, &w).await;
    pool::give_write(w);
    lingering_close(shared).await;
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("writing to the client failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the response body failed: {0}")]
    Body(BoxError),
    #[error("the response body did not match its content-length of {0} bytes")]
    Length(u64),
}

/// Writes the head in `w` and the body after it, frame by frame: a frame
/// that is ready at once joins the head in one write, and `w` is flushed
/// before waiting for the next one.
async fn write_body<B>(
    io: &TcpStream,
    w: &mut Vec<u8>,
    mut body: B,
    framing: Framing,
) -> Result<(), WriteError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if matches!(framing, Framing::None) {
        drop(body);
        return Ok(write_all(io, w).await?);
    }
    let chunked = framing == Framing::Chunked;
    let mut sent: u64 = 0;
    let mut trailers = None;
    loop {
        let frame = match body.frame().now_or_never() {
            Some(f) => f,
            None => {
                write_all(io, w).await?;
                w.clear();
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| WriteError::Body(e.into()))?;
        let d = match frame.into_data() {
            Ok(d) => d,
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        if d.is_empty() {
            continue;
        }
        sent += d.len() as u64;
        if let Framing::Length(n) = framing {
            if sent > n {
                return Err(WriteError::Length(n));
            }
        }
        if chunked {
            head::chunk_size(w, d.len());
        }
        if w.len() + d.len() <= pool::BUF_SIZE {
            w.extend_from_slice(&d);
        } else {
            write_all(io, w).await?;
            w.clear();
            write_all(io, &d).await?;
        }
        if chunked {
            w.extend_from_slice(b"\r\n");
        }
    }
    drop(body);
    match framing {
        Framing::Length(n) if sent != n => return Err(WriteError::Length(n)),
        Framing::Chunked => head::last_chunk(w, trailers.as_ref()),
        _ => {}
    }
    write_all(io, w).await?;
    w.clear();
    Ok(())
}

async fn write_all(io: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match io.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == IoKind::WouldBlock => io.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and drops the rest of a request body nobody read, up to
/// [`LINGER_BYTES`] within [`LINGER_TIME`]; true when it ended in time.
async fn drain(shared: &Shared) -> bool {
    let mut dropped = 0u64;
    let read = poll_fn(|cx| {
        let mut st = shared.lock();
        loop {
            match ready!(body::poll_decode(shared, &mut st, cx)) {
                Ok(Decoded::Data(d)) => {
                    dropped += d.len() as u64;
                    if dropped > LINGER_BYTES {
                        return Poll::Ready(false);
                    }
                }
                Ok(Decoded::Trailers(_)) => {}
                Ok(Decoded::End | Decoded::NeedMore) => return Poll::Ready(true),
                Err(_) => return Poll::Ready(false),
            }
        }
    });
    tokio::time::timeout(LINGER_TIME, read)
        .await
        .unwrap_or(false)
}

/// Closes the sending side, then reads and drops what the client still
/// sends until it closes too or the linger bounds run out: closing with
/// unread bytes would reset the connection, and a reset can destroy the
/// answer before the client has read it.
async fn lingering_close(shared: &Shared) {
    shutdown_write(&shared.io);
    if let Some(b) = shared.lock().buf.take() {
        pool::give_read(b);
    }
    let mut scratch = [0u8; 2048];
    let mut dropped = 0u64;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while dropped < LINGER_BYTES {
            if shared.io.readable().await.is_err() {
                return;
            }
            match shared.io.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => dropped += n as u64,
                Err(e) if e.kind() == IoKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Sends FIN on a socket other handles may still share: through a
/// duplicate of its descriptor, which closes alone.
fn shutdown_write(io: &TcpStream) {
    use std::os::fd::AsFd;
    if let Ok(fd) = io.as_fd().try_clone_to_owned() {
        let _ = std::net::TcpStream::from(fd).shutdown(std::net::Shutdown::Write);
    }
}

/// The client's connection handed to hyper after an `Upgrade` request, the
/// bytes already read (that request's head, and whatever followed) first.
struct Rewind {
    prefix: Bytes,
    shared: Arc<Shared>,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let io = &this.shared.io;
        loop {
            ready!(io.poll_read_ready(cx))?;
            match io.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == IoKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let io = &self.shared.io;
        loop {
            ready!(io.poll_write_ready(cx))?;
            match io.try_write(data) {
                Err(e) if e.kind() == IoKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let io = &self.shared.io;
        loop {
            ready!(io.poll_write_ready(cx))?;
            match io.try_write_vectored(bufs) {
                Err(e) if e.kind() == IoKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        shutdown_write(&self.shared.io);
        Poll::Ready(Ok(()))
    }
}
