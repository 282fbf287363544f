//! The lab's open-loop load generator. Client groups stand for user
//! geographies: each binds its own source address, sends at a fixed rate with
//! a read/write mix and a home region, and never slows down because the
//! server does. Every outcome lands in per-second buckets with HDR
//! histograms, keyed by when the request was due to leave. The open loop
//! itself ([`open_loop`]) is also what `switchyard load --rate` sends with.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use switchyard_report::{Cell, Second};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub source: IpAddr,
    /// The region the group's users are in: the label of its timeline.
    pub region: String,
    /// The edges it calls when it does not resolve them through DNS: its
    /// region's.
    pub edges: Vec<SocketAddr>,
    /// Resolve the edges through DNS instead, as this many users.
    pub dns: Option<GroupDns>,
    /// The region of every edge address, for counting where requests
    /// entered.
    pub region_of: Arc<BTreeMap<IpAddr, String>>,
    /// The zone of every edge address, for counting where requests entered
    /// by zone (a config rollout goes edge by edge).
    pub zone_of: Arc<BTreeMap<IpAddr, String>>,
    pub host: String,
    pub home: Option<String>,
    pub rate: f64,
    pub write_percent: f64,
    pub timeout: Duration,
}

/// How a group finds its edges through DNS.
#[derive(Debug, Clone)]
pub struct GroupDns {
    /// Name servers, the lookup, and the source address queries leave from.
    pub resolver: crate::resolve::Resolver,
    /// Users of the group, each with a /24 of its own, from the group's
    /// source address's on, as its client subnet.
    pub users: u8,
}

/// How one request ended, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Connection error, timeout, or a 5xx that was not a deliberate rejection.
    Failed,
    Shed,
    ReadOnly,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 2).expect("static bounds are valid")
}

#[derive(Default)]
struct Bucket {
    requests: u64,
    failures: u64,
    shed: u64,
    read_only: u64,
    latency: Option<Histogram<u64>>,
    regions: BTreeMap<String, (u64, u64, Histogram<u64>)>,
    zones: BTreeMap<String, (u64, u64, Histogram<u64>)>,
    entered: BTreeMap<String, BTreeMap<String, u64>>,
    /// Zone of the edge called → (requests, failed).
    entered_zones: BTreeMap<String, (u64, u64)>,
}

