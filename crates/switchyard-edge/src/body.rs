//! Bodies on the request path, streamed both ways with back-pressure: the
//! edge holds at most one frame of each (plus the bounded replay copy of a
//! small request body), whatever their size. The request body enforces the
//! client's limits as it is pulled by the upstream connection; the response
//! body enforces the route's total timeout and reports how the exchange
//! ended, so accounting happens once the last byte is through.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::error::{EdgeError, ErrorKind};
use crate::grpc::Code;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body as the server that read its head hands it over:
/// hyper's (h2, h2c, TLS, upgrades) or the edge's own HTTP/1 server's. The
/// proxy and the admin API read both through this one type.
pub enum Inbound {
    Hyper(Incoming),
    H1(crate::h1::RequestBody),
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Inbound::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            Inbound::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Hyper(b) => b.is_end_stream(),
            Inbound::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Hyper(b) => b.size_hint(),
            Inbound::H1(b) => b.size_hint(),
        }
    }
}

/// What one request body has done so far, shared by the task routing the
/// request and the body as the upstream connection pulls it.
#[derive(Debug, Default)]
pub struct Progress {
    bytes: AtomicU64,
    /// The whole body has been handed to the upstream connection.
    done: AtomicBool,
    done_notify: Notify,
    /// The last poll found nothing from the client: a stall now is the
    /// client's, not the instance's.
    waiting_on_client: AtomicBool,
    error: Mutex<Option<EdgeError>>,
}

impl Progress {
    /// Bytes of the body read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn mark_done(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.done_notify.notify_waiters();
        }
    }

    /// Resolves once the whole body has been handed on.
    pub async fn wait_done(&self) {
        let notified = self.done_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_done() {
            return;
        }
        notified.await;
    }

    pub fn waiting_on_client(&self) -> bool {
        !self.is_done() && self.waiting_on_client.load(Ordering::Acquire)
    }

    /// Why reading the client's body failed, if it did: that, not what the
    /// upstream connection made of the aborted request, is the outcome.
    pub fn error(&self) -> Option<EdgeError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn fail(&self, e: EdgeError) -> BoxError {
        let boxed: BoxError = Box::new(e.clone());
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        boxed
    }
}

/// The client's limits on a request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The longest wait for the client's next bytes.
    pub stall: Duration,
    /// When the whole body must have arrived, `total` after it began.
    pub deadline: Instant,
    pub total: Duration,
}

impl BodyLimits {
    pub fn of(e: &switchyard_model::config::EdgeSettings) -> BodyLimits {
        BodyLimits {
            max_bytes: e.max_body_bytes,
            stall: e.client_body_timeout,
            deadline: Instant::now() + e.client_body_total_timeout,
            total: e.client_body_total_timeout,
        }
    }
}

/// A client's request body as the upstream connection pulls it: the part
/// already read (the replay copy's overflow) first, then the rest from the
/// client under its limits.
pub struct ClientBody {
    head: VecDeque<Bytes>,
    head_len: u64,
    inner: Inbound,
    limits: BodyLimits,
    progress: Arc<Progress>,
    stall: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl ClientBody {
    fn new(inner: Inbound, limits: BodyLimits, progress: Arc<Progress>) -> ClientBody {
        ClientBody {
            head: VecDeque::new(),
            head_len: 0,
            inner,
            limits,
            progress,
            stall: None,
            failed: false,
        }
    }

    fn fail(&mut self, e: EdgeError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failed = true;
        Poll::Ready(Some(Err(self.progress.fail(e))))
    }

    fn stalled(&self) -> EdgeError {
        EdgeError::new(
            ErrorKind::RequestTimeout,
            format!(
                "the request body stalled ({} bytes received; {:?} allowed between reads, {:?} in all)",
                self.progress.bytes(),
                self.limits.stall,
                self.limits.total,
            ),
        )
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if let Some(b) = this.head.pop_front() {
            this.head_len -= b.len() as u64;
            if this.head.is_empty() && this.inner.is_end_stream() {
                this.progress.mark_done();
            }
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall = None;
                this.progress
                    .waiting_on_client
                    .store(false, Ordering::Release);
                if let Some(d) = frame.data_ref() {
                    let total = this
                        .progress
                        .bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed)
                        + d.len() as u64;
                    if total > this.limits.max_bytes as u64 {
                        let max = this.limits.max_bytes;
                        return this.fail(EdgeError::new(
                            ErrorKind::PayloadTooLarge,
                            format!("request body exceeds the limit of {max} bytes"),
                        ));
                    }
                }
                if this.inner.is_end_stream() {
                    this.progress.mark_done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(EdgeError::new(
                ErrorKind::BadRequest,
                format!("could not read the request body: {e}"),
            )),
            Poll::Ready(None) => {
                this.progress.mark_done();
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.progress
                    .waiting_on_client
                    .store(true, Ordering::Release);
                let (stall, deadline) = (this.limits.stall, this.limits.deadline);
                let sleep = this.stall.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(
                        (Instant::now() + stall).min(deadline),
                    ))
                });
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let e = this.stalled();
                        this.fail(e)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let end = self.head.is_empty() && self.inner.is_end_stream();
        if end {
            // hyper stops pulling once this is true; the body is through.
            self.progress.mark_done();
        }
        end || self.failed
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(inner.lower() + self.head_len);
        if let Some(u) = inner.upper() {
            h.set_upper(u + self.head_len);
        }
        h
    }
}

