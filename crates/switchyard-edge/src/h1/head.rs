//! Request heads in (httparse, then the `http` types the proxy reads) and
//! response heads out, with the message framing rules of RFC 9112: which
//! body a request has, whether the connection stays open, and how a
//! response's body is delimited.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use super::body::Decoder;
use super::pool;
use crate::error::{EdgeError, ErrorKind};

/// A request head, parsed, and what it says about the connection.
pub(super) struct Head {
    pub req: Request<()>,
    /// Bytes the head took in the buffer.
    pub len: usize,
    pub body: Decoder,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// The limits a request head is parsed under: twice the edge's own, so a
/// head between one and two times a limit reaches the proxy, which answers
/// it in JSON with its service named; past them, this parser answers.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// Headers tried on the stack first: nearly every request has fewer.
const STACK_HEADERS: usize = 48;

/// Parses a request head from the front of `buf`: `Ok(None)` while it is
/// incomplete (the caller enforces the size limit).
pub(super) fn parse(buf: &[u8], limits: HeadLimits) -> Result<Option<Head>, EdgeError> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let n = limits.max_headers.min(STACK_HEADERS);
    match parse_with(buf, &mut stack[..n]) {
        Err(Retry) if limits.max_headers > STACK_HEADERS => {
            let mut heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
            parse_with(buf, &mut heap).map_err(|Retry| too_many(limits))?
        }
        Err(Retry) => Err(too_many(limits)),
        Ok(r) => r,
    }
}

struct Retry;

fn too_many(limits: HeadLimits) -> EdgeError {
    EdgeError::new(
        ErrorKind::HeadersTooLarge,
        format!("the request has more than {} headers", limits.max_headers),
    )
}

fn bad(msg: impl Into<String>) -> EdgeError {
    EdgeError::new(ErrorKind::BadRequest, msg)
}

#[allow(clippy::result_large_err)]
fn parse_with<'b>(
    buf: &'b [u8],
    slots: &mut [httparse::Header<'b>],
) -> Result<Result<Option<Head>, EdgeError>, Retry> {
    let mut r = httparse::Request::new(slots);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Ok(None)),
        Err(httparse::Error::TooManyHeaders) => return Err(Retry),
        Err(e) => return Ok(Err(bad(format!("malformed request head: {e}")))),
    };
    Ok(build(&r, len))
}

fn build(r: &httparse::Request<'_, '_>, len: usize) -> Result<Option<Head>, EdgeError> {
    let method = r.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| bad(format!("invalid method {method:?}")))?;
    let path = r.path.unwrap_or_default();
    let uri = Uri::try_from(path).map_err(|_| bad(format!("invalid request target {path:?}")))?;
    let version = match r.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad(format!("invalid header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| {
            bad(format!(
                "invalid value of header {}: {:?}",
                h.name,
                String::from_utf8_lossy(h.value)
            ))
        })?;
        headers.append(name, value);
    }
    let body = framing(version, &headers)?;
    let keep_alive = keep_alive(version, &headers);
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Ok(Some(Head {
        req,
        len,
        body,
        keep_alive,
        expect_continue,
    }))
}

/// How the request body is delimited (RFC 9112 §6.3). A request with both
/// Content-Length and Transfer-Encoding is refused: it is how request
/// smuggling between two parsers that disagree begins.
fn framing(version: Version, h: &HeaderMap) -> Result<Decoder, EdgeError> {
    let te: Vec<&HeaderValue> = h.get_all(header::TRANSFER_ENCODING).iter().collect();
    let has_cl = h.contains_key(header::CONTENT_LENGTH);
    if !te.is_empty() {
        if has_cl {
            return Err(bad(
                "the request has both Content-Length and Transfer-Encoding",
            ));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        if codings != ["chunked"] {
            return Err(bad(format!(
                "Transfer-Encoding {:?}: only chunked is accepted",
                codings.join(", ")
            )));
        }
        return Ok(Decoder::Chunked(super::body::Chunk::Size));
    }
    let mut length = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("?").split(',') {
            let part = part.trim();
            let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| bad(format!("Content-Length {part:?} is not a number")))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("the request has differing Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(Decoder::Length(length.unwrap_or(0)))
}

/// Whether the client wants the connection kept after this exchange:
/// HTTP/1.1 unless it says `close`, HTTP/1.0 only if it says `keep-alive`.
fn keep_alive(version: Version, h: &HeaderMap) -> bool {
    let has = |token: &str| {
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_10 => has("keep-alive") && !has("close"),
        _ => !has("close"),
    }
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body at all (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes: HTTP/1.0 with no known length.
    Close,
}

/// Whether a response to `method` with `status` carries a body.
pub(super) fn has_body(method: &Method, status: StatusCode) -> bool {
    !(method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Writes the status line and headers into `out`, framing the body as
/// `framing` says; `keep_alive` false adds `connection: close`.
pub(super) fn encode(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let own_length = !matches!(framing, Framing::None);
    for (k, v) in headers {
        if k == header::CONNECTION
            || k == header::TRANSFER_ENCODING
            || (own_length && k == header::CONTENT_LENGTH)
        {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        pool::put_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// A chunk's size line.
pub(super) fn chunk_size(out: &mut Vec<u8>, n: usize) {
    use std::io::Write;
    let _ = write!(out, "{n:x}\r\n");
}

/// The last chunk with the trailers, if any.
pub(super) fn last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (k, v) in trailers.into_iter().flatten() {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
