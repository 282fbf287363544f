//! Link proxies: every instance→store path and every region→region path of
//! the lab runs through one, so a drill can degrade or cut it at run time.
//! netem is not available here, so latency, loss, resets, bandwidth limits
//! and cuts are made in user space, on real TCP connections.
//!
//! A link has one or more pipes (listen address → target address) that share
//! its settings: the link between two regions carries both the edges'
//! forwarded requests and the stores' replication.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a link does to the traffic crossing it. The default is a clean link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// Added one way, in each direction, to every chunk of data.
    #[serde(default)]
    pub latency_ms: u64,
    /// Up to this much more, at random, per chunk (order is kept).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Share of new connections closed before anything is forwarded.
    #[serde(default)]
    pub fail_percent: f64,
    /// Share of new connections reset (RST) once the first bytes arrive, so
    /// the request is sent and then lost.
    #[serde(default)]
    pub reset_percent: f64,
    /// Per direction and connection, in kilobytes per second; 0 is unlimited.
    #[serde(default)]
    pub bandwidth_kbps: u64,
    /// Refuse new connections and break the open ones.
    #[serde(default)]
    pub cut: bool,
}

impl LinkSettings {
    pub fn validate(&self) -> Result<(), String> {
        for (v, f) in [
            (self.fail_percent, "fail_percent"),
            (self.reset_percent, "reset_percent"),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!(
                    "{f} must be a percentage between 0 and 100, got {v}"
                ));
            }
        }
        if self.latency_ms > 60_000 || self.jitter_ms > 60_000 {
            return Err("latency_ms and jitter_ms must be at most 60000".into());
        }
        Ok(())
    }

    pub fn is_clean(&self) -> bool {
        *self == LinkSettings::default()
    }
}

#[derive(Debug, Default, Serialize)]
pub struct LinkCounters {
    pub connections: AtomicU64,
    pub failed: AtomicU64,
    pub reset: AtomicU64,
    pub bytes: AtomicU64,
}

/// A running link. Dropping it stops every pipe and breaks its connections.
pub struct Link {
    pub name: String,
    pub pipes: Vec<(SocketAddr, SocketAddr)>,
    settings: Arc<ArcSwap<LinkSettings>>,
    /// Bumped on every cut so open connections know to break.
    epoch: watch::Sender<u64>,
    pub counters: Arc<LinkCounters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Serialize)]
pub struct LinkView {
    pub name: String,
    pub pipes: Vec<String>,
    pub settings: LinkSettings,
    pub connections: u64,
    pub failed: u64,
    pub reset: u64,
    pub bytes: u64,
}

impl Link {
    /// Binds every pipe's listen address and starts forwarding.
    pub async fn start(name: &str, pipes: &[(SocketAddr, SocketAddr)]) -> anyhow::Result<Link> {
        let settings = Arc::new(ArcSwap::from_pointee(LinkSettings::default()));
        let (epoch, _) = watch::channel(0u64);
        let counters = Arc::new(LinkCounters::default());
        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        for (listen, target) in pipes {
            let l = TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("link {name}: cannot listen on {listen}: {e}"))?;
            let listen = l.local_addr()?;
            bound.push((listen, *target));
            let (settings, epoch_rx, counters, target) = (
                settings.clone(),
                epoch.subscribe(),
                counters.clone(),
                *target,
            );
            tasks.push(tokio::spawn(accept_loop(
                l, target, settings, epoch_rx, counters,
            )));
        }
        Ok(Link {
            name: name.into(),
            pipes: bound,
            settings,
            epoch,
            counters,
            tasks,
        })
    }

    pub fn settings(&self) -> LinkSettings {
        (**self.settings.load()).clone()
    }

    /// Applies new settings; a cut also breaks every open connection.
    pub fn set(&self, s: LinkSettings) -> Result<(), String> {
        s.validate()?;
        let cut = s.cut;
        self.settings.store(Arc::new(s));
        if cut {
            self.epoch.send_modify(|e| *e += 1);
        }
        Ok(())
    }

    pub fn view(&self) -> LinkView {
        let c = &self.counters;
        LinkView {
            name: self.name.clone(),
            pipes: self
                .pipes
                .iter()
                .map(|(l, t)| format!("{l} -> {t}"))
                .collect(),
            settings: self.settings(),
            connections: c.connections.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            reset: c.reset.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.epoch.send_modify(|e| *e += 1);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && rand::thread_rng().gen::<f64>() * 100.0 < percent)
}

