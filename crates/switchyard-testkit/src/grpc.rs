//! A real gRPC server and client (tonic over h2c) for tests, with no
//! protoc: the messages are written by hand with prost's derive and the
//! service is put together from tonic's codegen-free pieces, the way its
//! generated code does it. The service, `switchyard.test.Feed`, has
//!
//! - `Count(CountRequest) returns (stream Item)`: server streaming, `n`
//!   items numbered from 1; a non-zero `fail` ends the call with that
//!   status, in the trailers after the items, or with no items at all
//!   (`n = 0`) as a trailers-only answer, the way a handler that returns
//!   `Err(Status)` at once does;
//! - `Sum(stream Item) returns (Total)`: client streaming, the count and sum
//!   of the items sent;
//! - `Echo(stream Item) returns (stream Item)`: bidirectional, every item
//!   sent back as soon as it arrives.
//!
//! Every answer names its server in `x-served-by` (in the headers, or in
//! the trailers with a failing status).
//!
//! It also serves the standard `grpc.health.v1.Health/Check`, for the
//! server as a whole ("") and for `switchyard.test.Feed`, answering what
//! [`GrpcServer::set_serving`] says; another name is `NOT_FOUND`, as the
//! protocol asks.
// tonic's handler signatures return `Result<_, Status>`, and Status is large.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tonic::codec::{ProstCodec, Streaming};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

pub use tonic::Code as GrpcCode;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    #[prost(uint32, tag = "1")]
    pub n: u32,
    /// A gRPC status code to end the call with; 0: OK.
    #[prost(int32, tag = "2")]
    pub fail: i32,
    /// After the items, send nothing more and never end.
    #[prost(bool, tag = "3")]
    pub stall: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Total {
    #[prost(uint32, tag = "1")]
    pub items: u32,
    #[prost(uint64, tag = "2")]
    pub sum: u64,
}

const COUNT: &str = "/switchyard.test.Feed/Count";
const SUM: &str = "/switchyard.test.Feed/Sum";
const ECHO: &str = "/switchyard.test.Feed/Echo";

type ItemStream = Pin<Box<dyn Stream<Item = Result<Item, Status>> + Send>>;

/// The service as a tower service over HTTP requests, as generated code is.
#[derive(Clone)]
struct Feed {
    name: Arc<str>,
    calls: Arc<AtomicU64>,
}

impl tonic::server::NamedService for Feed {
    const NAME: &'static str = "switchyard.test.Feed";
}

