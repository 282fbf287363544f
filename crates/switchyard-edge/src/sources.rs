//! Where config and controls come from besides the admin API: the config file
//! (polled, and on SIGHUP), a controls file, and the control plane's watch
//! stream. Each source only proposes; the edge validates and keeps the old
//! state when a proposal is refused. Losing a source changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::state::Edge;

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Resolves a path from the config relative to the config file's folder.
pub fn resolve(config_path: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Reads the controls file and proposes it. A missing file is not an error:
/// the edge keeps what it has.
pub fn load_controls_file(edge: &Edge, path: &Path) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Err(e) = edge.apply_controls_json(&text, "file") {
                tracing::error!(path = %path.display(), reasons = ?e.reasons(), "controls file refused");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the controls file")
        }
    }
}

/// Polls the config file and the controls file for changes.
pub async fn watch_files(edge: Arc<Edge>) {
    let mut config_stamp = stamp(&edge.config_path);
    let controls_path = |edge: &Edge| {
        edge.snapshot()
            .config
            .edge
            .controls_file
            .as_ref()
            .map(|p| resolve(&edge.config_path, p))
    };
    let mut controls_stamp = controls_path(&edge).and_then(|p| stamp(&p));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let s = stamp(&edge.config_path);
        if s.is_some() && s != config_stamp {
            config_stamp = s;
            let _ = crate::reload_config(&edge);
        }
        if let Some(p) = controls_path(&edge) {
            let s = stamp(&p);
            if s.is_some() && s != controls_stamp {
                controls_stamp = s;
                load_controls_file(&edge, &p);
            }
        }
    }
}

/// Reloads on SIGHUP, the conventional signal for it.
pub async fn watch_sighup(edge: Arc<Edge>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config and controls");
        let _ = crate::reload_config(&edge);
        if let Some(p) = &edge.snapshot().config.edge.controls_file {
            load_controls_file(&edge, &resolve(&edge.config_path, p));
        }
    }
}

/// Follows the control plane's server-sent events. Every `controls` event
/// carries the full set; on (re)connect the first event is the current state.
/// While disconnected the edge keeps serving with what it has.
pub async fn watch_control_plane(edge: Arc<Edge>) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(base) = edge.snapshot().config.edge.control_url.clone() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let url = format!(
            "{}/v1/watch?region={}&zone={}",
            base.trim_end_matches('/'),
            edge.region,
            edge.zone
        );
        match follow(&edge, &client, &url).await {
            Ok(()) => tracing::warn!(%url, "control-plane stream ended"),
            Err(e) => {
                tracing::warn!(%url, error = %e, "control plane unreachable; serving with current controls")
            }
        }
        edge.set_control_plane_connected(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if edge
            .control_plane_connected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            backoff = Duration::from_millis(100);
        }
    }
}

async fn follow(
    edge: &Edge,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> anyhow::Result<()> {
    let req = Request::get(url)
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await??;
    if !resp.status().is_success() {
        anyhow::bail!("watch answered {}", resp.status());
    }
    edge.set_control_plane_connected(true);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut parser = SseParser::default();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some((event, data)) = parser.line(line.trim_end_matches(['\n', '\r'])) {
                if event == "controls" {
                    if let Err(e) = edge.apply_controls_json(&data, "control-plane") {
                        tracing::error!(reasons = ?e.reasons(), "control plane sent controls that were refused");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The part of the server-sent events format the watch stream uses.
#[derive(Default)]
pub struct SseParser {
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds one line (without its newline); returns a whole event at a blank line.
    pub fn line(&mut self, line: &str) -> Option<(String, String)> {
        if line.is_empty() {
            if self.data.is_empty() {
                self.event = None;
                return None;
            }
            let ev = self.event.take().unwrap_or_else(|| "message".into());
            let data = std::mem::take(&mut self.data).join("\n");
            return Some((ev, data));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    #[test]
    fn sse_events_are_split_at_blank_lines_and_data_lines_joined() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for l in [
            ": keepalive",
            "event: controls",
            "data: {\"a\":",
            "data: 1}",
            "",
            "",
            "data: x",
            "",
        ] {
            if let Some(e) = p.line(l) {
                got.push(e);
            }
        }
        assert_eq!(
            got,
            vec![
                ("controls".to_string(), "{\"a\":\n1}".to_string()),
                ("message".to_string(), "x".to_string())
            ]
        );
    }
}
