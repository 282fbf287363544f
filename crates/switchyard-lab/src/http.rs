//! Small HTTP helpers shared by the lab's processes: a server loop, JSON
//! answers, and a one-shot client on a fresh connection.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub type Resp = Response<Full<Bytes>>;

pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves every connection of `l` with `handler` until the task is dropped.
pub async fn serve<H, F>(l: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Why a one-shot request failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(SocketAddr, Duration),
    #[error("exchange with {0} failed: {1}")]
    Exchange(SocketAddr, String),
}

/// One request on its own connection, so that a link's per-connection faults
/// hit exactly this request.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), CallError> {
    call_as(addr, method, path, body, timeout, None).await
}

/// `GET path` read as JSON: `None` when nothing answers in time, the answer
/// is not 200, or its body is not what this build can read.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Option<T> {
    let (s, b) = call(addr, Method::GET, path, Bytes::new(), timeout)
        .await
        .ok()?;
    (s == StatusCode::OK)
        .then(|| serde_json::from_slice(&b).ok())
        .flatten()
}

/// [`call`] with a bearer token, for the admin knobs of the lab's processes.
pub async fn call_as(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
    bearer: Option<&str>,
) -> Result<(StatusCode, Bytes), CallError> {
    let fut = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| CallError::Connect(addr, e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| CallError::Exchange(addr, e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| CallError::Exchange(addr, e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| CallError::Exchange(addr, e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CallError::Exchange(addr, e.to_string()))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| CallError::Timeout(addr, timeout))?
}

pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, String> {
    http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string())
}
