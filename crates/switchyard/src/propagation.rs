//! `switchyard bench-propagation`: how long a control change takes to reach
//! every edge. Starts a control plane and N real edge processes (one zone
//! each), waits until every edge follows the watch stream, then makes
//! changes through the API and polls every edge's admin `/controls` until it
//! shows the new version.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 100)]
    edges: usize,
    #[arg(long, default_value_t = 20)]
    changes: usize,
    #[arg(long)]
    json: bool,
}

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

const TOKEN: &str = "bench-admin-token";

pub fn main(args: Args) -> ExitCode {
    crate::block_on("bench-propagation", run(args))
}

/// An edge's controls as its admin API shows them.
async fn get(
    c: &Client<HttpConnector, Full<Bytes>>,
    url: String,
) -> Option<switchyard_model::Controls> {
    let req = Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let r = tokio::time::timeout(Duration::from_secs(2), c.request(req))
        .await
        .ok()?
        .ok()?;
    let b = r.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&b).ok()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let n = args.edges.clamp(1, 250);
    let dir = tempfile::Builder::new()
        .prefix("switchyard-propagation-")
        .tempdir()?;
    let control: SocketAddr = "127.0.0.1:7100".parse()?;
    let mut cfg = format!(
        "[edge]\nadmin_token = \"{TOKEN}\"\nstate_dir = {:?}\ncontrol_url = \"http://{control}\"\n\n[[region]]\nname = \"r1\"\n",
        dir.path().join("state").display().to_string()
    );
    let zone_addr = |i: usize| format!("127.{}.{}.1", 100 + i / 200, i % 200 + 1);
    for i in 0..n {
        cfg.push_str(&format!(
            "[[region.zone]]\nname = \"z{i}\"\nedge = \"{}:8080\"\nadmin = \"{}:9901\"\n",
            zone_addr(i),
            zone_addr(i)
        ));
    }
    cfg.push_str("\n[[service]]\nname = \"svc\"\nhosts = [\"svc\"]\nmin_healthy = 0.01\n");
    for i in 0..n {
        cfg.push_str(&format!(
            "[[service.instance]]\nname = \"i{i}\"\nzone = \"z{i}\"\naddr = \"{}:8081\"\n",
            zone_addr(i)
        ));
    }
    cfg.push_str(&format!(
        "\n[control]\nlisten = \"{control}\"\nstore = \"sqlite:{}\"\n[control.safety]\nflip_wait_ms = 0\n[[control.token]]\nname = \"bench\"\nscope = \"admin\"\ntoken = \"{TOKEN}\"\n",
        dir.path().join("control.db").display()
    ));
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, cfg)?;
    let exe = std::env::current_exe()?;
    let spawn = |args: Vec<String>| -> anyhow::Result<Child> {
        Ok(Command::new(&exe)
            .arg("--exit-on-stdin-eof")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    };
    let p = path.display().to_string();
    let mut kids = Kill(vec![spawn(vec![
        "control".into(),
        "--config".into(),
        p.clone(),
    ])?]);
    for i in 0..n {
        kids.0.push(spawn(vec![
            "edge".into(),
            "--config".into(),
            p.clone(),
            "--zone".into(),
            format!("z{i}"),
            "--workers".into(),
            "1".into(),
        ])?);
    }
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4)
        .build_http();
    let api = switchyard_api::Client::new(&format!("http://{control}"), Some(TOKEN.into()));
    eprintln!("waiting for {n} edges to follow the control plane");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let watchers = api.status().await.map(|s| s.watchers).unwrap_or(0);
        if watchers >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {watchers} of {n} edges connected within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut per_edge_ms: Vec<f64> = Vec::new();
    let mut per_change_max_ms: Vec<f64> = Vec::new();
    for k in 0..args.changes {
        let op = switchyard_model::Op::ReadOnly {
            service: "svc".into(),
            region: None,
            on: k % 2 == 0,
        };
        let t0 = Instant::now();
        let version = api
            .apply(&switchyard_api::OpRequest::new(op, "propagation benchmark"))
            .await
            .map_err(|e| anyhow::anyhow!("change refused: {e}"))?
            .version;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (client, url) = (
                client.clone(),
                format!("http://{}:9901/controls", zone_addr(i)),
            );
            tasks.spawn(async move {
                loop {
                    if let Some(c) = get(&client, url.clone()).await {
                        if c.version >= version {
                            return t0.elapsed().as_secs_f64() * 1000.0;
                        }
                    }
                    if t0.elapsed() > Duration::from_secs(10) {
                        return f64::INFINITY;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        let mut worst = 0.0f64;
        while let Some(Ok(ms)) = tasks.join_next().await {
            worst = worst.max(ms);
            per_edge_ms.push(ms);
        }
        per_change_max_ms.push(worst);
    }
    drop(kids);
    per_edge_ms.sort_by(f64::total_cmp);
    per_change_max_ms.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let r = serde_json::json!({
        "edges": n,
        "changes": args.changes,
        "per_edge_p50_ms": q(&per_edge_ms, 0.5),
        "per_edge_p99_ms": q(&per_edge_ms, 0.99),
        "all_edges_p50_ms": q(&per_change_max_ms, 0.5),
        "all_edges_max_ms": q(&per_change_max_ms, 1.0),
        "target_ms": 500,
    });
    if args.json {
        println!("{r}");
    } else {
        println!(
            "{n} edges, {} changes: one edge p50 {:.0} ms, p99 {:.0} ms; every edge p50 {:.0} ms, worst {:.0} ms (target 500 ms: worst/target = {:.2})",
            args.changes,
            r["per_edge_p50_ms"].as_f64().unwrap_or(0.0),
            r["per_edge_p99_ms"].as_f64().unwrap_or(0.0),
            r["all_edges_p50_ms"].as_f64().unwrap_or(0.0),
            r["all_edges_max_ms"].as_f64().unwrap_or(0.0),
            r["all_edges_max_ms"].as_f64().unwrap_or(0.0) / 500.0
        );
    }
    Ok(())
}
