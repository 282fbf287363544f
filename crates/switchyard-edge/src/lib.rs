//! The edge: Switchyard's data plane. One per zone, it proxies HTTP/1.1 and
//! h2c to the service's instances, own zone first, and carries out every
//! traffic move the control plane decides. It never waits on the control
//! plane and keeps serving with the last-known-good controls without it.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod body;
pub mod configs;
pub mod conn;
pub mod error;
pub mod grpc;
pub mod h1;
pub mod health_check;
pub mod metrics;
pub mod outlier;
pub mod probes;
pub mod protocol;
pub mod proxy;
pub mod shed;
pub mod signals;
pub mod sources;
pub mod state;
pub mod tls;
pub mod upgrade;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard_model::time::now_ms;
use switchyard_model::Config;
use tokio::net::TcpListener;

pub use state::{Edge, UpdateError};

use crate::outlier::{peer_outliers, IntervalStats};
use crate::state::ServiceRuntime;

/// Reads and validates a config file; the error names the file and lists
/// every problem.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Config::from_toml(&text, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e))
}

/// Re-reads the config file. A config that fails validation is refused and
/// the running one stays.
pub fn reload_config(edge: &Edge) -> Result<(), UpdateError> {
    // Certificates are their own files: an operator who replaced them and
    // sent SIGHUP wants them read, whatever becomes of the config.
    edge.tls_reload.notify_one();
    configs::from_file(edge)
}

pub struct EdgeOptions {
    pub config_path: PathBuf,
    pub zone: String,
    /// Overrides the zone's edge address from the config (for benchmarks).
    pub listen: Option<SocketAddr>,
    /// Overrides the zone's `edge_tls` address (needs `[edge.tls]`).
    pub listen_tls: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// Proxy worker threads; by default one per core.
    pub workers: Option<usize>,
    /// Record no per-request metrics, signals or outlier state: only to
    /// measure what they cost (`scripts/bench-proxies --only observation`).
    pub without_observation: bool,
}

/// A running edge, for tests and the CLI.
pub struct Running {
    /// Held for the process's lifetime; the kernel releases them on exit,
    /// kill -9 included.
    _locks: Vec<std::fs::File>,
    pub edge: Arc<Edge>,
    pub listen: SocketAddr,
    /// The TLS listener's address, when the edge serves TLS.
    pub listen_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish (up to 5 s), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(6), t).await;
        }
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}

