//! `switchyard load`: the load generator used by benchmarks. Three modes:
//! - open loop (`--rate`): requests leave on a fixed schedule whatever the
//!   server does, and latency is measured from the scheduled send time, so a
//!   slow server cannot hide its slowness by slowing the client (the lab's
//!   client groups send with the same loop, `switchyard_lab::load::open_loop`);
//! - closed loop (`--connections` without `--rate`): each connection sends
//!   its next request when the last one returns, to find saturation;
//! - idle (`--idle`): open this many connections, send one request on each,
//!   and hold them, to measure what idle clients cost a proxy.
//!
//! Every mode speaks HTTPS with `--tls` (rustls on ring, trusting only
//! `--tls-ca`, the server name taken from `--host`), over keep-alive
//! connections so handshakes do not dominate unless
//! `--new-connection-per-request` asks for exactly that. Successes and
//! failures are reported apart, with the latency of the successful requests
//! on its own: under overload a fast error must not pass for a fast answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Address to send to (ip:port).
    #[arg(long)]
    target: SocketAddr,
    /// Host header (and, with `--tls`, the server name).
    #[arg(long, default_value = "catalog.local")]
    host: String,
    #[arg(long, default_value = "/items/1")]
    path: String,
    /// Requests per second (open loop). Without it, closed loop.
    #[arg(long)]
    rate: Option<u32>,
    /// Connections for the closed loop.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Open this many idle connections and hold them for `--duration`.
    #[arg(long)]
    idle: Option<usize>,
    /// Speak HTTPS (HTTP/1.1 over TLS), trusting `--tls-ca`.
    #[arg(long, requires = "tls_ca")]
    tls: bool,
    /// PEM file of the certificate authorities to trust with `--tls`.
    #[arg(long, requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// Closed loop: one request per connection, so each costs a connect
    /// (and with `--tls` a full handshake): requests/s is handshakes/s.
    #[arg(long, conflicts_with_all = ["rate", "idle"])]
    new_connection_per_request: bool,
    /// A request with no complete answer after this long is abandoned and
    /// counted as an error (and a timeout).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    /// Open loop: send at the rate for this many seconds first without
    /// counting, so connections (and TLS handshakes) are open before the
    /// measured `--duration` starts.
    #[arg(long, default_value_t = 0.0, conflicts_with = "idle")]
    warmup: f64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    mode: &'static str,
    tls: bool,
    duration_s: f64,
    /// Every request that got an answer or failed in a way with a duration
    /// (open loop: all of them; closed loop: not the failed connects).
    requests: u64,
    errors: u64,
    /// Of `errors`, those abandoned at `--timeout-ms`.
    timeouts: u64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Requests answered with a status below 500 and a complete body.
    ok: u64,
    ok_rps: f64,
    ok_p50_ms: f64,
    ok_p99_ms: f64,
    /// Connections the client opened (TLS: full handshakes).
    connections_opened: u64,
    /// Answers by status code, to tell a proxy's refusals (503) from
    /// timeouts (504) and from the instances' own answers.
    statuses: BTreeMap<u16, u64>,
    /// Open loop: how late requests left against their schedule. More than
    /// a few milliseconds means this client, not the server, set the pace
    /// and the offered rate was lower than asked.
    send_lag_p99_ms: f64,
    send_lag_max_ms: f64,
}

