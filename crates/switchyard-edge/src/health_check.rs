//! Active health checks: every edge asks each instance of its region for the
//! service's `health_path` once per interval. They find the instances that
//! are dead (refusing connections, hanging, answering 5xx to their own health
//! endpoint) within a couple of seconds, whether or not traffic reaches them.
//!
//! Their verdict is apart from outlier ejection on purpose. Ejection judges
//! instances that answer but worse than their peers, and is capped so a
//! misjudgement cannot empty a zone; a dead instance serves nobody, so
//! keeping it in rotation because of that cap only turns its requests into
//! errors. The capacity guard still applies: a region whose healthy share
//! falls below its floor panics and routes to every instance, as
//! docs/edge.md says.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, Method, Request};
use switchyard_model::{HealthCheckSettings, Service};

pub use switchyard_api::edge::{CheckState, CheckView};

use crate::grpc::Code;
use crate::metrics::{CheckLabels, HostLabels};
use crate::proxy::Dest;
use crate::state::{client_for, Edge};

/// One `GET` of an instance's (or a remote edge's) endpoint, as the checks,
/// the re-check of an ejected instance and the signal probes send it, with
/// the TLS settings requests to it use. `Ok` on a 2xx; otherwise why not, in
/// a word an operator can read (`tls: REASON` for a failed handshake, which
/// is also counted).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn http_get(
    edge: &Edge,
    svc: &Service,
    dest: Dest<'_>,
    path: &str,
    user_agent: &'static str,
    extra: &[(&'static str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    let client = client_for(svc.timeouts.connect, svc.upstream_protocol, dest.tls);
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(format!("{}://{}{path}", client.scheme(), dest.addr))
        .header(header::HOST, svc.hosts.first().cloned().unwrap_or_default())
        .header(header::USER_AGENT, user_agent);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = b
        .body(crate::body::UpstreamBody::empty())
        .map_err(|e| format!("bad request: {e}"))?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("status {}", resp.status().as_u16())),
        Ok(Err(e)) => Err(failure(edge, svc, dest, &e)),
        Err(_) => Err("timeout".into()),
    }
}

/// Why a check's exchange failed, in a word: `tls: REASON` for a failed
/// handshake (also counted), `connect` or `exchange` otherwise.
fn failure(
    edge: &Edge,
    svc: &Service,
    dest: Dest<'_>,
    e: &hyper_util::client::legacy::Error,
) -> String {
    let reason = switchyard_api::tls::find_tls_error(e)
        .map(crate::tls::upstream_failure_reason)
        .filter(|r| e.is_connect() || crate::tls::is_handshake_failure(r));
    if let Some(reason) = reason {
        let target = if dest.to_edge { "edge" } else { "instance" };
        crate::tls::count_upstream_failure(edge, &svc.name, target, reason);
        return format!("tls: {reason}");
    }
    if e.is_connect() {
        "connect"
    } else {
        "exchange"
    }
    .into()
}

