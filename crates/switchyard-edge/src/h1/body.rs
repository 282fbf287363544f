//! A request body read straight from the client's socket as the proxy pulls
//! it: length-delimited or chunked (RFC 9112 §6, §7.1), with trailers. The
//! connection task writes the response on the same socket meanwhile, so a
//! request body streams upstream while the answer streams back (full
//! duplex), and a client that sends slowly is read only as fast as the
//! instance takes the bytes (back-pressure through the socket's buffers).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::pool;

/// What the body reader and the connection task share: the socket and where
/// the request body stands.
pub(super) struct Shared {
    pub io: TcpStream,
    pub state: Mutex<ReadState>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, ReadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) struct ReadState {
    /// Bytes read past the request head: body, then perhaps the next
    /// (pipelined) request. `None` while nothing is buffered.
    pub buf: Option<BytesMut>,
    pub decoder: Decoder,
    pub expect: Continue,
    /// Which request the body belongs to: once its response is written the
    /// connection moves on, and a body handle still held somewhere must
    /// read no more of the socket.
    pub generation: u64,
    /// The largest trailer section taken, as for a request head.
    pub max_trailers: usize,
}

impl ReadState {
    pub fn new(max_trailers: usize) -> ReadState {
        ReadState {
            buf: None,
            decoder: Decoder::Done,
            expect: Continue::No,
            generation: 0,
            max_trailers,
        }
    }

    /// Gives the buffer back to the pool when it holds nothing.
    pub fn release_empty(&mut self) {
        if self.buf.as_ref().is_some_and(|b| b.is_empty()) {
            pool::give_read(self.buf.take().expect("checked"));
        }
    }
}

impl Drop for ReadState {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            pool::give_read(b);
        }
    }
}

/// `Expect: 100-continue` (RFC 9110 §10.1.1): the interim answer goes out
/// when the body is first read, unless the final answer went first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Continue {
    No,
    Wanted,
    /// Written up to this many bytes of [`CONTINUE`].
    Writing(usize),
    Sent,
    /// The response began before anyone read the body: the client, still
    /// waiting, may never send it.
    Skipped,
}

pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The longest chunk-size line (size and extensions) taken.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoder {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

pub(super) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    NeedMore,
    End,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the request body ended")]
    Closed,
    #[error("malformed chunked body: {0}")]
    Malformed(&'static str),
    #[error("reading the request body failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection has moved on past this request")]
    Detached,
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }

    /// The next piece of the body out of `buf`, consuming what it used.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        max_trailers: usize,
    ) -> Result<Decoded, BodyError> {
        loop {
            match self {
                Decoder::Done | Decoder::Length(0) => {
                    *self = Decoder::Done;
                    return Ok(Decoded::End);
                }
                Decoder::Length(n) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let k = (*n).min(buf.len() as u64) as usize;
                    *n -= k as u64;
                    return Ok(Decoded::Data(take(buf, k)));
                }
                Decoder::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Decoder::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(BodyError::Malformed("a chunk-size line over 4096 bytes"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(BodyError::Malformed("invalid chunk size")),
                },
                Decoder::Chunked(Chunk::Data(n)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let k = (*n).min(buf.len() as u64) as usize;
                    *n -= k as u64;
                    if *n == 0 {
                        *self = Decoder::Chunked(Chunk::DataEnd);
                    }
                    return Ok(Decoded::Data(take(buf, k)));
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Trailers) => {
                    let mut hs = [httparse::EMPTY_HEADER; 64];
                    match httparse::parse_headers(buf, &mut hs) {
                        Ok(httparse::Status::Complete((used, parsed))) => {
                            let mut map = HeaderMap::with_capacity(parsed.len());
                            for h in parsed {
                                let name = HeaderName::from_bytes(h.name.as_bytes())
                                    .map_err(|_| BodyError::Malformed("invalid trailer name"))?;
                                let value = HeaderValue::from_bytes(h.value)
                                    .map_err(|_| BodyError::Malformed("invalid trailer value"))?;
                                map.append(name, value);
                            }
                            buf.advance(used);
                            *self = Decoder::Done;
                            if !map.is_empty() {
                                return Ok(Decoded::Trailers(map));
                            }
                        }
                        Ok(httparse::Status::Partial) if buf.len() > max_trailers => {
                            return Err(BodyError::Malformed("trailers over the header size limit"))
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(httparse::Error::TooManyHeaders) => {
                            return Err(BodyError::Malformed("more than 64 trailer fields"))
                        }
                        Err(_) => return Err(BodyError::Malformed("invalid trailer section")),
                    }
                }
            }
        }
    }

    /// The bytes still to come, when the framing says.
    fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            Decoder::Chunked(_) => None,
        }
    }
}

/// Copies `k` bytes out: the buffer goes back to the pool whole, rather
/// than stay pinned by a frame still on its way upstream.
fn take(buf: &mut BytesMut, k: usize) -> Bytes {
    let b = Bytes::copy_from_slice(&buf[..k]);
    buf.advance(k);
    b
}

