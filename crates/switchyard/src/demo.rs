//! `switchyard demo`: the main job until the lab exists. Starts the example
//! topology (2 regions × 3 zones, an edge per zone, 2 instances per zone) as
//! real processes on loopback addresses, drives open-loop load through the
//! edges, and walks through a zonal shift, an instance loss and read-only mode
//! while printing, every second, what clients saw and which zones served them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use switchyard_model::Config;

const EXAMPLE: &str = include_str!("../../../examples/switchyard.toml");
const TOKEN: &str = "demo-admin-token";

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each phase of the walk-through lasts.
    #[arg(long, default_value_t = 6)]
    phase_seconds: u64,
    /// Requests per second offered to the edges of each region.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Keep the topology running after the walk-through until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

/// Children are killed when this is dropped, and they also exit on their own
/// when our end of their stdin closes, so none outlives the demo.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn kill(&mut self, name: &str) {
        if let Some((_, c)) = self.0.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn main(args: Args) -> ExitCode {
    crate::block_on("demo", run(args))
}

fn spawn(exe: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    Ok(Command::new(exe)
        .arg("--exit-on-stdin-eof")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out)
        .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
        .spawn()?)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir()?;
    let state = dir.path().join("state");
    let text = EXAMPLE.replace(
        "state_dir = \"/tmp/switchyard-example\"",
        &format!("state_dir = {:?}", state.display().to_string()),
    );
    let cfg_path = dir.path().join("switchyard.toml");
    std::fs::write(&cfg_path, &text)?;
    let config = Config::from_toml(&text, |_| Some(TOKEN.to_string()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let svc = config.services[0].clone();
    let host = svc.hosts[0].clone();

    println!(
        "switchyard demo: {} regions, {} zones, {} instances of {:?} (logs in {})",
        config.regions.len(),
        config.zones().count(),
        svc.instances.len(),
        svc.name,
        dir.path().display()
    );
    let mut procs = Procs(Vec::new());
    for i in &svc.instances {
        let log = dir.path().join(format!("{}.log", i.name));
        let child = spawn(
            &exe,
            &[
                "backend",
                "--listen",
                &i.addr.to_string(),
                "--name",
                &i.name,
                "--threads",
                "1",
            ],
            &log,
        )?;
        procs.0.push((i.name.clone(), child));
    }
    let cfg_s = cfg_path.display().to_string();
    for z in config.zones() {
        let log = dir.path().join(format!("edge-{}.log", z.name));
        let child = spawn(&exe, &["edge", "--config", &cfg_s, "--zone", &z.name], &log)?;
        procs.0.push((format!("edge-{}", z.name), child));
    }
    let client = admin_client();
    for z in config.zones() {
        wait_ready(&client, z.admin).await?;
        println!("  edge {:<10} {}  admin http://{}", z.name, z.edge, z.admin);
    }
    for i in &svc.instances {
        println!("  instance {:<8} {} (zone {})", i.name, i.addr, i.zone);
    }
    println!(
        "  try: curl -H 'Host: {host}' http://{}/items/1",
        config.zones().next().expect("zones").edge
    );

    let stats = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut gens = Vec::new();
    for (g, region) in config.regions.iter().enumerate() {
        let edges: Vec<SocketAddr> = region.zones.iter().map(|z| z.edge).collect();
        let src: IpAddr = format!("127.200.{}.1", g + 1).parse()?;
        gens.push(tokio::spawn(load(
            edges,
            src,
            host.clone(),
            args.rate,
            stats.clone(),
            stop.clone(),
        )));
    }
    let use_zones: Vec<String> = config.regions[0]
        .zones
        .iter()
        .map(|z| z.name.clone())
        .collect();
    let edges_r1: Vec<SocketAddr> = config.regions[0].zones.iter().map(|z| z.admin).collect();
    let all_admins: Vec<SocketAddr> = config.zones().map(|z| z.admin).collect();
    let shifted = &use_zones[0];
    let phases: Vec<(&str, String)> = vec![
        (
            "steady",
            "steady state: every zone serves its own clients".into(),
        ),
        (
            "shift",
            format!("zonal shift: {shifted} weight 0 for 10 minutes"),
        ),
        (
            "kill",
            format!(
                "instance {} killed (ejection)",
                svc.instances
                    .iter()
                    .find(|i| i.zone == use_zones[1])
                    .map(|i| i.name.clone())
                    .unwrap_or_default()
            ),
        ),
        (
            "readonly",
            format!(
                "{} read-only, shift still on: writes get 503, reads keep working",
                svc.name
            ),
        ),
        (
            "restore",
            "controls cleared: shift and read-only off".into(),
        ),
    ];
    let t0 = Instant::now();
    println!(
        "\n{:>4}  {:>6} {:>6} {:>6} {:>8}  served by zone",
        "t(s)", "req/s", "fail", "503-ro", "p99(ms)"
    );
    for (key, title) in phases {
        println!("--- {title}");
        match key {
            "shift" => {
                let until = switchyard_edge::state::now_ms() + 600_000;
                let body = serde_json::json!({"version": 2, "services": {svc.name.clone(): {"zones": {shifted.clone(): {"weight": 0.0, "expires_at_ms": until, "reason": "demo"}}}}});
                put_controls(&client, &edges_r1, &body).await?;
            }
            "kill" => {
                let victim = svc
                    .instances
                    .iter()
                    .find(|i| i.zone == use_zones[1])
                    .expect("an instance in the second zone");
                procs.kill(&victim.name);
            }
            "readonly" => {
                // Controls are a full set: keep the shift while adding read-only.
                let until = switchyard_edge::state::now_ms() + 600_000;
                let shift = serde_json::json!({shifted.clone(): {"weight": 0.0, "expires_at_ms": until, "reason": "demo"}});
                let body = serde_json::json!({"version": 3, "services": {svc.name.clone(): {"read_only": true, "zones": shift}}});
                put_controls(&client, &all_admins, &body).await?;
            }
            "restore" => {
                put_controls(&client, &all_admins, &serde_json::json!({"version": 4})).await?;
            }
            _ => {}
        }
        for _ in 0..args.phase_seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let w = std::mem::take(&mut *stats.lock().expect("stats lock"));
            let zones: Vec<String> = w.by_zone.iter().map(|(z, n)| format!("{z}:{n}")).collect();
            println!(
                "{:>4}  {:>6} {:>6} {:>6} {:>8.1}  {}",
                t0.elapsed().as_secs(),
                w.total,
                w.failed,
                w.read_only,
                w.p99_ms(),
                zones.join(" ")
            );
        }
    }
    if args.keep {
        println!("\ntopology left running; Ctrl-C stops everything");
        tokio::signal::ctrl_c().await?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for g in gens {
        let _ = g.await;
    }
    drop(procs);
    println!("\nall processes stopped");
    Ok(())
}

#[derive(Default)]
struct Window {
    total: u64,
    failed: u64,
    read_only: u64,
    latencies_us: Vec<u64>,
    by_zone: BTreeMap<String, u64>,
}

impl Window {
    fn p99_ms(&self) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        v[(v.len() * 99 / 100).min(v.len() - 1)] as f64 / 1000.0
    }
}