pub fn main(args: Args) -> ExitCode {
    crate::block_on("load", run(args))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// What every request adds to; shared by the tasks of one run.
struct Tally {
    all: Mutex<Histogram<u64>>,
    ok: Mutex<Histogram<u64>>,
    lag: Mutex<Histogram<u64>>,
    errors: AtomicU64,
    timeouts: AtomicU64,
    opened: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
}

/// How one request ended.
enum Outcome {
    Ok,
    Failed,
    TimedOut,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            all: Mutex::new(histogram()),
            ok: Mutex::new(histogram()),
            lag: Mutex::new(histogram()),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            statuses: Mutex::new(BTreeMap::new()),
        }
    }

    fn record(&self, all: &mut Histogram<u64>, ok: &mut Histogram<u64>, us: u64, o: Outcome) {
        all.saturating_record(us.max(1));
        match o {
            Outcome::Ok => ok.saturating_record(us.max(1)),
            Outcome::Failed => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::TimedOut => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn status(&self, s: http::StatusCode) {
        *self
            .statuses
            .lock()
            .expect("status lock")
            .entry(s.as_u16())
            .or_default() += 1;
    }

    fn merge(&self, all: &Histogram<u64>, ok: &Histogram<u64>, statuses: BTreeMap<u16, u64>) {
        let mut mine = self.statuses.lock().expect("status lock");
        for (s, n) in statuses {
            *mine.entry(s).or_default() += n;
        }
        drop(mine);
        self.all
            .lock()
            .expect("histogram lock")
            .add(all)
            .expect("same bounds");
        self.ok
            .lock()
            .expect("histogram lock")
            .add(ok)
            .expect("same bounds");
    }
}

/// The TLS side of a run: the connector and the name to present.
#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

fn tls_config(ca: &Path, host: &str) -> anyhow::Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("--tls-ca {}: cannot read", ca.display()))?;
    for c in certs {
        let c = c.with_context(|| format!("--tls-ca {}: not PEM certificates", ca.display()))?;
        roots
            .add(c)
            .with_context(|| format!("--tls-ca {}: unusable certificate", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("--tls-ca {}: holds no certificate", ca.display());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("rustls protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| anyhow::anyhow!("--host {host:?}: not a TLS server name: {e}"))?;
    Ok(Tls {
        config: Arc::new(config),
        name,
    })
}

/// A client connection, plain or TLS, behind one type so every mode serves both.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn connect(target: SocketAddr, tls: Option<&Tls>) -> std::io::Result<Box<dyn Io>> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Box::new(stream)),
        Some(t) => {
            let c = tokio_rustls::TlsConnector::from(t.config.clone());
            Ok(Box::new(c.connect(t.name.clone(), stream).await?))
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dur = Duration::from_secs_f64(args.duration);
    let tls = match &args.tls_ca {
        Some(ca) if args.tls => Some(tls_config(ca, &args.host)?),
        _ => None,
    };
    if let Some(n) = args.idle {
        return idle(&args, tls.as_ref(), n, dur).await;
    }
    let tally = Arc::new(Tally::new());
    let warmup = match args.rate {
        Some(_) => Duration::from_secs_f64(args.warmup.max(0.0)),
        None => Duration::ZERO,
    };
    let start = Instant::now();
    let mode = match args.rate {
        Some(rate) => {
            match &tls {
                None => {
                    let url = format!("http://{}{}", args.target, args.path);
                    open_loop(&args, http_client(), url, rate, dur, tally.clone()).await
                }
                Some(t) => {
                    // hyper-rustls sets ALPN itself from the versions enabled.
                    let mut config = (*t.config).clone();
                    config.alpn_protocols.clear();
                    let conn = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(config)
                        .https_only()
                        .with_server_name_resolver(FixedServerNameResolver::new(t.name.clone()))
                        .enable_http1()
                        .build();
                    let client = Client::builder(TokioExecutor::new())
                        .pool_max_idle_per_host(4096)
                        .build(conn);
                    let url = format!("https://{}{}", args.target, args.path);
                    open_loop(&args, client, url, rate, dur, tally.clone()).await
                }
            }
            "open_loop"
        }
        None => {
            closed_loop(&args, tls.as_ref(), dur, tally.clone()).await;
            "closed_loop"
        }
    };
    // The warm-up sent but did not count: it is not part of the run either.
    let elapsed = start.elapsed().as_secs_f64() - warmup.as_secs_f64();
    let all = tally.all.lock().expect("histogram lock");
    let ok = tally.ok.lock().expect("histogram lock");
    let lag = tally.lag.lock().expect("histogram lock");
    let q = |h: &Histogram<u64>, x: f64| h.value_at_quantile(x) as f64 / 1000.0;
    let r = Report {
        mode,
        tls: tls.is_some(),
        duration_s: elapsed,
        requests: all.len(),
        errors: tally.errors.load(Ordering::Relaxed),
        timeouts: tally.timeouts.load(Ordering::Relaxed),
        rps: all.len() as f64 / elapsed,
        p50_ms: q(&all, 0.5),
        p90_ms: q(&all, 0.9),
        p99_ms: q(&all, 0.99),
        max_ms: all.max() as f64 / 1000.0,
        ok: ok.len(),
        ok_rps: ok.len() as f64 / elapsed,
        ok_p50_ms: q(&ok, 0.5),
        ok_p99_ms: q(&ok, 0.99),
        connections_opened: tally.opened.load(Ordering::Relaxed),
        statuses: tally.statuses.lock().expect("status lock").clone(),
        send_lag_p99_ms: q(&lag, 0.99),
        send_lag_max_ms: lag.max() as f64 / 1000.0,
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: {} requests in {:.1} s ({:.0}/s), {} errors ({} timeouts), p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} ok ({:.0}/s), ok p99 {:.2} ms",
            r.mode, r.requests, r.duration_s, r.rps, r.errors, r.timeouts, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.ok, r.ok_rps, r.ok_p99_ms
        );
    }
    Ok(())
}

fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build_http()
}