/// One step of reading the body from the socket: decodes what is buffered,
/// reads more when that is not enough.
pub(super) fn poll_decode(
    shared: &Shared,
    st: &mut ReadState,
    cx: &mut Context<'_>,
) -> Poll<Result<Decoded, BodyError>> {
    loop {
        if let Some(direct) = poll_read_direct(shared, st, cx) {
            return direct;
        }
        let buf = st.buf.get_or_insert_with(pool::take_read);
        match st.decoder.decode(buf, st.max_trailers)? {
            Decoded::NeedMore => {}
            other => {
                st.release_empty();
                return Poll::Ready(Ok(other));
            }
        }
        match shared.io.poll_read_ready(cx) {
            Poll::Pending => {
                // A client that trickles its body holds no buffer meanwhile.
                st.release_empty();
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Ready(Ok(())) => {}
        }
        let buf = st.buf.get_or_insert_with(pool::take_read);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(pool::BUF_SIZE);
        }
        match shared.io.try_read_buf(buf) {
            Ok(0) => return Poll::Ready(Err(BodyError::Closed)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e.into())),
        }
    }
}

/// The most a direct read takes in one frame: what nginx and HAProxy move
/// per read on a large body.
const DIRECT_MAX: usize = 64 * 1024;

/// Below this many bytes still due, data goes through the pooled buffer.
const DIRECT_MIN: u64 = 16 * 1024;

/// A large body's data read from the socket straight into a frame of its
/// own, up to 64 KiB at a time, with nothing buffered in between: the pooled
/// 8 KiB buffer would cut it into small frames and copy each one out. `None`
/// when the pooled path applies (bytes already buffered, a chunk-size line
/// or trailers to parse, little left).
fn poll_read_direct(
    shared: &Shared,
    st: &mut ReadState,
    cx: &mut Context<'_>,
) -> Option<Poll<Result<Decoded, BodyError>>> {
    if st.buf.as_ref().is_some_and(|b| !b.is_empty()) {
        return None;
    }
    let due = match st.decoder {
        Decoder::Length(n) | Decoder::Chunked(Chunk::Data(n)) if n >= DIRECT_MIN => n,
        _ => return None,
    };
    st.release_empty();
    let want = due.min(DIRECT_MAX as u64) as usize;
    let mut frame = BytesMut::with_capacity(want);
    loop {
        let room = want - frame.len();
        match shared.io.try_read_buf(&mut (&mut frame).limit(room)) {
            Ok(0) if frame.is_empty() => return Some(Poll::Ready(Err(BodyError::Closed))),
            Ok(0) => break,
            Ok(_) if frame.len() == want => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !frame.is_empty() {
                    break;
                }
                match shared.io.poll_read_ready(cx) {
                    Poll::Pending => return Some(Poll::Pending),
                    Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e.into()))),
                    Poll::Ready(Ok(())) => {}
                }
            }
            Err(e) => return Some(Poll::Ready(Err(e.into()))),
        }
    }
    let got = frame.len() as u64;
    st.decoder = match st.decoder {
        Decoder::Length(n) => Decoder::Length(n - got),
        Decoder::Chunked(Chunk::Data(n)) if n == got => Decoder::Chunked(Chunk::DataEnd),
        Decoder::Chunked(Chunk::Data(n)) => Decoder::Chunked(Chunk::Data(n - got)),
        other => other,
    };
    Some(Poll::Ready(Ok(Decoded::Data(frame.freeze()))))
}

/// Writes the rest of `100 Continue`, if it is owed.
fn poll_continue(
    shared: &Shared,
    st: &mut ReadState,
    cx: &mut Context<'_>,
) -> Poll<Result<(), BodyError>> {
    if st.expect == Continue::Wanted {
        st.expect = Continue::Writing(0);
    }
    while let Continue::Writing(off) = st.expect {
        match shared.io.try_write(&CONTINUE[off..]) {
            Ok(n) if off + n == CONTINUE.len() => st.expect = Continue::Sent,
            Ok(n) => st.expect = Continue::Writing(off + n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                match shared.io.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Ready(Ok(())) => {}
                }
            }
            Err(e) => return Poll::Ready(Err(e.into())),
        }
    }
    Poll::Ready(Ok(()))
}

/// A request body on the edge's own HTTP/1 server.
pub struct RequestBody {
    shared: Option<Arc<Shared>>,
    generation: u64,
}

impl RequestBody {
    pub(super) fn empty() -> RequestBody {
        RequestBody {
            shared: None,
            generation: 0,
        }
    }

    pub(super) fn new(shared: Arc<Shared>, generation: u64) -> RequestBody {
        RequestBody {
            shared: Some(shared),
            generation,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(shared) = &this.shared else {
            return Poll::Ready(None);
        };
        let mut st = shared.lock();
        if st.generation != this.generation {
            return Poll::Ready(Some(Err(BodyError::Detached)));
        }
        if let Err(e) = std::task::ready!(poll_continue(shared, &mut st, cx)) {
            return Poll::Ready(Some(Err(e)));
        }
        match std::task::ready!(poll_decode(shared, &mut st, cx)) {
            Ok(Decoded::Data(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Ok(Decoded::Trailers(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(Decoded::End) | Ok(Decoded::NeedMore) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        let st = shared.lock();
        st.generation != self.generation || st.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        let Some(shared) = &self.shared else {
            return SizeHint::with_exact(0);
        };
        let st = shared.lock();
        if st.generation != self.generation {
            return SizeHint::with_exact(0);
        }
        match st.decoder.remaining() {
            Some(n) => {
                // Bytes already buffered are still to be handed on.
                SizeHint::with_exact(n)
            }
            None => SizeHint::default(),
        }
    }
}
