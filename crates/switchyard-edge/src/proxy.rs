//! The request path, in phases: admit (limits, service, the body up to the
//! replay limit, shedding), route (region, then instance), dispatch (send with
//! timeouts, retry once where it is safe and the body can be sent again),
//! and record (metrics, signals, outlier ejection and the access log, once
//! the response body has streamed through).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use rand::Rng;
use switchyard_model::signals::ErrorClass;
use switchyard_model::time::now_ms;
use switchyard_model::{Fault, Route, RouteKind, ServiceControls, UpstreamProtocol};
use switchyard_steer::{AllUp, Target};

use crate::access_log::{self, Line};
use crate::body::{
    self, BodyLimits, EdgeBody, Ending, Inbound, OnEnd, Progress, RequestBody, Streamed,
    UpstreamBody, WholeOr,
};
use crate::error::{EdgeError, ErrorKind};
use crate::grpc;
use crate::metrics::{
    ErrorLabels, GrpcLabels, LatencyLabels, OutcomeLabels, RegionLabels, RequestLabels,
    ServiceLabels, ShedLabels,
};
use crate::outlier::{InstanceState, Outcome, Verdict};
use crate::shed::Permit;
use crate::signals::SeriesKey;
use crate::state::{Edge, ServiceRuntime, Snapshot};
use crate::upgrade;

pub const HOME_REGION: &str = "x-switchyard-home-region";
pub const FORWARDED: &str = "x-switchyard-forwarded";
pub const UPSTREAM: &str = "x-switchyard-upstream";
/// The deployment's forward secret, set by a forwarding edge next to
/// `FORWARDED`; a marker without it is a client's claim and is ignored.
pub const FORWARD_AUTH: &str = "x-switchyard-forward-auth";
/// Kept from the client when sane, else made here; sent to the instance,
/// returned to the client and written to the access log.
pub const REQUEST_ID: &str = "x-request-id";
/// The prefix of the edges' own headers. A client's are dropped before
/// routing, except the documented home-region header.
const INTERNAL_PREFIX: &str = "x-switchyard-";

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

type Resp = Response<EdgeBody>;

/// Entry point for every client request.
pub async fn handle(
    edge: Arc<Edge>,
    req: Request<Inbound>,
    peer: SocketAddr,
) -> Result<Resp, Infallible> {
    let snap = edge.snapshot();
    let grpc = grpc::is_grpc(req.headers());
    let mut rec = Record::begin(&edge, &req, peer);
    let request_id =
        HeaderValue::from_str(&rec.line.request_id).expect("request ids are visible ASCII");
    let mut resp = match serve(&edge, &snap, req, peer, &mut rec).await {
        Ok(served) => served.respond(rec),
        Err(e) => {
            // A gRPC client reads a status, not an HTTP error page; metrics
            // and the log still record the HTTP status the error stands for,
            // so an edge refusal is never counted as a 2xx.
            let resp = if grpc {
                rec.line.grpc_status = Some(grpc::code_for(&e).0);
                grpc::error_response(&e)
            } else {
                e.to_response(rec.line.service.as_deref())
            };
            let by = ServedBy::default();
            let bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
            rec.finish(e.status(), &by, bytes_out, Some(&e), None);
            resp.map(WholeOr::Whole)
        }
    };
    resp.headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID), request_id);
    Ok(resp)
}

/// One client request's bookkeeping from arrival to the last byte of its
/// answer: what the metrics, the access log and the limits need at the end.
struct Record {
    edge: Arc<Edge>,
    start: Instant,
    line: Line,
    progress: Arc<Progress>,
    kind: Option<RouteKind>,
    /// The concurrency slot, held until the response body has gone out: an
    /// instance streaming a response is still busy with it.
    permit: Option<Permit>,
    inflight: Option<GaugeGuard>,
}

struct GaugeGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where a request was served, as metrics label it and the log names it.
#[derive(Debug, Clone, Default)]
struct ServedBy {
    region: Option<String>,
    zone: Option<String>,
    instance: Option<String>,
    /// The metric labels: the instance's zone and name, or `region:R` and
    /// the remote edge's address for a forwarded request.
    zone_label: String,
    instance_label: String,
}

impl Record {
    fn begin(edge: &Arc<Edge>, req: &Request<Inbound>, peer: SocketAddr) -> Record {
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .map(|v| v.as_bytes())
            .filter(|v| access_log::sane_request_id(v))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
            .unwrap_or_else(access_log::new_request_id);
        // Only the id is needed when nothing is logged: the rest would be
        // formatting on every request for no reader.
        let line = match &edge.access_log {
            Some(_) => Line {
                time: access_log::timestamp(SystemTime::now()),
                request_id,
                client: peer.to_string(),
                method: req.method().to_string(),
                host: request_host(req).unwrap_or_default(),
                path: req.uri().path().to_string(),
                ..Line::default()
            },
            None => Line {
                request_id,
                ..Line::default()
            },
        };
        Record {
            edge: edge.clone(),
            start: Instant::now(),
            line,
            progress: Arc::new(Progress::default()),
            kind: None,
            permit: None,
            inflight: None,
        }
    }

