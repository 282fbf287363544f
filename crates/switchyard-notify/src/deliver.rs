//! Sending one grouped message to its receivers, over HTTP(S) or SMTP, with
//! retries.
//!
//! The decision about each answer (delivered, retry after how long, give up
//! and why) is the pure [`judge`]; the rest is plumbing around it. Receivers
//! are tried in parallel so one that hangs costs the others nothing, and each
//! attempt is reported the moment it ends, because the incident timeline
//! should show "paging failed, retrying" while it is still true.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{
    parse_http_url, NotifyConfig, ReceiverConfig, ReceiverKind, RetryConfig, UrlError,
};
use crate::email::Mail;
use crate::group::Grouped;
use crate::types::{Attempt, Delivery};
use crate::{payload, tls};

/// How much of a receiver's answer is kept to explain a failure; enough for
/// Slack's `invalid_payload` or an Alertmanager validation message.
const ANSWER_SNIPPET_CHARS: usize = 200;
/// Answers larger than this are not read to the end; nothing we need is in them.
const ANSWER_LIMIT_BYTES: usize = 64 * 1024;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why one try produced no answer, or an answer that is not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("connect error: {0}")]
    Connect(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("request failed: {0}")]
    Request(String),
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The TLS handshake failed on the certificate or protocol.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The receiver's own settings cannot be used (a CA file gone since the
    /// config was checked, a secret's variable unset).
    #[error("receiver not usable: {0}")]
    Config(String),
    /// The mail server refused for good (a 5xx reply, or no STARTTLS where
    /// it is required).
    #[error("mail refused: {0}")]
    SmtpRefused(String),
}

/// What one try came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered; `answer` is the start of its body.
    Answered {
        status: u16,
        answer: String,
    },
    /// The mail server accepted the message with this SMTP reply.
    Mailed {
        code: u16,
        answer: String,
    },
    Failed(PostError),
}

/// The verdict on one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub ok: bool,
    pub status: Option<u16>,
    /// Why it failed and what happens next; `None` when delivered.
    pub error: Option<String>,
    /// Wait this long and try again; `None`: done, either way.
    pub retry_after_ms: Option<u64>,
}

/// Judges attempt number `attempt` (1-based).
///
/// 2xx is delivered. A 4xx other than 408 (timeout) and 429 (slow down)
/// says the request itself is wrong, so sending it again would only repeat
/// the refusal: give up at once and say so. Anything else (other statuses,
/// connect errors, timeouts) may pass, so retry after the backoff until the
/// attempts are used up. A URL or setting that cannot be used, a certificate
/// nobody trusts and a mail server's final refusal are never retried: the
/// next try would meet the same.
pub fn judge(outcome: &Outcome, attempt: u32, retry: &RetryConfig) -> Judgement {
    let attempts = retry.attempts.max(1);
    let backoff = retry.backoff_ms(attempt);
    let next = |what: String| {
        if attempt < attempts {
            (format!("{what}; retrying in {backoff} ms"), Some(backoff))
        } else {
            (format!("{what}; giving up after {attempts} attempts"), None)
        }
    };
    match outcome {
        Outcome::Answered { status, .. } if (200..300).contains(status) => Judgement {
            ok: true,
            status: Some(*status),
            error: None,
            retry_after_ms: None,
        },
        Outcome::Mailed { .. } => Judgement {
            ok: true,
            status: None,
            error: None,
            retry_after_ms: None,
        },
        Outcome::Answered { status, answer } => {
            let mut what = format!("HTTP {}", status_text(*status));
            let answer = answer.trim();
            if !answer.is_empty() {
                what.push_str(&format!(" ({answer})"));
            }
            let (error, retry_after_ms) = if (400..500).contains(status)
                && *status != 408
                && *status != 429
            {
                (
                        format!(
                            "{what}; not retried: a 4xx other than 408/429 means the request itself was refused"
                        ),
                        None,
                    )
            } else {
                next(what)
            };
            Judgement {
                ok: false,
                status: Some(*status),
                error: Some(error),
                retry_after_ms,
            }
        }
        Outcome::Failed(
            e @ (PostError::Url(_)
            | PostError::Config(_)
            | PostError::Tls(_)
            | PostError::SmtpRefused(_)),
        ) => Judgement {
            ok: false,
            status: None,
            error: Some(format!("{e}; not retried")),
            retry_after_ms: None,
        },
        Outcome::Failed(e) => {
            let (error, retry_after_ms) = next(e.to_string());
            Judgement {
                ok: false,
                status: None,
                error: Some(error),
                retry_after_ms,
            }
        }
    }
}

fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// Sends `grouped` to each named receiver in parallel and returns one
/// [`Delivery`] per name, in the order given.
///
/// Each receiver gets the payload of its kind (a JSON POST over HTTP or
/// HTTPS, or an e-mail) and is retried as [`judge`] decides, waiting `retry.backoff_ms` between tries; each try
/// is limited to `retry.timeout_ms`, connecting included. `on_attempt` sees
/// every attempt as soon as it ends. A name with no receiver in `cfg` gets a
/// single failed attempt saying so. Dropping the returned future stops every
/// retry still pending.
pub async fn deliver(
    cfg: &NotifyConfig,
    grouped: &Grouped,
    receivers: &[String],
    mut on_attempt: impl FnMut(&Attempt),
) -> Vec<Delivery> {
    let clock = Clock::now();
    let mut out: Vec<Delivery> = receivers
        .iter()
        .map(|name| Delivery {
            receiver: name.clone(),
            delivered: false,
            attempts: Vec::new(),
        })
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Attempt)>();
    // A JoinSet aborts its tasks when dropped, so retries die with the caller.
    let mut jobs = JoinSet::new();
    for (idx, name) in receivers.iter().enumerate() {
        let Some(rc) = cfg.receiver(name) else {
            tracing::error!(receiver = %name, incident = %grouped.notice.incident_id, "no such receiver");
            let a = Attempt {
                receiver: name.clone(),
                kind: "unknown".into(),
                attempt: 1,
                at_ms: clock.unix_ms(Instant::now()),
                ok: false,
                status: None,
                error: Some(format!(
                    "no receiver named {name:?} in control.notify.receiver; not sent"
                )),
                duration_ms: 0,
                next_retry_ms: None,
            };
            on_attempt(&a);
            out[idx].attempts.push(a);
            continue;
        };
        let job = Job {
            idx,
            incident: grouped.notice.incident_id.clone(),
            receiver: rc.clone(),
            transport: prepare(rc, grouped, &cfg.retry),
            retry: cfg.retry.clone(),
            clock,
            tx: tx.clone(),
        };
        jobs.spawn(job.run());
    }
    // The channel closes once every job has finished and dropped its sender.
    drop(tx);
    while let Some((idx, a)) = rx.recv().await {
        on_attempt(&a);
        out[idx].attempts.push(a);
    }
    while let Some(done) = jobs.join_next().await {
        match done {
            Ok((idx, delivered)) => out[idx].delivered = delivered,
            // Its attempts so far are kept; it counts as not delivered.
            Err(e) => tracing::error!(error = %e, "delivery task failed"),
        }
    }
    out
}

/// How one receiver is reached, built once per message.
enum Transport {
    Http {
        client: Box<HttpClient>,
        uri: Uri,
        body: Bytes,
    },
    Email(Box<Mail>),
    /// Cannot be sent at all; every try reports why.
    Broken(PostError),
}

/// Secrets named by `*_env` are read from the process environment when
/// sending, as the config check did.
fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// The payload and the means to send it to `rc`. One HTTP client per
/// receiver and message: notifications are rare, each receiver may trust
/// its own CA, and a fresh client keeps nothing (connections, DNS answers)
/// alive between incidents.
fn prepare(rc: &ReceiverConfig, g: &Grouped, retry: &RetryConfig) -> Transport {
    let timeout = Duration::from_millis(retry.timeout_ms.max(1));
    if rc.kind == ReceiverKind::Email {
        return match Mail::prepare(rc, g, rc.password_with(env_var), timeout) {
            Ok(m) => Transport::Email(Box::new(m)),
            Err(e) => Transport::Broken(e),
        };
    }
    let target = match parse_http_url(rc.target_url()) {
        Ok(t) => t,
        Err(e) => return Transport::Broken(e.into()),
    };
    let key = match rc.kind {
        ReceiverKind::Pagerduty => match rc.routing_key_with(env_var) {
            Some(k) => k,
            None => {
                return Transport::Broken(PostError::Config(
                    "no routing key (routing_key, or the variable routing_key_env names)".into(),
                ))
            }
        },
        _ => String::new(),
    };
    let Some(body) = payload::render(rc.kind, g, &key) else {
        return Transport::Broken(PostError::Config(format!(
            "kind {} has no HTTP body",
            rc.kind.as_str()
        )));
    };
    let extra = match &rc.ca_file {
        Some(path) => match tls::read_ca_file(path) {
            Ok(c) => c,
            Err(e) => return Transport::Broken(PostError::Config(format!("ca_file: {e}"))),
        },
        None => Vec::new(),
    };
    let tls = match tls::client_config(&extra) {
        Ok(t) => t,
        Err(e) => return Transport::Broken(PostError::Config(format!("TLS settings: {e}"))),
    };
    let body = serde_json::to_vec(&body).expect("a serde_json::Value always serializes");
    Transport::Http {
        client: Box::new(http_client(retry, tls)),
        uri: target.uri,
        body: Bytes::from(body),
    }
}

