//! A log of one JSON line per event (the edge's access log, the DNS
//! server's query log), written by a thread of its own. The request path
//! only hands its line to a bounded queue and never waits: a slow disk (or
//! a full pipe on standard output) costs lines, counted, never latency.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{self, SyncSender, TrySendError};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// The sending side.
pub struct LineLog<T> {
    tx: SyncSender<T>,
    dropped: Counter,
}

impl<T: Serialize + Send + 'static> LineLog<T> {
    /// Appends to `file` (created if missing), or writes to standard output
    /// when `None`; starts the writer thread, named `name`. At most `queue`
    /// lines wait; more are dropped and counted in `dropped`.
    pub fn open(
        file: Option<&Path>,
        name: &str,
        dropped: Counter,
        queue: usize,
    ) -> std::io::Result<LineLog<T>> {
        let out: Box<dyn Write + Send> = match file {
            None => Box::new(std::io::stdout()),
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = mpsc::sync_channel::<T>(queue);
        let what = name.to_string();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || write_lines(rx, out, &what))?;
        Ok(LineLog { tx, dropped })
    }

    /// Queues a line; drops (and counts) it when the writer is behind.
    pub fn log(&self, line: T) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// Writes lines as they come, flushing whenever the queue runs dry, so a
/// quiet process's lines reach the file at once and a busy one's in batches.
fn write_lines<T: Serialize>(rx: mpsc::Receiver<T>, out: Box<dyn Write + Send>, what: &str) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next {
            let mut text = serde_json::to_vec(&line).unwrap_or_default();
            text.push(b'\n');
            report(out.write_all(&text), &mut failing, what);
            next = rx.try_recv().ok();
        }
        report(out.flush(), &mut failing, what);
    }
}

/// Logs the first write error of an episode and the recovery after it.
fn report(r: std::io::Result<()>, failing: &mut bool, what: &str) {
    match r {
        Err(e) if !*failing => {
            *failing = true;
            tracing::error!(log = what, error = %e, "cannot write the log; lines are lost until it works again");
        }
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!(log = what, "writing the log again");
        }
        _ => {}
    }
}