async fn open_loop<C>(
    args: &Args,
    client: Client<C, Empty<Bytes>>,
    url: String,
    rate: u32,
    dur: Duration,
    tally: Arc<Tally>,
) where
    C: Connect + Clone + Send + Sync + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let warm = (args.warmup.max(0.0) * rate as f64) as u64;
    let total = warm + (dur.as_secs_f64() * rate as f64) as u64;
    let schedule = |i: u64| (i < total).then(|| start + interval * i as u32);
    let timeout = Duration::from_millis(args.timeout_ms);
    switchyard_lab::load::open_loop(schedule, |n, due| {
        let counted = n >= warm;
        let req = Request::get(&url)
            .header("host", &args.host)
            .body(Empty::new())
            .expect("valid request");
        let (client, tally) = (client.clone(), tally.clone());
        async move {
            let lag = due.elapsed().as_micros() as u64;
            let exchange = async {
                let resp = client.request(req).await.ok()?;
                let s = resp.status();
                if counted {
                    tally.status(s);
                }
                resp.into_body().collect().await.ok()?;
                Some(!s.is_server_error())
            };
            let outcome = match tokio::time::timeout(timeout, exchange).await {
                Ok(Some(true)) => Outcome::Ok,
                Ok(_) => Outcome::Failed,
                Err(_) => Outcome::TimedOut,
            };
            // From when it was due, not when it left: coordinated omission stays out.
            let us = due.elapsed().as_micros() as u64;
            if !counted {
                return;
            }
            let mut all = tally.all.lock().expect("histogram lock");
            let mut ok = tally.ok.lock().expect("histogram lock");
            tally.record(&mut all, &mut ok, us, outcome);
            drop((all, ok));
            tally
                .lag
                .lock()
                .expect("histogram lock")
                .saturating_record(lag.max(1));
        }
    })
    .await;
}

async fn closed_loop(args: &Args, tls: Option<&Tls>, dur: Duration, tally: Arc<Tally>) {
    let deadline = Instant::now() + dur;
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (args, tls, tally) = (args.clone(), tls.cloned(), tally.clone());
        tasks.spawn(async move {
            let (mut all, mut ok) = (histogram(), histogram());
            let mut statuses = BTreeMap::<u16, u64>::new();
            while Instant::now() < deadline {
                let conn = tokio::time::timeout(timeout, async {
                    let io = connect(args.target, tls.as_ref()).await.ok()?;
                    hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
                        .await
                        .ok()
                })
                .await;
                let Ok(Some((mut send, conn))) = conn else {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tally.opened.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let req = Request::get(&args.path)
                        .header("host", &args.host)
                        .body(Empty::new())
                        .expect("valid request");
                    let t = Instant::now();
                    let exchange = async {
                        let resp = send.send_request(req).await.ok()?;
                        let s = resp.status();
                        // Counted per connection and merged at the end: no
                        // shared lock per request at saturation.
                        *statuses.entry(s.as_u16()).or_default() += 1;
                        resp.into_body().collect().await.ok()?;
                        Some(!s.is_server_error())
                    };
                    let outcome = match tokio::time::timeout(timeout, exchange).await {
                        Ok(Some(true)) => Outcome::Ok,
                        Ok(_) => Outcome::Failed,
                        Err(_) => Outcome::TimedOut,
                    };
                    let usable = matches!(outcome, Outcome::Ok) && !send.is_closed();
                    tally.record(&mut all, &mut ok, t.elapsed().as_micros() as u64, outcome);
                    // A failed exchange may leave the connection mid-message:
                    // start again on a fresh one, as a real client would.
                    if !usable || args.new_connection_per_request {
                        break;
                    }
                }
            }
            tally.merge(&all, &ok, statuses);
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn idle(args: &Args, tls: Option<&Tls>, n: usize, hold: Duration) -> anyhow::Result<()> {
    let mut senders = Vec::with_capacity(n);
    let mut failed = 0u64;
    for _ in 0..n {
        let ok = async {
            let io = connect(args.target, tls).await.ok()?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let req = Request::get(&args.path)
                .header("host", &args.host)
                .body(Empty::new())
                .ok()?;
            let resp = send.send_request(req).await.ok()?;
            resp.into_body().collect().await.ok()?;
            Some(send)
        };
        match tokio::time::timeout(Duration::from_millis(args.timeout_ms), ok).await {
            Ok(Some(s)) => senders.push(s),
            _ => failed += 1,
        }
    }
    println!(
        "{}",
        serde_json::json!({"mode": "idle", "open": senders.len(), "failed": failed})
    );
    tokio::time::sleep(hold).await;
    drop(senders);
    Ok(())
}