/// How often a pipe whose far end refused looks for it again.
const FAR_END_RETRY: Duration = Duration::from_millis(100);

/// Serves one pipe. A link is a network path, and a path passes a refusal
/// through: when nothing listens at the far end (its edge or store was
/// killed), the pipe stops listening too, so callers get "connection
/// refused" as they would across a real network, and not a connection
/// accepted and then closed, which a caller must treat as a request that
/// may have been sent. It listens again as soon as the far end accepts.
/// Only the connection that found the far end gone sees it closed.
async fn accept_loop(
    l: TcpListener,
    target: SocketAddr,
    settings: Arc<ArcSwap<LinkSettings>>,
    epoch: watch::Receiver<u64>,
    counters: Arc<LinkCounters>,
) {
    let listen = l.local_addr().ok();
    let mut listener = Some(l);
    let refused = Arc::new(tokio::sync::Notify::new());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Some(l) = listener.as_ref() else {
            if far_end_listens(target).await {
                listener = match listen {
                    Some(a) => TcpListener::bind(a).await.ok(),
                    None => None,
                };
            }
            if listener.is_none() {
                tokio::time::sleep(FAR_END_RETRY).await;
            }
            continue;
        };
        let client = tokio::select! {
            r = l.accept() => match r {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
            _ = refused.notified() => {
                listener = None;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let s = settings.load_full();
        if s.cut || roll(s.fail_percent) {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let reset = roll(s.reset_percent);
        let (settings, mut epoch, counters, refused) = (
            settings.clone(),
            epoch.clone(),
            counters.clone(),
            refused.clone(),
        );
        epoch.mark_unchanged();
        conns.spawn(async move {
            let _ = client.set_nodelay(true);
            if reset {
                // Let the request arrive, then answer it with a reset.
                let mut buf = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(5), client.peek(&mut buf)).await;
                counters.reset.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_zero_linger();
                drop(client);
                return;
            }
            let server = match tokio::time::timeout(
                Duration::from_secs(2),
                TcpStream::connect(target),
            )
            .await
            {
                Ok(Ok(server)) => server,
                Ok(Err(e)) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        refused.notify_one();
                    }
                    return;
                }
                Err(_) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = pump(cr, sw, settings.clone(), counters.clone());
            let down = pump(sr, cw, settings, counters);
            tokio::select! {
                _ = async { tokio::join!(up, down) } => {}
                _ = epoch.changed() => {}
            }
        });
    }
}

/// Whether something accepts connections at `target` now.
async fn far_end_listens(target: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(FAR_END_RETRY, TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
}

/// Copies one direction through a delay line: a reader stamps each chunk with
/// when it may leave, a writer sends it then, paced by the bandwidth limit.
async fn pump<R, W>(
    mut r: R,
    mut w: W,
    settings: Arc<ArcSwap<LinkSettings>>,
    counters: Arc<LinkCounters>,
) where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(64);
    let reader = {
        let settings = settings.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut last_due = Instant::now();
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let s = settings.load();
                let jitter = if s.jitter_ms > 0 {
                    rand::thread_rng().gen_range(0..=s.jitter_ms)
                } else {
                    0
                };
                let due =
                    (Instant::now() + Duration::from_millis(s.latency_ms + jitter)).max(last_due);
                last_due = due;
                if tx
                    .send((due, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let kbps = settings.load().bandwidth_kbps;
            if kbps > 0 {
                tokio::time::sleep(Duration::from_secs_f64(
                    chunk.len() as f64 / (kbps as f64 * 1024.0),
                ))
                .await;
            }
            if w.write_all(&chunk).await.is_err() {
                break;
            }
            counters
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
}
