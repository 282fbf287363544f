//! The request path: find the service, shed or admit, pick a region and an
//! instance, send with timeouts, retry once where it is safe, and record what
//! happened for metrics, signals and outlier ejection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::Rng;
use switchyard_model::signals::ErrorClass;
use switchyard_model::time::now_ms;
use switchyard_model::{Fault, Route, RouteKind, ServiceControls};
use switchyard_steer::{AllUp, Target};

use crate::error::{EdgeError, ErrorKind};
use crate::metrics::{
    ErrorLabels, LatencyLabels, OutcomeLabels, RegionLabels, RequestLabels, ServiceLabels,
    ShedLabels,
};
use crate::outlier::{InstanceState, Outcome, Verdict};
use crate::signals::SeriesKey;
use crate::state::{Edge, ServiceRuntime, Snapshot};

pub const HOME_REGION: &str = "x-switchyard-home-region";
pub const FORWARDED: &str = "x-switchyard-forwarded";
pub const UPSTREAM: &str = "x-switchyard-upstream";
/// The deployment's forward secret, set by a forwarding edge next to
/// `FORWARDED`; a marker without it is a client's claim and is ignored.
pub const FORWARD_AUTH: &str = "x-switchyard-forward-auth";
/// The prefix of the edges' own headers. A client's are dropped before
/// routing, except the documented home-region header.
const INTERNAL_PREFIX: &str = "x-switchyard-";
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

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

type Resp = Response<Full<Bytes>>;

