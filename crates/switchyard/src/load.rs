//! `switchyard load`: the load generator used by benchmarks. Three modes:
//! - open loop (`--rate`): requests leave on a fixed schedule whatever the
//!   server does, and latency is measured from the scheduled send time, so a
//!   slow server cannot hide its slowness by slowing the client (the lab's
//!   client groups send with the same loop, `switchyard_lab::load::open_loop`);
//! - closed loop (`--connections` without `--rate`): each connection sends
//!   its next request when the last one returns, to find saturation;
//! - idle (`--idle`): open this many connections, send one request on each,
//!   and hold them, to measure what idle clients cost a proxy.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Address to send to (ip:port).
    #[arg(long)]
    target: SocketAddr,
    /// Host header.
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
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    mode: &'static str,
    duration_s: f64,
    requests: u64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub fn main(args: Args) -> ExitCode {
    crate::block_on("load", run(args))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dur = Duration::from_secs_f64(args.duration);
    if let Some(n) = args.idle {
        return idle(&args, n, dur).await;
    }
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mode = match args.rate {
        Some(rate) => {
            open_loop(&args, rate, dur, hist.clone(), errors.clone()).await;
            "open_loop"
        }
        None => {
            closed_loop(&args, dur, hist.clone(), errors.clone()).await?;
            "closed_loop"
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    let h = hist.lock().expect("histogram lock");
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
    let r = Report {
        mode,
        duration_s: elapsed,
        requests: h.len(),
        errors: errors.load(Ordering::Relaxed),
        rps: h.len() as f64 / elapsed,
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        max_ms: h.max() as f64 / 1000.0,
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: {} requests in {:.1} s ({:.0}/s), {} errors, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            r.mode, r.requests, r.duration_s, r.rps, r.errors, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
        );
    }
    Ok(())
}

async fn open_loop(
    args: &Args,
    rate: u32,
    dur: Duration,
    hist: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<AtomicU64>,
) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build_http();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let total = (dur.as_secs_f64() * rate as f64) as u64;
    let schedule = |i: u64| (i < total).then(|| start + interval * i as u32);
    switchyard_lab::load::open_loop(schedule, |_, due| {
        let req = Request::get(format!("http://{}{}", args.target, args.path))
            .header("host", &args.host)
            .body(Empty::new())
            .expect("valid request");
        let (client, hist, errors) = (client.clone(), hist.clone(), errors.clone());
        async move {
            let ok = match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                Ok(Ok(resp)) => {
                    let s = resp.status();
                    resp.into_body().collect().await.is_ok() && !s.is_server_error()
                }
                _ => false,
            };
            // From when it was due, not when it left: coordinated omission stays out.
            let us = due.elapsed().as_micros() as u64;
            hist.lock()
                .expect("histogram lock")
                .saturating_record(us.max(1));
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
}

async fn closed_loop(
    args: &Args,
    dur: Duration,
    hist: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + dur;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (args, hist, errors) = (args.clone(), hist.clone(), errors.clone());
        tasks.spawn(async move {
            let mut local = histogram();
            while Instant::now() < deadline {
                let Ok(stream) = tokio::net::TcpStream::connect(args.target).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut send, conn)) =
                    hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                        .await
                else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let req = Request::get(&args.path)
                        .header("host", &args.host)
                        .body(Empty::new())
                        .expect("valid request");
                    let t = Instant::now();
                    match send.send_request(req).await {
                        Ok(resp) => {
                            let s = resp.status();
                            let ok = resp.into_body().collect().await.is_ok();
                            local.saturating_record(t.elapsed().as_micros() as u64);
                            if !ok || s.is_server_error() {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            hist.lock()
                .expect("histogram lock")
                .add(&local)
                .expect("same bounds");
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn idle(args: &Args, n: usize, hold: Duration) -> anyhow::Result<()> {
    let mut senders = Vec::with_capacity(n);
    let mut failed = 0u64;
    for _ in 0..n {
        let ok = async {
            let stream = tokio::net::TcpStream::connect(args.target).await.ok()?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
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
        }
        .await;
        match ok {
            Some(s) => senders.push(s),
            None => failed += 1,
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