/// A request body after the edge has read up to the replay limit of it.
pub enum RequestBody {
    /// The whole body fit: it can be sent as often as needed.
    Whole(Bytes),
    /// It outgrew the replay copy: sent once, as it streams in.
    Streaming(Option<Box<ClientBody>>),
}

/// A request body sent as it arrives, with no replay copy: for streams
/// whose client may wait for an answer before it sends more (gRPC), where
/// holding bytes back to fill a replay copy would stall the call.
pub fn stream_from_start(
    body: Inbound,
    headers: &HeaderMap,
    limits: BodyLimits,
    progress: Arc<Progress>,
) -> Result<RequestBody, EdgeError> {
    check_length(headers, limits)?;
    if body.is_end_stream() {
        progress.mark_done();
        return Ok(RequestBody::Whole(Bytes::new()));
    }
    Ok(RequestBody::Streaming(Some(Box::new(ClientBody::new(
        body, limits, progress,
    )))))
}

fn check_length(headers: &HeaderMap, limits: BodyLimits) -> Result<(), EdgeError> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > limits.max_bytes as u64 => {
                return Err(EdgeError::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "request body is {n} bytes; the limit is {}",
                        limits.max_bytes
                    ),
                ))
            }
            Some(_) => {}
            None => {
                return Err(EdgeError::new(
                    ErrorKind::BadRequest,
                    "Content-Length is not a number",
                ))
            }
        }
    }
    Ok(())
}

/// Reads a request body until it ends or outgrows `replay_limit` bytes,
/// under the client's limits. A body that ends within the limit comes back
/// whole; a longer one keeps what was read in front of the rest.
pub async fn read_up_to(
    body: Inbound,
    headers: &HeaderMap,
    limits: BodyLimits,
    replay_limit: usize,
    progress: Arc<Progress>,
) -> Result<RequestBody, EdgeError> {
    check_length(headers, limits)?;
    let mut body = ClientBody::new(body, limits, progress.clone());
    let mut read: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while len <= replay_limit {
        if body.inner.is_end_stream() {
            break;
        }
        match body.frame().await {
            None => break,
            Some(Err(_)) => return Err(progress.error().expect("the body records why it failed")),
            Some(Ok(f)) => {
                // Trailers end the body; an HTTP/1.1 instance cannot take
                // them from a buffered body anyway.
                if let Ok(d) = f.into_data() {
                    len += d.len();
                    read.push(d);
                }
            }
        }
    }
    if len <= replay_limit {
        progress.mark_done();
        let whole = match read.len() {
            0 => Bytes::new(),
            1 => read.pop().expect("one chunk"),
            _ => {
                let mut b = bytes::BytesMut::with_capacity(len);
                for c in read {
                    b.extend_from_slice(&c);
                }
                b.freeze()
            }
        };
        return Ok(RequestBody::Whole(whole));
    }
    body.head_len = len as u64;
    body.head = read.into();
    Ok(RequestBody::Streaming(Some(Box::new(body))))
}

impl RequestBody {
    pub fn replayable(&self) -> bool {
        matches!(self, RequestBody::Whole(_))
    }

    /// The body for one attempt, or `None` when a streamed body has already
    /// been sent.
    pub fn for_attempt(&mut self) -> Option<UpstreamBody> {
        match self {
            RequestBody::Whole(b) => Some(WholeOr::Whole(Full::new(b.clone()))),
            RequestBody::Streaming(s) => s.take().map(WholeOr::Stream),
        }
    }
}