/// One active check of an instance as its service says to check it: the
/// gRPC health protocol when `health_check.grpc_service` is set, otherwise
/// `GET health_path`. The checks and the re-check of an ejected instance
/// both go through here.
pub(crate) async fn check_instance(
    edge: &Edge,
    svc: &Service,
    addr: SocketAddr,
    user_agent: &'static str,
    timeout: Duration,
) -> Result<(), String> {
    let (addr, tls) = instance_dest(edge, svc, addr)?;
    let dest = Dest {
        addr,
        tls: tls.as_ref(),
        to_edge: false,
    };
    match &svc.health_check.grpc_service {
        Some(name) => grpc_check(edge, svc, dest, name, user_agent, timeout).await,
        None => http_get(edge, svc, dest, &svc.health_path, user_agent, &[], timeout).await,
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` is a `ServingStatus`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `ServingStatus.SERVING`; 2 is NOT_SERVING, 3 SERVICE_UNKNOWN (Watch only).
const SERVING: i32 = 1;

/// A health answer is one small message: anything larger is not one.
const MAX_HEALTH_ANSWER: usize = 4096;

/// One unary `grpc.health.v1.Health/Check` call (the gRPC Health Checking
/// Protocol every gRPC framework ships). It passes only on `grpc-status`
/// OK with `SERVING`; the reason for anything else names what came back
/// (`not serving`, `grpc status 5` for a service name the server does not
/// know, `grpc status 12` for a server without the health service).
async fn grpc_check(
    edge: &Edge,
    svc: &Service,
    dest: Dest<'_>,
    service: &str,
    user_agent: &'static str,
    timeout: Duration,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    use prost::Message;

    let msg = HealthCheckRequest {
        service: service.to_string(),
    }
    .encode_to_vec();
    // A gRPC message on the wire: uncompressed flag, 4-byte length, message.
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let client = client_for(svc.timeouts.connect, svc.upstream_protocol, dest.tls);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "{}://{}/grpc.health.v1.Health/Check",
            client.scheme(),
            dest.addr
        ))
        .header(header::HOST, svc.hosts.first().cloned().unwrap_or_default())
        .header(header::USER_AGENT, user_agent)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(crate::body::UpstreamBody::whole(bytes::Bytes::from(frame)))
        .map_err(|e| format!("bad request: {e}"))?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| failure(edge, svc, dest, &e))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        let (parts, body) = resp.into_parts();
        // A trailers-only answer carries its status in the headers.
        if let Some(code) = Code::of(&parts.headers).filter(|c| *c != Code::OK) {
            return Err(format!("grpc status {}", code.0));
        }
        let body = http_body_util::Limited::new(body, MAX_HEALTH_ANSWER)
            .collect()
            .await
            .map_err(|_| "exchange".to_string())?;
        let code = body
            .trailers()
            .and_then(Code::of)
            .or_else(|| Code::of(&parts.headers))
            .ok_or("no grpc-status")?;
        if code != Code::OK {
            return Err(format!("grpc status {}", code.0));
        }
        let bytes = body.to_bytes();
        let message = match bytes.first() {
            Some(0) if bytes.len() >= 5 => &bytes[5..],
            Some(0) | None => return Err("no health message".into()),
            Some(_) => return Err("compressed health message".into()),
        };
        let answer =
            HealthCheckResponse::decode(message).map_err(|_| "bad health message".to_string())?;
        match answer.status {
            SERVING => Ok(()),
            2 => Err("not serving".into()),
            n => Err(format!("serving status {n}")),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// The destination of a check or a re-check of `inst`: its address, with
/// its service's TLS settings. `Err` when those did not load.
pub(crate) fn instance_dest(
    edge: &Edge,
    svc: &Service,
    addr: SocketAddr,
) -> Result<(SocketAddr, Option<Arc<crate::tls::ClientSide>>), String> {
    crate::proxy::instance_tls(edge, svc)
        .map(|t| (addr, t))
        .map_err(|_| "tls: not_loaded".to_string())
}

/// The active-check state of one instance. Lives in the instance's state,
/// so it survives config reloads with it.
#[derive(Debug, Default)]
pub struct ActiveCheck {
    /// Mirrors `state == Down` for the request path, which must not lock.
    down: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: CheckState,
    passes: u32,
    failures: u32,
    last_error: Option<String>,
    next_due: Option<Instant>,
    in_flight: bool,
}

/// A change of verdict, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    CameUp,
}

impl ActiveCheck {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Claims the next check if one is due: at most one in flight per
    /// instance, started no more often than every `interval`.
    pub fn claim(&self, now: Instant, interval: Duration) -> bool {
        let mut g = self.lock();
        if g.in_flight || g.next_due.is_some_and(|t| now < t) {
            return false;
        }
        g.in_flight = true;
        g.next_due = Some(now + interval);
        true
    }

    /// Records one check's result. The first pass makes an unchecked
    /// instance `Up` at once (it was in rotation already); leaving and
    /// re-entering rotation each take their threshold of results in a row.
    pub fn record(
        &self,
        result: Result<(), String>,
        s: &HealthCheckSettings,
    ) -> Option<Transition> {
        let mut g = self.lock();
        g.in_flight = false;
        let before = g.state;
        match result {
            Ok(()) => {
                g.failures = 0;
                g.passes = g.passes.saturating_add(1);
                if before == CheckState::Unknown
                    || (before == CheckState::Down && g.passes >= s.healthy_threshold)
                {
                    g.state = CheckState::Up;
                }
            }
            Err(e) => {
                g.passes = 0;
                g.failures = g.failures.saturating_add(1);
                g.last_error = Some(e);
                if g.failures >= s.unhealthy_threshold {
                    g.state = CheckState::Down;
                }
            }
        }
        self.down
            .store(g.state == CheckState::Down, Ordering::Release);
        match (before, g.state) {
            (b, CheckState::Down) if b != CheckState::Down => Some(Transition::WentDown),
            (CheckState::Down, CheckState::Up) => Some(Transition::CameUp),
            _ => None,
        }
    }

    /// Checks turned off: no verdict is kept, so nothing stays out of
    /// rotation on evidence that is no longer gathered.
    pub fn forget(&self) -> Option<Transition> {
        let mut g = self.lock();
        let was_down = g.state == CheckState::Down;
        *g = Inner::default();
        self.down.store(false, Ordering::Release);
        was_down.then_some(Transition::CameUp)
    }

    pub fn view(&self) -> CheckView {
        let g = self.lock();
        CheckView {
            state: g.state,
            consecutive_passes: g.passes,
            consecutive_failures: g.failures,
            last_error: g.last_error.clone(),
        }
    }
}

/// Checks forever: every 100 ms, starts the checks that are due.
pub async fn check_loop(edge: Arc<Edge>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snap = edge.snapshot();
        let now = Instant::now();
        for rt in &snap.services {
            let settings = &rt.svc.health_check;
            for inst in &rt.local {
                if !settings.enabled {
                    if let Some(t) = inst.check.forget() {
                        report(&edge, &rt.svc.name, &inst.meta.name, t, "checks turned off");
                    }
                    continue;
                }
                if !inst.check.claim(now, settings.interval) {
                    continue;
                }
                let (edge, rt, inst) = (edge.clone(), rt.clone(), inst.clone());
                tokio::spawn(async move {
                    let svc = &rt.svc;
                    let result = check_instance(
                        &edge,
                        svc,
                        inst.meta.addr,
                        "switchyard-edge-health-check",
                        svc.health_check.timeout,
                    )
                    .await;
                    edge.metrics
                        .health_checks
                        .get_or_create(&CheckLabels {
                            service: svc.name.clone(),
                            instance: inst.meta.name.clone(),
                            result: if result.is_ok() { "pass" } else { "fail" }.into(),
                        })
                        .inc();
                    let why = result.as_ref().err().cloned().unwrap_or_default();
                    if let Some(t) = inst.check.record(result, &svc.health_check) {
                        report(&edge, &svc.name, &inst.meta.name, t, &why);
                    }
                });
            }
        }
    }
}

fn report(edge: &Edge, service: &str, instance: &str, t: Transition, why: &str) {
    edge.metrics
        .instance_down
        .get_or_create(&HostLabels {
            service: service.into(),
            instance: instance.into(),
        })
        .set(i64::from(t == Transition::WentDown));
    match t {
        Transition::WentDown => {
            tracing::warn!(
                service,
                instance,
                error = why,
                "instance failed its health checks; out of rotation"
            )
        }
        Transition::CameUp => {
            tracing::info!(
                service,
                instance,
                reason = why,
                "instance back in rotation after its health checks"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), String> {
        Err("connect".into())
    }

    #[test]
    fn down_after_the_unhealthy_threshold_and_up_after_the_healthy_one() {
        let s = HealthCheckSettings::default();
        let c = ActiveCheck::default();
        assert_eq!(
            c.record(Ok(()), &s),
            None,
            "unknown to up is no change of rotation"
        );
        assert_eq!(c.view().state, CheckState::Up);
        assert_eq!(c.record(fail(), &s), None);
        assert!(!c.is_down(), "one failure is not enough");
        assert_eq!(c.record(fail(), &s), Some(Transition::WentDown));
        assert!(c.is_down());
        assert_eq!(c.record(Ok(()), &s), None, "one pass is not enough");
        assert!(c.is_down());
        assert_eq!(c.record(fail(), &s), None, "a failure restarts the count");
        assert_eq!(c.record(Ok(()), &s), None);
        assert_eq!(c.record(Ok(()), &s), Some(Transition::CameUp));
        assert!(!c.is_down());
        assert_eq!(c.view().last_error.as_deref(), Some("connect"));
    }

    #[test]
    fn an_instance_dead_from_the_start_goes_down() {
        let s = HealthCheckSettings::default();
        let c = ActiveCheck::default();
        c.record(fail(), &s);
        assert_eq!(c.record(fail(), &s), Some(Transition::WentDown));
    }

    #[test]
    fn one_check_at_a_time_and_no_more_often_than_the_interval() {
        let c = ActiveCheck::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(1);
        assert!(c.claim(t0, every));
        assert!(
            !c.claim(t0 + Duration::from_secs(5), every),
            "still in flight"
        );
        c.record(Ok(()), &HealthCheckSettings::default());
        assert!(!c.claim(t0 + Duration::from_millis(900), every));
        assert!(c.claim(t0 + Duration::from_millis(1000), every));
    }

    #[test]
    fn turning_checks_off_returns_a_down_instance() {
        let s = HealthCheckSettings::default();
        let c = ActiveCheck::default();
        c.record(fail(), &s);
        c.record(fail(), &s);
        assert_eq!(c.forget(), Some(Transition::CameUp));
        assert!(!c.is_down());
        assert_eq!(c.view().state, CheckState::Unknown);
    }
}