pub async fn start(opts: EdgeOptions) -> anyhow::Result<Running> {
    let (config, running) = configs::initial(&opts.config_path, &opts.zone)?;
    let own_zone = config.zone(&opts.zone);
    let listen_for_lock = opts.listen.or_else(|| own_zone.map(|z| z.edge));
    let tls_for_lock = opts
        .listen_tls
        .or_else(|| own_zone.and_then(|z| z.edge_tls));
    // Before anything reads or writes the zone's state: a second edge of the
    // same zone would overwrite its last-known-good file, and one on the same
    // address would silently share the port (SO_REUSEPORT).
    let locks = take_locks(
        config.edge.state_dir.as_deref().map(Path::new),
        &opts.zone,
        &[listen_for_lock, tls_for_lock],
    )?;
    let edge = Edge::new(config, running, opts.config_path.clone(), &opts.zone)?;
    if opts.without_observation {
        tracing::warn!(
            "observation off: no request metrics, signals or outlier state are recorded"
        );
        edge.observation
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let snap = edge.snapshot();
    if let Some(p) = &snap.config.edge.controls_file {
        sources::load_controls_file(&edge, &sources::resolve(&edge.config_path, p));
    }
    let zone = snap
        .config
        .zone(&opts.zone)
        .expect("checked by Edge::new")
        .clone();
    let listen = opts.listen.unwrap_or(zone.edge);
    let admin = opts.admin_listen.unwrap_or(zone.admin);
    // Certificates and CAs are loaded before anything listens, so a bad one
    // stops the start with every problem named rather than failing handshakes.
    let (material, tls_files) = tls::load(&snap.config, &edge.config_path)?;
    edge.client_tls.store(Arc::new(material.clients));
    let tls = match (opts.listen_tls.or(zone.edge_tls), material.listener) {
        (Some(addr), Some(set)) => Some((addr, tls::Certificates::new(set)?)),
        (Some(addr), None) => {
            anyhow::bail!("a TLS listener on {addr} needs certificates in [edge.tls]")
        }
        (None, _) => None,
    };
    // One listener per worker thread on the same address (SO_REUSEPORT): the
    // kernel spreads connections, and each worker's runtime, requests and
    // upstream pool stay on one thread, like nginx's worker processes.
    let n_workers = opts
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let first = bind_reuseport(listen)?;
    let listen = first.local_addr()?;
    let mut proxy_ls = vec![first];
    for _ in 1..n_workers {
        proxy_ls.push(bind_reuseport(listen)?);
    }
    // The TLS listener, like the plain one, once per worker thread.
    let mut tls_ls = Vec::new();
    let mut listen_tls = None;
    let mut certs_for_workers = None;
    if let Some((addr, certs)) = &tls {
        let first = bind_reuseport(*addr)?;
        let addr = first.local_addr()?;
        listen_tls = Some(addr);
        tls_ls.push(Some(first));
        for _ in 1..n_workers {
            tls_ls.push(Some(bind_reuseport(addr)?));
        }
        certs.publish_expiry(&edge);
        certs_for_workers = Some(certs.clone());
    } else {
        tls_ls.resize_with(n_workers, || None);
    }
    let admin_l = TcpListener::bind(admin)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {admin}: {e}"))?;
    let admin = admin_l.local_addr()?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let limits = ClientLimits::of(&edge);
    let proxy_conns = proxy_conn_limits(&edge);
    tracing::info!(
        max_client_connections = proxy_conns.max_total(),
        max_connections_per_client = proxy_conns.max_per_client(),
        "client connection limits"
    );
    let admin_conns = conn::ConnLimits::new(
        "admin",
        ADMIN_MAX_CONNECTIONS,
        ADMIN_MAX_CONNECTIONS / 2,
        listener_gauge(&edge, "admin"),
    );
    let mut tasks = Vec::new();
    let mut workers = Vec::new();
    for (i, (l, tl)) in proxy_ls.into_iter().zip(tls_ls).enumerate() {
        let (edge, rx, conns) = (edge.clone(), rx.clone(), proxy_conns.clone());
        let certs = certs_for_workers.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("edge-worker-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("worker runtime");
                    rt.block_on(async move {
                        let tls = tl.zip(certs).map(|(l, certs)| {
                            let (edge, rx, conns) = (edge.clone(), rx.clone(), conns.clone());
                            serve_worker_listener(l, edge, rx, limits, conns, Some(certs))
                        });
                        let plain = serve_worker_listener(l, edge, rx, limits, conns, None);
                        match tls {
                            Some(tls) => {
                                tokio::join!(plain, tls);
                            }
                            None => plain.await,
                        }
                    });
                })?,
        );
    }
    {
        let edge = edge.clone();
        tasks.push(tokio::spawn(serve_admin(
            admin_l,
            edge,
            rx.clone(),
            admin_conns,
        )));
    }
    let mut background = vec![
        tokio::spawn(sources::watch_files(edge.clone())),
        tokio::spawn(sources::watch_sighup(edge.clone())),
        tokio::spawn(sources::watch_control_plane(edge.clone())),
        tokio::spawn(outlier_loop(edge.clone())),
        tokio::spawn(signal_loop(edge.clone())),
        tokio::spawn(probes::probe_loop(edge.clone())),
        tokio::spawn(health_check::check_loop(edge.clone())),
    ];
    background.push(tokio::spawn(tls::watch(
        edge.clone(),
        tls.map(|(_, certs)| certs),
        tls_files,
    )));
    {
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = rx.wait_for(|s| *s).await;
            for b in background {
                b.abort();
            }
        }));
    }
    if snap.config.regions.len() > 1 && snap.config.edge.forward_secret.is_none() {
        tracing::warn!(
            "no edge.forward_secret with more than one region: forwarded requests are steered \
             again where they land and can bounce while edges disagree about the controls"
        );
    }
    tracing::info!(zone = %opts.zone, region = %edge.region, %listen, ?listen_tls, %admin, "edge serving");
    Ok(Running {
        _locks: locks,
        edge,
        listen,
        listen_tls,
        admin,
        shutdown: tx,
        tasks,
        workers,
    })
}

/// The `listener` label of the proxy's TLS listener.
const TLS_LISTENER: &str = "proxy_tls";

/// Operators' connections to the admin listener: few, but capped all the
/// same, since anyone who can reach it can open them.
const ADMIN_MAX_CONNECTIONS: usize = 1024;

fn listener_gauge(edge: &Edge, listener: &str) -> prometheus_client::metrics::gauge::Gauge {
    edge.metrics
        .client_connections
        .get_or_create(&metrics::ListenerLabels {
            listener: listener.into(),
        })
        .clone()
}