/// Reads the whole request body, within `edge.max_body_bytes`, the time
/// allowed between two reads and the time allowed in all.
async fn read_body(
    mut body: Incoming,
    headers: &HeaderMap,
    limits: &switchyard_model::config::EdgeSettings,
) -> Result<Bytes, EdgeError> {
    let max_body = limits.max_body_bytes;
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > max_body as u64 => {
                return Err(EdgeError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("request body is {n} bytes; the limit is {max_body}"),
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
    let deadline = tokio::time::Instant::now() + limits.client_body_total_timeout;
    let mut out = bytes::BytesMut::new();
    loop {
        let wait = limits
            .client_body_timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                return Err(EdgeError::new(
                    ErrorKind::RequestTimeout,
                    format!(
                        "the request body stalled ({} bytes received; {:?} allowed between reads, {:?} in all)",
                        out.len(),
                        limits.client_body_timeout,
                        limits.client_body_total_timeout
                    ),
                ))
            }
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => {
                return Err(EdgeError::new(
                    ErrorKind::BadRequest,
                    format!("could not read the request body: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max_body {
                return Err(EdgeError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("request body exceeds the limit of {max_body} bytes"),
                ));
            }
            out.extend_from_slice(&data);
        }
    }
}

/// Entry point for every client request.
pub async fn handle(
    edge: Arc<Edge>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Resp, Infallible> {
    let start = Instant::now();
    let snap = edge.snapshot();
    let resp = match serve(&edge, &snap, req, peer, start).await {
        Ok(r) => r,
        Err((e, svc)) => {
            let resp = e.to_response(svc.as_deref());
            if let Some(s) = &svc {
                count_request(&edge, s, None, "", "", resp.status(), start.elapsed());
            }
            resp
        }
    };
    Ok(resp)
}

type Failure = (EdgeError, Option<String>);

fn request_host(req: &Request<Incoming>) -> Option<String> {
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

async fn serve(
    edge: &Arc<Edge>,
    snap: &Arc<Snapshot>,
    req: Request<Incoming>,
    peer: SocketAddr,
    start: Instant,
) -> Result<Resp, Failure> {
    let max_header = snap.config.edge.max_header_bytes;
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > max_header {
        return Err((
            EdgeError::new(
                ErrorKind::HeadersTooLarge,
                format!("request headers are {header_bytes} bytes; the limit is {max_header}"),
            ),
            None,
        ));
    }
    let max_headers = snap.config.edge.max_headers;
    if req.headers().len() > max_headers {
        return Err((
            EdgeError::new(
                ErrorKind::HeadersTooLarge,
                format!(
                    "the request has {} headers; the limit is {max_headers}",
                    req.headers().len()
                ),
            ),
            None,
        ));
    }
    if req.headers().get_all(header::HOST).iter().count() > 1 {
        return Err((
            EdgeError::new(
                ErrorKind::BadRequest,
                "the request has more than one Host header",
            ),
            None,
        ));
    }
    let Some(host) = request_host(&req) else {
        return Err((
            EdgeError::new(ErrorKind::BadRequest, "the request has no Host header"),
            None,
        ));
    };
    let path = req.uri().path().to_string();
    let Some(rt) = snap.service_for(&host, &path).cloned() else {
        return Err((
            EdgeError::new(
                ErrorKind::UnknownService,
                format!("no service is configured for host {host:?}"),
            ),
            None,
        ));
    };
    let svc_name = rt.svc.name.clone();
    let fail = |e: EdgeError| (e, Some(svc_name.clone()));
    let route = rt.svc.route_for(req.method().as_str(), &path);
    let no_controls = ServiceControls::default();
    let sc = snap.controls.service(&svc_name).unwrap_or(&no_controls);

    // The body arrives before a concurrency slot is taken: it is buffered
    // whole anyway (so a retry can resend it), and a client that trickles it
    // in must not hold a slot that protects the instances.
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, &snap.config.edge)
        .await
        .map_err(fail)?;

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
                start.elapsed(),
                Some(ErrorClass::Shed),
            );
            return Err(fail(EdgeError::new(
                ErrorKind::Shed,
                format!(
                    "shed: {} request over the {} limit (priority {})",
                    svc_name,
                    reason.as_str(),
                    route.priority.as_str()
                ),
            )));
        }
    };
    rt.inflight_gauge.inc();
    struct Dec<'a>(&'a prometheus_client::metrics::gauge::Gauge);
    impl Drop for Dec<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let _dec = Dec(&rt.inflight_gauge);

    let home = home_region(&parts.headers);
    let forwarded = forwarded_by_an_edge(&parts.headers, snap);
    let target = switchyard_steer::target(
        &rt.svc,
        &snap.controls,
        &edge.region,
        home.as_deref(),
        forwarded,
        &AllUp,
        &mut rand::thread_rng(),
    );
    let out = Outbound {
        method: parts.method,
        uri: parts.uri,
        headers: outbound_headers(&parts.headers, &host, peer),
        body,
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
            forward_or_fall_back(edge, snap, &rt, route, sc, region, out, start).await
        }
        Target::Local => serve_local(edge, snap, &rt, route, sc, out, start).await,
    };
    match result {
        Ok((resp, zone, inst)) => {
            if resp.status().is_success()
                || resp.status().is_redirection()
                || resp.status().is_client_error()
            {
                permit.report_latency(Instant::now());
            }
            count_request(
                edge,
                &svc_name,
                Some(route.kind),
                &zone,
                &inst,
                resp.status(),
                start.elapsed(),
            );
            Ok(resp)
        }
        Err(e) => Err(fail(e)),
    }
}