fn http_client(retry: &RetryConfig, tls: rustls::ClientConfig) -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_connect_timeout(Some(Duration::from_millis(retry.timeout_ms.max(1))));
    conn.set_nodelay(true);
    // The TLS layer above decides by the scheme; this one only connects.
    conn.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(conn);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Wall-clock milliseconds derived from one reading plus a monotonic clock,
/// so the gaps between attempts in the timeline are the real waits even if
/// the system clock is stepped meanwhile.
#[derive(Debug, Clone, Copy)]
struct Clock {
    unix_ms: u64,
    at: Instant,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            unix_ms: switchyard_model::time::now_ms(),
            at: Instant::now(),
        }
    }

    fn unix_ms(&self, t: Instant) -> u64 {
        self.unix_ms + t.saturating_duration_since(self.at).as_millis() as u64
    }
}

/// Everything one receiver's retry loop needs, owned so it can run as a task.
struct Job {
    idx: usize,
    incident: String,
    receiver: ReceiverConfig,
    transport: Transport,
    retry: RetryConfig,
    clock: Clock,
    tx: mpsc::UnboundedSender<(usize, Attempt)>,
}

impl Job {
    /// Tries until delivered or judged hopeless; returns whether delivered.
    async fn run(self) -> (usize, bool) {
        let timeout = Duration::from_millis(self.retry.timeout_ms.max(1));
        let name = &self.receiver.name;
        // Validation refuses 0 attempts; an unvalidated 0 still tries once
        // rather than dropping the message without a trace.
        for attempt in 1..=self.retry.attempts.max(1) {
            let start = Instant::now();
            let outcome = match &self.transport {
                Transport::Http { client, uri, body } => {
                    post(client, uri, body.clone(), timeout).await
                }
                Transport::Email(mail) => mail.send(timeout).await,
                Transport::Broken(e) => Outcome::Failed(e.clone()),
            };
            let end = Instant::now();
            let j = judge(&outcome, attempt, &self.retry);
            let duration_ms = end.duration_since(start).as_millis() as u64;
            let a = Attempt {
                receiver: name.clone(),
                kind: self.receiver.kind.as_str().into(),
                attempt,
                at_ms: self.clock.unix_ms(start),
                ok: j.ok,
                status: j.status,
                error: j.error.clone(),
                duration_ms,
                next_retry_ms: j.retry_after_ms.map(|wait| self.clock.unix_ms(end) + wait),
            };
            let _ = self.tx.send((self.idx, a));
            if j.ok {
                tracing::info!(receiver = %name, incident = %self.incident, attempt, "notification delivered");
                return (self.idx, true);
            }
            let error = j.error.unwrap_or_default();
            match j.retry_after_ms {
                Some(wait) => {
                    tracing::warn!(receiver = %name, incident = %self.incident, attempt, %error, "notification attempt failed");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                None => {
                    tracing::error!(receiver = %name, incident = %self.incident, attempt, %error, "notification not delivered");
                    return (self.idx, false);
                }
            }
        }
        (self.idx, false)
    }
}

/// One POST of `body`, the answer read within `timeout`.
async fn post(client: &HttpClient, uri: &Uri, body: Bytes, timeout: Duration) -> Outcome {
    let req = match Request::post(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("switchyard-notify/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(PostError::Request(e.to_string())),
    };
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            if let Some(t) = tls::find_tls_error(&e) {
                PostError::Tls(tls::explain(t))
            } else if e.is_connect() {
                PostError::Connect(root_cause(&e))
            } else {
                PostError::Request(causes(&e))
            }
        })?;
        let status = resp.status().as_u16();
        // The status decides; the body is only read to explain a failure
        // and so the connection can be reused.
        let answer = match Limited::new(resp.into_body(), ANSWER_LIMIT_BYTES)
            .collect()
            .await
        {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes())
                .chars()
                .take(ANSWER_SNIPPET_CHARS)
                .collect(),
            Err(_) => String::new(),
        };
        Ok::<_, PostError>(Outcome::Answered { status, answer })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Failed(PostError::Timeout(timeout.as_millis() as u64)),
    }
}

