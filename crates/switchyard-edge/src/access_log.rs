//! The access log: one JSON line per request, written by a thread of its
//! own (`switchyard_metrics::line_log`). A request only hands its line to a bounded queue and never waits: a
//! slow disk (or a full pipe on standard output) costs log lines, counted in
//! `switchyard_access_log_dropped_total`, never request latency.

use std::path::Path;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use switchyard_metrics::line_log::LineLog;
use switchyard_model::config::AccessLogTarget;

/// Lines queued for the writer at most; about a second of a busy edge.
const QUEUE: usize = 16 * 1024;

/// One request, as the log line names it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Line {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub request_id: String,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub service: Option<String>,
    pub route: Option<String>,
    /// Where it was served: the region, and for local instances the zone
    /// and the instance (for a forwarded request, the edge's address).
    pub region: Option<String>,
    pub zone: Option<String>,
    pub instance: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    /// From sending to the instance until its response ended; `None` when
    /// no instance was asked.
    pub upstream_ms: Option<f64>,
    pub retries: u32,
    /// The edge's error code (`docs/edge.md`, "Errors") when it failed.
    pub error: Option<String>,
    /// The class signals count the failure under.
    pub error_class: Option<String>,
    /// A gRPC call's `grpc-status`: the instance's (trailers, or the head of
    /// a trailers-only answer) or the one the edge answered with.
    pub grpc_status: Option<u32>,
}

/// The sending side, held by the edge.
pub struct AccessLog(LineLog<Line>);

impl AccessLog {
    /// Opens the target and starts the writer thread. A file is appended to
    /// (created if missing); a relative path is read from `base`'s directory.
    pub fn open(
        target: &AccessLogTarget,
        config_path: &Path,
        dropped: Counter,
    ) -> anyhow::Result<AccessLog> {
        Self::open_with_queue(target, config_path, dropped, QUEUE)
    }

    fn open_with_queue(
        target: &AccessLogTarget,
        config_path: &Path,
        dropped: Counter,
        queue: usize,
    ) -> anyhow::Result<AccessLog> {
        let file = match target {
            AccessLogTarget::Stdout => None,
            AccessLogTarget::File(p) => Some(crate::sources::resolve(config_path, p)),
        };
        let log = LineLog::open(file.as_deref(), "access-log", dropped, queue).map_err(|e| {
            anyhow::anyhow!(
                "edge.access_log {}: {e}",
                file.as_deref().unwrap_or(Path::new("-")).display()
            )
        })?;
        Ok(AccessLog(log))
    }

    /// Queues a line; drops (and counts) it when the writer is behind.
    pub fn log(&self, line: Line) {
        self.0.log(line)
    }
}

/// `now` as RFC 3339 UTC with milliseconds.
pub fn timestamp(now: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(now).to_string()
}

/// A client's `x-request-id` worth keeping: 1 to 128 visible ASCII
/// characters, so it can go into a header and a log line unchanged.
pub fn sane_request_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A fresh request id: 128 random bits in hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(sane_request_id(b"abc-123_XYZ"));
        assert!(!sane_request_id(b""));
        assert!(!sane_request_id(b"has space"));
        assert!(!sane_request_id("caf\u{e9}".as_bytes()));
        assert!(!sane_request_id(&[b'a'; 129]));
        assert_eq!(new_request_id().len(), 32);
    }

    #[test]
    fn a_writer_that_cannot_keep_up_costs_lines_never_time() {
        // A pipe whose reader never reads: the writer blocks once the pipe's
        // buffer is full, as it would on a stuck disk or a stalled collector.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("access.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo (coreutils) is installed");
        assert!(made.success());
        let reader_path = fifo.clone();
        let reader = std::thread::spawn(move || std::fs::File::open(reader_path).unwrap());
        let dropped = Counter::default();
        let log = AccessLog::open_with_queue(
            &AccessLogTarget::File(fifo.display().to_string()),
            &dir.path().join("switchyard.toml"),
            dropped.clone(),
            4,
        )
        .unwrap();
        let _held_open_unread = reader.join().unwrap();
        let t = std::time::Instant::now();
        for i in 0..2000 {
            log.log(Line {
                request_id: format!("{i}"),
                path: "/".repeat(1000),
                ..Line::default()
            });
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "logging waited on the writer: {:?}",
            t.elapsed()
        );
        // 2000 lines of about 1 KiB: more than the pipe (64 KiB) and the
        // queue (4) hold together.
        assert!(dropped.get() > 1000, "dropped {}", dropped.get());
    }
}