#[derive(Clone)]
struct Outbound {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
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

/// True only when the request carries the forwarded marker and the
/// deployment's forward secret (compared in constant time). Without a
/// configured secret nothing counts as forwarded.
fn forwarded_by_an_edge(h: &HeaderMap, snap: &Snapshot) -> bool {
    let Some(secret) = snap.config.edge.forward_secret.as_deref() else {
        return false;
    };
    h.contains_key(FORWARDED)
        && h.get(FORWARD_AUTH)
            .is_some_and(|v| switchyard_model::secret::equal(v.as_bytes(), secret.as_bytes()))
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
    out: Outbound,
    start: Instant,
) -> Result<(Resp, String, String), EdgeError> {
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
    let result = attempt(edge, rt, route, &faults, first, &out).await;
    // A request that never reached an instance (its connect failed) may go
    // elsewhere whatever its method; one that reached it only when sending
    // it twice is harmless.
    let retry_worthy = match &result {
        Err(e) => e.kind.retryable(),
        Ok((r, _, _)) => {
            r.status() == StatusCode::SERVICE_UNAVAILABLE && is_idempotent(&out.method)
        }
    };
    if !retry_worthy {
        return result.map(|r| tag(r, first));
    }
    let Some(_retry) = rt.retry.try_acquire(rt.admission.inflight()) else {
        retry_metric(edge, &rt.svc.name, "budget_exhausted");
        return result.map(|r| tag(r, first));
    };
    let Some(second) =
        switchyard_steer::choose(&plan, &edge.zone, Some(first), &mut rand::thread_rng())
    else {
        retry_metric(edge, &rt.svc.name, "no_candidate");
        return result.map(|r| tag(r, first));
    };
    retry_metric(edge, &rt.svc.name, "sent");
    attempt(edge, rt, route, &faults, second, &out)
        .await
        .map(|r| tag(r, second))
}

fn tag((mut resp, _, _): (Resp, String, String), inst: &InstanceState) -> (Resp, String, String) {
    let m = &inst.meta;
    if let Ok(v) = HeaderValue::from_str(&format!("{}/{}/{}", m.region, m.zone, m.name)) {
        resp.headers_mut()
            .insert(HeaderName::from_static(UPSTREAM), v);
    }
    (resp, m.zone.clone(), m.name.clone())
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

/// Decides whether an injected fault hits this attempt.
fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::thread_rng().gen::<f64>() * 100.0 < percent)
}

struct InflightGuard<'a>(&'a InstanceState);
impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn attempt(
    edge: &Arc<Edge>,
    rt: &Arc<ServiceRuntime>,
    route: &Route,
    faults: &[&Fault],
    inst: &Arc<InstanceState>,
    out: &Outbound,
) -> Result<(Resp, String, String), EdgeError> {
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
    inst.inflight.fetch_add(1, Ordering::AcqRel);
    let _g = InflightGuard(inst);
    let t = &rt.svc.timeouts;
    let result = send(
        &crate::state::client_for(t.connect),
        inst.meta.addr,
        out,
        t.header,
        t.total,
    )
    .await;
    let latency = t0.elapsed();
    let (outcome, class) = match &result {
        Ok(r) if r.status().is_server_error() => (Outcome::Status5xx, Some(ErrorClass::Status5xx)),
        Ok(_) => (Outcome::Success, None),
        Err(e) => (Outcome::LocalOriginFailure, Some(e.kind.class())),
    };
    record_signal(
        edge,
        &rt.svc.name,
        (&route.name, route.kind == RouteKind::Write),
        zone,
        &inst.meta.name,
        latency,
        class,
    );
    if let Some(c) = class {
        edge.metrics
            .upstream_errors
            .get_or_create(&ErrorLabels {
                service: rt.svc.name.clone(),
                zone: zone.into(),
                instance: inst.meta.name.clone(),
                class: c.as_str().into(),
            })
            .inc();
    }
    if let Verdict::Eject(reason) = inst.observe(outcome, latency, &rt.svc.ejection) {
        edge.try_eject(rt, inst, reason);
    }
    result.map(|r| (r, String::new(), String::new()))
}