/// The proxy listener's connection ceilings: as configured, or half of the
/// file-descriptor limit in all and half of that per client address.
fn proxy_conn_limits(edge: &Edge) -> Arc<conn::ConnLimits> {
    let e = &edge.snapshot().config.edge;
    let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    let total = e
        .max_client_connections
        .unwrap_or((fds / 2).max(64) as usize);
    let per_client = e.max_connections_per_client.unwrap_or(total / 2);
    conn::ConnLimits::new("proxy", total, per_client, listener_gauge(edge, "proxy"))
}

/// Takes a place for a new connection, or answers it `503` and counts why.
/// A TLS client gets no answer, only the close: a plaintext `503` would be
/// garbage to it, and a handshake costs the CPU the refusal is there to save.
fn admit(
    limits: &Arc<conn::ConnLimits>,
    stream: &tokio::net::TcpStream,
    peer: SocketAddr,
    edge: &Edge,
    listener: &str,
) -> Option<conn::ConnSlot> {
    let plain = listener != TLS_LISTENER;
    match limits.admit(peer.ip()) {
        Ok(slot) => Some(slot),
        Err((limit, e)) => {
            edge.metrics
                .connections_refused
                .get_or_create(&metrics::RefusalLabels {
                    listener: listener.into(),
                    limit: limit.into(),
                })
                .inc();
            if plain {
                conn::refuse(stream, &e);
            }
            None
        }
    }
}

fn bind_reuseport(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.set_nodelay(true)?;
    sock.bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let l = sock.listen(4096)?;
    Ok(l.into_std()?)
}

/// Client limits every listener applies to its connections.
#[derive(Clone, Copy)]
struct ClientLimits {
    max_header: usize,
    max_headers: usize,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// HTTP/1.x on the plain listener is served by `h1`, not hyper.
    own_http1: bool,
}

impl ClientLimits {
    fn of(edge: &Edge) -> ClientLimits {
        let e = &edge.snapshot().config.edge;
        ClientLimits {
            max_header: e.max_header_bytes,
            max_headers: e.max_headers,
            header_timeout: e.client_header_timeout,
            idle_timeout: e.client_idle_timeout,
            own_http1: e.http1_server == switchyard_model::config::Http1Server::Switchyard,
        }
    }

    /// The settings of the edge's own HTTP/1 server: hyper's limits (see
    /// `builder`), so both answer the same heads the same way.
    fn h1(&self) -> h1::Settings {
        h1::Settings {
            head: h1::HeadLimits {
                max_bytes: (2 * self.max_header).max(8192),
                max_headers: 2 * self.max_headers,
            },
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// The HTTP/1 settings of `builder`, for hyper's own HTTP/1 builder
    /// (the one that serves upgrades without the auto builder's prefix).
    fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.max_buf_size((2 * self.max_header).max(8192))
            .max_headers(2 * self.max_headers)
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        b
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper starts this timer whenever it waits for a request head: the
        // first one and every later one on a keep-alive connection, so it is
        // also the idle limit between requests.
        // hyper answers a head over its own limits with a bare 400 or 431
        // it writes itself. Its limits sit at twice ours, so a head between
        // one and two times a limit reaches `proxy` and gets the JSON answer.
        builder
            .http1()
            .max_buf_size((2 * self.max_header).max(8192))
            .max_headers(2 * self.max_headers)
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_header_list_size(2 * self.max_header as u32)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        builder
    }
}

/// What an accept loop does after a failed accept. Running out of file
/// descriptors (or kernel memory) is not fixed by retrying at once: the
/// pending connection stays in the backlog and accept fails again, so the
/// loop would spin a core. It sleeps instead, 10 ms doubling to 1 s, and
/// resets on the next accepted connection. An episode lasts until accepts
/// have gone a second without failing, so a listener that flaps while
/// descriptors free up logs one line when it starts and one when it ends.
struct AcceptBackoff {
    listener: &'static str,
    delay: Option<Duration>,
    /// The last failure of the episode in progress.
    episode: Option<Instant>,
}

impl AcceptBackoff {
    fn new(listener: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            listener,
            delay: None,
            episode: None,
        }
    }

    fn accepted(&mut self) {
        self.delay = None;
        if self
            .episode
            .is_some_and(|last| last.elapsed() >= Duration::from_secs(1))
        {
            self.episode = None;
            tracing::info!(listener = self.listener, "accepting connections again");
        }
    }