    /// Counts the request and writes its log line; the slot is freed here.
    fn finish(
        mut self,
        status: StatusCode,
        by: &ServedBy,
        bytes_out: u64,
        error: Option<&EdgeError>,
        upstream: Option<Duration>,
    ) {
        let elapsed = self.start.elapsed();
        if let Some(service) = &self.line.service {
            count_request(
                &self.edge,
                service,
                self.kind,
                &by.zone_label,
                &by.instance_label,
                status,
                elapsed,
            );
        }
        if let Some(log) = &self.edge.access_log {
            let l = &mut self.line;
            l.status = status.as_u16();
            l.region = by.region.clone();
            l.zone = by.zone.clone();
            l.instance = by.instance.clone();
            l.bytes_in = self.progress.bytes();
            l.bytes_out = bytes_out;
            l.duration_ms = ms(elapsed);
            l.upstream_ms = upstream.map(ms);
            l.error = error.map(|e| e.kind.code().to_string());
            l.error_class = error.map(|e| e.kind.class().as_str().to_string());
            log.log(std::mem::take(l));
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

async fn serve(
    edge: &Arc<Edge>,
    snap: &Arc<Snapshot>,
    req: Request<Inbound>,
    peer: SocketAddr,
    rec: &mut Record,
) -> Result<Served, EdgeError> {
    let max_header = snap.config.edge.max_header_bytes;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > max_header {
        return Err(EdgeError::new(
            ErrorKind::HeadersTooLarge,
            format!("request headers are {header_bytes} bytes; the limit is {max_header}"),
        ));
    }
    let max_headers = snap.config.edge.max_headers;
    if req.headers().len() > max_headers {
        return Err(EdgeError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request has {} headers; the limit is {max_headers}",
                req.headers().len()
            ),
        ));
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err(EdgeError::new(
            ErrorKind::BadRequest,
            "the request has more than one Host header",
        ));
    }
    let Some(host) = request_host(&req) else {
        return Err(EdgeError::new(
            ErrorKind::BadRequest,
            "the request has no Host header",
        ));
    };
    let path = req.uri().path().to_string();
    let Some(rt) = snap.service_for(&host, &path).cloned() else {
        return Err(EdgeError::new(
            ErrorKind::UnknownService,
            format!("no service is configured for host {host:?}"),
        ));
    };
    let svc_name = rt.svc.name.clone();
    rec.line.service = Some(svc_name.clone());
    let route = rt.svc.route_for(req.method().as_str(), &path);
    rec.line.route = Some(route.name.clone());
    let no_controls = ServiceControls::default();
    let sc = snap.controls.service(&svc_name).unwrap_or(&no_controls);

    // The body is read up to the replay limit before a concurrency slot is
    // taken: a small body (most of them) arrives whole first, so a client
    // trickling one holds a connection and a task but never a slot that
    // protects the instances. A larger body takes its slot once the replay
    // copy is full and then streams; the client's body timeouts (and the
    // route's total timeout) bound how long a trickle can hold that slot.
    let (mut parts, body) = req.into_parts();
    let e = &snap.config.edge;
    let grpc = grpc::is_grpc(&parts.headers);
    // gRPC streams go out as they come: a client may wait for the server's
    // first message before it sends its next, so holding its bytes back to
    // fill a replay copy would stall the call. Such a call is not retried.
    let body = if grpc {
        body::stream_from_start(
            body,
            &parts.headers,
            BodyLimits::of(e),
            rec.progress.clone(),
        )?
    } else {
        body::read_up_to(
            body,
            &parts.headers,
            BodyLimits::of(e),
            e.retry_buffer_bytes,
            rec.progress.clone(),
        )
        .await?
    };
    let client_upgrade = if upgrade::requested(parts.version, &parts.headers) {
        parts
            .extensions
            .remove::<OnUpgrade>()
            .map(|on| (on, parts.extensions.remove::<upgrade::Hold>()))
    } else {
        None
    };

    let permit = match rt
        .admission
        .try_admit(route.priority, sc.shed_level, Instant::now())
    {
        Ok(p) => p,
        Err(reason) => {
            edge.metrics
                .shed
                .get_or_create(&ShedLabels {
                    service: svc_name.clone(),
                    priority: route.priority.as_str().into(),
                    reason: reason.as_str().into(),
                })
                .inc();
            record_signal(
                edge,
                &svc_name,
                (&route.name, route.kind == RouteKind::Write),
                "",
                "",
                forwarded_by_an_edge(&parts.headers, snap, parts.extensions.get()),
                rec.start.elapsed(),
                Some(ErrorClass::Shed),
            );
            return Err(EdgeError::new(
                ErrorKind::Shed,
                format!(
                    "shed: {} request over the {} limit (priority {})",
                    svc_name,
                    reason.as_str(),
                    route.priority.as_str()
                ),
            ));
        }
    };
    rt.inflight_gauge.inc();
    rec.inflight = Some(GaugeGuard(rt.inflight_gauge.clone()));

    let home = home_region(&parts.headers);
    let forwarded = forwarded_by_an_edge(&parts.headers, snap, parts.extensions.get());
    // Drawn by the peer's /24 or /56, as DNS draws the client. No
    // forwarded-for header is believed: the edge has no proxies to trust,
    // and a client could pick its region by writing one.
    let target = switchyard_steer::target(
        &rt.svc,
        &snap.controls,
        &edge.region,
        home.as_deref(),
        peer.ip(),
        forwarded,
        &AllUp,
        &mut rand::thread_rng(),
    );
    let mut headers = outbound_headers(&parts.headers, &host, peer);
    // What the client spoke to the edge, for the application's redirects
    // and secure cookies: a peer edge's word is kept, a client's is not.
    let proto = match parts.extensions.get::<Scheme>() {
        Some(Scheme::Https) => Some("https"),
        Some(Scheme::Http) => Some("http"),
        None => None,
    };
    match parts.headers.get(X_FORWARDED_PROTO) {
        Some(v) if forwarded => {
            headers.insert(HeaderName::from_static(X_FORWARDED_PROTO), v.clone());
        }
        _ => {
            if let Some(p) = proto {
                headers.insert(
                    HeaderName::from_static(X_FORWARDED_PROTO),
                    HeaderValue::from_static(p),
                );
            } else {
                headers.remove(X_FORWARDED_PROTO);
            }
        }
    }
    if client_upgrade.is_some() {
        upgrade::restore_headers(&parts.headers, &mut headers);
    }
    headers.insert(
        HeaderName::from_static(REQUEST_ID),
        HeaderValue::from_str(&rec.line.request_id).expect("request ids are visible ASCII"),
    );
    let mut out = Outbound {
        head: OutHead {
            method: parts.method,
            uri: parts.uri,
            headers,
        },
        body,
        progress: rec.progress.clone(),
        retries: 0,
        grpc,
        upgrade: client_upgrade.is_some(),
        forwarded_in: forwarded,
    };
    let result = match target {
        Target::Forward { region, reason } => {
            edge.metrics
                .forwarded
                .get_or_create(&RegionLabels {
                    service: svc_name.clone(),
                    region: region.to_string(),
                })
                .inc();
            tracing::debug!(service = %svc_name, to = %region, reason = reason.as_str(), "forwarding to another region");
            forward_or_fall_back(edge, snap, &rt, route, sc, region, &mut out, rec.start).await
        }
        Target::Local => serve_local(edge, snap, &rt, route, sc, &mut out, rec.start).await,
    };
    rec.line.retries = out.retries;
    let mut served = result?;
    if served.parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = served.parts.extensions.remove::<OnUpgrade>();
        match (client_upgrade, upstream) {
            (Some((client, hold)), Some(upstream)) => {
                upgrade::spawn(edge.clone(), svc_name.clone(), client, upstream, hold)
            }
            _ => {
                let e = EdgeError::new(
                    ErrorKind::UpstreamProtocol,
                    format!(
                        "{} switched protocols on a request that asked for no upgrade",
                        served.from
                    ),
                );
                served.attempt.settle_error(&e);
                return Err(e);
            }
        }
    }
    rec.kind = Some(route.kind);
    let status = served.parts.status;
    if status.is_success() || status.is_redirection() || status.is_client_error() {
        permit.report_latency(Instant::now());
    }
    rec.permit = Some(permit);
    Ok(served)
}