/// One HTTP exchange with a header timeout and a total timeout, the response
/// fully read so that the total timeout covers the body too.
async fn send(
    client: &crate::state::HttpClient,
    addr: SocketAddr,
    out: &Outbound,
    header_timeout: Duration,
    total_timeout: Duration,
) -> Result<Resp, EdgeError> {
    let deadline = tokio::time::Instant::now() + total_timeout;
    let pq = out.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri: Uri = format!("http://{addr}{pq}")
        .parse()
        .map_err(|e| EdgeError::new(ErrorKind::BadRequest, format!("bad request target: {e}")))?;
    let mut req = Request::new(Full::new(out.body.clone()));
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = out.headers.clone();
    let resp =
        match tokio::time::timeout(header_timeout.min(total_timeout), client.request(req)).await {
            Err(_) => {
                return Err(EdgeError::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "{addr} sent no response head within {} ms",
                        header_timeout.as_millis()
                    ),
                ))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(EdgeError::new(
                    ErrorKind::UpstreamConnect,
                    format!("could not connect to {addr}: {}", root_cause(&e)),
                ))
            }
            Ok(Err(e)) => {
                return Err(EdgeError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("exchange with {addr} failed: {}", root_cause(&e)),
                ))
            }
            Ok(Ok(r)) => r,
        };
    let (mut parts, body) = resp.into_parts();
    let body =
        match tokio::time::timeout_at(deadline, Limited::new(body, MAX_RESPONSE_BYTES).collect())
            .await
        {
            Err(_) => {
                return Err(EdgeError::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "{addr} did not finish its response within {} ms",
                        total_timeout.as_millis()
                    ),
                ))
            }
            Ok(Err(e)) => {
                return Err(EdgeError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("reading the response from {addr} failed: {e}"),
                ))
            }
            Ok(Ok(b)) => b.to_bytes(),
        };
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Forwards to `region`. When none of its edges can be reached (so the
/// request never left this edge), it goes to the next region of the
/// service's preference that is not out, and when there is none it is served
/// here: with local instances healthy, failing open beats failing every
/// request of an evacuated region whose destination is down. Each fallback is
/// counted by the region that served it (this one: failed open).
#[allow(clippy::too_many_arguments)]
async fn forward_or_fall_back(
    edge: &Arc<Edge>,
    snap: &Snapshot,
    rt: &Arc<ServiceRuntime>,
    route: &Route,
    sc: &ServiceControls,
    region: &str,
    out: Outbound,
    start: Instant,
) -> Result<(Resp, String, String), EdgeError> {
    let write = route.kind == RouteKind::Write;
    let mut tried = vec![region];
    loop {
        let to = tried.last().expect("one region at least");
        let result = forward_to_region(edge, snap, rt, to, write, out.clone()).await;
        match &result {
            Err(e) if e.kind == ErrorKind::UpstreamConnect => {}
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
    write: bool,
    mut out: Outbound,
) -> Result<(Resp, String, String), EdgeError> {
    let edges = switchyard_steer::forward_edges(&snap.config, &edge.region, region);
    if edges.is_empty() {
        return Err(EdgeError::new(
            ErrorKind::NoInstance,
            format!("region {region} has no edges"),
        ));
    }
    let n = edges.len();
    let first = rand::thread_rng().gen_range(0..n);
    out.headers.insert(
        HeaderName::from_static(FORWARDED),
        HeaderValue::from_str(&edge.region).expect("region names are valid header values"),
    );
    if let Some(secret) = snap.config.edge.forward_secret.as_deref() {
        if let Ok(v) = HeaderValue::from_str(secret) {
            out.headers.insert(HeaderName::from_static(FORWARD_AUTH), v);
        }
    }
    let t = &rt.svc.timeouts;
    let mut last = None;
    for k in 0..n.min(2) {
        let addr = edges
            .get((first + k) % n)
            .expect("the index wraps within the edges")
            .addr;
        let t0 = Instant::now();
        let result = send(
            &crate::state::client_for(t.connect),
            addr,
            &out,
            t.header,
            t.total,
        )
        .await;
        let class = match &result {
            Ok(r) => r
                .status()
                .is_server_error()
                .then_some(ErrorClass::Status5xx),
            Err(e) => Some(e.kind.class()),
        };
        record_signal(
            edge,
            &rt.svc.name,
            ("forward", write),
            region,
            "",
            t0.elapsed(),
            class,
        );
        match result {
            Ok(r) => return Ok((r, format!("region:{region}"), addr.to_string())),
            Err(e) => {
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

fn record_signal(
    edge: &Edge,
    service: &str,
    (route, write): (&str, bool),
    zone: &str,
    inst: &str,
    latency: Duration,
    class: Option<ErrorClass>,
) {
    edge.signals.record(
        SeriesKey {
            service: service.into(),
            route: route.into(),
            target_zone: zone.into(),
            instance: inst.into(),
            write,
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
