//! Following the control plane's watch stream (`GET /v1/watch`, server-sent
//! events). Every `controls` event carries the full set, and the first one
//! after a (re)connect is the current state, so a follower needs nothing
//! else to catch up. While the plane is unreachable the follower keeps what
//! it has and tries again with a capped backoff: the data plane never waits
//! on the control plane.
//!
//! Besides `controls`, the plane sends a `config` event with the config
//! this follower is to run (by its identity), before the first `controls`
//! and again whenever that config changes.
//!
//! The event framing is parsed by `eventsource-stream` (the SSE format has
//! corner cases — multi-line data, comments, CRLF — not worth owning).

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use switchyard_model::{ConfigDoc, Controls};

/// A process that follows the control plane: an edge, a DNS server.
pub trait Follower: Send + Sync {
    /// The planes' base URLs now, in order of preference (they may change
    /// with a config reload); empty while none is configured. Planes sharing
    /// a store serve the same state, so any of them will do.
    fn control_urls(&self) -> Vec<String>;
    /// Who follows, as query pairs (`region`, `zone`), for the plane's view
    /// of its watchers.
    fn identity(&self) -> Vec<(&'static str, String)>;
    /// A private CA to trust for `https://` planes besides the shipped roots
    /// (`[edge] control_ca_file`), as a path; read when a reload names
    /// another file, and retried while it cannot be read.
    fn control_ca_file(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The stream is up (`true`) or lost (`false`).
    fn connected(&self, up: bool);
    /// A full set arrived. The follower validates it against its own config
    /// and keeps its current set when it refuses.
    fn controls(&self, controls: Controls);
    /// The config this follower is to run arrived (see
    /// [`ConfigDoc`]); a follower that takes configs only from its file
    /// ignores it. It validates the config itself and keeps the running
    /// one when it refuses.
    fn config(&self, _doc: ConfigDoc) {}
    /// An event that is not a controls document this build can read.
    fn unreadable(&self, reason: &str) {
        tracing::error!(reason, "control plane sent controls that cannot be read");
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The plane sends a keep-alive every 5 s; three missed ones mean the
/// connection is gone even if TCP has not noticed.
const IDLE_LIMIT: Duration = Duration::from_secs(15);

/// Follows forever (until the task is dropped).
pub async fn follow<F: Follower>(f: &F) {
    follow_with(f, IDLE_LIMIT).await
}

/// [`follow`] with another limit on silence (tests use a short one).
pub async fn follow_with<F: Follower>(f: &F, idle_limit: Duration) {
    // Built for the CA file in force and again when a reload names another.
    let mut http: Option<(Option<std::path::PathBuf>, reqwest::Client)> = None;
    let mut backoff = FIRST_BACKOFF;
    // The plane tried next: moves on after each lost or refused stream, so a
    // dead plane costs one connect timeout before the next one is followed.
    let mut next = 0usize;
    loop {
        let urls = f.control_urls();
        if urls.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let ca = f.control_ca_file();
        if http.as_ref().is_none_or(|(was, _)| *was != ca) {
            match client(ca.as_deref()) {
                Ok(c) => http = Some((ca, c)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot follow the control plane");
                    f.connected(false);
                    http = None;
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            }
        }
        let http = &http.as_ref().expect("built above").1;
        let base = &urls[next % urls.len()];
        next = next.wrapping_add(1);
        let mut url = match url::Url::parse(&format!("{}/v1/watch", base.trim_end_matches('/'))) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(%base, error = %e, "control_url is not a URL");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        url.query_pairs_mut().extend_pairs(f.identity());
        let mut was_up = false;
        match once(http, &url, f, &mut was_up, idle_limit).await {
            Ok(()) => tracing::warn!(%url, "control-plane stream ended"),
            Err(e) => {
                tracing::warn!(%url, error = %e, "control plane unreachable; serving with current controls")
            }
        }
        f.connected(false);
        if was_up {
            backoff = FIRST_BACKOFF;
        }
        // Another plane may answer at once; the backoff applies once every
        // plane has been tried.
        if urls.len() > 1 && !next.is_multiple_of(urls.len()) {
            continue;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The watch client: no overall timeout (the stream lives for hours), a
/// short connect timeout, and the shipped roots plus `ca_file`.
fn client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let ca = match ca_file {
        None => Vec::new(),
        Some(p) => crate::tls::read_ca_file(&p.to_string_lossy())
            .map_err(|e| format!("edge.control_ca_file: {e}"))?,
    };
    let tls =
        crate::tls::client_config(&ca, None).map_err(|e| format!("edge.control_ca_file: {e}"))?;
    crate::tls::reqwest_builder(tls)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| crate::tls::describe(&e))
}

async fn once<F: Follower>(
    http: &reqwest::Client,
    url: &url::Url,
    f: &F,
    was_up: &mut bool,
    idle_limit: Duration,
) -> Result<(), String> {
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        http.get(url.clone())
            .header("accept", "text/event-stream")
            .send(),
    )
    .await
    .map_err(|_| "no answer within 5 s".to_string())?
    .map_err(|e| crate::tls::describe(&e))?;
    if !resp.status().is_success() {
        return Err(format!("watch answered {}", resp.status()));
    }
    f.connected(true);
    *was_up = true;
    // The limit applies to bytes, not events: keep-alive comments are
    // bytes that the event parser swallows.
    let bytes = futures_util::stream::unfold(resp.bytes_stream(), move |mut s| async move {
        match tokio::time::timeout(idle_limit, s.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(|e| e.to_string()), s)),
            Ok(None) => None,
            Err(_) => Some((Err(format!("nothing for {idle_limit:?}")), s)),
        }
    });
    let mut events = std::pin::pin!(bytes.eventsource());
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| e.to_string())?;
        match ev.event.as_str() {
            "controls" => match serde_json::from_str::<Controls>(&ev.data) {
                Ok(c) => f.controls(c),
                Err(e) => f.unreadable(&e.to_string()),
            },
            "config" => match serde_json::from_str::<ConfigDoc>(&ev.data) {
                // A version that is not the text's hash was altered on the
                // way: running it would report a version it is not.
                Ok(d) if d.is_intact() => f.config(d),
                Ok(d) => f.unreadable(&format!(
                    "config {} does not hash to its version ({})",
                    d.version,
                    switchyard_model::config_version(&d.text)
                )),
                Err(e) => f.unreadable(&format!("config: {e}")),
            },
            _ => {}
        }
    }
    Ok(())
}