/// The request as it goes to an instance or another edge.
struct OutHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

struct Outbound {
    head: OutHead,
    body: RequestBody,
    progress: Arc<Progress>,
    retries: u32,
    /// A gRPC call: its body streams from the first byte (no replay copy).
    grpc: bool,
    /// An HTTP/1.1 `Upgrade`: it goes out on HTTP/1.1 whatever the
    /// service's protocol, since HTTP/2 cannot switch protocols.
    upgrade: bool,
    /// Another region's edge forwarded it here.
    forwarded_in: bool,
}

impl Outbound {
    fn protocol(&self, svc: &switchyard_model::Service) -> UpstreamProtocol {
        if self.upgrade {
            UpstreamProtocol::Http1
        } else {
            svc.upstream_protocol
        }
    }

    /// Why a body that cannot be sent again was not, for the retry metric.
    fn not_replayable(&self) -> &'static str {
        if self.grpc {
            "streaming"
        } else {
            "body_too_large"
        }
    }
}

/// An upstream's response head, its body still to stream, and what is to
/// be recorded once it has.
struct Served {
    parts: http::response::Parts,
    body: Incoming,
    deadline: tokio::time::Instant,
    total: Duration,
    from: SocketAddr,
    by: ServedBy,
    attempt: AttemptEnd,
    sent_at: Instant,
}

impl Served {
    /// The client's response: the head now, the body as it streams; the
    /// request is recorded when the body has ended.
    fn respond(self, rec: Record) -> Resp {
        let Served {
            mut parts,
            body,
            deadline,
            total,
            from,
            by,
            attempt,
            sent_at,
        } = self;
        let switched =
            (parts.status == StatusCode::SWITCHING_PROTOCOLS).then(|| parts.headers.clone());
        strip_hop_by_hop(&mut parts.headers);
        if let Some(h) = switched {
            upgrade::restore_headers(&h, &mut parts.headers);
        }
        parts.version = Version::HTTP_11;
        let finish = Box::new(Finish {
            attempt,
            rec,
            status: parts.status,
            grpc_head: grpc::Code::of(&parts.headers),
            by,
            sent_at,
        });
        let grpc = grpc::is_grpc(&parts.headers);
        let body = Streamed::new(body, deadline, total, from.to_string(), finish).grpc(grpc);
        Response::from_parts(parts, WholeOr::Stream(Box::new(body)))
    }
}

/// Records the attempt and the request once the response body has ended.
struct Finish {
    attempt: AttemptEnd,
    rec: Record,
    status: StatusCode,
    /// The `grpc-status` of a trailers-only answer (in its headers).
    grpc_head: Option<grpc::Code>,
    by: ServedBy,
    sent_at: Instant,
}