fn p99(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// Per-second outcomes of every group, shared by all requests in flight.
pub struct Recorder {
    start: Instant,
    buckets: Mutex<Vec<Bucket>>,
    /// Offered load multiplier ×1000 (for the thundering-herd drill).
    multiplier: AtomicU64,
    sent: AtomicU64,
}

impl Recorder {
    pub fn new(start: Instant) -> Arc<Recorder> {
        Arc::new(Recorder {
            start,
            buckets: Mutex::new(Vec::new()),
            multiplier: AtomicU64::new(1000),
            sent: AtomicU64::new(0),
        })
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn set_multiplier(&self, m: f64) {
        self.multiplier
            .store((m * 1000.0).round() as u64, Ordering::Relaxed);
    }

    pub fn multiplier(&self) -> f64 {
        self.multiplier.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Requests that have left so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// One request's outcome: `region` is its group's, `entered` the region
    /// of the edge it was sent to and `entered_zone` that edge's zone
    /// (`"none"` when it had no edge to go to), `zone` where an instance
    /// served it.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        due: Instant,
        group: &str,
        region: &str,
        entered: &str,
        entered_zone: &str,
        zone: Option<&str>,
        outcome: Outcome,
        latency: Duration,
    ) {
        let sec = due.saturating_duration_since(self.start).as_secs() as usize;
        let us = (latency.as_micros() as u64).max(1);
        let mut b = self.buckets.lock().expect("recorder lock");
        while b.len() <= sec {
            b.push(Bucket::default());
        }
        let bk = &mut b[sec];
        bk.requests += 1;
        let failed = outcome == Outcome::Failed;
        match outcome {
            Outcome::Ok => {}
            Outcome::Failed => bk.failures += 1,
            Outcome::Shed => bk.shed += 1,
            Outcome::ReadOnly => bk.read_only += 1,
        }
        bk.latency.get_or_insert_with(hist).saturating_record(us);
        *bk.entered
            .entry(group.to_string())
            .or_default()
            .entry(entered.to_string())
            .or_default() += 1;
        let ez = bk
            .entered_zones
            .entry(entered_zone.to_string())
            .or_default();
        ez.0 += 1;
        ez.1 += u64::from(failed);
        for (map, key) in [
            (&mut bk.regions, region),
            (&mut bk.zones, zone.unwrap_or("none")),
        ] {
            let e = map.entry(key.to_string()).or_insert_with(|| (0, 0, hist()));
            e.0 += 1;
            e.1 += u64::from(failed);
            e.2.saturating_record(us);
        }
    }

    /// p99 in milliseconds over every request due in seconds `from..to`.
    pub fn p99_between(&self, from: usize, to: usize) -> f64 {
        let b = self.buckets.lock().expect("recorder lock");
        let mut h = hist();
        for bk in b.iter().take(to).skip(from) {
            if let Some(x) = &bk.latency {
                let _ = h.add(x);
            }
        }
        p99(&h)
    }

    /// Requests and failed requests by the zone of the edge they were sent
    /// to, over the seconds `from..to` they were due in.
    pub fn entered_zones_between(&self, from: usize, to: usize) -> BTreeMap<String, (u64, u64)> {
        let b = self.buckets.lock().expect("recorder lock");
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for bk in b.iter().take(to).skip(from) {
            for (z, (r, f)) in &bk.entered_zones {
                let e = out.entry(z.clone()).or_default();
                e.0 += r;
                e.1 += f;
            }
        }
        out
    }

    /// The timeline of seconds `0..upto`.
    pub fn timeline(&self, upto: usize) -> Vec<Second> {
        let b = self.buckets.lock().expect("recorder lock");
        (0..upto)
            .map(|t| {
                let Some(bk) = b.get(t) else {
                    return Second {
                        t: t as u32,
                        ..Default::default()
                    };
                };
                let cells = |m: &BTreeMap<String, (u64, u64, Histogram<u64>)>| {
                    m.iter()
                        .map(|(k, (r, f, h))| {
                            (
                                k.clone(),
                                Cell {
                                    requests: *r,
                                    failures: *f,
                                    p99_ms: p99(h),
                                },
                            )
                        })
                        .collect()
                };
                Second {
                    t: t as u32,
                    requests: bk.requests,
                    failures: bk.failures,
                    shed: bk.shed,
                    read_only: bk.read_only,
                    p99_ms: bk.latency.as_ref().map(p99).unwrap_or(0.0),
                    regions: cells(&bk.regions),
                    zones: cells(&bk.zones),
                    entered: bk.entered.clone(),
                }
            })
            .collect()
    }
}

/// Classifies an answer: deliberate rejections are told apart by the edge's
/// `x-switchyard-error` header.
pub fn classify(status: http::StatusCode, error: Option<&str>) -> Outcome {
    match error {
        Some("shed") => Outcome::Shed,
        Some("read_only") => Outcome::ReadOnly,
        _ if status.is_server_error() => Outcome::Failed,
        _ => Outcome::Ok,
    }
}

/// The open loop: request `n` (from 0) leaves at `due(n)`, in its own task
/// made by `send(n, due)`, whatever the earlier ones are doing, so a slow
/// server cannot slow the offered load down (and latency measured from `due`
/// keeps coordinated omission out). Returns once `due` says `None` and every
/// request in flight has finished.
pub async fn open_loop<D, S, F>(mut due: D, mut send: S)
where
    D: FnMut(u64) -> Option<Instant>,
    S: FnMut(u64, Instant) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    while let Some(at) = due(n) {
        tokio::time::sleep_until(at).await;
        tasks.spawn(send(n, at));
        n += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One request: the zone that served it (from the edge's header) and how it
/// ended. A refused connection sends the user back to DNS.
async fn send_one(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
    timeout: Duration,
    user: Option<&crate::resolve::User>,
) -> (Option<String>, Outcome) {
    let r = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let error = header("x-switchyard-error");
        let zone =
            header("x-switchyard-upstream").and_then(|u| u.split('/').nth(1).map(str::to_string));
        let _ = resp.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>((status, error, zone))
    })
    .await;
    match r {
        Ok(Ok((status, error, zone))) => (zone, classify(status, error.as_deref())),
        Ok(Err(e)) => {
            if e.is_connect() {
                if let Some(u) = user {
                    u.refused();
                }
            }
            (None, Outcome::Failed)
        }
        Err(_) => (None, Outcome::Failed),
    }
}

/// Sends the group's load until `stop` is set, at the group's rate times the
/// recorder's multiplier as it is when each request is scheduled. A group
/// that resolves through DNS first waits (up to 5 s) for its users' first
/// answers, then keeps them fresh while it sends.
pub async fn run_group(g: Group, rec: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(g.source));
    conn.set_connect_timeout(Some(Duration::from_secs(1)));
    conn.set_nodelay(true);
    // An edge that leaves the answers stops getting requests at once; its
    // idle connections close soon after.
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build(conn);
    let mut resolving = tokio::task::JoinSet::new();
    let users = match &g.dns {
        Some(d) => {
            let base = match g.source {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => std::net::Ipv4Addr::new(127, 200, 0, 0),
            };
            let users = crate::resolve::users_of(base, d.users);
            let n = users.len();
            for (k, u) in users.iter().enumerate() {
                let phase = (k + 1) as f64 / n as f64;
                resolving.spawn(u.clone().keep_fresh(d.resolver.clone(), phase));
            }
            let until = Instant::now() + Duration::from_secs(5);
            while users.iter().any(|u| u.addrs().is_empty()) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            users
        }
        None => Vec::new(),
    };
    let mut next = Instant::now();
    let schedule = |_| {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let rate = (g.rate * rec.multiplier()).max(0.1);
        next += Duration::from_secs_f64(1.0 / rate);
        Some(next)
    };
    open_loop(schedule, |n, due| {
        let (edge, user) = if users.is_empty() {
            // The rotation starts at the second edge, as it did in the drills
            // already reported; kept so new runs compare with them.
            (Some(g.edges[(n as usize + 1) % g.edges.len()]), None)
        } else {
            let u = users[n as usize % users.len()].clone();
            let addrs = u.addrs();
            let turn = n as usize / users.len() + 1;
            (
                (!addrs.is_empty()).then(|| addrs[turn % addrs.len()]),
                Some(u),
            )
        };
        let entered = edge
            .and_then(|e| g.region_of.get(&e.ip()).cloned())
            .unwrap_or_else(|| "none".into());
        let entered_zone = edge
            .and_then(|e| g.zone_of.get(&e.ip()).cloned())
            .unwrap_or_else(|| "none".into());
        let write = rand::thread_rng().gen::<f64>() * 100.0 < g.write_percent;
        let id = rand::thread_rng().gen_range(0..1000);
        let (client, rec2, region, name, timeout) = (
            client.clone(),
            rec.clone(),
            g.region.clone(),
            g.name.clone(),
            g.timeout,
        );
        let req = edge.map(|edge| {
            let mut b = Request::builder()
                .method(if write { "PUT" } else { "GET" })
                .uri(format!("http://{edge}/items/{id}"))
                .header("host", &g.host);
            if let Some(h) = &g.home {
                b = b.header("x-switchyard-home-region", h);
            }
            b.body(Full::new(if write {
                Bytes::from_static(b"{\"v\":1}")
            } else {
                Bytes::new()
            }))
            .expect("valid request")
        });
        rec.sent.fetch_add(1, Ordering::Relaxed);
        async move {
            let (zone, outcome) = match req {
                Some(req) => send_one(&client, req, timeout, user.as_deref()).await,
                // No answer yet (or ever): the user has nowhere to go.
                None => (None, Outcome::Failed),
            };
            rec2.record(
                due,
                &name,
                &region,
                &entered,
                &entered_zone,
                zone.as_deref(),
                outcome,
                due.elapsed(),
            );
        }
    })
    .await;
    resolving.abort_all();
}
