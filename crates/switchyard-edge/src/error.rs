//! Every way a request can fail at the edge, classified by where the failure
//! came from and whether another attempt could succeed. The classification
//! drives the status code, the retry decision and outlier ejection.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use switchyard_model::signals::ErrorClass;

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request itself is wrong; nothing upstream was tried.
    Client,
    /// The edge chose not to serve it (shed, read-only, fault).
    Edge,
    /// An instance or another region's edge failed.
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    BadRequest,
    UnknownService,
    PayloadTooLarge,
    HeadersTooLarge,
    /// The request body did not arrive in time (between two reads or in all).
    RequestTimeout,
    Shed,
    /// The client (or all clients) hold as many connections as allowed.
    TooManyConnections,
    ReadOnly,
    /// An injected abort; answered with the fault's status.
    FaultAbort,
    /// No instance could be chosen at all.
    NoInstance,
    /// TCP connect refused, reset or timed out, the TLS handshake failed
    /// (the target's certificate, or it refused ours), or an HTTP/2 stream
    /// was reset with REFUSED_STREAM: the request never reached the
    /// application.
    UpstreamConnect,
    /// Connected, but no response head within the header timeout, or the
    /// whole exchange overran the total timeout.
    UpstreamTimeout,
    /// The connection broke mid-exchange or the peer spoke bad HTTP.
    UpstreamProtocol,
}

impl ErrorKind {
    pub fn origin(self) -> Origin {
        use ErrorKind::*;
        match self {
            BadRequest | UnknownService | PayloadTooLarge | HeadersTooLarge | RequestTimeout => {
                Origin::Client
            }
            Shed | TooManyConnections | ReadOnly | FaultAbort => Origin::Edge,
            NoInstance | UpstreamConnect | UpstreamTimeout | UpstreamProtocol => Origin::Upstream,
        }
    }

    /// Whether trying another instance may help. A connect failure never
    /// reached the instance, so it is always safe to try elsewhere.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::UpstreamConnect)
    }

    /// Whether it counts against the instance for outlier ejection.
    pub fn counts_against_instance(self) -> bool {
        matches!(
            self,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamTimeout | ErrorKind::UpstreamProtocol
        )
    }

    pub fn status(self) -> StatusCode {
        use ErrorKind::*;
        match self {
            BadRequest => StatusCode::BAD_REQUEST,
            UnknownService => StatusCode::NOT_FOUND,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Shed | TooManyConnections | ReadOnly | NoInstance => StatusCode::SERVICE_UNAVAILABLE,
            FaultAbort => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamConnect | UpstreamProtocol => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The class signals and the upstream-error metric record it under.
    /// Everything the client got wrong is one class there: it says nothing
    /// about the target, whichever way the request was wrong.
    pub fn class(self) -> ErrorClass {
        use ErrorKind::*;
        match self {
            BadRequest | UnknownService | PayloadTooLarge | HeadersTooLarge | RequestTimeout => {
                ErrorClass::BadRequest
            }
            Shed | TooManyConnections => ErrorClass::Shed,
            ReadOnly => ErrorClass::ReadOnly,
            FaultAbort => ErrorClass::Fault,
            NoInstance => ErrorClass::NoInstance,
            UpstreamConnect => ErrorClass::UpstreamConnect,
            UpstreamTimeout => ErrorClass::UpstreamTimeout,
            UpstreamProtocol => ErrorClass::UpstreamProtocol,
        }
    }

    /// The stable machine-readable name used in JSON bodies and the
    /// `x-switchyard-error` header.
    pub fn code(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadRequest => "bad_request",
            UnknownService => "unknown_service",
            PayloadTooLarge => "payload_too_large",
            HeadersTooLarge => "headers_too_large",
            RequestTimeout => "request_timeout",
            Shed => "shed",
            TooManyConnections => "too_many_connections",
            ReadOnly => "read_only",
            FaultAbort => "fault",
            NoInstance => "no_instance",
            UpstreamConnect => "upstream_connect",
            UpstreamTimeout => "upstream_timeout",
            UpstreamProtocol => "upstream_protocol",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct EdgeError {
    pub kind: ErrorKind,
    pub message: String,
    /// For `FaultAbort`: the injected status.
    pub status: Option<StatusCode>,
    /// For a TLS handshake that failed with an instance or a peer edge: why,
    /// as `switchyard_upstream_tls_handshake_failures_total` labels it.
    pub tls_reason: Option<&'static str>,
}

impl EdgeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EdgeError {
            kind,
            message: message.into(),
            status: None,
            tls_reason: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.kind.status())
    }

    /// The JSON body of the answer.
    pub fn json_body(&self, service: Option<&str>) -> Bytes {
        let body = serde_json::json!({
            "error": self.kind.code(),
            "reason": self.message,
            "service": service,
        });
        Bytes::from(body.to_string())
    }

    /// The JSON answer to the client. Deliberate rejections carry
    /// `Retry-After` so well-behaved clients back off.
    pub fn to_response(&self, service: Option<&str>) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.json_body(service)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(
            self.kind,
            ErrorKind::Shed
                | ErrorKind::TooManyConnections
                | ErrorKind::ReadOnly
                | ErrorKind::NoInstance
        ) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        h.insert(
            "x-switchyard-error",
            HeaderValue::from_static(self.kind.code()),
        );
        resp
    }
}
