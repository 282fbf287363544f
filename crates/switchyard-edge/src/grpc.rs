//! gRPC as the edge sees it: which requests are gRPC, what a `grpc-status`
//! says about the instance that sent it, and how the edge's own refusals
//! are put to a gRPC client. A gRPC call fails with HTTP 200 and the status
//! in its trailers (or in the headers of a trailers-only response), so the
//! 5xx rule alone would count every failing call as a success, and a JSON
//! 503 would reach a gRPC client as a protocol error instead of a status.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::error::{EdgeError, ErrorKind};

pub const GRPC_STATUS: &str = "grpc-status";
pub const GRPC_MESSAGE: &str = "grpc-message";

/// Whether a request (or response) is gRPC: `content-type` is
/// `application/grpc` or one of its `+proto`, `+json`… forms.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.len() >= 16
                && ct[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// A gRPC status code (the numbers are the protocol's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub u32);

impl Code {
    pub const OK: Code = Code(0);
    pub const INVALID_ARGUMENT: Code = Code(3);
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    pub const INTERNAL: Code = Code(13);
    pub const UNIMPLEMENTED: Code = Code(12);
    pub const UNAVAILABLE: Code = Code(14);
    pub const UNAUTHENTICATED: Code = Code(16);
    pub const PERMISSION_DENIED: Code = Code(7);
    pub const UNKNOWN: Code = Code(2);
    pub const DEADLINE_EXCEEDED: Code = Code(4);

    /// The `grpc-status` of a header or trailer block, if it has a valid one.
    pub fn of(h: &HeaderMap) -> Option<Code> {
        let v = h.get(GRPC_STATUS)?.to_str().ok()?;
        v.trim().parse::<u32>().ok().map(Code)
    }

    /// Whether the code blames the server, as a 5xx does: it counts against
    /// the instance for outlier ejection and as an error in signals.
    /// UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL,
    /// UNAVAILABLE and DATA_LOSS do; the rest (CANCELLED, INVALID_ARGUMENT,
    /// NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, FAILED_PRECONDITION,
    /// ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, UNAUTHENTICATED) are answers
    /// about the request, like a 4xx, and an unknown number is taken as one
    /// too rather than eject instances on a code nobody defined.
    pub fn is_server_failure(self) -> bool {
        matches!(self.0, 2 | 4 | 8 | 13 | 14 | 15)
    }

    /// The code's name as gRPC spells it, for metric labels.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "OK",
            1 => "CANCELLED",
            2 => "UNKNOWN",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            _ => "OTHER",
        }
    }

    /// The code for an HTTP status, as gRPC's HTTP-to-gRPC mapping has it.
    pub fn from_http(s: StatusCode) -> Code {
        match s.as_u16() {
            400 => Code::INTERNAL,
            401 => Code::UNAUTHENTICATED,
            403 => Code::PERMISSION_DENIED,
            404 => Code::UNIMPLEMENTED,
            429 | 502 | 503 | 504 => Code::UNAVAILABLE,
            _ => Code::UNKNOWN,
        }
    }
}

/// The status a gRPC client gets for the edge's own refusal or failure.
pub fn code_for(e: &EdgeError) -> Code {
    use ErrorKind::*;
    match e.kind {
        BadRequest => Code::INVALID_ARGUMENT,
        UnknownService => Code::UNIMPLEMENTED,
        PayloadTooLarge | HeadersTooLarge | Shed | TooManyConnections => Code::RESOURCE_EXHAUSTED,
        RequestTimeout | UpstreamTimeout => Code::DEADLINE_EXCEEDED,
        ReadOnly | NoInstance | UpstreamConnect | UpstreamProtocol => Code::UNAVAILABLE,
        FaultAbort => Code::from_http(e.status()),
    }
}

/// The edge's answer to a gRPC request it cannot serve: a trailers-only
/// response (HTTP 200, the status in the headers, no body) that every gRPC
/// client reads as that status. The edge's error code rides along in
/// `x-switchyard-error`, as on every other answer of its own.
pub fn error_response(e: &EdgeError) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.headers_mut() = error_trailers(e);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// The trailers that end a gRPC response the edge had to cut (the instance
/// broke off, or the route's total timeout ran out): the status a client
/// reads instead of a stream reset.
pub fn error_trailers(e: &EdgeError) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        HeaderName::from_static(GRPC_STATUS),
        HeaderValue::from(code_for(e).0),
    );
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&e.message)) {
        h.insert(HeaderName::from_static(GRPC_MESSAGE), v);
    }
    h.insert(
        "x-switchyard-error",
        HeaderValue::from_static(e.kind.code()),
    );
    h
}

/// `grpc-message` is percent-encoded UTF-8: every byte outside printable
/// ASCII, and `%` itself, as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_told_apart() {
        let mut h = HeaderMap::new();
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc; charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
    }

    #[test]
    fn server_codes_count_and_client_codes_do_not() {
        for c in [2, 4, 8, 13, 14, 15] {
            assert!(Code(c).is_server_failure(), "{}", Code(c).name());
        }
        for c in [0, 1, 3, 5, 6, 7, 9, 10, 11, 12, 16, 99] {
            assert!(!Code(c).is_server_failure(), "{}", Code(c).name());
        }
    }

    #[test]
    fn a_shed_request_gets_resource_exhausted_with_the_reason() {
        let e = EdgeError::new(ErrorKind::Shed, "shed: 100% over ünits");
        let r = error_response(&e);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[GRPC_STATUS], "8");
        assert_eq!(r.headers()[GRPC_MESSAGE], "shed: 100%25 over %C3%BCnits");
    }
}
