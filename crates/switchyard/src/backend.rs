//! A small stand-in for a service instance: answers every path with JSON that
//! names the instance, a shallow `/health`, and optional delay and errors so
//! demos and benchmarks have something real to proxy to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;

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

async fn serve(args: Args) -> anyhow::Result<()> {
    let l = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, name = %args.name, "backend serving");
    let padding: Bytes = Bytes::from(vec![b'x'; args.body_bytes]);
    loop {
        let (stream, _) = l.accept().await?;
        let _ = stream.set_nodelay(true);
        let args = args.clone();
        let padding = padding.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let args = args.clone();
                let padding = padding.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let method = req.method().to_string();
                    let _ = req.into_body().collect().await;
                    if path == "/health" {
                        return Ok::<_, Infallible>(json(
                            StatusCode::OK,
                            format!("{{\"status\":\"ok\",\"instance\":\"{}\"}}", args.name),
                        ));
                    }
                    if args.delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
                    }
                    let fail = args.error_percent > 0.0
                        && rand::thread_rng().gen::<f64>() * 100.0 < args.error_percent;
                    let status = if fail {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    let mut body = format!(
                        "{{\"instance\":\"{}\",\"method\":\"{method}\",\"path\":\"{path}\"}}",
                        args.name
                    )
                    .into_bytes();
                    body.extend_from_slice(&padding);
                    Ok(json(status, body))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
