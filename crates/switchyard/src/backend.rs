//! A small stand-in for a service instance: answers every path with JSON that
//! names the instance, a shallow `/health`, and optional delay and errors so
//! demos and benchmarks have something real to proxy to. For the benchmarks
//! it also streams `GET /bytes/N` (N bytes, never held whole), counts and
//! discards any request body (`/upload` answers how much arrived), and can
//! have a real capacity: `--capacity N --service-ms S` serves at most N
//! requests at once, each for S ms, and queues the rest like a thread pool,
//! so it slows down past N in flight the way a real instance does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;
use tokio::sync::Semaphore;

/// Size of each frame of a `/bytes/N` answer: large enough that framing
/// costs nothing next to the copy, small enough to stay in cache.
const CHUNK: usize = 64 * 1024;

#[derive(clap::Args, Clone)]
pub struct Args {
    #[arg(long)]
    listen: SocketAddr,
    /// Name reported in every answer.
    #[arg(long, default_value = "backend")]
    name: String,
    /// Fixed delay added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Percentage of requests answered with 500 (health stays green).
    #[arg(long, default_value_t = 0.0)]
    error_percent: f64,
    /// Size of the response body in bytes (padding after the JSON fields).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Requests served at once (with `--service-ms`); the rest wait their
    /// turn in arrival order, so capacity is N / service time. `/health` is
    /// not limited.
    #[arg(long, requires = "service_ms", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    capacity: Option<u32>,
    /// Time each request holds one of the `--capacity` slots, in ms.
    #[arg(long, requires = "capacity", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    service_ms: Option<u64>,
}

pub fn main(args: Args) -> ExitCode {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        b.worker_threads(t);
    }
    let rt = b.enable_all().build().expect("tokio runtime");
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard backend: {e:#}");
            ExitCode::from(2)
        }
    }
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

/// The `--capacity` slots and how long each request holds one.
struct Capacity {
    slots: Semaphore,
    service: Duration,
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, name = %args.name, "backend serving");
    let padding: Bytes = Bytes::from(vec![b'x'; args.body_bytes]);
    let capacity = match (args.capacity, args.service_ms) {
        (Some(n), Some(ms)) => Some(Arc::new(Capacity {
            slots: Semaphore::new(n as usize),
            service: Duration::from_millis(ms),
        })),
        _ => None,
    };
    loop {
        let (stream, _) = l.accept().await?;
        let _ = stream.set_nodelay(true);
        let args = args.clone();
        let padding = padding.clone();
        let capacity = capacity.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let args = args.clone();
                let padding = padding.clone();
                let capacity = capacity.clone();
                async move { Ok::<_, Infallible>(answer(req, &args, padding, capacity).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    args: &Args,
    padding: Bytes,
    capacity: Option<Arc<Capacity>>,
) -> Answer {
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let received = drain(req.into_body()).await;
    if path == "/health" {
        return json(
            StatusCode::OK,
            format!("{{\"status\":\"ok\",\"instance\":\"{}\"}}", args.name),
        );
    }
    if let Some(c) = &capacity {
        // Held across the service time: a request past the N in flight
        // waits for a slot, as it would for a worker thread.
        let _slot = c
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::time::sleep(c.service).await;
    }
    if args.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
    }
    let fail =
        args.error_percent > 0.0 && rand::thread_rng().gen::<f64>() * 100.0 < args.error_percent;
    if !fail && path == "/upload" {
        return json(
            StatusCode::OK,
            format!(
                "{{\"instance\":\"{}\",\"method\":\"{method}\",\"received\":{received}}}",
                args.name
            ),
        );
    }
    if let Some(n) = path.strip_prefix("/bytes/").filter(|_| !fail) {
        return match n.parse::<u64>() {
            Ok(n) => {
                let mut r = Response::new(Repeat::new(n).boxed());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            Err(_) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({
                    "error": format!("path /bytes/N: N must be a byte count, got {n:?}")
                })
                .to_string(),
            ),
        };
    }
    let mut body = format!(
        "{{\"instance\":\"{}\",\"method\":\"{method}\",\"path\":\"{path}\"}}",
        args.name
    )
    .into_bytes();
    body.extend_from_slice(&padding);
    let status = if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    json(status, body)
}

/// Reads a request body to its end a frame at a time, keeping none of it:
/// a 1 GiB upload costs one frame of memory. Returns the bytes seen.
async fn drain(mut body: hyper::body::Incoming) -> u64 {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    n
}

/// `n` bytes of `x`, produced a frame at a time as the peer reads them.
struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    fn new(n: u64) -> Repeat {
        Repeat {
            left: n,
            chunk: Bytes::from(vec![b'x'; CHUNK]),
        }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64);
        self.left -= n;
        // A slice of the shared chunk: a reference count, not a copy.
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