    async fn failed(&mut self, e: &std::io::Error, edge: &Edge) {
        // Linux errno values; the standard library names none of them.
        let kind = match e.raw_os_error() {
            Some(24) => "emfile",
            Some(23) => "enfile",
            Some(105) => "enobufs",
            Some(12) => "enomem",
            _ => "other",
        };
        edge.metrics
            .accept_errors
            .get_or_create(&metrics::AcceptLabels {
                listener: self.listener.into(),
                kind: kind.into(),
            })
            .inc();
        if kind == "other" {
            // A connection reset before it was accepted: the next may be fine.
            tracing::debug!(listener = self.listener, error = %e, "accept failed");
            return;
        }
        if self.episode.replace(Instant::now()).is_none() {
            tracing::error!(listener = self.listener, error = %e, "cannot accept connections; backing off until resources free up");
        }
        let delay = self.delay.map_or(Duration::from_millis(10), |d| {
            (d * 2).min(Duration::from_secs(1))
        });
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }
}

/// One listener's way in: accept, backing off when out of resources, then a
/// place under the listener's connection ceilings. The proxy and the admin
/// listener take their connections through it alike.
struct Gate {
    listener: TcpListener,
    backoff: AcceptBackoff,
    conns: Arc<conn::ConnLimits>,
}

impl Gate {
    fn new(listener: TcpListener, name: &'static str, conns: Arc<conn::ConnLimits>) -> Gate {
        Gate {
            listener,
            backoff: AcceptBackoff::new(name),
            conns,
        }
    }