fn admin_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn wait_ready(
    client: &Client<HttpConnector, Full<Bytes>>,
    admin: SocketAddr,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let req = Request::get(format!("http://{admin}/health")).body(Full::new(Bytes::new()))?;
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_millis(500), client.request(req)).await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("edge admin {admin} did not come up within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_controls(
    client: &Client<HttpConnector, Full<Bytes>>,
    admins: &[SocketAddr],
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    for a in admins {
        let req = Request::put(format!("http://{a}/controls"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let r = client.request(req).await?;
        if !r.status().is_success() {
            let b = r.into_body().collect().await?.to_bytes();
            anyhow::bail!("edge {a} refused controls: {}", String::from_utf8_lossy(&b));
        }
    }
    Ok(())
}

/// Open loop: requests leave on schedule whether or not earlier ones returned.
async fn load(
    edges: Vec<SocketAddr>,
    src: IpAddr,
    host: String,
    rate: u32,
    stats: Arc<Mutex<Window>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(src));
    conn.set_connect_timeout(Some(Duration::from_secs(1)));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(conn);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let edge = edges[(n as usize) % edges.len()];
        let write = n.is_multiple_of(5);
        let req = Request::builder()
            .method(if write { "PUT" } else { "GET" })
            .uri(format!("http://{edge}/items/{}", n % 1000))
            .header("host", &host)
            .body(Full::new(Bytes::from_static(b"{\"v\":1}")))
            .expect("valid request");
        let (client, stats) = (client.clone(), stats.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await;
            let us = t.elapsed().as_micros() as u64;
            let mut w = stats.lock().expect("stats lock");
            w.total += 1;
            w.latencies_us.push(us);
            match r {
                Ok(Ok(resp)) => {
                    let ro = resp
                        .headers()
                        .get("x-switchyard-error")
                        .is_some_and(|v| v == "read_only");
                    if ro {
                        w.read_only += 1;
                    } else if resp.status().is_server_error() {
                        w.failed += 1;
                    }
                    if let Some(u) = resp
                        .headers()
                        .get("x-switchyard-upstream")
                        .and_then(|v| v.to_str().ok())
                    {
                        let zone = u.split('/').nth(1).unwrap_or("?").to_string();
                        *w.by_zone.entry(zone).or_default() += 1;
                    }
                }
                _ => w.failed += 1,
            }
        });
    }
}