impl OnEnd for Finish {
    fn end(self: Box<Self>, ending: Ending, bytes_out: u64, grpc_status: Option<grpc::Code>) {
        let Finish {
            mut attempt,
            mut rec,
            status,
            grpc_head,
            by,
            sent_at,
        } = *self;
        let grpc_status = grpc_status.or(grpc_head);
        rec.line.grpc_status = grpc_status.map(|c| c.0);
        // The metric counts the instances' answers; a status the edge put
        // on a stream it cut is in the log and the upstream-error metric.
        let from_instance = !matches!(ending, Ending::Failed(_));
        if let (Some(code), Some(service), true) = (grpc_status, &rec.line.service, from_instance) {
            rec.edge
                .metrics
                .grpc_responses
                .get_or_create(&GrpcLabels {
                    service: service.clone(),
                    code: code.name().into(),
                })
                .inc();
        }
        let failure = match ending {
            // The client's body failed after the instance had answered: the
            // instance's response broke because its request was aborted.
            Ending::Failed(_) if rec.progress.error().is_some() => {
                attempt.settle(None, Outcome::Success);
                rec.progress.error()
            }
            Ending::Failed(e) => {
                tracing::debug!(error = %e, "a response body failed mid-stream");
                attempt.settle(Some(e.kind.class()), Outcome::LocalOriginFailure);
                Some(e)
            }
            // A gRPC call the server failed is a failure however well the
            // HTTP exchange went: it counts as a 5xx does.
            Ending::Complete if grpc_status.is_some_and(|c| c.is_server_failure()) => {
                attempt.settle(Some(ErrorClass::Status5xx), Outcome::Status5xx);
                None
            }
            // A client that leaves early says nothing about the instance.
            Ending::Complete | Ending::Abandoned => {
                attempt.settle(None, Outcome::Success);
                None
            }
        };
        rec.finish(
            status,
            &by,
            bytes_out,
            failure.as_ref(),
            Some(sent_at.elapsed()),
        );
    }
}

/// One attempt's accounting against its target: signals, the upstream-error
/// metric and (for an instance) outlier ejection and its in-flight count.
/// A 5xx or a failure is settled when it is known; a good head waits for
/// its body, since a body that breaks off is a failure too. Latency is the
/// time to the response head, whatever the body's size.
struct AttemptEnd {
    edge: Arc<Edge>,
    service: String,
    route: (String, bool),
    /// The instance's zone, or the target region of a forwarded request.
    zone: String,
    instance: String,
    /// The request came from another region's edge.
    forwarded_in: bool,
    started: Instant,
    latency: Duration,
    settled: bool,
    /// For an instance: its state, held in flight until the attempt ends.
    target: Option<(Arc<ServiceRuntime>, Arc<InstanceState>)>,
}

impl AttemptEnd {
    fn instance(
        edge: &Arc<Edge>,
        rt: &Arc<ServiceRuntime>,
        route: &Route,
        inst: &Arc<InstanceState>,
        forwarded_in: bool,
    ) -> AttemptEnd {
        inst.inflight.fetch_add(1, Ordering::AcqRel);
        AttemptEnd {
            edge: edge.clone(),
            service: rt.svc.name.clone(),
            route: (route.name.clone(), route.kind == RouteKind::Write),
            zone: inst.meta.zone.clone(),
            instance: inst.meta.name.clone(),
            forwarded_in,
            started: Instant::now(),
            latency: Duration::ZERO,
            settled: false,
            target: Some((rt.clone(), inst.clone())),
        }
    }

    fn forward(edge: &Arc<Edge>, rt: &ServiceRuntime, region: &str, write: bool) -> AttemptEnd {
        AttemptEnd {
            edge: edge.clone(),
            service: rt.svc.name.clone(),
            route: ("forward".into(), write),
            zone: region.into(),
            instance: String::new(),
            forwarded_in: false,
            started: Instant::now(),
            latency: Duration::ZERO,
            settled: false,
            target: None,
        }
    }

    fn head_arrived(&mut self) {
        self.latency = self.started.elapsed();
    }

    fn settle(&mut self, class: Option<ErrorClass>, outcome: Outcome) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let edge = &self.edge;
        if !edge.observing() {
            return;
        }
        record_signal(
            edge,
            &self.service,
            (&self.route.0, self.route.1),
            &self.zone,
            &self.instance,
            self.forwarded_in,
            self.latency,
            class,
        );
        let Some((rt, inst)) = &self.target else {
            return;
        };
        if let Some(c) = class {
            edge.metrics
                .upstream_errors
                .get_or_create(&ErrorLabels {
                    service: self.service.clone(),
                    zone: self.zone.clone(),
                    instance: self.instance.clone(),
                    class: c.as_str().into(),
                })
                .inc();
        }
        if let Verdict::Eject(reason) = inst.observe(outcome, self.latency, &rt.svc.ejection) {
            edge.try_eject(rt, inst, reason);
        }
    }

    /// Settles by what the response head says.
    fn settle_head(&mut self, status: StatusCode) {
        if status.is_server_error() {
            self.settle(Some(ErrorClass::Status5xx), Outcome::Status5xx);
        }
    }

    fn settle_error(&mut self, e: &EdgeError) {
        if let Some(reason) = e.tls_reason {
            let target = if self.target.is_some() {
                "instance"
            } else {
                "edge"
            };
            crate::tls::count_upstream_failure(&self.edge, &self.service, target, reason);
        }
        self.latency = self.started.elapsed();
        self.settle(Some(e.kind.class()), Outcome::LocalOriginFailure);
    }
}