/// A request body on its way to an instance or another edge.
pub type UpstreamBody = WholeOr<ClientBody>;

impl UpstreamBody {
    pub fn empty() -> UpstreamBody {
        WholeOr::Whole(Full::new(Bytes::new()))
    }

    pub fn whole(bytes: Bytes) -> UpstreamBody {
        WholeOr::Whole(Full::new(bytes))
    }
}

/// How a streamed response ended.
#[derive(Debug)]
pub enum Ending {
    /// Every byte was handed to the client's connection.
    Complete,
    /// The upstream failed mid-body or the total timeout cut it.
    Failed(EdgeError),
    /// The client went away (or its connection broke) first: nothing the
    /// instance did.
    Abandoned,
}

/// Told once how a streamed response ended, how many body bytes went out
/// and the `grpc-status` of its trailers, if it had any.
pub trait OnEnd: Send {
    fn end(self: Box<Self>, ending: Ending, bytes_out: u64, grpc_status: Option<Code>);
}

/// An instance's (or another edge's) response body on its way to the
/// client, cut at the route's total deadline.
pub struct Streamed {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    total: Duration,
    from: String,
    bytes: u64,
    /// The `grpc-status` the trailers carried: a gRPC call's outcome.
    grpc_status: Option<Code>,
    /// A gRPC response: a failure mid-stream ends it with trailers that
    /// carry the status, not a reset the client can only guess at.
    grpc: bool,
    on_end: Option<Box<dyn OnEnd>>,
}

impl Streamed {
    pub fn new(
        inner: Incoming,
        deadline: Instant,
        total: Duration,
        from: String,
        on_end: Box<dyn OnEnd>,
    ) -> Streamed {
        Streamed {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            total,
            from,
            bytes: 0,
            grpc_status: None,
            grpc: false,
            on_end: Some(on_end),
        }
    }

    /// Marks the response as gRPC (see `grpc`).
    pub fn grpc(mut self, grpc: bool) -> Streamed {
        self.grpc = grpc;
        self
    }

    fn end(&mut self, ending: Ending) {
        if let Some(f) = self.on_end.take() {
            f.end(ending, self.bytes, self.grpc_status);
        }
    }

    fn fail(&mut self, e: EdgeError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.grpc {
            let trailers = crate::grpc::error_trailers(&e);
            self.grpc_status = Some(crate::grpc::code_for(&e));
            self.end(Ending::Failed(e));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let boxed: BoxError = Box::new(e.clone());
        self.end(Ending::Failed(e));
        Poll::Ready(Some(Err(boxed)))
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.on_end.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                } else if let Some(t) = frame.trailers_ref() {
                    this.grpc_status = Code::of(t);
                }
                if this.inner.is_end_stream() {
                    this.end(Ending::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let msg = format!(
                    "reading the response from {} failed after {} bytes: {e}",
                    this.from, this.bytes
                );
                this.fail(EdgeError::new(ErrorKind::UpstreamProtocol, msg))
            }
            Poll::Ready(None) => {
                this.end(Ending::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let msg = format!(
                        "{} did not finish its response within {} ms ({} body bytes sent)",
                        this.from,
                        this.total.as_millis(),
                        this.bytes
                    );
                    this.fail(EdgeError::new(ErrorKind::UpstreamTimeout, msg))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.on_end.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let ending = if self.inner.is_end_stream() {
            Ending::Complete
        } else {
            Ending::Abandoned
        };
        self.end(ending);
    }
}

/// What the edge answers a client with: its own answer, whole, or an
/// upstream's, streamed.
pub type EdgeBody = WholeOr<Streamed>;

/// A body the edge made whole (an error, a small replayable request body)
/// or one it streams through; both directions use it.
pub enum WholeOr<S> {
    Whole(Full<Bytes>),
    Stream(Box<S>),
}

impl<S: Body<Data = Bytes, Error = BoxError> + Unpin> Body for WholeOr<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            WholeOr::Whole(f) => Pin::new(f).poll_frame(cx).map_err(|e| match e {}),
            WholeOr::Stream(s) => Pin::new(s.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            WholeOr::Whole(f) => f.is_end_stream(),
            WholeOr::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            WholeOr::Whole(f) => f.size_hint(),
            WholeOr::Stream(s) => s.size_hint(),
        }
    }
}
