//! A typed client of the control plane. Every caller of our own API goes
//! through it, so an answer is read as the type the server wrote and a field
//! that moves is a compile error, not a `null` found in production.
//!
//! Built on `reqwest` (a well-kept HTTP client over the hyper stack we
//! already use), with TLS from [`crate::tls`]: an `https://` plane is
//! verified against the shipped roots plus an optional private CA.

use std::time::Duration;

use reqwest::Method;
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_model::incident::Incident;
use switchyard_model::notice::Silence;
use switchyard_model::rollout::Rollout;

use crate::types::*;

/// Why a call did not give the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control plane answered with an error: its status and reasons.
    #[error("{status}: {}", .body.reasons.join("; "))]
    Api { status: u16, body: ErrorBody },
    /// It could not be reached, or did not answer in time. Nothing is known
    /// about whether a write took effect.
    #[error("cannot reach the control plane at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// It answered something this client cannot read (a version mismatch).
    #[error("unreadable answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status when the control plane answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error body when the control plane answered.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Whether trying again may help: the plane was unreachable, its store
    /// was, or the controls changed underneath.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Api { status, .. } => *status == 503,
            ClientError::Decode { .. } => false,
        }
    }

    /// The conventional exit code of a command that failed with it: 2 for bad
    /// input (400, 413) or an unknown target (404), 1 for a refusal (401,
    /// 403, 409) or a failure of the plane,
    /// 3 when the plane could not be reached.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api {
                status: 400 | 404 | 413,
                ..
            } => 2,
            ClientError::Api { .. } | ClientError::Decode { .. } => 1,
            ClientError::Unreachable { .. } => 3,
        }
    }
}