impl Drop for AttemptEnd {
    fn drop(&mut self) {
        if let Some((_, inst)) = &self.target {
            inst.inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

async fn serve_local(
    edge: &Arc<Edge>,
    snap: &Snapshot,
    rt: &Arc<ServiceRuntime>,
    route: &Route,
    sc: &ServiceControls,
    out: &mut Outbound,
    start: Instant,
) -> Result<Served, EdgeError> {
    let region_ro = sc.regions.get(&edge.region).is_some_and(|r| r.read_only);
    if (sc.read_only || region_ro) && route.kind == RouteKind::Write {
        edge.metrics
            .read_only
            .get_or_create(&ServiceLabels {
                service: rt.svc.name.clone(),
            })
            .inc();
        record_signal(
            edge,
            &rt.svc.name,
            (&route.name, route.kind == RouteKind::Write),
            "",
            "",
            out.forwarded_in,
            start.elapsed(),
            Some(ErrorClass::ReadOnly),
        );
        return Err(EdgeError::new(
            ErrorKind::ReadOnly,
            format!(
                "service {} is read-only for now; reads keep working",
                rt.svc.name
            ),
        ));
    }
    let plan = switchyard_steer::plan(&rt.local, rt.svc.floor(&edge.region), Some(sc), now_ms());
    let first = switchyard_steer::choose(&plan, &edge.zone, None, &mut rand::thread_rng())
        .ok_or_else(|| {
            EdgeError::new(
                ErrorKind::NoInstance,
                format!(
                    "service {} has no instance in region {}",
                    rt.svc.name, edge.region
                ),
            )
        })?;
    let faults: Vec<&Fault> = snap
        .controls
        .faults
        .iter()
        .filter(|f| f.service == rt.svc.name && f.route.as_ref().is_none_or(|r| *r == route.name))
        .collect();
    let result = attempt(edge, rt, route, &faults, first, out).await;
    // A request that never reached an instance (its connect failed) may go
    // elsewhere whatever its method; one that reached it only when sending
    // it twice is harmless.
    let retry_worthy = match &result {
        Err(e) => e.kind.retryable(),
        Ok(s) => {
            s.parts.status == StatusCode::SERVICE_UNAVAILABLE && is_idempotent(&out.head.method)
        }
    };
    if !retry_worthy {
        return result;
    }
    if !out.body.replayable() {
        // Its body went out as it streamed in; what was sent cannot be sent again.
        retry_metric(edge, &rt.svc.name, out.not_replayable());
        return result;
    }
    let Some(_retry) = rt.retry.try_acquire(rt.admission.inflight()) else {
        retry_metric(edge, &rt.svc.name, "budget_exhausted");
        return result;
    };
    let Some(second) =
        switchyard_steer::choose(&plan, &edge.zone, Some(first), &mut rand::thread_rng())
    else {
        retry_metric(edge, &rt.svc.name, "no_candidate");
        return result;
    };
    retry_metric(edge, &rt.svc.name, "sent");
    out.retries += 1;
    drop(result);
    attempt(edge, rt, route, &faults, second, out).await
}

fn retry_metric(edge: &Edge, service: &str, outcome: &str) {
    edge.metrics
        .retries
        .get_or_create(&OutcomeLabels {
            service: service.into(),
            outcome: outcome.into(),
        })
        .inc();
}

/// The body for one more attempt; a streamed body goes out only once.
fn body_for_attempt(out: &mut Outbound) -> Result<UpstreamBody, EdgeError> {
    out.body.for_attempt().ok_or_else(|| {
        EdgeError::new(
            ErrorKind::UpstreamProtocol,
            "the request body outgrew the replay copy and was already sent once",
        )
    })
}

async fn attempt(
    edge: &Arc<Edge>,
    rt: &Arc<ServiceRuntime>,
    route: &Route,
    faults: &[&Fault],
    inst: &Arc<InstanceState>,
    out: &mut Outbound,
) -> Result<Served, EdgeError> {
    let t0 = Instant::now();
    let zone = inst.meta.zone.as_str();
    for f in faults
        .iter()
        .filter(|f| f.zone.as_ref().is_none_or(|z| z == zone))
    {
        if f.delay_ms + f.delay_jitter_ms > 0 && roll(f.delay_percent) {
            let jitter = if f.delay_jitter_ms > 0 {
                rand::thread_rng().gen_range(0..=f.delay_jitter_ms)
            } else {
                0
            };
            tokio::time::sleep(Duration::from_millis(f.delay_ms + jitter)).await;
        }
        if let Some(status) = f.abort_status {
            if roll(f.abort_percent) {
                record_signal(
                    edge,
                    &rt.svc.name,
                    (&route.name, route.kind == RouteKind::Write),
                    zone,
                    &inst.meta.name,
                    out.forwarded_in,
                    t0.elapsed(),
                    Some(ErrorClass::Fault),
                );
                let mut e = EdgeError::new(
                    ErrorKind::FaultAbort,
                    format!("fault injected: abort with {status}"),
                );
                e.status = StatusCode::from_u16(status).ok();
                return Err(e);
            }
        }
    }
    // Not the instance's fault: it is not counted against it.
    let tls = instance_tls(edge, &rt.svc)?;
    let body = body_for_attempt(out)?;
    let mut end = AttemptEnd::instance(edge, rt, route, inst, out.forwarded_in);
    // An injected delay stands for a slow instance: what signals and
    // outlier detection see includes it, as users do.
    end.started = t0;
    // The route's own timeout when it has one, else the service's.
    let t = &route.timeouts;
    let sent_at = Instant::now();
    let dest = Dest {
        addr: inst.meta.addr,
        tls: tls.as_ref(),
        to_edge: false,
    };
    let result = send(
        out.protocol(&rt.svc),
        dest,
        &out.head,
        body,
        &out.progress,
        t,
    )
    .await;
    let (resp, deadline) = match result {
        Err(e) if e.kind.origin() == crate::error::Origin::Client => return Err(e),
        Err(e) => {
            end.settle_error(&e);
            return Err(e);
        }
        Ok(r) => r,
    };
    end.head_arrived();
    end.settle_head(resp.status());
    let (mut parts, body) = resp.into_parts();
    let m = &inst.meta;
    if let Ok(v) = HeaderValue::from_str(&format!("{}/{}/{}", m.region, m.zone, m.name)) {
        parts.headers.insert(HeaderName::from_static(UPSTREAM), v);
    }
    Ok(Served {
        parts,
        body,
        deadline,
        total: t.total,
        from: m.addr,
        by: ServedBy {
            region: Some(m.region.clone()),
            zone: Some(m.zone.clone()),
            instance: Some(m.name.clone()),
            zone_label: m.zone.clone(),
            instance_label: m.name.clone(),
        },
        attempt: end,
        sent_at,
    })
}

/// One exchange up to the response head: the request body streams to `addr`
/// as the client sends it, and the response comes back with its body still
/// to read, due by the deadline returned. The header timeout runs from the
/// moment the whole request body has gone out (an upload is not a slow
/// instance); the total timeout from now, over the whole exchange. A
/// failure of the client's body is the outcome, whatever the upstream
/// connection made of the aborted request.
async fn send(
    protocol: UpstreamProtocol,
    dest: Dest<'_>,
    head: &OutHead,
    body: UpstreamBody,
    progress: &Progress,
    t: &switchyard_model::Timeouts,
) -> Result<(Response<Incoming>, tokio::time::Instant), EdgeError> {
    let addr = dest.addr;
    let (header_timeout, total_timeout) = (t.header, t.total);
    let deadline = tokio::time::Instant::now() + total_timeout;
    let client = crate::state::client_for(t.connect, protocol, dest.tls);
    let pq = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = format!("{}://{addr}{pq}", client.scheme())
        .parse()
        .map_err(|e| EdgeError::new(ErrorKind::BadRequest, format!("bad request target: {e}")))?;
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = match protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };
    *req.headers_mut() = head.headers.clone();
    let head_due = async {
        progress.wait_done().await;
        tokio::time::sleep(header_timeout).await;
    };
    let result = tokio::select! {
        r = client.request(req) => r,
        _ = head_due => {
            return Err(EdgeError::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "{addr} sent no response head within {} ms",
                    header_timeout.as_millis()
                ),
            ))
        }
        _ = tokio::time::sleep_until(deadline) => {
            if progress.waiting_on_client() {
                return Err(EdgeError::new(
                    ErrorKind::RequestTimeout,
                    format!(
                        "the request body was still arriving when the route's total timeout ({} ms) ran out",
                        total_timeout.as_millis()
                    ),
                ));
            }
            return Err(EdgeError::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "{addr} did not answer within the total timeout of {} ms",
                    total_timeout.as_millis()
                ),
            ));
        }
    };
    if let Some(e) = progress.error() {
        return Err(e);
    }
    match result {
        Ok(r) => Ok((r, deadline)),
        Err(e) => Err(upstream_error(addr, &e)),
    }
}