    /// The next admitted connection, or `None` once `stop` is set.
    async fn next(
        &mut self,
        edge: &Edge,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<(tokio::net::TcpStream, SocketAddr, conn::ConnSlot)> {
        loop {
            let acc = tokio::select! {
                acc = self.listener.accept() => acc,
                _ = stop.wait_for(|s| *s) => return None,
            };
            let (stream, peer) = match acc {
                Ok(a) => a,
                Err(e) => {
                    self.backoff.failed(&e, edge).await;
                    continue;
                }
            };
            self.backoff.accepted();
            if let Some(slot) = admit(&self.conns, &stream, peer, edge, self.backoff.listener) {
                return Some((stream, peer, slot));
            }
        }
    }
}

/// A worker's listener, handed over from the thread that bound it, served
/// on the worker's runtime.
async fn serve_worker_listener(
    l: std::net::TcpListener,
    edge: Arc<Edge>,
    stop: tokio::sync::watch::Receiver<bool>,
    limits: ClientLimits,
    conns: Arc<conn::ConnLimits>,
    tls: Option<Arc<tls::Certificates>>,
) {
    match TcpListener::from_std(l) {
        Ok(l) => serve_proxy(l, edge, stop, limits, conns, tls).await,
        Err(e) => tracing::error!(error = %e, "worker cannot use its listener"),
    }
}

/// One proxy listener's accept loop: plain HTTP/1.1 and h2c, or TLS when
/// `tls` is given (then ALPN picks the protocol).
async fn serve_proxy(
    l: TcpListener,
    edge: Arc<Edge>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    limits: ClientLimits,
    conns: Arc<conn::ConnLimits>,
    tls: Option<Arc<tls::Certificates>>,
) {
    // Each connection task holds a clone: the drain waits for the count to
    // fall back to this one.
    let live = Arc::new(());
    let builders = Arc::new(protocol::Builders::new(limits.builder(), limits.http1()));
    let stop_conn = stop.clone();
    let name = if tls.is_some() { TLS_LISTENER } else { "proxy" };
    let scheme = if tls.is_some() {
        proxy::Scheme::Https
    } else {
        proxy::Scheme::Http
    };
    let mut gate = Gate::new(l, name, conns);
    while let Some((stream, peer, slot)) = gate.next(&edge, &mut stop).await {
        let _ = stream.set_nodelay(true);
        let activity = conn::Activity::new();
        // An upgraded connection (WebSocket) outlives the HTTP connection it
        // came on: its tunnel holds a share of the slot, so the connection
        // ceilings count it until it closes.
        let slot = Arc::new(slot);
        let held = upgrade::Hold(slot.clone());
        // Known once the TLS handshake is done, before the first request.
        let peer_edge = Arc::new(std::sync::OnceLock::<proxy::PeerEdge>::new());
        let svc = {
            let edge = edge.clone();
            let peer_edge = peer_edge.clone();
            conn::tracked(&activity, move |mut req: http::Request<_>| {
                req.extensions_mut().insert(scheme);
                if let Some(p) = peer_edge.get() {
                    req.extensions_mut().insert(p.clone());
                }
                if upgrade::requested(req.version(), req.headers()) {
                    req.extensions_mut().insert(held.clone());
                }
                proxy::handle(edge.clone(), req, peer)
            })
        };
        let (builders, mut stop, live) = (builders.clone(), stop_conn.clone(), live.clone());
        // Two tasks of their own types, so a plain connection's task is no
        // larger for what a TLS one holds (its rustls state).
        let Some(certs) = tls.clone() else {
            let first_head = tokio::time::Instant::now() + limits.header_timeout;
            tokio::spawn(async move {
                // A client that has sent nothing yet has nothing to drain.
                let how = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => None,
                    r = tokio::time::timeout_at(first_head, builders.sniff(&stream)) => {
                        r.unwrap_or_else(|_| {
                            tracing::debug!("closing a connection that sent no request in time");
                            None
                        })
                    }
                };
                match how {
                    Some(protocol::Sniffed::Http1) if limits.own_http1 => {
                        h1::serve(stream, svc, limits.h1(), first_head, &mut stop, &builders).await
                    }
                    // Boxed: hyper's connection state is kilobytes, and the
                    // task of every idle HTTP/1 connection above would be
                    // as large as this branch if it were inline.
                    Some(how) => {
                        let left =
                            first_head.saturating_duration_since(tokio::time::Instant::now());
                        let serve = builders.serve(how, TokioIo::new(stream), svc, Some(&mut stop));
                        Box::pin(conn::run(serve, activity, left, limits.idle_timeout)).await
                    }
                    None => {}
                }
                drop(slot);
                drop(live);
            });
            continue;
        };
        let edge = edge.clone();
        tokio::spawn(async move {
            // The header timeout runs from accept: a TLS client spends part
            // of it on the handshake, so one that never finishes is closed
            // as surely as one that never sends a request.
            let deadline = tokio::time::Instant::now() + limits.header_timeout;
            let accepted = tokio::select! {
                r = tokio::time::timeout_at(deadline, certs.acceptor().accept(stream)) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let stream = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = tls::failure_reason(&e);
                    tracing::debug!(%peer, reason, error = %e, "TLS handshake failed");
                    tls::count_failure(&edge, reason);
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "closing a connection whose TLS handshake did not finish in time");
                    tls::count_failure(&edge, "timeout");
                    return;
                }
            };
            let state = stream.get_ref().1;
            tls::count_handshake(&edge, state);
            // rustls verified it against the peer CA, or the handshake failed.
            if let Some(p) = tls::peer_edge(state) {
                let _ = peer_edge.set(p);
            }
            let how = protocol::Sniffed::from_alpn(state.alpn_protocol());
            let serve = async move {
                builders
                    .serve(how, TokioIo::new(stream), svc, Some(&mut stop))
                    .await
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            conn::run(serve, activity, left, limits.idle_timeout).await;
            drop(slot);
            drop(live);
        });
    }
    drop(gate);
    // Requests in flight get until the drain deadline; upgraded connections
    // (WebSockets) too, and are closed there.
    let deadline = Instant::now() + DRAIN;
    while Arc::strong_count(&live) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edge.tunnels.drain(deadline.into()).await;
}

/// How long a stopping edge lets requests in flight and upgraded
/// connections run before it closes them.
const DRAIN: Duration = Duration::from_secs(5);

async fn serve_admin(
    l: TcpListener,
    edge: Arc<Edge>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    conns: Arc<conn::ConnLimits>,
) {
    let stop_conn = stop.clone();
    let limits = ClientLimits::of(&edge);
    let builders = Arc::new(protocol::Builders::new(limits.builder(), limits.http1()));
    let mut gate = Gate::new(l, "admin", conns);
    while let Some((stream, _, slot)) = gate.next(&edge, &mut stop).await {
        let edge = edge.clone();
        let activity = conn::Activity::new();
        let svc = conn::tracked(&activity, move |req| admin::handle(edge.clone(), req));
        let builders = builders.clone();
        let serve = async move {
            if let Some(how) = builders.sniff(&stream).await {
                builders.serve(how, TokioIo::new(stream), svc, None).await;
            }
        };
        let mut stop = stop_conn.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn::run(serve, activity, limits.header_timeout, limits.idle_timeout) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            drop(slot);
        });
    }
}