/// A raw answer, for callers that must see exactly what was sent back (tests
/// of malformed input, the metrics text).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    pub body: String,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the plane's URL (`http://127.0.0.1:7000`); `token` its
    /// bearer token for writes. Every call gives up after 10 s.
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client::with_timeout(base, token, Duration::from_secs(10))
    }

    pub fn with_timeout(base: &str, token: Option<String>, timeout: Duration) -> Client {
        Client::with_roots(base, token, timeout, &[])
            .expect("the shipped roots make a valid TLS config")
    }

    /// A client that also trusts `ca` (a private CA, read with
    /// [`crate::tls::read_ca_file`]) for an `https://` plane.
    pub fn with_roots(
        base: &str,
        token: Option<String>,
        timeout: Duration,
        ca: &[CertificateDer<'static>],
    ) -> Result<Client, rustls::Error> {
        let tls = crate::tls::client_config(ca, None)?;
        let http = crate::tls::reqwest_builder(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .expect("an HTTP client with a preconfigured rustls config builds");
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder, path: &str) -> Result<RawAnswer, ClientError> {
        let resp = r.send().await.map_err(|e| ClientError::Unreachable {
            url: self.url(path),
            reason: crate::tls::describe(&e),
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| ClientError::Unreachable {
            url: self.url(path),
            reason: crate::tls::describe(&e),
        })?;
        Ok(RawAnswer { status, body })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let a = self.send(r, path).await?;
        if !(200..300).contains(&a.status) {
            let body = serde_json::from_str(&a.body).unwrap_or_else(|_| ErrorBody {
                error: "http".into(),
                reasons: vec![a.body.trim().to_string()],
                rules: Vec::new(),
            });
            return Err(ClientError::Api {
                status: a.status,
                body,
            });
        }
        serde_json::from_str(&a.body).map_err(|e| ClientError::Decode {
            url: self.url(path),
            reason: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(self.request(Method::GET, path), path).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(self.request(Method::POST, path).json(body), path)
            .await
    }

    /// Sends `body` as it is and hands back the status and text, whatever they
    /// are: for tests of how the plane answers malformed input.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<RawAnswer, ClientError> {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.send(r, path).await
    }

    /// `GET /v1/live`: the live view's frames as the plane sends them (one
    /// a second, and one at once after a change), until the stream ends
    /// or `for_at_most` has passed.
    pub async fn live(
        &self,
        for_at_most: Duration,
    ) -> Result<
        impl futures_util::Stream<Item = Result<crate::live::LiveView, ClientError>>,
        ClientError,
    > {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let path = "/v1/live";
        let resp = self
            .request(Method::GET, path)
            .timeout(for_at_most)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.url(path),
                reason: crate::tls::describe(&e),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
                error: "http".into(),
                reasons: vec![text.trim().to_string()],
                rules: Vec::new(),
            });
            return Err(ClientError::Api { status, body });
        }
        let url = self.url(path);
        Ok(resp.bytes_stream().eventsource().filter_map(move |ev| {
            let url = url.clone();
            async move {
                match ev {
                    Err(e) => Some(Err(ClientError::Unreachable {
                        url,
                        reason: e.to_string(),
                    })),
                    Ok(ev) if ev.event == "live" => Some(serde_json::from_str(&ev.data).map_err(
                        |e| ClientError::Decode {
                            url,
                            reason: e.to_string(),
                        },
                    )),
                    Ok(_) => None,
                }
            }
        }))
    }

    pub async fn health(&self) -> Result<(), ClientError> {
        self.get::<serde_json::Value>("/health").await.map(|_| ())
    }

    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.get("/v1/status").await
    }

    /// Which control plane acts.
    pub async fn leader(&self) -> Result<LeaderView, ClientError> {
        self.get("/v1/leader").await
    }

    pub async fn controls(&self) -> Result<ControlsView, ClientError> {
        self.get("/v1/controls").await
    }

    /// Which config each member (edge zone, `dns:<name>`) is to run.
    pub async fn config_assignment(&self) -> Result<ConfigAssignment, ClientError> {
        self.get("/v1/config").await
    }

    /// A config the plane has assigned, by its version.
    pub async fn config_doc(
        &self,
        version: &str,
    ) -> Result<switchyard_model::ConfigDoc, ClientError> {
        self.get(&path(&["config", version], &[])).await
    }

    /// The newest `limit` audit entries, oldest first.
    pub async fn history(&self, limit: usize) -> Result<History, ClientError> {
        self.get(&path(&["history"], &[("limit", limit.to_string())]))
            .await
    }

    /// The newest `limit` entries that match `f`.
    pub async fn history_where(
        &self,
        limit: usize,
        f: &HistoryFilter,
    ) -> Result<History, ClientError> {
        let mut q = vec![("limit", limit.to_string())];
        for (k, v) in [
            ("service", &f.service),
            ("actor", &f.actor),
            ("kind", &f.kind),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        self.get(&path(&["history"], &q)).await
    }

    /// One page of the audit log in a time window; follow `next_after`
    /// (as `after`) for the rest.
    pub async fn history_page(&self, r: &HistoryRange) -> Result<HistoryPage, ClientError> {
        let mut q = vec![
            ("after", r.after.to_string()),
            ("limit", r.limit.to_string()),
        ];
        if let Some(s) = r.since_ms {
            q.push(("since", s.to_string()));
        }
        if let Some(u) = r.until_ms {
            q.push(("until", u.to_string()));
        }
        self.get(&path(&["history"], &q)).await
    }

    pub async fn findings(&self) -> Result<FindingsView, ClientError> {
        self.get("/v1/findings").await
    }

    /// Applies an operation (or previews it, when the request says so: use
    /// [`Client::preview`] for the typed answer).
    pub async fn apply(&self, req: &OpRequest) -> Result<Applied, ClientError> {
        self.post("/v1/ops", req).await
    }

    /// [`Client::apply`] with an idempotency key: when the plane answers
    /// `outcome_unknown` (its store did not confirm) or cannot be reached,
    /// the change is sent again with the same key up to `tries` times in
    /// all, and the plane applies it at most once.
    pub async fn apply_once(
        &self,
        req: &OpRequest,
        key: &str,
        tries: u32,
    ) -> Result<Applied, ClientError> {
        let mut left = tries.max(1);
        loop {
            left -= 1;
            let r = self
                .call(
                    self.request(Method::POST, "/v1/ops")
                        .header("idempotency-key", key)
                        .json(req),
                    "/v1/ops",
                )
                .await;
            let again = match &r {
                Err(ClientError::Api { body, .. }) => body.error == "outcome_unknown",
                Err(ClientError::Unreachable { .. }) => true,
                _ => false,
            };
            if !again || left == 0 {
                return r;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// What the operation would do, without doing it.
    pub async fn preview(&self, req: &OpRequest) -> Result<Preview, ClientError> {
        let mut req = req.clone();
        req.preview = true;
        self.post("/v1/ops", &req).await
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let a = self.raw(Method::GET, "/metrics", None).await?;
        Ok(a.body)
    }

    pub async fn ingest_alertmanager(&self, payload: &str) -> Result<IngestedAlerts, ClientError> {
        let r = self
            .request(Method::POST, "/v1/ingest/alertmanager")
            .header("content-type", "application/json")
            .body(payload.to_string());
        self.call(r, "/v1/ingest/alertmanager").await
    }

    pub async fn ingest_heartbeat(
        &self,
        heartbeat: &serde_json::Value,
    ) -> Result<Accepted, ClientError> {
        self.post("/v1/ingest/heartbeat", heartbeat).await
    }

    /// Records a DNS provider push in the history (`operate` scope).
    pub async fn dns_push_event(
        &self,
        event: &crate::dns::DnsPushEvent,
    ) -> Result<Accepted, ClientError> {
        self.post("/v1/events/dns-push", event).await
    }

    pub async fn incidents(&self, q: &IncidentQuery) -> Result<IncidentList, ClientError> {
        let query: Vec<(&str, String)> = [("status", &q.status), ("service", &q.service)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.clone()?)))
            .collect();
        self.get(&path(&["incidents"], &query)).await
    }

    pub async fn incident(&self, id: &str) -> Result<Incident, ClientError> {
        self.get(&path(&["incidents", id], &[])).await
    }

    pub async fn open_incident(&self, req: &OpenIncident) -> Result<Opened, ClientError> {
        self.post("/v1/incidents", req).await
    }

    pub async fn set_status(&self, id: &str, req: &StatusChange) -> Result<Incident, ClientError> {
        self.post(&path(&["incidents", id, "status"], &[]), req)
            .await
    }

    pub async fn ack(&self, id: &str, note: &str) -> Result<Incident, ClientError> {
        let req = StageChange {
            stage: None,
            note: note.into(),
        };
        self.post(&path(&["incidents", id, "ack"], &[]), &req).await
    }

    pub async fn stage(&self, id: &str, req: &StageChange) -> Result<Incident, ClientError> {
        self.post(&path(&["incidents", id, "stage"], &[]), req)
            .await
    }

    pub async fn note(&self, id: &str, text: &str) -> Result<Incident, ClientError> {
        let req = NoteRequest { text: text.into() };
        self.post(&path(&["incidents", id, "note"], &[]), &req)
            .await
    }

    pub async fn severity(&self, id: &str, req: &SeverityChange) -> Result<Incident, ClientError> {
        self.post(&path(&["incidents", id, "severity"], &[]), req)
            .await
    }

    pub async fn stats(&self, q: &StatsQuery) -> Result<Stats, ClientError> {
        let query: Vec<(&str, String)> = [("from_ms", q.from_ms), ("to_ms", q.to_ms)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?.to_string())))
            .collect();
        self.get(&path(&["incidents", "stats"], &query)).await
    }

    pub async fn silences(&self) -> Result<SilenceList, ClientError> {
        self.get("/v1/silences").await
    }

    pub async fn add_silence(&self, req: &SilenceRequest) -> Result<Silence, ClientError> {
        self.post("/v1/silences", req).await
    }

    pub async fn remove_silence(&self, id: &str) -> Result<Removed, ClientError> {
        let path = path(&["silences", id], &[]);
        self.call(self.request(Method::DELETE, &path), &path).await
    }

    pub async fn status_feed(&self) -> Result<StatusFeed, ClientError> {
        self.get("/v1/status-feed").await
    }

    pub async fn service_feed(&self, service: &str) -> Result<ServiceFeed, ClientError> {
        self.get(&path(&["status-feed", service], &[])).await
    }

    /// Starts a rollout (`dry_run` is ignored: see [`Client::plan_rollout`]).
    pub async fn start_rollout(
        &self,
        req: &crate::rollout::StartRollout,
    ) -> Result<Rollout, ClientError> {
        let req = crate::rollout::StartRollout {
            dry_run: false,
            ..req.clone()
        };
        self.post("/v1/rollouts", &req).await
    }

    /// What rolling the config out would mean; nothing starts.
    pub async fn plan_rollout(
        &self,
        req: &crate::rollout::StartRollout,
    ) -> Result<crate::rollout::RolloutPlan, ClientError> {
        let req = crate::rollout::StartRollout {
            dry_run: true,
            ..req.clone()
        };
        self.post("/v1/rollouts", &req).await
    }

    pub async fn rollouts(&self) -> Result<crate::rollout::RolloutList, ClientError> {
        self.get("/v1/rollouts").await
    }

    pub async fn rollout(&self, id: &str) -> Result<Rollout, ClientError> {
        self.get(&path(&["rollouts", id], &[])).await
    }

    pub async fn rollout_action(
        &self,
        id: &str,
        action: crate::rollout::RolloutAction,
    ) -> Result<Rollout, ClientError> {
        self.post(&path(&["rollouts", id, action.as_str()], &[]), &())
            .await
    }
}

/// A path under `/v1/` with its segments escaped and a query, built with the
/// `url` crate rather than by hand: names are ours (services, ids) but may
/// still hold characters a URL reserves.
fn path(segments: &[&str], query: &[(&str, String)]) -> String {
    let mut u = url::Url::parse("http://x/v1").expect("a valid URL");
    u.path_segments_mut()
        .expect("an http URL has a path")
        .extend(segments);
    if !query.is_empty() {
        u.query_pairs_mut().extend_pairs(query);
    }
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}