/// Classifies a failed exchange. A handshake failure is a connect failure
/// wherever hyper saw it: under TLS 1.3 a server that refuses the client's
/// certificate says so only after the handshake, on the first request, which
/// it never read, so trying another target is as safe as after a refused
/// connect. Other TLS errors (a bad record mid-exchange) may come after the
/// target acted on the request and stay protocol errors.
fn upstream_error(addr: SocketAddr, e: &hyper_util::client::legacy::Error) -> EdgeError {
    let handshake = switchyard_api::tls::find_tls_error(e).filter(|t| {
        e.is_connect() || crate::tls::is_handshake_failure(crate::tls::upstream_failure_reason(t))
    });
    if let Some(t) = handshake {
        let mut err = EdgeError::new(
            ErrorKind::UpstreamConnect,
            format!("TLS handshake with {addr} failed: {t}"),
        );
        err.tls_reason = Some(crate::tls::upstream_failure_reason(t));
        return err;
    }
    match e {
        // Classed with connect failures: like them, the request never
        // reached the application, so it may go to another instance.
        e if refused_stream(e) => EdgeError::new(
            ErrorKind::UpstreamConnect,
            format!("{addr} refused the stream (REFUSED_STREAM): the request was not processed"),
        ),
        e if e.is_connect() => EdgeError::new(
            ErrorKind::UpstreamConnect,
            format!("could not connect to {addr}: {}", root_cause(e)),
        ),
        e => EdgeError::new(
            ErrorKind::UpstreamProtocol,
            format!("exchange with {addr} failed: {}", root_cause(e)),
        ),
    }
}

/// Where one attempt goes: an address, and the TLS spoken there if any.
#[derive(Clone, Copy)]
pub(crate) struct Dest<'a> {
    pub addr: SocketAddr,
    pub tls: Option<&'a Arc<crate::tls::ClientSide>>,
    /// A peer edge rather than an instance, for metric labels.
    pub to_edge: bool,
}

/// The TLS settings of `svc`'s instances: `Ok(None)` for plain TCP, an
/// error when the service asks for TLS but its files never loaded (a config
/// reload that named them moments ago, or files that do not load).
pub(crate) fn instance_tls(
    edge: &Edge,
    svc: &switchyard_model::Service,
) -> Result<Option<Arc<crate::tls::ClientSide>>, EdgeError> {
    if svc.upstream_tls.is_none() {
        return Ok(None);
    }
    match edge.client_tls.load().upstream.get(&svc.name) {
        Some(t) => Ok(Some(t.clone())),
        None => Err(EdgeError::new(
            ErrorKind::UpstreamConnect,
            format!(
                "service.{}.upstream_tls is not loaded (see the log for why its files were refused)",
                svc.name
            ),
        )),
    }
}