/// Publishes one signal snapshot per interval.
async fn signal_loop(edge: Arc<Edge>) {
    loop {
        let every = edge.snapshot().config.edge.signal_interval;
        tokio::time::sleep(every).await;
        let running = edge.running_config();
        edge.signals
            .rotate(now_ms(), every, Some(running.version), running.refused);
    }
}

/// Runs outlier analysis per service interval, moves expired ejections to
/// probing, and re-checks probing instances before they return.
async fn outlier_loop(edge: Arc<Edge>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let snap = edge.snapshot();
        let now = Instant::now();
        for rt in &snap.services {
            for inst in &rt.local {
                if inst.ejection_expired(now) {
                    let (edge, rt, inst) = (edge.clone(), rt.clone(), inst.clone());
                    tokio::spawn(async move {
                        let passed = recheck(&edge, &rt, &inst.meta.addr).await;
                        inst.recheck(passed, Instant::now(), &rt.svc.ejection);
                        tracing::info!(service = %rt.svc.name, instance = %inst.meta.name, passed, "ejected instance re-checked");
                    });
                }
            }
            analyse(&edge, rt, now);
            let plan = switchyard_steer::plan(
                &rt.local,
                rt.svc.floor(&edge.region),
                snap.controls.service(&rt.svc.name),
                now_ms(),
            );
            edge.set_panic_gauge(&rt.svc.name, plan.mode == switchyard_steer::Mode::Panic);
            edge.metrics
                .concurrency_limit
                .get_or_create(&metrics::ServiceLabels {
                    service: rt.svc.name.clone(),
                })
                .set(rt.admission.limit() as i64);
        }
    }
}

fn analyse(edge: &Edge, rt: &Arc<ServiceRuntime>, now: Instant) {
    {
        let mut last = rt.last_analysis.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(*last) < rt.svc.ejection.interval {
            return;
        }
        *last = now;
    }
    let e = &rt.svc.ejection;
    let enough = e.latency_min_requests.min(e.success_rate_min_requests);
    let stats: Vec<IntervalStats> = rt.local.iter().map(|i| i.take_interval(enough)).collect();
    let mut zones: Vec<&str> = rt.local.iter().map(|i| i.meta.zone.as_str()).collect();
    zones.sort();
    zones.dedup();
    for z in zones {
        let idx: Vec<usize> = (0..rt.local.len())
            .filter(|&i| rt.local[i].meta.zone == z && rt.local[i].is_healthy())
            .collect();
        let zstats: Vec<IntervalStats> = idx.iter().map(|&i| stats[i]).collect();
        for (k, reason) in peer_outliers(&zstats, &rt.svc.ejection) {
            edge.try_eject(rt, &rt.local[idx[k]], reason);
        }
    }
}

/// An active check of an ejected instance, the one the service's health
/// checks use: its health endpoint must answer 2xx (or, for a gRPC check,
/// the instance must say it is serving).
async fn recheck(edge: &Edge, rt: &ServiceRuntime, addr: &SocketAddr) -> bool {
    let svc = &rt.svc;
    let timeout = svc.timeouts.connect + svc.timeouts.header;
    health_check::check_instance(edge, svc, *addr, "switchyard-edge-recheck", timeout)
        .await
        .is_ok()
}

/// Exclusive locks on the zone's state (`STATE_DIR/ZONE.lock`) and on the
/// proxy addresses (in the temporary directory), or a clear error naming what
/// another edge holds.
fn take_locks(
    state_dir: Option<&Path>,
    zone: &str,
    listen: &[Option<SocketAddr>],
) -> anyhow::Result<Vec<std::fs::File>> {
    let mut wanted = Vec::new();
    if let Some(dir) = state_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("edge.state_dir {}: {e}", dir.display()))?;
        wanted.push((
            dir.join(format!("{zone}.lock")),
            format!(
                "another edge of zone {zone} is running with its state in {}",
                dir.display()
            ),
        ));
    }
    for a in listen.iter().flatten().filter(|a| a.port() != 0) {
        let name = format!("switchyard-edge-{}-{}.lock", a.ip(), a.port()).replace(':', "_");
        wanted.push((
            std::env::temp_dir().join(name),
            format!("another edge is listening on {a}"),
        ));
    }
    let mut held = Vec::new();
    for (path, who) in wanted {
        held.push(switchyard_api::lkg::lock(&path, &who)?);
    }
    Ok(held)
}

/// Runs an edge until SIGINT or SIGTERM, then drains.
pub async fn run(opts: EdgeOptions) -> anyhow::Result<()> {
    let running = start(opts).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining connections");
    running.shutdown().await;
    Ok(())
}