/// The innermost cause ("Connection refused (os error 111)"): the layers
/// above it only repeat that connecting failed.
fn root_cause(e: &dyn StdError) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The error's own text followed by its causes, innermost last, since the
/// useful part ("Connection refused") sits at the bottom of the chain.
pub(crate) fn causes(e: &dyn StdError) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(attempts: u32) -> RetryConfig {
        RetryConfig {
            attempts,
            initial_backoff_ms: 100,
            max_backoff_ms: 250,
            timeout_ms: 1000,
        }
    }

    fn answered(status: u16) -> Outcome {
        Outcome::Answered {
            status,
            answer: String::new(),
        }
    }

    #[test]
    fn success_is_any_2xx() {
        for s in [200, 202, 204] {
            let j = judge(&answered(s), 1, &retry(3));
            assert!(j.ok);
            assert_eq!(j.error, None);
            assert_eq!(j.retry_after_ms, None);
            assert_eq!(j.status, Some(s));
        }
    }

    #[test]
    fn server_errors_and_408_429_are_retried_with_backoff_until_the_last_attempt() {
        for s in [500, 503, 408, 429, 302] {
            let j = judge(&answered(s), 1, &retry(3));
            assert!(!j.ok);
            assert_eq!(j.retry_after_ms, Some(100), "{s}");
        }
        let j = judge(&answered(503), 2, &retry(3));
        assert_eq!(j.retry_after_ms, Some(200));
        assert_eq!(
            j.error.as_deref(),
            Some("HTTP 503 Service Unavailable; retrying in 200 ms")
        );
        let j = judge(&answered(503), 3, &retry(3));
        assert_eq!(j.retry_after_ms, None);
        assert_eq!(
            j.error.as_deref(),
            Some("HTTP 503 Service Unavailable; giving up after 3 attempts")
        );
    }

    #[test]
    fn other_client_errors_are_not_retried_and_say_why() {
        for s in [400, 401, 404, 413, 422] {
            let j = judge(&answered(s), 1, &retry(5));
            assert_eq!(j.retry_after_ms, None, "{s}");
            assert!(j.error.unwrap().contains("not retried"));
        }
        let j = judge(
            &Outcome::Answered {
                status: 400,
                answer: "invalid_payload\n".into(),
            },
            1,
            &retry(5),
        );
        assert_eq!(
            j.error.as_deref(),
            Some("HTTP 400 Bad Request (invalid_payload); not retried: a 4xx other than 408/429 means the request itself was refused")
        );
    }

    #[test]
    fn transport_failures_are_retried_but_bad_urls_are_not() {
        let j = judge(
            &Outcome::Failed(PostError::Connect("connection refused".into())),
            1,
            &retry(2),
        );
        assert_eq!(j.status, None);
        assert_eq!(j.retry_after_ms, Some(100));
        assert_eq!(
            j.error.as_deref(),
            Some("connect error: connection refused; retrying in 100 ms")
        );
        let j = judge(&Outcome::Failed(PostError::Timeout(1000)), 2, &retry(2));
        assert_eq!(
            j.error.as_deref(),
            Some("timed out after 1000 ms; giving up after 2 attempts")
        );
        for e in [
            PostError::Url(UrlError::NotHttp("ftp://x/".into())),
            PostError::Tls("invalid peer certificate: UnknownIssuer".into()),
            PostError::Config("ca_file: cannot read".into()),
            PostError::SmtpRefused("550 no such user".into()),
        ] {
            let j = judge(&Outcome::Failed(e.clone()), 1, &retry(5));
            assert_eq!(j.retry_after_ms, None, "{e}");
            assert!(j.error.unwrap().ends_with("; not retried"), "{e}");
        }
        let j = judge(
            &Outcome::Mailed {
                code: 250,
                answer: "OK".into(),
            },
            1,
            &retry(5),
        );
        assert!(j.ok);
        assert_eq!((j.status, j.error), (None, None));
    }

    #[test]
    fn zero_attempts_still_means_one_try() {
        let j = judge(&answered(503), 1, &retry(0));
        assert_eq!(j.retry_after_ms, None);
        assert!(j.error.unwrap().contains("giving up after 1 attempts"));
    }
}