/// Forwards to `region`. When none of its edges can be reached (so the
/// request never left this edge), it goes to the next region of the
/// service's preference that is not out, and when there is none it is served
/// here: with local instances healthy, failing open beats failing every
/// request of an evacuated region whose destination is down. Each fallback is
/// counted by the region that served it (this one: failed open). A request
/// whose body outgrew the replay copy has no second try.
#[allow(clippy::too_many_arguments)]
async fn forward_or_fall_back(
    edge: &Arc<Edge>,
    snap: &Snapshot,
    rt: &Arc<ServiceRuntime>,
    route: &Route,
    sc: &ServiceControls,
    region: &str,
    out: &mut Outbound,
    start: Instant,
) -> Result<Served, EdgeError> {
    let mut tried = vec![region];
    loop {
        let to = tried.last().expect("one region at least");
        let result = forward_to_region(edge, snap, rt, to, route, out).await;
        match &result {
            Err(e) if e.kind == ErrorKind::UpstreamConnect && out.body.replayable() => {}
            Err(e) if e.kind == ErrorKind::UpstreamConnect => {
                retry_metric(edge, &rt.svc.name, out.not_replayable());
                return result;
            }
            _ => return result,
        }
        let next = rt.svc.region_preference.iter().find(|r| {
            **r != edge.region
                && !tried.contains(&r.as_str())
                && sc.regions.get(*r).is_none_or(|c| c.local_share() > 0.0)
        });
        let served_by = next.map_or(edge.region.as_str(), |r| r.as_str());
        edge.metrics
            .forward_fallbacks
            .get_or_create(&RegionLabels {
                service: rt.svc.name.clone(),
                region: served_by.to_string(),
            })
            .inc();
        match next {
            Some(r) => {
                tracing::warn!(service = %rt.svc.name, unreachable = %to, next = %r, "no edge of the region could be reached; forwarding to the next region");
                tried.push(r);
            }
            None => {
                tracing::warn!(service = %rt.svc.name, unreachable = ?tried, "no region to forward to could be reached; serving here (failing open)");
                return serve_local(edge, snap, rt, route, sc, out, start).await;
            }
        }
    }
}

/// Sends to another region's edges, trying a second edge if the first cannot
/// be reached. The remote edge serves it locally whatever its own controls say.
async fn forward_to_region(
    edge: &Arc<Edge>,
    snap: &Snapshot,
    rt: &Arc<ServiceRuntime>,
    region: &str,
    route: &Route,
    out: &mut Outbound,
) -> Result<Served, EdgeError> {
    let write = route.kind == RouteKind::Write;
    let edges = switchyard_steer::forward_edges(&snap.config, &edge.region, region);
    if edges.is_empty() {
        return Err(EdgeError::new(
            ErrorKind::NoInstance,
            format!("region {region} has no edges"),
        ));
    }
    let n = edges.len();
    let first = rand::thread_rng().gen_range(0..n);
    let mut head = OutHead {
        method: out.head.method.clone(),
        uri: out.head.uri.clone(),
        headers: out.head.headers.clone(),
    };
    head.headers.insert(
        HeaderName::from_static(FORWARDED),
        HeaderValue::from_str(&edge.region).expect("region names are valid header values"),
    );
    if let Some(secret) = snap.config.edge.forward_secret.as_deref() {
        if let Ok(v) = HeaderValue::from_str(secret) {
            head.headers
                .insert(HeaderName::from_static(FORWARD_AUTH), v);
        }
    }
    // The route's own timeout when it has one, else the service's.
    let t = &route.timeouts;
    let tls = peer_tls(edge, snap)?;
    let mut last = None;
    for k in 0..n.min(2) {
        if k > 0 && !out.body.replayable() {
            break;
        }
        let ep = edges
            .get((first + k) % n)
            .expect("the index wraps within the edges");
        let addr = peer_addr(snap, ep, tls.is_some());
        let body = body_for_attempt(out)?;
        let mut end = AttemptEnd::forward(edge, rt, region, write);
        let sent_at = Instant::now();
        let dest = Dest {
            addr,
            tls: tls.as_ref(),
            to_edge: true,
        };
        let result = send(out.protocol(&rt.svc), dest, &head, body, &out.progress, t).await;
        match result {
            Ok((resp, deadline)) => {
                end.head_arrived();
                end.settle_head(resp.status());
                let (parts, body) = resp.into_parts();
                return Ok(Served {
                    parts,
                    body,
                    deadline,
                    total: t.total,
                    from: addr,
                    by: ServedBy {
                        region: Some(region.to_string()),
                        zone: None,
                        instance: Some(addr.to_string()),
                        zone_label: format!("region:{region}"),
                        instance_label: addr.to_string(),
                    },
                    attempt: end,
                    sent_at,
                });
            }
            Err(e) if e.kind.origin() == crate::error::Origin::Client => return Err(e),
            Err(e) => {
                end.settle_error(&e);
                let again = e.kind == ErrorKind::UpstreamConnect;
                last = Some(e);
                if !again {
                    break;
                }
            }
        }
    }
    Err(last.expect("at least one edge was tried"))
}

/// The TLS settings for peer edges: `None` without `[edge.peer_tls]`.
pub(crate) fn peer_tls(
    edge: &Edge,
    snap: &Snapshot,
) -> Result<Option<Arc<crate::tls::ClientSide>>, EdgeError> {
    if snap.config.edge.peer_tls.is_none() {
        return Ok(None);
    }
    match &edge.client_tls.load().peer {
        Some(t) => Ok(Some(t.clone())),
        None => Err(EdgeError::new(
            ErrorKind::UpstreamConnect,
            "edge.peer_tls is not loaded (see the log for why its files were refused)",
        )),
    }
}