impl<B> tower::Service<http::Request<B>> for Feed
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let name = self.name.clone();
        match req.uri().path() {
            COUNT => Box::pin(async move {
                let svc = tower::service_fn(move |r: Request<CountRequest>| {
                    let name = name.clone();
                    async move { count(&name, r.into_inner()) }
                });
                let mut grpc =
                    tonic::server::Grpc::new(ProstCodec::<Item, CountRequest>::default());
                Ok(grpc.server_streaming(svc, req).await)
            }),
            SUM => Box::pin(async move {
                let svc = tower::service_fn(move |r: Request<Streaming<Item>>| {
                    let name = name.clone();
                    async move { sum(&name, r.into_inner()).await }
                });
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<Total, Item>::default());
                Ok(grpc.client_streaming(svc, req).await)
            }),
            ECHO => Box::pin(async move {
                let svc = tower::service_fn(move |r: Request<Streaming<Item>>| async move {
                    let echoed: ItemStream = Box::pin(r.into_inner());
                    Ok::<_, Status>(Response::new(echoed))
                });
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<Item, Item>::default());
                Ok(grpc.streaming(svc, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

fn served_by(name: &str, md: &mut MetadataMap) {
    if let Ok(v) = MetadataValue::try_from(name) {
        md.insert("x-served-by", v);
    }
}

fn status(code: i32, name: &str) -> Status {
    let mut s = Status::new(Code::from_i32(code), format!("{name} says no"));
    served_by(name, s.metadata_mut());
    s
}

fn count(name: &str, r: CountRequest) -> Result<Response<ItemStream>, Status> {
    if r.n == 0 && r.fail != 0 {
        return Err(status(r.fail, name));
    }
    let items = (1..=r.n).map(|seq| {
        Ok(Item {
            seq,
            payload: vec![seq as u8; 1024],
        })
    });
    let end = (r.fail != 0).then(|| Err(status(r.fail, name)));
    let stream: ItemStream = Box::pin(futures_util::stream::iter(items.chain(end)));
    let stream: ItemStream = if r.stall {
        Box::pin(stream.chain(futures_util::stream::pending()))
    } else {
        stream
    };
    let mut resp = Response::new(stream);
    served_by(name, resp.metadata_mut());
    Ok(resp)
}

async fn sum(name: &str, mut items: Streaming<Item>) -> Result<Response<Total>, Status> {
    let mut t = Total::default();
    while let Some(item) = items.next().await {
        let item = item?;
        t.items += 1;
        t.sum += u64::from(item.seq);
    }
    let mut resp = Response::new(t);
    served_by(name, resp.metadata_mut());
    Ok(resp)
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// `ServingStatus`: 1 SERVING, 2 NOT_SERVING.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.Health`, unary `Check` only (no `Watch`).
#[derive(Clone)]
struct Health {
    serving: Arc<AtomicBool>,
    checks: Arc<AtomicU64>,
}

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl<B> tower::Service<http::Request<B>> for Health
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let serving = self.serving.clone();
        if req.uri().path() != "/grpc.health.v1.Health/Check" {
            return Box::pin(async { Ok(Status::unimplemented("only Check").into_http()) });
        }
        Box::pin(async move {
            let svc = tower::service_fn(move |r: Request<HealthCheckRequest>| {
                let serving = serving.load(Ordering::Relaxed);
                async move {
                    match r.into_inner().service.as_str() {
                        "" | "switchyard.test.Feed" => Ok(Response::new(HealthCheckResponse {
                            status: if serving { 1 } else { 2 },
                        })),
                        other => Err(Status::not_found(format!("unknown service {other}"))),
                    }
                }
            });
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<
                HealthCheckResponse,
                HealthCheckRequest,
            >::default());
            Ok(grpc.unary(svc, req).await)
        })
    }
}

/// A running gRPC instance on a loopback address.
pub struct GrpcServer {
    pub name: String,
    pub addr: SocketAddr,
    calls: Arc<AtomicU64>,
    serving: Arc<AtomicBool>,
    health_checks: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GrpcServer {
    /// Serves `switchyard.test.Feed` on `addr` (h2c only, as gRPC servers
    /// are), naming itself `name` in the `x-served-by` trailer.
    pub async fn start(name: &str, addr: SocketAddr) -> GrpcServer {
        let listener = crate::upstream::bind_retrying(addr).await;
        let addr = listener.local_addr().expect("bound");
        let calls = Arc::new(AtomicU64::new(0));
        let feed = Feed {
            name: name.into(),
            calls: calls.clone(),
        };
        let health = Health {
            serving: Arc::new(AtomicBool::new(true)),
            checks: Arc::new(AtomicU64::new(0)),
        };
        let (serving, health_checks) = (health.serving.clone(), health.checks.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(feed)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        GrpcServer {
            name: name.into(),
            addr,
            calls,
            serving,
            health_checks,
            stop: Some(tx),
        }
    }

    /// Calls of `switchyard.test.Feed` that reached this server.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// What the health service answers from now on: SERVING or NOT_SERVING
    /// (a server draining, or whose dependencies are down, while the
    /// process and its port are fine).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// `grpc.health.v1.Health` calls that reached this server.
    pub fn health_checks(&self) -> u64 {
        self.health_checks.load(Ordering::Relaxed)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// What a server-streaming call brought back.
#[derive(Debug)]
pub struct Counted {
    /// The response headers (`x-served-by`, the edge's `x-switchyard-upstream`).
    pub headers: MetadataMap,
    pub items: Vec<Item>,
    /// The trailers as the client received them.
    pub trailers: MetadataMap,
}

/// A gRPC client of `switchyard.test.Feed` through `addr` (an edge), with
/// `authority` as the `:authority` the edge routes by.
pub struct FeedClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl FeedClient {
    pub async fn connect(addr: SocketAddr, authority: &str) -> FeedClient {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("a valid endpoint")
            .origin(
                format!("http://{authority}")
                    .parse()
                    .expect("a valid authority"),
            )
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        FeedClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))
    }

    /// `Count`: every item and the trailers, or the status the call ended
    /// with (its metadata holds the trailers).
    pub async fn count(&mut self, n: u32, fail: Code) -> Result<Counted, Status> {
        self.count_with(CountRequest {
            n,
            fail: fail as i32,
            stall: false,
        })
        .await
    }

    /// `Count` with every option of its request.
    pub async fn count_with(&mut self, r: CountRequest) -> Result<Counted, Status> {
        self.ready().await?;
        let req = Request::new(r);
        let resp = self
            .grpc
            .server_streaming(
                req,
                PathAndQuery::from_static(COUNT),
                ProstCodec::<CountRequest, Item>::default(),
            )
            .await?;
        let (headers, mut stream, _) = resp.into_parts();
        let mut items = Vec::new();
        while let Some(item) = stream.message().await? {
            items.push(item);
        }
        let trailers = stream.trailers().await?.unwrap_or_default();
        Ok(Counted {
            headers,
            items,
            trailers,
        })
    }

    /// `Echo` as a conversation: sends an item, waits for it to come back,
    /// then sends the next, `n` times. A proxy that held the request body
    /// back until it had more of it would stall on the first item.
    pub async fn ping_pong(&mut self, n: u32) -> Result<Vec<u32>, Status> {
        self.ready().await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Item>(1);
        let outbound = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        tx.send(Item {
            seq: 1,
            payload: vec![1; 16],
        })
        .await
        .expect("the request stream is open");
        let resp = self
            .grpc
            .streaming(
                Request::new(outbound),
                PathAndQuery::from_static(ECHO),
                ProstCodec::<Item, Item>::default(),
            )
            .await?;
        let mut inbound = resp.into_inner();
        let mut seen = Vec::new();
        while let Some(item) = inbound.message().await? {
            seen.push(item.seq);
            if item.seq == n {
                break;
            }
            let next = Item {
                seq: item.seq + 1,
                payload: vec![1; 16],
            };
            if tx.send(next).await.is_err() {
                break;
            }
        }
        drop(tx);
        while inbound.message().await?.is_some() {}
        Ok(seen)
    }

    /// `Sum` over `n` items numbered from 1, sent one by one as a stream.
    pub async fn sum(&mut self, n: u32) -> Result<(Total, MetadataMap), Status> {
        self.ready().await?;
        let items = futures_util::stream::iter((1..=n).map(|seq| Item {
            seq,
            payload: vec![seq as u8; 1024],
        }));
        let resp = self
            .grpc
            .client_streaming(
                Request::new(items),
                PathAndQuery::from_static(SUM),
                ProstCodec::<Item, Total>::default(),
            )
            .await?;
        let (md, total, _) = resp.into_parts();
        Ok((total, md))
    }
}