/// Where to reach a peer edge: with peer TLS, a zone's TLS listener (a
/// `forward_via` address is taken to lead to one); else its plain listener.
pub(crate) fn peer_addr(
    snap: &Snapshot,
    ep: switchyard_steer::EntryPoint<'_>,
    tls: bool,
) -> SocketAddr {
    match (tls, ep.zone.and_then(|z| snap.config.zone(z))) {
        (true, Some(z)) => z.edge_tls.unwrap_or(ep.addr),
        _ => ep.addr,
    }
}

fn request_host(req: &Request<Inbound>) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?.to_string(),
        None => req.uri().authority()?.as_str().to_string(),
    };
    let host = if raw.starts_with('[') {
        raw.split(']').next().map(|h| format!("{h}]"))?
    } else {
        raw.split(':').next()?.to_string()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn home_region(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(HOME_REGION).and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    for c in headers.get_all(header::COOKIE) {
        for part in c.to_str().unwrap_or("").split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == HOME_REGION {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

/// Whether a header belongs to one connection and must not be forwarded:
/// the fixed hop-by-hop set, and every header the message's `Connection`
/// header names (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || connection.iter().any(|c| c == name.as_str())
}

/// The header names listed in `Connection`, lower-cased.
fn connection_tokens(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Drops hop-by-hop headers from a message in place.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let connection = connection_tokens(h);
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| is_hop_by_hop(k, &connection))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

/// True only when the request carries the forwarded marker from a peer
/// edge. With `[edge.peer_tls]` its connection must have presented a
/// certificate of the peer CA, and the forward secret, when one is set, must
/// match as well; without it the secret alone decides, and without either
/// nothing counts as forwarded. The secret is compared in constant time.
fn forwarded_by_an_edge(h: &HeaderMap, snap: &Snapshot, peer: Option<&PeerEdge>) -> bool {
    if !h.contains_key(FORWARDED) {
        return false;
    }
    let secret = snap.config.edge.forward_secret.as_deref();
    let secret_ok = |s: &str| {
        h.get(FORWARD_AUTH)
            .is_some_and(|v| switchyard_model::secret::equal(v.as_bytes(), s.as_bytes()))
    };
    match (&snap.config.edge.peer_tls, secret) {
        (Some(_), s) => peer.is_some() && s.is_none_or(secret_ok),
        (None, Some(s)) => secret_ok(s),
        (None, None) => false,
    }
}

const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// A peer edge, proven by the client certificate its TLS connection
/// presented (signed by `[edge.peer_tls]`'s CA): set by the TLS listener as
/// a request extension on every request of that connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEdge {
    /// The certificate's first DNS name (else its subject), for the log.
    pub name: String,
}

/// The listener a request came in on, set by the listener as a request
/// extension: the edge tells instances with `x-forwarded-proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Internal headers are the edges' own: whatever a client (or the previous
/// edge) sent is not passed on. The home-region header is public contract.
fn is_internal(k: &HeaderName) -> bool {
    k.as_str().starts_with(INTERNAL_PREFIX) && k != HOME_REGION
}

fn outbound_headers(h: &HeaderMap, host: &str, peer: SocketAddr) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len() + 3);
    let connection = connection_tokens(h);
    for (k, v) in h {
        if !is_hop_by_hop(k, &connection) && k != header::HOST && !is_internal(k) {
            out.append(k.clone(), v.clone());
        }
    }
    // `te` is hop-by-hop except for `trailers`, which says the client takes
    // trailers: a gRPC server wants to hear it, and the edge passes
    // trailers through.
    let trailers = h
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        });
    if trailers {
        out.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        out.insert(header::HOST, v);
    }
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        out.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if !out.contains_key("traceparent") {
        let mut rng = rand::thread_rng();
        let tp = format!(
            "00-{:032x}-{:016x}-01",
            rng.gen::<u128>() | 1,
            rng.gen::<u64>() | 1
        );
        out.insert(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_str(&tp).expect("hex is a valid header"),
        );
    }
    out
}

/// Decides whether an injected fault hits this attempt.
fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::thread_rng().gen::<f64>() * 100.0 < percent)
}

/// Whether an HTTP/2 instance reset the stream with REFUSED_STREAM, which
/// RFC 9113 §8.7 guarantees means it processed none of the request (a server
/// at its stream limit, or shutting down).
fn refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = err.source();
    }
    false
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `forwarded_in`: the request came from another region's edge (its user
/// is counted there).
#[allow(clippy::too_many_arguments)]
fn record_signal(
    edge: &Edge,
    service: &str,
    (route, write): (&str, bool),
    zone: &str,
    inst: &str,
    forwarded_in: bool,
    latency: Duration,
    class: Option<ErrorClass>,
) {
    if !edge.observing() {
        return;
    }
    edge.signals.record(
        SeriesKey {
            service: service.into(),
            route: route.into(),
            target_zone: zone.into(),
            instance: inst.into(),
            write,
            forwarded_in,
        },
        latency,
        class,
    );
}

fn count_request(
    edge: &Edge,
    service: &str,
    kind: Option<RouteKind>,
    zone: &str,
    instance: &str,
    status: StatusCode,
    elapsed: Duration,
) {
    if !edge.observing() {
        return;
    }
    let kind = kind.map(|k| k.as_str()).unwrap_or("none");
    edge.metrics
        .requests
        .get_or_create(&RequestLabels {
            service: service.into(),
            route_kind: kind.into(),
            zone: zone.into(),
            instance: instance.into(),
            code: format!("{}xx", status.as_u16() / 100),
        })
        .inc();
    edge.metrics
        .latency
        .get_or_create(&LatencyLabels {
            service: service.into(),
            route_kind: kind.into(),
            zone: zone.into(),
            instance: instance.into(),
        })
        .observe(elapsed.as_secs_f64());
}
